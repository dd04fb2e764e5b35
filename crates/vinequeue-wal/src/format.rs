//! The on-disk format: segment headers, record frames and the checkpoint.
//!
//! ```text
//! segment file  <first_seq:020>.seg, preallocated to the segment size
//! ┌──────────────────────── header, 40 bytes ────────────────────────┐
//! │ magic "VQWALSG1" (8) │ version u32 │ reserved u32 │ first_seq u64 │
//! │ salt u64 │ crc32c u32 of the 32 bytes before │ zero u32           │
//! └──────────────────────────────────────────────────────────────────┘
//! frame*, back to back:
//! ┌ len u32 ┬ crc u32 ┬ seq u64 ┬ payload (len bytes) ┐
//! crc = crc32c(payload ‖ salt ‖ seq ‖ len), all integers little-endian
//! len's top bit (KEYED): the payload starts with key u64 (a record that keeps the
//! number it first had); the next bit (POSITIONED): then comes a source position,
//! n u8 ‖ n bytes; the record follows; the low 30 bits are the payload's length
//! then zeros (preallocated, never written) up to the end of the file
//!
//! checkpoint file  `checkpoint`, 8 KiB: two 4 KiB slots, at offsets 0 and 4096, so in
//! different 4 KiB blocks; overwritten in place in turn. A version 2 slot:
//! ┌ magic "VQWALCP1" (8) ┬ version u32 (2) ┬ reserved u32 ┬ generation u64 ┐
//! ┌ acked_through u64 ┬ next_seq u64 (numbers below it may have been handed out) ┐
//! ┌ segment u64 (first_seq of the segment holding acked_through + 1) ┐
//! ┌ offset u64 (of that record in that segment) ┬ synced_through u64 ┐
//! ┌ n u32 ┬ reserved u32 ┬ n × (lo u64, hi u64): acknowledged ranges above the mark ┐
//! then zeros up to byte 4092 ┬ crc32c u32 of the 4092 bytes before ┐
//! n is at most 250; all integers little-endian
//! ```
//!
//! Generation `g` is written to the slot at `(g % 2) * 4096` and synced; the valid slot
//! with the higher generation wins. A torn slot write (even a whole sector or block of
//! garbage) leaves the other slot intact, and overwriting allocated blocks needs no free
//! space, so acknowledgements (and with them space reclaim) keep working on a full disk.
//! A version 1 file (128 bytes: two adjacent 64-byte slots holding the same fields up to
//! `offset`, then a crc32c u32 of those 56 bytes; no `synced_through`, no ranges) is
//! read, and replaced by a version 2 file when the log opens.
//!
//! An all-zero frame header marks the end of a segment's data. Sequence numbers start at
//! 1, so a zero header can never be a record. (Recovery checks that no intact frame
//! follows: if one does, the zeros are a lost or zeroed block, which is damage.) The salt
//! is random per segment: a stale frame left in a reused or preallocated file cannot pass
//! the checksum of a new segment.

/// Magic bytes opening a segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"VQWALSG1";
/// Magic bytes opening the checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"VQWALCP1";
/// Version of the segment format written by this crate.
pub const FORMAT_VERSION: u32 = 1;
/// Length of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 40;
/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 16;
/// The top bit of a frame's length field: the payload starts with the record's key (a
/// `u64`, [`KEY_LEN`] bytes, little-endian), the record follows it. The low 31 bits are
/// the payload's length, key included. Set only by `append_keyed` (a record that keeps
/// the number it first had, such as a redriven dead letter); a log written without keys
/// never has it, so older files read the same.
pub const KEYED: u32 = 1 << 31;
/// Length of the key a keyed frame's payload starts with.
pub const KEY_LEN: usize = 8;
/// The second bit of a frame's length field: the payload holds, after the key (if
/// [`KEYED`]), the producer's source position as one length byte and that many bytes,
/// then the record (`append_positioned`: where in its source the producer was when it
/// enqueued the record). The low 30 bits are the payload's length, prefixes included.
/// A log written without positions never has it (its records are below 1 GiB: a longer
/// one would not fit the segments such a log had by default).
pub const POSITIONED: u32 = 1 << 30;
/// Longest source position a frame holds.
pub const MAX_POSITION_LEN: usize = 255;
/// The length bits of a frame's length field.
pub const LEN_MASK: u32 = POSITIONED - 1;
/// Largest record (prefixes not counted) a frame can hold: the length field has 30
/// bits, which the key and the position share with it.
pub const MAX_FRAME_RECORD: u32 = LEN_MASK - (KEY_LEN + 1 + MAX_POSITION_LEN) as u32;
/// Largest sequence number the log believes (2^62): far beyond any real log, and low
/// enough that arithmetic on sequence numbers cannot overflow. The log hands out numbers
/// below it only; `next_seq` reaching it means the numbers are used up.
pub const MAX_SEQ: u64 = 1 << 62;

