//! The IOMMU (TCE) component of a POWER9 hypervisor.
//!
//! A PCI device's DMA on POWER goes through its PHB, which translates bus addresses with TCE
//! tables. This crate holds the portable core of the component and, for ppc64le, the kernel that
//! runs it on QEMU `powernv9` under skiboot, directly or kexec'd from Linux as on POWER9.
//!
//! # Map
//! Portable (`no_std`, unit-tested on the host with plain `cargo test`):
//! - [`tce`]: multi-level TCE tables, levels allocated on demand, hardware and owner views.
//! - [`mm`]: the memory model: address kinds and execution modes as types, radix page tables,
//!   the vmemmap and its real-mode walker, guest memory (memslots, preregistered memory), page
//!   references, the real-mode allocation guard.
//! - [`hcall`]: the sPAPR TCE hypercalls, one body per call generic over the mode (the host
//!   simulation and fuzz harness behind the `sim` feature).
//! - [`hv`]: what the hypervisor and its test guest agree on, and the hypercall script language.
//! - [`phb`]: PHB4/IODA3 encodings, PE ownership, the PHB driver interface.
//! - [`bootinfo`]: boot facts from the device tree (OPAL, memory, reservations, command line).
//! - [`harness`]: the kernel's command line and console report format.
//!
//! Target-only (compiled for `target_os = "none"` on `powerpc64` only):
//! - `arch::ppc64`: the only home of `asm!`: SPRs, OPAL calls, exception vectors, the MMU,
//!   guest entry and the 0xC00 hypercall path, MMIO, the instruction-count markers.
//! - `kernel`: boot flow, heap, console, vmemmap, guest partitions and scripts, and the in-kernel
//!   tests and benchmarks.
//!
//! The portable modules never name an address of this machine and never use `asm!`: they reach
//! hardware only through small traits that `arch` implements and the host tests fake.
//! Tables and registers are big-endian; every conversion is named where it happens.
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod bootinfo;
pub mod harness;
pub mod hcall;
pub mod hv;
pub mod mm;
pub mod phb;
pub mod tce;

#[cfg(all(target_os = "none", target_arch = "powerpc64"))]
pub mod arch;
#[cfg(all(target_os = "none", target_arch = "powerpc64"))]
pub mod kernel;
