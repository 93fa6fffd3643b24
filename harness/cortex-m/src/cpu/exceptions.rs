//! Exception model (ARMv6-M ARM B1.5): priorities, pending/active state (the NVIC's and the
//! system exceptions'), entry with stacking, return through EXC_RETURN, HardFault escalation and
//! lockup. Exception numbers run to 16 + 256 so the ARMv7-M NVIC fits the same tables. On
//! ARMv7-M (DDI0403E B1.5) the configurable faults take [`FaultKind`]s to MemManage, BusFault or
//! UsageFault (escalated to HardFault when disabled or masked), and PRIGROUP, BASEPRI and
//! FAULTMASK enter the execution priority.

use std::fmt;

use super::{
    CCR_STKALIGN, Cpu, EXC_BUSFAULT, EXC_DEBUGMON, EXC_HARDFAULT, EXC_IRQ0, EXC_MEMMANAGE, EXC_NMI, EXC_PENDSV,
    EXC_SVCALL, EXC_SYSTICK, EXC_USAGEFAULT, HaltReason, Sleep, XPSR_T, bit,
};
use crate::bus::{Bus, BusFault, BusFaultKind, Initiator, Size};

/// Why the core took a HardFault (or locked up). On ARMv6-M every fault is a HardFault (B1.5.7);
/// the kind keeps the cause for diagnosis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A load or store got a bus error (including PPB accesses the core refuses).
    DataBus(BusFault),
    /// An instruction fetch got a bus error, or hit an execute-never region.
    InstructionBus(BusFault),
    /// A halfword or word access at an unaligned address (A3.2: ARMv6-M never supports them).
    Unaligned { addr: u32, size: Size, write: bool },
    /// An UNDEFINED encoding (`opcode` holds the halfword, or both halfwords of a 32-bit one).
    Undefined { opcode: u32 },
    /// Executing with EPSR.T = 0 (an interworking branch to an even address, a vector without
    /// its Thumb bit, or a stacked xPSR with T clear).
    InvalidState,
    /// SVC executed where SVCall cannot preempt (PRIMASK set, or at SVCall priority or higher).
    SvcEscalated,
    /// BKPT with halting debug disabled.
    Breakpoint,
    /// An FPB comparator matched with halting debug disabled.
    FpbBreakpoint,
    /// An exception return with an invalid EXC_RETURN, or inconsistent with the active state.
    BadExcReturn { value: u32 },
    /// Pushing the exception frame failed.
    Stacking(BusFault),
    /// Popping the exception frame failed.
    Unstacking(BusFault),
    /// Reading a vector failed.
    VectorRead(BusFault),
    /// A coprocessor or floating-point instruction with no coprocessor to run it (ARMv7-M
    /// UsageFault NOCP, B3.2.15).
    NoCoprocessor { opcode: u32 },
    /// SDIV/UDIV by zero with CCR.DIV_0_TRP set (ARMv7-M UsageFault DIVBYZERO).
    DivideByZero,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::DataBus(b) => write!(f, "data access: {b}"),
            FaultKind::InstructionBus(b) => write!(f, "instruction fetch: {b}"),
            FaultKind::Unaligned { addr, size, write } => write!(
                f,
                "unaligned {} {size:?} access at {addr:#010x} (ARMv6-M faults on every unaligned access; \
                 ARMv7-M on LDM/STM/LDRD/exclusives and with CCR.UNALIGN_TRP)",
                if *write { "write" } else { "read" }
            ),
            FaultKind::Undefined { opcode } => write!(f, "undefined instruction {opcode:#06x}"),
            FaultKind::InvalidState => write!(f, "execution with EPSR.T = 0 (branch to an even address?)"),
            FaultKind::SvcEscalated => write!(f, "SVC where SVCall cannot preempt (PRIMASK set or priority too low)"),
            FaultKind::Breakpoint => write!(f, "BKPT with halting debug disabled"),
            FaultKind::FpbBreakpoint => write!(f, "FPB breakpoint with halting debug disabled"),
            FaultKind::BadExcReturn { value } => write!(f, "invalid exception return {value:#010x}"),
            FaultKind::Stacking(b) => write!(f, "exception stacking: {b}"),
            FaultKind::Unstacking(b) => write!(f, "exception unstacking: {b}"),
            FaultKind::VectorRead(b) => write!(f, "vector read: {b}"),
            FaultKind::NoCoprocessor { opcode } => {
                write!(f, "coprocessor/FP instruction {opcode:#010x} with no coprocessor (NOCP)")
            }
            FaultKind::DivideByZero => write!(f, "integer divide by zero with CCR.DIV_0_TRP set"),
        }
    }
}

