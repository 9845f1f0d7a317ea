//! The TCE kill comes before anything an old entry held is given back (its count in its
//! region, the dirty mark), and a kill that fails answers H_HARDWARE, keeps every count and is
//! counted.

use super::sim::{SimTable, World};
use super::*;
use crate::mm::{GuestPhys, PreregRegion};
use crate::tce::{HeapMemory, LockedVm, TceGeometry};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering::Relaxed};

/// Records, at each kill, the mapped count of one watched region and whether its page at
/// `ua` is marked dirty; fails on command.
struct WatchingKill {
    /// The watched region (in the test's World, which does not move once watched), or null.
    watched: AtomicPtr<PreregRegion>,
    ua: AtomicU64,
    seen: AtomicU64,
    seen_dirty: AtomicBool,
    fail: AtomicBool,
}

impl TceInvalidate for WatchingKill {
    fn invalidate(&self, _: u64, _: u64, _: u64) -> Result<(), KillFailed> {
        let p = self.watched.load(Relaxed);
        // SAFETY: null or a region of the test's World, alive and in place for the whole test.
        let r = unsafe { p.as_ref() };
        self.seen
            .store(r.map_or(u64::MAX, PreregRegion::mapped), Relaxed);
        let ua = crate::mm::Ua(self.ua.load(Relaxed));
        let dirty = r
            .and_then(|r| r.pinned_page(ua))
            .is_some_and(|p| p.is_dirty());
        self.seen_dirty.store(dirty, Relaxed);
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
        ua: AtomicU64::new(0),
        seen: AtomicU64::new(0),
        seen_dirty: AtomicBool::new(false),
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

fn ua(w: &World, gpa: u64) -> crate::mm::Ua {
    w.guest.mem.gpa_to_ua(GuestPhys(gpa), 1).unwrap()
}

#[test]
fn the_kill_comes_before_the_old_page_is_released() {
    let (w, kill) = world();
    assert_eq!(w.hcall(H_PUT_TCE, [1, 0, 0x5000 | 3, 0]).0, 0);
    let region = &w.guest.mem.regions()[0];
    let old = region.pinned_page(ua(&w, 0x5000)).unwrap();
    kill.ua.store(ua(&w, 0x5000).0, Relaxed);
    kill.watched
        .store(region as *const PreregRegion as *mut PreregRegion, Relaxed);
    // Replace it in real mode (level present), then map it again and replace it in virtual mode.
    let steps: [&[(Mode, u64)]; 2] = [
        &[(Mode::Real, 0x6000 | 3)],
        &[(Mode::Virtual, 0x5000 | 3), (Mode::Virtual, 0x6000 | 3)],
    ];
    for calls in steps {
        region.clean_dirty();
        for &(mode, tce) in calls {
            assert_eq!(w.call(mode, H_PUT_TCE, [1, 0, tce, 0]).0, 0, "{mode:?}");
        }
        let mode = calls[calls.len() - 1].0;
        // At the kill: the new mapping counted, the old one not yet given back.
        assert_eq!(
            kill.seen.load(Relaxed),
            2,
            "{mode:?}: the old mapping's count went before the TCE kill"
        );
        assert!(
            !kill.seen_dirty.load(Relaxed),
            "{mode:?}: the old page was marked dirty before the TCE kill"
        );
        assert_eq!(region.mapped(), 1, "{mode:?}: released after the kill");
        assert!(
            old.is_dirty(),
            "{mode:?}: a writable mapping went: the page is dirty"
        );
    }
}

#[test]
fn a_failed_kill_answers_h_hardware_and_keeps_everything() {
    let (w, kill) = world();
    assert_eq!(w.hcall(H_PUT_TCE, [1, 0, 0x5000 | 3, 0]).0, 0);
    let region = &w.guest.mem.regions()[0];
    let old = region.pinned_page(ua(&w, 0x5000)).unwrap();
    let mapped = region.mapped();
    kill.fail.store(true, Relaxed);
    for mode in [Mode::Real, Mode::Virtual] {
        let r = w.call(mode, H_PUT_TCE, [1, 0, 0x6000 | 3, 0]).0;
        assert_eq!(r, HcallResult::Hardware.code(), "{mode:?}");
        assert!(!old.is_dirty(), "{mode:?}: the old page was given back");
    }
    assert_eq!(w.guest.stats.kill_failures.load(Relaxed), 2);
    // The new mapping is in place (counted twice: the second call replaced the first's, whose
    // count is kept too), the old one is kept, the region stays busy.
    assert_eq!(region.mapped(), mapped + 2);
    assert_eq!(w.hcall(H_GET_TCE, [1, 0, 0, 0]), (0, 0x6000 | 3));
}
