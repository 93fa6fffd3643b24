//! RCC of the STM32G4 (RM0440 chapter 7).
//!
//! Modelled: RCC_CR (HSION/HSIRDY, PLLON/PLLRDY with a lock time, HSEON without a crystal: HSERDY
//! never sets; RM0440 7.4.1), RCC_CFGR (SW/SWS between HSI16 and the PLL, HPRE, PPRE1, PPRE2;
//! 7.4.3), RCC_PLLCFGR (PLLSRC HSI16, PLLM, PLLN, PLLR; 7.4.4), the reset registers AHB1RSTR,
//! AHB2RSTR, APB1RSTR1, APB2RSTR (7.4.9-7.4.14), the clock gates AHB1ENR (reset 0x100: FLASHEN),
//! AHB2ENR (GPIO), APB1ENR1, APB2ENR (7.4.15-7.4.20), CCIPR (USART kernel clocks, 7.4.26), BDCR
//! stored, RCC_CSR with LSION/LSIRDY, RMVF and the reset flags (7.4.29).
//!
//! Not modelled: HSE (no crystal), HSI48, CSS, MCO, the PLL P/Q outputs, low-power enables
//! (stored), AHB3 / APB1ENR2 gates (stored, gate nothing), separate APB1 / APB2 kernel clocks of
//! the USARTs (both read PCLK1).

use std::collections::BTreeMap;

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size, VirtualDuration};

use crate::periph::{merge_lane, read_lane};
use crate::shared::Shared;

pub const CR: u32 = 0x00;
pub const CFGR: u32 = 0x08;
pub const PLLCFGR: u32 = 0x0C;
pub const AHB1RSTR: u32 = 0x28;
pub const AHB2RSTR: u32 = 0x2C;
pub const APB1RSTR1: u32 = 0x38;
pub const APB2RSTR: u32 = 0x40;
pub const AHB1ENR: u32 = 0x48;
pub const AHB2ENR: u32 = 0x4C;
pub const APB1ENR1: u32 = 0x58;
pub const APB2ENR: u32 = 0x60;
pub const CCIPR: u32 = 0x88;
pub const BDCR: u32 = 0x90;
pub const CSR: u32 = 0x94;

// RCC_CR (RM0440 7.4.1): reset 0x0000_0500 (HSION, HSIRDY).
const CR_HSION: u32 = 1 << 8;
const CR_HSIRDY: u32 = 1 << 10;
const CR_PLLON: u32 = 1 << 24;
const CR_PLLRDY: u32 = 1 << 25;
const CR_RESET: u32 = CR_HSION | CR_HSIRDY;
/// Writable: HSION, HSIKERON, HSEON, HSEBYP, CSSON, PLLON.
const CR_WRITABLE: u32 = CR_HSION | (1 << 9) | (1 << 16) | (1 << 18) | (1 << 19) | CR_PLLON;

/// RCC_CFGR reset value: SW = SWS = 01, HSI16 (RM0440 7.4.3).
const CFGR_RESET: u32 = 0x0000_0005;
/// RCC_PLLCFGR reset value: PLLN = 16 (RM0440 7.4.4).
const PLLCFGR_RESET: u32 = 0x0000_1000;

// RCC_CSR (RM0440 7.4.29).
pub const CSR_LSION: u32 = 1 << 0;
pub const CSR_RMVF: u32 = 1 << 23;
pub const CSR_OBLRSTF: u32 = 1 << 25;
pub const CSR_PINRSTF: u32 = 1 << 26;
pub const CSR_BORRSTF: u32 = 1 << 27;
pub const CSR_SFTRSTF: u32 = 1 << 28;
pub const CSR_IWDGRSTF: u32 = 1 << 29;
pub const CSR_WWDGRSTF: u32 = 1 << 30;
pub const CSR_LPWRRSTF: u32 = 1 << 31;
const CSR_FLAGS: u32 = 0xFE00_0000;

/// AHB1ENR reset value: FLASHEN (RM0440 7.4.15).
pub const AHB1ENR_RESET: u32 = 0x100;

const TAG_PLL_LOCK: u32 = 1;
/// UNVERIFIED: PLL lock time (DS12288 tLOCK 40 us max, from memory).
const PLL_LOCK: VirtualDuration = VirtualDuration::from_us(40);

/// Slots of [`crate::shared::RccShared::enr`] / `reset_count` that the G4 registers use: AHB2
/// (GPIO ports) in the G0's IOP slot, AHB1, APB1 (ENR1), APB2.
const SLOT_AHB2: usize = 0;
const SLOT_AHB1: usize = 1;
const SLOT_APB1: usize = 2;
const SLOT_APB2: usize = 3;

