//! Our own Cortex-M core for the virtual board, with the system level the bootloader flows
//! exercise. Why not an existing crate: `shared/reference/cpu-emulator-choice.md`.
//!
//! Layers:
//! - [`time`]: virtual time (picoseconds).
//! - [`memory`]: the memory map (stores, regions, aliases, remap) with O(1) decode.
//! - [`device`]: the [`Device`] trait boards implement for peripherals.
//! - [`scheduler`]: device events on virtual time.
//! - [`system`]: [`System`], the board's bus (memory + devices + scheduler + IRQ lines + clock).
//! - [`bus`]: the [`Bus`] trait the core executes against.
//! - [`cpu`]: the core itself ([`Cpu`]), with NVIC, SCB, SysTick and the debug registers. The
//!   architecture profile is per chip ([`CpuConfig::arch`], [`Arch`]): ARMv6-M (Cortex-M0/M0+),
//!   ARMv7-M (Cortex-M3: Thumb-2, IT, BASEPRI/FAULTMASK, configurable faults) or ARMv7E-M
//!   (Cortex-M4 integer core: plus the DSP extension; the FPU is not modelled).
//!
//! Speed: the core keeps a decoded copy of the code it runs (lines fetched through
//! [`Bus::fetch_code_line`], kept coherent through [`Bus::code_generation`]), polls
//! [`Bus::attention`] only after loads and stores, and stops only at its budget, the bus deadline
//! or its SysTick wrap. `cargo bench -p hil-cortex-m` prints the figures.

pub mod bus;
pub mod cpu;
pub mod device;
pub mod memory;
pub mod scheduler;
pub mod system;
pub mod time;

pub use bus::{Attention, Bus, BusFault, BusFaultKind, CODE_LINE_BYTES, CODE_LINE_HALFWORDS, Initiator, Size};
pub use cpu::{Arch, CoreSnapshot, Cpu, CpuConfig, FaultKind, FaultRecord, HaltReason, LOCKUP_PC, Reg, RunState, Stop};
pub use device::{Device, DeviceCx, IrqLines, ResetCause};
pub use memory::{DeviceId, MapError, Memory, Region, RegionId, StoreId, Target, WritePolicy};
pub use scheduler::Scheduler;
pub use system::{CoreClock, System};
pub use time::{VirtualDuration, VirtualTime};
