//! Decoded-instruction cache: direct-mapped lines of [`CODE_LINE_HALFWORDS`] pre-decoded
//! halfwords, filled through [`Bus::fetch_code_line`]. Coherence: the bus watches every line it
//! hands out and advances [`Bus::code_generation`] when one is written (any alias, any initiator);
//! the core compares generations after its own stores and at every service point, and FPB
//! changes flush it (breakpoints are baked into the entries).

use super::Cpu;
use super::decode::{Entry, Op, decode16, decode16_v7, entry, entry_op};
use super::thumb2::decode32_v7;
use crate::bus::{Bus, BusFault, BusFaultKind, CODE_LINE_BYTES, CODE_LINE_HALFWORDS, Size};

const LINES: usize = 512;
const LINE_SHIFT: u32 = CODE_LINE_BYTES.trailing_zeros();

pub(crate) struct ICache {
    /// Line number + 1 held by each slot (0 = empty).
    tags: Box<[u32; LINES]>,
    data: Box<[[Entry; CODE_LINE_HALFWORDS]; LINES]>,
    /// The bus's code generation the contents belong to.
    pub generation: u64,
}

impl ICache {
    pub fn new() -> Self {
        ICache {
            tags: Box::new([0; LINES]),
            data: vec![[0; CODE_LINE_HALFWORDS]; LINES]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!()),
            generation: 0,
        }
    }

    /// The halfword after `pc`, for an entry at `pc` that was predecoded from this line (so the
    /// line is cached and holds `pc + 2`).
    #[inline(always)]
    pub fn next_halfword(&self, pc: u32) -> u32 {
        let slot = (pc >> LINE_SHIFT) as usize & (LINES - 1);
        self.data[slot][((pc >> 1) as usize + 1) & (CODE_LINE_HALFWORDS - 1)] & 0xFFFF
    }

    pub fn flush(&mut self, generation: u64) {
        self.tags.fill(0);
        self.generation = generation;
    }
}

impl Cpu {
    /// The decoded halfword at `pc`.
    #[inline(always)]
    pub(crate) fn fetch<B: Bus>(&mut self, bus: &mut B, pc: u32) -> Result<Entry, BusFault> {
        let line = pc >> LINE_SHIFT;
        let slot = line as usize & (LINES - 1);
        if self.icache.tags[slot] == line + 1 {
            return Ok(self.icache.data[slot][(pc >> 1) as usize & (CODE_LINE_HALFWORDS - 1)]);
        }
        self.fetch_miss(bus, pc)
    }

    #[cold]
    #[inline(never)]
    fn fetch_miss<B: Bus>(&mut self, bus: &mut B, pc: u32) -> Result<Entry, BusFault> {
        // B3.1 Table B3-1 (both profiles): the Peripheral (0x40000000-0x5FFFFFFF), Device
        // (0xA0000000-0xDFFFFFFF) and System (0xE0000000-) regions are execute-never; on
        // ARMv7-M a fetch there is a MemManage IACCVIOL (B3.5.1), on ARMv6-M a HardFault.
        if super::mpu::default_xn(pc) {
            return Err(BusFault::new(pc, Size::Half, BusFaultKind::NotExecutable));
        }
        let line = pc >> LINE_SHIFT;
        let base = line << LINE_SHIFT;
        let mut raw = [0u16; CODE_LINE_HALFWORDS];
        // A line with an FPB-remapped word is not cached: every fetch reads the remap table
        // (C1.11.5), so changes to the SRAM table take effect at once.
        if self.dbg.fpb_remapping && self.fpb_remaps_line(line, LINE_SHIFT) {
            let hw = match self.fpb_remap_target(pc) {
                Some(t) => bus.fetch16(t)?,
                None => bus.fetch16(pc)?,
            };
            return Ok(self.decode_at(pc, hw));
        }
        if bus.fetch_code_line(base, &mut raw) {
            let slot = line as usize & (LINES - 1);
            for (i, hw) in raw.iter().enumerate() {
                self.icache.data[slot][i] = self.decode_at(base + 2 * i as u32, *hw);
            }
            if self.cfg.arch.is_v7() {
                // Predecode 32-bit instructions whose second halfword is in the line (bits [31:24]);
                // the others decode when they execute.
                let dsp = self.cfg.arch.has_dsp();
                for i in 0..CODE_LINE_HALFWORDS - 1 {
                    let e = self.icache.data[slot][i];
                    if entry_op(e) == Op::Wide7 {
                        let t = decode32_v7(raw[i], raw[i + 1], dsp);
                        self.icache.data[slot][i] = e | (t as u32) << 24;
                    }
                }
            }
            self.icache.tags[slot] = line + 1;
            return Ok(self.icache.data[slot][(pc >> 1) as usize & (CODE_LINE_HALFWORDS - 1)]);
        }
        let hw = bus.fetch16(pc)?;
        Ok(self.decode_at(pc, hw))
    }

    fn decode_at(&self, addr: u32, hw: u16) -> Entry {
        if self.fpb_matches(addr) {
            entry(hw, Op::FpbBreak)
        } else if self.cfg.arch.is_v7() {
            entry(hw, decode16_v7(hw))
        } else {
            entry(hw, decode16(hw))
        }
    }
}
