//! Exception nesting and priorities: preemption by a higher priority, no preemption at equal
//! priority (tail-chaining instead), pending while disabled, pending while PRIMASK is set, a level
//! interrupt from a device, and a device timer waking WFI. The host test checks the log order.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use core_tests::{check, exit, irq_clear, irq_set, log, scs, timer};
use cortex_m_rt::{entry, exception};

static DEVICE_IRQ_RUNS: AtomicU32 = AtomicU32::new(0);

#[entry]
fn main() -> ! {
    // Two implemented priority bits: 0x00, 0x40, 0x80, 0xC0.
    scs::set_priority(0, 0xC0);
    scs::set_priority(1, 0x80);
    scs::set_priority(2, 0x40);
    scs::set_priority(3, 0x40);
    scs::set_priority(4, 0x40);
    scs::set_priority(5, 0x00);
    scs::set_priority(6, 0x80);
    // Unimplemented low priority bits read as zero.
    scs::set_priority(7, 0xFF);
    check!(scs::read(scs::IPR + 4) >> 24 == 0xC0);
    for n in 0..=4 {
        scs::enable(n);
    }
    log(0x01);
    // IRQ0 pends IRQ2, which preempts it; IRQ2 pends IRQ1, which waits for IRQ2 to return and
    // then preempts IRQ0.
    scs::pend(0);
    log(0x02);
    // IRQ3 pends IRQ4 at the same priority: no preemption, IRQ4 runs when IRQ3 returns.
    scs::pend(3);
    log(0x03);
    // Pending while disabled, taken once enabled.
    scs::pend(5);
    check!(scs::read(scs::ISPR) & (1 << 5) != 0);
    log(0x04);
    scs::enable(5);
    log(0x05);
    // Pending while PRIMASK is set, taken at CPSIE.
    cortex_m::interrupt::disable();
    scs::pend(1);
    log(0x06);
    // SAFETY: no critical section is open.
    unsafe { cortex_m::interrupt::enable() };
    log(0x07);
    // A level interrupt from the device; the handler clears its source.
    scs::enable(6);
    irq_set(6);
    log(0x08);
    check!(DEVICE_IRQ_RUNS.load(Ordering::Relaxed) == 1);
    // A device timer (a scheduler event 10 us later) wakes WFI.
    timer(10_000, 6);
    while DEVICE_IRQ_RUNS.load(Ordering::Relaxed) < 2 {
        cortex_m::asm::wfi();
    }
    log(0x09);
    exit(0)
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    match irqn {
        0 => {
            log(0x10);
            scs::pend(2);
            log(0x1F);
        }
        1 => log(0x11),
        2 => {
            log(0x20);
            scs::pend(1);
            log(0x2F);
        }
        3 => {
            log(0x30);
            scs::pend(4);
            log(0x3F);
        }
        4 => log(0x40),
        5 => log(0x50),
        6 => {
            log(0x60);
            irq_clear(6);
            let n = DEVICE_IRQ_RUNS.load(Ordering::Relaxed);
            DEVICE_IRQ_RUNS.store(n + 1, Ordering::Relaxed);
        }
        _ => exit(0xBAD1_0000 | irqn as u16 as u32),
    }
}
