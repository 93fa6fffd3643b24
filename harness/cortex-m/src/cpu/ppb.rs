//! The Private Peripheral Bus as the core serves it (ARMv6-M ARM B3.2-B3.4, C1): SysTick, NVIC,
//! SCB, the debug registers (DHCSR, DCRSR, DCRDR, DEMCR, DFSR), the breakpoint unit (FPB/BPU),
//! a minimal DWT, the ROM table and the CoreSight identification registers. ARMv7-M (DDI0403E
//! B3.2, B3.4, C1.6, C1.8) adds SHPR1, SHCSR, CFSR/HFSR/MMFAR/BFAR, a writable CCR, CPACR (RAZ/WI:
//! no coprocessors), PRIGROUP, ICTR, STIR, DWT_CYCCNT, the fault vector catches and byte/halfword
//! SCS access.

use super::{Cpu, DWT_COMPARATORS, EXC_IRQ0, EXC_NMI, EXC_PENDSV, EXC_SVCALL, EXC_SYSTICK, HaltReason, Reg, bit};
use crate::bus::{BusFault, BusFaultKind, Size};
use crate::device::ResetCause;

/// Who accesses the PPB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Cpu,
    Debug,
}

pub(crate) const SCR_SLEEPONEXIT: u32 = 1 << 1;
pub(crate) const SCR_SEVONPEND: u32 = 1 << 4;
const SCR_MASK: u32 = SCR_SLEEPONEXIT | 1 << 2 | SCR_SEVONPEND;
/// B3.2.8: ARMv6-M CCR is read-only, STKALIGN (bit 9) and UNALIGN_TRP (bit 3) set.
pub(crate) const CCR_VALUE: u32 = 1 << 9 | 1 << 3;

pub(crate) const DHCSR_C_DEBUGEN: u32 = 1 << 0;
pub(crate) const DHCSR_C_HALT: u32 = 1 << 1;
pub(crate) const DHCSR_C_STEP: u32 = 1 << 2;
pub(crate) const DHCSR_C_MASKINTS: u32 = 1 << 3;
pub(crate) const DHCSR_S_REGRDY: u32 = 1 << 16;
pub(crate) const DHCSR_S_HALT: u32 = 1 << 17;
pub(crate) const DHCSR_S_SLEEP: u32 = 1 << 18;
pub(crate) const DHCSR_S_LOCKUP: u32 = 1 << 19;
pub(crate) const DHCSR_S_RETIRE_ST: u32 = 1 << 24;
pub(crate) const DHCSR_S_RESET_ST: u32 = 1 << 25;
const DBGKEY: u32 = 0xA05F;

pub(crate) const DEMCR_VC_CORERESET: u32 = 1 << 0;
pub(crate) const DEMCR_VC_HARDERR: u32 = 1 << 10;
/// C1.6.5: the ARMv6-M DEMCR has DWTENA, VC_HARDERR and VC_CORERESET.
const DEMCR_MASK: u32 = 1 << 24 | DEMCR_VC_HARDERR | DEMCR_VC_CORERESET;
/// ARMv7-M C1.6.5: TRCENA, MON_*, and the vector catch bits VC_HARDERR..VC_MMERR, VC_CORERESET.
const DEMCR_MASK_V7: u32 = 1 << 24 | 0xF << 16 | 0x7F0 | DEMCR_VC_CORERESET;
/// DEMCR.MON_EN enables the DebugMonitor exception, MON_PEND pends it (ARMv7-M C1.6.5).
pub(crate) const DEMCR_MON_EN: u32 = 1 << 16;
const DEMCR_MON_PEND: u32 = 1 << 17;
/// DEMCR.TRCENA gates the DWT (C1.6.5).
const DEMCR_TRCENA: u32 = 1 << 24;
/// DWT_FUNCTIONn.MATCHED (C1.8.12).
const DWT_MATCHED: u32 = 1 << 24;
/// ARMv7-M B3.2.8 CCR writable bits: NONBASETHRDENA, USERSETMPEND, UNALIGN_TRP, DIV_0_TRP,
/// BFHFNMIGN, STKALIGN.
const CCR_MASK_V7: u32 = 1 | 1 << 1 | 1 << 3 | 1 << 4 | 1 << 8 | 1 << 9;

pub(crate) const DFSR_HALTED: u32 = 1 << 0;
pub(crate) const DFSR_BKPT: u32 = 1 << 1;
pub(crate) const DFSR_DWTTRAP: u32 = 1 << 2;
pub(crate) const DFSR_VCATCH: u32 = 1 << 3;
const DFSR_MASK: u32 = 0x1F;

/// C1.8.2 (FPB v1 / the M0+ BPU): BP_MATCH[31:30], COMP[28:2], ENABLE[0].
const BP_COMP_MASK: u32 = 0xC000_0000 | 0x1FFF_FFFC | 1;

const SCS: u32 = 0xE000_E000;
const DWT: u32 = 0xE000_1000;
const FPB: u32 = 0xE000_2000;
const ROM_TABLE: u32 = 0xE00F_F000;

