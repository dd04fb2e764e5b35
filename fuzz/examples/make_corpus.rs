//! Writes the seed corpus: `cargo run --example make_corpus` from `fuzz/` (it overwrites
//! the seeds it knows, and leaves every other file, e.g. saved reproducers, alone).

use std::fs;
use std::path::{Path, PathBuf};

use vinequeue_fuzz::harness::{
    crc32c_of, encode_genuine_input, encode_image_input, genuine_log, Image, GENUINE_LOGS,
};
use vinequeue_wal::format::{
    decode_frame, frame_header, Checkpoint, Frame, SegmentHeader, FRAME_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};

fn frame(salt: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = frame_header(crc32c_of(payload), salt, seq, payload.len() as u32).to_vec();
    f.extend_from_slice(payload);
    f
}

/// `frame_decoder` input: flags, salt, max_record, buffer.
fn decoder_input(flags: u8, salt: u64, max_record: u32, buf: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&salt.to_le_bytes());
    out.extend_from_slice(&max_record.to_le_bytes());
    out.extend_from_slice(buf);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    println!("{:>6}  {}", bytes.len(), dir.join(name).display());
}

/// A genuine image with each segment cut after its data (plus one zero frame header), so
/// that every file fits one `put` op.
fn trimmed(image: &Image) -> Image {
    image
        .iter()
        .map(|(name, bytes)| {
            let mut b = bytes.clone();
            if name.ends_with(".seg") {
                let end = b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1);
                b.truncate((end + 16).max(SEGMENT_HEADER_LEN).min(bytes.len()));
            }
            (name.clone(), b)
        })
        .collect()
}

/// Offset of the frame of record `seq` in a segment image.
fn frame_offset(segment: &[u8], seq: u64) -> u16 {
    let h = SegmentHeader::decode(segment).expect("a genuine header");
    let mut pos = SEGMENT_HEADER_LEN;
    loop {
        match decode_frame(&segment[pos..], h.salt, u32::MAX) {
            Frame::Record { seq: s, .. } if s == seq => return pos as u16,
            Frame::Record { len, .. } => pos += FRAME_HEADER_LEN + len as usize,
            other => panic!("record {seq} not found: {other:?} at {pos}"),
        }
    }
}

/// The op file index of `name` in `image`.
fn file_index(image: &Image, name: &str) -> u8 {
    image.keys().position(|n| n == name).expect("the file") as u8
}

/// A `put` op: file `NAMES[name]` with `data`.
fn put(name: u8, data: &[u8]) -> Vec<u8> {
    let mut op = vec![3, name];
    op.extend_from_slice(&u16::try_from(data.len()).expect("fits").to_le_bytes());
    op.extend_from_slice(data);
    op
}

fn header(first_seq: u64, salt: u64) -> Vec<u8> {
    SegmentHeader { first_seq, salt }.encode().to_vec()
}

/// A frame header that is not a record (sequence number 0): damage.
fn bad_frame() -> Vec<u8> {
    let mut f = vec![0u8; FRAME_HEADER_LEN];
    f[0] = 1;
    f[4..8].copy_from_slice(&0xDEADu32.to_le_bytes());
    f
}

fn checkpoint_file(acked_through: u64, next_seq: u64, segment: u64, offset: u64) -> Vec<u8> {
    Checkpoint {
        generation: 2,
        acked_through,
        next_seq,
        segment,
        offset,
        synced_through: 0,
        acked_above: Vec::new(),
    }
    .encode_file()
    .to_vec()
}

/// A checkpoint file as version 1 wrote it: two adjacent 64-byte slots.
fn checkpoint_file_v1(acked_through: u64, next_seq: u64, segment: u64, offset: u64) -> Vec<u8> {
    Checkpoint {
        generation: 2,
        acked_through,
        next_seq,
        segment,
        offset,
        synced_through: 0,
        acked_above: Vec::new(),
    }
    .encode_file_v1()
    .to_vec()
}

