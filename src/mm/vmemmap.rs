//! Page descriptors in a vmemmap, and the real-mode walker that finds them without the MMU.
//!
//! The vmemmap is a virtually contiguous array of one [`PageDesc`] per host page frame, at
//! [`VMEMMAP_BASE`]` + pfn * `[`DESC_SIZE`], backed by blocks of [`BLOCK_SIZE`] bytes scattered
//! in physical memory and mapped by the hypervisor's page tables. With the MMU off that mapping
//! does not exist, so real mode asks the [`BlockIndex`] for the block holding a descriptor's
//! vmemmap address and reads it through the block's physical address (linear map).
//!
//! - The index is a sorted array of (vmemmap address, physical address): a lookup probes where
//!   the block would be if none were missing (one probe for a dense vmemmap) and falls back to
//!   a binary search, O(log n); allocation-free, lock-free for readers. Blocks come and go (memory hot-plug)
//!   under a sequence count: a writer makes it odd, edits, makes it even; a reader that sees it
//!   odd or changed across its lookup gets [`Lookup::Unstable`] and declines to virtual mode. A
//!   reader never waits.
//! - 24-byte descriptors do not divide a block: a descriptor that straddles two blocks is
//!   [`Lookup::Straddles`], unreachable from real mode (its two halves are not physically
//!   adjacent), and the caller declines.
//! - Virtual mode reaches a descriptor by its vmemmap address, always.
//! - A removed block's memory may be reused only after a grace period in which every CPU has
//!   left the real-mode hypercall path (a reader may still hold a descriptor it found just
//!   before the removal). With one CPU, the remover itself is that CPU, in virtual mode.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};

use super::addr::{HostPhys, Pfn};
use super::mode::{RealMode, VirtMode};
use super::page::{PageDesc, PageDescriptors, DESC_SIZE};

/// Where the vmemmap starts (Linux radix: `0xc00c_0000_0000_0000`).
pub const VMEMMAP_BASE: u64 = 0xc00c_0000_0000_0000;
/// log2 of a backing block.
pub const BLOCK_SHIFT: u32 = 16;
/// Bytes of one backing block.
pub const BLOCK_SIZE: u64 = 1 << BLOCK_SHIFT;

/// The vmemmap address of frame `pfn`'s descriptor.
pub const fn desc_va(pfn: Pfn) -> u64 {
    VMEMMAP_BASE + pfn.0 * DESC_SIZE
}

/// What the walker found for a vmemmap address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The descriptor lies in one block, at this physical address.
    Found(HostPhys),
    /// It starts in one block and ends in the next: not reachable with the MMU off.
    Straddles,
    /// No block backs it.
    Missing,
    /// Blocks changed during the lookup (hot-plug): try virtual mode.
    Unstable,
}

/// Why a block could not be added or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexError {
    /// Not block-aligned.
    Misaligned,
    /// A block is there already (add) or none is (remove).
    Exists,
    /// No such block.
    NotFound,
    /// The index is full.
    Full,
}

/// The sorted (vmemmap address, physical address) pairs of the backing blocks.
pub struct BlockIndex {
    seq: AtomicU64,
    len: AtomicUsize,
    va: Box<[AtomicU64]>,
    pa: Box<[AtomicU64]>,
    writer: spin::Mutex<()>,
}

impl BlockIndex {
    /// An empty index with room for `capacity` blocks (allocated now, never again).
    pub fn new(capacity: usize) -> Self {
        let mk = || -> Box<[AtomicU64]> { (0..capacity).map(|_| AtomicU64::new(0)).collect() };
        BlockIndex {
            seq: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            va: mk(),
            pa: mk(),
            writer: spin::Mutex::new(()),
        }
    }

