//! Chip descriptions are data: one YAML file per chip under `chips/`, compiled in. Adding a chip is
//! adding a file (plus peripheral variants in the virtual board if its family differs).
//!
//! Every section names its source (reference manual / application note section, or the forum
//! thread it came from). Facts that could not be tied to a primary source are listed under
//! `unverified` with the reason, so code that depends on them can make the behaviour switchable.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

mod rom;
pub use rom::{
    DfuAltSetting, DfuMemory, Execution, LeaveJump, ProcessStackEntry, RomCommand, RomDfu, RomEntry, Service,
    UsartProtocol, VtorAtEntry,
};

// CHIP_FILES: every chips/*.yaml (build.rs).
include!(concat!(env!("OUT_DIR"), "/chip_files.rs"));

#[derive(Debug, thiserror::Error)]
pub enum ChipError {
    /// FILE:LINE:COL: message, like the config files' errors.
    #[error("chips/{file}:{line}:{column}: {message}")]
    Parse { file: String, line: usize, column: usize, message: String },
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
    /// One-time-programmable area (programmed through the flash controller, never erased).
    #[serde(default)]
    pub otp: Option<Area>,
    /// Factory engineering bytes (package code, unique ID, flash size), read-only.
    #[serde(default)]
    pub engineering_bytes: Option<Area>,
    /// Further system memory areas (the ROM's code beyond the first area), read-only.
    #[serde(default)]
    pub system_memory_extra: Vec<Area>,
    /// 96-bit unique device ID.
    #[serde(default)]
    pub uid_address: Option<u32>,
    /// Package data register.
    #[serde(default)]
    pub package_address: Option<u32>,
    #[serde(default)]
    pub package_code: Option<u16>,
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

/// MPU_TYPE.DREGION as the chip integrates the core (0 = no MPU).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mpu {
    pub regions: u8,
    pub source: String,
}

/// What a debugger reads of the debug port (ADIv5): the SW-DP's DPIDR, the AHB-AP's IDR, and
/// where the AP's BASE points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugPort {
    pub dpidr: u32,
    pub ap_idr: u32,
    pub rom_table: RomTableKind,
    pub source: String,
}

/// Where the AHB-AP's BASE register points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RomTableKind {
    /// ST's system ROM table (designer ST, part = DEV_ID), which points at the core's.
    St,
    /// The core's ROM table (0xE00FF000) directly.
    Core,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// DEV_ID as read from DBGMCU_IDCODE[11:0] and as the bootloader's Get ID returns it (PID).
    pub dev_id: u16,
    pub rev_id: u16,
    pub dbgmcu_idcode_address: u32,
    /// The debug port's identity (default: a Cortex-M0+ MINDP with ST's ROM table).
    #[serde(default)]
    pub debug_port: Option<DebugPort>,
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
    /// Stack pointer word of the ROM's vector table (what a boot into system memory loads).
    #[serde(default)]
    pub initial_sp: Option<u32>,
    /// Whether Read Memory answers in the engineering bytes (package, unique ID, flash size), which
    /// host tools read to identify the part. Differs between ROMs (see the chip's `unverified`).
    #[serde(default)]
    pub engineering_bytes_readable: bool,
    /// Entered by a jump with the application's USB device still attached (USB clock on, D+
    /// pull-up USB_BCDR.DPPU set), the ROM's DFU device does not come up (seed 004's G473; a
    /// per-ROM switch, see the chip's `unverified`).
    #[serde(default)]
    pub usb_left_enabled_blocks_dfu: bool,
    /// The AN3155 protocol the ROM speaks on its USARTs.
    pub usart_protocol: UsartProtocol,
    /// The DfuSe device (required when `usb_dfu` is true on a modelled chip).
    #[serde(default)]
    pub dfu: Option<RomDfu>,
    /// What the ROM does first when it starts (version quirks; none by default).
    #[serde(default)]
    pub entry: RomEntry,
    /// How the ROM uses the core (interrupts, VTOR, stacks).
    pub execution: Execution,
    /// Go / leave reset the peripherals the ROM used before the jump (AN3155 Go says so; AN2606
    /// for the G0 says not).
    pub peripherals_reset_on_go: bool,
    /// The ROM accepts addresses in the OTP area (`memory.otp`): read and program.
    #[serde(default)]
    pub serves_otp: bool,
    pub source: String,
}

/// Where the debugger sees the readout protection in effect, and how long Readout Unprotect
/// takes to make level 0 effective.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadoutProtection {
    /// The register (a diagnosis register's name, e.g. `FLASH_OPTR` / `FLASH_OBR`) and address.
    pub register: String,
    pub address: u32,
    /// The field holding the level: its name in the reference manual (G0: `RDP`, bits 7:0; F1:
    /// `RDPRT`, bit 1), position and width.
    pub field_name: String,
    pub shift: u8,
    pub width: u8,
    /// The field's value at level 0 (no protection).
    pub level0: u32,
    /// The register shows values written since the last option load (G0 FLASH_OPTR, RM0444
    /// 3.4.1), so level 0 there is in effect only once the debugger reads flash again. False
    /// where it shows loaded values only (F1 FLASH_OBR, PM0075 3.7).
    pub shows_written_value: bool,
    /// Longest time from the ROM's second Readout Unprotect ACK until level 0 is in effect
    /// (mass erase, option rewrite / reload, reset), microseconds.
    pub unprotect_max_us: u32,
    pub source: String,
}

impl ReadoutProtection {
    pub fn field(&self) -> OptionField {
        OptionField { word: self.register.clone(), shift: self.shift, width: self.width }
    }
    /// Whether the register value `value` shows level 0.
    pub fn is_level0(&self, value: u32) -> bool {
        self.field().get(value) == self.level0
    }
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
    /// The core's MPU (ARMv7-M PMSAv7), when the chip data says: absent = the core's default
    /// (Cortex-M3/M4: 8 regions, Cortex-M0+: none).
    #[serde(default)]
    pub mpu: Option<Mpu>,
    pub identity: Identity,
    pub bootloader: Bootloader,
    /// Clock tree facts the virtual board needs (reset clocks, LSI).
    #[serde(default)]
    pub clocks: Option<Clocks>,
    /// Register bits a debugger sets on attach so that halting the core also stops the
    /// watchdogs (otherwise a halt to read registers lets the IWDG reset the chip under test).
    #[serde(default)]
    pub debug_freeze: Option<DebugFreeze>,
    /// Flash program / erase durations (datasheet figures).
    #[serde(default)]
    pub flash_timing: Option<FlashTiming>,
    /// Flash controller (FLASH peripheral) parameters.
    #[serde(default)]
    pub flash_controller: Option<FlashController>,
    /// Option byte layout, fields and factory values.
    #[serde(default)]
    pub option_bytes: Option<OptionBytesLayout>,
    /// Where the readout protection level shows, and how long removing it takes.
    #[serde(default)]
    pub readout_protection: Option<ReadoutProtection>,
    /// Boot selection rules and the empty check.
    #[serde(default)]
    pub boot: Option<BootConfig>,
    /// How the 0x00000000 alias is remapped at run time.
    #[serde(default)]
    pub remap: Option<Remap>,
    /// Pins of the reference board the fixtures use (LED).
    #[serde(default)]
    pub pins: Option<BoardPins>,
    /// Peripheral instances: base addresses, model kinds, interrupt lines, clock gates.
    #[serde(default)]
    pub peripherals: Vec<Peripheral>,
    #[serde(default)]
    pub peripherals_source: Option<String>,
    /// Registers a failure diagnosis reads through the probe, and where the reset flags are.
    #[serde(default)]
    pub diagnosis: Option<DiagnosisRegisters>,
    /// Documents cited by short tag in `source` fields.
    pub documents: BTreeMap<String, String>,
    /// Facts not tied to a primary source: key (dotted path) -> why it is believed.
    #[serde(default)]
    pub unverified: BTreeMap<String, String>,
}

