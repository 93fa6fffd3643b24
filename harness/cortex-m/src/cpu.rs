//! The Cortex-M core: registers, Thumb execution, exceptions, and the Private Peripheral Bus
//! (NVIC, SCB, SysTick, debug registers, FPB).
//!
//! CONTRACT: the public items of this file are used by the virtual board (hil-virtual-board) and the
//! simulated probe (hil-virtual-probe). Keep their signatures; extend freely.
//!
//! Layout: `decode` (Thumb encodings to ops), `exec` (instruction semantics), `exceptions`
//! (priorities, entry/return, faults, lockup), `ppb` (NVIC/SCB/SysTick/debug/FPB registers),
//! `systick`, `icache` (decoded-code cache), `thumb2` (ARMv7-M 32-bit instructions, IT blocks,
//! the DSP extension). ARMv7-M extends ARMv6-M without rewriting it: its 16-bit additions and
//! the 32-bit space decode to their own ops (predecoded into the icache entry), the run loop has
//! an ARMv7-M instantiation that honours ITSTATE, BASEPRI/FAULTMASK/PRIGROUP enter the execution
//! priority (`exceptions`), and the [`FaultKind`]s that ARMv6-M escalates to HardFault map onto
//! MemManage/BusFault/UsageFault with CFSR/HFSR/BFAR (B1.5.16, B3.2.15).

mod decode;
mod exceptions;
mod exec;
mod icache;
mod mpu;
mod ppb;
mod systick;
mod thumb2;

pub use exceptions::{FaultKind, FaultRecord};

use crate::bus::{Bus, BusFault, Initiator, Size};
use crate::device::ResetCause;
use exceptions::Nvic;
use icache::ICache;
use ppb::{DEMCR_VC_CORERESET, DFSR_BKPT, DFSR_DWTTRAP, DFSR_HALTED, DFSR_VCATCH, DebugRegs};
use systick::SysTick;

/// The architecture profile the core implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Arch {
    /// ARMv6-M (Cortex-M0/M0+): 16-bit Thumb plus BL, MSR, MRS, barriers; every fault is HardFault.
    #[default]
    V6M,
    /// ARMv7-M (Cortex-M3): Thumb-2, IT, BASEPRI/FAULTMASK, configurable faults.
    V7M,
    /// ARMv7E-M (Cortex-M4 without FPU use): ARMv7-M plus the DSP extension.
    V7EM,
}

impl Arch {
    /// ARMv7-M or later.
    #[inline(always)]
    pub fn is_v7(self) -> bool {
        self != Arch::V6M
    }

    /// The DSP extension (ARMv7-M ARM A4.1: ARMv7E-M).
    #[inline(always)]
    pub fn has_dsp(self) -> bool {
        self == Arch::V7EM
    }
}

/// Static properties of the core as a chip integrates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuConfig {
    /// Architecture profile: which encodings exist and which system level the core has.
    pub arch: Arch,
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
    /// FPB version 2 (ARMv7-M C1.11, FP_CTRL.REV = 1, as on the Cortex-M7): comparators hold
    /// BPADDR[31:1] and BE[0] and cover the whole address space. Version 1 (M0+ BPU, M3, M4)
    /// holds COMP[28:2] and REPLACE[31:30] and covers the code region only.
    pub fpb_rev2: bool,
    /// Bit-band aliases at 0x22000000 (SRAM) and 0x42000000 (peripherals): an option of the
    /// Cortex-M3/M4 that STM32F1/F2/F4 implement (PM0056 2.2.5, PM0214 2.2.5).
    pub bitband: bool,
    /// MPU_TYPE.DREGION (ARMv7-M B3.5.5): PMSAv7 MPU regions, 0 = no MPU. Cortex-M3/M4 with
    /// the MPU option: 8. At most 16 are modelled; ARMv6-M cores get none (PMSAv6 is not
    /// modelled).
    pub mpu_regions: u8,
    /// `UDF #imm` with this immediate stops the core with [`Stop::NativeTrap`] instead of
    /// faulting: how the board hands control to native models (the ROM bootloader).
    pub native_trap: Option<u8>,
}

impl CpuConfig {
    /// Cortex-M0+ as integrated on STM32G0 (PM0223; RM0444 12.1).
    pub fn cortex_m0plus(external_interrupts: u32) -> Self {
        CpuConfig {
            arch: Arch::V6M,
            cpuid: 0x410C_C601,
            external_interrupts,
            priority_bits: 2,
            vtor_present: true,
            fpb_comparators: 4,
            fpb_rev2: false,
            bitband: false,
            mpu_regions: 0,
            native_trap: None,
        }
    }

    /// Cortex-M3 r1p1 as integrated on STM32F1 (PM0056 4.2: CPUID 0x411FC231, 4 priority bits,
    /// FPB with 6 instruction comparators).
    pub fn cortex_m3(external_interrupts: u32) -> Self {
        CpuConfig {
            arch: Arch::V7M,
            cpuid: 0x411F_C231,
            external_interrupts,
            priority_bits: 4,
            vtor_present: true,
            fpb_comparators: 6,
            fpb_rev2: false,
            bitband: true,
            // Cortex-M3 TRM 9.1: the optional MPU has eight regions.
            mpu_regions: 8,
            native_trap: None,
        }
    }

