//! Replays every fuzz target's checked-in corpus (`fuzz/corpus/TARGET/`) through the function
//! the fuzzer runs, so CI needs no fuzzer:
//! - `hcall_dispatch`: `p9iommu::hcall::fuzz::Harness`, with the full walk and a recount of the
//!   model from scratch after every input, memory unregistered after every input, each input
//!   once in a harness reused for the whole corpus and once in a fresh one (same outcome);
//! - `hcall_script`: `p9iommu::hv::script::fuzz::check`;
//! - `phb_encoders`: `p9iommu::phb::fuzz::check`.

use p9iommu::hcall::fuzz::Harness;
use p9iommu::mm::alloc_guard::{self, GuardedAllocator};
use std::path::PathBuf;

#[global_allocator]
static ALLOC: GuardedAllocator<std::alloc::System> = GuardedAllocator::new(std::alloc::System);

/// The files of `fuzz/corpus/TARGET`, sorted, with their contents; at least `min` of them.
fn corpus(target: &str, min: usize) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= min,
        "{} has only {} files",
        dir.display(),
        files.len()
    );
    files
        .into_iter()
        .map(|f| {
            let data = std::fs::read(&f).unwrap();
            (f, data)
        })
        .collect()
}

#[test]
fn hcall_dispatch_corpus_replays_cleanly() {
    alloc_guard::set_violation_hook(alloc_guard::report_to_stderr);
    let mut reused = Harness::new();
    reused.set_full_walk_every(1);
    reused.set_unregister_every(1);
    reused.set_self_check(true);
    for (f, data) in corpus("hcall_dispatch", 24) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reused.run(&data)));
        let outcome = match r {
            Ok(Ok(o)) => o,
            Ok(Err(finding)) => panic!("{}: {finding}", f.display()),
            Err(_) => panic!("{} panics", f.display()),
        };
        assert_eq!(
            Harness::new().run(&data),
            Ok(outcome),
            "{}: a fresh harness disagrees",
            f.display()
        );
    }
    assert_eq!(alloc_guard::violations(), 0);
}

#[test]
fn hcall_script_corpus_replays_cleanly() {
    for (f, data) in corpus("hcall_script", 8) {
        if let Err(e) = p9iommu::hv::script::fuzz::check(&data) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn phb_encoders_corpus_replays_cleanly() {
    for (f, data) in corpus("phb_encoders", 8) {
        if let Err(e) = p9iommu::phb::fuzz::check(&data) {
            panic!("{}: {e}", f.display());
        }
    }
}
