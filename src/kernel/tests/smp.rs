//! Secondary threads (`./qemu-run.sh --smp N`): they come online with MMUs and per-CPU areas
//! of their own, and run TCE table work concurrently with the boot CPU on one shared table, whose
//! end state must equal a serial replay of the same work. Skipped on one thread.
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::arch::ppc64::smp as arch_smp;
use crate::arch::ppc64::spr::{self, Msr};
use crate::kernel::smp::{cpus, run_on, tree_pirs, wait};
use crate::kernel::testing::{fail, skip, TestResult};
use crate::tce::{HeapMemory, LockedVm, MayAlloc, TceGeometry, TcePerm, TceTable};
use crate::{kassert, kassert_eq, ktest};

/// A second per job: QEMU runs each vCPU in a host thread, and the host may have fewer cores.
const JOB_TIMEOUT: u64 = 10 * spr::TIMEBASE_HZ;

fn online() -> Result<Vec<u32>, crate::kernel::testing::TestFailure> {
    let c = cpus();
    kassert!(
        c.failed.is_empty(),
        "secondaries that did not start: {:?}",
        c.failed
    );
    Ok(c.online.clone())
}

/// What a secondary reports about itself: PIR, MMU on, its own per-CPU area.
fn whoami(_: u64) -> u64 {
    let mmu_on = spr::msr().contains(Msr::IR | Msr::DR);
    let area = crate::arch::ppc64::exception::this_cpu() as u64;
    (u64::from(arch_smp::pir()) << 32)
        | (u64::from(mmu_on) << 1)
        | u64::from(area & 0xf == 0)
        | ((area >> 4) & 0xffff) << 8
}

fn secondaries_come_online() -> TestResult {
    if tree_pirs().len() < 2 {
        return skip("one hardware thread (qemu-run.sh --smp N)");
    }
    let pirs = online()?;
    kassert_eq!(pirs.len() + 1, tree_pirs().len(), "threads online");
    let boot_area = crate::arch::ppc64::exception::this_cpu() as u64;
    let mut areas = Vec::new();
    for (i, &pir) in pirs.iter().enumerate() {
        kassert!(run_on(i, whoami, 0), "secondary {i} busy");
        let r = wait(i, JOB_TIMEOUT)
            .ok_or_else(|| fail(format_args!("PIR {pir:#x} did not answer")))?;
        kassert_eq!((r >> 32) as u32, pir, "the job ran on another thread");
        kassert!(r & 2 != 0, "PIR {pir:#x} runs with the MMU off");
        let area = (r >> 8) & 0xffff;
        kassert!(
            area != (boot_area >> 4) & 0xffff,
            "PIR {pir:#x} uses the boot CPU's area"
        );
        areas.push(area);
    }
    areas.sort_unstable();
    areas.dedup();
    kassert_eq!(
        areas.len(),
        pirs.len(),
        "two secondaries share a per-CPU area"
    );
    crate::kprintln!(
        "\n    boot thread PIR {:#x}; {} secondaries, PIRs {:x?}",
        arch_smp::pir(),
        pirs.len(),
        pirs
    );
    Ok(())
}
ktest!("smp.secondaries_come_online", secondaries_come_online);

type Shared = TceTable<HeapMemory, Arc<LockedVm>>;

/// The table the concurrent jobs share.
static TABLE: AtomicPtr<Shared> = AtomicPtr::new(core::ptr::null_mut());

/// Entries mapped by the concurrent test: spread over 16 leaves, interleaved between threads so
/// that they race to install the same levels and write neighbours in one leaf.
const ENTRIES: u64 = 16 * 512;
const STRIDE: u64 = 509; // odd and prime: entry order jumps between leaves

fn entry_of(k: u64) -> u64 {
    (k * STRIDE) % ENTRIES
}

fn hpa_of(i: u64) -> u64 {
    0x4000_0000 + (i << 12)
}

/// Maps every `n`-th entry of the interleaved order starting at `me`; `arg = me | n << 8`.
/// Returns the number of failures.
fn map_share(arg: u64) -> u64 {
    let (me, n) = (arg & 0xff, arg >> 8);
    // SAFETY: the test stores a live table before posting and waits for every job before
    // dropping it.
    let t = unsafe { &*TABLE.load(Ordering::Acquire) };
    (0..ENTRIES)
        .filter(|k| k % n == me)
        .map(entry_of)
        .filter(|&i| {
            t.set(
                i..i + 1,
                hpa_of(i),
                TcePerm::READ | TcePerm::WRITE,
                MayAlloc::Yes,
            )
            .is_err()
        })
        .count() as u64
}

fn new_table() -> Result<(Shared, Arc<LockedVm>), crate::kernel::testing::TestFailure> {
    let geo = TceGeometry::new(0, 12, 1 << 30, 3).map_err(|e| fail(format_args!("{e:?}")))?;
    let budget = Arc::new(LockedVm::new(64 << 20));
    let t = TceTable::new(geo, 0, HeapMemory::new(), budget.clone())
        .map_err(|e| fail(format_args!("{e:?}")))?;
    Ok((t, budget))
}

