//! A RAM-backed fake of the board for the engine tests: flash with page erase and G0-style
//! programming rules (whole erased granules only), SRAM, system memory, option bytes and OTP, plus
//! a log of every call.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use hil_bootloader_device::{BootTarget, Jump, RdpLevel, RomConfig, TargetError};
use hil_chips::Chip;

/// Page erase time (DS13560: tERASE 22 ms typical).
pub const ERASE_TIME: Duration = Duration::from_millis(22);
/// Double-word program time (DS13560: tPROG 85 us typical).
pub const PROGRAM_TIME: Duration = Duration::from_micros(85);
pub const MASS_ERASE_TIME: Duration = Duration::from_millis(23);
pub const OPTION_TIME: Duration = Duration::from_millis(30);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Write { address: u32, len: usize },
    ErasePage(u32),
    EraseBank(u8),
    MassErase,
    WriteOptionBytes(Vec<u8>),
    SetRdp(RdpLevel),
    SetWriteProtection(Vec<u8>),
    ClearWriteProtection,
    LaunchOptionBytes,
    SystemReset,
    Jump(Jump),
}

pub struct Area {
    pub base: u32,
    pub bytes: Vec<u8>,
}

impl Area {
    fn new(base: u32, size: u32, fill: u8) -> Self {
        Area { base, bytes: vec![fill; size as usize] }
    }
    fn range(&self, address: u32, len: usize) -> Option<std::ops::Range<usize>> {
        let start = (address as u64).checked_sub(self.base as u64)? as usize;
        (start + len <= self.bytes.len()).then(|| start..start + len)
    }
}

pub struct FakeTarget {
    pub flash: Area,
    pub page_size: u32,
    pub banks: u32,
    pub program_unit: u32,
    pub ram: Area,
    pub system: Area,
    pub option_bytes: Area,
    pub otp: Area,
    pub rdp: RdpLevel,
    /// Pages the FLASH controller refuses to erase or program (WRPERR).
    pub protected_pages: BTreeSet<u32>,
    pub write_protection: Option<Vec<u8>>,
    /// Returned by the next mutating operation instead of doing it (fault injection).
    pub fail_next: Option<TargetError>,
    pub calls: Vec<Call>,
}

impl FakeTarget {
    /// A fake shaped like a shipped chip (OTP at 0x1FFF7000 on G0 parts).
    pub fn for_chip(name: &str) -> Self {
        let chip = Chip::by_name(name).expect("shipped chip");
        let m = &chip.memory;
        let program_unit = if chip.family == "STM32G0" { 8 } else { 2 };
        let mut option_bytes = Area::new(m.option_bytes.base, m.option_bytes.size, 0xFF);
        option_bytes.bytes[0] = 0xAA; // RDP level 0
        let mut system = Area::new(m.system_memory.base, m.system_memory.size, 0);
        for (i, b) in system.bytes.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        FakeTarget {
            flash: Area::new(m.flash.base, m.flash.size, 0xFF),
            page_size: m.flash.page_size,
            banks: m.flash.banks,
            program_unit,
            ram: Area::new(m.sram.base, m.sram.size, 0),
            system,
            option_bytes,
            otp: Area::new(0x1FFF_7000, 0x400, 0xFF),
            rdp: RdpLevel::Level0,
            protected_pages: BTreeSet::new(),
            write_protection: None,
            fail_next: None,
            calls: Vec::new(),
        }
    }

    pub fn config(name: &str) -> RomConfig {
        RomConfig::for_chip(Chip::by_name(name).unwrap()).unwrap()
    }

    pub fn flash_at(&self, address: u32, len: usize) -> &[u8] {
        let r = self.flash.range(address, len).expect("flash range");
        &self.flash.bytes[r]
    }

    pub fn ram_at(&self, address: u32, len: usize) -> &[u8] {
        let r = self.ram.range(address, len).expect("ram range");
        &self.ram.bytes[r]
    }

    /// Programs flash directly (as a debugger would), bypassing the rules.
    pub fn preload_flash(&mut self, address: u32, data: &[u8]) {
        let r = self.flash.range(address, data.len()).expect("flash range");
        self.flash.bytes[r].copy_from_slice(data);
    }

