//! Write-ahead log behaviour: round trip, torn tails, corruption, rotation, checkpoints,
//! reopening after a crash. The byte-by-byte fault sweeps are in `wal_faults.rs`.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use synod_node::storage::{StorageError, Wal, WalOptions};

/// Bytes of the header every segment starts with (format version 2).
const SEGMENT_HEADER: u64 = 20;

mod support;
use support::Rec;

fn data(n: u64) -> Rec {
    Rec::Data(n, vec![n as u8; 100])
}

fn open(dir: &Path, segment_bytes_max: u64) -> Result<(Wal<Rec>, Vec<Rec>), StorageError> {
    Wal::open(
        dir,
        WalOptions {
            segment_bytes_max,
            ..WalOptions::default()
        },
    )
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_and_reopen_appends_after_existing_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, recs) = open(dir.path(), 1 << 20).unwrap();
    assert!(recs.is_empty());
    let batch: Vec<Rec> = (1..=10).map(data).collect();
    wal.append_and_sync(&batch).unwrap();
    wal.append_and_sync(&[]).unwrap();
    drop(wal);
    let (mut wal, recs) = open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recs, batch);
    assert_eq!(wal.next_seq(), 11);
    wal.append_and_sync(&[data(11)]).unwrap();
    drop(wal);
    let (_, recs) = open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recs.len(), 11);
    assert_eq!(recs[10], data(11));
}

#[test]
fn torn_tail_is_truncated_and_log_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1 << 20).unwrap();
    for n in 1..=5 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    drop(wal);
    let seg = segments(dir.path()).pop().unwrap();
    let full = std::fs::metadata(&seg).unwrap().len();
    // Cut the last batch in half: a write that never finished before the crash.
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(full - 50).unwrap();
    drop(f);
    let (mut wal, recs) = open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recs, (1..=4).map(data).collect::<Vec<_>>());
    wal.append_and_sync(&[data(99)]).unwrap();
    drop(wal);
    let (_, recs) = open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[4], data(99));

    // A partial header, and a garbage tail followed only by zeros, are torn too.
    let full = std::fs::metadata(&seg).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[7, 0, 0]).unwrap();
    drop(f);
    let (_, recs) = open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recs.len(), 5);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), full);
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[20, 0, 0, 0, 1, 2, 3, 4]).unwrap();
    f.write_all(&[0u8; 40]).unwrap();
    drop(f);
    let (_, recs) = open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recs.len(), 5);
}

#[test]
fn corruption_before_the_tail_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1 << 20).unwrap();
    for n in 1..=5 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    drop(wal);
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let batch_bytes = (len - SEGMENT_HEADER) / 5;
    let second = SEGMENT_HEADER + batch_bytes;
    // Flip a payload byte of the second batch: three acknowledged batches follow it.
    let mut f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(second + 40)).unwrap();
    f.write_all(&[0xff]).unwrap();
    drop(f);
    let err = match open(dir.path(), 1 << 20) {
        Err(e) => e,
        Ok(_) => panic!("corruption in the middle must not open"),
    };
    assert!(err.is_damage(), "{err}");
    assert_eq!(err.first_bad_seq(), Some(2));
    match &err {
        StorageError::Corrupt { path, offset, .. } => {
            assert_eq!(path, &seg);
            assert_eq!(*offset, second);
        }
        other => panic!("wrong error: {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("wal-00000000000000000001.log"), "{msg}");
    assert!(msg.contains(&format!("offset {second}")), "{msg}");
    assert!(msg.contains("sequence 2"), "{msg}");
    // Nothing was truncated: the evidence is kept.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
}

#[test]
fn rotation_spreads_records_over_segments_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1000).unwrap();
    for n in 1..=40 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 4, "expected rotation, got {segs:?}");
    // Names carry the first seq of each segment, in order.
    let firsts: Vec<u64> = segs
        .iter()
        .map(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n[4..24].parse().unwrap()
        })
        .collect();
    assert_eq!(firsts[0], 1);
    assert!(firsts.windows(2).all(|w| w[0] < w[1]));
    drop(wal);
    let (_, recs) = open(dir.path(), 1000).unwrap();
    assert_eq!(recs, (1..=40).map(data).collect::<Vec<_>>());
}

