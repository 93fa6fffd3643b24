//! SYSRESETREQ: the first boot marks RAM that survives a system reset and asks for one; the
//! second boot finds the mark and checks the core came back from reset (NVIC enables cleared,
//! PRIMASK clear, VTOR set by cortex-m-rt's set-vtor to this image's table).
#![no_std]
#![no_main]

use core::mem::MaybeUninit;
use core::ptr::{addr_of_mut, read_volatile, write_volatile};
use core_tests::{check, exit, log, scs};
use cortex_m_rt::entry;

const MAGIC: u32 = 0xC0DE_5EED;

#[unsafe(link_section = ".uninit.RESETS")]
static mut MARK: MaybeUninit<[u32; 2]> = MaybeUninit::uninit();

#[entry]
fn main() -> ! {
    let mark = addr_of_mut!(MARK) as *mut u32;
    // SAFETY: MARK is two words of RAM this program owns.
    let (magic, boots) = unsafe { (read_volatile(mark), read_volatile(mark.add(1))) };
    if magic != MAGIC {
        // SAFETY: as above.
        unsafe {
            write_volatile(mark, MAGIC);
            write_volatile(mark.add(1), 1);
        }
        log(1);
        scs::enable(3);
        cortex_m::interrupt::disable();
        cortex_m::peripheral::SCB::sys_reset();
    }
    // SAFETY: as above.
    unsafe { write_volatile(mark.add(1), boots + 1) };
    log(boots + 1);
    check!(scs::read(scs::ISER) == 0);
    // PRIMASK clear after reset (cortex-m calls that "interrupts active").
    check!(cortex_m::register::primask::read().is_active());
    log(scs::read(scs::VTOR));
    exit(0)
}
