//! ARMv7-M / ARMv7E-M Thumb-2: the 32-bit instruction space (ARMv7-M ARM DDI0403E A5.3), IT
//! blocks (A7.3.3) and the DSP extension (A4.1, A5.3.12-A5.3.17 "ARMv7E-M" rows).
//!
//! Decode maps both halfwords to a [`T32`] once, when the code line is cached (it rides in bits
//! [31:24] of the first halfword's entry); execution extracts the fields with a few shifts. The
//! ARMv6-M path (`exec.rs`) is untouched: a v6-M core never produces `Op::Wide7`, `Op::It` or
//! `Op::Cbz`.

use super::decode::{Entry, Op, entry_op};
use super::exec::add_with_carry;
use super::{CCR_DIV_0_TRP, Cpu, Dwt, EXC_DEBUGMON, Exc, FaultKind, HaltReason, Sleep};
use crate::bus::{Attention, Bus, BusFault, CODE_LINE_HALFWORDS, Initiator, Size};

/// A bus that records which DWT comparators the data accesses through it match (C1.8): the
/// ARMv7-M run loop executes through it while watchpoints are armed, so the plain path pays
/// nothing for them.
struct WatchBus<'a, B: Bus> {
    inner: &'a mut B,
    dwt: Dwt,
    hits: u8,
}

impl<B: Bus> Bus for WatchBus<'_, B> {
    fn read(&mut self, addr: u32, size: Size, initiator: Initiator, cycle: u64) -> Result<u32, BusFault> {
        self.hits |= Cpu::watch_hits(&self.dwt, addr, size, false);
        self.inner.read(addr, size, initiator, cycle)
    }
    fn write(&mut self, addr: u32, size: Size, value: u32, initiator: Initiator, cycle: u64) -> Result<(), BusFault> {
        self.hits |= Cpu::watch_hits(&self.dwt, addr, size, true);
        self.inner.write(addr, size, value, initiator, cycle)
    }
    fn fetch16(&mut self, addr: u32) -> Result<u16, BusFault> {
        self.inner.fetch16(addr)
    }
    fn attention(&self) -> bool {
        self.inner.attention()
    }
    fn take_attention(&mut self) -> Attention {
        self.inner.take_attention()
    }
    fn irq_levels(&self) -> [u64; 4] {
        self.inner.irq_levels()
    }
    fn take_irq_pulses(&mut self) -> [u64; 4] {
        self.inner.take_irq_pulses()
    }
    fn deadline_cycle(&self) -> u64 {
        self.inner.deadline_cycle()
    }
    fn fetch_code_line(&mut self, line_addr: u32, out: &mut [u16; CODE_LINE_HALFWORDS]) -> bool {
        self.inner.fetch_code_line(line_addr, out)
    }
    fn code_generation(&self) -> u64 {
        self.inner.code_generation()
    }
}

/// What a 32-bit ARMv7-M instruction is. `Undecoded` (0) means "decode at execution" (the
/// second halfword was not in the cached line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum T32 {
    Undecoded = 0,
    Undefined,
    /// Coprocessor / floating-point space (A5.3.18): NOCP UsageFault without an FPU.
    Coproc,
    // A5.3.1 data processing (modified immediate), A5.3.11 (shifted register)
    DpImm,
    DpReg,
    // A5.3.3 data processing (plain binary immediate)
    Addw,
    Subw,
    Movw,
    Movt,
    Ssat,
    Usat,
    Ssat16,
    Usat16,
    Sbfx,
    Ubfx,
    Bfi,
    // A5.3.4 branches and miscellaneous control
    BCond,
    B,
    Bl,
    Msr,
    Mrs,
    Hint,
    Clrex,
    Barrier,
    Udf,
    // A5.3.5 load/store multiple
    Stm,
    Ldm,
    Stmdb,
    Ldmdb,
    // A5.3.6 load/store dual or exclusive, table branch
    Strex,
    Ldrex,
    Strexb,
    Strexh,
    Ldrexb,
    Ldrexh,
    Strd,
    Ldrd,
    Tbb,
    // A5.3.7-A5.3.10 load/store single
    StrImm12,
    StrImm8,
    StrReg,
    LdrImm12,
    LdrImm8,
    LdrReg,
    LdrLit,
    // A5.3.12 data processing (register)
    ShiftReg,
    Extend,
    Parallel,
    QArith,
    Rev,
    Sel,
    Clz,
    // A5.3.16 multiply, A5.3.17 long multiply and divide
    Mla,
    Mls,
    DspMul,
    Smull,
    Umull,
    Smlal,
    Umlal,
    Sdiv,
    Udiv,
    DspLong,
    Pkh,
}

const T32_LIST: [T32; T32::Pkh as usize + 1] = [
    T32::Undecoded,
    T32::Undefined,
    T32::Coproc,
    T32::DpImm,
    T32::DpReg,
    T32::Addw,
    T32::Subw,
    T32::Movw,
    T32::Movt,
    T32::Ssat,
    T32::Usat,
    T32::Ssat16,
    T32::Usat16,
    T32::Sbfx,
    T32::Ubfx,
    T32::Bfi,
    T32::BCond,
    T32::B,
    T32::Bl,
    T32::Msr,
    T32::Mrs,
    T32::Hint,
    T32::Clrex,
    T32::Barrier,
    T32::Udf,
    T32::Stm,
    T32::Ldm,
    T32::Stmdb,
    T32::Ldmdb,
    T32::Strex,
    T32::Ldrex,
    T32::Strexb,
    T32::Strexh,
    T32::Ldrexb,
    T32::Ldrexh,
    T32::Strd,
    T32::Ldrd,
    T32::Tbb,
    T32::StrImm12,
    T32::StrImm8,
    T32::StrReg,
    T32::LdrImm12,
    T32::LdrImm8,
    T32::LdrReg,
    T32::LdrLit,
    T32::ShiftReg,
    T32::Extend,
    T32::Parallel,
    T32::QArith,
    T32::Rev,
    T32::Sel,
    T32::Clz,
    T32::Mla,
    T32::Mls,
    T32::DspMul,
    T32::Smull,
    T32::Umull,
    T32::Smlal,
    T32::Umlal,
    T32::Sdiv,
    T32::Udiv,
    T32::DspLong,
    T32::Pkh,
];

#[inline(always)]
fn t32_of(byte: u32) -> T32 {
    T32_LIST.get(byte as usize).copied().unwrap_or(T32::Undecoded)
}