#[test]
fn a_missing_middle_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 500).unwrap();
    for n in 1..=20 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    drop(wal);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).unwrap();
    let err = open(dir.path(), 500).err().expect("gap must be refused");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn checkpoint_drops_older_segments_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1000).unwrap();
    for n in 1..=30 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    assert!(segments(dir.path()).len() > 2);
    // Records before the checkpoint in the same batch go to the old segment, which is then
    // deleted because the checkpoint subsumes them.
    wal.append_and_sync(&[data(31), Rec::Checkpoint(31), data(32)])
        .unwrap();
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1, "{segs:?}");
    // The checkpoint took sequence 32 (in its snapshot file); the log resumes at 33.
    assert!(
        segs[0].ends_with("wal-00000000000000000033.log"),
        "{segs:?}"
    );
    wal.append_and_sync(&[data(33)]).unwrap();
    drop(wal);
    let (_, recs) = open(dir.path(), 1000).unwrap();
    assert_eq!(recs, vec![Rec::Checkpoint(31), data(32), data(33)]);
}

#[test]
fn crash_between_checkpoint_and_deleting_old_segments_recovers_from_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1000).unwrap();
    for n in 1..=20 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    drop(wal);
    let old: Vec<(std::path::PathBuf, Vec<u8>)> = segments(dir.path())
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let (mut wal, _) = open(dir.path(), 1000).unwrap();
    wal.append_and_sync(&[Rec::Checkpoint(20), data(21)])
        .unwrap();
    drop(wal);
    // Put the old segments back, as if the crash came before their deletion.
    for (p, b) in &old {
        std::fs::write(p, b).unwrap();
    }
    let (_, recs) = open(dir.path(), 1000).unwrap();
    assert_eq!(recs, vec![Rec::Checkpoint(20), data(21)]);
    assert_eq!(segments(dir.path()).len(), 1);
}

#[test]
fn oversized_record_is_refused_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        record_bytes_max: 64,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::<Rec>::open(dir.path(), opts.clone()).unwrap();
    let small = |n: u64| Rec::Data(n, vec![n as u8; 8]);
    // The batch is refused whole, though its first record fits.
    let e = wal.append_and_sync(&[small(1), data(2)]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("exceeds record_bytes_max 64"), "{e}");
    // Nothing of it was written, and the log goes on from where it was.
    wal.append_and_sync(&[small(3)]).unwrap();
    drop(wal);
    let (_, recs) = Wal::<Rec>::open(dir.path(), opts).unwrap();
    assert_eq!(recs, vec![small(3)]);
}

#[test]
fn metrics_count_one_fsync_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::sync::Arc::new(synod_node::Metrics::new());
    let (wal, _) = open(dir.path(), 1 << 20).unwrap();
    let mut wal = wal.with_metrics(metrics.clone());
    wal.append_and_sync(&(1..=100).map(data).collect::<Vec<_>>())
        .unwrap();
    wal.append_and_sync(&[data(101)]).unwrap();
    assert_eq!(metrics.wal_fsyncs.get(), 2);
    assert_eq!(metrics.wal_records.get(), 101);
}

fn snapshots(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    v.sort();
    v
}

#[test]
fn checkpoints_become_snapshot_files_and_replace_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1000).unwrap();
    for n in 1..=10 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    wal.append_and_sync(&[data(11), Rec::Checkpoint(11), data(12)])
        .unwrap();
    // The checkpoint took sequence 12 and lives in its own file; the log resumes at 13.
    let snaps = snapshots(dir.path());
    assert_eq!(snaps.len(), 1);
    assert!(
        snaps[0].ends_with("snap-00000000000000000012.snap"),
        "{snaps:?}"
    );
    assert_eq!(wal.snapshot().map(|s| s.0), Some(12));
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert!(
        segs[0].ends_with("wal-00000000000000000013.log"),
        "{segs:?}"
    );
    // No segment ever holds the checkpoint bytes.
    assert!(wal.bytes_since_snapshot() < 200);
    wal.append_and_sync(&[Rec::Checkpoint(12), data(13)])
        .unwrap();
    let snaps = snapshots(dir.path());
    assert_eq!(
        snaps.len(),
        1,
        "the previous snapshot is deleted: {snaps:?}"
    );
    assert!(snaps[0].ends_with("snap-00000000000000000014.snap"));
    drop(wal);
    let (mut wal, recs) = open(dir.path(), 1000).unwrap();
    assert_eq!(recs, vec![Rec::Checkpoint(12), data(13)]);
    assert_eq!(wal.next_seq(), 16);
    wal.append_and_sync(&[data(14)]).unwrap();
    drop(wal);
    let (_, recs) = open(dir.path(), 1000).unwrap();
    assert_eq!(recs, vec![Rec::Checkpoint(12), data(13), data(14)]);
}

