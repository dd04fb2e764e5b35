//! Queue configuration: defaults, chainable setters, and validation in one place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
pub use vinequeue_storage::{RecoveryMode, SyncMode};

/// What `enqueue` does when the queue has no room for another item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Wait up to the given time for room, then hand the item back in
    /// [`EnqueueError::Full`](crate::EnqueueError::Full).
    Block(Duration),
    /// Hand the item back in [`EnqueueError::Full`](crate::EnqueueError::Full) at once.
    Reject,
    /// Discard the oldest queued item to make room; counted in `Metrics::dropped_total`.
    /// For telemetry that prefers fresh data.
    DropOldest,
    /// Discard the item being enqueued (`enqueue` returns `Ok`); counted in
    /// `Metrics::dropped_total`.
    DropNewest,
}

/// What the queue does with a dead letter when the dead-letter log is full
/// (`dead_letter_max_size` reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadLetterFull {
    /// Keep the record in the main log, unacknowledged, and store the letter once the
    /// dead-letter log has room (a redrive or discard frees it): nothing is lost, but
    /// the main log cannot reclaim space past the oldest such record, and a restart
    /// in the meantime delivers it to the sink again. Counted in
    /// `dead_letters_unstored_total`. The default.
    #[default]
    KeepInLog,
    /// Make room by dropping the oldest letters (the dead-letter log's oldest segment),
    /// counted in `dead_letters_dropped_total`, and store the new one.
    DropOldest,
}

/// Largest accepted `memory_size`.
pub const MAX_MEMORY_SIZE: usize = 1 << 30;

/// Smallest `dead_letter_max_size`: four of the dead-letter log's 4 MiB segments.
pub const MIN_DEAD_LETTER_SIZE: u64 = 16 * 1024 * 1024;

/// Configuration of a [`Queue`](crate::Queue).
///
/// Every setter consumes and returns `self`, so a configuration reads as one expression.
/// Setters never panic and never fail: [`Queue::new`](crate::Queue::new) checks the whole
/// configuration at once (see [`Config::validate`]) and names the field that is wrong.
///
/// ```
/// use std::time::Duration;
/// use vinequeue_core::{Config, OverflowPolicy};
///
/// let config = Config::default()
///     .memory_size(50_000)
///     .batch_size(1_000)
///     .flush_timeout(Duration::from_millis(200))
///     .retry_limit(5)
///     .overflow(OverflowPolicy::Reject);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) memory_size: usize,
    pub(crate) batch_size: usize,
    pub(crate) flush_timeout: Duration,
    pub(crate) wal_path: Option<PathBuf>,
    pub(crate) wal_max_size: u64,
    pub(crate) sync_mode: SyncMode,
    pub(crate) send_timeout: Duration,
    /// `None`: the default of the queue's kind (see `retry_limit`).
    pub(crate) retry_limit: Option<u32>,
    pub(crate) retry_backoff_first: Duration,
    pub(crate) retry_backoff_max: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) enable_metrics: bool,
    pub(crate) overflow: OverflowPolicy,
    pub(crate) recovery_mode: RecoveryMode,
    pub(crate) dead_letter_max_size: Option<u64>,
    pub(crate) dead_letter_full: DeadLetterFull,
    pub(crate) metrics_label: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            memory_size: 10_000,
            batch_size: 100,
            flush_timeout: Duration::from_secs(5),
            wal_path: None,
            wal_max_size: 100 * 1024 * 1024,
            sync_mode: SyncMode::Periodic(Duration::from_millis(100)),
            send_timeout: Duration::from_secs(30),
            retry_limit: None,
            retry_backoff_first: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            enable_metrics: true,
            overflow: OverflowPolicy::Block(Duration::from_secs(1)),
            recovery_mode: RecoveryMode::SkipCorrupt,
            dead_letter_max_size: None,
            dead_letter_full: DeadLetterFull::KeepInLog,
            metrics_label: None,
        }
    }
}

