//! The normalized image: sorted, merged segments that remember where their bytes came from.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::error::ImageError;

/// The file format an image was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Elf,
    IntelHex,
    Bin,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Elf => "ELF",
            Format::IntelHex => "Intel HEX",
            Format::Bin => "raw binary",
        })
    }
}

/// Where the bytes of a segment came from, so findings can point at the linker script or file line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Origin {
    /// A `PT_LOAD` program header (index as `readelf -l` numbers it) and the allocated sections
    /// whose file contents lie inside it.
    ElfSegment { index: usize, sections: Vec<String> },
    /// Data records of an Intel HEX file, 1-based line numbers.
    HexRecords { first_line: usize, last_line: usize },
    /// A raw binary, from this file offset.
    Bin { offset: u64 },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::ElfSegment { index, sections } if sections.is_empty() => write!(f, "ELF segment {index}"),
            Origin::ElfSegment { index, sections } => write!(f, "ELF segment {index} ({})", sections.join(", ")),
            Origin::HexRecords { first_line, last_line } if first_line == last_line => {
                write!(f, "HEX record on line {first_line}")
            }
            Origin::HexRecords { first_line, last_line } => write!(f, "HEX records on lines {first_line}-{last_line}"),
            Origin::Bin { offset } => write!(f, "raw binary (file offset 0x{offset:X})"),
        }
    }
}

/// A contiguous run of bytes at a load address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Load (physical) address of the first byte.
    pub address: u32,
    #[serde(skip)]
    pub data: Vec<u8>,
    /// Every input piece merged into this segment, in address order.
    pub origins: Vec<Origin>,
}

impl Segment {
    /// One past the last byte (u64: a segment may end exactly at 4 GiB).
    pub fn end(&self) -> u64 {
        self.address as u64 + self.data.len() as u64
    }

    /// Address of the last byte (for inclusive ranges in messages). Segments are never empty.
    pub fn last(&self) -> u32 {
        (self.end() - 1) as u32
    }

    pub fn contains(&self, address: u32) -> bool {
        address >= self.address && (address as u64) < self.end()
    }

    /// Human-readable provenance, e.g. `ELF segment 0 (.vector_table, .text)`.
    pub fn describe(&self) -> String {
        self.origins.iter().map(ToString::to_string).collect::<Vec<_>>().join(" + ")
    }
}

/// A firmware image normalized to sorted, non-overlapping, merged segments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Image {
    /// What the image was read from (a path, or a label given by the caller).
    pub name: String,
    pub format: Format,
    pub segments: Vec<Segment>,
    /// ELF `e_entry` or the HEX start address record, when present.
    pub entry: Option<u32>,
}

/// Largest image file read: ELF files carry symbols and debug info besides the loadable bytes,
/// but no STM32 image comes near this. A cap keeps a wrong path (a device, a huge log) from
/// exhausting memory.
pub const MAX_IMAGE_FILE: u64 = 256 * 1024 * 1024;

/// Reads an image file: a regular file (not a FIFO, a device, a directory), at most
/// [`MAX_IMAGE_FILE`] bytes, checked before reading so that `/dev/zero` or a FIFO cannot hang or
/// exhaust the reader.
pub fn read_image_file(path: &Path) -> Result<Vec<u8>, ImageError> {
    use std::io::Read as _;
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| {
        // ELOOP (40 on Linux): `ErrorKind::FilesystemLoop` is not stable.
        if source.raw_os_error() == Some(40) {
            ImageError::SymlinkLoop { file: file.clone() }
        } else {
            ImageError::Io { file: file.clone(), source }
        }
    })?;
    if !meta.is_file() {
        return Err(ImageError::NotRegularFile { file, what: file_kind(&meta) });
    }
    if meta.len() > MAX_IMAGE_FILE {
        return Err(ImageError::TooLarge { file, size: meta.len(), max: MAX_IMAGE_FILE });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_IMAGE_FILE + 1).read_to_end(&mut bytes))
        .map_err(|source| ImageError::Io { file: file.clone(), source })?;
    // A file that grew while being read.
    if bytes.len() as u64 > MAX_IMAGE_FILE {
        return Err(ImageError::TooLarge { file, size: bytes.len() as u64, max: MAX_IMAGE_FILE });
    }
    Ok(bytes)
}

/// What a non-regular file is, for messages.
pub fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

