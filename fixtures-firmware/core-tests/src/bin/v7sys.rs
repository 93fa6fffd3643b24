//! ARMv7-M system level (thumbv7m/thumbv7em only): DWT cycle counting, divide-by-zero and
//! unaligned traps through UsageFault, BASEPRI masking, PRIGROUP preemption, BusFault with BFAR,
//! and finally a BusFault with BUSFAULTENA clear escalating to HardFault (HFSR.FORCED), which
//! ends the program. Log: see harness/cortex-m/tests/programs.rs.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::hint::black_box;
use core::sync::atomic::{AtomicU32, Ordering};
use core_tests::{check, exit, log, scs};
use cortex_m_rt::{ExceptionFrame, entry, exception};

const DEMCR: usize = 0xE000_EDFC;
const DWT_CTRL: usize = 0xE000_1000;
const DWT_CYCCNT: usize = 0xE000_1004;
const CCR: usize = 0xE000_ED14;
const SHCSR: usize = 0xE000_ED24;
const CFSR: usize = 0xE000_ED28;
const HFSR: usize = 0xE000_ED2C;
const BFAR: usize = 0xE000_ED38;
const AIRCR: usize = 0xE000_ED0C;

static IRQ_LOG: AtomicU32 = AtomicU32::new(0);
static FAULTS: AtomicU32 = AtomicU32::new(0);

// UsageFault and BusFault: hand the stacked frame to Rust (thread mode runs on MSP here), which
// records CFSR and resumes after the faulting instruction.
global_asm!(
    ".section .text.UsageFault,\"ax\",%progbits",
    ".global UsageFault",
    ".type UsageFault,%function",
    ".thumb_func",
    "UsageFault:",
    "mrs r0, msp",
    "ldr r1, =fault_rust",
    "bx r1",
    ".section .text.BusFault,\"ax\",%progbits",
    ".global BusFault",
    ".type BusFault,%function",
    ".thumb_func",
    "BusFault:",
    "mrs r0, msp",
    "ldr r1, =fault_rust",
    "bx r1",
);

#[unsafe(no_mangle)]
extern "C" fn fault_rust(frame: *mut u32) {
    let cfsr = scs::read(CFSR);
    log(0xF000_0000 | cfsr);
    if cfsr & (1 << 15) != 0 {
        log(scs::read(BFAR));
    }
    scs::write(CFSR, cfsr);
    FAULTS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the core stacked 8 words at `frame`; skip the faulting 16- or 32-bit instruction.
    unsafe {
        let pc = *frame.add(6);
        let hw = *(pc as *const u16);
        *frame.add(6) = pc + if hw >> 11 >= 0b11101 { 4 } else { 2 };
    }
}

fn udiv(a: u32, b: u32) -> u32 {
    let q: u32;
    // SAFETY: plain arithmetic; with DIV_0_TRP the UsageFault handler skips it (q keeps a).
    unsafe { asm!("mov {q}, {a}", "udiv {q}, {a}, {b}", q = out(reg) q, a = in(reg) a, b = in(reg) b) };
    q
}

fn ldr_at(addr: u32) -> u32 {
    let v: u32;
    // SAFETY: `addr` points into this program's RAM (unaligned on purpose) or an unmapped
    // address whose fault the handler skips (v keeps the marker).
    unsafe { asm!("movs {v}, #0x5A", "ldr {v}, [{a}]", v = out(reg) v, a = in(reg) addr) };
    v
}

static mut BYTES: [u8; 16] = [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0, 0, 0, 0, 0, 0, 0, 0];