/// A fault the core took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// Address of the instruction that faulted.
    pub pc: u32,
    /// Core cycle at which it happened.
    pub cycle: u64,
    /// A second fault while entering HardFault for this one (stacking or vector read): what
    /// locked the core up, when `lockup` is set.
    pub during_entry: Option<FaultKind>,
    /// It locked the core up instead of entering HardFault.
    pub lockup: bool,
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at pc {:#010x} (cycle {})", self.kind, self.pc, self.cycle)?;
        if let Some(second) = &self.during_entry {
            write!(f, ", then {second} while entering HardFault")?;
        }
        if self.lockup {
            write!(f, ", core locked up")?;
        }
        Ok(())
    }
}

/// Words of exception bit sets: exceptions 0..320.
const EXC_WORDS: usize = 5;
/// "No active exception": lower than any configurable priority (B1.5.4).
const BASE_PRIORITY: i16 = 256;

/// Pending/active state and priorities of all exceptions, with the NVIC's enables.
#[derive(Clone, Debug)]
pub(crate) struct Nvic {
    pub pending: [u64; EXC_WORDS],
    pub active: [u64; EXC_WORDS],
    /// External interrupt enables (bit n = IRQn).
    pub enabled: [u64; 4],
    /// External interrupt priorities, implemented bits only.
    pub ipr: Vec<u8>,
    pub pri_svcall: u8,
    pub pri_pendsv: u8,
    pub pri_systick: u8,
    /// ARMv7-M: MemManage, BusFault, UsageFault and DebugMonitor priorities (SHPR1/SHPR3).
    pub pri_mem: u8,
    pub pri_bus: u8,
    pub pri_usage: u8,
    pub pri_debugmon: u8,
    /// ARMv7-M AIRCR.PRIGROUP (B3.2.6); 0 on ARMv6-M, which leaves its 2-bit priorities whole.
    pub prigroup: u8,
    /// SHCSR MEMFAULTENA/BUSFAULTENA/USGFAULTENA (bits 16-18).
    pub fault_ena: u32,
    /// The ARMv7-M exception set (MemManage, BusFault, UsageFault, DebugMonitor) exists.
    pub v7: bool,
    /// DEMCR.MON_EN: DebugMonitor is enabled (C1.6.5).
    pub debugmon_ena: bool,
    /// Active exceptions in activation order (innermost last).
    pub stack: Vec<u32>,
    pub n_irq: u32,
    /// Implemented priority bits, as a mask of the 8-bit field (B3.4.7: the top bits).
    pub prio_mask: u8,
}

impl Nvic {
    pub fn new(n_irq: u32, priority_bits: u8, v7: bool) -> Self {
        Nvic {
            pri_mem: 0,
            pri_bus: 0,
            pri_usage: 0,
            pri_debugmon: 0,
            prigroup: 0,
            fault_ena: 0,
            v7,
            debugmon_ena: false,
            pending: [0; EXC_WORDS],
            active: [0; EXC_WORDS],
            enabled: [0; 4],
            ipr: vec![0; n_irq as usize],
            pri_svcall: 0,
            pri_pendsv: 0,
            pri_systick: 0,
            stack: Vec::new(),
            n_irq,
            prio_mask: !(0xFFu8 >> priority_bits),
        }
    }

    pub fn reset(&mut self) {
        *self = Nvic::new(self.n_irq, self.prio_mask.count_ones() as u8, self.v7);
    }

    pub fn exists(&self, exc: u32) -> bool {
        matches!(exc, EXC_NMI | EXC_HARDFAULT | EXC_SVCALL | EXC_PENDSV | EXC_SYSTICK)
            || (self.v7 && matches!(exc, EXC_MEMMANAGE | EXC_BUSFAULT | EXC_USAGEFAULT | EXC_DEBUGMON))
            || (EXC_IRQ0..EXC_IRQ0 + self.n_irq).contains(&exc)
    }

