//! The pair of logs a durable queue runs on, opened from its [`Config`] (feature `wal`):
//! the main log in `wal_path` and the dead-letter log in `wal_path/dead-letters`. The one
//! place where a `Config` becomes storage; the log itself knows nothing of the queue.

use std::sync::Arc;

use vinequeue_wal::{Wal, WalOptions};

use crate::{Config, Error, Storage, SyncMode};

/// Name of the dead-letter log's directory inside `wal_path`.
pub const DEAD_LETTER_DIR: &str = "dead-letters";

/// Segment size of the dead-letter log: also the bound on a dead letter, and so on an
/// item.
const DEAD_LETTER_SEGMENT: u64 = 4 * 1024 * 1024;

/// The main log and the dead-letter log of a durable queue.
pub(crate) struct Logs {
    /// Every enqueued item until it is acknowledged.
    pub(crate) log: Arc<dyn Storage>,
    /// Dead-lettered items (synced on every write), until redriven or discarded.
    pub(crate) dead_letters: Arc<dyn Storage>,
}

impl Logs {
    /// Opens (and recovers) the logs for `config`, or returns `None` when it has no
    /// `wal_path` (a memory-only queue). The main log takes `wal_max_size`, `sync_mode`
    /// and `recovery_mode` from the config; the dead-letter log uses 4 MiB segments,
    /// `dead_letter_max_size` (default: a quarter of `wal_max_size`, at least 16 MiB)
    /// and `Immediate` syncs.
    ///
    /// The main log takes only records the dead-letter log could keep as dead letters
    /// (a little under 4 MiB): a larger item is refused at `enqueue` with
    /// [`Error::RecordTooLarge`], rather than accepted and found impossible to
    /// dead-letter later.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid configuration; [`Error::Locked`] if another queue
    /// holds the directory; [`Error::Corrupt`] under `RecoveryMode::Strict`; [`Error::Io`].
    pub(crate) fn open(config: &Config) -> Result<Option<Self>, Error> {
        let Some(path) = config.get_wal_path() else {
            return Ok(None);
        };
        config.validate()?;
        let max = config.get_wal_max_size();
        let dead_opts = WalOptions::default()
            .segment_size(DEAD_LETTER_SEGMENT)
            .max_size(config.get_dead_letter_max_size())
            .sync_mode(SyncMode::Immediate)
            .recovery_mode(config.get_recovery_mode());
        let largest_letter = dead_opts.effective_max_record_size();
        let opts = WalOptions::default()
            .max_size(max)
            .max_record_size(largest_letter.saturating_sub(crate::dead::MAX_LETTER_OVERHEAD))
            .sync_mode(config.get_sync_mode())
            .recovery_mode(config.get_recovery_mode());
        let log = Wal::open(path, opts)?;
        let dead_letters = Wal::open(path.join(DEAD_LETTER_DIR), dead_opts)?;
        Ok(Some(Logs {
            log: Arc::new(log),
            dead_letters: Arc::new(dead_letters),
        }))
    }
}
