//! The ROM model on the virtual board, USART side: AN3155 through the real USART registers
//! (auto-baud on 0x7F, 8E1, RXNE/TDR) and flash work through the FLASH controller's registers
//! (unlock, PG/PER/MER, BSY1 polling, SR errors), so line timing, parity errors, baud mismatch,
//! flash timing and flash errors are the peripheral models'.

mod romhost;

use std::time::{Duration, Instant};

use hil_virtual_board::{
    Board, BoardConfig, EventKind, FaultConfig, ImageFormat, RamInit, ResetCauseName, RomEntryKind, StRom, Timing,
};
use romhost::{ACK, Host, NACK, T};

fn start(name: &str, tweak: impl FnOnce(&mut BoardConfig)) -> Board {
    let mut cfg = BoardConfig { name: name.into(), ram_init: RamInit::Zero, ..Default::default() };
    tweak(&mut cfg);
    Board::start(cfg).unwrap()
}

fn new_chip(name: &str) -> Board {
    start(name, |_| {})
}

fn counters(b: &Board) -> hil_virtual_board::DebugCounters {
    b.debug().counters().wait().unwrap()
}

#[test]
fn new_chip_answers_sync_get_commands_and_reads_erased_flash() {
    let b = new_chip("strom-sync");
    let h = Host::new(&b, "USART2");
    // A new chip boots its ROM through the empty check (RM0444 3.3.2).
    let e = b.wait_event(0, T, |e| matches!(e.kind, EventKind::RomEntered(_))).unwrap();
    assert!(matches!(e.kind, EventKind::RomEntered(ref en) if en.via == RomEntryKind::Reset(ResetCauseName::PowerOn)));
    // Anything but 0x7F before the sync is ignored (the auto-baud unit fails on it and re-arms).
    h.send(&[0x55]);
    assert!(h.silent_for(Duration::from_millis(100)));
    assert_eq!(h.sync(), Some(ACK));
    // Get: version 0x31 and the command list (Extended Erase, no legacy Erase).
    assert_eq!(h.command(0x00), Some(ACK));
    let get = h.recv(14);
    assert_eq!(get, vec![11, 0x31, 0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44, 0x63, 0x73, 0x82, 0x92, ACK]);
    assert_eq!(h.command(0x01), Some(ACK));
    assert_eq!(h.recv(4), vec![0x31, 0, 0, ACK]);
    assert_eq!(h.get_id(), Some(0x460));
    // After the sync, 0x7F is a command byte: with a wrong complement it is NACKed.
    assert_eq!(h.command(0x7F), Some(NACK));
    assert_eq!(h.read(0x0800_0000, 256).unwrap(), vec![0xFF; 256]);
    // The USART is set up as the ROM does it: 9-bit word with parity (8E1), auto-baud measured.
    let snap = b.snapshot().wait().unwrap();
    let u = snap.usarts.iter().find(|u| u.name == "USART2").unwrap();
    assert_eq!(u.cr1 & 0x1401, 0x1401, "UE, M0, PCE");
    assert!(u.baud.is_some_and(|bd| bd.abs_diff(115_200) < 1_000), "{:?}", u.baud);
    assert!(snap.rom_notes.iter().any(|n| n.contains("USART2 became active first")), "{:?}", snap.rom_notes);
    b.shutdown().unwrap();
}

