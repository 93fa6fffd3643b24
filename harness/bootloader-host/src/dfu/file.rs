//! .dfu files (UM0391 DfuSe format; reference 3.8): prefix, targets (one per alternate setting)
//! holding elements (address + data), and the 16-byte DFU suffix with its CRC. All little-endian.

const PREFIX_LEN: usize = 11;
const TARGET_PREFIX_LEN: usize = 274;
const ELEMENT_HEADER_LEN: usize = 8;
const SUFFIX_LEN: usize = 16;
const DFUSE_BCD: u16 = 0x011A;

/// CRC-32 as zlib but without the final inversion (\[DU\] dfu_file.c; dfuse-pack `compute_crc`):
/// CRC-32/JAMCRC.
const DFU_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_JAMCRC);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DfuElement {
    pub address: u32,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DfuFileTarget {
    /// Which memory (alternate setting) the elements are for.
    pub alt_setting: u8,
    pub name: Option<String>,
    pub elements: Vec<DfuElement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DfuFile {
    /// idVendor of the suffix; 0xFFFF matches any device.
    pub vendor_id: u16,
    pub product_id: u16,
    /// bcdDevice of the suffix; 0 or 0xFFFF match any.
    pub device_version: u16,
    pub targets: Vec<DfuFileTarget>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DfuFileError {
    #[error("{0} bytes is too short for a .dfu file (prefix + suffix need 27)")]
    TooShort(usize),
    #[error("no DFU suffix: bytes 8-10 from the end are not \"UFD\"")]
    NoSuffix,
    #[error("the suffix says bcdDFU 0x{0:04X}; DfuSe files have 0x011A")]
    NotDfuSe(u16),
    #[error("CRC mismatch: the suffix says 0x{stored:08X}, the file has 0x{computed:08X} (corrupt or truncated)")]
    Crc { stored: u32, computed: u32 },
    #[error("no \"DfuSe\" prefix signature")]
    NoPrefix,
    #[error("DfuSe format version {0} is not supported (expected 1)")]
    Version(u8),
    #[error("target {target}: {reason}")]
    Target { target: usize, reason: String },
    #[error("target {target}, element {element}: {reason}")]
    Element { target: usize, element: usize, reason: String },
    #[error("{0} bytes follow the last target")]
    TrailingBytes(usize),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl DfuFile {
    pub fn parse(bytes: &[u8]) -> Result<DfuFile, DfuFileError> {
        if bytes.len() < PREFIX_LEN + SUFFIX_LEN {
            return Err(DfuFileError::TooShort(bytes.len()));
        }
        let suffix = &bytes[bytes.len() - SUFFIX_LEN..];
        if &suffix[8..11] != b"UFD" {
            return Err(DfuFileError::NoSuffix);
        }
        let bcd_dfu = u16::from_le_bytes([suffix[6], suffix[7]]);
        if bcd_dfu != DFUSE_BCD {
            return Err(DfuFileError::NotDfuSe(bcd_dfu));
        }
        let stored = u32_at(suffix, 12);
        let computed = DFU_CRC.checksum(&bytes[..bytes.len() - 4]);
        if stored != computed {
            return Err(DfuFileError::Crc { stored, computed });
        }
        // bLength may exceed 16 (vendor fields before the standard suffix); the body ends there.
        let suffix_len = (suffix[11] as usize).clamp(SUFFIX_LEN, bytes.len() - PREFIX_LEN);
        let body = &bytes[..bytes.len() - suffix_len];
        if &body[..5] != b"DfuSe" {
            return Err(DfuFileError::NoPrefix);
        }
        if body[5] != 1 {
            return Err(DfuFileError::Version(body[5]));
        }
        // DFUImageSize (body[6..10]) is not trusted, as in [DU]: the CRC already covers the file.
        let target_count = body[10] as usize;
        let mut at = PREFIX_LEN;
        let mut targets = Vec::with_capacity(target_count);
        for t in 0..target_count {
            let terr = |reason: String| DfuFileError::Target { target: t, reason };
            let prefix = body
                .get(at..at + TARGET_PREFIX_LEN)
                .ok_or_else(|| terr(format!("prefix at byte {at} runs past the end")))?;
            if &prefix[..6] != b"Target" {
                return Err(terr(format!("no \"Target\" signature at byte {at}")));
            }
            let named = u32_at(prefix, 7) != 0;
            let raw_name = &prefix[11..266];
            let name_len = raw_name.iter().position(|&b| b == 0).unwrap_or(raw_name.len());
            let name = named.then(|| String::from_utf8_lossy(&raw_name[..name_len]).into_owned());
            let element_count = u32_at(prefix, 270) as usize;
            at += TARGET_PREFIX_LEN;
            let mut elements = Vec::new();
            for e in 0..element_count {
                let eerr = |reason: String| DfuFileError::Element { target: t, element: e, reason };
                let header = body
                    .get(at..at + ELEMENT_HEADER_LEN)
                    .ok_or_else(|| eerr(format!("header at byte {at} runs past the end")))?;
                let (address, size) = (u32_at(header, 0), u32_at(header, 4) as usize);
                at += ELEMENT_HEADER_LEN;
                let data = body
                    .get(at..at.saturating_add(size))
                    .ok_or_else(|| eerr(format!("{size} bytes at 0x{address:08X} run past the end of the file")))?;
                if address as u64 + size as u64 > 1 << 32 {
                    return Err(eerr(format!("{size} bytes at 0x{address:08X} run past 4 GiB")));
                }
                elements.push(DfuElement { address, data: data.to_vec() });
                at += size;
            }
            targets.push(DfuFileTarget { alt_setting: prefix[6], name, elements });
        }
        if at != body.len() {
            return Err(DfuFileError::TrailingBytes(body.len() - at));
        }
        Ok(DfuFile {
            device_version: u16::from_le_bytes([suffix[0], suffix[1]]),
            product_id: u16::from_le_bytes([suffix[2], suffix[3]]),
            vendor_id: u16::from_le_bytes([suffix[4], suffix[5]]),
            targets,
        })
    }

    /// Serializes like dfuse-pack: DFUImageSize counts prefix and targets (not the suffix).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for target in &self.targets {
            let payload: usize = target.elements.iter().map(|e| ELEMENT_HEADER_LEN + e.data.len()).sum();
            body.extend_from_slice(b"Target");
            body.push(target.alt_setting);
            body.extend_from_slice(&(target.name.is_some() as u32).to_le_bytes());
            let mut name = [0u8; 255];
            if let Some(n) = &target.name {
                let n = &n.as_bytes()[..n.len().min(254)];
                name[..n.len()].copy_from_slice(n);
            }
            body.extend_from_slice(&name);
            body.extend_from_slice(&(payload as u32).to_le_bytes());
            body.extend_from_slice(&(target.elements.len() as u32).to_le_bytes());
            for e in &target.elements {
                body.extend_from_slice(&e.address.to_le_bytes());
                body.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
                body.extend_from_slice(&e.data);
            }
        }
        let mut out = Vec::with_capacity(PREFIX_LEN + body.len() + SUFFIX_LEN);
        out.extend_from_slice(b"DfuSe");
        out.push(1);
        out.extend_from_slice(&((PREFIX_LEN + body.len()) as u32).to_le_bytes());
        out.push(self.targets.len() as u8);
        out.extend(body);
        out.extend_from_slice(&self.device_version.to_le_bytes());
        out.extend_from_slice(&self.product_id.to_le_bytes());
        out.extend_from_slice(&self.vendor_id.to_le_bytes());
        out.extend_from_slice(&DFUSE_BCD.to_le_bytes());
        out.extend_from_slice(b"UFD");
        out.push(SUFFIX_LEN as u8);
        let crc = DFU_CRC.checksum(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DfuFile {
        DfuFile {
            vendor_id: 0x0483,
            product_id: 0xDF11,
            device_version: 0,
            targets: vec![DfuFileTarget {
                alt_setting: 0,
                name: Some("ST...".into()),
                elements: vec![
                    DfuElement { address: 0x0800_0000, data: vec![1, 2, 3, 4, 5] },
                    DfuElement { address: 0x0800_4000, data: vec![9; 20] },
                ],
            }],
        }
    }

    #[test]
    fn round_trip_and_layout_offsets() {
        let bytes = sample().to_bytes();
        assert_eq!(DfuFile::parse(&bytes).unwrap(), sample());
        // dfuse-pack layout: DFUImageSize = everything before the suffix; dfu-util reads the
        // element count of a target at offset 270 of its prefix.
        assert_eq!(u32_at(&bytes, 6) as usize, bytes.len() - SUFFIX_LEN);
        assert_eq!(u32_at(&bytes, PREFIX_LEN + 270), 2);
        assert_eq!(u32_at(&bytes, PREFIX_LEN + 266), (8 + 5 + 8 + 20) as u32);
        assert_eq!(&bytes[bytes.len() - 8..bytes.len() - 5], b"UFD");
    }

    #[test]
    fn crc_is_inverted_zlib_crc32() {
        // zlib's crc32("123456789") = 0xCBF43926; the DFU suffix stores its complement.
        assert_eq!(DFU_CRC.checksum(b"123456789"), !0xCBF4_3926);
    }

    #[test]
    fn corruption_is_detected_and_nothing_panics() {
        let bytes = sample().to_bytes();
        let mut bad = bytes.clone();
        bad[PREFIX_LEN + 300] ^= 1;
        assert!(matches!(DfuFile::parse(&bad), Err(DfuFileError::Crc { .. })));
        assert!(matches!(DfuFile::parse(&bytes[..bytes.len() - 1]), Err(DfuFileError::NoSuffix)));
        for len in 0..bytes.len() {
            let _ = DfuFile::parse(&bytes[..len]);
        }
        // An element claiming more data than the file holds, with a valid CRC.
        let mut lying = sample();
        lying.targets[0].elements.truncate(1);
        let mut b = lying.to_bytes();
        let at = PREFIX_LEN + TARGET_PREFIX_LEN + 4;
        b[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
        let n = b.len();
        let crc = DFU_CRC.checksum(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            DfuFile::parse(&b).unwrap_err().to_string(),
            "target 0, element 0: 1000 bytes at 0x08000000 run past the end of the file"
        );
    }
}