/// Offset of an RCC register named in chip data (`clock: AHB2ENR.0`), for the ROM model's
/// clock-gate writes.
pub fn offset_of(register: &str) -> Option<u32> {
    Some(match register {
        "AHB1RSTR" => AHB1RSTR,
        "AHB2RSTR" => AHB2RSTR,
        "APB1RSTR1" => APB1RSTR1,
        "APB2RSTR" => APB2RSTR,
        "AHB1ENR" => AHB1ENR,
        "AHB2ENR" => AHB2ENR,
        "APB1ENR1" => APB1ENR1,
        "APB2ENR" => APB2ENR,
        _ => return None,
    })
}

pub struct RccG4 {
    cr: u32,
    cfgr: u32,
    pllcfgr: u32,
    /// Reset registers by slot.
    rstr: [u32; 4],
    bdcr: u32,
    csr_lsion: bool,
    /// Registers kept as written (ICSCR, CIER, AHB3ENR, APB1ENR2, low-power enables, CCIPR2 ...).
    stored: BTreeMap<u32, u32>,
}

impl Default for RccG4 {
    fn default() -> Self {
        Self::new()
    }
}

impl RccG4 {
    pub fn new() -> Self {
        RccG4 {
            cr: CR_RESET,
            cfgr: CFGR_RESET,
            pllcfgr: PLLCFGR_RESET,
            rstr: [0; 4],
            bdcr: 0,
            csr_lsion: false,
            stored: BTreeMap::new(),
        }
    }

    /// RCC_CSR as software reads it.
    pub fn csr(&self, shared: &Shared) -> u32 {
        let lsi = self.csr_lsion || shared.rcc.lsi_forced;
        (self.csr_lsion as u32) | ((lsi as u32) << 1) | (shared.rcc.csr_flags & CSR_FLAGS)
    }

    /// PLL R output: HSI16 / (PLLM + 1) * PLLN / (2 * (PLLR + 1)) (RM0440 7.4.4); 0 when the
    /// source is not HSI16 (HSE never runs) or R is disabled.
    fn pll_hz(&self, shared: &Shared) -> u32 {
        let p = self.pllcfgr;
        if p & 3 != 2 || p & (1 << 24) == 0 {
            return 0;
        }
        let m = ((p >> 4) & 0xF) + 1;
        let n = (p >> 8) & 0x7F;
        let r = 2 * (((p >> 25) & 3) + 1);
        ((shared.rcc.hsi16_hz as u64 / m as u64 * n as u64) / r as u64) as u32
    }

    /// SWS follows SW when the selected clock runs (01 HSI16, 10 HSE, 11 PLL).
    fn sws(&self, shared: &Shared) -> u32 {
        let sw = self.cfgr & 3;
        let ready = match sw {
            1 => true,
            3 => self.cr & CR_PLLRDY != 0 && self.pll_hz(shared) > 0,
            _ => false,
        };
        if ready { sw } else { (self.cfgr >> 2) & 3 }
    }

