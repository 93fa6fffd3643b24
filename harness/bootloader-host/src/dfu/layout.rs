//! DfuSe memory layout strings (the iInterface string of each alternate setting), e.g.
//! `@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg`. Grammar as reference 3.2 (\[DU\]
//! dfuse_mem.c): `@name`, then groups of `/0xSTART/` with comma-separated `COUNT*SIZE[MULT]TYPE`,
//! MULT one of B, K, M or a space, TYPE a letter a-g whose low bits are readable(1), erasable(2),
//! writable(4). Sectors of one group follow each other; a new `/0x...` starts a new range.

use std::fmt;

/// A run of equally sized pages (sectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySegment {
    pub start: u32,
    pub page_size: u32,
    pub pages: u32,
    pub readable: bool,
    pub erasable: bool,
    pub writable: bool,
}

impl MemorySegment {
    pub fn end(&self) -> u64 {
        self.start as u64 + self.page_size as u64 * self.pages as u64
    }

    pub fn contains(&self, address: u32) -> bool {
        address >= self.start && (address as u64) < self.end()
    }

    /// Start of the page holding `address` (which must be inside).
    pub fn page_start(&self, address: u32) -> u32 {
        self.start + (address - self.start) / self.page_size * self.page_size
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// The memory's name, e.g. `Internal Flash` (padding spaces trimmed).
    pub name: String,
    pub segments: Vec<MemorySegment>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("memory layout {text:?}: {reason}")]
pub struct LayoutError {
    pub text: String,
    pub reason: String,
}

impl MemoryLayout {
    pub fn parse(text: &str) -> Result<MemoryLayout, LayoutError> {
        let err = |reason: String| LayoutError { text: text.into(), reason };
        // Devices pad strings with NULs or spaces.
        let trimmed = text.trim_end_matches(['\0', ' ']);
        let rest = trimmed.strip_prefix('@').ok_or_else(|| err("does not start with '@'".into()))?;
        let mut parts = rest.split('/');
        let name = parts.next().unwrap_or_default().trim().to_string();
        let mut segments = Vec::new();
        while let Some(start_text) = parts.next() {
            let start_text = start_text.trim();
            let hex = start_text
                .strip_prefix("0x")
                .or_else(|| start_text.strip_prefix("0X"))
                .ok_or_else(|| err(format!("start address {start_text:?} is not 0x-prefixed hex")))?;
            let mut at =
                u32::from_str_radix(hex, 16).map_err(|e| err(format!("start address {start_text:?}: {e}")))? as u64;
            let groups = parts.next().ok_or_else(|| err(format!("no sectors after {start_text}")))?;
            for group in groups.split(',') {
                let seg = parse_group(group.trim_start(), at).map_err(|r| err(format!("group {group:?}: {r}")))?;
                at = seg.end();
                segments.push(seg);
            }
        }
        if segments.is_empty() {
            return Err(err("no memory ranges".into()));
        }
        Ok(MemoryLayout { name, segments })
    }

    pub fn find(&self, address: u32) -> Option<&MemorySegment> {
        self.segments.iter().find(|s| s.contains(address))
    }
}

fn parse_group(group: &str, start: u64) -> Result<MemorySegment, String> {
    let (count, rest) = group.split_once('*').ok_or("expected COUNT*SIZE")?;
    let pages: u32 = count.trim().parse().map_err(|_| format!("page count {count:?} is not a number"))?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let size: u64 = rest[..digits].parse().map_err(|_| format!("page size {:?} is not a number", &rest[..digits]))?;
    let suffix: Vec<char> = rest[digits..].chars().collect();
    let (mult, kind) = match suffix.as_slice() {
        [kind] => (1, *kind),
        [m, kind] => {
            let mult = match m {
                'B' | ' ' => 1,
                'K' => 1024,
                'M' => 1024 * 1024,
                other => return Err(format!("unknown size multiplier {other:?}")),
            };
            (mult, *kind)
        }
        _ => return Err("expected a type letter after the size".into()),
    };
    if !matches!(kind, 'a'..='g' | 'A'..='G') {
        return Err(format!("unknown memory type {kind:?} (a-g)"));
    }
    let bits = kind as u8 & 7;
    let page_size = size * mult;
    if page_size == 0 || page_size > u32::MAX as u64 {
        return Err(format!("page size {page_size} out of range"));
    }
    if start + page_size * pages as u64 > 1 << 32 {
        return Err("runs past the end of the 32-bit address space".into());
    }
    Ok(MemorySegment {
        start: start as u32,
        page_size: page_size as u32,
        pages,
        readable: bits & 1 != 0,
        erasable: bits & 2 != 0,
        writable: bits & 4 != 0,
    })
}

impl fmt::Display for MemoryLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.name)?;
        for s in &self.segments {
            let flags: String = [(s.readable, 'r'), (s.erasable, 'e'), (s.writable, 'w')]
                .iter()
                .map(|&(on, c)| if on { c } else { '-' })
                .collect();
            write!(f, " 0x{:08X} {}x{} {flags};", s.start, s.pages, s.page_size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f4_layout_with_mixed_sectors() {
        let l = MemoryLayout::parse("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg").unwrap();
        assert_eq!(l.name, "Internal Flash");
        assert_eq!(l.segments.len(), 3);
        assert_eq!((l.segments[1].start, l.segments[1].page_size), (0x0801_0000, 0x1_0000));
        assert_eq!(l.segments[2].end(), 0x0810_0000);
        let s = l.find(0x0802_1234).unwrap();
        assert_eq!(s.page_start(0x0802_1234), 0x0802_0000);
        assert!(s.readable && s.erasable && s.writable);
        assert!(l.find(0x0810_0000).is_none());
    }

    #[test]
    fn space_multiplier_types_and_several_ranges() {
        let l = MemoryLayout::parse("@Option Bytes  /0x1FFF7800/01*040 e").unwrap();
        let s = l.segments[0];
        assert_eq!((s.page_size, s.readable, s.erasable, s.writable), (40, true, false, true));
        let l = MemoryLayout::parse("@OTP Memory /0x1FFF7800/01*512 g,01*016 g").unwrap();
        assert_eq!(l.segments[1].start, 0x1FFF_7A00);
        let l = MemoryLayout::parse("@Flash/0x08000000/2*1Ka/0x08100000/1*2Kd\0\0").unwrap();
        assert_eq!(l.segments[1].start, 0x0810_0000);
        assert!(l.segments[0].readable && !l.segments[0].writable);
        assert_eq!(l.to_string(), "Flash: 0x08000000 2x1024 r--; 0x08100000 1x2048 --w;");
    }

    #[test]
    fn bad_layouts_are_errors_naming_the_group() {
        let e = MemoryLayout::parse("@Flash/0x08000000/04*016Xg").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"memory layout "@Flash/0x08000000/04*016Xg": group "04*016Xg": unknown size multiplier 'X'"#
        );
        for bad in [
            "Internal Flash/0x08000000/1*1Kg",
            "@F/08000000/1*1Kg",
            "@F/0x08000000",
            "@F/0x08000000/1*1Kz",
            "@F/0xFFFFF000/2*4Kg",
            "@F",
            "@F/0x0/*",
            "@F/0x0/1*0Kg",
        ] {
            assert!(MemoryLayout::parse(bad).is_err(), "{bad}");
        }
    }
}
