//! The durability settings a storage is opened with: [`SyncMode`] and [`RecoveryMode`].

use std::time::Duration;

/// How durable an accepted item is before `enqueue` returns (when the queue has a write-ahead
/// log).
///
/// | mode | `enqueue` returns `Ok` when | survives process crash | survives power loss |
/// |---|---|---|---|
/// | `Os` | the record is in the page cache | yes | no |
/// | `Periodic(d)` | the record is in the page cache; synced at most `d` later | yes | all but the last `d` |
/// | `Immediate` | the record is fsync'd (one sync shared by concurrent callers) | yes | yes |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncMode {
    /// Every `enqueue` waits until its record is on stable storage (group commit).
    Immediate,
    /// A background sync runs every period; `enqueue` does not wait for it.
    Periodic(Duration),
    /// Never sync explicitly; the operating system writes back when it chooses.
    Os,
}

/// What opening a write-ahead log does with a damaged record that is not a torn tail.
///
/// A torn tail (an incomplete last write in the newest segment, as a crash or power cut
/// leaves behind) is always cut off silently: it was never acknowledged as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Skip to the next valid record, count the loss (`corrupt_records_total`) and keep a
    /// copy of the damaged segment in `damaged/` for inspection. The queue starts.
    #[default]
    SkipCorrupt,
    /// Refuse to open: [`Error::Corrupt`](crate::Error::Corrupt) names the file, the
    /// offset and what was wrong.
    Strict,
}
