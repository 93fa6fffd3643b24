//! GPIO port of the STM32F1 (RM0008 chapter 9).
//!
//! Modelled: CRL/CRH (MODE and CNF per pin, reset 0x4444_4444: floating inputs; RM0008 9.2.1,
//! 9.2.2), IDR from the board's wiring or the pull selected by ODR in input pull-up/down mode
//! (RM0008 9.1.1 Table 20), ODR, BSRR (set wins over reset, RM0008 9.2.5), BRR, LCKR stored;
//! output level changes of general-purpose outputs reported to the board (LED); the APB2ENR
//! clock gate. Alternate-function outputs (the USART TX pin) are the peripheral's business: the
//! USART model does not look at the pins, so USART1 works whatever CRH says (UNVERIFIED choice:
//! on silicon a TX pin left as input sends nothing).
//!
//! Not modelled: LCKR locking, open-drain contention, EXTI, analog.

use hil_chips::PinId;
use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size};

use crate::periph::{gate_open, merge_lane, read_lane};
use crate::shared::{Gate, PinChange, Shared};

pub const CRL: u32 = 0x00;
pub const CRH: u32 = 0x04;
pub const IDR: u32 = 0x08;
pub const ODR: u32 = 0x0C;
pub const BSRR: u32 = 0x10;
pub const BRR: u32 = 0x14;
pub const LCKR: u32 = 0x18;

/// CRL / CRH reset value: every pin a floating input (RM0008 9.2.1).
const CR_RESET: u32 = 0x4444_4444;

pub struct GpioF1 {
    name: String,
    port: u8,
    gate: Option<Gate>,
    cr: [u32; 2],
    odr: u32,
    lckr: u32,
    reported: (u16, u16),
}

impl GpioF1 {
    pub fn new(name: &str, port: u8, gate: Option<Gate>) -> Self {
        GpioF1 { name: name.to_string(), port, gate, cr: [CR_RESET; 2], odr: 0, lckr: 0, reported: (0, 0) }
    }

    /// (MODE, CNF) of `pin`.
    fn config(&self, pin: u8) -> (u32, u32) {
        let nib = (self.cr[(pin / 8) as usize] >> (4 * (pin % 8))) & 0xF;
        (nib & 3, nib >> 2)
    }

    fn input(&self, shared: &Shared, pin: u8) -> bool {
        let out = self.odr & (1 << pin) != 0;
        match self.config(pin) {
            // Analog input: the Schmitt trigger is off, IDR reads 0 (RM0008 9.1.10).
            (0, 0) => false,
            // Input with pull-up / pull-down: ODR selects the pull (RM0008 9.1.1 Table 20).
            (0, 2) => shared.pins.external(PinId { port: self.port, pin }).unwrap_or(out),
            (0, _) => shared.pins.external(PinId { port: self.port, pin }).unwrap_or(false),
            // General-purpose push-pull output drives the pin; open drain only pulls low.
            (_, 0) => out,
            (_, 1) if !out => false,
            _ => shared.pins.external(PinId { port: self.port, pin }).unwrap_or(true),
        }
    }

    fn idr(&self, shared: &Shared) -> u32 {
        (0..16).filter(|p| self.input(shared, *p)).fold(0, |acc, p| acc | (1 << p))
    }

    /// General-purpose output pins and their levels.
    fn outputs(&self) -> (u16, u16) {
        let mask = (0..16u8).filter(|p| matches!(self.config(*p), (m, 0 | 1) if m != 0)).fold(0u16, |a, p| a | 1 << p);
        (self.odr as u16 & mask, mask)
    }

    fn report(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let (levels, mask) = self.outputs();
        let (old_levels, old_mask) = self.reported;
        for p in 0..16u8 {
            let b = 1u16 << p;
            if mask & b == 0 {
                continue;
            }
            let level = levels & b != 0;
            if old_mask & b == 0 || (old_levels & b != 0) != level {
                cx.shared.pin_changes.push(PinChange { pin: PinId { port: self.port, pin: p }, level, at: cx.now });
            }
        }
        self.reported = (levels, mask);
    }

    pub fn odr(&self) -> u32 {
        self.odr
    }
    pub fn crl(&self) -> u32 {
        self.cr[0]
    }
    pub fn crh(&self) -> u32 {
        self.cr[1]
    }
}

impl Device<Shared> for GpioF1 {
    fn name(&self) -> &str {
        &self.name
    }

    fn read(
        &mut self,
        offset: u32,
        size: Size,
        _: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<u32, BusFaultKind> {
        if !gate_open(cx.shared, self.gate)? {
            return Ok(0);
        }
        let v = match offset & !3 {
            CRL => self.cr[0],
            CRH => self.cr[1],
            IDR => self.idr(cx.shared),
            ODR => self.odr,
            LCKR => self.lckr,
            _ => 0,
        };
        Ok(read_lane(v, offset, size))
    }

    fn write(
        &mut self,
        offset: u32,
        size: Size,
        value: u32,
        _: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<(), BusFaultKind> {
        if !gate_open(cx.shared, self.gate)? {
            return Ok(());
        }
        match offset & !3 {
            CRL => self.cr[0] = merge_lane(self.cr[0], offset, size, value),
            CRH => self.cr[1] = merge_lane(self.cr[1], offset, size, value),
            ODR => self.odr = merge_lane(self.odr, offset, size, value) & 0xFFFF,
            BSRR => {
                // BSy wins over BRy (RM0008 9.2.5).
                let v = merge_lane(0, offset, size, value);
                self.odr = ((self.odr & !(v >> 16)) | v) & 0xFFFF;
            }
            BRR => {
                let v = merge_lane(0, offset, size, value);
                self.odr &= !(v & 0xFFFF);
            }
            LCKR => self.lckr = merge_lane(self.lckr, offset, size, value) & 0x1_FFFF,
            _ => {}
        }
        self.report(cx);
        Ok(())
    }

    fn reset(&mut self, _: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        self.cr = [CR_RESET; 2];
        self.odr = 0;
        self.lckr = 0;
        self.report(cx);
    }
}
