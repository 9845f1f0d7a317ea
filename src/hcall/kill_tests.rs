//! The TCE kill comes before anything an old entry held is given back, and a kill that fails
//! answers H_HARDWARE, keeps every reference and is counted.

use super::sim::{vm, SimTable, World};
use super::*;
use crate::mm::{GuestPhys, PageDesc};
use crate::tce::{HeapMemory, LockedVm, TceGeometry};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering::Relaxed};

/// Records, at each kill, the reference count of one watched page; fails on command.
struct WatchingKill {
    /// The watched descriptor (in the World's descriptor array, which never moves), or null.
    watched: AtomicPtr<PageDesc>,
    seen: AtomicU64,
    fail: AtomicBool,
}

impl TceInvalidate for WatchingKill {
    fn invalidate(&self, _: u64, _: u64, _: u64) -> Result<(), KillFailed> {
        let p = self.watched.load(Relaxed);
        // SAFETY: null or a descriptor of the test's World, alive for the whole test.
        let count = unsafe { p.as_ref() }.map_or(u64::MAX, PageDesc::count);
        self.seen.store(count, Relaxed);
        if self.fail.load(Relaxed) {
            Err(KillFailed)
        } else {
            Ok(())
        }
    }
}

/// gpa 0..1M preregistered in 4K pages; LIOBN 1: 4K window over a table killed by `WatchingKill`.
fn world() -> (World, Arc<WatchingKill>) {
    let mut w = World::new(2 << 20);
    w.memslot(0, 1 << 20, 0).unwrap();
    w.prereg(0, 1 << 20, 12).unwrap();
    w.guest.create_window(1, 0, 12, 1 << 20).unwrap();
    let geo = TceGeometry::new(0, 12, 1 << 20, 2).unwrap();
    let t = SimTable::new(geo, 0, HeapMemory::new(), LockedVm::new(u64::MAX)).unwrap();
    let kill = Arc::new(WatchingKill {
        watched: AtomicPtr::new(core::ptr::null_mut()),
        seen: AtomicU64::new(0),
        fail: AtomicBool::new(false),
    });
    w.guest
        .attach_table(
            1,
            Attached {
                table: Arc::new(t),
                kill: kill.clone(),
                cookie: 0,
            },
        )
        .unwrap();
    (w, kill)
}

fn pinned(w: &World, gpa: u64) -> &PageDesc {
    let ua = w.guest.mem.gpa_to_ua(GuestPhys(gpa), 1).unwrap();
    let hpa = w.guest.mem.ua_to_hpa(ua, 12).unwrap().1.hpa;
    w.host.pages.page(vm(), hpa.pfn()).unwrap()
}

#[test]
fn the_kill_comes_before_the_old_page_is_released() {
    let (w, kill) = world();
    assert_eq!(w.hcall(H_PUT_TCE, [1, 0, 0x5000 | 3, 0]).0, 0);
    let old = pinned(&w, 0x5000);
    let mapped = old.count();
    kill.watched
        .store(old as *const PageDesc as *mut PageDesc, Relaxed);
    // Replace it in real mode (level present), then map it again and replace it in virtual mode.
    let steps: [&[(Mode, u64)]; 2] = [
        &[(Mode::Real, 0x6000 | 3)],
        &[(Mode::Virtual, 0x5000 | 3), (Mode::Virtual, 0x6000 | 3)],
    ];
    for calls in steps {
        for &(mode, tce) in calls {
            assert_eq!(w.call(mode, H_PUT_TCE, [1, 0, tce, 0]).0, 0, "{mode:?}");
        }
        let mode = calls[calls.len() - 1].0;
        assert_eq!(
            kill.seen.load(Relaxed),
            mapped,
            "{mode:?}: the old page lost its reference before the TCE kill"
        );
        assert_eq!(old.count(), mapped - 1, "{mode:?}: released after the kill");
    }
    assert!(old.is_dirty(), "a writable mapping went: the page is dirty");
}

#[test]
fn a_failed_kill_answers_h_hardware_and_keeps_everything() {
    let (w, kill) = world();
    assert_eq!(w.hcall(H_PUT_TCE, [1, 0, 0x5000 | 3, 0]).0, 0);
    let old = pinned(&w, 0x5000);
    let new = pinned(&w, 0x6000);
    let (old_count, new_count) = (old.count(), new.count());
    let mapped = w.guest.mem.regions()[0].mapped();
    kill.fail.store(true, Relaxed);
    for mode in [Mode::Real, Mode::Virtual] {
        let r = w.call(mode, H_PUT_TCE, [1, 0, 0x6000 | 3, 0]).0;
        assert_eq!(r, HcallResult::Hardware.code(), "{mode:?}");
        assert_eq!(
            old.count(),
            old_count,
            "{mode:?}: the old page kept its reference"
        );
    }
    assert_eq!(w.guest.stats.kill_failures.load(Relaxed), 2);
    // The new mapping is in place (taken twice: the second call replaced the first's, whose
    // reference is kept too), the old page stays referenced, the region stays busy.
    assert_eq!(new.count(), new_count + 2);
    assert_eq!(w.guest.mem.regions()[0].mapped(), mapped + 2);
    assert_eq!(w.hcall(H_GET_TCE, [1, 0, 0, 0]), (0, 0x6000 | 3));
}
