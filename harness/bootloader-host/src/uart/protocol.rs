//! AN3155 constants and the command set (reference section 1.3). Host-side encoding only.

use std::fmt;

pub const ACK: u8 = 0x79;
pub const NACK: u8 = 0x1F;
/// Sent by I2C/SPI bootloaders while busy; stm32flash keeps waiting on it, so do we (\[SF\]).
pub const BUSY: u8 = 0x76;
/// Autobaud byte, taken as such only once per reset (AN3155; reference 1.1).
pub const SYNC: u8 = 0x7F;

/// Largest Read/Write Memory block: N is sent as count - 1 in one byte.
pub const MAX_BLOCK: usize = 256;

/// AN3155 commands this client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Get,
    GetVersion,
    GetId,
    ReadMemory,
    Go,
    WriteMemory,
    /// Legacy erase, 1-byte page numbers; exclusive with ExtendedErase (AN3155 table note).
    Erase,
    ExtendedErase,
    ReadoutUnprotect,
    GetChecksum,
}

impl Command {
    pub const fn code(self) -> u8 {
        match self {
            Command::Get => 0x00,
            Command::GetVersion => 0x01,
            Command::GetId => 0x02,
            Command::ReadMemory => 0x11,
            Command::Go => 0x21,
            Command::WriteMemory => 0x31,
            Command::Erase => 0x43,
            Command::ExtendedErase => 0x44,
            Command::ReadoutUnprotect => 0x92,
            Command::GetChecksum => 0xA1,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Command::Get => "Get",
            Command::GetVersion => "Get Version",
            Command::GetId => "Get ID",
            Command::ReadMemory => "Read Memory",
            Command::Go => "Go",
            Command::WriteMemory => "Write Memory",
            Command::Erase => "Erase",
            Command::ExtendedErase => "Extended Erase",
            Command::ReadoutUnprotect => "Readout Unprotect",
            Command::GetChecksum => "Get Checksum",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02X})", self.name(), self.code())
    }
}

/// Address frame: 4 bytes MSB first, then their XOR (AN3155; reference 1.2).
pub fn address_frame(address: u32) -> [u8; 5] {
    let b = address.to_be_bytes();
    [b[0], b[1], b[2], b[3], b[0] ^ b[1] ^ b[2] ^ b[3]]
}

pub fn xor(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

/// Mass-erase variants of Extended Erase (special page codes 0xFFFF/0xFFFE/0xFFFD; reference 1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MassErase {
    Global,
    Bank1,
    Bank2,
}

impl MassErase {
    pub(crate) fn code(self) -> u16 {
        match self {
            MassErase::Global => 0xFFFF,
            MassErase::Bank1 => 0xFFFE,
            MassErase::Bank2 => 0xFFFD,
        }
    }
}

impl fmt::Display for MassErase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MassErase::Global => "global mass erase",
            MassErase::Bank1 => "bank 1 mass erase",
            MassErase::Bank2 => "bank 2 mass erase",
        })
    }
}

/// CRC the ROM's Get Checksum returns, computed on the host: CRC-32 polynomial 0x04C11DB7, init
/// 0xFFFFFFFF, no reflection, no final XOR, over 32-bit little-endian words, i.e. what the STM32 CRC
/// unit computes word by word (\[SF\] stm32_sw_crc; reference 1.3). A trailing partial word is
/// padded with 0xFF (erased flash).
pub fn stm32_crc(data: &[u8]) -> u32 {
    const STM32_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_MPEG_2);
    let mut digest = STM32_CRC.digest();
    for chunk in data.chunks(4) {
        let mut word = [0xFF; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        // The unit shifts the word in MSB first; the word is read little-endian from memory.
        digest.update(&u32::from_le_bytes(word).to_be_bytes());
    }
    digest.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-by-bit model of the CRC unit, written from the reference's description, to check the
    /// table-driven version against.
    fn crc_unit(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for chunk in data.chunks(4) {
            let mut w = [0xFF; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            crc ^= u32::from_le_bytes(w);
            for _ in 0..32 {
                crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04C1_1DB7 } else { crc << 1 };
            }
        }
        crc
    }

    #[test]
    fn crc_matches_the_word_wise_unit_model() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1030).collect();
        assert_eq!(stm32_crc(&data), crc_unit(&data));
        assert_eq!(stm32_crc(&[]), 0xFFFF_FFFF);
        // Known value: the STM32 CRC unit over the single word 0x00000000 from reset.
        assert_eq!(stm32_crc(&[0, 0, 0, 0]), 0xC704_DD7B);
    }

    #[test]
    fn frames() {
        assert_eq!(address_frame(0x0800_0000), [0x08, 0, 0, 0, 0x08]);
        assert_eq!(address_frame(0x2000_235C), [0x20, 0x00, 0x23, 0x5C, 0x20 ^ 0x23 ^ 0x5C]);
        assert_eq!(Command::WriteMemory.to_string(), "Write Memory (0x31)");
    }
}
