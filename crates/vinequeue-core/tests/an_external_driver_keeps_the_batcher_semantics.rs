//! A queue whose batcher is driven by its caller (`Queue::drive_externally`) instead of a
//! thread: batching, flush timeout, retries, dead letters and shutdown as on the thread,
//! and what happens when the driver goes away or nobody drives.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use vinequeue_core::adapter::{BatchDriver, Next};
use vinequeue_core::{Batch, Config, DeadLetter, DeadLetterReason, Error, Queue, SendError, Sink};

/// Wakes a parked thread.
struct Unpark {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, SeqCst);
        self.thread.unpark();
    }
}

/// A waker that unparks the calling thread, and its flag.
fn this_thread_waker() -> (Arc<Unpark>, Waker) {
    let unpark = Arc::new(Unpark {
        thread: thread::current(),
        woken: AtomicBool::new(false),
    });
    (Arc::clone(&unpark), Waker::from(unpark))
}

/// What a sink saw.
#[derive(Default)]
struct Seen {
    batches: Mutex<Vec<Vec<(u64, u32)>>>,
    dead: Mutex<Vec<(DeadLetterReason, Vec<u32>)>>,
}

/// The queue's own sink: sends through it only when no driver runs the batcher.
struct Recording(Arc<Seen>);

impl Sink<u32> for Recording {
    fn send(&mut self, batch: &Batch<u32>) -> Result<(), SendError> {
        let items = batch.iter_with_seq().map(|(s, &i)| (s, i)).collect();
        self.0.batches.lock().unwrap().push(items);
        Ok(())
    }

    fn on_dead_letter(&mut self, letter: DeadLetter<u32>) {
        let items = letter.iter().copied().collect();
        self.0.dead.lock().unwrap().push((letter.reason(), items));
    }
}

/// Drives `driver` on this thread until `Done`, answering each batch with `answer`;
/// returns the batches it was given, with the instant each came.
fn drive(
    driver: &BatchDriver<u32>,
    mut answer: impl FnMut(&Batch<u32>) -> Result<(), SendError>,
) -> Vec<(Instant, Vec<(u64, u32)>)> {
    let (unpark, waker) = this_thread_waker();
    let mut got = Vec::new();
    loop {
        match driver.next(&waker) {
            Next::Send(batch) => {
                got.push((
                    Instant::now(),
                    batch.iter_with_seq().map(|(s, &i)| (s, i)).collect(),
                ));
                let result = answer(&batch);
                driver.sent(batch, result);
            }
            Next::Wait(until) => {
                while !unpark.woken.swap(false, SeqCst) {
                    match until {
                        Some(t) if Instant::now() >= t => break,
                        Some(t) => thread::park_timeout(t - Instant::now()),
                        None => thread::park_timeout(Duration::from_millis(100)),
                    }
                }
            }
            Next::Done => return got,
        }
    }
}

fn config() -> Config {
    Config::default()
        .memory_size(64)
        .batch_size(4)
        .flush_timeout(Duration::from_millis(50))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .shutdown_timeout(Duration::from_secs(5))
}

#[test]
fn batches_come_in_order_and_full_then_stop_ends_the_drive() {
    let seen = Arc::new(Seen::default());
    let queue = Arc::new(Queue::new(config(), Recording(Arc::clone(&seen))).unwrap());
    let driver = queue.drive_externally().unwrap();
    // All ten wait before the start: the batches are full ones of 4, then the rest.
    for i in 0..10u32 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    let driving = thread::spawn(move || drive(&driver, |_| Ok(())));
    queue.flush(Duration::from_secs(5)).unwrap();
    queue.stop().unwrap();
    let got = driving.join().unwrap();
    let items: Vec<(u64, u32)> = got.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_eq!(
        items,
        (0..10).map(|i| (i as u64 + 1, i)).collect::<Vec<_>>()
    );
    let sizes: Vec<usize> = got.iter().map(|(_, b)| b.len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    assert!(
        seen.batches.lock().unwrap().is_empty(),
        "the queue's sink sent nothing"
    );
    assert_eq!(queue.metrics().sent_total, 10);
}

#[test]
fn a_partial_batch_waits_for_the_flush_timeout() {
    let seen = Arc::new(Seen::default());
    let queue = Arc::new(Queue::new(config(), Recording(seen)).unwrap());
    let driver = queue.drive_externally().unwrap();
    queue.start().unwrap();
    let driving = thread::spawn(move || drive(&driver, |_| Ok(())));
    let enqueued = Instant::now();
    queue.enqueue(7).unwrap();
    while queue.metrics().sent_total == 0 {
        assert!(enqueued.elapsed() < Duration::from_secs(5), "never sent");
        thread::sleep(Duration::from_millis(1));
    }
    queue.stop().unwrap();
    let got = driving.join().unwrap();
    assert_eq!(got[0].1, [(1, 7)]);
    assert!(
        got[0].0 - enqueued >= Duration::from_millis(40),
        "a batch of one waited for flush_timeout: {:?}",
        got[0].0 - enqueued
    );
}

#[test]
fn failed_attempts_are_retried_then_dead_lettered_with_the_queue_sink() {
    let seen = Arc::new(Seen::default());
    let queue =
        Arc::new(Queue::new(config().retry_limit(2), Recording(Arc::clone(&seen))).unwrap());
    let driver = queue.drive_externally().unwrap();
    queue.start().unwrap();
    let driving = thread::spawn(move || {
        drive(&driver, |batch| match batch.attempt() {
            0 => Err(SendError::partial([1], "the second item failed")),
            _ => Err(SendError::retry("still failing")),
        })
    });
    for i in 0..4 {
        queue.enqueue(i).unwrap();
    }
    queue.flush(Duration::from_secs(5)).unwrap();
    queue.stop().unwrap();
    let got = driving.join().unwrap();
    // Attempt 0 with all four, then the failed one alone, twice.
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[1].1, [(2, 1)]);
    let dead = seen.dead.lock().unwrap();
    assert_eq!(*dead, [(DeadLetterReason::RetriesExhausted, vec![1])]);
    let m = queue.metrics();
    assert_eq!(
        (m.sent_total, m.retries_total, m.dead_lettered_total),
        (3, 2, 1)
    );
}

