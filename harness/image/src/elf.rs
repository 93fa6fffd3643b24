//! ELF loading: what a flasher writes is the file contents of `PT_LOAD` program headers at their
//! physical (load) addresses. Virtual addresses are where code runs: `.data` runs in RAM but is
//! loaded into flash behind `.text` (reference P9: tools that flash by VMA or flash RAM segments
//! fail with "not flash memory" or a NACK). `p_memsz` beyond `p_filesz` is `.bss`, zeroed by the
//! startup code, never flashed.

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, FileKind};

use crate::error::ImageError;
use crate::image::{Format, Image, Origin, Segment};

type Header = elf::FileHeader32<Endianness>;

pub(crate) fn parse(name: &str, bytes: &[u8]) -> Result<Image, ImageError> {
    let bad = |reason: String| ImageError::Elf { file: name.into(), reason };
    match FileKind::parse(bytes) {
        Ok(FileKind::Elf32) => {}
        Ok(FileKind::Elf64) => return Err(bad("64-bit ELF; STM32 firmware is 32-bit ELF".into())),
        Ok(kind) => return Err(bad(format!("this is a {kind:?} file, not ELF"))),
        Err(e) => return Err(bad(e.to_string())),
    }
    let header = Header::parse(bytes).map_err(|e| bad(e.to_string()))?;
    let endian = header.endian().map_err(|e| bad(e.to_string()))?;
    let machine = header.e_machine(endian);
    if machine != elf::EM_ARM {
        return Err(bad(format!("machine {machine} is not ARM (EM_ARM = 40): not Cortex-M firmware")));
    }
    let phdrs = header.program_headers(endian, bytes).map_err(|e| bad(format!("program headers: {e}")))?;
    // Section names only decorate messages; a stripped or odd section table is no reason to refuse.
    let sections = header.sections(endian, bytes).ok();

    let mut pieces = Vec::new();
    for (index, ph) in phdrs.iter().enumerate() {
        if ph.p_type(endian) != elf::PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let data = ph.data(endian, bytes).map_err(|()| {
            bad(format!(
                "program header {index}: file range 0x{:X}+0x{:X} is outside the file",
                ph.p_offset(endian),
                ph.p_filesz(endian)
            ))
        })?;
        let (start, end) = (ph.p_offset(endian) as u64, ph.p_offset(endian) as u64 + ph.p_filesz(endian) as u64);
        let mut names = Vec::new();
        if let Some(table) = &sections {
            for sh in table.iter() {
                let (off, size) = (sh.sh_offset(endian) as u64, sh.sh_size(endian) as u64);
                let allocated = sh.sh_flags(endian) & elf::SHF_ALLOC != 0;
                let inside = off >= start && off + size <= end;
                if allocated
                    && sh.sh_type(endian) != elf::SHT_NOBITS
                    && size > 0
                    && inside
                    && let Ok(n) = table.section_name(endian, sh)
                {
                    names.push(String::from_utf8_lossy(n).into_owned());
                }
            }
        }
        pieces.push(Segment {
            address: ph.p_paddr(endian),
            data: data.to_vec(),
            origins: vec![Origin::ElfSegment { index, sections: names }],
        });
    }
    Image::from_pieces(name, Format::Elf, pieces, Some(header.e_entry(endian)))
}

#[cfg(test)]
pub(crate) mod testelf {
    //! Hand-assembled ELF32 files for tests: just the headers a loader reads.

