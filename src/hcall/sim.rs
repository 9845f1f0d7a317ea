//! A host simulation of the machine the hypercalls run on, for tests and the fuzzer.
//!
//! Host physical addresses are heap addresses (the `tce` module's `HeapMemory` convention):
//! "RAM" is one zeroed, 2 MiB-aligned buffer of atomic words, one page descriptor per 4 KiB of
//! it. Userspace addresses (ua) are a separate, fake range (`UA_BASE + offset`) so a mix-up of
//! ua and hpa shows. Reads outside the buffer return 0 (as real-mode QEMU does) and are counted.

use super::window::{Attached, HwError, HwTable, KillFailed, PutError, TceInvalidate, WindowError};
use super::{rm_dispatch, vm_dispatch, Env, Guest, MemAccess, Mode, H_STUFF_TCE};
use crate::mm::{
    Backing, FlatPageDescriptors, GuestPhys, HostPhys, MemError, Memslot, PageDesc,
    PageDescriptors, Pfn, RealMode, Registered, TooHard, Ua, VirtMode, PAGE_SHIFT,
};
use crate::tce::{Be64, HeapMemory, LockedVm, TceGeometry, TceMemory};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

/// Where the simulated VMM maps guest RAM.
pub const UA_BASE: u64 = 0x7e00_0000_0000;

/// What [`World::call`] returns in r3 when real mode declines (KVM's H_TOO_HARD).
pub const H_TOO_HARD: i64 = TooHard::CODE;

/// The real-mode token for the simulation.
pub fn rm() -> RealMode {
    // SAFETY: the simulation has no MMU; the token stands for real mode's rules, which the
    // callers enforce (`rm_dispatch` enters the allocation guard).
    unsafe { RealMode::new_unchecked() }
}

/// The virtual-mode token for the simulation.
pub fn vm() -> VirtMode {
    // SAFETY: host code: every pointer is mapped, as in virtual mode.
    unsafe { VirtMode::new_unchecked() }
}
const RAM_ALIGN: usize = 1 << 21;

/// Indices something reached, as a bitmap of atomics: marking allocates nothing, so real-mode
/// code may do it. An index at or past the capacity is not kept but noted as an overflow, so a
/// reader knows the set is incomplete.
#[derive(Debug)]
pub struct TouchSet {
    words: Box<[AtomicU64]>,
    len: u64,
    overflow: AtomicBool,
    /// Something was marked since the last drain (spares scanning an empty set).
    any: AtomicBool,
}

/// Most indices a [`TouchSet`] keeps (128 KiB of bits).
pub const TOUCH_CAPACITY: u64 = 1 << 20;

impl TouchSet {
    /// A set for indices `0..len` (at most [`TOUCH_CAPACITY`] of them kept), none marked.
    pub fn new(len: u64) -> Self {
        let len = len.min(TOUCH_CAPACITY);
        TouchSet {
            words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            len,
            overflow: AtomicBool::new(false),
            any: AtomicBool::new(false),
        }
    }

    /// Marks index `i`.
    pub fn mark(&self, i: u64) {
        self.any.store(true, Ordering::Relaxed);
        if i < self.len {
            self.words[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::Relaxed);
        } else {
            self.overflow.store(true, Ordering::Relaxed);
        }
    }

    /// Appends the marked indices to `out` in increasing order and unmarks them; `false` if
    /// some index could not be kept since the last call (the set was incomplete). Meant for
    /// one thread draining while nothing marks (a mark racing a drain may wait for the next).
    pub fn drain_into(&self, out: &mut Vec<u64>) -> bool {
        if !self.any.swap(false, Ordering::Relaxed) {
            return true;
        }
        for (n, w) in self.words.iter().enumerate() {
            if w.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = w.swap(0, Ordering::Relaxed);
            while bits != 0 {
                out.push(n as u64 * 64 + u64::from(bits.trailing_zeros()));
                bits &= bits - 1;
            }
        }
        !self.overflow.swap(false, Ordering::Relaxed)
    }

    /// Unmarks everything.
    pub fn clear(&self) {
        for w in self.words.iter() {
            w.store(0, Ordering::Relaxed);
        }
        self.overflow.store(false, Ordering::Relaxed);
        self.any.store(false, Ordering::Relaxed);
    }
}

