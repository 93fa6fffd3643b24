//! How a virtual board is set up: chip, timing mode, power-on RAM content, PTYs, fault injection,
//! and the switches for behaviours that could not be verified against a primary source.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

/// How virtual time relates to wall time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timing {
    /// Virtual time runs as fast as the host can; a sleeping core skips to the next event.
    #[default]
    Fast,
    /// Virtual time is paced to wall time, so external tools see real baud rates and delays.
    Realistic,
}

/// SRAM content after a power-on reset (SRAM content is undefined after POR; RM0444 2.3 only
/// guarantees retention across system resets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RamInit {
    Zero,
    /// Pseudo-random bytes from this seed (each power cycle draws new bytes from the sequence).
    Random {
        seed: u64,
    },
}

impl Default for RamInit {
    fn default() -> Self {
        RamInit::Random { seed: 0x5EED }
    }
}

/// Fault injection on one direction of one USART's line. Each fault stands for what noise on a
/// real line does to a frame: a dropped frame is a start bit the receiver never saw (a glitch, a
/// loose wire, an adapter's FIFO overrun); a corrupted frame is a bit flipped on the wire, which
/// the receiver flags as a parity error on an 8E1 link and the ROM uses anyway (\[OBL\]
/// `OPENBL_USART_ReadByte` ignores PE; reference 1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UartFaults {
    /// Drop every n-th frame.
    pub drop_every: Option<u32>,
    /// Drop each frame with this probability.
    pub drop_probability: f64,
    /// Flip one data bit of every n-th frame.
    pub corrupt_every: Option<u32>,
    /// Flip one data bit of each frame with this probability.
    pub corrupt_probability: f64,
    /// Drop only the n-th frame (counted from when the faults were set): one lost byte at a
    /// chosen point of an exchange, for tests.
    pub drop_at: Option<u64>,
    /// Flip one data bit of only the n-th frame.
    pub corrupt_at: Option<u64>,
}

/// Fault injection configured per board. Deterministic for a given `seed`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    pub seed: u64,
    /// Frames the host sends to a USART (host -> device), by USART instance name (`USART2`).
    pub uart_rx: BTreeMap<String, UartFaults>,
    /// Frames a USART transmits to the host (device -> host), by instance name: the same noise on
    /// the other wire of the pair, as the host's receiver sees it.
    pub uart_tx: BTreeMap<String, UartFaults>,
    /// Every n-th DFU class request (DNLOAD, UPLOAD, GETSTATUS, ...) is answered with STALL
    /// without reaching the bootloader: what the host sees when a packet of the transfer was
    /// corrupted and the transaction failed its retries (Linux reports EPIPE / EPROTO), or when a
    /// device stalls a request it cannot take in its current state.
    pub usb_stall_every: Option<u32>,
    /// Every n-th DFU class request is lost without reaching the bootloader and never answered,
    /// so the host's transfer times out: a device that stopped answering (NAKs forever) or a
    /// hub that dropped the transfer.
    pub usb_timeout_every: Option<u32>,
    /// Double-word programs whose address falls in one of these ranges fail: PROGERR is set
    /// (and OPERR with ERRIE) and the flash keeps its old content.
    pub flash_program_fail: Vec<Range<u32>>,
    /// The next n double-word programs fail the same way.
    pub flash_fail_next_programs: u32,
    /// The n-th double-word program since the board started (from 1) browns out: a power-on
    /// reset while the cells are being written, the double word left half written.
    pub flash_brownout_at_program: Option<u64>,
    /// After this many debug transfers the SWD link is down for good (a loose probe cable).
    pub probe_link_drop_after: Option<u64>,
}

