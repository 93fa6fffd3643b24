//! Directed tests of the ARMv7-M / ARMv7E-M profile: what the differential test against armagnac
//! cannot compare (armagnac lacks the encoding or panics on it), and the v7-M system level
//! (configurable faults, BASEPRI/FAULTMASK, PRIGROUP, CCR traps, DWT). Expected values are worked
//! out from the ARMv7-M ARM (DDI0403E) pseudocode, section cited per case.

mod common;

use common::{Asm, Board, SRAM, op};
use hil_cortex_m::{CpuConfig, FaultKind, Reg, RunState, Stop};

const CCR: u32 = 0xE000_ED14;
const SHPR1: u32 = 0xE000_ED18;
const SHCSR: u32 = 0xE000_ED24;
const CFSR: u32 = 0xE000_ED28;
const HFSR: u32 = 0xE000_ED2C;
const BFAR: u32 = 0xE000_ED38;
const AIRCR: u32 = 0xE000_ED0C;
const ISER: u32 = 0xE000_E100;
const ISPR: u32 = 0xE000_E200;
const IPR: u32 = 0xE000_E400;
const DEMCR: u32 = 0xE000_EDFC;
const DWT_CTRL: u32 = 0xE000_1000;
const DWT_CYCCNT: u32 = 0xE000_1004;

/// `str rt, [rn]` with rn holding a PPB address: the program's way to write a register.
fn str_to(a: &mut Asm, addr: u32, value: u32) {
    a.mov32(6, addr).mov32(7, value).str(7, 6, 0);
}

fn m3() -> CpuConfig {
    CpuConfig::cortex_m3(32)
}

fn m4() -> CpuConfig {
    CpuConfig::cortex_m4(32)
}

/// Run straight-line `a` (ending in `b .`) on a core with `cfg`; panics on any fault.
fn run(cfg: CpuConfig, a: &mut Asm) -> Board {
    let end = a.here();
    a.b_self();
    let mut b = Board::with_config(cfg);
    b.load(&a.finish(), &[]);
    b.reset();
    b.cpu.run(&mut b.sys, 100_000);
    assert_eq!(
        b.cpu.reg(Reg::Pc),
        Board::addr(end),
        "did not reach the end; last fault {:?}",
        b.cpu.last_fault().map(|f| f.to_string())
    );
    b
}

fn r(b: &Board, n: u8) -> u32 {
    b.cpu.reg(Reg::from_regsel(n as u32).unwrap())
}

#[test]
fn v6m_keeps_faulting_on_thumb2_it_and_cbz() {
    // ARMv6-M A5.3: only BL, MSR, MRS, DSB, DMB, ISB and UDF exist in the 32-bit space; IT and
    // CBZ are UNDEFINED (A5.2.5). Each faults to HardFault with the opcode recorded.
    for (code, opcode) in [
        (vec![0xF04F, 0x0001], 0xF04F_0001u32), // mov.w r0, #1
        (vec![0xBF08, 0xBF00], 0xBF08),         // it eq
        (vec![0xB100, 0xBF00], 0xB100),         // cbz r0, .+4
        (vec![0xFB90, 0xF0F1], 0xFB90_F0F1),    // sdiv r0, r0, r1
    ] {
        let mut a = Asm::new();
        for h in &code {
            a.hw(*h);
        }
        let hf = a.here();
        a.b_self();
        let mut b = Board::new();
        b.load(&a.finish(), &[(3, hf)]);
        b.reset();
        b.cpu.run(&mut b.sys, 10_000);
        assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(hf), "{opcode:#x}");
        assert_eq!(b.cpu.last_fault().unwrap().kind, FaultKind::Undefined { opcode });
    }
}

#[test]
fn thumb2_basics_on_the_m3() {
    let mut a = Asm::new();
    a.mov32(0, 0x1234_5678);
    a.w(0xF100 | 1, 1 << 8 | 0xFF); // add.w r1, r1(=0), #0xFF  (A7.7.3 T3)
    a.w(0xF1B1, 0x0F00 | 0xFF); // cmp.w r1, #0xFF -> Z
    a.hw(0xBF0C); // ite eq  (A7.7.38)
    a.w(0xF04F, 0x0200 | 7); // moveq.w r2, #7
    a.w(0xF04F, 0x0200 | 9); // movne.w r2, #9 (skipped)
    a.w(0xF3C0, 0x2300 | 0x07); // ubfx r3, r0, #8, #8 -> 0x56  (A7.7.193: lsb = imm3:imm2 = 8)
    a.w(0xF340, 0x2400 | 0x07); // sbfx r4, r0, #8, #8 -> 0x56
    a.w(0xFAB0, 0xF580); // clz r5, r0 -> 3
    a.w(0xFA90, 0xF6A0); // rbit r6, r0 -> 0x1E6A2C48
    a.mov32(7, 0xFFFF_FFF0);
    a.w(0xFBA7, 0x8907); // umull r8, r9, r7, r7 -> 0xFFFFFFE0_00000100
    a.w(0xFB90, 0xFAF7); // sdiv r10, r0, r7 -> 0x12345678 / -16 = -19088743 (toward zero)
    a.mov32(11, 0xFFFF_FFFF);
    a.w(0xF36F, 0x2B17); // bfc r11, #8, #16 -> 0xFF0000FF (A7.7.13: msb 23, lsb 8)
    let b = run(m3(), &mut a);
    assert_eq!(r(&b, 1), 0xFF);
    assert_eq!(r(&b, 2), 7, "IT then-arm ran, else-arm skipped");
    assert_eq!((r(&b, 3), r(&b, 4), r(&b, 5)), (0x56, 0x56, 3));
    assert_eq!(r(&b, 6), 0x1E6A_2C48);
    assert_eq!((r(&b, 8), r(&b, 9)), (0x0000_0100, 0xFFFF_FFE0));
    assert_eq!(r(&b, 10), (-19_088_743i32) as u32);
    assert_eq!(r(&b, 11), 0xFF00_00FF);
}

#[test]
fn it_block_suppresses_16_bit_flag_setting_and_skips_failed_conditions() {
    // A7.3.3: inside an IT block the 16-bit data-processing instructions do not set flags.
    let mut a = Asm::new();
    a.movs(0, 0); // Z = 1
    a.hw(0xBF04); // itt eq
    a.movs(1, 0x80); // moveq r1, #0x80 (no flags: Z stays 1)
    a.hw(0x1E4A); // subeq r2, r1, #1 (no flags)
    a.hw(0xBF18); // it ne (fails: Z = 1)
    a.movs(3, 5); // skipped
    let b = run(m3(), &mut a);
    assert_eq!((r(&b, 1), r(&b, 2), r(&b, 3)), (0x80, 0x7F, 0));
    assert_ne!(b.cpu.reg(Reg::Xpsr) & 1 << 30, 0, "Z unchanged by MOVS/SUBS inside IT");
    assert_eq!(b.cpu.reg(Reg::Xpsr) & 0x0600_FC00, 0, "ITSTATE empty after the block");
}

