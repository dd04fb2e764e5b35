//! Simulated power cuts and process crashes over random workloads: after any crash, every
//! synced record is recovered byte for byte and in order, and nothing that was never
//! appended appears. A failed sync puts the log in a failed state for good; a full disk
//! is a clean error.
//!
//! The same model also runs with injected faults between the cuts (failing syncs,
//! creates, renames, removals, checkpoint writes, torn checkpoint writes, write-backs that
//! drop their pages, reads that fail during a reopen): a fault may fail the log, never
//! lose what a successful sync covered or bring back what was never appended.
//!
//! `VQ_SIM_SEEDS` sets the number of seeded runs (1,000 by default; the long run in
//! docs/reliability.md uses 100,000).

mod support;

use std::collections::BTreeMap;
use std::io::ErrorKind;

use proptest::prelude::*;
use vinequeue_storage::{Error, Storage};
use vinequeue_wal::sim::{FaultOp, SimFs};
use vinequeue_wal::{SyncMode, Wal, WalOptions};

const DIR: &str = "/var/lib/app/wal";

fn opts() -> WalOptions {
    support::small_segments(SyncMode::Immediate)
}

#[derive(Debug, Clone)]
enum Op {
    Append(u16),
    Sync,
    Ack(u8),
    Reopen,
    PowerCut,
    ProcessCrash,
    /// Arms a fault (`FAULTS[kind % len]`) for the `n % 4 + 1`-th next matching call.
    Fault(u8, u8),
}

/// The faults the model injects; `Read` fails a reopen's recovery, which is then retried.
const FAULTS: [(FaultOp, ErrorKind); 10] = [
    (FaultOp::Sync, ErrorKind::Other),
    (FaultOp::SyncDir, ErrorKind::Other),
    (FaultOp::Create, ErrorKind::StorageFull),
    (FaultOp::Rename, ErrorKind::Other),
    (FaultOp::Remove, ErrorKind::Other),
    (FaultOp::WriteSmall, ErrorKind::StorageFull),
    (FaultOp::TornWrite, ErrorKind::Other),
    (FaultOp::WriteBack, ErrorKind::Other),
    (FaultOp::Read, ErrorKind::Other),
    (FaultOp::Sync, ErrorKind::StorageFull),
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0u16..3000).prop_map(Op::Append),
        3 => Just(Op::Sync),
        2 => any::<u8>().prop_map(Op::Ack),
        1 => Just(Op::Reopen),
        1 => Just(Op::PowerCut),
        1 => Just(Op::ProcessCrash),
    ]
}

fn op_or_fault() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => op(),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(k, n)| Op::Fault(k, n)),
    ]
}

fn body(seq: u64, len: u16) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (seq.wrapping_mul(31) + i) as u8)
        .collect()
}

/// The model: every record ever appended, what is known durable, what is acknowledged.
#[derive(Default)]
struct Model {
    appended: BTreeMap<u64, Vec<u8>>,
    /// Appends that failed (under a fault): each may have reached the disk or not.
    maybe: BTreeMap<u64, Vec<u8>>,
    /// Records covered by a successful sync (or that survived in the page cache).
    synced: std::collections::BTreeSet<u64>,
    /// Acknowledged and made durable by a successful `sync()` (checkpoint).
    acked_durable: u64,
    /// Acknowledged in memory.
    acked: u64,
}

fn check(wal: &Wal<SimFs>, m: &Model) -> Result<(), String> {
    let mut from = 1;
    let mut seen = Vec::new();
    loop {
        let mut batch = Vec::new();
        wal.read(from, 500, &mut |seq, b| {
            batch.push((seq, b.to_vec()));
            true
        })
        .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            break;
        }
        from = batch.last().unwrap().0 + 1;
        seen.extend(batch);
    }
    let mut last = 0;
    for (seq, bytes) in &seen {
        if *seq <= last {
            return Err(format!("record {seq} out of order after {last}"));
        }
        last = *seq;
        match m.appended.get(seq).or_else(|| m.maybe.get(seq)) {
            Some(b) if b == bytes => {}
            Some(_) => return Err(format!("record {seq} came back with other bytes")),
            None => return Err(format!("record {seq} was never appended")),
        }
    }
    let acked = wal.acked_through();
    if acked < m.acked_durable {
        return Err(format!(
            "durable ack {} went back to {acked}",
            m.acked_durable
        ));
    }
    for &seq in m.synced.range(acked + 1..) {
        if !seen.iter().any(|(s, _)| *s == seq) {
            return Err(format!("synced record {seq} lost (acked through {acked})"));
        }
    }
    if m.synced.last().is_some_and(|&last| wal.next_seq() <= last) {
        return Err("numbering went backwards over synced records".into());
    }
    Ok(())
}

