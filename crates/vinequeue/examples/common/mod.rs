//! What the tokio and smol pipelines share, written once against the `futures` I/O traits:
//! an [`AsyncSink`] that POSTs each batch as newline-delimited JSON over HTTP/1.1, and the
//! request handler of the small local HTTP service it talks to. Only the sockets (and the
//! spawning) come from the runtime.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use std::time::{Duration, Instant};

use futures::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use serde::{Deserialize, Serialize};
use vinequeue::{AsyncQueue, AsyncSink, Batch, Config, SendError};

/// Producer tasks, and events each of them enqueues.
pub const PRODUCERS: u64 = 4;
pub const EVENTS_EACH: u64 = 5_000;

/// The queue's configuration: batches of 250 POSTed within 50 ms, quick retries;
/// durable if a directory is given on the command line.
pub fn config() -> Config {
    let config = Config::default()
        .batch_size(250)
        .flush_timeout(Duration::from_millis(50))
        .send_timeout(Duration::from_secs(2))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(100));
    match std::env::args().nth(1) {
        Some(dir) => config.wal_path(dir),
        None => config,
    }
}

/// One producer task's work.
pub async fn produce(queue: AsyncQueue<Event>, producer: u64) -> Result<(), vinequeue::Error> {
    for n in 0..EVENTS_EACH {
        queue.enqueue(Event::new(producer, n)).await?;
    }
    Ok(())
}

/// Prints what happened and checks that the service got every event.
pub fn report(runtime: &str, started: Instant, queue: &AsyncQueue<Event>, stats: &ServiceStats) {
    let m = queue.metrics();
    let events = stats.events.load(Relaxed);
    println!(
        "{runtime}: {} events in {:?}: the service received {} in {} requests ({} refused \
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
}

/// One event of the pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub user: String,
    pub action: String,
}

impl Event {
    pub fn new(producer: u64, n: u64) -> Self {
        Event {
            id: producer * 1_000_000 + n,
            user: format!("user-{}", n % 97),
            action: if n.is_multiple_of(3) { "click" } else { "view" }.to_string(),
        }
    }

    fn to_json(&self) -> String {
        // The fields hold no characters that need escaping.
        format!(
            r#"{{"id":{},"user":"{}","action":"{}"}}"#,
            self.id, self.user, self.action
        )
    }
}

/// Posts every batch to `POST /events`, opening a connection with `connect` per batch.
pub struct HttpSink<C> {
    connect: C,
    host: String,
}

impl<C> HttpSink<C> {
    pub fn new(host: impl Into<String>, connect: C) -> Self {
        HttpSink {
            connect,
            host: host.into(),
        }
    }
}

impl<C, Fut, S> AsyncSink<Event> for HttpSink<C>
where
    C: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<S>> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn send(&mut self, batch: &Batch<Event>) -> Result<(), SendError> {
        let mut body = String::new();
        for event in batch.iter() {
            body.push_str(&event.to_json());
            body.push('\n');
        }
        let mut stream = (self.connect)().await?;
        let head = format!(
            "POST /events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-ndjson\r\n\
             Content-Length: {}\r\nIdempotency-Key: {}-{}\r\nConnection: close\r\n\r\n",
            self.host,
            body.len(),
            batch.first_seq(),
            batch.last_seq(),
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.flush().await?;
        let mut status_line = String::new();
        BufReader::new(stream).read_line(&mut status_line).await?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        match status {
            200..=299 => Ok(()),
            400..=499 => Err(SendError::permanent(format!(
                "the service refused the batch: {status}"
            ))),
            _ => Err(SendError::retry(format!("the service answered {status}"))),
        }
    }
}

/// What the local service saw.
#[derive(Default)]
pub struct ServiceStats {
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub events: AtomicU64,
}

/// Serves one connection of the local service: reads a request, answers 503 to every
/// seventh one (a flaky backend, so that the queue's retries show), else counts its
/// events and answers 200.
pub async fn handle<S>(stream: S, stats: Arc<ServiceStats>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).await?;
    let n = stats.requests.fetch_add(1, Relaxed) + 1;
    let status = if n.is_multiple_of(7) {
        stats.refused.fetch_add(1, Relaxed);
        "503 Service Unavailable"
    } else {
        let events = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        stats.events.fetch_add(events as u64, Relaxed);
        "200 OK"
    };
    let mut stream = reader.into_inner();
    let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await
}
