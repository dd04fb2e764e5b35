//! Reading records back in order, stepping over acknowledged ranges.

use super::*;

/// Most ranges of acknowledged records one read steps over (beyond them, records already
/// acknowledged may be handed out again, which the contract allows).
pub(super) const READ_SKIP_RANGES: usize = 1024;

impl<F: Fs> LogState<F> {
    pub(super) fn read(
        &self,
        from: u64,
        max: usize,
        visit: &mut KeyedVisit<'_>,
    ) -> Result<usize, Error> {
        let from = from.max(1);
        let segments: Vec<Arc<Segment<F>>> = self.segments.read().clone();
        let start = segments
            .partition_point(|s| s.first_seq <= from)
            .saturating_sub(1);
        let mut visited = 0;
        // Records acknowledged above the mark are not handed out again (after a restart,
        // those delivered after a record that waits, or discarded out of order).
        let acked = self.acks.lock().ranges_from(from, READ_SKIP_RANGES);
        let mut acked = acked.into_iter().peekable();
        // Numbers stepped over as damaged: no read will ever deliver their records.
        let mut lost: Vec<(u64, u64)> = Vec::new();
        for (i, seg) in segments.iter().enumerate().skip(start) {
            if visited >= max {
                break;
            }
            // `last` first: the writer publishes a frame's bytes before it stores the
            // frame's number in `last_seq`, so every frame up to `last` lies below `end`.
            // A frame beyond `last` may be published already; it is the end of what this
            // read sees, not damage.
            let last = seg.last_seq.load(Ordering::Acquire);
            let end = seg.file.published();
            // Records in a segment are consecutive except across damage, exactly as
            // recovery read them: the next frame must hold `floor`, or it is damage and
            // the read resynchronises as recovery did.
            // (`read_start`: where the search for `from` began reading.)
            let (read_start, mut pos, mut floor) = if i == start {
                seg.locate_walking(from)
            } else {
                let header = SEGMENT_HEADER_LEN as u64;
                (header, header, seg.first_seq)
            };
            let mut stopped = false;
            while floor <= last && pos < end && visited < max {
                let frame = seg.file.read_with(pos, (end - pos) as usize, |b| {
                    decode_frame(b, seg.salt, seg.max_len)
                });
                let reason = match frame {
                    Frame::Record {
                        seq,
                        len,
                        keyed,
                        positioned,
                    } if seq == floor => {
                        let body = pos + FRAME_HEADER_LEN as u64;
                        pos = body + len as u64;
                        floor = seq + 1;
                        if seq < from {
                            continue;
                        }
                        while acked.next_if(|&(_, hi)| hi < seq).is_some() {}
                        if acked.peek().is_some_and(|&(lo, _)| lo <= seq) {
                            continue;
                        }
                        visited += 1;
                        let go_on = seg.file.read_with(body, len as usize, |b| {
                            let p = split_payload(b, keyed, positioned);
                            visit(seq, p.key, p.record)
                        });
                        if !go_on {
                            stopped = true;
                            break;
                        }
                        continue;
                    }
                    // Records up to `last` follow: zeros here are a zeroed block (a media
                    // error, a lost write), not the end of the data.
                    Frame::End => "zeroed frame header before later records",
                    Frame::Record { .. } => OUT_OF_SEQUENCE,
                    Frame::Bad(reason) => reason,
                };
                if self.opts.recovery_mode == RecoveryMode::Strict {
                    if i + 1 < segments.len() {
                        seg.release_read(read_start, pos, false);
                    }
                    return Err(Error::Corrupt {
                        file: seg.path.clone(),
                        offset: pos,
                        reason: reason.into(),
                    });
                }
                self.read_corrupt.fetch_add(1, Ordering::Relaxed);
                match Frames::of(seg)
                    .find_lowest_valid(&mut Reader::new(&seg.file), pos + 1, floor, last)
                    .map_err(io_err)?
                {
                    Some((p, found)) => {
                        lost.push((floor, found - 1));
                        pos = p;
                        floor = found;
                    }
                    None => {
                        lost.push((floor, last));
                        break;
                    }
                }
            }
            // Sealed segments only: behind the writer, the active segment's pages leave
            // the mapping as it moves on (under `Periodic` and `Immediate`), and
            // unmapping them here too would interrupt the writer's core once more.
            if i + 1 < segments.len() {
                seg.release_read(read_start, pos, floor > last || pos >= end);
            }
            *seg.read_hint.lock() = (floor, pos);
            if stopped {
                break;
            }
        }
        if !lost.is_empty() {
            // Acknowledged on the spot, like the numbers recovery found no record for:
            // nobody would ever acknowledge them, and the mark would stop below them.
            // Best effort: a failed reclaim is tried again by the next acknowledgement
            // that moves the mark, and this read did what it was asked.
            let _ = self.record_acks(&lost);
        }
        Ok(visited)
    }
}
