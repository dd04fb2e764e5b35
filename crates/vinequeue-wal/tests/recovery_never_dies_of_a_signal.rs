//! Recovery reads what it checks through the file (`pread`), not through the map: a
//! segment shrunk by another process after the log mapped it, or a device that fails a
//! read, is an error or damage, never a `SIGBUS` that kills the process.

use std::io::ErrorKind;
use std::path::Path;

use vinequeue_storage::{Error, RecoveryMode, Storage};
use vinequeue_wal::sim::{FaultOp, SimFs};
use vinequeue_wal::{DirEntry, Fs, RealFs, SyncMode, Wal, WalOptions};

fn opts() -> WalOptions {
    WalOptions::default()
        .segment_size(1 << 20)
        .sync_mode(SyncMode::Os)
}

/// The real file system, except that a segment file is shrunk to half its length right
/// after the log opens (and maps) it, as another process truncating it would.
struct ShrinksAfterOpen(RealFs);

impl Fs for ShrinksAfterOpen {
    type File = <RealFs as Fs>::File;
    type Lock = <RealFs as Fs>::Lock;

    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn dir_mode(&self, dir: &Path) -> std::io::Result<Option<u32>> {
        self.0.dir_mode(dir)
    }
    fn try_lock(&self, dir: &Path) -> std::io::Result<Option<Self::Lock>> {
        self.0.try_lock(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<DirEntry>> {
        self.0.list(dir)
    }
    fn create(&self, path: &Path, len: u64) -> std::io::Result<Self::File> {
        self.0.create(path, len)
    }
    fn open(&self, path: &Path) -> std::io::Result<Self::File> {
        let file = self.0.open(path)?;
        if path.extension().is_some_and(|e| e == "seg") {
            let f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.set_len(f.metadata()?.len() / 2)?;
        }
        Ok(file)
    }
    fn read_small(&self, path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
        self.0.read_small(path, limit)
    }
    fn write_small(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        self.0.write_small(path, data)
    }
    fn overwrite(&self, path: &Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.overwrite(path, offset, data)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.0.remove(path)
    }
    fn copy(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.0.copy(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn file_len(&self, path: &Path) -> std::io::Result<u64> {
        self.0.file_len(path)
    }
}

/// A log of records filling most of a 1 MiB segment, closed cleanly.
fn a_full_segment(dir: &Path) -> u64 {
    let wal = Wal::open(dir, opts()).unwrap();
    let mut last = 0;
    for i in 0..8_000u64 {
        last = wal.append(&[i as u8; 100]).unwrap();
    }
    wal.sync().unwrap();
    last
}

#[test]
fn a_segment_shrunk_after_the_log_mapped_it_is_an_error_not_a_sigbus() {
    for mode in [RecoveryMode::Strict, RecoveryMode::SkipCorrupt] {
        let dir = tempfile::tempdir().unwrap();
        a_full_segment(dir.path());
        // Reading the second half through the map would raise SIGBUS and kill this
        // test binary; read through the file it is an error.
        match Wal::open_with(
            ShrinksAfterOpen(RealFs),
            dir.path(),
            opts().recovery_mode(mode),
        ) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{mode:?}"),
            Err(e) => panic!("{mode:?}: expected an I/O error, got {e}"),
            Ok(_) => panic!("{mode:?}: a segment shrunk under recovery went unnoticed"),
        }
        // Opened again (the file now as short as it was left), the records in the half
        // that remains are there.
        let wal = Wal::open(dir.path(), opts()).unwrap();
        let mut seen = 0;
        wal.read(1, usize::MAX, &mut |_, _| {
            seen += 1;
            true
        })
        .unwrap();
        assert!(seen > 3_000, "{seen} records left");
    }
}

#[test]
fn a_read_error_during_recovery_is_an_io_error_and_the_next_open_recovers() {
    let fs = SimFs::new(9);
    let wal = Wal::open_with(fs.clone(), "/wal", opts().segment_size(64 << 10)).unwrap();
    let mut last = 0;
    for i in 0..400u64 {
        last = wal.append(&[i as u8; 100]).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let fs = fs.process_crash();
    for n in 1..=3 {
        // The n-th read of a segment's bytes fails.
        fs.fail_nth(FaultOp::Read, n, ErrorKind::Other);
        match Wal::open_with(fs.clone(), "/wal", opts().segment_size(64 << 10)) {
            Err(Error::Io(_)) => {}
            Err(e) => panic!("read {n}: expected an I/O error, got {e}"),
            Ok(_) => panic!("read {n}: a failed read went unnoticed"),
        }
        fs.clear_faults();
    }
    let wal = Wal::open_with(
        fs,
        "/wal",
        opts()
            .segment_size(64 << 10)
            .recovery_mode(RecoveryMode::Strict),
    )
    .unwrap();
    assert_eq!(wal.recovery().records, last);
    assert_eq!(wal.recovery().corrupt_records, 0);
}
