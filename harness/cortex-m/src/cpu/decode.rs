//! Thumb decode: every 16-bit halfword maps to an [`Op`] once (when its code line is cached), and
//! execution dispatches on it. Field extraction stays in the executor: it is a few shifts.
//!
//! Encoding tables: ARMv6-M ARM (DDI0419) A5.2 (16-bit) and A5.3 (32-bit). ARMv7-M adds encodings
//! in the slots that are `Undefined` here (CBZ/CBNZ, IT, the whole 32-bit space): [`decode16_v7`]
//! extends this table, and `thumb2::decode32_v7` decodes the 32-bit space.

/// What a halfword is, as the first (or only) halfword of an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    // A5.2.1 shift (immediate), add, subtract, move, compare
    LslImm,
    LsrImm,
    AsrImm,
    AddReg3,
    SubReg3,
    AddImm3,
    SubImm3,
    MovImm8,
    CmpImm8,
    AddImm8,
    SubImm8,
    // A5.2.2 data processing
    And,
    Eor,
    LslReg,
    LsrReg,
    AsrReg,
    Adc,
    Sbc,
    RorReg,
    Tst,
    Rsb,
    CmpReg,
    Cmn,
    Orr,
    Mul,
    Bic,
    Mvn,
    // A5.2.3 special data instructions and branch and exchange
    AddHi,
    CmpHi,
    MovHi,
    Bx,
    Blx,
    LdrLit,
    // A5.2.4 load/store single data item
    StrReg,
    StrhReg,
    StrbReg,
    LdrsbReg,
    LdrReg,
    LdrhReg,
    LdrbReg,
    LdrshReg,
    StrImm,
    LdrImm,
    StrbImm,
    LdrbImm,
    StrhImm,
    LdrhImm,
    StrSp,
    LdrSp,
    Adr,
    AddRdSp,
    // A5.2.5 miscellaneous 16-bit instructions
    AddSpImm,
    SubSpImm,
    Sxth,
    Sxtb,
    Uxth,
    Uxtb,
    Push,
    Pop,
    Cps,
    Rev,
    Rev16,
    Revsh,
    Bkpt,
    Hint,
    Stm,
    Ldm,
    BCond,
    Udf,
    Svc,
    B,
    /// First halfword of a 32-bit instruction (A5.1: bits[15:11] = 0b11101/0b11110/0b11111).
    Wide,
    Undefined,
    /// ARMv7-M A7.7.21 CBZ/CBNZ.
    Cbz,
    /// ARMv7-M A7.7.38 IT.
    It,
    /// First halfword of an ARMv7-M 32-bit instruction; its [`super::thumb2::T32`] is predecoded
    /// into bits [31:24] of the entry when the second halfword is in the same code line.
    Wide7,
    /// An FPB comparator matches this address: a breakpoint debug event before the instruction.
    FpbBreak,
}

/// A cached instruction slot: the halfword in bits [15:0], its [`Op`] in bits [23:16].
pub(crate) type Entry = u32;

#[inline]
pub(crate) fn entry(hw: u16, op: Op) -> Entry {
    hw as u32 | (op as u32) << 16
}

#[inline(always)]
pub(crate) fn entry_op(e: Entry) -> Op {
    let v = (e >> 16) as u8;
    debug_assert!(v <= Op::FpbBreak as u8);
    // A table lookup rather than a transmute: `entry` only stores valid discriminants.
    OPS[v as usize]
}

