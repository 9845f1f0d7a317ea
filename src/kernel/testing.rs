//! The in-kernel test and benchmark registries and their runners. Tests and benches register
//! themselves by name with `ktest!`/`kbench!` (a linker section collects them), so adding one
//! never means editing a central list. The console format is `crate::harness`'s.
//!
//! Tests whose path starts with `selftest.` check the harness itself: they fail or crash on
//! purpose, and run only when the filter names them (`./qemu-run.sh test selftest.`).
use alloc::string::String;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::arch::ppc64::icount::Unavailable;
use crate::harness::{self, selected};
use crate::{kprint, kprintln};

/// Why a test failed.
#[derive(Debug)]
pub struct TestFailure(pub String);

/// A test's outcome.
pub type TestResult = Result<(), TestFailure>;

/// The reason the running test gave for skipping itself (see [`skip`]).
static SKIP: spin::Mutex<Option<String>> = spin::Mutex::new(None);

/// Ends the running test as skipped, not passed: it cannot run here (e.g. QEMU's edu device is
/// missing, as on real hardware). Use as `return skip("why")`.
pub fn skip(why: impl core::fmt::Display) -> TestResult {
    *SKIP.lock() = Some(alloc::format!("{why}"));
    Ok(())
}

/// A failure with a message, for the tests' `map_err`s and early returns.
pub fn fail(what: impl core::fmt::Display) -> TestFailure {
    TestFailure(alloc::format!("{what}"))
}

/// One registered in-kernel test.
pub struct KTest {
    pub path: &'static str,
    pub run: fn() -> TestResult,
}

/// Where a benchmark reports: one call per figure, printed as `bench <name> <value> <unit>`.
pub type Figures<'a> = &'a mut dyn FnMut(&str, u64, &str);

/// A benchmark's outcome: `Err` when it has no exact instruction counts to report (the kernel
/// was not booted with the insn-count plugin); the runner then says so and the run fails.
pub type BenchResult = Result<(), Unavailable>;

/// One registered benchmark (it may print several figures, each named in full).
pub struct KBench {
    pub name: &'static str,
    pub run: fn(Figures) -> BenchResult,
}

/// Register a test: `ktest!("tce.map_read_back", map_read_back);`
#[macro_export]
macro_rules! ktest {
    ($path:literal, $f:path) => {
        const _: () = {
            #[used]
            #[link_section = ".ktest"]
            static TEST: $crate::kernel::testing::KTest = $crate::kernel::testing::KTest {
                path: $path,
                run: $f,
            };
        };
    };
}

/// Register a benchmark: `kbench!("tce.set", bench_set);` (`fn bench_set(out: Figures) -> BenchResult`)
#[macro_export]
macro_rules! kbench {
    ($name:literal, $f:path) => {
        const _: () = {
            #[used]
            #[link_section = ".kbench"]
            static BENCH: $crate::kernel::testing::KBench = $crate::kernel::testing::KBench {
                name: $name,
                run: $f,
            };
        };
    };
}

/// Fail the test unless `cond` holds, with a message and the location.
#[macro_export]
macro_rules! kassert {
    ($cond:expr) => { $crate::kassert!($cond, "assertion failed: {}", stringify!($cond)) };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::kernel::testing::TestFailure(alloc::format!(
                "{} at {}:{}", format_args!($($fmt)+), file!(), line!()
            )));
        }
    };
}

/// Fail the test unless `left == right`, showing both.
#[macro_export]
macro_rules! kassert_eq {
    ($left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (l, r) => $crate::kassert!(*l == *r, "{} == {} failed: left {:#x?}, right {:#x?}", stringify!($left), stringify!($right), l, r),
        }
    };
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (l, r) => $crate::kassert!(*l == *r, "{}: left {:#x?}, right {:#x?}", format_args!($($fmt)+), l, r),
        }
    };
}

// Section bounds from linker.ld (declared as bytes: only their addresses are used).
extern "C" {
    static __ktest_start: u8;
    static __ktest_end: u8;
    static __kbench_start: u8;
    static __kbench_end: u8;
}

