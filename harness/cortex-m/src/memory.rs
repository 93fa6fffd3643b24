//! The memory map: backing stores (RAM, flash, ROM, option bytes) and the regions that place them,
//! or devices, in the 4 GiB address space.
//!
//! Decode is two array lookups (1 MiB directory, 256-byte pages), never a scan. A store may be
//! mapped at several addresses (the boot alias at 0x0000_0000 and its home address), and a region
//! can be re-targeted at run time (SYSCFG memory remap) without touching the page tables.

use crate::bus::{BusFault, BusFaultKind, CODE_LINE_BYTES, CODE_LINE_HALFWORDS, Size};

/// Smallest unit of the address map. 256 bytes fits the smallest STM32 areas we map on their own
/// (the G0 option bytes at 0x1FFF7800 are 0x80 long and share their page with nothing else).
pub const PAGE_SHIFT: u32 = 8;
pub const PAGE_SIZE: u32 = 1 << PAGE_SHIFT;
const DIR_SHIFT: u32 = 20;
const PAGES_PER_DIR: usize = 1 << (DIR_SHIFT - PAGE_SHIFT);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId(pub u16);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u16);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub u16);

/// What happens when the CPU writes to a store region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePolicy {
    /// Plain memory (SRAM).
    Direct,
    /// Routed to a device's [`crate::Device::store_write`] (flash: the controller decides).
    Device(DeviceId),
    /// Bus fault (ROM).
    Fault,
    /// Silently ignored.
    Ignore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Store { store: StoreId, offset: u32, writes: WritePolicy },
    Device { device: DeviceId },
}

/// A contiguous window of the address space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub base: u32,
    pub len: u32,
    pub target: Target,
    /// Whether instructions may be fetched from it.
    pub executable: bool,
}

impl Region {
    pub fn contains(&self, addr: u32) -> bool {
        addr.wrapping_sub(self.base) < self.len
    }
    pub fn end(&self) -> u64 {
        self.base as u64 + self.len as u64
    }
}

/// A backing store: the bytes behind one or more regions.
#[derive(Clone, Debug)]
pub struct Store {
    pub name: String,
    pub data: Vec<u8>,
    /// One bit per [`CODE_LINE_BYTES`] of `data`: the core holds a decoded copy of those bytes,
    /// so a write to them must advance the generation.
    code_watch: Vec<u64>,
}

impl Store {
    #[inline]
    fn watch_hit(&mut self, off: usize, len: usize) -> bool {
        let (first, last) = (off / CODE_LINE_BYTES as usize, (off + len - 1) / CODE_LINE_BYTES as usize);
        let mut hit = false;
        for line in first..=last {
            if let Some(w) = self.code_watch.get_mut(line / 64) {
                let bit = 1u64 << (line % 64);
                if *w & bit != 0 {
                    *w &= !bit;
                    hit = true;
                }
            }
        }
        hit
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("region {name:?} at {base:#010x}+{len:#x} is not aligned to the {PAGE_SIZE}-byte map granule")]
    Unaligned { name: String, base: u32, len: u32 },
    #[error("region {name:?} at {base:#010x}+{len:#x} wraps past the end of the address space")]
    Wraps { name: String, base: u32, len: u32 },
    #[error("region {name:?} needs bytes {offset:#x}..{end:#x} of store {store:?}, which is only {store_len:#x} long")]
    OutsideStore { name: String, store: String, offset: u32, end: u64, store_len: usize },
    #[error("region {name:?} at {base:#010x}+{len:#x} overlaps region {other:?}")]
    Overlap { name: String, base: u32, len: u32, other: String },
    #[error("no such store {0:?}")]
    NoStore(StoreId),
    #[error("no such region {0:?}")]
    NoRegion(RegionId),
}

/// The memory map.
#[derive(Default)]
pub struct Memory {
    stores: Vec<Store>,
    regions: Vec<Region>,
    /// Directory of 4096 x 1 MiB; each populated entry holds one region index (+1, 0 = unmapped)
    /// per 256-byte page.
    dir: Vec<Option<Box<[u16; PAGES_PER_DIR]>>>,
    generation: u64,
}

impl Memory {
    pub fn new() -> Self {
        Memory { stores: Vec::new(), regions: Vec::new(), dir: (0..4096).map(|_| None).collect(), generation: 0 }
    }

