//! The `recovery` checks: genuine logs, the images inputs build from them, and what
//! recovery must make of each.

use super::*;

/// Where the fuzzed log lives on the simulated file system.
pub const DIR: &str = "/fuzz/wal";

/// File names an input can create: the valid segment names 1..=9, the checkpoint, and
/// stray or borderline names.
pub const NAMES: &[&str] = &[
    "00000000000000000001.seg",
    "00000000000000000002.seg",
    "00000000000000000003.seg",
    "00000000000000000004.seg",
    "00000000000000000005.seg",
    "00000000000000000006.seg",
    "00000000000000000007.seg",
    "00000000000000000008.seg",
    "00000000000000000009.seg",
    "checkpoint",
    "notes.txt",
    "checkpoint.tmp",
    "00000000000000000000.seg",
    "123.seg",
    "00000000000000000022.seg",
    "18446744073709551614.seg",
    "18446744073709551615.seg",
    "LOCK",
    "damaged",
];

/// The genuine logs an input can start from (`base - 1`).
pub const GENUINE_LOGS: &[&str] = &[
    "5 records, one opening",
    "6 + 4 records in two openings (a sealed and a newest segment)",
    "10 records, 1..=4 acknowledged",
    "60 records of 3000 bytes over 3 segments, 1..=25 acknowledged (the first reclaimed)",
    "4 synced + 4 unsynced records of 300 bytes, then a power cut tearing record 5",
    "opened and closed, no record",
    "records of 0, 1, 15, 16, 17, 4095, 4096 and 20000 bytes",
    "3 records all acknowledged, then 2 more in a second opening",
];

/// A directory image: file name -> contents.
pub type Image = BTreeMap<String, Vec<u8>>;

/// Options of every fuzzed open. `Immediate` keeps the background sync thread out of it.
pub fn fuzz_options(mode: RecoveryMode) -> WalOptions {
    WalOptions::default()
        .segment_size(64 * 1024)
        .max_size(1 << 30)
        .sync_mode(SyncMode::Immediate)
        .recovery_mode(mode)
        // Deletions inside the acknowledging call: the images must be the same bytes
        // every time they are written.
        .reclaim(Reclaim::Inline)
}

/// Payload of record `i` in the genuine logs.
pub fn genuine_payload(i: u64) -> Vec<u8> {
    format!("record {i:05} ")
        .repeat(1 + (i % 3) as usize)
        .into_bytes()
}

pub fn must<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("building a genuine log: {what}: {e:?}"))
}

pub fn open_clean(fs: &SimFs) -> Wal<SimFs> {
    must(
        Wal::open_with(fs.clone(), DIR, fuzz_options(RecoveryMode::Strict)),
        "open",
    )
}

/// Appends the genuine records `seqs`; every fourth carries a source position (its
/// number), so that positioned frames are among those the fuzzer damages.
pub fn append_all(wal: &Wal<SimFs>, seqs: impl IntoIterator<Item = u64>) {
    for i in seqs {
        let seq = if i % 4 == 0 {
            wal.append_positioned(&genuine_payload(i), &i.to_le_bytes())
        } else {
            wal.append(&genuine_payload(i))
        };
        assert_eq!(must(seq, "append"), i);
    }
}

