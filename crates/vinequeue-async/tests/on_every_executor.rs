//! The same test bodies on five executors: futures' LocalPool and ThreadPool, tokio's
//! current-thread and multi-thread runtimes, and smol. The single-threaded ones run the
//! producers and the delivery future on one thread.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{FutureExt, RemoteHandle};
use futures::StreamExt;
use parking_lot::Mutex;
use vinequeue_async::{AsyncQueue, AsyncSink};
use vinequeue_core::{
    Batch, Config, DeadLetter, DeadLetterReason, EnqueueError, OverflowPolicy, SendError, SyncMode,
};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Spawns onto whichever executor runs the test body.
#[derive(Clone)]
struct Spawner(Rc<dyn Fn(BoxFuture)>);

impl Spawner {
    fn spawn<F: Future + Send + 'static>(&self, f: F) -> RemoteHandle<F::Output>
    where
        F::Output: Send,
    {
        let (remote, handle) = f.remote_handle();
        (self.0)(Box::pin(remote));
        handle
    }
}

fn futures_local<F: Future<Output = ()>>(body: impl FnOnce(Spawner) -> F) {
    use futures::task::SpawnExt;
    let mut pool = futures::executor::LocalPool::new();
    let spawner = pool.spawner();
    let sp = Spawner(Rc::new(move |f| spawner.spawn(f).expect("spawn")));
    pool.run_until(body(sp));
}

fn futures_pool<F: Future<Output = ()>>(body: impl FnOnce(Spawner) -> F) {
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(2)
        .create()
        .expect("pool");
    let sp = Spawner(Rc::new(move |f| pool.spawn_ok(f)));
    futures::executor::block_on(body(sp));
}

fn tokio_current<F: Future<Output = ()>>(body: impl FnOnce(Spawner) -> F) {
    tokio_on(tokio::runtime::Builder::new_current_thread(), body);
}

fn tokio_multi<F: Future<Output = ()>>(body: impl FnOnce(Spawner) -> F) {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    tokio_on(builder, body);
}

fn tokio_on<F: Future<Output = ()>>(
    mut builder: tokio::runtime::Builder,
    body: impl FnOnce(Spawner) -> F,
) {
    let rt = builder.enable_all().build().expect("runtime");
    let handle = rt.handle().clone();
    let sp = Spawner(Rc::new(move |f| drop(handle.spawn(f))));
    rt.block_on(body(sp));
}

fn smol<F: Future<Output = ()>>(body: impl FnOnce(Spawner) -> F) {
    let ex = Arc::new(smol::Executor::new());
    let spawner = Arc::clone(&ex);
    let sp = Spawner(Rc::new(move |f| spawner.spawn(f).detach()));
    smol::block_on(ex.run(body(sp)));
}

macro_rules! on_every_executor {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[test]
            fn futures_local() {
                super::futures_local(super::$body);
            }
            #[test]
            fn futures_pool() {
                super::futures_pool(super::$body);
            }
            #[test]
            fn tokio_current() {
                super::tokio_current(super::$body);
            }
            #[test]
            fn tokio_multi() {
                super::tokio_multi(super::$body);
            }
            #[test]
            fn smol() {
                super::smol(super::$body);
            }
        }
    )*};
}

on_every_executor!(
    many_producers_deliver_everything_in_order,
    pending_enqueues_can_be_cancelled,
    stop_resolves_pending_enqueues_without_losing_items,
    a_send_that_never_completes_times_out_and_is_dead_lettered,
    block_gives_the_item_back_when_its_timeout_passes,
    stream_consumers_ack_fail_or_drop_batches,
    a_panicking_send_is_retried,
    immediate_enqueues_are_replayed_after_a_restart,
    a_full_log_makes_producers_wait_until_acks_free_space,
    every_item_given_up_at_stop_reaches_on_dead_letter,
    stop_without_a_consumer_gives_up_at_the_shutdown_timeout,
    a_dropped_consumer_fails_attempts_at_once,
    a_queue_stopped_before_start_ends_its_delivery,
);

