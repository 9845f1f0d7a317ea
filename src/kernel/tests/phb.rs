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
use crate::phb::pe::{DefaultWindow, PeGroup, TableFactory};
use crate::phb::regs::{tve_index, Tve};
use crate::phb::{DmaWindowTable, Kill, PeNum, PhbDma, PhbError, WindowId};
use crate::tce::TcePerm;
use crate::{kassert, kassert_eq, kbench, ktest};

/// The PE the tests put the edu device in (not the reserved PE, which is the last one).
const PE: PeNum = PeNum(1);
const W1: WindowId = WindowId::DMA64;
const PAGE: usize = pci::PAGE;

impl From<PciError> for TestFailure {
    fn from(e: PciError) -> Self {
        TestFailure(format!("{e}"))
    }
}

/// Adds context to a failure.
fn within<T>(what: &str, r: Result<T, TestFailure>) -> Result<T, TestFailure> {
    r.map_err(|TestFailure(m)| TestFailure(format!("{what}: {m}")))
}

/// `kind`'s back end for the PHB `info` describes, claimed until the handle drops.
fn test_backend(kind: Backend, info: &PhbInfo) -> Result<PhbHandle, TestFailure> {
    // SAFETY: the tests keep every table alive while a TVE points at it, and leave the PHB
    // as they found it before the handle drops (see the module doc).
    Ok(unsafe { backend(kind, info) }?)
}

/// After a DMA that must not land: reads `pe`'s freeze state and, if the PHB froze the PE,
/// reports it (on a line of its own, PESTA/PESTB included) and clears it before the next
/// DMA. A freeze that does not clear fails the test.
fn after_blocked_dma(rig: &EduRig, phb: &dyn PhbDma, pe: PeNum, what: &str) -> TestResult {
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
fn rig(nth: usize) -> Result<Option<EduRig>, TestFailure> {
    Ok(find_edu(nth)?)
}

/// Why a test that needs QEMU's edu device skips itself.
fn no_edu(nth: usize) -> TestResult {
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
struct Factory;

impl TableFactory for Factory {
    type Table = KTable;
    type Error = PciError;
    fn create(&self, node: u32, w: &DefaultWindow) -> Result<KTable, PciError> {
        pci::new_table(node, w.bus_offset, w.page_shift, w.window_size, w.levels)
    }
}

/// Seeds: one per back end and step, so no two transfers carry the same bytes.
fn seed(kind: Backend, step: u32) -> u32 {
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
fn driver_copy(
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
