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
/// Guest physical address of the count of decrementer interrupts the guest handled itself
/// (a u64 its 0x900 handler increments; the hypervisor may read it).
pub const DEC_COUNT_GPA: u64 = 0x1018;
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

/// Guest actions: a [`Call`] whose `nr` has [`GUEST_ACTION`] set is not a hypercall but
/// something the guest does itself (what a hostile guest would try). Its outcome is written to
/// [`CallResult`]: `r3` = [`outcome::OK`] with the value in `r4`, or [`outcome::INTERRUPT`] with
/// the guest's own vector in `r4`; an action that makes the hypervisor stop the guest has no
/// result (the hypervisor reports the stop and restarts the vCPU at the next call).
pub const GUEST_ACTION: u64 = 1 << 63;

/// The actions (`nr = GUEST_ACTION | op`), with their arguments in `args`.
pub mod guest_op {
    /// Spin forever with MSR[EE] off.
    pub const SPIN: u64 = 1;
    /// Spin forever with MSR[EE] on and the decrementer armed (the guest's own 0x900 handler
    /// re-arms it and returns to the spin).
    pub const SPIN_EE: u64 = 2;
    /// Load a doubleword from guest physical `args[0]`; the value in `r4`.
    pub const LOAD: u64 = 3;
    /// Store `args[1]` to guest physical `args[0]`.
    pub const STORE: u64 = 4;
    /// Branch (and link) to guest physical `args[0]`; `r4` = r3 when it returns.
    pub const EXEC: u64 = 5;
    /// Execute the instruction word `args[0]` with r3 = `args[1]`; `r4` = r3 after it.
    pub const INSN: u64 = 6;
    /// Read SPR `args[0]` right after an `sc 1` (hypercall `0`, which the hypervisor answers
    /// with H_FUNCTION), with no branch in between; the value in `r4`.
    pub const SPR: u64 = 7;
    /// Write `args[1]` to SPR `args[0]` (mtspr); `r4` = the value read back.
    pub const MTSPR: u64 = 8;
    /// Build a process-scoped radix tree mapping the guest's first GiB 1:1 for problem state,
    /// register it (H_REGISTER_PROC_TBL), drop to problem state with translation on and make
    /// `sc 1` there. A hypervisor that serves it leaves the guest spinning in problem state
    /// (`stopped timeout`); one that refuses it gives the guest its program interrupt.
    pub const USER_SC: u64 = 9;
    /// The device the guest owns reads [`super::DMA_LEN`] bytes at IOVA `args[0]` into its
    /// buffer (QEMU's edu, at [`super::Mailbox::device_bar`]); `r4` = 0 when the transfer
    /// completed, 1 if there is no device, 2 if it did not complete in time.
    pub const DMA_TO_DEVICE: u64 = 10;
    /// The device writes the first [`super::DMA_LEN`] bytes of its buffer at IOVA `args[0]`;
    /// `r4` as for [`DMA_TO_DEVICE`]. Whether it landed is for the guest's loads to see.
    pub const DMA_TO_RAM: u64 = 11;
}

/// Bytes one guest-driven device transfer moves.
pub const DMA_LEN: u32 = 256;
/// Where the hypervisor maps the BAR of a device it hands the guest (its first 1 MiB).
pub const DEVICE_BAR_GPA: u64 = 0x1000_0000;
/// Bytes of the BAR mapped there.
pub const DEVICE_BAR_LEN: u64 = 1 << 20;

/// PAPR's H_REGISTER_PROC_TBL(flags, base, page_size, table_size): a radix guest names its
/// process table (a guest real address, `2^(table_size + 12)` bytes, aligned to its size).
pub const H_REGISTER_PROC_TBL: u64 = 0x37C;
/// Its flags (Linux `asm/hvcall.h`): the operation and the table's type.
pub mod proc_tbl {
    pub const OP_MASK: u64 = 0x18;
    pub const DEREG: u64 = 0x10;
    pub const NEW: u64 = 0x18;
    pub const TYPE_MASK: u64 = 0x06;
    pub const RADIX: u64 = 0x04;
    /// The guest wants to use `tlbie` itself: not offered here.
    pub const GTSE: u64 = 0x01;
}

/// Where the test guest builds its process table and radix tree for [`guest_op::USER_SC`]
/// (above its image, below its mailbox).
pub const GUEST_RADIX_ROOT_GPA: u64 = 0x18_0000;
pub const GUEST_RADIX_PUD_GPA: u64 = 0x19_0000;
pub const GUEST_PROCESS_TABLE_GPA: u64 = 0x19_1000;

/// What a guest action's `CallResult::r3` says.
pub mod outcome {
    /// It completed; `r4` is its value.
    pub const OK: u64 = 0;
    /// The guest took an interrupt of its own (its vector in `r4`, e.g. 0x700 program).
    pub const INTERRUPT: u64 = 1;
}

