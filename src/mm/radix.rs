//! POWER9 radix page tables (ISA 3.0 Book III 6.7.10), built in software: the hypervisor's own
//! tree (linear map, I/O, virtual-only areas) and a guest's partition-scoped tree (guest physical
//! to host physical). Entries are big-endian u64s in tables this module allocates through a
//! [`TceMemory`] (the same "big-endian tables in physical memory" contract the TCE tables use).
//!
//! Geometry: a 52-bit address space, root of 2^13 entries, then three levels of 2^9; a leaf at
//! level 2 maps 1 GiB, at level 3 2 MiB, at level 4 4 KiB.

use crate::mm::addr::HostPhys;
use crate::tce::{AllocError, Be64, TceMemory};

/// Bits of address space a tree translates.
pub const ADDR_BITS: u32 = 52;
/// log2 of the root's entries.
pub const ROOT_BITS: u32 = 13;
/// log2 of each lower level's entries.
const LEVEL_BITS: u32 = 9;

/// Valid.
const PTE_VALID: u64 = 1 << 63;
/// Leaf (a page table entry, not a directory entry).
const PTE_LEAF: u64 = 1 << 62;
/// Real page number / next level base.
const PTE_RPN: u64 = 0x01ff_ffff_ffff_f000;
const PDE_NLB: u64 = 0x0fff_ffff_ffff_ff00;
/// Reference and change, set up front so the MMU never has to write them back.
const PTE_R: u64 = 1 << 8;
const PTE_C: u64 = 1 << 7;
/// Attribute: non-idempotent I/O (cache-inhibited, guarded).
const PTE_ATT_NI_IO: u64 = 0b10 << 4;
const PTE_PRIV: u64 = 1 << 3;
const PTE_READ: u64 = 1 << 2;
const PTE_WRITE: u64 = 1 << 1;
const PTE_EXEC: u64 = 1 << 0;

/// Page sizes a leaf can map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PageSize {
    /// 4 KiB (a level-4 leaf).
    Small,
    /// 2 MiB (a level-3 leaf).
    Large,
    /// 1 GiB (a level-2 leaf).
    Huge,
}

impl PageSize {
    /// log2 of the size.
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Small => 12,
            PageSize::Large => 21,
            PageSize::Huge => 30,
        }
    }
    /// Bytes.
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }
    /// The level (1 = root) whose entries are leaves of this size.
    const fn level(self) -> u32 {
        match self {
            PageSize::Huge => 2,
            PageSize::Large => 3,
            PageSize::Small => 4,
        }
    }
}

/// What a mapping allows and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Hypervisor RAM: read, write, execute, privileged.
    Ram,
    /// Device registers: read, write, non-idempotent I/O (cache-inhibited and guarded).
    Io,
    /// Guest RAM in a partition-scoped tree: read, write, execute.
    Guest,
    /// A device's registers in a partition-scoped tree (a BAR the guest owns): read, write,
    /// non-idempotent I/O (cache-inhibited and guarded), no execute.
    GuestIo,
}

impl Kind {
    fn bits(self) -> u64 {
        match self {
            Kind::Ram => PTE_PRIV | PTE_READ | PTE_WRITE | PTE_EXEC,
            Kind::Io => PTE_PRIV | PTE_READ | PTE_WRITE | PTE_ATT_NI_IO,
            Kind::Guest => PTE_READ | PTE_WRITE | PTE_EXEC,
            Kind::GuestIo => PTE_READ | PTE_WRITE | PTE_ATT_NI_IO,
        }
    }
}

/// Why a mapping was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RadixError {
    /// Address or size not aligned to the page, or beyond 52 bits.
    Misaligned,
    /// Something is mapped there already (a leaf where a directory is needed, or the reverse).
    Overlap,
    /// A table could not be allocated.
    NoMem,
}

impl From<AllocError> for RadixError {
    fn from(_: AllocError) -> Self {
        RadixError::NoMem
    }
}

/// One radix tree.
pub struct RadixTree<M: TceMemory> {
    mem: M,
    root: HostPhys,
}

/// `RTS` of a 52-bit tree, split into its two fields (RTS = bits - 31).
const fn rts_bits() -> u64 {
    let rts = (ADDR_BITS - 31) as u64;
    ((rts >> 3) << 61) | ((rts & 7) << 5)
}

/// RTS | root | RPDS for a tree rooted at `root`.
fn descriptor(root: HostPhys) -> u64 {
    rts_bits() | (root.0 & PDE_NLB) | ROOT_BITS as u64
}

