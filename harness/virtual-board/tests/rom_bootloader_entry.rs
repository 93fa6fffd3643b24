//! The CPU state the ROM is entered with, and what it does with it (pitfalls P1, P2, P4, P5 and
//! seed 002 of shared/reference/bootloader-protocols.md), with real firmware: the `app` fixture's
//! jumps ('j' recommended, 'p' PRIMASK left set and no remap, 'b' reset then branch) on the G071
//! (USART polled by its ROM) and the G0B1 (interrupt-driven ROM), and small programs loaded through
//! the debug port for the states the fixture cannot produce (Handler mode, PSP, SysTick left on,
//! an application without its own VTOR).

mod romhost;

use std::time::Duration;

use hil_bootloader_device::{ProcessStackEntry, RomConfig};
use hil_cortex_m::{Reg, Size};
use hil_virtual_board::{Board, BoardConfig, EventKind, ImageFormat, RamInit, RomEntry, StRom};
use romhost::{ACK, Host, T};

const SILENCE: Duration = Duration::from_millis(300);

fn board(name: &str, chip: &str, rom: Option<RomConfig>) -> Board {
    let cfg = BoardConfig {
        name: name.into(),
        chip: chip.into(),
        power_on: false,
        ram_init: RamInit::Zero,
        ..Default::default()
    };
    let rom = rom.map(|c| {
        let chip = hil_chips::Chip::by_name(chip).unwrap();
        Box::new(StRom::with_config(chip, c).unwrap()) as Box<dyn hil_virtual_board::SystemBootloader>
    });
    let b = Board::start_with_rom(cfg, rom).unwrap();
    let app = hil_fixtures::get("app", 0x0800_0000).unwrap().elf.to_vec();
    b.load_image(app, ImageFormat::Elf).wait().unwrap();
    b.power_on().wait().unwrap();
    let u = b.uart("USART2").unwrap();
    u.read_until(b" ]\r\n", T).wait().unwrap();
    b
}

fn config(chip: &str) -> RomConfig {
    RomConfig::for_chip(hil_chips::Chip::by_name(chip).unwrap()).unwrap()
}

/// Send an app command and wait for the ROM entry it causes.
fn app_jump(b: &Board, cmd: u8) -> RomEntry {
    let cur = b.event_cursor().wait().unwrap();
    let u = b.uart("USART2").unwrap();
    u.write(&[cmd]).wait().unwrap();
    u.read_until(b"jump\r\n", T).wait().unwrap();
    match b.wait_event(cur, T, |e| matches!(e.kind, EventKind::RomEntered(_))).unwrap().kind {
        EventKind::RomEntered(e) => e,
        _ => unreachable!(),
    }
}

fn notes(b: &Board) -> String {
    b.snapshot().wait().unwrap().rom_notes.join("\n")
}

fn default_handler(chip: &str) -> u32 {
    let c = hil_chips::Chip::by_name(chip).unwrap();
    hil_virtual_board::system_memory::build_image(c).1.default_handler
}

#[test]
fn g071_answers_after_each_app_jump_its_usart_is_polled() {
    for cmd in [b'j', b'p', b'b'] {
        let b = board(&format!("entry-g071-{}", cmd as char), "STM32G071RB", None);
        let e = app_jump(&b, cmd);
        assert_eq!(e.primask, cmd == b'p');
        let h = Host::new(&b, "USART2");
        assert_eq!(h.sync(), Some(ACK), "jump '{}'", cmd as char);
        assert_eq!(h.get_id(), Some(0x460));
        let snap = b.snapshot().wait().unwrap();
        assert_eq!(snap.core.unwrap().vtor, 0, "the ROM points VTOR at its table through the boot alias");
        if cmd == b'p' {
            let n = notes(&b);
            assert!(n.contains("PRIMASK = 1 at entry: this ROM polls its USARTs"), "{n}");
            assert!(n.contains("SysTick with its interrupt"), "{n}");
        }
        b.shutdown().unwrap();
    }
}

