//! Feature `metrics`: the queue's numbers, scraped over HTTP from a Prometheus exporter
//! installed as the `metrics` recorder, match `Queue::metrics()` once the queue stopped,
//! under the queue's own label.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use vinequeue::{Batch, Config, Queue, SendError};

/// `GET /metrics` over plain HTTP/1.1; the body.
fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The samples of the series labelled `queue="<label>"`: name -> value.
fn samples(body: &str, label: &str) -> HashMap<String, f64> {
    let tag = format!("queue=\"{label}\"");
    body.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&tag))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            if series.contains("quantile=") || series.contains("le=") {
                return None;
            }
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_scraped_numbers_match_the_queues_own() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .unwrap();

    // A sink that fails every third call once: retries and errors to count too.
    let mut calls = 0;
    let sink = move |_: &Batch<u32>| -> Result<(), SendError> {
        calls += 1;
        if calls % 3 == 0 {
            Err(SendError::retry("busy"))
        } else {
            Ok(())
        }
    };
    let config = Config::default()
        .metrics_label("orders")
        .batch_size(10)
        .flush_timeout(Duration::from_millis(5))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2));
    let queue = Queue::new(config, sink).unwrap();
    queue.start().unwrap();
    for i in 0..250 {
        queue.enqueue(i).unwrap();
    }
    queue.flush(Duration::from_secs(30)).unwrap();
    queue.stop().unwrap();
    let m = queue.metrics();
    assert!(m.errors_total > 0 && m.retries_total > 0, "{m:?}");

    // The exporter's listener starts on a thread of its own: try for a while.
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(stream) = std::net::TcpStream::connect(addr) {
            drop(stream);
            body = scrape(addr);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = samples(&body, "orders");
    let expect = [
        ("vinequeue_enqueued_total", m.enqueued_total),
        ("vinequeue_sent_total", m.sent_total),
        ("vinequeue_send_errors_total", m.errors_total),
        ("vinequeue_batches_sent_total", m.batches_sent_total),
        ("vinequeue_retries_total", m.retries_total),
        ("vinequeue_dead_lettered_total", m.dead_lettered_total),
        ("vinequeue_dropped_total", m.dropped_total),
        ("vinequeue_pending", m.pending),
        ("vinequeue_memory_queue_size", m.memory_queue_size),
        (
            "vinequeue_send_duration_seconds_count",
            m.batches_sent_total,
        ),
    ];
    for (name, value) in expect {
        assert_eq!(
            got.get(name).copied(),
            Some(value as f64),
            "{name}: scraped {:?}, the queue says {value}\n{body}",
            got.get(name)
        );
    }
    assert_eq!(m.sent_total, 250);
}