#[test]
fn writes_go_through_the_flash_controller_in_virtual_time() {
    let b = new_chip("strom-write");
    let h = Host::new(&b, "USART2");
    assert_eq!(h.sync(), Some(ACK));
    let before = counters(&b);
    let t0 = b.now().wait().unwrap();
    let data: Vec<u8> = (0..=255).collect();
    h.write(0x0800_1000, &data).unwrap();
    let after = counters(&b);
    // 32 double words, each unlocked/PG/two stores/BSY1 polled by the CPU (RM0444 3.3.7).
    assert_eq!(after.accesses.flash_programs - before.accesses.flash_programs, 32);
    assert!(after.accesses.flash_reg_writes_cpu > before.accesses.flash_reg_writes_cpu + 3);
    assert!(after.accesses.flash_reg_reads_cpu > before.accesses.flash_reg_reads_cpu + 32);
    // 32 x 85 us (DS12232 typical) plus the frames on the wire.
    let took = b.now().wait().unwrap().as_ps() - t0.as_ps();
    assert!(took >= 32 * 85_000_000, "{} us", took / 1_000_000);
    assert_eq!(h.read(0x0800_1000, 256).unwrap(), data);
    assert_eq!(b.peek(0x0800_1000, 4).wait().unwrap(), vec![0, 1, 2, 3]);
    // A write that is not a whole double word is padded with 0xFF (AN3155, [OBL]).
    h.write(0x0800_2004, &[1, 2, 3, 4]).unwrap();
    assert_eq!(
        b.peek(0x0800_2000, 12).wait().unwrap(),
        vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 0xFF, 0xFF, 0xFF, 0xFF]
    );
    // Programming over programmed cells: PROGERR from the controller, NACK.
    assert_eq!(h.write(0x0800_1000, &[0u8, 1, 2, 4]), Err("write data refused"));
    // SRAM above the ROM's own RAM is written directly; the ROM's RAM is no memory to it.
    h.write(0x2000_4000, &[9, 8, 7, 6]).unwrap();
    assert_eq!(b.peek(0x2000_4000, 4).wait().unwrap(), vec![9, 8, 7, 6]);
    assert_eq!(h.write(0x2000_0100, &[1, 2, 3, 4]), Err("write address refused"));
    // The controller is locked again after each operation.
    assert_eq!(b.snapshot().wait().unwrap().flash.cr & 0x8000_0000, 0x8000_0000, "FLASH_CR.LOCK");
    b.shutdown().unwrap();
}

#[test]
fn erase_pages_mass_and_banks_through_the_controller() {
    let b = start("strom-erase-g0b1", |c| c.chip = "STM32G0B1RE".into());
    let h = Host::new(&b, "USART2");
    assert_eq!(h.sync(), Some(ACK));
    assert_eq!(h.get_id(), Some(0x467));
    for a in [0x0800_0000u32, 0x0800_0800, 0x0804_0000, 0x0804_0800] {
        h.write(a, &[0x5A; 16]).unwrap();
    }
    let before = counters(&b);
    // Page 1, then page 129 (the second page of bank 2: PNB 257 on the G0B1, RM0444 3.3.1).
    assert_eq!(h.erase_pages(&[1, 129]), Some(ACK));
    assert_eq!(counters(&b).accesses.flash_page_erases - before.accesses.flash_page_erases, 2);
    assert_eq!(b.peek(0x0800_0800, 4).wait().unwrap(), vec![0xFF; 4]);
    assert_eq!(b.peek(0x0804_0800, 4).wait().unwrap(), vec![0xFF; 4]);
    assert_eq!(b.peek(0x0800_0000, 4).wait().unwrap(), vec![0x5A; 4], "page 0 untouched");
    // Pages that do not exist: NACK, nothing erased.
    assert_eq!(h.erase_pages(&[0, 256]), Some(NACK));
    assert_eq!(b.peek(0x0800_0000, 4).wait().unwrap(), vec![0x5A; 4]);
    // Bank 2 erase (0xFFFD), then bank 1 (0xFFFE).
    assert_eq!(h.command(0x44), Some(ACK));
    h.send(&[0xFF, 0xFD, 0x02]);
    assert_eq!(h.byte(), Some(ACK));
    assert_eq!(b.peek(0x0804_0000, 4).wait().unwrap(), vec![0xFF; 4]);
    assert_eq!(b.peek(0x0800_0000, 4).wait().unwrap(), vec![0x5A; 4], "bank 1 untouched");
    assert_eq!(h.command(0x44), Some(ACK));
    h.send(&[0xFF, 0xFE, 0x01]);
    assert_eq!(h.byte(), Some(ACK));
    assert_eq!(b.peek(0x0800_0000, 4).wait().unwrap(), vec![0xFF; 4]);
    // Mass erase: 22 ms of virtual time (DS13560 figure in the chip data).
    h.write(0x0800_0000, &[1; 8]).unwrap();
    let t0 = b.now().wait().unwrap();
    assert_eq!(h.mass_erase(), Some(ACK));
    assert!(b.now().wait().unwrap().as_ps() - t0.as_ps() >= 22_000_000_000);
    assert_eq!(b.peek(0x0800_0000, 8).wait().unwrap(), vec![0xFF; 8]);
    b.shutdown().unwrap();
}

