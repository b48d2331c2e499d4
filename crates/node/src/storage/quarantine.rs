//! Quarantine of a damaged write-ahead log: before a node rebuilds its state from its peers it
//! moves its segments and snapshots aside, into `quarantine-<unix-seconds>[-n]/` inside the WAL
//! directory, so the evidence survives for inspection while [`super::Wal::open`] (which ignores
//! subdirectories) starts from an empty log. Only the newest [`QUARANTINE_KEEP`] such
//! directories are kept, so a node that keeps failing cannot fill its disk with copies.

use super::{StorageError, sync_dir};
use std::path::{Path, PathBuf};

/// Quarantine directories kept per WAL directory; older ones are deleted.
pub const QUARANTINE_KEEP: usize = 3;

const PREFIX: &str = "quarantine-";

/// `(seconds, n)` of a quarantine directory's name, for ordering them oldest first.
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix(PREFIX)?;
    match rest.split_once('-') {
        Some((secs, n)) => Some((secs.parse().ok()?, n.parse().ok()?)),
        None => Some((rest.parse().ok()?, 0)),
    }
}

/// True for the files a WAL directory's recovery reads (or deletes): segments, snapshots,
/// unfinished snapshots.
fn is_wal_file(name: &str) -> bool {
    let segment = name.starts_with("wal-") && name.ends_with(".log");
    let snapshot = name.starts_with("snap-") && (name.ends_with(".snap") || name.ends_with(".tmp"));
    segment || snapshot
}

/// A quarantine directory: `(seconds, n)` from its name, and its path.
type Entry = ((u64, u64), PathBuf);

/// Quarantine directories in `wal_dir`, oldest first.
fn list(wal_dir: &Path) -> Result<Vec<Entry>, StorageError> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(wal_dir).map_err(|e| StorageError::io(wal_dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(wal_dir, e))?;
        let name = entry.file_name();
        if let Some(key) = name.to_str().and_then(parse_name)
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            dirs.push((key, entry.path()));
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Creates a fresh quarantine directory in `wal_dir`, named to sort after every existing one
/// of the same second (a name freed by pruning is never reused, or the newest directory
/// would sort as the oldest and be pruned first).
fn create_target(wal_dir: &Path) -> Result<PathBuf, StorageError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let n = list(wal_dir)?
        .iter()
        .filter(|((s, _), _)| *s == secs)
        .map(|((_, n), _)| n + 1)
        .max()
        .unwrap_or(0);
    let name = match n {
        0 => format!("{PREFIX}{secs}"),
        n => format!("{PREFIX}{secs}-{n}"),
    };
    let path = wal_dir.join(name);
    std::fs::create_dir(&path).map_err(|e| StorageError::io(&path, e))?;
    Ok(path)
}

/// Moves every segment and snapshot file of `wal_dir` into a new `quarantine-<secs>[-n]/`
/// subdirectory, makes the moves durable (both directories fsynced) and returns its path.
/// Afterwards `Wal::open(wal_dir)` finds an empty log. Keeps the newest
/// [`QUARANTINE_KEEP`] quarantine directories, deleting older ones (logged).
pub fn quarantine(wal_dir: &Path) -> Result<PathBuf, StorageError> {
    let target = create_target(wal_dir)?;
    let mut moved = 0usize;
    for entry in std::fs::read_dir(wal_dir).map_err(|e| StorageError::io(wal_dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(wal_dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_file = entry
            .file_type()
            .map_err(|e| StorageError::io(entry.path(), e))?
            .is_file();
        if is_file && is_wal_file(name) {
            let to = target.join(name);
            std::fs::rename(entry.path(), &to).map_err(|e| StorageError::io(&to, e))?;
            moved += 1;
        }
    }
    sync_dir(&target).map_err(|e| StorageError::io(&target, e))?;
    sync_dir(wal_dir).map_err(|e| StorageError::io(wal_dir, e))?;
    tracing::warn!(
        dir = %target.display(),
        files = moved,
        "write-ahead log moved to quarantine; it is kept for inspection and never read again"
    );
    prune(wal_dir)?;
    Ok(target)
}

/// Deletes all but the newest [`QUARANTINE_KEEP`] quarantine directories of `wal_dir`.
fn prune(wal_dir: &Path) -> Result<(), StorageError> {
    let dirs = list(wal_dir)?;
    let excess = dirs.len().saturating_sub(QUARANTINE_KEEP);
    for (_, path) in &dirs[..excess] {
        tracing::warn!(dir = %path.display(), keep = QUARANTINE_KEEP, "deleting an old quarantined log");
        std::fs::remove_dir_all(path).map_err(|e| StorageError::io(path, e))?;
    }
    if excess > 0 {
        sync_dir(wal_dir).map_err(|e| StorageError::io(wal_dir, e))?;
    }
    Ok(())
}

/// Moves the data directory's metadata files (`names` that exist) into a new quarantine
/// directory inside `data_dir`, durably, and returns it: a damaged `meta.json` or `boot` means
/// the directory's identity cannot be trusted, a damaged `peers.json` that the peers' data ids
/// are forgotten. Pruned like the WAL's quarantines.
pub fn quarantine_metadata(data_dir: &Path, names: &[&str]) -> Result<PathBuf, StorageError> {
    let target = create_target(data_dir)?;
    for name in names {
        let from = data_dir.join(name);
        if from.exists() {
            let to = target.join(name);
            std::fs::rename(&from, &to).map_err(|e| StorageError::io(&to, e))?;
        }
    }
    sync_dir(&target).map_err(|e| StorageError::io(&target, e))?;
    sync_dir(data_dir).map_err(|e| StorageError::io(data_dir, e))?;
    tracing::warn!(
        dir = %target.display(),
        files = ?names,
        "damaged data-directory metadata moved to quarantine; kept for inspection"
    );
    prune(data_dir)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_order_by_time_then_counter() {
        assert_eq!(parse_name("quarantine-17"), Some((17, 0)));
        assert_eq!(parse_name("quarantine-17-2"), Some((17, 2)));
        assert_eq!(parse_name("quarantine-x"), None);
        assert_eq!(parse_name("wal-1.log"), None);
        assert!(is_wal_file("wal-00000000000000000001.log"));
        assert!(is_wal_file("snap-00000000000000000001.snap"));
        assert!(is_wal_file("snap-00000000000000000001.snap.tmp"));
        assert!(!is_wal_file("LOCK"));
    }
}
