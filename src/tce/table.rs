//! A TCE table: hardware and owner views over one geometry, levels installed on demand.

use core::ops::Range;

use super::budget::LockedMemoryBudget;
use super::entry::{Be64, Tce, TcePerm, TCE_INDIRECT};
use super::geometry::TceGeometry;
use super::memory::TceMemory;

/// Whether an operation may allocate a missing level.
///
/// Real-mode handlers must not allocate: they pass `No`, get [`TceError::WouldAllocate`] and
/// retry in virtual mode with `Yes`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MayAlloc {
    /// Allocate, zero and install missing levels.
    Yes,
    /// Report [`TceError::WouldAllocate`] instead, changing nothing.
    No,
}

/// Why a table operation did nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TceError {
    /// A level on the path is missing and the caller gave [`MayAlloc::No`]. Nothing changed.
    WouldAllocate,
    /// A level could not be allocated. No entry changed (see [`TceTable::prepare`]).
    AllocFailed,
    /// The index range is empty-but-reversed or reaches past the window.
    OutOfWindow,
    /// The host physical address is not aligned to the IOMMU page size.
    Misaligned,
    /// The addresses of the range would wrap around 2^64.
    AddressOverflow,
    /// Creating the table would exceed the owner's locked-memory budget.
    OverBudget,
}

/// Bytes of levels currently allocated, per view.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ViewBytes {
    /// The hardware view (what the PHB walks).
    pub hardware: u64,
    /// The owner view.
    pub owner: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum View {
    Hardware = 0,
    Owner = 1,
}

const BOTH_VIEWS: [View; 2] = [View::Hardware, View::Owner];

/// Bits of an indirect entry that are not the next level's address.
const LEVEL_FLAGS_MASK: u64 = 0xfff;

/// Address of the next level held by the (non-zero, host-order) indirect entry `e`.
#[inline]
const fn next_level(e: u64) -> u64 {
    e & !LEVEL_FLAGS_MASK
}

/// The stored image of an owner-view leaf entry (an owner address): CPU order. Only software
/// reads the owner view (the PHB walks the hardware view alone), so real mode pays no byte
/// swap for it; its indirect entries stay big-endian like the hardware view's, so one walk
/// serves both views.
#[inline]
const fn owner_image(v: u64) -> Be64 {
    Be64::from_raw(v)
}

/// The owner address an owner-view leaf image holds (see [`owner_image`]).
#[inline]
const fn owner_value(e: Be64) -> u64 {
    e.raw()
}

/// First index past `i` that is a multiple of `1 << shift`.
#[inline]
const fn next_boundary(i: u64, shift: u32) -> u64 {
    ((i >> shift) + 1) << shift
}

/// A TCE table for one DMA window of one owner.
///
/// Operations take `&self`: entries are atomics and levels are installed lock-free, so one
/// table is shared between CPUs, and between real-mode and virtual-mode handlers. Levels are
/// never removed while the table lives (clearing entries keeps their levels), which is what
/// makes walking without a lock safe.
///
/// Invariant behind every `unsafe` memory access here: an address handed to the memory is
/// either a top level of this table or was read from an indirect entry of a live level of this
/// table, plus `slot * 8` with `slot < entries_per_level`. Levels are freed only when the table
/// is dropped.
pub struct TceTable<M: TceMemory, B: LockedMemoryBudget> {
    geo: TceGeometry,
    /// Per depth, the shift that brings an index's slot at that depth to the bottom
    /// (`geo.span_shift(depth + 1)`), computed once: the walks are the hot path.
    slot_shift: [u32; 8],
    /// `entries_per_level - 1`.
    slot_mask: u64,
    /// `levels - 1`.
    leaf_depth: u32,
    /// Whether a non-empty entry was ever stored, in either view: until then the table holds
    /// nothing, whatever its levels (a cheap answer for `holds_entries`).
    written: core::sync::atomic::AtomicBool,
    node: u32,
    level_bytes: usize,
    /// Top level of each view, indexed by `View`.
    tops: [u64; 2],
    charged: u64,
    mem: M,
    budget: B,
}

/// Zeroed levels allocated ahead of installing them, so that an allocation failure is
/// reported before any entry changes. An intrusive list: word 0 of each level holds the next.
struct Pool {
    head: u64,
}

