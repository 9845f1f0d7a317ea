//! Real mode reading a TCE list outside preregistered memory through the guest's page table
//! and a page reference taken through the descriptors' real-mode path.
#![forbid(unsafe_code)]

use super::sim::{self, vm, World};
use super::*;
use crate::mm::page::PG_COMPOUND;
use crate::mm::Pfn;
use core::sync::atomic::Ordering::Relaxed;

/// gpa 0..2M preregistered; gpa 256M.. a memslot only (RAM 2M..3M); one 4K window.
fn world() -> World {
    let mut w = World::new(4 << 20);
    w.memslot(0, 2 << 20, 0).unwrap();
    w.memslot(0x1000_0000, 1 << 20, 2 << 20).unwrap();
    w.prereg(0, 2 << 20, 16).unwrap();
    w.window(1, 0, 12, 1 << 20, &[(12, 2)]).unwrap();
    // A first map in virtual mode allocates the level.
    assert_eq!(w.hcall(H_PUT_TCE, [1, 0, 0x1000 | 3, 0]).0, 0);
    w
}

const LIST: u64 = 0x1000_2000;

/// The list call in real mode, the host able to walk the guest's tree in real mode or not.
fn indirect(w: &mut World, walk: bool) -> (i64, u64) {
    w.rm_walk = walk;
    let r = w.call(Mode::Real, H_PUT_TCE_INDIRECT, [1, 0x1000, LIST, 4]);
    w.rm_walk = false;
    r
}

#[test]
fn an_unpinned_list_completes_in_real_mode_through_the_walker() {
    let mut w = world();
    for i in 0..4u64 {
        assert!(w.write_guest(LIST + 8 * i, (0x2_0000 + i * 0x1000) | 3));
    }
    let before = w.host.pages.iter().map(|(_, d)| d.count()).sum::<u64>();
    assert_eq!(indirect(&mut w, true), (0, 0), "real mode completes");
    assert_eq!(w.guest.stats.indirect.rm_list_walked.load(Relaxed), 1);
    assert_eq!(w.guest.stats.indirect.rm_done.load(Relaxed), 1);
    assert_eq!(w.hcall(H_GET_TCE, [1, 0x4000, 0, 0]), (0, 0x2_3000 | 3));
    // The list page's reference was dropped again; the new mappings take none (the pin holds
    // their pages).
    let after = w.host.pages.iter().map(|(_, d)| d.count()).sum::<u64>();
    assert_eq!(after, before);
    w.check().unwrap();
}

#[test]
fn without_a_walk_or_on_a_compound_page_real_mode_declines() {
    let mut w = world();
    for i in 0..4u64 {
        assert!(w.write_guest(LIST + 8 * i, (0x2_0000 + i * 0x1000) | 3));
    }
    let snap = w.snapshot();
    // Without a real-mode walk of the guest's tree: decline, nothing changed.
    assert_eq!(indirect(&mut w, false), (sim::H_TOO_HARD, 0));
    assert_eq!(w.snapshot(), snap);
    // A compound list page: declined too.
    let list_pfn = Pfn(w.host.hpa((2 << 20) + (LIST - 0x1000_0000)) >> 12);
    w.host
        .pages
        .page(vm(), list_pfn)
        .unwrap()
        .set_flags(PG_COMPOUND);
    let snap = w.snapshot();
    assert_eq!(indirect(&mut w, true), (sim::H_TOO_HARD, 0));
    assert_eq!(w.snapshot(), snap);
    assert_eq!(w.guest.stats.indirect.rm_list_walked.load(Relaxed), 0);
    // Virtual mode reads it through the ua and completes.
    assert_eq!(
        w.call(Mode::Virtual, H_PUT_TCE_INDIRECT, [1, 0x1000, LIST, 4])
            .0,
        0
    );
}
