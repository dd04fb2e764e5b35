//! Workloads shared by the criterion bench (`benches/throughput.rs`) and the `compare`
//! binary (`src/bin/compare.rs`), so that both measure exactly the same thing.
//!
//! Three contenders move the same items (`u64`) from `P` producer threads to one consumer:
//!
//! * **vinequeue**: a [`Queue`] in memory mode configured by [`vinequeue_config`] (ring of
//!   [`CAPACITY`] items, batches of [`BATCH_SIZE`], `OverflowPolicy::Block`), whose sink
//!   sums and counts every item of every batch;
//! * **crossbeam-channel** and **flume**: a bounded channel of [`CAPACITY`] items, whose
//!   consumer thread does a blocking `recv()` and then `try_recv()` until it holds
//!   [`BATCH_SIZE`] items or the channel is empty, then sums and counts that batch.
//!
//! Throughput ([`Contender::throughput`]) is timed from the first item a producer hands
//! over until the consumer has received the last one: the clock starts when the first
//! producer leaves the start barrier and stops inside the sink / consumer the moment its
//! count reaches the total. Creating the queue or channel, spawning threads and stopping
//! the queue are not timed. Every run checks that the consumer saw each item exactly once
//! (the sum of the values must be `0 + 1 + ... + (items - 1)`).
//!
//! Enqueue latency ([`Contender::enqueue_latency`]) times every single `enqueue` / `send`
//! call with a pair of [`Instant::now`] reads, into a vector preallocated per producer.
//!
//! The durable-mode workloads (the write-ahead log and the durable queue against plain
//! file I/O) are in the [`wal`] module, used by the `wal_compare` binary.
#![warn(missing_docs)]

pub mod damage;
pub mod e2e;
pub mod peers;
pub mod plots;
pub mod report;
pub mod wal;

use std::ops::Range;
use std::sync::mpsc;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use vinequeue::{Batch, Config, OverflowPolicy, Queue, SendError};

/// Capacity of the VineQueue ring and of both bounded channels, in items.
pub const CAPACITY: usize = 10_000;

/// Items per batch: VineQueue's `batch_size`, and the most a channel consumer drains at once.
pub const BATCH_SIZE: usize = 1_000;

/// How long a VineQueue producer may wait for room before `enqueue` gives up. Long enough
/// that it never happens in a benchmark (a `Full` error panics the run).
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a VineQueue workload waits for its sink to report the last item before it
/// panics instead of hanging.
const DONE_TIMEOUT: Duration = Duration::from_secs(300);

/// The VineQueue configuration every workload uses: memory mode, a ring of [`CAPACITY`]
/// items, batches of [`BATCH_SIZE`], and producers that block (up to [`BLOCK_TIMEOUT`])
/// when the ring is full, like a bounded channel's `send`.
pub fn vinequeue_config() -> Config {
    Config::default()
        .memory_size(CAPACITY)
        .batch_size(BATCH_SIZE)
        .overflow(OverflowPolicy::Block(BLOCK_TIMEOUT))
}

/// One of the queues under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contender {
    /// `vinequeue::Queue` in memory mode with a counting sink.
    VineQueue,
    /// `crossbeam_channel::bounded` with a consumer thread that drains in batches.
    Crossbeam,
    /// `flume::bounded` with a consumer thread that drains in batches.
    Flume,
}

impl Contender {
    /// Every contender, VineQueue first.
    pub const ALL: [Contender; 3] = [Contender::VineQueue, Contender::Crossbeam, Contender::Flume];

    /// The crate name, as printed in tables and benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            Contender::VineQueue => "vinequeue",
            Contender::Crossbeam => "crossbeam-channel",
            Contender::Flume => "flume",
        }
    }

    /// Moves `items` items from `producers` threads to the consumer and returns the time
    /// from the first hand-over until the consumer had all of them.
    ///
    /// # Panics
    ///
    /// If `producers` is 0, if `items` is not a positive multiple of [`BATCH_SIZE`] (a
    /// VineQueue batch that never fills would wait out the 5 s `flush_timeout`), or if an
    /// item is lost or duplicated.
    pub fn throughput(self, items: u64, producers: usize) -> Duration {
        assert!(producers > 0, "at least one producer");
        assert!(
            is_whole_batches(items),
            "items ({items}) must be a positive multiple of BATCH_SIZE ({BATCH_SIZE})"
        );
        match self {
            Contender::VineQueue => vinequeue_throughput(items, producers),
            Contender::Crossbeam => crossbeam_throughput(items, producers),
            Contender::Flume => flume_throughput(items, producers),
        }
    }

    /// Each of `producers` threads enqueues `per_producer` items as fast as it can while
    /// the consumer keeps up; returns the duration of every single `enqueue` / `send`
    /// call, in nanoseconds, unsorted (`producers * per_producer` samples).
    ///
    /// # Panics
    ///
    /// If `producers` is 0 or an item is lost or duplicated.
    pub fn enqueue_latency(self, per_producer: u64, producers: usize) -> Vec<u64> {
        assert!(producers > 0, "at least one producer");
        match self {
            Contender::VineQueue => vinequeue_latency(per_producer, producers),
            Contender::Crossbeam => crossbeam_latency(per_producer, producers),
            Contender::Flume => flume_latency(per_producer, producers),
        }
    }
}

