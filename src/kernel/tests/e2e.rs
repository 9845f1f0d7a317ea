//! End to end: a guest owns a PCI device. The hypervisor takes ownership of an edu device's PE
//! and gives the guest its two windows, whose hardware tables are the tables the PHB walks;
//! the guest maps its own memory with H_PUT_TCE through `sc 1`, the device's DMA lands exactly
//! where the guest's TCEs say, the guest's clears reach the PHB as TCE kills from real mode,
//! and after them the DMA lands nowhere. Then the device goes back to the kernel and its
//! default window works again.
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::phb::{after_blocked_dma, driver_copy, no_edu, seed, within};
use crate::arch::ppc64::mmu;
use crate::hcall::{H_PUT_TCE, H_STUFF_TCE};
use crate::hv::abi::{self, Call};
use crate::kernel::device::{self, CountedKill, Device, PE};
use crate::kernel::guests::{
    call, describe_exit, partition, CallOutcome, Partition, Path, EXIT_GUEST, LIOBN_4K, LIOBN_64K,
    PINNED_64K, PINNED_POOL, WINDOWS,
};
use crate::kernel::pci::{pattern, Backend, EduRig, DMA_LEN};
use crate::kernel::testing::{fail, TestResult};
use crate::phb::PhbDma;
use crate::{kassert, kassert_eq, ktest};

/// Runs `calls` in the guest; every call must succeed with its registers intact.
fn guest_calls(p: &mut Partition, calls: &[Call]) -> TestResult {
    p.set_mailbox(abi::action::CALLS, calls, 1)
        .map_err(|e| fail(e.0))?;
    let code = p.run();
    kassert_eq!(code, EXIT_GUEST, "{}", describe_exit(code));
    for (i, c) in calls.iter().enumerate() {
        let r = p.result(i);
        kassert!(r.regs_ok == 1, "call {i} ({:#x}): registers", c.nr);
        kassert_eq!(
            r.r3,
            0,
            "call {i} ({:#x}, {:x?}) failed",
            c.nr,
            &c.args[..3]
        );
    }
    Ok(())
}

/// Guest memory as bytes (through its partition-scoped tree).
fn guest_bytes(p: &Partition, gpa: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let a = gpa + i;
            p.read_u64(a & !7).map_or(0, |w| (w >> (8 * (a & 7))) as u8)
        })
        .collect()
}

/// The device copies guest page `src` to guest page `dst` through IOVAs `src_iova` and
/// `dst_iova` (the guest must have mapped them); `dst` must then hold `seed`'s pattern.
fn device_copy(
    rig: &EduRig,
    p: &Partition,
    (src, src_iova): (u64, u64),
    (dst, dst_iova): (u64, u64),
    seed: u32,
) -> TestResult {
    let data: Vec<u8> = (0..DMA_LEN as usize).map(|i| pattern(seed, i)).collect();
    p.write_bytes(src, &data).map_err(|e| fail(e.0))?;
    p.write_bytes(dst, &vec![0xee; DMA_LEN as usize])
        .map_err(|e| fail(e.0))?;
    rig.to_device(src_iova)?;
    rig.to_ram(dst_iova)?;
    let got = guest_bytes(p, dst, DMA_LEN as usize);
    let bad = got.iter().zip(&data).position(|(a, b)| a != b);
    kassert!(
        bad.is_none(),
        "DMA {src_iova:#x} -> {dst_iova:#x}: guest page {dst:#x} byte {:?} differs",
        bad
    );
    Ok(())
}

fn guest_dma_lands_and_stops() -> TestResult {
    let Some(mut dev) = device::kernel_owned(0).map_err(fail)? else {
        return no_edu(0);
    };
    let r = owned_by_a_guest(&mut dev);
    let c = dev.release().map_err(fail);
    r?;
    c
}
ktest!("e2e.guest_dma_lands_and_stops", guest_dma_lands_and_stops);

