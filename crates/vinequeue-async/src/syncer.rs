//! Durability waits without blocking an executor: a thread per durable queue runs the
//! log's syncs (`Queue::sync`, one group commit covering every item accepted so far) and
//! wakes the tasks whose items they covered.

use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use parking_lot::{Condvar, Mutex};
use vinequeue_core::{Error, Queue};

struct State {
    /// Largest sequence number a task waits to see durable.
    wanted: u64,
    /// Every item up to this sequence number is durable.
    synced: u64,
    /// A sync covering items up to `.0` failed with message `.1`.
    failed: Option<(u64, String)>,
    wakers: Vec<Waker>,
    shutdown: bool,
}

pub(crate) struct Syncer {
    state: Mutex<State>,
    work: Condvar,
}

impl Syncer {
    /// Starts the sync thread for `queue`. The thread holds the queue only while it
    /// syncs, so dropping the last handle closes the log at once.
    pub(crate) fn start<T: Send + 'static>(queue: &Arc<Queue<T>>) -> Result<Arc<Self>, Error> {
        let queue = Arc::downgrade(queue);
        let syncer = Arc::new(Syncer {
            state: Mutex::new(State {
                wanted: 0,
                synced: 0,
                failed: None,
                wakers: Vec::new(),
                shutdown: false,
            }),
            work: Condvar::new(),
        });
        let worker = Arc::clone(&syncer);
        std::thread::Builder::new()
            .name("vinequeue-async-sync".into())
            .spawn(move || worker.run(&queue))?;
        Ok(syncer)
    }

    fn run<T: Send + 'static>(&self, queue: &Weak<Queue<T>>) {
        let mut state = self.state.lock();
        loop {
            if state.shutdown {
                return;
            }
            let covered_by_failure = state.failed.as_ref().is_some_and(|f| f.0 >= state.wanted);
            if state.wanted <= state.synced || covered_by_failure {
                self.work.wait(&mut state);
                continue;
            }
            let target = state.wanted;
            drop(state);
            let Some(queue) = queue.upgrade() else {
                return; // every handle is gone
            };
            // Syncs everything accepted so far, which includes `target`.
            let result = queue.sync();
            drop(queue);
            state = self.state.lock();
            match result {
                Ok(()) => state.synced = state.synced.max(target),
                Err(e) => state.failed = Some((target, e.to_string())),
            }
            let wakers = std::mem::take(&mut state.wakers);
            drop(state);
            wakers.into_iter().for_each(Waker::wake);
            state = self.state.lock();
        }
    }

    /// Ready once the item with sequence number `seq` is durable (or its sync failed).
    pub(crate) fn poll_synced(&self, seq: u64, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut state = self.state.lock();
        if state.synced >= seq {
            return Poll::Ready(Ok(()));
        }
        if let Some((through, message)) = &state.failed {
            if *through >= seq {
                return Poll::Ready(Err(Error::LogFailed(message.clone())));
            }
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        if seq > state.wanted {
            state.wanted = seq;
            self.work.notify_one();
        }
        Poll::Pending
    }

    /// Ends the sync thread (after the sync it is running, if any).
    pub(crate) fn shutdown(&self) {
        self.state.lock().shutdown = true;
        self.work.notify_one();
    }
}