/// Reset clocks of the chip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clocks {
    /// HSI16 RC oscillator: SYSCLK source after reset.
    pub hsi16_hz: u32,
    /// LSI RC oscillator (IWDG clock).
    pub lsi_hz: u32,
    pub source: String,
}

/// A datasheet duration: typical and maximum.
/// Bits set (read-modify-write) in one debug register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBits {
    pub name: String,
    pub address: u32,
    pub set: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugFreeze {
    pub registers: Vec<RegisterBits>,
    pub source: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingFigure {
    pub typ: u32,
    pub max: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlashTiming {
    /// One 64-bit (double-word) program operation, microseconds.
    pub program_double_word_us: TimingFigure,
    /// One page erase, microseconds.
    pub page_erase_us: TimingFigure,
    /// Mass erase, microseconds.
    pub mass_erase_us: TimingFigure,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlashController {
    /// Base address of the FLASH register block.
    pub base: u32,
    /// NVIC line of the flash interrupt.
    pub irq: u32,
    /// FLASH_KEYR unlock sequence.
    pub keys: [u32; 2],
    /// FLASH_OPTKEYR unlock sequence.
    pub option_keys: [u32; 2],
    /// Bytes programmed by one operation (8: a double word written as two words).
    pub program_unit: u32,
    /// FLASH_CR.PNB position and width.
    pub pnb_shift: u8,
    pub pnb_width: u8,
    /// Dual-bank parts: page number of the first page of bank 2.
    #[serde(default)]
    pub bank2_first_page: Option<u32>,
    /// Dual-bank parts: FLASH_CR bit that mass-erases bank 2.
    #[serde(default)]
    pub mer2_bit: Option<u8>,
    /// Dual-bank parts: FLASH_SR busy bit of bank 2.
    #[serde(default)]
    pub bsy2_bit: Option<u8>,
    /// Dual-bank parts whose PNB numbers the pages inside a bank: FLASH_CR bit that selects bank 2
    /// for a page erase (STM32G4: BKER, bit 11, RM0440 5.7.5).
    #[serde(default)]
    pub bker_bit: Option<u8>,
    pub source: String,
}

/// One option word: stored in the option area at `offset` (its complement at
/// `offset + complement_offset`), loaded into the FLASH register at `register`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionWord {
    pub name: String,
    pub offset: u32,
    /// Offset of the FLASH register the word is loaded into.
    pub register: u32,
    /// Value as shipped by ST.
    pub factory: u32,
}

/// A bit field of an option word.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionField {
    pub word: String,
    pub shift: u8,
    pub width: u8,
}

impl OptionField {
    pub fn mask(&self) -> u32 {
        if self.width >= 32 { u32::MAX } else { (1u32 << self.width) - 1 }
    }
    pub fn get(&self, word: u32) -> u32 {
        (word >> self.shift) & self.mask()
    }
    pub fn set(&self, word: u32, value: u32) -> u32 {
        (word & !(self.mask() << self.shift)) | ((value & self.mask()) << self.shift)
    }
}

/// A write-protection area register: pages `start..=end` are protected when start <= end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrpArea {
    pub word: String,
    pub start_shift: u8,
    pub end_shift: u8,
    pub width: u8,
    /// Bank the page numbers count in (1 or 2).
    #[serde(default = "one")]
    pub bank: u8,
}

fn one() -> u8 {
    1
}

/// RDP byte values; every other value is level 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdpLevels {
    pub level0: u8,
    pub level2: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionBytesLayout {
    /// Where each word's complement sits, relative to the word.
    pub complement_offset: u32,
    pub words: Vec<OptionWord>,
    /// Named bit fields (RDP, nBOOT0, nBOOT1, nBOOT_SEL, BOOT_LOCK, IWDG_SW ...).
    pub fields: BTreeMap<String, OptionField>,
    pub wrp: Vec<WrpArea>,
    pub rdp_levels: RdpLevels,
    /// The bit that makes the part take BOOT0 from the nBOOT0 option bit instead of the pin, and
    /// its value that does so. Absent: `nBOOT_SEL`, 1 (STM32G0, RM0444 2.5); the STM32G4 has
    /// nSWBOOT0, 0 (RM0440 2.6).
    #[serde(default)]
    pub boot_select: Option<BootSelect>,
    pub source: String,
}

/// See [`OptionBytesLayout::boot_select`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSelect {
    pub field: String,
    /// The field value that selects the nBOOT0 option bit.
    pub option_bit_value: u8,
}

impl OptionBytesLayout {
    /// (field name, value) that selects the nBOOT0 option bit (`true`) or the BOOT0 pin (`false`).
    pub fn boot_select_value(&self, from_option_bit: bool) -> (&str, u32) {
        match &self.boot_select {
            Some(b) => {
                let v = b.option_bit_value as u32 & 1;
                (b.field.as_str(), if from_option_bit { v } else { v ^ 1 })
            }
            None => ("nBOOT_SEL", from_option_bit as u32),
        }
    }
    /// Whether the USER word `user` takes BOOT0 from the nBOOT0 option bit (`None`: the layout
    /// has no such selection).
    pub fn boots_from_option_bit(&self, user: u32) -> Option<bool> {
        let (name, v) = self.boot_select_value(true);
        self.field(name).map(|f| f.get(user) == v)
    }
    pub fn word(&self, name: &str) -> Option<&OptionWord> {
        self.words.iter().find(|w| w.name == name)
    }
    pub fn field(&self, name: &str) -> Option<&OptionField> {
        self.fields.get(name)
    }
    /// The option area as ST ships it: every word and its complement, other bytes 0xFF.
    pub fn factory_image(&self, area_size: u32) -> Vec<u8> {
        let mut img = vec![0xFF; area_size as usize];
        for w in &self.words {
            for (off, v) in [(w.offset, w.factory), (w.offset + self.complement_offset, !w.factory)] {
                if let Some(dst) = img.get_mut(off as usize..off as usize + 4) {
                    dst.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        img
    }
}

/// What the 0x00000000 alias shows, and where a boot fetches its vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootTarget {
    MainFlash,
    SystemMemory,
    Sram,
}

/// One row of the boot mode table: every input named in `when` must have that value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootRule {
    pub when: BTreeMap<String, u8>,
    pub select: BootTarget,
    /// The empty check applies to this row (an empty main flash boots system memory instead).
    #[serde(default)]
    pub empty_check: bool,
}

/// When option bytes are loaded (and the empty check evaluated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadEvent {
    PowerOn,
    OptionByteLoad,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyCheck {
    /// The word checked for 0xFFFFFFFF.
    pub first_word_address: u32,
    pub evaluated_at: Vec<LoadEvent>,
    pub redirect: BootTarget,
    /// The flag software sees (a diagnosis register name and bit, `FLASH_ACR.16`).
    #[serde(default)]
    pub flag: Option<ClockGate>,
    /// Its name in the reference manual (`FLASH_ACR.EMPTY`), for reports.
    #[serde(default)]
    pub flag_name: Option<String>,
}

/// Inputs a boot rule may name.
pub const BOOT_INPUTS: &[&str] = &["BOOT0", "nBOOT0", "nBOOT1", "nBOOT_SEL", "nSWBOOT0", "BOOT_LOCK"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// The pin sampled as BOOT0 at reset.
    pub boot0_pin: String,
    pub rules: Vec<BootRule>,
    #[serde(default)]
    pub empty_check: Option<EmptyCheck>,
    pub source: String,
}

impl BootConfig {
    /// The first rule whose inputs all match (`input` answers for each named input).
    pub fn select(&self, mut input: impl FnMut(&str) -> Option<u8>) -> Option<&BootRule> {
        self.rules.iter().find(|r| r.when.iter().all(|(k, v)| input(k) == Some(*v)))
    }
}

/// An RCC enable or reset bit, written `REGISTER.bit` in chip files (`APBENR2.14`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClockGate {
    pub register: String,
    pub bit: u8,
}

