//! The four TCE hypercalls, one body each, run in real or virtual mode.
//!
//! Both modes share every check, in the same order, so they return the same code whenever real
//! mode finishes; real mode only adds exits with H_TOO_HARD, each taken before anything changed.
//! A batch goes through fixed phases:
//! 1. find the window, check ioba/npages, read each TCE once (the indirect list into a local
//!    array), validate and translate every TCE;
//! 2. take the window lock (real mode: try only);
//! 3. make the guest-view pages and hardware levels exist (real mode: check only);
//! 4. real mode: check that the replaced mappings fit the undo log (counted only when the
//!    batch touches more entries than the log holds);
//! 5. count the new entries into their regions. The reference model is Linux's: the
//!    preregistration pin holds each page, a mapping only counts in its region's `mapped`
//!    (which keeps the region from being unregistered), so nothing here can fail and no page
//!    descriptor is touched;
//! 6. exchange the hardware entries, logging the mappings they replace, or, if the table
//!    refused an exchange, put the logged entries back newest first, so the batch is all or
//!    nothing;
//! 7. kill each touched table's TCE cache once, and only then drop what the entries that went
//!    held (the old entries' counts, with the region's dirty mark on each page a writable one
//!    mapped; or, after a roll-back, the new ones' counts): a device may reach a page through
//!    a cached TCE until the kill completes. A failed kill answers H_HARDWARE and keeps every
//!    such count, for good (the region stays busy, its pages pinned).
#![forbid(unsafe_code)]

use super::window::{HwError, PutError, Window};
use super::{Env, Guest, HcallResult};
use crate::mm::guest::TranslateError;
use crate::mm::{ExecMode, GuestPhys, HostPhys, RealMode, Token, Ua};
use crate::tce::TcePerm;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

/// Most TCEs one H_PUT_TCE_INDIRECT may carry (one 4 KiB page of them).
pub const MAX_INDIRECT: u64 = 512;
/// Mapped hardware entries one real-mode batch may replace (the undo log lives on the stack:
/// 32 bytes each); a batch replacing more is left to virtual mode, whose log grows on the heap.
const RM_UNDO: usize = 512;
/// The permission bits a guest TCE may carry.
const PERM_BITS: u64 = TcePerm::READ.bits() | TcePerm::WRITE.bits();

/// How a handler step can end early: with an answer for the guest, or (real mode only) by
/// declining to virtual mode having changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit<D> {
    /// Return this to the guest.
    Guest(HcallResult),
    /// Real mode gives up; virtual mode's `D` is uninhabited.
    Decline(D),
}

impl<D> From<HcallResult> for Exit<D> {
    fn from(r: HcallResult) -> Self {
        Exit::Guest(r)
    }
}

/// A handler step's result in mode `M`.
pub(crate) type Step<M, T = ()> = Result<T, Exit<<M as ExecMode>::Decline>>;

/// Real mode: decline; virtual mode: answer the guest with `otherwise`.
fn decline_or<M: ExecMode>(m: M, otherwise: HcallResult) -> Exit<M::Decline> {
    match m.decline() {
        Some(d) => Exit::Decline(d),
        None => Exit::Guest(otherwise),
    }
}

/// Where a validated guest TCE points.
#[derive(Debug, Clone, Copy)]
struct Target {
    ua: Ua,
    hpa: HostPhys,
    /// Index in `GuestMemory::regions()`; `usize::MAX` when the window has no hardware table.
    region: usize,
    perm: u64,
}

fn find_window(g: &Guest, liobn: u64) -> Result<&Window, HcallResult> {
    g.window(liobn).ok_or(HcallResult::Parameter)
}

/// The window index of `ioba`, checked for alignment and that `npages` entries fit.
fn check_ioba(w: &Window, ioba: u64, npages: u64) -> Result<u64, HcallResult> {
    let mask = (1u64 << w.page_shift()) - 1;
    if ioba & mask != 0 || ioba < w.bus_offset() {
        return Err(HcallResult::Parameter);
    }
    let idx = (ioba - w.bus_offset()) >> w.page_shift();
    if idx >= w.entries() || npages > w.entries() - idx {
        return Err(HcallResult::Parameter);
    }
    Ok(idx)
}

