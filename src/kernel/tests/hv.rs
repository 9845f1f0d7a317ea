//! The hypervisor around the TCE code: the MMU, and a guest partition making real `sc 1`
//! hypercalls, valid and invalid, handled in real mode at the vector or in virtual mode after
//! real mode declined.
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::arch::ppc64::icount::Unavailable;
use crate::arch::ppc64::mmu;
use crate::arch::ppc64::spr::{self, Msr};
use crate::hcall::{HcallResult, H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE};
use crate::hv::abi::{self, action, Call};
use crate::kernel::guests::{
    call, describe_exit, partition, Partition, Path, EXIT_FAULT, EXIT_GUEST, LIOBN_4K, LIOBN_64K,
    PINNED_POOL, UNPINNED_POOL,
};
use crate::kernel::testing::{fail, BenchResult, Figures, TestResult};
use crate::mm::{GuestPhys, HostPhys};
use crate::{kassert, kassert_eq, ktest};

const OK: i64 = 0;
const PARAM: i64 = HcallResult::Parameter.code();

fn mmu_is_on_and_maps_the_kernel_linearly() -> TestResult {
    kassert!(
        spr::msr().contains(Msr::IR | Msr::DR),
        "the kernel runs with the MMU off"
    );
    let x = 0x1234u64;
    let ea = &x as *const u64 as u64;
    kassert_eq!(ea >> 60, 0xc, "a stack address outside the linear map");
    kassert_eq!(mmu::translate(ea), Some(HostPhys::of_linear(&x)));
    Ok(())
}
ktest!(
    "hv.mmu_on_linear_map",
    mmu_is_on_and_maps_the_kernel_linearly
);

/// 128 KiB of pinned guest memory at or above `PINNED_POOL.0 + from` whose pages' descriptors
/// real mode can reach (it declines straddling ones, by design).
fn clean(p: &Partition, from: u64) -> Result<u64, crate::kernel::testing::TestFailure> {
    p.unstraddled(PINNED_POOL.0 + from, PINNED_POOL.1, 0x2_0000, 0x1_0000)
        .ok_or_else(|| fail("no pinned memory whose descriptors do not straddle"))
}

/// Runs `calls` in the guest; fails unless it exits normally with every register intact.
fn run_calls(p: &mut Partition, calls: &[Call]) -> TestResult {
    p.set_mailbox(action::CALLS, calls, 1)
        .map_err(|e| fail(e.0))?;
    let code = p.run();
    kassert_eq!(code, EXIT_GUEST, "{}", describe_exit(code));
    kassert_eq!(
        p.trace.len(),
        calls.len(),
        "hypercalls seen by the hypervisor"
    );
    for (i, c) in calls.iter().enumerate() {
        let r = p.result(i);
        kassert!(
            r.regs_ok == 1,
            "call {i} ({:#x}): register {} changed to {:#x}",
            c.nr,
            crate::kernel::guests::reg_name(r.bad_reg),
            r.bad_value
        );
        kassert_eq!(r.r3 as i64, p.trace[i].r3, "r3 the guest saw, call {i}");
    }
    Ok(())
}

fn codes(p: &Partition) -> Vec<(i64, Path)> {
    p.trace.iter().map(|t| (t.r3, t.path)).collect()
}