impl TryFrom<String> for ClockGate {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (reg, bit) = s.split_once('.').ok_or_else(|| format!("{s:?}: expected REGISTER.bit"))?;
        let bit: u8 = bit.parse().map_err(|_| format!("{s:?}: bit is not a number"))?;
        if bit > 31 || reg.is_empty() {
            return Err(format!("{s:?}: expected REGISTER.bit with bit 0..31"));
        }
        Ok(ClockGate { register: reg.to_string(), bit })
    }
}

impl From<ClockGate> for String {
    fn from(g: ClockGate) -> String {
        format!("{}.{}", g.register, g.bit)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remap {
    /// What the field is called in the reference manual (`SYSCFG_CFGR1.MEM_MODE`), for reports.
    #[serde(default)]
    pub field_name: Option<String>,
    /// Address of the register holding the field.
    pub register: u32,
    pub shift: u8,
    pub width: u8,
    /// Field value -> what the alias shows.
    pub values: BTreeMap<u8, BootTarget>,
    /// Clock that must be on for writes to take effect.
    pub clock: ClockGate,
    /// The clock bit's name in the reference manual (`RCC_APBENR2.SYSCFGEN`), for reports.
    #[serde(default)]
    pub clock_name: Option<String>,
    pub source: String,
}

impl Remap {
    /// The field value that shows `target` (the lowest one).
    pub fn value_of(&self, target: BootTarget) -> Option<u8> {
        self.values.iter().find(|(_, t)| **t == target).map(|(v, _)| *v)
    }
}

/// A GPIO pin such as `PA5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PinId {
    /// Port index: 0 = A, 1 = B, ...
    pub port: u8,
    pub pin: u8,
}

impl PinId {
    /// A dedicated BOOT0 pin (STM32F1: BOOT0 is not a GPIO, RM0008 3.4), kept apart from the ports.
    pub const BOOT0: PinId = PinId { port: 0xFF, pin: 0 };

    pub fn parse(s: &str) -> Option<PinId> {
        if s == "BOOT0" {
            return Some(PinId::BOOT0);
        }
        let b = s.as_bytes();
        if b.len() < 3 || b[0] != b'P' || !b[1].is_ascii_uppercase() {
            return None;
        }
        let pin: u8 = s[2..].parse().ok()?;
        (pin < 16).then_some(PinId { port: b[1] - b'A', pin })
    }
    pub fn port_letter(&self) -> char {
        (b'A' + self.port) as char
    }
}

impl std::fmt::Display for PinId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == PinId::BOOT0 {
            return write!(f, "BOOT0");
        }
        write!(f, "P{}{}", self.port_letter(), self.pin)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRef {
    pub pin: String,
    pub active_high: bool,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardPins {
    #[serde(default)]
    pub led: Option<PinRef>,
}

/// Which model of the virtual board implements a peripheral instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeripheralKind {
    Flash,
    Rcc,
    Syscfg,
    Usart,
    Iwdg,
    Wwdg,
    Dbgmcu,
    Gpio,
    /// Not modelled: a register file that reads back what was written.
    Generic,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peripheral {
    pub name: String,
    pub kind: PeripheralKind,
    pub base: u32,
    pub size: u32,
    #[serde(default)]
    pub irq: Option<u32>,
    /// RCC clock-enable bit (none: always clocked).
    #[serde(default)]
    pub clock: Option<ClockGate>,
    /// RCC reset bit.
    #[serde(default)]
    pub reset: Option<ClockGate>,
    /// USARTs: position of the kernel clock selection field in RCC_CCIPR.
    #[serde(default)]
    pub kernel_clock_select: Option<u8>,
    /// Register-level version of the model (`usart-v1` for the F1 USART, `flash-f1`, `rcc-f1`,
    /// `gpio-f1`, `dbgmcu-f1`); absent: the G0 model of `kind`.
    #[serde(default)]
    pub version: Option<PeripheralVersion>,
}

/// Which register layout of a peripheral kind a part has (one model module per version).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeripheralVersion {
    /// USART of the STM32F1 (RM0008 27.6: SR/DR/BRR/CR1-3, no auto-baud, no ISR/ICR).
    UsartV1,
    /// USART of the STM32G0/G4 (RM0444 33.8: ISR/ICR/RDR/TDR).
    UsartV2,
    /// FLASH controller (FPEC) of the STM32F1 (RM0008 3.3, PM0075).
    FlashF1,
    /// RCC of the STM32F1 (RM0008 7.3).
    RccF1,
    /// GPIO of the STM32F1 (RM0008 9.2: CRL/CRH).
    GpioF1,
    /// DBGMCU of the STM32F1 (RM0008 31.6: IDCODE, CR in the PPB).
    DbgmcuF1,
    /// RCC of the STM32G4 (RM0440 7.4: AHB1/AHB2/APB1/APB2 enable registers, CSR at 0x94).
    RccG4,
    /// FLASH controller of the STM32G4 (RM0440 5.7): the G0 register layout with BKER page
    /// selection, modelled by the G0 controller driven by the chip data.
    FlashG4,
}

impl Peripheral {
    /// Whether this instance is the F1-family register layout of its kind.
    pub fn is_f1(&self) -> bool {
        matches!(
            self.version,
            Some(
                PeripheralVersion::UsartV1
                    | PeripheralVersion::FlashF1
                    | PeripheralVersion::RccF1
                    | PeripheralVersion::GpioF1
                    | PeripheralVersion::DbgmcuF1
            )
        )
    }
}

/// A memory-mapped register by name, for diagnosis snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedRegister {
    pub name: String,
    pub address: u32,
}

