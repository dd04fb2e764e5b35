//! The runtime-agnostic async adapter of VineQueue.
//!
//! * [`AsyncQueue`]: `enqueue(item).await` waits for room and, under
//!   `SyncMode::Immediate`, for durability, by registering wakers (never by blocking the
//!   executor's thread). Cancel-safe (see [`AsyncQueue::enqueue`]).
//! * [`AsyncSink`]: `send(&mut self, &Batch<T>)` returns a future; [`Batches::deliver_to`]
//!   turns it into a [`Delivery`] future to spawn on any executor. Batching, flush
//!   timeout, `send_timeout`, retries with backoff, partial failures, dead letters and log
//!   acknowledgements keep the core queue's semantics: the batcher thread runs them and
//!   hands each attempt to the delivery future.
//! * [`Batches`]: the same batches as a [`Stream`](futures::Stream) of [`ReadyBatch`]es,
//!   each acknowledged (or failed) explicitly, for code that drives sending itself.
//!
//! Nothing here depends on a runtime: the crate uses the standard library and
//! `futures`, plus two helper threads of its own (a timer, and per durable queue a sync
//! thread). It runs on tokio, smol, async-std, `futures::executor`, or anything else
//! that polls futures.
#![warn(missing_debug_implementations)]
#![warn(missing_docs)]

mod bridge;
mod delivery;
mod queue;
mod syncer;
mod timer;

pub use crate::bridge::{Batches, ReadyBatch};
pub use crate::delivery::{AsyncSink, Delivery};
pub use crate::queue::{AsyncQueue, Enqueue};