#[test]
fn dsp_encodings_armagnac_lacks() {
    // Inputs: r1 = 0x80017FFF, r2 = 0x0002FFFE, r3 = 0x01FF7F80, r4 = 0xFF017F00.
    let mut a = Asm::new();
    a.mov32(1, 0x8001_7FFF).mov32(2, 0x0002_FFFE).mov32(3, 0x01FF_7F80).mov32(4, 0xFF01_7F00);
    a.mov32(0, 10);
    a.w(0xFB11, 0x0502); // smlabb r5, r1, r2, r0: 32767 * -2 + 10 = 0xFFFF000C (A7.7.130)
    a.w(0xFB11, 0xF622); // smultb r6, r1, r2: -32767 * -2 = 0xFFFE (A7.7.150)
    a.w(0xFB21, 0xF702); // smuad r7, r1, r2: -65534 + -65534 = 0xFFFE0004 (A7.7.151)
    a.w(0xFB51, 0xF802); // smmul r8, r1, r2: high word of the product = 0xFFFE8005 (A7.7.147)
    a.w(0xFB73, 0xF904); // usad8 r9, r3, r4: 0x27C (A7.7.207)
    a.w(0xFA83, 0xFA44); // uadd8 r10, r3, r4: 0x0000FE80, GE = 0b1100 (A7.7.187)
    a.w(0xFAA3, 0xFB84); // sel r11, r3, r4 with GE = 0b1100
    let b = run(m4(), &mut a);
    assert_eq!(r(&b, 5), 0xFFFF_000C);
    assert_eq!(r(&b, 6), 0xFFFE);
    assert_eq!(r(&b, 7), 0xFFFE_0004);
    assert_eq!(r(&b, 8), 0xFFFE_8005);
    assert_eq!(r(&b, 9), 0x27C);
    assert_eq!(r(&b, 10), 0x0000_FE80);
    assert_eq!(b.cpu.reg(Reg::Xpsr) >> 16 & 0xF, 0b1100);
    // A7.7.125 SEL: GE[i] picks byte i from Rn (r3) else Rm (r4): bytes 3,2 from r3, 1,0 from r4.
    assert_eq!(r(&b, 11), 0x01FF_7F00);

    let mut a = Asm::new();
    a.mov32(1, 0x8001_7FFF).mov32(2, 0x0002_FFFE).mov32(3, 0x01FF_7F80).mov32(4, 0xFF01_7F00);
    a.mov32(0, 0x1234_5678);
    a.w(0xFB51, 0x0512); // smmlar r5, r1, r2, r0: 0x1232D67D (A7.7.145, rounded)
    a.w(0xFAC3, 0xF654); // uqsub8 r6, r3, r4: 0x00FE0080 (A7.7.220)
    a.w(0xFA91, 0xF722); // shadd16 r7, r1, r2: 0xC0013FFE (A7.7.126)
    a.w(0xF321, 0x0807); // ssat16 r8, #8, r1: 0xFF80007F, Q set (A7.7.154)
    a.w(0xEAC3, 0x2904); // pkhbt r9, r3, r4, lsl #8: 0x017F7F80 (A7.7.94)
    a.w(0xFA53, 0xFA94); // uxtab r10, r3, r4, ror #8: 0x01FF7FFF (A7.7.221)
    a.w(0xFA23, 0xFB84); // sxtab16 r11, r3, r4: 0x02007F80 (A7.7.180)
    a.w(0xFB31, 0x0C02); // smlawb r12, r1, r2, r0(=0x12345678): (r1 * -2) >> 16 + r0
    let b = run(m4(), &mut a);
    assert_eq!(r(&b, 5), 0x1232_D67D);
    assert_eq!(r(&b, 6), 0x00FE_0080);
    assert_eq!(r(&b, 7), 0xC001_3FFE);
    assert_eq!(r(&b, 8), 0xFF80_007F);
    assert_ne!(b.cpu.reg(Reg::Xpsr) & 1 << 27, 0, "SSAT16 saturated: Q");
    assert_eq!(r(&b, 9), 0x017F_7F80);
    assert_eq!(r(&b, 10), 0x01FF_7FFF);
    assert_eq!(r(&b, 11), 0x0200_7F80);
    assert_eq!(r(&b, 12), 0xFFFD_u32.wrapping_add(0x1234_5678));

    let mut a = Asm::new();
    a.mov32(1, 0x8001_7FFF).mov32(2, 0x0002_FFFE).mov32(3, 0xFFFF_FFFF);
    a.mov32(4, 0).mov32(5, 0).mov32(6, 0xFFFF_FFFF).mov32(7, 0xFFFF_FFFF);
    a.w(0xFBC1, 0x45C2); // smlald r4, r5, r1, r2: 0xFFFFFFFF_FFFE0004 (A7.7.133)
    a.w(0xFBE3, 0x6763); // umaal r6, r7, r3, r3: 0xFFFFFFFF_FFFFFFFF (A7.7.202)
    a.mov32(8, 7).mov32(9, 9).mov32(10, 100);
    a.w(0xFB08, 0xAB19); // mls r11, r8, r9, r10: 100 - 63 = 37 (A7.7.75)
    let b = run(m4(), &mut a);
    assert_eq!((r(&b, 4), r(&b, 5)), (0xFFFE_0004, 0xFFFF_FFFF));
    assert_eq!((r(&b, 6), r(&b, 7)), (0xFFFF_FFFF, 0xFFFF_FFFF));
    assert_eq!(r(&b, 11), 37);
}

#[test]
fn dsp_encodings_are_undefined_on_plain_v7m() {
    // A4.1: the DSP extension is ARMv7E-M only; on ARMv7-M its encodings are UNDEFINED.
    let mut a = Asm::new();
    a.w(0xFAA3, 0xFB84); // sel
    let hf = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(3, hf)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(hf));
    assert_eq!(b.read32(CFSR), 1 << 16, "UNDEFINSTR");
    assert_eq!(b.read32(HFSR), 1 << 30, "escalated: UsageFault disabled");
}

#[test]
fn divide_by_zero_gives_zero_or_traps_with_div_0_trp() {
    // A7.7.127/195: x / 0 = 0 unless CCR.DIV_0_TRP (B3.2.8), then UsageFault DIVBYZERO.
    let mut a = Asm::new();
    a.mov32(0, 1234).mov32(1, 0);
    a.w(0xFBB0, 0xF2F1); // udiv r2, r0, r1 -> 0
    a.mov32(3, 0x8000_0000).mov32(4, 0xFFFF_FFFF);
    a.w(0xFB93, 0xF5F4); // sdiv r5, r3, r4 -> 0x80000000 (overflow wraps)
    str_to(&mut a, CCR, 1 << 4 | 1 << 9);
    str_to(&mut a, SHCSR, 1 << 18); // USGFAULTENA
    let trap = a.here();
    a.w(0xFBB0, 0xF2F1);
    a.b_self();
    let uf = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(6, uf)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(uf), "{:?}", b.cpu.last_fault());
    assert_eq!((r(&b, 2), r(&b, 5)), (0, 0x8000_0000));
    assert_eq!(b.read32(CFSR), 1 << 25, "DIVBYZERO");
    assert_eq!(b.read32(b.cpu.reg(Reg::Msp) + 24), Board::addr(trap), "stacked PC is the UDIV");
    assert_eq!(b.read32(SHCSR) & 1 << 3, 1 << 3, "USGFAULTACT");
    assert_eq!(b.cpu.reg(Reg::Xpsr) & 0x1FF, 6);
}

