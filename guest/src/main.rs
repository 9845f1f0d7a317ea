//! The test guest. The hypervisor loads it at guest physical 0 of a partition (LPID >= 1) and
//! starts it in guest real mode at `_start` with r3 = its mailbox (`hv::abi`). It makes the
//! hypercalls the mailbox lists with every register filled with a pattern, checks after each
//! `sc 1` that the hypervisor preserved everything a hypercall must preserve, writes each result,
//! and ends with H_P9_EXIT. Calls with `abi::GUEST_ACTION` set are things the guest does itself
//! (spin, load, store, execute, an instruction word, read or write an SPR): what a hostile guest
//! would try. An action runs under a catch: an interrupt delivered to the guest itself (its own
//! 0x700, say) ends the action with that vector as its outcome. Outside an action, any such
//! interrupt ends the guest with H_P9_EXIT(vector, SRR0, SRR1). The decrementer (0x900) is the
//! one vector handled in place: it is re-armed and the guest returns where it was.
//!
//! Guest real addresses 0x1000..0x1100 hold the absolute slots the assembly uses (reachable
//! with `D(0)` addressing, so no register is needed to find them): see `slot` below.
#![no_std]
#![no_main]

#[allow(dead_code)]
#[path = "../../src/hv/abi.rs"]
mod abi;

/// The hypervisor's edu driver, shared: the guest drives the device it owns with it.
#[allow(dead_code)]
#[path = "../../src/phb/edu.rs"]
mod edu;

use abi::{action, guest_op, Call, CallResult, Mailbox, H_P9_EXIT, MAGIC, RESULTS_GPA};
use core::mem::offset_of;

/// Absolute guest real addresses of the assembly's slots (below 0x8000: `D(0)` reaches them).
mod slot {
    /// 1 while an action runs under the catch.
    pub const CATCH: u64 = 0x1000;
    /// Spill slots of the vector stubs and the trap path.
    pub const T3: u64 = 0x1008;
    pub const T4: u64 = 0x1010;
    /// Decrementer interrupts the guest took (`abi::DEC_COUNT_GPA`).
    pub const DECS: u64 = super::abi::DEC_COUNT_GPA;
    /// `p9_hcall_frame`'s stack pointer, frame pointer, r3 and CFAR after `sc 1`.
    pub const SP: u64 = 0x1020;
    pub const FRAME: u64 = 0x1028;
    pub const R3: u64 = 0x1030;
    pub const CFAR: u64 = 0x1038;
    /// The catch's saved state: LR, CR, r1, r2, r14..r31.
    pub const JB: u64 = 0x1040;
}

/// What `p9_hcall_frame` loads before `sc 1` and stores after it.
#[repr(C)]
struct Frame {
    gpr_in: [u64; 32],
    gpr_out: [u64; 32],
    cr_in: u64,
    lr_in: u64,
    ctr_in: u64,
    xer_in: u64,
    cr_out: u64,
    lr_out: u64,
    ctr_out: u64,
    xer_out: u64,
    srr0_out: u64,
    srr1_out: u64,
    /// CFAR after the last branch before `sc 1`, and right after it.
    cfar_in: u64,
    cfar_out: u64,
}

