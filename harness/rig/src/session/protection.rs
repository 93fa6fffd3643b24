//! Option bytes and readout protection.

use super::*;

impl RigSession {
    /// The ROM acknowledges Readout Unprotect before it mass-erases the flash and reloads the
    /// option bytes with a reset (AN3155 3.14; AN2606 "the device is reset" after the second ACK),
    /// so the step ends only when that is done: through the probe, when FLASH_OPTR shows RDP level
    /// 0 and the debugger can read flash again (the option reload makes both true at once, RM0444
    /// 3.4.1); without a probe, after the chip's maximum mass-erase time and a margin for the
    /// reset.
    pub(super) fn await_protection_removed(&mut self, cx: &StepCx) -> Result<(), StepError> {
        let chip = self.chip;
        let reload = (|| {
            let layout = chip.option_bytes.as_ref()?;
            Some((
                chip.flash_controller.as_ref()?.base + layout.word("USER")?.register,
                layout.field("RDP")?.clone(),
                layout.rdp_levels.level0,
            ))
        })();
        let max_erase = chip
            .flash_timing
            .as_ref()
            .map_or(Duration::from_millis(100), |t| Duration::from_micros(u64::from(t.mass_erase_us.max)));
        let margin = Duration::from_millis(50);
        let Some((optr, rdp, level0)) = reload.filter(|_| self.backends.probe.is_some() || self.probe.is_some()) else {
            cx.sleep(max_erase + margin);
            return Ok(());
        };
        let started = cx.clock().now();
        let mut last: String;
        loop {
            // During the reset the probe may lose its session; a fresh one is made on the next read.
            match self.with_probe(|p| p.read_memory(optr, 4)) {
                Ok(b) if b.len() >= 4 => {
                    let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if rdp.get(v) == u32::from(level0) {
                        // FLASH_OPTR holds what the ROM wrote before the option reload has made it
                        // effective (RM0444 3.4.1: written values are loaded at OBL): level 0 there
                        // is not yet level 0 for the debugger. Done only when flash reads too.
                        let flash = chip.memory.flash.base;
                        match self.with_probe(|p| p.read_memory(flash, 4)) {
                            Ok(_) => return Ok(()),
                            Err(e) => {
                                last = format!(
                                    "FLASH_OPTR ({optr:#010x}) = {v:#010x} (RDP level 0 written) but flash at \
                                     {flash:#010x} still refuses the debugger: {e}"
                                );
                                self.forget_probe();
                            }
                        }
                    } else {
                        last = format!("FLASH_OPTR ({optr:#010x}) = {v:#010x}, RDP = {:#04x}", rdp.get(v));
                    }
                }
                Ok(_) => last = format!("short read of FLASH_OPTR ({optr:#010x})"),
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
            cx.sleep(Duration::from_millis(5));
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
