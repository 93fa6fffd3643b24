//! Directed tests of the system level: resets, traps, faults and lockup, exception return rules,
//! sleep and deadlines, PPB access rules, NVIC/SCB/SysTick registers, and the coherence of the
//! decoded-code cache.

mod common;

use common::{Asm, Board, SRAM, TESTDEV, op, reg};
use hil_cortex_m::{
    Bus, BusFaultKind, CpuConfig, FaultKind, Initiator, LOCKUP_PC, Reg, ResetCause, RunState, Size, Stop, WritePolicy,
};

const ICSR: u32 = 0xE000_ED04;
const VTOR: u32 = 0xE000_ED08;
const AIRCR: u32 = 0xE000_ED0C;
const SHPR2: u32 = 0xE000_ED1C;
const ISER: u32 = 0xE000_E100;
const ICER: u32 = 0xE000_E180;
const ISPR: u32 = 0xE000_E200;
const ICPR: u32 = 0xE000_E280;
const IPR: u32 = 0xE000_E400;
const DHCSR: u32 = 0xE000_EDF0;
const SYST_CSR: u32 = 0xE000_E010;
const SYST_RVR: u32 = 0xE000_E014;
const SYST_CVR: u32 = 0xE000_E018;
const SYST_CALIB: u32 = 0xE000_E01C;

fn board(code: &mut Asm, vectors: &[(u32, usize)]) -> Board {
    let mut b = Board::new();
    b.load(&code.finish(), vectors);
    b.reset();
    b
}

/// The stacked PC of the innermost exception frame on MSP.
fn stacked_pc(b: &mut Board) -> u32 {
    let msp = b.cpu.reg(Reg::Msp);
    b.read32(msp + 24)
}

#[test]
fn sysresetreq_needs_vectkey_and_stops_run_after_the_store() {
    let mut a = Asm::new();
    a.ldr_const(0, AIRCR).ldr_const(1, 0x1234_0004).str(1, 0, 0);
    a.ldr_const(1, 0x05FA_0004).str(1, 0, 0);
    let after = a.here();
    a.b_self();
    let mut b = board(&mut a, &[]);
    assert_eq!(b.cpu.run(&mut b.sys, 10_000), Stop::ResetRequested(ResetCause::Software));
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(after), "the write retired, nothing after it");
    b.cpu.system_reset(&mut b.sys);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(0));
    // S_RESET_ST is sticky until read.
    assert_ne!(b.read32(DHCSR) & 1 << 25, 0);
    assert_eq!(b.read32(DHCSR) & 1 << 25, 0);
}

#[test]
fn device_reset_request_stops_run() {
    let mut a = Asm::new();
    a.ldr_const(0, TESTDEV).str(1, 0, (reg::RESET / 4) as u16).b_self();
    let mut b = board(&mut a, &[]);
    assert_eq!(b.cpu.run(&mut b.sys, 10_000), Stop::ResetRequested(ResetCause::IndependentWatchdog));
}

#[test]
fn native_trap_leaves_pc_at_the_udf_and_other_udfs_fault() {
    let mut a = Asm::new();
    a.movs(0, 5);
    let trap = a.here();
    a.hw(op::udf(0xAB));
    let other = a.here();
    a.hw(op::udf(1));
    let hf = a.here();
    a.b_self();
    let mut b = Board::with_config(CpuConfig { native_trap: Some(0xAB), ..CpuConfig::cortex_m0plus(32) });
    b.load(&a.finish(), &[(3, hf)]);
    b.reset();
    let stop = Stop::NativeTrap { pc: Board::addr(trap), imm: 0xAB };
    assert_eq!(b.cpu.run(&mut b.sys, 10_000), stop);
    assert_eq!((b.cpu.reg(Reg::R0), b.cpu.reg(Reg::Pc)), (5, Board::addr(trap)));
    assert_eq!(b.cpu.run(&mut b.sys, 10_000), stop, "no progress until the board moves the PC");
    // The board's native model returns past the trap.
    b.cpu.set_reg(Reg::Pc, Board::addr(other));
    assert_eq!(b.cpu.run(&mut b.sys, 10_000), Stop::Budget);
    let f = b.cpu.last_fault().unwrap();
    assert_eq!((f.kind, f.pc), (FaultKind::Undefined { opcode: 0xDE01 }, Board::addr(other)));
    assert_eq!(b.cpu.reg(Reg::Xpsr) & 0x3F, 3, "in HardFault");
    assert_eq!(stacked_pc(&mut b), Board::addr(other));
}

