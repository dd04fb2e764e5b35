//! Ready-made sinks for VineQueue, each behind a feature of its own (none by default):
//!
//! * `http`: `http::HttpSink`, batches POSTed to an HTTP endpoint as a JSON
//!   array or NDJSON, with an `Idempotency-Key` header, the status mapped onto retry,
//!   permanent and partial failures.
//! * `http-async`: the same as an `AsyncSink`, `http::AsyncHttpSink` (reqwest, on tokio).
//! * `postgres`: `postgres::PostgresSink` (blocking) and `postgres::AsyncPostgresSink`,
//!   rows in a PostgreSQL table (COPY into a
//!   staging table, then `INSERT ... ON CONFLICT DO NOTHING` on the key).
//! * `nats`: `nats::NatsSink` (blocking) and `nats::AsyncNatsSink`, one NATS JetStream
//!   message per item with `Nats-Msg-Id` = its key.
//! * `rabbitmq`: `rabbitmq::RabbitMqSink` (blocking) and `rabbitmq::AsyncRabbitMqSink`,
//!   one RabbitMQ message per item, publisher confirms, the key in `message_id`.
//! * `kafka`: `kafka::KafkaSink` (blocking) and `kafka::AsyncKafkaSink`, one record per
//!   item from an idempotent producer, the key in its headers.
//! * `sqlite`: `sqlite::SqliteSink`, rows in an SQLite database file (SQLite built in).
//!
//! Every sink maps its backend's answers onto [`SendError`](vinequeue_core::SendError)
//! deliberately (a table in each sink's documentation) and hands the backend the key it
//! can deduplicate on, `(queue id, key)` ([`Batch::key`](vinequeue_core::Batch::key)).

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(any(feature = "nats", feature = "rabbitmq", feature = "kafka"))]
mod outcome;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(any(feature = "nats", feature = "rabbitmq", feature = "postgres"))]
mod runtime;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod table;
