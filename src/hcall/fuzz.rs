//! The fuzz harness of the hypercall dispatcher, shared by `cargo fuzz`
//! (`fuzz/fuzz_targets/hcall_dispatch.rs`), the corpus replay test (`tests/fuzz_corpus.rs`),
//! the oracle's own tests (`tests/hcall_fuzz_oracle.rs`) and the differential property test
//! (`tests/hcall_differential.rs`).
//!
//! Input bytes choose a guest memory layout (page sizes, table levels, compound pages), then up
//! to [`MAX_CALLS`] hypercalls with arbitrary-looking but mostly near-valid arguments and guest
//! memory writes ([`decode`]). A [`Harness`] runs them the kernel's way (real mode, virtual mode
//! on H_TOO_HARD) and reports a [`Finding`] if a [`Property`] breaks; anything that panics
//! propagates. [`run_one_with`] is the fuzz target's body: one harness per thread, a finding is
//! a panic.
//!
//! # Set up once, reset per input
//! A harness keeps one [`World`] per page size of the big preregistered region (the layout
//! choice that needs registering memory again), made on first use: its 2 MiB of RAM, memslots,
//! regions and page descriptors stay. An input adds, from scratch, only the windows its calls
//! name (a window no call names cannot be observed), each table new with only its top levels,
//! so real mode meets missing levels and guest-view pages exactly as in a new world; and marks
//! its compound page (new descriptors holding the regions' pins when a mark must come off).
//! Teardown brings the world back: entries cleared through the hypercalls, dirty marks
//! cleaned, windows and tables freed, the RAM words the guest wrote zeroed. An input's outcome
//! never depends on the inputs before it (`tests/hcall_fuzz_oracle.rs` checks it).
//!
//! # What is checked, and when
//! The [`oracle`] keeps a model of the state: an image of every entry of every hardware table
//! (both views), each region's mapped count, each RAM page's expected reference count and
//! flags, and the guest view of every window as the guest stored it.
//!
//! - After every call, what the call can have changed: the simulation records every index a
//!   handler exchanges in a hardware table (`sim::Recorded`, in front of every attached table)
//!   and every page descriptor it looks up (`SimHost` is the handlers' `PageDescriptors`); the
//!   oracle reads back exactly those entries (directly from the levels, as the PHB would) and
//!   pages, every region's mapped count, and the guest-view entries the call names. For tables,
//!   pages and regions this is complete: `HwTable::exchange` is the only way to change an entry
//!   of a table the handlers are given (they reach tables only through a window's `Attached`,
//!   which is the recorder); a page's count or flags change only through a `&PageDesc` that a
//!   lookup in that same call returned (the reference borrows the call's `Env`); the mapped
//!   counts are read whole. So after every call: codes are PAPR's (P2); if real mode declined,
//!   nothing it touched changed (P3); every changed hardware entry maps exactly the pinned page
//!   its owner address translates to (P4); the mapped counts (P5) match the model and every
//!   page looked up keeps its count (P6: mappings take no reference, the pin holds the page)
//!   and flags (P10); each pinned page whose writable mapping went is marked dirty in its
//!   region (P10); the named guest-view entries hold what the guest stored and H_GET_TCE
//!   returns it (P8). Page descriptors are looked up only to read a TCE list outside
//!   preregistered memory through the vmemmap walker, when the layout lets real mode walk the
//!   guest's tree (`Layout::rm_walk`).
//! - After every input, every guest-view entry (P8): views are not recorded, so a write
//!   outside the entries a call names shows only here.
//! - After the first input and every N-th ([`Harness::set_full_walk_every`]; every input in
//!   `cargo test`), the full walk: every level of every table read as the PHB walks it (top
//!   level, then each indirect entry's level, missing levels as zeros) and compared with the
//!   model image, every page's count and flags (P9: what the record cannot see, such as a table
//!   writing an entry it was not asked to), with a recount of the model from scratch on
//!   request. The record being complete for the handlers, the walk is there for the tables
//!   themselves.
//! - Teardown (P7): every run of non-zero entries cleared with H_STUFF_TCE in virtual mode
//!   (checked like any call), no hardware entry left, every region's mapped count 0, every page
//!   count and flag at its baseline (1 + pins), every region's dirty marks exactly where
//!   writable mappings went (P10; then cleaned); the regions are unregistered, and every count
//!   must then be 1, after every 256th input of a world ([`Harness::set_unregister_every`]).