    /// Incremented whenever the map or a store changes through any path other than a write to a
    /// `Direct` region (remap, flash programming, host writes), and by `Direct` writes into bytes
    /// handed out by [`Memory::fetch_code_line`]. Caches of decoded code check it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn add_store(&mut self, name: impl Into<String>, len: usize, fill: u8) -> StoreId {
        let lines = len.div_ceil(CODE_LINE_BYTES as usize);
        self.stores.push(Store { name: name.into(), data: vec![fill; len], code_watch: vec![0; lines.div_ceil(64)] });
        StoreId((self.stores.len() - 1) as u16)
    }

    pub fn store(&self, id: StoreId) -> &[u8] {
        &self.stores[id.0 as usize].data
    }
    /// Mutable access to a store's bytes (flash controller programming, loading images, POR fill).
    pub fn store_mut(&mut self, id: StoreId) -> &mut [u8] {
        self.generation += 1;
        &mut self.stores[id.0 as usize].data
    }
    pub fn store_name(&self, id: StoreId) -> &str {
        &self.stores[id.0 as usize].name
    }
    pub fn store_ids(&self) -> impl Iterator<Item = StoreId> + '_ {
        (0..self.stores.len()).map(|i| StoreId(i as u16))
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }
    pub fn region(&self, id: RegionId) -> &Region {
        &self.regions[id.0 as usize]
    }

    /// Place `len` bytes of `store` (from `offset`) at `base`.
    #[allow(clippy::too_many_arguments)]
    pub fn map_store(
        &mut self,
        name: &str,
        base: u32,
        len: u32,
        store: StoreId,
        offset: u32,
        writes: WritePolicy,
        executable: bool,
    ) -> Result<RegionId, MapError> {
        self.check_store_range(name, store, offset, len)?;
        self.add_region(Region {
            name: name.to_string(),
            base,
            len,
            target: Target::Store { store, offset, writes },
            executable,
        })
    }

    /// Place a device's register block at `base`.
    pub fn map_device(&mut self, name: &str, base: u32, len: u32, device: DeviceId) -> Result<RegionId, MapError> {
        self.add_region(Region {
            name: name.to_string(),
            base,
            len,
            target: Target::Device { device },
            executable: false,
        })
    }

    /// Point an existing region at another store, possibly with another length (memory remap of
    /// the boot alias: 0x0000_0000 shows flash, system memory or SRAM, each of its own size).
    #[allow(clippy::too_many_arguments)]
    pub fn retarget(
        &mut self,
        region: RegionId,
        store: StoreId,
        offset: u32,
        len: u32,
        writes: WritePolicy,
        executable: bool,
    ) -> Result<(), MapError> {
        let old = self.regions.get(region.0 as usize).ok_or(MapError::NoRegion(region))?.clone();
        self.check_store_range(&old.name, store, offset, len)?;
        if !len.is_multiple_of(PAGE_SIZE) || len == 0 {
            return Err(MapError::Unaligned { name: old.name, base: old.base, len });
        }
        if old.base as u64 + len as u64 > 1u64 << 32 {
            return Err(MapError::Wraps { name: old.name, base: old.base, len });
        }
        // Pages the new extent adds must be free.
        let mut page = old.end();
        while page < old.base as u64 + len as u64 {
            if let Some(other) = self.page_region(page as u32) {
                return Err(MapError::Overlap {
                    name: old.name,
                    base: old.base,
                    len,
                    other: self.regions[other as usize].name.clone(),
                });
            }
            page += PAGE_SIZE as u64;
        }
        self.set_pages(old.base, old.len, 0);
        self.set_pages(old.base, len, region.0 + 1);
        let r = &mut self.regions[region.0 as usize];
        r.len = len;
        r.target = Target::Store { store, offset, writes };
        r.executable = executable;
        self.generation += 1;
        Ok(())
    }

    fn set_pages(&mut self, base: u32, len: u32, value: u16) {
        let mut page = base as u64;
        while page < base as u64 + len as u64 {
            let a = page as u32;
            let d = (a >> DIR_SHIFT) as usize;
            let table = self.dir[d].get_or_insert_with(|| Box::new([0u16; PAGES_PER_DIR]));
            table[((a >> PAGE_SHIFT) as usize) & (PAGES_PER_DIR - 1)] = value;
            page += PAGE_SIZE as u64;
        }
    }

    fn check_store_range(&self, name: &str, store: StoreId, offset: u32, len: u32) -> Result<(), MapError> {
        let s = self.stores.get(store.0 as usize).ok_or(MapError::NoStore(store))?;
        let end = offset as u64 + len as u64;
        if end > s.data.len() as u64 {
            return Err(MapError::OutsideStore {
                name: name.to_string(),
                store: s.name.clone(),
                offset,
                end,
                store_len: s.data.len(),
            });
        }
        Ok(())
    }

    fn add_region(&mut self, region: Region) -> Result<RegionId, MapError> {
        let (base, len) = (region.base, region.len);
        if base % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 || len == 0 {
            return Err(MapError::Unaligned { name: region.name, base, len });
        }
        if base as u64 + len as u64 > 1u64 << 32 {
            return Err(MapError::Wraps { name: region.name, base, len });
        }
        let mut page = base as u64;
        while page < base as u64 + len as u64 {
            if let Some(other) = self.page_region(page as u32) {
                return Err(MapError::Overlap {
                    name: region.name,
                    base,
                    len,
                    other: self.regions[other as usize].name.clone(),
                });
            }
            page += PAGE_SIZE as u64;
        }
        if self.regions.len() >= u16::MAX as usize - 1 {
            panic!("more than 65534 memory regions");
        }
        self.regions.push(region);
        let id = self.regions.len() as u16; // stored +1
        self.set_pages(base, len, id);
        self.generation += 1;
        Ok(RegionId(id - 1))
    }

    #[inline]
    fn page_region(&self, addr: u32) -> Option<u16> {
        let table = self.dir[(addr >> DIR_SHIFT) as usize].as_ref()?;
        match table[((addr >> PAGE_SHIFT) as usize) & (PAGES_PER_DIR - 1)] {
            0 => None,
            id => Some(id - 1),
        }
    }

    /// The region that decodes `addr`, if any.
    #[inline]
    pub fn region_at(&self, addr: u32) -> Option<(RegionId, &Region)> {
        let id = self.page_region(addr)?;
        Some((RegionId(id), &self.regions[id as usize]))
    }

    /// Bytes of the store behind `region`, from the region's start (for code-fetch windows).
    #[inline]
    pub fn region_bytes(&self, region: &Region) -> Option<&[u8]> {
        match region.target {
            Target::Store { store, offset, .. } => {
                let data = &self.stores[store.0 as usize].data;
                Some(&data[offset as usize..offset as usize + region.len as usize])
            }
            Target::Device { .. } => None,
        }
    }

    /// Copy the executable code line at `line_addr` (aligned to [`CODE_LINE_BYTES`]) and watch it
    /// (see [`crate::Bus::fetch_code_line`]). Regions are page-aligned, so a line never straddles
    /// two regions.
    pub fn fetch_code_line(&mut self, line_addr: u32, out: &mut [u16; CODE_LINE_HALFWORDS]) -> bool {
        let Some(id) = self.page_region(line_addr) else { return false };
        let r = &self.regions[id as usize];
        let Target::Store { store, offset, .. } = r.target else { return false };
        if !r.executable {
            return false;
        }
        let off = (offset + (line_addr - r.base)) as usize;
        let s = &mut self.stores[store.0 as usize];
        let Some(bytes) = s.data.get(off..off + CODE_LINE_BYTES as usize) else { return false };
        for (hw, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *hw = u16::from_le_bytes([b[0], b[1]]);
        }
        let (line_bytes, last_byte) = (CODE_LINE_BYTES as usize, off + CODE_LINE_BYTES as usize - 1);
        for line in off / line_bytes..=last_byte / line_bytes {
            if let Some(w) = s.code_watch.get_mut(line / 64) {
                *w |= 1u64 << (line % 64);
            }
        }
        true
    }

    /// Read from a store-backed address (no device dispatch). `None` if not store-backed.
    #[inline]
    pub fn read_store(&self, addr: u32, size: Size) -> Option<Result<u32, BusFault>> {
        let (_, r) = self.region_at(addr)?;
        match r.target {
            Target::Store { store, offset, .. } => {
                let off = (offset + (addr - r.base)) as usize;
                let data = &self.stores[store.0 as usize].data;
                Some(read_le(data, off, size).ok_or(BusFault::new(addr, size, BusFaultKind::Unmapped)))
            }
            Target::Device { .. } => None,
        }
    }

    /// Write bytes into the store behind `addr` regardless of write policy (debugger and loader
    /// path for RAM, and what flash controllers use to commit programmed data).
    pub fn poke(&mut self, addr: u32, bytes: &[u8]) -> Result<(), BusFault> {
        for (i, b) in bytes.iter().enumerate() {
            let a = addr.wrapping_add(i as u32);
            let (_, r) = self.region_at(a).ok_or(BusFault::new(a, Size::Byte, BusFaultKind::Unmapped))?;
            match r.target {
                Target::Store { store, offset, .. } => {
                    let off = (offset + (a - r.base)) as usize;
                    self.stores[store.0 as usize].data[off] = *b;
                }
                Target::Device { .. } => return Err(BusFault::new(a, Size::Byte, BusFaultKind::Device("not memory"))),
            }
        }
        self.generation += 1;
        Ok(())
    }

    /// Read bytes from store-backed addresses (no device dispatch).
    pub fn peek(&self, addr: u32, out: &mut [u8]) -> Result<(), BusFault> {
        for (i, b) in out.iter_mut().enumerate() {
            let a = addr.wrapping_add(i as u32);
            *b = self.read_store(a, Size::Byte).ok_or(BusFault::new(a, Size::Byte, BusFaultKind::Unmapped))?? as u8;
        }
        Ok(())
    }

    /// CPU write to a store region with policy `Direct`: returns `Some(Ok)` when handled here,
    /// `Some(Err)` on a fault, `None` when the access must go to a device.
    #[inline]
    pub fn write_store_direct(&mut self, addr: u32, size: Size, value: u32) -> Option<Result<(), BusFault>> {
        let id = self.page_region(addr)?;
        let r = &self.regions[id as usize];
        match r.target {
            Target::Store { store, offset, writes: WritePolicy::Direct } => {
                let off = (offset + (addr - r.base)) as usize;
                let s = &mut self.stores[store.0 as usize];
                if write_le(&mut s.data, off, size, value).is_none() {
                    return Some(Err(BusFault::new(addr, size, BusFaultKind::Unmapped)));
                }
                if s.watch_hit(off, size.bytes() as usize) {
                    self.generation += 1;
                }
                Some(Ok(()))
            }
            Target::Store { writes: WritePolicy::Fault, .. } => {
                Some(Err(BusFault::new(addr, size, BusFaultKind::ReadOnly)))
            }
            Target::Store { writes: WritePolicy::Ignore, .. } => Some(Ok(())),
            _ => None,
        }
    }
}

