//! The probe layer (hil_rig::probe) with real firmware on virtual boards, opened by selector as a
//! real probe would be: flash the `app` fixture through probe-rs (ST's flash algorithm on the
//! emulated core), reset-and-halt at its reset handler, run, halt inside the app; the same behind
//! a chain loader at 0x08008000; attach to a running board; connect under reset; snapshots;
//! errors that name the address.

use std::time::Duration;

use hil_image::Image;
use hil_rig::probe::{CoreReg, FlashImage, ImageFormat, ProbeError, ProbeOptions, ProbeSession, RunState};
use hil_virtual_board::{Board, BoardConfig, CoreState, EventKind, ResetCauseName, Timing};

const T: Duration = Duration::from_secs(20);
const G071: &str = "STM32G071RBTx";

fn board(name: &str) -> Board {
    let cfg = BoardConfig {
        name: name.into(),
        timing: Timing::Fast,
        power_on: true,
        default_deadline: Duration::from_secs(30),
        ..BoardConfig::g071(name)
    };
    Board::start(cfg).unwrap()
}

fn open(b: &Board, opts: &ProbeOptions) -> ProbeSession {
    ProbeSession::open(&hil_virtual_probe::selector_for(b.name()), G071, opts).unwrap()
}

fn app(base: u32) -> (FlashImage, Image) {
    let f = hil_fixtures::get("app", base).unwrap_or_else(|| panic!("app fixture at {base:#x}"));
    let image = Image::from_elf("app", f.elf).unwrap();
    (FlashImage::new(format!("app@{base:#x}"), f.elf.to_vec(), ImageFormat::Elf), image)
}

/// Initial SP and reset handler from an image's vector table.
fn vectors(image: &Image, base: u32) -> (u32, u32) {
    (image.read_u32(base).unwrap(), image.read_u32(base + 4).unwrap() & !1)
}

/// A chain loader at 0x08000000 for images linked elsewhere: loads MSP and PC from the image's
/// vector table (what a bootloader in the first pages does). Reset handler at 0x080000C0.
fn chain_loader(target: u32) -> Vec<u8> {
    let mut v = vec![0u8; 0x100];
    v[0..4].copy_from_slice(&0x2000_9000u32.to_le_bytes());
    v[4..8].copy_from_slice(&0x0800_00C1u32.to_le_bytes());
    // ldr r0, [pc, #8]; ldr r1, [r0]; msr msp, r1; ldr r1, [r0, #4]; bx r1; nop; .word target
    let code: [u16; 7] = [0x4802, 0x6801, 0xF381, 0x8808, 0x6841, 0x4708, 0xBF00];
    for (i, h) in code.iter().enumerate() {
        v[0xC0 + 2 * i..0xC2 + 2 * i].copy_from_slice(&h.to_le_bytes());
    }
    v[0xCC..0xD0].copy_from_slice(&target.to_le_bytes());
    v
}