fn registered_tests() -> &'static [KTest] {
    // SAFETY: the linker script brackets the `.ktest` section, which holds only `KTest` statics
    // placed by `ktest!`, contiguous and aligned (the section has the type's alignment).
    unsafe {
        let start = &__ktest_start as *const u8 as *const KTest;
        let end = &__ktest_end as *const u8 as *const KTest;
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

fn registered_benches() -> &'static [KBench] {
    // SAFETY: as for `registered_tests`, for `.kbench`.
    unsafe {
        let start = &__kbench_start as *const u8 as *const KBench;
        let end = &__kbench_end as *const u8 as *const KBench;
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// The test running now, so that a panic or an exception can name it.
static CURRENT: AtomicPtr<KTest> = AtomicPtr::new(core::ptr::null_mut());

/// The test running now, if any.
pub fn current_test() -> Option<&'static str> {
    let p = CURRENT.load(Ordering::Relaxed);
    // SAFETY: CURRENT only ever holds null or a pointer into the static registry.
    (!p.is_null()).then(|| unsafe { (*p).path })
}

fn is_selftest(path: &str) -> bool {
    path.starts_with("selftest.")
}

/// Run the selected tests; returns whether all passed.
pub fn run_tests(filter: Option<&str>) -> bool {
    let all = registered_tests();
    let wants_selftests = filter.is_some_and(is_selftest);
    let chosen = |t: &&KTest| selected(t.path, filter) && (wants_selftests || !is_selftest(t.path));
    let registered = all.iter().filter(|t| !is_selftest(t.path)).count();
    let count = all.iter().filter(chosen).count();
    kprintln!("running {count} tests ({registered} registered)");
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for t in all.iter().filter(chosen) {
        kprint!("test {} ... ", t.path);
        CURRENT.store(t as *const KTest as *mut KTest, Ordering::Relaxed);
        let result = (t.run)();
        CURRENT.store(core::ptr::null_mut(), Ordering::Relaxed);
        match result {
            Ok(()) => match SKIP.lock().take() {
                Some(why) => {
                    skipped += 1;
                    kprintln!("skipped ({why})");
                }
                None => {
                    passed += 1;
                    kprintln!("ok");
                }
            },
            Err(TestFailure(msg)) => {
                failed += 1;
                kprintln!("FAILED");
                for line in msg.lines() {
                    kprintln!("    {line}");
                }
            }
        }
    }
    if skipped > 0 {
        kprintln!("{passed} passed, {failed} failed, {skipped} skipped");
    } else {
        kprintln!("{passed} passed, {failed} failed");
    }
    failed == 0 && count > 0
}

/// Run the selected benchmarks; returns whether any ran and all had their figures.
pub fn run_benches(filter: Option<&str>) -> bool {
    let (mut ran, mut unavailable) = (0, 0);
    for b in registered_benches()
        .iter()
        .filter(|b| selected(b.name, filter))
    {
        let r = (b.run)(&mut |name, value, unit| kprintln!("bench {name} {value} {unit}"));
        if let Err(e) = r {
            kprintln!("bench {} unavailable: {e}", b.name);
            unavailable += 1;
        }
        ran += 1;
    }
    if ran == 0 {
        kprintln!("no benchmark matches {:?}", filter.unwrap_or(""));
    }
    ran > 0 && unavailable == 0
}

/// Whether the run ends with a reboot (back to petitboot) instead of powering off: the
/// command line's trailing `reboot` word.
pub static REBOOT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Print the kernel's last line and power off (or reboot, see [`REBOOT`]). `p9iommu: exit
/// <status>` is what the host harness and qemu-run.sh read: QEMU's own exit status carries no
/// pass/fail.
pub fn exit(success: bool) -> ! {
    crate::kernel::console::print_emergency(format_args!(
        "{}{}\n",
        harness::EXIT_PREFIX,
        if success { 0 } else { 1 }
    ));
    if REBOOT.load(core::sync::atomic::Ordering::Relaxed) {
        crate::arch::ppc64::opal::reboot()
    }
    crate::arch::ppc64::opal::power_down()
}
