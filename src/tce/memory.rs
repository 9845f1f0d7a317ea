//! How tables reach physical memory: one trait, a heap implementation for host and kernel.

use crate::mm::addr::HostPhys;
use core::alloc::Layout;
use core::sync::atomic::{AtomicU64, Ordering};

/// A level could not be allocated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AllocError;

/// Physical memory holding TCE levels.
///
/// Addresses are physical as the PHB sees them (on the host: heap pointers). Entries are
/// accessed as raw 8-byte images (see [`super::Be64`]); loads are Acquire, stores Release and
/// read-modify-writes AcqRel, so a level zeroed then published by compare-and-swap is seen
/// zeroed by whoever follows the pointer.
///
/// The address-taking methods are `unsafe`: the implementation dereferences `phys`, so the
/// caller must hand back only addresses inside live levels of this memory.
pub trait TceMemory {
    /// Allocates `size` bytes (a power of two >= 4096), naturally aligned, zeroed, preferably
    /// on NUMA node `node`.
    fn alloc_level(&self, size: usize, node: u32) -> Result<u64, AllocError>;

    /// Returns a level.
    ///
    /// # Safety
    /// `phys` and `size` are those of a level this memory allocated and not yet freed; nothing
    /// accesses it afterwards.
    unsafe fn free_level(&self, phys: u64, size: usize);

    /// Loads the 8 bytes at `phys`, as stored.
    ///
    /// # Safety
    /// `phys` is 8-byte aligned and inside a live level of this memory.
    unsafe fn load(&self, phys: u64) -> u64;

    /// Stores 8 bytes at `phys`.
    ///
    /// # Safety
    /// As for [`TceMemory::load`].
    unsafe fn store(&self, phys: u64, raw: u64);

    /// Stores 8 bytes at `phys`, returning what was there.
    ///
    /// # Safety
    /// As for [`TceMemory::load`].
    unsafe fn swap(&self, phys: u64, raw: u64) -> u64;

    /// Stores `new` at `phys` if it holds `current`; returns the previous value either way
    /// (`Ok` if it was `current`).
    ///
    /// # Safety
    /// As for [`TceMemory::load`].
    unsafe fn compare_exchange(&self, phys: u64, current: u64, new: u64) -> Result<u64, u64>;
}

macro_rules! forward_tce_memory {
    ($($ty:ty),*) => {$(
        impl<T: TceMemory + ?Sized> TceMemory for $ty {
            fn alloc_level(&self, size: usize, node: u32) -> Result<u64, AllocError> {
                (**self).alloc_level(size, node)
            }
            unsafe fn free_level(&self, phys: u64, size: usize) {
                // SAFETY: the caller's contract is forwarded unchanged.
                unsafe { (**self).free_level(phys, size) }
            }
            unsafe fn load(&self, phys: u64) -> u64 {
                // SAFETY: the caller's contract is forwarded unchanged.
                unsafe { (**self).load(phys) }
            }
            unsafe fn store(&self, phys: u64, raw: u64) {
                // SAFETY: the caller's contract is forwarded unchanged.
                unsafe { (**self).store(phys, raw) }
            }
            unsafe fn swap(&self, phys: u64, raw: u64) -> u64 {
                // SAFETY: the caller's contract is forwarded unchanged.
                unsafe { (**self).swap(phys, raw) }
            }
            unsafe fn compare_exchange(&self, phys: u64, current: u64, new: u64) -> Result<u64, u64> {
                // SAFETY: the caller's contract is forwarded unchanged.
                unsafe { (**self).compare_exchange(phys, current, new) }
            }
        }
    )*};
}

forward_tce_memory!(&T, alloc::sync::Arc<T>);

/// Levels from the global allocator, whose memory is in the linear map: the physical address
/// is the pointer's linear-map offset ([`HostPhys::of_linear`]; on the host, the pointer
/// itself), and levels are reached through the linear map in both modes. Counts bytes, and can be told to fail, so tests can check for leaks and failure
/// handling. The NUMA node is ignored.
#[derive(Debug)]
pub struct HeapMemory {
    allocations: AtomicU64,
    allocated_bytes: AtomicU64,
    outstanding_bytes: AtomicU64,
    outstanding_levels: AtomicU64,
    /// Allocations still allowed to succeed; `u64::MAX` = unlimited.
    successes_left: AtomicU64,
}

impl Default for HeapMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl HeapMemory {
    /// A heap memory that never refuses (except when the allocator itself fails).
    pub const fn new() -> Self {
        HeapMemory {
            allocations: AtomicU64::new(0),
            allocated_bytes: AtomicU64::new(0),
            outstanding_bytes: AtomicU64::new(0),
            outstanding_levels: AtomicU64::new(0),
            successes_left: AtomicU64::new(u64::MAX),
        }
    }

    /// Lets `n` more allocations succeed, then fails every one after them.
    pub fn fail_after(&self, n: u64) {
        self.successes_left.store(n, Ordering::SeqCst);
    }

    /// Fails every allocation from now on.
    pub fn fail_always(&self) {
        self.fail_after(0);
    }

    /// Stops failing.
    pub fn never_fail(&self) {
        self.fail_after(u64::MAX);
    }

