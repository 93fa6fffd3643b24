//! Chip descriptions are data: one YAML file per chip under `chips/`, compiled in. Adding a chip is
//! adding a file (plus peripheral variants in the virtual board if its family differs).
//!
//! Every section names its source (reference manual / application note section, or the forum
//! thread it came from). Facts that could not be tied to a primary source are listed under
//! `unverified` with the reason, so code that depends on them can make the behaviour switchable.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The chip files shipped with the rig (file name, contents).
const CHIP_FILES: &[(&str, &str)] = &[
    ("stm32g071rb.yaml", include_str!("../chips/stm32g071rb.yaml")),
    ("stm32g0b1re.yaml", include_str!("../chips/stm32g0b1re.yaml")),
    ("stm32f103cb.yaml", include_str!("../chips/stm32f103cb.yaml")),
];

#[derive(Debug, thiserror::Error)]
pub enum ChipError {
    #[error("chips/{file}: {source}")]
    Parse { file: String, source: serde_yaml::Error },
    #[error("chips/{file}: {message}")]
    Invalid { file: String, message: String },
}

/// The processor core of a chip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoreKind {
    /// ARMv6-M.
    #[serde(rename = "cortex-m0plus")]
    CortexM0Plus,
    /// ARMv7-M.
    CortexM3,
    /// ARMv7E-M.
    CortexM4,
}

impl CoreKind {
    pub fn is_armv6m(self) -> bool {
        matches!(self, CoreKind::CortexM0Plus)
    }
}

/// An address range with the source that documents it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Area {
    pub base: u32,
    pub size: u32,
    pub source: String,
}

