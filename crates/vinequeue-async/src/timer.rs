//! A runtime-agnostic timer: one background thread, started on first use, wakes the
//! tasks whose deadlines passed. Used for `OverflowPolicy::Block` timeouts, flush
//! timeouts and `send_timeout`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Longest the timer thread sleeps without looking at its entries again.
const IDLE_BACKSTOP: Duration = Duration::from_secs(1);

struct Entries {
    /// Pending deadlines, earliest first (the id breaks ties).
    pending: BTreeMap<(Instant, u64), Waker>,
    last_id: u64,
    /// When the timer thread will next look, while it sleeps; `None` while it runs (it
    /// looks at the entries again before it sleeps).
    sleeping_until: Option<Instant>,
}

struct Timers {
    entries: Mutex<Entries>,
    /// Notified when a deadline earlier than the thread's next look is added.
    changed: Condvar,
}

fn timers() -> &'static Timers {
    static TIMERS: OnceLock<&'static Timers> = OnceLock::new();
    TIMERS.get_or_init(|| {
        let timers: &'static Timers = Box::leak(Box::new(Timers {
            entries: Mutex::new(Entries {
                pending: BTreeMap::new(),
                last_id: 0,
                sleeping_until: None,
            }),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("vinequeue-timer".into())
            .spawn(move || timers.run())
            .expect("spawning the vinequeue timer thread");
        timers
    })
}

impl Timers {
    fn run(&self) {
        let mut entries = self.entries.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(entry) = entries.pending.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            if !due.is_empty() {
                drop(entries);
                due.into_iter().for_each(Waker::wake);
                entries = self.entries.lock();
                continue;
            }
            let backstop = now + IDLE_BACKSTOP;
            let next = entries
                .pending
                .first_key_value()
                .map_or(backstop, |(k, _)| k.0.min(backstop));
            entries.sleeping_until = Some(next);
            self.changed.wait_until(&mut entries, next);
            entries.sleeping_until = None;
        }
    }
}

/// A future that completes at `deadline`.
#[derive(Debug)]
pub(crate) struct Sleep {
    deadline: Instant,
    /// The key of this sleep's registration with the timer thread, once registered.
    key: Option<(Instant, u64)>,
}

impl Sleep {
    pub(crate) fn until(deadline: Instant) -> Self {
        Sleep {
            deadline,
            key: None,
        }
    }

    /// When it completes.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    fn unregister(&mut self) {
        if let Some(key) = self.key.take() {
            timers().entries.lock().pending.remove(&key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.unregister();
            return Poll::Ready(());
        }
        let t = timers();
        let mut entries = t.entries.lock();
        let key = match self.key {
            Some(key) => key,
            None => {
                entries.last_id += 1;
                (self.deadline, entries.last_id)
            }
        };
        // Wake the thread only if it sleeps past this deadline (most waits end long
        // before their timeout: re-arming a far deadline costs no thread wake-up).
        let earlier = entries.sleeping_until.is_some_and(|w| key.0 < w);
        match entries.pending.get_mut(&key) {
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                // Not registered yet, or fired between the check above and this lock
                // (then the deadline has passed and the next poll completes).
                if self.key.is_some() && Instant::now() >= self.deadline {
                    drop(entries);
                    self.key = None;
                    return Poll::Ready(());
                }
                entries.pending.insert(key, cx.waker().clone());
            }
        }
        drop(entries);
        self.key = Some(key);
        if earlier {
            t.changed.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_end_in_deadline_order_and_not_before() {
        let start = Instant::now();
        let long = Sleep::until(start + Duration::from_millis(80));
        let short = Sleep::until(start + Duration::from_millis(20));
        futures::executor::block_on(short);
        let after_short = start.elapsed();
        futures::executor::block_on(long);
        let after_long = start.elapsed();
        assert!(after_short >= Duration::from_millis(20));
        assert!(after_long >= Duration::from_millis(80));
    }

    #[test]
    fn a_dropped_sleep_leaves_no_registration() {
        let mut sleep = Sleep::until(Instant::now() + Duration::from_secs(3600));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
        let key = sleep.key.expect("registered");
        assert!(timers().entries.lock().pending.contains_key(&key));
        drop(sleep);
        assert!(!timers().entries.lock().pending.contains_key(&key));
    }
}
