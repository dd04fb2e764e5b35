//! Prints a markdown report: end-to-end throughput of VineQueue's async adapter
//! (`vinequeue_async::AsyncQueue`, memory mode, delivering to a no-op `AsyncSink`)
//! against a bounded `tokio::sync::mpsc` channel whose consumer task drains it with
//! `recv_many`, both on tokio.
//!
//! ```text
//! cargo run --release -p vinequeue-benches --bin async_compare
//! cargo run --release -p vinequeue-benches --bin async_compare -- --items 200000 --rounds 1
//! ```
//!
//! Options (all optional): `--items N` items per run (a multiple of every batch size,
//! default 2 000 000), `--rounds R` (default 5), `--producers 1,4` producer tasks,
//! `--batch-sizes 100,1000`, `--runtimes multi,current` (tokio's multi-thread runtime
//! with 2 workers, and its current-thread runtime), `--payloads u64,bytes100` (a `u64`,
//! or a 100-byte `Vec<u8>` allocated by the producer and freed after delivery),
//! `--contenders vinequeue,mpsc` (run one alone, for profiling; the ratio needs both).
//!
//! Both contenders get the same work in every case: the same items, the same number of
//! producer tasks (each `await`s one `enqueue` / `send` per item over its share of the
//! values), the same capacity (the mpsc bound is VineQueue's `memory_size`, [`CAPACITY`])
//! and the same batch size (VineQueue's `batch_size` is the `recv_many` limit). The
//! consumer (VineQueue's sink, or the mpsc consumer task) reads the value of every item
//! of every batch, counts them, and reads the clock when the count reaches the total;
//! the run's time is from the first producer leaving the start barrier until then.
//! Creating the queue or channel, spawning the tasks and stopping the queue are not
//! timed. Every run checks that each value arrived exactly once.
//!
//! Rounds interleave the contenders (and alternate which goes first) so that a noisy
//! neighbour hits both alike; the table reports medians over the rounds. Progress goes to
//! stderr, the report to stdout.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vinequeue_benches::report;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, Barrier};
use vinequeue::{Batch, Config, OverflowPolicy, SendError};
use vinequeue_async::{AsyncQueue, AsyncSink};
use vinequeue_benches::{expected_sum, median, producer_ranges, BLOCK_TIMEOUT, CAPACITY};

/// Size of the `bytes100` payload.
const PAYLOAD_BYTES: usize = 100;

/// How long the VineQueue workload's final `flush` may take before the run panics
/// instead of hanging.
const DONE_TIMEOUT: Duration = Duration::from_secs(300);

/// A tokio runtime flavour under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Flavor {
    /// `new_multi_thread().worker_threads(2)`.
    Multi,
    /// `new_current_thread()`: producers and consumer share one thread.
    Current,
}

impl Flavor {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "multi" => Some(Flavor::Multi),
            "current" => Some(Flavor::Current),
            _ => None,
        }
    }

    fn build(self) -> Runtime {
        let mut builder = match self {
            Flavor::Multi => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(2);
                b
            }
            Flavor::Current => tokio::runtime::Builder::new_current_thread(),
        };
        builder.build().expect("build the tokio runtime")
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::Multi => "multi-thread (2 workers)",
            Flavor::Current => "current-thread",
        })
    }
}

/// The item type moved from producers to consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Payload {
    /// A `u64`: the value itself.
    U64,
    /// A `Vec<u8>` of [`PAYLOAD_BYTES`] bytes whose first eight hold the value.
    Bytes100,
}

impl Payload {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "u64" => Some(Payload::U64),
            "bytes100" => Some(Payload::Bytes100),
            _ => None,
        }
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Payload::U64 => "u64",
            Payload::Bytes100 => "100-byte Vec<u8>",
        })
    }
}

/// What a workload needs of an item: made from a value by a producer, read back by the
/// consumer (to check that every value arrived once), and the async adapter's bounds.
trait Item: Serialize + DeserializeOwned + Send + Sync + 'static {
    fn make(value: u64) -> Self;
    fn value(&self) -> u64;
}

impl Item for u64 {
    #[inline]
    fn make(value: u64) -> Self {
        value
    }

    #[inline]
    fn value(&self) -> u64 {
        *self
    }
}

impl Item for Vec<u8> {
    #[inline]
    fn make(value: u64) -> Self {
        let mut bytes = vec![0u8; PAYLOAD_BYTES];
        bytes[..8].copy_from_slice(&value.to_le_bytes());
        bytes
    }

