//! The ARMv7-M Protected Memory System Architecture (PMSAv7, DDI0403E B3.5): MPU_TYPE, MPU_CTRL,
//! MPU_RNR, MPU_RBAR, MPU_RASR and their aliases, and the access check of the ValidateAddress()
//! pseudocode (B3.5.2-B3.5.9 and the "MPU pseudocode" of B3.5).
//!
//! Cost model: the check runs only while [`Cpu::mpu_on`] is set (an MPU exists and
//! MPU_CTRL.ENABLE is set). Loads and stores test that one flag; instruction fetches are checked
//! on the ARMv7-M slow path, which the run loop takes while the flag is set (the decoded-code
//! cache cannot know the privilege an instruction runs with). With the MPU off nothing else runs.
//!
//! Choices where the architecture says UNPREDICTABLE (B3.5.x, documented here and tested):
//! - RASR.SIZE < 4 (regions under 32 bytes): the region is matched as a 32-byte region.
//! - RASR.SRD nonzero for regions under 256 bytes: the subregion bits are ignored (all enabled).
//! - RASR.AP = 0b100 (reserved): no access for anyone.
//! - RNR (or RBAR.REGION with VALID) naming a region that does not exist: RNR keeps the value;
//!   RBAR/RASR then read as zero and ignore writes.
//! - RBAR.ADDR bits below the region size: ignored by the match (as the pseudocode compares
//!   address<31:lsbit> only).
//! - MPU_CTRL.ENABLE = 0 with HFNMIENA = 1: the MPU is off.
//!
//! Deviation, documented: an MPU region with XN = 0 over the default map's execute-never
//! Peripheral/Device regions (0x40000000-0x5FFFFFFF, 0xA0000000-0xDFFFFFFF) does not make them
//! executable here: the fetch path refuses them before the MPU is asked (no firmware runs code
//! from peripheral space).

use super::Cpu;
use crate::bus::{BusFault, BusFaultKind, Size};

/// MPU_CTRL bits (B3.5.6).
pub(crate) const CTRL_ENABLE: u32 = 1 << 0;
pub(crate) const CTRL_HFNMIENA: u32 = 1 << 1;
pub(crate) const CTRL_PRIVDEFENA: u32 = 1 << 2;

/// MPU_RASR writable bits (B3.5.9): XN[28], AP[26:24], TEX[21:19], S[18], C[17], B[16],
/// SRD[15:8], SIZE[5:1], ENABLE[0].
const RASR_MASK: u32 = 1 << 28 | 7 << 24 | 0x3F << 16 | 0xFF << 8 | 0x1F << 1 | 1;

/// Most regions the model holds (RBAR.REGION is four bits wide, B3.5.8).
pub(crate) const MAX_REGIONS: u8 = 16;

/// MPU registers (reset by any reset of the core: the MPU is part of the SCS, B3.5).
#[derive(Clone, Debug, Default)]
pub(crate) struct Mpu {
    pub ctrl: u32,
    pub rnr: u32,
    /// RBAR.ADDR (bits [31:5]) per region.
    pub rbar: [u32; MAX_REGIONS as usize],
    pub rasr: [u32; MAX_REGIONS as usize],
}

/// What kind of access is checked (the pseudocode's AccType plus the write flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
    Fetch,
}

impl Access {
    pub(crate) fn from_write(write: bool) -> Access {
        if write { Access::Write } else { Access::Read }
    }
}

/// Default memory map execute-never (B3.1 Table B3-1, DefaultPermissions()): Peripheral
/// (0x40000000-0x5FFFFFFF), Device (0xA0000000-0xDFFFFFFF) and System (0xE0000000-) space.
#[inline]
pub(crate) fn default_xn(addr: u32) -> bool {
    matches!(addr >> 29, 2 | 5 | 6 | 7)
}

/// CheckPermission() (B3.5 pseudocode, AP encoding of B3.5.9 Table B3-15): whether `ap` lets an
/// access of this kind and privilege through. A fetch needs read permission.
fn ap_allows(ap: u32, privileged: bool, write: bool) -> bool {
    match ap & 7 {
        0b001 => privileged,
        0b010 => privileged || !write,
        0b011 => true,
        0b101 => privileged && !write,
        0b110 | 0b111 => !write,
        // 0b000 no access; 0b100 reserved (UNPREDICTABLE): no access.
        _ => false,
    }
}

