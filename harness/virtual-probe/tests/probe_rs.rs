//! probe-rs 0.32 against the virtual board through the virtual probe driver: opened by selector,
//! attach, halt, registers, memory, the ROM tables, reset catch, connect under reset, sticky
//! errors, and flashing with ST's flash algorithm executing on the emulated core.

use std::time::Duration;

use hil_cortex_m::Reg;
use hil_virtual_board::{Board, BoardConfig, CoreState, ImageFormat, Timing};
use hil_virtual_probe::{InResetBus, ProbeConfig, probe_selector, probe_stats, selector_for};
use probe_rs::architecture::arm::FullyQualifiedApAddress;
use probe_rs::architecture::arm::dp::DpAddress;
use probe_rs::architecture::arm::memory::{Component, PeripheralType};
use probe_rs::flashing::{BinOptions, DownloadOptions, ElfOptions, download_file_with_options};
use probe_rs::probe::list::Lister;
use probe_rs::{MemoryInterface, Permissions, RegisterId, Session};

const G071: &str = "STM32G071RBTx";
const T: Duration = Duration::from_millis(500);

fn board(name: &str, chip: &str) -> Board {
    let cfg = BoardConfig {
        name: name.into(),
        chip: chip.into(),
        timing: Timing::Fast,
        power_on: false,
        default_deadline: Duration::from_secs(30),
        ..BoardConfig::default()
    };
    Board::start(cfg).unwrap()
}

fn app_board(name: &str) -> Board {
    let b = board(name, "STM32G071RB");
    let f = hil_fixtures::get("app", 0x0800_0000).expect("app fixture");
    b.load_image(f.elf.to_vec(), ImageFormat::Elf).wait().unwrap();
    b.power_on().wait().unwrap();
    b
}

fn attach(b: &Board, target: &str) -> Session {
    hil_virtual_probe::register();
    let probe = Lister::new().open(selector_for(b.name()).parse::<probe_rs::probe::DebugProbeSelector>().unwrap());
    probe.unwrap().attach(target, Permissions::default()).unwrap()
}

fn vector(elf: &[u8], base: u32, index: usize) -> u32 {
    // The image's vector table is the first bytes of its first segment at `base`.
    let f = hil_fixtures::get("app", base).unwrap();
    assert_eq!(f.elf, elf);
    let obj = object_words(elf, base, 2);
    obj[index]
}

