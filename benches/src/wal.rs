//! Durable-mode workloads for the `wal_compare` binary (`src/bin/wal_compare.rs`): the
//! write-ahead log (`vinequeue::Wal`) and the durable queue (`vinequeue::Queue` with
//! `wal_path`), each next to a baseline that does the least possible work with the same
//! bytes on the same file system, measured in the same run.
//!
//! Every record is [`RECORD_LEN`] (100) bytes of payload. On disk the log frames it with
//! a [`FRAME_HEADER_LEN`] (16) byte header (`len u32, crc32c u32, seq u64`); the baselines
//! write exactly such frames ([`encode_frame`], including the CRC32C of the payload) so
//! both sides move the same bytes. What is timed is said on each function. All files go
//! into a fresh directory under the `dir` argument, which is removed afterwards.
//!
//! The baselines:
//!
//! * [`buffered_write`]: `BufWriter<File>` (8 KiB buffer) `write_all` of every frame,
//!   one `flush` at the end, no sync: the upper bound for page-cache appends;
//! * [`group_commit_baseline`]: one thread writes `group` frames with one `write_all`
//!   and then calls `sync_data` once, repeatedly: with `group = 1` one `fdatasync` per
//!   record, with `group = N` the ideal group commit of N appenders;
//! * [`buffered_read`]: `BufReader<File>` over the frames written by [`buffered_write`],
//!   checking each frame's CRC: the baseline for reading the log back.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vinequeue::{Batch, Config, NullSink, Queue, SendError, Storage, SyncMode, Wal, WalOptions};

/// Payload bytes per record.
pub const RECORD_LEN: usize = 100;
/// Bytes of the log's frame header (and of the baselines' frames).
pub const FRAME_HEADER_LEN: usize = 16;
/// Bytes of one framed record.
pub const FRAME_LEN: usize = FRAME_HEADER_LEN + RECORD_LEN;
/// Segment size used for the raw log benchmarks (the `WalOptions` default).
pub const SEGMENT_SIZE: u64 = 64 * 1024 * 1024;
/// `max_size` of every log here: large enough that no benchmark fills it.
pub const WAL_MAX_SIZE: u64 = 16 * 1024 * 1024 * 1024;

/// The 100-byte payload of record `i` (varying bytes, so nothing compresses or dedups).
pub fn payload(i: u64) -> [u8; RECORD_LEN] {
    let mut p = [0u8; RECORD_LEN];
    for (k, chunk) in p.chunks_mut(8).enumerate() {
        let v = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(k as u64);
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
    p
}

/// The frame the baselines write for record `seq`: `len u32, crc32c(payload) u32, seq
/// u64`, little-endian, then the payload. (The log's CRC also covers its segment salt;
/// the cost is the same.)
pub fn encode_frame(seq: u64, payload: &[u8; RECORD_LEN], out: &mut [u8; FRAME_LEN]) {
    out[0..4].copy_from_slice(&(RECORD_LEN as u32).to_le_bytes());
    out[4..8].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..].copy_from_slice(payload);
}