#[test]
fn unaligned_single_accesses_work_until_unalign_trp() {
    // A3.2.1: unaligned LDR/LDRH/STR/STRH are allowed; LDM/LDRD/LDREX always fault; with
    // CCR.UNALIGN_TRP every unaligned access faults (UsageFault UNALIGNED).
    let mut a = Asm::new();
    a.mov32(0, SRAM + 0x101).mov32(1, 0x4433_2211);
    a.str(1, 0, 0); // str r1, [r0] at an odd address
    a.ldr(2, 0, 0);
    a.w(0xF8B0, 0x3002); // ldrh.w r3, [r0, #2] (odd address) -> 0x4433
    let ldm = a.here();
    a.w(0xE890, 0x0030); // ldm.w r0, {r4, r5}: UNALIGNED
    a.b_self();
    let hf = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(3, hf)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!((r(&b, 2), r(&b, 3)), (0x4433_2211, 0x4433));
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(hf));
    assert_eq!(b.read32(CFSR), 1 << 24, "UNALIGNED");
    assert_eq!(b.read32(b.cpu.reg(Reg::Msp) + 24), Board::addr(ldm));

    let mut a = Asm::new();
    str_to(&mut a, CCR, 1 << 3 | 1 << 9);
    a.mov32(0, SRAM + 0x102);
    let ldr = a.here();
    a.ldr(2, 0, 0);
    a.b_self();
    let hf = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(3, hf)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(hf));
    assert_eq!(b.read32(b.cpu.reg(Reg::Msp) + 24), Board::addr(ldr));
    assert_eq!(b.read32(CFSR), 1 << 24);
}

#[test]
fn bus_fault_routing_status_and_escalation() {
    // B1.5.16, B3.2.15: a precise data bus error sets PRECISERR and BFARVALID with BFAR = the
    // address; BusFault if enabled and able to preempt, else HardFault with HFSR.FORCED; a
    // fault in HardFault locks up (B1.5.15).
    for enabled in [true, false] {
        let mut a = Asm::new();
        if enabled {
            str_to(&mut a, SHCSR, 1 << 17);
        }
        a.mov32(0, 0x6000_0000);
        a.ldr(1, 0, 0);
        a.b_self();
        let bf = a.here();
        a.b_self();
        let hf = a.here();
        a.ldr(1, 0, 0); // faults again inside HardFault: lockup
        a.b_self();
        let mut b = Board::with_config(m3());
        b.load(&a.finish(), &[(3, hf), (5, bf)]);
        b.reset();
        let stop = b.cpu.run(&mut b.sys, 10_000);
        assert_eq!(b.read32(CFSR), 1 << 9 | 1 << 15);
        assert_eq!(b.read32(BFAR), 0x6000_0000);
        if enabled {
            assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(bf));
            assert_eq!(b.read32(HFSR), 0);
        } else {
            assert!(matches!(stop, Stop::Lockup { .. }), "{stop:?}");
            assert_eq!(b.cpu.run_state(), RunState::Lockup);
            assert_eq!(b.read32(HFSR), 1 << 30, "FORCED");
        }
    }
}

#[test]
fn configurable_fault_priority_below_execution_priority_escalates() {
    // B1.5.16: an enabled UsageFault whose priority cannot preempt the current handler
    // escalates to HardFault. SHPR1 sets UsageFault to 0xE0; the SVCall handler runs at 0x00.
    let mut a = Asm::new();
    str_to(&mut a, SHCSR, 1 << 18);
    str_to(&mut a, SHPR1, 0xE0 << 16);
    a.hw(op::svc(0));
    a.b_self();
    let svc = a.here();
    a.hw(0xDE01); // udf #1 in the SVCall handler
    a.b_self();
    let hf = a.here();
    a.b_self();
    let uf = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(3, hf), (6, uf), (11, svc)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(hf));
    assert_eq!(b.read32(SHPR1), 0xE0 << 16);
    assert_eq!(b.read32(CFSR), 1 << 16);
    assert_eq!(b.read32(HFSR), 1 << 30);
}

#[test]
fn nocp_for_floating_point_instructions() {
    // B3.2.15 NOCP: the FPU is not modelled, CPACR reads as zero, VMOV faults.
    let mut a = Asm::new();
    str_to(&mut a, SHCSR, 1 << 18);
    str_to(&mut a, 0xE000_ED88, 0xF << 20); // CPACR: CP10/CP11 full access (ignored)
    a.mov32(6, 0xE000_ED88).ldr(5, 6, 0);
    a.w(0xEE10, 0x0A10); // vmov r0, s0
    a.b_self();
    let uf = a.here();
    a.b_self();
    let mut b = Board::with_config(m4());
    b.load(&a.finish(), &[(6, uf)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(uf));
    assert_eq!(r(&b, 5), 0, "CPACR RAZ/WI without coprocessors");
    assert_eq!(b.read32(CFSR), 1 << 19);
}

/// IRQ0 (priority 0x40) and IRQ1 (priority 0x80) handlers log their number in r10/r11; the main
/// program pends both under a BASEPRI of `basepri`.
fn basepri_program(basepri: u32, use_max: bool, faultmask: bool) -> Board {
    let mut a = Asm::new();
    str_to(&mut a, IPR, 0x80 << 8 | 0x40);
    str_to(&mut a, ISER, 3);
    a.mov32(0, basepri);
    a.msr(if use_max { 18 } else { 17 }, 0);
    if faultmask {
        a.mov32(0, 1).msr(19, 0);
    }
    str_to(&mut a, ISPR, 3);
    a.hw(op::NOP).hw(op::NOP);
    a.mrs(9, 17); // r9 = BASEPRI
    a.b_self();
    let irq0 = a.here();
    a.movs(0, 1);
    a.hw(0x4682); // mov r10, r0
    a.bx(14);
    let irq1 = a.here();
    a.movs(0, 1);
    a.hw(0x4683); // mov r11, r0
    a.bx(14);
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(16, irq0), (17, irq1)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    b
}

#[test]
fn basepri_masks_by_group_priority_and_faultmask_masks_all() {
    // B1.4.3 / B1.5.4: BASEPRI = 0x80 masks priority 0x80 and lower, not 0x40.
    let b = basepri_program(0x80, false, false);
    assert_eq!((r(&b, 10), r(&b, 11), r(&b, 9)), (1, 0, 0x80));
    // BASEPRI_MAX only raises the masking level: from 0 it sets it.
    let b = basepri_program(0x40, true, false);
    assert_eq!((r(&b, 10), r(&b, 11), r(&b, 9)), (0, 0, 0x40));
    // BASEPRI = 0 masks nothing.
    let b = basepri_program(0, false, false);
    assert_eq!((r(&b, 10), r(&b, 11)), (1, 1));
    // FAULTMASK raises the execution priority to -1.
    let b = basepri_program(0, false, true);
    assert_eq!((r(&b, 10), r(&b, 11)), (0, 0));
    assert!(b.cpu.snapshot().faultmask);
}

#[test]
fn prigroup_splits_group_and_subpriority() {
    // B1.5.4: with PRIGROUP = 5 (group = bits[7:6]) priorities 0x40 and 0x60 share a group:
    // IRQ1 (0x40, higher subpriority) does not preempt IRQ0's handler (0x60). With PRIGROUP = 0
    // it does. The IRQ0 handler pends IRQ1 and records whether it ran meanwhile (r11 -> r10).
    for (prigroup, preempts) in [(5u32, false), (0, true)] {
        let mut a = Asm::new();
        str_to(&mut a, AIRCR, 0x05FA_0000 | prigroup << 8);
        str_to(&mut a, IPR, 0x40 << 8 | 0x60);
        str_to(&mut a, ISER, 3);
        str_to(&mut a, ISPR, 1);
        a.hw(op::NOP);
        a.b_self();
        let irq0 = a.here();
        str_to(&mut a, ISPR, 2);
        a.hw(op::NOP).hw(op::NOP);
        a.hw(0x46DA); // mov r10, r11
        a.bx(14);
        let irq1 = a.here();
        a.movs(0, 1);
        a.hw(0x4683); // mov r11, r0
        a.bx(14);
        let mut b = Board::with_config(m3());
        b.load(&a.finish(), &[(16, irq0), (17, irq1)]);
        b.reset();
        b.cpu.run(&mut b.sys, 10_000);
        assert_eq!(b.read32(AIRCR) >> 8 & 7, prigroup);
        assert_eq!(r(&b, 10), preempts as u32, "PRIGROUP {prigroup}");
        assert_eq!(r(&b, 11), 1, "IRQ1 ran in the end");
    }
}

#[test]
fn dwt_cyccnt_counts_core_cycles_when_enabled() {
    // C1.8.6: CYCCNT counts with DWT_CTRL.CYCCNTENA and DEMCR.TRCENA; it holds its value
    // otherwise.
    let mut a = Asm::new();
    str_to(&mut a, DEMCR, 1 << 24);
    str_to(&mut a, DWT_CYCCNT, 0);
    str_to(&mut a, DWT_CTRL, 1);
    a.mov32(6, DWT_CYCCNT);
    a.ldr(1, 6, 0);
    for _ in 0..10 {
        a.hw(op::NOP);
    }
    a.ldr(2, 6, 0);
    let b = run(m3(), &mut a);
    // Ten NOPs and the LDR's own cycles lie between the two reads.
    let delta = r(&b, 2) - r(&b, 1);
    assert!((11..=14).contains(&delta), "{delta}");
    let mut b = b;
    let before = b.read32(DWT_CYCCNT);
    b.write32(DWT_CTRL, 0);
    b.cpu.skip_cycles(1000);
    assert_eq!(b.read32(DWT_CYCCNT), before, "stopped counter holds");
}

#[test]
fn exclusives_succeed_once_and_clrex_and_exceptions_clear_the_monitor() {
    // A3.4: STREX succeeds (0) only with the monitor open on the address; CLREX closes it.
    let mut a = Asm::new();
    a.mov32(0, SRAM + 0x200).mov32(1, 0xAB);
    a.w(0xE850, 0x2F00); // ldrex r2, [r0]
    a.w(0xE840, 0x1300); // strex r3, r1, [r0] -> 0
    a.w(0xE840, 0x1400); // strex r4, r1, [r0] -> 1 (monitor closed)
    a.w(0xE850, 0x2F00);
    a.w(0xF3BF, 0x8F2F); // clrex
    a.w(0xE840, 0x1500); // strex r5 -> 1
    a.w(0xE850, 0x2F00);
    a.hw(op::svc(0)); // exception entry clears the monitor (B1.5.6)
    a.w(0xE840, 0x1700); // strex r7 -> 1
    a.b_self();
    let svc = a.here();
    a.bx(14);
    let end = svc - 1;
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(11, svc)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(end));
    assert_eq!((r(&b, 3), r(&b, 4), r(&b, 5), r(&b, 7)), (0, 1, 1, 1));
}

