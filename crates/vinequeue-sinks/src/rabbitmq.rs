//! [`RabbitMqSink`] and [`AsyncRabbitMqSink`]: one RabbitMQ message per item, published
//! with publisher confirms, each carrying its key so that consumers can drop a copy they
//! already had (lapin).
//!
//! ```no_run
//! use vinequeue_core::{Config, Queue};
//! use vinequeue_sinks::rabbitmq::RabbitMqSink;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Event { id: u64, kind: String }
//!
//! // Each item as JSON to the exchange `events`, routing key `signup`, `order`...
//! let sink = RabbitMqSink::builder("amqp://guest:guest@127.0.0.1:5672/%2f", "events")
//!     .routing_key_for(|e: &Event| e.kind.clone())
//!     .build()?;
//! let queue = Queue::new(Config::default().wal_path("/var/lib/app/events"), sink)?;
//! queue.start()?;
//! queue.enqueue(Event { id: 1, kind: "signup".into() })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`RabbitMqSink`] is the blocking form, for [`Queue`](vinequeue_core::Queue), with a
//! runtime of its own; [`AsyncRabbitMqSink`] (from
//! [`build_async`](RabbitMqSinkBuilder::build_async)) is an
//! [`AsyncSink`](vinequeue_async::AsyncSink) for `AsyncQueue` on a tokio runtime.
//!
//! # Exactly once: the consumer's part
//!
//! RabbitMQ keeps every message it is given: a batch published again after a crash or a
//! lost confirm is queued again. Each message says which item it is, so that a consumer
//! can skip what it has seen: `message_id` = `<queue id>-<key>` ([`Batch::key`]), and the
//! headers `vinequeue-queue-id` (text) and `vinequeue-seq` (a 64-bit integer). Messages
//! are persistent (`delivery_mode` 2) and published `mandatory`, so that one no queue
//! takes comes back instead of vanishing.
//!
//! # What the answers mean
//!
//! All of a batch's messages are published at once, then their confirms awaited, each
//! until the batch's deadline.
//!
//! | the broker answers | the sink returns |
//! |---|---|
//! | every message confirmed (`basic.ack`, not returned) | `Ok` |
//! | some messages nacked, returned as unroutable, or not confirmed before the deadline | `SendError::partial` naming them; the others count as delivered |
//! | no message confirmed: no connection, the channel closed (a missing exchange closes it), every confirm late | `SendError::retry` (the connection is opened again at the next attempt) |
//! | items that do not serialize to JSON | those items in `SendError::partial`, or `SendError::permanent` when the whole batch is such items |

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::Serialize;
use tokio::time::{timeout_at, Instant};
use vinequeue_core::{Batch, SendError, Sink};

use crate::outcome::{verdict, Outcome};

type KeyFn<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// Builds a [`RabbitMqSink`] or an [`AsyncRabbitMqSink`].
#[must_use = "a builder does nothing until build()"]
pub struct RabbitMqSinkBuilder<T> {
    url: String,
    exchange: String,
    routing_key: String,
    routing_key_for: Option<KeyFn<T>>,
    timeout: Duration,
}

impl<T> fmt::Debug for RabbitMqSinkBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqSinkBuilder")
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<T> RabbitMqSinkBuilder<T> {
    /// The routing key of every message. Default: empty (what a fanout exchange wants);
    /// with the default exchange (`""`), the name of the queue.
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = key.into();
        self
    }

    /// Each item's routing key, computed from the item.
    pub fn routing_key_for(mut self, key: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        self.routing_key_for = Some(Arc::new(key));
        self
    }

    /// Longest to wait for a connection. Default: 10 s. (Confirms are awaited until the
    /// batch's deadline, `send_timeout`.)
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The async sink, for `AsyncQueue` on a tokio runtime. It connects at its first
    /// batch.
    ///
    /// # Errors
    ///
    /// A message when the URL is not an `amqp://` or `amqps://` URL.
    pub fn build_async(self) -> Result<AsyncRabbitMqSink<T>, String> {
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            return Err(format!("{}: not an amqp:// or amqps:// URL", self.url));
        }
        Ok(AsyncRabbitMqSink {
            link: None,
            builder: self,
        })
    }

    /// The blocking sink, for `Queue`, with a runtime of its own.
    ///
    /// # Errors
    ///
    /// As [`build_async`](Self::build_async), and when the runtime cannot start.
    pub fn build(self) -> Result<RabbitMqSink<T>, String> {
        let runtime = crate::runtime::blocking("rabbitmq", "RabbitMQ")?;
        Ok(RabbitMqSink {
            inner: self.build_async()?,
            runtime,
        })
    }
}

/// A connection and its channel in confirm mode.
struct Link {
    connection: Connection,
    channel: Channel,
}

/// The async RabbitMQ sink; see the [module](self) documentation.
pub struct AsyncRabbitMqSink<T> {
    link: Option<Link>,
    builder: RabbitMqSinkBuilder<T>,
}

