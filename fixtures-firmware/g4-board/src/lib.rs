//! What the STM32G474 fixtures share: register addresses, volatile access and the USART2 console
//! (PA2 TX / PA3 RX, AF7; a port of the ROM bootloader too, AN2606 "STM32G47xxx/48xxx").
//!
//! No RAM state, and no dependency but `board-common`, like `g0-board`.
#![no_std]

/// Register addresses of the STM32G474 (RM0440 2.2.2 Table 3, register offsets per chapter) and
/// of the Cortex-M4 system control space (PM0214 4).
pub mod reg {
    pub const RCC: u32 = 0x4002_1000;
    /// RM0440 7.4.12 RCC_APB1RSTR1 (USART2RST is bit 17).
    pub const RCC_APB1RSTR1: u32 = RCC + 0x38;
    /// RM0440 7.4.16 RCC_AHB2ENR (GPIOAEN is bit 0).
    pub const RCC_AHB2ENR: u32 = RCC + 0x4C;
    /// RM0440 7.4.18 RCC_APB1ENR1 (USART2EN is bit 17).
    pub const RCC_APB1ENR1: u32 = RCC + 0x58;
    /// RM0440 7.4.20 RCC_APB2ENR (SYSCFGEN is bit 0).
    pub const RCC_APB2ENR: u32 = RCC + 0x60;
    /// RM0440 7.4.29 RCC_CSR (reset flags, RMVF bit 23).
    pub const RCC_CSR: u32 = RCC + 0x94;

    /// RM0440 9.1.1 SYSCFG_MEMRMP (MEM_MODE bits 2:0).
    pub const SYSCFG_MEMRMP: u32 = 0x4001_0000;

    pub const GPIOA: u32 = 0x4800_0000;
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

    pub const IWDG_KR: u32 = 0x4000_3000;

    /// RM0440 45.6.1 USB common registers (USB device FS at 0x40005C00, RM0440 2.2.2 Table 3):
    /// USB_CNTR (FRES bit 0, PDWN bit 1) and USB_BCDR (DPPU, the D+ pull-up, bit 15).
    pub const USB: u32 = 0x4000_5C00;
    pub const USB_CNTR: u32 = USB + 0x40;
    pub const USB_BCDR: u32 = USB + 0x58;
    /// RM0440 7.4.12 / 7.4.18: USBRST / USBEN are bit 23 of RCC_APB1RSTR1 / RCC_APB1ENR1.
    pub const RCC_APB1_USB: u32 = 1 << 23;

    pub use board_common::scs::*;
}

/// The NUCLEO-G474RE's user LED LD2 is on PA5 (UM2505).
pub const LED_PIN: u32 = 5;
/// HSI16 after reset (RM0440 7.2): 16 MHz core clock.
pub const HCLK: u32 = 16_000_000;
pub const BAUD: u32 = 115_200;
/// RM0440 16.3 Table 97: USART2 global interrupt.
pub const USART2_IRQ: u32 = 38;
/// System memory (the ROM bootloader's vector table), AN2606 / RM0440 5.3.1.
pub const SYSTEM_MEMORY: u32 = 0x1FFF_0000;

pub use board_common::{modify, rd, wr};

/// USART_CR1 bits (RM0440 37.8.1).
pub mod cr1 {
    pub const UE: u32 = 1 << 0;
    pub const RE: u32 = 1 << 2;
    pub const TE: u32 = 1 << 3;
    pub const RXNEIE: u32 = 1 << 5;
}

/// GPIOA and USART2 clocks on, PA2/PA3 alternate function 7 (USART2 TX/RX, DS12288 Table 13), PA5
/// an output when `led`, USART2 at 115200 8N1 with the given CR1 bits (at least UE and TE).
pub fn console_init(led: bool, cr1_bits: u32) {
    use reg::*;
    modify(RCC_AHB2ENR, 0, 1);
    modify(RCC_APB1ENR1, 0, 1 << 17);
    let (led_clear, led_set) = if led { (3 << (2 * LED_PIN), 1 << (2 * LED_PIN)) } else { (0, 0) };
    modify(GPIOA_MODER, (3 << 4) | (3 << 6) | led_clear, (2 << 4) | (2 << 6) | led_set);
    modify(GPIOA_AFRL, (0xF << 8) | (0xF << 12), (7 << 8) | (7 << 12));
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