impl Config {
    /// Capacity of the memory ring, in items. Default = 10 000.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn memory_size(mut self, items: usize) -> Self {
        self.memory_size = items;
        self
    }

    /// Most items handed to one `Sink::send`. Default = 100.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn batch_size(mut self, items: usize) -> Self {
        self.batch_size = items;
        self
    }

    /// Longest an item waits for its batch to fill before the batch is sent anyway.
    /// Default = 5 s.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// Directory of the write-ahead log. Default = none (memory only).
    #[must_use = "a setter returns the changed value; use it"]
    pub fn wal_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.wal_path = Some(path.into());
        self
    }

    /// Most bytes of log on disk; at the limit the overflow policy applies.
    /// Default = 100 MiB.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn wal_max_size(mut self, bytes: u64) -> Self {
        self.wal_max_size = bytes;
        self
    }

    /// Durability of an accepted item with a write-ahead log. Default =
    /// `Periodic(100 ms)`.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn sync_mode(mut self, mode: SyncMode) -> Self {
        self.sync_mode = mode;
        self
    }

    /// Deadline handed to each send attempt ([`Batch::deadline`](crate::Batch::deadline)).
    /// Default = 30 s.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Retries after the first failed attempt; then the batch is dead-lettered.
    /// [`RETRY_UNTIL_STOPPED`](Config::RETRY_UNTIL_STOPPED) (`u32::MAX`) retries until
    /// the queue stops.
    ///
    /// Default: 3 in memory mode; in durable mode (a `wal_path`, or a storage of your
    /// own), until stopped: a backend that is down for a while (a database restart, a
    /// deploy) must not turn everything sent meanwhile into dead letters, and the log
    /// holds what waits. The pause between attempts grows to `retry_backoff`'s `max`
    /// and stays there; what `stop()` cannot deliver stays in the log for the next start.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn retry_limit(mut self, retries: u32) -> Self {
        self.retry_limit = Some(retries);
        self
    }

    /// Retries until the queue stops: [`retry_limit`](Config::retry_limit) with
    /// [`RETRY_UNTIL_STOPPED`](Config::RETRY_UNTIL_STOPPED).
    #[must_use = "a setter returns the changed value; use it"]
    pub fn retry_until_stopped(self) -> Self {
        self.retry_limit(Self::RETRY_UNTIL_STOPPED)
    }

    /// A `retry_limit` that never runs out: the batch is retried until `stop()`.
    pub const RETRY_UNTIL_STOPPED: u32 = u32::MAX;

    /// The configured retry limit; `None` for the default, which depends on the kind of
    /// queue (see [`retry_limit`](Config::retry_limit)).
    pub fn get_retry_limit(&self) -> Option<u32> {
        self.retry_limit
    }

    /// The retry limit a queue with (`durable`) or without a log runs with.
    pub(crate) fn effective_retry_limit(&self, durable: bool) -> u32 {
        self.retry_limit.unwrap_or(if durable {
            Self::RETRY_UNTIL_STOPPED
        } else {
            3
        })
    }

    /// First and largest pause between attempts; the pause doubles after each failure,
    /// with jitter. Default = 100 ms, 10 s.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.retry_backoff_first = first;
        self.retry_backoff_max = max;
        self
    }

    /// How long `stop()` (and `Drop`) keeps delivering. Default = 30 s.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Whether send-latency histograms are kept (counters are always on). Default = true.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn enable_metrics(mut self, enabled: bool) -> Self {
        self.enable_metrics = enabled;
        self
    }

    /// What `enqueue` does when there is no room. Default = `Block(1 s)`.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// What opening the write-ahead log does with damaged records that are not a torn
    /// tail. Default = `SkipCorrupt`.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// The value of the `queue` label on this queue's series in the `metrics` facade
    /// (feature `metrics`): which queue a number belongs to when a process runs several.
    /// Default = `"default"`. Without the feature, it is kept and not used.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn metrics_label(mut self, label: impl Into<String>) -> Self {
        self.metrics_label = Some(label.into());
        self
    }

    /// The configured `queue` label of the metrics (`"default"` unless set).
    pub fn get_metrics_label(&self) -> &str {
        self.metrics_label.as_deref().unwrap_or("default")
    }

    /// The configured log size limit.
    pub fn get_wal_max_size(&self) -> u64 {
        self.wal_max_size
    }

    /// The configured sync mode.
    pub fn get_sync_mode(&self) -> SyncMode {
        self.sync_mode
    }

    /// The configured recovery mode.
    pub fn get_recovery_mode(&self) -> RecoveryMode {
        self.recovery_mode
    }

    /// Limit of the dead-letter log kept beside the write-ahead log, in bytes (at least
    /// 16 MiB). Default: a quarter of `wal_max_size`, at least 16 MiB.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn dead_letter_max_size(mut self, bytes: u64) -> Self {
        self.dead_letter_max_size = Some(bytes);
        self
    }

    /// What happens to a dead letter when the dead-letter log is full. Default
    /// [`DeadLetterFull::KeepInLog`].
    #[must_use = "a setter returns the changed value; use it"]
    pub fn dead_letter_full(mut self, policy: DeadLetterFull) -> Self {
        self.dead_letter_full = policy;
        self
    }

    /// The dead-letter log's limit in bytes (the configured one, or the default).
    pub fn get_dead_letter_max_size(&self) -> u64 {
        self.dead_letter_max_size
            .unwrap_or((self.wal_max_size / 4).max(MIN_DEAD_LETTER_SIZE))
    }

    /// The configured policy for a full dead-letter log.
    pub fn get_dead_letter_full(&self) -> DeadLetterFull {
        self.dead_letter_full
    }

    /// The configured write-ahead log directory, if any.
    pub fn get_wal_path(&self) -> Option<&Path> {
        self.wal_path.as_deref()
    }

    /// The configured memory ring capacity.
    pub fn get_memory_size(&self) -> usize {
        self.memory_size
    }

    /// The configured batch size.
    pub fn get_batch_size(&self) -> usize {
        self.batch_size
    }

    /// The configured overflow policy.
    pub fn get_overflow(&self) -> OverflowPolicy {
        self.overflow
    }

    /// The configured deadline of each send attempt.
    pub fn get_send_timeout(&self) -> Duration {
        self.send_timeout
    }

    /// The configured longest wait of a partial batch.
    pub fn get_flush_timeout(&self) -> Duration {
        self.flush_timeout
    }

    /// The configured first and largest pause between attempts.
    pub fn get_retry_backoff(&self) -> (Duration, Duration) {
        (self.retry_backoff_first, self.retry_backoff_max)
    }

    /// The configured time `stop()` keeps delivering.
    pub fn get_shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// Whether send-latency histograms are kept.
    pub fn get_enable_metrics(&self) -> bool {
        self.enable_metrics
    }

    /// Checks every field; this is what [`Queue::new`](crate::Queue::new) runs.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first field that is wrong and why.
    pub fn validate(&self) -> Result<(), Error> {
        fn bad(field: &str, why: impl std::fmt::Display) -> Result<(), Error> {
            Err(Error::Config(format!("{field}: {why}")))
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.memory_size == 0 {
            return bad("memory_size", "must be at least 1");
        }
        if self.memory_size > MAX_MEMORY_SIZE {
            return bad(
                "memory_size",
                format_args!(
                    "{} is above the limit of {MAX_MEMORY_SIZE}",
                    self.memory_size
                ),
            );
        }
        if self.memory_size < self.batch_size {
            return bad(
                "memory_size",
                format_args!(
                    "{} is smaller than batch_size {}: a batch could never fill",
                    self.memory_size, self.batch_size
                ),
            );
        }
        for (field, value) in [
            ("flush_timeout", self.flush_timeout),
            ("send_timeout", self.send_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
            ("retry_backoff (first)", self.retry_backoff_first),
            ("retry_backoff (max)", self.retry_backoff_max),
        ] {
            if value.is_zero() {
                return bad(field, "must be greater than zero");
            }
        }
        if self.retry_backoff_first > self.retry_backoff_max {
            return bad(
                "retry_backoff",
                format_args!(
                    "first pause {:?} is longer than the largest {:?}",
                    self.retry_backoff_first, self.retry_backoff_max
                ),
            );
        }
        if let OverflowPolicy::Block(timeout) = self.overflow {
            if timeout.is_zero() {
                return bad(
                    "overflow",
                    "Block(0) never waits; use OverflowPolicy::Reject for that",
                );
            }
        }
        if let SyncMode::Periodic(period) = self.sync_mode {
            if period.is_zero() {
                return bad(
                    "sync_mode",
                    "Periodic(0) would sync continuously; use SyncMode::Immediate",
                );
            }
        }
        if let Some(path) = &self.wal_path {
            if path.as_os_str().is_empty() {
                return bad("wal_path", "is empty");
            }
            if path.exists() && !path.is_dir() {
                return bad(
                    "wal_path",
                    format_args!("{} exists and is not a directory", path.display()),
                );
            }
            if self.get_dead_letter_max_size() < MIN_DEAD_LETTER_SIZE {
                return bad(
                    "dead_letter_max_size",
                    format_args!(
                        "{} bytes is below the minimum of 16 MiB",
                        self.get_dead_letter_max_size()
                    ),
                );
            }
            if self.wal_max_size < 1024 * 1024 {
                return bad(
                    "wal_max_size",
                    format_args!("{} bytes is below the minimum of 1 MiB", self.wal_max_size),
                );
            }
        }
        Ok(())
    }
}

/// `d` after `start`, or a century after it when that is beyond what an `Instant` holds
/// (timeouts of `Duration::MAX` mean "no limit" rather than a panic).
pub(crate) fn after(start: std::time::Instant, d: Duration) -> std::time::Instant {
    start
        .checked_add(d)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: Config) -> String {
        match config.validate() {
            Err(Error::Config(msg)) => msg,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn default_is_valid_and_matches_the_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.memory_size, 10_000);
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.flush_timeout, Duration::from_secs(5));
        assert_eq!(c.wal_path, None);
        assert_eq!(c.wal_max_size, 100 << 20);
        assert_eq!(c.sync_mode, SyncMode::Periodic(Duration::from_millis(100)));
        assert_eq!(c.send_timeout, Duration::from_secs(30));
        assert_eq!(c.retry_limit, None);
        assert_eq!(c.effective_retry_limit(false), 3);
        assert_eq!(c.effective_retry_limit(true), Config::RETRY_UNTIL_STOPPED);
        assert_eq!(c.retry_backoff_first, Duration::from_millis(100));
        assert_eq!(c.retry_backoff_max, Duration::from_secs(10));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert!(c.enable_metrics);
        assert_eq!(c.overflow, OverflowPolicy::Block(Duration::from_secs(1)));
    }

    #[test]
    fn zero_batch_size() {
        assert!(field_of(Config::default().batch_size(0)).starts_with("batch_size:"));
    }

    #[test]
    fn zero_memory_size() {
        assert!(field_of(Config::default().memory_size(0)).starts_with("memory_size:"));
    }

    #[test]
    fn huge_memory_size() {
        let msg = field_of(Config::default().memory_size(MAX_MEMORY_SIZE + 1));
        assert!(msg.starts_with("memory_size:") && msg.contains("limit"));
    }

    #[test]
    fn memory_smaller_than_batch() {
        let msg = field_of(Config::default().memory_size(10).batch_size(11));
        assert!(msg.starts_with("memory_size:") && msg.contains("batch_size"));
    }

    #[test]
    fn zero_timeouts() {
        let z = Duration::ZERO;
        assert!(field_of(Config::default().flush_timeout(z)).starts_with("flush_timeout:"));
        assert!(field_of(Config::default().send_timeout(z)).starts_with("send_timeout:"));
        assert!(field_of(Config::default().shutdown_timeout(z)).starts_with("shutdown_timeout:"));
        let one = Duration::from_secs(1);
        assert!(field_of(Config::default().retry_backoff(z, one)).starts_with("retry_backoff"));
        assert!(field_of(Config::default().retry_backoff(z, z)).starts_with("retry_backoff"));
    }

    #[test]
    fn backoff_first_above_max() {
        let msg = field_of(
            Config::default().retry_backoff(Duration::from_secs(2), Duration::from_secs(1)),
        );
        assert!(msg.starts_with("retry_backoff:"));
    }

    #[test]
    fn block_zero() {
        let msg = field_of(Config::default().overflow(OverflowPolicy::Block(Duration::ZERO)));
        assert!(msg.starts_with("overflow:") && msg.contains("Reject"));
    }

    #[test]
    fn periodic_zero() {
        let msg = field_of(Config::default().sync_mode(SyncMode::Periodic(Duration::ZERO)));
        assert!(msg.starts_with("sync_mode:"));
    }

    #[test]
    fn wal_path_that_is_a_file() {
        let file = std::env::temp_dir().join(format!("vq-config-file-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let msg = field_of(Config::default().wal_path(&file));
        std::fs::remove_file(&file).unwrap();
        assert!(msg.starts_with("wal_path:") && msg.contains("not a directory"));
    }

    #[test]
    fn wal_path_empty() {
        assert!(field_of(Config::default().wal_path("")).starts_with("wal_path:"));
    }

    #[test]
    fn wal_max_size_too_small() {
        let msg = field_of(Config::default().wal_path("/tmp/x-vq").wal_max_size(10));
        assert!(msg.starts_with("wal_max_size:"));
    }

    #[test]
    fn retry_limit_zero_is_valid() {
        Config::default().retry_limit(0).validate().unwrap();
    }
}