fn run(seed: u64, ops: &[Op]) -> Result<(), String> {
    let mut fs = SimFs::new(seed);
    let mut wal = Some(Wal::open_with(fs.clone(), DIR, opts()).map_err(|e| e.to_string())?);
    let mut m = Model::default();
    // A fault was armed since the last reopen: the log may fail (its calls may return
    // errors), and what its page cache holds may have been thrown away by a failed
    // write-back, so only successful syncs count.
    let mut faulty = false;
    // What a call returned, where an error is allowed only once a fault was armed.
    let allowed = |faulty: bool, r: Result<(), Error>| -> Result<bool, String> {
        match r {
            Ok(()) => Ok(true),
            Err(_) if faulty => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    };
    let trace = std::env::var_os("VQ_SIM_TRACE").is_some();
    for op in ops {
        let w = wal.as_ref().unwrap();
        if trace {
            eprintln!(
                "{op:?}: next {} acked {} synced {:?}",
                w.next_seq(),
                w.acked_through(),
                m.synced.iter().rev().take(3).collect::<Vec<_>>()
            );
        }
        match op {
            Op::Append(len) => {
                let seq = w.next_seq();
                let b = body(seq, *len);
                match w.append(&b) {
                    Ok(got) if got != seq => {
                        return Err(format!("append got {got}, expected {seq}"));
                    }
                    Ok(_) => {
                        m.maybe.remove(&seq);
                        m.appended.insert(seq, b);
                    }
                    Err(_) if faulty => {
                        // It may have reached the disk all the same.
                        m.maybe.insert(seq, b);
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            Op::Sync => {
                if allowed(faulty, w.sync())? {
                    m.synced.extend(m.appended.keys().copied());
                    m.acked_durable = m.acked;
                }
            }
            Op::Ack(k) => {
                let upto = (m.acked + 1 + *k as u64 % 20).min(w.next_seq() - 1);
                let mut all = true;
                for s in (m.acked + 1)..=upto {
                    if !allowed(faulty, w.ack(s))? {
                        all = false;
                        break;
                    }
                }
                if all {
                    m.acked = m.acked.max(upto);
                }
                m.acked = m.acked.max(w.acked_through());
            }
            Op::Fault(kind, n) => {
                let (op, kind) = FAULTS[*kind as usize % FAULTS.len()];
                fs.fail_nth(op, u64::from(*n % 4) + 1, kind);
                faulty = true;
            }
            Op::Reopen | Op::PowerCut | Op::ProcessCrash => {
                let w = wal.take().unwrap();
                fs = match op {
                    Op::Reopen => {
                        // A clean close syncs everything, unless a fault failed the log.
                        drop(w);
                        if !faulty {
                            m.synced.extend(m.appended.keys().copied());
                            m.acked_durable = m.acked;
                        }
                        fs.fork()
                    }
                    Op::PowerCut => {
                        let next = fs.power_cut();
                        drop(w); // its destructor sees only stale handles
                        next
                    }
                    _ => {
                        let next = fs.process_crash();
                        drop(w);
                        if !faulty {
                            // the page cache survives: everything appended is there
                            m.synced.extend(m.appended.keys().copied());
                        }
                        next
                    }
                };
                let w = match Wal::open_with(fs.clone(), DIR, opts()) {
                    Ok(w) => w,
                    Err(e) if faulty => {
                        // A fault still armed failed the recovery (a read, a sync, the
                        // checkpoint): the next open, without it, must recover.
                        fs.clear_faults();
                        Wal::open_with(fs.clone(), DIR, opts())
                            .map_err(|e2| format!("reopen after {e}: {e2}"))?
                    }
                    Err(e) => return Err(format!("reopen: {e}")),
                };
                fs.clear_faults();
                faulty = false;
                check(&w, &m)?;
                // Records not recovered are gone for good; forget them.
                let next = w.next_seq();
                m.appended.retain(|&s, _| s < next);
                let present: Vec<u64> = {
                    let mut v = Vec::new();
                    w.read(1, usize::MAX, &mut |s, _| {
                        v.push(s);
                        true
                    })
                    .unwrap();
                    v
                };
                m.appended
                    .retain(|s, _| present.contains(s) || *s <= w.acked_through());
                // A failed append that came back is a record like any other.
                for (s, b) in std::mem::take(&mut m.maybe) {
                    if present.contains(&s) {
                        m.appended.insert(s, b);
                    }
                }
                m.acked = w.acked_through();
                m.acked_durable = m.acked;
                m.synced.retain(|s| m.appended.contains_key(s));
                wal = Some(w);
            }
        }
    }
    Ok(())
}

fn seeded_ops(seed: u64, with_faults: bool) -> Vec<Op> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..40)
        .map(|_| match next() % if with_faults { 20 } else { 18 } {
            0..=9 => Op::Append((next() % 3000) as u16),
            10..=12 => Op::Sync,
            13 | 14 => Op::Ack(next() as u8),
            15 => Op::Reopen,
            16 => Op::PowerCut,
            17 => Op::ProcessCrash,
            _ => Op::Fault(next() as u8, next() as u8),
        })
        .collect()
}

fn seeds() -> u64 {
    support::seeds(1_000)
}

#[test]
fn power_cuts_over_many_seeds_never_lose_synced_records() {
    for seed in 0..seeds() {
        let ops = seeded_ops(seed, false);
        if let Err(e) = run(seed, &ops) {
            panic!("seed {seed}: {e}\nops: {ops:?}");
        }
    }
}

#[test]
fn faults_and_power_cuts_together_never_lose_synced_records() {
    for seed in 0..seeds() {
        let ops = seeded_ops(seed, true);
        if let Err(e) = run(seed, &ops) {
            panic!("seed {seed}: {e}\nops: {ops:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_append_sync_ack_reopen_crash_sequences_match_the_model(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        if let Err(e) = run(seed, &ops) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn the_same_with_faults_between_the_cuts(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op_or_fault(), 1..60),
    ) {
        if let Err(e) = run(seed, &ops) {
            prop_assert!(false, "{}", e);
        }
    }
}

#[test]
fn a_failed_sync_fails_the_log_for_good_even_if_later_syncs_would_succeed() {
    let fs = SimFs::new(9);
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let seq = wal.append(b"one").unwrap();
    fs.fail_nth(FaultOp::Sync, 1, ErrorKind::Other);
    let err = wal.sync_through(seq).unwrap_err();
    assert!(matches!(err, Error::LogFailed(_)), "{err}");
    assert!(wal.is_failed());
    // The simulated kernel would now report success with the data gone (fsyncgate);
    // the log must not take that bait.
    assert!(matches!(wal.sync(), Err(Error::LogFailed(_))));
    assert!(matches!(wal.append(b"two"), Err(Error::LogFailed(_))));
    assert!(matches!(wal.sync_through(seq), Err(Error::LogFailed(_))));
    let msg = wal.append(b"three").unwrap_err().to_string();
    assert!(msg.contains("injected Sync failure"), "{msg}");
    drop(wal);
    // Reopening recovers what did reach the disk and works again.
    let wal = Wal::open_with(fs.process_crash(), DIR, opts()).unwrap();
    let s = wal.append(b"after reopen").unwrap();
    wal.sync_through(s).unwrap();
}

#[test]
fn concurrent_sync_through_callers_share_syncs() {
    let fs = SimFs::new(11);
    let wal = std::sync::Arc::new(Wal::open_with(fs.clone(), DIR, opts()).unwrap());
    let before = fs.sync_count();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let wal = std::sync::Arc::clone(&wal);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let s = wal.append(&[7; 100]).unwrap();
                    wal.sync_through(s).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let syncs = fs.sync_count() - before;
    assert!(
        (1..=1600).contains(&syncs),
        "one sync per record at most, and some: {syncs}"
    );
    assert_eq!(wal.next_seq(), 1601);
    // Every `sync_through` returned: every record survives a power cut.
    let fs = fs.power_cut();
    drop(wal);
    let wal = Wal::open_with(fs, DIR, opts()).unwrap();
    assert_eq!(wal.recovery().records, 1600);
}

#[test]
fn a_full_disk_is_a_clean_error_and_the_log_works_once_space_is_freed() {
    let fs = SimFs::new(13);
    // Room for four 64 KiB segments plus the checkpoint.
    fs.set_capacity(Some(4 * 64 * 1024 + 100));
    let wal = Wal::open_with(fs.clone(), DIR, opts()).unwrap();
    let rec = vec![9u8; 4000];
    let mut last = 0;
    let err = loop {
        match wal.append(&rec) {
            Ok(s) => last = s,
            Err(e) => break e,
        }
    };
    match &err {
        Error::Io(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}"),
        other => panic!("expected ENOSPC, got {other}"),
    }
    assert!(!wal.is_failed(), "a full disk is not a failed log");
    wal.sync().unwrap();
    // everything appended is intact
    let mut n = 0;
    wal.read(1, usize::MAX, &mut |_, b| {
        assert_eq!(b, &rec[..]);
        n += 1;
        true
    })
    .unwrap();
    assert_eq!(n, last);
    // deliver (acknowledge) the old records: their segments go, appends work again
    for s in 1..=last {
        wal.ack(s).unwrap();
    }
    wal.append(&rec).unwrap();
}

#[test]
fn wal_max_size_is_reported_as_full() {
    let fs = SimFs::new(17);
    let wal = Wal::open_with(
        fs,
        DIR,
        WalOptions::default()
            .segment_size(64 * 1024)
            .max_size(4 * 64 * 1024)
            .sync_mode(SyncMode::Os),
    )
    .unwrap();
    let err = loop {
        if let Err(e) = wal.append(&[1; 1000]) {
            break e;
        }
    };
    assert!(matches!(err, Error::LogFull { .. }), "{err}");
    // The limit counts every file of the log, the checkpoint included.
    assert!(wal.size() <= 4 * 64 * 1024, "{} bytes", wal.size());
}