#[test]
fn fault_inside_an_it_block_stacks_itstate() {
    // B1.5.6: the stacked xPSR holds ITSTATE of the faulting instruction (EPSR.IT, B1.4.2).
    let mut a = Asm::new();
    a.mov32(0, 0x6000_0000);
    a.movs(1, 0); // Z = 1
    a.hw(0xBF04); // itt eq
    a.ldr(2, 0, 0); // faults (unmapped), second of... first instruction of the block
    a.movs(3, 1);
    a.b_self();
    let hf = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(3, hf)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(hf));
    let xpsr = b.read32(b.cpu.reg(Reg::Msp) + 28);
    let it = (xpsr >> 25 & 3) | (xpsr >> 10 & 0x3F) << 2;
    assert_eq!(it, 0x04, "ITT EQ: firstcond 0000, mask 0100 at the first instruction");
    assert_eq!(b.cpu.reg(Reg::Xpsr) & 0x0600_FC00, 0, "the handler runs outside the block");
}

#[test]
fn basepri_and_faultmask_through_msr_mrs_and_the_debugger() {
    let mut a = Asm::new();
    a.mov32(0, 0xFF);
    a.msr(17, 0); // BASEPRI = 0xF0 (4 implemented bits)
    a.mrs(1, 17);
    a.mov32(0, 0x20);
    a.msr(18, 0); // BASEPRI_MAX: 0x20 < 0xF0 -> BASEPRI = 0x20
    a.mov32(0, 0x80);
    a.msr(18, 0); // 0x80 > 0x20: ignored
    a.mrs(2, 18);
    a.hw(0xB661); // cpsie f: FAULTMASK stays clear
    a.hw(0xB671); // cpsid f: FAULTMASK = 1
    a.mrs(3, 19);
    let b = run(m3(), &mut a);
    assert_eq!((r(&b, 1), r(&b, 2), r(&b, 3)), (0xF0, 0x20, 1));
    // DCRSR's packed CONTROL/FAULTMASK/BASEPRI/PRIMASK (C1.6.3).
    assert_eq!(b.cpu.reg(Reg::SpecialPacked), 1 << 16 | 0x20 << 8);
}

#[test]
fn exception_return_clears_faultmask_and_icsr_shows_rettobase() {
    // B1.5.8: returning from any exception but NMI clears FAULTMASK. B3.2.4 RETTOBASE.
    let mut a = Asm::new();
    a.hw(op::svc(0));
    a.mrs(1, 19); // FAULTMASK after the return
    a.b_self();
    let svc = a.here();
    a.hw(0xB671); // cpsid f
    a.mrs(8, 19); // r8, r9: not in the exception frame
    a.mov32(6, 0xE000_ED04).w(0xF8D6, 0x9000); // ldr.w r9, [r6] (ICSR)
    a.bx(14);
    let end = svc - 1;
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(11, svc)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(end));
    assert_eq!((r(&b, 1), r(&b, 8)), (0, 1));
    assert_eq!(r(&b, 9) & (1 << 11 | 0x1FF), 1 << 11 | 11, "RETTOBASE, VECTACTIVE = SVCall");
}

#[test]
fn demcr_vector_catch_halts_on_a_usage_fault() {
    // C1.6.5 VC_STATERR: halt on entry to a UsageFault for an undefined instruction.
    let mut a = Asm::new();
    str_to(&mut a, SHCSR, 1 << 18);
    a.hw(0xDE07); // udf #7
    a.b_self();
    let uf = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(6, uf)]);
    b.reset();
    b.write32(0xE000_EDF0, 0xA05F_0001); // C_DEBUGEN
    b.write32(DEMCR, 1 << 7);
    let stop = b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(stop, Stop::Halted(hil_cortex_m::HaltReason::VectorCatch));
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(uf), "halted before the handler's first instruction");
    assert_eq!(b.read32(0xE000_ED30) & 1 << 3, 1 << 3, "DFSR.VCATCH");
}