    /// One `PT_LOAD` segment; `sections` are (name, offset into `data`, size) of PROGBITS sections.
    pub struct Seg<'a> {
        pub paddr: u32,
        pub vaddr: u32,
        pub data: &'a [u8],
        pub memsz: u32,
        pub sections: &'a [(&'a str, u32, u32)],
    }

    impl<'a> Seg<'a> {
        pub fn at(addr: u32, data: &'a [u8], sections: &'a [(&'a str, u32, u32)]) -> Self {
            Seg { paddr: addr, vaddr: addr, data, memsz: data.len() as u32, sections }
        }
    }

    pub fn build(entry: u32, segs: &[Seg]) -> Vec<u8> {
        let phoff = 52u32;
        let data_off = phoff + 32 * segs.len() as u32;
        let mut out = Vec::new();
        // e_ident: ELFCLASS32, ELFDATA2LSB, EV_CURRENT.
        out.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
        let mut offsets = Vec::new();
        let mut cursor = data_off;
        for s in segs {
            offsets.push(cursor);
            cursor += s.data.len() as u32;
        }
        // Section name table, then section headers.
        let mut shstrtab = vec![0u8];
        let mut shdrs: Vec<[u32; 10]> = vec![[0; 10]];
        for (s, &off) in segs.iter().zip(&offsets) {
            for &(name, at, size) in s.sections {
                let name_off = shstrtab.len() as u32;
                shstrtab.extend_from_slice(name.as_bytes());
                shstrtab.push(0);
                // name, SHT_PROGBITS, SHF_ALLOC|SHF_EXECINSTR, addr, offset, size, link, info, align, entsize
                shdrs.push([name_off, 1, 6, s.vaddr + at, off + at, size, 0, 0, 4, 0]);
            }
        }
        let strtab_name = shstrtab.len() as u32;
        shstrtab.extend_from_slice(b".shstrtab\0");
        let strtab_off = cursor;
        shdrs.push([strtab_name, 3, 0, 0, strtab_off, shstrtab.len() as u32, 0, 0, 1, 0]);
        let shoff = (strtab_off + shstrtab.len() as u32 + 3) & !3;

        let half = |out: &mut Vec<u8>, v: u16| out.extend_from_slice(&v.to_le_bytes());
        let word = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        half(&mut out, 2); // ET_EXEC
        half(&mut out, 40); // EM_ARM
        word(&mut out, 1);
        word(&mut out, entry);
        word(&mut out, phoff);
        word(&mut out, shoff);
        word(&mut out, 0x0500_0200); // EF_ARM_EABI_VER5 | soft-float
        half(&mut out, 52);
        half(&mut out, 32);
        half(&mut out, segs.len() as u16);
        half(&mut out, 40);
        half(&mut out, shdrs.len() as u16);
        half(&mut out, shdrs.len() as u16 - 1);
        for (s, &off) in segs.iter().zip(&offsets) {
            for v in [1, off, s.vaddr, s.paddr, s.data.len() as u32, s.memsz, 5, 4] {
                word(&mut out, v);
            }
        }
        for s in segs {
            out.extend_from_slice(s.data);
        }
        out.extend_from_slice(&shstrtab);
        out.resize(shoff as usize, 0);
        for sh in shdrs {
            for v in sh {
                word(&mut out, v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testelf::{Seg, build};
    use crate::image::{Image, Origin};

    #[test]
    fn load_segments_use_physical_addresses_and_name_their_sections() {
        let text = [0xAAu8; 0x40];
        let data = [0x11u8; 8];
        let elf = build(
            0x0800_0009,
            &[
                Seg::at(0x0800_0000, &text, &[(".vector_table", 0, 0x20), (".text", 0x20, 0x20)]),
                // .data: runs in RAM (vaddr), loaded into flash right behind .text (paddr).
                Seg { paddr: 0x0800_0040, vaddr: 0x2000_0000, data: &data, memsz: 8, sections: &[(".data", 0, 8)] },
                // .bss-only segment: nothing in the file, nothing to flash.
                Seg { paddr: 0x2000_0008, vaddr: 0x2000_0008, data: &[], memsz: 0x100, sections: &[] },
            ],
        );
        let img = Image::from_elf("fw.elf", &elf).unwrap();
        assert_eq!(img.entry, Some(0x0800_0009));
        assert_eq!(img.segments.len(), 1, "{:#?}", img.segments);
        let seg = &img.segments[0];
        assert_eq!((seg.address, seg.data.len()), (0x0800_0000, 0x48));
        assert_eq!(&seg.data[0x40..], &data);
        assert_eq!(
            seg.origins,
            [
                Origin::ElfSegment { index: 0, sections: vec![".vector_table".into(), ".text".into()] },
                Origin::ElfSegment { index: 1, sections: vec![".data".into()] },
            ]
        );
        assert_eq!(seg.describe(), "ELF segment 0 (.vector_table, .text) + ELF segment 1 (.data)");
    }

    #[test]
    fn parses_from_an_unaligned_slice() {
        let elf = build(1, &[Seg::at(0x0800_0000, &[1, 2, 3, 4], &[])]);
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&elf);
        let img = Image::from_elf("odd.elf", &shifted[1..]).unwrap();
        assert_eq!(img.segments[0].data, [1, 2, 3, 4]);
    }

    #[test]
    fn malformed_elves_are_errors_not_panics() {
        let good = build(1, &[Seg::at(0x0800_0000, &[1, 2, 3, 4], &[])]);
        // Every truncation of a valid file must fail cleanly or parse.
        for len in 0..good.len() {
            let _ = Image::from_elf("t.elf", &good[..len]);
        }
        // Program header pointing past the end of the file.
        let mut bad = good.clone();
        bad[52 + 4..52 + 8].copy_from_slice(&0xFFFF_0000u32.to_le_bytes());
        let e = Image::from_elf("t.elf", &bad).unwrap_err();
        assert!(e.to_string().starts_with("t.elf: not a usable ELF file: program header 0: file range"), "{e}");
        // Not ARM.
        let mut x86 = good.clone();
        x86[18] = 3;
        let e = Image::from_elf("t.elf", &x86).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.elf: not a usable ELF file: machine 3 is not ARM (EM_ARM = 40): not Cortex-M firmware"
        );
        // 64-bit.
        let mut elf64 = good;
        elf64[4] = 2;
        assert!(Image::from_elf("t.elf", &elf64).unwrap_err().to_string().contains("64-bit ELF"));
        assert!(Image::from_elf("t.elf", b"MZ\x90\0").is_err());
    }

    #[test]
    fn the_real_smoke_fixture_loads_with_its_vector_table_at_the_base() {
        let f = hil_fixtures::get("smoke", 0x0800_0000).expect("smoke fixture is built");
        let img = Image::from_elf(f.path, f.elf).unwrap();
        let first = &img.segments[0];
        assert_eq!(first.address, 0x0800_0000);
        let reset = img.read_u32(0x0800_0004).unwrap();
        assert_eq!(reset & 1, 1);
        assert!(img.segment_at(reset & !1).is_some());
        // No RAM addresses: .data is loaded at its flash LMA.
        assert!(img.segments.iter().all(|s| s.address >= 0x0800_0000 && s.end() <= 0x0802_0000), "{:#?}", img.segments);
    }
}
