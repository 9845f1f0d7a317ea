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
//! After every DMA that must not land, the test reads the PE's freeze state (EEH): PHB4
//! freezes a PE on a TCE fault or a DMA through a disabled window, and a frozen PE drops every
//! later DMA until the freeze is cleared. A freeze is reported on a line of its own and
//! cleared before the next DMA, so the tests hold whether or not the PHB freezes (QEMU's
//! model never does); a freeze that does not clear fails the test.
//!
//! Each back end claims the PHB for the length of one case (`pci::backend`), and the case
//! leaves the PHB as it found it, so the next back end may claim it.
//!
//! Each DMA costs about 100 ms of QEMU virtual time: the tests use a few dozen in all.
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;

use crate::arch::ppc64::icount::count_instructions;
use crate::kernel::pci::{
    self, backend, find_edu, iova, map, pattern, peek_tve, phbs, Backend, DmaPage, EduRig, KTable,
    Mismatch, PciError, PhbHandle, FILL, PAGE_SHIFT, WINDOW1_BUS,
};
use crate::kernel::testing::{fail, skip};
use crate::kernel::testing::{BenchResult, Figures, TestFailure, TestResult};
use crate::phb::dma::{configure_pe, recover_freeze};
use crate::phb::fdt::PhbInfo;
use crate::phb::glue::TableKill;
use crate::phb::pe::{DefaultWindow, PeGroup};
use crate::phb::regs::{tve_index, Tve};
use crate::phb::{DmaWindowTable, Kill, PeNum, PhbDma, PhbError, WindowId};
use crate::tce::TcePerm;
use crate::{kassert, kassert_eq, kbench, ktest};

/// The PE the tests put the edu device in (not the reserved PE, which is the last one).
pub(super) const PE: PeNum = PeNum(1);
const W1: WindowId = WindowId::DMA64;
const PAGE: usize = pci::PAGE;

impl From<PciError> for TestFailure {
    fn from(e: PciError) -> Self {
        TestFailure(format!("{e}"))
    }
}

/// Adds context to a failure.
pub(super) fn within<T>(what: &str, r: Result<T, TestFailure>) -> Result<T, TestFailure> {
    r.map_err(|TestFailure(m)| TestFailure(format!("{what}: {m}")))
}

/// `kind`'s back end for the PHB `info` describes, claimed until the handle drops.
pub(super) fn test_backend(kind: Backend, info: &PhbInfo) -> Result<PhbHandle, TestFailure> {
    // SAFETY: the tests keep every table alive while a TVE points at it, and leave the PHB
    // as they found it before the handle drops (see the module doc).
    Ok(unsafe { backend(kind, info) }?)
}

/// After a DMA that must not land: reads `pe`'s freeze state and, if the PHB froze the PE,
/// reports it (on a line of its own, PESTA/PESTB included) and clears it before the next
/// DMA. A freeze that does not clear fails the test.
pub(super) fn after_blocked_dma(
    rig: &EduRig,
    phb: &dyn PhbDma,
    pe: PeNum,
    what: &str,
) -> TestResult {
    match recover_freeze(phb, pe) {
        Ok(None) => Ok(()),
        Ok(Some(status)) => {
            // SAFETY: one CPU, no OPAL call in flight: the IODA registers are ours.
            let (a, b) = unsafe { pci::peek_pest(&rig.info, pe) };
            crate::kprintln!(
                "\n    {what}: {pe} was frozen ({:?}, {:?}; PESTA {a:#018x}, PESTB {b:#018x}): cleared",
                status.state,
                status.error
            );
            Ok(())
        }
        Err(e @ PhbError::StillFrozen { .. }) => Err(fail(format_args!(
            "{what}: the freeze did not clear: {e:?}"
        ))),
        Err(e) => Err(fail(format_args!("{what}: freeze status: {e:?}"))),
    }
}

/// The `nth` PHB with an edu device, set up (see `pci::find_edu`), or None if there is none
/// (`--edu 0`, or a real machine): the test then skips itself.
pub(super) fn rig(nth: usize) -> Result<Option<EduRig>, TestFailure> {
    Ok(find_edu(nth)?)
}

