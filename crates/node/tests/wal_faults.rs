//! Fault sweeps over durable state, asserting exact outcomes: every byte of a small
//! multi-segment log flipped, every truncation length of its last segment, pages of the last
//! batch persisted out of order, old formats, metadata files damaged byte by byte, and the
//! quarantine of a damaged log. `wal.rs` has the behavioural tests.

use std::path::{Path, PathBuf};
use synod_node::storage::{DataDir, QUARANTINE_KEEP, StorageError, Wal, WalOptions, quarantine};

/// Bytes of the header every segment starts with (format version 2).
const SEGMENT_HEADER: u64 = 20;

mod support;
use support::Rec;

fn opts(preallocate_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes_max: 300,
        preallocate_bytes,
        // Recovery's truncations are not synced: thousands of opens stay fast, and what is
        // asserted is what `open` returns and leaves in the files, not what survives power loss.
        fsync: false,
        ..WalOptions::default()
    }
}

/// One batch as the test wrote it: where it lies and what it holds.
#[derive(Clone, Debug)]
struct BatchAt {
    segment: usize,
    start: u64,
    end: u64,
    first_seq: u64,
    records: Vec<Rec>,
}

/// A log written by the test, with the pristine bytes of its segment files.
struct Log {
    dir: tempfile::TempDir,
    preallocate_bytes: u64,
    files: Vec<(PathBuf, Vec<u8>)>,
    batches: Vec<BatchAt>,
}

/// Eight batches of three records (sizes vary) over three segments.
fn write_log(preallocate_bytes: u64) -> Log {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, recs) = Wal::<Rec>::open(dir.path(), opts(preallocate_bytes)).unwrap();
    assert!(recs.is_empty());
    assert_eq!(wal.bytes_since_snapshot(), SEGMENT_HEADER, "header size");
    let mut batches: Vec<BatchAt> = Vec::new();
    let mut at = SEGMENT_HEADER;
    for b in 0..8u64 {
        let records: Vec<Rec> = (0..3)
            .map(|i| {
                let n = b * 3 + i + 1;
                Rec::Data(n, vec![n as u8; 10 + (n as usize * 7) % 23])
            })
            .collect();
        let (segs_before, bytes_before) = (wal.segment_paths().len(), wal.bytes_since_snapshot());
        wal.append_and_sync(&records).unwrap();
        let segs = wal.segment_paths().len();
        let mut grew = wal.bytes_since_snapshot() - bytes_before;
        if segs > segs_before {
            at = SEGMENT_HEADER;
            grew -= SEGMENT_HEADER;
        }
        batches.push(BatchAt {
            segment: segs - 1,
            start: at,
            end: at + grew,
            first_seq: b * 3 + 1,
            records,
        });
        at += grew;
    }
    let files: Vec<(PathBuf, Vec<u8>)> = wal
        .segment_paths()
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    drop(wal);
    assert_eq!(files.len(), 3, "three segments");
    let last = batches.iter().filter(|b| b.segment == 2).count();
    assert!(last >= 2, "the last segment holds several batches");
    Log {
        dir,
        preallocate_bytes,
        files,
        batches,
    }
}

/// What opening a damaged copy of the log must give.
#[derive(Debug, PartialEq)]
enum Expect {
    /// These records, and the last segment cut to this length.
    Records(Vec<Rec>, u64),
    /// Damage in this file at this offset, first damaged record this.
    Damage(PathBuf, u64, u64),
}

/// Replaces the contents of `path` in place. Not `fs::write`: ext4 flushes a file truncated
/// to zero and rewritten when it is closed, which made each of thousands of rounds cost ms.
fn put(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f.set_len(bytes.len() as u64).unwrap();
}

impl Log {
    fn restore(&self) {
        for (p, b) in &self.files {
            if std::fs::read(p).unwrap() != *b {
                put(p, b);
            }
        }
    }

    fn records_before(&self, batch: usize) -> Vec<Rec> {
        self.batches[..batch]
            .iter()
            .flat_map(|b| b.records.clone())
            .collect()
    }