/// Decode a 32-bit ARMv7-M instruction (A5.3). `dsp`: the ARMv7E-M DSP extension exists.
pub(crate) fn decode32_v7(hw1: u16, hw2: u16, dsp: bool) -> T32 {
    let (h1, h2) = (hw1 as u32, hw2 as u32);
    let dsp_only = |t: T32| if dsp { t } else { T32::Undefined };
    // A5.3.18: coprocessor space (op1 = 01 or 11 with op2 = 1xxxxxx).
    if h1 & 0xEC00 == 0xEC00 {
        return T32::Coproc;
    }
    match (h1 >> 11) & 3 {
        0b01 => {
            if h1 & 0x0600 == 0 {
                if h1 & 0x40 == 0 {
                    // A5.3.5: op = hw1[8:7], L = hw1[4].
                    match ((h1 >> 7) & 3, h1 & 0x10 != 0) {
                        (0b01, false) => T32::Stm,
                        (0b01, true) => T32::Ldm,
                        (0b10, false) => T32::Stmdb,
                        (0b10, true) => T32::Ldmdb,
                        _ => T32::Undefined,
                    }
                } else {
                    // A5.3.6: op1 = hw1[8:7], op2 = hw1[5:4], op3 = hw2[7:4].
                    let (op1, op2, op3) = ((h1 >> 7) & 3, (h1 >> 4) & 3, (h2 >> 4) & 0xF);
                    match (op1, op2) {
                        (0b00, 0b00) => T32::Strex,
                        (0b00, 0b01) => T32::Ldrex,
                        (0b00 | 0b01, 0b10) | (0b10 | 0b11, 0b00 | 0b10) => T32::Strd,
                        (0b00 | 0b01, 0b11) | (0b10 | 0b11, 0b01 | 0b11) => T32::Ldrd,
                        (0b01, 0b00) => match op3 {
                            0b0100 => T32::Strexb,
                            0b0101 => T32::Strexh,
                            _ => T32::Undefined,
                        },
                        (0b01, 0b01) => match op3 {
                            0b0000 | 0b0001 => T32::Tbb,
                            0b0100 => T32::Ldrexb,
                            0b0101 => T32::Ldrexh,
                            _ => T32::Undefined,
                        },
                        _ => T32::Undefined,
                    }
                }
            } else if h1 & 0x0600 == 0x0200 {
                // A5.3.11: op = hw1[8:5]; 0110 is PKHBT/PKHTB (DSP).
                match (h1 >> 5) & 0xF {
                    0b0110 => dsp_only(T32::Pkh),
                    0b0000 | 0b0001 | 0b0010 | 0b0011 | 0b0100 | 0b1000 | 0b1010 | 0b1011 | 0b1101 | 0b1110 => {
                        T32::DpReg
                    }
                    _ => T32::Undefined,
                }
            } else {
                T32::Undefined
            }
        }
        0b10 => {
            if h2 & 0x8000 == 0 {
                if h1 & 0x0200 == 0 {
                    // A5.3.1: op = hw1[8:5].
                    match (h1 >> 5) & 0xF {
                        0b0000 | 0b0001 | 0b0010 | 0b0011 | 0b0100 | 0b1000 | 0b1010 | 0b1011 | 0b1101 | 0b1110 => {
                            T32::DpImm
                        }
                        _ => T32::Undefined,
                    }
                } else {
                    // A5.3.3: op = hw1[8:4].
                    let shift_zero = h2 & 0x70C0 == 0;
                    match (h1 >> 4) & 0x1F {
                        0b00000 => T32::Addw,
                        0b00100 => T32::Movw,
                        0b01010 => T32::Subw,
                        0b01100 => T32::Movt,
                        0b10000 => T32::Ssat,
                        0b10010 if shift_zero => dsp_only(T32::Ssat16),
                        0b10010 => T32::Ssat,
                        0b10100 => T32::Sbfx,
                        0b10110 => T32::Bfi,
                        0b11000 => T32::Usat,
                        0b11010 if shift_zero => dsp_only(T32::Usat16),
                        0b11010 => T32::Usat,
                        0b11100 => T32::Ubfx,
                        _ => T32::Undefined,
                    }
                }
            } else {
                // A5.3.4: op = hw1[10:4], op1 = hw2[14:12].
                let op = (h1 >> 4) & 0x7F;
                let op1 = (h2 >> 12) & 7;
                if op1 == 0b010 && op == 0b1111111 {
                    T32::Udf
                } else if op1 & 0b101 == 0b101 {
                    T32::Bl
                } else if op1 & 0b101 == 0b001 {
                    T32::B
                } else if op1 & 0b101 == 0b000 {
                    if op & 0b0111000 != 0b0111000 {
                        T32::BCond
                    } else {
                        match op {
                            0b0111000 | 0b0111001 => T32::Msr,
                            0b0111010 => T32::Hint,
                            0b0111011 => match (h2 >> 4) & 0xF {
                                0b0010 => T32::Clrex,
                                0b0100..=0b0110 => T32::Barrier,
                                _ => T32::Undefined,
                            },
                            0b0111110 | 0b0111111 => T32::Mrs,
                            _ => T32::Undefined,
                        }
                    }
                } else {
                    // op1 = 1x0 is BLX (immediate): not in ARMv7-M.
                    T32::Undefined
                }
            }
        }
        _ => {
            // op1 = 11: op2 = hw1[10:4].
            let op2 = (h1 >> 4) & 0x7F;
            if op2 & 0b1110001 == 0 {
                // A5.3.10 store single: op1 = hw1[7:5], op2 = hw2[11:6].
                let size = (h1 >> 5) & 3;
                // A7.7.158-A7.7.172: STR{B,H} with Rn = 1111 is UNDEFINED.
                if size == 3 || h1 & 0xF == 0xF {
                    T32::Undefined
                } else if h1 & 0x80 != 0 {
                    T32::StrImm12
                } else if h2 & 0x800 != 0 {
                    T32::StrImm8
                } else if h2 & 0xFC0 == 0 {
                    T32::StrReg
                } else {
                    T32::Undefined
                }
            } else if op2 & 0b1100001 == 0b0000001 {
                // A5.3.7-A5.3.9: loads (size hw1[6:5], S hw1[8], imm12 form hw1[7]).
                if (h1 >> 5) & 3 == 3 || ((h1 >> 5) & 3 == 2 && h1 & 0x100 != 0) {
                    T32::Undefined
                } else if h1 & 0xF == 0xF {
                    T32::LdrLit
                } else if h1 & 0x80 != 0 {
                    T32::LdrImm12
                } else if h2 & 0x800 != 0 {
                    T32::LdrImm8
                } else if h2 & 0xFC0 == 0 {
                    T32::LdrReg
                } else {
                    T32::Undefined
                }
            } else if op2 & 0b1110000 == 0b0100000 {
                // A5.3.12: op1 = hw1[7:4], op2 = hw2[7:4]; hw2[15:12] must be 1111.
                if h2 & 0xF000 != 0xF000 {
                    return T32::Undefined;
                }
                let (op1, op2) = ((h1 >> 4) & 0xF, (h2 >> 4) & 0xF);
                if op2 == 0 && op1 & 0b1000 == 0 {
                    T32::ShiftReg
                } else if op1 & 0b1000 == 0 && op2 & 0b1000 != 0 {
                    // SXTH/UXTH/SXTB/UXTB (Rn = 1111) are ARMv7-M; the rest of the family is DSP.
                    match op1 {
                        0b0000 | 0b0001 | 0b0100 | 0b0101 if h1 & 0xF == 0xF => T32::Extend,
                        0b0000..=0b0101 => dsp_only(T32::Extend),
                        _ => T32::Undefined,
                    }
                } else if op1 & 0b1000 != 0 && op2 & 0b1000 == 0 {
                    // A5.3.13/A5.3.14 parallel addition and subtraction, signed and unsigned.
                    if matches!(op1 & 7, 0b011 | 0b111) || op2 & 3 == 3 {
                        T32::Undefined
                    } else {
                        dsp_only(T32::Parallel)
                    }
                } else if op1 & 0b1100 == 0b1000 && op2 & 0b1100 == 0b1000 {
                    // A5.3.15 miscellaneous operations.
                    match (op1 & 3, op2 & 3) {
                        (0b00, _) => dsp_only(T32::QArith),
                        (0b01, _) => T32::Rev,
                        (0b10, 0b00) => dsp_only(T32::Sel),
                        (0b11, 0b00) => T32::Clz,
                        _ => T32::Undefined,
                    }
                } else {
                    T32::Undefined
                }
            } else if op2 & 0b1111000 == 0b0110000 {
                // A5.3.16: op1 = hw1[6:4], op2 = hw2[5:4]; hw2[7:6] must be 00.
                if h2 & 0xC0 != 0 {
                    return T32::Undefined;
                }
                match ((h1 >> 4) & 7, (h2 >> 4) & 3) {
                    (0b000, 0b00) => T32::Mla,
                    (0b000, 0b01) => T32::Mls,
                    (0b000, _) => T32::Undefined,
                    (0b001, _) => dsp_only(T32::DspMul),
                    (0b111, 0b00) => dsp_only(T32::DspMul),
                    (0b111, _) => T32::Undefined,
                    (_, 0b00 | 0b01) => dsp_only(T32::DspMul),
                    _ => T32::Undefined,
                }
            } else if op2 & 0b1111000 == 0b0111000 {
                // A5.3.17: op1 = hw1[6:4], op2 = hw2[7:4].
                match ((h1 >> 4) & 7, (h2 >> 4) & 0xF) {
                    (0b000, 0b0000) => T32::Smull,
                    (0b001, 0b1111) => T32::Sdiv,
                    (0b010, 0b0000) => T32::Umull,
                    (0b011, 0b1111) => T32::Udiv,
                    (0b100, 0b0000) => T32::Smlal,
                    (0b100, 0b1000..=0b1101) | (0b101, 0b1100 | 0b1101) | (0b110, 0b0110) => dsp_only(T32::DspLong),
                    (0b110, 0b0000) => T32::Umlal,
                    _ => T32::Undefined,
                }
            } else {
                T32::Undefined
            }
        }
    }
}

