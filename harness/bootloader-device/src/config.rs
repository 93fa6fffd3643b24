//! Per chip / per bootloader version configuration of the ROM model.
//!
//! [`RomConfig::for_chip`] derives the geometry from the chip description (hil-chips) and adds the
//! protocol facts this crate knows per device ID. Every field is public so a board (or a scenario)
//! can switch a quirk; [`RomConfig::validate`] checks the result. Facts that could not be tied to a
//! primary source are listed in [`RomConfig::unverified`] (key -> why it is believed), like the chip
//! files do.

use std::collections::BTreeMap;

use hil_chips::Chip;

use crate::usart::cmd;

/// A configuration the engines cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{chip}: the virtual ROM has no protocol data for DEV_ID {dev_id:#05x} (supported: {supported})")]
    UnsupportedChip { chip: String, dev_id: u16, supported: String },
    #[error("{chip}: {message}")]
    Invalid { chip: String, message: String },
    #[error("{chip}: this bootloader has no USB DFU interface (AN2606 bootloader configuration)")]
    NoUsbDfu { chip: String },
}

/// What a memory area is, which decides what the bootloader lets a host do there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegionKind {
    /// User flash: read, program (through the FLASH controller), erase, jump.
    Flash,
    /// SRAM the bootloader does not use itself: read, write, jump. The bootloader's own RAM is not a
    /// region at all, so every command NACKs there (\[OBL\] `ram_interface.c` registers RAM from
    /// `RAM_START_ADDRESS + OPENBL_RAM_SIZE`; forum "STM32G bootloader questions": writes below
    /// 0x20004000 failed on a G474).
    Ram,
    /// The ROM itself: read only (\[OBL\] `systemmemory_interface.c` registers a read function only).
    SystemMemory,
    /// Option bytes: read; write as a whole image from the area's base, then option byte loading
    /// (AN2662 "Write Memory command": "start address must be 0x1FFFF800"; \[OBL\] `OPENBL_OB_Write`).
    OptionBytes,
    /// One-time-programmable area: read and program, never erase (\[OBL\] `otp_interface.c`).
    Otp,
}

impl RegionKind {
    pub fn writable(self) -> bool {
        !matches!(self, RegionKind::SystemMemory)
    }
    /// Go / leave targets (\[OBL\] `OPENBL_MEM_CheckJumpAddress`: only memories with a jump function,
    /// flash and RAM).
    pub fn jumpable(self) -> bool {
        matches!(self, RegionKind::Flash | RegionKind::Ram)
    }
    /// Writes go through the FLASH controller in programming granules.
    pub fn programmed(self) -> bool {
        matches!(self, RegionKind::Flash | RegionKind::Otp)
    }
}

/// A memory area the bootloader knows (\[OBL\] `OPENBL_MEM_RegisterMemory`). Addresses outside every
/// region are NACKed right after the address checksum (\[OBL\] `OPENBL_USART_GetAddress` ->
/// `OPENBL_MEM_GetAddressArea == AREA_ERROR`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub kind: RegionKind,
    pub base: u32,
    pub size: u32,
}

impl MemoryRegion {
    pub fn end(&self) -> u64 {
        self.base as u64 + self.size as u64
    }
    pub fn contains(&self, address: u32) -> bool {
        address >= self.base && (address as u64) < self.end()
    }
    /// Whether `[address, address + len)` lies fully inside.
    pub fn contains_range(&self, address: u32, len: u64) -> bool {
        self.contains(address) && address as u64 + len <= self.end()
    }
}

/// User flash geometry as the erase commands see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlashLayout {
    pub base: u32,
    pub page_size: u32,
    pub pages: u32,
    /// 1 or 2. Bank erase codes 0xFFFE/0xFFFD are only accepted with 2 banks.
    pub banks: u32,
    /// Programming granule of the FLASH controller in bytes (G0: a double word, RM0444 "Flash
    /// memory programming"; F1: a half word, PM0075 "Flash memory programming"). Flash and OTP writes are padded
    /// with 0xFF to whole granules (\[OBL\] `OPENBL_FLASH_Write` pads the last quad-word with 0xFF;
    /// AN2662 "Write Memory command": "if less data are written the remaining bytes should be filled by 0xFF").
    pub program_unit: u32,
}

impl FlashLayout {
    pub fn size(&self) -> u64 {
        self.page_size as u64 * self.pages as u64
    }
    pub fn region(&self) -> MemoryRegion {
        MemoryRegion { kind: RegionKind::Flash, base: self.base, size: self.size().min(u32::MAX as u64) as u32 }
    }
    /// The linear page index holding `address`, if it is in the flash.
    pub fn page_of(&self, address: u32) -> Option<u32> {
        if !self.region().contains(address) {
            return None;
        }
        (address - self.base).checked_div(self.page_size)
    }
}

