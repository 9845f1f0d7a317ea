//! Host tests of `TceTable` over the counting `HeapMemory`.

use super::*;
use crate::tce::{HeapMemory, LockedVm, TceGeometry};

const RW: TcePerm = TcePerm::READ.union(TcePerm::WRITE);

fn geo(page_shift: u32, window: u64, levels: u32) -> TceGeometry {
    TceGeometry::new(0, page_shift, window, levels).unwrap()
}

/// 4K pages, 3 levels of 4 KiB (9 bits each): 2^27 entries.
fn three_level() -> TceGeometry {
    geo(12, 1 << 39, 3)
}

type Table<'a> = TceTable<&'a HeapMemory, &'a LockedVm>;

fn table<'a>(g: TceGeometry, mem: &'a HeapMemory, budget: &'a LockedVm) -> Table<'a> {
    TceTable::new(g, 0, mem, budget).unwrap()
}

/// Raw host-order value stored at `index` of the hardware view, read through memory.
fn raw_leaf(t: &Table<'_>, index: u64) -> Option<u64> {
    let g = *t.geometry();
    let mut level = t.top_level_phys();
    for d in 0..g.levels() - 1 {
        // SAFETY: `level` is a live level of `t`, the slot is in range.
        let e = u64::from_be(unsafe { t.memory().load(level + g.slot(index, d) * 8) });
        if e == 0 {
            return None;
        }
        assert_eq!(e & 0xfff, 0x3, "indirect entry = next level | 0x3");
        level = e & !0xfff;
        assert_eq!(level % g.level_size(), 0, "level naturally aligned");
    }
    // SAFETY: as above.
    Some(u64::from_be(unsafe {
        t.memory().load(level + g.slot(index, g.levels() - 1) * 8)
    }))
}

#[test]
fn creation_allocates_only_the_top_levels_and_charges_everything() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let g = three_level();
    let t = table(g, &mem, &budget);
    assert_eq!(mem.outstanding_levels(), 2);
    assert_eq!(mem.outstanding_bytes(), 2 * 4096);
    assert_eq!(
        t.allocated_bytes(),
        ViewBytes {
            hardware: 4096,
            owner: 4096
        }
    );
    // 1 top + 2^9 middle + 2^18 leaves, 4 KiB each, two views.
    let full = (1 + (1 << 9) + (1 << 18)) * 4096;
    assert_eq!(t.charged_bytes(), 2 * full);
    assert_eq!(budget.used(), 2 * full);
    assert_eq!(t.top_level_phys() % 4096, 0);
    assert_ne!(t.top_level_phys(), t.owner_top_level_phys());
    assert_eq!(
        (t.entries(), t.levels(), t.level_size()),
        (1 << 27, 3, 4096)
    );
    t.free();
    assert_eq!(budget.used(), 0);
    assert_eq!(mem.outstanding_bytes(), 0);
}

#[test]
fn creation_over_budget_is_refused_without_allocating() {
    let mem = HeapMemory::new();
    let g = three_level();
    let budget = LockedVm::new(2 * g.full_view_bytes() - 1);
    let r = TceTable::new(g, 0, &mem, &budget);
    assert_eq!(r.err(), Some(TceError::OverBudget));
    assert_eq!((mem.allocations(), budget.used()), (0, 0));
    // Exactly enough is fine.
    let budget = LockedVm::new(2 * g.full_view_bytes());
    TceTable::new(g, 0, &mem, &budget).unwrap().free();
}

#[test]
fn creation_alloc_failure_refunds_and_leaks_nothing() {
    let budget = LockedVm::new(u64::MAX);
    for ok_allocs in 0..2 {
        let mem = HeapMemory::new();
        mem.fail_after(ok_allocs);
        let r = TceTable::new(three_level(), 0, &mem, &budget);
        assert_eq!(r.err(), Some(TceError::AllocFailed));
        assert_eq!(mem.outstanding_bytes(), 0);
        assert_eq!(budget.used(), 0);
    }
}

#[test]
fn entries_are_stored_big_endian_as_the_phb_reads_them() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(three_level(), &mem, &budget);
    let idx = (3 << 18) | (5 << 9) | 7;
    t.exchange(idx, Tce::new(0x1234_5000, TcePerm::WRITE), MayAlloc::Yes)
        .unwrap();
    assert_eq!(raw_leaf(&t, idx), Some(0x1234_5002));
    // Byte image: most significant byte first.
    let g = *t.geometry();
    let mut level = t.top_level_phys();
    for d in 0..2 {
        // SAFETY: live level of `t`, slot in range.
        level = u64::from_be(unsafe { mem.load(level + g.slot(idx, d) * 8) }) & !0xfff;
    }
    // SAFETY: live leaf of `t`, slot 7 in range.
    let raw = unsafe { mem.load(level + 7 * 8) };
    assert_eq!(raw.to_ne_bytes(), [0, 0, 0, 0, 0x12, 0x34, 0x50, 0x02]);
}