#[test]
fn parity_errors_and_baud_mismatch_are_the_usart_models() {
    let b = new_chip("strom-line");
    let h = Host::new(&b, "USART2");
    // The host at 57600 Bd: auto-baud measures it and the ROM answers at that rate.
    h.uart.set_host_baud(Some(57_600)).wait().unwrap();
    let t0 = b.now().wait().unwrap();
    assert_eq!(h.sync(), Some(ACK));
    let snap = b.snapshot().wait().unwrap();
    let baud = snap.usarts.iter().find(|u| u.name == "USART2").unwrap().baud.unwrap();
    assert!(baud.abs_diff(57_600) < 600, "measured {baud}");
    // Two frames (0x7F in, ACK out) at 57600 Bd, each timed by the USART's framing while it is on
    // the wire: 174 us (10 bits) + 191 us (11 bits). A gated board answers right after the ACK.
    let took = b.now().wait().unwrap().as_ps() - t0.as_ps();
    assert!(took >= 364_000_000, "{} ns", took / 1000);
    assert_eq!(h.get_id(), Some(0x460));
    // A parity error in the complement byte: the ROM takes the byte as it is ([OBL] ignores PE)
    // and the pair still checks out; a parity error that came with a corrupted bit fails it.
    h.send_with_parity_error(&[0x02, 0xFD], 1);
    assert_eq!(h.byte(), Some(ACK));
    let _ = h.recv(4);
    assert_eq!(
        b.exec("line errors", |m| Ok(m.rom().as_any().downcast_mut::<StRom>().unwrap().line_errors())).wait().unwrap(),
        1
    );
    h.send_with_parity_error(&[0x02, 0xFC], 1);
    assert_eq!(h.byte(), Some(NACK));
    // The host switches to 115200 Bd without a new sync: beyond the receiver's tolerance the
    // frames arrive garbled with FE (RM0444 33.5.9) and the command is NACKed.
    h.uart.set_host_baud(Some(115_200)).wait().unwrap();
    h.send(&[0x02, 0xFD]);
    assert_eq!(h.byte(), Some(NACK));
    h.uart.set_host_baud(Some(57_600)).wait().unwrap();
    assert_eq!(h.get_id(), Some(0x460), "back in step at the measured rate");
    b.shutdown().unwrap();
}

#[test]
fn injected_program_failure_and_write_protection_reach_the_protocol() {
    let b = new_chip("strom-faults");
    let h = Host::new(&b, "USART2");
    assert_eq!(h.sync(), Some(ACK));
    let mut faults = FaultConfig::default();
    faults.flash_program_fail.push(0x0800_3008..0x0800_3010);
    b.set_faults(faults).wait().unwrap();
    assert_eq!(h.write(0x0800_3000, &[0x11; 32]), Err("write data refused"), "PROGERR on the 2nd double word");
    assert_eq!(b.peek(0x0800_3000, 16).wait().unwrap()[..8], [0x11; 8]);
    assert_eq!(b.peek(0x0800_3008, 8).wait().unwrap(), vec![0xFF; 8], "the failed double word keeps its content");
    b.set_faults(FaultConfig::default()).wait().unwrap();
    // Write protection of pages 4..=5 (WRP1A), loaded at the next power-on.
    b.set_option_word("WRP1A", 4 | 5 << 16).wait().unwrap();
    b.power_cycle(Duration::from_millis(1)).wait().unwrap();
    assert_eq!(h.sync(), Some(ACK));
    // AN2662 Write Memory note: no error for writes to write-protected pages: ACK, nothing written.
    h.write(0x0800_2000, &[0x22; 8]).unwrap();
    assert_eq!(b.peek(0x0800_2000, 8).wait().unwrap(), vec![0xFF; 8]);
    // Erasing a protected page fails in the controller (WRPERR): NACK.
    assert_eq!(h.erase_pages(&[4]), Some(NACK));
    assert_eq!(h.erase_pages(&[6]), Some(ACK));
    b.shutdown().unwrap();
}