fn owned_by_a_guest(dev: &mut Device) -> TestResult {
    let entries = (0x11, 0x2345);
    let kernel_table = dev
        .group
        .device_table(dev.rig.bdfn)
        .ok_or_else(|| fail("no device table while kernel-owned"))?
        .clone();
    within(
        "kernel owns the PE",
        driver_copy(
            &dev.rig,
            dev.phb(),
            &kernel_table,
            entries,
            seed(Backend::Opal, 7),
        ),
    )?;
    let mut p = partition().map_err(|e| fail(e.0))?;
    let v = mmu::virt_mode().ok_or_else(|| fail("MMU off"))?;
    dev.give(&mut p, v).map_err(fail)?;
    let r = guest_phase(&dev.rig, &mut p, dev.phb(), &dev.kills);
    let back = dev.take_back(&mut p, v);
    drop(p);
    r?;
    back.map_err(fail)?;
    // Back to the kernel: a fresh default table, and DMA through it works.
    let fresh = dev
        .group
        .device_table(dev.rig.bdfn)
        .ok_or_else(|| fail("no device table after release"))?
        .clone();
    kassert!(
        !Arc::ptr_eq(&fresh, &kernel_table),
        "release made a fresh table"
    );
    within(
        "the kernel owns the PE again",
        driver_copy(&dev.rig, dev.phb(), &fresh, entries, seed(Backend::Opal, 8)),
    )
}

fn guest_phase(
    rig: &EduRig,
    p: &mut Partition,
    phb: &dyn PhbDma,
    kills: &[Arc<CountedKill>],
) -> TestResult {
    // Guest pages: 4 KiB ones in the 2 MiB-pinned pool, 64 KiB ones in the 64 KiB-pinned part.
    let (src, dst) = (PINNED_POOL.0 + 0x5_0000, PINNED_POOL.0 + 0x5_1000);
    let (src64, dst64) = (PINNED_64K + 0x20_0000, PINNED_64K + 0x21_0000);
    let w64 = WINDOWS[1].1;
    let maps = [
        call(H_PUT_TCE, &[LIOBN_4K, 0x1000, src | 1]), // device reads
        call(H_PUT_TCE, &[LIOBN_4K, 0x2000, dst | 2]), // device writes
        call(H_PUT_TCE, &[LIOBN_64K, w64 + 0x1_0000, src64 | 1]),
        call(H_PUT_TCE, &[LIOBN_64K, w64 + 0x2_0000, dst64 | 2]),
    ];
    guest_calls(p, &maps)?;
    device_copy(rig, p, (src, 0x1000), (dst, 0x2000), 0x501)?;
    device_copy(
        rig,
        p,
        (src64, w64 + 0x1_0000),
        (dst64, w64 + 0x2_0000),
        0x502,
    )?;
    // A TCE the guest mapped read-only: the device cannot write through it.
    rig.to_ram(0x1000)?;
    after_blocked_dma(rig, phb, PE, "a write through a read-only TCE")?;

    // The guest clears: real mode, and each clear kills on the PHB before it returns.
    let before: Vec<u64> = kills
        .iter()
        .map(|k| k.real_mode.load(Ordering::Relaxed))
        .collect();
    guest_calls(
        p,
        &[
            call(H_STUFF_TCE, &[LIOBN_4K, 0, 0, 16]),
            call(H_PUT_TCE, &[LIOBN_64K, w64 + 0x2_0000, 0]),
            call(H_STUFF_TCE, &[LIOBN_64K, w64, 0, 4]),
        ],
    )?;
    kassert!(
        p.trace.iter().all(|t| t.path == Path::Real),
        "a clear left real mode: {:?}",
        p.trace.iter().map(|t| t.path).collect::<Vec<_>>()
    );
    for (w, k) in kills.iter().enumerate() {
        kassert!(
            k.real_mode.load(Ordering::Relaxed) > before[w],
            "window {w}: no TCE kill reached the PHB from real mode"
        );
    }
    crate::kprintln!(
        "\n    kills on the PHB: window 0 {} ({} from real mode), window 1 {} ({} from real mode)",
        kills[0].kills.load(Ordering::Relaxed),
        kills[0].real_mode.load(Ordering::Relaxed),
        kills[1].kills.load(Ordering::Relaxed),
        kills[1].real_mode.load(Ordering::Relaxed)
    );
    // Cleared: DMA through the old IOVAs lands nowhere.
    for (dst, iova) in [(dst, 0x2000), (dst64, w64 + 0x2_0000)] {
        p.write_bytes(dst, &vec![0x5a; DMA_LEN as usize])
            .map_err(|e| fail(e.0))?;
        rig.to_ram(iova)?;
        after_blocked_dma(rig, phb, PE, "a write through a cleared TCE")?;
        let got = guest_bytes(p, dst, DMA_LEN as usize);
        kassert!(
            got.iter().all(|&b| b == 0x5a),
            "a DMA through cleared IOVA {iova:#x} changed guest page {dst:#x}"
        );
    }
    Ok(())
}

