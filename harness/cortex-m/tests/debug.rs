//! The debug interface as the simulated probe will drive it: DHCSR (DBGKEY, halt, step,
//! C_MASKINTS, status bits), DCRSR/DCRDR register transfers, DEMCR vector catch, DFSR, BKPT and
//! FPB breakpoints, AIRCR from the debugger, and the CoreSight identification the probe may read.

mod common;

use common::{Asm, Board, SRAM, SRAM_LEN, op};
use hil_cortex_m::{FaultKind, HaltReason, Reg, ResetCause, RunState, Stop};

const DHCSR: u32 = 0xE000_EDF0;
const DCRSR: u32 = 0xE000_EDF4;
const DCRDR: u32 = 0xE000_EDF8;
const DEMCR: u32 = 0xE000_EDFC;
const DFSR: u32 = 0xE000_ED30;
const AIRCR: u32 = 0xE000_ED0C;
const ISER: u32 = 0xE000_E100;
const ISPR: u32 = 0xE000_E200;
const BP_CTRL: u32 = 0xE000_2000;
const BP_COMP0: u32 = 0xE000_2008;

const KEY: u32 = 0xA05F_0000;
const C_DEBUGEN: u32 = 1;
const C_HALT: u32 = 2;
const C_STEP: u32 = 4;
const C_MASKINTS: u32 = 8;
const S_REGRDY: u32 = 1 << 16;
const S_HALT: u32 = 1 << 17;
const S_RETIRE_ST: u32 = 1 << 24;
const S_RESET_ST: u32 = 1 << 25;

fn counting_program() -> (Board, usize) {
    let mut a = Asm::new();
    a.movs(0, 1).movs(0, 2).movs(0, 3);
    let end = a.here();
    a.b_self();
    let mut b = Board::new();
    b.load(&a.finish(), &[]);
    b.reset();
    (b, end)
}

#[test]
fn dhcsr_needs_dbgkey_then_halts_steps_and_resumes() {
    let (mut b, _) = counting_program();
    b.write32(DHCSR, C_DEBUGEN | C_HALT);
    assert_eq!(b.read32(DHCSR) & (C_DEBUGEN | S_HALT), 0, "ignored without DBGKEY");
    b.write32(DHCSR, KEY | C_DEBUGEN | C_HALT);
    let d = b.read32(DHCSR);
    assert_eq!(d & (C_DEBUGEN | C_HALT | S_HALT), C_DEBUGEN | C_HALT | S_HALT);
    assert_eq!(b.read32(DFSR) & 1, 1, "DFSR.HALTED");
    b.write32(DFSR, 1);
    assert_eq!(b.read32(DFSR), 0, "DFSR is write-one-to-clear");
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(HaltReason::Request));
    assert_eq!((b.cpu.cycles(), b.cpu.reg(Reg::Pc)), (0, Board::addr(0)), "no progress while halted");

    b.write32(DHCSR, KEY | C_DEBUGEN | C_STEP);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(HaltReason::Step));
    assert_eq!((b.cpu.reg(Reg::R0), b.cpu.reg(Reg::Pc)), (1, Board::addr(1)), "one instruction retired");
    let d = b.read32(DHCSR);
    assert_eq!(d & (S_HALT | S_RETIRE_ST), S_HALT | S_RETIRE_ST);
    assert_eq!(b.read32(DHCSR) & S_RETIRE_ST, 0, "S_RETIRE_ST clears on read");
    b.write32(DHCSR, KEY | C_DEBUGEN | C_STEP);
    b.cpu.run(&mut b.sys, 1000);
    assert_eq!(b.cpu.reg(Reg::R0), 2);

    b.write32(DHCSR, KEY | C_DEBUGEN);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Budget);
    assert_eq!(b.cpu.reg(Reg::R0), 3);
    b.cpu.halt();
    assert_eq!(b.cpu.run_state(), RunState::Halted(HaltReason::Request));
    b.cpu.resume();
    assert_eq!(b.cpu.run_state(), RunState::Running);
}

#[test]
fn halt_needs_c_debugen() {
    let (mut b, _) = counting_program();
    b.cpu.halt();
    assert_eq!(b.cpu.run_state(), RunState::Running);
}