/// First words at `addr` in an ELF's loadable data (parsed by the board's own loader via a board).
fn object_words(elf: &[u8], addr: u32, n: usize) -> Vec<u32> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let b = board(&format!("elf-reader-{addr:x}-{k}"), "STM32G071RB");
    b.load_image(elf.to_vec(), ImageFormat::Elf).wait().unwrap();
    let bytes = b.peek(addr, 4 * n).wait().unwrap();
    b.shutdown().unwrap();
    bytes.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn attach_by_selector_halt_registers_memory_and_rom_tables() {
    let b = app_board("probe-rs-basic");
    let elf = hil_fixtures::get("app", 0x0800_0000).unwrap().elf;
    let (sp0, reset) = (vector(elf, 0x0800_0000, 0), vector(elf, 0x0800_0000, 1));
    let mut s = attach(&b, G071);
    {
        let mut core = s.core(0).unwrap();
        // Attached to a running core (the app sleeps in WFI between SysTicks): it stays running.
        let st = core.status().unwrap();
        assert!(matches!(st, probe_rs::CoreStatus::Running | probe_rs::CoreStatus::Sleeping), "{st:?}");
        let info = core.halt(T).unwrap();
        assert!((0x0800_0000..0x0802_0000).contains(&(info.pc as u32)), "PC {:#x} in the app", info.pc);
        assert!(matches!(b.debug().state().wait().unwrap(), CoreState::Halted(_)));
        // Core registers through DCRSR/DCRDR agree with the core itself.
        let pc: u32 = core.read_core_reg(RegisterId(15)).unwrap();
        let msp: u32 = core.read_core_reg(RegisterId(17)).unwrap();
        assert_eq!(pc, b.debug().reg(Reg::Pc).wait().unwrap());
        assert_eq!(msp, b.debug().reg(Reg::Msp).wait().unwrap());
        // Memory: flash reads back the image, RAM takes words and bytes (byte lanes).
        assert_eq!(core.read_word_32(0x0800_0000).unwrap(), sp0);
        assert_eq!(core.read_word_32(0x0800_0004).unwrap(), reset);
        core.write_word_32(0x2000_8000, 0x1122_3344).unwrap();
        core.write_8(0x2000_8001, &[0xAB]).unwrap();
        let mut bytes = [0u8; 4];
        core.read_8(0x2000_8000, &mut bytes).unwrap();
        assert_eq!(bytes, [0x44, 0xAB, 0x22, 0x11]);
        let big: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        core.write_8(0x2000_4000, &big).unwrap();
        let mut back = vec![0u8; big.len()];
        core.read_8(0x2000_4000, &mut back).unwrap();
        assert_eq!(back, big);
        // reset_and_halt: vector catch at the reset handler, MSP from the vector table.
        let info = core.reset_and_halt(T).unwrap();
        assert_eq!(info.pc as u32, reset & !1);
        assert_eq!(core.read_core_reg::<u32>(RegisterId(17)).unwrap(), sp0);
        core.run().unwrap();
    }
    // ROM tables: AP BASE -> ST system ROM table (designer ST, part = DEV_ID 0x460) -> the
    // Cortex-M0+ ROM table with SCS, DWT and BPU.
    let iface = s.get_arm_interface().unwrap();
    let ap = FullyQualifiedApAddress::v1_with_dp(DpAddress::Default, 0);
    let aps = iface.access_ports(DpAddress::Default).unwrap();
    assert_eq!(aps.len(), 1, "one AP: {aps:?}");
    let mut mem = iface.memory_interface(&ap).unwrap();
    let base = mem.base_address().unwrap();
    assert_eq!(base, 0xF000_0000);
    let top = Component::try_parse(&mut *mem, base).unwrap();
    let Component::Class1RomTable(id, table) = &top else { panic!("ROM table expected: {top:?}") };
    let jep = id.peripheral_id().jep106().unwrap();
    assert_eq!((jep.cc, jep.id), (0, 0x20), "STMicroelectronics");
    assert_eq!(id.peripheral_id().part(), 0x460);
    let entries: Vec<_> = table.entries().collect();
    assert_eq!(entries.len(), 1);
    let Component::Class1RomTable(_, core_table) = entries[0].component() else { panic!("core ROM table") };
    let is = |t: PeripheralType| core_table.entries().any(|e| e.component().id().peripheral_id().is_of_type(t));
    assert!(is(PeripheralType::Scs) && is(PeripheralType::Dwt) && is(PeripheralType::Bpu), "SCS, DWT, BPU");
    drop(mem);
    drop(s);
    // The traffic of the DP/AP model: power-up handshake, SELECT, CSW/TAR/DRW, line reset.
    let st = probe_stats(b.name()).unwrap();
    for r in ["DP.DPIDR", "DP.CTRL/STAT", "DP.SELECT", "DP.ABORT", "AP.IDR", "AP.CSW", "AP.TAR", "AP.DRW", "AP.BASE"] {
        assert!(st.dap.registers.get(r).copied().unwrap_or(0) > 0, "{r} used: {:?}", st.dap.registers);
    }
    assert!(st.dap.line_resets >= 1);
    assert_eq!(st.dap.sticky_errors, 0, "{:?}", st.dap.last_sticky);
    b.shutdown().unwrap();
}

#[test]
fn bus_faults_raise_stickyerr_with_the_address_and_are_cleared() {
    let b = app_board("probe-rs-sticky");
    let mut s = attach(&b, G071);
    let mut core = s.core(0).unwrap();
    core.halt(T).unwrap();
    let before = probe_stats(b.name()).unwrap().dap.sticky_errors;
    let e = core.read_word_32(0x3000_0000).unwrap_err();
    let st = probe_stats(b.name()).unwrap();
    assert_eq!(st.dap.sticky_errors, before + 1, "{e}");
    let fault = st.dap.last_sticky.unwrap();
    assert_eq!(fault.address, 0x3000_0000);
    assert!(!fault.write);
    assert!(fault.reason.contains("0x30000000"), "{fault:?}");
    // The driver cleared STICKYERR: the next access works.
    assert_eq!(core.read_word_32(0x0800_0000).unwrap() >> 24, 0x20);
    // System memory (the ROM) refuses writes with a bus error.
    let e = core.write_word_32(0x1FFF_0000, 0).unwrap_err();
    let fault = probe_stats(b.name()).unwrap().dap.last_sticky.unwrap();
    assert_eq!((fault.address, fault.write), (0x1FFF_0000, true), "{e}");
    drop(core);
    drop(s);
    b.shutdown().unwrap();
}