#[test]
fn bkpt_without_debugger_faults_and_a_fault_in_hardfault_locks_up() {
    let mut a = Asm::new();
    a.hw(op::BKPT);
    let hf = a.here();
    a.hw(op::udf(1));
    let mut b = board(&mut a, &[(3, hf), (2, hf)]);
    let stop = b.cpu.run(&mut b.sys, 50_000);
    assert_eq!(stop, Stop::Lockup { pc: Board::addr(hf) });
    assert_eq!(b.cpu.cycles(), 50_000, "time goes on while locked up (a watchdog can still fire)");
    assert_eq!(b.cpu.reg(Reg::Pc), LOCKUP_PC);
    assert_eq!(b.cpu.run_state(), RunState::Lockup);
    let f = *b.cpu.last_fault().unwrap();
    assert!(f.lockup && f.kind == FaultKind::Undefined { opcode: 0xDE01 }, "{f}");
    assert_ne!(b.read32(DHCSR) & 1 << 19, 0, "S_LOCKUP");
    // NMI preempts a lockup at HardFault priority (B1.5.15); its handler here faults as well
    // (UDF at the same address), which locks up again at NMI priority.
    b.cpu.pend_nmi();
    let stop = b.cpu.run(&mut b.sys, 55_000);
    assert_eq!(stop, Stop::Lockup { pc: Board::addr(hf) });
    assert_eq!(b.cpu.snapshot().active_exceptions, [3, 2], "NMI taken on top of HardFault");
    // Entering debug state ends lockup (B1.5.15).
    b.write32(DHCSR, 0xA05F_0003);
    assert_eq!(b.cpu.run(&mut b.sys, 60_000), Stop::Halted(hil_cortex_m::HaltReason::Request));
    assert_eq!(b.read32(DHCSR) & 1 << 19, 0);
}

#[test]
fn unaligned_and_unmapped_accesses_fault_with_their_address() {
    let mut a = Asm::new();
    a.ldr_const(1, SRAM + 2);
    let ldr = a.here();
    a.ldr(0, 1, 0);
    let hf = a.here();
    a.b_self();
    let mut b = board(&mut a, &[(3, hf)]);
    b.cpu.run(&mut b.sys, 1000);
    let f = *b.cpu.last_fault().unwrap();
    assert_eq!(f.kind, FaultKind::Unaligned { addr: SRAM + 2, size: Size::Word, write: false });
    assert_eq!(f.pc, Board::addr(ldr));
    assert_eq!(stacked_pc(&mut b), Board::addr(ldr), "precise: the frame returns to the faulting load");

    let mut a = Asm::new();
    a.ldr_const(1, 0x3000_0000).ldr(0, 1, 0);
    let hf = a.here();
    a.b_self();
    let mut b = board(&mut a, &[(3, hf)]);
    b.cpu.run(&mut b.sys, 1000);
    let f = *b.cpu.last_fault().unwrap();
    match f.kind {
        FaultKind::DataBus(bf) => assert_eq!((bf.addr, bf.kind), (0x3000_0000, BusFaultKind::Unmapped)),
        other => panic!("{other:?}"),
    }
    assert!(f.to_string().contains("0x30000000"), "{f}");
}

/// IRQ0 enabled and pended from Thread mode; `handler` is IRQ0's code.
fn with_irq0_handler(handler: impl FnOnce(&mut Asm)) -> (Board, usize) {
    let mut a = Asm::new();
    a.ldr_const(0, ISER).movs(1, 1).str(1, 0, 0);
    a.ldr_const(0, ISPR).str(1, 0, 0);
    a.b_self();
    let irq = a.here();
    handler(&mut a);
    let hf = a.here();
    a.b_self();
    (board(&mut a, &[(3, hf), (16, irq)]), hf)
}

