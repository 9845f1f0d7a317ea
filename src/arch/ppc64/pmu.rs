//! The performance monitor, used to count instructions for benchmarks. With MMCR0 = 0 (no
//! freeze), PMC5 counts completed instructions; under QEMU TCG the count is exact.
use super::spr::{self, mfspr, mtspr};

/// Start the counters (idempotent).
pub fn enable() {
    // SAFETY: MMCR0 = 0 unfreezes the counters and enables no PMU interrupt.
    unsafe { mtspr::<{ spr::MMCR0 }>(0) };
}

/// Completed instructions (PMC5, 32 bits, wraps).
#[inline(always)]
pub fn instructions() -> u32 {
    mfspr::<{ spr::PMC5 }>() as u32
}

/// Instructions retired by `f`, minus the cost of the measurement itself.
pub fn count_instructions<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let empty = {
        let a = instructions();
        let b = instructions();
        b.wrapping_sub(a)
    };
    let a = instructions();
    let r = f();
    let b = instructions();
    (u64::from(b.wrapping_sub(a).saturating_sub(empty)), r)
}