/// Whether `items` is a positive whole number of batches of [`BATCH_SIZE`], as
/// [`Contender::throughput`] requires.
pub fn is_whole_batches(items: u64) -> bool {
    let batch = BATCH_SIZE as u64;
    // Written without `%` so that it reads the same under every MSRV clippy checks.
    items > 0 && items / batch * batch == items
}

/// Splits the values `0..items` into `producers` contiguous ranges whose lengths differ
/// by at most one.
pub fn producer_ranges(items: u64, producers: usize) -> Vec<Range<u64>> {
    let p = producers as u64;
    (0..p)
        .map(|i| (items * i / p)..(items * (i + 1) / p))
        .collect()
}

/// The sum a consumer must see after receiving each value of `0..items` exactly once.
pub fn expected_sum(items: u64) -> u64 {
    // The consumers add with `wrapping_add`, so compare modulo 2^64 too.
    (u128::from(items) * u128::from(items.saturating_sub(1)) / 2) as u64
}

/// Starts one thread per range of [`producer_ranges`]; each waits on `barrier` (which
/// must have room for the producers plus any extra party the caller adds), reads the
/// clock, and runs `produce` on its range. Returns the earliest of those clock reads:
/// the moment the first item could have been handed over.
fn run_producers<F>(items: u64, producers: usize, barrier: &Barrier, produce: F) -> Instant
where
    F: Fn(Range<u64>) + Sync,
{
    thread::scope(|s| {
        let handles: Vec<_> = producer_ranges(items, producers)
            .into_iter()
            .map(|range| {
                let produce = &produce;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    produce(range);
                    start
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("producer panicked"))
            .min()
            .expect("at least one producer")
    })
}

/// The channel consumer: a blocking receive, then non-blocking receives until the batch
/// holds [`BATCH_SIZE`] items or the channel is empty; sums and counts the batch; repeats
/// until `items` have arrived. Returns the instant the last one arrived and the sum.
fn drain_in_batches(
    items: u64,
    mut recv: impl FnMut() -> u64,
    mut try_recv: impl FnMut() -> Option<u64>,
) -> (Instant, u64) {
    let mut batch = Vec::with_capacity(BATCH_SIZE);
    let (mut seen, mut sum) = (0u64, 0u64);
    while seen < items {
        batch.push(recv());
        while batch.len() < BATCH_SIZE {
            match try_recv() {
                Some(v) => batch.push(v),
                None => break,
            }
        }
        sum = batch.iter().fold(sum, |acc, &v| acc.wrapping_add(v));
        seen += batch.len() as u64;
        batch.clear();
    }
    (Instant::now(), sum)
}

fn check_sum(contender: &str, items: u64, sum: u64) {
    assert_eq!(
        sum,
        expected_sum(items),
        "{contender}: the consumer did not see each of the {items} items exactly once"
    );
}

/// A VineQueue sink that sums and counts items, and reports `(instant, sum)` on `done`
/// when the count reaches `items`.
fn counting_sink(
    items: u64,
    done: mpsc::SyncSender<(Instant, u64)>,
) -> impl FnMut(&Batch<u64>) -> Result<(), SendError> + Send + 'static {
    let (mut seen, mut sum) = (0u64, 0u64);
    move |batch: &Batch<u64>| -> Result<(), SendError> {
        sum = batch.iter().fold(sum, |acc, &v| acc.wrapping_add(v));
        seen += batch.len() as u64;
        if seen == items {
            let _ = done.try_send((Instant::now(), sum));
        }
        Ok(())
    }
}

