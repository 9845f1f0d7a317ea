//! Guest TCE windows (one per LIOBN), their guest-visible TCE table, and the hardware tables
//! attached to them.

use crate::mm::GuestMemory;
use crate::tce::LockedMemoryBudget;
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Most windows a guest may have.
pub const MAX_WINDOWS: usize = 16;
/// Most hardware tables one window may be attached to.
pub const MAX_TABLES: usize = 4;
/// Guest TCEs per guest-view page (4 KiB of 8-byte entries).
pub const VIEW_PAGE_ENTRIES: usize = 512;

/// Why a hardware table refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwError {
    /// A level is missing and the caller did not allow allocating it (real mode).
    WouldAllocate,
    /// A level could not be allocated.
    NoMem,
    /// The table refused (index out of range, inconsistent table).
    Refused,
}

/// Which step of [`HwTable::prepare_exchange`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutError {
    /// Making the levels exist ([`HwTable::prepare`]).
    Prepare(HwError),
    /// The exchange itself ([`HwTable::exchange`]).
    Exchange(HwError),
}

/// What the hypercalls need from a hardware TCE table (the `tce` module's `TceTable`
/// implements it; see `adapter`). Indices are entry indices within the table.
pub trait HwTable: Send + Sync {
    /// log2 of the table's IOMMU page size.
    fn page_shift(&self) -> u32;
    /// Bus address of entry 0.
    fn bus_offset(&self) -> u64;
    /// Number of entries.
    fn entries(&self) -> u64;
    /// Makes sure the levels holding `[first, first + count)` exist in both views; with
    /// `alloc == false` nothing is allocated and [`HwError::WouldAllocate`] reports a gap.
    fn prepare(&self, first: u64, count: u64, alloc: bool) -> Result<(), HwError>;
    /// The hardware TCE (host order, `hpa | perm`) and owner value (ua) at `index`; 0s where
    /// the level is missing. Never allocates.
    fn read(&self, index: u64) -> (u64, u64);
    /// [`HwTable::read`] of `out.len()` consecutive entries from `first` (an implementation
    /// walks its levels once per leaf, not once per entry).
    fn read_run(&self, first: u64, out: &mut [(u64, u64)]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.read(first + i as u64);
        }
    }
    /// [`HwTable::exchange`] of `news.len()` consecutive entries from `first`, the old pairs
    /// into `olds` (as long as `news`). Stops at the first refusal and returns its position
    /// and error: the entries before it are exchanged, it and those after are unchanged. An
    /// implementation walks its levels once per leaf, not once per entry.
    fn exchange_run(
        &self,
        first: u64,
        news: &[(u64, u64)],
        olds: &mut [(u64, u64)],
    ) -> Result<(), (usize, HwError)> {
        for (i, (&(tce, owner), old)) in news.iter().zip(olds.iter_mut()).enumerate() {
            *old = self
                .exchange(first + i as u64, tce, owner)
                .map_err(|e| (i, e))?;
        }
        Ok(())
    }
    /// Installs `tce` and `owner` at `index` (levels prepared), returning the old pair. On
    /// error the entry is unchanged.
    fn exchange(&self, index: u64, tce: u64, owner: u64) -> Result<(u64, u64), HwError>;
    /// [`HwTable::prepare`] of entry `index` alone, then [`HwTable::exchange`] of it: what
    /// one H_PUT_TCE does to a table. An implementation walks each view once for both. On
    /// error nothing changed, and the error names the step that refused.
    fn prepare_exchange(
        &self,
        index: u64,
        tce: u64,
        owner: u64,
        alloc: bool,
    ) -> Result<(u64, u64), PutError> {
        self.prepare(index, 1, alloc).map_err(PutError::Prepare)?;
        self.exchange(index, tce, owner).map_err(PutError::Exchange)
    }
    /// Whether any entry in `[first, first + count)` is set, in either view (configuration
    /// time only: may take a while).
    fn holds_entries(&self, first: u64, count: u64) -> bool {
        (first..first.saturating_add(count)).any(|i| self.read(i) != (0, 0))
    }
}

/// A TCE kill did not complete (a fenced PHB, a timeout): the device may still use cached
/// entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillFailed;

