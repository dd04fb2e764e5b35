//! The one module of this crate with `unsafe` code: a shared memory map of a log file,
//! and the `posix_fallocate` call.
//!
//! # Why the map is sound
//!
//! Mapping a file is unsafe because anyone who truncates or writes the file while it is
//! mapped changes memory under our feet (or makes it vanish: SIGBUS). Who could?
//!
//! * **Other processes.** The log directory is mode 0700 and its files 0600, and every
//!   opener takes the directory's `LOCK` (`flock`) first; a second VineQueue fails with
//!   `Error::Locked`. A process of the same user that ignores the lock and truncates a
//!   segment can still crash us: that is outside what any mmap-based store can prevent.
//! * **This process.** The log opens each segment once. Truncation goes through
//!   [`MappedFile::truncate`], which consumes the map first. Preallocation before mapping
//!   means a full disk shows up as an error at creation, never as SIGBUS on a write.
//! * **Our own threads.** Bytes below `published` are never written again; bytes above it
//!   are written by one writer at a time (checked by the `writing` flag) and only become
//!   readable once published with `Release` ordering; readers check their range against
//!   `published` loaded with `Acquire`. So no byte is ever read and written concurrently.
//!
//! The device itself is the one thing left: a write-back that fails can make the kernel
//! drop the pages it could not write (the fault model `FsFile::start_writeback`
//! documents), and a mapped page dropped so reads back what the disk holds. The log
//! fails for good on the first such error; a reader in the middle of a slice can still
//! see different bytes, as with any store that maps its files.
#![expect(
    unsafe_code,
    reason = "a shared map of a log file, madvise and posix_fallocate; each block states its invariant"
)]

use crossbeam_utils::CachePadded;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use memmap2::{MmapOptions, MmapRaw};

use crate::fs::FsFile;

/// A log file mapped shared, read-write. (Public only with the feature `testing`.)
#[derive(Debug)]
pub struct MappedFile {
    /// The descriptor, while the file may still be written; `None` once sealed. The map
    /// keeps the file open by itself (its syncs, and the report of a failed write-back,
    /// go through the map's own reference to the open file), so a log of many sealed
    /// segments holds one descriptor, not one per segment.
    file: Mutex<Option<File>>,
    /// Where it lies, to open it again for a read through the file once sealed.
    path: PathBuf,
    /// `None` for an empty file (a zero-length map is not allowed).
    map: Option<MmapRaw>,
    len: u64,
    /// Bytes below this are immutable and readable; never decreases. (On a cache line of
    /// its own, as is `writing`: readers load it for every record, the writer stores it
    /// for every record, and neither should drag the other fields' line along.)
    published: CachePadded<AtomicU64>,
    /// Set while a writer is inside `write_publish`.
    writing: CachePadded<AtomicBool>,
}

impl MappedFile {
    pub(crate) fn map(file: File, path: &Path, len: u64, published: u64) -> io::Result<Self> {
        let map = if len == 0 {
            None
        } else {
            let map_len = usize::try_from(len).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "file too large to map")
            })?;
            Some(MmapOptions::new().len(map_len).map_raw(&file)?)
        };
        Ok(MappedFile {
            file: Mutex::new(Some(file)),
            path: path.to_path_buf(),
            map,
            len,
            published: CachePadded::new(AtomicU64::new(published)),
            writing: CachePadded::new(AtomicBool::new(false)),
        })
    }

    fn base(&self) -> *mut u8 {
        self.map
            .as_ref()
            .map_or(std::ptr::NonNull::dangling().as_ptr(), |m| m.as_mut_ptr())
    }
}

