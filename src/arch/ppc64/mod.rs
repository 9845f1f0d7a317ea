//! POWER9 (ppc64le, hypervisor real mode) support: boot and vector assembly, SPR access, OPAL,
//! exceptions, cache-inhibited MMIO and exact instruction counts (with QEMU's insn-count plugin).

pub mod exception;
pub mod guest;
pub mod icount;
pub mod mmio;
pub mod mmu;
pub mod opal;
pub mod phb;
pub mod spr;

core::arch::global_asm!(
    include_str!("../../../boot/macros.S"),
    include_str!("../../../boot/entry.S"),
    include_str!("../../../boot/vectors.S"),
);

/// Flush a range of freshly written instructions so that instruction fetch sees them
/// (dcbst / sync / icbi / isync per cache block).
///
/// # Safety
/// `start..start + len` must be mapped memory (in real mode: existing RAM).
pub unsafe fn flush_icache_range(start: usize, len: usize) {
    const BLOCK: usize = 128; // POWER9 cache block size
    let end = start + len;
    let mut addr = start & !(BLOCK - 1);
    while addr < end {
        // SAFETY: the caller guarantees the range exists; dcbst only writes a block back.
        unsafe {
            core::arch::asm!("dcbst 0, {0}", in(reg) addr, options(nostack, preserves_flags))
        };
        addr += BLOCK;
    }
    // SAFETY: a barrier has no memory-safety effect.
    unsafe { core::arch::asm!("sync", options(nostack, preserves_flags)) };
    let mut addr = start & !(BLOCK - 1);
    while addr < end {
        // SAFETY: as above; icbi only invalidates instruction cache blocks.
        unsafe { core::arch::asm!("icbi 0, {0}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += BLOCK;
    }
    // SAFETY: barriers have no memory-safety effect.
    unsafe { core::arch::asm!("sync", "isync", options(nostack, preserves_flags)) };
}
