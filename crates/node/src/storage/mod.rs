//! Durable storage of a node: the write-ahead log of engine records, and the data directory
//! around it (an exclusive lock, a `meta` file naming the cluster and member, a boot counter).
//!
//! ## Build or buy
//! We considered raft-engine (TiKV's Raft log: multi-group, its own compaction and recovery
//! modes; much more than one record stream and built around raft-rs's entry types), okaywal
//! (a generic WAL with checkpointing by callback; young, and its recovery tolerates what we want
//! to refuse), redb and fjall (embedded KV stores: a B-tree / LSM plus their own journal, so
//! every record would be written twice and fsync batching is theirs, not ours). What Synod needs
//! is small and exact: append a batch of opaque records with CRC32C and one fsync, read them
//! back in order, truncate a torn tail, refuse corruption before the tail naming file and
//! offset, rotate segments, and drop everything before a checkpoint record. That is a few
//! hundred lines whose crash behaviour we can test record by record, and it is the product's
//! core (the durability promise), so we write it: [`wal::Wal`].
//!
//! ## A wiped data directory
//! A node that loses its data directory also loses the promises it made (promised ballot,
//! accepted entries). If it rejoined as if nothing happened it could vote twice in one ballot
//! and break safety. For now the rule is operational and loud: a node that finds an empty data
//! directory logs a warning naming the directory and starts as a fresh member; the operator must
//! only do that for a brand-new cluster or after the member was removed and re-added. Safety
//! then rests on a majority of the *other* members still holding their state. Issue 5 replaces
//! this with a catch-up-before-voting rule.

pub mod datadir;
pub mod wal;

pub use datadir::{DataDir, Meta};
pub use wal::{Wal, WalOptions};

use std::path::PathBuf;

/// Why storage could not be opened or recovered. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A record before the tail failed its checksum or did not decode: never silently dropped.
    #[error("{path}: corrupt record at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("data directory {path} is in use by another process (lock file held)")]
    Locked { path: PathBuf },
    #[error("data directory {path} belongs to {found}, but this node is {expected}")]
    WrongIdentity {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// fsync of a directory, so a created, renamed or deleted entry in it survives a power loss.
pub(crate) fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` atomically: temporary file, fsync, rename, fsync of the
/// directory. A crash leaves either the old file or the new one, never a mix.
pub(crate) fn write_atomically(
    dir: &std::path::Path,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}
