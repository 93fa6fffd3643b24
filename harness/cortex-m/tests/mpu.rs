//! The ARMv7-M PMSAv7 MPU (DDI0403E B3.5) and the default map's execute-never regions (B3.1).
//! Expected values are worked out from the ARM pseudocode (ValidateAddress, CheckPermission);
//! the section is cited per case.

mod common;

use common::{Asm, Board, SRAM, TESTDEV, op, reg};
use hil_cortex_m::{CpuConfig, Reg, RunState, Stop};

const SHPR2: u32 = 0xE000_ED1C;
const SHCSR: u32 = 0xE000_ED24;
const CFSR: u32 = 0xE000_ED28;
const HFSR: u32 = 0xE000_ED2C;
const MMFAR: u32 = 0xE000_ED34;
const BFAR: u32 = 0xE000_ED38;
const MPU_TYPE: u32 = 0xE000_ED90;
const MPU_CTRL: u32 = 0xE000_ED94;
const MPU_RNR: u32 = 0xE000_ED98;
const MPU_RBAR: u32 = 0xE000_ED9C;
const MPU_RASR: u32 = 0xE000_EDA0;
const MPU_RBAR_A1: u32 = 0xE000_EDA4;
const MPU_RASR_A2: u32 = 0xE000_EDB0;

/// MMFSR bits (B3.2.15).
const IACCVIOL: u32 = 1 << 0;
const DACCVIOL: u32 = 1 << 1;
const MUNSTKERR: u32 = 1 << 3;
const MSTKERR: u32 = 1 << 4;
const MMARVALID: u32 = 1 << 7;
const IBUSERR: u32 = 1 << 8;
const FORCED: u32 = 1 << 30;
const MEMFAULTENA: u32 = 1 << 16;

/// MPU_CTRL bits (B3.5.6).
const ENABLE: u32 = 1;
const HFNMIENA: u32 = 2;
const PRIVDEFENA: u32 = 4;

/// RASR (B3.5.9): AP[26:24], SIZE[5:1] (region of 2^(SIZE+1) bytes), ENABLE.
const fn rasr(ap: u32, size: u32) -> u32 {
    ap << 24 | size << 1 | 1
}
const XN: u32 = 1 << 28;
const AP_NONE: u32 = 0b000;
const AP_PRIV_RW: u32 = 0b001;
const AP_FULL: u32 = 0b011;
const AP_RO: u32 = 0b110;

/// `str r7, [r6]` with r6 = `addr`, r7 = `value`.
fn str_to(a: &mut Asm, addr: u32, value: u32) {
    a.mov32(6, addr).mov32(7, value).str(7, 6, 0);
}

/// Program region `n` (RBAR with VALID, then RASR).
fn region(a: &mut Asm, n: u32, base: u32, rasr: u32) {
    str_to(a, MPU_RBAR, base | 1 << 4 | n);
    str_to(a, MPU_RASR, rasr);
}

/// CONTROL = `v` (nPRIV bit 0, SPSEL bit 1), then ISB.
fn control(a: &mut Asm, v: u32) {
    a.mov32(0, v).msr(20, 0).w(0xF3BF, 0x8F6F);
}

fn m3() -> CpuConfig {
    CpuConfig::cortex_m3(32)
}

fn boot(cfg: CpuConfig, a: &mut Asm, vectors: &[(u32, usize)]) -> Board {
    let mut b = Board::with_config(cfg);
    b.load(&a.finish(), vectors);
    b.reset();
    b
}

fn pc(b: &Board) -> u32 {
    b.cpu.reg(Reg::Pc)
}

/// The PC in the exception frame at the current SP (B1.5.6: frame word 6).
fn stacked_pc(b: &mut Board, sp: u32) -> u32 {
    b.read32(sp + 24)
}

