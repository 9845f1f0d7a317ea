//! The PHB driver proven with real DMA: QEMU's `edu` device copies between RAM and its buffer
//! through the PHB's TCE translation, with each back end (OPAL calls and direct IODA register
//! programming) pointing the PHB at the tables.
//!
//! Every test is self-contained: it maps its device to its own PE, sets the windows it needs,
//! and at the end disables both windows of that PE and puts the device back in the reserved PE
//! (where skiboot leaves every requester ID), whatever the outcome. So test order does not
//! matter, and a table is never freed while a TVE still points at it (no DMA is in flight
//! between a test's last transfer and the clean-up: every transfer is waited for).
//!
//! Each DMA costs about 100 ms of QEMU virtual time: the tests use a few dozen in all.
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::UnsafeCell;

use crate::arch::ppc64::phb::{EduBar, Opal, PhbRegs, RealMemory};
use crate::arch::ppc64::pmu;
use crate::kernel::boot;
use crate::kernel::testing::{Figures, TestFailure, TestResult};
use crate::phb::bars::assign_bars;
use crate::phb::direct::{DirectBackend, DEFAULT_POLL_LIMIT};
use crate::phb::edu::{self, Edu};
use crate::phb::fdt::{parse_phbs, PhbInfo};
use crate::phb::glue::TableKill;
use crate::phb::hw::OpalConfig;
use crate::phb::opal::OpalBackend;
use crate::phb::pe::{DefaultWindow, PeGroup, TableFactory};
use crate::phb::regs::{tve_index, Tve};
use crate::phb::{Bdfn, DmaWindowTable, Kill, PhbDma};
use crate::tce::{
    GeometryError, HeapMemory, LockedVm, MayAlloc, TceError, TceGeometry, TcePerm, TceTable,
};
use crate::{kassert, kassert_eq, kbench, ktest};

/// The PE the tests put the edu device in (not the reserved PE, which is the last one).
const PE: u32 = 1;
/// Bus address bit 59 selects a PE's second TVE: the 64-bit window (window 1).
const WINDOW1_BUS: u64 = 1 << 59;
/// Bytes per transfer: well inside the edu buffer (QEMU 7.2 aborts on a transfer ending at
/// its end).
const LEN: u32 = 2048;
/// IO page shift of every table here.
const PAGE_SHIFT: u32 = 12;
const PAGE: usize = 1 << PAGE_SHIFT;
/// Edu command polls per transfer; `EduBar::relax` waits 10 us each, so about 2 s.
const EDU_POLLS: u32 = 200_000;
/// Locked-memory budget per table: both views of a 1 GiB window of 4K pages fit easily.
const TABLE_BUDGET: u64 = 64 << 20;

type KTable = TceTable<HeapMemory, LockedVm>;

fn fail(what: core::fmt::Arguments) -> TestFailure {
    TestFailure(format!("{what}"))
}

/// Adds context to a failure.
fn within<T>(what: &str, r: Result<T, TestFailure>) -> Result<T, TestFailure> {
    r.map_err(|TestFailure(m)| TestFailure(format!("{what}: {m}")))
}

// ---- back ends -------------------------------------------------------------------------------

/// The two ways of programming the PHB: they must behave the same.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Opal,
    Direct,
}

const KINDS: [Kind; 2] = [Kind::Opal, Kind::Direct];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Opal => "opal",
            Kind::Direct => "direct",
        }
    }
}

fn opal() -> Opal {
    // SAFETY: the kernel located OPAL before running any test; the tests keep every table
    // alive while a TVE points at it (see the module doc).
    unsafe { Opal::new() }
}

