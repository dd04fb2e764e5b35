//! The checks behind the fuzz targets, shared word for word with
//! `crates/vinequeue-wal/tests/fuzz_corpus_replays_cleanly.rs` (which includes this file
//! with `#[path]`), so that the corpus replays the same way with and without cargo-fuzz.
//!
//! Only `std`, `vinequeue-storage` and `vinequeue-wal` (feature `testing`) are used here.
//!
//! # `frame_decoder` input
//!
//! ```text
//! [flags u8] [salt u64 le] [max_record u32 le] [buffer ...]    (missing bytes read as 0)
//! flags bit 0: reseal the frames walked from offset 0 with `salt` before decoding
//! flags bit 1: reseal the segment header and the frames after it (with its salt)
//! ```
//!
//! # `recovery` input
//!
//! ```text
//! [base u8] [fix u8] op*
//! base % 9:   0 = an empty directory, 1..=8 = genuine log number base-1 (see GENUINE_LOGS),
//!             written by `Wal` on a `SimFs`, with every segment's salt replaced by a fixed
//!             one so that the image is the same on every run
//! op (first byte % 6), reading past the end of the input reads zeros; a file index picks
//! from the directory's files sorted by name (modulo their number), a name index from NAMES:
//!   0 xor      [file u8] [offset u16] [value u8]        file[offset % len] ^= value
//!   1 write    [file u8] [offset u16] [n u8] [n bytes]  overwrite, clipped to the file
//!   2 truncate [file u8] [len u16]                      to len % (file len + 1)
//!   3 put      [name u8] [len u16] [len bytes]          create or replace a file
//!   4 remove   [file u8]
//!   5 copy     [file u8] [name u8]                      copy a file to a NAMES name
//! fix, applied after the ops (so that mutated fields pass their checksums):
//!   bit 0: reseal every segment's frames, walked from its header with its salt
//!   bit 1: reseal every `.seg` file's header checksum
//!   bit 2: reseal both checkpoint slots' checksums
//! ```

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use vinequeue_storage::{RecoveryMode, Storage, SyncMode};
use vinequeue_wal::format::{
    decode_frame, frame_header, parse_segment_name, Checkpoint, Frame, SegmentHeader,
    CHECKPOINT_LEN, CHECKPOINT_MAGIC, CHECKPOINT_SLOT_LEN, CHECKPOINT_SLOT_STRIDE,
    CHECKPOINT_V1_LEN, CHECKPOINT_V1_SLOT_LEN, FRAME_HEADER_LEN, KEYED, SEGMENT_HEADER_LEN,
    SEGMENT_MAGIC,
};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{Fs, Reclaim, Wal, WalOptions};

// ---------------------------------------------------------------------------------------
// Allocation counting: `decode_frame` must never allocate, whatever its length field says.

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// A global allocator that counts this thread's allocations (install it with
/// `#[global_allocator]` for the no-allocation checks to mean anything).
pub struct CountingAlloc;

