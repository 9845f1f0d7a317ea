//! The kernel's command line and the console report format, shared by the kernel (which prints
//! it) and the host-side boot tests (which parse it), so the two cannot drift apart.
//!
//! A test run prints:
//! ```text
//! running 3 tests (3 registered)
//! test tce.map_read_back ... ok
//! test boot.fails_on_purpose ... FAILED
//!     expected 1, got 2 at src/kernel/tests/boot.rs:10
//! 2 passed, 1 failed
//! p9iommu: exit 1
//! ```
//! A bench run prints one `bench <dotted.name> <integer> <unit>` line per figure.
#![forbid(unsafe_code)]
pub mod image;
use alloc::string::String;
use alloc::vec::Vec;

/// What the kernel does after boot, from `/chosen/bootargs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode<'a> {
    /// Show the component working end to end (the default).
    Demo,
    /// Run the in-kernel tests whose path contains the filter.
    Test(Option<&'a str>),
    /// Run the benchmarks whose name contains the filter.
    Bench(Option<&'a str>),
    /// Run the hypercall scripts in the initrd in a guest (`qemu-run.sh script FILE...`).
    Script,
}

/// A command line the kernel does not understand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdlineError<'a> {
    pub word: &'a str,
}

/// Parse `demo`, `test [FILTER]`, `bench [FILTER]` or `script`; empty means `demo`.
///
/// ```
/// use p9iommu::harness::{parse_cmdline, Mode};
/// assert_eq!(parse_cmdline("test tce."), Ok(Mode::Test(Some("tce."))));
/// assert_eq!(parse_cmdline(""), Ok(Mode::Demo));
/// assert!(parse_cmdline("tset").is_err());
/// ```
pub fn parse_cmdline(bootargs: &str) -> Result<Mode<'_>, CmdlineError<'_>> {
    let mut words = bootargs.split_ascii_whitespace();
    let mode = words.next();
    let filter = words.next();
    if let Some(extra) = words.next() {
        return Err(CmdlineError { word: extra });
    }
    match (mode, filter) {
        (None | Some("demo"), None) => Ok(Mode::Demo),
        (Some("demo"), Some(extra)) => Err(CmdlineError { word: extra }),
        (Some("test"), _) => Ok(Mode::Test(filter)),
        (Some("bench"), _) => Ok(Mode::Bench(filter)),
        (Some("script"), None) => Ok(Mode::Script),
        (Some("script"), Some(extra)) => Err(CmdlineError { word: extra }),
        (Some(other), _) | (None, Some(other)) => Err(CmdlineError { word: other }),
    }
}

/// Splits a trailing `reboot` word off the command line: the run then ends with a reboot (back
/// to petitboot on a POWER9 box) instead of powering off.
///
/// ```
/// use p9iommu::harness::split_reboot;
/// assert_eq!(split_reboot("test phb. reboot"), ("test phb.", true));
/// assert_eq!(split_reboot("test reboot."), ("test reboot.", false));
/// ```
pub fn split_reboot(bootargs: &str) -> (&str, bool) {
    let t = bootargs.trim_end();
    match t.rsplit_once(|c: char| c.is_ascii_whitespace()) {
        Some((rest, "reboot")) => (rest.trim_end(), true),
        None if t.trim_start() == "reboot" => ("", true),
        _ => (bootargs, false),
    }
}

/// Whether a test or bench named `name` is selected by `filter` (a substring, as libtest does).
pub fn selected(name: &str, filter: Option<&str>) -> bool {
    filter.is_none_or(|f| name.contains(f))
}

/// The prefix of the kernel's last line: `p9iommu: exit <status>`.
pub const EXIT_PREFIX: &str = "p9iommu: exit ";

/// One test's result as printed on the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub path: String,
    /// Passed (or skipped: a skipped test is not a failure).
    pub passed: bool,
    /// Skipped itself (`test X ... skipped (why)`): it could not run here.
    pub skipped: bool,
    /// The indented lines after `FAILED`.
    pub message: String,
}

/// One benchmark figure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchFigure {
    pub name: String,
    pub value: u64,
    pub unit: String,
}

/// Everything the host learns from a kernel's console output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// From `running N tests (R registered)`.
    pub running: Option<usize>,
    pub registered: Option<usize>,
    pub results: Vec<TestResult>,
    /// From the closing `N passed, M failed` line.
    pub closing: Option<(usize, usize)>,
    /// From its optional `, K skipped`.
    pub skipped: usize,
    pub benches: Vec<BenchFigure>,
    /// From `p9iommu: exit <status>`.
    pub exit: Option<i32>,
}