fn concurrent_maps_equal_a_serial_replay() -> TestResult {
    if tree_pirs().len() < 2 {
        return skip("one hardware thread (qemu-run.sh --smp N)");
    }
    let pirs = online()?;
    let n = pirs.len() as u64 + 1;
    // The serial replay: the same mappings, one thread.
    let (serial, serial_budget) = new_table()?;
    for k in 0..ENTRIES {
        let i = entry_of(k);
        serial
            .set(
                i..i + 1,
                hpa_of(i),
                TcePerm::READ | TcePerm::WRITE,
                MayAlloc::Yes,
            )
            .map_err(|e| fail(format_args!("serial: {e:?}")))?;
    }
    for round in 0..8 {
        let (shared, budget) = new_table()?;
        let shared = alloc::boxed::Box::new(shared);
        TABLE.store(&*shared as *const Shared as *mut Shared, Ordering::Release);
        for i in 0..pirs.len() {
            kassert!(
                run_on(i, map_share, (i as u64 + 1) | (n << 8)),
                "secondary {i} busy"
            );
        }
        let mine = map_share(n << 8);
        let mut failures = mine;
        for (i, pir) in pirs.iter().enumerate() {
            failures += wait(i, JOB_TIMEOUT)
                .ok_or_else(|| fail(format_args!("round {round}: PIR {pir:#x} did not finish")))?;
        }
        TABLE.store(core::ptr::null_mut(), Ordering::Release);
        kassert_eq!(failures, 0, "round {round}: maps refused");
        for i in 0..ENTRIES {
            let got = shared.get(i).map_err(|e| fail(format_args!("{e:?}")))?;
            kassert_eq!(
                got,
                serial.get(i).map_err(|e| fail(format_args!("{e:?}")))?,
                "round {round}: entry {i}"
            );
        }
        kassert_eq!(
            shared.allocated_bytes(),
            serial.allocated_bytes(),
            "round {round}: levels installed (a level installed twice, or lost)"
        );
        kassert_eq!(
            budget.used(),
            serial_budget.used(),
            "round {round}: locked memory charged (a losing level not refunded)"
        );
        drop(shared);
        kassert_eq!(
            budget.used(),
            0,
            "round {round}: memory left charged after the table went"
        );
    }
    crate::kprintln!("\n    {n} threads, 8 rounds of {ENTRIES} maps into one table");
    Ok(())
}
ktest!(
    "smp.concurrent_maps_equal_a_serial_replay",
    concurrent_maps_equal_a_serial_replay
);

/// Holds a real-mode scope (the allocation guard active) on the calling thread for `ticks`.
fn hold_real_mode_scope(ticks: u64) -> u64 {
    let _scope = crate::mm::alloc_guard::RealModeScope::enter();
    let t0 = spr::timebase();
    while spr::timebase().wrapping_sub(t0) < ticks {
        core::hint::spin_loop();
    }
    crate::mm::alloc_guard::in_real_mode() as u64
}

/// The allocation guard's flag is per CPU: a secondary inside a real-mode scope does not make
/// the boot CPU's allocations fail, and the boot CPU is not in real mode because it is.
fn one_cpus_real_mode_refuses_no_other_cpus_allocation() -> TestResult {
    if tree_pirs().len() < 2 {
        return skip("one hardware thread (qemu-run.sh --smp N)");
    }
    online()?;
    let before = crate::mm::alloc_guard::violations();
    kassert!(
        run_on(0, hold_real_mode_scope, spr::TIMEBASE_HZ / 5),
        "secondary 0 busy"
    );
    // While the secondary holds its scope: allocate here, and check this CPU's flag.
    let t0 = spr::timebase();
    let mut allocated = 0usize;
    while spr::timebase().wrapping_sub(t0) < spr::TIMEBASE_HZ / 10 {
        kassert!(
            !crate::mm::alloc_guard::in_real_mode(),
            "the boot CPU reads another CPU's real-mode scope as its own"
        );
        let v: Vec<u64> = (0..64).collect();
        allocated += v.len();
    }
    let inside = wait(0, JOB_TIMEOUT).ok_or_else(|| fail("secondary 0 did not finish"))?;
    kassert_eq!(inside, 1, "the secondary's own scope was not active on it");
    kassert_eq!(
        crate::mm::alloc_guard::violations(),
        before,
        "allocations refused while another CPU held a real-mode scope"
    );
    kassert!(allocated > 0);
    Ok(())
}
ktest!(
    "smp.one_cpus_real_mode_refuses_no_other_cpus_allocation",
    one_cpus_real_mode_refuses_no_other_cpus_allocation
);