/// A2.2.1 Shift_C with the types of DecodeImmShift / DecodeRegShift: 0 LSL, 1 LSR, 2 ASR,
/// 3 ROR, 4 RRX. Amount 0 leaves value and carry.
#[inline(always)]
pub(crate) fn shift_c(x: u32, ty: u32, n: u32, c: bool) -> (u32, bool) {
    if n == 0 && ty != 4 {
        return (x, c);
    }
    match ty {
        0 => match n {
            1..=31 => (x << n, (x >> (32 - n)) & 1 != 0),
            32 => (0, x & 1 != 0),
            _ => (0, false),
        },
        1 => match n {
            1..=31 => (x >> n, (x >> (n - 1)) & 1 != 0),
            32 => (0, x >> 31 != 0),
            _ => (0, false),
        },
        2 => match n {
            1..=31 => (((x as i32) >> n) as u32, (x >> (n - 1)) & 1 != 0),
            _ => (((x as i32) >> 31) as u32, x >> 31 != 0),
        },
        3 => {
            let r = x.rotate_right(n & 31);
            (r, r >> 31 != 0)
        }
        _ => ((c as u32) << 31 | x >> 1, x & 1 != 0),
    }
}

/// A7.4.2 DecodeImmShift(type, imm5) -> (shift type, amount).
#[inline(always)]
fn decode_imm_shift(ty: u32, imm5: u32) -> (u32, u32) {
    match ty {
        0 => (0, imm5),
        1 | 2 => (ty, if imm5 == 0 { 32 } else { imm5 }),
        _ if imm5 == 0 => (4, 1),
        _ => (3, imm5),
    }
}

/// A5.3.2 ThumbExpandImm_C: the modified immediate and its carry.
#[inline(always)]
pub(crate) fn expand_imm_c(imm12: u32, c: bool) -> (u32, bool) {
    let imm8 = imm12 & 0xFF;
    if imm12 >> 10 == 0 {
        let v = match (imm12 >> 8) & 3 {
            0 => imm8,
            1 => imm8 << 16 | imm8,
            2 => imm8 << 24 | imm8 << 8,
            _ => imm8 * 0x0101_0101,
        };
        (v, c)
    } else {
        let v = (0x80 | (imm12 & 0x7F)).rotate_right(imm12 >> 7);
        (v, v >> 31 != 0)
    }
}

/// A2.2.3 SignedSatQ: saturate `x` to an `n`-bit signed range (1 <= n <= 32).
fn signed_sat(x: i64, n: u32) -> (u32, bool) {
    let max = (1i64 << (n - 1)) - 1;
    let min = -(1i64 << (n - 1));
    if x > max {
        (max as u32, true)
    } else if x < min {
        (min as u32, true)
    } else {
        (x as u32, false)
    }
}

/// A2.2.3 UnsignedSatQ: saturate `x` to an `n`-bit unsigned range (0 <= n <= 31).
fn unsigned_sat(x: i64, n: u32) -> (u32, bool) {
    let max = (1i64 << n) - 1;
    if x > max {
        (max as u32, true)
    } else if x < 0 {
        (0, true)
    } else {
        (x as u32, false)
    }
}

/// The 16-bit data-processing instructions that set flags outside an IT block and not inside
/// one (A7.3.3, "setflags = !InITBlock()" in each instruction's T1 decode).
fn sets_flags_outside_it(op: Op) -> bool {
    matches!(
        op,
        Op::LslImm
            | Op::LsrImm
            | Op::AsrImm
            | Op::AddReg3
            | Op::SubReg3
            | Op::AddImm3
            | Op::SubImm3
            | Op::MovImm8
            | Op::AddImm8
            | Op::SubImm8
            | Op::And
            | Op::Eor
            | Op::LslReg
            | Op::LsrReg
            | Op::AsrReg
            | Op::Adc
            | Op::Sbc
            | Op::RorReg
            | Op::Rsb
            | Op::Orr
            | Op::Mul
            | Op::Bic
            | Op::Mvn
    )
}

#[inline(always)]
fn rd(hw2: u32) -> usize {
    ((hw2 >> 8) & 0xF) as usize
}

#[inline(always)]
fn rt(hw2: u32) -> usize {
    ((hw2 >> 12) & 0xF) as usize
}

#[inline(always)]
fn rn(hw1: u32) -> usize {
    (hw1 & 0xF) as usize
}

#[inline(always)]
fn rm(hw2: u32) -> usize {
    (hw2 & 0xF) as usize
}

/// Halfword `i` (0 = bottom) of `x`, sign-extended.
#[inline(always)]
fn sh(x: u32, i: u32) -> i32 {
    (x >> (16 * i)) as u16 as i16 as i32
}

impl Cpu {
    /// The ARMv7-M slow path: inside an IT block, with DWT watchpoints armed, or with the MPU on.
    #[inline(never)]
    pub(crate) fn exec_slow<B: Bus>(&mut self, bus: &mut B, e: Entry, pc: u32) {
        // B3.5 ValidateAddress() for the instruction fetch: IACCVIOL (MemManage, no MMFAR).
        if self.mpu_on
            && let Err(f) = self.mpu_check_fetch(pc, e)
        {
            return self.raise(bus, Exc::Fault(FaultKind::InstructionBus(f)), pc);
        }
        if !self.watch_armed {
            if self.it != 0 {
                return self.exec_in_it(bus, e, pc);
            }
            return match self.exec(bus, e, pc) {
                Ok(()) => self.retired += 1,
                Err(x) => self.raise(bus, x, pc),
            };
        }
        let mut wb = WatchBus { inner: bus, dwt: self.v7.dwt.clone(), hits: 0 };
        if self.it != 0 {
            self.exec_in_it(&mut wb, e, pc);
        } else {
            match self.exec(&mut wb, e, pc) {
                Ok(()) => self.retired += 1,
                Err(x) => self.raise(&mut wb, x, pc),
            }
        }
        if wb.hits != 0 {
            self.watchpoint_event(wb.hits);
        }
    }

    /// C1.8.12 / C1.4: a data watchpoint matched (MATCHED set): halt after the instruction with
    /// halting debug, else a DebugMonitor exception with DEMCR.MON_EN, else nothing.
    fn watchpoint_event(&mut self, hits: u8) {
        for n in 0..self.v7.dwt.function.len() {
            if hits & (1 << n) != 0 {
                self.v7.dwt.function[n] |= 1 << 24;
            }
        }
        if self.dbg.c_debugen {
            if self.halted.is_none() {
                self.enter_debug(HaltReason::Watchpoint);
            }
        } else if self.dbg.demcr & super::ppb::DEMCR_MON_EN != 0 {
            self.dbg.dfsr |= super::ppb::DFSR_DWTTRAP;
            self.set_pending(EXC_DEBUGMON);
        }
    }

    /// One instruction inside an IT block (A7.3.3): a failed condition retires it as a NOP;
    /// 16-bit data processing does not set flags; ITSTATE advances unless the instruction faults
    /// (a fault stacks the ITSTATE of the faulting instruction; SVC returns after itself).
    #[inline(never)]
    pub(crate) fn exec_in_it<B: Bus>(&mut self, bus: &mut B, e: Entry, pc: u32) {
        let it = self.it;
        let advanced = if it & 7 == 0 { 0 } else { (it & 0xE0) | ((it << 1) & 0x1F) };
        let op = entry_op(e);
        // A7.7.17: BKPT is unconditional even inside an IT block; an FPB match is a debug event
        // before the instruction, whatever its condition. ITSTATE stays with the instruction.
        match op {
            Op::FpbBreak => return self.raise(bus, Exc::FpbBreak, pc),
            Op::Bkpt => return self.raise(bus, Exc::Bkpt, pc),
            _ => {}
        }
        let cond = (it >> 4) as u32;
        // A7.3.1 ConditionPassed: 0b1111 in ITSTATE behaves as "always" (UNPREDICTABLE).
        if cond != 0xF && !self.condition(cond) {
            let len = if (e & 0xFFFF) >> 11 >= 0b11101 { 4 } else { 2 };
            self.r[15] = pc.wrapping_add(len);
            self.cycles += 1;
            self.it = advanced;
            self.retired += 1;
            return;
        }
        let flags = (self.n, self.z, self.c, self.v);
        self.it = advanced;
        match self.exec(bus, e, pc) {
            Ok(()) => {
                if sets_flags_outside_it(op) {
                    (self.n, self.z, self.c, self.v) = flags;
                }
                self.retired += 1;
            }
            Err(x) => {
                if x != Exc::Svc {
                    self.it = it;
                }
                self.raise(bus, x, pc);
            }
        }
    }

