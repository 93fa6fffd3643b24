//! RCC: reset and clock control of the STM32G0 (RM0444 chapter 5).
//!
//! Modelled: the clock-enable registers that gate other peripherals (IOPENR, AHBENR, APBENR1/2;
//! RM0444 5.4.13-5.4.15), peripheral reset registers (a set bit resets the peripheral, RM0444
//! 5.4.9-5.4.12), the system clock switch between HSISYS (HSI16 / HSIDIV), PLLRCLK and LSI with
//! the AHB/APB prescalers (RM0444 5.2, 5.4.1, 5.4.3, 5.4.4), the USART kernel clock selection
//! (RCC_CCIPR, RM0444 5.4.21), and RCC_CSR with LSI control and the reset flags PINRSTF,
//! PWRRSTF (POR/BOR), SFTRSTF, IWDGRSTF, WWDGRSTF, OBLRSTF, LPWRRSTF and RMVF (RM0444 5.4.23).
//!
//! The virtual board has no HSE crystal or LSE: HSERDY and LSERDY never set, so switches to them
//! are refused as on a board without the crystal.

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size, VirtualDuration};

use super::{merge_lane, read_lane};
use crate::shared::Shared;

pub const CR: u32 = 0x00;
pub const ICSCR: u32 = 0x04;
pub const CFGR: u32 = 0x08;
pub const PLLCFGR: u32 = 0x0C;
pub const CIER: u32 = 0x18;
pub const CIFR: u32 = 0x1C;
pub const CICR: u32 = 0x20;
pub const IOPRSTR: u32 = 0x24;
pub const APBRSTR2: u32 = 0x30;
pub const IOPENR: u32 = 0x34;
pub const APBENR2: u32 = 0x40;
pub const IOPSMENR: u32 = 0x44;
pub const APBSMENR2: u32 = 0x50;
pub const CCIPR: u32 = 0x54;
pub const CCIPR2: u32 = 0x58;
pub const BDCR: u32 = 0x5C;
pub const CSR: u32 = 0x60;

// RCC_CSR (RM0444 5.4.23).
pub const CSR_LSION: u32 = 1 << 0;
pub const CSR_LSIRDY: u32 = 1 << 1;
pub const CSR_RMVF: u32 = 1 << 23;
pub const CSR_OBLRSTF: u32 = 1 << 25;
pub const CSR_PINRSTF: u32 = 1 << 26;
pub const CSR_PWRRSTF: u32 = 1 << 27;
pub const CSR_SFTRSTF: u32 = 1 << 28;
pub const CSR_IWDGRSTF: u32 = 1 << 29;
pub const CSR_WWDGRSTF: u32 = 1 << 30;
pub const CSR_LPWRRSTF: u32 = 1 << 31;
const CSR_FLAGS: u32 = 0xFE00_0000;

// RCC_CR (RM0444 5.4.1).
const CR_HSION: u32 = 1 << 8;
const CR_HSIKERON: u32 = 1 << 9;
const CR_HSIRDY: u32 = 1 << 10;
const CR_HSIDIV: u32 = 0x7 << 11;
const CR_HSEON: u32 = 1 << 16;
const CR_PLLON: u32 = 1 << 24;
const CR_PLLRDY: u32 = 1 << 25;

const TAG_PLL_LOCK: u32 = 1;
/// UNVERIFIED: PLL lock time (DS12232 lists tLOCK for the PLL; 40 us taken as its maximum).
const PLL_LOCK: VirtualDuration = VirtualDuration::from_us(40);

/// Names of the reset-flag bits, for diagnosis.
pub fn reset_flag_names(csr: u32) -> Vec<&'static str> {
    [
        (CSR_OBLRSTF, "OBL"),
        (CSR_PINRSTF, "PIN"),
        (CSR_PWRRSTF, "PWR"),
        (CSR_SFTRSTF, "SFT"),
        (CSR_IWDGRSTF, "IWDG"),
        (CSR_WWDGRSTF, "WWDG"),
        (CSR_LPWRRSTF, "LPWR"),
    ]
    .iter()
    .filter(|(b, _)| csr & b != 0)
    .map(|(_, n)| *n)
    .collect()
}