    /// B1.5.4 (ARMv7-M): the group priority of a priority value under PRIGROUP.
    #[inline]
    pub fn group(&self, p: i16) -> i16 {
        if !(0..BASE_PRIORITY).contains(&p) { p } else { p & !((2i16 << self.prigroup) - 1) }
    }

    /// B1.5.4: fixed priorities -2/-1 for NMI/HardFault; the rest configurable.
    pub fn priority(&self, exc: u32) -> i16 {
        match exc {
            1 => -3,
            EXC_NMI => -2,
            EXC_HARDFAULT => -1,
            EXC_MEMMANAGE => self.pri_mem as i16,
            EXC_BUSFAULT => self.pri_bus as i16,
            EXC_USAGEFAULT => self.pri_usage as i16,
            EXC_DEBUGMON => self.pri_debugmon as i16,
            EXC_SVCALL => self.pri_svcall as i16,
            EXC_PENDSV => self.pri_pendsv as i16,
            EXC_SYSTICK => self.pri_systick as i16,
            e if e >= EXC_IRQ0 => self.ipr.get((e - EXC_IRQ0) as usize).map_or(BASE_PRIORITY, |p| *p as i16),
            _ => BASE_PRIORITY,
        }
    }

    /// System exceptions are always enabled on ARMv6-M; external ones per ISER; ARMv7-M's
    /// configurable faults per SHCSR (B3.2.13).
    pub fn enabled(&self, exc: u32) -> bool {
        match exc {
            EXC_MEMMANAGE..=EXC_USAGEFAULT => self.fault_ena & (1 << (16 + exc - EXC_MEMMANAGE)) != 0,
            EXC_DEBUGMON => self.debugmon_ena,
            _ => exc < EXC_IRQ0 || bit(&self.enabled, exc - EXC_IRQ0),
        }
    }

    pub fn is_pending(&self, exc: u32) -> bool {
        bit(&self.pending, exc)
    }

    pub fn is_active(&self, exc: u32) -> bool {
        bit(&self.active, exc)
    }

    pub fn clear_pending(&mut self, exc: u32) {
        if let Some(w) = self.pending.get_mut((exc / 64) as usize) {
            *w &= !(1 << (exc % 64));
        }
    }

    /// ISER as exception-numbered bits (for the snapshot helper).
    pub fn enabled_ext_as_exc(&self) -> Vec<u64> {
        self.enabled.to_vec()
    }

    pub fn ipr_word(&self, i: u32) -> u32 {
        (0..4).fold(0, |w, b| w | (*self.ipr.get((i * 4 + b) as usize).unwrap_or(&0) as u32) << (8 * b))
    }

    fn activate(&mut self, exc: u32) {
        self.clear_pending(exc);
        if let Some(w) = self.active.get_mut((exc / 64) as usize) {
            *w |= 1 << (exc % 64);
        }
        self.stack.push(exc);
    }

    fn deactivate(&mut self, exc: u32) {
        if let Some(w) = self.active.get_mut((exc / 64) as usize) {
            *w &= !(1 << (exc % 64));
        }
        if let Some(i) = self.stack.iter().rposition(|e| *e == exc) {
            self.stack.remove(i);
        }
    }

    /// Set or clear the active state of `exc` from a register write (SHCSR, B3.2.13): a newly
    /// active exception joins the activation order as the innermost.
    pub fn set_active(&mut self, exc: u32, on: bool) {
        match (on, self.is_active(exc)) {
            (true, false) => {
                if let Some(w) = self.active.get_mut((exc / 64) as usize) {
                    *w |= 1 << (exc % 64);
                }
                self.stack.push(exc);
            }
            (false, true) => self.deactivate(exc),
            _ => {}
        }
    }

    /// Clear all active state (AIRCR.VECTCLRACTIVE, B3.2.6).
    pub fn clear_active(&mut self) {
        self.active = [0; EXC_WORDS];
        self.stack.clear();
    }

    /// Highest-priority pending, enabled exception (lowest number wins ties, B1.5.4), with
    /// `skip` filtering out masked ones.
    fn best_pending(&self, skip: impl Fn(u32) -> bool) -> Option<(i16, u32)> {
        let mut best: Option<(i16, u32)> = None;
        for (w, word) in self.pending.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let exc = w as u32 * 64 + bits.trailing_zeros();
                bits &= bits - 1;
                if !self.enabled(exc) || skip(exc) {
                    continue;
                }
                let p = self.priority(exc);
                if best.is_none_or(|(bp, _)| p < bp) {
                    best = Some((p, exc));
                }
            }
        }
        best
    }
}

