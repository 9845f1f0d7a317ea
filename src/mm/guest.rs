//! A guest's memory as the TCE hypercalls see it: memslots and preregistered (pinned) regions.
//!
//! - A memslot maps a guest physical range to a host "userspace" address (ua): the address the
//!   VMM's mapping of guest RAM has. Virtual mode can read guest memory through it.
//! - A preregistered region maps a ua range to the host physical addresses of its pinned pages
//!   (an array, one per page of the region's page shift), or, for device memory, to one base
//!   address. Real mode reaches guest memory only through these, by physical address.
//!
//! The reference model is Linux's (`mm_iommu_*`): registering pins every page once, and that
//! pin is what keeps a page alive while hardware TCEs point at it. A mapping takes no page
//! reference of its own; it counts into its region's `mapped`, and a region with mappings
//! cannot be unregistered. A device may have written a page once a writable mapping of it
//! goes: the region marks that page dirty in the word that holds its address (one cache line
//! for translating and marking), and unregistering hands the mark to the page descriptors as
//! it unpins. So the hot path never touches a page descriptor.
//!
//! Configuration changes take `&mut self` (the VMM stops the vCPUs), so the hypercall handlers,
//! which take `&self`, read everything without locks or allocation; the only state they change
//! here is each region's atomic `mapped` count and its pages' dirty marks.

use super::addr::{GuestPhys, HostPhys, Pfn, Ua, PAGE_SHIFT};
use super::mode::VirtMode;
use super::page::PageDescriptors;
use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};

/// Most memslots a guest may have.
pub const MAX_MEMSLOTS: usize = 32;
/// Most preregistered regions a guest may have.
pub const MAX_REGIONS: usize = 32;

/// Guest physical range -> host userspace address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memslot {
    /// First guest physical address.
    pub gpa: GuestPhys,
    /// Size in bytes.
    pub size: u64,
    /// Where the hypervisor maps `gpa`.
    pub ua: Ua,
}

impl Memslot {
    fn contains(&self, gpa: GuestPhys, len: u64) -> bool {
        gpa >= self.gpa && len <= self.size && gpa.0 - self.gpa.0 <= self.size - len
    }
}

/// What backs a range being preregistered.
#[derive(Debug)]
pub enum Backing {
    /// Pinned RAM: the host physical address of each page of the region's page shift.
    Pages(Box<[HostPhys]>),
    /// Device memory (e.g. a GPU's RAM): contiguous from this host physical address, no page
    /// descriptors and no references.
    Device(HostPhys),
}

/// The dirty mark in a [`PinnedPage`] word (page addresses are at least 4 KiB aligned).
const PINNED_DIRTY: u64 = 1;

/// One pinned page of a region: its host physical address and, in bit 0, whether a device may
/// have written it (a writable mapping of it went) since it was pinned.
#[derive(Debug)]
pub struct PinnedPage(AtomicU64);

impl PinnedPage {
    /// Host physical address of the page.
    pub fn hpa(&self) -> HostPhys {
        HostPhys(self.0.load(Ordering::Relaxed) & !PINNED_DIRTY)
    }

    /// Whether a device may have written the page since it was pinned.
    pub fn is_dirty(&self) -> bool {
        self.0.load(Ordering::Relaxed) & PINNED_DIRTY != 0
    }

    /// Marks the page dirty (a load first: once marked, the line is not written again).
    fn mark_dirty(&self) {
        if self.0.load(Ordering::Relaxed) & PINNED_DIRTY == 0 {
            self.0.fetch_or(PINNED_DIRTY, Ordering::Relaxed);
        }
    }

    /// Takes the dirty mark off, returning whether it was there.
    fn take_dirty(&self) -> bool {
        self.0.fetch_and(!PINNED_DIRTY, Ordering::Relaxed) & PINNED_DIRTY != 0
    }
}

/// What backs a preregistered region.
#[derive(Debug)]
enum Pinned {
    Pages(Box<[PinnedPage]>),
    Device(HostPhys),
}

