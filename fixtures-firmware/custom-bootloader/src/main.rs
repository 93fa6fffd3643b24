//! Custom bootloader fixture for the STM32G071 (seed 003: "Bootloader (32 kB)" at 0x08000000,
//! the application from 0x08008000; the application base comes from the build, FIXTURE_APP_BASE).
//! The STM32F103 build of the same bootloader is `src/bin/custom-bootloader-f1.rs` (seed 000).
//!
//! At every reset it prints `hil-cbl <version> app=0x08008000` on USART2 (115200 8N1, PA2/PA3, as
//! the application fixture), then checks the application's vector table:
//!
//! - word 0, the initial stack pointer, must lie in SRAM (the check of ST's IAP examples, AN4657
//!   "Jump to user application": `(*(uint32_t *)APP & 0x2FFE0000) == 0x20000000`, made exact);
//! - word 1, the reset handler, must be a Thumb address (bit 0 set) inside the application's flash.
//!
//! A valid application is started the way a bootloader should (bootloader-protocols.md P10; ST KB
//! "jump to application"): `starting application` is printed, the peripherals the bootloader used
//! go back to their reset state (USART2 and GPIOA through RCC_APBRSTR1 / RCC_IOPRSTR, clocks off:
//! RM0444 5.4.9-5.4.14), no interrupt is enabled or pending (the bootloader never enabled one),
//! VTOR points at the application's table, then MSP and PC come from it. An application that sets
//! VTOR itself still works; one that sets it to the wrong place does not (pitfall P10).
//!
//! Otherwise it prints `no valid application` with the two words and stays: the LED (PA5) blinks
//! every 50 ms from SysTick. The reset flags in RCC_CSR are left for the application to read.
//!
//! Direct register access (RM0444); no HAL.
#![no_std]
#![no_main]

use core::panic::PanicInfo;
use core::ptr::addr_of;

use cortex_m_rt::{entry, exception};

// APP_BASE (0x08008000 for seed 003's 32 KiB slot) and FLASH_END (the STM32G071RB's 128 KiB,
// RM0444 2.2 memory map) from the build script.
include!(concat!(env!("OUT_DIR"), "/layout.rs"));

use g0_board::reg::*;
use g0_board::{HCLK, LED_PIN, flush, modify, put_hex, puts, rd, wr};

unsafe extern "C" {
    /// SRAM bounds of the memory layout (cortex-m-rt link.x).
    static _ram_start: u32;
    static _ram_end: u32;
}

/// Whether the words at APP_BASE make a vector table an application there can start from.
fn valid_application(sp: u32, reset: u32) -> bool {
    let ram = addr_of!(_ram_start) as u32..=addr_of!(_ram_end) as u32;
    let code = APP_BASE + 8..FLASH_END;
    ram.contains(&sp) && sp.is_multiple_of(4) && reset & 1 == 1 && code.contains(&(reset & !1))
}

/// Back to the state after reset for what the bootloader touched, then into the application.
fn start_application() -> ! {
    flush();
    // USART2 and GPIOA: reset pulse, clock off.
    modify(RCC_APBRSTR1, 0, 1 << 17);
    modify(RCC_APBRSTR1, 1 << 17, 0);
    modify(RCC_APBENR1, 1 << 17, 0);
    modify(RCC_IOPRSTR, 0, 1);
    modify(RCC_IOPRSTR, 1, 0);
    modify(RCC_IOPENR, 1, 0);
    // The application's vector table (VTOR TBLOFF, PM0223 4.3.4).
    wr(SCB_VTOR, APP_BASE);
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
    // SAFETY: the table was validated; MSP and PC come from it (CONTROL.SPSEL cleared on the way).
    unsafe { cortex_m::asm::bootload(APP_BASE as *const u32) }
}

#[entry]
fn main() -> ! {
    // USART2 transmit only, PA5 output (LED).
    g0_board::console_init(true, g0_board::cr1::UE | g0_board::cr1::TE);

    puts("\r\nhil-cbl ");
    puts(env!("CARGO_PKG_VERSION"));
    puts(" app=");
    put_hex(APP_BASE);
    puts("\r\n");

    let sp = rd(APP_BASE);
    let reset = rd(APP_BASE + 4);
    if valid_application(sp, reset) {
        puts("starting application\r\n");
        start_application();
    }
    puts("no valid application: SP ");
    put_hex(sp);
    puts(", reset ");
    put_hex(reset);
    puts("\r\n");
    // Stay: blink every 50 ms (SysTick from the core clock).
    wr(SYST_RVR, HCLK / 20 - 1);
    wr(SYST_CVR, 0);
    wr(SYST_CSR, 0b111);
    loop {
        cortex_m::asm::wfi();
    }
}

#[exception]
fn SysTick() {
    let on = rd(GPIOA_ODR) & (1 << LED_PIN) != 0;
    wr(GPIOA_BSRR, if on { 1 << (LED_PIN + 16) } else { 1 << LED_PIN });
}

/// Every exception without a handler here. An application that took its interrupts through this
/// table (VTOR left at 0x08000000, pitfall P10) ends here: the core waits in Handler mode with
/// the exception number in IPSR, where a debugger sees it.
#[exception]
unsafe fn DefaultHandler(_irqn: i16) -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    cortex_m::asm::udf()
}