/// A fresh, empty directory `dir/<name>-<pid>-<n>`, removed by [`Scratch`]'s drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates the directory, after letting the page cache [`settle`] (every
    /// measurement starts with a fresh scratch directory).
    ///
    /// # Panics
    ///
    /// If it cannot be created.
    pub fn new(dir: &Path, name: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("vq-bench-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the scratch directory");
        settle();
        Scratch(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options of the raw-log benchmarks: default segment size, a limit no run reaches.
pub fn wal_options(mode: SyncMode) -> WalOptions {
    WalOptions::default()
        .segment_size(SEGMENT_SIZE)
        .max_size(WAL_MAX_SIZE)
        .sync_mode(mode)
}

/// Appends `records` records to a new log with `mode`, one thread; returns the time from
/// the first `append` until the last one returned. Opening (which preallocates the first
/// segment) and closing are not timed; rolling to new segments (preallocation of 64 MiB
/// each) is. Under `Periodic` the log's own thread syncs in the background meanwhile.
///
/// # Panics
///
/// On any log error.
pub fn wal_append(dir: &Path, mode: SyncMode, records: u64) -> Duration {
    let scratch = Scratch::new(dir, "wal-append");
    let wal = Wal::open(scratch.path(), wal_options(mode)).expect("open the log");
    let start = Instant::now();
    for i in 0..records {
        wal.append(&payload(i)).expect("append");
    }
    let elapsed = start.elapsed();
    drop(wal);
    elapsed
}

/// Writes `records` frames through a `BufWriter<File>` and flushes once, no sync; returns
/// the time from the first `write_all` until the flush returned (creating the file is not
/// timed). Leaves the file at `path`.
///
/// # Panics
///
/// On an I/O error.
pub fn buffered_write(path: &Path, records: u64) -> Duration {
    let file = File::create(path).expect("create the baseline file");
    let mut w = BufWriter::new(file);
    let mut frame = [0u8; FRAME_LEN];
    let start = Instant::now();
    for i in 0..records {
        encode_frame(i + 1, &payload(i), &mut frame);
        w.write_all(&frame).expect("write");
    }
    w.flush().expect("flush");
    start.elapsed()
}

/// Reads back the frames of [`buffered_write`] through a `BufReader<File>` (64 KiB),
/// checking every CRC and sequence number; returns the records read and the time taken
/// (opening included).
///
/// # Panics
///
/// On an I/O error or a bad frame.
pub fn buffered_read(path: &Path) -> (u64, Duration) {
    let start = Instant::now();
    let mut r = BufReader::with_capacity(64 * 1024, File::open(path).expect("open"));
    let mut frame = [0u8; FRAME_LEN];
    let mut n = 0u64;
    loop {
        match r.read_exact(&mut frame) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("read: {e}"),
        }
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
        assert_eq!(crc, crc32c::crc32c(&frame[16..]), "bad crc");
        assert_eq!(seq, n + 1, "out of order");
        n += 1;
    }
    (n, start.elapsed())
}

/// Writes `records` records into a new log at `dir` under `SyncMode::Os`, syncs, and
/// closes it: the input of [`wal_read_back`]. Returns the time the appends took (not
/// the open, the sync or the close).
///
/// # Panics
///
/// On any log error.
pub fn wal_prepare(dir: &Path, records: u64) -> Duration {
    let wal = Wal::open(dir, wal_options(SyncMode::Os)).expect("open the log");
    let start = Instant::now();
    for i in 0..records {
        wal.append(&payload(i)).expect("append");
    }
    let elapsed = start.elapsed();
    wal.sync().expect("sync");
    elapsed
}

/// Opens the existing log at `dir` (recovery: scanning and checking every frame) and
/// reads every record with `Storage::read` in batches of `batch`, checking the sequence
/// numbers and lengths; returns the records read, the time `Wal::open` took and the
/// total time (open + read). Warm cache: the files were just written.
///
/// # Panics
///
/// On any log error or a missing record.
pub fn wal_read_back(dir: &Path, batch: usize) -> (u64, Duration, Duration) {
    let start = Instant::now();
    let wal = Wal::open(dir, wal_options(SyncMode::Os)).expect("open the log");
    let opened = start.elapsed();
    let mut next = 1u64;
    let mut bytes = 0u64;
    loop {
        let n = wal
            .read(next, batch, &mut |seq, rec| {
                debug_assert_eq!(seq, next);
                bytes += rec.len() as u64;
                next = seq + 1;
                true
            })
            .expect("read");
        if n == 0 {
            break;
        }
    }
    let total = start.elapsed();
    let records = next - 1;
    assert_eq!(bytes, records * RECORD_LEN as u64, "record lengths");
    drop(wal);
    (records, opened, total)
}

/// Per-record results of a sync benchmark.
#[derive(Debug, Clone, Default)]
pub struct SyncRun {
    /// Records made durable.
    pub records: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of every record, ns: from the start of its append (write) until the sync
    /// covering it returned.
    pub latencies: Vec<u64>,
}

impl SyncRun {
    /// Records per second.
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `op(i)` on `threads` threads (thread `t` takes `i = t, t + threads, ...`) until
/// `duration` has passed, started together by a barrier; every call is timed.
///
/// # Panics
///
/// If a thread panics (that is, if `op` does).
pub fn timed_threads(threads: usize, duration: Duration, op: impl Fn(u64) + Sync) -> SyncRun {
    let barrier = Barrier::new(threads + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (op, barrier) = (&op, &barrier);
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(1 << 14);
                    barrier.wait();
                    let end = Instant::now() + duration;
                    let mut i = t as u64;
                    loop {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        op(i);
                        lat.push(t0.elapsed().as_nanos() as u64);
                        i += threads as u64;
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut latencies = Vec::new();
        for h in handles {
            latencies.extend(h.join().expect("a timed thread panicked"));
        }
        SyncRun {
            records: latencies.len() as u64,
            elapsed: start.elapsed(),
            latencies,
        }
    })
}

/// `threads` threads append to one log under `SyncMode::Immediate`, each doing `append`
/// then `sync_through(seq)` (concurrent callers share one sync), until `duration` has
/// passed. Every record's latency is timed.
///
/// # Panics
///
/// On any log error.
pub fn wal_immediate(dir: &Path, threads: usize, duration: Duration) -> SyncRun {
    let scratch = Scratch::new(dir, "wal-immediate");
    let wal = Wal::open(scratch.path(), wal_options(SyncMode::Immediate)).expect("open");
    let run = timed_threads(threads, duration, |i| {
        let seq = wal.append(&payload(i)).expect("append");
        wal.sync_through(seq).expect("sync_through");
    });
    drop(wal);
    run
}

/// One thread writes `group` frames with one `write_all` on a plain `File` (appending)
/// and then calls `sync_data`, repeatedly until `duration` has passed. Each record's
/// latency is that of its group (write + sync): every record of a group waits for the
/// same sync.
///
/// # Panics
///
/// On an I/O error.
pub fn group_commit_baseline(dir: &Path, group: usize, duration: Duration) -> SyncRun {
    let scratch = Scratch::new(dir, "fdatasync");
    let mut file = File::create(scratch.path().join("log")).expect("create");
    let mut buf = vec![0u8; group * FRAME_LEN];
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut seq = 0u64;
    let start = Instant::now();
    let end = start + duration;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        for chunk in buf.chunks_exact_mut(FRAME_LEN) {
            let frame: &mut [u8; FRAME_LEN] = chunk.try_into().expect("FRAME_LEN");
            encode_frame(seq + 1, &payload(seq), frame);
            seq += 1;
        }
        file.write_all(&buf).expect("write");
        file.sync_data().expect("sync_data");
        let ns = t0.elapsed().as_nanos() as u64;
        latencies.extend(std::iter::repeat_n(ns, group));
    }
    SyncRun {
        records: seq,
        elapsed: start.elapsed(),
        latencies,
    }
}

/// An item of exactly [`RECORD_LEN`] bytes once postcard-encoded (byte arrays encode
/// byte for byte, without a length), and `Copy`: the durable-queue workloads enqueue it
/// without any allocation of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item100 {
    a: [u8; 32],
    b: [u8; 32],
    c: [u8; 32],
    d: [u8; 4],
}

