//! `wal_segment`: a data directory whose log files hold arbitrary bytes.
//!
//! The input becomes one or two files of a WAL directory — a segment, a snapshot file, a
//! snapshot followed by a segment, or two segments — and the directory is opened with the
//! public [`Wal::open`], exactly as a node recovers. Only the public API and the file *names*
//! are assumed, not the record format, so the target stays valid while the on-disk format
//! evolves; the corpus (`examples/gen_corpus.rs`) is written by [`Wal::append_and_sync`].
//!
//! Opening may refuse the directory (that is what damage should do); it must not panic,
//! allocate what the files do not justify, or hang, and a refusal must leave every file in
//! place (at most a torn tail cut off). When it opens, the log must still work: a record
//! appended after recovery is recovered by the next open, after what was there.
//!
//! Input layout: `mode | seq | split u16 LE | file bytes…`: `mode & 3` is the [`Layout`],
//! `(mode >> 2) % 3` the [`RecordKind`], `seq` the sequence number in the second file's name,
//! `split` where the first file's bytes end.

use crate::{CasPaxosEngine, OmniPaxosEngine, VrEngine};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use synod_core::{DurableRecord, Engine};
use synod_node::storage::{Wal, WalOptions};

/// Where the file bytes go (`mode & 3`).
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// All of it is the first segment.
    Segment,
    /// All of it is the snapshot file at `seq`.
    Snapshot,
    /// A snapshot at `seq`, then the segment starting right after it.
    SnapshotThenSegment,
    /// The first segment, then a segment starting at `seq + 1`.
    TwoSegments,
}

/// The records of which engine the files are decoded as (`(mode >> 2) % 3`).
#[derive(Clone, Copy, Debug)]
pub enum RecordKind {
    OmniPaxos,
    Vr,
    CasPaxos,
}

const HEADER: usize = 4;

/// Builds an input of the layout this target reads (used by the corpus generator).
pub fn input(layout: Layout, kind: RecordKind, seq: u8, split: u16, bytes: &[u8]) -> Vec<u8> {
    let mode = layout as u8 | ((kind as u8) << 2);
    let mut v = vec![mode, seq];
    v.extend(split.to_le_bytes());
    v.extend_from_slice(bytes);
    v
}

/// The file names `Wal` uses (the only thing about the format this target assumes).
pub fn segment_name(first_seq: u64) -> String {
    format!("wal-{first_seq:020}.log")
}

pub fn snapshot_name(seq: u64) -> String {
    format!("snap-{seq:020}.snap")
}

/// Options as a node uses them, minus fsync (tmpfs; durability is not under test here).
pub fn options() -> WalOptions {
    WalOptions {
        fsync: false,
        ..WalOptions::default()
    }
}

/// A scratch directory reused by every run (on tmpfs where there is one: runs are dominated
/// by file-system calls).
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        tempfile::Builder::new()
            .prefix("synod-fuzz-wal-")
            .tempdir_in(base)
            .expect("a scratch directory")
    })
    .path()
}

pub fn run(data: &[u8]) {
    if data.len() < HEADER {
        return;
    }
    let (mode, seq) = (data[0], data[1]);
    let split = usize::from(u16::from_le_bytes([data[2], data[3]]));
    let bytes = &data[HEADER..];
    let layout = match mode & 3 {
        0 => Layout::Segment,
        1 => Layout::Snapshot,
        2 => Layout::SnapshotThenSegment,
        _ => Layout::TwoSegments,
    };
    // Small sequence numbers only: far larger ones are not damage a disk produces in a name.
    let seq = u64::from(seq.max(1));
    let dir = scratch().join("wal");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let cut = split.min(bytes.len());
    let (a, b) = bytes.split_at(cut);
    let files: Vec<(PathBuf, &[u8])> = match layout {
        Layout::Segment => vec![(dir.join(segment_name(1)), bytes)],
        Layout::Snapshot => vec![(dir.join(snapshot_name(seq)), bytes)],
        Layout::SnapshotThenSegment => vec![
            (dir.join(snapshot_name(seq)), a),
            (dir.join(segment_name(seq + 1)), b),
        ],
        Layout::TwoSegments => vec![
            (dir.join(segment_name(1)), a),
            (dir.join(segment_name(seq + 1)), b),
        ],
    };
    for (path, content) in files {
        std::fs::write(path, content).expect("scratch file");
    }
    match (mode >> 2) % 3 {
        0 => open_append_reopen::<<OmniPaxosEngine as Engine>::Record>(&dir),
        1 => open_append_reopen::<<VrEngine as Engine>::Record>(&dir),
        _ => open_append_reopen::<<CasPaxosEngine as Engine>::Record>(&dir),
    }
}

fn open_append_reopen<R: DurableRecord>(dir: &Path) {
    let before = files(dir);
    let Ok((mut wal, records)) = Wal::<R>::open(dir, options()) else {
        // A refusal must leave the evidence: the operator has to act on these files. Only a
        // torn tail may have been cut off the last segment before the refusal.
        let after = files(dir);
        for (name, bytes) in &before {
            let now = after
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("a refused open deleted {name}"));
            assert!(
                bytes.starts_with(&now.1),
                "a refused open rewrote {name} (not only a truncation)"
            );
        }
        return;
    };
    // A plain record (a checkpoint would replace everything and prove less).
    let Some(extra) = records.iter().find(|r| !r.is_checkpoint()).cloned() else {
        return;
    };
    wal.append_and_sync(std::slice::from_ref(&extra))
        .expect("appending to a log that opened");
    drop(wal);
    let (_, again) = Wal::<R>::open(dir, options()).expect("reopening a log we just wrote");
    assert_eq!(
        again.len(),
        records.len() + 1,
        "the record appended after recovery was not recovered after the others"
    );
    let encode = |r: &R| postcard::to_allocvec(r).expect("a record encodes");
    let before: Vec<Vec<u8>> = records.iter().map(encode).collect();
    let after: Vec<Vec<u8>> = again.iter().map(encode).collect();
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "recovered records changed"
    );
    assert_eq!(
        after[before.len()],
        encode(&extra),
        "appended record changed"
    );
}

/// Every file in `dir`: (name, bytes), sorted by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("scratch directory")
        .map(|e| {
            let e = e.expect("scratch entry");
            let bytes = std::fs::read(e.path()).expect("scratch file");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    v.sort();
    v
}