#[test]
fn dsp_cross_lane_dual_multiply_and_saturation_flags() {
    // r1 = 0x7FFF8000 (hi 32767, lo -32768), r2 = 0x00017FFF (hi 1, lo 32767).
    let mut a = Asm::new();
    a.mov32(1, 0x7FFF_8000).mov32(2, 0x0001_7FFF).mov32(0, 100).mov32(3, 0x4000_0000);
    a.mov32(4, 5).mov32(12, 0);
    a.w(0xFAA1, 0xF502); // sasx r5, r1, r2: lo -32768-1, hi 32767+32767 (A7.7.115)
    a.w(0xFAE1, 0xF642); // usax r6, r1, r2: lo 0x8000+1, hi 0x7FFF-0x7FFF; GE 0b1100 (A7.7.218)
    a.w(0xFAD1, 0xF762); // uhsub16 r7, r1, r2 (A7.7.200)
    a.w(0xFAA1, 0xF812); // qasx r8, r1, r2 (A7.7.102)
    a.w(0xFB41, 0x0902); // smlsd r9, r1, r2, r0 (A7.7.141)
    a.w(0xFB41, 0xFA12); // smusdx r10, r1, r2 (A7.7.152)
    a.w(0xFB61, 0x3B02); // smmls r11, r1, r2, r3 (A7.7.144)
    a.w(0xFBC1, 0x4C92); // smlalbt r4, r12, r1, r2 (A7.7.134)
    let b = run(m4(), &mut a);
    assert_eq!(r(&b, 5), 0xFFFE_7FFF);
    assert_eq!(r(&b, 6), 0x0000_8001);
    assert_eq!(b.cpu.reg(Reg::Xpsr) >> 16 & 0xF, 0b1100, "GE from USAX");
    assert_eq!(r(&b, 7), 0x3FFF_0000);
    assert_eq!(r(&b, 8), 0x7FFF_8000);
    assert_eq!(r(&b, 9), 0xC000_0065);
    assert_eq!(r(&b, 10), 0xC000_7FFF);
    assert_eq!(r(&b, 11), 0x3FFF_4001);
    assert_eq!((r(&b, 4), r(&b, 12)), (0xFFFF_8005, 0xFFFF_FFFF));
    assert_eq!(b.cpu.reg(Reg::Xpsr) & 1 << 27, 0, "no saturation: Q clear");

    let mut a = Asm::new();
    a.mov32(1, 0x7FFF_8000).mov32(2, 0x0001_7FFF).mov32(0, 0x7FFF_FFFF);
    a.w(0xFB12, 0x0502); // smlabb r5, r2, r2, r0: 32767^2 + 0x7FFFFFFF overflows: Q (A7.7.130)
    a.w(0xFA2F, 0xF692); // sxtb16 r6, r2, ror #8 (A7.7.181)
    a.w(0xFA3F, 0xF781); // uxtb16 r7, r1 (A7.7.224)
    let b = run(m4(), &mut a);
    assert_eq!(r(&b, 5), 0xBFFF_0000);
    assert_ne!(b.cpu.reg(Reg::Xpsr) & 1 << 27, 0, "Q set by the overflowing accumulate");
    assert_eq!((r(&b, 6), r(&b, 7)), (0x0000_007F, 0x00FF_0000));
}

#[test]
fn scs_byte_and_halfword_accesses_on_v7m() {
    // B3.4.3 / B3.2.10: NVIC_IPR and SHPR are byte-accessible on ARMv7-M (the cortex-m crate's
    // NVIC::set_priority writes bytes there); CFSR's parts are byte/halfword write-one-to-clear.
    let mut a = Asm::new();
    a.mov32(0, IPR + 1).mov32(1, 0xA5);
    a.hw(0x7001); // strb r1, [r0]: IRQ1 priority (implemented bits 0xA0)
    a.mov32(0, 0xE000_ED23).mov32(1, 0x50);
    a.hw(0x7001); // strb r1, [r0]: SysTick priority (SHPR3 byte 3)
    a.mov32(0, IPR).ldr(2, 0, 0);
    a.mov32(0, 0xE000_ED20).ldr(3, 0, 0);
    a.mov32(0, IPR + 1);
    a.hw(0x7804); // ldrb r4, [r0]
    let b = run(m3(), &mut a);
    assert_eq!(r(&b, 2), 0xA0 << 8);
    assert_eq!(r(&b, 3), 0x50 << 24);
    assert_eq!(r(&b, 4), 0xA0);
}

#[test]
fn interrupt_inside_an_it_block_resumes_the_block() {
    // B1.5.6/B1.5.8: an exception between two instructions of an IT block stacks ITSTATE in the
    // xPSR and the return restores it: the rest of the block still runs conditionally.
    let mut a = Asm::new();
    str_to(&mut a, ISER, 1);
    a.mov32(0, ISPR).movs(1, 1).movs(2, 0);
    a.movs(3, 0); // Z = 1
    a.hw(0xBF01); // itttt eq
    a.str(1, 0, 0); // streq: pends IRQ0, taken after this instruction
    a.adds(2, 1); // addeq r2, #1 (no flags inside IT)
    a.adds(2, 1);
    a.adds(2, 1);
    a.b_self();
    let irq = a.here();
    a.hw(0x4668); // mov r0, sp
    a.w(0xF8D0, 0x801C); // ldr.w r8, [r0, #28]: the stacked xPSR
    a.bx(14);
    let end = irq - 1;
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(16, irq)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(end));
    assert_eq!(r(&b, 2), 3, "the three ADDs after the interrupt ran");
    assert_ne!(b.cpu.reg(Reg::Xpsr) & 1 << 30, 0, "Z kept: no flag setting inside IT");
    let xpsr = r(&b, 8);
    let it = (xpsr >> 25 & 3) | (xpsr >> 10 & 0x3F) << 2;
    // ITTTT EQ = 0x01; after one instruction ITAdvance gives 0x02 (three left).
    assert_eq!(it, 0x02, "stacked ITSTATE {xpsr:#x}");
}

#[test]
fn debugger_steps_through_an_it_block() {
    // C1.5: each step retires one instruction; a failed condition is a step too.
    let mut a = Asm::new();
    a.movs(3, 0); // Z = 1
    a.hw(0xBF0C); // ite eq
    a.movs(1, 7); // moveq
    a.movs(1, 9); // movne (skipped)
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[]);
    b.reset();
    b.write32(0xE000_EDF0, 0xA05F_0003); // C_DEBUGEN | C_HALT
    let mut pcs = vec![];
    for _ in 0..5 {
        b.write32(0xE000_EDF0, 0xA05F_0005); // C_DEBUGEN | C_STEP
        b.cpu.run(&mut b.sys, b.cpu.cycles() + 100);
        pcs.push(b.cpu.reg(Reg::Pc) - Board::addr(0));
    }
    assert_eq!(pcs, [2, 4, 6, 8, 8]);
    assert_eq!(r(&b, 1), 7);
}

#[test]
fn fpb_version_2_breaks_on_any_halfword_address() {
    // C1.11: FP_CTRL.REV = 1; FP_COMPn = BPADDR[31:1] | BE; no code-region limit (SRAM here).
    let mut a = Asm::new();
    a.movs(0, 1).movs(0, 2).movs(0, 3).b_self();
    let mut b = Board::with_config(CpuConfig { fpb_rev2: true, ..m4() });
    // Run from SRAM: copy the code there and jump to it.
    let code = a.finish();
    let bytes: Vec<u8> = code.iter().flat_map(|h| h.to_le_bytes()).collect();
    b.sys.memory.poke(SRAM + 0x100, &bytes).unwrap();
    b.load(&[op::NOP], &[]);
    b.reset();
    b.cpu.set_reg(Reg::Pc, SRAM + 0x100);
    let ctrl = b.read32(0xE000_2000);
    assert_eq!((ctrl >> 28, ctrl >> 4 & 0xF), (1, 6), "REV 1, six comparators");
    b.write32(0xE000_2000, 3);
    b.write32(0xE000_2008, (SRAM + 0x104) | 1);
    b.write32(0xE000_EDF0, 0xA05F_0001);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(hil_cortex_m::HaltReason::Breakpoint));
    assert_eq!((b.cpu.reg(Reg::Pc), r(&b, 0)), (SRAM + 0x104, 2));
}

