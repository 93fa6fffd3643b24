//! What a chip's ST ROM bootloader does, as data: the AN3155 protocol version and command list,
//! the DfuSe device it presents, what it does at entry and Go, and how it uses the core. The ROM
//! model (hil-bootloader-device `RomConfig::for_chip`) is built from these sections; the chip file
//! tags each with its source and lists what is not tied to a primary source under `unverified`
//! (keys `bootloader.usart_protocol.*`, `bootloader.execution.*`, `bootloader.dfu.*` ...).

use serde::{Deserialize, Serialize};

/// An AN3155 command by name (AN3155 2, Table 2 "USART bootloader commands").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RomCommand {
    Get,
    GetVersion,
    GetId,
    ReadMemory,
    Go,
    WriteMemory,
    /// Legacy erase, one-byte page numbers (exclusive with `extended-erase`, AN3155 Table 2 note).
    Erase,
    ExtendedErase,
    WriteProtect,
    WriteUnprotect,
    ReadoutProtect,
    ReadoutUnprotect,
    GetChecksum,
}

impl RomCommand {
    /// The command byte (AN3155 Table 2).
    pub fn code(self) -> u8 {
        match self {
            RomCommand::Get => 0x00,
            RomCommand::GetVersion => 0x01,
            RomCommand::GetId => 0x02,
            RomCommand::ReadMemory => 0x11,
            RomCommand::Go => 0x21,
            RomCommand::WriteMemory => 0x31,
            RomCommand::Erase => 0x43,
            RomCommand::ExtendedErase => 0x44,
            RomCommand::WriteProtect => 0x63,
            RomCommand::WriteUnprotect => 0x73,
            RomCommand::ReadoutProtect => 0x82,
            RomCommand::ReadoutUnprotect => 0x92,
            RomCommand::GetChecksum => 0xA1,
        }
    }
}

fn default_alignment() -> u32 {
    4
}

/// The AN3155 (USART) protocol as this ROM speaks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsartProtocol {
    /// Protocol version byte of Get / Get Version (0x31 = V3.1).
    pub version: u8,
    /// Commands Get lists, in order; the ROM NACKs the others.
    pub commands: Vec<RomCommand>,
    /// The two option bytes of Get Version (AN3155 3.2: 0x00 0x00 for compatibility).
    #[serde(default)]
    pub get_version_options: [u8; 2],
    /// Write Memory start addresses must be a multiple of this (AN3155 3.6: word aligned).
    #[serde(default = "default_alignment")]
    pub write_address_alignment: u32,
    /// Writes the flash controller refused with WRPERR are still ACKed (AN2662 "Write Memory").
    pub ack_write_protected_writes: bool,
    /// Option byte loading is launched after an option byte write (missing in G07x V11.2).
    pub launch_option_bytes_after_write: bool,
    /// A second ACK follows the autobaud ACK (L412/422 V13.1).
    #[serde(default)]
    pub extra_ack_after_sync: bool,
    pub source: String,
}

/// What the ROM does first when it starts (per bootloader version).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RomEntry {
    /// Resets the peripherals it uses as its first step, also when entered by a jump.
    #[serde(default)]
    pub reset_peripherals: bool,
    /// Clears the empty-check flag in an empty-check boot.
    #[serde(default)]
    pub clear_empty_flag: bool,
    #[serde(default)]
    pub source: Option<String>,
}

/// How the ROM services an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    /// From the interface's interrupt handler, reached through the vector table the CPU uses
    /// (VTOR): nothing is served while PRIMASK is set, while an exception of equal or higher
    /// priority is active, or while VTOR leads to someone else's handlers (pitfalls P1, P2, P5).
    Interrupt,
    /// By polling the peripheral's flags from the ROM's main loop (\[OBL\]
    /// `OPENBL_USART_ReadByte` spins on RXNE): PRIMASK and VTOR do not matter for the answers.
    Polling,
}

