//! A build-time check of the kernel image (`target/ppc64le-kernel/release/kernel`): the ELF
//! properties that `boot/entry.S` and the loaders that enter it rely on. On a machine a violation
//! shows as a silent hang before the console exists, so it is checked on the host instead
//! (`tests/image_check.rs` runs [`check_kernel_image`] on every fresh kernel build).
//!
//! # Who reads the image, and what they do with it
//! - **skiboot** (`core/init.c`, `try_load_elf64_le`; QEMU `-kernel` puts the whole file at
//!   physical 0x20000000) runs the file in place: it enters at
//!   `0x20000000 + p_offset + (e_entry - p_vaddr)` of the first `PT_LOAD` that holds `e_entry`,
//!   takes an entry at file offset 0 for "failed to find kernel entry", and neither copies
//!   segments nor clears `.bss`.
//! - **kexec-tools** (`kexec -l`, as petitboot runs it; `kexec/arch/ppc64/kexec-elf-ppc64.c`,
//!   `elf_ppc64_load`) takes *program header 0* as the kernel: it moves that segment (only that
//!   one: any other is loaded at its own `p_paddr`) to a hole that `locate_hole` aligns to the
//!   first kernel's page size and nothing more (4 KiB on a 4K-page Linux, 64 KiB on a 64K-page
//!   one; `p_align` is not consulted), `add_segment` rounds the memory size up to that page
//!   size, and the purgatory jumps to the hole's first byte, not to `e_entry`. Its ELF parser
//!   (`kexec/kexec-elf.c`) refuses a segment or section that runs past the end of the file, a
//!   `PT_INTERP`, and a wrong `sh_entsize` on `SHT_SYMTAB`, `SHT_RELA`, `SHT_DYNAMIC` or
//!   `SHT_REL` sections.
//! - **kexec-lite** (`load_kernel`) enters at `e_entry - p_vaddr` into the segment, placed
//!   64 KiB-aligned, when `e_flags` says ELFv2 (otherwise it looks `e_entry` up as an ELFv1
//!   descriptor in `.opd`).
//! - **boot/entry.S** then computes `delta = (where _start runs) - KERNEL_BASE`, applies every
//!   24-byte entry of `[__rela_dyn_start, __rela_dyn_end)` as `R_PPC64_RELATIVE`
//!   (`*(r_offset + delta) = r_addend + delta`), stops for ever at any other type (there is no
//!   console yet), and only then clears `[__bss_start, __bss_end)` 8 bytes at a time.
//!
//! # What is checked
//! 1. The header: ELF64, little-endian, `EM_PPC64`, `ET_DYN` (a static PIE: an `ET_EXEC` has no
//!    relocations, so it could run only at its link address), ELFv2 (`e_flags & 3 == 2`, for
//!    kexec-lite), standard header entry sizes.
//! 2. Program headers: no `PT_INTERP`; exactly one `PT_LOAD`, and it is program header 0 (the
//!    one kexec-tools moves and enters; a second segment would stay at its `p_paddr` and not
//!    keep its link-time distance from the first, which the PC-relative entry code assumes); `p_filesz <= p_memsz`, the file
//!    part inside the file; `e_entry == p_vaddr` (kexec-tools enters at the segment's first
//!    byte); `p_offset != 0` (skiboot); `p_vaddr` and `p_offset` multiples of 4 KiB, so that
//!    every loader's `delta` is a multiple of 4 KiB (kexec-tools and kexec-lite place the segment
//!    page-aligned, skiboot at 0x20000000 + `p_offset`) and the link-time alignments up to 4 KiB
//!    hold where the image runs; `p_align` a power of two no larger than 4 KiB, the only load
//!    alignment kexec-tools under a 4K-page first kernel provides: a larger one (ld's default
//!    ppc64 max-page-size, 64 KiB; `build.rs` passes `-zmax-page-size=4096`) would be a promise
//!    that loader does not keep.
//! 3. Sections: present (`.rela.dyn` is found through them) and inside the file, with the entry
//!    sizes kexec-tools insists on; every allocated section inside the segment, at the file
//!    offset that matches its address (what a loader copies is what the kernel sees), and aligned
//!    to at most 4 KiB (beyond that the alignment is not preserved at run time: `delta` is a
//!    multiple of 4 KiB and nothing more); no allocated relocation section other than
//!    `.rela.dyn` (`SHT_REL`, `SHT_RELR` as `-z pack-relative-relocs` makes, another
//!    `SHT_RELA`): entry.S applies none of them.
//! 4. `.rela.dyn`: a whole number of 24-byte entries, each of type `R_PPC64_RELATIVE` (22),
//!    each writing its 8 bytes inside the file-backed part of the segment: outside the segment
//!    the store would land in memory the loader never gave the kernel, and in `.bss` it would be
//!    wiped by the clear that follows.
//! 5. `.dynamic`, when present: `DT_RELA`/`DT_RELASZ`/`DT_RELAENT` describe `.rela.dyn`, and
//!    there is no `DT_REL`, `DT_RELR` or `DT_JMPREL` (relocations entry.S would not apply).
//! 6. The symbol table, when present (it is in the release build; a stripped image skips this
//!    step and [`ImageFacts::symbols_checked`] says so): `_start` and `KERNEL_BASE` are the entry
//!    (entry.S's `delta` is computed from the pair); `__rela_dyn_start`/`__rela_dyn_end` bound
//!    exactly `.rela.dyn` (entry.S walks the symbols, this check reads the section);
//!    `__bss_start`/`__bss_end` are 8-byte aligned and lie past the file-backed part and inside
//!    the segment's memory (the clear must neither erase relocated data nor run past the
//!    segment).
//!
//! The parser is written by hand over the bytes, without `std`, and never panics: truncated or
//! garbage input is an [`ImageError`].
use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

/// The only relocation type `boot/entry.S` applies.
pub const R_PPC64_RELATIVE: u32 = 22;
/// The page size every loader aligns the segment to at least (kexec-tools under a 4K-page first
/// kernel; skiboot's 0x20000000 + `p_offset` when `p_offset` is a multiple of it).
pub const LOAD_ALIGN: u64 = 0x1000;
/// Size of one `Elf64_Rela`, the step of entry.S's loop.
pub const RELA_ENTRY_SIZE: u64 = 24;

const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
const SHDR_SIZE: u64 = 64;
const SYM_SIZE: u64 = 24;
const DYN_SIZE: u64 = 16;

const ET_DYN: u64 = 3;
const EM_PPC64: u64 = 21;

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;

const SHT_SYMTAB: u32 = 2;
const SHT_RELA: u32 = 4;
const SHT_DYNAMIC: u32 = 6;
const SHT_NOBITS: u32 = 8;
const SHT_REL: u32 = 9;
const SHT_RELR: u32 = 19;
const SHF_ALLOC: u64 = 2;

const DT_NULL: u64 = 0;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_RELAENT: u64 = 9;
const DT_REL: u64 = 17;
const DT_JMPREL: u64 = 23;
const DT_RELR: u64 = 36;

/// The name of a ppc64 relocation type a linker may leave in `.rela.dyn`, for messages.
pub fn reloc_type_name(r_type: u32) -> Option<&'static str> {
    Some(match r_type {
        0 => "R_PPC64_NONE",
        1 => "R_PPC64_ADDR32",
        19 => "R_PPC64_COPY",
        20 => "R_PPC64_GLOB_DAT",
        21 => "R_PPC64_JMP_SLOT",
        22 => "R_PPC64_RELATIVE",
        24 => "R_PPC64_UADDR32",
        26 => "R_PPC64_REL32",
        38 => "R_PPC64_ADDR64",
        43 => "R_PPC64_UADDR64",
        44 => "R_PPC64_REL64",
        51 => "R_PPC64_TOC",
        68 => "R_PPC64_DTPMOD64",
        73 => "R_PPC64_TPREL64",
        78 => "R_PPC64_DTPREL64",
        248 => "R_PPC64_IRELATIVE",
        _ => return None,
    })
}

