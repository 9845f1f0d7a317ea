//! The kernel heap: `linked_list_allocator` over the largest free RAM range the FDT describes,
//! minus firmware reservations, the kernel image, the vectors and the FDT itself.
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use linked_list_allocator::Heap;

use crate::bootinfo::Range;
use crate::mm::alloc_guard::{set_violation_hook, GuardedAllocator};
use crate::mm::HostPhys;

pub struct KernelHeap {
    heap: spin::Mutex<Heap>,
}

impl KernelHeap {
    const fn new() -> Self {
        KernelHeap {
            heap: spin::Mutex::new(Heap::empty()),
        }
    }

    /// Bytes free in the heap.
    pub fn free(&self) -> usize {
        self.heap.lock().free()
    }

    /// Bytes in the heap.
    pub fn size(&self) -> usize {
        self.heap.lock().size()
    }
}

// SAFETY: allocation is serialized by the spin lock; `Heap` returns blocks of the requested
// layout or an error, which we turn into null as GlobalAlloc requires.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.heap
            .lock()
            .allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this layout.
            unsafe { self.heap.lock().deallocate(p, layout) };
        }
    }
}

/// The heap itself (for its figures); allocation goes through [`ALLOCATOR`].
pub static HEAP: KernelHeap = KernelHeap::new();

/// Forwards to [`HEAP`]: the guard below needs an allocator value it can own.
pub struct HeapRef(&'static KernelHeap);

// SAFETY: forwards every call unchanged to `KernelHeap`, which upholds the contract.
unsafe impl GlobalAlloc for HeapRef {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

/// The kernel's allocator: refuses while a real-mode hypercall handler runs on this CPU
/// (`mm::alloc_guard`), so real mode's "allocates nothing" is checked, not hoped for.
#[global_allocator]
pub static ALLOCATOR: GuardedAllocator<HeapRef> = GuardedAllocator::new(HeapRef(&HEAP));

/// Told about every refused real-mode allocation; prints without allocating. The allocation
/// then fails, which panics and fails the running test, naming it.
fn report_real_mode_allocation(layout: Layout) {
    crate::kernel::console::print_emergency(format_args!(
        "\nREAL-MODE ALLOCATION REFUSED: {} bytes (align {}) requested inside a real-mode handler\n",
        layout.size(),
        layout.align()
    ));
}

/// Give the heap its memory.
///
/// # Safety
/// `range` must be RAM that nothing else uses for the rest of the kernel's life; call once.
pub unsafe fn init(range: Range) {
    // SAFETY: the caller hands us exclusive use of the range, used through its linear-map
    // addresses (valid with the MMU off and on).
    unsafe {
        HEAP.heap.lock().init(
            HostPhys(range.start).linear() as *mut u8,
            range.len() as usize,
        )
    };
    set_violation_hook(report_real_mode_allocation);
}
