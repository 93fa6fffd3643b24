//! Writes 0xC0FFEE00 + n to a RAM marker for n = 0..10, then stops on a breakpoint.
#![no_std]
#![no_main]

use core::panic::PanicInfo;
use core::ptr::addr_of_mut;
use cortex_m_rt::entry;

#[unsafe(no_mangle)]
static mut MARKER: u32 = 0;

#[entry]
fn main() -> ! {
    for n in 0..10u32 {
        // SAFETY: single-threaded fixture; volatile so the emulator sees every store.
        unsafe { addr_of_mut!(MARKER).write_volatile(0xC0FF_EE00 + n) };
    }
    loop {
        cortex_m::asm::bkpt();
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    cortex_m::asm::udf()
}
