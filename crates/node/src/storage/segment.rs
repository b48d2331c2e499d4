//! The byte format of one WAL segment and the scan that reads it back: a segment header, then
//! batches, each framed so that recovery can tell a torn final write from damage to records
//! that were already acknowledged. The rules that act on a scan live in [`super::wal`].
//!
//! * **Segment header** (20 bytes): `"SYNW" | version u8 (= 2) | 3 zero bytes | first_seq u64 LE
//!   | crc32c u32 LE` over the 16 bytes before it. Written and fsynced when the segment is
//!   created, before any batch.
//! * **Batch** (one per `write`): `"SYNB" | count u32 | body_len u64 | first_seq u64 | crc32c
//!   u32` (28 bytes), then `body_len` bytes of `count` records, each `len u32 LE | payload`. The
//!   crc covers the 24 header bytes before it and the whole body, so a batch is accepted whole
//!   or not at all, whichever of its pages reached the disk. The header is the commit marker.
//! * **End.** A batch header region that is all zeros is the logical end (preallocated space).

use super::StorageError;
use serde::de::DeserializeOwned;
use std::path::Path;

pub(crate) const SEGMENT_HEADER_BYTES: u64 = 20;
const BATCH_HEADER_BYTES: usize = 28;
const SEGMENT_MAGIC: [u8; 4] = *b"SYNW";
const BATCH_MAGIC: [u8; 4] = *b"SYNB";
/// Version 1 was the unframed `len | crc | payload` log; its segments have no header.
/// Version 2 framed the same records before leases: its records (puts, key-values, checkpoints)
/// lack the lease fields, so they are refused rather than misread.
const FORMAT_VERSION: u8 = 3;

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The header a segment whose first record is `first_seq` starts with.
pub(crate) fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4] = FORMAT_VERSION;
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends one batch to a buffer record by record, each serialized in place (no buffer per
/// record, and the caller's buffer keeps its capacity from batch to batch: a record of a few
/// hundred KB grown by doubling into fresh memory cost more than writing it).
pub(crate) struct BatchWriter<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    count: u32,
}

impl<'a> BatchWriter<'a> {
    /// Starts a batch whose first record is `first_seq` at the end of `buf`.
    pub(crate) fn begin(buf: &'a mut Vec<u8>, first_seq: u64) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&BATCH_MAGIC);
        buf.extend_from_slice(&[0u8; 4]); // count, filled in by `finish`
        buf.extend_from_slice(&[0u8; 8]); // body_len, filled in by `finish`
        buf.extend_from_slice(&first_seq.to_le_bytes());
        buf.extend_from_slice(&[0u8; 4]); // crc, filled in by `finish`
        BatchWriter {
            buf,
            start,
            count: 0,
        }
    }

    /// Appends one record as `write` serializes it; returns its length. A record longer than
    /// `max` is taken back out and refused.
    pub(crate) fn push(
        &mut self,
        max: u32,
        write: impl FnOnce(Vec<u8>) -> Result<Vec<u8>, String>,
    ) -> Result<usize, String> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0u8; 4]);
        let mut out = write(std::mem::take(self.buf))?;
        let len = out.len() - at - 4;
        let fits = u32::try_from(len).ok().filter(|l| *l <= max);
        let Some(len32) = fits else {
            out.truncate(at);
            *self.buf = out;
            return Err(format!(
                "record of {len} bytes exceeds record_bytes_max {max}"
            ));
        };
        out[at..at + 4].copy_from_slice(&len32.to_le_bytes());
        *self.buf = out;
        self.count += 1;
        Ok(len)
    }

    /// Fills in the header: count, body length, checksum.
    pub(crate) fn finish(self) {
        assert!(self.count > 0, "a batch holds at least one record");
        let (buf, start) = (self.buf, self.start);
        buf[start + 4..start + 8].copy_from_slice(&self.count.to_le_bytes());
        let body_len = (buf.len() - start - BATCH_HEADER_BYTES) as u64;
        buf[start + 8..start + 16].copy_from_slice(&body_len.to_le_bytes());
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&buf[start..start + 24]),
            &buf[start + BATCH_HEADER_BYTES..],
        );
        buf[start + 24..start + 28].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A batch whose framing and checksum verified.
