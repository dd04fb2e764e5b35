//! Opening a directory: the checkpoint, each segment checked, damage set aside.

use super::position::{self, SOURCE_POSITION, SOURCE_POSITION_TMP};
use super::scan::*;
use super::*;

/// What opening found in the directory.
pub(super) struct Recovery<F: Fs> {
    pub(super) segments: Vec<Arc<Segment<F>>>,
    pub(super) checkpoint: Checkpoint,
    pub(super) report: RecoveryReport,
    pub(super) next_seq: u64,
    /// Bytes of the kept segment files.
    pub(super) size: u64,
    /// Length of the checkpoint file kept (0 without one).
    pub(super) checkpoint_len: u64,
    /// The numbers above the checkpoint's mark and below `next_seq` that hold no record
    /// recovery kept (lost to a power cut or to damage, reserved, between segments), as
    /// ascending ranges: nobody will ever acknowledge them.
    pub(super) no_record: Vec<(u64, u64)>,
    /// The position the `source-position` file holds.
    pub(super) retired_position: Option<Vec<u8>>,
}

impl<F: Fs> Recovery<F> {
    pub(super) fn run(fs: &F, dir: &Path, opts: &WalOptions) -> Result<Self, Error> {
        let strict = opts.recovery_mode == RecoveryMode::Strict;
        let mut report = RecoveryReport::default();
        let mut aside = Aside::scan(fs, dir, opts.max_damaged_size);
        let mut names = Vec::new();
        let mut has_checkpoint = false;
        for entry in fs.list(dir).map_err(io_err)? {
            match entry.name.as_str() {
                "LOCK" | DAMAGED | QUEUE_ID | SOURCE_POSITION => {}
                QUEUE_ID_TMP | SOURCE_POSITION_TMP => {
                    let _ = fs.remove(&dir.join(&entry.name));
                }
                CHECKPOINT => has_checkpoint = entry.is_file,
                CHECKPOINT_TMP => {
                    let _ = fs.remove(&dir.join(CHECKPOINT_TMP));
                }
                // Directories (such as the queue's `dead-letters` log) are not ours.
                _ if !entry.is_file => {}
                name => match parse_segment_name(name) {
                    Some(seq) => names.push((seq, name.to_owned())),
                    None => report.unknown_files += 1,
                },
            }
        }
        names.sort();
        let mut retired_position = position::load(fs, dir, opts)?;
        // The source position of the last positioned record kept, with its number.
        let mut kept_position: Option<(u64, Vec<u8>)> = None;

        let mut checkpoint = Checkpoint::default();
        let mut checkpoint_len = 0;
        if has_checkpoint {
            let path = dir.join(CHECKPOINT);
            let bytes = fs.read_small(&path, CHECKPOINT_LEN).map_err(io_err)?;
            checkpoint_len = bytes.len() as u64;
            match Checkpoint::decode_file(&bytes) {
                Ok(c) => checkpoint = c,
                Err(reason) if strict => {
                    return Err(Error::Corrupt {
                        file: path,
                        offset: 0,
                        reason: reason.into(),
                    })
                }
                Err(_) => {
                    // Without a trustworthy cursor everything is replayed: at-least-once.
                    aside.keep(fs, CHECKPOINT, &mut report);
                    let _ = fs.remove(&path);
                    has_checkpoint = false;
                    checkpoint_len = 0;
                }
            }
        }
        let acked = checkpoint.acked_through;
        // A version 2 checkpoint reserved every number handed out before any was used:
        // recovery starts above them, whatever records survived. (Without one, the
        // numbers of intact frames recovery cannot place are looked for.)
        let numbers_reserved = checkpoint_len == CHECKPOINT_LEN as u64;
        // Records up to here were synced: damage to them is corruption, not a torn tail.
        let synced = checkpoint.synced_through;

        let mut segments: Vec<Arc<Segment<F>>> = Vec::new();
        let mut size = 0;
        let mut next_seq = checkpoint.next_seq.max(acked + 1).max(1);
        // Ranges of the records kept, ascending (segments come in order, and each one's
        // numbers stay below the next one's first).
        let mut present: Vec<(u64, u64)> = Vec::new();
        let count = names.len();
        let mut early = super::prescan::prescan(fs, dir, &names, acked);
        for (i, (first_seq, name)) in names.iter().enumerate() {
            let newest = i + 1 == count;
            let next_first = names.get(i + 1).map(|n| n.0);
            let path = dir.join(name);
            let file = fs.open(&path).map_err(io_err)?;
            // Frames are believed up to what fits in this file, whatever the options in
            // effect now: lowering `max_record_size` or `max_size` limits new appends, and
            // must not turn the larger records already stored into damage.
            let max_len = record_limit(file.len());
            // Everything recovery checks is read through the file, not the map: a read
            // error or a file shrunk meanwhile is an error, never `SIGBUS`.
            let head = Reader::new(&file)
                .get(0, SEGMENT_HEADER_LEN)
                .map_err(io_err)?
                .to_vec();
            let header = if head.iter().all(|&x| x == 0) {
                Err("segment header never written")
            } else {
                SegmentHeader::decode(&head)
            };
            let mut damaged = false;
            let header = match header {
                Ok(h) if h.first_seq == *first_seq => h,
                Ok(_) | Err(_) => {
                    let reason = match header {
                        Ok(_) => "segment header names another first sequence number",
                        Err(r) => r,
                    };
                    let blank = reason == "segment header never written";
                    if newest && blank {
                        // Crashed while creating it: nothing was ever in it.
                        drop(file);
                        fs.remove(&path).map_err(io_err)?;
                        continue;
                    }
                    if newest && numbers_reserved && synced < *first_seq {
                        // Nothing in it was ever synced (the checkpoint's frontier lies
                        // below its first number, which its reservation covers): its
                        // header was torn by the cut like any unsynced tail. Cut it off
                        // whole, keeping a copy; never hand out again a number an intact
                        // frame in it holds (with the salt, if the header kept it).
                        report.torn_bytes += written_after(&file, 0).map_err(io_err)?;
                        if head.len() == SEGMENT_HEADER_LEN {
                            let frames = Frames {
                                first_seq: *first_seq,
                                salt: u64::from_le_bytes(head[24..32].try_into().expect("8")),
                                max_record: max_len,
                            };
                            let held = frames
                                .highest_valid_seq(
                                    &mut Reader::new(&file),
                                    SEGMENT_HEADER_LEN as u64,
                                    *first_seq,
                                )
                                .map_err(io_err)?;
                            next_seq = next_seq.max(held.map_or(0, after));
                        }
                        drop(file);
                        aside.keep(fs, name, &mut report);
                        fs.remove(&path).map_err(io_err)?;
                        continue;
                    }
                    if strict {
                        return Err(Error::Corrupt {
                            file: path,
                            offset: 0,
                            reason: reason.into(),
                        });
                    }
                    // Often only the magic or the header checksum was hit and the salt is
                    // intact: if the first frame checks out with it, keep the records.
                    let salvage = (head.len() == SEGMENT_HEADER_LEN).then(|| SegmentHeader {
                        first_seq: *first_seq,
                        salt: u64::from_le_bytes(head[24..32].try_into().expect("8 bytes")),
                    });
                    let first_ok = |h: &SegmentHeader| -> Result<bool, Error> {
                        let at = SEGMENT_HEADER_LEN as u64;
                        Ok(at < file.len()
                            && matches!(
                                frame_at(&file, at, h.salt, max_len).map_err(io_err)?,
                                Frame::Record { seq, .. } if seq == h.first_seq
                            ))
                    };
                    let first_ok = match &salvage {
                        Some(h) => first_ok(h)?,
                        None => false,
                    };
                    match salvage {
                        Some(h) if first_ok => {
                            damaged = true;
                            h
                        }
                        _ => {
                            // Its records are unknown: count the numbers up to the next
                            // segment as lost, and never hand out any number an intact
                            // frame in it holds (or, for the newest, could hold) again.
                            // (The newest held at least what was synced, as many records
                            // as its bytes could hold at most.)
                            let lost_to = next_first.unwrap_or_else(|| {
                                let room = file.len().saturating_sub(SEGMENT_HEADER_LEN as u64)
                                    / FRAME_HEADER_LEN as u64;
                                synced
                                    .saturating_add(1)
                                    .min(first_seq.saturating_add(room))
                                    .max(*first_seq)
                            });
                            report.corrupt_records = report.corrupt_records.saturating_add(
                                lost_to.saturating_sub((*first_seq).max(acked + 1)),
                            );
                            // The numbers counted lost were handed out (the next
                            // segment's name says so, whatever the checkpoint holds).
                            next_seq = next_seq.max(lost_to.min(MAX_SEQ));
                            if !numbers_reserved {
                                let mut reserve = match next_first {
                                    Some(n) => n,
                                    None => first_seq.saturating_add(
                                        file.len().saturating_sub(SEGMENT_HEADER_LEN as u64)
                                            / FRAME_HEADER_LEN as u64
                                            + 1,
                                    ),
                                };
                                if let Some(h) = salvage {
                                    let frames = Frames {
                                        first_seq: *first_seq,
                                        salt: h.salt,
                                        max_record: max_len,
                                    };
                                    let held = frames
                                        .highest_valid_seq(
                                            &mut Reader::new(&file),
                                            SEGMENT_HEADER_LEN as u64,
                                            *first_seq,
                                        )
                                        .map_err(io_err)?;
                                    reserve = reserve.max(held.map_or(0, after));
                                }
                                next_seq = next_seq.max(reserve.min(MAX_SEQ));
                            }
                            drop(file);
                            aside.keep(fs, name, &mut report);
                            fs.remove(&path).map_err(io_err)?;
                            continue;
                        }
                    }
                }
            };

            let ceiling = next_first.map_or(MAX_SEQ, |n| n.saturating_sub(1));
            let frames = Frames {
                first_seq: header.first_seq,
                salt: header.salt,
                max_record: max_len,
            };
            // One reader for the whole segment: its windows move forward with the scan
            // and the skips over damage, so that each byte is read once.
            let mut reader = Reader::new(&file);
            let scan = match early[i].take() {
                Some(p) if p.salt == header.salt && !damaged => p.scan,
                _ => scan_segment(&mut reader, header, max_len, acked, ceiling).map_err(io_err)?,
            };
            let mut data_end = scan.data_end;
            let mut last_seq = scan.last_seq;
            let mut held_here = vec![(header.first_seq, scan.last_seq)];
            report.records += scan.records;
            report.bytes += scan.bytes;
            let mut bad = scan.bad;
            let mut last_position = scan.last_position;
            while let Some((offset, reason)) = bad {
                let expect = last_seq + 1;
                if reason == OUT_OF_SEQUENCE {
                    // An intact frame, numbered outside what this segment holds next (the
                    // next segment's numbers, say): not one of its records, but never
                    // hand its number out again, whatever the checkpoint reserved.
                    // (Only a number a frame at that offset can hold, as everywhere.)
                    if let Frame::Record { seq, .. } =
                        frame_at(&file, offset, header.salt, max_len).map_err(io_err)?
                    {
                        if seq <= frames.highest_at(offset) {
                            next_seq = next_seq.max(after(seq));
                        }
                    }
                }
                if newest && expect > synced {
                    // A torn tail: cut it off. It lies beyond what was synced, so a power
                    // cut may have torn it. If valid frames follow the damage (pages
                    // written back out of order), they were never synced either; keep a
                    // copy for inspection all the same.
                    report.torn_bytes += written_after(&file, offset).map_err(io_err)?;
                    // One pass over the rest of the segment (linear): the reservation
                    // covers their numbers, but a checkpoint that says otherwise must
                    // not make recovery hand one out again.
                    if let Some(held) = frames
                        .highest_valid_seq(&mut reader, offset + 1, expect)
                        .map_err(io_err)?
                    {
                        damaged = true;
                        next_seq = next_seq.max(after(held));
                    }
                    break;
                }
                // Damage where a synced record was: corruption, never a torn tail.
                if strict {
                    return Err(Error::Corrupt {
                        file: path,
                        offset,
                        reason: reason.into(),
                    });
                }
                damaged = true;
                // Skip over it to the next intact record, counting the lost numbers. (The
                // search takes any number from `expect` on, so that a frame numbered past
                // the segment's range is seen too, and stepped over like damage.)
                match frames
                    .find_lowest_valid(&mut reader, offset + 1, expect, MAX_SEQ)
                    .map_err(io_err)?
                {
                    Some((p, seq)) if seq > ceiling => {
                        bad = Some((p, OUT_OF_SEQUENCE));
                    }
                    Some((p, seq)) => {
                        report.corrupt_records = report
                            .corrupt_records
                            .saturating_add(seq.saturating_sub(expect.max(acked + 1)));
                        let more = scan_from(&mut reader, header, max_len, acked, p, seq, ceiling)
                            .map_err(io_err)?;
                        held_here.push((seq, more.last_seq));
                        if more.last_position.is_some() {
                            last_position = more.last_position;
                        }
                        report.records += more.records;
                        report.bytes += more.bytes;
                        data_end = more.data_end;
                        last_seq = more.last_seq;
                        bad = more.bad;
                    }
                    None => {
                        // Up to the next segment; in the newest, up to what was synced
                        // (at most as many records as the bytes left could hold).
                        let lost_to = next_first.unwrap_or_else(|| {
                            let room = (file.published() - offset) / FRAME_HEADER_LEN as u64;
                            expect.max(synced.saturating_add(1).min(expect + room))
                        });
                        report.corrupt_records = report
                            .corrupt_records
                            .saturating_add(lost_to.saturating_sub(expect.max(acked + 1)));
                        next_seq = next_seq.max(lost_to);
                        bad = None;
                    }
                }
            }
            if damaged {
                aside.keep(fs, name, &mut report);
            }
            next_seq = next_seq.max(after(last_seq));

            if last_seq <= acked || (newest && data_end <= SEGMENT_HEADER_LEN as u64) {
                // Everything in it was acknowledged (the unlink after the checkpoint did
                // not happen), or it holds nothing. Its last source position outlives it,
                // as a reclaim would have kept it.
                if let Some((_, p)) = last_position {
                    if retired_position.as_ref() != Some(&p) {
                        position::store(fs, dir, &p)?;
                    }
                    retired_position = Some(p);
                }
                drop(file);
                fs.remove(&path).map_err(io_err)?;
                continue;
            }
            let file = if newest && data_end < file.len() {
                // Never append after an unchecked tail: seal it where the data ends.
                file.truncate(data_end).map_err(io_err)?
            } else {
                file
            };
            if newest {
                // What a crashed process left in the page cache becomes durable here:
                // the log reports every record it recovered as synced (the frontier it
                // writes to the checkpoint), and a record it had not synced could still
                // be lost to a power cut. (Sealed segments were synced when sealed.)
                file.sync_range(0, file.len()).map_err(io_err)?;
            }
            // Sealed: no descriptor held for it from here on (the map keeps the file
            // open), so that a log of many segments opens under the usual limit of 1024.
            file.seal();
            size += file.len();
            present.extend(held_here.into_iter().filter(|&(lo, hi)| lo <= hi));
            let index = scan.index;
            // The scan mapped in what it read; the replay maps pages in again as it
            // reaches them, so the backlog never sits in memory as a whole.
            let released = file.release(0, file.len());
            segments.push(Arc::new(Segment {
                first_seq: *first_seq,
                path,
                salt: header.salt,
                synced_end: AtomicU64::new(file.len()),
                released_end: AtomicU64::new(released),
                read_released: AtomicU64::new(0),
                read_hint: Mutex::new((0, 0)),
                file,
                last_seq: CachePadded::new(AtomicU64::new(last_seq)),
                index: Mutex::new(index),
                write_backs: Mutex::new(WriteBacks::default()),
                write_back_done: Condvar::new(),
                max_len,
                last_position: Mutex::new(last_position.clone()),
            }));
            if last_position.is_some() {
                kept_position = last_position;
            }
        }

        // Cross-check the checkpoint's position against the segments.
        if has_checkpoint && acked > 0 {
            if let Some(seg) = segments.iter().find(|s| s.first_seq == checkpoint.segment) {
                let ok = checkpoint.offset >= SEGMENT_HEADER_LEN as u64
                    && (checkpoint.offset >= seg.file.published()
                        || matches!(
                            frame_at(&seg.file, checkpoint.offset, seg.salt, seg.max_len)
                                .map_err(io_err)?,
                            Frame::Record { seq, .. } if seq > acked
                        ));
                if !ok && strict {
                    return Err(Error::Corrupt {
                        file: dir.join(CHECKPOINT),
                        offset: 0,
                        reason: format!(
                            "checkpoint position {}:{} does not hold record {}",
                            checkpoint.segment,
                            checkpoint.offset,
                            acked + 1
                        ),
                    });
                }
            }
        }
        report.damaged_bytes = aside.bytes;
        report.source_position = kept_position.map(|(_, p)| p).or(retired_position.clone());
        fs.sync_dir(dir).map_err(io_err)?;
        Ok(Recovery {
            segments,
            checkpoint,
            report,
            next_seq,
            size,
            checkpoint_len,
            no_record: complement(&present, acked + 1, next_seq),
            retired_position,
        })
    }
}

