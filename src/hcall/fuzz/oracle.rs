//! The fuzz harness's model of the simulated state, and its checks: one function per property,
//! each usable on its own on a deliberately broken state.
//!
//! The model is kept in step call by call from what the simulation recorded (see the harness
//! documentation in `super`): an image of both views of every hardware table, each region's
//! mapped count, each RAM page's expected reference count (1 + pins: a mapping takes none, the
//! pin holds the page) and flags, each pinned page's dirty mark in its region (set once a
//! writable mapping of it went), and each window's guest view as the guest stored it.

use super::super::sim::{SimTable, World, UA_BASE};
use super::super::window::VIEW_PAGE_ENTRIES;
use super::{Property, MEMSLOTS};
use crate::hcall::{HwTable, H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE, MAX_INDIRECT};
use crate::mm::{HostPhys, PageDesc, PageDescriptors, Pfn, Ua, PAGE_SHIFT};
use crate::tce::{Be64, TceMemory, TcePerm, TCE_INDIRECT};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The image of one attached table: both views, host order, as last checked.
#[derive(Default)]
struct TableModel {
    shift: u32,
    /// Bus address of entry 0.
    bus: u64,
    /// The model's view of the window it is attached to.
    view: usize,
    hw: Vec<u64>,
    owner: Vec<u64>,
    /// What each entry holds (see [`pack`]), as P4 found when it entered the image.
    holds: Vec<u32>,
}

/// [`Holds`] in 32 bits: 0 for none, else (region + 1) << 20 | (pinned page + 1, or 0 for
/// none).
fn pack(h: Holds) -> u32 {
    match h {
        None => 0,
        Some((r, p)) => ((r as u32 + 1) << 20) | p.map_or(0, |p| p as u32 + 1),
    }
}

fn unpack(v: u32) -> Holds {
    (v != 0).then(|| {
        let p = v & 0xf_ffff;
        ((v >> 20) as usize - 1, (p != 0).then(|| p as usize - 1))
    })
}

/// One window's guest view as the guest stored it.
#[derive(Default)]
struct ViewModel {
    liobn: u64,
    bus: u64,
    shift: u32,
    tces: Vec<u64>,
    /// Per guest index: hardware entries (any table, either view) under it that are not zero.
    held: Vec<u32>,
    /// Guest indices `lo..hi` outside which every guest-view and hardware entry is zero.
    span: (usize, usize),
}

impl ViewModel {
    /// Widens the span to cover guest index `i`.
    fn cover(&mut self, i: usize) {
        self.span = if self.span.0 >= self.span.1 {
            (i, i + 1)
        } else {
            (self.span.0.min(i), self.span.1.max(i + 1))
        };
    }

    /// Whether guest index `i` has a non-zero guest-view or hardware entry.
    fn busy(&self, i: usize) -> bool {
        self.tces[i] != 0 || self.held[i] != 0
    }
}

/// A finding's property and detail.
pub type Broken = (Property, String);

/// What the state should be (see the module documentation). Buffers are kept between inputs.
#[derive(Default)]
pub struct Model {
    /// One per attached table; only the first `ntables` are in use.
    tables: Vec<TableModel>,
    ntables: usize,
    /// One per window; only the first `nviews` are in use.
    views: Vec<ViewModel>,
    nviews: usize,
    /// Per region: hardware entries counted into it.
    mapped: Vec<u64>,
    /// Per RAM page: 1 + pins, its count whatever the hardware entries (they take no
    /// reference).
    baseline: Vec<u64>,
    /// Per RAM page: flags with no hardware entry ever made (the compound mark).
    baseline_flags: Vec<u32>,
    /// Per region, per pinned page: whether a writable mapping of it went this input (so the
    /// region must mark it dirty).
    dirty: Vec<Vec<bool>>,
    /// (region, pinned page) whose writable mappings went during the last call.
    dirtied: Vec<(usize, usize)>,
    /// Per RAM page: flags as last seen.
    flags: Vec<u32>,
    /// Hardware entries (either view) that are not zero.
    nonzero: u64,
    /// Recount everything from scratch in the full walk too (a check of the model itself).
    pub self_check: bool,
    // Scratch, kept for its allocation.
    idx: Vec<u64>,
    pages: Vec<u64>,
    image: Vec<u64>,
    recount_mapped: Vec<u64>,
}

