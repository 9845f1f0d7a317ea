//! Special-purpose registers, the MSR and the timebase.

pub const SRR0: u32 = 26;
pub const SRR1: u32 = 27;
pub const DSISR: u32 = 18;
pub const DAR: u32 = 19;
pub const HSPRG0: u32 = 304;
pub const HSPRG1: u32 = 305;
pub const HSRR0: u32 = 314;
pub const HSRR1: u32 = 315;
pub const LPCR: u32 = 318;
pub const HRMOR: u32 = 313;
pub const PIR: u32 = 1023;
pub const CFAR: u32 = 28;
pub const PIDR: u32 = 48;
pub const DEC: u32 = 22;
pub const HDSISR: u32 = 306;
pub const HDAR: u32 = 307;
pub const HDEC: u32 = 310;
pub const ASDR: u32 = 816;

bitflags::bitflags! {
    /// Machine State Register bits this kernel cares about.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Msr: u64 {
        const SF = 1 << 63;
        const HV = 1 << 60;
        const EE = 1 << 15;
        const PR = 1 << 14;
        const ME = 1 << 12;
        const IR = 1 << 5;
        const DR = 1 << 4;
        const RI = 1 << 1;
        const LE = 1 << 0;
    }
}

/// Read an SPR.
#[inline(always)]
pub fn mfspr<const SPR: u32>() -> u64 {
    let v: u64;
    // SAFETY: reading an SPR has no effect on memory; the kernel runs in hypervisor state, where
    // every SPR named here is readable.
    unsafe {
        core::arch::asm!("mfspr {0}, {1}", out(reg) v, const SPR, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Write an SPR.
///
/// # Safety
/// Writing an SPR changes machine state (translation, interrupts, the PMU...): the caller must
/// know the write keeps the kernel's invariants.
#[inline(always)]
pub unsafe fn mtspr<const SPR: u32>(v: u64) {
    // SAFETY: the caller vouches for the effect of the write.
    unsafe {
        core::arch::asm!("mtspr {1}, {0}", in(reg) v, const SPR, options(nostack, preserves_flags))
    };
}

/// The MSR.
#[inline(always)]
pub fn msr() -> Msr {
    let v: u64;
    // SAFETY: mfmsr only reads a register.
    unsafe { core::arch::asm!("mfmsr {0}", out(reg) v, options(nomem, nostack, preserves_flags)) };
    Msr::from_bits_retain(v)
}

/// Load a whole new MSR, including the bits `mtmsrd` cannot change (HV, ME, LE), by an
/// `hrfid` to the next instruction.
///
/// # Safety
/// The new MSR must keep the kernel running: e.g. IR/DR only with translation set up, LE kept.
#[inline(never)]
pub unsafe fn set_msr(m: Msr) {
    // SAFETY: the caller vouches for the new state; the sequence returns to the instruction
    // after `hrfid` with HSRR0/HSRR1 consumed and LR restored.
    unsafe {
        core::arch::asm!(
            "mflr {lr}",
            "mtspr 315, {msr}",
            "bcl 20, 31, 1f",
            "1: mflr {tmp}",
            "addi {tmp}, {tmp}, 16",
            "mtspr 314, {tmp}",
            "hrfid",
            "mtlr {lr}",
            msr = in(reg) m.bits(),
            tmp = out(reg) _,
            lr = out(reg) _,
            options(nostack)
        )
    };
}

/// The timebase (512 MHz on POWER9).
#[inline(always)]
pub fn timebase() -> u64 {
    let v: u64;
    // SAFETY: mftb only reads a register.
    unsafe { core::arch::asm!("mftb {0}", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Timebase ticks per second.
pub const TIMEBASE_HZ: u64 = 512_000_000;
