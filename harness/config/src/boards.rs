//! boards.yaml: the board inventory. Virtual boards by default, lab boards as examples.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::{Address, ByteSize, Located};

/// The whole boards.yaml file.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BoardsFile {
    pub boards: Vec<Located<Board>>,
}

/// One board: a chip plus either a virtual backend or lab backends.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Board {
    /// Unique name; scenarios and `--board` refer to it.
    pub name: Located<String>,
    /// Chip part name as in harness/chips (e.g. STM32G071RB).
    pub chip: Located<String>,
    /// Part of the default set that `hil run` uses without `--board`.
    #[serde(default)]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A simulated board run in process.
    #[serde(default, rename = "virtual", skip_serializing_if = "Option::is_none")]
    pub virtual_board: Option<Located<VirtualBoard>>,
    /// A real board on the bench.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab: Option<Located<LabBoard>>,
    /// Flash layout of the firmware on this board.
    #[serde(default)]
    pub layout: Layout,
    /// Safety rail: readout protection level 2 is irreversible; a scenario may only set it on a
    /// board that allows it here.
    #[serde(default)]
    pub allow_rdp_level2: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PinLevel {
    High,
    #[default]
    Low,
}

/// How virtual time relates to wall time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Timing {
    /// Virtual time runs as fast as the host can (CI).
    #[default]
    Fast,
    /// Virtual time is paced to wall time, so external tools see real baud rates.
    Realistic,
}

/// SRAM content at power-on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RamInit {
    /// Pseudo-random (seeded), like real SRAM; catches firmware that relies on zeroed RAM.
    #[default]
    Random,
    Zero,
}

#[derive(Clone, Debug, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VirtualBoard {
    /// BOOT0 pin level at power-on.
    #[serde(default)]
    pub boot0: PinLevel,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub ram_at_power_on: RamInit,
    /// Option bytes that differ from the chip's factory values at power-on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_bytes: Option<OptionBits>,
    #[serde(default)]
    pub faults: Faults,
    /// Seed for everything random on this board (RAM content, fault timing); fixed for reproducible runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Boot-related option bits (STM32G0 names; RM0444 3.4.1 FLASH_OPTR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OptionBits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nboot0: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nboot1: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nboot_sel: Option<bool>,
    /// Readout protection level (0, 1; 2 only where the board allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdp: Option<u8>,
    /// Independent watchdog started by hardware at reset (IWDG_SW = 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_watchdog: Option<bool>,
}

/// Faults injected by the virtual board, so reliability is tested rather than hoped for. Periods
/// count from the board's start and are at least 1 (every byte / request).
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Faults {
    /// Drop every Nth byte the board's USART receives: a start bit the receiver never saw (a
    /// glitch on the host's TX wire, a loose connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub uart_rx_drop_every: Option<u32>,
    /// Corrupt every Nth received byte: one bit flipped on the wire (a parity error on an 8E1
    /// link, which the ROM ignores and uses the byte anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub uart_rx_corrupt_every: Option<u32>,
    /// Drop every Nth byte the board's USART sends to the host: noise on the board's TX wire, or
    /// a USB serial adapter that lost a byte on its way to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub uart_tx_drop_every: Option<u32>,
    /// Corrupt every Nth byte the board sends: one bit flipped on the board's TX wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub uart_tx_corrupt_every: Option<u32>,
    /// Stall every Nth DFU class request before the bootloader sees it: a USB transaction that
    /// failed its retries on a bad cable or hub (the host reports a stall / protocol error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub usb_stall_every: Option<u32>,
    /// Lose every Nth DFU class request: it is never answered and the host's transfer times out
    /// (a device or hub that stopped answering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub usb_timeout_every: Option<u32>,
    /// Programming this flash address fails with a programming error: a worn or defective flash
    /// cell (PROGERR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_program_error_at: Option<Address>,
    /// The Nth flash double-word program (counted from the board's start) browns out: supply
    /// lost mid-write (a flash update interrupted by a power cut or a weak supply), the board
    /// goes through a power-on reset with the double word half written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub flash_brownout_at_program: Option<u32>,
    /// The SWD link drops after this many debug transfers (counted from the board's start) and
    /// stays down: a loose probe cable or a probe that hung mid-session. The target stops
    /// answering the probe; UART and USB are unaffected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub probe_link_drop_after: Option<u32>,
}