pub mod oracle;

use super::sim::{vm, FaultyTable, Lie, World, H_TOO_HARD};
use super::{HcallResult, Mode, H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE};
use crate::mm::page::PG_COMPOUND;
use crate::mm::{PageDescriptors, Pfn};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use oracle::Model;

/// Most hypercalls decoded from one input. Each costs tens of microseconds of instrumented
/// handler and checking work (a window-2 batch, hundreds), so this bounds an execution's cost;
/// the first harness decoded up to 48 operations and ran about 24 inputs a second.
pub const MAX_CALLS: usize = 8;
/// Most operations (hypercalls and the guest's memory writes, which cost next to nothing)
/// decoded from one input.
pub const MAX_OPS: usize = 16;

/// Reads bytes, zeroes once exhausted.
///
/// The decoder's helpers are not inlined: each inlined copy would get coverage counters of its
/// own, and libFuzzer's per-execution cost grows with the counters an execution hits.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    #[inline(never)]
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    #[inline(never)]
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| (v << 8) | self.u8() as u64)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The guest memory layout an input chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Page shift of the big preregistered region (12 or 16).
    pub prereg_shift: u32,
    /// (page shift, levels) of window 2's hardware tables; page shift 0 = none.
    pub w2_tables: [(u32, u32); 2],
    /// Levels of window 1's table.
    pub w1_levels: u32,
    /// RAM page (4 KiB) index marked compound, if any: only the vmemmap walker's page
    /// reference minds it (pinned pages need no descriptor).
    pub compound: Option<u64>,
    /// Whether real mode can walk the guest's tree ([`World::rm_walk`]): a TCE list outside
    /// preregistered memory is then read in real mode through the walker.
    pub rm_walk: bool,
}

/// One decoded operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A hypercall with r4..r7.
    Call(u64, [u64; 4]),
    /// The guest writes a big-endian word at a guest physical address.
    Write(u64, u64),
}

/// Bytes of simulated RAM.
pub const RAM: u64 = 2 << 20;
const W2_BUS: u64 = 1 << 31;
/// Guest physical bases: preregistered RAM, memslot-only RAM, 4K-pinned RAM.
const GPAS: [u64; 3] = [0, 0x1000_0000, 0x2000_0000];
/// The memslots: (guest physical base, size, RAM offset).
pub const MEMSLOTS: [(u64, u64, u64); 3] = [
    (GPAS[0], 1 << 20, 0),
    (GPAS[1], 512 << 10, 1 << 20),
    (GPAS[2], 512 << 10, 3 << 19),
];
/// The windows: (LIOBN, bus offset, page shift, size).
pub const WINDOWS: [(u64, u64, u32, u64); 3] = [
    (1, 0, 12, 1 << 20),
    (2, W2_BUS, 16, 4 << 20),
    (3, 0, 12, 256 << 10),
];

#[inline(never)]
fn pick_gpa(b: &mut Bytes<'_>) -> u64 {
    let sel = b.u8();
    match sel % 8 {
        0..=4 => GPAS[(sel as usize / 8) % 3] + ((b.u8() as u64) << 12),
        5 => GPAS[0] + ((b.u8() as u64) << 16),
        6 => b.u64(),
        _ => GPAS[(sel as usize / 8) % 3] + (b.u8() as u64) * 8,
    }
}

#[inline(never)]
fn pick_liobn(b: &mut Bytes<'_>) -> u64 {
    match b.u8() % 8 {
        0..=2 => 1,
        3..=5 => 2,
        6 => 3,
        _ => b.u64(),
    }
}

#[inline(never)]
fn pick_ioba(b: &mut Bytes<'_>, liobn: u64) -> u64 {
    let sel = b.u8();
    let idx = b.u8() as u64;
    match (sel % 8, liobn) {
        (7, _) => b.u64(),
        (6, _) => idx << 12 | (sel as u64 & 0x7),
        (_, 2) => W2_BUS + ((idx % 80) << 16),
        _ => idx << 12,
    }
}

#[inline(never)]
fn pick_tce(b: &mut Bytes<'_>) -> u64 {
    let perm = b.u8();
    let v = pick_gpa(b);
    match perm % 8 {
        0 => 0,
        1..=5 => (v & !0xfff) | (perm as u64 % 4),
        6 => v | (perm as u64 % 4),
        _ => b.u64(),
    }
}