/// Invalidates the PHB's TCE cache for entries of a table. Implemented by the PHB code; must be
/// callable in real mode (no allocation, no blocking lock). The hypercalls kill before they
/// give back anything the old entries held, and answer H_HARDWARE when a kill fails.
pub trait TceInvalidate: Send + Sync {
    /// Entries `[first, first + count)` of the table attached with `cookie` changed.
    fn invalidate(&self, cookie: u64, first: u64, count: u64) -> Result<(), KillFailed>;
}

/// A hardware table attached to a window, with whom to tell about its changes.
#[derive(Clone)]
pub struct Attached {
    /// The table.
    pub table: Arc<dyn HwTable>,
    /// Its PHB's TCE kill.
    pub kill: Arc<dyn TceInvalidate>,
    /// Passed back to `kill`; names the device address space (PHB and PE) the table
    /// serves: two windows whose tables serve one address space may not overlap in bus
    /// addresses.
    pub cookie: u64,
}

/// The owner's locked-memory budget the guest views are charged to.
#[derive(Clone)]
pub struct ViewBudget(pub Arc<dyn LockedMemoryBudget + Send + Sync>);

impl core::fmt::Debug for ViewBudget {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ViewBudget")
    }
}

impl core::fmt::Debug for Attached {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Attached")
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

type ViewPage = [AtomicU64; VIEW_PAGE_ENTRIES];

/// The guest's view of a window: the TCEs as the guest wrote them, what H_GET_TCE returns.
/// Stored in CPU order: only the handlers read it (no device, no user mapping), and a byte
/// swap costs real mode a dozen instructions per entry each way. Pages are allocated on first
/// non-zero store (virtual mode) and installed by compare-and-swap; a missing page reads as
/// zeroes.
#[derive(Debug)]
pub struct GuestView {
    pages: Box<[AtomicPtr<ViewPage>]>,
}

impl GuestView {
    fn new(entries: u64) -> Self {
        let n = entries.div_ceil(VIEW_PAGE_ENTRIES as u64) as usize;
        let pages: Vec<AtomicPtr<ViewPage>> = (0..n)
            .map(|_| AtomicPtr::new(core::ptr::null_mut()))
            .collect();
        GuestView {
            pages: pages.into_boxed_slice(),
        }
    }

