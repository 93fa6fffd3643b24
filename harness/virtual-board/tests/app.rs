//! The `app` fixture on the virtual G071: banner, SysTick LED, commands, resets, the RAM marker,
//! boot selection into the ROM hand-off, the debug port, PTYs and timing.

use std::time::{Duration, Instant};

use hil_cortex_m::{HaltReason, Reg, Size};
use hil_virtual_board::{
    Board, BoardConfig, BoardEvent, BootTargetName, CoreState, EventKind, FaultConfig, ImageFormat, PtyConfig, RamInit,
    ResetCauseName, RomEntryKind, Timing, UartFaults,
};

const T: Duration = Duration::from_secs(20);

fn app(base: u32) -> Vec<u8> {
    hil_fixtures::get("app", base).unwrap_or_else(|| panic!("app fixture at {base:#x} built")).elf.to_vec()
}

/// A chain loader at 0x08000000 for images linked elsewhere: its reset handler loads MSP and PC
/// from the image's vector table (what a bootloader in the first pages does).
fn chain_loader(target: u32) -> Vec<u8> {
    let mut v = vec![0u8; 0x100];
    v[0..4].copy_from_slice(&0x2000_9000u32.to_le_bytes());
    v[4..8].copy_from_slice(&0x0800_00C1u32.to_le_bytes());
    // 0xC0: ldr r0, [pc, #8]; ldr r1, [r0]; msr msp, r1; ldr r1, [r0, #4]; bx r1; .word target
    let code: [u16; 7] = [0x4802, 0x6801, 0xF381, 0x8808, 0x6841, 0x4708, 0xBF00];
    for (i, h) in code.iter().enumerate() {
        v[0xC0 + 2 * i..0xC2 + 2 * i].copy_from_slice(&h.to_le_bytes());
    }
    v[0xCC..0xD0].copy_from_slice(&target.to_le_bytes());
    v
}

fn start(name: &str, base: u32, tweak: impl FnOnce(&mut BoardConfig)) -> Board {
    let mut cfg =
        BoardConfig { name: name.into(), power_on: false, ram_init: RamInit::Random { seed: 1 }, ..Default::default() };
    tweak(&mut cfg);
    let power = cfg.power_on;
    cfg.power_on = false;
    let b = Board::start(cfg).unwrap();
    b.load_image(app(base), ImageFormat::Elf).wait().unwrap();
    if base != 0x0800_0000 {
        b.load_image(chain_loader(base), ImageFormat::Bin { base: 0x0800_0000 }).wait().unwrap();
    }
    if power {
        b.power_on().wait().unwrap();
    }
    b
}