/// A batch size below `max`: one byte in four picks any (a window-2 batch touches 16
/// hardware entries per TCE per table, hundreds of microseconds of instrumented work at the
/// top of the range), the others 0 to 3 (enough to cross a level boundary or a page).
#[inline(never)]
fn pick_count(b: &mut Bytes<'_>, max: u64) -> u64 {
    let c = b.u8() as u64;
    if c >= 0xc0 {
        c % max
    } else {
        c % 4
    }
}

/// Decodes an input into a layout and operations.
pub fn decode(data: &[u8]) -> (Layout, Vec<Op>) {
    let mut ops = Vec::new();
    let layout = decode_into(data, &mut ops);
    (layout, ops)
}

/// [`decode`] into a caller's vector (cleared first), so a harness reuses one allocation.
pub fn decode_into(data: &[u8], ops: &mut Vec<Op>) -> Layout {
    ops.clear();
    let mut b = Bytes(data);
    let l0 = b.u8();
    let l1 = b.u8();
    let layout = Layout {
        prereg_shift: if l0 & 1 == 0 { 16 } else { 12 },
        w2_tables: [
            [(12, 1), (12, 3), (16, 2), (0, 0)][(l0 as usize >> 1) % 4],
            [(0, 0), (12, 2)][(l0 as usize >> 3) % 2],
        ],
        w1_levels: 1 + (l0 as u32 >> 4) % 3,
        // Every 8th page: all three RAM ranges, lists outside preregistered memory included.
        compound: (l1 & 0x80 != 0).then_some((l1 as u64 & 0x3f) * 8),
        rm_walk: l1 & 0x40 != 0,
    };
    let mut calls = 0;
    while !b.is_empty() && ops.len() < MAX_OPS && calls < MAX_CALLS {
        let kind = b.u8();
        let liobn = pick_liobn(&mut b);
        let op = match kind % 6 {
            0 | 1 => Op::Call(
                H_PUT_TCE,
                [liobn, pick_ioba(&mut b, liobn), pick_tce(&mut b), 0],
            ),
            2 => Op::Call(H_GET_TCE, [liobn, pick_ioba(&mut b, liobn), 0, 0]),
            3 => {
                let ioba = pick_ioba(&mut b, liobn);
                let v = if b.u8() % 4 == 0 { pick_tce(&mut b) } else { 0 };
                Op::Call(H_STUFF_TCE, [liobn, ioba, v, pick_count(&mut b, 40)])
            }
            4 => {
                let ioba = pick_ioba(&mut b, liobn);
                let list = pick_gpa(&mut b);
                let n = if kind & 0x80 != 0 {
                    600
                } else {
                    pick_count(&mut b, 24)
                };
                Op::Call(
                    H_PUT_TCE_INDIRECT,
                    [liobn, ioba, list & !0xff8 | (list & 0x8), n],
                )
            }
            _ => Op::Write(pick_gpa(&mut b) & !7, pick_tce(&mut b)),
        };
        calls += usize::from(matches!(op, Op::Call(..)));
        ops.push(op);
    }
    layout
}

/// Builds the world a layout describes (see [`configure_memory`] and [`configure_windows`]).
pub fn build(l: &Layout) -> World {
    let mut w = World::new(RAM);
    w.rm_walk = l.rm_walk;
    configure_memory(&mut w, l);
    if let Some(p) = l.compound {
        mark_compound(&mut w, p);
    }
    configure_windows(&mut w, l, Fault::None, [true; 3]);
    w
}

/// Gives a world without memslots and regions the layout's guest memory (the compound page is
/// [`mark_compound`]'s).
///
/// RAM 0..1M: gpa 0.., preregistered with `prereg_shift` pages; RAM 1M..1.5M: gpa 256M.., a
/// memslot only; RAM 1.5M..2M: gpa 512M.., preregistered with 4 KiB pages.
pub fn configure_memory(w: &mut World, l: &Layout) {
    for (gpa, size, off) in MEMSLOTS {
        w.memslot(gpa, size, off).expect("memslot");
    }
    w.prereg(0, 1 << 20, l.prereg_shift).expect("prereg");
    w.prereg(3 << 19, 512 << 10, 12).expect("prereg");
}