impl Item100 {
    /// Item number `i` (the bytes of [`payload`]).
    pub fn new(i: u64) -> Item100 {
        let p = payload(i);
        let mut it = Item100 {
            a: [0; 32],
            b: [0; 32],
            c: [0; 32],
            d: [0; 4],
        };
        it.a.copy_from_slice(&p[0..32]);
        it.b.copy_from_slice(&p[32..64]);
        it.c.copy_from_slice(&p[64..96]);
        it.d.copy_from_slice(&p[96..100]);
        it
    }
}

/// The durable-queue configuration of the end-to-end workloads: log in `path`, `mode`,
/// ring of 10 000 items, batches of 1 000, log limit [`WAL_MAX_SIZE`].
pub fn durable_config(path: &Path, mode: SyncMode) -> Config {
    Config::default()
        .wal_path(path)
        .sync_mode(mode)
        .memory_size(10_000)
        .batch_size(1_000)
        .wal_max_size(WAL_MAX_SIZE)
}

/// One producer enqueues `items` [`Item100`]s into a durable queue (`mode`, [`NullSink`]).
/// With `sync_every = Some(k)` it calls `queue.sync()` after every `k` enqueues (and
/// after the last). With `timed` every `enqueue` call is timed (the pair of clock reads
/// costs ~20 ns). Returns the time from the first enqueue until the last call returned
/// (queue creation, start and stop are not timed) and the samples (empty if not `timed`).
///
/// # Panics
///
/// On any queue error.
pub fn queue_enqueue(
    dir: &Path,
    mode: SyncMode,
    items: u64,
    sync_every: Option<u64>,
    timed: bool,
) -> (Duration, Vec<u64>) {
    let scratch = Scratch::new(dir, "queue");
    let queue = Queue::new(durable_config(scratch.path(), mode), NullSink).expect("queue");
    queue.start().expect("start");
    let mut samples = Vec::with_capacity(if timed { items as usize } else { 0 });
    let start = Instant::now();
    for i in 0..items {
        let item = Item100::new(i);
        if timed {
            let t0 = Instant::now();
            queue.enqueue(item).expect("enqueue");
            samples.push(t0.elapsed().as_nanos() as u64);
        } else {
            queue.enqueue(item).expect("enqueue");
        }
        if let Some(k) = sync_every {
            if (i + 1) % k == 0 || i + 1 == items {
                queue.sync().expect("sync");
            }
        }
    }
    let elapsed = start.elapsed();
    queue.stop().expect("stop");
    (elapsed, samples)
}

