//! The durable queue (`wal_path` set): restart and replay, spill-over during a sink
//! outage, acknowledgement and trimming, persistent dead letters, sync and flush.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, ok_recorder, recorder};
use vinequeue::{Batch, Config, Error, OverflowPolicy, Queue, SendError, SyncMode};

fn durable(dir: &std::path::Path) -> Config {
    Config::default()
        .wal_path(dir)
        .memory_size(100)
        .batch_size(10)
        .flush_timeout(Duration::from_millis(5))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .shutdown_timeout(Duration::from_millis(500))
}

#[test]
fn items_enqueued_before_a_restart_are_replayed_first_with_their_original_seqs() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The sink is down for this whole run: everything stays in the log.
        let (sink, _) = recorder(|_, _: &Batch<String>| Err(SendError::retry("down")));
        let config = durable(dir.path())
            .sync_mode(SyncMode::Immediate)
            .retry_limit(u32::MAX)
            .shutdown_timeout(Duration::from_millis(50));
        let queue = Queue::new(config, sink).unwrap();
        for i in 0..25 {
            queue.enqueue(format!("event {i}")).unwrap();
        }
        queue.start().unwrap();
        assert!(queue.stop().is_err(), "nothing could be delivered");
    }
    let (sink, record) = ok_recorder::<String>();
    let queue = Queue::new(durable(dir.path()), sink).unwrap();
    assert_eq!(queue.recovery().records, 25);
    queue.enqueue("after restart".to_string()).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let r = record.lock();
    let got: Vec<(u64, String)> = r.delivered.clone();
    assert_eq!(got.len(), 26);
    for (i, (seq, item)) in got.iter().take(25).enumerate() {
        assert_eq!(*seq, i as u64 + 1, "original seqs");
        assert_eq!(item, &format!("event {i}"));
    }
    assert_eq!(got[25], (26, "after restart".to_string()));
    let m = queue.metrics();
    assert_eq!(m.recovered_total, 25);
    assert_eq!(m.enqueued_total, 1);
    assert_eq!(m.sent_total, 26);
}

#[test]
fn a_sink_outage_spills_to_the_log_without_blocking_and_delivers_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let open = Arc::new(AtomicBool::new(false));
    let gate = Arc::clone(&open);
    let (sink, record) = recorder(move |_, _: &Batch<u64>| {
        if gate.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(SendError::retry("sink down"))
        }
    });
    let config = durable(dir.path())
        .retry_limit(u32::MAX)
        .overflow(OverflowPolicy::Reject);
    let queue = Queue::new(config, sink).unwrap();
    queue.start().unwrap();
    for i in 0..20_000u64 {
        queue
            .enqueue(i)
            .expect("a full ring spills to the log instead of refusing");
    }
    let m = queue.metrics();
    assert!(m.spilled_total > 19_000, "spilled {}", m.spilled_total);
    assert!(m.memory_queue_size <= 100);
    assert_eq!(m.pending, 20_000);
    open.store(true, Ordering::SeqCst);
    queue.flush(Duration::from_secs(60)).unwrap();
    let r = record.lock();
    assert_eq!(r.delivered.len(), 20_000, "exactly once");
    for (i, &(seq, v)) in r.delivered.iter().enumerate() {
        assert_eq!(
            (seq, v),
            (i as u64 + 1, i as u64),
            "FIFO by seq at position {i}"
        );
    }
    assert_eq!(queue.metrics().pending, 0);
}

#[test]
fn delivered_records_are_acknowledged_and_their_space_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = ok_recorder::<Vec<u8>>();
    let config = durable(dir.path())
        .wal_max_size(8 * 1024 * 1024)
        .batch_size(100)
        .memory_size(1000);
    let queue = Queue::new(config, sink).unwrap();
    queue.start().unwrap();
    // 40 MB through an 8 MB log: only possible if delivered records are trimmed.
    for _ in 0..10_000 {
        queue.enqueue(vec![7u8; 4000]).unwrap();
    }
    queue.flush(Duration::from_secs(60)).unwrap();
    assert!(queue.wal_size() <= 8 * 1024 * 1024, "{}", queue.wal_size());
    queue.stop().unwrap();
    drop(queue);
    let (sink, record) = ok_recorder::<Vec<u8>>();
    let queue = Queue::new(durable(dir.path()), sink).unwrap();
    assert_eq!(queue.recovery().records, 0, "nothing delivered is replayed");
    queue.start().unwrap();
    queue.flush(Duration::from_secs(5)).unwrap();
    assert!(record.lock().delivered.is_empty());
}

#[test]
fn a_full_log_applies_the_overflow_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = ok_recorder::<Vec<u8>>();
    let config = durable(dir.path())
        .wal_max_size(1024 * 1024)
        .overflow(OverflowPolicy::Reject);
    let queue = Queue::new(config, sink).unwrap(); // not started: nothing drains
    let mut accepted = 0;
    let err = loop {
        match queue.enqueue(vec![1u8; 2000]) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(err.is_full(), "{err}");
    assert!(accepted > 100);
    assert_eq!(err.into_inner().len(), 2000, "the item comes back");
}

