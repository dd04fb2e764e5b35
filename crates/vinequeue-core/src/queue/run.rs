//! Starting the batcher (on its thread, or driven from outside) and stopping the queue.

use super::*;

impl<T: Send + 'static> Queue<T> {
    /// Starts the batcher thread. Calling it again while running does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after `stop()`; [`Error::Io`] if the thread cannot be spawned.
    pub fn start(&self) -> Result<(), Error> {
        let mut life = self.control.life.lock();
        match life.stage {
            Stage::Running => Ok(()),
            Stage::Stopping | Stage::Stopped => Err(Error::Closed),
            Stage::Created(_) => self.spawn(&mut life),
        }
    }

    #[doc(hidden)] // adapter plumbing: see the `adapter` module
    /// Makes the caller run this queue's batcher through the returned [`BatchDriver`]
    /// instead of a thread: for adapters that form and send batches in a task of their
    /// own (the async adapter does). Call it before [`start`](Queue::start); `start()`
    /// then hands the batcher to the driver. The queue's sink still receives the dead
    /// letters; its `send` is used only if the driver is dropped before the end (see
    /// [`BatchDriver`]).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] once started, or if a driver was already taken.
    pub fn drive_externally(&self) -> Result<BatchDriver<T>, Error> {
        let mut life = self.control.life.lock();
        if !matches!(life.stage, Stage::Created(_)) || life.driven.is_some() {
            return Err(Error::Unsupported(
                "drive_externally must come before start(), once".into(),
            ));
        }
        let slot = Arc::new(DriverSlot::new());
        life.driven = Some(Arc::clone(&slot));
        Ok(BatchDriver {
            slot,
            shared: Arc::clone(&self.shared),
            control: Arc::clone(&self.control),
        })
    }

    pub(super) fn spawn(&self, life: &mut Lifecycle<T>) -> Result<(), Error> {
        let Stage::Created(sink) = std::mem::replace(&mut life.stage, Stage::Running) else {
            unreachable!("spawn is only called in the Created stage");
        };
        let batcher = Batcher::new(Arc::clone(&self.shared), sink);
        if let Some(slot) = &life.driven {
            let mut state = slot.state.lock();
            if matches!(*state, DriverState::NotStarted) {
                *state = DriverState::Running(Box::new(batcher));
                drop(state);
                self.shared.unpark_batcher();
                return Ok(());
            }
            // The driver is gone already: run the batcher on a thread after all.
            drop(state);
            life.driven = None;
        }
        let control = Arc::clone(&self.control);
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name("vinequeue-batcher".into())
            .spawn(move || {
                // The batcher catches sink panics itself; this is a last line of defence so
                // that `stop()` learns of the exit even if the batcher has a bug.
                // A batcher that died leaves everything still pending undelivered.
                let abandoned = catch_unwind(AssertUnwindSafe(|| batcher.run()))
                    .unwrap_or_else(|_| shared.pending().max(1));
                control.batcher_exited(abandoned, &shared);
            });
        match spawned {
            Ok(handle) => {
                life.handle = Some(handle);
                Ok(())
            }
            Err(e) => {
                // The sink went into the closure that failed to spawn; it is gone, so this
                // queue can no longer start.
                life.stage = Stage::Stopped;
                self.shared.ring.close();
                Err(Error::Io(e))
            }
        }
    }

    /// Stops the queue: refuses new items, delivers what is buffered within
    /// `shutdown_timeout`, then ends the batcher thread. Idempotent: later calls (and
    /// concurrent ones, which wait for the first) return `Ok`.
    ///
    /// A queue that was never started is started for the drain, so that items enqueued
    /// before `start()` are delivered too.
    ///
    /// Called on the batcher thread (from inside [`Sink::send`] or a dead-letter
    /// handler), it closes the queue and returns `Ok` at once: the batcher drains after
    /// the call returns, within `shutdown_timeout`; the metrics tell the outcome.
    ///
    /// # Errors
    ///
    /// [`Error::ShutdownTimeout`] with the number of items not delivered in time; those
    /// were handed to [`Sink::on_dead_letter`] with
    /// [`DeadLetterReason::Shutdown`](crate::DeadLetterReason::Shutdown), unless the sink
    /// was stuck inside `send`.
    pub fn stop(&self) -> Result<(), Error> {
        let s = &self.shared;
        let mut life = self.control.life.lock();
        // A stop begun on the batcher thread, which did not wait: this call waits for it.
        let mut adopted = false;
        loop {
            match life.stage {
                Stage::Stopped => return Ok(()),
                // (On the batcher thread the stop is under way and completes as the
                // batcher exits; waiting here would wait for itself.)
                Stage::Stopping
                    if s.on_batcher_thread() || life.finishing == Some(thread::current().id()) =>
                {
                    return Ok(())
                }
                Stage::Stopping if life.stop_on_exit => {
                    life.stop_on_exit = false;
                    adopted = true;
                    break;
                }
                Stage::Stopping => {
                    self.control.changed.wait(&mut life);
                }
                Stage::Created(_) if s.ring.is_empty() => {
                    life.stage = Stage::Stopped;
                    self.close_ring();
                    s.space.notify_always();
                    s.wakers.wake();
                    // A driver waiting for the start learns that it will not come.
                    s.unpark_batcher();
                    return Ok(());
                }
                Stage::Created(_) => {
                    self.spawn(&mut life)?;
                }
                Stage::Running => break,
            }
        }
        let deadline = match s.shutdown_deadline() {
            Some(deadline) if adopted => deadline,
            _ => {
                life.stage = Stage::Stopping;
                let deadline = after(Instant::now(), s.config.shutdown_timeout);
                *s.shutdown_deadline.lock() = Some(deadline);
                self.close_ring();
                s.space.notify_always();
                s.wakers.wake();
                s.unpark_batcher();
                if s.on_batcher_thread() {
                    // From inside the sink or a dead-letter handler: the batcher drains
                    // once this call is back, within the deadline, and completes the stop
                    // as it exits (or a later `stop()` elsewhere waits for it).
                    life.stop_on_exit = true;
                    return Ok(());
                }
                deadline
            }
        };

        let give_up = after(deadline, EXIT_GRACE);
        while life.exited.is_none() {
            if self
                .control
                .changed
                .wait_until(&mut life, give_up)
                .timed_out()
            {
                break;
            }
        }
        if let (None, Some(slot)) = (life.exited, life.driven.clone()) {
            // Nobody drove the batcher to the end: past its deadline it has nothing left
            // to wait for, so finish it here (unless a batch is out with the driver).
            life.finishing = Some(thread::current().id());
            MutexGuard::unlocked(&mut life, || {
                crate::driver::take_over(&slot, &self.control, false)
            });
            life.finishing = None;
        }
        let result = match life.exited {
            Some(0) => Ok(()),
            Some(abandoned) => Err(Error::ShutdownTimeout {
                undelivered: abandoned,
            }),
            // The sink is stuck inside `send`: leave the thread behind.
            None => Err(Error::ShutdownTimeout {
                undelivered: s.pending().max(1),
            }),
        };
        if let (Some(handle), Some(_)) = (life.handle.take(), life.exited) {
            let _ = handle.join();
        }
        life.stage = Stage::Stopped;
        self.control.changed.notify_all();
        drop(life);
        // Wake flushers so they see the final state.
        s.progress.notify_always();
        s.wakers.wake();
        result
    }

    /// Refuses every later item. In durable mode under the append lock: a producer that
    /// checked the ring open before appending has pushed (or spilled) by then, and no
    /// append slips in after the close.
    pub(super) fn close_ring(&self) {
        let s = &self.shared;
        let _guard = s.durable.as_ref().map(|d| d.append_lock.lock());
        s.ring.close();
    }

    /// Whether `start()` has run (and `stop()` has not finished).
    pub fn is_started(&self) -> bool {
        matches!(
            self.control.life.lock().stage,
            Stage::Running | Stage::Stopping
        )
    }

    /// Whether `stop()` has been called: the queue accepts no more items.
    pub fn is_closed(&self) -> bool {
        self.shared.ring.is_closed()
    }
}