#[test]
fn bkpt_with_mon_en_enters_debugmonitor_at_the_breakpoint() {
    // C1.4, C1.6.5: without halting debug, DEMCR.MON_EN turns BKPT into a DebugMonitor
    // exception whose return address is the BKPT itself; DFSR.BKPT is set.
    let mut a = Asm::new();
    a.movs(0, 1);
    let bkpt = a.here();
    a.hw(op::BKPT);
    a.b_self();
    let mon = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(12, mon)]);
    b.reset();
    b.write32(DEMCR, 1 << 16);
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(mon));
    assert_eq!(b.cpu.reg(Reg::Xpsr) & 0x1FF, 12);
    assert_eq!(b.read32(b.cpu.reg(Reg::Msp) + 24), Board::addr(bkpt));
    assert_eq!(b.read32(0xE000_ED30) & 2, 2);
}

#[test]
fn dwt_data_watchpoint_halts_after_the_access() {
    // C1.8.10-12: DWT_COMP0 = address, MASK0 = 2 (word), FUNCTION0 = 0b0110 (write): the store
    // to that word halts the core after it retires (DFSR.DWTTRAP, MATCHED); reads do not.
    let mut a = Asm::new();
    a.mov32(0, SRAM + 0x40).mov32(1, 0x55);
    a.ldr(2, 0, 0); // read: no match for a write watchpoint
    a.hw(0x7081); // strb r1, [r0, #2]: inside the watched word
    let after = a.here();
    a.movs(3, 1);
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[]);
    b.reset();
    b.write32(0xE000_EDF0, 0xA05F_0001);
    b.write32(DEMCR, 1 << 24);
    assert_eq!(b.read32(DWT_CTRL) >> 28, 4, "NUMCOMP");
    b.write32(0xE000_1020, SRAM + 0x40);
    b.write32(0xE000_1024, 2);
    b.write32(0xE000_1028, 0b0110);
    assert_eq!(b.cpu.run(&mut b.sys, 10_000), Stop::Halted(hil_cortex_m::HaltReason::Watchpoint));
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(after));
    assert_eq!(b.read32(0xE000_ED30) & 1 << 2, 1 << 2, "DFSR.DWTTRAP");
    assert_eq!(b.read32(0xE000_1028) & 1 << 24, 1 << 24, "MATCHED");
    assert_eq!(b.read32(0xE000_1028) & 1 << 24, 0, "MATCHED clears on read");
    // Disarmed, the program runs on.
    b.write32(0xE000_1028, 0);
    b.write32(0xE000_EDF0, 0xA05F_0001);
    b.cpu.run(&mut b.sys, b.cpu.cycles() + 1000);
    assert_eq!(r(&b, 3), 1);
}

#[test]
fn bit_band_aliases_read_and_write_single_bits() {
    // Cortex-M3 TRM 3.7 / PM0056 2.2.5: alias = 0x22000000 + byte_offset * 32 + bit * 4.
    let mut a = Asm::new();
    a.mov32(0, SRAM + 0x10).mov32(1, 0x0000_0F00);
    a.str(1, 0, 0);
    a.mov32(2, 0x2200_0000 + 0x10 * 32 + 9 * 4); // bit 9 of the word at SRAM + 0x10
    a.ldr(3, 2, 0); // 1
    a.mov32(4, 0x2200_0000 + 0x11 * 32 + 5 * 4); // bit 5 of the byte at SRAM + 0x11 (bit 13)
    a.movs(5, 1);
    a.str(5, 4, 0); // set bit 13
    a.mov32(4, 0x2200_0000 + 0x10 * 32 + 8 * 4);
    a.movs(5, 0);
    a.str(5, 4, 0); // clear bit 8
    a.ldr(6, 0, 0);
    let b = run(m3(), &mut a);
    assert_eq!(r(&b, 3), 1);
    assert_eq!(r(&b, 6), 0x0000_2E00);

    // Without the option (the M0+) the alias is unmapped: a BusFault (here HardFault).
    let mut a = Asm::new();
    a.mov32(2, 0x2200_0000).ldr(3, 2, 0).b_self();
    let hf = a.here();
    a.b_self();
    let mut b = Board::with_config(CpuConfig { bitband: false, ..m3() });
    b.load(&a.finish(), &[(3, hf)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(hf));
}

/// BL from halfword index `at` to halfword index `to` (A7.7.18: I1 = NOT(J1 XOR S)).
fn bl(code: &mut [u16], at: usize, to: usize) {
    let imm = ((to as i32 - at as i32 - 2) * 2) as u32;
    let s = (imm >> 24) & 1;
    let (i1, i2) = ((imm >> 23) & 1, (imm >> 22) & 1);
    code[at] = (0xF000 | s << 10 | (imm >> 12) & 0x3FF) as u16;
    code[at + 1] = (0xD000 | (!(i1 ^ s) & 1) << 13 | (!(i2 ^ s) & 1) << 11 | (imm >> 1) & 0x7FF) as u16;
}

#[test]
fn loads_to_the_pc_interwork_and_return_from_exceptions() {
    // A7.7.41 POP.W {.., pc} and A7.7.43 LDR PC, [SP], #4: LoadWritePC (BXWritePC), which in
    // Handler mode with EXC_RETURN returns from the exception (B1.5.8); BXEQ LR as the last
    // instruction of an IT block.
    let mut a = Asm::new();
    let call1 = a.here();
    a.w(0, 0); // bl f1
    let call2 = a.here();
    a.w(0, 0); // bl f2
    a.hw(op::svc(0));
    let end = a.here();
    a.b_self();
    let f1 = a.here();
    a.w(0xE92D, 0x4010); // push.w {r4, lr}
    a.movs(5, 7);
    a.w(0xE8BD, 0x8010); // pop.w {r4, pc}
    let f2 = a.here();
    a.movs(7, 3).movs(0, 0); // Z = 1
    a.hw(0xBF08); // it eq
    a.bx(14); // bxeq lr
    a.movs(7, 4);
    a.b_self();
    let svc = a.here();
    a.w(0xF84D, 0xED04); // str.w lr, [sp, #-4]!
    a.movs(6, 9);
    a.w(0xF85D, 0xFB04); // ldr.w pc, [sp], #4
    let mut code = a.finish();
    bl(&mut code, call1, f1);
    bl(&mut code, call2, f2);
    let mut b = Board::with_config(m3());
    b.load(&code, &[(11, svc)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(end), "{:?}", b.cpu.last_fault());
    assert_eq!((r(&b, 5), r(&b, 6), r(&b, 7)), (7, 9, 3));
    assert_eq!(b.cpu.reg(Reg::Xpsr) & 0x1FF, 0, "back in Thread mode");
    assert_eq!(b.cpu.reg(Reg::Sp), SRAM + common::SRAM_LEN, "stack balanced");
}

#[test]
fn bkpt_is_unconditional_inside_an_it_block() {
    // A7.7.17: BKPT executes even when the IT condition fails.
    let mut a = Asm::new();
    a.movs(0, 1); // Z = 0
    a.hw(0xBF08); // it eq (fails)
    let bkpt = a.here();
    a.hw(op::BKPT);
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[]);
    b.reset();
    b.write32(0xE000_EDF0, 0xA05F_0001);
    assert_eq!(b.cpu.run(&mut b.sys, 1000), Stop::Halted(hil_cortex_m::HaltReason::Breakpoint));
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(bkpt));
    assert_ne!(b.cpu.reg(Reg::Xpsr) & 0x0600_FC00, 0, "still in the IT block");
}

