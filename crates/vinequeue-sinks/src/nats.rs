//! [`NatsSink`] and [`AsyncNatsSink`]: one NATS JetStream message per item, with
//! `Nats-Msg-Id` set to the item's key so that the stream drops a copy it already has
//! (async-nats).
//!
//! ```no_run
//! use vinequeue_core::{Config, Queue};
//! use vinequeue_sinks::nats::NatsSink;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Event { id: u64, kind: String }
//!
//! // Each item as JSON on `events.<kind>`; a stream must take those subjects.
//! let sink = NatsSink::builder("nats://127.0.0.1:4222", "events")
//!     .subject_for(|e: &Event| format!("events.{}", e.kind))
//!     .build()?;
//! let queue = Queue::new(Config::default().wal_path("/var/lib/app/events"), sink)?;
//! queue.start()?;
//! queue.enqueue(Event { id: 1, kind: "signup".into() })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`NatsSink`] is the blocking form, for [`Queue`](vinequeue_core::Queue): it runs
//! the client on a runtime of its own (one tokio worker thread). [`AsyncNatsSink`]
//! (from [`build_async`](NatsSinkBuilder::build_async)) is an
//! [`AsyncSink`](vinequeue_async::AsyncSink) for `AsyncQueue`, polled on the
//! application's tokio runtime.
//!
//! # Exactly once, and its window
//!
//! Each message carries `Nats-Msg-Id: <queue id>-<key>` ([`Batch::key`]) and the headers
//! `Vinequeue-Queue-Id` and `Vinequeue-Seq`. JetStream drops a message whose id it has
//! seen within the stream's *duplicate window* (2 minutes unless the stream says
//! otherwise), so a batch published again after a crash or a lost acknowledgement adds
//! nothing, as long as it comes back within the window. A copy that comes back later (a
//! queue stopped for longer than the window with a batch whose acknowledgements were
//! lost) is stored again: set the stream's `duplicate_window` to the longest outage you
//! plan for, or have consumers skip `(Vinequeue-Queue-Id, Vinequeue-Seq)` they have seen.
//!
//! # What the answers mean
//!
//! All of a batch's messages are published at once (pipelined), then their
//! acknowledgements awaited, each until the batch's deadline.
//!
//! | the server answers | the sink returns |
//! |---|---|
//! | every message acknowledged (stored, or dropped as a duplicate) | `Ok` |
//! | some messages not acknowledged (an error, no answer before the deadline) | `SendError::partial` naming them; the others count as delivered |
//! | no message acknowledged: no connection, no stream for the subject (no responders), every acknowledgement late | `SendError::retry` |
//! | items that do not serialize to JSON | those items in `SendError::partial`, or `SendError::permanent` when the whole batch is such items |

use std::fmt;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use serde::Serialize;
use tokio::time::{timeout_at, Instant};
use vinequeue_core::{Batch, SendError, Sink};

use crate::outcome::{verdict, Outcome};

type SubjectFn<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// Builds a [`NatsSink`] or an [`AsyncNatsSink`].
#[must_use = "a builder does nothing until build()"]
pub struct NatsSinkBuilder<T> {
    url: String,
    subject: String,
    subject_for: Option<SubjectFn<T>>,
    timeout: Duration,
}

impl<T> fmt::Debug for NatsSinkBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSinkBuilder")
            .field("url", &self.url)
            .field("subject", &self.subject)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<T> NatsSinkBuilder<T> {
    /// Each item's subject, computed from the item (instead of the one subject given to
    /// `builder`).
    pub fn subject_for(mut self, subject: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.subject_for = Some(Arc::new(subject));
        self
    }

    /// Longest to wait for a connection. Default: 10 s. (Publishing waits for its
    /// acknowledgements until the batch's deadline, `send_timeout`.)
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn check(&self) -> Result<(), String> {
        if !self.url.contains("://") && self.url.contains(char::is_whitespace) {
            return Err(format!("{}: not a NATS server address", self.url));
        }
        if self.subject.is_empty() && self.subject_for.is_none() {
            return Err("NATS sink: no subject".into());
        }
        Ok(())
    }

    /// The async sink, for `AsyncQueue` on a tokio runtime. It connects at its first
    /// batch.
    ///
    /// # Errors
    ///
    /// A message when there is no subject or the address has spaces in it.
    pub fn build_async(self) -> Result<AsyncNatsSink<T>, String> {
        self.check()?;
        Ok(AsyncNatsSink {
            context: None,
            builder: self,
        })
    }

    /// The blocking sink, for `Queue`, with a runtime of its own.
    ///
    /// # Errors
    ///
    /// As [`build_async`](Self::build_async), and when the runtime cannot start.
    pub fn build(self) -> Result<NatsSink<T>, String> {
        let runtime = crate::runtime::blocking("nats", "NATS")?;
        Ok(NatsSink {
            inner: self.build_async()?,
            runtime,
        })
    }
}

