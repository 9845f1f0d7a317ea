//! The kernel binary: a thin shell over the library. All the work is in `p9iommu::kernel`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
extern crate p9iommu;

/// On the host this binary only explains itself: the kernel is built for ppc64le.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "The kernel runs on ppc64le under QEMU: use ./qemu-run.sh (or `cargo kernel` to build it)."
    );
    std::process::exit(2);
}
