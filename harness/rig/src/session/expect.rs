//! Expectations: registers, memory, reset cause, USB presence, the bootloader's answer.

use super::*;

impl RigSession {
    pub(super) fn expect_register(&mut self, e: &ExpectRegister) -> StepOutcome {
        let value = match self.with_probe(|p| p.read_register(e.register)) {
            Ok(v) => v,
            Err(err) => return outcome_of(err),
        };
        let name = format!("{:?}", e.register).to_lowercase();
        let mask = e.mask.map(|m| m.0).unwrap_or(u32::MAX);
        let ev = Evidence::Registers { label: format!("{name} read"), values: BTreeMap::from([(name.clone(), value)]) };
        if let Some(eq) = &e.equals {
            let want = match self.resolve(&eq.value) {
                Ok(v) => v,
                Err(err) => return outcome_of(err),
            };
            if value & mask != want & mask {
                return StepOutcome::failed(format!("{name} is {value:#010x}, expected {} = {want:#010x}", eq.value))
                    .with_evidence(ev);
            }
        }
        if let Some(r) = &e.within {
            let (base, len) = match self.region(&r.value) {
                Ok(x) => x,
                Err(err) => return outcome_of(err),
            };
            if (value as u64) < base as u64 || value as u64 >= base as u64 + len {
                return StepOutcome::failed(format!(
                    "{name} is {value:#010x}, outside {} ({base:#010x}..{:#010x})",
                    region_name(&r.value),
                    base as u64 + len
                ))
                .with_evidence(ev);
            }
        }
        StepOutcome::passed().with_evidence(ev)
    }

    pub(super) fn expect_memory(&mut self, m: &ExpectMemory) -> StepOutcome {
        let addr = match self.resolve(&m.address.value) {
            Ok(a) => a,
            Err(e) => return outcome_of(e),
        };
        let len = m.length.0 as usize;
        let bytes = match self.with_probe(|p| p.read_memory(addr, len)) {
            Ok(b) => b,
            Err(e) => return outcome_of(e),
        };
        let range = format!("{addr:#010x}..{:#010x}", addr as u64 + len as u64);
        if let Some(crc) = m.crc32 {
            let got = crc32(&bytes);
            if got != crc.0 {
                return StepOutcome::failed(format!("CRC-32 of {range} is {got:#010x}, expected {:#010x}", crc.0));
            }
        }
        if let Some(eq) = &m.equals
            && let Some(i) = bytes.iter().zip(eq).position(|(a, b)| a != b)
        {
            return StepOutcome::failed(format!(
                "byte at {:#010x} is {:#04x}, expected {:#04x}",
                addr + i as u32,
                bytes[i],
                eq[i]
            ));
        }
        if let Some(erased) = m.erased {
            let is = bytes.iter().all(|b| *b == 0xFF);
            if is != erased {
                let first = bytes
                    .iter()
                    .position(|b| *b != 0xFF)
                    .map(|i| format!(" (first programmed byte at {:#010x})", addr + i as u32))
                    .unwrap_or_default();
                return StepOutcome::failed(format!(
                    "{range} is {}erased, expected {}erased{first}",
                    if is { "" } else { "not " },
                    if erased { "" } else { "not " }
                ));
            }
        }
        if m.matches_image == Some(true) {
            let Some(img) = &self.last_image else {
                return StepOutcome::error("matches-image needs an image flashed first");
            };
            for (i, b) in bytes.iter().enumerate() {
                let a = addr + i as u32;
                if let Some(want) = img.image.bytes_at(a, 1)
                    && want[0] != *b
                {
                    return StepOutcome::failed(format!(
                        "byte at {a:#010x} is {b:#04x}, the image has {:#04x}",
                        want[0]
                    ));
                }
            }
        }
        StepOutcome::passed()
    }

