//! Fuzzes the TCE hypercall dispatcher with arbitrary arguments and guest memory contents.
//!
//! Run (from the repository root):
//!   cargo install cargo-fuzz --locked
//!   cd fuzz && cargo fuzz run hcall_dispatch corpus/hcall_dispatch
//!
//! The harness is `p9iommu::hcall::fuzz` (one long-lived world per thread, checks after every
//! call, the full walk after the first input and every 16th: `P9IOMMU_FULL_WALK_EVERY=N`
//! changes that, 1 walks after every input); `cargo test --test fuzz_corpus` replays
//! `corpus/hcall_dispatch/` through it with the full walk after every input. Add any crashing
//! input to that folder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// Inputs between full walks: `P9IOMMU_FULL_WALK_EVERY`, 16 if unset.
fn full_walk_every() -> u64 {
    static N: OnceLock<u64> = OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("P9IOMMU_FULL_WALK_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16)
    })
}

fuzz_target!(|data: &[u8]| {
    p9iommu::hcall::fuzz::run_one_with(data, full_walk_every());
});