#[test]
fn unprivileged_store_to_a_privileged_only_region_is_daccviol_with_mmfar() {
    // B3.5 CheckPermission: AP 0b001 is privileged read/write, no unprivileged access. The store
    // does not happen; MMFSR.DACCVIOL with MMFAR = the address and MMARVALID; MemManage when
    // enabled, else HardFault with HFSR.FORCED (B1.5.16).
    for (memmanage, unprivileged) in [(true, true), (false, true), (true, false)] {
        let mut a = Asm::new();
        if memmanage {
            str_to(&mut a, SHCSR, MEMFAULTENA);
        }
        region(&mut a, 0, 0, rasr(AP_FULL, 31));
        region(&mut a, 1, 0x2000_1000, rasr(AP_PRIV_RW, 9));
        str_to(&mut a, MPU_CTRL, ENABLE);
        if unprivileged {
            control(&mut a, 1);
        }
        a.mov32(0, 0x2000_1010).mov32(1, 0xDEAD_BEEF);
        let store = a.here();
        a.str(1, 0, 0);
        let end = a.here();
        a.b_self();
        let mm = a.here();
        a.b_self();
        let hf = a.here();
        a.b_self();
        let mut b = boot(m3(), &mut a, &[(3, hf), (4, mm)]);
        b.cpu.run(&mut b.sys, 10_000);
        if !unprivileged {
            assert_eq!(pc(&b), Board::addr(end), "privileged: allowed");
            assert_eq!(b.read32(0x2000_1010), 0xDEAD_BEEF);
            assert_eq!(b.read32(CFSR), 0);
            continue;
        }
        assert_eq!(b.read32(0x2000_1010), 0, "the store did not happen");
        assert_eq!(b.read32(CFSR), DACCVIOL | MMARVALID);
        assert_eq!(b.read32(MMFAR), 0x2000_1010);
        assert_eq!(b.read32(BFAR), 0, "not a bus fault");
        let sp = b.cpu.reg(Reg::Msp);
        assert_eq!(stacked_pc(&mut b, sp), Board::addr(store), "precise: the store is stacked");
        if memmanage {
            assert_eq!(pc(&b), Board::addr(mm));
            assert_eq!(b.read32(HFSR), 0);
            assert_eq!(b.read32(SHCSR) & 1, 1, "MEMFAULTACT");
        } else {
            assert_eq!(pc(&b), Board::addr(hf));
            assert_eq!(b.read32(HFSR), FORCED);
        }
    }
}

#[test]
fn read_only_and_no_access_regions_and_the_highest_region_wins() {
    // B3.5.3: where regions overlap, the highest-numbered one decides. Region 2 (read-only,
    // 32 bytes) inside region 1 (no access, 1 KiB) inside region 0 (full): a privileged load
    // from region 2 works, a store faults; a load next to it (region 1) faults.
    for (op_is_store, addr, faults) in
        [(false, 0x2000_1000u32, false), (true, 0x2000_1000, true), (false, 0x2000_1020, true)]
    {
        let mut a = Asm::new();
        str_to(&mut a, SHCSR, MEMFAULTENA);
        region(&mut a, 0, 0, rasr(AP_FULL, 31));
        region(&mut a, 1, 0x2000_1000, rasr(AP_NONE, 9));
        region(&mut a, 2, 0x2000_1000, rasr(AP_RO, 4));
        str_to(&mut a, MPU_CTRL, ENABLE);
        a.mov32(0, addr);
        if op_is_store {
            a.str(1, 0, 0);
        } else {
            a.ldr(1, 0, 0);
        }
        let end = a.here();
        a.b_self();
        let mm = a.here();
        a.b_self();
        let mut b = boot(m3(), &mut a, &[(4, mm)]);
        b.cpu.run(&mut b.sys, 10_000);
        if faults {
            assert_eq!(pc(&b), Board::addr(mm), "{addr:#x} store={op_is_store}");
            assert_eq!(b.read32(MMFAR), addr);
            assert_eq!(b.read32(CFSR), DACCVIOL | MMARVALID);
        } else {
            assert_eq!(pc(&b), Board::addr(end));
        }
    }
}