core::arch::global_asm!(
    r#"
    .section .vectors, "ax"
    .set vec, 0
    .rept 128
    .if vec == 0x900
    /* The decrementer: counted, re-armed (64Ki ticks), and back to where the guest was. */
    std     3, {t3}(0)
    ld      3, {decs}(0)
    addi    3, 3, 1
    std     3, {decs}(0)
    lis     3, 1
    mtdec   3
    ld      3, {t3}(0)
    rfid
    .else
    std     3, {t3}(0)
    li      3, vec
    b       guest_trap
    .endif
    .balign 32
    .set vec, vec + 0x20
    .endr

    .section .text.entry, "ax"
    .globl _start
_start:
    mr      31, 3
    lis     1, __stack_top@ha
    addi    1, 1, __stack_top@l
    li      0, 0
    stdu    0, -64(1)
    lis     2, .TOC.@ha
    addi    2, 2, .TOC.@l
    lis     4, __bss_start@ha
    addi    4, 4, __bss_start@l
    lis     5, __bss_end@ha
    addi    5, 5, __bss_end@l
1:  cmpld   4, 5
    bge     2f
    std     0, 0(4)
    addi    4, 4, 8
    b       1b
2:  mr      3, 31
    bl      guest_main
    b       .

/* An interrupt of the guest's own: r3 = its vector (the stub spilled r3). Under the catch, back
 * out of the action (p9_try returns 1, vector); otherwise the guest ends with
 * H_P9_EXIT(vector, SRR0, SRR1). */
    .text
guest_trap:
    std     4, {t4}(0)
    ld      4, {catch}(0)
    cmpdi   4, 0
    beq     1f
    li      4, 0
    std     4, {catch}(0)
    li      4, 2                /* MSR[RI] on, EE off */
    mtmsrd  4, 1
    mr      4, 3
    li      3, 1
    b       p9_try_return
1:  mr      4, 3
    li      3, 0
    ori     3, 3, {exit}
    mfsrr0  5
    mfsrr1  6
    sc      1

/* p9_try(target r3, a r4, b r5) -> (status r3, value r4): calls target with r3 = a, r4 = b
 * under the catch. Every non-volatile register, r1, r2, LR and CR are saved in the JB slots and
 * restored on both ways out, whatever the target did to them. */
    .globl p9_try
p9_try:
    mflr    0
    std     0, {jb}(0)
    mfcr    0
    std     0, ({jb} + 8)(0)
    std     1, ({jb} + 16)(0)
    std     2, ({jb} + 24)(0)
    .irp r, 14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    std     \r, ({jb} + 32 + (\r - 14) * 8)(0)
    .endr
    mtctr   3
    mr      3, 4
    mr      4, 5
    li      0, 1
    std     0, {catch}(0)
    bctrl
    li      0, 0
    std     0, {catch}(0)
    mr      4, 3
    li      3, 0
p9_try_return:
    ld      0, {jb}(0)
    mtlr    0
    ld      0, ({jb} + 8)(0)
    mtcrf   0xff, 0
    ld      1, ({jb} + 16)(0)
    ld      2, ({jb} + 24)(0)
    .irp r, 14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      \r, ({jb} + 32 + (\r - 14) * 8)(0)
    .endr
    blr

/* The actions p9_try runs. */
    .globl p9_act_spin
p9_act_spin:
    b       .
    .globl p9_act_spin_ee
p9_act_spin_ee:
    lis     3, 1
    mtdec   3
    li      3, 0
    ori     3, 3, 0x8002        /* MSR[EE] and MSR[RI] */
    mtmsrd  3, 1
    b       .
    .globl p9_act_user_sc
p9_act_user_sc:                 /* r3 = where, r4 = its MSR (problem state, translation on) */
    mtsrr0  3
    mtsrr1  4
    rfid
    .globl p9_user_code
p9_user_code:
    li      3, 0
    sc      1
    b       .
    .globl p9_act_load
p9_act_load:
    ld      3, 0(3)
    blr
    .globl p9_act_store
p9_act_store:
    std     4, 0(3)
    mr      3, 4
    blr

/* p9_hcall_frame(frame): every GPR, CR, LR, CTR and XER from the frame, sc 1, all of them back
 * into the frame (plus SRR0/SRR1 and CFAR before and after). The caller's stack pointer and
 * the frame pointer wait in absolute slots, so that r1 and r3 too carry patterns across the
 * call and no SPR the check reads is used as scratch. */
    .globl p9_hcall_frame
p9_hcall_frame:
    mflr    0
    std     0, 16(1)
    mfcr    0
    stw     0, 8(1)
    stdu    1, -224(1)
    std     2, 32(1)
    std     14, 40(1)
    std     15, 48(1)
    std     16, 56(1)
    std     17, 64(1)
    std     18, 72(1)
    std     19, 80(1)
    std     20, 88(1)
    std     21, 96(1)
    std     22, 104(1)
    std     23, 112(1)
    std     24, 120(1)
    std     25, 128(1)
    std     26, 136(1)
    std     27, 144(1)
    std     28, 152(1)
    std     29, 160(1)
    std     30, 168(1)
    std     31, 176(1)
    std     1, {sp}(0)
    std     3, {frame}(0)
    ld      0, {cr_in}(3)
    mtcrf   0xff, 0
    ld      0, {lr_in}(3)
    mtlr    0
    ld      0, {ctr_in}(3)
    mtctr   0
    ld      0, {xer_in}(3)
    mtxer   0
    /* No taken branch from here to sc: CFAR is what the hypervisor must give back. */
    mfspr   0, 28
    std     0, {cfar_in}(3)
    ld      0, 0(3)
    ld      1, 8(3)
    ld      2, 16(3)
    .irp r, 4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      \r, (\r * 8)(3)
    .endr
    ld      3, 24(3)
    sc      1
    .globl p9_after_sc
p9_after_sc:
    std     3, {r3}(0)
    mfspr   3, 28
    std     3, {cfar}(0)
    ld      3, {frame}(0)
    std     0, {out}(3)
    std     1, {out} + 8(3)
    std     2, {out} + 16(3)
    .irp r, 4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    std     \r, {out} + (\r * 8)(3)
    .endr
    ld      0, {r3}(0)
    std     0, {out} + 24(3)
    ld      0, {cfar}(0)
    std     0, {cfar_out}(3)
    mfcr    0
    std     0, {cr_out}(3)
    mflr    0
    std     0, {lr_out}(3)
    mfctr   0
    std     0, {ctr_out}(3)
    mfxer   0
    std     0, {xer_out}(3)
    mfsrr0  0
    std     0, {srr0_out}(3)
    mfsrr1  0
    std     0, {srr1_out}(3)
    ld      1, {sp}(0)
    ld      2, 32(1)
    ld      14, 40(1)
    ld      15, 48(1)
    ld      16, 56(1)
    ld      17, 64(1)
    ld      18, 72(1)
    ld      19, 80(1)
    ld      20, 88(1)
    ld      21, 96(1)
    ld      22, 104(1)
    ld      23, 112(1)
    ld      24, 120(1)
    ld      25, 128(1)
    ld      26, 136(1)
    ld      27, 144(1)
    ld      28, 152(1)
    ld      29, 160(1)
    ld      30, 168(1)
    ld      31, 176(1)
    addi    1, 1, 224
    ld      0, 16(1)
    mtlr    0
    lwz     0, 8(1)
    mtcrf   0xff, 0
    blr

/* p9_hcall_timed(args: *mut [u64; 8]): r3..r7 = args[0..5], one sc 1 between the
 * instruction-count markers (ori 27,27,0 / ori 28,28,0), r3/r4 into args[5..7] and the count the
 * insn-count plugin wrote 8 bytes after the stop marker into args[7] (u64::MAX: no plugin). */
    .globl p9_hcall_timed
p9_hcall_timed:
    mflr    10
    mr      12, 3
    li      0, -1
    bl      3f
3:  mflr    11
    addi    11, 11, (4f - 3b)
    std     0, 0(11)            /* re-arm the slot */
    dcbst   0, 11
    sync
    ld      3, 0(12)
    ld      4, 8(12)
    ld      5, 16(12)
    ld      6, 24(12)
    ld      7, 32(12)
    b       5f
    .balign 16
5:  nop
    nop
    ori     27, 27, 0
    sc      1
    ori     28, 28, 0
    b       6f
4:  .quad   -1
6:  std     3, 40(12)
    std     4, 48(12)
    ld      0, 0(11)
    std     0, 56(12)
    mtlr    10
    blr
"#,
    exit = const H_P9_EXIT,
    out = const offset_of!(Frame, gpr_out),
    cr_in = const offset_of!(Frame, cr_in),
    lr_in = const offset_of!(Frame, lr_in),
    ctr_in = const offset_of!(Frame, ctr_in),
    xer_in = const offset_of!(Frame, xer_in),
    cr_out = const offset_of!(Frame, cr_out),
    lr_out = const offset_of!(Frame, lr_out),
    ctr_out = const offset_of!(Frame, ctr_out),
    xer_out = const offset_of!(Frame, xer_out),
    srr0_out = const offset_of!(Frame, srr0_out),
    srr1_out = const offset_of!(Frame, srr1_out),
    cfar_in = const offset_of!(Frame, cfar_in),
    cfar_out = const offset_of!(Frame, cfar_out),
    catch = const slot::CATCH,
    t3 = const slot::T3,
    t4 = const slot::T4,
    decs = const slot::DECS,
    sp = const slot::SP,
    frame = const slot::FRAME,
    r3 = const slot::R3,
    cfar = const slot::CFAR,
    jb = const slot::JB,
);