/// Returns `Pending` once, so sends really suspend.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// The batches a sink received: (sequence number, item) per item.
type Received = Arc<Mutex<Vec<Vec<(u64, String)>>>>;

#[derive(Clone, Default)]
struct Recorder {
    batches: Received,
    dead: Arc<Mutex<Vec<(DeadLetterReason, String, usize)>>>,
}

impl Recorder {
    fn items(&self) -> Vec<(u64, String)> {
        self.batches.lock().iter().flatten().cloned().collect()
    }
}

impl AsyncSink<String> for Recorder {
    async fn send(&mut self, batch: &Batch<String>) -> Result<(), SendError> {
        YieldOnce(false).await;
        let items = batch.iter_with_seq().map(|(s, i)| (s, i.clone())).collect();
        self.batches.lock().push(items);
        Ok(())
    }

    async fn on_dead_letter(&mut self, letter: DeadLetter<String>) {
        let error = letter.error().to_string();
        self.dead
            .lock()
            .push((letter.reason(), error, letter.len()));
    }
}

fn fast_config() -> Config {
    Config::default()
        .batch_size(16)
        .memory_size(64)
        .flush_timeout(Duration::from_millis(10))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .shutdown_timeout(Duration::from_secs(20))
        .overflow(OverflowPolicy::Block(Duration::from_secs(30)))
}