#[test]
fn invalid_exc_return_is_a_hardfault_from_the_handler() {
    for (value, why) in [(0xFFFF_FFF5u32, "reserved EXC_RETURN"), (0xFFFF_FFF1, "return to Handler with one active")] {
        let (mut b, _) = with_irq0_handler(|a| {
            a.ldr_const(0, value).bx(0);
        });
        b.cpu.run(&mut b.sys, 2000);
        let f = b.cpu.last_fault().unwrap();
        assert_eq!(f.kind, FaultKind::BadExcReturn { value }, "{why}");
        assert_eq!(b.cpu.snapshot().active_exceptions, [16, 3], "{why}: HardFault on top of IRQ0");
    }
}

#[test]
fn svc_in_a_handler_at_higher_priority_escalates() {
    // SVCall at 0xC0, IRQ0 at 0x00: SVC inside IRQ0 cannot preempt.
    let (mut b, _) = with_irq0_handler(|a| {
        a.hw(op::svc(0));
    });
    b.write32(SHPR2, 0xC000_0000);
    assert_eq!(b.read32(SHPR2), 0xC000_0000);
    b.cpu.run(&mut b.sys, 2000);
    assert_eq!(b.cpu.last_fault().unwrap().kind, FaultKind::SvcEscalated);
    assert_eq!(b.cpu.snapshot().active_exceptions, [16, 3]);
}

#[test]
fn svc_from_thread_enters_svcall_with_thread_exc_return() {
    let mut a = Asm::new();
    a.hw(op::svc(5));
    let after = a.here();
    a.b_self();
    let h = a.here();
    a.b_self();
    let mut b = board(&mut a, &[(11, h)]);
    b.cpu.run(&mut b.sys, 1000);
    assert_eq!(b.cpu.reg(Reg::Xpsr) & 0x3F, 11);
    assert_eq!(b.cpu.reg(Reg::Lr), 0xFFFF_FFF9);
    assert_eq!(stacked_pc(&mut b), Board::addr(after), "SVCall returns to the next instruction");
}

#[test]
fn run_honours_the_bus_deadline_and_sleep_skips_to_it() {
    // Arm the device timer (IRQ 6, 1 us = 64 cycles at 64 MHz), enable IRQ 6, WFI.
    let mut a = Asm::new();
    a.ldr_const(0, TESTDEV).movs(1, 6).str(1, 0, (reg::TIMER_IRQ / 4) as u16);
    a.ldr_const(2, ISER).movs(3, 0x40).str(3, 2, 0);
    a.ldr_const(1, 1000).str(1, 0, (reg::TIMER_NS / 4) as u16);
    a.hw(op::WFI).movs(4, 0x77).b_self();
    let irq = a.here();
    a.movs(5, 1).bx(14);
    let mut b = board(&mut a, &[(22, irq)]);
    let stop = b.cpu.run(&mut b.sys, 1_000_000);
    let deadline = b.sys.deadline_cycle();
    assert_eq!(stop, Stop::Sleeping);
    assert_eq!(b.cpu.cycles(), deadline, "slept exactly until the device event");
    assert!(deadline < 200);
    assert_eq!(b.sys.dispatch_due_events(b.cpu.cycles()), 1);
    b.cpu.run(&mut b.sys, 2000);
    assert_eq!((b.cpu.reg(Reg::R5), b.cpu.reg(Reg::R4)), (1, 0x77), "woken by the interrupt, handler ran");

    // A busy core stops at the deadline too.
    let mut a = Asm::new();
    a.ldr_const(0, TESTDEV).ldr_const(1, 2000).str(1, 0, (reg::TIMER_NS / 4) as u16);
    a.b_self();
    let mut b = board(&mut a, &[]);
    assert_eq!(b.cpu.run(&mut b.sys, 1_000_000), Stop::Budget);
    let deadline = b.sys.deadline_cycle();
    assert!(b.cpu.cycles() >= deadline && b.cpu.cycles() < deadline + 3, "{} vs {deadline}", b.cpu.cycles());
}

#[test]
fn wfe_consumes_the_event_register_and_sleeps_until_an_event() {
    let mut a = Asm::new();
    a.hw(op::SEV).hw(op::WFE).movs(0, 1).hw(op::WFE).movs(0, 2).b_self();
    let mut b = board(&mut a, &[]);
    assert_eq!(b.cpu.run(&mut b.sys, 10_000), Stop::Sleeping);
    assert_eq!(b.cpu.reg(Reg::R0), 1, "the first WFE consumed SEV's event");
    assert_eq!(b.cpu.cycles(), 10_000);
    assert_ne!(b.read32(DHCSR) & 1 << 18, 0, "S_SLEEP");
    // A device event (RXEV) wakes it.
    b.sys.write(TESTDEV + reg::EVENT, Size::Word, 1, Initiator::Debug, 10_000).unwrap();
    b.cpu.run(&mut b.sys, 11_000);
    assert_eq!(b.cpu.reg(Reg::R0), 2);
}