#[test]
fn the_first_active_usart_wins_and_the_other_is_shut_down() {
    let b = new_chip("strom-select");
    let u1 = Host::new(&b, "USART1");
    let u2 = Host::new(&b, "USART2");
    assert_eq!(u1.sync(), Some(ACK));
    assert_eq!(u1.get_id(), Some(0x460));
    // USART2 was disabled when USART1 won (AN2606 interface selection).
    u2.send(&[0x7F]);
    assert!(u2.silent_for(Duration::from_millis(200)));
    let snap = b.snapshot().wait().unwrap();
    assert_eq!(snap.usarts.iter().find(|u| u.name == "USART2").unwrap().cr1 & 1, 0, "USART2 UE cleared");
    assert!(snap.rom_notes.iter().any(|n| n.contains("USART1 became active first")), "{:?}", snap.rom_notes);
    b.shutdown().unwrap();
}

#[test]
fn go_starts_the_application_with_vtor_and_latches_untouched() {
    let b = start("strom-go", |c| c.power_on = false);
    let app = hil_fixtures::get("app", 0x0800_0000).unwrap().elf.to_vec();
    b.load_image(app, ImageFormat::Elf).wait().unwrap();
    // nBOOT_SEL = 0, BOOT0 high: system memory (RM0444 2.5).
    b.set_option_word("USER", 0xFFFF_FEAA & !(1 << 24)).wait().unwrap();
    b.set_boot0(true).wait().unwrap();
    b.power_on().wait().unwrap();
    let h = Host::new(&b, "USART2");
    assert_eq!(h.sync(), Some(ACK));
    // Go to an erased-flash address in a page without code: flash is a jump target, so ACK.
    assert_eq!(h.go(0x0800_0002), Some(NACK), "misaligned");
    assert_eq!(h.go(0x4000_0000), Some(NACK), "not a memory");
    let cur = b.event_cursor().wait().unwrap();
    assert_eq!(h.go(0x0800_0000), Some(ACK));
    let left = b.wait_event(cur, T, |e| matches!(e.kind, EventKind::RomLeft { .. })).unwrap();
    assert!(matches!(left.kind, EventKind::RomLeft { msp: 0x2000_9000, .. }), "{left:?}");
    let banner = String::from_utf8_lossy(&h.uart.read_until(b" ]\r\n", T).wait().unwrap()).into_owned();
    assert!(banner.contains("hil-app 0.1.0 base=0x08000000 vtor=0x08000000"), "{banner}");
    let snap = b.snapshot().wait().unwrap();
    assert_eq!(snap.remap_register & 3, 1, "the boot-mode remap (system memory at 0) stays after Go (P1)");
    // The boot latches are untouched: a reset goes back to the ROM (P6).
    let cur = b.event_cursor().wait().unwrap();
    b.pulse_nrst().wait().unwrap();
    b.wait_event(cur, T, |e| matches!(e.kind, EventKind::RomEntered(_))).unwrap();
    b.shutdown().unwrap();
}

