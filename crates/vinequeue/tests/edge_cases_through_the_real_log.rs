//! Items at the edges, through the real log: the largest record and one byte more, the
//! unit type, a `Serialize` that fails, an item whose `Drop` panics, a queue dropped
//! without `stop()`, a backlog spilled to the log then taken up by the next start, and a
//! log whose numbers are used up.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, ok_recorder, recorder};
use serde::{Deserialize, Serialize, Serializer};
use std::path::Path;

use vinequeue::wal::format::{Checkpoint, MAX_SEQ, SEGMENT_HEADER_LEN};
use vinequeue::wal::sim::SimFs;
use vinequeue::{Batch, Config, EnqueueError, Error, Queue, SendError, Storage, SyncMode};
use vinequeue::{Wal, WalOptions};

fn config(dir: &std::path::Path) -> Config {
    Config::default()
        .wal_path(dir)
        .sync_mode(SyncMode::Immediate)
        .memory_size(16)
        .batch_size(4)
        .flush_timeout(Duration::from_millis(5))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .shutdown_timeout(Duration::from_secs(10))
}

#[test]
fn the_largest_record_goes_through_and_one_byte_more_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, record) = ok_recorder::<Vec<u8>>();
    let queue = Queue::new(config(dir.path()), sink).unwrap();
    // The limit, as the error for a record far beyond it tells it.
    let limit = match queue.enqueue(vec![0; 64 << 20]) {
        Err(EnqueueError::Failed(_, Error::RecordTooLarge { limit, .. })) => limit as usize,
        other => panic!(
            "expected RecordTooLarge, got {:?}",
            other.map_err(|e| e.to_string())
        ),
    };
    // postcard: a varint length (4 bytes at this size), then the bytes.
    let fits: Vec<u8> = (0..limit - 4).map(|i| (i % 251) as u8).collect();
    assert_eq!(postcard::to_allocvec(&fits).unwrap().len(), limit);
    queue
        .enqueue(fits.clone())
        .expect("a record of exactly the limit");
    let over = vec![7u8; limit - 3];
    match queue.enqueue(over) {
        Err(EnqueueError::Failed(back, Error::RecordTooLarge { len, limit: l })) => {
            assert_eq!((len as usize, l as usize), (limit + 1, limit));
            assert_eq!(back.len(), limit - 3, "the item is handed back");
        }
        other => panic!(
            "expected RecordTooLarge, got {:?}",
            other.map_err(|e| e.to_string())
        ),
    }
    queue.start().unwrap();
    queue.flush(Duration::from_secs(30)).unwrap();
    queue.stop().unwrap();
    let delivered = &record.lock().delivered;
    assert_eq!(delivered.len(), 1);
    assert!(
        delivered[0].1 == fits,
        "the largest record came back changed"
    );
}

#[test]
fn unit_items_are_counted_through_the_log_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (sink, _) = recorder(|_, _: &Batch<()>| Err(SendError::retry("down")));
        let queue = Queue::new(
            config(dir.path())
                .retry_limit(u32::MAX)
                .shutdown_timeout(Duration::from_millis(100)),
            sink,
        )
        .unwrap();
        for _ in 0..100 {
            queue.enqueue(()).unwrap();
        }
        // Never started; `stop` tries to deliver within `shutdown_timeout` and reports
        // what stays in the log.
        match queue.stop() {
            Err(Error::ShutdownTimeout { undelivered }) => assert_eq!(undelivered, 100),
            other => panic!("expected ShutdownTimeout, got {other:?}"),
        }
    }
    let (sink, record) = ok_recorder::<()>();
    let queue = Queue::new(config(dir.path()), sink).unwrap();
    queue.start().unwrap();
    for _ in 0..10 {
        queue.enqueue(()).unwrap();
    }
    queue.flush(Duration::from_secs(30)).unwrap();
    queue.stop().unwrap();
    let seqs: Vec<u64> = record.lock().delivered.iter().map(|&(s, ())| s).collect();
    assert_eq!(seqs.len(), 110);
    assert_eq!(seqs[..100], (1..=100).collect::<Vec<_>>()[..]);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