/// Why a test that needs QEMU's edu device skips itself.
pub(super) fn no_edu(nth: usize) -> TestResult {
    skip(format_args!(
        "needs {} of QEMU's edu devices, one per PHB (qemu-run.sh --edu N)",
        nth + 1
    ))
}

/// Runs `case` with `kind`'s back end on the rig's PHB, then cleans up whatever happened.
fn each_back_end(rig: &EduRig, case: impl Fn(Backend, &dyn PhbDma) -> TestResult) -> TestResult {
    for kind in Backend::ALL {
        let phb = within(kind.name(), test_backend(kind, &rig.info))?;
        let r = case(kind, &phb);
        let c = rig.clean_up(&phb, PE).map_err(TestFailure::from);
        within(kind.name(), r)?;
        within(kind.name(), c)?;
    }
    Ok(())
}

/// Page checks that fail the test, naming what was checked.
trait Expect {
    /// Checks every byte against `want`.
    fn expect(&self, what: &str, want: impl Fn(usize) -> u8) -> TestResult;
    /// Checks that the first `LEN` bytes hold `seed`'s pattern and the rest is untouched.
    fn expect_copy(&self, what: &str, seed: u32) -> TestResult;
}

fn page_check(what: &str, r: Result<(), Mismatch>) -> TestResult {
    r.map_err(|m| fail(format_args!("{what}: {m}")))
}

impl Expect for DmaPage {
    fn expect(&self, what: &str, want: impl Fn(usize) -> u8) -> TestResult {
        page_check(what, self.check(want))
    }
    fn expect_copy(&self, what: &str, seed: u32) -> TestResult {
        page_check(what, self.check_copy(seed))
    }
}

/// A 4K-page table on node 0.
fn new_table(bus_offset: u64, window_size: u64, levels: u32) -> Result<KTable, TestFailure> {
    Ok(pci::new_table(
        0,
        bus_offset,
        PAGE_SHIFT,
        window_size,
        levels,
    )?)
}

/// Creates default tables the way the kernel does for its 32-bit window.
pub(super) use crate::kernel::device::Factory;

/// Seeds: one per back end and step, so no two transfers carry the same bytes.
pub(super) fn seed(kind: Backend, step: u32) -> u32 {
    (kind as u32 + 1) * 0x100 + step
}

// ---- the tests -----------------------------------------------------------------------------

/// RAM -> device -> RAM through a 3-level table in the 64-bit window: the bytes land on the
/// page the table names and nowhere else; a cleared and killed entry stops DMA; a disabled
/// window stops all of it.
fn dma_lands_where_table_says() -> TestResult {
    let Some(rig) = rig(0)? else {
        return no_edu(0);
    };
    each_back_end(&rig, |kind, phb| translate_case(&rig, kind, phb))
}
ktest!("phb.dma_lands_where_table_says", dma_lands_where_table_says);

fn translate_case(rig: &EduRig, kind: Backend, phb: &dyn PhbDma) -> TestResult {
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

    configure_pe(phb, rig.bdfn, PE).map_err(|e| fail(format_args!("configure_pe: {e:?}")))?;
    phb.map_window(PE, W1, &table)
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
    after_blocked_dma(rig, phb, PE, "a write through a cleared entry")?;
    y.expect_copy("Y after a DMA through its cleared entry", p1)?;

    // 3. Control: the device did hold the new bytes, and C still translates.
    rig.to_ram(iova(&table, c))?;
    w.expect_copy("W through C", p2)?;

    // 4. With the window disabled nothing lands, even through entries still in the table.
    w.fill(|_| FILL);
    phb.unmap_window(PE, W1)
        .map_err(|e| fail(format_args!("unmap_window: {e:?}")))?;
    rig.to_ram(iova(&table, c))?;
    after_blocked_dma(rig, phb, PE, "a write through a disabled window")?;
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
    let Some(rig) = rig(0)? else {
        return no_edu(0);
    };
    each_back_end(&rig, |kind, phb| ownership_case(&rig, kind, phb))
}
ktest!("phb.ownership_take_and_release", ownership_take_and_release);

