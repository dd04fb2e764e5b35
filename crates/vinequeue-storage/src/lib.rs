//! The contract between a VineQueue queue and the storage under it.
//!
//! A durable queue appends each encoded item to a [`Storage`] as one record, reads the
//! records back in order, and acknowledges them once delivered. This crate holds that
//! trait, the [`Error`] type the whole library shares, the [`SyncMode`] and
//! [`RecoveryMode`] a storage is opened with, the in-memory [`MemStorage`], and (feature
//! `testing`) the conformance suite every storage must pass.
//!
//! It depends on nothing of the queue: `vinequeue-wal` (the file-backed log) builds on it
//! alone, and `vinequeue-core` (the queue) re-exports all of it. Users depend on the
//! facade crate `vinequeue`, where every item here is reachable as `vinequeue::Name`.

#![warn(missing_debug_implementations)]
mod error;
mod modes;
mod queue_id;
mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use crate::error::{CodecError, Error};
pub use crate::modes::{RecoveryMode, SyncMode};
pub use crate::queue_id::{ParseQueueIdError, QueueId};
pub use crate::storage::{
    check_position, KeyedVisit, MemStorage, RecoveryReport, Storage, MAX_SOURCE_POSITION,
};