impl<M: TceMemory, B: LockedMemoryBudget> TceTable<M, B> {
    /// Creates a table with only the top level of each view allocated, after charging the
    /// full size of both views (as if every level were allocated) to `budget`.
    pub fn new(geometry: TceGeometry, node: u32, mem: M, budget: B) -> Result<Self, TceError> {
        let level_bytes =
            usize::try_from(geometry.level_size()).map_err(|_| TceError::AllocFailed)?;
        let charged = geometry
            .full_view_bytes()
            .checked_mul(2)
            .ok_or(TceError::OverBudget)?;
        budget.charge(charged).map_err(|_| TceError::OverBudget)?;
        let hw = match mem.alloc_level(level_bytes, node) {
            Ok(p) => p,
            Err(_) => {
                budget.refund(charged);
                return Err(TceError::AllocFailed);
            }
        };
        let owner = match mem.alloc_level(level_bytes, node) {
            Ok(p) => p,
            Err(_) => {
                // SAFETY: `hw` was just allocated with this size and never published.
                unsafe { mem.free_level(hw, level_bytes) };
                budget.refund(charged);
                return Err(TceError::AllocFailed);
            }
        };
        let mut slot_shift = [0u32; 8];
        for (d, sh) in slot_shift
            .iter_mut()
            .enumerate()
            .take(geometry.levels() as usize)
        {
            // Under the 55-bit rule every shift is below 64; clamp anyway, so that a shift
            // never overflows (an index then lies in slot 0 of that level, as it must).
            *sh = geometry.span_shift(d as u32 + 1).min(63);
        }
        Ok(TceTable {
            slot_shift,
            slot_mask: geometry.entries_per_level() - 1,
            leaf_depth: geometry.levels() - 1,
            written: core::sync::atomic::AtomicBool::new(false),
            geo: geometry,
            node,
            level_bytes,
            tops: [hw, owner],
            charged,
            mem,
            budget,
        })
    }

    /// The table's geometry.
    pub fn geometry(&self) -> &TceGeometry {
        &self.geo
    }
    /// Bus address of entry 0.
    pub fn bus_offset(&self) -> u64 {
        self.geo.bus_offset()
    }
    /// log2 of the IOMMU page size.
    pub fn page_shift(&self) -> u32 {
        self.geo.page_shift()
    }
    /// Window size in bytes.
    pub fn window_size(&self) -> u64 {
        self.geo.window_size()
    }
    /// Number of TCEs in the window.
    pub fn entries(&self) -> u64 {
        self.geo.entries()
    }
    /// Number of levels.
    pub fn levels(&self) -> u32 {
        self.geo.levels()
    }
    /// Bytes of one level, as the TVE encodes it.
    pub fn level_size(&self) -> u64 {
        self.geo.level_size()
    }
    /// Physical address of the hardware view's top level: what the TVE points at.
    pub fn top_level_phys(&self) -> u64 {
        self.tops[View::Hardware as usize]
    }
    /// Physical address of the owner view's top level.
    pub fn owner_top_level_phys(&self) -> u64 {
        self.tops[View::Owner as usize]
    }
    /// NUMA node the levels are allocated on.
    pub fn node(&self) -> u32 {
        self.node
    }
    /// Bytes charged to the owner's budget (both views, fully allocated); refunded on free.
    pub fn charged_bytes(&self) -> u64 {
        self.charged
    }
    /// The memory the levels come from.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Ensures (with [`MayAlloc::Yes`]) or checks (with [`MayAlloc::No`]) that every level on
    /// the paths of `range` exists in BOTH views, so that afterwards [`Self::exchange`],
    /// [`Self::owner_exchange`], [`Self::set`] and [`Self::owner_set`] on that range cannot
    /// fail for a missing level, whatever permission they are given.
    ///
    /// Errors: [`TceError::WouldAllocate`] (with `No`) or [`TceError::AllocFailed`]; in both
    /// cases nothing changed: the levels needed are all allocated before any is installed.
    pub fn prepare(&self, range: Range<u64>, alloc: MayAlloc) -> Result<(), TceError> {
        let (lo, hi) = self.check_range(&range)?;
        self.ensure(&BOTH_VIEWS, lo, hi, alloc)
    }

