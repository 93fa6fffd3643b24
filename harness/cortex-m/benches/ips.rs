//! Instructions per second of the core (`cargo bench -p hil-cortex-m`): a busy loop, a realistic
//! mix (the `mix` fixture: CRC, memcpy, sorting, division, calls, interrupts from SysTick), and
//! armagnac on the same busy loop and mix for comparison.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Board, FLASH};
use hil_cortex_m::{CpuConfig, Stop};

/// `movs r0, #0; loop: subs r0, #1; bne loop` - 2^32 iterations, never ends in the bench.
const BUSY: [u16; 3] = [0x2000, 0x3801, 0xD1FD];

/// The ARMv7-M loop: `mov.w r0, #0; loop: add.w r1, r1, r0, lsl #2; subs.w r0, r0, #1;
/// it ne; addne r2, #1; bne.w loop` - Thumb-2 data processing, an IT block and a wide branch.
const BUSY_V7: [u16; 10] = [0xF04F, 0x0000, 0xEB01, 0x0180, 0xF1B0, 0x0001, 0xBF18, 0x3201, 0xF47F, 0xAFF8];

/// On-CPU time of this thread (the machine is shared: wall time also counts waiting for a core).
fn thread_cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(s.split_whitespace().next()?.parse().ok()?))
}

/// Best of 5 runs of at least 0.5 s each, after a warm-up. Returns instructions per on-CPU
/// second (per wall-clock second where the OS does not report thread CPU time).
fn measure(name: &str, mut f: impl FnMut() -> u64) -> f64 {
    f();
    let (mut best_wall, mut best_cpu) = (0.0f64, 0.0f64);
    for _ in 0..5 {
        let (start, cpu0) = (Instant::now(), thread_cpu_time());
        let mut n = 0;
        while start.elapsed() < Duration::from_millis(500) {
            n += f();
        }
        let wall = start.elapsed().as_secs_f64();
        best_wall = best_wall.max(n as f64 / wall);
        if let (Some(a), Some(b)) = (cpu0, thread_cpu_time()) {
            best_cpu = best_cpu.max(n as f64 / (b - a).as_secs_f64().max(1e-9));
        }
    }
    let best = if best_cpu > 0.0 { best_cpu } else { best_wall };
    println!("{name:<44} {:>7.1} M instr/s on-CPU   {:>7.1} M instr/s wall-clock", best_cpu / 1e6, best_wall / 1e6);
    best
}

fn ours_busy() -> f64 {
    ours_loop("hil-cortex-m busy loop", CpuConfig::cortex_m0plus(32), &BUSY)
}

fn ours_loop(name: &str, cfg: CpuConfig, code: &[u16]) -> f64 {
    let mut b = Board::with_config(cfg);
    b.load_program(code, None);
    b.reset();
    measure(name, || {
        let before = b.cpu.instructions();
        let until = b.cpu.cycles() + 20_000_000;
        assert_eq!(b.cpu.run(&mut b.sys, until), Stop::Budget);
        b.cpu.instructions() - before
    })
}

fn armagnac_busy() -> f64 {
    armagnac_loop("armagnac 0.3 (LUT decoder) busy loop", false, &BUSY)
}

fn armagnac_loop(name: &str, v7: bool, code: &[u16]) -> f64 {
    use armagnac::core::{ArmVersion, Config, Emulator, Processor, RunOptions};
    use armagnac::decoder::Lut16AndGrouped32InstructionDecoder;
    let (config, version) = if v7 { (Config::v7m(), ArmVersion::V7M) } else { (Config::v6m(), ArmVersion::V6M) };
    let mut p = Processor::new(config);
    p.instruction_decoder = Box::new(Lut16AndGrouped32InstructionDecoder::new(version));
    let code: Vec<u8> = code.iter().flat_map(|h| h.to_le_bytes()).collect();
    p.map(FLASH, &code).unwrap();
    p.map_ram(0x2000_0000, 0x1000).unwrap();
    p.set_pc(FLASH);
    measure(name, || {
        p.run(RunOptions::new().gas(2_000_000)).unwrap();
        2_000_000
    })
}

/// The `core-mix` fixture from reset to its exit, again and again.
fn ours_mix() -> f64 {
    ours_mix_of("hil-cortex-m mix (core-mix fixture)", "core-mix", CpuConfig::cortex_m0plus(32))
}

fn ours_mix_of(name: &str, fixture: &str, cfg: CpuConfig) -> f64 {
    let fixture = hil_fixtures::get(fixture, FLASH).expect("core-mix fixture");
    let mut b = Board::with_config(cfg);
    b.load_elf(fixture.elf);
    measure(name, || {
        b.dev_mut().exit = None;
        b.dev_mut().log.clear();
        b.reset();
        let before = b.cpu.instructions();
        // Short slices so the count stops within 1000 cycles of the program's exit.
        while b.dev().exit.is_none() {
            let until = b.cpu.cycles() + 1000;
            assert_eq!(b.cpu.run(&mut b.sys, until), Stop::Budget);
        }
        b.cpu.instructions() - before
    })
}

fn main() {
    let ours = ours_busy();
    let theirs = armagnac_busy();
    let mix = ours_mix();
    println!("ARMv6-M busy loop: {:.1}x armagnac; mix: {:.1} M instr/s", ours / theirs, mix / 1e6);
    let ours7 = ours_loop("hil-cortex-m v7-M loop (Thumb-2, IT)", CpuConfig::cortex_m3(32), &BUSY_V7);
    let theirs7 = armagnac_loop("armagnac 0.3 (LUT decoder) v7-M loop", true, &BUSY_V7);
    let mix7 = ours_mix_of("hil-cortex-m mix (core-mix-v7m, Cortex-M3)", "core-mix-v7m", CpuConfig::cortex_m3(32));
    let mix7em = ours_mix_of("hil-cortex-m mix (core-mix-v7em, Cortex-M4)", "core-mix-v7em", CpuConfig::cortex_m4(32));
    println!(
        "ARMv7-M loop: {:.1}x armagnac; v7-M mix: {:.1} M instr/s; v7E-M mix: {:.1} M instr/s",
        ours7 / theirs7,
        mix7 / 1e6,
        mix7em / 1e6
    );
}