/// The memslot and region the last translation of a batch used: tried first for the next
/// (same answers, fewer scans).
#[derive(Clone, Copy)]
struct Hints {
    memslot: usize,
    region: usize,
}

impl Hints {
    const NONE: Hints = Hints {
        memslot: usize::MAX,
        region: usize::MAX,
    };
}

/// Only R/W below the window page; a mapping TCE must point at guest memory that, when the
/// window feeds hardware, is preregistered and pinned with pages at least as large.
fn check_tce<M: ExecMode>(
    g: &Guest,
    m: M,
    w: &Window,
    tce: u64,
    hints: &mut Hints,
) -> Step<M, Option<Target>> {
    let page_mask = (1u64 << w.page_shift()) - 1;
    if tce & page_mask & !PERM_BITS != 0 {
        return Err(HcallResult::Parameter.into());
    }
    let perm = tce & PERM_BITS;
    if perm == 0 {
        return Ok(None);
    }
    let gpa = GuestPhys(tce & !page_mask);
    let ua = g
        .mem
        .gpa_to_ua_hinted(gpa, page_mask + 1, &mut hints.memslot)
        .ok_or(HcallResult::Parameter)?;
    if w.tables.is_empty() {
        return Ok(Some(Target {
            ua,
            hpa: HostPhys(0),
            region: usize::MAX,
            perm,
        }));
    }
    match g
        .mem
        .ua_to_hpa_hinted(ua, w.page_shift(), &mut hints.region)
    {
        Ok((region, hp)) => Ok(Some(Target {
            ua,
            hpa: hp.hpa,
            region,
            perm,
        })),
        Err(TranslateError::NotPreregistered) => Err(decline_or(m, HcallResult::Parameter)),
        Err(TranslateError::PageTooLarge) => Err(HcallResult::Parameter.into()),
    }
}

/// First hardware index of table `ti` and its entries per guest TCE, for window index `first`.
#[inline]
fn hw_span(w: &Window, ti: usize, first: u64) -> (u64, u64) {
    w.spans[ti].at(first)
}

/// Counts `entries` new hardware entries of target `t` into its region. The region's pin holds
/// the page (Linux's reference model): no page reference is taken, and nothing can fail.
fn acquire(g: &Guest, t: &Target, entries: u64) {
    g.mem.regions()[t.region].mapped_add(entries);
}

/// Undoes [`acquire`] of one entry.
fn unacquire(g: &Guest, t: &Target) {
    g.mem.regions()[t.region].mapped_dec();
}

/// Drops what an old hardware entry held: its count in its region and, if the device could
/// write the page, the region's dirty mark on it. Both are atomics in the region, reached
/// without the MMU: any mode can.
fn release(g: &Guest, tshift: u32, old: u64, owner: u64, hint: &mut usize) {
    let Some(r) = g.mem.region_for_hinted(Ua(owner), 1u64 << tshift, hint) else {
        debug_assert!(false, "mapped hardware entry outside preregistered memory");
        return;
    };
    r.mapped_dec();
    if old & TcePerm::WRITE.bits() != 0 {
        r.mark_dirty(Ua(owner));
    }
}

/// A mapped hardware entry a batch replaced: released once the batch commits, put back if it
/// fails.
#[derive(Debug, Clone, Copy)]
struct Replaced {
    /// Position in the window's tables.
    table: usize,
    index: u64,
    tce: u64,
    owner: u64,
}

/// The entries a batch replaced, in exchange order: a fixed stack array of `N`, spilling to the
/// heap in virtual mode only.
struct UndoLog<const N: usize> {
    fixed: heapless::Vec<Replaced, N>,
    spill: Vec<Replaced>,
}

impl<const N: usize> UndoLog<N> {
    fn new() -> Self {
        UndoLog {
            fixed: heapless::Vec::new(),
            spill: Vec::new(),
        }
    }

    /// Makes room for one more entry; real mode declines when full, virtual mode answers
    /// H_NO_MEM when the heap refuses.
    fn make_room<M: ExecMode>(&mut self, m: M) -> Step<M> {
        if !self.fixed.is_full() {
            return Ok(());
        }
        if let Some(d) = m.decline() {
            return Err(Exit::Decline(d));
        }
        self.spill
            .try_reserve(1)
            .map_err(|_| HcallResult::NoMem.into())
    }