/// Debug register state (survives a system reset, C1.4).
#[derive(Clone, Debug)]
pub(crate) struct DebugRegs {
    pub c_debugen: bool,
    pub c_halt: bool,
    pub c_step: bool,
    pub c_maskints: bool,
    pub s_reset_st: bool,
    /// `retired` at the last DHCSR read (S_RETIRE_ST = an instruction retired since).
    pub retire_mark: u64,
    pub regrdy: bool,
    pub dcrdr: u32,
    pub demcr: u32,
    pub dfsr: u32,
    pub fpb_enable: bool,
    pub fpb_comp: Vec<u32>,
    /// FP_REMAP.REMAP (bits [28:5]) of an FPB version 1 on ARMv7-M (C1.11.4).
    pub fpb_remap: u32,
    /// Some enabled comparator remaps (FPB v1, FP_CTRL.ENABLE, REPLACE = 0b00): the
    /// decoded-code cache leaves the lines it touches uncached.
    pub fpb_remapping: bool,
}

impl DebugRegs {
    pub fn new(comparators: u8) -> Self {
        DebugRegs {
            c_debugen: false,
            c_halt: false,
            c_step: false,
            c_maskints: false,
            s_reset_st: false,
            retire_mark: 0,
            regrdy: false,
            dcrdr: 0,
            demcr: 0,
            dfsr: 0,
            fpb_enable: false,
            fpb_comp: vec![0; comparators as usize],
            fpb_remap: 0,
            fpb_remapping: false,
        }
    }
}

/// CoreSight peripheral and component ID registers (offsets 0xFD0-0xFFC of a 4 KiB block), in
/// the order PID4..PID7, PID0..PID3, CID0..CID3. Part numbers as the Cortex-M0+ TRM lists them
/// (SCS 0x008, DWT 0x00A, BPU 0x00B, ROM table 0x4C0; designer ARM, JEP106 0x3B).
fn coresight_id(block: u32, off: u32) -> u32 {
    let (part, class) = match block {
        SCS => (0x008u32, 0xE),
        DWT => (0x00A, 0xE),
        FPB => (0x00B, 0xE),
        _ => (0x4C0, 0x1),
    };
    let idx = (off - 0xFD0) / 4;
    match idx {
        0 => 0x04,               // PID4: 4 KiB block, JEP106 continuation 4
        1..=3 => 0,              // PID5-7
        4 => part & 0xFF,        // PID0
        5 => (part >> 8) | 0xB0, // PID1: JEP106 id[3:0] = 0xB
        6 => 0x0B,               // PID2: JEP106 id[6:4] = 3, JEDEC used
        7 => 0,                  // PID3
        8 => 0x0D,               // CID0
        9 => class << 4,         // CID1: component class
        10 => 0x05,              // CID2
        _ => 0xB1,               // CID3
    }
}

impl Cpu {
    /// A load from the PPB by the executing program.
    pub(crate) fn cpu_ppb_read(&mut self, addr: u32, size: Size) -> Result<u32, BusFault> {
        self.cpu_ppb_check(addr, size)?;
        if size != Size::Word {
            let word = self.ppb_read(addr & !3, Size::Word, Origin::Cpu).map_err(|k| BusFault::new(addr, size, k))?;
            return Ok((word >> (8 * (addr & 3))) & size.mask());
        }
        self.ppb_read(addr, size, Origin::Cpu).map_err(|k| BusFault::new(addr, size, k))
    }

    pub(crate) fn cpu_ppb_write(&mut self, addr: u32, size: Size, value: u32) -> Result<(), BusFault> {
        self.cpu_ppb_check(addr, size)?;
        if size != Size::Word {
            return self.ppb_write_subword(addr, size, value, Origin::Cpu).map_err(|k| BusFault::new(addr, size, k));
        }
        self.ppb_write(addr, size, value, Origin::Cpu).map_err(|k| BusFault::new(addr, size, k))
    }

    /// ARMv7-M sub-word SCS write: the byte lanes of the addressed word. Write-one-to-clear
    /// registers (CFSR, HFSR) see zeros in the other lanes; the others are read-modify-write.
    fn ppb_write_subword(&mut self, addr: u32, size: Size, value: u32, origin: Origin) -> Result<(), BusFaultKind> {
        let word_addr = addr & !3;
        let shift = 8 * (addr & 3);
        let lanes = size.mask() << shift;
        let v = (value & size.mask()) << shift;
        let w1c = matches!(word_addr, 0xE000_ED28 | 0xE000_ED2C);
        let merged = if w1c { v } else { (self.ppb_read(word_addr, Size::Word, origin)? & !lanes) | v };
        self.ppb_write(word_addr, Size::Word, merged, origin)
    }

    fn cpu_ppb_check(&self, addr: u32, size: Size) -> Result<(), BusFault> {
        // B3.2: the SCS is privileged-only; unprivileged accesses fault.
        if !self.privileged() {
            return Err(BusFault::new(addr, size, BusFaultKind::Device("unprivileged access to the PPB")));
        }
        // B3.2: ARMv6-M SCS registers are word-accessible only (sub-word is UNPREDICTABLE; we fault).
        // ARMv7-M allows byte and halfword accesses (NVIC_IPR, SHPR, CFSR are byte-accessible).
        if size != Size::Word && !self.config().arch.is_v7() {
            return Err(BusFault::new(
                addr,
                size,
                BusFaultKind::Device("PPB registers are word-access only on ARMv6-M"),
            ));
        }
        Ok(())
    }

