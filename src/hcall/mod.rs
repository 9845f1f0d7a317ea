//! The sPAPR TCE hypercalls: H_PUT_TCE, H_GET_TCE, H_STUFF_TCE, H_PUT_TCE_INDIRECT.
//!
//! A guest programs its DMA windows (each named by a LIOBN) with these calls. Each has two
//! handlers sharing one [`Guest`] state:
//! - real mode (`rm_*`, MMU off): allocates nothing (enforced by
//!   [`crate::mm::alloc_guard`]), never waits for a lock, reaches guest memory only through
//!   preregistered memory by physical address; whenever it cannot finish it returns
//!   [`HcallResult::TooHard`] having changed nothing;
//! - virtual mode (`vm_*`): may allocate and wait, and completes what real mode declined.
//!
//! [`dispatch`] takes register values (r3 = number, r4.. = arguments) and returns (r3, r4);
//! [`hcall`] is the kernel's whole path: real mode, then virtual mode on H_TOO_HARD.
//! Hardware tables are reached through [`HwTable`] and their PHB's cache through
//! [`TceInvalidate`], invalidated once per table per batch.

mod adapter;
pub mod fuzz;
mod handlers;
pub mod sim;
mod stats;
mod window;

pub use handlers::{h_get_tce, h_put_tce, h_put_tce_indirect, h_stuff_tce, MAX_INDIRECT};
pub use stats::{CallStats, HcallStats};
pub use window::{
    Attached, Guest, GuestView, HwError, HwTable, TceInvalidate, Window, WindowError, MAX_TABLES,
    MAX_WINDOWS,
};

use crate::mm::alloc_guard::RealModeScope;
use crate::mm::PageDescriptors;
use crate::tce::Be64;

/// H_GET_TCE.
pub const H_GET_TCE: u64 = 0x1C;
/// H_PUT_TCE.
pub const H_PUT_TCE: u64 = 0x20;
/// H_STUFF_TCE.
pub const H_STUFF_TCE: u64 = 0x138;
/// H_PUT_TCE_INDIRECT.
pub const H_PUT_TCE_INDIRECT: u64 = 0x13C;

/// A hypercall's outcome, as PAPR codes it in r3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i64)]
pub enum HcallResult {
    /// H_SUCCESS.
    Success = 0,
    /// H_HARDWARE: the hardware table refused.
    Hardware = -1,
    /// H_FUNCTION: not a hypercall we handle.
    Function = -2,
    /// H_PARAMETER: the guest passed something invalid.
    Parameter = -4,
    /// H_NO_MEM: virtual mode could not allocate.
    NoMem = -9,
    /// H_TOO_HARD: internal, never returned to a guest; "take the virtual-mode path".
    TooHard = 9999,
}

impl HcallResult {
    /// The register value.
    pub const fn code(self) -> i64 {
        self as i64
    }

    /// The result for a register value, if it is one of ours.
    pub const fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => HcallResult::Success,
            -1 => HcallResult::Hardware,
            -2 => HcallResult::Function,
            -4 => HcallResult::Parameter,
            -9 => HcallResult::NoMem,
            9999 => HcallResult::TooHard,
            _ => return None,
        })
    }
}

/// Which handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// MMU off: no allocation, no waiting, physical addresses only.
    Real,
    /// MMU on: may allocate and wait.
    Virtual,
}

/// How the handlers read guest memory.
pub trait MemAccess: Sync {
    /// Real mode: the 8 bytes at host physical address `pa` (inside a pinned page).
    fn phys_read_be64(&self, pa: u64) -> Be64;
    /// Virtual mode: the 8 bytes at host userspace address `ua`, if mapped.
    fn ua_read_be64(&self, ua: u64) -> Option<Be64>;
}

/// What the handlers need from the host besides the guest state.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    /// Page descriptors (references, compound and dirty flags).
    pub pages: &'a dyn PageDescriptors,
    /// Guest memory access.
    pub mem: &'a dyn MemAccess,
}

fn run(g: &Guest, env: &Env<'_>, mode: Mode, nr: u64, a: [u64; 4]) -> (HcallResult, u64) {
    match nr {
        H_PUT_TCE => (h_put_tce(g, env, mode, a[0], a[1], a[2]), 0),
        H_GET_TCE => h_get_tce(g, a[0], a[1]),
        H_STUFF_TCE => (h_stuff_tce(g, env, mode, a[0], a[1], a[2], a[3]), 0),
        H_PUT_TCE_INDIRECT => (h_put_tce_indirect(g, env, mode, a[0], a[1], a[2], a[3]), 0),
        _ => (HcallResult::Function, 0),
    }
}

/// Runs hypercall `nr` with arguments r4..r7 in `mode`; returns (r3, r4). Counts the outcome.
/// In real mode the whole call runs inside a [`RealModeScope`].
pub fn dispatch(g: &Guest, env: &Env<'_>, mode: Mode, nr: u64, args: [u64; 4]) -> (i64, u64) {
    let (r, r4) = match mode {
        Mode::Real => {
            let _rm = RealModeScope::enter();
            run(g, env, mode, nr, args)
        }
        Mode::Virtual => run(g, env, mode, nr, args),
    };
    g.stats.record(nr, mode, r);
    (r.code(), r4)
}

/// The kernel's path for one hypercall: real mode, then virtual mode if real mode declined.
pub fn hcall(g: &Guest, env: &Env<'_>, nr: u64, args: [u64; 4]) -> (i64, u64) {
    let rm = dispatch(g, env, Mode::Real, nr, args);
    if rm.0 == HcallResult::TooHard.code() {
        return dispatch(g, env, Mode::Virtual, nr, args);
    }
    rm
}

/// Real-mode H_PUT_TCE with plain arguments (returns r3).
pub fn rm_h_put_tce(g: &Guest, env: &Env<'_>, liobn: u64, ioba: u64, tce: u64) -> i64 {
    dispatch(g, env, Mode::Real, H_PUT_TCE, [liobn, ioba, tce, 0]).0
}

/// Real-mode H_GET_TCE with plain arguments (returns r3, r4).
pub fn rm_h_get_tce(g: &Guest, env: &Env<'_>, liobn: u64, ioba: u64) -> (i64, u64) {
    dispatch(g, env, Mode::Real, H_GET_TCE, [liobn, ioba, 0, 0])
}

/// Real-mode H_STUFF_TCE with plain arguments (returns r3).
pub fn rm_h_stuff_tce(g: &Guest, env: &Env<'_>, liobn: u64, ioba: u64, v: u64, n: u64) -> i64 {
    dispatch(g, env, Mode::Real, H_STUFF_TCE, [liobn, ioba, v, n]).0
}

/// Real-mode H_PUT_TCE_INDIRECT with plain arguments (returns r3).
pub fn rm_h_put_tce_indirect(
    g: &Guest,
    env: &Env<'_>,
    liobn: u64,
    ioba: u64,
    tce_list: u64,
    npages: u64,
) -> i64 {
    dispatch(
        g,
        env,
        Mode::Real,
        H_PUT_TCE_INDIRECT,
        [liobn, ioba, tce_list, npages],
    )
    .0
}

#[cfg(test)]
mod tests;