    /// Cortex-M4 r0p1 as integrated on STM32F4/G4/L4 (PM0214 4.3: CPUID 0x410FC241, 4 priority
    /// bits). The FPU is not modelled: CPACR reads as zero and FP instructions raise NOCP.
    pub fn cortex_m4(external_interrupts: u32) -> Self {
        CpuConfig { arch: Arch::V7EM, cpuid: 0x410F_C241, ..Self::cortex_m3(external_interrupts) }
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
    /// CONTROL\[31:24\], FAULTMASK\[23:16\], BASEPRI\[15:8\], PRIMASK\[7:0\] (REGSEL 0b10100).
    SpecialPacked = 20,
}

impl Reg {
    pub fn from_regsel(sel: u32) -> Option<Reg> {
        const ALL: [Reg; 20] = [
            Reg::R0,
            Reg::R1,
            Reg::R2,
            Reg::R3,
            Reg::R4,
            Reg::R5,
            Reg::R6,
            Reg::R7,
            Reg::R8,
            Reg::R9,
            Reg::R10,
            Reg::R11,
            Reg::R12,
            Reg::Sp,
            Reg::Lr,
            Reg::Pc,
            Reg::Xpsr,
            Reg::Msp,
            Reg::Psp,
            Reg::SpecialPacked,
        ];
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
    /// A DWT data-address watchpoint matched (ARMv7-M, DFSR.DWTTRAP); the core halts after the
    /// accessing instruction.
    Watchpoint,
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
    /// Locked up (e.g. a fault while in HardFault): the core no longer executes. `pc` is the
    /// instruction whose fault locked it up; the architectural PC reads [`LOCKUP_PC`].
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
    /// ARMv7-M BASEPRI and FAULTMASK (zero on ARMv6-M).
    pub basepri: u8,
    pub faultmask: bool,
    pub control: u32,
    /// Exception number in IPSR (0 = thread mode).
    pub ipsr: u32,
    pub vtor: u32,
    pub icsr: u32,
    pub aircr: u32,
    pub scr: u32,
    pub ccr: u32,
    /// ARMv7-M CFSR and HFSR (zero on ARMv6-M).
    pub cfsr: u32,
    pub hfsr: u32,
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
///
/// One instance per board, driven from the board's thread: [`Cpu::run`] executes against a
/// [`Bus`] until a budget, a device deadline or an event the board must handle.
pub struct Cpu {
    cfg: CpuConfig,
    /// R0-R15. `r[13]` is the SP in use (MSP or PSP), `r[15]` the address of the next instruction.
    pub(crate) r: [u32; 16],
    /// The banked SP that is not in use.
    pub(crate) sp_other: u32,
    pub(crate) n: bool,
    pub(crate) z: bool,
    pub(crate) c: bool,
    pub(crate) v: bool,
    /// EPSR.T: executing with it clear is an INVSTATE fault (B1.4.2).
    pub(crate) t: bool,
    pub(crate) ipsr: u32,
    /// EPSR.IT (ITSTATE, A7.3.3): nonzero inside an IT block. Always zero on ARMv6-M.
    pub(crate) it: u8,
    /// APSR.Q (sticky saturation) and APSR.GE[3:0] (ARMv7-M A2.3.2; GE with the DSP extension).
    pub(crate) q: bool,
    pub(crate) ge: u8,
    pub(crate) primask: bool,
    /// ARMv7-M BASEPRI (implemented bits only) and FAULTMASK (B1.4.3).
    pub(crate) basepri: u8,
    pub(crate) faultmask: bool,
    /// The local exclusive monitor (A3.4): the address LDREX tagged, if open.
    pub(crate) excl: Option<u32>,
    /// ARMv7-M system control state (B3.2): CCR, fault status, DWT.
    pub(crate) v7: V7Regs,
    /// A DWT comparator watches data addresses (and DEMCR.TRCENA is set): the ARMv7-M run loop
    /// sends accesses through a recording bus.
    pub(crate) watch_armed: bool,
    /// The MPU exists and MPU_CTRL.ENABLE is set: loads and stores are checked (B3.5).
    pub(crate) mpu_on: bool,
    /// The ARMv7-M run loop takes the slow path for every instruction (watchpoints or the MPU).
    pub(crate) slow: bool,
    /// AIRCR.VECTRESET written: the core performs a local reset when it next has the bus.
    pub(crate) vect_reset: bool,
    pub(crate) spsel: bool,
    pub(crate) npriv: bool,
    /// The WFE event register (B1.5.18).
    pub(crate) event: bool,
    pub(crate) nvic: Nvic,
    pub(crate) vtor: u32,
    pub(crate) scr: u32,
    pub(crate) systick: SysTick,
    pub(crate) dbg: DebugRegs,
    pub(crate) halted: Option<HaltReason>,
    pub(crate) sleep: Option<Sleep>,
    pub(crate) locked_up: bool,
    pub(crate) lockup_pc: u32,
    /// DHCSR.C_STEP was set when the core left debug state: retire one instruction, then halt.
    pub(crate) step_armed: bool,
    /// SYSRESETREQ written (by software or the debugger), not yet handed to the board.
    pub(crate) pending_reset: Option<ResetCause>,
    /// A device asked for a reset (bus attention), not yet handed to the board.
    pub(crate) device_reset: Option<ResetCause>,
    pub(crate) trap: Option<u8>,
    /// Set by anything that may change what the run loop must do next (interrupt masking,
    /// pending exceptions, halts, bus attention...): the inner loop stops and re-evaluates.
    pub(crate) service: bool,
    pub(crate) cycles: u64,
    pub(crate) retired: u64,
    pub(crate) deadline: u64,
    pub(crate) icache: ICache,
    pub(crate) last_fault: Option<FaultRecord>,
    /// NVIC line levels as last sampled from the bus.
    pub(crate) irq_levels: [u64; 4],
}

/// ARMv7-M system control registers that ARMv6-M does not have (B3.2.2 table).
#[derive(Clone, Debug, Default)]
pub(crate) struct V7Regs {
    /// CCR (B3.2.8): NONBASETHRDENA, USERSETMPEND, UNALIGN_TRP, DIV_0_TRP, BFHFNMIGN, STKALIGN.
    pub ccr: u32,
    /// CFSR = UFSR:BFSR:MMFSR (B3.2.15), HFSR (B3.2.16), MMFAR, BFAR.
    pub cfsr: u32,
    pub hfsr: u32,
    pub mmfar: u32,
    pub bfar: u32,
    /// CPACR (B3.2.20): with no FPU the CP10/CP11 fields read as zero.
    pub cpacr: u32,
    /// The DWT (debug domain: survives system resets).
    pub dwt: Dwt,
    /// The MPU (B3.5; part of the SCS: reset with the core).
    pub mpu: mpu::Mpu,
}

/// ARMv7-M DWT state (C1.8): the cycle counter and the data-address comparators.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dwt {
    /// DWT_CTRL.CYCCNTENA and the cycle at which CYCCNT would have been zero (C1.8.6).
    pub cyccnt_on: bool,
    pub cyccnt_base: u64,
    /// CYCCNT while stopped.
    pub cyccnt_held: u32,
    /// DWT_COMPn, DWT_MASKn, DWT_FUNCTIONn (C1.8.10-12).
    pub comp: [u32; DWT_COMPARATORS],
    pub mask: [u32; DWT_COMPARATORS],
    pub function: [u32; DWT_COMPARATORS],
}

/// DWT comparators on the Cortex-M3/M4 (TRM: four).
pub(crate) const DWT_COMPARATORS: usize = 4;

pub(crate) const CCR_UNALIGN_TRP: u32 = 1 << 3;
pub(crate) const CCR_DIV_0_TRP: u32 = 1 << 4;
pub(crate) const CCR_STKALIGN: u32 = 1 << 9;

/// Why the core sleeps (B1.5.19 WFI, B1.5.18 WFE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sleep {
    Wfi,
    Wfe,
}

/// What ended an instruction abnormally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exc {
    Fault(FaultKind),
    Svc,
    Bkpt,
    FpbBreak,
    NativeTrap(u8),
}

