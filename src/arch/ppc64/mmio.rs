//! Cache-inhibited MMIO in hypervisor real mode. `ldcix`/`stdcix` (and the 32-bit forms) follow
//! MSR[LE], so the byte swap for big-endian devices is done here, by name, in software.

/// Read a big-endian 64-bit register.
///
/// # Safety
/// `addr` must be the real address of a 64-bit device register, readable without side effects
/// the caller did not intend.
#[inline(always)]
pub unsafe fn read_be64(addr: u64) -> u64 {
    let raw: u64;
    // SAFETY: the caller guarantees `addr` is a device register; sync orders it with other accesses.
    unsafe {
        core::arch::asm!("sync", "ldcix {0}, 0, {1}", "sync", out(reg) raw, in(reg) addr, options(nostack, preserves_flags))
    };
    u64::from_be(raw)
}

/// Write a big-endian 64-bit register.
///
/// # Safety
/// `addr` must be the real address of a 64-bit device register and the write must be intended.
#[inline(always)]
pub unsafe fn write_be64(addr: u64, value: u64) {
    // SAFETY: the caller guarantees `addr` is a device register.
    unsafe {
        core::arch::asm!("sync", "stdcix {0}, 0, {1}", "sync", in(reg) value.to_be(), in(reg) addr, options(nostack, preserves_flags))
    };
}

/// Read a big-endian 32-bit register.
///
/// # Safety
/// As [`read_be64`], for a 32-bit register.
#[inline(always)]
pub unsafe fn read_be32(addr: u64) -> u32 {
    let raw: u64;
    // SAFETY: the caller guarantees `addr` is a device register.
    unsafe {
        core::arch::asm!("sync", "lwzcix {0}, 0, {1}", "sync", out(reg) raw, in(reg) addr, options(nostack, preserves_flags))
    };
    u32::from_be(raw as u32)
}

/// Write a big-endian 32-bit register.
///
/// # Safety
/// As [`write_be64`], for a 32-bit register.
#[inline(always)]
pub unsafe fn write_be32(addr: u64, value: u32) {
    // SAFETY: the caller guarantees `addr` is a device register.
    unsafe {
        core::arch::asm!("sync", "stwcix {0}, 0, {1}", "sync", in(reg) u64::from(value.to_be()), in(reg) addr, options(nostack, preserves_flags))
    };
}