impl FsFile for MappedFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    fn write_publish(&self, offset: u64, parts: &[&[u8]]) {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        assert!(
            self.writing
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok(),
            "two writers on one log file"
        );
        let published = self.published.load(Ordering::Relaxed);
        assert!(
            offset >= published && offset.checked_add(total).is_some_and(|end| end <= self.len),
            "write of {total} bytes at {offset} outside the writable range {published}..{}",
            self.len
        );
        let mut at = offset as usize;
        for part in parts {
            // SAFETY: 1. `at..at + part.len()` lies within `published..len` (asserted
            // above), so it is inside the map and no reader looks at it (readers stay
            // below `published`); 2. the `writing` flag makes us the only writer; 3. the
            // source is a separate Rust slice, so the ranges do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), self.base().add(at), part.len());
            }
            at += part.len();
        }
        self.published.store(offset + total, Ordering::Release);
        self.writing.store(false, Ordering::Release);
    }

    fn read_with<R>(&self, offset: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let published = self.published.load(Ordering::Acquire);
        assert!(
            offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= published),
            "read of {len} bytes at {offset} beyond the published {published}"
        );
        if len == 0 {
            return f(&[]);
        }
        // SAFETY: the range is below `published` (asserted, with Acquire ordering pairing
        // with the writer's Release), so it is inside the map, fully written, and never
        // written again while the map lives (module docs).
        let bytes = unsafe { std::slice::from_raw_parts(self.base().add(offset as usize), len) };
        f(bytes)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let published = self.published.load(Ordering::Acquire);
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > published)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "read of {} bytes at {offset} beyond the published {published}",
                    buf.len()
                ),
            ));
        }
        let held = self.file.lock();
        match held.as_ref() {
            Some(file) => std::os::unix::fs::FileExt::read_exact_at(file, buf, offset),
            None => {
                drop(held);
                let file = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&self.path)?;
                std::os::unix::fs::FileExt::read_exact_at(&file, buf, offset)
            }
        }
    }

    fn seal(&self) {
        *self.file.lock() = None;
    }

    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        match &self.map {
            Some(map) if len > 0 => map.flush_range(offset as usize, len as usize),
            _ => Ok(()),
        }
    }

    fn prepare(&self, offset: u64, len: u64) {
        #[cfg(target_os = "linux")]
        if let Some(map) = &self.map {
            // Only a hint: the file is preallocated, so populating cannot run out of
            // space; an error (an older kernel without MADV_POPULATE_WRITE) changes
            // nothing, the writes then fault the pages in themselves.
            let _ = map.advise_range(
                memmap2::Advice::PopulateWrite,
                offset as usize,
                len as usize,
            );
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
    }

    /// Without `SYNC_FILE_RANGE_WAIT_*`, `sync_file_range` neither waits for the writes
    /// nor takes the report of a write-back that fails on the device from the file: that
    /// stays for the next sync (`msync` on the same open file). What it returns is an
    /// error of starting the write-back; "not supported", and a shortage that leaves the
    /// pages dirty, are none.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if len > 0 {
            use std::os::unix::io::AsRawFd;
            // Sealed: nothing more to write back ahead (only a hint).
            let held = self.file.lock();
            let Some(file) = held.as_ref() else {
                return Ok(());
            };
            // SAFETY: a plain system call on a descriptor that `held` keeps open for
            // the call's duration; it touches no memory of ours.
            let r = unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    offset as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            if r != 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    // Not supported; or (ENOMEM, EAGAIN) given up for now with the
                    // pages left dirty, for the next sync to write.
                    Some(
                        libc::EINVAL
                        | libc::ESPIPE
                        | libc::ENOSYS
                        | libc::EOPNOTSUPP
                        | libc::ENOMEM
                        | libc::EAGAIN,
                    ) => Ok(()),
                    _ => Err(e),
                };
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
        Ok(())
    }

    fn expect_small_syncs(&self, expect: bool) {
        if let Some(map) = &self.map {
            // Faults through a map advised `Random` read no pages around the one
            // faulted, so the page cache gets one small page per fault (readahead
            // allocates large ones). Only a hint: an error changes nothing.
            let advice = if expect {
                memmap2::Advice::Random
            } else {
                memmap2::Advice::Normal
            };
            let _ = map.advise(advice);
        }
    }

    fn release(&self, offset: u64, len: u64) -> u64 {
        const PAGE: u64 = 4096;
        let Some(map) = &self.map else {
            return offset + len;
        };
        let end = (offset + len).min(self.published.load(Ordering::Acquire)) / PAGE * PAGE;
        let start = offset.div_ceil(PAGE) * PAGE;
        if start >= end {
            return offset;
        }
        // SAFETY: `MADV_DONTNEED` on a `MAP_SHARED` map of a regular file drops only this
        // process's page-table entries for the range; it discards no data (a dirty page
        // stays dirty in the page cache, and a later sync writes it), and the next access
        // faults the page in again from the page cache, or from the file if the kernel
        // wrote it back and evicted it. The range lies below `published`, whose bytes are
        // never written again (module docs), so a reader holding a slice into it reads
        // the bytes it read before, as without the advice. The one way those bytes can
        // change is the kernel dropping a page after a failed write-back (the device
        // fault of the module docs), which unmaps it from every process with or without
        // this advice: the advice adds no case to those. It is a hint: an error changes
        // nothing and is ignored.
        let _ = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start as usize,
                (end - start) as usize,
            )
        };
        end
    }

    fn truncate(self, len: u64) -> io::Result<Self> {
        let MappedFile {
            file, map, path, ..
        } = self;
        drop(map); // unmap before the file shrinks
        let file = match file.into_inner() {
            Some(file) => file,
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)?,
        };
        file.set_len(len)?;
        file.sync_all()?;
        MappedFile::map(file, &path, len, len)
    }
}

/// `posix_fallocate(fd, 0, len)`.
pub(crate) fn posix_fallocate(fd: RawFd, len: libc::off_t) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: a plain system call on a descriptor the caller keeps open for the call's
    // duration; it touches no memory of ours.
    let rc = unsafe { libc::posix_fallocate(fd, 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