    /// Maps entries `range` of the hardware view to consecutive IOMMU pages from `hpa` with
    /// `perm`. An empty `perm` clears the range instead (never allocating).
    ///
    /// Errors leave every entry unchanged: [`TceError::OutOfWindow`], [`TceError::Misaligned`]
    /// (hpa not page aligned), [`TceError::AddressOverflow`], [`TceError::WouldAllocate`],
    /// [`TceError::AllocFailed`].
    pub fn set(
        &self,
        range: Range<u64>,
        hpa: u64,
        perm: TcePerm,
        alloc: MayAlloc,
    ) -> Result<(), TceError> {
        let (lo, hi) = self.check_range(&range)?;
        if perm.is_empty() {
            self.clear_view(View::Hardware, lo, hi);
            return Ok(());
        }
        if hpa & (self.geo.page_size() - 1) != 0 {
            return Err(TceError::Misaligned);
        }
        self.check_addresses(hpa, lo, hi)?;
        self.ensure(&[View::Hardware], lo, hi, alloc)?;
        let shift = self.geo.page_shift();
        self.for_each_leaf(View::Hardware, lo, hi, |leaf, a, b| {
            for i in a..b {
                let tce = Tce::new(hpa + ((i - lo) << shift), perm);
                self.store_entry(leaf, self.slot(i, self.leaf_depth()), tce.to_be());
            }
        });
        Ok(())
    }

    /// Records in the owner view that entries `range` map consecutive pages from `owner_addr`
    /// (the address the owner mapped from). `owner_addr == 0` clears the range instead.
    ///
    /// Errors as for [`Self::set`] (no alignment requirement on `owner_addr`).
    pub fn owner_set(
        &self,
        range: Range<u64>,
        owner_addr: u64,
        alloc: MayAlloc,
    ) -> Result<(), TceError> {
        let (lo, hi) = self.check_range(&range)?;
        if owner_addr == 0 {
            self.clear_view(View::Owner, lo, hi);
            return Ok(());
        }
        self.check_addresses(owner_addr, lo, hi)?;
        self.ensure(&[View::Owner], lo, hi, alloc)?;
        let shift = self.geo.page_shift();
        self.for_each_leaf(View::Owner, lo, hi, |leaf, a, b| {
            for i in a..b {
                let v = owner_addr + ((i - lo) << shift);
                self.store_entry(leaf, self.slot(i, self.leaf_depth()), owner_image(v));
            }
        });
        Ok(())
    }

    /// Replaces the hardware TCE at `index` with `new`, returning the old one.
    ///
    /// Storing [`Tce::NONE`] never allocates (a missing level already reads as empty).
    /// Errors change nothing: [`TceError::OutOfWindow`], [`TceError::Misaligned`],
    /// [`TceError::WouldAllocate`], [`TceError::AllocFailed`].
    pub fn exchange(&self, index: u64, new: Tce, alloc: MayAlloc) -> Result<Tce, TceError> {
        self.check_index(index)?;
        if new.hpa() & (self.geo.page_size() - 1) != 0 {
            return Err(TceError::Misaligned);
        }
        let old = self.exchange_raw(View::Hardware, index, new.to_be(), new.is_none(), alloc)?;
        Ok(Tce::from_be(old))
    }

    /// Replaces the owner address at `index` with `owner_addr` (0 = none), returning the old
    /// one. Storing 0 never allocates. Errors as for [`Self::exchange`].
    pub fn owner_exchange(
        &self,
        index: u64,
        owner_addr: u64,
        alloc: MayAlloc,
    ) -> Result<u64, TceError> {
        self.check_index(index)?;
        let new = owner_image(owner_addr);
        let old = self.exchange_raw(View::Owner, index, new, owner_addr == 0, alloc)?;
        Ok(owner_value(old))
    }

    /// The hardware TCE at `index`; a missing level reads as [`Tce::NONE`]. Never allocates.
    pub fn get(&self, index: u64) -> Result<Tce, TceError> {
        self.check_index(index)?;
        Ok(Tce::from_be(self.get_raw(View::Hardware, index)))
    }

