//! Relinks the kernel when the linker script or boot assembly change, and passes the script
//! to the linker for the ppc64le kernel only (host builds are untouched).
fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=boot");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if target_os == "none" && target_arch == "powerpc64" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bin=kernel=-T{dir}/linker.ld");
        println!("cargo:rustc-link-arg-bin=kernel=--no-dynamic-linker");
        println!("cargo:rustc-link-arg-bin=kernel=-zmax-page-size=4096");
    }
}
