//! Partitions, vCPUs and guest exits.

pub mod script;