#[test]
fn selector_errors_name_the_board_and_one_probe_per_board() {
    hil_virtual_probe::register();
    let b = app_board("probe-rs-selector");
    let e = Lister::new().open(probe_selector("no-such-board")).unwrap_err();
    assert!(e.to_string().contains("no-such-board") || format!("{e:?}").contains("no-such-board"), "{e:?}");
    let first = Lister::new().open(probe_selector(b.name())).unwrap();
    let e = Lister::new().open(probe_selector(b.name())).unwrap_err();
    assert!(format!("{e:?}").contains("InUse"), "{e:?}");
    drop(first);
    let again = Lister::new().open(probe_selector(b.name()));
    assert!(again.is_ok(), "closed probes can be opened again");
    // A selector with another VID:PID is not ours.
    let listed = Lister::new().list_all();
    assert!(listed.iter().any(|p| p.serial_number.as_deref() == Some(b.name()) && p.vendor_id == 0x1209));
    drop(again);
    b.shutdown().unwrap();
}

/// probe-rs 0.32 enables C_DEBUGEN only after releasing NRST, and vector catch needs it (ARMv6-M
/// C1.6.5): after power-on the first attach under reset times out, the second catches the reset
/// vector - as real STM32G0 parts do (probe-rs issue #4113).
#[test]
fn attach_under_reset_as_on_real_g0_parts() {
    hil_virtual_probe::register();
    let b = app_board("probe-rs-under-reset");
    let elf = hil_fixtures::get("app", 0x0800_0000).unwrap().elf;
    let reset = vector(elf, 0x0800_0000, 1) & !1;
    let first = Lister::new().open(probe_selector(b.name())).unwrap().attach_under_reset(G071, Permissions::default());
    let Err(e) = first else { panic!("the first attach under reset after power-on times out") };
    assert!(e.to_string().contains("under reset"), "{e}");
    let st = b.debug().state().wait().unwrap();
    assert!(matches!(st, CoreState::Running | CoreState::Sleeping), "NRST released, the app runs: {st:?}");
    let mut s =
        Lister::new().open(probe_selector(b.name())).unwrap().attach_under_reset(G071, Permissions::default()).unwrap();
    let mut core = s.core(0).unwrap();
    assert!(core.status().unwrap().is_halted());
    assert_eq!(core.read_core_reg::<u32>(RegisterId(15)).unwrap(), reset);
    drop(core);
    drop(s);
    assert!(probe_stats(b.name()).unwrap().nrst_asserts >= 2);
    // With bus accesses refused under reset, ST's G0 sequence (RCC, DBGMCU) fails while NRST is low.
    b.shutdown().unwrap();
    let b = app_board("probe-rs-under-reset-fault");
    hil_virtual_probe::configure(b.name(), ProbeConfig { in_reset_bus: InResetBus::Fault, ..Default::default() });
    let Err(e) = Lister::new().open(probe_selector(b.name())).unwrap().attach_under_reset(G071, Permissions::default())
    else {
        panic!("refused under reset")
    };
    let fault = probe_stats(b.name()).unwrap().dap.last_sticky.expect("a sticky error");
    assert_eq!(fault.address, 0x4002_103C, "RCC_APBENR1 (DBGEN) under reset: {fault:?} / {e}");
    b.shutdown().unwrap();
}

fn flash_evidence(b: &Board, f: impl FnOnce()) -> (u64, hil_virtual_board::Counters) {
    let c0 = b.debug().counters().wait().unwrap();
    f();
    let c1 = b.debug().counters().wait().unwrap();
    let mut d = c1.accesses;
    let a = c0.accesses;
    d.flash_reg_reads_cpu -= a.flash_reg_reads_cpu;
    d.flash_reg_writes_cpu -= a.flash_reg_writes_cpu;
    d.flash_reg_reads_debug -= a.flash_reg_reads_debug;
    d.flash_reg_writes_debug -= a.flash_reg_writes_debug;
    d.flash_programs -= a.flash_programs;
    d.flash_page_erases -= a.flash_page_erases;
    (c1.instructions - c0.instructions, d)
}