fn banner(b: &Board) -> String {
    let got = b.uart("USART2").unwrap().read_until(b" ]\r\n", T).wait().unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn flash_app_reset_halt_run_and_halt_inside_it() {
    let b = board("probe-layer-app");
    let mut p = open(&b, &ProbeOptions::default());
    let (img, image) = app(0x0800_0000);
    let (sp, reset) = vectors(&image, 0x0800_0000);
    let c0 = b.debug().counters().wait().unwrap();
    let report = p.flash(&img, true).unwrap();
    let c1 = b.debug().counters().wait().unwrap();
    assert!(report.verified && report.format == "elf");
    assert_eq!(report.bytes, image.len(), "every loadable byte: {report:?}");
    assert_eq!(report.segments.first().map(|s| s.0), Some(0x0800_0000));
    assert!(c1.instructions - c0.instructions > 10_000, "the algorithm ran on the core");
    assert_eq!(c1.accesses.flash_reg_writes_debug, c0.accesses.flash_reg_writes_debug);
    // Reset and halt: the vector catch stops at the reset handler, MSP from the vector table.
    let regs = p.reset_and_halt().unwrap();
    assert_eq!((regs.pc, regs.msp, regs.ipsr), (reset, sp, 0), "{regs:x?}");
    assert_eq!(p.register(CoreReg::Pc).unwrap(), reset);
    assert_eq!(p.status().unwrap(), RunState::Halted("Exception".into()), "vector catch");
    p.run().unwrap();
    let text = banner(&b);
    assert!(text.contains("base=0x08000000 vtor=0x08000000"), "{text}");
    let pc = p.halt().unwrap();
    assert!(image.segment_at(pc).is_some(), "PC {pc:#x} inside the app");
    assert_eq!(p.vtor().unwrap(), 0x0800_0000);
    let regs = p.registers().unwrap();
    assert_eq!(regs.pc, pc);
    assert!((0x2000_0000..=sp).contains(&regs.msp), "MSP {:#x} on the app's stack", regs.msp);
    p.run().unwrap();
    drop(p);
    b.shutdown().unwrap();
}

#[test]
fn app_at_0x08008000_behind_a_chain_loader() {
    let b = board("probe-layer-app-8000");
    let mut p = open(&b, &ProbeOptions::default());
    let (img, image) = app(0x0800_8000);
    let (sp, reset) = vectors(&image, 0x0800_8000);
    p.flash(&img, true).unwrap();
    let loader = FlashImage::new("chain-loader", chain_loader(0x0800_8000), ImageFormat::Bin { base: 0x0800_0000 });
    let report = p.flash(&loader, true).unwrap();
    assert_eq!((report.format, report.bytes, report.segments.clone()), ("bin", 0x100, vec![(0x0800_0000, 0x100)]));
    // Reset: the loader's reset handler first; a breakpoint catches the app's.
    let regs = p.reset_and_halt().unwrap();
    assert_eq!((regs.pc, regs.msp), (0x0800_00C0, 0x2000_9000));
    p.set_breakpoint(reset).unwrap();
    p.run().unwrap();
    assert_eq!(p.wait_halted(Duration::from_secs(2)).unwrap(), reset);
    let regs = p.registers().unwrap();
    assert_eq!((regs.pc, regs.msp), (reset, sp), "the loader set MSP from the app's table");
    assert_eq!(p.vtor().unwrap(), 0, "the app has not set VTOR yet");
    p.clear_breakpoints().unwrap();
    p.run().unwrap();
    let text = banner(&b);
    assert!(text.contains("base=0x08008000 vtor=0x08008000"), "{text}");
    let pc = p.halt().unwrap();
    assert!(image.segment_at(pc).is_some() && pc >= 0x0800_8000, "PC {pc:#x} inside the app");
    assert_eq!(p.vtor().unwrap(), 0x0800_8000);
    p.run().unwrap();
    drop(p);
    b.shutdown().unwrap();
}

#[test]
fn attach_to_a_running_board_and_snapshot() {
    let b = board("probe-layer-running");
    b.power_off().wait().unwrap();
    let f = hil_fixtures::get("app", 0x0800_0000).unwrap();
    b.load_image(f.elf.to_vec(), hil_virtual_board::ImageFormat::Elf).wait().unwrap();
    b.power_on().wait().unwrap();
    banner(&b);
    let mut p = open(&b, &ProbeOptions::default());
    let st = p.status().unwrap();
    assert!(matches!(st, RunState::Running | RunState::Sleeping), "{st:?}");
    let e = p.registers().unwrap_err();
    assert!(matches!(e, ProbeError::NotHalted { .. }), "{e}");

    let chip = hil_chips::Chip::by_name("STM32G071RB").unwrap();
    let diag = chip.diagnosis.as_ref().unwrap();
    let mut extra: Vec<(&str, u32)> = diag.registers.iter().map(|r| (r.name.as_str(), r.address)).collect();
    extra.push(("NOTHING", 0x3000_0000));
    let snap = p.snapshot(&extra).unwrap();
    let after = b.debug().state().wait().unwrap();
    assert!(matches!(after, CoreState::Running | CoreState::Sleeping), "run state restored: {after:?}");
    assert!(matches!(snap.run_state, RunState::Running | RunState::Sleeping));
    let board_snap = b.snapshot().wait().unwrap();
    let core = board_snap.core.unwrap();
    assert_eq!(snap.vtor, 0x0800_0000);
    assert_eq!(snap.vtor, core.vtor);
    assert_eq!((snap.core.control, snap.core.primask), (0, 0));
    assert_eq!(snap.core.msp, snap.core.sp, "thread mode on MSP");
    assert_eq!(snap.systick.csr & 0b11, 0b11, "SysTick enabled with its interrupt");
    assert_eq!((snap.systick.csr & 0b111, snap.systick.rvr), (core.systick_csr & 0b111, core.systick_rvr));
    assert!(snap.systick.cvr <= snap.systick.rvr);
    assert_eq!(snap.nvic.iser, core.nvic_iser);
    assert_eq!(snap.nvic.iabr, None, "ARMv6-M has no IABR");
    assert_eq!(snap.shcsr, Some(0));
    let value = |n: &str| snap.extra.iter().find(|v| v.name == n).and_then(|v| v.value);
    assert_eq!(value("SYSCFG_CFGR1"), Some(board_snap.remap_register));
    assert_eq!(value("RCC_CSR"), Some(board_snap.rcc_csr));
    assert_eq!(value("FLASH_SR"), Some(board_snap.flash.sr));
    assert!(value("FLASH_OPTR").is_some());
    let bad = snap.extra.iter().find(|v| v.name == "NOTHING").unwrap();
    assert!(bad.value.is_none() && bad.error.as_deref().unwrap().contains("0x30000000"), "{bad:?}");
    // A halted core stays halted through a snapshot.
    let pc = p.halt().unwrap();
    let snap = p.snapshot(&[]).unwrap();
    assert!(snap.run_state.is_halted());
    assert_eq!(snap.core.pc, pc);
    assert!(p.status().unwrap().is_halted());
    p.run().unwrap();
    drop(p);
    b.shutdown().unwrap();
}

#[test]
fn connect_under_reset_halts_at_the_reset_handler() {
    let b = board("probe-layer-under-reset");
    b.power_off().wait().unwrap();
    let f = hil_fixtures::get("app", 0x0800_0000).unwrap();
    b.load_image(f.elf.to_vec(), hil_virtual_board::ImageFormat::Elf).wait().unwrap();
    b.power_on().wait().unwrap();
    let image = Image::from_elf("app", f.elf).unwrap();
    let (sp, reset) = vectors(&image, 0x0800_0000);
    let opts = ProbeOptions { connect_under_reset: true, speed_khz: Some(1800), ..Default::default() };
    let mut p = open(&b, &opts);
    let regs = p.registers().unwrap();
    assert_eq!((regs.pc, regs.msp), (reset, sp));
    drop(p);
    // The next connection under reset catches the reset vector at the first attempt.
    let before = hil_virtual_probe::probe_stats(b.name()).unwrap().opens;
    let mut p = open(&b, &opts);
    assert_eq!(hil_virtual_probe::probe_stats(b.name()).unwrap().opens, before + 1);
    assert_eq!(p.registers().unwrap().pc, reset);
    p.run().unwrap();
    assert!(banner(&b).contains("hil-app"));
    drop(p);
    b.shutdown().unwrap();
}

#[test]
fn errors_name_the_operation_and_address() {
    let b = board("probe-layer-errors");
    let mut p = open(&b, &ProbeOptions::default());
    let e = p.read_memory(0x3000_0000, 8).unwrap_err();
    assert!(matches!(e, ProbeError::Memory { address: 0x3000_0000, .. }), "{e}");
    assert!(e.to_string().contains("read at 0x30000000 (8 bytes)"), "{e}");
    // Memory still works after the sticky error.
    p.write_u32(0x2000_1000, 0xCAFE_F00D).unwrap();
    assert_eq!(p.read_u32(0x2000_1000).unwrap(), 0xCAFE_F00D);
    p.write_memory(0x2000_1001, &[1, 2, 3]).unwrap();
    assert_eq!(p.read_memory(0x2000_1000, 4).unwrap(), vec![0x0D, 1, 2, 3]);
    // An image outside flash is refused by the loader, naming the range.
    let outside = FlashImage::new("outside", vec![0u8; 64], ImageFormat::Bin { base: 0x0900_0000 });
    let e = p.flash(&outside, true).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("0x9000000") || e.to_string().contains("0x09000000"), "{e}");
    // Another probe cannot open the same board while this one is open.
    let e = ProbeSession::open(&hil_virtual_probe::selector_for(b.name()), G071, &ProbeOptions::default()).unwrap_err();
    assert!(matches!(e, ProbeError::Open { .. }), "{e}");
    let e = ProbeSession::open(&hil_virtual_probe::selector_for("no-such-board"), G071, &ProbeOptions::default())
        .unwrap_err();
    assert!(format!("{e} {e:?}").contains("no-such-board"), "{e:?}");
    drop(p);
    b.shutdown().unwrap();
}

