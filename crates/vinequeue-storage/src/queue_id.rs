//! [`QueueId`]: the identity of a queue, kept with its data, so that `(queue id, sequence
//! number)` names an item uniquely across every queue that writes into one backend.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;

/// A queue's identity: 128 random bits, shown as a UUID (version 4). A durable queue's is
/// created with its log and kept in its directory; a memory-only queue gets a fresh one
/// per process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(u128);

impl QueueId {
    /// A fresh random identity (a version 4 UUID).
    pub fn random() -> Self {
        // Two hashers with keys the standard library draws from the operating system's
        // randomness, fed the time and a process-wide counter: 128 bits that no other
        // queue, here or elsewhere, will draw.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let half = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(nanos);
            h.write_u64(n);
            h.write_u32(std::process::id());
            h.write_u64(salt);
            h.finish()
        };
        let bits = (u128::from(half(1)) << 64) | u128::from(half(2));
        // Version 4, variant 1 (RFC 9562), so that backends with a UUID type take it.
        let bits = (bits & !(0xF << 76)) | (0x4 << 76);
        let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
        QueueId(bits)
    }

    /// The identity with these 128 bits.
    pub const fn from_u128(bits: u128) -> Self {
        QueueId(bits)
    }

    /// The 128 bits.
    pub const fn as_u128(&self) -> u128 {
        self.0
    }

    /// The 16 bytes, big-endian (a UUID's byte order).
    pub const fn to_bytes(&self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The identity from 16 big-endian bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        QueueId(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for QueueId {
    /// The UUID form: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (b >> 96) as u32,
            (b >> 80) as u16,
            (b >> 64) as u16,
            (b >> 48) as u16,
            b & 0xFFFF_FFFF_FFFF
        )
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({self})")
    }
}

/// A string that is not a queue id (the UUID form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseQueueIdError;

impl fmt::Display for ParseQueueIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a queue id: expected 32 hex digits in the UUID form (8-4-4-4-12)")
    }
}

impl std::error::Error for ParseQueueIdError {}

impl FromStr for QueueId {
    type Err = ParseQueueIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let groups: Vec<&str> = s.trim().split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return Err(ParseQueueIdError);
        }
        let hex: String = groups.concat();
        if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(ParseQueueIdError);
        }
        u128::from_str_radix(&hex, 16)
            .map(QueueId)
            .map_err(|_| ParseQueueIdError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuids_that_parse_back_and_differ() {
        let a = QueueId::random();
        let b = QueueId::random();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4", "version 4: {text}");
        assert!("89ab".contains(&text[19..20]), "variant 1: {text}");
        assert_eq!(text.parse::<QueueId>(), Ok(a));
        assert_eq!(QueueId::from_bytes(a.to_bytes()), a);
        assert!("not-an-id".parse::<QueueId>().is_err());
        assert!("0123456789abcdef0123456789abcdef"
            .parse::<QueueId>()
            .is_err());
    }
}
