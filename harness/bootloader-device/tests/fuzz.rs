//! Fuzz-style robustness: random (but protocol-shaped) input must never panic, never produce
//! malformed answers, and never make the engines ask the target for something illegal (RDP level 2,
//! misaligned flash programming, an unlisted operation).

mod common;

use common::{Call, FakeTarget, XorShift, address_frame, with_xor};
use hil_bootloader_device::dfu::request;
use hil_bootloader_device::{
    ACK, ControlResponse, DfuEngine, NACK, RdpLevel, RomAction, SetupPacket, UsartEngine, UsartOutput,
};

/// Flash/OTP programming the engines hand to the target is always in whole aligned granules.
fn assert_target_calls_legal(target: &FakeTarget, unit: u32, flash: std::ops::Range<u64>) {
    for call in &target.calls {
        if let Call::Write { address, len } = call
            && (flash.contains(&u64::from(*address)) || (0x1FFF_7000..0x1FFF_7400).contains(address))
        {
            assert!(address.is_multiple_of(unit) && (*len as u32).is_multiple_of(unit), "{call:?}");
        }
        if let Call::WriteOptionBytes(image) = call {
            assert_ne!(image.first(), Some(&0xCC), "RDP level 2 written without permission");
        }
    }
}

/// A protocol-shaped random byte: command pairs, address frames, counts, noise.
fn usart_chunk(rng: &mut XorShift) -> Vec<u8> {
    const CODES: [u8; 15] = [0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x43, 0x44, 0x63, 0x73, 0x82, 0x92, 0xA1, 0x7F, 0xFF];
    const ADDRESSES: [u32; 9] = [
        0x0800_0000,
        0x0801_F800,
        0x0807_FFF8,
        0x2000_4000,
        0x2000_0100,
        0x1FFF_7800,
        0x1FFF_0000,
        0x1FFF_7000,
        0xFFFF_FFFC,
    ];
    let pick_address = |rng: &mut XorShift| {
        ADDRESSES[rng.below(ADDRESSES.len() as u64) as usize].wrapping_add(rng.below(4) as u32 * 4)
    };
    match rng.below(12) {
        // A whole well-formed command with random parameters.
        10 | 11 => {
            let a = address_frame(pick_address(rng));
            let n = rng.below(32) as u8;
            match rng.below(5) {
                0 => {
                    [vec![0x31, 0xCE], a, with_xor(&[vec![n], (0..=n).map(|_| rng.byte()).collect()].concat())].concat()
                }
                1 => [vec![0x11, 0xEE], a, vec![n, !n]].concat(),
                2 => [vec![0x21, 0xDE], a].concat(),
                3 => [vec![0x44, 0xBB], with_xor(&[0, 1, 0, rng.below(300) as u8, 1, rng.byte()])].concat(),
                _ => [vec![0x43, 0xBC], with_xor(&[1, rng.byte(), rng.byte()])].concat(),
            }
        }
        0..=3 => {
            let c = CODES[rng.below(CODES.len() as u64) as usize];
            vec![c, !c]
        }
        4..=5 => address_frame(pick_address(rng)),
        6 => {
            let n = rng.below(6) as u8;
            let mut v = vec![n];
            v.extend((0..=n).map(|_| rng.byte()));
            with_xor(&v)
        }
        7 => vec![0xFF, 0xFF, 0x00],
        _ => (0..1 + rng.below(4)).map(|_| rng.byte()).collect(),
    }
}

#[test]
fn usart_engine_survives_random_streams() {
    let (mut jumps, mut writes, mut erases, mut acks) = (0, 0, 0, 0);
    for chip in ["STM32G0B1RE", "STM32G071RB", "STM32F103CB"] {
        let mut config = FakeTarget::config(chip);
        config.usart.commands.push(0xA1);
        let unit = config.flash.program_unit;
        let flash = u64::from(config.flash.base)..u64::from(config.flash.base) + config.flash.size();
        for seed in 1..=40u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut engine = UsartEngine::new(config.clone()).unwrap();
            let mut target = FakeTarget::for_chip(chip);
            engine.receive(0x7F, &mut target);
            for _ in 0..600 {
                if rng.below(50) == 0 {
                    target.rdp = if target.rdp == RdpLevel::Level0 { RdpLevel::Level1 } else { RdpLevel::Level0 };
                }
                for b in usart_chunk(&mut rng) {
                    let out = engine.receive(b, &mut target);
                    acks += out.iter().filter(|o| **o == UsartOutput::Tx(ACK)).count();
                    jumps += out.iter().filter(|o| matches!(o, UsartOutput::Action(RomAction::Jump(_)))).count();
                    let actions = out.iter().filter(|o| matches!(o, UsartOutput::Action(_))).count();
                    assert!(actions <= 1, "{chip} seed {seed}: {out:?}");
                    if actions == 1 {
                        assert!(matches!(out.last(), Some(UsartOutput::Action(_))), "the action comes last");
                        assert!(engine.is_finished());
                    }
                    if engine.is_finished() {
                        engine.reset();
                        engine.receive(0x7F, &mut target);
                    }
                }
            }
            assert_target_calls_legal(&target, unit, flash.clone());
            writes += target.calls.iter().filter(|c| matches!(c, Call::Write { .. })).count();
            erases += target.calls.iter().filter(|c| matches!(c, Call::ErasePage(_) | Call::MassErase)).count();
        }
    }
    // The generator reaches the interesting paths, not only NACKs.
    assert!(jumps > 0 && writes > 0 && erases > 0 && acks > 1000, "{jumps} {writes} {erases} {acks}");
}

