//! Options of a [`Wal`](crate::Wal).

use std::time::Duration;

use vinequeue_storage::{Error, RecoveryMode, SyncMode};

use crate::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};

/// How a [`Wal`](crate::Wal) is laid out and synced. Setters consume and return `self`;
/// [`Wal::open`](crate::Wal::open) checks the whole set and names a bad field.
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub(crate) segment_size: u64,
    pub(crate) max_size: u64,
    pub(crate) sync_mode: SyncMode,
    pub(crate) recovery_mode: RecoveryMode,
    pub(crate) max_record_size: u32,
    pub(crate) reclaim: Reclaim,
    pub(crate) sequence_reservation: u64,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) allow_shared_directory: bool,
    pub(crate) max_damaged_size: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 * 1024 * 1024,
            max_size: 100 * 1024 * 1024,
            sync_mode: SyncMode::Periodic(Duration::from_millis(100)),
            recovery_mode: RecoveryMode::SkipCorrupt,
            max_record_size: 16 * 1024 * 1024,
            reclaim: Reclaim::Background,
            sequence_reservation: 1 << 20,
            checkpoint_interval: Duration::from_millis(200),
            allow_shared_directory: false,
            max_damaged_size: 100 * 1024 * 1024,
        }
    }
}

/// Where a [`Wal`](crate::Wal) deletes segments whose records are all acknowledged
/// ([`WalOptions::reclaim`]).
///
/// Deleting a segment writes the checkpoint, unlinks the file and syncs the directory: a
/// few hundred microseconds, and tens of milliseconds while the disk is busy writing
/// back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reclaim {
    /// On the log's own thread: an acknowledgement returns at once (the queue's batcher
    /// acknowledges every batch, and stalled there it would let the memory ring fill up
    /// behind it), and [`size`](vinequeue_storage::Storage::size) drops once the deletion
    /// is done. An `append` that finds the log full while a deletion is under way waits
    /// for it (at most a second) before it reports `LogFull`; a deletion that fails is
    /// reported by the next acknowledgement, and tried again by a later one (or by
    /// [`Wal::reclaim`](crate::Wal::reclaim), or the next segment roll). The default.
    #[default]
    Background,
    /// Inside the acknowledging call, which returns once the space is free.
    Inline,
}

/// Most numbers one checkpoint write may reserve ahead.
pub const MAX_RESERVATION: u64 = 1 << 40;

/// Smallest segment accepted.
pub const MIN_SEGMENT_SIZE: u64 = 64 * 1024;