    /// The debugger's PPB read: sub-word reads return the addressed lanes of the word.
    pub(crate) fn debug_ppb_read(&mut self, addr: u32, size: Size) -> Result<u32, BusFault> {
        if addr & (size.bytes() - 1) != 0 {
            return Err(BusFault::new(addr, size, BusFaultKind::Device("unaligned PPB access")));
        }
        let word = self.ppb_read(addr & !3, Size::Word, Origin::Debug).map_err(|k| BusFault::new(addr, size, k))?;
        Ok((word >> (8 * (addr & 3))) & size.mask())
    }

    pub(crate) fn debug_ppb_write(&mut self, addr: u32, size: Size, value: u32) -> Result<(), BusFault> {
        if self.config().arch.is_v7() && size != Size::Word && addr & (size.bytes() - 1) == 0 {
            return self.ppb_write_subword(addr, size, value, Origin::Debug).map_err(|k| BusFault::new(addr, size, k));
        }
        if size != Size::Word || addr & 3 != 0 {
            return Err(BusFault::new(
                addr,
                size,
                BusFaultKind::Device("PPB registers take aligned word writes only on ARMv6-M"),
            ));
        }
        self.ppb_write(addr, size, value, Origin::Debug).map_err(|k| BusFault::new(addr, size, k))
    }

    /// Word read of a PPB register (`addr` word-aligned).
    pub(crate) fn ppb_read(&mut self, addr: u32, _size: Size, origin: Origin) -> Result<u32, BusFaultKind> {
        let block = addr & !0xFFF;
        let off = addr & 0xFFF;
        if matches!(block, SCS | DWT | FPB | ROM_TABLE) && off >= 0xFD0 {
            return Ok(coresight_id(block, off));
        }
        match block {
            SCS => Ok(self.scs_read(off, origin)),
            DWT => Ok(match off {
                // DWT_CTRL: NUMCOMP = 0, no comparators modelled; ARMv7-M: CYCCNTENA (C1.8.7)
                // with the other profiling counters absent (NOTRCPKT, NOEXTTRIG, NOPRFCNT).
                0x000 if self.config().arch.is_v7() => {
                    (DWT_COMPARATORS as u32) << 28 | 1 << 27 | 1 << 26 | 1 << 24 | self.v7.dwt.cyccnt_on as u32
                }
                // DWT_COMPn/MASKn/FUNCTIONn (C1.8.10-12); MATCHED (FUNCTION bit 24) clears on read.
                o if self.config().arch.is_v7() && (0x020..0x020 + 16 * DWT_COMPARATORS as u32).contains(&o) => {
                    let n = ((o - 0x020) / 16) as usize;
                    match o & 0xF {
                        0x0 => self.v7.dwt.comp[n],
                        0x4 => self.v7.dwt.mask[n],
                        0x8 => {
                            let v = self.v7.dwt.function[n];
                            self.v7.dwt.function[n] &= !DWT_MATCHED;
                            v
                        }
                        _ => 0,
                    }
                }
                0x000 => 0,
                // DWT_CYCCNT (C1.8.6).
                0x004 if self.config().arch.is_v7() => self.cyccnt(),
                // DWT_PCSR (ARMv6-M C1.8, DWT): the sampled PC; all ones while halted.
                0x01C => {
                    if self.halted.is_some() {
                        0xFFFF_FFFF
                    } else {
                        self.r[15]
                    }
                }
                _ => 0,
            }),
            FPB => Ok(match off {
                // BP_CTRL: NUM_CODE[7:4], ENABLE[0]; KEY reads as zero. FP_CTRL (ARMv7-M C1.11.3)
                // adds NUM_CODE[14:12], NUM_LIT[11:8] (no literal comparators) and REV[31:28].
                0x000 => {
                    let n = self.dbg.fpb_comp.len() as u32;
                    (self.config().fpb_rev2 as u32) << 28
                        | (n >> 4 & 7) << 12
                        | (n & 0xF) << 4
                        | self.dbg.fpb_enable as u32
                }
                // C1.11.4 FP_REMAP: RMPSPT[29] = 1 and REMAP[28:5] on an FPB version 1 of
                // ARMv7-M (Cortex-M3/M4); version 2 and the ARMv6-M BPU cannot remap (reads 0).
                0x004 if self.fpb_can_remap() => 1 << 29 | self.dbg.fpb_remap,
                0x004 => 0,
                o if (0x008..0x008 + 4 * self.dbg.fpb_comp.len() as u32).contains(&o) => {
                    self.dbg.fpb_comp[((o - 8) / 4) as usize]
                }
                _ => 0,
            }),
            ROM_TABLE => Ok(match off {
                // Entries: SCS, DWT, BPU (present, 32-bit format), then the end marker.
                0x000 => SCS.wrapping_sub(ROM_TABLE) | 3,
                0x004 => DWT.wrapping_sub(ROM_TABLE) | 3,
                0x008 => FPB.wrapping_sub(ROM_TABLE) | 3,
                // MEMTYPE: system memory present on the bus.
                0xFCC => 1,
                _ => 0,
            }),
            _ => Err(BusFaultKind::Device("nothing implemented at this PPB address")),
        }
    }

