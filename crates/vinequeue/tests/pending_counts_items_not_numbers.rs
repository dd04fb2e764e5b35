//! `Metrics::pending` and `Queue::queue_size` count items, not sequence numbers: after a
//! crash the log numbers on above the block of numbers it had reserved, and the numbers
//! skipped hold nothing that could ever be pending.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vinequeue::wal::sim::SimFs;
use vinequeue::{Batch, Config, Queue, SendError, SyncMode, Wal, WalOptions};

const DIR: &str = "/queue";

/// A queue over the log on `fs` whose sink fails (to be retried) while `down` is set.
fn queue_on(fs: &SimFs, down: Arc<AtomicBool>) -> Queue<u32> {
    let wal = Wal::open_with(
        fs.clone(),
        DIR,
        WalOptions::default().sync_mode(SyncMode::Immediate),
    )
    .unwrap();
    let config = Config::default()
        .sync_mode(SyncMode::Immediate)
        .batch_size(4)
        .flush_timeout(Duration::from_millis(1))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .shutdown_timeout(Duration::from_millis(50));
    let sink = move |_: &Batch<u32>| -> Result<(), SendError> {
        if down.load(Ordering::SeqCst) {
            return Err(SendError::retry("the backend is down"));
        }
        Ok(())
    };
    Queue::with_storage(config, Arc::new(wal), None, sink).unwrap()
}

#[test]
fn after_a_crash_pending_counts_the_items_left_not_the_numbers_skipped() {
    let fs = SimFs::new(3);
    let down = Arc::new(AtomicBool::new(true));
    let queue = queue_on(&fs, Arc::clone(&down));
    queue.start().unwrap();
    for i in 0..10 {
        queue.enqueue(i).unwrap();
    }
    assert_eq!(queue.metrics().pending, 10);
    // A crash: the process dies with ten items in the log (each synced: `Immediate`).
    let fs = fs.process_crash();
    // (Its handles on the crashed machine are stale: stopping it can only fail.)
    let _ = queue.stop();
    drop(queue);

    // The log numbers on above the block it had reserved: a gap of numbers that hold
    // nothing, between the ten items and the next one.
    let queue = queue_on(&fs, Arc::clone(&down));
    assert!(queue.recovery().next_seq > 11, "{:?}", queue.recovery());
    assert_eq!(queue.queue_size(), 10, "before start");
    assert_eq!(queue.metrics().pending, 10, "before start");
    queue.start().unwrap();
    for i in 10..13 {
        queue.enqueue(i).unwrap();
    }
    // The sink is still down: the ten recovered and the three new ones wait, whatever
    // the batcher has tried meanwhile.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(queue.queue_size(), 13, "during the outage");
    assert_eq!(queue.metrics().pending, 13, "during the outage");
    down.store(false, Ordering::SeqCst);
    queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(queue.metrics().pending, 0);
    assert_eq!(queue.metrics().sent_total, 13);
    queue.stop().unwrap();
}
