//! Boot selection: the chip's boot table (chip data `boot.rules`, RM0444 2.5) evaluated from the
//! BOOT0 pin latched at reset, the option bits loaded by the last option byte loading, and the
//! empty check latch FLASH_ACR.EMPTY (RM0444 3.3.2; evaluated at POR and OBL only, see
//! `periph::flash`).

use hil_chips::{BootTarget, PinId};

use crate::shared::{BootInfo, Shared};

/// Evaluate the boot table. `None` when no row matches (a broken chip file; validation of the
/// shipped files makes every input combination match) - the caller then boots main flash.
pub fn select(shared: &Shared) -> BootInfo {
    let chip = shared.chip;
    let mut inputs: Vec<(String, u8)> = Vec::new();
    let boot0 = chip
        .boot
        .as_ref()
        .and_then(|b| PinId::parse(&b.boot0_pin))
        // PA14-BOOT0 has a pull-down after reset (GPIOA_PUPDR reset value 0x2400_0000,
        // RM0444 7.4.4): an undriven pin reads 0.
        .map(|p| shared.pins.external(p).unwrap_or(false))
        .unwrap_or(false);
    let input = |name: &str| -> Option<u8> {
        if name == "BOOT0" {
            return Some(boot0 as u8);
        }
        let ob = chip.option_bytes.as_ref()?;
        let f = ob.field(name)?;
        let word = ob.word(&f.word)?;
        let v = shared.flash.words.get(&word.name).copied().unwrap_or(word.factory);
        Some(f.get(v) as u8)
    };
    for name in hil_chips::BOOT_INPUTS {
        if let Some(v) = input(name) {
            inputs.push((name.to_string(), v));
        }
    }
    inputs.push(("EMPTY".into(), shared.flash.empty as u8));
    let (table_target, empty_check) = chip
        .boot
        .as_ref()
        .and_then(|b| b.select(input))
        .map(|r| (r.select, r.empty_check))
        .unwrap_or((BootTarget::MainFlash, false));
    let redirect = chip.boot.as_ref().and_then(|b| b.empty_check.as_ref()).map(|e| e.redirect);
    let (target, empty_redirect) = match redirect {
        Some(to) if empty_check && shared.flash.empty => (to, true),
        _ => (table_target, false),
    };
    BootInfo {
        target: target.into(),
        table_target: table_target.into(),
        empty_redirect,
        boot0,
        inputs,
        cause: shared.reset_cause.into(),
    }
}
