//! What every fixture board crate (`g0-board`, `f1-board`, `g4-board`) shares: the Cortex-M system
//! control space addresses, volatile register access, and numbers written through a byte output.
//!
//! No RAM state and no dependency, like the board crates that re-export it: `seed000` runs with
//! its own startup that initialises no RAM.
#![no_std]

use core::ptr::{read_volatile, write_volatile};

/// The Cortex-M system control space: the same addresses on the M0+ (PM0223 4), the M3 (PM0056 4)
/// and the M4 (PM0214 4).
pub mod scs {
    /// SysTick.
    pub const SYST_CSR: u32 = 0xE000_E010;
    pub const SYST_RVR: u32 = 0xE000_E014;
    pub const SYST_CVR: u32 = 0xE000_E018;
    /// SCB: ICSR (PENDSTCLR is bit 25), VTOR, AIRCR.
    pub const SCB_ICSR: u32 = 0xE000_ED04;
    pub const SCB_VTOR: u32 = 0xE000_ED08;
    pub const SCB_AIRCR: u32 = 0xE000_ED0C;
    /// NVIC: word n of each covers lines 32n..32n+31.
    pub const NVIC_ISER: u32 = 0xE000_E100;
    pub const NVIC_ICER: u32 = 0xE000_E180;
    pub const NVIC_ISPR: u32 = 0xE000_E200;
    pub const NVIC_ICPR: u32 = 0xE000_E280;
}

pub fn rd(addr: u32) -> u32 {
    // SAFETY: callers pass a register or memory word of the chip.
    unsafe { read_volatile(addr as *const u32) }
}

pub fn wr(addr: u32, v: u32) {
    // SAFETY: as above.
    unsafe { write_volatile(addr as *mut u32, v) }
}

pub fn modify(addr: u32, clear: u32, set: u32) {
    wr(addr, (rd(addr) & !clear) | set);
}

/// `v` as `0x` and eight upper-case hex digits.
pub fn put_hex(putc: fn(u8), v: u32) {
    putc(b'0');
    putc(b'x');
    for i in (0..8).rev() {
        let d = ((v >> (i * 4)) & 0xF) as u8;
        putc(if d < 10 { b'0' + d } else { b'A' + d - 10 });
    }
}

/// `v` in decimal.
pub fn put_dec(putc: fn(u8), mut v: u32) {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        buf[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while n > 0 {
        n -= 1;
        putc(buf[n]);
    }
}