/// probe-rs downloads the `fixture` ELF linked at 0x08000000, with verify, through the target's
/// own flash algorithm. It ran on the core: thousands of instructions, the FLASH registers written
/// by the CPU (KEYR unlock, CR PER/PG/STRT/LOCK) and SR polled at least `min_sr_reads` times,
/// never written by the debugger (no stand-in programs flash behind the model's back). The flash
/// then holds the ELF's first 64 words, which it returns.
fn download_fixture_checked(
    b: &Board,
    s: &mut Session,
    dir: &std::path::Path,
    fixture: &str,
    min_sr_reads: u64,
) -> Vec<u32> {
    let app = hil_fixtures::get(fixture, 0x0800_0000).unwrap_or_else(|| panic!("{fixture} fixture"));
    let elf_path = dir.join(format!("{fixture}.elf"));
    std::fs::write(&elf_path, app.elf).unwrap();
    let mut opts = DownloadOptions::default();
    opts.verify = true;
    let (instr, acc) = flash_evidence(b, || {
        download_file_with_options(s, &elf_path, probe_rs::flashing::ElfLoader(ElfOptions::default()), opts).unwrap()
    });
    eprintln!("{fixture} ELF download: {instr} instructions on the core, {acc:?}");
    assert!(instr > 10_000, "instructions {instr}");
    assert!(acc.flash_reg_writes_cpu > 10 && acc.flash_reg_reads_cpu > min_sr_reads, "{acc:?}");
    assert_eq!(acc.flash_reg_writes_debug, 0, "{acc:?}");
    assert!(acc.flash_programs > 0 && acc.flash_page_erases > 0, "{acc:?}");
    let words = object_words(app.elf, 0x0800_0000, 64);
    let flashed = b.peek(0x0800_0000, 256).wait().unwrap();
    let flashed: Vec<u32> = flashed.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(flashed, words, "flash holds the {fixture} ELF");
    words
}

/// A 5000-byte BIN at 0x08010000 with verify: `pages` pages erased, the bytes read back.
fn download_bin_checked(b: &Board, s: &mut Session, dir: &std::path::Path, pages: u64) {
    let bin: Vec<u8> = (0..5000u32).map(|i| (i ^ (i >> 8)) as u8).collect();
    let bin_path = dir.join("data.bin");
    std::fs::write(&bin_path, &bin).unwrap();
    let mut opts = DownloadOptions::default();
    opts.verify = true;
    let loader = probe_rs::flashing::BinLoader(BinOptions { base_address: Some(0x0801_0000), skip: 0 });
    let (instr, acc) = flash_evidence(b, || download_file_with_options(s, &bin_path, loader, opts).unwrap());
    assert!(instr > 1_000 && acc.flash_reg_writes_cpu > 0 && acc.flash_reg_writes_debug == 0, "{instr} {acc:?}");
    assert_eq!(acc.flash_page_erases, pages, "5000 bytes: {pages} pages");
    assert_eq!(b.peek(0x0801_0000, bin.len()).wait().unwrap(), bin);
}

#[test]
fn download_file_elf_and_bin_run_sts_algorithm_on_the_core() {
    let b = board("probe-rs-flash", "STM32G071RB");
    b.power_on().wait().unwrap();
    let mut s = attach(&b, G071);
    let dir = tempfile::tempdir().unwrap();
    // ST's algorithm polls SR while BSY: over a thousand reads for the app.
    download_fixture_checked(&b, &mut s, dir.path(), "app", 1000);
    // BIN at an offset page: three 2 KiB pages.
    download_bin_checked(&b, &mut s, dir.path(), 3);
    drop(s);
    b.shutdown().unwrap();
}

#[test]
fn g0b1_dual_bank_flash_across_the_bank_boundary() {
    let b = board("probe-rs-g0b1", "STM32G0B1RE");
    b.power_on().wait().unwrap();
    let mut s = attach(&b, "STM32G0B1RETx");
    let data = hil_virtual_probe::bench::test_image(8 * 1024, 77);
    let base = 0x0804_0000 - 4 * 1024;
    let mut loader = s.target().flash_loader();
    loader.add_data(base as u64, &data).unwrap();
    let mut opts = DownloadOptions::default();
    opts.verify = true;
    let (instr, acc) = flash_evidence(&b, || loader.commit(&mut s, opts).unwrap());
    assert!(instr > 10_000 && acc.flash_reg_writes_debug == 0, "{instr} {acc:?}");
    assert_eq!(acc.flash_page_erases, 4, "two pages in each bank");
    assert_eq!(b.peek(base, data.len()).wait().unwrap(), data);
    drop(s);
    b.shutdown().unwrap();
}