/// The image's one loadable segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
    pub flags: u32,
}

/// Where `.rela.dyn` is: its link address, its file offset and its size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelaTable {
    pub addr: u64,
    pub file_offset: u64,
    pub size: u64,
}

/// What a passing image looks like, for printing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    /// `e_entry`: the segment's first byte.
    pub entry: u64,
    /// Entries in `.rela.dyn`, every one `R_PPC64_RELATIVE`.
    pub relocations: usize,
    /// `.rela.dyn`, if the image has one (an image without relocations has none).
    pub rela_dyn: Option<RelaTable>,
    /// Program headers of any type.
    pub program_headers: usize,
    /// `PT_LOAD` program headers (1 in a passing image).
    pub load_segments: usize,
    pub segment: LoadSegment,
    /// Section headers, and the largest alignment among the allocated sections.
    pub sections: usize,
    pub max_section_align: u64,
    /// Whether a `.dynamic` section was there to cross-check against `.rela.dyn`.
    pub dynamic_checked: bool,
    /// Whether a symbol table was there to check `_start`, `KERNEL_BASE`, `__rela_dyn_*` and
    /// `__bss_*` against (false for a stripped image).
    pub symbols_checked: bool,
    /// `[__bss_start, __bss_end)`, when the symbols were checked.
    pub bss: Option<(u64, u64)>,
}

impl fmt::Display for ImageFacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.segment;
        write!(
            f,
            "{} relocations, all R_PPC64_RELATIVE, all inside the segment's file-backed part; \
             {} PT_LOAD (program headers: {}): p_offset {:#x}, p_vaddr {:#x} (= e_entry), \
             p_filesz {:#x}, p_memsz {:#x}, p_align {:#x}, flags {}{}{}; \
             {} sections, largest allocated-section alignment {:#x}",
            self.relocations,
            self.load_segments,
            self.program_headers,
            s.offset,
            s.vaddr,
            s.filesz,
            s.memsz,
            s.align,
            if s.flags & 4 != 0 { "R" } else { "-" },
            if s.flags & 2 != 0 { "W" } else { "-" },
            if s.flags & 1 != 0 { "X" } else { "-" },
            self.sections,
            self.max_section_align,
        )?;
        if let Some(r) = &self.rela_dyn {
            write!(
                f,
                "; .rela.dyn at {:#x} (file offset {:#x}, {:#x} bytes)",
                r.addr, r.file_offset, r.size
            )?;
        }
        if let Some((start, end)) = self.bss {
            write!(f, "; .bss cleared [{start:#x}, {end:#x})")?;
        }
        write!(
            f,
            "; .dynamic {}; symbols {}",
            if self.dynamic_checked {
                "agrees"
            } else {
                "absent"
            },
            if self.symbols_checked {
                "agree"
            } else {
                "absent (stripped), not checked"
            }
        )
    }
}