impl From<FaultKind> for Exc {
    fn from(k: FaultKind) -> Self {
        Exc::Fault(k)
    }
}

/// Exception numbers (B1.5.2).
pub(crate) const EXC_NMI: u32 = 2;
pub(crate) const EXC_HARDFAULT: u32 = 3;
/// ARMv7-M configurable faults and DebugMonitor (B1.5.2).
pub(crate) const EXC_MEMMANAGE: u32 = 4;
pub(crate) const EXC_BUSFAULT: u32 = 5;
pub(crate) const EXC_USAGEFAULT: u32 = 6;
pub(crate) const EXC_DEBUGMON: u32 = 12;
pub(crate) const EXC_SVCALL: u32 = 11;
pub(crate) const EXC_PENDSV: u32 = 14;
pub(crate) const EXC_SYSTICK: u32 = 15;
pub(crate) const EXC_IRQ0: u32 = 16;

/// The PC of a locked-up Cortex-M0+ (ARMv6-M B1.5.15 and the M0+ TRM: lockup fetches from
/// 0xFFFFFFFE).
pub const LOCKUP_PC: u32 = 0xFFFF_FFFE;

impl Cpu {
    pub fn new(config: CpuConfig) -> Cpu {
        let mut config = config;
        // The bus models 256 interrupt lines; ARMv6-M allows 32 and ARMv7-M 496.
        config.external_interrupts = config.external_interrupts.min(256);
        config.priority_bits = config.priority_bits.clamp(1, 8);
        config.fpb_comparators = config.fpb_comparators.min(15);
        config.mpu_regions = if config.arch.is_v7() { config.mpu_regions.min(mpu::MAX_REGIONS) } else { 0 };
        let nvic = Nvic::new(config.external_interrupts, config.priority_bits, config.arch.is_v7());
        let dbg = DebugRegs::new(config.fpb_comparators);
        Cpu {
            cfg: config,
            r: [0; 16],
            sp_other: 0,
            n: false,
            z: false,
            c: false,
            v: false,
            t: true,
            ipsr: 0,
            it: 0,
            q: false,
            ge: 0,
            primask: false,
            basepri: 0,
            faultmask: false,
            excl: None,
            v7: V7Regs { ccr: CCR_STKALIGN, ..V7Regs::default() },
            watch_armed: false,
            mpu_on: false,
            slow: false,
            vect_reset: false,
            spsel: false,
            npriv: false,
            event: false,
            nvic,
            vtor: 0,
            scr: 0,
            // STM32 integrations feed the SysTick reference clock from HCLK/8 (RM0444 clock tree,
            // PM0223 4.4); boards override it with set_systick_reference.
            systick: SysTick::new(Some(8), 0),
            dbg,
            halted: None,
            sleep: None,
            locked_up: false,
            lockup_pc: 0,
            step_armed: false,
            pending_reset: None,
            device_reset: None,
            trap: None,
            service: true,
            cycles: 0,
            retired: 0,
            deadline: u64::MAX,
            icache: ICache::new(),
            last_fault: None,
            irq_levels: [0; 4],
        }
    }

    pub fn config(&self) -> &CpuConfig {
        &self.cfg
    }

    /// Power-on reset: every register of the core and its PPB, debug registers included, then the
    /// reset sequence (SP_main from [VTOR=0], PC from [VTOR+4], read through `bus`).
    ///
    /// The cycle count is not reset: it is the board's time base and only moves forward.
    pub fn power_on_reset<B: Bus>(&mut self, bus: &mut B) {
        self.dbg = DebugRegs::new(self.cfg.fpb_comparators);
        // The DWT is in the debug domain: only a power-on reset clears it.
        self.v7 = V7Regs::default();
        self.watch_armed = false;
        self.reset_common(bus);
    }