    #[inline]
    fn value(&self) -> u64 {
        u64::from_le_bytes(self[..8].try_into().expect("at least 8 bytes"))
    }
}

/// One of the two contenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Contender {
    /// `AsyncQueue` with `deliver_to` a no-op (counting) `AsyncSink`.
    VineQueue,
    /// `tokio::sync::mpsc::channel` with a consumer task calling `recv_many`.
    TokioMpsc,
}

impl Contender {
    const ALL: [Contender; 2] = [Contender::VineQueue, Contender::TokioMpsc];

    fn parse(name: &str) -> Option<Self> {
        match name {
            "vinequeue" => Some(Contender::VineQueue),
            "mpsc" => Some(Contender::TokioMpsc),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Contender::VineQueue => "vinequeue-async",
            Contender::TokioMpsc => "tokio mpsc",
        }
    }
}

/// One row of the report: everything but the contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Case {
    flavor: Flavor,
    payload: Payload,
    producers: usize,
    batch: usize,
}

impl Case {
    /// Moves `items` items with `contender` on `rt`; returns the time from the first
    /// hand-over until the consumer had every item.
    fn run(self, rt: &Runtime, contender: Contender, items: u64) -> Duration {
        let (p, b) = (self.producers, self.batch);
        match (contender, self.payload) {
            (Contender::VineQueue, Payload::U64) => rt.block_on(vinequeue_run::<u64>(items, p, b)),
            (Contender::VineQueue, Payload::Bytes100) => {
                rt.block_on(vinequeue_run::<Vec<u8>>(items, p, b))
            }
            (Contender::TokioMpsc, Payload::U64) => rt.block_on(mpsc_run::<u64>(items, p, b)),
            (Contender::TokioMpsc, Payload::Bytes100) => {
                rt.block_on(mpsc_run::<Vec<u8>>(items, p, b))
            }
        }
    }
}

fn check_sum(contender: Contender, items: u64, sum: u64) {
    assert_eq!(
        sum,
        expected_sum(items),
        "{}: the consumer did not see each of the {items} items exactly once",
        contender.name()
    );
}

/// A producer's handle: hands one item, made from `value`, to the queue or channel.
trait Producer: Clone + Send + Sync + 'static {
    fn put(&self, value: u64) -> impl Future<Output = ()> + Send + '_;
}

impl<I: Item> Producer for AsyncQueue<I> {
    async fn put(&self, value: u64) {
        if let Err(e) = self.enqueue(I::make(value)).await {
            panic!("enqueue (Block) cannot fail here: {e}");
        }
    }
}

impl<I: Item> Producer for mpsc::Sender<I> {
    async fn put(&self, value: u64) {
        if self.send(I::make(value)).await.is_err() {
            panic!("the receiver is alive until every item arrived");
        }
    }
}

/// Spawns one producer task per range of [`producer_ranges`], each with a clone of
/// `handle`; each waits on a shared barrier, reads the clock, and puts every value of
/// its range. Drops `handle`. Returns the earliest clock read: the moment the first item
/// could have been handed over.
async fn run_producers<P: Producer>(items: u64, producers: usize, handle: P) -> Instant {
    let barrier = Arc::new(Barrier::new(producers));
    let tasks: Vec<_> = producer_ranges(items, producers)
        .into_iter()
        .map(|range| {
            let (barrier, handle) = (Arc::clone(&barrier), handle.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let start = Instant::now();
                for v in range {
                    handle.put(v).await;
                }
                start
            })
        })
        .collect();
    drop(handle);
    let mut first = None::<Instant>;
    for task in tasks {
        let start = task.await.expect("producer panicked");
        first = Some(first.map_or(start, |f| f.min(start)));
    }
    first.expect("at least one producer")
}

/// The VineQueue sink: reads and sums the value of every item, counts them, and reports
/// `(instant, sum)` once the count reaches `items`.
struct CountingSink {
    items: u64,
    seen: u64,
    sum: u64,
    done: Option<oneshot::Sender<(Instant, u64)>>,
}

impl<I: Item> AsyncSink<I> for CountingSink {
    async fn send(&mut self, batch: &Batch<I>) -> Result<(), SendError> {
        self.sum = batch
            .iter()
            .fold(self.sum, |acc, item| acc.wrapping_add(item.value()));
        self.seen += batch.len() as u64;
        if self.seen >= self.items {
            if let Some(done) = self.done.take() {
                let _ = done.send((Instant::now(), self.sum));
            }
        }
        Ok(())
    }
}