/// `producers` threads enqueue [`Item100`]s into a durable queue under
/// `SyncMode::Immediate` (each `enqueue` returns once its record is durable; concurrent
/// producers share syncs) until `duration` has passed; every call is timed.
///
/// # Panics
///
/// On any queue error.
pub fn queue_immediate(dir: &Path, producers: usize, duration: Duration) -> SyncRun {
    let scratch = Scratch::new(dir, "queue-immediate");
    let queue = Queue::new(
        durable_config(scratch.path(), SyncMode::Immediate),
        NullSink,
    )
    .expect("queue");
    queue.start().expect("start");
    let run = timed_threads(producers, duration, |i| {
        queue.enqueue(Item100::new(i)).expect("enqueue");
    });
    queue.stop().expect("stop");
    run
}

/// What [`sink_outage`] saw.
#[derive(Debug, Clone, Copy)]
pub struct OutageRun {
    /// Items enqueued.
    pub items: u64,
    /// Time to enqueue them.
    pub elapsed: Duration,
    /// Bytes of log on disk at the end.
    pub wal_bytes: u64,
    /// Sink calls made (all failed).
    pub sink_calls: u64,
}

/// A durable queue (`Periodic(100 ms)`, ring of 10 000, batches of 1 000, `retry_limit
/// u32::MAX`, backoff 1–10 ms) whose sink always fails with `SendError::retry`; one
/// producer enqueues `items` [`Item100`]s. Run it in a process of its own and read
/// [`peak_rss_kib`] afterwards: the log holds everything, memory must not.
///
/// # Panics
///
/// On any queue error.
pub fn sink_outage(dir: &Path, items: u64, wal_max_size: u64) -> OutageRun {
    let scratch = Scratch::new(dir, "outage");
    let calls = Arc::new(AtomicU64::new(0));
    let sink_calls = Arc::clone(&calls);
    let sink = move |_: &Batch<Item100>| -> Result<(), SendError> {
        sink_calls.fetch_add(1, Ordering::Relaxed);
        Err(SendError::retry("the sink is down"))
    };
    let config = Config::default()
        .wal_path(scratch.path())
        .sync_mode(SyncMode::Periodic(Duration::from_millis(100)))
        .memory_size(10_000)
        .batch_size(1_000)
        .retry_limit(u32::MAX)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(10))
        .shutdown_timeout(Duration::from_millis(100))
        .wal_max_size(wal_max_size);
    let queue = Queue::new(config, sink).expect("queue");
    queue.start().expect("start");
    let start = Instant::now();
    for i in 0..items {
        queue.enqueue(Item100::new(i)).expect("enqueue");
    }
    let elapsed = start.elapsed();
    let wal_bytes = queue.wal_size();
    // Stopping gives up on the undeliverable items after shutdown_timeout; they stay in
    // the log. Whatever it returns is not the point here.
    let _ = queue.stop();
    OutageRun {
        items,
        elapsed,
        wal_bytes,
        sink_calls: calls.load(Ordering::Relaxed),
    }
}

