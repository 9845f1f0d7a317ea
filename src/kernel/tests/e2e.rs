//! End to end: a guest owns a PCI device. The hypervisor takes ownership of an edu device's PE
//! and gives the guest its two windows, whose hardware tables are the tables the PHB walks;
//! the guest maps its own memory with H_PUT_TCE through `sc 1`, the device's DMA lands exactly
//! where the guest's TCEs say, the guest's clears reach the PHB as TCE kills from real mode,
//! and after them the DMA lands nowhere. Then the device goes back to the kernel and its
//! default window works again.
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use super::phb::{
    after_blocked_dma, driver_copy, no_edu, rig, seed, test_backend, within, Factory, PE,
};
use crate::arch::ppc64::mmu;
use crate::arch::ppc64::spr::{self, Msr};
use crate::hcall::{Attached, KillFailed, TceInvalidate, H_PUT_TCE, H_STUFF_TCE};
use crate::hv::abi::{self, Call};
use crate::kernel::guests::{
    call, describe_exit, partition, window_table, Partition, Path, EXIT_GUEST, LIOBN_4K, LIOBN_64K,
    PINNED_64K, PINNED_POOL, WINDOWS,
};
use crate::kernel::pci::{pattern, Backend, EduRig, DMA_LEN};
use crate::kernel::testing::{fail, TestFailure, TestResult};
use crate::phb::glue::TableKill;
use crate::phb::pe::{DefaultWindow, PeGroup};
use crate::phb::{PhbDma, WindowId};
use crate::{kassert, kassert_eq, ktest};

/// A PHB's TCE kill, counted, and counted apart when it ran with the MMU off.
struct CountedKill {
    inner: TableKill<Arc<crate::kernel::pci::PhbHandle>>,
    kills: AtomicU64,
    real_mode: AtomicU64,
}

impl TceInvalidate for CountedKill {
    fn invalidate(&self, cookie: u64, first: u64, count: u64) -> Result<(), KillFailed> {
        self.kills.fetch_add(1, Ordering::Relaxed);
        if !spr::msr().intersects(Msr::IR | Msr::DR) {
            self.real_mode.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.invalidate(cookie, first, count)
    }
}

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
    let Some(rig) = rig(0)? else {
        return no_edu(0);
    };
    let phb = Arc::new(within("opal", test_backend(Backend::Opal, &rig.info))?);
    let r = owned_by_a_guest(&rig, &phb);
    let c = rig.clean_up(&*phb, PE).map_err(TestFailure::from);
    r?;
    c
}
ktest!("e2e.guest_dma_lands_and_stops", guest_dma_lands_and_stops);