fn backend(kind: Kind, info: &PhbInfo) -> Box<dyn PhbDma> {
    match kind {
        Kind::Opal => Box::new(OpalBackend::new(opal(), info.opal_phb_id, info.num_pes)),
        Kind::Direct => {
            // SAFETY: `reg_base` is the PHB's register base from its `pciex@` node, and the
            // tests run on one CPU, one back end at a time.
            let regs = unsafe { PhbRegs::new(info.reg_base) };
            // SAFETY: the kernel runs with the MMU off; the direct back end touches only the
            // RTT that `RTT_BAR` points at.
            let mem = unsafe { RealMemory::new() };
            Box::new(DirectBackend::new(
                regs,
                mem,
                info.num_pes,
                DEFAULT_POLL_LIMIT,
            ))
        }
    }
}

// ---- the device ----------------------------------------------------------------------------

/// One PHB with an edu device below its root port, BARs assigned and the device probed.
struct Rig {
    info: PhbInfo,
    bdfn: Bdfn,
    edu: Edu<EduBar>,
}

fn phbs() -> Result<Vec<PhbInfo>, TestFailure> {
    let b = boot();
    // SAFETY: the FDT stays in place for the kernel's life (its range is kept out of the
    // heap) and is `total_size` bytes long.
    let blob = unsafe { core::slice::from_raw_parts(b.fdt_addr as *const u8, b.fdt.total_size()) };
    parse_phbs(blob).map_err(|e| fail(format_args!("parse_phbs: {e:?}")))
}

/// The `nth` PHB (in tree order) that has an edu device: BARs assigned behind its root port,
/// memory and bus mastering on, the device probed.
fn rig(nth: usize) -> Result<Rig, TestFailure> {
    let info = phbs()?
        .into_iter()
        .filter(|p| {
            p.functions
                .iter()
                .any(|f| f.vendor_id == edu::VENDOR_ID && f.device_id == edu::DEVICE_ID)
        })
        .nth(nth)
        .ok_or_else(|| {
            fail(format_args!(
                "no edu device on a {}th PHB (qemu-run.sh attaches one per PHB)",
                nth + 1
            ))
        })?;
    let root_port = info
        .functions
        .iter()
        .find(|f| f.bdfn.bus() == 0)
        .ok_or_else(|| {
            fail(format_args!(
                "PHB {:#x} lists no root port",
                info.opal_phb_id
            ))
        })?
        .bdfn;
    let o = opal();
    let cfg = OpalConfig::new(&o, info.opal_phb_id);
    let funcs = assign_bars(&cfg, root_port, &info.m32)
        .map_err(|e| fail(format_args!("assign_bars: {e:?}")))?;
    let f = funcs
        .iter()
        .find(|f| f.vendor_id == edu::VENDOR_ID && f.device_id == edu::DEVICE_ID)
        .ok_or_else(|| fail(format_args!("edu not found behind {root_port:?}")))?;
    let bar0 = f
        .bar(0)
        .ok_or_else(|| fail(format_args!("edu without BAR0")))?;
    let cpu = info
        .m32
        .pci_to_cpu(bar0.pci_addr)
        .ok_or_else(|| fail(format_args!("BAR0 {:#x} outside M32", bar0.pci_addr)))?;
    // SAFETY: `cpu` is where the M32 window shows BAR0, which assign_bars just assigned with
    // memory decode on and the root port's window open over it.
    let bar = unsafe { EduBar::new(cpu) };
    let edu = Edu::probe(bar, EDU_POLLS).map_err(|e| fail(format_args!("edu probe: {e:?}")))?;
    Ok(Rig {
        bdfn: f.bdfn,
        info,
        edu,
    })
}

impl Rig {
    fn to_device(&self, iova: u64) -> TestResult {
        self.edu
            .dma_to_device(iova, 0, LEN)
            .map_err(|e| fail(format_args!("edu DMA from IOVA {iova:#x}: {e:?}")))
    }

    fn to_ram(&self, iova: u64) -> TestResult {
        self.edu
            .dma_to_ram(0, iova, LEN)
            .map_err(|e| fail(format_args!("edu DMA to IOVA {iova:#x}: {e:?}")))
    }