#[test]
fn disabled_subregion_falls_through_to_the_region_below() {
    // B3.5.4: SRD bit n disables the nth eighth of a region of 256 bytes or more; an access
    // there is decided by the lower regions (here region 0, full access).
    let mut a = Asm::new();
    str_to(&mut a, SHCSR, MEMFAULTENA);
    region(&mut a, 0, 0, rasr(AP_FULL, 31));
    // 1 KiB at 0x20001000, subregion 1 (0x20001080-0x200010FF) disabled.
    region(&mut a, 1, 0x2000_1000, rasr(AP_PRIV_RW, 9) | 1 << 9);
    str_to(&mut a, MPU_CTRL, ENABLE);
    control(&mut a, 1);
    a.mov32(0, 0x2000_1090).mov32(1, 0x1234_5678);
    a.str(1, 0, 0); // disabled subregion: region 0, allowed
    a.mov32(0, 0x2000_1100);
    a.str(1, 0, 0); // subregion 2: region 1, privileged only
    a.b_self();
    let mm = a.here();
    a.b_self();
    let mut b = boot(m3(), &mut a, &[(4, mm)]);
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.read32(0x2000_1090), 0x1234_5678);
    assert_eq!(pc(&b), Board::addr(mm));
    assert_eq!(b.read32(MMFAR), 0x2000_1100);
    assert_eq!(b.read32(0x2000_1100), 0);
}

/// Flash (code, read-only for everyone) and SRAM (full access) as the only regions; TESTDEV at
/// 0x40000000 is in none of them.
fn code_and_sram_regions(a: &mut Asm) {
    region(a, 0, 0x0800_0000, rasr(AP_RO, 16));
    region(a, 1, SRAM, rasr(AP_FULL, 15));
}

#[test]
fn privdefena_makes_the_default_map_a_background_for_privileged_accesses_only() {
    // B3.5.6 PRIVDEFENA: privileged accesses that hit no region use the default map;
    // unprivileged ones (and all of them without PRIVDEFENA) fault.
    for (privdefena, unprivileged, allowed) in [(true, false, true), (true, true, false), (false, false, false)] {
        let mut a = Asm::new();
        str_to(&mut a, SHCSR, MEMFAULTENA);
        code_and_sram_regions(&mut a);
        str_to(&mut a, MPU_CTRL, ENABLE | if privdefena { PRIVDEFENA } else { 0 });
        if unprivileged {
            control(&mut a, 1);
        }
        str_to(&mut a, TESTDEV + reg::LOG, 0x77);
        let end = a.here();
        a.b_self();
        let mm = a.here();
        a.b_self();
        let mut b = boot(m3(), &mut a, &[(4, mm)]);
        b.cpu.run(&mut b.sys, 10_000);
        let case = format!("PRIVDEFENA={privdefena} unprivileged={unprivileged}");
        if allowed {
            assert_eq!(pc(&b), Board::addr(end), "{case}");
            assert_eq!(b.dev().log, vec![0x77], "{case}");
        } else {
            assert_eq!(pc(&b), Board::addr(mm), "{case}");
            assert!(b.dev().log.is_empty(), "{case}");
            assert_eq!(b.read32(MMFAR), TESTDEV, "{case}");
            assert_eq!(b.read32(CFSR), DACCVIOL | MMARVALID, "{case}");
        }
    }
}