/// Marks RAM page `p` compound (part of a huge page: the walker's real-mode reference declines
/// it).
pub fn mark_compound(w: &mut World, p: u64) {
    let pfn = Pfn(w.host.pages.base_pfn() + p);
    w.host
        .pages
        .page(vm(), pfn)
        .expect("page")
        .set_flags(PG_COMPOUND);
}

/// Gives a world without windows the layout's windows, each table new (only its top levels
/// allocated). Window 1: 4 KiB pages at bus 0 (1 MiB); window 2: 64 KiB pages at 2 GiB
/// (4 MiB); window 3: no table. Only the windows `wanted` (by position) are made. With a fault
/// that needs one, window 1's table is a [`FaultyTable`], returned.
pub fn configure_windows(
    w: &mut World,
    l: &Layout,
    fault: Fault,
    wanted: [bool; 3],
) -> Option<Arc<FaultyTable>> {
    let [(l1, b1, s1, z1), (l2, b2, s2, z2), (l3, b3, s3, z3)] = WINDOWS;
    let mut faulty = None;
    if wanted[0] && fault.needs_faulty_table() {
        w.guest.create_window(l1, b1, s1, z1).expect("window 1");
        let t = w.attach_faulty(l1, 12, l.w1_levels).expect("window 1");
        if let Fault::Lie(lie) = fault {
            t.lie(lie);
        }
        faulty = Some(t);
    } else if wanted[0] {
        w.window(l1, b1, s1, z1, &[(12, l.w1_levels)])
            .expect("window 1");
    }
    if wanted[1] {
        let mut tables: heapless::Vec<(u32, u32), 2> = heapless::Vec::new();
        for t in l.w2_tables.iter().filter(|t| t.0 != 0) {
            let _ = tables.push(*t);
        }
        w.window(l2, b2, s2, z2, &tables).expect("window 2");
    }
    if wanted[2] {
        w.window(l3, b3, s3, z3, &[]).expect("window 3");
    }
    faulty
}

/// The windows (by position in [`WINDOWS`]) some call of `ops` names: the others cannot be
/// observed by the input, so a harness need not make them.
pub fn named_windows(ops: &[Op]) -> [bool; 3] {
    let mut named = [false; 3];
    for op in ops {
        if let Op::Call(_, args) = op {
            for (n, w) in named.iter_mut().zip(WINDOWS) {
                *n |= args[0] == w.0;
            }
        }
    }
    named
}

/// The properties the harness checks; a [`Finding`] names the one that broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Property {
    /// P2: a call returned a code that is not PAPR's (H_TOO_HARD included), or an r4 from a
    /// call that returns none.
    Code,
    /// P3: real mode declined (H_TOO_HARD) but changed state.
    DeclineChanged,
    /// P4: a hardware TCE maps something other than the pinned page its owner address
    /// translates to (or an owner without a TCE, or an owner outside preregistered memory).
    Pinned,
    /// P5: a region's mapped count differs from the hardware entries pointing into it.
    MappedCount,
    /// P6: a page's reference count differs from 1 + pins (hardware entries take none).
    PageCount,
    /// P7: teardown (clearing every window, unregistering every region) failed or did not
    /// bring every count back to its baseline.
    Teardown,
    /// P8: the guest view (what H_GET_TCE returns) differs from what the guest stored.
    GuestView,
    /// P9: the full walk found state the per-call record did not account for (an entry or a
    /// page changed without a recorded exchange or lookup).
    Unrecorded,
    /// P10: a pinned page whose writable mapping went is not marked dirty in its region, a page
    /// is marked that no writable mapping left, or a page descriptor's flags changed during an
    /// input (only unregistering hands dirty marks to descriptors).
    Dirty,
}

/// Where a finding was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Checking operation `n` of the input (0-based).
    Op(usize),
    /// The full walk at the end of the input.
    FullWalk,
    /// Teardown.
    Teardown,
}

/// A broken property: which, where, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The property.
    pub property: Property,
    /// Where.
    pub at: At,
    /// What was seen (the operation, the entry or page, the values).
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            At::Op(n) => write!(f, "op {n}: ")?,
            At::FullWalk => f.write_str("full walk: ")?,
            At::Teardown => f.write_str("teardown: ")?,
        }
        write!(f, "{:?}: {}", self.property, self.detail)
    }
}