    /// Disables both windows of `pe` and returns the device to the reserved PE.
    fn clean_up(&self, phb: &dyn PhbDma, pe: u32) -> TestResult {
        let r = [
            phb.unmap_window(pe, 0),
            phb.unmap_window(pe, 1),
            phb.set_pe(self.bdfn, self.info.reserved_pe),
        ];
        match r.iter().find_map(|r| r.err()) {
            Some(e) => Err(fail(format_args!("clean-up of PE {pe}: {e:?}"))),
            None => Ok(()),
        }
    }
}

/// Runs `case` with `kind`'s back end on the rig's PHB, then cleans up whatever happened.
fn each_back_end(rig: &Rig, case: impl Fn(Kind, &dyn PhbDma) -> TestResult) -> TestResult {
    for kind in KINDS {
        let phb = backend(kind, &rig.info);
        let r = case(kind, &*phb);
        let c = rig.clean_up(&*phb, PE);
        within(kind.name(), r)?;
        within(kind.name(), c)?;
    }
    Ok(())
}

// ---- DMA memory ------------------------------------------------------------------------------

/// One 4 KiB page of RAM that a device writes behind the compiler's back: accessed only
/// through volatile loads and stores of the cell's raw pointer.
#[repr(C, align(4096))]
struct PageBuf(UnsafeCell<[u8; PAGE]>);

struct DmaPage(Box<PageBuf>);

/// The byte a page filled with `fill` holds everywhere the DMA did not write.
const FILL: u8 = 0xee;

/// A recognisable byte pattern: `seed` distinguishes the back end and the phase, so a stale
/// copy from an earlier transfer never passes for a new one.
fn pattern(seed: u32, i: usize) -> u8 {
    let x = (i as u32).wrapping_mul(0x9e37_79b1) ^ seed.wrapping_mul(0x85eb_ca6b);
    (x >> 24) as u8 ^ (i as u8)
}

impl DmaPage {
    fn new() -> Self {
        // SAFETY: an all-zero byte array is a valid `PageBuf`.
        let b = unsafe { Box::<PageBuf>::new_zeroed().assume_init() };
        let p = DmaPage(b);
        p.fill(|_| FILL);
        p
    }

    /// The physical address (MMU off: the pointer).
    fn pa(&self) -> u64 {
        self.0 .0.get() as u64
    }

    fn fill(&self, f: impl Fn(usize) -> u8) {
        let base = self.0 .0.get() as *mut u8;
        for i in 0..PAGE {
            // SAFETY: `i` is inside the page; the cell allows writes through a shared reference.
            unsafe { base.add(i).write_volatile(f(i)) };
        }
    }

    /// Checks every byte against `want`.
    fn expect(&self, what: &str, want: impl Fn(usize) -> u8) -> TestResult {
        let base = self.0 .0.get() as *const u8;
        let mut bad = (0..PAGE).filter_map(|i| {
            // SAFETY: `i` is inside the page.
            let got = unsafe { base.add(i).read_volatile() };
            (got != want(i)).then_some((i, got))
        });
        if let Some((i, got)) = bad.next() {
            let more = bad.count();
            return Err(fail(format_args!(
                "{what}: byte {i:#x} is {got:#04x}, want {:#04x} ({more} more differ)",
                want(i)
            )));
        }
        Ok(())
    }

    /// Checks that the first `LEN` bytes hold `seed`'s pattern and the rest is untouched.
    fn expect_copy(&self, what: &str, seed: u32) -> TestResult {
        self.expect(what, |i| {
            if i < LEN as usize {
                pattern(seed, i)
            } else {
                FILL
            }
        })
    }
}

// ---- tables --------------------------------------------------------------------------------