async fn many_producers_deliver_everything_in_order(sp: Spawner) {
    const PRODUCERS: usize = 4;
    const EACH: usize = 500;
    let (queue, batches) = AsyncQueue::<String>::new(fast_config()).unwrap();
    let sink = Recorder::default();
    let delivery = sp.spawn(batches.deliver_to(sink.clone()));
    queue.start().unwrap();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = queue.clone();
            sp.spawn(async move {
                for i in 0..EACH {
                    queue.enqueue(format!("{p}:{i}")).await.unwrap();
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await;
    }
    queue.flush(Duration::from_secs(20)).await.unwrap();
    queue.stop().await.unwrap();
    delivery.await; // ends once the queue has stopped

    let items = sink.items();
    assert_eq!(items.len(), PRODUCERS * EACH);
    assert!(items.windows(2).all(|w| w[0].0 < w[1].0), "seqs increase");
    assert!(sink.batches.lock().iter().all(|b| b.len() <= 16));
    for p in 0..PRODUCERS {
        let mine: Vec<usize> = items
            .iter()
            .filter_map(|(_, s)| s.strip_prefix(&format!("{p}:")))
            .map(|i| i.parse().unwrap())
            .collect();
        assert_eq!(mine, (0..EACH).collect::<Vec<_>>(), "producer {p} in order");
    }
    assert_eq!(queue.metrics().sent_total, (PRODUCERS * EACH) as u64);
}

async fn pending_enqueues_can_be_cancelled(sp: Spawner) {
    let config = fast_config().memory_size(2).batch_size(2);
    let (queue, batches) = AsyncQueue::<String>::new(config).unwrap();
    // Not started: nothing drains the ring, so the third item has to wait.
    queue.enqueue("a".into()).await.unwrap();
    queue.enqueue("b".into()).await.unwrap();
    let mut waiting = queue.enqueue("c".into());
    assert!(futures::poll!(&mut waiting).is_pending());
    assert_eq!(waiting.cancel().as_deref(), Some("c"));
    let mut dropped = queue.enqueue("d".into());
    assert!(futures::poll!(&mut dropped).is_pending());
    drop(dropped);

    let sink = Recorder::default();
    let delivery = sp.spawn(batches.deliver_to(sink.clone()));
    queue.start().unwrap();
    queue.enqueue("e".into()).await.unwrap();
    queue.stop().await.unwrap();
    delivery.await;
    let items: Vec<String> = sink.items().into_iter().map(|(_, s)| s).collect();
    assert_eq!(items, ["a", "b", "e"]);
    assert_eq!(queue.metrics().enqueued_total, 3);
}

async fn stop_resolves_pending_enqueues_without_losing_items(sp: Spawner) {
    let config = fast_config().memory_size(2).batch_size(2);
    let (queue, batches) = AsyncQueue::<String>::new(config).unwrap();
    queue.enqueue("a".into()).await.unwrap();
    queue.enqueue("b".into()).await.unwrap();
    let pending: Vec<_> = ["c", "d", "e"]
        .into_iter()
        .map(|s| {
            let queue = queue.clone();
            sp.spawn(async move { queue.enqueue(s.to_string()).await })
        })
        .collect();
    // Let them reach their wait for room.
    for _ in 0..10 {
        YieldOnce(false).await;
    }
    let sink = Recorder::default();
    let delivery = sp.spawn(batches.deliver_to(sink.clone()));
    queue.stop().await.unwrap();
    let mut returned = Vec::new();
    for p in pending {
        match p.await {
            Ok(()) => {}
            Err(EnqueueError::Closed(item)) => returned.push(item),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    delivery.await;
    let mut all: Vec<String> = sink.items().into_iter().map(|(_, s)| s).collect();
    all.extend(returned);
    all.sort();
    assert_eq!(
        all,
        ["a", "b", "c", "d", "e"],
        "every item delivered or handed back"
    );
}

#[derive(Clone, Default)]
struct NeverCompletes(Recorder);

impl AsyncSink<String> for NeverCompletes {
    fn send(
        &mut self,
        _batch: &Batch<String>,
    ) -> impl Future<Output = Result<(), SendError>> + Send {
        std::future::pending()
    }

    fn on_dead_letter(&mut self, letter: DeadLetter<String>) -> impl Future<Output = ()> + Send {
        self.0.on_dead_letter(letter)
    }
}

async fn a_send_that_never_completes_times_out_and_is_dead_lettered(sp: Spawner) {
    let config = fast_config()
        .send_timeout(Duration::from_millis(50))
        .retry_limit(1);
    let (queue, batches) = AsyncQueue::<String>::new(config).unwrap();
    let sink = NeverCompletes::default();
    let delivery = sp.spawn(batches.deliver_to(sink.clone()));
    queue.start().unwrap();
    for i in 0..3 {
        queue.enqueue(format!("{i}")).await.unwrap();
    }
    let started = Instant::now();
    queue.flush(Duration::from_secs(20)).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "two attempts timed out"
    );
    let m = queue.metrics();
    assert_eq!(m.dead_lettered_total, 3);
    assert_eq!(m.errors_total, 2);
    queue.stop().await.unwrap();
    delivery.await;
    let dead = sink.0.dead.lock().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, DeadLetterReason::RetriesExhausted);
    assert!(dead[0].1.contains("send_timeout"), "{}", dead[0].1);
    assert_eq!(dead[0].2, 3);
}

async fn block_gives_the_item_back_when_its_timeout_passes(_sp: Spawner) {
    let config = fast_config()
        .memory_size(1)
        .batch_size(1)
        .overflow(OverflowPolicy::Block(Duration::from_millis(50)));
    let (queue, _batches) = AsyncQueue::<String>::new(config).unwrap();
    queue.enqueue("kept".into()).await.unwrap();
    let started = Instant::now();
    match queue.enqueue("refused".into()).await {
        Err(EnqueueError::Full(item)) => assert_eq!(item, "refused"),
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(50));
    let config = fast_config()
        .memory_size(1)
        .batch_size(1)
        .overflow(OverflowPolicy::Reject);
    let (queue, _batches) = AsyncQueue::<String>::new(config).unwrap();
    queue.enqueue("kept".into()).await.unwrap();
    assert!(queue.enqueue("refused".into()).await.unwrap_err().is_full());
}

async fn stream_consumers_ack_fail_or_drop_batches(sp: Spawner) {
    let config = fast_config().batch_size(4).retry_limit(5);
    let (queue, mut batches) = AsyncQueue::<String>::new(config).unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&attempts);
    let consumer = sp.spawn(async move {
        let mut delivered = Vec::new();
        while let Some(batch) = batches.next().await {
            match seen.fetch_add(1, SeqCst) {
                0 => {
                    assert_eq!(batch.attempt(), 0);
                    batch.fail(SendError::retry("try again"));
                }
                1 => {
                    assert_eq!(batch.attempt(), 1);
                    drop(batch); // unanswered: counts as a retryable failure
                }
                _ => {
                    delivered.extend(batch.iter().cloned());
                    batch.ack();
                }
            }
        }
        delivered
    });
    queue.start().unwrap();
    queue
        .enqueue_batch((0..4).map(|i| i.to_string()).collect())
        .await
        .unwrap();
    queue.flush(Duration::from_secs(20)).await.unwrap();
    queue.stop().await.unwrap();
    let delivered = consumer.await;
    assert_eq!(delivered, ["0", "1", "2", "3"]);
    let m = queue.metrics();
    assert_eq!((m.sent_total, m.errors_total, m.retries_total), (4, 2, 2));
}

#[derive(Clone, Default)]
struct PanicsOnce(Recorder, Arc<AtomicU32>);

impl AsyncSink<String> for PanicsOnce {
    async fn send(&mut self, batch: &Batch<String>) -> Result<(), SendError> {
        YieldOnce(false).await;
        if self.1.fetch_add(1, SeqCst) == 0 {
            panic!("the first attempt panics");
        }
        self.0.send(batch).await
    }
}

async fn a_panicking_send_is_retried(sp: Spawner) {
    let (queue, batches) = AsyncQueue::<String>::new(fast_config()).unwrap();
    let sink = PanicsOnce::default();
    let delivery = sp.spawn(batches.deliver_to(sink.clone()));
    queue.start().unwrap();
    queue.enqueue("x".into()).await.unwrap();
    queue.flush(Duration::from_secs(20)).await.unwrap();
    queue.stop().await.unwrap();
    delivery.await;
    assert_eq!(sink.0.items().len(), 1);
    assert_eq!(
        sink.1.load(SeqCst),
        2,
        "one panicking attempt, one that sent"
    );
    assert_eq!(queue.metrics().errors_total, 1);

    // A closure sink that panics before it returns its future (while preparing the
    // request) is retried the same way, and the delivery future lives on.
    let (queue, batches) = AsyncQueue::<String>::new(fast_config()).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::clone(&sizes);
    let sink = move |batch: &Batch<String>| {
        assert!(seen.fetch_add(1, SeqCst) > 0, "the first call panics");
        sent.lock().push(batch.len());
        async move { Ok::<(), SendError>(()) }
    };
    let delivery = sp.spawn(batches.deliver_to(sink));
    // Both items wait before the start, so they make one batch: one panicking call,
    // then one call that sends both.
    queue
        .enqueue_batch(vec!["a".into(), "b".into()])
        .await
        .unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(20)).await.unwrap();
    queue.stop().await.unwrap();
    delivery.await;
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(*sizes.lock(), [2]);
    let m = queue.metrics();
    assert_eq!((m.sent_total, m.errors_total), (2, 1));
}