/// A preregistered (pinned) ua range.
#[derive(Debug)]
pub struct PreregRegion {
    ua: Ua,
    size: u64,
    page_shift: u32,
    backing: Pinned,
    /// Registrations of this exact range (registering it again is counted, not refused).
    used: u64,
    /// Hardware TCEs that point into this region; the region cannot go while any do.
    mapped: AtomicU64,
}

/// A translated ua: where a TCE's page lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPage {
    /// Host physical address of the first byte.
    pub hpa: HostPhys,
    /// Whether the page has descriptors and references (RAM) or not (device memory).
    pub has_desc: bool,
}

/// Why a ua could not be translated to a host physical address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranslateError {
    /// No preregistered region covers the range.
    NotPreregistered,
    /// The range crosses a pinned page boundary: the IOMMU page would be larger than the pinned
    /// page behind it.
    PageTooLarge,
}

impl PreregRegion {
    /// First ua.
    pub fn ua(&self) -> Ua {
        self.ua
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// log2 of the pinned page size.
    pub fn page_shift(&self) -> u32 {
        self.page_shift
    }
    /// Registrations of this range.
    pub fn used(&self) -> u64 {
        self.used
    }
    /// Hardware TCEs pointing into this region.
    pub fn mapped(&self) -> u64 {
        self.mapped.load(Ordering::Acquire)
    }
    /// The pinned pages, in ua order; empty for device memory.
    pub fn pinned_pages(&self) -> &[PinnedPage] {
        match &self.backing {
            Pinned::Pages(p) => p,
            Pinned::Device(_) => &[],
        }
    }

    /// Whether the region is device memory (no pinned pages, no descriptors).
    pub fn is_device(&self) -> bool {
        matches!(self.backing, Pinned::Device(_))
    }

    /// The pinned page holding `ua` (none for device memory or outside the region).
    pub fn pinned_page(&self, ua: Ua) -> Option<&PinnedPage> {
        let off = ua.0.checked_sub(self.ua.0).filter(|&o| o < self.size)?;
        self.pinned_pages().get((off >> self.page_shift) as usize)
    }

    /// Notes that a device may have written the page holding `ua`: a writable mapping of it
    /// went. Real-mode safe (an atomic in the region). Nothing for device memory.
    pub fn mark_dirty(&self, ua: Ua) {
        if let Some(p) = self.pinned_page(ua) {
            p.mark_dirty();
        }
    }

    /// Takes every dirty mark off, as if the owner had written the pages back (the fuzz
    /// harness resets a world with it); returns how many pages were marked.
    pub fn clean_dirty(&self) -> usize {
        self.pinned_pages()
            .iter()
            .filter(|p| p.take_dirty())
            .count()
    }

    fn contains(&self, ua: Ua, len: u64) -> bool {
        ua >= self.ua && len <= self.size && ua.0 - self.ua.0 <= self.size - len
    }

    fn overlaps(&self, ua: Ua, size: u64) -> bool {
        ua.0 < self.ua.0.saturating_add(self.size) && self.ua.0 < ua.0.saturating_add(size)
    }

    /// Translates `[ua, ua + 2^shift)`, which must lie in this region and in one pinned page.
    pub fn translate(&self, ua: Ua, shift: u32) -> Result<HostPage, TranslateError> {
        let len = 1u64
            .checked_shl(shift)
            .ok_or(TranslateError::PageTooLarge)?;
        if !self.contains(ua, len) {
            return Err(TranslateError::NotPreregistered);
        }
        let off = ua.0 - self.ua.0;
        if shift > self.page_shift
            || (off >> self.page_shift) != ((off + len - 1) >> self.page_shift)
        {
            return Err(TranslateError::PageTooLarge);
        }
        match &self.backing {
            Pinned::Device(base) => Ok(HostPage {
                hpa: base.add(off),
                has_desc: false,
            }),
            Pinned::Pages(pages) => {
                let page = pages[(off >> self.page_shift) as usize].hpa();
                let in_page = off & ((1u64 << self.page_shift) - 1);
                Ok(HostPage {
                    hpa: page.add(in_page),
                    has_desc: true,
                })
            }
        }
    }

    /// Counts one more hardware TCE into this region.
    pub fn mapped_inc(&self) {
        self.mapped_add(1);
    }

    /// Counts `n` more hardware TCEs into this region.
    pub fn mapped_add(&self, n: u64) {
        self.mapped.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts one hardware TCE fewer.
    pub fn mapped_dec(&self) {
        let old = self.mapped.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(old > 0, "region mapped count underflow");
    }
}

/// Why a memory configuration change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// The range overlaps an existing one (and is not the same range).
    Overlap,
    /// No more slots.
    Full,
    /// Size zero, not page-aligned, a page array of the wrong length, or a wrapping range.
    Invalid,
    /// A pinned page has no descriptor.
    NoDescriptor,
    /// No such range.
    NotFound,
    /// The region still has hardware TCEs pointing into it.
    Busy,
}

/// The outcome of a successful [`GuestMemory::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new region; its pages are pinned.
    New,
    /// The same range was registered already; its `used` count went up.
    Again,
}