impl Mpu {
    /// The highest-numbered enabled region that holds `addr` in an enabled subregion (B3.5.3:
    /// the highest region number wins), as its RASR.
    fn lookup(&self, regions: u8, addr: u32) -> Option<u32> {
        (0..regions as usize).rev().find_map(|r| {
            let rasr = self.rasr[r];
            if rasr & 1 == 0 {
                return None;
            }
            // lsbit = SIZE + 1; SIZE < 4 is UNPREDICTABLE: matched as 32 bytes.
            let lsbit = (((rasr >> 1) & 0x1F) + 1).max(5);
            if lsbit < 32 && (addr ^ self.rbar[r]) >> lsbit != 0 {
                return None;
            }
            // B3.5.4 subregions: eight equal parts; SRD bit n disables part n. Regions under
            // 256 bytes have none (UNPREDICTABLE if SRD is nonzero: ignored).
            if lsbit >= 8 {
                let sub = (addr >> (lsbit - 3)) & 7;
                if rasr & (1 << (8 + sub)) != 0 {
                    return None;
                }
            }
            Some(rasr)
        })
    }
}

impl Cpu {
    /// Recompute the flags the run loop tests: the MPU is consulted at all, the slow path is due.
    pub(crate) fn update_mpu(&mut self) {
        self.mpu_on = self.cfg.mpu_regions > 0 && self.v7.mpu.ctrl & CTRL_ENABLE != 0;
        self.slow = self.watch_armed || self.mpu_on;
        self.service = true;
    }

    /// ValidateAddress() (B3.5 pseudocode) for an access at `addr` with privilege `privileged`:
    /// Ok when the access may proceed. PPB accesses always use the default map; with HFNMIENA
    /// clear the MPU is off at execution priority < 0 (HardFault, NMI, FAULTMASK); PRIVDEFENA
    /// makes the default map a background region for privileged accesses.
    pub(crate) fn mpu_allows(&self, addr: u32, access: Access, privileged: bool) -> bool {
        !self.mpu_on || self.mpu_allows_at(addr, access, privileged, self.exec_priority() < 0)
    }

    /// [`Cpu::mpu_allows`] for an access made at an execution priority below zero or not
    /// (`negative`): exception return unstacks at the priority it returns to.
    pub(crate) fn mpu_allows_at(&self, addr: u32, access: Access, privileged: bool, negative: bool) -> bool {
        if !self.mpu_on || addr >> 20 == 0xE00 {
            return true;
        }
        let mpu = &self.v7.mpu;
        if mpu.ctrl & CTRL_HFNMIENA == 0 && negative {
            return true;
        }
        let write = access == Access::Write;
        match mpu.lookup(self.cfg.mpu_regions, addr) {
            Some(rasr) => {
                // System space is execute-never whatever the region says.
                let xn = rasr & (1 << 28) != 0 || addr >> 29 == 7;
                ap_allows(rasr >> 24, privileged, write) && !(access == Access::Fetch && xn)
            }
            // Background region: the default map's permissions (full access, default XN).
            None if mpu.ctrl & CTRL_PRIVDEFENA != 0 && privileged => !(access == Access::Fetch && default_xn(addr)),
            None => false,
        }
    }

    /// A load or store by the executing program (privilege per CONTROL.nPRIV and the mode), cold:
    /// only called while the MPU is on. The error is the MemManage DACCVIOL cause.
    #[cold]
    #[inline(never)]
    pub(crate) fn mpu_check_data(&self, addr: u32, size: Size, write: bool) -> Result<(), BusFault> {
        if self.mpu_allows(addr, Access::from_write(write), self.privileged()) {
            Ok(())
        } else {
            Err(BusFault::new(addr, size, BusFaultKind::MpuViolation))
        }
    }

    /// An instruction fetch of the instruction at `pc` (first halfword entry `first`): both of
    /// its halfwords when a 32-bit one crosses into the next 32-byte block (the MPU's smallest
    /// granule). The error is the MemManage IACCVIOL cause.
    pub(crate) fn mpu_check_fetch(&self, pc: u32, first: u32) -> Result<(), BusFault> {
        let privileged = self.privileged();
        let wide = (first & 0xFFFF) >> 11 >= 0b11101;
        let second = pc.wrapping_add(2);
        if !self.mpu_allows(pc, Access::Fetch, privileged)
            || (wide && second & 31 == 0 && !self.mpu_allows(second, Access::Fetch, privileged))
        {
            return Err(BusFault::new(pc, Size::Half, BusFaultKind::MpuViolation));
        }
        Ok(())
    }