/// Behaviours that could not be tied to a primary source. Each switch names the behaviour the
/// default models and why it is believed; tests can flip them to see what depends on them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quirks {
    /// Internal resets (software, watchdogs, OBL) pulse NRST, so RCC_CSR.PINRSTF is set with
    /// their own flag. UNVERIFIED for the G0: the reset circuit of RM0444 5.1.2 drives NRST low
    /// for internal resets; reports from other STM32 families show PINRSTF with SFTRSTF.
    pub internal_reset_sets_pin_flag: bool,
    /// A KEYR write while FLASH_CR is already unlocked counts as a wrong key sequence (bus error
    /// and lock until reset). UNVERIFIED; the default ignores the write.
    pub keyr_write_when_unlocked_locks: bool,
    /// A CPU write to flash while an operation is still busy completes the pending operation at
    /// once and then proceeds (the real bus stalls until BSY clears; RM0444 3.3.7). UNVERIFIED
    /// timing; with `false` the write sets PGSERR instead.
    pub flash_write_while_busy_stalls: bool,
    /// Registers of a peripheral whose RCC clock is off read as 0 and ignore writes (RM0444 5.2
    /// says access is "not supported"; the remap pitfall P4 shows writes are silently ignored).
    /// With `false`, such accesses are bus errors.
    pub gated_registers_read_zero: bool,
    /// CPU writes to system memory (ROM) raise a bus error. UNVERIFIED; `false` ignores them.
    pub system_memory_writes_fault: bool,
    /// An option word whose complement does not match loads as RDP level 1 with OPTVERR set.
    /// UNVERIFIED detail of RM0444 3.4.2; with `false` the stored value is used as is.
    pub option_mismatch_forces_rdp1: bool,
    /// DBGMCU_IDCODE reads as 0 while RCC_APBENR1.DBGEN is off. UNVERIFIED; default readable.
    pub idcode_needs_dbgen: bool,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            internal_reset_sets_pin_flag: true,
            keyr_write_when_unlocked_locks: false,
            flash_write_while_busy_stalls: true,
            gated_registers_read_zero: true,
            system_memory_writes_fault: true,
            option_mismatch_forces_rdp1: true,
            idcode_needs_dbgen: false,
        }
    }
}

/// Which flash timing figure of the datasheet the board uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlashSpeed {
    #[default]
    Typical,
    Maximum,
}

/// A USART exposed as a pseudo-terminal.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PtyConfig {
    /// USART instance (`USART2`).
    pub usart: String,
    /// Also create a symlink to the slave device at this path (e.g. for a stable name in CI).
    pub link: Option<std::path::PathBuf>,
}

/// Everything needed to start a virtual board.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoardConfig {
    /// Registry name (the probe driver and the rig look boards up by it). Must be unique among
    /// running boards.
    pub name: String,
    /// Chip part name or probe-rs target name (`STM32G071RB`).
    pub chip: String,
    pub timing: Timing,
    pub ram_init: RamInit,
    /// BOOT0 pin level applied at start (the board's jumper).
    pub boot0: bool,
    /// Power the board on at start.
    pub power_on: bool,
    pub flash_speed: FlashSpeed,
    /// USARTs to expose as PTYs.
    pub ptys: Vec<PtyConfig>,
    pub faults: FaultConfig,
    pub quirks: Quirks,
    /// Bytes of device output kept per USART for in-process readers (oldest dropped first).
    pub uart_buffer: usize,
    /// Default deadline of API calls.
    #[serde(with = "duration_ms")]
    pub default_deadline: Duration,
    /// What the 96-bit unique ID is derived from: the board's name in boards.yaml, so that it is
    /// the same in every run (the registry `name` is unique per process). Empty: `name`.
    pub unique_id_source: String,
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig {
            name: "virtual-g071".into(),
            unique_id_source: String::new(),
            chip: "STM32G071RB".into(),
            timing: Timing::Fast,
            ram_init: RamInit::default(),
            boot0: false,
            power_on: true,
            flash_speed: FlashSpeed::Typical,
            ptys: Vec::new(),
            faults: FaultConfig::default(),
            quirks: Quirks::default(),
            uart_buffer: 1 << 20,
            default_deadline: Duration::from_secs(10),
        }
    }
}

impl BoardConfig {
    /// A G071 board with this registry name and default settings.
    pub fn g071(name: impl Into<String>) -> Self {
        BoardConfig { name: name.into(), ..Default::default() }
    }
}

mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}
