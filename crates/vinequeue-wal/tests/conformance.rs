//! The core's Storage conformance suite, run against the log on a real directory and on
//! the simulated file system, and against the in-memory storage.

use std::path::PathBuf;

use vinequeue_storage::testing::{storage_conformance, StorageHarness};
use vinequeue_storage::MemStorage;
use vinequeue_wal::sim::SimFs;
use vinequeue_wal::{SyncMode, Wal, WalOptions};

fn small() -> WalOptions {
    // Small segments so that the suite crosses segment boundaries and reclaims.
    WalOptions::default()
        .segment_size(64 * 1024)
        .max_size(64 * 1024 * 1024)
}

struct Real {
    root: tempfile::TempDir,
    n: u32,
    mode: SyncMode,
}

impl Real {
    fn dir(&self) -> PathBuf {
        self.root.path().join(format!("wal-{}", self.n))
    }
}

impl StorageHarness for Real {
    type Storage = Wal;
    fn create(&mut self) -> Wal {
        self.n += 1;
        Wal::open(self.dir(), small().sync_mode(self.mode)).unwrap()
    }
    fn reopen(&mut self) -> Option<Wal> {
        if self.n == 0 {
            self.n = 1;
        }
        Some(Wal::open(self.dir(), small().sync_mode(self.mode)).unwrap())
    }
}

#[test]
fn the_log_on_a_real_directory_passes_the_suite_in_every_sync_mode() {
    for mode in [
        SyncMode::Immediate,
        SyncMode::Periodic(std::time::Duration::from_millis(5)),
        SyncMode::Os,
    ] {
        storage_conformance(&mut Real {
            root: tempfile::tempdir().unwrap(),
            n: 0,
            mode,
        });
    }
}

struct Sim {
    fs: SimFs,
    n: u32,
    mode: SyncMode,
}

impl Sim {
    fn open(&self) -> Wal<SimFs> {
        let opts = small().sync_mode(self.mode).sequence_reservation(64);
        Wal::open_with(self.fs.clone(), format!("/sim/wal-{}", self.n), opts).unwrap()
    }
}

impl StorageHarness for Sim {
    type Storage = Wal<SimFs>;
    fn create(&mut self) -> Wal<SimFs> {
        self.n += 1;
        self.open()
    }
    fn reopen(&mut self) -> Option<Wal<SimFs>> {
        if self.n == 0 {
            self.n = 1;
        }
        Some(self.open())
    }
    fn power_cut(&mut self, wal: Wal<SimFs>) -> Option<Wal<SimFs>> {
        self.fs = self.fs.power_cut();
        drop(wal);
        Some(self.open())
    }
}

#[test]
fn the_log_on_the_simulated_file_system_passes_the_suite_with_power_cuts_in_every_sync_mode() {
    for mode in [
        SyncMode::Immediate,
        SyncMode::Periodic(std::time::Duration::from_secs(3600)),
        SyncMode::Periodic(std::time::Duration::from_millis(1)),
        SyncMode::Os,
    ] {
        for seed in 0..20 {
            storage_conformance(&mut Sim {
                fs: SimFs::new(seed),
                n: 0,
                mode,
            });
        }
    }
}

struct Mem;

impl StorageHarness for Mem {
    type Storage = MemStorage;
    fn create(&mut self) -> MemStorage {
        MemStorage::default()
    }
    fn reopen(&mut self) -> Option<MemStorage> {
        None
    }
}

#[test]
fn the_in_memory_storage_passes_the_suite() {
    storage_conformance(&mut Mem);
}
