//! What `enqueue` does when the memory ring is full, under each `OverflowPolicy`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ok_recorder;
use vinequeue::{Config, EnqueueError, OverflowPolicy, Queue};

fn full_queue(policy: OverflowPolicy) -> (Queue<u32>, common::Shared<u32>) {
    let (sink, record) = ok_recorder::<u32>();
    let config = Config::default()
        .memory_size(4)
        .batch_size(2)
        .overflow(policy);
    let queue = Queue::new(config, sink).unwrap();
    // not started yet: nothing drains, so four items fill the ring
    queue.enqueue_batch(vec![0, 1, 2, 3]).unwrap();
    (queue, record)
}

#[test]
fn reject_hands_the_item_back_at_once() {
    let (queue, _) = full_queue(OverflowPolicy::Reject);
    let t0 = Instant::now();
    match queue.enqueue(4) {
        Err(EnqueueError::Full(item)) => assert_eq!(item, 4),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_millis(100));
    assert_eq!(queue.metrics().enqueued_total, 4);
}

#[test]
fn block_waits_for_its_timeout_then_hands_the_item_back() {
    let (queue, _) = full_queue(OverflowPolicy::Block(Duration::from_millis(100)));
    let t0 = Instant::now();
    let e = queue.enqueue(4).unwrap_err();
    assert!(e.is_full());
    assert_eq!(e.into_inner(), 4);
    assert!(t0.elapsed() >= Duration::from_millis(100));
}

#[test]
fn block_proceeds_as_soon_as_the_batcher_makes_room() {
    let (queue, record) = full_queue(OverflowPolicy::Block(Duration::from_secs(30)));
    let queue = Arc::new(queue);
    let q2 = Arc::clone(&queue);
    let producer = std::thread::spawn(move || {
        let t0 = Instant::now();
        q2.enqueue(4).unwrap();
        t0.elapsed()
    });
    std::thread::sleep(Duration::from_millis(50));
    queue.start().unwrap();
    let waited = producer.join().unwrap();
    assert!(waited >= Duration::from_millis(40) && waited < Duration::from_secs(10));
    queue.stop().unwrap();
    let values: Vec<u32> = record.lock().delivered.iter().map(|d| d.1).collect();
    assert_eq!(values, vec![0, 1, 2, 3, 4]);
}

#[test]
fn block_many_producers_against_a_slow_sink_lose_nothing() {
    let (sink, record) = common::recorder(|_, _: &vinequeue::Batch<u32>| {
        std::thread::sleep(Duration::from_micros(200));
        Ok(())
    });
    let config = Config::default()
        .memory_size(8)
        .batch_size(4)
        .flush_timeout(Duration::from_millis(1))
        .overflow(OverflowPolicy::Block(Duration::from_secs(30)));
    let queue = Arc::new(Queue::new(config, sink).unwrap());
    queue.start().unwrap();
    let handles: Vec<_> = (0..4u32)
        .map(|p| {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                for i in 0..500 {
                    queue.enqueue(p * 1000 + i).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    queue.stop().unwrap();
    let mut values: Vec<u32> = record.lock().delivered.iter().map(|d| d.1).collect();
    values.sort_unstable();
    let mut expected: Vec<u32> = (0..4)
        .flat_map(|p| (0..500).map(move |i| p * 1000 + i))
        .collect();
    expected.sort_unstable();
    assert_eq!(values, expected);
}

#[test]
fn drop_oldest_discards_the_oldest_and_counts_it() {
    let (queue, record) = full_queue(OverflowPolicy::DropOldest);
    queue.enqueue(4).unwrap();
    queue.enqueue(5).unwrap();
    let m = queue.metrics();
    assert_eq!(m.dropped_total, 2);
    assert_eq!(m.enqueued_total, 6);
    queue.start().unwrap();
    queue.stop().unwrap();
    let values: Vec<u32> = record.lock().delivered.iter().map(|d| d.1).collect();
    assert_eq!(values, vec![2, 3, 4, 5]);
    let m = queue.metrics();
    assert_eq!(m.enqueued_total, m.sent_total + m.dropped_total);
}

#[test]
fn drop_newest_discards_the_new_item_and_counts_it() {
    let (queue, record) = full_queue(OverflowPolicy::DropNewest);
    queue.enqueue(4).unwrap();
    assert_eq!(queue.metrics().dropped_total, 1);
    queue.start().unwrap();
    queue.stop().unwrap();
    let values: Vec<u32> = record.lock().delivered.iter().map(|d| d.1).collect();
    assert_eq!(values, vec![0, 1, 2, 3]);
    let m = queue.metrics();
    assert_eq!(m.enqueued_total, m.sent_total + m.dropped_total);
}

#[test]
fn enqueue_batch_hands_back_exactly_the_items_not_accepted() {
    let (sink, _) = ok_recorder::<u32>();
    let config = Config::default()
        .memory_size(4)
        .batch_size(2)
        .overflow(OverflowPolicy::Reject);
    let queue = Queue::new(config, sink).unwrap();
    queue.enqueue(100).unwrap();
    match queue.enqueue_batch(vec![1, 2, 3, 4, 5]) {
        Err(EnqueueError::Full(rest)) => assert_eq!(rest, vec![4, 5]),
        other => panic!("{other:?}"),
    }
    assert_eq!(queue.queue_size(), 4);
}

#[test]
fn drop_oldest_under_concurrency_keeps_the_books_balanced() {
    let (sink, record) = common::recorder(|_, _: &vinequeue::Batch<u64>| {
        std::thread::sleep(Duration::from_micros(50));
        Ok(())
    });
    let config = Config::default()
        .memory_size(16)
        .batch_size(4)
        .flush_timeout(Duration::from_millis(1))
        .overflow(OverflowPolicy::DropOldest);
    let queue = Arc::new(Queue::new(config, sink).unwrap());
    queue.start().unwrap();
    let handles: Vec<_> = (0..3u64)
        .map(|p| {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    queue.enqueue((p << 32) | i).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    queue.stop().unwrap();
    let m = queue.metrics();
    assert_eq!(m.enqueued_total, 60_000);
    assert_eq!(m.enqueued_total, m.sent_total + m.dropped_total);
    assert!(m.dropped_total > 0, "a slow sink must have forced drops");
    // survivors keep per-producer order
    let r = record.lock();
    let mut last = [None; 3];
    for &(_, v) in &r.delivered {
        let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
        assert!(last[p].is_none_or(|l| i > l));
        last[p] = Some(i);
    }
}
