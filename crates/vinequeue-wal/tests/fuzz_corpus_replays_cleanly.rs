//! Replays the committed fuzz corpus (`fuzz/corpus/frame_decoder` and
//! `fuzz/corpus/recovery`, seeds and saved reproducers alike) through the fuzz targets'
//! own checks, so that CI covers it where cargo-fuzz is not installed. The checks and the
//! input formats come from `fuzz/src/harness/`, included here as it is.

use std::any::Any;
use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;

#[path = "../../../fuzz/src/harness/mod.rs"]
mod harness;

use vinequeue_storage::{RecoveryMode, Storage};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::Wal;

use harness::{
    build_image, check_frame_decoder, check_recovery, genuine_log, CountingAlloc, GENUINE_LOGS,
};

/// Counts allocations, for the check that `decode_frame` never allocates.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Reproducers of library bugs not fixed yet, as `<target>/<file>`: they must still fail.
const KNOWN_BUGS: &str = include_str!("../../../fuzz/known-bugs.txt");

fn known_bugs() -> Vec<&'static str> {
    KNOWN_BUGS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

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

thread_local! {
    /// Set while replaying a known bug: its panic message is expected, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

fn quiet_panics_of_known_bugs() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Runs `check` on every file of `target`'s corpus: the listed known bugs must fail,
/// everything else must pass. Reports every file that does otherwise.
fn replay(target: &str, check: fn(&[u8])) {
    quiet_panics_of_known_bugs();
    let known = known_bugs();
    let mut wrong = Vec::new();
    let mut replayed = 0;
    for path in corpus(target) {
        let name = path.file_name().expect("a name").to_string_lossy();
        let is_known = known.contains(&format!("{target}/{name}").as_str());
        let data = fs::read(&path).expect("a corpus file");
        QUIET.with(|q| q.set(is_known));
        let result = std::panic::catch_unwind(|| check(&data));
        QUIET.with(|q| q.set(false));
        replayed += 1;
        match (result, is_known) {
            (Ok(()), false) | (Err(_), true) => {}
            (Err(panic), false) => wrong.push(format!("{name}: {}", panic_message(&*panic))),
            (Ok(()), true) => wrong.push(format!(
                "{name} passes now: the bug is fixed, delete its line from fuzz/known-bugs.txt"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{target} corpus ({replayed} files):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_known_bug_has_its_reproducer() {
    for entry in known_bugs() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(entry);
        assert!(
            path.is_file(),
            "fuzz/known-bugs.txt lists {entry}, which is missing"
        );
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
    // Records 5..=8 were handed out before the cut: numbering goes on above the block
    // reserved for them.
    assert_eq!(report.next_seq, 1 + (1 << 20), "{report:?}");
    let segments: Vec<&String> = genuine_log(3)
        .keys()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    assert_eq!(segments.len(), 2, "{segments:?}");
}