/// H_PUT_TCE into a table the PHB walks, map then clear, the TCE kill through OPAL from real
/// mode included: exact round trips from the guest's `sc 1`.
fn bench_phb_put_tce(out: crate::kernel::testing::Figures) -> crate::kernel::testing::BenchResult {
    let mut dev = match device::kernel_owned(0) {
        Ok(Some(d)) => d,
        _ => {
            crate::kprintln!("hcall.phb: no edu device (qemu-run.sh --edu N)");
            return Ok(());
        }
    };
    let mut p = partition().expect("the guest partition");
    let v = mmu::virt_mode().expect("MMU on");
    dev.give(&mut p, v).expect("the device handed to the guest");
    let page = PINNED_POOL.0 + 0x6_0000;
    // Warm: the leaf level exists.
    guest_calls(&mut p, &[call(H_PUT_TCE, &[LIOBN_4K, 0x1000, page | 3])]).expect("warm-up");
    let r = super::hv::timed(
        &mut p,
        &[
            call(H_PUT_TCE, &[LIOBN_4K, 0x2000, page | 3]),
            call(H_PUT_TCE, &[LIOBN_4K, 0x2000, 0]),
        ],
    );
    let paths: Vec<Path> = p.trace.iter().map(|t| t.path).collect();
    dev.take_back(&mut p, v).expect("the device taken back");
    drop(p);
    dev.release().expect("PHB clean-up");
    assert_eq!(paths, [Path::Real; 2], "a benchmarked call left real mode");
    let r = r?;
    out("hcall.put_tce.phb.real.insns", r[0], "insns");
    out("hcall.put_tce_clear.phb.real.insns", r[1], "insns");
    Ok(())
}
crate::kbench!("hcall.phb", bench_phb_put_tce);

/// The guest drives the device itself: the device's BAR is in its partition-scoped tree, its
/// edu driver reaches the registers through `volatile` pointers, and the data lands where its
/// TCEs say, then nowhere once it cleared them.
fn guest_drives_the_device() -> TestResult {
    let Some(mut dev) = device::kernel_owned(0).map_err(fail)? else {
        return no_edu(0);
    };
    let mut p = partition().map_err(|e| fail(e.0))?;
    let v = mmu::virt_mode().ok_or_else(|| fail("MMU off"))?;
    let r = dev
        .give(&mut p, v)
        .map_err(fail)
        .and_then(|()| drives(&dev, &mut p));
    let back = dev.take_back(&mut p, v).map_err(fail);
    kassert_eq!(p.device_bar, 0, "the BAR is still in the guest's map");
    drop(p);
    let c = dev.release().map_err(fail);
    r?;
    back?;
    c
}
ktest!("e2e.guest_drives_the_device", guest_drives_the_device);

