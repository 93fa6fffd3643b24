//! The ROM's hands on the chip: [`BootTarget`] for the protocol engines, carried out the way ROM
//! code does it, through the CPU's bus: memory reads, SRAM stores, and flash / option byte work
//! through the FLASH controller's registers (unlock with the KEYR / OPTKEYR sequences, PG / PER /
//! MERx / OPTSTRT, BSY1 polling, SR error flags; RM0444 3.3.6, 3.3.7, 3.4.2). Programming and
//! erase therefore take the virtual time the FLASH model gives them and fail with the errors it
//! raises (write protection, injected program errors).

use std::time::Duration;

use hil_bootloader_device::{BootTarget, Jump, RdpLevel, TargetError};
use hil_chips::{Chip, ClockGate};
use hil_cortex_m::{Size, VirtualDuration};

use crate::periph::flash::{
    ACR, CR, CR_LOCK, CR_MER1, CR_OBL_LAUNCH, CR_OPTSTRT, CR_PER, CR_PG, CR_STRT, KEYR, OPTKEYR, SR,
};
use crate::periph::flash::{SR_BSY1, SR_CFGBSY, SR_PGAERR, SR_PROGERR, SR_SIZERR, SR_WRPERR};
use crate::shared;
use crate::system_memory::{RomCx, WaitError};

/// Every FLASH_SR error flag that the ROM clears before an operation and checks after it (RM0444
/// 3.7.4: OPERR, PROGERR, WRPERR, PGAERR, SIZERR, PGSERR, MISSERR, FASTERR, RDERR, OPTVERR).
const SR_ERRORS: u32 = 0x0000_C3FA;
/// FLASH_ACR.EMPTY (RM0444 3.7.1).
pub const ACR_EMPTY: u32 = 1 << 16;

/// RCC register offsets by the names chip data uses, from the RCC model of the chip's RCC
/// version (G0 `periph::rcc`, F1 `periph::f1::rcc`, G4 `periph::g4::rcc`).
pub fn rcc_offset(chip: &Chip, register: &str) -> Option<u32> {
    match chip.peripheral("RCC").and_then(|p| p.version) {
        Some(hil_chips::PeripheralVersion::RccG4) => crate::periph::g4::rcc::offset_of(register),
        Some(hil_chips::PeripheralVersion::RccF1) => crate::periph::f1::rcc::offset_of(register),
        _ => crate::periph::rcc::offset_of(register),
    }
}

/// What a deferred request asks the model to do once the engine call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    None,
    OptionByteLoad,
    SystemReset,
}

/// [`BootTarget`] over the CPU's bus, in virtual time.
pub struct BoardTarget<'c, 'a> {
    pub cx: &'c mut RomCx<'a>,
    pub chip: &'static Chip,
    /// A device asked for a reset while the ROM waited (watchdog): the operation was abandoned.
    pub reset_pending: bool,
    /// `launch_option_bytes` / `system_reset` / `jump` calls, applied by the model afterwards.
    pub requested: Requested,
    pub jump: Option<Jump>,
}

impl<'c, 'a> BoardTarget<'c, 'a> {
    pub fn new(cx: &'c mut RomCx<'a>) -> Self {
        let chip = cx.chip();
        BoardTarget { cx, chip, reset_pending: false, requested: Requested::None, jump: None }
    }

    /// Whether the chip's flash controller is the F1 FPEC (`version: flash-f1`): its work is in
    /// [`super::target_f1`].
    pub fn is_f1(&self) -> bool {
        self.chip
            .peripherals_of(hil_chips::PeripheralKind::Flash)
            .any(|p| p.version == Some(hil_chips::PeripheralVersion::FlashF1))
    }

    fn flash_base(&self) -> Result<u32, TargetError> {
        self.chip
            .flash_controller
            .as_ref()
            .map(|f| f.base)
            .ok_or(TargetError::Unsupported("the chip data describes no FLASH controller"))
    }

    fn rd(&mut self, addr: u32) -> Result<u32, TargetError> {
        self.cx.read(addr, Size::Word).map_err(|f| TargetError::Controller(format!("read {addr:#010x}: {f}")))
    }

    fn wr(&mut self, addr: u32, value: u32) -> Result<(), TargetError> {
        self.cx.write(addr, Size::Word, value).map_err(|f| TargetError::Controller(format!("write {addr:#010x}: {f}")))
    }

