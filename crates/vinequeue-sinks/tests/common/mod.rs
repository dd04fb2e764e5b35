//! What the sinks' tests share: the crash test that proves "exactly once" against a real
//! backend, and finding the backends `ci/with-services` started.
//!
//! The crash test: a child process (this test binary again, running its `crash_child`
//! test) enqueues into a durable queue whose sink is the real backend, and prints every
//! item whose `enqueue` returned `Ok`. The parent SIGKILLs it at random moments and starts
//! it again on the same directory, many times; a last child drains the queue. Then the
//! backend must hold every acknowledged item exactly once, and no item twice.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vinequeue_core::{Batch, Config, DeadLetter, Queue, SendError, Sink, SyncMode};

pub mod pg;

/// The environment variable that makes `crash_child` a child: `dir|mode|start|drain|address`.
pub const CHILD: &str = "VQ_SINK_CRASH_CHILD";

/// What the crash test enqueues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub body: String,
}

/// Item `id`'s body: its content is checked at the end.
pub fn body(id: u64) -> String {
    format!("event {id} {}", "x".repeat((id % 23) as usize))
}

/// The address of a service started by `ci/with-services`, from `var`; a test asked for
/// without it fails, saying how to start it.
pub fn service(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: this test needs a real server. Run it through \
             `ci/with-services cargo test -p vinequeue-sinks --all-features -- --include-ignored`, \
             which starts PostgreSQL, NATS and RabbitMQ on loopback and sets {var}"
        )
    })
}

fn mode(name: &str) -> SyncMode {
    match name {
        "immediate" => SyncMode::Immediate,
        _ => SyncMode::Periodic(Duration::from_millis(20)),
    }
}

/// The child's side: when this process is a crash child, runs a queue on the sink that
/// `make_sink` builds from the address the parent gave, and never returns normally
/// (it enqueues until killed, or drains and ends). Otherwise does nothing.
pub fn child<S: Sink<Event> + 'static>(make_sink: impl FnOnce(&str) -> S) {
    run_child(make_sink, false);
}

/// As [`child`], but the child is a producer reading a source: the items `0, 1, 2...`,
/// each enqueued with `enqueue_at` and its id as source position, resuming after the
/// position `recovery()` hands back (the `start` the parent gives is not used).
pub fn positioned_child<S: Sink<Event> + 'static>(make_sink: impl FnOnce(&str) -> S) {
    run_child(make_sink, true);
}

