//! Shared by the core-test programs: the test device through which they report to the host test
//! (hil-cortex-m tests/common: TESTDEV at 0x4000_0000), and a panic handler that reports.
#![no_std]

use core::ptr::{read_volatile, write_volatile};

const TESTDEV: usize = 0x4000_0000;
const LOG: usize = 0x00;
const EXIT: usize = 0x04;
const IRQ_SET: usize = 0x08;
const IRQ_CLR: usize = 0x0C;
const IRQ_PULSE: usize = 0x10;
const TIMER_NS: usize = 0x14;
const TIMER_IRQ: usize = 0x18;

/// Exit code for a failed in-program check: 0xBAD0_0000 | line.
pub const FAIL: u32 = 0xBAD0_0000;
/// Exit code the panic handler uses.
pub const PANIC: u32 = 0xDEAD_0000;

fn reg(off: usize) -> *mut u32 {
    (TESTDEV + off) as *mut u32
}

/// Append `v` to the host-visible log.
pub fn log(v: u32) {
    // SAFETY: TESTDEV is the test board's device; word writes only.
    unsafe { write_volatile(reg(LOG), v) }
}

/// How many entries the log holds.
pub fn log_len() -> u32 {
    // SAFETY: as above.
    unsafe { read_volatile(reg(LOG)) }
}

/// End the program with `code` (0 = pass).
pub fn exit(code: u32) -> ! {
    // SAFETY: as above.
    unsafe { write_volatile(reg(EXIT), code) };
    loop {
        cortex_m::asm::nop();
    }
}

/// Stop with FAIL | line unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            $crate::exit($crate::FAIL | line!());
        }
    };
}

/// Drive interrupt line `irq` high (level) until [`irq_clear`].
pub fn irq_set(irq: u32) {
    // SAFETY: as above.
    unsafe { write_volatile(reg(IRQ_SET), 1 << irq) }
}

pub fn irq_clear(irq: u32) {
    // SAFETY: as above.
    unsafe { write_volatile(reg(IRQ_CLR), 1 << irq) }
}

pub fn irq_pulse(irq: u32) {
    // SAFETY: as above.
    unsafe { write_volatile(reg(IRQ_PULSE), 1 << irq) }
}

/// Have the device pulse `irq` after `ns` nanoseconds of virtual time (a scheduler event).
pub fn timer(ns: u32, irq: u32) {
    // SAFETY: as above.
    unsafe {
        write_volatile(reg(TIMER_IRQ), irq);
        write_volatile(reg(TIMER_NS), ns);
    }
}

/// NVIC and SCB registers by address (word accesses, as ARMv6-M requires).
pub mod scs {
    use core::ptr::{read_volatile, write_volatile};
    pub const ISER: usize = 0xE000_E100;
    pub const ICER: usize = 0xE000_E180;
    pub const ISPR: usize = 0xE000_E200;
    pub const ICPR: usize = 0xE000_E280;
    pub const IPR: usize = 0xE000_E400;
    pub const ICSR: usize = 0xE000_ED04;
    pub const VTOR: usize = 0xE000_ED08;
    pub const SCR: usize = 0xE000_ED10;
    pub const SHPR3: usize = 0xE000_ED20;
    pub const SYST_CSR: usize = 0xE000_E010;
    pub const SYST_RVR: usize = 0xE000_E014;
    pub const SYST_CVR: usize = 0xE000_E018;
    pub const PENDSVSET: u32 = 1 << 28;
    pub const PENDSTSET: u32 = 1 << 26;

    pub fn read(addr: usize) -> u32 {
        // SAFETY: SCS registers are always mapped on Cortex-M.
        unsafe { read_volatile(addr as *const u32) }
    }
    pub fn write(addr: usize, v: u32) {
        // SAFETY: as above.
        unsafe { write_volatile(addr as *mut u32, v) }
    }
    /// Set IRQ `n`'s priority (word read-modify-write: ARMv6-M IPR is word-access only).
    pub fn set_priority(n: u32, prio: u8) {
        let addr = IPR + 4 * (n as usize / 4);
        let shift = 8 * (n % 4);
        write(addr, (read(addr) & !(0xFF << shift)) | (prio as u32) << shift);
    }
    pub fn enable(n: u32) {
        write(ISER, 1 << n);
    }
    pub fn pend(n: u32) {
        write(ISPR, 1 << n);
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(PANIC)
}
