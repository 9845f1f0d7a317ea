/*
 * Kernel entry. skiboot jumps here big-endian with MSR = SF|HV, MMU off (hypervisor real mode),
 * r3 = flattened device tree. We switch to little-endian, set the TOC and a stack, clear .bss
 * (nobody else does) and call `kernel_entry(fdt, opal_base, opal_entry)` in Rust, which never
 * returns.
 */
    .section .text.entry, "ax"
    .globl _start
_start:
    FIXUP_ENDIAN
    mr      31, 3                   /* FDT address (callee-saved across the .bss clear) */
    mr      30, 8                   /* OPAL base and entry as skiboot/kexec pass them: only */
    mr      29, 9                   /* used to report an unusable FDT */

    LOAD_IMM64 2, .TOC.
    LOAD_IMM64 1, __boot_stack_top
    li      0, 0
    stdu    0, -64(1)               /* a null back chain ends stack walks */

    /* Clear .bss, 8 bytes at a time (the linker script aligns both ends). */
    LOAD_IMM64 4, __bss_start
    LOAD_IMM64 5, __bss_end
1:  cmpld   4, 5
    bge     2f
    std     0, 0(4)
    addi    4, 4, 8
    b       1b
2:
    mr      3, 31
    mr      4, 30
    mr      5, 29
    LOAD_IMM64 12, kernel_entry
    mtctr   12
    bctrl
3:  b       3b                      /* kernel_entry never returns */

/*
 * OPAL call trampoline: `opal_call_raw(token, args: *const [u64; 8]) -> i64`, callable with the
 * MMU on or off. OPAL is entered big-endian with the MMU off through hrfid to its entry point,
 * r0 = token, r2 = OPAL base, r3..r10 = arguments. It returns with blr, big-endian, MMU off,
 * preserving r1 and r13..r31, so the return address is an endian fix-up that then restores our
 * TOC, CR, LR and HSPRG0, and finally the caller's MSR (MMU on again if it was).
 */
    .text
    .globl opal_call_raw
opal_call_raw:
    mflr    11
    std     11, 16(1)
    mfcr    11
    stw     11, 8(1)
    std     2, 24(1)
    mfspr   11, SPRN_HSPRG0         /* firmware may use the HSPRGs: keep our per-CPU pointer */
    stdu    1, -48(1)
    std     11, 32(1)
    mfmsr   12
    std     12, 40(1)               /* the caller's MSR, restored on the way back */

    mr      0, 3
    mr      11, 4
    ld      3, 0(11)
    ld      4, 8(11)
    ld      5, 16(11)
    ld      6, 24(11)
    ld      7, 32(11)
    ld      8, 40(11)
    ld      9, 48(11)
    ld      10, 56(11)

    LOAD_IMM64 11, opal_entry_addr
    ld      12, 0(11)
    mtspr   SPRN_HSRR0, 12
    LOAD_IMM64 11, opal_base_addr
    ld      2, 0(11)
    mfmsr   12
    li      11, (MSR_LE | MSR_IR | MSR_DR)
    andc    12, 12, 11
    mtspr   SPRN_HSRR1, 12
    LOAD_IMM64 11, opal_return
    mtlr    11
    hrfid

opal_return:
    FIXUP_ENDIAN
    ld      11, 32(1)
    mtspr   SPRN_HSPRG0, 11
    ld      11, 40(1)               /* back to the caller's MSR (IR/DR) at 1: */
    mtspr   SPRN_HSRR1, 11
    bcl     20, 31, 0f
0:  mflr    11
    addi    11, 11, 16
    mtspr   SPRN_HSRR0, 11
    hrfid
1:  addi    1, 1, 48
    ld      2, 24(1)
    lwz     11, 8(1)
    mtcrf   0xff, 11
    ld      11, 16(1)
    mtlr    11
    blr

    /* The boot CPU's stack. */
    .section .bss.boot_stack, "aw", @nobits
    .balign 4096
__boot_stack_bottom:
    .space  0x40000
__boot_stack_top:
