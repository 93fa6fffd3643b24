//! [`ProbeOps`] over the probe layer's [`ProbeSession`]: what steps and diagnosis use of a probe.

use std::collections::BTreeMap;

use hil_config::scenario::Register;

use crate::probe::{CoreReg, FlashImage, ImageFormat, ProbeError, ProbeSession};
use crate::probe_ops::{ProbeFlashStats, ProbeOps};

fn core_reg(r: Register) -> Option<CoreReg> {
    Some(match r {
        Register::R0 => CoreReg::R(0),
        Register::R1 => CoreReg::R(1),
        Register::R2 => CoreReg::R(2),
        Register::R3 => CoreReg::R(3),
        Register::R4 => CoreReg::R(4),
        Register::R5 => CoreReg::R(5),
        Register::R6 => CoreReg::R(6),
        Register::R7 => CoreReg::R(7),
        Register::R8 => CoreReg::R(8),
        Register::R9 => CoreReg::R(9),
        Register::R10 => CoreReg::R(10),
        Register::R11 => CoreReg::R(11),
        Register::R12 => CoreReg::R(12),
        Register::Sp => CoreReg::Sp,
        Register::Lr => CoreReg::Lr,
        Register::Pc => CoreReg::Pc,
        Register::Xpsr => CoreReg::Xpsr,
        Register::Msp => CoreReg::Msp,
        Register::Psp => CoreReg::Psp,
        Register::Primask => CoreReg::Primask,
        Register::Control => CoreReg::Control,
        Register::Ipsr => CoreReg::Ipsr,
        Register::Vtor => return None,
    })
}

/// The image as Intel HEX (for images that did not come from an ELF file).
pub fn to_ihex(image: &hil_image::Image) -> Result<Vec<u8>, ihex::WriterError> {
    use ihex::Record;
    let mut records = Vec::new();
    let mut upper = None;
    for (addr, data) in image.ranges() {
        for (i, chunk) in data.chunks(32).enumerate() {
            let a = addr + (i * 32) as u32;
            if upper != Some(a >> 16) {
                upper = Some(a >> 16);
                records.push(Record::ExtendedLinearAddress((a >> 16) as u16));
            }
            // A chunk never crosses a 64 KiB boundary here: ranges are 32-byte chunked from
            // arbitrary starts, so split it when it would.
            let room = (0x1_0000 - (a & 0xFFFF)) as usize;
            if chunk.len() > room {
                records.push(Record::Data { offset: (a & 0xFFFF) as u16, value: chunk[..room].to_vec() });
                let b = a + room as u32;
                upper = Some(b >> 16);
                records.push(Record::ExtendedLinearAddress((b >> 16) as u16));
                records.push(Record::Data { offset: (b & 0xFFFF) as u16, value: chunk[room..].to_vec() });
            } else {
                records.push(Record::Data { offset: (a & 0xFFFF) as u16, value: chunk.to_vec() });
            }
        }
    }
    records.push(Record::EndOfFile);
    ihex::create_object_file_representation(&records).map(String::into_bytes)
}

impl ProbeOps for ProbeSession {
    fn identity(&self) -> Option<String> {
        self.identity().map(str::to_string)
    }

    fn halt(&mut self) -> Result<u32, ProbeError> {
        ProbeSession::halt(self)
    }
    fn resume(&mut self) -> Result<(), ProbeError> {
        self.run()
    }
    fn is_halted(&mut self) -> Result<bool, ProbeError> {
        self.status().map(|s| s.is_halted())
    }
    fn reset_halt(&mut self) -> Result<(), ProbeError> {
        self.reset_and_halt().map(|_| ())
    }
    fn reset_run(&mut self) -> Result<(), ProbeError> {
        self.reset()
    }
    fn read_register(&mut self, r: Register) -> Result<u32, ProbeError> {
        let Some(reg) = core_reg(r) else { return self.vtor() };
        let was_halted = ProbeOps::is_halted(self)?;
        if !was_halted {
            ProbeSession::halt(self)?;
        }
        let v = self.register(reg);
        if !was_halted {
            self.run()?;
        }
        v
    }
    fn read_memory(&mut self, address: u32, len: usize) -> Result<Vec<u8>, ProbeError> {
        ProbeSession::read_memory(self, address, len)
    }
    fn write_memory(&mut self, address: u32, data: &[u8]) -> Result<(), ProbeError> {
        ProbeSession::write_memory(self, address, data)
    }
    fn flash(
        &mut self,
        name: &str,
        image: &hil_image::Image,
        elf: Option<&[u8]>,
        verify: bool,
    ) -> Result<ProbeFlashStats, ProbeError> {
        let fi = match elf {
            Some(bytes) => FlashImage::new(name, bytes.to_vec(), ImageFormat::Elf),
            None => FlashImage::new(
                name,
                to_ihex(image).map_err(|e| ProbeError::Image { image: name.to_string(), message: e.to_string() })?,
                ImageFormat::Hex,
            ),
        };
        let r = ProbeSession::flash(self, &fi, verify)?;
        // The loader leaves the core halted (it ran the flash algorithm): start the image again
        // from reset, as after programming with any tool.
        self.reset()?;
        Ok(ProbeFlashStats { bytes: r.bytes, seconds: r.duration_ms / 1e3 })
    }
    fn snapshot(&mut self, extra: &[(String, u32)]) -> Result<BTreeMap<String, u32>, ProbeError> {
        let named: Vec<(&str, u32)> = extra.iter().map(|(n, a)| (n.as_str(), *a)).collect();
        let s = ProbeSession::snapshot(self, &named)?;
        let c = s.core;
        let mut m: BTreeMap<String, u32> = [
            ("pc", c.pc),
            ("lr", c.lr),
            ("sp", c.sp),
            ("msp", c.msp),
            ("psp", c.psp),
            ("control", c.control),
            ("primask", c.primask),
            ("xpsr", c.xpsr),
            ("ipsr", c.ipsr),
            ("vtor", s.vtor),
            ("icsr", s.icsr),
            ("systick_csr", s.systick.csr),
            ("systick_rvr", s.systick.rvr),
            ("systick_cvr", s.systick.cvr),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(sh) = s.shcsr {
            m.insert("shcsr".into(), sh);
        }
        for (i, w) in s.nvic.iser.iter().enumerate() {
            m.insert(format!("nvic_iser{i}"), *w);
        }
        for (i, w) in s.nvic.ispr.iter().enumerate() {
            m.insert(format!("nvic_ispr{i}"), *w);
        }
        for e in s.extra {
            if let Some(v) = e.value {
                m.insert(e.name, v);
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ihex_round_trips_through_the_image_loader() {
        let mut data = vec![0u8; 300];
        for (i, b) in data.iter_mut().enumerate() {
            *b = i as u8;
        }
        // Crosses a 64 KiB boundary to exercise the extended address records.
        let img = hil_image::Image::from_bin("t", &data, 0x0800_FFF0).unwrap();
        let hex = super::to_ihex(&img).unwrap();
        let back = hil_image::Image::from_hex("t.hex", &hex).unwrap();
        assert_eq!(back.ranges(), img.ranges());
    }
}
