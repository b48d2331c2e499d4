//! The write-ahead log: an ordered stream of an engine's durable records in segment files.
//!
//! * **Files.** `wal-{first_seq:020}.log`, where `first_seq` is the sequence number (from 1) of
//!   the segment's first record; sorting names sorts segments. Subdirectories (quarantined
//!   logs, [`super::quarantine`]) and other names are ignored.
//! * **Framing** (`segment.rs`, format version 2). A segment starts with a 20-byte
//!   header (magic, format version, `first_seq`, CRC32C), written and fsynced when the segment
//!   is created. Then batches: one per append, `"SYNB" | count | body_len | first_seq | crc`
//!   followed by the records (`len u32 | postcard payload`). The batch crc covers the header and
//!   every record, so it is the batch's commit marker: a batch verifies whole or not at all, and
//!   recovery returns whole batches only. Logs of format version 1 (unframed records, no
//!   segment header) are refused with [`StorageError::UnsupportedFormat`] naming the file; they
//!   are not read.
//! * **Batches.** [`Wal::append`] writes a batch with one `write`; [`Wal::sync`] makes
//!   everything appended durable with one `fdatasync`; the node calls
//!   [`Wal::append_and_sync`], which does both. Group commit falls out of the runtime: while
//!   one fsync runs, inputs queue up, and the next loop turns all of them into one batch.
//! * **Rotation.** A batch that finds the active segment at or past `segment_bytes_max` starts a
//!   new segment first (a batch is never split, so a segment may exceed the bound by one batch).
//! * **Preallocation.** The active segment is kept zero-filled `preallocate_bytes` ahead of
//!   its last batch (real zeros written once, not `fallocate`, whose unwritten extents still
//!   journal metadata on first write). A batch then overwrites blocks the file already owns,
//!   so its `fdatasync` flushes data only, no size or extent change: on this machine's ext4 that
//!   cut a small batch's sync from ≈250 µs to ≈150 µs and its CPU by ≈40 %. The logical end is
//!   the first all-zero batch header; `docs/durability.md` has the measurement.
//! * **Checkpoints.** A record whose `is_checkpoint()` is true subsumes all earlier records. It
//!   is not written into a segment: it becomes the snapshot file `snap-{seq}.snap`
//!   (`snapshot.rs`, atomic and checksummed), the next record starts a fresh segment at
//!   `seq + 1`, and only once both are durable are the older segments and the previous
//!   snapshot deleted.
//! * **Recovery** ([`Wal::open`]). The newest snapshot that verifies is the base; segments
//!   after it are read in order, batch by batch, checking that sequence numbers are contiguous
//!   from the base (or from 1 without one: a log that starts later with nothing covering the
//!   start is refused). Reading a segment stops at the first batch that does not verify (or at
//!   the zero header that ends the log, if anything but zeros follows it). That damage is
//!   * a **torn write** if it is in the **last** segment and no batch after it verifies: the
//!     last batch's write never finished (its pages may even have reached the disk out of
//!     order: a bad record followed by intact ones of the same batch), so its fsync never
//!     returned and nothing in it was acknowledged. The file is truncated to the end of the
//!     last whole batch (a torn segment header is rewritten) and a warning is logged;
//!   * **damage to acknowledged data** otherwise — in a segment that is not the last, or
//!     followed by a batch that verifies (which was written, and so acknowledged, after it), or
//!     a batch that verifies but holds the wrong sequence numbers or undecodable records:
//!     opening fails with [`StorageError::Corrupt`] naming the file, the offset and the first
//!     damaged sequence number ([`StorageError::first_bad_seq`]); nothing is truncated.
//!
//!   Limits of what bytes can tell: several appends before one [`Wal::sync`] put several
//!   unacknowledged batches at the end, and damage to one of them followed by an intact one
//!   is then reported as damage (safe, not exact; the node syncs every batch it appends).
//!   Conversely, rot in the log's very last batch after it was acknowledged, or damage that
//!   also destroys every later batch of the last segment, looks exactly like a torn write and
//!   is truncated; only a peer's copy can tell those apart.
//! * **Unused space.** Non-zero bytes after the zero header that ends the log, with no
//!   verifying batch among them, are a torn write too (a batch whose header page never reached
//!   the disk): truncated in the last segment, damage in any other.
//! * **A damaged newest snapshot** fails opening with an error naming the file, unless the
//!   segments still hold every record since the previous snapshot (a crash came before the
//!   cleanup behind the new snapshot). Only then does recovery fall back to the previous
//!   snapshot plus those records, logging loudly; the damaged file is kept.

use super::segment::{self, SEGMENT_HEADER_BYTES};
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
    /// The buffer batches are encoded into, kept from one append to the next.
    scratch: Vec<u8>,
    _record: PhantomData<fn() -> R>,
}