#[test]
fn g0b1_does_not_answer_a_jump_made_with_primask_set() {
    // Seed 002: the G071 jump code (interrupts left disabled) gets "No response from target" on a
    // G0B1, whose ROM serves its USART from the interrupt.
    let b = board("entry-g0b1-p", "STM32G0B1RE", None);
    let e = app_jump(&b, b'p');
    assert!(e.primask);
    let h = Host::new(&b, "USART2");
    h.send(&[0x7F]);
    assert!(h.silent_for(SILENCE), "no answer with PRIMASK = 1");
    let snap = b.snapshot().wait().unwrap();
    let core = snap.core.unwrap();
    assert!(core.primask);
    assert_ne!(core.nvic_ispr[0] & (1 << 28), 0, "the ROM's USART2 interrupt is pending, never taken");
    let n = notes(&b);
    assert!(n.contains("PRIMASK = 1 at entry: the ROM serves its interfaces from interrupts"), "{n}");
    b.shutdown().unwrap();
    // The same chip answers the recommended jump and the reset-then-branch.
    for cmd in [b'j', b'b'] {
        let b = board(&format!("entry-g0b1-{}", cmd as char), "STM32G0B1RE", None);
        app_jump(&b, cmd);
        let h = Host::new(&b, "USART2");
        assert_eq!(h.sync(), Some(ACK), "jump '{}'", cmd as char);
        assert_eq!(h.get_id(), Some(0x467));
        b.shutdown().unwrap();
    }
}

#[test]
fn a_rom_that_leaves_vtor_alone_runs_the_applications_handlers() {
    // The unverified switch flipped: the ROM does not set VTOR. After 'J' (ST's KB jump, which
    // leaves VTOR alone) VTOR still points at the app's table, so the ROM's USART2 interrupt runs the app's handler (it takes the byte into its
    // own buffer) and the ROM never sees it (P1).
    let mut c = config("STM32G0B1RE");
    c.execution.vtor_at_entry = hil_bootloader_device::VtorAtEntry::Untouched;
    let b = board("entry-g0b1-novtor", "STM32G0B1RE", Some(c));
    let e = app_jump(&b, b'J');
    assert_eq!(e.vtor, 0x0800_0000);
    let h = Host::new(&b, "USART2");
    h.send(&[0x7F]);
    assert!(h.silent_for(SILENCE));
    assert_eq!(b.snapshot().wait().unwrap().core.unwrap().vtor, 0x0800_0000);
    let n = notes(&b);
    assert!(n.contains("VTOR = 0x08000000 (the application's table, pitfall P1)"), "{n}");
    b.shutdown().unwrap();
}

#[test]
fn a_jump_without_the_remap_runs_the_applications_handlers_through_the_boot_alias() {
    // P4 on an interrupt-driven ROM (G0B1): interrupts enabled and NVIC cleared, but system memory
    // not remapped. The ROM points VTOR at 0x0, which still shows flash, so its USART2 interrupt
    // runs the application's handler and the ROM never sees the byte.
    let b = board("entry-g0b1-noremap", "STM32G0B1RE", None);
    let e = debug_jump(&b, |_| {});
    assert!(!format!("{:?}", e.alias).contains("SystemMemory"), "0x0 shows {:?}", e.alias);
    let h = Host::new(&b, "USART2");
    h.send(&[0x7F]);
    assert!(h.silent_for(SILENCE));
    let snap = b.snapshot().wait().unwrap();
    assert_eq!(snap.core.unwrap().vtor, 0, "the ROM pointed VTOR at the boot alias");
    let n = notes(&b);
    assert!(n.contains("which shows MainFlash (system memory not remapped"), "{n}");
    b.shutdown().unwrap();
    // The same jump with the remap (SYSCFG clock on) is answered.
    let b = board("entry-g0b1-remap", "STM32G0B1RE", None);
    debug_jump(&b, remap);
    let h = Host::new(&b, "USART2");
    assert_eq!(h.sync(), Some(ACK));
    b.shutdown().unwrap();
}