impl Cpu {
    /// B1.5.4 execution priority: the highest group priority of the active exceptions, boosted
    /// to 0 by PRIMASK, to BASEPRI's group priority and to -1 by FAULTMASK (ARMv7-M).
    pub(crate) fn exec_priority(&self) -> i16 {
        let mut p = self.exec_priority_unmasked();
        if self.primask {
            p = p.min(0);
        }
        p
    }

    /// The execution priority once `returning` is deactivated (B1.5.8 DeActivate: FAULTMASK
    /// clears unless returning from NMI), PRIMASK aside.
    fn priority_after_return(&self, returning: u32) -> i16 {
        let mut p = self
            .nvic
            .stack
            .iter()
            .filter(|e| **e != returning)
            .map(|e| self.nvic.group(self.nvic.priority(*e)))
            .min()
            .unwrap_or(BASE_PRIORITY);
        if self.basepri != 0 {
            p = p.min(self.nvic.group(self.basepri as i16));
        }
        if self.faultmask && returning == EXC_NMI {
            p = p.min(-1);
        }
        p
    }

    /// Execution priority without PRIMASK (what WFI wakes against, B1.5.19).
    fn exec_priority_unmasked(&self) -> i16 {
        let mut p =
            self.nvic.stack.iter().map(|e| self.nvic.group(self.nvic.priority(*e))).min().unwrap_or(BASE_PRIORITY);
        if self.basepri != 0 {
            p = p.min(self.nvic.group(self.basepri as i16));
        }
        if self.faultmask {
            p = p.min(-1);
        }
        p
    }

    /// DHCSR.C_MASKINTS masks PendSV, SysTick and external interrupts (C1.6.2).
    fn masked_by_debug(&self, exc: u32) -> bool {
        self.dbg.c_debugen && self.dbg.c_maskints && exc >= EXC_PENDSV
    }

    /// The exception to take now, if one preempts.
    pub(crate) fn pending_to_take(&self) -> Option<u32> {
        let (p, exc) = self.nvic.best_pending(|e| self.masked_by_debug(e))?;
        (self.nvic.group(p) < self.exec_priority()).then_some(exc)
    }

    /// Highest-priority pending enabled exception, masking ignored (ICSR.VECTPENDING).
    pub(crate) fn highest_pending(&self) -> Option<u32> {
        self.nvic.best_pending(|_| false).map(|(_, e)| e)
    }

    /// Whether a sleeping core wakes (B1.5.19: WFI wakes for an exception that would preempt if
    /// PRIMASK were clear; B1.5.18: WFE wakes on the event register, which it consumes).
    pub(crate) fn wake_ready(&mut self, kind: Sleep) -> bool {
        match kind {
            Sleep::Wfi => self
                .nvic
                .best_pending(|e| self.masked_by_debug(e))
                .is_some_and(|(p, _)| self.nvic.group(p) < self.exec_priority_unmasked()),
            Sleep::Wfe => std::mem::take(&mut self.event),
        }
    }

    /// Make `exc` pending. B1.5.18: with SCR.SEVONPEND, an exception becoming pending is a WFE
    /// wake-up event.
    pub(crate) fn set_pending(&mut self, exc: u32) {
        if !self.nvic.exists(exc) {
            return;
        }
        if !self.nvic.is_pending(exc) {
            if let Some(w) = self.nvic.pending.get_mut((exc / 64) as usize) {
                *w |= 1 << (exc % 64);
            }
            if self.scr & super::ppb::SCR_SEVONPEND != 0 {
                self.event = true;
            }
        }
        self.service = true;
    }