/// Indexed by the stored byte; padded to 256 so the lookup needs no bounds check.
const OPS: [Op; 256] = {
    const LIST: [Op; Op::FpbBreak as usize + 1] = [
        Op::LslImm,
        Op::LsrImm,
        Op::AsrImm,
        Op::AddReg3,
        Op::SubReg3,
        Op::AddImm3,
        Op::SubImm3,
        Op::MovImm8,
        Op::CmpImm8,
        Op::AddImm8,
        Op::SubImm8,
        Op::And,
        Op::Eor,
        Op::LslReg,
        Op::LsrReg,
        Op::AsrReg,
        Op::Adc,
        Op::Sbc,
        Op::RorReg,
        Op::Tst,
        Op::Rsb,
        Op::CmpReg,
        Op::Cmn,
        Op::Orr,
        Op::Mul,
        Op::Bic,
        Op::Mvn,
        Op::AddHi,
        Op::CmpHi,
        Op::MovHi,
        Op::Bx,
        Op::Blx,
        Op::LdrLit,
        Op::StrReg,
        Op::StrhReg,
        Op::StrbReg,
        Op::LdrsbReg,
        Op::LdrReg,
        Op::LdrhReg,
        Op::LdrbReg,
        Op::LdrshReg,
        Op::StrImm,
        Op::LdrImm,
        Op::StrbImm,
        Op::LdrbImm,
        Op::StrhImm,
        Op::LdrhImm,
        Op::StrSp,
        Op::LdrSp,
        Op::Adr,
        Op::AddRdSp,
        Op::AddSpImm,
        Op::SubSpImm,
        Op::Sxth,
        Op::Sxtb,
        Op::Uxth,
        Op::Uxtb,
        Op::Push,
        Op::Pop,
        Op::Cps,
        Op::Rev,
        Op::Rev16,
        Op::Revsh,
        Op::Bkpt,
        Op::Hint,
        Op::Stm,
        Op::Ldm,
        Op::BCond,
        Op::Udf,
        Op::Svc,
        Op::B,
        Op::Wide,
        Op::Undefined,
        Op::Cbz,
        Op::It,
        Op::Wide7,
        Op::FpbBreak,
    ];
    let mut all = [Op::Undefined; 256];
    let mut i = 0;
    while i < LIST.len() {
        all[i] = LIST[i];
        i += 1;
    }
    all
};

/// Decode a 16-bit halfword as an ARMv6-M instruction (A5.2).
pub(crate) fn decode16(hw: u16) -> Op {
    let h = hw as u32;
    match h >> 11 {
        0b00000 => Op::LslImm,
        0b00001 => Op::LsrImm,
        0b00010 => Op::AsrImm,
        0b00011 => match (h >> 9) & 3 {
            0 => Op::AddReg3,
            1 => Op::SubReg3,
            2 => Op::AddImm3,
            _ => Op::SubImm3,
        },
        0b00100 => Op::MovImm8,
        0b00101 => Op::CmpImm8,
        0b00110 => Op::AddImm8,
        0b00111 => Op::SubImm8,
        0b01000 => {
            if h & (1 << 10) == 0 {
                const DP: [Op; 16] = [
                    Op::And,
                    Op::Eor,
                    Op::LslReg,
                    Op::LsrReg,
                    Op::AsrReg,
                    Op::Adc,
                    Op::Sbc,
                    Op::RorReg,
                    Op::Tst,
                    Op::Rsb,
                    Op::CmpReg,
                    Op::Cmn,
                    Op::Orr,
                    Op::Mul,
                    Op::Bic,
                    Op::Mvn,
                ];
                DP[((h >> 6) & 0xF) as usize]
            } else {
                match (h >> 8) & 3 {
                    0 => Op::AddHi,
                    1 => Op::CmpHi,
                    2 => Op::MovHi,
                    _ => {
                        if h & (1 << 7) == 0 {
                            Op::Bx
                        } else {
                            Op::Blx
                        }
                    }
                }
            }
        }
        0b01001 => Op::LdrLit,
        0b01010 | 0b01011 => {
            const LS: [Op; 8] = [
                Op::StrReg,
                Op::StrhReg,
                Op::StrbReg,
                Op::LdrsbReg,
                Op::LdrReg,
                Op::LdrhReg,
                Op::LdrbReg,
                Op::LdrshReg,
            ];
            LS[((h >> 9) & 7) as usize]
        }
        0b01100 => Op::StrImm,
        0b01101 => Op::LdrImm,
        0b01110 => Op::StrbImm,
        0b01111 => Op::LdrbImm,
        0b10000 => Op::StrhImm,
        0b10001 => Op::LdrhImm,
        0b10010 => Op::StrSp,
        0b10011 => Op::LdrSp,
        0b10100 => Op::Adr,
        0b10101 => Op::AddRdSp,
        0b10110 | 0b10111 => decode_misc(h),
        0b11000 => Op::Stm,
        0b11001 => Op::Ldm,
        0b11010 | 0b11011 => match (h >> 8) & 0xF {
            0xE => Op::Udf,
            0xF => Op::Svc,
            _ => Op::BCond,
        },
        0b11100 => Op::B,
        // 0b11101: 32-bit space; ARMv6-M defines nothing there, but it is still 32 bits long.
        _ => Op::Wide,
    }
}