/// A guest's memslots and preregistered regions.
#[derive(Debug, Default)]
pub struct GuestMemory {
    memslots: heapless::Vec<Memslot, MAX_MEMSLOTS>,
    regions: heapless::Vec<PreregRegion, MAX_REGIONS>,
}

impl GuestMemory {
    /// No memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a memslot; refused if its guest range overlaps another's.
    pub fn add_memslot(&mut self, slot: Memslot) -> Result<(), MemError> {
        if slot.size == 0
            || slot.gpa.checked_add(slot.size).is_none()
            || slot.ua.checked_add(slot.size).is_none()
        {
            return Err(MemError::Invalid);
        }
        let end = slot.gpa.0 + slot.size;
        if self
            .memslots
            .iter()
            .any(|m| slot.gpa.0 < m.gpa.0 + m.size && m.gpa.0 < end)
        {
            return Err(MemError::Overlap);
        }
        self.memslots.push(slot).map_err(|_| MemError::Full)
    }

    /// Removes the memslot starting at `gpa`.
    pub fn remove_memslot(&mut self, gpa: GuestPhys) -> Result<Memslot, MemError> {
        let i = self
            .memslots
            .iter()
            .position(|m| m.gpa == gpa)
            .ok_or(MemError::NotFound)?;
        Ok(self.memslots.swap_remove(i))
    }

    /// The memslots.
    pub fn memslots(&self) -> &[Memslot] {
        &self.memslots
    }

    /// The ua of `[gpa, gpa + len)` if one memslot backs all of it.
    pub fn gpa_to_ua(&self, gpa: GuestPhys, len: u64) -> Option<Ua> {
        let m = self.memslots.iter().find(|m| m.contains(gpa, len))?;
        Some(m.ua.add(gpa.0 - m.gpa.0))
    }

    /// [`Self::gpa_to_ua`], trying memslot `*hint` first and leaving in it the memslot that
    /// answered: a batch of TCEs mostly stays in one memslot. Memslots do not overlap, so
    /// the answer is the same whatever the hint.
    #[inline]
    pub fn gpa_to_ua_hinted(&self, gpa: GuestPhys, len: u64, hint: &mut usize) -> Option<Ua> {
        let m = match self.memslots.get(*hint).filter(|m| m.contains(gpa, len)) {
            Some(m) => m,
            None => {
                *hint = self.memslots.iter().position(|m| m.contains(gpa, len))?;
                &self.memslots[*hint]
            }
        };
        Some(m.ua.add(gpa.0 - m.gpa.0))
    }

