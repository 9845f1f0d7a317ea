//! How a vCPU's run ends, and what the hypervisor does with each kind of exit: the decisions of
//! the guest boundary, kept apart from the assembly that enters and leaves a guest
//! (`arch::ppc64::guest`) so that the host tests can hold them.
//!
//! - An interrupt taken while a guest runs is classified by its vector ([`Exit::for_interrupt`]):
//!   the hypervisor decrementer is the end of a time slice (the guest is resumed while it has
//!   run time left), an HMI is the machine's to handle through OPAL (the guest is resumed), a
//!   machine check, system reset, external or hypervisor virtualization interrupt is the
//!   machine's (the guest is stopped, and the report says it was not the guest's doing); any
//!   other is the guest's own fault (the guest is stopped and its state reported).
//! - `sc 1` from guest problem state never reaches a handler: the guest gets a
//!   privileged-instruction program interrupt ([`reflect_privileged`]), as KVM delivers it.
#![forbid(unsafe_code)]

/// Exit code bit: an interrupt stopped the guest (its vector in the low bits).
pub const EXIT_FAULT: u64 = 1 << 32;
/// Exit code bit: the guest ended itself with H_P9_EXIT (its code in the low bits).
pub const EXIT_GUEST: u64 = 1 << 33;
/// Exit code: the guest ran past its run limit.
pub const EXIT_TIMEOUT: u64 = 1 << 34;
/// Exit code bit: an interrupt that is the machine's, not the guest's (vector in the low bits).
pub const EXIT_MACHINE: u64 = 1 << 35;
/// Exit code: the time slice ended (the hypervisor decrementer); the guest is resumed.
pub const EXIT_PREEMPT: u64 = 1 << 36;
/// Exit code: a hypervisor maintenance interrupt; handled, then the guest is resumed.
pub const EXIT_HMI: u64 = 1 << 37;

/// Vectors (ISA 3.0 Book III).
pub mod vector {
    pub const SYSTEM_RESET: u64 = 0x100;
    pub const MACHINE_CHECK: u64 = 0x200;
    pub const EXTERNAL: u64 = 0x500;
    pub const PROGRAM: u64 = 0x700;
    pub const HDEC: u64 = 0x980;
    pub const HDSI: u64 = 0xe00;
    pub const HISI: u64 = 0xe20;
    pub const HEA: u64 = 0xe40;
    pub const HMI: u64 = 0xe60;
    pub const HVI: u64 = 0xea0;
    pub const HFAC: u64 = 0xf80;
}

/// How a guest run ended, or why the hypervisor took the CPU back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest called H_P9_EXIT with this code.
    Guest(u32),
    /// The guest's own fault at this vector: it is stopped.
    Fault(u64),
    /// The guest used up its run limit: it is stopped.
    Timeout,
    /// The machine's interrupt at this vector (not the guest's doing): the guest is stopped.
    Machine(u64),
    /// Its time slice ended: resumed while it has run time left.
    Preempt,
    /// A hypervisor maintenance interrupt: handled, then resumed.
    Hmi,
}

impl Exit {
    /// What an interrupt at `vector`, taken while a guest ran, means.
    pub const fn for_interrupt(vector: u64) -> Exit {
        match vector {
            vector::HDEC => Exit::Preempt,
            vector::HMI => Exit::Hmi,
            vector::SYSTEM_RESET | vector::MACHINE_CHECK | vector::EXTERNAL | vector::HVI => {
                Exit::Machine(vector)
            }
            v => Exit::Fault(v),
        }
    }

    /// The code the exit path carries.
    pub const fn code(self) -> u64 {
        match self {
            Exit::Guest(c) => EXIT_GUEST | c as u64,
            Exit::Fault(v) => EXIT_FAULT | (v & 0xffff),
            Exit::Timeout => EXIT_TIMEOUT,
            Exit::Machine(v) => EXIT_MACHINE | (v & 0xffff),
            Exit::Preempt => EXIT_PREEMPT,
            Exit::Hmi => EXIT_HMI,
        }
    }

    /// The exit a code stands for (None for a code no exit makes).
    pub const fn from_code(code: u64) -> Option<Exit> {
        let low = code & 0xffff_ffff;
        Some(match code & !0xffff_ffff {
            EXIT_GUEST => Exit::Guest(low as u32),
            EXIT_FAULT if low <= 0xffff => Exit::Fault(low),
            EXIT_MACHINE if low <= 0xffff => Exit::Machine(low),
            EXIT_TIMEOUT if low == 0 => Exit::Timeout,
            EXIT_PREEMPT if low == 0 => Exit::Preempt,
            EXIT_HMI if low == 0 => Exit::Hmi,
            _ => return None,
        })
    }

    /// Whether the guest carries on after this exit (the hypervisor re-enters it).
    pub const fn resumes(self) -> bool {
        matches!(self, Exit::Preempt | Exit::Hmi)
    }
}

/// MSR bits (ISA 3.0).
pub mod msr {
    pub const SF: u64 = 1 << 63;
    pub const HV: u64 = 1 << 60;
    pub const EE: u64 = 1 << 15;
    pub const PR: u64 = 1 << 14;
    pub const ME: u64 = 1 << 12;
    pub const IR: u64 = 1 << 5;
    pub const DR: u64 = 1 << 4;
    pub const RI: u64 = 1 << 1;
    pub const LE: u64 = 1 << 0;
}