/// Capacity [`Wal::append`] keeps in its buffer after a batch larger than this.
const SCRATCH_KEEP_BYTES: usize = 16 * 1024 * 1024;

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

/// The newest snapshot that verified: sequence number, path, record, file size.
type Base<R> = (u64, PathBuf, R, u64);

/// Segment and snapshot files in a WAL directory, each sorted by sequence number.
type Listing = (Vec<(u64, PathBuf)>, Vec<(u64, PathBuf)>);

/// Lists the segments and snapshots in `dir`, deleting unfinished snapshot writes. Anything
/// else (quarantine subdirectories above all) is ignored.
fn list_dir(dir: &Path) -> Result<Listing, StorageError> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    let mut snapshots: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let is_dir = entry
            .file_type()
            .map_err(|e| StorageError::io(entry.path(), e))?
            .is_dir();
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_dir {
            continue;
        }
        if let Some(seq) = parse_segment_name(name) {
            found.push((seq, entry.path()));
        } else if let Some(seq) = snapshot::parse_snapshot_name(name) {
            snapshots.push((seq, entry.path()));
        } else if snapshot::is_snapshot_tmp(name) {
            // A snapshot write a crash interrupted: never renamed, so never relied on.
            std::fs::remove_file(entry.path()).map_err(|e| StorageError::io(entry.path(), e))?;
        }
    }
    found.sort();
    snapshots.sort();
    Ok((found, snapshots))
}

/// The base: the newest snapshot that verifies. If the newest one is damaged we may fall back
/// to the one before it, but only if the segments still hold every record between the two
/// (checked by the caller); the damaged one is returned beside it.
#[allow(clippy::type_complexity)]
fn choose_base<R: DurableRecord>(
    snapshots: &[(u64, PathBuf)],
) -> Result<(Option<Base<R>>, Option<(u64, StorageError)>), StorageError> {
    let mut damaged: Option<(u64, StorageError)> = None;
    for (seq, path) in snapshots.iter().rev() {
        match snapshot::read::<R>(path, *seq) {
            Ok((r, bytes)) => return Ok((Some((*seq, path.clone(), r, bytes)), damaged)),
            Err(e @ StorageError::Corrupt { .. }) if damaged.is_none() => {
                tracing::error!(error = %e, "newest snapshot is damaged");
                damaged = Some((*seq, e));
            }
            Err(e) => return Err(damaged.map(|(_, d)| d).unwrap_or(e)),
        }
    }
    Ok((None, damaged))
}

/// The damaged snapshot's error, extended by why the log cannot stand in for it.
fn refuse_damaged(dir: &Path, damaged: Option<(u64, StorageError)>, why: String) -> StorageError {
    match damaged {
        Some((
            _,
            StorageError::Corrupt {
                path,
                offset,
                first_bad_seq,
                reason,
            },
        )) => StorageError::Corrupt {
            path,
            offset,
            first_bad_seq,
            reason: format!("{reason}; cannot fall back to an older snapshot: {why}"),
        },
        Some((_, e)) => e,
        None => StorageError::corrupt(dir, 0, why),
    }
}

/// Reads a segment and applies the torn-versus-damage rule (module doc) to what stopped the
/// read: truncates a torn last batch, or returns the damage. Returns the whole batches' records
/// and the segment's length in use.
fn recover_segment<R: DurableRecord>(
    path: &Path,
    first_seq: u64,
    is_last: bool,
    opts: &WalOptions,
) -> Result<(Vec<R>, u64), StorageError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| StorageError::io(path, e))?;
    let scan = segment::scan::<R>(path, &bytes, first_seq, opts.record_bytes_max)?;
    let Some(bad) = scan.bad else {
        return Ok((scan.records, scan.end));
    };
    let first_bad_seq = first_seq + scan.records.len() as u64;
    if !is_last || bad.definite {
        return Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: bad.offset,
            first_bad_seq: Some(first_bad_seq),
            reason: format!("acknowledged records are damaged: {}", bad.reason),
        });
    }
    tracing::warn!(
        file = %path.display(),
        offset = bad.offset,
        reason = %bad.reason,
        first_lost_seq = first_bad_seq,
        "discarding a torn final batch of the write-ahead log (its write never completed, so \
         it was never acknowledged)"
    );
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io(path, e))?;
    let end = if scan.end < SEGMENT_HEADER_BYTES {
        // The segment's creation was torn: give it its header again.
        f.set_len(0).map_err(|e| StorageError::io(path, e))?;
        f.write_all_at(&segment::segment_header(first_seq), 0)
            .map_err(|e| StorageError::io(path, e))?;
        SEGMENT_HEADER_BYTES
    } else {
        scan.end
    };
    f.set_len(end).map_err(|e| StorageError::io(path, e))?;
    if opts.fsync {
        f.sync_all().map_err(|e| StorageError::io(path, e))?;
    }
    assert!(scan.records.is_empty() || end > SEGMENT_HEADER_BYTES);
    Ok((scan.records, end))
}