    /// Preregisters `[ua, ua + size)` with pages of `1 << page_shift` bytes, pinning each page of
    /// a RAM backing (one reference on the descriptor of its first 4 KiB frame... of every frame
    /// it holds). The same range again only counts up `used`; any other overlap is refused.
    pub fn register(
        &mut self,
        v: VirtMode,
        ua: Ua,
        size: u64,
        page_shift: u32,
        backing: Backing,
        pages: &dyn PageDescriptors,
    ) -> Result<Registered, MemError> {
        if let Some(r) = self
            .regions
            .iter_mut()
            .find(|r| r.ua == ua && r.size == size)
        {
            r.used += 1;
            return Ok(Registered::Again);
        }
        if !(PAGE_SHIFT..64).contains(&page_shift) || size == 0 || ua.checked_add(size).is_none() {
            return Err(MemError::Invalid);
        }
        let mask = (1u64 << page_shift) - 1;
        if ua.0 & mask != 0 || size & mask != 0 {
            return Err(MemError::Invalid);
        }
        if self.regions.iter().any(|r| r.overlaps(ua, size)) {
            return Err(MemError::Overlap);
        }
        if self.regions.is_full() {
            return Err(MemError::Full);
        }
        let backing = match backing {
            Backing::Pages(hpas) => {
                if hpas.len() as u64 != size >> page_shift || hpas.iter().any(|h| h.0 & mask != 0) {
                    return Err(MemError::Invalid);
                }
                let frames = frames_of(&hpas, page_shift);
                if frames.clone().any(|pfn| pages.page(v, pfn).is_none()) {
                    return Err(MemError::NoDescriptor);
                }
                frames.for_each(|pfn| pages.page(v, pfn).map_or((), |d| d.get()));
                Pinned::Pages(
                    hpas.iter()
                        .map(|h| PinnedPage(AtomicU64::new(h.0)))
                        .collect(),
                )
            }
            Backing::Device(hpa) => {
                if hpa.0 & mask != 0 {
                    return Err(MemError::Invalid);
                }
                Pinned::Device(hpa)
            }
        };
        let region = PreregRegion {
            ua,
            size,
            page_shift,
            backing,
            used: 1,
            mapped: AtomicU64::new(0),
        };
        // Cannot fail: fullness was checked above.
        let _ = self.regions.push(region);
        Ok(Registered::New)
    }

    /// Drops one registration of exactly `[ua, ua + size)`. The last one unpins the pages,
    /// first marking dirty the descriptors of every page the region marked; it is refused as
    /// busy (and the registration kept) while hardware TCEs point into the region.
    pub fn unregister(
        &mut self,
        v: VirtMode,
        ua: Ua,
        size: u64,
        pages: &dyn PageDescriptors,
    ) -> Result<(), MemError> {
        let i = self
            .regions
            .iter()
            .position(|r| r.ua == ua && r.size == size)
            .ok_or(MemError::NotFound)?;
        let r = &mut self.regions[i];
        if r.used > 1 {
            r.used -= 1;
            return Ok(());
        }
        if r.mapped() != 0 {
            return Err(MemError::Busy);
        }
        let r = self.regions.swap_remove(i);
        let per = 1u64 << (r.page_shift - PAGE_SHIFT);
        for p in r.pinned_pages() {
            let dirty = p.is_dirty();
            for k in 0..per {
                if let Some(d) = pages.page(v, Pfn(p.hpa().pfn().0 + k)) {
                    if dirty {
                        d.set_dirty();
                    }
                    d.put();
                }
            }
        }
        Ok(())
    }

    /// The preregistered regions.
    pub fn regions(&self) -> &[PreregRegion] {
        &self.regions
    }

    /// Whether any region is preregistered.
    pub fn has_prereg(&self) -> bool {
        !self.regions.is_empty()
    }

    /// The region holding all of `[ua, ua + len)`. Lock-free and allocation-free (real mode).
    pub fn region_for(&self, ua: Ua, len: u64) -> Option<&PreregRegion> {
        self.regions.iter().find(|r| r.contains(ua, len))
    }

    /// [`Self::ua_to_hpa`], naming the region by its position in [`Self::regions`].
    pub fn ua_to_hpa_indexed(
        &self,
        ua: Ua,
        shift: u32,
    ) -> Result<(usize, HostPage), TranslateError> {
        let mut hint = usize::MAX;
        self.ua_to_hpa_hinted(ua, shift, &mut hint)
    }