fn vinequeue_throughput(items: u64, producers: usize) -> Duration {
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let queue = Queue::new(vinequeue_config(), counting_sink(items, done_tx))
        .expect("the benchmark configuration is valid");
    queue.start().expect("start the queue");
    let barrier = Barrier::new(producers);
    let start = run_producers(items, producers, &barrier, |range| {
        for v in range {
            queue.enqueue(v).expect("enqueue (Block) cannot fail here");
        }
    });
    let (end, sum) = done_rx
        .recv_timeout(DONE_TIMEOUT)
        .expect("the sink reports the last item");
    queue.stop().expect("stop after everything was delivered");
    check_sum("vinequeue", items, sum);
    end - start
}

fn crossbeam_throughput(items: u64, producers: usize) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(CAPACITY);
    channel_throughput(
        "crossbeam-channel",
        items,
        producers,
        |v| tx.send(v).expect("receiver alive"),
        || rx.recv().expect("senders alive"),
        || rx.try_recv().ok(),
    )
}

fn flume_throughput(items: u64, producers: usize) -> Duration {
    let (tx, rx) = flume::bounded::<u64>(CAPACITY);
    channel_throughput(
        "flume",
        items,
        producers,
        |v| tx.send(v).expect("receiver alive"),
        || rx.recv().expect("senders alive"),
        || rx.try_recv().ok(),
    )
}

/// A channel's end-to-end run: producers `send`, one consumer drains in batches with a
/// blocking `recv` then `try_recv`.
fn channel_throughput(
    name: &str,
    items: u64,
    producers: usize,
    send: impl Fn(u64) + Sync,
    recv: impl Fn() -> u64 + Send,
    try_recv: impl Fn() -> Option<u64> + Send,
) -> Duration {
    let (start, end) = with_channel_consumer(name, items, producers, recv, try_recv, |b| {
        run_producers(items, producers, b, |range| {
            for v in range {
                send(v);
            }
        })
    });
    end - start
}

/// Runs `produce` (which starts the producers on the barrier) against one consumer that
/// drains `items` in batches with a blocking `recv` then `try_recv` and checks their sum;
/// returns what `produce` returned and when the consumer held the last item.
fn with_channel_consumer<R>(
    name: &str,
    items: u64,
    producers: usize,
    recv: impl Fn() -> u64 + Send,
    try_recv: impl Fn() -> Option<u64> + Send,
    produce: impl FnOnce(&Barrier) -> R,
) -> (R, Instant) {
    let barrier = Barrier::new(producers + 1);
    thread::scope(|s| {
        let consumer = s.spawn(|| {
            barrier.wait();
            drain_in_batches(items, recv, try_recv)
        });
        let produced = produce(&barrier);
        let (end, sum) = consumer.join().expect("consumer panicked");
        check_sum(name, items, sum);
        (produced, end)
    })
}

/// Runs `call` once per value of `range`, timing each call; returns the samples in ns.
#[inline(always)]
fn timed_calls(range: Range<u64>, mut call: impl FnMut(u64)) -> Vec<u64> {
    let mut samples = Vec::with_capacity((range.end - range.start) as usize);
    for v in range {
        let t0 = Instant::now();
        call(v);
        let t1 = Instant::now();
        samples.push((t1 - t0).as_nanos() as u64);
    }
    samples
}

