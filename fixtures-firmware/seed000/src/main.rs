//! Seed 000's application: the uTasker bootloader on that board starts the application at
//! 0x08003080, so it is linked there, vector table first. VTOR needs the table aligned to its size
//! rounded up to a power of two (ARMv6-M ARM B3.2.5 / ARMv7-M ARM B3.2.5: 48 entries on the
//! STM32G071, 192 bytes, so 256-byte alignment); 0x08003080 is 128 bytes past a boundary. cortex-m-rt
//! refuses to link such an image, so this fixture has its own minimal startup (no RAM state, no
//! cortex-m-rt) and linker script (build.rs).
//!
//! What it does when started: points VTOR at its table as the application must behind a bootloader
//! (PM0223 4.3.4), then prints `hil-seed000 base=0x08003080 vtor=<read back>` on USART2 (115200
//! 8N1, PA2/PA3, RM0444) and waits. On a core that keeps only the aligned bits the read-back
//! differs from the base, and every exception would fetch its handler from the wrong place. The rig
//! never gets that far: preflight refuses the image (DESIGN.md safety rails, the seed 000 case).
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use g0_board::reg::SCB_VTOR;
use g0_board::{put_hex, puts, rd, wr};

unsafe extern "C" {
    static _stack_start: u32;
}

/// The reset handler: no RAM to initialise (the linker script asserts an empty .bss, and there
/// is no .data).
#[unsafe(no_mangle)]
pub extern "C" fn Reset() -> ! {
    let table = &raw const __VECTORS as u32;
    wr(SCB_VTOR, table);
    g0_board::console_init(false, g0_board::cr1::UE | g0_board::cr1::TE);
    puts("\r\nhil-seed000 base=");
    put_hex(table);
    puts(" vtor=");
    put_hex(rd(SCB_VTOR));
    puts("\r\n");
    loop {
        // SAFETY: WFI only waits; no interrupt is enabled.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}

/// Every exception: wait where a debugger sees it (IPSR names the exception).
extern "C" fn fault() -> ! {
    loop {
        // SAFETY: as above.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
pub union Vector {
    handler: extern "C" fn() -> !,
    stack: *const u32,
}

// SAFETY: the vector table is read-only data in flash.
unsafe impl Sync for Vector {}

/// The STM32G071's 48 vectors (16 core entries, 32 interrupts, RM0444 12.3 Table 55): initial SP,
/// reset handler, then `fault` for every exception.
#[unsafe(link_section = ".vector_table")]
#[unsafe(no_mangle)]
pub static __VECTORS: [Vector; 48] = {
    let mut v = [Vector { handler: fault }; 48];
    v[0] = Vector { stack: &raw const _stack_start };
    v[1] = Vector { handler: Reset };
    v
};

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    fault()
}