/// Halt the app, let `prep` set up the CPU state, then branch to the ROM as a jump does
/// (MSP = [0x1FFF0000], PC = [0x1FFF0004]) and resume.
fn debug_jump(b: &Board, prep: impl FnOnce(&hil_virtual_board::DebugPort)) -> RomEntry {
    let d = b.debug();
    d.halt().wait().unwrap();
    // A clean slate first: SysTick off, NVIC lines disabled and not pending, PRIMASK clear.
    d.write(0xE000_E010, Size::Word, 0).wait().unwrap();
    d.write(0xE000_E180, Size::Word, u32::MAX).wait().unwrap();
    d.write(0xE000_E280, Size::Word, u32::MAX).wait().unwrap();
    d.set_reg(Reg::SpecialPacked, 0).wait().unwrap();
    prep(&d);
    let sp = d.read(0x1FFF_0000, Size::Word).wait().unwrap();
    let pc = d.read(0x1FFF_0004, Size::Word).wait().unwrap();
    d.set_reg(Reg::Msp, sp).wait().unwrap();
    let xpsr = d.reg(Reg::Xpsr).wait().unwrap();
    d.set_reg(Reg::Xpsr, xpsr | 1 << 24).wait().unwrap();
    d.set_reg(Reg::Pc, pc & !1).wait().unwrap();
    let cur = b.event_cursor().wait().unwrap();
    d.resume().wait().unwrap();
    match b.wait_event(cur, T, |e| matches!(e.kind, EventKind::RomEntered(_))).unwrap().kind {
        EventKind::RomEntered(e) => e,
        _ => unreachable!(),
    }
}

#[test]
fn systick_left_running_hangs_the_rom_in_its_default_handler() {
    // Seed 002 / P2: interrupts enabled again but SysTick still on. The first tick vectors through
    // the ROM's table into its default handler, which loops forever.
    for chip in ["STM32G071RB", "STM32G0B1RE"] {
        let b = board(&format!("entry-systick-{chip}"), chip, None);
        let e = debug_jump(&b, |d| {
            remap(d);
            d.write(0xE000_E014, Size::Word, 15_999).wait().unwrap();
            d.write(0xE000_E010, Size::Word, 0b111).wait().unwrap();
        });
        assert!(e.systick_running && !e.primask);
        // The first tick comes 1 ms after the jump; from then on the core sits in the handler.
        let end = std::time::Instant::now() + T;
        let core = loop {
            let core = b.snapshot().wait().unwrap().core.unwrap();
            if core.ipsr == 15 || std::time::Instant::now() > end {
                break core;
            }
            b.sleep(Duration::from_millis(5)).wait().unwrap();
        };
        assert_eq!(core.ipsr, 15, "{chip}: in the SysTick handler");
        let h = Host::new(&b, "USART2");
        h.send(&[0x7F]);
        assert!(h.silent_for(SILENCE), "{chip}: the ROM hangs");
        assert_eq!(core.r[15] & !3, default_handler(chip) & !3, "{chip}: PC in the ROM's default handler");
        assert!(notes(&b).contains("SysTick with its interrupt"), "{}", notes(&b));
        b.shutdown().unwrap();
    }
}

/// System memory at 0x0 as a correct jump leaves it (SYSCFG clock on first, RM0444 9.1.1): the
/// ROM points VTOR at the boot alias, so its exceptions reach its own handlers only then.
fn remap(d: &hil_virtual_board::DebugPort) {
    d.write(0x4002_1040, Size::Word, 1).wait().unwrap(); // RCC_APBENR2.SYSCFGEN
    d.write(0x4001_0000, Size::Word, 1).wait().unwrap(); // SYSCFG_CFGR1.MEM_MODE = system flash
}

/// `ldr r0, [pc, #12]; ldr r1, [r0]; msr msp, r1; ldr r1, [r0, #4]; bx r1; nop; nop; .word 0x1FFF0000`:
/// a jump to the ROM, used as an interrupt handler.
fn jump_stub() -> Vec<u32> {
    let code: [u16; 8] = [0x4803, 0x6801, 0xF381, 0x8808, 0x6841, 0x4708, 0xBF00, 0xBF00];
    let mut words: Vec<u32> = code.chunks(2).map(|c| c[0] as u32 | (c[1] as u32) << 16).collect();
    words.push(0x1FFF_0000);
    words
}

