//! CRC32C of the log's frames, which are mostly small: tens to hundreds of bytes.
//!
//! The `crc32c` crate feeds a buffer's unaligned head and tail to the CPU a byte at a
//! time, and for a record of ~80 bytes at an odd offset those byte steps are most of the
//! work. With SSE 4.2, [`append`] reads eight bytes at a time from any alignment (x86
//! loads need none), then four, then single bytes; longer buffers go to the crate, whose
//! three-way interleaved loop wins there. The values are the crate's (a test compares
//! them over lengths and alignments).
#![expect(
    unsafe_code,
    reason = "calling the SSE 4.2 form once the CPU is known to have it"
)]

/// Longest buffer [`append`] checksums itself (beyond it, the crate's parallel loop is
/// faster).
const SMALL: usize = 512;

/// The CRC32C of `bytes`.
#[inline]
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    append(0, bytes)
}

/// The CRC32C of the bytes `crc` covers followed by `bytes`.
#[inline]
pub(crate) fn append(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() <= SMALL && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2 (checked on the line above), the one requirement
        // of a `target_feature(enable = "sse4.2")` function.
        return unsafe { sse42::append(crc, bytes) };
    }
    crc32c::crc32c_append(crc, bytes)
}

#[cfg(target_arch = "x86_64")]
mod sse42 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};

    /// [`super::append`] with the CRC32 instructions of SSE 4.2.
    #[target_feature(enable = "sse4.2")]
    pub(super) fn append(crc: u32, bytes: &[u8]) -> u32 {
        let mut c = u64::from(!crc);
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            c = _mm_crc32_u64(c, u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let mut c = c as u32;
        let mut halves = words.remainder().chunks_exact(4);
        for h in &mut halves {
            c = _mm_crc32_u32(c, u32::from_le_bytes(h.try_into().expect("4 bytes")));
        }
        for &b in halves.remainder() {
            c = _mm_crc32_u8(c, b);
        }
        !c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_values_as_the_crate_at_every_length_and_alignment() {
        let data: Vec<u8> = (0..2048u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..16 {
            for len in (0..700).chain([1023, 1024, 2000]) {
                let b = &data[start..start + len];
                assert_eq!(crc32c(b), crc32c::crc32c(b), "len {len} at {start}");
                for seed in [0, 1, 0xdead_beef, u32::MAX] {
                    assert_eq!(
                        append(seed, b),
                        crc32c::crc32c_append(seed, b),
                        "len {len} at {start} after {seed:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_changed_byte_changes_the_checksum() {
        let mut b = vec![7u8; 100];
        let before = crc32c(&b);
        b[63] ^= 1;
        assert_ne!(crc32c(&b), before);
    }
}