/// The async NATS JetStream sink; see the [module](self) documentation.
pub struct AsyncNatsSink<T> {
    context: Option<jetstream::Context>,
    builder: NatsSinkBuilder<T>,
}

impl<T> fmt::Debug for AsyncNatsSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncNatsSink")
            .field("builder", &self.builder)
            .field("connected", &self.context.is_some())
            .finish()
    }
}

/// The blocking NATS JetStream sink; see the [module](self) documentation.
pub struct NatsSink<T> {
    inner: AsyncNatsSink<T>,
    runtime: tokio::runtime::Runtime,
}

impl<T> fmt::Debug for NatsSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<T> NatsSink<T> {
    /// A builder for a sink publishing to `subject` on the server at `url`
    /// (`nats://host:port`, or several, comma-separated).
    pub fn builder(url: impl Into<String>, subject: impl Into<String>) -> NatsSinkBuilder<T> {
        NatsSinkBuilder {
            url: url.into(),
            subject: subject.into(),
            subject_for: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl<T: Serialize> AsyncNatsSink<T> {
    async fn connect(&mut self, deadline: Instant) -> Result<jetstream::Context, SendError> {
        if let Some(context) = &self.context {
            return Ok(context.clone());
        }
        let connect = async_nats::ConnectOptions::new()
            .connection_timeout(self.builder.timeout)
            .connect(self.builder.url.as_str());
        let client = match timeout_at(deadline, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(SendError::retry(format!("NATS {}: {e}", self.builder.url))),
            Err(_) => {
                return Err(SendError::retry(format!(
                    "NATS {}: no connection before the batch's deadline",
                    self.builder.url
                )))
            }
        };
        let context = jetstream::new(client);
        self.context = Some(context.clone());
        Ok(context)
    }

    /// Publishes every item, then awaits every acknowledgement.
    async fn publish(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let deadline = Instant::from_std(batch.deadline());
        let context = self.connect(deadline).await?;
        let mut outcomes: Vec<Option<Outcome>> = (0..batch.len()).map(|_| None).collect();
        let mut waiting = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter().enumerate() {
            let payload = match serde_json::to_vec(item) {
                Ok(p) => p,
                Err(e) => {
                    outcomes[i] = Some(Outcome::Refused(format!("not JSON: {e}")));
                    continue;
                }
            };
            let (id, key) = batch.key(i);
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{id}-{key}").as_str(),
            );
            headers.insert("Vinequeue-Queue-Id", id.to_string().as_str());
            headers.insert("Vinequeue-Seq", key.to_string().as_str());
            let subject = match &self.builder.subject_for {
                Some(f) => f(item),
                None => self.builder.subject.clone(),
            };
            let publish = context.publish_with_headers(subject, headers, payload.into());
            match timeout_at(deadline, publish).await {
                Ok(Ok(ack)) => waiting.push((i, ack)),
                Ok(Err(e)) => outcomes[i] = Some(Outcome::Failed(e.to_string())),
                Err(_) => {
                    outcomes[i] = Some(Outcome::Failed("not sent before the deadline".into()))
                }
            }
        }
        for (i, ack) in waiting {
            outcomes[i] = Some(match timeout_at(deadline, ack.into_future()).await {
                Ok(Ok(_)) => Outcome::Stored, // stored, or a duplicate the stream dropped
                Ok(Err(e)) => Outcome::Failed(e.to_string()),
                Err(_) => Outcome::Failed("no acknowledgement before the deadline".into()),
            });
        }
        verdict("NATS", &outcomes, batch)
    }
}

impl<T: Serialize + Send + Sync + 'static> vinequeue_async::AsyncSink<T> for AsyncNatsSink<T> {
    fn send(
        &mut self,
        batch: &Batch<T>,
    ) -> impl std::future::Future<Output = Result<(), SendError>> + Send {
        self.publish(batch)
    }
}

impl<T: Serialize + Send + Sync + 'static> Sink<T> for NatsSink<T> {
    fn send(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        self.runtime.block_on(self.inner.publish(batch))
    }
}
