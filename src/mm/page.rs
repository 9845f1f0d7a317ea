//! Page descriptors and page references, in the style of Linux's `struct page` refcount.
//!
//! Every host page that a hardware TCE can point at is pinned (preregistered) and carries a
//! reference per TCE mapping it. Virtual mode may always take or drop a reference. Real mode may
//! not follow the links a compound (huge) page's descriptor holds and may not free a page, so
//! [`PageDesc::rm_get`] fails on compound pages and on a zero count (get-unless-zero), and
//! [`PageDesc::rm_put`] fails on compound pages and when it would drop the last reference
//! (add-unless): the caller then returns H_TOO_HARD and virtual mode does the work.

use super::addr::Pfn;
pub use super::addr::PAGE_SHIFT;
use super::mode::{RealMode, VirtMode};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Flag: the page is part of a compound (huge) page; real mode declines it.
pub const PG_COMPOUND: u32 = 1 << 0;
/// Flag: a device may have written the page since it was last cleaned.
pub const PG_DIRTY: u32 = 1 << 1;

/// One host page's descriptor: reference count and flags, both atomic.
#[derive(Debug)]
#[repr(C)]
pub struct PageDesc {
    count: AtomicU64,
    flags: AtomicU32,
    /// A word for the page's owner (the hypervisor tags pages it hands out; tests write it
    /// through one mapping and read it through another). It makes a descriptor 24 bytes, which
    /// does not divide a vmemmap block: some descriptors straddle two blocks, as on Linux.
    tag: AtomicU64,
}

/// Bytes of one descriptor (in a vmemmap, descriptor `pfn` is at `base + pfn * DESC_SIZE`).
pub const DESC_SIZE: u64 = core::mem::size_of::<PageDesc>() as u64;
const _: () = assert!(DESC_SIZE == 24);

/// Why real mode could not take or drop a reference: the caller falls back to virtual mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedVirtualMode;

impl PageDesc {
    /// A descriptor with `count` references and `flags`.
    pub const fn new(count: u64, flags: u32) -> Self {
        PageDesc {
            count: AtomicU64::new(count),
            flags: AtomicU32::new(flags),
            tag: AtomicU64::new(0),
        }
    }

    /// Current reference count.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// The owner's tag.
    pub fn tag(&self) -> u64 {
        self.tag.load(Ordering::Acquire)
    }

    /// Sets the owner's tag.
    pub fn set_tag(&self, v: u64) {
        self.tag.store(v, Ordering::Release)
    }

    /// Current flags (`PG_*`).
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    /// Whether the page is part of a compound page.
    pub fn is_compound(&self) -> bool {
        self.flags() & PG_COMPOUND != 0
    }

    /// Whether the page was marked dirty.
    pub fn is_dirty(&self) -> bool {
        self.flags() & PG_DIRTY != 0
    }

    /// Marks the page dirty (a device could have written it). Safe in real mode.
    pub fn set_dirty(&self) {
        self.flags.fetch_or(PG_DIRTY, Ordering::AcqRel);
    }

    /// Sets flags (e.g. [`PG_COMPOUND`] when the page joins a huge page).
    pub fn set_flags(&self, flags: u32) {
        self.flags.fetch_or(flags, Ordering::AcqRel);
    }

    /// Clears flags (e.g. [`PG_COMPOUND`] when a huge page is split).
    pub fn clear_flags(&self, flags: u32) {
        self.flags.fetch_and(!flags, Ordering::AcqRel);
    }

    /// Clears the dirty mark (the owner wrote the page back).
    pub fn clear_dirty(&self) {
        self.flags.fetch_and(!PG_DIRTY, Ordering::AcqRel);
    }

    /// Virtual mode: takes a reference. Always succeeds.
    pub fn get(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// Virtual mode: drops a reference. Always succeeds; returns the new count.
    pub fn put(&self) -> u64 {
        let old = self.count.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(old > 0, "page reference underflow");
        old - 1
    }

    /// Real mode: takes a reference unless the page is compound or its count is zero.
    pub fn rm_get(&self) -> Result<(), NeedVirtualMode> {
        if self.is_compound() {
            return Err(NeedVirtualMode);
        }
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c != 0).then(|| c + 1)
            })
            .map(|_| ())
            .map_err(|_| NeedVirtualMode)
    }

    /// Real mode: drops a reference unless the page is compound or this is the last reference.
    pub fn rm_put(&self) -> Result<(), NeedVirtualMode> {
        if self.is_compound() {
            return Err(NeedVirtualMode);
        }
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c > 1).then(|| c - 1)
            })
            .map(|_| ())
            .map_err(|_| NeedVirtualMode)
    }
}