    /// Write a data-processing result: SP keeps bits[1:0] clear, the PC branches (ALUWritePC,
    /// A2.3.1; UNPREDICTABLE for most 32-bit forms).
    #[inline(always)]
    fn wr(&mut self, d: usize, v: u32) {
        match d {
            15 => self.r[15] = v & !1,
            13 => self.r[13] = v & !3,
            _ => self.r[d] = v,
        }
    }

    /// A load's destination: a loaded PC interworks or returns from an exception (LoadWritePC).
    #[inline(always)]
    fn wr_load<B: Bus>(&mut self, bus: &mut B, t: usize, v: u32) -> Result<(), Exc> {
        if t == 15 {
            self.cycles += 2;
            return self.bx_write_pc(bus, v);
        }
        self.wr(t, v);
        Ok(())
    }

    /// Execute the 32-bit instruction at `pc` whose first-halfword entry is `e`.
    #[inline(never)]
    pub(crate) fn exec_t32<B: Bus>(&mut self, bus: &mut B, e: Entry, pc: u32) -> Result<(), Exc> {
        let h1 = e & 0xFFFF;
        let (t, h2) = match t32_of(e >> 24) {
            T32::Undecoded => {
                let h2 = match self.fetch(bus, pc.wrapping_add(2)) {
                    Ok(e2) => e2 & 0xFFFF,
                    Err(f) => return Err(Exc::Fault(FaultKind::InstructionBus(f))),
                };
                (decode32_v7(h1 as u16, h2 as u16, self.cfg.arch.has_dsp()), h2)
            }
            // Predecoded: the second halfword sits next to the first in the same cached line.
            t => (t, self.icache.next_halfword(pc)),
        };
        self.r[15] = pc.wrapping_add(4);
        let undefined = Exc::Fault(FaultKind::Undefined { opcode: h1 << 16 | h2 });
        match t {
            T32::Undecoded | T32::Undefined | T32::Udf => return Err(undefined),
            T32::Coproc => return Err(Exc::Fault(FaultKind::NoCoprocessor { opcode: h1 << 16 | h2 })),
            T32::DpImm => {
                let imm12 = (h1 >> 10 & 1) << 11 | (h2 >> 12 & 7) << 8 | h2 & 0xFF;
                let (imm, carry) = expand_imm_c(imm12, self.c);
                self.data_processing(h1, h2, imm, carry, pc);
            }
            T32::DpReg => {
                let (ty, n) = decode_imm_shift((h2 >> 4) & 3, (h2 >> 12 & 7) << 2 | (h2 >> 6) & 3);
                let (v, carry) = shift_c(self.operand(rm(h2), pc), ty, n, self.c);
                self.data_processing(h1, h2, v, carry, pc);
            }
            T32::Pkh => {
                // A7.7.94 PKHBT/PKHTB: tb = hw2[5] (ASR) else LSL.
                let imm = (h2 >> 12 & 7) << 2 | (h2 >> 6) & 3;
                let tb = h2 & 0x20 != 0;
                let (ty, n) = decode_imm_shift(if tb { 2 } else { 0 }, imm);
                let op2 = shift_c(self.r[rm(h2)], ty, n, self.c).0;
                let a = self.r[rn(h1)];
                let r = if tb { (a & 0xFFFF_0000) | (op2 & 0xFFFF) } else { (op2 & 0xFFFF_0000) | (a & 0xFFFF) };
                self.wr(rd(h2), r);
            }
            T32::Addw | T32::Subw => {
                // A7.7.3/A7.7.174 ADDW/SUBW; Rn = PC is ADR (Align(PC, 4)).
                let imm = (h1 >> 10 & 1) << 11 | (h2 >> 12 & 7) << 8 | h2 & 0xFF;
                let base = if rn(h1) == 15 { pc.wrapping_add(4) & !3 } else { self.r[rn(h1)] };
                let r = if t == T32::Addw { base.wrapping_add(imm) } else { base.wrapping_sub(imm) };
                self.wr(rd(h2), r);
            }
            T32::Movw | T32::Movt => {
                // A7.7.76 MOVW, A7.7.79 MOVT.
                let imm16 = (h1 & 0xF) << 12 | (h1 >> 10 & 1) << 11 | (h2 >> 12 & 7) << 8 | h2 & 0xFF;
                let d = rd(h2);
                let r = if t == T32::Movw { imm16 } else { (self.r[d] & 0xFFFF) | imm16 << 16 };
                self.wr(d, r);
            }
            T32::Ssat | T32::Usat => {
                // A7.7.153 SSAT / A7.7.205 USAT: optional LSL/ASR of Rn, then saturate; Q sticky.
                let imm = (h2 >> 12 & 7) << 2 | (h2 >> 6) & 3;
                let (ty, n) = decode_imm_shift((h1 >> 4) & 2, imm);
                let op = shift_c(self.r[rn(h1)], ty, n, self.c).0 as i32 as i64;
                let sat = h2 & 0x1F;
                let (r, q) = if t == T32::Ssat { signed_sat(op, sat + 1) } else { unsigned_sat(op, sat) };
                self.wr(rd(h2), r);
                self.q |= q;
            }
            T32::Ssat16 | T32::Usat16 => {
                // A7.7.154 SSAT16 / A7.7.206 USAT16.
                let sat = h2 & 0xF;
                let x = self.r[rn(h1)];
                let mut r = 0;
                for i in 0..2 {
                    let v = sh(x, i) as i64;
                    let (s, q) = if t == T32::Ssat16 { signed_sat(v, sat + 1) } else { unsigned_sat(v, sat) };
                    r |= (s & 0xFFFF) << (16 * i);
                    self.q |= q;
                }
                self.wr(rd(h2), r);
            }
            T32::Sbfx | T32::Ubfx => {
                // A7.7.111 SBFX / A7.7.193 UBFX; msb > 31 is UNPREDICTABLE (we clamp).
                let lsb = (h2 >> 12 & 7) << 2 | (h2 >> 6) & 3;
                let width = ((h2 & 0x1F) + 1).min(32 - lsb);
                let x = self.r[rn(h1)] >> lsb;
                let r = if width == 32 {
                    x
                } else if t == T32::Ubfx {
                    x & ((1 << width) - 1)
                } else {
                    (((x << (32 - width)) as i32) >> (32 - width)) as u32
                };
                self.wr(rd(h2), r);
            }
            T32::Bfi => {
                // A7.7.14 BFI, A7.7.13 BFC (Rn = 1111); msb < lsb is UNPREDICTABLE (no change).
                let lsb = (h2 >> 12 & 7) << 2 | (h2 >> 6) & 3;
                let msb = h2 & 0x1F;
                if msb >= lsb {
                    let width = msb - lsb + 1;
                    let mask = if width == 32 { u32::MAX } else { ((1u32 << width) - 1) << lsb };
                    let src = if rn(h1) == 15 { 0 } else { self.r[rn(h1)] << lsb };
                    let d = rd(h2);
                    let r = (self.r[d] & !mask) | (src & mask);
                    self.wr(d, r);
                }
            }
            T32::BCond => {
                // A7.7.12 B T3: imm32 = SignExtend(S:J2:J1:imm6:imm11:'0').
                if self.condition((h1 >> 6) & 0xF) {
                    let imm = (h1 >> 10 & 1) << 20 | (h2 >> 11 & 1) << 19 | (h2 >> 13 & 1) << 18 | (h1 & 0x3F) << 12;
                    let imm = imm | (h2 & 0x7FF) << 1;
                    let off = ((imm << 11) as i32 >> 11) as u32;
                    self.r[15] = pc.wrapping_add(4).wrapping_add(off);
                    self.cycles += 1;
                }
            }
            T32::B | T32::Bl => {
                // A7.7.12 B T4, A7.7.18 BL: I1 = NOT(J1 XOR S), I2 = NOT(J2 XOR S).
                let s = (h1 >> 10) & 1;
                let i1 = !((h2 >> 13) ^ s) & 1;
                let i2 = !((h2 >> 11) ^ s) & 1;
                let imm = s << 24 | i1 << 23 | i2 << 22 | (h1 & 0x3FF) << 12 | (h2 & 0x7FF) << 1;
                let off = ((imm << 7) as i32 >> 7) as u32;
                if t == T32::Bl {
                    self.r[14] = pc.wrapping_add(4) | 1;
                    self.cycles += 1;
                }
                self.r[15] = pc.wrapping_add(4).wrapping_add(off);
                self.cycles += 1;
            }
            T32::Msr => {
                // B5.2.3 MSR: mask = hw2[11:10] for the APSR.
                self.msr_v7(h2 & 0xFF, (h2 >> 10) & 3, self.r[rn(h1)]);
                self.cycles += 1;
            }
            T32::Mrs => {
                let v = self.mrs(h2 & 0xFF);
                let d = rd(h2);
                if d != 13 && d != 15 {
                    self.r[d] = v;
                }
                self.cycles += 1;
            }
            T32::Hint => match h2 & 0xFF {
                // A7.7.261 WFE, A7.7.262 WFI, A7.7.129 SEV (wide forms); others are NOPs.
                2 if !std::mem::take(&mut self.event) => {
                    self.sleep = Some(Sleep::Wfe);
                    self.service = true;
                }
                3 => {
                    self.sleep = Some(Sleep::Wfi);
                    self.service = true;
                }
                4 => self.event = true,
                _ => {}
            },
            // A7.7.23 CLREX.
            T32::Clrex => self.excl = None,
            T32::Barrier => self.cycles += 1,
            T32::Stm | T32::Stmdb | T32::Ldm | T32::Ldmdb => self.ldm_stm_wide(bus, t, h1, h2)?,
            T32::Ldrex | T32::Ldrexb | T32::Ldrexh => {
                // A7.7.52-54 LDREX{B,H}: aligned access, tags the address in the local monitor.
                let (size, off) = match t {
                    T32::Ldrex => (Size::Word, (h2 & 0xFF) << 2),
                    T32::Ldrexb => (Size::Byte, 0),
                    _ => (Size::Half, 0),
                };
                let addr = self.r[rn(h1)].wrapping_add(off);
                let v = self.load_aligned(bus, addr, size)?;
                self.excl = Some(addr);
                self.wr(rt(h2), v);
                self.cycles += 1;
            }
            T32::Strex | T32::Strexb | T32::Strexh => {
                // A7.7.167-169 STREX{B,H}: stores only if the monitor holds the address; Rd = 0
                // on success, 1 on failure; the monitor is cleared either way.
                let (size, off, d) = match t {
                    T32::Strex => (Size::Word, (h2 & 0xFF) << 2, rd(h2)),
                    T32::Strexb => (Size::Byte, 0, rm(h2)),
                    _ => (Size::Half, 0, rm(h2)),
                };
                let addr = self.r[rn(h1)].wrapping_add(off);
                if addr & (size.bytes() - 1) != 0 {
                    return Err(Exc::Fault(FaultKind::Unaligned { addr, size, write: true }));
                }
                let ok = self.excl == Some(addr);
                if ok {
                    self.store_aligned(bus, addr, size, self.r[rt(h2)])?;
                }
                self.excl = None;
                self.wr(d, !ok as u32);
                self.cycles += 1;
            }
            T32::Strd | T32::Ldrd => {
                // A7.7.50 LDRD / A7.7.166 STRD: P = hw1[8], U = hw1[7], W = hw1[5]; word aligned.
                let imm = (h2 & 0xFF) << 2;
                let (p, u, w) = (h1 & 0x100 != 0, h1 & 0x80 != 0, h1 & 0x20 != 0);
                if !p && !w {
                    return Err(undefined);
                }
                let n = rn(h1);
                // A7.7.51 (literal): a PC that is not word aligned is UNPREDICTABLE; Align(PC, 4).
                let base = if n == 15 { pc.wrapping_add(4) & !3 } else { self.r[n] };
                let offset_addr = if u { base.wrapping_add(imm) } else { base.wrapping_sub(imm) };
                let addr = if p { offset_addr } else { base };
                let (t1, t2) = (rt(h2), rd(h2));
                if t == T32::Ldrd {
                    let a = self.load_aligned(bus, addr, Size::Word)?;
                    let b = self.load_aligned(bus, addr.wrapping_add(4), Size::Word)?;
                    if w {
                        self.wr(n, offset_addr);
                    }
                    self.wr(t1, a);
                    self.wr(t2, b);
                } else {
                    let (a, b) = (self.r[t1], self.r[t2]);
                    self.store_aligned(bus, addr, Size::Word, a)?;
                    self.store_aligned(bus, addr.wrapping_add(4), Size::Word, b)?;
                    if w {
                        self.wr(n, offset_addr);
                    }
                }
                self.cycles += 2;
            }
            T32::Tbb => {
                // A7.7.185 TBB/TBH: PC = PC + 2 * table entry (H = hw2[4]).
                let base = self.operand(rn(h1), pc);
                let m = self.r[rm(h2)];
                let half = h2 & 0x10 != 0;
                let entry = if half {
                    self.load(bus, base.wrapping_add(m << 1), Size::Half)?
                } else {
                    self.load(bus, base.wrapping_add(m), Size::Byte)?
                };
                self.r[15] = pc.wrapping_add(4).wrapping_add(entry << 1);
                self.cycles += 3;
            }
            T32::StrImm12 | T32::StrImm8 | T32::StrReg | T32::LdrImm12 | T32::LdrImm8 | T32::LdrReg | T32::LdrLit => {
                self.load_store_single(bus, t, h1, h2, pc)?
            }
            T32::ShiftReg => {
                // A7.7.68/71/10/117 LSL/LSR/ASR/ROR (register), S = hw1[4].
                let ty = (h1 >> 5) & 3;
                let (r, carry) = shift_c(self.r[rn(h1)], ty, self.r[rm(h2)] & 0xFF, self.c);
                self.wr(rd(h2), r);
                if h1 & 0x10 != 0 {
                    self.set_nz(r);
                    self.c = carry;
                }
            }
            T32::Extend => {
                // A7.7.182-184/A7.7.221-223 {S,U}XT{A}{B,H,B16}: rotate Rm by 8 * hw2[5:4], extend,
                // add Rn unless Rn = 1111.
                let rot = ((h2 >> 4) & 3) * 8;
                let x = self.r[rm(h2)].rotate_right(rot);
                let n = rn(h1);
                let add = if n == 15 { 0 } else { self.r[n] };
                let r = match (h1 >> 4) & 7 {
                    0b000 => add.wrapping_add(x as u16 as i16 as i32 as u32),
                    0b001 => add.wrapping_add(x & 0xFFFF),
                    0b100 => add.wrapping_add(x as u8 as i8 as i32 as u32),
                    0b101 => add.wrapping_add(x & 0xFF),
                    0b010 => {
                        // SXTAB16: each halfword of Rn plus the sign-extended byte.
                        let lo = (add as u16).wrapping_add(x as u8 as i8 as i16 as u16);
                        let hi = ((add >> 16) as u16).wrapping_add((x >> 16) as u8 as i8 as i16 as u16);
                        (hi as u32) << 16 | lo as u32
                    }
                    _ => {
                        let lo = (add as u16).wrapping_add(x as u8 as u16);
                        let hi = ((add >> 16) as u16).wrapping_add((x >> 16) as u8 as u16);
                        (hi as u32) << 16 | lo as u32
                    }
                };
                self.wr(rd(h2), r);
            }
            T32::Parallel => self.parallel(h1, h2),
            T32::QArith => {
                // A7.7.97 QADD, A7.7.98 QDADD, A7.7.103 QSUB, A7.7.101 QDSUB: saturate, Q sticky.
                let (m, n) = (self.r[rm(h2)] as i32 as i64, self.r[rn(h1)] as i32 as i64);
                let op = (h2 >> 4) & 3;
                let n = if op & 1 != 0 {
                    let (d, q) = signed_sat(2 * n, 32);
                    self.q |= q;
                    d as i32 as i64
                } else {
                    n
                };
                let (r, q) = signed_sat(if op & 2 == 0 { m + n } else { m - n }, 32);
                self.q |= q;
                self.wr(rd(h2), r);
            }
            T32::Rev => {
                // A7.7.113/114/115 REV/REV16/REVSH, A7.7.112 RBIT (op2 = hw2[5:4]).
                let m = self.r[rm(h2)];
                let r = match (h2 >> 4) & 3 {
                    0 => m.swap_bytes(),
                    1 => ((m >> 8) & 0x00FF_00FF) | ((m << 8) & 0xFF00_FF00),
                    2 => m.reverse_bits(),
                    _ => (m as u16).swap_bytes() as i16 as i32 as u32,
                };
                self.wr(rd(h2), r);
            }
            T32::Sel => {
                // A7.7.125 SEL: byte i from Rn if GE[i] else from Rm.
                let (n, m) = (self.r[rn(h1)], self.r[rm(h2)]);
                let mut mask = 0u32;
                for i in 0..4 {
                    if self.ge & (1 << i) != 0 {
                        mask |= 0xFF << (8 * i);
                    }
                }
                self.wr(rd(h2), (n & mask) | (m & !mask));
            }
            T32::Clz => {
                let r = self.r[rm(h2)].leading_zeros();
                self.wr(rd(h2), r);
            }
            T32::Mla | T32::Mls => {
                // A7.7.74 MLA (Ra = 1111: A7.7.84 MUL), A7.7.75 MLS. No flags.
                let p = self.r[rn(h1)].wrapping_mul(self.r[rm(h2)]);
                let a = rt(h2);
                let r = if t == T32::Mls {
                    self.r[a].wrapping_sub(p)
                } else if a == 15 {
                    p
                } else {
                    self.r[a].wrapping_add(p)
                };
                self.wr(rd(h2), r);
            }
            T32::DspMul => self.dsp_multiply(h1, h2),
            T32::Smull | T32::Umull | T32::Smlal | T32::Umlal => {
                // A7.7.149 SMULL, A7.7.204 UMULL, A7.7.138 SMLAL, A7.7.203 UMLAL.
                let (n, m) = (self.r[rn(h1)], self.r[rm(h2)]);
                let (lo, hi) = (rt(h2), rd(h2));
                let acc = (self.r[hi] as u64) << 32 | self.r[lo] as u64;
                let r = match t {
                    T32::Smull => (n as i32 as i64 * m as i32 as i64) as u64,
                    T32::Umull => n as u64 * m as u64,
                    T32::Smlal => acc.wrapping_add((n as i32 as i64 * m as i32 as i64) as u64),
                    _ => acc.wrapping_add(n as u64 * m as u64),
                };
                self.wr(lo, r as u32);
                self.wr(hi, (r >> 32) as u32);
                self.cycles += 2;
            }
            T32::Sdiv | T32::Udiv => {
                // A7.7.127 SDIV, A7.7.195 UDIV: round towards zero; by zero gives 0, or a
                // DIVBYZERO UsageFault with CCR.DIV_0_TRP (B3.2.8).
                let (n, m) = (self.r[rn(h1)], self.r[rm(h2)]);
                if m == 0 && self.v7.ccr & CCR_DIV_0_TRP != 0 {
                    return Err(Exc::Fault(FaultKind::DivideByZero));
                }
                let r = if t == T32::Udiv {
                    n.checked_div(m).unwrap_or(0)
                } else {
                    (n as i32).checked_div(m as i32).map_or(if m == 0 { 0 } else { n }, |q| q as u32)
                };
                self.wr(rd(h2), r);
                // Cortex-M3 TRM 18.2: 2-12 cycles, early termination on small quotients.
                self.cycles +=
                    1 + (32 - (n | 1).leading_zeros()).saturating_sub(32 - (m | 1).leading_zeros()) as u64 / 4;
            }
            T32::DspLong => self.dsp_long(h1, h2),
        }
        Ok(())
    }

