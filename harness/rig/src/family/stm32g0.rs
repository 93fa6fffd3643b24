//! STM32G0 (RM0444) and STM32G4 (RM0440 5.4.2, 5.7: the same KEYR/OPTKEYR/SR/CR offsets, OPTSTRT
//! bit 17, OBL_LAUNCH bit 27, BSY bit 16): option bytes programmed through FLASH_OPTR.

use std::time::Duration;

use hil_bootloader_host::clock::Deadline;
use hil_chips::Chip;

use super::{OPTION_PROGRAM_BUDGET, OptionProgramming};
use crate::engine::StepCx;
use crate::probe_ops::ProbeOps;
use crate::step_error::StepError;

/// RM0444 3.7 FLASH register offsets and bits.
const KEYR: u32 = 0x08;
const OPTKEYR: u32 = 0x0C;
const SR: u32 = 0x10;
const CR: u32 = 0x14;
const SR_BSY1: u32 = 1 << 16;
/// OPTVERR, RDERR, FASTERR, MISERR, PGSERR, SIZERR, PGAERR, WRPERR, PROGERR, OPERR.
const SR_ERRORS: u32 = 0xC3FA;
const CR_OPTSTRT: u32 = 1 << 17;
const CR_OBL_LAUNCH: u32 = 1 << 27;

pub struct Stm32G0;

fn controller(chip: &Chip) -> Result<&hil_chips::FlashController, StepError> {
    chip.flash_controller
        .as_ref()
        .ok_or_else(|| StepError::unsupported(format!("{} has no flash controller data", chip.name)))
}

fn user_register(chip: &Chip) -> Result<u32, StepError> {
    let layout = chip
        .option_bytes
        .as_ref()
        .ok_or_else(|| StepError::unsupported(format!("{} has no option byte layout", chip.name)))?;
    let user = layout
        .word("USER")
        .ok_or_else(|| StepError::unsupported(format!("{}: no USER option word in the chip data", chip.name)))?;
    Ok(user.register)
}

fn read(p: &mut dyn ProbeOps, addr: u32) -> Result<u32, StepError> {
    crate::session::word_of(&p.read_memory(addr, 4)?, addr)
}

impl OptionProgramming for Stm32G0 {
    fn read_user_word(&self, chip: &Chip, probe: &mut dyn ProbeOps) -> Result<u32, StepError> {
        read(probe, controller(chip)?.base + user_register(chip)?)
    }

    /// RM0444 3.4.2: unlock FLASH_CR and the options, write FLASH_OPTR, OPTSTRT, wait for BSY1,
    /// then OBL_LAUNCH reloads the option bytes with a reset.
    fn program_user_word(
        &self,
        chip: &Chip,
        p: &mut dyn ProbeOps,
        value: u32,
        launch: bool,
        cx: &StepCx,
    ) -> Result<(), StepError> {
        let fc = controller(chip)?;
        let base = fc.base;
        let word = |p: &mut dyn ProbeOps, off: u32, v: u32| p.write_memory(base + off, &v.to_le_bytes());
        word(p, KEYR, fc.keys[0])?;
        word(p, KEYR, fc.keys[1])?;
        word(p, OPTKEYR, fc.option_keys[0])?;
        word(p, OPTKEYR, fc.option_keys[1])?;
        word(p, user_register(chip)?, value)?;
        let cr = read(p, base + CR)?;
        word(p, CR, cr | CR_OPTSTRT)?;
        let deadline = Deadline::after(cx.clock(), OPTION_PROGRAM_BUDGET.min(cx.remaining()));
        loop {
            let sr = read(p, base + SR)?;
            if sr & SR_BSY1 == 0 {
                if sr & SR_ERRORS != 0 {
                    return Err(StepError::expectation(format!("option programming failed: FLASH_SR = {sr:#010x}")));
                }
                break;
            }
            if deadline.passed() {
                return Err(StepError::expectation(format!(
                    "option programming did not finish: FLASH_SR = {sr:#010x}"
                )));
            }
            cx.sleep(Duration::from_millis(1));
        }
        if launch {
            let cr = read(p, base + CR)?;
            // The reset that follows may cut the probe's write short; that is expected.
            let _ = word(p, CR, cr | CR_OBL_LAUNCH);
        }
        Ok(())
    }
}