/// What a hardware entry holds: the region it counts in and the pinned page of that region it
/// maps (none for device memory); `None` for an empty entry.
pub type Holds = Option<(usize, Option<usize>)>;

/// P4 for one entry of a table with pages of `1 << tshift`: an empty entry is all zero; a
/// mapping TCE's owner address lies in a preregistered region, translates there to exactly
/// the TCE's address, and (RAM) that address is the simulated RAM the owner address names.
pub fn check_pinned(w: &World, tshift: u32, tce: u64, owner: u64) -> Result<Holds, String> {
    if tce & 3 == 0 {
        if tce != 0 || owner != 0 {
            return Err(format!(
                "TCE {tce:#x} grants no access but owner is {owner:#x}"
            ));
        }
        return Ok(None);
    }
    let hpa = tce & !0xfff;
    let regions = w.guest.mem.regions();
    let Some((ri, r, page)) = regions
        .iter()
        .enumerate()
        .find_map(|(i, r)| Some((i, r, r.translate(Ua(owner), tshift).ok()?)))
    else {
        return Err(format!(
            "TCE {tce:#x}: owner {owner:#x} is not in a preregistered page of 2^{tshift} bytes"
        ));
    };
    if page.hpa != HostPhys(hpa) {
        return Err(format!(
            "TCE {tce:#x} but owner {owner:#x} is pinned at {:#x}",
            page.hpa.0
        ));
    }
    match r.is_device() {
        true => Ok(Some((ri, None))),
        false => {
            let named = owner
                .checked_sub(UA_BASE)
                .filter(|o| *o < w.host.size())
                .map(|o| w.host.hpa(o));
            if named != Some(hpa) {
                return Err(format!(
                    "TCE {tce:#x}: the device would reach host {hpa:#x}, owner {owner:#x} is RAM at {named:x?}"
                ));
            }
            w.host
                .offset_of(hpa)
                .ok_or_else(|| format!("TCE {tce:#x}: {hpa:#x} is outside RAM"))?;
            let pinned = (owner - r.ua().0) >> r.page_shift();
            Ok(Some((ri, Some(pinned as usize))))
        }
    }
}

/// P5: every region's mapped count equals `mapped`.
pub fn check_mapped(w: &World, mapped: &[u64]) -> Result<(), String> {
    for (ri, r) in w.guest.mem.regions().iter().enumerate() {
        let want = mapped.get(ri).copied().unwrap_or(0);
        if r.mapped() != want {
            return Err(format!(
                "region {ri}: mapped {} but {want} hardware entries",
                r.mapped()
            ));
        }
    }
    Ok(())
}

/// The descriptor of RAM page `p` (read directly: the harness's reads are not recorded).
fn desc(w: &World, p: u64) -> &PageDesc {
    w.host
        .pages
        .page(super::vm(), Pfn(w.host.pages.base_pfn() + p))
        .expect("a RAM page has a descriptor")
}

/// P6: the count of each RAM page in `pages` equals `expect` (its baseline).
pub fn check_pages(w: &World, pages: &[u64], expect: &[u64]) -> Result<(), String> {
    for &p in pages {
        let d = desc(w, p);
        if d.count() != expect[p as usize] {
            return Err(format!(
                "page {p:#x}: count {} expected {}",
                d.count(),
                expect[p as usize]
            ));
        }
    }
    Ok(())
}

/// How a view stores its leaf entries: the hardware view big-endian (the PHB reads it), the
/// owner view in CPU order (only software reads it). Indirect entries are big-endian in both.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LeafOrder {
    /// Big-endian (the hardware view).
    BigEndian,
    /// CPU order (the owner view).
    Cpu,
}

impl LeafOrder {
    fn value(self, raw: u64) -> u64 {
        match self {
            LeafOrder::BigEndian => Be64::from_raw(raw).to_cpu(),
            LeafOrder::Cpu => raw,
        }
    }
}

/// Every entry of one view of `t` (top level at `top`, leaves stored in `order`), read the way
/// the PHB walks the table: the top level, then the level each indirect entry points at, down
/// to the leaves; a missing level reads as zeros. Values in host order. `Err` names a
/// malformed indirect entry.
pub fn walk_view(
    t: &SimTable,
    top: u64,
    order: LeafOrder,
    out: &mut Vec<u64>,
) -> Result<(), String> {
    let g = t.geometry();
    out.clear();
    out.resize(g.entries() as usize, 0);
    walk_level(t, top, order, 0, 0, out)
}