    /// A5.3.1/A5.3.11 data processing with `op2` (expanded immediate or shifted register) and
    /// the shifter's carry: op = hw1[8:5], S = hw1[4].
    #[inline(always)]
    fn data_processing(&mut self, h1: u32, h2: u32, op2: u32, carry: bool, pc: u32) {
        let s = h1 & 0x10 != 0;
        let (n, d) = (rn(h1), rd(h2));
        let a = self.operand(n, pc);
        let logical = |cpu: &mut Cpu, r: u32, write: bool| {
            if write {
                cpu.wr(d, r);
            }
            if s {
                cpu.set_nz(r);
                cpu.c = carry;
            }
        };
        let arith = |cpu: &mut Cpu, res: (u32, bool, bool), write: bool| {
            if write {
                cpu.wr(d, res.0);
            }
            if s {
                cpu.set_nzcv(res);
            }
        };
        // Rd = 1111 with S is the compare form (TST, TEQ, CMN, CMP).
        let test = d == 15 && s;
        match (h1 >> 5) & 0xF {
            0b0000 => logical(self, a & op2, !test),
            0b0001 => logical(self, a & !op2, true),
            0b0010 => logical(self, if n == 15 { op2 } else { a | op2 }, true),
            0b0011 => logical(self, if n == 15 { !op2 } else { a | !op2 }, true),
            0b0100 => logical(self, a ^ op2, !test),
            0b1000 => arith(self, add_with_carry(a, op2, false), !test),
            0b1010 => arith(self, add_with_carry(a, op2, self.c), true),
            0b1011 => arith(self, add_with_carry(a, !op2, self.c), true),
            0b1101 => arith(self, add_with_carry(a, !op2, true), !test),
            _ => arith(self, add_with_carry(!a, op2, true), true),
        }
    }

