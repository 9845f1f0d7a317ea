//! Target-only code. `ppc64` is the only home of `asm!`, SPRs, OPAL calls, exception vectors and
//! cache-inhibited MMIO; the rest of the crate reaches it through the traits it implements.
pub mod ppc64;
