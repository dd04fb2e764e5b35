//! A file on the simulated file system: writes into the page cache, syncs that make
//! pages durable, injected failures.

use super::*;

/// A file on a [`SimFs`].
#[derive(Debug)]
pub struct SimFile {
    pub(super) node: Arc<Node>,
    pub(super) fs: SimFs,
    pub(super) len: u64,
    pub(super) published: AtomicU64,
    pub(super) writing: AtomicBool,
}

impl SimFile {
    /// Marks the dirty pages `first..last` clean without making them durable.
    fn drop_dirty(&self, first: usize, last: usize) {
        let mut d = self.node.data.lock();
        let lost: Vec<usize> = d.dirty.range(first..last).copied().collect();
        for page in lost {
            d.dirty.remove(&page);
        }
    }
}

impl FsFile for SimFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    fn write_publish(&self, offset: u64, parts: &[&[u8]]) {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        assert!(
            !self.writing.swap(true, Ordering::Acquire),
            "two writers on one log file"
        );
        let published = self.published.load(Ordering::Relaxed);
        assert!(
            offset >= published && offset + total <= self.len,
            "write outside the writable range"
        );
        {
            let mut d = self.node.data.lock();
            let mut at = offset as usize;
            for part in parts {
                d.cache[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            let (first, last) = (
                offset as usize / PAGE,
                (offset + total).max(1) as usize / PAGE,
            );
            for page in first..=last {
                d.dirty.insert(page);
            }
        }
        self.published.store(offset + total, Ordering::Release);
        self.writing.store(false, Ordering::Release);
    }

    fn read_with<R>(&self, offset: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(
            offset + len as u64 <= self.published.load(Ordering::Acquire),
            "read beyond the published range"
        );
        // Copy out, then call `f` without the lock: `f` may write to this file.
        let bytes = self.node.data.lock().cache[offset as usize..offset as usize + len].to_vec();
        f(&bytes)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if let Some(f) = self.fs.lock()?.take_fault(FaultOp::Read) {
            return Err(f.strike());
        }
        let published = self.published.load(Ordering::Acquire);
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= published)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "read beyond the published range",
                )
            })?;
        let d = self.node.data.lock();
        let bytes = d
            .cache
            .get(offset as usize..end as usize)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fs.pause_point(FaultOp::Sync);
        let mut st = self.fs.lock()?;
        let first = offset as usize / PAGE;
        let last = (offset + len).div_ceil(PAGE as u64) as usize;
        if let Some(f) = st.take_fault(FaultOp::Sync) {
            // fsyncgate: the kernel marks the failed pages clean; their data is gone.
            self.drop_dirty(first, last);
            drop(st);
            return Err(f.strike());
        }
        st.syncs += 1;
        let mut d = self.node.data.lock();
        let pages: Vec<usize> = d.dirty.range(first..last).copied().collect();
        for page in pages {
            let start = page * PAGE;
            let end = ((page + 1) * PAGE).min(d.cache.len());
            if start < end {
                let src = d.cache[start..end].to_vec();
                d.durable[start..end].copy_from_slice(&src);
            }
            d.dirty.remove(&page);
        }
        Ok(())
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fs.pause_point(FaultOp::WriteBack);
        let mut st = self.fs.lock()?;
        if let Some(f) = st.take_fault(FaultOp::WriteBack) {
            let first = offset as usize / PAGE;
            let last = (offset + len).div_ceil(PAGE as u64) as usize;
            self.drop_dirty(first, last);
            drop(st);
            return Err(f.strike());
        }
        Ok(())
    }

    fn truncate(self, len: u64) -> io::Result<Self> {
        let _st = self.fs.lock()?;
        {
            let mut d = self.node.data.lock();
            d.cache.truncate(len as usize);
            d.durable.truncate(len as usize);
            let pages = (len as usize).div_ceil(PAGE);
            d.dirty.retain(|&p| p < pages);
        }
        Ok(SimFile {
            node: self.node,
            fs: self.fs.clone(),
            len,
            published: AtomicU64::new(len),
            writing: AtomicBool::new(false),
        })
    }
}