impl<M: TceMemory> RadixTree<M> {
    /// An empty tree (a zeroed root of 2^13 entries, naturally aligned).
    pub fn new(mem: M) -> Result<Self, RadixError> {
        let root = mem.alloc_level(8 << ROOT_BITS, 0)?;
        Ok(RadixTree {
            mem,
            root: HostPhys(root),
        })
    }

    /// The root's physical address.
    pub fn root(&self) -> HostPhys {
        self.root
    }

    /// Partition-table doubleword 0 for this tree: HR | RTS | root | RPDS.
    pub fn pate0(&self) -> u64 {
        (1 << 63) | self.prte0()
    }

    /// Process-table doubleword 0 for this tree: RTS | root | RPDS.
    pub fn prte0(&self) -> u64 {
        descriptor(self.root)
    }

    fn load(&self, pa: u64) -> u64 {
        // SAFETY: `pa` is an entry of a table this tree allocated from `mem` and never frees
        // while the tree lives.
        Be64::from_raw(unsafe { self.mem.load(pa) }).to_cpu()
    }

    fn store(&self, pa: u64, v: u64) {
        // SAFETY: as for `load`.
        unsafe { self.mem.store(pa, Be64::from_cpu(v).raw()) }
    }

    /// The entry slot for `va` at `level` in table `table`.
    fn slot(table: u64, level: u32, va: u64) -> u64 {
        let (bits, below) = if level == 1 {
            (ROOT_BITS, ADDR_BITS - ROOT_BITS)
        } else {
            (LEVEL_BITS, ADDR_BITS - ROOT_BITS - LEVEL_BITS * (level - 1))
        };
        table + 8 * ((va >> below) & ((1 << bits) - 1))
    }

    /// Maps `[va, va + size)` to `pa` with one leaf. `va` is the address inside the tree's
    /// 52-bit space (the quadrant bits of an effective address are not part of it).
    pub fn map(
        &mut self,
        va: u64,
        pa: HostPhys,
        size: PageSize,
        kind: Kind,
    ) -> Result<(), RadixError> {
        let mask = size.bytes() - 1;
        if va & mask != 0 || pa.0 & mask != 0 || va >> ADDR_BITS != 0 || pa.0 >> 56 != 0 {
            return Err(RadixError::Misaligned);
        }
        let mut table = self.root.0;
        for level in 1..size.level() {
            let slot = Self::slot(table, level, va);
            let e = self.load(slot);
            if e & PTE_VALID == 0 {
                let next = self.mem.alloc_level(8 << LEVEL_BITS, 0)?;
                self.store(slot, PTE_VALID | next | LEVEL_BITS as u64);
                table = next;
            } else if e & PTE_LEAF != 0 {
                return Err(RadixError::Overlap);
            } else {
                table = e & PDE_NLB;
            }
        }
        let slot = Self::slot(table, size.level(), va);
        if self.load(slot) & PTE_VALID != 0 {
            return Err(RadixError::Overlap);
        }
        self.store(
            slot,
            PTE_VALID | PTE_LEAF | (pa.0 & PTE_RPN) | PTE_R | PTE_C | kind.bits(),
        );
        Ok(())
    }

    /// Maps `[va, va + len)` to `[pa, pa + len)` with the largest leaves alignment allows.
    pub fn map_range(
        &mut self,
        va: u64,
        pa: HostPhys,
        len: u64,
        kind: Kind,
    ) -> Result<(), RadixError> {
        if (va | pa.0 | len) & 0xfff != 0 {
            return Err(RadixError::Misaligned);
        }
        let mut off = 0;
        while off < len {
            let size = [PageSize::Huge, PageSize::Large, PageSize::Small]
                .into_iter()
                .find(|s| {
                    (va + off) & (s.bytes() - 1) == 0
                        && (pa.0 + off) & (s.bytes() - 1) == 0
                        && len - off >= s.bytes()
                })
                .unwrap_or(PageSize::Small);
            self.map(va + off, pa.add(off), size, kind)?;
            off += size.bytes();
        }
        Ok(())
    }

    /// Removes the leaf mapping `va` (of any size); returns what it mapped. Tables are kept.
    /// The caller invalidates the TLB.
    pub fn unmap(&mut self, va: u64) -> Option<(HostPhys, PageSize)> {
        let (slot, pa, size) = self.walk(va)?;
        self.store(slot, 0);
        Some((pa, size))
    }

    /// Software walk: the host physical address `va` translates to and its page size.
    pub fn translate(&self, va: u64) -> Option<(HostPhys, PageSize)> {
        self.walk(va).map(|(_, pa, size)| (pa, size))
    }