    pub fn writes(&self) -> Vec<(u32, usize)> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Write { address, len } => Some((*address, *len)),
                _ => None,
            })
            .collect()
    }

    fn take_fault(&mut self) -> Result<(), TargetError> {
        match self.fail_next.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn program(&mut self, area: AreaKind, address: u32, data: &[u8]) -> Result<Duration, TargetError> {
        let unit = self.program_unit as usize;
        if !(address as usize).is_multiple_of(unit) || !data.len().is_multiple_of(unit) {
            return Err(TargetError::Alignment { address });
        }
        let page_size = self.page_size;
        let flash_base = self.flash.base;
        let protected = self.protected_pages.clone();
        let target = match area {
            AreaKind::Flash => &mut self.flash,
            AreaKind::Otp => &mut self.otp,
        };
        let range = target.range(address, data.len()).ok_or(TargetError::Unmapped { address })?;
        if area == AreaKind::Flash {
            let first = (address - flash_base) / page_size;
            let last = (address + data.len() as u32 - 1 - flash_base) / page_size;
            if (first..=last).any(|p| protected.contains(&p)) {
                return Err(TargetError::WriteProtected { address });
            }
        }
        for (i, chunk) in target.bytes[range.clone()].chunks(unit).enumerate() {
            if chunk.iter().any(|&b| b != 0xFF) {
                return Err(TargetError::Programming { address: address + (i * unit) as u32 });
            }
        }
        target.bytes[range].copy_from_slice(data);
        Ok(PROGRAM_TIME * (data.len() / unit) as u32)
    }

    fn erase(&mut self, page: u32) -> Result<(), TargetError> {
        if self.protected_pages.contains(&page) {
            return Err(TargetError::WriteProtected { address: self.flash.base + page * self.page_size });
        }
        let start = (page * self.page_size) as usize;
        let end = start + self.page_size as usize;
        let bytes = self.flash.bytes.get_mut(start..end).ok_or(TargetError::Unsupported("no such page"))?;
        bytes.fill(0xFF);
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AreaKind {
    Flash,
    Otp,
}

impl BootTarget for FakeTarget {
    fn read_memory(&mut self, address: u32, buf: &mut [u8]) -> Result<(), TargetError> {
        for area in [&self.flash, &self.ram, &self.system, &self.option_bytes, &self.otp] {
            if let Some(r) = area.range(address, buf.len()) {
                buf.copy_from_slice(&area.bytes[r]);
                return Ok(());
            }
        }
        Err(TargetError::Unmapped { address })
    }

    fn write_memory(&mut self, address: u32, data: &[u8]) -> Result<Duration, TargetError> {
        self.calls.push(Call::Write { address, len: data.len() });
        self.take_fault()?;
        if let Some(r) = self.ram.range(address, data.len()) {
            self.ram.bytes[r].copy_from_slice(data);
            return Ok(Duration::ZERO);
        }
        if self.flash.range(address, data.len()).is_some() {
            return self.program(AreaKind::Flash, address, data);
        }
        if self.otp.range(address, data.len()).is_some() {
            return self.program(AreaKind::Otp, address, data);
        }
        Err(TargetError::Unmapped { address })
    }

    fn erase_page(&mut self, page: u32) -> Result<Duration, TargetError> {
        self.calls.push(Call::ErasePage(page));
        self.take_fault()?;
        self.erase(page)?;
        Ok(ERASE_TIME)
    }

    fn erase_bank(&mut self, bank: u8) -> Result<Duration, TargetError> {
        self.calls.push(Call::EraseBank(bank));
        self.take_fault()?;
        let pages = (self.flash.bytes.len() as u32 / self.page_size) / self.banks;
        let first = (u32::from(bank) - 1) * pages;
        for page in first..first + pages {
            self.erase(page)?;
        }
        Ok(MASS_ERASE_TIME)
    }

    fn mass_erase(&mut self) -> Result<Duration, TargetError> {
        self.calls.push(Call::MassErase);
        self.take_fault()?;
        if !self.protected_pages.is_empty() {
            return Err(TargetError::WriteProtected { address: self.flash.base });
        }
        self.flash.bytes.fill(0xFF);
        Ok(MASS_ERASE_TIME)
    }

    fn write_option_bytes(&mut self, image: &[u8]) -> Result<Duration, TargetError> {
        self.calls.push(Call::WriteOptionBytes(image.to_vec()));
        self.take_fault()?;
        let n = image.len().min(self.option_bytes.bytes.len());
        self.option_bytes.bytes[..n].copy_from_slice(&image[..n]);
        Ok(OPTION_TIME)
    }

    fn rdp_level(&mut self) -> RdpLevel {
        self.rdp
    }

    fn set_rdp_level(&mut self, level: RdpLevel) -> Result<Duration, TargetError> {
        assert_ne!(level, RdpLevel::Level2, "the engines must never ask for RDP level 2");
        self.calls.push(Call::SetRdp(level));
        self.take_fault()?;
        if level == RdpLevel::Level0 && self.rdp != RdpLevel::Level0 {
            // RDP regression mass-erases the flash.
            self.flash.bytes.fill(0xFF);
        }
        self.rdp = level;
        Ok(OPTION_TIME)
    }

    fn set_write_protection(&mut self, sectors: &[u8]) -> Result<Duration, TargetError> {
        self.calls.push(Call::SetWriteProtection(sectors.to_vec()));
        self.take_fault()?;
        self.write_protection = Some(sectors.to_vec());
        Ok(OPTION_TIME)
    }

    fn clear_write_protection(&mut self) -> Result<Duration, TargetError> {
        self.calls.push(Call::ClearWriteProtection);
        self.take_fault()?;
        self.write_protection = None;
        Ok(OPTION_TIME)
    }

    fn launch_option_bytes(&mut self) {
        self.calls.push(Call::LaunchOptionBytes);
    }

    fn system_reset(&mut self) {
        self.calls.push(Call::SystemReset);
    }

    fn jump(&mut self, jump: &Jump) {
        self.calls.push(Call::Jump(jump.clone()));
    }
}

/// `bytes` followed by their XOR.
pub fn with_xor(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.push(bytes.iter().fold(0, |x, b| x ^ b));
    v
}

/// An AN3155 address frame: 4 bytes MSB first + XOR.
pub fn address_frame(address: u32) -> Vec<u8> {
    with_xor(&address.to_be_bytes())
}

/// A minimal xorshift generator for the fuzz-style tests (deterministic, no dependency).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