/// Why the image would not boot, or would not load, as `boot/entry.S` and the loaders expect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// `what` needs `size` bytes at file offset `offset`, past the end of the file (or the sum
    /// overflows).
    Truncated {
        what: String,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    /// An ELF header field that does not describe a little-endian ELF64 ppc64 static PIE.
    Header {
        field: &'static str,
        found: u64,
        expected: &'static str,
    },
    /// A `PT_INTERP` program header: kexec-tools refuses the image.
    Interpreter { index: usize },
    /// Not exactly one `PT_LOAD`.
    LoadSegments { count: usize },
    /// Program header 0 is not the `PT_LOAD`: kexec-tools loads and enters program header 0.
    FirstHeaderNotLoad { p_type: u32 },
    /// The segment's file part is larger than its memory.
    FileszOverMemsz { filesz: u64, memsz: u64 },
    /// The segment's addresses wrap around.
    SegmentWraps { vaddr: u64, memsz: u64 },
    /// `e_entry` is not the segment's first byte.
    EntryNotSegmentStart { entry: u64, vaddr: u64 },
    /// The segment starts at file offset 0, where skiboot cannot tell an entry from none.
    EntryAtFileOffsetZero,
    /// `p_vaddr` or `p_offset` is not a multiple of [`LOAD_ALIGN`].
    SegmentMisaligned { field: &'static str, value: u64 },
    /// `p_align` is not a power of two, or asks for more than [`LOAD_ALIGN`].
    SegmentAlign { p_align: u64 },
    /// No section headers: `.rela.dyn` cannot be found.
    NoSectionHeaders,
    /// A section kexec-tools refuses for its entry size.
    SectionEntsize {
        name: String,
        sh_type: u32,
        entsize: u64,
        expected: u64,
    },
    /// An allocated section outside the segment's memory, or (with contents) outside its file
    /// part.
    SectionOutsideSegment {
        name: String,
        addr: u64,
        size: u64,
        file_backed: bool,
    },
    /// An allocated section whose file offset does not match its address within the segment.
    SectionNotCongruent {
        name: String,
        addr: u64,
        offset: u64,
        expected_offset: u64,
    },
    /// An allocated section aligned to more than [`LOAD_ALIGN`] (or to a non-power of two).
    SectionAlign { name: String, align: u64 },
    /// An allocated relocation section entry.S does not apply.
    ForeignRelocations { name: String, sh_type: u32 },
    /// `.rela.dyn`'s size is not a whole number of entries.
    RelaSize { size: u64 },
    /// A relocation of a type other than `R_PPC64_RELATIVE`.
    BadRelocType {
        index: usize,
        offset: u64,
        r_type: u32,
    },
    /// A relocation whose 8 bytes are not inside the segment's file-backed part.
    RelocOutsideFilePart {
        index: usize,
        offset: u64,
        start: u64,
        end: u64,
    },
    /// `.dynamic` describes relocations other than `.rela.dyn`.
    DynamicMismatch {
        tag: &'static str,
        found: u64,
        expected: u64,
    },
    /// `.dynamic` has a relocation table entry.S does not apply.
    DynamicForeign { tag: &'static str, value: u64 },
    /// A section's `sh_link` names no section.
    BadLink { section: &'static str, link: u64 },
    /// A symbol entry.S uses is missing from the symbol table.
    MissingSymbol { name: &'static str },
    /// A symbol entry.S uses has a value other than the image's layout implies.
    SymbolMismatch {
        name: &'static str,
        value: u64,
        expected: u64,
        what: &'static str,
    },
    /// `[__bss_start, __bss_end)` is not what entry.S's clear loop can clear safely.
    Bss {
        start: u64,
        end: u64,
        why: &'static str,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ImageError::*;
        match self {
            Truncated {
                what,
                offset,
                size,
                file_len,
            } => write!(
                f,
                "{what}: {size:#x} bytes at file offset {offset:#x} run past the end of the \
                 file ({file_len:#x} bytes): truncated or not an ELF image"
            ),
            Header {
                field,
                found,
                expected,
            } => write!(
                f,
                "ELF header: {field} is {found:#x}, expected {expected} (the kernel is a \
                 little-endian ELF64 ppc64 ELFv2 static PIE)"
            ),
            Interpreter { index } => write!(
                f,
                "program header {index} is PT_INTERP: kexec-tools refuses an image that asks \
                 for an interpreter"
            ),
            LoadSegments { count } => write!(
                f,
                "the image has {count} PT_LOAD segments, expected exactly 1: kexec-tools places \
                 and enters only program header 0, and boot/entry.S reaches everything \
                 PC-relative from _start, so all of the image must be in that one segment \
                 (linker.ld's PHDRS)"
            ),
            FirstHeaderNotLoad { p_type } => write!(
                f,
                "program header 0 has type {p_type:#x}, not PT_LOAD: kexec-tools (elf_ppc64_load) \
                 relocates and enters program header 0 as the kernel"
            ),
            FileszOverMemsz { filesz, memsz } => write!(
                f,
                "the segment's p_filesz {filesz:#x} exceeds its p_memsz {memsz:#x}"
            ),
            SegmentWraps { vaddr, memsz } => write!(
                f,
                "the segment at {vaddr:#x} of {memsz:#x} bytes wraps around the address space"
            ),
            EntryNotSegmentStart { entry, vaddr } => write!(
                f,
                "e_entry {entry:#x} is not the segment's first byte {vaddr:#x}: kexec-tools' \
                 purgatory jumps to the segment start, so _start must be there \
                 (linker.ld: .text.entry first)"
            ),
            EntryAtFileOffsetZero => write!(
                f,
                "the segment (and so the entry) is at file offset 0: skiboot computes the entry \
                 as a file offset and treats 0 as \"failed to find kernel entry\""
            ),
            SegmentMisaligned { field, value } => write!(
                f,
                "the segment's {field} {value:#x} is not a multiple of {LOAD_ALIGN:#x}: loaders \
                 place the segment start 4 KiB-aligned (kexec-tools at a page-aligned hole, \
                 skiboot at 0x20000000 + p_offset), so only then is boot/entry.S's relocation \
                 delta a multiple of 4 KiB and the image's page alignments hold where it runs"
            ),
            SegmentAlign { p_align } => write!(
                f,
                "the segment's p_align {p_align:#x} is not a power of two no larger than \
                 {LOAD_ALIGN:#x}: kexec-tools under a 4K-page first kernel aligns the segment to \
                 4 KiB only (build.rs links with -zmax-page-size=4096)"
            ),
            NoSectionHeaders => write!(
                f,
                "the image has no section headers, so .rela.dyn cannot be found and checked \
                 (do not strip section headers from the kernel)"
            ),
            SectionEntsize {
                name,
                sh_type,
                entsize,
                expected,
            } => write!(
                f,
                "section {name} (type {sh_type}) has sh_entsize {entsize}, expected {expected}: \
                 kexec-tools refuses the image"
            ),
            SectionOutsideSegment {
                name,
                addr,
                size,
                file_backed,
            } => write!(
                f,
                "allocated section {name} ({addr:#x}, {size:#x} bytes) is not inside the \
                 segment's {}: the one PT_LOAD must hold everything the kernel uses",
                if *file_backed {
                    "file-backed part"
                } else {
                    "memory"
                }
            ),
            SectionNotCongruent {
                name,
                addr,
                offset,
                expected_offset,
            } => write!(
                f,
                "allocated section {name} at {addr:#x} is at file offset {offset:#x}, but the \
                 segment maps that address from file offset {expected_offset:#x}: the loaded \
                 bytes would not be the section's"
            ),
            SectionAlign { name, align } => write!(
                f,
                "allocated section {name} asks for alignment {align:#x}: only alignments that \
                 are powers of two up to {LOAD_ALIGN:#x} survive loading (the relocation delta \
                 is a multiple of 4 KiB and nothing more)"
            ),
            ForeignRelocations { name, sh_type } => write!(
                f,
                "allocated relocation section {name} (type {sh_type}{}): boot/entry.S applies \
                 only .rela.dyn's R_PPC64_RELATIVE entries",
                match *sh_type {
                    SHT_REL => ", SHT_REL",
                    SHT_RELR => ", SHT_RELR from -z pack-relative-relocs",
                    SHT_RELA => ", SHT_RELA",
                    _ => "",
                }
            ),
            RelaSize { size } => write!(
                f,
                ".rela.dyn is {size:#x} bytes, not a whole number of {RELA_ENTRY_SIZE}-byte \
                 entries"
            ),
            BadRelocType {
                index,
                offset,
                r_type,
            } => {
                write!(
                    f,
                    "relocation {index} at offset {offset:#x} has type {r_type}"
                )?;
                if let Some(name) = reloc_type_name(*r_type) {
                    write!(f, " ({name})")?;
                }
                write!(
                    f,
                    "; boot/entry.S applies only R_PPC64_RELATIVE ({R_PPC64_RELATIVE}) and \
                     stops for ever at any other type, before the console exists"
                )
            }
            RelocOutsideFilePart {
                index,
                offset,
                start,
                end,
            } => write!(
                f,
                "relocation {index} writes 8 bytes at {offset:#x}, outside the segment's \
                 file-backed part [{start:#x}, {end:#x}): outside the segment the store hits \
                 memory the loader never gave the kernel, and in .bss the clear after \
                 relocation erases it"
            ),
            DynamicMismatch {
                tag,
                found,
                expected,
            } => write!(
                f,
                ".dynamic has {tag} = {found:#x}, but .rela.dyn implies {expected:#x}: the \
                 relocations the image declares are not the ones boot/entry.S applies"
            ),
            DynamicForeign { tag, value } => write!(
                f,
                ".dynamic has {tag} = {value:#x}: relocations boot/entry.S does not apply"
            ),
            BadLink { section, link } => write!(
                f,
                "section {section}'s sh_link {link} names no section (its string table)"
            ),
            MissingSymbol { name } => write!(
                f,
                "the symbol table has no {name}, which boot/entry.S uses (linker.ld defines it)"
            ),
            SymbolMismatch {
                name,
                value,
                expected,
                what,
            } => write!(f, "{name} is {value:#x}, expected {expected:#x} ({what})"),
            Bss { start, end, why } => write!(
                f,
                "[__bss_start, __bss_end) = [{start:#x}, {end:#x}): {why}"
            ),
        }
    }
}

/// Little-endian read of `n` bytes at `at`; only called on slices whose length was checked.
fn le(b: &[u8], at: usize, n: usize) -> u64 {
    let mut v = 0u64;
    for i in (0..n).rev() {
        let byte = at.checked_add(i).and_then(|j| b.get(j)).copied();
        v = (v << 8) | u64::from(byte.unwrap_or(0));
    }
    v
}

struct File<'a> {
    data: &'a [u8],
}

impl<'a> File<'a> {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// `size` bytes at `offset`, or `Truncated` naming `what`.
    fn bytes(
        &self,
        offset: u64,
        size: u64,
        what: impl FnOnce() -> String,
    ) -> Result<&'a [u8], ImageError> {
        let range = offset.checked_add(size).and_then(|end| {
            let start = usize::try_from(offset).ok()?;
            let end = usize::try_from(end).ok()?;
            self.data.get(start..end)
        });
        range.ok_or_else(|| ImageError::Truncated {
            what: what(),
            offset,
            size,
            file_len: self.len(),
        })
    }
}

struct Header {
    e_type: u64,
    e_entry: u64,
    e_phoff: u64,
    e_shoff: u64,
    e_phentsize: u64,
    e_phnum: u64,
    e_shentsize: u64,
    e_shnum: u64,
    e_shstrndx: u64,
}

struct Phdr {
    p_type: u32,
    seg: LoadSegment,
}

struct Section {
    name: String,
    sh_type: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u64,
    align: u64,
    entsize: u64,
}

fn header(file: &File<'_>) -> Result<Header, ImageError> {
    let h = file.bytes(0, EHDR_SIZE, || "the ELF header".to_string())?;
    let bad = |field, found: u64, expected| {
        Err(ImageError::Header {
            field,
            found,
            expected,
        })
    };
    let magic = le(h, 0, 4);
    if magic != 0x464c_457f {
        return bad("the magic (bytes 0..4, little-endian)", magic, "\\x7fELF");
    }
    if h[4] != 2 {
        return bad("EI_CLASS", h[4].into(), "2 (ELFCLASS64)");
    }
    if h[5] != 1 {
        return bad("EI_DATA", h[5].into(), "1 (ELFDATA2LSB, little-endian)");
    }
    if h[6] != 1 {
        return bad("EI_VERSION", h[6].into(), "1 (EV_CURRENT)");
    }
    let hdr = Header {
        e_type: le(h, 16, 2),
        e_entry: le(h, 24, 8),
        e_phoff: le(h, 32, 8),
        e_shoff: le(h, 40, 8),
        e_phentsize: le(h, 54, 2),
        e_phnum: le(h, 56, 2),
        e_shentsize: le(h, 58, 2),
        e_shnum: le(h, 60, 2),
        e_shstrndx: le(h, 62, 2),
    };
    if hdr.e_type != ET_DYN {
        return bad(
            "e_type",
            hdr.e_type,
            "3 (ET_DYN: a static PIE, relocatable by boot/entry.S)",
        );
    }
    let machine = le(h, 18, 2);
    if machine != EM_PPC64 {
        return bad("e_machine", machine, "21 (EM_PPC64)");
    }
    let flags = le(h, 48, 4);
    if flags & 3 != 2 {
        return bad(
            "e_flags",
            flags,
            "ABI 2 (ELFv2; kexec-lite reads any other entry as an ELFv1 descriptor)",
        );
    }
    if hdr.e_phnum == 0 {
        return bad("e_phnum", 0, "at least 1 (loaders load program headers)");
    }
    if hdr.e_phentsize != PHDR_SIZE {
        return bad("e_phentsize", hdr.e_phentsize, "56 (Elf64_Phdr)");
    }
    if hdr.e_shnum != 0 && hdr.e_shentsize != SHDR_SIZE {
        return bad("e_shentsize", hdr.e_shentsize, "64 (Elf64_Shdr)");
    }
    Ok(hdr)
}

fn program_headers(file: &File<'_>, h: &Header) -> Result<alloc::vec::Vec<Phdr>, ImageError> {
    let table = file.bytes(h.e_phoff, h.e_phnum * PHDR_SIZE, || {
        format!("the program header table ({} entries)", h.e_phnum)
    })?;
    let mut out = alloc::vec::Vec::new();
    for i in 0..h.e_phnum as usize {
        let at = i * PHDR_SIZE as usize;
        out.push(Phdr {
            p_type: le(table, at, 4) as u32,
            seg: LoadSegment {
                flags: le(table, at + 4, 4) as u32,
                offset: le(table, at + 8, 8),
                vaddr: le(table, at + 16, 8),
                paddr: le(table, at + 24, 8),
                filesz: le(table, at + 32, 8),
                memsz: le(table, at + 40, 8),
                align: le(table, at + 48, 8),
            },
        });
    }
    Ok(out)
}

/// The one `PT_LOAD`, checked against what the loaders and entry.S need.
fn load_segment(file: &File<'_>, h: &Header, phdrs: &[Phdr]) -> Result<LoadSegment, ImageError> {
    if let Some(index) = phdrs.iter().position(|p| p.p_type == PT_INTERP) {
        return Err(ImageError::Interpreter { index });
    }
    let count = phdrs.iter().filter(|p| p.p_type == PT_LOAD).count();
    if count != 1 {
        return Err(ImageError::LoadSegments { count });
    }
    let first = &phdrs[0];
    if first.p_type != PT_LOAD {
        return Err(ImageError::FirstHeaderNotLoad {
            p_type: first.p_type,
        });
    }
    let s = first.seg;
    if s.filesz > s.memsz {
        return Err(ImageError::FileszOverMemsz {
            filesz: s.filesz,
            memsz: s.memsz,
        });
    }
    file.bytes(s.offset, s.filesz, || {
        "the segment's file part (program header 0)".to_string()
    })?;
    if s.vaddr.checked_add(s.memsz).is_none() {
        return Err(ImageError::SegmentWraps {
            vaddr: s.vaddr,
            memsz: s.memsz,
        });
    }
    if s.offset == 0 {
        return Err(ImageError::EntryAtFileOffsetZero);
    }
    for (field, value) in [("p_vaddr", s.vaddr), ("p_offset", s.offset)] {
        if !value.is_multiple_of(LOAD_ALIGN) {
            return Err(ImageError::SegmentMisaligned { field, value });
        }
    }
    if s.align > LOAD_ALIGN || (s.align != 0 && !s.align.is_power_of_two()) {
        return Err(ImageError::SegmentAlign { p_align: s.align });
    }
    if h.e_entry != s.vaddr {
        return Err(ImageError::EntryNotSegmentStart {
            entry: h.e_entry,
            vaddr: s.vaddr,
        });
    }
    Ok(s)
}

fn sections(file: &File<'_>, h: &Header) -> Result<alloc::vec::Vec<Section>, ImageError> {
    if h.e_shnum == 0 || h.e_shoff == 0 {
        return Err(ImageError::NoSectionHeaders);
    }
    let table = file.bytes(h.e_shoff, h.e_shnum * SHDR_SIZE, || {
        format!("the section header table ({} entries)", h.e_shnum)
    })?;
    let mut out = alloc::vec::Vec::new();
    let mut names = alloc::vec::Vec::new();
    for i in 0..h.e_shnum as usize {
        let at = i * SHDR_SIZE as usize;
        names.push(le(table, at, 4));
        out.push(Section {
            name: String::new(),
            sh_type: le(table, at + 4, 4) as u32,
            flags: le(table, at + 8, 8),
            addr: le(table, at + 16, 8),
            offset: le(table, at + 24, 8),
            size: le(table, at + 32, 8),
            link: le(table, at + 40, 4),
            align: le(table, at + 48, 8),
            entsize: le(table, at + 56, 8),
        });
    }
    // Contents inside the file first (kexec-tools' own check), then names from .shstrtab.
    for (i, s) in out.iter().enumerate() {
        if s.sh_type != SHT_NOBITS && s.sh_type != 0 {
            file.bytes(s.offset, s.size, || format!("section {i}'s contents"))?;
        }
    }
    let strndx = usize::try_from(h.e_shstrndx).unwrap_or(usize::MAX);
    let Some(shstr) = out.get(strndx) else {
        return Err(ImageError::Header {
            field: "e_shstrndx",
            found: h.e_shstrndx,
            expected: "the index of a section (the section name table)",
        });
    };
    let shstr_offset = shstr.offset;
    let strtab = file.bytes(shstr_offset, shstr.size, || {
        "the section name table".to_string()
    })?;
    for (i, (s, name)) in out.iter_mut().zip(names).enumerate() {
        s.name = string_at(strtab, name).ok_or_else(|| ImageError::Truncated {
            what: format!("section {i}'s name"),
            offset: shstr_offset.saturating_add(name),
            size: 1,
            file_len: file.len(),
        })?;
    }
    for s in &out {
        let expected = match s.sh_type {
            SHT_SYMTAB => SYM_SIZE,
            SHT_RELA => RELA_ENTRY_SIZE,
            SHT_DYNAMIC => DYN_SIZE,
            SHT_REL => 16,
            _ => continue,
        };
        if s.entsize != expected {
            return Err(ImageError::SectionEntsize {
                name: s.name.clone(),
                sh_type: s.sh_type,
                entsize: s.entsize,
                expected,
            });
        }
    }
    Ok(out)
}

/// The NUL-terminated string at `at` in a string table (`None` if it runs off the end).
fn string_at(table: &[u8], at: u64) -> Option<String> {
    let rest = table.get(usize::try_from(at).ok()?..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&rest[..len]).into_owned())
}

/// Every allocated section inside the segment, at the matching file offset, aligned to at most
/// 4 KiB; the largest alignment.
fn check_sections(sections: &[Section], seg: &LoadSegment) -> Result<u64, ImageError> {
    let mut max_align = 0;
    for s in sections.iter().filter(|s| s.flags & SHF_ALLOC != 0) {
        if s.align > LOAD_ALIGN || (s.align != 0 && !s.align.is_power_of_two()) {
            return Err(ImageError::SectionAlign {
                name: s.name.clone(),
                align: s.align,
            });
        }
        max_align = max_align.max(s.align);
        if s.size == 0 {
            continue;
        }
        let file_backed = s.sh_type != SHT_NOBITS;
        let limit = if file_backed { seg.filesz } else { seg.memsz };
        let inside = s.addr >= seg.vaddr
            && s.addr
                .checked_add(s.size)
                .is_some_and(|end| end - seg.vaddr <= limit);
        if !inside {
            return Err(ImageError::SectionOutsideSegment {
                name: s.name.clone(),
                addr: s.addr,
                size: s.size,
                file_backed,
            });
        }
        if !file_backed {
            continue;
        }
        // Cannot overflow: the section is inside the file part, which is inside the file.
        let expected_offset = seg.offset + (s.addr - seg.vaddr);
        if s.offset != expected_offset {
            return Err(ImageError::SectionNotCongruent {
                name: s.name.clone(),
                addr: s.addr,
                offset: s.offset,
                expected_offset,
            });
        }
    }
    Ok(max_align)
}

/// `.rela.dyn` (if any); refuses any other allocated relocation section.
fn rela_dyn(sections: &[Section]) -> Result<Option<&Section>, ImageError> {
    let mut found = None;
    for s in sections.iter().filter(|s| s.flags & SHF_ALLOC != 0) {
        match s.sh_type {
            SHT_RELA if s.name == ".rela.dyn" && found.is_none() => found = Some(s),
            SHT_RELA | SHT_REL | SHT_RELR => {
                return Err(ImageError::ForeignRelocations {
                    name: s.name.clone(),
                    sh_type: s.sh_type,
                })
            }
            _ => {}
        }
    }
    Ok(found)
}

/// Every entry `R_PPC64_RELATIVE`, writing inside the file-backed part; the count.
fn check_relocations(
    file: &File<'_>,
    rela: &Section,
    seg: &LoadSegment,
) -> Result<usize, ImageError> {
    if !rela.size.is_multiple_of(RELA_ENTRY_SIZE) {
        return Err(ImageError::RelaSize { size: rela.size });
    }
    let table = file.bytes(rela.offset, rela.size, || ".rela.dyn".to_string())?;
    let (start, end) = (seg.vaddr, seg.vaddr + seg.filesz);
    let count = (rela.size / RELA_ENTRY_SIZE) as usize;
    for index in 0..count {
        let at = index * RELA_ENTRY_SIZE as usize;
        let offset = le(table, at, 8);
        let r_type = le(table, at + 8, 4) as u32;
        if r_type != R_PPC64_RELATIVE {
            return Err(ImageError::BadRelocType {
                index,
                offset,
                r_type,
            });
        }
        if offset < start || offset.checked_add(8).is_none_or(|e| e > end) {
            return Err(ImageError::RelocOutsideFilePart {
                index,
                offset,
                start,
                end,
            });
        }
    }
    Ok(count)
}

/// `.dynamic` agrees with `.rela.dyn` and declares no other relocations; whether it exists.
fn check_dynamic(
    file: &File<'_>,
    sections: &[Section],
    rela: Option<&Section>,
) -> Result<bool, ImageError> {
    let Some(dynamic) = sections.iter().find(|s| s.sh_type == SHT_DYNAMIC) else {
        return Ok(false);
    };
    let table = file.bytes(dynamic.offset, dynamic.size, || ".dynamic".to_string())?;
    let (mut dt_rela, mut dt_relasz, mut dt_relaent) = (None, None, None);
    for at in (0..table.len() / DYN_SIZE as usize).map(|i| i * DYN_SIZE as usize) {
        let (tag, value) = (le(table, at, 8), le(table, at + 8, 8));
        match tag {
            DT_NULL => break,
            DT_RELA => dt_rela = Some(value),
            DT_RELASZ => dt_relasz = Some(value),
            DT_RELAENT => dt_relaent = Some(value),
            DT_REL | DT_RELR | DT_JMPREL => {
                let tag = match tag {
                    DT_REL => "DT_REL",
                    DT_RELR => "DT_RELR",
                    _ => "DT_JMPREL",
                };
                return Err(ImageError::DynamicForeign { tag, value });
            }
            _ => {}
        }
    }
    let (addr, size) = rela.map_or((0, 0), |r| (r.addr, r.size));
    let checks = [
        ("DT_RELA", dt_rela, addr),
        ("DT_RELASZ", dt_relasz, size),
        ("DT_RELAENT", dt_relaent, RELA_ENTRY_SIZE),
    ];
    for (tag, found, expected) in checks {
        // Without relocations the linker may omit the tags; with them, DT_RELA and DT_RELASZ
        // must be there and match.
        let found = match found {
            Some(v) => v,
            None if rela.is_none() || tag == "DT_RELAENT" => continue,
            None => u64::MAX,
        };
        if found != expected {
            return Err(ImageError::DynamicMismatch {
                tag,
                found,
                expected,
            });
        }
    }
    Ok(true)
}

/// The values of the symbols entry.S uses, from the symbol table (`None` if stripped).
fn symbols(
    file: &File<'_>,
    sections: &[Section],
) -> Result<Option<[Option<u64>; SYMBOLS.len()]>, ImageError> {
    let Some(symtab) = sections.iter().find(|s| s.sh_type == SHT_SYMTAB) else {
        return Ok(None);
    };
    let table = file.bytes(symtab.offset, symtab.size, || ".symtab".to_string())?;
    let strtab = usize::try_from(symtab.link)
        .ok()
        .and_then(|i| sections.get(i))
        .ok_or(ImageError::BadLink {
            section: ".symtab",
            link: symtab.link,
        })?;
    let strings = file.bytes(strtab.offset, strtab.size, || {
        ".symtab's string table".to_string()
    })?;
    let mut values = [None; SYMBOLS.len()];
    for at in (0..table.len() / SYM_SIZE as usize).map(|i| i * SYM_SIZE as usize) {
        let name = le(table, at, 4);
        let Some(rest) = usize::try_from(name).ok().and_then(|n| strings.get(n..)) else {
            continue;
        };
        for (k, want) in SYMBOLS.iter().enumerate() {
            let w = want.as_bytes();
            if values[k].is_none() && rest.starts_with(w) && rest.get(w.len()) == Some(&0) {
                values[k] = Some(le(table, at + 8, 8));
            }
        }
    }
    Ok(Some(values))
}

const SYMBOLS: [&str; 6] = [
    "_start",
    "KERNEL_BASE",
    "__rela_dyn_start",
    "__rela_dyn_end",
    "__bss_start",
    "__bss_end",
];

/// `_start`, `KERNEL_BASE`, `__rela_dyn_*`, `__bss_*` as entry.S needs them; the .bss range.
fn check_symbols(
    values: [Option<u64>; SYMBOLS.len()],
    seg: &LoadSegment,
    rela: Option<&Section>,
) -> Result<(u64, u64), ImageError> {
    let mut v = [0u64; SYMBOLS.len()];
    for (k, value) in values.iter().enumerate() {
        v[k] = value.ok_or(ImageError::MissingSymbol { name: SYMBOLS[k] })?;
    }
    let [start, kernel_base, rela_start, rela_end, bss_start, bss_end] = v;
    let (rela_addr, rela_size) = rela.map_or((rela_start, 0), |r| (r.addr, r.size));
    let checks = [
        (
            "_start",
            start,
            seg.vaddr,
            "the entry: the segment's first byte, where kexec-tools enters",
        ),
        (
            "KERNEL_BASE",
            kernel_base,
            seg.vaddr,
            "boot/entry.S's delta is where _start runs minus KERNEL_BASE",
        ),
        (
            "__rela_dyn_start",
            rela_start,
            rela_addr,
            "boot/entry.S applies [__rela_dyn_start, __rela_dyn_end); .rela.dyn starts here",
        ),
        (
            "__rela_dyn_end",
            rela_end,
            rela_addr.wrapping_add(rela_size),
            "boot/entry.S applies [__rela_dyn_start, __rela_dyn_end); .rela.dyn ends here",
        ),
    ];
    for (name, value, expected, what) in checks {
        if value != expected {
            return Err(ImageError::SymbolMismatch {
                name,
                value,
                expected,
                what,
            });
        }
    }
    let bss = |why| {
        Err(ImageError::Bss {
            start: bss_start,
            end: bss_end,
            why,
        })
    };
    if !bss_start.is_multiple_of(8) || !bss_end.is_multiple_of(8) {
        return bss("not 8-byte aligned at both ends, as boot/entry.S's 8-byte clear needs");
    }
    if bss_start > bss_end {
        return bss("starts after it ends");
    }
    if bss_start < seg.vaddr + seg.filesz {
        return bss(
            "starts inside the segment's file-backed part: the clear would erase loaded \
             (and relocated) data",
        );
    }
    if bss_end > seg.vaddr + seg.memsz {
        return bss(
            "ends past the segment's memory: the clear would run into memory the loader \
             never reserved",
        );
    }
    Ok((bss_start, bss_end))
}

/// Check a kernel image (the bytes of its ELF file) for everything the module documentation
/// lists; the facts to print, or the first problem found.
pub fn check_kernel_image(elf: &[u8]) -> Result<ImageFacts, ImageError> {
    let file = File { data: elf };
    let h = header(&file)?;
    let phdrs = program_headers(&file, &h)?;
    let segment = load_segment(&file, &h, &phdrs)?;
    let sections = sections(&file, &h)?;
    let max_section_align = check_sections(&sections, &segment)?;
    let rela = rela_dyn(&sections)?;
    let relocations = match rela {
        Some(r) => check_relocations(&file, r, &segment)?,
        None => 0,
    };
    let dynamic_checked = check_dynamic(&file, &sections, rela)?;
    let bss = match symbols(&file, &sections)? {
        Some(values) => Some(check_symbols(values, &segment, rela)?),
        None => None,
    };
    Ok(ImageFacts {
        entry: h.e_entry,
        relocations,
        rela_dyn: rela.map(|r| RelaTable {
            addr: r.addr,
            file_offset: r.offset,
            size: r.size,
        }),
        program_headers: phdrs.len(),
        load_segments: 1,
        segment,
        sections: sections.len(),
        max_section_align,
        dynamic_checked,
        symbols_checked: bss.is_some(),
        bss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Link base of the synthetic images, the kernel's.
    const V: u64 = 0xc000_0000_2000_0000;
    const RELOCS: usize = 4;
    // Section indices.
    const DATA: usize = 2;
    const RELA: usize = 3;
    const BSS: usize = 5;
    const SYMTAB: usize = 6;
    // Symbol indices.
    const SYM_KERNEL_BASE: usize = 2;
    const SYM_RELA_END: usize = 4;
    const SYM_BSS_START: usize = 5;
    const SYM_BSS_END: usize = 6;

    /// A minimal image laid out like the kernel (linker.ld): the ELF header page, then one
    /// PT_LOAD at file offset 0x1000 / address V holding .text (0x100), .data (0x40),
    /// .rela.dyn (4 RELATIVE entries into .data), .dynamic, then .bss (NOBITS, V+0x1000, 4 KiB);
    /// after the segment .symtab, .strtab, .shstrtab and the section headers. Room for a second
    /// program header is left zeroed at 0x78.
    struct Image {
        bytes: Vec<u8>,
        rela: usize,
        dynamic: usize,
        symtab: usize,
        shdrs: usize,
    }

    impl Image {
        fn put(&mut self, at: usize, n: usize, v: u64) {
            for i in 0..n {
                self.bytes[at + i] = (v >> (8 * i)) as u8;
            }
        }
        fn get(&self, at: usize, n: usize) -> u64 {
            le(&self.bytes, at, n)
        }
        /// File offset of a field of program header `i`.
        fn ph(&self, i: usize, field: usize) -> usize {
            64 + i * 56 + field
        }
        /// File offset of a field of section header `i`.
        fn sh(&self, i: usize, field: usize) -> usize {
            self.shdrs + i * 64 + field
        }
        /// File offset of symbol `k`'s value.
        fn sym_value(&self, k: usize) -> usize {
            self.symtab + k * 24 + 8
        }
        fn check(&self) -> Result<ImageFacts, ImageError> {
            check_kernel_image(&self.bytes)
        }
        fn err(&self) -> ImageError {
            match self.check() {
                Ok(facts) => panic!("expected an error, the image passed: {facts}"),
                Err(e) => e,
            }
        }
    }

    fn push_str(table: &mut Vec<u8>, s: &str) -> u64 {
        let at = table.len() as u64;
        table.extend_from_slice(s.as_bytes());
        table.push(0);
        at
    }

    fn build() -> Image {
        let mut b = vec![0u8; 0x1000];
        let w = |b: &mut Vec<u8>, v: u64, n: usize| b.extend_from_slice(&v.to_le_bytes()[..n]);
        // .text: nops.
        for _ in 0..0x40 {
            w(&mut b, 0x6000_0000, 4);
        }
        // .data: 8 doublewords, the relocation targets.
        b.resize(0x1140, 0);
        let rela = b.len();
        for i in 0..RELOCS as u64 {
            w(&mut b, V + 0x100 + 8 * i, 8);
            w(&mut b, u64::from(R_PPC64_RELATIVE), 8);
            w(&mut b, V + 0x10 * i, 8);
        }
        let dynamic = b.len();
        for (tag, value) in [
            (DT_RELA, V + 0x140),
            (DT_RELASZ, RELOCS as u64 * 24),
            (DT_RELAENT, 24),
            (0x6fff_fff9, RELOCS as u64),
            (DT_NULL, 0),
        ] {
            w(&mut b, tag, 8);
            w(&mut b, value, 8);
        }
        let file_end = b.len();
        assert_eq!(file_end, 0x11f0);

        let mut strtab = vec![0u8];
        let symtab = b.len();
        b.extend_from_slice(&[0; 24]);
        for (name, value, shndx) in [
            ("_start", V, 1u64),
            ("KERNEL_BASE", V, 0xfff1),
            ("__rela_dyn_start", V + 0x140, 3),
            ("__rela_dyn_end", V + 0x1a0, 3),
            ("__bss_start", V + 0x1000, 5),
            ("__bss_end", V + 0x2000, 5),
        ] {
            let name = push_str(&mut strtab, name);
            w(&mut b, name, 4);
            w(&mut b, 0x10, 1); // STB_GLOBAL, STT_NOTYPE
            w(&mut b, 0, 1);
            w(&mut b, shndx, 2);
            w(&mut b, value, 8);
            w(&mut b, 0, 8);
        }
        let symtab_size = b.len() - symtab;
        let strtab_at = b.len();
        b.extend_from_slice(&strtab);

        let mut shstr = vec![0u8];
        let names: Vec<u64> = [
            ".text",
            ".data",
            ".rela.dyn",
            ".dynamic",
            ".bss",
            ".symtab",
            ".strtab",
            ".shstrtab",
        ]
        .iter()
        .map(|n| push_str(&mut shstr, n))
        .collect();
        let shstr_at = b.len();
        b.extend_from_slice(&shstr);
        b.resize(b.len().next_multiple_of(8), 0);

        let shdrs = b.len();
        let o = |x: usize| x as u64;
        // name, type, flags, addr, offset, size, link, align, entsize
        let headers = [
            (0, 0, 0, 0, 0, 0, 0, 0, 0),
            (names[0], 1, 6, V, 0x1000, 0x100, 0, 32, 0),
            (names[1], 1, 3, V + 0x100, 0x1100, 0x40, 0, 8, 0),
            (names[2], 4, 2, V + 0x140, o(rela), 0x60, 0, 8, 24),
            (names[3], 6, 3, V + 0x1a0, o(dynamic), 0x50, 7, 8, 16),
            (
                names[4],
                8,
                3,
                V + 0x1000,
                o(file_end),
                0x1000,
                0,
                0x1000,
                0,
            ),
            (names[5], 2, 0, 0, o(symtab), o(symtab_size), 7, 8, 24),
            (names[6], 3, 0, 0, o(strtab_at), o(strtab.len()), 0, 1, 0),
            (names[7], 3, 0, 0, o(shstr_at), o(shstr.len()), 0, 1, 0),
        ];
        for (name, ty, flags, addr, offset, size, link, align, entsize) in headers {
            w(&mut b, name, 4);
            w(&mut b, ty, 4);
            w(&mut b, flags, 8);
            w(&mut b, addr, 8);
            w(&mut b, offset, 8);
            w(&mut b, size, 8);
            w(&mut b, link, 4);
            w(&mut b, 0, 4);
            w(&mut b, align, 8);
            w(&mut b, entsize, 8);
        }

        let mut img = Image {
            bytes: b,
            rela,
            dynamic,
            symtab,
            shdrs,
        };
        img.bytes[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        for (at, n, v) in [
            (16, 2, ET_DYN),
            (18, 2, EM_PPC64),
            (20, 4, 1),
            (24, 8, V),
            (32, 8, 64),
            (40, 8, o(shdrs)),
            (48, 4, 2),
            (52, 2, 64),
            (54, 2, 56),
            (56, 2, 1),
            (58, 2, 64),
            (60, 2, headers.len() as u64),
            (62, 2, 8),
        ] {
            img.put(at, n, v);
        }
        for (field, n, v) in [
            (0, 4, u64::from(PT_LOAD)),
            (4, 4, 7),
            (8, 8, 0x1000),
            (16, 8, V),
            (24, 8, 0x2000_0000),
            (32, 8, o(file_end) - 0x1000),
            (40, 8, 0x2000),
            (48, 8, 0x1000),
        ] {
            let at = img.ph(0, field);
            img.put(at, n, v);
        }
        img
    }

    #[test]
    fn clean_image_passes() {
        let facts = build().check().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(facts.relocations, RELOCS);
        assert_eq!(facts.load_segments, 1);
        assert_eq!(facts.program_headers, 1);
        assert_eq!(facts.entry, V);
        assert_eq!(facts.segment.offset, 0x1000);
        assert_eq!(facts.segment.filesz, 0x1f0);
        assert_eq!(facts.segment.memsz, 0x2000);
        assert_eq!(facts.segment.align, 0x1000);
        assert_eq!(facts.max_section_align, 0x1000);
        assert_eq!(
            facts.rela_dyn,
            Some(RelaTable {
                addr: V + 0x140,
                file_offset: 0x1140,
                size: 0x60
            })
        );
        assert!(facts.dynamic_checked && facts.symbols_checked);
        assert_eq!(facts.bss, Some((V + 0x1000, V + 0x2000)));
        let shown = facts.to_string();
        assert!(
            shown.starts_with("4 relocations, all R_PPC64_RELATIVE"),
            "{shown}"
        );
        assert!(shown.contains("1 PT_LOAD (program headers: 1)"), "{shown}");
    }

    #[test]
    fn a_planted_addr64_relocation_is_named() {
        let mut img = build();
        let at = img.rela + 2 * 24 + 8;
        img.put(at, 8, (5 << 32) | 38); // symbol 5, R_PPC64_ADDR64
        let e = img.err();
        assert_eq!(
            e,
            ImageError::BadRelocType {
                index: 2,
                offset: V + 0x110,
                r_type: 38
            }
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "relocation 2 at offset 0xc000000020000110 has type 38 (R_PPC64_ADDR64); \
                 boot/entry.S applies only R_PPC64_RELATIVE (22)"
            ),
            "{msg}"
        );
    }

    #[test]
    fn an_unnamed_relocation_type_is_still_reported() {
        let mut img = build();
        let at = img.rela + 8;
        img.put(at, 4, 199);
        let msg = img.err().to_string();
        assert!(
            msg.starts_with("relocation 0 at offset 0xc000000020000100 has type 199; "),
            "{msg}"
        );
        // Only the low 32 bits of r_info are the type (entry.S: clrldi 6, 6, 32).
        let mut img = build();
        let at = img.rela + 8;
        img.put(at, 8, (7 << 32) | u64::from(R_PPC64_RELATIVE));
        assert!(img.check().is_ok());
    }

    #[test]
    fn relocations_must_write_inside_the_file_backed_part() {
        // Into .bss (cleared after relocation), before the segment, straddling its file end.
        for target in [V + 0x1000, V - 8, V + 0x1f0 - 4, u64::MAX - 3] {
            let mut img = build();
            let at = img.rela + 24;
            img.put(at, 8, target);
            assert_eq!(
                img.err(),
                ImageError::RelocOutsideFilePart {
                    index: 1,
                    offset: target,
                    start: V,
                    end: V + 0x1f0
                },
                "target {target:#x}"
            );
        }
        let mut img = build();
        let at = img.rela + 24;
        img.put(at, 8, V + 0x1f0 - 8); // the last doubleword of the file part is fine
        assert!(img.check().is_ok());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let img = build();
        for len in 0..img.bytes.len() {
            match check_kernel_image(&img.bytes[..len]) {
                Err(ImageError::Truncated { .. }) => {}
                other => panic!("truncated to {len:#x} bytes: {other:?}"),
            }
        }
        assert!(matches!(
            check_kernel_image(&[]),
            Err(ImageError::Truncated { .. })
        ));
    }

    /// A small xorshift generator: reproducible garbage without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for len in [0, 1, 4, 63, 64, 65, 200, 0x1000, 0x3000] {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let e = check_kernel_image(&bytes).expect_err("random bytes passed");
            assert!(!e.to_string().is_empty());
        }
        // Random bytes behind a valid ELF identification.
        let clean = build();
        for _ in 0..200 {
            let mut bytes: Vec<u8> = (0..clean.bytes.len()).map(|_| rng.next() as u8).collect();
            bytes[..64].copy_from_slice(&clean.bytes[..64]);
            let _ = check_kernel_image(&bytes).map_err(|e| e.to_string());
        }
        // The clean image with a few random bytes changed, and with fields set to extremes.
        for _ in 0..5000 {
            let mut img = build();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() % img.bytes.len() as u64) as usize;
                img.bytes[at] = rng.next() as u8;
            }
            let _ = img.check().map_err(|e| e.to_string());
        }
        let clean = build();
        let mut fields: Vec<(usize, usize)> = vec![(32, 8), (40, 8), (56, 2), (60, 2), (62, 2)];
        for f in [8, 16, 32, 40, 48] {
            fields.push((clean.ph(0, f), 8));
        }
        for i in 0..9 {
            for f in [0, 24, 32, 40, 48, 56] {
                fields.push((clean.sh(i, f), if f == 0 || f == 40 { 4 } else { 8 }));
            }
        }
        for (at, n) in fields {
            for v in [0, 1, 0x7fff_ffff, u64::MAX, u64::MAX - 0x1000] {
                let mut img = build();
                img.put(at, n, v);
                let _ = img.check().map_err(|e| e.to_string());
            }
        }
    }

    #[test]
    fn headers_that_are_not_a_ppc64le_static_pie_fail() {
        for (at, n, v, field) in [
            (0, 1, 0x7e, "the magic (bytes 0..4, little-endian)"),
            (4, 1, 1, "EI_CLASS"),
            (5, 1, 2, "EI_DATA"),
            (16, 2, 2, "e_type"),
            (18, 2, 20, "e_machine"),
            (48, 4, 1, "e_flags"),
            (54, 2, 32, "e_phentsize"),
            (56, 2, 0, "e_phnum"),
        ] {
            let mut img = build();
            img.put(at, n, v);
            match img.err() {
                ImageError::Header { field: f, .. } => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn segment_alignment_violations_fail() {
        let mut img = build();
        let (vaddr, entry) = (img.ph(0, 16), 24);
        img.put(vaddr, 8, V + 0x10);
        img.put(entry, 8, V + 0x10);
        let e = img.err();
        assert_eq!(
            e,
            ImageError::SegmentMisaligned {
                field: "p_vaddr",
                value: V + 0x10
            }
        );
        assert!(e.to_string().contains("not a multiple of 0x1000"), "{e}");

        let mut img = build();
        let at = img.ph(0, 8);
        img.put(at, 8, 0x1008);
        assert_eq!(
            img.err(),
            ImageError::SegmentMisaligned {
                field: "p_offset",
                value: 0x1008
            }
        );

        // 64 KiB (ld's default ppc64 max-page-size) and a non-power of two.
        for p_align in [0x10000, 0x1800] {
            let mut img = build();
            let at = img.ph(0, 48);
            img.put(at, 8, p_align);
            assert_eq!(img.err(), ImageError::SegmentAlign { p_align });
        }
        // Smaller powers of two are fine (the loaders give 4 KiB anyway).
        let mut img = build();
        let at = img.ph(0, 48);
        img.put(at, 8, 8);
        assert!(img.check().is_ok());

        let mut img = build();
        let at = img.sh(BSS, 48);
        img.put(at, 8, 0x10000);
        assert_eq!(
            img.err(),
            ImageError::SectionAlign {
                name: ".bss".into(),
                align: 0x10000
            }
        );
    }

    #[test]
    fn the_segment_must_be_one_load_entered_at_its_first_byte() {
        let clean = build();
        let ph0: Vec<u8> = clean.bytes[64..64 + 56].to_vec();

        let mut img = build();
        img.put(56, 2, 2);
        img.bytes[120..176].copy_from_slice(&ph0);
        assert_eq!(img.err(), ImageError::LoadSegments { count: 2 });

        let mut img = build();
        img.put(56, 2, 2);
        img.bytes[120..176].copy_from_slice(&ph0);
        img.put(64, 4, 4); // program header 0 becomes PT_NOTE
        assert_eq!(img.err(), ImageError::FirstHeaderNotLoad { p_type: 4 });

        let mut img = build();
        img.put(56, 2, 2);
        img.put(120, 4, u64::from(PT_INTERP));
        assert_eq!(img.err(), ImageError::Interpreter { index: 1 });

        let mut img = build();
        img.put(24, 8, V + 4);
        assert_eq!(
            img.err(),
            ImageError::EntryNotSegmentStart {
                entry: V + 4,
                vaddr: V
            }
        );

        let mut img = build();
        let at = img.ph(0, 8);
        img.put(at, 8, 0);
        assert_eq!(img.err(), ImageError::EntryAtFileOffsetZero);

        let mut img = build();
        let at = img.ph(0, 40);
        img.put(at, 8, 0x100);
        assert_eq!(
            img.err(),
            ImageError::FileszOverMemsz {
                filesz: 0x1f0,
                memsz: 0x100
            }
        );
    }

    #[test]
    fn sections_must_sit_in_the_segment_as_loaded() {
        let mut img = build();
        let at = img.sh(DATA, 16);
        img.put(at, 8, V + 0x1c0);
        assert!(matches!(
            img.err(),
            ImageError::SectionOutsideSegment { ref name, file_backed: true, .. } if name == ".data"
        ));

        let mut img = build();
        let at = img.sh(BSS, 32);
        img.put(at, 8, 0x1001);
        assert!(matches!(
            img.err(),
            ImageError::SectionOutsideSegment { ref name, file_backed: false, .. } if name == ".bss"
        ));

        let mut img = build();
        let at = img.sh(DATA, 24);
        img.put(at, 8, 0x1108);
        assert_eq!(
            img.err(),
            ImageError::SectionNotCongruent {
                name: ".data".into(),
                addr: V + 0x100,
                offset: 0x1108,
                expected_offset: 0x1100
            }
        );

        let mut img = build();
        let at = img.sh(RELA, 56);
        img.put(at, 8, 16);
        assert!(matches!(
            img.err(),
            ImageError::SectionEntsize {
                entsize: 16,
                expected: 24,
                ..
            }
        ));

        let mut img = build();
        img.put(60, 2, 0);
        assert_eq!(img.err(), ImageError::NoSectionHeaders);
    }

    #[test]
    fn relocations_entry_s_does_not_apply_fail() {
        // An allocated SHT_RELR section (-z pack-relative-relocs).
        let mut img = build();
        let at = img.sh(DATA, 4);
        img.put(at, 4, u64::from(SHT_RELR));
        let e = img.err();
        assert_eq!(
            e,
            ImageError::ForeignRelocations {
                name: ".data".into(),
                sh_type: SHT_RELR
            }
        );
        assert!(e.to_string().contains("pack-relative-relocs"), "{e}");

        let mut img = build();
        let at = img.sh(RELA, 32);
        img.put(at, 8, 0x50);
        assert_eq!(img.err(), ImageError::RelaSize { size: 0x50 });

        // .dynamic: a DT_RELR table, a size that disagrees with .rela.dyn.
        let mut img = build();
        let at = img.dynamic + 3 * 16;
        img.put(at, 8, DT_RELR);
        assert_eq!(
            img.err(),
            ImageError::DynamicForeign {
                tag: "DT_RELR",
                value: RELOCS as u64
            }
        );
        let mut img = build();
        let at = img.dynamic + 16 + 8;
        img.put(at, 8, 0x48);
        assert_eq!(
            img.err(),
            ImageError::DynamicMismatch {
                tag: "DT_RELASZ",
                found: 0x48,
                expected: 0x60
            }
        );
    }

    #[test]
    fn symbols_must_match_what_entry_s_uses() {
        let mut img = build();
        let at = img.sym_value(SYM_RELA_END);
        img.put(at, 8, V + 0x1a0 + 24);
        assert!(matches!(
            img.err(),
            ImageError::SymbolMismatch {
                name: "__rela_dyn_end",
                ..
            }
        ));

        let mut img = build();
        let at = img.sym_value(SYM_KERNEL_BASE);
        img.put(at, 8, V + 0x1000);
        assert!(matches!(
            img.err(),
            ImageError::SymbolMismatch {
                name: "KERNEL_BASE",
                ..
            }
        ));

        // __bss_end's name now reads "bss_end".
        let mut img = build();
        let at = img.symtab + SYM_BSS_END * 24;
        let name = img.get(at, 4);
        img.put(at, 4, name + 2);
        assert_eq!(img.err(), ImageError::MissingSymbol { name: "__bss_end" });

        for (k, value, why) in [
            (SYM_BSS_START, V + 0x100, "file-backed"),
            (SYM_BSS_END, V + 0x1ffc, "8-byte aligned"),
            (SYM_BSS_END, V + 0x3000, "past the segment's memory"),
            (SYM_BSS_START, V + 0x2008, "starts after it ends"),
        ] {
            let mut img = build();
            let at = img.sym_value(k);
            img.put(at, 8, value);
            let e = img.err();
            assert!(matches!(e, ImageError::Bss { .. }), "{e:?}");
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn a_stripped_image_and_one_without_relocations_pass() {
        let mut img = build();
        let at = img.sh(SYMTAB, 4);
        img.put(at, 4, 1); // .symtab becomes an anonymous PROGBITS section
        let facts = img.check().unwrap_or_else(|e| panic!("{e}"));
        assert!(!facts.symbols_checked);
        assert_eq!(facts.bss, None);
        assert!(facts.to_string().contains("not checked"));

        // No relocations: .rela.dyn empty, DT_RELASZ 0, __rela_dyn_end = __rela_dyn_start.
        let mut img = build();
        let (size, dt_relasz, end) = (img.sh(RELA, 32), img.dynamic + 16 + 8, img.sym_value(4));
        img.put(size, 8, 0);
        img.put(dt_relasz, 8, 0);
        img.put(end, 8, V + 0x140);
        let facts = img.check().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(facts.relocations, 0);
    }
}
