//! The `frame_decoder` checks: every verdict of the frame decoder against the bytes.

use super::*;

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
pub fn check_one_frame(bytes: &[u8], salt: u64, max_record: u32) -> Frame {
    let frame = decode_no_alloc(bytes, salt, max_record);
    match frame {
        Frame::Record {
            seq,
            len,
            keyed,
            positioned,
        } => {
            assert_ne!(seq, 0, "a record with sequence number 0");
            // A keyed frame's payload holds its key too (8 bytes), a positioned one its
            // position (a length byte and up to 255 bytes), besides the record.
            let prefix = if keyed { 8 } else { 0 } + if positioned { 1 } else { 0 };
            let limit = max_record
                .saturating_add(prefix)
                .saturating_add(if positioned { 255 } else { 0 });
            assert!(len <= limit, "len {len} beyond max_record {max_record}");
            assert!(len >= prefix, "a frame shorter than its key and position");
            let end = FRAME_HEADER_LEN + len as usize;
            assert!(
                end <= bytes.len(),
                "a record of {len} bytes accepted in {} bytes",
                bytes.len()
            );
            // The pieces lie within the payload, the record after them.
            let parts = split_payload(&bytes[FRAME_HEADER_LEN..end], keyed, positioned);
            assert_eq!(
                prefix as usize + parts.position.map_or(0, <[u8]>::len) + parts.record.len(),
                len as usize
            );
            let field =
                len | if keyed { KEYED } else { 0 } | if positioned { POSITIONED } else { 0 };
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
pub fn walk_frames(buf: &[u8], mut pos: usize, salt: u64, max_record: u32) -> usize {
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
