//! The queue's lifecycle state: created (the sink waiting for `start`), running,
//! stopping, stopped; shared by the queue handle, the batcher and an external driver.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::driver::DriverSlot;
use crate::shared::QueueState;
use crate::sink::Sink;

/// Extra time `stop()` waits past the shutdown deadline for the batcher to hand leftover
/// items to the dead-letter hook and exit.
pub(crate) const EXIT_GRACE: Duration = Duration::from_millis(200);

pub(crate) enum Stage<T> {
    /// Created; the sink waits here for `start()`.
    Created(Box<dyn Sink<T>>),
    Running,
    Stopping,
    Stopped,
}

pub(crate) struct Lifecycle<T> {
    pub(crate) stage: Stage<T>,
    pub(crate) handle: Option<JoinHandle<()>>,
    /// Set by the batcher as it exits: how many items it abandoned.
    pub(crate) exited: Option<u64>,
    /// Set by `drive_externally`: `start()` hands the batcher to this slot instead of a
    /// thread.
    pub(crate) driven: Option<Arc<DriverSlot<T>>>,
    /// `stop()` was called on the batcher thread itself and did not wait: the batcher
    /// completes the stop as it exits.
    pub(crate) stop_on_exit: bool,
    /// The thread on which `stop()` runs a driven batcher nobody drove to its end: a
    /// `stop()` from its dead-letter handler must not wait for that very call.
    pub(crate) finishing: Option<thread::ThreadId>,
}

pub(crate) struct LifecycleControl<T> {
    pub(crate) life: Mutex<Lifecycle<T>>,
    /// Notified when the batcher exits and when a stop completes.
    pub(crate) changed: Condvar,
}

impl<T> LifecycleControl<T> {
    /// The batcher has finished, having abandoned `abandoned` items. If `stop()` was
    /// called on the batcher's own thread and nobody has waited for it since, this
    /// completes the stop.
    pub(crate) fn batcher_exited(&self, abandoned: u64, shared: &QueueState<T>) {
        let mut life = self.life.lock();
        life.exited = Some(abandoned);
        if life.stop_on_exit {
            life.stop_on_exit = false;
            life.stage = Stage::Stopped;
            life.handle = None; // the exiting thread itself: nobody joins it
            drop(life);
            shared.progress.notify_always();
            shared.wakers.wake();
        } else {
            drop(life);
        }
        self.changed.notify_all();
    }
}
