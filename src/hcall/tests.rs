//! Host tests of the handlers. The lib's test binary runs under the allocation guard, so any
//! allocation inside a real-mode handler aborts it.
#![forbid(unsafe_code)]

use super::sim::{vm, FaultyTable, World, H_TOO_HARD};
use super::*;
use crate::mm::page::PG_COMPOUND;
use crate::mm::{GuestPhys, MemError, PageDesc, PageDescriptors, Pfn};
use crate::tce::TcePerm;
use alloc::sync::Arc;
use core::sync::atomic::Ordering::Relaxed;

const P: i64 = HcallResult::Parameter.code();
const OK: i64 = 0;
const HARD: i64 = H_TOO_HARD;
const RW: u64 = 3;
const W2: u64 = 1 << 31;

/// gpa 0..2M preregistered (64K pages); gpa 256M.. (RAM 2M..3M) only a memslot;
/// LIOBN 1: 4K window, 4K table; LIOBN 2: 64K window over a 4K table; LIOBN 3: no table.
fn world() -> World {
    let mut w = World::new(4 << 20);
    w.memslot(0, 2 << 20, 0).unwrap();
    w.memslot(0x1000_0000, 1 << 20, 2 << 20).unwrap();
    w.prereg(0, 2 << 20, 16).unwrap();
    w.window(1, 0, 12, 1 << 20, &[(12, 2)]).unwrap();
    w.window(2, W2, 16, 16 << 20, &[(12, 3)]).unwrap();
    w.window(3, 0, 12, 1 << 20, &[]).unwrap();
    w
}

fn hw(w: &World, t: usize, i: u64) -> (u64, u64) {
    HwTable::read(&*w.tables[t].table, i)
}

fn pinned_hpa(w: &World, gpa: u64) -> u64 {
    let ua = w.guest.mem.gpa_to_ua(GuestPhys(gpa), 1).unwrap();
    w.guest.mem.ua_to_hpa(ua, 12).unwrap().1.hpa.0
}

/// The descriptor of the page pinned behind `gpa`.
fn pinned_desc(w: &World, gpa: u64) -> &PageDesc {
    w.host
        .pages
        .page(vm(), Pfn(pinned_hpa(w, gpa) >> 12))
        .unwrap()
}

/// Whether the region pinning `gpa` marks its page dirty.
fn region_dirty(w: &World, gpa: u64) -> bool {
    let ua = w.guest.mem.gpa_to_ua(GuestPhys(gpa), 1).unwrap();
    let (r, _) = w.guest.mem.ua_to_hpa(ua, 12).unwrap();
    r.pinned_page(ua).unwrap().is_dirty()
}

