//! With a log: the batcher keeps its thread, and its sink, a [`BridgeSink`], lends each
//! batch to whoever polls `Batches` and waits, on the batcher's thread, for the verdict.

use super::*;

/// Most dead letters waiting for the consumer. When it is reached the batcher waits (up
/// to `DEAD_LETTER_WAIT`) for the consumer to take some; only then, or with no consumer
/// left, is the oldest discarded (still counted in the metrics, and kept in the
/// dead-letter log of a durable queue).
pub(super) const DEAD_LETTER_BACKLOG: usize = 1024;

/// Longest the batcher waits for room in the dead-letter backlog.
pub(super) const DEAD_LETTER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) enum State<T> {
    /// No batch in hand.
    Idle,
    /// A batch waits for a consumer.
    Offered(Batch<T>),
    /// A consumer holds the batch.
    Taken,
    /// The consumer's verdict, for the batcher.
    Done(Batch<T>, Result<(), SendError>),
}

pub(super) struct Slot<T> {
    pub(super) state: State<T>,
    pub(super) dead_letters: VecDeque<DeadLetter<T>>,
    /// The batcher is gone (the queue stopped, or was dropped): no more batches.
    pub(super) closed: bool,
    /// The `Batches` end was dropped: nobody will take anything any more.
    pub(super) consumer_gone: bool,
    pub(super) consumer: Option<Waker>,
}

pub(crate) struct Channel<T> {
    pub(super) slot: Mutex<Slot<T>>,
    /// The batcher waits here for a verdict, or for room in the dead-letter backlog.
    pub(super) verdict: Condvar,
}

impl<T> Channel<T> {
    pub(super) fn wake_consumer(mut slot: parking_lot::MutexGuard<'_, Slot<T>>) {
        let waker = slot.consumer.take();
        drop(slot);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(super) fn finish(&self, batch: Batch<T>, result: Result<(), SendError>) {
        let mut slot = self.slot.lock();
        slot.state = State::Done(batch, result);
        drop(slot);
        self.verdict.notify_all();
    }
}

/// Creates the two ends: the sink for the core queue and the stream for async code.
pub(crate) fn channel<T: Send + 'static>() -> (BridgeSink<T>, Batches<T>) {
    let chan = Arc::new(Channel {
        slot: Mutex::new(Slot {
            state: State::Idle,
            dead_letters: VecDeque::new(),
            closed: false,
            consumer_gone: false,
            consumer: None,
        }),
        verdict: Condvar::new(),
    });
    (
        BridgeSink {
            chan: Arc::clone(&chan),
        },
        Batches {
            src: Source::Bridge(chan),
            sleep: None,
        },
    )
}

/// The sink the batcher thread calls; see the module documentation.
pub(crate) struct BridgeSink<T> {
    pub(super) chan: Arc<Channel<T>>,
}

/// Rounds of spinning, then yielding, before the batcher thread sleeps waiting for a
/// verdict: a consumer that answers within microseconds then costs no thread wake-up.
pub(super) const SPIN_BEFORE_WAIT: u32 = 40;

pub(super) fn spin(step: u32) {
    if step < 8 {
        for _ in 0..(1u32 << step) {
            std::hint::spin_loop();
        }
    } else {
        std::thread::yield_now();
    }
}

/// Nobody took a batch within its `send_timeout`.
#[derive(Debug, thiserror::Error)]
#[error(
    "no consumer took the batch within send_timeout: spawn `Batches::deliver_to(sink)` \
         on an executor, or poll the `Batches` stream"
)]
pub(super) struct NoConsumer;

impl<T: Send + 'static> Sink<T> for BridgeSink<T> {
    fn send(&mut self, _batch: &Batch<T>) -> Result<(), SendError> {
        // The batcher calls `send_mut`; a batch lent immutably cannot be handed over.
        Err(SendError::retry(NoConsumer))
    }

    fn send_mut(&mut self, batch: &mut Batch<T>) -> Result<(), SendError> {
        let deadline = batch.deadline();
        let mut slot = self.chan.slot.lock();
        slot.state = State::Offered(std::mem::take(batch));
        Channel::wake_consumer(slot);
        self.wait_verdict(batch, deadline)
    }

    fn on_dead_letter(&mut self, letter: DeadLetter<T>) {
        let mut slot = self.chan.slot.lock();
        let give_up = Instant::now() + DEAD_LETTER_WAIT;
        while slot.dead_letters.len() >= DEAD_LETTER_BACKLOG && !slot.consumer_gone {
            if self.chan.verdict.wait_until(&mut slot, give_up).timed_out() {
                break;
            }
        }
        if slot.dead_letters.len() >= DEAD_LETTER_BACKLOG {
            slot.dead_letters.pop_front();
        }
        slot.dead_letters.push_back(letter);
        Channel::wake_consumer(slot);
    }
}

impl<T> BridgeSink<T> {
    /// Waits for the consumer's verdict on the offered batch and puts the batch back.
    /// A batch nobody took by its deadline is taken back as a retryable failure; one a
    /// consumer holds is waited for (the consumer applies `send_timeout`).
    pub(super) fn wait_verdict(
        &self,
        batch: &mut Batch<T>,
        deadline: Instant,
    ) -> Result<(), SendError> {
        let mut slot = self.chan.slot.lock();
        let mut step = 0;
        loop {
            match std::mem::replace(&mut slot.state, State::Idle) {
                State::Done(back, result) => {
                    *batch = back;
                    return result;
                }
                State::Offered(back) if slot.consumer_gone || Instant::now() >= deadline => {
                    // Out of time, or the `Batches` end is gone and nobody can ever
                    // take it: a failed attempt.
                    *batch = back;
                    return Err(SendError::retry(NoConsumer));
                }
                state => {
                    let taken = matches!(state, State::Taken);
                    slot.state = state;
                    if step < SPIN_BEFORE_WAIT {
                        step += 1;
                        parking_lot::MutexGuard::unlocked(&mut slot, || spin(step));
                    } else if taken {
                        self.chan.verdict.wait(&mut slot);
                    } else {
                        self.chan.verdict.wait_until(&mut slot, deadline);
                    }
                }
            }
        }
    }
}

impl<T> Drop for BridgeSink<T> {
    fn drop(&mut self) {
        let mut slot = self.chan.slot.lock();
        slot.closed = true;
        Channel::wake_consumer(slot);
    }
}
