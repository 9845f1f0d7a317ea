//! The kernel image check (`p9iommu::harness::image`) on the real kernel: builds it with
//! `cargo kernel` (slow the first time, ~30-60 s; waits for any other cargo holding the build
//! lock), checks `target/ppc64le-kernel/release/kernel` and prints what it found. Then plants a
//! relocation of another type into a copy of the image, as a linker change could, and requires
//! the check to name it: on a machine boot/entry.S would stop there silently.

use p9iommu::harness::image::{check_kernel_image, ImageError, ImageFacts, RELA_ENTRY_SIZE};

#[path = "support/kernel_build.rs"]
mod kernel_build;
use kernel_build::{build_kernel, root};

/// The freshly built kernel's bytes.
fn kernel() -> Vec<u8> {
    build_kernel();
    let path = root().join("target/ppc64le-kernel/release/kernel");
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn check(bytes: &[u8]) -> ImageFacts {
    check_kernel_image(bytes).unwrap_or_else(|e| panic!("kernel image: {e}"))
}

#[test]
fn kernel_image_passes_the_check() {
    let facts = check(&kernel());
    println!("kernel image: {facts}");
    assert!(facts.relocations > 0, "a static PIE kernel has relocations");
    assert_eq!(facts.load_segments, 1);
    assert!(
        facts.symbols_checked && facts.dynamic_checked,
        "the release kernel keeps its symbols and .dynamic: {facts}"
    );
}

#[test]
fn a_planted_relocation_in_the_kernel_is_named() {
    let clean = kernel();
    let facts = check(&clean);
    let rela = facts.rela_dyn.expect("the kernel has .rela.dyn");
    let count = facts.relocations;
    // The middle entry and the last one: R_PPC64_ADDR64 (38) and R_PPC64_TOC (51), with a
    // symbol index in r_info's high half as a linker would write it.
    for (index, r_type, name) in [
        (count / 2, 38u32, "R_PPC64_ADDR64"),
        (count - 1, 51, "R_PPC64_TOC"),
    ] {
        let mut bytes = clean.clone();
        let entry = (rela.file_offset + index as u64 * RELA_ENTRY_SIZE) as usize;
        let offset = u64::from_le_bytes(bytes[entry..entry + 8].try_into().unwrap());
        let r_info = (1u64 << 32) | u64::from(r_type);
        bytes[entry + 8..entry + 16].copy_from_slice(&r_info.to_le_bytes());
        let e = check_kernel_image(&bytes).expect_err("a non-RELATIVE relocation passed");
        assert_eq!(
            e,
            ImageError::BadRelocType {
                index,
                offset,
                r_type
            }
        );
        let msg = e.to_string();
        let expected = format!(
            "relocation {index} at offset {offset:#x} has type {r_type} ({name}); \
             boot/entry.S applies only R_PPC64_RELATIVE (22)"
        );
        assert!(msg.starts_with(&expected), "{msg}");
        println!("planted: {msg}");
    }
}
