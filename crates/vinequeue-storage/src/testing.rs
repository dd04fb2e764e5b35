//! A conformance suite for [`Storage`] implementations (feature `testing`).
//!
//! Call [`storage_conformance`] from a test of your own backend with a
//! [`StorageHarness`] that creates (and, for persistent backends, reopens) instances;
//! every check panics with a message naming the broken rule.
//!
//! ```
//! use vinequeue_storage::testing::{storage_conformance, StorageHarness};
//! use vinequeue_storage::MemStorage;
//!
//! struct Mem;
//! impl StorageHarness for Mem {
//!     type Storage = MemStorage;
//!     fn create(&mut self) -> MemStorage { MemStorage::default() }
//!     fn reopen(&mut self) -> Option<MemStorage> { None } // nothing persists
//! }
//! storage_conformance(&mut Mem);
//! ```

use std::sync::Arc;

use crate::storage::Storage;

/// Creates the instances the conformance suite runs against.
pub trait StorageHarness {
    /// The storage under test.
    type Storage: Storage;

    /// A new, empty storage (each call a fresh one, independent of the others).
    fn create(&mut self) -> Self::Storage;

    /// Reopens the storage most recently created or reopened, after the suite dropped it,
    /// over the same persistent data. `None` for a storage that does not persist; the
    /// persistence checks are then skipped.
    fn reopen(&mut self) -> Option<Self::Storage>;

    /// Cuts the power under `storage` (what was not synced may be lost, in part or in
    /// whole) and reopens it over what survived. `None` (the default) for a harness
    /// that cannot simulate that; the power-loss checks are then skipped.
    fn power_cut(&mut self, storage: Self::Storage) -> Option<Self::Storage> {
        drop(storage);
        None
    }
}

fn read_all<S: Storage + ?Sized>(s: &S, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let before = out.len();
        s.read(next, 1000, &mut |seq, bytes| {
            out.push((seq, bytes.to_vec()));
            true
        })
        .expect("read failed");
        if out.len() == before {
            return out;
        }
        next = out.last().unwrap().0 + 1;
    }
}

fn payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 300) as usize;
    (0..len).map(|j| (i as usize + j) as u8).collect()
}

/// Runs every check of the [`Storage`] contract against instances from `harness`.
///
/// # Panics
///
/// On the first violation, with a message naming the rule.
pub fn storage_conformance<H: StorageHarness>(harness: &mut H) {
    appends_are_numbered_from_one_and_read_back_identically(harness);
    reads_honour_from_max_and_early_stop(harness);
    empty_and_large_records_round_trip(harness);
    acks_in_any_order_advance_a_contiguous_low_water_mark(harness);
    sync_and_sync_through_succeed(harness);
    concurrent_appends_get_unique_dense_numbers(harness);
    a_visitor_may_call_back_into_the_storage(harness);
    keys_round_trip_where_kept(harness);
    if harness.reopen().is_some() {
        keys_and_the_identity_survive_reopen(harness);
        synced_records_and_acks_survive_reopen(harness);
        numbering_continues_after_everything_was_acknowledged(harness);
        acking_the_newest_record_first_does_not_free_its_number(harness);
    }
    numbers_are_never_handed_out_twice_across_power_cuts(harness);
}

/// What `read_keyed` hands back for records appended with and without a key.
fn keyed_contents(s: &dyn Storage) -> Vec<(u64, Option<u64>, Vec<u8>)> {
    let mut out = Vec::new();
    s.read_keyed(1, usize::MAX, &mut |seq, key, bytes| {
        out.push((seq, key, bytes.to_vec()));
        true
    })
    .unwrap();
    out
}

