//! Simulated power cuts under a running durable queue (the log on the simulated file
//! system): under `Immediate`, no item whose `enqueue` returned `Ok` is lost; under
//! `Periodic`, nothing enqueued before the last successful `sync()` is lost.
//!
//! `VQ_SIM_SEEDS` sets the number of seeds (200 by default).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vinequeue::wal::sim::SimFs;
use vinequeue::{Batch, Config, Queue, SendError, SyncMode, Wal, WalOptions};

const DIR: &str = "/srv/queue";

type Seen = Arc<Mutex<HashSet<u64>>>;

fn queue_on(fs: &SimFs, mode: SyncMode, seen: Seen, powered: Arc<AtomicBool>) -> Queue<u64> {
    let wal = Wal::open_with(
        fs.clone(),
        DIR,
        WalOptions::default()
            .segment_size(64 * 1024)
            .max_size(1 << 30)
            .sync_mode(mode),
    )
    .unwrap();
    let config = Config::default()
        .sync_mode(mode)
        .memory_size(32)
        .batch_size(8)
        .flush_timeout(Duration::from_millis(1))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .retry_limit(u32::MAX)
        .shutdown_timeout(Duration::from_millis(20));
    // A sink that records deliveries while the machine has power.
    let sink = move |batch: &Batch<u64>| -> Result<(), SendError> {
        if !powered.load(Ordering::SeqCst) {
            return Err(SendError::retry("no power"));
        }
        seen.lock().unwrap().extend(batch.iter().copied());
        Ok(())
    };
    Queue::with_storage(config, Arc::new(wal), None, sink).unwrap()
}

fn seeds() -> u64 {
    std::env::var("VQ_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

/// Runs a few power-cut rounds; returns (items that must survive, items delivered).
fn rounds(seed: u64, mode: SyncMode) -> (HashSet<u64>, HashSet<u64>) {
    let seen: Seen = Arc::new(Mutex::new(HashSet::new()));
    let mut fs = SimFs::new(seed);
    let mut must_survive = HashSet::new();
    let mut next = 0u64;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _round in 0..3 {
        let powered = Arc::new(AtomicBool::new(true));
        let queue = queue_on(&fs, mode, Arc::clone(&seen), Arc::clone(&powered));
        queue.start().unwrap();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = 20 + x % 200;
        let sync_at = x % n;
        let mut since_sync = Vec::new();
        for i in 0..n {
            let id = next;
            next += 1;
            if queue.enqueue(id).is_ok() {
                match mode {
                    SyncMode::Immediate => {
                        must_survive.insert(id);
                    }
                    _ => since_sync.push(id),
                }
            }
            if i == sync_at && queue.sync().is_ok() {
                must_survive.extend(since_sync.drain(..));
            }
        }
        // The power goes: the sink stops, the disk keeps only what was synced.
        powered.store(false, Ordering::SeqCst);
        fs = fs.power_cut();
        drop(queue);
    }
    // Power back for good: drain everything.
    let powered = Arc::new(AtomicBool::new(true));
    let queue = queue_on(&fs, mode, Arc::clone(&seen), powered);
    queue.start().unwrap();
    queue.flush(Duration::from_secs(30)).unwrap();
    queue.stop().unwrap();
    let delivered = seen.lock().unwrap().clone();
    (must_survive, delivered)
}

#[test]
fn under_immediate_no_acknowledged_item_is_lost_to_power_cuts() {
    for seed in 0..seeds() {
        let (must, got) = rounds(seed, SyncMode::Immediate);
        let lost: Vec<_> = must.difference(&got).take(5).collect();
        assert!(
            lost.is_empty(),
            "seed {seed}: lost {lost:?} of {}",
            must.len()
        );
    }
}

#[test]
fn under_periodic_nothing_before_the_last_sync_is_lost_to_power_cuts() {
    for seed in 0..seeds() {
        let (must, got) = rounds(seed, SyncMode::Periodic(Duration::from_secs(3600)));
        let lost: Vec<_> = must.difference(&got).take(5).collect();
        assert!(
            lost.is_empty(),
            "seed {seed}: lost {lost:?} of {}",
            must.len()
        );
    }
}