impl Image {
    /// Reads an image file. ELF is recognised by its magic, Intel HEX by extension (`.hex`, `.ihex`,
    /// `.ihx`) or a leading `:`; a raw binary (`.bin`) needs `bin_base`, which is refused for the
    /// other formats because they carry their own addresses.
    pub fn load(path: &Path, bin_base: Option<u32>) -> Result<Image, ImageError> {
        let name = path.display().to_string();
        let bytes = read_image_file(path)?;
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
        let format = if bytes.starts_with(b"\x7fELF") {
            Format::Elf
        } else if matches!(ext.as_str(), "hex" | "ihex" | "ihx") || bytes.first() == Some(&b':') {
            Format::IntelHex
        } else if ext == "bin" || bin_base.is_some() {
            Format::Bin
        } else {
            return Err(ImageError::UnknownFormat { file: name });
        };
        match (format, bin_base) {
            (Format::Bin, Some(base)) => Image::from_bin(&name, &bytes, base),
            (Format::Bin, None) => Err(ImageError::BinNeedsBase { file: name }),
            (format, Some(base)) => Err(ImageError::BaseNotApplicable { file: name, format, base }),
            (Format::Elf, None) => Image::from_elf(&name, &bytes),
            (Format::IntelHex, None) => Image::from_hex(&name, &bytes),
        }
    }

    /// Parses an ELF file held in memory; `name` labels it in errors.
    pub fn from_elf(name: &str, bytes: &[u8]) -> Result<Image, ImageError> {
        crate::elf::parse(name, bytes)
    }

    /// Parses an Intel HEX file held in memory; `name` labels it in errors.
    pub fn from_hex(name: &str, bytes: &[u8]) -> Result<Image, ImageError> {
        crate::hex::parse(name, bytes)
    }

    /// A raw binary placed at `base`.
    pub fn from_bin(name: &str, bytes: &[u8], base: u32) -> Result<Image, ImageError> {
        let piece = Segment { address: base, data: bytes.to_vec(), origins: vec![Origin::Bin { offset: 0 }] };
        Image::from_pieces(name, Format::Bin, vec![piece], None)
    }

