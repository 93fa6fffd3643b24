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
use core::ptr::{read_volatile, write_volatile};

// RM0444 2.2.2 peripheral addresses and register offsets.
const RCC_IOPENR: u32 = 0x4002_1034;
const RCC_APBENR1: u32 = 0x4002_103C;
const GPIOA_MODER: u32 = 0x5000_0000;
const GPIOA_AFRL: u32 = 0x5000_0020;
const USART2: u32 = 0x4000_4400;
const USART_CR1: u32 = USART2;
const USART_BRR: u32 = USART2 + 0x0C;
const USART_ISR: u32 = USART2 + 0x1C;
const USART_TDR: u32 = USART2 + 0x28;
const SCB_VTOR: u32 = 0xE000_ED08;
/// HSI16 after reset (RM0444 5.2).
const HCLK: u32 = 16_000_000;
const BAUD: u32 = 115_200;

unsafe extern "C" {
    static _stack_start: u32;
}

fn rd(addr: u32) -> u32 {
    // SAFETY: `addr` is a peripheral register of this chip.
    unsafe { read_volatile(addr as *const u32) }
}

fn wr(addr: u32, v: u32) {
    // SAFETY: as above.
    unsafe { write_volatile(addr as *mut u32, v) }
}

fn modify(addr: u32, clear: u32, set: u32) {
    wr(addr, (rd(addr) & !clear) | set);
}

fn putc(b: u8) {
    while rd(USART_ISR) & (1 << 7) == 0 {} // TXE
    wr(USART_TDR, b as u32);
}

fn puts(s: &str) {
    s.bytes().for_each(putc);
}

fn put_hex(v: u32) {
    puts("0x");
    for i in (0..8).rev() {
        let d = ((v >> (i * 4)) & 0xF) as u8;
        putc(if d < 10 { b'0' + d } else { b'A' + d - 10 });
    }
}

/// The reset handler: no RAM to initialise (the linker script asserts an empty .bss, and there
/// is no .data).
#[unsafe(no_mangle)]
pub extern "C" fn Reset() -> ! {
    let table = &raw const __VECTORS as u32;
    wr(SCB_VTOR, table);
    modify(RCC_IOPENR, 0, 1);
    modify(RCC_APBENR1, 0, 1 << 17);
    modify(GPIOA_MODER, (3 << 4) | (3 << 6), (2 << 4) | (2 << 6));
    modify(GPIOA_AFRL, (0xF << 8) | (0xF << 12), (1 << 8) | (1 << 12));
    wr(USART_BRR, (HCLK + BAUD / 2) / BAUD);
    wr(USART_CR1, (1 << 0) | (1 << 3)); // UE TE
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