/// Version of the checkpoint written by this crate (2: slots in separate 4 KiB blocks,
/// with the synced frontier). Version 1 files (two adjacent 64-byte slots) are read, and
/// replaced by a version 2 file at the first checkpoint write.
pub const CHECKPOINT_VERSION: u32 = 2;
/// Length of one checkpoint slot: a 4 KiB block of its own.
pub const CHECKPOINT_SLOT_LEN: usize = 4096;
/// Offset of the second slot: the slots lie in different 4 KiB blocks, so that a torn
/// sector (or block) can damage only the slot being written.
pub const CHECKPOINT_SLOT_STRIDE: usize = CHECKPOINT_SLOT_LEN;
/// Most acknowledged ranges above the mark a checkpoint holds (the lowest ones).
pub const MAX_CHECKPOINT_RANGES: usize = 250;
/// Where a slot's ranges begin, and where its checksum lies.
const RANGES_AT: usize = 72;
const SLOT_CRC_AT: usize = CHECKPOINT_SLOT_LEN - 4;
/// Length of the checkpoint file.
pub const CHECKPOINT_LEN: usize = 2 * CHECKPOINT_SLOT_STRIDE;
/// Length of one slot of a version 1 checkpoint.
pub const CHECKPOINT_V1_SLOT_LEN: usize = 64;
/// Length of a version 1 checkpoint file (two adjacent slots).
pub const CHECKPOINT_V1_LEN: usize = 2 * CHECKPOINT_V1_SLOT_LEN;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number of the segment's first record.
    pub first_seq: u64,
    /// Random per-segment value mixed into every frame checksum.
    pub salt: u64,
}

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header.
    ///
    /// # Errors
    ///
    /// What is wrong with it, in a few words.
    pub fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err("segment shorter than its header");
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err("not a segment (bad magic)");
        }
        if u32_at(b, 32) != crc32c::crc32c(&b[0..32]) {
            return Err("segment header checksum mismatch");
        }
        if u32_at(b, 8) != FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        let first_seq = u64_at(b, 16);
        if first_seq == 0 || first_seq > MAX_SEQ {
            return Err("segment header with a sequence number out of range");
        }
        Ok(SegmentHeader {
            first_seq,
            salt: u64_at(b, 24),
        })
    }
}

/// What the bytes at a frame position hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A valid record: its sequence number and payload length. The payload follows the
    /// frame header.
    Record {
        /// Sequence number.
        seq: u64,
        /// Payload length (the key and the position included): the frame takes
        /// `FRAME_HEADER_LEN + len` bytes.
        len: u32,
        /// Whether the payload starts with the record's key ([`KEYED`]).
        keyed: bool,
        /// Whether the payload holds a source position ([`POSITIONED`]).
        positioned: bool,
    },
    /// An all-zero header (or nothing at all): the end of the segment's data, unless
    /// intact frames follow it (then it is damage, which the caller checks).
    End,
    /// Not a valid frame, and why.
    Bad(&'static str),
}

/// The checksum of a frame.
pub fn frame_crc(payload_crc: u32, salt: u64, seq: u64, len: u32) -> u32 {
    let mut tail = [0u8; 20];
    tail[0..8].copy_from_slice(&salt.to_le_bytes());
    tail[8..16].copy_from_slice(&seq.to_le_bytes());
    tail[16..20].copy_from_slice(&len.to_le_bytes());
    crate::crc::append(payload_crc, &tail)
}

/// Encodes a frame header for a payload whose plain CRC32C is `payload_crc`.
pub fn frame_header(payload_crc: u32, salt: u64, seq: u64, len: u32) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&frame_crc(payload_crc, salt, seq, len).to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h
}

