//! The end-to-end durable workloads, as a new user runs them: one producer, items that
//! are 60-byte strings, `memory_size` 10,000, batches of 1,000, a sink that counts.
//!
//! * **Durable delivery** ([`durable`]): `enqueue` of `items` items into a queue with a
//!   `wal_path`, timed until the sink has counted the last one. Baseline
//!   ([`durable_baseline`]): the same items postcard-encoded with a length prefix into a
//!   1 MiB `BufWriter` over one file, then one `fdatasync`.
//! * **Replay** ([`replay`]): a backlog of `items` items left in the log by a queue that
//!   was stopped while its sink refused everything; timed from `Queue::new` on that
//!   directory until the sink has counted the last one. Baseline ([`replay_baseline`]):
//!   `fs::read` of a file of the same records (length-prefixed postcard) and the decoding
//!   of every item.
//!
//! Every run checks the count (and the baselines the bytes) so that nothing is skipped.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vinequeue::{AsyncQueue, Batch, Config, OverflowPolicy, Queue, SendError, SyncMode};

/// The item every end-to-end workload moves: a 60-byte string.
pub fn item(i: u64) -> String {
    format!("{i:020}-event-payload-of-a-typical-size-xxxxxxxxxxx")
}

fn config(dir: &Path, sync: SyncMode) -> Config {
    Config::default()
        .wal_path(dir)
        .sync_mode(sync)
        .memory_size(10_000)
        .batch_size(1_000)
        .flush_timeout(Duration::from_millis(100))
        .wal_max_size(8 << 30)
        .overflow(OverflowPolicy::Block(Duration::from_secs(60)))
}

/// What the counting sink shares with the thread that waits for it.
struct Counted {
    count: AtomicU64,
    done: std::sync::OnceLock<Instant>,
}

impl Counted {
    /// Counts a batch of `n`; records the moment the count reaches `target` (the end of
    /// the timed span: the waiting thread sleeps rather than spin, so that it takes no
    /// CPU from the queue's threads on a machine of few cores).
    fn add(&self, n: usize, target: u64) {
        let total = self.count.fetch_add(n as u64, Ordering::AcqRel) + n as u64;
        debug_assert!(total <= target);
        if total >= target {
            let _ = self.done.set(Instant::now());
        }
    }
}

/// A sink that counts until `target`, and what it shares with [`wait_for`].
fn counting(
    target: u64,
) -> (
    impl FnMut(&Batch<String>) -> Result<(), SendError> + Send,
    Arc<Counted>,
) {
    let counted = Arc::new(Counted {
        count: AtomicU64::new(0),
        done: std::sync::OnceLock::new(),
    });
    let seen = Arc::clone(&counted);
    let sink = move |batch: &Batch<String>| {
        seen.add(batch.len(), target);
        Ok(())
    };
    (sink, counted)
}