    /// A7.7.41 LDM.W / A7.7.42 LDMDB / A7.7.159 STM.W / A7.7.160 STMDB (PUSH.W/POP.W are the SP
    /// forms): word-aligned addresses only; registers change after all loads.
    fn ldm_stm_wide<B: Bus>(&mut self, bus: &mut B, t: T32, h1: u32, h2: u32) -> Result<(), Exc> {
        let n = rn(h1);
        let list = h2 & 0xDFFF;
        let count = list.count_ones();
        let wback = h1 & 0x20 != 0;
        let db = matches!(t, T32::Stmdb | T32::Ldmdb);
        let base = self.r[n];
        let start = if db { base.wrapping_sub(4 * count) } else { base };
        let end = if db { start } else { base.wrapping_add(4 * count) };
        let mut addr = start;
        if matches!(t, T32::Stm | T32::Stmdb) {
            for i in 0..15 {
                if list & (1 << i) != 0 {
                    self.store_aligned(bus, addr, Size::Word, self.r[i])?;
                    addr = addr.wrapping_add(4);
                }
            }
            if wback {
                self.wr(n, end);
            }
        } else {
            let mut vals = [0u32; 16];
            for (i, v) in vals.iter_mut().enumerate() {
                if list & (1 << i) != 0 {
                    *v = self.load_aligned(bus, addr, Size::Word)?;
                    addr = addr.wrapping_add(4);
                }
            }
            let before = self.r;
            if wback && list & (1 << n) == 0 {
                self.wr(n, end);
            }
            for (i, v) in vals.iter().enumerate().take(15) {
                if list & (1 << i) != 0 {
                    self.wr(i, *v);
                }
            }
            if list & 0x8000 != 0
                && let Err(x) = self.wr_load(bus, 15, vals[15])
            {
                // A failed exception return faults at the LDM with its registers as before.
                self.r = before;
                return Err(x);
            }
        }
        self.cycles += count as u64;
        Ok(())
    }

