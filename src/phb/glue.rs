//! Glue to the other portable modules: the `tce` module's table as a [`DmaWindowTable`], and
//! PHB kills as the hypercall layer's [`TceInvalidate`].

use alloc::vec::Vec;

use super::dma::{kill_in_pes, Kill, PhbDma};
use super::hw::{DmaWindowTable, PeNum};
use crate::hcall::{KillFailed, TceInvalidate};
use crate::tce::{LockedMemoryBudget, TceMemory, TceTable};

impl<M: TceMemory, B: LockedMemoryBudget> DmaWindowTable for TceTable<M, B> {
    fn top_level_phys(&self) -> u64 {
        TceTable::top_level_phys(self)
    }
    fn levels(&self) -> u32 {
        TceTable::levels(self)
    }
    fn level_size(&self) -> u64 {
        TceTable::level_size(self)
    }
    fn page_shift(&self) -> u32 {
        TceTable::page_shift(self)
    }
    fn bus_offset(&self) -> u64 {
        TceTable::bus_offset(self)
    }
    fn window_size(&self) -> u64 {
        TceTable::window_size(self)
    }
}

/// The TCE kill for one hardware table: invalidates changed entries in every PE the table is
/// attached to (a table shared by PEs must be killed in all of them).
///
/// The PE list is fixed at construction: build a new one when the set of PEs sharing the
/// table changes. `invalidate` never allocates and takes no lock but the back end's kill.
pub struct TableKill<P: PhbDma> {
    phb: P,
    pes: Vec<PeNum>,
    page_shift: u32,
    bus_offset: u64,
}

impl<P: PhbDma> TableKill<P> {
    /// Kills for a table of IO page shift `page_shift` whose entry 0 is at `bus_offset`,
    /// attached to `pes` of `phb`.
    pub fn new(phb: P, pes: Vec<PeNum>, page_shift: u32, bus_offset: u64) -> Self {
        Self {
            phb,
            pes,
            page_shift,
            bus_offset,
        }
    }

    /// The kill for entries `[first, first + count)`: a page kill when it is expressible,
    /// else a PE kill (which covers it).
    pub fn kill_for(&self, first: u64, count: u64) -> Kill {
        let bus_addr = first
            .checked_shl(self.page_shift)
            .filter(|v| v >> self.page_shift == first)
            .and_then(|v| v.checked_add(self.bus_offset));
        match (bus_addr, u32::try_from(count)) {
            (Some(bus_addr), Ok(npages)) => Kill::Pages {
                pe: PeNum(0),
                bus_addr,
                page_shift: self.page_shift,
                npages,
            },
            _ => Kill::Pe(PeNum(0)),
        }
    }

    /// Runs the kill for entries `[first, first + count)`, reporting errors.
    pub fn try_invalidate(&self, first: u64, count: u64) -> Result<(), super::PhbError> {
        match kill_in_pes(&self.phb, &self.pes, self.kill_for(first, count)) {
            // An unexpressible page kill: fall back to killing the PEs.
            Err(super::PhbError::BadKill) => kill_in_pes(&self.phb, &self.pes, Kill::Pe(PeNum(0))),
            r => r,
        }
    }
}

impl<P: PhbDma + Send + Sync> TceInvalidate for TableKill<P> {
    fn invalidate(&self, _cookie: u64, first: u64, count: u64) -> Result<(), KillFailed> {
        self.try_invalidate(first, count).map_err(|_| KillFailed)
    }
}
