//! Relinks the kernel when the linker script or boot assembly change, passes the script to the
//! linker for the ppc64le kernel only (host builds are untouched), and, for the kernel, builds
//! the test guest (`guest/`, a crate of its own) so that the kernel can embed it.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=boot");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_os != "none" || target_arch != "powerpc64" {
        return;
    }
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!(
        "cargo:rustc-link-arg-bin=kernel=-T{}/linker.ld",
        dir.display()
    );
    println!("cargo:rustc-link-arg-bin=kernel=--no-dynamic-linker");
    println!("cargo:rustc-link-arg-bin=kernel=-zmax-page-size=4096");
    build_guest(&dir);
}

/// `cargo build` of the guest crate for the kernel's target, in a target directory of its own
/// (the outer build holds the lock on ours); its ELF path goes to the kernel as `P9_GUEST_ELF`.
fn build_guest(dir: &std::path::Path) {
    let guest = dir.join("guest");
    for f in ["Cargo.toml", "link.ld", "src"] {
        println!("cargo:rerun-if-changed={}", guest.join(f).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("src/hv/abi.rs").display()
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out.join("guest-target");
    let spec = guest.join("ppc64le-guest.json");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&guest)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env(
            "CARGO_TARGET_PPC64LE_GUEST_RUSTFLAGS",
            format!(
                "-Clink-arg=-T{} -Clink-arg=--no-dynamic-linker",
                guest.join("link.ld").display()
            ),
        )
        .args(["build", "--release", "--quiet", "--target"])
        .arg(&spec)
        .args([
            "-Z",
            "json-target-spec",
            "-Z",
            "build-std=core,compiler_builtins",
            "-Z",
            "build-std-features=compiler-builtins-mem",
            "--target-dir",
        ])
        .arg(&target_dir)
        .status()
        .expect("run cargo for the guest");
    assert!(status.success(), "building the test guest (guest/) failed");
    let elf = target_dir.join("ppc64le-guest/release/guest");
    println!("cargo:rustc-env=P9_GUEST_ELF={}", elf.display());
}
