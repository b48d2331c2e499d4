//! The write-ahead log: an ordered stream of an engine's durable records in segment files.
//!
//! * **Files.** `wal-{first_seq:020}.log`, where `first_seq` is the sequence number (from 1) of
//!   the segment's first record; sorting names sorts segments.
//! * **Records.** `len u32 LE | crc u32 LE | payload`, payload = postcard of the record, crc =
//!   CRC32C over the length bytes and the payload. Covering the length means a zeroed header
//!   (len 0, crc 0) never checks out, so zero-filled space is never read as a record.
//! * **Batches.** [`Wal::append_and_sync`] writes a whole batch with one `write` and one
//!   `fdatasync`. Group commit falls out of the runtime: while one fsync runs, inputs queue up,
//!   and the next loop turns all of them into one batch.
//! * **Rotation.** A batch that finds the active segment at or past `segment_bytes_max` starts a
//!   new segment first (a batch is never split, so a segment may exceed the bound by one batch).
//!   Segments are not preallocated: appends then change the file size, which `fdatasync` must
//!   also flush; we keep it simple until `synod bench` shows the cost matters.
//! * **Checkpoints.** A record whose `is_checkpoint()` is true subsumes all earlier records. It
//!   always starts a fresh segment; once that segment is durable the older ones are deleted.
//! * **Recovery** ([`Wal::open`]). Segments are read in order, checking that sequence numbers
//!   are contiguous. In the **last** segment a record that runs past the end of the file, or a
//!   bad record followed only by zero bytes, is a torn tail (a write that never completed its
//!   fsync, so never acknowledged): the file is truncated there. Any other bad record — in an
//!   older segment, or followed by more data — is corruption: opening fails naming the file and
//!   offset, and nothing is dropped silently. Records before the last checkpoint are not
//!   returned (and their segments are deleted).
//!
//! Known limit: a power loss can persist the pages of one unsynced batch out of order, leaving
//! a bad record followed by intact ones of the same batch. We report that as corruption (safe:
//! the node stops instead of losing data, but an operator must act). Per-batch commit markers
//! would let us tell it apart; not done yet.

use super::{StorageError, sync_dir};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use synod_core::DurableRecord;

use crate::metrics::Metrics;

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
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes_max: 64 * 1024 * 1024,
            record_bytes_max: 256 * 1024 * 1024,
            fsync: true,
        }
    }
}

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
    /// Sequence number the next appended record gets.
    next_seq: u64,
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
    /// Opens (creating if needed) the log in `dir` and returns every record since the last
    /// checkpoint, in append order. See the module docs for torn tails and corruption.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Self, Vec<R>), StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        if !opts.fsync {
            tracing::warn!(
                dir = %dir.display(),
                "UNSAFE: WAL fsync is disabled; acknowledged writes can be lost on power failure"
            );
        }
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(dir, e))?;
            let name = entry.file_name();
            if let Some(seq) = name.to_str().and_then(parse_segment_name) {
                found.push((seq, entry.path()));
            }
        }
        found.sort();

        let mut segments = Vec::new();
        let mut records: Vec<R> = Vec::new();
        let mut next_seq: Option<u64> = None;
        let last = found.len().saturating_sub(1);
        for (i, (first_seq, path)) in found.into_iter().enumerate() {
            if let Some(expected) = next_seq
                && expected != first_seq
            {
                return Err(StorageError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!(
                        "segment starts at record {first_seq} but the previous segment ended \
                         before record {expected} (a segment is missing or damaged)"
                    ),
                });
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
            next_seq = Some(first_seq + scan.records.len() as u64);
            segments.push(Segment {
                first_seq,
                path,
                bytes: scan.good_bytes,
            });
            records.extend(scan.records);
        }

        // Drop what the last checkpoint subsumes, records and whole segments alike (a crash may
        // have come between writing a checkpoint segment and deleting the older ones).
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
        }

        let next_seq = next_seq.unwrap_or(1);
        let active = match segments.last() {
            Some(s) => OpenOptions::new()
                .append(true)
                .open(&s.path)
                .map_err(|e| StorageError::io(&s.path, e))?,
            None => {
                let (f, s) = Self::create_segment(dir, next_seq)?;
                segments.push(s);
                f
            }
        };
        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            segments,
            active,
            next_seq,
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
    /// On error nothing of this batch may be treated as durable; the caller must stop.
    pub fn append_and_sync(&mut self, records: &[R]) -> io::Result<()>
    where
        R: Serialize,
    {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut start = 0;
        // A checkpoint starts a fresh segment; what precedes it in the batch goes to the old one.
        while start < records.len() {
            let cp = records[start..]
                .iter()
                .position(|r| r.is_checkpoint())
                .map(|p| start + p);
            let until = match cp {
                Some(c) if c == start => {
                    self.rotate()?;
                    // The checkpoint plus everything up to the next checkpoint.
                    records[start + 1..]
                        .iter()
                        .position(|r| r.is_checkpoint())
                        .map(|p| start + 1 + p)
                        .unwrap_or(records.len())
                }
                Some(c) => c,
                None => records.len(),
            };
            if cp != Some(start) && self.active_bytes() >= self.opts.segment_bytes_max {
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
            self.active.write_all(&buf)?;
            self.sync_active()?;
            let n = (until - start) as u64;
            self.next_seq += n;
            if let Some(s) = self.segments.last_mut() {
                s.bytes += buf.len() as u64;
            }
            if let Some(m) = &self.metrics {
                m.wal_records.inc_by(n);
            }
            if records[start].is_checkpoint() {
                self.drop_before_active()?;
            }
            start = until;
        }
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

    /// Starts a new segment at `next_seq` (the active one is already synced: every batch is).
    fn rotate(&mut self) -> io::Result<()> {
        if self.active_bytes() == 0 {
            // An empty active segment already starts at next_seq; reuse it.
            return Ok(());
        }
        let (f, s) = Self::create_segment(&self.dir, self.next_seq).map_err(|e| match e {
            StorageError::Io { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })?;
        self.active = f;
        self.segments.push(s);
        Ok(())
    }

    /// After a checkpoint at the start of the active segment is durable: delete older segments.
    fn drop_before_active(&mut self) -> io::Result<()> {
        let n = self.segments.len() - 1;
        for s in self.segments.drain(..n) {
            std::fs::remove_file(&s.path)?;
        }
        sync_dir(&self.dir)
    }

    /// Bytes of all live segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
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