/// Serializes fine unless `fail` is set.
#[derive(Clone, Debug, Deserialize)]
struct Fussy {
    fail: bool,
    value: u32,
}

impl Serialize for Fussy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.fail {
            return Err(serde::ser::Error::custom("this one does not serialize"));
        }
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Fussy", 2)?;
        st.serialize_field("fail", &self.fail)?;
        st.serialize_field("value", &self.value)?;
        st.end()
    }
}

#[test]
fn an_item_whose_serialize_fails_is_handed_back_and_the_queue_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, record) = ok_recorder::<Fussy>();
    let queue = Queue::new(config(dir.path()), sink).unwrap();
    queue.start().unwrap();
    queue
        .enqueue(Fussy {
            fail: false,
            value: 1,
        })
        .unwrap();
    match queue.enqueue(Fussy {
        fail: true,
        value: 2,
    }) {
        Err(EnqueueError::Failed(back, Error::Codec(_))) => assert_eq!(back.value, 2),
        other => panic!(
            "expected a codec error, got {:?}",
            other.map_err(|e| e.to_string())
        ),
    }
    queue
        .enqueue(Fussy {
            fail: false,
            value: 3,
        })
        .unwrap();
    queue.flush(Duration::from_secs(30)).unwrap();
    queue.stop().unwrap();
    let got: Vec<(u64, u32)> = record
        .lock()
        .delivered
        .iter()
        .map(|(s, f)| (*s, f.value))
        .collect();
    assert_eq!(
        got,
        vec![(1, 1), (2, 3)],
        "nothing was logged for the failed item"
    );
}

/// Panics when dropped if `boom` is set (once the queue is done with it).
#[derive(Debug, Serialize, Deserialize)]
struct Grenade {
    boom: bool,
    value: u32,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static EXPLODED: AtomicU64 = AtomicU64::new(0);

impl Drop for Grenade {
    fn drop(&mut self) {
        if self.boom && ARMED.load(Ordering::SeqCst) && !std::thread::panicking() {
            EXPLODED.fetch_add(1, Ordering::SeqCst);
            panic!("an item's drop panicked");
        }
    }
}

#[test]
fn an_item_whose_drop_panics_does_not_stop_delivery() {
    ARMED.store(true, Ordering::SeqCst);
    let delivered = Arc::new(AtomicU64::new(0));
    let d = Arc::clone(&delivered);
    let sink = move |batch: &Batch<Grenade>| -> Result<(), SendError> {
        d.fetch_add(batch.len() as u64, Ordering::SeqCst);
        Ok(())
    };
    let queue = Queue::new(
        Config::default()
            .memory_size(16)
            .batch_size(1)
            .flush_timeout(Duration::from_millis(5)),
        sink,
    )
    .unwrap();
    queue.start().unwrap();
    queue
        .enqueue(Grenade {
            boom: true,
            value: 1,
        })
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || delivered
        .load(Ordering::SeqCst)
        == 1));
    for value in 2..=20 {
        queue.enqueue(Grenade { boom: false, value }).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || delivered.load(Ordering::SeqCst)
            == 20),
        "delivery stopped after an item's drop panicked: {} delivered",
        delivered.load(Ordering::SeqCst)
    );
    assert_eq!(EXPLODED.load(Ordering::SeqCst), 1);
    ARMED.store(false, Ordering::SeqCst);
    queue.stop().unwrap();
}

#[test]
fn a_queue_dropped_without_stop_loses_nothing_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(AtomicBool::new(false));
    let first = {
        let gate = Arc::clone(&gate);
        let (sink, record) = recorder(move |_, _: &Batch<u32>| {
            if gate.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(SendError::retry("not yet"))
            }
        });
        let queue = Queue::new(
            config(dir.path())
                .retry_limit(u32::MAX)
                .shutdown_timeout(Duration::from_millis(200)),
            sink,
        )
        .unwrap();
        queue.start().unwrap();
        for v in 0..50 {
            queue.enqueue(v).unwrap();
        }
        drop(queue); // no stop(): the drop stops it within shutdown_timeout
        let seqs: Vec<u64> = record.lock().delivered.iter().map(|&(s, _)| s).collect();
        seqs
    };
    assert!(first.is_empty(), "the sink refused everything: {first:?}");
    gate.store(true, Ordering::SeqCst);
    let (sink, record) = ok_recorder::<u32>();
    let queue = Queue::new(config(dir.path()), sink).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(30)).unwrap();
    queue.stop().unwrap();
    let got: Vec<(u64, u32)> = record.lock().delivered.clone();
    assert_eq!(
        got,
        (0..50).map(|v| (v as u64 + 1, v)).collect::<Vec<_>>(),
        "every item, once, in order, with its number"
    );
}

