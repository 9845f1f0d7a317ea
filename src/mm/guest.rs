//! A guest's memory as the TCE hypercalls see it: memslots and preregistered (pinned) regions.
//!
//! - A memslot maps a guest physical range to a host "userspace" address (ua): the address the
//!   VMM's mapping of guest RAM has. Virtual mode can read guest memory through it.
//! - A preregistered region maps a ua range to the host physical addresses of its pinned pages
//!   (an array, one per page of the region's page shift), or, for device memory, to one base
//!   address. Real mode reaches guest memory only through these, by physical address.
//!
//! Configuration changes take `&mut self` (the VMM stops the vCPUs), so the hypercall handlers,
//! which take `&self`, read everything without locks or allocation; the only state they change
//! here is each region's atomic `mapped` count.

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

/// What backs a preregistered region.
#[derive(Debug)]
pub enum Backing {
    /// Pinned RAM: the host physical address of each page of the region's page shift.
    Pages(Box<[HostPhys]>),
    /// Device memory (e.g. a GPU's RAM): contiguous from this host physical address, no page
    /// descriptors and no references.
    Device(HostPhys),
}

/// A preregistered (pinned) ua range.
#[derive(Debug)]
pub struct PreregRegion {
    ua: Ua,
    size: u64,
    page_shift: u32,
    backing: Backing,
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
    /// What backs the region.
    pub fn backing(&self) -> &Backing {
        &self.backing
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
            Backing::Device(base) => Ok(HostPage {
                hpa: base.add(off),
                has_desc: false,
            }),
            Backing::Pages(hpas) => {
                let page = hpas[(off >> self.page_shift) as usize];
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
        self.mapped.fetch_add(1, Ordering::AcqRel);
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
        match &backing {
            Backing::Pages(hpas) => {
                if hpas.len() as u64 != size >> page_shift || hpas.iter().any(|h| h.0 & mask != 0) {
                    return Err(MemError::Invalid);
                }
                let frames = frames_of(hpas, page_shift);
                if frames.clone().any(|pfn| pages.page(v, pfn).is_none()) {
                    return Err(MemError::NoDescriptor);
                }
                frames.for_each(|pfn| pages.page(v, pfn).map_or((), |d| d.get()));
            }
            Backing::Device(hpa) => {
                if hpa.0 & mask != 0 {
                    return Err(MemError::Invalid);
                }
            }
        }
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

    /// Drops one registration of exactly `[ua, ua + size)`. The last one unpins the pages; it is
    /// refused as busy (and the registration kept) while hardware TCEs point into the region.
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
        if let Backing::Pages(hpas) = &r.backing {
            for pfn in frames_of(hpas, r.page_shift) {
                if let Some(d) = pages.page(v, pfn) {
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
        let len = 1u64
            .checked_shl(shift)
            .ok_or(TranslateError::PageTooLarge)?;
        let i = self
            .regions
            .iter()
            .position(|r| r.contains(ua, len))
            .ok_or(TranslateError::NotPreregistered)?;
        Ok((i, self.regions[i].translate(ua, shift)?))
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
