//! Deliberate instruction sequences the in-kernel tests need: exact no-op runs for the counter's
//! tests, and the faults the harness's self-tests must report. Here so that `asm!` stays in
//! `arch`.

/// Exactly `N` no-ops (`nop` is `ori 0,0,0`).
#[inline(always)]
pub fn nops<const N: usize>() {
    // SAFETY: no-ops only.
    unsafe {
        core::arch::asm!(".rept {n}", "nop", ".endr", n = const N, options(nostack, preserves_flags))
    };
}

/// Executes an illegal instruction (a hypervisor emulation assistance interrupt).
///
/// # Safety
/// Does not return normally: the interrupt report stops the kernel.
pub unsafe fn illegal_instruction() {
    // SAFETY: per the caller, the interrupt is wanted.
    unsafe { core::arch::asm!(".long 0", options(nostack)) };
}

/// `lwarx` at `addr` (misaligned: an alignment interrupt with DAR = `addr`).
///
/// # Safety
/// `addr` must be readable if aligned; a misaligned one stops the kernel through the report.
pub unsafe fn load_reserve(addr: u64) {
    // SAFETY: per the caller.
    unsafe { core::arch::asm!("lwarx {0}, 0, {1}", out(reg) _, in(reg) addr, options(nostack)) };
}
