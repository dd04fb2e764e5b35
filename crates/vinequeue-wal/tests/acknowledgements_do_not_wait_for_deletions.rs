//! Deleting acknowledged segments (checkpoint write, unlink, directory sync) runs on the
//! log's own thread by default (`WalOptions::reclaim`, `Reclaim::Background`): the queue's batcher
//! acknowledges every batch, and a deletion inside that call (tens of milliseconds while
//! the disk writes back) let the memory ring fill up behind it. Moved off the caller, the
//! deletion must still happen, be reported when it fails, be waited for by an `append`
//! that needs the space, and be finished when the log closes.

mod support;

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};

use vinequeue_storage::{Error, Storage};
use vinequeue_wal::format::parse_segment_name;
use vinequeue_wal::sim::{FaultOp, SimFs};
use vinequeue_wal::{DirEntry, Fs, Reclaim, SyncMode, Wal, WalOptions};

const DIR: &str = "/wal";
const WAIT: Duration = Duration::from_secs(10);

fn opts() -> WalOptions {
    // Segments of 64 KiB: about 30 records of 2000 bytes each.
    support::small_segments(SyncMode::Os)
}

fn record(i: u64) -> Vec<u8> {
    vec![i as u8; 2000]
}

/// Appends until the log has at least `segments` segment files; returns the last number.
fn fill(wal: &Wal<SimFs>, segments: usize) -> u64 {
    let mut last = 0;
    while wal.segment_count() < segments {
        last = wal.append(&record(last + 1)).unwrap();
    }
    last
}

/// Acknowledges `1..=last` on another thread; panics if that does not return in `WAIT`
/// (an acknowledgement that waited for a paused deletion would never return).
fn ack_elsewhere(wal: &Arc<Wal<SimFs>>, last: u64) -> Result<(), Error> {
    let (tx, rx) = mpsc::channel();
    let acker = Arc::clone(wal);
    std::thread::spawn(move || {
        let all: Vec<u64> = (1..=last).collect();
        let _ = tx.send(acker.ack_all(&all));
    });
    rx.recv_timeout(WAIT)
        .expect("the acknowledgement waited for the deletion")
}

fn segment_files(fs: &SimFs) -> usize {
    fs.segment_files(Path::new(DIR)).len()
}

#[test]
fn an_acknowledgement_returns_while_the_deletion_is_stuck() {
    let fs = SimFs::new(1);
    let wal = Arc::new(Wal::open_with(fs.clone(), DIR, opts()).unwrap());
    let last = fill(&wal, 4);
    let stuck = fs.pause_nth(FaultOp::Remove, 1);
    ack_elsewhere(&wal, last).unwrap();
    assert!(stuck.wait_reached(WAIT), "the deletion was never started");
    assert!(wal.segment_count() >= 4, "nothing can be gone yet");
    stuck.release();
    wal.reclaim().unwrap();
    assert_eq!(wal.segment_count(), 1, "only the active segment remains");
    assert_eq!(segment_files(&fs), 1);
}

