//! [`KafkaSink`] and [`AsyncKafkaSink`]: one Kafka record per item, from an idempotent
//! producer, with the item's key in its headers (rdkafka, librdkafka built in).
//!
//! ```no_run
//! use vinequeue_core::{Config, Queue};
//! use vinequeue_sinks::kafka::KafkaSink;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Event { user: u64, kind: String }
//!
//! // Each item as JSON on `events`, keyed by user (one partition per user's events).
//! let sink = KafkaSink::builder("127.0.0.1:9092", "events")
//!     .key_for(|e: &Event| e.user.to_string().into_bytes())
//!     .build()?;
//! let queue = Queue::new(Config::default().wal_path("/var/lib/app/events"), sink)?;
//! queue.start()?;
//! queue.enqueue(Event { user: 1, kind: "signup".into() })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`KafkaSink`] is the blocking form, for [`Queue`](vinequeue_core::Queue);
//! [`AsyncKafkaSink`] (from [`build_async`](KafkaSinkBuilder::build_async)) is an
//! [`AsyncSink`](vinequeue_async::AsyncSink) for `AsyncQueue`, on any executor (the
//! client's own threads do the work; its futures need no runtime).
//!
//! # Exactly once: the consumer's part
//!
//! The producer is idempotent (`enable.idempotence`, `acks=all`): within one producer
//! session, a record the client sends twice is stored once. That session ends with the
//! process: a batch published again after a crash is stored again. Each record therefore
//! says which item it is, in its headers `vinequeue-queue-id` (the queue's identity, as
//! text) and `vinequeue-seq` (the item's key number, [`Batch::key`], as decimal text):
//! consumers skip a `(queue id, seq)` they have seen.
//!
//! # What the answers mean
//!
//! All of a batch's records are handed to the client at once, then their delivery
//! reports awaited. The client gives up on a record after `message.timeout.ms` (the
//! builder's [`timeout`](KafkaSinkBuilder::timeout), 30 s by default: keep it at most
//! `send_timeout`).
//!
//! | the cluster answers | the sink returns |
//! |---|---|
//! | every record acknowledged | `Ok` |
//! | some records failed (an error in their delivery report, the client's queue full, timed out) | `SendError::partial` naming them; the others count as delivered |
//! | no record acknowledged (no broker reachable, every report an error) | `SendError::retry` |
//! | records too large for the cluster or refused as invalid, items that do not serialize to JSON | those items in `SendError::partial`, or `SendError::permanent` when the whole batch is such items |
//!
//! Tested against librdkafka's built-in mock cluster (no Kafka broker can be installed
//! where the tests run): the protocol is the real one, the broker a stand-in.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::Serialize;
use vinequeue_core::{Batch, SendError, Sink};

use crate::outcome::{verdict, Outcome};

type KeyFn<T> = Arc<dyn Fn(&T) -> Vec<u8> + Send + Sync>;

/// Builds a [`KafkaSink`] or an [`AsyncKafkaSink`].
#[must_use = "a builder does nothing until build()"]
pub struct KafkaSinkBuilder<T> {
    brokers: String,
    topic: String,
    key_for: Option<KeyFn<T>>,
    timeout: Duration,
    settings: Vec<(String, String)>,
}

impl<T> fmt::Debug for KafkaSinkBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSinkBuilder")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("timeout", &self.timeout)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<T> KafkaSinkBuilder<T> {
    /// Each record's key, computed from the item (which decides its partition). Default:
    /// no key.
    pub fn key_for(mut self, key: impl Fn(&T) -> Vec<u8> + Send + Sync + 'static) -> Self {
        self.key_for = Some(Arc::new(key));
        self
    }

    /// How long the client tries to deliver a record (`message.timeout.ms`). Default:
    /// 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A librdkafka setting of your own (`security.protocol`, `compression.type`...),
    /// applied after the sink's.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// The async sink. The client is created here and connects in the background.
    ///
    /// # Errors
    ///
    /// A message when the topic is empty or the client refuses a setting.
    pub fn build_async(self) -> Result<AsyncKafkaSink<T>, String> {
        if self.topic.is_empty() {
            return Err("Kafka sink: no topic".into());
        }
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                self.timeout
                    .as_millis()
                    .clamp(1, i32::MAX as u128)
                    .to_string(),
            );
        for (name, value) in &self.settings {
            config.set(name, value);
        }
        let producer: FutureProducer = config
            .create()
            .map_err(|e| format!("Kafka sink: the client refused its settings: {e}"))?;
        Ok(AsyncKafkaSink {
            producer,
            builder: self,
        })
    }

    /// The blocking sink.
    ///
    /// # Errors
    ///
    /// As [`build_async`](Self::build_async).
    pub fn build(self) -> Result<KafkaSink<T>, String> {
        Ok(KafkaSink {
            inner: self.build_async()?,
        })
    }
}

