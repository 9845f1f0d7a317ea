//! The TCE hypercall handlers on ppc64le with the MMU off: the real-mode handlers run under the
//! kernel's guarded allocator (any allocation fails the test), and read guest memory, tables and
//! page descriptors by physical address, big-endian, as they will on hardware.
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::arch::ppc64::icount::count_instructions;
use crate::hcall::sim::World;
use crate::hcall::{
    fuzz, HcallResult, Mode, H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE,
};
use crate::kernel::testing::fail;
use crate::kernel::testing::{BenchResult, TestResult};
use crate::mm::alloc_guard;
use crate::tce::{Tce, TcePerm};
use crate::{kassert, kassert_eq, ktest};

const LIOBN: u64 = 0x8000_0001;
const SUCCESS: i64 = HcallResult::Success.code();
const TOO_HARD: i64 = HcallResult::TooHard.code();

/// A guest with 4 MiB of RAM at guest physical 0, all preregistered in 4 KiB pages, and one
/// 1 GiB window of 4 KiB IOMMU pages backed by one 2-level hardware table.
fn world() -> World {
    let mut w = World::new(4 << 20);
    w.memslot(0, 4 << 20, 0).expect("memslot");
    w.prereg(0, 4 << 20, 12).expect("prereg");
    w.window(LIOBN, 0, 12, 1 << 30, &[(12, 2)]).expect("window");
    w
}

fn real_mode_handlers_complete_on_target() -> TestResult {
    let violations = alloc_guard::violations();
    let mut w = world();
    let rw = TcePerm::READ | TcePerm::WRITE;

    // The first map needs a table level: real mode declines, having changed nothing, and
    // virtual mode allocates it.
    let before = w.snapshot();
    kassert_eq!(
        w.call(Mode::Real, H_PUT_TCE, [LIOBN, 0x1000, 0x2000 | 3, 0])
            .0,
        TOO_HARD
    );
    kassert!(
        w.snapshot() == before,
        "real mode changed state while declining"
    );
    kassert_eq!(
        w.call(Mode::Virtual, H_PUT_TCE, [LIOBN, 0x1000, 0x2000 | 3, 0])
            .0,
        SUCCESS
    );

    // Now the level exists: real mode finishes on its own.
    kassert_eq!(
        w.call(Mode::Real, H_PUT_TCE, [LIOBN, 0x3000, 0x5000 | 1, 0])
            .0,
        SUCCESS
    );
    kassert_eq!(
        w.call(Mode::Real, H_GET_TCE, [LIOBN, 0x3000, 0, 0]),
        (SUCCESS, 0x5000 | 1)
    );

    // H_PUT_TCE_INDIRECT with the list in preregistered memory, read big-endian by physical
    // address.
    let list_gpa = 0x10_0000;
    for i in 0..8u64 {
        kassert!(w.write_guest(list_gpa + i * 8, (0x20_0000 + i * 0x1000) | 3));
    }
    kassert_eq!(
        w.call(Mode::Real, H_PUT_TCE_INDIRECT, [LIOBN, 0x8000, list_gpa, 8])
            .0,
        SUCCESS
    );

    let table = &w.tables[0].table;
    kassert_eq!(
        table.get(1).map_err(|_| fail("get 1"))?,
        Tce::new(w.host.hpa(0x2000), rw)
    );
    kassert_eq!(
        table.get(3).map_err(|_| fail("get 3"))?,
        Tce::new(w.host.hpa(0x5000), TcePerm::READ)
    );
    for i in 0..8u64 {
        kassert_eq!(
            table.get(8 + i).map_err(|_| fail("get"))?,
            Tce::new(w.host.hpa(0x20_0000 + i * 0x1000), rw)
        );
    }
    if let Err(e) = w.check() {
        return Err(fail(&e));
    }

    // Clear everything in real mode; references and counts go back to their baseline.
    kassert_eq!(
        w.call(Mode::Real, H_STUFF_TCE, [LIOBN, 0, 0, 16]).0,
        SUCCESS
    );
    for i in 0..16 {
        kassert_eq!(table.get(i).map_err(|_| fail("get"))?, Tce::NONE);
    }
    let stats = &w.guest.stats;
    kassert_eq!(stats.put.rm_done.load(Ordering::Relaxed), 1);
    kassert_eq!(stats.put.rm_too_hard.load(Ordering::Relaxed), 1);
    kassert_eq!(stats.indirect.rm_done.load(Ordering::Relaxed), 1);
    kassert_eq!(stats.stuff.rm_done.load(Ordering::Relaxed), 1);
    if let Err(e) = w.teardown() {
        return Err(fail(&e));
    }
    kassert_eq!(
        alloc_guard::violations(),
        violations,
        "a real-mode handler allocated"
    );
    Ok(())
}
ktest!(
    "hcall.real_mode_handlers_complete_on_target",
    real_mode_handlers_complete_on_target
);