fn walk_level(
    t: &SimTable,
    level: u64,
    order: LeafOrder,
    depth: u32,
    base: u64,
    out: &mut [u64],
) -> Result<(), String> {
    let g = t.geometry();
    // log2 of the entries one slot of this level covers.
    let cover = (g.levels() - 1 - depth) * g.level_bits();
    let left = g.entries() - base;
    let slots = if cover >= 64 {
        1
    } else {
        left.div_ceil(1 << cover).min(g.entries_per_level())
    };
    // SAFETY: for both loads: `level` is the table's top level or the address in a well-formed
    // indirect entry (checked below) of a level reached the same way: a live level of this
    // table, the same pointers its own walk follows (levels are freed only when the table
    // drops, and `t` is borrowed), allocated by its memory with the geometry's level size.
    // `slot` is below `entries_per_level`, so the address is an aligned entry inside it.
    let load = |slot: u64| unsafe { t.memory().load(level + slot * 8) };
    if depth + 1 == g.levels() {
        let out = &mut out[base as usize..(base + slots) as usize];
        for (slot, e) in (0..slots).zip(out.iter_mut()) {
            *e = order.value(load(slot));
        }
        return Ok(());
    }
    for slot in 0..slots {
        let e = Be64::from_raw(load(slot)).to_cpu();
        if e == 0 {
            continue;
        }
        let next = e & !0xfff;
        if e & 0xfff != TCE_INDIRECT || !next.is_multiple_of(g.level_size()) {
            return Err(format!(
                "depth {depth} slot {slot} of level {level:#x}: malformed indirect entry {e:#x}"
            ));
        }
        walk_level(t, next, order, depth + 1, base + (slot << cover), out)?;
    }
    Ok(())
}

/// Reads entries of one table directly from its levels, the way the PHB does (top level
/// down, through the indirect entries), keeping the leaf of the last index read per view so
/// that a run of indices in one leaf costs one walk. Raw values (host order).
struct Reader<'t> {
    t: &'t SimTable,
    /// (leaf number, leaf address or 0 where a level is missing) of each view.
    leaf: [(u64, u64); 2],
}

impl<'t> Reader<'t> {
    fn new(t: &'t SimTable) -> Self {
        Reader {
            t,
            leaf: [(u64::MAX, 0); 2],
        }
    }

    fn load(&self, addr: u64) -> u64 {
        // SAFETY: every address comes from `walk_to_leaf`/`read`: an entry (slot below
        // `entries_per_level`) of the table's top level or of a level found through
        // well-formed indirect entries: a live level of this table (levels are freed only when
        // the table drops; `t` is borrowed), as in `walk_level`.
        Be64::from_raw(unsafe { self.t.memory().load(addr) }).to_cpu()
    }

    /// The leaf holding entry `i` of the view whose top level is `top`, 0 where a level is
    /// missing.
    fn walk_to_leaf(&self, top: u64, i: u64) -> Result<u64, String> {
        let g = self.t.geometry();
        let mut level = top;
        for d in 0..g.levels() - 1 {
            let cover = (g.levels() - 1 - d) * g.level_bits();
            let slot = if cover >= 64 {
                0
            } else {
                (i >> cover) % g.entries_per_level()
            };
            let e = self.load(level + slot * 8);
            if e == 0 {
                return Ok(0);
            }
            let next = e & !0xfff;
            if e & 0xfff != TCE_INDIRECT || !next.is_multiple_of(g.level_size()) {
                return Err(format!(
                    "entry {i}: depth {d} slot {slot}: malformed indirect entry {e:#x}"
                ));
            }
            level = next;
        }
        Ok(level)
    }

    /// (TCE, owner) of entry `i`.
    fn read(&mut self, i: u64) -> Result<(u64, u64), String> {
        let g = self.t.geometry();
        let number = i >> g.level_bits();
        let slot = i % g.entries_per_level();
        let tops = [self.t.top_level_phys(), self.t.owner_top_level_phys()];
        let mut out = [0u64; 2];
        for v in 0..2 {
            if self.leaf[v].0 != number {
                self.leaf[v] = (number, self.walk_to_leaf(tops[v], i)?);
            }
            let leaf = self.leaf[v].1;
            out[v] = if leaf == 0 {
                0
            } else {
                // SAFETY: `leaf` is a live leaf level of this table (from `walk_to_leaf`) and
                // `slot` is below `entries_per_level`, as in `load`.
                let raw = unsafe { self.t.memory().load(leaf + slot * 8) };
                [LeafOrder::BigEndian, LeafOrder::Cpu][v].value(raw)
            };
        }
        Ok((out[0], out[1]))
    }
}