#[test]
fn dead_letters_persist_and_can_be_redriven() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (sink, _) = recorder(|_, b: &Batch<String>| {
            if b.iter().any(|s| s.starts_with("bad")) {
                Err(SendError::permanent("schema violation"))
            } else {
                Ok(())
            }
        });
        let queue = Queue::new(durable(dir.path()).batch_size(1), sink).unwrap();
        queue.start().unwrap();
        for item in ["ok 1", "bad 1", "ok 2", "bad 2"] {
            queue.enqueue(item.to_string()).unwrap();
        }
        queue.flush(Duration::from_secs(10)).unwrap();
        assert_eq!(queue.metrics().dead_lettered_total, 2);
        queue.stop().unwrap();
    }
    let (sink, record) = ok_recorder::<String>();
    let queue = Queue::new(durable(dir.path()), sink).unwrap();
    let letters = queue.dead_letters(10).unwrap();
    let items: Vec<&str> = letters.iter().map(|l| l.item.as_deref().unwrap()).collect();
    assert_eq!(items, vec!["bad 1", "bad 2"]);
    assert_eq!(letters[0].seq, 2);
    assert!(
        letters[0].error.contains("schema violation"),
        "{}",
        letters[0].error
    );
    assert_eq!(letters[0].reason, "Permanent");
    assert_eq!(
        queue.recovery().records,
        0,
        "dead letters left the main log"
    );
    queue.start().unwrap();
    assert_eq!(queue.redrive_dead_letters().unwrap(), 2);
    queue.flush(Duration::from_secs(10)).unwrap();
    let delivered: Vec<String> = record
        .lock()
        .delivered
        .iter()
        .map(|d| d.1.clone())
        .collect();
    assert_eq!(delivered, vec!["bad 1".to_string(), "bad 2".to_string()]);
    assert!(queue.dead_letters(10).unwrap().is_empty());
}

#[test]
fn stop_that_cannot_deliver_leaves_the_rest_in_the_log_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (sink, _) = recorder(|_, _: &Batch<u32>| Err(SendError::retry("down")));
        let queue = Queue::new(durable(dir.path()).retry_limit(u32::MAX), sink).unwrap();
        queue.start().unwrap();
        for i in 0..50 {
            queue.enqueue(i).unwrap();
        }
        match queue.stop() {
            Err(Error::ShutdownTimeout { undelivered }) => assert_eq!(undelivered, 50),
            other => panic!("expected ShutdownTimeout, got {other:?}"),
        }
        assert_eq!(
            queue.metrics().dead_lettered_total,
            0,
            "durable: nothing is given up"
        );
    }
    let (sink, record) = ok_recorder::<u32>();
    let queue = Queue::new(durable(dir.path()), sink).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let values: Vec<u32> = record.lock().delivered.iter().map(|d| d.1).collect();
    assert_eq!(values, (0..50).collect::<Vec<_>>());
}

/// A queue over the log on the simulated disk (so that the power can be cut).
fn on_sim_disk(
    fs: &vinequeue::wal::sim::SimFs,
    mode: SyncMode,
) -> (Queue<u64>, common::Shared<u64>) {
    let wal = vinequeue::Wal::open_with(
        fs.clone(),
        "/srv/queue",
        vinequeue::WalOptions::default()
            .segment_size(256 * 1024)
            .max_size(1 << 30)
            .sync_mode(mode),
    )
    .unwrap();
    let (sink, record) = ok_recorder::<u64>();
    let queue = Queue::with_storage(
        durable(std::path::Path::new("/unused")).sync_mode(mode),
        Arc::new(wal),
        None,
        sink,
    )
    .unwrap();
    (queue, record)
}

#[test]
fn sync_makes_everything_durable_and_immediate_mode_syncs_each_enqueue() {
    for mode in [
        SyncMode::Immediate,
        SyncMode::Periodic(Duration::from_secs(3600)),
        SyncMode::Os,
    ] {
        let fs = vinequeue::wal::sim::SimFs::new(17);
        let (queue, _) = on_sim_disk(&fs, mode);
        let before = fs.sync_count();
        for i in 0..1000 {
            queue.enqueue(i).unwrap();
        }
        if mode == SyncMode::Immediate {
            // One producer: no enqueue shares another's sync.
            let syncs = fs.sync_count() - before;
            assert!(
                syncs >= 1000,
                "{syncs} syncs for 1000 enqueues under Immediate"
            );
        } else {
            queue.sync().unwrap();
        }
        // The power goes before anything is delivered.
        let fs = fs.power_cut();
        drop(queue);
        let (queue, record) = on_sim_disk(&fs, mode);
        queue.start().unwrap();
        queue.flush(Duration::from_secs(10)).unwrap();
        let values: Vec<u64> = record.lock().delivered.iter().map(|d| d.1).collect();
        assert_eq!(values, (0..1000).collect::<Vec<_>>(), "{mode:?}");
        queue.stop().unwrap();
    }
}

