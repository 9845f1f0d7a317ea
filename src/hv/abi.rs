//! What the hypervisor and its test guest (`guest/`, which includes this file by path) agree on:
//! where the guest's mailbox lives, its layout, and the private hypercall that ends a guest.
//! Both run little-endian, so the mailbox is little-endian (native on both sides); TCE lists in
//! guest memory stay big-endian, as PAPR has them.

/// H_P9_EXIT(code, srr0, srr1): the guest is done (`code` 0) or hit `code` = an interrupt
/// vector of its own (`srr0`/`srr1` as the interrupt left them). Private to this project, in
/// PAPR's platform-specific range.
pub const H_P9_EXIT: u64 = 0xF100;

/// Guest physical address of the [`Mailbox`] (the hypervisor passes it in r3 too).
pub const MAILBOX_GPA: u64 = 0x20_0000;
/// Guest physical address of the [`CallResult`] array.
pub const RESULTS_GPA: u64 = 0x30_0000;
/// Most calls one run carries.
pub const MAX_CALLS: usize = 4096;
/// `Mailbox::magic`.
pub const MAGIC: u64 = 0x7039_696f_6d6d_7521;

/// What the guest does.
pub mod action {
    /// Make each call in `calls`, registers filled with patterns, and check them after.
    pub const CALLS: u64 = 0;
    /// Execute an illegal instruction (the hypervisor must end the guest and report it).
    pub const ILLEGAL: u64 = 1;
    /// Load from a guest physical address no memory backs (a partition-scoped fault).
    pub const UNMAPPED_LOAD: u64 = 2;
    /// Make each call in `calls` `repeat` times between the instruction-count markers; the
    /// result's `insns` is the last repetition's count.
    pub const BENCH: u64 = 3;
}

/// One hypercall to make.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Call {
    /// r3.
    pub nr: u64,
    /// r4..r11.
    pub args: [u64; 8],
}

/// The run's description, written by the hypervisor before the guest starts.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Mailbox {
    /// [`MAGIC`].
    pub magic: u64,
    /// One of [`action`].
    pub action: u64,
    /// Calls in `calls`.
    pub ncalls: u64,
    /// Repetitions per call for [`action::BENCH`].
    pub repeat: u64,
    /// Unmapped guest physical address for [`action::UNMAPPED_LOAD`].
    pub bad_gpa: u64,
    /// The calls.
    pub calls: [Call; MAX_CALLS],
}

/// One call's outcome, written by the guest.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallResult {
    /// r3 after the call.
    pub r3: u64,
    /// r4 after the call.
    pub r4: u64,
    /// 1 if every register the call must preserve was intact, 0 if not, 2 if not checked.
    pub regs_ok: u64,
    /// The first register found changed (0..=31 GPRs, 32 CR, 33 LR, 34 CTR, 35 XER,
    /// 36 SRR0, 37 SRR1), or `u64::MAX`.
    pub bad_reg: u64,
    /// Value found in that register.
    pub bad_value: u64,
    /// Instructions from `sc 1` to the guest's next instruction ([`action::BENCH`]), or 0.
    pub insns: u64,
}

/// Whether a call returns a value in r4 besides r3 (H_GET_TCE): the only registers a hypercall
/// may change are r3 and, for these, r4.
pub const fn returns_r4(nr: u64) -> bool {
    nr == 0x1C
}