    /// System reset (SYSRESETREQ, NRST, watchdog...): like power-on but the debug registers
    /// (DHCSR.C_DEBUGEN, DEMCR, FPB) survive; DHCSR.S_RESET_ST is set. With DEMCR.VC_CORERESET and
    /// C_DEBUGEN the core halts before the first instruction.
    pub fn system_reset<B: Bus>(&mut self, bus: &mut B) {
        // A local reset leaves debug state (ARMv6-M C1.4): only a vector catch halts again.
        self.dbg.c_halt = false;
        self.dbg.c_step = false;
        self.dbg.c_maskints = false;
        self.reset_common(bus);
    }

    /// Carry out a pending AIRCR.VECTRESET (ARMv7-M B3.2.6): a local reset of the core only, with
    /// the system reset's treatment of the debug registers (they survive, DHCSR.S_RESET_ST is
    /// set, VC_CORERESET halts). Devices are not told: the board's peripherals keep their state.
    fn take_vect_reset<B: Bus>(&mut self, bus: &mut B) {
        if std::mem::take(&mut self.vect_reset) {
            self.system_reset(bus);
        }
    }

    /// B1.5.5 TakeReset.
    fn reset_common<B: Bus>(&mut self, bus: &mut B) {
        self.r = [0; 16];
        self.r[14] = 0xFFFF_FFFF;
        self.sp_other = 0;
        (self.n, self.z, self.c, self.v) = (false, false, false, false);
        self.ipsr = 0;
        self.it = 0;
        self.q = false;
        self.ge = 0;
        self.primask = false;
        self.basepri = 0;
        self.faultmask = false;
        self.excl = None;
        let dwt = std::mem::take(&mut self.v7.dwt);
        // B3.2.8: CCR resets with STKALIGN set (Cortex-M3 r2p0+, M4); the DWT is debug state.
        self.v7 = V7Regs { ccr: CCR_STKALIGN, dwt, ..V7Regs::default() };
        self.vect_reset = false;
        self.update_mpu();
        self.spsel = false;
        self.npriv = false;
        self.event = false;
        self.nvic.reset();
        // DEMCR (debug domain) survives a system reset, and with it DebugMonitor's enable.
        self.nvic.debugmon_ena = self.cfg.arch.is_v7() && self.dbg.demcr & ppb::DEMCR_MON_EN != 0;
        self.vtor = 0;
        self.scr = 0;
        self.systick.reset(self.cycles);
        self.halted = None;
        self.sleep = None;
        self.locked_up = false;
        self.step_armed = false;
        self.pending_reset = None;
        self.device_reset = None;
        self.trap = None;
        self.service = true;
        self.irq_levels = [0; 4];
        self.dbg.s_reset_st = true;
        self.icache.flush(bus.code_generation());
        let sp = bus.read(0, Size::Word, Initiator::Cpu, self.cycles);
        let pc = bus.read(4, Size::Word, Initiator::Cpu, self.cycles);
        match (sp, pc) {
            (Ok(sp), Ok(pc)) => {
                self.r[13] = sp & !3;
                self.r[15] = pc & !1;
                self.t = pc & 1 != 0;
            }
            (Err(f), _) | (_, Err(f)) => {
                // A reset vector that cannot be read locks the core up (B1.5.15).
                self.t = true;
                self.record_fault(FaultKind::VectorRead(f), 0);
                self.lockup(0);
            }
        }
        if self.dbg.c_debugen && self.dbg.demcr & DEMCR_VC_CORERESET != 0 {
            self.enter_debug(HaltReason::VectorCatch);
        }
    }

    /// Execute until the core's cycle count reaches `until_cycle` (or earlier, see [`Stop`]).
    /// The core also stops at the bus's [`Bus::deadline_cycle`] and at its own SysTick wrap.
    ///
    /// SysTick wraps are handled inside (the exception is pended at the exact cycle; `run` does
    /// not return for them). While the core sleeps or is locked up, `run` moves the cycle count
    /// itself to the earlier of `until_cycle` and the bus deadline (SysTick may wake it on the
    /// way) and returns [`Stop::Sleeping`] / [`Stop::Lockup`] there, so a board loop only has to
    /// dispatch due events and call `run` again. While halted, `run` returns at once and the
    /// cycle count stays (use [`Cpu::skip_cycles`] to let time pass).
    pub fn run<B: Bus>(&mut self, bus: &mut B, until_cycle: u64) -> Stop {
        self.deadline = bus.deadline_cycle();
        loop {
            if let Some(stop) = self.service_point(bus, until_cycle) {
                return stop;
            }
            if self.cycles >= until_cycle || self.cycles >= self.deadline {
                return Stop::Budget;
            }
            if self.step_armed {
                self.debug_step(bus);
                continue;
            }
            let limit = until_cycle.min(self.deadline).min(self.systick.next_event);
            if self.cfg.arch.is_v7() {
                self.exec_loop::<B, true>(bus, limit);
            } else {
                self.exec_loop::<B, false>(bus, limit);
            }
        }
    }

    /// Execute exactly one instruction (or take one exception entry), ignoring halt state.
    pub fn step<B: Bus>(&mut self, bus: &mut B) -> Stop {
        self.deadline = bus.deadline_cycle();
        if bus.attention() {
            self.take_attention(bus);
        }
        if let Some(stop) = self.pending_stop() {
            return stop;
        }
        self.take_vect_reset(bus);
        self.sync_code(bus);
        if self.cycles >= self.systick.next_event {
            self.tick_systick();
        }
        if self.locked_up {
            return Stop::Lockup { pc: self.lockup_pc };
        }
        self.sleep = None;
        if !self.t {
            let pc = self.r[15];
            self.raise(bus, Exc::Fault(FaultKind::InvalidState), pc);
        } else if let Some(exc) = self.pending_to_take() {
            let ret = self.r[15];
            self.take_exception(bus, exc, ret);
        } else {
            self.exec_one(bus);
        }
        if let Some(stop) = self.pending_stop() {
            return stop;
        }
        if self.locked_up {
            return Stop::Lockup { pc: self.lockup_pc };
        }
        match (self.halted, self.sleep) {
            (Some(h), _) => Stop::Halted(h),
            (None, Some(_)) => Stop::Sleeping,
            (None, None) => Stop::Budget,
        }
    }