    /// Whether `k` more entries are sure to fit without declining or allocating: in the fixed
    /// array, or (virtual mode) in heap room reserved now. Never declines: a `false` sends the
    /// caller the one-entry way, where `make_room` decides.
    fn has_room_for<M: ExecMode>(&mut self, m: M, k: usize) -> bool {
        let free = N - self.fixed.len();
        if k <= free {
            return true;
        }
        m.decline().is_none() && self.spill.try_reserve(k - free).is_ok()
    }

    /// Appends (after `make_room`).
    fn push(&mut self, r: Replaced) {
        if let Err(r) = self.fixed.push(r) {
            debug_assert!(
                self.spill.len() < self.spill.capacity(),
                "push without room"
            );
            self.spill.push(r);
        }
    }

    fn last(&self) -> Option<&Replaced> {
        self.spill.last().or(self.fixed.last())
    }

    fn pop(&mut self) -> Option<Replaced> {
        self.spill.pop().or_else(|| self.fixed.pop())
    }

    fn len(&self) -> usize {
        self.fixed.len() + self.spill.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Replaced> {
        self.fixed.iter().chain(self.spill.iter())
    }
}

/// The hardware TCE and owner for sub-entry `k` of a guest TCE's target (0s to clear).
fn hw_entry(t: Option<Target>, k: u64, tshift: u32) -> (u64, u64) {
    match t {
        Some(x) => ((x.hpa.0 + (k << tshift)) | x.perm, x.ua.0 + (k << tshift)),
        None => (0, 0),
    }
}

/// The TCEs of a batch: the same value `n` times (H_PUT_TCE, H_STUFF_TCE) or a list read once.
#[derive(Clone, Copy)]
enum Tces<'a> {
    Same(u64),
    List(&'a [u64]),
}

impl Tces<'_> {
    fn at(&self, i: u64) -> u64 {
        match self {
            Tces::Same(v) => *v,
            Tces::List(l) => l[i as usize],
        }
    }
}

/// Takes the window lock: a mode that can decline never waits.
fn lock_window<M: ExecMode>(w: &Window, m: M) -> Step<M, spin::MutexGuard<'_, ()>> {
    match m.decline() {
        Some(d) => w.lock.try_lock().ok_or(Exit::Decline(d)),
        None => Ok(w.lock.lock()),
    }
}

/// What a refused `prepare` answers: a level real mode may not allocate declines (virtual
/// mode allocates, so it never sees that), anything else is the guest's answer.
fn prepare_failed<M: ExecMode>(m: M, e: HwError) -> Exit<M::Decline> {
    match e {
        HwError::WouldAllocate => decline_or(m, HcallResult::Hardware),
        HwError::Refused => HcallResult::Hardware.into(),
        HwError::NoMem => HcallResult::NoMem.into(),
    }
}

/// Hardware (TCE, owner) pairs handed to or from a table as one run.
type RunBuf<const R: usize> = [(u64, u64); R];

/// Hardware entries a batch touches, at most, for it to run with a small frame.
const SMALL_BATCH: u64 = 8;

/// Validates then applies a batch of `n` TCEs from window index `first`.
///
/// One TCE in a window with one table of its page size (H_PUT_TCE's usual case) takes
/// [`update_one`]. A batch of at most [`SMALL_BATCH`] TCEs touching at most as many hardware
/// entries runs with room for that many in its frame; anything else with room for a whole
/// list and [`RM_UNDO`] replaced entries (37 KiB). The two differ in frame size only: the small
/// one's log can never fill (each entry touched logs at most once), and the large one is what
/// real mode's limits are stated for.
fn update<M: ExecMode>(g: &Guest, m: M, w: &Window, first: u64, n: u64, tces: Tces<'_>) -> Step<M> {
    if n == 1 && one_table_of_window_pages(w) {
        return update_one(g, m, w, first, tces.at(0));
    }
    let touched = w.spans.iter().fold(0u64, |acc, sp| {
        acc.saturating_add(n.saturating_mul(1u64 << sp.sub_shift))
    });
    if n <= SMALL_BATCH && touched <= SMALL_BATCH {
        // Room for every TCE and every hardware entry the batch touches.
        const S: usize = SMALL_BATCH as usize;
        update_in::<M, S, S, S>(g, m, w, first, n, tces)
    } else {
        update_in::<M, { MAX_INDIRECT as usize }, RM_UNDO, 64>(g, m, w, first, n, tces)
    }
}