#[test]
fn ppb_and_vector_reads_always_use_the_default_map() {
    // B3.5.1: the PPB and vector table reads are outside the MPU's control: with regions that
    // cover neither (and no PRIVDEFENA), SCS writes and exception entry still work.
    let mut a = Asm::new();
    code_and_sram_regions(&mut a);
    // Vectors at 0 (the boot alias) are outside every region.
    str_to(&mut a, MPU_CTRL, ENABLE);
    str_to(&mut a, SHPR2, 0x40 << 24); // PPB write with the MPU on
    a.hw(op::svc(0));
    a.b_self();
    let svc = a.here();
    a.b_self();
    let mut b = boot(m3(), &mut a, &[(11, svc)]);
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(b.read32(SHPR2), 0x40 << 24);
    assert_eq!(pc(&b), Board::addr(svc), "vector read from 0x0000002C");
    assert_eq!(b.read32(CFSR), 0);
}

#[test]
fn hardfault_bypasses_the_mpu_unless_hfnmiena() {
    // B3.5.6 HFNMIENA = 0: at execution priority < 0 (HardFault, NMI, FAULTMASK) the MPU is
    // off. The escalated DACCVIOL enters HardFault, whose store to TESTDEV (in no region) then
    // works; with HFNMIENA = 1 it faults again in HardFault: lockup (B1.5.15).
    for hfnmiena in [false, true] {
        let mut a = Asm::new();
        code_and_sram_regions(&mut a);
        str_to(&mut a, MPU_CTRL, ENABLE | if hfnmiena { HFNMIENA } else { 0 });
        str_to(&mut a, TESTDEV + reg::LOG, 1); // faults: escalates (MemManage disabled)
        a.b_self();
        let hf = a.here();
        str_to(&mut a, TESTDEV + reg::LOG, 2);
        let hf_end = a.here();
        a.b_self();
        let mut b = boot(m3(), &mut a, &[(3, hf)]);
        let stop = b.cpu.run(&mut b.sys, 10_000);
        assert_eq!(b.read32(HFSR), FORCED);
        if hfnmiena {
            assert!(matches!(stop, Stop::Lockup { .. }), "{stop:?}");
            assert_eq!(b.cpu.run_state(), RunState::Lockup);
            assert!(b.dev().log.is_empty());
        } else {
            assert_eq!(pc(&b), Board::addr(hf_end));
            assert_eq!(b.dev().log, vec![2]);
        }
    }
}

#[test]
fn fetch_from_an_execute_never_region_is_iaccviol_without_mmfar() {
    // B3.5 CheckPermission for AccType_IFETCH: XN (or no read permission) gives MMFSR.IACCVIOL,
    // MMARVALID clear, MMFAR untouched; the faulting fetch address is the stacked PC.
    for xn in [true, false] {
        let mut a = Asm::new();
        str_to(&mut a, SHCSR, MEMFAULTENA);
        region(&mut a, 0, 0, rasr(AP_FULL, 31));
        region(&mut a, 1, 0x2000_2000, rasr(AP_FULL, 4) | if xn { XN } else { 0 });
        str_to(&mut a, MPU_CTRL, ENABLE);
        // 0x20002000: str r1, [r0] with r0 = TESTDEV + EXIT; then b .
        str_to(&mut a, 0x2000_2000, 0xE7FE_6001);
        a.mov32(0, TESTDEV + reg::EXIT).mov32(1, 5).mov32(2, 0x2000_2001);
        a.bx(2);
        let mm = a.here();
        a.b_self();
        let mut b = boot(m3(), &mut a, &[(4, mm)]);
        b.cpu.run(&mut b.sys, 10_000);
        if xn {
            assert_eq!(pc(&b), Board::addr(mm));
            assert_eq!(b.read32(CFSR), IACCVIOL);
            assert_eq!(b.read32(MMFAR), 0);
            let sp = b.cpu.reg(Reg::Msp);
            assert_eq!(stacked_pc(&mut b, sp), 0x2000_2000);
            assert_eq!(b.dev().exit, None);
        } else {
            assert_eq!(b.dev().exit, Some(5), "executes from SRAM");
        }
    }
}