    pub(super) fn expect_reset_cause(&mut self, flag: ResetFlag) -> StepOutcome {
        let Some(d) = self.chip.diagnosis.clone() else {
            return StepOutcome::error(format!("{} has no reset-flag data", self.chip.name));
        };
        let Some(addr) = d.address_of(&d.reset_flags.register) else {
            return StepOutcome::error(format!(
                "{}: reset flag register {} has no address",
                self.chip.name, d.reset_flags.register
            ));
        };
        let v = match self.with_probe(|p| p.read_memory(addr, 4)) {
            Ok(b) => u32::from_le_bytes(b[..4].try_into().unwrap_or([0; 4])),
            Err(e) => return outcome_of(e),
        };
        let f = &d.reset_flags;
        let names = [
            (f.power_on, "power-on"),
            (f.pin, "pin"),
            (f.software, "software"),
            (f.independent_watchdog, "independent-watchdog"),
            (f.window_watchdog, "window-watchdog"),
            (f.option_byte_load, "option-byte-load"),
            (f.low_power, "low-power"),
        ];
        let set: Vec<&str> = names.iter().filter(|(b, _)| v & (1 << b) != 0).map(|(_, n)| *n).collect();
        let bit = match flag {
            ResetFlag::PowerOn => f.power_on,
            ResetFlag::Pin => f.pin,
            ResetFlag::Software => f.software,
            ResetFlag::IndependentWatchdog => f.independent_watchdog,
            ResetFlag::WindowWatchdog => f.window_watchdog,
            ResetFlag::OptionByteLoad => f.option_byte_load,
        };
        let ev = Evidence::Registers {
            label: "reset flags".into(),
            values: BTreeMap::from([(d.reset_flags.register.clone(), v)]),
        };
        if v & (1 << bit) != 0 {
            StepOutcome::passed().with_evidence(ev)
        } else {
            StepOutcome::failed(format!(
                "{} = {v:#010x} shows {} reset, not {}",
                d.reset_flags.register,
                if set.is_empty() { "no".to_string() } else { set.join(" + ") },
                format!("{flag:?}").to_lowercase()
            ))
            .with_evidence(ev)
        }
    }

    pub(super) fn expect_usb(&mut self, present: bool, cx: &StepCx) -> StepOutcome {
        let name = self.board.name.value.clone();
        let Some(usb) = self.backends.usb.as_mut() else {
            return StepOutcome::error(format!("board `{name}` has no USB connection"));
        };
        loop {
            match usb.present() {
                Ok(p) if p == present => return StepOutcome::passed(),
                Ok(_) => {}
                Err(e) => return outcome_of(e),
            }
            if cx.expired() {
                return StepOutcome::failed(format!(
                    "the DFU device is {}",
                    if present { "not present" } else { "still present" }
                ));
            }
            // A host's USB stack notices a (dis)connection within a few frames; poll on the board's
            // clock.
            cx.sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn expect_bootloader(&mut self, via: Via, pid: Option<u32>, cx: &StepCx) -> StepOutcome {
        let seen = self.seen.clone();
        let want = pid.unwrap_or(self.chip.identity.dev_id as u32);
        match via {
            Via::Uart => match self.uart_session(cx, |c| Ok(crate::session::connect_noted(c, &seen)?)) {
                Ok(info) if info.id.pid as u32 == want => StepOutcome::passed(),
                Ok(info) => StepOutcome::failed(format!(
                    "the bootloader answered with PID {:#06x}, expected {want:#06x}",
                    info.id.pid
                )),
                Err(e) => e.outcome(Some(&format!(
                    "no bootloader answer on {}",
                    self.backends.serial.as_ref().map(|s| s.name().to_string()).unwrap_or_default()
                ))),
            },
            Via::Dfu => {
                let present = self.expect_usb(true, cx);
                if present.status != Status::Passed {
                    let message = format!("no DFU device: {}", present.message.unwrap_or_default());
                    return StepOutcome { message: Some(message), ..present };
                }
                match self.open_dfu().and_then(|mut d| d.get_commands().map_err(StepError::from)) {
                    Ok(cmds) if cmds.contains(&0x21) => StepOutcome::passed(),
                    Ok(cmds) => StepOutcome::failed(format!(
                        "the DFU device lists DfuSe commands {cmds:02x?}, without Set Address (0x21)"
                    )),
                    Err(e) => e.outcome(Some("the DFU device does not answer")),
                }
            }
            Via::Probe => StepOutcome::error("expect-bootloader via probe is not meaningful"),
        }
    }
}
