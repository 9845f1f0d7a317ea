//! Running a guest partition on this CPU: entering it, the hypercall path from vector 0xC00, and
//! the exits back to the host.
//!
//! - [`enter`] saves the host's callee-saved state and every SPR a guest can write
//!   ([`SWITCHED_SPRS`]), loads the vCPU's, switches LPCR to the partition's (HDICE set: the
//!   hypervisor decrementer takes the CPU back), arms HDEC with the vCPU's time slice, marks the
//!   CPU as running a guest, and resumes the vCPU (`hwsync`, LPIDR, HSRR0/HSRR1 = its PC/MSR,
//!   its SRR0/SRR1, CR, LR, CTR, XER, all GPRs, CFAR last, `hrfid`).
//! - `sc 1` from the guest arrives at 0xC00 in hypervisor real mode; the vector spills r12/CTR
//!   and jumps to `p9_hcall_entry`, which saves the guest's volatile state (r0..r13, CR, LR,
//!   CTR, XER, SRR0/SRR1) into the vCPU and calls the Rust handler on the host stack, MMU still
//!   off. The handler returns 0 to resume the guest (r3/r4 set in the saved registers) or an
//!   exit code to leave it. The guest's r14..r31 never leave the CPU on the way back: the
//!   handler preserves them as the ABI requires, so a hypercall neither saves nor reloads them
//!   (about 40 instructions per call); they are stored into the vCPU only when the guest
//!   exits. While a handler runs, `GuestRegs::gpr[14..]` is therefore stale: handlers read
//!   only the argument registers.
//! - Any other interrupt while the guest runs goes through the exception report path, which sees
//!   [`in_guest`] and calls [`exit_from_fault`]. While the hypervisor handles a hypercall the
//!   flag is clear, so a fault of the hypervisor's own is reported as one, never blamed on the
//!   guest.
//! - Every exit goes through `p9_guest_exit`: the guest's SPRs are saved into the vCPU and the
//!   host's restored, LPCR back to the host's, `hwsync`, LPIDR 0. Nothing the guest wrote to a
//!   register outlives its run, and the vCPU holds everything needed to resume it.
//! - CFAR is guest state: every vector stub reads it before its first branch, and the resume
//!   path loads the guest's value after its last one, so a guest never finds the address of a
//!   hypervisor branch there.
//!
//! Offsets come from the Rust structures as `const` operands, never mirrored by hand, except
//! the GPR slots (`r * 8` from the start of [`GuestRegs`]), which are asserted at compile time.
use core::mem::offset_of;

use super::exception::{this_cpu, PerCpu};
use super::spr::{CFAR, HDEC, HSPRG0, HSPRG1, HSRR0, HSRR1, LPCR, SRR0, SRR1};

/// The SPRs a guest can write that the hypervisor switches on every entry and exit, in the
/// order of [`GuestSprs::val`] and `PerCpu::host_sprs` (the assembly below lists the same
/// numbers: keep them together). CFAR, SRR0/SRR1 and LPCR are switched on their own.
pub const SWITCHED_SPRS: [(u32, &str); 16] = [
    (48, "PIDR"),
    (22, "DEC"),
    (272, "SPRG0"),
    (273, "SPRG1"),
    (274, "SPRG2"),
    (275, "SPRG3"),
    (29, "AMR"),
    (61, "IAMR"),
    (157, "UAMOR"),
    (17, "DSCR"),
    (896, "PPR"),
    (159, "PSPB"),
    (815, "TAR"),
    (153, "FSCR"),
    (19, "DAR"),
    (18, "DSISR"),
];

/// A vCPU's copy of [`SWITCHED_SPRS`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestSprs {
    pub val: [u64; SWITCHED_SPRS.len()],
}

impl GuestSprs {
    /// The value of SPR `spr`, if it is switched.
    pub fn get(&self, spr: u32) -> Option<u64> {
        SWITCHED_SPRS
            .iter()
            .position(|&(n, _)| n == spr)
            .map(|i| self.val[i])
    }

    /// Sets SPR `spr` (false if it is not switched).
    pub fn set(&mut self, spr: u32, v: u64) -> bool {
        match SWITCHED_SPRS.iter().position(|&(n, _)| n == spr) {
            Some(i) => {
                self.val[i] = v;
                true
            }
            None => false,
        }
    }
}

