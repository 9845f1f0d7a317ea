//! Fuzzes the TCE hypercall dispatcher with arbitrary arguments and guest memory contents.
//!
//! Run (from the repository root):
//!   cargo install cargo-fuzz --locked
//!   cd fuzz && cargo +nightly-2026-05-20 fuzz run hcall_dispatch corpus/hcall_dispatch -- -max_total_time=60
//!
//! The harness is `p9iommu::hcall::fuzz::run_one`; `cargo test --test hcall_fuzz_corpus`
//! replays `corpus/hcall_dispatch/` through it. Add any crashing input to that folder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p9iommu::hcall::fuzz::run_one(data);
});
