//! The file-system operations of the simulated machine (`Fs for SimFs`) and its
//! directory locks.

use super::*;

impl Fs for SimFs {
    type File = SimFile;
    type Lock = SimLock;

    fn parallel_reads(&self) -> bool {
        self.parallel
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock()?;
        for ancestor in dir.ancestors() {
            st.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn try_lock(&self, dir: &Path) -> io::Result<Option<SimLock>> {
        let mut st = self.lock()?;
        if !st.locked.insert(dir.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(SimLock {
            fs: self.clone(),
            dir: dir.to_path_buf(),
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let st = self.lock()?;
        if !st.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let mut out: Vec<DirEntry> = st
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .map(|p| DirEntry {
                name: p.file_name().unwrap().to_string_lossy().into_owned(),
                is_file: true,
            })
            .collect();
        out.extend(
            st.dirs
                .iter()
                .filter(|p| p.parent() == Some(dir))
                .map(|p| DirEntry {
                    name: p.file_name().unwrap().to_string_lossy().into_owned(),
                    is_file: false,
                }),
        );
        Ok(out)
    }

    fn create(&self, path: &Path, len: u64) -> io::Result<SimFile> {
        self.pause_point(FaultOp::Create);
        let mut st = self.lock()?;
        if let Some(f) = st.take_fault(FaultOp::Create) {
            drop(st);
            return Err(f.strike());
        }
        if st.live.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        if let Some(cap) = st.capacity {
            if st.used() + len > cap {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let node = Arc::new(Node {
            data: Mutex::new(NodeData {
                cache: vec![0; len as usize],
                durable: vec![0; len as usize],
                dirty: BTreeSet::new(),
            }),
        });
        st.live.insert(path.to_path_buf(), Arc::clone(&node));
        st.pending
            .push(DirOp::Insert(path.to_path_buf(), Arc::clone(&node)));
        Ok(SimFile {
            node,
            fs: self.clone(),
            len,
            published: AtomicU64::new(0),
            writing: AtomicBool::new(false),
        })
    }

    fn open(&self, path: &Path) -> io::Result<SimFile> {
        let st = self.lock()?;
        let node = st
            .live
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        let len = node.data.lock().cache.len() as u64;
        Ok(SimFile {
            node,
            fs: self.clone(),
            len,
            published: AtomicU64::new(len),
            writing: AtomicBool::new(false),
        })
    }

    fn read_small(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
        let st = self.lock()?;
        let node = st
            .live
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        let data = node.data.lock().cache.clone();
        if data.len() > limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
        }
        Ok(data)
    }

    fn write_small(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.pause_point(FaultOp::WriteSmall);
        let mut st = self.lock()?;
        if let Some(f) = st.take_fault(FaultOp::WriteSmall) {
            // Opened with `O_TRUNC`, then the write failed: an empty file is left.
            let node = st.live.entry(path.to_path_buf()).or_default().clone();
            st.pending
                .push(DirOp::Insert(path.to_path_buf(), Arc::clone(&node)));
            let mut d = node.data.lock();
            d.cache.clear();
            d.durable.clear();
            d.dirty.clear();
            drop((d, st));
            return Err(f.strike());
        }
        if let Some(cap) = st.capacity {
            if st.used() + data.len() as u64 > cap {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let node = st.live.entry(path.to_path_buf()).or_default().clone();
        st.pending
            .push(DirOp::Insert(path.to_path_buf(), Arc::clone(&node)));
        let mut d = node.data.lock();
        d.cache = data.to_vec();
        d.durable = data.to_vec();
        d.dirty.clear();
        Ok(())
    }

    fn overwrite(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        self.pause_point(FaultOp::WriteSmall);
        let mut st = self.lock()?;
        if let Some(f) = st.take_fault(FaultOp::WriteSmall) {
            drop(st);
            return Err(f.strike());
        }
        let node = st
            .live
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        let mut d = node.data.lock();
        let (at, end) = (offset as usize, offset as usize + data.len());
        if let Some(f) = st.take_fault(FaultOp::TornWrite) {
            if end <= d.cache.len() {
                d.cache[at..end].copy_from_slice(data);
                let sectors = data.len().div_ceil(SECTOR);
                let keep = ((st.rand() as usize) % (sectors + 1) * SECTOR).min(data.len());
                d.durable[at..at + keep].copy_from_slice(&data[..keep]);
                let stop = (at + keep + SECTOR).min(end);
                for b in &mut d.durable[at + keep..stop] {
                    *b = st.rand() as u8;
                }
            }
            drop((d, st));
            return Err(f.strike());
        }
        if end > d.cache.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "overwrite past the end",
            ));
        }
        d.cache[at..end].copy_from_slice(data);
        d.durable[at..end].copy_from_slice(data);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.pause_point(FaultOp::Rename);
        let mut st = self.lock()?;
        if let Some(f) = st.take_fault(FaultOp::Rename) {
            drop(st);
            return Err(f.strike());
        }
        let node = st
            .live
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        st.live.insert(to.to_path_buf(), Arc::clone(&node));
        st.pending
            .push(DirOp::Rename(from.to_path_buf(), to.to_path_buf(), node));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.pause_point(FaultOp::Remove);
        let mut st = self.lock()?;
        if let Some(f) = st.take_fault(FaultOp::Remove) {
            drop(st);
            return Err(f.strike());
        }
        st.live
            .remove(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        st.pending.push(DirOp::Remove(path.to_path_buf()));
        Ok(())
    }

    fn copy(&self, from: &Path, to: &Path) -> io::Result<()> {
        let data = {
            let st = self.lock()?;
            if st.live.contains_key(to) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
            }
            let node = st
                .live
                .get(from)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
            let data = node.data.lock().cache.clone();
            data
        };
        self.write_small(to, &data)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.pause_point(FaultOp::SyncDir);
        let mut st = self.lock()?;
        if let Some(f) = st.take_fault(FaultOp::SyncDir) {
            drop(st);
            return Err(f.strike());
        }
        let st = &mut *st;
        st.durable.retain(|p, _| p.parent() != Some(dir));
        for (p, n) in &st.live {
            if p.parent() == Some(dir) {
                st.durable.insert(p.clone(), Arc::clone(n));
            }
        }
        st.pending.retain(|op| !op.in_dir(dir));
        Ok(())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let st = self.lock()?;
        st.live
            .get(path)
            .map(|n| n.data.lock().cache.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }
}

/// A held lock on a simulated directory.
#[derive(Debug)]
pub struct SimLock {
    fs: SimFs,
    dir: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        if let Ok(mut st) = self.fs.lock() {
            st.locked.remove(&self.dir);
        }
    }
}