#[test]
fn step_with_a_pending_interrupt_obeys_c_maskints() {
    let mut a = Asm::new();
    a.hw(op::NOP).hw(op::NOP).b_self();
    let irq = a.here();
    a.movs(5, 5).bx(14);
    let mut b = Board::new();
    b.load(&a.finish(), &[(16, irq)]);
    b.reset();
    b.write32(DHCSR, KEY | C_DEBUGEN | C_HALT);
    b.write32(ISER, 1);
    b.write32(ISPR, 1);
    b.write32(DHCSR, KEY | C_DEBUGEN | C_STEP | C_MASKINTS);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(HaltReason::Step));
    assert_eq!((b.cpu.reg(Reg::Pc), b.cpu.reg(Reg::Xpsr) & 0x3F), (Board::addr(1), 0), "interrupt masked");
    b.write32(DHCSR, KEY | C_DEBUGEN | C_STEP);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(HaltReason::Step));
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(irq), "halted before the handler's first instruction");
    assert_eq!((b.cpu.reg(Reg::Xpsr) & 0x3F, b.cpu.reg(Reg::R5)), (16, 0));
}

#[test]
fn dcrsr_transfers_core_registers() {
    let (mut b, _) = counting_program();
    b.write32(DHCSR, KEY | C_DEBUGEN | C_HALT);
    b.write32(DCRDR, 0x1234_5678);
    b.write32(DCRSR, 1 << 16 | 2);
    assert_eq!(b.cpu.reg(Reg::R2), 0x1234_5678);
    assert_ne!(b.read32(DHCSR) & S_REGRDY, 0);
    let read = |b: &mut Board, sel: u32| {
        b.write32(DCRSR, sel);
        b.read32(DCRDR)
    };
    assert_eq!(read(&mut b, 15), Board::addr(0), "DebugReturnAddress");
    assert_eq!(read(&mut b, 16), 1 << 24, "xPSR: Thumb bit, Thread mode");
    assert_eq!(read(&mut b, 17), SRAM + SRAM_LEN, "MSP from the vector table");
    assert_eq!(read(&mut b, 13), SRAM + SRAM_LEN, "SP is MSP in Thread mode with SPSEL = 0");
    assert_eq!(read(&mut b, 14), 0xFFFF_FFFF, "LR after reset");
    // CONTROL[25:24] | PRIMASK[0]: PRIMASK set, PSP selected.
    b.write32(DCRDR, 0x0200_0001);
    b.write32(DCRSR, 1 << 16 | 20);
    assert_eq!(read(&mut b, 20), 0x0200_0001);
    assert!(b.cpu.snapshot().primask);
    b.write32(DCRDR, Board::addr(2) | 1);
    b.write32(DCRSR, 1 << 16 | 15);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(2), "bit 0 of the return address is cleared");
}

#[test]
fn bkpt_halts_when_debugging_and_a_step_stays_on_it() {
    let mut a = Asm::new();
    a.movs(0, 1);
    let bk = a.here();
    a.hw(op::BKPT).movs(0, 2).b_self();
    let mut b = Board::new();
    b.load(&a.finish(), &[]);
    b.reset();
    b.write32(DHCSR, KEY | C_DEBUGEN);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(HaltReason::Breakpoint));
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(bk));
    assert_eq!(b.read32(DFSR) & 2, 2, "DFSR.BKPT");
    // Stepping a BKPT halts on it again: the PC does not move (probe-rs then skips it).
    b.write32(DHCSR, KEY | C_DEBUGEN | C_STEP);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(HaltReason::Breakpoint));
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(bk));
    b.cpu.set_reg(Reg::Pc, Board::addr(bk + 1));
    b.write32(DHCSR, KEY | C_DEBUGEN);
    b.cpu.run(&mut b.sys, 2000);
    assert_eq!(b.cpu.reg(Reg::R0), 2);
}

#[test]
fn fpb_comparators_break_on_lower_and_upper_halfwords() {
    let mut a = Asm::new();
    a.movs(0, 1).movs(0, 2).movs(0, 3).movs(0, 4).b_self();
    let hf = a.here();
    a.b_self();
    let mut b = Board::new();
    b.load(&a.finish(), &[(3, hf)]);
    b.reset();
    // Run once so the code line is in the decoded cache before the comparators change.
    b.cpu.run(&mut b.sys, 100);
    assert_eq!(b.cpu.reg(Reg::R0), 4);
    assert_eq!((b.read32(BP_CTRL) >> 4) & 0xF, 4, "NUM_CODE");
    b.write32(BP_CTRL, 1);
    assert_eq!(b.read32(BP_CTRL) & 1, 0, "ignored without KEY");
    b.write32(BP_CTRL, 3);
    assert_eq!(b.read32(BP_CTRL) & 1, 1);
    let (lower, upper) = (Board::addr(2), Board::addr(3));
    assert_eq!((lower & 2, upper & 2), (0, 2));
    b.write32(BP_COMP0, lower & 0x1FFF_FFFC | 1 << 30 | 1);
    b.write32(BP_COMP0 + 4, upper & 0x1FFF_FFFC | 1 << 31 | 1);
    b.write32(DHCSR, KEY | C_DEBUGEN);
    b.cpu.set_reg(Reg::Pc, Board::addr(0));
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(HaltReason::Breakpoint));
    assert_eq!((b.cpu.reg(Reg::Pc), b.cpu.reg(Reg::R0)), (lower, 2));
    assert_eq!(b.read32(DFSR) & 2, 2);
    // Resuming at a breakpoint address breaks again; the debugger disables it to go on.
    b.write32(DHCSR, KEY | C_DEBUGEN);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(HaltReason::Breakpoint));
    assert_eq!(b.cpu.reg(Reg::Pc), lower);
    b.write32(BP_COMP0, 0);
    b.write32(DHCSR, KEY | C_DEBUGEN);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(HaltReason::Breakpoint));
    assert_eq!((b.cpu.reg(Reg::Pc), b.cpu.reg(Reg::R0)), (upper, 3));
    // Without halting debug a comparator match is a HardFault (no DebugMonitor on ARMv6-M).
    b.write32(DHCSR, KEY);
    b.cpu.run(&mut b.sys, 2000);
    assert_eq!(b.cpu.last_fault().unwrap().kind, FaultKind::FpbBreakpoint);
    assert_eq!(b.cpu.reg(Reg::Xpsr) & 0x3F, 3);
}

