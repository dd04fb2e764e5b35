//! The log on real file systems: the directory lock, permissions, and full disks on a
//! 2 MiB tmpfs and on a small ext4 (loop device), including an ext4 whose backing store
//! fills up so that syncs fail; and a btrfs whose device returns EIO for a segment's
//! block. Mounting needs root: those tests are `#[ignore]`d, and
//! `.ci/run` runs them as root (`cargo test -p vinequeue-wal --test
//! real_disk_errors_are_clean -- --ignored`) and fails if they did not all run. Run that
//! way without root, they fail: they never pass without having run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use vinequeue_storage::{Error, RecoveryMode, Storage};
use vinequeue_wal::{SyncMode, Wal, WalOptions};

#[test]
fn a_second_opener_gets_locked() {
    let dir = tempfile::tempdir().unwrap();
    let first = Wal::open(dir.path(), WalOptions::default()).unwrap();
    match Wal::open(dir.path(), WalOptions::default()) {
        Err(Error::Locked(p)) => assert_eq!(p, dir.path()),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("two logs opened one directory"),
    }
    drop(first);
    Wal::open(dir.path(), WalOptions::default()).expect("the lock is released on drop");
}

#[test]
fn a_second_process_gets_locked_too() {
    // flock is per open file description, so another process is refused as well; a child
    // `flock -n` stands in for that process.
    let dir = tempfile::tempdir().unwrap();
    let _wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let status = Command::new("flock")
        .args(["-n", dir.path().join("LOCK").to_str().unwrap(), "true"])
        .status();
    match status {
        Ok(s) => assert!(!s.success(), "another process could take the lock"),
        Err(e) => eprintln!("skipped: flock(1) not available: {e}"),
    }
}

#[test]
fn the_directory_is_0700_and_files_are_0600() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("fresh/wal");
    let wal = Wal::open(&dir, WalOptions::default().sync_mode(SyncMode::Immediate)).unwrap();
    wal.append(b"x").unwrap();
    wal.ack(1).unwrap();
    wal.sync().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[test]
fn a_wal_path_that_is_a_file_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        Wal::open(&file, WalOptions::default()),
        Err(Error::Io(_))
    ));
}

fn is_root() -> bool {
    // SAFETY-free check: the effective uid of this process.
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false)
}

/// A mounted file system, unmounted (and its loop device detached) on drop.
struct Mount {
    at: PathBuf,
    _root: tempfile::TempDir,
}

impl Drop for Mount {
    fn drop(&mut self) {
        // (Quietly: a test may have unmounted it already.)
        let _ = Command::new("umount").arg("-l").arg(&self.at).output();
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn tmpfs(size: &str) -> Result<Mount, String> {
    if !is_root() {
        return Err("not root: cannot mount (run these tests as root)".into());
    }
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let at = root.path().join("mnt");
    std::fs::create_dir(&at).map_err(|e| e.to_string())?;
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&at))?;
    Ok(Mount { at, _root: root })
}

fn ext4_on(backing_dir: &Path, image_size: &str) -> Result<Mount, String> {
    let image = backing_dir.join("disk.img");
    run(Command::new("truncate")
        .args(["-s", image_size])
        .arg(&image))?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(&image))?;
    mount_image(&image)
}

/// Mounts the file-system image `image` (loop device).
fn mount_image(image: &Path) -> Result<Mount, String> {
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let at = root.path().join("mnt");
    std::fs::create_dir(&at).map_err(|e| e.to_string())?;
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(image)
        .arg(&at))?;
    Ok(Mount { at, _root: root })
}

/// Fills the disk under `dir` through the log; checks the error is a clean ENOSPC, that
/// nothing appended was damaged, and that the log works again once space is freed.
fn fill_and_recover(dir: &Path) {
    let opts = || {
        WalOptions::default()
            .segment_size(256 * 1024)
            .max_size(1 << 40)
            .sync_mode(SyncMode::Immediate)
    };
    let wal = Wal::open(dir, opts()).unwrap();
    let rec = vec![0x5Au8; 1000];
    let mut last = 0;
    let err = loop {
        match wal.append(&rec) {
            Ok(s) => {
                last = s;
                if s.is_multiple_of(50) {
                    wal.sync_through(s).unwrap();
                }
            }
            Err(e) => break e,
        }
    };
    match &err {
        Error::Io(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}"),
        other => panic!("expected ENOSPC, got {other}"),
    }
    assert!(last > 100, "the disk held {last} records");
    wal.sync().unwrap();
    let segs_on_disk = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count();
    assert_eq!(
        segs_on_disk,
        wal.segment_count(),
        "a failed preallocation left a file behind"
    );
    drop(wal);

    let wal = Wal::open(dir, opts()).unwrap();
    let mut n = 0;
    wal.read(1, usize::MAX, &mut |_, b| {
        assert_eq!(b, &rec[..]);
        n += 1;
        true
    })
    .unwrap();
    assert_eq!(n, last, "every appended record survives the full disk");
    for s in 1..=last {
        wal.ack(s).unwrap();
    }
    let s = wal.append(&rec).expect("space was freed");
    wal.sync_through(s).unwrap();
}