fn banner(b: &Board) -> String {
    let u = b.uart("USART2").unwrap();
    let got = u.read_until(b" ]\r\n", T).wait().unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

fn command(b: &Board, c: u8, until: &str) -> String {
    let u = b.uart("USART2").unwrap();
    u.write(&[c]).wait().unwrap();
    String::from_utf8_lossy(&u.read_until(until.as_bytes(), T).wait().unwrap()).into_owned()
}

fn rom_entry(b: &Board, from: u64) -> hil_virtual_board::RomEntry {
    match b.wait_event(from, T, |e| matches!(e.kind, EventKind::RomEntered(_))).unwrap().kind {
        EventKind::RomEntered(e) => e,
        _ => unreachable!(),
    }
}

#[test]
fn banner_led_reset_flags_and_ram_marker() {
    let b = start("app-basic", 0x0800_0000, |c| c.power_on = true);
    let first = banner(&b);
    assert!(first.contains("hil-app 0.1.0 base=0x08000000 vtor=0x08000000 boots=1"), "{first}");
    assert!(first.contains("[ PIN PWR ]"), "power-on flags: {first}");
    // SysTick blinks PA5 every 100 ms of virtual time.
    let from = 0;
    let mut toggles: Vec<BoardEvent> = Vec::new();
    let end = Instant::now() + T;
    while toggles.len() < 4 && Instant::now() < end {
        let e = b.wait_event(
            toggles.last().map_or(from, |e| e.seq + 1),
            T,
            |e| matches!(&e.kind, EventKind::Pin { pin, .. } if pin == "PA5"),
        );
        toggles.push(e.unwrap());
    }
    // Gaps in microseconds: 100 ms apart, up to a few cycles of interrupt latency.
    let gaps: Vec<u64> = toggles.windows(2).map(|w| (w[1].at.as_ps() - w[0].at.as_ps()) / 1_000_000).collect();
    assert!(gaps[1..].iter().all(|g| g.abs_diff(100_000) < 50), "LED toggles every 100 ms: {gaps:?} us");
    // 'r': SYSRESETREQ; the next banner shows SFT (and PIN: the reset pulse) and boots=2.
    let cursor = b.event_cursor().wait().unwrap();
    command(&b, b'r', "reset\r\n");
    let second = banner(&b);
    assert!(second.contains("boots=2"), "the .uninit marker survives SYSRESETREQ: {second}");
    assert!(second.contains("[ PIN SFT ]"), "{second}");
    let reset = b.wait_event(cursor, T, |e| matches!(e.kind, EventKind::Reset { .. })).unwrap();
    assert!(matches!(reset.kind, EventKind::Reset { cause: ResetCauseName::Software, .. }));
    // 'v' and unknown commands.
    assert!(command(&b, b'v', "\r\n").contains("hil-app 0.1.0 base=0x08000000"));
    assert!(command(&b, b'x', "?\r\n").ends_with("?\r\n"));
    // NRST pulse: PIN only, marker still there.
    b.pulse_nrst().wait().unwrap();
    let third = banner(&b);
    assert!(third.contains("boots=3") && third.contains("[ PIN ]"), "{third}");
    // Power cycle: RAM lost, the marker starts again.
    b.power_cycle(Duration::from_millis(10)).wait().unwrap();
    let fourth = banner(&b);
    assert!(fourth.contains("boots=1") && fourth.contains("[ PIN PWR ]"), "{fourth}");
    let snap = b.snapshot().wait().unwrap();
    assert_eq!(snap.boot.as_ref().unwrap().target, BootTargetName::MainFlash);
    assert_eq!(snap.core.as_ref().unwrap().vtor, 0x0800_0000);
    assert_eq!(snap.reset_flags, Vec::<&str>::new(), "the app cleared the flags with RMVF");
    b.shutdown().unwrap();
}

#[test]
fn images_run_at_every_fixture_base_with_their_vtor() {
    for base in [0x0800_2000, 0x0800_4000, 0x0800_8000] {
        let b = start(&format!("app-base-{base:x}"), base, |c| c.power_on = true);
        let text = banner(&b);
        assert!(text.contains(&format!("base={base:#010X}").replace("0X", "0x")), "{text}");
        assert!(text.contains(&format!("vtor={base:#010X}").replace("0X", "0x")), "{text}");
        // Interrupts vector through the image's own table: the USART2 RX interrupt answers.
        assert!(command(&b, b'v', "\r\n").contains("base="));
        b.shutdown().unwrap();
    }
}

#[test]
fn watchdog_and_option_byte_launch_resets() {
    let b = start("app-resets", 0x0800_0000, |c| c.power_on = true);
    banner(&b);
    command(&b, b'w', "watchdog\r\n");
    let t = banner(&b);
    assert!(t.contains("[ PIN IWDG ]") && t.contains("boots=2"), "{t}");
    command(&b, b'o', "obl\r\n");
    let t = banner(&b);
    assert!(t.contains("[ OBL PIN ]") && t.contains("boots=3"), "{t}");
    b.shutdown().unwrap();
}

#[test]
fn new_chip_boots_the_rom_and_the_entry_is_observable() {
    let b = Board::start(BoardConfig::g071("app-new-chip")).unwrap();
    let e = rom_entry(&b, 0);
    assert_eq!(e.via, RomEntryKind::Reset(ResetCauseName::PowerOn));
    assert!(!e.primask);
    assert_eq!(e.vtor, 0, "straight out of reset");
    assert_eq!(e.msp, 0x2000_2700, "the ROM's stack pointer word");
    assert_eq!(e.alias, BootTargetName::SystemMemory);
    let boot = e.boot.unwrap();
    assert!(boot.empty_redirect, "empty check");
    let snap = b.snapshot().wait().unwrap();
    assert!(snap.rom_active);
    assert_eq!(snap.core.unwrap().vtor, 0, "the default ROM points VTOR at its table through the boot alias (P1)");
    b.shutdown().unwrap();
}

#[test]
fn jumps_from_the_application_into_the_rom() {
    let b = start("app-jumps", 0x0800_0000, |c| c.power_on = true);
    banner(&b);
    // The recommended jump: PRIMASK cleared again, SYSCFG remap to system memory.
    let cur = b.event_cursor().wait().unwrap();
    command(&b, b'j', "jump\r\n");
    let e = rom_entry(&b, cur);
    assert_eq!(e.via, RomEntryKind::Jump);
    assert!(!e.primask, "interrupts enabled before the jump");
    assert_eq!(e.vtor, 0, "the recommended jump points VTOR at the remapped system memory");
    assert_eq!(e.remap_register & 3, 1);
    assert_eq!(e.alias, BootTargetName::SystemMemory);
    assert_eq!(e.msp, 0x2000_2700);
    assert!(!e.systick_running && e.nvic_enabled.iter().all(|w| *w == 0));
    // The PRIMASK pitfall (P2): interrupts left disabled, no remap.
    b.pulse_nrst().wait().unwrap();
    banner(&b);
    let cur = b.event_cursor().wait().unwrap();
    command(&b, b'p', "jump\r\n");
    let e = rom_entry(&b, cur);
    assert!(e.primask, "entered the ROM with PRIMASK=1");
    assert_eq!(e.alias, BootTargetName::MainFlash, "no remap");
    assert!(e.systick_running, "SysTick left running");
    // Reset-then-branch (P3): a clean core after SYSRESETREQ.
    b.pulse_nrst().wait().unwrap();
    banner(&b);
    let cur = b.event_cursor().wait().unwrap();
    command(&b, b'b', "reset+jump\r\n");
    let e = rom_entry(&b, cur);
    assert_eq!(e.via, RomEntryKind::Jump);
    assert!(!e.primask && !e.systick_running);
    assert_eq!(e.boot.unwrap().cause, ResetCauseName::Software);
    b.shutdown().unwrap();
}

#[test]
fn boot0_pin_and_option_bits_select_the_rom_at_reset() {
    let b = start("app-boot0", 0x0800_0000, |_| {});
    // nBOOT_SEL = 0: the BOOT0 pin decides.
    b.set_option_word("USER", 0xFFFF_FEAA & !(1 << 24)).wait().unwrap();
    b.power_on().wait().unwrap();
    banner(&b);
    b.set_boot0(true).wait().unwrap();
    let cur = b.event_cursor().wait().unwrap();
    b.pulse_nrst().wait().unwrap();
    let e = rom_entry(&b, cur);
    assert_eq!(e.via, RomEntryKind::Reset(ResetCauseName::Pin));
    assert!(e.boot.as_ref().unwrap().boot0);
    assert_eq!(e.boot.unwrap().target, BootTargetName::SystemMemory);
    b.set_boot0(false).wait().unwrap();
    b.pulse_nrst().wait().unwrap();
    assert!(banner(&b).contains("[ PIN ]"));
    b.shutdown().unwrap();
}

#[test]
fn debug_port_halt_step_registers_and_reset_with_halt() {
    let b = start("app-debug", 0x0800_0000, |c| c.power_on = true);
    banner(&b);
    let d = b.debug();
    d.halt().wait().unwrap();
    assert_eq!(d.state().wait().unwrap(), CoreState::Halted(HaltReason::Request));
    let pc = d.reg(Reg::Pc).wait().unwrap();
    assert!((0x0800_0000..0x0802_0000).contains(&pc), "{pc:#x}");
    let before = d.counters().wait().unwrap();
    d.step().wait().unwrap();
    let after = d.counters().wait().unwrap();
    assert!(after.instructions > before.instructions || after.cycles > before.cycles);
    // Memory and peripheral reads through the AHB-AP view.
    assert_eq!(d.read(0x4001_5800, Size::Word).wait().unwrap() & 0xFFF, 0x460);
    assert_eq!(d.read(0x0800_0000, Size::Word).wait().unwrap(), 0x2000_9000);
    let words = d.read_words(0x0800_0000, 2).wait().unwrap();
    assert_eq!(words[0], 0x2000_9000);
    d.resume().wait().unwrap();
    assert!(matches!(d.state().wait().unwrap(), CoreState::Running | CoreState::Sleeping));
    // Reset and halt at the reset vector (vector catch).
    d.reset(true).wait().unwrap();
    assert_eq!(d.state().wait().unwrap(), CoreState::Halted(HaltReason::VectorCatch));
    let reset_vector = d.read(0x0800_0004, Size::Word).wait().unwrap();
    assert_eq!(d.reg(Reg::Pc).wait().unwrap(), reset_vector & !1);
    // SYSRESETREQ written by the debugger while halted: performed at once.
    let cur = b.event_cursor().wait().unwrap();
    d.write(0xE000_EDFC, Size::Word, 0).wait().unwrap(); // DEMCR: no vector catch
    d.write(0xE000_ED0C, Size::Word, 0x05FA_0004).wait().unwrap();
    let ev = b.wait_event(cur, T, |e| matches!(e.kind, EventKind::Reset { .. })).unwrap();
    assert!(matches!(ev.kind, EventKind::Reset { cause: ResetCauseName::Software, .. }));
    d.resume().wait().unwrap();
    banner(&b);
    let c = d.counters().wait().unwrap();
    assert!(c.instructions > 1000);
    b.shutdown().unwrap();
}

#[test]
fn rdp_level_1_hides_flash_from_the_debugger() {
    let b = start("app-rdp", 0x0800_0000, |_| {});
    b.set_option_word("USER", 0xFFFF_FEBB).wait().unwrap();
    b.power_on().wait().unwrap();
    banner(&b);
    let d = b.debug();
    let e = d.read(0x0800_0000, Size::Word).wait().unwrap_err();
    assert!(e.to_string().contains("RDP level 1"), "{e}");
    assert!(d.read(0x2000_0000, Size::Word).wait().is_ok(), "SRAM stays readable");
    b.shutdown().unwrap();
}

#[test]
fn pty_carries_the_usart_byte_stream() {
    use std::io::{Read, Write};
    let b = start("app-pty", 0x0800_0000, |c| {
        c.ptys = vec![PtyConfig { usart: "USART2".into(), link: None }];
    });
    let path = b.uart("USART2").unwrap().pty_path().expect("PTY path");
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    b.power_on().wait().unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + T;
    let mut buf = [0u8; 256];
    // The board's slave end is in raw mode with VMIN=1: read blocks until bytes arrive.
    while !String::from_utf8_lossy(&got).contains(" ]\r\n") && Instant::now() < end {
        let n = f.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("hil-app 0.1.0 base=0x08000000"), "{got:?}");
    f.write_all(b"v").unwrap();
    got.clear();
    while !got.ends_with(b"\r\n") && Instant::now() < end {
        let n = f.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), "hil-app 0.1.0 base=0x08000000\r\n");
    b.shutdown().unwrap();
}

