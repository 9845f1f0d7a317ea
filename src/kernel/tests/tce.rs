//! TCE tables on the target: the same portable code as the host tests, run on ppc64le in
//! hypervisor real mode, reading back the raw bytes the PHB would read.
use crate::arch::ppc64::icount::count_instructions;
use crate::kernel::heap::HEAP;
use crate::kernel::testing::fail;
use crate::kernel::testing::{BenchResult, Figures, TestResult};
use crate::mm::HostPhys;
use crate::tce::{
    sparse_demo, HeapMemory, LockedVm, MayAlloc, Tce, TceGeometry, TcePerm, TceTable, TCE_INDIRECT,
};
use crate::{kassert, kassert_eq, kbench, ktest};

/// The 8 bytes at a physical address as they lie in memory (MMU off: physical = pointer).
fn bytes_at(pa: u64) -> [u8; 8] {
    // SAFETY: callers pass addresses of entries inside levels the table allocated and still owns.
    unsafe { core::ptr::read_volatile(HostPhys(pa).linear() as *const [u8; 8]) }
}

fn multilevel_table_is_big_endian_in_memory() -> TestResult {
    let heap_before = HEAP.free();
    {
        let mem = HeapMemory::new();
        let budget = LockedVm::new(1 << 30);
        // 3 levels, 4K IOMMU pages, 1 GiB window: 18 index bits over three 4 KiB levels
        // (the index is split by the level's own size: 9 bits per level, top level first).
        let geo = TceGeometry::new(0, 12, 1 << 30, 3).map_err(|e| fail(format_args!("{e:?}")))?;
        let table =
            TceTable::new(geo, 0, &mem, &budget).map_err(|e| fail(format_args!("{e:?}")))?;
        kassert_eq!(table.allocated_bytes().hardware, 4096);

        let hpa = 0x1234_5000u64;
        let bits = geo.level_bits();
        let mask = (1u64 << bits) - 1;
        let index = (1 << bits) | 7; // second leaf level, entry 7
        kassert!(
            table
                .set(index..index + 1, hpa, TcePerm::READ, MayAlloc::No)
                .is_err(),
            "set without permission must refuse"
        );
        kassert_eq!(table.allocated_bytes().hardware, 4096);
        table
            .set(
                index..index + 1,
                hpa,
                TcePerm::READ | TcePerm::WRITE,
                MayAlloc::Yes,
            )
            .map_err(|e| fail(format_args!("{e:?}")))?;
        kassert_eq!(
            table.get(index).map_err(|e| fail(format_args!("{e:?}")))?,
            Tce::new(hpa, TcePerm::READ | TcePerm::WRITE)
        );
        kassert_eq!(table.allocated_bytes().hardware, 3 * 4096);

        // Walk the tree by hand as the PHB does, reading big-endian bytes.
        let top = table.top_level_phys();
        let l1 = u64::from_be_bytes(bytes_at(top + ((index >> (2 * bits)) & mask) * 8));
        kassert_eq!(l1 & 3, TCE_INDIRECT);
        let l2 = u64::from_be_bytes(bytes_at((l1 & !0xfff) + ((index >> bits) & mask) * 8));
        kassert_eq!(l2 & 3, TCE_INDIRECT);
        let leaf_bytes = bytes_at((l2 & !0xfff) + (index & mask) * 8);
        kassert_eq!(leaf_bytes, (hpa | 3).to_be_bytes());
        kassert_eq!(
            leaf_bytes[7] & 3,
            3,
            "permission bits live in the last byte (big-endian)"
        );

        table
            .clear(index..index + 1)
            .map_err(|e| fail(format_args!("{e:?}")))?;
        kassert_eq!(
            table.get(index).map_err(|e| fail(format_args!("{e:?}")))?,
            Tce::NONE
        );
        kassert_eq!(bytes_at((l2 & !0xfff) + (index & mask) * 8), [0; 8]);
        table.free();
        kassert_eq!(mem.outstanding_bytes(), 0);
        kassert_eq!(budget.used(), 0);
    }
    kassert_eq!(HEAP.free(), heap_before, "the table leaked heap memory");
    Ok(())
}
ktest!(
    "tce.multilevel_table_is_big_endian_in_memory",
    multilevel_table_is_big_endian_in_memory
);

fn sparse_case_allocates_only_touched_levels() -> TestResult {
    let f = sparse_demo(HeapMemory::new()).map_err(|e| fail(format_args!("{e:?}")))?;
    kassert!(f.allocated_bytes * 100 <= f.touched_bytes * 105, "{f:?}");
    kassert!(
        f.owner_allocated_bytes * 100 <= f.touched_bytes * 105,
        "{f:?}"
    );
    kassert_eq!(f.flat_bytes, 4656 << 20);
    Ok(())
}
ktest!(
    "tce.sparse_case_allocates_only_touched_levels",
    sparse_case_allocates_only_touched_levels
);

fn bench_sparse(out: Figures) -> BenchResult {
    match sparse_demo(HeapMemory::new()) {
        Ok(f) => {
            out("tce.sparse.allocated_bytes", f.allocated_bytes, "bytes");
            out(
                "tce.sparse.owner_allocated_bytes",
                f.owner_allocated_bytes,
                "bytes",
            );
            out("tce.sparse.flat_bytes", f.flat_bytes, "bytes");
        }
        Err(e) => crate::kprintln!("tce.sparse failed: {e:?}"),
    }
    Ok(())
}
kbench!("tce.sparse", bench_sparse);

/// Instructions per set/get/clear of one entry of a 2-level table whose level is present,
/// averaged over 256 entries.
fn bench_ops(out: Figures) -> BenchResult {
    const N: u64 = 256;
    let mem = HeapMemory::new();
    let budget = LockedVm::new(1 << 30);
    let Ok(geo) = TceGeometry::new(0, 12, 1 << 30, 2) else {
        return Ok(());
    };
    let Ok(table) = TceTable::new(geo, 0, &mem, &budget) else {
        return Ok(());
    };
    let _ = table.prepare(0..N, MayAlloc::Yes);
    let perm = TcePerm::READ | TcePerm::WRITE;
    let (set, _) = count_instructions(|| {
        for i in 0..N {
            let _ = core::hint::black_box(table.set(
                i..i + 1,
                0x4000_0000 + (i << 12),
                perm,
                MayAlloc::No,
            ));
        }
    })?;
    let (get, _) = count_instructions(|| {
        for i in 0..N {
            let _ = core::hint::black_box(table.get(i));
        }
    })?;
    let (clear, _) = count_instructions(|| {
        for i in 0..N {
            let _ = core::hint::black_box(table.clear(i..i + 1));
        }
    })?;
    out("tce.set.insns", set / N, "insns");
    out("tce.get.insns", get / N, "insns");
    out("tce.clear.insns", clear / N, "insns");
    Ok(())
}
kbench!("tce.ops", bench_ops);
