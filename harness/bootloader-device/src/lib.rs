//! Device side of ST's ROM (system memory) bootloader for the virtual board: the AN3155 USART
//! protocol and the DfuSe (AN3156) USB protocol, as engines a board drives.
//!
//! Independence rule (DESIGN.md): this crate shares no framing code with the host clients
//! (hil-bootloader-host); only protocol constants coincide. Real peers referee both sides:
//! stm32flash against the board's PTY, dfu-util over USB.
//!
//! # The pieces
//!
//! - [`RomConfig`]: what one chip's bootloader version offers (command list, protocol version, PID,
//!   memory regions, flash geometry, quirk switches). [`RomConfig::for_chip`] builds it from a
//!   hil-chips [`Chip`](hil_chips::Chip); every field is public so scenarios can flip quirks, and
//!   [`RomConfig::unverified`] lists the facts without a primary source.
//! - [`BootTarget`]: implemented by the board. Memory reads, RAM writes, flash program/erase through
//!   the board's FLASH controller model (errors such as WRPERR/PGAERR come back as
//!   [`TargetError`]), option bytes, RDP, and the deferred effects (option byte loading, reset,
//!   jump). Mutating calls return the virtual time they took; the engines never look at a clock.
//! - [`UsartEngine`]: bytes in, [`UsartOutput`]s out. No timeouts, autobaud once per reset.
//! - [`DfuEngine`]: control transfers in ([`SetupPacket`] + OUT data), [`ControlOutcome`] out.
//! - [`RomAction`]: what the board does once the bytes before it are out (jump, option byte
//!   loading, reset). Go and leave are [`Jump`]s: MSP = \[addr\], PC = \[addr + 4\]; VTOR, the memory
//!   remap and the boot latches stay untouched.
//!
//! # Integrating the engines in a board
//!
//! 1. **At every reset that enters the ROM** (BOOT0/nBOOT0 selection, empty check, or a jump to
//!    the ROM's reset handler), build the engines from the chip's config: one [`UsartEngine`] per
//!    bootloader USART and, if [`RomConfig::dfu`] is set, one [`DfuEngine`]. Carry out
//!    [`RomConfig::entry`] (peripheral reset, EMPTY flag clearing) for versions that do it.
//!    Reusing engines is fine: [`UsartEngine::reset`] and a fresh [`DfuEngine`] give the same
//!    state.
//! 2. **Interface selection**: the ROM listens on all its interfaces and keeps the first that
//!    becomes active (\[OBL\] `OPENBL_InterfaceDetection`). Feed every interface until one
//!    [`UsartEngine::is_synced`] or the USB host configures the device
//!    ([`DfuEngine::is_configured`]); from then on ignore the others (stop feeding bytes, detach
//!    USB when a USART won).
//! 3. **USART**: deliver each received byte with its line-error flag:
//!    `engine.receive(RxByte { value, error }, &mut target)`. Process the outputs in order:
//!    [`UsartOutput::Tx`] goes into the USART transmitter at the line rate;
//!    [`UsartOutput::Busy`] holds the transmitter for that span of virtual time (an erase or a
//!    write is in progress); [`UsartOutput::Action`] is applied with [`RomAction::apply`] after the
//!    transmitter has sent everything queued before it. After an action the engine ignores input
//!    ([`UsartEngine::is_finished`]). A byte arriving while an operation is "busy" can simply be
//!    fed: the engine is a pure state machine and the host will not send during a busy span.
//! 4. **USB**: call [`DfuEngine::bus_reset`] on a bus reset, and [`DfuEngine::control`] for each
//!    control transfer on endpoint 0 (OUT data of exactly wLength bytes, none for IN requests).
//!    Send [`ControlResponse::Data`] as the IN data stage, [`ControlResponse::Ack`] as a
//!    zero-length status stage, [`ControlResponse::Stall`] as a protocol STALL. When
//!    [`ControlOutcome::action`] is set, complete the status stage first, then apply it; a [`Jump`]
//!    with `usb_disconnect` drops the D+ pull-up before the core jumps. [`ControlOutcome::busy`] is
//!    the virtual time the command took (reported to the host as `bwPollTimeout`).
//! 5. **Jump**: set MSP (if given) and branch to `pc` as `BX` would; leave VTOR, SYSCFG remap,
//!    EMPTY and the option bytes alone. If `reset_peripherals`, reset the peripherals the ROM
//!    used (its USART/USB) first. A later reset boots by the (unchanged) boot selection.
//! 6. **CPU state**: [`RomConfig::execution`] says how the ROM uses the core, per chip: whether
//!    each interface is served from its interrupt (so PRIMASK, active exceptions and VTOR decide
//!    whether it answers) or polled, whether the ROM sets VTOR or clears PRIMASK, and what happens
//!    on the process stack. None of it has a primary source; each field is listed in
//!    [`RomConfig::unverified`] with the evidence behind its default.
//!
//! hil-virtual-board's `StRom` is this integration (the board's default ROM).
//!
//! # Sources
//!
//! Comments cite AN3155 / AN3156 / AN2606 / AN2662 sections and the tags of
//! `shared/reference/bootloader-protocols.md`: \[OBL\] ST's Open Bootloader, \[SF\] stm32flash,
//! \[DU\] dfu-util, \[USBD\] ST's USB device library, plus forum threads. Behaviour marked unverified
//! there is a switch in [`RomConfig`].

pub mod config;
pub mod dfu;
mod mem;
pub mod target;
pub mod usart;

pub use config::{
    ConfigError, DfuConfig, EntryQuirks, EraseKind, Execution, FlashLayout, LeaveJump, Level2Marker, MemoryRegion,
    OptionBytesLayout, ProcessStackEntry, RegionKind, RomConfig, Service, UsartConfig, VtorAtEntry,
    memory_layout_string, serial_from_uid,
};
pub use dfu::{ControlOutcome, ControlResponse, DfuEngine, DfuState, DfuStatus, SetupPacket};
pub use target::{BootTarget, Jump, RdpLevel, RomAction, TargetError};
pub use usart::{ACK, LineError, NACK, RxByte, SYNC, UsartEngine, UsartOutput};