/// A vCPU's registers as the entry and exit paths save and load them.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GuestRegs {
    pub gpr: [u64; 32],
    pub cr: u64,
    pub lr: u64,
    pub ctr: u64,
    pub xer: u64,
    /// Where the guest resumes (HSRR0) and its MSR there (HSRR1).
    pub pc: u64,
    pub msr: u64,
    /// The guest's own SRR0/SRR1, restored on every resume.
    pub srr0: u64,
    pub srr1: u64,
    /// Its partition.
    pub lpid: u64,
    /// CFAR: loaded after the resume path's last branch, so the guest finds its own value.
    pub cfar: u64,
    /// LPCR while the vCPU runs (the partition's: HDICE set).
    pub lpcr: u64,
    /// HDEC loaded at entry: the time slice in timebase ticks (below 2^31).
    pub hdec: u64,
    /// The guest's values of [`SWITCHED_SPRS`].
    pub sprs: GuestSprs,
}

const FRAME: usize = 256;

// The assembly addresses `GuestRegs::gpr[r]` as `r * 8` from the start of the registers
// (`0(3)`, `8(3)`, `16(3)`, `24(3)`, `96(12)`, `104(12)`, `(\r * 8)`): first, and 32 doublewords.
const _: () = assert!(offset_of!(GuestRegs, gpr) == 0);
const _: fn(&GuestRegs) -> &[u64; 32] = |r| &r.gpr;