#[test]
fn unprivileged_fetch_from_privileged_only_code_is_iaccviol() {
    // B3.5: a fetch needs read permission at the current privilege. The code region is
    // privileged-only; dropping to unprivileged Thread mode faults on the next fetch. The
    // handler (privileged) runs from the same region.
    let mut a = Asm::new();
    str_to(&mut a, SHCSR, MEMFAULTENA);
    region(&mut a, 0, 0x0800_0000, rasr(AP_PRIV_RW, 16));
    region(&mut a, 1, SRAM, rasr(AP_FULL, 15));
    str_to(&mut a, MPU_CTRL, ENABLE);
    a.mov32(0, 1).msr(20, 0);
    let next = a.here();
    a.hw(op::NOP);
    a.b_self();
    let mm = a.here();
    a.b_self();
    let mut b = boot(m3(), &mut a, &[(4, mm)]);
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(pc(&b), Board::addr(mm));
    assert_eq!(b.read32(CFSR), IACCVIOL);
    let sp = b.cpu.reg(Reg::Msp);
    assert_eq!(stacked_pc(&mut b, sp), Board::addr(next));
}

#[test]
fn default_map_execute_never_regions_without_an_mpu() {
    // B3.1 Table B3-1: Peripheral (0x40000000-), Device (0xA0000000-) and System space are
    // execute-never: a fetch there is a MemManage IACCVIOL (B3.5.1) even with no MPU. External
    // RAM space (0x60000000) is executable: a fetch from nothing there is a bus error (IBUSERR).
    let mut cfg = m3();
    cfg.mpu_regions = 0;
    for (target, cfsr) in
        [(0x4000_0000u32, IACCVIOL), (0xA000_0000, IACCVIOL), (0xC000_0000, IACCVIOL), (0x6000_0000, IBUSERR)]
    {
        let mut a = Asm::new();
        str_to(&mut a, SHCSR, MEMFAULTENA | 1 << 17);
        a.mov32(0, target | 1).bx(0);
        let h = a.here();
        a.b_self();
        let mut b = boot(cfg.clone(), &mut a, &[(4, h), (5, h)]);
        b.cpu.run(&mut b.sys, 10_000);
        assert_eq!(pc(&b), Board::addr(h), "{target:#x}");
        assert_eq!(b.read32(CFSR), cfsr, "{target:#x}");
        let sp = b.cpu.reg(Reg::Msp);
        assert_eq!(stacked_pc(&mut b, sp), target);
    }
}

#[test]
fn stacking_into_a_forbidden_region_is_mstkerr() {
    // B1.5.6 / B3.2.15: unprivileged Thread mode on a PSP whose frame area is privileged-only.
    // SVC stacks with Thread's privilege: MSTKERR, a derived MemManage fault (MMFAR not
    // written). The entry completes (PSP moved past the frame, SVCall active) and MemManage,
    // at a higher priority than SVCall, preempts before SVCall's first instruction. With
    // MemManage disabled it escalates to HardFault (FORCED).
    for memmanage in [true, false] {
        let mut a = Asm::new();
        if memmanage {
            str_to(&mut a, SHCSR, MEMFAULTENA);
        }
        str_to(&mut a, SHPR2, 0x80 << 24);
        region(&mut a, 0, 0, rasr(AP_FULL, 31));
        region(&mut a, 1, 0x2000_3C00, rasr(AP_PRIV_RW, 9)); // 0x20003C00-0x20003FFF
        str_to(&mut a, MPU_CTRL, ENABLE);
        a.mov32(0, 0x2000_4000).msr(9, 0); // PSP
        control(&mut a, 3); // unprivileged, PSP
        a.mov32(0, 0xAAAA_5555);
        a.hw(op::svc(0));
        a.b_self();
        let svc = a.here();
        a.b_self();
        let mm = a.here();
        a.b_self();
        let hf = a.here();
        a.b_self();
        let mut b = boot(m3(), &mut a, &[(3, hf), (4, mm), (11, svc)]);
        b.cpu.run(&mut b.sys, 10_000);
        assert_eq!(b.read32(CFSR), MSTKERR);
        assert_eq!(b.read32(MMFAR), 0);
        assert_eq!(b.cpu.reg(Reg::Psp), 0x2000_3FE0, "the frame pointer moved all the same");
        assert_eq!(b.read32(0x2000_3FE0), 0, "r0 was not stacked");
        let shcsr = b.read32(SHCSR);
        assert_ne!(shcsr & 1 << 7, 0, "SVCALLACT: the SVCall entry completed");
        if memmanage {
            assert_eq!(pc(&b), Board::addr(mm));
            assert_ne!(shcsr & 1, 0, "MEMFAULTACT");
            assert_eq!(b.read32(HFSR), 0);
        } else {
            assert_eq!(pc(&b), Board::addr(hf));
            assert_eq!(b.read32(HFSR), FORCED);
        }
    }
}

