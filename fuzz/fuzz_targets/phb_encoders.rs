//! Fuzzes the PHB4/IODA3 encoders (TVE, TCE_KILL, IODA_ADDR, DMA window parameters) and the TCE
//! table geometry against a model of the IODA3 fields (`p9iommu::phb::fuzz`).
//!
//!   cd fuzz && cargo fuzz run phb_encoders corpus/phb_encoders
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p9iommu::phb::fuzz::run_one(data);
});
