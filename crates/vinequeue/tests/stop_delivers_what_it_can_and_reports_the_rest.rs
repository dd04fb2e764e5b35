//! Shutdown: `stop()`, `Drop`, and what happens to items that cannot be delivered.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ok_recorder, recorder};
use vinequeue::{
    Batch, Config, DeadLetterReason, EnqueueError, Error, OverflowPolicy, Queue, SendError,
};

#[test]
fn stop_delivers_everything_buffered_without_waiting_for_flush_timeout() {
    let (sink, record) = ok_recorder::<u32>();
    let config = Config::default()
        .batch_size(100)
        .flush_timeout(Duration::from_secs(3600));
    let queue = Queue::new(config, sink).unwrap();
    queue.start().unwrap();
    for i in 0..250 {
        queue.enqueue(i).unwrap();
    }
    let t0 = Instant::now();
    queue.stop().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(record.lock().delivered.len(), 250);
    assert!(queue.is_closed() && !queue.is_started());
}

#[test]
fn stop_is_idempotent_and_enqueue_after_it_is_closed() {
    let (sink, _) = ok_recorder::<u32>();
    let queue = Queue::new(Config::default(), sink).unwrap();
    queue.start().unwrap();
    queue.stop().unwrap();
    queue.stop().unwrap();
    match queue.enqueue(9) {
        Err(EnqueueError::Closed(item)) => assert_eq!(item, 9),
        other => panic!("{other:?}"),
    }
    assert!(matches!(queue.start(), Err(Error::Closed)));
    match queue.enqueue_batch(vec![1, 2]) {
        Err(EnqueueError::Closed(items)) => assert_eq!(items, vec![1, 2]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_stops_all_return_after_the_drain() {
    let (sink, record) = recorder(|_, _: &Batch<u32>| {
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    });
    let queue = Arc::new(Queue::new(Config::default().batch_size(10), sink).unwrap());
    queue.start().unwrap();
    queue.enqueue_batch((0..50).collect()).unwrap();
    let stoppers: Vec<_> = (0..3)
        .map(|_| {
            let q = Arc::clone(&queue);
            std::thread::spawn(move || q.stop())
        })
        .collect();
    for s in stoppers {
        s.join().unwrap().unwrap();
        assert_eq!(record.lock().delivered.len(), 50);
    }
}

#[test]
fn stop_before_start_still_delivers_what_was_enqueued() {
    let (sink, record) = ok_recorder::<u32>();
    let queue = Queue::new(Config::default(), sink).unwrap();
    queue.enqueue_batch(vec![1, 2, 3]).unwrap();
    queue.stop().unwrap();
    assert_eq!(record.lock().delivered.len(), 3);
}

#[test]
fn stop_with_a_failing_sink_gives_up_at_shutdown_timeout_and_hands_items_back() {
    let (sink, record) = recorder(|_, _: &Batch<u32>| Err(SendError::retry("down")));
    let config = Config::default()
        .batch_size(10)
        .memory_size(100)
        .retry_limit(u32::MAX)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .shutdown_timeout(Duration::from_millis(300));
    let queue = Queue::new(config, sink).unwrap();
    queue.start().unwrap();
    queue.enqueue_batch((0..35).collect()).unwrap();
    let t0 = Instant::now();
    match queue.stop() {
        Err(Error::ShutdownTimeout { undelivered }) => assert_eq!(undelivered, 35),
        other => panic!("expected ShutdownTimeout, got {other:?}"),
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let r = record.lock();
    let mut handed_back: Vec<u32> = r.dead.iter().flat_map(|d| d.1.clone()).collect();
    handed_back.sort_unstable();
    assert_eq!(handed_back, (0..35).collect::<Vec<_>>());
    assert!(r.dead.iter().all(|d| d.2 == DeadLetterReason::Shutdown));
    let m = queue.metrics();
    assert_eq!(m.abandoned_total, 35);
    assert_eq!(m.enqueued_total, m.sent_total + m.abandoned_total);
}

#[test]
fn stop_with_a_sink_stuck_forever_returns_within_the_timeout() {
    let release = Arc::new(AtomicBool::new(false));
    let r2 = Arc::clone(&release);
    let (sink, _) = recorder(move |_, _: &Batch<u32>| {
        while !r2.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    });
    let config = Config::default()
        .batch_size(1)
        .memory_size(10)
        .shutdown_timeout(Duration::from_millis(200));
    let queue = Queue::new(config, sink).unwrap();
    queue.start().unwrap();
    queue.enqueue_batch(vec![1, 2, 3]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    match queue.stop() {
        // One in the stuck send, two behind it.
        Err(Error::ShutdownTimeout { undelivered }) => assert_eq!(undelivered, 3),
        other => panic!("expected ShutdownTimeout, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(3));
    release.store(true, Ordering::SeqCst);
}

#[test]
fn drop_stops_and_delivers_and_never_hangs() {
    let (sink, record) = ok_recorder::<u32>();
    {
        let queue = Queue::new(
            Config::default().flush_timeout(Duration::from_secs(3600)),
            sink,
        )
        .unwrap();
        queue.start().unwrap();
        queue.enqueue_batch((0..10).collect()).unwrap();
    }
    assert_eq!(record.lock().delivered.len(), 10);

    // a stuck sink: drop is bounded by shutdown_timeout
    let (sink, _) = recorder(|_, _: &Batch<u32>| {
        std::thread::sleep(Duration::from_secs(3600));
        Ok(())
    });
    let t0 = Instant::now();
    {
        let queue = Queue::new(
            Config::default()
                .batch_size(1)
                .shutdown_timeout(Duration::from_millis(100)),
            sink,
        )
        .unwrap();
        queue.start().unwrap();
        queue.enqueue(1).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[test]
fn producers_blocked_on_a_full_ring_are_released_by_stop() {
    let (sink, _) = ok_recorder::<u32>();
    let config = Config::default()
        .memory_size(2)
        .batch_size(1)
        .overflow(OverflowPolicy::Block(Duration::from_secs(60)));
    let queue = Arc::new(Queue::new(config, sink).unwrap());
    queue.enqueue_batch(vec![1, 2]).unwrap(); // full, not started
    let q2 = Arc::clone(&queue);
    let blocked = std::thread::spawn(move || q2.enqueue(3));
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    queue.stop().unwrap();
    match blocked.join().unwrap() {
        Err(EnqueueError::Closed(3)) => {}
        Ok(()) => {} // it may have won the race for room during the drain
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn metrics_balance_after_stop_with_a_healthy_sink() {
    let (sink, _) = ok_recorder::<u64>();
    let queue = Arc::new(Queue::new(Config::default().batch_size(50), sink).unwrap());
    queue.start().unwrap();
    let hs: Vec<_> = (0..2)
        .map(|_| {
            let q = Arc::clone(&queue);
            std::thread::spawn(move || {
                for i in 0..10_000 {
                    q.enqueue(i).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    queue.stop().unwrap();
    let m = queue.metrics();
    assert_eq!(m.enqueued_total, 20_000);
    assert_eq!(m.enqueued_total, m.sent_total);
    assert_eq!((m.pending, m.memory_queue_size, m.errors_total), (0, 0, 0));
    assert!(m.batches_sent_total >= 400);
    assert!(m.send_latency_max >= m.send_latency_p99);
    assert!(m.send_latency_p99 >= m.send_latency_p50);
    assert_eq!(m.wal_size, 0);
    assert_eq!(queue.wal_size(), 0);
}

#[test]
fn latency_histograms_can_be_switched_off() {
    let (sink, _) = recorder(|_, _: &Batch<u8>| {
        std::thread::sleep(Duration::from_millis(2));
        Ok(())
    });
    let queue = Queue::new(Config::default().enable_metrics(false), sink).unwrap();
    queue.start().unwrap();
    queue.enqueue(1).unwrap();
    queue.stop().unwrap();
    let m = queue.metrics();
    assert_eq!(m.sent_total, 1);
    assert!(m.avg_send_latency >= Duration::from_millis(2));
    assert_eq!(m.send_latency_p99, Duration::ZERO);
}

#[test]
fn timeouts_of_duration_max_mean_no_limit_not_a_panic() {
    let forever = Duration::MAX;
    let config = Config::default()
        .memory_size(1)
        .batch_size(1)
        .flush_timeout(forever)
        .send_timeout(forever)
        .shutdown_timeout(forever)
        .retry_backoff(Duration::from_millis(1), forever)
        .overflow(OverflowPolicy::Block(forever));
    let (sink, record) = ok_recorder::<u32>();
    let queue = Queue::new(config, sink).unwrap();
    queue.start().unwrap();
    for i in 0..100 {
        queue.enqueue(i).unwrap(); // waits for room under Block(forever)
    }
    queue.flush(forever).unwrap();
    queue.stop().unwrap();
    assert_eq!(record.lock().delivered.len(), 100);
}

/// What a [`ReachesBack`] sink does with its queue.
type Act<T> = Box<dyn FnOnce(&Queue<T>) + Send>;

/// A sink that reaches back into its own queue from inside `send`: calls `act` with it
/// on the first call (the queue is set once it exists), then accepts everything.
struct ReachesBack<T: Send + 'static> {
    queue: Arc<std::sync::OnceLock<std::sync::Weak<Queue<T>>>>,
    act: Option<Act<T>>,
    delivered: Arc<parking_lot::Mutex<Vec<T>>>,
}

impl<T: Clone + Send + 'static> vinequeue::Sink<T> for ReachesBack<T> {
    fn send(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        if let Some(act) = self.act.take() {
            let queue = self
                .queue
                .get()
                .and_then(|w| w.upgrade())
                .expect("queue set");
            act(&queue);
        }
        self.delivered.lock().extend(batch.iter().cloned());
        Ok(())
    }
}

/// A queue whose sink runs `act` on it during the first send; returns the queue and what
/// the sink delivered.
fn reaching_back(
    config: Config,
    act: impl FnOnce(&Queue<u32>) + Send + 'static,
) -> (Arc<Queue<u32>>, Arc<parking_lot::Mutex<Vec<u32>>>) {
    let slot = Arc::new(std::sync::OnceLock::new());
    let delivered = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = ReachesBack {
        queue: Arc::clone(&slot),
        act: Some(Box::new(act)),
        delivered: Arc::clone(&delivered),
    };
    let queue = Arc::new(Queue::new(config, sink).unwrap());
    slot.set(Arc::downgrade(&queue)).unwrap();
    (queue, delivered)
}

#[test]
fn stop_and_flush_from_inside_the_sink_return_at_once() {
    let config = Config::default()
        .batch_size(1)
        .flush_timeout(Duration::from_millis(5))
        .shutdown_timeout(Duration::from_secs(20));
    let took = Arc::new(parking_lot::Mutex::new(None));
    let t = Arc::clone(&took);
    let (queue, delivered) = reaching_back(config, move |q| {
        let started = Instant::now();
        let flushed = q.flush(Duration::from_secs(20));
        let stopped = q.stop();
        let stopped_again = q.stop();
        *t.lock() = Some((started.elapsed(), flushed, stopped, stopped_again));
    });
    for i in 0..5 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    // Nobody else stops it: the batcher drains and completes the stop as it exits.
    assert!(
        common::eventually(Duration::from_secs(10), || !queue.is_started()),
        "the stop begun inside the sink never completed"
    );
    queue.stop().unwrap();
    let (elapsed, flushed, stopped, stopped_again) = took.lock().take().expect("the sink ran");
    assert!(
        elapsed < Duration::from_secs(5),
        "flush/stop inside the sink waited {elapsed:?} for themselves"
    );
    assert!(matches!(flushed, Err(Error::Unsupported(_))), "{flushed:?}");
    assert!(stopped.is_ok() && stopped_again.is_ok());
    assert_eq!(
        *delivered.lock(),
        vec![0, 1, 2, 3, 4],
        "the drain delivered everything"
    );
    assert!(queue.is_closed());
    assert!(matches!(queue.enqueue(9), Err(EnqueueError::Closed(9))));
}

#[test]
fn a_blocking_enqueue_from_inside_the_sink_does_not_wait_for_itself() {
    let config = Config::default()
        .memory_size(2)
        .batch_size(1)
        .flush_timeout(Duration::from_millis(5))
        .overflow(OverflowPolicy::Block(Duration::from_secs(20)));
    let took = Arc::new(parking_lot::Mutex::new(None));
    let t = Arc::clone(&took);
    let (queue, _) = reaching_back(config, move |q| {
        let started = Instant::now();
        // The ring holds one item (the batcher took the other) of two: the second of
        // these finds it full.
        let results: Vec<_> = (100..103).map(|i| q.enqueue(i)).collect();
        *t.lock() = Some((started.elapsed(), results));
    });
    for i in 0..2 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    queue.flush(Duration::from_secs(30)).unwrap();
    let (elapsed, results) = took.lock().take().expect("the sink ran");
    assert!(
        elapsed < Duration::from_secs(5),
        "waited {elapsed:?} for itself"
    );
    assert!(
        matches!(
            results[..],
            [
                Ok(_),
                Err(EnqueueError::Full(101)),
                Err(EnqueueError::Full(102))
            ]
        ),
        "the first fills the ring, the others find it full at once: {results:?}"
    );
    queue.stop().unwrap();
}

#[test]
fn a_stop_elsewhere_waits_for_one_begun_inside_the_sink_but_not_forever() {
    let config = Config::default()
        .batch_size(1)
        .flush_timeout(Duration::from_millis(5))
        .shutdown_timeout(Duration::from_millis(200));
    let inner_done = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&inner_done);
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = parking_lot::Mutex::new(held);
    let (queue, delivered) = reaching_back(config, move |q| {
        q.stop().unwrap();
        done.store(true, Ordering::SeqCst);
        // Then the send hangs, far past the shutdown deadline.
        let _ = held.lock().recv_timeout(Duration::from_secs(60));
    });
    for i in 0..5 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    assert!(common::eventually(Duration::from_secs(10), || inner_done
        .load(Ordering::SeqCst)));
    // This stop takes over the wait the inner one could not do, with its deadline.
    let started = Instant::now();
    let stopped = queue.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the outer stop waited {:?} for a sink stuck in send",
        started.elapsed()
    );
    assert!(
        matches!(stopped, Err(Error::ShutdownTimeout { .. })),
        "{stopped:?}"
    );
    assert!(!queue.is_started());
    assert!(delivered.lock().is_empty());
    let _ = release.send(());
}

#[test]
fn enqueues_from_inside_the_sink_while_the_ring_is_full_spill_to_the_log_in_order() {
    // Durable, a ring of two: the sink's own enqueues find it full and spill to the log
    // (they never wait for the batcher, which is the caller), and come out in order.
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .wal_path(dir.path())
        .memory_size(2)
        .batch_size(1)
        .flush_timeout(Duration::from_millis(5))
        .overflow(OverflowPolicy::Block(Duration::from_secs(20)));
    let took = Arc::new(parking_lot::Mutex::new(None));
    let t = Arc::clone(&took);
    let (queue, delivered) = reaching_back(config, move |q| {
        let started = Instant::now();
        let results: Vec<_> = (100..120).map(|i| q.enqueue(i)).collect();
        *t.lock() = Some((started.elapsed(), results));
    });
    for i in 0..2 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    assert!(common::eventually(Duration::from_secs(10), || took
        .lock()
        .is_some()));
    let (elapsed, results) = took.lock().take().unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "waited {elapsed:?} for itself"
    );
    queue.flush(Duration::from_secs(30)).unwrap();
    let m = queue.metrics();
    assert!(m.spilled_total >= 18, "{m:?}");
    queue.stop().unwrap();
    let expected: Vec<u32> = (0..2).chain(100..120).collect();
    assert_eq!(*delivered.lock(), expected);
}