fn every_tce_hcall_through_sc1() -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    let stats = |p: &Partition| {
        let s = &p.guest.stats;
        (
            s.put.rm_done.load(Ordering::Relaxed),
            s.put.rm_too_hard.load(Ordering::Relaxed),
            s.put.vm_done.load(Ordering::Relaxed),
        )
    };
    let before = stats(&p);
    // Pinned pages real mode can reach: none of their descriptors straddles vmemmap blocks.
    let pin = clean(&p, 0x40_0000)?;
    let unpinned = UNPINNED_POOL.0;
    let list = PINNED_POOL.0 + 0x30_0000;
    let pin_ua = p
        .guest
        .mem
        .gpa_to_ua(GuestPhys(pin), 1)
        .ok_or_else(|| fail("no ua for the pinned page"))?;
    p.guest
        .mem
        .region_for(pin_ua, 1)
        .ok_or_else(|| fail("the pinned page is not preregistered"))?
        .clean_dirty();
    for i in 0..4u64 {
        p.write_be64(list + 8 * i, (pin + 0x1_0000 + i * 0x1000) | 3)
            .map_err(|e| fail(e.0))?;
    }
    let calls = [
        // A window level is missing: real mode declines, virtual mode allocates.
        call(H_PUT_TCE, &[LIOBN_4K, 0x10_0000, pin | 3]),
        // Now real mode finishes on its own.
        call(H_PUT_TCE, &[LIOBN_4K, 0x10_1000, (pin + 0x1000) | 1]),
        call(H_GET_TCE, &[LIOBN_4K, 0x10_1000]),
        call(H_PUT_TCE_INDIRECT, &[LIOBN_4K, 0x10_4000, list, 4]),
        call(H_STUFF_TCE, &[LIOBN_4K, 0x10_0000, 0, 8]),
        call(H_GET_TCE, &[LIOBN_4K, 0x10_1000]),
        // Invalid: unknown LIOBN, misaligned IOBA, bits below the page, stuff with permission,
        // a list longer than 512, a TCE outside guest RAM, an unknown hypercall.
        call(H_PUT_TCE, &[0xdead, 0, pin | 3]),
        call(H_PUT_TCE, &[LIOBN_4K, 0x10_0800, pin | 3]),
        call(H_PUT_TCE, &[LIOBN_4K, 0x10_0000, pin | 0x13]),
        call(H_STUFF_TCE, &[LIOBN_4K, 0, 3, 1]),
        call(H_PUT_TCE_INDIRECT, &[LIOBN_4K, 0, list, 513]),
        call(H_PUT_TCE, &[LIOBN_4K, 0, (1 << 40) | 3]),
        call(0x1234, &[]),
        // Memory that is not preregistered: real mode declines, virtual mode refuses it.
        call(H_PUT_TCE, &[LIOBN_4K, 0x10_0000, unpinned | 3]),
        // A 64 KiB window over 64 KiB pinned pages.
        call(H_PUT_TCE, &[LIOBN_64K, 1 << 59, (32 << 20) | 3]),
        call(H_GET_TCE, &[LIOBN_64K, 1 << 59]),
        call(H_STUFF_TCE, &[LIOBN_64K, 1 << 59, 0, 1]),
    ];
    run_calls(&mut p, &calls)?;
    let got = codes(&p);
    let func = HcallResult::Function.code();
    let want = [
        (OK, Path::Virtual),
        (OK, Path::Real),
        (OK, Path::Real),
        (OK, Path::Real),
        (OK, Path::Real),
        (OK, Path::Real),
        (PARAM, Path::Real),
        (PARAM, Path::Real),
        (PARAM, Path::Real),
        (PARAM, Path::Real),
        (PARAM, Path::Real),
        (PARAM, Path::Real),
        (func, Path::Other),
        (PARAM, Path::Virtual),
    ];
    for (i, w) in want.iter().enumerate() {
        kassert_eq!(got[i], *w, "call {i}");
    }
    kassert_eq!(
        p.trace[2].r4,
        (pin + 0x1000) | 1,
        "H_GET_TCE returns the TCE"
    );
    kassert_eq!(p.trace[5].r4, 0, "cleared by H_STUFF_TCE");
    kassert!(
        p.guest
            .mem
            .region_for(pin_ua, 1)
            .and_then(|r| r.pinned_page(pin_ua))
            .is_some_and(|pp| pp.is_dirty()),
        "a page a device could write was not marked dirty in its region when its TCE went"
    );
    // The 64K window: the first map allocates (virtual), the rest complete in real mode.
    kassert_eq!(p.trace[14].r3, OK);
    kassert_eq!(p.trace[15].r4, (32 << 20) | 3);
    kassert_eq!(p.trace[16].r3, OK);
    let after = stats(&p);
    kassert!(
        after.0 > before.0 && after.1 >= before.1 + 2 && after.2 > before.2,
        "H_PUT_TCE counters did not move as expected: {before:?} -> {after:?}"
    );
    kassert!(
        p.trace
            .iter()
            .filter(|t| t.path == Path::Virtual)
            .all(|t| t.virt_state_ok),
        "a virtual-mode handler ran without MSR[IR|DR]"
    );
    Ok(())
}
ktest!(
    "hv.every_tce_hcall_through_sc1",
    every_tce_hcall_through_sc1
);

