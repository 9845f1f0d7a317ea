//! [`HwTable`] for the `tce` module's [`TceTable`]: the hypercalls' view of a hardware table.
//!
//! The hypercalls need "read both views" and "exchange both views" per entry or run of
//! entries; `TceTable` offers those (one walk per view and leaf), and this adapter maps its
//! errors to the hypercalls' ([`HwError`], [`PutError`]). Indices are table entry indices.
#![forbid(unsafe_code)]

use super::window::{HwError, HwTable, PutError};
use crate::tce::{LockedMemoryBudget, MayAlloc, Tce, TceError, TceMemory, TceTable};

fn hw_err(e: TceError) -> HwError {
    match e {
        TceError::WouldAllocate => HwError::WouldAllocate,
        TceError::AllocFailed | TceError::OverBudget => HwError::NoMem,
        _ => HwError::Refused,
    }
}

impl<M, B> HwTable for TceTable<M, B>
where
    M: TceMemory + Send + Sync,
    B: LockedMemoryBudget + Send + Sync,
{
    fn page_shift(&self) -> u32 {
        TceTable::page_shift(self)
    }

    fn bus_offset(&self) -> u64 {
        TceTable::bus_offset(self)
    }

    fn entries(&self) -> u64 {
        TceTable::entries(self)
    }

    fn prepare(&self, first: u64, count: u64, alloc: bool) -> Result<(), HwError> {
        let end = first.checked_add(count).ok_or(HwError::Refused)?;
        let alloc = if alloc { MayAlloc::Yes } else { MayAlloc::No };
        TceTable::prepare(self, first..end, alloc).map_err(hw_err)
    }

    fn read(&self, index: u64) -> (u64, u64) {
        let tce = self.get(index).map_or(0, Tce::bits);
        let owner = self.owner_get(index).unwrap_or(0);
        (tce, owner)
    }

    fn exchange_run(
        &self,
        first: u64,
        news: &[(u64, u64)],
        olds: &mut [(u64, u64)],
    ) -> Result<(), (usize, HwError)> {
        TceTable::exchange_run(self, first, news, olds).map_err(|(i, e)| (i, hw_err(e)))
    }

    fn read_run(&self, first: u64, out: &mut [(u64, u64)]) {
        TceTable::read_run(self, first, out)
    }

    fn holds_entries(&self, first: u64, count: u64) -> bool {
        // Only the leaves that exist can hold entries: proportional to what is allocated,
        // not to the window.
        TceTable::holds_entries(self, first..first.saturating_add(count))
    }

    fn prepare_exchange(
        &self,
        index: u64,
        tce: u64,
        owner: u64,
        alloc: bool,
    ) -> Result<(u64, u64), PutError> {
        let alloc = if alloc { MayAlloc::Yes } else { MayAlloc::No };
        TceTable::prepare_exchange(self, index, tce, owner, alloc).map_err(|e| match e {
            TceError::Misaligned => PutError::Exchange(hw_err(e)),
            _ => PutError::Prepare(hw_err(e)),
        })
    }

    fn exchange(&self, index: u64, tce: u64, owner: u64) -> Result<(u64, u64), HwError> {
        // Owner first (whoever sees the hardware entry can find what it maps from), both
        // leaves found before either changes.
        TceTable::exchange_both(self, index, tce, owner).map_err(hw_err)
    }
}