    /// The longest a flash operation may keep BSY1 set before the ROM gives up: ten times the
    /// datasheet maximum of the slowest operation (mass erase), at least one second.
    pub(super) fn busy_limit(&self) -> VirtualDuration {
        let max_us =
            self.chip.flash_timing.as_ref().map_or(100_000, |t| {
                t.mass_erase_us.max.max(t.page_erase_us.max).max(t.program_double_word_us.max) as u64
            });
        VirtualDuration::from_us((max_us * 10).max(1_000_000))
    }

    /// Poll FLASH_SR until BSY1 and CFGBSY are clear (RM0444 3.3.7 step 1 and the last step).
    fn wait_not_busy(&mut self, what: &str, address: u32) -> Result<(), TargetError> {
        let sr_addr = self.flash_base()? + SR;
        let limit = self.busy_limit();
        let r = self.cx.wait_until(limit, |cx| {
            cx.read(sr_addr, Size::Word).map(|sr| sr & (SR_BSY1 | SR_CFGBSY) == 0).unwrap_or(true)
        });
        match r {
            Ok(_) => Ok(()),
            Err(WaitError::Reset(cause)) => {
                self.reset_pending = true;
                Err(TargetError::Controller(format!("{what} at {address:#010x} cut short by a {cause:?} reset")))
            }
            Err(WaitError::Timeout(t)) => {
                Err(TargetError::Controller(format!("{what} at {address:#010x}: FLASH_SR.BSY1 still set after {t}")))
            }
        }
    }

    /// FLASH_SR error flags after an operation, as the engines' error (and cleared, write 1).
    fn check_errors(&mut self, what: &str, address: u32) -> Result<(), TargetError> {
        let base = self.flash_base()?;
        let sr = self.rd(base + SR)?;
        let errors = sr & SR_ERRORS;
        if errors == 0 {
            return Ok(());
        }
        self.wr(base + SR, errors)?;
        Err(if sr & SR_WRPERR != 0 {
            TargetError::WriteProtected { address }
        } else if sr & (SR_PGAERR | SR_SIZERR) != 0 {
            TargetError::Alignment { address }
        } else if sr & SR_PROGERR != 0 {
            TargetError::Programming { address }
        } else {
            TargetError::Controller(format!("{what} at {address:#010x}: FLASH_SR = {sr:#010x}"))
        })
    }

    /// Wait for the controller, clear old error flags, unlock FLASH_CR (RM0444 3.3.6).
    fn begin(&mut self, what: &str, address: u32) -> Result<u32, TargetError> {
        let fc = self.chip.flash_controller.as_ref().ok_or(TargetError::Unsupported("no FLASH controller data"))?;
        let (base, keys) = (fc.base, fc.keys);
        self.wait_not_busy(what, address)?;
        let sr = self.rd(base + SR)?;
        if sr & SR_ERRORS != 0 {
            self.wr(base + SR, sr & SR_ERRORS)?;
        }
        if self.rd(base + CR)? & CR_LOCK != 0 {
            self.wr(base + KEYR, keys[0])?;
            self.wr(base + KEYR, keys[1])?;
            if self.rd(base + CR)? & CR_LOCK != 0 {
                return Err(TargetError::Controller(format!(
                    "{what} at {address:#010x}: FLASH_CR stays locked (a wrong key sequence locked it until reset)"
                )));
            }
        }
        Ok(base)
    }

    /// Clear the operation bits and lock FLASH_CR again.
    fn end(&mut self, base: u32) {
        if let Ok(cr) = self.rd(base + CR) {
            let _ = self.wr(base + CR, (cr & !self.op_bits()) | CR_LOCK);
        }
    }

    fn mer2(&self) -> u32 {
        self.chip.flash_controller.as_ref().and_then(|f| f.mer2_bit).map_or(0, |b| 1 << b)
    }

    /// Every FLASH_CR bit an operation sets: PG, PER, MER1/MER2, STRT and the PNB field.
    fn op_bits(&self) -> u32 {
        let fc = self.chip.flash_controller.as_ref();
        let pnb = fc.map_or(0, |f| ((1u32 << f.pnb_width) - 1) << f.pnb_shift);
        let bker = fc.and_then(|f| f.bker_bit).map_or(0, |b| 1u32 << b);
        CR_PG | CR_PER | CR_MER1 | self.mer2() | CR_STRT | pnb | bker
    }