fn new_table(bus_offset: u64, window_size: u64, levels: u32) -> Result<KTable, TestFailure> {
    let geo = TceGeometry::new(bus_offset, PAGE_SHIFT, window_size, levels)
        .map_err(|e| fail(format_args!("geometry: {e:?}")))?;
    TceTable::new(geo, 0, HeapMemory::new(), LockedVm::new(TABLE_BUDGET))
        .map_err(|e| fail(format_args!("table: {e:?}")))
}

/// The IOVA of entry `index`.
fn iova(table: &KTable, index: u64) -> u64 {
    table.bus_offset() + (index << table.page_shift())
}

fn map(table: &KTable, index: u64, page: &DmaPage, perm: TcePerm) -> TestResult {
    table
        .set(index..index + 1, page.pa(), perm, MayAlloc::Yes)
        .map_err(|e| fail(format_args!("map entry {index:#x}: {e:?}")))
}

/// Creates default tables the way the kernel does for its 32-bit window.
struct Factory;

#[derive(Debug)]
#[allow(dead_code)] // read through Debug in failure messages
enum FactoryError {
    Geometry(GeometryError),
    Table(TceError),
}

impl TableFactory for Factory {
    type Table = KTable;
    type Error = FactoryError;
    fn create(&self, node: u32, w: &DefaultWindow) -> Result<KTable, FactoryError> {
        let geo = TceGeometry::new(w.bus_offset, w.page_shift, w.window_size, w.levels)
            .map_err(FactoryError::Geometry)?;
        TceTable::new(geo, node, HeapMemory::new(), LockedVm::new(TABLE_BUDGET))
            .map_err(FactoryError::Table)
    }
}

/// Seeds: one per back end and step, so no two transfers carry the same bytes.
fn seed(kind: Kind, step: u32) -> u32 {
    (kind as u32 + 1) * 0x100 + step
}

// ---- the tests -----------------------------------------------------------------------------

/// RAM -> device -> RAM through a 3-level table in the 64-bit window: the bytes land on the
/// page the table names and nowhere else; a cleared and killed entry stops DMA; a disabled
/// window stops all of it.
fn dma_lands_where_table_says() -> TestResult {
    let rig = rig(0)?;
    each_back_end(&rig, |kind, phb| translate_case(&rig, kind, phb))
}
ktest!("phb.dma_lands_where_table_says", dma_lands_where_table_says);

fn translate_case(rig: &Rig, kind: Kind, phb: &dyn PhbDma) -> TestResult {
    let table = new_table(WINDOW1_BUS, 1 << 30, 3)?;
    // Entries on three different leaf levels (9 index bits per 4 KiB level).
    let (a, b, c) = (3u64, (5 << 9) | 7, (200 << 9) | 400);
    let (x, y, w, guard) = (
        DmaPage::new(),
        DmaPage::new(),
        DmaPage::new(),
        DmaPage::new(),
    );
    map(&table, a, &x, TcePerm::READ)?;
    map(&table, b, &y, TcePerm::WRITE)?;
    map(&table, c, &w, TcePerm::READ | TcePerm::WRITE)?;
    kassert_eq!(table.levels(), 3);
    kassert_eq!(
        table.allocated_bytes().hardware,
        5 * PAGE as u64,
        "top, one middle and three leaf levels: only what the walk needs"
    );

    phb.set_pe(rig.bdfn, PE)
        .map_err(|e| fail(format_args!("set_pe: {e:?}")))?;
    phb.map_window(PE, 1, &table)
        .map_err(|e| fail(format_args!("map_window: {e:?}")))?;

    // 1. X -> device through IOVA A, device -> Y through IOVA B.
    let p1 = seed(kind, 1);
    x.fill(|i| pattern(p1, i));
    rig.to_device(iova(&table, a))?;
    rig.to_ram(iova(&table, b))?;
    y.expect_copy("Y after the copy through A and B", p1)?;
    x.expect("X (only read)", |i| pattern(p1, i))?;
    w.expect("W (not addressed)", |_| FILL)?;
    guard.expect("an unmapped page", |_| FILL)?;

    // 2. Clear B and kill it: the device's write through B lands nowhere.
    table
        .clear(b..b + 1)
        .map_err(|e| fail(format_args!("clear: {e:?}")))?;
    phb.kill(Kill::Pages {
        pe: PE,
        bus_addr: iova(&table, b),
        page_shift: PAGE_SHIFT,
        npages: 1,
    })
    .map_err(|e| fail(format_args!("kill: {e:?}")))?;
    let p2 = seed(kind, 2);
    x.fill(|i| pattern(p2, i));
    rig.to_device(iova(&table, a))?;
    rig.to_ram(iova(&table, b))?;
    y.expect_copy("Y after a DMA through its cleared entry", p1)?;

    // 3. Control: the device did hold the new bytes, and C still translates.
    rig.to_ram(iova(&table, c))?;
    w.expect_copy("W through C", p2)?;

    // 4. With the window disabled nothing lands, even through entries still in the table.
    w.fill(|_| FILL);
    phb.unmap_window(PE, 1)
        .map_err(|e| fail(format_args!("unmap_window: {e:?}")))?;
    rig.to_ram(iova(&table, c))?;
    w.expect("W through C with the window disabled", |_| FILL)?;
    y.expect_copy("Y at the end", p1)?;
    guard.expect("an unmapped page at the end", |_| FILL)?;
    Ok(())
}

