//! Peripheral models of the STM32G0 family (RM0444), and the STM32F1 versions (RM0008) that the
//! chip data selects with `version:` (`f1`, `usart_v1`, `flash_f1`). Each file cites the
//! sections it models.

pub mod dbgmcu;
pub mod f1;
pub mod flash;
pub mod flash_f1;
pub mod g4;
pub mod generic;
pub mod gpio;
pub mod iwdg;
pub mod rcc;
pub mod syscfg;
pub mod usart;
pub mod usart_v1;
pub mod usb;
pub mod wwdg;

use hil_cortex_m::{BusFaultKind, Size};

use crate::shared::{Gate, Shared};

/// What the board reads of a USART for a snapshot (register names of the v2 model; the v1 model
/// reports SR as `isr`).
#[derive(Clone, Copy, Debug)]
pub struct UsartView {
    pub cr1: u32,
    pub brr: u32,
    pub isr: u32,
    pub baud: Option<u32>,
    pub lost_while_off: u64,
    pub overruns: u64,
}

/// The host side of a USART model, whatever its register version.
pub trait HostUart {
    /// The host put frames on the RX wire.
    fn host_send(&mut self, frames: &[usart::RxFrame], cx: &mut hil_cortex_m::DeviceCx<'_, Shared>);
    /// The host's baud rate (`None`: matches the device).
    fn set_host_baud(&mut self, baud: Option<u32>);
    fn host_baud(&self) -> Option<u32>;
    /// Frames waiting on the wire.
    fn rx_pending(&self) -> usize;
    fn view(&self, shared: &Shared) -> UsartView;
}

/// The USART model behind a device, if it is one (v1 or v2).
pub fn host_uart_mut(any: &mut dyn std::any::Any) -> Option<&mut dyn HostUart> {
    if any.is::<usart::Usart>() {
        return any.downcast_mut::<usart::Usart>().map(|u| u as &mut dyn HostUart);
    }
    any.downcast_mut::<usart_v1::UsartV1>().map(|u| u as &mut dyn HostUart)
}

/// Shared-reference form of [`host_uart_mut`].
pub fn host_uart(any: &dyn std::any::Any) -> Option<&dyn HostUart> {
    if let Some(u) = any.downcast_ref::<usart::Usart>() {
        return Some(u);
    }
    any.downcast_ref::<usart_v1::UsartV1>().map(|u| u as &dyn HostUart)
}

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