    /// The owner address at `index` (0 = none). Never allocates.
    pub fn owner_get(&self, index: u64) -> Result<u64, TceError> {
        self.check_index(index)?;
        Ok(owner_value(self.get_raw(View::Owner, index)))
    }

    /// Both views of entries `first..first + out.len()` (host order: hardware TCE bits, owner
    /// address), 0s where a level is missing or past the window. One walk per leaf and view,
    /// not per entry. Never allocates.
    pub fn read_run(&self, first: u64, out: &mut [(u64, u64)]) {
        out.fill((0, 0));
        let hi = first
            .saturating_add(out.len() as u64)
            .min(self.geo.entries());
        let leaf_depth = self.leaf_depth();
        for v in BOTH_VIEWS {
            self.for_each_leaf(v, first.min(hi), hi, |leaf, a, b| {
                for i in a..b {
                    let e = self.load_entry(leaf, self.slot(i, leaf_depth));
                    let o = &mut out[(i - first) as usize];
                    match v {
                        View::Hardware => o.0 = e.to_cpu(),
                        View::Owner => o.1 = owner_value(e),
                    }
                }
            });
        }
    }

    /// Exchanges both views of entries `first..first + news.len()`: entry `first + i` gets
    /// hardware TCE `news[i].0` (host order, `hpa | perm`) and owner address `news[i].1`, and
    /// its old pair goes to `olds[i]`. One walk per leaf and view, not per entry. The owner
    /// entry is written before the hardware one (whoever sees the hardware entry finds what it
    /// maps from). Never allocates: storing empty where a level is missing changes nothing, as
    /// in [`Self::exchange`]. Stops at the first entry it cannot store, with its position:
    /// [`TceError::OutOfWindow`] (the range passes the window: nothing changes),
    /// [`TceError::Misaligned`], or [`TceError::WouldAllocate`] (a level is missing); entries
    /// before it are exchanged, it and those after are unchanged.
    pub fn exchange_run(
        &self,
        first: u64,
        news: &[(u64, u64)],
        olds: &mut [(u64, u64)],
    ) -> Result<(), (usize, TceError)> {
        let n = news.len().min(olds.len());
        let hi = first
            .checked_add(n as u64)
            .filter(|&h| h <= self.geo.entries())
            .ok_or((0, TceError::OutOfWindow))?;
        let mask = self.geo.page_size() - 1;
        let leaf_depth = self.leaf_depth();
        let leaf_span = self.geo.span_shift(leaf_depth);
        // Noted up front, once: at worst the flag is set for a run that then stops early,
        // which only makes `holds_entries` look instead of answering at once.
        if news[..n].iter().any(|&(t, o)| t | o != 0) {
            self.mark_written();
        }
        let mut i = first;
        while i < hi {
            let end = hi.min(next_boundary(i, leaf_span));
            let hw = self.leaf(View::Hardware, i).ok();
            let ow = self.leaf(View::Owner, i).ok();
            for j in i..end {
                let k = (j - first) as usize;
                let (tce, owner) = news[k];
                let t = Tce::from_bits(tce);
                if t.hpa() & mask != 0 {
                    return Err((k, TceError::Misaligned));
                }
                if (hw.is_none() && !t.is_none()) || (ow.is_none() && owner != 0) {
                    return Err((k, TceError::WouldAllocate));
                }
                let slot = self.slot(j, leaf_depth);
                let old_owner = ow.map_or(0, |l| {
                    owner_value(self.swap_entry(l, slot, owner_image(owner)))
                });
                let old_tce = hw.map_or(0, |l| {
                    Tce::from_be(self.swap_entry(l, slot, t.to_be())).bits()
                });
                olds[k] = (old_tce, old_owner);
            }
            i = end;
        }
        Ok(())
    }