#[inline]
pub(crate) fn read_le(data: &[u8], off: usize, size: Size) -> Option<u32> {
    Some(match size {
        Size::Byte => *data.get(off)? as u32,
        Size::Half => u16::from_le_bytes(data.get(off..off + 2)?.try_into().ok()?) as u32,
        Size::Word => u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?),
    })
}

#[inline]
pub(crate) fn write_le(data: &mut [u8], off: usize, size: Size, value: u32) -> Option<()> {
    match size {
        Size::Byte => *data.get_mut(off)? = value as u8,
        Size::Half => data.get_mut(off..off + 2)?.copy_from_slice(&(value as u16).to_le_bytes()),
        Size::Word => data.get_mut(off..off + 4)?.copy_from_slice(&value.to_le_bytes()),
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> (Memory, StoreId, StoreId, RegionId) {
        let mut m = Memory::new();
        let flash = m.add_store("flash", 128 * 1024, 0xFF);
        let ram = m.add_store("sram", 36 * 1024, 0x00);
        m.map_store("flash", 0x0800_0000, 128 * 1024, flash, 0, WritePolicy::Fault, true).unwrap();
        m.map_store("sram", 0x2000_0000, 36 * 1024, ram, 0, WritePolicy::Direct, true).unwrap();
        let alias = m.map_store("boot alias", 0, 128 * 1024, flash, 0, WritePolicy::Fault, true).unwrap();
        (m, flash, ram, alias)
    }

    #[test]
    fn alias_and_home_address_share_one_store() {
        let (mut m, flash, _, _) = board();
        m.store_mut(flash)[0..4].copy_from_slice(&0x2000_9000u32.to_le_bytes());
        assert_eq!(m.read_store(0x0800_0000, Size::Word).unwrap().unwrap(), 0x2000_9000);
        assert_eq!(m.read_store(0x0000_0000, Size::Word).unwrap().unwrap(), 0x2000_9000);
        assert_eq!(m.read_store(0x0000_0002, Size::Half).unwrap().unwrap(), 0x2000);
    }

    #[test]
    fn remap_retargets_the_alias_without_touching_home() {
        let (mut m, _, ram, alias) = board();
        m.write_store_direct(0x2000_0000, Size::Word, 0xDEAD_BEEF).unwrap().unwrap();
        let g = m.generation();
        let e = m.retarget(alias, ram, 0, 128 * 1024, WritePolicy::Direct, true).unwrap_err();
        assert!(matches!(e, MapError::OutsideStore { .. }), "{e}");
        let small = m.add_store("sysmem", 28 * 1024, 0);
        m.store_mut(small)[0] = 0x42;
        m.retarget(alias, small, 0, 28 * 1024, WritePolicy::Fault, true).unwrap();
        assert!(m.generation() > g);
        assert_eq!(m.read_store(0, Size::Byte).unwrap().unwrap(), 0x42);
        assert!(m.region_at(28 * 1024).is_none(), "the shorter alias leaves the rest unmapped");
        assert_eq!(m.read_store(0x0800_0000, Size::Byte).unwrap().unwrap(), 0xFF);
        // And back to flash, full length again.
        let flash = StoreId(0);
        m.retarget(alias, flash, 0, 128 * 1024, WritePolicy::Fault, true).unwrap();
        assert_eq!(m.read_store(0x1_FFFC, Size::Byte).unwrap().unwrap(), 0xFF);
    }

    #[test]
    fn write_policies() {
        let (mut m, _, _, _) = board();
        let f = m.write_store_direct(0x0800_0000, Size::Word, 0).unwrap().unwrap_err();
        assert_eq!(f.kind, BusFaultKind::ReadOnly);
        assert_eq!(f.addr, 0x0800_0000);
        assert!(m.write_store_direct(0x4000_0000, Size::Word, 0).is_none());
        m.write_store_direct(0x2000_8FFC, Size::Word, 0x1234_5678).unwrap().unwrap();
        assert_eq!(m.read_store(0x2000_8FFF, Size::Byte).unwrap().unwrap(), 0x12);
    }

    #[test]
    fn unmapped_and_overlaps_are_reported() {
        let (mut m, flash, _, _) = board();
        assert!(m.region_at(0x2000_9000).is_none());
        assert!(m.read_store(0x3000_0000, Size::Word).is_none());
        let e = m.map_store("bad", 0x0801_0000, 0x100, flash, 0, WritePolicy::Fault, false).unwrap_err();
        assert!(matches!(e, MapError::Overlap { .. }), "{e}");
        let e = m.map_store("odd", 0x1000_0010, 0x100, flash, 0, WritePolicy::Fault, false).unwrap_err();
        assert!(matches!(e, MapError::Unaligned { .. }), "{e}");
        let e = m.map_store("big", 0x1000_0000, 0x4_0000, flash, 0, WritePolicy::Fault, false).unwrap_err();
        assert!(matches!(e, MapError::OutsideStore { .. }), "{e}");
        let e = m.map_device("wrap", 0xFFFF_FF00, 0x200, DeviceId(0)).unwrap_err();
        assert!(matches!(e, MapError::Wraps { .. }), "{e}");
    }

    #[test]
    fn peek_poke_cross_regions_and_fail_on_gaps() {
        let (mut m, _, _, _) = board();
        m.poke(0x2000_0010, &[1, 2, 3]).unwrap();
        let mut b = [0u8; 3];
        m.peek(0x2000_0010, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3]);
        let e = m.poke(0x2000_8FFF, &[1, 2]).unwrap_err();
        assert_eq!(e.addr, 0x2000_9000);
    }
}