/// Decodes the frame at the start of `bytes` (which run to the end of the segment's
/// written or preallocated area). Never allocates; a length beyond `max_record` is
/// reported as bad, never trusted.
pub fn decode_frame(bytes: &[u8], salt: u64, max_record: u32) -> Frame {
    if bytes.len() < FRAME_HEADER_LEN {
        return if bytes.iter().all(|&b| b == 0) {
            Frame::End
        } else {
            Frame::Bad("truncated frame header")
        };
    }
    let raw = u32_at(bytes, 0);
    let crc = u32_at(bytes, 4);
    let seq = u64_at(bytes, 8);
    if raw == 0 && crc == 0 && seq == 0 {
        return Frame::End;
    }
    if seq == 0 || seq > MAX_SEQ {
        return Frame::Bad("frame with a sequence number out of range");
    }
    let keyed = raw & KEYED != 0;
    let positioned = raw & POSITIONED != 0;
    let len = raw & LEN_MASK;
    let prefix = if keyed { KEY_LEN } else { 0 } + if positioned { 1 } else { 0 };
    let limit = max_record
        .saturating_add(prefix as u32)
        .saturating_add(if positioned {
            MAX_POSITION_LEN as u32
        } else {
            0
        });
    if len > limit {
        return Frame::Bad("frame length beyond max_record_size");
    }
    if (len as usize) < prefix {
        return Frame::Bad("frame shorter than its key and position");
    }
    let end = FRAME_HEADER_LEN + len as usize;
    if end > bytes.len() {
        return Frame::Bad("frame runs past the end of the segment");
    }
    let payload = &bytes[FRAME_HEADER_LEN..end];
    if positioned && prefix + payload[prefix - 1] as usize > len as usize {
        return Frame::Bad("source position runs past the frame");
    }
    if frame_crc(crate::crc::crc32c(payload), salt, seq, raw) != crc {
        return Frame::Bad("frame checksum mismatch");
    }
    Frame::Record {
        seq,
        len,
        keyed,
        positioned,
    }
}

/// A valid frame's payload taken apart: its key, its source position, its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The key, for a [`KEYED`] frame.
    pub key: Option<u64>,
    /// The source position, for a [`POSITIONED`] frame.
    pub position: Option<&'a [u8]>,
    /// The record.
    pub record: &'a [u8],
}

/// Takes apart the payload of a frame that [`decode_frame`] found valid with these
/// flags (it checked that the prefixes fit).
pub fn split_payload(payload: &[u8], keyed: bool, positioned: bool) -> Payload<'_> {
    let (key, rest) = if keyed {
        let (k, rest) = payload.split_at(KEY_LEN);
        (
            Some(u64::from_le_bytes(k.try_into().expect("8 bytes"))),
            rest,
        )
    } else {
        (None, payload)
    };
    let (position, record) = if positioned {
        let n = rest[0] as usize;
        (Some(&rest[1..1 + n]), &rest[1 + n..])
    } else {
        (None, rest)
    };
    Payload {
        key,
        position,
        record,
    }
}

/// The persisted acknowledgement cursor (one slot of the checkpoint file).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Incremented on every write; decides which slot is current.
    pub generation: u64,
    /// Every record up to this sequence number is acknowledged.
    pub acked_through: u64,
    /// Numbers below it may have been handed out; none at or above it was.
    pub next_seq: u64,
    /// First sequence number of the segment holding record `acked_through + 1`.
    pub segment: u64,
    /// Byte offset of that record (or of the segment's data end) in that segment.
    pub offset: u64,
    /// Every record up to this sequence number had been synced when the checkpoint was
    /// written: a damaged frame holding one is corruption, never a torn tail (0 in a
    /// version 1 file).
    pub synced_through: u64,
    /// Ranges above `acked_through + 1` (inclusive, ascending, disjoint) that are
    /// acknowledged too, at most [`MAX_CHECKPOINT_RANGES`]: acknowledgements made out of
    /// order (a dead letter discarded, records delivered after one that waits) survive a
    /// restart. Empty in a version 1 file.
    pub acked_above: Vec<(u64, u64)>,
}