/// Writes a 16-entry list at `list` pointing into the pinned pool; returns the first target.
fn write_list(p: &Partition, list: u64) -> Result<u64, crate::kernel::testing::TestFailure> {
    let target = clean(p, 0x60_0000)?;
    for i in 0..16u64 {
        p.write_be64(list + 8 * i, (target + i * 0x1000) | 3)
            .map_err(|e| fail(e.0))?;
    }
    Ok(target)
}

/// The descriptor of the page holding guest physical `gpa` (through the vmemmap, MMU on).
fn guest_page_desc(p: &Partition, gpa: u64) -> Option<&'static crate::mm::PageDesc> {
    let hpa = p.host_phys(gpa)?;
    let v = mmu::virt_mode()?;
    crate::mm::PageDescriptors::page(crate::kernel::vmemmap::get(), v, hpa.pfn())
}

fn virtual_mode_reads_the_list_through_the_ua_mapping() -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    // The list lives in memory that is not preregistered, on a page real mode may not take a
    // reference on (compound): real mode declines; virtual mode reads the list through the
    // guest's ua, a virtual-only mapping.
    let list = UNPINNED_POOL.0 + 0x1000;
    let target = write_list(&p, list)?;
    let ua_list = p.ua.base + list;
    kassert!(
        ua_list >> 52 == 0xc00 && (ua_list & 0x000f_ffff_ffff_ffff) != list,
        "the ua {ua_list:#x} is not a virtual-only address"
    );
    kassert!(
        mmu::translate(ua_list).is_some(),
        "the list's ua is not mapped"
    );
    let d = guest_page_desc(&p, list).ok_or_else(|| fail("no descriptor for the list page"))?;
    d.set_flags(crate::mm::page::PG_COMPOUND);
    let reads = p.mem.ua_reads_translated.load(Ordering::Relaxed);
    let all_reads = p.mem.ua_reads.load(Ordering::Relaxed);
    let r = run_calls(
        &mut p,
        &[
            // The level first, so that only the list can send the indirect call away.
            call(H_PUT_TCE, &[LIOBN_4K, 0x20_0000, target | 3]),
            call(H_PUT_TCE_INDIRECT, &[LIOBN_4K, 0x20_0000, list, 16]),
            call(H_GET_TCE, &[LIOBN_4K, 0x20_f000]),
            call(H_STUFF_TCE, &[LIOBN_4K, 0x20_0000, 0, 16]),
        ],
    );
    d.clear_flags(crate::mm::page::PG_COMPOUND);
    r?;
    kassert_eq!(
        codes(&p)[1..3],
        [(OK, Path::Virtual), (OK, Path::Real)],
        "indirect through the ua, then a read in real mode"
    );
    kassert_eq!(p.trace[2].r4, (target + 0xf000) | 3);
    kassert_eq!(
        p.mem.ua_reads.load(Ordering::Relaxed) - all_reads,
        16,
        "list entries read through the ua"
    );
    kassert_eq!(
        p.mem.ua_reads_translated.load(Ordering::Relaxed) - reads,
        16,
        "ua reads with MSR[IR|DR] set"
    );
    kassert!(p.trace[1].virt_state_ok);
    Ok(())
}
ktest!(
    "hv.virtual_mode_reads_the_list_through_the_ua",
    virtual_mode_reads_the_list_through_the_ua_mapping
);