    /// Core cycles since the `Cpu` was created (resets do not rewind it: it is the time base).
    pub fn cycles(&self) -> u64 {
        self.cycles
    }

    /// Instructions retired since the `Cpu` was created.
    pub fn instructions(&self) -> u64 {
        self.retired
    }

    /// Let `n` cycles pass without executing (asleep or halted): SysTick and the cycle count move.
    pub fn skip_cycles(&mut self, n: u64) {
        self.cycles = self.cycles.saturating_add(n);
        if self.cycles >= self.systick.next_event {
            self.tick_systick();
        }
    }

    pub fn run_state(&self) -> RunState {
        if let Some(h) = self.halted {
            RunState::Halted(h)
        } else if self.locked_up {
            RunState::Lockup
        } else if self.sleep.is_some() {
            RunState::Sleeping
        } else {
            RunState::Running
        }
    }

    /// Enter debug state as if DHCSR.C_HALT had been written (needs C_DEBUGEN like the hardware).
    pub fn halt(&mut self) {
        if self.dbg.c_debugen && self.halted.is_none() {
            self.enter_debug(HaltReason::Request);
        }
    }

    /// Leave debug state.
    pub fn resume(&mut self) {
        self.dbg.c_halt = false;
        self.dbg.c_step = false;
        self.leave_debug();
    }

    pub fn reg(&self, r: Reg) -> u32 {
        match r {
            Reg::Pc => self.r[15],
            Reg::Xpsr => self.xpsr(),
            Reg::Msp => self.msp(),
            Reg::Psp => self.psp(),
            Reg::SpecialPacked => self.special_packed(),
            other => self.r[other as usize],
        }
    }

    pub fn set_reg(&mut self, r: Reg, value: u32) {
        self.service = true;
        match r {
            // DebugReturnAddress is halfword aligned (C1.6.3).
            Reg::Pc => self.r[15] = value & !1,
            Reg::Sp => self.r[13] = value & !3,
            Reg::Xpsr => {
                self.set_apsr(value);
                self.t = value & XPSR_T != 0;
                self.set_epsr_it(value);
                self.set_stack_state(value & self.ipsr_mask(), self.spsel);
            }
            Reg::Msp => self.set_msp(value),
            Reg::Psp => self.set_psp(value),
            Reg::SpecialPacked => {
                self.primask = value & 1 != 0;
                if self.cfg.arch.is_v7() {
                    self.basepri = (value >> 8) as u8 & self.nvic.prio_mask;
                    self.faultmask = value & (1 << 16) != 0;
                }
                let control = value >> 24;
                self.npriv = control & 1 != 0;
                self.set_stack_state(self.ipsr, control & 2 != 0);
            }
            other => self.r[other as usize] = value,
        }
    }

    pub fn vtor(&self) -> u32 {
        self.vtor
    }