/// Offset of an RCC register named in chip data (`clock: APBENR2.14`), for the ROM model's
/// clock-gate writes (RM0444 5.4.9-5.4.15).
pub fn offset_of(register: &str) -> Option<u32> {
    Some(match register {
        "IOPRSTR" => IOPRSTR,
        "AHBRSTR" => 0x28,
        "APBRSTR1" => 0x2C,
        "APBRSTR2" => APBRSTR2,
        "IOPENR" => IOPENR,
        "AHBENR" => 0x38,
        "APBENR1" => 0x3C,
        "APBENR2" => APBENR2,
        _ => return None,
    })
}

pub struct Rcc {
    cr: u32,
    icscr: u32,
    cfgr: u32,
    pllcfgr: u32,
    cier: u32,
    cifr: u32,
    rstr: [u32; 4],
    smenr: [u32; 4],
    ccipr2: u32,
    bdcr: u32,
    csr_lsion: bool,
}

impl Default for Rcc {
    fn default() -> Self {
        Self::new()
    }
}

impl Rcc {
    pub fn new() -> Self {
        Rcc {
            cr: CR_HSION | CR_HSIRDY,
            icscr: 0x0000_4000,
            cfgr: 0,
            pllcfgr: 0x0000_1000,
            cier: 0,
            cifr: 0,
            rstr: [0; 4],
            smenr: [0x3F, 0x0005_1301, 0xFFFF_FFFF, 0x0017_D801],
            ccipr2: 0,
            bdcr: 0,
            csr_lsion: false,
        }
    }

    /// RCC_CSR as software reads it.
    pub fn csr(&self, shared: &Shared) -> u32 {
        let lsi = self.csr_lsion || shared.rcc.lsi_forced;
        (self.csr_lsion as u32) | ((lsi as u32) << 1) | shared.rcc.csr_flags
    }

    fn hsisys_hz(&self, shared: &Shared) -> u32 {
        shared.rcc.hsi16_hz >> ((self.cr & CR_HSIDIV) >> 11)
    }

    /// PLLRCLK = (PLL input / M) * N / R (RM0444 5.2.4, 5.4.4); 0 when the PLL cannot run.
    fn pllr_hz(&self, shared: &Shared) -> u32 {
        let src = match self.pllcfgr & 3 {
            2 => shared.rcc.hsi16_hz,
            _ => 0, // none, or HSE (absent)
        };
        let m = ((self.pllcfgr >> 4) & 7) + 1;
        let n = (self.pllcfgr >> 8) & 0x7F;
        let r = ((self.pllcfgr >> 29) & 7) + 1;
        if self.pllcfgr & (1 << 28) == 0 || r < 2 {
            return 0;
        }
        ((src as u64 / m as u64) * n as u64 / r as u64) as u32
    }

    /// SYSCLK source actually in use (SWS), given the requested switch (SW) and readiness.
    fn sws(&self, shared: &Shared) -> u32 {
        let sw = self.cfgr & 7;
        let ready = match sw {
            0 => true,
            2 => self.cr & CR_PLLRDY != 0 && self.pllr_hz(shared) > 0,
            3 => self.csr_lsion || shared.rcc.lsi_forced,
            _ => false, // HSE, LSE: not fitted
        };
        if ready { sw } else { (self.cfgr >> 3) & 7 }
    }

    fn recompute_clocks(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let sws = self.sws(cx.shared);
        self.cfgr = (self.cfgr & !(7 << 3)) | (sws << 3);
        let sysclk = match sws {
            2 => self.pllr_hz(cx.shared),
            3 => cx.shared.rcc.lsi_hz,
            _ => self.hsisys_hz(cx.shared),
        };
        // HPRE (RM0444 5.4.3): 0xxx /1, 1000 /2, 1001 /4, 1010 /8, 1011 /16, 1100 /64 ... 1111 /512.
        let hpre = (self.cfgr >> 8) & 0xF;
        let hdiv = match hpre {
            0..=7 => 1,
            8..=11 => 2 << (hpre - 8),
            _ => 64 << (hpre - 12),
        };
        // PPRE: 0xx /1, 100 /2, 101 /4, 110 /8, 111 /16.
        let ppre = (self.cfgr >> 12) & 7;
        let pdiv = if ppre < 4 { 1 } else { 2 << (ppre - 4) };
        let hclk = (sysclk / hdiv).max(1);
        let r = &mut cx.shared.rcc;
        r.sysclk_hz = sysclk.max(1);
        r.pclk_hz = (hclk / pdiv).max(1);
        if r.hclk_hz != hclk {
            r.hclk_hz = hclk;
            cx.set_core_clock(hclk);
        }
    }

