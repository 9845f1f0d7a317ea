//! Building the kernel for host tests that boot or inspect it: once per test binary.
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The package's root folder.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the kernel (`cargo kernel`) once per test binary; panics with cargo's output if the
/// build fails.
pub fn build_kernel() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = Command::new("cargo")
            .arg("kernel")
            .current_dir(root())
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`cargo kernel` failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
}