    /// The debugger's view of the address space (what an AHB-AP reaches): the PPB, debug
    /// registers included, is served by the core; everything else goes to `bus` as a debug access.
    pub fn debug_read<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size) -> Result<u32, BusFault> {
        if is_ppb(addr) {
            return self.debug_ppb_read(addr, size);
        }
        bus.read(addr, size, Initiator::Debug, self.cycles)
    }

    pub fn debug_write<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size, value: u32) -> Result<(), BusFault> {
        if is_ppb(addr) {
            let r = self.debug_ppb_write(addr, size, value);
            // AIRCR.VECTRESET from the debugger: the local reset is done when the write completes.
            self.take_vect_reset(bus);
            return r;
        }
        bus.write(addr, size, value, Initiator::Debug, self.cycles)
    }

    /// A reset the core requested outside `run` (e.g. the debugger wrote AIRCR.SYSRESETREQ while
    /// the core was halted). The board performs it.
    pub fn take_reset_request(&mut self) -> Option<ResetCause> {
        self.pending_reset.take()
    }

    pub fn snapshot(&self) -> CoreSnapshot {
        let words = self.cfg.external_interrupts.div_ceil(32) as usize;
        let word = |bits: &[u64], first_exc: u32, i: usize| -> u32 {
            let mut w = 0;
            for b in 0..32u32 {
                let irq = i as u32 * 32 + b;
                if irq < self.cfg.external_interrupts && bit(bits, first_exc + irq) {
                    w |= 1 << b;
                }
            }
            w
        };
        CoreSnapshot {
            r: self.r,
            xpsr: self.xpsr(),
            msp: self.msp(),
            psp: self.psp(),
            primask: self.primask,
            basepri: self.basepri,
            faultmask: self.faultmask,
            control: self.control(),
            ipsr: self.ipsr,
            vtor: self.vtor,
            icsr: self.icsr(),
            aircr: self.aircr(),
            scr: self.scr,
            ccr: self.ccr(),
            cfsr: self.v7.cfsr,
            hfsr: self.v7.hfsr,
            shpr2: self.shpr2(),
            shpr3: self.shpr3(),
            systick_csr: {
                let mut st = self.systick.clone();
                st.read_csr(false)
            },
            systick_rvr: self.systick.rvr,
            systick_cvr: self.systick.current(self.cycles),
            nvic_iser: (0..words).map(|i| word(&self.nvic.enabled_ext_as_exc(), 0, i)).collect(),
            nvic_ispr: (0..words).map(|i| word(&self.nvic.pending, EXC_IRQ0, i)).collect(),
            nvic_iabr: (0..words).map(|i| word(&self.nvic.active, EXC_IRQ0, i)).collect(),
            nvic_ipr: (0..self.cfg.external_interrupts.div_ceil(4)).map(|i| self.nvic.ipr_word(i)).collect(),
            active_exceptions: self.nvic.stack.clone(),
            dhcsr: self.dhcsr_peek(),
            demcr: self.dbg.demcr,
            dfsr: self.dbg.dfsr,
            locked_up: self.locked_up,
            cycles: self.cycles,
        }
    }

    /// The last fault the core took (HardFault or lockup), with the address or register involved.
    pub fn last_fault(&self) -> Option<&FaultRecord> {
        self.last_fault.as_ref()
    }

    /// Pend NMI (a board's NMI source, e.g. the clock security system).
    pub fn pend_nmi(&mut self) {
        self.set_pending(EXC_NMI);
    }

    /// How the chip clocks the SysTick reference (CSR.CLKSOURCE = 0): `Some(d)` = one tick per
    /// `d` core cycles, `None` = no reference clock (CALIB.NOREF). `calib` is CALIB\[30:0\].
    pub fn set_systick_reference(&mut self, divider: Option<u32>, calib: u32) {
        self.systick.sync(self.cycles);
        self.systick.ref_divider = divider.map(|d| d.max(1));
        self.systick.calib = calib;
        let csr = self.systick.read_csr(false);
        self.systick.write_csr(self.cycles, csr);
    }

    /// Cycle of SysTick's next 1 -> 0 transition, if it is counting.
    pub fn systick_next_event(&self) -> Option<u64> {
        (self.systick.next_event != u64::MAX).then_some(self.systick.next_event)
    }

    // ---- register helpers -------------------------------------------------------------------

    /// B1.4.2: EPSR holds T and ICI/IT (ITSTATE[1:0] in bits 26:25, ITSTATE[7:2] in 15:10).
    pub(crate) fn xpsr(&self) -> u32 {
        let it = self.it as u32;
        self.apsr() | (self.t as u32) << 24 | (it & 3) << 25 | (it >> 2) << 10 | self.ipsr
    }

    #[inline]
    pub(crate) fn apsr(&self) -> u32 {
        (self.n as u32) << 31
            | (self.z as u32) << 30
            | (self.c as u32) << 29
            | (self.v as u32) << 28
            | (self.q as u32) << 27
            | (self.ge as u32) << 16
    }

    /// Write NZCV, and on ARMv7-M Q (and GE with the DSP extension).
    pub(crate) fn set_apsr(&mut self, v: u32) {
        self.n = v & (1 << 31) != 0;
        self.z = v & (1 << 30) != 0;
        self.c = v & (1 << 29) != 0;
        self.v = v & (1 << 28) != 0;
        if self.cfg.arch.is_v7() {
            self.q = v & (1 << 27) != 0;
        }
        if self.cfg.arch.has_dsp() {
            self.ge = (v >> 16) as u8 & 0xF;
        }
    }

    /// Restore EPSR.IT from an xPSR value (exception return, debugger writes); ARMv6-M has none.
    pub(crate) fn set_epsr_it(&mut self, xpsr: u32) {
        if self.cfg.arch.is_v7() {
            self.it = ((xpsr >> 25) & 3 | ((xpsr >> 10) & 0x3F) << 2) as u8;
        }
    }

    pub(crate) fn control(&self) -> u32 {
        self.npriv as u32 | (self.spsel as u32) << 1
    }

    pub(crate) fn ipsr_mask(&self) -> u32 {
        if self.cfg.arch.is_v7() { IPSR_MASK_V7 } else { IPSR_MASK }
    }

    /// CCR (B3.2.8): read-only STKALIGN | UNALIGN_TRP on ARMv6-M, the writable register on ARMv7-M.
    pub(crate) fn ccr(&self) -> u32 {
        if self.cfg.arch.is_v7() { self.v7.ccr } else { ppb::CCR_VALUE }
    }

    /// CONTROL[31:24], FAULTMASK[23:16], BASEPRI[15:8], PRIMASK[7:0] (DCRSR REGSEL 0b10100).
    pub(crate) fn special_packed(&self) -> u32 {
        self.control() << 24 | (self.faultmask as u32) << 16 | (self.basepri as u32) << 8 | self.primask as u32
    }

    #[inline]
    pub(crate) fn using_psp(&self) -> bool {
        self.spsel && self.ipsr == 0
    }

    pub(crate) fn msp(&self) -> u32 {
        if self.using_psp() { self.sp_other } else { self.r[13] }
    }

    pub(crate) fn psp(&self) -> u32 {
        if self.using_psp() { self.r[13] } else { self.sp_other }
    }

    /// B1.4.1: SP_main and SP_process have bits[1:0] zero.
    pub(crate) fn set_msp(&mut self, v: u32) {
        if self.using_psp() {
            self.sp_other = v & !3;
        } else {
            self.r[13] = v & !3;
        }
    }

    pub(crate) fn set_psp(&mut self, v: u32) {
        if self.using_psp() {
            self.r[13] = v & !3;
        } else {
            self.sp_other = v & !3;
        }
    }

    /// Change IPSR and CONTROL.SPSEL together, re-banking SP when the selected stack changes
    /// (B1.4.1: Handler mode always uses SP_main).
    pub(crate) fn set_stack_state(&mut self, ipsr: u32, spsel: bool) {
        let before = self.using_psp();
        self.ipsr = ipsr;
        self.spsel = spsel;
        if before != self.using_psp() {
            std::mem::swap(&mut self.r[13], &mut self.sp_other);
        }
    }

    #[inline]
    pub(crate) fn privileged(&self) -> bool {
        self.ipsr != 0 || !self.npriv
    }

    pub(crate) fn record_fault(&mut self, kind: FaultKind, pc: u32) {
        self.last_fault = Some(FaultRecord { kind, pc, cycle: self.cycles, during_entry: None, lockup: false });
    }

    /// B1.5.15: the core stops executing; PC reads 0xFFFFFFFE.
    pub(crate) fn lockup(&mut self, pc: u32) {
        self.locked_up = true;
        self.lockup_pc = pc;
        self.r[15] = LOCKUP_PC;
        self.sleep = None;
        self.service = true;
        if let Some(f) = &mut self.last_fault {
            f.lockup = true;
        }
    }

    fn pending_stop(&mut self) -> Option<Stop> {
        if let Some(cause) = self.device_reset.take() {
            return Some(Stop::ResetRequested(cause));
        }
        if let Some(cause) = self.pending_reset.take() {
            return Some(Stop::ResetRequested(cause));
        }
        if let Some(imm) = self.trap.take() {
            return Some(Stop::NativeTrap { pc: self.r[15], imm });
        }
        None
    }

    /// Take what devices signalled while the core was not executing (interrupt lines, an event
    /// that wakes WFE, a new deadline), so that nothing is lost when a board lets time pass
    /// without running the core (halted, or skipping an idle stretch); returns a device's reset
    /// request, which the board carries out.
    pub fn absorb_attention<B: Bus>(&mut self, bus: &mut B) -> Option<ResetCause> {
        self.take_attention(bus);
        self.device_reset.take()
    }

    pub(crate) fn take_attention<B: Bus>(&mut self, bus: &mut B) {
        let a = bus.take_attention();
        if let Some(cause) = a.reset {
            self.device_reset.get_or_insert(cause);
        }
        if a.irq_changed {
            self.sample_irqs(bus);
        }
        if a.event {
            self.event = true;
        }
        if a.deadline_changed {
            self.deadline = bus.deadline_cycle();
        }
        self.service = true;
    }

    pub(crate) fn sync_code<B: Bus>(&mut self, bus: &B) {
        let g = bus.code_generation();
        if g != self.icache.generation {
            self.icache.flush(g);
        }
    }

    fn tick_systick(&mut self) {
        if self.systick.sync(self.cycles) {
            self.set_pending(EXC_SYSTICK);
        }
        self.service = true;
    }

    /// Everything between batches of instructions. Returns a [`Stop`] when `run` must return.
    fn service_point<B: Bus>(&mut self, bus: &mut B, until: u64) -> Option<Stop> {
        loop {
            self.service = false;
            if bus.attention() {
                self.take_attention(bus);
                self.service = false;
            }
            if let Some(stop) = self.pending_stop() {
                return Some(stop);
            }
            self.take_vect_reset(bus);
            self.sync_code(bus);
            if let Some(h) = self.halted {
                return Some(Stop::Halted(h));
            }
            if self.cycles >= self.systick.next_event {
                self.tick_systick();
                self.service = false;
            }
            if self.locked_up {
                // B1.5.15: NMI still preempts a lockup at HardFault priority and ends it.
                if self.nvic.is_pending(EXC_NMI) && self.exec_priority() > self.nvic.priority(EXC_NMI) {
                    self.locked_up = false;
                    self.take_exception(bus, EXC_NMI, LOCKUP_PC);
                    continue;
                }
                let target = until.min(self.deadline);
                if target > self.cycles {
                    self.cycles = target;
                    if self.cycles >= self.systick.next_event {
                        self.tick_systick();
                    }
                }
                return Some(Stop::Lockup { pc: self.lockup_pc });
            }
            if !self.t {
                let pc = self.r[15];
                self.raise(bus, Exc::Fault(FaultKind::InvalidState), pc);
                continue;
            }
            if let Some(exc) = self.pending_to_take() {
                self.sleep = None;
                let ret = self.r[15];
                self.take_exception(bus, exc, ret);
                if self.step_armed && self.halted.is_none() {
                    // C1.5: a step that takes an exception halts before the handler's first instruction.
                    self.step_armed = false;
                    self.enter_debug(HaltReason::Step);
                }
                continue;
            }
            if let Some(kind) = self.sleep {
                if self.wake_ready(kind) {
                    self.sleep = None;
                    continue;
                }
                let target = until.min(self.deadline).min(self.systick.next_event);
                if target > self.cycles {
                    self.cycles = target;
                }
                if self.cycles >= self.systick.next_event {
                    continue;
                }
                return Some(Stop::Sleeping);
            }
            return None;
        }
    }

    /// The inner loop: fetch from the decoded-code cache, execute, until the limit or until
    /// something needs the service point.
    /// `V7`: the ARMv7-M instantiation, which checks ITSTATE; the ARMv6-M one has no IT blocks.
    #[inline(never)]
    fn exec_loop<B: Bus, const V7: bool>(&mut self, bus: &mut B, limit: u64) {
        while self.cycles < limit && !self.service {
            let pc = self.r[15];
            let e = match self.fetch(bus, pc) {
                Ok(e) => e,
                Err(f) => {
                    self.raise(bus, Exc::Fault(FaultKind::InstructionBus(f)), pc);
                    continue;
                }
            };
            // Inside an IT block (ARMv7-M only): condition check and ITSTATE advance; with DWT
            // watchpoints armed, through the recording bus; with the MPU on, the fetch check.
            if V7 && (self.it != 0 || self.slow) {
                self.exec_slow(bus, e, pc);
                continue;
            }
            match self.exec(bus, e, pc) {
                Ok(()) => self.retired += 1,
                Err(x) => self.raise(bus, x, pc),
            }
        }
    }

    /// One instruction, outside the inner loop (public step, debug step).
    fn exec_one<B: Bus>(&mut self, bus: &mut B) {
        let pc = self.r[15];
        match self.fetch(bus, pc) {
            Ok(e) if self.it != 0 || self.slow => self.exec_slow(bus, e, pc),
            Ok(e) => match self.exec(bus, e, pc) {
                Ok(()) => self.retired += 1,
                Err(x) => self.raise(bus, x, pc),
            },
            Err(f) => self.raise(bus, Exc::Fault(FaultKind::InstructionBus(f)), pc),
        }
    }

    /// DHCSR.C_STEP: retire one instruction, then halt (C1.5). WFI/WFE complete at once.
    fn debug_step<B: Bus>(&mut self, bus: &mut B) {
        self.step_armed = false;
        self.exec_one(bus);
        self.sleep = None;
        if self.halted.is_none() {
            self.enter_debug(HaltReason::Step);
        }
    }

    /// Handle what ended an instruction at `pc`.
    pub(crate) fn raise<B: Bus>(&mut self, bus: &mut B, x: Exc, pc: u32) {
        self.service = true;
        self.r[15] = pc;
        match x {
            Exc::Fault(kind) => self.take_fault(bus, kind, pc, pc),
            Exc::Svc => {
                // B1.5.6/B1.5.4: SVCall must be taken at once; if its priority does not preempt,
                // it escalates to HardFault.
                let ret = pc.wrapping_add(2);
                if self.nvic.priority(EXC_SVCALL) < self.exec_priority() {
                    self.take_exception(bus, EXC_SVCALL, ret);
                } else {
                    self.take_fault(bus, FaultKind::SvcEscalated, ret, pc);
                }
            }
            Exc::Bkpt | Exc::FpbBreak => {
                // C1.4: a breakpoint halts when halting debug is enabled; otherwise, with no
                // DebugMonitor on ARMv6-M, it escalates to HardFault. ARMv7-M C1.4/C1.6.5: with
                // DEMCR.MON_EN it is a DebugMonitor exception (returning to the breakpoint)
                // when that can preempt, else HardFault.
                if self.dbg.c_debugen {
                    self.enter_debug(HaltReason::Breakpoint);
                } else if self.cfg.arch.is_v7()
                    && self.dbg.demcr & ppb::DEMCR_MON_EN != 0
                    && self.nvic.group(self.nvic.priority(EXC_DEBUGMON)) < self.exec_priority()
                {
                    self.dbg.dfsr |= DFSR_BKPT;
                    self.take_exception(bus, EXC_DEBUGMON, pc);
                } else {
                    let kind = if x == Exc::Bkpt { FaultKind::Breakpoint } else { FaultKind::FpbBreakpoint };
                    self.take_fault(bus, kind, pc, pc);
                }
            }
            Exc::NativeTrap(imm) => self.trap = Some(imm),
        }
    }

    /// A fault at `pc` (stacked return address `ret`): HardFault on ARMv6-M; on ARMv7-M the
    /// configurable fault it belongs to, escalated to HardFault when disabled or masked (B1.5.16);
    /// lockup when the core already runs at priority -1 or higher (B1.5.15).
    pub(crate) fn take_fault<B: Bus>(&mut self, bus: &mut B, kind: FaultKind, ret: u32, pc: u32) {
        self.record_fault(kind, pc);
        let exc = if self.cfg.arch.is_v7() { self.record_fault_status(kind) } else { EXC_HARDFAULT };
        if self.exec_priority() < 0 {
            self.lockup(pc);
            return;
        }
        self.take_exception(bus, exc, ret);
        if exc != EXC_HARDFAULT {
            self.vector_catch_fault(exc, kind);
        }
    }

    pub(crate) fn enter_debug(&mut self, reason: HaltReason) {
        self.halted = Some(reason);
        self.dbg.c_halt = true;
        self.dbg.dfsr |= match reason {
            HaltReason::Request | HaltReason::Step => DFSR_HALTED,
            HaltReason::Breakpoint => DFSR_BKPT,
            HaltReason::VectorCatch => DFSR_VCATCH,
            HaltReason::Watchpoint => DFSR_DWTTRAP,
        };
        // Debug state wakes a sleeping core and ends lockup (B1.5.15).
        self.sleep = None;
        self.locked_up = false;
        self.service = true;
    }

    pub(crate) fn leave_debug(&mut self) {
        if self.halted.take().is_some() {
            self.step_armed = self.dbg.c_step;
        }
        self.service = true;
    }
}

