//! VineQueue's write-ahead log: a directory of preallocated, memory-mapped segment files
//! holding CRC32C-framed records, implementing [`vinequeue_storage::Storage`]. It depends on
//! that contract alone and knows nothing of the queue above it.
//!
//! # On disk
//!
//! ```text
//! <dir>/LOCK                          flock'd by the one opener
//! <dir>/checkpoint                    the acknowledged mark, the acknowledged ranges above it,
//!                                     the synced frontier, the reserved numbers (two 4 KiB slots)
//! <dir>/00000000000000000001.seg      segments, named by their first sequence number
//! <dir>/damaged/                      copies of segments that recovery found damaged
//! ```
//!
//! The byte layout is in [`format`](mod@format) and `docs/format.md`.
//!
//! # Guarantees
//!
//! * After `sync` / `sync_through(seq)` returns `Ok`, the records covered survive a crash
//!   or power loss. Concurrent `sync_through` callers share one `msync` (group commit).
//! * After a failed sync the log refuses every write with [`Error::LogFailed`]: what
//!   reached the disk is unknown, so it never retries and pretends.
//! * Recovery cuts off a torn tail of the newest segment, handles damage elsewhere by
//!   [`RecoveryMode`] (a block of zeros with intact records after it is damage, not the
//!   end of the data), ignores stray files, never trusts a length beyond what fits in its
//!   segment file, and always starts appending in a fresh segment. Numbers that hold no
//!   record after recovery (lost, reserved, skipped as damaged) count as acknowledged, so
//!   that they never hold the acknowledged mark back.
//! * A full disk shows up as an error when a segment is created (they are preallocated),
//!   never as a crash; the log works again once space is freed.
//!
//! [`Error::LogFailed`]: vinequeue_storage::Error::LogFailed
//! [`RecoveryMode`]: vinequeue_storage::RecoveryMode

#![warn(missing_debug_implementations)]
/// A `tracing` event (feature `tracing`); without the feature, nothing, its arguments
/// not even evaluated.
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {
        #[cfg(feature = "tracing")]
        {
            tracing::$level!(target: "vinequeue::wal", $($arg)+);
        }
    };
}

mod crc;
pub mod format;
mod fs;
pub mod inspect;
mod mmap;
mod options;
#[cfg(any(test, feature = "testing"))]
pub mod sim;
mod wal;

// The file layer is the seam the simulated disk (and tests' own file systems) plug into:
// public only with the feature `testing`. Without it, the log runs on the real file
// system (`Wal::open`) and no safe code outside this crate reaches a mapped file.
#[cfg(feature = "testing")]
pub use crate::fs::{DirEntry, Fs, FsFile, RealFs, RealLock};
#[cfg(feature = "testing")]
pub use crate::mmap::MappedFile;
pub use crate::options::{Reclaim, WalOptions, MIN_SEGMENT_SIZE};
pub use crate::wal::Wal;
pub use vinequeue_storage::{RecoveryMode, SyncMode};