    /// A5.3.7-A5.3.10: LDR{B,H,SB,SH}/STR{B,H} with imm12, imm8 (P/U/W, T = unprivileged),
    /// register (LSL #0-3) and literal addressing. Rt = PC on a byte/halfword load is a memory
    /// hint (PLD/PLI, A7.7.98-100): a NOP here.
    fn load_store_single<B: Bus>(&mut self, bus: &mut B, t: T32, h1: u32, h2: u32, pc: u32) -> Result<(), Exc> {
        let size = match (h1 >> 5) & 3 {
            0 => Size::Byte,
            1 => Size::Half,
            _ => Size::Word,
        };
        let signed = h1 & 0x100 != 0;
        let n = rn(h1);
        let t_reg = rt(h2);
        let mut unpriv = false;
        let (addr, wback) = match t {
            T32::LdrLit => {
                let base = pc.wrapping_add(4) & !3;
                let imm = h2 & 0xFFF;
                (if h1 & 0x80 != 0 { base.wrapping_add(imm) } else { base.wrapping_sub(imm) }, None)
            }
            T32::LdrImm12 | T32::StrImm12 => (self.r[n].wrapping_add(h2 & 0xFFF), None),
            T32::LdrReg | T32::StrReg => (self.r[n].wrapping_add(self.r[rm(h2)] << ((h2 >> 4) & 3)), None),
            _ => {
                let (p, u, w) = (h2 & 0x400 != 0, h2 & 0x200 != 0, h2 & 0x100 != 0);
                if !p && !w {
                    return Err(Exc::Fault(FaultKind::Undefined { opcode: h1 << 16 | h2 }));
                }
                let imm = h2 & 0xFF;
                let base = self.r[n];
                let off = if u { base.wrapping_add(imm) } else { base.wrapping_sub(imm) };
                unpriv = p && u && !w;
                (if p { off } else { base }, w.then_some(off))
            }
        };
        let load = matches!(t, T32::LdrLit | T32::LdrImm12 | T32::LdrImm8 | T32::LdrReg);
        if load && t_reg == 15 && size != Size::Word {
            // Memory hints (and their UNPREDICTABLE writeback forms): no access.
            return Ok(());
        }
        // LDRT/STRT (A7.7.67/A7.7.176): an unprivileged access; without an MPU only the PPB
        // tells the difference (B3.2: privileged-only).
        // With the MPU on, the unprivileged permissions apply (B3.5 ValidateAddress with
        // AccType_UNPRIV); load/store check again with the current privilege, which allows
        // at least as much.
        if unpriv && self.mpu_on && !self.mpu_allows(addr, super::mpu::Access::from_write(!load), false) {
            return Err(Exc::Fault(FaultKind::DataBus(crate::bus::BusFault::new(
                addr,
                size,
                crate::bus::BusFaultKind::MpuViolation,
            ))));
        }
        if unpriv && super::is_ppb(addr) && self.privileged() {
            return Err(Exc::Fault(FaultKind::DataBus(crate::bus::BusFault::new(
                addr,
                size,
                crate::bus::BusFaultKind::Device("unprivileged access to the PPB"),
            ))));
        }
        if load {
            let v = self.load(bus, addr, size)?;
            let v = match (signed, size) {
                (true, Size::Byte) => v as u8 as i8 as i32 as u32,
                (true, Size::Half) => v as u16 as i16 as i32 as u32,
                _ => v,
            };
            if let Some(w) = wback {
                self.wr(n, w);
            }
            if t_reg == 15 && addr & 3 != 0 {
                // A7.7.43: a load to the PC from an unaligned address is UNPREDICTABLE; fault.
                return Err(Exc::Fault(FaultKind::Unaligned { addr, size, write: false }));
            }
            self.wr_load(bus, t_reg, v)?;
        } else {
            self.store(bus, addr, size, self.r[t_reg])?;
            if let Some(w) = wback {
                self.wr(n, w);
            }
        }
        self.cycles += 1;
        Ok(())
    }

    /// A5.3.13/A5.3.14 parallel addition and subtraction: op1 = hw1[6:4] (000 ADD8, 001 ADD16,
    /// 010 ASX, 100 SUB8, 101 SUB16, 110 SAX), hw2[6] = unsigned, hw2[5:4] = plain (sets GE),
    /// saturating (Q/UQ) or halving (SH/UH).
    fn parallel(&mut self, h1: u32, h2: u32) {
        let (a, b) = (self.r[rn(h1)], self.r[rm(h2)]);
        let op = (h1 >> 4) & 7;
        let unsigned = h2 & 0x40 != 0;
        let kind = (h2 >> 4) & 3;
        let (w, count) = if op & 3 == 0 { (8u32, 4) } else { (16u32, 2) };
        let lane = |x: u32, i: u32| -> i64 {
            let v = (x >> (w * i)) & ((1 << w) - 1);
            if unsigned {
                v as i64
            } else if w == 8 {
                v as u8 as i8 as i64
            } else {
                v as u16 as i16 as i64
            }
        };
        let mut r = 0u32;
        let mut ge = 0u8;
        for i in 0..count {
            // ASX: lane 0 = a0 - b1, lane 1 = a1 + b0; SAX: lane 0 = a0 + b1, lane 1 = a1 - b0.
            let (x, y, add) = match op {
                0b000 | 0b001 => (lane(a, i), lane(b, i), true),
                0b100 | 0b101 => (lane(a, i), lane(b, i), false),
                0b010 => (lane(a, i), lane(b, 1 - i), i == 1),
                _ => (lane(a, i), lane(b, 1 - i), i == 0),
            };
            let exact = if add { x + y } else { x - y };
            let v = match kind {
                1 => {
                    if unsigned {
                        unsigned_sat(exact, w).0 as i64
                    } else {
                        signed_sat(exact, w).0 as i32 as i64
                    }
                }
                2 => exact >> 1,
                _ => exact,
            };
            r |= ((v as u32) & ((1u32 << w) - 1)) << (w * i);
            if kind == 0 {
                // GE: signed result >= 0; unsigned add carries out, unsigned subtract >= 0.
                let set = if unsigned && add { exact >= (1 << w) } else { exact >= 0 };
                if set {
                    ge |= if w == 8 { 1 << i } else { 3 << (2 * i) };
                }
            }
        }
        if kind == 0 {
            self.ge = ge;
        }
        self.wr(rd(h2), r);
    }

    /// A5.3.16 DSP multiplies: SMLA<x><y>/SMUL<x><y>, SMLAD/SMUAD, SMLAW<y>/SMULW<y>,
    /// SMLSD/SMUSD, SMMLA/SMMUL, SMMLS, USADA8/USAD8 (Ra = 1111: the non-accumulating form).
    fn dsp_multiply(&mut self, h1: u32, h2: u32) {
        let (n, m) = (self.r[rn(h1)], self.r[rm(h2)]);
        let ra = rt(h2);
        let acc = if ra == 15 { None } else { Some(self.r[ra]) };
        let x = (h2 >> 4) & 1; // M / X / R bit
        let r = match (h1 >> 4) & 7 {
            0b001 => {
                // A7.7.130 SMLA<x><y>: N = hw2[5], M = hw2[4]; Q on overflow of the addition.
                let a = sh(n, (h2 >> 5) & 1) as i64;
                let b = sh(m, x) as i64;
                let p = a * b;
                match acc {
                    None => p as u32,
                    Some(c) => {
                        let s = p + c as i32 as i64;
                        self.q |= s != s as i32 as i64;
                        s as u32
                    }
                }
            }
            0b010 | 0b100 => {
                // A7.7.131 SMLAD / A7.7.141 SMLSD (and SMUAD/SMUSD): X swaps Rm's halves.
                let m2 = if x != 0 { m.rotate_right(16) } else { m };
                let p1 = sh(n, 0) as i64 * sh(m2, 0) as i64;
                let p2 = sh(n, 1) as i64 * sh(m2, 1) as i64;
                let s = if (h1 >> 4) & 7 == 0b010 { p1 + p2 } else { p1 - p2 } + acc.map_or(0, |c| c as i32 as i64);
                self.q |= s != s as i32 as i64;
                s as u32
            }
            0b011 => {
                // A7.7.135 SMLAW<y>: (Rn * Rm.y)[47:16] + Ra.
                let p = (n as i32 as i64 * sh(m, x) as i64) >> 16;
                match acc {
                    None => p as u32,
                    Some(c) => {
                        let s = p + c as i32 as i64;
                        self.q |= s != s as i32 as i64;
                        s as u32
                    }
                }
            }
            0b101 | 0b110 => {
                // A7.7.142-145 SMMLA/SMMLS/SMMUL: most significant word, R rounds.
                let p = n as i32 as i64 * m as i32 as i64;
                let a = (acc.unwrap_or(0) as i64) << 32;
                let mut s = if (h1 >> 4) & 7 == 0b101 { a.wrapping_add(p) } else { a.wrapping_sub(p) };
                if x != 0 {
                    s = s.wrapping_add(0x8000_0000);
                }
                (s >> 32) as u32
            }
            _ => {
                // A7.7.207/208 USAD8/USADA8.
                let mut s = acc.unwrap_or(0);
                for i in 0..4 {
                    let (a, b) = ((n >> (8 * i)) & 0xFF, (m >> (8 * i)) & 0xFF);
                    s = s.wrapping_add(a.abs_diff(b));
                }
                s
            }
        };
        self.wr(rd(h2), r);
    }

