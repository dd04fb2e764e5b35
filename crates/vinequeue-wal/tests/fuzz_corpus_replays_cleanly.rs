//! Replays the committed fuzz corpus (`fuzz/corpus/frame_decoder` and
//! `fuzz/corpus/recovery`, seeds and saved reproducers alike) through the fuzz targets'
//! own checks, so that CI covers it where cargo-fuzz is not installed. The checks and the
//! input formats come from `fuzz/src/harness.rs`, included here as it is.

use std::fs;
use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/harness.rs"]
mod harness;

use vinequeue_core::{RecoveryMode, Storage};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::Wal;

use harness::{
    build_image, check_frame_decoder, check_recovery, genuine_log, CountingAlloc, GENUINE_LOGS,
};

/// Counts allocations, for the check that `decode_frame` never allocates.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

/// Runs `check` on every file, naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    for path in corpus(target) {
        let data = fs::read(&path).expect("a corpus file");
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{target} corpus file {} failed: {msg}", path.display());
        }
    }
}

#[test]
fn frame_decoder_corpus_replays_cleanly() {
    replay("frame_decoder", check_frame_decoder);
}

#[test]
fn recovery_corpus_replays_cleanly() {
    replay("recovery", check_recovery);
}

#[test]
fn the_allocation_counter_counts() {
    let before = harness::allocations();
    let v = std::hint::black_box(vec![1u8; 100]);
    assert!(
        harness::allocations() > before,
        "the no-allocation check would be vacuous"
    );
    drop(v);
}

#[test]
fn genuine_logs_are_deterministic_and_recover_in_full() {
    for k in 0..GENUINE_LOGS.len() {
        let log = genuine_log(k);
        assert!(
            log.keys().any(|n| n == "checkpoint"),
            "genuine log {k} has a checkpoint"
        );
        assert_eq!(
            &harness::write_genuine(k),
            log,
            "genuine log {k} is not the same bytes when written again"
        );
        // The input naming log k with no op is exactly that image.
        assert_eq!(&build_image(&[k as u8 + 1, 0]), log, "genuine log {k}");
        check_recovery(&[k as u8 + 1, 0]);
    }
    assert!(build_image(&[0, 0]).is_empty());

    // Log 4 really has a torn tail, and log 3 lost its first segment to reclaim.
    let fs = SimFs::new(1);
    for (name, bytes) in genuine_log(4) {
        fs.put_file(&Path::new(harness::DIR).join(name), bytes);
    }
    let wal = Wal::open_with(
        fs,
        harness::DIR,
        harness::fuzz_options(RecoveryMode::Strict),
    )
    .expect("a torn tail opens under Strict");
    let report = wal.recovery();
    assert!(report.torn_bytes > 0, "{report:?}");
    assert_eq!(report.next_seq, 5, "{report:?}");
    let segments: Vec<&String> = genuine_log(3)
        .keys()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    assert_eq!(segments.len(), 2, "{segments:?}");
}
