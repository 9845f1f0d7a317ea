//! Exceptions: the per-CPU area the vector block saves into, installation of the vectors at real
//! address 0, and the report for any interrupt this kernel does not expect (today: all of them).
use core::cell::UnsafeCell;

use super::spr::{self, mtspr};

/// The state the vector block saves (layout shared with boot/vectors.S).
#[repr(C)]
pub struct TrapFrame {
    pub gpr: [u64; 32],
    pub srr0: u64,
    pub srr1: u64,
    pub hsrr0: u64,
    pub hsrr1: u64,
    pub dar: u64,
    pub dsisr: u64,
    pub lr: u64,
    pub ctr: u64,
    pub cr: u64,
    pub xer: u64,
    pub vector: u64,
    /// CFAR as the interrupted code left it (read by the vector stub before its branch).
    pub cfar: u64,
}

/// One CPU's area, found through HSPRG0 by the vector block.
#[repr(C)]
pub struct PerCpu {
    pub frame: TrapFrame,
    /// Spill slot for r12 in the first instructions of a vector.
    pub(super) scratch: u64,
    /// Top of the stack the handler runs on (never the interrupted stack: it may be the fault).
    pub(super) exception_stack_top: u64,
    /// Address of the Rust handler (`extern "C" fn(&mut PerCpu)`).
    pub(super) handler: u64,
    /// Where vector 0xC00 goes: the hypercall entry (`arch::ppc64::guest`).
    pub(super) hcall_entry: u64,
    /// Spill slot for CTR in the hypercall vector.
    pub(super) scratch_ctr: u64,
    /// Spill slot for CR in the hypercall entry (saved before anything compares).
    pub(super) scratch_cr: u64,
    /// The running vCPU's registers (`*mut GuestRegs`), null when no guest runs.
    pub(super) guest: u64,
    /// 1 while a guest runs on this CPU (its interrupts are exits, not kernel faults).
    pub(super) in_guest: u64,
    /// The host's stack pointer and MSR while a guest runs.
    pub(super) host_sp: u64,
    pub(super) host_msr: u64,
    /// The Rust hypercall handler (`extern "C" fn(&mut GuestRegs) -> u64`).
    pub(super) hcall_fn: u64,
    /// Real address of the vector block's common path (for an `sc 1` with no guest).
    pub(super) exception_common: u64,
    /// The host's values of `guest::SWITCHED_SPRS` and LPCR while a guest runs.
    pub(super) host_sprs: [u64; super::guest::SWITCHED_SPRS.len()],
    pub(super) host_lpcr: u64,
    /// This CPU's "in a real-mode scope" flag for the allocation guard (`mm::alloc_guard`):
    /// one CPU's real mode never refuses another's allocation.
    pub alloc_guard: core::sync::atomic::AtomicBool,
}

/// The calling CPU's allocation-guard flag (installed with `alloc_guard::set_cpu_flag`).
pub fn alloc_guard_flag() -> &'static core::sync::atomic::AtomicBool {
    // SAFETY: HSPRG0 names this CPU's area, which lives as long as the kernel; the flag is an
    // atomic, shared access is fine.
    unsafe { &(*this_cpu()).alloc_guard }
}

const EXCEPTION_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(4096))]
struct BootCpu {
    percpu: UnsafeCell<PerCpu>,
    stack: UnsafeCell<[u8; EXCEPTION_STACK_SIZE]>,
}

// SAFETY: the boot CPU's area is written only by that CPU (the vector block and its handler).
unsafe impl Sync for BootCpu {}

static BOOT_CPU: BootCpu = BootCpu {
    percpu: UnsafeCell::new(PerCpu {
        frame: TrapFrame {
            gpr: [0; 32],
            srr0: 0,
            srr1: 0,
            hsrr0: 0,
            hsrr1: 0,
            dar: 0,
            dsisr: 0,
            lr: 0,
            ctr: 0,
            cr: 0,
            xer: 0,
            vector: 0,
            cfar: 0,
        },
        scratch: 0,
        exception_stack_top: 0,
        handler: 0,
        hcall_entry: 0,
        scratch_ctr: 0,
        scratch_cr: 0,
        guest: 0,
        in_guest: 0,
        host_sp: 0,
        host_msr: 0,
        hcall_fn: 0,
        exception_common: 0,
        host_sprs: [0; super::guest::SWITCHED_SPRS.len()],
        host_lpcr: 0,
        alloc_guard: core::sync::atomic::AtomicBool::new(false),
    }),
    stack: UnsafeCell::new([0; EXCEPTION_STACK_SIZE]),
};

extern "C" {
    static __vectors_start: u8;
    static __vectors_end: u8;
    static p9_exception_common: u8;
}

/// This CPU's area: HSPRG0 names it from [`install`] (boot CPU) or the secondary entry on.
pub fn this_cpu() -> *mut PerCpu {
    spr::mfspr::<{ spr::HSPRG0 }>() as *mut PerCpu
}