    fn open(&self) -> Result<Vec<Rec>, StorageError> {
        Wal::<Rec>::open(self.dir.path(), opts(self.preallocate_bytes)).map(|(_, r)| r)
    }

    /// The outcome the classification rules give for damage at `offset` of segment `seg`.
    fn expect_flip(&self, seg: usize, offset: u64) -> Expect {
        let last_seg = self.files.len() - 1;
        let path = self.files[seg].0.clone();
        let in_seg: Vec<usize> = (0..self.batches.len())
            .filter(|&i| self.batches[i].segment == seg)
            .collect();
        if offset < SEGMENT_HEADER {
            // Batches verify after a bad segment header: it was written before them.
            let first = self.batches[in_seg[0]].first_seq;
            return Expect::Damage(path, 0, first);
        }
        let hit = in_seg
            .iter()
            .copied()
            .find(|&i| (self.batches[i].start..self.batches[i].end).contains(&offset));
        match hit {
            Some(i) if seg == last_seg && i == self.batches.len() - 1 => {
                Expect::Records(self.records_before(i), self.batches[i].start)
            }
            Some(i) => Expect::Damage(path, self.batches[i].start, self.batches[i].first_seq),
            None => {
                // Garbage in the zero-filled space after the end: an unacknowledged write.
                assert_eq!(seg, last_seg, "finished segments are trimmed");
                let end = self.batches.last().unwrap().end;
                Expect::Records(self.records_before(self.batches.len()), end)
            }
        }
    }

