//! Real programs (fixtures-firmware/core-tests, built for thumbv6m-none-eabi with cortex-m-rt) on
//! the core and a small test board. Each program reports through the test device; the checks here
//! are the order of its log and its exit code (0 = all in-program checks passed).

mod common;

use common::{Board, FLASH};
use hil_cortex_m::{CpuConfig, ResetCause, Stop};

fn boot(name: &str) -> Board {
    boot_on(name, CpuConfig::cortex_m0plus(32))
}

fn boot_on(name: &str, cfg: CpuConfig) -> Board {
    let fixture = hil_fixtures::get(name, FLASH).unwrap_or_else(|| panic!("fixture {name} is built"));
    let mut b = Board::with_config(cfg);
    b.load_elf(fixture.elf);
    b.reset();
    b
}

/// The core a fixture was built for: `-v7m` names run on a Cortex-M3, `-v7em` on a Cortex-M4.
fn core_for(name: &str) -> CpuConfig {
    if name == "core-nesting-v7m" {
        // The program checks that only two priority bits are implemented (as on the M0+).
        CpuConfig { priority_bits: 2, ..CpuConfig::cortex_m3(32) }
    } else if name.ends_with("-v7em") {
        CpuConfig::cortex_m4(32)
    } else if name.ends_with("-v7m") || name == "core-v7sys" {
        CpuConfig::cortex_m3(32)
    } else {
        CpuConfig::cortex_m0plus(32)
    }
}

fn run(name: &str) -> (Board, Vec<Stop>) {
    let mut b = boot_on(name, core_for(name));
    let (exit, stops) = b.run_to_exit(50_000_000);
    assert_eq!(
        exit,
        Some(0),
        "{name}: exit code (0xBAD0xxxx = failed check at that line); log {:x?}; stops {stops:?}; last fault {:?}",
        b.dev().log,
        b.cpu.last_fault().map(|f| f.to_string())
    );
    (b, stops)
}

#[test]
fn exception_nesting_and_priorities() {
    nesting("core-nesting");
    nesting("core-nesting-v7m");
}

fn nesting(name: &str) {
    let (b, stops) = run(name);
    assert!(stops.is_empty(), "{stops:?}");
    #[rustfmt::skip]
    let expected = [
        0x01,
        0x10, 0x20, 0x2F, 0x11, 0x1F, // IRQ2 preempts IRQ0; IRQ1 waits for IRQ2, then preempts IRQ0
        0x02,
        0x30, 0x3F, 0x40,             // equal priority: IRQ4 after IRQ3 returns
        0x03, 0x04, 0x50, 0x05,       // pending while disabled, taken when enabled
        0x06, 0x11, 0x07,             // pending while PRIMASK set, taken at CPSIE
        0x60, 0x08,                   // device level interrupt
        0x60, 0x09,                   // device timer event wakes WFI
    ];
    assert_eq!(b.dev().log, expected);
    // The timer was a scheduler event 10 us of virtual time after it was armed: the core slept.
    assert_eq!(b.dev().fired_at.len(), 1);
}

#[test]
fn systick_pends_while_masked_and_wakes_wfi() {
    systick_masked("core-systick-masked");
    systick_masked("core-systick-masked-v7m");
}

fn systick_masked(name: &str) {
    let (b, _) = run(name);
    assert_eq!(b.dev().log, [1, 0x101, 2, 0x102, 0x103, 0x104, 0x105, 0x106, 3]);
    // Six periods of 1000 cycles at least passed, mostly asleep.
    assert!(b.cpu.cycles() >= 6000, "{}", b.cpu.cycles());
    assert!(b.cpu.instructions() < b.cpu.cycles(), "WFI slept instead of spinning");
}

#[test]
fn svc_passes_arguments_and_escalates_with_primask() {
    svc("core-svc");
    svc("core-svc-v7m");
}

fn svc(name: &str) {
    let (b, _) = run(name);
    // 35 + 7, 100 + 9, then SVC #3 with PRIMASK set: HardFault, stacked PC after the SVC (0xDF03).
    assert_eq!(b.dev().log, [42, 109, 0xE0, 0xF0, 0xDF03]);
    let f = b.cpu.last_fault().expect("the escalation is recorded");
    assert_eq!(f.kind, hil_cortex_m::FaultKind::SvcEscalated);
}