    pub(crate) fn ppb_write(&mut self, addr: u32, _size: Size, value: u32, origin: Origin) -> Result<(), BusFaultKind> {
        let block = addr & !0xFFF;
        let off = addr & 0xFFF;
        match block {
            SCS => {
                self.scs_write(off, value, origin);
                Ok(())
            }
            FPB => {
                match off {
                    // The write takes effect only with KEY (bit 1) set (ARMv6-M C1.9 BPU, M0+ TRM BP_CTRL).
                    0x000 if value & 2 != 0 => self.dbg.fpb_enable = value & 1 != 0,
                    0x004 if self.fpb_can_remap() => self.dbg.fpb_remap = value & 0x1FFF_FFE0,
                    o if (0x008..0x008 + 4 * self.dbg.fpb_comp.len() as u32).contains(&o) => {
                        let mask = if self.config().fpb_rev2 { u32::MAX } else { BP_COMP_MASK };
                        self.dbg.fpb_comp[((o - 8) / 4) as usize] = value & mask;
                    }
                    _ => {}
                }
                // Breakpoints are baked into the decoded-code cache.
                self.icache.flush(self.icache.generation);
                self.dbg.fpb_remapping = self.fpb_can_remap()
                    && self.dbg.fpb_enable
                    && self.dbg.fpb_comp.iter().any(|c| c & 1 != 0 && c >> 30 == 0);
                self.service = true;
                Ok(())
            }
            DWT if self.config().arch.is_v7() => {
                match off {
                    0x000 => {
                        let held = self.cyccnt();
                        self.v7.dwt.cyccnt_on = value & 1 != 0;
                        self.set_cyccnt(held);
                    }
                    0x004 => self.set_cyccnt(value),
                    o if (0x020..0x020 + 16 * DWT_COMPARATORS as u32).contains(&o) => {
                        let n = ((o - 0x020) / 16) as usize;
                        match o & 0xF {
                            0x0 => self.v7.dwt.comp[n] = value,
                            // MASK[4:0]: ignore that many low address bits (up to 2^31 bytes).
                            0x4 => self.v7.dwt.mask[n] = value & 0x1F,
                            // FUNCTION[3:0], DATAVMATCH, CYCMATCH, EMITRANGE, DATAVSIZE; MATCHED RO.
                            0x8 => {
                                let keep = self.v7.dwt.function[n] & DWT_MATCHED;
                                self.v7.dwt.function[n] = value & 0x0000_0DAF | keep;
                            }
                            _ => {}
                        }
                        self.update_watch();
                    }
                    _ => {}
                }
                Ok(())
            }
            DWT | ROM_TABLE => Ok(()),
            _ => Err(BusFaultKind::Device("nothing implemented at this PPB address")),
        }
    }

    /// Whether an FPB comparator breaks on an instruction at `addr` (C1.8: comparators only see
    /// the code region below 0x20000000; BP_MATCH selects the halfword).
    pub(crate) fn fpb_matches(&self, addr: u32) -> bool {
        if !self.dbg.fpb_enable {
            return false;
        }
        if self.config().fpb_rev2 {
            // ARMv7-M C1.11.5 (FPB version 2): BE[0] enables, BPADDR[31:1] is the halfword.
            return self.dbg.fpb_comp.iter().any(|c| c & 1 != 0 && c & !1 == addr & !1);
        }
        if addr >= 0x2000_0000 {
            return false;
        }
        self.dbg.fpb_comp.iter().any(|c| {
            let halfword_bit = if addr & 2 == 0 { 1 << 30 } else { 1 << 31 };
            c & 1 != 0 && c & 0x1FFF_FFFC == addr & 0x1FFF_FFFC && c & halfword_bit != 0
        })
    }

    /// FPB version 1 of ARMv7-M: FP_REMAP exists (C1.11.4, RMPSPT = 1 on the Cortex-M3/M4).
    fn fpb_can_remap(&self) -> bool {
        self.config().arch.is_v7() && !self.config().fpb_rev2
    }

    /// C1.11.5 (FPB version 1): an enabled instruction comparator with REPLACE = 0b00 remaps the
    /// fetch of its word in the Code region to SRAM, FP_REMAP.REMAP + 4n (n = the comparator):
    /// the address the halfword at `addr` is fetched from instead.
    pub(crate) fn fpb_remap_target(&self, addr: u32) -> Option<u32> {
        if !self.dbg.fpb_remapping || addr >= 0x2000_0000 {
            return None;
        }
        let n = self.dbg.fpb_comp.iter().position(|c| c & 1 != 0 && c >> 30 == 0 && (c ^ addr) & 0x1FFF_FFFC == 0)?;
        Some((0x2000_0000 | self.dbg.fpb_remap) + 4 * n as u32 + (addr & 2))
    }

    /// Whether a remapping comparator points into the code line `line` (address >> line shift).
    pub(crate) fn fpb_remaps_line(&self, line: u32, line_shift: u32) -> bool {
        self.dbg.fpb_remapping
            && self.dbg.fpb_comp.iter().any(|c| c & 1 != 0 && c >> 30 == 0 && (c & 0x1FFF_FFFC) >> line_shift == line)
    }

    fn nvic_words(&self) -> u32 {
        self.cfg_irqs().div_ceil(32)
    }

    fn cfg_irqs(&self) -> u32 {
        self.nvic.n_irq
    }