#[test]
fn unstacking_from_a_forbidden_region_is_munstkerr() {
    // B1.5.8: PopStack runs with the privilege of the context returned to. The SVCall handler
    // makes the PSP frame's region privileged-only, then returns to unprivileged Thread mode:
    // MUNSTKERR (MemManage, preempting SVCall), raised at the returning BX.
    let mut a = Asm::new();
    str_to(&mut a, SHCSR, MEMFAULTENA);
    str_to(&mut a, SHPR2, 0x80 << 24);
    region(&mut a, 0, 0, rasr(AP_FULL, 31));
    region(&mut a, 1, 0x2000_3C00, rasr(AP_FULL, 9));
    str_to(&mut a, MPU_CTRL, ENABLE);
    a.mov32(0, 0x2000_4000).msr(9, 0);
    control(&mut a, 3);
    a.hw(op::svc(0));
    let after_svc = a.here();
    a.b_self();
    let svc = a.here();
    str_to(&mut a, MPU_RNR, 1);
    str_to(&mut a, MPU_RASR, rasr(AP_PRIV_RW, 9));
    let ret = a.here();
    a.bx(14);
    let mm = a.here();
    a.b_self();
    let mut b = boot(m3(), &mut a, &[(4, mm), (11, svc)]);
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(pc(&b), Board::addr(mm));
    assert_eq!(b.read32(CFSR), MUNSTKERR);
    let sp = b.cpu.reg(Reg::Msp);
    assert_eq!(stacked_pc(&mut b, sp), Board::addr(ret), "raised at the exception return");
    assert_eq!(b.read32(0x2000_3FE0 + 24), Board::addr(after_svc), "the Thread frame is intact");

    // Control: the same return with the region left open resumes Thread mode after the SVC.
    let mut a = Asm::new();
    region(&mut a, 0, 0, rasr(AP_FULL, 31));
    str_to(&mut a, MPU_CTRL, ENABLE);
    a.mov32(0, 0x2000_4000).msr(9, 0);
    control(&mut a, 3);
    a.hw(op::svc(0));
    let after_svc = a.here();
    a.b_self();
    let svc = a.here();
    a.bx(14);
    let mut b = boot(m3(), &mut a, &[(11, svc)]);
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(pc(&b), Board::addr(after_svc));
}

