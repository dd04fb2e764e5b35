//! Feature `tracing`: a span per send attempt and events for retries, dead letters,
//! recovery (start, end, damage) and the replay of a backlog, seen by a subscriber
//! installed as the global default.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use vinequeue::{Batch, Config, Queue, SendError, SyncMode};

/// Every span name and event message (with its fields), in order.
#[derive(Default)]
struct Collected(Mutex<Vec<String>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

struct Collector(Arc<Collected>);

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields(format!("span {}", span.metadata().name()));
        span.record(&mut fields);
        self.0 .0.lock().unwrap().push(fields.0);
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(format!("{} event", event.metadata().level()));
        event.record(&mut fields);
        self.0 .0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn collected() -> &'static Arc<Collected> {
    static C: OnceLock<Arc<Collected>> = OnceLock::new();
    C.get_or_init(|| {
        let c = Arc::new(Collected::default());
        tracing::subscriber::set_global_default(Collector(Arc::clone(&c))).unwrap();
        c
    })
}

fn saw(what: &str) -> bool {
    collected()
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains(what))
}

#[test]
fn sends_retries_dead_letters_recovery_and_replay_are_reported() {
    let lines = collected();
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        Config::default()
            .wal_path(dir.path())
            .sync_mode(SyncMode::Immediate)
            .batch_size(10)
            .flush_timeout(Duration::from_millis(5))
            .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
            .shutdown_timeout(Duration::from_millis(200))
            .metrics_label("orders")
    };
    // A sink that fails once, then refuses item 13 for good.
    let mut calls = 0;
    let sink = move |b: &Batch<u32>| -> Result<(), SendError> {
        calls += 1;
        match calls {
            1 => Err(SendError::retry("connection reset")),
            _ if b.contains(&13) => Err(SendError::permanent("row 13 violates a constraint")),
            _ => Ok(()),
        }
    };
    let queue = Queue::new(config(), sink).unwrap();
    queue.start().unwrap();
    for i in 0..30 {
        queue.enqueue(i).unwrap();
    }
    queue.flush(Duration::from_secs(30)).unwrap();
    queue.stop().unwrap();
    assert!(saw("span send") && saw("attempt=1"), "{:?}", lines.0.lock());
    assert!(saw("send failed; retrying") && saw("connection reset"));
    assert!(saw("batch dead-lettered") && saw("row 13 violates a constraint"));
    assert!(saw("recovering the log") && saw("log recovered"));
    drop(queue); // lets go of the log

    // A backlog left in the log is replayed at the next start, and said so.
    let queue = Queue::new(config(), |_: &Batch<u32>| -> Result<(), SendError> {
        Err(SendError::retry("down"))
    })
    .unwrap();
    for i in 0..50 {
        queue.enqueue(i).unwrap();
    }
    drop(queue); // not delivered within the shutdown timeout: stays in the log
    let queue = Queue::new(config(), |_: &Batch<u32>| Ok::<(), SendError>(())).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(30)).unwrap();
    queue.stop().unwrap();
    assert!(saw("records=50"), "{:?}", lines.0.lock());
    assert!(saw("replaying the records found in the log") && saw("replay done"));

    drop(queue);

    // Damage found at the next open is reported, file and all.
    let queue = Queue::new(config(), |_: &Batch<u32>| -> Result<(), SendError> {
        Err(SendError::retry("down"))
    })
    .unwrap();
    for i in 0..50 {
        queue.enqueue(i).unwrap();
    }
    drop(queue);
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max() // the newest, holding the 50 records
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40 + 16 + 2] ^= 0xff; // inside the first record's payload
    std::fs::write(&seg, bytes).unwrap();
    let queue = Queue::new(config(), |_: &Batch<u32>| Ok::<(), SendError>(())).unwrap();
    assert_eq!(queue.recovery().corrupt_records, 1);
    assert!(saw("damage found at recovery"), "{:?}", lines.0.lock());
}
