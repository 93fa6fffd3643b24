//! What both builds of the custom bootloader share (`src/main.rs` for the G071, seed 003;
//! `src/bin/custom-bootloader-f1.rs` for the F103, seed 000): the banner, the check of the
//! application's vector table, the hand-over and the wait when there is nothing to start. Each
//! build supplies its console, the peripherals it used (to put back to reset state) and its LED.
#![no_std]

use core::panic::PanicInfo;
use core::ptr::addr_of;

use board_common::scs::{SCB_VTOR, SYST_CSR, SYST_CVR, SYST_RVR};
use board_common::{rd, wr};

// APP_BASE and FLASH_END from the build script (FIXTURE_APP_BASE and the layout's flash).
include!(concat!(env!("OUT_DIR"), "/layout.rs"));

unsafe extern "C" {
    /// SRAM bounds of the memory layout (cortex-m-rt link.x).
    static _ram_start: u32;
    static _ram_end: u32;
}

/// The chip's side of the bootloader.
pub struct Chip {
    pub puts: fn(&str),
    pub put_hex: fn(u32),
    /// Waits until the last byte has left the console's shift register.
    pub flush: fn(),
    /// The peripherals the bootloader used back to their reset state, clocks off.
    pub release_peripherals: fn(),
    /// The core clock, for SysTick.
    pub hclk: u32,
}

/// Whether the words at APP_BASE make a vector table an application there can start from:
/// - word 0, the initial stack pointer, must lie in SRAM (the check of ST's IAP examples, AN4657
///   "Jump to user application": `(*(uint32_t *)APP & 0x2FFE0000) == 0x20000000`, made exact);
/// - word 1, the reset handler, must be a Thumb address (bit 0 set) inside the application's flash.
pub fn valid_application(sp: u32, reset: u32) -> bool {
    let ram = addr_of!(_ram_start) as u32..=addr_of!(_ram_end) as u32;
    let code = APP_BASE + 8..FLASH_END;
    ram.contains(&sp) && sp.is_multiple_of(4) && reset & 1 == 1 && code.contains(&(reset & !1))
}

/// Back to the state after reset for what the bootloader touched, then into the application
/// (bootloader-protocols.md P10; ST KB "jump to application"): VTOR on its table (TBLOFF, PM0223
/// 4.3.4 / PM0056 4.4.4), then MSP and PC from it.
fn start_application(chip: &Chip) -> ! {
    (chip.flush)();
    (chip.release_peripherals)();
    wr(SCB_VTOR, APP_BASE);
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
    // SAFETY: the table was validated; MSP and PC come from it (CONTROL.SPSEL cleared on the way).
    unsafe { cortex_m::asm::bootload(APP_BASE as *const u32) }
}

/// The bootloader, once the console is up: `hil-cbl <version> app=<base>`, then the application
/// if its vector table is valid, else `no valid application` with the two words and a wait, the
/// LED blinking every 50 ms from SysTick (the build's SysTick handler).
pub fn run(chip: &Chip) -> ! {
    (chip.puts)("\r\nhil-cbl ");
    (chip.puts)(env!("CARGO_PKG_VERSION"));
    (chip.puts)(" app=");
    (chip.put_hex)(APP_BASE);
    (chip.puts)("\r\n");

    let sp = rd(APP_BASE);
    let reset = rd(APP_BASE + 4);
    if valid_application(sp, reset) {
        (chip.puts)("starting application\r\n");
        start_application(chip);
    }
    (chip.puts)("no valid application: SP ");
    (chip.put_hex)(sp);
    (chip.puts)(", reset ");
    (chip.put_hex)(reset);
    (chip.puts)("\r\n");
    wr(SYST_RVR, chip.hclk / 20 - 1);
    wr(SYST_CVR, 0);
    wr(SYST_CSR, 0b111);
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    cortex_m::asm::udf()
}
