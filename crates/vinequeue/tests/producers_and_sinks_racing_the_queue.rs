//! Producers racing `stop()`, and a sink that enqueues while the ring is full and the
//! queue spills to the log: what `enqueue` accepted is delivered (at the next start if
//! not before), and what it refused never is.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::ok_recorder;
use vinequeue::{Batch, Config, EnqueueError, Queue, SendError, SyncMode};

fn config(dir: &std::path::Path) -> Config {
    Config::default()
        .wal_path(dir)
        .sync_mode(SyncMode::Os)
        .memory_size(64)
        .batch_size(16)
        .flush_timeout(Duration::from_millis(2))
        .shutdown_timeout(Duration::from_secs(10))
}

#[test]
fn producers_racing_stop_lose_nothing_accepted_and_replay_nothing_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, first) = ok_recorder::<u64>();
    let queue = Arc::new(Queue::new(config(dir.path()), sink).unwrap());
    queue.start().unwrap();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let go = Arc::new(AtomicBool::new(true));
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let (queue, accepted, refused, go) = (
                Arc::clone(&queue),
                Arc::clone(&accepted),
                Arc::clone(&refused),
                Arc::clone(&go),
            );
            std::thread::spawn(move || {
                let mut k = 0;
                while go.load(Ordering::SeqCst) {
                    let id = t * 1_000_000_000 + k;
                    match queue.enqueue(id) {
                        Ok(()) => accepted.lock().unwrap().push(id),
                        Err(EnqueueError::Closed(back)) => {
                            assert_eq!(back, id);
                            refused.lock().unwrap().push(id);
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                    k += 1;
                }
            })
        })
        .collect();
    // Let the producers run, then stop under them: some enqueues land before the
    // close, some after.
    while accepted.lock().unwrap().len() < 20_000 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stopped = queue.stop();
    while refused.lock().unwrap().len() < 100 {
        std::thread::sleep(Duration::from_millis(1));
    }
    go.store(false, Ordering::SeqCst);
    for p in producers {
        p.join().unwrap();
    }
    assert!(stopped.is_ok(), "{stopped:?}");
    drop(queue);

    let (sink, second) = ok_recorder::<u64>();
    let queue = Queue::new(config(dir.path()), sink).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(60)).unwrap();
    queue.stop().unwrap();

    let delivered: HashSet<u64> = first
        .lock()
        .delivered
        .iter()
        .chain(second.lock().delivered.iter())
        .map(|&(_, id)| id)
        .collect();
    let accepted = accepted.lock().unwrap();
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !delivered.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted items never delivered, e.g. {:?}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(5)]
    );
    let refused = refused.lock().unwrap();
    let replayed: Vec<_> = refused.iter().filter(|id| delivered.contains(id)).collect();
    assert!(
        replayed.is_empty(),
        "items refused as Closed were delivered: {:?}",
        &replayed[..replayed.len().min(5)]
    );
}

#[test]
fn a_sink_that_enqueues_while_the_queue_spills_gets_every_item_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue_slot: Arc<OnceLock<Arc<Queue<u64>>>> = Arc::new(OnceLock::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let (queue_slot, seen) = (Arc::clone(&queue_slot), Arc::clone(&seen));
        move |batch: &Batch<u64>| -> Result<(), SendError> {
            let queue = queue_slot.get().expect("set before start");
            for &v in batch.iter() {
                seen.lock().unwrap().push(v);
                // Each first-generation item begets one more, enqueued from inside the
                // sink: the ring (64) is full by then, so these spill to the log.
                if v < 10_000 {
                    queue
                        .enqueue(v + 10_000)
                        .map_err(|e| SendError::permanent(e.to_string()))?;
                }
            }
            Ok(())
        }
    };
    let queue = Arc::new(Queue::new(config(dir.path()), sink).unwrap());
    queue_slot.set(Arc::clone(&queue)).ok().unwrap();
    for v in 0..10_000 {
        queue.enqueue(v).unwrap();
    }
    assert_eq!(queue.metrics().spilled_total, 10_000 - 64);
    queue.start().unwrap();
    let all = 20_000;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < all {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {all} delivered",
            seen.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    queue.flush(Duration::from_secs(60)).unwrap();
    let m = queue.metrics();
    assert_eq!(m.dead_lettered_total, 0, "{m:?}");
    let mut seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), all, "an item came twice");
    seen.sort();
    assert_eq!(seen, (0..all as u64).collect::<Vec<_>>());
    queue.stop().unwrap();
}
