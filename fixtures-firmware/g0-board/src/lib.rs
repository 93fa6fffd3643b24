//! What the STM32G071 fixtures share: register addresses, volatile access and the USART2 console.
//!
//! No RAM state, and no dependency but `board-common` (which has none either), so every fixture
//! can use it, including `seed000` with its own startup that initialises no RAM.
#![no_std]

/// Register addresses of the STM32G071 (RM0444 2.2.2 memory map, register offsets per chapter) and
/// of the Cortex-M0+ system control space (PM0223 4).
pub mod reg {
    pub const RCC: u32 = 0x4002_1000;
    /// RM0444 5.4.9 RCC_IOPRSTR (GPIOARST is bit 0).
    pub const RCC_IOPRSTR: u32 = RCC + 0x24;
    /// RM0444 5.4.11 RCC_APBRSTR1 (USART2RST is bit 17).
    pub const RCC_APBRSTR1: u32 = RCC + 0x2C;
    /// RCC_IOPENR (GPIOAEN is bit 0).
    pub const RCC_IOPENR: u32 = RCC + 0x34;
    /// RCC_APBENR1 (USART2EN is bit 17).
    pub const RCC_APBENR1: u32 = RCC + 0x3C;
    /// RM0444 5.4.15 RCC_APBENR2 (SYSCFGEN is bit 0).
    pub const RCC_APBENR2: u32 = RCC + 0x40;
    /// RM0444 5.4.27 RCC_CSR (reset flags).
    pub const RCC_CSR: u32 = RCC + 0x60;

    pub const GPIOA: u32 = 0x5000_0000;
    pub const GPIOA_MODER: u32 = GPIOA;
    pub const GPIOA_ODR: u32 = GPIOA + 0x14;
    pub const GPIOA_BSRR: u32 = GPIOA + 0x18;
    pub const GPIOA_AFRL: u32 = GPIOA + 0x20;

    pub const USART2: u32 = 0x4000_4400;
    pub const USART_CR1: u32 = USART2;
    pub const USART_BRR: u32 = USART2 + 0x0C;
    pub const USART_ISR: u32 = USART2 + 0x1C;
    pub const USART_ICR: u32 = USART2 + 0x20;
    pub const USART_RDR: u32 = USART2 + 0x24;
    pub const USART_TDR: u32 = USART2 + 0x28;

    pub use board_common::scs::*;
}

/// The Nucleo-G071RB's user LED is on PA5.
pub const LED_PIN: u32 = 5;
/// HSI16 after reset (RM0444 5.2): 16 MHz core clock.
pub const HCLK: u32 = 16_000_000;
pub const BAUD: u32 = 115_200;

pub use board_common::{modify, rd, wr};

/// USART_CR1 bits (RM0444, USART registers).
pub mod cr1 {
    pub const UE: u32 = 1 << 0;
    pub const RE: u32 = 1 << 2;
    pub const TE: u32 = 1 << 3;
    pub const RXNEIE: u32 = 1 << 5;
}

/// GPIOA and USART2 clocks on, PA2/PA3 alternate function 1 (USART2 TX/RX), PA5 an output when
/// `led`, USART2 at 115200 8N1 with the given CR1 bits (at least UE and TE).
pub fn console_init(led: bool, cr1_bits: u32) {
    use reg::*;
    modify(RCC_IOPENR, 0, 1);
    modify(RCC_APBENR1, 0, 1 << 17);
    let (led_clear, led_set) = if led { (3 << (2 * LED_PIN), 1 << (2 * LED_PIN)) } else { (0, 0) };
    modify(GPIOA_MODER, (3 << 4) | (3 << 6) | led_clear, (2 << 4) | (2 << 6) | led_set);
    modify(GPIOA_AFRL, (0xF << 8) | (0xF << 12), (1 << 8) | (1 << 12));
    wr(USART_BRR, (HCLK + BAUD / 2) / BAUD);
    wr(USART_CR1, cr1_bits);
}

pub fn putc(b: u8) {
    while rd(reg::USART_ISR) & (1 << 7) == 0 {} // TXE
    wr(reg::USART_TDR, b as u32);
}

pub fn puts(s: &str) {
    s.bytes().for_each(putc);
}

pub fn put_hex(v: u32) {
    board_common::put_hex(putc, v)
}

pub fn put_dec(v: u32) {
    board_common::put_dec(putc, v)
}

/// Wait until the last byte has left the shift register (TC).
pub fn flush() {
    while rd(reg::USART_ISR) & (1 << 6) == 0 {}
}