    /// Bits of NVIC word `i` (IRQ 32i..32i+31) in an exception-numbered set.
    fn nvic_get(&self, set: &[u64], i: u32) -> u32 {
        let mut w = 0;
        for b in 0..32 {
            let irq = i * 32 + b;
            if irq < self.cfg_irqs() && bit(set, EXC_IRQ0 + irq) {
                w |= 1 << b;
            }
        }
        w
    }

    fn scs_read(&mut self, off: u32, origin: Origin) -> u32 {
        let debug = origin == Origin::Debug;
        match off {
            0x010 => {
                self.systick_sync_now();
                // Debugger reads leave COUNTFLAG alone so inspection does not disturb software.
                self.systick.read_csr(!debug)
            }
            0x014 => self.systick.rvr,
            0x018 => self.systick.current(self.cycles),
            0x01C => self.systick.read_calib(),
            0x100..=0x13C if (off - 0x100) / 4 < self.nvic_words() => {
                let i = (off - 0x100) / 4;
                let mut w = 0;
                for b in 0..32 {
                    let irq = i * 32 + b;
                    if irq < self.cfg_irqs() && bit(&self.nvic.enabled, irq) {
                        w |= 1 << b;
                    }
                }
                w
            }
            0x180..=0x1BC if (off - 0x180) / 4 < self.nvic_words() => self.scs_read(off - 0x80, origin),
            0x200..=0x23C if (off - 0x200) / 4 < self.nvic_words() => {
                self.nvic_get(&self.nvic.pending.clone(), (off - 0x200) / 4)
            }
            0x280..=0x2BC if (off - 0x280) / 4 < self.nvic_words() => self.scs_read(off - 0x80, origin),
            0x400..=0x5EC if (off - 0x400) / 4 < self.cfg_irqs().div_ceil(4) => self.nvic.ipr_word((off - 0x400) / 4),
            0xD00 => self.config().cpuid,
            0xD04 => self.icsr(),
            0xD08 => self.vtor,
            0xD0C => self.aircr(),
            0xD10 => self.scr,
            0xD14 => self.ccr(),
            0xD1C => self.shpr2(),
            0xD20 => self.shpr3(),
            // ARMv7-M B3.2.2: SHPR1, SHCSR, CFSR, HFSR, MMFAR, BFAR, AFSR, CPACR; ICTR (B3.4.3).
            0x004 if self.config().arch.is_v7() => self.cfg_irqs().div_ceil(32).saturating_sub(1),
            0xD18 if self.config().arch.is_v7() => self.shpr1(),
            0xD24 if self.config().arch.is_v7() => self.shcsr(),
            0xD28 if self.config().arch.is_v7() => self.v7.cfsr,
            0xD2C if self.config().arch.is_v7() => self.v7.hfsr,
            0xD34 if self.config().arch.is_v7() => self.v7.mmfar,
            0xD38 if self.config().arch.is_v7() => self.v7.bfar,
            0xD88 if self.config().arch.is_v7() => self.v7.cpacr,
            // B3.5.5-B3.5.9: MPU_TYPE, MPU_CTRL, MPU_RNR, MPU_RBAR, MPU_RASR and the aliases.
            0xD90..=0xDBC if self.config().arch.is_v7() => self.mpu_read(off).unwrap_or(0),
            // ARMv6-M C1.6: SHCSR (SVCALLPENDED) exists for the debugger only.
            0xD24 if debug => (self.nvic.is_pending(EXC_SVCALL) as u32) << 15,
            0xD30 => self.dbg.dfsr,
            0xDF0 => {
                let v = self.dhcsr_peek();
                // S_RESET_ST and S_RETIRE_ST are sticky until read (C1.6.2).
                self.dbg.s_reset_st = false;
                self.dbg.retire_mark = self.retired;
                v
            }
            0xDF8 => self.dbg.dcrdr,
            0xDFC => self.dbg.demcr | (self.nvic.is_pending(super::EXC_DEBUGMON) as u32) << 17,
            // Reserved and write-only SCS words read as zero.
            _ => 0,
        }
    }