impl Report {
    /// Parse console output. Lines that are not part of the format (firmware chatter) are
    /// ignored; the console may use `\r\n`.
    pub fn parse(console: &str) -> Report {
        let mut r = Report::default();
        let mut last_failed: Option<usize> = None;
        // A test whose result was pushed to a later line by output it printed itself.
        let mut pending: Option<String> = None;
        for raw in console.lines() {
            let line = raw.trim_end_matches('\r');
            if let Some(path) = pending.as_ref() {
                let skipped = line.starts_with("skipped");
                if line == "ok" || line == "FAILED" || skipped {
                    let passed = line != "FAILED";
                    r.results.push(TestResult {
                        path: path.clone(),
                        passed,
                        skipped,
                        message: String::new(),
                    });
                    pending = None;
                    if !passed {
                        last_failed = Some(r.results.len() - 1);
                    }
                    continue;
                }
            }
            if let Some(idx) = last_failed {
                if let Some(msg) = line.strip_prefix("    ") {
                    let m = &mut r.results[idx].message;
                    if !m.is_empty() {
                        m.push('\n');
                    }
                    m.push_str(msg);
                    continue;
                }
                last_failed = None;
            }
            if let Some(rest) = line.strip_prefix("running ") {
                let mut it = rest.split_ascii_whitespace();
                r.running = it.next().and_then(|n| n.parse().ok());
                r.registered = rest
                    .split('(')
                    .nth(1)
                    .and_then(|s| s.split_ascii_whitespace().next())
                    .and_then(|n| n.parse().ok());
            } else if let Some(rest) = line.strip_prefix("test ") {
                if let Some(path) = rest.strip_suffix(" ... ok") {
                    r.results.push(TestResult {
                        path: path.into(),
                        passed: true,
                        skipped: false,
                        message: String::new(),
                    });
                } else if let Some(idx) = rest.find(" ... skipped") {
                    r.results.push(TestResult {
                        path: rest[..idx].into(),
                        passed: true,
                        skipped: true,
                        message: rest[idx + " ... skipped".len()..].trim().into(),
                    });
                } else if let Some(idx) = rest.find(" ... FAILED") {
                    r.results.push(TestResult {
                        path: rest[..idx].into(),
                        passed: false,
                        skipped: false,
                        message: String::new(),
                    });
                    last_failed = Some(r.results.len() - 1);
                } else if let Some(path) = rest.trim_end().strip_suffix(" ...") {
                    pending = Some(path.into());
                }
            } else if let Some(rest) = line.strip_prefix("bench ") {
                let parts: Vec<&str> = rest.split_ascii_whitespace().collect();
                if let [name, value, unit] = parts[..] {
                    if let Ok(value) = value.parse() {
                        r.benches.push(BenchFigure {
                            name: name.into(),
                            value,
                            unit: unit.into(),
                        });
                    }
                }
            } else if let Some(rest) = line.strip_prefix(EXIT_PREFIX) {
                r.exit = rest.trim().parse().ok();
            } else if let Some((p, f, k)) = parse_closing(line) {
                r.closing = Some((p, f));
                r.skipped = k;
            }
        }
        r
    }

    /// Why this report is not a clean, complete, passing test run (None when it is).
    pub fn test_run_problem(&self) -> Option<String> {
        use core::fmt::Write;
        let mut why = String::new();
        let failed: Vec<&TestResult> = self.results.iter().filter(|t| !t.passed).collect();
        for t in &failed {
            let _ = writeln!(why, "test {} FAILED: {}", t.path, t.message);
        }
        match (self.running, self.closing) {
            (None, _) => {
                why.push_str("no `running N tests` line: the kernel never started its tests\n")
            }
            (Some(_), None) => {
                why.push_str("no closing `N passed, M failed` line: the run did not finish\n")
            }
            (Some(n), Some((p, f))) => {
                let k = self.skipped;
                if p + f + k != n || self.results.len() != n {
                    let _ = writeln!(why, "announced {n} tests, printed {} results, closing line says {p} passed, {f} failed, {k} skipped", self.results.len());
                }
                let marked = self.results.iter().filter(|t| t.skipped).count();
                if marked != k {
                    let _ = writeln!(
                        why,
                        "closing line says {k} skipped, {marked} results say skipped"
                    );
                }
                if f != failed.len() {
                    let _ = writeln!(
                        why,
                        "closing line says {f} failed, {} results say FAILED",
                        failed.len()
                    );
                }
            }
        }
        if let (Some(n), Some(reg)) = (self.running, self.registered) {
            if n > reg {
                let _ = writeln!(why, "ran {n} tests but only {reg} are registered");
            }
        }
        match self.exit {
            Some(0) => {}
            Some(s) => {
                let _ = writeln!(why, "the kernel exited with status {s}");
            }
            None => why.push_str("no `p9iommu: exit` line: the kernel did not power off cleanly\n"),
        }
        (!why.is_empty()).then_some(why)
    }
}