/// A storage that keeps keys hands each keyed record back with its key (and the others
/// with none); one that does not keeps the record and drops the key. Either way
/// `append_keyed` numbers records like `append`, and `read` hands the record alone.
fn keys_round_trip_where_kept<H: StorageHarness>(h: &mut H) {
    let s = h.create();
    assert_eq!(s.append(b"plain").unwrap(), 1);
    assert_eq!(
        s.append_keyed(b"redriven", 77).unwrap(),
        2,
        "append_keyed numbers on"
    );
    let got = keyed_contents(&s);
    let key = if s.keeps_keys() { Some(77) } else { None };
    assert_eq!(
        got,
        vec![(1, None, b"plain".to_vec()), (2, key, b"redriven".to_vec())],
        "read_keyed hands back each record with its key (keeps_keys: {})",
        s.keeps_keys()
    );
    let plain = read_all(&s, 2);
    assert_eq!(
        plain,
        vec![(2, b"redriven".to_vec())],
        "read hands the record alone"
    );
}

/// Keys and the queue identity are kept with the data across a reopen.
fn keys_and_the_identity_survive_reopen<H: StorageHarness>(h: &mut H) {
    let s = h.create();
    let id = s.queue_id();
    s.append_keyed(b"kept", 5).unwrap();
    s.sync().unwrap();
    let before = keyed_contents(&s);
    drop(s);
    let s = h.reopen().expect("reopen");
    assert_eq!(keyed_contents(&s), before, "keys across a reopen");
    assert_eq!(s.queue_id(), id, "the queue identity across a reopen");
}

/// Records read (as a sink would see them) before a power cut, some never synced: no
/// number may name another record after the cut, and every new number lies above every
/// number handed out before.
fn numbers_are_never_handed_out_twice_across_power_cuts<H: StorageHarness>(h: &mut H) {
    let mut s = h.create();
    // (seq -> bytes) of every record a reader saw.
    let mut seen = std::collections::BTreeMap::<u64, Vec<u8>>::new();
    // (seq -> bytes) of every record synced: each must come back after every cut.
    let mut synced = std::collections::BTreeMap::<u64, Vec<u8>>::new();
    let mut highest = 0;
    for round in 0..4u64 {
        let base = round * 1000;
        let mut this_round = Vec::new();
        for i in 0..50 {
            let bytes = payload(base + i);
            let seq = s.append(&bytes).unwrap();
            assert!(
                seq > highest,
                "round {round}: number {seq} handed out again (numbers up to {highest} were used)"
            );
            highest = seq;
            this_round.push((seq, bytes));
            if i == 20 {
                s.sync().unwrap();
                synced.extend(this_round.drain(..));
            }
        }
        for (seq, bytes) in read_all(&s, 1) {
            if let Some(earlier) = seen.insert(seq, bytes.clone()) {
                assert_eq!(
                    earlier, bytes,
                    "number {seq} names two different records across a power cut"
                );
            }
        }
        s = match h.power_cut(s) {
            Some(s) => s,
            None => return,
        };
        assert!(
            s.next_seq() > highest,
            "after a power cut numbering restarts at {} though {highest} was handed out",
            s.next_seq()
        );
        // Nothing is acknowledged: every synced record of every round is still there.
        let after: std::collections::BTreeMap<u64, Vec<u8>> = read_all(&s, 1).into_iter().collect();
        for (seq, bytes) in &synced {
            assert_eq!(
                after.get(seq),
                Some(bytes),
                "round {round}: synced record {seq} lost or changed by a power cut"
            );
        }
    }
}

fn appends_are_numbered_from_one_and_read_back_identically<H: StorageHarness>(h: &mut H) {
    let s = h.create();
    assert_eq!(s.next_seq(), 1, "a new storage starts numbering at 1");
    assert_eq!(
        s.acked_through(),
        0,
        "a new storage has nothing acknowledged"
    );
    for i in 0..500u64 {
        let seq = s.append(&payload(i)).expect("append failed");
        assert_eq!(seq, i + 1, "sequence numbers must be consecutive");
    }
    assert_eq!(s.next_seq(), 501);
    let all = read_all(&s, 1);
    assert_eq!(all.len(), 500, "every appended record must be readable");
    for (i, (seq, bytes)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(
            bytes,
            &payload(i as u64),
            "record {seq} changed between append and read"
        );
    }
}

