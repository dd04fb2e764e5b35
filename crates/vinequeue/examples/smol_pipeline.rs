//! The pipeline of `tokio_pipeline.rs` on smol, with the same sink and service code
//! (`common/mod.rs`): the queue does not care which executor polls it.
//!
//! Run: `cargo run -p vinequeue --features async --example smol_pipeline` (add a directory argument
//! to make the queue durable).

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Event, HttpSink, ServiceStats};
use smol::net::{TcpListener, TcpStream};
use vinequeue::{AsyncQueue, Config};

const PRODUCERS: u64 = 4;
const EVENTS_EACH: u64 = 5_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        // The HTTP service the pipeline delivers to.
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ServiceStats::default());
        let served = Arc::clone(&stats);
        smol::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                smol::spawn(common::handle(stream, Arc::clone(&served))).detach();
            }
        })
        .detach();

        let mut config = Config::default()
            .batch_size(250)
            .flush_timeout(Duration::from_millis(50))
            .send_timeout(Duration::from_secs(2))
            .retry_backoff(Duration::from_millis(5), Duration::from_millis(100));
        if let Some(dir) = std::env::args().nth(1) {
            config = config.wal_path(dir);
        }
        let (queue, batches) = AsyncQueue::<Event>::new(config)?;
        let sink = HttpSink::new(addr.to_string(), move || TcpStream::connect(addr));
        let delivery = smol::spawn(batches.deliver_to(sink));
        queue.start()?;

        let started = Instant::now();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let queue = queue.clone();
                smol::spawn(async move {
                    for n in 0..EVENTS_EACH {
                        queue.enqueue(Event::new(p, n)).await?;
                    }
                    Ok::<(), vinequeue::Error>(())
                })
            })
            .collect();
        for producer in producers {
            producer.await?;
        }
        queue.flush(Duration::from_secs(60)).await?;
        queue.stop().await?;
        delivery.await;

        let m = queue.metrics();
        let events = stats.events.load(Relaxed);
        println!(
            "smol: {} events in {:?}: the service received {} in {} requests ({} refused \
             with 503 and retried); sent_total {}, retries_total {}, dead_lettered_total {}",
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
    })
}