/// Writes genuine log number `which` with `Wal` and returns its directory image.
pub fn write_genuine(which: usize) -> Image {
    let fs = SimFs::new(which as u64 + 1);
    let fs = match which {
        0 => {
            let wal = open_clean(&fs);
            append_all(&wal, 1..=5);
            must(wal.sync(), "sync");
            fs
        }
        1 => {
            let wal = open_clean(&fs);
            append_all(&wal, 1..=6);
            must(wal.sync(), "sync");
            drop(wal);
            let wal = open_clean(&fs);
            append_all(&wal, 7..=10);
            must(wal.sync(), "sync");
            fs
        }
        2 => {
            let wal = open_clean(&fs);
            append_all(&wal, 1..=10);
            for s in 1..=4 {
                must(wal.ack(s), "ack");
            }
            must(wal.sync(), "sync");
            fs
        }
        3 => {
            let wal = open_clean(&fs);
            let big = vec![0xB7u8; 3000];
            for i in 1..=60 {
                assert_eq!(must(wal.append(&big), "append"), i);
            }
            must(wal.ack_all(&(1..=25).collect::<Vec<_>>()), "ack");
            must(wal.sync(), "sync");
            fs
        }
        4 => {
            // Seed 25 is one whose power cut tears record 5 (the rest of its page lost).
            let fs = SimFs::new(25);
            let wal = open_clean(&fs);
            append_all(&wal, 1..=4);
            must(wal.sync(), "sync");
            for i in 5..=8 {
                assert_eq!(must(wal.append(&[0x3C; 300]), "append"), i);
            }
            let after = fs.power_cut();
            drop(wal);
            after
        }
        5 => {
            drop(open_clean(&fs));
            fs
        }
        6 => {
            let wal = open_clean(&fs);
            for (i, len) in [0usize, 1, 15, 16, 17, 4095, 4096, 20000]
                .iter()
                .enumerate()
            {
                let rec: Vec<u8> = (0..*len).map(|k| (k * 31 + i) as u8).collect();
                assert_eq!(must(wal.append(&rec), "append"), i as u64 + 1);
            }
            must(wal.sync(), "sync");
            fs
        }
        _ => {
            let wal = open_clean(&fs);
            append_all(&wal, 1..=3);
            must(wal.ack_all(&[1, 2, 3]), "ack");
            must(wal.sync(), "sync");
            drop(wal);
            let wal = open_clean(&fs);
            append_all(&wal, 4..=5);
            must(wal.sync(), "sync");
            fs
        }
    };
    // Every `Wal` is closed (or was cut off) by now; a fresh handle on what is left.
    let fs = fs.process_crash();
    let mut image = Image::new();
    for (path, bytes) in fs.files() {
        if path.parent() == Some(Path::new(DIR)) {
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            // (The queue's identity is random: not part of an image, which must be
            // the same bytes every time. An open without one makes one.)
            if name != "queue-id" {
                image.insert(name, bytes);
            }
        }
    }
    normalise_salts(&mut image);
    image
}

/// Replaces each segment's random salt with one derived from its first sequence number and
/// reseals its valid frames, so that a genuine log is the same bytes on every run.
pub fn normalise_salts(image: &mut Image) {
    for (name, bytes) in image.iter_mut() {
        if parse_segment_name(name).is_none() {
            continue;
        }
        let Ok(h) = SegmentHeader::decode(bytes) else {
            continue;
        };
        let salt = 0x5A17_0000_0000_0000 ^ h.first_seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut pos = SEGMENT_HEADER_LEN;
        let max = u32::MAX;
        while pos < bytes.len() {
            match decode_frame(&bytes[pos..], h.salt, max) {
                Frame::Record { seq, len, .. } => {
                    let body = pos + FRAME_HEADER_LEN;
                    let crc = crc32c_of(&bytes[body..body + len as usize]);
                    bytes[pos..body].copy_from_slice(&frame_header(crc, salt, seq, len));
                    pos = body + len as usize;
                }
                Frame::End => break,
                Frame::Bad(_) => {
                    // A torn frame keeps a checksum made with the random salt: replace it
                    // with one that is wrong for the new salt in a fixed way.
                    let body = pos + FRAME_HEADER_LEN;
                    if body <= bytes.len() {
                        let (len, seq) = (u32_at(bytes, pos), u64_at(bytes, pos + 8));
                        let end = body.saturating_add(len as usize).min(bytes.len());
                        let crc = crc32c_of(&bytes[body..end]);
                        let wrong = !u32_at(&frame_header(crc, salt, seq, len), 4);
                        bytes[pos + 4..pos + 8].copy_from_slice(&wrong.to_le_bytes());
                    }
                    break;
                }
            }
        }
        let header = SegmentHeader {
            first_seq: h.first_seq,
            salt,
        }
        .encode();
        bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&header);
    }
}

/// Genuine log number `which` (modulo their number), built once per process.
pub fn genuine_log(which: usize) -> &'static Image {
    static LOGS: OnceLock<Vec<Image>> = OnceLock::new();
    let logs = LOGS.get_or_init(|| (0..GENUINE_LOGS.len()).map(write_genuine).collect());
    &logs[which % logs.len()]
}