#[test]
fn a_second_queue_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = ok_recorder::<u8>();
    let _first = Queue::new(durable(dir.path()), sink).unwrap();
    let (sink, _) = ok_recorder::<u8>();
    assert!(matches!(
        Queue::new(durable(dir.path()), sink),
        Err(Error::Locked(_))
    ));
}

#[test]
fn many_producers_through_the_log_deliver_each_item_once_in_producer_order() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, record) = ok_recorder::<u64>();
    let queue =
        Arc::new(Queue::new(durable(dir.path()).memory_size(64).batch_size(50), sink).unwrap());
    queue.start().unwrap();
    let hs: Vec<_> = (0..4u64)
        .map(|p| {
            let q = Arc::clone(&queue);
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    q.enqueue((p << 32) | i).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    queue.flush(Duration::from_secs(60)).unwrap();
    let r = record.lock();
    assert_eq!(r.delivered.len(), 20_000);
    let mut next = [0u64; 4];
    let mut last_seq = 0;
    for &(seq, v) in &r.delivered {
        assert!(seq > last_seq);
        last_seq = seq;
        let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
        assert_eq!(i, next[p]);
        next[p] += 1;
    }
    assert!(eventually(Duration::from_secs(5), || queue
        .metrics()
        .pending
        == 0));
}

#[test]
fn drop_oldest_on_a_full_log_sheds_the_oldest_segment_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, record) = ok_recorder::<u64>();
    let config = durable(dir.path())
        .wal_max_size(1024 * 1024)
        .overflow(OverflowPolicy::DropOldest);
    let queue = Queue::new(config, sink).unwrap(); // not started: the log fills up
    for i in 0..60_000u64 {
        queue
            .enqueue(i)
            .expect("DropOldest makes room instead of refusing");
    }
    let m = queue.metrics();
    assert!(m.dropped_total > 0, "the log must have overflowed");
    assert!(queue.wal_size() <= 1024 * 1024);
    queue.start().unwrap();
    queue.flush(Duration::from_secs(30)).unwrap();
    let m = queue.metrics();
    assert_eq!(m.enqueued_total, 60_000);
    assert_eq!(m.enqueued_total, m.sent_total + m.dropped_total, "{m:?}");
    let r = record.lock();
    let values: Vec<u64> = r.delivered.iter().map(|d| d.1).collect();
    // what survives is the newest items, in order, ending with the last one
    assert_eq!(values.last(), Some(&59_999));
    assert!(
        values.windows(2).all(|w| w[1] == w[0] + 1),
        "a contiguous, newest run"
    );
}

/// A type postcard can write but not read back (untagged enums need a self-describing
/// format).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
enum Untagged {
    Number(u32),
}

#[test]
fn an_item_that_cannot_come_back_from_the_log_is_refused_under_immediate() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = ok_recorder::<Untagged>();
    let config = durable(dir.path()).sync_mode(SyncMode::Immediate);
    let queue = Queue::new(config, sink).unwrap();
    match queue.enqueue(Untagged::Number(7)) {
        Err(vinequeue::EnqueueError::Failed(item, Error::Codec(why))) => {
            assert_eq!(item, Untagged::Number(7), "the item comes back");
            assert!(why.message().contains("does not decode"), "{why}");
        }
        other => panic!("expected a codec failure, got {other:?}"),
    }
    assert_eq!(queue.metrics().enqueued_total, 0, "nothing reached the log");
}

#[test]
fn oldest_pending_age_grows_through_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let down = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&down);
    let (sink, _) = recorder(move |_, _: &Batch<u32>| {
        if flag.load(Ordering::SeqCst) {
            Err(SendError::retry("down"))
        } else {
            Ok(())
        }
    });
    let config = durable(dir.path())
        .retry_limit(u32::MAX)
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(20));
    let queue = Queue::new(config, sink).unwrap();
    queue.start().unwrap();
    // One batch takes everything and retries it: the oldest item is in that batch.
    for i in 0..5 {
        queue.enqueue(i).unwrap();
    }
    std::thread::sleep(Duration::from_millis(400));
    let age = queue.metrics().oldest_pending_age;
    assert!(
        age >= Duration::from_millis(350),
        "five items pending for 400 ms reported {age:?} old"
    );
    // More items keep coming; the age is still the oldest one's.
    for i in 5..10 {
        queue.enqueue(i).unwrap();
    }
    let age = queue.metrics().oldest_pending_age;
    assert!(age >= Duration::from_millis(350), "{age:?}");
    down.store(false, Ordering::SeqCst);
    queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(queue.metrics().oldest_pending_age, Duration::ZERO);
}