    /// Read the interrupt lines: a high level pends an inactive interrupt; a pulse pends it
    /// whatever its state (B3.4.1, the NVIC latches requests).
    pub(crate) fn sample_irqs<B: Bus>(&mut self, bus: &mut B) {
        self.irq_levels = bus.irq_levels();
        let pulses = bus.take_irq_pulses();
        for (w, pulse) in pulses.iter().enumerate() {
            let mut bits = self.irq_levels[w] | pulse;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                let irq = w as u32 * 64 + b;
                if irq >= self.nvic.n_irq {
                    break;
                }
                let exc = EXC_IRQ0 + irq;
                if pulse & (1 << b) != 0 || !self.nvic.is_active(exc) {
                    self.set_pending(exc);
                }
            }
        }
    }

    /// Re-pend an external interrupt whose line is still high (after its handler returns, or an
    /// ICPR write).
    pub(crate) fn repend_if_level_high(&mut self, exc: u32) {
        if exc >= EXC_IRQ0 && bit(&self.irq_levels, exc - EXC_IRQ0) && !self.nvic.is_active(exc) {
            self.set_pending(exc);
        }
    }

    /// Take exception `exc` with return address `ret`; a failing entry escalates to HardFault,
    /// or to lockup when it was already HardFault/NMI (B1.5.15).
    pub(crate) fn take_exception<B: Bus>(&mut self, bus: &mut B, exc: u32, ret: u32) {
        match self.enter_exception(bus, exc, ret) {
            Ok(()) => {
                if exc == EXC_HARDFAULT && self.dbg.c_debugen && self.dbg.demcr & super::ppb::DEMCR_VC_HARDERR != 0 {
                    self.enter_debug(HaltReason::VectorCatch);
                }
            }
            Err(kind) => {
                self.record_entry_fault(kind, ret);
                if self.cfg.arch.is_v7() {
                    self.record_fault_status(kind);
                }
                if self.nvic.priority(exc) < 0 || self.exec_priority() < 0 {
                    self.lockup(ret);
                } else if let Err(kind) = self.enter_exception(bus, EXC_HARDFAULT, ret) {
                    self.record_entry_fault(kind, ret);
                    self.lockup(ret);
                }
            }
        }
    }

    /// A fault while entering an exception: attached to the fault that caused the entry when there
    /// is one at this cycle, recorded on its own otherwise.
    fn record_entry_fault(&mut self, kind: FaultKind, pc: u32) {
        match &mut self.last_fault {
            Some(f) if f.cycle == self.cycles && f.during_entry.is_none() => f.during_entry = Some(kind),
            _ => self.record_fault(kind, pc),
        }
    }

    /// B1.5.6 ExceptionEntry: PushStack, then ExceptionTaken. Nothing changes in the core if
    /// stacking or the vector read fails.
    fn enter_exception<B: Bus>(&mut self, bus: &mut B, exc: u32, ret: u32) -> Result<(), FaultKind> {
        let sp = self.r[13];
        // B1.5.6: the frame is 8-byte aligned (ARMv7-M: when CCR.STKALIGN); xPSR bit 9 records
        // the adjustment.
        let align = if self.ccr() & CCR_STKALIGN != 0 { (sp >> 2) & 1 } else { 0 };
        let frame = sp.wrapping_sub(0x20) & !4;
        let xpsr = self.xpsr() | align << 9;
        let words = [self.r[0], self.r[1], self.r[2], self.r[3], self.r[12], self.r[14], ret & !1, xpsr];
        // B1.5.6 PushStack runs in the mode being left: its privilege (and execution priority,
        // for MPU_CTRL.HFNMIENA) decide what the MPU allows.
        let privileged = self.privileged();
        let mut derived = None;
        for (i, w) in words.iter().enumerate() {
            let a = frame.wrapping_add(4 * i as u32);
            match self.raw_write(bus, a, *w, privileged) {
                Ok(()) => {}
                // B1.5.6/B3.2.15 MSTKERR: an MPU violation while stacking is a derived MemManage
                // fault; the entry completes (SP moves past the frame, the handler's vector is
                // read) and the fault is then taken like a late-arriving exception.
                Err(f) if f.kind == BusFaultKind::MpuViolation => {
                    derived.get_or_insert(f);
                }
                Err(f) => return Err(FaultKind::Stacking(f)),
            }
        }
        let vaddr = self.vtor.wrapping_add(4 * exc);
        let vector = self.raw_read(bus, vaddr, None).map_err(FaultKind::VectorRead)?;
        self.r[13] = frame;
        // B1.5.6: EXC_RETURN records the mode and stack to return to.
        self.r[14] = if self.ipsr != 0 {
            0xFFFF_FFF1
        } else if self.using_psp() {
            0xFFFF_FFFD
        } else {
            0xFFFF_FFF9
        };
        self.nvic.activate(exc);
        self.set_stack_state(exc, false);
        self.r[15] = vector & !1;
        self.t = vector & 1 != 0;
        // ARMv7-M B1.5.6 ExceptionTaken: ITSTATE cleared, local monitor cleared.
        self.it = 0;
        self.excl = None;
        self.sleep = None;
        self.service = true;
        // Cortex-M0+ TRM: 15-cycle interrupt latency with zero-wait-state memory; Cortex-M3/M4
        // TRMs: 12.
        self.cycles += if self.cfg.arch.is_v7() { 12 } else { 15 };
        if let Some(f) = derived {
            self.derived_fault(FaultKind::Stacking(f), ret);
        }
        Ok(())
    }

    /// A fault derived from exception entry (MSTKERR): status recorded, then MemManage (or
    /// HardFault, FORCED, when MemManage is disabled or cannot preempt the exception just
    /// entered, B1.5.16) is pended and taken before the handler's first instruction. When not
    /// even HardFault can preempt (the entry was to NMI or HardFault), the core locks up
    /// (B1.5.15).
    fn derived_fault(&mut self, kind: FaultKind, ret: u32) {
        self.record_entry_fault(kind, ret);
        let exc = self.record_fault_status(kind);
        if exc == EXC_HARDFAULT && self.exec_priority() < 0 {
            self.lockup(self.r[15]);
            return;
        }
        self.set_pending(exc);
    }

    /// B1.5.8 ExceptionReturn, started by BX or POP {PC} in Handler mode with `value` in
    /// 0xFxxxxxxx. All UNPREDICTABLE cases fault (on ARMv6-M: HardFault), before any state change.
    pub(crate) fn exception_return<B: Bus>(&mut self, bus: &mut B, value: u32) -> Result<(), FaultKind> {
        let bad = FaultKind::BadExcReturn { value };
        if value & 0x0FFF_FFF0 != 0x0FFF_FFF0 {
            return Err(bad);
        }
        let returning = self.ipsr;
        if !self.nvic.is_active(returning) {
            return Err(bad);
        }
        let nested = self.nvic.active.iter().map(|w| w.count_ones()).sum::<u32>();
        // ARMv7-M B3.2.8 CCR.NONBASETHRDENA allows returning to Thread mode with others active.
        let nonbase = self.ccr() & 1 != 0;
        let (to_handler, use_psp) = match value & 0xF {
            0x1 if nested > 1 => (true, false),
            0x9 if nested == 1 || nonbase => (false, false),
            0xD if nested == 1 || nonbase => (false, true),
            _ => return Err(bad),
        };
        let frame = if use_psp { self.psp() } else { self.msp() };
        // B1.5.8: PopStack runs after the mode change: the MPU checks it with the privilege of
        // the context returned to (HFNMIENA: at the priority returned to).
        let check = self.mpu_on.then(|| (to_handler || !self.npriv, self.priority_after_return(returning) < 0));
        let mut w = [0u32; 8];
        for (i, slot) in w.iter_mut().enumerate() {
            *slot = self.raw_read(bus, frame.wrapping_add(4 * i as u32), check).map_err(FaultKind::Unstacking)?;
        }
        let xpsr = w[7];
        let new_ipsr = xpsr & self.ipsr_mask();
        if to_handler != (new_ipsr != 0) {
            return Err(bad);
        }
        self.nvic.deactivate(returning);
        // ARMv7-M B1.5.8 DeActivate: returning from anything but NMI clears FAULTMASK.
        if returning != EXC_NMI {
            self.faultmask = false;
        }
        self.repend_if_level_high(returning);
        self.set_stack_state(new_ipsr, use_psp);
        self.r[0] = w[0];
        self.r[1] = w[1];
        self.r[2] = w[2];
        self.r[3] = w[3];
        self.r[12] = w[4];
        self.r[14] = w[5];
        // A stacked PC with bit 0 set is UNPREDICTABLE; the halfword-aligned address is used.
        self.r[15] = w[6] & !1;
        self.set_apsr(xpsr);
        self.t = xpsr & XPSR_T != 0;
        // ARMv7-M B1.5.8: EPSR.IT comes back from the frame; the local monitor is cleared.
        self.set_epsr_it(xpsr);
        self.excl = None;
        let realign = if self.ccr() & CCR_STKALIGN != 0 { ((xpsr >> 9) & 1) << 2 } else { 0 };
        self.r[13] = frame.wrapping_add(0x20) | realign;
        // The event register is set on exception return (ARMv7-M B1.5.8 pseudocode; the M0+
        // behaves alike), so a WFE after the handler does not sleep through its result.
        self.event = true;
        if !to_handler && self.scr & super::ppb::SCR_SLEEPONEXIT != 0 {
            // B1.5.19 sleep-on-exit: the core sleeps instead of resuming Thread mode. Modelled as
            // return-then-WFI: registers and memory end up the same as the hardware's.
            self.sleep = Some(Sleep::Wfi);
        }
        self.service = true;
        self.cycles += 10;
        Ok(())
    }

    /// DEMCR vector catch for an ARMv7-M configurable fault just taken (C1.6.5: VC_MMERR,
    /// VC_BUSERR, VC_NOCPERR, VC_CHKERR, VC_STATERR, VC_INTERR): halt before its handler.
    pub(crate) fn vector_catch_fault(&mut self, exc: u32, kind: FaultKind) {
        if !self.dbg.c_debugen || self.halted.is_some() {
            return;
        }
        let bit = match (exc, kind) {
            (EXC_MEMMANAGE, _) => 4,
            (_, FaultKind::Stacking(_) | FaultKind::Unstacking(_) | FaultKind::BadExcReturn { .. }) => 9,
            (EXC_BUSFAULT, _) => 8,
            (EXC_USAGEFAULT, FaultKind::NoCoprocessor { .. }) => 5,
            (EXC_USAGEFAULT, FaultKind::Unaligned { .. } | FaultKind::DivideByZero) => 6,
            (EXC_USAGEFAULT, _) => 7,
            _ => return,
        };
        if self.dbg.demcr & (1 << bit) != 0 && self.ipsr == exc {
            self.enter_debug(HaltReason::VectorCatch);
        }
    }

    /// ARMv7-M fault status (B3.2.15 CFSR, B3.2.16 HFSR, MMFAR, BFAR) for a fault of `kind`; the
    /// exception it is routed to (MemManage, BusFault, UsageFault or HardFault).
    pub(crate) fn record_fault_status(&mut self, kind: FaultKind) -> u32 {
        const IACCVIOL: u32 = 1 << 0;
        const DACCVIOL: u32 = 1 << 1;
        const MUNSTKERR: u32 = 1 << 3;
        const MSTKERR: u32 = 1 << 4;
        const MMARVALID: u32 = 1 << 7;
        const IBUSERR: u32 = 1 << 8;
        const PRECISERR: u32 = 1 << 9;
        const UNSTKERR: u32 = 1 << 11;
        const STKERR: u32 = 1 << 12;
        const BFARVALID: u32 = 1 << 15;
        const UNDEFINSTR: u32 = 1 << 16;
        const INVSTATE: u32 = 1 << 17;
        const INVPC: u32 = 1 << 18;
        const NOCP: u32 = 1 << 19;
        const UNALIGNED: u32 = 1 << 24;
        const DIVBYZERO: u32 = 1 << 25;
        const HFSR_VECTTBL: u32 = 1 << 1;
        const HFSR_FORCED: u32 = 1 << 30;
        const HFSR_DEBUGEVT: u32 = 1 << 31;
        let mpu = BusFaultKind::MpuViolation;
        let (exc, bits) = match kind {
            // B3.5 CheckPermission(): MMFSR.DACCVIOL with MMFAR = the address, MMARVALID.
            FaultKind::DataBus(b) if b.kind == mpu => {
                self.v7.mmfar = b.addr;
                (EXC_MEMMANAGE, DACCVIOL | MMARVALID)
            }
            // B3.2.15: stacking/unstacking violations leave MMFAR alone.
            FaultKind::Stacking(b) if b.kind == mpu => (EXC_MEMMANAGE, MSTKERR),
            FaultKind::Unstacking(b) if b.kind == mpu => (EXC_MEMMANAGE, MUNSTKERR),
            FaultKind::InstructionBus(b) if b.kind == mpu => (EXC_MEMMANAGE, IACCVIOL),
            FaultKind::DataBus(b) => {
                self.v7.bfar = b.addr;
                (EXC_BUSFAULT, PRECISERR | BFARVALID)
            }
            // B3.5.1: the default memory map's execute-never regions give a MemManage fault.
            FaultKind::InstructionBus(b) if b.kind == BusFaultKind::NotExecutable => (EXC_MEMMANAGE, IACCVIOL),
            FaultKind::InstructionBus(_) => (EXC_BUSFAULT, IBUSERR),
            FaultKind::Stacking(_) => (EXC_BUSFAULT, STKERR),
            FaultKind::Unstacking(_) => (EXC_BUSFAULT, UNSTKERR),
            FaultKind::Unaligned { .. } => (EXC_USAGEFAULT, UNALIGNED),
            FaultKind::Undefined { .. } => (EXC_USAGEFAULT, UNDEFINSTR),
            FaultKind::InvalidState => (EXC_USAGEFAULT, INVSTATE),
            FaultKind::BadExcReturn { .. } => (EXC_USAGEFAULT, INVPC),
            FaultKind::NoCoprocessor { .. } => (EXC_USAGEFAULT, NOCP),
            FaultKind::DivideByZero => (EXC_USAGEFAULT, DIVBYZERO),
            FaultKind::VectorRead(_) => {
                self.v7.hfsr |= HFSR_VECTTBL;
                return EXC_HARDFAULT;
            }
            FaultKind::SvcEscalated => {
                self.v7.hfsr |= HFSR_FORCED;
                return EXC_HARDFAULT;
            }
            FaultKind::Breakpoint | FaultKind::FpbBreakpoint => {
                self.v7.hfsr |= HFSR_DEBUGEVT;
                return EXC_HARDFAULT;
            }
        };
        self.v7.cfsr |= bits;
        // B1.5.16 escalation: a disabled fault, or one that cannot preempt, becomes HardFault.
        if !self.nvic.enabled(exc) || self.nvic.group(self.nvic.priority(exc)) >= self.exec_priority() {
            self.v7.hfsr |= HFSR_FORCED;
            return EXC_HARDFAULT;
        }
        exc
    }

    /// Word access for stacking and vector reads (PPB included, so a VTOR there still works).
    /// `mpu`: checked by the MPU with this privilege and at a negative execution priority or not
    /// (unstacking); `None` for vector reads, which always use the default map (B3.5.1).
    fn raw_read<B: Bus>(&mut self, bus: &mut B, addr: u32, mpu: Option<(bool, bool)>) -> Result<u32, BusFault> {
        if let Some((privileged, negative)) = mpu
            && !self.mpu_allows_at(addr, super::mpu::Access::Read, privileged, negative)
        {
            return Err(BusFault::new(addr, Size::Word, BusFaultKind::MpuViolation));
        }
        if addr & 3 != 0 {
            return Err(BusFault::new(addr, Size::Word, crate::bus::BusFaultKind::Device("unaligned frame")));
        }
        if super::is_ppb(addr) {
            return self
                .ppb_read(addr, Size::Word, super::ppb::Origin::Cpu)
                .map_err(|k| BusFault::new(addr, Size::Word, k));
        }
        let r = bus.read(addr, Size::Word, Initiator::Cpu, self.cycles);
        if bus.attention() {
            self.service = true;
        }
        r
    }

    /// Stacking write, checked by the MPU with the privilege of the context being stacked.
    fn raw_write<B: Bus>(&mut self, bus: &mut B, addr: u32, value: u32, privileged: bool) -> Result<(), BusFault> {
        if !self.mpu_allows(addr, super::mpu::Access::Write, privileged) {
            return Err(BusFault::new(addr, Size::Word, BusFaultKind::MpuViolation));
        }
        if super::is_ppb(addr) {
            return self
                .ppb_write(addr, Size::Word, value, super::ppb::Origin::Cpu)
                .map_err(|k| BusFault::new(addr, Size::Word, k));
        }
        let r = bus.write(addr, Size::Word, value, Initiator::Cpu, self.cycles);
        if bus.attention() {
            self.service = true;
        }
        self.sync_code(bus);
        r
    }
}