    fn walk(&self, va: u64) -> Option<(u64, HostPhys, PageSize)> {
        if va >> ADDR_BITS != 0 {
            return None;
        }
        let mut table = self.root.0;
        for size in [
            None,
            Some(PageSize::Huge),
            Some(PageSize::Large),
            Some(PageSize::Small),
        ] {
            let level = size.map_or(1, PageSize::level);
            let slot = Self::slot(table, level, va);
            let e = self.load(slot);
            if e & PTE_VALID == 0 {
                return None;
            }
            if e & PTE_LEAF != 0 {
                let size = size?;
                let mask = size.bytes() - 1;
                return Some((slot, HostPhys((e & PTE_RPN & !mask) | (va & mask)), size));
            }
            table = e & PDE_NLB;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tce::HeapMemory;

    #[test]
    fn pate_encoding_matches_the_isa_example() {
        // REFERENCE.md: a 52-bit tree with a 13-bit root at 0x21010000 is 0xC0000000210100AD
        // as a partition-table entry (HR set), 0x40000000210100AD without HR.
        assert_eq!(descriptor(HostPhys(0x2101_0000)), 0x4000_0000_2101_00AD);
        let mem = HeapMemory::new();
        let t = RadixTree::new(&mem).unwrap();
        assert_eq!(t.pate0(), (1 << 63) | descriptor(t.root()));
        assert_eq!(t.root().0 & 0xffff, 0, "the root is aligned to its 64 KiB");
    }

    #[test]
    fn maps_translate_and_refuse_overlaps() {
        let mem = HeapMemory::new();
        let mut t = RadixTree::new(&mem).unwrap();
        t.map(
            0x4000_0000,
            HostPhys(0x8000_0000),
            PageSize::Huge,
            Kind::Ram,
        )
        .unwrap();
        t.map(
            0x20_0000,
            HostPhys(0x1234_0000 & !0x1f_ffff),
            PageSize::Large,
            Kind::Io,
        )
        .unwrap();
        t.map(0x5000, HostPhys(0x9_9000), PageSize::Small, Kind::Guest)
            .unwrap();
        assert_eq!(
            t.translate(0x4123_4567),
            Some((HostPhys(0x8123_4567), PageSize::Huge))
        );
        assert_eq!(
            t.translate(0x5abc),
            Some((HostPhys(0x9_9abc), PageSize::Small))
        );
        assert_eq!(t.translate(0x6000), None);
        assert_eq!(
            t.map(0x4000_1000, HostPhys(0), PageSize::Small, Kind::Ram),
            Err(RadixError::Overlap),
            "a 4K leaf under a 1G leaf"
        );
        assert_eq!(
            t.map(0x20_0000, HostPhys(0), PageSize::Large, Kind::Ram),
            Err(RadixError::Overlap)
        );
        assert_eq!(
            t.map(0x1000, HostPhys(0x10), PageSize::Small, Kind::Ram),
            Err(RadixError::Misaligned)
        );
        // The leaf's bits: valid, leaf, R, C, and the kind's permissions.
        let (slot, _, _) = t.walk(0x5000).unwrap();
        let e = t.load(slot);
        assert_eq!(e, PTE_VALID | PTE_LEAF | 0x9_9000 | PTE_R | PTE_C | 0b111);
        assert_eq!(t.unmap(0x5000), Some((HostPhys(0x9_9000), PageSize::Small)));
        assert_eq!(t.translate(0x5000), None);
    }

    #[test]
    fn map_range_uses_the_largest_pages_alignment_allows() {
        let mem = HeapMemory::new();
        let mut t = RadixTree::new(&mem).unwrap();
        // 1 GiB + 2 MiB + 4 KiB, all aligned.
        let len = (1 << 30) + (2 << 20) + 0x1000;
        t.map_range(0, HostPhys(0), len, Kind::Ram).unwrap();
        assert_eq!(t.translate(0x3fff_ffff).unwrap().1, PageSize::Huge);
        assert_eq!(t.translate(0x4000_0000).unwrap().1, PageSize::Large);
        assert_eq!(t.translate(0x4020_0000).unwrap().1, PageSize::Small);
        assert_eq!(t.translate(0x4020_1000), None);
        // Misaligned physical: small pages only, translation still exact.
        t.map_range(1 << 40, HostPhys(0x1000), 4 << 20, Kind::Ram)
            .unwrap();
        assert_eq!(
            t.translate((1 << 40) + 0x20_0123),
            Some((HostPhys(0x20_1123), PageSize::Small))
        );
        // Root 64 KiB, one level-2 table per 512 GiB, one level-3 per 1 GiB, ...
        assert!(mem.outstanding_levels() >= 5);
    }
}
