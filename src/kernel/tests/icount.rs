//! Instruction counting (`arch::ppc64::icount`). The test passes with and without the
//! insn-count plugin, so no test boot depends on it: without the plugin it checks that no
//! figure is made up and that the closure still runs once; with it (`./qemu-run.sh --count
//! test icount`, and the host QEMU suite's test boot) it checks that counts are exact.
use core::cell::Cell;

use crate::arch::ppc64::icount::{count_instructions, Unavailable};
use crate::arch::ppc64::probe::nops;
use crate::kernel::testing::TestResult;
use crate::{kassert_eq, ktest};

fn counts_exactly_or_reports_unavailable() -> TestResult {
    let runs = Cell::new(0u32);
    let first = count_instructions(|| {
        runs.set(runs.get() + 1);
        7u32
    });
    kassert_eq!(runs.get(), 1, "the closure runs exactly once");
    match first {
        Err(Unavailable) => {
            // No plugin: every count says so, whatever the closure.
            kassert_eq!(count_instructions(|| ()), Err(Unavailable));
            kassert_eq!(count_instructions(nops::<100>), Err(Unavailable));
        }
        Ok((_, r)) => {
            kassert_eq!(r, 7);
            // The empty pair is calibrated out, and known instruction sequences count exactly.
            // Different figures in a row also show that the quad the plugin writes is re-read
            // on every call (no stale value from TCG or the compiler).
            kassert_eq!(count_instructions(|| ()), Ok((0, ())));
            kassert_eq!(count_instructions(nops::<100>), Ok((100, ())));
            kassert_eq!(count_instructions(nops::<1>), Ok((1, ())));
            kassert_eq!(count_instructions(nops::<1000>), Ok((1000, ())));
            kassert_eq!(count_instructions(|| ()), Ok((0, ())));
        }
    }
    Ok(())
}
ktest!(
    "icount.counts_exactly_or_reports_unavailable",
    counts_exactly_or_reports_unavailable
);
