//! MMIO to big-endian device registers, in either translation mode. With the MMU off the
//! cache-inhibited instructions (`ldcix`/`stdcix` and the 32-bit forms) reach the register at its
//! real address; with it on, ordinary loads and stores go through the linear map, where
//! `arch::ppc64::mmu` maps device ranges non-idempotent I/O (cache-inhibited and guarded). Both
//! follow MSR[LE], so the byte swap for big-endian registers is done here, by name.
use super::spr::{self, Msr};
use crate::mm::HostPhys;

/// Whether data accesses are translated right now.
#[inline(always)]
fn translated() -> bool {
    spr::msr().contains(Msr::DR)
}

/// Read a big-endian 64-bit register.
///
/// # Safety
/// `addr` must be the real address of a 64-bit device register, readable without side effects
/// the caller did not intend (and, with the MMU on, inside a range `mmu` maps as I/O).
#[inline(always)]
pub unsafe fn read_be64(addr: u64) -> u64 {
    let raw: u64;
    if translated() {
        // SAFETY: the caller guarantees `addr` is a device register mapped as I/O in the linear
        // map; sync orders it with other accesses.
        unsafe {
            core::arch::asm!("sync", "ld {0}, 0({1})", "sync", out(reg) raw, in(reg) HostPhys(addr).linear(), options(nostack, preserves_flags))
        };
    } else {
        // SAFETY: the caller guarantees `addr` is a device register; sync orders it.
        unsafe {
            core::arch::asm!("sync", "ldcix {0}, 0, {1}", "sync", out(reg) raw, in(reg) addr, options(nostack, preserves_flags))
        };
    }
    u64::from_be(raw)
}

/// Write a big-endian 64-bit register.
///
/// # Safety
/// `addr` must be the real address of a 64-bit device register and the write must be intended
/// (with the MMU on, inside a range `mmu` maps as I/O).
#[inline(always)]
pub unsafe fn write_be64(addr: u64, value: u64) {
    if translated() {
        // SAFETY: the caller guarantees `addr` is a device register mapped as I/O.
        unsafe {
            core::arch::asm!("sync", "std {0}, 0({1})", "sync", in(reg) value.to_be(), in(reg) HostPhys(addr).linear(), options(nostack, preserves_flags))
        };
    } else {
        // SAFETY: the caller guarantees `addr` is a device register.
        unsafe {
            core::arch::asm!("sync", "stdcix {0}, 0, {1}", "sync", in(reg) value.to_be(), in(reg) addr, options(nostack, preserves_flags))
        };
    }
}

/// Read a big-endian 32-bit register.
///
/// # Safety
/// As [`read_be64`], for a 32-bit register.
#[inline(always)]
pub unsafe fn read_be32(addr: u64) -> u32 {
    let raw: u64;
    if translated() {
        // SAFETY: the caller guarantees `addr` is a device register mapped as I/O.
        unsafe {
            core::arch::asm!("sync", "lwz {0}, 0({1})", "sync", out(reg) raw, in(reg) HostPhys(addr).linear(), options(nostack, preserves_flags))
        };
    } else {
        // SAFETY: the caller guarantees `addr` is a device register.
        unsafe {
            core::arch::asm!("sync", "lwzcix {0}, 0, {1}", "sync", out(reg) raw, in(reg) addr, options(nostack, preserves_flags))
        };
    }
    u32::from_be(raw as u32)
}

/// Write a big-endian 32-bit register.
///
/// # Safety
/// As [`write_be64`], for a 32-bit register.
#[inline(always)]
pub unsafe fn write_be32(addr: u64, value: u32) {
    let v = u64::from(value.to_be());
    if translated() {
        // SAFETY: the caller guarantees `addr` is a device register mapped as I/O.
        unsafe {
            core::arch::asm!("sync", "stw {0}, 0({1})", "sync", in(reg) v, in(reg) HostPhys(addr).linear(), options(nostack, preserves_flags))
        };
    } else {
        // SAFETY: the caller guarantees `addr` is a device register.
        unsafe {
            core::arch::asm!("sync", "stwcix {0}, 0, {1}", "sync", in(reg) v, in(reg) addr, options(nostack, preserves_flags))
        };
    }
}
