//! `HttpSink` against a real HTTP server on loopback (a small one in this test, speaking
//! HTTP/1.1 over a TCP socket): bodies, headers, and what each answer makes of a batch,
//! through a queue.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vinequeue_core::{Config, DeadLetterReason, Queue};
use vinequeue_sinks::http::{BodyFormat, HttpSink};

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Request {
    headers: Vec<(String, String)>,
    body: String,
    at: Instant,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One scripted answer: status, extra headers, body.
type Answer = (u16, Vec<(&'static str, &'static str)>, &'static str);

/// Serves each connection with the next scripted answer (status, extra headers, body);
/// once the script is used up, 200. Returns the URL and what it received.
fn server(script: Vec<Answer>) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() || line.is_empty() {
                continue;
            }
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (n, v) = h.split_once(':').unwrap();
                headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            log.lock().unwrap().push(Request {
                headers,
                body: String::from_utf8(body).unwrap(),
                at: Instant::now(),
            });
            let (status, extra, text) = script.next().unwrap_or((200, vec![], "ok"));
            let mut answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                text.len()
            );
            for (n, v) in extra {
                answer.push_str(&format!("{n}: {v}\r\n"));
            }
            answer.push_str("\r\n");
            answer.push_str(text);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (url, seen)
}

fn config() -> Config {
    Config::default()
        .batch_size(3)
        .flush_timeout(Duration::from_millis(5))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .retry_limit(5)
}

#[test]
fn a_batch_arrives_as_a_json_array_with_its_idempotency_key() {
    let (url, seen) = server(vec![]);
    let sink = HttpSink::builder(url)
        .header("Authorization", "Bearer t")
        .build()
        .unwrap();
    let queue = Queue::new(config(), sink).unwrap();
    for i in 0..3u32 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    let report = queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(report.delivered, 3);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, "[0,1,2]");
    assert_eq!(seen[0].header("Content-Type"), Some("application/json"));
    assert_eq!(seen[0].header("Authorization"), Some("Bearer t"));
    assert_eq!(
        seen[0].header("Idempotency-Key"),
        Some(format!("{}:1-3", queue.id()).as_str())
    );
}

#[test]
fn ndjson_with_item_keys_lets_the_endpoint_deduplicate_each_item() {
    let (url, seen) = server(vec![]);
    let sink = HttpSink::builder(url)
        .format(BodyFormat::Ndjson)
        .item_keys(true)
        .build()
        .unwrap();
    let queue = Queue::new(config(), sink).unwrap();
    for i in 0..2u32 {
        queue.enqueue(i * 10).unwrap();
    }
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let seen = seen.lock().unwrap();
    let id = queue.id().to_string();
    let lines: Vec<serde_json::Value> = seen[0]
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"queue_id": id, "key": 1, "item": 0}),
            serde_json::json!({"queue_id": id, "key": 2, "item": 10}),
        ]
    );
    assert!(seen[0].body.ends_with('\n'));
    assert_eq!(seen[0].header("Content-Type"), Some("application/x-ndjson"));
}

#[test]
fn throttled_then_taken_the_retry_waits_as_asked_and_keeps_its_key() {
    let (url, seen) = server(vec![(429, vec![("Retry-After", "1")], "slow down")]);
    let queue = Queue::new(config(), HttpSink::builder(url).build().unwrap()).unwrap();
    queue.enqueue(7u32).unwrap();
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].at - seen[0].at >= Duration::from_secs(1),
        "{:?}",
        seen[1].at - seen[0].at
    );
    assert_eq!(
        seen[0].header("Idempotency-Key"),
        seen[1].header("Idempotency-Key")
    );
    assert_eq!(queue.metrics().sent_total, 1);
}

