//! The QEMU suite: builds the kernel, boots it on powernv9 through `qemu-run.sh`, and judges the
//! console with the same report format the kernel prints (`p9iommu::harness`). Each boot takes
//! about 7 s of wall time; the kernel is built once for all of them.
use std::process::Command;

use p9iommu::harness::Report;

#[path = "support/kernel_build.rs"]
mod kernel_build;
use kernel_build::{build_kernel, root};

/// Boot with a kernel command line, after any qemu-run.sh options; returns (qemu-run.sh
/// succeeded, console, stderr).
fn boot(cmdline: &[&str]) -> (bool, String, String) {
    build_kernel();
    let out = Command::new(root().join("qemu-run.sh"))
        .args(["--no-build", "--timeout", "90"])
        .args(cmdline)
        .current_dir(root())
        .output()
        .expect("run qemu-run.sh");
    let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    (
        out.status.success(),
        console,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn in_kernel_tests_pass() {
    // With the insn-count plugin (qemu-run.sh builds it): the tests pass without it too, and
    // `icount.*` then also checks that instruction counts are exact.
    let (ok, console, stderr) = boot(&["--count", "test"]);
    let report = Report::parse(&console);
    if let Some(why) = report.test_run_problem() {
        panic!("the in-kernel test run failed:\n{why}\n---- console ----\n{console}\n---- qemu-run.sh ----\n{stderr}");
    }
    assert!(
        ok,
        "qemu-run.sh failed although the report is clean:\n{stderr}"
    );
    assert_eq!(
        report.running, report.registered,
        "an unfiltered run must run every registered test"
    );
    assert!(
        report.results.len() >= 4,
        "suspiciously few tests:\n{console}"
    );
}

/// A two-socket machine, as far as QEMU's powernv9 gives one: two chips, each with its own
/// memory node (`ibm,chip-id`), XSCOM and PHBs; every in-kernel test passes there too.
#[test]
fn two_chips_boot_and_pass_every_test() {
    let (ok, console, stderr) = boot(&["--chips", "2", "--mem", "4G", "test"]);
    let report = Report::parse(&console);
    if let Some(why) = report.test_run_problem() {
        panic!("two chips: the in-kernel test run failed:\n{why}\n---- console ----\n{console}\n---- qemu-run.sh ----\n{stderr}");
    }
    assert!(
        ok,
        "qemu-run.sh failed although the report is clean:\n{stderr}"
    );
    for chip in [0, 1] {
        assert!(
            console.contains(&format!(" on chip {chip}")),
            "no memory found on chip {chip}:\n{console}"
        );
    }
}

/// Secondary threads: three cores, the boot thread and two secondaries started through
/// OPAL_START_CPU, mapping into one shared table at once; the `smp.*` tests must run (not skip)
/// and pass.
#[test]
fn secondaries_run_the_smp_tests() {
    let (ok, console, stderr) = boot(&["--smp", "3", "test", "smp."]);
    let report = Report::parse(&console);
    if let Some(why) = report.test_run_problem() {
        panic!("smp: the in-kernel test run failed:\n{why}\n---- console ----\n{console}\n---- qemu-run.sh ----\n{stderr}");
    }
    assert!(
        ok,
        "qemu-run.sh failed although the report is clean:\n{stderr}"
    );
    assert!(
        report.results.len() >= 2 && report.results.iter().all(|t| t.passed && !t.skipped),
        "{console}"
    );
}

#[test]
fn demo_boots_and_exits_cleanly() {
    let (ok, console, stderr) = boot(&[]);
    assert!(ok, "demo failed:\n{console}\n{stderr}");
    let report = Report::parse(&console);
    assert_eq!(report.exit, Some(0), "{console}");
    assert!(console.contains("p9iommu: demo done"), "{console}");
}

#[test]
fn a_failing_test_is_named_with_its_message() {
    let (ok, console, _) = boot(&["test", "selftest.fails_on_purpose"]);
    assert!(!ok, "qemu-run.sh must fail when a test fails:\n{console}");
    let report = Report::parse(&console);
    let why = report
        .test_run_problem()
        .expect("a failed test is a problem");
    assert!(
        why.contains("test selftest.fails_on_purpose FAILED"),
        "{why}"
    );
    assert!(why.contains("left 0x2, right 0x3"), "{why}");
    assert_eq!(report.closing, Some((0, 1)), "{console}");
    assert_eq!(report.exit, Some(1), "{console}");
}

#[test]
fn an_illegal_instruction_is_reported_with_registers() {
    let (ok, console, _) = boot(&["test", "selftest.crash.illegal_instruction"]);
    assert!(
        !ok,
        "qemu-run.sh must fail when the kernel takes an exception:\n{console}"
    );
    let report = Report::parse(&console);
    // POWER9 in hypervisor state raises an illegal instruction as a hypervisor emulation
    // assistance interrupt.
    assert!(
        console.contains("unexpected exception: vector 0xe40"),
        "{console}"
    );
    for reg in ["HSRR0", "HSRR1", "SRR0", "DAR", "DSISR", "r1 ", "r31"] {
        assert!(console.contains(reg), "no {reg} in the report:\n{console}");
    }
    assert_eq!(report.results.len(), 1, "{console}");
    assert!(!report.results[0].passed, "{console}");
    assert_eq!(
        report.closing, None,
        "the run cannot close normally after a crash:\n{console}"
    );
    assert_eq!(report.exit, Some(1), "{console}");
}

#[test]
fn a_real_mode_allocation_fails_the_test_loudly() {
    let (ok, console, _) = boot(&["test", "selftest.crash.real_mode_allocation"]);
    assert!(!ok, "qemu-run.sh must fail:\n{console}");
    assert!(
        console.contains("REAL-MODE ALLOCATION REFUSED: 8 bytes"),
        "{console}"
    );
    let report = Report::parse(&console);
    assert_eq!(report.results.len(), 1, "{console}");
    assert!(!report.results[0].passed, "{console}");
    assert!(
        report.results[0]
            .message
            .contains("memory allocation of 8 bytes failed"),
        "{console}"
    );
    assert_eq!(report.exit, Some(1), "{console}");
}

/// Every `examples/*.hcall`, in one boot: each script must report `ok`.
#[test]
fn example_scripts_pass() {
    let mut examples: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "hcall"))
        .map(|p| format!("examples/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    examples.sort();
    assert!(examples.len() >= 3, "too few examples: {examples:?}");
    let mut args = vec!["script"];
    args.extend(examples.iter().map(String::as_str));
    let (ok, console, stderr) = boot(&args);
    assert!(ok, "example scripts failed:\n{console}\n{stderr}");
    for e in &examples {
        assert!(
            console.contains(&format!("script {e} ... ok")),
            "{e} did not pass:\n{console}"
        );
    }
    assert!(
        console.contains("via real") || console.contains("(real mode)"),
        "{console}"
    );
    assert!(
        console.contains("(virtual mode after H_TOO_HARD)"),
        "{console}"
    );
    assert!(
        console.contains(&format!("{} passed, 0 failed", examples.len())),
        "{console}"
    );
}

/// A wrong expectation and a malformed line each fail the run, naming file and line.
#[test]
fn bad_scripts_fail_naming_the_line() {
    let (ok, console, _) = boot(&[
        "script",
        "tests/scripts/malformed.hcall",
        "tests/scripts/wrong_expectation.hcall",
        "tests/scripts/dma_expectations.hcall",
    ]);
    assert!(!ok, "qemu-run.sh must fail:\n{console}");
    assert!(
        console.contains(
            "tests/scripts/malformed.hcall:3: error: H_PUT_TCE takes 3 arguments (liobn ioba tce), found 2"
        ),
        "{console}"
    );
    assert!(
        console.contains("tests/scripts/wrong_expectation.hcall:4: H_GET_TCE(")
            && console.contains("MISMATCH, expected H_PARAMETER"),
        "{console}"
    );
    // A DMA that did not land where the script said, and one that landed where it said not.
    for line in [9, 11] {
        assert!(
            console.contains(&format!(
                "tests/scripts/dma_expectations.hcall:{line}: guest load("
            )) && console.contains("MISMATCH, expected ok 0x"),
            "line {line}:\n{console}"
        );
    }
    assert!(console.contains("0 passed, 3 failed"), "{console}");
    assert_eq!(Report::parse(&console).exit, Some(1), "{console}");
}

/// The POWER9 user's path: Debian's ppc64el Linux boots first and kexecs this kernel
/// (`./qemu-run.sh --kexec`), which must then run every in-kernel test and exit 0. Skipped,
/// loudly, where Debian's packages cannot be had; under CI it must run.
#[test]
fn kexec_trial_runs_the_in_kernel_tests() {
    build_kernel();
    let out = Command::new(root().join("qemu-run.sh"))
        .args(["--no-build", "--timeout", "240", "--kexec", "test"])
        .current_dir(root())
        .output()
        .expect("run qemu-run.sh");
    let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the kexec trial must run under CI, but its packages could not be had:\n{stderr}"
        );
        eprintln!("\n*** SKIPPED: the kexec trial (no Debian ppc64el packages here) ***\n{stderr}");
        return;
    }
    assert!(
        console.contains("kexec-trial: kexec -e"),
        "Linux never kexec'd the kernel:\n{console}\n{stderr}"
    );
    let report = Report::parse(&console);
    if let Some(why) = report.test_run_problem() {
        panic!("the kexec'd kernel's tests failed:\n{why}\n---- console ----\n{console}\n{stderr}");
    }
    assert!(out.status.success(), "{stderr}");
    assert!(
        console.contains("p9iommu: image at ") && !console.contains("relocated by +0x0 "),
        "the kexec'd image should run away from its link address:\n{console}"
    );
}

/// Without QEMU's edu device (as on a real machine) the tests that need it skip themselves:
/// the run passes and says how many were skipped.
#[test]
fn tests_needing_edu_skip_without_it() {
    build_kernel();
    // The PHB DMA tests and the guest-owned device tests, each group in a boot of its own.
    for filter in ["phb.", "e2e."] {
        let out = Command::new(root().join("qemu-run.sh"))
            .args([
                "--no-build",
                "--timeout",
                "90",
                "--edu",
                "0",
                "test",
                filter,
            ])
            .current_dir(root())
            .output()
            .expect("run qemu-run.sh");
        let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        let report = Report::parse(&console);
        assert_eq!(report.test_run_problem(), None, "{console}");
        assert!(out.status.success(), "{console}");
        assert!(
            report.results.len() >= 3 && report.results.iter().all(|t| t.skipped),
            "{filter}: {console}"
        );
        assert_eq!(report.skipped, report.results.len(), "{console}");
    }
}
