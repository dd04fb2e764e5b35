//! Exponential backoff with jitter between send attempts.

use std::time::Duration;

/// Pauses between attempts: `first * 2^n`, capped at `max`, with "equal jitter" (a pause
/// of `d` becomes a uniform pick in `[d/2, d]`) so that many queues failing together do
/// not retry in lockstep, while the pause never drops below half its nominal value.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    rng: SplitMix64,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            rng: SplitMix64::from_entropy(),
        }
    }

    /// The pause before retry number `retry` (0 = the pause after the first failure).
    pub(crate) fn pause(&mut self, retry: u32) -> Duration {
        let nominal = self.nominal(retry);
        let half = nominal / 2;
        let span = (nominal - half).as_nanos() as u64;
        let extra = if span == 0 {
            0
        } else {
            self.rng.next() % (span + 1)
        };
        half + Duration::from_nanos(extra)
    }

    fn nominal(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.first
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// A small, fast, non-cryptographic generator; jitter needs nothing stronger.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // `RandomState` is seeded from the OS once per process and varied per instance.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        SplitMix64(h.finish())
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_the_cap_and_stays_within_jitter_bounds() {
        let first = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let mut b = Backoff::new(first, max);
        let nominal = [100, 200, 400, 800, 1000, 1000, 1000];
        for (retry, ms) in nominal.iter().enumerate() {
            let d = Duration::from_millis(*ms);
            for _ in 0..200 {
                let p = b.pause(retry as u32);
                assert!(
                    p >= d / 2 && p <= d,
                    "retry {retry}: {p:?} outside [{:?}, {d:?}]",
                    d / 2
                );
            }
        }
        // huge retry counts neither overflow nor exceed the cap
        assert!(b.pause(u32::MAX) <= max);
    }

    #[test]
    fn jitter_actually_varies() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let picks: std::collections::HashSet<_> = (0..50).map(|_| b.pause(2)).collect();
        assert!(picks.len() > 10);
    }
}