    /// Entry `index` of both views made to hold hardware TCE `tce` (host order, `hpa | perm`)
    /// and owner address `owner`, returning the old pair: [`Self::prepare`] of that entry and
    /// the exchange of both views (owner first), with one walk per view when the levels exist.
    /// Errors change nothing: [`TceError::OutOfWindow`], [`TceError::Misaligned`], and those of
    /// [`Self::prepare`] ([`TceError::WouldAllocate`] with [`MayAlloc::No`]).
    pub fn prepare_exchange(
        &self,
        index: u64,
        tce: u64,
        owner: u64,
        alloc: MayAlloc,
    ) -> Result<(u64, u64), TceError> {
        self.check_index(index)?;
        let t = Tce::from_bits(tce);
        if t.hpa() & (self.geo.page_size() - 1) != 0 {
            return Err(TceError::Misaligned);
        }
        let mut hw = self.leaf(View::Hardware, index).ok();
        let mut ow = self.leaf(View::Owner, index).ok();
        if hw.is_none() || ow.is_none() {
            // As `prepare`: both views' levels, whatever is stored.
            self.ensure(&BOTH_VIEWS, index, index + 1, alloc)?;
            hw = self.leaf(View::Hardware, index).ok();
            ow = self.leaf(View::Owner, index).ok();
        }
        self.swap_both(index, hw, ow, t, owner)
    }

    /// Both views of entry `index` exchanged as [`Self::exchange`] and
    /// [`Self::owner_exchange`] with [`MayAlloc::No`] would, owner first, with one walk per
    /// view: `tce` (host order) and `owner` in, the old pair out. All or nothing: errors
    /// ([`TceError::OutOfWindow`], [`TceError::Misaligned`], [`TceError::WouldAllocate`] when a
    /// level a non-empty value needs is missing) change neither view. Storing empty where a
    /// level is missing changes nothing.
    pub fn exchange_both(&self, index: u64, tce: u64, owner: u64) -> Result<(u64, u64), TceError> {
        self.check_index(index)?;
        let t = Tce::from_bits(tce);
        if t.hpa() & (self.geo.page_size() - 1) != 0 {
            return Err(TceError::Misaligned);
        }
        let hw = self.leaf(View::Hardware, index).ok();
        let ow = self.leaf(View::Owner, index).ok();
        if (hw.is_none() && !t.is_none()) || (ow.is_none() && owner != 0) {
            return Err(TceError::WouldAllocate);
        }
        self.swap_both(index, hw, ow, t, owner)
    }

    /// The exchanges of [`Self::exchange_both`] once both leaves are found (`None`: missing,
    /// and the value for it empty).
    #[inline]
    fn swap_both(
        &self,
        index: u64,
        hw: Option<u64>,
        ow: Option<u64>,
        t: Tce,
        owner: u64,
    ) -> Result<(u64, u64), TceError> {
        if !t.is_none() || owner != 0 {
            self.mark_written();
        }
        let slot = self.slot(index, self.leaf_depth());
        let old_owner = ow.map_or(0, |l| {
            owner_value(self.swap_entry(l, slot, owner_image(owner)))
        });
        let old_tce = hw.map_or(0, |l| {
            Tce::from_be(self.swap_entry(l, slot, t.to_be())).bits()
        });
        Ok((old_tce, old_owner))
    }

