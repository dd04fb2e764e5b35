//! The durable peers of `wal_compare --only peers`: [yaque], [queue-file] and
//! [okaywal], each driven as its documentation shows, over the same records
//! ([`payload`]) as the log in `wal.rs`.
//!
//! [yaque]: https://crates.io/crates/yaque
//! [queue-file]: https://crates.io/crates/queue-file
//! [okaywal]: https://crates.io/crates/okaywal

use std::path::Path;
use std::time::{Duration, Instant};

use crate::wal::{payload, timed_threads, Scratch, SyncRun, RECORD_LEN};

/// Peer: [yaque](https://crates.io/crates/yaque) `Sender::try_send` of `records`
/// payloads into a new queue in `dir` (its own buffered segment files, no sync), then
/// drop (which flushes); returns the time of all of that.
///
/// # Panics
///
/// On an error.
pub fn yaque_append(dir: &Path, records: u64) -> Duration {
    let mut tx = yaque::Sender::open(dir).expect("open yaque sender");
    let start = Instant::now();
    for i in 0..records {
        tx.try_send(payload(i)).expect("yaque try_send");
    }
    drop(tx); // flushes
    start.elapsed()
}

/// Peer: opens the yaque queue in `dir` and receives everything with
/// `try_recv_batch_up_to(10 000)`, committing each batch; returns records and time.
///
/// # Panics
///
/// On an error other than the queue being empty.
pub fn yaque_read_back(dir: &Path) -> (u64, Duration) {
    let start = Instant::now();
    let mut rx = yaque::Receiver::open(dir).expect("open yaque receiver");
    let mut n = 0u64;
    loop {
        match rx.try_recv_batch_up_to(10_000) {
            Ok(batch) => {
                if batch.is_empty() {
                    break;
                }
                n += batch.len() as u64;
                assert!(batch.iter().all(|r| r.len() == RECORD_LEN));
                batch.commit().expect("yaque commit");
            }
            Err(yaque::TryRecvError::QueueEmpty) => break,
            Err(e) => panic!("yaque: {e:?}"),
        }
    }
    (n, start.elapsed())
}

/// Peer: [queue-file](https://crates.io/crates/queue-file) `QueueFile::add` of `records`
/// payloads to a new file, with `set_sync_writes(false)` (no sync per add); returns the
/// time from the first `add` until the file was dropped.
///
/// # Panics
///
/// On an error.
pub fn queue_file_append(path: &Path, records: u64) -> Duration {
    let mut q = queue_file::QueueFile::open(path).expect("open queue-file");
    q.set_sync_writes(false);
    let start = Instant::now();
    for i in 0..records {
        q.add(&payload(i)).expect("queue-file add");
    }
    drop(q);
    start.elapsed()
}

/// Peer in its default configuration, its most durable: one thread `add`s records to a
/// queue-file that syncs each add (`sync_writes`, on by default) until `duration` has
/// passed; every add is timed.
///
/// # Panics
///
/// On an error.
pub fn queue_file_synced(dir: &Path, duration: Duration) -> SyncRun {
    let scratch = Scratch::new(dir, "queue-file-synced");
    let q = queue_file::QueueFile::open(scratch.path().join("qf")).expect("open queue-file");
    assert!(q.sync_writes(), "syncing each add is queue-file's default");
    let q = std::sync::Mutex::new(q);
    timed_threads(1, duration, |i| {
        q.lock()
            .expect("not poisoned")
            .add(&payload(i))
            .expect("queue-file add");
    })
}

/// Peer: opens the queue-file at `path` and iterates over every element; returns the
/// records and the time (opening included).
///
/// # Panics
///
/// On an error.
pub fn queue_file_read_back(path: &Path) -> (u64, Duration) {
    let start = Instant::now();
    let q = queue_file::QueueFile::open(path).expect("open queue-file");
    let mut n = 0u64;
    for rec in q.iter() {
        assert_eq!(rec.len(), RECORD_LEN);
        n += 1;
    }
    (n, start.elapsed())
}

/// Peer: [okaywal](https://crates.io/crates/okaywal), `threads` threads each looping
/// `begin_entry`, `write_chunk(payload)`, `commit` (durable on return; okaywal groups
/// concurrent commits) for `duration`; every commit is timed.
///
/// # Panics
///
/// On an error.
pub fn okaywal_commits(dir: &Path, threads: usize, duration: Duration) -> SyncRun {
    let scratch = Scratch::new(dir, "okaywal");
    let log = okaywal::WriteAheadLog::recover(scratch.path(), okaywal::LogVoid).expect("open");
    let run = timed_threads(threads, duration, |i| {
        let mut entry = log.begin_entry().expect("begin_entry");
        entry.write_chunk(&payload(i)).expect("write_chunk");
        entry.commit().expect("commit");
    });
    log.shutdown().expect("okaywal shutdown");
    run
}