extern "C" {
    fn p9_hcall_frame(f: *mut Frame);
    fn p9_hcall_timed(args: *mut [u64; 8]);
    static p9_after_sc: u8;
    static p9_act_spin: u8;
    static p9_act_spin_ee: u8;
    static p9_act_load: u8;
    static p9_act_store: u8;
    static p9_act_user_sc: u8;
    static p9_user_code: u8;
    static __insn_slot: u8;
}

/// XER bits that hold state (SO, OV, CA, OV32, CA32, byte count).
const XER_MASK: u64 = 0xe00c_007f;

/// CR and XER patterns, by call: all set, all clear, then alternate bits each way, so that
/// every CR field and every XER status bit is seen both set and clear in any two calls.
const CR_PATTERNS: [u64; 4] = [0xffff_ffff, 0, 0xa5a5_a5a5, 0x5a5a_5a5a];
const XER_PATTERNS: [u64; 4] = [XER_MASK, 0, XER_MASK & 0xa00a_0055, XER_MASK & 0x4004_002a];

fn hcall(nr: u64, a: u64, b: u64, c: u64) -> u64 {
    let r3: u64;
    // SAFETY: a hypercall; the hypervisor preserves every register but r3 (and r4 for calls
    // that return a value), which are declared clobbered.
    unsafe {
        core::arch::asm!("sc 1", inlateout("r3") nr => r3, inlateout("r4") a => _, in("r5") b, in("r6") c, options(nostack))
    };
    r3
}