    /// Successful allocations so far.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::SeqCst)
    }

    /// Bytes handed out so far (freed or not).
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated_bytes.load(Ordering::SeqCst)
    }

    /// Bytes handed out and not yet freed.
    pub fn outstanding_bytes(&self) -> u64 {
        self.outstanding_bytes.load(Ordering::SeqCst)
    }

    /// Levels handed out and not yet freed.
    pub fn outstanding_levels(&self) -> u64 {
        self.outstanding_levels.load(Ordering::SeqCst)
    }

    fn layout(size: usize) -> Option<Layout> {
        if size < 4096 || !size.is_power_of_two() {
            return None;
        }
        Layout::from_size_align(size, size).ok()
    }

    /// The atomic cell at `phys`.
    ///
    /// # Safety
    /// `phys` is 8-byte aligned and inside a live level of this memory.
    #[inline]
    unsafe fn cell(&self, phys: u64) -> &AtomicU64 {
        // SAFETY: per the caller, `phys` points at 8 aligned, live bytes of a level we
        // allocated; levels are only ever accessed through atomics, so no non-atomic access
        // races with this reference.
        unsafe { AtomicU64::from_ptr(HostPhys(phys).linear() as *mut u64) }
    }
}

impl TceMemory for HeapMemory {
    fn alloc_level(&self, size: usize, _node: u32) -> Result<u64, AllocError> {
        let layout = Self::layout(size).ok_or(AllocError)?;
        let allowed = self
            .successes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u64::MAX => Some(u64::MAX),
                n => Some(n - 1),
            });
        if allowed.is_err() {
            return Err(AllocError);
        }
        // SAFETY: `layout` has a nonzero size (>= 4096).
        let ptr = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(AllocError);
        }
        self.allocations.fetch_add(1, Ordering::SeqCst);
        self.allocated_bytes
            .fetch_add(size as u64, Ordering::SeqCst);
        self.outstanding_bytes
            .fetch_add(size as u64, Ordering::SeqCst);
        self.outstanding_levels.fetch_add(1, Ordering::SeqCst);
        Ok(HostPhys::of_linear(ptr).0)
    }

    unsafe fn free_level(&self, phys: u64, size: usize) {
        let Some(layout) = Self::layout(size) else {
            return;
        };
        // SAFETY: per the caller, `phys` came from `alloc_level(size)`, which allocated it
        // with this same layout, and it is not used again.
        unsafe { alloc::alloc::dealloc(HostPhys(phys).linear() as *mut u8, layout) };
        self.outstanding_bytes
            .fetch_sub(size as u64, Ordering::SeqCst);
        self.outstanding_levels.fetch_sub(1, Ordering::SeqCst);
    }

    #[inline]
    unsafe fn load(&self, phys: u64) -> u64 {
        // SAFETY: the caller's contract is that of `cell`.
        unsafe { self.cell(phys) }.load(Ordering::Acquire)
    }

    #[inline]
    unsafe fn store(&self, phys: u64, raw: u64) {
        // SAFETY: the caller's contract is that of `cell`.
        unsafe { self.cell(phys) }.store(raw, Ordering::Release)
    }

    #[inline]
    unsafe fn swap(&self, phys: u64, raw: u64) -> u64 {
        // SAFETY: the caller's contract is that of `cell`.
        unsafe { self.cell(phys) }.swap(raw, Ordering::AcqRel)
    }

    unsafe fn compare_exchange(&self, phys: u64, current: u64, new: u64) -> Result<u64, u64> {
        // SAFETY: the caller's contract is that of `cell`.
        unsafe { self.cell(phys) }.compare_exchange(
            current,
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_zeroed_aligned_and_counted() {
        let m = HeapMemory::new();
        let p = m.alloc_level(8192, 0).unwrap();
        assert_eq!(p % 8192, 0);
        // SAFETY: `p` is a live 8 KiB level of `m`; offsets are aligned and in bounds.
        unsafe {
            assert_eq!(m.load(p + 8184), 0);
            m.store(p + 8, 7);
            assert_eq!(m.swap(p + 8, 9), 7);
            assert_eq!(m.compare_exchange(p + 8, 1, 2), Err(9));
            assert_eq!(m.compare_exchange(p + 8, 9, 2), Ok(9));
            assert_eq!(m.load(p + 8), 2);
        }
        assert_eq!((m.outstanding_bytes(), m.outstanding_levels()), (8192, 1));
        // SAFETY: `p` is live, allocated with this size, and not used again.
        unsafe { m.free_level(p, 8192) };
        assert_eq!((m.outstanding_bytes(), m.allocated_bytes()), (0, 8192));
    }

    #[test]
    fn told_to_fail() {
        let m = HeapMemory::new();
        m.fail_after(1);
        let p = m.alloc_level(4096, 0).unwrap();
        assert_eq!(m.alloc_level(4096, 0), Err(AllocError));
        m.never_fail();
        let q = m.alloc_level(4096, 0).unwrap();
        m.fail_always();
        assert_eq!(m.alloc_level(4096, 0), Err(AllocError));
        assert_eq!(m.allocations(), 2);
        assert_eq!(m.alloc_level(100, 0), Err(AllocError));
        // SAFETY: both are live 4 KiB levels of `m`, not used again.
        unsafe {
            m.free_level(p, 4096);
            m.free_level(q, 4096);
        }
        assert_eq!(m.outstanding_levels(), 0);
    }
}
