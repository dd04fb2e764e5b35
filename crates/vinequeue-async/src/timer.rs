//! A runtime-agnostic timer: one background thread, started on first use, wakes the
//! tasks whose deadlines passed. Used for `OverflowPolicy::Block` timeouts, flush
//! timeouts and `send_timeout`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Pending deadlines, earliest first (the id breaks ties), and the last id handed out.
type Entries = (BTreeMap<(Instant, u64), Waker>, u64);

struct Timers {
    entries: Mutex<Entries>,
    /// Notified when an earlier deadline than the one waited for is added.
    changed: Condvar,
}

fn timers() -> &'static Timers {
    static TIMERS: OnceLock<&'static Timers> = OnceLock::new();
    TIMERS.get_or_init(|| {
        let timers: &'static Timers = Box::leak(Box::new(Timers {
            entries: Mutex::new((BTreeMap::new(), 0)),
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
            while let Some(entry) = entries.0.first_entry() {
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
            match entries.0.first_key_value().map(|(k, _)| k.0) {
                Some(next) => {
                    self.changed.wait_until(&mut entries, next);
                }
                None => self.changed.wait(&mut entries),
            }
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

    fn unregister(&mut self) {
        if let Some(key) = self.key.take() {
            timers().entries.lock().0.remove(&key);
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
                entries.1 += 1;
                (self.deadline, entries.1)
            }
        };
        let earliest = entries.0.first_key_value().is_none_or(|(k, _)| key < *k);
        match entries.0.get_mut(&key) {
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                // Not registered yet, or fired between the check above and this lock
                // (then the deadline has passed and the next poll completes).
                if self.key.is_some() && Instant::now() >= self.deadline {
                    drop(entries);
                    self.key = None;
                    return Poll::Ready(());
                }
                entries.0.insert(key, cx.waker().clone());
            }
        }
        drop(entries);
        self.key = Some(key);
        if earliest {
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
    use std::time::Duration;

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
        assert!(timers().entries.lock().0.contains_key(&key));
        drop(sleep);
        assert!(!timers().entries.lock().0.contains_key(&key));
    }
}
