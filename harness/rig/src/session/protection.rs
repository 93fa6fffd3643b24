//! Option bytes and readout protection.

use super::*;

/// How often the protection status is read while waiting (a rig choice, not a chip fact).
const PROTECTION_POLL: Duration = Duration::from_millis(5);

/// What one read of the readout protection status register says.
#[derive(Debug, PartialEq, Eq)]
enum ProtectionStatus {
    Protected,
    /// Level 0, in effect (F1 FLASH_OBR: loaded values only).
    Level0,
    /// Level 0 written, maybe not yet loaded (G0/G4 FLASH_OPTR before the option reload).
    Level0Written,
}

fn protection_status(rp: &hil_chips::ReadoutProtection, value: u32) -> ProtectionStatus {
    match (rp.is_level0(value), rp.shows_written_value) {
        (false, _) => ProtectionStatus::Protected,
        (true, false) => ProtectionStatus::Level0,
        (true, true) => ProtectionStatus::Level0Written,
    }
}

impl RigSession {
    /// The ROM acknowledges Readout Unprotect before it mass-erases the flash and makes level 0
    /// effective with a reset (AN3155 3.14; AN2606 "the device is reset" after the second ACK),
    /// so the step ends only when that is done. Where the level shows and for how long to wait
    /// are chip data (`readout_protection`): through the probe, when the status register shows
    /// level 0 and, where that register shows written values before they take effect (G0/G4
    /// FLASH_OPTR), the debugger can read flash again; without a probe, after the chip's
    /// `unprotect_max_us`.
    pub(super) fn await_protection_removed(&mut self, cx: &StepCx) -> Result<(), StepError> {
        let chip = self.chip;
        let rp = chip.readout_protection.as_ref().ok_or_else(|| {
            StepError::unsupported(format!(
                "{} has no `readout_protection` in its chip data: the rig cannot tell when Readout Unprotect is done",
                chip.name
            ))
        })?;
        if self.backends.probe.is_none() && self.probe.is_none() {
            cx.sleep(Duration::from_micros(u64::from(rp.unprotect_max_us)));
            return Ok(());
        }
        let (name, status) = (rp.register.as_str(), rp.address);
        let started = cx.clock().now();
        let mut last: String;
        loop {
            // During the reset the probe may lose its session; a fresh one is made on the next read.
            match self.with_probe(|p| p.read_memory(status, 4)) {
                Ok(b) if b.len() >= 4 => {
                    let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    match protection_status(rp, v) {
                        ProtectionStatus::Protected => {
                            last = format!(
                                "{name} ({status:#010x}) = {v:#010x}, protection field = {:#x}",
                                rp.field().get(v)
                            );
                        }
                        ProtectionStatus::Level0 => return Ok(()),
                        ProtectionStatus::Level0Written => {
                            // Level 0 written is not yet level 0 for the debugger (the option reload
                            // makes it effective): done only when flash reads too.
                            let flash = chip.memory.flash.base;
                            match self.with_probe(|p| p.read_memory(flash, 4)) {
                                Ok(_) => return Ok(()),
                                Err(e) => {
                                    last = format!(
                                        "{name} ({status:#010x}) = {v:#010x} (level 0 written) but flash at {flash:#010x} \
                                     still refuses the debugger: {e}"
                                    );
                                    self.forget_probe();
                                }
                            }
                        }
                    }
                }
                Ok(_) => last = format!("short read of {name} ({status:#010x})"),
                Err(e) => {
                    last = e.to_string();
                    self.forget_probe();
                }
            }
            if cx.expired() {
                return Err(StepError::expectation(format!(
                    "readout protection still active {} ms after Readout Unprotect was acknowledged: {last}",
                    cx.clock().now().saturating_sub(started).as_millis()
                )));
            }
            cx.sleep(PROTECTION_POLL);
        }
    }

