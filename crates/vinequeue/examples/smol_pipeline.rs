//! The pipeline of `tokio_pipeline.rs` on smol, with the same sink, service and
//! producers (`common/mod.rs`): the queue does not care which executor polls it.
//!
//! Run: `cargo run --example smol_pipeline` (add a directory argument to make the queue
//! durable).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{HttpSink, ServiceStats};
use smol::net::{TcpListener, TcpStream};
use vinequeue::AsyncQueue;

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

        let (queue, batches) = AsyncQueue::new(common::config())?;
        let sink = HttpSink::new(addr.to_string(), move || TcpStream::connect(addr));
        let delivery = smol::spawn(batches.deliver_to(sink));
        queue.start()?;

        let started = Instant::now();
        let producers: Vec<_> = (0..common::PRODUCERS)
            .map(|p| smol::spawn(common::produce(queue.clone(), p)))
            .collect();
        for producer in producers {
            producer.await?;
        }
        queue.flush(Duration::from_secs(60)).await?;
        queue.stop().await?;
        delivery.await;
        common::report("smol", started, &queue, &stats);
        Ok(())
    })
}