    /// A5.3.17 DSP long multiplies: SMLAL<x><y>, SMLALD, SMLSLD, UMAAL.
    fn dsp_long(&mut self, h1: u32, h2: u32) {
        let (n, m) = (self.r[rn(h1)], self.r[rm(h2)]);
        let (lo, hi) = (rt(h2), rd(h2));
        let acc = ((self.r[hi] as u64) << 32 | self.r[lo] as u64) as i64;
        let op2 = (h2 >> 4) & 0xF;
        let r: i64 = match ((h1 >> 4) & 7, op2) {
            (0b100, 0b1000..=0b1011) => {
                // A7.7.134 SMLAL<x><y>: N = hw2[5], M = hw2[4].
                acc.wrapping_add(sh(n, (op2 >> 1) & 1) as i64 * sh(m, op2 & 1) as i64)
            }
            (0b110, _) => {
                // A7.7.202 UMAAL: Rn * Rm + RdLo + RdHi (unsigned, never overflows 64 bits).
                (n as u64 * m as u64 + self.r[lo] as u64 + self.r[hi] as u64) as i64
            }
            (op1, _) => {
                // A7.7.133 SMLALD / A7.7.140 SMLSLD: X = hw2[4].
                let m2 = if op2 & 1 != 0 { m.rotate_right(16) } else { m };
                let p1 = sh(n, 0) as i64 * sh(m2, 0) as i64;
                let p2 = sh(n, 1) as i64 * sh(m2, 1) as i64;
                acc.wrapping_add(if op1 == 0b100 { p1 + p2 } else { p1 - p2 })
            }
        };
        self.wr(lo, r as u32);
        self.wr(hi, (r as u64 >> 32) as u32);
        self.cycles += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t32_table_is_in_discriminant_order() {
        for (i, t) in T32_LIST.iter().enumerate() {
            assert_eq!(*t as usize, i, "{t:?}");
        }
    }

    #[test]
    fn thumb_expand_imm_examples() {
        // A5.3.2 table.
        assert_eq!(expand_imm_c(0x0AB, false), (0xAB, false));
        assert_eq!(expand_imm_c(0x1AB, true), (0x00AB_00AB, true));
        assert_eq!(expand_imm_c(0x2AB, false), (0xAB00_AB00, false));
        assert_eq!(expand_imm_c(0x3AB, false), (0xABAB_ABAB, false));
        // 0b0100_0_0000000 = rotate 0x80 right by 8: 0x80000000, carry = bit 31.
        assert_eq!(expand_imm_c(0x400, false), (0x8000_0000, true));
        assert_eq!(expand_imm_c(0xFFF, true), (0x0000_01FE, false));
    }

    #[test]
    fn representative_decodes() {
        let cases: &[(u16, u16, T32)] = &[
            (0xF04F, 0x0001, T32::DpImm), // mov.w r0, #1
            (0xF1B0, 0x0F00, T32::DpImm), // cmp.w r0, #0
            (0xEA4F, 0x0010, T32::DpReg), // mov.w r0, r0, lsr #32? (lsr #0 -> 32)
            (0xF240, 0x0000, T32::Movw),  // movw r0, #0
            (0xF2C0, 0x0000, T32::Movt),  // movt r0, #0
            (0xF3C0, 0x0007, T32::Ubfx),  // ubfx r0, r0, #0, #8
            (0xF36F, 0x0007, T32::Bfi),   // bfc r0, #0, #8
            (0xE92D, 0x4010, T32::Stmdb), // push.w {r4, lr}
            (0xE8BD, 0x8010, T32::Ldm),   // pop.w {r4, pc}
            (0xE850, 0x1F00, T32::Ldrex), // ldrex r1, [r0]
            (0xE840, 0x1200, T32::Strex), // strex r2, r1, [r0]
            (0xE8D0, 0xF000, T32::Tbb),   // tbb [r0, r0]
            (0xE9D0, 0x2300, T32::Ldrd),  // ldrd r2, r3, [r0]
            (0xF8D0, 0x1004, T32::LdrImm12),
            (0xF850, 0x1B04, T32::LdrImm8), // ldr r1, [r0], #4
            (0xF850, 0x1021, T32::LdrReg),  // ldr r1, [r0, r1, lsl #2]
            (0xF8DF, 0x1004, T32::LdrLit),
            (0xF8C0, 0x1004, T32::StrImm12),
            (0xF8CF, 0x1004, T32::Undefined), // str.w r1, [pc, #4]
            (0xFB00, 0xF001, T32::Mla),       // mul r0, r0, r1
            (0xFB90, 0xF0F1, T32::Sdiv),
            (0xFBB0, 0xF0F1, T32::Udiv),
            (0xFBA0, 0x0101, T32::Umull),
            (0xFAB0, 0xF080, T32::Clz),
            (0xFA90, 0xF0A0, T32::Rev),    // rbit
            (0xFA1F, 0xF080, T32::Extend), // uxth.w
            (0xF3EF, 0x8011, T32::Mrs),    // mrs r0, basepri
            (0xF380, 0x8811, T32::Msr),    // msr basepri, r0
            (0xF3BF, 0x8F2F, T32::Clrex),
            (0xF3BF, 0x8F4F, T32::Barrier),
            (0xF3AF, 0x8000, T32::Hint),
            (0xF000, 0xB800, T32::B),
            (0xF000, 0x8000, T32::BCond),
            (0xF000, 0xF800, T32::Bl),
            (0xF7F0, 0xA000, T32::Udf),
            (0xEE10, 0x0A10, T32::Coproc), // vmov r0, s0
            (0xED9F, 0x0A00, T32::Coproc), // vldr s0, [pc]
        ];
        for &(a, b, t) in cases {
            assert_eq!(decode32_v7(a, b, false), t, "{a:#06x} {b:#06x}");
        }
        // DSP encodings exist only on ARMv7E-M.
        assert_eq!(decode32_v7(0xFA90, 0xF000, false), T32::Undefined); // sadd8
        assert_eq!(decode32_v7(0xFA90, 0xF000, true), T32::Parallel);
        assert_eq!(decode32_v7(0xFB10, 0x0000, true), T32::DspMul); // smlabb
        assert_eq!(decode32_v7(0xFAA0, 0xF080, true), T32::Sel);
    }

    #[test]
    fn shifts_follow_the_pseudocode() {
        assert_eq!(shift_c(0x8000_0001, 4, 1, true), (0xC000_0000, true)); // RRX
        assert_eq!(shift_c(0x8000_0000, 2, 32, false), (0xFFFF_FFFF, true));
        assert_eq!(shift_c(1, 0, 32, false), (0, true));
        assert_eq!(shift_c(1, 0, 33, true), (0, false));
        assert_eq!(shift_c(0x10, 3, 4, false), (0x1, false));
        assert_eq!(shift_c(0x8, 3, 4, false), (0x8000_0000, true));
    }
}