/// The async Kafka sink; see the [module](self) documentation.
pub struct AsyncKafkaSink<T> {
    producer: FutureProducer,
    builder: KafkaSinkBuilder<T>,
}

impl<T> fmt::Debug for AsyncKafkaSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncKafkaSink")
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}

/// The blocking Kafka sink; see the [module](self) documentation.
#[derive(Debug)]
pub struct KafkaSink<T> {
    inner: AsyncKafkaSink<T>,
}

impl<T> KafkaSink<T> {
    /// A builder for a sink producing to `topic` on the cluster reached through
    /// `brokers` (`host:port`, comma-separated).
    pub fn builder(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaSinkBuilder<T> {
        KafkaSinkBuilder {
            brokers: brokers.into(),
            topic: topic.into(),
            key_for: None,
            timeout: Duration::from_secs(30),
            settings: Vec::new(),
        }
    }
}

/// Whether a failed record is the item's own fault, so that retrying cannot help.
fn is_item_error(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

fn failure(e: &KafkaError) -> Outcome {
    if is_item_error(e) {
        Outcome::Refused(e.to_string())
    } else {
        Outcome::Failed(e.to_string())
    }
}

impl<T: Serialize> AsyncKafkaSink<T> {
    /// Hands every item to the client, then awaits every delivery report.
    async fn produce(&self, batch: &Batch<T>) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut outcomes: Vec<Option<Outcome>> = (0..batch.len()).map(|_| None).collect();
        let mut waiting = Vec::with_capacity(batch.len());
        let id = batch.queue_id().to_string();
        for (i, item) in batch.iter().enumerate() {
            let payload = match serde_json::to_vec(item) {
                Ok(p) => p,
                Err(e) => {
                    outcomes[i] = Some(Outcome::Refused(format!("not JSON: {e}")));
                    continue;
                }
            };
            let seq = batch.key(i).1.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "vinequeue-queue-id",
                    value: Some(&id),
                })
                .insert(Header {
                    key: "vinequeue-seq",
                    value: Some(&seq),
                });
            let key = self.builder.key_for.as_ref().map(|f| f(item));
            let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&self.builder.topic)
                .payload(&payload)
                .headers(headers);
            if let Some(key) = &key {
                record = record.key(key);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => waiting.push((i, delivery)),
                Err((e, _)) => outcomes[i] = Some(failure(&e)),
            }
        }
        for (i, delivery) in waiting {
            outcomes[i] = Some(match delivery.await {
                Ok(Ok(_)) => Outcome::Stored,
                Ok(Err((e, _))) => failure(&e),
                Err(_) => Outcome::Failed("the client dropped the delivery report".into()),
            });
        }
        verdict("Kafka", &outcomes, batch)
    }
}

impl<T: Serialize + Send + Sync + 'static> vinequeue_async::AsyncSink<T> for AsyncKafkaSink<T> {
    fn send(
        &mut self,
        batch: &Batch<T>,
    ) -> impl std::future::Future<Output = Result<(), SendError>> + Send {
        self.produce(batch)
    }
}

impl<T: Serialize + Send + Sync + 'static> Sink<T> for KafkaSink<T> {
    fn send(&mut self, batch: &Batch<T>) -> Result<(), SendError> {
        futures_executor::block_on(self.inner.produce(batch))
    }
}