/// Ownership as VFIO does it on powernv: kernel default table in the 32-bit window, an
/// owner's table in the 64-bit window, then back to a fresh default table. The driver finds
/// its table through `PeGroup::device_table` in each phase, so the last phase fails unless
/// release updated the device's table.
fn ownership_take_and_release() -> TestResult {
    let rig = rig(0)?;
    each_back_end(&rig, |kind, phb| ownership_case(&rig, kind, phb))
}
ktest!("phb.ownership_take_and_release", ownership_take_and_release);

/// What a driver does for one 32- or 64-bit copy: map a source and a destination page in
/// `table` at `src`/`dst`, copy through the device, unmap and kill.
fn driver_copy(
    rig: &Rig,
    phb: &dyn PhbDma,
    table: &KTable,
    (src, dst): (u64, u64),
    seed: u32,
) -> TestResult {
    let (s, d) = (DmaPage::new(), DmaPage::new());
    s.fill(|i| pattern(seed, i));
    map(table, src, &s, TcePerm::READ)?;
    map(table, dst, &d, TcePerm::WRITE)?;
    let r = rig
        .to_device(iova(table, src))
        .and_then(|()| rig.to_ram(iova(table, dst)));
    let unmapped = table
        .clear(src..src + 1)
        .and_then(|()| table.clear(dst..dst + 1))
        .map_err(|e| fail(format_args!("unmap: {e:?}")))
        .and_then(|()| {
            phb.kill(Kill::Pe(PE))
                .map_err(|e| fail(format_args!("kill: {e:?}")))
        });
    r?;
    unmapped?;
    d.expect_copy("destination", seed)
}