/// Peak resident set size of this process (`VmHWM` in `/proc/self/status`), KiB.
pub fn peak_rss_kib() -> Option<u64> {
    proc_status_kib("VmHWM:")
}

/// Current resident set size of this process (`VmRSS`), KiB.
pub fn rss_kib() -> Option<u64> {
    proc_status_kib("VmRSS:")
}

/// Current anonymous resident memory of this process (`RssAnon`: heap and stacks, not
/// the log's mapped file pages), KiB.
pub fn rss_anon_kib() -> Option<u64> {
    proc_status_kib("RssAnon:")
}

/// Current resident file-backed memory of this process (`RssFile`: among others the
/// pages of the log's memory-mapped segments), KiB.
pub fn rss_file_kib() -> Option<u64> {
    proc_status_kib("RssFile:")
}

/// One sample of [`with_rss_sampler`]: seconds since `f` started, `RssAnon` and
/// `RssFile` (KiB).
#[derive(Debug, Clone, Copy)]
pub struct RssSample {
    /// Seconds since the run started.
    pub secs: f64,
    /// Anonymous resident memory, KiB.
    pub anon_kib: u64,
    /// File-backed resident memory (the log's mapped pages among others), KiB.
    pub file_kib: u64,
}

/// Runs `f` while a thread samples [`rss_anon_kib`] and [`rss_file_kib`] every 5 ms;
/// returns `f`'s result and the samples.
pub fn with_rss_sampler<R>(f: impl FnOnce() -> R) -> (R, Vec<RssSample>) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut samples = Vec::new();
            loop {
                samples.push(RssSample {
                    secs: started.elapsed().as_secs_f64(),
                    anon_kib: rss_anon_kib().unwrap_or(0),
                    file_kib: rss_file_kib().unwrap_or(0),
                });
                if stop.load(Ordering::Relaxed) {
                    return samples;
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        let r = f();
        stop.store(true, Ordering::Relaxed);
        (r, sampler.join().expect("sampler panicked"))
    })
}

fn proc_status_kib(key: &str) -> Option<u64> {
    proc_kib("/proc/self/status", key)
}

fn proc_kib(file: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(file).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Lets the page cache settle before a measurement: writes every dirty page back
/// (`sync`) and waits, up to 10 s, until the kernel reports less than 4 MiB dirty or
/// under write-back. Without it each run pays for the write-back of the run before it,
/// which falls on whichever side of a comparison happens to come next.
pub fn settle() {
    let _ = std::process::Command::new("sync").status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let pending = proc_kib("/proc/meminfo", "Dirty:").unwrap_or(0)
            + proc_kib("/proc/meminfo", "Writeback:").unwrap_or(0);
        if pending < 4096 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item100_encodes_to_100_bytes() {
        let bytes = postcard::to_allocvec(&Item100::new(7)).expect("encode");
        assert_eq!(bytes.len(), RECORD_LEN);
        assert_eq!(&bytes[..], &payload(7)[..]);
    }

    #[test]
    fn tiny_round_trip() {
        let dir = std::env::temp_dir();
        let s = Scratch::new(&dir, "test");
        wal_prepare(s.path(), 300);
        let (n, _, _) = wal_read_back(s.path(), 128);
        assert_eq!(n, 300);
        let f = s.path().join("plain");
        buffered_write(&f, 300);
        assert_eq!(buffered_read(&f).0, 300);
    }
}
