//! A log directory other users can write to is refused, and links planted in the log's
//! directory are never followed.

mod support;

use std::os::unix::fs::PermissionsExt;

use vinequeue_storage::{Error, Storage};
use vinequeue_wal::format::frame_offset;
use vinequeue_wal::{SyncMode, Wal, WalOptions};

fn opts() -> WalOptions {
    support::small_segments(SyncMode::Immediate)
}

#[test]
fn a_directory_writable_by_others_is_refused_unless_allowed() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    for mode in [0o777, 0o770, 0o722] {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        match Wal::open(&dir, opts()) {
            Err(Error::Config(msg)) => {
                assert!(msg.contains(&dir.display().to_string()), "{msg}");
                assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
            }
            other => panic!("mode {mode:o}: {:?}", other.map(|_| ())),
        }
        let wal = Wal::open(&dir, opts().allow_shared_directory(true)).unwrap();
        wal.append(b"x").unwrap();
        drop(wal);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Readable by others, not writable: accepted.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    Wal::open(&dir, opts()).unwrap();
}

#[test]
fn a_planted_link_for_damaged_copies_is_not_followed() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    for round in 0..2u8 {
        let wal = Wal::open(&dir, opts()).unwrap();
        for _ in 0..5 {
            wal.append(&[round; 100]).unwrap();
        }
        wal.sync().unwrap();
    }
    let first = dir.join("00000000000000000001.seg");
    let mut image = std::fs::read(&first).unwrap();
    let at = frame_offset(&image, 1, 2) + 20;
    image[at] ^= 1;
    std::fs::write(&first, &image).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("damaged")).unwrap();
    let wal = Wal::open(&dir, opts()).unwrap();
    assert_eq!(wal.recovery().corrupt_records, 1);
    assert_eq!(wal.recovery().damaged_bytes, 0);
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "a copy went through the planted link"
    );
}

#[test]
fn a_planted_link_as_the_checkpoint_is_not_followed() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    drop(Wal::open(&dir, opts()).unwrap());
    let victim = root.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::remove_file(dir.join("checkpoint")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("checkpoint")).unwrap();
    // Neither read as a checkpoint nor written through: the open fails, or goes on
    // without it, and the file the link names is untouched.
    if let Ok(wal) = Wal::open(&dir, opts()) {
        let seq = wal.append(b"x").unwrap();
        wal.ack(seq).unwrap();
        drop(wal);
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}