core::arch::global_asm!(
    r#"
    .text
    .globl p9_enter_guest
p9_enter_guest:
    mflr    0
    std     0, 16(1)
    mfcr    0
    stw     0, 8(1)
    stdu    1, -{frame}(1)
    std     2, 24(1)
    .irp r, 14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    std     \r, (\r * 8 - 80)(1)
    .endr
    mfspr   4, {hsprg0}
    std     1, {host_sp}(4)
    mfmsr   0
    std     0, {host_msr}(4)
    std     3, {guest}(4)
    /* The host's SPRs out, the guest's in (the list is SWITCHED_SPRS). The hypervisor runs
     * with MSR[EE] off and touches only privileged quadrant-3 pages until it leaves, so none
     * of the guest's values acts on it. */
    addi    5, 4, {host_sprs}
    addi    6, 3, {sprs}
    .set    spr_i, 0
    .irp    spr, 48,22,272,273,274,275,29,61,157,17,896,159,815,153,19,18
    mfspr   0, \spr
    std     0, (spr_i * 8)(5)
    ld      0, (spr_i * 8)(6)
    mtspr   \spr, 0
    .set    spr_i, spr_i + 1
    .endr
    /* The partition's LPCR (HDICE: the hypervisor decrementer interrupts the guest), then the
     * time slice. */
    mfspr   0, {lpcr_spr}
    std     0, {host_lpcr}(4)
    ld      0, {lpcr}(3)
    mtspr   {lpcr_spr}, 0
    isync
    ld      0, {hdec}(3)
    mtspr   {hdec_spr}, 0
    b       p9_guest_resume

/* Resume the vCPU whose registers PerCpu.guest points at; r4 = PerCpu. */
    .globl p9_guest_resume
p9_guest_resume:
    li      0, 1
    std     0, {in_guest}(4)
    ld      3, {guest}(4)
    ld      0, {lpid}(3)
    /* Stores drain under the old LPID before the switch (KVM does the same). */
    sync
    mtspr   {lpidr}, 0
    isync
    .irp r, 14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      \r, (\r * 8)(3)
    .endr
/* The rest of the vCPU (r3 = its registers; r14..r31 are in place) and into the guest. */
p9_guest_resume_volatile:
    /* No taken branch from here to hrfid: CFAR keeps the guest's value. */
    ld      0, {cfar}(3)
    mtspr   {cfar_spr}, 0
    ld      0, {pc}(3)
    mtspr   {hsrr0}, 0
    ld      0, {msr}(3)
    mtspr   {hsrr1}, 0
    ld      0, {srr0}(3)
    mtspr   {srr0_spr}, 0
    ld      0, {srr1}(3)
    mtspr   {srr1_spr}, 0
    ld      0, {cr}(3)
    mtcrf   0xff, 0
    ld      0, {lr}(3)
    mtlr    0
    ld      0, {ctr}(3)
    mtctr   0
    ld      0, {xer}(3)
    mtxer   0
    ld      0, 0(3)
    ld      1, 8(3)
    ld      2, 16(3)
    .irp r, 4,5,6,7,8,9,10,11,12,13
    ld      \r, (\r * 8)(3)
    .endr
    ld      3, 24(3)
    hrfid

/* From vector 0xC00: r13 = PerCpu, guest r13 in HSPRG1, r12 in PerCpu.scratch, CTR in
 * PerCpu.scratch_ctr. MMU off. */
    .globl p9_hcall_entry
p9_hcall_entry:
    mfcr    12
    std     12, {scratch_cr}(13)
    ld      12, {in_guest}(13)
    cmpdi   12, 0
    beq     9f
    ld      12, {guest}(13)
    std     0, 0(12)
    std     1, 8(12)
    std     2, 16(12)
    .irp r, 3,4,5,6,7,8,9,10,11
    std     \r, (\r * 8)(12)
    .endr
    ld      0, {scratch}(13)
    std     0, 96(12)
    ld      0, {frame_cfar}(13)
    std     0, {cfar}(12)
    /* From here the hypervisor runs: an interrupt now is its own fault, not the guest's. */
    li      0, 0
    std     0, {in_guest}(13)
    mfspr   0, {hsprg1}
    std     0, 104(12)
    /* r14..r31 stay in the registers: the handler preserves them (ELFv2 ABI), so they are
     * saved only if the guest exits (below) and never reloaded on the way back. */
    ld      0, {scratch_cr}(13)
    std     0, {cr}(12)
    mflr    0
    std     0, {lr}(12)
    ld      0, {scratch_ctr}(13)
    std     0, {ctr}(12)
    mfxer   0
    std     0, {xer}(12)
    mfspr   0, {srr0_spr}
    std     0, {pc}(12)
    std     0, {srr0}(12)
    mfspr   0, {srr1_spr}
    std     0, {msr}(12)
    std     0, {srr1}(12)
    /* The handler runs on the host stack, below the frame p9_enter_guest left. */
    ld      1, {host_sp}(13)
    li      0, 0
    stdu    0, -128(1)
    mr      3, 12
    ld      12, {hcall_fn}(13)
    mtctr   12
    bctrl
    mfspr   4, {hsprg0}
    cmpdi   3, 0
    bne     8f
    /* Back to the guest: the partition and r14..r31 are as the guest left them. */
    li      0, 1
    std     0, {in_guest}(4)
    ld      3, {guest}(4)
    b       p9_guest_resume_volatile
8:  /* The guest leaves: complete its saved state with r14..r31, still the guest's. */
    ld      5, {guest}(4)
    .irp r, 14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    std     \r, (\r * 8)(5)
    .endr
    b       p9_guest_exit
9:  /* sc with no guest running: report it as an unexpected interrupt. */
    ld      12, {scratch_cr}(13)
    mtcrf   0xff, 12
    ld      12, {scratch_ctr}(13)
    mtctr   12
    ld      12, {exc_common}(13)
    mtspr   {hsrr0}, 12
    mfmsr   12
    mtspr   {hsrr1}, 12
    li      12, 0xc00
    hrfid

/* Leave the guest: r3 = exit code, r4 = PerCpu. Back to p9_enter_guest's caller, in the
 * host's MSR. */
    .globl p9_guest_exit
p9_guest_exit:
    li      0, 0
    std     0, {in_guest}(4)
    /* The guest's SPRs into its vCPU, the host's back (the list is SWITCHED_SPRS). */
    ld      5, {guest}(4)
    addi    6, 5, {sprs}
    addi    7, 4, {host_sprs}
    .set    spr_i, 0
    .irp    spr, 48,22,272,273,274,275,29,61,157,17,896,159,815,153,19,18
    mfspr   0, \spr
    std     0, (spr_i * 8)(6)
    ld      0, (spr_i * 8)(7)
    mtspr   \spr, 0
    .set    spr_i, spr_i + 1
    .endr
    ld      0, {host_lpcr}(4)
    mtspr   {lpcr_spr}, 0
    isync
    /* Stores drain under the guest's LPID before the switch back. */
    sync
    li      0, 0
    mtspr   {lpidr}, 0
    isync
    ld      1, {host_sp}(4)
    ld      2, 24(1)
    .irp r, 14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      \r, (\r * 8 - 80)(1)
    .endr
    addi    1, 1, {frame}
    ld      0, 16(1)
    mtlr    0
    mtspr   {hsrr0}, 0
    lwz     0, 8(1)
    mtcrf   0xff, 0
    ld      0, {host_msr}(4)
    mtspr   {hsrr1}, 0
    hrfid
"#,
    frame = const FRAME,
    hsprg0 = const HSPRG0,
    hsprg1 = const HSPRG1,
    hsrr0 = const HSRR0,
    hsrr1 = const HSRR1,
    srr0_spr = const SRR0,
    srr1_spr = const SRR1,
    lpidr = const super::mmu::LPIDR,
    host_sp = const offset_of!(PerCpu, host_sp),
    host_msr = const offset_of!(PerCpu, host_msr),
    guest = const offset_of!(PerCpu, guest),
    in_guest = const offset_of!(PerCpu, in_guest),
    scratch = const offset_of!(PerCpu, scratch),
    scratch_ctr = const offset_of!(PerCpu, scratch_ctr),
    scratch_cr = const offset_of!(PerCpu, scratch_cr),
    hcall_fn = const offset_of!(PerCpu, hcall_fn),
    exc_common = const offset_of!(PerCpu, exception_common),
    lpid = const offset_of!(GuestRegs, lpid),
    pc = const offset_of!(GuestRegs, pc),
    msr = const offset_of!(GuestRegs, msr),
    srr0 = const offset_of!(GuestRegs, srr0),
    srr1 = const offset_of!(GuestRegs, srr1),
    cr = const offset_of!(GuestRegs, cr),
    lr = const offset_of!(GuestRegs, lr),
    ctr = const offset_of!(GuestRegs, ctr),
    xer = const offset_of!(GuestRegs, xer),
    cfar = const offset_of!(GuestRegs, cfar),
    lpcr = const offset_of!(GuestRegs, lpcr),
    hdec = const offset_of!(GuestRegs, hdec),
    sprs = const offset_of!(GuestRegs, sprs),
    host_sprs = const offset_of!(PerCpu, host_sprs),
    host_lpcr = const offset_of!(PerCpu, host_lpcr),
    frame_cfar = const offset_of!(PerCpu, frame) + offset_of!(super::exception::TrapFrame, cfar),
    cfar_spr = const CFAR,
    lpcr_spr = const LPCR,
    hdec_spr = const HDEC,
);

