//! Multi-level TCE tables: one table per DMA window, levels allocated on demand.
//!
//! A PHB translates a DMA (bus) address through the TCE table its TVE points at: the IO bus
//! address (IOBA) minus the window's bus offset, shifted by the IOMMU page shift, is the entry
//! index; the index is split top level first across 1 to 5 levels. Leaves hold the host
//! physical address the device may reach, indirect entries the next level's address.
//!
//! Each [`TceTable`] keeps two views with the same geometry:
//! - the hardware view, read by the PHB: big-endian TCEs (`hpa | read 0x1 | write 0x2`);
//! - the owner view: the address the owner mapped from (a userspace or guest address), so an
//!   unmap knows what to release (Linux's `it_userspace`).
//!
//! Only the top level of each view exists after creation (the seed's sparse-RAM case: a
//! multi-level table pays only for what is mapped). Every operation that may need a missing
//! level takes a [`MayAlloc`] permission: real-mode hypercall handlers pass [`MayAlloc::No`]
//! and learn [`TceError::WouldAllocate`] (then take the virtual-mode path); nothing changes in
//! that case. Installing a level is lock-free: allocate a zeroed level, compare-and-swap it
//! into its parent, the loser frees its copy.
//!
//! Physical memory is reached through one trait, [`TceMemory`], so the same code runs on the
//! host (heap pointers as physical addresses), in the kernel (MMU off: physical = pointer) and
//! under loom. The whole table, both views, is charged to the owner's
//! [`LockedMemoryBudget`] at creation, allocated or not (as Linux charges `locked_vm`).

mod budget;
mod entry;
mod geometry;
mod memory;
mod sparse;
mod table;

pub use budget::{LockedMemoryBudget, LockedVm, OverBudget};
pub use entry::{Be64, Tce, TcePerm, TCE_INDIRECT};
pub use geometry::{GeometryError, TceGeometry, MAX_LEVELS, MAX_LEVEL_SHIFT, MIN_LEVEL_SHIFT};
pub use memory::{AllocError, HeapMemory, TceMemory};
pub use sparse::{
    sparse_demo, SparseFigures, SPARSE_DEVICE_BUS, SPARSE_DEVICE_BYTES, SPARSE_DEVICE_WINDOW,
    SPARSE_LEVELS, SPARSE_PAGE_SHIFT, SPARSE_RAM_BYTES,
};
pub use table::{MayAlloc, TceError, TceTable, ViewBytes};
