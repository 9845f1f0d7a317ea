//! The dispatcher harness's oracle catches each kind of bug it is there for: one injected bug
//! per property (`p9iommu::hcall::fuzz::Fault`), each run through the harness as the fuzzer
//! runs an input, must come back as a finding of that property (a panic for a panic). And the
//! harness's reuse of one world between inputs changes no outcome.

use p9iommu::hcall::fuzz::{
    oracle, At, Fault, Finding, Harness, Layout, Op, Property, RAM, WINDOWS,
};
use p9iommu::hcall::sim::Lie;
use p9iommu::hcall::{H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT};
use p9iommu::mm::alloc_guard::GuardedAllocator;
use p9iommu::mm::{PageDescriptors, Pfn};

#[global_allocator]
static ALLOC: GuardedAllocator<std::alloc::System> = GuardedAllocator::new(std::alloc::System);

const RW: u64 = 3;
const W1: u64 = WINDOWS[0].0;

/// Preregistered RAM in 64 KiB pages, window 1 a flat table, window 2 without tables.
const LAYOUT: Layout = Layout {
    prereg_shift: 16,
    w2_tables: [(0, 0), (0, 0)],
    w1_levels: 1,
    compound: None,
    rm_walk: false,
};

/// Maps window 1 entry `index` to guest page `page` (4 KiB, preregistered: page < 256).
fn put(index: u64, page: u64) -> Op {
    Op::Call(H_PUT_TCE, [W1, index << 12, (page << 12) | RW, 0])
}

fn get(index: u64) -> Op {
    Op::Call(H_GET_TCE, [W1, index << 12, 0, 0])
}

/// Runs `ops` with `fault` injected and returns the finding.
fn finding(fault: Fault, layout: Layout, ops: &[Op]) -> Finding {
    let mut h = Harness::new();
    h.set_self_check(true);
    h.inject(fault);
    match h.run_ops(&layout, ops) {
        Err(f) => f,
        Ok(o) => panic!("{fault:?} went unnoticed ({o:?})"),
    }
}

#[test]
fn the_inputs_pass_without_a_fault() {
    let compound = Layout {
        compound: Some(6),
        ..LAYOUT
    };
    let mut h = Harness::new();
    h.set_self_check(true);
    for (layout, ops) in [
        (LAYOUT, vec![put(0, 5), put(1, 6), get(1), get(5)]),
        (compound, vec![put(0, 5), put(1, 6)]),
        (LAYOUT, vec![get(0), get(0)]),
    ] {
        h.run_ops(&layout, &ops).unwrap();
    }
}

#[test]
fn p1_a_panic_propagates() {
    let mut h = Harness::new();
    h.inject(Fault::Lie(Lie::Panic));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = h.run_ops(&LAYOUT, &[put(0, 5)]);
    }));
    assert!(r.is_err(), "a panicking table went unnoticed");
}

#[test]
fn p2_a_code_the_guest_must_not_see() {
    let f = finding(Fault::Code(1), LAYOUT, &[get(0), get(1)]);
    assert_eq!((f.property, f.at), (Property::Code, At::Op(1)), "{f}");
    assert!(oracle_code_check_rejects());
}

/// The check function on its own: 9999 (H_TOO_HARD), an unknown code, r4 from a call that
/// returns none.
fn oracle_code_check_rejects() -> bool {
    use p9iommu::hcall::fuzz::check_code;
    check_code(H_GET_TCE, (9999, 0)).is_err()
        && check_code(H_GET_TCE, (-3, 0)).is_err()
        && check_code(H_PUT_TCE, (0, 1)).is_err()
        && check_code(H_GET_TCE, (-4, 1)).is_err()
        && check_code(H_GET_TCE, (0, 1)).is_ok()
}

/// Guest physical address of a page outside preregistered memory (RAM page 256, the first of
/// the memslot-only range).
const UNPINNED: u64 = 0x1000_0000;

/// H_PUT_TCE_INDIRECT of one TCE (a zero: clearing) into window 1 from a list at `list`.
fn indirect_from(list: u64) -> Op {
    Op::Call(H_PUT_TCE_INDIRECT, [W1, 0, list, 1])
}

#[test]
fn p3_real_mode_declining_after_changing_something() {
    // Op 1 reads a list from a compound page outside preregistered memory: real mode looks
    // its descriptor up through the walker (leaking a reference, the injected bug), then
    // declines since it cannot take a reference on a compound page.
    let layout = Layout {
        compound: Some(256),
        rm_walk: true,
        ..LAYOUT
    };
    let f = finding(
        Fault::LeakRmRef,
        layout,
        &[put(0, 5), indirect_from(UNPINNED)],
    );
    assert_eq!(
        (f.property, f.at),
        (Property::DeclineChanged, At::Op(1)),
        "{f}"
    );
}

#[test]
fn p4_a_tce_outside_what_its_owner_pins() {
    let f = finding(Fault::Lie(Lie::ShiftedTce), LAYOUT, &[put(0, 5)]);
    assert_eq!((f.property, f.at), (Property::Pinned, At::Op(0)), "{f}");
}