impl Model {
    /// Takes the baseline of a world whose memory was just configured (no window, no compound
    /// mark): per page 1 + the pins its regions hold, counted from the regions, and no flag.
    /// Checks the descriptors agree.
    pub fn set_baseline(&mut self, w: &World) -> Result<(), String> {
        let npages = w.host.pages.len();
        self.baseline.clear();
        self.baseline.resize(npages, 1);
        for_each_pinned(w, |p, pins| self.baseline[p] += pins)?;
        self.baseline_flags.clear();
        self.baseline_flags.resize(npages, 0);
        for (p, (_, d)) in w.host.pages.iter().enumerate() {
            if (d.count(), d.flags()) != (self.baseline[p], 0) {
                return Err(format!(
                    "page {p:#x}: (count, flags) {:?} after set-up, expected ({}, 0)",
                    (d.count(), d.flags()),
                    self.baseline[p]
                ));
            }
        }
        Ok(())
    }

    /// The baseline flags: the compound mark on page `compound` only.
    pub fn set_compound(&mut self, compound: Option<u64>) {
        self.baseline_flags.fill(0);
        if let Some(p) = compound {
            self.baseline_flags[p as usize] = crate::mm::page::PG_COMPOUND;
        }
    }

    /// Starts the model of a world whose windows were just configured: empty images and views,
    /// counts and flags at the baseline.
    pub fn init(&mut self, w: &World) {
        let windows = w.guest.windows();
        if self.views.len() < windows.len() {
            self.views.resize_with(windows.len(), ViewModel::default);
        }
        // Kept, not truncated: an input allocates no more than it frees.
        self.nviews = windows.len();
        for (v, win) in self.views.iter_mut().zip(windows) {
            v.liobn = win.liobn();
            v.bus = win.bus_offset();
            v.shift = win.page_shift();
            let n = win.entries() as usize;
            v.tces.clear();
            v.tces.resize(n, 0);
            v.held.clear();
            v.held.resize(n, 0);
            v.span = (0, 0);
        }
        self.ntables = w.tables.len();
        if self.tables.len() < self.ntables {
            self.tables.resize_with(self.ntables, TableModel::default);
        }
        for (m, t) in self.tables.iter_mut().zip(&w.tables) {
            let n = HwTable::entries(&*t.table) as usize;
            m.shift = HwTable::page_shift(&*t.table);
            m.bus = HwTable::bus_offset(&*t.table);
            m.view = self.views[..self.nviews]
                .iter()
                .position(|v| v.liobn == t.liobn)
                .expect("a table is attached to a window");
            m.hw.clear();
            m.hw.resize(n, 0);
            m.owner.clear();
            m.owner.resize(n, 0);
            m.holds.clear();
            m.holds.resize(n, 0);
        }
        let regions = w.guest.mem.regions();
        self.mapped.clear();
        self.mapped.resize(regions.len(), 0);
        self.dirty
            .resize_with(regions.len().max(self.dirty.len()), Vec::new);
        for (d, r) in self.dirty.iter_mut().zip(regions) {
            d.clear();
            d.resize(r.pinned_pages().len(), false);
        }
        self.dirtied.clear();
        self.flags.clone_from(&self.baseline_flags);
        self.nonzero = 0;
    }

    /// P3, after real mode declined: every entry it exchanged and every page it looked up is as
    /// the model says, every region's mapped count too, and the guest-view entries the call
    /// names. Drains the records.
    pub fn unchanged(&mut self, w: &World, nr: u64, args: [u64; 4]) -> Result<(), String> {
        for (ti, t) in w.tables.iter().enumerate() {
            self.idx.clear();
            if !t.recorded.touched.drain_into(&mut self.idx) {
                return Err(format!("table {ti}: the record overflowed"));
            }
            let m = &self.tables[ti];
            let mut r = Reader::new(&t.table);
            for &i in &self.idx {
                let now = r.read(i).map_err(|e| format!("table {ti}: {e}"))?;
                let was = (m.hw[i as usize], m.owner[i as usize]);
                if now != was {
                    return Err(format!(
                        "table {ti} entry {i}: (TCE, owner) {was:#x?} became {now:#x?}"
                    ));
                }
            }
        }
        check_mapped(w, &self.mapped)?;
        self.pages.clear();
        if !w.host.touched.drain_into(&mut self.pages) {
            return Err("page record overflowed".into());
        }
        check_pages(w, &self.pages, &self.baseline)?;
        for &p in &self.pages {
            let d = desc(w, p);
            if d.flags() != self.flags[p as usize] {
                return Err(format!(
                    "page {p:#x}: flags {:#x} became {:#x}",
                    self.flags[p as usize],
                    d.flags()
                ));
            }
        }
        if let Some((v, first, n)) = self.range(nr, args) {
            self.view_matches(w, v, first, n)?;
        }
        Ok(())
    }