impl WalOptions {
    /// Size of each segment file, preallocated in full when the segment is created.
    /// Capped at a quarter of `max_size` so that the log can always roll to a new segment
    /// while older ones wait for acknowledgement. Default = 64 MiB.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Most bytes the log may occupy on disk (all files); at the limit `append` returns
    /// `Error::LogFull`. Default = 100 MiB.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// `Periodic(d)` syncs in the background every `d`; `Immediate` and `Os` sync only
    /// when asked (`sync`, `sync_through`; the queue asks after every append under
    /// `Immediate`). Under `Os`, a segment is synced once it is sealed (on the log's own
    /// thread with [`Reclaim::Background`]), so that a power
    /// cut can tear only the newest segment.
    /// Default = `Periodic(100 ms)`.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn sync_mode(mut self, mode: SyncMode) -> Self {
        self.sync_mode = mode;
        self
    }

    /// What opening does with damage that is not a torn tail. Default = `SkipCorrupt`.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// Largest record `append` accepts. Default = 16 MiB, never more than fits in one
    /// segment, at most [`MAX_FRAME_RECORD`](crate::format::MAX_FRAME_RECORD) (1 GiB less 264
    /// bytes). It limits new records only: records already in the log are read whatever
    /// their length (up to what fits in their segment file), so lowering this, or
    /// `max_size`, never turns stored records into damage.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn max_record_size(mut self, bytes: u32) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// Where segments whose records are all acknowledged are deleted: on a thread of the
    /// log's own ([`Reclaim::Background`], the default) or inside the acknowledging call
    /// ([`Reclaim::Inline`]).
    #[must_use = "a setter returns the changed value; use it"]
    pub fn reclaim(mut self, reclaim: Reclaim) -> Self {
        self.reclaim = reclaim;
        self
    }

    /// How many sequence numbers one checkpoint write reserves ahead. A number is handed
    /// out only once the checkpoint that reserves it is synced, so that no crash or power
    /// cut can make the log hand out again a number a sink may have seen (sinks
    /// deduplicate on it). The cost is one small synced write per this many appends;
    /// after a crash the numbers reserved and not used are skipped (a gap in the
    /// numbering; a clean close gives them back). Default = 1,048,576.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn sequence_reservation(mut self, numbers: u64) -> Self {
        self.sequence_reservation = numbers;
        self
    }

    /// Longest an advanced acknowledgement mark goes unpersisted: the checkpoint is
    /// written at most this long after an acknowledgement moves the mark (on the log's
    /// own thread with [`Reclaim::Background`], else in the
    /// acknowledging call). After a crash, what was acknowledged in about the last
    /// interval is delivered again. Default = 200 ms.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn checkpoint_interval(mut self, every: Duration) -> Self {
        self.checkpoint_interval = every;
        self
    }

    /// Whether a log directory that already exists and that users other than its owner
    /// may write to (mode bits `0o022`) is accepted. Such a directory lets another user
    /// plant files, or links, that the log would read or write; opening refuses it with
    /// [`Error::Config`] naming the path and its mode unless this is set. Directories
    /// the log creates get mode 0700. Default = `false`.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn allow_shared_directory(mut self, allow: bool) -> Self {
        self.allow_shared_directory = allow;
        self
    }

    /// Most bytes the copies of damaged files in the log's `damaged/` directory may take.
    /// Recovery keeps one copy of each damaged file it meets (a segment or the
    /// checkpoint), for inspection, once: a later open over the same damage adds none.
    /// A copy that would pass this limit is not made, and counted in
    /// [`RecoveryReport::damaged_not_kept`](vinequeue_storage::RecoveryReport). The
    /// directory is the user's to empty; its size is in
    /// [`RecoveryReport::damaged_bytes`](vinequeue_storage::RecoveryReport) and the
    /// queue's metrics. Default = 100 MiB.
    #[must_use = "a setter returns the changed value; use it"]
    pub fn max_damaged_size(mut self, bytes: u64) -> Self {
        self.max_damaged_size = bytes;
        self
    }

    /// The segment size in effect: the configured one, capped at `max_size / 4`, rounded
    /// down to 4 KiB.
    pub fn effective_segment_size(&self) -> u64 {
        (self.segment_size.min(self.max_size / 4) / 4096) * 4096
    }

    /// The record size limit in effect.
    pub fn effective_max_record_size(&self) -> u32 {
        let fits = self
            .effective_segment_size()
            .saturating_sub((SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64);
        (self.max_record_size as u64).min(fits) as u32
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, why: String| Err(Error::Config(format!("{field}: {why}")));
        if self.segment_size < MIN_SEGMENT_SIZE {
            return bad(
                "segment_size",
                format!(
                    "{} bytes is below the minimum of {MIN_SEGMENT_SIZE}",
                    self.segment_size
                ),
            );
        }
        if self.max_size < 4 * MIN_SEGMENT_SIZE {
            return bad(
                "max_size",
                format!(
                    "{} bytes leaves no room for 4 segments of at least {MIN_SEGMENT_SIZE} bytes",
                    self.max_size
                ),
            );
        }
        if self.max_record_size == 0 {
            return bad("max_record_size", "must be at least 1".into());
        }
        if self.max_record_size > crate::format::MAX_FRAME_RECORD {
            return bad(
                "max_record_size",
                format!(
                    "{} is beyond what a frame holds ({})",
                    self.max_record_size,
                    crate::format::MAX_FRAME_RECORD
                ),
            );
        }
        if self.sequence_reservation == 0 || self.sequence_reservation > MAX_RESERVATION {
            return bad(
                "sequence_reservation",
                format!(
                    "{} is outside 1..={MAX_RESERVATION}",
                    self.sequence_reservation
                ),
            );
        }
        if self.checkpoint_interval.is_zero() {
            return bad(
                "checkpoint_interval",
                "0 would write the checkpoint at every acknowledgement".into(),
            );
        }
        if let SyncMode::Periodic(d) = self.sync_mode {
            if d.is_zero() {
                return bad("sync_mode", "Periodic(0) would sync continuously".into());
            }
        }
        Ok(())
    }
}