/// How many hypercalls a completed guest action makes itself: `spr` one (the `sc 1` before
/// its read), `user_sc` one (H_REGISTER_PROC_TBL; the problem-state `sc 1` must reach no
/// handler), the others none.
pub const fn action_hcalls(nr: u64) -> usize {
    match nr & !GUEST_ACTION {
        guest_op::SPR | guest_op::USER_SC => 1,
        _ => 0,
    }
}

/// Whether `nr` names a guest action rather than a hypercall.
pub const fn is_action(nr: u64) -> bool {
    nr & GUEST_ACTION != 0
}

/// `mtspr spr, rs` as an instruction word.
pub const fn mtspr_word(spr: u64, rs: u64) -> u32 {
    (0x7c00_03a6 | (rs << 21) | ((spr & 0x1f) << 16) | ((spr >> 5) << 11)) as u32
}

/// `mfspr rt, spr` as an instruction word.
pub const fn mfspr_word(spr: u64, rt: u64) -> u32 {
    (0x7c00_02a6 | (rt << 21) | ((spr & 0x1f) << 16) | ((spr >> 5) << 11)) as u32
}

/// SPRs a guest may name in a script (`guest spr NAME`), by their ISA names.
pub const SPRS: [(&str, u64); 27] = [
    ("xer", 1),
    ("dscr", 17),
    ("dsisr", 18),
    ("dar", 19),
    ("dec", 22),
    ("srr0", 26),
    ("srr1", 27),
    ("cfar", 28),
    ("amr", 29),
    ("pidr", 48),
    ("iamr", 61),
    ("fscr", 153),
    ("uamor", 157),
    ("pspb", 159),
    ("tb", 268),
    ("sprg0", 272),
    ("sprg1", 273),
    ("sprg2", 274),
    ("sprg3", 275),
    ("pvr", 287),
    ("purr", 309),
    ("spurr", 308),
    ("tar", 815),
    ("mmcr0", 795),
    ("siar", 796),
    ("sdar", 797),
    ("ppr", 896),
];

/// The number of SPR `name` (case-insensitive), if a script may name it.
pub fn spr_number(name: &str) -> Option<u64> {
    SPRS.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, v)| v)
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
    /// The first call to make (a vCPU restarted after a stop carries on from the next call).
    pub first: u64,
    /// Written by the guest before each call: the index of the call it is making, so the
    /// hypervisor knows which one a stop interrupted.
    pub current: u64,
    /// Guest physical address of the BAR of the device the guest owns (QEMU's edu), or 0.
    pub device_bar: u64,
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
    /// 36 SRR0, 37 SRR1, 38 CFAR, 39 DEC, then [`CHECKED_SPRS`] from 40), or `u64::MAX`.
    pub bad_reg: u64,
    /// Value found in that register.
    pub bad_value: u64,
    /// Instructions from `sc 1` to the guest's next instruction ([`action::BENCH`]), or 0.
    pub insns: u64,
}

/// SPRs the guest loads with a pattern before every checked call and reads back after it
/// (`bad_reg` 40 + index): what a guest can write and read, each of which the hypervisor must
/// leave as the guest had it. MMCR0, SIAR and SDAR are only read (the guest does not run the
/// PMU): a value the hypervisor left there would show. CFAR (38) and DEC (39) are checked
/// apart: CFAR must hold the guest's last branch, DEC must have counted down, not been
/// reloaded.
pub const CHECKED_SPRS: [(&str, u64); 19] = [
    ("SPRG0", 272),
    ("SPRG1", 273),
    ("SPRG2", 274),
    ("SPRG3", 275),
    ("DAR", 19),
    ("DSISR", 18),
    ("AMR", 29),
    ("IAMR", 61),
    ("UAMOR", 157),
    ("DSCR", 17),
    ("PPR", 896),
    ("PSPB", 159),
    ("TAR", 815),
    ("FSCR", 153),
    ("PIDR", 48),
    ("MMCR0", 795),
    ("SIAR", 796),
    ("SDAR", 797),
    ("SPRG3 (user)", 259),
];

/// The name of a register in [`CallResult::bad_reg`] numbering (`None` past the last).
pub fn checked_reg_name(k: u64) -> Option<&'static str> {
    const GPRS: [&str; 32] = [
        "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "r13",
        "r14", "r15", "r16", "r17", "r18", "r19", "r20", "r21", "r22", "r23", "r24", "r25", "r26",
        "r27", "r28", "r29", "r30", "r31",
    ];
    const OTHERS: [&str; 8] = ["CR", "LR", "CTR", "XER", "SRR0", "SRR1", "CFAR", "DEC"];
    let k = k as usize;
    GPRS.get(k)
        .or_else(|| OTHERS.get(k.wrapping_sub(32)))
        .copied()
        .or_else(|| CHECKED_SPRS.get(k.wrapping_sub(40)).map(|s| s.0))
}

/// Whether a call returns a value in r4 besides r3 (H_GET_TCE): the only registers a hypercall
/// may change are r3 and, for these, r4.
pub const fn returns_r4(nr: u64) -> bool {
    nr == 0x1C
}
