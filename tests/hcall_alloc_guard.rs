//! The real-mode allocation guard as installed by a test binary: an allocation inside a
//! real-mode scope is refused and reported, outside it works.

use p9iommu::mm::alloc_guard::{self, GuardedAllocator, RealModeScope};
use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static ALLOC: GuardedAllocator<std::alloc::System> = GuardedAllocator::new(std::alloc::System);

static HOOK_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count(_: Layout) {
    HOOK_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn allocation_in_real_mode_is_caught() {
    alloc_guard::set_violation_hook(count);
    let layout = Layout::from_size_align(256, 8).unwrap();
    let p = {
        let _rm = RealModeScope::enter();
        // SAFETY: a valid layout; the result is checked and not used.
        unsafe { ALLOC.alloc(layout) }
    };
    assert!(
        p.is_null(),
        "an allocation inside a real-mode scope went through"
    );
    assert_eq!(alloc_guard::violations(), 1);
    assert_eq!(HOOK_CALLS.load(std::sync::atomic::Ordering::Relaxed), 1);
    // The global allocator itself: Box outside the scope is fine.
    let b = Box::new([0u8; 64]);
    assert_eq!(b.len(), 64);
}

#[test]
fn box_in_real_mode_aborts_the_process() {
    // A child process (this test binary, filtered to the helper below) allocates in real mode;
    // the guard must make it die with the message, not return normally.
    if std::env::var_os("P9IOMMU_ALLOC_CHILD").is_some() {
        alloc_guard::set_violation_hook(alloc_guard::report_to_stderr);
        let _rm = RealModeScope::enter();
        let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(32));
        std::process::exit(if v.capacity() >= 32 { 0 } else { 3 });
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "box_in_real_mode_aborts_the_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("P9IOMMU_ALLOC_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "child survived a real-mode allocation"
    );
    assert!(
        stderr.contains("REAL-MODE ALLOCATION REFUSED"),
        "stderr: {stderr}"
    );
}