#[test]
fn acknowledged_segments_go_without_anyone_asking_again() {
    let fs = SimFs::new(2);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let last = fill(&wal, 4);
    wal.ack_range(1, last).unwrap();
    let start = Instant::now();
    while wal.segment_count() > 1 {
        assert!(
            start.elapsed() < WAIT,
            "acknowledged segments were never deleted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(segment_files(&fs), 1);
    assert_eq!(wal.acked_through(), last);
}

/// A log at its size limit (or on a full disk) with a deletion under way: the `append`
/// that needs the space waits for it rather than reporting the log full.
#[test]
fn an_append_that_needs_the_space_waits_for_the_deletion_under_way() {
    for full_disk in [false, true] {
        let fs = SimFs::new(3);
        let opts = if full_disk {
            // The disk, not the limit, runs out: room for 4 segments and the checkpoint.
            fs.set_capacity(Some(4 * 64 * 1024 + 4096));
            opts()
        } else {
            opts().max_size(4 * 64 * 1024 + 4096)
        };
        let wal = Arc::new(Wal::open_with(fs.clone(), DIR, opts).unwrap());
        let mut last = 0;
        let full = loop {
            match wal.append(&record(last + 1)) {
                Ok(seq) => last = seq,
                Err(e) => break e,
            }
        };
        match (&full, full_disk) {
            (Error::LogFull { .. }, false) => {}
            (Error::Io(e), true) if e.kind() == std::io::ErrorKind::StorageFull => {}
            other => panic!("expected the log to be full, got {other:?}"),
        }
        let stuck = fs.pause_nth(FaultOp::Remove, 1);
        ack_elsewhere(&wal, last).unwrap();
        assert!(stuck.wait_reached(WAIT), "the deletion was never started");
        let (tx, rx) = mpsc::channel();
        let appender = Arc::clone(&wal);
        std::thread::spawn(move || tx.send(appender.append(&record(0))).unwrap());
        match rx.recv_timeout(Duration::from_millis(100)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            other => panic!(
                "the append did not wait for the deletion under way (full disk: \
                 {full_disk}): {other:?}"
            ),
        }
        stuck.release();
        let appended = rx.recv_timeout(WAIT).expect("the append never returned");
        assert_eq!(
            appended.unwrap(),
            last + 1,
            "once the space is back the append goes through"
        );
    }
}

#[test]
fn a_failed_background_deletion_is_reported_once_and_tried_again() {
    let fs = SimFs::new(4);
    let wal = Arc::new(Wal::open_with(fs.clone(), DIR, opts()).unwrap());
    let last = fill(&wal, 4);
    let held = fs.fail_nth_and_hold(FaultOp::Remove, 1, std::io::ErrorKind::PermissionDenied);
    ack_elsewhere(&wal, last).expect("the failure comes after the acknowledgement returned");
    assert!(held.wait_reached(WAIT), "the deletion was never started");
    held.release();
    // The next acknowledgement (any, even one that moves nothing) reports it.
    let start = Instant::now();
    let reported = loop {
        match wal.ack(1) {
            Err(e) => break e,
            Ok(()) => {
                assert!(
                    start.elapsed() < WAIT,
                    "the failed deletion was never reported"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    assert!(
        matches!(&reported, Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied),
        "{reported:?}"
    );
    wal.ack(1).expect("a failure is reported once");
    assert!(
        wal.segment_count() > 1,
        "the segment that failed stays listed"
    );
    wal.reclaim().unwrap();
    assert_eq!(wal.segment_count(), 1);
    assert_eq!(segment_files(&fs), 1);
}

#[test]
fn closing_the_log_finishes_the_deletion_asked_for() {
    for seed in 0..20 {
        let fs = SimFs::new(seed);
        let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
        let last = fill(&wal, 4);
        wal.ack_range(1, last).unwrap();
        drop(wal);
        assert_eq!(
            segment_files(&fs),
            1,
            "seed {seed}: the log closed with acknowledged segments left on disk"
        );
    }
}

#[test]
fn without_the_thread_the_acknowledgement_deletes() {
    let fs = SimFs::new(5);
    let wal = Wal::open_with(fs.clone(), DIR, opts().reclaim(Reclaim::Inline)).unwrap();
    let last = fill(&wal, 4);
    wal.ack_range(1, last).unwrap();
    assert_eq!(wal.segment_count(), 1);
    assert_eq!(segment_files(&fs), 1);
}

/// The simulated file system, with a `remove` that panics while `panics` is set.
#[derive(Clone)]
struct PanickyRemove {
    fs: SimFs,
    panics: Arc<AtomicBool>,
}

impl Fs for PanickyRemove {
    type File = <SimFs as Fs>::File;
    type Lock = <SimFs as Fs>::Lock;

    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.fs.create_dir_all(dir)
    }
    fn try_lock(&self, dir: &Path) -> std::io::Result<Option<Self::Lock>> {
        self.fs.try_lock(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<DirEntry>> {
        self.fs.list(dir)
    }
    fn create(&self, path: &Path, len: u64) -> std::io::Result<Self::File> {
        self.fs.create(path, len)
    }
    fn open(&self, path: &Path) -> std::io::Result<Self::File> {
        self.fs.open(path)
    }
    fn read_small(&self, path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
        self.fs.read_small(path, limit)
    }
    fn write_small(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        self.fs.write_small(path, data)
    }
    fn overwrite(&self, path: &Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.fs.overwrite(path, offset, data)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.fs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        if self.panics.load(Ordering::SeqCst) {
            panic!("remove of {} panics (injected)", path.display());
        }
        self.fs.remove(path)
    }
    fn copy(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.fs.copy(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.fs.sync_dir(dir)
    }
    fn file_len(&self, path: &Path) -> std::io::Result<u64> {
        self.fs.file_len(path)
    }
}

/// A deletion thread that dies (a panic in a file-system call) must not leave the log
/// waiting for it: acknowledgements delete inline from then on, and an `append` on a
/// full log does not wait for a deletion that will never finish.
#[test]
fn when_the_deletion_thread_dies_acknowledgements_delete_inline() {
    let fs = PanickyRemove {
        fs: SimFs::new(6),
        panics: Arc::new(AtomicBool::new(true)),
    };
    let wal = Wal::open_with(fs.clone(), DIR, opts().max_size(4 * 64 * 1024 + 4096)).unwrap();
    let mut last = 0;
    let full = loop {
        match wal.append(&record(last + 1)) {
            Ok(seq) => last = seq,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, Error::LogFull { .. }), "{full:?}");
    // The thread takes this deletion and dies in it (the first append may wait for
    // that: printing the panic can take a while).
    wal.ack_range(1, last - 1).unwrap();
    let first = wal.append(&record(0));
    assert!(
        matches!(first, Err(Error::LogFull { .. })),
        "nothing could be deleted: {first:?}"
    );
    // Once it is gone, an acknowledgement deletes on its own thread, without handing
    // the deletion to the dead one: the segments are gone when it returns (handed over,
    // they would stay for good).
    fs.panics.store(false, Ordering::SeqCst);
    wal.ack_range(last, last).unwrap();
    assert_eq!(
        segment_files(&fs.fs),
        1,
        "the acknowledgement deleted the sealed segments itself"
    );
    assert_eq!(wal.append(&record(0)).unwrap(), last + 1);
    assert_eq!(segment_files(&fs.fs), 2);
}

/// Everything is acknowledged while the segment is still the active one; it fills and is
/// sealed after that, and no acknowledgement follows (the queue had delivered it all):
/// the roll that seals it asks for its deletion.
#[test]
fn a_segment_sealed_after_its_last_acknowledgement_is_deleted() {
    let fs = SimFs::new(7);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let mut last = 0;
    for _ in 0..10 {
        last = wal.append(&record(last + 1)).unwrap();
    }
    wal.ack_range(1, last).unwrap();
    // The records that fill the first segment are acknowledged as they come; the one
    // that opens the second is not.
    while wal.segment_count() < 2 {
        let seq = wal.append(&record(last + 1)).unwrap();
        if wal.segment_count() < 2 {
            wal.ack(seq).unwrap();
        }
        last = seq;
    }
    let start = Instant::now();
    while wal.segment_count() > 1 {
        assert!(
            start.elapsed() < WAIT,
            "a sealed, fully acknowledged segment stays on disk"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(segment_files(&fs), 1);
}

/// The log at its limit, its oldest segment sealed after the acknowledgements that
/// cover it (none came after): the `append` that needs the space has that segment
/// deleted and goes through (without the log's thread, on its own thread).
#[test]
fn a_full_log_deletes_a_segment_acknowledged_before_it_was_sealed() {
    for background in [true, false] {
        let fs = SimFs::new(8);
        let wal = Wal::open_with(
            fs.clone(),
            DIR,
            opts()
                .max_size(4 * 64 * 1024 + 4096)
                .reclaim(if background {
                    Reclaim::Background
                } else {
                    Reclaim::Inline
                }),
        )
        .unwrap();
        // The first segment: every record acknowledged while it is the active one.
        let mut last = 0;
        while wal.segment_count() < 2 {
            let seq = wal.append(&record(last + 1)).unwrap();
            if wal.segment_count() < 2 {
                wal.ack(seq).unwrap();
            }
            last = seq;
        }
        let first_unacked = last;
        // Then records nobody acknowledges, until the log is full.
        let full = loop {
            match wal.append(&record(last + 1)) {
                Ok(seq) => last = seq,
                Err(e) => break e,
            }
        };
        assert!(matches!(full, Error::LogFull { .. }), "{full:?}");
        let first_listed = fs
            .segment_files(Path::new(DIR))
            .iter()
            .filter_map(|(p, _)| parse_segment_name(p.file_name()?.to_str()?))
            .min()
            .unwrap();
        assert_eq!(
            first_listed, first_unacked,
            "background {background}: the acknowledged segment took space until the end"
        );
    }
}
