//! The write-ahead log: an ordered stream of an engine's durable records in segment files.
//!
//! * **Files.** `wal-{first_seq:020}.log`, where `first_seq` is the sequence number (from 1) of
//!   the segment's first record; sorting names sorts segments.
//! * **Records.** `len u32 LE | crc u32 LE | payload`, payload = postcard of the record, crc =
//!   CRC32C over the length bytes and the payload. Covering the length means a zeroed header
//!   (len 0, crc 0) never checks out, so zero-filled space is never read as a record.
//! * **Batches.** [`Wal::append`] writes a batch with one `write`; [`Wal::sync`] makes
//!   everything appended durable with one `fdatasync`; the node calls
//!   [`Wal::append_and_sync`], which does both. Group commit falls out of the runtime: while
//!   one fsync runs, inputs queue up, and the next loop turns all of them into one batch.
//! * **Rotation.** A batch that finds the active segment at or past `segment_bytes_max` starts a
//!   new segment first (a batch is never split, so a segment may exceed the bound by one batch).
//! * **Preallocation.** The active segment is kept zero-filled `preallocate_bytes` ahead of
//!   its last record (real zeros written once, not `fallocate`, whose unwritten extents still
//!   journal metadata on first write). A batch then overwrites blocks the file already owns,
//!   so its `fdatasync` flushes data only, no size or extent change: on this machine's ext4 that
//!   cut a small batch's sync from ≈250 µs to ≈150 µs and its CPU by ≈40 %. The logical end is
//!   the first all-zero record header; a header of zeros with only zeros after it is clean
//!   preallocated space, in any segment (a rotated segment is truncated to its records, but a
//!   crash may come first). `docs/durability.md` has the measurement.
//! * **Checkpoints.** A record whose `is_checkpoint()` is true subsumes all earlier records. It
//!   is not written into a segment: it becomes the snapshot file `snap-{seq}.snap`
//!   ([`super::snapshot`], atomic and checksummed), the next record starts a fresh segment at
//!   `seq + 1`, and only once both are durable are the older segments and the previous
//!   snapshot deleted.
//! * **Recovery** ([`Wal::open`]). The newest snapshot that verifies is the base; segments
//!   after it are read in order, checking that sequence numbers are contiguous from the base
//!   (or from 1 without one: a log that starts later with nothing covering the start is
//!   refused). In the **last** segment a record that runs past the end of the file, or a bad
//!   record followed only by zero bytes, is a torn tail (a write that never completed its
//!   fsync, so never acknowledged): the file is truncated there. Any other bad record — in an
//!   older segment, or followed by more data — is corruption: opening fails naming the file and
//!   offset, and nothing is dropped silently.
//! * **A damaged newest snapshot** fails opening with an error naming the file, unless the
//!   segments still hold every record since the previous snapshot (a crash came before the
//!   cleanup behind the new snapshot). Only then does recovery fall back to the previous
//!   snapshot plus those records, logging loudly; the damaged file is kept.
//!
//! Known limit: a power loss can persist the pages of one unsynced batch out of order, leaving
//! a bad record followed by intact ones of the same batch. We report that as corruption (safe:
//! the node stops instead of losing data, but an operator must act). Per-batch commit markers
//! would let us tell it apart; not done yet.

use super::{StorageError, snapshot, sync_dir};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use synod_core::DurableRecord;

use crate::metrics::Metrics;

// Retryable appends for a full or failing disk; a child module so it can roll the log back.
mod held;
pub use held::AppendError;

const HEADER_BYTES: u64 = 8;

/// WAL tuning. Units in the names.
#[derive(Clone, Debug)]
pub struct WalOptions {
    pub segment_bytes_max: u64,
    /// Largest record accepted on append and believed on recovery (a larger length prefix is
    /// damage, not a record).
    pub record_bytes_max: u32,
    /// UNSAFE when false: batches are written but not fsynced.
    pub fsync: bool,
    /// Zero-filled space kept ahead of the active segment's last record (0 = grow the file by
    /// each append instead). See the module doc.
    pub preallocate_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes_max: 64 * 1024 * 1024,
            record_bytes_max: 256 * 1024 * 1024,
            fsync: true,
            preallocate_bytes: 0,
        }
    }
}

