//! Exact instruction counts for benchmarks, from the `insn-count` QEMU TCG plugin
//! (`tools/insn-count`, loaded by `./qemu-run.sh bench` or `--count`).
//!
//! The PMU cannot give them: under QEMU 7.2 TCG, PMC5 misses whole translation blocks (see
//! ../shared/REFERENCE.md, "Measuring on QEMU TCG"). Instead the kernel executes two marker
//! no-ops around the measured code, `ori 27,27,0` (start) and `ori 28,28,0` (stop); the plugin
//! counts every instruction that starts executing strictly between them (firmware included)
//! and writes the count into a quad reserved in the instruction stream right after the stop
//! marker, which the kernel then reads. Without the plugin the quad keeps its sentinel and
//! [`count_instructions`] returns [`Unavailable`]: no figure is ever made up. On hardware the
//! markers are plain no-ops, so the benches report `unavailable` there too.
//!
//! The plugin writes the quad from the host, straight into guest RAM: that is not a guest
//! store, so QEMU's self-modifying-code detection (which would invalidate the translated
//! block, and is 30-40x slower) is not involved, and the quad is never executed (`b 1f` jumps
//! over it). The load that reads it back is an ordinary guest load, which reads RAM: the
//! value it sees changes from one call to the next (checked by `icount.*` in the in-kernel
//! tests under `./qemu-run.sh --count test icount`).
use core::arch::asm;
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

/// What the reserved quad holds when the plugin did not write a count there (never loaded, or
/// it saw the stop marker without a start marker).
const SENTINEL: u64 = u64::MAX;

/// No exact count: the kernel was not booted with the `insn-count` plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Unavailable;

impl core::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("boot with the insn-count plugin (./qemu-run.sh bench)")
    }
}

/// The start marker, `ori 27,27,0`: a no-op the plugin recognises.
///
/// Out of line, like [`stop_marker`]: a call is a boundary the compiler does not move register
/// set-up across (values live after it sit in callee-saved registers, set before the call), so
/// the only instructions between the markers are `f`'s own plus a fixed sequence (this
/// function's `blr`, the call to [`stop_marker`] and its code up to the marker), which the
/// calibration subtracts.
#[inline(never)]
fn start_marker() {
    // SAFETY: `ori 27,27,0` leaves r27 unchanged: no effect at all. The asm is not `nomem`, so
    // the compiler keeps memory accesses on their side of it.
    unsafe { asm!("ori 27, 27, 0", options(nostack, preserves_flags)) };
}

/// The stop marker and the quad the plugin fills: returns the quad's value after the marker.
///
/// Out of line: one stop marker and one quad in the whole image, and a fixed number of
/// instructions from the call to the marker, which the calibration subtracts.
#[inline(never)]
fn stop_marker() -> u64 {
    let quad: *const u64;
    // SAFETY: `ori 28,28,0` is a no-op; `b 1f` skips the data quad; `bcl 20,31,2f` is the
    // "load the next address" form (it branches to the next instruction and does not disturb
    // the return-address predictor), and only LR, declared clobbered, changes. The asm is not
    // `nomem`: memory accesses stay on their side of the marker.
    unsafe {
        asm!(
            ".p2align 4",
            "ori 28, 28, 0",        // +0: stop marker
            "b 1f",                 // +4: 0x4800000c, which the plugin checks
            ".quad {sentinel}",     // +8: the plugin writes the count here
            "1:",                   // +16
            "bcl 20, 31, 2f",       // +16: LR = +20
            "2:",
            "mflr {q}",
            "addi {q}, {q}, -12",   // +20 - 12 = +8
            q = out(reg_nonzero) quad,
            sentinel = const SENTINEL,
            out("lr") _,
            options(nostack, preserves_flags),
        )
    };
    // SAFETY: `quad` is the address of the 8-byte-aligned quad inside this function's code,
    // which is mapped and readable (real mode: RAM). Volatile: it changes behind the
    // compiler's back (the plugin writes it).
    unsafe { core::ptr::read_volatile(quad) }
}

/// The plugin's raw count for `f` (markers excluded, the call to the stop marker included).
#[inline(always)]
fn raw_count<R>(f: impl FnOnce() -> R) -> (Option<u64>, R) {
    start_marker();
    // black_box: the result is computed before the stop marker, not sunk past it.
    let r = black_box(f());
    let n = stop_marker();
    ((n != SENTINEL).then_some(n), r)
}

/// The raw count of an empty region, measured once.
static OVERHEAD: AtomicU64 = AtomicU64::new(SENTINEL);

#[inline(never)]
fn overhead() -> Result<u64, Unavailable> {
    let known = OVERHEAD.load(Ordering::Relaxed);
    if known != SENTINEL {
        return Ok(known);
    }
    let (n, ()) = raw_count(|| ());
    let n = n.ok_or(Unavailable)?;
    OVERHEAD.store(n, Ordering::Relaxed);
    Ok(n)
}

/// Runs `f` once and returns the exact number of instructions it executed, with its result.
///
/// Counted: every instruction that starts executing on this CPU while `f` runs, in any mode,
/// firmware (OPAL calls) included, plus the few instructions the compiler puts around the call
/// (storing the result): the cost of an empty start/stop pair is subtracted, so `|| ()` counts
/// 0. Under QEMU TCG with the plugin, counts are exact and repeat run to run.
///
/// Without the plugin (or on hardware) `f` still runs once, and the result is
/// `Err(Unavailable)`: callers must not print a figure then.
pub fn count_instructions<R>(f: impl FnOnce() -> R) -> Result<(u64, R), Unavailable> {
    let (n, r) = raw_count(f);
    // Calibrated after the region, so that nothing of it is live (in registers) inside.
    let overhead = overhead()?;
    let n = n.ok_or(Unavailable)?;
    Ok((n.saturating_sub(overhead), r))
}