    fn outcome(&self) -> Expect {
        match self.open() {
            Ok(recs) => {
                let last = &self.files.last().unwrap().0;
                Expect::Records(recs, std::fs::metadata(last).unwrap().len())
            }
            Err(e @ StorageError::Corrupt { .. }) => {
                assert!(e.is_damage());
                let seq = e
                    .first_bad_seq()
                    .expect("log damage names a sequence number");
                match e {
                    StorageError::Corrupt { path, offset, .. } => Expect::Damage(path, offset, seq),
                    _ => unreachable!(),
                }
            }
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }
}

fn flip_every_byte(preallocate_bytes: u64) {
    let log = write_log(preallocate_bytes);
    let started = std::time::Instant::now();
    let mut opens = 0;
    for (seg, (path, pristine)) in log.files.iter().enumerate() {
        for offset in 0..pristine.len() {
            for mask in [1u8 << (offset % 8), 0xff] {
                let mut bad = pristine.clone();
                bad[offset] ^= mask;
                put(path, &bad);
                let expect = log.expect_flip(seg, offset as u64);
                assert_eq!(
                    log.outcome(),
                    expect,
                    "segment {seg} offset {offset} mask {mask:#x}"
                );
                log.restore();
                opens += 1;
            }
        }
    }
    eprintln!(
        "flip sweep (preallocate {preallocate_bytes}): {opens} opens in {:?}",
        started.elapsed()
    );
    // Untouched, the whole log comes back.
    let all = log.records_before(log.batches.len());
    assert_eq!(log.open().unwrap(), all);
}

#[test]
fn every_flipped_byte_gives_the_exact_outcome() {
    flip_every_byte(0);
}

#[test]
fn every_flipped_byte_gives_the_exact_outcome_with_preallocation() {
    flip_every_byte(256);
}

fn truncate_at_every_length(preallocate_bytes: u64) {
    let log = write_log(preallocate_bytes);
    let (path, pristine) = log.files.last().unwrap();
    let in_last: Vec<&BatchAt> = log.batches.iter().filter(|b| b.segment == 2).collect();
    let before_last: Vec<Rec> = log.records_before(log.batches.len() - in_last.len());
    let records_end = in_last.last().unwrap().end;
    for len in 0..=pristine.len() as u64 {
        put(path, &pristine[..len as usize]);
        let mut expected = before_last.clone();
        let mut end = SEGMENT_HEADER;
        for b in in_last.iter().filter(|b| b.end <= len) {
            expected.extend(b.records.clone());
            end = b.end;
        }
        // Cut inside the zeros after the records: nothing to discard.
        let kept_len = if len >= records_end { len } else { end };
        assert_eq!(
            log.outcome(),
            Expect::Records(expected, kept_len),
            "last segment cut to {len} bytes"
        );
        log.restore();
    }
}

#[test]
fn every_truncation_of_the_last_segment_keeps_exactly_its_whole_batches() {
    truncate_at_every_length(0);
}

#[test]
fn every_truncation_of_the_last_segment_keeps_exactly_its_whole_batches_with_preallocation() {
    truncate_at_every_length(256);
}

/// Damages the record `record` (0-based) of batch `batch` in a copy of the log.
fn damage_record(log: &Log, batch: usize, record: usize) {
    let b = &log.batches[batch];
    let (path, pristine) = &log.files[b.segment];
    let mut bytes = pristine.clone();
    // Walk the body: batch header 28 bytes, then `len u32 | payload` per record.
    let mut at = b.start as usize + 28;
    for _ in 0..record {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len;
    }
    bytes[at + 6] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn pages_of_the_last_batch_persisted_out_of_order_are_a_torn_write() {
    for prealloc in [0, 256] {
        let log = write_log(prealloc);
        let last = log.batches.len() - 1;
        // The middle record of the last batch is bad, the one after it intact.
        damage_record(&log, last, 1);
        let (mut wal, recs) = Wal::<Rec>::open(log.dir.path(), opts(prealloc)).unwrap();
        assert_eq!(recs, log.records_before(last), "prealloc {prealloc}");
        let seg = &log.files.last().unwrap().0;
        assert_eq!(
            std::fs::metadata(seg).unwrap().len(),
            log.batches[last].start,
            "truncated to the end of the previous batch"
        );
        // The log goes on from there.
        let next = Rec::Data(99, vec![9; 5]);
        wal.append_and_sync(std::slice::from_ref(&next)).unwrap();
        drop(wal);
        let mut expected = log.records_before(last);
        expected.push(next);
        assert_eq!(log.open().unwrap(), expected);

        // Only the body reached the disk, the header page stayed zero.
        log.restore();
        let (path, pristine) = log.files.last().unwrap();
        let mut bytes = pristine.clone();
        let start = log.batches[last].start as usize;
        bytes[start..start + 28].fill(0);
        std::fs::write(path, bytes).unwrap();
        assert_eq!(log.open().unwrap(), log.records_before(last));
    }
}

#[test]
fn the_same_damage_before_a_valid_batch_is_corruption_of_acknowledged_data() {
    let log = write_log(0);
    let victim = log.batches.len() - 2;
    damage_record(&log, victim, 1);
    let damaged = std::fs::read(&log.files[2].0).unwrap();
    let e = log.open().unwrap_err();
    assert!(e.is_damage(), "{e}");
    assert_eq!(e.first_bad_seq(), Some(log.batches[victim].first_seq));
    let msg = e.to_string();
    assert!(msg.contains("wal-00000000000000000019.log"), "{msg}");
    assert!(
        msg.contains(&format!("offset {}", log.batches[victim].start)),
        "{msg}"
    );
    assert!(msg.contains("later batch"), "{msg}");
    // Nothing was truncated.
    assert_eq!(std::fs::read(&log.files[2].0).unwrap(), damaged);

    // A batch lost whole (read back as zeros) before a valid one is damage too, not an end.
    log.restore();
    let b = &log.batches[victim];
    let (path, pristine) = &log.files[b.segment];
    let mut bytes = pristine.clone();
    bytes[b.start as usize..b.end as usize].fill(0);
    std::fs::write(path, bytes).unwrap();
    let e = log.open().unwrap_err();
    assert_eq!(e.first_bad_seq(), Some(b.first_seq), "{e}");
}

#[test]
fn old_and_unknown_formats_are_refused_naming_the_file() {
    // Format version 1: `len | crc32c(len, payload) | payload`, no segment header.
    let dir = tempfile::tempdir().unwrap();
    let payload = postcard::to_allocvec(&Rec::Data(1, vec![1; 10])).unwrap();
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &payload);
    let mut v1 = len.to_vec();
    v1.extend_from_slice(&crc.to_le_bytes());
    v1.extend_from_slice(&payload);
    let path = dir.path().join("wal-00000000000000000001.log");
    std::fs::write(&path, &v1).unwrap();
    let e = Wal::<Rec>::open(dir.path(), opts(0))
        .err()
        .expect("refused");
    assert!(matches!(e, StorageError::UnsupportedFormat { .. }), "{e}");
    assert!(
        !e.is_damage(),
        "an old format is not damage: do not replace it"
    );
    assert!(
        e.to_string().contains("wal-00000000000000000001.log"),
        "{e}"
    );
    assert!(e.to_string().contains("version 1"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), v1, "left as it was");

    // Version 2 (before leases: records of another shape) and a newer version, each with a
    // header that verifies.
    for (version, says) in [(2u8, "predate leases"), (4u8, "version 4")] {
        let mut h = b"SYNW".to_vec();
        h.extend_from_slice(&[version, 0, 0, 0]);
        h.extend_from_slice(&1u64.to_le_bytes());
        let crc = crc32c::crc32c(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &h).unwrap();
        let e = Wal::<Rec>::open(dir.path(), opts(0))
            .err()
            .expect("refused");
        assert!(matches!(e, StorageError::UnsupportedFormat { .. }), "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), h, "left as it was");
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn quarantine_moves_the_log_aside_and_keeps_the_newest_three() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::<Rec>::open(dir.path(), opts(0)).unwrap();
    wal.append_and_sync(&[Rec::Data(1, vec![1; 10]), Rec::Checkpoint(1)])
        .unwrap();
    for n in 2..=20 {
        wal.append_and_sync(&[Rec::Data(n, vec![1; 30])]).unwrap();
    }
    drop(wal);
    let before = entries(dir.path());
    assert!(before.len() >= 3, "{before:?}");
    let q = quarantine(dir.path()).unwrap();
    assert_eq!(q.parent(), Some(dir.path()));
    assert!(
        q.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("quarantine-")
    );
    assert_eq!(entries(&q), before, "every segment and snapshot moved");
    // The log now opens empty, ignoring the quarantine directory.
    let (mut wal, recs) = Wal::<Rec>::open(dir.path(), opts(0)).unwrap();
    assert!(recs.is_empty());
    assert_eq!(wal.next_seq(), 1);
    wal.append_and_sync(&[Rec::Data(1, vec![2; 3])]).unwrap();
    drop(wal);
    assert_eq!(
        Wal::<Rec>::open(dir.path(), opts(0)).unwrap().1,
        vec![Rec::Data(1, vec![2; 3])]
    );
    // Five quarantines (several within one second): names stay unique, three are kept.
    let mut made = vec![q];
    for _ in 0..4 {
        made.push(quarantine(dir.path()).unwrap());
    }
    let kept: Vec<String> = entries(dir.path())
        .into_iter()
        .filter(|n| n.starts_with("quarantine-"))
        .collect();
    assert_eq!(kept.len(), QUARANTINE_KEEP, "{kept:?}");
    for p in &made[made.len() - QUARANTINE_KEEP..] {
        assert!(p.exists(), "newest kept: {p:?}");
    }
    assert!(!made[0].exists() && !made[1].exists(), "oldest deleted");
}

/// Flips every byte of `file` in a data directory in turn: opening must give the same result
/// as before or a damage error naming the file.
fn sweep_metadata_file(file: &str, open: impl Fn(&Path) -> Result<String, StorageError>) {
    let dir = tempfile::tempdir().unwrap();
    let good = open(dir.path()).unwrap();
    let path = dir.path().join(file);
    let pristine = std::fs::read(&path).unwrap();
    assert!(
        String::from_utf8_lossy(&pristine).contains("crc32c"),
        "{file} carries a checksum"
    );
    let mut damage = 0;
    for offset in 0..pristine.len() {
        for mask in [1u8 << (offset % 8), 0xff] {
            let mut bad = pristine.clone();
            bad[offset] ^= mask;
            std::fs::write(&path, &bad).unwrap();
            match open(dir.path()) {
                // Whitespace or hex case: the same content.
                Ok(s) => assert_eq!(s, good, "{file} offset {offset} mask {mask:#x}"),
                Err(e) => {
                    assert!(e.is_damage(), "{file} offset {offset}: {e}");
                    assert!(e.to_string().contains(file), "{e}");
                    damage += 1;
                }
            }
            std::fs::write(&path, &pristine).unwrap();
        }
    }
    assert!(damage > pristine.len(), "most flips are caught: {damage}");
}

#[test]
fn every_flipped_byte_of_meta_json_is_caught_or_harmless() {
    sweep_metadata_file("meta.json", |p| {
        DataDir::open(p, 7, "c", 1).map(|d| format!("{:?}", d.meta()))
    });
}

#[test]
fn every_flipped_byte_of_peers_json_is_caught_or_harmless() {
    sweep_metadata_file("peers.json", |p| {
        let d = DataDir::open(p, 7, "c", 1)?;
        let ids = d.peer_data_ids()?;
        if ids.recorded(2).is_none() {
            ids.check(2, 0xdead_beef_1234, false).unwrap();
            ids.check(3, 42, false).unwrap();
        }
        Ok(format!("{:?} {:?}", ids.recorded(2), ids.recorded(3)))
    });
}

#[test]
fn unchecksummed_metadata_is_read_and_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let meta = r#"{"format":1,"cluster_id":7,"cluster_name":"c","member_id":1,"data_id":77}"#;
    std::fs::write(dir.path().join("meta.json"), meta).unwrap();
    std::fs::write(dir.path().join("peers.json"), r#"{"2":5}"#).unwrap();
    let d = DataDir::open(dir.path(), 7, "c", 1).unwrap();
    assert_eq!(d.meta().data_id, 77);
    assert_eq!(d.peer_data_ids().unwrap().recorded(2), Some(5));
    for f in ["meta.json", "peers.json"] {
        let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(text.contains("crc32c"), "{f} upgraded: {text}");
    }
    drop(d);
    let d = DataDir::open(dir.path(), 7, "c", 1).unwrap();
    assert_eq!(d.meta().data_id, 77);
    assert_eq!(d.peer_data_ids().unwrap().recorded(2), Some(5));
    // A legacy file that does not parse is damage naming it.
    drop(d);
    std::fs::write(dir.path().join("meta.json"), &meta[..20]).unwrap();
    let e = DataDir::open(dir.path(), 7, "c", 1).unwrap_err();
    assert!(e.is_damage() && e.to_string().contains("meta.json"), "{e}");
}

#[test]
fn a_torn_segment_creation_gets_its_header_back_and_the_log_goes_on() {
    for cut in [0u64, 7, SEGMENT_HEADER - 1] {
        let log = write_log(0);
        let (path, pristine) = log.files.last().unwrap();
        put(path, &pristine[..cut as usize]);
        let in_last = log.batches.iter().filter(|b| b.segment == 2).count();
        let before = log.records_before(log.batches.len() - in_last);
        let (mut wal, recs) = Wal::<Rec>::open(log.dir.path(), opts(0)).unwrap();
        assert_eq!(recs, before, "cut to {cut}");
        assert_eq!(std::fs::metadata(path).unwrap().len(), SEGMENT_HEADER);
        assert_eq!(wal.next_seq(), before.len() as u64 + 1);
        let next = Rec::Data(7, vec![7; 7]);
        wal.append_and_sync(std::slice::from_ref(&next)).unwrap();
        drop(wal);
        let mut expected = before;
        expected.push(next);
        assert_eq!(log.open().unwrap(), expected);
    }
}