/// Decode a 16-bit halfword as an ARMv7-M instruction (ARMv7-M ARM A5.2): the ARMv6-M table
/// plus CBZ/CBNZ and IT in the miscellaneous slots, and the 32-bit space with Thumb-2.
pub(crate) fn decode16_v7(hw: u16) -> Op {
    let h = hw as u32;
    match decode16(hw) {
        Op::Wide => Op::Wide7,
        // A5.2.5: 1011 x0x1 = CBNZ/CBZ.
        Op::Undefined if h & 0xF500 == 0xB100 => Op::Cbz,
        // A5.2.5: 1011 1111 xxxx xxxx with mask != 0 = IT.
        Op::Undefined if h & 0xFF00 == 0xBF00 && h & 0xF != 0 => Op::It,
        op => op,
    }
}

/// A5.2.5: miscellaneous 16-bit instructions (bits[15:12] = 0b1011).
fn decode_misc(h: u32) -> Op {
    let op = (h >> 5) & 0x7F; // bits[11:5]
    match op {
        0b0000000..=0b0000011 => Op::AddSpImm,
        0b0000100..=0b0000111 => Op::SubSpImm,
        0b0010000..=0b0010001 => Op::Sxth,
        0b0010010..=0b0010011 => Op::Sxtb,
        0b0010100..=0b0010101 => Op::Uxth,
        0b0010110..=0b0010111 => Op::Uxtb,
        0b0100000..=0b0101111 => Op::Push,
        0b0110011 => Op::Cps,
        0b1010000..=0b1010001 => Op::Rev,
        0b1010010..=0b1010011 => Op::Rev16,
        0b1010110..=0b1010111 => Op::Revsh,
        0b1100000..=0b1101111 => Op::Pop,
        0b1110000..=0b1110111 => Op::Bkpt,
        0b1111000..=0b1111111 => {
            // Hints have bits[3:0] = 0; otherwise it is IT, which ARMv6-M does not have.
            if h & 0xF == 0 { Op::Hint } else { Op::Undefined }
        }
        // CBZ/CBNZ, SETEND and the unallocated slots: UNDEFINED on ARMv6-M.
        _ => Op::Undefined,
    }
}

/// What a 32-bit instruction is (A5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wide {
    Bl,
    Msr,
    Mrs,
    Dsb,
    Dmb,
    Isb,
    Udf,
    Undefined,
}