fn ownership_case(rig: &Rig, kind: Kind, phb: &dyn PhbDma) -> TestResult {
    let dw = DefaultWindow {
        bus_offset: 0,
        window_size: 1 << 28,
        page_shift: PAGE_SHIFT,
        levels: 2,
    };
    let pe_err = |e| fail(format_args!("{e:?}"));
    let mut group =
        PeGroup::new(phb, rig.info.node, dw, &Factory, &[(rig.bdfn, PE)]).map_err(pe_err)?;
    let entries = (0x11, 0x2345);

    // Phase 1: the kernel owns the PE; 32-bit DMA through the default table.
    let first = group
        .device_table(rig.bdfn)
        .ok_or_else(|| fail(format_args!("no device table while kernel-owned")))?
        .clone();
    kassert!(iova(&first, entries.1) < 1 << 32, "a 32-bit IOVA");
    within(
        "kernel phase",
        driver_copy(rig, phb, &first, entries, seed(kind, 1)),
    )?;

    // Phase 2: an owner takes the PE and attaches its table as the 64-bit window.
    group.take_ownership::<FactoryError>(phb).map_err(pe_err)?;
    kassert!(group.device_table(rig.bdfn).is_none());
    let owner = Arc::new(new_table(WINDOW1_BUS, 1 << 30, 3)?);
    group
        .attach_table::<FactoryError>(phb, 1, owner.clone())
        .map_err(pe_err)?;
    within(
        "owner phase",
        driver_copy(rig, phb, &owner, entries, seed(kind, 2)),
    )?;
    // The 32-bit window is gone: a mapping in the old default table reaches nothing.
    let stale = DmaPage::new();
    map(&first, entries.1, &stale, TcePerm::WRITE)?;
    rig.to_ram(iova(&first, entries.1))?;
    stale.expect("a page mapped only in the torn-down default table", |_| {
        FILL
    })?;

    // Phase 3: released; a fresh default table, and the device's record points at it.
    group.release_ownership(phb, &Factory).map_err(pe_err)?;
    let fresh = group
        .device_table(rig.bdfn)
        .ok_or_else(|| fail(format_args!("no device table after release")))?
        .clone();
    kassert!(!Arc::ptr_eq(&fresh, &first), "release made a fresh table");
    kassert!(group
        .default_table()
        .is_some_and(|t| Arc::ptr_eq(t, &fresh)));
    // The PHB itself points at it, whichever back end programmed it: read the TVTs back
    // through the IODA registers.
    kassert_eq!(
        read_tve_direct(&rig.info, tve_index(PE, 0)).table_addr(),
        fresh.top_level_phys()
    );
    kassert_eq!(read_tve_direct(&rig.info, tve_index(PE, 1)), Tve::DISABLED);
    within(
        "released phase",
        driver_copy(rig, phb, &fresh, entries, seed(kind, 3)),
    )?;
    // And the old table is out of the path: the stale mapping still reaches nothing.
    rig.to_ram(iova(&first, entries.1))?;
    stale.expect("a page mapped only in the first default table", |_| FILL)?;
    Ok(())
}

/// The TVE at `index`, read back through IODA_ADDR/IODA_DATA0.
fn read_tve_direct(info: &PhbInfo, index: u32) -> Tve {
    // SAFETY: as in `backend`.
    let regs = unsafe { PhbRegs::new(info.reg_base) };
    // SAFETY: as in `backend`.
    let mem = unsafe { RealMemory::new() };
    DirectBackend::new(regs, mem, info.num_pes, DEFAULT_POLL_LIMIT).read_tve(index)
}

/// One table shared by two PEs: PE 1 of PHB 0 and PE 1 of PHB 1, each with an edu device
/// (Linux shares a VFIO container's tables across PHBs the same way). Both devices DMA
/// through it; an entry cleared once, with the kill sent to every PE the table is attached
/// to (`TableKill`, one per PHB), stops both, while their other entries keep working.
fn shared_table_two_pes() -> TestResult {
    let rigs = [rig(0)?, rig(1)?];
    for kind in KINDS {
        let phbs = [backend(kind, &rigs[0].info), backend(kind, &rigs[1].info)];
        let r = shared_case(&rigs, kind, [&*phbs[0], &*phbs[1]]);
        let c0 = rigs[0].clean_up(&*phbs[0], PE);
        let c1 = rigs[1].clean_up(&*phbs[1], PE);
        within(kind.name(), r)?;
        within(kind.name(), c0)?;
        within(kind.name(), c1)?;
    }
    Ok(())
}
ktest!("phb.shared_table_two_pes", shared_table_two_pes);

