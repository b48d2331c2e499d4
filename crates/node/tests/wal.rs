//! Write-ahead log behaviour: round trip, torn tails, corruption, rotation, checkpoints,
//! reopening after a crash.

use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use synod_core::DurableRecord;
use synod_node::storage::{StorageError, Wal, WalOptions};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Rec {
    Data(u64, Vec<u8>),
    Checkpoint(u64),
}

impl DurableRecord for Rec {
    fn is_checkpoint(&self) -> bool {
        matches!(self, Rec::Checkpoint(_))
    }
}

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
    wal.append_and_sync(&(1..=5).map(data).collect::<Vec<_>>())
        .unwrap();
    drop(wal);
    let seg = segments(dir.path()).pop().unwrap();
    let full = std::fs::metadata(&seg).unwrap().len();
    // Cut the last record in half: a write that never finished before the crash.
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
    wal.append_and_sync(&(1..=5).map(data).collect::<Vec<_>>())
        .unwrap();
    drop(wal);
    let seg = segments(dir.path()).pop().unwrap();
    let record_bytes = std::fs::metadata(&seg).unwrap().len() / 5;
    // Flip a payload byte of the second record.
    let mut f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(record_bytes + 20)).unwrap();
    f.write_all(&[0xff]).unwrap();
    drop(f);
    let err = match open(dir.path(), 1 << 20) {
        Err(e) => e,
        Ok(_) => panic!("corruption in the middle must not open"),
    };
    match &err {
        StorageError::Corrupt { path, offset, .. } => {
            assert_eq!(path, &seg);
            assert_eq!(*offset, record_bytes);
        }
        other => panic!("wrong error: {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("wal-00000000000000000001.log"), "{msg}");
    assert!(msg.contains(&format!("offset {record_bytes}")), "{msg}");
    // Nothing was truncated: the evidence is kept.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), record_bytes * 5);
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
    assert!(
        segs[0].ends_with("wal-00000000000000000032.log"),
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
    let (mut wal, _) = Wal::<Rec>::open(
        dir.path(),
        WalOptions {
            record_bytes_max: 64,
            ..WalOptions::default()
        },
    )
    .unwrap();
    let e = wal.append_and_sync(&[data(1)]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
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
