//! Secondary hardware threads: started one at a time through OPAL_START_CPU at
//! `p9_secondary_entry` (boot/entry.S), each with a stack and a per-CPU area of its own (HSPRG0),
//! its MMU pointed at the boot CPU's tables, then handed to the kernel's secondary main.
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::exception::new_cpu_area;
use super::{mmu, opal, spr};
use crate::mm::{HostPhys, VirtMode};

/// Bytes of each secondary's stack.
const STACK_SIZE: usize = 256 * 1024;

/// What the secondary entry reads: its stack top and per-CPU area (layout shared with
/// boot/entry.S: two doublewords).
#[repr(C)]
struct StartSlot {
    stack_top: UnsafeCell<u64>,
    percpu: UnsafeCell<u64>,
}

// SAFETY: written by the boot CPU only between starts (one secondary at a time, which reads it
// before it says it is online).
unsafe impl Sync for StartSlot {}

#[no_mangle]
static p9_smp_slot: StartSlot = StartSlot {
    stack_top: UnsafeCell::new(0),
    percpu: UnsafeCell::new(0),
};

/// The kernel's main for a secondary, once its MMU is on: `(pir, token) -> !`.
pub type SecondaryMain = fn(u32, VirtMode) -> !;
static MAIN: AtomicUsize = AtomicUsize::new(0);
/// PIR of the secondary that last came online (u64::MAX: none yet).
static ONLINE: AtomicU64 = AtomicU64::new(u64::MAX);

extern "C" {
    fn p9_secondary_entry();
}

/// OPAL_START_CPU.
const OPAL_START_CPU: u64 = 41;

/// Why a secondary did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// OPAL refused (its return code).
    Opal(i64),
    /// It did not come online within the time allowed.
    Timeout,
}

/// Starts the thread `pir` running `main`, and waits until it is online (at most `timeout`
/// timebase ticks). One at a time: the start slot is shared.
pub fn start(pir: u32, main: SecondaryMain, timeout: u64) -> Result<(), StartError> {
    MAIN.store(main as usize, Ordering::Release);
    let stack = alloc::vec![0u8; STACK_SIZE].leak();
    let top = (stack.as_ptr() as u64 + STACK_SIZE as u64) & !0xf;
    // SAFETY: no secondary is starting (one at a time; the last one said it was online after
    // reading the slot).
    unsafe {
        *p9_smp_slot.stack_top.get() = top;
        *p9_smp_slot.percpu.get() = new_cpu_area() as u64;
    }
    ONLINE.store(u64::MAX, Ordering::Release);
    let entry = HostPhys::of_linear(p9_secondary_entry as *const u8).0;
    // SAFETY: START_CPU takes a PIR and a real address to start it at: the secondary entry.
    let rc = unsafe { opal::call(OPAL_START_CPU, &[u64::from(pir), entry]) };
    if rc != opal::OPAL_SUCCESS {
        return Err(StartError::Opal(rc));
    }
    let t0 = spr::timebase();
    while ONLINE.load(Ordering::Acquire) != u64::from(pir) {
        if spr::timebase().wrapping_sub(t0) > timeout {
            return Err(StartError::Timeout);
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// The PIR of the calling thread.
pub fn pir() -> u32 {
    spr::mfspr::<{ spr::PIR }>() as u32
}

/// Called by `p9_secondary_entry` in real mode with the thread's PIR; HSPRG0 and the stack are
/// this thread's.
#[no_mangle]
extern "C" fn p9_secondary_rust(pir: u64) -> ! {
    // SAFETY: a secondary thread, real mode, after the boot CPU set the MMU up.
    let v = match unsafe { mmu::init_secondary() } {
        Ok(v) => v,
        Err(_) => loop {
            core::hint::spin_loop();
        },
    };
    let main = MAIN.load(Ordering::Acquire);
    ONLINE.store(pir, Ordering::Release);
    // SAFETY: `start` stored a `SecondaryMain` before starting this thread.
    let main: SecondaryMain = unsafe { core::mem::transmute::<usize, SecondaryMain>(main) };
    main(pir as u32, v)
}