fn real_mode_reads_an_unpinned_list_through_the_walker() -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    let list = p
        .unstraddled(UNPINNED_POOL.0 + 0x2000, UNPINNED_POOL.1, 0x1000, 0x1000)
        .ok_or_else(|| fail("no unpinned page whose descriptor real mode can reach"))?;
    let target = write_list(&p, list)?;
    let walked = p
        .guest
        .stats
        .indirect
        .rm_list_walked
        .load(Ordering::Relaxed);
    let d = guest_page_desc(&p, list).ok_or_else(|| fail("no descriptor for the list page"))?;
    let count = d.count();
    run_calls(
        &mut p,
        &[
            call(H_PUT_TCE, &[LIOBN_4K, 0x28_0000, target | 3]),
            call(H_PUT_TCE_INDIRECT, &[LIOBN_4K, 0x28_0000, list, 16]),
            call(H_GET_TCE, &[LIOBN_4K, 0x28_f000]),
            call(H_STUFF_TCE, &[LIOBN_4K, 0x28_0000, 0, 16]),
        ],
    )?;
    kassert_eq!(
        codes(&p)[1],
        (OK, Path::Real),
        "the unpinned list in real mode"
    );
    kassert_eq!(p.trace[2].r4, (target + 0xf000) | 3);
    kassert_eq!(
        p.guest
            .stats
            .indirect
            .rm_list_walked
            .load(Ordering::Relaxed)
            - walked,
        1,
        "lists read through the walker"
    );
    kassert_eq!(
        d.count(),
        count,
        "the list page's reference was dropped again"
    );
    Ok(())
}
ktest!(
    "hv.real_mode_reads_an_unpinned_list_through_the_walker",
    real_mode_reads_an_unpinned_list_through_the_walker
);

fn registers_survive_every_kind_of_call() -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    p.force_virtual = false;
    let pin = clean(&p, 0x70_0000)?;
    let calls = [
        call(0x4242, &[1, 2, 3, 4, 5, 6, 7, 8]),
        call(H_PUT_TCE, &[LIOBN_4K, 0x30_0000, pin | 3]),
        call(H_PUT_TCE, &[LIOBN_4K, 0x30_1000, pin | 3]),
        call(H_GET_TCE, &[LIOBN_4K, 0x30_1000]),
        call(H_STUFF_TCE, &[LIOBN_4K, 0x30_0000, 0, 2]),
        call(H_PUT_TCE, &[0xbad, 0, 0]),
    ];
    // Once in real mode where it can, once with every call forced down the virtual path.
    run_calls(&mut p, &calls)?;
    p.force_virtual = true;
    let r = run_calls(&mut p, &calls);
    p.force_virtual = false;
    r?;
    kassert!(
        p.trace.iter().skip(1).all(|t| t.path == Path::Virtual),
        "forced calls did not take the virtual path"
    );
    Ok(())
}
ktest!(
    "hv.registers_survive_every_kind_of_call",
    registers_survive_every_kind_of_call
);

fn faulting_guests_are_stopped_and_reported() -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    for (what, act) in [
        ("illegal instruction", action::ILLEGAL),
        ("unmapped load", action::UNMAPPED_LOAD),
    ] {
        p.set_mailbox(act, &[], 1).map_err(|e| fail(e.0))?;
        let code = p.run();
        let stopped = code & EXIT_FAULT != 0 || (code & EXIT_GUEST != 0 && code & 0xffff != 0);
        kassert!(stopped, "{what}: {}", describe_exit(code));
        kassert!(
            code & EXIT_GUEST != 0 || p.fault.is_some(),
            "{what}: no state recorded"
        );
    }
    // The hypervisor carries on: the same partition runs a normal guest again.
    run_calls(&mut p, &[call(H_GET_TCE, &[LIOBN_4K, 0])])?;
    kassert_eq!(p.trace[0].r3, OK);
    kassert!(
        spr::msr().contains(Msr::IR | Msr::DR),
        "the host came back in real mode"
    );
    let _ = abi::MAX_CALLS;
    Ok(())
}
ktest!(
    "hv.faulting_guests_are_stopped_and_reported",
    faulting_guests_are_stopped_and_reported
);

