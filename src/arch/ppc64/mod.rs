//! POWER9 (ppc64le, hypervisor real mode) support: boot and vector assembly, SPR access, OPAL,
//! exceptions, cache-inhibited MMIO and exact instruction counts (with QEMU's insn-count plugin).

pub mod exception;
pub mod guest;
pub mod icount;
pub mod mmio;
pub mod mmu;
pub mod opal;
pub mod phb;
pub mod probe;
pub mod smp;
pub mod spr;

use core::mem::offset_of;
use exception::{PerCpu, TrapFrame};

core::arch::global_asm!(
    include_str!("../../../boot/macros.S"),
    include_str!("../../../boot/entry.S"),
    include_str!("../../../boot/vectors.S"),
    spr_dsisr = const spr::DSISR,
    spr_dar = const spr::DAR,
    spr_srr0 = const spr::SRR0,
    spr_srr1 = const spr::SRR1,
    spr_hsprg0 = const spr::HSPRG0,
    spr_hsprg1 = const spr::HSPRG1,
    spr_hsrr0 = const spr::HSRR0,
    spr_hsrr1 = const spr::HSRR1,
    msr_le = const spr::Msr::LE.bits(),
    msr_dr = const spr::Msr::DR.bits(),
    msr_ir = const spr::Msr::IR.bits(),
    pcpu_gpr = const offset_of!(PerCpu, frame) + offset_of!(TrapFrame, gpr),
    pcpu_srr0 = const offset_of!(TrapFrame, srr0),
    pcpu_srr1 = const offset_of!(TrapFrame, srr1),
    pcpu_hsrr0 = const offset_of!(TrapFrame, hsrr0),
    pcpu_hsrr1 = const offset_of!(TrapFrame, hsrr1),
    pcpu_dar = const offset_of!(TrapFrame, dar),
    pcpu_dsisr = const offset_of!(TrapFrame, dsisr),
    pcpu_lr = const offset_of!(TrapFrame, lr),
    pcpu_ctr = const offset_of!(TrapFrame, ctr),
    pcpu_cr = const offset_of!(TrapFrame, cr),
    pcpu_xer = const offset_of!(TrapFrame, xer),
    pcpu_vector = const offset_of!(TrapFrame, vector),
    pcpu_scratch = const offset_of!(PerCpu, scratch),
    pcpu_stack = const offset_of!(PerCpu, exception_stack_top),
    pcpu_handler = const offset_of!(PerCpu, handler),
    pcpu_hcall_entry = const offset_of!(PerCpu, hcall_entry),
    pcpu_scratch_ctr = const offset_of!(PerCpu, scratch_ctr),
    pcpu_cfar = const offset_of!(TrapFrame, cfar),
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