#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to `System`; the counter is a const-initialised
// thread-local `Cell` without destructor, so touching it never allocates or re-enters.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations made by this thread so far (0 forever without `CountingAlloc` installed).
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Whether the check `name` is switched off by `VINEQUEUE_FUZZ_ALLOW` (a comma-separated
/// list of `read-order`, `read-beyond`, `read-missing`, `report-bounds`, `seq-reuse`): to
/// keep fuzzing past a known, unfixed bug.
/// Library panics cannot be switched off.
pub fn allowed(name: &str) -> bool {
    static ALLOW: OnceLock<Vec<String>> = OnceLock::new();
    ALLOW
        .get_or_init(|| {
            std::env::var("VINEQUEUE_FUZZ_ALLOW")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|a| a == name)
}

/// `decode_frame`, asserting that it did not allocate.
fn decode_no_alloc(bytes: &[u8], salt: u64, max_record: u32) -> Frame {
    let before = allocations();
    let frame = decode_frame(bytes, salt, max_record);
    let after = allocations();
    assert_eq!(
        before,
        after,
        "decode_frame allocated ({frame:?}, {} bytes)",
        bytes.len()
    );
    frame
}

// ---------------------------------------------------------------------------------------
// Little helpers.

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the input front to back; past its end every byte is 0.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = self.pos.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }

    fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

/// Recomputes the checksum of every frame reachable from `pos` (walking as recovery
/// does: stop at an all-zero header, a zero sequence number, or a frame running past the
/// end), so that fuzzer-chosen `len` and `seq` fields pass the checksum.
fn reseal_frames(buf: &mut [u8], mut pos: usize, salt: u64) {
    while pos + FRAME_HEADER_LEN <= buf.len() {
        if buf[pos..pos + FRAME_HEADER_LEN].iter().all(|&b| b == 0) {
            return;
        }
        let len = u32_at(buf, pos);
        let seq = u64_at(buf, pos + 8);
        let Some(end) = (pos + FRAME_HEADER_LEN).checked_add(len as usize) else {
            return;
        };
        if seq == 0 || end > buf.len() {
            return;
        }
        let payload_crc = crc32c_of(&buf[pos + FRAME_HEADER_LEN..end]);
        buf[pos..pos + FRAME_HEADER_LEN].copy_from_slice(&frame_header(
            payload_crc,
            salt,
            seq,
            len,
        ));
        pos = end;
    }
}

/// Plain CRC32C (Castagnoli), bit by bit: the harness needs no `crc32c` dependency.
pub fn crc32c_of(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn reseal_segment_header(buf: &mut [u8]) {
    if buf.len() >= SEGMENT_HEADER_LEN {
        let crc = crc32c_of(&buf[0..32]);
        buf[32..36].copy_from_slice(&crc.to_le_bytes());
    }
}

fn reseal_checkpoint(buf: &mut [u8]) {
    // A version 1 file: two adjacent 64-byte slots, checksummed over 56 bytes; version 2:
    // two 4 KiB slots, each checksummed over all but its last 4 bytes.
    let (slots, covered) = if buf.len() == CHECKPOINT_V1_LEN {
        ([0, CHECKPOINT_V1_SLOT_LEN], 56)
    } else {
        ([0, CHECKPOINT_SLOT_STRIDE], CHECKPOINT_SLOT_LEN - 4)
    };
    for slot in slots {
        if buf.len() >= slot + covered + 4 {
            let crc = crc32c_of(&buf[slot..slot + covered]);
            buf[slot + covered..slot + covered + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------
// frame_decoder

/// The `frame_decoder` target: decoders never panic or allocate, and what they accept is
/// consistent with the bytes.
pub fn check_frame_decoder(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let salt = input.u64();
    let max_record = input.u32();
    let mut buf = input.rest().to_vec();
    if flags & 1 != 0 {
        reseal_frames(&mut buf, 0, salt);
    }
    if flags & 2 != 0 && buf.len() >= SEGMENT_HEADER_LEN {
        let inner_salt = u64_at(&buf, 24);
        reseal_frames(&mut buf, SEGMENT_HEADER_LEN, inner_salt);
        reseal_segment_header(&mut buf);
    }

    // The buffer as a run of frames (as a segment's data after its header).
    walk_frames(&buf, 0, salt, max_record);
    // Every offset of a short buffer, as a resync after damage would try them.
    for p in 0..buf.len().min(64) {
        check_one_frame(&buf[p..], salt, max_record);
    }

    // The buffer as a segment file.
    match SegmentHeader::decode(&buf) {
        Ok(h) => {
            assert!(buf.len() >= SEGMENT_HEADER_LEN);
            assert_eq!(buf[0..8], SEGMENT_MAGIC);
            assert_ne!(
                h.first_seq, 0,
                "a header with sequence number 0 was accepted"
            );
            assert_eq!(u64_at(&buf, 16), h.first_seq);
            assert_eq!(u64_at(&buf, 24), h.salt);
            assert_eq!(u32_at(&buf, 32), crc32c_of(&buf[0..32]));
            assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
            // Recovery's scan of the segment's frames, expecting consecutive numbers.
            let mut expect = h.first_seq;
            let mut pos = SEGMENT_HEADER_LEN;
            while pos < buf.len() {
                match check_one_frame(&buf[pos..], h.salt, max_record) {
                    Frame::Record { seq, len, .. } if seq == expect => {
                        pos += FRAME_HEADER_LEN + len as usize;
                        let Some(next) = expect.checked_add(1) else {
                            break;
                        };
                        expect = next;
                    }
                    _ => break,
                }
            }
            assert!(pos <= buf.len());
        }
        Err(reason) => assert!(!reason.is_empty()),
    }

    // The buffer as a checkpoint file, and its first bytes as one slot.
    match Checkpoint::decode_file(&buf) {
        Ok(c) => {
            let (first, second) = match buf.len() {
                CHECKPOINT_LEN => (
                    &buf[..CHECKPOINT_SLOT_LEN],
                    &buf[CHECKPOINT_SLOT_STRIDE..CHECKPOINT_SLOT_STRIDE + CHECKPOINT_SLOT_LEN],
                ),
                CHECKPOINT_V1_LEN => (
                    &buf[..CHECKPOINT_V1_SLOT_LEN],
                    &buf[CHECKPOINT_V1_SLOT_LEN..],
                ),
                n => panic!("a checkpoint file of {n} bytes was accepted"),
            };
            assert!(c.next_seq > c.acked_through, "{c:?}");
            assert!(c.next_seq > c.synced_through, "{c:?}");
            let slots = [Checkpoint::decode(first), Checkpoint::decode(second)];
            assert!(
                slots.contains(&Ok(c.clone())),
                "decode_file returned a checkpoint neither slot holds"
            );
            for s in slots.iter().flatten() {
                assert!(
                    s.generation <= c.generation,
                    "an older slot won: {c:?} {s:?}"
                );
            }
            assert_eq!(Checkpoint::decode(&c.encode()), Ok(c));
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
    for len in [CHECKPOINT_SLOT_LEN, CHECKPOINT_V1_SLOT_LEN] {
        let Some(slot) = buf.get(..len) else {
            continue;
        };
        if let Ok(c) = Checkpoint::decode(slot) {
            assert_eq!(slot[0..8], CHECKPOINT_MAGIC);
            assert!(c.next_seq > c.acked_through);
            assert!(c.next_seq > c.synced_through);
            let mut floor = c.acked_through;
            for &(lo, hi) in &c.acked_above {
                assert!(lo > floor && hi >= lo && hi < c.next_seq, "{c:?}");
                floor = hi;
            }
            assert_eq!(Checkpoint::decode(&c.encode()), Ok(c.clone()));
            if len == CHECKPOINT_SLOT_LEN {
                // Reserved bytes (12..16, 68..72, and those after the ranges) are
                // covered by the checksum but not interpreted: a slot with any set
                // re-encodes with zeros there, and so with another checksum.
                let used = 72 + 16 * c.acked_above.len();
                let again = c.encode();
                assert_eq!(again[..12], slot[..12]);
                assert_eq!(again[16..68], slot[16..68]);
                assert_eq!(again[72..used], slot[72..used]);
                if slot[12..16] == [0; 4]
                    && slot[68..72] == [0; 4]
                    && slot[used..len - 4].iter().all(|&b| b == 0)
                {
                    assert_eq!(again[len - 4..], slot[len - 4..]);
                }
            } else {
                assert_eq!(c.synced_through, 0, "a version 1 slot has no frontier");
            }
        }
    }
    let _ = parse_segment_name(&String::from_utf8_lossy(&buf));
}

/// Decodes one frame and checks the verdict against the bytes.
fn check_one_frame(bytes: &[u8], salt: u64, max_record: u32) -> Frame {
    let frame = decode_no_alloc(bytes, salt, max_record);
    match frame {
        Frame::Record { seq, len, keyed } => {
            assert_ne!(seq, 0, "a record with sequence number 0");
            // A keyed frame's payload holds its key too (8 bytes) besides the record.
            let limit = if keyed {
                max_record.saturating_add(8)
            } else {
                max_record
            };
            assert!(len <= limit, "len {len} beyond max_record {max_record}");
            assert!(!keyed || len >= 8, "a keyed frame shorter than its key");
            let end = FRAME_HEADER_LEN + len as usize;
            assert!(
                end <= bytes.len(),
                "a record of {len} bytes accepted in {} bytes",
                bytes.len()
            );
            let field = if keyed { len | KEYED } else { len };
            assert_eq!(u32_at(bytes, 0), field);
            assert_eq!(u64_at(bytes, 8), seq);
            let expect = frame_header(crc32c_of(&bytes[FRAME_HEADER_LEN..end]), salt, seq, field);
            assert_eq!(
                bytes[..FRAME_HEADER_LEN],
                expect,
                "a record with a wrong checksum"
            );
        }
        Frame::End => {
            let head = &bytes[..bytes.len().min(FRAME_HEADER_LEN)];
            assert!(head.iter().all(|&b| b == 0), "End over a non-zero header");
        }
        Frame::Bad(reason) => {
            assert!(!reason.is_empty());
            assert!(
                !bytes[..bytes.len().min(FRAME_HEADER_LEN)]
                    .iter()
                    .all(|&b| b == 0),
                "Bad ({reason}) over an all-zero header"
            );
        }
    }
    frame
}

/// Walks frames from `pos` like recovery: advance by 16 + len on a record, stop at the end
/// or at a bad frame.
fn walk_frames(buf: &[u8], mut pos: usize, salt: u64, max_record: u32) -> usize {
    let mut records = 0;
    while pos < buf.len() {
        match check_one_frame(&buf[pos..], salt, max_record) {
            Frame::Record { len, .. } => {
                pos += FRAME_HEADER_LEN + len as usize;
                assert!(pos <= buf.len());
                records += 1;
            }
            Frame::End | Frame::Bad(_) => break,
        }
    }
    records
}

// ---------------------------------------------------------------------------------------
// recovery

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

fn must<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("building a genuine log: {what}: {e:?}"))
}

fn open_clean(fs: &SimFs) -> Wal<SimFs> {
    must(
        Wal::open_with(fs.clone(), DIR, fuzz_options(RecoveryMode::Strict)),
        "open",
    )
}

fn append_all(wal: &Wal<SimFs>, seqs: impl IntoIterator<Item = u64>) {
    for i in seqs {
        assert_eq!(must(wal.append(&genuine_payload(i)), "append"), i);
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
fn normalise_salts(image: &mut Image) {
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

fn pick_file(image: &Image, index: u8) -> Option<String> {
    if image.is_empty() {
        return None;
    }
    image.keys().nth(index as usize % image.len()).cloned()
}

fn pick_name(index: u8) -> String {
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
fn highest_seq_held(image: &Image) -> Option<u64> {
    let max_record = fuzz_options(RecoveryMode::SkipCorrupt).effective_max_record_size();
    let mut highest = None;
    for (name, bytes) in image {
        let Some(first) = parse_segment_name(name) else {
            continue;
        };
        if bytes.len() < SEGMENT_HEADER_LEN || bytes[..SEGMENT_HEADER_LEN].iter().all(|&b| b == 0) {
            continue;
        }
        let salt = u64_at(bytes, 24);
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
struct ReadAll {
    records: Vec<(u64, Vec<u8>)>,
    /// Every read returned `Ok` (else `records` stops at the first error).
    complete: bool,
    /// A check was skipped by `VINEQUEUE_FUZZ_ALLOW` (the records are then not to be
    /// trusted for the checks after the read).
    anomalies: bool,
}

/// Every record `read` hands out from `from` on (batches of 64, each starting after the
/// last record of the previous one), checking the order and bounds.
fn read_from(wal: &Wal<SimFs>, from: u64, next_seq: u64) -> ReadAll {
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

fn check_recovery_in(image: &Image, mode: RecoveryMode) {
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
