//! PendSV at the lowest priority, set from an interrupt handler: it runs when the handler returns,
//! before Thread mode resumes (tail-chaining); set from Thread mode with PRIMASK, it waits for
//! CPSIE.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use core_tests::{check, exit, log, scs};
use cortex_m_rt::{entry, exception};

static PENDSV_RUNS: AtomicU32 = AtomicU32::new(0);

#[entry]
fn main() -> ! {
    scs::write(scs::SHPR3, (scs::read(scs::SHPR3) & 0xFF00_FFFF) | 0xC0 << 16);
    scs::set_priority(0, 0x80);
    scs::enable(0);
    log(1);
    scs::pend(0);
    log(3);
    cortex_m::interrupt::disable();
    scs::write(scs::ICSR, scs::PENDSVSET);
    check!(scs::read(scs::ICSR) & scs::PENDSVSET != 0);
    log(4);
    // SAFETY: no critical section is open.
    unsafe { cortex_m::interrupt::enable() };
    check!(PENDSV_RUNS.load(Ordering::Relaxed) == 2);
    log(6);
    exit(0)
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn != 0 {
        exit(0xBAD1_0000 | irqn as u16 as u32);
    }
    log(0x10);
    scs::write(scs::ICSR, scs::PENDSVSET);
    // Lower priority than this handler: pending, not taken.
    check!(scs::read(scs::ICSR) & scs::PENDSVSET != 0);
    check!(PENDSV_RUNS.load(Ordering::Relaxed) == 0);
    log(0x11);
}

#[exception]
fn PendSV() {
    let n = PENDSV_RUNS.load(Ordering::Relaxed);
    PENDSV_RUNS.store(n + 1, Ordering::Relaxed);
    log(0x20 + n);
}