const ROOT: &str = "needs root (mounts a tmpfs or an ext4 image): .ci/run runs it";

#[test]
#[ignore = "needs root (mounts a tmpfs or an ext4 image): .ci/run runs it"]
fn a_full_tmpfs_is_a_clean_error_never_a_sigbus() {
    let m = tmpfs("2m").unwrap_or_else(|why| panic!("{ROOT}: {why}"));
    fill_and_recover(&m.at.join("wal"));
}

#[test]
#[ignore = "needs root (mounts a tmpfs or an ext4 image): .ci/run runs it"]
fn a_full_ext4_is_a_clean_error_never_a_sigbus() {
    let backing = tempfile::tempdir().unwrap();
    assert!(is_root(), "{ROOT}");
    let m = ext4_on(backing.path(), "8M").unwrap_or_else(|why| panic!("{ROOT}: {why}"));
    fill_and_recover(&m.at.join("wal"));
}

#[test]
#[ignore = "needs root (mounts a tmpfs or an ext4 image): .ci/run runs it"]
fn an_ext4_whose_backing_store_fills_up_fails_the_log_on_the_first_sync_error() {
    backing_store_fills_up("an_ext4_whose_backing_store_fills_up...", 1024 * 1024);
}

#[test]
#[ignore = "needs root (mounts a tmpfs or an ext4 image): .ci/run runs it"]
fn the_same_with_chunks_written_ahead() {
    // Segments of 8 MiB: under `Immediate` the log writes each next MiB of the segment
    // ahead of the records, so the writes that fail on the filling store are a mix of
    // those, the records' and the file system's own; whichever fail first, the outcome
    // must be the same. (Whether a failed write-ahead alone fails the log is checked on
    // the simulated file system: `a_write_ahead_that_fails_as_it_starts_fails_the_next_sync`.)
    backing_store_fills_up("the_same_with_chunks_written_ahead", 8 * 1024 * 1024);
}

fn backing_store_fills_up(test: &str, segment_size: u64) {
    // ext4 believes it has 32 MiB; the tmpfs holding its image has 6. Writes that reach
    // the loop device past that fail, and the kernel reports it once, on fsync/msync.
    let backing = tmpfs("6m").unwrap_or_else(|why| panic!("{test}: {ROOT}: {why}"));
    let disk = ext4_on(&backing.at, "32M").unwrap_or_else(|why| panic!("{test}: {ROOT}: {why}"));
    let opts = || {
        WalOptions::default()
            .segment_size(segment_size)
            .max_size(1 << 40)
            .sync_mode(SyncMode::Immediate)
    };
    let wal = Wal::open(disk.at.join("wal"), opts()).unwrap();
    let rec = vec![0xC3u8; 4000];
    let mut outcome = None;
    // The last record whose sync returned `Ok`: every record up to it must survive.
    let mut durable = 0;
    for _ in 0..20_000 {
        let r = wal
            .append(&rec)
            .and_then(|s| wal.sync_through(s).map(|()| s));
        match r {
            Ok(s) => durable = s,
            Err(e) => {
                outcome = Some(e);
                break;
            }
        }
    }
    assert!(
        durable > 100,
        "{test}: only {durable} records before the failure"
    );
    match outcome {
        Some(Error::LogFailed(why)) => {
            assert!(wal.is_failed());
            // every later call says so, even if the kernel would now report success
            assert!(
                matches!(wal.append(&rec), Err(Error::LogFailed(_))),
                "{why}"
            );
            assert!(matches!(wal.sync(), Err(Error::LogFailed(_))));
        }
        Some(Error::Io(e)) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EIO)) => {
            // The failure hit a segment's creation (preallocation or its metadata) before
            // any sync: a clean error that leaves the log usable, not a failed sync.
            eprintln!("note: segment creation failed first ({e}); no sync had failed");
            assert!(!wal.is_failed());
        }
        Some(other) => panic!("unexpected error {other}"),
        None => panic!("80 MB written to a 6 MB backing store without an error"),
    }
    // The operator's way back: the file system is unmounted (ext4 may have gone
    // read-only after the write errors), its backing store grown, the image checked with
    // e2fsck and mounted again. Every record whose sync succeeded is there, intact and in
    // order.
    drop(wal);
    let image = backing.at.join("disk.img");
    drop(disk);
    run(Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&backing.at))
    .unwrap();
    // (e2fsck exits 1 when it repaired something: fine.)
    let fsck = Command::new("e2fsck")
        .arg("-fy")
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "{test}: e2fsck {}: {}",
        fsck.status,
        String::from_utf8_lossy(&fsck.stdout)
    );
    let disk = mount_image(&image).unwrap();
    let wal = Wal::open(disk.at.join("wal"), opts()).expect("the log reopens");
    let mut next = 1;
    wal.read(1, usize::MAX, &mut |seq, bytes| {
        if seq <= durable {
            assert_eq!(seq, next, "{test}: record {next} is missing");
            assert_eq!(bytes, &rec[..], "{test}: record {seq} is damaged");
            next = seq + 1;
        }
        true
    })
    .unwrap();
    // The device, not the log, may lose the last synced record: records share 4 KiB
    // blocks (a frame here is 4,016 bytes), and the failed write of the block that also
    // holds the first record whose sync failed can leave that block unreadable or
    // zeroed on the failing store, taking the earlier record's bytes with it. Every
    // record before it must be there.
    assert!(
        next == durable + 1 || next == durable,
        "{test}: synced records lost: read up to {}, synced up to {durable}",
        next - 1
    );
}