// The assembly's SPR lists are SWITCHED_SPRS in order.
const _: () = {
    let want = [
        48, 22, 272, 273, 274, 275, 29, 61, 157, 17, 896, 159, 815, 153, 19, 18,
    ];
    let mut i = 0;
    while i < want.len() {
        assert!(SWITCHED_SPRS[i].0 == want[i]);
        i += 1;
    }
    assert!(want.len() == SWITCHED_SPRS.len());
};

// The save area below the frame: r14..r31 at 32.. (r * 8 - 80), r2 at 24, inside FRAME.
const _: () = assert!(31 * 8 - 80 + 8 <= FRAME);

extern "C" {
    fn p9_enter_guest(regs: *mut GuestRegs) -> u64;
    fn p9_hcall_entry();
    fn p9_guest_exit(code: u64, percpu: *mut PerCpu) -> !;
}

/// The Rust hypercall handler the entry path calls (installed by the kernel).
pub type HcallFn = extern "C" fn(&mut GuestRegs) -> u64;

static HCALL_FN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Names the function `p9_hcall_entry` calls, in real mode, for every hypercall: it returns 0
/// to resume the guest or an exit code to leave it. Call before the first [`enter`].
pub fn set_hcall_handler(f: HcallFn) {
    HCALL_FN.store(f as usize as u64, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: the boot CPU's area; only this CPU touches it, and no guest runs now.
    unsafe { (*this_cpu()).hcall_fn = f as usize as u64 };
}

pub(super) fn hcall_entry_addr() -> u64 {
    p9_hcall_entry as *const () as usize as u64
}

pub(super) fn hcall_fn_addr() -> u64 {
    HCALL_FN.load(core::sync::atomic::Ordering::Relaxed)
}

/// Runs the vCPU until it exits; returns the exit code.
///
/// # Safety
/// `regs` describes a guest of an installed partition (`mmu::GuestTree::install`) whose memory
/// is ready; a hypercall handler is set; no guest runs on this CPU.
pub unsafe fn enter(regs: &mut GuestRegs) -> u64 {
    // SAFETY: per the caller; the assembly saves and restores every callee-saved register.
    unsafe { p9_enter_guest(regs) }
}

/// Whether a guest is running on this CPU (its interrupts are exits).
pub fn in_guest() -> bool {
    // SAFETY: read of this CPU's own area.
    unsafe { (*this_cpu()).in_guest != 0 }
}

/// The running vCPU's registers (the interrupted guest state is copied there by the caller).
pub fn current_regs() -> *mut GuestRegs {
    // SAFETY: read of this CPU's own area.
    unsafe { (*this_cpu()).guest as *mut GuestRegs }
}

/// Leaves the running guest from an interrupt handler with `code`.
///
/// # Safety
/// A guest runs on this CPU ([`in_guest`]) and the caller is the interrupt path (real mode).
pub unsafe fn exit_from_fault(code: u64) -> ! {
    // SAFETY: per the caller: the host state p9_enter_guest saved is intact.
    unsafe { p9_guest_exit(code, this_cpu()) }
}