#[test]
fn a_jump_from_an_interrupt_handler_blocks_an_interrupt_driven_rom() {
    // P5: the application jumps from inside an ISR of priority 0. The exception stays active, so the
    // ROM's USART interrupt (same priority) cannot preempt: the G0B1 ROM never answers; the G071
    // ROM polls and answers.
    for (chip, answers) in [("STM32G071RB", true), ("STM32G0B1RE", false)] {
        let b = board(&format!("entry-isr-{chip}"), chip, None);
        let d = b.debug();
        // A vector table in RAM whose IRQ 5 handler is the jump stub; Thread mode spins in `b .`;
        // IRQ 5 (priority 0) enabled and pended.
        d.halt().wait().unwrap();
        d.write(0xE000_E010, Size::Word, 0).wait().unwrap();
        d.write(0xE000_E180, Size::Word, u32::MAX).wait().unwrap();
        d.write(0xE000_E280, Size::Word, u32::MAX).wait().unwrap();
        let (table, stub) = (0x2000_6000u32, 0x2000_6100u32);
        d.write_words(stub, jump_stub()).wait().unwrap();
        d.write_words(table, vec![stub | 1; 48]).wait().unwrap();
        d.write(0xE000_ED08, Size::Word, table).wait().unwrap();
        d.write(0x2000_6200, Size::Half, 0xE7FE).wait().unwrap();
        d.set_reg(Reg::Pc, 0x2000_6200).wait().unwrap();
        d.set_reg(Reg::SpecialPacked, 0).wait().unwrap();
        d.write(0xE000_E100, Size::Word, 1 << 5).wait().unwrap();
        d.write(0xE000_E200, Size::Word, 1 << 5).wait().unwrap();
        let cur = b.event_cursor().wait().unwrap();
        d.resume().wait().unwrap();
        let e = match b.wait_event(cur, T, |e| matches!(e.kind, EventKind::RomEntered(_))).unwrap().kind {
            EventKind::RomEntered(e) => e,
            _ => unreachable!(),
        };
        assert_eq!(e.ipsr, 21, "{chip}: entered from IRQ 5's handler");
        let h = Host::new(&b, "USART2");
        if answers {
            assert_eq!(h.sync(), Some(ACK), "{chip}");
        } else {
            h.send(&[0x7F]);
            assert!(h.silent_for(SILENCE), "{chip}: no answer from Handler mode");
        }
        assert!(notes(&b).contains("entered in Handler mode (IPSR = 21"), "{}", notes(&b));
        b.shutdown().unwrap();
    }
}

#[test]
fn process_stack_in_the_roms_own_ram_crashes_it() {
    // P5: Thread mode on the PSP (a jump from an RTOS task). With the task stack inside the RAM the
    // ROM initialises for itself the ROM crashes (HardFault into its default handler); with the
    // stack elsewhere it runs on it and answers.
    for (psp, answers) in [(0x2000_1000u32, false), (0x2000_8000u32, true)] {
        let b = board(&format!("entry-psp-{psp:x}"), "STM32G071RB", None);
        let e = debug_jump(&b, |d| {
            remap(d);
            d.set_reg(Reg::Psp, psp).wait().unwrap();
            d.set_reg(Reg::SpecialPacked, 2 << 24).wait().unwrap();
        });
        assert!(e.psp_active);
        assert_eq!(e.psp, psp);
        let h = Host::new(&b, "USART2");
        if answers {
            assert_eq!(h.sync(), Some(ACK));
        } else {
            h.send(&[0x7F]);
            assert!(h.silent_for(SILENCE));
            let core = b.snapshot().wait().unwrap().core.unwrap();
            assert_eq!(core.ipsr, 3, "HardFault");
            assert_eq!(core.r[15] & !3, default_handler("STM32G071RB") & !3);
            assert!(notes(&b).contains("the ROM crashes"), "{}", notes(&b));
        }
        b.shutdown().unwrap();
    }
    // The switch: a ROM that runs on whatever stack it finds.
    let mut c = config("STM32G071RB");
    c.execution.process_stack = ProcessStackEntry::Runs;
    let b = board("entry-psp-runs", "STM32G071RB", Some(c));
    debug_jump(&b, |d| {
        d.set_reg(Reg::Psp, 0x2000_1000).wait().unwrap();
        d.set_reg(Reg::SpecialPacked, 2 << 24).wait().unwrap();
    });
    assert_eq!(Host::new(&b, "USART2").sync(), Some(ACK));
    b.shutdown().unwrap();
}