fn exit(code: u64) -> ! {
    loop {
        hcall(H_P9_EXIT, code, 0, 0);
    }
}

fn msr() -> u64 {
    let v: u64;
    // SAFETY: reads a register.
    unsafe { core::arch::asm!("mfmsr {0}", out(reg) v, options(nomem, nostack)) };
    v
}

fn mfspr<const N: u32>() -> u64 {
    let v: u64;
    // SAFETY: reads an SPR the guest may read (the callers name only those).
    unsafe { core::arch::asm!("mfspr {0}, {1}", out(reg) v, const N, options(nomem, nostack)) };
    v
}

fn mtspr<const N: u32>(v: u64) {
    // SAFETY: writes an SPR the guest may write; none of them changes how this code runs.
    unsafe { core::arch::asm!("mtspr {1}, {0}", in(reg) v, const N, options(nomem, nostack)) };
}

/// Number of `abi::CHECKED_SPRS` the guest writes (the rest it only reads).
const WRITTEN_SPRS: usize = 15;
const _: () = assert!(abi::CHECKED_SPRS[WRITTEN_SPRS - 1].1 == 48);

/// Loads every written SPR of `abi::CHECKED_SPRS` with a pattern for call `i`.
fn load_spr_patterns(i: u64) {
    let p = |k: u64| 0x5300_0000_0000_0000 ^ (i << 20) ^ (k << 8) ^ (i & 0xff);
    mtspr::<272>(p(0));
    mtspr::<273>(p(1));
    mtspr::<274>(p(2));
    mtspr::<275>(p(3));
    mtspr::<19>(p(4));
    mtspr::<18>(p(5) & 0xffff_ffff);
    mtspr::<29>(p(6));
    mtspr::<61>(p(7));
    mtspr::<157>(p(8));
    mtspr::<17>(p(9) & 0x1ff_ffff);
    mtspr::<896>((2 + i % 3) << 50);
    mtspr::<159>(p(11) & 0xffff_ffff);
    mtspr::<815>(p(12) & !3);
    mtspr::<153>(if i.is_multiple_of(2) {
        (1 << 8) | (1 << 2)
    } else {
        1 << 8
    });
    mtspr::<48>(p(14) & 0xf_ffff);
    mtspr::<22>(0x7fff_0000);
}

