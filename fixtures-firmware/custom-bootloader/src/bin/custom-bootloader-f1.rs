//! Custom bootloader fixture for the STM32F103 (seed 000: a Blue Pill whose USB bootloader sits at
//! 0x08000000 and starts the application at 0x08002000, or at 0x08004000 with the bigger
//! loader). The application base comes from the build (FIXTURE_APP_BASE, fixtures.toml `env`).
//! The USB side of such a loader (Maple DFU) is not part of the fixture: what the scenarios check
//! is the hand-over.
//!
//! The same logic as the G071 bootloader (`src/main.rs`): at every reset it prints
//! `hil-cbl <version> app=<base>` on USART1 (115200 8N1, PA9/PA10), then checks the application's
//! vector table (initial SP inside SRAM and word aligned, reset handler a Thumb address inside
//! the application's flash; AN2557 / ST's IAP examples make the SP check). A valid application is
//! started the way a bootloader should: `starting application`, USART1, GPIOA, GPIOC and AFIO
//! back to their reset state and their clocks off (RCC_APB2RSTR / RCC_APB2ENR, RM0008 7.3.4 /
//! 7.3.7), VTOR on the application's table (PM0056 4.4.4), then MSP and PC from it. Otherwise it
//! prints `no valid application` with the two words and blinks the LED (PC13) from SysTick.
//!
//! Direct register access (RM0008); no HAL.
#![no_std]
#![no_main]

use cortex_m_rt::{entry, exception};
use custom_bootloader::Chip;

use f1_board::reg::*;
use f1_board::{HCLK, LED_PIN, flush, modify, put_hex, puts, rd, wr};

/// RM0008 7.3.4 / 7.3.7: AFIO bit 0, IOPA bit 2, IOPC bit 4, USART1 bit 14 of APB2RSTR / APB2ENR.
const APB2_USED: u32 = (1 << 0) | (1 << 2) | (1 << 4) | (1 << 14);

/// USART1, GPIOA, GPIOC and AFIO: reset pulse, clocks off.
fn release_peripherals() {
    modify(RCC_APB2RSTR, 0, APB2_USED);
    modify(RCC_APB2RSTR, APB2_USED, 0);
    modify(RCC_APB2ENR, APB2_USED, 0);
}

#[entry]
fn main() -> ! {
    // USART1 transmit only, PC13 output (LED).
    f1_board::console_init(true, f1_board::cr1::UE | f1_board::cr1::TE);
    custom_bootloader::run(&Chip { puts, put_hex, flush, release_peripherals, hclk: HCLK })
}

#[exception]
fn SysTick() {
    let on = rd(GPIOC_ODR) & (1 << LED_PIN) != 0;
    wr(GPIOC_BSRR, if on { 1 << (LED_PIN + 16) } else { 1 << LED_PIN });
}

/// Every exception without a handler here: the core waits in Handler mode with the exception
/// number in IPSR, where a debugger sees it (an application whose interrupts use this table).
#[exception]
unsafe fn DefaultHandler(_irqn: i16) -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}