/// Whether the window has one hardware table, of its own page size: one hardware entry per
/// guest TCE, [`update_one`]'s case.
#[inline]
fn one_table_of_window_pages(w: &Window) -> bool {
    w.spans.len() == 1 && w.spans[0].sub_shift == 0
}

/// [`update`] of one TCE in a window with one hardware table of the window's page size (one
/// hardware entry): the same checks and outcome as [`update_in`], written for that case (no
/// per-table or per-sub-entry loops, no undo log: a refused exchange changed nothing). The
/// region count is taken before the levels are checked rather than after, and given back if
/// they refuse: nothing can see the difference (unregistering needs the guest's memory
/// exclusively).
fn update_one<M: ExecMode>(g: &Guest, m: M, w: &Window, idx: u64, tce: u64) -> Step<M> {
    // 1. Validate.
    let mut hints = Hints::NONE;
    let target = check_tce(g, m, w, tce, &mut hints)?;
    // 2. The window lock.
    let _guard = lock_window(w, m)?;
    // 3. Guest-view page and hardware levels.
    if tce != 0 && !w.view.present(idx) {
        match m.decline() {
            Some(d) => return Err(Exit::Decline(d)),
            None => w.view.ensure(idx),
        }
    }
    let a = &w.tables[0];
    let t = &a.table;
    let tshift = w.spans[0].shift;
    let (h, _) = hw_span(w, 0, idx);
    // 4. Nothing to check: what the replaced entry holds can be dropped in any mode.
    // 5. The new entry counts into its region.
    if let Some(x) = &target {
        acquire(g, x, 1);
    }
    // 6. The hardware levels (step 3 for the table; real mode: check only) and the exchange,
    // one walk per view; a clear needs no level (a missing one holds nothing).
    let (new, owner) = hw_entry(target, 0, tshift);
    let exchanged = match target {
        Some(_) => t.prepare_exchange(h, new, owner, m.decline().is_none()),
        None => t.exchange(h, 0, 0).map_err(PutError::Exchange),
    };
    let old = match exchanged {
        Ok(old) => old,
        Err(e) => {
            // Nothing was exchanged: the new count goes back at once.
            if let Some(x) = &target {
                unacquire(g, x);
            }
            if let PutError::Prepare(e) = e {
                // Refused before anything could reach a device: nothing to kill.
                return Err(prepare_failed(m, e));
            }
            // A refused exchange: the kill is issued as for any stopped batch.
            if !kill_one(w, h) {
                g.stats.kill_failures.fetch_add(1, Ordering::Relaxed);
            }
            return Err(HcallResult::Hardware.into());
        }
    };
    // 7. Kill, then release what the old entry held.
    let replaced = Some(old).filter(|&(o, _)| o & PERM_BITS != 0);
    if new != 0 {
        w.hw_mapped.fetch_add(1, Ordering::AcqRel);
    }
    if replaced.is_some() {
        w.hw_mapped.fetch_sub(1, Ordering::AcqRel);
    }
    let killed = kill_one(w, h);
    if killed {
        if let Some((o, o_owner)) = replaced {
            release(g, tshift, o, o_owner, &mut hints.region);
        }
    } else {
        g.stats.kill_failures.fetch_add(1, Ordering::Relaxed);
    }
    let stored = w.view.set(idx, tce);
    debug_assert!(stored, "guest view page vanished under the window lock");
    if killed {
        Ok(())
    } else {
        Err(HcallResult::Hardware.into())
    }
}