#[test]
fn a_spilled_backlog_is_delivered_in_order_at_the_next_start_then_the_new_items() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Not started: the ring (16) fills and the rest spills to the log; the sink is
        // down, so the stop delivers none of it.
        let (sink, _) = recorder(|_, _: &Batch<u32>| Err(SendError::retry("down")));
        let queue = Queue::new(
            config(dir.path())
                .retry_limit(u32::MAX)
                .shutdown_timeout(Duration::from_millis(100)),
            sink,
        )
        .unwrap();
        for v in 0..1000 {
            queue.enqueue(v).unwrap();
        }
        // The ring holds `memory_size` (16); the rest spilled.
        assert_eq!(queue.metrics().spilled_total, 984, "{:?}", queue.metrics());
        assert!(matches!(
            queue.stop(),
            Err(Error::ShutdownTimeout { undelivered: 1000 })
        ));
    }
    let (sink, record) = ok_recorder::<u32>();
    let queue = Queue::new(config(dir.path()), sink).unwrap();
    queue.start().unwrap();
    for v in 1000..1100 {
        queue.enqueue(v).unwrap();
    }
    queue.flush(Duration::from_secs(30)).unwrap();
    queue.stop().unwrap();
    let got = record.lock().delivered.clone();
    assert_eq!(got.len(), 1100);
    // The backlog first, with its numbers, in order; the new items after it, above them.
    for (i, &(seq, v)) in got[..1000].iter().enumerate() {
        assert_eq!((seq, v), (i as u64 + 1, i as u32));
    }
    let new: Vec<u32> = got[1000..].iter().map(|&(_, v)| v).collect();
    assert_eq!(new, (1000..1100).collect::<Vec<_>>());
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn a_queue_over_a_log_whose_numbers_are_used_up_delivers_and_acknowledges_promptly() {
    // Everything between record 3 and the last number holds no record: 2^62 numbers the
    // batcher steps over, and must acknowledge in one go, not one by one. (The records
    // are six bytes, which postcard decodes as a `[u8; 6]`.)
    let fs = SimFs::new(3);
    let opts = || WalOptions::default().segment_size(64 * 1024);
    let wal = Wal::open_with(fs.clone(), "/wal", opts()).unwrap();
    for _ in 0..3 {
        wal.append(b"record").unwrap();
    }
    drop(wal);
    let fs = fs.process_crash();
    // Its checkpoint reserved every number there is.
    let cp = Checkpoint {
        generation: 9,
        acked_through: 0,
        next_seq: MAX_SEQ,
        segment: 1,
        offset: SEGMENT_HEADER_LEN as u64,
        synced_through: 3,
        acked_above: Vec::new(),
    };
    fs.put_file(&Path::new("/wal").join("checkpoint"), &cp.encode_file());
    let wal = std::sync::Arc::new(Wal::open_with(fs, "/wal", opts()).unwrap());
    let delivered = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let d = std::sync::Arc::clone(&delivered);
    let sink = move |b: &vinequeue::Batch<[u8; 6]>| -> Result<(), vinequeue::SendError> {
        d.lock().extend(b.seqs().iter().copied());
        Ok(())
    };
    let config = vinequeue::Config::default().flush_timeout(std::time::Duration::from_millis(5));
    let queue = vinequeue::Queue::with_storage(config, wal.clone(), None, sink).unwrap();
    queue.start().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(queue.flush(std::time::Duration::from_secs(60)));
        let _ = queue.stop();
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the batcher is still stepping over the lost numbers")
        .unwrap();
    assert_eq!(*delivered.lock(), vec![1, 2, 3]);
}
