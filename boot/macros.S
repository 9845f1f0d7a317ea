/* Small named helpers shared by the boot assembly (included first by src/arch/ppc64/mod.rs). */

/* Load a 64-bit absolute address or constant into a register. */
.macro LOAD_IMM64 reg, sym
    lis     \reg, (\sym)@highest
    ori     \reg, \reg, (\sym)@higher
    rldicr  \reg, \reg, 32, 31
    oris    \reg, \reg, (\sym)@high
    ori     \reg, \reg, (\sym)@l
.endm

/*
 * Switch to little-endian if we are running big-endian (Linux's FIXUP_ENDIAN_HV). In the other
 * endianness `tdi 0,0,0x48` reads as `b .+8`, which lands on the byte-reversed words below:
 * mfmsr r11; xori r11,r11,1; bcl 20,31,$+4; mflr r10; addi r10,r10,20; mthsrr0 r10;
 * mthsrr1 r11; hrfid. Clobbers r10 and r11 only.
 */
.macro FIXUP_ENDIAN
    tdi     0, 0, 0x48
    b       191f
    .long   0xa600607d
    .long   0x01006b69
    .long   0x05009f42
    .long   0xa602487d
    .long   0x14004a39
    .long   0xa64b5a7d
    .long   0xa64b7b7d
    .long   0x2402004c
191:
.endm

/* SPR numbers and MSR bits: const operands from arch::ppc64::spr (see arch/ppc64/mod.rs). */
.set SPRN_DSISR, {spr_dsisr}
.set SPRN_DAR, {spr_dar}
.set SPRN_SRR0, {spr_srr0}
.set SPRN_SRR1, {spr_srr1}
.set SPRN_HSPRG0, {spr_hsprg0}
.set SPRN_HSPRG1, {spr_hsprg1}
.set SPRN_HSRR0, {spr_hsrr0}
.set SPRN_HSRR1, {spr_hsrr1}

.set MSR_LE, {msr_le}
.set MSR_DR, {msr_dr}
.set MSR_IR, {msr_ir}
