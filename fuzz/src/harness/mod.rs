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
    decode_frame, frame_header, parse_segment_name, split_payload, Checkpoint, Frame,
    SegmentHeader, CHECKPOINT_LEN, CHECKPOINT_MAGIC, CHECKPOINT_SLOT_LEN, CHECKPOINT_SLOT_STRIDE,
    CHECKPOINT_V1_LEN, CHECKPOINT_V1_SLOT_LEN, FRAME_HEADER_LEN, KEYED, POSITIONED,
    SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
};
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{Fs, Reclaim, Wal, WalOptions};

#[path = "frames.rs"]
mod frames;
#[path = "recovery.rs"]
mod recovery;

pub use frames::*;
pub use recovery::*;

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
