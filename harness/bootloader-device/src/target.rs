//! The seam between the protocol engines and the virtual board: [`BootTarget`] (what the ROM does to
//! the chip) and [`RomAction`] (what the board must do once the bytes before it have left the wire).

use std::time::Duration;

/// What a [`BootTarget`] operation failed with. The flash variants mirror the FLASH controller's
/// error flags (RM0444 FLASH_SR register: WRPERR, PGAERR, PROGERR, ...), so a fault injected in the
/// board's controller model reaches the protocol as the error the ROM would see.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Nothing is mapped at `address` (a real core would take a bus fault).
    #[error("no memory mapped at {address:#010x}")]
    Unmapped { address: u32 },
    /// WRPERR: the page is write protected.
    #[error("write protection error (WRPERR) at {address:#010x}")]
    WriteProtected { address: u32 },
    /// PGAERR / SIZERR: the access does not fit the programming granule.
    #[error("programming alignment error (PGAERR) at {address:#010x}")]
    Alignment { address: u32 },
    /// PROGERR: the destination was not erased, or the program operation failed.
    #[error("programming error (PROGERR) at {address:#010x}")]
    Programming { address: u32 },
    /// Any other controller error (PGSERR, OPTVERR, a fault injected by the board, ...).
    #[error("flash controller error: {0}")]
    Controller(String),
    /// The target does not implement this operation (e.g. bank erase on a single-bank part).
    #[error("operation not supported by the target: {0}")]
    Unsupported(&'static str),
}

/// Readout protection level (RM0444 "Read protection (RDP)": RDP byte 0xAA = level 0, 0xCC = level 2,
/// anything else = level 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RdpLevel {
    Level0,
    Level1,
    Level2,
}

impl RdpLevel {
    /// Whether the bootloader must refuse memory access commands (AN3155 command table note:
    /// only Get, Get Version, Get ID and Readout Unprotect are served while RDP is active).
    pub fn is_active(self) -> bool {
        !matches!(self, RdpLevel::Level0)
    }
}

/// What the ROM does to the chip. The board implements it on its own thread in virtual time.
///
/// Mutating operations return the virtual time they took (the board's FLASH controller model
/// decides, from the chip's datasheet figures); the engines never sleep or look at a clock. They
/// put that time into their output ([`crate::UsartOutput::Busy`], DfuSe `bwPollTimeout`) so the
/// board can schedule the bytes that follow.
///
/// The engines call only the first group of methods while they run. The second group
/// ([`launch_option_bytes`](Self::launch_option_bytes), [`system_reset`](Self::system_reset),
/// [`jump`](Self::jump)) is called by [`RomAction::apply`], which the board invokes once the bytes
/// emitted before the action have been transmitted.
pub trait BootTarget {
    /// Reads `buf.len()` bytes at `address` as the ROM's CPU would (any mapped address; the option
    /// byte area reads the option bytes, RM0444
    /// "FLASH option bytes"). Errors if any byte is unmapped.
    fn read_memory(&mut self, address: u32, buf: &mut [u8]) -> Result<(), TargetError>;

    /// Writes `data` at `address`: SRAM directly, flash and OTP through the FLASH controller model.
    /// For flash the engines only pass whole programming granules ([`crate::FlashLayout::program_unit`]),
    /// aligned to the granule, already padded with 0xFF.
    fn write_memory(&mut self, address: u32, data: &[u8]) -> Result<Duration, TargetError>;

    /// Erases one flash page. `page` is the linear page index from the flash base (AN3155 Extended
    /// Erase page numbers: page 128 of a G0B1 is the first page of bank 2).
    fn erase_page(&mut self, page: u32) -> Result<Duration, TargetError>;

    /// Erases one bank (1 or 2).
    fn erase_bank(&mut self, bank: u8) -> Result<Duration, TargetError>;

    /// Erases the whole user flash.
    fn mass_erase(&mut self) -> Result<Duration, TargetError>;