    /// After a completed call: reads back every entry the handlers exchanged; each that changed
    /// must pass P4 and moves the model's counts; then P5 for every region and P6 for every
    /// page looked up or referenced by a changed entry. Drains the records.
    pub fn absorb(&mut self, w: &World) -> Result<(), Broken> {
        self.pages.clear();
        for (ti, t) in w.tables.iter().enumerate() {
            self.idx.clear();
            if !t.recorded.touched.drain_into(&mut self.idx) {
                return Err((
                    Property::Unrecorded,
                    format!("table {ti}: record overflowed"),
                ));
            }
            let m = &mut self.tables[ti];
            let mut r = Reader::new(&t.table);
            for &i in &self.idx {
                let now = r
                    .read(i)
                    .map_err(|e| (Property::Unrecorded, format!("table {ti}: {e}")))?;
                let was = (m.hw[i as usize], m.owner[i as usize]);
                if now == was {
                    continue;
                }
                let holds = check_pinned(w, m.shift, now.0, now.1)
                    .map_err(|e| (Property::Pinned, format!("table {ti} entry {i}: {e}")))?;
                if let Some((r, p)) = unpack(m.holds[i as usize]) {
                    self.mapped[r] -= 1;
                    // A device could write through the mapping that went.
                    if let Some(p) = p.filter(|_| was.0 & TcePerm::WRITE.bits() != 0) {
                        self.dirty[r][p] = true;
                        self.dirtied.push((r, p));
                    }
                }
                if let Some((r, _)) = holds {
                    self.mapped[r] += 1;
                }
                let (is, was_) = (now != (0, 0), was != (0, 0));
                self.nonzero = self.nonzero + u64::from(is) - u64::from(was_);
                m.hw[i as usize] = now.0;
                m.owner[i as usize] = now.1;
                m.holds[i as usize] = pack(holds);
                // An entry outside its window cannot be cleared by the guest: `nonzero` keeps it.
                let v = &mut self.views[m.view];
                let guest = (m.bus + (i << m.shift))
                    .checked_sub(v.bus)
                    .map(|o| o >> v.shift);
                if let Some(g) = guest.filter(|g| (*g as usize) < v.held.len()) {
                    let h = &mut v.held[g as usize];
                    *h = *h + u32::from(is) - u32::from(was_);
                    v.cover(g as usize);
                }
            }
        }
        check_mapped(w, &self.mapped).map_err(|e| (Property::MappedCount, e))?;
        check_dirty(w, &self.dirty, &self.dirtied).map_err(|e| (Property::Dirty, e))?;
        self.dirtied.clear();
        if !w.host.touched.drain_into(&mut self.pages) {
            return Err((Property::Unrecorded, "page record overflowed".into()));
        }
        check_pages(w, &self.pages, &self.baseline).map_err(|e| (Property::PageCount, e))?;
        for &p in &self.pages {
            let f = desc(w, p).flags();
            if f != self.flags[p as usize] {
                return Err((
                    Property::Dirty,
                    format!(
                        "page {p:#x}: flags {:#x} became {f:#x} (only unregistering marks a \
                         descriptor)",
                        self.flags[p as usize]
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The view (index into the model's views), first index and count a TCE call names, if
    /// its window, ioba and count are valid by the rules of PAPR and Linux (an independent
    /// statement of the handlers' argument checks).
    fn range(&self, nr: u64, a: [u64; 4]) -> Option<(usize, u64, u64)> {
        let n = match nr {
            H_PUT_TCE | H_GET_TCE => 1,
            H_STUFF_TCE => a[3],
            H_PUT_TCE_INDIRECT if a[3] <= MAX_INDIRECT && a[2].is_multiple_of(4096) => a[3],
            _ => return None,
        };
        let v = self.views[..self.nviews]
            .iter()
            .position(|v| v.liobn == a[0])?;
        let m = &self.views[v];
        let off = a[1].checked_sub(m.bus)?;
        if off % (1u64 << m.shift) != 0 {
            return None;
        }
        let first = off >> m.shift;
        let entries = m.tces.len() as u64;
        (first < entries && n <= entries - first).then_some((v, first, n))
    }

    /// Whether the guest view entries `first..first + n` of view `v` hold what the model says.
    fn view_matches(&self, w: &World, v: usize, first: u64, n: u64) -> Result<(), String> {
        let m = &self.views[v];
        let win = w
            .guest
            .window(m.liobn)
            .ok_or_else(|| format!("window {:#x} is gone", m.liobn))?;
        for i in first..first + n {
            let (got, want) = (win.view().get(i), m.tces[i as usize]);
            if got != want {
                return Err(format!(
                    "window {:#x} entry {i}: guest view holds {got:#x}, the guest stored {want:#x}",
                    m.liobn
                ));
            }
        }
        Ok(())
    }

    /// P8 after a call that returned `r`: a successful call had valid arguments (window, ioba,
    /// count, TCE bits, list placement); its stores go into the model (an H_PUT_TCE_INDIRECT
    /// list read from RAM as the guest wrote it); H_GET_TCE returns what the model holds; the
    /// named entries hold what the model says.
    pub fn guest_view(
        &mut self,
        w: &World,
        nr: u64,
        a: [u64; 4],
        r: (i64, u64),
    ) -> Result<(), String> {
        let tce_call = matches!(nr, H_PUT_TCE | H_GET_TCE | H_STUFF_TCE | H_PUT_TCE_INDIRECT);
        let Some((v, first, n)) = self.range(nr, a) else {
            if r.0 == 0 && tce_call {
                return Err("succeeded with an invalid window, ioba or count".into());
            }
            return Ok(());
        };
        if r.0 == 0 {
            let mask = (1u64 << self.views[v].shift) - 1;
            let bad_bits = |t: u64| t & mask & !3 != 0;
            match nr {
                H_PUT_TCE => {
                    if bad_bits(a[2]) {
                        return Err(format!("succeeded with TCE {:#x}", a[2]));
                    }
                    self.views[v].tces[first as usize] = a[2];
                    self.views[v].cover(first as usize);
                }
                H_STUFF_TCE => {
                    if a[2] & 3 != 0 || bad_bits(a[2]) {
                        return Err(format!("succeeded with value {:#x}", a[2]));
                    }
                    self.views[v].tces[first as usize..(first + n) as usize].fill(a[2]);
                    if n > 0 {
                        self.views[v].cover(first as usize);
                        self.views[v].cover((first + n - 1) as usize);
                    }
                }
                H_PUT_TCE_INDIRECT => {
                    let off = MEMSLOTS
                        .iter()
                        .find(|(gpa, size, _)| {
                            a[2] >= *gpa && a[2] - gpa <= size.saturating_sub(4096)
                        })
                        .map(|(gpa, _, off)| off + (a[2] - gpa))
                        .ok_or_else(|| format!("succeeded with list {:#x} outside memory", a[2]))?;
                    for i in 0..n {
                        let t = w.host.read_be64(off + 8 * i);
                        if bad_bits(t) {
                            return Err(format!("succeeded with list entry {i} = {t:#x}"));
                        }
                        self.views[v].tces[(first + i) as usize] = t;
                    }
                    if n > 0 {
                        self.views[v].cover(first as usize);
                        self.views[v].cover((first + n - 1) as usize);
                    }
                }
                _ => {
                    let want = self.views[v].tces[first as usize];
                    if r.1 != want {
                        return Err(format!("returned {:#x}, the guest stored {want:#x}", r.1));
                    }
                }
            }
        }
        self.view_matches(w, v, first, n)
    }

    /// The full walk: every table read as the PHB walks it and compared with the model image
    /// (P9); every page's count (P6) and flags (P9) and every region's mapped count (P5) as the
    /// model says; every guest-view entry (P8, [`Model::walk_views`]). Every entry of the image passed P4 when it
    /// entered the model and the regions do not change during an input, so the image passing
    /// means every entry passes P4; with `self_check`, P4 and the counts are also recounted
    /// from scratch, checking the model itself.
    pub fn full_walk(&mut self, w: &World) -> Result<(), Broken> {
        let unrecorded = |e: String| (Property::Unrecorded, e);
        for (ti, t) in w.tables.iter().enumerate() {
            let m = &self.tables[ti];
            let views = [
                (
                    "hardware",
                    t.table.top_level_phys(),
                    LeafOrder::BigEndian,
                    &m.hw,
                ),
                (
                    "owner",
                    t.table.owner_top_level_phys(),
                    LeafOrder::Cpu,
                    &m.owner,
                ),
            ];
            for (name, top, order, model) in views {
                walk_view(&t.table, top, order, &mut self.image)
                    .map_err(|e| unrecorded(format!("table {ti} {name} view: {e}")))?;
                if self.image != *model {
                    let i = (0..model.len())
                        .find(|&i| self.image[i] != model[i])
                        .unwrap_or(0);
                    return Err(unrecorded(format!(
                        "table {ti} entry {i}: the {name} view holds {:#x}, the record says {:#x}",
                        self.image[i], model[i]
                    )));
                }
            }
        }
        check_mapped(w, &self.mapped).map_err(|e| (Property::MappedCount, e))?;
        for (p, (_, d)) in w.host.pages.iter().enumerate() {
            if d.count() != self.baseline[p] {
                return Err((
                    Property::PageCount,
                    format!(
                        "page {p:#x}: count {} expected {}",
                        d.count(),
                        self.baseline[p]
                    ),
                ));
            }
            if d.flags() != self.flags[p] {
                return Err(unrecorded(format!(
                    "page {p:#x}: flags {:#x}, last seen {:#x}",
                    d.flags(),
                    self.flags[p]
                )));
            }
        }
        self.walk_views(w)?;
        if self.self_check {
            self.recount(w)?;
        }
        Ok(())
    }

    /// P8 for every entry of every guest view (part of the full walk, and run after every
    /// input on its own: a view is not recorded, so a write outside the entries a call names
    /// shows only here). A page of the view not allocated reads as zeros.
    pub fn walk_views(&self, w: &World) -> Result<(), Broken> {
        for (v, m) in self.views[..self.nviews].iter().enumerate() {
            let win = w.guest.window(m.liobn).ok_or_else(|| {
                (
                    Property::GuestView,
                    format!("window {:#x} is gone", m.liobn),
                )
            })?;
            for (k, chunk) in m.tces.chunks(VIEW_PAGE_ENTRIES).enumerate() {
                let first = (k * VIEW_PAGE_ENTRIES) as u64;
                let zero = !win.view().present(first);
                if zero && chunk.iter().all(|&t| t == 0) {
                    continue;
                }
                self.view_matches(w, v, first, chunk.len() as u64)
                    .map_err(|e| (Property::GuestView, e))?;
            }
        }
        Ok(())
    }

    /// P4 for every entry of the model image, and the mapped and page counts recounted from it
    /// and compared with the model's.
    fn recount(&mut self, w: &World) -> Result<(), Broken> {
        self.recount_mapped.clear();
        self.recount_mapped.resize(self.mapped.len(), 0);

        for (ti, m) in self.tables[..self.ntables].iter().enumerate() {
            for i in 0..m.hw.len() {
                let holds = check_pinned(w, m.shift, m.hw[i], m.owner[i])
                    .map_err(|e| (Property::Pinned, format!("table {ti} entry {i}: {e}")))?;
                if let Some((r, _)) = holds {
                    self.recount_mapped[r] += 1;
                }
            }
        }
        if self.recount_mapped != self.mapped {
            return Err((
                Property::Unrecorded,
                "the per-call model drifted from a recount".into(),
            ));
        }
        Ok(())
    }

    /// The next H_STUFF_TCE (liobn, ioba, count) the teardown needs: the first run of guest
    /// indices with a non-zero guest-view or hardware entry, in window order; `None` when every
    /// entry the guest can name is zero.
    pub fn next_run(&self) -> Option<(u64, u64, u64)> {
        self.views[..self.nviews].iter().find_map(|v| {
            let (start, end) = v.span;
            let lo = (start..end).find(|&i| v.busy(i))?;
            let hi = (lo..end).find(|&i| !v.busy(i)).unwrap_or(end);
            Some((v.liobn, v.bus + ((lo as u64) << v.shift), (hi - lo) as u64))
        })
    }

    /// Part of P7, after every window was cleared: no hardware entry is left and no region
    /// counts one.
    pub fn cleared(&self, w: &World) -> Result<(), String> {
        if self.nonzero != 0 {
            return Err(format!("{} hardware entries left", self.nonzero));
        }
        check_mapped(w, &[])
    }

    /// P10 at the end of an input, after `cleared`: every pinned page's dirty mark in its
    /// region is as the model says (marked exactly where a writable mapping went); then takes
    /// the marks off, as the owner would once it wrote the pages back.
    pub fn restore(&mut self, w: &World) -> Result<(), String> {
        for (ri, r) in w.guest.mem.regions().iter().enumerate() {
            for (pi, p) in r.pinned_pages().iter().enumerate() {
                let want = self
                    .dirty
                    .get(ri)
                    .and_then(|d| d.get(pi))
                    .copied()
                    .unwrap_or(false);
                if p.is_dirty() != want {
                    return Err(format!(
                        "region {ri} pinned page {pi}: dirty {}, the model says {want}",
                        p.is_dirty()
                    ));
                }
            }
            r.clean_dirty();
        }
        Ok(())
    }
}

/// P10 after a call: each (region, pinned page) in `pages` (their writable mappings went) is
/// marked dirty in its region.
pub fn check_dirty(w: &World, dirty: &[Vec<bool>], pages: &[(usize, usize)]) -> Result<(), String> {
    let regions = w.guest.mem.regions();
    for &(r, p) in pages {
        let marked = regions
            .get(r)
            .and_then(|x| x.pinned_pages().get(p))
            .is_some_and(|x| x.is_dirty());
        if marked != dirty[r][p] {
            return Err(format!(
                "region {r} pinned page {p}: a writable mapping went, dirty is {marked}"
            ));
        }
    }
    Ok(())
}

/// Calls `f(page, pins)` for every RAM page of every region backed by RAM: `pins` is 1 (a
/// region pins each page once, however many times it was registered).
fn for_each_pinned(w: &World, mut f: impl FnMut(usize, u64)) -> Result<(), String> {
    for r in w.guest.mem.regions() {
        for p in r.pinned_pages() {
            let h = p.hpa();
            let off = w
                .host
                .offset_of(h.0)
                .ok_or_else(|| format!("pinned page {:#x} outside RAM", h.0))?;
            for k in 0..1u64 << (r.page_shift() - PAGE_SHIFT) {
                f(((off >> PAGE_SHIFT) + k) as usize, r.used().min(1));
            }
        }
    }
    Ok(())
}

/// Gives new descriptors (count 1) the pins the regions hold, as registering did.
pub fn repin(w: &World) {
    let _ = for_each_pinned(w, |p, pins| {
        for _ in 0..pins {
            desc(w, p as u64).get();
        }
    });
}

/// The rest of P7: unregisters every region (each registration) and requires every page count
/// back at 1.
pub fn unregister_all(w: &mut World) -> Result<(), String> {
    while let Some(r) = w.guest.mem.regions().first() {
        let (ua, size, used) = (r.ua(), r.size(), r.used());
        for _ in 0..used {
            w.guest
                .mem
                .unregister(super::vm(), ua, size, &w.host.pages)
                .map_err(|e| format!("unregister {:#x}: {e:?}", ua.0))?;
        }
    }
    check_baseline(w)
}

/// Every page count is 1 + the pins of the regions (no hardware entry): P7's baseline while
/// the memory stays registered, counted from the regions alone.
pub fn check_baseline_pinned(w: &World) -> Result<(), String> {
    let mut want = alloc::vec![1u64; w.host.pages.len()];
    for_each_pinned(w, |p, pins| want[p] += pins)?;
    match w
        .host
        .pages
        .iter()
        .enumerate()
        .find(|(p, (_, d))| d.count() != want[*p])
    {
        Some((p, (_, d))) => Err(format!(
            "page {p:#x} count {}, baseline {}",
            d.count(),
            want[p]
        )),
        None => Ok(()),
    }
}

/// Every page count is 1 (no pin, no mapping).
pub fn check_baseline(w: &World) -> Result<(), String> {
    match w
        .host
        .pages
        .iter()
        .enumerate()
        .find(|(_, (_, d))| d.count() != 1)
    {
        Some((p, (_, d))) => Err(format!("page {p:#x} count {} after teardown", d.count())),
        None => Ok(()),
    }
}