    /// MPU registers at SCS offsets 0xD90-0xDBC (B3.5.5-B3.5.9); `None` for other offsets.
    pub(crate) fn mpu_read(&self, off: u32) -> Option<u32> {
        let n = self.cfg.mpu_regions as u32;
        let mpu = &self.v7.mpu;
        let region = mpu.rnr as usize;
        let exists = region < n as usize;
        Some(match off {
            // MPU_TYPE: IREGION = 0, DREGION, SEPARATE = 0 (unified).
            0xD90 => n << 8,
            0xD94 => mpu.ctrl,
            0xD98 => mpu.rnr,
            // RBAR and its aliases: ADDR of the selected region, VALID reads zero, REGION = RNR[3:0].
            0xD9C | 0xDA4 | 0xDAC | 0xDB4 => {
                if exists {
                    mpu.rbar[region] | mpu.rnr & 0xF
                } else {
                    mpu.rnr & 0xF
                }
            }
            0xDA0 | 0xDA8 | 0xDB0 | 0xDB8 => {
                if exists {
                    mpu.rasr[region]
                } else {
                    0
                }
            }
            _ => return None,
        })
    }

    /// MPU register write; false when `off` is not an MPU register.
    pub(crate) fn mpu_write(&mut self, off: u32, v: u32) -> bool {
        let n = self.cfg.mpu_regions as usize;
        match off {
            0xD90 => {}
            // B3.5.6 MPU_CTRL: with no MPU (DREGION = 0) the register is RAZ/WI.
            0xD94 if n > 0 => self.v7.mpu.ctrl = v & (CTRL_ENABLE | CTRL_HFNMIENA | CTRL_PRIVDEFENA),
            0xD98 if n > 0 => self.v7.mpu.rnr = v & 0xFF,
            0xD9C | 0xDA4 | 0xDAC | 0xDB4 if n > 0 => {
                // B3.5.8: VALID = 1 selects REGION (RNR is updated), else RNR's region.
                if v & (1 << 4) != 0 {
                    self.v7.mpu.rnr = v & 0xF;
                }
                let r = self.v7.mpu.rnr as usize;
                if r < n {
                    self.v7.mpu.rbar[r] = v & !0x1F;
                }
            }
            0xDA0 | 0xDA8 | 0xDB0 | 0xDB8 if n > 0 => {
                let r = self.v7.mpu.rnr as usize;
                if r < n {
                    self.v7.mpu.rasr[r] = v & RASR_MASK;
                }
            }
            0xD94..=0xDB8 => {}
            _ => return false,
        }
        self.update_mpu();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ap_encodings_follow_table_b3_15() {
        // (ap, privileged read, privileged write, unprivileged read, unprivileged write)
        let rows = [
            (0b000, false, false, false, false),
            (0b001, true, true, false, false),
            (0b010, true, true, true, false),
            (0b011, true, true, true, true),
            (0b100, false, false, false, false),
            (0b101, true, false, false, false),
            (0b110, true, false, true, false),
            (0b111, true, false, true, false),
        ];
        for (ap, pr, pw, ur, uw) in rows {
            assert_eq!(
                [
                    ap_allows(ap, true, false),
                    ap_allows(ap, true, true),
                    ap_allows(ap, false, false),
                    ap_allows(ap, false, true)
                ],
                [pr, pw, ur, uw],
                "AP {ap:03b}"
            );
        }
    }

    #[test]
    fn lookup_sizes_subregions_and_priority() {
        let mut m = Mpu::default();
        // Region 0: 0x20000000, 1 KiB (SIZE 9), subregion 2 disabled (0x20000100-0x2000017F).
        m.rbar[0] = 0x2000_0000;
        m.rasr[0] = 0x0300_0000 | 1 << 10 | 9 << 1 | 1;
        // Region 1: 0x20000000, 32 bytes, read-only: wins over region 0 where both match.
        m.rbar[1] = 0x2000_0000;
        m.rasr[1] = 0x0600_0000 | 4 << 1 | 1;
        assert_eq!(m.lookup(2, 0x2000_0010).map(|r| r >> 24), Some(6));
        assert_eq!(m.lookup(2, 0x2000_0020).map(|r| r >> 24), Some(3));
        assert_eq!(m.lookup(2, 0x2000_0100), None, "disabled subregion");
        assert_eq!(m.lookup(2, 0x2000_0180).map(|r| r >> 24), Some(3));
        assert_eq!(m.lookup(2, 0x2000_0400), None, "outside");
        assert_eq!(m.lookup(1, 0x2000_0010).map(|r| r >> 24), Some(3), "only DREGION regions count");
        // SIZE 0 (UNPREDICTABLE): matched as 32 bytes.
        m.rasr[1] = 0x0600_0000 | 1;
        assert!(m.lookup(2, 0x2000_001F).is_some_and(|r| r >> 24 == 6));
        assert!(m.lookup(2, 0x2000_0020).is_some_and(|r| r >> 24 == 3));
        // SIZE 31: the whole 4 GiB.
        m.rasr[0] = 0x0100_0000 | 31 << 1 | 1;
        assert!(m.lookup(1, 0xFFFF_FFF0).is_some());
    }
}