/// Zeros written per `write` call while preallocating.
static ZERO_CHUNK: [u8; 64 * 1024] = [0u8; 64 * 1024];

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
}

/// An open write-ahead log of records of type `R`. Single writer: owned by the engine thread.
pub struct Wal<R> {
    dir: PathBuf,
    opts: WalOptions,
    /// Oldest first; the last one is being appended to.
    segments: Vec<Segment>,
    active: File,
    /// Length of the active segment's file: records end at `active_bytes()`, zeros follow up
    /// to here.
    active_file_bytes: u64,
    /// Appended bytes not yet synced.
    dirty: bool,
    /// Sequence number the next appended record gets.
    next_seq: u64,
    /// Sequence number of the snapshot recovery would start from (0: none) and its size.
    snapshot_seq: u64,
    snapshot_bytes: u64,
    metrics: Option<Arc<Metrics>>,
    _record: PhantomData<fn() -> R>,
}

fn segment_name(first_seq: u64) -> String {
    format!("wal-{first_seq:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn into_io(e: StorageError) -> io::Error {
    match e {
        StorageError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

fn checksum(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload)
}

/// Appends one encoded record to `buf`.
fn encode_record(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&checksum(len, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// What reading one segment found.
struct SegmentScan<R> {
    records: Vec<R>,
    /// Offset just past the last good record.
    good_bytes: u64,
    /// Where and why reading stopped early, if it did.
    bad: Option<(u64, String, bool)>,
}

impl<R: DurableRecord> Wal<R> {
    /// Opens (creating if needed) the log in `dir` and returns the newest snapshot's record (if
    /// any) followed by every record after it, in append order. See the module docs for torn
    /// tails, corruption and the snapshot fallback.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Self, Vec<R>), StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        if !opts.fsync {
            tracing::warn!(
                dir = %dir.display(),
                "UNSAFE: WAL fsync is disabled; acknowledged writes can be lost on power failure"
            );
        }
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        let mut snapshots: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = parse_segment_name(name) {
                found.push((seq, entry.path()));
            } else if let Some(seq) = snapshot::parse_snapshot_name(name) {
                snapshots.push((seq, entry.path()));
            } else if snapshot::is_snapshot_tmp(name) {
                // A snapshot write a crash interrupted: never renamed, so never relied on.
                std::fs::remove_file(entry.path())
                    .map_err(|e| StorageError::io(entry.path(), e))?;
            }
        }
        found.sort();
        snapshots.sort();

        // The base: the newest snapshot that verifies. If the newest one is damaged we may fall
        // back to the one before it, but only if the segments still hold every record between
        // the two (checked below); otherwise its error is returned.
        let mut base: Option<(u64, PathBuf, R, u64)> = None;
        let mut damaged: Option<(u64, StorageError)> = None;
        for (seq, path) in snapshots.iter().rev() {
            match snapshot::read::<R>(path, *seq) {
                Ok((r, bytes)) => {
                    base = Some((*seq, path.clone(), r, bytes));
                    break;
                }
                Err(e @ StorageError::Corrupt { .. }) if damaged.is_none() => {
                    tracing::error!(error = %e, "newest snapshot is damaged");
                    damaged = Some((*seq, e));
                }
                Err(e) => return Err(damaged.map(|(_, d)| d).unwrap_or(e)),
            }
        }
        let base_seq = base.as_ref().map(|b| b.0).unwrap_or(0);
        // Segments at or before the base hold only records the snapshot subsumes (a segment
        // never spans a checkpoint: one always starts right after it).
        let (stale, found): (Vec<_>, Vec<_>) =
            found.into_iter().partition(|(first, _)| *first <= base_seq);
        let refuse_damaged = |damaged: Option<(u64, StorageError)>, why: String| match damaged {
            Some((
                _,
                StorageError::Corrupt {
                    path,
                    offset,
                    reason,
                },
            )) => StorageError::Corrupt {
                path,
                offset,
                reason: format!("{reason}; cannot fall back to an older snapshot: {why}"),
            },
            Some((_, e)) => e,
            None => StorageError::Corrupt {
                path: dir.to_path_buf(),
                offset: 0,
                reason: why,
            },
        };
        if let Some(bad_seq) = damaged.as_ref().map(|d| d.0)
            && found.first().map(|(f, _)| *f) != Some(base_seq + 1)
        {
            return Err(refuse_damaged(
                damaged,
                format!(
                    "the log no longer holds the records between sequence {} and {bad_seq}",
                    base_seq + 1
                ),
            ));
        }

        let mut segments = Vec::new();
        let mut records: Vec<R> = Vec::new();
        let mut next_seq: Option<u64> = (base_seq > 0).then_some(base_seq + 1);
        let last = found.len().saturating_sub(1);
        for (i, (first_seq, path)) in found.into_iter().enumerate() {
            if let Some(expected) = next_seq
                && expected != first_seq
            {
                // Falling back over a damaged snapshot skips exactly its own sequence number:
                // the records before it hold everything it summarised.
                let skips_damaged = damaged
                    .as_ref()
                    .is_some_and(|(bad, _)| *bad == expected && first_seq == bad + 1);
                if !skips_damaged {
                    let why = format!(
                        "segment starts at record {first_seq} but the previous segment ended \
                         before record {expected} (a segment is missing or damaged)"
                    );
                    if damaged.is_some() {
                        return Err(refuse_damaged(damaged, why));
                    }
                    return Err(StorageError::Corrupt {
                        path,
                        offset: 0,
                        reason: why,
                    });
                }
            }
            let scan = Self::scan(&path, &opts)?;
            if let Some((offset, reason, torn)) = scan.bad {
                if i == last && torn {
                    tracing::warn!(
                        file = %path.display(),
                        offset,
                        reason,
                        "truncating a torn tail in the write-ahead log"
                    );
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| StorageError::io(&path, e))?;
                    f.set_len(offset).map_err(|e| StorageError::io(&path, e))?;
                    f.sync_all().map_err(|e| StorageError::io(&path, e))?;
                } else {
                    return Err(StorageError::Corrupt {
                        path,
                        offset,
                        reason,
                    });
                }
            }
            if i == 0
                && base.is_none()
                && damaged.is_none()
                && first_seq != 1
                && !scan.records.first().is_some_and(|r| r.is_checkpoint())
            {
                // Records 1..first_seq are gone and no snapshot or checkpoint covers them:
                // starting would silently forget them.
                return Err(StorageError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!(
                        "the log starts at record {first_seq}, no snapshot covers records \
                         before it (a snapshot file or segment is missing)"
                    ),
                });
            }
            next_seq = Some(first_seq + scan.records.len() as u64);
            segments.push(Segment {
                first_seq,
                path,
                bytes: scan.good_bytes,
            });
            records.extend(scan.records);
        }
        if let Some(bad_seq) = damaged.as_ref().map(|d| d.0)
            && next_seq.unwrap_or(0) < bad_seq
        {
            let why = format!(
                "the log ends before record {}, short of the damaged snapshot's {bad_seq}",
                next_seq.unwrap_or(0)
            );
            return Err(refuse_damaged(damaged, why));
        }
        if let Some((bad_seq, e)) = &damaged {
            tracing::error!(
                error = %e,
                fallback_to = base_seq,
                "RECOVERING WITHOUT THE NEWEST SNAPSHOT (sequence {bad_seq}): it is damaged, but \
                 the log still holds every record it summarised; keep the file for inspection"
            );
        }

        // Records before a checkpoint *inside* a segment (logs written before snapshots had
        // files of their own) are subsumed by it.
        let first_kept_seq = segments.first().map(|s| s.first_seq).unwrap_or(1);
        if let Some(cp) = records.iter().rposition(|r| r.is_checkpoint()) {
            let cp_seq = first_kept_seq + cp as u64;
            records.drain(..cp);
            let keep_from = segments
                .iter()
                .rposition(|s| s.first_seq <= cp_seq)
                .unwrap_or(0);
            for s in segments.drain(..keep_from) {
                std::fs::remove_file(&s.path).map_err(|e| StorageError::io(&s.path, e))?;
            }
            sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
        } else if let Some((_, _, r, _)) = &base {
            records.insert(0, r.clone());
        }

        // A crash between a snapshot becoming durable and the cleanup behind it leaves older
        // segments and snapshots: finish that cleanup now (never while falling back).
        if damaged.is_none() {
            let mut removed = false;
            for (_, path) in &stale {
                std::fs::remove_file(path).map_err(|e| StorageError::io(path, e))?;
                removed = true;
            }
            for (seq, path) in &snapshots {
                if *seq < base_seq {
                    std::fs::remove_file(path).map_err(|e| StorageError::io(path, e))?;
                    removed = true;
                }
            }
            if removed {
                sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
            }
        }

        let next_seq = next_seq.unwrap_or(1);
        let (active, active_file_bytes) = match segments.last() {
            Some(s) => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&s.path)
                    .map_err(|e| StorageError::io(&s.path, e))?;
                let len = f
                    .metadata()
                    .map_err(|e| StorageError::io(&s.path, e))?
                    .len();
                (f, len)
            }
            None => {
                let (f, s) = Self::create_segment(dir, next_seq)?;
                segments.push(s);
                (f, 0)
            }
        };
        let (snapshot_seq, snapshot_bytes) = base.map(|b| (b.0, b.3)).unwrap_or((0, 0));
        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            segments,
            active,
            active_file_bytes,
            dirty: false,
            next_seq,
            snapshot_seq,
            snapshot_bytes,
            metrics: None,
            _record: PhantomData,
        };
        Ok((wal, records))
    }

    /// Counts fsyncs and records into these metrics from now on.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, Segment), StorageError> {
        let path = dir.join(segment_name(first_seq));
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        // The new name must survive a crash before any record in it is acknowledged.
        sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
        Ok((
            f,
            Segment {
                first_seq,
                path,
                bytes: 0,
            },
        ))
    }

    /// Reads one segment, stopping at the first bad record. `bad.2` says whether the damage
    /// looks like a torn tail (nothing but zeros or a truncated record after it).
    fn scan(path: &Path, opts: &WalOptions) -> Result<SegmentScan<R>, StorageError> {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| StorageError::io(path, e))?;
        let total = bytes.len() as u64;
        let mut records = Vec::new();
        let mut off: u64 = 0;
        let rest_is_zero = |from: u64| bytes[from.min(total) as usize..].iter().all(|b| *b == 0);
        while off < total {
            if total - off < HEADER_BYTES {
                return Ok(SegmentScan {
                    records,
                    good_bytes: off,
                    bad: Some((off, "partial record header at end of file".into(), true)),
                });
            }
            let at = off as usize;
            let len_bytes: [u8; 4] = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
            let len = u32::from_le_bytes(len_bytes);
            let crc =
                u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
            let end = off + HEADER_BYTES + len as u64;
            if len == 0 && crc == 0 && rest_is_zero(off) {
                // Preallocated space: the clean end of the records, not damage.
                break;
            }
            if len > opts.record_bytes_max {
                let torn = rest_is_zero(off);
                return Ok(SegmentScan {
                    records,
                    good_bytes: off,
                    bad: Some((
                        off,
                        format!(
                            "record length {len} exceeds the {} byte bound",
                            opts.record_bytes_max
                        ),
                        torn,
                    )),
                });
            }
            if end > total {
                return Ok(SegmentScan {
                    records,
                    good_bytes: off,
                    bad: Some((
                        off,
                        format!("record of {len} bytes runs past end of file"),
                        true,
                    )),
                });
            }
            let payload = &bytes[(off + HEADER_BYTES) as usize..end as usize];
            if checksum(len_bytes, payload) != crc {
                let torn = rest_is_zero(end);
                return Ok(SegmentScan {
                    records,
                    good_bytes: off,
                    bad: Some((off, "checksum mismatch".into(), torn)),
                });
            }
            match postcard::from_bytes::<R>(payload) {
                Ok(r) => records.push(r),
                Err(e) => {
                    // The checksum held, so the bytes are what we wrote: a format mismatch,
                    // never a torn write.
                    return Ok(SegmentScan {
                        records,
                        good_bytes: off,
                        bad: Some((off, format!("record does not decode: {e}"), false)),
                    });
                }
            }
            off = end;
        }
        Ok(SegmentScan {
            records,
            good_bytes: off,
            bad: None,
        })
    }

    /// Appends `records` and makes them durable with one fsync (unless fsync is disabled).
    /// A checkpoint record goes to a snapshot file of its own instead (see [`super::snapshot`]);
    /// once it is durable, every older segment and snapshot is deleted.
    /// On error nothing of this batch may be treated as durable; the caller must stop.
    pub fn append_and_sync(&mut self, records: &[R]) -> io::Result<()>
    where
        R: Serialize,
    {
        self.append(records)?;
        self.sync()
    }

    /// Writes `records` without syncing the active segment (a checkpoint among them is still
    /// written durably, after syncing what came before it). Nothing appended may be treated as
    /// durable until [`Wal::sync`] returns; several appends may share that one sync.
    pub fn append(&mut self, records: &[R]) -> io::Result<()>
    where
        R: Serialize,
    {
        let mut buf = Vec::new();
        let mut start = 0;
        while start < records.len() {
            if records[start].is_checkpoint() {
                // What the snapshot summarises must not be durable only in it while earlier
                // segment bytes are not.
                self.sync()?;
                self.write_snapshot(&records[start])?;
                start += 1;
                continue;
            }
            // Everything up to the next checkpoint: one write, one fsync.
            let until = records[start..]
                .iter()
                .position(|r| r.is_checkpoint())
                .map(|p| start + p)
                .unwrap_or(records.len());
            if self.active_bytes() >= self.opts.segment_bytes_max {
                self.rotate()?;
            }
            buf.clear();
            for r in &records[start..until] {
                let payload = postcard::to_allocvec(r).map_err(io::Error::other)?;
                if payload.len() > self.opts.record_bytes_max as usize {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "record of {} bytes exceeds record_bytes_max {}",
                            payload.len(),
                            self.opts.record_bytes_max
                        ),
                    ));
                }
                encode_record(&mut buf, &payload);
            }
            let at = self.active_bytes();
            self.preallocate(at + buf.len() as u64)?;
            self.active.write_all_at(&buf, at)?;
            self.active_file_bytes = self.active_file_bytes.max(at + buf.len() as u64);
            self.dirty = true;
            let n = (until - start) as u64;
            self.next_seq += n;
            if let Some(s) = self.segments.last_mut() {
                s.bytes += buf.len() as u64;
            }
            if let Some(m) = &self.metrics {
                m.wal_records.inc_by(n);
            }
            start = until;
        }
        Ok(())
    }

    /// Writes a checkpoint record as the snapshot at `next_seq`, starts the segment after it,
    /// and only then deletes what it subsumes. Each step is durable before the next begins, so
    /// a crash anywhere leaves either the old snapshot with every segment after it, or the new
    /// snapshot (plus leftovers that `open` deletes).
    fn write_snapshot(&mut self, record: &R) -> io::Result<()> {
        let seq = self.next_seq;
        let (path, bytes) = snapshot::write(&self.dir, seq, record)?;
        self.next_seq += 1;
        if let Some(m) = &self.metrics {
            m.wal_records.inc();
            if self.opts.fsync {
                m.wal_fsyncs.inc();
            }
        }
        let (f, s) = Self::create_segment(&self.dir, self.next_seq).map_err(into_io)?;
        self.active = f;
        self.active_file_bytes = 0;
        let old = std::mem::replace(&mut self.segments, vec![s]);
        for s in old {
            std::fs::remove_file(&s.path)?;
        }
        let previous = self.snapshot_seq;
        if previous > 0 && previous < seq {
            let p = self.dir.join(snapshot::snapshot_name(previous));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        sync_dir(&self.dir)?;
        tracing::info!(file = %path.display(), bytes, "snapshot written; older log deleted");
        self.snapshot_seq = seq;
        self.snapshot_bytes = bytes;
        Ok(())
    }

    /// Makes everything appended so far durable (one `fdatasync`, none if nothing is pending).
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.sync_active()?;
        self.dirty = false;
        Ok(())
    }

    fn sync_active(&mut self) -> io::Result<()> {
        if self.opts.fsync {
            self.active.sync_data()?;
            if let Some(m) = &self.metrics {
                m.wal_fsyncs.inc();
            }
        }
        Ok(())
    }

    fn active_bytes(&self) -> u64 {
        self.segments.last().map(|s| s.bytes).unwrap_or(0)
    }

    /// Starts a new segment at `next_seq`, after syncing the active one ([`Wal::sync`] only
    /// ever syncs the active file).
    fn rotate(&mut self) -> io::Result<()> {
        if self.active_bytes() == 0 {
            // An empty active segment already starts at next_seq; reuse it.
            return Ok(());
        }
        self.sync()?;
        // Give back the finished segment's zero tail. Not synced: if the crash comes first,
        // recovery reads the zeros as clean preallocated space.
        let used = self.active_bytes();
        if self.active_file_bytes > used {
            self.active.set_len(used)?;
        }
        let (f, s) = Self::create_segment(&self.dir, self.next_seq).map_err(into_io)?;
        self.active = f;
        self.active_file_bytes = 0;
        self.segments.push(s);
        Ok(())
    }

    /// Makes sure the active file is zero-filled up to at least `needed`, growing it in steps
    /// of `preallocate_bytes`. The zeros become durable with the batch's own `fdatasync`.
    fn preallocate(&mut self, needed: u64) -> io::Result<()> {
        let step = self.opts.preallocate_bytes;
        if step == 0 || needed <= self.active_file_bytes {
            return Ok(());
        }
        let target = needed.div_ceil(step) * step;
        let mut at = self.active_file_bytes;
        while at < target {
            let n = (target - at).min(ZERO_CHUNK.len() as u64);
            self.active.write_all_at(&ZERO_CHUNK[..n as usize], at)?;
            at += n;
        }
        self.active_file_bytes = target;
        Ok(())
    }

    /// Bytes on disk: live segments plus the current snapshot.
    pub fn size_bytes(&self) -> u64 {
        self.bytes_since_snapshot() + self.snapshot_bytes
    }

    /// Bytes of log written since the last snapshot (what a `snapshot_bytes` threshold would
    /// watch; see the storage module doc for why engines are not told yet).
    pub fn bytes_since_snapshot(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// The snapshot recovery would start from: its sequence number and path.
    pub fn snapshot(&self) -> Option<(u64, PathBuf)> {
        (self.snapshot_seq > 0).then(|| {
            (
                self.snapshot_seq,
                self.dir.join(snapshot::snapshot_name(self.snapshot_seq)),
            )
        })
    }

    /// Live segment files, oldest first (for tests and status).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    /// Sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}