    /// [`Self::ua_to_hpa_indexed`], trying region `*hint` first and leaving in it the region
    /// that answered. Regions do not overlap, so the answer is the same whatever the hint.
    #[inline]
    pub fn ua_to_hpa_hinted(
        &self,
        ua: Ua,
        shift: u32,
        hint: &mut usize,
    ) -> Result<(usize, HostPage), TranslateError> {
        if let Some(r) = self.regions.get(*hint) {
            match r.translate(ua, shift) {
                Err(TranslateError::NotPreregistered) => {}
                // Found (or found too large a page) in the one region that holds `ua`.
                done => return done.map(|p| (*hint, p)),
            }
        }
        let len = 1u64
            .checked_shl(shift)
            .ok_or(TranslateError::PageTooLarge)?;
        *hint = self
            .regions
            .iter()
            .position(|r| r.contains(ua, len))
            .ok_or(TranslateError::NotPreregistered)?;
        Ok((*hint, self.regions[*hint].translate(ua, shift)?))
    }

    /// [`Self::region_for`], trying region `*hint` first and leaving in it the region found.
    #[inline]
    pub fn region_for_hinted(&self, ua: Ua, len: u64, hint: &mut usize) -> Option<&PreregRegion> {
        if !self.regions.get(*hint).is_some_and(|r| r.contains(ua, len)) {
            *hint = self.regions.iter().position(|r| r.contains(ua, len))?;
        }
        Some(&self.regions[*hint])
    }

    /// Translates `[ua, ua + 2^shift)` through preregistered memory.
    pub fn ua_to_hpa(
        &self,
        ua: Ua,
        shift: u32,
    ) -> Result<(&PreregRegion, HostPage), TranslateError> {
        let (i, page) = self.ua_to_hpa_indexed(ua, shift)?;
        Ok((&self.regions[i], page))
    }
}

