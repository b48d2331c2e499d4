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
//! back in order, truncate a torn last batch, refuse damage to acknowledged batches naming
//! file, offset and sequence number, rotate segments, and drop everything before a checkpoint
//! record. That is a few
//! hundred lines whose crash behaviour we can test record by record, and it is the product's
//! core (the durability promise), so we write it: [`wal::Wal`].
//!
//! Checkpoint records (an engine's full state) are stored as snapshot files of their own,
//! written atomically and streamed: see `snapshot.rs` and [`wal`].
//!
//! ## Damage
//! Every file that holds acknowledged state is checksummed: WAL batches and segment headers
//! (`segment.rs`), snapshots, `meta.json` and `peers.json` ([`datadir`]). Damage to any of
//! them is [`StorageError::Corrupt`], which [`StorageError::is_damage`] tells apart from I/O
//! errors, a held lock, a wrong identity or an unsupported format: only damage may be
//! answered by rebuilding the state from peers, after [`quarantine`] has moved the log aside.
//!
//! ## Snapshot thresholds
//! Engines decide when to checkpoint (`snapshot_entries` in the engine config); the WAL only
//! stores what they emit. A `snapshot_bytes` threshold (WAL bytes since the last checkpoint,
//! [`Wal::bytes_since_snapshot`]) would need a way to tell the engine "checkpoint now", which
//! the frozen `Engine` trait does not have; until it does, size the entry threshold instead.
//!
//! ## A wiped data directory
//! A member that loses its data directory also loses the promises it made (promised ballot,
//! accepted entries). If it rejoined as if nothing happened it could promise a ballot lower
//! than one it already promised, or vote in a ballot it already voted in, and it would no
//! longer hold accepted entries that counted toward a decided quorum: with one more failure a
//! later leader could miss a decided entry, losing an acknowledged write.
//!
//! The rule: every data directory gets a random **data id** when it is created (`meta.json`).
//! Peers record the data id each member first presents in their handshake (`peers.json`, kept
//! durably) and refuse connections from a member presenting another one. A node that starts
//! with an empty directory first asks its peers ("probe") which data id they remember for it;
//! if any remembers another, it refuses to start with an error naming the peers, the risk and
//! the options (restore the directory; remove and re-add the member; or accept the risk with
//! `NodeConfig::allow_wiped_rejoin`, which logs a loud warning and tells peers to replace their
//! record). A brand-new member is never refused: no peer has seen it. Peers that are down
//! during the probe cannot answer, but they refuse the member's connections when they return,
//! so it cannot vote with them either.
//!
//! With the flag the member rejoins *repairing*: every engine starts from nothing as a member
//! that lost its storage and neither promises, votes nor acknowledges anything until it has
//! rebuilt its state from peers that hold theirs (OmniPaxos and CASPaxos `repair.rs`, VR's
//! §4.3 recovery). The same path runs automatically, with no flag, when the node finds its
//! WAL, snapshot or identity metadata damaged: the damaged files go to quarantine first.

pub mod datadir;
mod quarantine;
mod segment;
mod snapshot;
pub mod wal;

pub use datadir::{DataDir, IDENTITY_FILES, Meta, PEERS_FILE, PeerDataIds, PeerIdentity};
pub use quarantine::{QUARANTINE_KEEP, quarantine, quarantine_metadata};
pub use wal::{AppendError, Wal, WalOptions};

use std::path::PathBuf;

/// Why storage could not be opened or recovered. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Durable state is damaged: bytes that were written and acknowledged (a WAL batch that a
    /// later one follows, a snapshot, `meta.json`, `peers.json`) fail their checksum or do not
    /// decode, or a file is missing. Never silently dropped; see [`StorageError::is_damage`].
    #[error("{path}: corrupt at offset {offset}{}: {reason}", seq_note(.first_bad_seq))]
    Corrupt {
        path: PathBuf,
        offset: u64,
        /// For the write-ahead log: the sequence number of the first record that cannot be
        /// trusted (every record from it on is unusable). `None` for other files.
        first_bad_seq: Option<u64>,
        reason: String,
    },
    /// A file in a format this version does not read (an older or newer one). Not damage: the
    /// bytes may be intact.
    #[error("{path}: unsupported format: {reason}")]
    UnsupportedFormat { path: PathBuf, reason: String },
    #[error("data directory {path} is in use by another process (lock file held)")]
    Locked { path: PathBuf },
    #[error("data directory {path} belongs to {found}, but this node is {expected}")]
    WrongIdentity {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

fn seq_note(first_bad_seq: &Option<u64>) -> String {
    first_bad_seq
        .map(|s| format!(" (first damaged record: sequence {s})"))
        .unwrap_or_default()
}

impl StorageError {
    /// True when the node's durable state is damaged (the node may rebuild it from its peers),
    /// as opposed to an I/O error, a held lock, a wrong identity or an unsupported format,
    /// where the state may be intact and must not be replaced.
    pub fn is_damage(&self) -> bool {
        matches!(self, StorageError::Corrupt { .. })
    }

    /// For damage to the write-ahead log: the first sequence number that cannot be trusted.
    pub fn first_bad_seq(&self) -> Option<u64> {
        match self {
            StorageError::Corrupt { first_bad_seq, .. } => *first_bad_seq,
            _ => None,
        }
    }

    /// Damage outside the write-ahead log's records (no sequence number to name).
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        StorageError::Corrupt {
            path: path.into(),
            offset,
            first_bad_seq: None,
            reason: reason.into(),
        }
    }

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