    fn scs_write(&mut self, off: u32, v: u32, origin: Origin) {
        let debug = origin == Origin::Debug;
        self.service = true;
        match off {
            0x010 => {
                self.systick_sync_now();
                self.systick.write_csr(self.cycles, v);
            }
            0x014 => {
                self.systick_sync_now();
                self.systick.write_rvr(self.cycles, v);
            }
            0x018 => {
                self.systick_sync_now();
                self.systick.write_cvr(self.cycles);
            }
            0x100..=0x13C => self.nvic_write_bits((off - 0x100) / 4, v, |cpu, irq| {
                if let Some(w) = cpu.nvic.enabled.get_mut((irq / 64) as usize) {
                    *w |= 1 << (irq % 64);
                }
            }),
            0x180..=0x1BC => self.nvic_write_bits((off - 0x180) / 4, v, |cpu, irq| {
                if let Some(w) = cpu.nvic.enabled.get_mut((irq / 64) as usize) {
                    *w &= !(1 << (irq % 64));
                }
            }),
            0x200..=0x23C => self.nvic_write_bits((off - 0x200) / 4, v, |cpu, irq| cpu.set_pending(EXC_IRQ0 + irq)),
            0x280..=0x2BC => self.nvic_write_bits((off - 0x280) / 4, v, |cpu, irq| {
                cpu.nvic.clear_pending(EXC_IRQ0 + irq);
                // A level still asserted pends again at once.
                cpu.repend_if_level_high(EXC_IRQ0 + irq);
            }),
            0x400..=0x5EC => {
                let first = (off - 0x400) / 4 * 4;
                for b in 0..4 {
                    if let Some(p) = self.nvic.ipr.get_mut((first + b) as usize) {
                        *p = (v >> (8 * b)) as u8 & self.nvic.prio_mask;
                    }
                }
            }
            0xD04 => self.icsr_write(v),
            0xD08 if self.config().vtor_present => self.vtor = v & self.vtor_mask(),
            // B3.2.6: writes without VECTKEY 0x05FA are ignored.
            0xD0C if v >> 16 == 0x05FA => {
                if self.config().arch.is_v7() {
                    // ARMv7-M B3.2.6: PRIGROUP[10:8].
                    self.nvic.prigroup = ((v >> 8) & 7) as u8;
                    self.service = true;
                }
                if v & (1 << 2) != 0 {
                    // SYSRESETREQ: the board performs the system reset.
                    self.pending_reset.get_or_insert(ResetCause::Software);
                } else if v & 1 != 0 && self.config().arch.is_v7() {
                    // ARMv7-M B3.2.6 VECTRESET: a local reset of the core (B1.5.16 reset
                    // management: core, NVIC, SCB, SysTick, MPU; not the debug logic, not the
                    // system's peripherals), carried out as soon as the core has the bus. Outside
                    // Debug state it is UNPREDICTABLE: performed all the same, as the
                    // Cortex-M3/M4 do. With SYSRESETREQ as well, the system reset wins. ARMv6-M
                    // has no VECTRESET (reserved): ignored.
                    self.vect_reset = true;
                }
                if v & (1 << 1) != 0 && debug && self.halted.is_some() {
                    // VECTCLRACTIVE, only defined from the debugger in Debug state.
                    self.nvic.clear_active();
                    self.set_stack_state(0, self.spsel);
                }
            }
            0xD10 => self.scr = v & SCR_MASK,
            0xD1C => self.nvic.pri_svcall = (v >> 24) as u8 & self.nvic.prio_mask,
            0xD20 => {
                self.nvic.pri_systick = (v >> 24) as u8 & self.nvic.prio_mask;
                self.nvic.pri_pendsv = (v >> 16) as u8 & self.nvic.prio_mask;
                if self.config().arch.is_v7() {
                    self.nvic.pri_debugmon = v as u8 & self.nvic.prio_mask;
                }
            }
            0xD14 if self.config().arch.is_v7() => self.v7.ccr = v & CCR_MASK_V7,
            0xD18 if self.config().arch.is_v7() => {
                let m = self.nvic.prio_mask;
                (self.nvic.pri_mem, self.nvic.pri_bus, self.nvic.pri_usage) =
                    (v as u8 & m, (v >> 8) as u8 & m, (v >> 16) as u8 & m);
            }
            0xD24 if self.config().arch.is_v7() => self.shcsr_write(v),
            // B3.2.15/16: CFSR and HFSR are write-one-to-clear.
            0xD28 if self.config().arch.is_v7() => self.v7.cfsr &= !v,
            0xD2C if self.config().arch.is_v7() => self.v7.hfsr &= !v,
            0xD34 if self.config().arch.is_v7() => self.v7.mmfar = v,
            0xD38 if self.config().arch.is_v7() => self.v7.bfar = v,
            // B3.2.20 CPACR: with no coprocessors every field is RAZ/WI.
            0xD88 if self.config().arch.is_v7() => {}
            0xD90..=0xDBC if self.config().arch.is_v7() => {
                self.mpu_write(off, v);
            }
            // B3.4.3 STIR: pends the interrupt (unprivileged only with CCR.USERSETMPEND).
            0xF00 if self.config().arch.is_v7() => {
                let irq = v & 0x1FF;
                if irq < self.cfg_irqs() {
                    self.set_pending(EXC_IRQ0 + irq);
                }
            }
            0xD24 if debug => {
                if v & (1 << 15) != 0 {
                    self.set_pending(EXC_SVCALL);
                } else {
                    self.nvic.clear_pending(EXC_SVCALL);
                }
            }
            0xD30 => self.dbg.dfsr &= !(v & DFSR_MASK),
            0xDF0 => self.dhcsr_write(v, debug),
            0xDF4 => self.dcrsr_write(v),
            0xDF8 => self.dbg.dcrdr = v,
            0xDFC => {
                let mask = if self.config().arch.is_v7() { DEMCR_MASK_V7 } else { DEMCR_MASK };
                // TRCENA gates CYCCNT: it keeps its value while the DWT is off.
                let held = self.cyccnt();
                self.dbg.demcr = v & mask & !DEMCR_MON_PEND;
                self.set_cyccnt(held);
                self.update_watch();
                if self.config().arch.is_v7() {
                    self.nvic.debugmon_ena = v & DEMCR_MON_EN != 0;
                    if v & DEMCR_MON_PEND != 0 {
                        self.set_pending(super::EXC_DEBUGMON);
                    } else {
                        self.nvic.clear_pending(super::EXC_DEBUGMON);
                    }
                }
            }
            // Read-only and reserved words ignore writes.
            _ => {}
        }
    }