struct AlwaysFails;

impl AsyncSink<String> for AlwaysFails {
    async fn send(&mut self, _batch: &Batch<String>) -> Result<(), SendError> {
        Err(SendError::retry("the service is down"))
    }
}

/// Async producers under `Immediate` on every executor: what they enqueued comes back
/// after a restart. (That it survives a power cut, which needs the simulated disk, is
/// `vinequeue/tests/async_power_loss.rs`.)
async fn immediate_enqueues_are_replayed_after_a_restart(sp: Spawner) {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config()
        .wal_path(dir.path())
        .sync_mode(SyncMode::Immediate)
        .retry_limit(1_000)
        .shutdown_timeout(Duration::from_millis(200));
    let (queue, batches) = AsyncQueue::<String>::new(config.clone()).unwrap();
    let delivery = sp.spawn(batches.deliver_to(AlwaysFails));
    queue.start().unwrap();
    let producers: Vec<_> = (0..8)
        .map(|p| {
            let queue = queue.clone();
            sp.spawn(async move {
                for i in 0..25 {
                    queue.enqueue(format!("{p}:{i}")).await.unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.await;
    }
    // The sink never succeeds: stop gives up and leaves everything in the log.
    assert!(queue.stop().await.is_err());
    delivery.await;
    drop(queue);

    // The directory is free once the stopped queue is gone; reopen and replay.
    let reopened = loop {
        match AsyncQueue::<String>::new(config.clone()) {
            Ok(q) => break q,
            Err(vinequeue_core::Error::Locked(_)) => YieldOnce(false).await,
            Err(e) => panic!("{e}"),
        }
    };
    let (queue, batches) = reopened;
    assert_eq!(queue.recovery().records, 200);
    let sink = Recorder::default();
    let delivery = sp.spawn(batches.deliver_to(sink.clone()));
    queue.start().unwrap();
    queue.flush(Duration::from_secs(20)).await.unwrap();
    queue.stop().await.unwrap();
    delivery.await;
    let mut items: Vec<String> = sink.items().into_iter().map(|(_, s)| s).collect();
    items.sort();
    let mut expected: Vec<String> = (0..8)
        .flat_map(|p| (0..25).map(move |i| format!("{p}:{i}")))
        .collect();
    expected.sort();
    assert_eq!(items, expected);
}

async fn a_full_log_makes_producers_wait_until_acks_free_space(sp: Spawner) {
    let dir = tempfile::tempdir().unwrap();
    let wait = Duration::from_millis(300);
    let config = fast_config()
        .wal_path(dir.path())
        .wal_max_size(1 << 20)
        .overflow(OverflowPolicy::Block(wait));
    let (queue, mut batches) = AsyncQueue::<Vec<u8>>::new(config).unwrap();
    // Not started: nothing is acknowledged, so the log fills up.
    let mut accepted = 0u64;
    let (refused, since) = loop {
        let asked = Instant::now();
        match queue.enqueue(vec![7u8; 2000]).await {
            Ok(()) => accepted += 1,
            Err(e) => break (e, asked),
        }
    };
    assert!(refused.is_full(), "{refused}");
    assert!(since.elapsed() >= wait, "Block waited for its timeout");
    assert_eq!(refused.into_inner().len(), 2000, "the item comes back");
    assert!(accepted > 100);

    // A consumer acknowledges everything: the space it frees lets a waiting producer in.
    let consumer = sp.spawn(async move {
        let mut received = 0u64;
        while let Some(batch) = batches.next().await {
            received += batch.len() as u64;
            batch.ack();
        }
        received
    });
    let producer = {
        let queue = queue.clone();
        sp.spawn(async move { queue.enqueue(vec![8u8; 2000]).await.is_ok() })
    };
    queue.start().unwrap();
    assert!(producer.await, "acknowledgements woke the waiting producer");
    queue.flush(Duration::from_secs(20)).await.unwrap();
    queue.stop().await.unwrap();
    assert_eq!(consumer.await, accepted + 1);
}

/// Fails its first send after `delay` (a thread-timed wait), refuses nothing else, and
/// counts the items of the dead letters it receives.
#[derive(Clone)]
struct SlowFirstSend {
    delay: Duration,
    sends: Arc<AtomicU32>,
    dead_items: Arc<AtomicU32>,
}

impl AsyncSink<String> for SlowFirstSend {
    async fn send(&mut self, _batch: &Batch<String>) -> Result<(), SendError> {
        if self.sends.fetch_add(1, SeqCst) == 0 {
            let (tx, rx) = futures::channel::oneshot::channel();
            let delay = self.delay;
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = tx.send(());
            });
            let _ = rx.await;
            return Err(SendError::retry("slow and failing"));
        }
        Ok(())
    }

    async fn on_dead_letter(&mut self, letter: DeadLetter<String>) {
        self.dead_items.fetch_add(letter.len() as u32, SeqCst);
    }
}

async fn every_item_given_up_at_stop_reaches_on_dead_letter(sp: Spawner) {
    const ITEMS: u32 = 3_000;
    let config = fast_config()
        .memory_size(4_096)
        .batch_size(1)
        .shutdown_timeout(Duration::from_millis(100));
    let (queue, batches) = AsyncQueue::<String>::new(config).unwrap();
    let sink = SlowFirstSend {
        delay: Duration::from_millis(300),
        sends: Arc::new(AtomicU32::new(0)),
        dead_items: Arc::new(AtomicU32::new(0)),
    };
    for i in 0..ITEMS {
        queue.enqueue(i.to_string()).await.unwrap();
    }
    let delivery = sp.spawn(batches.deliver_to(sink.clone()));
    queue.start().unwrap();
    // The first send outlasts the shutdown timeout: everything is given up at once,
    // far more dead letters than the hand-over holds, and none may be lost.
    match queue.stop().await {
        Err(vinequeue_core::Error::ShutdownTimeout { .. }) => {}
        other => panic!("expected ShutdownTimeout, got {other:?}"),
    }
    delivery.await; // ends once the batcher has handed over everything
    assert_eq!(sink.dead_items.load(SeqCst), ITEMS);
    assert_eq!(queue.metrics().abandoned_total, u64::from(ITEMS));
}

async fn stop_without_a_consumer_gives_up_at_the_shutdown_timeout(_sp: Spawner) {
    let config = fast_config()
        .send_timeout(Duration::from_secs(60))
        .shutdown_timeout(Duration::from_millis(200));
    let (queue, mut batches) = AsyncQueue::<String>::new(config).unwrap();
    queue.start().unwrap();
    queue.enqueue("x".into()).await.unwrap();
    // Nobody takes the batch. `stop()` must not wait for the 60 s send timeout.
    let started = Instant::now();
    match queue.stop().await {
        Err(vinequeue_core::Error::ShutdownTimeout { undelivered }) => assert_eq!(undelivered, 1),
        other => panic!("expected ShutdownTimeout, got {other:?}"),
    }
    assert!(batches.next().await.is_none(), "the batcher has finished");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let letters = batches.take_dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason(), DeadLetterReason::Shutdown);
}

async fn a_dropped_consumer_fails_attempts_at_once(_sp: Spawner) {
    let config = fast_config()
        .send_timeout(Duration::from_secs(60))
        .retry_limit(2);
    let (queue, batches) = AsyncQueue::<String>::new(config).unwrap();
    drop(batches); // nobody will ever take a batch
    queue.start().unwrap();
    queue.enqueue("x".into()).await.unwrap();
    let started = Instant::now();
    // Three failed attempts without waiting for the 60 s send timeout, then a dead letter.
    queue.flush(Duration::from_secs(20)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let m = queue.metrics();
    assert_eq!((m.errors_total, m.dead_lettered_total), (3, 1));
    queue.stop().await.unwrap();
}

async fn a_queue_stopped_before_start_ends_its_delivery(sp: Spawner) {
    let (queue, batches) = AsyncQueue::<String>::new(fast_config()).unwrap();
    let delivery = sp.spawn(batches.deliver_to(Recorder::default()));
    // Never started, nothing enqueued: the delivery future must end, not wait forever
    // for a start that cannot come.
    queue.stop().await.unwrap();
    delivery.await;
}