/// `N passed, M failed` (the closing line), possibly followed by `, K skipped`.
fn parse_closing(line: &str) -> Option<(usize, usize, usize)> {
    let (p, rest) = line.split_once(" passed, ")?;
    let (f, k) = match rest.split_once(" failed, ") {
        Some((f, k)) => (f, k.strip_suffix(" skipped")?.parse().ok()?),
        None => (rest.strip_suffix(" failed")?, 0),
    };
    Some((p.parse().ok()?, f.parse().ok()?, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_modes() {
        assert_eq!(parse_cmdline(""), Ok(Mode::Demo));
        assert_eq!(parse_cmdline("demo"), Ok(Mode::Demo));
        assert_eq!(parse_cmdline("test"), Ok(Mode::Test(None)));
        assert_eq!(parse_cmdline(" test  tce. "), Ok(Mode::Test(Some("tce."))));
        assert_eq!(
            parse_cmdline("bench tce.set"),
            Ok(Mode::Bench(Some("tce.set")))
        );
        assert_eq!(parse_cmdline("tset"), Err(CmdlineError { word: "tset" }));
        assert_eq!(parse_cmdline("test a b"), Err(CmdlineError { word: "b" }));
        assert_eq!(parse_cmdline("demo x"), Err(CmdlineError { word: "x" }));
        assert_eq!(parse_cmdline("script"), Ok(Mode::Script));
        assert_eq!(parse_cmdline("script x"), Err(CmdlineError { word: "x" }));
    }

    #[test]
    fn filter_is_a_substring() {
        assert!(selected("tce.set", None));
        assert!(selected("tce.set", Some("tce")));
        assert!(!selected("hcall.put", Some("tce")));
    }

    const GOOD: &str = "skiboot chatter\r\nrunning 2 tests (2 registered)\r\ntest a.b ... ok\r\ntest c.d ... ok\r\n2 passed, 0 failed\r\np9iommu: exit 0\r\n";

    #[test]
    fn parses_a_passing_run() {
        let r = Report::parse(GOOD);
        assert_eq!(r.running, Some(2));
        assert_eq!(r.registered, Some(2));
        assert_eq!(r.results.len(), 2);
        assert!(r.results.iter().all(|t| t.passed));
        assert_eq!(r.closing, Some((2, 0)));
        assert_eq!(r.exit, Some(0));
        assert_eq!(r.test_run_problem(), None);
    }

    #[test]
    fn names_a_failing_test_and_its_message() {
        let out = "running 2 tests (2 registered)\ntest a.b ... FAILED\n    left 1 right 2\n    at x.rs:3\ntest c.d ... ok\n1 passed, 1 failed\np9iommu: exit 1\n";
        let r = Report::parse(out);
        assert_eq!(r.results[0].message, "left 1 right 2\nat x.rs:3");
        let why = r.test_run_problem().expect("a failed test is a problem");
        assert!(why.contains("test a.b FAILED: left 1 right 2"), "{why}");
        assert!(why.contains("exited with status 1"), "{why}");
    }

    #[test]
    fn a_truncated_run_is_a_problem() {
        let out = "running 3 tests (3 registered)\ntest a.b ... ok\n";
        let why = Report::parse(out).test_run_problem().expect("truncated");
        assert!(why.contains("no closing"), "{why}");
        assert!(why.contains("no `p9iommu: exit`"), "{why}");
        let lying = "running 3 tests (3 registered)\ntest a.b ... ok\n1 passed, 0 failed\np9iommu: exit 0\n";
        assert!(Report::parse(lying)
            .test_run_problem()
            .unwrap()
            .contains("announced 3 tests"));
    }

    #[test]
    fn a_result_pushed_to_its_own_line_still_counts() {
        let out = "running 1 tests (1 registered)\ntest a.b ... \nREFUSED: 8 bytes\nFAILED\n    panicked at x.rs:1\n";
        let r = Report::parse(out);
        assert_eq!(r.results.len(), 1);
        assert!(!r.results[0].passed);
        assert_eq!(r.results[0].message, "panicked at x.rs:1");
    }

    #[test]
    fn skipped_tests_are_neither_passed_nor_failed() {
        let out = "running 3 tests (3 registered)\ntest a.b ... ok\ntest c.d ... skipped (no edu device)\ntest e.f ... \nnoise\nskipped (none)\n1 passed, 0 failed, 2 skipped\np9iommu: exit 0\n";
        let r = Report::parse(out);
        assert_eq!(r.results.len(), 3);
        assert!(r.results[1].skipped && r.results[2].skipped && !r.results[0].skipped);
        assert_eq!(r.results[1].message, "(no edu device)");
        assert_eq!((r.closing, r.skipped), (Some((1, 0)), 2));
        assert_eq!(r.test_run_problem(), None);
        let lying = out.replace("2 skipped", "1 skipped");
        assert!(Report::parse(&lying).test_run_problem().is_some());
    }

    #[test]
    fn reboot_is_a_trailing_word() {
        assert_eq!(split_reboot("test phb. reboot"), ("test phb.", true));
        assert_eq!(split_reboot("reboot"), ("", true));
        assert_eq!(split_reboot("demo  reboot "), ("demo", true));
        assert_eq!(split_reboot("test reboot."), ("test reboot.", false));
        assert_eq!(split_reboot("test"), ("test", false));
    }

    #[test]
    fn parses_bench_lines() {
        let r =
            Report::parse("bench tce.set.insns 123 insns\nbench bad line\nbench x notanumber u\n");
        assert_eq!(
            r.benches,
            vec![BenchFigure {
                name: "tce.set.insns".into(),
                value: 123,
                unit: "insns".into()
            }]
        );
    }
}