    pub fn write_option_bytes(&mut self, w: &WriteOptionBytes, cx: &StepCx) -> Result<(), StepError> {
        let seen = self.seen.clone();
        let bits = hil_config::boards::OptionBits {
            nboot0: w.nboot0,
            nboot1: w.nboot1,
            nboot_sel: w.nboot_sel,
            rdp: w.rdp.as_ref().map(|r| r.value),
            hardware_watchdog: w.hardware_watchdog,
        };
        if bits.rdp == Some(2) && !self.board.allow_rdp_level2 {
            // Validation refuses this too; the rig never sets level 2 on its own.
            return Err(StepError::expectation(format!(
                "refusing RDP level 2 on board `{}`: it does not set allow-rdp-level2",
                self.board.name.value
            )));
        }
        let chip = self.chip;
        let layout = chip
            .option_bytes
            .as_ref()
            .ok_or_else(|| StepError::unsupported(format!("{} has no option byte layout", chip.name)))?;
        let user = layout
            .word("USER")
            .ok_or_else(|| StepError::unsupported(format!("{}: no USER option word in the chip data", chip.name)))?;
        match w.via {
            Via::Probe => {
                // How a family programs option bytes through the debug port (family modules).
                let programming = crate::family::option_programming(chip).ok_or_else(|| {
                    StepError::unsupported(format!(
                        "writing option bytes through the probe is not modelled for the {} family",
                        chip.family
                    ))
                })?;
                let p = self.probe()?;
                let current = programming.read_user_word(chip, p.as_mut())?;
                let value = crate::option_bits::apply_option_bits(chip, current, &bits)?;
                programming.program_user_word(chip, p.as_mut(), value, w.launch, cx)
            }
            Via::Uart => {
                let ob = chip.memory.option_bytes.base;
                let comp = layout.complement_offset;
                self.uart_session(cx, |c| {
                    crate::session::connect_noted(c, &seen)?;
                    let current = u32::from_le_bytes(c.read(ob + user.offset, 4)?[..4].try_into().expect("4 bytes"));
                    let value = crate::option_bits::apply_option_bits(chip, current, &bits)?;
                    let mut dw = Vec::with_capacity(8);
                    dw.extend_from_slice(&value.to_le_bytes());
                    dw.resize(comp as usize, 0xFF);
                    dw.extend_from_slice(&(!value).to_le_bytes());
                    // The ROM applies the option bytes and reloads them after the write (AN3155 3.6).
                    Ok(c.write(ob + user.offset, &dw)?)
                })
            }
            Via::Dfu => Err(StepError::unsupported("write-option-bytes via dfu is not supported")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ProtectionStatus, protection_status};

    fn rp(chip: &str) -> &'static hil_chips::ReadoutProtection {
        hil_chips::Chip::by_name(chip).unwrap().readout_protection.as_ref().unwrap()
    }

    /// G0/G4: FLASH_OPTR.RDP = 0xAA is level 0 once loaded (RM0444 3.4.1, RM0440 5.4.2), so the
    /// wait also needs flash to read; F1: FLASH_OBR.RDPRT = 0 is level 0 in effect (PM0075 3.7).
    #[test]
    fn the_unprotect_wait_reads_each_familys_status_register() {
        for g in ["STM32G071RB", "STM32G0B1RE", "STM32G474RE"] {
            assert_eq!(protection_status(rp(g), 0xFFFF_FEAA), ProtectionStatus::Level0Written, "{g}");
            assert_eq!(protection_status(rp(g), 0xFFFF_FEBB), ProtectionStatus::Protected, "{g}");
        }
        let f1 = rp("STM32F103CB");
        assert_eq!(f1.address, 0x4002_201C, "FLASH_OBR");
        assert_eq!(protection_status(f1, 0x03FF_FFFE), ProtectionStatus::Protected, "RDPRT set");
        assert_eq!(protection_status(f1, 0x03FF_FFFC), ProtectionStatus::Level0);
        assert_eq!(protection_status(f1, 0x0000_0000), ProtectionStatus::Level0);
    }
}