/// `recovery` inputs (from an empty directory) made of `files`: (NAMES index, contents).
fn files_input(files: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0, 0];
    for (name, data) in files {
        out.extend(put(*name, data));
    }
    out
}

/// Reproducers of the library bugs the fuzzers found (listed in known-bugs.txt).
fn write_bug_reproducers(dir: &Path) {
    const SEG1: u8 = 0;
    const SEG2: u8 = 1;
    const SEG3: u8 = 2;
    const CHECKPOINT: u8 = 9;
    const SEG_MAX_1: u8 = 15; // 18446744073709551614.seg
    const SEG_MAX: u8 = 16; // 18446744073709551615.seg
    const S: u64 = 0x1234_5678;
    let z = [0u8; FRAME_HEADER_LEN];
    let cat = |parts: &[&[u8]]| parts.concat();

    // Genuine log 1 (records 1..=6 in sealed segment 1, 7..=10 in segment 7): one bit of
    // record 5's payload flipped. Reading from 1 skips the intact record 6.
    let log = genuine_log(1);
    let seg1 = "00000000000000000001.seg";
    let at = frame_offset(&log[seg1], 5) + 16 + 4;
    let mut ops = vec![0u8, file_index(log, seg1)];
    ops.extend_from_slice(&at.to_le_bytes());
    ops.push(0x04);
    write(
        dir,
        "bug-read-skips-intact-record-after-bit-flip-in-sealed-segment",
        &encode_genuine_input(1, 0, &ops),
    );

    // Sealed segment 1: records 1, 2, damage, then a second copy of record 1's frame.
    let newest = cat(&[&header(3, S + 1), &frame(S + 1, 3, b"third"), &z]);
    let first = frame(S, 1, b"first");
    let seg = cat(&[
        &header(1, S),
        &first,
        &frame(S, 2, b"second"),
        &bad_frame(),
        &first,
        &z,
    ]);
    write(
        dir,
        "bug-read-goes-back-to-lower-seq-after-resync",
        &files_input(&[(SEG1, seg), (SEG3, newest.clone())]),
    );

    // Sealed segment 1: records 1, 2, then a valid frame numbered 1000.
    let seg = cat(&[
        &header(1, S),
        &first,
        &frame(S, 2, b"second"),
        &frame(S, 1000, b"far ahead"),
        &z,
    ]);
    write(
        dir,
        "bug-read-returns-out-of-sequence-frame-beyond-next-seq",
        &files_input(&[(SEG1, seg), (SEG3, newest)]),
    );

    // A valid, empty segment named u64::MAX: next_seq = u64::MAX, the append overflows.
    write(
        dir,
        "bug-overflow-append-after-segment-named-u64-max",
        &files_input(&[(SEG_MAX, cat(&[&header(u64::MAX, S), &z]))]),
    );

    // A checkpoint with next_seq u64::MAX: the append overflows.
    write(
        dir,
        "bug-overflow-append-after-checkpoint-next-seq-u64-max",
        &files_input(&[(CHECKPOINT, checkpoint_file(0, u64::MAX, 1, 40))]),
    );

    // Segment u64::MAX holding record u64::MAX: recovery's scan overflows.
    let seg = cat(&[&header(u64::MAX, S), &frame(S, u64::MAX, b"x"), &z]);
    write(
        dir,
        "bug-overflow-scan-of-record-seq-u64-max",
        &files_input(&[(SEG_MAX, seg)]),
    );

    // Newest segment u64::MAX - 1 whose first frame is damaged, with 0xFF bytes after it:
    // the resync after the torn tail computes `min_seq + room` and overflows.
    let mut damaged = bad_frame();
    damaged[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let seg = cat(&[&header(u64::MAX - 1, S), &damaged, &[0xFF; 40], &z, &z]);
    write(
        dir,
        "bug-overflow-resync-after-damage-in-segment-near-u64-max",
        &files_input(&[(SEG_MAX_1, seg)]),
    );

    // Segment 1 with records 1 and 5 (3 lost between), garbage files named segment 2
    // (counted as lost up to the next name, u64::MAX - 1), u64::MAX - 1 and u64::MAX:
    // the corrupt-record count overflows.
    let seg = cat(&[
        &header(1, S),
        &first,
        &bad_frame(),
        &frame(S, 5, b"fifth"),
        &z,
        &z,
    ]);
    write(
        dir,
        "bug-overflow-corrupt-records-sum-garbage-segments-near-u64-max",
        &files_input(&[
            (SEG1, seg),
            (SEG2, b"garbage".to_vec()),
            (SEG_MAX_1, b"garbage".to_vec()),
            (SEG_MAX, b"garbage".to_vec()),
        ]),
    );

    // Garbage files named segments 3 and 9, nothing else: 6 records (3..=8) reported lost,
    // and next_seq is 1.
    write(
        dir,
        "bug-report-counts-lost-records-whose-numbers-next-seq-reuses",
        &files_input(&[(SEG3, b"garbage".to_vec()), (8, b"garbage".to_vec())]),
    );

    // Genuine log 1 with one bit of the newest segment's (7) magic flipped: SkipCorrupt drops
    // the segment with its intact records 7..=10, reports none lost, and numbers the next
    // append 7 again.
    let seg7 = "00000000000000000007.seg";
    let ops = [0u8, file_index(log, seg7), 0, 0, 0x01];
    write(
        dir,
        "bug-seq-reused-after-bit-flip-in-newest-segment-header",
        &encode_genuine_input(1, 0, &ops),
    );

    // Only a checkpoint (acked 4, next 5) placing record 5 at segment 5, offset 25: Strict
    // opens (segment 5 is absent), appends record 5 in a new segment 5, then refuses to
    // reopen ("checkpoint position 5:25 does not hold record 5").
    write(
        dir,
        "bug-strict-reopen-refuses-checkpoint-position-it-accepted",
        &files_input(&[(CHECKPOINT, checkpoint_file(4, 5, 5, 25))]),
    );
}

fn main() {
    let root = std::env::args().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"),
        PathBuf::from,
    );

    // frame_decoder
    let dir = root.join("frame_decoder");
    fs::create_dir_all(&dir).expect("corpus dir");
    let salt = 0x0123_4567_89AB_CDEF;
    let mut one = frame(salt, 5, b"hello wal");
    one.extend_from_slice(&[0; 32]);
    write(&dir, "valid_frame", &decoder_input(0, salt, 1 << 20, &one));
    let mut run = Vec::new();
    for (seq, p) in [(1, &b"a"[..]), (2, b""), (3, b"third record")] {
        run.extend(frame(salt, seq, p));
    }
    run.extend_from_slice(&[0; 16]);
    write(
        &dir,
        "three_frames_then_end",
        &decoder_input(0, salt, 64, &run),
    );
    let mut seg = SegmentHeader {
        first_seq: 1,
        salt: 77,
    }
    .encode()
    .to_vec();
    seg.extend(frame(77, 1, b"first"));
    seg.extend(frame(77, 2, b"second"));
    seg.extend_from_slice(&[0; 24]);
    write(
        &dir,
        "segment_header_and_frames",
        &decoder_input(0, 77, 1 << 20, &seg),
    );
    let cp = Checkpoint {
        generation: 3,
        acked_through: 4,
        next_seq: 11,
        segment: 1,
        offset: 200,
        synced_through: 8,
        acked_above: Vec::new(),
    };
    write(
        &dir,
        "checkpoint_file",
        &decoder_input(0, 0, 1 << 20, &cp.encode_file()),
    );
    write(
        &dir,
        "checkpoint_file_v1",
        &decoder_input(0, 0, 1 << 20, &checkpoint_file_v1(4, 11, 1, 200)),
    );
    let mut huge = frame(salt, 9, b"payload");
    huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    write(
        &dir,
        "length_u32_max",
        &decoder_input(0, salt, u32::MAX, &huge),
    );
    let mut stale = frame(salt, 2, b"resealed by flag bit 0");
    stale[4] ^= 0xFF;
    write(
        &dir,
        "reseal_flag",
        &decoder_input(1, salt, 1 << 20, &stale),
    );
    write(&dir, "short_zeros", &decoder_input(0, 0, 0, &[0; 7]));

    // recovery
    let dir = root.join("recovery");
    fs::create_dir_all(&dir).expect("corpus dir");
    write(&dir, "empty_dir", &[0, 0]);
    for (k, what) in GENUINE_LOGS.iter().enumerate() {
        println!("        genuine {k}: {what}");
        write(
            &dir,
            &format!("genuine_{k}"),
            &encode_genuine_input(k, 0, &[]),
        );
    }
    write(
        &dir,
        "genuine_0_as_files",
        &encode_image_input(&trimmed(genuine_log(0)), 0),
    );
    write(
        &dir,
        "genuine_1_as_files",
        &encode_image_input(&trimmed(genuine_log(1)), 0),
    );
    // genuine log 1: flip a payload byte of record 3 in the sealed first segment
    let log = genuine_log(1);
    let seg1 = "00000000000000000001.seg";
    let at = frame_offset(&log[seg1], 3) + 16 + 4;
    let mut ops = vec![0u8, file_index(log, seg1)];
    ops.extend_from_slice(&at.to_le_bytes());
    ops.push(0x04);
    write(
        &dir,
        "genuine_1_flip_sealed",
        &encode_genuine_input(1, 0, &ops),
    );
    // genuine log 2: record 2's sequence number set to 9, every checksum resealed
    let log = genuine_log(2);
    let at = frame_offset(&log[seg1], 2) + 8;
    let mut ops = vec![1u8, file_index(log, seg1)];
    ops.extend_from_slice(&at.to_le_bytes());
    ops.push(8);
    ops.extend_from_slice(&9u64.to_le_bytes());
    write(
        &dir,
        "genuine_2_seq_rewritten_resealed",
        &encode_genuine_input(2, 7, &ops),
    );
    // genuine log 2: both checkpoint slots' acked_through set to 1000 (beyond next_seq),
    // checksums resealed
    let mut ops = Vec::new();
    for slot in [0u16, 64] {
        ops.extend_from_slice(&[1u8, file_index(log, "checkpoint")]);
        ops.extend_from_slice(&(slot + 24).to_le_bytes());
        ops.push(8);
        ops.extend_from_slice(&1000u64.to_le_bytes());
    }
    write(
        &dir,
        "genuine_2_checkpoint_acked_beyond",
        &encode_genuine_input(2, 4, &ops),
    );
    // genuine log 3 (two segments left): the newest segment's header names segment 1
    let log = genuine_log(3);
    let newest = log
        .keys()
        .rfind(|n| n.ends_with(".seg"))
        .expect("a segment");
    let mut ops = vec![1u8, file_index(log, newest)];
    ops.extend_from_slice(&16u16.to_le_bytes());
    ops.push(8);
    ops.extend_from_slice(&1u64.to_le_bytes());
    write(
        &dir,
        "genuine_3_header_names_another_seq",
        &encode_genuine_input(3, 2, &ops),
    );
    write_bug_reproducers(&dir);

    let mut stray = Image::new();
    stray.insert("notes.txt".into(), b"hello".to_vec());
    stray.insert("123.seg".into(), b"not a segment name".to_vec());
    stray.insert(
        "00000000000000000000.seg".into(),
        b"zero is not a seq".to_vec(),
    );
    stray.insert("checkpoint.tmp".into(), cp.encode_file().to_vec());
    stray.insert("00000000000000000003.seg".into(), vec![0; 40]);
    write(&dir, "stray_files", &encode_image_input(&stray, 0));
    let mut lone = Image::new();
    lone.insert("checkpoint".into(), cp.encode_file().to_vec());
    write(&dir, "checkpoint_only", &encode_image_input(&lone, 0));
}