struct Batch {
    count: u32,
    first_seq: u64,
    body: std::ops::Range<usize>,
}

/// Checks the batch framed at `off`: magic, length within the file, checksum. Says why not.
fn verify_batch(bytes: &[u8], off: usize) -> Result<Batch, String> {
    let rest = bytes.len() - off;
    if rest < BATCH_HEADER_BYTES {
        return Err(format!(
            "partial batch header ({rest} bytes) at end of file"
        ));
    }
    if bytes[off..off + 4] != BATCH_MAGIC {
        return Err("no batch header here".into());
    }
    let body_len = u64_at(bytes, off + 8);
    if body_len > (rest - BATCH_HEADER_BYTES) as u64 {
        return Err(format!("batch of {body_len} bytes runs past end of file"));
    }
    let body = off + BATCH_HEADER_BYTES..off + BATCH_HEADER_BYTES + body_len as usize;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[off..off + 24]), &bytes[body.clone()]);
    if crc != u32_at(bytes, off + 24) {
        return Err("batch checksum mismatch".into());
    }
    Ok(Batch {
        count: u32_at(bytes, off + 4),
        first_seq: u64_at(bytes, off + 16),
        body,
    })
}

/// Offset of the first batch at or after `from` that verifies and claims a sequence number
/// at or after `min_seq`: evidence that whatever is damaged before it had been acknowledged.
/// Every offset is tried, because the damage may have hit the length that would skip to it.
fn find_later_batch(bytes: &[u8], from: usize, min_seq: u64) -> Option<usize> {
    let last = bytes.len().checked_sub(BATCH_HEADER_BYTES)?;
    (from..=last).find(|&off| {
        bytes[off..off + 4] == BATCH_MAGIC
            && verify_batch(bytes, off).is_ok_and(|b| b.first_seq >= min_seq)
    })
}

/// Splits a verified body into its `count` records and decodes them.
fn decode_body<R: DeserializeOwned>(
    body: &[u8],
    count: u32,
    record_bytes_max: u32,
) -> Result<Vec<R>, String> {
    let mut records = Vec::with_capacity(count.min(1 << 16) as usize);
    let mut at = 0usize;
    for i in 0..count {
        if body.len() - at < 4 {
            return Err(format!("record {i} of {count} is missing"));
        }
        let len = u32_at(body, at);
        if len > record_bytes_max || (len as usize) > body.len() - at - 4 {
            return Err(format!("record {i} has impossible length {len}"));
        }
        let payload = &body[at + 4..at + 4 + len as usize];
        let r = postcard::from_bytes(payload)
            .map_err(|e| format!("record {i} does not decode: {e}"))?;
        records.push(r);
        at += 4 + len as usize;
    }
    if at != body.len() {
        return Err(format!(
            "{} bytes after the batch's last record",
            body.len() - at
        ));
    }
    Ok(records)
}

/// Where and why a scan stopped before the end of the file.
#[derive(Debug)]
pub(crate) struct Bad {
    pub offset: u64,
    pub reason: String,
    /// Damage whatever the position: a later batch verifies after it, or the bytes verified
    /// but do not make sense. Otherwise the damage may be a torn final write.
    pub definite: bool,
}

/// What reading one segment found.
pub(crate) struct Scan<R> {
    /// Records of the whole batches before any damage.
    pub records: Vec<R>,
    /// Offset just past the last whole batch; 0 when the segment header itself is bad.
    pub end: u64,
    pub bad: Option<Bad>,
}

/// True if `bytes` start with a record of the headerless version 1 format.
fn is_version_1(bytes: &[u8]) -> bool {
    if bytes.len() < 8 {
        return false;
    }
    let len = u32_at(bytes, 0) as usize;
    let Some(payload) = bytes.get(8..8 + len) else {
        return false;
    };
    crc32c::crc32c_append(crc32c::crc32c(&bytes[..4]), payload) == u32_at(bytes, 4)
}