fn run_child<S: Sink<Event> + 'static>(make_sink: impl FnOnce(&str) -> S, positioned: bool) {
    let Ok(spec) = std::env::var(CHILD) else {
        return; // an ordinary test run
    };
    let parts: Vec<&str> = spec.splitn(5, '|').collect();
    let (dir, sync, start, drain, address) = (
        parts[0],
        parts[1],
        parts[2].parse::<u64>().unwrap(),
        parts[3] == "drain",
        parts[4],
    );
    let config = Config::default()
        .wal_path(dir)
        .sync_mode(mode(sync))
        .memory_size(200)
        .batch_size(50)
        .flush_timeout(Duration::from_millis(2))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(100));
    let queue = Arc::new(Queue::new(config, make_sink(address)).unwrap());
    queue.start().unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    if drain {
        queue.flush(Duration::from_secs(120)).unwrap();
        queue.stop().unwrap();
        return;
    }
    if positioned {
        let resume = queue.recovery().source_position.map_or(0, |p| {
            u64::from_le_bytes(p.try_into().expect("an 8-byte position")) + 1
        });
        for id in resume.. {
            let event = Event { id, body: body(id) };
            if queue.enqueue_at(event, id.to_le_bytes()).is_ok() {
                writeln!(out, "ACK {id}").unwrap();
                out.flush().unwrap();
            }
            if id % 20 == 19 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    for k in 0.. {
        let id = start + k;
        if queue.enqueue(Event { id, body: body(id) }).is_ok() {
            writeln!(out, "ACK {id}").unwrap();
            out.flush().unwrap();
        }
        if k % 20 == 19 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn spawn_child(
    dir: &Path,
    sync: &str,
    start: u64,
    drain: bool,
    address: &str,
) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(
            CHILD,
            format!(
                "{}|{sync}|{start}|{}|{address}",
                dir.display(),
                if drain { "drain" } else { "run" }
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kill cycles per test: `VQ_CRASH_CYCLES`, default 50.
pub fn cycles() -> u64 {
    std::env::var("VQ_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
}

/// The parent's side: `cycles` children SIGKILLed at random moments (40 to 200 ms after
/// their queue started), then a draining child. Returns the acknowledged ids.
pub fn kill_and_restart(sync: &str, address: &str, cycles: u64, seed: u64) -> HashSet<u64> {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    let mut acked = HashSet::new();
    let mut rng = seed | 1;
    for cycle in 0..cycles {
        let mut child = spawn_child(&dir, sync, cycle * 100_000_000, false, address);
        let stdout = child.stdout.take().unwrap();
        let (started, is_ready) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut ids: Vec<u64> = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // (After libtest's "test crash_child ... ", on the same line.)
                if line.ends_with("READY") {
                    let _ = started.send(());
                }
                if let Some(id) = line.strip_prefix("ACK ").and_then(|s| s.parse().ok()) {
                    ids.push(id);
                }
            }
            ids
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let _ = is_ready.recv_timeout(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(40 + rng % 160));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acked.extend(reader.join().unwrap());
    }
    let status = spawn_child(&dir, sync, u64::MAX / 2, true, address)
        .wait()
        .unwrap();
    assert!(status.success(), "the draining run failed: {status}");
    assert!(
        acked.len() as u64 > cycles,
        "the children acknowledged almost nothing: {} items in {cycles} runs",
        acked.len()
    );
    acked
}

/// For a producer that resumes from its source position: the backend holds the items
/// `0..=n` for some `n` at least the highest acknowledged id, each exactly once: none
/// skipped, none enqueued twice.
pub fn assert_source_to_backend_exactly_once(what: &str, acked: &HashSet<u64>, stored: &[Event]) {
    assert_exactly_once(what, acked, stored);
    let mut ids: Vec<u64> = stored.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    let gaps: Vec<_> = ids
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .take(10)
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        ids.first() == Some(&0) && gaps.is_empty(),
        "{what}: the source's items are not all in the backend: it starts at {:?}, gaps {gaps:?}",
        ids.first()
    );
    let highest = acked.iter().max().copied().unwrap_or(0);
    assert!(
        ids.last().is_some_and(|&n| n >= highest),
        "{what}: the backend ends at {:?}, before the acknowledged {highest}",
        ids.last()
    );
}

/// The backend holds `stored` (each stored item, as many times as it is stored): every
/// acknowledged item is there exactly once, no item is there twice, and each has its
/// own body.
pub fn assert_exactly_once(what: &str, acked: &HashSet<u64>, stored: &[Event]) {
    let mut times: HashMap<u64, usize> = HashMap::new();
    for e in stored {
        assert_eq!(
            e.body,
            body(e.id),
            "{what}: item {} came back with another body",
            e.id
        );
        *times.entry(e.id).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, &n)| n > 1).take(10).collect();
    assert!(
        twice.is_empty(),
        "{what}: {} items are in the backend more than once, e.g. (id, times) {twice:?}",
        times.values().filter(|&&n| n > 1).count()
    );
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !times.contains_key(id))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} acknowledged items are not in the backend, e.g. {missing:?}",
        acked.iter().filter(|id| !times.contains_key(id)).count(),
        acked.len()
    );
}

/// A sink around another that records every failure and every dead letter, and, when
/// `twice`, writes each batch twice (as after a reply lost on the way back).
pub struct Watched<S> {
    pub inner: S,
    pub twice: bool,
    pub errors: Arc<Mutex<Vec<String>>>,
    pub dead: Arc<Mutex<Vec<Event>>>,
}

impl<S: Sink<Event>> Watched<S> {
    pub fn new(inner: S) -> Self {
        Watched {
            inner,
            twice: false,
            errors: Arc::default(),
            dead: Arc::default(),
        }
    }
}

impl<S: Sink<Event>> Sink<Event> for Watched<S> {
    fn send(&mut self, batch: &Batch<Event>) -> Result<(), SendError> {
        let mut result = self.inner.send(batch);
        if self.twice && result.is_ok() {
            result = self.inner.send(batch);
        }
        if let Err(e) = &result {
            self.errors.lock().unwrap().push(e.describe());
        }
        result
    }

    fn on_dead_letter(&mut self, letter: DeadLetter<Event>) {
        self.dead.lock().unwrap().extend(letter.iter().cloned());
    }
}

pub fn events(ids: std::ops::Range<u64>) -> impl Iterator<Item = Event> {
    ids.map(|id| Event { id, body: body(id) })
}