    /// Blocks in the index.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the block backing `[va, va + BLOCK_SIZE)` at `pa` (virtual mode: may wait).
    pub fn add(&self, _v: VirtMode, va: u64, pa: HostPhys) -> Result<(), IndexError> {
        if (va | pa.0) & (BLOCK_SIZE - 1) != 0 {
            return Err(IndexError::Misaligned);
        }
        let _w = self.writer.lock();
        let n = self.len.load(Ordering::Relaxed);
        let at = self.position(n, va);
        if at < n && self.va[at].load(Ordering::Relaxed) == va {
            return Err(IndexError::Exists);
        }
        if n == self.va.len() {
            return Err(IndexError::Full);
        }
        self.write_begin();
        for i in (at..n).rev() {
            self.va[i + 1].store(self.va[i].load(Ordering::Relaxed), Ordering::Relaxed);
            self.pa[i + 1].store(self.pa[i].load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.va[at].store(va, Ordering::Relaxed);
        self.pa[at].store(pa.0, Ordering::Relaxed);
        self.len.store(n + 1, Ordering::Relaxed);
        self.write_end();
        Ok(())
    }

    /// Removes the block at `va`; returns its physical address (virtual mode: may wait).
    pub fn remove(&self, _v: VirtMode, va: u64) -> Result<HostPhys, IndexError> {
        let _w = self.writer.lock();
        let n = self.len.load(Ordering::Relaxed);
        let at = self.position(n, va);
        if at >= n || self.va[at].load(Ordering::Relaxed) != va {
            return Err(IndexError::NotFound);
        }
        let pa = HostPhys(self.pa[at].load(Ordering::Relaxed));
        self.write_begin();
        for i in at..n - 1 {
            self.va[i].store(self.va[i + 1].load(Ordering::Relaxed), Ordering::Relaxed);
            self.pa[i].store(self.pa[i + 1].load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.len.store(n - 1, Ordering::Relaxed);
        self.write_end();
        Ok(pa)
    }

    fn write_begin(&self) {
        self.seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    fn write_end(&self) {
        self.seq.fetch_add(1, Ordering::Release);
    }

    /// First index whose block starts above `va`... minus nothing: the insertion point.
    fn position(&self, n: usize, va: u64) -> usize {
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.va[mid].load(Ordering::Relaxed) < va {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The block holding `[va, va + len)`. Never waits, never allocates. First a probe where
    /// the block would be if none below it were missing (so a dense vmemmap costs one probe),
    /// then, if that misses, a binary search: O(log n) at worst.
    #[inline]
    pub fn lookup(&self, va: u64, len: u64) -> Lookup {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            return Lookup::Unstable;
        }
        let n = self.len.load(Ordering::Relaxed).min(self.va.len());
        let key = |i: usize| {
            debug_assert!(i < n);
            // SAFETY: every caller passes i < n <= capacity (the slices' length).
            unsafe { self.va.get_unchecked(i) }.load(Ordering::Relaxed)
        };
        let found = if n == 0 || va < key(0) {
            None
        } else {
            let probe = (((va - key(0)) >> BLOCK_SHIFT) as usize).min(n - 1);
            let at = if key(probe) <= va && va - key(probe) < BLOCK_SIZE {
                probe
            } else {
                // The last block starting at or below `va`: branch-free halving.
                let (mut base, mut size) = (0usize, n);
                while size > 1 {
                    let half = size / 2;
                    let mid = base + half;
                    base = if key(mid) <= va { mid } else { base };
                    size -= half;
                }
                base
            };
            // SAFETY: at < n, as for `key`.
            let pa = unsafe { self.pa.get_unchecked(at) }.load(Ordering::Relaxed);
            Some((key(at), pa))
        };
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != s1 {
            return Lookup::Unstable;
        }
        match found {
            Some((start, pa)) if va - start < BLOCK_SIZE => {
                if va - start + len <= BLOCK_SIZE {
                    Lookup::Found(HostPhys(pa + (va - start)))
                } else {
                    Lookup::Straddles
                }
            }
            _ => Lookup::Missing,
        }
    }

    /// The seed's way: a linear walk over the blocks (for comparison; same answers).
    pub fn lookup_linear(&self, va: u64, len: u64) -> Lookup {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            return Lookup::Unstable;
        }
        let n = self.len.load(Ordering::Relaxed).min(self.va.len());
        let mut found = None;
        for i in 0..n {
            let start = self.va[i].load(Ordering::Relaxed);
            if start <= va && va - start < BLOCK_SIZE {
                found = Some((start, self.pa[i].load(Ordering::Relaxed)));
                break;
            }
        }
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != s1 {
            return Lookup::Unstable;
        }
        match found {
            Some((start, pa)) if va - start + len <= BLOCK_SIZE => {
                Lookup::Found(HostPhys(pa + (va - start)))
            }
            Some(_) => Lookup::Straddles,
            None => Lookup::Missing,
        }
    }

    /// Every block, in vmemmap order (virtual mode; a snapshot under the writer lock).
    pub fn blocks(&self, _v: VirtMode) -> Vec<(u64, HostPhys)> {
        let _w = self.writer.lock();
        let n = self.len.load(Ordering::Relaxed);
        (0..n)
            .map(|i| {
                (
                    self.va[i].load(Ordering::Relaxed),
                    HostPhys(self.pa[i].load(Ordering::Relaxed)),
                )
            })
            .collect()
    }
}

/// How virtual mode reaches a vmemmap address: on the target, the address is a pointer (the
/// hypervisor's page tables map the blocks the index lists); a host test, which has no MMU,
/// supplies a translation of its own.
pub trait VirtualWindow: Sync {
    /// A pointer to the `len` bytes at vmemmap address `va`, if mapped.
    fn ptr(&self, v: VirtMode, index: &BlockIndex, va: u64, len: u64) -> Option<*const u8>;
}

/// The vmemmap blocks that hold the descriptor of some frame in `ram` (physical byte ranges
/// `[start, end)`, in any order, overlapping or not), as block numbers `k` (the block at
/// `VMEMMAP_BASE + k * BLOCK_SIZE`), ascending, each once. A hole in physical memory is blocks
/// that do not exist: a two-socket POWER9 with RAM at 0 and at `0x2000_0000_0000` needs blocks
/// for its RAM only, not for the 32 TiB between.
pub fn blocks_for(ram: &[(u64, u64)]) -> Vec<u64> {
    let mut spans: Vec<(u64, u64)> = ram
        .iter()
        .filter(|(s, e)| e > s)
        .map(|&(s, e)| {
            let first = (s >> 12) * DESC_SIZE / BLOCK_SIZE;
            let last = (e.div_ceil(4096) * DESC_SIZE - 1) / BLOCK_SIZE;
            (first, last)
        })
        .collect();
    spans.sort_unstable();
    let mut out: Vec<u64> = Vec::new();
    for (first, last) in spans {
        let from = out.last().map_or(first, |&l| first.max(l + 1));
        out.extend(from..=last);
    }
    out
}

/// Page descriptors in a vmemmap: real mode through the [`BlockIndex`] walker, virtual mode by
/// vmemmap address. The only way the kernel's paths reach a descriptor.
pub struct Vmemmap<W: VirtualWindow> {
    /// The backing blocks.
    pub index: BlockIndex,
    window: W,
    /// Frames covered: `[0, frames)`.
    frames: u64,
}

impl<W: VirtualWindow> Vmemmap<W> {
    /// A vmemmap for frames `[0, frames)` with room for `capacity` blocks; blocks are added by
    /// the caller, which also maps them (the index and the page tables must agree).
    pub fn new(window: W, frames: u64, capacity: usize) -> Self {
        Vmemmap {
            index: BlockIndex::new(capacity),
            window,
            frames,
        }
    }

    /// Frames covered.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// What the walker finds for `pfn` (for tests and benchmarks).
    pub fn walk(&self, _rm: RealMode, pfn: Pfn) -> Lookup {
        if pfn.0 >= self.frames {
            return Lookup::Missing;
        }
        self.index.lookup(desc_va(pfn), DESC_SIZE)
    }
}

impl<W: VirtualWindow> PageDescriptors for Vmemmap<W> {
    fn rm_page(&self, rm: RealMode, pfn: Pfn) -> Option<&PageDesc> {
        match self.walk(rm, pfn) {
            // SAFETY: the block at that physical address holds initialised descriptors (blocks
            // are filled before they are added and removed only by virtual mode, which frees
            // them after the sequence count moved, so a reader that got `Found` used a block
            // that was live); the linear map reaches it with the MMU off; 24-byte descriptors
            // in 8-aligned blocks are 8-aligned.
            Lookup::Found(pa) => Some(unsafe { &*(pa.linear() as *const PageDesc) }),
            _ => None,
        }
    }

    fn page(&self, v: VirtMode, pfn: Pfn) -> Option<&PageDesc> {
        if pfn.0 >= self.frames {
            return None;
        }
        let p = self.window.ptr(v, &self.index, desc_va(pfn), DESC_SIZE)?;
        // SAFETY: the window maps the vmemmap address of an initialised descriptor (see
        // `rm_page`), 8-aligned.
        Some(unsafe { &*(p as *const PageDesc) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;

    fn tokens() -> (RealMode, VirtMode) {
        // SAFETY: host test: the tokens stand for the rules.
        unsafe { (RealMode::new_unchecked(), VirtMode::new_unchecked()) }
    }

    /// The host has no MMU: its "virtual" window resolves through the index (an independent
    /// path would need a page table; the target test compares the real MMU with the walker).
    struct HostWindow;
    impl VirtualWindow for HostWindow {
        fn ptr(&self, _v: VirtMode, index: &BlockIndex, va: u64, len: u64) -> Option<*const u8> {
            match index.lookup_linear(va, len) {
                Lookup::Found(pa) => Some(pa.linear() as *const u8),
                _ => None,
            }
        }
    }

    #[test]
    fn finds_blocks_and_reports_straddles() {
        let (_, v) = tokens();
        let ix = BlockIndex::new(8);
        for (i, pa) in [(0u64, 0x70_0000u64), (2, 0x10_0000), (1, 0x50_0000)] {
            ix.add(v, VMEMMAP_BASE + i * BLOCK_SIZE, HostPhys(pa))
                .unwrap();
        }
        assert_eq!(ix.len(), 3);
        // pfn 0 in block 0; the descriptor at 0xfff0 spans 0xfff0..0x10008: straddles.
        assert_eq!(
            ix.lookup(desc_va(Pfn(0)), DESC_SIZE),
            Lookup::Found(HostPhys(0x70_0000))
        );
        let straddler = BLOCK_SIZE / DESC_SIZE; // the first pfn whose descriptor crosses
        assert_eq!(
            ix.lookup(desc_va(Pfn(straddler)), DESC_SIZE),
            Lookup::Straddles
        );
        assert_eq!(
            ix.lookup(desc_va(Pfn(straddler + 1)), DESC_SIZE),
            Lookup::Found(HostPhys(
                0x50_0000 + (straddler + 1) * DESC_SIZE - BLOCK_SIZE
            ))
        );
        assert_eq!(ix.lookup(VMEMMAP_BASE + 3 * BLOCK_SIZE, 8), Lookup::Missing);
        assert_eq!(ix.lookup(VMEMMAP_BASE - 8, 8), Lookup::Missing);
        // The linear walk agrees everywhere.
        for off in (0..4 * BLOCK_SIZE).step_by(8) {
            let va = VMEMMAP_BASE + off;
            assert_eq!(
                ix.lookup(va, DESC_SIZE),
                ix.lookup_linear(va, DESC_SIZE),
                "{off:#x}"
            );
        }
        assert_eq!(
            ix.add(v, VMEMMAP_BASE + 0x800, HostPhys(0)),
            Err(IndexError::Misaligned)
        );
        assert_eq!(
            ix.add(v, VMEMMAP_BASE, HostPhys(0)),
            Err(IndexError::Exists)
        );
        assert_eq!(
            ix.remove(v, VMEMMAP_BASE + BLOCK_SIZE),
            Ok(HostPhys(0x50_0000))
        );
        assert_eq!(ix.lookup(VMEMMAP_BASE + BLOCK_SIZE, 8), Lookup::Missing);
        assert_eq!(
            ix.remove(v, VMEMMAP_BASE + BLOCK_SIZE),
            Err(IndexError::NotFound)
        );
    }

    proptest::proptest! {
        /// Indexed (probe, then binary search) and linear lookups agree on any set of blocks,
        /// dense or sparse, for addresses in, between, before and after them.
        #[test]
        fn indexed_and_linear_lookups_agree(
            slots in proptest::collection::btree_set(0u64..200, 0..60),
            probes in proptest::collection::vec((0u64..210 * BLOCK_SIZE, 1u64..32), 1..64),
        ) {
            let (_, v) = tokens();
            let ix = BlockIndex::new(64);
            for (i, s) in slots.iter().enumerate() {
                ix.add(v, VMEMMAP_BASE + s * BLOCK_SIZE, HostPhys((i as u64 + 7) * BLOCK_SIZE)).unwrap();
            }
            for (off, len) in probes {
                let va = VMEMMAP_BASE + off;
                proptest::prop_assert_eq!(ix.lookup(va, len), ix.lookup_linear(va, len), "va {:#x}", va);
            }
            proptest::prop_assert_eq!(ix.lookup(VMEMMAP_BASE - 8, 8), Lookup::Missing);
        }
    }

    #[test]
    fn a_reader_during_a_write_declines() {
        let (_, v) = tokens();
        let ix = BlockIndex::new(4);
        ix.add(v, VMEMMAP_BASE, HostPhys(0x10_0000)).unwrap();
        ix.write_begin();
        assert_eq!(ix.lookup(VMEMMAP_BASE, 8), Lookup::Unstable);
        assert_eq!(ix.lookup_linear(VMEMMAP_BASE, 8), Lookup::Unstable);
        ix.write_end();
        assert_eq!(
            ix.lookup(VMEMMAP_BASE, 8),
            Lookup::Found(HostPhys(0x10_0000))
        );
    }

    #[test]
    fn lookups_stay_right_while_blocks_come_and_go() {
        // Blocks 0..32 stay; a writer adds and removes blocks 32..64 in a loop. Readers must
        // only ever see the right physical address, Missing for a removed block, or Unstable.
        let (_, v) = tokens();
        let ix = Arc::new(BlockIndex::new(64));
        let pa_of = |i: u64| HostPhys(0x1000_0000 + ((i * 37) % 64) * BLOCK_SIZE);
        for i in 0..32 {
            ix.add(v, VMEMMAP_BASE + i * BLOCK_SIZE, pa_of(i)).unwrap();
        }
        let stop = Arc::new(core::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (ix, stop) = (ix.clone(), stop.clone());
            std::thread::spawn(move || {
                let (_, v) = tokens();
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 32..64 {
                        ix.add(v, VMEMMAP_BASE + i * BLOCK_SIZE, pa_of(i)).unwrap();
                    }
                    for i in 32..64 {
                        ix.remove(v, VMEMMAP_BASE + i * BLOCK_SIZE).unwrap();
                    }
                    rounds += 1;
                    std::thread::yield_now();
                }
                rounds
            })
        };
        let (mut found, mut unstable) = (0u64, 0u64);
        for k in 0..200_000u64 {
            let i = k % 64;
            let va = VMEMMAP_BASE + i * BLOCK_SIZE + 8 * (k % 100);
            match ix.lookup(va, 8) {
                Lookup::Found(pa) => {
                    assert_eq!(pa, pa_of(i).add(8 * (k % 100)), "block {i}");
                    found += 1;
                }
                Lookup::Missing => assert!(i >= 32, "block {i} is never removed"),
                Lookup::Unstable => unstable += 1,
                Lookup::Straddles => panic!("an 8-byte read inside a block cannot straddle"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        let rounds = writer.join().unwrap();
        // Every answer above was checked; the run must also have overlapped the writer.
        assert!(
            found > 1000 && rounds > 0,
            "found {found}, unstable {unstable}, rounds {rounds}"
        );
    }

    #[test]
    fn descriptors_through_the_walker_and_the_window_are_the_same() {
        let (rm, v) = tokens();
        let layout =
            core::alloc::Layout::from_size_align(BLOCK_SIZE as usize, BLOCK_SIZE as usize).unwrap();
        // SAFETY: a non-zero layout; the blocks are freed at the end of the test.
        let blocks: Vec<*mut u8> = (0..3)
            .map(|_| unsafe { alloc::alloc::alloc_zeroed(layout) })
            .collect();
        let frames = 3 * BLOCK_SIZE / DESC_SIZE;
        let vm = Vmemmap::new(HostWindow, frames, 4);
        // Scattered: vmemmap block k is backed by heap block order[k].
        for (k, b) in [2usize, 0, 1].into_iter().enumerate() {
            let pa = HostPhys::of_linear(blocks[b]);
            vm.index
                .add(v, VMEMMAP_BASE + k as u64 * BLOCK_SIZE, pa)
                .unwrap();
        }
        let straddles = |pfn: u64| (desc_va(Pfn(pfn)) % BLOCK_SIZE) + DESC_SIZE > BLOCK_SIZE;
        let mut reachable = 0;
        for pfn in 0..frames {
            match vm.rm_page(rm, Pfn(pfn)) {
                Some(d) => {
                    d.set_tag(pfn ^ 0xabcd);
                    reachable += 1;
                }
                None => assert!(straddles(pfn), "pfn {pfn} unreachable"),
            }
        }
        assert_eq!(
            reachable,
            frames - 2,
            "exactly the two straddling descriptors are out"
        );
        for pfn in (0..frames).filter(|&p| !straddles(p)) {
            assert_eq!(
                vm.page(v, Pfn(pfn)).unwrap().tag(),
                pfn ^ 0xabcd,
                "pfn {pfn}"
            );
        }
        assert!(vm.page(v, Pfn(frames)).is_none());
        for b in blocks {
            // SAFETY: allocated above with this layout.
            unsafe { alloc::alloc::dealloc(b, layout) };
        }
    }

    #[test]
    fn blocks_cover_present_ram_only() {
        // One 64 KiB block holds 2730.67 descriptors: frames 0..2731 touch blocks 0 and 1.
        assert_eq!(blocks_for(&[(0, 2730 * 4096)]), [0]);
        assert_eq!(blocks_for(&[(0, 2731 * 4096)]), [0, 1]);
        // Overlapping, unordered and empty ranges.
        assert_eq!(
            blocks_for(&[(2731 * 4096, 2800 * 4096), (0, 4096), (8192, 8192)]),
            [0, 1]
        );
        // A hole: RAM at 0 and at 32 TiB, 1 GiB each.
        let gib = 1u64 << 30;
        let far = 0x2000_0000_0000u64;
        let b = blocks_for(&[(0, gib), (far, far + gib)]);
        let per_gib = (gib / 4096 * DESC_SIZE).div_ceil(BLOCK_SIZE);
        assert_eq!(b.len() as u64, 2 * per_gib);
        assert_eq!(b[per_gib as usize], (far >> 12) * DESC_SIZE / BLOCK_SIZE);
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        // Every present frame's descriptor (both ends) lies in a listed block.
        for pfn in [0, gib / 4096 - 1, far / 4096, (far + gib) / 4096 - 1] {
            let off = desc_va(Pfn(pfn)) - VMEMMAP_BASE;
            assert!(b.binary_search(&(off / BLOCK_SIZE)).is_ok(), "pfn {pfn:#x}");
            assert!(b
                .binary_search(&((off + DESC_SIZE - 1) / BLOCK_SIZE))
                .is_ok());
        }
    }
}