/// Every 4 KiB frame of every pinned page.
fn frames_of(hpas: &[HostPhys], page_shift: u32) -> impl Iterator<Item = Pfn> + Clone + '_ {
    let per = 1u64 << (page_shift - PAGE_SHIFT);
    hpas.iter()
        .flat_map(move |h| (0..per).map(move |i| Pfn(h.pfn().0 + i)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::page::FlatPageDescriptors;
    use alloc::vec::Vec;

    // SAFETY: host tests: every pointer is mapped, as in virtual mode.
    const V: VirtMode = unsafe { VirtMode::new_unchecked() };

    fn hpas(list: &[u64]) -> Box<[HostPhys]> {
        list.iter().map(|&h| HostPhys(h)).collect::<Vec<_>>().into()
    }

    fn descs() -> FlatPageDescriptors {
        FlatPageDescriptors::new(0x100, 64)
    }

    #[test]
    fn memslot_translation_and_overlap() {
        let mut m = GuestMemory::new();
        m.add_memslot(Memslot {
            gpa: GuestPhys(0),
            size: 0x10000,
            ua: Ua(0x7000_0000),
        })
        .unwrap();
        assert_eq!(
            m.add_memslot(Memslot {
                gpa: GuestPhys(0xf000),
                size: 0x2000,
                ua: Ua(0)
            }),
            Err(MemError::Overlap)
        );
        let gpa = GuestPhys;
        assert_eq!(m.gpa_to_ua(gpa(0x1000), 0x1000), Some(Ua(0x7000_1000)));
        assert_eq!(m.gpa_to_ua(gpa(0xf000), 0x1000), Some(Ua(0x7000_f000)));
        assert_eq!(m.gpa_to_ua(gpa(0xf000), 0x2000), None);
        assert_eq!(m.gpa_to_ua(gpa(u64::MAX - 0xfff), 0x1000), None);
        m.remove_memslot(gpa(0)).unwrap();
        assert_eq!(m.gpa_to_ua(gpa(0x1000), 0x1000), None);
    }

    #[test]
    fn register_pins_and_unregister_unpins() {
        let d = descs();
        let mut m = GuestMemory::new();
        let pages = hpas(&[0x100_000, 0x102_000]);
        let r = m
            .register(V, Ua(0x5000_0000), 0x4000, 13, Backing::Pages(pages), &d)
            .unwrap();
        assert_eq!(r, Registered::New);
        for pfn in 0x100..0x104 {
            assert_eq!(
                d.page(V, Pfn(pfn)).unwrap().count(),
                2,
                "pfn {pfn:#x} pinned"
            );
        }
        assert_eq!(d.page(V, Pfn(0x104)).unwrap().count(), 1);
        // Same range: counted; overlapping range: refused.
        assert_eq!(
            m.register(
                V,
                Ua(0x5000_0000),
                0x4000,
                13,
                Backing::Device(HostPhys(0)),
                &d
            ),
            Ok(Registered::Again)
        );
        assert_eq!(m.regions()[0].used(), 2);
        assert_eq!(
            m.register(
                V,
                Ua(0x5000_2000),
                0x4000,
                13,
                Backing::Device(HostPhys(0)),
                &d
            ),
            Err(MemError::Overlap)
        );
        m.unregister(V, Ua(0x5000_0000), 0x4000, &d).unwrap();
        assert_eq!(
            d.page(V, Pfn(0x100)).unwrap().count(),
            2,
            "still registered once"
        );
        m.regions()[0].mapped_inc();
        assert_eq!(
            m.unregister(V, Ua(0x5000_0000), 0x4000, &d),
            Err(MemError::Busy)
        );
        assert_eq!(m.regions().len(), 1);
        m.regions()[0].mapped_dec();
        m.unregister(V, Ua(0x5000_0000), 0x4000, &d).unwrap();
        assert!(m.regions().is_empty());
        assert!(d.iter().all(|(_, p)| p.count() == 1));
        assert_eq!(
            m.unregister(V, Ua(0x5000_0000), 0x4000, &d),
            Err(MemError::NotFound)
        );
    }

    #[test]
    fn dirty_marks_stay_in_the_region_until_unregister_hands_them_over() {
        let d = descs();
        let mut m = GuestMemory::new();
        let pages = hpas(&[0x108_000, 0x100_000]);
        m.register(V, Ua(0x20_0000), 0x4000, 13, Backing::Pages(pages), &d)
            .unwrap();
        let r = &m.regions()[0];
        r.mark_dirty(Ua(0x20_3fff));
        r.mark_dirty(Ua(0x20_4000)); // outside: nothing
        let marks: Vec<bool> = r.pinned_pages().iter().map(PinnedPage::is_dirty).collect();
        assert_eq!(marks, [false, true]);
        assert_eq!(
            r.pinned_pages()[1].hpa(),
            HostPhys(0x100_000),
            "the mark is not the address"
        );
        assert_eq!(
            m.ua_to_hpa(Ua(0x20_2000), 12).unwrap().1.hpa,
            HostPhys(0x100_000),
            "translation ignores the mark"
        );
        assert!(
            d.iter().all(|(_, p)| !p.is_dirty()),
            "no descriptor touched yet"
        );
        m.unregister(V, Ua(0x20_0000), 0x4000, &d).unwrap();
        let dirty: Vec<u64> = d
            .iter()
            .filter(|(_, p)| p.is_dirty())
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            dirty,
            [0x100, 0x101],
            "every frame of the marked pinned page"
        );
        assert!(d.iter().all(|(_, p)| p.count() == 1));
    }

    #[test]
    fn clean_dirty_takes_the_marks_off() {
        let d = descs();
        let mut m = GuestMemory::new();
        m.register(
            V,
            Ua(0x1000),
            0x2000,
            12,
            Backing::Pages(hpas(&[0x100_000, 0x101_000])),
            &d,
        )
        .unwrap();
        let r = &m.regions()[0];
        r.mark_dirty(Ua(0x1000));
        r.mark_dirty(Ua(0x2000));
        assert_eq!(r.clean_dirty(), 2);
        assert_eq!(r.clean_dirty(), 0);
        m.unregister(V, Ua(0x1000), 0x2000, &d).unwrap();
        assert!(d.iter().all(|(_, p)| !p.is_dirty()));
    }

    #[test]
    fn hinted_lookups_answer_as_the_scans_whatever_the_hint() {
        let d = descs();
        let mut m = GuestMemory::new();
        for (gpa, ua) in [(0u64, 0x7000_0000u64), (0x10_0000, 0x9000_0000)] {
            m.add_memslot(Memslot {
                gpa: GuestPhys(gpa),
                size: 0x10_0000,
                ua: Ua(ua),
            })
            .unwrap();
        }
        m.register(
            V,
            Ua(0x20_0000),
            0x4000,
            13,
            Backing::Pages(hpas(&[0x108_000, 0x100_000])),
            &d,
        )
        .unwrap();
        let dev = Backing::Device(HostPhys(0xdead_0000));
        m.register(V, Ua(0x40_0000), 0x10000, 16, dev, &d).unwrap();
        for hint0 in [usize::MAX, 0, 1, 7] {
            for gpa in [0u64, 0xf_f000, 0x10_0000, 0x1f_f000, 0x20_0000] {
                let mut h = hint0;
                let got = m.gpa_to_ua_hinted(GuestPhys(gpa), 0x1000, &mut h);
                assert_eq!(
                    got,
                    m.gpa_to_ua(GuestPhys(gpa), 0x1000),
                    "gpa {gpa:#x} hint {hint0}"
                );
                if let Some(ua) = got {
                    assert_eq!(
                        m.memslots()[h].ua.0,
                        ua.0 - (gpa & 0xf_ffff),
                        "hint left on the answer"
                    );
                }
            }
            for ua in [0x20_0000u64, 0x20_3000, 0x40_8000, 0x30_0000] {
                let mut h = hint0;
                let got = m.ua_to_hpa_hinted(Ua(ua), 12, &mut h);
                assert_eq!(
                    got,
                    m.ua_to_hpa_indexed(Ua(ua), 12),
                    "ua {ua:#x} hint {hint0}"
                );
                let mut h = hint0;
                let r = m.region_for_hinted(Ua(ua), 0x1000, &mut h).map(|r| r.ua());
                assert_eq!(r, m.region_for(Ua(ua), 0x1000).map(|r| r.ua()));
            }
        }
    }

    #[test]
    fn register_validates() {
        let d = descs();
        let mut m = GuestMemory::new();
        let two = hpas(&[0x100_000, 0x101_000]);
        assert_eq!(
            m.register(V, Ua(0x1000), 0x1000, 12, Backing::Pages(two), &d),
            Err(MemError::Invalid),
            "page array longer than the region"
        );
        let far = hpas(&[0x900_000]);
        assert_eq!(
            m.register(V, Ua(0x1000), 0x1000, 12, Backing::Pages(far), &d),
            Err(MemError::NoDescriptor)
        );
        assert_eq!(
            m.register(V, Ua(0x1800), 0x1000, 12, Backing::Device(HostPhys(0)), &d),
            Err(MemError::Invalid)
        );
        assert_eq!(
            m.register(V, Ua(0x1000), 0, 12, Backing::Device(HostPhys(0)), &d),
            Err(MemError::Invalid)
        );
        assert!(
            d.iter().all(|(_, p)| p.count() == 1),
            "refusals pin nothing"
        );
    }

    #[test]
    fn translate_pages_and_device() {
        let d = descs();
        let mut m = GuestMemory::new();
        let pages = hpas(&[0x108_000, 0x100_000]);
        m.register(V, Ua(0x20_0000), 0x4000, 13, Backing::Pages(pages), &d)
            .unwrap();
        let dev = Backing::Device(HostPhys(0xdead_0000));
        m.register(V, Ua(0x40_0000), 0x10000, 16, dev, &d).unwrap();
        let (_, p) = m.ua_to_hpa(Ua(0x20_3000), 12).unwrap();
        assert_eq!(
            p,
            HostPage {
                hpa: HostPhys(0x101_000),
                has_desc: true
            }
        );
        assert_eq!(
            m.ua_to_hpa(Ua(0x20_0000), 13).unwrap().1.hpa,
            HostPhys(0x108_000)
        );
        assert_eq!(
            m.ua_to_hpa(Ua(0x20_0000), 14).map(|(_, p)| p),
            Err(TranslateError::PageTooLarge)
        );
        assert_eq!(
            m.ua_to_hpa(Ua(0x20_4000), 12).map(|(_, p)| p),
            Err(TranslateError::NotPreregistered)
        );
        let (_, p) = m.ua_to_hpa(Ua(0x40_8000), 12).unwrap();
        assert_eq!(
            p,
            HostPage {
                hpa: HostPhys(0xdead_8000),
                has_desc: false
            }
        );
    }
}