    fn page(&self, index: u64) -> Option<&ViewPage> {
        let p = self.pages[index as usize / VIEW_PAGE_ENTRIES].load(Ordering::Acquire);
        // SAFETY: non-null pointers in `pages` come from `Box::into_raw` in `ensure` and are
        // freed only in `Drop`, which `&self` excludes.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// The guest TCE at `index` (0 where no page exists).
    pub fn get(&self, index: u64) -> u64 {
        self.page(index).map_or(0, |p| {
            p[index as usize % VIEW_PAGE_ENTRIES].load(Ordering::Acquire)
        })
    }

    /// Whether storing at `index` needs no allocation.
    pub fn present(&self, index: u64) -> bool {
        self.page(index).is_some()
    }

    /// Whether every page holding `[first, first + n)` exists (`n == 0`: true): a batch's
    /// stores then need no allocation, whatever they store.
    pub fn present_run(&self, first: u64, n: u64) -> bool {
        if n == 0 {
            return true;
        }
        let (lo, hi) = (
            first as usize / VIEW_PAGE_ENTRIES,
            (first + n - 1) as usize / VIEW_PAGE_ENTRIES,
        );
        self.pages[lo..=hi]
            .iter()
            .all(|p| !p.load(Ordering::Acquire).is_null())
    }

    /// [`GuestView::set`] of `value(i)` at `first + i` for each `i < n`, finding each page once:
    /// false if a non-zero value's page is missing (that value is not stored; the others are).
    pub fn set_run(&self, first: u64, n: u64, value: impl Fn(u64) -> u64) -> bool {
        let mut ok = true;
        let mut i = 0;
        while i < n {
            let index = first + i;
            let in_page = index as usize % VIEW_PAGE_ENTRIES;
            let k = (n - i).min((VIEW_PAGE_ENTRIES - in_page) as u64);
            match self.page(index) {
                Some(p) => {
                    for (j, e) in p[in_page..in_page + k as usize].iter().enumerate() {
                        e.store(value(i + j as u64), Ordering::Release);
                    }
                }
                None => ok &= (i..i + k).all(|j| value(j) == 0),
            }
            i += k;
        }
        ok
    }

    /// Allocates the page holding `index` if missing (virtual mode only).
    pub fn ensure(&self, index: u64) {
        let slot = &self.pages[index as usize / VIEW_PAGE_ENTRIES];
        if !slot.load(Ordering::Acquire).is_null() {
            return;
        }
        let fresh = Box::into_raw(Box::new(core::array::from_fn::<_, VIEW_PAGE_ENTRIES, _>(
            |_| AtomicU64::new(0),
        )));
        if slot
            .compare_exchange(
                core::ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: `fresh` came from `Box::into_raw` just above and was never published.
            drop(unsafe { Box::from_raw(fresh) });
        }
    }

    /// Stores the guest TCE at `index`. A zero needs no page; anything else needs
    /// [`GuestView::present`] (returns false, storing nothing, if the page is missing).
    pub fn set(&self, index: u64, tce: u64) -> bool {
        match self.page(index) {
            Some(p) => {
                p[index as usize % VIEW_PAGE_ENTRIES].store(tce, Ordering::Release);
                true
            }
            None => tce == 0,
        }
    }

    /// Pages allocated so far.
    pub fn allocated_pages(&self) -> usize {
        self.pages
            .iter()
            .filter(|p| !p.load(Ordering::Acquire).is_null())
            .count()
    }
}

impl Drop for GuestView {
    fn drop(&mut self) {
        for slot in self.pages.iter() {
            let p = slot.swap(core::ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                // SAFETY: `p` came from `Box::into_raw` in `ensure`; the swap unpublished it.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

/// Where a window's entries fall in one of its tables: computed when the table is attached, so
/// the hot path asks the table nothing to find its entries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableSpan {
    /// log2 of the table's IOMMU page size.
    pub(crate) shift: u32,
    /// log2 of the table entries under one window entry.
    pub(crate) sub_shift: u32,
    /// Table index of the window's entry 0.
    pub(crate) first: u64,
}

impl TableSpan {
    /// The table index of window entry `idx`'s first sub-entry, and the sub-entries per
    /// window entry.
    #[inline]
    pub(crate) fn at(&self, idx: u64) -> (u64, u64) {
        (self.first + (idx << self.sub_shift), 1u64 << self.sub_shift)
    }
}

/// A guest DMA window, found by its LIOBN.
#[derive(Debug)]
pub struct Window {
    liobn: u64,
    bus_offset: u64,
    page_shift: u32,
    entries: u64,
    pub(crate) view: GuestView,
    pub(crate) tables: heapless::Vec<Attached, MAX_TABLES>,
    /// Each table's [`TableSpan`], in the order of `tables`.
    pub(crate) spans: heapless::Vec<TableSpan, MAX_TABLES>,
    /// Serializes updates of this window's tables; real mode only tries it.
    pub(crate) lock: spin::Mutex<()>,
    /// Hardware entries currently mapped through this window, over all its tables.
    pub(crate) hw_mapped: AtomicU64,
    /// What the guest view was charged, and to whom: refunded when the window goes.
    charged: Option<(ViewBudget, u64)>,
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Some((b, bytes)) = self.charged.take() {
            b.0.refund(bytes);
        }
    }
}

impl Window {
    /// LIOBN.
    pub fn liobn(&self) -> u64 {
        self.liobn
    }
    /// Bus address of the first byte.
    pub fn bus_offset(&self) -> u64 {
        self.bus_offset
    }
    /// log2 of the guest's IOMMU page size.
    pub fn page_shift(&self) -> u32 {
        self.page_shift
    }
    /// Number of guest TCEs.
    pub fn entries(&self) -> u64 {
        self.entries
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.entries << self.page_shift
    }
    /// The guest view.
    pub fn view(&self) -> &GuestView {
        &self.view
    }
    /// Hardware entries mapped through this window, over all its tables.
    pub fn hw_mapped(&self) -> u64 {
        self.hw_mapped.load(Ordering::Acquire)
    }
    /// The attached hardware tables.
    pub fn tables(&self) -> &[Attached] {
        &self.tables
    }
}

/// Why a window configuration change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowError {
    /// LIOBN taken.
    Exists,
    /// No such LIOBN.
    NotFound,
    /// No room for another window or table.
    Full,
    /// Bad geometry: page shift outside 12..=40, zero size, misaligned offset, wrapping range.
    Invalid,
    /// The table's page is larger than the window's, or it does not cover the window.
    Incompatible,
    /// Hardware TCEs are still mapped through the table (clear the window first).
    Busy,
    /// The table serves a device address space (its `cookie`) that a table of another
    /// window serves too, and the two windows' bus ranges overlap: one bus address would
    /// have two translations.
    Overlaps,
    /// The guest view, charged in full when the window is created (as Linux charges a whole
    /// TCE table), does not fit the owner's locked-memory budget.
    OverBudget,
    /// The table is attached already (to this window or another): one window lock must
    /// serialise all of a table's entries.
    AlreadyAttached,
    /// The table holds entries over the window's range: the window did not map them, so it
    /// could not account for them (clearing one would drop a reference nobody took).
    NotEmpty,
}

/// One guest's TCE state: memory, windows, and per-hypercall counters. Configuration takes
/// `&mut self` (vCPUs stopped); the hypercall handlers take `&self` and may run on any CPU.
#[derive(Debug, Default)]
pub struct Guest {
    /// Memslots and preregistered memory.
    pub mem: GuestMemory,
    pub(crate) windows: heapless::Vec<Window, MAX_WINDOWS>,
    /// Counters.
    pub stats: super::HcallStats,
    /// Where guest views are charged (none: not accounted).
    budget: Option<ViewBudget>,
}

impl Guest {
    /// A guest with no memory and no windows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Charges the guest views of windows created from now on to `budget` (each in full, at
    /// creation; refunded when the window is removed).
    pub fn set_view_budget(&mut self, budget: ViewBudget) {
        self.budget = Some(budget);
    }