impl<T> fmt::Debug for AsyncRabbitMqSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncRabbitMqSink")
            .field("builder", &self.builder)
            .field("connected", &self.link.is_some())
            .finish()
    }
}

/// The blocking RabbitMQ sink; see the [module](self) documentation.
pub struct RabbitMqSink<T> {
    inner: AsyncRabbitMqSink<T>,
    runtime: tokio::runtime::Runtime,
}

impl<T> fmt::Debug for RabbitMqSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqSink")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<T> RabbitMqSink<T> {
    /// A builder for a sink publishing to `exchange` (`""`: the default exchange) on
    /// the broker at `url` (`amqp://user:password@host:port/vhost`).
    pub fn builder(url: impl Into<String>, exchange: impl Into<String>) -> RabbitMqSinkBuilder<T> {
        RabbitMqSinkBuilder {
            url: url.into(),
            exchange: exchange.into(),
            routing_key: String::new(),
            routing_key_for: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl<T: Serialize> AsyncRabbitMqSink<T> {
    async fn connect(&mut self, deadline: Instant) -> Result<Channel, SendError> {
        if let Some(link) = &self.link {
            if link.connection.status().connected() && link.channel.status().connected() {
                return Ok(link.channel.clone());
            }
            self.link = None;
        }
        let url = self.builder.url.clone();
        let connect = async move {
            let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(Link {
                connection,
                channel,
            })
        };
        let limit = deadline.min(Instant::now() + self.builder.timeout);
        let link = match timeout_at(limit, connect).await {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => return Err(SendError::retry(format!("RabbitMQ: {e}"))),
            Err(_) => return Err(SendError::retry("RabbitMQ: no connection in time")),
        };
        let channel = link.channel.clone();
        self.link = Some(link);
        Ok(channel)
    }

    /// Publishes every item, then awaits every confirm.
    async fn publish(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let deadline = Instant::from_std(batch.deadline());
        let channel = self.connect(deadline).await?;
        let mut outcomes: Vec<Option<Outcome>> = (0..batch.len()).map(|_| None).collect();
        let mut waiting = Vec::with_capacity(batch.len());
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        for (i, item) in batch.iter().enumerate() {
            let payload = match serde_json::to_vec(item) {
                Ok(p) => p,
                Err(e) => {
                    outcomes[i] = Some(Outcome::Refused(format!("not JSON: {e}")));
                    continue;
                }
            };
            let (id, key) = batch.key(i);
            let mut headers = FieldTable::default();
            headers.insert(
                "vinequeue-queue-id".into(),
                AMQPValue::LongString(id.to_string().into()),
            );
            // Sequence numbers stay far below i64::MAX.
            headers.insert("vinequeue-seq".into(), AMQPValue::LongLongInt(key as i64));
            let properties = BasicProperties::default()
                .with_message_id(ShortString::from(format!("{id}-{key}")))
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(headers);
            let routing_key = match &self.builder.routing_key_for {
                Some(f) => f(item),
                None => self.builder.routing_key.clone(),
            };
            let publish = channel.basic_publish(
                &self.builder.exchange,
                &routing_key,
                options,
                &payload,
                properties,
            );
            match timeout_at(deadline, publish).await {
                Ok(Ok(confirm)) => waiting.push((i, confirm)),
                Ok(Err(e)) => outcomes[i] = Some(Outcome::Failed(e.to_string())),
                Err(_) => {
                    outcomes[i] = Some(Outcome::Failed("not sent before the deadline".into()))
                }
            }
        }
        let mut broken = false;
        for (i, confirm) in waiting {
            outcomes[i] = Some(match timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => Outcome::Stored,
                Ok(Ok(Confirmation::Ack(Some(returned)))) => Outcome::Failed(format!(
                    "returned unroutable: {} {}",
                    returned.reply_code, returned.reply_text
                )),
                Ok(Ok(Confirmation::Nack(_))) => Outcome::Failed("nacked by the broker".into()),
                Ok(Ok(Confirmation::NotRequested)) => {
                    Outcome::Failed("the channel is not in confirm mode".into())
                }
                Ok(Err(e)) => {
                    broken = true;
                    Outcome::Failed(e.to_string())
                }
                Err(_) => Outcome::Failed("no confirm before the deadline".into()),
            });
        }
        if broken || !channel.status().connected() {
            self.link = None; // opened again at the next attempt
        }
        verdict("RabbitMQ", &outcomes, batch)
    }
}

impl<T: Serialize + Send + Sync + 'static> vinequeue_async::AsyncSink<T> for AsyncRabbitMqSink<T> {
    fn send(
        &mut self,
        batch: &Batch<T>,
    ) -> impl std::future::Future<Output = Result<(), SendError>> + Send {
        self.publish(batch)
    }
}

impl<T: Serialize + Send + Sync + 'static> Sink<T> for RabbitMqSink<T> {
    fn send(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        self.runtime.block_on(self.inner.publish(batch))
    }
}
