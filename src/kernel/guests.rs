//! Guest partitions run by the kernel: the demo's guest, the tests' guests, hypercall scripts.

/// The demo's guest (placeholder while the partition code lands).
pub fn demo() -> bool {
    crate::kprintln!("  [hcall] guest partitions: not yet");
    true
}
