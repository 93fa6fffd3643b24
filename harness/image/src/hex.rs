//! Intel HEX loading. Lines are read here (not with `ihex::Reader`, which skips blank lines and so
//! loses line numbers) and each record is parsed by the ihex crate.

use ihex::{ReaderError, Record};

use crate::error::ImageError;
use crate::image::{Format, Image, Origin, Segment};

pub(crate) fn parse(name: &str, bytes: &[u8]) -> Result<Image, ImageError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        ImageError::Hex {
            file: name.into(),
            line,
            reason: "not text (invalid UTF-8): is this really a .hex file?".into(),
        }
    })?;
    let mut base: u32 = 0;
    let mut entry = None;
    let mut pieces = Vec::new();
    let mut end_of_file = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let record_text = raw.trim();
        if record_text.is_empty() {
            continue;
        }
        let err = |reason: String| ImageError::Hex { file: name.into(), line, reason };
        if end_of_file {
            return Err(err("record after the end-of-file record".into()));
        }
        match Record::from_record_string(record_text).map_err(|e| err(reader_error(e)))? {
            Record::Data { offset, value } => {
                // Addresses are base + offset without 64 KiB wrap-around: linkers emit a new
                // extended address record before crossing, and a wrap would silently reorder data.
                let address = base as u64 + offset as u64;
                if address + value.len() as u64 > 1 << 32 {
                    return Err(err(format!("data at 0x{address:X} runs past the 32-bit address space")));
                }
                pieces.push(Segment {
                    address: address as u32,
                    data: value,
                    origins: vec![Origin::HexRecords { first_line: line, last_line: line }],
                });
            }
            Record::ExtendedSegmentAddress(segment) => base = (segment as u32) << 4,
            Record::ExtendedLinearAddress(upper) => base = (upper as u32) << 16,
            Record::StartLinearAddress(address) => entry = Some(address),
            Record::StartSegmentAddress { cs, ip } => entry = Some(((cs as u32) << 4) + ip as u32),
            Record::EndOfFile => end_of_file = true,
        }
    }
    if !end_of_file {
        return Err(ImageError::HexNoEndOfFile { file: name.into() });
    }
    Image::from_pieces(name, Format::IntelHex, pieces, entry)
}

/// The ihex crate's own message for a checksum mismatch swaps the two values, so spell it out.
fn reader_error(e: ReaderError) -> String {
    match e {
        ReaderError::ChecksumMismatch(computed, in_file) => {
            format!("checksum is 0x{in_file:02X} but the record needs 0x{computed:02X} (corrupted line?)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use ihex::{Record, create_object_file_representation};

    use crate::image::{Image, Origin};

    #[test]
    fn records_become_merged_segments_with_line_ranges() {
        let text = create_object_file_representation(&[
            Record::ExtendedLinearAddress(0x0800),
            Record::Data { offset: 0x0000, value: vec![0; 16] },
            Record::Data { offset: 0x0010, value: vec![1; 16] },
            Record::Data { offset: 0x1000, value: vec![2; 4] },
            Record::ExtendedLinearAddress(0x0801),
            Record::Data { offset: 0xFFFC, value: vec![3; 8] },
            Record::StartLinearAddress(0x0800_00C1),
            Record::EndOfFile,
        ])
        .unwrap();
        let img = Image::from_hex("fw.hex", text.as_bytes()).unwrap();
        assert_eq!(img.entry, Some(0x0800_00C1));
        let spans: Vec<_> = img.segments.iter().map(|s| (s.address, s.data.len())).collect();
        assert_eq!(spans, [(0x0800_0000, 32), (0x0800_1000, 4), (0x0801_FFFC, 8)]);
        assert_eq!(img.segments[0].origins, [Origin::HexRecords { first_line: 2, last_line: 3 }]);
        assert_eq!(img.segments[2].describe(), "HEX record on line 6");
    }

    #[test]
    fn errors_name_the_line() {
        let bad_checksum = ":020000040800F2\n\n:0400000001020304F0\n:00000001FF\n";
        let e = Image::from_hex("a.hex", bad_checksum.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.hex:3: invalid Intel HEX record: checksum is 0xF0 but the record needs 0xF2 (corrupted line?)"
        );

        let truncated = ":020000040800F2\n:0400000001020304F2\n";
        let e = Image::from_hex("a.hex", truncated.as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "a.hex: Intel HEX file has no end-of-file record (truncated?)");

        let after_eof = ":00000001FF\n:0400000001020304F2\n";
        let e = Image::from_hex("a.hex", after_eof.as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "a.hex:2: invalid Intel HEX record: record after the end-of-file record");

        let e = Image::from_hex("a.hex", b"\x7fELF\xff").unwrap_err();
        assert!(e.to_string().starts_with("a.hex:1: invalid Intel HEX record: not text"), "{e}");
    }

    #[test]
    fn overlapping_records_are_refused() {
        let text = create_object_file_representation(&[
            Record::Data { offset: 0x0000, value: vec![0; 16] },
            Record::Data { offset: 0x0008, value: vec![1; 16] },
            Record::EndOfFile,
        ])
        .unwrap();
        let e = Image::from_hex("o.hex", text.as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "o.hex: HEX record on line 2 overlaps HEX record on line 1 at 0x00000008");
    }

    #[test]
    fn arbitrary_text_never_panics() {
        for junk in [":", ":0", ":zz", ":FF00000000", ":0400000501020304EB\n:00000001FF", "\u{feff}:00000001FF"] {
            let _ = Image::from_hex("j.hex", junk.as_bytes());
        }
    }
}
