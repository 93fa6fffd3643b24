//! What the chip data cannot say: one module per chip family for behaviour that differs in
//! structure between families (how option bytes are programmed through the debug port), selected
//! by the chip file's `family`. Register addresses, keys and bit fields stay in the chip data.

use std::time::Duration;

use hil_chips::Chip;

use crate::engine::StepCx;
use crate::probe_ops::ProbeOps;
use crate::step_error::StepError;

/// G0 and G4 share the FLASH_OPTR sequence and register offsets (RM0444 3.4.2 / 3.7, RM0440
/// 5.4.2 / 5.7), so one module serves both.
mod stm32g0;

/// Programs the USER option word through the debug port (the flash controller's registers).
pub trait OptionProgramming: Sync {
    /// The USER word in effect (its FLASH register).
    fn read_user_word(&self, chip: &Chip, probe: &mut dyn ProbeOps) -> Result<u32, StepError>;
    /// Write `value` as the USER word and wait for the controller; with `launch`, reload the
    /// option bytes (which resets the chip).
    fn program_user_word(
        &self,
        chip: &Chip,
        probe: &mut dyn ProbeOps,
        value: u32,
        launch: bool,
        cx: &StepCx,
    ) -> Result<(), StepError>;
}

/// The option programming of `chip`'s family, if the rig knows it.
pub fn option_programming(chip: &Chip) -> Option<&'static dyn OptionProgramming> {
    match chip.family.as_str() {
        "STM32G0" | "STM32G4" => Some(&stm32g0::Stm32G0),
        _ => None,
    }
}

/// How long option programming may take on the board's clock (RM0444 3.4.2: milliseconds).
pub(crate) const OPTION_PROGRAM_BUDGET: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    #[test]
    fn families_are_chosen_by_the_chip_files_family() {
        let by = |n: &str| super::option_programming(hil_chips::Chip::by_name(n).unwrap()).is_some();
        assert!(by("STM32G071RB") && by("STM32G0B1RE") && by("STM32G474RE"));
        // The F1's option bytes are erased and programmed as half words (RM0008 2.5): not modelled.
        assert!(!by("STM32F103CB"));
    }
}
