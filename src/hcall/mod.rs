//! The sPAPR TCE hypercalls: H_PUT_TCE, H_GET_TCE, H_STUFF_TCE, H_PUT_TCE_INDIRECT.
//!
//! A guest programs its DMA windows (each named by a LIOBN) with these calls. Each has one body,
//! generic over the execution mode ([`crate::mm::mode`]), sharing one [`Guest`] state:
//! - in real mode (a [`RealMode`] token: MMU off) it allocates nothing (enforced by
//!   [`crate::mm::alloc_guard`]), never waits for a lock, reaches guest memory only through
//!   preregistered memory by physical address, and whenever it cannot finish it declines with
//!   [`TooHard`] having changed nothing;
//! - in virtual mode (a [`VirtMode`] token: MMU on) it may allocate and wait, reads guest memory
//!   through its `ua` mapping, and completes what real mode declined.
//!
//! [`rm_dispatch`] and [`vm_dispatch`] take register values (r3 = number, r4.. = arguments) and
//! return what goes back in r3/r4 ([`HcallReturn`], which cannot say "too hard").
//! Hardware tables are reached through [`HwTable`] and their PHB's cache through
//! [`TceInvalidate`], invalidated once per table per batch.

mod adapter;
#[cfg(any(test, feature = "sim"))]
pub mod fuzz;
mod handlers;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod stats;
mod window;

pub use crate::mm::Mode;
pub use handlers::MAX_INDIRECT;
pub use stats::{CallStats, HcallStats};
pub use window::{
    Attached, Guest, GuestView, HwError, HwTable, KillFailed, PutError, TceInvalidate, ViewBudget,
    Window, WindowError, MAX_TABLES, MAX_WINDOWS,
};

use crate::mm::alloc_guard::RealModeScope;
use crate::mm::{ExecMode, GuestPhys, HostPhys, PageDescriptors, RealMode, TooHard, Ua, VirtMode};
use crate::tce::Be64;
use handlers::{Exit, Step};

/// H_GET_TCE.
pub const H_GET_TCE: u64 = 0x1C;
/// H_PUT_TCE.
pub const H_PUT_TCE: u64 = 0x20;
/// H_STUFF_TCE.
pub const H_STUFF_TCE: u64 = 0x138;
/// H_PUT_TCE_INDIRECT.
pub const H_PUT_TCE_INDIRECT: u64 = 0x13C;

/// H_PUT_TERM_CHAR (console output; handled by the partition code, not here).
pub const H_PUT_TERM_CHAR: u64 = 0x58;

/// A hypercall's outcome as a guest sees it in r3 (PAPR codes). Real mode's "decline" is not
/// one of them: it is [`TooHard`], which never reaches a guest.
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
}

impl HcallResult {
    /// The register value.
    pub const fn code(self) -> i64 {
        self as i64
    }

    /// The result for a register value, if it is one a guest can see from us.
    pub const fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => HcallResult::Success,
            -1 => HcallResult::Hardware,
            -2 => HcallResult::Function,
            -4 => HcallResult::Parameter,
            -9 => HcallResult::NoMem,
            _ => return None,
        })
    }

    /// The PAPR name (`H_SUCCESS`...).
    pub const fn name(self) -> &'static str {
        match self {
            HcallResult::Success => "H_SUCCESS",
            HcallResult::Hardware => "H_HARDWARE",
            HcallResult::Function => "H_FUNCTION",
            HcallResult::Parameter => "H_PARAMETER",
            HcallResult::NoMem => "H_NO_MEM",
        }
    }
}

/// What goes back to the guest: r3 and, for H_GET_TCE, r4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HcallReturn {
    /// r3.
    pub r3: HcallResult,
    /// r4 (0 unless the call returns a value).
    pub r4: u64,
}

impl HcallReturn {
    /// r3 only.
    pub const fn status(r3: HcallResult) -> Self {
        HcallReturn { r3, r4: 0 }
    }
}

