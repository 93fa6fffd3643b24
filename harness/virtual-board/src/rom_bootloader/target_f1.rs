//! The ROM's flash work on an STM32F1 (flash-f1 controller): what the F1 ROM does through the
//! FPEC registers (PM0075): unlock with KEYR (2.3.1), half-word programming with PG and BSY
//! polling (2.3.3), page erase with PER / AR / STRT and mass erase with MER / STRT (2.3.4), option
//! bytes erased with OPTER and programmed with OPTPG after the OPTKEYR sequence (2.5), errors from
//! FLASH_SR (PGERR, WRPRTERR). The option changes take effect at the next reset, which the ROM
//! performs after the command (AN3155 Write Protect / Readout Protect: "system reset").

use std::time::Duration;

use hil_bootloader_device::{RdpLevel, TargetError};
use hil_cortex_m::Size;

use super::target::BoardTarget;
use crate::periph::flash_f1::{
    AR, CR, CR_LOCK, CR_MER, CR_OPTER, CR_OPTPG, CR_OPTWRE, CR_PER, CR_PG, CR_STRT, KEYR, OPTKEYR, RDP_KEY, SR, SR_BSY,
    SR_EOP, SR_PGERR, SR_WRPRTERR,
};
use crate::system_memory::WaitError;

/// UNVERIFIED: the RDP byte the F1 ROM programs for Readout Protect (any value but 0xA5
/// protects, PM0075 2.4.1).
const RDP_PROTECT: u8 = 0x00;

impl BoardTarget<'_, '_> {
    fn f1_base(&self) -> Result<u32, TargetError> {
        self.chip.flash_controller.as_ref().map(|f| f.base).ok_or(TargetError::Unsupported("no FLASH controller data"))
    }

    fn f1_rd(&mut self, addr: u32) -> Result<u32, TargetError> {
        self.cx.read(addr, Size::Word).map_err(|f| TargetError::Controller(format!("read {addr:#010x}: {f}")))
    }

    fn f1_wr(&mut self, addr: u32, value: u32) -> Result<(), TargetError> {
        self.cx.write(addr, Size::Word, value).map_err(|f| TargetError::Controller(format!("write {addr:#010x}: {f}")))
    }

    /// Poll FLASH_SR.BSY, then check and clear PGERR / WRPRTERR / EOP.
    fn f1_wait(&mut self, what: &str, address: u32) -> Result<(), TargetError> {
        let sr_addr = self.f1_base()? + SR;
        let limit = self.busy_limit();
        match self.cx.wait_until(limit, |cx| cx.read(sr_addr, Size::Word).map(|sr| sr & SR_BSY == 0).unwrap_or(true)) {
            Ok(_) => {}
            Err(WaitError::Reset(cause)) => {
                self.reset_pending = true;
                return Err(TargetError::Controller(format!(
                    "{what} at {address:#010x} cut short by a {cause:?} reset"
                )));
            }
            Err(WaitError::Timeout(t)) => {
                return Err(TargetError::Controller(format!(
                    "{what} at {address:#010x}: FLASH_SR.BSY still set after {t}"
                )));
            }
        }
        let sr = self.f1_rd(sr_addr)?;
        self.f1_wr(sr_addr, sr & (SR_PGERR | SR_WRPRTERR | SR_EOP))?;
        if sr & SR_WRPRTERR != 0 {
            Err(TargetError::WriteProtected { address })
        } else if sr & SR_PGERR != 0 {
            Err(TargetError::Programming { address })
        } else {
            Ok(())
        }
    }

    /// Unlock FLASH_CR (PM0075 2.3.1) and, for option work, OPTWRE.
    fn f1_unlock(&mut self, what: &str, address: u32, options: bool) -> Result<u32, TargetError> {
        let fc = self.chip.flash_controller.as_ref().ok_or(TargetError::Unsupported("no FLASH controller data"))?;
        let (base, keys, optkeys) = (fc.base, fc.keys, fc.option_keys);
        if self.f1_rd(base + CR)? & CR_LOCK != 0 {
            self.f1_wr(base + KEYR, keys[0])?;
            self.f1_wr(base + KEYR, keys[1])?;
            if self.f1_rd(base + CR)? & CR_LOCK != 0 {
                return Err(TargetError::Controller(format!("{what} at {address:#010x}: FLASH_CR stays locked")));
            }
        }
        if options && self.f1_rd(base + CR)? & CR_OPTWRE == 0 {
            self.f1_wr(base + OPTKEYR, optkeys[0])?;
            self.f1_wr(base + OPTKEYR, optkeys[1])?;
        }
        Ok(base)
    }

    fn f1_lock(&mut self, base: u32) {
        let _ = self.f1_wr(base + CR, CR_LOCK);
    }