/// The values of `abi::CHECKED_SPRS`, in order.
fn read_sprs() -> [u64; abi::CHECKED_SPRS.len()] {
    [
        mfspr::<272>(),
        mfspr::<273>(),
        mfspr::<274>(),
        mfspr::<275>(),
        mfspr::<19>(),
        mfspr::<18>(),
        mfspr::<29>(),
        mfspr::<61>(),
        mfspr::<157>(),
        mfspr::<17>(),
        mfspr::<896>(),
        mfspr::<159>(),
        mfspr::<815>(),
        mfspr::<153>(),
        mfspr::<48>(),
        mfspr::<795>(),
        mfspr::<796>(),
        mfspr::<797>(),
        mfspr::<259>(),
    ]
}

/// DEC as a signed count (32 bits unless the partition has a large decrementer).
fn dec() -> i64 {
    mfspr::<22>() as i32 as i64
}

/// One call with patterns in every register and SPR the guest can see; returns its result
/// with the check of all of them.
fn checked_call(i: u64, c: &Call) -> CallResult {
    let pat = |k: u64| 0x5a00_0000_0000_0000 ^ (i << 24) ^ (k << 8) ^ k;
    let mut f = Frame {
        gpr_in: [0; 32],
        gpr_out: [0; 32],
        cr_in: CR_PATTERNS[(i % 4) as usize],
        lr_in: pat(33),
        ctr_in: pat(34),
        xer_in: XER_PATTERNS[(i % 4) as usize],
        cr_out: 0,
        lr_out: 0,
        ctr_out: 0,
        xer_out: 0,
        srr0_out: 0,
        srr1_out: 0,
        cfar_in: 0,
        cfar_out: 0,
    };
    for (k, r) in f.gpr_in.iter_mut().enumerate() {
        *r = pat(k as u64);
    }
    f.gpr_in[3] = c.nr;
    f.gpr_in[4..12].copy_from_slice(&c.args);
    load_spr_patterns(i);
    let msr_before = msr();
    let sprs_before = read_sprs();
    let dec_before = dec();
    // SAFETY: `f` is a live frame; the routine restores every register the ABI needs.
    unsafe { p9_hcall_frame(&mut f) };
    let dec_after = dec();
    let sprs_after = read_sprs();
    let mut res = CallResult {
        r3: f.gpr_out[3],
        r4: f.gpr_out[4],
        regs_ok: 1,
        bad_reg: u64::MAX,
        bad_value: 0,
        insns: 0,
    };
    // SAFETY: a linker-defined code label.
    let after_sc = unsafe { &p9_after_sc as *const u8 as u64 };
    // DEC counts down while the call runs (well under a second of it): a value that went up,
    // or jumped, was reloaded by someone else.
    let dec_ok = dec_after <= dec_before && dec_before - dec_after < 1 << 29;
    let changed = (0..32u64)
        .filter(|&k| k != 3 && !(k == 4 && abi::returns_r4(c.nr)))
        .map(|k| (k, f.gpr_in[k as usize], f.gpr_out[k as usize]))
        .chain([
            (32, f.cr_in, f.cr_out & 0xffff_ffff),
            (33, f.lr_in, f.lr_out),
            (34, f.ctr_in, f.ctr_out),
            (35, f.xer_in, f.xer_out & XER_MASK),
            (36, after_sc, f.srr0_out),
            (37, msr_before, f.srr1_out),
            (38, f.cfar_in, f.cfar_out),
            (39, 0, u64::from(!dec_ok) * (dec_after as u64)),
        ])
        .chain((0..sprs_before.len()).map(|k| (40 + k as u64, sprs_before[k], sprs_after[k])))
        .find(|&(_, want, got)| want != got);
    if let Some((k, _, got)) = changed {
        res.regs_ok = 0;
        res.bad_reg = k;
        res.bad_value = got;
    }
    res
}