#[test]
fn attaching_freezes_the_watchdog_while_the_core_is_halted() {
    // The app refreshes the IWDG every millisecond from SysTick; a halted core refreshes nothing.
    const IWDG_KR: u32 = 0x4000_3000;
    let b = board("probe-layer-freeze");
    b.power_off().wait().unwrap();
    let f = hil_fixtures::get("app", 0x0800_0000).unwrap();
    b.load_image(f.elf.to_vec(), hil_virtual_board::ImageFormat::Elf).wait().unwrap();
    b.power_on().wait().unwrap();
    banner(&b);
    let watchdog_resets = || {
        let events = b.events(0, Duration::from_millis(1)).wait().unwrap();
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Reset { cause: ResetCauseName::IndependentWatchdog, .. }))
            .count()
    };
    let chip = hil_chips::Chip::by_name("STM32G071RB").unwrap();
    let freeze = chip.debug_freeze.as_ref().expect("G071 chip data names its freeze bits");
    let fz1 = &freeze.registers[0];
    let mut p =
        ProbeSession::open_chip(&hil_virtual_probe::selector_for(b.name()), chip, &ProbeOptions::default()).unwrap();
    assert_eq!(p.read_u32(fz1.address).unwrap() & 0x1800, 0x1800, "DBG_IWDG_STOP and DBG_WWDG_STOP set on attach");
    // Start the IWDG: /4, reload 0x400 = 128 ms at 32 kHz (RM0444 26.4).
    for (off, v) in [(0, 0xCCCC), (0, 0x5555), (4, 0), (8, 0x400), (0, 0xAAAA)] {
        p.write_u32(IWDG_KR + off, v).unwrap();
    }
    let pc = p.halt().unwrap();
    b.sleep(Duration::from_millis(400)).wait().unwrap(); // on the board's clock
    assert!(p.status().unwrap().is_halted());
    assert_eq!(p.register(CoreReg::Pc).unwrap(), pc);
    assert_eq!(watchdog_resets(), 0, "frozen: no watchdog reset during a 400 ms halt");
    p.run().unwrap();
    b.sleep(Duration::from_millis(200)).wait().unwrap();
    assert_eq!(watchdog_resets(), 0, "the app keeps the running watchdog fed");
    // The bits act while the core is halted too (RM0444 40.4.3: the counter stops "when the
    // core is halted"): set them during a halt, then clear them during the same halt.
    p.write_u32(fz1.address, 0).unwrap();
    p.halt().unwrap();
    p.write_u32(fz1.address, fz1.set).unwrap();
    b.sleep(Duration::from_millis(400)).wait().unwrap(); // on the board's clock
    assert_eq!(watchdog_resets(), 0, "frozen by bits set during the halt");
    p.write_u32(fz1.address, 0).unwrap();
    b.sleep(Duration::from_millis(400)).wait().unwrap(); // on the board's clock
    assert_eq!(watchdog_resets(), 1, "unfrozen: the IWDG reset the chip");
    drop(p);
    b.shutdown().unwrap();
}
