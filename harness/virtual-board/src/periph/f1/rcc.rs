//! RCC of the STM32F1 (RM0008 chapter 7).
//!
//! Modelled: RCC_CR (HSION/HSIRDY reset state, PLLON/PLLRDY with a lock time, HSEON without a
//! crystal: HSERDY never sets), RCC_CFGR (SW/SWS between HSI and the PLL fed by HSI/2, HPRE,
//! PPRE1, PPRE2, PLLMUL; RM0008 7.3.2), the peripheral reset registers APB2RSTR / APB1RSTR
//! (RM0008 7.3.4, 7.3.5), the clock gates AHBENR (reset 0x14: SRAM and FLITF clocks on),
//! APB2ENR, APB1ENR (RM0008 7.3.6-7.3.8), BDCR stored, and RCC_CSR with LSION/LSIRDY, RMVF and
//! the reset flags PINRSTF, PORRSTF, SFTRSTF, IWDGRSTF, WWDGRSTF, LPWRRSTF (RM0008 7.3.10).
//!
//! Not modelled: HSE (no crystal on the virtual board), clock security system, MCO, ADC prescaler
//! effects, interrupts of RCC_CIR (stored).

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size, VirtualDuration};

use crate::periph::{merge_lane, read_lane};
use crate::shared::Shared;

pub const CR: u32 = 0x00;
pub const CFGR: u32 = 0x04;
pub const CIR: u32 = 0x08;
pub const APB2RSTR: u32 = 0x0C;
pub const APB1RSTR: u32 = 0x10;
pub const AHBENR: u32 = 0x14;
pub const APB2ENR: u32 = 0x18;
pub const APB1ENR: u32 = 0x1C;
pub const BDCR: u32 = 0x20;
pub const CSR: u32 = 0x24;

// RCC_CR (RM0008 7.3.1): reset value 0x0000_XX83 (HSITRIM = 16, HSIRDY, HSION).
const CR_HSION: u32 = 1 << 0;
const CR_HSIRDY: u32 = 1 << 1;
const CR_RESET: u32 = 0x0000_0083;
const CR_PLLON: u32 = 1 << 24;
const CR_PLLRDY: u32 = 1 << 25;
/// Writable bits: HSION, HSITRIM, HSEON, HSEBYP, CSSON, PLLON.
const CR_WRITABLE: u32 = 0x0000_00F9 | (1 << 16) | (1 << 18) | (1 << 19) | CR_PLLON;

// RCC_CSR (RM0008 7.3.10).
pub const CSR_LSION: u32 = 1 << 0;
pub const CSR_RMVF: u32 = 1 << 24;
pub const CSR_PINRSTF: u32 = 1 << 26;
pub const CSR_PORRSTF: u32 = 1 << 27;
pub const CSR_SFTRSTF: u32 = 1 << 28;
pub const CSR_IWDGRSTF: u32 = 1 << 29;
pub const CSR_WWDGRSTF: u32 = 1 << 30;
pub const CSR_LPWRRSTF: u32 = 1 << 31;
/// PINRSTF..LPWRRSTF; bit 25 is reserved on the F1 (no OBLRSTF).
const CSR_FLAGS: u32 = 0xFC00_0000;

/// AHBENR reset value: SRAMEN and FLITFEN (RM0008 7.3.6).
pub const AHBENR_RESET: u32 = 0x14;

const TAG_PLL_LOCK: u32 = 1;
/// UNVERIFIED: PLL lock time (DS5319 5.3.x tLOCK 200 us max, from memory).
const PLL_LOCK: VirtualDuration = VirtualDuration::from_us(200);

/// Slots of [`crate::shared::RccShared::enr`] / `reset_count` (the G0 layout: 1 AHB, 2 APB1, 3 APB2).
const SLOT_AHB: usize = 1;
const SLOT_APB1: usize = 2;
const SLOT_APB2: usize = 3;

/// Offset of an RCC register named in chip data (`clock: APB2ENR.14`), for the ROM model's
/// clock-gate writes (RM0008 7.3.4-7.3.8).
pub fn offset_of(register: &str) -> Option<u32> {
    Some(match register {
        "APB2RSTR" => APB2RSTR,
        "APB1RSTR" => APB1RSTR,
        "AHBENR" => AHBENR,
        "APB2ENR" => APB2ENR,
        "APB1ENR" => APB1ENR,
        _ => return None,
    })
}

pub struct RccF1 {
    cr: u32,
    cfgr: u32,
    cir: u32,
    apb2rstr: u32,
    apb1rstr: u32,
    bdcr: u32,
    csr_lsion: bool,
}

