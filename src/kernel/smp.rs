//! The kernel's secondary threads: found in the device tree (`/cpus`, `ibm,ppc-interrupt-server#s`
//! lists each core's thread PIRs), started on first use ([`cpus`]), each then waiting for work
//! in a job slot of its own ([`run_on`], [`wait`]). `./qemu-run.sh --smp N` gives QEMU's
//! powernv9 N cores (one thread each).
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::arch::ppc64::smp::{self as arch_smp, StartError};
use crate::arch::ppc64::spr;
use crate::mm::VirtMode;

/// Most secondaries this kernel starts.
pub const MAX_SECONDARIES: usize = 15;

/// One secondary's job slot.
struct Slot {
    pir: AtomicU64,
    /// `fn(u64) -> u64` to run, 0 when idle.
    job: AtomicUsize,
    arg: AtomicU64,
    result: AtomicU64,
    /// 0 idle, 1 posted, 2 done.
    state: AtomicU64,
}

const IDLE: u64 = 0;
const POSTED: u64 = 1;
const DONE: u64 = 2;

#[allow(clippy::declare_interior_mutable_const)]
const SLOT: Slot = Slot {
    pir: AtomicU64::new(u64::MAX),
    job: AtomicUsize::new(0),
    arg: AtomicU64::new(0),
    result: AtomicU64::new(0),
    state: AtomicU64::new(IDLE),
};
static SLOTS: [Slot; MAX_SECONDARIES] = [SLOT; MAX_SECONDARIES];

/// The secondaries online, and why any did not start.
pub struct Cpus {
    /// PIRs of the secondaries online, in slot order.
    pub online: Vec<u32>,
    /// Threads the tree lists that did not start, and why.
    pub failed: Vec<(u32, StartError)>,
}

static CPUS: spin::Once<Cpus> = spin::Once::new();

/// Every thread's PIR the device tree lists (`/cpus/*`, `ibm,ppc-interrupt-server#s`).
pub fn tree_pirs() -> Vec<u32> {
    let fdt = &crate::kernel::boot().fdt;
    let mut out = Vec::new();
    for node in fdt.all_nodes() {
        let is_cpu = node
            .property("device_type")
            .and_then(|p| p.as_str())
            .is_some_and(|t| t == "cpu");
        if !is_cpu {
            continue;
        }
        if let Some(p) = node.property("ibm,ppc-interrupt-server#s") {
            out.extend(
                p.value
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
    }
    out
}

/// The secondaries, started on first use (each within a second, one at a time).
pub fn cpus() -> &'static Cpus {
    CPUS.call_once(|| {
        let me = arch_smp::pir();
        let mut online = Vec::new();
        let mut failed = Vec::new();
        for pir in tree_pirs().into_iter().filter(|&p| p != me) {
            if online.len() == MAX_SECONDARIES {
                break;
            }
            SLOTS[online.len()]
                .pir
                .store(u64::from(pir), Ordering::Release);
            match arch_smp::start(pir, secondary_main, spr::TIMEBASE_HZ) {
                Ok(()) => online.push(pir),
                Err(e) => {
                    SLOTS[online.len()].pir.store(u64::MAX, Ordering::Release);
                    failed.push((pir, e));
                }
            }
        }
        Cpus { online, failed }
    })
}

/// A secondary's life once online: run the jobs posted to its slot, forever.
fn secondary_main(pir: u32, _v: VirtMode) -> ! {
    let Some(slot) = SLOTS
        .iter()
        .find(|s| s.pir.load(Ordering::Acquire) == u64::from(pir))
    else {
        loop {
            core::hint::spin_loop();
        }
    };
    loop {
        if slot.state.load(Ordering::Acquire) == POSTED {
            let f = slot.job.load(Ordering::Acquire);
            // SAFETY: `run_on` stores a `fn(u64) -> u64` before posting.
            let f: fn(u64) -> u64 = unsafe { core::mem::transmute::<usize, fn(u64) -> u64>(f) };
            let r = f(slot.arg.load(Ordering::Acquire));
            slot.result.store(r, Ordering::Release);
            slot.state.store(DONE, Ordering::Release);
        }
        core::hint::spin_loop();
    }
}

/// Posts `f(arg)` to secondary `i` (an index into [`Cpus::online`]); false if it is busy.
pub fn run_on(i: usize, f: fn(u64) -> u64, arg: u64) -> bool {
    let slot = &SLOTS[i];
    if slot.state.load(Ordering::Acquire) == POSTED {
        return false;
    }
    slot.job.store(f as usize, Ordering::Release);
    slot.arg.store(arg, Ordering::Release);
    slot.state.store(POSTED, Ordering::Release);
    true
}

/// Waits (at most `timeout` timebase ticks) for secondary `i`'s job; its result, or None.
pub fn wait(i: usize, timeout: u64) -> Option<u64> {
    let slot = &SLOTS[i];
    let t0 = spr::timebase();
    while slot.state.load(Ordering::Acquire) != DONE {
        if spr::timebase().wrapping_sub(t0) > timeout {
            return None;
        }
        core::hint::spin_loop();
    }
    slot.state.store(IDLE, Ordering::Release);
    Some(slot.result.load(Ordering::Acquire))
}