    fn rstr_write(&mut self, idx: usize, value: u32, cx: &mut DeviceCx<'_, Shared>) {
        let rising = value & !self.rstr[idx];
        self.rstr[idx] = value;
        for bit in 0..32 {
            if rising & (1 << bit) != 0 {
                cx.shared.rcc.reset_count[idx][bit] = cx.shared.rcc.reset_count[idx][bit].wrapping_add(1);
            }
        }
    }
}

impl Device<Shared> for Rcc {
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
            ICSCR => self.icscr,
            CFGR => self.cfgr,
            PLLCFGR => self.pllcfgr,
            CIER => self.cier,
            CIFR => self.cifr,
            CICR => 0,
            o @ IOPRSTR..=APBRSTR2 => self.rstr[((o - IOPRSTR) / 4) as usize],
            o @ IOPENR..=APBENR2 => r.enr[((o - IOPENR) / 4) as usize],
            o @ IOPSMENR..=APBSMENR2 => self.smenr[((o - IOPSMENR) / 4) as usize],
            CCIPR => r.ccipr,
            CCIPR2 => self.ccipr2,
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
        initiator: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<(), BusFaultKind> {
        let reg = offset & !3;
        let old = self.read(reg, Size::Word, initiator, cx)?;
        let v = merge_lane(old, offset, size, value);
        match reg {
            CR => {
                // HSION stays set while HSI16 feeds SYSCLK (RM0444 5.4.1); HSIRDY follows HSION
                // (startup time of a few microseconds not modelled). PLLRDY after the lock time.
                let mut cr = v & (CR_HSION | CR_HSIKERON | CR_HSIDIV | CR_HSEON | CR_PLLON);
                if (self.cfgr >> 3) & 7 == 0 {
                    cr |= CR_HSION;
                }
                if cr & CR_HSION != 0 {
                    cr |= CR_HSIRDY;
                }
                if cr & CR_PLLON != 0 && self.cr & CR_PLLON == 0 {
                    cx.schedule_in(PLL_LOCK, TAG_PLL_LOCK);
                } else if cr & CR_PLLON != 0 {
                    cr |= self.cr & CR_PLLRDY;
                } else {
                    cx.cancel(TAG_PLL_LOCK);
                }
                self.cr = cr;
                self.recompute_clocks(cx);
            }
            ICSCR => self.icscr = (self.icscr & 0xFF) | (v & 0x7F00),
            CFGR => {
                self.cfgr = (self.cfgr & (7 << 3)) | (v & !(7 << 3));
                self.recompute_clocks(cx);
            }
            // Writable only while the PLL is off (RM0444 5.4.4).
            PLLCFGR if self.cr & CR_PLLON == 0 => self.pllcfgr = v,
            CIER => self.cier = v & 0x3F,
            CICR => self.cifr &= !v,
            o @ IOPRSTR..=APBRSTR2 => self.rstr_write(((o - IOPRSTR) / 4) as usize, v, cx),
            o @ IOPENR..=APBENR2 => cx.shared.rcc.enr[((o - IOPENR) / 4) as usize] = v,
            o @ IOPSMENR..=APBSMENR2 => self.smenr[((o - IOPSMENR) / 4) as usize] = v,
            CCIPR => cx.shared.rcc.ccipr = v,
            CCIPR2 => self.ccipr2 = v,
            BDCR => self.bdcr = v & !((1 << 1) | (1 << 11)), // LSERDY, LSECSSD never set
            CSR => {
                self.csr_lsion = v & CSR_LSION != 0;
                if v & CSR_RMVF != 0 {
                    cx.shared.rcc.csr_flags = 0;
                }
                self.recompute_clocks(cx);
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
        *self = Rcc::new();
        if cause != ResetCause::PowerOn {
            // The backup domain (BDCR) survives system resets (RM0444 5.1.3).
            self.bdcr = bdcr;
        }
        let r = &mut cx.shared.rcc;
        r.enr = [0, 0x100, 0, 0];
        r.ccipr = 0;
        r.lsi_forced = false;
        // Reset flags (RM0444 5.4.23): POR/BOR clears them and sets PWRRSTF; the NRST pulse of
        // the reset circuit sets PINRSTF (RM0444 5.1.2; internal resets: Quirks).
        let pin = if cx.shared.quirks.internal_reset_sets_pin_flag { CSR_PINRSTF } else { 0 };
        let flags = match cause {
            ResetCause::PowerOn => CSR_PWRRSTF | CSR_PINRSTF,
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
