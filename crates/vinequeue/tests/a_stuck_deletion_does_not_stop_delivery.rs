//! The batcher acknowledges every delivered batch, and acknowledgements free whole
//! segments of the log. Deleting a segment (checkpoint write, unlink, directory sync)
//! can take tens of milliseconds on a busy disk, or hang on a sick one: it must not hold
//! up delivery. Here the first deletion is held at its `unlink` on the simulated file
//! system, and the queue must go on delivering meanwhile; once released, the space is
//! reclaimed.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vinequeue::wal::sim::{FaultOp, SimFs};
use vinequeue::{Batch, Config, NullSink, Queue, SendError, Storage, SyncMode, Wal, WalOptions};

const DIR: &str = "/srv/queue";
const WAIT: Duration = Duration::from_secs(10);

/// A log of 64 KiB segments (a few thousand `u64` items each) on `fs`.
fn wal_on(fs: &SimFs) -> Arc<Wal<SimFs>> {
    let opts = WalOptions::default()
        .segment_size(64 * 1024)
        .max_size(1 << 30)
        .sync_mode(SyncMode::Os);
    Arc::new(Wal::open_with(fs.clone(), DIR, opts).unwrap())
}

/// Small batches, sent at once.
fn config() -> Config {
    Config::default()
        .sync_mode(SyncMode::Os)
        .memory_size(64)
        .batch_size(8)
        .flush_timeout(Duration::from_millis(1))
}

#[test]
fn delivery_goes_on_while_a_deletion_is_held() {
    let fs = SimFs::new(11);
    let wal = wal_on(&fs);
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&delivered);
    let sink = move |batch: &Batch<u64>| -> Result<(), SendError> {
        seen.lock().unwrap().extend(batch.iter().copied());
        Ok(())
    };
    let storage: Arc<dyn Storage> = wal.clone();
    let queue = Queue::with_storage(config(), storage, None, sink).unwrap();
    queue.start().unwrap();

    let held = fs.pause_nth(FaultOp::Remove, 1);
    // Enough items for a few segments: once the first is sealed and delivered, its
    // deletion starts, and stops at the unlink.
    let mut next = 0u64;
    let start = Instant::now();
    while !held.wait_reached(Duration::ZERO) {
        assert!(start.elapsed() < WAIT, "no deletion was ever started");
        for _ in 0..1000 {
            queue.enqueue(next).unwrap();
            next += 1;
        }
        queue.flush(WAIT).unwrap();
    }
    let segments = wal.segment_count();
    assert!(segments >= 2, "a segment is being deleted");

    // The deletion is held: the queue delivers all the same.
    for _ in 0..5000 {
        queue.enqueue(next).unwrap();
        next += 1;
    }
    queue
        .flush(Duration::from_secs(5))
        .expect("delivery stopped behind the held deletion");
    assert_eq!(
        *delivered.lock().unwrap(),
        (0..next).collect::<Vec<_>>(),
        "every item, once, in order"
    );
    assert!(
        wal.segment_count() >= segments,
        "nothing could be deleted while the unlink was held"
    );

    held.release();
    queue.stop().unwrap();
    wal.reclaim().unwrap();
    assert_eq!(wal.segment_count(), 1, "the space came back once released");
    assert_eq!(fs.segment_files(Path::new(DIR)).len(), 1);
}

#[test]
fn a_failed_deletion_is_counted_and_tried_again() {
    let fs = SimFs::new(12);
    let wal = wal_on(&fs);
    let storage: Arc<dyn Storage> = wal.clone();
    let queue = Queue::with_storage(config(), storage, None, NullSink).unwrap();
    queue.start().unwrap();
    fs.fail_nth(FaultOp::Remove, 1, std::io::ErrorKind::PermissionDenied);

    let mut next = 0u64;
    let mut deliver_more = || {
        for _ in 0..1000 {
            queue.enqueue(next).unwrap();
            next += 1;
        }
        queue.flush(WAIT).unwrap();
    };
    let start = Instant::now();
    while queue.metrics().log_errors_total == 0 {
        assert!(
            start.elapsed() < WAIT,
            "the failed deletion was never counted"
        );
        deliver_more();
    }
    assert_eq!(queue.metrics().log_errors_total, 1);
    // Later deliveries delete what the failed one left.
    while wal.segment_count() > 2 {
        assert!(
            start.elapsed() < WAIT,
            "the segments the failed deletion left stay on disk"
        );
        deliver_more();
        std::thread::sleep(Duration::from_millis(1));
    }
    queue.stop().unwrap();
    let m = queue.metrics();
    assert_eq!(m.sent_total, next, "every item delivered");
    assert_eq!(m.log_errors_total, 1, "one failure, reported once");
}