/// Where the option byte image says "RDP level 2", so the engines can refuse to write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level2Marker {
    /// Offset of the RDP byte in the option byte image.
    pub offset: u32,
    /// The byte value that selects level 2 (0xCC on G0, RM0444 "Read protection (RDP)").
    pub value: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionBytesLayout {
    pub base: u32,
    pub size: u32,
    /// `None` on parts without an irreversible level 2 (F1: RM0008 / PM0075 "Read protection" know only protected or not).
    pub level2: Option<Level2Marker>,
}

/// What the ROM does when it starts, for the board to carry out (the engines do not touch hardware).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryQuirks {
    /// The ROM resets the peripherals it uses as its first step, also when entered by a jump from
    /// user code (G07x bootloader V11.3, AN2606 45.3.1 quoted by ST on community.st.com td-p/825796).
    pub reset_peripherals: bool,
    /// In an empty-check boot the ROM clears FLASH_ACR.EMPTY (G07x V11.3, same source; fixed in
    /// V11.4).
    pub clear_empty_flag: bool,
    /// Entered with the application's USB device still attached (D+ pull-up on), the ROM does not
    /// bring its DFU device up (seed 004, from the chip data `bootloader.usb_left_enabled_blocks_dfu`).
    pub usb_left_enabled_blocks_dfu: bool,
}

/// How the ROM services an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// How the ROM uses the core while it runs, and so which CPU state it needs when an application
/// jumps to it (bootloader-protocols.md pitfalls P1, P2, P5; seed 002). No primary source documents
/// the ROM's internals: every field is listed in [`RomConfig::unverified`] with the evidence behind
/// its default, and each is a switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    /// How the USART interfaces are serviced.
    pub usart_service: Service,
    /// How the USB DFU interface is serviced.
    pub usb_service: Service,
    /// What the ROM does with VTOR when it starts (after Go / leave VTOR still points at the ROM:
    /// pitfall P1).
    pub vtor_at_entry: VtorAtEntry,
    /// The ROM clears PRIMASK when it starts.
    pub enables_interrupts_at_entry: bool,
    /// The ROM clears PRIMASK just before Go / leave (\[OBL\] `OPENBL_FLASH_JumpToAddress`
    /// re-enables interrupts before it loads MSP and branches).
    pub enables_interrupts_at_go: bool,
    pub process_stack: ProcessStackEntry,
}

/// Which erase command the USART bootloader speaks (AN3155 command table note 3: a device supports
/// either Erase 0x43 or Extended Erase 0x44, never both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EraseKind {
    /// 0x43: one-byte page numbers, 0xFF = global erase.
    Legacy,
    /// 0x44: two-byte page numbers, special codes 0xFFFF/0xFFFE/0xFFFD.
    Extended,
}

/// AN3155 USART bootloader settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsartConfig {
    /// Protocol version byte returned by Get and Get Version (0x31 = V3.1).
    pub version: u8,
    /// Command codes listed by Get, in order. Only listed commands are served; others are NACKed
    /// (\[OBL\] `OPENBL_CommandProcess` default branch). Supported codes: see [`crate::usart::cmd`].
    pub commands: Vec<u8>,
    /// The two option bytes of Get Version (AN3155: kept for compatibility, 0x00 0x00 in \[OBL\]
    /// `OPENBL_USART_GetVersion`).
    pub get_version_options: [u8; 2],
    /// Write Memory start addresses must be a multiple of this (AN2662 "Write Memory command" and AN3155: word
    /// aligned = 4; the G474 ROM only took 8-byte aligned flash writes, bootloader-protocols.md P12).
    /// A misaligned write is NACKed after its data.
    pub write_address_alignment: u32,
    /// ACK writes that the FLASH controller rejected with WRPERR (AN2662 "Write Memory command" note: "No error is
    /// returned when performing write operations on write protected sectors").
    pub ack_write_protected_writes: bool,
    /// Launch option byte loading after an option byte write. G07x bootloader V11.2 does not
    /// ("Option byte launch missing when using USART protocol", forum 148428).
    pub launch_option_bytes_after_write: bool,
    /// Send a second ACK after the autobaud ACK (STM32L412/422 bootloader V13.1; \[SF\] commit
    /// 7c10bf8 works around it in `stm32_init`).
    pub extra_ack_after_sync: bool,
}

impl UsartConfig {
    /// The erase command the command list selects, if any.
    pub fn erase_kind(&self) -> Option<EraseKind> {
        if self.commands.contains(&cmd::EXTENDED_ERASE) {
            Some(EraseKind::Extended)
        } else if self.commands.contains(&cmd::ERASE) {
            Some(EraseKind::Legacy)
        } else {
            None
        }
    }
}