/// SRR1 bit of a program interrupt for a privileged instruction.
pub const SRR1_PROGRAM_PRIV: u64 = 1 << 18;
/// The MSR bits an interrupt copies into SRR1: all but 33:36 and 42:47, which hold the cause
/// (KVM's `SRR1_MSR_BITS`).
const SRR1_MSR_BITS: u64 = !0x783f_0000;

/// A guest's PC, MSR, SRR0 and SRR1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPc {
    pub pc: u64,
    pub msr: u64,
    pub srr0: u64,
    pub srr1: u64,
}

/// `sc 1` from guest problem state (`msr` has PR): the state that delivers a
/// privileged-instruction program interrupt to the guest instead (SRR0 = the `sc`, which is
/// the instruction before `pc`; SRR1 = the MSR bits and the cause; the guest's 0x700 with
/// translation, interrupts and problem state off, little-endian as its LPCR[ILE] says).
/// `None` if the call came from privileged state and may be served.
pub const fn reflect_privileged(pc: u64, msr: u64) -> Option<GuestPc> {
    if msr & msr::PR == 0 {
        return None;
    }
    Some(GuestPc {
        pc: vector::PROGRAM,
        msr: (msr & (msr::SF | msr::ME)) | msr::LE,
        srr0: pc.wrapping_sub(4),
        srr1: (msr & SRR1_MSR_BITS) | SRR1_PROGRAM_PRIV,
    })
}

/// A guest's run time, in timebase ticks: each slice ends with the hypervisor decrementer;
/// a guest past `limit` is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunLimit {
    /// Ticks per slice (HDEC's value at entry; below 2^31, which any HDEC width holds).
    pub slice: u64,
    /// Ticks from the run's start after which the guest is stopped.
    pub limit: u64,
}

impl RunLimit {
    /// The slice to arm after `used` ticks of the run, or `None` if the run is over.
    pub const fn next_slice(&self, used: u64) -> Option<u64> {
        if used >= self.limit {
            return None;
        }
        let left = self.limit - used;
        let s = if left < self.slice { left } else { self.slice };
        Some(if s > 0x7fff_ffff { 0x7fff_ffff } else { s })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupts_are_classified_by_whose_they_are() {
        assert_eq!(Exit::for_interrupt(0x980), Exit::Preempt);
        assert_eq!(Exit::for_interrupt(0xe60), Exit::Hmi);
        for v in [0x100, 0x200, 0x500, 0xea0] {
            assert_eq!(Exit::for_interrupt(v), Exit::Machine(v), "{v:#x}");
        }
        for v in [0x300, 0x700, 0xe00, 0xe20, 0xe40, 0xf80, 0x1fe0] {
            assert_eq!(Exit::for_interrupt(v), Exit::Fault(v), "{v:#x}");
        }
        assert!(Exit::Preempt.resumes() && Exit::Hmi.resumes());
        assert!(!Exit::Fault(0xe00).resumes() && !Exit::Machine(0x200).resumes());
    }

    #[test]
    fn exit_codes_round_trip_and_reject_what_no_exit_makes() {
        for e in [
            Exit::Guest(0),
            Exit::Guest(0xdead),
            Exit::Fault(0xe40),
            Exit::Timeout,
            Exit::Machine(0x200),
            Exit::Preempt,
            Exit::Hmi,
        ] {
            assert_eq!(Exit::from_code(e.code()), Some(e));
        }
        assert_eq!(Exit::from_code(0), None);
        assert_eq!(Exit::from_code(EXIT_TIMEOUT | 1), None);
        assert_eq!(Exit::from_code(EXIT_FAULT | EXIT_GUEST), None);
    }

    #[test]
    fn problem_state_sc_becomes_a_privileged_program_interrupt() {
        let user = msr::SF | msr::EE | msr::PR | msr::ME | msr::IR | msr::DR | msr::RI | msr::LE;
        let r = reflect_privileged(0x1_0004, user).expect("PR set");
        assert_eq!(r.pc, 0x700);
        assert_eq!(r.srr0, 0x1_0000, "SRR0 names the sc itself");
        assert_eq!(r.srr1 & SRR1_PROGRAM_PRIV, SRR1_PROGRAM_PRIV);
        assert_eq!(
            r.srr1 & 0xffff,
            user & 0xffff,
            "the MSR bits are kept in SRR1"
        );
        assert_eq!(r.msr & (msr::PR | msr::IR | msr::DR | msr::EE | msr::HV), 0);
        assert_eq!(
            r.msr & (msr::SF | msr::ME | msr::LE),
            msr::SF | msr::ME | msr::LE
        );
        let kernel = user & !msr::PR;
        assert_eq!(reflect_privileged(0x1_0004, kernel), None);
    }

    #[test]
    fn run_limit_slices_end_at_the_limit() {
        let l = RunLimit {
            slice: 100,
            limit: 250,
        };
        assert_eq!(l.next_slice(0), Some(100));
        assert_eq!(l.next_slice(200), Some(50));
        assert_eq!(l.next_slice(250), None);
        assert_eq!(l.next_slice(u64::MAX), None);
        let big = RunLimit {
            slice: u64::MAX,
            limit: u64::MAX,
        };
        assert_eq!(big.next_slice(0), Some(0x7fff_ffff), "HDEC holds 31 bits");
    }
}