#[test]
fn pendsv_tail_chains_after_the_interrupt() {
    for name in ["core-pendsv-tail", "core-pendsv-tail-v7m"] {
        let (b, _) = run(name);
        assert_eq!(b.dev().log, [1, 0x10, 0x11, 0x20, 3, 4, 0x21, 6], "{name}");
    }
}

#[test]
fn thread_mode_on_psp() {
    for name in ["core-psp", "core-psp-v7m"] {
        let (b, _) = run(name);
        assert_eq!(b.dev().log, [1, 2, 3], "{name}");
    }
}

#[test]
fn sysresetreq_resets_through_the_board_and_ram_survives() {
    for name in ["core-sysreset", "core-sysreset-v7m"] {
        let (b, stops) = run(name);
        assert_eq!(stops, [Stop::ResetRequested(ResetCause::Software)], "{name}");
        assert_eq!(b.dev().log, [1, 2, FLASH], "{name}");
    }
}

/// ARMv7-M system level from a real thumbv7m (and thumbv7em) program: DWT CYCCNT, DIV_0_TRP and
/// UNALIGN_TRP UsageFaults resumed past the instruction, BASEPRI masking, PRIGROUP preemption, a
/// BusFault with BFAR, then escalation to HardFault with HFSR.FORCED (the program's exit).
#[test]
fn v7m_system_level_program() {
    for name in ["core-v7sys", "core-v7sys-v7em"] {
        let (b, stops) = run(name);
        assert!(stops.is_empty(), "{name}: {stops:?}");
        #[rustfmt::skip]
        let expected = [
            1,                          // DWT cycle count plausible
            0xF000_0000 | 1 << 25, 2,   // DIVBYZERO
            0xF000_0000 | 1 << 24, 3,   // UNALIGNED
            4,                          // BASEPRI masked IRQ0 at 0x80, not at 0xC0
            0x12_22_11,                 // PRIGROUP 5: IRQ1 waits for IRQ2 (same group)
            0x12_11_22,                 // PRIGROUP 0: IRQ1 preempts IRQ2
            0xF000_0000 | 1 << 15 | 1 << 9, 0x6000_0000, 5, // BusFault: PRECISERR, BFARVALID, BFAR
            1 << 30, 1 << 15 | 1 << 9,  // HardFault: HFSR.FORCED, CFSR
        ];
        assert_eq!(b.dev().log, expected, "{name}");
    }
}

/// The mix program's checksum, computed here the same way.
fn mix_checksum(mut seed: u32, rounds: u32) -> u32 {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut acc = 0u32;
    let mut buf = [0u8; 256];
    for round in 0..rounds {
        for b in buf.iter_mut() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (seed >> 16) as u8;
        }
        acc ^= crc32(&buf);
        let mut arr: Vec<u32> = buf.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        arr.sort();
        acc = acc.wrapping_add(arr[0] ^ arr[63]);
        acc = acc.wrapping_add((seed / (round + 3)) % 1000);
    }
    acc
}

#[test]
fn mix_program_computes_the_host_checksum() {
    mix("core-mix");
    mix("core-mix-v7m");
    mix("core-mix-v7em");
}

fn mix(name: &str) {
    let mut b = boot_on(name, core_for(name));
    let (exit, stops) = b.run_to_exit(200_000_000);
    assert!(stops.is_empty(), "{stops:?} {:?}", b.cpu.last_fault());
    assert_eq!(exit, Some(mix_checksum(1, 20)));
    // SysTick fired every 10000 cycles while it ran.
    let ticks = b.dev().log[0] as u64;
    let cycles = b.exit_cycle().unwrap();
    assert!(ticks > 10 && ticks.abs_diff(cycles / 10_000) <= 1, "{ticks} ticks in {cycles} cycles");
}

#[test]
fn smoke_fixture_ends_on_its_breakpoint() {
    // Without a debugger BKPT escalates to HardFault (ARMv6-M C1.4); with C_DEBUGEN it halts.
    let mut b = boot("smoke");
    b.write32(0xE000_EDF0, 0xA05F_0001);
    let stop = b.cpu.run(&mut b.sys, 1_000_000);
    assert_eq!(stop, Stop::Halted(hil_cortex_m::HaltReason::Breakpoint));
    let pc = b.cpu.reg(hil_cortex_m::Reg::Pc);
    let insn = b.cpu.debug_read(&mut b.sys, pc, hil_cortex_m::Size::Half).unwrap();
    assert_eq!(insn & 0xFF00, 0xBE00, "halted on the BKPT at {pc:#x}");
}