/// Runs `target` under the catch with r3 = `a`, r4 = `b`: `(outcome::OK, r3 after)`, or
/// `(outcome::INTERRUPT, vector)` if the guest took an interrupt of its own.
fn try_call(target: u64, a: u64, b: u64) -> (u64, u64) {
    let (status, value): (u64, u64);
    // SAFETY: p9_try saves and restores every non-volatile register, r1, r2 and CR itself; the
    // volatile ones are declared clobbered (the guest has no floating point or vector state). `target` is code of this guest or an address the
    // mailbox names (the point of the action).
    unsafe {
        core::arch::asm!(
            "bl p9_try",
            inlateout("r3") target => status,
            inlateout("r4") a => value,
            inlateout("r5") b => _,
            out("r0") _, out("r6") _, out("r7") _, out("r8") _, out("r9") _, out("r10") _,
            out("r11") _, out("r12") _, out("ctr") _, out("lr") _, out("xer") _,
            out("cr0") _, out("cr1") _, out("cr5") _, out("cr6") _, out("cr7") _,
        )
    };
    (status, value)
}

/// Writes `words` into the instruction slot (its own page) and makes them visible to
/// instruction fetch; returns the slot's address.
fn load_slot(words: &[u32]) -> u64 {
    // SAFETY: a page the linker script reserves for this.
    let slot = unsafe { &__insn_slot as *const u8 as u64 };
    for (k, w) in words.iter().enumerate() {
        // SAFETY: inside the reserved page (at most four words).
        unsafe { ((slot + 4 * k as u64) as *mut u32).write_volatile(*w) };
    }
    // SAFETY: cache maintenance of the slot's block, then context synchronisation.
    unsafe {
        core::arch::asm!(
            "dcbst 0, {0}", "sync", "icbi 0, {0}", "sync", "isync",
            in(reg) slot, options(nostack)
        )
    };
    slot
}

const BLR: u32 = 0x4e80_0020;
const SC1: u32 = 0x4400_0022;

/// Writes a big-endian doubleword of a radix table.
fn put_be(gpa: u64, v: u64) {
    // SAFETY: the table area `abi` reserves for this, above the image and below the mailbox.
    unsafe { (gpa as *mut u64).write_volatile(v.to_be()) };
}

/// `sc 1` from problem state: a process-scoped radix tree mapping the first GiB 1:1 (one
/// 1 GiB leaf, user-accessible), registered with H_REGISTER_PROC_TBL, PIDR 0, then `rfid` to
/// code that makes the call with MSR[PR|IR|DR] set.
fn user_sc() -> (u64, u64) {
    for k in 0..(0x1_0000 / 8) {
        put_be(abi::GUEST_RADIX_ROOT_GPA + 8 * k, 0);
    }
    for k in 0..(0x1000 / 8) {
        put_be(abi::GUEST_RADIX_PUD_GPA + 8 * k, 0);
        put_be(abi::GUEST_PROCESS_TABLE_GPA + 8 * k, 0);
    }
    // Root: 52-bit space (RTS = 21: RTS1 0b10, RTS2 0b101), 13 index bits; its entry 0 a
    // directory of 9 bits; that directory's entry 0 a 1 GiB leaf: valid, leaf, R, C, read,
    // write, execute, not privileged.
    put_be(
        abi::GUEST_PROCESS_TABLE_GPA,
        (2 << 61) | abi::GUEST_RADIX_ROOT_GPA | (5 << 5) | 13,
    );
    put_be(
        abi::GUEST_RADIX_ROOT_GPA,
        (1 << 63) | abi::GUEST_RADIX_PUD_GPA | 9,
    );
    put_be(
        abi::GUEST_RADIX_PUD_GPA,
        (3 << 62) | (1 << 8) | (1 << 7) | 7,
    );
    let rc: u64;
    // SAFETY: a hypercall with four arguments; every argument register is declared clobbered.
    unsafe {
        core::arch::asm!(
            "ptesync",
            "sc 1",
            inlateout("r3") abi::H_REGISTER_PROC_TBL => rc,
            inlateout("r4") abi::proc_tbl::NEW | abi::proc_tbl::RADIX => _,
            inlateout("r5") abi::GUEST_PROCESS_TABLE_GPA => _,
            inlateout("r6") 0u64 => _,
            inlateout("r7") 0u64 => _,
            options(nostack)
        )
    };
    if rc != 0 {
        return (abi::outcome::OK, rc | (1 << 63));
    }
    mtspr::<48>(0);
    let user = msr() | (1 << 14) | (1 << 15) | (1 << 5) | (1 << 4);
    // SAFETY: linker-defined code labels.
    let (target, code) = unsafe {
        (
            &p9_act_user_sc as *const u8 as u64,
            &p9_user_code as *const u8 as u64,
        )
    };
    try_call(target, code, user)
}