    fn recompute_clocks(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let sws = self.sws(cx.shared);
        self.cfgr = (self.cfgr & !(3 << 2)) | (sws << 2);
        let sysclk = if sws == 3 { self.pll_hz(cx.shared) } else { cx.shared.rcc.hsi16_hz };
        // HPRE: 0xxx /1, 1000 /2 .. 1011 /16, 1100 /64 .. 1111 /512.
        let hpre = (self.cfgr >> 4) & 0xF;
        let hdiv = match hpre {
            0..=7 => 1,
            8..=11 => 2 << (hpre - 8),
            _ => 64 << (hpre - 12),
        };
        // PPRE1 [10:8], PPRE2 [13:11]: 0xx /1, 100 /2 .. 111 /16.
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

    /// A reset register write: rising bits pulse the peripherals' reset.
    fn rstr_write(&mut self, slot: usize, value: u32, cx: &mut DeviceCx<'_, Shared>) {
        let rising = value & !self.rstr[slot];
        self.rstr[slot] = value;
        for bit in 0..32 {
            if rising & (1 << bit) != 0 {
                let c = &mut cx.shared.rcc.reset_count[slot][bit];
                *c = c.wrapping_add(1);
            }
        }
    }
}

fn rstr_slot(reg: u32) -> Option<usize> {
    match reg {
        AHB1RSTR => Some(SLOT_AHB1),
        AHB2RSTR => Some(SLOT_AHB2),
        APB1RSTR1 => Some(SLOT_APB1),
        APB2RSTR => Some(SLOT_APB2),
        _ => None,
    }
}

fn enr_slot(reg: u32) -> Option<usize> {
    match reg {
        AHB1ENR => Some(SLOT_AHB1),
        AHB2ENR => Some(SLOT_AHB2),
        APB1ENR1 => Some(SLOT_APB1),
        APB2ENR => Some(SLOT_APB2),
        _ => None,
    }
}

impl Device<Shared> for RccG4 {
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
        let reg = offset & !3;
        let v = match reg {
            CR => self.cr,
            CFGR => self.cfgr,
            PLLCFGR => self.pllcfgr,
            CCIPR => cx.shared.rcc.ccipr,
            BDCR => self.bdcr,
            CSR => self.csr(cx.shared),
            r => match (rstr_slot(r), enr_slot(r)) {
                (Some(s), _) => self.rstr[s],
                (_, Some(s)) => cx.shared.rcc.enr[s],
                _ => self.stored.get(&r).copied().unwrap_or(0),
            },
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
                // HSI16 cannot stop while it clocks the system (RM0440 7.4.1 HSION).
                let hsion = v & CR_HSION != 0 || self.sws(cx.shared) == 1;
                self.cr = (self.cr & !CR_WRITABLE) | (v & CR_WRITABLE);
                self.cr = if hsion { self.cr | CR_HSION | CR_HSIRDY } else { self.cr & !(CR_HSION | CR_HSIRDY) };
                if self.cr & CR_PLLON != 0 && old & CR_PLLON == 0 {
                    cx.schedule_in(PLL_LOCK, TAG_PLL_LOCK);
                }
                if self.cr & CR_PLLON == 0 {
                    cx.cancel(TAG_PLL_LOCK);
                    // The PLL cannot stop while it is the system clock.
                    if self.sws(cx.shared) == 3 {
                        self.cr |= CR_PLLON;
                    } else {
                        self.cr &= !CR_PLLRDY;
                    }
                }
                self.recompute_clocks(cx);
            }
            CFGR => {
                let v = merge_lane(self.cfgr, offset, size, value);
                self.cfgr = (self.cfgr & (3 << 2)) | (v & !(3 << 2));
                self.recompute_clocks(cx);
            }
            // Writable only while the PLL is off (RM0440 7.4.4).
            PLLCFGR if self.cr & CR_PLLON == 0 => {
                self.pllcfgr = merge_lane(self.pllcfgr, offset, size, value);
            }
            PLLCFGR => {}
            CCIPR => {
                let c = &mut cx.shared.rcc.ccipr;
                *c = merge_lane(*c, offset, size, value);
            }
            BDCR => self.bdcr = merge_lane(self.bdcr, offset, size, value) & !(1 << 1), // LSERDY never sets
            CSR => {
                let v = merge_lane(self.csr(cx.shared), offset, size, value);
                self.csr_lsion = v & CSR_LSION != 0;
                // RMVF clears the reset flags (RM0440 7.4.29).
                if v & CSR_RMVF != 0 {
                    cx.shared.rcc.csr_flags = 0;
                }
            }
            r => {
                if let Some(s) = rstr_slot(r) {
                    let v = merge_lane(self.rstr[s], offset, size, value);
                    self.rstr_write(s, v, cx);
                } else if let Some(s) = enr_slot(r) {
                    let e = &mut cx.shared.rcc.enr[s];
                    *e = merge_lane(*e, offset, size, value);
                } else if r < 0xA0 {
                    let e = self.stored.entry(r).or_insert(0);
                    *e = merge_lane(*e, offset, size, value);
                }
            }
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
        *self = RccG4::new();
        if cause != ResetCause::PowerOn {
            // The backup domain survives system resets (RM0440 7.1.3).
            self.bdcr = bdcr;
        }
        let r = &mut cx.shared.rcc;
        r.enr = [0, AHB1ENR_RESET, 0, 0];
        r.ccipr = 0;
        r.lsi_forced = false;
        // Reset flags (RM0440 7.4.29): BOR clears them and sets BORRSTF; the reset circuit pulses
        // NRST for internal resets, setting PINRSTF (RM0440 7.1.2; switchable as on the G0).
        let pin = if cx.shared.quirks.internal_reset_sets_pin_flag { CSR_PINRSTF } else { 0 };
        let flags = match cause {
            ResetCause::PowerOn => CSR_BORRSTF | CSR_PINRSTF,
            ResetCause::Pin => CSR_PINRSTF,
            ResetCause::Software => CSR_SFTRSTF | pin,
            ResetCause::IndependentWatchdog => CSR_IWDGRSTF | pin,
            ResetCause::WindowWatchdog => CSR_WWDGRSTF | pin,
            ResetCause::OptionByteLoad => CSR_OBLRSTF | pin,
            ResetCause::LowPower => CSR_LPWRRSTF | pin,
        };
        if cause == ResetCause::PowerOn {
            r.csr_flags = 0;
        }
        r.csr_flags = (r.csr_flags | flags) & CSR_FLAGS;
        self.recompute_clocks(cx);
    }
}