#[test]
fn vector_catch_on_reset_and_on_hardfault() {
    let mut a = Asm::new();
    a.hw(op::udf(1));
    let hf = a.here();
    a.movs(0, 7).b_self();
    let mut b = Board::new();
    b.load(&a.finish(), &[(3, hf)]);
    b.reset();
    b.write32(DHCSR, KEY | C_DEBUGEN);
    b.write32(DEMCR, 1);
    b.cpu.system_reset(&mut b.sys);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(HaltReason::VectorCatch));
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(0), "halted before the reset handler's first instruction");
    assert_eq!(b.read32(DFSR) & 8, 8, "DFSR.VCATCH");
    assert_ne!(b.read32(DHCSR) & S_RESET_ST, 0);
    assert_eq!(b.read32(DHCSR) & S_RESET_ST, 0, "S_RESET_ST clears on read");

    b.write32(DEMCR, 1 << 10);
    b.write32(DHCSR, KEY | C_DEBUGEN);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(HaltReason::VectorCatch));
    assert_eq!((b.cpu.reg(Reg::Pc), b.cpu.reg(Reg::Xpsr) & 0x3F), (Board::addr(hf), 3));
    assert_ne!(b.cpu.reg(Reg::R0), 7, "before the handler's first instruction");

    // Power-on reset clears the debug registers: no catch, no halt.
    b.cpu.power_on_reset(&mut b.sys);
    assert_eq!((b.read32(DEMCR), b.read32(DHCSR) & C_DEBUGEN), (0, 0));
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Budget);
    assert_eq!(b.cpu.reg(Reg::R0), 7);
}

#[test]
fn aircr_written_by_the_debugger_is_a_reset_request_for_the_board() {
    let (mut b, _) = counting_program();
    b.write32(DHCSR, KEY | C_DEBUGEN | C_HALT);
    b.write32(AIRCR, 0x05FA_0004);
    assert_eq!(b.cpu.take_reset_request(), Some(ResetCause::Software));
    assert_eq!(b.cpu.take_reset_request(), None);
    // Not taken by the board before the next run: run reports it.
    b.write32(AIRCR, 0x05FA_0004);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::ResetRequested(ResetCause::Software));
}

#[test]
fn coresight_identification_and_rom_table() {
    let (mut b, _) = counting_program();
    assert_eq!(b.read32(0xE00F_F000), 0xFFF0_F003, "ROM table entry 0: SCS");
    assert_eq!(b.read32(0xE00F_F008), 0xFFF0_3003, "ROM table entry 2: BPU");
    assert_eq!(b.read32(0xE00F_F00C), 0, "end of table");
    assert_eq!(b.read32(0xE000_EFF0), 0x0D, "SCS CID0");
    assert_eq!(b.read32(0xE000_EFF4), 0xE0, "SCS CID1: generic IP component");
    assert_eq!(b.read32(0xE000_2FE0), 0x0B, "BPU PID0");
    assert!(b.cpu.debug_read(&mut b.sys, 0xE004_0000, hil_cortex_m::Size::Word).is_err(), "unimplemented PPB");
    b.write32(DHCSR, KEY | C_DEBUGEN | C_HALT);
    assert_eq!(b.read32(0xE000_101C), 0xFFFF_FFFF, "DWT_PCSR reads all ones while halted");
    let s = b.cpu.snapshot();
    assert_eq!((s.r[15], s.msp, s.dhcsr & S_HALT), (Board::addr(0), SRAM + SRAM_LEN, S_HALT));
}