/// Finds the descriptor of a host page frame.
pub trait PageDescriptors: Sync {
    /// Real mode: the descriptor, if it is reachable without the MMU (a vmemmap walker returns
    /// `None` when the descriptor straddles two backing blocks).
    fn rm_page(&self, rm: RealMode, pfn: Pfn) -> Option<&PageDesc>;
    /// Virtual mode: the descriptor of any page this system knows.
    fn page(&self, v: VirtMode, pfn: Pfn) -> Option<&PageDesc>;
}

/// Descriptors for one contiguous range of page frames, in a flat array (FLATMEM style). The
/// array is allocated once on the kernel heap, in the linear map, so real mode reaches it by the
/// same address (a vmemmap, mapped page by page, would not be reachable that way).
#[derive(Debug)]
pub struct FlatPageDescriptors {
    base_pfn: u64,
    descs: Box<[PageDesc]>,
}

impl FlatPageDescriptors {
    /// Descriptors for `n` frames from `base_pfn`, each with one reference (its owner's).
    pub fn new(base_pfn: u64, n: usize) -> Self {
        let descs: Vec<PageDesc> = (0..n).map(|_| PageDesc::new(1, 0)).collect();
        FlatPageDescriptors {
            base_pfn,
            descs: descs.into_boxed_slice(),
        }
    }

    /// First frame covered.
    pub fn base_pfn(&self) -> u64 {
        self.base_pfn
    }

    /// Number of frames covered.
    pub fn len(&self) -> usize {
        self.descs.len()
    }

    /// Whether no frame is covered.
    pub fn is_empty(&self) -> bool {
        self.descs.is_empty()
    }

    /// Every descriptor, in frame order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &PageDesc)> {
        self.descs
            .iter()
            .enumerate()
            .map(move |(i, d)| (self.base_pfn + i as u64, d))
    }

    fn lookup(&self, pfn: Pfn) -> Option<&PageDesc> {
        let i = pfn.0.checked_sub(self.base_pfn)?;
        self.descs.get(usize::try_from(i).ok()?)
    }
}

/// The array lives in the linear map (the kernel heap), so real mode reaches it by the same
/// address; a vmemmap does not have that luxury.
impl PageDescriptors for FlatPageDescriptors {
    fn rm_page(&self, _: RealMode, pfn: Pfn) -> Option<&PageDesc> {
        self.lookup(pfn)
    }

    fn page(&self, _: VirtMode, pfn: Pfn) -> Option<&PageDesc> {
        self.lookup(pfn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rm_get_refuses_compound_and_zero() {
        let p = PageDesc::new(1, 0);
        assert_eq!(p.rm_get(), Ok(()));
        assert_eq!(p.count(), 2);
        let z = PageDesc::new(0, 0);
        assert_eq!(z.rm_get(), Err(NeedVirtualMode));
        assert_eq!(z.count(), 0);
        let c = PageDesc::new(3, PG_COMPOUND);
        assert_eq!(c.rm_get(), Err(NeedVirtualMode));
        assert_eq!(c.count(), 3);
        c.get();
        assert_eq!(c.count(), 4);
    }

    #[test]
    fn rm_put_refuses_last_reference_and_compound() {
        let p = PageDesc::new(2, 0);
        assert_eq!(p.rm_put(), Ok(()));
        assert_eq!(p.count(), 1);
        assert_eq!(p.rm_put(), Err(NeedVirtualMode));
        assert_eq!(p.count(), 1);
        assert_eq!(p.put(), 0);
        let c = PageDesc::new(5, PG_COMPOUND);
        assert_eq!(c.rm_put(), Err(NeedVirtualMode));
        assert_eq!(c.count(), 5);
    }

    #[test]
    fn dirty_flag_round_trips() {
        let p = PageDesc::new(1, PG_COMPOUND);
        assert!(!p.is_dirty());
        p.set_dirty();
        assert!(p.is_dirty() && p.is_compound());
        p.clear_dirty();
        assert!(!p.is_dirty() && p.is_compound());
    }

    #[test]
    fn flat_lookup_bounds() {
        // SAFETY: host test: the tokens stand for the rules, nothing depends on the MMU.
        let (rm, v) = unsafe { (RealMode::new_unchecked(), VirtMode::new_unchecked()) };
        let f = FlatPageDescriptors::new(100, 4);
        assert!(f.page(v, Pfn(99)).is_none());
        assert!(f.page(v, Pfn(104)).is_none());
        f.page(v, Pfn(103)).unwrap().get();
        assert_eq!(f.rm_page(rm, Pfn(103)).unwrap().count(), 2);
        assert_eq!(
            f.iter().map(|(pfn, _)| pfn).collect::<Vec<_>>(),
            [100, 101, 102, 103]
        );
    }
}