/// [`update`] with room for `L` list targets, `U` replaced entries and `R` entries read at once
/// on the stack.
#[inline(never)]
fn update_in<M: ExecMode, const L: usize, const U: usize, const R: usize>(
    g: &Guest,
    m: M,
    w: &Window,
    first: u64,
    n: u64,
    tces: Tces<'_>,
) -> Step<M> {
    // 1. Validate every TCE before anything changes; translations are kept in a fixed-capacity
    // vector (not an array: initialising 512 slots would cost every single-TCE call).
    let mut list_targets: heapless::Vec<Option<Target>, L> = heapless::Vec::new();
    let single;
    let mut hints = Hints::NONE;
    let targets: &[Option<Target>] = match tces {
        Tces::Same(v) => {
            single = check_tce(g, m, w, v, &mut hints)?;
            core::slice::from_ref(&single)
        }
        Tces::List(l) => {
            for &v in l.iter() {
                let t = check_tce(g, m, w, v, &mut hints)?;
                if list_targets.push(t).is_err() {
                    // The caller bounds lists by MAX_INDIRECT; anything longer is the guest's.
                    return Err(HcallResult::Parameter.into());
                }
            }
            &list_targets
        }
    };
    // One target for every TCE, or one each: indexed with a stride of 0 or 1.
    let stride = usize::from(matches!(tces, Tces::List(_)));
    let target = |i: u64| targets[i as usize * stride];
    if n == 0 {
        return Ok(());
    }
    let maps = targets.iter().any(Option::is_some);

    // 2. The window lock: a mode that can decline never waits.
    let _guard = lock_window(w, m)?;

    // 3. Guest-view pages and hardware levels: virtual mode allocates what is missing, real
    // mode declines. (Only where a page is missing does each entry need a look.)
    if !w.view.present_run(first, n) {
        for i in 0..n {
            if tces.at(i) != 0 && !w.view.present(first + i) {
                match m.decline() {
                    Some(d) => return Err(Exit::Decline(d)),
                    None => w.view.ensure(first + i),
                }
            }
        }
    }
    if maps {
        let may_alloc = m.decline().is_none();
        for (ti, a) in w.tables.iter().enumerate() {
            let t = &a.table;
            let (hfirst, sub) = hw_span(w, ti, first);
            t.prepare(hfirst, n * sub, may_alloc)
                .map_err(|e| prepare_failed(m, e))?;
        }
    }

    // 4. Real mode: the mappings replaced must fit the undo log (RM_UNDO entries: a full
    // 512-TCE batch of replacements at equal page sizes stays in real mode). What they hold can
    // be dropped in any mode; only a batch touching more entries than the log holds is counted.
    if let Some(d) = m.decline() {
        let touched: u64 = w.spans.iter().map(|sp| n << sp.sub_shift).sum();
        if touched > U as u64 {
            let mut replaced = 0usize;
            let mut chunk = [(0u64, 0u64); R];
            for (ti, a) in w.tables.iter().enumerate() {
                let t = &a.table;
                let (hfirst, sub) = hw_span(w, ti, first);
                // Read in chunks, one table walk per leaf rather than per entry.
                let mut h = hfirst;
                while h < hfirst + n * sub {
                    let k = (hfirst + n * sub - h).min(R as u64) as usize;
                    t.read_run(h, &mut chunk[..k]);
                    replaced += chunk[..k].iter().filter(|e| e.0 & PERM_BITS != 0).count();
                    h += k as u64;
                }
            }
            if replaced > U {
                return Err(Exit::Decline(d));
            }
        }
    }

    // 5. Count the new entries into their regions (nothing can fail: the pins hold the pages).
    let per_tce: u64 = w.spans.iter().map(|sp| 1u64 << sp.sub_shift).sum();
    if maps && per_tce != 0 {
        for i in 0..n {
            if let Some(t) = target(i) {
                acquire(g, &t, per_tce);
            }
        }
    }

    // 6. Commit: exchange every entry that changes, logging the mappings replaced. `stop` is
    // where the table refused (or the log ran out of room): (table, position, exit). A run of
    // entries goes to the table in one call (one walk per leaf); a single entry alone.
    let mut log = UndoLog::<U>::new();
    let mut added = 0u64;
    let mut stop = None;
    // Run buffers, initialised on first use only (a single-entry batch never pays for them).
    let mut bufs: Option<(RunBuf<R>, RunBuf<R>)> = None;
    'tables: for (ti, a) in w.tables.iter().enumerate() {
        let t = &a.table;
        let (tshift, sub_shift) = (w.spans[ti].shift, w.spans[ti].sub_shift);
        let (hfirst, sub) = hw_span(w, ti, first);
        let mut p = 0;
        while p < n * sub {
            let h = hfirst + p;
            let k = (n * sub - p).min(R as u64) as usize;
            let logged = |log: &mut UndoLog<U>, index: u64, (old, old_owner): (u64, u64)| {
                if old & PERM_BITS != 0 {
                    log.push(Replaced {
                        table: ti,
                        index,
                        tce: old,
                        owner: old_owner,
                    });
                }
            };
            if k > 1 && log.has_room_for(m, k) {
                // Lazily: building the arrays is a memset of 2 * 16 * R bytes.
                #[allow(clippy::unnecessary_lazy_evaluations)]
                let (news, olds) = bufs.get_or_insert_with(|| ([(0, 0); R], [(0, 0); R]));
                // Entries already empty are exchanged with empty: no change, nothing logged.
                for (j, e) in news[..k].iter_mut().enumerate() {
                    let q = p + j as u64;
                    *e = hw_entry(target(q >> sub_shift), q & (sub - 1), tshift);
                }
                let done = match t.exchange_run(h, &news[..k], &mut olds[..k]) {
                    Ok(()) => k,
                    Err((j, _)) => j,
                };
                for j in 0..done {
                    added += u64::from(news[j].0 != 0);
                    logged(&mut log, h + j as u64, olds[j]);
                }
                if done < k {
                    stop = Some((ti, p + done as u64, Exit::Guest(HcallResult::Hardware)));
                    break 'tables;
                }
                p += k as u64;
                continue;
            }
            // Entries already empty are exchanged with empty too (as in a run, and in
            // `update_one`): no change, nothing logged.
            let (new, owner) = hw_entry(target(p / sub), p % sub, tshift);
            p += 1;
            if let Err(e) = log.make_room(m) {
                stop = Some((ti, p - 1, e));
                break 'tables;
            }
            match t.exchange(h, new, owner) {
                Ok(old) => {
                    added += u64::from(new != 0);
                    logged(&mut log, h, old);
                }
                Err(_) => {
                    stop = Some((ti, p - 1, Exit::Guest(HcallResult::Hardware)));
                    break 'tables;
                }
            }
        }
    }
    // 7. The PHB's TCE cache forgets the old entries *before* anything they held is given
    // back: a device may still reach a page through a cached TCE until the kill completes.
    let Some((ti, p, e)) = stop else {
        w.hw_mapped.fetch_add(added, Ordering::AcqRel);
        w.hw_mapped.fetch_sub(log.len() as u64, Ordering::AcqRel);
        let killed = kill(w, first, n, w.tables.len());
        if killed {
            let mut hint = usize::MAX;
            for r in log.iter() {
                let tshift = w.spans[r.table].shift;
                release(g, tshift, r.tce, r.owner, &mut hint);
            }
        } else {
            // The old pages may still be reachable: keep their references and mapped counts
            // for good (the region stays busy), and say so to the guest. The new entries are
            // in the table, so the guest view shows them.
            g.stats.kill_failures.fetch_add(1, Ordering::Relaxed);
        }
        let stored = w.view.set_run(first, n, |i| tces.at(i));
        debug_assert!(stored, "guest view page vanished under the window lock");
        return if killed {
            Ok(())
        } else {
            Err(HcallResult::Hardware.into())
        };
    };
    let clean = roll_back(g, w, first, n, &target, &mut log, ti, p);
    // The put-back entries' new values may be cached: kill before their counts go.
    if kill(w, first, n, ti + 1) && clean {
        for_exchanged(w, first, n, ti, p, &mut |pos, sub| {
            if let Some(x) = target(pos / sub) {
                unacquire(g, &x);
            }
        });
    } else {
        // Something may still reach those pages: keep what they hold, for good.
        g.stats.kill_failures.fetch_add(1, Ordering::Relaxed);
    }
    Err(e)
}

