//! Per-hypercall counters: real-mode completions, H_TOO_HARD fallbacks, virtual-mode
//! completions, errors by code. Atomics only: real mode updates them too.
#![forbid(unsafe_code)]

use super::{HcallResult, H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE};
use crate::mm::Mode;
use core::sync::atomic::{AtomicU64, Ordering};

/// The error codes counted, in [`CallStats::errors`] order.
pub const COUNTED_ERRORS: [HcallResult; 4] = [
    HcallResult::Hardware,
    HcallResult::Function,
    HcallResult::Parameter,
    HcallResult::NoMem,
];

/// Counters of one hypercall.
#[derive(Debug, Default)]
pub struct CallStats {
    /// Finished in real mode with H_SUCCESS.
    pub rm_done: AtomicU64,
    /// Real mode returned H_TOO_HARD.
    pub rm_too_hard: AtomicU64,
    /// Finished in virtual mode with H_SUCCESS.
    pub vm_done: AtomicU64,
    /// H_PUT_TCE_INDIRECT: lists real mode read outside preregistered memory, through the
    /// guest's page table and a page reference taken through the vmemmap walker.
    pub rm_list_walked: AtomicU64,
    /// Errors returned to the guest, by [`COUNTED_ERRORS`] order, either mode.
    pub errors: [AtomicU64; 4],
}

impl CallStats {
    /// Errors returned with `code`.
    pub fn errors_of(&self, code: HcallResult) -> u64 {
        COUNTED_ERRORS
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }
}

/// Counters of the four TCE hypercalls and of unknown numbers.
#[derive(Debug, Default)]
pub struct HcallStats {
    /// TCE kills that failed: the calls answered H_HARDWARE and kept every reference the old
    /// entries held.
    pub kill_failures: AtomicU64,
    /// H_PUT_TCE.
    pub put: CallStats,
    /// H_GET_TCE.
    pub get: CallStats,
    /// H_STUFF_TCE.
    pub stuff: CallStats,
    /// H_PUT_TCE_INDIRECT.
    pub indirect: CallStats,
    /// Any other number (H_FUNCTION).
    pub other: CallStats,
}

impl HcallStats {
    /// The counters of hypercall `nr`.
    pub fn of(&self, nr: u64) -> &CallStats {
        match nr {
            H_PUT_TCE => &self.put,
            H_GET_TCE => &self.get,
            H_STUFF_TCE => &self.stuff,
            H_PUT_TCE_INDIRECT => &self.indirect,
            _ => &self.other,
        }
    }

    /// Counts one outcome: `None` is real mode declining.
    pub(crate) fn record(&self, nr: u64, mode: Mode, r: Option<HcallResult>) {
        let s = self.of(nr);
        let c = match (r, mode) {
            (Some(HcallResult::Success), Mode::Real) => &s.rm_done,
            (Some(HcallResult::Success), Mode::Virtual) => &s.vm_done,
            (None, _) => &s.rm_too_hard,
            (Some(e), _) => match COUNTED_ERRORS.iter().position(|c| *c == e) {
                Some(i) => &s.errors[i],
                None => return,
            },
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}
