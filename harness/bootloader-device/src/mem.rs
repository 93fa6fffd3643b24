//! Memory rules both engines share: which writes are allowed where, flash padding, the vector read
//! for jumps, and the STM32 CRC.

use std::time::Duration;

use crate::config::{LeaveJump, RegionKind, RomConfig};
use crate::target::{BootTarget, Jump, TargetError};

/// Why a write was not carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// Not inside one writable region, misaligned, or an option byte write not at the area base.
    Address,
    /// The option byte image selects RDP level 2 and the configuration does not allow it.
    Level2Refused,
    /// The target (FLASH controller) failed.
    Target(TargetError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Written {
    pub elapsed: Duration,
    /// The write went to the option bytes, which take effect through option byte loading.
    pub option_bytes: bool,
}

/// Writes `data` at `address` under the bootloader's rules.
pub(crate) fn write<T: BootTarget + ?Sized>(
    config: &RomConfig,
    target: &mut T,
    address: u32,
    data: &[u8],
    alignment: u32,
) -> Result<Written, WriteError> {
    let len = data.len() as u64;
    let region = config.region_for_range(address, len).filter(|r| r.kind.writable()).ok_or(WriteError::Address)?;
    if region.kind == RegionKind::OptionBytes {
        // AN2662 "Write Memory command" device flow: option byte writes must start at the area's base.
        if address != region.base {
            return Err(WriteError::Address);
        }
        // DESIGN.md safety rails: never program RDP level 2 unless the board allows it.
        if let Some(marker) = &config.option_bytes.level2
            && !config.allow_rdp_level2
            && data.get(marker.offset as usize) == Some(&marker.value)
        {
            return Err(WriteError::Level2Refused);
        }
        let elapsed = target.write_option_bytes(data).map_err(WriteError::Target)?;
        return Ok(Written { elapsed, option_bytes: true });
    }
    if alignment > 1 && !address.is_multiple_of(alignment) {
        return Err(WriteError::Address);
    }
    if !region.kind.programmed() {
        let elapsed = target.write_memory(address, data).map_err(WriteError::Target)?;
        return Ok(Written { elapsed, option_bytes: false });
    }
    // Flash and OTP: whole programming granules, the gaps filled with 0xFF ([OBL] OPENBL_FLASH_Write
    // pads the remainder of the last quad-word with 0xFF; AN2662 "Write Memory command").
    let unit = u64::from(config.flash.program_unit.max(1));
    let start = u64::from(address) / unit * unit;
    let end = (u64::from(address) + len).div_ceil(unit) * unit;
    let start32 = start as u32;
    if !region.contains_range(start32, end - start) {
        return Err(WriteError::Address);
    }
    let mut buf = vec![0xFF; (end - start) as usize];
    let offset = (u64::from(address) - start) as usize;
    buf[offset..offset + data.len()].copy_from_slice(data);
    let elapsed = target.write_memory(start32, &buf).map_err(WriteError::Target)?;
    Ok(Written { elapsed, option_bytes: false })
}

/// Reads `len` bytes if the whole range is inside one region.
pub(crate) fn read<T: BootTarget + ?Sized>(
    config: &RomConfig,
    target: &mut T,
    address: u32,
    len: usize,
) -> Option<Vec<u8>> {
    config.region_for_range(address, len as u64)?;
    let mut buf = vec![0; len];
    target.read_memory(address, &mut buf).ok()?;
    Some(buf)
}

/// Builds the jump to `address`: MSP = \[address\], PC = \[address + 4\] for vector semantics (AN3155
/// Go; \[OBL\] `OPENBL_FLASH_JumpToAddress`), or a direct branch. `None` if `address` is not in a
/// jumpable region or the vector cannot be read.
pub(crate) fn jump_to<T: BootTarget + ?Sized>(
    config: &RomConfig,
    target: &mut T,
    address: u32,
    semantics: LeaveJump,
    usb_disconnect: bool,
) -> Option<Jump> {
    let region = config.region_of(address).filter(|r| r.kind.jumpable())?;
    let (msp, pc) = match semantics {
        LeaveJump::Vector => {
            if !region.contains_range(address, 8) {
                return None;
            }
            let mut vector = [0u8; 8];
            target.read_memory(address, &mut vector).ok()?;
            let word = |i: usize| u32::from_le_bytes([vector[i], vector[i + 1], vector[i + 2], vector[i + 3]]);
            (Some(word(0)), word(4))
        }
        LeaveJump::Direct => (None, address | 1),
    };
    Some(Jump { address, msp, pc, reset_peripherals: config.peripherals_reset_on_go, usb_disconnect })
}

/// The CRC the STM32 CRC peripheral computes over memory: CRC-32 with polynomial 0x04C11DB7, initial
/// value 0xFFFFFFFF, no reflection, no final XOR, fed 32-bit little-endian words (\[SF\]
/// `stm32_sw_crc`, which stm32flash compares Get Checksum results with). `data.len()` must be a
/// multiple of 4; a trailing partial word is ignored.
pub(crate) fn stm32_crc(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for word in data.chunks_exact(4) {
        crc ^= u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        for _ in 0..32 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04C1_1DB7 } else { crc << 1 };
        }
    }
    crc
}

/// Rounds a busy time up to whole milliseconds for DfuSe `bwPollTimeout` (3 bytes, DFU 1.1 6.1.2).
pub(crate) fn poll_timeout_ms(elapsed: Duration) -> u32 {
    let ms = elapsed.as_nanos().div_ceil(1_000_000);
    ms.min(0xFF_FFFF) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_crc_peripheral() {
        // The word 0x12345678 (stored little-endian) gives 0xDF8A8A2B on the STM32 CRC unit
        // (CRC-32/MPEG-2 of the bytes 12 34 56 78).
        assert_eq!(stm32_crc(&[0x78, 0x56, 0x34, 0x12]), 0xDF8A_8A2B);
        assert_eq!(stm32_crc(&[]), 0xFFFF_FFFF);
    }

    #[test]
    fn poll_timeout_rounds_up_and_saturates() {
        assert_eq!(poll_timeout_ms(Duration::ZERO), 0);
        assert_eq!(poll_timeout_ms(Duration::from_micros(85)), 1);
        assert_eq!(poll_timeout_ms(Duration::from_millis(22)), 22);
        assert_eq!(poll_timeout_ms(Duration::from_secs(100_000)), 0xFF_FFFF);
    }
}
