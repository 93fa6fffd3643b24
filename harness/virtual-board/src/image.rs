//! Firmware images for loading straight into the virtual chip's flash (a programmer's view, as
//! `hil sim serve --image FILE` needs): ELF files by their loadable segments' load addresses
//! (LMA, `p_paddr`; pitfall P9), raw binaries at a given address.

use object::elf;
use object::read::elf::{ElfFile32, ProgramHeader};

use crate::error::BoardError;

/// What an image file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Elf,
    /// Raw bytes placed at `base`.
    Bin {
        base: u32,
    },
}

impl ImageFormat {
    /// ELF when the bytes start with the ELF magic, otherwise a binary at `bin_base`.
    pub fn detect(bytes: &[u8], bin_base: u32) -> ImageFormat {
        if bytes.starts_with(b"\x7fELF") { ImageFormat::Elf } else { ImageFormat::Bin { base: bin_base } }
    }
}

/// A contiguous piece of an image: where it loads and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: u32,
    pub data: Vec<u8>,
}

/// The loadable pieces of an image.
pub fn segments(bytes: &[u8], format: ImageFormat) -> Result<Vec<Segment>, BoardError> {
    match format {
        ImageFormat::Bin { base } => Ok(vec![Segment { addr: base, data: bytes.to_vec() }]),
        ImageFormat::Elf => {
            let f = ElfFile32::<object::Endianness>::parse(bytes)
                .map_err(|e| BoardError::Image(format!("not a 32-bit ELF file: {e}")))?;
            let e = f.endian();
            let mut out = Vec::new();
            for (i, ph) in f.elf_program_headers().iter().enumerate() {
                if ph.p_type(e) != elf::PT_LOAD || ph.p_filesz(e) == 0 {
                    continue;
                }
                let data = ph.data(e, bytes).map_err(|()| {
                    BoardError::Image(format!("ELF program header {i}: segment data outside the file"))
                })?;
                out.push(Segment { addr: ph.p_paddr(e), data: data.to_vec() });
            }
            if out.is_empty() {
                return Err(BoardError::Image("the ELF file has no loadable segment with data".into()));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_and_bad_elf() {
        assert_eq!(ImageFormat::detect(b"\x7fELF...", 0), ImageFormat::Elf);
        assert_eq!(ImageFormat::detect(&[0, 1], 0x0800_4000), ImageFormat::Bin { base: 0x0800_4000 });
        let s = segments(&[1, 2, 3], ImageFormat::Bin { base: 0x0800_0000 }).unwrap();
        assert_eq!(s, vec![Segment { addr: 0x0800_0000, data: vec![1, 2, 3] }]);
        let e = segments(b"\x7fELF garbage", ImageFormat::Elf).unwrap_err();
        assert!(e.to_string().contains("ELF"), "{e}");
    }

    #[test]
    fn fixture_elf_loads_at_its_base() {
        let f = hil_fixtures::get("smoke", 0x0800_0000).expect("smoke fixture");
        let segs = segments(f.elf, ImageFormat::Elf).unwrap();
        assert!(segs.iter().all(|s| (0x0800_0000..0x0802_0000).contains(&s.addr)), "{segs:?}");
        assert_eq!(segs[0].addr, 0x0800_0000, "vector table first");
    }
}
