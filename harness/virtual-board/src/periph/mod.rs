//! Peripheral models of the STM32G0 family (RM0444). Each file cites the sections it models.

pub mod dbgmcu;
pub mod flash;
pub mod generic;
pub mod gpio;
pub mod iwdg;
pub mod rcc;
pub mod syscfg;
pub mod usart;
pub mod usb;
pub mod wwdg;

use hil_cortex_m::{BusFaultKind, Size};

use crate::shared::{Gate, Shared};

/// The bytes of a 32-bit register an access of `size` at `offset` sees.
pub(crate) fn read_lane(word: u32, offset: u32, size: Size) -> u32 {
    (word >> ((offset & 3) * 8)) & size.mask()
}

/// A register value after a byte or halfword write at `offset` (word writes replace it).
pub(crate) fn merge_lane(old: u32, offset: u32, size: Size, value: u32) -> u32 {
    let shift = (offset & 3) * 8;
    let mask = size.mask() << shift;
    (old & !mask) | ((value << shift) & mask)
}

/// Clock gating (RM0444 5.2: registers of a peripheral whose clock is off cannot be accessed).
/// `Ok(true)`: access proceeds; `Ok(false)`: ignored (reads 0); `Err`: bus error.
pub(crate) fn gate_open(shared: &Shared, gate: Option<Gate>) -> Result<bool, BusFaultKind> {
    if shared.rcc.clocked(gate) {
        Ok(true)
    } else if shared.quirks.gated_registers_read_zero {
        Ok(false)
    } else {
        Err(BusFaultKind::Device("peripheral clock disabled in RCC"))
    }
}