/// Where the reset flags of the last reset live (RCC_CSR on STM32): register and bit per cause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetFlags {
    pub register: String,
    pub power_on: u8,
    pub pin: u8,
    pub software: u8,
    pub independent_watchdog: u8,
    pub window_watchdog: u8,
    pub option_byte_load: u8,
    pub low_power: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosisRegisters {
    /// Read (in this order) into every failure snapshot.
    pub registers: Vec<NamedRegister>,
    pub reset_flags: ResetFlags,
    /// Where the diagnosis sees whether the application left its USB device on the bus (seed 004).
    #[serde(default)]
    pub usb: Option<UsbAttachBits>,
    pub source: String,
}

/// The bits that show a USB device peripheral left running and attached: its clock, its D+
/// pull-up and the power-down / forced-reset bits of its control register. Each is written
/// `REGISTER.bit` with REGISTER one of the diagnosis `registers` (`USB_BCDR.15`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbAttachBits {
    /// The peripheral clock enable (`RCC_APB1ENR1.23`).
    pub clock: ClockGate,
    /// The D+ pull-up: set, the device is on the bus (`USB_BCDR.15`).
    pub pullup: ClockGate,
    /// Analog power-down (`USB_CNTR.1`): set, the transceiver is off.
    pub power_down: ClockGate,
    /// Forced reset (`USB_CNTR.0`): set, the peripheral is held in reset.
    pub force_reset: ClockGate,
    /// Reference-manual names of the four bits, in the order above, for reports.
    pub names: [String; 4],
    pub source: String,
}

impl UsbAttachBits {
    /// The four bits with their names: clock, pull-up, power-down, forced reset.
    pub fn bits(&self) -> [(&ClockGate, &str); 4] {
        [
            (&self.clock, self.names[0].as_str()),
            (&self.pullup, self.names[1].as_str()),
            (&self.power_down, self.names[2].as_str()),
            (&self.force_reset, self.names[3].as_str()),
        ]
    }
}

impl DiagnosisRegisters {
    pub fn address_of(&self, name: &str) -> Option<u32> {
        self.registers.iter().find(|r| r.name == name).map(|r| r.address)
    }
}

impl Chip {
    /// The diagnosis register an option word is loaded into (the USER word: `FLASH_OPTR` on the
    /// G0/G4), found by address: flash controller base + the word's `register` offset.
    pub fn option_word_register(&self, word: &str) -> Option<&str> {
        let address = self.flash_controller.as_ref()?.base + self.option_bytes.as_ref()?.word(word)?.register;
        let d = self.diagnosis.as_ref()?;
        d.registers.iter().find(|r| r.address == address).map(|r| r.name.as_str())
    }

    /// The peripheral instance called `name`.
    pub fn peripheral(&self, name: &str) -> Option<&Peripheral> {
        self.peripherals.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Peripheral instances of one kind.
    pub fn peripherals_of(&self, kind: PeripheralKind) -> impl Iterator<Item = &Peripheral> {
        self.peripherals.iter().filter(move |p| p.kind == kind)
    }
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
        let matches = |c: &&Chip| c.name.eq_ignore_ascii_case(name) || c.probe_rs_target.eq_ignore_ascii_case(name);
        // Files are named after their part (stm32g071rb.yaml), and a probe-rs target name extends
        // the part name (STM32G071RBTx): try the file so named first, and parse the others only if
        // it is not there. Parsing every chip is most of a command's start-up (YAML), which matters
        // where instructions are dear (`hil` inside an emulated guest).
        let lower = name.to_ascii_lowercase();
        let mut named = CHIP_FILES
            .iter()
            .enumerate()
            .filter(|(_, (file, _))| file.strip_suffix(".yaml").is_some_and(|stem| lower.starts_with(stem)))
            .map(|(i, _)| shipped(i));
        named.find(matches).or_else(|| all().find(matches))
    }
}

/// All shipped chips, in file order. Panics only if a shipped chip file is broken, which the tests
/// below catch.
pub fn all() -> impl Iterator<Item = &'static Chip> + Clone {
    (0..CHIP_FILES.len()).map(shipped)
}

/// Shipped chip file `index`, parsed on first use.
fn shipped(index: usize) -> &'static Chip {
    static CHIPS: OnceLock<Vec<OnceLock<Chip>>> = OnceLock::new();
    let slots = CHIPS.get_or_init(|| CHIP_FILES.iter().map(|_| OnceLock::new()).collect());
    slots[index].get_or_init(|| {
        let (file, text) = CHIP_FILES[index];
        // The JSON twin is quicker to read (build.rs); the YAML names the line of an error.
        let from_json = CHIP_JSON[index].and_then(|json| serde_json::from_str::<Chip>(json).ok());
        from_json
            .map_or_else(|| parse_chip(file, text), |chip| check_chip(file, chip))
            .unwrap_or_else(|e| panic!("shipped chip data is broken: {e}"))
    })
}

/// Names of the shipped chips, for error messages.
pub fn names() -> Vec<&'static str> {
    all().map(|c| c.name.as_str()).collect()
}

/// Parse and check one chip file.
pub fn parse_chip(file: &str, text: &str) -> Result<Chip, ChipError> {
    let chip: Chip = serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        // serde_yaml appends " at line L column C": the location is in front already.
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_string();
        ChipError::Parse { file: file.into(), line, column, message }
    })?;
    check_chip(file, chip)
}