    fn nvic_write_bits(&mut self, word: u32, v: u32, mut f: impl FnMut(&mut Cpu, u32)) {
        for b in 0..32 {
            let irq = word * 32 + b;
            if v & (1 << b) != 0 && irq < self.cfg_irqs() {
                f(self, irq);
            }
        }
    }

    /// B3.2.5: TBLOFF is aligned to the table size rounded up to a power of two (at least 128).
    fn vtor_mask(&self) -> u32 {
        let size = ((EXC_IRQ0 + self.cfg_irqs()) * 4).next_power_of_two().max(128);
        !(size - 1)
    }

    fn systick_sync_now(&mut self) {
        if self.systick.sync(self.cycles) {
            self.set_pending(EXC_SYSTICK);
        }
    }

    /// B3.2.4 ICSR.
    pub(crate) fn icsr(&self) -> u32 {
        let mut v = self.ipsr & 0x1FF;
        // ARMv7-M B3.2.4 RETTOBASE: in Handler mode with exactly one active exception.
        if self.config().arch.is_v7() && self.ipsr != 0 && self.nvic.stack.len() == 1 {
            v |= 1 << 11;
        }
        if let Some(p) = self.highest_pending() {
            v |= (p & 0x1FF) << 12;
        }
        let ext_pending = (0..self.cfg_irqs()).any(|i| self.nvic.is_pending(EXC_IRQ0 + i));
        v |= (ext_pending as u32) << 22;
        v |= (self.pending_to_take().is_some() as u32) << 23;
        v |= (self.nvic.is_pending(EXC_SYSTICK) as u32) << 26;
        v |= (self.nvic.is_pending(EXC_PENDSV) as u32) << 28;
        v |= (self.nvic.is_pending(EXC_NMI) as u32) << 31;
        v
    }

    fn icsr_write(&mut self, v: u32) {
        if v & (1 << 31) != 0 {
            self.set_pending(EXC_NMI);
        }
        // Setting and clearing at once is UNPREDICTABLE; set wins here.
        if v & (1 << 27) != 0 {
            self.nvic.clear_pending(EXC_PENDSV);
        }
        if v & (1 << 28) != 0 {
            self.set_pending(EXC_PENDSV);
        }
        if v & (1 << 25) != 0 {
            self.nvic.clear_pending(EXC_SYSTICK);
        }
        if v & (1 << 26) != 0 {
            self.set_pending(EXC_SYSTICK);
        }
    }

    /// B3.2.6: VECTKEYSTAT reads 0xFA05; little-endian; PRIGROUP on ARMv7-M only.
    pub(crate) fn aircr(&self) -> u32 {
        0xFA05_0000 | (self.nvic.prigroup as u32) << 8
    }

    /// ARMv7-M B3.2.10 SHPR1: MemManage, BusFault, UsageFault priorities.
    pub(crate) fn shpr1(&self) -> u32 {
        self.nvic.pri_mem as u32 | (self.nvic.pri_bus as u32) << 8 | (self.nvic.pri_usage as u32) << 16
    }

    /// ARMv7-M B3.2.13 SHCSR: active and pending bits of the system handlers, fault enables.
    pub(crate) fn shcsr(&self) -> u32 {
        let act = |e| self.nvic.is_active(e) as u32;
        let pend = |e| self.nvic.is_pending(e) as u32;
        act(super::EXC_MEMMANAGE)
            | act(super::EXC_BUSFAULT) << 1
            | act(super::EXC_USAGEFAULT) << 3
            | act(EXC_SVCALL) << 7
            | act(super::EXC_DEBUGMON) << 8
            | act(EXC_PENDSV) << 10
            | act(EXC_SYSTICK) << 11
            | pend(super::EXC_USAGEFAULT) << 12
            | pend(super::EXC_MEMMANAGE) << 13
            | pend(super::EXC_BUSFAULT) << 14
            | pend(EXC_SVCALL) << 15
            | self.nvic.fault_ena
    }

    /// B3.2.13 SHCSR write: the enables, the pending bits and the active bits. Software may
    /// write the active bits (a context restore does); the architecture warns that a wrong value
    /// corrupts the exception state, which is then what the core runs with (an exception return
    /// that no longer matches the active set faults INVPC, B1.5.8).
    fn shcsr_write(&mut self, v: u32) {
        self.nvic.fault_ena = v & (7 << 16);
        for (b, exc) in [
            (0, super::EXC_MEMMANAGE),
            (1, super::EXC_BUSFAULT),
            (3, super::EXC_USAGEFAULT),
            (7, EXC_SVCALL),
            (8, super::EXC_DEBUGMON),
            (10, EXC_PENDSV),
            (11, EXC_SYSTICK),
        ] {
            self.nvic.set_active(exc, v & (1 << b) != 0);
        }
        for (b, exc) in
            [(12, super::EXC_USAGEFAULT), (13, super::EXC_MEMMANAGE), (14, super::EXC_BUSFAULT), (15, EXC_SVCALL)]
        {
            if v & (1 << b) != 0 {
                self.set_pending(exc);
            } else {
                self.nvic.clear_pending(exc);
            }
        }
    }

    /// DWT_CYCCNT: counts core cycles while CYCCNTENA and DEMCR.TRCENA (C1.8.6, C1.6.5).
    pub(crate) fn cyccnt(&self) -> u32 {
        if self.v7.dwt.cyccnt_on && self.dbg.demcr & DEMCR_TRCENA != 0 {
            self.cycles.wrapping_sub(self.v7.dwt.cyccnt_base) as u32
        } else {
            self.v7.dwt.cyccnt_held
        }
    }