/// A new CPU's area, set up as the boot CPU's is (same handler, hypercall entry, vector block),
/// with an exception stack of its own; it lives as long as the kernel.
pub fn new_cpu_area() -> *mut PerCpu {
    let boot = BOOT_CPU.percpu.get();
    let stack = alloc::vec![0u8; EXCEPTION_STACK_SIZE].leak();
    let top = (stack.as_ptr() as u64 + EXCEPTION_STACK_SIZE as u64) & !0xf;
    // SAFETY: the boot CPU's area is fully set up by `install` and only its per-call fields
    // change later; these are the fields every CPU shares.
    let (handler, hcall_entry, hcall_fn, exception_common) = unsafe {
        (
            (*boot).handler,
            (*boot).hcall_entry,
            (*boot).hcall_fn,
            (*boot).exception_common,
        )
    };
    let area = alloc::boxed::Box::new(PerCpu {
        frame: TrapFrame {
            gpr: [0; 32],
            srr0: 0,
            srr1: 0,
            hsrr0: 0,
            hsrr1: 0,
            dar: 0,
            dsisr: 0,
            lr: 0,
            ctr: 0,
            cr: 0,
            xer: 0,
            vector: 0,
            cfar: 0,
        },
        scratch: 0,
        exception_stack_top: top,
        handler,
        hcall_entry,
        scratch_ctr: 0,
        scratch_cr: 0,
        guest: 0,
        in_guest: 0,
        host_sp: 0,
        host_msr: 0,
        hcall_fn,
        exception_common,
        host_sprs: [0; super::guest::SWITCHED_SPRS.len()],
        host_lpcr: 0,
        alloc_guard: core::sync::atomic::AtomicBool::new(false),
    });
    alloc::boxed::Box::leak(area)
}

/// Copy the vector block to real address 0 and point HSPRG0 at the boot CPU's area.
///
/// # Safety
/// Call once, on the boot CPU, in real mode, before anything may interrupt; real addresses
/// 0..size of the vector block must be free RAM (skiboot leaves low memory to the OS).
pub unsafe fn install(handler: extern "C" fn(&mut PerCpu) -> !) {
    let pc = BOOT_CPU.percpu.get();
    // SAFETY: nothing else touches the boot CPU's area before vectors are live.
    unsafe {
        (*pc).exception_stack_top =
            (BOOT_CPU.stack.get() as u64 + EXCEPTION_STACK_SIZE as u64) & !0xf;
        (*pc).handler = handler as usize as u64;
        (*pc).hcall_entry = super::guest::hcall_entry_addr();
        (*pc).hcall_fn = super::guest::hcall_fn_addr();
        // The common path's real address: its offset inside the block copied to 0.
        (*pc).exception_common =
            &p9_exception_common as *const u8 as u64 - &__vectors_start as *const u8 as u64;
        mtspr::<{ spr::HSPRG0 }>(pc as u64);
    }
    // SAFETY: linker-provided symbols bracket the vector block.
    let (start, end) = unsafe { (&__vectors_start as *const u8, &__vectors_end as *const u8) };
    let len = end as usize - start as usize;
    // SAFETY: the caller guarantees 0..len is free RAM we own (real mode: address 0 is RAM).
    unsafe {
        copy_to_real_zero(start, len);
        super::flush_icache_range(0, len);
    }
}

/// Copy `len` bytes to real address 0. Written as an explicit loop on addresses: Rust forbids
/// dereferencing a null pointer, yet real address 0 is where the architecture wants the vectors.
///
/// # Safety
/// As for [`install`].
unsafe fn copy_to_real_zero(src: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: src is readable for len bytes; the store goes through asm so address 0 is an
        // ordinary real address, not a Rust null pointer.
        unsafe {
            let v = core::ptr::read_unaligned(src.add(off) as *const u64);
            core::arch::asm!("stdx {0}, 0, {1}", in(reg) v, in(reg) off, options(nostack, preserves_flags));
        }
        off += 8;
    }
}

/// A human name for a vector.
pub fn vector_name(v: u64) -> &'static str {
    match v {
        0x100 => "system reset",
        0x200 => "machine check",
        0x300 => "data storage",
        0x380 => "data segment",
        0x400 => "instruction storage",
        0x480 => "instruction segment",
        0x500 => "external",
        0x600 => "alignment",
        0x700 => "program",
        0x800 => "floating-point unavailable",
        0x900 => "decrementer",
        0x980 => "hypervisor decrementer",
        0xa00 => "directed privileged doorbell",
        0xc00 => "system call",
        0xd00 => "trace",
        0xe00 => "hypervisor data storage",
        0xe20 => "hypervisor instruction storage",
        0xe40 => "hypervisor emulation assistance",
        0xe60 => "hypervisor maintenance",
        0xe80 => "directed hypervisor doorbell",
        0xea0 => "hypervisor virtualization",
        0xf00 => "performance monitor",
        0xf20 => "vector unavailable",
        0xf40 => "VSX unavailable",
        0xf60 => "facility unavailable",
        0xf80 => "hypervisor facility unavailable",
        _ => "unknown",
    }
}