/// Round trips from the guest's `sc 1` to its next instruction, counted exactly by the
/// insn-count plugin (the guest brackets each `sc 1` with the markers; `./qemu-run.sh bench`
/// loads the plugin).
fn bench_round_trips(out: Figures) -> BenchResult {
    let (Ok(mut p), Some(v)) = (partition(), mmu::virt_mode()) else {
        panic!("hcall benches: the guest partition could not be built");
    };
    assert!(
        p.reset(v),
        "hcall benches: could not reset the guest's windows"
    );
    // 4 MiB of pinned pages whose descriptors real mode can reach (see `unstraddled`).
    let base = p
        .unstraddled(PINNED_POOL.0, PINNED_POOL.1, 0x40_0000, 0x1_0000)
        .expect("pinned memory whose descriptors do not straddle");
    let list = base + 0x10_0000;
    for i in 0..512u64 {
        p.write_be64(list + 8 * i, (base + 0x20_0000 + i * 0x1000) | 3)
            .expect("the list is in guest RAM");
    }
    // Warm up: levels allocated, 512 entries mapped (the indirect bench replaces them).
    let warm = [
        call(H_PUT_TCE, &[LIOBN_4K, 0x40_0000, base | 3]),
        call(H_PUT_TCE, &[LIOBN_4K, 0x60_0000, base | 3]),
        call(H_PUT_TCE_INDIRECT, &[LIOBN_4K, 0x40_0000, list, 512]),
    ];
    if let Err(e) = run_calls(&mut p, &warm) {
        panic!("hcall benches: warm-up failed: {}", e.0);
    }
    let calls = [
        call(0x4242, &[]),
        call(H_PUT_TCE, &[LIOBN_4K, 0x60_1000, (base + 0x1000) | 3]),
        call(H_GET_TCE, &[LIOBN_4K, 0x60_1000]),
        call(H_PUT_TCE, &[LIOBN_4K, 0x60_1000, 0]),
        call(H_PUT_TCE_INDIRECT, &[LIOBN_4K, 0x40_0000, list, 512]),
        call(H_STUFF_TCE, &[LIOBN_4K, 0x40_0000, 0, 512]),
    ];
    let real = timed(&mut p, &calls)?;
    let paths: Vec<Path> = p.trace.iter().map(|t| t.path).collect();
    assert_eq!(
        paths[1..],
        [Path::Real; 5],
        "a benchmarked call left real mode (pinned memory at gpa {:#x})",
        base
    );
    p.force_virtual = true;
    let virt = timed(
        &mut p,
        &[call(H_PUT_TCE, &[LIOBN_4K, 0x60_2000, (base + 0x2000) | 3])],
    );
    p.force_virtual = false;
    let virt = virt?;
    assert_eq!(
        p.trace[0].path,
        Path::Virtual,
        "the forced call stayed in real mode"
    );
    out("hcall.null.insns", real[0], "insns");
    out("hcall.put_tce.real.insns", real[1], "insns");
    out("hcall.get_tce.real.insns", real[2], "insns");
    out("hcall.put_tce_clear.real.insns", real[3], "insns");
    out(
        "hcall.put_tce_indirect.real.insns_per_tce",
        real[4] / 512,
        "insns",
    );
    out("hcall.stuff_tce.real.insns_per_tce", real[5] / 512, "insns");
    out("hcall.put_tce.virt.insns", virt[0], "insns");
    out(
        "hcall.put_tce.virt_over_real.percent",
        virt[0] * 100 / real[1].max(1),
        "percent",
    );
    Ok(())
}
crate::kbench!("hcall.round_trips", bench_round_trips);

/// Runs `calls` once each between the count markers; the guest's count for each, or
/// `Unavailable` if the plugin wrote none.
pub(super) fn timed(p: &mut Partition, calls: &[Call]) -> Result<Vec<u64>, Unavailable> {
    p.set_mailbox(action::BENCH, calls, 1)
        .expect("the mailbox holds the calls");
    let code = p.run();
    assert_eq!(code, EXIT_GUEST, "hcall benches: {}", describe_exit(code));
    (0..calls.len())
        .map(|i| {
            let r = p.result(i);
            assert_eq!(r.r3 as i64, p.trace[i].r3, "call {i}: r3");
            if r.insns == u64::MAX {
                Err(Unavailable)
            } else {
                Ok(r.insns)
            }
        })
        .collect()
}
