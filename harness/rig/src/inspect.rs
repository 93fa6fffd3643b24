//! What a debug probe can tell about a board without changing it: identity (DBGMCU_IDCODE, flash
//! size, unique ID), the option bytes in effect decoded by the chip's data, the readout protection
//! level and the boot source the option bits select. For `hil info` and `hil doctor`; every fact
//! comes from the chip description, so a new chip needs no code here.

use std::collections::BTreeMap;

use hil_chips::{BootTarget, Chip, PeripheralKind};

use crate::probe::ProbeError;
use crate::probe_ops::ProbeOps;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("reading {what} at {address:#010x}: {source}")]
    Read {
        what: &'static str,
        address: u32,
        #[source]
        source: ProbeError,
    },
    #[error("reading {what} at {address:#010x}: the probe returned {got} of 4 bytes")]
    Short { what: &'static str, address: u32, got: usize },
    #[error("{chip} has no {what} in its chip data")]
    NotDescribed { chip: String, what: &'static str },
}

/// Who the target says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// DBGMCU_IDCODE as read.
    pub idcode: u32,
    /// DEV_ID (IDCODE[11:0]): the same number the ROM's Get ID returns as PID.
    pub dev_id: u16,
    /// REV_ID (IDCODE[31:16]).
    pub rev_id: u16,
    /// Whether DEV_ID is the one the chip data expects for the board's chip.
    pub matches_chip: bool,
    /// The flash-size word (KiB), where readable.
    pub flash_kib: Option<u16>,
    /// The 96-bit unique ID, as 24 hex digits (most significant word first, as ST prints it).
    pub uid: Option<String>,
}

/// Read the identity registers the chip data names.
pub fn identity(probe: &mut dyn ProbeOps, chip: &Chip) -> Result<Identity, InspectError> {
    let at = chip.identity.dbgmcu_idcode_address;
    let idcode = read_word(probe, at, "DBGMCU_IDCODE")?;
    let dev_id = (idcode & 0xFFF) as u16;
    // Engineering bytes: readable on every part the rig knows, but a locked part may refuse them.
    let flash_kib = read_word(probe, chip.memory.flash_size_register, "flash size").ok().map(|w| w as u16);
    let uid = chip.memory.uid_address.and_then(|a| {
        let words: Result<Vec<u32>, _> = (0..3).map(|i| read_word(probe, a + 4 * i, "unique ID")).collect();
        words.ok().map(|w| format!("{:08X}{:08X}{:08X}", w[2], w[1], w[0]))
    });
    Ok(Identity {
        idcode,
        dev_id,
        rev_id: (idcode >> 16) as u16,
        matches_chip: dev_id == chip.identity.dev_id,
        flash_kib,
        uid,
    })
}

/// The option bytes in effect (the FLASH registers they were loaded into), decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionReport {
    /// Word name -> (register address, value).
    pub words: Vec<(String, u32, u32)>,
    /// Field name -> value, for every field the chip data describes.
    pub fields: BTreeMap<String, u32>,
    pub rdp: RdpLevel,
    /// What boots after a reset, per level of the BOOT0 pin where the option bits leave it a say.
    pub boot: Vec<BootChoice>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RdpLevel {
    Level0,
    Level1,
    Level2,
}

impl std::fmt::Display for RdpLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RdpLevel::Level0 => "level 0 (no protection)",
            RdpLevel::Level1 => "level 1 (flash read-protected from the debugger and the ROM)",
            RdpLevel::Level2 => "level 2 (debug disabled for good)",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootChoice {
    /// `None` when the pin does not matter (the option bits decide alone).
    pub boot0_pin: Option<u8>,
    pub target: BootTarget,
    /// Main flash, unless it is empty (the empty check sends the core to the ROM then).
    pub empty_check: bool,
}

/// Read and decode the option words; the boot source from the chip's boot table.
pub fn option_report(probe: &mut dyn ProbeOps, chip: &Chip) -> Result<OptionReport, InspectError> {
    let not_described = |what| InspectError::NotDescribed { chip: chip.name.clone(), what };
    let layout = chip.option_bytes.as_ref().ok_or_else(|| not_described("option byte layout"))?;
    let flash = chip.peripherals_of(PeripheralKind::Flash).next().ok_or_else(|| not_described("FLASH peripheral"))?;
    let mut words = Vec::new();
    let mut values = BTreeMap::new();
    for w in &layout.words {
        let address = flash.base + w.register;
        let v = read_word(probe, address, "an option register")?;
        words.push((w.name.clone(), address, v));
        values.insert(w.name.clone(), v);
    }
    let fields: BTreeMap<String, u32> =
        layout.fields.iter().filter_map(|(name, f)| values.get(&f.word).map(|w| (name.clone(), f.get(*w)))).collect();
    let rdp = match fields.get("RDP").map(|v| *v as u8) {
        Some(v) if v == layout.rdp_levels.level0 => RdpLevel::Level0,
        Some(v) if v == layout.rdp_levels.level2 => RdpLevel::Level2,
        _ => RdpLevel::Level1,
    };
    let mut boot = Vec::new();
    if let Some(cfg) = &chip.boot {
        let field = |k: &str| fields.get(k).map(|v| *v as u8);
        let pin_matters = cfg.rules.iter().any(|r| r.when.contains_key("BOOT0"));
        let pick = |pin: u8| {
            cfg.select(|k| if k == "BOOT0" { Some(pin) } else { field(k) }).map(|r| (r.select, r.empty_check))
        };
        match (pick(0), pick(1)) {
            (Some(low), Some(high)) if !pin_matters || low == high => {
                boot.push(BootChoice { boot0_pin: None, target: low.0, empty_check: low.1 })
            }
            (low, high) => {
                for (pin, r) in [(0, low), (1, high)] {
                    if let Some((target, empty_check)) = r {
                        boot.push(BootChoice { boot0_pin: Some(pin), target, empty_check });
                    }
                }
            }
        }
    }
    Ok(OptionReport { words, fields, rdp, boot })
}

impl std::fmt::Display for BootChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(p) = self.boot0_pin {
            write!(f, "BOOT0 pin {}: ", if p == 1 { "high" } else { "low" })?;
        } else {
            f.write_str("whatever the BOOT0 pin: ")?;
        }
        f.write_str(match self.target {
            BootTarget::MainFlash => "main flash",
            BootTarget::SystemMemory => "system memory (the ROM bootloader)",
            BootTarget::Sram => "SRAM",
        })?;
        if self.empty_check {
            f.write_str(", or the ROM when main flash is empty (empty check)")?;
        }
        Ok(())
    }
}

fn read_word(probe: &mut dyn ProbeOps, address: u32, what: &'static str) -> Result<u32, InspectError> {
    let b = probe.read_memory(address, 4).map_err(|source| InspectError::Read { what, address, source })?;
    match b.get(0..4) {
        Some(w) => Ok(u32::from_le_bytes([w[0], w[1], w[2], w[3]])),
        None => Err(InspectError::Short { what, address, got: b.len() }),
    }
}
