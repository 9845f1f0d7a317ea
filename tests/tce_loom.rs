//! Model-checks lock-free level installation: two threads `set` the same index of a 2-level
//! table whose leaf level is missing. loom explores every interleaving of the loom atomics.

use std::sync::Arc;

use loom::sync::atomic::AtomicU64;
// The allocator's bookkeeping is not what is being checked: plain atomics keep it out of the
// model (loom explores only the table's entries).
use p9iommu::tce::{
    AllocError, LockedVm, MayAlloc, Tce, TceGeometry, TceMemory, TcePerm, TceTable,
};
use std::sync::atomic::{AtomicU64 as StdAtomicU64, AtomicUsize, Ordering};

const LEVEL_BYTES: usize = 4096;
const WORDS: usize = LEVEL_BYTES / 8;
/// Two tops and one leaf candidate per thread.
const LEVELS: usize = 4;
/// "Physical" address of arena level 0; any aligned nonzero value.
const BASE: u64 = 1 << 20;

/// Levels made of loom atomics, handed out by a bump allocator (never reused, so a stale
/// access would hit a level marked free and be caught).
struct LoomArena {
    cells: Vec<AtomicU64>,
    next: AtomicUsize,
    live: Vec<StdAtomicU64>,
}

impl LoomArena {
    fn new() -> Self {
        LoomArena {
            cells: (0..LEVELS * WORDS).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
            live: (0..LEVELS).map(|_| StdAtomicU64::new(0)).collect(),
        }
    }

    fn outstanding(&self) -> u64 {
        self.live.iter().map(|l| l.load(Ordering::SeqCst)).sum()
    }

    fn cell(&self, phys: u64) -> &AtomicU64 {
        let word = ((phys - BASE) / 8) as usize;
        let level = word / WORDS;
        assert_eq!(
            self.live[level].load(Ordering::SeqCst),
            1,
            "access to a free level"
        );
        &self.cells[word]
    }
}

impl TceMemory for LoomArena {
    fn alloc_level(&self, size: usize, _node: u32) -> Result<u64, AllocError> {
        assert_eq!(size, LEVEL_BYTES);
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        if n >= LEVELS {
            return Err(AllocError);
        }
        self.live[n].store(1, Ordering::SeqCst);
        Ok(BASE + (n * LEVEL_BYTES) as u64)
    }
    unsafe fn free_level(&self, phys: u64, size: usize) {
        assert_eq!(size, LEVEL_BYTES);
        let level = ((phys - BASE) as usize) / LEVEL_BYTES;
        assert_eq!(self.live[level].swap(0, Ordering::SeqCst), 1, "double free");
    }
    unsafe fn load(&self, phys: u64) -> u64 {
        self.cell(phys).load(Ordering::Acquire)
    }
    unsafe fn store(&self, phys: u64, raw: u64) {
        self.cell(phys).store(raw, Ordering::Release)
    }
    unsafe fn swap(&self, phys: u64, raw: u64) -> u64 {
        self.cell(phys).swap(raw, Ordering::AcqRel)
    }
    unsafe fn compare_exchange(&self, phys: u64, current: u64, new: u64) -> Result<u64, u64> {
        self.cell(phys)
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
    }
}

#[test]
fn two_threads_install_the_same_level() {
    // Freeing and measuring walk all 512 entries of a level: raise the branch limit (those
    // steps run on one thread and add no interleavings).
    let mut model = loom::model::Builder::new();
    model.max_branches = 20_000;
    model.check(|| {
        // 4K pages, 2^30 window: 18 index bits = 2 levels of 512 entries (4 KiB).
        let geo = TceGeometry::new(0, 12, 1 << 30, 2).unwrap();
        let mem = Arc::new(LoomArena::new());
        let budget = Arc::new(LockedVm::new(u64::MAX));
        let table = Arc::new(TceTable::new(geo, 0, mem.clone(), budget.clone()).unwrap());
        assert_eq!(mem.outstanding(), 2);

        // Same leaf level, different entries, so both must survive.
        let index = |n: u64| (7 << 9) | n;
        let th: Vec<_> = (0..2u64)
            .map(|n| {
                let table = table.clone();
                loom::thread::spawn(move || {
                    let tce = Tce::new((n + 1) << 12, TcePerm::READ | TcePerm::WRITE);
                    table.set(index(n)..index(n) + 1, tce.hpa(), tce.perm(), MayAlloc::Yes)
                })
            })
            .collect();
        for t in th {
            t.join().unwrap().unwrap();
        }

        // Exactly one leaf installed; the loser freed its copy.
        assert_eq!(mem.outstanding(), 3);
        assert_eq!(table.allocated_bytes().hardware, 2 * 4096);
        for n in 0..2u64 {
            assert_eq!(table.get(index(n)).unwrap().hpa(), (n + 1) << 12);
        }
        drop(table);
        assert_eq!(mem.outstanding(), 0);
        assert_eq!(budget.used(), 0);
    });
}