#[test]
fn a_dropped_driver_hands_the_batcher_to_a_thread_with_the_queue_sink() {
    let seen = Arc::new(Seen::default());
    let queue = Queue::new(config(), Recording(Arc::clone(&seen))).unwrap();
    let driver = queue.drive_externally().unwrap();
    queue.start().unwrap();
    queue.enqueue(1).unwrap();
    drop(driver);
    queue.enqueue(2).unwrap();
    queue.flush(Duration::from_secs(5)).unwrap();
    queue.stop().unwrap();
    let sent: Vec<(u64, u32)> = seen.batches.lock().unwrap().concat();
    assert_eq!(sent, [(1, 1), (2, 2)]);
}

#[test]
fn a_driver_dropped_before_start_leaves_the_queue_to_its_thread() {
    let seen = Arc::new(Seen::default());
    let queue = Queue::new(config(), Recording(Arc::clone(&seen))).unwrap();
    drop(queue.drive_externally().unwrap());
    queue.start().unwrap();
    queue.enqueue(5).unwrap();
    queue.flush(Duration::from_secs(5)).unwrap();
    queue.stop().unwrap();
    assert_eq!(seen.batches.lock().unwrap().concat(), [(1, 5)]);
}

#[test]
fn stop_with_nobody_driving_gives_up_at_the_deadline_and_dead_letters_the_rest() {
    let seen = Arc::new(Seen::default());
    let config = config().shutdown_timeout(Duration::from_millis(100));
    let queue = Queue::new(config, Recording(Arc::clone(&seen))).unwrap();
    let driver = queue.drive_externally().unwrap();
    queue.start().unwrap();
    for i in 0..6 {
        queue.enqueue(i).unwrap();
    }
    let started = Instant::now();
    match queue.stop() {
        Err(Error::ShutdownTimeout { undelivered }) => assert_eq!(undelivered, 6),
        other => panic!("expected ShutdownTimeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let dead: Vec<u32> = seen
        .dead
        .lock()
        .unwrap()
        .iter()
        .inspect(|(reason, _)| assert_eq!(*reason, DeadLetterReason::Shutdown))
        .flat_map(|(_, items)| items.clone())
        .collect();
    assert_eq!(dead, [0, 1, 2, 3, 4, 5]);
    assert_eq!(queue.metrics().abandoned_total, 6);
    // The driver, polled at last, finds the batcher finished.
    let (_, waker) = this_thread_waker();
    assert!(matches!(driver.next(&waker), Next::Done));
    assert!(seen.batches.lock().unwrap().is_empty());
}

/// A queue sink whose dead-letter handler holds each letter until released.
struct HoldsLetters {
    entered: std::sync::mpsc::Sender<()>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Sink<u32> for HoldsLetters {
    fn send(&mut self, _: &Batch<u32>) -> Result<(), SendError> {
        Ok(())
    }

    fn on_dead_letter(&mut self, _: DeadLetter<u32>) {
        let _ = self.entered.send(());
        let _ = self
            .release
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30));
    }
}

#[test]
fn a_driver_is_not_done_while_a_stop_still_runs_its_batcher() {
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let sink = HoldsLetters {
        entered: entered_tx,
        release: Mutex::new(release_rx),
    };
    let config = config().shutdown_timeout(Duration::from_millis(50));
    let queue = Arc::new(Queue::new(config, sink).unwrap());
    let driver = queue.drive_externally().unwrap();
    queue.start().unwrap();
    queue.enqueue(1).unwrap();
    // Nobody drives: the stop runs the batcher itself past its deadline, and hands the
    // item to the dead-letter handler, which holds it.
    let q = Arc::clone(&queue);
    let stopping = thread::spawn(move || q.stop());
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the stop never dead-lettered the item");
    let (_, waker) = this_thread_waker();
    assert!(
        matches!(driver.next(&waker), Next::Wait(_)),
        "the driver was told Done while dead letters were still being handed over"
    );
    release.send(()).unwrap();
    assert!(matches!(
        stopping.join().unwrap(),
        Err(Error::ShutdownTimeout { undelivered: 1 })
    ));
    assert!(matches!(driver.next(&waker), Next::Done));
}

#[test]
fn a_stop_from_a_dead_letter_handler_while_stop_finishes_the_batcher_returns() {
    let slot = Arc::new(std::sync::OnceLock::new());
    let config = config().shutdown_timeout(Duration::from_millis(50));
    let queue = Arc::new(Queue::new(config, StopsOnDeadLetter(Arc::clone(&slot))).unwrap());
    slot.set(Arc::downgrade(&queue)).unwrap();
    let _driver = queue.drive_externally().unwrap();
    queue.start().unwrap();
    queue.enqueue(1).unwrap();
    // Nobody drives: the stop finishes the batcher on its own thread, whose dead letter
    // goes to the handler, which calls `stop()` again on that same thread.
    let q = Arc::clone(&queue);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(q.stop());
    });
    let stopped = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("stop() waited for itself");
    assert!(
        matches!(stopped, Err(Error::ShutdownTimeout { undelivered: 1 })),
        "{stopped:?}"
    );
    assert!(!queue.is_started());
}