/// A bug injected on purpose, for the harness's own tests: each must produce a [`Finding`] (or,
/// for `Lie(Lie::Panic)`, a panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// None: the code as it is.
    None,
    /// Window 1's table lies on every exchange.
    Lie(Lie),
    /// Every real-mode page descriptor lookup takes a reference nothing drops.
    LeakRmRef,
    /// The guest is told 9999 (H_TOO_HARD) as the result of operation `n`.
    Code(usize),
    /// After operation `n`, region 0's mapped count is one too high.
    NudgeMapped(usize),
    /// After operation `n`, window 1's guest view entry `.1` holds `.2`.
    NudgeView(usize, u64, u64),
    /// After operation `n`, region 0 marks the page at ua `.1` dirty.
    NudgeDirty(usize, u64),
    /// Window 1's table refuses the first exchange of the teardown.
    RefuseTeardown,
}

impl Fault {
    fn needs_faulty_table(self) -> bool {
        matches!(self, Fault::Lie(_) | Fault::RefuseTeardown)
    }
}

/// What an input did, to compare runs (see [`Harness::run`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Calls made.
    pub calls: u64,
    /// Calls real mode declined.
    pub declined: u64,
    /// Hash of every call's number, r3, r4 and completing mode, in order.
    pub digest: u64,
}

impl Outcome {
    fn add(&mut self, nr: u64, r: (i64, u64), via: Mode) {
        const PRIME: u64 = 0x100_0000_01b3;
        self.calls += 1;
        self.declined += u64::from(via == Mode::Virtual);
        for v in [nr, r.0 as u64, r.1, via as u64] {
            self.digest = (self.digest ^ v).wrapping_mul(PRIME);
        }
    }
}

/// Runs inputs against long-lived simulated hosts (see the module documentation).
pub struct Harness {
    /// One world per page shift of the big preregistered region (16, 12), made on first use.
    slots: [Option<alloc::boxed::Box<Slot>>; 2],
    /// The slot of the last input.
    last: usize,
    ops: Vec<Op>,
    full_every: u64,
    unregister_every: u64,
    self_check: bool,
    inputs: u64,
    fault: Fault,
}

/// One world with its model, kept between inputs.
struct Slot {
    world: World,
    model: Model,
    /// The world holds its memory layout, every count and flag at its baseline, no window;
    /// false when it must be rebuilt.
    ready: bool,
    /// The page the descriptors mark compound.
    compound: Option<u64>,
    /// Inputs run on this slot.
    inputs: u64,
    faulty: Option<Arc<FaultyTable>>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A harness whose full walk runs after every input and which unregisters its memory
    /// after every 256th input of a world.
    pub fn new() -> Self {
        Harness {
            slots: [None, None],
            last: 0,
            ops: Vec::new(),
            full_every: 1,
            unregister_every: 256,
            self_check: false,
            inputs: 0,
            fault: Fault::None,
        }
    }

    /// Runs the full walk after the first input and then every `n`-th (0: never). The
    /// per-call checks are complete for the handlers (see the module documentation); the
    /// walk also catches what the tables themselves might do behind the record.
    pub fn set_full_walk_every(&mut self, n: u64) {
        self.full_every = n;
    }

    /// Unregisters (and checks) a world's memory after every `n`-th input run on it (1: after
    /// every input, as the first harness did; at least 1).
    pub fn set_unregister_every(&mut self, n: u64) {
        self.unregister_every = n.max(1);
    }

    /// Recounts everything from scratch in every full walk (a check of the model itself).
    pub fn set_self_check(&mut self, on: bool) {
        self.self_check = on;
    }

    /// Injects `fault` into every input from now on (`Fault::None` removes it).
    pub fn inject(&mut self, fault: Fault) {
        self.fault = fault;
    }

    /// The world of the last input: reset after an input that passed, as it was where a
    /// finding stopped one.
    pub fn world(&self) -> &World {
        &self.slots[self.last].as_ref().expect("an input ran").world
    }

    /// Decodes and runs one input.
    pub fn run(&mut self, data: &[u8]) -> Result<Outcome, Finding> {
        let mut ops = core::mem::take(&mut self.ops);
        let layout = decode_into(data, &mut ops);
        let r = self.run_ops(&layout, &ops);
        self.ops = ops;
        r
    }