/// probe-rs's own STM32F1 flash algorithm (ST's code from the STM32F1 target description) runs on
/// the virtual Cortex-M3 against the F1 flash controller model (flash-f1: KEYR, CR PER/PG/STRT, AR,
/// half-word programming, BSY polling; PM0075), then the flashed app-f103 fixture boots and prints
/// its banner on USART1.
#[test]
fn f103_download_runs_sts_f1_algorithm_on_the_cortex_m3() {
    let b = board("probe-rs-f103", "STM32F103CB");
    b.power_on().wait().unwrap();
    let mut s = attach(&b, "STM32F103CBTx");
    let dir = tempfile::tempdir().unwrap();
    download_fixture_checked(&b, &mut s, dir.path(), "app-f103", 100);
    // BIN of 5000 bytes at 0x08010000: five 1 KiB pages erased (RM0008 3.3.3 Table 5).
    download_bin_checked(&b, &mut s, dir.path(), 5);
    drop(s);
    // The flashed application starts from a pin reset and prints on USART1.
    b.pulse_nrst().wait().unwrap();
    let u = b.uart("USART1").unwrap();
    let banner =
        String::from_utf8_lossy(&u.read_until(b" ]\r\n", Duration::from_secs(20)).wait().unwrap()).into_owned();
    assert!(banner.contains("hil-app 0.1.0 base=0x08000000"), "{banner}");
    b.shutdown().unwrap();
}

/// probe-rs's own STM32G4 flash algorithm (ST's `stm32g47x-8x_512` from the STM32G4 target
/// description, the default for STM32G474RETx) runs on the virtual Cortex-M4 against the G4 flash
/// controller model (flash-g4: KEYR, CR PER/PNB/BKER/PG/STRT, double-word programming, BSY polling;
/// RM0440 5.3), never with the debugger writing FLASH registers: the app-g474 ELF with verify,
/// then 8 KiB across the bank boundary (0x08040000, DBANK = 1: two banks of 128 x 2 KiB pages,
/// RM0440 5.3.1 Table 7) read back through the debug port; the flashed application then boots and
/// prints its banner on USART2.
#[test]
fn g474_download_runs_sts_g4_algorithm_across_the_bank_boundary() {
    let b = board("probe-rs-g474", "STM32G474RE");
    b.power_on().wait().unwrap();
    let mut s = attach(&b, "STM32G474RETx");
    let dir = tempfile::tempdir().unwrap();
    let words = download_fixture_checked(&b, &mut s, dir.path(), "app-g474", 100);

    // 8 KiB from 4 KiB below the bank boundary: two 2 KiB pages at the end of bank 1 and two at
    // the start of bank 2, each erased through BKER + PNB.
    let data = hil_virtual_probe::bench::test_image(8 * 1024, 474);
    let base = 0x0804_0000 - 4 * 1024;
    let mut loader = s.target().flash_loader();
    loader.add_data(base as u64, &data).unwrap();
    let mut opts = DownloadOptions::default();
    opts.verify = true;
    let (instr, acc) = flash_evidence(&b, || loader.commit(&mut s, opts).unwrap());
    assert!(instr > 1_000 && acc.flash_reg_writes_cpu > 0 && acc.flash_reg_writes_debug == 0, "{instr} {acc:?}");
    assert_eq!(acc.flash_page_erases, 4, "two pages in each bank");
    assert_eq!(acc.flash_programs, 8 * 1024 / 8, "double words");
    // Read back through probe-rs (the debug port), not only the board's backdoor.
    let mut back = vec![0u8; data.len()];
    s.core(0).unwrap().read_8(base as u64, &mut back).unwrap();
    assert_eq!(back, data, "read back over the debug port");
    assert_eq!(b.peek(base, data.len()).wait().unwrap(), data);
    // The application's flash is untouched by the second download.
    let flashed = b.peek(0x0800_0000, 256).wait().unwrap();
    let flashed: Vec<u32> = flashed.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(flashed, words, "the application is still there");
    drop(s);
    // The flashed application starts from a pin reset and prints on USART2.
    b.pulse_nrst().wait().unwrap();
    let u = b.uart("USART2").unwrap();
    let banner =
        String::from_utf8_lossy(&u.read_until(b" ]\r\n", Duration::from_secs(20)).wait().unwrap()).into_owned();
    assert!(banner.contains("hil-app 0.1.0 base=0x08000000"), "{banner}");
    b.shutdown().unwrap();
}