pub fn pick_file(image: &Image, index: u8) -> Option<String> {
    if image.is_empty() {
        return None;
    }
    image.keys().nth(index as usize % image.len()).cloned()
}

pub fn pick_name(index: u8) -> String {
    NAMES[index as usize % NAMES.len()].to_owned()
}

/// Parses a `recovery` input into a directory image (see the module docs).
pub fn build_image(data: &[u8]) -> Image {
    let mut input = Input::new(data);
    let base = input.u8() as usize % (GENUINE_LOGS.len() + 1);
    let fix = input.u8();
    let mut image = if base == 0 {
        Image::new()
    } else {
        genuine_log(base - 1).clone()
    };
    while !input.is_empty() {
        match input.u8() % 6 {
            0 => {
                let (file, offset, value) = (input.u8(), input.u16(), input.u8());
                if let Some(bytes) = pick_file(&image, file).and_then(|f| image.get_mut(&f)) {
                    if !bytes.is_empty() {
                        let at = offset as usize % bytes.len();
                        bytes[at] ^= value;
                    }
                }
            }
            1 => {
                let (file, offset, n) = (input.u8(), input.u16(), input.u8());
                let patch = input.bytes(n as usize);
                if let Some(bytes) = pick_file(&image, file).and_then(|f| image.get_mut(&f)) {
                    if !bytes.is_empty() {
                        let at = offset as usize % bytes.len();
                        let n = patch.len().min(bytes.len() - at);
                        bytes[at..at + n].copy_from_slice(&patch[..n]);
                    }
                }
            }
            2 => {
                let (file, len) = (input.u8(), input.u16());
                if let Some(bytes) = pick_file(&image, file).and_then(|f| image.get_mut(&f)) {
                    let keep = len as usize % (bytes.len() + 1);
                    bytes.truncate(keep);
                }
            }
            3 => {
                let (name, len) = (input.u8(), input.u16());
                let contents = input.bytes(len as usize).to_vec();
                image.insert(pick_name(name), contents);
            }
            4 => {
                if let Some(f) = pick_file(&image, input.u8()) {
                    image.remove(&f);
                }
            }
            _ => {
                let (file, name) = (input.u8(), input.u8());
                if let Some(f) = pick_file(&image, file) {
                    let bytes = image[&f].clone();
                    image.insert(pick_name(name), bytes);
                }
            }
        }
    }
    for (name, bytes) in image.iter_mut() {
        let is_segment = name.ends_with(".seg");
        if fix & 1 != 0 && is_segment && bytes.len() >= SEGMENT_HEADER_LEN {
            let salt = u64_at(bytes, 24);
            reseal_frames(bytes, SEGMENT_HEADER_LEN, salt);
        }
        if fix & 2 != 0 && is_segment {
            reseal_segment_header(bytes);
        }
        if fix & 4 != 0 && name == "checkpoint" {
            reseal_checkpoint(bytes);
        }
    }
    image
}

