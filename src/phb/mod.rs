//! PHB4 (IODA3): encodings, the DMA driver interface and its two back ends, PE ownership,
//! FDT discovery, BAR assignment, and QEMU's `edu` device.
//!
//! - [`regs`]: register offsets and encodings (TVE, IODA_ADDR, TCE_KILL, RTT_BAR).
//! - [`hw`]: the traits the kernel implements ([`hw::PhbMmio`], [`hw::PhysMemory`],
//!   [`hw::PciConfig`], [`hw::OpalPci`]) and the one the TCE tables implement
//!   ([`hw::DmaWindowTable`]).
//! - [`dma`]: the driver interface [`dma::PhbDma`] and the argument rules its back ends share;
//!   [`opal`] and [`direct`] are the back ends.
//! - [`claim`]: which back end drives a PHB (never both), and the one direct back end per PHB.
//! - [`pe`]: PE groups and ownership (kernel default window, owner tables, release).
//! - [`fdt`]: `pciex@` nodes and their PCI functions.
//! - [`bars`]: enumeration behind the root port, BAR sizing and assignment, bridge window.
//! - [`glue`]: `tce::TceTable` as a window table, PHB kills as `hcall::TceInvalidate`.
//! - [`edu`]: QEMU's `edu` device, to generate DMA.
#![forbid(unsafe_code)]

pub mod bars;
pub mod claim;
pub mod direct;
pub mod dma;
pub mod edu;
pub mod fdt;
#[cfg(any(test, feature = "sim"))]
pub mod fuzz;
pub mod glue;
pub mod hw;
pub mod opal;
pub mod pe;
pub mod regs;

pub use claim::Backend;
pub use dma::{Kill, PhbDma, PhbError};
pub use hw::{Bdfn, DmaWindowTable, FreezeStatus, PeNum, PhbId, WindowId};
