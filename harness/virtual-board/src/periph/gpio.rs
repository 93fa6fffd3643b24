//! GPIO port of the STM32G0 (RM0444 chapter 7).
//!
//! Modelled: MODER, OTYPER, OSPEEDR, PUPDR, IDR, ODR, BSRR, BRR, AFRL/AFRH with the reset values
//! of RM0444 7.4 (port A: PA13/PA14 in SWD alternate function, PA13 pull-up, PA14 pull-down),
//! input levels from the board's wiring (external drive, else the pull resistor), output level
//! changes reported to the board (LED), RCC_IOPENR clock gating.
//!
//! Not modelled: LCKR locking (stored), open-drain contention, EXTI edge detection, analog.

use hil_chips::PinId;
use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size};

use super::{gate_open, merge_lane, read_lane};
use crate::shared::{Gate, PinChange, Shared};

pub const MODER: u32 = 0x00;
pub const OTYPER: u32 = 0x04;
pub const OSPEEDR: u32 = 0x08;
pub const PUPDR: u32 = 0x0C;
pub const IDR: u32 = 0x10;
pub const ODR: u32 = 0x14;
pub const BSRR: u32 = 0x18;
pub const LCKR: u32 = 0x1C;
pub const AFRL: u32 = 0x20;
pub const AFRH: u32 = 0x24;
pub const BRR: u32 = 0x28;

pub struct Gpio {
    name: String,
    port: u8,
    gate: Option<Gate>,
    moder: u32,
    otyper: u32,
    ospeedr: u32,
    pupdr: u32,
    odr: u32,
    lckr: u32,
    afr: [u32; 2],
    /// Output levels last reported (bit n: pin n drives high), with the mask of output pins.
    reported: (u16, u16),
}

impl Gpio {
    pub fn new(name: &str, port: u8, gate: Option<Gate>) -> Self {
        let mut g = Gpio {
            name: name.to_string(),
            port,
            gate,
            moder: 0,
            otyper: 0,
            ospeedr: 0,
            pupdr: 0,
            odr: 0,
            lckr: 0,
            afr: [0; 2],
            reported: (0, 0),
        };
        g.reset_values();
        g
    }

    fn reset_values(&mut self) {
        // RM0444 7.4.1/7.4.3/7.4.4 reset values: port A 0xEBFF_FFFF / 0x0C00_0000 / 0x2400_0000,
        // other ports all analog (0xFFFF_FFFF) without pulls.
        if self.port == 0 {
            self.moder = 0xEBFF_FFFF;
            self.ospeedr = 0x0C00_0000;
            self.pupdr = 0x2400_0000;
        } else {
            self.moder = 0xFFFF_FFFF;
            self.ospeedr = 0;
            self.pupdr = 0;
        }
        self.otyper = 0;
        self.odr = 0;
        self.lckr = 0;
        self.afr = [0; 2];
    }

    fn mode(&self, pin: u8) -> u32 {
        (self.moder >> (2 * pin)) & 3
    }

    /// Level of `pin` as IDR shows it.
    fn input(&self, shared: &Shared, pin: u8) -> bool {
        let id = PinId { port: self.port, pin };
        let out = self.odr & (1 << pin) != 0;
        match self.mode(pin) {
            // Analog: the Schmitt trigger is off, IDR reads 0 (RM0444 7.3.13).
            3 => false,
            // Push-pull output drives the pin; open drain only pulls low.
            1 if self.otyper & (1 << pin) == 0 => out,
            1 if !out => false,
            _ => shared.pins.external(id).unwrap_or_else(|| (self.pupdr >> (2 * pin)) & 3 == 1),
        }
    }

    fn idr(&self, shared: &Shared) -> u32 {
        (0..16).filter(|p| self.input(shared, *p)).fold(0, |acc, p| acc | (1 << p))
    }

    /// Output pins (general-purpose output mode) and their levels.
    fn outputs(&self) -> (u16, u16) {
        let mut mask = 0u16;
        for p in 0..16 {
            if self.mode(p) == 1 {
                mask |= 1 << p;
            }
        }
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

    /// ODR as written (for diagnosis).
    pub fn odr(&self) -> u32 {
        self.odr
    }
    pub fn moder(&self) -> u32 {
        self.moder
    }
}

impl Device<Shared> for Gpio {
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
            MODER => self.moder,
            OTYPER => self.otyper,
            OSPEEDR => self.ospeedr,
            PUPDR => self.pupdr,
            IDR => self.idr(cx.shared),
            ODR => self.odr,
            LCKR => self.lckr,
            AFRL => self.afr[0],
            AFRH => self.afr[1],
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
            MODER => self.moder = merge_lane(self.moder, offset, size, value),
            OTYPER => self.otyper = merge_lane(self.otyper, offset, size, value) & 0xFFFF,
            OSPEEDR => self.ospeedr = merge_lane(self.ospeedr, offset, size, value),
            PUPDR => self.pupdr = merge_lane(self.pupdr, offset, size, value),
            ODR => self.odr = merge_lane(self.odr, offset, size, value) & 0xFFFF,
            BSRR => {
                // Set bits win over reset bits (RM0444 7.4.7).
                let v = merge_lane(0, offset, size, value);
                self.odr = ((self.odr & !(v >> 16)) | v) & 0xFFFF;
            }
            BRR => {
                let v = merge_lane(0, offset, size, value);
                self.odr &= !(v & 0xFFFF);
            }
            LCKR => self.lckr = merge_lane(self.lckr, offset, size, value),
            AFRL => self.afr[0] = merge_lane(self.afr[0], offset, size, value),
            AFRH => self.afr[1] = merge_lane(self.afr[1], offset, size, value),
            _ => {}
        }
        self.report(cx);
        Ok(())
    }

    fn reset(&mut self, _: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        self.reset_values();
        self.report(cx);
    }
}