#[test]
fn msr_apsr_masks_select_flags_and_ge() {
    // B5.2.3: MSR APSR_g writes GE only (DSP), APSR_nzcvq writes N, Z, C, V, Q only.
    let mut a = Asm::new();
    a.mov32(0, 0xF805_0000); // N Z C V Q set, GE = 0b0101
    a.w(0xF380, 0x8400); // msr APSR_g, r0
    a.mrs(1, 0);
    a.mov32(0, 0x5800_0000); // Z V Q
    a.w(0xF380, 0x8800); // msr APSR_nzcvq, r0
    a.mrs(2, 0);
    a.mov32(3, 0x1122_3344).mov32(4, 0xAABB_CCDD);
    a.w(0xFAA3, 0xF584); // sel r5, r3, r4 with GE = 0b0101
    let b = run(m4(), &mut a);
    assert_eq!(r(&b, 1), 0x0005_0000);
    assert_eq!(r(&b, 2), 0x5805_0000);
    assert_eq!(r(&b, 5), 0xAA22_CC44);
}

#[test]
fn mon_pend_takes_debugmonitor_only_when_enabled() {
    // C1.6.5: DEMCR.MON_PEND pends DebugMonitor; MON_EN enables it.
    let mut a = Asm::new();
    a.hw(op::NOP);
    let idle = a.here();
    a.b_self();
    let mon = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(12, mon)]);
    b.reset();
    b.write32(DEMCR, 1 << 17);
    b.cpu.run(&mut b.sys, 1000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(idle), "pending but disabled");
    assert_eq!(b.read32(DEMCR) & 1 << 17, 1 << 17);
    b.write32(DEMCR, 1 << 16 | 1 << 17);
    b.cpu.run(&mut b.sys, b.cpu.cycles() + 1000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(mon));
}

#[test]
fn random_code_never_panics_the_core() {
    // Whatever the encodings (UNDEFINED, UNPREDICTABLE, coprocessor, straddling 32-bit ones),
    // the core raises faults or locks up; it never panics. Random registers point anywhere.
    use rand::{Rng, SeedableRng};
    let mut retired = 0;
    for cfg in [CpuConfig::cortex_m0plus(32), m3(), m4()] {
        for seed in 0..60u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let code: Vec<u16> = (0..2048).map(|_| rng.random()).collect();
            let mut b = Board::with_config(cfg.clone());
            b.load(&code, &[]);
            // Every vector but reset points into the random code too.
            let image: Vec<u8> =
                (2..48u32).flat_map(|_| (Board::addr(rng.random_range(0..2048)) | 1).to_le_bytes()).collect();
            b.load_flash(8, &image);
            b.reset();
            for n in 0..13u8 {
                let v = match rng.random_range(0..3) {
                    0 => rng.random(),
                    1 => SRAM + rng.random_range(0..common::SRAM_LEN),
                    _ => rng.random_range(0..64),
                };
                b.cpu.set_reg(Reg::from_regsel(n as u32).unwrap(), v);
            }
            for _ in 0..20 {
                let until = b.cpu.cycles() + 2_000;
                match b.cpu.run(&mut b.sys, until) {
                    Stop::ResetRequested(_) => b.cpu.system_reset(&mut b.sys),
                    Stop::Lockup { .. } | Stop::Halted(_) => break,
                    _ => {}
                }
            }
            retired += b.cpu.instructions();
        }
    }
    assert!(retired > 50_000, "the random programs ran: {retired} instructions");
}

/// `ldr r2, =addr; ldr r3, [r2]; str r3, [r0]`: log a word (r0 = TESTDEV).
fn log_word(a: &mut Asm, addr: u32) {
    a.ldr_const(2, addr).ldr(3, 2, 0).str(3, 0, 0);
}

/// Patch the conditional branch at `at` (B<cond> T1) to go to halfword index `to`.
fn patch_bcond(code: &mut [u16], at: usize, to: usize) {
    code[at] |= ((to as i32 - at as i32 - 2) as u16) & 0xFF;
}

/// Boots twice on ARMv7-M: the first boot sets core state (VTOR, an NVIC enable, SHPR2, the
/// MPU, r4) and writes AIRCR.VECTRESET; the second logs that state and exits 0x77. Only 16-bit
/// encodings, so ARMv6-M runs it too (and ignores VECTRESET: exit 0x66).
fn vectreset_program() -> Vec<u16> {
    const VTOR: u32 = 0xE000_ED08;
    const SHPR2: u32 = 0xE000_ED1C;
    const MPU_CTRL: u32 = 0xE000_ED94;
    let mut a = Asm::new();
    a.ldr_const(0, common::TESTDEV);
    a.ldr(1, 0, 0).str(1, 0, 0); // log the log's length: 0 on the first boot
    a.hw(0x2901); // cmp r1, #1
    let bge = a.here();
    a.hw(0xDA00);
    a.ldr_const(2, VTOR).ldr_const(3, 0x0800_0000).str(3, 2, 0);
    a.ldr_const(2, ISER).movs(3, 1).str(3, 2, 0);
    a.ldr_const(2, SHPR2).ldr_const(3, 0x4000_0000).str(3, 2, 0);
    a.ldr_const(2, MPU_CTRL).movs(3, 5).str(3, 2, 0); // ENABLE | PRIVDEFENA
    a.movs(4, 0x5A);
    a.ldr_const(2, AIRCR).ldr_const(3, 0x05FA_0001).str(3, 2, 0);
    a.movs(1, 0x66).str(1, 0, 1); // EXIT
    a.b_self();
    let second = a.here();
    a.str(4, 0, 0);
    for addr in [VTOR, ISER, SHPR2, MPU_CTRL] {
        log_word(&mut a, addr);
    }
    a.movs(1, 0x77).str(1, 0, 1);
    a.b_self();
    let mut code = a.finish();
    patch_bcond(&mut code, bge, second);
    code
}

#[test]
fn vectreset_resets_the_core_and_leaves_the_devices_alone() {
    // ARMv7-M B3.2.6 AIRCR.VECTRESET: a local reset of the core (registers, NVIC, SCB, MPU)
    // that the board does not see (no ResetRequested; TESTDEV keeps its log); the core boots
    // again from the vector table. ARMv6-M has no VECTRESET: the write changes nothing.
    let mut b = Board::with_config(m3());
    b.load(&vectreset_program(), &[]);
    b.reset();
    let _ = b.read32(0xE000_EDF0); // consume S_RESET_ST from power-on
    let (exit, stops) = b.run_to_exit(100_000);
    assert_eq!(exit, Some(0x77));
    assert!(stops.is_empty(), "the board saw {stops:?}");
    // log: length at first boot (0), at second boot (1), then r4, VTOR, ISER, SHPR2, MPU_CTRL.
    assert_eq!(b.dev().log, vec![0, 1, 0, 0, 0, 0, 0]);
    assert_ne!(b.read32(0xE000_EDF0) & 1 << 25, 0, "DHCSR.S_RESET_ST");

    let mut b = Board::with_config(CpuConfig::cortex_m0plus(32));
    b.load(&vectreset_program(), &[]);
    b.reset();
    let (exit, stops) = b.run_to_exit(100_000);
    assert_eq!((exit, stops), (Some(0x66), vec![]));
    assert_eq!(b.dev().log, vec![0]);
    assert_eq!(b.read32(0xE000_ED08), 0x0800_0000, "VTOR kept");
}

