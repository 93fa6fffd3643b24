//! What the STM32F103 fixtures share: register addresses, volatile access and the USART1 console
//! (PA9 TX / PA10 RX, the pins of the ROM bootloader, AN2606 "STM32F10xxx bootloader").
//!
//! No RAM state, and no dependency but `board-common`, like `g0-board`.
#![no_std]

/// Register addresses of the STM32F103 (RM0008 3.3 Table 3, register offsets per chapter) and of
/// the Cortex-M3 system control space (PM0056 4).
pub mod reg {
    pub const RCC: u32 = 0x4002_1000;
    /// RM0008 7.3.4 RCC_APB2RSTR (USART1RST is bit 14).
    pub const RCC_APB2RSTR: u32 = RCC + 0x0C;
    /// RM0008 7.3.7 RCC_APB2ENR: AFIOEN 0, IOPAEN 2, IOPCEN 4, USART1EN 14.
    pub const RCC_APB2ENR: u32 = RCC + 0x18;
    /// RM0008 7.3.10 RCC_CSR (reset flags; RMVF is bit 24).
    pub const RCC_CSR: u32 = RCC + 0x24;

    /// RM0008 9.2: GPIOA / GPIOC configuration and output registers.
    pub const GPIOA: u32 = 0x4001_0800;
    pub const GPIOA_CRH: u32 = GPIOA + 0x04;
    pub const GPIOC: u32 = 0x4001_1000;
    pub const GPIOC_CRH: u32 = GPIOC + 0x04;
    pub const GPIOC_ODR: u32 = GPIOC + 0x0C;
    pub const GPIOC_BSRR: u32 = GPIOC + 0x10;

    /// RM0008 27.6: USART1 SR, DR, BRR, CR1.
    pub const USART1: u32 = 0x4001_3800;
    pub const USART_SR: u32 = USART1;
    pub const USART_DR: u32 = USART1 + 0x04;
    pub const USART_BRR: u32 = USART1 + 0x08;
    pub const USART_CR1: u32 = USART1 + 0x0C;

    /// RM0008 19.4.1 IWDG_KR.
    pub const IWDG_KR: u32 = 0x4000_3000;

    pub use board_common::scs::*;
}

/// The Blue Pill's LED is on PC13, lit when the pin is low.
pub const LED_PIN: u32 = 13;
/// HSI after reset (RM0008 7.2): 8 MHz core and APB2 clock.
pub const HCLK: u32 = 8_000_000;
pub const BAUD: u32 = 115_200;
/// RM0008 10.1.2 Table 63: USART1 global interrupt.
pub const USART1_IRQ: u32 = 37;
/// System memory: the ROM bootloader's vector table (RM0008 3.3.3 Table 5).
pub const SYSTEM_MEMORY: u32 = 0x1FFF_F000;

pub use board_common::{modify, rd, wr};

/// USART_CR1 bits (RM0008 27.6.4).
pub mod cr1 {
    pub const RE: u32 = 1 << 2;
    pub const TE: u32 = 1 << 3;
    pub const RXNEIE: u32 = 1 << 5;
    pub const UE: u32 = 1 << 13;
}

/// GPIOA, GPIOC, AFIO and USART1 clocks on; PA9 alternate-function push-pull (USART1 TX), PA10
/// floating input (RX, the reset state); PC13 a push-pull output when `led`; USART1 at 115200 8N1
/// with the given CR1 bits (at least UE and TE). RM0008 9.1.11 Table 24 (USART pin configuration).
pub fn console_init(led: bool, cr1_bits: u32) {
    use reg::*;
    modify(RCC_APB2ENR, 0, (1 << 0) | (1 << 2) | (1 << 4) | (1 << 14));
    // CRH nibbles: PA9 = MODE 11 (50 MHz) CNF 10 (AF push-pull) = 0xB; PA10 = 0x4 (floating input).
    modify(GPIOA_CRH, (0xF << 4) | (0xF << 8), (0xB << 4) | (0x4 << 8));
    if led {
        // PC13 = MODE 10 (2 MHz) CNF 00 (push-pull) = 0x2; LED off (pin high).
        wr(GPIOC_BSRR, 1 << LED_PIN);
        modify(GPIOC_CRH, 0xF << 20, 0x2 << 20);
    }
    // USARTDIV = fPCLK2 / (16 * baud) as mantissa.fraction: BRR = fPCLK2 / baud (RM0008 27.3.4).
    wr(USART_BRR, (HCLK + BAUD / 2) / BAUD);
    wr(USART_CR1, cr1_bits);
}

pub fn putc(b: u8) {
    while rd(reg::USART_SR) & (1 << 7) == 0 {} // TXE
    wr(reg::USART_DR, b as u32);
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
    while rd(reg::USART_SR) & (1 << 6) == 0 {}
}