/// The checks a parsed chip must pass (facts that contradict each other or the memory map).
fn check_chip(file: &str, chip: Chip) -> Result<Chip, ChipError> {
    let invalid = |message: String| ChipError::Invalid { file: file.into(), message };
    let m = &chip.memory;
    if !m.flash.size.is_multiple_of(m.flash.page_size) {
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
    validate_rom(&chip).map_err(|e| invalid(e.0))?;
    if chip.virtual_board {
        validate_model(&chip).map_err(|e| invalid(e.0))?;
    }
    if let Some(d) = &chip.diagnosis
        && let Some(usb) = &d.usb
    {
        for (bit, name) in usb.bits() {
            if d.address_of(&bit.register).is_none() {
                return Err(invalid(format!(
                    "diagnosis.usb: {name} is in {}, which is not one of the diagnosis registers",
                    bit.register
                )));
            }
        }
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

/// ROM facts that contradict themselves or the memory map.
fn validate_rom(chip: &Chip) -> Result<(), Inconsistency> {
    let b = &chip.bootloader;
    let cmds = &b.usart_protocol.commands;
    if !cmds.contains(&RomCommand::Get) {
        return Err(Inconsistency::from(
            "bootloader.usart_protocol.commands must list get (AN3155: Get lists the commands)",
        ));
    }
    for (i, c) in cmds.iter().enumerate() {
        if cmds[..i].contains(c) {
            return Err(Inconsistency::from(format!("bootloader.usart_protocol.commands lists {c:?} twice")));
        }
    }
    if cmds.contains(&RomCommand::Erase) && cmds.contains(&RomCommand::ExtendedErase) {
        return Err(Inconsistency::from(
            "bootloader.usart_protocol.commands: erase and extended-erase are exclusive (AN3155 Table 2)",
        ));
    }
    if b.serves_otp && chip.memory.otp.is_none() {
        return Err(Inconsistency::from("bootloader.serves_otp needs memory.otp"));
    }
    if let Some(dfu) = &b.dfu {
        if !b.usb_dfu {
            return Err(Inconsistency::from("bootloader.dfu is given but bootloader.usb_dfu is false"));
        }
        for a in &dfu.alt_settings {
            if a.memory == DfuMemory::Otp && chip.memory.otp.is_none() {
                return Err(Inconsistency::from(format!(
                    "bootloader.dfu.alt_settings {:?} names the OTP, but memory.otp is missing",
                    a.name
                )));
            }
            if !('a'..='g').contains(&a.kind) {
                return Err(Inconsistency::from(format!(
                    "bootloader.dfu.alt_settings {:?}: type {:?} is not a..g",
                    a.name, a.kind
                )));
            }
        }
    }
    Ok(())
}

/// Why a chip file's sections do not fit together (the loader names the file:
/// [`ChipError::Invalid`]).
#[derive(Debug)]
struct Inconsistency(String);

impl From<String> for Inconsistency {
    fn from(message: String) -> Self {
        Inconsistency(message)
    }
}

impl From<&str> for Inconsistency {
    fn from(message: &str) -> Self {
        Inconsistency(message.to_string())
    }
}

/// What the virtual board needs from a chip it models.
fn validate_model(chip: &Chip) -> Result<(), Inconsistency> {
    let need = |what: &str| format!("virtual_board is true but `{what}` is missing");
    chip.clocks.as_ref().ok_or_else(|| need("clocks"))?;
    chip.flash_timing.as_ref().ok_or_else(|| need("flash_timing"))?;
    let fc = chip.flash_controller.as_ref().ok_or_else(|| need("flash_controller"))?;
    let boot = chip.boot.as_ref().ok_or_else(|| need("boot"))?;
    chip.bootloader.initial_sp.ok_or_else(|| need("bootloader.initial_sp"))?;
    if chip.peripherals.is_empty() {
        return Err(Inconsistency::from(need("peripherals")));
    }
    let flash_f1 = chip
        .peripherals_of(PeripheralKind::Flash)
        .next()
        .is_some_and(|p| p.version == Some(PeripheralVersion::FlashF1));
    // The F1 FPEC programs half words (PM0075 2.3.3) and its option bytes are byte / complement
    // pairs that the flash-f1 model knows (RM0008 3.4 / PM0075 2.5); the G0 controller programs
    // double words and takes its option layout from the chip data.
    let unit = if flash_f1 { 2 } else { 8 };
    if fc.program_unit != unit {
        return Err(Inconsistency::from(format!(
            "flash_controller.program_unit {} is not modelled (expected {unit})",
            fc.program_unit
        )));
    }
    // A page number is either global (bank 2 from `bank2_first_page`) or per bank with a BKER bit.
    if fc.bker_bit.is_some() && (fc.bank2_first_page.is_some() || chip.memory.flash.banks != 2) {
        return Err(Inconsistency::from("flash_controller.bker_bit needs two banks and no bank2_first_page"));
    }
    let empty = BTreeMap::new();
    let ob_storage;
    let ob = match chip.option_bytes.as_ref() {
        Some(ob) => ob,
        None if flash_f1 => {
            ob_storage = OptionBytesLayout {
                boot_select: None,
                complement_offset: 0,
                words: Vec::new(),
                fields: empty,
                wrp: Vec::new(),
                rdp_levels: RdpLevels { level0: 0xA5, level2: 0xA5 },
                source: String::new(),
            };
            &ob_storage
        }
        None => return Err(Inconsistency::from(need("option_bytes"))),
    };
    for (name, f) in &ob.fields {
        if ob.word(&f.word).is_none() {
            return Err(Inconsistency::from(format!("option_bytes.fields.{name} names unknown word {:?}", f.word)));
        }
        if f.width == 0 || f.shift as u32 + f.width as u32 > 32 {
            return Err(Inconsistency::from(format!(
                "option_bytes.fields.{name}: bits {}+{} do not fit a word",
                f.shift, f.width
            )));
        }
    }
    for w in &ob.words {
        if w.offset + ob.complement_offset + 4 > chip.memory.option_bytes.size {
            return Err(Inconsistency::from(format!(
                "option word {} at +{:#x} lies outside the option area",
                w.name, w.offset
            )));
        }
    }
    for a in &ob.wrp {
        if ob.word(&a.word).is_none() {
            return Err(Inconsistency::from(format!("option_bytes.wrp names unknown word {:?}", a.word)));
        }
    }
    if let Some(b) = &ob.boot_select
        && ob.field(&b.field).is_none()
    {
        return Err(Inconsistency::from(format!("option_bytes.boot_select names unknown field {:?}", b.field)));
    }
    if ob.field("RDP").is_none() && !flash_f1 {
        return Err(Inconsistency::from("option_bytes.fields has no RDP"));
    }
    for (i, r) in boot.rules.iter().enumerate() {
        for k in r.when.keys() {
            if !BOOT_INPUTS.contains(&k.as_str()) {
                return Err(Inconsistency::from(format!(
                    "boot.rules[{i}] names unknown input {k:?} (known: {BOOT_INPUTS:?})"
                )));
            }
            if k != "BOOT0" && ob.field(k).is_none() {
                return Err(Inconsistency::from(format!(
                    "boot.rules[{i}] uses {k}, which option_bytes.fields does not define"
                )));
            }
        }
    }
    PinId::parse(&boot.boot0_pin).ok_or_else(|| format!("boot.boot0_pin {:?} is not a pin name", boot.boot0_pin))?;
    if let Some(led) = chip.pins.as_ref().and_then(|p| p.led.as_ref()) {
        PinId::parse(&led.pin).ok_or_else(|| format!("pins.led {:?} is not a pin name", led.pin))?;
    }
    if let Some(remap) = chip.remap.as_ref()
        && (remap.width == 0 || remap.width > 8 || (1u32 << remap.width) as usize != remap.values.len())
    {
        return Err(Inconsistency::from("remap.values must name every value of the field"));
    }
    let mut sorted: Vec<&Peripheral> = chip.peripherals.iter().collect();
    sorted.sort_by_key(|p| p.base);
    for w in sorted.windows(2) {
        if w[0].base as u64 + w[0].size as u64 > w[1].base as u64 {
            return Err(Inconsistency::from(format!("peripherals {} and {} overlap", w[0].name, w[1].name)));
        }
    }
    for kind in [PeripheralKind::Flash, PeripheralKind::Rcc, PeripheralKind::Dbgmcu] {
        if chip.peripherals_of(kind).count() != 1 {
            return Err(Inconsistency::from(format!("exactly one {kind:?} peripheral is required")));
        }
    }
    // The remap register lives in SYSCFG; parts without one (F1) have no SYSCFG either.
    let syscfgs = chip.peripherals_of(PeripheralKind::Syscfg).count();
    if chip.remap.is_some() != (syscfgs == 1) || syscfgs > 1 {
        return Err(Inconsistency::from(
            "a `remap` section needs exactly one syscfg peripheral, and a syscfg needs `remap`",
        ));
    }
    if chip.peripherals_of(PeripheralKind::Flash).next().map(|p| p.base) != Some(fc.base) {
        return Err(Inconsistency::from("the flash peripheral's base differs from flash_controller.base"));
    }
    validate_readout_protection(chip)?;
    let b = &chip.bootloader;
    if b.usb_dfu && b.dfu.is_none() {
        return Err(Inconsistency::from("bootloader.usb_dfu is true but `bootloader.dfu` is missing"));
    }
    for u in &chip.bootloader.usart {
        let p = chip
            .peripheral(&u.instance)
            .ok_or_else(|| format!("bootloader USART {} is not a peripheral", u.instance))?;
        if p.kind != PeripheralKind::Usart {
            return Err(Inconsistency::from(format!("bootloader USART {} is not modelled as a usart", u.instance)));
        }
    }
    Ok(())
}

/// The protection status register must be a modelled register, agree with the option layout
/// where it is the USER word's register, and allow at least a mass erase for Readout Unprotect.
fn validate_readout_protection(chip: &Chip) -> Result<(), Inconsistency> {
    let rp = chip.readout_protection.as_ref().ok_or("virtual_board is true but `readout_protection` is missing")?;
    if rp.width == 0 || rp.shift as u32 + rp.width as u32 > 32 || rp.level0 > rp.field().mask() {
        return Err(Inconsistency::from(format!(
            "readout_protection: level {:#x} in bits {}+{} does not fit",
            rp.level0, rp.shift, rp.width
        )));
    }
    if !chip.peripherals.iter().any(|p| (p.base..p.base.saturating_add(p.size)).contains(&rp.address)) {
        return Err(Inconsistency::from(format!(
            "readout_protection.address {:#010x} is in no peripheral",
            rp.address
        )));
    }
    if let Some(t) = &chip.flash_timing
        && rp.unprotect_max_us < t.mass_erase_us.max
    {
        return Err(Inconsistency::from(format!(
            "readout_protection.unprotect_max_us {} is shorter than the mass erase ({} us)",
            rp.unprotect_max_us, t.mass_erase_us.max
        )));
    }
    // Where the status register is the USER option word's register (G0/G4 FLASH_OPTR), the RDP
    // field and its level-0 value must be the option layout's.
    let user_register = (|| {
        let ob = chip.option_bytes.as_ref()?;
        Some((chip.flash_controller.as_ref()?.base + ob.word("USER")?.register, ob))
    })();
    if let Some((address, ob)) = user_register
        && address == rp.address
        && let Some(rdp) = ob.field("RDP")
        && (rdp.shift != rp.shift || rdp.width != rp.width || u32::from(ob.rdp_levels.level0) != rp.level0)
    {
        return Err(Inconsistency::from(
            "readout_protection disagrees with option_bytes (RDP field or rdp_levels.level0)",
        ));
    }
    if let Some(d) = &chip.diagnosis
        && d.address_of(&rp.register) != Some(rp.address)
    {
        return Err(Inconsistency::from(format!(
            "readout_protection.register {} is not a diagnosis register at that address",
            rp.register
        )));
    }
    Ok(())
}

/// Document tags cited at the start of `source` strings ("RM0444 3.3.1" cites RM0444).
fn cited_tags(chip: &Chip) -> Vec<String> {
    let m = &chip.memory;
    let mut sources: Vec<&String> = vec![
        &m.flash.source,
        &m.sram.source,
        &m.system_memory.source,
        &m.option_bytes.source,
        &chip.interrupts.source,
        &chip.identity.source,
        &chip.bootloader.source,
        &chip.bootloader.reserved_ram.source,
    ];
    sources.extend(m.otp.iter().map(|a| &a.source));
    sources.extend(m.engineering_bytes.iter().map(|a| &a.source));
    sources.extend(chip.clocks.iter().map(|c| &c.source));
    sources.extend(chip.debug_freeze.iter().map(|c| &c.source));
    sources.extend(chip.flash_timing.iter().map(|c| &c.source));
    sources.extend(chip.flash_controller.iter().map(|c| &c.source));
    sources.extend(chip.option_bytes.iter().map(|c| &c.source));
    sources.extend(chip.boot.iter().map(|c| &c.source));
    sources.extend(chip.remap.iter().map(|c| &c.source));
    sources.extend(chip.pins.iter().flat_map(|p| p.led.iter()).map(|l| &l.source));
    sources.extend(chip.peripherals_source.iter());
    sources.extend(chip.diagnosis.iter().map(|d| &d.source));
    let b = &chip.bootloader;
    sources.extend([&b.usart_protocol.source, &b.execution.source]);
    sources.extend(b.entry.source.iter());
    sources.extend(b.dfu.iter().map(|d| &d.source));
    sources.extend(chip.readout_protection.iter().map(|r| &r.source));
    sources.extend(chip.diagnosis.iter().flat_map(|d| d.usb.iter()).map(|u| &u.source));
    sources
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
        let chips: Vec<Chip> =
            CHIP_FILES.iter().map(|(file, text)| parse_chip(file, text)).collect::<Result<_, _>>().unwrap();
        assert_eq!(chips.len(), CHIP_FILES.len());
        let mut names: Vec<_> = chips.iter().map(|c| &c.name).collect();
        names.dedup();
        assert_eq!(names.len(), chips.len(), "duplicate chip names");
    }

    #[test]
    fn the_json_twin_of_every_chip_file_reads_as_its_yaml() {
        for (i, (file, text)) in CHIP_FILES.iter().enumerate() {
            let json = CHIP_JSON[i].unwrap_or_else(|| panic!("{file} has no JSON twin"));
            let from_json: Chip = serde_json::from_str(json).unwrap_or_else(|e| panic!("{file} as JSON: {e}"));
            let from_yaml = parse_chip(file, text).unwrap();
            assert_eq!(serde_json::to_value(&from_json).unwrap(), serde_json::to_value(&from_yaml).unwrap(), "{file}");
            assert_eq!(shipped(i).name, from_yaml.name);
        }
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
    fn g071_boot_table_rows() {
        let g071 = Chip::by_name("STM32G071RB").unwrap();
        let boot = g071.boot.as_ref().unwrap();
        let sel = |boot0: u8, sel: u8, n0: u8, n1: u8, lock: u8| {
            let r = boot
                .select(|k| match k {
                    "BOOT0" => Some(boot0),
                    "nBOOT_SEL" => Some(sel),
                    "nBOOT0" => Some(n0),
                    "nBOOT1" => Some(n1),
                    "BOOT_LOCK" => Some(lock),
                    _ => None,
                })
                .unwrap();
            (r.select, r.empty_check)
        };
        // Factory options (nBOOT_SEL = nBOOT0 = nBOOT1 = 1): the pin is ignored.
        assert_eq!(sel(1, 1, 1, 1, 0), (BootTarget::MainFlash, true));
        assert_eq!(sel(0, 0, 1, 1, 0), (BootTarget::MainFlash, true));
        assert_eq!(sel(1, 0, 1, 1, 0), (BootTarget::SystemMemory, false));
        assert_eq!(sel(1, 0, 1, 0, 0), (BootTarget::Sram, false));
        assert_eq!(sel(0, 1, 0, 1, 0), (BootTarget::SystemMemory, false));
        assert_eq!(sel(0, 1, 0, 0, 0), (BootTarget::Sram, false));
        assert_eq!(sel(1, 0, 0, 0, 1), (BootTarget::MainFlash, false));
    }

    #[test]
    fn g474_boot_table_follows_nswboot0_and_flash_uses_bker() {
        let g4 = Chip::by_name("STM32G474RE").unwrap();
        assert_eq!(g4.identity.dev_id, 0x469);
        assert_eq!(g4.bootloader.id, 0xD5);
        assert_eq!(g4.peripheral("RCC").unwrap().version, Some(PeripheralVersion::RccG4));
        let boot = g4.boot.as_ref().unwrap();
        assert_eq!(boot.boot0_pin, "PB8");
        assert!(boot.empty_check.is_none());
        // (BOOT0, nSWBOOT0, nBOOT0, nBOOT1, BOOT_LOCK) -> target (RM0440 2.6 Table 8).
        let sel = |b0: u8, sw: u8, n0: u8, n1: u8, lock: u8| {
            boot.select(|k| match k {
                "BOOT0" => Some(b0),
                "nSWBOOT0" => Some(sw),
                "nBOOT0" => Some(n0),
                "nBOOT1" => Some(n1),
                "BOOT_LOCK" => Some(lock),
                _ => None,
            })
            .unwrap()
            .select
        };
        assert_eq!(sel(0, 1, 1, 1, 0), BootTarget::MainFlash);
        assert_eq!(sel(1, 1, 1, 1, 0), BootTarget::SystemMemory);
        assert_eq!(sel(1, 1, 1, 0, 0), BootTarget::Sram);
        // nSWBOOT0 = 0: the pin is ignored, nBOOT0 decides.
        assert_eq!(sel(1, 0, 1, 1, 0), BootTarget::MainFlash);
        assert_eq!(sel(0, 0, 0, 1, 0), BootTarget::SystemMemory);
        assert_eq!(sel(0, 0, 0, 0, 0), BootTarget::Sram);
        assert_eq!(sel(1, 1, 1, 1, 1), BootTarget::MainFlash);
        // Factory USER word: DBANK = 1, nSWBOOT0 = nBOOT0 = nBOOT1 = 1.
        let ob = g4.option_bytes.as_ref().unwrap();
        let user = ob.word("USER").unwrap().factory;
        for f in ["DBANK", "nSWBOOT0", "nBOOT0", "nBOOT1"] {
            assert_eq!(ob.field(f).unwrap().get(user), 1, "{f}");
        }
        // nSWBOOT0 = 0 selects the nBOOT0 option bit (the rig's `nboot-sel: true`).
        assert_eq!(ob.boot_select_value(true), ("nSWBOOT0", 0));
        assert_eq!(ob.boots_from_option_bit(user), Some(false));
        let g0 = Chip::by_name("STM32G071RB").unwrap().option_bytes.as_ref().unwrap();
        assert_eq!(g0.boot_select_value(true), ("nBOOT_SEL", 1));
        // BKER page selection is refused together with global bank-2 page numbers.
        let text = CHIP_FILES.iter().find(|(f, _)| *f == "stm32g474re.yaml").expect("shipped").1;
        let e =
            parse_chip("x.yaml", &text.replace("bker_bit: 11", "bker_bit: 11\n  bank2_first_page: 128")).unwrap_err();
        assert!(e.to_string().contains("bker_bit"), "{e}");
    }

    #[test]
    fn f103_is_modelled_with_the_f1_peripheral_versions_and_boot0_pin_only() {
        let f103 = Chip::by_name("STM32F103CB").unwrap();
        assert!(f103.virtual_board);
        assert_eq!(f103.core, CoreKind::CortexM3);
        assert_eq!(f103.mpu.as_ref().map(|m| m.regions), Some(0), "no MPU on the medium-density F103");
        let v = |n: &str| f103.peripheral(n).unwrap().version;
        assert_eq!(v("USART1"), Some(PeripheralVersion::UsartV1));
        assert_eq!(v("FLASH"), Some(PeripheralVersion::FlashF1));
        assert_eq!(v("RCC"), Some(PeripheralVersion::RccF1));
        assert_eq!(v("DBGMCU"), Some(PeripheralVersion::DbgmcuF1));
        assert!(f103.peripheral("USART1").unwrap().is_f1());
        assert_eq!(Chip::by_name("STM32G071RB").unwrap().peripheral("USART1").unwrap().version, None);
        // No remap, no option-word layout, no empty check; BOOT0 is a dedicated pin.
        assert!(f103.remap.is_none() && f103.option_bytes.is_none());
        let boot = f103.boot.as_ref().unwrap();
        assert!(boot.empty_check.is_none());
        assert_eq!(PinId::parse(&boot.boot0_pin), Some(PinId::BOOT0));
        assert_eq!(PinId::BOOT0.to_string(), "BOOT0");
        let sel = |b0: u8| boot.select(|k| (k == "BOOT0").then_some(b0)).unwrap().select;
        assert_eq!(sel(0), BootTarget::MainFlash);
        assert_eq!(sel(1), BootTarget::SystemMemory);
        // A G0-style controller with the F1 program unit, and an F1 part with a SYSCFG, are refused.
        let text = CHIP_FILES.iter().find(|(f, _)| *f == "stm32f103cb.yaml").expect("shipped").1;
        let e = parse_chip("x.yaml", &text.replace("program_unit: 2", "program_unit: 8")).unwrap_err();
        assert!(e.to_string().contains("program_unit 8"), "{e}");
        let e =
            parse_chip("x.yaml", &text.replace("kind: generic, base: 0x40010000", "kind: syscfg, base: 0x40010000"))
                .unwrap_err();
        assert!(e.to_string().contains("remap"), "{e}");
    }

    #[test]
    fn factory_option_image_holds_words_and_complements() {
        let g071 = Chip::by_name("STM32G071RB").unwrap();
        let ob = g071.option_bytes.as_ref().unwrap();
        let img = ob.factory_image(g071.memory.option_bytes.size);
        assert_eq!(img.len(), 0x80);
        assert_eq!(u32::from_le_bytes(img[0..4].try_into().unwrap()), 0xFFFF_FEAA);
        assert_eq!(u32::from_le_bytes(img[4..8].try_into().unwrap()), !0xFFFF_FEAAu32);
        let rdp = ob.field("RDP").unwrap();
        assert_eq!(rdp.get(0xFFFF_FEAA), 0xAA);
        assert_eq!(rdp.set(0xFFFF_FEAA, 0xBB), 0xFFFF_FEBB);
        assert_eq!(ob.field("nBOOT0").unwrap().get(0xFFFF_FEAA), 1);
    }

    #[test]
    fn clock_gates_and_pins_parse() {
        let g071 = Chip::by_name("STM32G071RB").unwrap();
        let u1 = g071.peripheral("usart1").unwrap();
        assert_eq!(u1.clock, Some(ClockGate { register: "APBENR2".into(), bit: 14 }));
        assert_eq!(u1.irq, Some(27));
        assert!(ClockGate::try_from("APBENR2".to_string()).is_err());
        assert!(ClockGate::try_from("APBENR2.32".to_string()).is_err());
        assert_eq!(PinId::parse("PA14"), Some(PinId { port: 0, pin: 14 }));
        assert_eq!(PinId::parse("PF1").unwrap().to_string(), "PF1");
        assert_eq!(PinId::parse("PA16"), None);
        assert_eq!(g071.remap.as_ref().unwrap().value_of(BootTarget::SystemMemory), Some(1));
        let g0b1 = Chip::by_name("STM32G0B1RE").unwrap();
        assert_eq!(g0b1.flash_controller.as_ref().unwrap().bank2_first_page, Some(256));
    }

    #[test]
    fn model_sections_are_checked() {
        let g071 = CHIP_FILES.iter().find(|(f, _)| *f == "stm32g071rb.yaml").expect("shipped").1;
        let e =
            parse_chip("x.yaml", &g071.replace("{ nBOOT_SEL: 0, BOOT0: 0 }", "{ nBOOT_SL: 0, BOOT0: 0 }")).unwrap_err();
        assert!(e.to_string().contains("unknown input \"nBOOT_SL\""), "{e}");
        let e = parse_chip("x.yaml", &g071.replace("base: 0x40003800, size: 0x400", "base: 0x40003000, size: 0x400"))
            .unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        let e = parse_chip("x.yaml", &g071.replace("  initial_sp: 0x20002700\n", "")).unwrap_err();
        assert!(e.to_string().contains("bootloader.initial_sp"), "{e}");
        let e = parse_chip("x.yaml", &g071.replace("DS12232 5.3.10", "DSXXXX 5.3.10")).unwrap_err();
        assert!(e.to_string().contains("DSXXXX"), "{e}");
    }

    /// A ROM fact missing from a chip file, or misspelt, is a FILE:LINE:COL error.
    #[test]
    fn a_chip_file_missing_a_rom_fact_gives_a_located_error() {
        let g071 = CHIP_FILES.iter().find(|(f, _)| *f == "stm32g071rb.yaml").expect("shipped").1;
        let bootloader_line = g071.lines().position(|l| l == "bootloader:").unwrap() + 2;
        let without = |key: &str| {
            let mut out = String::new();
            let mut skipping = false;
            for l in g071.lines() {
                if l == format!("  {key}:") || l.starts_with(&format!("  {key}: ")) {
                    skipping = true;
                    continue;
                }
                if skipping && l.starts_with("    ") {
                    continue;
                }
                skipping = false;
                out.push_str(l);
                out.push('\n');
            }
            out
        };
        for key in ["usart_protocol", "execution", "peripherals_reset_on_go"] {
            let e = parse_chip("x.yaml", &without(key)).unwrap_err().to_string();
            assert!(e.starts_with(&format!("chips/x.yaml:{bootloader_line}:")), "{key}: {e}");
            assert!(e.contains(&format!("missing field `{key}`")), "{e}");
        }
        let e = parse_chip("x.yaml", &g071.replace("    version: 0x31\n", "")).unwrap_err().to_string();
        assert!(e.contains("missing field `version`"), "{e}");
        // A command name AN3155 does not have.
        let text = g071.replace("go, write-memory,", "go, write-memry,");
        let line = text.lines().position(|l| l.contains("write-memry")).unwrap() + 1;
        let e = parse_chip("x.yaml", &text).unwrap_err().to_string();
        assert!(e.starts_with(&format!("chips/x.yaml:{line}:")) && e.contains("write-memry"), "{e}");
        // DFU data on a ROM without DFU, or a DFU ROM without its data, is refused.
        let e = parse_chip("x.yaml", &g071.replace("usb_dfu: false", "usb_dfu: true")).unwrap_err().to_string();
        assert!(e.contains("bootloader.dfu"), "{e}");
        let e = parse_chip(
            "x.yaml",
            &g071.replace("go, write-memory, extended-erase", "go, write-memory, erase, extended-erase"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("exclusive"), "{e}");
    }

    /// The RDP status register of each chip: G0/G4 FLASH_OPTR.RDP (level 0 = 0xAA, RM0444 3.5.1 /
    /// RM0440 5.5.1), F1 FLASH_OBR.RDPRT (bit 1, 0 = unprotected, PM0075 3.7); a status that
    /// disagrees with the option layout or is shorter than a mass erase is refused.
    #[test]
    fn readout_protection_status_per_family() {
        for name in ["STM32G071RB", "STM32G0B1RE", "STM32G474RE"] {
            let rp = Chip::by_name(name).unwrap().readout_protection.as_ref().unwrap();
            assert_eq!(
                (rp.register.as_str(), rp.address, rp.shift, rp.width, rp.level0),
                ("FLASH_OPTR", 0x4002_2020, 0, 8, 0xAA)
            );
            assert!(rp.shows_written_value && rp.is_level0(0xFFFF_FEAA) && !rp.is_level0(0xFFFF_FEBB));
        }
        let f1 = Chip::by_name("STM32F103CB").unwrap().readout_protection.as_ref().unwrap();
        assert_eq!(
            (f1.register.as_str(), f1.address, f1.shift, f1.width, f1.level0),
            ("FLASH_OBR", 0x4002_201C, 1, 1, 0)
        );
        assert!(!f1.shows_written_value);
        assert!(f1.is_level0(0x03FF_FFFC) && !f1.is_level0(0x03FF_FFFE), "RDPRT set = protected");
        let g071 = CHIP_FILES.iter().find(|(f, _)| *f == "stm32g071rb.yaml").expect("shipped").1;
        let e = parse_chip("x.yaml", &g071.replace("  level0: 0xAA\n", "  level0: 0xA5\n")).unwrap_err();
        assert!(e.to_string().contains("disagrees with option_bytes"), "{e}");
        let e = parse_chip("x.yaml", &g071.replace("unprotect_max_us: 90100", "unprotect_max_us: 30000")).unwrap_err();
        assert!(e.to_string().contains("shorter than the mass erase"), "{e}");
        let e = parse_chip("x.yaml", &g071.replace("  address: 0x40022020\n", "  address: 0x40022024\n")).unwrap_err();
        assert!(e.to_string().contains("diagnosis register"), "{e}");
    }

    #[test]
    fn broken_files_are_rejected_with_the_file_name() {
        let g071 = CHIP_FILES.iter().find(|(f, _)| *f == "stm32g071rb.yaml").expect("shipped").1;
        let e = parse_chip("x.yaml", &g071.replace("page_size: 0x800", "page_size: 0x7FF")).unwrap_err();
        assert!(e.to_string().starts_with("chips/x.yaml: flash size"), "{e}");
        let e = parse_chip("x.yaml", &g071.replace("name: STM32G071RB", "nmae: STM32G071RB")).unwrap_err();
        let line = g071.lines().position(|l| l.starts_with("name: STM32G071RB")).unwrap() + 1;
        // FILE:LINE:COL, like the config files' errors.
        assert!(e.to_string().starts_with(&format!("chips/x.yaml:{line}:1: unknown field `nmae`")), "{e}");
    }

    #[test]
    fn every_file_in_chips_is_shipped() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chips");
        let on_disk = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml")));
        assert_eq!(on_disk.count(), CHIP_FILES.len());
        assert_eq!(all().count(), CHIP_FILES.len(), "every file parses");
    }
}