#[test]
fn option_byte_write_and_readout_protection_reset_through_obl() {
    let b = new_chip("strom-obl");
    let h = Host::new(&b, "USART2");
    assert_eq!(h.sync(), Some(ACK));
    // Readout Protect: ACK, ACK, then option byte loading resets into the ROM at RDP level 1.
    let cur = b.event_cursor().wait().unwrap();
    assert_eq!(h.command(0x82), Some(ACK));
    assert_eq!(h.byte(), Some(ACK));
    let e = b.wait_event(cur, T, |e| matches!(e.kind, EventKind::RomEntered(_))).unwrap();
    assert!(
        matches!(e.kind, EventKind::RomEntered(ref en) if en.via == RomEntryKind::Reset(ResetCauseName::OptionByteLoad))
    );
    assert_eq!(h.sync(), Some(ACK));
    assert_eq!(h.command(0x11), Some(NACK), "Read Memory under RDP level 1");
    assert_eq!(h.get_id(), Some(0x460), "Get ID is served under RDP");
    // Readout Unprotect: level 0 again, the flash mass-erased (RM0444 3.5.1).
    let cur = b.event_cursor().wait().unwrap();
    assert_eq!(h.command(0x92), Some(ACK));
    assert_eq!(h.byte(), Some(ACK));
    b.wait_event(cur, T, |e| matches!(e.kind, EventKind::RomEntered(_))).unwrap();
    assert_eq!(h.sync(), Some(ACK));
    assert_eq!(h.read(0x0800_0000, 4).unwrap(), vec![0xFF; 4]);
    // Write Memory to the option bytes: the USER word with nBOOT0 = 0 (system memory), written
    // through FLASH_OPTR + OPTSTRT, then option byte loading.
    let mut image = h.read(0x1FFF_7800, 128).unwrap();
    let user = u32::from_le_bytes(image[0..4].try_into().unwrap()) & !(1 << 26);
    image[0..4].copy_from_slice(&user.to_le_bytes());
    let cur = b.event_cursor().wait().unwrap();
    h.write(0x1FFF_7800, &image).unwrap();
    b.wait_event(cur, T, |e| matches!(e.kind, EventKind::Reset { cause: ResetCauseName::OptionByteLoad, .. })).unwrap();
    let snap = b.snapshot().wait().unwrap();
    let loaded = snap.flash.loaded.iter().find(|(n, _)| n == "USER").unwrap().1;
    assert_eq!(loaded & (1 << 26), 0, "nBOOT0 loaded as 0");
    assert_eq!(b.peek(0x1FFF_7804, 4).wait().unwrap(), (!user).to_le_bytes().to_vec(), "complement programmed");
    b.shutdown().unwrap();
}

#[test]
fn the_rom_keeps_a_hardware_watchdog_fed() {
    let b = start("strom-iwdg", |c| c.power_on = false);
    // IWDG_SW = 0: the watchdog starts at reset (RM0444 3.4.1) with a 512 ms period.
    b.set_option_word("USER", 0xFFFF_FEAA & !(1 << 16)).wait().unwrap();
    b.power_on().wait().unwrap();
    let h = Host::new(&b, "USART2");
    assert_eq!(h.sync(), Some(ACK));
    let cur = b.event_cursor().wait().unwrap();
    // Two seconds of virtual time without traffic: no watchdog reset.
    let t0 = b.now().wait().unwrap();
    let end = Instant::now() + T;
    while b.now().wait().unwrap().as_ps() - t0.as_ps() < 2_000_000_000_000 {
        assert!(Instant::now() < end, "virtual time does not advance");
        b.sleep(Duration::from_millis(20)).wait().unwrap();
    }
    let resets = b.events(cur, Duration::ZERO).wait().unwrap();
    assert!(!resets.iter().any(|e| matches!(e.kind, EventKind::Reset { .. })), "{resets:?}");
    assert_eq!(h.get_id(), Some(0x460), "still the same session");
    b.shutdown().unwrap();
}

#[test]
fn realistic_timing_paces_the_protocol_at_the_baud_rate() {
    let b = start("strom-realistic", |c| c.timing = Timing::Realistic);
    let h = Host::new(&b, "USART2");
    assert_eq!(h.sync(), Some(ACK));
    // 4 x 256 bytes read back: 1024 frames of 11 bits at 115200 Bd = 98 ms of line time.
    let t = Instant::now();
    for i in 0..4 {
        assert_eq!(h.read(0x0800_0000 + 256 * i, 256).unwrap().len(), 256);
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(95), "{took:?}");
    b.shutdown().unwrap();
}