    /// Programs the option bytes from an image of the option byte area starting at its base
    /// (the layout is the memory-mapped one, e.g. FLASH_OPTR first on the G0). Takes effect at the
    /// next option byte loading ([`RomAction::LaunchOptionBytes`]).
    fn write_option_bytes(&mut self, image: &[u8]) -> Result<Duration, TargetError>;

    /// The readout protection level currently in force.
    fn rdp_level(&mut self) -> RdpLevel;

    /// Programs a new RDP level into the option bytes (level 1 -> 0 mass-erases the flash, RM0444
    /// "Read protection (RDP)"). The engines never pass [`RdpLevel::Level2`].
    fn set_rdp_level(&mut self, level: RdpLevel) -> Result<Duration, TargetError>;

    /// Write-protects the given sectors (AN3155 Write Protect sector codes; how codes map onto the
    /// chip's WRP registers is the chip's business). Replaces any earlier protection (AN2662 2.13).
    fn set_write_protection(&mut self, sectors: &[u8]) -> Result<Duration, TargetError>;

    /// Removes the write protection of the whole flash.
    fn clear_write_protection(&mut self) -> Result<Duration, TargetError>;

    /// Option byte loading (FLASH_CR.OBL_LAUNCH): reloads the option bytes and resets the chip.
    fn launch_option_bytes(&mut self);

    /// System reset (as SYSRESETREQ).
    fn system_reset(&mut self);

    /// Leaves the ROM: see [`Jump`].
    fn jump(&mut self, jump: &Jump);
}

/// How the ROM leaves to user code (AN3155 Go, DfuSe leave).
///
/// Only the core registers named here change: VTOR, the memory remap (SYSCFG MEM_MODE) and the boot
/// latches (EMPTY flag, nBOOT0/nBOOT_SEL, BOOT0 pin) stay as they are (bootloader-protocols.md 1.5,
/// 3.7 and pitfalls P1/P6), so firmware that forgets to set VTOR or to remap fails as on real parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jump {
    /// The address the host gave (Go address or DfuSe address pointer).
    pub address: u32,
    /// New MSP: the word at `address` (vector semantics), or `None` when the family jumps directly
    /// ([`crate::LeaveJump::Direct`]).
    pub msp: Option<u32>,
    /// Branch target as a `BX` operand: bit 0 is the Thumb bit; a clear bit 0 faults on M-profile
    /// cores (ARMv6-M ARM, BX: EPSR.T = 0 -> INVSTATE fault), as on the chip.
    pub pc: u32,
    /// Whether the ROM puts the peripherals it used back to their reset state before jumping
    /// (AN3155 Go: yes; AN2606 for G0: no; see [`crate::RomConfig::peripherals_reset_on_go`]).
    pub reset_peripherals: bool,
    /// Whether the USB device disconnects first (DfuSe leave, AN3156 "Leave DFU mode").
    pub usb_disconnect: bool,
}

/// Something the board must do after transmitting everything the engine emitted before it. After an
/// action the engine is finished; the board resets or replaces it on the next chip reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RomAction {
    /// Leave the bootloader (Go, DfuSe leave).
    Jump(Jump),
    /// Option byte loading, which resets the chip (after Write Protect/Unprotect, Readout
    /// Protect/Unprotect and option byte writes: \[OBL\] `Common_StartPostProcessing` ->
    /// `OPENBL_OB_Launch`; AN2662 2.13-2.16 "generates a system reset").
    LaunchOptionBytes,
    /// Plain system reset (DfuSe leave with nothing executable at the address pointer, AN3156 via
    /// AN2662 p.80).
    SystemReset,
}

impl RomAction {
    /// Carries the action out on the target.
    pub fn apply<T: BootTarget + ?Sized>(&self, target: &mut T) {
        match self {
            RomAction::Jump(jump) => target.jump(jump),
            RomAction::LaunchOptionBytes => target.launch_option_bytes(),
            RomAction::SystemReset => target.system_reset(),
        }
    }
}