    /// Bytes a window of `entries` guest TCEs charges for its view: every page it could need.
    pub fn view_bytes(entries: u64) -> u64 {
        entries.div_ceil(VIEW_PAGE_ENTRIES as u64) * (VIEW_PAGE_ENTRIES as u64 * 8)
    }

    /// Creates the window `liobn` covering `[bus_offset, bus_offset + size)` with guest IOMMU
    /// pages of `1 << page_shift` bytes.
    pub fn create_window(
        &mut self,
        liobn: u64,
        bus_offset: u64,
        page_shift: u32,
        size: u64,
    ) -> Result<(), WindowError> {
        if self.window(liobn).is_some() {
            return Err(WindowError::Exists);
        }
        if !(12..=40).contains(&page_shift)
            || size == 0
            || (size | bus_offset) & ((1u64 << page_shift) - 1) != 0
            || bus_offset.checked_add(size).is_none()
            || size >> page_shift > 1 << 40
        {
            return Err(WindowError::Invalid);
        }
        if self.windows.is_full() {
            return Err(WindowError::Full);
        }
        let entries = size >> page_shift;
        let charged = match &self.budget {
            Some(b) => {
                let bytes = Self::view_bytes(entries);
                b.0.charge(bytes).map_err(|_| WindowError::OverBudget)?;
                Some((b.clone(), bytes))
            }
            None => None,
        };
        let w = Window {
            liobn,
            bus_offset,
            page_shift,
            entries,
            view: GuestView::new(entries),
            tables: heapless::Vec::new(),
            spans: heapless::Vec::new(),
            lock: spin::Mutex::new(()),
            hw_mapped: AtomicU64::new(0),
            charged,
        };
        self.windows.push(w).map_err(|_| WindowError::Full)
    }

    /// Removes a window; refused while a hardware entry is mapped through it.
    pub fn remove_window(&mut self, liobn: u64) -> Result<(), WindowError> {
        let i = self
            .windows
            .iter()
            .position(|w| w.liobn == liobn)
            .ok_or(WindowError::NotFound)?;
        if self.windows[i].hw_mapped() != 0 {
            return Err(WindowError::Busy);
        }
        self.windows.swap_remove(i);
        Ok(())
    }