#[test]
fn injected_rx_faults_lose_commands() {
    let b = start("app-faults", 0x0800_0000, |c| c.power_on = true);
    banner(&b);
    let mut faults = FaultConfig::default();
    faults.uart_rx.insert("USART2".into(), UartFaults { drop_every: Some(1), ..Default::default() });
    b.set_faults(faults).wait().unwrap();
    let u = b.uart("USART2").unwrap();
    u.write(b"v").wait().unwrap();
    assert!(u.read(100, Duration::from_millis(300)).wait().unwrap().is_empty(), "the byte was dropped");
    b.set_faults(FaultConfig::default()).wait().unwrap();
    assert!(command(&b, b'v', "\r\n").contains("base="));
    let snap = b.snapshot().wait().unwrap();
    assert_eq!(snap.counters.accesses.uart_rx_dropped, 1);
    b.shutdown().unwrap();
}

#[test]
fn realistic_timing_paces_virtual_time_to_wall_time() {
    let b = start("app-realistic", 0x0800_0000, |c| {
        c.power_on = true;
        c.timing = Timing::Realistic;
    });
    banner(&b);
    let v0 = b.now().wait().unwrap();
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let v1 = b.now().wait().unwrap();
    let wall = w0.elapsed().as_secs_f64();
    let virt = (v1.as_ps() - v0.as_ps()) as f64 * 1e-12;
    assert!((virt - wall).abs() < 0.1, "virtual {virt:.3} s vs wall {wall:.3} s");
    // At 115200 Bd the 107-byte help text takes 9.3 ms of line time; ten of them take 93 ms of
    // virtual time and (allowing for the pacing lag) as much wall time.
    let (t, v0) = (Instant::now(), b.now().wait().unwrap());
    for _ in 0..10 {
        let help = command(&b, b'?', "OBL\r\n");
        assert_eq!(help.len(), 107, "{help:?}");
    }
    let virt = (b.now().wait().unwrap().as_ps() - v0.as_ps()) / 1_000_000_000;
    assert!(virt >= 93, "{virt} ms of virtual time");
    assert!(t.elapsed() >= Duration::from_millis(80), "{:?}", t.elapsed());
    b.shutdown().unwrap();
}

