//! Real crashes: a child process enqueues into a durable queue and prints every item
//! whose `enqueue` returned `Ok`; its sink appends what it receives to a file it fsyncs.
//! The child is killed with SIGKILL at random moments and restarted on the same
//! directory, many times; a final run drains the queue. Every acknowledged item must
//! have reached the sink, byte for byte. Runs under `Immediate`, `Periodic` and `Os`
//! (a process crash loses nothing in any of them: the page cache survives).
//!
//! The sink records each item with its sequence number: an item keeps one number
//! however often it is delivered, no number ever names two items, and the numbers of
//! the items a run enqueued lie above those of every earlier run.
//!
//! `VQ_CRASH_CYCLES` sets the number of kill cycles per mode (default 50;
//! the long run in docs/reliability.md uses 1,000).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vinequeue::{AsyncQueue, Batch, Config, Queue, SendError, SyncMode};

const CHILD: &str = "VQ_CRASH_CHILD";

#[derive(Serialize, Deserialize)]
struct Event {
    id: u64,
    body: Vec<u8>,
}

fn body(id: u64) -> Vec<u8> {
    (0..(id % 40))
        .map(|i| (id.wrapping_mul(7) + i) as u8)
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mode(name: &str) -> SyncMode {
    match name {
        "immediate" => SyncMode::Immediate,
        "periodic" => SyncMode::Periodic(Duration::from_millis(20)),
        _ => SyncMode::Os,
    }
}

/// The child: `VQ_CRASH_CHILD=dir|received|mode|start_id|drain`.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return; // an ordinary test run: nothing to do
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (dir, received, sync, start, drain) = (
        parts[0],
        parts[1],
        parts[2],
        parts[3].parse::<u64>().unwrap(),
        parts[4] == "drain",
    );
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(received)
        .unwrap();
    // An earlier child killed in the middle of a line left it without its newline: end
    // it, so that this child's first line is not glued to it (and misread).
    let text = std::fs::read(received).unwrap();
    if text.last().is_some_and(|&b| b != b'\n') {
        (&out).write_all(b"\n").unwrap();
    }
    let sink = move |batch: &Batch<Event>| -> Result<(), SendError> {
        let mut text = String::new();
        for (seq, e) in batch.iter_with_seq() {
            text.push_str(&format!("{seq} {} {}\n", e.id, hex(&e.body)));
        }
        (&out).write_all(text.as_bytes())?;
        out.sync_data()?;
        Ok(())
    };
    if let Some(sync) = sync.strip_prefix("async-") {
        return async_child(child_config(dir, sync), sink, start, drain);
    }
    let config = child_config(dir, sync);
    let queue = Arc::new(Queue::new(config, sink).unwrap());
    queue.start().unwrap();
    ready();
    if drain {
        queue.flush(Duration::from_secs(60)).unwrap();
        queue.stop().unwrap();
        return;
    }
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let producers: Vec<_> = (0..2u64)
        .map(|t| {
            let queue = Arc::clone(&queue);
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || {
                let mut k = 0u64;
                loop {
                    let id = start + 2 * k + t;
                    if queue.enqueue(Event { id, body: body(id) }).is_ok() {
                        let mut o = stdout.lock().unwrap();
                        writeln!(o, "ACK {id}").unwrap();
                        o.flush().unwrap();
                    }
                    k += 1;
                    if k.is_multiple_of(20) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
}

/// Tells the parent the queue is open and started: the kill's random delay counts from
/// here, so that a slow start (a loaded machine, a long log to recover) still leaves the
/// child time to enqueue.
fn ready() {
    let mut out = std::io::stdout();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
}

fn child_config(dir: &str, sync: &str) -> Config {
    Config::default()
        .wal_path(dir)
        .sync_mode(mode(sync))
        .memory_size(200)
        .batch_size(50)
        .flush_timeout(Duration::from_millis(2))
}

/// The child with async producers (two tasks on a thread pool) and an async sink
/// (`sink`, called from the delivery future).
fn async_child(
    config: Config,
    mut sink: impl FnMut(&Batch<Event>) -> Result<(), SendError> + Send + 'static,
    start: u64,
    drain: bool,
) {
    use futures::future::{join_all, FutureExt};
    let async_sink = move |batch: &Batch<Event>| std::future::ready(sink(batch));
    let (queue, delivery) = AsyncQueue::with_sink(config, async_sink).unwrap();
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(2)
        .create()
        .unwrap();
    pool.spawn_ok(delivery);
    queue.start().unwrap();
    ready();
    if drain {
        futures::executor::block_on(async {
            queue.flush(Duration::from_secs(60)).await.unwrap();
            queue.stop().await.unwrap();
        });
        return;
    }
    let producers: Vec<_> = (0..2u64)
        .map(|t| {
            let queue = queue.clone();
            let (task, done) = async move {
                let mut k = 0u64;
                loop {
                    let id = start + 2 * k + t;
                    if queue.enqueue(Event { id, body: body(id) }).await.is_ok() {
                        let mut o = std::io::stdout().lock();
                        writeln!(o, "ACK {id}").unwrap();
                        o.flush().unwrap();
                    }
                    k += 1;
                }
            }
            .remote_handle();
            pool.spawn_ok(task);
            done
        })
        .collect::<Vec<_>>();
    futures::executor::block_on(join_all(producers));
}

fn spawn_child(
    dir: &Path,
    received: &Path,
    sync: &str,
    start: u64,
    drain: bool,
) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(
            CHILD,
            format!(
                "{}|{}|{sync}|{start}|{}",
                dir.display(),
                received.display(),
                if drain { "drain" } else { "run" }
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn cycles(default: u64) -> u64 {
    std::env::var("VQ_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn kill_and_restart(sync: &str, cycles: u64, seed: u64) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    let received = root.path().join("received.txt");
    let mut acked = HashSet::new();
    let mut rng = seed | 1;
    for cycle in 0..cycles {
        let mut child = spawn_child(&dir, &received, sync, cycle * 100_000_000, false);
        let stdout = child.stdout.take().unwrap();
        let (started, is_ready) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // (After libtest's "test crash_child ... ", on the same line.)
                if line.ends_with("READY") {
                    let _ = started.send(());
                }
                if let Some(id) = line
                    .strip_prefix("ACK ")
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    ids.push(id);
                }
            }
            ids
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // (A child that never gets ready is killed all the same; the check below
        // that the children acknowledged something catches a child that cannot start.)
        let _ = is_ready.recv_timeout(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(40 + rng % 160));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acked.extend(reader.join().unwrap());
    }
    let status = spawn_child(&dir, &received, sync, u64::MAX / 2, true)
        .wait()
        .unwrap();
    assert!(status.success(), "the draining run failed: {status}");

    let text = std::fs::read_to_string(&received).unwrap();
    let mut got = HashSet::new();
    let mut seq_of: HashMap<u64, u64> = HashMap::new();
    let mut item_of: HashMap<u64, u64> = HashMap::new();
    for line in text.lines() {
        let mut f = line.split(' ');
        let (Some(seq), Some(id), Some(b)) = (f.next(), f.next(), f.next()) else {
            continue; // a line torn by SIGKILL mid-write
        };
        let (Ok(seq), Ok(id)) = (seq.parse::<u64>(), id.parse::<u64>()) else {
            continue;
        };
        if b.len() == body(id).len() * 2 {
            assert_eq!(b, hex(&body(id)), "item {id} came back with other bytes");
            got.insert(id);
            let kept = *seq_of.entry(id).or_insert(seq);
            assert_eq!(
                kept, seq,
                "{sync}: item {id} came with seq {kept} and seq {seq}"
            );
            let named = *item_of.entry(seq).or_insert(id);
            assert_eq!(
                named, id,
                "{sync}: seq {seq} named item {named} and item {id}"
            );
        }
    }
    // Items of cycle `c` have ids `c * 100_000_000 + k` (the drain enqueues none).
    let mut runs: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (&id, &seq) in &seq_of {
        let r = runs.entry(id / 100_000_000).or_insert((seq, seq));
        *r = (r.0.min(seq), r.1.max(seq));
    }
    let mut highest_before = 0;
    for (run, (lowest, highest)) in runs {
        assert!(
            lowest > highest_before,
            "{sync}: run {run} handed out seq {lowest}, not above the earlier runs' {highest_before}"
        );
        highest_before = highest;
    }
    let lost: Vec<_> = acked
        .iter()
        .filter(|id| !got.contains(id))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "{sync}: {} of {} acknowledged items never reached the sink, e.g. {lost:?}",
        acked.iter().filter(|id| !got.contains(id)).count(),
        acked.len()
    );
    assert!(
        acked.len() as u64 > cycles,
        "the children acknowledged almost nothing: {} items in {cycles} runs",
        acked.len()
    );
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_item_immediate() {
    kill_and_restart("immediate", cycles(50), 0x1234_5678);
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_item_periodic() {
    kill_and_restart("periodic", cycles(50), 0x9abc_def0);
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_item_async_immediate() {
    kill_and_restart("async-immediate", cycles(50), 0x5a5a_a5a5);
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_item_os() {
    kill_and_restart("os", cycles(50), 0x0fed_cba9);
}