/// Deterministic pseudo-random inputs (xorshift64*): the same inputs on every run.
fn inputs(n: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..n).map(move |_| {
        let len = 16 + (next() % 240) as usize;
        (0..len).map(|_| next() as u8).collect()
    })
}

/// The fuzz harness's properties (no panic, hardware TCEs only into pinned guest memory,
/// declines change nothing, teardown back to baseline) hold on the target too.
fn fuzz_properties_hold_on_target() -> TestResult {
    let violations = alloc_guard::violations();
    for data in inputs(48) {
        fuzz::run_one(&data);
    }
    kassert_eq!(
        alloc_guard::violations(),
        violations,
        "a real-mode handler allocated"
    );
    Ok(())
}
ktest!(
    "hcall.fuzz_properties_hold_on_target",
    fuzz_properties_hold_on_target
);

/// Instructions per real-mode hypercall on a warm window (levels and guest-view pages present):
/// the hot path a network card's per-packet map/unmap takes. Averaged over 64 calls each.
fn bench_real_mode(out: crate::kernel::testing::Figures) -> BenchResult {
    const N: u64 = 64;
    let w = world();
    // Warm up: virtual mode allocates the levels and guest-view page real mode needs.
    let _ = w.hcall(H_PUT_TCE, [LIOBN, 0, 0x1000 | 3, 0]);
    let (put, _) = count_instructions(|| {
        for i in 0..N {
            let r = w.call(
                Mode::Real,
                H_PUT_TCE,
                [LIOBN, i << 12, ((i + 1) << 12) | 3, 0],
            );
            core::hint::black_box(r);
        }
    })?;
    let (get, _) = count_instructions(|| {
        for i in 0..N {
            core::hint::black_box(w.call(Mode::Real, H_GET_TCE, [LIOBN, i << 12, 0, 0]));
        }
    })?;
    let (clear, _) = count_instructions(|| {
        for i in 0..N {
            core::hint::black_box(w.call(Mode::Real, H_PUT_TCE, [LIOBN, i << 12, 0, 0]));
        }
    })?;
    let list = 0x10_0000;
    for i in 0..512u64 {
        w.write_guest(list + i * 8, ((i + 1) << 12) | 3);
    }
    let _ = w.hcall(H_PUT_TCE_INDIRECT, [LIOBN, 0, list, 512]);
    let (indirect, r) =
        count_instructions(|| w.call(Mode::Real, H_PUT_TCE_INDIRECT, [LIOBN, 0, list, 512]))?;
    out("hcall.put_tce.rm.insns", put / N, "insns");
    out("hcall.get_tce.rm.insns", get / N, "insns");
    out("hcall.put_tce_clear.rm.insns", clear / N, "insns");
    if r.0 == SUCCESS {
        out(
            "hcall.put_tce_indirect_512.rm.insns_per_tce",
            indirect / 512,
            "insns",
        );
    } else {
        crate::kprintln!("hcall.put_tce_indirect_512: real mode returned {}", r.0);
    }
    Ok(())
}
crate::kbench!("hcall.real_mode", bench_real_mode);