/// Serialises ops that rebuild `image` from an empty directory (for seeds).
pub fn encode_image_input(image: &Image, fix: u8) -> Vec<u8> {
    let mut out = vec![0, fix];
    for (name, bytes) in image {
        let index = NAMES
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} is not in NAMES"));
        assert!(
            bytes.len() <= u16::MAX as usize,
            "{name} is too long for one op"
        );
        out.push(3);
        out.push(index as u8);
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// A `recovery` input: genuine log `which`, then `ops` (already encoded), then `fix`.
pub fn encode_genuine_input(which: usize, fix: u8, ops: &[u8]) -> Vec<u8> {
    let mut out = vec![which as u8 + 1, fix];
    out.extend_from_slice(ops);
    out
}

/// The highest sequence number held by an intact frame in a segment-named file: frames
/// walked from offset 40 under the salt in the file's header bytes (whatever the state of
/// the header's magic, version or checksum), numbered consecutively from the name's number.
/// Files with an all-zero header (a segment whose creation was cut short) hold nothing.
pub fn highest_seq_held(image: &Image) -> Option<u64> {
    let max_record = fuzz_options(RecoveryMode::SkipCorrupt).effective_max_record_size();
    let mut highest = None;
    for (name, bytes) in image {
        let Some(first) = parse_segment_name(name) else {
            continue;
        };
        // Frames count as held only under a header that checks out: a header failing
        // its own checksum says nothing of the salt its frames were sealed with (recovery
        // cuts such a newest segment off, and a genuine log reserves its numbers in the
        // checkpoint before any frame holds them).
        let salt = match SegmentHeader::decode(bytes) {
            Ok(h) if h.first_seq == first => h.salt,
            _ => continue,
        };
        let (mut pos, mut expect) = (SEGMENT_HEADER_LEN, first);
        while pos < bytes.len() {
            match decode_frame(&bytes[pos..], salt, max_record) {
                Frame::Record { seq, len, .. } if seq == expect => {
                    highest = highest.max(Some(seq));
                    pos += FRAME_HEADER_LEN + len as usize;
                    let Some(next) = expect.checked_add(1) else {
                        break;
                    };
                    expect = next;
                }
                _ => break,
            }
        }
    }
    highest
}

/// What reading a whole log gave.
pub struct ReadAll {
    records: Vec<(u64, Vec<u8>)>,
    /// Every read returned `Ok` (else `records` stops at the first error).
    complete: bool,
    /// A check was skipped by `VINEQUEUE_FUZZ_ALLOW` (the records are then not to be
    /// trusted for the checks after the read).
    anomalies: bool,
}

/// Every record `read` hands out from `from` on (batches of 64, each starting after the
/// last record of the previous one), checking the order and bounds.
pub fn read_from(wal: &Wal<SimFs>, from: u64, next_seq: u64) -> ReadAll {
    let mut all = ReadAll {
        records: Vec::new(),
        complete: true,
        anomalies: false,
    };
    let mut from = from;
    for _ in 0..100_000 {
        let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
        let Ok(n) = wal.read(from, 64, &mut |seq, bytes| {
            batch.push((seq, bytes.to_vec()));
            true
        }) else {
            all.complete = false; // an error is an answer (e.g. Corrupt under Strict)
            return all;
        };
        assert_eq!(n, batch.len(), "read returned a count unlike its visits");
        assert!(n <= 64, "read visited {n} records, max was 64");
        let before = all.records.len();
        for (seq, bytes) in batch {
            let out = &all.records;
            let so_far = || out.iter().map(|r| r.0).collect::<Vec<_>>();
            assert!(
                seq >= from,
                "read from {from} visited record {seq}; records so far: {:?}",
                so_far()
            );
            if let Some(&(last, _)) = out.last() {
                if seq <= last && allowed("read-order") {
                    all.anomalies = true;
                    continue;
                }
                assert!(
                    seq > last,
                    "read visited record {seq} after {last}: not in increasing order; \
                     records so far: {:?}",
                    so_far()
                );
            }
            if seq >= next_seq && allowed("read-beyond") {
                all.anomalies = true;
                continue;
            }
            assert!(
                seq < next_seq,
                "read visited record {seq} but next_seq is {next_seq}; records so far: {:?}",
                so_far()
            );
            all.records.push((seq, bytes));
        }
        if n == 0 || all.records.len() == before {
            return all;
        }
        let last = all.records.last().expect("a record").0;
        match last.checked_add(1) {
            Some(next) => from = next,
            None => return all,
        }
    }
    panic!("read never reached the end");
}

/// The `recovery` target: opening any directory image returns or fails cleanly, in both
/// recovery modes; an opened log reads in order what recovery found, appends, syncs and
/// recovers its own output.
pub fn check_recovery(data: &[u8]) {
    let image = build_image(data);
    for mode in [RecoveryMode::SkipCorrupt, RecoveryMode::Strict] {
        check_recovery_in(&image, mode);
    }
}

pub fn check_recovery_in(image: &Image, mode: RecoveryMode) {
    let fs = SimFs::new(7);
    let dir = Path::new(DIR);
    fs.create_dir_all(dir).expect("create the directory");
    for (name, bytes) in image {
        fs.put_file(&dir.join(name), bytes);
    }
    let Ok(wal) = Wal::open_with(fs.clone(), DIR, fuzz_options(mode)) else {
        return; // refusing to open is allowed; panicking is not
    };
    let next = wal.next_seq();
    let acked = wal.acked_through();
    assert!(next >= 1, "next_seq {next}");
    assert!(acked < next, "acked_through {acked} >= next_seq {next}");
    let report = wal.recovery();
    assert_eq!(report.next_seq, next);
    assert_eq!(report.acked_through, acked);
    // Lost records are numbers between the acknowledged mark and next_seq: counting more
    // would mean next_seq reuses numbers of records that existed.
    if !allowed("report-bounds") {
        assert!(
            report.corrupt_records <= next - 1 - acked,
            "{} corrupt records reported, but only {} numbers lie in {}..{next}: {report:?}",
            report.corrupt_records,
            next - 1 - acked,
            acked + 1
        );
    }

    // Numbers are never reused: not those of records still held by intact frames either,
    // in whatever file recovery set aside.
    if let Some(held) = highest_seq_held(image) {
        if !allowed("seq-reuse") {
            assert!(
                next > held,
                "next_seq is {next}, but the directory held an intact frame of record {held} \
                 ({mode:?}, {report:?})"
            );
        }
    }

    let seen = read_from(&wal, 1, next);
    if seen.anomalies {
        return; // a known read bug was let through: what follows would trip over it
    }
    let seen = seen.complete.then_some(seen.records);
    if let Some(seen) = &seen {
        // Reading hands out exactly the unacknowledged records recovery found.
        let unacked: Vec<u64> = seen.iter().map(|r| r.0).filter(|&s| s > acked).collect();
        // One read of everything visits what the reads in batches visited.
        let mut single = Vec::new();
        let whole = wal.read(1, usize::MAX, &mut |seq, _| {
            single.push(seq);
            true
        });
        let batched: Vec<u64> = seen.iter().map(|r| r.0).collect();
        if whole.is_ok() && single != batched {
            if allowed("read-missing") {
                return;
            }
            panic!(
                "read(1, all) visited {single:?}, reads in batches of 64 visited {batched:?} \
                 ({mode:?}, {report:?})"
            );
        }
        if unacked.len() as u64 != report.records && allowed("read-missing") {
            return; // what follows would trip over the missing records
        }
        {
            assert_eq!(
                unacked.len() as u64,
                report.records,
                "recovery found {} unacknowledged records, reading from 1 gave {unacked:?} \
                 ({mode:?}, {report:?})",
                report.records
            );
        }
        // A record seen by the full read is found by a read starting at it.
        let picks = [seen.first(), seen.get(seen.len() / 2), seen.last()];
        for (seq, bytes) in picks.into_iter().flatten() {
            let mut first = None;
            if wal
                .read(*seq, 1, &mut |s, b| {
                    first = Some((s, b.to_vec()));
                    false
                })
                .is_ok()
            {
                assert_eq!(
                    first.as_ref().map(|f| f.0),
                    Some(*seq),
                    "read from {seq} does not start at it"
                );
                assert_eq!(
                    first.map(|f| f.1).as_ref(),
                    Some(bytes),
                    "read from {seq} gives other bytes"
                );
            }
        }
    }

    let appended = wal.append(b"appended by the fuzzer");
    if let Ok(seq) = appended {
        assert_eq!(
            seq, next,
            "append after recovery got {seq}, next_seq was {next}"
        );
    }
    let synced = appended.is_ok() && wal.sync().is_ok();
    drop(wal);
    let Some(seen) = seen.filter(|_| synced) else {
        return;
    };

    // Recovering the log's own output: it opens again and holds what it held.
    let wal = Wal::open_with(fs.process_crash(), DIR, fuzz_options(mode)).unwrap_or_else(|e| {
        panic!("reopening the log just recovered, appended to and synced ({mode:?}) failed: {e}")
    });
    assert_eq!(wal.next_seq(), next + 1, "next_seq after reopening");
    let again = read_from(&wal, 1, next + 1);
    if again.anomalies || !again.complete {
        return;
    }
    let again: BTreeMap<u64, Vec<u8>> = again.records.into_iter().collect();
    assert_eq!(
        again.get(&next).map(Vec::as_slice),
        Some(&b"appended by the fuzzer"[..]),
        "the synced append is gone after reopening"
    );
    let acked = wal.acked_through();
    for (seq, bytes) in &seen {
        if *seq > acked {
            assert_eq!(
                again.get(seq),
                Some(bytes),
                "record {seq} (unacknowledged) changed or vanished after reopening"
            );
        }
    }
}