/// A minimal application without its own VTOR setting: SysTick every 1 ms counts in RAM at
/// 0x20008000. Hand-assembled Thumb at 0x08000000 (vector table, reset handler, SysTick handler).
fn counting_app(set_vtor: bool) -> Vec<u8> {
    let mut img = vec![0xFFu8; 0x100];
    let put32 = |img: &mut Vec<u8>, at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(&mut img, 0, 0x2000_9000);
    put32(&mut img, 4, 0x0800_0041);
    for n in 2..48 {
        put32(&mut img, 4 * n, 0x0800_00A1); // default: `b .`
    }
    put32(&mut img, 4 * 15, 0x0800_0081); // SysTick
    let h = |img: &mut Vec<u8>, at: usize, v: u16| img[at..at + 2].copy_from_slice(&v.to_le_bytes());
    // 0x40 reset: [ldr r0,=VTOR; ldr r1,=0x08000000; str r1,[r0]] (or nops);
    //   ldr r0,=SYST_CSR; ldr r1,=15999; str r1,[r0,#4]; movs r1,#7; str r1,[r0]; cpsie i; wfi; b .-2
    let reset: [u16; 12] = [
        if set_vtor { 0x4806 } else { 0xBF00 }, // ldr r0, [pc, #24] -> 0x5C (VTOR)
        if set_vtor { 0x4908 } else { 0xBF00 }, // ldr r1, [pc, #32] -> 0x64 (0x08000000)
        if set_vtor { 0x6001 } else { 0xBF00 }, // str r1, [r0]
        0x4804,                                 // ldr r0, [pc, #16] -> 0x58 (SYST_CSR)
        0x4905,                                 // ldr r1, [pc, #20] -> 0x60 (15999)
        0x6041,                                 // str r1, [r0, #4]
        0x2107,                                 // movs r1, #7
        0x6001,                                 // str r1, [r0]
        0xB662,                                 // cpsie i
        0xBF30,                                 // wfi
        0xE7FD,                                 // b wfi
        0xBF00,
    ];
    for (i, v) in reset.iter().enumerate() {
        h(&mut img, 0x40 + 2 * i, *v);
    }
    put32(&mut img, 0x58, 0xE000_E010);
    put32(&mut img, 0x5C, 0xE000_ED08);
    put32(&mut img, 0x60, 15_999);
    put32(&mut img, 0x64, 0x0800_0000);
    // 0x80 SysTick: ldr r0,=0x20008000; ldr r1,[r0]; adds r1,#1; str r1,[r0]; bx lr
    let tick: [u16; 6] = [0x4802, 0x6801, 0x3101, 0x6001, 0x4770, 0xBF00];
    for (i, v) in tick.iter().enumerate() {
        h(&mut img, 0x80 + 2 * i, *v);
    }
    put32(&mut img, 0x8C, 0x2000_8000);
    h(&mut img, 0xA0, 0xE7FE); // default handler: b .
    img
}

#[test]
fn after_go_an_application_without_its_own_vtor_runs_the_roms_handlers() {
    // P1 (candleLight_fw PR #319): Go leaves VTOR at the ROM's table; an application that does not
    // set VTOR takes its first SysTick through the ROM's default handler and hangs there. The same
    // application that sets VTOR counts its ticks.
    for set_vtor in [false, true] {
        let b = Board::start(BoardConfig {
            name: format!("entry-p1-{set_vtor}"),
            ram_init: RamInit::Zero,
            boot0: true,
            power_on: false,
            ..Default::default()
        })
        .unwrap();
        b.set_option_word("USER", 0xFFFF_FEAA & !(1 << 24)).wait().unwrap(); // nBOOT_SEL = 0: BOOT0 pin
        b.power_on().wait().unwrap();
        let h = Host::new(&b, "USART2");
        assert_eq!(h.sync(), Some(ACK));
        let app = counting_app(set_vtor);
        for (i, chunk) in app.chunks(64).enumerate() {
            h.write(0x0800_0000 + 64 * i as u32, chunk).unwrap();
        }
        let cur = b.event_cursor().wait().unwrap();
        assert_eq!(h.go(0x0800_0000), Some(ACK));
        b.wait_event(cur, T, |e| matches!(e.kind, EventKind::RomLeft { .. })).unwrap();
        b.sleep(Duration::from_millis(200)).wait().unwrap();
        let t = b.now().wait().unwrap();
        assert!(t.as_us() > 50_000, "virtual time moved on");
        let ticks = u32::from_le_bytes(b.peek(0x2000_8000, 4).wait().unwrap().try_into().unwrap());
        let core = b.snapshot().wait().unwrap().core.unwrap();
        if set_vtor {
            assert!(ticks > 10, "{ticks} ticks");
            assert_eq!(core.vtor, 0x0800_0000);
        } else {
            assert_eq!(ticks, 0);
            assert_eq!(core.vtor, 0, "VTOR still at the ROM (through the boot alias) after Go");
            assert_eq!(core.ipsr, 15);
            assert_eq!(core.r[15] & !3, default_handler("STM32G071RB") & !3);
        }
        b.shutdown().unwrap();
    }
}
