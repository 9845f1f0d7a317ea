//! The real-mode allocation guard.
//!
//! Real-mode hypercall handlers run with the MMU off and must allocate nothing: the heap lives in
//! virtual memory and its lock could be held by the very CPU that took the hypercall. The handlers
//! enter a [`RealModeScope`]; while one is active on this CPU (on the host: this thread), a
//! [`GuardedAllocator`] installed as `#[global_allocator]` refuses every request, counts it in
//! [`violations`], reports it through the installed hook and returns null, so the allocating
//! caller fails loudly (`handle_alloc_error`) instead of silently touching the heap.
//!
//! Where the "active" flag lives: on the host, a `std` thread-local; on the kernel, a per-CPU flag
//! the kernel names once with [`set_cpu_flag`].

use core::alloc::{GlobalAlloc, Layout};
#[cfg(target_os = "none")]
use core::sync::atomic::AtomicBool;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

static VIOLATIONS: AtomicU64 = AtomicU64::new(0);

/// A function told about a refused allocation. It runs inside the allocator: it must not allocate.
pub type ViolationHook = fn(Layout);

static HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the function told about each refused allocation (e.g. one that prints a message).
pub fn set_violation_hook(hook: ViolationHook) {
    HOOK.store(hook as *mut (), Ordering::Release);
}

/// How many allocations were refused since boot (or since the test binary started).
pub fn violations() -> u64 {
    VIOLATIONS.load(Ordering::Relaxed)
}

#[cfg(not(target_os = "none"))]
mod flag {
    use core::cell::Cell;

    std::thread_local! {
        static REAL_MODE: Cell<bool> = const { Cell::new(false) };
    }

    pub fn get() -> bool {
        // `try_with`: the allocator can run while thread-locals are being torn down.
        REAL_MODE.try_with(Cell::get).unwrap_or(false)
    }

    pub fn set(v: bool) {
        let _ = REAL_MODE.try_with(|c| c.set(v));
    }
}

#[cfg(target_os = "none")]
mod flag {
    use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

    /// The kernel's "which flag is this CPU's" function; none installed means one CPU, one flag.
    static CPU_FLAG: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
    static BOOT_FLAG: AtomicBool = AtomicBool::new(false);

    pub fn install(f: fn() -> &'static AtomicBool) {
        CPU_FLAG.store(f as *mut (), Ordering::Release);
    }

    #[inline]
    pub fn this_cpu() -> &'static AtomicBool {
        let p = CPU_FLAG.load(Ordering::Acquire);
        if p.is_null() {
            return &BOOT_FLAG;
        }
        // SAFETY: the only non-null value ever stored is a `fn() -> &'static AtomicBool` (see
        // `install`), and fn pointers round-trip through `*mut ()` on this target.
        let f: fn() -> &'static AtomicBool = unsafe { core::mem::transmute(p) };
        f()
    }

    pub fn get() -> bool {
        this_cpu().load(Ordering::Relaxed)
    }
}

/// Names the per-CPU flag the guard uses on the kernel: `f` returns the calling CPU's flag.
#[cfg(target_os = "none")]
pub fn set_cpu_flag(f: fn() -> &'static AtomicBool) {
    flag::install(f);
}

/// Whether a real-mode scope is active on this CPU (host: thread).
pub fn in_real_mode() -> bool {
    flag::get()
}

/// While alive, this CPU (host: thread) is "in real mode": the guarded allocator refuses.
/// Scopes nest; dropping one restores the state it found.
#[must_use = "the scope ends when this value is dropped"]
pub struct RealModeScope {
    was: bool,
    /// This CPU's flag, found once (the kernel: `set_cpu_flag`'s function is called on entry
    /// only, not again on exit).
    #[cfg(target_os = "none")]
    flag: &'static AtomicBool,
    // Not Send: the flag belongs to this CPU/thread.
    _not_send: core::marker::PhantomData<*const ()>,
}

impl RealModeScope {
    /// Enters real mode on this CPU (host: thread).
    #[inline]
    pub fn enter() -> Self {
        #[cfg(target_os = "none")]
        {
            let flag = flag::this_cpu();
            RealModeScope {
                was: flag.swap(true, Ordering::Relaxed),
                flag,
                _not_send: core::marker::PhantomData,
            }
        }
        #[cfg(not(target_os = "none"))]
        {
            let was = flag::get();
            flag::set(true);
            RealModeScope {
                was,
                _not_send: core::marker::PhantomData,
            }
        }
    }
}

