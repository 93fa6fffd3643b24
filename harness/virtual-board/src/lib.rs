//! The virtual STM32 board: a chip model built from the chip description (hil-chips), our own
//! Cortex-M core (hil-cortex-m) running real firmware, peripheral models, boot selection and
//! resets, the hand-off to a ROM bootloader model, and a board thread with an API usable from
//! blocking and async code (pins, power, USART byte streams in process and as PTYs, a debug port
//! for the simulated probe, a registry of running boards).
//!
//! Layers:
//! - [`periph`]: register-level models of the STM32G0 peripherals the flows touch (FLASH, RCC,
//!   SYSCFG, USART, IWDG, WWDG, DBGMCU, GPIO, and a benign register file for the rest), each
//!   citing RM0444.
//! - [`soc`]: the chip without its core: memory map and stores from chip data, power-on and
//!   system reset, option byte loading, boot selection ([`boot`]), new-chip state.
//! - [`rom`]: the system-memory image (real vector table + trap code) and the
//!   [`SystemBootloader`] hand-off trait a ROM model implements.
//! - [`rom_bootloader`]: the board's default ROM, ST's system bootloader ([`StRom`]): the AN3155 / DfuSe
//!   engines of hil-bootloader-device driving the USARTs, the FLASH controller and the USB device
//!   through their registers, with the CPU-state behaviour of the chip's ROM (interrupt-driven or
//!   polled service, VTOR, PRIMASK, stacks) as per-chip switches.
//! - [`machine`]: chip + core + ROM model executed synchronously: power, NRST, resets, traps,
//!   host UART traffic, debug port operations, diagnosis snapshot, event log.
//! - [`board`]: the board thread and its handle [`Board`], the registry, [`UartPort`],
//!   [`UsbPort`] (in-process control transfers to the ROM's DFU device), [`DebugPort`]; replies
//!   are [`Pending`] (`wait()` or `.await`, always resolved by a deadline).
//!
//! ```no_run
//! use std::time::Duration;
//! use hil_virtual_board::{Board, BoardConfig, ImageFormat};
//!
//! # fn main() -> Result<(), hil_virtual_board::BoardError> {
//! let board = Board::start(BoardConfig { power_on: false, ..BoardConfig::g071("bench-1") })?;
//! let elf = std::fs::read("app.elf").map_err(|e| hil_virtual_board::BoardError::Image(e.to_string()))?;
//! board.load_image(elf, ImageFormat::Elf).wait()?;
//! board.power_on().wait()?;
//! let uart = board.uart("USART2")?;
//! let banner = uart.read_until(b"\r\n", Duration::from_secs(5)).wait()?;
//! let snapshot = board.snapshot().wait()?; // core, SYSCFG, option bytes, RCC_CSR, FLASH_SR ...
//! # let _ = (banner, snapshot);
//! # Ok(()) }
//! ```

pub mod board;
pub mod boot;
pub mod config;
pub mod debug_ext;
pub mod error;
pub mod image;
pub mod machine;
pub mod pending;
pub mod periph;
pub mod pty;
pub mod rom_bootloader;
pub mod shared;
pub mod soc;
pub mod system_memory;

pub use board::{Board, CoreState, DebugOp, DebugPort, UartPort, UsbPort};
pub use config::{BoardConfig, FaultConfig, FlashSpeed, PtyConfig, Quirks, RamInit, Timing, UartFaults};
pub use error::BoardError;
pub use image::ImageFormat;
pub use machine::{
    BoardEvent, BoardSnapshot, DebugCounters, EventKind, FlashSnapshot, Machine, RunOutcome, UsartSnapshot,
};
pub use pending::Pending;
pub use periph::usart::RxFrame;
pub use periph::usb::{UsbReply, UsbSetup};
pub use rom_bootloader::StRom;
pub use shared::{BootInfo, BootTargetName, Counters, RdpLevel, ResetCauseName};
pub use soc::{Layout, Soc};
pub use system_memory::{
    RecordingRom, RomControl, RomCx, RomEntry, RomEntryKind, RomLayout, SystemBootloader, WaitError,
};
