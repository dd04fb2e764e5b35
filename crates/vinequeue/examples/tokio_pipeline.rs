//! An async pipeline on tokio: producer tasks enqueue events, a delivery task POSTs them
//! in batches to an HTTP service (a small local one, started here, that refuses every
//! seventh request so that retries show).
//!
//! Run: `cargo run --example tokio_pipeline` (add a directory argument to make the queue
//! durable: `cargo run --example tokio_pipeline -- /tmp/pipeline-wal`). The same
//! pipeline runs on smol in `smol_pipeline.rs`: only the sockets and the spawning
//! differ; the sink, the service and the producers are in `common/mod.rs`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{HttpSink, ServiceStats};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::TokioAsyncReadCompatExt;
use vinequeue::AsyncQueue;

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

    let (queue, batches) = AsyncQueue::new(common::config())?;
    let sink = HttpSink::new(addr.to_string(), move || async move {
        TcpStream::connect(addr).await.map(|s| s.compat())
    });
    let delivery = tokio::spawn(batches.deliver_to(sink));
    queue.start()?;

    let started = Instant::now();
    let producers: Vec<_> = (0..common::PRODUCERS)
        .map(|p| tokio::spawn(common::produce(queue.clone(), p)))
        .collect();
    for producer in producers {
        producer.await??;
    }
    queue.flush(Duration::from_secs(60)).await?;
    queue.stop().await?;
    delivery.await?;
    common::report("tokio", started, &queue, &stats);
    Ok(())
}