fn owned_by_a_guest(rig: &EduRig, phb: &Arc<crate::kernel::pci::PhbHandle>) -> TestResult {
    let pe_err = |e| fail(format_args!("{e:?}"));
    let dw = DefaultWindow {
        bus_offset: 0,
        window_size: 1 << 28,
        page_shift: 12,
        levels: 2,
    };
    let mut group =
        PeGroup::new(&**phb, rig.info.node, dw, &Factory, &[(rig.bdfn, PE)]).map_err(pe_err)?;
    let entries = (0x11, 0x2345);
    let kernel_table = group
        .device_table(rig.bdfn)
        .ok_or_else(|| fail("no device table while kernel-owned"))?
        .clone();
    within(
        "kernel owns the PE",
        driver_copy(rig, &**phb, &kernel_table, entries, seed(Backend::Opal, 7)),
    )?;

    // The guest takes the PE: its two windows are the PE's two TVEs.
    group
        .take_ownership::<crate::kernel::pci::PciError>(&**phb)
        .map_err(pe_err)?;
    let mut kills = Vec::new();
    let mut attached = Vec::new();
    for (w, id) in [WindowId::DMA32, WindowId::DMA64].into_iter().enumerate() {
        let t = Arc::new(window_table(w).map_err(|e| fail(e.0))?);
        group
            .attach_table::<crate::kernel::pci::PciError>(&**phb, id, t.clone())
            .map_err(pe_err)?;
        let (_, bus, shift, _, _) = WINDOWS[w];
        let k = Arc::new(CountedKill {
            inner: TableKill::new(phb.clone(), vec![PE], shift, bus),
            kills: AtomicU64::new(0),
            real_mode: AtomicU64::new(0),
        });
        kills.push(k.clone());
        attached.push(Attached {
            table: t,
            kill: k,
            cookie: (rig.info.opal_phb_id.0 << 32) | u64::from(PE.0),
        });
    }
    let mut p = partition().map_err(|e| fail(e.0))?;
    let v = mmu::virt_mode().ok_or_else(|| fail("MMU off"))?;
    let [a, b]: [Attached; 2] = attached.try_into().map_err(|_| fail("two windows"))?;
    p.attach_device(v, [a, b]).map_err(|e| fail(e.0))?;
    let r = guest_phase(rig, &mut p, &**phb, &kills);
    let detached = p.detach_device(v);
    drop(p);
    r?;
    kassert!(detached, "the guest's windows could not be cleared");

    // Back to the kernel: a fresh default table, and DMA through it works.
    group.release_ownership(&**phb, &Factory).map_err(pe_err)?;
    let fresh = group
        .device_table(rig.bdfn)
        .ok_or_else(|| fail("no device table after release"))?
        .clone();
    within(
        "the kernel owns the PE again",
        driver_copy(rig, &**phb, &fresh, entries, seed(Backend::Opal, 8)),
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

/// H_PUT_TCE into a table the PHB walks, map then clear, the clear's TCE kill through OPAL
/// from real mode included: exact round trips from the guest's `sc 1`.
fn bench_phb_put_tce(out: crate::kernel::testing::Figures) -> crate::kernel::testing::BenchResult {
    let rig = match rig(0) {
        Ok(Some(rig)) => rig,
        _ => {
            crate::kprintln!("hcall.phb: no edu device (qemu-run.sh --edu N)");
            return Ok(());
        }
    };
    let phb = Arc::new(test_backend(Backend::Opal, &rig.info).expect("PHB 0 through OPAL"));
    let figures = phb_put_tce_figures(&rig, &phb);
    rig.clean_up(&*phb, PE).expect("PHB clean-up");
    let (map, clear) = figures?;
    out("hcall.put_tce.phb.real.insns", map, "insns");
    out("hcall.put_tce_clear.phb.real.insns", clear, "insns");
    Ok(())
}
crate::kbench!("hcall.phb", bench_phb_put_tce);

fn phb_put_tce_figures(
    rig: &EduRig,
    phb: &Arc<crate::kernel::pci::PhbHandle>,
) -> Result<(u64, u64), crate::arch::ppc64::icount::Unavailable> {
    let dw = DefaultWindow {
        bus_offset: 0,
        window_size: 1 << 28,
        page_shift: 12,
        levels: 2,
    };
    let mut group =
        PeGroup::new(&**phb, rig.info.node, dw, &Factory, &[(rig.bdfn, PE)]).expect("the edu PE");
    group
        .take_ownership::<crate::kernel::pci::PciError>(&**phb)
        .expect("ownership");
    let attached = [0usize, 1].map(|w| {
        let t = Arc::new(window_table(w).expect("a window table"));
        let id = [WindowId::DMA32, WindowId::DMA64][w];
        group
            .attach_table::<crate::kernel::pci::PciError>(&**phb, id, t.clone())
            .expect("the TVE");
        let (_, bus, shift, _, _) = WINDOWS[w];
        Attached {
            table: t,
            kill: Arc::new(TableKill::new(phb.clone(), vec![PE], shift, bus)),
            cookie: (rig.info.opal_phb_id.0 << 32) | u64::from(PE.0),
        }
    });
    let mut p = partition().expect("the guest partition");
    let v = mmu::virt_mode().expect("MMU on");
    p.attach_device(v, attached).expect("the device's windows");
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
    let detached = p.detach_device(v);
    drop(p);
    group
        .release_ownership(&**phb, &Factory)
        .expect("ownership handed back");
    assert!(detached, "the guest's windows could not be cleared");
    assert_eq!(paths, [Path::Real; 2], "a benchmarked call left real mode");
    let r = r?;
    Ok((r[0], r[1]))
}
