//! `RabbitMqSink` and `AsyncRabbitMqSink` against a real RabbitMQ broker
//! (`ci/with-services` starts one on loopback and sets `VINEQUEUE_TEST_AMQP_URL`): one
//! persistent message per item with its key, an unroutable batch waits until a queue
//! takes it, the async form through an `AsyncQueue`, and SIGKILLed producers leave every
//! acknowledged item with a consumer that deduplicates on `message_id`, exactly once.
//!
//! Ignored by a plain `cargo test` (no broker there); asked for without a broker, they
//! fail saying how to start one.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{assert_exactly_once, cycles, events, kill_and_restart, service, Event, Watched};
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use vinequeue_async::AsyncQueue;
use vinequeue_core::{Config, Queue};
use vinequeue_sinks::rabbitmq::RabbitMqSink;

fn url() -> String {
    service("VINEQUEUE_TEST_AMQP_URL")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

async fn channel() -> Channel {
    let connection = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap();
    connection.create_channel().await.unwrap()
}

/// A fresh, durable queue `name` (reached through the default exchange by its name).
async fn fresh_queue(name: &str) {
    let channel = channel().await;
    let _ = channel
        .queue_delete(name, QueueDeleteOptions::default())
        .await;
    let channel = self::channel().await;
    channel
        .queue_declare(
            name,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// A message as the consumer sees it.
struct Message {
    event: Event,
    message_id: String,
    seq: i64,
}

/// Takes every message in the queue.
async fn drain(name: &str) -> Vec<Message> {
    let channel = channel().await;
    let mut out = Vec::new();
    while let Some(m) = channel
        .basic_get(name, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let props = &m.delivery.properties;
        let seq = match props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("vinequeue-seq").cloned())
        {
            Some(AMQPValue::LongLongInt(n)) => n,
            other => panic!("vinequeue-seq header: {other:?}"),
        };
        assert_eq!(props.delivery_mode(), &Some(2), "persistent");
        out.push(Message {
            event: serde_json::from_slice(&m.delivery.data).unwrap(),
            message_id: props.message_id().as_ref().unwrap().to_string(),
            seq,
        });
    }
    out
}

/// What a consumer that skips a `message_id` it has seen keeps.
fn deduplicated(messages: &[Message]) -> Vec<Event> {
    let mut seen = HashMap::new();
    for m in messages {
        seen.entry(m.message_id.clone())
            .or_insert_with(|| m.event.clone());
    }
    seen.into_values().collect()
}

fn config() -> Config {
    Config::default()
        .batch_size(100)
        .flush_timeout(Duration::from_millis(5))
        .send_timeout(Duration::from_secs(5))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(50))
}

#[test]
#[ignore = "needs RabbitMQ: run through ci/with-services"]
fn each_item_is_one_persistent_message_carrying_its_key() {
    let rt = runtime();
    rt.block_on(fresh_queue("vq_twice"));
    let mut sink = Watched::new(
        RabbitMqSink::builder(url(), "")
            .routing_key("vq_twice")
            .build()
            .unwrap(),
    );
    sink.twice = true;
    let queue = Queue::new(config(), sink).unwrap();
    for e in events(0..500) {
        queue.enqueue(e).unwrap();
    }
    queue.start().unwrap();
    assert_eq!(queue.flush(Duration::from_secs(30)).unwrap().delivered, 500);
    let messages = rt.block_on(drain("vq_twice"));
    assert_eq!(messages.len(), 1_000, "the broker keeps both copies");
    for m in &messages {
        assert_eq!(m.message_id, format!("{}-{}", queue.id(), m.event.id + 1));
        assert_eq!(m.seq, m.event.id as i64 + 1);
    }
    assert_exactly_once("RabbitMQ", &(0..500).collect(), &deduplicated(&messages));
}

#[test]
#[ignore = "needs RabbitMQ: run through ci/with-services"]
fn an_unroutable_batch_waits_until_a_queue_takes_it() {
    let rt = runtime();
    rt.block_on(async {
        let _ = channel()
            .await
            .queue_delete("vq_late", QueueDeleteOptions::default())
            .await;
    });
    let sink = Watched::new(
        RabbitMqSink::builder(url(), "")
            .routing_key("vq_late")
            .build()
            .unwrap(),
    );
    let errors = Arc::clone(&sink.errors);
    let queue = Queue::new(config().retry_until_stopped(), sink).unwrap();
    for e in events(0..20) {
        queue.enqueue(e).unwrap();
    }
    queue.start().unwrap();
    while errors.lock().unwrap().len() < 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    rt.block_on(fresh_queue("vq_late"));
    let report = queue.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(report.dead_lettered, 0);
    let errors = errors.lock().unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("returned unroutable: 312")),
        "{errors:?}"
    );
    let messages = rt.block_on(drain("vq_late"));
    assert_exactly_once(
        "RabbitMQ late queue",
        &(0..20).collect(),
        &deduplicated(&messages),
    );
}

#[test]
#[ignore = "needs RabbitMQ: run through ci/with-services"]
fn the_async_form_delivers_through_an_async_queue() {
    let rt = runtime();
    rt.block_on(async {
        fresh_queue("vq_async").await;
        let sink = RabbitMqSink::builder(url(), "")
            .routing_key("vq_async")
            .build_async()
            .unwrap();
        let (queue, delivery) = AsyncQueue::with_sink(config(), sink).unwrap();
        tokio::spawn(delivery);
        queue.start().unwrap();
        for e in events(0..300) {
            queue.enqueue(e).await.unwrap();
        }
        assert_eq!(
            queue
                .flush(Duration::from_secs(30))
                .await
                .unwrap()
                .delivered,
            300
        );
        queue.stop().await.unwrap();
        let messages = drain("vq_async").await;
        assert_eq!(messages.len(), 300);
        assert_exactly_once(
            "RabbitMQ async",
            &(0..300).collect(),
            &deduplicated(&messages),
        );
    });
}

/// The crash child (see `common`): its sink publishes to the queue the parent made.
#[test]
fn crash_child() {
    common::child(|address| {
        let (queue, url) = address.split_once(' ').unwrap();
        RabbitMqSink::builder(url, "")
            .routing_key(queue)
            .build()
            .unwrap()
    });
}

fn exactly_once_through_sigkill(sync: &str, seed: u64) {
    let rt = runtime();
    let name = format!("vq_crash_{sync}");
    rt.block_on(fresh_queue(&name));
    let acked = kill_and_restart(sync, &format!("{name} {}", url()), cycles(), seed);
    let messages = rt.block_on(drain(&name));
    assert_exactly_once(
        &format!("RabbitMQ, {sync}"),
        &acked,
        &deduplicated(&messages),
    );
}

#[test]
#[ignore = "needs RabbitMQ: run through ci/with-services"]
fn exactly_once_into_rabbitmq_through_sigkill_immediate() {
    exactly_once_through_sigkill("immediate", 0x510e_527f);
}

#[test]
#[ignore = "needs RabbitMQ: run through ci/with-services"]
fn exactly_once_into_rabbitmq_through_sigkill_periodic() {
    exactly_once_through_sigkill("periodic", 0x9b05_688c);
}
