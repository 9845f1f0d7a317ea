//! The demo (`./qemu-run.sh`): the component's pieces working together on the target, narrated
//! on the console. Returns whether every step did what it should.
use core::sync::atomic::Ordering;

use crate::hcall::sim::World;
use crate::hcall::{HcallResult, H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE};
use crate::kernel::heap::HEAP;
use crate::kprintln;
use crate::tce::{sparse_demo, HeapMemory};

pub fn run() -> bool {
    kprintln!("p9iommu: demo");
    kprintln!(
        "  heap: {} KiB free of {} KiB",
        HEAP.free() >> 10,
        HEAP.size() >> 10
    );
    let ok = sparse_tables() && hypercalls();
    kprintln!("p9iommu: demo {}", if ok { "done" } else { "FAILED" });
    ok
}

/// The seed's sparse guest: 16 GiB of RAM at 0 and 16 GiB of device memory at 0x244000000000,
/// 64K IOMMU pages, one 3-level window: levels are allocated only where something is mapped.
fn sparse_tables() -> bool {
    kprintln!(
        "  [tce] mapping the seed's sparse guest (16 GiB RAM + 16 GiB device memory, 64K pages)..."
    );
    match sparse_demo(HeapMemory::new()) {
        Ok(f) => {
            kprintln!(
                "  [tce] allocated {} KiB per view for a {} GiB window; a flat table would take {} MiB",
                f.allocated_bytes >> 10,
                f.window_size >> 30,
                f.flat_bytes >> 20
            );
            true
        }
        Err(e) => {
            kprintln!("  [tce] FAILED: {e:?}");
            false
        }
    }
}

/// A guest maps and unmaps DMA pages with the four hypercalls: real mode first, virtual mode
/// when real mode declines.
fn hypercalls() -> bool {
    const LIOBN: u64 = 0x8000_0001;
    let mut w = World::new(4 << 20);
    if w.memslot(0, 4 << 20, 0).is_err()
        || w.prereg(0, 4 << 20, 12).is_err()
        || w.window(LIOBN, 0, 12, 1 << 30, &[(12, 2)]).is_err()
    {
        kprintln!("  [hcall] FAILED to set up the guest");
        return false;
    }
    kprintln!("  [hcall] guest: 4 MiB RAM preregistered, window LIOBN {LIOBN:#x} (1 GiB, 4K pages, 2-level table)");
    let ok = HcallResult::Success.code();
    let mut good = true;
    let mut step = |what: &str, nr: u64, args: [u64; 4], want: (i64, Option<u64>)| {
        let (r3, r4) = w.hcall(nr, args);
        let pass = r3 == want.0 && want.1.is_none_or(|v| v == r4);
        kprintln!(
            "  [hcall] {what}: r3={r3} r4={r4:#x} {}",
            if pass { "" } else { "UNEXPECTED" }
        );
        good &= pass;
    };
    step(
        "H_PUT_TCE ioba 0x1000 -> gpa 0x2000 rw",
        H_PUT_TCE,
        [LIOBN, 0x1000, 0x2000 | 3, 0],
        (ok, None),
    );
    step(
        "H_GET_TCE ioba 0x1000",
        H_GET_TCE,
        [LIOBN, 0x1000, 0, 0],
        (ok, Some(0x2000 | 3)),
    );
    for i in 0..16u64 {
        w.write_guest(0x10_0000 + i * 8, (0x20_0000 + i * 0x1000) | 1);
    }
    step(
        "H_PUT_TCE_INDIRECT 16 TCEs at ioba 0x10000",
        H_PUT_TCE_INDIRECT,
        [LIOBN, 0x10000, 0x10_0000, 16],
        (ok, None),
    );
    step(
        "H_PUT_TCE unaligned ioba (guest error)",
        H_PUT_TCE,
        [LIOBN, 0x1001, 0x2000 | 3, 0],
        (HcallResult::Parameter.code(), None),
    );
    step(
        "H_STUFF_TCE clear 32 entries",
        H_STUFF_TCE,
        [LIOBN, 0, 0, 32],
        (ok, None),
    );
    let s = &w.guest.stats;
    kprintln!(
        "  [hcall] real mode finished {} calls, declined {} with H_TOO_HARD (completed in virtual mode), {} guest errors",
        s.put.rm_done.load(Ordering::Relaxed) + s.get.rm_done.load(Ordering::Relaxed) + s.stuff.rm_done.load(Ordering::Relaxed) + s.indirect.rm_done.load(Ordering::Relaxed),
        s.put.rm_too_hard.load(Ordering::Relaxed) + s.stuff.rm_too_hard.load(Ordering::Relaxed) + s.indirect.rm_too_hard.load(Ordering::Relaxed),
        s.put.errors_of(HcallResult::Parameter)
    );
    if let Err(e) = w.teardown() {
        kprintln!("  [hcall] teardown FAILED: {e}");
        good = false;
    }
    good
}