/// Copies of every file in `dir`, to put back later as a crash at an earlier moment would.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

#[test]
fn crash_before_cleanup_behind_a_snapshot_recovers_from_it_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1000).unwrap();
    wal.append_and_sync(&[data(1), Rec::Checkpoint(1)]).unwrap();
    for n in 2..=20 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    let before = files(dir.path());
    wal.append_and_sync(&[Rec::Checkpoint(20), data(21)])
        .unwrap();
    drop(wal);
    for (p, b) in &before {
        std::fs::write(p, b).unwrap();
    }
    // And an unfinished snapshot write.
    std::fs::write(
        dir.path().join("snap-00000000000000000099.snap.tmp"),
        b"half",
    )
    .unwrap();
    let (_, recs) = open(dir.path(), 1000).unwrap();
    assert_eq!(recs, vec![Rec::Checkpoint(20), data(21)]);
    assert_eq!(snapshots(dir.path()).len(), 1);
    assert_eq!(segments(dir.path()).len(), 1);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "tmp file removed"
    );
}

fn damage(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_damaged_snapshot_the_log_no_longer_covers_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1000).unwrap();
    wal.append_and_sync(&[data(1), data(2), Rec::Checkpoint(2), data(3)])
        .unwrap();
    drop(wal);
    let snap = snapshots(dir.path()).pop().unwrap();
    damage(&snap);
    let err = open(dir.path(), 1000).err().expect("must refuse");
    let msg = err.to_string();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{msg}");
    assert!(
        err.is_damage(),
        "a damaged snapshot without fallback is damaged state"
    );
    assert!(msg.contains("snap-00000000000000000003.snap"), "{msg}");
    assert!(msg.contains("checksum"), "{msg}");
    assert!(snap.exists(), "the evidence is kept");
}

#[test]
fn a_damaged_snapshot_falls_back_only_while_the_log_still_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1000).unwrap();
    wal.append_and_sync(&[data(1), Rec::Checkpoint(1)]).unwrap();
    for n in 2..=10 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    let before = files(dir.path());
    wal.append_and_sync(&[Rec::Checkpoint(10), data(11)])
        .unwrap();
    drop(wal);
    // A crash before the cleanup, and then the new snapshot rots.
    for (p, b) in &before {
        std::fs::write(p, b).unwrap();
    }
    let newest = snapshots(dir.path()).pop().unwrap();
    damage(&newest);
    let (mut wal, recs) = open(dir.path(), 1000).unwrap();
    let mut expected = vec![Rec::Checkpoint(1)];
    expected.extend((2..=11).map(data));
    assert_eq!(recs, expected, "old snapshot + every record after it");
    assert!(newest.exists(), "the damaged file is kept for inspection");
    // The log keeps going and reopens the same way.
    wal.append_and_sync(&[data(12)]).unwrap();
    drop(wal);
    let (_, recs) = open(dir.path(), 1000).unwrap();
    assert_eq!(recs.last(), Some(&data(12)));
    assert_eq!(recs.len(), 12);
}

#[test]
fn a_missing_snapshot_file_is_refused_not_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1000).unwrap();
    wal.append_and_sync(&[data(1), Rec::Checkpoint(1), data(2)])
        .unwrap();
    drop(wal);
    std::fs::remove_file(snapshots(dir.path()).pop().unwrap()).unwrap();
    let err = open(dir.path(), 1000).err().expect("must refuse");
    assert!(err.to_string().contains("no snapshot covers"), "{err}");
}