/// Calls `f(position, sub-entries per TCE)` for every position a stopped commit exchanged:
/// all of the tables before `stop_table`, and the first `stop_pos` of it.
fn for_exchanged(
    w: &Window,
    first: u64,
    n: u64,
    stop_table: usize,
    stop_pos: u64,
    f: &mut dyn FnMut(u64, u64),
) {
    for ti in 0..w.tables.len().min(stop_table + 1) {
        let (_, sub) = hw_span(w, ti, first);
        let done = if ti < stop_table { n * sub } else { stop_pos };
        for pos in 0..done {
            f(pos, sub);
        }
    }
}

/// [`kill`] of the one entry `h` of a window's only table ([`update_one`]'s case).
#[inline]
fn kill_one(w: &Window, h: u64) -> bool {
    let a = &w.tables[0];
    a.kill.invalidate(a.cookie, h, 1).is_ok()
}

/// Kills the TCE cache for the batch in the first `tables` tables; false if any kill failed.
fn kill(w: &Window, first: u64, n: u64, tables: usize) -> bool {
    let mut ok = true;
    for (ti, a) in w.tables[..tables].iter().enumerate() {
        let (hfirst, sub) = hw_span(w, ti, first);
        ok &= a.kill.invalidate(a.cookie, hfirst, n * sub).is_ok();
    }
    ok
}

