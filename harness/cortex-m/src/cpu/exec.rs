//! Instruction execution (ARMv6-M ARM A6.7, pseudocode per instruction; flags per A2.2.1 and
//! the shift helpers of A2.2.2). Cycle counts follow the Cortex-M0+ TRM instruction timings
//! (most 1, loads/stores 2, taken branches 2, BL 3, LDM/STM/PUSH/POP 1+N, POP {PC} 3+N,
//! MSR/MRS/barriers 3), with zero-wait-state memory: close enough for device timing, not a
//! pipeline model.

use super::decode::{Entry, Op, Wide, decode32, entry_op};
use super::{Cpu, Exc, FaultKind, Sleep};
use crate::bus::{Bus, BusFault, Initiator, Size};

/// A2.2.1 AddWithCarry: (result, carry, overflow).
#[inline(always)]
pub(crate) fn add_with_carry(x: u32, y: u32, carry_in: bool) -> (u32, bool, bool) {
    let wide = x as u64 + y as u64 + carry_in as u64;
    let r = wide as u32;
    (r, wide >> 32 != 0, ((x ^ r) & (y ^ r)) >> 31 != 0)
}

#[inline(always)]
fn lo(hw: u32, shift: u32) -> usize {
    ((hw >> shift) & 7) as usize
}

impl Cpu {
    #[inline(always)]
    pub(crate) fn set_nz(&mut self, r: u32) {
        self.n = r >> 31 != 0;
        self.z = r == 0;
    }

    #[inline(always)]
    pub(crate) fn set_nzcv(&mut self, (r, c, v): (u32, bool, bool)) -> u32 {
        self.set_nz(r);
        self.c = c;
        self.v = v;
        r
    }

    /// A7.3 ConditionPassed for cond = bits[11:8] of B<c>.
    #[inline(always)]
    pub(crate) fn condition(&self, cond: u32) -> bool {
        let r = match cond >> 1 {
            0 => self.z,
            1 => self.c,
            2 => self.n,
            3 => self.v,
            4 => self.c && !self.z,
            5 => self.n == self.v,
            6 => !self.z && self.n == self.v,
            _ => true,
        };
        // Odd conditions negate the even ones; 0b1110 (AL) is the "true" row. 0b1111 is SVC.
        if cond & 1 != 0 { !r } else { r }
    }

    /// R[n] as an operand: the PC reads as the instruction address + 4 (A5.1.2).
    #[inline(always)]
    pub(crate) fn operand(&self, n: usize, pc: u32) -> u32 {
        if n == 15 { pc.wrapping_add(4) } else { self.r[n] }
    }

    /// BXWritePC / LoadWritePC (A5.1.2, B1.5.8): interworking branch, or exception return in
    /// Handler mode for 0xFxxxxxxx.
    #[inline]
    pub(crate) fn bx_write_pc<B: Bus>(&mut self, bus: &mut B, target: u32) -> Result<(), Exc> {
        if self.ipsr != 0 && target >> 28 == 0xF {
            return self.exception_return(bus, target).map_err(Exc::Fault);
        }
        self.branch_interworking(target);
        Ok(())
    }

    /// EPSR.T takes bit 0; clearing it makes the next instruction fault (INVSTATE).
    #[inline]
    pub(crate) fn branch_interworking(&mut self, target: u32) {
        self.r[15] = target & !1;
        if target & 1 == 0 {
            self.t = false;
            self.service = true;
        }
    }

