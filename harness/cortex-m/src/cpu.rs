//! The Cortex-M core: registers, Thumb execution, exceptions, and the Private Peripheral Bus
//! (NVIC, SCB, SysTick, debug registers, FPB).
//!
//! CONTRACT: the public items of this file are used by the virtual board (hil-virtual-board) and the
//! simulated probe (hil-virtual-probe). Keep their signatures; extend freely.

use crate::bus::{Bus, BusFault, Size};
use crate::device::ResetCause;

/// Static properties of the core as a chip integrates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuConfig {
    /// CPUID register value (0x410CC601: Cortex-M0+ r0p1).
    pub cpuid: u32,
    /// External interrupt lines wired to the NVIC.
    pub external_interrupts: u32,
    /// Implemented NVIC priority bits (2 on the M0+).
    pub priority_bits: u8,
    /// Whether SCB->VTOR exists (optional on ARMv6-M; present on STM32G0).
    pub vtor_present: bool,
    /// FPB instruction comparators (4 on the M0+).
    pub fpb_comparators: u8,
    /// `UDF #imm` with this immediate stops the core with [`Stop::NativeTrap`] instead of
    /// faulting: how the board hands control to native models (the ROM bootloader).
    pub native_trap: Option<u8>,
}

impl CpuConfig {
    /// Cortex-M0+ as integrated on STM32G0 (PM0223; RM0444 12.1).
    pub fn cortex_m0plus(external_interrupts: u32) -> Self {
        CpuConfig {
            cpuid: 0x410C_C601,
            external_interrupts,
            priority_bits: 2,
            vtor_present: true,
            fpb_comparators: 4,
            native_trap: None,
        }
    }
}

/// Core registers, numbered as DCRSR.REGSEL numbers them (ARMv6-M ARM C1.6.3), so the debug
/// register interface and the API agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
    R11,
    R12,
    /// The current stack pointer (MSP or PSP, per mode and CONTROL.SPSEL).
    Sp = 13,
    Lr = 14,
    /// DebugReturnAddress: the PC the core resumes at.
    Pc = 15,
    Xpsr = 16,
    Msp = 17,
    Psp = 18,
    /// CONTROL[31:24], FAULTMASK[23:16], BASEPRI[15:8], PRIMASK[7:0] (REGSEL 0b10100).
    SpecialPacked = 20,
}

impl Reg {
    pub fn from_regsel(sel: u32) -> Option<Reg> {
        use Reg::*;
        const ALL: [Reg; 20] =
            [R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, R11, R12, Sp, Lr, Pc, Xpsr, Msp, Psp, SpecialPacked];
        ALL.iter().copied().find(|r| *r as u32 == sel)
    }
}

/// Why the core is halted in debug state (DFSR bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HaltReason {
    /// DHCSR.C_HALT requested by the debugger (DFSR.HALTED).
    Request,
    /// Single step completed (DFSR.HALTED).
    Step,
    /// BKPT instruction or FPB comparator match (DFSR.BKPT).
    Breakpoint,
    /// DEMCR vector catch: VC_CORERESET after reset, VC_HARDERR on HardFault (DFSR.VCATCH).
    VectorCatch,
}

/// Why [`Cpu::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `until_cycle` was reached (a device event may be due).
    Budget,
    /// WFI/WFE with nothing to wake the core: time may skip to the next event.
    Sleeping,
    /// In debug state.
    Halted(HaltReason),
    /// SYSRESETREQ, or a device requested a reset: the board performs it.
    ResetRequested(ResetCause),
    /// Locked up (e.g. a fault while in HardFault): the core no longer executes.
    Lockup { pc: u32 },
    /// `UDF #imm` with the configured native trap immediate at `pc` (PC is left at `pc`).
    NativeTrap { pc: u32, imm: u8 },
}

/// Execution state as seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    Sleeping,
    Halted(HaltReason),
    Lockup,
}

