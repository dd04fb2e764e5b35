//! `NatsSink` and `AsyncNatsSink` against a real `nats-server -js` (`ci/with-services`
//! starts one on loopback and sets `VINEQUEUE_TEST_NATS_URL`): one message per item
//! with its key as `Nats-Msg-Id`, a batch published twice stored once, a subject
//! without a stream waits for one, the async form through an `AsyncQueue`, and
//! SIGKILLed producers leave every acknowledged item in the stream exactly once.
//!
//! Ignored by a plain `cargo test` (no server there); asked for without a server, they
//! fail saying how to start one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::{assert_exactly_once, cycles, events, kill_and_restart, service, Event, Watched};
use vinequeue_async::AsyncQueue;
use vinequeue_core::{Config, Queue};
use vinequeue_sinks::nats::NatsSink;

fn url() -> String {
    service("VINEQUEUE_TEST_NATS_URL")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

async fn context() -> jetstream::Context {
    jetstream::new(async_nats::connect(url()).await.unwrap())
}

/// A fresh stream `name` taking the subjects `<name>.>`, with a ten-minute duplicate
/// window (longer than any test).
async fn fresh_stream(name: &str) {
    let js = context().await;
    let _ = js.delete_stream(name).await;
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Every message in the stream: the item, and its `Nats-Msg-Id`.
async fn stored(name: &str) -> Vec<(Event, String)> {
    let js = context().await;
    let mut stream = js.get_stream(name).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        let id = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .unwrap()
            .to_string();
        out.push((serde_json::from_slice(&message.payload).unwrap(), id));
    }
    out
}

fn items(stored: &[(Event, String)]) -> Vec<Event> {
    stored.iter().map(|(e, _)| e.clone()).collect()
}

fn config() -> Config {
    Config::default()
        .batch_size(100)
        .flush_timeout(Duration::from_millis(5))
        .send_timeout(Duration::from_secs(5))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(50))
}

#[test]
#[ignore = "needs NATS: run through ci/with-services"]
fn each_item_is_one_message_with_its_key_and_a_batch_published_twice_is_stored_once() {
    let rt = runtime();
    rt.block_on(fresh_stream("VQ_TWICE"));
    let mut sink = Watched::new(
        NatsSink::builder(url(), "")
            .subject_for(|e: &Event| format!("VQ_TWICE.{}", e.id % 3))
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
    let stored = rt.block_on(stored("VQ_TWICE"));
    assert_eq!(
        stored.len(),
        500,
        "the second copies were dropped as duplicates"
    );
    for (e, id) in &stored {
        assert_eq!(id, &format!("{}-{}", queue.id(), e.id + 1));
    }
    assert_exactly_once("NATS", &(0..500).collect(), &items(&stored));
}

#[test]
#[ignore = "needs NATS: run through ci/with-services"]
fn with_no_stream_for_the_subject_the_batch_waits_until_there_is_one() {
    let rt = runtime();
    rt.block_on(async {
        let _ = context().await.delete_stream("VQ_LATE").await;
    });
    let sink = Watched::new(NatsSink::builder(url(), "VQ_LATE.events").build().unwrap());
    let errors = Arc::clone(&sink.errors);
    let queue = Queue::new(config().retry_until_stopped(), sink).unwrap();
    for e in events(0..20) {
        queue.enqueue(e).unwrap();
    }
    queue.start().unwrap();
    while errors.lock().unwrap().len() < 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    rt.block_on(fresh_stream("VQ_LATE"));
    let report = queue.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(report.dead_lettered, 0);
    let errors = errors.lock().unwrap();
    assert!(
        errors.iter().all(|e| e.contains("no stream found")),
        "{errors:?}"
    );
    assert_exactly_once(
        "NATS late stream",
        &(0..20).collect(),
        &items(&rt.block_on(stored("VQ_LATE"))),
    );
}

#[test]
#[ignore = "needs NATS: run through ci/with-services"]
fn the_async_form_delivers_through_an_async_queue() {
    let rt = runtime();
    rt.block_on(async {
        fresh_stream("VQ_ASYNC").await;
        let sink = NatsSink::builder(url(), "VQ_ASYNC.events")
            .build_async()
            .unwrap();
        let (queue, delivery) = AsyncQueue::with_sink(config(), sink).unwrap();
        tokio::spawn(delivery);
        queue.start().unwrap();
        for e in events(0..300) {
            queue.enqueue(e).await.unwrap();
        }
        let report = queue.flush(Duration::from_secs(30)).await.unwrap();
        assert_eq!(report.delivered, 300);
        queue.stop().await.unwrap();
        assert_exactly_once(
            "NATS async",
            &(0..300).collect(),
            &items(&stored("VQ_ASYNC").await),
        );
    });
}

/// The crash child (see `common`): its sink publishes into the stream the parent made.
#[test]
fn crash_child() {
    common::child(|address| {
        let (subject, url) = address.split_once(' ').unwrap();
        NatsSink::builder(url, subject).build().unwrap()
    });
}

fn exactly_once_through_sigkill(sync: &str, seed: u64) {
    let rt = runtime();
    let name = format!("VQ_CRASH_{}", sync.to_uppercase());
    rt.block_on(fresh_stream(&name));
    let acked = kill_and_restart(sync, &format!("{name}.events {}", url()), cycles(), seed);
    let stored = rt.block_on(stored(&name));
    assert_exactly_once(&format!("NATS, {sync}"), &acked, &items(&stored));
}

#[test]
#[ignore = "needs NATS: run through ci/with-services"]
fn exactly_once_into_nats_through_sigkill_immediate() {
    exactly_once_through_sigkill("immediate", 0x1f83_d9ab);
}

#[test]
#[ignore = "needs NATS: run through ci/with-services"]
fn exactly_once_into_nats_through_sigkill_periodic() {
    exactly_once_through_sigkill("periodic", 0x5be0_cd19);
}
