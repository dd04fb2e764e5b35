//! Counters and the send-latency histogram, and the [`Metrics`] snapshot built from them.
//!
//! Producers touch only the drop counter, and only on the overflow path; everything else
//! is written by the batcher thread. `enqueued_total` is not a counter at all: it is read
//! off the ring's tail position, so a successful `enqueue` pays nothing for metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A snapshot of a queue's counters and gauges, from [`Queue::metrics`](crate::Queue::metrics).
///
/// Counters only grow. With a healthy sink, after `stop()` returns `Ok`:
/// `enqueued_total == sent_total + dead_lettered_total + dropped_total + abandoned_total`
/// (and before that, the difference is `pending`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Items accepted by `enqueue` / `enqueue_batch` (including those later dropped by
    /// `DropOldest` and those discarded by `DropNewest`).
    pub enqueued_total: u64,
    /// Items the sink accepted.
    pub sent_total: u64,
    /// Failed send attempts (errors and panics), including those later retried.
    pub errors_total: u64,
    /// Send attempts that succeeded.
    pub batches_sent_total: u64,
    /// Items in the memory ring now.
    pub memory_queue_size: u64,
    /// Bytes of write-ahead log on disk (0 in memory mode).
    pub wal_size: u64,
    /// Bytes of the copies of damaged log files kept for inspection when the log was
    /// opened (`RecoveryReport::damaged_bytes`; not counted in `wal_size`).
    pub wal_damaged_bytes: u64,
    /// Mean duration of successful send attempts.
    pub avg_send_latency: Duration,
    /// Retry attempts made (not counting first attempts).
    pub retries_total: u64,
    /// Items handed to the dead-letter hook after a permanent error or exhausted retries.
    pub dead_lettered_total: u64,
    /// Items discarded by `DropOldest` / `DropNewest`.
    pub dropped_total: u64,
    /// Items not delivered because `stop()` ran out of `shutdown_timeout` (memory mode).
    pub abandoned_total: u64,
    /// Items that lived only in the write-ahead log because the ring was full (0 in
    /// memory mode).
    pub spilled_total: u64,
    /// Items accepted but not yet delivered, dead-lettered, dropped or abandoned.
    pub pending: u64,
    /// Age of the oldest item not yet delivered, dead-lettered or dropped (durable mode;
    /// zero when nothing is pending, and in memory mode). Read from arrival times
    /// sampled about every millisecond (so it may be short by about that much) and
    /// thinned out as a backlog ages (short by at most about a thousandth of its age);
    /// records found in the log at open count as arrived at the open.
    pub oldest_pending_age: Duration,
    /// Items recovered from the write-ahead log at open (0 in memory mode).
    pub recovered_total: u64,
    /// Records lost to corruption found at recovery (0 in memory mode).
    pub corrupt_records_total: u64,
    /// Dead-lettered items the dead-letter log could not take (it is full, the record
    /// is over its size limit, or it failed): they stay unacknowledged in the main log,
    /// are offered to the dead-letter log again about once a second, and come back, to
    /// be delivered again, at the next start if still there (durable mode). Also
    /// counts records read back from the log that do not decode when there is no
    /// dead-letter log to keep them in.
    pub dead_letters_unstored_total: u64,
    /// Dead letters dropped from a full dead-letter log to make room for new ones
    /// (`DeadLetterFull::DropOldest`; durable mode): the oldest segment's letters at a
    /// time.
    pub dead_letters_dropped_total: u64,
    /// Acknowledgements the log reported as failed (durable mode): a checkpoint that
    /// could not be written, or a delivered segment that could not be deleted. Nothing
    /// is lost: the log tries again at the next acknowledgement, and until it succeeds
    /// the space stays in use (and a restart may deliver the acknowledged records
    /// again). A count that keeps growing points at the disk or the directory's
    /// permissions.
    pub log_errors_total: u64,
    /// Median successful send latency (0 with `enable_metrics(false)` or no sends yet).
    pub send_latency_p50: Duration,
    /// 99th percentile successful send latency.
    pub send_latency_p99: Duration,
    /// Largest successful send latency.
    pub send_latency_max: Duration,
}

/// Log-linear histogram: 8 buckets per power of two (relative error under 12.5%), 496
/// buckets cover every `u64` nanosecond value. Only the batcher writes; any thread reads.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS
        let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
        ((exp - SUB_BITS + 1) as u64 * SUB + sub) as usize
    }

    /// The largest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let exp = i / SUB + SUB_BITS as u64 - 1;
        let sub = i % SUB;
        let low = (1u64 << exp) | (sub << (exp - SUB_BITS as u64));
        low.saturating_add((1u64 << (exp - SUB_BITS as u64)) - 1)
    }

    pub(crate) fn record(&self, v: u64) {
        self.buckets[Self::index(v)].fetch_add(1, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    /// `(p50, p99, max)` in nanoseconds; a percentile reports its bucket's upper bound,
    /// clamped to the exact maximum.
    pub(crate) fn summary(&self) -> (u64, u64, u64) {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let max = self.max.load(Relaxed);
        if total == 0 {
            return (0, 0, 0);
        }
        let at = |q: f64| {
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Self::upper(i).min(max);
                }
            }
            max
        };
        (at(0.50), at(0.99), max)
    }
}