impl Default for RccF1 {
    fn default() -> Self {
        Self::new()
    }
}

impl RccF1 {
    pub fn new() -> Self {
        RccF1 { cr: CR_RESET, cfgr: 0, cir: 0, apb2rstr: 0, apb1rstr: 0, bdcr: 0, csr_lsion: false }
    }

    /// RCC_CSR as software reads it.
    pub fn csr(&self, shared: &Shared) -> u32 {
        let lsi = self.csr_lsion || shared.rcc.lsi_forced;
        (self.csr_lsion as u32) | ((lsi as u32) << 1) | (shared.rcc.csr_flags & CSR_FLAGS)
    }

    /// PLL output: PLLSRC = 0 takes HSI / 2, PLLMUL 0000 = x2 .. 1110/1111 = x16 (RM0008 7.3.2).
    fn pll_hz(&self, shared: &Shared) -> u32 {
        let mul = ((self.cfgr >> 18) & 0xF).min(14) + 2;
        // PLLSRC = 1 (HSE) never runs: no crystal.
        if self.cfgr & (1 << 16) != 0 { 0 } else { (shared.rcc.hsi16_hz / 2) * mul }
    }

    /// SWS follows SW when the selected clock is ready (RM0008 7.3.2: 00 HSI, 01 HSE, 10 PLL).
    fn sws(&self, shared: &Shared) -> u32 {
        let sw = self.cfgr & 3;
        let ready = match sw {
            0 => true,
            2 => self.cr & CR_PLLRDY != 0 && self.pll_hz(shared) > 0,
            _ => false,
        };
        if ready { sw } else { (self.cfgr >> 2) & 3 }
    }

    fn recompute_clocks(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let sws = self.sws(cx.shared);
        self.cfgr = (self.cfgr & !(3 << 2)) | (sws << 2);
        let sysclk = if sws == 2 { self.pll_hz(cx.shared) } else { cx.shared.rcc.hsi16_hz };
        // HPRE (RM0008 7.3.2): 0xxx /1, 1000 /2 .. 1011 /16, 1100 /64 .. 1111 /512.
        let hpre = (self.cfgr >> 4) & 0xF;
        let hdiv = match hpre {
            0..=7 => 1,
            8..=11 => 2 << (hpre - 8),
            _ => 64 << (hpre - 12),
        };
        // PPRE1 [10:8], PPRE2 [13:11]: 0xx /1, 100 /2, 101 /4, 110 /8, 111 /16.
        let pdiv = |p: u32| if p < 4 { 1 } else { 2 << (p - 4) };
        let hclk = (sysclk / hdiv).max(1);
        let r = &mut cx.shared.rcc;
        r.sysclk_hz = sysclk.max(1);
        r.pclk_hz = (hclk / pdiv((self.cfgr >> 8) & 7)).max(1);
        r.pclk2_hz = (hclk / pdiv((self.cfgr >> 11) & 7)).max(1);
        if r.hclk_hz != hclk {
            r.hclk_hz = hclk;
            cx.set_core_clock(hclk);
        }
    }

    /// A peripheral reset register write: rising bits pulse the peripherals' reset.
    fn rstr_write(old: &mut u32, slot: usize, value: u32, cx: &mut DeviceCx<'_, Shared>) {
        let rising = value & !*old;
        *old = value;
        for bit in 0..32 {
            if rising & (1 << bit) != 0 {
                let c = &mut cx.shared.rcc.reset_count[slot][bit];
                *c = c.wrapping_add(1);
            }
        }
    }
}

impl Device<Shared> for RccF1 {
    fn name(&self) -> &str {
        "RCC"
    }