fn drives(dev: &Device, p: &mut Partition) -> TestResult {
    use crate::hv::abi::{guest_op, outcome, GUEST_ACTION};
    let act = |op: u64, args: &[u64]| call(GUEST_ACTION | op, args);
    let (src, dst) = (PINNED_POOL.0 + 0x7_0000, PINNED_POOL.0 + 0x7_1000);
    let dst64 = PINNED_64K + 0x30_0000;
    let w64 = WINDOWS[1].1;
    let calls = [
        act(guest_op::STORE, &[src, 0x0123_4567_89ab_cdef]),
        call(H_PUT_TCE, &[LIOBN_4K, 0x1000, src | 1]),
        call(H_PUT_TCE, &[LIOBN_4K, 0x2000, dst | 2]),
        call(H_PUT_TCE, &[LIOBN_64K, w64 + 0x3_0000, dst64 | 2]),
        act(guest_op::DMA_TO_DEVICE, &[0x1000]),
        act(guest_op::DMA_TO_RAM, &[0x2000]),
        act(guest_op::DMA_TO_RAM, &[w64 + 0x3_0000]),
        act(guest_op::LOAD, &[dst]),
        act(guest_op::LOAD, &[dst64]),
        call(H_STUFF_TCE, &[LIOBN_4K, 0, 0, 16]),
        act(guest_op::STORE, &[dst, 0]),
        act(guest_op::DMA_TO_RAM, &[0x2000]),
        act(guest_op::LOAD, &[dst]),
    ];
    let o = p.run_restarting(&calls).map_err(|e| fail(e.0))?;
    let value = |i: usize| match o[i] {
        CallOutcome::Action(r) if r.r3 == outcome::OK => Ok(r.r4),
        CallOutcome::Hcall { result, .. } if result.r3 == 0 => Ok(result.r3),
        ref other => Err(fail(alloc::format!("call {i}: {other:?}"))),
    };
    for i in 0..calls.len() {
        value(i)?;
    }
    for i in [4, 5, 6, 11] {
        kassert_eq!(
            value(i)?,
            0,
            "call {i}: the device's transfer did not complete"
        );
    }
    kassert_eq!(value(7)?, 0x0123_4567_89ab_cdef, "landed through window 0");
    kassert_eq!(value(8)?, 0x0123_4567_89ab_cdef, "landed through window 1");
    kassert_eq!(value(12)?, 0, "a DMA through a cleared TCE landed");
    after_blocked_dma(
        &dev.rig,
        dev.phb(),
        PE,
        "the guest's DMA through a cleared TCE",
    )?;
    kassert!(
        dev.kills[0].real_mode.load(Ordering::Relaxed) > 0,
        "the guest's clear killed nothing on the PHB from real mode"
    );
    Ok(())
}

/// Two guests, two devices: LPID 1 owns the edu behind PHB 0, LPID 2 the one behind PHB 1.
/// Each device's DMA lands in its own guest's memory; a TCE naming memory that is not the
/// guest's own (the other guest's host pages, the hypervisor's image) is refused; a DMA by one
/// guest's device to an IOVA only the other guest mapped lands nowhere.
fn two_guests_are_isolated() -> TestResult {
    let (Some(mut d1), Some(mut d2)) = (
        device::kernel_owned(0).map_err(fail)?,
        device::kernel_owned(1).map_err(fail)?,
    ) else {
        return no_edu(1);
    };
    let mut p1 = partition().map_err(|e| fail(e.0))?;
    let mut p2 = crate::kernel::guests::partition2().map_err(|e| fail(e.0))?;
    let v = mmu::virt_mode().ok_or_else(|| fail("MMU off"))?;
    kassert!(p1.lpid != p2.lpid, "two partitions");
    // Each partition's locked-memory budget is set and enforced: its windows' guest views are
    // charged to it, and a window whose view would exceed it is refused, charging nothing.
    for p in [&mut p1, &mut p2] {
        let views: u64 = WINDOWS
            .iter()
            .map(|w| crate::hcall::Guest::view_bytes(w.3 >> w.2))
            .sum();
        kassert_eq!(
            p.budget.used(),
            views,
            "LPID {}: locked memory charged",
            p.lpid
        );
        let huge = p.guest.create_window(0x8000_0099, 1 << 40, 12, 1 << 36);
        kassert!(
            matches!(huge, Err(crate::hcall::WindowError::OverBudget)),
            "LPID {}: a 64 GiB window of 4 KiB pages was not refused: {huge:?}",
            p.lpid
        );
        kassert_eq!(
            p.budget.used(),
            views,
            "LPID {}: a refused window charged",
            p.lpid
        );
    }
    let r = d1
        .give(&mut p1, v)
        .and_then(|()| d2.give(&mut p2, v))
        .map_err(fail)
        .and_then(|()| isolated(&d1, &d2, &mut p1, &mut p2));
    let b1 = d1.take_back(&mut p1, v).map_err(fail);
    let b2 = d2.take_back(&mut p2, v).map_err(fail);
    drop((p1, p2));
    let c1 = d1.release().map_err(fail);
    let c2 = d2.release().map_err(fail);
    r.and(b1).and(b2).and(c1).and(c2)
}
ktest!("e2e.two_guests_are_isolated", two_guests_are_isolated);

