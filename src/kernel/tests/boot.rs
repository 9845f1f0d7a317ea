//! The boot: discovery, heap, vectors, timebase, MSR.
use alloc::vec::Vec;

use crate::arch::ppc64::spr;
use crate::kernel::testing::TestResult;
use crate::kernel::{boot, heap};
use crate::mm::HostPhys;
use crate::{kassert, kassert_eq, ktest};

fn fdt_discovery() -> TestResult {
    let b = boot();
    kassert!(b.opal_base != 0, "no OPAL base");
    kassert!(b.heap.len() >= 64 << 20, "heap only {} bytes", b.heap.len());
    extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }
    // SAFETY: linker symbols bounding the image (linear-map addresses).
    let image =
        unsafe { HostPhys::of_linear(&__image_start).0..HostPhys::of_linear(&__image_end).0 };
    kassert!(
        !image.contains(&b.heap.start) && !(b.heap.start..b.heap.end).contains(&image.start),
        "heap {:#x?} overlaps the image {image:#x?}",
        b.heap
    );
    Ok(())
}
ktest!("boot.fdt_discovery", fdt_discovery);

fn heap_allocates_aligned_blocks() -> TestResult {
    let before = heap::HEAP.free();
    {
        let v: Vec<u64> = (0..10_000).collect();
        kassert_eq!(v.iter().sum::<u64>(), 10_000 * 9_999 / 2);
        let layout = core::alloc::Layout::from_size_align(64 << 10, 64 << 10).unwrap();
        // SAFETY: a non-zero-sized layout; freed below with the same layout.
        let p = unsafe { alloc::alloc::alloc(layout) };
        kassert!(!p.is_null());
        kassert_eq!(p as usize % (64 << 10), 0);
        // SAFETY: allocated above with this layout.
        unsafe { alloc::alloc::dealloc(p, layout) };
    }
    kassert_eq!(heap::HEAP.free(), before);
    Ok(())
}
ktest!(
    "boot.heap_allocates_aligned_blocks",
    heap_allocates_aligned_blocks
);

fn vectors_installed_at_zero() -> TestResult {
    extern "C" {
        static __vectors_start: u8;
    }
    // SAFETY: linker symbol; the vector block is readable code.
    let image = unsafe { &__vectors_start as *const u8 as u64 };
    for off in [0x300u64, 0x700, 0xc00, 0xe40] {
        // SAFETY: real address `off` is inside the installed vector block (RAM), read through
        // its linear-map address (valid with the MMU on).
        let at_zero = unsafe { core::ptr::read_volatile(HostPhys(off).linear() as *const u64) };
        // SAFETY: the same offset inside the block in the image.
        let in_image = unsafe { core::ptr::read((image + off) as *const u64) };
        kassert_eq!(at_zero, in_image);
    }
    kassert_eq!(spr::mfspr::<{ spr::HSPRG0 }>() == 0, false);
    Ok(())
}
ktest!("boot.vectors_installed_at_zero", vectors_installed_at_zero);

fn timebase_and_msr() -> TestResult {
    let t0 = spr::timebase();
    let sum = (0..1000u64).fold(0u64, |a, x| core::hint::black_box(a + x));
    kassert_eq!(sum, 499_500);
    kassert!(spr::timebase() > t0, "the timebase does not advance");
    kassert!(spr::msr().contains(spr::Msr::ME | spr::Msr::HV | spr::Msr::LE));
    Ok(())
}
ktest!("boot.timebase_and_msr", timebase_and_msr);