    /// Whether any DWT comparator watches data addresses (FUNCTION 0b0101/0b0110/0b0111 with
    /// DATAVMATCH and CYCMATCH clear, C1.8.12) with the DWT enabled by DEMCR.TRCENA.
    pub(crate) fn update_watch(&mut self) {
        self.watch_armed = self.config().arch.is_v7()
            && self.dbg.demcr & DEMCR_TRCENA != 0
            && self.v7.dwt.function.iter().any(|f| f & 0x180 == 0 && matches!(f & 0xF, 5..=7));
        self.slow = self.watch_armed || self.mpu_on;
        self.service = true;
    }

    /// The comparators an access of `size` at `addr` matches (bit n = comparator n).
    pub(crate) fn watch_hits(dwt: &super::Dwt, addr: u32, size: Size, write: bool) -> u8 {
        let mut hits = 0;
        for n in 0..DWT_COMPARATORS {
            let f = dwt.function[n];
            let wants = match f & 0xF {
                5 => !write,
                6 => write,
                7 => true,
                _ => false,
            };
            if !wants || f & 0x180 != 0 {
                continue;
            }
            let ignore = if dwt.mask[n] >= 31 { u32::MAX >> 1 } else { (1u32 << dwt.mask[n]) - 1 };
            let (lo, hi) = (addr & !ignore, addr.wrapping_add(size.bytes() - 1) & !ignore);
            let c = dwt.comp[n] & !ignore;
            if lo == c || hi == c {
                hits |= 1 << n;
            }
        }
        hits
    }

    fn set_cyccnt(&mut self, v: u32) {
        self.v7.dwt.cyccnt_held = v;
        self.v7.dwt.cyccnt_base = self.cycles.wrapping_sub(v as u64);
    }

    pub(crate) fn shpr2(&self) -> u32 {
        (self.nvic.pri_svcall as u32) << 24
    }

    pub(crate) fn shpr3(&self) -> u32 {
        (self.nvic.pri_systick as u32) << 24 | (self.nvic.pri_pendsv as u32) << 16
    }

    /// DHCSR without the read side effects.
    pub(crate) fn dhcsr_peek(&self) -> u32 {
        let flags = [
            (self.dbg.c_debugen, DHCSR_C_DEBUGEN),
            (self.dbg.c_halt, DHCSR_C_HALT),
            (self.dbg.c_step, DHCSR_C_STEP),
            (self.dbg.c_maskints, DHCSR_C_MASKINTS),
            (self.dbg.regrdy, DHCSR_S_REGRDY),
            (self.halted.is_some(), DHCSR_S_HALT),
            (self.sleep.is_some(), DHCSR_S_SLEEP),
            (self.locked_up, DHCSR_S_LOCKUP),
            (self.retired != self.dbg.retire_mark, DHCSR_S_RETIRE_ST),
            (self.dbg.s_reset_st, DHCSR_S_RESET_ST),
        ];
        flags.iter().filter(|(on, _)| *on).fold(0, |v, (_, b)| v | b)
    }

    /// C1.6.2 DHCSR write: ignored without DBGKEY; software cannot set C_DEBUGEN.
    fn dhcsr_write(&mut self, v: u32, debug: bool) {
        if v >> 16 != DBGKEY {
            return;
        }
        if !debug && !self.dbg.c_debugen {
            return;
        }
        if debug && v & DHCSR_C_DEBUGEN == 0 {
            self.dbg.c_debugen = false;
            self.dbg.c_halt = false;
            self.dbg.c_step = false;
            self.dbg.c_maskints = false;
            self.leave_debug();
            return;
        }
        self.dbg.c_debugen = true;
        self.dbg.c_maskints = v & DHCSR_C_MASKINTS != 0;
        self.dbg.c_step = v & DHCSR_C_STEP != 0;
        if v & DHCSR_C_HALT != 0 {
            if self.halted.is_none() {
                self.enter_debug(HaltReason::Request);
            }
        } else {
            self.dbg.c_halt = false;
            self.leave_debug();
        }
    }

    /// C1.6.3 DCRSR: REGSEL[4:0], REGWnR[16]; the transfer completes at once (S_REGRDY).
    fn dcrsr_write(&mut self, v: u32) {
        if let Some(r) = Reg::from_regsel(v & 0x1F) {
            if v & (1 << 16) != 0 {
                self.set_reg(r, self.dbg.dcrdr);
            } else {
                self.dbg.dcrdr = self.reg(r);
            }
        }
        self.dbg.regrdy = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coresight_ids_name_the_components() {
        // PID0/PID1 carry the part number, CID1 the class.
        assert_eq!(coresight_id(SCS, 0xFE0), 0x08);
        assert_eq!(coresight_id(FPB, 0xFE0), 0x0B);
        assert_eq!(coresight_id(ROM_TABLE, 0xFE4), 0xB4);
        assert_eq!(coresight_id(ROM_TABLE, 0xFF4), 0x10);
        assert_eq!(coresight_id(DWT, 0xFF4), 0xE0);
        assert_eq!(coresight_id(SCS, 0xFFC), 0xB1);
    }
}
