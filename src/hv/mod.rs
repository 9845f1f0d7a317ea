//! Partitions, vCPUs and guest exits: what the hypervisor and its guests agree on ([`abi`]),
//! and the hypercall scripts a test guest runs ([`script`]). The machine side (entering a guest,
//! the 0xC00 path) is in `arch::ppc64::guest`; the kernel's partitions in `kernel::guests`.
#![forbid(unsafe_code)]
pub mod abi;
pub mod script;
pub mod vcpu;