impl Checkpoint {
    /// Encodes the checkpoint as one slot.
    pub fn encode(&self) -> [u8; CHECKPOINT_SLOT_LEN] {
        let mut b = [0u8; CHECKPOINT_SLOT_LEN];
        b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        b[8..12].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        b[24..32].copy_from_slice(&self.acked_through.to_le_bytes());
        b[32..40].copy_from_slice(&self.next_seq.to_le_bytes());
        b[40..48].copy_from_slice(&self.segment.to_le_bytes());
        b[48..56].copy_from_slice(&self.offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.synced_through.to_le_bytes());
        let ranges = &self.acked_above[..self.acked_above.len().min(MAX_CHECKPOINT_RANGES)];
        b[64..68].copy_from_slice(&(ranges.len() as u32).to_le_bytes());
        for (i, &(lo, hi)) in ranges.iter().enumerate() {
            let at = RANGES_AT + 16 * i;
            b[at..at + 8].copy_from_slice(&lo.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&hi.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b[0..SLOT_CRC_AT]);
        b[SLOT_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Offset of the slot that generation `generation` is written to.
    pub fn slot_offset(generation: u64) -> usize {
        (generation % 2) as usize * CHECKPOINT_SLOT_STRIDE
    }

    /// An older copy of `self` (the generation before), then `self`: what a new file
    /// holds in its two slots.
    fn with_older(&self) -> [Checkpoint; 2] {
        let older = Checkpoint {
            generation: self.generation.saturating_sub(1),
            ..self.clone()
        };
        [older, self.clone()]
    }

    /// The checkpoint file image for `self`: its slot, and an older copy in the other.
    pub fn encode_file(&self) -> [u8; CHECKPOINT_LEN] {
        let mut f = [0u8; CHECKPOINT_LEN];
        for c in &self.with_older() {
            let slot = Self::slot_offset(c.generation);
            f[slot..slot + CHECKPOINT_SLOT_LEN].copy_from_slice(&c.encode());
        }
        f
    }

    /// The version 1 image of `self` (two adjacent 64-byte slots, no synced frontier),
    /// as earlier releases wrote it: for tests and tools that make such directories.
    pub fn encode_file_v1(&self) -> [u8; CHECKPOINT_V1_LEN] {
        let mut f = [0u8; CHECKPOINT_V1_LEN];
        for c in &self.with_older() {
            let at = (c.generation % 2) as usize * CHECKPOINT_V1_SLOT_LEN;
            let b = &mut f[at..at + CHECKPOINT_V1_SLOT_LEN];
            b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
            b[16..24].copy_from_slice(&c.generation.to_le_bytes());
            b[24..32].copy_from_slice(&c.acked_through.to_le_bytes());
            b[32..40].copy_from_slice(&c.next_seq.to_le_bytes());
            b[40..48].copy_from_slice(&c.segment.to_le_bytes());
            b[48..56].copy_from_slice(&c.offset.to_le_bytes());
            let crc = crc32c::crc32c(&b[0..56]);
            b[56..60].copy_from_slice(&crc.to_le_bytes());
        }
        f
    }

    /// Decodes and checks one slot (of either version: told apart by its length).
    ///
    /// # Errors
    ///
    /// What is wrong with it.
    pub fn decode(b: &[u8]) -> Result<Self, &'static str> {
        let (crc_at, version) = match b.len() {
            CHECKPOINT_SLOT_LEN => (SLOT_CRC_AT, CHECKPOINT_VERSION),
            CHECKPOINT_V1_SLOT_LEN => (56, 1),
            _ => return Err("checkpoint slot has the wrong length"),
        };
        if b[0..8] != CHECKPOINT_MAGIC {
            return Err("not a checkpoint (bad magic)");
        }
        if u32_at(b, crc_at) != crc32c::crc32c(&b[0..crc_at]) {
            return Err("checkpoint checksum mismatch");
        }
        if u32_at(b, 8) != version {
            return Err("unsupported checkpoint format version");
        }
        let mut c = Checkpoint {
            generation: u64_at(b, 16),
            acked_through: u64_at(b, 24),
            next_seq: u64_at(b, 32),
            segment: u64_at(b, 40),
            offset: u64_at(b, 48),
            synced_through: if version == 1 { 0 } else { u64_at(b, 56) },
            acked_above: Vec::new(),
        };
        if version != 1 {
            let count = u32_at(b, 64) as usize;
            if count > MAX_CHECKPOINT_RANGES {
                return Err("checkpoint with too many acknowledged ranges");
            }
            let mut floor = c.acked_through;
            for i in 0..count {
                let at = RANGES_AT + 16 * i;
                let (lo, hi) = (u64_at(b, at), u64_at(b, at + 8));
                if lo <= floor || hi < lo || hi >= c.next_seq {
                    return Err("checkpoint with an acknowledged range out of order or range");
                }
                c.acked_above.push((lo, hi));
                floor = hi;
            }
        }
        if c.next_seq <= c.acked_through {
            return Err("checkpoint acknowledges records never appended");
        }
        if c.next_seq <= c.synced_through {
            return Err("checkpoint says records were synced that were never appended");
        }
        if c.next_seq > MAX_SEQ || c.segment == 0 || c.segment > MAX_SEQ {
            return Err("checkpoint with a sequence number out of range");
        }
        if c.offset < SEGMENT_HEADER_LEN as u64 {
            return Err("checkpoint position inside a segment header");
        }
        Ok(c)
    }

    /// Decodes a checkpoint file (of either version): the valid slot with the highest
    /// generation.
    ///
    /// # Errors
    ///
    /// What is wrong when neither slot is valid.
    pub fn decode_file(b: &[u8]) -> Result<Self, &'static str> {
        let (a, z) = match b.len() {
            CHECKPOINT_LEN => (
                &b[..CHECKPOINT_SLOT_LEN],
                &b[CHECKPOINT_SLOT_STRIDE..CHECKPOINT_SLOT_STRIDE + CHECKPOINT_SLOT_LEN],
            ),
            CHECKPOINT_V1_LEN => (&b[..CHECKPOINT_V1_SLOT_LEN], &b[CHECKPOINT_V1_SLOT_LEN..]),
            _ => return Err("checkpoint file has the wrong length"),
        };
        match (Self::decode(a), Self::decode(z)) {
            (Ok(a), Ok(z)) => Ok(if a.generation >= z.generation { a } else { z }),
            (Ok(c), Err(_)) | (Err(_), Ok(c)) => Ok(c),
            (Err(e), Err(_)) => Err(e),
        }
    }
}

/// Offset of the frame of record `seq` in the image of a segment whose first record is
/// `first`: frames lie back to back after the header, each as long as its length field
/// says (for tools and tests that look into segment files).
///
/// # Panics
///
/// If the image ends, or a frame is cut off, before record `seq`.
pub fn frame_offset(image: &[u8], first: u64, seq: u64) -> usize {
    let mut pos = SEGMENT_HEADER_LEN;
    for _ in first..seq {
        let len = u32::from_le_bytes(image[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        pos += FRAME_HEADER_LEN + len;
    }
    pos
}

/// Name of the segment file whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first sequence number a segment file name stands for, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&s| s > 0 && s <= MAX_SEQ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_every_damage_is_caught() {
        let h = SegmentHeader {
            first_seq: 77,
            salt: 0xDEAD_BEEF_0123,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for i in 0..36 {
            for bit in 0..8 {
                let mut bad = b;
                bad[i] ^= 1 << bit;
                assert!(
                    SegmentHeader::decode(&bad).is_err(),
                    "flip at byte {i} bit {bit}"
                );
            }
        }
        assert!(SegmentHeader::decode(&b[..39]).is_err());
    }

    #[test]
    fn frame_round_trip_and_end_marker() {
        let payload = b"hello wal";
        let salt = 42;
        let mut buf = frame_header(crc32c::crc32c(payload), salt, 5, payload.len() as u32).to_vec();
        buf.extend_from_slice(payload);
        buf.extend_from_slice(&[0; 32]);
        assert_eq!(
            decode_frame(&buf, salt, 1 << 20),
            Frame::Record {
                seq: 5,
                len: 9,
                keyed: false,
                positioned: false,
            }
        );
        assert_eq!(decode_frame(&buf[25..], salt, 1 << 20), Frame::End);
        assert_eq!(decode_frame(&[], salt, 1 << 20), Frame::End);
        assert_eq!(decode_frame(&[0; 7], salt, 1 << 20), Frame::End);
        // another segment's salt: the stale frame is not accepted
        assert!(matches!(
            decode_frame(&buf, salt + 1, 1 << 20),
            Frame::Bad(_)
        ));
        // a length beyond the limit is bad, never an allocation
        let mut huge = buf.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_frame(&huge, salt, 1 << 20),
            Frame::Bad("frame length beyond max_record_size")
        );
    }

    #[test]
    fn every_bit_flip_in_a_frame_is_detected() {
        let payload = [7u8; 20];
        let salt = 9;
        let mut buf = frame_header(crc32c::crc32c(&payload), salt, 3, 20).to_vec();
        buf.extend_from_slice(&payload);
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    !matches!(decode_frame(&bad, salt, 1 << 20), Frame::Record { .. }),
                    "flip at byte {i} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn checkpoint_round_trip_and_damage() {
        let c = Checkpoint {
            generation: 3,
            acked_through: 10,
            next_seq: 20,
            segment: 5,
            offset: 400,
            synced_through: 12,
            acked_above: vec![(12, 13), (15, 19)],
        };
        let b = c.encode();
        assert_eq!(Checkpoint::decode(&b), Ok(c.clone()));
        // Every byte the slot uses, and its checksum.
        let used = (0..72 + 2 * 16).chain(CHECKPOINT_SLOT_LEN - 4..CHECKPOINT_SLOT_LEN);
        for i in used {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert!(Checkpoint::decode(&bad).is_err(), "flip at {i}");
        }
        // Ranges that overlap the mark, each other, or pass `next_seq` are refused.
        for above in [
            vec![(10, 11)],
            vec![(12, 15), (14, 16)],
            vec![(15, 20)],
            vec![(16, 15)],
        ] {
            let bad = Checkpoint {
                acked_above: above.clone(),
                ..c.clone()
            };
            assert!(Checkpoint::decode(&bad.encode()).is_err(), "{above:?}");
        }
        // At most MAX_CHECKPOINT_RANGES are kept: the lowest.
        let many = Checkpoint {
            next_seq: 10_000,
            acked_above: (0..400).map(|i| (20 + 3 * i, 21 + 3 * i)).collect(),
            ..c
        };
        let back = Checkpoint::decode(&many.encode()).unwrap();
        assert_eq!(
            back.acked_above[..],
            many.acked_above[..MAX_CHECKPOINT_RANGES]
        );
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_other() {
        let old = Checkpoint {
            generation: 4,
            acked_through: 10,
            next_seq: 20,
            segment: 5,
            offset: 400,
            synced_through: 19,
            acked_above: Vec::new(),
        };
        let mut file = old.encode_file();
        assert_eq!(Checkpoint::decode_file(&file), Ok(old.clone()));
        let new = Checkpoint {
            generation: 5,
            acked_through: 15,
            ..old
        };
        let slot = Checkpoint::slot_offset(5);
        assert_eq!(slot, CHECKPOINT_SLOT_STRIDE);
        file[slot..slot + CHECKPOINT_SLOT_LEN].copy_from_slice(&new.encode());
        assert_eq!(Checkpoint::decode_file(&file), Ok(new.clone()));
        file[slot + 30] ^= 1; // torn write of the new slot
        assert_eq!(
            Checkpoint::decode_file(&file).map(|c| c.acked_through),
            Ok(10)
        );
        file[3] ^= 1;
        assert!(Checkpoint::decode_file(&file).is_err());
    }

    #[test]
    fn a_torn_block_damages_one_slot_only() {
        let c = Checkpoint {
            generation: 7,
            acked_through: 10,
            next_seq: 20,
            segment: 5,
            offset: 400,
            synced_through: 19,
            acked_above: Vec::new(),
        };
        // Garbage over the whole 4 KiB block of either slot leaves the other readable.
        for block in 0..2 {
            let mut file = c.encode_file();
            let range = block * CHECKPOINT_SLOT_STRIDE..(block + 1) * CHECKPOINT_SLOT_STRIDE;
            for (i, b) in file[range].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31).wrapping_add(7);
            }
            let got = Checkpoint::decode_file(&file).expect("the other slot");
            assert_eq!(got.acked_through, 10);
        }
    }

