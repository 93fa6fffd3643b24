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

use cortex_m_rt::{entry, exception};
use custom_bootloader::Chip;

use g0_board::reg::*;
use g0_board::{HCLK, LED_PIN, flush, modify, put_hex, puts, rd, wr};

/// USART2 and GPIOA: reset pulse, clock off (RM0444 5.4.9-5.4.14).
fn release_peripherals() {
    modify(RCC_APBRSTR1, 0, 1 << 17);
    modify(RCC_APBRSTR1, 1 << 17, 0);
    modify(RCC_APBENR1, 1 << 17, 0);
    modify(RCC_IOPRSTR, 0, 1);
    modify(RCC_IOPRSTR, 1, 0);
    modify(RCC_IOPENR, 1, 0);
}

#[entry]
fn main() -> ! {
    // USART2 transmit only, PA5 output (LED).
    g0_board::console_init(true, g0_board::cr1::UE | g0_board::cr1::TE);
    custom_bootloader::run(&Chip { puts, put_hex, flush, release_peripherals, hclk: HCLK })
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