/// Deletes what a snapshot at `base_seq` subsumes but a crash left behind: older segments and
/// snapshots.
fn finish_cleanup(
    dir: &Path,
    stale: &[(u64, PathBuf)],
    snapshots: &[(u64, PathBuf)],
    base_seq: u64,
) -> Result<(), StorageError> {
    let mut removed = false;
    let older_snapshots = snapshots.iter().filter(|(seq, _)| *seq < base_seq);
    for (_, path) in stale.iter().chain(older_snapshots) {
        std::fs::remove_file(path).map_err(|e| StorageError::io(path, e))?;
        removed = true;
    }
    if removed {
        sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    }
    Ok(())
}

/// What reading the segments after the base found.
struct Replay<R> {
    segments: Vec<Segment>,
    records: Vec<R>,
    next_seq: Option<u64>,
}

impl<R: DurableRecord> Wal<R> {
    /// Opens (creating if needed) the log in `dir` and returns the newest snapshot's record (if
    /// any) followed by every record after it, in append order. See the module docs for torn
    /// writes, damage ([`StorageError::is_damage`]) and the snapshot fallback.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Self, Vec<R>), StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        if !opts.fsync {
            tracing::warn!(
                dir = %dir.display(),
                "UNSAFE: WAL fsync is disabled; acknowledged writes can be lost on power failure"
            );
        }
        let (found, snapshots) = list_dir(dir)?;
        let (base, mut damaged) = choose_base::<R>(&snapshots)?;
        let base_seq = base.as_ref().map(|b| b.0).unwrap_or(0);
        // Segments at or before the base hold only records the snapshot subsumes (a segment
        // never spans a checkpoint: one always starts right after it).
        let (stale, found): (Vec<_>, Vec<_>) =
            found.into_iter().partition(|(first, _)| *first <= base_seq);
        if let Some(bad_seq) = damaged.as_ref().map(|d| d.0)
            && found.first().map(|(f, _)| *f) != Some(base_seq + 1)
        {
            let why = format!(
                "the log no longer holds the records between sequence {} and {bad_seq}",
                base_seq + 1
            );
            return Err(refuse_damaged(dir, damaged, why));
        }
        let replay = Self::replay(dir, found, base.is_some(), base_seq, &mut damaged, &opts)?;
        let Replay {
            mut segments,
            mut records,
            next_seq,
        } = replay;
        if let Some(bad_seq) = damaged.as_ref().map(|d| d.0)
            && next_seq.unwrap_or(0) < bad_seq
        {
            let why = format!(
                "the log ends before record {}, short of the damaged snapshot's {bad_seq}",
                next_seq.unwrap_or(0)
            );
            return Err(refuse_damaged(dir, damaged, why));
        }
        if let Some((bad_seq, e)) = &damaged {
            tracing::error!(
                error = %e,
                fallback_to = base_seq,
                "RECOVERING WITHOUT THE NEWEST SNAPSHOT (sequence {bad_seq}): it is damaged, but \
                 the log still holds every record it summarised; keep the file for inspection"
            );
        }

        // Checkpoints never sit inside a version-2 segment (append turns each into a snapshot
        // file), so the base's record comes first and the segments' records follow it.
        if let Some((_, _, r, _)) = &base {
            records.insert(0, r.clone());
        }

        // A crash between a snapshot becoming durable and the cleanup behind it leaves older
        // segments and snapshots: finish that cleanup now (never while falling back).
        if damaged.is_none() {
            finish_cleanup(dir, &stale, &snapshots, base_seq)?;
        }

        let next_seq = next_seq.unwrap_or(1);
        let (active, active_file_bytes) = Self::open_active(dir, &mut segments, next_seq, &opts)?;
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
            scratch: Vec::new(),
            _record: PhantomData,
        };
        Ok((wal, records))
    }

    /// Opens the last segment for appending (creating the first one in an empty log); returns
    /// it with its file length.
    fn open_active(
        dir: &Path,
        segments: &mut Vec<Segment>,
        next_seq: u64,
        opts: &WalOptions,
    ) -> Result<(File, u64), StorageError> {
        let Some(s) = segments.last() else {
            let (f, s) = Self::create_segment(dir, next_seq, opts.fsync)?;
            segments.push(s);
            return Ok((f, SEGMENT_HEADER_BYTES));
        };
        let f = OpenOptions::new()
            .write(true)
            .open(&s.path)
            .map_err(|e| StorageError::io(&s.path, e))?;
        let len = f
            .metadata()
            .map_err(|e| StorageError::io(&s.path, e))?
            .len();
        Ok((f, len))
    }

    /// Reads the segments after the base in order, checking that their sequence numbers
    /// continue each other.
    fn replay(
        dir: &Path,
        found: Vec<(u64, PathBuf)>,
        has_base: bool,
        base_seq: u64,
        damaged: &mut Option<(u64, StorageError)>,
        opts: &WalOptions,
    ) -> Result<Replay<R>, StorageError> {
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
                    return Err(match damaged.take() {
                        Some(d) => refuse_damaged(dir, Some(d), why),
                        None => StorageError::Corrupt {
                            path,
                            offset: 0,
                            first_bad_seq: Some(expected),
                            reason: why,
                        },
                    });
                }
            }
            let (seg_records, end) = recover_segment::<R>(&path, first_seq, i == last, opts)?;
            if i == 0 && !has_base && damaged.is_none() && first_seq != 1 {
                // Records 1..first_seq are gone and no snapshot covers them:
                // starting would silently forget them.
                return Err(StorageError::Corrupt {
                    path,
                    offset: 0,
                    first_bad_seq: Some(1),
                    reason: format!(
                        "the log starts at record {first_seq}, no snapshot covers records \
                         before it (a snapshot file or segment is missing)"
                    ),
                });
            }
            next_seq = Some(first_seq + seg_records.len() as u64);
            segments.push(Segment {
                first_seq,
                path,
                bytes: end,
            });
            records.extend(seg_records);
        }
        Ok(Replay {
            segments,
            records,
            next_seq,
        })
    }

    /// Counts fsyncs and records into these metrics from now on.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Creates the segment file starting at `first_seq` with its header, durably.
    fn create_segment(
        dir: &Path,
        first_seq: u64,
        fsync: bool,
    ) -> Result<(File, Segment), StorageError> {
        let path = dir.join(segment_name(first_seq));
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        f.write_all_at(&segment::segment_header(first_seq), 0)
            .map_err(|e| StorageError::io(&path, e))?;
        // The header is synced before any batch is written behind it, so a bad header with no
        // batch after it can only be a torn creation, and with one after it only damage.
        if fsync {
            f.sync_data().map_err(|e| StorageError::io(&path, e))?;
        }
        // The new name must survive a crash before any record in it is acknowledged.
        sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
        Ok((
            f,
            Segment {
                first_seq,
                path,
                bytes: SEGMENT_HEADER_BYTES,
            },
        ))
    }

    /// Appends `records` and makes them durable with one fsync (unless fsync is disabled).
    /// A checkpoint record goes to a snapshot file of its own instead (see `snapshot.rs`);
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
        let mut buf = std::mem::take(&mut self.scratch);
        let done = self.append_into(records, &mut buf);
        buf.clear();
        buf.shrink_to(SCRATCH_KEEP_BYTES);
        self.scratch = buf;
        done
    }

    /// [`Self::append`], each batch encoded into `buf`.
    fn append_into(&mut self, records: &[R], buf: &mut Vec<u8>) -> io::Result<()>
    where
        R: Serialize,
    {
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
            let mut batch = segment::BatchWriter::begin(buf, self.next_seq);
            for r in &records[start..until] {
                batch
                    .push(self.opts.record_bytes_max, |b| {
                        postcard::to_extend(r, b).map_err(|e| e.to_string())
                    })
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            }
            batch.finish();
            let at = self.active_bytes();
            assert!(
                self.segments
                    .last()
                    .is_some_and(|s| s.first_seq <= self.next_seq && at >= SEGMENT_HEADER_BYTES),
                "a batch goes behind the header of a segment that starts at or before it"
            );
            self.preallocate(at + buf.len() as u64)?;
            self.active.write_all_at(buf, at)?;
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
        let (f, s) =
            Self::create_segment(&self.dir, self.next_seq, self.opts.fsync).map_err(into_io)?;
        self.active = f;
        self.active_file_bytes = SEGMENT_HEADER_BYTES;
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
        if self.active_bytes() <= SEGMENT_HEADER_BYTES {
            // An active segment without batches already starts at next_seq; reuse it.
            return Ok(());
        }
        self.sync()?;
        // Give back the finished segment's zero tail. Not synced: if the crash comes first,
        // recovery reads the zeros as clean preallocated space.
        let used = self.active_bytes();
        if self.active_file_bytes > used {
            self.active.set_len(used)?;
        }
        let (f, s) =
            Self::create_segment(&self.dir, self.next_seq, self.opts.fsync).map_err(into_io)?;
        self.active = f;
        self.active_file_bytes = SEGMENT_HEADER_BYTES;
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
    /// The newest snapshot's size (0 before the first).
    pub fn snapshot_size_bytes(&self) -> u64 {
        self.snapshot_bytes
    }

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