/// Bytes from `offset` up to the last nonzero byte of the file (what a torn tail holds).
fn written_after<F: FsFile>(file: &F, offset: u64) -> io::Result<u64> {
    let mut reader = Reader::new(file);
    let mut at = offset;
    let mut last = offset;
    while at < reader.end() {
        let b = reader.get(at, WINDOW)?;
        if let Some(p) = b.iter().rposition(|&x| x != 0) {
            last = at + p as u64 + 1;
        }
        at += b.len() as u64;
    }
    Ok(last - offset)
}

/// The frame at `at`, read through the file.
fn frame_at<F: FsFile>(file: &F, at: u64, salt: u64, max_len: u32) -> io::Result<Frame> {
    let mut reader = Reader::new(file);
    let len = match reader.get(at, 4)? {
        b if b.len() == 4 => u32::from_le_bytes(b.try_into().expect("4 bytes")),
        _ => 0,
    };
    let bytes = reader.get(at, FRAME_HEADER_LEN + len.min(max_len) as usize)?;
    Ok(decode_frame(bytes, salt, max_len))
}

/// The numbers in `from..to` outside the ascending, disjoint ranges `present`, as ranges.
pub(super) fn complement(present: &[(u64, u64)], from: u64, to: u64) -> Vec<(u64, u64)> {
    let mut gaps = Vec::new();
    let mut next = from;
    for &(lo, hi) in present {
        if hi < next {
            continue;
        }
        if lo > next {
            gaps.push((next, (lo - 1).min(to.saturating_sub(1))));
        }
        next = next.max(hi + 1);
    }
    if next < to {
        gaps.push((next, to - 1));
    }
    gaps.retain(|&(lo, hi)| lo <= hi);
    gaps
}