fn shared_case(rigs: &[Rig; 2], kind: Kind, phbs: [&dyn PhbDma; 2]) -> TestResult {
    let table = new_table(WINDOW1_BUS, 1 << 30, 3)?;
    // A: the shared source; B: the shared destination; C[n]: device n's own control page.
    let (a, b, c) = (0x21u64, (9 << 9) | 1, [(300 << 9) | 2, (301 << 9) | 3]);
    let (x, y) = (DmaPage::new(), DmaPage::new());
    let z = [DmaPage::new(), DmaPage::new()];
    map(&table, a, &x, TcePerm::READ)?;
    map(&table, b, &y, TcePerm::WRITE)?;
    for (&ci, zn) in c.iter().zip(&z) {
        map(&table, ci, zn, TcePerm::WRITE)?;
    }
    for (rig, phb) in rigs.iter().zip(phbs) {
        phb.set_pe(rig.bdfn, PE)
            .map_err(|e| fail(format_args!("set_pe: {e:?}")))?;
        phb.map_window(PE, 1, &table)
            .map_err(|e| fail(format_args!("map_window: {e:?}")))?;
    }
    // The hypercall layer's invalidation for this table: one per PHB, each over the PEs
    // the table is attached to there.
    let kills = phbs.map(|phb| TableKill::new(phb, vec![PE], PAGE_SHIFT, WINDOW1_BUS));

    // Both devices copy X to Y through the shared table.
    for (n, rig) in rigs.iter().enumerate() {
        let p = seed(kind, 1 + n as u32);
        x.fill(|i| pattern(p, i));
        y.fill(|_| FILL);
        rig.to_device(iova(&table, a))?;
        rig.to_ram(iova(&table, b))?;
        y.expect_copy(&format!("Y copied by device {n}"), p)?;
    }

    // Clear the shared destination entry once; kill it in every PE the table serves.
    table
        .clear(b..b + 1)
        .map_err(|e| fail(format_args!("clear: {e:?}")))?;
    for k in &kills {
        k.try_invalidate(b, 1)
            .map_err(|e| fail(format_args!("kill: {e:?}")))?;
    }
    y.fill(|_| FILL);
    for (n, rig) in rigs.iter().enumerate() {
        let p = seed(kind, 3 + n as u32);
        x.fill(|i| pattern(p, i));
        rig.to_device(iova(&table, a))?;
        rig.to_ram(iova(&table, b))?;
        y.expect(
            &format!("Y after device {n} wrote through the cleared entry"),
            |_| FILL,
        )?;
        // Control: the device did hold the new bytes, and its other entries still work.
        rig.to_ram(iova(&table, c[n]))?;
        z[n].expect_copy(&format!("device {n}'s control page"), p)?;
    }
    Ok(())
}

// ---- benchmark -----------------------------------------------------------------------------

/// Instructions per PE kill on PHB 0, through OPAL (firmware instructions included: the PMU
/// counts them too) and by direct register programming.
fn bench_kill(out: Figures) {
    const N: u64 = 32;
    let info = match phbs().map(|p| p.into_iter().next()) {
        Ok(Some(info)) => info,
        _ => {
            crate::kprintln!("phb.kill: no PHB");
            return;
        }
    };
    for kind in KINDS {
        let phb = backend(kind, &info);
        if let Err(e) = phb.kill(Kill::Pe(PE)) {
            crate::kprintln!("phb.kill.{}: {e:?}", kind.name());
            continue;
        }
        let (insns, failures) = pmu::count_instructions(|| {
            (0..N)
                .filter(|_| core::hint::black_box(phb.kill(Kill::Pe(PE))).is_err())
                .count()
        });
        if failures != 0 {
            crate::kprintln!("phb.kill.{}: {failures} kills failed", kind.name());
            continue;
        }
        let name: String = format!("phb.kill.{}.insns", kind.name());
        out(&name, insns / N, "insns");
    }
}
kbench!("phb.kill", bench_kill);
