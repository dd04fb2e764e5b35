//! The narrow file layer under the log: the real one (`RealFs`, files and mmaps) and,
//! behind the `testing` feature, a simulated one (`crate::sim::SimFs`) that models the
//! page cache, power cuts and injected errors.
//!
//! A file is *append-only after publication*: bytes below [`FsFile::published`] are never
//! written again and may be read by any thread; bytes at or above it are written by one
//! writer at a time, which publishes them when done. This discipline, checked at run time
//! by every implementation, is what makes sharing a memory map between a writer and
//! readers sound.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::mmap::MappedFile;

/// A file of the log, mapped (or simulated) for byte access.
pub trait FsFile: Send + Sync + 'static {
    /// Length in bytes (fixed while the file is open).
    fn len(&self) -> u64;

    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// End of the published region: bytes below it are immutable and readable.
    fn published(&self) -> u64;

    /// Writes `parts` back to back starting at `offset`, then publishes up to their end.
    ///
    /// # Panics
    ///
    /// If `offset` is below [`published`](FsFile::published), the write runs past
    /// [`len`](FsFile::len), or another thread is writing at the same time.
    fn write_publish(&self, offset: u64, parts: &[&[u8]]);

    /// Calls `f` with the `len` bytes at `offset`, which must be published.
    ///
    /// # Panics
    ///
    /// If the range is not entirely below [`published`](FsFile::published).
    fn read_with<R>(&self, offset: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R;

    /// Fills `buf` with the published bytes at `offset`, read through the file rather
    /// than the map (`pread`): a device that fails the read, or a file another process
    /// shrank, is an error here, where a read through the map would raise `SIGBUS`.
    /// Recovery reads what it checks this way.
    ///
    /// # Errors
    ///
    /// The operating system's error; `UnexpectedEof` if the file ends first;
    /// `InvalidInput` for a range beyond [`published`](FsFile::published).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Makes the bytes in `offset..offset + len` durable (`msync`).
    ///
    /// # Errors
    ///
    /// The operating system's error; after it, what reached the disk is unknown.
    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Hint: start writing the bytes in `offset..offset + len` to the disk now, without
    /// waiting, and without changing them. For published bytes that will be synced
    /// later: the sync finds less to do. For a range that holds no record yet (zeros, or
    /// what `prepare` left there) and will be written a few records at a time, each group
    /// synced: a file system that preallocates blocks marks them unwritten (ext4, XFS)
    /// and records their first write in the file's block map, which the sync covering
    /// that write must then also write; written ahead, the blocks are initialized once
    /// per range, not once per sync. Durability is unchanged (only a sync makes bytes
    /// durable). The default does nothing.
    ///
    /// # Errors
    ///
    /// A write-back that could not be started. The caller must take it for a failed
    /// sync: the file system may have dropped the range's dirty pages without keeping
    /// the error for the next sync to report (ext4 does, when it cannot map the blocks).
    /// An error that only says the call is not supported, or that the write-back was put
    /// off with the pages left dirty (out of memory), is not returned. A write-back
    /// that fails later, on the device, is reported by the next sync as usual.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// Hint: `offset..offset + len` will be written soon; make it ready for writing now
    /// (map its pages in), so that the writes do not fault page by page. The default
    /// does nothing.
    fn prepare(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// Hint: whether the file will be synced a few records at a time (group commits;
    /// `false` once that is over). A sync writes back every cached page that holds a
    /// byte not yet written, in full, and readahead fills the cache with pages of up to
    /// 2 MiB: while `expect` is set, keep this file's new pages small (one per 4 KiB),
    /// so that a sync writes only the few KiB it must. The cost is no readahead when a
    /// read through this handle misses the page cache meanwhile. The default does
    /// nothing.
    fn expect_small_syncs(&self, expect: bool) {
        let _ = expect;
    }

    /// Hint: the published bytes in `offset..offset + len` need not stay in this
    /// process's memory (their contents do not change; a later read brings them back from
    /// the page cache or the disk). Synced or not: bytes not yet synced stay in the page
    /// cache, and a later sync writes them. Whole pages inside the range only: returns
    /// where the next release should start (the end of the last whole page released,
    /// or `offset`). The default does nothing and returns `offset + len`.
    fn release(&self, offset: u64, len: u64) -> u64 {
        offset + len
    }

    /// Hint: the file will not be written again (a sealed segment): it may give up what
    /// only writing needs, such as its descriptor, so that a log of many segments holds
    /// few. Reads, syncs and [`read_at`](FsFile::read_at) keep working. The default does
    /// nothing.
    fn seal(&self) {}

    /// Shrinks the file to `len` bytes and makes that durable, unmapping and remapping it.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn truncate(self, len: u64) -> io::Result<Self>
    where
        Self: Sized;
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// File name (not UTF-8 names are reported lossily).
    pub name: String,
    /// Whether it is a regular file.
    pub is_file: bool,
}

/// The file-system operations the log needs, and nothing more.
pub trait Fs: Send + Sync + 'static {
    /// An open, mapped file.
    type File: FsFile;
    /// Proof of holding a directory's lock; dropping it releases the lock.
    type Lock: Send + Sync + 'static;

    /// Creates `dir` and its parents (new directories get mode 0700).
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// The permission bits of `dir` (following a link to it), or `None` where it does
    /// not exist or the file system has none. The default says `None`.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn dir_mode(&self, dir: &Path) -> io::Result<Option<u32>> {
        let _ = dir;
        Ok(None)
    }

    /// Takes the exclusive lock of `dir` (file `LOCK` inside it); `None` if another
    /// holder has it.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn try_lock(&self, dir: &Path) -> io::Result<Option<Self::Lock>>;

    /// Lists `dir`.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;

    /// Creates a new file (mode 0600) of `len` bytes, preallocated on the device so that
    /// writes through the map can never fail for lack of space, and durable as to its size.
    /// On failure no file is left behind.
    ///
    /// # Errors
    ///
    /// `AlreadyExists`, `ENOSPC` (`StorageFull`) and the like.
    fn create(&self, path: &Path, len: u64) -> io::Result<Self::File>;

    /// Opens and maps an existing file; all of it is published.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn open(&self, path: &Path) -> io::Result<Self::File>;

    /// Whether recovery may open and read several files at once, from threads of its
    /// own. The default says no: a simulated disk that injects faults by counting its
    /// calls needs them in a fixed order.
    fn parallel_reads(&self) -> bool {
        false
    }

    /// Reads a whole small file, refusing files over `limit` bytes.
    ///
    /// # Errors
    ///
    /// The operating system's error; `InvalidData` over the limit.
    fn read_small(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>>;

    /// Creates or replaces a small file (mode 0600) with `data` and makes it durable.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn write_small(&self, path: &Path, data: &[u8]) -> io::Result<()>;

    /// Overwrites `data.len()` bytes at `offset` of an existing file, without changing its
    /// size (so needing no free space), and makes them durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn overwrite(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Renames a file (atomically replacing `to`).
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Copies a file to a new file `to` (used to keep damaged segments aside), never
    /// following a link at `from`, at `to` or at `to`'s directory.
    ///
    /// # Errors
    ///
    /// The operating system's error; `AlreadyExists` if `to` exists.
    fn copy(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Size of a file in bytes.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
}

/// The real file system: files preallocated with `posix_fallocate` and mapped shared.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

/// Holds a directory's `LOCK` file locked (`flock`); released on drop.
#[derive(Debug)]
pub struct RealLock {
    _file: File,
    _path: PathBuf,
}

impl Fs for RealFs {
    type File = MappedFile;
    type Lock = RealLock;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }

    fn dir_mode(&self, dir: &Path) -> io::Result<Option<u32>> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(dir) {
            Ok(m) => Ok(Some(m.permissions().mode() & 0o7777)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn try_lock(&self, dir: &Path) -> io::Result<Option<RealLock>> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        // A process forked elsewhere in this program holds a copy of a just-closed lock
        // descriptor until it execs; give such a window a moment before saying "locked".
        for attempt in 0..5 {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(Some(RealLock {
                        _file: file,
                        _path: path,
                    }))
                }
                Err(TryLockError::WouldBlock) if attempt < 4 => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(None)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_file: entry.file_type()?.is_file(),
            });
        }
        Ok(out)
    }

    fn create(&self, path: &Path, len: u64) -> io::Result<MappedFile> {
        create_mapped(path, len, MappedFile::map)
    }

    fn parallel_reads(&self) -> bool {
        true
    }

    fn open(&self, path: &Path) -> io::Result<MappedFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let len = file.metadata()?.len();
        MappedFile::map(file, path, len, len)
    }

    fn read_small(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > limit as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {len} bytes, more than the {limit} expected",
                    path.display()
                ),
            ));
        }
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn write_small(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        // Created anew, never through whatever stands at the name (a link planted
        // there would have the write land elsewhere).
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        file.write_all(data)?;
        file.sync_all()
    }

    fn overwrite(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        if offset + data.len() as u64 > file.metadata()?.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "overwrite past the end of the file",
            ));
        }
        file.write_all_at(data, offset)?;
        file.sync_data()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn copy(&self, from: &Path, to: &Path) -> io::Result<()> {
        if let Some(parent) = to.parent() {
            if !std::fs::symlink_metadata(parent)?.file_type().is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a directory (a link?)", parent.display()),
                ));
            }
        }
        let mut source = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(from)?;
        let mut target = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(to)?;
        let copied = io::copy(&mut source, &mut target).and_then(|_| target.sync_all());
        if copied.is_err() {
            let _ = std::fs::remove_file(to);
        }
        copied
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }
}