/// Waits until the sink has counted every item; returns when it had.
fn wait_for(counted: &Counted, target: u64) -> Instant {
    let give_up = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(&at) = counted.done.get() {
            return at;
        }
        assert!(
            Instant::now() < give_up,
            "the sink never saw every item ({} of {target})",
            counted.count.load(Ordering::Acquire)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Durable delivery under `sync`: seconds from the first `enqueue` until the sink has
/// counted all `items`.
pub fn durable(scratch: &Path, sync: SyncMode, items: u64) -> f64 {
    let dir = tempfile::tempdir_in(scratch).expect("a scratch directory");
    let (sink, count) = counting(items);
    let queue = Queue::new(config(dir.path(), sync), sink).expect("the queue");
    queue.start().expect("start");
    let started = Instant::now();
    for i in 0..items {
        queue.enqueue(item(i)).expect("enqueue");
    }
    let secs = (wait_for(&count, items) - started).as_secs_f64();
    queue.stop().expect("stop");
    secs
}

/// [`durable`] with an async producer: an [`AsyncQueue`] with the same configuration,
/// one task awaiting `enqueue` for each item (on the calling thread, with
/// `futures::executor::block_on`), the batches delivered to a counting [`AsyncSink`]
/// spawned on a one-worker tokio runtime. Seconds from the first `enqueue` until the
/// sink has counted all `items`.
///
/// [`AsyncSink`]: vinequeue::AsyncSink
pub fn durable_async(scratch: &Path, sync: SyncMode, items: u64) -> f64 {
    let dir = tempfile::tempdir_in(scratch).expect("a scratch directory");
    let (_, count) = counting(items);
    let seen = Arc::clone(&count);
    let sink = move |batch: &Batch<String>| {
        seen.add(batch.len(), items);
        async { Ok(()) }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let (queue, delivery) =
        AsyncQueue::with_sink(config(dir.path(), sync), sink).expect("the queue");
    runtime.spawn(delivery);
    queue.start().expect("start");
    let started = Instant::now();
    futures::executor::block_on(async {
        for i in 0..items {
            queue.enqueue(item(i)).await.expect("enqueue");
        }
    });
    let secs = (wait_for(&count, items) - started).as_secs_f64();
    futures::executor::block_on(queue.stop()).expect("stop");
    secs
}

/// The baseline of [`durable`]: encode, length-prefix, buffer, one `fdatasync`.
pub fn durable_baseline(scratch: &Path, items: u64) -> f64 {
    let dir = tempfile::tempdir_in(scratch).expect("a scratch directory");
    let path = dir.path().join("records");
    let started = Instant::now();
    let file = File::create(&path).expect("create");
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut buf = Vec::with_capacity(128);
    for i in 0..items {
        buf.clear();
        let encoded = postcard::to_extend(&item(i), std::mem::take(&mut buf)).expect("encode");
        out.write_all(&(encoded.len() as u32).to_le_bytes())
            .expect("write");
        out.write_all(&encoded).expect("write");
        buf = encoded;
    }
    let file = out.into_inner().expect("flush");
    file.sync_data().expect("fdatasync");
    started.elapsed().as_secs_f64()
}

/// Leaves a backlog of `items` items in a log in `dir`: a queue whose sink refuses
/// everything is fed and stopped.
pub fn leave_backlog(dir: &Path, items: u64) {
    let refuse = Arc::new(AtomicBool::new(true));
    let r = Arc::clone(&refuse);
    let sink = move |_: &Batch<String>| -> Result<(), SendError> {
        if r.load(Ordering::Relaxed) {
            return Err(SendError::retry("outage"));
        }
        Ok(())
    };
    let config = config(dir, SyncMode::Periodic(Duration::from_millis(100)))
        .retry_backoff(Duration::from_secs(60), Duration::from_secs(60))
        .shutdown_timeout(Duration::from_millis(10));
    let queue = Queue::new(config, sink).expect("the queue");
    queue.start().expect("start");
    for i in 0..items {
        queue.enqueue(item(i)).expect("enqueue");
    }
    queue.sync().expect("sync");
    let _ = queue.stop(); // (times out: the backlog stays in the log)
}

/// Replay: seconds from `Queue::new` on a directory holding a backlog of `items` (left
/// by [`leave_backlog`]) until the sink has counted them all.
pub fn replay(dir: &Path, items: u64) -> f64 {
    let (sink, count) = counting(items);
    let started = Instant::now();
    let queue = Queue::new(
        config(dir, SyncMode::Periodic(Duration::from_millis(100))),
        sink,
    )
    .expect("the queue");
    queue.start().expect("start");
    let secs = (wait_for(&count, items) - started).as_secs_f64();
    queue.stop().expect("stop");
    secs
}

/// Writes the records of [`replay_baseline`] (length-prefixed postcard) into `path`.
pub fn write_records(path: &Path, items: u64) {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).expect("create"));
    for i in 0..items {
        let encoded = postcard::to_allocvec(&item(i)).expect("encode");
        out.write_all(&(encoded.len() as u32).to_le_bytes())
            .expect("write");
        out.write_all(&encoded).expect("write");
    }
    out.into_inner().expect("flush").sync_all().expect("sync");
}

/// The baseline of [`replay`]: `fs::read` of the records and the decoding of each.
pub fn replay_baseline(path: &Path, items: u64) -> f64 {
    let started = Instant::now();
    let bytes = std::fs::read(path).expect("read");
    let mut at = 0;
    let mut n = 0u64;
    let mut total = 0usize;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 4;
        let s: String = postcard::from_bytes(&bytes[at..at + len]).expect("decode");
        total += s.len();
        at += len;
        n += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(n, items);
    assert!(total >= items as usize * 60);
    secs
}