/// How the handlers read guest memory. Real mode can only read by host physical address (the
/// implementation goes through the linear map); reading through a `ua` needs the MMU on, which
/// only a [`VirtMode`] token vouches for.
pub trait MemAccess: Sync {
    /// Real mode: the 8 bytes at host physical address `pa` (inside a pinned page).
    fn phys_read_be64(&self, rm: RealMode, pa: HostPhys) -> Be64;
    /// Virtual mode: the 8 bytes at `ua`, if mapped.
    ///
    /// Real mode cannot read by `ua`: a [`RealMode`] token is not a [`VirtMode`].
    /// ```compile_fail,E0308
    /// # use p9iommu::{hcall::MemAccess, mm::{RealMode, Ua}, tce::Be64};
    /// fn rm_read(mem: &dyn MemAccess, rm: RealMode, ua: Ua) -> Option<Be64> {
    ///     mem.ua_read_be64(rm, ua) // expected `VirtMode`, found `RealMode`
    /// }
    /// ```
    /// ```
    /// # use p9iommu::{hcall::MemAccess, mm::{VirtMode, Ua}, tce::Be64};
    /// fn vm_read(mem: &dyn MemAccess, v: VirtMode, ua: Ua) -> Option<Be64> {
    ///     mem.ua_read_be64(v, ua)
    /// }
    /// ```
    fn ua_read_be64(&self, v: VirtMode, ua: Ua) -> Option<Be64>;
    /// Real mode: the host physical address of guest physical `gpa`, by walking the guest's
    /// partition-scoped page table (which lives in the linear map), if the host can do that
    /// without the MMU. Used when a TCE list is not in preregistered memory; without it (the
    /// default) real mode declines such lists.
    fn rm_gpa_to_hpa(&self, rm: RealMode, gpa: GuestPhys) -> Option<HostPhys> {
        let _ = (rm, gpa);
        None
    }
}

/// What the handlers need from the host besides the guest state.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    /// Page descriptors (references, compound and dirty flags).
    pub pages: &'a dyn PageDescriptors,
    /// Guest memory access.
    pub mem: &'a dyn MemAccess,
}

fn run<M: ExecMode>(g: &Guest, env: &Env<'_>, m: M, nr: u64, a: [u64; 4]) -> Step<M, u64> {
    match nr {
        H_PUT_TCE => handlers::h_put_tce(g, m, a[0], a[1], a[2]).map(|()| 0),
        H_GET_TCE => Ok(handlers::h_get_tce(g, a[0], a[1])?),
        H_STUFF_TCE => handlers::h_stuff_tce(g, m, a[0], a[1], a[2], a[3]).map(|()| 0),
        H_PUT_TCE_INDIRECT => {
            handlers::h_put_tce_indirect(g, env, m, a[0], a[1], a[2], a[3]).map(|()| 0)
        }
        _ => Err(HcallResult::Function.into()),
    }
}

/// Runs TCE hypercall `nr` with arguments r4..r7 in mode `M`, and counts the outcome.
pub fn dispatch<M: ExecMode>(
    g: &Guest,
    env: &Env<'_>,
    m: M,
    nr: u64,
    args: [u64; 4],
) -> Result<HcallReturn, M::Decline> {
    let out = match run(g, env, m, nr, args) {
        Ok(r4) => Ok(HcallReturn {
            r3: HcallResult::Success,
            r4,
        }),
        Err(Exit::Guest(r3)) => Ok(HcallReturn::status(r3)),
        Err(Exit::Decline(d)) => Err(d),
    };
    g.stats.record(nr, M::MODE, out.as_ref().ok().map(|r| r.r3));
    out
}

/// The real-mode entry: runs inside a [`RealModeScope`], so any allocation fails loudly.
pub fn rm_dispatch(
    g: &Guest,
    env: &Env<'_>,
    rm: RealMode,
    nr: u64,
    args: [u64; 4],
) -> Result<HcallReturn, TooHard> {
    let _scope = RealModeScope::enter();
    dispatch(g, env, rm, nr, args)
}

/// The virtual-mode entry: always completes.
pub fn vm_dispatch(g: &Guest, env: &Env<'_>, v: VirtMode, nr: u64, args: [u64; 4]) -> HcallReturn {
    match dispatch(g, env, v, nr, args) {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod kill_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod walker_tests;