impl Area {
    pub fn end(&self) -> u64 {
        self.base as u64 + self.size as u64
    }
    pub fn contains(&self, addr: u32) -> bool {
        (addr as u64) >= self.base as u64 && (addr as u64) < self.end()
    }
    /// Whether `[start, start+len)` lies fully inside.
    pub fn contains_range(&self, start: u32, len: u64) -> bool {
        start as u64 >= self.base as u64 && start as u64 + len <= self.end()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flash {
    pub base: u32,
    pub size: u32,
    /// Erase granule (bytes). Uniform pages on the chips modelled so far.
    pub page_size: u32,
    pub banks: u32,
    pub source: String,
}

impl Flash {
    pub fn area(&self) -> Area {
        Area { base: self.base, size: self.size, source: self.source.clone() }
    }
    pub fn page_of(&self, addr: u32) -> Option<u32> {
        self.area().contains(addr).then(|| (addr - self.base) / self.page_size)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryMap {
    pub flash: Flash,
    pub sram: Area,
    /// The ROM holding ST's system bootloader.
    pub system_memory: Area,
    pub option_bytes: Area,
    /// Address of the flash-size word (KiB) the flash algorithms and bootloader read.
    pub flash_size_register: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interrupts {
    /// External interrupt lines (IRQ0..IRQn-1) wired on this chip.
    pub external: u32,
    /// NVIC priority bits implemented.
    pub priority_bits: u8,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// DEV_ID as read from DBGMCU_IDCODE[11:0] and as the bootloader's Get ID returns it (PID).
    pub dev_id: u16,
    pub rev_id: u16,
    pub dbgmcu_idcode_address: u32,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsartPins {
    pub instance: String,
    pub tx: String,
    pub rx: String,
}

/// What the ST ROM (system-memory) bootloader offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootloader {
    /// Bootloader ID byte (AN2606: 0xXY = version X.Y) and where the ROM stores it.
    pub id: u8,
    /// Where the ROM stores the ID byte (`None`: old ROMs that only report it through Get).
    pub id_address: Option<u32>,
    /// Address an application jumps to (vector table of the ROM: SP at +0, reset handler at +4).
    pub jump_address: u32,
    pub usart: Vec<UsartPins>,
    pub usb_dfu: bool,
    /// SRAM the ROM uses for itself; writes there through the bootloader fail.
    pub reserved_ram: Area,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chip {
    /// Part name, e.g. `STM32G071RB`.
    pub name: String,
    pub family: String,
    pub core: CoreKind,
    /// probe-rs target name used to attach (`STM32G071RBTx`).
    pub probe_rs_target: String,
    /// Whether the virtual board can model this chip (otherwise data only: preflight, lab boards).
    pub virtual_board: bool,
    pub memory: MemoryMap,
    pub interrupts: Interrupts,
    pub identity: Identity,
    pub bootloader: Bootloader,
    /// Documents cited by short tag in `source` fields.
    pub documents: BTreeMap<String, String>,
    /// Facts not tied to a primary source: key (dotted path) -> why it is believed.
    #[serde(default)]
    pub unverified: BTreeMap<String, String>,
}

impl Chip {
    /// Entries in the vector table: 16 system exceptions + the external interrupts.
    pub fn vector_entries(&self) -> u32 {
        16 + self.interrupts.external
    }

    /// Alignment VTOR requires for a vector table of this chip: the table size rounded up to a
    /// power of two, at least 32 words (ARMv7-M ARM B3.2.5; ARMv6-M ARM B3.2.5 for the optional
    /// VTOR of the M0+: TBLOFF is bits [31:7]).
    pub fn vtor_alignment(&self) -> u32 {
        (self.vector_entries() * 4).next_power_of_two().max(128)
    }

    /// Looks up a shipped chip by part name (case-insensitive), also accepting the probe-rs target
    /// name (`STM32G071RBTx`).
    pub fn by_name(name: &str) -> Option<&'static Chip> {
        all().iter().find(|c| c.name.eq_ignore_ascii_case(name) || c.probe_rs_target.eq_ignore_ascii_case(name))
    }
}

/// All shipped chips. Panics only if a shipped chip file is broken, which the tests below catch.
pub fn all() -> &'static [Chip] {
    static CHIPS: OnceLock<Vec<Chip>> = OnceLock::new();
    CHIPS.get_or_init(|| load_all().unwrap_or_else(|e| panic!("shipped chip data is broken: {e}")))
}

/// Names of the shipped chips, for error messages.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|c| c.name.as_str()).collect()
}

fn load_all() -> Result<Vec<Chip>, ChipError> {
    CHIP_FILES.iter().map(|(file, text)| parse_chip(file, text)).collect()
}

/// Parse and check one chip file.
pub fn parse_chip(file: &str, text: &str) -> Result<Chip, ChipError> {
    let chip: Chip = serde_yaml::from_str(text).map_err(|source| ChipError::Parse { file: file.into(), source })?;
    let invalid = |message: String| ChipError::Invalid { file: file.into(), message };
    let m = &chip.memory;
    if m.flash.size % m.flash.page_size != 0 {
        return Err(invalid(format!(
            "flash size {:#x} is not a whole number of {:#x}-byte pages",
            m.flash.size, m.flash.page_size
        )));
    }
    if !m.system_memory.contains(chip.bootloader.jump_address) {
        return Err(invalid(format!(
            "bootloader.jump_address {:#010x} is outside system memory",
            chip.bootloader.jump_address
        )));
    }
    if !m.sram.contains_range(chip.bootloader.reserved_ram.base, chip.bootloader.reserved_ram.size as u64) {
        return Err(invalid("bootloader.reserved_ram is not inside SRAM".into()));
    }
    for (key, _) in chip.unverified.iter() {
        if key.trim().is_empty() {
            return Err(invalid("empty key in unverified".into()));
        }
    }
    for tag in cited_tags(&chip) {
        if !chip.documents.contains_key(&tag) {
            return Err(invalid(format!("source cites {tag:?}, which is not listed under documents")));
        }
    }
    Ok(chip)
}

/// Document tags cited at the start of `source` strings ("RM0444 3.3.1" cites RM0444).
fn cited_tags(chip: &Chip) -> Vec<String> {
    let m = &chip.memory;
    [
        &m.flash.source,
        &m.sram.source,
        &m.system_memory.source,
        &m.option_bytes.source,
        &chip.interrupts.source,
        &chip.identity.source,
        &chip.bootloader.source,
        &chip.bootloader.reserved_ram.source,
    ]
    .iter()
    .flat_map(|s| s.split(';'))
    .filter_map(|s| s.split_whitespace().next())
    .map(|t| t.trim_end_matches(',').to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_chip_parses_and_cites_known_documents() {
        let chips = load_all().unwrap();
        assert_eq!(chips.len(), CHIP_FILES.len());
        let mut names: Vec<_> = chips.iter().map(|c| &c.name).collect();
        names.dedup();
        assert_eq!(names.len(), chips.len(), "duplicate chip names");
    }

    #[test]
    fn lookup_by_part_or_probe_rs_name() {
        assert_eq!(Chip::by_name("stm32g071rb").unwrap().identity.dev_id, 0x460);
        assert_eq!(Chip::by_name("STM32G071RBTx").unwrap().name, "STM32G071RB");
        assert!(Chip::by_name("STM32G999").is_none());
    }

    #[test]
    fn vtor_alignment_follows_vector_count() {
        // F103 medium density: 16 + 43 vectors = 236 bytes -> 256-byte alignment, so an
        // application at 0x08003080 cannot have its table there (seed 000).
        let f103 = Chip::by_name("STM32F103CB").unwrap();
        assert_eq!(f103.vtor_alignment(), 256);
        assert_ne!(0x0800_3080 % f103.vtor_alignment(), 0);
        // G071: 16 + 32 vectors = 192 bytes -> 256.
        assert_eq!(Chip::by_name("STM32G071RB").unwrap().vtor_alignment(), 256);
    }

    #[test]
    fn broken_files_are_rejected_with_the_file_name() {
        let g071 = CHIP_FILES[0].1;
        let e = parse_chip("x.yaml", &g071.replace("page_size: 0x800", "page_size: 0x7FF")).unwrap_err();
        assert!(e.to_string().starts_with("chips/x.yaml: flash size"), "{e}");
        let e = parse_chip("x.yaml", &g071.replace("name: STM32G071RB", "nmae: STM32G071RB")).unwrap_err();
        assert!(e.to_string().contains("chips/x.yaml"), "{e}");
    }
}