#[entry]
fn main() -> ! {
    // DWT cycle counter (C1.8.6): enabled by DEMCR.TRCENA and DWT_CTRL.CYCCNTENA.
    scs::write(DEMCR, 1 << 24);
    scs::write(DWT_CYCCNT, 0);
    scs::write(DWT_CTRL, 1);
    let t0 = scs::read(DWT_CYCCNT);
    for _ in 0..black_box(100) {
        cortex_m::asm::nop();
    }
    let dt = scs::read(DWT_CYCCNT).wrapping_sub(t0);
    check!(dt >= 100 && dt < 2000);
    log(1);

    // Divide by zero: 0 without the trap; DIVBYZERO UsageFault with CCR.DIV_0_TRP (B3.2.8).
    check!(udiv(black_box(7), black_box(0)) == 0);
    scs::write(SHCSR, 1 << 18 | 1 << 17);
    scs::write(CCR, scs::read(CCR) | 1 << 4);
    check!(udiv(black_box(7), black_box(0)) == 7);
    check!(FAULTS.load(Ordering::Relaxed) == 1);
    log(2);

    // Unaligned LDR: allowed (A3.2.1), then UNALIGNED with CCR.UNALIGN_TRP.
    let base = core::ptr::addr_of!(BYTES) as u32;
    check!(ldr_at(base + 1) == 0x1413_1211);
    scs::write(CCR, scs::read(CCR) | 1 << 3);
    check!(ldr_at(base + 1) == 0x5A);
    check!(FAULTS.load(Ordering::Relaxed) == 2);
    log(3);

    // BASEPRI (B1.4.3): priority 0x80 is masked by BASEPRI 0x80, not by 0xC0.
    scs::set_priority(0, 0x80);
    scs::enable(0);
    // SAFETY: masking only.
    unsafe { cortex_m::register::basepri::write(0x80) };
    scs::pend(0);
    cortex_m::asm::isb();
    check!(IRQ_LOG.load(Ordering::Relaxed) == 0);
    // SAFETY: as above.
    unsafe { cortex_m::register::basepri::write(0xC0) };
    cortex_m::asm::isb();
    check!(IRQ_LOG.load(Ordering::Relaxed) == 0x10);
    // SAFETY: as above.
    unsafe { cortex_m::register::basepri::write(0) };
    log(4);

    // PRIGROUP (B1.5.4): with group = bits[7:6] priorities 0x40 and 0x60 share a group, so IRQ1
    // (0x40) pended from IRQ2's handler (0x60) waits; with PRIGROUP 0 it preempts.
    scs::set_priority(1, 0x40);
    scs::set_priority(2, 0x60);
    scs::enable(1);
    scs::enable(2);
    for prigroup in [5u32, 0] {
        IRQ_LOG.store(0, Ordering::Relaxed);
        scs::write(AIRCR, 0x05FA_0000 | prigroup << 8);
        scs::pend(2);
        cortex_m::asm::isb();
        log(IRQ_LOG.load(Ordering::Relaxed));
    }

    // BusFault with BFAR (B3.2.18), then with BUSFAULTENA clear: HardFault, HFSR.FORCED.
    check!(ldr_at(0x6000_0000) == 0x5A);
    check!(FAULTS.load(Ordering::Relaxed) == 3);
    scs::write(SHCSR, 1 << 18);
    log(5);
    ldr_at(0x6000_0004);
    exit(0xBAD1_0000)
}

#[unsafe(no_mangle)]
extern "C" fn irq_log(n: u32) {
    let v = IRQ_LOG.load(Ordering::Relaxed);
    IRQ_LOG.store(v << 8 | n, Ordering::Relaxed);
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    match irqn {
        0 => irq_log(0x10),
        1 => irq_log(0x11),
        2 => {
            irq_log(0x12);
            scs::pend(1);
            cortex_m::asm::isb();
            irq_log(0x22);
        }
        _ => exit(0xBAD2_0000 | irqn as u16 as u32),
    }
}

#[exception]
unsafe fn HardFault(_ef: &ExceptionFrame) -> ! {
    let (hfsr, cfsr) = (scs::read(HFSR), scs::read(CFSR));
    log(hfsr);
    log(cfsr);
    check!(hfsr == 1 << 30 && cfsr == (1 << 9 | 1 << 15));
    exit(0)
}
