//! The write-ahead log on a really full filesystem (a tiny tmpfs each test mounts): a failed
//! write leaves the log at its last whole record, a retry after space is freed writes the held
//! batch exactly once, and reopening returns exactly the batches that were acknowledged.
//!
//! Needs root (mount). Run as root in CI; without root these tests FAIL with a message saying
//! so rather than skip unseen.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use synod_node::storage::{AppendError, Wal, WalOptions};

/// Size of each test's tmpfs.
const TMPFS_BYTES: u64 = 512 * 1024;
/// Payload of one test record: several per page, so a batch can fail half-way.
const RECORD_PAYLOAD_BYTES: usize = 700;
/// Records per appended batch.
const BATCH_RECORDS: u64 = 5;
/// Batches appended before giving up on filling the disk (far more than fit).
const BATCHES_MAX: u64 = 10_000;

mod support;
use support::Rec;

fn data(n: u64) -> Rec {
    Rec::Data(n, vec![n as u8; RECORD_PAYLOAD_BYTES])
}

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop (also when a test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs root: it mounts a small tmpfs to fill a real filesystem \
             (mount -t tmpfs failed: {}). Run it as root (CI does).",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem holding `dir` with a junk file until a write fails for lack of space;
/// returns the file, whose removal frees the space again.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("junk");
    let mut f = std::fs::File::create(&path).expect("create junk");
    let chunk = vec![0xa5u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    path
}

/// Record numbers, so a failed comparison prints a readable list rather than every payload.
fn ids(recs: &[Rec]) -> Vec<u64> {
    recs.iter()
        .map(|r| match r {
            Rec::Data(n, _) | Rec::Checkpoint(n) => *n,
        })
        .collect()
}

fn assert_same(found: &[Rec], expected: &[Rec], when: &str) {
    assert_eq!(ids(found), ids(expected), "{when}");
    assert!(
        found == expected,
        "{when}: same records, different payloads"
    );
}

fn open(dir: &Path, preallocate_bytes: u64) -> (Wal<Rec>, Vec<Rec>) {
    Wal::open(
        dir,
        WalOptions {
            preallocate_bytes,
            ..WalOptions::default()
        },
    )
    .expect("open wal")
}

/// Appends batches until one fails; returns every acknowledged record and the held batch.
fn append_until_full(wal: &mut Wal<Rec>) -> (Vec<Rec>, Vec<Rec>, AppendError) {
    let mut acked = Vec::new();
    for b in 0..BATCHES_MAX {
        let batch: Vec<Rec> = (0..BATCH_RECORDS)
            .map(|i| data(b * BATCH_RECORDS + i))
            .collect();
        let mut done = 0;
        match wal.append_and_sync_resumable(&batch, &mut done) {
            Ok(()) => acked.extend(batch),
            Err(e) => {
                assert_eq!(done, 0, "a batch without checkpoint is all or nothing");
                return (acked, batch, e);
            }
        }
    }
    panic!("{BATCHES_MAX} batches fit on a {TMPFS_BYTES}-byte tmpfs");
}

fn full_disk_rolls_back_and_retry_writes_once(preallocate_bytes: u64) {
    let fs = Tmpfs::mount(TMPFS_BYTES);
    let wal_dir = fs.path().join("wal");
    let (mut wal, recs) = open(&wal_dir, preallocate_bytes);
    assert!(recs.is_empty());
    // Leave a little room so that some batches are acknowledged before the disk fills.
    let junk = fill(fs.path());
    let junk_bytes = std::fs::metadata(&junk).expect("junk").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&junk)
        .expect("junk");
    f.set_len(junk_bytes.saturating_sub(64 * 1024))
        .expect("shrink junk");
    drop(f);

    let (acked, held, error) = append_until_full(&mut wal);
    assert!(!acked.is_empty(), "no batch fit before the disk filled");
    let AppendError::Write { source, .. } = &error else {
        panic!("a full disk must be a retryable write error, got {error}");
    };
    assert_eq!(source.kind(), ErrorKind::StorageFull, "{error}");

    // Still full: the retry fails the same way and writes nothing.
    let mut done = 0;
    let again = wal.append_and_sync_resumable(&held, &mut done);
    assert!(matches!(again, Err(AppendError::Write { .. })), "{again:?}");
    assert_eq!(done, 0);

    // Reopening now (as after a crash while holding) finds exactly the acknowledged records.
    drop(wal);
    let (mut wal, recs) = open(&wal_dir, preallocate_bytes);
    assert_same(&recs, &acked, "reopen while full");

    // Space back: the held batch goes in exactly once, and appends continue after it.
    std::fs::remove_file(&junk).expect("remove junk");
    let mut done = 0;
    wal.append_and_sync_resumable(&held, &mut done)
        .expect("retry after freeing space");
    assert_eq!(done, held.len());
    let next = vec![data(1_000_000)];
    wal.append_and_sync_resumable(&next, &mut 0)
        .expect("append after recovery");
    drop(wal);
    let (_, recs) = open(&wal_dir, preallocate_bytes);
    let expected: Vec<Rec> = acked.into_iter().chain(held).chain(next).collect();
    assert_same(&recs, &expected, "reopen after retry");
}

#[test]
fn full_disk_without_preallocation_rolls_back_and_retry_writes_once() {
    full_disk_rolls_back_and_retry_writes_once(0);
}

#[test]
fn full_disk_with_preallocation_rolls_back_and_retry_writes_once() {
    full_disk_rolls_back_and_retry_writes_once(16 * 1024);
}

#[test]
fn snapshot_that_does_not_fit_is_held_and_never_half_trusted() {
    let fs = Tmpfs::mount(TMPFS_BYTES);
    let wal_dir = fs.path().join("wal");
    let (mut wal, _) = open(&wal_dir, 0);
    let first: Vec<Rec> = (0..BATCH_RECORDS).map(data).collect();
    wal.append_and_sync_resumable(&first, &mut 0)
        .expect("first batch");
    let junk = fill(fs.path());

    // A small record before the checkpoint still fits in the segment's last page (tmpfs
    // allocates whole pages); the snapshot file needs a page of its own, which is not there.
    let batch = vec![Rec::Data(100, Vec::new()), Rec::Checkpoint(101), data(102)];
    let mut done = 0;
    let error = wal
        .append_and_sync_resumable(&batch, &mut done)
        .expect_err("the snapshot cannot fit on a full disk");
    assert!(matches!(error, AppendError::Write { .. }), "{error}");
    assert_eq!(
        done, 1,
        "the record before the checkpoint is in, the checkpoint is not"
    );
    let names: Vec<String> = std::fs::read_dir(&wal_dir)
        .expect("list wal")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("snap-")),
        "no snapshot or temporary snapshot may remain: {names:?}"
    );

    std::fs::remove_file(&junk).expect("remove junk");
    wal.append_and_sync_resumable(&batch, &mut done)
        .expect("retry after freeing space");
    assert_eq!(done, batch.len());
    drop(wal);
    let (_, recs) = open(&wal_dir, 0);
    assert_same(
        &recs,
        &[Rec::Checkpoint(101), data(102)],
        "reopen after the snapshot",
    );
}