    #[test]
    fn a_version_1_file_is_read() {
        let mut slot = [0u8; CHECKPOINT_V1_SLOT_LEN];
        slot[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        slot[8..12].copy_from_slice(&1u32.to_le_bytes());
        slot[16..24].copy_from_slice(&3u64.to_le_bytes());
        slot[24..32].copy_from_slice(&10u64.to_le_bytes());
        slot[32..40].copy_from_slice(&20u64.to_le_bytes());
        slot[40..48].copy_from_slice(&5u64.to_le_bytes());
        slot[48..56].copy_from_slice(&400u64.to_le_bytes());
        let crc = crc32c::crc32c(&slot[0..56]);
        slot[56..60].copy_from_slice(&crc.to_le_bytes());
        let mut file = [0u8; CHECKPOINT_V1_LEN];
        file[CHECKPOINT_V1_SLOT_LEN..].copy_from_slice(&slot);
        let c = Checkpoint::decode_file(&file).expect("version 1");
        assert_eq!(
            (c.generation, c.acked_through, c.next_seq, c.synced_through),
            (3, 10, 20, 0)
        );
        assert_eq!(c.encode_file_v1()[CHECKPOINT_V1_SLOT_LEN..], slot[..]);
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name("00000000000000000001.seg"), Some(1));
        assert_eq!(parse_segment_name("00000000000000000000.seg"), None);
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000000a.seg"), None);
        assert_eq!(parse_segment_name("notes.txt"), None);
    }
}