#[test]
fn p5_a_mapped_count_off_by_one() {
    let f = finding(Fault::NudgeMapped(0), LAYOUT, &[get(0), get(1)]);
    assert_eq!(
        (f.property, f.at),
        (Property::MappedCount, At::Op(1)),
        "{f}"
    );
}

#[test]
fn p6_a_leaked_page_reference() {
    // Op 0 completes in virtual mode (levels and the view page are missing), op 1 in real
    // mode, whose descriptor lookup of the list page leaks a reference.
    let layout = Layout {
        rm_walk: true,
        ..LAYOUT
    };
    let f = finding(
        Fault::LeakRmRef,
        layout,
        &[put(0, 5), indirect_from(UNPINNED)],
    );
    assert_eq!((f.property, f.at), (Property::PageCount, At::Op(1)), "{f}");
}

#[test]
fn p7_a_teardown_that_does_not_clear() {
    let f = finding(Fault::RefuseTeardown, LAYOUT, &[put(0, 5)]);
    assert_eq!(
        (f.property, f.at),
        (Property::Teardown, At::Teardown),
        "{f}"
    );
}

#[test]
fn p7_the_baseline_check_on_a_nudged_count() {
    let mut h = Harness::new();
    h.run_ops(&LAYOUT, &[put(0, 5)]).unwrap();
    let w = h.world();
    assert_eq!(oracle::check_baseline_pinned(w), Ok(()));
    let d = w
        .host
        .pages
        .page(p9iommu::hcall::sim::vm(), Pfn(w.host.pages.base_pfn() + 5))
        .unwrap();
    d.get();
    assert!(oracle::check_baseline_pinned(w).is_err());
    d.put();
}

#[test]
fn p8_a_guest_view_that_changed_behind_the_guest() {
    // Entry 5 is read by op 1: caught there.
    let f = finding(Fault::NudgeView(0, 5, 0x7000), LAYOUT, &[get(0), get(5)]);
    assert_eq!((f.property, f.at), (Property::GuestView, At::Op(1)), "{f}");
    // Entry 9 is named by no call: the full walk catches it.
    let f = finding(Fault::NudgeView(0, 9, 0x7000), LAYOUT, &[get(0), get(5)]);
    assert_eq!(
        (f.property, f.at),
        (Property::GuestView, At::FullWalk),
        "{f}"
    );
}

#[test]
fn p10_dirty_marks_exactly_where_writable_mappings_went() {
    // A mark no writable mapping left (gets only): the end of the input sees it.
    let ua = p9iommu::hcall::sim::UA_BASE + (9 << 12);
    let f = finding(Fault::NudgeDirty(0, ua), LAYOUT, &[get(0), get(1)]);
    assert_eq!((f.property, f.at), (Property::Dirty, At::Teardown), "{f}");
    // A writable mapping that went without its mark: the call's own check.
    let w = p9iommu::hcall::fuzz::build(&LAYOUT);
    assert_eq!(w.hcall(H_PUT_TCE, [W1, 0, (5 << 12) | RW, 0]).0, 0);
    assert_eq!(w.hcall(H_PUT_TCE, [W1, 0, 0, 0]).0, 0);
    let region = &w.guest.mem.regions()[0];
    let model = vec![vec![true; region.pinned_pages().len()]];
    assert_eq!(oracle::check_dirty(&w, &model, &[(0, 0)]), Ok(()));
    assert_eq!(region.clean_dirty(), 1, "page 5's 64 KiB page, and only it");
    assert!(oracle::check_dirty(&w, &model, &[(0, 0)]).is_err());
}

#[test]
fn p9_a_table_writing_an_entry_nobody_asked_for() {
    // The table also writes entry 1 when asked for entry 0: below the record, so only the
    // full walk sees it...
    let f = finding(Fault::Lie(Lie::StrayWrite), LAYOUT, &[put(0, 5)]);
    assert_eq!(
        (f.property, f.at),
        (Property::Unrecorded, At::FullWalk),
        "{f}"
    );
    // ...and without it the input passes.
    let mut h = Harness::new();
    h.set_full_walk_every(0);
    h.inject(Fault::Lie(Lie::StrayWrite));
    h.run_ops(&LAYOUT, &[put(0, 5)]).unwrap();
}

/// Inputs decoded from bytes: a deterministic spread of layouts and operations.
fn inputs() -> Vec<Vec<u8>> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..300)
        .map(|n| {
            (0..(n % 90) + 2)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect()
}

#[test]
fn reuse_changes_no_outcome() {
    let inputs = inputs();
    let mut reused = Harness::new();
    reused.set_self_check(true);
    let mut walked_every_8 = Harness::new();
    walked_every_8.set_full_walk_every(8);
    walked_every_8.set_unregister_every(1);
    for data in &inputs {
        let fresh = Harness::new().run(data);
        assert_eq!(reused.run(data), fresh, "input {data:x?}");
        assert_eq!(walked_every_8.run(data), fresh, "input {data:x?}");
    }
    // And in the other order.
    let mut backwards = Harness::new();
    for data in inputs.iter().rev() {
        assert_eq!(backwards.run(data), Harness::new().run(data));
    }
    assert_eq!(RAM, 2 << 20);
}