    /// Runs a layout and operations as one input.
    pub fn run_ops(&mut self, layout: &Layout, ops: &[Op]) -> Result<Outcome, Finding> {
        let full = self.full_every != 0 && self.inputs.is_multiple_of(self.full_every);
        self.inputs += 1;
        let k = usize::from(layout.prereg_shift != 16);
        self.last = k;
        let slot = self.slots[k].get_or_insert_with(|| {
            alloc::boxed::Box::new(Slot {
                world: World::new(RAM),
                model: Model::default(),
                ready: false,
                compound: None,
                inputs: 0,
                faulty: None,
            })
        });
        slot.model.self_check = self.self_check;
        let unregister = (slot.inputs + 1).is_multiple_of(self.unregister_every);
        slot.inputs += 1;
        slot.run(layout, ops, self.fault, full, unregister)
    }
}

impl Slot {
    /// See [`Harness::run_ops`]; `full`: walk everything at the end; `unregister`: unregister
    /// the memory once the input is torn down.
    fn run(
        &mut self,
        layout: &Layout,
        ops: &[Op],
        fault: Fault,
        full: bool,
        unregister: bool,
    ) -> Result<Outcome, Finding> {
        if !core::mem::replace(&mut self.ready, false) {
            self.rebuild(layout)?;
        }
        if self.compound != layout.compound {
            if self.compound.is_some() {
                // A mark cannot be taken off: new descriptors, holding the regions' pins.
                self.world.host.reset_pages();
                oracle::repin(&self.world);
            }
            if let Some(p) = layout.compound {
                mark_compound(&mut self.world, p);
            }
            self.compound = layout.compound;
        }
        self.model.set_compound(layout.compound);
        let w = &mut self.world;
        w.rm_walk = layout.rm_walk;
        // Windows no call names cannot be observed: only the others are made.
        self.faulty = configure_windows(w, layout, fault, named_windows(ops));
        w.host.leak_rm_ref.store(
            fault == Fault::LeakRmRef,
            core::sync::atomic::Ordering::Relaxed,
        );
        self.model.init(w);
        let mut out = Outcome::default();
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Write(gpa, v) => {
                    self.world.write_guest(gpa, v);
                }
                Op::Call(nr, args) => {
                    let (r, via) = self.call(fault, At::Op(n), Mode::Real, nr, args)?;
                    out.add(nr, r, via);
                }
            }
            self.after_op(fault, n);
        }
        let walked = if full {
            self.model.full_walk(&self.world)
        } else {
            self.model.walk_views(&self.world)
        };
        walked.map_err(|(property, detail)| Finding {
            property,
            at: At::FullWalk,
            detail,
        })?;
        self.teardown(fault)?;
        if unregister {
            // Every count is at its baseline: unregistering must succeed and leave every count
            // at 1 (the rest of P7); the memory is rebuilt for the next input.
            oracle::unregister_all(&mut self.world).map_err(|detail| Finding {
                property: Property::Teardown,
                at: At::Teardown,
                detail,
            })?;
            // Rebuilt within the input, so that it frees no more than it allocates (libFuzzer
            // takes the opposite for a leak and checks, at a cost).
            self.rebuild(layout)?;
        }
        self.ready = true;
        Ok(out)
    }

    /// A new world with `layout`'s memory and its baseline taken.
    fn rebuild(&mut self, layout: &Layout) -> Result<(), Finding> {
        self.world.reset();
        self.compound = None;
        configure_memory(&mut self.world, layout);
        self.model
            .set_baseline(&self.world)
            .map_err(|detail| Finding {
                property: Property::PageCount,
                at: At::Op(0),
                detail: format!("set-up: {detail}"),
            })
    }

    /// One call the kernel's way, starting in `first` mode, checked; returns (r3, r4) and the
    /// mode that completed it.
    fn call(
        &mut self,
        fault: Fault,
        at: At,
        first: Mode,
        nr: u64,
        args: [u64; 4],
    ) -> Result<((i64, u64), Mode), Finding> {
        let w = &self.world;
        let err = |property, detail| Finding {
            property,
            at,
            detail: format!("{nr:#x}{args:x?}: {detail}"),
        };
        let mut r = w.call(first, nr, args);
        let mut via = first;
        if r.0 == H_TOO_HARD && first == Mode::Real {
            self.model
                .unchanged(w, nr, args)
                .map_err(|e| err(Property::DeclineChanged, e))?;
            r = w.call(Mode::Virtual, nr, args);
            via = Mode::Virtual;
        }
        if let (Fault::Code(k), At::Op(n)) = (fault, at) {
            if k == n {
                r.0 = H_TOO_HARD;
            }
        }
        check_code(nr, r).map_err(|e| err(Property::Code, e))?;
        self.model.absorb(w).map_err(|(p, e)| err(p, e))?;
        self.model
            .guest_view(w, nr, args, r)
            .map_err(|e| err(Property::GuestView, e))?;
        Ok((r, via))
    }

    fn after_op(&mut self, fault: Fault, n: usize) {
        match fault {
            Fault::NudgeMapped(k) if k == n => {
                if let Some(r) = self.world.guest.mem.regions().first() {
                    r.mapped_inc();
                }
            }
            Fault::NudgeDirty(k, ua) if k == n => {
                if let Some(r) = self.world.guest.mem.regions().first() {
                    r.mark_dirty(crate::mm::Ua(ua));
                }
            }
            Fault::NudgeView(k, index, value) if k == n => {
                if let Some(win) = self.world.guest.window(WINDOWS[0].0) {
                    win.view().ensure(index);
                    win.view().set(index, value);
                }
            }
            _ => {}
        }
    }

    /// P7: clears, with H_STUFF_TCE in virtual mode, every run of guest indices whose guest
    /// view or hardware entries are not zero (each call checked like the input's own), then
    /// requires no hardware entry left, every region's mapped count 0 (so it could be
    /// unregistered: that is done, and checked, after every `unregister_every`-th input),
    /// every page count and flag back at its baseline once the dirty marks are cleaned, and
    /// every window removable. What is left is the state the next input starts from: the
    /// memory layout, counts and flags of a fresh world, no window, RAM as new.
    fn teardown(&mut self, fault: Fault) -> Result<(), Finding> {
        let fail = |detail: String| Finding {
            property: Property::Teardown,
            at: At::Teardown,
            detail,
        };
        if let (Fault::RefuseTeardown, Some(t)) = (fault, &self.faulty) {
            t.refuse_nth_exchange(1);
        }
        while let Some((liobn, ioba, count)) = self.model.next_run() {
            let (r, _) = self.call(
                fault,
                At::Teardown,
                Mode::Virtual,
                H_STUFF_TCE,
                [liobn, ioba, 0, count],
            )?;
            if r.0 != 0 {
                return Err(fail(format!(
                    "H_STUFF_TCE({liobn:#x}, {ioba:#x}, 0, {count}) returned {}",
                    r.0
                )));
            }
        }
        for win in self.world.guest.windows() {
            if win.hw_mapped() != 0 {
                return Err(fail(format!(
                    "window {:#x} still maps {} hardware entries",
                    win.liobn(),
                    win.hw_mapped()
                )));
            }
        }
        self.model.cleared(&self.world).map_err(fail)?;
        self.model.restore(&self.world).map_err(|detail| Finding {
            property: Property::Dirty,
            at: At::Teardown,
            detail,
        })?;
        self.faulty = None;
        self.world
            .remove_windows()
            .map_err(|e| fail(format!("removing the windows: {e:?}")))?;
        self.world.forget_writes();
        Ok(())
    }
}

