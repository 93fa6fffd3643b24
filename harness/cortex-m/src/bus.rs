//! What the core sees of the system: a [`Bus`] of sized accesses that can fault.
//!
//! The core handles the Private Peripheral Bus (0xE000_0000..0xE010_0000: NVIC, SCB, SysTick, debug
//! registers) itself and sends every other access here. [`crate::System`] is the board-level
//! implementation (memory map + devices + scheduler); tests may implement [`Bus`] over a flat RAM.

use std::fmt;

/// Width of a bus access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Size {
    Byte = 1,
    Half = 2,
    Word = 4,
}

impl Size {
    pub const fn bytes(self) -> u32 {
        self as u32
    }
    /// Mask of the value bits an access of this size carries.
    pub const fn mask(self) -> u32 {
        match self {
            Size::Byte => 0xFF,
            Size::Half => 0xFFFF,
            Size::Word => 0xFFFF_FFFF,
        }
    }
    pub const fn from_bytes(n: u32) -> Option<Size> {
        match n {
            1 => Some(Size::Byte),
            2 => Some(Size::Half),
            4 => Some(Size::Word),
            _ => None,
        }
    }
}

/// Who drives an access. Devices may differ for debugger accesses (e.g. the probe's AHB-AP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Initiator {
    Cpu,
    Debug,
}

/// Why an access did not complete. On ARMv6-M this becomes a HardFault (precise); for the debugger
/// it is a sticky error in the AP (the probe layer reports it with the address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("bus fault at {addr:#010x} ({size:?}): {kind}")]
pub struct BusFault {
    pub addr: u32,
    pub size: Size,
    pub kind: BusFaultKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BusFaultKind {
    /// Nothing is mapped at this address.
    Unmapped,
    /// A write to read-only memory (ROM, or flash without the controller's permission).
    ReadOnly,
    /// The device refused the access (unsupported width, reserved register, clock gated...).
    Device(&'static str),
    /// Instruction fetch from a region that cannot hold code (peripherals).
    NotExecutable,
    /// The core's MPU refused the access (ARMv7-M B3.5: a MemManage fault, not a bus error).
    MpuViolation,
}

impl fmt::Display for BusFaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusFaultKind::Unmapped => write!(f, "nothing mapped at this address"),
            BusFaultKind::ReadOnly => write!(f, "write to read-only memory"),
            BusFaultKind::Device(why) => write!(f, "device refused the access: {why}"),
            BusFaultKind::NotExecutable => write!(f, "instruction fetch from a non-executable region"),
            BusFaultKind::MpuViolation => write!(f, "access refused by the MPU (MemManage)"),
        }
    }
}

impl BusFault {
    pub const fn new(addr: u32, size: Size, kind: BusFaultKind) -> Self {
        BusFault { addr, size, kind }
    }
}

/// The system bus as the core uses it.
///
/// `cycle` is the core's cycle count since power-on at the moment of the access; the bus turns it
/// into virtual time for devices (the core clock may change at run time).
pub trait Bus {
    fn read(&mut self, addr: u32, size: Size, initiator: Initiator, cycle: u64) -> Result<u32, BusFault>;
    fn write(&mut self, addr: u32, size: Size, value: u32, initiator: Initiator, cycle: u64) -> Result<(), BusFault>;
    /// Instruction fetch of one halfword (addr is 2-aligned).
    fn fetch16(&mut self, addr: u32) -> Result<u16, BusFault>;

    /// True when something the core must react to happened during the last access(es): an
    /// interrupt line changed, a reset was requested, the clock changed, or a device scheduled an
    /// event earlier than the core's current run budget. Cheap; the core polls it after each
    /// load/store. Cleared by [`Bus::take_attention`].
    fn attention(&self) -> bool {
        false
    }
    /// Collect what needs attention (see [`Attention`]).
    fn take_attention(&mut self) -> Attention {
        Attention::default()
    }
    /// Interrupt request lines: bit n of word n/64 is external interrupt n (IRQn).
    /// Levels stay high while a device's flag is set; the NVIC re-pends an interrupt whose line is
    /// still high when its handler returns.
    fn irq_levels(&self) -> [u64; 4] {
        [0; 4]
    }
    /// Edge requests since the last call (e.g. a pulse from EXTI software triggers), then cleared.
    fn take_irq_pulses(&mut self) -> [u64; 4] {
        [0; 4]
    }
    /// Absolute core cycle at which the core must stop running so that due device events can be
    /// dispatched (`u64::MAX` when none is scheduled).
    fn deadline_cycle(&self) -> u64 {
        u64::MAX
    }

    /// Code-fetch acceleration (optional): copy the [`CODE_LINE_BYTES`]-aligned line of executable
    /// memory at `line_addr` into `out` (little-endian halfwords) and watch those bytes, so that any
    /// later change to them, through any alias and by any initiator, advances
    /// [`Bus::code_generation`]. Returns false (and the core fetches with [`Bus::fetch16`]) when
    /// the line is not plain executable memory.
    fn fetch_code_line(&mut self, line_addr: u32, out: &mut [u16; CODE_LINE_HALFWORDS]) -> bool {
        let _ = (line_addr, out);
        false
    }
    /// Advances whenever bytes handed out by [`Bus::fetch_code_line`] may have changed; the core
    /// drops its decoded-instruction cache when it does.
    fn code_generation(&self) -> u64 {
        0
    }
}

/// Size of the lines [`Bus::fetch_code_line`] copies.
pub const CODE_LINE_BYTES: u32 = 128;
/// Halfwords per code line.
pub const CODE_LINE_HALFWORDS: usize = CODE_LINE_BYTES as usize / 2;

/// Reported by [`Bus::take_attention`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attention {
    /// Interrupt lines or pulses changed: re-evaluate pending interrupts.
    pub irq_changed: bool,
    /// A device asked for a system reset (watchdog, option byte launch ...).
    pub reset: Option<crate::ResetCause>,
    /// A device signalled an event (wakes WFE, like SEV from another master).
    pub event: bool,
    /// The deadline moved earlier: re-read [`Bus::deadline_cycle`].
    pub deadline_changed: bool,
}
