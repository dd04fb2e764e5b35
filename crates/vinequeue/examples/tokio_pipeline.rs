//! An async pipeline on tokio: producer tasks enqueue events, a delivery task POSTs them
//! in batches to an HTTP service (a small local one, started here, that refuses every
//! seventh request so that retries show).
//!
//! Run: `cargo run -p vinequeue --features async --example tokio_pipeline` (add a directory argument
//! to make the queue durable: `... --example tokio_pipeline -- /tmp/pipeline-wal`).
//! The same pipeline runs on smol in `smol_pipeline.rs`; only the sockets and the
//! spawning differ.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Event, HttpSink, ServiceStats};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::TokioAsyncReadCompatExt;
use vinequeue::{AsyncQueue, Config};

const PRODUCERS: u64 = 4;
const EVENTS_EACH: u64 = 5_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The HTTP service the pipeline delivers to.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(ServiceStats::default());
    let served = Arc::clone(&stats);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(common::handle(stream.compat(), Arc::clone(&served)));
        }
    });

    let mut config = Config::default()
        .batch_size(250)
        .flush_timeout(Duration::from_millis(50))
        .send_timeout(Duration::from_secs(2))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(100));
    if let Some(dir) = std::env::args().nth(1) {
        config = config.wal_path(dir);
    }
    let (queue, batches) = AsyncQueue::<Event>::new(config)?;
    let sink = HttpSink::new(addr.to_string(), move || async move {
        TcpStream::connect(addr).await.map(|s| s.compat())
    });
    let delivery = tokio::spawn(batches.deliver_to(sink));
    queue.start()?;

    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = queue.clone();
            tokio::spawn(async move {
                for n in 0..EVENTS_EACH {
                    queue.enqueue(Event::new(p, n)).await?;
                }
                Ok::<(), vinequeue::Error>(())
            })
        })
        .collect();
    for producer in producers {
        producer.await??;
    }
    queue.flush(Duration::from_secs(60)).await?;
    queue.stop().await?;
    delivery.await?;

    let m = queue.metrics();
    let events = stats.events.load(Relaxed);
    println!(
        "tokio: {} events in {:?}: the service received {} in {} requests ({} refused with \
         503 and retried); sent_total {}, retries_total {}, dead_lettered_total {}",
        PRODUCERS * EVENTS_EACH,
        started.elapsed(),
        events,
        stats.requests.load(Relaxed),
        stats.refused.load(Relaxed),
        m.sent_total,
        m.retries_total,
        m.dead_lettered_total,
    );
    assert!(events >= m.sent_total && m.sent_total >= PRODUCERS * EVENTS_EACH);
    Ok(())
}
