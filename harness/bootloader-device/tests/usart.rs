//! AN3155 engine: every command with its success, error and gating paths.

mod common;

use std::time::Duration;

use common::{Call, ERASE_TIME, FakeTarget, MASS_ERASE_TIME, OPTION_TIME, PROGRAM_TIME, address_frame, with_xor};
use hil_bootloader_device::usart::cmd;
use hil_bootloader_device::{
    ACK, Jump, LineError, NACK, RdpLevel, RomAction, RomConfig, RxByte, TargetError, UsartEngine, UsartOutput,
};

const G0B1: &str = "STM32G0B1RE";
const G071: &str = "STM32G071RB";
const F103: &str = "STM32F103CB";

struct Session {
    engine: UsartEngine,
    target: FakeTarget,
    log: Vec<UsartOutput>,
}

impl Session {
    fn with_config(chip: &str, config: RomConfig) -> Self {
        Session { engine: UsartEngine::new(config).unwrap(), target: FakeTarget::for_chip(chip), log: Vec::new() }
    }
    fn new(chip: &str) -> Self {
        Self::with_config(chip, FakeTarget::config(chip))
    }
    /// Synced session (autobaud done).
    fn synced(chip: &str) -> Self {
        let mut s = Self::new(chip);
        assert_eq!(s.send(&[0x7F]), [ACK]);
        s
    }
    fn synced_with(chip: &str, config: RomConfig) -> Self {
        let mut s = Self::with_config(chip, config);
        assert_eq!(s.send(&[0x7F]), [ACK]);
        s
    }
    /// Sends bytes, returns what the device transmitted in answer.
    fn send(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut tx = Vec::new();
        for &b in bytes {
            for out in self.engine.receive(b, &mut self.target) {
                if let UsartOutput::Tx(t) = out {
                    tx.push(t);
                }
                self.log.push(out);
            }
        }
        tx
    }
    fn command(&mut self, code: u8) -> Vec<u8> {
        self.send(&[code, !code])
    }
    fn actions(&self) -> Vec<RomAction> {
        self.log
            .iter()
            .filter_map(|o| match o {
                UsartOutput::Action(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }
    fn busy(&self) -> Duration {
        self.log.iter().map(|o| if let UsartOutput::Busy(d) = o { *d } else { Duration::ZERO }).sum()
    }
    fn clear_log(&mut self) {
        self.log.clear();
        self.target.calls.clear();
    }
}

// ------------------------------------------------------------------ autobaud and framing

#[test]
fn autobaud_answers_the_first_0x7f_only() {
    let mut s = Session::new(G0B1);
    // Bytes before the autobaud byte leave the ROM waiting (the ABR unit locks on 0x7F only).
    assert_eq!(s.send(&[0x00, 0x55, 0xFF]), [0u8; 0]);
    assert!(!s.engine.is_synced());
    assert_eq!(s.send(&[0x7F]), [ACK]);
    assert!(s.engine.is_synced());
    // Later 0x7F is a command byte: alone it gets no answer, the pair 7F 7F fails the complement.
    assert_eq!(s.send(&[0x7F]), [0u8; 0]);
    assert_eq!(s.send(&[0x7F]), [NACK]);
    // A reset re-arms the autobaud.
    s.engine.reset();
    assert_eq!(s.send(&[0x7F]), [ACK]);
}

#[test]
fn l412_quirk_sends_an_extra_ack_after_sync() {
    let mut config = FakeTarget::config(G0B1);
    config.usart.extra_ack_after_sync = true;
    let mut s = Session::with_config(G0B1, config);
    assert_eq!(s.send(&[0x7F]), [ACK, ACK]);
}

#[test]
fn wrong_complement_unknown_and_unlisted_commands_are_nacked() {
    let mut s = Session::synced(G0B1);
    assert_eq!(s.send(&[0x00, 0x00]), [NACK], "bad complement");
    assert_eq!(s.send(&[0xFF, 0x00]), [NACK], "not a command (stm32flash resync pair)");
    assert_eq!(s.command(cmd::ERASE), [NACK], "G0 lists Extended Erase, not Erase");
    assert_eq!(s.command(cmd::GET_CHECKSUM), [NACK], "not in the G0 list");
    assert_eq!(s.command(0x50), [NACK], "Special is not offered");
    assert!(s.engine.is_idle());
}

#[test]
fn line_errors_are_counted_and_the_value_is_used() {
    let mut s = Session::synced(G0B1);
    // A parity-flagged byte is processed with its (corrupted) value: here it breaks the complement.
    let corrupted = RxByte { value: 0xFD, error: Some(LineError::Parity) };
    let mut tx = Vec::new();
    tx.extend(s.engine.receive(cmd::GET_VERSION, &mut s.target));
    tx.extend(s.engine.receive(corrupted, &mut s.target));
    assert_eq!(tx, [UsartOutput::Tx(NACK)]);
    assert_eq!(s.engine.line_errors(), 1);
    // Flag with an intact value: the ROM does not look at PE/FE, so the command is served.
    s.engine.receive(cmd::GET_ID, &mut s.target);
    let out = s.engine.receive(RxByte { value: !cmd::GET_ID, error: Some(LineError::Framing) }, &mut s.target);
    assert_eq!(out.first(), Some(&UsartOutput::Tx(ACK)));
    assert_eq!(s.engine.line_errors(), 2);
}

// ------------------------------------------------------------------ Get, Get Version, Get ID

#[test]
fn get_lists_version_and_commands() {
    let mut s = Session::synced(G0B1);
    let expected = [ACK, 11, 0x31, 0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44, 0x63, 0x73, 0x82, 0x92, ACK];
    assert_eq!(s.command(cmd::GET), expected);
    let mut f1 = Session::synced(F103);
    assert_eq!(
        f1.command(cmd::GET),
        [ACK, 11, 0x22, 0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x43, 0x63, 0x73, 0x82, 0x92, ACK]
    );
}

#[test]
fn get_version_returns_three_bytes() {
    let mut s = Session::synced(G0B1);
    assert_eq!(s.command(cmd::GET_VERSION), [ACK, 0x31, 0x00, 0x00, ACK]);
    let mut config = FakeTarget::config(G0B1);
    config.usart.get_version_options = [0x12, 0x34];
    let mut s = Session::synced_with(G0B1, config);
    assert_eq!(s.command(cmd::GET_VERSION), [ACK, 0x31, 0x12, 0x34, ACK]);
}

#[test]
fn get_id_returns_the_pid() {
    assert_eq!(Session::synced(G0B1).command(cmd::GET_ID), [ACK, 0x01, 0x04, 0x67, ACK]);
    assert_eq!(Session::synced(G071).command(cmd::GET_ID), [ACK, 0x01, 0x04, 0x60, ACK]);
}

// ------------------------------------------------------------------ Read Memory

#[test]
fn read_memory_returns_raw_bytes_without_checksum() {
    let mut s = Session::synced(G0B1);
    s.target.preload_flash(0x0800_0100, &[1, 2, 3, 4, 5]);
    assert_eq!(s.command(cmd::READ_MEMORY), [ACK]);
    assert_eq!(s.send(&address_frame(0x0800_0100)), [ACK]);
    assert_eq!(s.send(&[4, !4]), [ACK, 1, 2, 3, 4, 5]);
    assert!(s.engine.is_idle());
}

#[test]
fn read_memory_reads_256_bytes_and_every_memory() {
    let mut s = Session::synced(G0B1);
    for (address, len) in [(0x0800_0000u32, 256usize), (0x1FFF_7800, 128), (0x1FFF_0000, 16), (0x2000_4000, 8)] {
        s.command(cmd::READ_MEMORY);
        assert_eq!(s.send(&address_frame(address)), [ACK], "{address:#x}");
        let n = (len - 1) as u8;
        let reply = s.send(&[n, !n]);
        assert_eq!(reply.len(), len + 1, "{address:#x}");
        let mut expected = vec![0; len];
        hil_bootloader_device::BootTarget::read_memory(&mut s.target, address, &mut expected).unwrap();
        assert_eq!(&reply[1..], &expected[..]);
    }
    // Option bytes read as stored (RDP 0xAA first).
    s.command(cmd::READ_MEMORY);
    s.send(&address_frame(0x1FFF_7800));
    assert_eq!(s.send(&[0, 0xFF]), [ACK, 0xAA]);
}

#[test]
fn read_memory_errors() {
    let mut s = Session::synced(G0B1);
    // Bad address checksum.
    s.command(cmd::READ_MEMORY);
    let mut frame = address_frame(0x0800_0000);
    frame[4] ^= 1;
    assert_eq!(s.send(&frame), [NACK]);
    // Outside the memory map, peripherals, and the bootloader's own RAM.
    for address in [0x0009_0000, 0x4002_1000, 0x2000_0000, 0x2000_3FFF, 0x0808_0000] {
        s.command(cmd::READ_MEMORY);
        assert_eq!(s.send(&address_frame(address)), [NACK], "{address:#x}");
    }
    // Count and complement disagree.
    s.command(cmd::READ_MEMORY);
    s.send(&address_frame(0x0800_0000));
    assert_eq!(s.send(&[0x10, 0x10]), [NACK]);
    // Range running past the end of the flash.
    s.command(cmd::READ_MEMORY);
    assert_eq!(s.send(&address_frame(0x0807_FFF0)), [ACK]);
    assert_eq!(s.send(&[0x1F, !0x1F]), [NACK]);
    assert!(s.engine.is_idle());
}

// ------------------------------------------------------------------ Go

#[test]
fn go_sends_one_ack_and_jumps_through_the_vector() {
    let mut s = Session::synced(G0B1);
    s.target.preload_flash(0x0800_0000, &[0x00, 0x40, 0x00, 0x20, 0xC1, 0x00, 0x00, 0x08]);
    assert_eq!(s.command(cmd::GO), [ACK]);
    assert_eq!(s.send(&address_frame(0x0800_0000)), [ACK]);
    let jump = Jump {
        address: 0x0800_0000,
        msp: Some(0x2000_4000),
        pc: 0x0800_00C1,
        reset_peripherals: false,
        usb_disconnect: false,
    };
    assert_eq!(s.actions(), [RomAction::Jump(jump.clone())]);
    assert!(s.engine.is_finished());
    // The ROM is gone: nothing answers any more.
    assert_eq!(s.send(&[0x7F, cmd::GET, 0xFF]), [0u8; 0]);
    // Applying the action reaches the target's jump.
    RomAction::Jump(jump.clone()).apply(&mut s.target);
    assert_eq!(s.target.calls.last(), Some(&Call::Jump(jump)));
}

#[test]
fn go_resets_peripherals_where_the_version_does() {
    let mut f1 = Session::synced(F103);
    f1.target.preload_flash(0x0800_0000, &[0, 0x50, 0, 0x20, 0x01, 0x01, 0, 0x08]);
    f1.command(cmd::GO);
    assert_eq!(f1.send(&address_frame(0x0800_0000)), [ACK]);
    let [RomAction::Jump(jump)] = &f1.actions()[..] else { panic!("{:?}", f1.actions()) };
    assert!(jump.reset_peripherals, "AN3155 Go resets the peripherals on the F1");
}

#[test]
fn go_refuses_non_executable_and_bad_addresses() {
    let mut s = Session::synced(G0B1);
    for address in [0x1FFF_7800u32, 0x1FFF_0000, 0x1FFF_7000, 0x0800_0002, 0x2000_0000, 0x6000_0000] {
        assert_eq!(s.command(cmd::GO), [ACK]);
        assert_eq!(s.send(&address_frame(address)), [NACK], "{address:#x}");
    }
    // Vector running past the end of RAM.
    s.command(cmd::GO);
    assert_eq!(s.send(&address_frame(0x2002_3FFC)), [NACK]);
    assert!(s.actions().is_empty());
    assert!(s.engine.is_idle());
}

// ------------------------------------------------------------------ Write Memory

/// Write Memory as a host does it: stops at the first NACK.
fn write(s: &mut Session, address: u32, data: &[u8]) -> Vec<u8> {
    let mut reply = s.command(cmd::WRITE_MEMORY);
    if reply != [ACK] {
        return reply;
    }
    reply.extend(s.send(&address_frame(address)));
    if reply.last() != Some(&ACK) {
        return reply;
    }
    let mut frame = vec![(data.len() - 1) as u8];
    frame.extend_from_slice(data);
    reply.extend(s.send(&with_xor(&frame)));
    reply
}

#[test]
fn write_memory_programs_flash_in_double_words() {
    let mut s = Session::synced(G0B1);
    let data: Vec<u8> = (0..=255).collect();
    assert_eq!(write(&mut s, 0x0800_0800, &data), [ACK, ACK, ACK]);
    assert_eq!(s.target.flash_at(0x0800_0800, 256), &data[..]);
    assert_eq!(s.busy(), PROGRAM_TIME * 32, "the ACK waits for the program time");
    assert_eq!(s.target.writes(), [(0x0800_0800, 256)]);
}

#[test]
fn write_memory_pads_partial_granules_with_ff() {
    let mut s = Session::synced(G0B1);
    // 4 bytes at an address that is 4 mod 8: the controller gets the whole double word.
    assert_eq!(write(&mut s, 0x0800_0004, &[1, 2, 3, 4]), [ACK, ACK, ACK]);
    assert_eq!(s.target.writes(), [(0x0800_0000, 8)]);
    assert_eq!(s.target.flash_at(0x0800_0000, 8), [0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4]);
    // 12 bytes (stm32flash pads to 4) -> 16 bytes programmed.
    assert_eq!(write(&mut s, 0x0800_0100, &[7; 12]), [ACK, ACK, ACK]);
    assert_eq!(s.target.flash_at(0x0800_0100, 16), [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0xFF, 0xFF, 0xFF, 0xFF]);
    // The second half of an already programmed double word cannot be programmed (PROGERR): NACK.
    assert_eq!(write(&mut s, 0x0800_0004, &[9, 9, 9, 9]), [ACK, ACK, NACK]);
}

#[test]
fn write_memory_to_ram_is_exact() {
    let mut s = Session::synced(G0B1);
    assert_eq!(write(&mut s, 0x2000_4000, &[1, 2, 3]), [ACK, ACK, ACK]);
    assert_eq!(s.target.ram_at(0x2000_4000, 4), [1, 2, 3, 0]);
    assert_eq!(s.busy(), Duration::ZERO);
}

#[test]
fn write_memory_errors() {
    let mut s = Session::synced(G0B1);
    // Bootloader RAM: NACK at the address.
    assert_eq!(write(&mut s, 0x2000_1000, &[0; 4]), [ACK, NACK]);
    // Bad data checksum: NACK, nothing written.
    s.command(cmd::WRITE_MEMORY);
    s.send(&address_frame(0x0800_0000));
    assert_eq!(s.send(&[3, 1, 2, 3, 4, 0x55]), [NACK]);
    // Misaligned start (AN3155: word aligned).
    assert_eq!(write(&mut s, 0x0800_0002, &[0; 4]), [ACK, ACK, NACK]);
    // System memory is read only.
    assert_eq!(write(&mut s, 0x1FFF_0000, &[0; 4]), [ACK, ACK, NACK]);
    // Across the end of the flash.
    assert_eq!(write(&mut s, 0x0807_FFF8, &[0; 16]), [ACK, ACK, NACK]);
    assert!(s.target.writes().is_empty());
    // Controller errors (fault injection) NACK.
    s.target.fail_next = Some(TargetError::Controller("PGSERR".into()));
    assert_eq!(write(&mut s, 0x0800_0000, &[0; 8]), [ACK, ACK, NACK]);
    assert!(s.engine.is_idle());
}

#[test]
fn write_protected_writes_are_acked_unless_switched() {
    let mut s = Session::synced(G0B1);
    s.target.protected_pages.insert(0);
    // AN2662 2.8: no error for write-protected sectors.
    assert_eq!(write(&mut s, 0x0800_0000, &[0; 8]), [ACK, ACK, ACK]);
    assert_eq!(s.target.flash_at(0x0800_0000, 8), [0xFF; 8], "nothing was programmed");
    let mut config = FakeTarget::config(G0B1);
    config.usart.ack_write_protected_writes = false;
    let mut s = Session::synced_with(G0B1, config);
    s.target.protected_pages.insert(0);
    assert_eq!(write(&mut s, 0x0800_0000, &[0; 8]), [ACK, ACK, NACK]);
}

#[test]
fn g4_style_alignment_switch_rejects_4_mod_8() {
    let mut config = FakeTarget::config(G0B1);
    config.usart.write_address_alignment = 8;
    let mut s = Session::synced_with(G0B1, config);
    assert_eq!(write(&mut s, 0x0800_0004, &[0; 4]), [ACK, ACK, NACK]);
    assert_eq!(write(&mut s, 0x0800_0008, &[0; 4]), [ACK, ACK, ACK]);
}

#[test]
fn option_byte_write_launches_option_byte_loading() {
    let mut s = Session::synced(G0B1);
    let image = [0xAA, 0xFE, 0xFF, 0xFE];
    assert_eq!(write(&mut s, 0x1FFF_7800, &image), [ACK, ACK, ACK]);
    assert_eq!(s.target.calls, [Call::WriteOptionBytes(image.to_vec())]);
    assert_eq!(s.actions(), [RomAction::LaunchOptionBytes]);
    assert_eq!(s.busy(), OPTION_TIME);
    assert!(s.engine.is_finished());
}

#[test]
fn option_byte_write_rules() {
    let mut s = Session::synced(G0B1);
    // Not at the base of the area (AN2662 2.8).
    assert_eq!(write(&mut s, 0x1FFF_7808, &[0; 4]), [ACK, ACK, NACK]);
    // RDP level 2 (0xCC) is refused unless the board allows it.
    assert_eq!(write(&mut s, 0x1FFF_7800, &[0xCC, 0xFE, 0xFF, 0xFE]), [ACK, ACK, NACK]);
    assert!(s.target.calls.is_empty());
    let mut config = FakeTarget::config(G0B1);
    config.allow_rdp_level2 = true;
    let mut s = Session::synced_with(G0B1, config);
    assert_eq!(write(&mut s, 0x1FFF_7800, &[0xCC, 0xFE, 0xFF, 0xFE]), [ACK, ACK, ACK]);
}

#[test]
fn g071_v11_2_does_not_launch_option_bytes_over_usart() {
    let mut config = FakeTarget::config(G071);
    config.usart.launch_option_bytes_after_write = false;
    let mut s = Session::synced_with(G071, config);
    assert_eq!(write(&mut s, 0x1FFF_7800, &[0xAA, 0xFE, 0xFF, 0xFE]), [ACK, ACK, ACK]);
    assert!(s.actions().is_empty());
    assert_eq!(s.command(cmd::GET_ID), [ACK, 1, 0x04, 0x60, ACK], "still in the bootloader");
}

#[test]
fn otp_is_programmable() {
    let mut s = Session::synced(G0B1);
    assert_eq!(write(&mut s, 0x1FFF_7000, &[0x12, 0x34, 0x56, 0x78]), [ACK, ACK, ACK]);
    assert_eq!(s.target.writes(), [(0x1FFF_7000, 8)]);
}

// ------------------------------------------------------------------ Extended Erase

fn ext_erase(s: &mut Session, payload: &[u8]) -> Vec<u8> {
    let mut reply = s.command(cmd::EXTENDED_ERASE);
    reply.extend(s.send(&with_xor(payload)));
    reply
}

#[test]
fn extended_erase_pages() {
    let mut s = Session::synced(G0B1);
    s.target.preload_flash(0x0800_0000, &[0; 4096]);
    s.target.preload_flash(0x0807_F800, &[0; 16]);
    // Three pages: 0, 1 and 255 (last page of bank 2).
    assert_eq!(ext_erase(&mut s, &[0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0xFF]), [ACK, ACK]);
    assert_eq!(s.target.calls, [Call::ErasePage(0), Call::ErasePage(1), Call::ErasePage(255)]);
    assert_eq!(s.busy(), ERASE_TIME * 3);
    assert_eq!(s.target.flash_at(0x0800_0000, 4096), &[0xFF; 4096][..]);
    assert_eq!(s.target.flash_at(0x0807_F800, 16), [0xFF; 16]);
}

#[test]
fn extended_erase_errors() {
    let mut s = Session::synced(G0B1);
    // Bad checksum.
    s.command(cmd::EXTENDED_ERASE);
    assert_eq!(s.send(&[0x00, 0x00, 0x00, 0x05, 0x00]), [NACK]);
    // A page that does not exist: nothing is erased.
    assert_eq!(ext_erase(&mut s, &[0x00, 0x01, 0x00, 0x03, 0x01, 0x00]), [ACK, NACK]);
    assert!(s.target.calls.is_empty());
    // Controller refuses (write-protected page): NACK after trying every page.
    s.target.protected_pages.insert(1);
    assert_eq!(ext_erase(&mut s, &[0x00, 0x01, 0x00, 0x01, 0x00, 0x02]), [ACK, NACK]);
    assert_eq!(s.target.calls, [Call::ErasePage(1), Call::ErasePage(2)]);
    assert!(s.engine.is_idle());
}

#[test]
fn extended_erase_special_codes() {
    let mut s = Session::synced(G0B1);
    assert_eq!(ext_erase(&mut s, &[0xFF, 0xFF]), [ACK, ACK], "mass erase FFFF 00");
    assert_eq!(ext_erase(&mut s, &[0xFF, 0xFE]), [ACK, ACK], "bank 1");
    assert_eq!(ext_erase(&mut s, &[0xFF, 0xFD]), [ACK, ACK], "bank 2");
    assert_eq!(s.target.calls, [Call::MassErase, Call::EraseBank(1), Call::EraseBank(2)]);
    assert_eq!(s.busy(), MASS_ERASE_TIME * 3);
    // Reserved codes 0xFFF0-0xFFFC.
    for lo in 0xF0..=0xFC {
        assert_eq!(ext_erase(&mut s, &[0xFF, lo]), [ACK, NACK], "{lo:#x}");
    }
    // Special code with a wrong checksum.
    s.command(cmd::EXTENDED_ERASE);
    assert_eq!(s.send(&[0xFF, 0xFF, 0xFF]), [NACK]);
    assert_eq!(s.target.calls.len(), 3);
}

#[test]
fn bank_erase_needs_two_banks() {
    let mut s = Session::synced(G071);
    assert_eq!(ext_erase(&mut s, &[0xFF, 0xFE]), [ACK, NACK]);
    assert_eq!(ext_erase(&mut s, &[0xFF, 0xFD]), [ACK, NACK]);
    assert_eq!(ext_erase(&mut s, &[0xFF, 0xFF]), [ACK, ACK]);
    assert_eq!(s.target.calls, [Call::MassErase]);
}

// ------------------------------------------------------------------ Erase (0x43)

#[test]
fn legacy_erase_pages_and_global() {
    let mut s = Session::synced(F103);
    assert_eq!(s.command(cmd::EXTENDED_ERASE), [NACK], "the F1 ROM only has 0x43");
    assert_eq!(s.command(cmd::ERASE), [ACK]);
    assert_eq!(s.send(&with_xor(&[0x01, 0x05, 0x7F])), [ACK]);
    assert_eq!(s.target.calls, [Call::ErasePage(5), Call::ErasePage(127)]);
    // Global erase: 0xFF then 0x00 ([SF] stm32_mass_erase).
    assert_eq!(s.command(cmd::ERASE), [ACK]);
    assert_eq!(s.send(&[0xFF, 0x00]), [ACK]);
    assert_eq!(s.target.calls.last(), Some(&Call::MassErase));
    // Global erase with a wrong second byte, a bad checksum, a page beyond 127.
    s.command(cmd::ERASE);
    assert_eq!(s.send(&[0xFF, 0xFF]), [NACK]);
    s.command(cmd::ERASE);
    assert_eq!(s.send(&[0x00, 0x03, 0x00]), [NACK]);
    s.command(cmd::ERASE);
    assert_eq!(s.send(&with_xor(&[0x00, 0x80])), [NACK]);
    assert_eq!(s.target.calls.len(), 3);
}

// ------------------------------------------------------------------ protection commands

#[test]
fn write_protect_passes_sector_codes_and_resets() {
    let mut s = Session::synced(G0B1);
    assert_eq!(s.command(cmd::WRITE_PROTECT), [ACK]);
    assert_eq!(s.send(&with_xor(&[0x01, 0x00, 0x03])), [ACK]);
    assert_eq!(s.target.write_protection, Some(vec![0x00, 0x03]));
    assert_eq!(s.actions(), [RomAction::LaunchOptionBytes]);
}

#[test]
fn write_protect_with_bad_checksum_is_nacked() {
    let mut s = Session::synced(G0B1);
    s.command(cmd::WRITE_PROTECT);
    assert_eq!(s.send(&[0x00, 0x02, 0x00]), [NACK]);
    assert!(s.target.calls.is_empty());
    assert!(s.actions().is_empty());
}

#[test]
fn write_unprotect_acks_twice_then_resets() {
    let mut s = Session::synced(G0B1);
    s.target.write_protection = Some(vec![1]);
    assert_eq!(s.command(cmd::WRITE_UNPROTECT), [ACK, ACK]);
    assert_eq!(s.target.write_protection, None);
    assert_eq!(s.actions(), [RomAction::LaunchOptionBytes]);
    assert_eq!(s.busy(), OPTION_TIME);
    // A failure still gets the second ACK ([OBL]) but no reset.
    let mut s = Session::synced(G0B1);
    s.target.fail_next = Some(TargetError::Controller("OPTVERR".into()));
    assert_eq!(s.command(cmd::WRITE_UNPROTECT), [ACK, ACK]);
    assert!(s.actions().is_empty());
    assert!(s.engine.is_idle());
}

#[test]
fn readout_protect_sets_level_1_and_resets() {
    let mut s = Session::synced(G0B1);
    assert_eq!(s.command(cmd::READOUT_PROTECT), [ACK, ACK]);
    assert_eq!(s.target.calls, [Call::SetRdp(RdpLevel::Level1)]);
    assert_eq!(s.actions(), [RomAction::LaunchOptionBytes]);
    // Failure: NACK instead of the second ACK, no reset.
    let mut s = Session::synced(G0B1);
    s.target.fail_next = Some(TargetError::Controller("OPTVERR".into()));
    assert_eq!(s.command(cmd::READOUT_PROTECT), [ACK, NACK]);
    assert!(s.actions().is_empty());
}

#[test]
fn readout_unprotect_acks_twice_before_the_mass_erase() {
    let mut s = Session::synced(G0B1);
    s.target.rdp = RdpLevel::Level1;
    s.target.preload_flash(0x0800_0000, &[0; 16]);
    s.clear_log();
    assert_eq!(s.command(cmd::READOUT_UNPROTECT), [ACK, ACK]);
    // Order: both ACKs, then the busy span of the RDP regression, then the reset.
    assert_eq!(
        s.log,
        [
            UsartOutput::Tx(ACK),
            UsartOutput::Tx(ACK),
            UsartOutput::Busy(OPTION_TIME),
            UsartOutput::Action(RomAction::LaunchOptionBytes)
        ]
    );
    assert_eq!(s.target.rdp, RdpLevel::Level0);
    assert_eq!(s.target.flash_at(0x0800_0000, 16), [0xFF; 16]);
}

#[test]
fn readout_protection_gates_commands() {
    let mut s = Session::synced(G0B1);
    s.target.rdp = RdpLevel::Level1;
    // Served under RDP (AN3155 command table note).
    assert_eq!(s.command(cmd::GET)[0], ACK);
    assert_eq!(s.command(cmd::GET_VERSION), [ACK, 0x31, 0, 0, ACK]);
    assert_eq!(s.command(cmd::GET_ID), [ACK, 1, 0x04, 0x67, ACK]);
    // NACKed right after the command pair, no further bytes expected.
    for code in [
        cmd::READ_MEMORY,
        cmd::GO,
        cmd::WRITE_MEMORY,
        cmd::EXTENDED_ERASE,
        cmd::WRITE_PROTECT,
        cmd::WRITE_UNPROTECT,
        cmd::READOUT_PROTECT,
    ] {
        assert_eq!(s.command(code), [NACK], "{code:#04x}");
        assert!(s.engine.is_idle());
    }
    assert!(s.target.calls.is_empty());
    // Readout Unprotect is how RDP is removed.
    assert_eq!(s.command(cmd::READOUT_UNPROTECT), [ACK, ACK]);
    assert_eq!(s.target.calls, [Call::SetRdp(RdpLevel::Level0)]);
}

// ------------------------------------------------------------------ Get Checksum (where listed)

fn with_checksum_command(chip: &str) -> Session {
    let mut config = FakeTarget::config(chip);
    config.usart.commands.push(cmd::GET_CHECKSUM);
    Session::synced_with(chip, config)
}

/// stm32flash's own CRC ([SF] stm32_sw_crc), re-derived bit by bit for the comparison.
fn reference_crc(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for w in data.chunks(4) {
        let word = u32::from(w[0]) | u32::from(w[1]) << 8 | u32::from(w[2]) << 16 | u32::from(w[3]) << 24;
        for bit in (0..32).rev() {
            let top = (crc >> 31) ^ ((word >> bit) & 1);
            crc <<= 1;
            if top != 0 {
                crc ^= 0x04C1_1DB7;
            }
        }
    }
    crc
}

#[test]
fn get_checksum_as_stm32flash_reads_it() {
    let mut s = with_checksum_command(G0B1);
    assert_eq!(s.command(cmd::GET)[1], 12, "listed when configured");
    let image: Vec<u8> = (0..64u32).flat_map(|i| (i * 0x0101_0101).to_le_bytes()).collect();
    s.target.preload_flash(0x0800_0000, &image);
    assert_eq!(s.command(cmd::GET_CHECKSUM), [ACK]);
    assert_eq!(s.send(&address_frame(0x0800_0000)), [ACK]);
    let reply = s.send(&with_xor(&256u32.to_be_bytes()));
    let crc = reference_crc(&image).to_be_bytes();
    assert_eq!(reply, [ACK, ACK, crc[0], crc[1], crc[2], crc[3], crc[0] ^ crc[1] ^ crc[2] ^ crc[3]]);
}

#[test]
fn get_checksum_errors() {
    let mut s = with_checksum_command(G0B1);
    s.command(cmd::GET_CHECKSUM);
    assert_eq!(s.send(&address_frame(0x0800_0002)), [NACK], "address not a multiple of 4");
    s.command(cmd::GET_CHECKSUM);
    s.send(&address_frame(0x0800_0000));
    assert_eq!(s.send(&with_xor(&6u32.to_be_bytes())), [NACK], "length not a multiple of 4");
    s.command(cmd::GET_CHECKSUM);
    s.send(&address_frame(0x0800_0000));
    assert_eq!(s.send(&with_xor(&0x10_0000u32.to_be_bytes())), [NACK], "past the flash");
    s.target.rdp = RdpLevel::Level1;
    assert_eq!(s.command(cmd::GET_CHECKSUM), [NACK], "gated by RDP");
}

// ------------------------------------------------------------------ no timeouts, resync

#[test]
fn a_command_waits_for_its_bytes_forever_then_resyncs() {
    // stm32flash's resync: 0xFF 0x00 pairs until a NACK comes back ([SF] stm32_resync).
    for prefix in [
        vec![cmd::WRITE_MEMORY, !cmd::WRITE_MEMORY, 0x08, 0x00, 0x00, 0x00, 0x08, 0x10],
        vec![cmd::READ_MEMORY, !cmd::READ_MEMORY, 0x08],
        vec![cmd::EXTENDED_ERASE, !cmd::EXTENDED_ERASE, 0x00, 0x20],
        vec![cmd::WRITE_PROTECT, !cmd::WRITE_PROTECT, 0x30],
        vec![0x44],
    ] {
        let mut s = Session::synced(G0B1);
        s.send(&prefix);
        let mut pairs = 0;
        loop {
            pairs += 1;
            assert!(pairs < 200, "no NACK after {pairs} pairs for {prefix:02x?}");
            if s.send(&[0xFF, 0x00]).contains(&NACK) {
                break;
            }
        }
        // A frame of odd length ends on the first byte of a pair, leaving the 0x00 pending as a
        // command byte (the ROM behaves the same); one more byte completes that pair with a NACK,
        // as stm32flash's second init byte does.
        if !s.engine.is_idle() {
            assert_eq!(s.send(&[0x7F]), [NACK], "{prefix:02x?}");
        }
        assert!(s.engine.is_idle(), "{prefix:02x?}");
        assert_eq!(s.command(cmd::GET_ID), [ACK, 1, 0x04, 0x67, ACK], "in sync again after {prefix:02x?}");
    }
}

#[test]
fn busy_spans_come_before_the_ack_they_delay() {
    let mut s = Session::synced(G0B1);
    s.clear_log();
    ext_erase(&mut s, &[0x00, 0x00, 0x00, 0x07]);
    assert_eq!(
        s.log,
        [UsartOutput::Tx(ACK), UsartOutput::Busy(ERASE_TIME), UsartOutput::Tx(ACK)],
        "ACK for the command, then the erase time, then the final ACK"
    );
}
