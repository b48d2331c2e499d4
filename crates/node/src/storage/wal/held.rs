//! Appending a batch so that a failed *write* can be retried and a failed *fdatasync* cannot.
//!
//! [`Wal::append_and_sync_resumable`] is what the runtime calls: like
//! [`Wal::append_and_sync`], but it tells the two kinds of failure apart.
//!
//! * **A failed write** (ENOSPC, EIO from `write`, a snapshot that could not be written) leaves
//!   the log at the end of its last whole record: the active segment is cut back there (which
//!   also drops its preallocated zeros; the next append writes them again), and a half-written
//!   snapshot's temporary file is removed so it does not hold on to the space a retry needs.
//!   The caller's progress count says how many records of the batch are in the log — all of
//!   them before a checkpoint that failed, none of a chunk that failed — so calling again with
//!   the same batch and count writes each record exactly once. Nothing of the batch may be
//!   treated as durable until a call returns `Ok`.
//! * **A failed fdatasync** is [`AppendError::Fatal`]. After a failed fsync, Linux may already
//!   have dropped the dirty pages it could not write and marked them clean ("fsyncgate",
//!   PostgreSQL 2018): a second fsync can then succeed without the data ever reaching the disk.
//!   Retrying would acknowledge records that may not exist on disk, so the node must stop; on
//!   restart, recovery reads what the disk really holds (a torn tail is cut, anything else
//!   refused naming the file).
//! * A record this log refuses on its own (over `record_bytes_max`, not encodable) is fatal too:
//!   retrying the same bytes cannot succeed.

use super::{Wal, snapshot};
use serde::Serialize;
use std::io;
use std::path::PathBuf;
use synod_core::DurableRecord;

/// Why [`Wal::append_and_sync_resumable`] failed, and whether calling it again is safe.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// A write failed; the log is back at the end of its last whole record. Retry.
    #[error("write to {path} failed: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// fdatasync failed, or the log could not be brought back to a known state. Not
    /// retryable: stop, and let recovery read what the disk holds.
    #[error(
        "{what} {path} failed: {source}. The write-ahead log's state on disk is unknown \
         (after a failed fsync the kernel may have dropped the unwritten pages), so the node \
         stops instead of retrying; restart it once the disk is healthy and recovery will read \
         what the disk really holds"
    )]
    Fatal {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl AppendError {
    /// The underlying I/O error (its kind says e.g. `StorageFull`).
    pub fn io_error(&self) -> &io::Error {
        match self {
            AppendError::Write { source, .. } | AppendError::Fatal { source, .. } => source,
        }
    }
}

impl<R: DurableRecord> Wal<R> {
    /// Appends `records[*done..]` and syncs them, advancing `*done` past every record that is
    /// written. On [`AppendError::Write`] call again with the same `records` and `done` once
    /// the disk may have recovered; see the module doc.
    pub fn append_and_sync_resumable(
        &mut self,
        records: &[R],
        done: &mut usize,
    ) -> Result<(), AppendError>
    where
        R: Serialize,
    {
        while let Some(rest) = records.get(*done..).filter(|r| !r.is_empty()) {
            if rest[0].is_checkpoint() {
                // What the snapshot summarises must be durable in the segments first.
                self.sync_or_fatal()?;
                self.snapshot_resumable(&rest[0])?;
                *done += 1;
                continue;
            }
            let n = rest
                .iter()
                .position(|r| r.is_checkpoint())
                .unwrap_or(rest.len());
            self.write_chunk(&rest[..n])?;
            *done += n;
        }
        self.sync_or_fatal()
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_else(|| self.dir.clone())
    }

    fn sync_or_fatal(&mut self) -> Result<(), AppendError> {
        self.sync().map_err(|source| AppendError::Fatal {
            what: "fdatasync of",
            path: self.active_path(),
            source,
        })
    }

    /// Writes records without a checkpoint among them: all of them, or none (rolled back).
    fn write_chunk(&mut self, chunk: &[R]) -> Result<(), AppendError>
    where
        R: Serialize,
    {
        if self.active_bytes() >= self.opts.segment_bytes_max {
            // `append` would rotate, which syncs the full segment first: sync here, so that a
            // failure there is seen as the failed fsync it is.
            self.sync_or_fatal()?;
        }
        let Err(source) = self.append(chunk) else {
            return Ok(());
        };
        let path = self.active_path();
        if source.raw_os_error().is_none() {
            // Refused by this log itself (too large, not encodable): the same bytes would be
            // refused again.
            return Err(AppendError::Fatal {
                what: "append to",
                path,
                source,
            });
        }
        match self.roll_back_active() {
            Ok(()) => Err(AppendError::Write { path, source }),
            Err(e) => Err(AppendError::Fatal {
                what: "rolling back a failed write to",
                path,
                source: e,
            }),
        }
    }

    /// Cuts the active segment back to the end of its last whole record. Shrinking a file
    /// needs no free space, so this works on a full disk. Not synced: if a crash comes first,
    /// the partial bytes after the end are a torn tail, which recovery cuts.
    fn roll_back_active(&mut self) -> io::Result<()> {
        let end = self.active_bytes();
        self.active.set_len(end)?;
        self.active_file_bytes = end;
        Ok(())
    }

    fn snapshot_resumable(&mut self, record: &R) -> Result<(), AppendError>
    where
        R: Serialize,
    {
        let seq = self.next_seq;
        let Err(source) = self.write_snapshot(record) else {
            return Ok(());
        };
        if self.next_seq != seq {
            // The snapshot is durable but the log behind it is half switched over (new segment
            // or cleanup failed). Restarting finishes that cleanup; continuing here could
            // append records to a segment recovery would then discard.
            return Err(AppendError::Fatal {
                what: "switching to the log after the snapshot in",
                path: self.dir.clone(),
                source,
            });
        }
        // Never renamed, so never trusted; remove it now rather than on the next open, so that
        // it does not keep the space the retry needs.
        let tmp = self
            .dir
            .join(format!("{}.tmp", snapshot::snapshot_name(seq)));
        if let Err(e) = std::fs::remove_file(&tmp)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(file = %tmp.display(), error = %e, "cannot remove a failed snapshot");
        }
        Err(AppendError::Write { path: tmp, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::WalOptions;
    use serde::Deserialize;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Rec(u64);

    impl DurableRecord for Rec {}

    /// fdatasync cannot be made to fail on a real filesystem in a test, but it fails (EINVAL) on
    /// a socket: swap one in as the active file after the records are written.
    #[test]
    fn a_failed_fdatasync_is_fatal_and_never_reported_as_retryable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::<Rec>::open(dir.path(), WalOptions::default()).expect("open");
        // Written, not yet synced: the next call has an fdatasync to do.
        wal.append(&[Rec(1), Rec(2)]).expect("write");
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        let real = std::mem::replace(
            &mut wal.active,
            std::fs::File::from(std::os::fd::OwnedFd::from(socket)),
        );
        let error = wal
            .append_and_sync_resumable(&[], &mut 0)
            .expect_err("fdatasync on a socket fails");
        assert!(
            matches!(
                error,
                AppendError::Fatal {
                    what: "fdatasync of",
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error.to_string().contains("wal-"),
            "names the file: {error}"
        );
        // What recovery then finds is whatever reached the file: here every written record.
        wal.active = real;
        drop(wal);
        let (_, recs) = Wal::<Rec>::open(dir.path(), WalOptions::default()).expect("reopen");
        assert_eq!(recs, vec![Rec(1), Rec(2)]);
    }
}