/// The BAR of the device the guest owns (0: none), from the mailbox.
static DEVICE_BAR: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The edu device's BAR0 as the guest sees it: at a guest physical address the hypervisor
/// mapped cache-inhibited and guarded. Registers are big-endian; each access is ordered as
/// Linux's `in_be32`/`out_be32` order theirs on POWER: `sync` before, and after a load
/// `twi`/`isync`, so no later access runs before the value arrived.
struct GuestEduBar(u64);

impl GuestEduBar {
    fn ptr<T>(&self, offset: u32) -> volatile::VolatilePtr<'static, T> {
        let p = (self.0 + u64::from(offset)) as *mut T;
        // SAFETY: the hypervisor mapped the device's 1 MiB BAR0 at `self.0` (the mailbox says
        // so) and the driver passes register offsets inside it, aligned; nothing else in the
        // guest refers to that range. A null `p` is impossible (the BAR is not at 0).
        unsafe { volatile::VolatilePtr::new(core::ptr::NonNull::new_unchecked(p)) }
    }

    fn before() {
        // SAFETY: a barrier.
        unsafe { core::arch::asm!("sync", options(nostack)) };
    }

    fn after_load(v: u64) {
        // SAFETY: a trap that never fires (it depends on the loaded value) and a context
        // synchronisation: the load completes before anything after it.
        unsafe { core::arch::asm!("twi 0, {0}, 0", "isync", in(reg) v, options(nostack)) };
    }
}

impl edu::EduMmio for GuestEduBar {
    fn read32(&self, offset: u32) -> u32 {
        Self::before();
        let v = u32::from_be(self.ptr::<u32>(offset).read());
        Self::after_load(u64::from(v));
        v
    }
    fn write32(&self, offset: u32, value: u32) {
        Self::before();
        self.ptr::<u32>(offset).write(value.to_be());
    }
    fn read64(&self, offset: u32) -> u64 {
        Self::before();
        let v = u64::from_be(self.ptr::<u64>(offset).read());
        Self::after_load(v);
        v
    }
    fn write64(&self, offset: u32, value: u64) {
        Self::before();
        self.ptr::<u64>(offset).write(value.to_be());
    }
    fn relax(&self) {
        // About 10 us of timebase between polls (QEMU completes an edu transfer on a timer).
        let start = mfspr::<268>();
        while mfspr::<268>().wrapping_sub(start) < 5_000 {
            core::hint::spin_loop();
        }
    }
}

/// A transfer by the device the guest owns: 0 done, 1 no device, 2 it did not complete.
fn device_dma(op: u64, iova: u64) -> u64 {
    let bar = DEVICE_BAR.load(core::sync::atomic::Ordering::Relaxed);
    if bar == 0 {
        return 1;
    }
    // Up to ~0.5 s of polls: QEMU's edu finishes a transfer 100 ms of virtual time after it.
    let Ok(dev) = edu::Edu::probe(GuestEduBar(bar), 100_000) else {
        return 1;
    };
    let r = if op == guest_op::DMA_TO_DEVICE {
        dev.dma_to_device(iova, 0, abi::DMA_LEN)
    } else {
        dev.dma_to_ram(0, iova, abi::DMA_LEN)
    };
    u64::from(r.is_err()) * 2
}

