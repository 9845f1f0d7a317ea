//! Partitions, vCPUs and guest exits: what the hypervisor and its guests agree on.
pub mod abi;
