//! In memory mode: the consumer drives the batcher itself; the queue's sink only keeps
//! the dead letters for it ([`LetterBox`]).

use super::*;

/// For a queue whose batcher the consumer drives itself (memory mode): the queue's sink,
/// which keeps the dead letters for the consumer, and a `Batches` waiting for the
/// driver (see [`Batches::driven`]).
pub(crate) fn letter_box<T>() -> (LetterSink<T>, Arc<LetterBox<T>>) {
    let letters = Arc::new(LetterBox {
        letters: Mutex::new(VecDeque::new()),
        consumer_gone: AtomicBool::new(false),
    });
    (
        LetterSink {
            letters: Arc::clone(&letters),
        },
        letters,
    )
}

/// Dead letters of a driven queue, waiting for the consumer. They are produced while the
/// consumer polls (it runs the batcher), so they are not capped: a `Delivery` hands each
/// to `on_dead_letter` before its next batch, and a stream consumer takes them with
/// `take_dead_letters`.
pub(crate) struct LetterBox<T> {
    pub(super) letters: Mutex<VecDeque<DeadLetter<T>>>,
    /// The consumer end is gone: nobody will ever take a letter.
    pub(super) consumer_gone: AtomicBool,
}

/// The sink of a driven queue: the consumer sends the batches itself, so this only keeps
/// the dead letters for it. Its `send` is used only by a batcher left without a
/// consumer: every attempt fails at once.
pub(crate) struct LetterSink<T> {
    pub(super) letters: Arc<LetterBox<T>>,
}

/// The `Batches` end of a queue was dropped: no task takes batches any more.
#[derive(Debug, thiserror::Error)]
#[error("the Batches end of the queue was dropped: nothing takes batches any more")]
pub(super) struct ConsumerGone;

impl<T: Send + 'static> Sink<T> for LetterSink<T> {
    fn send(&mut self, _batch: &Batch<T>) -> Result<(), SendError> {
        Err(SendError::retry(ConsumerGone))
    }

    fn on_dead_letter(&mut self, letter: DeadLetter<T>) {
        // With no consumer left the letter has nowhere to go (it is counted in the
        // metrics all the same).
        if !self.letters.consumer_gone.load(SeqCst) {
            self.letters.letters.lock().push_back(letter);
        }
    }
}

/// The consumer end of a driven queue: the consumer runs the batcher itself.
pub(crate) struct Driven<T: Send + 'static> {
    pub(super) driver: BatchDriver<T>,
    pub(super) letters: Arc<LetterBox<T>>,
    /// A `ReadyBatch` is out, not answered yet.
    pub(super) out: AtomicBool,
    /// Woken when that batch is answered (a stream consumer polling meanwhile).
    pub(super) consumer: Mutex<Option<Waker>>,
}

impl<T: Send + 'static> Drop for Driven<T> {
    fn drop(&mut self) {
        // (Its `BatchDriver`, dropped next, moves the batcher to a thread of its own.)
        self.letters.consumer_gone.store(true, SeqCst);
        self.letters.letters.lock().clear();
    }
}

impl<T: Send + 'static> Driven<T> {
    pub(super) fn answer(&self, batch: Batch<T>, result: Result<(), SendError>) {
        self.driver.sent(batch, result);
        self.out.store(false, SeqCst);
        let waker = self.consumer.lock().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}