#[test]
fn registry_and_async_use() {
    let b = Board::start(BoardConfig::g071("app-registry")).unwrap();
    assert!(Board::running().contains(&"app-registry".to_string()));
    let again = Board::start(BoardConfig::g071("app-registry")).err().unwrap();
    assert!(again.to_string().contains("already running"), "{again}");
    let found = Board::lookup("app-registry").unwrap();
    // A Pending is a future: poll it on a minimal executor.
    let t = futures_lite_block_on(found.now());
    assert!(t.is_ok());
    assert!(Board::lookup("nope").is_none());
    b.shutdown().unwrap();
    assert!(Board::lookup("app-registry").is_none(), "the name is free after shutdown");
    assert!(matches!(found.now().wait(), Err(hil_virtual_board::BoardError::Gone(_))));
    let again = Board::start(BoardConfig::g071("app-registry")).unwrap();
    again.shutdown().unwrap();
}

#[test]
fn g0b1_new_chip_enters_its_rom() {
    let b = Board::start(BoardConfig { name: "g0b1-new".into(), chip: "STM32G0B1RE".into(), ..Default::default() })
        .unwrap();
    let e = rom_entry(&b, 0);
    assert_eq!(e.msp, 0x2000_4000);
    assert_eq!(e.via, RomEntryKind::Reset(ResetCauseName::PowerOn));
    let d = b.debug();
    assert_eq!(d.read(0x4001_5800, Size::Word).wait().unwrap() & 0xFFF, 0x467);
    assert_eq!(d.read(0x1FFF_75E0, Size::Half).wait().unwrap(), 512);
    b.shutdown().unwrap();
}

