//! The test guest. The hypervisor loads it at guest physical 0 of a partition (LPID >= 1) and
//! starts it in guest real mode at `_start` with r3 = its mailbox (`hv::abi`). It makes the
//! hypercalls the mailbox lists with every register filled with a pattern, checks after each
//! `sc 1` that the hypervisor preserved everything a hypercall must preserve, writes each result,
//! and ends with H_P9_EXIT. Any interrupt delivered to the guest itself lands on a vector stub
//! that ends the guest with H_P9_EXIT(vector, SRR0, SRR1).
#![no_std]
#![no_main]

#[allow(dead_code)]
#[path = "../../src/hv/abi.rs"]
mod abi;

use abi::{action, Call, CallResult, Mailbox, H_P9_EXIT, MAGIC, RESULTS_GPA};
use core::mem::offset_of;

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
}

core::arch::global_asm!(
    r#"
    .section .vectors, "ax"
    .set vec, 0
    .rept 128
    li      3, 0
    ori     3, 3, {exit}
    li      4, vec
    mfsrr0  5
    mfsrr1  6
    sc      1
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

/* p9_hcall_frame(frame): every GPR, CR, LR, CTR and XER from the frame, sc 1, all of them back
 * into the frame (plus SRR0/SRR1). The caller's stack pointer waits in SPRG0, the frame pointer
 * in SPRG1, so that r1 and r3 too can carry patterns across the call. */
    .text
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
    mtsprg  0, 1
    mtsprg  1, 3
    ld      0, {cr_in}(3)
    mtcrf   0xff, 0
    ld      0, {lr_in}(3)
    mtlr    0
    ld      0, {ctr_in}(3)
    mtctr   0
    ld      0, {xer_in}(3)
    mtxer   0
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
    mtsprg  2, 3
    mfsprg  3, 1
    std     0, {out}(3)
    std     1, {out} + 8(3)
    std     2, {out} + 16(3)
    .irp r, 4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    std     \r, {out} + (\r * 8)(3)
    .endr
    mfsprg  0, 2
    std     0, {out} + 24(3)
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
    mfsprg  1, 0
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
);

extern "C" {
    fn p9_hcall_frame(f: *mut Frame);
    fn p9_hcall_timed(args: *mut [u64; 8]);
    static p9_after_sc: u8;
}

/// XER bits that hold state (SO, OV, CA, OV32, CA32, byte count).
const XER_MASK: u64 = 0xe00c_007f;

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

/// One call with patterns everywhere; returns its result with the register check.
fn checked_call(i: u64, c: &Call) -> CallResult {
    let pat = |k: u64| 0x5a00_0000_0000_0000 ^ (i << 24) ^ (k << 8) ^ k;
    let mut f = Frame {
        gpr_in: [0; 32],
        gpr_out: [0; 32],
        cr_in: pat(32) & 0xffff_ffff,
        lr_in: pat(33),
        ctr_in: pat(34),
        xer_in: pat(35) & XER_MASK,
        cr_out: 0,
        lr_out: 0,
        ctr_out: 0,
        xer_out: 0,
        srr0_out: 0,
        srr1_out: 0,
    };
    for (k, r) in f.gpr_in.iter_mut().enumerate() {
        *r = pat(k as u64);
    }
    f.gpr_in[3] = c.nr;
    f.gpr_in[4..12].copy_from_slice(&c.args);
    let msr_before = msr();
    // SAFETY: `f` is a live frame; the routine restores every register the ABI needs.
    unsafe { p9_hcall_frame(&mut f) };
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
        ])
        .find(|&(_, want, got)| want != got);
    if let Some((k, _, got)) = changed {
        res.regs_ok = 0;
        res.bad_reg = k;
        res.bad_value = got;
    }
    res
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
    // while we run.
    let mb = unsafe { &*mb };
    if mb.magic != MAGIC {
        exit(0xbad);
    }
    let results = RESULTS_GPA as *mut CallResult;
    let n = (mb.ncalls as usize).min(mb.calls.len());
    match mb.action {
        action::CALLS | action::BENCH => {
            for (i, c) in mb.calls[..n].iter().enumerate() {
                let r = if mb.action == action::CALLS {
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
