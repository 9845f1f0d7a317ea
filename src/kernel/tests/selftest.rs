//! Tests of the test harness itself: each fails or crashes on purpose, so that the host-side
//! boot tests can check the report. They run only when the filter names them.
use crate::kernel::testing::TestResult;
use crate::{kassert_eq, ktest};

fn passes() -> TestResult {
    Ok(())
}
ktest!("selftest.passes", passes);

fn fails_on_purpose() -> TestResult {
    let two = core::hint::black_box(2);
    kassert_eq!(two, 3);
    Ok(())
}
ktest!("selftest.fails_on_purpose", fails_on_purpose);

fn illegal_instruction() -> TestResult {
    // SAFETY: deliberately not safe for the run: the program interrupt must be reported and
    // the kernel must power off with failure.
    unsafe { crate::arch::ppc64::probe::illegal_instruction() };
    Ok(())
}
ktest!("selftest.crash.illegal_instruction", illegal_instruction);

fn misaligned_reservation() -> TestResult {
    let buf = [0u64; 2];
    let addr = buf.as_ptr() as u64 + 1;
    // SAFETY: deliberately bad: lwarx on a misaligned address raises an alignment interrupt,
    // which must be reported with DAR = the address.
    unsafe { crate::arch::ppc64::probe::load_reserve(addr) };
    Ok(())
}
ktest!("selftest.crash.misaligned_access", misaligned_reservation);

fn panics() -> TestResult {
    let v: [u32; 2] = [1, 2];
    let i = core::hint::black_box(5);
    kassert_eq!(v[i], 0);
    Ok(())
}
ktest!("selftest.crash.panic", panics);

fn real_mode_allocation() -> TestResult {
    let _rm = crate::mm::alloc_guard::RealModeScope::enter();
    // Deliberately forbidden: the guarded allocator must refuse and the run must fail loudly.
    let b = alloc::boxed::Box::new(core::hint::black_box(42u64));
    drop(core::hint::black_box(b));
    Ok(())
}
ktest!("selftest.crash.real_mode_allocation", real_mode_allocation);