    fn read(
        &mut self,
        offset: u32,
        size: Size,
        _: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<u32, BusFaultKind> {
        let r = &cx.shared.rcc;
        let v = match offset & !3 {
            CR => self.cr,
            CFGR => self.cfgr,
            CIR => self.cir,
            APB2RSTR => self.apb2rstr,
            APB1RSTR => self.apb1rstr,
            AHBENR => r.enr[SLOT_AHB],
            APB2ENR => r.enr[SLOT_APB2],
            APB1ENR => r.enr[SLOT_APB1],
            BDCR => self.bdcr,
            CSR => self.csr(cx.shared),
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
        let reg = offset & !3;
        match reg {
            CR => {
                let v = merge_lane(self.cr, offset, size, value);
                let old = self.cr;
                // HSI cannot be switched off while it clocks the system (RM0008 7.3.1 HSION).
                let hsion = v & CR_HSION != 0 || self.sws(cx.shared) == 0;
                self.cr = (self.cr & !CR_WRITABLE) | (v & CR_WRITABLE);
                self.cr = if hsion { self.cr | CR_HSION | CR_HSIRDY } else { self.cr & !(CR_HSION | CR_HSIRDY) };
                if self.cr & CR_PLLON != 0 && old & CR_PLLON == 0 {
                    cx.schedule_in(PLL_LOCK, TAG_PLL_LOCK);
                }
                if self.cr & CR_PLLON == 0 {
                    cx.cancel(TAG_PLL_LOCK);
                    // The PLL cannot stop while it is the system clock (RM0008 7.3.1 PLLON).
                    if self.sws(cx.shared) == 2 {
                        self.cr |= CR_PLLON;
                    } else {
                        self.cr &= !CR_PLLRDY;
                    }
                }
                self.recompute_clocks(cx);
            }
            CFGR => {
                let v = merge_lane(self.cfgr, offset, size, value);
                // SWS is read-only; PLL configuration bits only change while the PLL is off.
                let mut keep = 3 << 2;
                if self.cr & CR_PLLON != 0 {
                    keep |= 0x3F << 16;
                }
                self.cfgr = (self.cfgr & keep) | (v & !keep);
                self.recompute_clocks(cx);
            }
            CIR => self.cir = merge_lane(self.cir, offset, size, value) & 0x0000_1F00,
            APB2RSTR => {
                let v = merge_lane(self.apb2rstr, offset, size, value);
                Self::rstr_write(&mut self.apb2rstr, SLOT_APB2, v, cx);
            }
            APB1RSTR => {
                let v = merge_lane(self.apb1rstr, offset, size, value);
                Self::rstr_write(&mut self.apb1rstr, SLOT_APB1, v, cx);
            }
            AHBENR => {
                let e = &mut cx.shared.rcc.enr[SLOT_AHB];
                *e = merge_lane(*e, offset, size, value);
            }
            APB2ENR => {
                let e = &mut cx.shared.rcc.enr[SLOT_APB2];
                *e = merge_lane(*e, offset, size, value);
            }
            APB1ENR => {
                let e = &mut cx.shared.rcc.enr[SLOT_APB1];
                *e = merge_lane(*e, offset, size, value);
            }
            BDCR => self.bdcr = merge_lane(self.bdcr, offset, size, value),
            CSR => {
                let v = merge_lane(self.csr(cx.shared), offset, size, value);
                self.csr_lsion = v & CSR_LSION != 0;
                // RMVF clears the reset flags (RM0008 7.3.10).
                if v & CSR_RMVF != 0 {
                    cx.shared.rcc.csr_flags = 0;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn event(&mut self, tag: u32, cx: &mut DeviceCx<'_, Shared>) {
        if tag == TAG_PLL_LOCK && self.cr & CR_PLLON != 0 {
            self.cr |= CR_PLLRDY;
            self.recompute_clocks(cx);
        }
    }

    fn reset(&mut self, cause: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        let bdcr = self.bdcr;
        *self = RccF1::new();
        if cause != ResetCause::PowerOn {
            // The backup domain survives system resets (RM0008 7.1.3).
            self.bdcr = bdcr;
        }
        let r = &mut cx.shared.rcc;
        r.enr = [0, AHBENR_RESET, 0, 0];
        r.lsi_forced = false;
        // Reset flags (RM0008 7.3.10): POR clears them and sets PORRSTF; the reset circuit drives
        // NRST low for every internal reset, setting PINRSTF too (RM0008 7.1.2 Figure 4;
        // `internal_reset_sets_pin_flag` switches it, as on the G0).
        let pin = if cx.shared.quirks.internal_reset_sets_pin_flag { CSR_PINRSTF } else { 0 };
        let flags = match cause {
            ResetCause::PowerOn => CSR_PORRSTF | CSR_PINRSTF,
            ResetCause::Pin => CSR_PINRSTF,
            ResetCause::Software | ResetCause::OptionByteLoad => CSR_SFTRSTF | pin,
            ResetCause::IndependentWatchdog => CSR_IWDGRSTF | pin,
            ResetCause::WindowWatchdog => CSR_WWDGRSTF | pin,
            ResetCause::LowPower => CSR_LPWRRSTF | pin,
        };
        if cause == ResetCause::PowerOn {
            r.csr_flags = 0;
        }
        r.csr_flags = (r.csr_flags | flags) & CSR_FLAGS;
        self.recompute_clocks(cx);
    }
}