    /// A single-register load (LDR, LDRH, LDRSH...): unaligned is a fault on ARMv6-M (A3.2) and
    /// allowed on ARMv7-M unless CCR.UNALIGN_TRP (ARMv7-M A3.2.1).
    #[inline(always)]
    pub(crate) fn load<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size) -> Result<u32, Exc> {
        if addr & (size.bytes() - 1) != 0 {
            return self.load_unaligned(bus, addr, size);
        }
        // B3.5: with the MPU on, the access is checked first (MemManage DACCVIOL).
        if self.mpu_on {
            self.mpu_check_data(addr, size, false).map_err(|f| Exc::Fault(FaultKind::DataBus(f)))?;
        }
        if super::is_ppb(addr) {
            return self.cpu_ppb_read(addr, size).map_err(|f| Exc::Fault(FaultKind::DataBus(f)));
        }
        let r = bus.read(addr, size, Initiator::Cpu, self.cycles);
        if bus.attention() {
            self.service = true;
        }
        match r {
            Ok(v) => Ok(v),
            Err(f) => self.load_error(bus, addr, size, f),
        }
    }

    /// A load the bus refused: a bit-band alias access (the board maps nothing there), or a
    /// BusFault.
    #[cold]
    #[inline(never)]
    fn load_error<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size, f: BusFault) -> Result<u32, Exc> {
        match self.bitband_target(addr, size) {
            Some((word, bit)) => {
                let v =
                    bus.read(word, size, Initiator::Cpu, self.cycles).map_err(|f| Exc::Fault(FaultKind::DataBus(f)))?;
                Ok((v >> bit) & 1)
            }
            None => Err(Exc::Fault(FaultKind::DataBus(f))),
        }
    }

    #[cold]
    #[inline(never)]
    fn store_error<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size, value: u32, f: BusFault) -> Result<(), Exc> {
        match self.bitband_target(addr, size) {
            Some((word, bit)) => {
                // Cortex-M3 TRM 3.7: a write to the alias is a locked read-modify-write of the bit.
                let fault = |f| Exc::Fault(FaultKind::DataBus(f));
                let old = bus.read(word, size, Initiator::Cpu, self.cycles).map_err(fault)?;
                let new = if value & 1 != 0 { old | 1 << bit } else { old & !(1 << bit) };
                bus.write(word, size, new, Initiator::Cpu, self.cycles).map_err(fault)?;
                if bus.code_generation() != self.icache.generation {
                    self.icache.flush(bus.code_generation());
                }
                Ok(())
            }
            None => Err(Exc::Fault(FaultKind::DataBus(f))),
        }
    }

    /// Bit-band (Cortex-M3/M4 TRM 3.7, PM0056 2.2.5): the 32 MiB aliases at 0x22000000 and
    /// 0x42000000 map each word to one bit of the first MiB of SRAM and peripherals. Returns the
    /// `size`-aligned target and the bit within it.
    fn bitband_target(&self, addr: u32, size: Size) -> Option<(u32, u32)> {
        if !self.cfg.bitband {
            return None;
        }
        let (alias, region) = match addr >> 25 {
            0x11 => (0x2200_0000, 0x2000_0000),
            0x21 => (0x4200_0000, 0x4000_0000),
            _ => return None,
        };
        let off = addr - alias;
        let byte = region + (off >> 5);
        let target = byte & !(size.bytes() - 1);
        Some((target, (byte - target) * 8 + ((off >> 2) & 7)))
    }

    /// A load that must be aligned on every profile (LDM, POP, LDRD, LDREX: ARMv7-M A3.2.1).
    #[inline(always)]
    pub(crate) fn load_aligned<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size) -> Result<u32, Exc> {
        if addr & (size.bytes() - 1) != 0 {
            return Err(Exc::Fault(FaultKind::Unaligned { addr, size, write: false }));
        }
        self.load(bus, addr, size)
    }

    #[inline(always)]
    pub(crate) fn store_aligned<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size, value: u32) -> Result<(), Exc> {
        if addr & (size.bytes() - 1) != 0 {
            return Err(Exc::Fault(FaultKind::Unaligned { addr, size, write: true }));
        }
        self.store(bus, addr, size, value)
    }

    /// Whether a single-register access may be unaligned (ARMv7-M A3.2.1, B3.2.8 UNALIGN_TRP).
    fn unaligned_allowed(&self, addr: u32) -> bool {
        self.cfg.arch.is_v7() && self.v7.ccr & super::CCR_UNALIGN_TRP == 0 && !super::is_ppb(addr)
    }

    /// ARMv7-M A3.2.1: an unaligned LDR/LDRH is performed as a sequence of byte accesses (the
    /// bus splits it); ARMv6-M and UNALIGN_TRP fault (UsageFault UNALIGNED on ARMv7-M).
    #[cold]
    #[inline(never)]
    fn load_unaligned<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size) -> Result<u32, Exc> {
        if !self.unaligned_allowed(addr) {
            return Err(Exc::Fault(FaultKind::Unaligned { addr, size, write: false }));
        }
        let mut v = 0;
        for i in 0..size.bytes() {
            v |= self.load(bus, addr.wrapping_add(i), Size::Byte)? << (8 * i);
        }
        Ok(v)
    }

    #[cold]
    #[inline(never)]
    fn store_unaligned<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size, value: u32) -> Result<(), Exc> {
        if !self.unaligned_allowed(addr) {
            return Err(Exc::Fault(FaultKind::Unaligned { addr, size, write: true }));
        }
        for i in 0..size.bytes() {
            self.store(bus, addr.wrapping_add(i), Size::Byte, value >> (8 * i))?;
        }
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn store<B: Bus>(&mut self, bus: &mut B, addr: u32, size: Size, value: u32) -> Result<(), Exc> {
        if addr & (size.bytes() - 1) != 0 {
            return self.store_unaligned(bus, addr, size, value);
        }
        if self.mpu_on {
            self.mpu_check_data(addr, size, true).map_err(|f| Exc::Fault(FaultKind::DataBus(f)))?;
        }
        if super::is_ppb(addr) {
            return self.cpu_ppb_write(addr, size, value).map_err(|f| Exc::Fault(FaultKind::DataBus(f)));
        }
        let r = bus.write(addr, size, value & size.mask(), Initiator::Cpu, self.cycles);
        if bus.attention() {
            self.service = true;
        }
        if bus.code_generation() != self.icache.generation {
            self.icache.flush(bus.code_generation());
        }
        match r {
            Ok(()) => Ok(()),
            Err(f) => self.store_error(bus, addr, size, value, f),
        }
    }

    /// Execute the instruction at `pc` whose first halfword is `e`.
    #[inline(always)]
    pub(crate) fn exec<B: Bus>(&mut self, bus: &mut B, e: Entry, pc: u32) -> Result<(), Exc> {
        let hw = e & 0xFFFF;
        self.r[15] = pc.wrapping_add(2);
        self.cycles += 1;
        match entry_op(e) {
            Op::LslImm => {
                let (imm, m) = ((hw >> 6) & 31, self.r[lo(hw, 3)]);
                // A6.7.35: LSL #0 is MOVS: C unchanged.
                let r = if imm == 0 {
                    m
                } else {
                    self.c = (m >> (32 - imm)) & 1 != 0;
                    m << imm
                };
                self.r[lo(hw, 0)] = r;
                self.set_nz(r);
            }
            Op::LsrImm => {
                let (imm, m) = ((hw >> 6) & 31, self.r[lo(hw, 3)]);
                // A2.2.2 DecodeImmShift: an immediate of 0 means 32.
                let r = if imm == 0 {
                    self.c = m >> 31 != 0;
                    0
                } else {
                    self.c = (m >> (imm - 1)) & 1 != 0;
                    m >> imm
                };
                self.r[lo(hw, 0)] = r;
                self.set_nz(r);
            }
            Op::AsrImm => {
                let (imm, m) = ((hw >> 6) & 31, self.r[lo(hw, 3)]);
                let r = if imm == 0 {
                    self.c = m >> 31 != 0;
                    ((m as i32) >> 31) as u32
                } else {
                    self.c = (m >> (imm - 1)) & 1 != 0;
                    ((m as i32) >> imm) as u32
                };
                self.r[lo(hw, 0)] = r;
                self.set_nz(r);
            }
            Op::AddReg3 => {
                let r = add_with_carry(self.r[lo(hw, 3)], self.r[lo(hw, 6)], false);
                self.r[lo(hw, 0)] = self.set_nzcv(r);
            }
            Op::SubReg3 => {
                let r = add_with_carry(self.r[lo(hw, 3)], !self.r[lo(hw, 6)], true);
                self.r[lo(hw, 0)] = self.set_nzcv(r);
            }
            Op::AddImm3 => {
                let r = add_with_carry(self.r[lo(hw, 3)], (hw >> 6) & 7, false);
                self.r[lo(hw, 0)] = self.set_nzcv(r);
            }
            Op::SubImm3 => {
                let r = add_with_carry(self.r[lo(hw, 3)], !((hw >> 6) & 7), true);
                self.r[lo(hw, 0)] = self.set_nzcv(r);
            }
            Op::MovImm8 => {
                let r = hw & 0xFF;
                self.r[lo(hw, 8)] = r;
                self.set_nz(r);
            }
            Op::CmpImm8 => {
                let r = add_with_carry(self.r[lo(hw, 8)], !(hw & 0xFF), true);
                self.set_nzcv(r);
            }
            Op::AddImm8 => {
                let r = add_with_carry(self.r[lo(hw, 8)], hw & 0xFF, false);
                self.r[lo(hw, 8)] = self.set_nzcv(r);
            }
            Op::SubImm8 => {
                let r = add_with_carry(self.r[lo(hw, 8)], !(hw & 0xFF), true);
                self.r[lo(hw, 8)] = self.set_nzcv(r);
            }
            Op::And => self.logical(hw, |a, b| a & b),
            Op::Eor => self.logical(hw, |a, b| a ^ b),
            Op::Orr => self.logical(hw, |a, b| a | b),
            Op::Bic => self.logical(hw, |a, b| a & !b),
            Op::Mvn => self.logical(hw, |_, b| !b),
            Op::Tst => {
                let r = self.r[lo(hw, 0)] & self.r[lo(hw, 3)];
                self.set_nz(r);
            }
            Op::LslReg => {
                let (a, n) = (self.r[lo(hw, 0)], self.r[lo(hw, 3)] & 0xFF);
                let r = match n {
                    0 => a,
                    1..=31 => {
                        self.c = (a >> (32 - n)) & 1 != 0;
                        a << n
                    }
                    32 => {
                        self.c = a & 1 != 0;
                        0
                    }
                    _ => {
                        self.c = false;
                        0
                    }
                };
                self.r[lo(hw, 0)] = r;
                self.set_nz(r);
            }
            Op::LsrReg => {
                let (a, n) = (self.r[lo(hw, 0)], self.r[lo(hw, 3)] & 0xFF);
                let r = match n {
                    0 => a,
                    1..=31 => {
                        self.c = (a >> (n - 1)) & 1 != 0;
                        a >> n
                    }
                    32 => {
                        self.c = a >> 31 != 0;
                        0
                    }
                    _ => {
                        self.c = false;
                        0
                    }
                };
                self.r[lo(hw, 0)] = r;
                self.set_nz(r);
            }
            Op::AsrReg => {
                let (a, n) = (self.r[lo(hw, 0)], self.r[lo(hw, 3)] & 0xFF);
                let r = match n {
                    0 => a,
                    1..=31 => {
                        self.c = (a >> (n - 1)) & 1 != 0;
                        ((a as i32) >> n) as u32
                    }
                    _ => {
                        self.c = a >> 31 != 0;
                        ((a as i32) >> 31) as u32
                    }
                };
                self.r[lo(hw, 0)] = r;
                self.set_nz(r);
            }
            Op::RorReg => {
                let (a, n) = (self.r[lo(hw, 0)], self.r[lo(hw, 3)] & 0xFF);
                // A2.2.2 ROR_C: amount 0 keeps C; a multiple of 32 leaves the value, C = bit 31.
                let r = if n == 0 {
                    a
                } else {
                    let r = a.rotate_right(n & 31);
                    self.c = r >> 31 != 0;
                    r
                };
                self.r[lo(hw, 0)] = r;
                self.set_nz(r);
            }
            Op::Adc => {
                let r = add_with_carry(self.r[lo(hw, 0)], self.r[lo(hw, 3)], self.c);
                self.r[lo(hw, 0)] = self.set_nzcv(r);
            }
            Op::Sbc => {
                let r = add_with_carry(self.r[lo(hw, 0)], !self.r[lo(hw, 3)], self.c);
                self.r[lo(hw, 0)] = self.set_nzcv(r);
            }
            Op::Rsb => {
                let r = add_with_carry(!self.r[lo(hw, 3)], 0, true);
                self.r[lo(hw, 0)] = self.set_nzcv(r);
            }
            Op::CmpReg => {
                let r = add_with_carry(self.r[lo(hw, 0)], !self.r[lo(hw, 3)], true);
                self.set_nzcv(r);
            }
            Op::Cmn => {
                let r = add_with_carry(self.r[lo(hw, 0)], self.r[lo(hw, 3)], false);
                self.set_nzcv(r);
            }
            Op::Mul => {
                // A6.7.44: N and Z only (C and V unchanged on ARMv6-M). STM32G0 has the
                // single-cycle multiplier option (PM0223 3.3).
                let r = self.r[lo(hw, 3)].wrapping_mul(self.r[lo(hw, 0)]);
                self.r[lo(hw, 0)] = r;
                self.set_nz(r);
            }
            Op::AddHi => {
                let d = ((hw & 7) | (hw >> 4) & 8) as usize;
                let m = ((hw >> 3) & 15) as usize;
                let r = self.operand(d, pc).wrapping_add(self.operand(m, pc));
                self.write_hi(d, r);
            }
            Op::CmpHi => {
                let n = ((hw & 7) | (hw >> 4) & 8) as usize;
                let m = ((hw >> 3) & 15) as usize;
                let r = add_with_carry(self.operand(n, pc), !self.operand(m, pc), true);
                self.set_nzcv(r);
            }
            Op::MovHi => {
                let d = ((hw & 7) | (hw >> 4) & 8) as usize;
                let r = self.operand(((hw >> 3) & 15) as usize, pc);
                self.write_hi(d, r);
            }
            Op::Bx => {
                let target = self.operand(((hw >> 3) & 15) as usize, pc);
                self.cycles += 1;
                self.bx_write_pc(bus, target)?;
            }
            Op::Blx => {
                let target = self.operand(((hw >> 3) & 15) as usize, pc);
                // A6.7.14: LR = next instruction with the Thumb bit; BLXWritePC never returns
                // from an exception.
                self.r[14] = pc.wrapping_add(2) | 1;
                self.cycles += 1;
                self.branch_interworking(target);
            }
            Op::LdrLit => {
                let addr = (pc.wrapping_add(4) & !3).wrapping_add((hw & 0xFF) << 2);
                self.r[lo(hw, 8)] = self.load(bus, addr, Size::Word)?;
                self.cycles += 1;
            }
            Op::StrReg => self.str_op(bus, hw, self.r[lo(hw, 6)], Size::Word)?,
            Op::StrhReg => self.str_op(bus, hw, self.r[lo(hw, 6)], Size::Half)?,
            Op::StrbReg => self.str_op(bus, hw, self.r[lo(hw, 6)], Size::Byte)?,
            Op::LdrReg => self.ldr_op(bus, hw, self.r[lo(hw, 6)], Size::Word, false)?,
            Op::LdrhReg => self.ldr_op(bus, hw, self.r[lo(hw, 6)], Size::Half, false)?,
            Op::LdrbReg => self.ldr_op(bus, hw, self.r[lo(hw, 6)], Size::Byte, false)?,
            Op::LdrsbReg => self.ldr_op(bus, hw, self.r[lo(hw, 6)], Size::Byte, true)?,
            Op::LdrshReg => self.ldr_op(bus, hw, self.r[lo(hw, 6)], Size::Half, true)?,
            Op::StrImm => self.str_op(bus, hw, ((hw >> 6) & 31) << 2, Size::Word)?,
            Op::LdrImm => self.ldr_op(bus, hw, ((hw >> 6) & 31) << 2, Size::Word, false)?,
            Op::StrbImm => self.str_op(bus, hw, (hw >> 6) & 31, Size::Byte)?,
            Op::LdrbImm => self.ldr_op(bus, hw, (hw >> 6) & 31, Size::Byte, false)?,
            Op::StrhImm => self.str_op(bus, hw, ((hw >> 6) & 31) << 1, Size::Half)?,
            Op::LdrhImm => self.ldr_op(bus, hw, ((hw >> 6) & 31) << 1, Size::Half, false)?,
            Op::StrSp => {
                let addr = self.r[13].wrapping_add((hw & 0xFF) << 2);
                self.store(bus, addr, Size::Word, self.r[lo(hw, 8)])?;
                self.cycles += 1;
            }
            Op::LdrSp => {
                let addr = self.r[13].wrapping_add((hw & 0xFF) << 2);
                self.r[lo(hw, 8)] = self.load(bus, addr, Size::Word)?;
                self.cycles += 1;
            }
            Op::Adr => self.r[lo(hw, 8)] = (pc.wrapping_add(4) & !3).wrapping_add((hw & 0xFF) << 2),
            Op::AddRdSp => self.r[lo(hw, 8)] = self.r[13].wrapping_add((hw & 0xFF) << 2),
            Op::AddSpImm => self.r[13] = self.r[13].wrapping_add((hw & 0x7F) << 2),
            Op::SubSpImm => self.r[13] = self.r[13].wrapping_sub((hw & 0x7F) << 2),
            Op::Sxth => self.r[lo(hw, 0)] = self.r[lo(hw, 3)] as u16 as i16 as i32 as u32,
            Op::Sxtb => self.r[lo(hw, 0)] = self.r[lo(hw, 3)] as u8 as i8 as i32 as u32,
            Op::Uxth => self.r[lo(hw, 0)] = self.r[lo(hw, 3)] & 0xFFFF,
            Op::Uxtb => self.r[lo(hw, 0)] = self.r[lo(hw, 3)] & 0xFF,
            Op::Rev => self.r[lo(hw, 0)] = self.r[lo(hw, 3)].swap_bytes(),
            Op::Rev16 => {
                let m = self.r[lo(hw, 3)];
                self.r[lo(hw, 0)] = ((m >> 8) & 0x00FF_00FF) | ((m << 8) & 0xFF00_FF00);
            }
            Op::Revsh => self.r[lo(hw, 0)] = (self.r[lo(hw, 3)] as u16).swap_bytes() as i16 as i32 as u32,
            Op::Push => self.push(bus, hw)?,
            Op::Pop => self.pop(bus, hw)?,
            Op::Stm => self.stm(bus, hw)?,
            Op::Ldm => self.ldm(bus, hw)?,
            Op::Cps => {
                // B4.2.1 CPS: privileged only (ignored otherwise); ARMv6-M has only the I bit.
                if self.privileged() && hw & 2 != 0 {
                    self.primask = hw & (1 << 4) != 0;
                    self.service = true;
                }
                // ARMv7-M B5.2.1: F sets FAULTMASK only below HardFault priority; clears always.
                if self.cfg.arch.is_v7() && self.privileged() && hw & 1 != 0 {
                    if hw & (1 << 4) == 0 {
                        self.faultmask = false;
                    } else if self.exec_priority() > -1 {
                        self.faultmask = true;
                    }
                    self.service = true;
                }
            }
            Op::Hint => match (hw >> 4) & 0xF {
                // A6.7.75 WFE: consume the event register, or sleep until an event.
                2 => {
                    self.cycles += 1;
                    if !std::mem::take(&mut self.event) {
                        self.sleep = Some(Sleep::Wfe);
                        self.service = true;
                    }
                }
                // A6.7.76 WFI: the service point decides whether a pending exception wakes it at once.
                3 => {
                    self.cycles += 1;
                    self.sleep = Some(Sleep::Wfi);
                    self.service = true;
                }
                // A6.7.57 SEV: the event register of every core, this one included.
                4 => self.event = true,
                // NOP, YIELD and unallocated hints execute as NOP (A5.2.5).
                _ => {}
            },
            Op::Bkpt => return Err(Exc::Bkpt),
            Op::FpbBreak => return Err(Exc::FpbBreak),
            Op::BCond => {
                if self.condition((hw >> 8) & 0xF) {
                    let off = ((hw as u8 as i8 as i32) << 1) as u32;
                    self.r[15] = pc.wrapping_add(4).wrapping_add(off);
                    self.cycles += 1;
                }
            }
            Op::B => {
                let off = (((hw << 21) as i32) >> 20) as u32;
                self.r[15] = pc.wrapping_add(4).wrapping_add(off);
                self.cycles += 1;
            }
            Op::Svc => return Err(Exc::Svc),
            Op::Udf => {
                let imm = hw as u8;
                if self.config().native_trap == Some(imm) {
                    return Err(Exc::NativeTrap(imm));
                }
                return Err(Exc::Fault(FaultKind::Undefined { opcode: hw }));
            }
            Op::Undefined => return Err(Exc::Fault(FaultKind::Undefined { opcode: hw })),
            Op::Wide => return self.exec32(bus, hw, pc),
            Op::Cbz => {
                // A7.7.21: CB{N}Z Rn, label (forward only, never inside an IT block).
                let imm = ((hw >> 9) & 1) << 6 | ((hw >> 3) & 0x1F) << 1;
                if (self.r[lo(hw, 0)] == 0) != (hw & 0x800 != 0) {
                    self.r[15] = pc.wrapping_add(4).wrapping_add(imm);
                    self.cycles += 1;
                }
            }
            // A7.7.38: ITSTATE = firstcond:mask; the next instructions run through exec_in_it.
            Op::It => self.it = hw as u8,
            Op::Wide7 => return self.exec_t32(bus, e, pc),
        }
        Ok(())
    }

    #[inline(always)]
    fn logical(&mut self, hw: u32, f: impl Fn(u32, u32) -> u32) {
        let r = f(self.r[lo(hw, 0)], self.r[lo(hw, 3)]);
        self.r[lo(hw, 0)] = r;
        self.set_nz(r);
    }

    /// Write a high-register result of ADD/MOV (A6.7.3, A6.7.40): the PC branches (ALUWritePC,
    /// no interworking), the SP keeps bits[1:0] clear.
    #[inline(always)]
    fn write_hi(&mut self, d: usize, r: u32) {
        match d {
            15 => {
                self.r[15] = r & !1;
                self.cycles += 1;
            }
            13 => self.r[13] = r & !3,
            _ => self.r[d] = r,
        }
    }

    #[inline(always)]
    fn str_op<B: Bus>(&mut self, bus: &mut B, hw: u32, offset: u32, size: Size) -> Result<(), Exc> {
        let addr = self.r[lo(hw, 3)].wrapping_add(offset);
        self.store(bus, addr, size, self.r[lo(hw, 0)])?;
        self.cycles += 1;
        Ok(())
    }

    #[inline(always)]
    fn ldr_op<B: Bus>(&mut self, bus: &mut B, hw: u32, offset: u32, size: Size, signed: bool) -> Result<(), Exc> {
        let addr = self.r[lo(hw, 3)].wrapping_add(offset);
        let v = self.load(bus, addr, size)?;
        self.r[lo(hw, 0)] = match (signed, size) {
            (true, Size::Byte) => v as u8 as i8 as i32 as u32,
            (true, Size::Half) => v as u16 as i16 as i32 as u32,
            _ => v,
        };
        self.cycles += 1;
        Ok(())
    }

    /// A6.7.50 PUSH: lowest register at the lowest address; SP moves only once all stores went
    /// through. An empty list is UNPREDICTABLE: nothing is stored.
    fn push<B: Bus>(&mut self, bus: &mut B, hw: u32) -> Result<(), Exc> {
        let list = hw & 0xFF;
        let count = list.count_ones() + (hw >> 8 & 1);
        let start = self.r[13].wrapping_sub(4 * count);
        let mut addr = start;
        for i in 0..8 {
            if list & (1 << i) != 0 {
                self.store_aligned(bus, addr, Size::Word, self.r[i])?;
                addr = addr.wrapping_add(4);
            }
        }
        if hw & 0x100 != 0 {
            self.store_aligned(bus, addr, Size::Word, self.r[14])?;
        }
        self.r[13] = start;
        self.cycles += count as u64;
        Ok(())
    }

    /// A6.7.49 POP: loads complete before any register changes (a fault leaves them intact);
    /// a loaded PC goes through LoadWritePC (interworking or exception return).
    fn pop<B: Bus>(&mut self, bus: &mut B, hw: u32) -> Result<(), Exc> {
        let list = hw & 0x1FF;
        let mut vals = [0u32; 9];
        let mut addr = self.r[13];
        for (i, v) in vals.iter_mut().enumerate() {
            if list & (1 << i) != 0 {
                *v = self.load_aligned(bus, addr, Size::Word)?;
                addr = addr.wrapping_add(4);
            }
        }
        let before = self.r;
        for (i, v) in vals.iter().take(8).enumerate() {
            if list & (1 << i) != 0 {
                self.r[i] = *v;
            }
        }
        self.r[13] = addr;
        self.cycles += list.count_ones() as u64;
        if list & 0x100 != 0 {
            self.cycles += 2;
            if let Err(x) = self.bx_write_pc(bus, vals[8]) {
                // A failed exception return faults at the POP: its registers are as before it.
                self.r = before;
                return Err(x);
            }
        }
        Ok(())
    }

    /// A6.7.58 STM (increment after, writeback). If Rn is in the list and not its lowest
    /// register the stored value is UNKNOWN: we store the original.
    fn stm<B: Bus>(&mut self, bus: &mut B, hw: u32) -> Result<(), Exc> {
        let n = lo(hw, 8);
        let list = hw & 0xFF;
        let mut addr = self.r[n];
        for i in 0..8 {
            if list & (1 << i) != 0 {
                self.store_aligned(bus, addr, Size::Word, self.r[i])?;
                addr = addr.wrapping_add(4);
            }
        }
        self.r[n] = addr;
        self.cycles += list.count_ones() as u64;
        Ok(())
    }

    /// A6.7.25 LDM: writeback unless Rn is in the list; registers change only after all loads.
    fn ldm<B: Bus>(&mut self, bus: &mut B, hw: u32) -> Result<(), Exc> {
        let n = lo(hw, 8);
        let list = hw & 0xFF;
        let mut vals = [0u32; 8];
        let mut addr = self.r[n];
        for (i, v) in vals.iter_mut().enumerate() {
            if list & (1 << i) != 0 {
                *v = self.load_aligned(bus, addr, Size::Word)?;
                addr = addr.wrapping_add(4);
            }
        }
        for (i, v) in vals.iter().enumerate() {
            if list & (1 << i) != 0 {
                self.r[i] = *v;
            }
        }
        if list & (1 << n) == 0 {
            self.r[n] = addr;
        }
        self.cycles += list.count_ones() as u64;
        Ok(())
    }

    /// 32-bit instructions (A5.3): BL, MSR, MRS, DSB, DMB, ISB, UDF.W.
    fn exec32<B: Bus>(&mut self, bus: &mut B, hw1: u32, pc: u32) -> Result<(), Exc> {
        let hw2 = match self.fetch(bus, pc.wrapping_add(2)) {
            Ok(e) => e & 0xFFFF,
            Err(f) => return Err(Exc::Fault(FaultKind::InstructionBus(f))),
        };
        self.r[15] = pc.wrapping_add(4);
        match decode32(hw1 as u16, hw2 as u16) {
            Wide::Bl => {
                // A6.7.13: I1 = NOT(J1 XOR S), I2 = NOT(J2 XOR S).
                let s = (hw1 >> 10) & 1;
                let i1 = !((hw2 >> 13) ^ s) & 1;
                let i2 = !((hw2 >> 11) ^ s) & 1;
                let imm = s << 24 | i1 << 23 | i2 << 22 | (hw1 & 0x3FF) << 12 | (hw2 & 0x7FF) << 1;
                let off = ((imm << 7) as i32 >> 7) as u32;
                self.r[14] = pc.wrapping_add(4) | 1;
                self.r[15] = pc.wrapping_add(4).wrapping_add(off);
                self.cycles += 2;
            }
            Wide::Msr => {
                self.msr(hw2 & 0xFF, self.r[(hw1 & 0xF) as usize]);
                self.cycles += 2;
            }
            Wide::Mrs => {
                let d = ((hw2 >> 8) & 0xF) as usize;
                let v = self.mrs(hw2 & 0xFF);
                // Rd = SP or PC is UNPREDICTABLE: such writes are dropped.
                if d != 13 && d != 15 {
                    self.r[d] = v;
                }
                self.cycles += 2;
            }
            Wide::Dsb | Wide::Dmb | Wide::Isb => self.cycles += 2,
            Wide::Udf | Wide::Undefined => {
                return Err(Exc::Fault(FaultKind::Undefined { opcode: hw1 << 16 | hw2 }));
            }
        }
        Ok(())
    }

    /// B4.2.3 MSR (ARMv6-M SYSm encoding, B4.2.1 table); ARMv7-M B5.2.3 adds BASEPRI,
    /// BASEPRI_MAX, FAULTMASK and the APSR write mask (`mask` = hw2[11:10]: nzcvq, g).
    pub(crate) fn msr_v7(&mut self, sysm: u32, mask: u32, v: u32) {
        let privileged = self.privileged();
        match sysm {
            0..=3 => {
                if mask & 2 != 0 {
                    self.n = v & (1 << 31) != 0;
                    self.z = v & (1 << 30) != 0;
                    self.c = v & (1 << 29) != 0;
                    self.v = v & (1 << 28) != 0;
                    self.q = v & (1 << 27) != 0;
                }
                if mask & 1 != 0 && self.cfg.arch.has_dsp() {
                    self.ge = (v >> 16) as u8 & 0xF;
                }
            }
            17 if privileged => {
                self.basepri = v as u8 & self.nvic.prio_mask;
                self.service = true;
            }
            // BASEPRI_MAX: only raises the masking level (a lower nonzero value).
            18 if privileged => {
                let b = v as u8 & self.nvic.prio_mask;
                if b != 0 && (self.basepri == 0 || b < self.basepri) {
                    self.basepri = b;
                }
            }
            // FAULTMASK can be set only below HardFault priority.
            19 if privileged => {
                if v & 1 == 0 {
                    self.faultmask = false;
                } else if self.exec_priority() > -1 {
                    self.faultmask = true;
                }
                self.service = true;
            }
            _ => self.msr(sysm, v),
        }
    }

    /// B4.2.3 MSR (ARMv6-M SYSm encoding, B4.2.1 table).
    pub(crate) fn msr(&mut self, sysm: u32, v: u32) {
        let privileged = self.privileged();
        match sysm >> 3 {
            // xPSR group: only the APSR flags are writable (SYSm<2> = 0 selects APSR).
            0 if sysm & 4 == 0 => self.set_apsr(v),
            1 if privileged => match sysm & 7 {
                0 => self.set_msp(v),
                1 => self.set_psp(v),
                _ => {}
            },
            2 if privileged => match sysm & 7 {
                0 => {
                    self.primask = v & 1 != 0;
                    self.service = true;
                }
                4 => {
                    // CONTROL.SPSEL only changes in Thread mode.
                    self.npriv = v & 1 != 0;
                    let spsel = if self.ipsr == 0 { v & 2 != 0 } else { self.spsel };
                    self.set_stack_state(self.ipsr, spsel);
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// B4.2.2 MRS. EPSR reads as zero; unprivileged code reads MSP, PSP and PRIMASK as zero
    /// (only the xPSR group and CONTROL are readable without privilege).
    pub(crate) fn mrs(&self, sysm: u32) -> u32 {
        let privileged = self.privileged();
        match sysm >> 3 {
            0 => {
                let mut v = 0;
                if sysm & 1 != 0 {
                    v |= self.ipsr;
                }
                if sysm & 4 == 0 {
                    v |= self.apsr();
                }
                v
            }
            1 if privileged => match sysm & 7 {
                0 => self.msp(),
                1 => self.psp(),
                _ => 0,
            },
            2 => match sysm & 7 {
                0 if privileged => self.primask as u32,
                // ARMv7-M B5.2.2: BASEPRI, BASEPRI_MAX (same register), FAULTMASK.
                1 | 2 if privileged && self.cfg.arch.is_v7() => self.basepri as u32,
                3 if privileged && self.cfg.arch.is_v7() => self.faultmask as u32,
                4 => self.control(),
                _ => 0,
            },
            _ => 0,
        }
    }
}
