//! Snapshot files: a checkpoint record (one that subsumes every earlier record, e.g. a full
//! KV store image) stored in a file of its own instead of inside a WAL segment.
//!
//! Why a file of its own: a checkpoint of a million keys is hundreds of MB. In a segment it
//! would be one enormous record that must be built in memory as a second copy, and every
//! segment rotation and recovery scan would wade through it. As a file it is written once,
//! streamed, atomically, and recovery reads exactly one of them.
//!
//! * **Name.** `snap-{seq:020}.snap`, `seq` = the WAL sequence number the checkpoint record
//!   took; the records after it live in segments starting at `seq + 1`.
//! * **Format.** `magic "SYNSNAP1" | seq u64 LE | payload | payload_len u64 LE | crc u32 LE`,
//!   payload = postcard of the record, crc = CRC32C of every byte before it. The length and
//!   checksum sit in a trailer so the payload can be streamed straight into the file: no
//!   second in-memory copy of the state, only a [`BUFFER_BYTES`] buffer.
//! * **Atomic.** Written to `snap-{seq}.snap.tmp`, fsynced, renamed, then the directory is
//!   fsynced: a crash leaves either no snapshot at `seq` or a complete one. Leftover `.tmp`
//!   files are deleted on open.
//! * **Reading** loads the file, checks magic, sequence number, length and checksum *before*
//!   decoding (so damaged bytes are never handed to the decoder, which could otherwise be
//!   asked to allocate a garbage length). Peak memory on recovery is the file plus the decoded
//!   state; writing needs neither copy.

use super::{StorageError, sync_dir};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: [u8; 8] = *b"SYNSNAP1";
const HEADER_BYTES: u64 = 16;
const TRAILER_BYTES: u64 = 12;
/// Write buffer between the serialiser and the file.
const BUFFER_BYTES: usize = 1024 * 1024;

pub(crate) fn snapshot_name(seq: u64) -> String {
    format!("snap-{seq:020}.snap")
}

pub(crate) fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_prefix("snap-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()
}

/// True for an unfinished snapshot write a crash left behind.
pub(crate) fn is_snapshot_tmp(name: &str) -> bool {
    name.starts_with("snap-") && name.ends_with(".snap.tmp")
}

/// Counts and checksums every byte on its way to the file.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
    bytes: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `record` as the snapshot at `seq` in `dir`, atomically and durably. Returns the
/// file's path and size. On error the temporary file may remain; it is removed on next open.
pub(crate) fn write<R: Serialize>(dir: &Path, seq: u64, record: &R) -> io::Result<(PathBuf, u64)> {
    let name = snapshot_name(seq);
    let tmp = dir.join(format!("{name}.tmp"));
    let file = File::create(&tmp)?;
    // The buffer sits in front of the checksum, so CRC32C runs over large chunks, not over
    // every small write the serialiser makes.
    let mut w = BufWriter::with_capacity(
        BUFFER_BYTES,
        CrcWriter {
            inner: file,
            crc: 0,
            bytes: 0,
        },
    );
    w.write_all(&MAGIC)?;
    w.write_all(&seq.to_le_bytes())?;
    let mut w = postcard::to_io(record, w).map_err(io::Error::other)?;
    w.flush()?;
    let payload_len = w.get_ref().bytes - HEADER_BYTES;
    w.write_all(&payload_len.to_le_bytes())?;
    w.flush()?;
    let crc = w.get_ref().crc;
    let mut file = w.into_inner().map_err(|e| e.into_error())?.inner;
    file.write_all(&crc.to_le_bytes())?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    let path = dir.join(&name);
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok((path, size))
}

/// Reads and verifies the snapshot at `path`, which its name says holds sequence `seq`.
pub(crate) fn read<R: DeserializeOwned>(path: &Path, seq: u64) -> Result<(R, u64), StorageError> {
    let corrupt = |offset: u64, reason: String| {
        StorageError::corrupt(path, offset, format!("snapshot: {reason}"))
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| {
            // One allocation of the right size instead of doubling through hundreds of MB.
            bytes.reserve_exact(f.metadata()?.len() as usize);
            f.read_to_end(&mut bytes)
        })
        .map_err(|e| StorageError::io(path, e))?;
    let total = bytes.len() as u64;
    if total < HEADER_BYTES + TRAILER_BYTES {
        return Err(corrupt(0, format!("file of {total} bytes is too short")));
    }
    if bytes[..8] != MAGIC {
        return Err(corrupt(0, "bad magic (not a Synod snapshot)".into()));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let crc_at = (total - 4) as usize;
    let stored_crc = u32::from_le_bytes([
        bytes[crc_at],
        bytes[crc_at + 1],
        bytes[crc_at + 2],
        bytes[crc_at + 3],
    ]);
    if crc32c::crc32c(&bytes[..crc_at]) != stored_crc {
        return Err(corrupt(0, "checksum mismatch".into()));
    }
    let header_seq = u64_at(8);
    if header_seq != seq {
        return Err(corrupt(
            8,
            format!("holds sequence {header_seq} but is named for {seq}"),
        ));
    }
    let payload_len = u64_at(crc_at - 8);
    if payload_len != total - HEADER_BYTES - TRAILER_BYTES {
        return Err(corrupt(
            total - TRAILER_BYTES,
            format!("payload length {payload_len} does not match the file size {total}"),
        ));
    }
    let payload = &bytes[HEADER_BYTES as usize..crc_at - 8];
    let record = postcard::from_bytes(payload)
        .map_err(|e| corrupt(HEADER_BYTES, format!("record does not decode: {e}")))?;
    Ok((record, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let value: Vec<(String, u64)> = (0..100).map(|i| (format!("k{i}"), i)).collect();
        let (path, size) = write(dir.path(), 42, &value).unwrap();
        assert_eq!(path.file_name().unwrap(), snapshot_name(42).as_str());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        let (back, _): (Vec<(String, u64)>, u64) = read(&path, 42).unwrap();
        assert_eq!(back, value);
        // Named for another sequence number: refused.
        let e = read::<Vec<(String, u64)>>(&path, 43).unwrap_err();
        assert!(e.to_string().contains("named for 43"), "{e}");
        let good = std::fs::read(&path).unwrap();
        for i in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            let e = read::<Vec<(String, u64)>>(&path, 42).unwrap_err();
            assert!(matches!(e, StorageError::Corrupt { .. }), "byte {i}: {e}");
            assert!(e.to_string().contains("snap-"), "{e}");
        }
        // A truncated file too.
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(read::<Vec<(String, u64)>>(&path, 42).is_err());
        assert!(
            !dir.path()
                .join(format!("{}.tmp", snapshot_name(42)))
                .exists()
        );
    }
}
