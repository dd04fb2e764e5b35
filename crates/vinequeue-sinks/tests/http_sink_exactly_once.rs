//! `HttpSink` into an endpoint that deduplicates on each item's key (a small HTTP/1.1
//! server in this test, on loopback, that keeps the first copy of every
//! `(queue_id, key)`): SIGKILLed producers leave every acknowledged item there exactly
//! once.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{assert_exactly_once, cycles, kill_and_restart, Event};
use vinequeue_sinks::http::{BodyFormat, HttpSink};

/// What the endpoint keeps: the first copy of each key.
type Kept = Arc<Mutex<HashMap<(String, u64), Event>>>;

/// One request: its body, or `None` when the connection ended before it was whole.
fn read_request(stream: &std::net::TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut len = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            if n.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

/// The deduplicating endpoint: NDJSON lines `{"queue_id", "key", "item"}`.
fn endpoint() -> (String, Kept) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let kept: Kept = Arc::default();
    let store = Arc::clone(&kept);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let Some(body) = read_request(&stream) else {
                    return; // the producer died mid-request: nothing taken
                };
                let mut kept = store.lock().unwrap();
                for line in body.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    let key = (
                        v["queue_id"].as_str().unwrap().to_owned(),
                        v["key"].as_u64().unwrap(),
                    );
                    let item: Event = serde_json::from_value(v["item"].clone()).unwrap();
                    kept.entry(key).or_insert(item);
                }
                drop(kept);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    (url, kept)
}

/// The crash child (see `common`): its sink posts to the endpoint the parent runs.
#[test]
fn crash_child() {
    common::child(|url| {
        HttpSink::builder(url)
            .format(BodyFormat::Ndjson)
            .item_keys(true)
            .build()
            .unwrap()
    });
}

fn exactly_once_through_sigkill(sync: &str, seed: u64) {
    let (url, kept) = endpoint();
    let acked = kill_and_restart(sync, &url, cycles(), seed);
    let stored: Vec<Event> = kept.lock().unwrap().values().cloned().collect();
    assert_exactly_once(&format!("HTTP, {sync}"), &acked, &stored);
}

#[test]
fn exactly_once_over_http_through_sigkill_immediate() {
    exactly_once_through_sigkill("immediate", 0x3c6e_f372);
}

#[test]
fn exactly_once_over_http_through_sigkill_periodic() {
    exactly_once_through_sigkill("periodic", 0xa54f_f53a);
}