#[test]
fn server_errors_are_retried_and_a_bad_request_is_dead_lettered() {
    let (url, seen) = server(vec![(503, vec![], "down"), (400, vec![], "bad field")]);
    let letters = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&letters);
    let sink = vinequeue_core::SinkExt::with_dead_letter(
        HttpSink::builder(url).build().unwrap(),
        move |letter: vinequeue_core::DeadLetter<u32>| {
            l.lock().unwrap().push((letter.reason(), letter.error()));
        },
    );
    let queue = Queue::new(config(), sink).unwrap();
    queue.enqueue(1u32).unwrap();
    queue.start().unwrap();
    let report = queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(seen.lock().unwrap().len(), 2, "one retry after the 503");
    let letters = letters.lock().unwrap();
    assert_eq!(letters[0].0, DeadLetterReason::Permanent);
    assert!(
        letters[0].1.contains("400") && letters[0].1.contains("bad field"),
        "{letters:?}"
    );
}

#[test]
fn a_partial_answer_retries_only_the_items_it_names() {
    // The endpoint rejects items by position: "failed: 1".
    let (url, seen) = server(vec![(422, vec![], "failed: 1")]);
    let sink = HttpSink::builder(url)
        .partial(|_, body, _| {
            body.strip_prefix("failed: ").map(|list| {
                list.split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect()
            })
        })
        .build()
        .unwrap();
    let queue = Queue::new(config(), sink).unwrap();
    for i in 0..3u32 {
        queue.enqueue(i).unwrap();
    }
    queue.start().unwrap();
    queue.flush(Duration::from_secs(10)).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, "[0,1,2]");
    assert_eq!(seen[1].body, "[1]", "only the failed item again");
    assert_eq!(
        seen[1].header("Idempotency-Key"),
        Some(format!("{}:2-2", queue.id()).as_str())
    );
}

#[test]
fn a_refused_connection_is_retried_and_a_bad_url_is_an_error() {
    // Nothing listens there: every attempt fails to connect and is retried until the
    // retries run out.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = HttpSink::builder(format!("http://127.0.0.1:{port}/"))
        .build()
        .unwrap();
    let queue = Queue::new(config().retry_limit(2), sink).unwrap();
    queue.enqueue(1u32).unwrap();
    queue.start().unwrap();
    let report = queue.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(queue.metrics().retries_total, 2);
    assert!(HttpSink::builder("ftp://example.com")
        .build::<u32>()
        .is_err());
}

#[test]
fn the_async_form_sends_the_same_requests_and_reads_the_same_answers() {
    let (url, seen) = server(vec![
        (503, vec![], "down"),
        (200, vec![], "ok"),
        (422, vec![], "failed: 1"),
    ]);
    let sink = HttpSink::builder(url)
        .format(BodyFormat::Ndjson)
        .header("Authorization", "Bearer t")
        .partial(|_, body, _| {
            body.strip_prefix("failed: ")
                .map(|i| vec![i.parse().unwrap()])
        })
        .build_async()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = config().batch_size(2);
        let (queue, delivery) = vinequeue_async::AsyncQueue::with_sink(config, sink).unwrap();
        tokio::spawn(delivery);
        queue.start().unwrap();
        queue.enqueue(1u32).await.unwrap();
        queue.enqueue(2u32).await.unwrap();
        queue.flush(Duration::from_secs(10)).await.unwrap();
        queue.enqueue(3u32).await.unwrap();
        queue.enqueue(4u32).await.unwrap();
        let report = queue.flush(Duration::from_secs(10)).await.unwrap();
        assert_eq!(report.delivered, 2, "3, then 4 after the partial answer");
        queue.stop().await.unwrap();
        let id = queue.id();
        let seen = seen.lock().unwrap();
        let bodies: Vec<&str> = seen.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(bodies, ["1\n2\n", "1\n2\n", "3\n4\n", "4\n"]);
        let keys: Vec<_> = seen
            .iter()
            .map(|r| r.header("Idempotency-Key").unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                format!("{id}:1-2"),
                format!("{id}:1-2"),
                format!("{id}:3-4"),
                format!("{id}:4-4")
            ]
        );
        assert!(seen
            .iter()
            .all(|r| r.header("Authorization") == Some("Bearer t")
                && r.header("Content-Type") == Some("application/x-ndjson")));
    });
}