#[test]
fn mpu_registers_type_rnr_rbar_valid_region_and_aliases() {
    // B3.5.5 MPU_TYPE.DREGION per configuration; B3.5.8 RBAR.VALID selects REGION (and sets
    // RNR), RBAR reads REGION = RNR; the aliases reach the same registers; RASR keeps TEX/S/C/B.
    let mut b = Board::with_config(m3());
    b.reset();
    assert_eq!(b.read32(MPU_TYPE), 8 << 8);
    b.write32(MPU_RBAR_A1, 0x2000_0100 | 1 << 4 | 3);
    assert_eq!(b.read32(MPU_RNR), 3);
    assert_eq!(b.read32(MPU_RBAR), 0x2000_0100 | 3);
    let v = XN | 0b011 << 24 | 0b001 << 19 | 1 << 18 | 1 << 17 | 1 << 16 | 0xA5 << 8 | 7 << 1 | 1;
    b.write32(MPU_RASR_A2, v);
    assert_eq!(b.read32(MPU_RASR), v);
    // VALID = 0: the write goes to RNR's region, RNR unchanged.
    b.write32(MPU_RNR, 2);
    b.write32(MPU_RBAR, 0x0800_0000 | 5);
    assert_eq!(b.read32(MPU_RNR), 2);
    assert_eq!(b.read32(MPU_RBAR), 0x0800_0000 | 2);
    b.write32(MPU_RNR, 3);
    assert_eq!(b.read32(MPU_RBAR), 0x2000_0100 | 3);
    // RNR beyond DREGION: UNPREDICTABLE, here RBAR/RASR read as zero and ignore writes.
    b.write32(MPU_RNR, 9);
    b.write32(MPU_RASR, rasr(AP_FULL, 31));
    assert_eq!(b.read32(MPU_RASR), 0);
    b.write32(MPU_CTRL, 7);
    assert_eq!(b.read32(MPU_CTRL), 7);

    // No MPU (DREGION = 0, as the STM32F103): TYPE reads zero, CTRL is RAZ/WI.
    let mut cfg = m3();
    cfg.mpu_regions = 0;
    let mut b = Board::with_config(cfg);
    b.reset();
    assert_eq!(b.read32(MPU_TYPE), 0);
    b.write32(MPU_CTRL, 1);
    assert_eq!(b.read32(MPU_CTRL), 0);
    // ARMv6-M: no MPU registers either.
    let mut b = Board::with_config(CpuConfig::cortex_m0plus(32));
    b.reset();
    assert_eq!(b.read32(MPU_TYPE), 0);
    assert_eq!(CpuConfig::cortex_m4(32).mpu_regions, 8);
}

#[test]
fn rasr_size_below_32_bytes_is_matched_as_32_bytes() {
    // B3.5.9: SIZE < 4 is UNPREDICTABLE; documented choice: a 32-byte region.
    let mut a = Asm::new();
    str_to(&mut a, SHCSR, MEMFAULTENA);
    region(&mut a, 0, 0, rasr(AP_FULL, 31));
    region(&mut a, 1, 0x2000_1000, rasr(AP_RO, 1));
    str_to(&mut a, MPU_CTRL, ENABLE);
    a.mov32(0, 0x2000_1020);
    a.str(1, 0, 0); // outside the 32 bytes: allowed
    a.mov32(0, 0x2000_101C);
    a.str(1, 0, 0); // inside: read-only
    a.b_self();
    let mm = a.here();
    a.b_self();
    let mut b = boot(m3(), &mut a, &[(4, mm)]);
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(pc(&b), Board::addr(mm));
    assert_eq!(b.read32(MMFAR), 0x2000_101C);
}

#[test]
fn ldrt_and_strt_use_unprivileged_permissions() {
    // A7.7.67/A7.7.176 with B3.5: LDRT in privileged code is checked as unprivileged.
    let mut a = Asm::new();
    str_to(&mut a, SHCSR, MEMFAULTENA);
    region(&mut a, 0, 0, rasr(AP_FULL, 31));
    region(&mut a, 1, 0x2000_1000, rasr(AP_PRIV_RW, 9));
    str_to(&mut a, MPU_CTRL, ENABLE);
    a.mov32(0, 0x2000_1000);
    a.ldr(1, 0, 1); // privileged LDR: fine
    a.w(0xF850, 0x1E08); // ldrt r1, [r0, #8]
    a.b_self();
    let mm = a.here();
    a.b_self();
    let mut b = boot(m3(), &mut a, &[(4, mm)]);
    b.cpu.run(&mut b.sys, 10_000);
    assert_eq!(pc(&b), Board::addr(mm));
    assert_eq!(b.read32(MMFAR), 0x2000_1008);
}