/// Where DfuSe leave jumps (bootloader-protocols.md 3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveJump {
    /// MSP = \[pointer\], PC = \[pointer + 4\], like Go (\[OBL\] `OPENBL_USB_Jump`; forum td-p/446385).
    Vector,
    /// Branch to the pointer itself with the Thumb bit set (an H743 with BL 0xD2 "works" with
    /// 0x08000123, qa-community 148238).
    Direct,
}

/// DfuSe (AN3156) USB device settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DfuConfig {
    /// 0x0483 (\[DU\] device-logs, "STM Device in DFU Mode").
    pub vendor_id: u16,
    /// 0xDF11.
    pub product_id: u16,
    /// bcdDevice: the DFU bootloader version (F4: 0x2100, F107: 0x2000, F042: 0x2200).
    pub bcd_device: u16,
    /// bcdUSB of the device descriptor.
    pub bcd_usb: u16,
    pub max_packet_size0: u8,
    pub manufacturer: String,
    pub product: String,
    pub serial: String,
    /// wTransferSize of the DFU functional descriptor, also the block size of the address formula
    /// (AN2662 4.4.1).
    pub transfer_size: u16,
    pub detach_timeout_ms: u16,
    /// bmAttributes of the functional descriptor (0x0B: download, upload, will detach, not
    /// manifestation tolerant).
    pub attributes: u8,
    pub self_powered: bool,
    pub max_power_ma: u16,
    /// One alternate setting per memory: the iInterface string, a DfuSe memory layout
    /// ([`memory_layout_string`]).
    pub alt_settings: Vec<String>,
    pub leave: LeaveJump,
    /// Start (and restart after SET_CONFIGURATION) in dfuERROR / errFIRMWARE, as the F4 Discovery
    /// ROM does (\[DU\] `device-logs/stm32f4discovery.bin-download`).
    pub start_in_error: bool,
    /// Report erase failures caused by write protection. AN2662 4.5 (bootloader-protocols.md 3.4): "no error
    /// for erasing write-protected pages", so off by default.
    pub report_write_protected_erase: bool,
}

/// Everything the engines need to know about one chip and its bootloader version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RomConfig {
    /// Part name, for messages.
    pub chip: String,
    /// Product ID returned by Get ID (the DEV_ID, AN2606 / \[SF\] dev_table.c).
    pub pid: u16,
    /// AN2606 bootloader ID (0xXY = version X.Y), selects version quirks.
    pub bootloader_id: u8,
    pub flash: FlashLayout,
    /// Every area the bootloader accepts addresses in (flash, usable RAM, system memory, option
    /// bytes, OTP).
    pub regions: Vec<MemoryRegion>,
    pub option_bytes: OptionBytesLayout,
    /// Let a host write RDP level 2 (irreversible; DESIGN.md safety rails). Off by default: such an
    /// option byte write is refused (NACK / errTARGET).
    pub allow_rdp_level2: bool,
    /// Go / leave reset the peripherals the ROM used first. AN3155 Go says yes; AN2606 for the G0
    /// says the registers are NOT reset (qa-community "stm32-g071-system-bootloader-question-148428").
    pub peripherals_reset_on_go: bool,
    pub entry: EntryQuirks,
    /// How the ROM uses the core (interrupts, VTOR, stacks).
    pub execution: Execution,
    pub usart: UsartConfig,
    /// `None` where the ROM has no USB DFU (G071).
    pub dfu: Option<DfuConfig>,
    /// Facts not tied to a primary source: key -> why it is believed.
    pub unverified: BTreeMap<String, String>,
}

/// The DfuSe memory layout string of one segment (\[DU\] `dfuse_mem.c:parse_memory_layout`:
/// `@name/0xSTART/COUNT*SIZE<mult><type>`; type letters a..g = bits readable 1, erasable 2,
/// writable 4). Sizes that are whole KiB use the `K` multiplier, others a space, as the ROMs do
/// (`@Internal Flash  /0x08000000/128*002Kg`, `@Option Bytes  /0x1FFFF800/01*016 g`).
pub fn memory_layout_string(name: &str, base: u32, count: u32, size: u32, kind: char) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("@{name}/0x{base:08X}/{count:02}*{:02}K{kind}", size / 1024)
    } else {
        format!("@{name}/0x{base:08X}/{count:02}*{size:03} {kind}")
    }
}

/// The USB serial number string ST's USB device library derives from the 96-bit unique ID
/// (\[USBD\] `usbd_desc_template.c:Get_SerialNum`: hex of UID0 + UID2, then the top 16 bits of UID1).
/// Whether the ROM uses the same scheme is unverified (the F4 ROM reports a 12-digit hex serial,
/// \[DU\] device-logs).
pub fn serial_from_uid(uid: [u32; 3]) -> String {
    format!("{:08X}{:04X}", uid[0].wrapping_add(uid[2]), uid[1] >> 16)
}