#[test]
fn a_driver_is_taken_once_and_only_before_start() {
    let queue = Queue::new(config(), Recording(Arc::default())).unwrap();
    let _driver = queue.drive_externally().unwrap();
    assert!(matches!(
        queue.drive_externally(),
        Err(Error::Unsupported(_))
    ));
    let started = Queue::new(config(), Recording(Arc::default())).unwrap();
    started.start().unwrap();
    assert!(matches!(
        started.drive_externally(),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn a_queue_stopped_before_start_tells_its_driver_done() {
    let queue = Queue::new(config(), Recording(Arc::default())).unwrap();
    let driver = queue.drive_externally().unwrap();
    let (_, waker) = this_thread_waker();
    assert!(matches!(driver.next(&waker), Next::Wait(None)));
    queue.stop().unwrap();
    assert!(matches!(driver.next(&waker), Next::Done));
}

#[test]
fn a_stray_sent_is_refused_and_leaves_the_batch_in_hand() {
    let seen = Arc::new(Seen::default());
    let queue = Arc::new(Queue::new(config(), Recording(Arc::clone(&seen))).unwrap());
    let driver = queue.drive_externally().unwrap();
    queue.start().unwrap();
    queue.enqueue(1).unwrap();
    let (_, waker) = this_thread_waker();
    // The batch of one is filling (it waits for `flush_timeout`): no batch is out.
    assert!(matches!(driver.next(&waker), Next::Wait(Some(_))));
    let stray = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        driver.sent(Batch::default(), Ok(()))
    }));
    assert!(stray.is_err(), "sent without a batch out must panic");
    queue.enqueue(2).unwrap();
    let stopper = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || queue.stop())
    };
    let got = drive(&driver, |_| Ok(()));
    stopper.join().unwrap().unwrap();
    let items: Vec<(u64, u32)> = got.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_eq!(items, [(1, 1), (2, 2)], "the filling batch survived");
}

/// Calls `stop()` on its own queue from inside `on_dead_letter`.
struct StopsOnDeadLetter(Arc<std::sync::OnceLock<std::sync::Weak<Queue<u32>>>>);

impl Sink<u32> for StopsOnDeadLetter {
    fn send(&mut self, _batch: &Batch<u32>) -> Result<(), SendError> {
        Ok(())
    }

    fn on_dead_letter(&mut self, _letter: DeadLetter<u32>) {
        if let Some(queue) = self.0.get().and_then(|q| q.upgrade()) {
            let _ = queue.stop();
        }
    }
}

#[test]
fn stop_called_from_a_dead_letter_handler_of_a_driven_queue_returns() {
    let cell = Arc::new(std::sync::OnceLock::new());
    let config = config().shutdown_timeout(Duration::from_millis(50));
    let queue = Arc::new(Queue::new(config, StopsOnDeadLetter(Arc::clone(&cell))).unwrap());
    cell.set(Arc::downgrade(&queue)).unwrap();
    let driver = queue.drive_externally().unwrap();
    queue.start().unwrap();
    queue.enqueue(1).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    thread::spawn(move || {
        drive(&driver, |_| Err(SendError::permanent("refused")));
        let _ = done.send(());
    });
    // The handler's `stop()` runs while the driver's call holds the batcher: it must
    // give up waiting for it, not wait for itself.
    finished
        .recv_timeout(Duration::from_secs(20))
        .expect("the driver finished");
    assert!(queue.is_closed());
    assert_eq!(queue.metrics().dead_lettered_total, 1);
}