impl Drop for RealModeScope {
    #[inline]
    fn drop(&mut self) {
        #[cfg(target_os = "none")]
        self.flag.store(self.was, Ordering::Relaxed);
        #[cfg(not(target_os = "none"))]
        flag::set(self.was);
    }
}

/// A global allocator that refuses while a [`RealModeScope`] is active, and otherwise forwards to
/// `A`.
pub struct GuardedAllocator<A> {
    inner: A,
}

impl<A> GuardedAllocator<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> Self {
        GuardedAllocator { inner }
    }

    fn refuse(layout: Layout) -> bool {
        if !flag::get() {
            return false;
        }
        VIOLATIONS.fetch_add(1, Ordering::Relaxed);
        let h = HOOK.load(Ordering::Acquire);
        if !h.is_null() {
            // SAFETY: the only non-null value ever stored in HOOK is a `ViolationHook` fn pointer
            // (see `set_violation_hook`); fn pointers round-trip through `*mut ()`.
            let hook: ViolationHook = unsafe { core::mem::transmute(h) };
            hook(layout);
        }
        true
    }
}

// SAFETY: every request is either refused (null, which GlobalAlloc allows) or forwarded unchanged
// to `A`, which upholds the GlobalAlloc contract; deallocation is never refused, so memory from
// before the scope can always be returned.
unsafe impl<A: GlobalAlloc> GlobalAlloc for GuardedAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::refuse(layout) {
            return core::ptr::null_mut();
        }
        // SAFETY: the caller upholds `alloc`'s contract for `layout`; forwarded unchanged.
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::refuse(layout) {
            return core::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `self.inner` (we never hand out anything else) with `layout`.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::refuse(layout) {
            return core::ptr::null_mut();
        }
        // SAFETY: the caller upholds `realloc`'s contract; `ptr` came from `self.inner`.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

/// The lib's own unit tests run under the guard too, so any real-mode handler test that
/// allocates aborts with the message below.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: GuardedAllocator<std::alloc::System> =
    GuardedAllocator::new(std::alloc::System);

/// A violation hook for host test binaries: writes a message to stderr without allocating.
#[cfg(not(target_os = "none"))]
pub fn report_to_stderr(layout: Layout) {
    use std::io::Write;
    let mut buf = [0u8; 96];
    let mut w = &mut buf[..];
    let _ = write!(w, "{}", layout.size());
    let n = 96 - w.len();
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"\nREAL-MODE ALLOCATION REFUSED: ");
    let _ = err.write_all(&buf[..n]);
    let _ = err.write_all(b" bytes requested inside a real-mode hypercall handler\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_inside_real_mode_scope_is_refused() {
        let before = violations();
        let layout = Layout::from_size_align(64, 8).unwrap();
        {
            let _rm = RealModeScope::enter();
            assert!(in_real_mode());
            // SAFETY: a valid non-zero layout; a non-null result would be freed below.
            let p = unsafe { GlobalAlloc::alloc(&TEST_ALLOCATOR, layout) };
            assert!(p.is_null(), "the guard let a real-mode allocation through");
        }
        assert!(!in_real_mode());
        assert_eq!(violations(), before + 1);
        // Outside the scope the same request succeeds.
        // SAFETY: valid layout; freed right after with the same layout.
        let p = unsafe { GlobalAlloc::alloc(&TEST_ALLOCATOR, layout) };
        assert!(!p.is_null());
        // SAFETY: `p` came from this allocator with `layout`.
        unsafe { GlobalAlloc::dealloc(&TEST_ALLOCATOR, p, layout) };
    }

    #[test]
    fn scopes_nest_and_restore() {
        assert!(!in_real_mode());
        let a = RealModeScope::enter();
        let b = RealModeScope::enter();
        drop(b);
        assert!(in_real_mode(), "inner scope must restore the outer one");
        drop(a);
        assert!(!in_real_mode());
    }

    #[test]
    fn flag_is_per_thread() {
        // The other thread enters real mode; this one must not see it.
        let other = std::thread::spawn(|| {
            let _rm = RealModeScope::enter();
            in_real_mode()
        });
        let seen_there = other.join().unwrap();
        assert!(seen_there);
        assert!(!in_real_mode());
    }
}