fn reads_honour_from_max_and_early_stop<H: StorageHarness>(h: &mut H) {
    let s = h.create();
    for i in 0..100u64 {
        s.append(&payload(i)).unwrap();
    }
    let mut seen = Vec::new();
    let n = s
        .read(40, 10, &mut |seq, _| {
            seen.push(seq);
            true
        })
        .unwrap();
    assert_eq!(n, 10, "read must visit at most max records");
    assert_eq!(
        seen,
        (40..50).collect::<Vec<_>>(),
        "read must start at `from`"
    );
    seen.clear();
    let n = s
        .read(1, 100, &mut |seq, _| {
            seen.push(seq);
            seq < 3
        })
        .unwrap();
    assert_eq!(
        (n, seen.len()),
        (3, 3),
        "read must stop when the visitor says so"
    );
    let n = s.read(101, 10, &mut |_, _| true).unwrap();
    assert_eq!(n, 0, "reading past the end visits nothing");
}

fn empty_and_large_records_round_trip<H: StorageHarness>(h: &mut H) {
    let s = h.create();
    let big: Vec<u8> = (0..32 * 1024).map(|i| (i % 251) as u8).collect();
    s.append(&[]).unwrap();
    s.append(&big).unwrap();
    s.append(&[7]).unwrap();
    let all = read_all(&s, 1);
    assert_eq!(all.len(), 3);
    assert!(all[0].1.is_empty(), "an empty record must read back empty");
    assert_eq!(all[1].1, big, "a 32 KiB record must round-trip");
    assert_eq!(all[2].1, vec![7]);
}

fn acks_in_any_order_advance_a_contiguous_low_water_mark<H: StorageHarness>(h: &mut H) {
    let s = h.create();
    for i in 0..10u64 {
        s.append(&payload(i)).unwrap();
    }
    s.ack(3).unwrap();
    s.ack(2).unwrap();
    assert_eq!(
        s.acked_through(),
        0,
        "acks above a gap must not move the mark"
    );
    let counted = s.acked_within(1, 10);
    assert!(
        counted <= 2,
        "acked_within counts acknowledged numbers only: {counted} of 2"
    );
    s.ack(1).unwrap();
    assert_eq!(
        s.acked_through(),
        3,
        "filling the gap moves the mark over all acked"
    );
    s.ack_all(&[5, 6, 4]).unwrap();
    assert_eq!(s.acked_through(), 6);
    assert_eq!(s.acked_within(1, 10), 6, "up to the mark");
    assert_eq!(s.acked_within(5, 9), 2, "from inside the acknowledged");
    assert_eq!(s.acked_within(7, 10), 0, "above the mark");
    assert_eq!(s.acked_within(9, 8), 0, "an empty range");
    s.ack(6).unwrap();
    s.ack(1).unwrap();
    assert_eq!(s.acked_through(), 6, "acking twice is a no-op");
    let rest: Vec<u64> = read_all(&s, s.acked_through() + 1)
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        rest,
        vec![7, 8, 9, 10],
        "unacknowledged records stay readable"
    );
}

fn sync_and_sync_through_succeed<H: StorageHarness>(h: &mut H) {
    let s = h.create();
    let seq = s.append(b"x").unwrap();
    s.sync_through(seq).expect("sync_through failed");
    s.sync().expect("sync failed");
    s.sync().expect("a second sync failed");
}

