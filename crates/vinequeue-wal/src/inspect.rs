//! Looking inside a log directory without opening the log: for operators' tools (the
//! `vinequeue` command) on a directory a running queue may hold.
//!
//! Nothing here takes the directory's lock or writes a byte: files are read through
//! plain reads (never mapped, so a file shrinking under the reader is a short read, not a
//! signal). Every frame is read and its checksum checked, as recovery would, and what it
//! finds is reported rather than repaired: a bad frame in the newest segment above the
//! synced frontier the checkpoint holds is a torn tail (what a crash during an append
//! leaves, cut off at the next open), any other is damage.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use vinequeue_storage::{KeyedVisit, QueueId};

use crate::format::{
    decode_frame, parse_segment_name, split_payload, Checkpoint, Frame, SegmentHeader,
    FRAME_HEADER_LEN, MAX_FRAME_RECORD, SEGMENT_HEADER_LEN,
};

/// What a log directory holds, as read without opening it.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Inspection {
    /// The directory.
    pub dir: PathBuf,
    /// The queue's identity (file `queue-id`), if there is one that reads.
    pub queue_id: Option<QueueId>,
    /// The producer's source position a reopen would hand back: that of the last
    /// positioned record in a segment, else the one kept in `source-position`.
    pub source_position: Option<Vec<u8>>,
    /// The checkpoint's current slot, if one is valid.
    pub checkpoint: Option<Checkpoint>,
    /// Why the checkpoint file could not be read, if it exists and could not.
    pub checkpoint_problem: Option<String>,
    /// The segments, in order.
    pub segments: Vec<SegmentReport>,
    /// Copies of damaged files kept in `damaged/`: (name, bytes).
    pub damaged_copies: Vec<(String, u64)>,
    /// Files the log does not know.
    pub unknown_files: Vec<String>,
    /// Bytes of every file of the log (segments, checkpoint, identity).
    pub total_bytes: u64,
}

/// One segment file.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SegmentReport {
    /// File name.
    pub name: String,
    /// File size (the preallocated size).
    pub size: u64,
    /// The first sequence number it holds (from its name).
    pub first_seq: u64,
    /// Intact records read.
    pub records: u64,
    /// Bytes of their payloads.
    pub record_bytes: u64,
    /// Of those records, the ones waiting for delivery: above the checkpoint's
    /// acknowledged mark and outside the ranges it holds acknowledged above it.
    pub pending: u64,
    /// The highest sequence number of an intact record, if any.
    pub last_seq: Option<u64>,
    /// Where the data read ends.
    pub data_end: u64,
    /// What was found wrong.
    pub problems: Vec<Problem>,
}

/// A bad frame, or a bad header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// Byte offset in the file.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
    /// Whether this is a torn tail (the end of the newest segment, above what was known
    /// synced), which the next open cuts off, rather than damage.
    pub torn_tail: bool,
}

impl Inspection {
    /// Records waiting for delivery (above the acknowledged mark, and not among those
    /// acknowledged above it), as counted while the segments were read.
    pub fn pending(&self) -> u64 {
        self.segments.iter().map(|s| s.pending).sum()
    }

    /// Damage found (torn tails are not damage).
    pub fn damage(&self) -> Vec<(&str, &Problem)> {
        self.segments
            .iter()
            .flat_map(|s| s.problems.iter().map(move |p| (s.name.as_str(), p)))
            .filter(|(_, p)| !p.torn_tail)
            .collect()
    }

    /// Whether the log reads clean: a readable checkpoint (or none), no damage.
    pub fn is_clean(&self) -> bool {
        self.checkpoint_problem.is_none() && self.damage().is_empty()
    }
}

fn segment_names(dir: &Path) -> io::Result<Vec<(u64, String)>> {
    let mut names: Vec<(u64, String)> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            parse_segment_name(&name).map(|seq| (seq, name))
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Reads `dir` as a log directory, every frame of every segment checked.
///
/// # Errors
///
/// What listing or reading the directory's files failed with (a missing directory is
/// `NotFound`).
pub fn inspect(dir: &Path) -> io::Result<Inspection> {
    let mut out = Inspection {
        dir: dir.to_path_buf(),
        ..Inspection::default()
    };
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = entry.metadata()?;
        match name.as_str() {
            "LOCK" | "checkpoint.tmp" | "queue-id.tmp" | "source-position.tmp" => {}
            "source-position" => {
                out.total_bytes += meta.len();
                out.source_position = fs::read(entry.path())
                    .ok()
                    .and_then(|b| crate::wal::position::decode(&b));
            }
            "checkpoint" => {
                out.total_bytes += meta.len();
                match fs::read(entry.path()) {
                    Ok(bytes) => match Checkpoint::decode_file(&bytes) {
                        Ok(c) => out.checkpoint = Some(c),
                        Err(why) => out.checkpoint_problem = Some(why.to_owned()),
                    },
                    Err(e) => out.checkpoint_problem = Some(e.to_string()),
                }
            }
            "queue-id" => {
                out.total_bytes += meta.len();
                out.queue_id = fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
            }
            "damaged" if meta.is_dir() => {
                for copy in fs::read_dir(entry.path())? {
                    let copy = copy?;
                    out.damaged_copies.push((
                        copy.file_name().to_string_lossy().into_owned(),
                        copy.metadata()?.len(),
                    ));
                }
                out.damaged_copies.sort();
            }
            _ if meta.is_dir() => {}
            _ if parse_segment_name(&name).is_some() => out.total_bytes += meta.len(),
            _ => out.unknown_files.push(name),
        }
    }
    out.unknown_files.sort();
    let names = segment_names(dir)?;
    let synced = out.checkpoint.as_ref().map_or(0, |c| c.synced_through);
    let acked = out.checkpoint.as_ref().map_or(0, |c| c.acked_through);
    let acked_above = out
        .checkpoint
        .as_ref()
        .map_or(&[][..], |c| c.acked_above.as_slice());
    let waits =
        |seq: u64| seq > acked && !acked_above.iter().any(|&(lo, hi)| lo <= seq && seq <= hi);
    let mut found_position = None;
    for (i, (first_seq, name)) in names.iter().enumerate() {
        let newest = i + 1 == names.len();
        let bytes = fs::read(dir.join(name))?;
        let mut report = SegmentReport {
            name: name.clone(),
            size: bytes.len() as u64,
            first_seq: *first_seq,
            ..SegmentReport::default()
        };
        let mut problem = None;
        report.data_end = scan(
            &bytes,
            *first_seq,
            &mut |seq, _, payload| {
                report.records += 1;
                report.record_bytes += payload.len() as u64;
                report.pending += u64::from(waits(seq));
                report.last_seq = Some(seq);
                true
            },
            &mut |offset, reason| problem = Some((offset, reason.to_owned())),
            &mut found_position,
        );
        if let Some((offset, reason)) = problem {
            // Above what was known synced, in the newest segment: a torn tail.
            let torn = newest && report.last_seq.unwrap_or(*first_seq - 1) >= synced;
            report.problems.push(Problem {
                offset,
                reason,
                torn_tail: torn,
            });
        }
        out.segments.push(report);
    }
    out.source_position = found_position.or(out.source_position.take());
    Ok(out)
}