#[test]
fn owner_leaves_are_stored_in_cpu_order_behind_big_endian_indirect_entries() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(three_level(), &mem, &budget);
    let idx = (3 << 18) | (5 << 9) | 7;
    t.owner_exchange(idx, 0x7fff_1234_5000, MayAlloc::Yes)
        .unwrap();
    let g = *t.geometry();
    let mut level = t.owner_top_level_phys();
    for d in 0..2 {
        // SAFETY: live level of `t`, slot in range.
        let e = u64::from_be(unsafe { mem.load(level + g.slot(idx, d) * 8) });
        assert_eq!(
            e & 0xfff,
            0x3,
            "indirect entries are big-endian in the owner view too"
        );
        level = e & !0xfff;
    }
    // SAFETY: live leaf of `t`, slot 7 in range.
    let raw = unsafe { mem.load(level + 7 * 8) };
    assert_eq!(raw, 0x7fff_1234_5000, "only software reads it: CPU order");
    assert_eq!(t.owner_get(idx), Ok(0x7fff_1234_5000));
}

#[test]
fn set_without_permission_reports_would_allocate_and_changes_nothing() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(three_level(), &mem, &budget);
    let before = t.allocated_bytes();
    assert_eq!(
        t.set(10..20, 0x10_0000, RW, MayAlloc::No),
        Err(TceError::WouldAllocate)
    );
    assert_eq!(t.allocated_bytes(), before);
    assert_eq!(mem.allocations(), 2);
    assert_eq!(t.get(10).unwrap(), Tce::NONE);
    // With permission: one middle and one leaf level, hardware view only.
    t.set(10..20, 0x10_0000, RW, MayAlloc::Yes).unwrap();
    assert_eq!(t.allocated_bytes().hardware, 3 * 4096);
    assert_eq!(t.allocated_bytes().owner, 4096);
    for i in 10..20 {
        assert_eq!(t.get(i).unwrap(), Tce::new(0x10_0000 + (i - 10) * 4096, RW));
    }
    assert_eq!(t.get(9).unwrap(), Tce::NONE);
    assert_eq!(t.get(20).unwrap(), Tce::NONE);
    // Now the levels exist: no permission needed.
    t.set(0..10, 0x40_0000, TcePerm::READ, MayAlloc::No)
        .unwrap();
    assert_eq!(
        t.get(9).unwrap(),
        Tce::new(0x40_0000 + 9 * 4096, TcePerm::READ)
    );
    // A range that needs one more leaf, without permission: nothing written, even in the
    // part whose leaf exists.
    assert_eq!(
        t.set(500..600, 0x80_0000, RW, MayAlloc::No),
        Err(TceError::WouldAllocate)
    );
    assert_eq!(t.get(500).unwrap(), Tce::NONE);
    t.set(500..600, 0x80_0000, RW, MayAlloc::Yes).unwrap();
    assert_eq!(t.get(599).unwrap(), Tce::new(0x80_0000 + 99 * 4096, RW));
    assert_eq!(t.allocated_bytes().hardware, 4 * 4096);
}

#[test]
fn set_checks_arguments() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(geo(16, 1 << 30, 2), &mem, &budget);
    let n = t.entries();
    assert_eq!(
        t.set(0..1, 0x1000, RW, MayAlloc::Yes),
        Err(TceError::Misaligned)
    );
    assert_eq!(
        t.set(n - 1..n + 1, 0, RW, MayAlloc::Yes),
        Err(TceError::OutOfWindow)
    );
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 5..4;
    assert_eq!(
        t.set(reversed, 0, RW, MayAlloc::Yes),
        Err(TceError::OutOfWindow)
    );
    assert_eq!(
        t.set(0..2, !0xffff, RW, MayAlloc::Yes),
        Err(TceError::AddressOverflow)
    );
    assert_eq!(t.get(n), Err(TceError::OutOfWindow));
    assert_eq!(t.owner_get(n), Err(TceError::OutOfWindow));
    assert_eq!(
        t.exchange(0, Tce::new(0x1000, RW), MayAlloc::Yes),
        Err(TceError::Misaligned)
    );
    // Nothing of the above allocated anything.
    assert_eq!(mem.allocations(), 2);
    // An empty range is a no-op, the last entry is reachable.
    t.set(3..3, 0, RW, MayAlloc::No).unwrap();
    t.set(n - 1..n, 0x30000, RW, MayAlloc::Yes).unwrap();
    assert_eq!(t.get(n - 1).unwrap().hpa(), 0x30000);
}

#[test]
fn exchange_returns_the_old_entry() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(three_level(), &mem, &budget);
    let a = Tce::new(0xa000, RW);
    let b = Tce::new(0xb000, TcePerm::READ);
    assert_eq!(
        t.exchange(77, a, MayAlloc::No),
        Err(TceError::WouldAllocate)
    );
    assert_eq!(mem.allocations(), 2);
    assert_eq!(t.exchange(77, a, MayAlloc::Yes), Ok(Tce::NONE));
    assert_eq!(t.exchange(77, b, MayAlloc::No), Ok(a));
    assert_eq!(t.get(77), Ok(b));
    assert_eq!(t.exchange(77, Tce::NONE, MayAlloc::No), Ok(b));
    assert_eq!(t.get(77), Ok(Tce::NONE));
}