async fn vinequeue_run<I: Item>(items: u64, producers: usize, batch: usize) -> Duration {
    let config = Config::default()
        .memory_size(CAPACITY)
        .batch_size(batch)
        .overflow(OverflowPolicy::Block(BLOCK_TIMEOUT));
    let (queue, batches) =
        AsyncQueue::<I>::new(config).expect("the benchmark configuration is valid");
    let (done_tx, done_rx) = oneshot::channel();
    let delivery = tokio::spawn(batches.deliver_to(CountingSink {
        items,
        seen: 0,
        sum: 0,
        done: Some(done_tx),
    }));
    queue.start().expect("start the queue");
    let start = run_producers(items, producers, queue.clone()).await;
    // `items` is a whole number of batches, so the last batch fills by itself; the flush
    // only guards against a hang.
    queue
        .flush(DONE_TIMEOUT)
        .await
        .expect("everything is delivered");
    let (end, sum) = done_rx.await.expect("the sink reports the last item");
    queue
        .stop()
        .await
        .expect("stop after everything was delivered");
    delivery.await.expect("the delivery task ends after stop");
    check_sum(Contender::VineQueue, items, sum);
    end - start
}

async fn mpsc_run<I: Item>(items: u64, producers: usize, batch: usize) -> Duration {
    let (tx, mut rx) = mpsc::channel::<I>(CAPACITY);
    let consumer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(batch);
        let (mut seen, mut sum) = (0u64, 0u64);
        while seen < items {
            let n = rx.recv_many(&mut buf, batch).await;
            assert!(n > 0, "the senders are alive until every item is sent");
            sum = buf
                .iter()
                .fold(sum, |acc, item| acc.wrapping_add(item.value()));
            seen += n as u64;
            buf.clear();
        }
        (Instant::now(), sum)
    });
    let start = run_producers(items, producers, tx).await;
    let (end, sum) = consumer.await.expect("consumer panicked");
    check_sum(Contender::TokioMpsc, items, sum);
    end - start
}

struct Args {
    items: u64,
    rounds: usize,
    producers: Vec<usize>,
    batch_sizes: Vec<usize>,
    flavors: Vec<Flavor>,
    payloads: Vec<Payload>,
    contenders: Vec<Contender>,
}

impl Args {
    /// Every case, in report order.
    fn cases(&self) -> Vec<Case> {
        let mut cases = Vec::new();
        for &flavor in &self.flavors {
            for &payload in &self.payloads {
                for &producers in &self.producers {
                    for &batch in &self.batch_sizes {
                        cases.push(Case {
                            flavor,
                            payload,
                            producers,
                            batch,
                        });
                    }
                }
            }
        }
        cases
    }

    /// Least common multiple of the batch sizes: every run's item count is a multiple.
    fn batch_lcm(&self) -> u64 {
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        self.batch_sizes
            .iter()
            .fold(1u64, |l, &b| l / gcd(l, b as u64) * b as u64)
    }
}

const USAGE: &str = "usage: async_compare [--items N] [--rounds R] [--producers 1,4] \
                     [--batch-sizes 100,1000] [--runtimes multi,current] \
                     [--payloads u64,bytes100] [--contenders vinequeue,mpsc]";

fn usage(problem: &str) -> ! {
    report::exit_with_usage("async_compare", USAGE, problem)
}