/// Simulated host RAM, its page descriptors and the guest-memory accessor.
///
/// The handlers reach the descriptors through the host itself ([`SimHost::env`]), which marks
/// every frame they look up in [`SimHost::touched`]: a handler can change a page's count or
/// flags only through a descriptor it looked up during that call.
pub struct SimHost {
    ram: *mut AtomicU64,
    words: usize,
    /// One descriptor per 4 KiB of RAM.
    pub pages: FlatPageDescriptors,
    /// Reads that fell outside RAM.
    pub stray_reads: AtomicU64,
    /// Frames (RAM page index) whose descriptor the handlers looked up.
    pub touched: TouchSet,
    /// Fault injection (tests of the fuzz harness): while set, every real-mode descriptor
    /// lookup takes a reference that nothing drops, as a leaking real-mode handler would.
    pub leak_rm_ref: AtomicBool,
}

// SAFETY: the buffer is only accessed through `AtomicU64`s, which are Sync; the raw pointer is
// owned by this value and freed only in Drop.
unsafe impl Send for SimHost {}
// SAFETY: as above.
unsafe impl Sync for SimHost {}

impl SimHost {
    /// `size` bytes of zeroed RAM (rounded up to 4 KiB).
    pub fn new(size: u64) -> Self {
        let size = (size.max(4096) + 4095) & !4095;
        let layout = Layout::from_size_align(size as usize, RAM_ALIGN).expect("RAM layout");
        // SAFETY: `layout` has a non-zero size.
        let ram = unsafe { alloc::alloc::alloc_zeroed(layout) }.cast::<AtomicU64>();
        assert!(!ram.is_null(), "simulated RAM allocation failed");
        let base = ram as u64;
        SimHost {
            ram,
            words: size as usize / 8,
            pages: FlatPageDescriptors::new(base >> PAGE_SHIFT, (size >> PAGE_SHIFT) as usize),
            stray_reads: AtomicU64::new(0),
            touched: TouchSet::new(size >> PAGE_SHIFT),
            leak_rm_ref: AtomicBool::new(false),
        }
    }

    /// Fresh descriptors (one reference each, no flags), nothing touched, no stray read: the
    /// descriptors of a new host. RAM keeps its contents.
    pub fn reset_pages(&mut self) {
        self.pages = FlatPageDescriptors::new(self.pages.base_pfn(), self.pages.len());
        self.stray_reads.store(0, Ordering::Relaxed);
        self.touched.clear();
        self.leak_rm_ref.store(false, Ordering::Relaxed);
    }

    /// The big-endian u64 at RAM offset `off` (8-aligned, inside RAM), as the guest wrote it.
    pub fn read_be64(&self, off: u64) -> u64 {
        Be64::from_raw(self.words()[(off / 8) as usize].load(Ordering::Acquire)).to_cpu()
    }