#[test]
fn wfi_with_primask_wakes_without_taking_the_interrupt() {
    let mut a = Asm::new();
    a.hw(op::CPSID_I).ldr_const(0, ISER).movs(1, 1).str(1, 0, 0);
    a.hw(op::WFI).movs(4, 0x44).hw(op::CPSIE_I).movs(4, 0x55).b_self();
    let irq = a.here();
    a.movs(5, 0x99).bx(14);
    let mut b = board(&mut a, &[(16, irq)]);
    assert_eq!(b.cpu.run(&mut b.sys, 5000), Stop::Sleeping);
    b.write32(ISPR, 1);
    // One instruction after waking: the MOVS after WFI runs before the handler (PRIMASK set).
    b.cpu.step(&mut b.sys);
    assert_eq!((b.cpu.reg(Reg::R4), b.cpu.reg(Reg::R5)), (0x44, 0));
    b.cpu.run(&mut b.sys, 6000);
    assert_eq!((b.cpu.reg(Reg::R4), b.cpu.reg(Reg::R5)), (0x55, 0x99));
}

#[test]
fn ppb_is_word_access_and_privileged_only() {
    let mut a = Asm::new();
    a.ldr_const(1, 0xE000_ED00).hw(0x7808); // ldrb r0, [r1]
    let hf = a.here();
    a.b_self();
    let mut b = board(&mut a, &[(3, hf)]);
    b.cpu.run(&mut b.sys, 1000);
    match b.cpu.last_fault().unwrap().kind {
        FaultKind::DataBus(bf) => {
            assert_eq!(bf.addr, 0xE000_ED00);
            assert!(matches!(bf.kind, BusFaultKind::Device(m) if m.contains("word")), "{bf}");
        }
        other => panic!("{other:?}"),
    }

    // Unprivileged Thread mode: CPSID is ignored, MRS PRIMASK reads 0, SCS loads fault.
    let mut a = Asm::new();
    a.movs(0, 1).hw(0xF380).hw(0x8814); // msr control, r0 (nPRIV)
    a.hw(op::CPSID_I).hw(0xF3EF).hw(0x8210); // mrs r2, primask
    a.ldr_const(1, 0xE000_ED00).ldr(0, 1, 0);
    let hf = a.here();
    a.b_self();
    let mut b = board(&mut a, &[(3, hf)]);
    b.cpu.set_reg(Reg::R2, 0xFFFF);
    b.cpu.run(&mut b.sys, 1000);
    assert!(!b.cpu.snapshot().primask);
    assert_eq!(b.cpu.reg(Reg::R2), 0);
    match b.cpu.last_fault().unwrap().kind {
        FaultKind::DataBus(bf) => assert!(matches!(bf.kind, BusFaultKind::Device(m) if m.contains("unprivileged"))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn code_cache_follows_cpu_stores_debugger_writes_and_remap() {
    // Self-modifying code in SRAM: the STRH rewrites the next-but-one instruction, already in the
    // cached line, from `movs r0, #9` to `movs r0, #2`.
    let code: [u16; 6] = [
        0x4902, // ldr r1, [pc, #8]  -> target address
        0x4A03, // ldr r2, [pc, #12] -> 0x2002
        0x800A, // strh r2, [r1]
        0x2009, // target: movs r0, #9
        0xE7FE, // b .
        0xBF00,
    ];
    let mut b = Board::new();
    b.reset();
    let mut image: Vec<u8> = code.iter().flat_map(|h| h.to_le_bytes()).collect();
    image.extend_from_slice(&(SRAM + 6).to_le_bytes());
    image.extend_from_slice(&0x2002u32.to_le_bytes());
    b.sys.memory.poke(SRAM, &image).unwrap();
    b.cpu.set_reg(Reg::Pc, SRAM);
    b.cpu.run(&mut b.sys, 100);
    assert_eq!(b.cpu.reg(Reg::R0), 2, "the store into the cached line was seen");

    // A debugger write into cached code.
    b.cpu.debug_write(&mut b.sys, SRAM + 6, Size::Half, 0x2007).unwrap();
    b.cpu.set_reg(Reg::Pc, SRAM + 6);
    b.cpu.run(&mut b.sys, 200);
    assert_eq!(b.cpu.reg(Reg::R0), 7);

    // Remap: the boot alias at 0 now shows SRAM; the same address runs other code.
    b.load_flash(0, &[0x05, 0x20, 0xFE, 0xE7]); // movs r0, #5; b .
    b.cpu.set_reg(Reg::Pc, 0);
    b.cpu.run(&mut b.sys, 300);
    assert_eq!(b.cpu.reg(Reg::R0), 5);
    b.sys.memory.poke(SRAM, &[0x03, 0x20, 0xFE, 0xE7]).unwrap(); // movs r0, #3; b .
    let alias = hil_cortex_m::RegionId(1);
    b.sys.memory.retarget(alias, b.sram, 0, common::SRAM_LEN, WritePolicy::Direct, true).unwrap();
    b.cpu.set_reg(Reg::Pc, 0);
    b.cpu.run(&mut b.sys, 400);
    assert_eq!(b.cpu.reg(Reg::R0), 3);
    // Code running through the alias rewrites itself through SRAM's home address.
    let mut image: Vec<u8> = code.iter().flat_map(|h| h.to_le_bytes()).collect();
    image.extend_from_slice(&(SRAM + 6).to_le_bytes());
    image.extend_from_slice(&0x2006u32.to_le_bytes());
    b.sys.memory.poke(SRAM, &image).unwrap();
    b.cpu.set_reg(Reg::Pc, 0);
    b.cpu.run(&mut b.sys, 500);
    assert_eq!(b.cpu.reg(Reg::R0), 6, "a store through another alias of the cached bytes was seen");
}

#[test]
fn vtor_moves_the_vector_table() {
    let mut a = Asm::new();
    a.ldr_const(0, VTOR).ldr_const(1, SRAM + 0x80).str(1, 0, 0);
    a.ldr_const(0, ISER).movs(1, 1).str(1, 0, 0).ldr_const(0, ISPR).str(1, 0, 0).b_self();
    let irq = a.here();
    a.movs(5, 0x55).bx(14);
    let mut b = board(&mut a, &[]);
    // VTOR keeps only the bits a 48-entry table allows (256-byte alignment): SRAM + 0x80 -> SRAM.
    let mut table = vec![0u8; 0x100];
    table[16 * 4..16 * 4 + 4].copy_from_slice(&(Board::addr(irq) | 1).to_le_bytes());
    b.sys.memory.poke(SRAM, &table).unwrap();
    b.cpu.run(&mut b.sys, 2000);
    assert_eq!(b.cpu.vtor(), SRAM);
    assert_eq!(b.cpu.reg(Reg::R5), 0x55);
}

#[test]
fn nvic_registers_and_level_interrupts() {
    let mut a = Asm::new();
    a.b_self();
    let mut b = board(&mut a, &[]);
    b.write32(ISER, 0x8000_0005);
    assert_eq!(b.read32(ISER), 0x8000_0005);
    b.write32(ICER, 0x0000_0004);
    assert_eq!(b.read32(ICER), 0x8000_0001);
    // 2 priority bits: the low 6 bits of each field read as zero.
    b.write32(IPR + 4, 0xFFC0_7F01);
    assert_eq!(b.read32(IPR + 4), 0xC0C0_4000);
    // Past the implemented interrupts: reserved, reads as zero.
    assert_eq!(b.read32(ISER + 4), 0);
    // A level from the device pends IRQ 3 (disabled: it stays pending).
    b.sys.write(TESTDEV + reg::IRQ_SET, Size::Word, 1 << 3, Initiator::Debug, 0).unwrap();
    b.cpu.run(&mut b.sys, 100);
    assert_eq!(b.read32(ISPR), 1 << 3);
    assert_eq!((b.read32(ICSR) >> 12) & 0x1FF, 0, "VECTPENDING counts enabled exceptions only");
    assert_ne!(b.read32(ICSR) & 1 << 22, 0, "ISRPENDING");
    // Clearing the pending bit of a level still asserted re-pends it at once.
    b.write32(ICPR, 1 << 3);
    assert_eq!(b.read32(ISPR), 1 << 3);
    b.sys.write(TESTDEV + reg::IRQ_CLR, Size::Word, 1 << 3, Initiator::Debug, 0).unwrap();
    b.cpu.run(&mut b.sys, 200);
    b.write32(ICPR, 1 << 3);
    assert_eq!(b.read32(ISPR), 0);
    // ICSR PENDSVSET/PENDSTSET set and clear.
    b.write32(ICSR, 1 << 28 | 1 << 26);
    assert_eq!(b.read32(ICSR) & (1 << 28 | 1 << 26), 1 << 28 | 1 << 26);
    assert_eq!((b.read32(ICSR) >> 12) & 0x1FF, 14, "PendSV and SysTick at equal priority: lowest number");
    b.write32(ICSR, 1 << 27 | 1 << 25);
    assert_eq!(b.read32(ICSR) & (1 << 28 | 1 << 26), 0);
    assert_eq!(b.read32(0xE000_ED00), 0x410C_C601, "CPUID");
    assert_eq!(b.read32(AIRCR), 0xFA05_0000);
}

#[test]
fn systick_registers() {
    let mut a = Asm::new();
    a.b_self();
    let mut b = board(&mut a, &[]);
    b.write32(SYST_RVR, 0xFFFF_FFFF);
    assert_eq!(b.read32(SYST_RVR), 0x00FF_FFFF, "24-bit reload");
    b.write32(SYST_RVR, 99);
    b.write32(SYST_CVR, 1234);
    assert_eq!(b.read32(SYST_CVR), 0, "any write clears the counter");
    b.write32(SYST_CSR, 0b101); // enabled, processor clock, no interrupt
    b.cpu.run(&mut b.sys, b.cpu.cycles() + 250);
    let csr = b.read32(SYST_CSR);
    assert_ne!(csr & 1 << 16, 0, "COUNTFLAG after a wrap");
    assert_ne!(b.read32(SYST_CSR) & 1 << 16, 0, "a debugger read does not clear COUNTFLAG");
    assert_eq!(b.read32(ICSR) & 1 << 26, 0, "TICKINT clear: no SysTick exception pended");
    assert!(b.read32(SYST_CVR) <= 99);
    assert_eq!(b.read32(SYST_CALIB), 0, "reference clock present, no calibration value");
    b.cpu.set_systick_reference(None, 0x1F3F);
    assert_eq!(b.read32(SYST_CALIB), 0x8000_1F3F, "NOREF without a reference clock");
    // The SysTick wrap is the next event a sleeping board must honour.
    b.write32(SYST_CSR, 0b111);
    let next = b.cpu.systick_next_event().unwrap();
    assert!(next > b.cpu.cycles() && next <= b.cpu.cycles() + 100);
}

#[test]
fn debugger_accesses_outside_the_ppb_go_to_the_bus_as_debug() {
    let mut a = Asm::new();
    a.b_self();
    let mut b = board(&mut a, &[]);
    b.cpu.debug_write(&mut b.sys, SRAM + 0x40, Size::Word, 0xCAFE_F00D).unwrap();
    assert_eq!(common::bus_read(&mut b.sys, SRAM + 0x40), 0xCAFE_F00D);
    let e = b.cpu.debug_read(&mut b.sys, 0x3000_0000, Size::Word).unwrap_err();
    assert_eq!((e.addr, e.kind), (0x3000_0000, BusFaultKind::Unmapped));
    // Sub-word debug reads of the PPB return the addressed lanes; sub-word writes are refused.
    assert_eq!(b.cpu.debug_read(&mut b.sys, 0xE000_ED02, Size::Half).unwrap(), 0x410C);
    assert!(b.cpu.debug_write(&mut b.sys, 0xE000_ED08, Size::Byte, 0).is_err());
    let _ = b.sys.deadline_cycle();
}

#[test]
fn msr_mrs_special_registers() {
    let mut a = Asm::new();
    a.ldr_const(0, 0xF000_0000).hw(0xF380).hw(0x8800); // msr apsr_nzcvq, r0
    a.hw(0xF3EF).hw(0x8100); // mrs r1, apsr
    a.hw(0xF3EF).hw(0x8203); // mrs r2, xpsr (EPSR reads as zero)
    a.ldr_const(0, SRAM + 0x103).hw(0xF380).hw(0x8809); // msr psp, r0
    a.hw(0xF3EF).hw(0x8309); // mrs r3, psp
    a.movs(0, 1).hw(0xF380).hw(0x8810); // msr primask, r0
    a.hw(0xF3EF).hw(0x8410); // mrs r4, primask
    a.movs(0, 2).hw(0xF380).hw(0x8814); // msr control, r0 (SPSEL)
    a.hw(0xF3EF).hw(0x8514); // mrs r5, control
    a.hw(0x466E); // mov r6, sp
    a.b_self();
    let mut b = board(&mut a, &[]);
    b.cpu.run(&mut b.sys, 200);
    let r = |b: &Board, n: u32| b.cpu.reg(Reg::from_regsel(n).unwrap());
    assert_eq!((r(&b, 1), r(&b, 2)), (0xF000_0000, 0xF000_0000));
    assert_eq!(r(&b, 3), SRAM + 0x100, "SP_process bits[1:0] are zero");
    assert_eq!((r(&b, 4), r(&b, 5)), (1, 2));
    assert_eq!(r(&b, 6), SRAM + 0x100, "Thread mode now runs on PSP");
    assert_eq!(b.cpu.reg(Reg::Msp), common::SRAM + common::SRAM_LEN);
}

#[test]
fn shift_edge_cases_set_carry_as_the_arm_pseudocode_says() {
    // (instruction, r0 before, r1 = shift amount, expected r0, expected C); C starts clear.
    let cases: [(u16, u32, u32, u32, bool); 10] = [
        (0x1000, 0x8000_0000, 0, 0xFFFF_FFFF, true),  // asrs r0, r0, #32 (imm5 = 0)
        (0x0800, 0x8000_0000, 0, 0, true),            // lsrs r0, r0, #32
        (0x41C8, 0x8000_0001, 32, 0x8000_0001, true), // rors r0, r1: multiple of 32, C = bit 31
        (0x41C8, 0x8000_0001, 0, 0x8000_0001, false), // rors by 0: C unchanged
        (0x41C8, 0x0000_0003, 1, 0x8000_0001, true),  // rors by 1
        (0x4088, 1, 32, 0, true),                     // lsls r0, r1 by 32: C = bit 0
        (0x4088, 1, 33, 0, false),                    // lsls by 33
        (0x40C8, 0x8000_0000, 32, 0, true),           // lsrs by 32: C = bit 31
        (0x4108, 0x8000_0000, 40, 0xFFFF_FFFF, true), // asrs by 40
        (0x4088, 0xF, 0x100, 0xF, false),             // lsls by 256: only the low byte counts
    ];
    for (insn, r0, r1, want, carry) in cases {
        let mut a = Asm::new();
        a.hw(insn).b_self();
        let mut b = board(&mut a, &[]);
        b.cpu.set_reg(Reg::R0, r0);
        b.cpu.set_reg(Reg::R1, r1);
        b.cpu.step(&mut b.sys);
        let c = b.cpu.reg(Reg::Xpsr) & 1 << 29 != 0;
        assert_eq!((b.cpu.reg(Reg::R0), c), (want, carry), "{insn:#06x} with r0 {r0:#x}, r1 {r1}");
    }
}

#[test]
fn sleep_on_exit_sleeps_instead_of_returning_to_thread_mode() {
    let mut a = Asm::new();
    a.ldr_const(0, 0xE000_ED10).movs(1, 2).str(1, 0, 0); // SCR.SLEEPONEXIT
    a.ldr_const(0, ISER).movs(1, 1).str(1, 0, 0).ldr_const(0, ISPR).str(1, 0, 0);
    a.movs(4, 1).b_self();
    let irq = a.here();
    a.adds(5, 1).bx(14);
    let mut b = board(&mut a, &[(16, irq)]);
    assert_eq!(b.cpu.run(&mut b.sys, 5000), Stop::Sleeping);
    assert_eq!((b.cpu.reg(Reg::R5), b.cpu.reg(Reg::R4)), (1, 0), "handler ran, Thread mode did not resume");
    b.write32(ISPR, 1);
    assert_eq!(b.cpu.run(&mut b.sys, 6000), Stop::Sleeping);
    assert_eq!((b.cpu.reg(Reg::R5), b.cpu.reg(Reg::R4)), (2, 0));
}
