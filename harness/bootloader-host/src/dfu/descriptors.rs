//! Parsing the descriptors a DfuSe host needs: the configuration descriptor with its DFU
//! interfaces (class 0xFE, subclass 0x01) and DFU functional descriptor, and string descriptors.

/// DFU functional descriptor (DFU 1.1 4.1.3, type 0x21).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfuFunctional {
    pub attributes: u8,
    pub detach_timeout_ms: u16,
    pub transfer_size: u16,
    /// 0x011A marks DfuSe (reference 3.1); 0x0100 when the descriptor is the 7-byte DFU 1.0 form.
    pub dfu_version: u16,
}

impl DfuFunctional {
    pub fn can_download(&self) -> bool {
        self.attributes & 0x01 != 0
    }
    pub fn can_upload(&self) -> bool {
        self.attributes & 0x02 != 0
    }
    pub fn manifestation_tolerant(&self) -> bool {
        self.attributes & 0x04 != 0
    }
    pub fn will_detach(&self) -> bool {
        self.attributes & 0x08 != 0
    }
    pub fn is_dfuse(&self) -> bool {
        self.dfu_version == 0x011A
    }
}

/// One alternate setting of a DFU-mode interface; DfuSe has one per memory (reference 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfuAltSetting {
    pub interface: u8,
    pub alt_setting: u8,
    /// 2 = DFU mode, 1 = runtime (DFU 1.1 4.2.3).
    pub protocol: u8,
    /// iInterface: the memory layout string of DfuSe devices.
    pub name_index: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DfuConfiguration {
    pub configuration_value: u8,
    pub alt_settings: Vec<DfuAltSetting>,
    pub functional: Option<DfuFunctional>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("descriptor at byte {offset}: {reason}")]
pub struct DescriptorError {
    pub offset: usize,
    pub reason: String,
}

const CONFIGURATION: u8 = 2;
const INTERFACE: u8 = 4;
const DFU_FUNCTIONAL: u8 = 0x21;
const STRING: u8 = 3;

/// Parses a full configuration descriptor (wTotalLength bytes) for its DFU interfaces.
pub fn parse_configuration(bytes: &[u8]) -> Result<DfuConfiguration, DescriptorError> {
    let err = |offset, reason: &str| DescriptorError { offset, reason: reason.into() };
    if bytes.len() < 9 || bytes[1] != CONFIGURATION {
        return Err(err(0, "not a configuration descriptor"));
    }
    let total = (u16::from_le_bytes([bytes[2], bytes[3]]) as usize).min(bytes.len());
    let mut config = DfuConfiguration { configuration_value: bytes[5], alt_settings: Vec::new(), functional: None };
    let mut in_dfu_interface = false;
    let mut at = 0;
    while at < total {
        let len = bytes[at] as usize;
        if len < 2 || at + len > total {
            return Err(err(at, &format!("bLength {len} does not fit the {total} bytes of the configuration")));
        }
        let d = &bytes[at..at + len];
        match d[1] {
            INTERFACE if len >= 9 => {
                in_dfu_interface = d[5] == 0xFE && d[6] == 0x01;
                if in_dfu_interface {
                    config.alt_settings.push(DfuAltSetting {
                        interface: d[2],
                        alt_setting: d[3],
                        protocol: d[7],
                        name_index: d[8],
                    });
                }
            }
            INTERFACE => return Err(err(at, "interface descriptor shorter than 9 bytes")),
            DFU_FUNCTIONAL if in_dfu_interface && len >= 7 => {
                config.functional = Some(DfuFunctional {
                    attributes: d[2],
                    detach_timeout_ms: u16::from_le_bytes([d[3], d[4]]),
                    transfer_size: u16::from_le_bytes([d[5], d[6]]),
                    dfu_version: if len >= 9 { u16::from_le_bytes([d[7], d[8]]) } else { 0x0100 },
                });
            }
            _ => {}
        }
        at += len;
    }
    Ok(config)
}

/// Decodes a string descriptor (UTF-16LE after a 2-byte header); unpaired surrogates become U+FFFD.
pub fn parse_string(bytes: &[u8]) -> Result<String, DescriptorError> {
    if bytes.len() < 2 || bytes[1] != STRING {
        return Err(DescriptorError { offset: 0, reason: "not a string descriptor".into() });
    }
    let len = (bytes[0] as usize).min(bytes.len());
    let units: Vec<u16> = bytes[2..len.max(2)].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    Ok(String::from_utf16_lossy(&units))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a configuration descriptor with one DFU interface and the given alt-setting names
    /// (string indices 4, 5, ...). Also used by the client tests.
    pub fn dfuse_configuration(alts: usize, transfer_size: u16) -> Vec<u8> {
        let mut body = Vec::new();
        for alt in 0..alts {
            body.extend_from_slice(&[9, INTERFACE, 0, alt as u8, 0, 0xFE, 0x01, 0x02, 4 + alt as u8]);
        }
        let ts = transfer_size.to_le_bytes();
        body.extend_from_slice(&[9, DFU_FUNCTIONAL, 0x0B, 0xFF, 0x00, ts[0], ts[1], 0x1A, 0x01]);
        let total = (9 + body.len()) as u16;
        let mut out = vec![9, CONFIGURATION, total as u8, (total >> 8) as u8, 1, 1, 0, 0x80, 50];
        out.extend(body);
        out
    }

    pub fn string_descriptor(s: &str) -> Vec<u8> {
        let units: Vec<u16> = s.encode_utf16().collect();
        let mut out = vec![(2 + 2 * units.len()) as u8, STRING];
        for u in units {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out
    }

    #[test]
    fn finds_dfu_alt_settings_and_the_functional_descriptor() {
        let c = parse_configuration(&dfuse_configuration(2, 2048)).unwrap();
        assert_eq!(c.alt_settings.len(), 2);
        assert_eq!(c.alt_settings[1], DfuAltSetting { interface: 0, alt_setting: 1, protocol: 2, name_index: 5 });
        let f = c.functional.unwrap();
        assert_eq!(f.transfer_size, 2048);
        assert!(f.is_dfuse() && f.can_download() && f.can_upload() && f.will_detach() && !f.manifestation_tolerant());
    }

    #[test]
    fn broken_descriptors_are_errors() {
        let mut d = dfuse_configuration(1, 2048);
        d[9] = 0; // bLength 0 of the interface descriptor: would loop forever if accepted
        assert_eq!(
            parse_configuration(&d).unwrap_err().to_string(),
            "descriptor at byte 9: bLength 0 does not fit the 27 bytes of the configuration"
        );
        for len in 0..dfuse_configuration(1, 2048).len() {
            let _ = parse_configuration(&dfuse_configuration(1, 2048)[..len]);
        }
        assert!(parse_configuration(&[9, 4, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn strings() {
        let s = "@Internal Flash  /0x08000000/064*0002Kg";
        assert_eq!(parse_string(&string_descriptor(s)).unwrap(), s);
        assert!(parse_string(&[2, 1]).is_err());
        assert_eq!(parse_string(&[3, 3, 0x41]).unwrap(), "");
    }
}