    /// Start an erase with `bits` in FLASH_CR (then STRT), wait, check.
    fn erase(&mut self, what: &str, address: u32, bits: u32) -> Result<Duration, TargetError> {
        let start = self.cx.now();
        let base = self.begin(what, address)?;
        let r = (|| {
            let cr = self.rd(base + CR)? & !self.op_bits();
            self.wr(base + CR, cr | bits)?;
            self.wr(base + CR, cr | bits | CR_STRT)?;
            self.wait_not_busy(what, address)?;
            self.check_errors(what, address)
        })();
        self.end(base);
        r.map(|()| (self.cx.now() - start).to_std())
    }

    /// Unlock the option registers (RM0444 3.4.2: OPTKEYR after KEYR), run `f`, OPTSTRT, wait.
    fn program_options(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Self, u32) -> Result<(), TargetError>,
    ) -> Result<Duration, TargetError> {
        let start = self.cx.now();
        let opt = self.chip.memory.option_bytes.base;
        let optkeys = self
            .chip
            .flash_controller
            .as_ref()
            .ok_or(TargetError::Unsupported("no FLASH controller data"))?
            .option_keys;
        let base = self.begin(what, opt)?;
        let r = (|| {
            self.wr(base + OPTKEYR, optkeys[0])?;
            self.wr(base + OPTKEYR, optkeys[1])?;
            f(self, base)?;
            let cr = self.rd(base + CR)?;
            self.wr(base + CR, cr | CR_OPTSTRT)?;
            self.wait_not_busy(what, opt)?;
            self.check_errors(what, opt)
        })();
        self.end(base);
        r.map(|()| (self.cx.now() - start).to_std())
    }

    /// FLASH_CR bits selecting a linear page index: PNB (bank 2 pages are numbered from
    /// `bank2_first_page` on dual-bank G0 parts, RM0444 3.3.1) and, on parts with a BKER bit,
    /// the bank (STM32G4: PNB numbers pages inside the bank BKER selects, RM0440 5.3.6).
    fn page_select(&self, page: u32) -> Option<u32> {
        let f = &self.chip.memory.flash;
        let fc = self.chip.flash_controller.as_ref()?;
        let pages = f.size / f.page_size;
        if page >= pages {
            return None;
        }
        let per_bank = pages / f.banks.max(1);
        let field = ((1u32 << fc.pnb_width) - 1) << fc.pnb_shift;
        let pnb = |n: u32| (n << fc.pnb_shift) & field;
        Some(match (fc.bker_bit, fc.bank2_first_page) {
            (Some(b), _) if f.banks > 1 && page >= per_bank => pnb(page - per_bank) | (1 << b),
            (_, Some(first2)) if f.banks > 1 && page >= per_bank => pnb(first2 + page - per_bank),
            _ => pnb(page),
        })
    }

    fn option_layout(&self) -> Result<&'static hil_chips::OptionBytesLayout, TargetError> {
        self.chip.option_bytes.as_ref().ok_or(TargetError::Unsupported("the chip data has no option byte layout"))
    }

    /// Pulse an RCC reset bit (set, clear).
    pub fn rcc_reset(&mut self, gate: &ClockGate) {
        let Some(rcc) = self.chip.peripheral("RCC").map(|p| p.base) else { return };
        let Some(off) = rcc_offset(self.chip, &gate.register) else { return };
        if let Ok(v) = self.rd(rcc + off) {
            let _ = self.wr(rcc + off, v | 1 << gate.bit);
            let _ = self.wr(rcc + off, v & !(1 << gate.bit));
        }
    }

    /// Set an RCC clock-enable bit.
    pub fn rcc_enable(&mut self, gate: &ClockGate) {
        let Some(rcc) = self.chip.peripheral("RCC").map(|p| p.base) else { return };
        let Some(off) = rcc_offset(self.chip, &gate.register) else { return };
        if let Ok(v) = self.rd(rcc + off) {
            let _ = self.wr(rcc + off, v | 1 << gate.bit);
        }
    }

    /// FLASH_CR.OBL_LAUNCH (RM0444 3.4.2): reload the option bytes, which resets the chip.
    pub fn launch_obl(&mut self) {
        if self.is_f1() {
            // No OBL_LAUNCH on the F1: the system reset that follows loads the option bytes.
            return;
        }
        let Some(fc) = self.chip.flash_controller.as_ref() else { return };
        let (base, optkeys) = (fc.base, fc.option_keys);
        if self.begin("option byte loading", self.chip.memory.option_bytes.base).is_ok() {
            let _ = self.wr(base + OPTKEYR, optkeys[0]);
            let _ = self.wr(base + OPTKEYR, optkeys[1]);
            if let Ok(cr) = self.rd(base + CR) {
                let _ = self.wr(base + CR, cr | CR_OBL_LAUNCH);
            }
        }
    }

    /// Clear FLASH_ACR.EMPTY (writable by software, RM0444 3.3.2).
    pub fn clear_empty_flag(&mut self) {
        if self.is_f1() {
            return;
        }
        let Ok(base) = self.flash_base() else { return };
        if let Ok(acr) = self.rd(base + ACR) {
            let _ = self.wr(base + ACR, acr & !ACR_EMPTY);
        }
    }
}