/// Creates `path`, preallocates `len` bytes, makes that durable and maps the file with
/// `map`. On any failure the file is removed again: a preallocated file nobody knows of
/// would hold its blocks (and, left in the log's directory, look like a segment whose
/// header was never written).
fn create_mapped(
    path: &Path,
    len: u64,
    map: impl FnOnce(File, &Path, u64, u64) -> io::Result<MappedFile>,
) -> io::Result<MappedFile> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let created = preallocate(&file, len)
        .and_then(|()| file.sync_all())
        .and_then(|()| map(file, path, len, 0));
    if created.is_err() {
        // (The file, if `map` did not consume it, is closed by now.)
        let _ = std::fs::remove_file(path);
    }
    created
}

/// Reserves `len` bytes of device space for `file`, so that later writes through a memory
/// map cannot hit a full disk (which would be a SIGBUS, not an error).
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
    crate::mmap::posix_fallocate(file.as_raw_fd(), len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_ahead_and_small_pages_change_no_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001.seg");
        let len = 4 << 20;
        let file = RealFs.create(&path, len).unwrap();
        file.expect_small_syncs(true);
        let data: Vec<u8> = (0..(3 << 20) + 1234).map(|i| (i % 251) as u8).collect();
        file.prepare(0, len);
        file.write_publish(0, &[&data]);
        // Written ahead over bytes the writer has already reached (a write-ahead thread
        // that fell behind), and over bytes it has not.
        file.start_writeback(0, len).unwrap();
        file.read_with(0, data.len(), |b| assert!(b == &data[..], "bytes changed"));
        file.sync_range(0, data.len() as u64).unwrap();
        drop(file);
        let file = RealFs.open(&path).unwrap();
        file.read_with(0, data.len(), |b| {
            assert!(b == &data[..], "bytes changed, reopened")
        });
        file.read_with(data.len() as u64, (len as usize) - data.len(), |b| {
            assert!(b.iter().all(|&x| x == 0), "the rest is zeros")
        });
    }

    #[test]
    fn a_file_whose_mapping_fails_is_not_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001.seg");
        let err = create_mapped(&path, 64 * 1024, |_, _, _, _| {
            Err(io::Error::from_raw_os_error(libc::ENOMEM))
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM));
        assert!(!path.exists(), "the preallocated file was left on disk");
        // And the name is free for the next attempt.
        let file = RealFs.create(&path, 64 * 1024).unwrap();
        assert_eq!(file.len(), 64 * 1024);
    }
}