/// Checks the segment header: `Ok(Err(bad))` for damage, `Err` for a format we do not read.
fn check_header(
    path: &Path,
    bytes: &[u8],
    first_seq: u64,
) -> Result<Result<(), Bad>, StorageError> {
    let n = SEGMENT_HEADER_BYTES as usize;
    let verifies = bytes.len() >= n && crc32c::crc32c(&bytes[..16]) == u32_at(bytes, 16);
    if !verifies {
        if is_version_1(bytes) {
            return Err(StorageError::UnsupportedFormat {
                path: path.to_path_buf(),
                reason: "WAL format version 1 (records without batch framing), written by an \
                         older Synod; this version reads only version 2. Start the member \
                         with an empty data directory (it rejoins from its peers) or run the \
                         older version"
                    .into(),
            });
        }
        let later = find_later_batch(bytes, 0, first_seq);
        return Ok(Err(Bad {
            offset: 0,
            reason: match later {
                Some(at) => format!("segment header damaged; a batch at offset {at} verifies"),
                None => "segment header incomplete or damaged".into(),
            },
            definite: later.is_some(),
        }));
    }
    if bytes[..4] != SEGMENT_MAGIC || bytes[4] != FORMAT_VERSION {
        return Err(StorageError::UnsupportedFormat {
            path: path.to_path_buf(),
            reason: format!(
                "unknown WAL format (magic {:?}, version {}); this version reads version \
                 {FORMAT_VERSION} (version 2 data directories predate leases: copy the data out \
                 with the synod that wrote them)",
                &bytes[..4],
                bytes[4]
            ),
        });
    }
    let named = u64_at(bytes, 8);
    if named != first_seq {
        return Ok(Err(Bad {
            offset: 8,
            reason: format!("segment header says it starts at record {named}"),
            definite: true,
        }));
    }
    Ok(Ok(()))
}

/// Reads the segment `bytes` (from file `path`, named for `first_seq`) batch by batch,
/// stopping at the first one that does not verify. Only whole batches are returned.
pub(crate) fn scan<R: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    first_seq: u64,
    record_bytes_max: u32,
) -> Result<Scan<R>, StorageError> {
    let mut records = Vec::new();
    if let Err(bad) = check_header(path, bytes, first_seq)? {
        return Ok(Scan {
            records,
            end: 0,
            bad: Some(bad),
        });
    }
    let mut off = SEGMENT_HEADER_BYTES as usize;
    let mut seq = first_seq;
    let bad = |off: usize, seq: u64, reason: String| {
        let later = find_later_batch(bytes, off + 1, seq);
        Some(Bad {
            offset: off as u64,
            reason: match later {
                Some(at) => format!("{reason}; a later batch at offset {at} verifies"),
                None => reason,
            },
            definite: later.is_some(),
        })
    };
    let stop = loop {
        if off >= bytes.len() {
            break None;
        }
        let head = &bytes[off..bytes.len().min(off + BATCH_HEADER_BYTES)];
        if head.iter().all(|b| *b == 0) {
            // Preallocated space: the end, provided nothing but zeros follows.
            match bytes[off..].iter().position(|b| *b != 0) {
                None => break None,
                Some(p) => {
                    break bad(
                        off,
                        seq,
                        format!("non-zero byte at {} after the end", off + p),
                    );
                }
            }
        }
        let batch = match verify_batch(bytes, off) {
            Ok(b) => b,
            Err(reason) => break bad(off, seq, reason),
        };
        let definite = |reason: String| {
            Some(Bad {
                offset: off as u64,
                reason,
                definite: true,
            })
        };
        if batch.first_seq != seq || batch.count == 0 {
            break definite(format!(
                "batch verifies but holds {} records from {}, expected records from {seq}",
                batch.count, batch.first_seq
            ));
        }
        match decode_body::<R>(&bytes[batch.body.clone()], batch.count, record_bytes_max) {
            Ok(rs) => records.extend(rs),
            // The checksum held, so these are the bytes we wrote: a format mismatch, never
            // a torn write.
            Err(reason) => break definite(format!("batch verifies but {reason}")),
        }
        seq += u64::from(batch.count);
        off = batch.body.end;
    };
    Ok(Scan {
        records,
        end: off as u64,
        bad: stop,
    })
}
