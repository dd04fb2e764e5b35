//! The queue's metrics on a Prometheus `/metrics` endpoint (feature `metrics`).
//!
//! ```text
//! cargo run --example metrics_endpoint --features metrics
//! curl -s localhost:9000/metrics | grep vinequeue_
//! ```
//!
//! Any exporter of the `metrics` ecosystem works the same way: install it before the
//! queue is built, give the queue a label, and its series appear.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use vinequeue::{Batch, Config, Queue, SendError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = std::env::var("METRICS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9000".into())
        .parse()?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;

    let config = Config::default()
        .metrics_label("orders")
        .batch_size(100)
        .flush_timeout(Duration::from_millis(50));
    let queue = Queue::new(config, |batch: &Batch<String>| -> Result<(), SendError> {
        // Deliver the batch somewhere; here it only takes a little time.
        std::thread::sleep(Duration::from_millis(batch.len() as u64 / 50));
        Ok(())
    })?;
    queue.start()?;
    for i in 0..10_000 {
        queue.enqueue(format!("order {i}"))?;
    }
    let report = queue.flush(Duration::from_secs(30))?;
    println!(
        "delivered {}; metrics on http://{addr}/metrics for the next {} s",
        report.delivered,
        linger().as_secs()
    );
    std::thread::sleep(linger());
    queue.stop()?;
    Ok(())
}

/// How long the example keeps serving (`METRICS_LINGER_SECS`, default 60).
fn linger() -> Duration {
    Duration::from_secs(
        std::env::var("METRICS_LINGER_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    )
}