/// What a driver does for one 32- or 64-bit copy: map a source and a destination page in
/// `table` at `src`/`dst`, copy through the device, unmap and kill.
pub(super) fn driver_copy(
    rig: &EduRig,
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

fn ownership_case(rig: &EduRig, kind: Backend, phb: &dyn PhbDma) -> TestResult {
    let dw = DefaultWindow {
        bus_offset: 0,
        window_size: 1 << 28,
        page_shift: PAGE_SHIFT,
        levels: 2,
    };
    let pe_err = |e| fail(format_args!("{e:?}"));
    let mut group =
        PeGroup::new(phb, rig.info.node, dw, &Factory, &[(rig.bdfn, PE)]).map_err(pe_err)?;
    // Set-up cleared any freeze and put the PE in its own PELT-V.
    kassert!(!phb
        .freeze_status(PE)
        .map_err(|e| fail(format_args!("{e:?}")))?
        .is_frozen());
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
    group.take_ownership::<PciError>(phb).map_err(pe_err)?;
    kassert!(group.device_table(rig.bdfn).is_none());
    let owner = Arc::new(new_table(WINDOW1_BUS, 1 << 30, 3)?);
    group
        .attach_table::<PciError>(phb, W1, owner.clone())
        .map_err(pe_err)?;
    within(
        "owner phase",
        driver_copy(rig, phb, &owner, entries, seed(kind, 2)),
    )?;
    // The 32-bit window is gone: a mapping in the old default table reaches nothing.
    let stale = DmaPage::new();
    map(&first, entries.1, &stale, TcePerm::WRITE)?;
    rig.to_ram(iova(&first, entries.1))?;
    after_blocked_dma(rig, phb, PE, "a write through the torn-down 32-bit window")?;
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
        read_tve(&rig.info, tve_index(PE.0, 0)).table_addr(),
        fresh.top_level_phys()
    );
    kassert_eq!(read_tve(&rig.info, tve_index(PE.0, 1)), Tve::DISABLED);
    within(
        "released phase",
        driver_copy(rig, phb, &fresh, entries, seed(kind, 3)),
    )?;
    // And the old table is out of the path: the stale mapping still reaches nothing.
    rig.to_ram(iova(&first, entries.1))?;
    after_blocked_dma(rig, phb, PE, "a write through the first default table")?;
    stale.expect("a page mapped only in the first default table", |_| FILL)?;
    Ok(())
}

/// The TVE at `index`, read back through IODA_ADDR/IODA_DATA0 whichever back end holds the
/// PHB.
fn read_tve(info: &PhbInfo, index: u32) -> Tve {
    // SAFETY: one CPU, no OPAL call in flight: the IODA registers are ours for the read.
    unsafe { peek_tve(info, index) }
}

/// One table shared by two PEs: PE 1 of PHB 0 and PE 1 of PHB 1, each with an edu device
/// (Linux shares a VFIO container's tables across PHBs the same way). Both devices DMA
/// through it; an entry cleared once, with the kill sent to every PE the table is attached
/// to (`TableKill`, one per PHB), stops both, while their other entries keep working.
fn shared_table_two_pes() -> TestResult {
    let (Some(r0), Some(r1)) = (rig(0)?, rig(1)?) else {
        return no_edu(1);
    };
    let rigs = [r0, r1];
    for kind in Backend::ALL {
        let phbs = [
            within(kind.name(), test_backend(kind, &rigs[0].info))?,
            within(kind.name(), test_backend(kind, &rigs[1].info))?,
        ];
        let r = shared_case(&rigs, kind, [&phbs[0], &phbs[1]]);
        let c0 = rigs[0].clean_up(&phbs[0], PE).map_err(TestFailure::from);
        let c1 = rigs[1].clean_up(&phbs[1], PE).map_err(TestFailure::from);
        within(kind.name(), r)?;
        within(kind.name(), c0)?;
        within(kind.name(), c1)?;
    }
    Ok(())
}
ktest!("phb.shared_table_two_pes", shared_table_two_pes);

