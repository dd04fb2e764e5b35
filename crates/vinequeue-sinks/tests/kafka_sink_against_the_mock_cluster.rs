//! `KafkaSink` and `AsyncKafkaSink` against librdkafka's mock cluster (three brokers in
//! this process, speaking the Kafka protocol on loopback; no Kafka broker can be
//! installed here): one record per item with its key in the headers, an oversized record
//! dead-lettered alone, the async form through an `AsyncQueue`, and SIGKILLed producers
//! leave every acknowledged item with a consumer that deduplicates on the headers,
//! exactly once.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_exactly_once, body, cycles, events, kill_and_restart, Event, Watched};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use vinequeue_async::AsyncQueue;
use vinequeue_core::{Config, Queue};
use vinequeue_sinks::kafka::KafkaSink;

/// Partitions of every topic but the crash tests'.
const PARTITIONS: i32 = 3;

fn cluster(topic: &str) -> MockCluster<'static, DefaultProducerContext> {
    cluster_with(topic, PARTITIONS)
}

/// The mock brokers keep a few MiB per partition and drop older records beyond that:
/// a topic that must keep everything gets partitions enough for what it will hold.
fn cluster_with(topic: &str, partitions: i32) -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(topic, partitions, 3).unwrap();
    cluster
}

/// A record as a consumer sees it.
struct Record {
    event: Event,
    key: Option<Vec<u8>>,
    queue_id: String,
    seq: u64,
}

/// Reads the topic from the start until nothing more comes for a second.
fn consume(brokers: &str, topic: &str) -> Vec<Record> {
    consume_partitions(brokers, topic, PARTITIONS)
}

/// [`consume`] of a topic of `partitions` partitions.
fn consume_partitions(brokers: &str, topic: &str, partitions: i32) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("check-{topic}-{:?}", Instant::now()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    // Partitions assigned, not subscribed: no group to join.
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap();
        quiet_since = Instant::now();
        let header = |name: &str| {
            let headers = message.headers().expect("headers");
            let h = headers.iter().find(|h| h.key == name).expect(name);
            String::from_utf8(h.value.unwrap().to_vec()).unwrap()
        };
        out.push(Record {
            event: serde_json::from_slice(message.payload().unwrap()).unwrap(),
            key: message.key().map(<[u8]>::to_vec),
            queue_id: header("vinequeue-queue-id"),
            seq: header("vinequeue-seq").parse().unwrap(),
        });
    }
    out
}

/// What a consumer that skips a `(queue id, seq)` it has seen keeps.
fn deduplicated(records: &[Record]) -> Vec<Event> {
    let mut seen = HashMap::new();
    for r in records {
        seen.entry((r.queue_id.clone(), r.seq))
            .or_insert_with(|| r.event.clone());
    }
    seen.into_values().collect()
}

fn config() -> Config {
    Config::default()
        .batch_size(100)
        .flush_timeout(Duration::from_millis(5))
        .send_timeout(Duration::from_secs(10))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(50))
}

#[test]
fn each_item_is_one_record_carrying_its_key_in_the_headers() {
    let cluster = cluster("twice");
    let mut sink = Watched::new(
        KafkaSink::builder(cluster.bootstrap_servers(), "twice")
            .key_for(|e: &Event| format!("user-{}", e.id % 7).into_bytes())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    sink.twice = true;
    let queue = Queue::new(config(), sink).unwrap();
    for e in events(0..300) {
        queue.enqueue(e).unwrap();
    }
    queue.start().unwrap();
    assert_eq!(queue.flush(Duration::from_secs(30)).unwrap().delivered, 300);
    let records = consume(&cluster.bootstrap_servers(), "twice");
    assert_eq!(
        records.len(),
        600,
        "a batch sent twice is two records per item"
    );
    for r in &records {
        assert_eq!(r.queue_id, queue.id().to_string());
        assert_eq!(r.seq, r.event.id + 1);
        assert_eq!(
            r.key.as_deref(),
            Some(format!("user-{}", r.event.id % 7).as_bytes())
        );
    }
    assert_exactly_once("Kafka", &(0..300).collect(), &deduplicated(&records));
}

#[test]
fn a_record_too_large_for_the_cluster_is_dead_lettered_alone() {
    let cluster = cluster("large");
    let sink = Watched::new(
        KafkaSink::builder(cluster.bootstrap_servers(), "large")
            .setting("message.max.bytes", "2000")
            .build()
            .unwrap(),
    );
    let (errors, dead) = (Arc::clone(&sink.errors), Arc::clone(&sink.dead));
    let queue = Queue::new(config().retry_limit(3), sink).unwrap();
    for mut e in events(0..50) {
        if e.id == 17 {
            e.body = "x".repeat(5_000);
        }
        queue.enqueue(e).unwrap();
    }
    queue.start().unwrap();
    let report = queue.flush(Duration::from_secs(30)).unwrap();
    assert_eq!((report.delivered, report.dead_lettered), (49, 1));
    assert_eq!(dead.lock().unwrap()[0].id, 17);
    let errors = errors.lock().unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("item") && e.contains("too large")),
        "{errors:?}"
    );
    let kept = deduplicated(&consume(&cluster.bootstrap_servers(), "large"));
    assert_eq!(kept.len(), 49);
    assert!(kept.iter().all(|e| e.id != 17 && e.body == body(e.id)));
}

#[test]
fn the_async_form_delivers_through_an_async_queue() {
    let cluster = cluster("async");
    let sink = KafkaSink::builder(cluster.bootstrap_servers(), "async")
        .build_async()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (queue, delivery) = AsyncQueue::with_sink(config(), sink).unwrap();
        tokio::spawn(delivery);
        queue.start().unwrap();
        for e in events(0..200) {
            queue.enqueue(e).await.unwrap();
        }
        assert_eq!(
            queue
                .flush(Duration::from_secs(30))
                .await
                .unwrap()
                .delivered,
            200
        );
        queue.stop().await.unwrap();
    });
    let records = consume(&cluster.bootstrap_servers(), "async");
    assert_eq!(records.len(), 200);
    assert_exactly_once("Kafka async", &(0..200).collect(), &deduplicated(&records));
}

/// The crash child (see `common`): its sink produces to the mock cluster the parent runs.
#[test]
fn crash_child() {
    common::child(|brokers| {
        KafkaSink::builder(brokers, "crash")
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    });
}

fn exactly_once_through_sigkill(sync: &str, seed: u64) {
    // (A few thousand records per kill, with the copies a restart sends again.)
    let partitions = PARTITIONS.max((cycles() / 5) as i32);
    let cluster = cluster_with("crash", partitions);
    let acked = kill_and_restart(sync, &cluster.bootstrap_servers(), cycles(), seed);
    let records = consume_partitions(&cluster.bootstrap_servers(), "crash", partitions);
    assert_exactly_once(&format!("Kafka, {sync}"), &acked, &deduplicated(&records));
}

#[test]
fn exactly_once_into_kafka_through_sigkill_immediate() {
    exactly_once_through_sigkill("immediate", 0x428a_2f98);
}

#[test]
fn exactly_once_into_kafka_through_sigkill_periodic() {
    exactly_once_through_sigkill("periodic", 0xe9b5_dba5);
}
