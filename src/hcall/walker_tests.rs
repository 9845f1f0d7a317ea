//! Real mode reading a TCE list outside preregistered memory through the guest's page table
//! and a page reference taken through the descriptors' real-mode path.

use super::sim::{rm, vm, World, UA_BASE};
use super::*;
use crate::mm::page::PG_COMPOUND;
use crate::mm::{GuestPhys, Pfn};
use core::sync::atomic::Ordering::Relaxed;

/// The simulation's memory plus a real-mode guest-physical translation (what the kernel does by
/// walking the partition-scoped tree): gpa -> memslot -> ua -> simulated RAM.
struct Walkable<'a>(&'a World);

impl MemAccess for Walkable<'_> {
    fn phys_read_be64(&self, rm: RealMode, pa: HostPhys) -> Be64 {
        self.0.host.phys_read_be64(rm, pa)
    }
    fn ua_read_be64(&self, v: VirtMode, ua: Ua) -> Option<Be64> {
        self.0.host.ua_read_be64(v, ua)
    }
    fn rm_gpa_to_hpa(&self, _: RealMode, gpa: GuestPhys) -> Option<HostPhys> {
        let ua = self.0.guest.mem.gpa_to_ua(gpa, 8)?;
        Some(HostPhys(self.0.host.hpa(ua.0 - UA_BASE)))
    }
}

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

fn indirect(w: &World, mem: &dyn MemAccess) -> Result<HcallReturn, TooHard> {
    let env = Env {
        pages: &w.host.pages,
        mem,
    };
    rm_dispatch(
        &w.guest,
        &env,
        rm(),
        H_PUT_TCE_INDIRECT,
        [1, 0x1000, LIST, 4],
    )
}

#[test]
fn an_unpinned_list_completes_in_real_mode_through_the_walker() {
    let w = world();
    for i in 0..4u64 {
        assert!(w.write_guest(LIST + 8 * i, (0x2_0000 + i * 0x1000) | 3));
    }
    let before = w.host.pages.iter().map(|(_, d)| d.count()).sum::<u64>();
    let r = indirect(&w, &Walkable(&w)).expect("real mode completes");
    assert_eq!(r.r3, HcallResult::Success);
    assert_eq!(w.guest.stats.indirect.rm_list_walked.load(Relaxed), 1);
    assert_eq!(w.guest.stats.indirect.rm_done.load(Relaxed), 1);
    assert_eq!(w.hcall(H_GET_TCE, [1, 0x4000, 0, 0]), (0, 0x2_3000 | 3));
    // The list page's reference was dropped again; the four new mappings hold one each.
    let after = w.host.pages.iter().map(|(_, d)| d.count()).sum::<u64>();
    assert_eq!(after, before + 4);
    w.check().unwrap();
}

#[test]
fn without_a_walk_or_on_a_compound_page_real_mode_declines() {
    let w = world();
    for i in 0..4u64 {
        assert!(w.write_guest(LIST + 8 * i, (0x2_0000 + i * 0x1000) | 3));
    }
    let snap = w.snapshot();
    // The simulation alone cannot translate gpa in real mode: decline, nothing changed.
    assert_eq!(indirect(&w, &w.host), Err(TooHard));
    assert_eq!(w.snapshot(), snap);
    // A compound list page: declined too.
    let list_pfn = Pfn(w.host.hpa((2 << 20) + (LIST - 0x1000_0000)) >> 12);
    w.host
        .pages
        .page(vm(), list_pfn)
        .unwrap()
        .set_flags(PG_COMPOUND);
    let snap = w.snapshot();
    assert_eq!(indirect(&w, &Walkable(&w)), Err(TooHard));
    assert_eq!(w.snapshot(), snap);
    assert_eq!(w.guest.stats.indirect.rm_list_walked.load(Relaxed), 0);
    // Virtual mode reads it through the ua and completes.
    assert_eq!(
        w.call(Mode::Virtual, H_PUT_TCE_INDIRECT, [1, 0x1000, LIST, 4])
            .0,
        0
    );
}
