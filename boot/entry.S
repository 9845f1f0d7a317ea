/*
 * Kernel entry, the first byte of the loaded segment. Loaders enter here big-endian with
 * MSR = SF|HV, MMU off (hypervisor real mode), r3 = flattened device tree, wherever they put the
 * image: skiboot at 0x20000000 + the segment's file offset, kexec-tools at the segment start,
 * kexec-lite at the entry's offset into the segment (the same byte). The image is a static PIE
 * linked at LINK_BASE (0xc000000020000000 + offset); we
 *  1. switch to little-endian and continue at the linear-map alias (0xc000... | pa) of where we
 *     run, which is valid with the MMU off and, later, on;
 *  2. apply our own R_PPC64_RELATIVE relocations for the difference between that address and
 *     the link address (nothing else may be in .rela.dyn: anything else stops here);
 *  3. set the TOC and a stack, clear .bss, and call `kernel_entry(fdt, opal_base, opal_entry)`.
 * Everything is PC- or TOC-relative until the relocations are applied.
 */
    .section .text.entry, "ax"
    .globl _start
_start:
    FIXUP_ENDIAN
    mr      31, 3                   /* FDT address */
    mr      30, 8                   /* OPAL base and entry as skiboot/kexec pass them: only */
    mr      29, 9                   /* used to report an unusable FDT */

    bcl     20, 31, 1f
1:  mflr    10                      /* where 1b runs (physical, or already linear) */
    lis     11, 0xc000
    sldi    11, 11, 32
    or      10, 10, 11              /* its linear-map alias */
    addi    12, 10, (2f - 1b)
    mtctr   12
    bctr
2:  /* r10 = linear address of 1b. The TOC and the relocation delta from it. */
    addis   2, 10, (.TOC. - 1b)@ha
    addi    2, 2, (.TOC. - 1b)@l
    addi    28, 10, (_start - 1b)   /* runtime address of _start */
    LOAD_IMM64 27, KERNEL_BASE      /* link address of _start (an absolute constant, linker.ld) */
    subf    27, 27, 28              /* delta = runtime - link */

    /* Apply .rela.dyn: each entry is r_offset, r_info, r_addend (24 bytes). */
    addis   4, 2, __rela_dyn_start@toc@ha
    addi    4, 4, __rela_dyn_start@toc@l
    addis   5, 2, __rela_dyn_end@toc@ha
    addi    5, 5, __rela_dyn_end@toc@l
3:  cmpld   4, 5
    bge     5f
    ld      6, 8(4)                 /* r_info: type in the low 32 bits */
    clrldi  6, 6, 32
    cmpldi  6, 22                   /* R_PPC64_RELATIVE */
    bne     4f
    ld      6, 0(4)
    add     6, 6, 27                /* where */
    ld      7, 16(4)
    add     7, 7, 27                /* what */
    std     7, 0(6)
    addi    4, 4, 24
    b       3b
4:  b       4b                      /* a relocation we do not apply: stop (no console yet) */
5:
    addis   1, 2, __boot_stack_top@toc@ha
    addi    1, 1, __boot_stack_top@toc@l
    li      0, 0
    stdu    0, -64(1)               /* a null back chain ends stack walks */

    /* Clear .bss, 8 bytes at a time (the linker script aligns both ends). */
    addis   4, 2, __bss_start@toc@ha
    addi    4, 4, __bss_start@toc@l
    addis   5, 2, __bss_end@toc@ha
    addi    5, 5, __bss_end@toc@l
6:  cmpld   4, 5
    bge     7f
    std     0, 0(4)
    addi    4, 4, 8
    b       6b
7:
    mr      3, 31
    mr      4, 30
    mr      5, 29
    addis   12, 2, kernel_entry@toc@ha
    addi    12, 12, kernel_entry@toc@l
    mtctr   12
    bctrl
8:  b       8b                      /* kernel_entry never returns */

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

    addis   11, 2, opal_entry_addr@toc@ha
    ld      12, opal_entry_addr@toc@l(11)
    mtspr   SPRN_HSRR0, 12
    addis   11, 2, opal_return@toc@ha
    addi    11, 11, opal_return@toc@l
    mtlr    11
    addis   11, 2, opal_base_addr@toc@ha
    ld      2, opal_base_addr@toc@l(11)
    mfmsr   12
    li      11, (MSR_LE | MSR_IR | MSR_DR)
    andc    12, 12, 11
    mtspr   SPRN_HSRR1, 12
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

/*
 * A secondary thread, started by OPAL_START_CPU (arch::ppc64::smp): big-endian, MMU off,
 * r3 = its PIR. Continue at the linear-map alias, take the TOC, the stack and per-CPU area the
 * boot CPU left in p9_smp_slot, and call p9_secondary_rust(pir) (which never returns).
 */
    .text
    .globl p9_secondary_entry
p9_secondary_entry:
    FIXUP_ENDIAN
    bcl     20, 31, 1f
1:  mflr    10
    lis     11, 0xc000
    sldi    11, 11, 32
    or      10, 10, 11
    addi    12, 10, (2f - 1b)
    mtctr   12
    bctr
2:  addis   2, 10, (.TOC. - 1b)@ha
    addi    2, 2, (.TOC. - 1b)@l
    addis   4, 2, p9_smp_slot@toc@ha
    addi    4, 4, p9_smp_slot@toc@l
    ld      1, 0(4)
    li      0, 0
    stdu    0, -64(1)
    ld      5, 8(4)
    mtspr   SPRN_HSPRG0, 5
    addis   12, 2, p9_secondary_rust@toc@ha
    addi    12, 12, p9_secondary_rust@toc@l
    mtctr   12
    bctrl
3:  b       3b