fn isolated(d1: &Device, d2: &Device, p1: &mut Partition, p2: &mut Partition) -> TestResult {
    use crate::hcall::HcallResult;
    use crate::hv::abi::{guest_op, outcome, GUEST_ACTION};
    let act = |op: u64, args: &[u64]| call(GUEST_ACTION | op, args);
    let (src, dst, other) = (
        PINNED_POOL.0 + 0x8_0000,
        PINNED_POOL.0 + 0x8_1000,
        PINNED_POOL.0 + 0x8_2000,
    );
    let values = |p: &mut Partition,
                  calls: &[Call]|
     -> Result<Vec<u64>, crate::kernel::testing::TestFailure> {
        let o = p.run_restarting(calls).map_err(|e| fail(e.0))?;
        o.iter()
            .enumerate()
            .map(|(i, o)| match *o {
                CallOutcome::Action(r) if r.r3 == outcome::OK => Ok(r.r4),
                CallOutcome::Hcall { result, .. } => Ok(result.r3),
                ref other => Err(fail(alloc::format!("LPID {} call {i}: {other:?}", p.lpid))),
            })
            .collect()
    };
    // LPID 2 maps IOVA 0x5000 (only it), and its destination at 0x2000.
    let dst2_hpa = p2.host_phys(dst).ok_or_else(|| fail("LPID 2's page"))?.0;
    let v2 = values(
        p2,
        &[
            act(guest_op::STORE, &[src, 0x2222]),
            act(guest_op::STORE, &[other, 0x2_0000]),
            call(H_PUT_TCE, &[LIOBN_4K, 0x1000, src | 1]),
            call(H_PUT_TCE, &[LIOBN_4K, 0x2000, dst | 2]),
            call(H_PUT_TCE, &[LIOBN_4K, 0x5000, other | 2]),
            act(guest_op::DMA_TO_DEVICE, &[0x1000]),
            act(guest_op::DMA_TO_RAM, &[0x2000]),
            act(guest_op::LOAD, &[dst]),
        ],
    )?;
    kassert_eq!(v2[7], 0x2222, "LPID 2's device DMA landed in LPID 2's page");
    // LPID 1: the same IOVAs, its own pages; the other guest's host page and the hypervisor's
    // image are not guest memory it may name; its device writing at 0x5000 (mapped only by
    // LPID 2) reaches nothing.
    let v1 = values(
        p1,
        &[
            act(guest_op::STORE, &[src, 0x1111]),
            call(H_PUT_TCE, &[LIOBN_4K, 0x1000, src | 1]),
            call(H_PUT_TCE, &[LIOBN_4K, 0x2000, dst | 2]),
            call(H_PUT_TCE, &[LIOBN_4K, 0x3000, dst2_hpa | 3]),
            call(H_PUT_TCE, &[LIOBN_4K, 0x4000, 0x2000_0000 | 3]),
            act(guest_op::DMA_TO_DEVICE, &[0x1000]),
            act(guest_op::DMA_TO_RAM, &[0x2000]),
            act(guest_op::DMA_TO_RAM, &[0x5000]),
            act(guest_op::LOAD, &[dst]),
        ],
    )?;
    let param = HcallResult::Parameter.code() as u64;
    kassert_eq!(
        v1[3],
        param,
        "a TCE naming LPID 2's host page {dst2_hpa:#x}"
    );
    kassert_eq!(v1[4], param, "a TCE naming the hypervisor's image");
    kassert_eq!(v1[8], 0x1111, "LPID 1's device DMA landed in LPID 1's page");
    after_blocked_dma(
        &d1.rig,
        d1.phb(),
        PE,
        "LPID 1's device writing an IOVA it never mapped",
    )?;
    // Nothing of LPID 1's reached LPID 2.
    let v2 = values(
        p2,
        &[act(guest_op::LOAD, &[dst]), act(guest_op::LOAD, &[other])],
    )?;
    kassert_eq!(v2[0], 0x2222, "LPID 2's page after LPID 1's transfers");
    kassert_eq!(
        v2[1],
        0x2_0000,
        "LPID 2's page at IOVA 0x5000 of its own space"
    );
    let _ = d2;
    Ok(())
}