/// A record's payload that can be found in a raw disk image.
fn marked(seq: u64) -> Vec<u8> {
    let mut p = format!("vinequeue-read-error-test-record-{seq:08}-").into_bytes();
    p.resize(1000, b'.');
    p
}

#[test]
#[ignore = "needs root (mounts a btrfs image): .ci/run runs it"]
fn a_segment_whose_disk_fails_reads_is_an_io_error_never_a_sigbus() {
    assert!(is_root(), "{ROOT}");
    // btrfs checksums data: a block changed under it reads back as EIO, as a failing
    // disk would. (`.ci/run` installs btrfs-progs where it is missing.)
    let backing = tempfile::tempdir().unwrap();
    let image = backing.path().join("disk.img");
    run(Command::new("truncate").args(["-s", "160M"]).arg(&image)).unwrap();
    run(Command::new("mkfs.btrfs").arg("-q").arg(&image)).expect("mkfs.btrfs (btrfs-progs)");
    let opts = || {
        WalOptions::default()
            .segment_size(1 << 20)
            .sync_mode(SyncMode::Os)
    };
    let disk = mount_image(&image).unwrap();
    let dir = disk.at.join("wal");
    let wal = Wal::open(&dir, opts()).unwrap();
    let mut last = 0;
    for seq in 1..=3_000u64 {
        last = wal.append(&marked(seq)).unwrap();
    }
    assert_eq!(last, 3_000);
    assert!(wal.segment_count() >= 3);
    drop(wal);
    run(Command::new("umount").arg(&disk.at)).unwrap();

    // One byte of record 500 (in the first, sealed segment) changes on the device.
    let mut raw = std::fs::read(&image).unwrap();
    let needle = marked(500);
    let at = raw
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the record is in the image");
    raw[at + 100] ^= 0xff;
    std::fs::write(&image, &raw).unwrap();

    let disk = mount_image(&image).unwrap();
    let dir = disk.at.join("wal");
    for mode in [RecoveryMode::SkipCorrupt, RecoveryMode::Strict] {
        match Wal::open(&dir, opts().recovery_mode(mode)) {
            Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(5), "{mode:?}: {e}"),
            Err(e) => panic!("{mode:?}: expected the device's EIO, got {e}"),
            Ok(_) => panic!("{mode:?}: a block the device cannot read went unnoticed"),
        }
    }
    run(Command::new("umount").arg(&disk.at)).unwrap();

    // The device repaired (the byte restored): every record is there, untouched by the
    // failed opens.
    raw[at + 100] ^= 0xff;
    std::fs::write(&image, &raw).unwrap();
    let disk = mount_image(&image).unwrap();
    let wal = Wal::open(
        disk.at.join("wal"),
        opts().recovery_mode(RecoveryMode::Strict),
    )
    .unwrap();
    let mut seen = Vec::new();
    wal.read(1, usize::MAX, &mut |seq, bytes| {
        assert_eq!(bytes, marked(seq), "record {seq}");
        seen.push(seq);
        true
    })
    .unwrap();
    assert_eq!(seen, (1..=3_000).collect::<Vec<_>>());
    assert_eq!(wal.recovery().corrupt_records, 0);
}
