//! Instructions per second of the core (`cargo bench -p hil-cortex-m`): a busy loop, a realistic
//! mix (the `mix` fixture: CRC, memcpy, sorting, division, calls, interrupts from SysTick), and
//! armagnac on the same busy loop and mix for comparison.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Board, FLASH};
use hil_cortex_m::Stop;

/// `movs r0, #0; loop: subs r0, #1; bne loop` - 2^32 iterations, never ends in the bench.
const BUSY: [u16; 3] = [0x2000, 0x3801, 0xD1FD];

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
    let mut b = Board::new();
    b.load_program(&BUSY, None);
    b.reset();
    measure("hil-cortex-m busy loop", || {
        let before = b.cpu.instructions();
        let until = b.cpu.cycles() + 20_000_000;
        assert_eq!(b.cpu.run(&mut b.sys, until), Stop::Budget);
        b.cpu.instructions() - before
    })
}

fn armagnac_busy() -> f64 {
    use armagnac::core::{ArmVersion, Config, Emulator, Processor, RunOptions};
    use armagnac::decoder::Lut16AndGrouped32InstructionDecoder;
    let mut p = Processor::new(Config::v6m());
    p.instruction_decoder = Box::new(Lut16AndGrouped32InstructionDecoder::new(ArmVersion::V6M));
    let code: Vec<u8> = BUSY.iter().flat_map(|h| h.to_le_bytes()).collect();
    p.map(FLASH, &code).unwrap();
    p.map_ram(0x2000_0000, 0x1000).unwrap();
    p.set_pc(FLASH);
    measure("armagnac 0.3 (LUT decoder) busy loop", || {
        p.run(RunOptions::new().gas(2_000_000)).unwrap();
        2_000_000
    })
}

/// The `core-mix` fixture from reset to its exit, again and again.
fn ours_mix() -> f64 {
    let fixture = hil_fixtures::get("core-mix", FLASH).expect("core-mix fixture");
    let mut b = Board::new();
    b.load_elf(fixture.elf);
    measure("hil-cortex-m mix (core-mix fixture)", || {
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
    println!("busy loop: {:.1}x armagnac; mix: {:.1} M instr/s", ours / theirs, mix / 1e6);
}