/// The queue's live counters.
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) batches_sent: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    /// Items discarded by `DropOldest` (they had been pushed into the ring).
    pub(crate) dropped_oldest: AtomicU64,
    /// Items discarded by `DropNewest` (never pushed).
    pub(crate) dropped_newest: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) latency_sum_ns: AtomicU64,
    pub(crate) latency: Option<Histogram>,
}

impl Counters {
    pub(crate) fn new(histogram: bool) -> Self {
        Counters {
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            batches_sent: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            dropped_oldest: AtomicU64::new(0),
            dropped_newest: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            latency_sum_ns: AtomicU64::new(0),
            latency: histogram.then(Histogram::new),
        }
    }

    /// Records one successful attempt that delivered `items` items in `elapsed`.
    pub(crate) fn record_success(&self, items: u64, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sent.fetch_add(items, Relaxed);
        self.batches_sent.fetch_add(1, Relaxed);
        self.latency_sum_ns.fetch_add(ns, Relaxed);
        if let Some(h) = &self.latency {
            h.record(ns);
        }
    }

    /// What a flush reports, counted from here: (delivered, dead-lettered, dropped).
    pub(crate) fn outcomes(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Relaxed),
            self.dead_lettered.load(Relaxed),
            self.dropped_oldest.load(Relaxed) + self.dropped_newest.load(Relaxed),
        )
    }

    /// Fills the counter fields of a snapshot (the queue adds the gauges).
    pub(crate) fn fill(&self, m: &mut Metrics) {
        m.sent_total = self.sent.load(Relaxed);
        m.errors_total = self.errors.load(Relaxed);
        m.batches_sent_total = self.batches_sent.load(Relaxed);
        m.retries_total = self.retries.load(Relaxed);
        m.dead_lettered_total = self.dead_lettered.load(Relaxed);
        m.dropped_total = self.dropped_oldest.load(Relaxed) + self.dropped_newest.load(Relaxed);
        m.abandoned_total = self.abandoned.load(Relaxed);
        let sum = self.latency_sum_ns.load(Relaxed);
        m.avg_send_latency = sum
            .checked_div(m.batches_sent_total)
            .map_or(Duration::ZERO, Duration::from_nanos);
        if let Some(h) = &self.latency {
            let (p50, p99, max) = h.summary();
            m.send_latency_p50 = Duration::from_nanos(p50);
            m.send_latency_p99 = Duration::from_nanos(p99);
            m.send_latency_max = Duration::from_nanos(max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_index_is_monotonic_and_bounds_hold() {
        let mut last = 0;
        for v in (0..5000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let i = Histogram::index(v);
            assert!(i >= last, "index must not decrease at {v}");
            assert!(i < BUCKETS);
            assert!(Histogram::upper(i) >= v, "upper({i}) < {v}");
            if i > 0 {
                assert!(
                    Histogram::upper(i - 1) < v,
                    "value {v} belongs in an earlier bucket"
                );
            }
            last = i;
        }
    }

    #[test]
    fn percentiles_are_within_bucket_precision() {
        let h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let (p50, p99, max) = h.summary();
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() / want as f64 <= 0.125;
        assert!(close(p50, 5_000_000), "p50 {p50}");
        assert!(close(p99, 9_900_000), "p99 {p99}");
        assert_eq!(max, 10_000_000);
        assert_eq!(Histogram::new().summary(), (0, 0, 0));
    }
}

/// What became of the items since the previous flush returned, or since the queue was
/// built ([`Queue::flush`](crate::Queue::flush)): a flush returns once every item
/// enqueued before it is resolved, and resolved is not always delivered.
///
/// ```
/// # use std::time::Duration;
/// # use vinequeue_core::{Batch, Config, Queue, SendError};
/// let queue = Queue::new(Config::default(), |_: &Batch<u32>| Err(SendError::permanent("no")))?;
/// queue.enqueue(1)?;
/// queue.start()?;
/// let report = queue.flush(Duration::from_secs(5))?;
/// assert_eq!((report.delivered, report.dead_lettered), (0, 1));
/// assert!(!report.all_delivered());
/// # Ok::<(), vinequeue_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushReport {
    /// Items the sink accepted.
    pub delivered: u64,
    /// Items dead-lettered (permanent errors, retries exhausted): in the dead-letter log
    /// (durable mode) or handed to `Sink::on_dead_letter`.
    pub dead_lettered: u64,
    /// Items discarded by `DropOldest` / `DropNewest`.
    pub dropped: u64,
}

impl FlushReport {
    /// Whether nothing was dead-lettered or dropped.
    pub fn all_delivered(&self) -> bool {
        self.dead_lettered == 0 && self.dropped == 0
    }

    /// The outcomes counted between `before` and `after` (see `Counters::outcomes`).
    pub(crate) fn between(before: (u64, u64, u64), after: (u64, u64, u64)) -> Self {
        FlushReport {
            delivered: after.0.saturating_sub(before.0),
            dead_lettered: after.1.saturating_sub(before.1),
            dropped: after.2.saturating_sub(before.2),
        }
    }
}