/// Reads the frames of one segment image in order: `visit` gets each intact record
/// (stop by returning `false`), `problem` the first bad frame (offset, reason). Stops at
/// the end of the data or at the first bad frame; returns where the intact data ends.
/// `last_position` gets the source position of each positioned record in turn.
fn scan(
    bytes: &[u8],
    first_seq: u64,
    visit: &mut KeyedVisit<'_>,
    problem: &mut dyn FnMut(u64, &str),
    last_position: &mut Option<Vec<u8>>,
) -> u64 {
    let header = match SegmentHeader::decode(bytes) {
        Ok(h) if h.first_seq == first_seq => h,
        Ok(_) => {
            problem(0, "the header's first number differs from the file name");
            return 0;
        }
        Err(why) => {
            problem(0, why);
            return 0;
        }
    };
    let mut pos = SEGMENT_HEADER_LEN;
    let mut expect = header.first_seq;
    loop {
        match decode_frame(
            &bytes[pos.min(bytes.len())..],
            header.salt,
            MAX_FRAME_RECORD,
        ) {
            Frame::End => {
                // Zeros end the data, unless an intact frame follows them (a lost or
                // zeroed block): only bytes other than zeros could hold one.
                if bytes[pos.min(bytes.len())..].iter().any(|&b| b != 0)
                    && intact_frame_after(bytes, header.salt, pos, expect, first_seq)
                {
                    problem(pos as u64, "zeroed block before intact records");
                }
                return pos as u64;
            }
            Frame::Bad(why) => {
                problem(pos as u64, why);
                return pos as u64;
            }
            Frame::Record { seq, .. } if seq != expect => {
                problem(pos as u64, "frame out of sequence");
                return pos as u64;
            }
            Frame::Record {
                seq,
                len,
                keyed,
                positioned,
            } => {
                let at = pos + FRAME_HEADER_LEN;
                let p = split_payload(&bytes[at..at + len as usize], keyed, positioned);
                if let Some(position) = p.position {
                    *last_position = Some(position.to_vec());
                }
                if !visit(seq, p.key, p.record) {
                    return pos as u64;
                }
                pos = at + len as usize;
                expect = seq + 1;
            }
        }
    }
}

/// Whether an intact frame numbered `expect` or higher lies after `pos` (at an offset
/// that could hold its number: a frame takes at least 16 bytes).
fn intact_frame_after(bytes: &[u8], salt: u64, pos: usize, expect: u64, first: u64) -> bool {
    (pos + 1..bytes.len().saturating_sub(FRAME_HEADER_LEN)).any(|p| {
        let highest = first + ((p - SEGMENT_HEADER_LEN) / FRAME_HEADER_LEN) as u64;
        matches!(
            decode_frame(&bytes[p..], salt, MAX_FRAME_RECORD),
            Frame::Record { seq, .. } if seq >= expect && seq <= highest
        )
    })
}

/// Visits the intact records of the log in `dir` numbered `from` or higher, in order,
/// with their keys (`None` for a record appended without one), until `visit` returns
/// `false`. Reads only; stops within a segment at its first bad frame.
///
/// # Errors
///
/// What listing or reading the files failed with.
pub fn records(dir: &Path, from: u64, visit: &mut KeyedVisit<'_>) -> io::Result<()> {
    let names = segment_names(dir)?;
    for (i, (first_seq, name)) in names.iter().enumerate() {
        // Skip whole segments below `from`.
        if names.get(i + 1).is_some_and(|(next, _)| *next <= from) {
            continue;
        }
        let bytes = fs::read(dir.join(name))?;
        let mut go_on = true;
        scan(
            &bytes,
            *first_seq,
            &mut |seq, key, record| {
                if seq < from {
                    return true;
                }
                go_on = visit(seq, key, record);
                go_on
            },
            &mut |_, _| {},
            &mut None,
        );
        if !go_on {
            break;
        }
    }
    Ok(())
}
