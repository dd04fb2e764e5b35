//! Simulated power cuts under async producers (`AsyncQueue`, `SyncMode::Immediate`, the
//! log on the simulated file system): no item whose `enqueue(..).await` returned `Ok`
//! before the cut is lost.
//!
//! `VQ_SIM_SEEDS` sets the number of seeds (50 by default).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::executor::{block_on, ThreadPool};
use futures::future::{join_all, FutureExt};
use vinequeue::wal::sim::SimFs;
use vinequeue::{AsyncQueue, Batch, Config, Queue, SendError, SyncMode, Wal, WalOptions};

const DIR: &str = "/srv/queue";

fn wal_on(fs: &SimFs) -> Arc<dyn vinequeue::Storage> {
    let options = WalOptions::default()
        .segment_size(64 * 1024)
        .max_size(1 << 30)
        .sync_mode(SyncMode::Immediate);
    Arc::new(Wal::open_with(fs.clone(), DIR, options).unwrap())
}

fn config() -> Config {
    Config::default()
        .sync_mode(SyncMode::Immediate)
        .memory_size(32)
        .batch_size(8)
        .flush_timeout(Duration::from_millis(1))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .retry_limit(u32::MAX)
        .shutdown_timeout(Duration::from_millis(20))
}

fn seeds() -> u64 {
    common::seeds(50)
}

/// One power cut under four async producers; returns (acknowledged before the cut and
/// not delivered before it, delivered once the power is back).
fn cut_once(seed: u64, pool: &ThreadPool) -> (HashSet<u64>, HashSet<u64>) {
    let fs = SimFs::new(seed);
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let powered = Arc::new(AtomicBool::new(true));
    let sink = {
        let (seen, powered) = (Arc::clone(&seen), Arc::clone(&powered));
        move |batch: &Batch<u64>| -> Result<(), SendError> {
            if !powered.load(SeqCst) {
                return Err(SendError::retry("no power"));
            }
            seen.lock().unwrap().extend(batch.iter().copied());
            Ok(())
        }
    };
    let queue = Queue::with_storage(config(), wal_on(&fs), None, sink).unwrap();
    let queue = AsyncQueue::from_queue(queue).unwrap();
    queue.start().unwrap();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let (queue, acked) = (queue.clone(), Arc::clone(&acked));
            let (task, done) = async move {
                for i in 0..60 {
                    let id = p * 1_000 + i;
                    if queue.enqueue(id).await.is_ok() {
                        acked.lock().unwrap().insert(id);
                    }
                }
            }
            .remote_handle();
            pool.spawn_ok(task);
            done
        })
        .collect();
    // Cut the power somewhere in the middle of the producers' run.
    std::thread::sleep(Duration::from_micros(200 + (seed * 7919) % 3_000));
    let acked_before = acked.lock().unwrap().clone();
    powered.store(false, SeqCst);
    let after_cut = fs.power_cut();
    // What was delivered before the cut proves nothing about the disk: only what must
    // come back from it is checked.
    let delivered_before = std::mem::take(&mut *seen.lock().unwrap());
    let must_survive: HashSet<u64> = acked_before
        .difference(&delivered_before)
        .copied()
        .collect();
    block_on(join_all(producers));
    // Nothing left, or what the sink (without power) could not take.
    let stopped = block_on(queue.stop());
    assert!(
        matches!(
            stopped,
            Ok(()) | Err(vinequeue::Error::ShutdownTimeout { .. })
        ),
        "seed {seed}: {stopped:?}"
    );
    drop(queue);

    // Power back: deliver what the disk kept.
    let sink = {
        let seen = Arc::clone(&seen);
        move |batch: &Batch<u64>| -> Result<(), SendError> {
            seen.lock().unwrap().extend(batch.iter().copied());
            Ok(())
        }
    };
    let queue = Queue::with_storage(config(), wal_on(&after_cut), None, sink).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(30)).unwrap();
    queue.stop().unwrap();
    let delivered = seen.lock().unwrap().clone();
    (must_survive, delivered)
}

#[test]
fn async_immediate_enqueues_survive_power_cuts() {
    let pool = ThreadPool::builder().pool_size(2).create().unwrap();
    let mut checked = 0;
    for seed in 0..seeds() {
        let (must, got) = cut_once(seed, &pool);
        let lost: Vec<_> = must.difference(&got).take(5).collect();
        assert!(
            lost.is_empty(),
            "seed {seed}: lost {lost:?} of {}",
            must.len()
        );
        checked += must.len();
    }
    assert!(
        checked > 0,
        "every item acknowledged before a cut was also delivered before it: the disk was never checked"
    );
}
