//! The queue's metrics through the `metrics` facade (feature `metrics`), for whatever
//! exporter the application installed (Prometheus, StatsD, ...).
//!
//! Producers pay nothing for it: nothing here runs on the enqueue path. The batcher
//! publishes the counters and gauges of [`Metrics`] (absolute values, read off the same
//! atomics `Queue::metrics` reads) at most once a second as it goes, and once more when
//! it finishes; it records each successful send's duration in a histogram as the send
//! returns.
//!
//! | name | kind | from [`Metrics`] |
//! |---|---|---|
//! | `vinequeue_enqueued_total` | counter | `enqueued_total` |
//! | `vinequeue_sent_total` | counter | `sent_total` |
//! | `vinequeue_send_errors_total` | counter | `errors_total` |
//! | `vinequeue_batches_sent_total` | counter | `batches_sent_total` |
//! | `vinequeue_retries_total` | counter | `retries_total` |
//! | `vinequeue_dead_lettered_total` | counter | `dead_lettered_total` |
//! | `vinequeue_dropped_total` | counter | `dropped_total` |
//! | `vinequeue_abandoned_total` | counter | `abandoned_total` |
//! | `vinequeue_spilled_total` | counter | `spilled_total` |
//! | `vinequeue_recovered_total` | counter | `recovered_total` |
//! | `vinequeue_corrupt_records_total` | counter | `corrupt_records_total` |
//! | `vinequeue_dead_letters_unstored_total` | counter | `dead_letters_unstored_total` |
//! | `vinequeue_dead_letters_dropped_total` | counter | `dead_letters_dropped_total` |
//! | `vinequeue_log_errors_total` | counter | `log_errors_total` |
//! | `vinequeue_memory_queue_size` | gauge | `memory_queue_size` |
//! | `vinequeue_pending` | gauge | `pending` |
//! | `vinequeue_wal_size_bytes` | gauge | `wal_size` |
//! | `vinequeue_wal_damaged_bytes` | gauge | `wal_damaged_bytes` |
//! | `vinequeue_oldest_pending_age_seconds` | gauge | `oldest_pending_age` |
//! | `vinequeue_send_duration_seconds` | histogram | each successful send (`avg_send_latency`, `send_latency_p50` ... are its summary) |
//!
//! Every series carries the label `queue` ([`Config::metrics_label`](crate::Config::metrics_label),
//! `"default"` unless set), so that several queues in one process stay apart.

use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Label};
use parking_lot::Mutex;

use crate::metrics::Metrics;

/// Longest the published values lag behind the queue while the batcher runs.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// A counter and the field of [`Metrics`] it publishes.
type CounterOf = (Counter, fn(&Metrics) -> u64);
/// A gauge and the field of [`Metrics`] it publishes.
type GaugeOf = (Gauge, fn(&Metrics) -> f64);

/// The handles of one queue's series, registered once with the recorder installed when
/// the queue was built.
pub(crate) struct Exporter {
    counters: [CounterOf; 14],
    gauges: [GaugeOf; 5],
    send_duration: Histogram,
    last: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    pub(crate) fn new(queue: &str) -> Self {
        let labels = || vec![Label::new("queue", queue.to_owned())];
        let counter = |name: &'static str| metrics::counter!(name, labels());
        let gauge = |name: &'static str| metrics::gauge!(name, labels());
        Exporter {
            counters: [
                (counter("vinequeue_enqueued_total"), |m| m.enqueued_total),
                (counter("vinequeue_sent_total"), |m| m.sent_total),
                (counter("vinequeue_send_errors_total"), |m| m.errors_total),
                (counter("vinequeue_batches_sent_total"), |m| {
                    m.batches_sent_total
                }),
                (counter("vinequeue_retries_total"), |m| m.retries_total),
                (counter("vinequeue_dead_lettered_total"), |m| {
                    m.dead_lettered_total
                }),
                (counter("vinequeue_dropped_total"), |m| m.dropped_total),
                (counter("vinequeue_abandoned_total"), |m| m.abandoned_total),
                (counter("vinequeue_spilled_total"), |m| m.spilled_total),
                (counter("vinequeue_recovered_total"), |m| m.recovered_total),
                (counter("vinequeue_corrupt_records_total"), |m| {
                    m.corrupt_records_total
                }),
                (counter("vinequeue_dead_letters_unstored_total"), |m| {
                    m.dead_letters_unstored_total
                }),
                (counter("vinequeue_dead_letters_dropped_total"), |m| {
                    m.dead_letters_dropped_total
                }),
                (counter("vinequeue_log_errors_total"), |m| {
                    m.log_errors_total
                }),
            ],
            gauges: [
                (gauge("vinequeue_memory_queue_size"), |m| {
                    m.memory_queue_size as f64
                }),
                (gauge("vinequeue_pending"), |m| m.pending as f64),
                (gauge("vinequeue_wal_size_bytes"), |m| m.wal_size as f64),
                (gauge("vinequeue_wal_damaged_bytes"), |m| {
                    m.wal_damaged_bytes as f64
                }),
                (gauge("vinequeue_oldest_pending_age_seconds"), |m| {
                    m.oldest_pending_age.as_secs_f64()
                }),
            ],
            send_duration: metrics::histogram!("vinequeue_send_duration_seconds", labels()),
            last: Mutex::new(None),
        }
    }

    /// Whether a publication is due (the first one, or a second since the last).
    pub(crate) fn due(&self) -> bool {
        self.last
            .lock()
            .is_none_or(|last| last.elapsed() >= PUBLISH_EVERY)
    }

    /// Publishes a snapshot.
    pub(crate) fn publish(&self, m: &Metrics) {
        *self.last.lock() = Some(Instant::now());
        for (counter, read) in &self.counters {
            counter.absolute(read(m));
        }
        for (gauge, read) in &self.gauges {
            gauge.set(read(m));
        }
    }

    /// A successful send took `elapsed`.
    pub(crate) fn record_send(&self, elapsed: Duration) {
        self.send_duration.record(elapsed.as_secs_f64());
    }
}