/// Like [`run_producers`], but each producer returns its samples; they are concatenated.
fn sample_producers<F>(items: u64, producers: usize, barrier: &Barrier, produce: F) -> Vec<u64>
where
    F: Fn(Range<u64>) -> Vec<u64> + Sync,
{
    thread::scope(|s| {
        let handles: Vec<_> = producer_ranges(items, producers)
            .into_iter()
            .map(|range| {
                let produce = &produce;
                s.spawn(move || {
                    barrier.wait();
                    produce(range)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(items as usize);
        for h in handles {
            all.extend(h.join().expect("producer panicked"));
        }
        all
    })
}

fn vinequeue_latency(per_producer: u64, producers: usize) -> Vec<u64> {
    let items = per_producer * producers as u64;
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let queue = Queue::new(vinequeue_config(), counting_sink(items, done_tx))
        .expect("the benchmark configuration is valid");
    queue.start().expect("start the queue");
    let barrier = Barrier::new(producers);
    let samples = sample_producers(items, producers, &barrier, |range| {
        timed_calls(range, |v| {
            queue.enqueue(v).expect("enqueue (Block) cannot fail here");
        })
    });
    // `stop` delivers the last partial batch at once.
    queue.stop().expect("stop delivers everything");
    let (_, sum) = done_rx
        .recv_timeout(DONE_TIMEOUT)
        .expect("the sink reports the last item");
    check_sum("vinequeue", items, sum);
    samples
}

fn crossbeam_latency(per_producer: u64, producers: usize) -> Vec<u64> {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(CAPACITY);
    channel_latency(
        "crossbeam-channel",
        per_producer * producers as u64,
        producers,
        |v| tx.send(v).expect("receiver alive"),
        || rx.recv().expect("senders alive"),
        || rx.try_recv().ok(),
    )
}

fn flume_latency(per_producer: u64, producers: usize) -> Vec<u64> {
    let (tx, rx) = flume::bounded::<u64>(CAPACITY);
    channel_latency(
        "flume",
        per_producer * producers as u64,
        producers,
        |v| tx.send(v).expect("receiver alive"),
        || rx.recv().expect("senders alive"),
        || rx.try_recv().ok(),
    )
}

/// A channel's latency run: producers time every `send`, one consumer drains in batches
/// as in [`channel_throughput`].
fn channel_latency(
    name: &str,
    items: u64,
    producers: usize,
    send: impl Fn(u64) + Sync,
    recv: impl Fn() -> u64 + Send,
    try_recv: impl Fn() -> Option<u64> + Send,
) -> Vec<u64> {
    with_channel_consumer(name, items, producers, recv, try_recv, |b| {
        sample_producers(items, producers, b, |range| timed_calls(range, &send))
    })
    .0
}

/// The cost of the timing itself: `samples` back-to-back pairs of [`Instant::now`] with
/// nothing between them, in ns. Subtract its median mentally from the latency numbers.
pub fn timer_overhead(samples: u64) -> Vec<u64> {
    timed_calls(0..samples, |v| {
        std::hint::black_box(v);
    })
}

/// Order statistics of a set of latency samples, in nanoseconds (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Number of samples.
    pub count: usize,
    /// Number of samples above 1 µs (1 000 ns).
    pub above_1us: usize,
}

impl Percentiles {
    /// Sorts `samples` and reads the percentiles off it.
    ///
    /// # Panics
    ///
    /// If `samples` is empty.
    pub fn of(samples: &mut [u64]) -> Percentiles {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: f64| {
            let rank = ((n as f64) * q).ceil() as usize;
            samples[rank.clamp(1, n) - 1]
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[n - 1],
            count: n,
            above_1us: n - samples.partition_point(|&ns| ns <= 1_000),
        }
    }
}

/// The median of `values` (the mean of the two middle ones for an even count).
///
/// # Panics
///
/// If `values` is empty or holds a NaN.
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_value_once() {
        for (items, p) in [(10u64, 3usize), (4_000, 4), (7, 1), (3, 4)] {
            let ranges = producer_ranges(items, p);
            assert_eq!(ranges.len(), p);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[p - 1].end, items);
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
        }
    }

    #[test]
    fn whole_batches() {
        assert!(is_whole_batches(1_000) && is_whole_batches(4_000_000));
        assert!(!is_whole_batches(0) && !is_whole_batches(999) && !is_whole_batches(1_001));
    }

    #[test]
    fn expected_sum_matches_a_loop() {
        for items in [0u64, 1, 2, 3, 10, 1_001, 4_000_000] {
            assert_eq!(
                expected_sum(items),
                (0..items).sum::<u64>(),
                "items {items}"
            );
        }
    }

    #[test]
    fn every_contender_moves_every_item() {
        for c in Contender::ALL {
            for p in [1, 2, 4] {
                let d = c.throughput(20_000, p);
                assert!(d > Duration::ZERO, "{} P={p}", c.name());
            }
        }
    }

    #[test]
    fn every_contender_yields_one_sample_per_call() {
        for c in Contender::ALL {
            for p in [1, 3] {
                assert_eq!(c.enqueue_latency(1_234, p).len(), 1_234 * p, "{}", c.name());
            }
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s: Vec<u64> = (1..=1000).rev().collect();
        let p = Percentiles::of(&mut s);
        assert_eq!(
            (p.p50, p.p99, p.p999, p.max, p.count),
            (500, 990, 999, 1000, 1000)
        );
        assert_eq!(p.above_1us, 0);
        let mut s = vec![10, 1_000, 1_001, 50_000];
        assert_eq!(Percentiles::of(&mut s).above_1us, 2);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
