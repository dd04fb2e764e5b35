//! The acknowledgement set: the contiguous mark and the ranges acknowledged above it.

use super::*;

#[derive(Default)]
pub(super) struct Acks {
    /// Every number up to here is acknowledged, or holds no record.
    pub(super) through: u64,
    /// Ranges above `through` that are acknowledged or hold no record (numbers recovery
    /// found no record for, records reads found damaged): start -> end (inclusive),
    /// disjoint and never adjacent. Right after open a range may start at `through + 1`:
    /// the mark moves over it with the next acknowledgement ([`Acks::add`]), so that the
    /// mark a log reports at open is the one its checkpoint holds.
    pub(super) above: BTreeMap<u64, u64>,
    /// `through` as last persisted in the checkpoint.
    pub(super) checkpointed: u64,
    /// Bumped by every acknowledgement that leaves `above` changed (one that only moves
    /// the mark over an empty `above` does not): the checkpoint holds the lowest ranges
    /// of `above`, so that out-of-order acknowledgements survive a restart.
    pub(super) above_version: u64,
    /// `above_version` as last persisted in the checkpoint.
    pub(super) above_checkpointed: u64,
}

impl Acks {
    /// Acknowledges `lo..=hi`, and moves the mark over every range that now reaches it.
    pub(super) fn add(&mut self, lo: u64, hi: u64) {
        let had_ranges = !self.above.is_empty();
        self.insert(lo, hi);
        while let Some((&s, &e)) = self.above.first_key_value() {
            if s > self.through + 1 {
                break;
            }
            self.above.remove(&s);
            self.through = self.through.max(e);
        }
        if had_ranges || !self.above.is_empty() {
            self.above_version += 1;
        }
    }

    /// Whether the checkpoint lags behind the mark or the ranges above it.
    pub(super) fn changed(&self) -> bool {
        self.through > self.checkpointed || self.above_version != self.above_checkpointed
    }

    /// The lowest ranges above the mark, as many as a checkpoint holds.
    pub(super) fn ranges_to_keep(&self) -> Vec<(u64, u64)> {
        self.above
            .iter()
            .take(MAX_CHECKPOINT_RANGES)
            .map(|(&lo, &hi)| (lo, hi))
            .collect()
    }

    /// The ranges above the mark that end at or after `from` (at most `max`), ascending.
    pub(super) fn ranges_from(&self, from: u64, max: usize) -> Vec<(u64, u64)> {
        if self.above.is_empty() {
            return Vec::new();
        }
        let first = self.above.range(..=from).next_back();
        first
            .into_iter()
            .chain(self.above.range(from.saturating_add(1)..))
            .filter(|(_, &hi)| hi >= from)
            .take(max)
            .map(|(&lo, &hi)| (lo, hi))
            .collect()
    }

    /// Whether `seq` is acknowledged (or holds no record).
    /// How many of the numbers `from..=to` are acknowledged.
    pub(super) fn count_within(&self, from: u64, to: u64) -> u64 {
        if to < from {
            return 0;
        }
        let mut n = to.min(self.through).saturating_add(1).saturating_sub(from);
        // The range that starts at or below `from`, then those that start inside
        // (`from < to` here: a range with its start above its end would panic).
        let first = self.above.range(..=from).next_back();
        let inside = (from < to).then(|| self.above.range(from + 1..=to));
        for (&lo, &hi) in first.into_iter().chain(inside.into_iter().flatten()) {
            let (lo, hi) = (lo.max(from), hi.min(to));
            if lo <= hi {
                n += hi - lo + 1;
            }
        }
        n
    }

    pub(super) fn covers(&self, seq: u64) -> bool {
        seq <= self.through
            || self
                .above
                .range(..=seq)
                .next_back()
                .is_some_and(|(_, &end)| seq <= end)
    }

    /// Records `lo..=hi` as acknowledged without moving the mark: merged with the ranges
    /// it overlaps or touches, in time logarithmic in the number of ranges (plus those
    /// merged), however long the range.
    pub(super) fn insert(&mut self, lo: u64, hi: u64) {
        let (mut lo, mut hi) = (lo.max(self.through + 1), hi);
        if lo > hi {
            return;
        }
        // The ranges overlapping or touching `lo..=hi` are consecutive: walk back from the
        // last one starting at or before `hi + 1` while they reach `lo - 1` (the ranges
        // are disjoint, so their ends ascend with their starts).
        while let Some((&s, &e)) = self.above.range(..=hi.saturating_add(1)).next_back() {
            if e.saturating_add(1) < lo {
                break;
            }
            self.above.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.above.insert(lo, hi);
    }
}
