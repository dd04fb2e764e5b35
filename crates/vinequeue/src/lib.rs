#![doc = include_str!("../../../README.md")]
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]
#![warn(missing_docs)]

pub use vinequeue_core::*;

/// The write-ahead log: segment files of CRC32C-framed records behind [`Storage`]
/// (feature `wal`, on by default). See the `vinequeue-wal` crate.
#[cfg(feature = "wal")]
pub mod wal {
    pub use vinequeue_wal::*;
}

#[cfg(feature = "wal")]
pub use vinequeue_wal::{Wal, WalOptions};

/// The runtime-agnostic async adapter (feature `async`): [`AsyncQueue`], [`AsyncSink`],
/// the [`Batches`](vinequeue_async::Batches) stream. See the `vinequeue-async` crate.
#[cfg(feature = "async")]
pub mod r#async {
    pub use vinequeue_async::*;
}

#[cfg(feature = "async")]
pub use vinequeue_async::{AsyncQueue, AsyncSink};

/// Ready-made sinks, one feature per backend (`http`, `http-async`, `postgres`, `sqlite`,
/// `nats`, `rabbitmq`, `kafka`): see the `vinequeue-sinks` crate.
#[cfg(any(
    feature = "http",
    feature = "postgres",
    feature = "sqlite",
    feature = "nats",
    feature = "rabbitmq",
    feature = "kafka"
))]
pub mod sinks {
    pub use vinequeue_sinks::*;
}
