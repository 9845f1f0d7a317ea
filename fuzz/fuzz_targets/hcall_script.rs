//! Fuzzes the hypercall script parser (`p9iommu::hv::script`) with arbitrary bytes: `parse` and
//! `parse_bundle` never panic, every error names a statement line of its file, bundles split as
//! the `#@file` rule says, and what parses resolves sanely (`p9iommu::hv::script::fuzz`).
//!
//!   cd fuzz && cargo fuzz run hcall_script corpus/hcall_script -- -dict=hcall_script.dict
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p9iommu::hv::script::fuzz::run_one(data);
});