/// Undoes a commit the table stopped at position `stop_pos` of table `stop_table`: puts back
/// the entries exchanged before it, newest first (the logged mapping, or empty where there was
/// none), and drops the new references of the positions never exchanged (no device ever saw
/// them). The exchanged positions' new references stay for the caller to drop after the TCE
/// kill. The mapped counts were not touched yet, so they stay. Should a table also refuse a
/// put-back, that entry keeps the batch's value and is accounted as committed, and what the
/// replaced mapping held is kept (it may be cached): returns false then.
#[allow(clippy::too_many_arguments)]
fn roll_back<const U: usize>(
    g: &Guest,
    w: &Window,
    first: u64,
    n: u64,
    target: &dyn Fn(u64) -> Option<Target>,
    log: &mut UndoLog<U>,
    stop_table: usize,
    stop_pos: u64,
) -> bool {
    let mut clean = true;
    for (ti, a) in w.tables.iter().enumerate().rev() {
        let t = &a.table;
        let tshift = w.spans[ti].shift;
        let (hfirst, sub) = hw_span(w, ti, first);
        let done = match ti.cmp(&stop_table) {
            core::cmp::Ordering::Less => n * sub,
            core::cmp::Ordering::Equal => stop_pos,
            core::cmp::Ordering::Greater => 0,
        };
        for p in (0..n * sub).rev() {
            let h = hfirst + p;
            let tgt = target(p / sub);
            let (new, _) = hw_entry(tgt, p % sub, tshift);
            if p >= done {
                // Never exchanged: only its count to give back.
                if let Some(x) = tgt {
                    unacquire(g, &x);
                }
                continue;
            }
            let logged = log.last().is_some_and(|r| r.table == ti && r.index == h);
            let (old, old_owner) = match (logged, new != 0) {
                (true, _) => log.pop().map_or((0, 0), |r| (r.tce, r.owner)),
                (false, true) => (0, 0),
                // Empty before and after: nothing to put back.
                (false, false) => continue,
            };
            if t.exchange(h, old, old_owner).is_err() {
                clean = false;
                if new != 0 {
                    w.hw_mapped.fetch_add(1, Ordering::AcqRel);
                }
                if old & PERM_BITS != 0 {
                    w.hw_mapped.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
    debug_assert!(log.len() == 0, "undo log not emptied by the roll-back");
    clean
}

/// Real mode, a TCE list outside preregistered memory: the guest page's host address from the
/// guest's page table, a reference on that page through the vmemmap walker (declining compound
/// pages, unreachable descriptors and free pages) held while the list is read, then dropped.
/// `None`: decline to virtual mode.
fn rm_read_unpinned_list(
    env: &Env<'_>,
    rm: RealMode,
    gpa: GuestPhys,
    list: &mut [u64],
) -> Option<()> {
    let hpa = env.mem.rm_gpa_to_hpa(rm, gpa)?;
    let d = env.pages.rm_page(rm, hpa.pfn())?;
    d.rm_get().ok()?;
    for (i, e) in list.iter_mut().enumerate() {
        *e = env.mem.phys_read_be64(rm, hpa.add(8 * i as u64)).to_cpu();
    }
    // We hold a reference on top of the page's own: this cannot be the last one.
    let put = d.rm_put();
    debug_assert!(put.is_ok(), "real-mode put of the list page refused");
    Some(())
}

/// H_PUT_TCE(liobn, ioba, tce): one guest TCE.
pub(crate) fn h_put_tce<M: ExecMode>(g: &Guest, m: M, liobn: u64, ioba: u64, tce: u64) -> Step<M> {
    let w = find_window(g, liobn)?;
    let idx = check_ioba(w, ioba, 1)?;
    if one_table_of_window_pages(w) {
        return update_one(g, m, w, idx, tce);
    }
    update(g, m, w, idx, 1, Tces::Same(tce))
}

/// H_GET_TCE(liobn, ioba): the guest TCE, in r4. The same in both modes: it reads only the
/// guest view, which lives in the linear map.
pub(crate) fn h_get_tce(g: &Guest, liobn: u64, ioba: u64) -> Result<u64, HcallResult> {
    let w = find_window(g, liobn)?;
    let idx = check_ioba(w, ioba, 1)?;
    Ok(w.view.get(idx))
}

/// H_STUFF_TCE(liobn, ioba, tce_value, npages): clears `npages` entries; the value may carry
/// no permission (H_STUFF_TCE never maps) and no bits below the window page.
pub(crate) fn h_stuff_tce<M: ExecMode>(
    g: &Guest,
    m: M,
    liobn: u64,
    ioba: u64,
    tce_value: u64,
    npages: u64,
) -> Step<M> {
    let w = find_window(g, liobn)?;
    let first = check_ioba(w, ioba, npages)?;
    if tce_value & PERM_BITS != 0 {
        return Err(HcallResult::Parameter.into());
    }
    update(g, m, w, first, npages, Tces::Same(tce_value))
}

/// H_PUT_TCE_INDIRECT(liobn, ioba, tce_list, npages): up to 512 TCEs read from a 4 KiB-aligned
/// guest page. Real mode reads the list through preregistered memory by physical address when
/// that page is covered and declines when it is not, whatever other memory is preregistered;
/// virtual mode reads it through the guest's `ua` mapping.
pub(crate) fn h_put_tce_indirect<M: ExecMode>(
    g: &Guest,
    env: &Env<'_>,
    m: M,
    liobn: u64,
    ioba: u64,
    tce_list: u64,
    npages: u64,
) -> Step<M> {
    let w = find_window(g, liobn)?;
    if npages > MAX_INDIRECT || tce_list & 0xfff != 0 {
        return Err(HcallResult::Parameter.into());
    }
    let first = check_ioba(w, ioba, npages)?;
    let ua = g
        .mem
        .gpa_to_ua(GuestPhys(tce_list), 0x1000)
        .ok_or(HcallResult::Parameter)?;
    // Each entry is read exactly once, into this array; validation and commit use the copy.
    // Only `npages` slots are written, and each once (the kernel's memset costs an
    // instruction a byte: zeroing first would cost a short list as much as a full one).
    let mut buf: heapless::Vec<u64, { MAX_INDIRECT as usize }> = heapless::Vec::new();
    match m.token() {
        Token::Real(rm) => match g.mem.ua_to_hpa(ua, 12) {
            Ok((_, hp)) => {
                for i in 0..npages {
                    let e = env.mem.phys_read_be64(rm, hp.hpa.add(8 * i)).to_cpu();
                    // Cannot fail: npages <= MAX_INDIRECT, the capacity.
                    let _ = buf.push(e);
                }
            }
            // Not preregistered, whatever else is: the slower way, still in real mode.
            Err(_) => {
                buf.resize(npages as usize, 0)
                    .map_err(|_| HcallResult::Parameter)?;
                rm_read_unpinned_list(env, rm, GuestPhys(tce_list), &mut buf)
                    .ok_or_else(|| decline_or(m, HcallResult::Parameter))?;
                g.stats
                    .indirect
                    .rm_list_walked
                    .fetch_add(1, Ordering::Relaxed);
            }
        },
        Token::Virt(v) => {
            for i in 0..npages {
                match env.mem.ua_read_be64(v, ua.add(8 * i)) {
                    Some(x) => {
                        // Cannot fail: npages <= MAX_INDIRECT, the capacity.
                        let _ = buf.push(x.to_cpu());
                    }
                    None => return Err(HcallResult::Parameter.into()),
                }
            }
        }
    }
    update(g, m, w, first, npages, Tces::List(&buf))
}