fn open_preallocated(dir: &Path, segment_bytes_max: u64) -> (Wal<Rec>, Vec<Rec>) {
    Wal::open(
        dir,
        WalOptions {
            segment_bytes_max,
            preallocate_bytes: 4096,
            ..WalOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn preallocated_segments_keep_zeros_ahead_and_read_back_exactly_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, recs) = open_preallocated(dir.path(), 1 << 20);
    assert!(recs.is_empty());
    wal.append_and_sync(&(1..=3).map(data).collect::<Vec<_>>())
        .unwrap();
    let seg = segments(dir.path()).pop().unwrap();
    // The file is one preallocation step long; the records take the start of it.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 4096);
    let used = wal.bytes_since_snapshot();
    assert!(used < 4096);
    // Appends past the step grow the file by whole steps, never by a record.
    for n in 4..=60 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    let len = std::fs::metadata(&seg).unwrap().len();
    assert_eq!(len % 4096, 0);
    assert!(len >= wal.bytes_since_snapshot());
    drop(wal);
    // Reopening finds the records and not the zeros, and appends right after the last record.
    let (mut wal, recs) = open_preallocated(dir.path(), 1 << 20);
    assert_eq!(recs, (1..=60).map(data).collect::<Vec<_>>());
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        len,
        "nothing truncated"
    );
    wal.append_and_sync(&[data(61)]).unwrap();
    drop(wal);
    // A log written with preallocation opens without it, and the other way round.
    let (_, recs) = open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recs, (1..=61).map(data).collect::<Vec<_>>());
}

#[test]
fn preallocated_torn_tail_is_truncated_and_mid_log_damage_is_still_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open_preallocated(dir.path(), 1 << 20);
    for n in 1..=5 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    let used = wal.bytes_since_snapshot();
    drop(wal);
    let seg = segments(dir.path()).pop().unwrap();
    // A half-written record inside the zeros: a batch whose fsync never finished.
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[60, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3], used)
        .unwrap();
    drop(f);
    let (mut wal, recs) = open_preallocated(dir.path(), 1 << 20);
    assert_eq!(recs, (1..=5).map(data).collect::<Vec<_>>());
    wal.append_and_sync(&[data(6)]).unwrap();
    drop(wal);
    let (_, recs) = open_preallocated(dir.path(), 1 << 20);
    assert_eq!(recs, (1..=6).map(data).collect::<Vec<_>>());

    // A flipped byte in the second batch, with batches after it, is corruption, not an end.
    let second = SEGMENT_HEADER + (used - SEGMENT_HEADER) / 5;
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0xff], second + 40).unwrap();
    drop(f);
    match Wal::<Rec>::open(
        dir.path(),
        WalOptions {
            preallocate_bytes: 4096,
            ..WalOptions::default()
        },
    ) {
        Err(e @ StorageError::Corrupt { offset, .. }) => {
            assert_eq!(offset, second);
            assert_eq!(e.first_bad_seq(), Some(2));
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("corruption in the middle must not open"),
    }
}

#[test]
fn preallocated_rotation_trims_finished_segments_and_keeps_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open_preallocated(dir.path(), 1000);
    for n in 1..=40 {
        wal.append_and_sync(&[data(n)]).unwrap();
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 4, "expected rotation, got {segs:?}");
    // Finished segments hold only their records; the active one keeps its zeros.
    for s in &segs[..segs.len() - 1] {
        let len = std::fs::metadata(s).unwrap().len();
        assert!((1000..4096).contains(&len), "{s:?}: {len} bytes");
    }
    assert_eq!(std::fs::metadata(segs.last().unwrap()).unwrap().len(), 4096);
    drop(wal);
    // A crash before the trim leaves zeros behind a finished segment's records: still clean.
    let f = OpenOptions::new().write(true).open(&segs[0]).unwrap();
    f.set_len(4096).unwrap();
    drop(f);
    let (_, recs) = open_preallocated(dir.path(), 1000);
    assert_eq!(recs, (1..=40).map(data).collect::<Vec<_>>());
}