#[test]
fn put_falls_back_then_completes_in_real_mode() {
    let w = world();
    let before = w.snapshot();
    assert_eq!(
        w.call(Mode::Real, H_PUT_TCE, [1, 0x3000, 0x5000 | RW, 0]).0,
        HARD
    );
    assert_eq!(w.snapshot(), before, "H_TOO_HARD changed something");
    assert_eq!(
        w.call(Mode::Virtual, H_PUT_TCE, [1, 0x3000, 0x5000 | RW, 0])
            .0,
        OK
    );
    assert_eq!(
        hw(&w, 0, 3),
        (pinned_hpa(&w, 0x5000) | RW, w.host.ua(0x5000).0)
    );
    // The levels and view page exist now: the neighbour completes in real mode.
    assert_eq!(
        w.call(Mode::Real, H_PUT_TCE, [1, 0x4000, 0x6000 | 1, 0]).0,
        OK
    );
    assert_eq!(hw(&w, 0, 4).0, pinned_hpa(&w, 0x6000) | 1);
    assert_eq!(
        w.call(Mode::Real, H_GET_TCE, [1, 0x4000, 0, 0]),
        (OK, 0x6001)
    );
    assert_eq!(w.guest.mem.regions()[0].mapped(), 2);
    assert_eq!(w.kill.calls(), 2);
    assert_eq!(w.kill.last(), (0, 4, 1));
    let s = w.guest.stats.of(H_PUT_TCE);
    assert_eq!(s.rm_done.load(core::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(s.rm_too_hard.load(core::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(s.vm_done.load(core::sync::atomic::Ordering::Relaxed), 1);
    w.check().unwrap();
}

#[test]
fn every_validation_branch_returns_h_parameter_in_both_modes() {
    let mut w = world();
    w.memslot(0x2000_0000, 1 << 20, 3 << 20).unwrap();
    w.prereg(3 << 20, 1 << 20, 12).unwrap(); // 4K pinned pages
    let cases: &[(&str, u64, [u64; 4])] = &[
        ("unknown liobn", H_PUT_TCE, [9, 0, 0x5001, 0]),
        ("ioba misaligned", H_PUT_TCE, [1, 0x3001, 0x5001, 0]),
        (
            "ioba misaligned to 64K",
            H_PUT_TCE,
            [2, W2 + 0x1000, 0x10001, 0],
        ),
        ("ioba below window", H_PUT_TCE, [2, 0, 0x10001, 0]),
        ("ioba past window", H_PUT_TCE, [1, 1 << 20, 0x5001, 0]),
        ("reserved tce bit", H_PUT_TCE, [1, 0, 0x5000 | 4, 0]),
        ("reserved bit, no perm", H_PUT_TCE, [1, 0, 0x5000 | 8, 0]),
        ("gpa misaligned for 64K", H_PUT_TCE, [2, W2, 0x1000 | 1, 0]),
        ("gpa outside memory", H_PUT_TCE, [1, 0, 0x4000_0000 | 1, 0]),
        (
            "pinned page smaller than IOMMU page",
            H_PUT_TCE,
            [2, W2, 0x2000_0000 | 1, 0],
        ),
        ("get: bad ioba", H_GET_TCE, [1, 0x3008, 0, 0]),
        ("get: unknown liobn", H_GET_TCE, [7, 0, 0, 0]),
        ("stuff with permission", H_STUFF_TCE, [1, 0, 1, 4]),
        ("stuff past window", H_STUFF_TCE, [1, 0xff000, 0, 2]),
        ("stuff npages wraps", H_STUFF_TCE, [1, 0x1000, 0, u64::MAX]),
        (
            "indirect npages 513",
            H_PUT_TCE_INDIRECT,
            [1, 0, 0x8000, 513],
        ),
        (
            "indirect list misaligned",
            H_PUT_TCE_INDIRECT,
            [1, 0, 0x8008, 1],
        ),
        (
            "indirect list outside memory",
            H_PUT_TCE_INDIRECT,
            [1, 0, 0x4000_0000, 1],
        ),
        (
            "indirect past window",
            H_PUT_TCE_INDIRECT,
            [1, 0xff000, 0x8000, 2],
        ),
    ];
    for (what, nr, args) in cases {
        for mode in [Mode::Real, Mode::Virtual] {
            let before = w.snapshot();
            assert_eq!(w.call(mode, *nr, *args).0, P, "{what} ({mode:?})");
            assert_eq!(w.snapshot(), before, "{what} changed state");
        }
    }
    assert_eq!(
        w.call(Mode::Real, 0x999, [0; 4]).0,
        HcallResult::Function.code()
    );
    assert_eq!(
        w.guest
            .stats
            .of(H_PUT_TCE)
            .errors_of(HcallResult::Parameter),
        20
    );
}

#[test]
fn not_preregistered_falls_back_and_virtual_mode_refuses_for_hardware() {
    let w = world();
    let tce = 0x1000_0000 | RW;
    assert_eq!(w.call(Mode::Real, H_PUT_TCE, [2, W2, tce, 0]).0, HARD);
    assert_eq!(w.call(Mode::Virtual, H_PUT_TCE, [2, W2, tce, 0]).0, P);
    // A window without hardware tables needs no pinning: guest memory is enough.
    assert_eq!(w.hcall(H_PUT_TCE, [3, 0, tce, 0]).0, OK);
    assert_eq!(w.hcall(H_GET_TCE, [3, 0, 0, 0]), (OK, tce));
}

#[test]
fn large_iommu_page_fills_hardware_entries_and_kills_once() {
    let w = world();
    assert_eq!(w.hcall(H_PUT_TCE, [2, W2 + 0x20000, 0x30000 | 1, 0]).0, OK);
    let base = pinned_hpa(&w, 0x30000);
    for k in 0..16 {
        assert_eq!(hw(&w, 1, 32 + k).0, (base + (k << 12)) | 1, "entry {k}");
    }
    assert_eq!(hw(&w, 1, 48).0, 0);
    assert_eq!(w.kill.calls(), 1);
    assert_eq!(w.kill.last(), (1, 32, 16));
    assert_eq!(w.guest.mem.regions()[0].mapped(), 16);
    w.check().unwrap();
}

#[test]
fn replace_and_clear_drop_counts_and_mark_dirty() {
    let mut w = world();
    let page = |w: &World, gpa: u64| (pinned_desc(w, gpa).count(), region_dirty(w, gpa));
    let mapped = |w: &World| w.guest.mem.regions()[0].mapped();
    assert_eq!(
        w.hcall(H_PUT_TCE, [1, 0, 0x5000 | TcePerm::WRITE.bits(), 0])
            .0,
        OK
    );
    // The pin holds the page (1 + pin): a mapping counts in its region, not on the page.
    assert_eq!((page(&w, 0x5000), mapped(&w)), ((2, false), 1));
    // Replace with a read-only mapping of another page: the old one may have been written.
    // (0x17000: not in 0x5000's pinned 64 KiB page.)
    assert_eq!(w.call(Mode::Real, H_PUT_TCE, [1, 0, 0x17000 | 1, 0]).0, OK);
    assert_eq!((page(&w, 0x5000), mapped(&w)), ((2, true), 1));
    assert_eq!(w.call(Mode::Real, H_PUT_TCE, [1, 0, 0, 0]).0, OK);
    assert_eq!((page(&w, 0x17000), mapped(&w)), ((2, false), 0));
    assert_eq!(hw(&w, 0, 0), (0, 0));
    assert!(
        !pinned_desc(&w, 0x5000).is_dirty(),
        "descriptors: at unregister"
    );
    w.check().unwrap();
    // Unregistering hands the region's mark to the descriptor.
    let pfn = Pfn(pinned_hpa(&w, 0x5000) >> 12);
    w.teardown().unwrap();
    assert!(
        w.host.pages.page(vm(), pfn).unwrap().is_dirty(),
        "the written page is dirty once unpinned"
    );
}

#[test]
fn indirect_reads_list_through_prereg_and_falls_back_otherwise() {
    let w = world();
    // Warm up the levels and view page.
    assert_eq!(w.hcall(H_STUFF_TCE, [1, 0, 0x1000, 8]).0, OK);
    assert_eq!(w.hcall(H_PUT_TCE, [1, 0, 0x1000 | 1, 0]).0, OK);
    let list_pre = 0x8000; // preregistered
    let list_emu = 0x1000_0000; // a memslot only, though other memory is preregistered
    for i in 0..4 {
        assert!(w.write_guest(list_pre + 8 * i, (0x10000 + (i << 12)) | RW));
        assert!(w.write_guest(list_emu + 8 * i, (0x20000 + (i << 12)) | 1));
    }
    assert_eq!(
        w.call(Mode::Real, H_PUT_TCE_INDIRECT, [1, 0x1000, list_pre, 4])
            .0,
        OK
    );
    assert_eq!(hw(&w, 0, 4).0, pinned_hpa(&w, 0x13000) | RW);
    let before = w.snapshot();
    assert_eq!(
        w.call(Mode::Real, H_PUT_TCE_INDIRECT, [1, 0x1000, list_emu, 4])
            .0,
        HARD
    );
    assert_eq!(w.snapshot(), before);
    assert_eq!(
        w.call(Mode::Virtual, H_PUT_TCE_INDIRECT, [1, 0x1000, list_emu, 4])
            .0,
        OK
    );
    assert_eq!(hw(&w, 0, 2).0, pinned_hpa(&w, 0x21000) | 1);
    assert_eq!(w.hcall(H_GET_TCE, [1, 0x4000, 0, 0]), (OK, 0x23001));
    w.check().unwrap();
}

#[test]
fn indirect_validates_every_entry_before_changing_anything() {
    let w = world();
    assert_eq!(w.hcall(H_STUFF_TCE, [1, 0, 0x1000, 8]).0, OK);
    assert!(w.write_guest(0x8000, 0x10000 | 1));
    assert!(w.write_guest(0x8008, 0x11000 | 1));
    assert!(w.write_guest(0x8010, 0x4000_0000 | 1)); // outside guest memory
    let before = w.snapshot();
    for mode in [Mode::Real, Mode::Virtual] {
        assert_eq!(w.call(mode, H_PUT_TCE_INDIRECT, [1, 0, 0x8000, 3]).0, P);
        assert_eq!(w.snapshot(), before);
    }
}

#[test]
fn pinned_pages_need_no_descriptor_in_real_mode() {
    let w = world();
    assert_eq!(w.hcall(H_STUFF_TCE, [1, 0, 0x1000, 4]).0, OK);
    assert_eq!(w.hcall(H_PUT_TCE, [1, 0x1000, 0x1000 | 1, 0]).0, OK);
    // A compound page (part of a huge page) would stop a real-mode page reference; the pin
    // already holds it, so mapping and unmapping it look at no descriptor and complete.
    pinned_desc(&w, 0x5000).set_flags(PG_COMPOUND);
    w.host.touched.drain_into(&mut Vec::new());
    let rm_done = w.guest.stats.of(H_PUT_TCE).rm_done.load(Relaxed);
    assert_eq!(w.call(Mode::Real, H_PUT_TCE, [1, 0, 0x5000 | RW, 0]).0, OK);
    assert_eq!(w.call(Mode::Real, H_PUT_TCE, [1, 0, 0, 0]).0, OK);
    let mut looked_up = Vec::new();
    assert!(w.host.touched.drain_into(&mut looked_up));
    assert!(looked_up.is_empty(), "descriptors looked up: {looked_up:?}");
    assert!(region_dirty(&w, 0x5000));
    assert_eq!(pinned_desc(&w, 0x5000).count(), 2);
    assert_eq!(
        w.guest.stats.of(H_PUT_TCE).rm_done.load(Relaxed),
        rm_done + 2
    );
    w.check().unwrap();
}

#[test]
fn contended_window_lock_falls_back() {
    let w = world();
    assert_eq!(w.hcall(H_PUT_TCE, [1, 0x1000, 0x1000 | 1, 0]).0, OK);
    assert_eq!(w.hcall(H_STUFF_TCE, [1, 0, 0x1000, 1]).0, OK);
    let win = w.guest.window(1).unwrap();
    let held = win.lock.lock();
    assert_eq!(w.call(Mode::Real, H_PUT_TCE, [1, 0, 0x5000 | 1, 0]).0, HARD);
    drop(held);
    assert_eq!(w.call(Mode::Real, H_PUT_TCE, [1, 0, 0x5000 | 1, 0]).0, OK);
}

#[test]
fn missing_hardware_level_falls_back_and_allocation_failure_is_no_mem() {
    let w = world();
    // A view page but no hardware level: H_STUFF_TCE with an address and no permission.
    assert_eq!(w.hcall(H_STUFF_TCE, [2, W2, 0x10000, 1]).0, OK);
    let t = &w.tables[1].table;
    let bytes = t.allocated_bytes();
    assert_eq!(
        w.call(Mode::Real, H_PUT_TCE, [2, W2, 0x10000 | 1, 0]).0,
        HARD
    );
    assert_eq!(t.allocated_bytes(), bytes, "real mode allocated a level");
    t.memory().fail_always();
    assert_eq!(
        w.call(Mode::Virtual, H_PUT_TCE, [2, W2, 0x10000 | 1, 0]).0,
        -9
    );
    t.memory().never_fail();
    assert_eq!(
        w.call(Mode::Virtual, H_PUT_TCE, [2, W2, 0x10000 | 1, 0]).0,
        OK
    );
    w.check().unwrap();
}

#[test]
fn unregister_while_mapped_is_busy_and_teardown_restores_counts() {
    let mut w = world();
    assert_eq!(w.hcall(H_PUT_TCE, [2, W2, 0x10000 | RW, 0]).0, OK);
    assert_eq!(w.unprereg(0, 2 << 20), Err(MemError::Busy));
    assert_eq!(w.guest.remove_window(2), Err(WindowError::Busy));
    assert_eq!(w.guest.mem.regions().len(), 1);
    w.check().unwrap();
    w.teardown().unwrap();
    assert!(w.guest.mem.regions().is_empty());
}

#[test]
fn device_memory_counts_mapped_without_page_references() {
    let mut w = world();
    w.memslot(0x4000_0000, 1 << 20, 3 << 20).unwrap();
    let ua = w.host.ua(3 << 20);
    let dev = w.host.hpa(3 << 20);
    w.guest
        .mem
        .register(
            vm(),
            ua,
            1 << 20,
            16,
            crate::mm::Backing::Device(crate::mm::HostPhys(dev)),
            &w.host.pages,
        )
        .unwrap();
    let before = w.snapshot().pages;
    assert_eq!(w.hcall(H_PUT_TCE, [2, W2, 0x4001_0000 | RW, 0]).0, OK);
    assert_eq!(hw(&w, 1, 0).0, (dev + 0x10000) | RW);
    assert_eq!(w.guest.mem.regions()[1].mapped(), 16);
    assert_eq!(w.snapshot().pages, before);
    w.check().unwrap();
    w.teardown().unwrap();
}

#[test]
fn stuff_clears_a_range() {
    let w = world();
    assert_eq!(
        w.hcall(H_STUFF_TCE, [1, 0, 0, 16]).0,
        OK,
        "clearing nothing needs nothing"
    );
    for i in 0..4u64 {
        assert_eq!(
            w.hcall(H_PUT_TCE, [1, i << 12, (0x10000 + (i << 12)) | 1, 0])
                .0,
            OK
        );
    }
    let kills = w.kill.calls();
    assert_eq!(w.call(Mode::Real, H_STUFF_TCE, [1, 0x1000, 0, 2]).0, OK);
    assert_eq!(w.kill.calls(), kills + 1);
    assert_eq!((hw(&w, 0, 1).0, hw(&w, 0, 2).0), (0, 0));
    assert_ne!(hw(&w, 0, 3).0, 0);
    assert_eq!(w.guest.mem.regions()[0].mapped(), 2);
    w.check().unwrap();
}

const HW: i64 = HcallResult::Hardware.code();

/// `world()` plus LIOBN 4 (4K window at bus 0, 1 MiB) over a refusing-on-command 4K table
/// (`tables[2]`), and LIOBN 5 (64K window at `W2`, 4 MiB) over a plain 4K table (`tables[3]`)
/// then a refusing one (`tables[4]`).
fn faulty_world() -> (World, Arc<FaultyTable>, Arc<FaultyTable>) {
    let mut w = world();
    w.guest.create_window(4, 0, 12, 1 << 20).unwrap();
    let f4 = w.attach_faulty(4, 12, 2).unwrap();
    w.window(5, W2, 16, 4 << 20, &[(12, 2)]).unwrap();
    let f5 = w.attach_faulty(5, 12, 2).unwrap();
    (w, f4, f5)
}

fn page_count(w: &World, gpa: u64) -> u64 {
    pinned_desc(w, gpa).count()
}

fn errors(w: &World, nr: u64, r: HcallResult) -> u64 {
    w.guest.stats.of(nr).errors_of(r)
}

#[test]
fn refused_prepare_is_h_hardware_in_both_modes_and_changes_nothing() {
    let (w, f, _) = faulty_world();
    // Levels and view page exist, index 0 maps 0x5000: real mode reaches `prepare`.
    assert_eq!(w.hcall(H_STUFF_TCE, [4, 0, 0x1000, 8]).0, OK);
    assert_eq!(w.hcall(H_PUT_TCE, [4, 0, 0x5000 | RW, 0]).0, OK);
    for i in 0..8 {
        assert!(w.write_guest(0x8000 + 8 * i, (0x10000 + (i << 12)) | RW));
    }
    let (kills, exchanges) = (w.kill.calls(), f.exchanges());
    let before = w.snapshot();
    f.refuse_prepare(true);
    // Real mode returns H_HARDWARE too, not H_TOO_HARD: the table's refusal does not depend on
    // the MMU, so virtual mode would refuse the same; the shared checks give the same code.
    for mode in [Mode::Virtual, Mode::Real] {
        let calls: [(u64, [u64; 4]); 3] = [
            (H_PUT_TCE, [4, 0x1000, 0x6000 | RW, 0]),
            (H_PUT_TCE, [4, 0, 0x7000 | 1, 0]), // replacing a mapping
            (H_PUT_TCE_INDIRECT, [4, 0, 0x8000, 8]),
        ];
        for (nr, args) in calls {
            let refused = f.refused();
            assert_eq!(w.call(mode, nr, args).0, HW, "{nr:#x} {mode:?}");
            assert_eq!(
                f.refused(),
                refused + 1,
                "{nr:#x} {mode:?}: not refused by prepare"
            );
            assert_eq!(w.snapshot(), before, "{nr:#x} {mode:?} changed state");
        }
    }
    assert_eq!(
        f.exchanges(),
        exchanges,
        "an exchange after a refused prepare"
    );
    assert_eq!(
        w.kill.calls(),
        kills,
        "nothing changed, nothing to invalidate"
    );
    // Page counts at 1 + pin (mappings take none), the one mapping of 0x5000 counted.
    assert_eq!(page_count(&w, 0x6000), 2);
    assert_eq!(page_count(&w, 0x10000), 2);
    assert_eq!(page_count(&w, 0x5000), 2);
    assert_eq!(w.guest.window(4).unwrap().hw_mapped(), 1);
    assert!(!region_dirty(&w, 0x5000));
    w.check().unwrap();
    // The kernel's path: real mode's H_HARDWARE is final, virtual mode does not run.
    let s = w.guest.stats.of(H_PUT_TCE);
    let (vm, hard) = (
        s.vm_done.load(Relaxed),
        errors(&w, H_PUT_TCE, HcallResult::Hardware),
    );
    assert_eq!(w.hcall(H_PUT_TCE, [4, 0x1000, 0x6000 | RW, 0]).0, HW);
    assert_eq!(s.vm_done.load(Relaxed), vm);
    assert_eq!(errors(&w, H_PUT_TCE, HcallResult::Hardware), hard + 1);
    // H_STUFF_TCE needs no level (clearing a missing level is clearing nothing), so it never
    // asks `prepare`: a refusing `prepare` does not stop it. Its H_HARDWARE comes from a
    // refused exchange (below).
    assert_eq!(w.call(Mode::Real, H_STUFF_TCE, [4, 0, 0, 8]).0, OK);
    assert_eq!(HwTable::read(&**f.inner(), 0), (0, 0));
    assert!(region_dirty(&w, 0x5000), "its writable mapping went");
    f.refuse_prepare(false);
    assert_eq!(w.hcall(H_PUT_TCE_INDIRECT, [4, 0, 0x8000, 8]).0, OK);
    w.check().unwrap();
    let mut w = w;
    w.teardown().unwrap();
}

#[test]
fn refused_exchange_mid_indirect_batch_restores_every_entry() {
    let (mut w, f, _) = faulty_world();
    let t = f.inner().clone();
    // Before: index 1 maps 0x5000 RW (the list clears it), index 2 maps 0x6000 (the list
    // replaces it), the rest is empty.
    assert_eq!(w.hcall(H_STUFF_TCE, [4, 0, 0x1000, 8]).0, OK);
    assert_eq!(w.hcall(H_PUT_TCE, [4, 0x1000, 0x5000 | RW, 0]).0, OK);
    assert_eq!(w.hcall(H_PUT_TCE, [4, 0x2000, 0x6000 | 1, 0]).0, OK);
    let list: [u64; 8] = core::array::from_fn(|i| match i {
        1 => 0,
        _ => (0x10000 + ((i as u64) << 12)) | RW,
    });
    for (i, v) in list.iter().enumerate() {
        assert!(w.write_guest(0x8000 + 8 * i as u64, *v));
    }
    let before = w.snapshot();
    // Exchanges in order: index 0 (empty -> mapped), 1 (mapped -> clear), 2 (replace), 3..7.
    for mode in [Mode::Virtual, Mode::Real] {
        for nth in [1, 2, 3, 8] {
            let (kills, refused) = (w.kill.calls(), f.refused());
            f.refuse_nth_exchange(nth);
            assert_eq!(
                w.call(mode, H_PUT_TCE_INDIRECT, [4, 0, 0x8000, 8]).0,
                HW,
                "{mode:?}, exchange {nth} refused"
            );
            assert_eq!(f.refused(), refused + 1);
            assert_eq!(w.snapshot(), before, "{mode:?}, exchange {nth} refused");
            if let Err(e) = w.check() {
                panic!("{mode:?}, exchange {nth} refused: {e}");
            }
            assert_eq!(
                HwTable::read(&*t, 1).1,
                w.host.ua(0x5000).0,
                "owner view restored"
            );
            // The entries were visible to the PHB for a moment: one kill over the batch.
            assert_eq!(w.kill.calls(), kills + 1);
            assert_eq!(w.kill.last(), (2, 0, 8));
        }
    }
    assert_eq!(w.guest.window(4).unwrap().hw_mapped(), 2);
    assert_eq!((page_count(&w, 0x5000), page_count(&w, 0x6000)), (2, 2));
    assert!(
        !region_dirty(&w, 0x5000),
        "a rolled-back clear marks nothing"
    );
    for i in [0u64, 3, 7] {
        assert_eq!(
            page_count(&w, 0x10000 + (i << 12)),
            2,
            "list entry {i}: no reference taken"
        );
    }
    // Nothing left armed: the same call now commits in full.
    assert_eq!(
        w.call(Mode::Real, H_PUT_TCE_INDIRECT, [4, 0, 0x8000, 8]).0,
        OK
    );
    assert_eq!(HwTable::read(&*t, 1), (0, 0));
    assert_eq!(HwTable::read(&*t, 7).0, pinned_hpa(&w, 0x17000) | RW);
    assert!(region_dirty(&w, 0x5000));
    assert_eq!(w.guest.window(4).unwrap().hw_mapped(), 7);
    w.check().unwrap();
    w.teardown().unwrap();
}

#[test]
fn refused_exchange_in_second_table_restores_the_first_and_stuff_reports_it() {
    let (mut w, _, f) = faulty_world();
    assert_eq!(w.hcall(H_PUT_TCE, [5, W2, 0x10000 | RW, 0]).0, OK);
    let before = w.snapshot();
    let plain = HwTable::read(&*w.tables[3].table, 3);
    assert_eq!(plain.0, (pinned_hpa(&w, 0x10000) + 0x3000) | RW);
    for mode in [Mode::Virtual, Mode::Real] {
        // 16 entries per 64K TCE: the plain table is fully exchanged when the 5th exchange of
        // the second table is refused.
        let kills = w.kill.calls();
        f.refuse_nth_exchange(5);
        assert_eq!(
            w.call(mode, H_PUT_TCE, [5, W2, 0x20000 | 1, 0]).0,
            HW,
            "{mode:?}"
        );
        assert_eq!(w.snapshot(), before, "{mode:?}");
        assert_eq!(HwTable::read(&*w.tables[3].table, 3), plain);
        assert_eq!(w.kill.calls(), kills + 2, "one kill per touched table");
        w.check().unwrap();
        // Clearing is all or nothing too.
        f.refuse_nth_exchange(9);
        assert_eq!(w.call(mode, H_STUFF_TCE, [5, W2, 0, 1]).0, HW, "{mode:?}");
        assert_eq!(w.snapshot(), before, "{mode:?} stuff");
        w.check().unwrap();
    }
    assert_eq!(page_count(&w, 0x20000), 2);
    assert_eq!(page_count(&w, 0x10000), 2);
    assert_eq!(w.guest.window(5).unwrap().hw_mapped(), 32);
    assert_eq!(w.call(Mode::Real, H_STUFF_TCE, [5, W2, 0, 1]).0, OK);
    assert_eq!(w.guest.window(5).unwrap().hw_mapped(), 0);
    w.check().unwrap();
    w.teardown().unwrap();
}

#[test]
fn real_mode_leaves_batches_beyond_its_undo_log_to_virtual_mode() {
    let mut w = world();
    let mapped = |w: &World| w.guest.window(2).unwrap().hw_mapped();
    // LIOBN 2: one 64K TCE fills 16 entries of the 4K table; 40 TCEs (of the 32 pinned 64K
    // pages, some twice) map 640 entries.
    let list = |w: &World, at: u64, perm: u64| {
        for i in 0..40u64 {
            assert!(w.write_guest(at + 8 * i, ((i % 32) << 16) | perm));
        }
    };
    list(&w, 0x8000, 1);
    assert_eq!(w.hcall(H_PUT_TCE_INDIRECT, [2, W2, 0x8000, 40]).0, OK);
    assert_eq!(mapped(&w), 640);
    // Clearing 32 TCEs replaces 512 mappings, exactly the undo log: real mode does it.
    assert_eq!(w.call(Mode::Real, H_STUFF_TCE, [2, W2, 0, 32]).0, OK);
    assert_eq!(mapped(&w), 640 - 512);
    assert_eq!(w.hcall(H_PUT_TCE_INDIRECT, [2, W2, 0x8000, 40]).0, OK);
    // Replacing 528 (and 640, spilling virtual mode's log to the heap) is left to virtual mode.
    list(&w, 0x9000, RW);
    for n in [33u64, 40] {
        let (before, kills) = (w.snapshot(), w.kill.calls());
        assert_eq!(
            w.call(Mode::Real, H_PUT_TCE_INDIRECT, [2, W2, 0x9000, n]).0,
            HARD
        );
        assert_eq!(w.snapshot(), before, "declined but changed");
        assert_eq!(w.kill.calls(), kills, "declined after touching the table");
        assert_eq!(
            w.call(Mode::Virtual, H_PUT_TCE_INDIRECT, [2, W2, 0x9000, n])
                .0,
            OK
        );
        assert_eq!(mapped(&w), 640);
        w.check().unwrap();
    }
    assert_eq!(
        HwTable::read(&*w.tables[1].table, 39 * 16 + 15).0,
        (pinned_hpa(&w, 7 << 16) + 0xf000) | RW
    );
    w.teardown().unwrap();
}

/// Contract gaps closed: a table attached twice, or holding entries it did not get from the
/// window, is refused; nothing changes.
#[test]
fn a_table_attached_twice_or_not_empty_is_refused() {
    let mut w = world();
    // The 4K window's table is attached to LIOBN 1 already: not again, here or elsewhere.
    let attached = w.guest.window(1).unwrap().tables()[0].clone();
    assert_eq!(
        w.guest.attach_table(3, attached.clone()),
        Err(WindowError::AlreadyAttached)
    );
    assert_eq!(
        w.guest.attach_table(1, attached),
        Err(WindowError::AlreadyAttached)
    );
    // A fresh table with one entry set behind the window's back.
    let geo = crate::tce::TceGeometry::new(0, 12, 1 << 20, 2).unwrap();
    let t = super::sim::SimTable::new(
        geo,
        0,
        crate::tce::HeapMemory::new(),
        crate::tce::LockedVm::new(u64::MAX),
    )
    .unwrap();
    HwTable::prepare(&t, 7, 1, true).unwrap();
    HwTable::exchange(&t, 7, 0x1234_5000 | 3, 0x7000).unwrap();
    let dirty = Attached {
        table: Arc::new(t),
        kill: w.kill.clone(),
        cookie: 99,
    };
    assert_eq!(w.guest.attach_table(3, dirty), Err(WindowError::NotEmpty));
    assert!(w.guest.window(3).unwrap().tables().is_empty());
    // A fresh, empty one is fine.
    let empty = super::sim::SimTable::new(
        geo,
        0,
        crate::tce::HeapMemory::new(),
        crate::tce::LockedVm::new(u64::MAX),
    )
    .unwrap();
    let ok = Attached {
        table: Arc::new(empty),
        kill: w.kill.clone(),
        cookie: 98,
    };
    assert_eq!(w.guest.attach_table(3, ok), Ok(()));
}

fn fresh_table(bus: u64, size: u64) -> Arc<super::sim::SimTable> {
    let geo = crate::tce::TceGeometry::new(bus, 12, size, 2).unwrap();
    Arc::new(
        super::sim::SimTable::new(
            geo,
            0,
            crate::tce::HeapMemory::new(),
            crate::tce::LockedVm::new(u64::MAX),
        )
        .unwrap(),
    )
}

/// Contract gap closed: two windows whose tables serve one device address space (the same
/// cookie: PHB and PE) may not overlap in bus addresses; other address spaces may.
#[test]
fn overlapping_windows_of_one_address_space_are_refused() {
    let mut w = world();
    // Window 1 (bus 0..1M) has a table with cookie 0; window 3 covers the same bus range.
    let cookie = w.guest.window(1).unwrap().tables()[0].cookie;
    let same_space = Attached {
        table: fresh_table(0, 1 << 20),
        kill: w.kill.clone(),
        cookie,
    };
    assert_eq!(
        w.guest.attach_table(3, same_space),
        Err(WindowError::Overlaps)
    );
    assert!(w.guest.window(3).unwrap().tables().is_empty());
    // The same space at a bus range of its own (window 2, at 2 GiB) is fine...
    let elsewhere = Attached {
        table: fresh_table(W2, 16 << 20),
        kill: w.kill.clone(),
        cookie,
    };
    assert_eq!(w.guest.attach_table(2, elsewhere), Ok(()));
    // ...and so is another space over window 1's range.
    let other_space = Attached {
        table: fresh_table(0, 1 << 20),
        kill: w.kill.clone(),
        cookie: cookie + 1000,
    };
    assert_eq!(w.guest.attach_table(3, other_space), Ok(()));
}

/// Contract gap closed: a window's guest view is charged to the owner's locked-memory budget
/// in full when the window is created, refused when it does not fit, refunded when it goes.
#[test]
fn guest_views_are_charged_to_the_locked_memory_budget() {
    let budget = Arc::new(crate::tce::LockedVm::new(3 * 4096));
    let mut g = Guest::new();
    g.set_view_budget(ViewBudget(budget.clone()));
    // 1 MiB of 4K pages: 256 entries, one 4 KiB view page, charged before any is allocated.
    g.create_window(1, 0, 12, 1 << 20).unwrap();
    assert_eq!(budget.used(), 4096);
    assert_eq!(g.window(1).unwrap().view().allocated_pages(), 0);
    // 8 MiB: 2048 entries, 4 pages: over the 3-page budget; nothing charged or created.
    assert_eq!(
        g.create_window(2, 1 << 31, 12, 8 << 20),
        Err(WindowError::OverBudget)
    );
    assert_eq!(budget.used(), 4096);
    assert!(g.window(2).is_none());
    // 2 pages fit.
    g.create_window(2, 1 << 31, 12, 4 << 20).unwrap();
    assert_eq!(budget.used(), 3 * 4096);
    g.remove_window(1).unwrap();
    assert_eq!(
        budget.used(),
        2 * 4096,
        "removing a window refunds its view"
    );
    drop(g);
    assert_eq!(budget.used(), 0, "dropping the guest refunds the rest");
}

/// The single-entry path (one table of the window's page size) answers a refused exchange as
/// the batch path does: H_HARDWARE, nothing changed, the new reference given back, the kill
/// still issued.
#[test]
fn a_refused_single_exchange_changes_nothing() {
    let (w, f, _) = faulty_world();
    assert_eq!(w.hcall(H_STUFF_TCE, [4, 0, 0x1000, 8]).0, OK);
    assert_eq!(w.hcall(H_PUT_TCE, [4, 0x1000, 0x5000 | RW, 0]).0, OK);
    let before = w.snapshot();
    let (p5, p6) = (page_count(&w, 0x5000), page_count(&w, 0x6000));
    for mode in [Mode::Virtual, Mode::Real] {
        // Map an empty entry, replace a mapping, clear a mapping.
        for (ioba, tce) in [(0x2000, 0x6000 | RW), (0x1000, 0x6000 | 1), (0x1000, 0)] {
            let (kills, refused) = (w.kill.calls(), f.refused());
            f.refuse_nth_exchange(1);
            assert_eq!(
                w.call(mode, H_PUT_TCE, [4, ioba, tce, 0]).0,
                HW,
                "{mode:?} {ioba:#x} {tce:#x}"
            );
            assert_eq!(
                f.refused(),
                refused + 1,
                "{mode:?}: not refused by the exchange"
            );
            assert_eq!(
                w.kill.calls(),
                kills + 1,
                "{mode:?}: the kill of a stopped batch"
            );
            assert_eq!(
                w.snapshot(),
                before,
                "{mode:?} {ioba:#x} {tce:#x} changed state"
            );
            assert_eq!((page_count(&w, 0x5000), page_count(&w, 0x6000)), (p5, p6));
            if let Err(e) = w.check() {
                panic!("{mode:?} {ioba:#x}: {e}");
            }
        }
    }
    f.refuse_nth_exchange(0);
    assert_eq!(w.hcall(H_PUT_TCE, [4, 0x1000, 0, 0]).0, OK);
}

/// A list longer than the small-batch frame, into a window without hardware tables (so it
/// touches no hardware entry), still takes the path with room for the whole list.
#[test]
fn a_long_list_into_a_window_without_tables_completes() {
    let w = world();
    for i in 0..16u64 {
        assert!(w.write_guest(0x8000 + 8 * i, (0x10000 + (i << 12)) | RW));
    }
    assert_eq!(w.hcall(H_PUT_TCE_INDIRECT, [3, 0, 0x8000, 16]).0, OK);
    for i in 0..16u64 {
        assert_eq!(
            w.hcall(H_GET_TCE, [3, i << 12, 0, 0]),
            (OK, (0x10000 + (i << 12)) | RW)
        );
    }
}