const SUPPORTED_COMMANDS: [u8; 13] = [
    cmd::GET,
    cmd::GET_VERSION,
    cmd::GET_ID,
    cmd::READ_MEMORY,
    cmd::GO,
    cmd::WRITE_MEMORY,
    cmd::ERASE,
    cmd::EXTENDED_ERASE,
    cmd::WRITE_PROTECT,
    cmd::WRITE_UNPROTECT,
    cmd::READOUT_PROTECT,
    cmd::READOUT_UNPROTECT,
    cmd::GET_CHECKSUM,
];

/// DEV_IDs [`RomConfig::for_chip`] knows.
const KNOWN_DEV_IDS: &str =
    "0x410 (STM32F10x medium density), 0x460 (STM32G07x/08x), 0x467 (STM32G0B0/B1/C1), 0x469 (STM32G47x/48x)";

impl RomConfig {
    /// The ROM model for a shipped chip: geometry from the chip file, protocol facts per DEV_ID and
    /// bootloader ID.
    pub fn for_chip(chip: &Chip) -> Result<RomConfig, ConfigError> {
        let config = match chip.identity.dev_id {
            0x460 | 0x467 => stm32g0(chip),
            0x410 => stm32f1_medium_density(chip),
            0x469 => stm32g47x(chip),
            dev_id => {
                return Err(ConfigError::UnsupportedChip {
                    chip: chip.name.clone(),
                    dev_id,
                    supported: KNOWN_DEV_IDS.into(),
                });
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// The region holding `address`.
    pub fn region_of(&self, address: u32) -> Option<&MemoryRegion> {
        self.regions.iter().find(|r| r.contains(address))
    }

    /// The region holding all of `[address, address + len)`.
    pub fn region_for_range(&self, address: u32, len: u64) -> Option<&MemoryRegion> {
        self.regions.iter().find(|r| r.contains_range(address, len))
    }

    /// Checks that the engines can work with this configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { chip: self.chip.clone(), message };
        let f = &self.flash;
        if f.page_size == 0 || f.pages == 0 {
            return Err(invalid("flash needs a page size and at least one page".into()));
        }
        if f.base as u64 + f.size() > 1 << 32 {
            return Err(invalid("flash does not fit the 32-bit address space".into()));
        }
        if !(f.banks == 1 || f.banks == 2) || !f.pages.is_multiple_of(f.banks) {
            return Err(invalid(format!("{} banks cannot split {} pages", f.banks, f.pages)));
        }
        if !f.program_unit.is_power_of_two() || f.program_unit > 256 {
            return Err(invalid(format!("programming granule {} is not a power of two <= 256", f.program_unit)));
        }
        if !self.regions.contains(&f.region()) {
            return Err(invalid("the flash must be one of the regions".into()));
        }
        for (i, a) in self.regions.iter().enumerate() {
            if a.size == 0 || a.end() > 1 << 32 {
                return Err(invalid(format!("region {a:x?} is empty or leaves the address space")));
            }
            if self.regions[i + 1..].iter().any(|b| (a.base as u64) < b.end() && (b.base as u64) < a.end()) {
                return Err(invalid(format!("region at {:#010x} overlaps another region", a.base)));
            }
        }
        let ob = &self.option_bytes;
        let ob_region = MemoryRegion { kind: RegionKind::OptionBytes, base: ob.base, size: ob.size };
        if !self.regions.contains(&ob_region) {
            return Err(invalid("the option byte area must be one of the regions".into()));
        }
        if let Some(marker) = &ob.level2
            && marker.offset >= ob.size
        {
            return Err(invalid("the RDP byte lies outside the option byte area".into()));
        }
        let u = &self.usart;
        for (i, code) in u.commands.iter().enumerate() {
            if !SUPPORTED_COMMANDS.contains(code) {
                return Err(invalid(format!("USART command {code:#04x} is not implemented by the ROM model")));
            }
            if u.commands[..i].contains(code) {
                return Err(invalid(format!("USART command {code:#04x} is listed twice")));
            }
        }
        if u.commands.len() > 255 {
            return Err(invalid("too many USART commands for Get".into()));
        }
        if u.commands.contains(&cmd::ERASE) && u.commands.contains(&cmd::EXTENDED_ERASE) {
            return Err(invalid("Erase (0x43) and Extended Erase (0x44) are exclusive (AN3155 table note 3)".into()));
        }
        if !u.write_address_alignment.is_power_of_two() {
            return Err(invalid("the write address alignment must be a power of two".into()));
        }
        if let Some(dfu) = &self.dfu {
            if dfu.transfer_size < u16::from(dfu.max_packet_size0) || dfu.max_packet_size0 == 0 {
                return Err(invalid("wTransferSize must be at least bMaxPacketSize0".into()));
            }
            if !matches!(dfu.max_packet_size0, 8 | 16 | 32 | 64) {
                return Err(invalid("bMaxPacketSize0 must be 8, 16, 32 or 64 (USB 2.0 9.6.1)".into()));
            }
            if dfu.alt_settings.is_empty() || dfu.alt_settings.len() > 200 {
                return Err(invalid("DFU needs between 1 and 200 alternate settings".into()));
            }
            let strings = [&dfu.manufacturer, &dfu.product, &dfu.serial].into_iter().chain(&dfu.alt_settings);
            for s in strings {
                // A string descriptor holds at most 126 UTF-16 units (bLength is one byte).
                if s.encode_utf16().count() > 126 {
                    return Err(invalid(format!("USB string {s:?} is longer than 126 characters")));
                }
            }
            if dfu.alt_settings.iter().any(|s| !s.starts_with('@')) {
                return Err(invalid("DfuSe alternate setting names start with '@' (memory layout)".into()));
            }
            if dfu.max_power_ma > 500 {
                return Err(invalid("bMaxPower above 500 mA".into()));
            }
        }
        Ok(())
    }
}

/// Regions every chip has: flash, RAM outside the bootloader's reserved part, system memory and
/// the option bytes.
fn common_regions(chip: &Chip, flash: &FlashLayout) -> Vec<MemoryRegion> {
    let m = &chip.memory;
    let mut regions = vec![flash.region()];
    let (ram, reserved) = (&m.sram, &chip.bootloader.reserved_ram);
    let (ram_end, reserved_end) = (ram.end(), reserved.end());
    if reserved.base > ram.base {
        regions.push(MemoryRegion { kind: RegionKind::Ram, base: ram.base, size: reserved.base - ram.base });
    }
    if reserved_end < ram_end {
        let size = (ram_end - reserved_end) as u32;
        regions.push(MemoryRegion { kind: RegionKind::Ram, base: reserved_end as u32, size });
    }
    regions.push(MemoryRegion {
        kind: RegionKind::SystemMemory,
        base: m.system_memory.base,
        size: m.system_memory.size,
    });
    for extra in &m.system_memory_extra {
        regions.push(MemoryRegion { kind: RegionKind::SystemMemory, base: extra.base, size: extra.size });
    }
    regions.push(MemoryRegion { kind: RegionKind::OptionBytes, base: m.option_bytes.base, size: m.option_bytes.size });
    // Read-only, like system memory: host tools identify the part from these (chip data says
    // whether this ROM answers there).
    if chip.bootloader.engineering_bytes_readable
        && let Some(e) = &m.engineering_bytes
    {
        regions.push(MemoryRegion { kind: RegionKind::SystemMemory, base: e.base, size: e.size });
    }
    regions
}

fn flash_layout(chip: &Chip, program_unit: u32) -> FlashLayout {
    let f = &chip.memory.flash;
    FlashLayout {
        base: f.base,
        page_size: f.page_size,
        pages: f.size.checked_div(f.page_size).unwrap_or(0),
        banks: f.banks,
        program_unit,
    }
}

/// STM32G07x/08x (0x460) and G0B0/B1/C1 (0x467).
fn stm32g0(chip: &Chip) -> RomConfig {
    let mut unverified = BTreeMap::new();
    let mut note = |k: &str, v: &str| {
        unverified.insert(k.to_string(), v.to_string());
    };
    // RM0444 "Flash memory programming": 64-bit (double word) programming only.
    let flash = flash_layout(chip, 8);
    let mut regions = common_regions(chip, &flash);
    // RM0444 flash memory organization table: OTP area 0x1FFF7000-0x1FFF73FF (1 KiB).
    regions.push(MemoryRegion { kind: RegionKind::Otp, base: 0x1FFF_7000, size: 0x400 });
    note(
        "regions.otp",
        "the OTP area is in RM0444's table; that the ROM accepts addresses there is inferred from [OBL]",
    );
    let bid = chip.bootloader.id;
    let usart = UsartConfig {
        version: 0x31,
        commands: vec![
            cmd::GET,
            cmd::GET_VERSION,
            cmd::GET_ID,
            cmd::READ_MEMORY,
            cmd::GO,
            cmd::WRITE_MEMORY,
            cmd::EXTENDED_ERASE,
            cmd::WRITE_PROTECT,
            cmd::WRITE_UNPROTECT,
            cmd::READOUT_PROTECT,
            cmd::READOUT_UNPROTECT,
        ],
        get_version_options: [0, 0],
        write_address_alignment: 4,
        ack_write_protected_writes: true,
        launch_option_bytes_after_write: !(chip.identity.dev_id == 0x460 && bid == 0xB2),
        extra_ack_after_sync: false,
    };
    note(
        "usart.version",
        "protocol V3.1 (0x31) as [OBL] OPENBL_USART_VERSION; the G0 ROM's byte is not in a primary source here",
    );
    note(
        "usart.commands",
        "the classic V3.1 list (bootloader-protocols.md 1.3: exact ROM lists unverified); no Get Checksum (0xA1), no Special (0x50/0x51)",
    );
    note(
        "usart.ack_write_protected_writes",
        "AN2662 (F105/F107) wording; assumed to hold for the G0 ROM (AN3155 body not retrieved)",
    );
    // G07x V11.3 / V11.4 entry behaviour (AN2606 45.3.1 via td-p/825796).
    let entry = if chip.identity.dev_id == 0x460 {
        EntryQuirks { reset_peripherals: bid >= 0xB3, clear_empty_flag: bid == 0xB3, ..Default::default() }
    } else {
        EntryQuirks::default()
    };
    if chip.identity.dev_id == 0x460 {
        note("entry.reset_peripherals", "V11.3 and later assumed to keep the early reset after the V11.4 fix");
    }
    // Seed 002: on a G071 a jump made with interrupts disabled (`__disable_irq()`, no re-enable)
    // "works perfectly" over the USART; the same code on a G0B1 gets "No response from target".
    let polled_usart = chip.identity.dev_id == 0x460;
    let execution = Execution {
        usart_service: if polled_usart { Service::Polling } else { Service::Interrupt },
        usb_service: Service::Interrupt,
        vtor_at_entry: VtorAtEntry::BootAlias,
        enables_interrupts_at_entry: false,
        enables_interrupts_at_go: true,
        process_stack: ProcessStackEntry::CrashesInOwnRam,
    };
    note(
        "execution.usart_service",
        if polled_usart {
            "polling: seed 002 reports a G071 jump with PRIMASK = 1 that the USART bootloader answered"
        } else {
            "interrupt: seed 002 reports that a jump with PRIMASK = 1 gets no answer on a G0B1 (its G071 twin \
             worked); pitfall P2"
        },
    );
    note(
        "execution.usb_service",
        "interrupt: P2 (a C071 USB DFU session needs interrupts enabled; an F405 entered with interrupts \
         disabled could not upload)",
    );
    note(
        "execution.vtor_at_entry",
        "boot alias (VTOR = 0): reconciles stm32duino Arduino_Core_STM32 PR #1653 (ST: the UART bootloader \
         changes VTOR and does not restore it), candleLight_fw PR #319 (VTOR still points at the ROM after DFU \
         leave on a G0B1) and ST's KB / seed 002 / pitfall P4 (an application jumping on an M0+ part must remap \
         system memory to 0x0 with the SYSCFG clock on), which a ROM writing its absolute address would not need",
    );
    note("execution.enables_interrupts_at_entry", "no report of the ROM clearing PRIMASK; P2 implies it does not");
    note(
        "execution.enables_interrupts_at_go",
        "[OBL] OPENBL_FLASH_JumpToAddress re-enables interrupts; assumed for the ROM",
    );
    note(
        "execution.process_stack",
        "model choice (P5, seed 002): a crash when the task stack lies in the ROM's own RAM explains both \
         FreeRTOS reports",
    );
    let dfu = chip.bootloader.usb_dfu.then(|| {
        note("dfu.bcd_device", "DFU protocol V2.2 assumed (F042 reports 0x2200); not read from a G0B1");
        note("dfu.bcd_usb", "1.00 as in the F4/F107 ROM lsusb logs ([DU] device-logs)");
        note("dfu.product", "\"STM32  BOOTLOADER\" is the F4 ROM's string ([DU] device-logs)");
        note("dfu.serial", "placeholder; boards derive it with serial_from_uid (ST USB library scheme)");
        note("dfu.alt_settings", "layout strings built from the geometry in the ROM style; G0B1 strings not captured");
        note("dfu.leave", "vector jump like Go ([OBL] OPENBL_USB_Jump), bootloader-protocols.md 3.7");
        DfuConfig {
            vendor_id: 0x0483,
            product_id: 0xDF11,
            bcd_device: 0x2200,
            bcd_usb: 0x0100,
            max_packet_size0: 64,
            manufacturer: "STMicroelectronics".into(),
            product: "STM32  BOOTLOADER".into(),
            serial: serial_from_uid([0; 3]),
            transfer_size: 2048,
            detach_timeout_ms: 255,
            attributes: 0x0B,
            self_powered: true,
            max_power_ma: 100,
            alt_settings: vec![
                memory_layout_string("Internal Flash  ", flash.base, flash.pages, flash.page_size, 'g'),
                memory_layout_string(
                    "Option Bytes  ",
                    chip.memory.option_bytes.base,
                    1,
                    chip.memory.option_bytes.size,
                    'e',
                ),
                memory_layout_string("OTP Memory  ", 0x1FFF_7000, 1, 0x400, 'e'),
            ],
            leave: LeaveJump::Vector,
            start_in_error: false,
            report_write_protected_erase: false,
        }
    });
    RomConfig {
        chip: chip.name.clone(),
        pid: chip.identity.dev_id,
        bootloader_id: bid,
        option_bytes: OptionBytesLayout {
            base: chip.memory.option_bytes.base,
            size: chip.memory.option_bytes.size,
            // RM0444 FLASH_OPTR: RDP is bits [7:0] of the first option word; 0xCC = level 2.
            level2: Some(Level2Marker { offset: 0, value: 0xCC }),
        },
        flash,
        regions,
        allow_rdp_level2: false,
        peripherals_reset_on_go: false,
        entry,
        execution,
        usart,
        dfu,
        unverified,
    }
}

/// STM32G47x/48x (0x469, AN2606 "STM32G47xxx/48xxx", ID 0xD5): the same USART protocol
/// generation (V3.1, Extended Erase, double-word flash programming, RM0440 5.3.7) and OTP area
/// (RM0440 5.3.1 Table 7) as the G0B1 ROM; its USART is interrupt-serviced like the G0B1's.
fn stm32g47x(chip: &Chip) -> RomConfig {
    let mut config = stm32g0(chip);
    config.entry.usb_left_enabled_blocks_dfu = chip.bootloader.usb_left_enabled_blocks_dfu;
    config.unverified.insert(
        "family".to_string(),
        "the G47x ROM is modelled as the G0B1 ROM (V3.1 command list, interrupt-serviced USART, VTOR at the \
         boot alias, OBL launch after option writes); no capture of a G47x ROM session"
            .to_string(),
    );
    config
}

/// STM32F10x medium density (0x410): bootloader V2.2 with the legacy Erase command.
fn stm32f1_medium_density(chip: &Chip) -> RomConfig {
    let mut unverified = BTreeMap::new();
    // PM0075 "Flash memory programming": the F1 flash programs half words.
    let flash = flash_layout(chip, 2);
    let regions = common_regions(chip, &flash);
    unverified.insert(
        "usart.version".to_string(),
        "V2.2 from memory of AN2606 (bootloader-protocols.md section 4 table, marked U)".to_string(),
    );
    unverified.insert(
        "usart.commands".to_string(),
        "an old F1 ROM lists 0x43, not 0x44 (bootloader-protocols.md 1.3); exact list unverified".to_string(),
    );
    unverified.insert(
        "execution".to_string(),
        "polled USART, VTOR untouched: model choice without a source; a thread-mode entry on a process stack \
         inside the ROM's own 512 bytes of RAM crashes it (same mechanism as the G07x model: the ROM initialises \
         that RAM while running on the stack)"
            .to_string(),
    );
    RomConfig {
        chip: chip.name.clone(),
        pid: chip.identity.dev_id,
        bootloader_id: chip.bootloader.id,
        option_bytes: OptionBytesLayout {
            base: chip.memory.option_bytes.base,
            size: chip.memory.option_bytes.size,
            level2: None,
        },
        flash,
        regions,
        allow_rdp_level2: false,
        // AN3155 Go (AN3155-old excerpt): the bootloader resets the registers of the peripherals it
        // used before jumping.
        peripherals_reset_on_go: true,
        entry: EntryQuirks::default(),
        // The 2 KiB F1 ROM polls its USART (model choice, no source).
        execution: Execution {
            usart_service: Service::Polling,
            usb_service: Service::Interrupt,
            vtor_at_entry: VtorAtEntry::Untouched,
            enables_interrupts_at_entry: false,
            enables_interrupts_at_go: true,
            process_stack: ProcessStackEntry::CrashesInOwnRam,
        },
        usart: UsartConfig {
            version: 0x22,
            commands: vec![
                cmd::GET,
                cmd::GET_VERSION,
                cmd::GET_ID,
                cmd::READ_MEMORY,
                cmd::GO,
                cmd::WRITE_MEMORY,
                cmd::ERASE,
                cmd::WRITE_PROTECT,
                cmd::WRITE_UNPROTECT,
                cmd::READOUT_PROTECT,
                cmd::READOUT_UNPROTECT,
            ],
            get_version_options: [0, 0],
            write_address_alignment: 4,
            ack_write_protected_writes: true,
            launch_option_bytes_after_write: true,
            extra_ack_after_sync: false,
        },
        dfu: None,
        unverified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g0b1() -> RomConfig {
        RomConfig::for_chip(Chip::by_name("STM32G0B1RE").unwrap()).unwrap()
    }

    #[test]
    fn g0b1_geometry_comes_from_the_chip_file() {
        let c = g0b1();
        assert_eq!(c.pid, 0x467);
        assert_eq!((c.flash.pages, c.flash.page_size, c.flash.banks), (256, 2048, 2));
        // The bootloader's own RAM (below 0x20004000, [SF] ram_start) is no region.
        assert!(c.region_of(0x2000_3FFC).is_none());
        assert_eq!(c.region_of(0x2000_4000).unwrap().kind, RegionKind::Ram);
        assert_eq!(c.region_of(0x1FFF_7800).unwrap().kind, RegionKind::OptionBytes);
        assert!(c.region_of(0x4002_2000).is_none(), "peripherals are not bootloader memory");
        let dfu = c.dfu.unwrap();
        assert_eq!(dfu.alt_settings[0], "@Internal Flash  /0x08000000/256*02Kg");
        assert_eq!(dfu.alt_settings[1], "@Option Bytes  /0x1FFF7800/01*128 e");
    }

    #[test]
    fn g071_has_no_dfu_and_one_bank() {
        let c = RomConfig::for_chip(Chip::by_name("STM32G071RB").unwrap()).unwrap();
        assert!(c.dfu.is_none());
        assert_eq!(c.flash.banks, 1);
        assert_eq!(c.usart.erase_kind(), Some(EraseKind::Extended));
        // V11.3 (0xB3): early peripheral reset and EMPTY clearing.
        assert_eq!(c.entry, EntryQuirks { reset_peripherals: true, clear_empty_flag: true, ..Default::default() });
    }

    #[test]
    fn execution_model_per_chip_is_listed_as_unverified() {
        let g071 = RomConfig::for_chip(Chip::by_name("STM32G071RB").unwrap()).unwrap();
        let g0b1 = g0b1();
        // Seed 002: the G071 answers a jump made with PRIMASK = 1, the G0B1 does not.
        assert_eq!(g071.execution.usart_service, Service::Polling);
        assert_eq!(g0b1.execution.usart_service, Service::Interrupt);
        assert_eq!(g0b1.execution.usb_service, Service::Interrupt);
        for c in [&g071, &g0b1] {
            assert!(c.execution.vtor_at_entry == VtorAtEntry::BootAlias && !c.execution.enables_interrupts_at_entry);
            assert_eq!(c.execution.process_stack, ProcessStackEntry::CrashesInOwnRam);
            for key in ["execution.usart_service", "execution.vtor_at_entry", "execution.process_stack"] {
                assert!(c.unverified.contains_key(key), "{}: {key}", c.chip);
            }
        }
    }

    #[test]
    fn f103_uses_legacy_erase() {
        let c = RomConfig::for_chip(Chip::by_name("STM32F103CB").unwrap()).unwrap();
        assert_eq!(c.usart.erase_kind(), Some(EraseKind::Legacy));
        assert_eq!(c.usart.version, 0x22);
        assert!(c.peripherals_reset_on_go);
    }

    #[test]
    fn validation_catches_broken_configs() {
        let mut c = g0b1();
        c.usart.commands.push(cmd::ERASE);
        assert!(c.validate().unwrap_err().to_string().contains("exclusive"), "both erase commands");
        let mut c = g0b1();
        c.usart.commands.push(0x50);
        assert!(c.validate().is_err(), "Special is not modelled");
        let mut c = g0b1();
        c.regions.push(MemoryRegion { kind: RegionKind::Ram, base: 0x0807_F000, size: 0x2000 });
        assert!(c.validate().unwrap_err().to_string().contains("overlaps"));
        let mut c = g0b1();
        c.flash.program_unit = 3;
        assert!(c.validate().is_err());
        let mut c = g0b1();
        c.dfu.as_mut().unwrap().alt_settings.push("no layout".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn layout_strings_follow_the_rom_style() {
        assert_eq!(
            memory_layout_string("Internal Flash  ", 0x0800_0000, 128, 2048, 'g'),
            "@Internal Flash  /0x08000000/128*02Kg"
        );
        assert_eq!(
            memory_layout_string("Option Bytes  ", 0x1FFF_F800, 1, 16, 'g'),
            "@Option Bytes  /0x1FFFF800/01*016 g"
        );
    }

    #[test]
    fn serial_follows_the_usb_library_scheme() {
        assert_eq!(serial_from_uid([0x0010_0020, 0x3136_5001, 0x2000_0000]), "201000203136");
    }
}