    /// Attaches a hardware table to a window. Its page may be smaller than the window's (one
    /// guest TCE then fills several hardware entries), never larger; it must cover the window,
    /// be attached nowhere else, and hold no entry over the window's range (the window could
    /// not account for it). Entries the guest mapped before are not replayed: attach before the
    /// guest maps.
    pub fn attach_table(&mut self, liobn: u64, att: Attached) -> Result<(), WindowError> {
        let i = self
            .windows
            .iter()
            .position(|w| w.liobn == liobn)
            .ok_or(WindowError::NotFound)?;
        let (w, t) = (&self.windows[i], &att.table);
        let tshift = t.page_shift();
        let tend = t.bus_offset() as u128 + ((t.entries() as u128) << tshift);
        if tshift > w.page_shift
            || w.bus_offset < t.bus_offset()
            || w.bus_offset as u128 + w.size() as u128 > tend
        {
            return Err(WindowError::Incompatible);
        }
        let same = |a: &Attached| core::ptr::addr_eq(Arc::as_ptr(&a.table), Arc::as_ptr(t));
        if self.windows.iter().any(|w| w.tables.iter().any(same)) {
            return Err(WindowError::AlreadyAttached);
        }
        let (lo, hi) = (
            w.bus_offset as u128,
            w.bus_offset as u128 + w.size() as u128,
        );
        let clash = self.windows.iter().enumerate().any(|(j, o)| {
            j != i
                && o.tables.iter().any(|a| a.cookie == att.cookie)
                && (o.bus_offset as u128) < hi
                && lo < o.bus_offset as u128 + o.size() as u128
        });
        if clash {
            return Err(WindowError::Overlaps);
        }
        let span = TableSpan {
            shift: tshift,
            sub_shift: w.page_shift - tshift,
            first: (w.bus_offset - t.bus_offset()) >> tshift,
        };
        if t.holds_entries(span.first, w.size() >> tshift) {
            return Err(WindowError::NotEmpty);
        }
        let w = &mut self.windows[i];
        if w.tables.is_full() {
            return Err(WindowError::Full);
        }
        // Cannot fail: both have room (they grow together).
        let _ = w.tables.push(att);
        let _ = w.spans.push(span);
        Ok(())
    }

    /// Detaches the table attached with `cookie`; refused while the window holds hardware mappings.
    pub fn detach_table(&mut self, liobn: u64, cookie: u64) -> Result<Attached, WindowError> {
        let w = self
            .windows
            .iter_mut()
            .find(|w| w.liobn == liobn)
            .ok_or(WindowError::NotFound)?;
        let i = w
            .tables
            .iter()
            .position(|a| a.cookie == cookie)
            .ok_or(WindowError::NotFound)?;
        if w.hw_mapped() != 0 {
            return Err(WindowError::Busy);
        }
        w.spans.swap_remove(i);
        Ok(w.tables.swap_remove(i))
    }

    /// The window with this LIOBN. Lock-free and allocation-free (real mode).
    pub fn window(&self, liobn: u64) -> Option<&Window> {
        self.windows.iter().find(|w| w.liobn == liobn)
    }

    /// All windows.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_over_view_pages_equal_entry_by_entry() {
        const P: u64 = VIEW_PAGE_ENTRIES as u64;
        let v = GuestView::new(4 * P);
        v.ensure(0);
        v.ensure(2 * P);
        assert!(v.present_run(0, P) && v.present_run(5, 0));
        assert!(!v.present_run(P - 1, 2), "crosses into the missing page 1");
        assert!(v.present_run(2 * P + 3, P - 3));
        // Values across pages 0..=2: page 1 is missing, so its non-zero values are refused
        // and the rest stored, as `set` would do one by one.
        let value = |i: u64| {
            if i.is_multiple_of(3) {
                0
            } else {
                0x1000 * i + 1
            }
        };
        let (first, n) = (P - 4, P + 8);
        assert!(!v.set_run(first, n, value));
        for i in 0..n {
            let want = if (first + i) / P == 1 { 0 } else { value(i) };
            assert_eq!(v.get(first + i), want, "entry {}", first + i);
        }
        // Zeros need no page.
        assert!(v.set_run(P, P, |_| 0));
        assert_eq!(v.allocated_pages(), 2);
    }
}