fn shared_case(rigs: &[EduRig; 2], kind: Backend, phbs: [&dyn PhbDma; 2]) -> TestResult {
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
        configure_pe(phb, rig.bdfn, PE).map_err(|e| fail(format_args!("configure_pe: {e:?}")))?;
        phb.map_window(PE, W1, &table)
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
    for (n, (rig, phb)) in rigs.iter().zip(phbs).enumerate() {
        let p = seed(kind, 3 + n as u32);
        x.fill(|i| pattern(p, i));
        rig.to_device(iova(&table, a))?;
        rig.to_ram(iova(&table, b))?;
        after_blocked_dma(
            rig,
            phb,
            PE,
            &format!("device {n}'s write through the cleared entry"),
        )?;
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

/// One back end per PHB: while OPAL handles exist, a direct one is refused with a clear
/// error; once they are dropped it is granted, every direct handle shares the PHB's one
/// instance, and OPAL is refused in turn.
fn one_back_end_per_phb() -> TestResult {
    let Some(info) = phbs()?.into_iter().next() else {
        return skip("no PHB in the device tree");
    };
    let claim = |kind| {
        // SAFETY: no TVE is pointed at anything here, and nothing on the PHB is changed.
        unsafe { backend(kind, &info) }
    };
    let refused = |r: Result<PhbHandle, PciError>, by| match r {
        Err(PciError::Claim(PhbError::Claimed { phb, by: b }))
            if phb == info.opal_phb_id && b == by =>
        {
            Ok(())
        }
        Err(e) => Err(fail(format_args!(
            "refused with {e}, not as claimed by {by:?}"
        ))),
        Ok(h) => Err(fail(format_args!(
            "{:?} granted while {by:?} holds the PHB",
            h.kind()
        ))),
    };
    {
        let (o1, o2) = (claim(Backend::Opal)?, claim(Backend::Opal)?);
        refused(claim(Backend::Direct), Backend::Opal)?;
        kassert!(o1.kind() == Backend::Opal && o2.direct().is_none());
    }
    let (d1, d2) = (claim(Backend::Direct)?, claim(Backend::Direct)?);
    let (i1, i2) = (d1.direct(), d2.direct());
    kassert!(
        i1.zip(i2).is_some_and(|(a, b)| core::ptr::eq(a, b)),
        "one direct instance per PHB"
    );
    refused(claim(Backend::Opal), Backend::Direct)?;
    Ok(())
}
ktest!("pci.one_back_end_per_phb", one_back_end_per_phb);

// ---- hardware checks ---------------------------------------------------------------------
//
// What QEMU's PHB4 model cannot show (no TCE cache, no PE freeze), checked where it can be
// (`./qemu-run.sh test hwcheck.`): a test that cannot see the behaviour on the machine it runs
// on says so by skipping, after checking everything it can.

/// A PE no device uses on `info`'s PHB (every requester ID starts in the reserved PE, the
/// last one; the tests' edu device uses PE 1): for the checks that need no device.
fn spare_pe(info: &PhbInfo) -> PeNum {
    PeNum(info.reserved_pe.0 - 1)
}

/// A table at the 55-bit limit: 3 levels of 128 KiB (14 index bits each) of 4K pages index
/// 54 bits of bus address, a 2^54-byte window at `1 << 59`. Both back ends point a TVE at it
/// and read it back; with an edu device, DMA through its first and last entries lands. One
/// window bit more (57 bits) is refused before any table is made.
fn table_at_55_bit_limit() -> TestResult {
    let refused = pci::new_table(0, WINDOW1_BUS, PAGE_SHIFT, 1 << 55, 3);
    kassert!(
        matches!(
            refused,
            Err(PciError::Geometry(
                crate::tce::GeometryError::ReachTooLarge { reach_shift: 57 }
            ))
        ),
        "a 2^55 window over 3 levels of 4K pages: {:?}",
        refused.err()
    );
    let rig = rig(0)?;
    let (info, pe) = match &rig {
        Some(r) => (r.info.clone(), PE),
        None => match phbs()?.into_iter().next() {
            Some(info) => {
                let pe = spare_pe(&info);
                (info, pe)
            }
            None => return skip("no PHB in the device tree"),
        },
    };
    let geo = crate::tce::TceGeometry::new(WINDOW1_BUS, PAGE_SHIFT, 1 << 54, 3)
        .map_err(|e| fail(format_args!("{e:?}")))?;
    kassert_eq!((geo.level_size(), geo.level_bits()), (1 << 17, 14));
    // Both views of a fully populated 2^54 window would be 2^46 bytes: the budget is not the
    // point here (levels are allocated on demand: the top and two per entry path).
    let table: KTable = crate::tce::TceTable::new(
        geo,
        info.node,
        crate::tce::HeapMemory::new(),
        crate::tce::LockedVm::new(u64::MAX),
    )
    .map_err(|e| fail(format_args!("{e:?}")))?;
    let (first, last) = (0, table.entries() - 1);
    let (x, y) = (DmaPage::new(), DmaPage::new());
    map(&table, first, &x, TcePerm::READ | TcePerm::WRITE)?;
    map(&table, last, &y, TcePerm::READ | TcePerm::WRITE)?;
    kassert_eq!(iova(&table, last), (1 << 59) + (1 << 54) - 4096);
    for kind in Backend::ALL {
        let phb = within(kind.name(), test_backend(kind, &info))?;
        let r = limit_case(
            &info,
            rig.as_ref(),
            &phb,
            kind,
            pe,
            &table,
            [(first, &x), (last, &y)],
        );
        let c = match &rig {
            Some(rig) => rig.clean_up(&phb, pe).map_err(TestFailure::from),
            None => phb
                .unmap_window(pe, W1)
                .map_err(|e| fail(format_args!("unmap_window: {e:?}"))),
        };
        within(kind.name(), r)?;
        within(kind.name(), c)?;
    }
    Ok(())
}
ktest!("hwcheck.table_at_55_bit_limit", table_at_55_bit_limit);

fn limit_case(
    info: &PhbInfo,
    rig: Option<&EduRig>,
    phb: &PhbHandle,
    kind: Backend,
    pe: PeNum,
    table: &KTable,
    [(first, x), (last, y)]: [(u64, &DmaPage); 2],
) -> TestResult {
    if let Some(rig) = rig {
        configure_pe(phb, rig.bdfn, pe).map_err(|e| fail(format_args!("configure_pe: {e:?}")))?;
    }
    phb.map_window(pe, W1, table)
        .map_err(|e| fail(format_args!("map_window: {e:?}")))?;
    let tve = read_tve(info, tve_index(pe.0, 1));
    kassert_eq!(
        (
            tve.table_addr(),
            tve.levels(),
            tve.level_bytes(),
            tve.page_shift()
        ),
        (table.top_level_phys(), 3, 1 << 17, Some(PAGE_SHIFT)),
        "the TVE the PHB holds"
    );
    let Some(rig) = rig else {
        return Ok(());
    };
    // First entry -> device -> last entry, and back.
    let (p1, p2) = (seed(kind, 0x40), seed(kind, 0x41));
    x.fill(|i| pattern(p1, i));
    y.fill(|_| FILL);
    rig.to_device(iova(table, first))?;
    rig.to_ram(iova(table, last))?;
    y.expect_copy("the last entry's page", p1)?;
    y.fill(|i| pattern(p2, i));
    x.fill(|_| FILL);
    rig.to_device(iova(table, last))?;
    rig.to_ram(iova(table, first))?;
    x.expect_copy("the first entry's page", p2)
}

/// TCE caching: PHB4 caches TCEs, so a TCE changed without a kill may still be used. A page
/// is DMAed through (caching its TCE), the TCE is pointed at another page WITHOUT a kill, and
/// a second DMA goes through it: on POWER9 it may land on the OLD page (the cached TCE); QEMU
/// reads the table on every access, so it lands on the new one. After a PE kill the DMA must
/// land on the new page everywhere. Skips, after the checks, when no cached TCE was seen.
fn tce_cache_needs_kill() -> TestResult {
    let Some(rig) = rig(0)? else {
        return no_edu(0);
    };
    let mut seen = [false; 2];
    for (k, kind) in Backend::ALL.into_iter().enumerate() {
        let phb = within(kind.name(), test_backend(kind, &rig.info))?;
        let r = cache_case(&rig, kind, &phb);
        let c = rig.clean_up(&phb, PE).map_err(TestFailure::from);
        seen[k] = within(kind.name(), r)?;
        within(kind.name(), c)?;
    }
    if seen == [false, false] {
        return skip(
            "no cached TCE seen: the DMA after a remap without a kill used the new TCE (QEMU reads the table on every access)",
        );
    }
    crate::kprintln!(
        "\n    cached TCE used after the remap without a kill: opal {}, direct {}",
        seen[0],
        seen[1]
    );
    Ok(())
}
ktest!("hwcheck.tce_cache_needs_kill", tce_cache_needs_kill);

/// Returns whether the DMA between the remap and the kill used the old (cached) TCE.
fn cache_case(rig: &EduRig, kind: Backend, phb: &dyn PhbDma) -> Result<bool, TestFailure> {
    let table = new_table(WINDOW1_BUS, 1 << 30, 3)?;
    let (src_i, dst_i) = (0x10u64, 0x20u64);
    let (src, old, new) = (DmaPage::new(), DmaPage::new(), DmaPage::new());
    map(&table, src_i, &src, TcePerm::READ)?;
    map(&table, dst_i, &old, TcePerm::WRITE)?;
    configure_pe(phb, rig.bdfn, PE).map_err(|e| fail(format_args!("configure_pe: {e:?}")))?;
    phb.map_window(PE, W1, &table)
        .map_err(|e| fail(format_args!("map_window: {e:?}")))?;
    let copy = |p: u32| -> TestResult {
        src.fill(|i| pattern(p, i));
        rig.to_device(iova(&table, src_i))?;
        Ok(rig.to_ram(iova(&table, dst_i))?)
    };
    let p1 = seed(kind, 0x50);
    copy(p1)?;
    old.expect_copy("the first copy", p1)?;

    // Point the destination entry at another page, no kill.
    map(&table, dst_i, &new, TcePerm::WRITE)?;
    let p2 = seed(kind, 0x51);
    copy(p2)?;
    let cached = match (old.check_copy(p2), new.check_copy(p2)) {
        (Ok(()), Err(_)) => true,
        (Err(_), Ok(())) => false,
        (o, n) => {
            return Err(fail(format_args!(
                "after the remap without a kill: old page {o:?}, new page {n:?}"
            )))
        }
    };

    // The kill makes the new TCE the one used, whatever was cached.
    phb.kill(Kill::Pe(PE))
        .map_err(|e| fail(format_args!("kill: {e:?}")))?;
    let p3 = seed(kind, 0x52);
    copy(p3)?;
    new.expect_copy("after the kill, the new page", p3)?;
    if cached {
        old.expect_copy("after the kill, the old page (unchanged)", p2)?;
    } else {
        old.expect_copy("after the kill, the old page (unchanged)", p1)?;
    }
    Ok(cached)
}

/// The freeze paths without a failing device: OPAL freezes a spare PE
/// (OPAL_PCI_EEH_FREEZE_SET), both back ends read the same freeze, the direct back end clears
/// it, and OPAL then reads it clear; set again, the tests' own recovery reports and clears it.
/// Skips when the PHB does not report the freeze OPAL set (QEMU models no PE freeze).
/// A freeze set by OPAL, seen and cleared by both back ends, as skiboot's PHB4 code defines
/// them (`hw/phb4.c`): OPAL_PCI_EEH_FREEZE_SET ORs MMIO_FROZEN into the PE's PESTA and
/// DMA_STOPPED into its PESTB (bit 0 of each), which is what stops the PE's traffic;
/// OPAL_PCI_EEH_FREEZE_STATUS looks first at the PE's PEEV bit, which only the hardware sets on
/// an error it detected, and without it reports "not frozen"; OPAL_PCI_EEH_FREEZE_CLEAR zeroes
/// both PEST words. So the check reads the PEST words themselves: set, they must be cleared by
/// either back end's clear; and both back ends must report the same status. It skips only when
/// freeze-set leaves the PEST words clear: a PHB that keeps no PE state (QEMU).
fn freeze_set_and_clear() -> TestResult {
    const FROZEN: u64 = 1 << 63; // IODA3 PESTA MMIO_FROZEN, PESTB DMA_STOPPED: bit 0
    let Some(info) = phbs()?.into_iter().next() else {
        return skip("no PHB in the device tree");
    };
    let pe = spare_pe(&info);
    let err = |e: PhbError| fail(format_args!("{e:?}"));
    let pest = || {
        // SAFETY: one CPU, no OPAL call in flight: reads of two IODA entries.
        unsafe { pci::peek_pest(&info, pe) }
    };
    let status = {
        let phb = within("opal", test_backend(Backend::Opal, &info))?;
        let opal = phb.opal().ok_or_else(|| fail("not an OPAL handle"))?;
        phb.clear_freeze(pe).map_err(err)?;
        kassert!(!phb.freeze_status(pe).map_err(err)?.is_frozen());
        let (a, b) = pest();
        kassert!(
            a & FROZEN == 0 && b & FROZEN == 0,
            "PESTA {a:#x} / PESTB {b:#x} still frozen after a clear"
        );
        opal.set_freeze(pe).map_err(err)?;
        let status = phb.freeze_status(pe).map_err(err)?;
        let (a, b) = pest();
        if a & FROZEN == 0 && b & FROZEN == 0 {
            kassert!(
                !status.is_frozen(),
                "OPAL reports {status:?} with PESTA/PESTB clear"
            );
            phb.clear_freeze(pe).map_err(err)?;
            return skip(format_args!(
                "OPAL_PCI_EEH_FREEZE_SET on {pe} left PESTA {a:#x} and PESTB {b:#x} clear: this PHB keeps no PE freeze state (QEMU)"
            ));
        }
        kassert!(
            a & FROZEN != 0 && b & FROZEN != 0,
            "freeze-set (MMIO and DMA) wrote PESTA {a:#x}, PESTB {b:#x}"
        );
        crate::kprintln!(
            "\n    {pe} frozen by OPAL: PESTA {a:#018x}, PESTB {b:#018x}; OPAL's status {status:?} ({})",
            if status.is_frozen() { "PEEV set" } else { "no PEEV bit: skiboot reports not frozen" }
        );
        status
    };
    {
        let phb = within("direct", test_backend(Backend::Direct, &info))?;
        kassert_eq!(
            phb.freeze_status(pe).map_err(err)?,
            status,
            "the direct back end's view (PEEV, then PESTA/PESTB)"
        );
        phb.clear_freeze(pe).map_err(err)?;
        let (a, b) = pest();
        kassert!(
            a & FROZEN == 0 && b & FROZEN == 0,
            "the direct clear left PESTA {a:#x} / PESTB {b:#x}"
        );
        kassert!(!phb.freeze_status(pe).map_err(err)?.is_frozen());
    }
    let phb = within("opal", test_backend(Backend::Opal, &info))?;
    kassert!(
        !phb.freeze_status(pe).map_err(err)?.is_frozen(),
        "OPAL sees the direct clear"
    );
    let opal = phb.opal().ok_or_else(|| fail("not an OPAL handle"))?;
    opal.set_freeze(pe).map_err(err)?;
    // What recover_freeze sees is what freeze-status reports; OPAL's clear empties PEST.
    kassert_eq!(
        recover_freeze(&phb, pe).map_err(err)?,
        status.is_frozen().then_some(status)
    );
    phb.clear_freeze(pe).map_err(err)?;
    let (a, b) = pest();
    kassert!(
        a & FROZEN == 0 && b & FROZEN == 0,
        "OPAL's clear left PESTA {a:#x} / PESTB {b:#x}"
    );
    Ok(())
}
ktest!("hwcheck.freeze_set_and_clear", freeze_set_and_clear);

// ---- benchmark -----------------------------------------------------------------------------

/// Instructions per PE kill on PHB 0, through OPAL (firmware instructions included: the
/// insn-count plugin counts them too) and by direct register programming.
fn bench_kill(out: Figures) -> BenchResult {
    const N: u64 = 32;
    let info = match phbs().map(|p| p.into_iter().next()) {
        Ok(Some(info)) => info,
        _ => {
            crate::kprintln!("phb.kill: no PHB");
            return Ok(());
        }
    };
    for kind in Backend::ALL {
        let phb = match test_backend(kind, &info) {
            Ok(phb) => phb,
            Err(e) => {
                crate::kprintln!("phb.kill.{}: {}", kind.name(), e.0);
                continue;
            }
        };
        if let Err(e) = phb.kill(Kill::Pe(PE)) {
            crate::kprintln!("phb.kill.{}: {e:?}", kind.name());
            continue;
        }
        let (insns, failures) = count_instructions(|| {
            (0..N)
                .filter(|_| core::hint::black_box(phb.kill(Kill::Pe(PE))).is_err())
                .count()
        })?;
        if failures != 0 {
            crate::kprintln!("phb.kill.{}: {failures} kills failed", kind.name());
            continue;
        }
        let name: String = format!("phb.kill.{}.insns", kind.name());
        out(&name, insns / N, "insns");
    }
    Ok(())
}
kbench!("phb.kill", bench_kill);