    /// Half-word programming of main flash (PM0075 2.3.3).
    pub(super) fn f1_write_flash(&mut self, address: u32, data: &[u8]) -> Result<Duration, TargetError> {
        if !address.is_multiple_of(2) || !data.len().is_multiple_of(2) {
            return Err(TargetError::Alignment { address });
        }
        let start = self.cx.now();
        let base = self.f1_unlock("flash programming", address, false)?;
        let r = (|| {
            self.f1_wr(base + CR, CR_PG)?;
            for (i, hw) in data.chunks_exact(2).enumerate() {
                let a = address + 2 * i as u32;
                let v = u32::from(u16::from_le_bytes([hw[0], hw[1]]));
                self.cx.write(a, Size::Half, v).map_err(|_| TargetError::Unmapped { address: a })?;
                self.f1_wait("flash programming", a)?;
            }
            Ok(())
        })();
        let _ = self.f1_wr(base + CR, 0);
        self.f1_lock(base);
        r.map(|()| (self.cx.now() - start).to_std())
    }

    /// Page erase (PER, AR, STRT) or mass erase (MER, STRT), PM0075 2.3.4.
    pub(super) fn f1_erase(&mut self, what: &str, address: u32, page: bool) -> Result<Duration, TargetError> {
        let start = self.cx.now();
        let base = self.f1_unlock(what, address, false)?;
        let bit = if page { CR_PER } else { CR_MER };
        let r = (|| {
            self.f1_wr(base + CR, bit)?;
            if page {
                self.f1_wr(base + AR, address)?;
            }
            self.f1_wr(base + CR, bit | CR_STRT)?;
            self.f1_wait(what, address)
        })();
        let _ = self.f1_wr(base + CR, 0);
        self.f1_lock(base);
        r.map(|()| (self.cx.now() - start).to_std())
    }

    /// The eight option bytes as loaded now (RDP, USER, Data0, Data1, WRP0..3).
    fn f1_option_bytes(&mut self) -> Result<[u8; 8], TargetError> {
        let opt = self.chip.memory.option_bytes.base;
        let mut raw = [0u8; 16];
        self.cx.read_bytes(opt, &mut raw).map_err(|f| TargetError::Unmapped { address: f.addr })?;
        Ok(std::array::from_fn(|i| raw[2 * i]))
    }

    /// Erase the option area (OPTER), then program every byte (OPTPG) - PM0075 2.5.1, 2.5.2.
    pub(super) fn f1_program_options(&mut self, what: &str, bytes: [u8; 8]) -> Result<Duration, TargetError> {
        let start = self.cx.now();
        let opt = self.chip.memory.option_bytes.base;
        let base = self.f1_unlock(what, opt, true)?;
        let r = (|| {
            self.f1_wr(base + CR, CR_OPTER | CR_OPTWRE)?;
            self.f1_wr(base + CR, CR_OPTER | CR_OPTWRE | CR_STRT)?;
            self.f1_wait(what, opt)?;
            self.f1_wr(base + CR, CR_OPTPG | CR_OPTWRE)?;
            for (i, b) in bytes.iter().enumerate() {
                // An erased byte (0xFF) stays erased: programming it would write its complement 0x00.
                if *b == 0xFF && i != 0 {
                    continue;
                }
                let a = opt + 2 * i as u32;
                self.cx.write(a, Size::Half, u32::from(*b)).map_err(|_| TargetError::Unmapped { address: a })?;
                self.f1_wait(what, a)?;
            }
            Ok(())
        })();
        let _ = self.f1_wr(base + CR, 0);
        self.f1_lock(base);
        r.map(|()| (self.cx.now() - start).to_std())
    }

    pub(super) fn f1_write_option_image(&mut self, image: &[u8]) -> Result<Duration, TargetError> {
        let mut bytes = self.f1_option_bytes()?;
        for (i, b) in bytes.iter_mut().enumerate() {
            if let Some(v) = image.get(2 * i) {
                *b = *v;
            }
        }
        self.f1_program_options("option byte programming", bytes)
    }

    pub(super) fn f1_set_rdp(&mut self, level: RdpLevel) -> Result<Duration, TargetError> {
        let mut bytes = self.f1_option_bytes()?;
        bytes[0] = match level {
            RdpLevel::Level0 => RDP_KEY,
            RdpLevel::Level1 => RDP_PROTECT,
            RdpLevel::Level2 => return Err(TargetError::Unsupported("the STM32F1 has no RDP level 2")),
        };
        if level == RdpLevel::Level0 {
            // Unprotecting resets the other option bytes too (the F1 ROM's Readout Unprotect
            // erases the option area; UNVERIFIED whether it restores USER / WRP).
            bytes[1..].fill(0xFF);
        }
        self.f1_program_options("readout protection change", bytes)
    }

    /// Write Protect: each sector code clears one WRPR bit (4 pages on medium density, AN3155
    /// Write Protect "sector" = the product's protection granule; PM0075 2.4.2).
    pub(super) fn f1_set_wrp(&mut self, sectors: &[u8]) -> Result<Duration, TargetError> {
        let mut bytes = self.f1_option_bytes()?;
        for &s in sectors {
            if s < 32 {
                bytes[4 + (s / 8) as usize] &= !(1 << (s % 8));
            }
        }
        self.f1_program_options("write protection", bytes)
    }

    pub(super) fn f1_clear_wrp(&mut self) -> Result<Duration, TargetError> {
        let mut bytes = self.f1_option_bytes()?;
        bytes[4..].fill(0xFF);
        self.f1_program_options("write unprotection", bytes)
    }
}