    /// Whether any entry of `range` is non-zero in either view (the range is clipped to the
    /// window). Visits only the leaves that exist.
    pub fn holds_entries(&self, range: Range<u64>) -> bool {
        // A table never given a non-empty entry holds none.
        if !self.written.load(core::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let (lo, hi) = (range.start, range.end.min(self.geo.entries()));
        let leaf_depth = self.leaf_depth();
        BOTH_VIEWS.iter().any(|&v| {
            let mut found = false;
            self.for_each_leaf(v, lo, hi, |leaf, a, b| {
                found = found
                    || (a..b).any(|i| self.load_entry(leaf, self.slot(i, leaf_depth)).raw() != 0);
            });
            found
        })
    }

    /// Clears the hardware TCEs of `range`. Never allocates: missing levels are skipped whole.
    pub fn clear(&self, range: Range<u64>) -> Result<(), TceError> {
        let (lo, hi) = self.check_range(&range)?;
        self.clear_view(View::Hardware, lo, hi);
        Ok(())
    }

    /// Clears the owner addresses of `range`. Never allocates.
    pub fn owner_clear(&self, range: Range<u64>) -> Result<(), TceError> {
        let (lo, hi) = self.check_range(&range)?;
        self.clear_view(View::Owner, lo, hi);
        Ok(())
    }

    /// Bytes of levels allocated now, per view (walks the table).
    pub fn allocated_bytes(&self) -> ViewBytes {
        let count = |v: View| self.count_levels(self.tops[v as usize], 0) * self.geo.level_size();
        ViewBytes {
            hardware: count(View::Hardware),
            owner: count(View::Owner),
        }
    }

    /// Releases every allocated level of both views and refunds the budget. Dropping the
    /// table does the same.
    pub fn free(self) {
        drop(self)
    }

    // ---- internals ----

    #[inline]
    fn leaf_depth(&self) -> u32 {
        self.leaf_depth
    }

    /// Slot within the level at `depth` (0 = top) that `index` goes through (as
    /// `TceGeometry::slot`, from the precomputed shifts).
    #[inline]
    fn slot(&self, index: u64, depth: u32) -> u64 {
        (index >> self.slot_shift[depth as usize & 7]) & self.slot_mask
    }

    #[inline]
    fn check_index(&self, index: u64) -> Result<(), TceError> {
        if index < self.geo.entries() {
            Ok(())
        } else {
            Err(TceError::OutOfWindow)
        }
    }

    #[inline]
    fn check_range(&self, r: &Range<u64>) -> Result<(u64, u64), TceError> {
        if r.start <= r.end && r.end <= self.geo.entries() {
            Ok((r.start, r.end))
        } else {
            Err(TceError::OutOfWindow)
        }
    }

    /// Checks that `base + (hi - lo - 1) pages` does not wrap.
    fn check_addresses(&self, base: u64, lo: u64, hi: u64) -> Result<(), TceError> {
        if hi > lo {
            ((hi - lo - 1) << self.geo.page_shift())
                .checked_add(base)
                .ok_or(TceError::AddressOverflow)?;
        }
        Ok(())
    }

    /// Address of entry `slot` of `level`.
    #[inline]
    fn entry_addr(&self, level: u64, slot: u64) -> u64 {
        debug_assert!(slot < self.geo.entries_per_level());
        level + slot * 8
    }

    #[inline]
    fn load_entry(&self, level: u64, slot: u64) -> Be64 {
        // SAFETY: `level` is a live level of this table and `slot` is in range (struct
        // invariant), so the address is an aligned entry inside it.
        Be64::from_raw(unsafe { self.mem.load(self.entry_addr(level, slot)) })
    }

    /// Notes that a non-empty entry is being stored (written once: after that only a load, so
    /// the flag's cache line is not written on every update).
    #[inline]
    fn mark_written(&self) {
        use core::sync::atomic::Ordering;
        if !self.written.load(Ordering::Relaxed) {
            self.written.store(true, Ordering::Release);
        }
    }

    #[inline]
    fn store_entry(&self, level: u64, slot: u64, v: Be64) {
        if v.raw() != 0 {
            self.mark_written();
        }
        // SAFETY: as in `load_entry`.
        unsafe { self.mem.store(self.entry_addr(level, slot), v.raw()) }
    }

    /// Callers note non-empty values themselves (`mark_written`), once per batch where they can.
    #[inline]
    fn swap_entry(&self, level: u64, slot: u64, v: Be64) -> Be64 {
        // SAFETY: as in `load_entry`.
        Be64::from_raw(unsafe { self.mem.swap(self.entry_addr(level, slot), v.raw()) })
    }

    /// Installs `new` in an empty entry; returns the entry found if it was not empty.
    #[inline]
    fn install_entry(&self, level: u64, slot: u64, new: Be64) -> Result<(), Be64> {
        // SAFETY: as in `load_entry`.
        unsafe {
            self.mem
                .compare_exchange(self.entry_addr(level, slot), 0, new.raw())
        }
        .map(|_| ())
        .map_err(Be64::from_raw)
    }

    /// The leaf level holding `index` in `view`, or the depth of the first missing level.
    #[inline]
    fn leaf(&self, view: View, index: u64) -> Result<u64, u32> {
        let mut level = self.tops[view as usize];
        for depth in 0..self.leaf_depth() {
            let e = self.load_entry(level, self.slot(index, depth)).to_cpu();
            if e == 0 {
                return Err(depth + 1);
            }
            level = next_level(e);
        }
        Ok(level)
    }

    fn get_raw(&self, view: View, index: u64) -> Be64 {
        match self.leaf(view, index) {
            Ok(leaf) => self.load_entry(leaf, self.slot(index, self.leaf_depth())),
            Err(_) => Be64::from_cpu(0),
        }
    }

    fn exchange_raw(
        &self,
        view: View,
        index: u64,
        new: Be64,
        new_is_empty: bool,
        alloc: MayAlloc,
    ) -> Result<Be64, TceError> {
        let slot = self.slot(index, self.leaf_depth());
        // At most two rounds: levels are never removed, so after `ensure` the walk succeeds.
        loop {
            match self.leaf(view, index) {
                Ok(leaf) => {
                    if new.raw() != 0 {
                        self.mark_written();
                    }
                    return Ok(self.swap_entry(leaf, slot, new));
                }
                Err(_) if new_is_empty => return Ok(Be64::from_cpu(0)),
                Err(_) => self.ensure(&[view], index, index + 1, alloc)?,
            }
        }
    }

    /// Calls `f(leaf, a, b)` for each run `a..b` of `lo..hi` that shares a leaf level,
    /// skipping missing levels whole.
    fn for_each_leaf(&self, view: View, lo: u64, hi: u64, mut f: impl FnMut(u64, u64, u64)) {
        let mut i = lo;
        while i < hi {
            match self.leaf(view, i) {
                Ok(leaf) => {
                    let end = hi.min(next_boundary(i, self.geo.span_shift(self.leaf_depth())));
                    f(leaf, i, end);
                    i = end;
                }
                Err(depth) => i = hi.min(next_boundary(i, self.geo.span_shift(depth))),
            }
        }
    }

    fn clear_view(&self, view: View, lo: u64, hi: u64) {
        let zero = Be64::from_cpu(0);
        let leaf_depth = self.leaf_depth();
        self.for_each_leaf(view, lo, hi, |leaf, a, b| {
            for i in a..b {
                self.store_entry(leaf, self.slot(i, leaf_depth), zero);
            }
        });
    }

    /// Makes every level on the paths of `lo..hi` exist in `views` (see [`Self::prepare`]).
    fn ensure(&self, views: &[View], lo: u64, hi: u64, alloc: MayAlloc) -> Result<(), TceError> {
        if lo >= hi {
            return Ok(());
        }
        if alloc == MayAlloc::No {
            // Only a check (the real-mode case): one walk per leaf the range touches, no
            // counting of what is missing.
            for &v in views {
                let mut i = lo;
                while i < hi {
                    self.leaf(v, i).map_err(|_| TceError::WouldAllocate)?;
                    i = hi.min(next_boundary(i, self.geo.span_shift(self.leaf_depth())));
                }
            }
            return Ok(());
        }
        let missing: u64 = views
            .iter()
            .map(|&v| self.count_missing(self.tops[v as usize], 0, lo, hi))
            .sum();
        if missing == 0 {
            return Ok(());
        }
        // Levels are never removed, so `missing` can only shrink under us: allocating it all
        // first means a failure is reported before anything is installed.
        let mut pool = Pool { head: 0 };
        for _ in 0..missing {
            match self.mem.alloc_level(self.level_bytes, self.node) {
                Ok(p) => self.pool_put(&mut pool, p),
                Err(_) => {
                    self.pool_drain(&mut pool);
                    return Err(TceError::AllocFailed);
                }
            }
        }
        let mut result = Ok(());
        for &v in views {
            result = self.install(self.tops[v as usize], 0, lo, hi, &mut pool);
            if result.is_err() {
                break;
            }
        }
        // The losers of installation races, and levels others installed after we counted.
        self.pool_drain(&mut pool);
        result
    }

    /// Levels missing below `level` (at `depth`) on the paths of `lo..hi`.
    fn count_missing(&self, level: u64, depth: u32, lo: u64, hi: u64) -> u64 {
        if depth == self.leaf_depth() {
            return 0;
        }
        let child_shift = self.geo.span_shift(depth + 1);
        let mut missing = 0;
        let mut i = lo;
        while i < hi {
            let end = hi.min(next_boundary(i, child_shift));
            let e = self.load_entry(level, self.slot(i, depth)).to_cpu();
            missing += if e == 0 {
                self.subtree_levels(depth + 1, i, end)
            } else {
                self.count_missing(next_level(e), depth + 1, i, end)
            };
            i = end;
        }
        missing
    }

    /// Levels at depths `depth..levels` that the paths of `lo..hi` go through.
    fn subtree_levels(&self, depth: u32, lo: u64, hi: u64) -> u64 {
        (depth..self.geo.levels())
            .map(|d| {
                let s = self.geo.span_shift(d);
                ((hi - 1) >> s) - (lo >> s) + 1
            })
            .sum()
    }

    /// Installs the missing levels below `level` (at `depth`) on the paths of `lo..hi`,
    /// taking them from `pool`. Top-down, so a level is published before anything is written
    /// into it and a race loser's copy is still zero.
    fn install(
        &self,
        level: u64,
        depth: u32,
        lo: u64,
        hi: u64,
        pool: &mut Pool,
    ) -> Result<(), TceError> {
        if depth == self.leaf_depth() {
            return Ok(());
        }
        let child_shift = self.geo.span_shift(depth + 1);
        let mut i = lo;
        while i < hi {
            let end = hi.min(next_boundary(i, child_shift));
            let slot = self.slot(i, depth);
            let mut e = self.load_entry(level, slot).to_cpu();
            if e == 0 {
                let new = match self.pool_take(pool) {
                    Some(p) => p,
                    // Not reached (see `ensure`), but stay correct if it ever is.
                    None => self
                        .mem
                        .alloc_level(self.level_bytes, self.node)
                        .map_err(|_| TceError::AllocFailed)?,
                };
                let indirect = new | TCE_INDIRECT;
                e = match self.install_entry(level, slot, Be64::from_cpu(indirect)) {
                    Ok(()) => indirect,
                    Err(winner) => {
                        self.pool_put(pool, new);
                        winner.to_cpu()
                    }
                };
            }
            self.install(next_level(e), depth + 1, i, end, pool)?;
            i = end;
        }
        Ok(())
    }

    fn pool_put(&self, pool: &mut Pool, level: u64) {
        // Word 0 of a pooled level links the next; `pool_take` zeroes it again.
        // SAFETY: `level` was allocated with our level size and is not published.
        unsafe { self.mem.store(level, pool.head) };
        pool.head = level;
    }

    fn pool_take(&self, pool: &mut Pool) -> Option<u64> {
        let level = pool.head;
        if level == 0 {
            return None;
        }
        // SAFETY: `level` is a pooled (allocated, unpublished) level of our size.
        unsafe {
            pool.head = self.mem.load(level);
            self.mem.store(level, 0);
        }
        Some(level)
    }

    fn pool_drain(&self, pool: &mut Pool) {
        while let Some(level) = self.pool_take(pool) {
            // SAFETY: a pooled level was allocated with our level size and never published.
            unsafe { self.mem.free_level(level, self.level_bytes) };
        }
    }

    /// Levels allocated at and below `level` (at `depth`).
    fn count_levels(&self, level: u64, depth: u32) -> u64 {
        if depth == self.leaf_depth() {
            return 1;
        }
        1 + (0..self.geo.entries_per_level())
            .map(|slot| match self.load_entry(level, slot).to_cpu() {
                0 => 0,
                e => self.count_levels(next_level(e), depth + 1),
            })
            .sum::<u64>()
    }

    /// Frees `level` (at `depth`) and everything below it.
    fn free_tree(&self, level: u64, depth: u32) {
        if depth < self.leaf_depth() {
            for slot in 0..self.geo.entries_per_level() {
                let e = self.load_entry(level, slot).to_cpu();
                if e != 0 {
                    self.free_tree(next_level(e), depth + 1);
                }
            }
        }
        // SAFETY: `level` is a level of this table, allocated with our level size; the table
        // is being dropped, so nothing reaches it any more.
        unsafe { self.mem.free_level(level, self.level_bytes) };
    }
}

impl<M: TceMemory, B: LockedMemoryBudget> Drop for TceTable<M, B> {
    fn drop(&mut self) {
        for v in BOTH_VIEWS {
            self.free_tree(self.tops[v as usize], 0);
        }
        self.budget.refund(self.charged);
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
