//! The pair of logs a durable queue runs on, opened from its [`Config`].

use std::sync::Arc;

use vinequeue_core::{Config, Error, Storage, SyncMode};

use crate::{Wal, WalOptions};

/// Name of the dead-letter log's directory inside `wal_path`.
pub const DEAD_LETTER_DIR: &str = "dead-letters";

/// Segment size of the dead-letter log: also the bound on a dead letter, and so on an
/// item.
const DEAD_LETTER_SEGMENT: u64 = 4 * 1024 * 1024;

/// Room a dead letter needs besides its item: the sequence number, the reason, the
/// sink's error (cut to 4 KiB) and their lengths.
const DEAD_LETTER_OVERHEAD: u32 = 8 * 1024;

/// The logs behind a durable queue: the main log in `wal_path` and the dead-letter log in
/// `wal_path/dead-letters`, ready for `Queue::with_storage`.
#[derive(Clone)]
pub struct QueueLogs {
    /// The main log: every enqueued item until it is acknowledged.
    pub log: Arc<dyn Storage>,
    /// Dead-lettered items (synced on every write), until redriven.
    pub dead_letters: Arc<dyn Storage>,
}

impl std::fmt::Debug for QueueLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueLogs")
            .field("log_size", &self.log.size())
            .field("dead_letters_size", &self.dead_letters.size())
            .finish()
    }
}

impl QueueLogs {
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
    pub fn open(config: &Config) -> Result<Option<Self>, Error> {
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
            .max_record_size(largest_letter.saturating_sub(DEAD_LETTER_OVERHEAD))
            .sync_mode(config.get_sync_mode())
            .recovery_mode(config.get_recovery_mode());
        let log = Wal::open(path, opts)?;
        let dead_letters = Wal::open(path.join(DEAD_LETTER_DIR), dead_opts)?;
        Ok(Some(QueueLogs {
            log: Arc::new(log),
            dead_letters: Arc::new(dead_letters),
        }))
    }
}
