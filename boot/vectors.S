/*
 * The exception vector block, copied to real address 0 at boot (HRMOR = 0, LPCR[AIL] = 0, so
 * every interrupt enters at real address 0 + vector). It is position-independent: only relative
 * branches inside the block, absolute addresses come from the per-CPU area.
 *
 * HSPRG0 holds this CPU's per-CPU area (struct PerCpu in src/arch/ppc64/exception.rs; the PCPU_*
 * offsets below are const operands taken from it); HSPRG1 is a one-register spill slot.
 * Every 32-byte slot from 0 to 0x1fe0 holds a stub, so any vector, architected or not, lands on a
 * stub that knows its own number, except 0xc20: the system-call stub runs on into it.
 *
 * Each stub reads CFAR before its first branch (a taken branch overwrites it): when a guest was
 * interrupted, CFAR is guest state, restored before the guest resumes, and the address of a
 * hypervisor branch must never be what the guest finds there.
 */
.set PCPU_GPR, {pcpu_gpr}
.set PCPU_SRR0, {pcpu_srr0}
.set PCPU_SRR1, {pcpu_srr1}
.set PCPU_HSRR0, {pcpu_hsrr0}
.set PCPU_HSRR1, {pcpu_hsrr1}
.set PCPU_DAR, {pcpu_dar}
.set PCPU_DSISR, {pcpu_dsisr}
.set PCPU_LR, {pcpu_lr}
.set PCPU_CTR, {pcpu_ctr}
.set PCPU_CR, {pcpu_cr}
.set PCPU_XER, {pcpu_xer}
.set PCPU_VECTOR, {pcpu_vector}
.set PCPU_SCRATCH, {pcpu_scratch}
.set PCPU_STACK, {pcpu_stack}
.set PCPU_HANDLER, {pcpu_handler}
.set PCPU_HCALL_ENTRY, {pcpu_hcall_entry}
.set PCPU_SCRATCH_CTR, {pcpu_scratch_ctr}
.set PCPU_CFAR, {pcpu_cfar}
.set SPRN_CFAR, 28

    .section .vectors, "ax"
    .balign 4096
    .set vec, 0
    .rept 256
    .if vec != 0xc20
    mtspr   SPRN_HSPRG1, 13
    mfspr   13, SPRN_HSPRG0
    std     12, PCPU_SCRATCH(13)
    mfspr   12, SPRN_CFAR
    std     12, PCPU_CFAR(13)
    .if vec == 0xc00
    /* System call: the hypercall entry (arch::ppc64::guest), reached through the per-CPU area;
     * CTR is guest state, so it is spilled first. Ten instructions: it runs into 0xc20. */
    mfctr   12
    std     12, PCPU_SCRATCH_CTR(13)
    ld      12, PCPU_HCALL_ENTRY(13)
    mtctr   12
    bctr
    .else
    li      12, vec
    b       exception_common
    .endif
    .endif
    .balign 32
    .set vec, vec + 0x20
    .endr

/* Save the whole interrupted state into the per-CPU frame and call the Rust handler. */
    .globl p9_exception_common
p9_exception_common:
exception_common:
    std     0, PCPU_GPR + 0*8(13)
    std     1, PCPU_GPR + 1*8(13)
    std     2, PCPU_GPR + 2*8(13)
    std     3, PCPU_GPR + 3*8(13)
    std     4, PCPU_GPR + 4*8(13)
    std     5, PCPU_GPR + 5*8(13)
    std     6, PCPU_GPR + 6*8(13)
    std     7, PCPU_GPR + 7*8(13)
    std     8, PCPU_GPR + 8*8(13)
    std     9, PCPU_GPR + 9*8(13)
    std     10, PCPU_GPR + 10*8(13)
    std     11, PCPU_GPR + 11*8(13)
    ld      0, PCPU_SCRATCH(13)
    std     0, PCPU_GPR + 12*8(13)
    mfspr   0, SPRN_HSPRG1
    std     0, PCPU_GPR + 13*8(13)
    std     14, PCPU_GPR + 14*8(13)
    std     15, PCPU_GPR + 15*8(13)
    std     16, PCPU_GPR + 16*8(13)
    std     17, PCPU_GPR + 17*8(13)
    std     18, PCPU_GPR + 18*8(13)
    std     19, PCPU_GPR + 19*8(13)
    std     20, PCPU_GPR + 20*8(13)
    std     21, PCPU_GPR + 21*8(13)
    std     22, PCPU_GPR + 22*8(13)
    std     23, PCPU_GPR + 23*8(13)
    std     24, PCPU_GPR + 24*8(13)
    std     25, PCPU_GPR + 25*8(13)
    std     26, PCPU_GPR + 26*8(13)
    std     27, PCPU_GPR + 27*8(13)
    std     28, PCPU_GPR + 28*8(13)
    std     29, PCPU_GPR + 29*8(13)
    std     30, PCPU_GPR + 30*8(13)
    std     31, PCPU_GPR + 31*8(13)
    std     12, PCPU_VECTOR(13)
    mfspr   0, SPRN_SRR0
    std     0, PCPU_SRR0(13)
    mfspr   0, SPRN_SRR1
    std     0, PCPU_SRR1(13)
    mfspr   0, SPRN_HSRR0
    std     0, PCPU_HSRR0(13)
    mfspr   0, SPRN_HSRR1
    std     0, PCPU_HSRR1(13)
    mfspr   0, SPRN_DAR
    std     0, PCPU_DAR(13)
    mfspr   0, SPRN_DSISR
    std     0, PCPU_DSISR(13)
    mflr    0
    std     0, PCPU_LR(13)
    mfctr   0
    std     0, PCPU_CTR(13)
    mfcr    0
    std     0, PCPU_CR(13)
    mfxer   0
    std     0, PCPU_XER(13)

    ld      1, PCPU_STACK(13)
    li      0, 0
    stdu    0, -64(1)
    mr      3, 13
    ld      12, PCPU_HANDLER(13)
    mtctr   12
    bctrl
1:  b       1b                      /* the handler does not return */
