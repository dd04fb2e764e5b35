//! The source position that outlives its records (file `source-position`).
//!
//! A record appended with a source position carries it in its frame (`POSITIONED`), so
//! the position is durable exactly when the record is. Once every record of a segment
//! is acknowledged the segment is deleted, and its positions with it: before that, the
//! reclaim writes the last of them here (under a temporary name, synced, renamed, the
//! directory synced). Recovery hands back the position of the last positioned frame
//! still in a segment, or, when none is left, the one in this file.

use super::*;

pub(crate) const SOURCE_POSITION: &str = "source-position";
pub(crate) const SOURCE_POSITION_TMP: &str = "source-position.tmp";
const MAGIC: [u8; 8] = *b"VQWALSP1";

/// `magic ‖ n u8 ‖ n bytes ‖ crc32c u32 of what precedes it`.
pub(crate) fn encode(position: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(MAGIC.len() + 1 + position.len() + 4);
    b.extend_from_slice(&MAGIC);
    b.push(position.len() as u8);
    b.extend_from_slice(position);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// The position a `source-position` file holds, or `None` if it is damaged.
pub(crate) fn decode(b: &[u8]) -> Option<Vec<u8>> {
    let n = *b.get(MAGIC.len())? as usize;
    let end = MAGIC.len() + 1 + n;
    if b.len() != end + 4 || b[..MAGIC.len()] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(b[end..].try_into().ok()?);
    (crc32c::crc32c(&b[..end]) == crc).then(|| b[MAGIC.len() + 1..end].to_vec())
}

/// The position in `dir`'s `source-position` file, if any. A damaged file: `Strict`
/// refuses to open; otherwise it is ignored (the positions still in segments, if any,
/// say where to resume).
pub(super) fn load<F: Fs>(fs: &F, dir: &Path, opts: &WalOptions) -> Result<Option<Vec<u8>>, Error> {
    let path = dir.join(SOURCE_POSITION);
    match fs.read_small(&path, 4096) {
        Ok(bytes) => match decode(&bytes) {
            Some(position) => Ok(Some(position)),
            None if opts.recovery_mode == RecoveryMode::Strict => Err(Error::Corrupt {
                file: path,
                offset: 0,
                reason: "the source position file does not hold a source position".into(),
            }),
            None => {
                event!(warn, file = %path.display(), "the source position file is damaged; ignored");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

/// Replaces `dir`'s `source-position` file with `position`, durably.
pub(super) fn store<F: Fs>(fs: &F, dir: &Path, position: &[u8]) -> Result<(), Error> {
    let tmp = dir.join(SOURCE_POSITION_TMP);
    fs.write_small(&tmp, &encode(position)).map_err(io_err)?;
    fs.rename(&tmp, &dir.join(SOURCE_POSITION))
        .map_err(io_err)?;
    fs.sync_dir(dir).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_comes_back_and_any_damage_is_found() {
        for position in [&b""[..], b"offset 42", &[0xff; 255]] {
            let b = encode(position);
            assert_eq!(decode(&b).as_deref(), Some(position));
            for i in 0..b.len() * 8 {
                let mut bad = b.clone();
                bad[i / 8] ^= 1 << (i % 8);
                assert_ne!(decode(&bad).as_deref(), Some(position), "bit {i}");
            }
            assert_eq!(decode(&b[..b.len() - 1]), None);
        }
    }
}
