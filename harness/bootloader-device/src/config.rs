//! Per chip / per bootloader version configuration of the ROM model.
//!
//! [`RomConfig::for_chip`] builds it from the chip description (hil-chips): the geometry from the
//! memory map, the protocol facts (AN3155 version and command list, DfuSe descriptors, entry and
//! Go behaviour, how the ROM uses the core) from the chip file's `bootloader` section, where each
//! is tagged with its AN2606 / AN3155 source. Every field is public so a board (or a scenario) can
//! switch a quirk; [`RomConfig::validate`] checks the result. Facts that could not be tied to a
//! primary source are listed in [`RomConfig::unverified`]: the chip file's `unverified` entries
//! under `bootloader.`, `readout_protection.` and `memory.` (key -> why it is believed).

use std::collections::BTreeMap;

use hil_chips::{Chip, DfuMemory};
/// Chip-data enums the ROM model uses as they are (hil-chips `bootloader.execution` / `dfu`).
pub use hil_chips::{LeaveJump, ProcessStackEntry, Service, VtorAtEntry};

use crate::usart::cmd;

/// A configuration the engines cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The chip file lacks a fact the ROM model needs (`what` names the chip-data key).
    #[error("{chip}: the chip data has no `{what}`, which the ROM model needs")]
    MissingChipData { chip: String, what: &'static str },
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

impl RomConfig {
    /// The ROM model of a chip, from its chip file: geometry from the memory map and flash
    /// controller, protocol facts from `bootloader` (AN2606 / AN3155, per bootloader version),
    /// the level-2 RDP marker from the option byte layout.
    pub fn for_chip(chip: &Chip) -> Result<RomConfig, ConfigError> {
        let missing = |what: &'static str| ConfigError::MissingChipData { chip: chip.name.clone(), what };
        let b = &chip.bootloader;
        let program_unit = chip.flash_controller.as_ref().ok_or_else(|| missing("flash_controller"))?.program_unit;
        let flash = flash_layout(chip, program_unit);
        let mut regions = common_regions(chip, &flash);
        if b.serves_otp {
            let otp = chip.memory.otp.as_ref().ok_or_else(|| missing("memory.otp"))?;
            regions.push(MemoryRegion { kind: RegionKind::Otp, base: otp.base, size: otp.size });
        }
        let p = &b.usart_protocol;
        let usart = UsartConfig {
            version: p.version,
            commands: p.commands.iter().map(|c| c.code()).collect(),
            get_version_options: p.get_version_options,
            write_address_alignment: p.write_address_alignment,
            ack_write_protected_writes: p.ack_write_protected_writes,
            launch_option_bytes_after_write: p.launch_option_bytes_after_write,
            extra_ack_after_sync: p.extra_ack_after_sync,
        };
        let x = &b.execution;
        let execution = Execution {
            usart_service: x.usart_service,
            usb_service: x.usb_service,
            vtor_at_entry: x.vtor_at_entry,
            enables_interrupts_at_entry: x.enables_interrupts_at_entry,
            enables_interrupts_at_go: x.enables_interrupts_at_go,
            process_stack: x.process_stack,
        };
        let dfu = match (b.usb_dfu, &b.dfu) {
            (false, _) => None,
            (true, None) => return Err(missing("bootloader.dfu")),
            (true, Some(d)) => Some(dfu_config(chip, d, &flash)?),
        };
        let unverified = chip
            .unverified
            .iter()
            .filter(|(k, _)| {
                ["bootloader", "readout_protection", "memory"].iter().any(|p| k.split('.').next() == Some(p))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let config = RomConfig {
            chip: chip.name.clone(),
            pid: chip.identity.dev_id,
            bootloader_id: b.id,
            option_bytes: OptionBytesLayout {
                base: chip.memory.option_bytes.base,
                size: chip.memory.option_bytes.size,
                level2: level2_marker(chip),
            },
            flash,
            regions,
            allow_rdp_level2: false,
            peripherals_reset_on_go: b.peripherals_reset_on_go,
            entry: EntryQuirks {
                reset_peripherals: b.entry.reset_peripherals,
                clear_empty_flag: b.entry.clear_empty_flag,
                usb_left_enabled_blocks_dfu: b.usb_left_enabled_blocks_dfu,
            },
            execution,
            usart,
            dfu,
            unverified,
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

/// Where the option byte image holds the RDP byte, and its level-2 value: the USER word's RDP
/// field (G0/G4 FLASH_OPTR bits 7:0, 0xCC = level 2, RM0444 3.5.1 / RM0440 5.5.1). `None` without
/// an option word layout (F1: protected or not, PM0075 2.4.1).
fn level2_marker(chip: &Chip) -> Option<Level2Marker> {
    let ob = chip.option_bytes.as_ref()?;
    let rdp = ob.field("RDP")?;
    let word = ob.word(&rdp.word)?;
    (rdp.width == 8 && rdp.shift % 8 == 0)
        .then(|| Level2Marker { offset: word.offset + u32::from(rdp.shift / 8), value: ob.rdp_levels.level2 })
}

/// The DfuSe device from the chip data; layout strings from the memory map.
fn dfu_config(chip: &Chip, d: &hil_chips::RomDfu, flash: &FlashLayout) -> Result<DfuConfig, ConfigError> {
    let m = &chip.memory;
    let mut alt_settings = Vec::with_capacity(d.alt_settings.len());
    for a in &d.alt_settings {
        alt_settings.push(match a.memory {
            DfuMemory::Flash => memory_layout_string(&a.name, flash.base, flash.pages, flash.page_size, a.kind),
            DfuMemory::OptionBytes => {
                memory_layout_string(&a.name, m.option_bytes.base, 1, m.option_bytes.size, a.kind)
            }
            DfuMemory::Otp => {
                let otp = m
                    .otp
                    .as_ref()
                    .ok_or_else(|| ConfigError::MissingChipData { chip: chip.name.clone(), what: "memory.otp" })?;
                memory_layout_string(&a.name, otp.base, 1, otp.size, a.kind)
            }
        });
    }
    Ok(DfuConfig {
        vendor_id: d.vendor_id,
        product_id: d.product_id,
        bcd_device: d.bcd_device,
        bcd_usb: d.bcd_usb,
        max_packet_size0: d.max_packet_size0,
        manufacturer: d.manufacturer.clone(),
        product: d.product.clone(),
        // Boards derive the real one from the UID (serial_from_uid); chip data: unverified.
        serial: serial_from_uid([0; 3]),
        transfer_size: d.transfer_size,
        detach_timeout_ms: d.detach_timeout_ms,
        attributes: d.attributes,
        self_powered: d.self_powered,
        max_power_ma: d.max_power_ma,
        alt_settings,
        leave: d.leave,
        start_in_error: d.start_in_error,
        report_write_protected_erase: d.report_write_protected_erase,
    })
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
            for key in [
                "bootloader.execution.usart_service",
                "bootloader.execution.vtor_at_entry",
                "bootloader.execution.process_stack",
            ] {
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

    /// AN2606 STM32F10xxx: DEV_ID 0x410, USART protocol V2.2 with Erase (0x43), no DFU; PM0075:
    /// half-word programming, no level 2 (RDP is protected or not).
    #[test]
    fn f103_rom_config_comes_from_its_chip_file_with_the_an2606_values() {
        let c = RomConfig::for_chip(Chip::by_name("STM32F103CB").unwrap()).unwrap();
        assert_eq!((c.pid, c.bootloader_id, c.usart.version), (0x410, 0x22, 0x22));
        assert_eq!(c.usart.commands, [0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x43, 0x63, 0x73, 0x82, 0x92]);
        assert_eq!(c.flash.program_unit, 2);
        assert!(c.dfu.is_none() && c.option_bytes.level2.is_none());
        assert!(c.regions.iter().all(|r| r.kind != RegionKind::Otp), "no OTP on the F103");
        assert_eq!(c.execution.vtor_at_entry, VtorAtEntry::Untouched);
        assert_eq!(c.entry, EntryQuirks::default());
        for key in ["bootloader.usart_protocol.version", "bootloader.usart_protocol.commands", "bootloader.execution"] {
            assert!(c.unverified.contains_key(key), "{key}");
        }
    }

    /// AN2606 STM32G47xxx/48xxx: DEV_ID 0x469, bootloader ID 0xD5, USART V3.1 with Extended Erase,
    /// DfuSe 0483:DF11; OTP 0x1FFF7000-0x1FFF73FF (RM0440 5.3.1); RDP level 2 = 0xCC in FLASH_OPTR
    /// bits 7:0 (RM0440 5.5.1); the seed 004 switch from the chip data.
    #[test]
    fn g474_rom_config_comes_from_its_chip_file_with_the_an2606_values() {
        let c = RomConfig::for_chip(Chip::by_name("STM32G474RE").unwrap()).unwrap();
        assert_eq!((c.pid, c.bootloader_id, c.usart.version), (0x469, 0xD5, 0x31));
        assert_eq!(c.usart.commands, [0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44, 0x63, 0x73, 0x82, 0x92]);
        assert_eq!(c.flash.program_unit, 8);
        assert_eq!(c.option_bytes.level2, Some(Level2Marker { offset: 0, value: 0xCC }));
        assert_eq!(c.region_of(0x1FFF_7000).unwrap().kind, RegionKind::Otp);
        assert_eq!(c.execution.usart_service, Service::Interrupt);
        assert!(c.entry.usb_left_enabled_blocks_dfu && !c.entry.reset_peripherals);
        let dfu = c.dfu.as_ref().unwrap();
        assert_eq!((dfu.vendor_id, dfu.product_id, dfu.bcd_device), (0x0483, 0xDF11, 0x2200));
        assert_eq!(dfu.product, "STM32  BOOTLOADER");
        assert_eq!(dfu.alt_settings[0], "@Internal Flash  /0x08000000/256*02Kg");
        assert_eq!(dfu.alt_settings[1], "@Option Bytes  /0x1FFF7800/01*048 e");
        assert_eq!(dfu.alt_settings[2], "@OTP Memory  /0x1FFF7000/01*01Ke");
        assert!(c.unverified.contains_key("bootloader.usart_protocol"), "modelled as the G0B1 ROM");
    }

    /// A ROM fact changed in the chip file reaches the ROM model (no per-DEV_ID table overrides it).
    #[test]
    fn rom_facts_follow_the_chip_file() {
        let text = include_str!("../../chips/chips/stm32g071rb.yaml");
        let edit = |from: &str, to: &str| {
            assert!(text.contains(from), "{from}");
            let chip = hil_chips::parse_chip("x.yaml", &text.replace(from, to)).unwrap();
            RomConfig::for_chip(&chip).unwrap()
        };
        assert_eq!(edit("    version: 0x31", "    version: 0x32").usart.version, 0x32);
        let c = edit("go, write-memory, extended-erase", "go, write-memory, erase");
        assert_eq!(c.usart.erase_kind(), Some(EraseKind::Legacy));
        let c = edit("    launch_option_bytes_after_write: true", "    launch_option_bytes_after_write: false");
        assert!(!c.usart.launch_option_bytes_after_write, "G07x V11.2 behaviour as data");
        assert_eq!(
            edit("    usart_service: polling", "    usart_service: interrupt").execution.usart_service,
            Service::Interrupt
        );
        assert!(edit("  serves_otp: true", "  serves_otp: false").region_of(0x1FFF_7000).is_none());
        let c = edit("  dev_id: 0x460", "  dev_id: 0x461");
        assert_eq!(c.pid, 0x461, "the PID is the chip's DEV_ID, for any DEV_ID");
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