/// P2: `r3` is a PAPR code a guest may see (never H_TOO_HARD), and r4 is 0 unless the call is
/// an H_GET_TCE that succeeded.
pub fn check_code(nr: u64, r: (i64, u64)) -> Result<(), String> {
    if HcallResult::from_code(r.0).is_none() {
        return Err(format!("returned {} to the guest", r.0));
    }
    if r.1 != 0 && !(nr == H_GET_TCE && r.0 == 0) {
        return Err(format!("returned r4 = {:#x} with r3 = {}", r.1, r.0));
    }
    Ok(())
}

/// Runs one input through this thread's harness and panics on a finding: the fuzz target's
/// body. The full walk runs after the thread's first input and then every `full_walk_every`-th
/// (1: every input).
#[cfg(not(target_os = "none"))]
pub fn run_one_with(data: &[u8], full_walk_every: u64) {
    std::thread_local! {
        static HARNESS: core::cell::RefCell<Harness> = core::cell::RefCell::new(Harness::new());
    }
    HARNESS.with(|h| {
        let mut h = h.borrow_mut();
        h.set_full_walk_every(full_walk_every);
        if let Err(f) = h.run(data) {
            panic!("{f}");
        }
    });
}

/// [`run_one_with`] with the full walk after every input.
#[cfg(not(target_os = "none"))]
pub fn run_one(data: &[u8]) {
    run_one_with(data, 1);
}