fn concurrent_appends_get_unique_dense_numbers<H: StorageHarness>(h: &mut H) {
    let s = Arc::new(h.create());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                (0..250u64)
                    .map(|i| {
                        let body = (t * 1000 + i).to_le_bytes();
                        (s.append(&body).unwrap(), t * 1000 + i)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut pairs: Vec<(u64, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    pairs.sort_unstable();
    let seqs: Vec<u64> = pairs.iter().map(|p| p.0).collect();
    assert_eq!(
        seqs,
        (1..=1000).collect::<Vec<_>>(),
        "concurrent appends need unique, dense numbers"
    );
    for (seq, bytes) in read_all(&*s, 1) {
        let value = u64::from_le_bytes(bytes.try_into().expect("record length changed"));
        let want = pairs[(seq - 1) as usize].1;
        assert_eq!(value, want, "record {seq} holds another append's bytes");
    }
}

fn a_visitor_may_call_back_into_the_storage<H: StorageHarness>(h: &mut H) {
    let s = h.create();
    for i in 0..20u64 {
        s.append(&payload(i)).unwrap();
    }
    let mut seen = 0;
    s.read(1, 20, &mut |seq, _| {
        // Acknowledging (and appending) from inside a visitor must not deadlock.
        s.ack(seq).expect("ack inside a visitor");
        if seq == 1 {
            s.append(b"from inside").expect("append inside a visitor");
        }
        seen += 1;
        true
    })
    .unwrap();
    assert_eq!(seen, 20);
    assert_eq!(s.acked_through(), 20);
}

fn acking_the_newest_record_first_does_not_free_its_number<H: StorageHarness>(h: &mut H) {
    let s = h.create();
    for i in 0..10u64 {
        s.append(&payload(i)).unwrap();
    }
    s.ack(10).unwrap();
    s.sync().unwrap();
    drop(s);
    let s = h.reopen().expect("reopen failed");
    assert_eq!(
        s.append(b"x").unwrap(),
        11,
        "record 10 existed: its number is taken"
    );
}

fn synced_records_and_acks_survive_reopen<H: StorageHarness>(h: &mut H) {
    let s = h.create();
    for i in 0..300u64 {
        s.append(&payload(i)).unwrap();
    }
    for seq in 1..=100 {
        s.ack(seq).unwrap();
    }
    s.sync().unwrap();
    drop(s);
    let s = h.reopen().expect("reopen failed");
    assert_eq!(
        s.acked_through(),
        100,
        "a synced acknowledgement must survive reopen, and nothing more be acknowledged"
    );
    assert_eq!(s.next_seq(), 301, "numbering must continue after reopen");
    let all = read_all(&s, s.acked_through() + 1);
    assert_eq!(all.len() as u64, 300 - s.acked_through());
    for (seq, bytes) in all {
        assert_eq!(
            bytes,
            payload(seq - 1),
            "record {seq} changed across reopen"
        );
    }
    let report = s.recovery();
    assert_eq!(report.next_seq, 301);
    assert_eq!(report.records, 300 - s.acked_through());
    let seq = s.append(b"after").unwrap();
    assert_eq!(seq, 301);
}

fn numbering_continues_after_everything_was_acknowledged<H: StorageHarness>(h: &mut H) {
    let s = h.create();
    for i in 0..50u64 {
        s.append(&payload(i)).unwrap();
    }
    for seq in 1..=50 {
        s.ack(seq).unwrap();
    }
    s.sync().unwrap();
    drop(s);
    let s = h.reopen().expect("reopen failed");
    assert_eq!(s.acked_through(), 50);
    assert_eq!(
        s.append(b"next").unwrap(),
        51,
        "numbers must never be reused"
    );
    assert_eq!(
        read_all(&s, 1).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![51]
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStorage;

    struct Mem;
    impl StorageHarness for Mem {
        type Storage = MemStorage;
        fn create(&mut self) -> MemStorage {
            MemStorage::default()
        }
        fn reopen(&mut self) -> Option<MemStorage> {
            None
        }
    }

    #[test]
    fn mem_storage_passes_the_suite() {
        storage_conformance(&mut Mem);
    }

    #[test]
    fn mem_storage_reports_full() {
        let s = MemStorage::new(10);
        s.append(&[0; 8]).unwrap();
        assert!(matches!(
            s.append(&[0; 3]),
            Err(crate::Error::LogFull { .. })
        ));
        s.ack(1).unwrap();
        s.append(&[0; 3]).unwrap();
    }
}