/// A guest action (`abi::guest_op`): what a hostile guest would do.
fn guest_action(c: &Call) -> CallResult {
    let sym = |s: &u8| s as *const u8 as u64;
    // SAFETY (for the four symbol reads below): linker-defined code labels.
    let (status, value) = match c.nr & !abi::GUEST_ACTION {
        guest_op::SPIN => try_call(unsafe { sym(&p9_act_spin) }, 0, 0),
        guest_op::SPIN_EE => try_call(unsafe { sym(&p9_act_spin_ee) }, 0, 0),
        guest_op::LOAD => try_call(unsafe { sym(&p9_act_load) }, c.args[0], 0),
        guest_op::STORE => try_call(unsafe { sym(&p9_act_store) }, c.args[0], c.args[1]),
        guest_op::EXEC => try_call(c.args[0], 0, 0),
        guest_op::INSN => try_call(load_slot(&[c.args[0] as u32, BLR]), c.args[1], 0),
        guest_op::SPR => {
            // r3 = 0: hypercall 0, answered with H_FUNCTION; the SPR read straight after it.
            try_call(load_slot(&[SC1, abi::mfspr_word(c.args[0], 3), BLR]), 0, 0)
        }
        guest_op::MTSPR => try_call(
            load_slot(&[
                abi::mtspr_word(c.args[0], 3),
                abi::mfspr_word(c.args[0], 3),
                BLR,
            ]),
            c.args[1],
            0,
        ),
        guest_op::USER_SC => user_sc(),
        op @ (guest_op::DMA_TO_DEVICE | guest_op::DMA_TO_RAM) => {
            (abi::outcome::OK, device_dma(op, c.args[0]))
        }
        _ => (u64::MAX, 0),
    };
    CallResult {
        r3: status,
        r4: value,
        regs_ok: 2,
        bad_reg: u64::MAX,
        bad_value: 0,
        insns: 0,
    }
}

fn timed_call(c: &Call, repeat: u64) -> CallResult {
    let mut res = CallResult {
        regs_ok: 2,
        bad_reg: u64::MAX,
        ..CallResult::default()
    };
    for _ in 0..repeat.max(1) {
        let mut a = [c.nr, c.args[0], c.args[1], c.args[2], c.args[3], 0, 0, 0];
        // SAFETY: `a` is a live array of 8 words.
        unsafe { p9_hcall_timed(&mut a) };
        res.r3 = a[5];
        res.r4 = a[6];
        res.insns = a[7];
    }
    res
}

#[no_mangle]
extern "C" fn guest_main(mb: *const Mailbox) -> ! {
    // SAFETY: the hypervisor put the mailbox there before starting us and does not touch it
    // while we run (`current` is the guest's to write, through a raw pointer).
    let mb = unsafe { &*mb };
    if mb.magic != MAGIC {
        exit(0xbad);
    }
    let results = RESULTS_GPA as *mut CallResult;
    let n = (mb.ncalls as usize).min(mb.calls.len());
    let first = (mb.first as usize).min(n);
    DEVICE_BAR.store(mb.device_bar, core::sync::atomic::Ordering::Relaxed);
    let current = core::ptr::addr_of!(mb.current) as *mut u64;
    match mb.action {
        action::CALLS | action::BENCH => {
            for (i, c) in mb.calls[..n].iter().enumerate().skip(first) {
                // SAFETY: the mailbox is the guest's; the hypervisor reads this after a stop.
                unsafe { current.write_volatile(i as u64) };
                let r = if abi::is_action(c.nr) {
                    guest_action(c)
                } else if mb.action == action::CALLS {
                    checked_call(i as u64, c)
                } else {
                    timed_call(c, mb.repeat)
                };
                // SAFETY: the results area is guest RAM reserved for this, MAX_CALLS long.
                unsafe { results.add(i).write_volatile(r) };
            }
        }
        action::ILLEGAL => {
            // SAFETY: deliberately illegal: the hypervisor must end this guest.
            unsafe { core::arch::asm!(".long 0") };
        }
        action::UNMAPPED_LOAD => {
            // SAFETY: deliberately unmapped: the hypervisor must end this guest.
            let v = unsafe { core::ptr::read_volatile(mb.bad_gpa as *const u64) };
            core::hint::black_box(v);
        }
        _ => exit(0xbad1),
    }
    exit(0)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(0xdead)
}