impl BootTarget for BoardTarget<'_, '_> {
    fn read_memory(&mut self, address: u32, buf: &mut [u8]) -> Result<(), TargetError> {
        self.cx.read_bytes(address, buf).map_err(|f| TargetError::Unmapped { address: f.addr })
    }

    fn write_memory(&mut self, address: u32, data: &[u8]) -> Result<Duration, TargetError> {
        let m = &self.chip.memory;
        let len = data.len() as u64;
        let in_flash = m.flash.area().contains_range(address, len);
        let in_otp = m.otp.as_ref().is_some_and(|o| o.contains_range(address, len));
        if !in_flash && !in_otp {
            // SRAM: plain stores (the engines never pass other memories here).
            for (i, b) in data.iter().enumerate() {
                let a = address.wrapping_add(i as u32);
                self.cx.write(a, Size::Byte, u32::from(*b)).map_err(|_| TargetError::Unmapped { address: a })?;
            }
            return Ok(Duration::ZERO);
        }
        if self.is_f1() {
            return self.f1_write_flash(address, data);
        }
        // RM0444 3.3.7 standard programming: PG, two word stores per double word, BSY1 polling.
        if !address.is_multiple_of(8) || !data.len().is_multiple_of(8) {
            return Err(TargetError::Alignment { address });
        }
        let start = self.cx.now();
        let base = self.begin("flash programming", address)?;
        let r = (|| {
            let cr = self.rd(base + CR)? & !self.op_bits();
            self.wr(base + CR, cr | CR_PG)?;
            for (i, dw) in data.chunks_exact(8).enumerate() {
                let a = address + 8 * i as u32;
                let lo = u32::from_le_bytes([dw[0], dw[1], dw[2], dw[3]]);
                let hi = u32::from_le_bytes([dw[4], dw[5], dw[6], dw[7]]);
                self.cx.write(a, Size::Word, lo).map_err(|_| TargetError::Unmapped { address: a })?;
                self.cx.write(a + 4, Size::Word, hi).map_err(|_| TargetError::Unmapped { address: a + 4 })?;
                self.wait_not_busy("flash programming", a)?;
                self.check_errors("flash programming", a)?;
            }
            Ok(())
        })();
        self.end(base);
        r.map(|()| (self.cx.now() - start).to_std())
    }

    fn erase_page(&mut self, page: u32) -> Result<Duration, TargetError> {
        let f = &self.chip.memory.flash;
        let address = f.base + page * f.page_size;
        if self.is_f1() {
            if page >= f.size / f.page_size {
                return Err(TargetError::Unmapped { address });
            }
            return self.f1_erase("page erase", address, true);
        }
        let Some(select) = self.page_select(page) else {
            return Err(TargetError::Unmapped { address });
        };
        self.erase("page erase", address, CR_PER | select)
    }

    fn erase_bank(&mut self, bank: u8) -> Result<Duration, TargetError> {
        let f = &self.chip.memory.flash;
        if self.is_f1() {
            return match bank {
                1 => self.f1_erase("mass erase", f.base, false),
                _ => Err(TargetError::Unsupported("bank erase of a bank this flash does not have")),
            };
        }
        match (bank, f.banks) {
            (1, _) => self.erase("bank 1 erase", f.base, CR_MER1),
            (2, 2) if self.mer2() != 0 => {
                let half = f.base + f.size / 2;
                let bits = self.mer2();
                self.erase("bank 2 erase", half, bits)
            }
            _ => Err(TargetError::Unsupported("bank erase of a bank this flash does not have")),
        }
    }

    fn mass_erase(&mut self) -> Result<Duration, TargetError> {
        let base = self.chip.memory.flash.base;
        if self.is_f1() {
            return self.f1_erase("mass erase", base, false);
        }
        let bits = CR_MER1 | self.mer2();
        self.erase("mass erase", base, bits)
    }

