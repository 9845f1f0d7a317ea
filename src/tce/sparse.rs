//! The seed's sparse case: RAM at bus address 0 and device memory far above it, both in one
//! multi-level 64K-page window. Only the levels on mapped paths get allocated; a flat table
//! reaching the device memory would need gigabytes.

use super::budget::LockedVm;
use super::entry::TcePerm;
use super::geometry::TceGeometry;
use super::memory::TceMemory;
use super::table::{MayAlloc, TceError, TceTable};

/// RAM mapped at bus address 0.
pub const SPARSE_RAM_BYTES: u64 = 16 << 30;
/// Bus address of the device-memory window (an NVLink2 GPU's RAM in the seed).
pub const SPARSE_DEVICE_BUS: u64 = 0x2440_0000_0000;
/// Size of the device-memory window (of which [`SPARSE_DEVICE_BYTES`] are populated).
pub const SPARSE_DEVICE_WINDOW: u64 = 128 << 30;
/// Device memory actually mapped.
pub const SPARSE_DEVICE_BYTES: u64 = 16 << 30;
/// IOMMU page shift of the demo window (64K).
pub const SPARSE_PAGE_SHIFT: u32 = 16;
/// Levels of the demo window.
pub const SPARSE_LEVELS: u32 = 3;

/// What the sparse demo measured (bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SparseFigures {
    /// Window size: the smallest power of two reaching the end of the device window.
    pub window_size: u64,
    /// Bytes of one level.
    pub level_size: u64,
    /// Levels allocated in the hardware view after mapping (`tce.sparse.allocated_bytes`).
    pub allocated_bytes: u64,
    /// The same for the owner view.
    pub owner_allocated_bytes: u64,
    /// Touched leaf entries x 8 plus the indirect levels on their paths: the least any
    /// on-demand table of this geometry can allocate per view.
    pub touched_bytes: u64,
    /// A flat table reaching the end of the device window, the seed's arithmetic
    /// (`tce.sparse.flat_bytes`).
    pub flat_bytes: u64,
    /// A flat table for the whole power-of-two window.
    pub flat_window_bytes: u64,
    /// Charged to the locked-memory budget (both views, fully allocated).
    pub charged_bytes: u64,
}

/// Builds the seed's window on `mem`, maps RAM and device memory in both views, measures,
/// and frees it.
pub fn sparse_demo<M: TceMemory>(mem: M) -> Result<SparseFigures, TceError> {
    let end = SPARSE_DEVICE_BUS + SPARSE_DEVICE_WINDOW;
    let window_size = end.next_power_of_two();
    // A constant, valid geometry (tested); were it ever not, report it as not fitting.
    let geo = TceGeometry::new(0, SPARSE_PAGE_SHIFT, window_size, SPARSE_LEVELS)
        .map_err(|_| TceError::OutOfWindow)?;
    let budget = LockedVm::new(geo.full_view_bytes() * 2);
    let table = TceTable::new(geo, 0, mem, &budget)?;

    let ranges = [
        (0, SPARSE_RAM_BYTES),
        (SPARSE_DEVICE_BUS, SPARSE_DEVICE_BYTES),
    ];
    let mut touched_entries = 0;
    for &(bus, bytes) in &ranges {
        let first = geo.index_of(bus).ok_or(TceError::OutOfWindow)?;
        let pages = bytes >> SPARSE_PAGE_SHIFT;
        let range = first..first + pages;
        // Fake but distinct addresses: the host page is the bus page, the owner address is
        // where a userspace would have mapped it.
        table.set(
            range.clone(),
            bus,
            TcePerm::READ | TcePerm::WRITE,
            MayAlloc::Yes,
        )?;
        table.owner_set(range, 0x7fff_0000_0000 + bus, MayAlloc::Yes)?;
        touched_entries += pages;
    }
    let allocated = table.allocated_bytes();
    let figures = SparseFigures {
        window_size,
        level_size: geo.level_size(),
        allocated_bytes: allocated.hardware,
        owner_allocated_bytes: allocated.owner,
        touched_bytes: touched_entries * 8
            + indirect_levels_on_paths(&geo, &ranges) * geo.level_size(),
        flat_bytes: (end >> SPARSE_PAGE_SHIFT) * 8,
        flat_window_bytes: geo.entries() * 8,
        charged_bytes: table.charged_bytes(),
    };
    table.free();
    Ok(figures)
}

/// Distinct indirect (non-leaf) levels the paths of the bus ranges `(start, bytes)` go through.
/// Assumes the ranges are sorted and do not share a level below the top.
fn indirect_levels_on_paths(geo: &TceGeometry, ranges: &[(u64, u64)]) -> u64 {
    let top = 1;
    let below_top: u64 = ranges
        .iter()
        .map(|&(bus, bytes)| {
            let lo = (bus - geo.bus_offset()) >> geo.page_shift();
            let hi = lo + (bytes >> geo.page_shift());
            (1..geo.levels() - 1)
                .map(|d| {
                    let s = (geo.levels() - d) * geo.level_bits();
                    ((hi - 1) >> s) - (lo >> s) + 1
                })
                .sum::<u64>()
        })
        .sum();
    top + below_top
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tce::HeapMemory;

    #[test]
    fn seed_sparse_case_allocates_only_touched_paths() {
        let mem = HeapMemory::new();
        let f = sparse_demo(&mem).unwrap();
        // The window reaching 0x246000000000 is 2^46; 64K pages, 3 levels of 8 KiB.
        assert_eq!(f.window_size, 1 << 46);
        assert_eq!(f.level_size, 8192);
        // Bound: 2 x 16 GiB / 64K entries x 8 + top + the two middles on the paths.
        assert_eq!(f.touched_bytes, 2 * (16 << 30 >> 16) * 8 + 3 * 8192);
        for view in [f.allocated_bytes, f.owner_allocated_bytes] {
            assert!(
                view * 100 <= f.touched_bytes * 105,
                "{view} vs {}",
                f.touched_bytes
            );
            assert!(view >= 4 << 20);
        }
        // The counting allocator saw the same: both views, nothing left after free.
        assert_eq!(
            mem.allocated_bytes(),
            f.allocated_bytes + f.owner_allocated_bytes
        );
        assert_eq!(mem.outstanding_bytes(), 0);
        // The seed's flat table: 4656 MiB (its text says 4556MB).
        assert_eq!(f.flat_bytes, 4656 << 20);
        assert_eq!(f.flat_window_bytes, 8 << 30);
        assert!(f.charged_bytes >= 2 * f.flat_window_bytes);
    }
}