    fn note(&self, pfn: Pfn, found: bool) {
        if found {
            self.touched.mark(pfn.0 - self.pages.base_pfn());
        }
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ram` points at `words` zero-initialised, 8-aligned words allocated in `new`
        // and freed only in Drop; AtomicU64 has the layout of u64 and all-zero is valid.
        unsafe { core::slice::from_raw_parts(self.ram, self.words) }
    }

    /// RAM size in bytes.
    pub fn size(&self) -> u64 {
        self.words as u64 * 8
    }

    /// Host physical address of RAM offset `off`.
    pub fn hpa(&self, off: u64) -> u64 {
        self.ram as u64 + off
    }

    /// RAM offset of a host physical address, if inside RAM.
    pub fn offset_of(&self, hpa: u64) -> Option<u64> {
        hpa.checked_sub(self.ram as u64)
            .filter(|o| *o < self.size())
    }

    /// The simulated ua of RAM offset `off`.
    pub fn ua(&self, off: u64) -> Ua {
        Ua(UA_BASE + off)
    }

    /// Writes a big-endian u64 at RAM offset `off` (what the guest does to its memory).
    pub fn write_be64(&self, off: u64, v: u64) {
        self.words()[(off / 8) as usize].store(Be64::from_cpu(v).raw(), Ordering::Release);
    }

    fn read_off(&self, off: Option<u64>) -> Option<Be64> {
        match off {
            Some(o) if o % 8 == 0 => Some(Be64::from_raw(
                self.words()[(o / 8) as usize].load(Ordering::Acquire),
            )),
            _ => {
                self.stray_reads.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The page array pinning RAM `[off, off + size)` in pages of `1 << shift` bytes (the ua
    /// of RAM offset `o` is `UA_BASE + o`, so the pages are those of the same offsets).
    pub fn backing(&self, off: u64, size: u64, shift: u32) -> Backing {
        let n = size >> shift;
        let hpas: Vec<HostPhys> = (0..n)
            .map(|i| HostPhys(self.hpa(off + (i << shift))))
            .collect();
        Backing::Pages(hpas.into_boxed_slice())
    }

    /// The handlers' environment over this host: descriptor lookups go through
    /// [`SimHost`]'s own [`PageDescriptors`], which marks them in [`SimHost::touched`].
    pub fn env(&self) -> Env<'_> {
        Env {
            pages: self,
            mem: self,
        }
    }
}

impl PageDescriptors for SimHost {
    fn rm_page(&self, rm: RealMode, pfn: Pfn) -> Option<&PageDesc> {
        let d = self.pages.rm_page(rm, pfn);
        self.note(pfn, d.is_some());
        if let Some(d) = d {
            if self.leak_rm_ref.load(Ordering::Relaxed) {
                d.get();
            }
        }
        d
    }

    fn page(&self, v: VirtMode, pfn: Pfn) -> Option<&PageDesc> {
        let d = self.pages.page(v, pfn);
        self.note(pfn, d.is_some());
        d
    }
}

impl MemAccess for SimHost {
    fn phys_read_be64(&self, _: RealMode, pa: HostPhys) -> Be64 {
        self.read_off(self.offset_of(pa.0)).unwrap_or_default()
    }

    fn ua_read_be64(&self, _: VirtMode, ua: Ua) -> Option<Be64> {
        self.read_off(ua.0.checked_sub(UA_BASE).filter(|o| *o < self.size()))
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.words * 8, RAM_ALIGN).expect("RAM layout");
        // SAFETY: `ram` was allocated in `new` with this layout and is freed once, here.
        unsafe { alloc::alloc::dealloc(self.ram.cast(), layout) };
    }
}

/// Frees a table nothing else holds without `TceTable::drop`'s scan of every slot of every
/// level (thousands of slots for an empty multi-level table, most of a fuzz input's cost): its
/// levels are found by following, from each top level, only the slots its entries can use
/// (a table installs levels only on the paths of its entries), then freed, and the table
/// forgotten. If that finds fewer levels than the memory has out, the table is dropped the
/// ordinary way instead; a table still shared is just released.
fn dispose(t: Arc<SimTable>, levels: &mut Vec<u64>) {
    let Ok(t) = Arc::try_unwrap(t) else {
        return;
    };
    levels.clear();
    for top in [t.top_level_phys(), t.owner_top_level_phys()] {
        collect_levels(&t, top, 0, 0, levels);
    }
    if levels.len() as u64 != t.memory().outstanding_levels() {
        return;
    }
    let bytes = t.level_size() as usize;
    for &l in levels.iter() {
        // SAFETY: `l` is the top level or was read from a well-formed indirect entry of a
        // level of `t`, so it is a level `t`'s memory allocated with the table's level size,
        // listed once (a tree); the count matched what the memory has out, so none was freed
        // yet; `t` is forgotten right after without being used, so nothing accesses it again.
        unsafe { t.memory().free_level(l, bytes) };
    }
    core::mem::forget(t);
}

/// Appends `level` (at `depth`, its first entry index `base`) and the levels below it.
fn collect_levels(t: &SimTable, level: u64, depth: u32, base: u64, out: &mut Vec<u64>) {
    out.push(level);
    let g = t.geometry();
    if depth + 1 >= g.levels() {
        return;
    }
    let cover = (g.levels() - 1 - depth) * g.level_bits();
    let slots = if cover >= 64 {
        1
    } else {
        (g.entries() - base)
            .div_ceil(1 << cover)
            .min(g.entries_per_level())
    };
    for slot in 0..slots {
        // SAFETY: `level` is a live level of `t` (its top level or read from a well-formed
        // indirect entry of one), `t` is borrowed, and `slot < entries_per_level` keeps the
        // address an aligned entry inside it.
        let e = Be64::from_raw(unsafe { t.memory().load(level + slot * 8) }).to_cpu();
        let next = e & !0xfff;
        if e != 0 && e & 0xfff == crate::tce::TCE_INDIRECT && next.is_multiple_of(g.level_size()) {
            collect_levels(t, next, depth + 1, base + (slot << cover), out);
        }
    }
}

/// A TCE-kill recorder: counts calls and keeps the last one (atomics: callable in real mode).
#[derive(Debug, Default)]
pub struct KillLog {
    /// Calls so far.
    pub calls: AtomicU64,
    /// Cookie, first entry and count of the last call.
    pub last: [AtomicU64; 3],
}

impl TceInvalidate for KillLog {
    fn invalidate(&self, cookie: u64, first: u64, count: u64) -> Result<(), KillFailed> {
        self.last[0].store(cookie, Ordering::Relaxed);
        self.last[1].store(first, Ordering::Relaxed);
        self.last[2].store(count, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl KillLog {
    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
    /// (cookie, first, count) of the last call.
    pub fn last(&self) -> (u64, u64, u64) {
        let l = |i: usize| self.last[i].load(Ordering::Relaxed);
        (l(0), l(1), l(2))
    }
}

/// A hardware table as the simulation builds it.
pub type SimTable = crate::tce::TceTable<crate::tce::HeapMemory, crate::tce::LockedVm>;

/// How a [`FaultyTable`] lies on `exchange` (fault injection for the fuzz harness's own tests:
/// each is a bug its oracle must report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lie {
    /// Tells the truth.
    None = 0,
    /// Stores a mapping TCE one IOMMU page further than asked: the device would reach a page
    /// the entry's owner address does not pin.
    ShiftedTce = 1,
    /// Also stores the same TCE and owner in the next entry, behind the caller's back.
    StrayWrite = 2,
    /// Panics.
    Panic = 3,
}

/// A hardware table that refuses or lies on command: wraps a [`SimTable`] and forwards to it,
/// except that `prepare` can be made to refuse, one chosen `exchange` refuses, and `exchange`
/// can be made to lie ([`Lie`]). Refusals change nothing. Switches are atomics, so it works in
/// real mode.
pub struct FaultyTable {
    inner: Arc<SimTable>,
    refuse_prepare: AtomicBool,
    /// Exchanges left before the refused one (0: none refused).
    countdown: AtomicU64,
    exchanges: AtomicU64,
    refused: AtomicU64,
    lie: AtomicU8,
}

impl FaultyTable {
    /// Forwards everything to `inner` until a switch is set.
    pub fn new(inner: Arc<SimTable>) -> Self {
        FaultyTable {
            inner,
            refuse_prepare: AtomicBool::new(false),
            countdown: AtomicU64::new(0),
            exchanges: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            lie: AtomicU8::new(Lie::None as u8),
        }
    }

    /// Makes every `exchange` from now on lie this way (`Lie::None`: tell the truth again).
    pub fn lie(&self, lie: Lie) {
        self.lie.store(lie as u8, Ordering::Release);
    }

    /// The wrapped table (whose state snapshots and checks read).
    pub fn inner(&self) -> &Arc<SimTable> {
        &self.inner
    }

    /// Makes every `prepare` refuse ([`HwError::Refused`]) while `on`.
    pub fn refuse_prepare(&self, on: bool) {
        self.refuse_prepare.store(on, Ordering::Release);
    }

    /// Makes the `nth` exchange from now (1 = the next one) refuse, once; 0 disarms.
    pub fn refuse_nth_exchange(&self, nth: u64) {
        self.countdown.store(nth, Ordering::Release);
    }

    /// Exchanges asked for so far, refused ones included.
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Acquire)
    }

    /// Operations refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Acquire)
    }
}

impl HwTable for FaultyTable {
    fn page_shift(&self) -> u32 {
        HwTable::page_shift(&*self.inner)
    }

    fn bus_offset(&self) -> u64 {
        HwTable::bus_offset(&*self.inner)
    }

    fn entries(&self) -> u64 {
        HwTable::entries(&*self.inner)
    }

    fn prepare(&self, first: u64, count: u64, alloc: bool) -> Result<(), HwError> {
        if self.refuse_prepare.load(Ordering::Acquire) {
            self.refused.fetch_add(1, Ordering::AcqRel);
            return Err(HwError::Refused);
        }
        HwTable::prepare(&*self.inner, first, count, alloc)
    }

    fn read(&self, index: u64) -> (u64, u64) {
        HwTable::read(&*self.inner, index)
    }

    fn holds_entries(&self, first: u64, count: u64) -> bool {
        HwTable::holds_entries(&*self.inner, first, count)
    }

    fn read_run(&self, first: u64, out: &mut [(u64, u64)]) {
        HwTable::read_run(&*self.inner, first, out)
    }

    fn exchange(&self, index: u64, tce: u64, owner: u64) -> Result<(u64, u64), HwError> {
        self.exchanges.fetch_add(1, Ordering::AcqRel);
        let hit = self
            .countdown
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1))
            == Ok(1);
        if hit {
            self.refused.fetch_add(1, Ordering::AcqRel);
            return Err(HwError::Refused);
        }
        let lie = self.lie.load(Ordering::Acquire);
        if lie == Lie::Panic as u8 {
            panic!("FaultyTable: exchange of entry {index} told to panic");
        }
        if lie == Lie::ShiftedTce as u8 && tce & 3 != 0 {
            let shifted = tce + (1 << HwTable::page_shift(&*self.inner));
            return HwTable::exchange(&*self.inner, index, shifted, owner);
        }
        if lie == Lie::StrayWrite as u8 && index + 1 < HwTable::entries(&*self.inner) {
            // Levels may be missing there: a refusal is the truth then.
            let _ = HwTable::exchange(&*self.inner, index + 1, tce, owner);
        }
        HwTable::exchange(&*self.inner, index, tce, owner)
    }
}

/// The table a window's handlers reach: forwards to the attached table and marks, in
/// [`Recorded::touched`], every index they ask to exchange (before forwarding, so a refused or
/// panicking exchange is marked too). [`World::attach`] puts one in front of every table, so
/// every entry a handler changes is marked: `exchange`, `exchange_run` and `prepare_exchange`
/// are the only ways [`HwTable`] offers to change an entry, and the handlers reach tables only
/// through the window's [`Attached`].
pub struct Recorded {
    inner: Arc<dyn HwTable>,
    /// Indices exchanged since last drained.
    pub touched: TouchSet,
}

impl HwTable for Recorded {
    fn page_shift(&self) -> u32 {
        self.inner.page_shift()
    }

    fn bus_offset(&self) -> u64 {
        self.inner.bus_offset()
    }

    fn entries(&self) -> u64 {
        self.inner.entries()
    }

    fn prepare(&self, first: u64, count: u64, alloc: bool) -> Result<(), HwError> {
        self.inner.prepare(first, count, alloc)
    }

    fn read(&self, index: u64) -> (u64, u64) {
        self.inner.read(index)
    }

    fn holds_entries(&self, first: u64, count: u64) -> bool {
        self.inner.holds_entries(first, count)
    }

    fn read_run(&self, first: u64, out: &mut [(u64, u64)]) {
        self.inner.read_run(first, out)
    }

    fn exchange(&self, index: u64, tce: u64, owner: u64) -> Result<(u64, u64), HwError> {
        self.touched.mark(index);
        self.inner.exchange(index, tce, owner)
    }

    fn prepare_exchange(
        &self,
        index: u64,
        tce: u64,
        owner: u64,
        alloc: bool,
    ) -> Result<(u64, u64), PutError> {
        self.touched.mark(index);
        self.inner.prepare_exchange(index, tce, owner, alloc)
    }

    fn exchange_run(
        &self,
        first: u64,
        news: &[(u64, u64)],
        olds: &mut [(u64, u64)],
    ) -> Result<(), (usize, HwError)> {
        for i in 0..news.len() as u64 {
            self.touched.mark(first + i);
        }
        self.inner.exchange_run(first, news, olds)
    }
}

/// One attached hardware table of a [`World`] window.
pub struct SimAttached {
    /// LIOBN of its window.
    pub liobn: u64,
    /// The table.
    pub table: Arc<SimTable>,
    /// What the handlers reach: the attached table behind a recorder of the indices they
    /// exchange.
    pub recorded: Arc<Recorded>,
}

/// A guest with memory and windows over a [`SimHost`]: the fixture of the host tests, the
/// differential property test and the fuzzer.
pub struct World {
    /// Host RAM and page descriptors.
    pub host: SimHost,
    /// The guest state the handlers use.
    pub guest: Guest,
    /// Every TCE kill.
    pub kill: Arc<KillLog>,
    /// Attached tables, in attach order (cookie = position).
    pub tables: Vec<SimAttached>,
    /// RAM offsets of the words [`World::write_guest`] wrote, for [`World::reset`].
    written: spin::Mutex<Vec<u64>>,
    /// Whether real mode can translate a guest physical address the way the kernel does by
    /// walking the partition-scoped tree ([`MemAccess::rm_gpa_to_hpa`]): then a TCE list
    /// outside preregistered memory is read in real mode through the vmemmap walker's page
    /// reference. Off by default (real mode declines such lists).
    pub rm_walk: bool,
}

/// The world's memory access with [`MemAccess::rm_gpa_to_hpa`]: gpa -> memslot -> ua ->
/// simulated RAM.
struct Walkable<'a>(&'a World);

impl MemAccess for Walkable<'_> {
    fn phys_read_be64(&self, rm: RealMode, pa: HostPhys) -> Be64 {
        self.0.host.phys_read_be64(rm, pa)
    }
    fn ua_read_be64(&self, v: VirtMode, ua: Ua) -> Option<Be64> {
        self.0.host.ua_read_be64(v, ua)
    }
    fn rm_gpa_to_hpa(&self, _: RealMode, gpa: GuestPhys) -> Option<HostPhys> {
        let ua = self.0.guest.mem.gpa_to_ua(gpa, 8)?;
        let off =
            ua.0.checked_sub(UA_BASE)
                .filter(|&o| o < self.0.host.size())?;
        Some(HostPhys(self.0.host.hpa(off)))
    }
}

/// A comparable image of a world's state: RAM offsets instead of heap addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// (liobn, window index, guest TCE) for every non-zero guest-view entry.
    pub views: Vec<(u64, u64, u64)>,
    /// (table, index, RAM offset | perm, owner ua) for every mapped hardware entry.
    pub hw: Vec<(usize, u64, u64, u64)>,
    /// `mapped` of each region.
    pub mapped: Vec<u64>,
    /// (pfn offset, count, dirty) of every page whose count or flags differ from a fresh page.
    pub pages: Vec<(u64, u64, bool)>,
    /// (region, pinned page) of every page its region marks dirty.
    pub dirty: Vec<(usize, usize)>,
}

impl World {
    /// A world with `ram` bytes of host RAM and nothing configured.
    pub fn new(ram: u64) -> Self {
        World {
            host: SimHost::new(ram),
            guest: Guest::new(),
            kill: Arc::new(KillLog::default()),
            tables: Vec::new(),
            written: spin::Mutex::new(Vec::new()),
            rm_walk: false,
        }
    }

    /// Back to the state [`World::new`] gives, keeping the RAM allocation: a new guest (no
    /// memslot, region or window), no table, new page descriptors, the RAM words
    /// [`World::write_guest`] wrote zeroed again. Costs what the previous use touched, not
    /// what the RAM weighs.
    pub fn reset(&mut self) {
        self.guest = Guest::new();
        self.tables.clear();
        self.kill = Arc::new(KillLog::default());
        self.host.reset_pages();
        self.forget_writes();
    }

    /// Zeroes the RAM words [`World::write_guest`] wrote since [`World::new`] or the last
    /// reset or call.
    pub fn forget_writes(&mut self) {
        for off in self.written.get_mut().drain(..) {
            self.host.write_be64(off, 0);
        }
    }

    /// Removes every window and its tables (refused, like [`Guest::remove_window`], while a
    /// window maps hardware entries); the guest keeps its memory. Cookies restart at 0.
    pub fn remove_windows(&mut self) -> Result<(), WindowError> {
        while let Some(w) = self.guest.windows().first() {
            let liobn = w.liobn();
            self.guest.remove_window(liobn)?;
        }
        let mut levels = Vec::new();
        for t in self.tables.drain(..) {
            drop(t.recorded);
            dispose(t.table, &mut levels);
        }
        self.kill = Arc::new(KillLog::default());
        Ok(())
    }

    /// Adds a memslot mapping guest `[gpa, gpa + size)` to RAM offset `off`.
    pub fn memslot(&mut self, gpa: u64, size: u64, off: u64) -> Result<(), MemError> {
        let ua = self.host.ua(off);
        self.guest.mem.add_memslot(Memslot {
            gpa: GuestPhys(gpa),
            size,
            ua,
        })
    }

    /// Preregisters the ua range of RAM `[off, off + size)` in pages of `1 << shift`.
    pub fn prereg(&mut self, off: u64, size: u64, shift: u32) -> Result<Registered, MemError> {
        let backing = self.host.backing(off, size, shift);
        let ua = self.host.ua(off);
        self.guest
            .mem
            .register(vm(), ua, size, shift, backing, &self.host.pages)
    }

    /// Unregisters the region at RAM offset `off`.
    pub fn unprereg(&mut self, off: u64, size: u64) -> Result<(), MemError> {
        let ua = self.host.ua(off);
        self.guest.mem.unregister(vm(), ua, size, &self.host.pages)
    }

    /// Creates a window; `tables` lists (page shift, levels) of hardware tables to attach.
    pub fn window(
        &mut self,
        liobn: u64,
        bus_offset: u64,
        shift: u32,
        size: u64,
        tables: &[(u32, u32)],
    ) -> Result<(), WindowError> {
        self.guest.create_window(liobn, bus_offset, shift, size)?;
        for &(tshift, levels) in tables {
            let geo = TceGeometry::new(bus_offset, tshift, size, levels)
                .map_err(|_| WindowError::Invalid)?;
            let t = SimTable::new(geo, 0, HeapMemory::new(), LockedVm::new(u64::MAX))
                .map_err(|_| WindowError::Invalid)?;
            let table = Arc::new(t);
            self.attach(liobn, table.clone(), table)?;
        }
        Ok(())
    }

    /// Attaches `hw` to window `liobn`; `table` is the table whose entries `hw` presents (what
    /// [`World::snapshot`] and [`World::check`] read). Cookie = position in [`World::tables`].
    pub fn attach(
        &mut self,
        liobn: u64,
        table: Arc<SimTable>,
        hw: Arc<dyn HwTable>,
    ) -> Result<(), WindowError> {
        let recorded = Arc::new(Recorded {
            touched: TouchSet::new(hw.entries()),
            inner: hw,
        });
        let att = Attached {
            table: recorded.clone(),
            kill: self.kill.clone(),
            cookie: self.tables.len() as u64,
        };
        self.guest.attach_table(liobn, att)?;
        self.tables.push(SimAttached {
            liobn,
            table,
            recorded,
        });
        Ok(())
    }

    /// Attaches a [`FaultyTable`] over a fresh table with pages of `1 << shift` and `levels`
    /// levels covering window `liobn`; returns it to set its switches.
    pub fn attach_faulty(
        &mut self,
        liobn: u64,
        shift: u32,
        levels: u32,
    ) -> Result<Arc<FaultyTable>, WindowError> {
        let w = self.guest.window(liobn).ok_or(WindowError::NotFound)?;
        let geo = TceGeometry::new(w.bus_offset(), shift, w.size(), levels)
            .map_err(|_| WindowError::Invalid)?;
        let t = SimTable::new(geo, 0, HeapMemory::new(), LockedVm::new(u64::MAX))
            .map_err(|_| WindowError::Invalid)?;
        let table = Arc::new(t);
        let faulty = Arc::new(FaultyTable::new(table.clone()));
        self.attach(liobn, table, faulty.clone())?;
        Ok(faulty)
    }

    /// Writes a big-endian u64 at guest physical `gpa` (through the memslots); false if no
    /// memslot backs it.
    pub fn write_guest(&self, gpa: u64, v: u64) -> bool {
        match self.guest.mem.gpa_to_ua(GuestPhys(gpa), 8) {
            Some(Ua(ua)) if ua % 8 == 0 && ua - UA_BASE + 8 <= self.host.size() => {
                self.host.write_be64(ua - UA_BASE, v);
                self.written.lock().push(ua - UA_BASE);
                true
            }
            _ => false,
        }
    }

    /// The handlers' environment.
    pub fn env(&self) -> Env<'_> {
        self.host.env()
    }

    /// One hypercall in `mode`: (r3, r4), r3 = [`H_TOO_HARD`] when real mode declines.
    pub fn call(&self, mode: Mode, nr: u64, args: [u64; 4]) -> (i64, u64) {
        let walkable = Walkable(self);
        let mut env = self.env();
        if self.rm_walk {
            env.mem = &walkable;
        }
        let r = match mode {
            Mode::Real => rm_dispatch(&self.guest, &env, rm(), nr, args),
            Mode::Virtual => Ok(vm_dispatch(&self.guest, &env, vm(), nr, args)),
        };
        match r {
            Ok(r) => (r.r3.code(), r.r4),
            Err(TooHard) => (H_TOO_HARD, 0),
        }
    }

    /// One hypercall the kernel's way: real mode, virtual mode if real mode declined.
    pub fn hcall(&self, nr: u64, args: [u64; 4]) -> (i64, u64) {
        match self.call(Mode::Real, nr, args) {
            (H_TOO_HARD, _) => self.call(Mode::Virtual, nr, args),
            r => r,
        }
    }

    fn norm_hpa(&self, hpa: u64) -> u64 {
        self.host.offset_of(hpa).map_or(u64::MAX, |o| o)
    }

    /// The state, comparable between worlds built the same way.
    pub fn snapshot(&self) -> Snapshot {
        let mut views = Vec::new();
        for w in self.guest.windows() {
            for i in 0..w.entries() {
                if w.view().present(i) && w.view().get(i) != 0 {
                    views.push((w.liobn(), i, w.view().get(i)));
                }
            }
        }
        let mut hw = Vec::new();
        for (n, t) in self.tables.iter().enumerate() {
            for i in 0..t.table.entries() {
                let (tce, owner) = HwTable::read(&*t.table, i);
                if tce != 0 || owner != 0 {
                    hw.push((n, i, self.norm_hpa(tce & !0xfff) | (tce & 0xfff), owner));
                }
            }
        }
        let mapped = self
            .guest
            .mem
            .regions()
            .iter()
            .map(|r| r.mapped())
            .collect();
        let base = self.host.pages.base_pfn();
        let pages = self
            .host
            .pages
            .iter()
            .filter(|(_, d)| d.count() != 1 || d.flags() != 0)
            .map(|(pfn, d)| (pfn - base, d.count(), d.is_dirty()))
            .collect();
        let dirty = self
            .guest
            .mem
            .regions()
            .iter()
            .enumerate()
            .flat_map(|(ri, r)| {
                let marked = r.pinned_pages().iter().enumerate();
                marked
                    .filter(|(_, p)| p.is_dirty())
                    .map(move |(pi, _)| (ri, pi))
            })
            .collect();
        Snapshot {
            views,
            hw,
            mapped,
            pages,
            dirty,
        }
    }

    /// Checks the invariants every state must keep; returns the first broken one.
    ///
    /// - every hardware TCE points inside a pinned page of the preregistered region its owner
    ///   address lies in, at the same offset;
    /// - each region's `mapped` equals the hardware entries pointing into it;
    /// - each page's count is 1 + pins (a mapping takes no reference: the pin holds the page).
    pub fn check(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        let regions = self.guest.mem.regions();
        let mut mapped = alloc::vec![0u64; regions.len()];
        let base = self.host.pages.base_pfn();
        let mut expect = alloc::vec![1u64; self.host.pages.len()];
        for r in regions {
            for p in r.pinned_pages() {
                for k in 0..1u64 << (r.page_shift() - PAGE_SHIFT) {
                    let pfn = p.hpa().pfn().0 + k - base;
                    expect[pfn as usize] += r.used().min(1);
                }
            }
        }
        for (n, t) in self.tables.iter().enumerate() {
            let tshift = t.table.page_shift();
            for i in 0..t.table.entries() {
                let (tce, owner) = HwTable::read(&*t.table, i);
                if tce & 3 == 0 {
                    if owner != 0 {
                        return Err(format!("table {n} entry {i}: owner {owner:#x} without TCE"));
                    }
                    continue;
                }
                let hpa = tce & !0xfff;
                let Some((ri, r)) = regions
                    .iter()
                    .enumerate()
                    .find(|(_, r)| r.translate(Ua(owner), tshift).is_ok())
                else {
                    return Err(format!(
                        "table {n} entry {i}: owner {owner:#x} not preregistered"
                    ));
                };
                let want = r.translate(Ua(owner), tshift).map(|p| p.hpa);
                if want != Ok(HostPhys(hpa)) {
                    return Err(format!(
                        "table {n} entry {i}: TCE {tce:#x} but pinned {want:x?}"
                    ));
                }
                mapped[ri] += 1;
                if !r.is_device() && self.host.offset_of(hpa).is_none() {
                    return Err(format!("table {n} entry {i}: {hpa:#x} outside RAM"));
                }
            }
        }
        for (ri, r) in regions.iter().enumerate() {
            if r.mapped() != mapped[ri] {
                return Err(format!(
                    "region {ri}: mapped {} but {} entries",
                    r.mapped(),
                    mapped[ri]
                ));
            }
        }
        for (pfn, d) in self.host.pages.iter() {
            let e = expect[(pfn - base) as usize];
            if d.count() != e {
                return Err(format!(
                    "page {:#x}: count {} expected {e}",
                    pfn - base,
                    d.count()
                ));
            }
        }
        Ok(())
    }

    /// Clears every window (virtual mode) and unregisters every region: afterwards every page
    /// count must be back at 1. Returns the first failure.
    pub fn teardown(&mut self) -> Result<(), alloc::string::String> {
        use alloc::format;
        let windows: Vec<(u64, u64, u64)> = self
            .guest
            .windows()
            .iter()
            .map(|w| (w.liobn(), w.bus_offset(), w.entries()))
            .collect();
        for (liobn, bus, entries) in windows {
            let r = self.call(Mode::Virtual, H_STUFF_TCE, [liobn, bus, 0, entries]);
            if r.0 != 0 {
                return Err(format!("stuff of window {liobn:#x} returned {}", r.0));
            }
            if self.guest.window(liobn).map(|w| w.hw_mapped()) != Some(0) {
                return Err(format!("window {liobn:#x} still maps hardware entries"));
            }
        }
        while let Some(r) = self.guest.mem.regions().first() {
            let (ua, size, used) = (r.ua(), r.size(), r.used());
            for _ in 0..used {
                self.guest
                    .mem
                    .unregister(vm(), ua, size, &self.host.pages)
                    .map_err(|e| format!("unregister {ua:#x}: {e:?}"))?;
            }
        }
        if let Some((pfn, d)) = self.host.pages.iter().find(|(_, d)| d.count() != 1) {
            return Err(format!("page {pfn:#x} count {} after teardown", d.count()));
        }
        Ok(())
    }
}