/// Everything a diagnosis needs from the core, captured at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreSnapshot {
    /// R0-R12, SP (current), LR, PC.
    pub r: [u32; 16],
    pub xpsr: u32,
    pub msp: u32,
    pub psp: u32,
    pub primask: bool,
    pub control: u32,
    /// Exception number in IPSR (0 = thread mode).
    pub ipsr: u32,
    pub vtor: u32,
    pub icsr: u32,
    pub aircr: u32,
    pub scr: u32,
    pub ccr: u32,
    pub shpr2: u32,
    pub shpr3: u32,
    pub systick_csr: u32,
    pub systick_rvr: u32,
    pub systick_cvr: u32,
    /// NVIC enable / pending / active bits per 32 interrupts (word n covers IRQ 32n..32n+31).
    pub nvic_iser: Vec<u32>,
    pub nvic_ispr: Vec<u32>,
    pub nvic_iabr: Vec<u32>,
    /// NVIC_IPRn words.
    pub nvic_ipr: Vec<u32>,
    /// Active exception numbers (system and external), innermost last.
    pub active_exceptions: Vec<u32>,
    pub dhcsr: u32,
    pub demcr: u32,
    pub dfsr: u32,
    pub locked_up: bool,
    pub cycles: u64,
}

/// The core.
pub struct Cpu {
    _todo: (),
}

impl Cpu {
    pub fn new(config: CpuConfig) -> Cpu {
        let _ = config;
        todo!("issue 3")
    }

    pub fn config(&self) -> &CpuConfig {
        todo!("issue 3")
    }

    /// Power-on reset: every register of the core and its PPB, debug registers included, then the
    /// reset sequence (SP_main from [VTOR=0], PC from [VTOR+4], read through `bus`).
    pub fn power_on_reset<B: Bus>(&mut self, bus: &mut B) {
        let _ = bus;
        todo!("issue 3")
    }

    /// System reset (SYSRESETREQ, NRST, watchdog...): like power-on but the debug registers
    /// (DHCSR.C_DEBUGEN, DEMCR, FPB) survive; DHCSR.S_RESET_ST is set. With DEMCR.VC_CORERESET and
    /// C_DEBUGEN the core halts before the first instruction.
    pub fn system_reset<B: Bus>(&mut self, bus: &mut B) {
        let _ = bus;
        todo!("issue 3")
    }

    /// Execute until the core's cycle count reaches `until_cycle` (or earlier, see [`Stop`]).
    /// The core also stops at the bus's [`Bus::deadline_cycle`] and at its own SysTick wrap.
    pub fn run<B: Bus>(&mut self, bus: &mut B, until_cycle: u64) -> Stop {
        let _ = (bus, until_cycle);
        todo!("issue 3")
    }

    /// Execute exactly one instruction (or take one exception entry), ignoring halt state.
    pub fn step<B: Bus>(&mut self, bus: &mut B) -> Stop {
        let _ = bus;
        todo!("issue 3")
    }

    /// Core cycles since power-on.
    pub fn cycles(&self) -> u64 {
        todo!("issue 3")
    }

    /// Let `n` cycles pass without executing (asleep or halted): SysTick and the cycle count move.
    pub fn skip_cycles(&mut self, n: u64) {
        let _ = n;
        todo!("issue 3")
    }

    pub fn run_state(&self) -> RunState {
        todo!("issue 3")
    }

    /// Enter debug state as if DHCSR.C_HALT had been written (needs C_DEBUGEN like the hardware).
    pub fn halt(&mut self) {
        todo!("issue 3")
    }

    /// Leave debug state.
    pub fn resume(&mut self) {
        todo!("issue 3")
    }

    pub fn reg(&self, r: Reg) -> u32 {
        let _ = r;
        todo!("issue 3")
    }

    pub fn set_reg(&mut self, r: Reg, value: u32) {
        let _ = (r, value);
        todo!("issue 3")
    }

    pub fn vtor(&self) -> u32 {
        todo!("issue 3")
    }

    /// The debugger's view of the address space (what an AHB-AP reaches): the PPB, debug
    /// registers included, is served by the core; everything else goes to `bus` as a debug access.
    pub fn debug_read<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size) -> Result<u32, BusFault> {
        let _ = (bus, addr, size);
        todo!("issue 3")
    }

    pub fn debug_write<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size, value: u32) -> Result<(), BusFault> {
        let _ = (bus, addr, size, value);
        todo!("issue 3")
    }

    /// A reset the core requested outside `run` (e.g. the debugger wrote AIRCR.SYSRESETREQ while
    /// the core was halted). The board performs it.
    pub fn take_reset_request(&mut self) -> Option<ResetCause> {
        todo!("issue 3")
    }

    pub fn snapshot(&self) -> CoreSnapshot {
        todo!("issue 3")
    }
}