#[test]
fn clearing_a_missing_path_never_allocates() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(three_level(), &mem, &budget);
    mem.fail_always();
    assert_eq!(t.exchange(1 << 20, Tce::NONE, MayAlloc::Yes), Ok(Tce::NONE));
    assert_eq!(t.owner_exchange(1 << 20, 0, MayAlloc::Yes), Ok(0));
    t.set(0..1 << 20, 0, TcePerm::empty(), MayAlloc::Yes)
        .unwrap();
    t.owner_set(0..1 << 20, 0, MayAlloc::Yes).unwrap();
    t.clear(0..t.entries()).unwrap();
    t.owner_clear(0..t.entries()).unwrap();
    assert_eq!(mem.allocations(), 2);
    assert_eq!(t.allocated_bytes().hardware, 4096);
}

#[test]
fn clear_skips_missing_levels_and_clears_across_leaves() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(three_level(), &mem, &budget);
    // Two islands, in different middle levels, each crossing a leaf boundary.
    let islands = [(500u64, 30u64), ((7 << 18) + 1000, 40)];
    for &(s, n) in &islands {
        t.set(s..s + n, 0x100_0000, RW, MayAlloc::Yes).unwrap();
        t.owner_set(s..s + n, 0x7000_0000, MayAlloc::Yes).unwrap();
    }
    let hw_before = t.allocated_bytes().hardware;
    assert_eq!(hw_before, (1 + 2 + 4) * 4096);
    mem.fail_always();
    // Clear the middle of the first island and all of the second via one big range.
    t.clear(510..(8 << 18)).unwrap();
    for i in 500..510 {
        assert!(
            !t.get(i).unwrap().is_none(),
            "entry {i} before the range kept"
        );
    }
    for i in (510..530).chain((7 << 18) + 1000..(7 << 18) + 1040) {
        assert!(t.get(i).unwrap().is_none(), "entry {i} cleared");
        assert_ne!(t.owner_get(i).unwrap(), 0, "owner view untouched");
    }
    // Levels stay (clear never frees a level: a concurrent walker may be inside it).
    assert_eq!(t.allocated_bytes().hardware, hw_before);
    t.owner_clear(0..t.entries()).unwrap();
    assert_eq!(t.owner_get(500).unwrap(), 0);
}

#[test]
fn owner_view_is_independent_with_the_same_geometry() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(three_level(), &mem, &budget);
    assert_eq!(
        t.owner_exchange(9, 0xdead_0000, MayAlloc::No),
        Err(TceError::WouldAllocate)
    );
    assert_eq!(t.owner_exchange(9, 0xdead_0000, MayAlloc::Yes), Ok(0));
    assert_eq!(t.owner_get(9), Ok(0xdead_0000));
    assert_eq!(t.get(9), Ok(Tce::NONE));
    assert_eq!(t.allocated_bytes().owner, 3 * 4096);
    assert_eq!(t.allocated_bytes().hardware, 4096);
    t.owner_set(100..103, 0x7fff_1230, MayAlloc::No).unwrap();
    assert_eq!(t.owner_get(102), Ok(0x7fff_1230 + 2 * 4096));
    assert_eq!(
        t.owner_exchange(102, 0, MayAlloc::No),
        Ok(0x7fff_1230 + 2 * 4096)
    );
}

#[test]
fn prepare_covers_both_views_then_exchange_cannot_need_a_level() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(three_level(), &mem, &budget);
    // Hardware path exists, owner path does not: prepare(No) must still refuse.
    t.exchange(5, Tce::new(0x5000, RW), MayAlloc::Yes).unwrap();
    let before = t.allocated_bytes();
    assert_eq!(t.prepare(0..8, MayAlloc::No), Err(TceError::WouldAllocate));
    assert_eq!(t.allocated_bytes(), before);
    t.prepare(0..8, MayAlloc::Yes).unwrap();
    assert_eq!(t.prepare(0..8, MayAlloc::No), Ok(()));
    mem.fail_always();
    assert_eq!(
        t.exchange(6, Tce::new(0x6000, RW), MayAlloc::No),
        Ok(Tce::NONE)
    );
    assert_eq!(t.owner_exchange(6, 0x1_6000, MayAlloc::No), Ok(0));
    assert_eq!(t.allocated_bytes().owner, 3 * 4096);
}