fn parse_args() -> Args {
    let mut args = Args {
        items: 2_000_000,
        rounds: 5,
        producers: vec![1, 4],
        batch_sizes: vec![100, 1_000],
        flavors: vec![Flavor::Multi, Flavor::Current],
        payloads: vec![Payload::U64, Payload::Bytes100],
        contenders: Contender::ALL.to_vec(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            println!(
                "defaults: --items 2000000 --rounds 5 --producers 1,4 --batch-sizes 100,1000 \
                 --runtimes multi,current --payloads u64,bytes100 --contenders vinequeue,mpsc"
            );
            std::process::exit(0);
        }
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || report::number(&flag, &value).unwrap_or_else(|e| usage(&e));
        let numbers = || report::positive_list(&flag, &value).unwrap_or_else(|e| usage(&e));
        fn names<T>(flag: &str, value: &str, parse: fn(&str) -> Option<T>) -> Vec<T> {
            value
                .split(',')
                .map(|n| parse(n.trim()).unwrap_or_else(|| usage(&format!("{flag}: unknown: {n}"))))
                .collect()
        }
        match flag.as_str() {
            "--items" => args.items = number(),
            "--rounds" => args.rounds = number() as usize,
            "--producers" => args.producers = numbers(),
            "--batch-sizes" => args.batch_sizes = numbers(),
            "--runtimes" => args.flavors = names(&flag, &value, Flavor::parse),
            "--payloads" => args.payloads = names(&flag, &value, Payload::parse),
            "--contenders" => args.contenders = names(&flag, &value, Contender::parse),
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    if let Some(&b) = args.batch_sizes.iter().find(|&&b| b > CAPACITY) {
        usage(&format!("batch size {b} exceeds the capacity {CAPACITY}"));
    }
    let lcm = args.batch_lcm();
    if args.items == 0 || args.items / lcm * lcm != args.items {
        // A VineQueue batch that never fills would wait for the flush.
        usage(&format!(
            "--items must be a positive multiple of every batch size ({lcm})"
        ));
    }
    if args.rounds == 0 {
        usage("rounds must be at least 1");
    }
    args
}

fn print_machine_facts(args: &Args) {
    report::print_machine_facts(&[]);
    println!(
        "| workload | capacity {CAPACITY} (mpsc bound = `memory_size`); batch size = \
         `batch_size` = `recv_many` limit; vinequeue memory mode, \
         `OverflowPolicy::Block({BLOCK_TIMEOUT:?})`, no-op `AsyncSink` |"
    );
    println!(
        "| runs | {} items per run, {} rounds, producer tasks {:?}, batch sizes {:?} |",
        args.items, args.rounds, args.producers, args.batch_sizes
    );
    println!();
}

fn millions(rate: f64) -> String {
    format!("{:.2} M/s", rate / 1e6)
}

fn ratio_cell(ratios: &[f64]) -> String {
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("**{:.2}x** ({lo:.2}–{hi:.2})", median(ratios))
}

fn main() {
    let args = parse_args();
    let cases = args.cases();
    let runtimes: HashMap<Flavor, Runtime> = args.flavors.iter().map(|&f| (f, f.build())).collect();

    println!("# vinequeue-async vs tokio::sync::mpsc\n");
    print_machine_facts(&args);

    // Warm-up: page in the code, the allocator and the runtimes' threads; not recorded.
    let lcm = args.batch_lcm();
    let warm = (args.items / 10 / lcm).max(1) * lcm;
    eprintln!("warm-up ({warm} items per case)...");
    for case in &cases {
        for &c in &args.contenders {
            case.run(&runtimes[&case.flavor], c, warm);
        }
    }

    let mut rates: HashMap<(Case, Contender), Vec<f64>> = HashMap::new();
    for round in 0..args.rounds {
        for case in &cases {
            let n = args.contenders.len();
            for k in 0..n {
                let c = args.contenders[(k + round) % n];
                let elapsed = case.run(&runtimes[&case.flavor], c, args.items);
                let rate = args.items as f64 / elapsed.as_secs_f64();
                eprintln!(
                    "round {}/{} {} {} P={} B={} {:<15} {:>8.2} M items/s",
                    round + 1,
                    args.rounds,
                    case.flavor,
                    case.payload,
                    case.producers,
                    case.batch,
                    c.name(),
                    rate / 1e6,
                );
                rates.entry((*case, c)).or_default().push(rate);
            }
        }
    }

    println!("## Throughput, end to end\n");
    println!(
        "Items per second from the first `enqueue` / `send` until the consumer held the \
         last item; median of {} rounds. The ratio is the median of the per-round ratios \
         (each round runs both back to back), with the lowest and highest round in \
         brackets; above 1.00x means vinequeue-async moved more items per second.\n",
        args.rounds
    );
    println!(
        "| runtime | item | producers | batch | vinequeue-async | tokio mpsc | vinequeue-async / tokio mpsc |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for case in &cases {
        let vq = rates.get(&(*case, Contender::VineQueue));
        let tk = rates.get(&(*case, Contender::TokioMpsc));
        let rate = |r: Option<&Vec<f64>>| r.map_or("–".to_owned(), |r| millions(median(r)));
        let ratio = match (vq, tk) {
            (Some(vq), Some(tk)) => {
                ratio_cell(&vq.iter().zip(tk).map(|(a, b)| a / b).collect::<Vec<_>>())
            }
            _ => "–".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {ratio} |",
            case.flavor,
            case.payload,
            case.producers,
            case.batch,
            rate(vq),
            rate(tk),
        );
    }
    println!();
}