/// Whether the core itself serves `addr`: the internal PPB and the ROM table. The external PPB
/// (0xE0040000..0xE00FF000: TPIU, ETM and vendor blocks such as the STM32F1 DBGMCU at 0xE0042000)
/// is the system's (ARMv7-M ARM B3.1 Table B3-1; ARMv6-M ARM B3.1).
#[inline]
pub(crate) fn is_ppb(addr: u32) -> bool {
    addr >> 20 == 0xE00 && !(0xE004_0000..0xE00F_F000).contains(&addr)
}

#[inline]
pub(crate) fn bit(bits: &[u64], n: u32) -> bool {
    bits.get((n / 64) as usize).is_some_and(|w| w & (1 << (n % 64)) != 0)
}

pub(crate) const XPSR_T: u32 = 1 << 24;
pub(crate) const IPSR_MASK: u32 = 0x3F;
/// ARMv7-M IPSR is 9 bits (B1.4.2).
pub(crate) const IPSR_MASK_V7: u32 = 0x1FF;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_send_for_the_board_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Cpu>();
    }

    #[test]
    fn regsel_numbers_round_trip() {
        for sel in 0..32 {
            if let Some(r) = Reg::from_regsel(sel) {
                assert_eq!(r as u32, sel);
            }
        }
        assert_eq!(Reg::from_regsel(19), None);
        assert_eq!(Reg::from_regsel(20), Some(Reg::SpecialPacked));
    }
}