#[test]
fn alloc_failure_mid_range_changes_nothing_and_leaks_nothing() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(three_level(), &mem, &budget);
    t.set(0..4, 0x1000, RW, MayAlloc::Yes).unwrap();
    let before = (t.allocated_bytes(), mem.outstanding_bytes());
    // Needs middles 1 and 2 (middle 0 exists) and 1024 more leaves.
    let range = 0..(2 << 18) + 1;
    for ok_allocs in [0, 1, 5, 600] {
        mem.fail_after(ok_allocs);
        assert_eq!(
            t.set(range.clone(), 0x1000_0000, RW, MayAlloc::Yes),
            Err(TceError::AllocFailed)
        );
        assert_eq!((t.allocated_bytes(), mem.outstanding_bytes()), before);
        assert_eq!(t.get(0).unwrap().hpa(), 0x1000, "existing entry untouched");
        assert_eq!(t.get(1 << 18).unwrap(), Tce::NONE);
        mem.fail_after(ok_allocs);
        assert_eq!(
            t.prepare(range.clone(), MayAlloc::Yes),
            Err(TceError::AllocFailed)
        );
        assert_eq!((t.allocated_bytes(), mem.outstanding_bytes()), before);
    }
    mem.never_fail();
    t.set(range.clone(), 0x1000_0000, RW, MayAlloc::Yes)
        .unwrap();
    // Middles 0 (existing), 1, 2 and leaves: 512 + 512 + 1.
    assert_eq!(t.allocated_bytes().hardware, (1 + 3 + 1025) * 4096);
    assert_eq!(t.get(2 << 18).unwrap().hpa(), 0x1000_0000 + (2 << 30));
}

#[test]
fn free_releases_every_level_of_both_views() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    {
        let t = table(three_level(), &mem, &budget);
        t.set(0..3000, 0, RW, MayAlloc::Yes).unwrap();
        t.prepare((5 << 18)..(5 << 18) + 1, MayAlloc::Yes).unwrap();
        t.owner_set((100 << 18)..(100 << 18) + 2, 0x9000, MayAlloc::Yes)
            .unwrap();
        let a = t.allocated_bytes();
        assert_eq!(mem.outstanding_bytes(), a.hardware + a.owner);
        assert!(mem.outstanding_levels() > 10);
        // Dropped here without calling free.
    }
    assert_eq!(mem.outstanding_bytes(), 0);
    assert_eq!(budget.used(), 0);
}

#[test]
fn one_level_table_never_allocates() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let g = geo(12, 1 << 30, 1);
    let t = table(g, &mem, &budget);
    assert_eq!(t.level_size(), 2 << 20);
    assert_eq!(t.charged_bytes(), 2 * (2 << 20));
    mem.fail_always();
    t.set(0..t.entries(), 0, RW, MayAlloc::No).unwrap();
    t.prepare(0..t.entries(), MayAlloc::No).unwrap();
    let last = t.entries() - 1;
    assert_eq!(t.get(last).unwrap().hpa(), last << 12);
    assert_eq!(raw_leaf(&t, last), Some((last << 12) | 3));
    t.free();
    assert_eq!(mem.outstanding_bytes(), 0);
}

#[test]
fn four_level_table_walks_all_levels() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    // 64K pages, 2^52 window: 36 bits over 4 levels = 9 bits (4 KiB) each. (Five levels of
    // at least 4 KiB would index 45 bits + the page: past the 55 bits the PHB decodes.)
    let g = geo(16, 1 << 52, 4);
    assert_eq!(g.level_size(), 4096);
    let t = table(g, &mem, &budget);
    let last = t.entries() - 1;
    let tce = Tce::new(0x7_0000, RW);
    assert_eq!(
        t.exchange(last, tce, MayAlloc::No),
        Err(TceError::WouldAllocate)
    );
    t.exchange(last, tce, MayAlloc::Yes).unwrap();
    assert_eq!(t.allocated_bytes().hardware, 4 * 4096);
    assert_eq!(t.get(last), Ok(tce));
    assert_eq!(raw_leaf(&t, last), Some(0x7_0003));
    assert_eq!(t.get(last - 1), Ok(Tce::NONE));
    assert_eq!(t.get(0), Ok(Tce::NONE));
    t.exchange(0, tce, MayAlloc::Yes).unwrap();
    assert_eq!(t.allocated_bytes().hardware, 7 * 4096);
    t.free();
    assert_eq!(mem.outstanding_bytes(), 0);
}

#[test]
fn smallest_window_is_one_page() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(geo(30, 1 << 30, 2), &mem, &budget);
    assert_eq!(t.entries(), 1);
    t.exchange(0, Tce::new(1 << 30, RW), MayAlloc::Yes).unwrap();
    assert_eq!(t.get(0).unwrap().hpa(), 1 << 30);
    assert_eq!(
        t.exchange(1, Tce::NONE, MayAlloc::Yes),
        Err(TceError::OutOfWindow)
    );
}

