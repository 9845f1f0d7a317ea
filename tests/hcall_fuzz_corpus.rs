//! Replays the fuzz corpus (`fuzz/corpus/hcall_dispatch/`) through the same harness the fuzzer
//! runs, `p9iommu::hcall::fuzz::run_one`, so CI needs no fuzzer.

use p9iommu::mm::alloc_guard::{self, GuardedAllocator};

#[global_allocator]
static ALLOC: GuardedAllocator<std::alloc::System> = GuardedAllocator::new(std::alloc::System);

#[test]
fn corpus_replays_cleanly() {
    alloc_guard::set_violation_hook(alloc_guard::report_to_stderr);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/hcall_dispatch");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 24, "corpus has only {} files", files.len());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let r = std::panic::catch_unwind(|| p9iommu::hcall::fuzz::run_one(&data));
        assert!(r.is_ok(), "corpus file {} fails", f.display());
    }
    assert_eq!(alloc_guard::violations(), 0);
}
