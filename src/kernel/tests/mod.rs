//! In-kernel tests and benchmarks, grouped by the component they exercise. Each registers
//! itself with `ktest!`/`kbench!`.
mod boot;
mod e2e;
mod hostile;
mod hv;
mod icount;
mod phb;
mod selftest;
mod smp;
mod tce;
mod vmemmap;