/// Decode a 32-bit ARMv6-M instruction from its two halfwords (A5.3, A5.3.1, A5.3.2).
pub(crate) fn decode32(hw1: u16, hw2: u16) -> Wide {
    let (h1, h2) = (hw1 as u32, hw2 as u32);
    // op1 = hw1[12:11] must be 0b10 and op = hw2[15] must be 1: "branch and miscellaneous control".
    if h1 >> 11 != 0b11110 || h2 & 0x8000 == 0 {
        return Wide::Undefined;
    }
    let op1 = (h1 >> 4) & 0x7F; // hw1[10:4]
    let op2 = (h2 >> 12) & 0x7; // hw2[14:12]
    if op2 & 0b101 == 0b101 {
        return Wide::Bl;
    }
    match op2 {
        // A5.3.1: op1 = 0b1111111 with op2 = 0b010 is the permanently undefined space (UDF.W).
        0b010 if op1 == 0b1111111 => Wide::Udf,
        0b000 => match op1 {
            0b0111000 | 0b0111001 => Wide::Msr,
            0b0111011 => match (h2 >> 4) & 0xF {
                0b0100 => Wide::Dsb,
                0b0101 => Wide::Dmb,
                0b0110 => Wide::Isb,
                _ => Wide::Undefined,
            },
            0b0111110 | 0b0111111 => Wide::Mrs,
            _ => Wide::Undefined,
        },
        _ => Wide::Undefined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips_through_an_entry() {
        for (i, op) in OPS.iter().take(Op::FpbBreak as usize + 1).enumerate() {
            assert_eq!(*op as usize, i, "OPS table out of order at {op:?}");
            assert_eq!(entry_op(entry(0xBEEF, *op)), *op);
        }
    }

    #[test]
    fn representative_encodings() {
        let cases: &[(u16, Op)] = &[
            (0x0000, Op::LslImm), // movs r0, r0
            (0x1888, Op::AddReg3),
            (0x1E48, Op::SubImm3),
            (0x2001, Op::MovImm8),
            (0x4008, Op::And),
            (0x4348, Op::Mul),
            (0x4485, Op::AddHi), // add sp, r0
            (0x4770, Op::Bx),    // bx lr
            (0x47C0, Op::Blx),
            (0x4801, Op::LdrLit),
            (0x5E08, Op::LdrshReg),
            (0x9001, Op::StrSp),
            (0xA001, Op::Adr),
            (0xB082, Op::SubSpImm),
            (0xB2C0, Op::Uxtb),
            (0xB510, Op::Push),
            (0xB672, Op::Cps), // cpsid i
            (0xBA08, Op::Rev),
            (0xBA88, Op::Undefined), // HLT slot
            (0xBD10, Op::Pop),
            (0xBE00, Op::Bkpt),
            (0xBF30, Op::Hint),      // wfi
            (0xBF08, Op::Undefined), // IT
            (0xB100, Op::Undefined), // CBZ is ARMv7-M
            (0xC103, Op::Stm),
            (0xD0FE, Op::BCond),
            (0xDE00, Op::Udf),
            (0xDF00, Op::Svc),
            (0xE7FE, Op::B),
            (0xE800, Op::Wide),
            (0xF000, Op::Wide),
        ];
        for &(hw, op) in cases {
            assert_eq!(decode16(hw), op, "{hw:#06x}");
        }
    }

    #[test]
    fn wide_encodings() {
        assert_eq!(decode32(0xF000, 0xF800), Wide::Bl);
        assert_eq!(decode32(0xF7FF, 0xFFFE), Wide::Bl);
        assert_eq!(decode32(0xF380, 0x8810), Wide::Msr); // msr primask, r0
        assert_eq!(decode32(0xF3EF, 0x8009), Wide::Mrs); // mrs r0, psp
        assert_eq!(decode32(0xF3BF, 0x8F4F), Wide::Dsb);
        assert_eq!(decode32(0xF3BF, 0x8F5F), Wide::Dmb);
        assert_eq!(decode32(0xF3BF, 0x8F6F), Wide::Isb);
        assert_eq!(decode32(0xF3BF, 0x8F7F), Wide::Undefined);
        assert_eq!(decode32(0xF7F0, 0xA000), Wide::Udf);
        assert_eq!(decode32(0xF000, 0xA000), Wide::Undefined);
        assert_eq!(decode32(0xE800, 0x8000), Wide::Undefined, "0b11101 space is ARMv7-M only");
        assert_eq!(decode32(0xF000, 0x0000), Wide::Undefined, "hw2[15] = 0 is ARMv7-M data processing");
    }
}