    fn write_option_bytes(&mut self, image: &[u8]) -> Result<Duration, TargetError> {
        if self.is_f1() {
            return self.f1_write_option_image(image);
        }
        let layout = self.option_layout()?;
        // The image is the memory-mapped option area: each word at its offset (its complement is
        // made by the hardware). Words the image does not cover keep their register value.
        let words: Vec<(u32, u32)> = layout
            .words
            .iter()
            .filter_map(|w| {
                let o = w.offset as usize;
                image.get(o..o + 4).map(|b| (w.register, u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            })
            .collect();
        self.program_options("option byte programming", |t, base| {
            for (reg, v) in words {
                t.wr(base + reg, v)?;
            }
            Ok(())
        })
    }

    fn rdp_level(&mut self) -> RdpLevel {
        match self.cx.rdp() {
            shared::RdpLevel::Level0 => RdpLevel::Level0,
            shared::RdpLevel::Level1 => RdpLevel::Level1,
            shared::RdpLevel::Level2 => RdpLevel::Level2,
        }
    }

    fn set_rdp_level(&mut self, level: RdpLevel) -> Result<Duration, TargetError> {
        if self.is_f1() {
            return self.f1_set_rdp(level);
        }
        let layout = self.option_layout()?;
        let (Some(field), Some(user)) = (layout.field("RDP"), layout.word("USER")) else {
            return Err(TargetError::Unsupported("no RDP field in the chip's option byte layout"));
        };
        let value = match level {
            RdpLevel::Level0 => u32::from(layout.rdp_levels.level0),
            // Any value but the level 0 / level 2 codes is level 1 (RM0444 3.5.1); ST tools use 0xBB.
            RdpLevel::Level1 => 0xBB,
            RdpLevel::Level2 => u32::from(layout.rdp_levels.level2),
        };
        let (field, reg) = (field.clone(), user.register);
        self.program_options("readout protection change", |t, base| {
            let v = t.rd(base + reg)?;
            t.wr(base + reg, field.set(v, value))
        })
    }

    fn set_write_protection(&mut self, sectors: &[u8]) -> Result<Duration, TargetError> {
        // Model choice (AN3155 leaves the sector-code mapping to the product): codes are page
        // numbers; bank 1 codes become the WRP1A area [min, max], bank 2 codes WRP2A.
        if self.is_f1() {
            return self.f1_set_wrp(sectors);
        }
        let layout = self.option_layout()?;
        let f = &self.chip.memory.flash;
        let per_bank = f.size / f.page_size / f.banks.max(1);
        let mut writes = Vec::new();
        for (bank, area_word) in [(1u8, "WRP1A"), (2u8, "WRP2A")] {
            let pages: Vec<u32> = sectors
                .iter()
                .map(|&s| u32::from(s))
                .filter(|&p| if bank == 1 { p < per_bank } else { p >= per_bank && p < 2 * per_bank })
                .map(|p| if bank == 1 { p } else { p - per_bank })
                .collect();
            let (Some(min), Some(max)) = (pages.iter().min(), pages.iter().max()) else { continue };
            let area = layout.wrp.iter().find(|a| a.word == area_word);
            let word = layout.word(area_word);
            let (Some(area), Some(word)) = (area, word) else {
                return Err(TargetError::Unsupported("write protection of a bank without WRP registers"));
            };
            writes.push((word.register, (min << area.start_shift) | (max << area.end_shift)));
        }
        self.program_options("write protection", |t, base| {
            for (reg, v) in writes {
                t.wr(base + reg, v)?;
            }
            Ok(())
        })
    }

    fn clear_write_protection(&mut self) -> Result<Duration, TargetError> {
        if self.is_f1() {
            return self.f1_clear_wrp();
        }
        let layout = self.option_layout()?;
        // Factory values: start > end, no page protected (RM0444 3.4.3).
        let writes: Vec<(u32, u32)> =
            layout.wrp.iter().filter_map(|a| layout.word(&a.word)).map(|w| (w.register, w.factory)).collect();
        self.program_options("write unprotection", |t, base| {
            for (reg, v) in writes {
                t.wr(base + reg, v)?;
            }
            Ok(())
        })
    }

    fn launch_option_bytes(&mut self) {
        self.requested = Requested::OptionByteLoad;
    }

    fn system_reset(&mut self) {
        self.requested = Requested::SystemReset;
    }

    fn jump(&mut self, jump: &Jump) {
        self.jump = Some(jump.clone());
    }
}
