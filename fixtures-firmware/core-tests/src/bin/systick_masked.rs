//! SysTick while masked: the tick pends with PRIMASK set (ICSR.PENDSTSET), WFI still wakes for it,
//! the handler runs at CPSIE; then ticks every 1000 cycles wake WFI.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use core_tests::{check, exit, log, scs};
use cortex_m_rt::{entry, exception};

static TICKS: AtomicU32 = AtomicU32::new(0);

#[entry]
fn main() -> ! {
    cortex_m::interrupt::disable();
    scs::write(scs::SYST_RVR, 999);
    scs::write(scs::SYST_CVR, 0);
    // ENABLE | TICKINT | CLKSOURCE (processor clock).
    scs::write(scs::SYST_CSR, 0b111);
    while scs::read(scs::SYST_CSR) & (1 << 16) == 0 {}
    check!(scs::read(scs::ICSR) & scs::PENDSTSET != 0);
    check!(TICKS.load(Ordering::Relaxed) == 0);
    log(1);
    // Pending and would preempt if PRIMASK were clear: WFI does not sleep (B1.5.19).
    cortex_m::asm::wfi();
    check!(TICKS.load(Ordering::Relaxed) == 0);
    // SAFETY: no critical section is open.
    unsafe { cortex_m::interrupt::enable() };
    check!(TICKS.load(Ordering::Relaxed) == 1);
    log(2);
    while TICKS.load(Ordering::Relaxed) < 6 {
        cortex_m::asm::wfi();
    }
    log(3);
    let cvr = scs::read(scs::SYST_CVR);
    check!(cvr <= 999);
    scs::write(scs::SYST_CSR, 0);
    exit(0)
}

#[exception]
fn SysTick() {
    let n = TICKS.load(Ordering::Relaxed) + 1;
    TICKS.store(n, Ordering::Relaxed);
    log(0x100 + n);
}