/// The `damaged/` directory: one copy of each damaged file recovery met, within
/// `WalOptions::max_damaged_size`.
pub(super) struct Aside {
    /// The log's directory, and its `damaged/`.
    log: PathBuf,
    dir: PathBuf,
    /// Names held there, and their bytes in all.
    names: std::collections::BTreeSet<String>,
    bytes: u64,
    cap: u64,
}

impl Aside {
    fn scan<F: Fs>(fs: &F, dir: &Path, cap: u64) -> Self {
        let aside = dir.join(DAMAGED);
        let mut names = std::collections::BTreeSet::new();
        let mut bytes = 0u64;
        for entry in fs.list(&aside).unwrap_or_default() {
            if entry.is_file {
                bytes = bytes.saturating_add(fs.file_len(&aside.join(&entry.name)).unwrap_or(0));
                names.insert(entry.name);
            }
        }
        Aside {
            log: dir.to_path_buf(),
            dir: aside,
            names,
            bytes,
            cap,
        }
    }

    /// Keeps a copy of the damaged file `name` (best effort: recovery goes on without):
    /// once (a copy kept at an earlier open stays the one), and only while the
    /// directory stays within its cap (counted in `damaged_not_kept` otherwise).
    fn keep<F: Fs>(&mut self, fs: &F, name: &str, report: &mut RecoveryReport) {
        let from = self.log.join(name);
        event!(
            warn,
            dir = %self.log.display(),
            file = name,
            corrupt_records_so_far = report.corrupt_records,
            "damage found at recovery; a copy of the file is kept in damaged/"
        );
        if !self.names.contains(name) {
            let len = fs.file_len(&from).unwrap_or(0);
            if self.bytes.saturating_add(len) > self.cap {
                report.damaged_not_kept += 1;
            } else if fs.create_dir_all(&self.dir).is_ok()
                && fs.copy(&from, &self.dir.join(name)).is_ok()
            {
                self.names.insert(name.to_owned());
                self.bytes += len;
            }
        }
        report.damaged_bytes = self.bytes;
    }
}