/// The seed's SAS case in full (seed 003): before the guest takes the PE the device DMAs
/// through the kernel's 32-bit table *and* its 64-bit window; while the guest owns it, the
/// guest's windows replace both; after release both kernel windows work again, the 32-bit one
/// through the fresh default table the device's record now names, the 64-bit one through the
/// table it had.
fn seed_003_ownership_round_trip() -> TestResult {
    let Some(mut dev) = device::kernel_owned(0).map_err(fail)? else {
        return no_edu(0);
    };
    let r = round_trip(&mut dev);
    let c = dev.release().map_err(fail);
    r.and(c)
}
ktest!(
    "e2e.seed_003_ownership_round_trip",
    seed_003_ownership_round_trip
);

fn round_trip(dev: &mut Device) -> TestResult {
    use crate::kernel::pci::{new_table, PciError, PAGE_SHIFT, WINDOW1_BUS};
    let pe_err = |e| fail(format_args!("{e:?}"));
    let k64 = Arc::new(new_table(
        dev.rig.info.node,
        WINDOW1_BUS,
        PAGE_SHIFT,
        1 << 30,
        3,
    )?);
    let phb = dev.phb.clone();
    dev.group
        .set_kernel_window1::<PciError>(&*phb, k64.clone())
        .map_err(pe_err)?;
    let entries = (0x21, 0x321);
    let k32 = dev
        .group
        .device_table(dev.rig.bdfn)
        .ok_or_else(|| fail("no 32-bit table while kernel-owned"))?
        .clone();
    within(
        "kernel, 32-bit",
        driver_copy(&dev.rig, dev.phb(), &k32, entries, seed(Backend::Opal, 11)),
    )?;
    within(
        "kernel, 64-bit",
        driver_copy(&dev.rig, dev.phb(), &k64, entries, seed(Backend::Opal, 12)),
    )?;
    let mut p = partition().map_err(|e| fail(e.0))?;
    let v = mmu::virt_mode().ok_or_else(|| fail("MMU off"))?;
    dev.give(&mut p, v).map_err(fail)?;
    let r = drives(dev, &mut p);
    // The kernel's tables are out of the path while the guest owns the PE.
    let stray = within(
        "kernel, 64-bit, while the guest owns the PE",
        driver_copy(&dev.rig, dev.phb(), &k64, entries, seed(Backend::Opal, 13)),
    );
    let blocked = after_blocked_dma(
        &dev.rig,
        dev.phb(),
        PE,
        "the kernel's 64-bit table, unmapped",
    );
    let back = dev.take_back(&mut p, v).map_err(fail);
    drop(p);
    r?;
    kassert!(
        stray.is_err(),
        "DMA through the kernel's 64-bit table landed while the guest owned the PE"
    );
    blocked?;
    back?;
    let fresh = dev
        .group
        .device_table(dev.rig.bdfn)
        .ok_or_else(|| fail("no 32-bit table after release"))?
        .clone();
    kassert!(
        !Arc::ptr_eq(&fresh, &k32),
        "release made a fresh default table"
    );
    kassert!(
        dev.group
            .window_table(crate::phb::WindowId::DMA64)
            .is_some_and(|t| Arc::ptr_eq(t, &k64)),
        "the kernel's 64-bit table is not the one it had"
    );
    within(
        "kernel again, 32-bit",
        driver_copy(
            &dev.rig,
            dev.phb(),
            &fresh,
            entries,
            seed(Backend::Opal, 14),
        ),
    )?;
    within(
        "kernel again, 64-bit",
        driver_copy(&dev.rig, dev.phb(), &k64, entries, seed(Backend::Opal, 15)),
    )
}
