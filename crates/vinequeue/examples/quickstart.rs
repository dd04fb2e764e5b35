//! A realistic event pipeline: four "request handler" threads emit click events; a sink
//! ships them in batches to an analytics API that now and then fails (transient errors,
//! one rejected event per so many batches). At the end, the queue's metrics are printed.
//!
//! Run with `cargo run --release --example quickstart`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vinequeue::{Batch, Config, DeadLetter, OverflowPolicy, Queue, SendError, Sink};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClickEvent {
    user_id: u64,
    page: String,
    at_ms: u64,
}

/// Stands in for an HTTP client posting JSON arrays to an analytics endpoint.
struct AnalyticsApi {
    calls: u64,
    stored: Arc<AtomicU64>,
}

impl Sink<ClickEvent> for AnalyticsApi {
    fn send(&mut self, batch: &Batch<ClickEvent>) -> Result<(), SendError> {
        self.calls += 1;
        // Every 97th call the "API" answers 503: retried with backoff.
        if self.calls.is_multiple_of(97) {
            return Err(SendError::retry("503 service unavailable"));
        }
        // The API validates events; one with an empty page is refused, the rest stored.
        if let Some(bad) = batch.iter().position(|e| e.page.is_empty()) {
            if batch.attempt() == 0 {
                self.stored
                    .fetch_add(batch.len() as u64 - 1, Ordering::Relaxed);
                return Err(SendError::partial([bad], "422 event without a page"));
            }
            // A resend of the same invalid event will never succeed.
            return Err(SendError::permanent("422 event without a page"));
        }
        self.stored.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn on_dead_letter(&mut self, letter: DeadLetter<ClickEvent>) {
        eprintln!(
            "dead letter: {} event(s), seqs {:?}: {}",
            letter.len(),
            letter.seqs(),
            letter.error()
        );
    }
}

fn main() -> Result<(), vinequeue::Error> {
    let stored = Arc::new(AtomicU64::new(0));
    let config = Config::default()
        .memory_size(20_000)
        .batch_size(500)
        .flush_timeout(Duration::from_millis(100))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(100))
        .overflow(OverflowPolicy::Block(Duration::from_secs(5)));
    let sink = AnalyticsApi {
        calls: 0,
        stored: Arc::clone(&stored),
    };
    let queue = Arc::new(Queue::new(config, sink)?);
    queue.start()?;

    let started = Instant::now();
    let handlers: Vec<_> = (0..4u64)
        .map(|worker| {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || -> Result<(), vinequeue::Error> {
                let pages = ["/", "/pricing", "/docs", "/blog", "/signup"];
                for i in 0..250_000u64 {
                    let page = if worker == 0 && i == 123_456 {
                        String::new() // one malformed event
                    } else {
                        pages[(i % 5) as usize].to_owned()
                    };
                    let event = ClickEvent {
                        user_id: worker * 1_000_000 + i % 5_000,
                        page,
                        at_ms: started.elapsed().as_millis() as u64,
                    };
                    queue.enqueue(event)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handlers {
        h.join().expect("handler thread panicked")?;
    }
    let enqueued_in = started.elapsed();
    queue.flush(Duration::from_secs(30))?;
    queue.stop()?;
    let total = started.elapsed();

    let m = queue.metrics();
    println!("events enqueued      {:>10}", m.enqueued_total);
    println!("events delivered     {:>10}", m.sent_total);
    println!("dead-lettered        {:>10}", m.dead_lettered_total);
    println!("batches sent         {:>10}", m.batches_sent_total);
    println!("failed attempts      {:>10}", m.errors_total);
    println!("retries              {:>10}", m.retries_total);
    println!("still pending        {:>10}", m.pending);
    println!("send latency avg     {:>10.1?}", m.avg_send_latency);
    println!("send latency p50     {:>10.1?}", m.send_latency_p50);
    println!("send latency p99     {:>10.1?}", m.send_latency_p99);
    println!("send latency max     {:>10.1?}", m.send_latency_max);
    println!(
        "enqueue rate         {:>10.0} events/s ({} events in {:.1?}, all delivered after {:.1?})",
        m.enqueued_total as f64 / enqueued_in.as_secs_f64(),
        m.enqueued_total,
        enqueued_in,
        total
    );
    assert_eq!(stored.load(Ordering::Relaxed), m.sent_total);
    assert_eq!(m.enqueued_total, m.sent_total + m.dead_lettered_total);
    Ok(())
}