#[test]
fn connect_under_reset_halts_at_the_reset_vector() {
    let b = start("app-cur", 0x0800_0000, |_| {});
    let d = b.debug();
    b.set_nrst(true).wait().unwrap();
    b.power_on().wait().unwrap();
    assert_eq!(d.state().wait().unwrap(), CoreState::InReset);
    assert!(d.read(0x0800_0000, Size::Word).wait().is_err(), "the bus is held in reset");
    // The debug registers are reachable under reset: enable halting debug and vector catch.
    d.write(0xE000_EDF0, Size::Word, 0xA05F_0001).wait().unwrap();
    d.write(0xE000_EDFC, Size::Word, 1).wait().unwrap();
    b.set_nrst(false).wait().unwrap();
    assert_eq!(d.state().wait().unwrap(), CoreState::Halted(HaltReason::VectorCatch));
    assert_eq!(d.counters().wait().unwrap().instructions, 0);
    d.write(0xE000_EDFC, Size::Word, 0).wait().unwrap();
    d.resume().wait().unwrap();
    assert!(banner(&b).contains("[ PIN PWR ]"));
    b.shutdown().unwrap();
}

fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::{Arc, Condvar, Mutex};
    use std::task::{Context, Poll, Wake, Waker};
    struct Flag(Mutex<bool>, Condvar);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() = true;
            self.1.notify_all();
        }
    }
    let flag = Arc::new(Flag(Mutex::new(false), Condvar::new()));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        let mut w = flag.0.lock().unwrap();
        while !*w {
            w = flag.1.wait(w).unwrap();
        }
        *w = false;
    }
}