    /// Sorts and merges pieces; touching pieces become one segment, overlapping pieces are refused
    /// (two sources for the same byte means the file is not what its author thinks it is).
    pub(crate) fn from_pieces(
        name: &str,
        format: Format,
        mut pieces: Vec<Segment>,
        entry: Option<u32>,
    ) -> Result<Image, ImageError> {
        pieces.retain(|p| !p.data.is_empty());
        for p in &pieces {
            if p.end() > 1 << 32 {
                return Err(ImageError::AddressOverflow {
                    file: name.into(),
                    what: p.describe(),
                    address: p.address,
                    len: p.data.len() as u64,
                });
            }
        }
        pieces.sort_by_key(|p| p.address);
        let mut segments: Vec<Segment> = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match segments.last_mut() {
                Some(prev) if (piece.address as u64) < prev.end() => {
                    return Err(ImageError::Overlap {
                        file: name.into(),
                        first: prev.describe(),
                        second: piece.describe(),
                        address: piece.address,
                    });
                }
                Some(prev) if piece.address as u64 == prev.end() => {
                    prev.data.extend_from_slice(&piece.data);
                    for origin in piece.origins {
                        merge_origin(&mut prev.origins, origin);
                    }
                }
                _ => segments.push(piece),
            }
        }
        Ok(Image { name: name.into(), format, segments, entry })
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Total number of bytes to load.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.data.len() as u64).sum()
    }

    /// (address, bytes) of every segment, the shape the bootloader clients take
    /// (`UartClient::write`, `DfuSeClient::download_ranges`).
    pub fn ranges(&self) -> Vec<(u32, &[u8])> {
        self.segments.iter().map(|s| (s.address, s.data.as_slice())).collect()
    }

    /// The segment holding `address`, if any.
    pub fn segment_at(&self, address: u32) -> Option<&Segment> {
        self.segments.iter().find(|s| s.contains(address))
    }

    /// `len` bytes from `address` if the image holds all of them in one segment.
    pub fn bytes_at(&self, address: u32, len: usize) -> Option<&[u8]> {
        let seg = self.segment_at(address)?;
        let start = (address - seg.address) as usize;
        seg.data.get(start..start.checked_add(len)?)
    }

    /// Little-endian word at `address` (Cortex-M memory is little-endian).
    pub fn read_u32(&self, address: u32) -> Option<u32> {
        self.bytes_at(address, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Consecutive HEX records collapse into one line range; other origins are kept as they are.
fn merge_origin(origins: &mut Vec<Origin>, origin: Origin) {
    if let (Some(Origin::HexRecords { first_line, last_line }), Origin::HexRecords { first_line: f, last_line: l }) =
        (origins.last_mut(), &origin)
    {
        *first_line = (*first_line).min(*f);
        *last_line = (*last_line).max(*l);
        return;
    }
    if origins.last() != Some(&origin) {
        origins.push(origin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(address: u32, data: &[u8], index: usize) -> Segment {
        Segment { address, data: data.to_vec(), origins: vec![Origin::ElfSegment { index, sections: vec![] }] }
    }

    #[test]
    fn pieces_are_sorted_and_touching_ones_merged_with_their_origins() {
        let img = Image::from_pieces(
            "t",
            Format::Elf,
            vec![piece(0x100, &[3, 4], 1), piece(0x0, &[9], 2), piece(0xFE, &[1, 2], 0), piece(0x200, &[], 3)],
            None,
        )
        .unwrap();
        assert_eq!(img.segments.len(), 2);
        assert_eq!(img.segments[0].address, 0);
        assert_eq!(img.segments[1].address, 0xFE);
        assert_eq!(img.segments[1].data, [1, 2, 3, 4]);
        assert_eq!(img.segments[1].describe(), "ELF segment 0 + ELF segment 1");
        assert_eq!(img.len(), 5);
        assert_eq!(img.read_u32(0xFE), Some(0x0403_0201));
        assert_eq!(img.read_u32(0xFF), None, "runs past the segment");
    }

    #[test]
    fn overlapping_pieces_are_refused_naming_both() {
        let e = Image::from_pieces("fw.elf", Format::Elf, vec![piece(0x10, &[0; 8], 0), piece(0x14, &[0; 8], 1)], None)
            .unwrap_err();
        assert_eq!(e.to_string(), "fw.elf: ELF segment 1 overlaps ELF segment 0 at 0x00000014");
    }

    #[test]
    fn pieces_past_4_gib_are_refused() {
        let e = Image::from_bin("x.bin", &[0; 16], 0xFFFF_FFF8).unwrap_err();
        assert!(e.to_string().contains("past the end of the 32-bit address space"), "{e}");
    }

    #[test]
    fn load_detects_the_format_and_insists_on_a_base_for_bin_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("fw.hex"), ":0400000001020304F2\n:00000001FF\n").unwrap();
        std::fs::write(path("fw.bin"), [1, 2, 3, 4]).unwrap();
        std::fs::write(
            path("fw.elf"),
            crate::elf::testelf::build(1, &[crate::elf::testelf::Seg::at(0x0800_0000, &[1, 2, 3, 4], &[])]),
        )
        .unwrap();
        std::fs::write(path("fw.img"), [1, 2, 3, 4]).unwrap();

        let hex = Image::load(&path("fw.hex"), None).unwrap();
        assert_eq!((hex.format, hex.segments[0].address), (Format::IntelHex, 0));
        let bin = Image::load(&path("fw.bin"), Some(0x0800_0000)).unwrap();
        assert_eq!(bin.ranges(), [(0x0800_0000, &[1u8, 2, 3, 4][..])]);
        let elf = Image::load(&path("fw.elf"), None).unwrap();
        assert_eq!(elf.format, Format::Elf);

        let name = |f: &str| path(f).display().to_string();
        let e = Image::load(&path("fw.bin"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: a raw binary has no addresses: give the base address it is linked at (e.g. 0x08000000)",
                name("fw.bin")
            )
        );
        let e = Image::load(&path("fw.elf"), Some(0x0800_0000)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: is ELF, which carries its own addresses: the base address 0x08000000 applies to raw binaries only",
                name("fw.elf")
            )
        );
        let e = Image::load(&path("fw.img"), None).unwrap_err();
        assert!(matches!(e, ImageError::UnknownFormat { .. }), "{e}");
        let e = Image::load(&path("missing.elf"), None).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}: cannot read: ", name("missing.elf"))), "{e}");
    }

    #[test]
    fn hex_line_ranges_collapse_when_merged() {
        let mut origins = vec![Origin::HexRecords { first_line: 2, last_line: 2 }];
        merge_origin(&mut origins, Origin::HexRecords { first_line: 3, last_line: 3 });
        assert_eq!(origins, [Origin::HexRecords { first_line: 2, last_line: 3 }]);
        assert_eq!(origins[0].to_string(), "HEX records on lines 2-3");
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn only_regular_files_of_a_bounded_size_are_read() {
        let e = read_image_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert_eq!(e, "/dev/zero: is a character device, not a regular file: an image is read from a file");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("app.bin");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = Image::load(&fifo, Some(0x0800_0000)).unwrap_err().to_string();
        assert!(e.ends_with("app.bin: is a FIFO, not a regular file: an image is read from a file"), "{e}");
        let e = read_image_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let big = dir.path().join("big.bin");
        std::fs::File::create(&big).unwrap().set_len(MAX_IMAGE_FILE + 1).unwrap();
        let e = read_image_file(&big).unwrap_err().to_string();
        assert!(e.contains(&format!("is {} bytes; an image file is at most", MAX_IMAGE_FILE + 1)), "{e}");
        let (a, b) = (dir.path().join("a.elf"), dir.path().join("b.elf"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        assert!(read_image_file(&a).unwrap_err().to_string().ends_with("a.elf: is a symlink loop"));
        let ok = dir.path().join("ok.bin");
        std::fs::write(&ok, [1, 2, 3]).unwrap();
        assert_eq!(read_image_file(&ok).unwrap(), vec![1, 2, 3]);
    }
}