#[test]
fn concurrent_installs_keep_one_level_and_free_the_rest() {
    use std::sync::Arc;
    let mem = Arc::new(HeapMemory::new());
    let budget = Arc::new(LockedVm::new(u64::MAX));
    let t = Arc::new(TceTable::new(three_level(), 0, mem.clone(), budget.clone()).unwrap());
    let threads: std::vec::Vec<_> = (0..4u64)
        .map(|n| {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 0..64u64 {
                    let idx = (i << 12) | n;
                    t.exchange(idx, Tce::new(idx << 12, RW), MayAlloc::Yes)
                        .unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    for i in 0..64u64 {
        for n in 0..4 {
            let idx = (i << 12) | n;
            assert_eq!(t.get(idx).unwrap().hpa(), idx << 12);
        }
    }
    // Index bits 12.. spread over 8 leaves per middle: 1 middle, 64 leaves.
    assert_eq!(t.allocated_bytes().hardware, (1 + 1 + 64) * 4096);
    assert_eq!(mem.outstanding_bytes(), (1 + 1 + 64 + 1) * 4096);
    drop(t);
    assert_eq!(mem.outstanding_bytes(), 0);
    assert_eq!(budget.used(), 0);
}

mod model {
    //! Random operation sequences against a plain model: same results, and an error never
    //! changes an entry or installs a level.
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// 4K pages, 2^33 window, 3 levels of 9 bits: 8 middles of 512 leaves.
    const ENTRIES: u64 = 1 << 21;

    #[derive(Clone, Debug)]
    enum Op {
        Set(u64, u64, bool, bool),
        OwnerSet(u64, u64, bool),
        Exchange(u64, bool, bool),
        OwnerExchange(u64, bool, bool),
        Clear(u64, u64, bool),
        Prepare(u64, u64, bool),
        Get(u64),
    }

    fn index() -> impl Strategy<Value = u64> {
        // Clustered near level boundaries so ranges cross leaves and middles.
        (0..8u64, 0..4u64, 0..1100u64)
            .prop_map(|(m, l, o)| ((m << 18) + (l << 9) + o).min(ENTRIES - 1))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (index(), 0..1200u64, any::<bool>(), any::<bool>())
                .prop_map(|(i, n, a, f)| Op::Set(i, n, a, f)),
            (index(), 0..700u64, any::<bool>()).prop_map(|(i, n, a)| Op::OwnerSet(i, n, a)),
            (index(), any::<bool>(), any::<bool>()).prop_map(|(i, a, e)| Op::Exchange(i, a, e)),
            (index(), any::<bool>(), any::<bool>())
                .prop_map(|(i, a, e)| Op::OwnerExchange(i, a, e)),
            (index(), 0..1200u64, any::<bool>()).prop_map(|(i, n, o)| Op::Clear(i, n, o)),
            (index(), 0..1200u64, any::<bool>()).prop_map(|(i, n, a)| Op::Prepare(i, n, a)),
            index().prop_map(Op::Get),
        ]
    }

    #[derive(Default)]
    struct ModelView {
        entries: BTreeMap<u64, u64>,
        middles: BTreeSet<u64>,
        leaves: BTreeSet<u64>,
    }

    impl ModelView {
        fn missing(&self, lo: u64, hi: u64) -> bool {
            lo < hi
                && ((lo >> 18..=(hi - 1) >> 18).any(|m| !self.middles.contains(&m))
                    || (lo >> 9..=(hi - 1) >> 9).any(|l| !self.leaves.contains(&l)))
        }
        fn install(&mut self, lo: u64, hi: u64) {
            if lo < hi {
                self.middles.extend(lo >> 18..=(hi - 1) >> 18);
                self.leaves.extend(lo >> 9..=(hi - 1) >> 9);
            }
        }
        fn bytes(&self) -> u64 {
            (1 + self.middles.len() + self.leaves.len()) as u64 * 4096
        }
    }

    fn may(a: bool) -> MayAlloc {
        if a {
            MayAlloc::Yes
        } else {
            MayAlloc::No
        }
    }

    /// What a permitted or refused allocation does to the model.
    fn ensure(
        views: &mut [&mut ModelView],
        lo: u64,
        hi: u64,
        a: bool,
        fail: bool,
    ) -> Result<(), TceError> {
        if !views.iter().any(|v| v.missing(lo, hi)) {
            return Ok(());
        }
        if !a {
            return Err(TceError::WouldAllocate);
        }
        if fail {
            return Err(TceError::AllocFailed);
        }
        for v in views.iter_mut() {
            v.install(lo, hi);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn table_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
            let mem = HeapMemory::new();
            let budget = LockedVm::new(u64::MAX);
            let t = table(geo(12, 1 << 33, 3), &mem, &budget);
            let (mut hw, mut ow) = (ModelView::default(), ModelView::default());
            let mut touched = BTreeSet::new();
            for (k, op) in ops.into_iter().enumerate() {
                let page = |i: u64| (k as u64 + 1) << 24 | i << 12;
                match op {
                    Op::Set(i, n, a, fail) => {
                        let hi = (i + n).min(ENTRIES);
                        if fail { mem.fail_always() }
                        let want = ensure(&mut [&mut hw], i, hi, a, fail);
                        prop_assert_eq!(t.set(i..hi, page(0), RW, may(a)), want);
                        mem.never_fail();
                        if want.is_ok() {
                            for j in i..hi { hw.entries.insert(j, page(j - i) | 3); }
                        }
                    }
                    Op::OwnerSet(i, n, a) => {
                        let hi = (i + n).min(ENTRIES);
                        let want = ensure(&mut [&mut ow], i, hi, a, false);
                        prop_assert_eq!(t.owner_set(i..hi, page(0) + 5, may(a)), want);
                        if want.is_ok() {
                            for j in i..hi { ow.entries.insert(j, page(j - i) + 5); }
                        }
                    }
                    Op::Exchange(i, a, empty) => {
                        let new = if empty { Tce::NONE } else { Tce::new(page(0), TcePerm::READ) };
                        let want = if empty { Ok(()) } else { ensure(&mut [&mut hw], i, i + 1, a, false) };
                        let old = hw.entries.get(&i).copied().unwrap_or(0);
                        let got = t.exchange(i, new, may(a));
                        match want {
                            Ok(()) => {
                                prop_assert_eq!(got, Ok(Tce::from_bits(old)));
                                hw.entries.insert(i, new.bits());
                            }
                            Err(e) => prop_assert_eq!(got, Err(e)),
                        }
                    }
                    Op::OwnerExchange(i, a, empty) => {
                        let new = if empty { 0 } else { page(0) + 9 };
                        let want = if empty { Ok(()) } else { ensure(&mut [&mut ow], i, i + 1, a, false) };
                        let old = ow.entries.get(&i).copied().unwrap_or(0);
                        let got = t.owner_exchange(i, new, may(a));
                        match want {
                            Ok(()) => {
                                prop_assert_eq!(got, Ok(old));
                                ow.entries.insert(i, new);
                            }
                            Err(e) => prop_assert_eq!(got, Err(e)),
                        }
                    }
                    Op::Clear(i, n, owner) => {
                        let hi = (i + n).min(ENTRIES);
                        mem.fail_always();
                        if owner {
                            prop_assert_eq!(t.owner_clear(i..hi), Ok(()));
                            for j in i..hi { ow.entries.remove(&j); }
                        } else {
                            prop_assert_eq!(t.clear(i..hi), Ok(()));
                            for j in i..hi { hw.entries.remove(&j); }
                        }
                        mem.never_fail();
                    }
                    Op::Prepare(i, n, a) => {
                        let hi = (i + n).min(ENTRIES);
                        let want = ensure(&mut [&mut hw, &mut ow], i, hi, a, false);
                        prop_assert_eq!(t.prepare(i..hi, may(a)), want);
                    }
                    Op::Get(i) => {
                        let hw_want = hw.entries.get(&i).copied().unwrap_or(0);
                        prop_assert_eq!(t.get(i), Ok(Tce::from_bits(hw_want)));
                        let ow_want = ow.entries.get(&i).copied().unwrap_or(0);
                        prop_assert_eq!(t.owner_get(i), Ok(ow_want));
                    }
                }
                touched.extend(hw.entries.keys().chain(ow.entries.keys()).copied());
                prop_assert_eq!(
                    t.allocated_bytes(),
                    ViewBytes { hardware: hw.bytes(), owner: ow.bytes() }
                );
                prop_assert_eq!(mem.outstanding_bytes(), hw.bytes() + ow.bytes());
            }
            // Every index ever written (cleared ones included) reads as the model says.
            for &i in &touched {
                let hw_want = hw.entries.get(&i).copied().unwrap_or(0);
                prop_assert_eq!(t.get(i).unwrap().bits(), hw_want);
                let ow_want = ow.entries.get(&i).copied().unwrap_or(0);
                prop_assert_eq!(t.owner_get(i).unwrap(), ow_want);
            }
            drop(t);
            prop_assert_eq!(mem.outstanding_bytes(), 0);
            prop_assert_eq!(budget.used(), 0);
        }
    }
}

#[test]
fn holds_entries_sees_either_view_and_only_its_range() {
    let (mem, budget) = (HeapMemory::new(), LockedVm::new(u64::MAX));
    let t = table(three_level(), &mem, &budget);
    let far = 5u64 << 18; // another top-level slot: levels missing in between
    assert!(
        !t.holds_entries(0..t.entries()),
        "a new table holds nothing"
    );
    t.set(far..far + 1, 0x1000, RW, MayAlloc::Yes).unwrap();
    assert!(t.holds_entries(0..t.entries()));
    assert!(t.holds_entries(far..far + 1));
    assert!(!t.holds_entries(0..far), "entries before it");
    assert!(!t.holds_entries(far + 1..t.entries()), "entries after it");
    t.clear(far..far + 1).unwrap();
    assert!(
        !t.holds_entries(0..t.entries()),
        "levels stay, entries are gone"
    );
    // The owner view alone counts too.
    t.owner_set(far + 7..far + 8, 0xdead_0000, MayAlloc::Yes)
        .unwrap();
    assert!(t.holds_entries(far..far + 8));
    assert!(!t.holds_entries(far..far + 7));
    // A range past the window is clipped, not a panic.
    assert!(t.holds_entries(far..u64::MAX));
}

#[test]
fn read_run_equals_reading_each_entry() {
    let (mem, budget) = (HeapMemory::new(), LockedVm::new(u64::MAX));
    let t = table(three_level(), &mem, &budget);
    // Entries in two leaves, a gap of missing levels, and the owner view set apart.
    let a = (1u64 << 9) - 3;
    t.set(a..a + 6, 0x40_0000, RW, MayAlloc::Yes).unwrap();
    t.owner_set(a + 2..a + 9, 0x7000_0000, MayAlloc::Yes)
        .unwrap();
    let far = 3u64 << 18;
    t.set(far..far + 1, 0x9000, TcePerm::READ, MayAlloc::Yes)
        .unwrap();
    for (first, len) in [
        (a - 4, 20),
        (0, 3),
        (far - 2, 5),
        (a + 5, 1),
        (t.entries() - 2, 5),
    ] {
        let mut run = vec![(1, 1); len];
        t.read_run(first, &mut run);
        for (k, got) in run.iter().enumerate() {
            let i = first + k as u64;
            let want = (t.get(i).map_or(0, Tce::bits), t.owner_get(i).unwrap_or(0));
            assert_eq!(*got, want, "entry {i:#x} of the run from {first:#x}");
        }
    }
}

#[test]
fn exchange_run_equals_exchanging_each_entry() {
    let (mem, budget) = (HeapMemory::new(), LockedVm::new(u64::MAX));
    let (mem2, budget2) = (HeapMemory::new(), LockedVm::new(u64::MAX));
    let run = table(three_level(), &mem, &budget);
    let each = table(three_level(), &mem2, &budget2);
    // Two leaves prepared in both views; a mapping to replace in each.
    let a = (1u64 << 9) - 4;
    for t in [&run, &each] {
        t.prepare(a..a + 8, MayAlloc::Yes).unwrap();
        t.set(a + 1..a + 2, 0x7000, RW, MayAlloc::Yes).unwrap();
        t.owner_set(a + 1..a + 2, 0xaa_0000, MayAlloc::Yes).unwrap();
    }
    let news: Vec<(u64, u64)> = (0..8u64)
        .map(|i| match i % 3 {
            0 => (0, 0),
            _ => ((0x10_0000 + (i << 12)) | RW.bits(), 0xbb_0000 + (i << 12)),
        })
        .collect();
    let mut olds = vec![(9, 9); 8];
    run.exchange_run(a, &news, &mut olds).unwrap();
    for (i, &(tce, owner)) in news.iter().enumerate() {
        let i64_ = i as u64;
        let old_tce = each
            .exchange(a + i64_, Tce::from_bits(tce), MayAlloc::No)
            .unwrap();
        let old_owner = each.owner_exchange(a + i64_, owner, MayAlloc::No).unwrap();
        assert_eq!(
            olds[i],
            (old_tce.bits(), old_owner),
            "old pair of entry {i}"
        );
    }
    let mut after = vec![(0, 0); 8];
    let mut want = vec![(0, 0); 8];
    run.read_run(a, &mut after);
    each.read_run(a, &mut want);
    assert_eq!(after, want);

    // Stops at the first entry it cannot store: a missing level (clearing over one is fine)...
    let far = 9u64 << 18;
    let mut olds = [(0, 0); 3];
    assert_eq!(
        run.exchange_run(far, &[(0, 0), (0x5000 | 1, 0x9)], &mut olds[..2]),
        Err((1, TceError::WouldAllocate)),
        "clearing over a missing level is fine, mapping there is not"
    );
    // ...or a page misaligned for the table's 64 KiB pages, after storing those before it.
    let (mem3, budget3) = (HeapMemory::new(), LockedVm::new(u64::MAX));
    let big = table(geo(16, 1 << 32, 2), &mem3, &budget3);
    big.prepare(0..3, MayAlloc::Yes).unwrap();
    let bad = [
        (0x20_0000 | 1, 0x1),
        (0x20_1000 | 1, 0x2),
        (0x22_0000 | 1, 0x3),
    ];
    assert_eq!(
        big.exchange_run(0, &bad, &mut olds),
        Err((1, TceError::Misaligned))
    );
    assert_eq!(
        big.get(0).unwrap().bits(),
        0x20_0000 | 1,
        "the first one went in"
    );
    assert_eq!(big.get(1).unwrap(), Tce::NONE, "the refused one did not");
    assert_eq!(big.owner_get(1).unwrap(), 0, "nor its owner");
    assert!(!run.holds_entries(far..far + 2));
    assert_eq!(
        run.exchange_run(run.entries() - 1, &[(0, 0), (0, 0)], &mut olds[..2]),
        Err((0, TceError::OutOfWindow))
    );
}

#[test]
fn precomputed_slots_equal_the_geometry() {
    let (mem, budget) = (HeapMemory::new(), LockedVm::new(u64::MAX));
    for (shift, window, levels) in [
        (12, 1u64 << 30, 1),
        (12, 1 << 39, 3),
        (16, 1 << 40, 4),
        (21, 1 << 48, 2),
    ] {
        let g = geo(shift, window, levels);
        let t = table(g, &mem, &budget);
        for index in [0, 1, 511, 512, g.entries() / 3, g.entries() - 1] {
            for d in 0..levels {
                assert_eq!(
                    t.slot(index, d),
                    g.slot(index, d),
                    "{g:?} index {index:#x} depth {d}"
                );
            }
        }
    }
}

#[test]
fn holds_entries_on_a_flat_table() {
    let (mem, budget) = (HeapMemory::new(), LockedVm::new(u64::MAX));
    let t = table(geo(12, 1 << 22, 1), &mem, &budget);
    assert!(
        !t.holds_entries(0..t.entries()),
        "a new flat table holds nothing"
    );
    t.owner_set(1000..1001, 0x4000_0000, MayAlloc::No).unwrap();
    assert!(t.holds_entries(0..t.entries()));
    assert!(!t.holds_entries(0..1000));
    t.owner_clear(1000..1001).unwrap();
    assert!(!t.holds_entries(0..t.entries()), "cleared again");
}

#[test]
fn prepare_exchange_is_prepare_then_both_exchanges() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(three_level(), &mem, &budget);
    let u = table(three_level(), &mem, &budget);
    let rw = Tce::new(0x5000, RW).bits();
    // Hardware path exists, owner path does not: without allocation both refuse, and nothing
    // changes.
    for x in [&t, &u] {
        x.exchange(5, Tce::new(0x5000, RW), MayAlloc::Yes).unwrap();
    }
    let before = t.allocated_bytes();
    assert_eq!(
        t.prepare_exchange(6, rw, 0x1_6000, MayAlloc::No),
        Err(TceError::WouldAllocate)
    );
    assert_eq!(u.prepare(6..7, MayAlloc::No), Err(TceError::WouldAllocate));
    assert_eq!((t.get(6), t.owner_get(6)), (Ok(Tce::NONE), Ok(0)));
    assert_eq!(t.allocated_bytes(), before);
    // Allocating: the same levels as `prepare`, the same old pairs as the two exchanges.
    let news = [
        (rw, 0x1_6000),
        (Tce::new(0x7000, TcePerm::READ).bits(), 0x1_7000),
        (0, 0),
    ];
    for (tce, owner) in news {
        let got = t.prepare_exchange(6, tce, owner, MayAlloc::Yes);
        u.prepare(6..7, MayAlloc::Yes).unwrap();
        let old_owner = u.owner_exchange(6, owner, MayAlloc::No).unwrap();
        let old = u.exchange(6, Tce::from_bits(tce), MayAlloc::No).unwrap();
        assert_eq!(got, Ok((old.bits(), old_owner)), "storing {tce:#x}");
        assert_eq!((t.get(6), t.owner_get(6)), (u.get(6), u.owner_get(6)));
        assert_eq!(t.allocated_bytes(), u.allocated_bytes());
    }
    // An index past the window changes nothing.
    let past = t.entries();
    assert_eq!(
        t.prepare_exchange(past, rw, 1, MayAlloc::Yes),
        Err(TceError::OutOfWindow)
    );
    assert_eq!((t.get(7), t.owner_get(7)), (Ok(Tce::NONE), Ok(0)));
    assert!(t.holds_entries(5..6), "the written flag is kept");
}

#[test]
fn exchange_both_is_both_exchanges_all_or_nothing() {
    let mem = HeapMemory::new();
    let budget = LockedVm::new(u64::MAX);
    let t = table(three_level(), &mem, &budget);
    let rw = Tce::new(0x5000, RW).bits();
    // Hardware path only: a mapping needs the owner's level too, so nothing changes.
    t.exchange(5, Tce::new(0x5000, RW), MayAlloc::Yes).unwrap();
    assert_eq!(
        t.exchange_both(5, rw, 0x1_5000),
        Err(TceError::WouldAllocate)
    );
    assert_eq!((t.get(5), t.owner_get(5)), (Ok(Tce::from_bits(rw)), Ok(0)));
    // Clearing where the owner level is missing: the hardware entry goes, nothing allocated.
    let before = t.allocated_bytes();
    assert_eq!(t.exchange_both(5, 0, 0), Ok((rw, 0)));
    assert_eq!(t.allocated_bytes(), before);
    // Both levels present: the old pair back, the new one stored in both views.
    t.prepare(5..6, MayAlloc::Yes).unwrap();
    assert_eq!(t.exchange_both(5, rw, 0x1_5000), Ok((0, 0)));
    let ro = Tce::new(0x6000, TcePerm::READ).bits();
    assert_eq!(t.exchange_both(5, ro, 0x1_6000), Ok((rw, 0x1_5000)));
    assert_eq!(
        (t.get(5), t.owner_get(5)),
        (Ok(Tce::from_bits(ro)), Ok(0x1_6000))
    );
    assert_eq!(
        t.exchange_both(t.entries(), 0, 0),
        Err(TceError::OutOfWindow)
    );
}