/// What the ROM does when it starts in Thread mode on the process stack (CONTROL.SPSEL = 1, a jump
/// from an RTOS task; pitfall P5). The jump loads MSP, but Thread mode keeps running on the PSP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessStackEntry {
    /// The ROM runs on the task's stack and answers.
    Runs,
    /// The ROM crashes (HardFault into its default handler) whatever the stack.
    Crashes,
    /// The ROM crashes when the PSP lies in the RAM it reserves for itself (its data initialisation
    /// overwrites the stack it runs on), and runs otherwise. This reconciles the reports in seed 002:
    /// a FreeRTOS task jump that failed until CONTROL was cleared, and one that worked.
    CrashesInOwnRam,
}

/// What the ROM writes to VTOR when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VtorAtEntry {
    /// Leaves VTOR as the application set it.
    Untouched,
    /// VTOR = 0x00000000: its table as the boot alias shows it. After a BOOT0 boot, or a jump with
    /// the system memory remapped, 0x0 shows the ROM; after a jump without the remap (or with the
    /// SYSCFG clock off, P4) it shows flash, so the ROM's interrupts run the application's handlers.
    BootAlias,
    /// VTOR = the system-memory address of its table.
    SystemMemory,
}

/// How the ROM uses the core while it runs (bootloader-protocols.md pitfalls P1, P2, P5; seed
/// 002). No primary source documents the ROM's internals: chip files list these under
/// `unverified` with the evidence behind each value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Execution {
    pub usart_service: Service,
    pub usb_service: Service,
    pub vtor_at_entry: VtorAtEntry,
    /// The ROM clears PRIMASK when it starts.
    pub enables_interrupts_at_entry: bool,
    /// The ROM clears PRIMASK just before Go / leave (\[OBL\] `OPENBL_FLASH_JumpToAddress`).
    pub enables_interrupts_at_go: bool,
    pub process_stack: ProcessStackEntry,
    pub source: String,
}

/// Where DfuSe leave jumps (bootloader-protocols.md 3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaveJump {
    /// MSP = \[pointer\], PC = \[pointer + 4\], like Go (\[OBL\] `OPENBL_USB_Jump`; forum td-p/446385).
    Vector,
    /// Branch to the pointer itself with the Thumb bit set (an H743 with BL 0xD2 "works" with
    /// 0x08000123, qa-community 148238).
    Direct,
}

/// A memory a DfuSe alternate setting describes; its geometry comes from the chip's memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DfuMemory {
    /// Main flash, one segment per page.
    Flash,
    /// The option byte area as one segment.
    OptionBytes,
    /// The OTP area as one segment (`memory.otp`).
    Otp,
}

/// One DfuSe alternate setting: its name and memory, and the type letter of the layout string
/// (a..g = readable 1 | erasable 2 | writable 4, AN3156 / \[DU\] `dfuse_mem.c`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DfuAltSetting {
    /// Name as the ROM spells it, trailing spaces included (`"Internal Flash  "`).
    pub name: String,
    pub memory: DfuMemory,
    pub kind: char,
}

/// The DfuSe (AN3156) USB device of the ROM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RomDfu {
    pub vendor_id: u16,
    pub product_id: u16,
    /// bcdDevice: the DFU bootloader version.
    pub bcd_device: u16,
    pub bcd_usb: u16,
    pub max_packet_size0: u8,
    pub manufacturer: String,
    pub product: String,
    /// wTransferSize of the DFU functional descriptor.
    pub transfer_size: u16,
    pub detach_timeout_ms: u16,
    /// bmAttributes of the functional descriptor.
    pub attributes: u8,
    pub self_powered: bool,
    pub max_power_ma: u16,
    pub alt_settings: Vec<DfuAltSetting>,
    pub leave: LeaveJump,
    /// Starts (and restarts after SET_CONFIGURATION) in dfuERROR / errFIRMWARE (the F4 ROM).
    #[serde(default)]
    pub start_in_error: bool,
    /// Reports erase failures caused by write protection (AN2662 4.5: it does not).
    #[serde(default)]
    pub report_write_protected_erase: bool,
    pub source: String,
}