#[test]
fn usart_engine_survives_pure_noise_and_line_errors() {
    let config = FakeTarget::config("STM32G0B1RE");
    for seed in 1..=20u64 {
        let mut rng = XorShift(seed);
        let mut engine = UsartEngine::new(config.clone()).unwrap();
        let mut target = FakeTarget::for_chip("STM32G0B1RE");
        for _ in 0..5000 {
            let error = (rng.below(8) == 0).then_some(hil_bootloader_device::LineError::Parity);
            let out = engine.receive(hil_bootloader_device::RxByte { value: rng.byte(), error }, &mut target);
            assert!(out.len() <= 300, "bounded answer to one byte");
            if engine.is_finished() {
                engine.reset();
            }
        }
        assert_target_calls_legal(&target, 8, 0x0800_0000..0x0808_0000);
    }
}

#[test]
fn usart_answers_to_rdp_gated_commands_are_single_nacks() {
    // Under RDP any gated command, valid or not, answers exactly one NACK: nothing else leaks.
    let config = FakeTarget::config("STM32G0B1RE");
    let mut engine = UsartEngine::new(config).unwrap();
    let mut target = FakeTarget::for_chip("STM32G0B1RE");
    target.rdp = RdpLevel::Level1;
    engine.receive(0x7F, &mut target);
    for code in 0..=255u8 {
        let mut out = engine.receive(code, &mut target);
        out.extend(engine.receive(!code, &mut target));
        match code {
            0x00..=0x02 => assert_eq!(out.first(), Some(&UsartOutput::Tx(ACK))),
            0x92 => {
                assert_eq!(out[..2], [UsartOutput::Tx(ACK), UsartOutput::Tx(ACK)]);
                engine.reset();
                target.rdp = RdpLevel::Level1;
                engine.receive(0x7F, &mut target);
            }
            _ => assert_eq!(out, [UsartOutput::Tx(NACK)], "{code:#04x}"),
        }
    }
}

fn random_setup(rng: &mut XorShift) -> (SetupPacket, Vec<u8>) {
    const TYPES: [u8; 10] = [0x00, 0x01, 0x02, 0x80, 0x81, 0x82, 0x21, 0xA1, 0x21, 0xA1];
    let request_type = if rng.below(10) == 0 { rng.byte() } else { TYPES[rng.below(TYPES.len() as u64) as usize] };
    let request = if request_type & 0x60 == 0x20 { rng.below(8) as u8 } else { rng.below(13) as u8 };
    let value = match rng.below(4) {
        0 => 0,
        1 => 2 + rng.below(4) as u16,
        2 => rng.below(0x400) as u16,
        _ => rng.next() as u16,
    };
    let index = if rng.below(8) == 0 { rng.next() as u16 } else { 0 };
    let length = match rng.below(5) {
        0 => 0,
        1 => 1 + rng.below(8) as u16,
        2 => 2048,
        3 => rng.below(4200) as u16,
        _ => 5,
    };
    let data = if request_type & 0x80 == 0 {
        let mut d: Vec<u8> = (0..length).map(|_| rng.byte()).collect();
        if let Some(first) = d.first_mut() {
            *first = [0x21, 0x41, 0x92, *first][rng.below(4) as usize];
        }
        if length == 5 && rng.below(2) == 0 {
            let a = [0x0800_0000u32, 0x0807_F800, 0x2000_4000, 0x1FFF_7800, 0][rng.below(5) as usize];
            d[1..5].copy_from_slice(&a.to_le_bytes());
        }
        d
    } else {
        Vec::new()
    };
    (SetupPacket { request_type, request, value, index, length }, data)
}

#[test]
fn dfu_engine_survives_random_control_transfers() {
    let config = FakeTarget::config("STM32G0B1RE");
    let (mut busy_polls, mut actions, mut target_ops) = (0, 0, 0);
    for seed in 1..=60u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut engine = DfuEngine::new(config.clone()).unwrap();
        let mut target = FakeTarget::for_chip("STM32G0B1RE");
        let configure = |engine: &mut DfuEngine, target: &mut FakeTarget| {
            let s = SetupPacket { request_type: 0, request: 9, value: 1, index: 0, length: 0 };
            engine.control(s, &[], target);
        };
        configure(&mut engine, &mut target);
        for _ in 0..3000 {
            if rng.below(100) == 0 {
                target.rdp = if target.rdp == RdpLevel::Level0 { RdpLevel::Level1 } else { RdpLevel::Level0 };
            }
            if rng.below(200) == 0 {
                engine.bus_reset();
                configure(&mut engine, &mut target);
            }
            let (setup, data) = random_setup(&mut rng);
            let outcome = engine.control(setup, &data, &mut target);
            if let ControlResponse::Data(d) = &outcome.response {
                assert!(d.len() <= usize::from(setup.length), "{setup:?}");
                assert!(setup.request_type & 0x80 != 0, "data only for IN requests");
                if setup.request_type == 0xA1 && setup.request == request::GETSTATUS && d.len() == 6 {
                    assert!(d[4] <= 10 && d[0] <= 0x0F, "{d:02x?}");
                    busy_polls += usize::from(d[4] == 4);
                }
            }
            if let Some(action) = &outcome.action {
                actions += 1;
                assert!(engine.is_finished(), "{action:?}");
                if let RomAction::Jump(j) = action {
                    assert!(j.usb_disconnect);
                }
                engine = DfuEngine::new(config.clone()).unwrap();
                configure(&mut engine, &mut target);
            }
        }
        assert_target_calls_legal(&target, 8, 0x0800_0000..0x0808_0000);
        target_ops += target.calls.len();
    }
    assert!(busy_polls > 0 && actions > 0 && target_ops > 0, "{busy_polls} {actions} {target_ops}");
}
