//! Option bits of boards.yaml (`option-bytes:`, `write-option-bytes`) as a USER option word, from
//! the field positions in the chip data: what both a lab board (written through the probe or the
//! ROM) and a virtual board (set before power-on) need.

/// The chip data cannot express the option bits asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionBitsError {
    #[error("{chip} has no option byte layout in its chip data")]
    NoLayout { chip: String },
    #[error("{chip}: no USER option word in the chip data")]
    NoUserWord { chip: String },
    #[error("{chip}: option bit {field} is not in the chip data")]
    NoField { chip: String, field: String },
}

/// The USER option word with boards.yaml's option bits applied to the factory value; `None` when
/// nothing differs from the factory.
pub fn user_option_word(
    chip: &hil_chips::Chip,
    bits: &hil_config::boards::OptionBits,
) -> Result<Option<u32>, OptionBitsError> {
    let nothing = bits.nboot0.is_none()
        && bits.nboot1.is_none()
        && bits.nboot_sel.is_none()
        && bits.hardware_watchdog.is_none()
        && bits.rdp.is_none();
    if nothing {
        // Nothing asked: fine on parts whose chip data has no option word layout (STM32F1).
        return Ok(None);
    }
    let layout = chip.option_bytes.as_ref().ok_or_else(|| OptionBitsError::NoLayout { chip: chip.name.clone() })?;
    let user = layout.word("USER").ok_or_else(|| OptionBitsError::NoUserWord { chip: chip.name.clone() })?;
    apply_option_bits(chip, user.factory, bits).map(Some)
}

/// `word` (a USER option word) with the given option bits changed (field positions from the chip
/// data; RM0444 3.4.1 FLASH_OPTR).
pub fn apply_option_bits(
    chip: &hil_chips::Chip,
    word: u32,
    bits: &hil_config::boards::OptionBits,
) -> Result<u32, OptionBitsError> {
    let layout = chip.option_bytes.as_ref().ok_or_else(|| OptionBitsError::NoLayout { chip: chip.name.clone() })?;
    let mut v = word;
    let mut set = |field: &str, value: u32| -> Result<(), OptionBitsError> {
        let f = layout
            .field(field)
            .ok_or_else(|| OptionBitsError::NoField { chip: chip.name.clone(), field: field.to_string() })?;
        v = (v & !(f.mask() << f.shift)) | ((value & f.mask()) << f.shift);
        Ok(())
    };
    if let Some(b) = bits.nboot0 {
        set("nBOOT0", b as u32)?;
    }
    if let Some(b) = bits.nboot1 {
        set("nBOOT1", b as u32)?;
    }
    if let Some(b) = bits.nboot_sel {
        // `nboot-sel: true` = BOOT0 from the option bit: nBOOT_SEL = 1 on the G0, nSWBOOT0 = 0 on
        // the G4 (chip data `boot_select`).
        let (field, value) = layout.boot_select_value(b);
        set(field, value)?;
    }
    if let Some(hw) = bits.hardware_watchdog {
        // IWDG_SW = 0 selects the hardware watchdog (RM0444 3.4.1).
        set("IWDG_SW", (!hw) as u32)?;
    }
    if let Some(level) = bits.rdp {
        let rdp = match level {
            0 => layout.rdp_levels.level0 as u32,
            2 => layout.rdp_levels.level2 as u32,
            // Any other value is level 1 (RM0444 3.5.1); use the conventional 0xBB.
            _ => 0xBB,
        };
        set("RDP", rdp)?;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_bits_map_onto_the_user_word() {
        let chip = hil_chips::Chip::by_name("STM32G071RB").unwrap();
        let layout = chip.option_bytes.as_ref().unwrap();
        let factory = layout.word("USER").unwrap().factory;
        let none = hil_config::boards::OptionBits::default();
        assert_eq!(user_option_word(chip, &none).unwrap(), None);
        let bits = hil_config::boards::OptionBits { nboot_sel: Some(true), nboot0: Some(false), ..Default::default() };
        let w = user_option_word(chip, &bits).unwrap().unwrap();
        assert_eq!(layout.field("nBOOT_SEL").unwrap().get(w), 1);
        assert_eq!(layout.field("nBOOT0").unwrap().get(w), 0);
        assert_eq!(w & 0xFF, factory & 0xFF, "RDP untouched");
        let hw = hil_config::boards::OptionBits { hardware_watchdog: Some(true), rdp: Some(1), ..Default::default() };
        let w = user_option_word(chip, &hw).unwrap().unwrap();
        assert_eq!(layout.field("IWDG_SW").unwrap().get(w), 0);
        assert_eq!(w & 0xFF, 0xBB);
    }
}
