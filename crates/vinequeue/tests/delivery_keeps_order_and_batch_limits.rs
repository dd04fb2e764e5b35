//! Items arrive exactly once, in order, in batches no larger than `batch_size`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, ok_recorder};
use vinequeue::{Config, Queue};

#[test]
fn four_producers_of_100k_items_each_are_delivered_exactly_once_in_producer_order() {
    let producers = 4u64;
    let per_producer = 100_000u64;
    let (sink, record) = ok_recorder::<u64>();
    let config = Config::default()
        .memory_size(10_000)
        .batch_size(1_000)
        .flush_timeout(Duration::from_millis(20));
    let queue = Arc::new(Queue::new(config, sink).unwrap());
    queue.start().unwrap();
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                for i in 0..per_producer {
                    queue.enqueue((p << 32) | i).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    queue.stop().unwrap();

    let r = record.lock();
    assert_eq!(r.delivered.len() as u64, producers * per_producer);
    let mut next = vec![0u64; producers as usize];
    let mut last_seq = 0;
    for &(seq, v) in &r.delivered {
        assert!(seq > last_seq, "seqs must increase: {seq} after {last_seq}");
        last_seq = seq;
        let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
        assert_eq!(i, next[p], "producer {p} out of order");
        next[p] += 1;
    }
    assert!(next.iter().all(|&n| n == per_producer));
    assert!(r.calls.iter().all(|(seqs, _, _)| seqs.len() <= 1_000));
    let m = queue.metrics();
    assert_eq!(m.enqueued_total, producers * per_producer);
    assert_eq!(m.sent_total, m.enqueued_total);
    assert_eq!(m.batches_sent_total as usize, r.calls.len());
    assert_eq!(m.pending, 0);
}

#[test]
fn sequence_numbers_are_unique_and_dense_in_memory_mode() {
    let (sink, record) = ok_recorder::<u32>();
    let queue = Queue::new(Config::default().batch_size(7).memory_size(64), sink).unwrap();
    queue.start().unwrap();
    for i in 0..500 {
        queue.enqueue(i).unwrap();
    }
    queue.stop().unwrap();
    let r = record.lock();
    let seqs: Vec<u64> = r.delivered.iter().map(|d| d.0).collect();
    assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
    let unique: HashSet<_> = seqs.iter().collect();
    assert_eq!(unique.len(), 500);
    for (seqs, items, attempt) in &r.calls {
        assert_eq!(*attempt, 0);
        assert!(seqs.len() <= 7 && !seqs.is_empty());
        // item i was enqueued as the (i+1)-th item
        for (s, v) in seqs.iter().zip(items) {
            assert_eq!(*s, *v as u64 + 1);
        }
    }
}

#[test]
fn a_partial_batch_is_sent_once_flush_timeout_has_passed() {
    let (sink, record) = ok_recorder::<u8>();
    let flush_timeout = Duration::from_millis(150);
    let queue = Queue::new(
        Config::default()
            .batch_size(100)
            .flush_timeout(flush_timeout),
        sink,
    )
    .unwrap();
    queue.start().unwrap();
    let t0 = Instant::now();
    queue.enqueue(1).unwrap();
    queue.enqueue(2).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        record.lock().calls.is_empty(),
        "a batch of 2 out of 100 must wait for flush_timeout"
    );
    assert!(eventually(Duration::from_secs(5), || !record
        .lock()
        .calls
        .is_empty()));
    let waited = t0.elapsed();
    assert!(
        waited >= flush_timeout - Duration::from_millis(5),
        "sent after {waited:?}"
    );
    assert_eq!(record.lock().calls[0].1, vec![1, 2]);
    queue.stop().unwrap();
}

#[test]
fn a_full_batch_is_sent_without_waiting_for_flush_timeout() {
    let (sink, record) = ok_recorder::<u8>();
    let queue = Queue::new(
        Config::default()
            .batch_size(10)
            .flush_timeout(Duration::from_secs(60)),
        sink,
    )
    .unwrap();
    queue.start().unwrap();
    for i in 0..10 {
        queue.enqueue(i).unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || record
        .lock()
        .calls
        .len()
        == 1));
    assert_eq!(record.lock().calls[0].1.len(), 10);
    queue.stop().unwrap();
}

#[test]
fn flush_delivers_a_partial_batch_now_and_the_queue_keeps_running() {
    let (sink, record) = ok_recorder::<u8>();
    let queue = Queue::new(
        Config::default()
            .batch_size(100)
            .flush_timeout(Duration::from_secs(60)),
        sink,
    )
    .unwrap();
    queue.start().unwrap();
    queue.enqueue(1).unwrap();
    queue.enqueue(2).unwrap();
    let t0 = Instant::now();
    queue.flush(Duration::from_secs(10)).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(record.lock().delivered.len(), 2);
    assert!(queue.is_started() && !queue.is_closed());
    queue.enqueue(3).unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(record.lock().delivered.len(), 3);
    // nothing pending: returns at once
    queue.flush(Duration::from_millis(1)).unwrap();
    queue.stop().unwrap();
}

#[test]
fn flush_before_start_with_items_says_not_started() {
    let (sink, _record) = ok_recorder::<u8>();
    let queue = Queue::new(Config::default(), sink).unwrap();
    queue.flush(Duration::from_millis(10)).unwrap(); // nothing to deliver
    queue.enqueue(1).unwrap();
    assert!(matches!(
        queue.flush(Duration::from_millis(10)),
        Err(vinequeue::Error::NotStarted)
    ));
}

#[test]
fn flush_times_out_with_the_pending_count_when_the_sink_is_slow() {
    let (sink, _record) = common::recorder(|_, _: &vinequeue::Batch<u8>| {
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    });
    let queue = Queue::new(Config::default().batch_size(1).memory_size(10), sink).unwrap();
    queue.start().unwrap();
    for i in 0..3 {
        queue.enqueue(i).unwrap();
    }
    match queue.flush(Duration::from_millis(50)) {
        // Each send takes 300 ms: none is done when the flush gives up.
        Err(vinequeue::Error::FlushTimeout { pending }) => assert_eq!(pending, 3),
        other => panic!("expected FlushTimeout, got {other:?}"),
    }
    queue.stop().unwrap();
}