#[test]
fn vectreset_from_the_debugger_with_vector_catch() {
    // B3.2.6 (VECTRESET is meant for the debugger, in Debug state) and C1.6.5 VC_CORERESET: the
    // local reset happens when the write completes; the core halts on the reset vector with
    // S_RESET_ST set; devices and the board are untouched.
    let mut a = Asm::new();
    a.ldr_const(0, common::TESTDEV).movs(1, 9).str(1, 0, 0);
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[]);
    b.reset();
    b.cpu.run(&mut b.sys, 1_000);
    b.write32(0xE000_EDF0, 0xA05F_0003);
    b.write32(DEMCR, 1);
    b.cpu.set_reg(Reg::R4, 0x1234);
    b.write32(ISER, 1);
    let _ = b.read32(0xE000_EDF0);
    b.write32(AIRCR, 0x05FA_0001);
    assert_eq!(b.cpu.run_state(), RunState::Halted(hil_cortex_m::HaltReason::VectorCatch));
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(0));
    assert_eq!(r(&b, 4), 0);
    assert_eq!(b.read32(ISER), 0);
    assert_ne!(b.read32(0xE000_EDF0) & 1 << 25, 0, "S_RESET_ST");
    assert_eq!(b.cpu.take_reset_request(), None, "local to the core");
    assert_eq!(b.dev().log, vec![9]);
}

/// SVC into a handler that logs SHCSR, writes `value` (and then `restore`, if any), logs it
/// again and returns to Thread mode.
fn shcsr_program(value: u32, restore: Option<u32>) -> (Board, usize, usize, usize) {
    let mut a = Asm::new();
    str_to(&mut a, SHCSR, 1 << 18); // USGFAULTENA
    // SVCall, PendSV and SysTick below UsageFault, so that UsageFault preempts them.
    str_to(&mut a, 0xE000_ED1C, 0x80 << 24);
    str_to(&mut a, 0xE000_ED20, 0x80 << 24 | 0x80 << 16);
    a.hw(op::svc(0));
    let after = a.here();
    a.b_self();
    let svc = a.here();
    a.mov32(0, common::TESTDEV).mov32(6, SHCSR);
    a.ldr(1, 6, 0).str(1, 0, 0);
    a.mov32(7, value).str(7, 6, 0);
    a.ldr(1, 6, 0).str(1, 0, 0);
    if let Some(v) = restore {
        a.mov32(7, v).str(7, 6, 0);
    }
    let ret = a.here();
    a.bx(14);
    let uf = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(6, uf), (11, svc)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    (b, after, ret, uf)
}

#[test]
fn shcsr_active_bits_are_writable_and_decide_exception_return() {
    // B3.2.13: SHCSR's active bits read back what software writes; B1.5.8: an exception return
    // to Thread mode with another exception active (PENDSVACT set) or of an exception that is no
    // longer active (SVCALLACT cleared) is an INVPC UsageFault at the returning BX.
    const SVCALLACT: u32 = 1 << 7;
    const PENDSVACT: u32 = 1 << 10;
    const SYSTICKACT: u32 = 1 << 11;
    const ENA: u32 = 1 << 18;
    for (value, restore, ok) in [
        (ENA | SVCALLACT | PENDSVACT, None, false),
        (ENA, None, false),
        (ENA | SVCALLACT | PENDSVACT | SYSTICKACT, Some(ENA | SVCALLACT), true),
    ] {
        let (mut b, after, ret, uf) = shcsr_program(value, restore);
        assert_eq!(b.dev().log, vec![ENA | SVCALLACT, value], "{value:#x}");
        if ok {
            assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(after));
            assert_eq!(b.read32(SHCSR), ENA);
        } else {
            assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(uf), "{value:#x}");
            assert_eq!(b.read32(CFSR), 1 << 18, "INVPC");
            let sp = b.cpu.reg(Reg::Msp);
            assert_eq!(b.read32(sp + 24), Board::addr(ret));
        }
    }
}

#[test]
fn shcsr_active_bit_raises_the_execution_priority() {
    // B1.5.4 with B3.2.13: a SYSTICKACT set by software makes SysTick's priority part of the
    // execution priority: a pending PendSV of lower priority no longer preempts Thread mode.
    let mut a = Asm::new();
    str_to(&mut a, 0xE000_ED20, 0x40 << 24 | 0x80 << 16); // SysTick 0x40, PendSV 0x80
    str_to(&mut a, SHCSR, 1 << 11);
    str_to(&mut a, 0xE000_ED04, 1 << 28); // PENDSVSET
    a.hw(op::NOP);
    let end = a.here();
    a.b_self();
    let pendsv = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[(14, pendsv)]);
    b.reset();
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.cpu.reg(Reg::Pc), Board::addr(end));
    assert_ne!(b.read32(0xE000_ED04) & 1 << 28, 0, "PendSV still pending");
}

#[test]
fn fpb_v1_remap_substitutes_the_instruction_word_from_sram() {
    // C1.11.4/C1.11.5 (FPB version 1, Cortex-M3): FP_REMAP.RMPSPT = 1; a comparator with
    // REPLACE = 0b00 makes the fetch of its word read FP_REMAP.REMAP + 4n instead. The
    // program is `movs r0, #1; movs r1, #1; b .`; the remap word holds `movs r0, #2; movs r1, #3`.
    const FP_CTRL: u32 = 0xE000_2000;
    const FP_REMAP: u32 = 0xE000_2004;
    const FP_COMP1: u32 = 0xE000_200C;
    let mut a = Asm::new();
    a.movs(0, 1).movs(1, 1);
    let end = a.here();
    a.b_self();
    let mut b = Board::with_config(m3());
    b.load(&a.finish(), &[]);
    b.reset();
    b.write32(FP_REMAP, 0x2000_0400);
    assert_eq!(b.read32(FP_REMAP), 1 << 29 | 0x400, "RMPSPT and REMAP[28:5]");
    b.write32(0x2000_0404, 0x2103_2002); // the table entry for comparator 1
    b.write32(FP_COMP1, Board::addr(0) | 1);
    b.write32(FP_CTRL, 3);
    b.cpu.run(&mut b.sys, 1_000);
    assert_eq!((r(&b, 0), r(&b, 1), b.cpu.reg(Reg::Pc)), (2, 3, Board::addr(end)));
    // The table is read at every fetch: a new entry takes effect after a system reset (which
    // keeps the FPB, a debug component).
    b.write32(0x2000_0404, 0x2105_2004);
    b.cpu.system_reset(&mut b.sys);
    b.cpu.run(&mut b.sys, b.cpu.cycles() + 1_000);
    assert_eq!((r(&b, 0), r(&b, 1)), (4, 5));
    // FPB disabled: the flash instructions run.
    b.write32(FP_CTRL, 2);
    b.cpu.system_reset(&mut b.sys);
    b.cpu.run(&mut b.sys, b.cpu.cycles() + 1_000);
    assert_eq!((r(&b, 0), r(&b, 1)), (1, 1));

    // FPB version 2 and the ARMv6-M BPU: no remapping, FP_REMAP reads zero.
    let mut cfg = m3();
    cfg.fpb_rev2 = true;
    for cfg in [cfg, CpuConfig::cortex_m0plus(32)] {
        let mut b = Board::with_config(cfg);
        b.reset();
        b.write32(FP_REMAP, 0x2000_0400);
        assert_eq!(b.read32(FP_REMAP), 0);
    }
}