impl Faults {
    /// The periodic faults by their boards.yaml names, for validation.
    pub fn periods(&self) -> [(&'static str, Option<u32>); 8] {
        [
            ("uart-rx-drop-every", self.uart_rx_drop_every),
            ("uart-rx-corrupt-every", self.uart_rx_corrupt_every),
            ("uart-tx-drop-every", self.uart_tx_drop_every),
            ("uart-tx-corrupt-every", self.uart_tx_corrupt_every),
            ("usb-stall-every", self.usb_stall_every),
            ("usb-timeout-every", self.usb_timeout_every),
            ("flash-brownout-at-program", self.flash_brownout_at_program),
            ("probe-link-drop-after", self.probe_link_drop_after),
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LabBoard {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<SerialSpec>,
    /// The ROM's DFU device as `VID:PID[:serial]` in hex (0483:df11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb: Option<Located<String>>,
    #[serde(default)]
    pub boot0: LineControl,
    #[serde(default)]
    pub nrst: LineControl,
    /// Commands that switch the board's power (e.g. uhubctl), run without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerCommands>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProbeSpec {
    /// probe-rs selector `VID:PID[:serial]` in hex.
    pub selector: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_khz: Option<u32>,
    #[serde(default)]
    pub connect_under_reset: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Parity {
    None,
    /// AN3155 requires 8E1.
    #[default]
    Even,
    Odd,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SerialSpec {
    /// Device path (/dev/ttyUSB0, /dev/serial/by-id/...).
    pub port: Located<String>,
    #[serde(default = "default_baud")]
    pub baud: Located<u32>,
    #[serde(default)]
    pub parity: Parity,
}

fn default_baud() -> Located<u32> {
    Located::new(115_200)
}

/// What drives a control line (BOOT0 or NRST).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LineDriver {
    /// Not controllable: the rig cannot move this line.
    #[default]
    None,
    /// The serial adapter's DTR output.
    SerialDtr,
    /// The serial adapter's RTS output.
    SerialRts,
    /// The debug probe's nRST output (NRST only).
    Probe,
    /// Boot selection through option bits instead of the pin (BOOT0 only).
    OptionBytes,
}

#[derive(Clone, Debug, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LineControl {
    #[serde(default)]
    pub via: Located<LineDriver>,
    /// Electrical level of the target pin while the modem line is asserted. Most USB-UART adapters
    /// have active-low RTS#/DTR# outputs, so asserting drives the pin low (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asserted_level: Option<PinLevel>,
}

impl Default for Located<LineDriver> {
    fn default() -> Self {
        Located::new(LineDriver::None)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PowerCommands {
    pub on: Vec<String>,
    pub off: Vec<String>,
}

/// Where firmware lives in flash on this board.
#[derive(Clone, Debug, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Layout {
    /// Vector table of the application (default: start of flash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_base: Option<Located<Address>>,
    /// A custom bootloader in flash in front of the application (seed 003: 32 KiB at 0x08000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<Located<RegionSpec>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegionSpec {
    pub base: Address,
    pub size: ByteSize,
}

impl RegionSpec {
    pub fn end(&self) -> u64 {
        self.base.0 as u64 + self.size.0 as u64
    }
    pub fn contains(&self, addr: u32) -> bool {
        addr >= self.base.0 && (addr as u64) < self.end()
    }
}

/// What a board can do; steps need some of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// A debug probe (halt, registers, memory, flash through the probe).
    Probe,
    /// A serial link to the ROM's / application's USART.
    Uart,
    /// The ROM's USB DFU device.
    Usb,
    /// BOOT0 can be driven.
    Boot0,
    /// NRST can be driven.
    Nrst,
    /// Power can be cycled.
    Power,
    /// The chip's option bytes (option-bit boot selection, the empty check, hardware watchdog,
    /// RDP) can be written in the option-word layout its chip data describes. STM32F1 parts have
    /// none of that data (and no option-bit boot selection or empty check, RM0008 3.4).
    OptionBytes,
    /// The chip boots the ROM from an empty main flash (the empty check latch, RM0444 3.3.2);
    /// the STM32F1 and STM32G4 have none (RM0008 3.4, RM0440 2.6), per the chip data.
    EmptyCheck,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Capability::Probe,
        Capability::Uart,
        Capability::Usb,
        Capability::Boot0,
        Capability::Nrst,
        Capability::Power,
        Capability::OptionBytes,
        Capability::EmptyCheck,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Probe => "probe",
            Capability::Uart => "uart",
            Capability::Usb => "usb",
            Capability::Boot0 => "boot0",
            Capability::Nrst => "nrst",
            Capability::Power => "power",
            Capability::OptionBytes => "option-bytes",
            Capability::EmptyCheck => "empty-check",
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Board {
    /// What this board can do. Virtual boards have every line, a probe and a UART; USB only where
    /// the chip's ROM has USB DFU.
    pub fn capabilities(&self, chip: &hil_chips::Chip) -> BTreeSet<Capability> {
        let mut caps = BTreeSet::new();
        // A property of the silicon, on virtual and lab boards alike.
        if chip.boot.as_ref().is_some_and(|b| b.empty_check.is_some()) {
            caps.insert(Capability::EmptyCheck);
        }
        if self.virtual_board.is_some() {
            caps.extend([Capability::Probe, Capability::Uart, Capability::Boot0, Capability::Nrst, Capability::Power]);
            if chip.bootloader.usb_dfu {
                caps.insert(Capability::Usb);
            }
            if chip.option_bytes.is_some() {
                caps.insert(Capability::OptionBytes);
            }
        }
        if let Some(lab) = &self.lab {
            if lab.probe.is_some() {
                caps.insert(Capability::Probe);
            }
            if lab.serial.is_some() {
                caps.insert(Capability::Uart);
            }
            if lab.usb.is_some() {
                caps.insert(Capability::Usb);
            }
            if lab.boot0.via.value != LineDriver::None {
                caps.insert(Capability::Boot0);
            }
            if lab.nrst.via.value != LineDriver::None {
                caps.insert(Capability::Nrst);
            }
            if lab.power.is_some() {
                caps.insert(Capability::Power);
            }
            if chip.option_bytes.is_some() && (lab.probe.is_some() || lab.serial.is_some()) {
                caps.insert(Capability::OptionBytes);
            }
        }
        caps
    }

    /// The application's vector table address (layout, or the start of flash).
    pub fn application_base(&self, chip: &hil_chips::Chip) -> u32 {
        self.layout.application_base.as_ref().map(|a| a.value.0).unwrap_or(chip.memory.flash.base)
    }
}
