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

use core::panic::PanicInfo;
use core::ptr::addr_of;

use cortex_m_rt::{entry, exception};

use f1_board::reg::*;
use f1_board::{HCLK, LED_PIN, flush, modify, put_hex, puts, rd, wr};

include!(concat!(env!("OUT_DIR"), "/layout.rs"));

/// RM0008 7.3.4 / 7.3.7: AFIO bit 0, IOPA bit 2, IOPC bit 4, USART1 bit 14 of APB2RSTR / APB2ENR.
const APB2_USED: u32 = (1 << 0) | (1 << 2) | (1 << 4) | (1 << 14);

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
    modify(RCC_APB2RSTR, 0, APB2_USED);
    modify(RCC_APB2RSTR, APB2_USED, 0);
    modify(RCC_APB2ENR, APB2_USED, 0);
    // The application's vector table (VTOR TBLOFF, PM0056 4.4.4).
    wr(SCB_VTOR, APP_BASE);
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
    // SAFETY: the table was validated; MSP and PC come from it (CONTROL.SPSEL cleared on the way).
    unsafe { cortex_m::asm::bootload(APP_BASE as *const u32) }
}

#[entry]
fn main() -> ! {
    // USART1 transmit only, PC13 output (LED).
    f1_board::console_init(true, f1_board::cr1::UE | f1_board::cr1::TE);

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

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    cortex_m::asm::udf()
}
