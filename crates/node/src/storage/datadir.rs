//! The data directory: an exclusive lock so two processes never share one log, a `meta` file
//! naming the cluster and member the data belongs to, and a boot counter the runtime mixes into
//! its client id so that request ids never repeat across restarts.
//!
//! Layout: `LOCK` (held with an OS file lock while the node runs), `meta.json`, `boot`, and the
//! WAL's `wal-*.log` segments under `wal/`.

use super::{StorageError, write_atomically};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use synod_core::NodeId;

const META_FILE: &str = "meta.json";
const BOOT_FILE: &str = "boot";
const LOCK_FILE: &str = "LOCK";
const META_FORMAT: u32 = 1;

/// Whose data this is. Written once, on first start; checked on every later start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub cluster_id: u64,
    pub cluster_name: String,
    pub member_id: NodeId,
}

/// An opened, locked data directory. The lock is released when this is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    meta: Meta,
    /// This start's number: 1 on first boot, +1 on every start.
    boot: u64,
    /// True when the directory held no meta file: a first start (or a wiped directory).
    fresh: bool,
    /// Holding the file keeps the lock; the OS drops it if the process dies.
    _lock: File,
}

impl DataDir {
    /// Creates (if needed), locks and checks the directory, and bumps the boot counter.
    pub fn open(
        path: &Path,
        cluster_id: u64,
        cluster_name: &str,
        member_id: NodeId,
    ) -> Result<DataDir, StorageError> {
        std::fs::create_dir_all(path).map_err(|e| StorageError::io(path, e))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StorageError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StorageError::io(&lock_path, e)),
        }
        let expected = Meta {
            format: META_FORMAT,
            cluster_id,
            cluster_name: cluster_name.to_string(),
            member_id,
        };
        let meta_path = path.join(META_FILE);
        let fresh = !meta_path.exists();
        if fresh {
            let bytes = serde_json::to_vec_pretty(&expected)
                .map_err(|e| StorageError::io(&meta_path, std::io::Error::other(e)))?;
            write_atomically(path, META_FILE, &bytes)
                .map_err(|e| StorageError::io(&meta_path, e))?;
        } else {
            let bytes = std::fs::read(&meta_path).map_err(|e| StorageError::io(&meta_path, e))?;
            let found: Meta =
                serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
                    path: meta_path.clone(),
                    offset: 0,
                    reason: format!("meta file does not parse: {e}"),
                })?;
            if found.cluster_id != cluster_id || found.member_id != member_id {
                return Err(StorageError::WrongIdentity {
                    path: path.to_path_buf(),
                    found: format!(
                        "cluster {:?} (id {:x}) member {}",
                        found.cluster_name, found.cluster_id, found.member_id
                    ),
                    expected: format!(
                        "cluster {cluster_name:?} (id {cluster_id:x}) member {member_id}"
                    ),
                });
            }
        }
        let boot_path = path.join(BOOT_FILE);
        let previous = match std::fs::read_to_string(&boot_path) {
            Ok(s) => s.trim().parse::<u64>().map_err(|e| StorageError::Corrupt {
                path: boot_path.clone(),
                offset: 0,
                reason: format!("boot counter {s:?} does not parse: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StorageError::io(&boot_path, e)),
        };
        let boot = previous + 1;
        write_atomically(path, BOOT_FILE, boot.to_string().as_bytes())
            .map_err(|e| StorageError::io(&boot_path, e))?;
        Ok(DataDir {
            path: path.to_path_buf(),
            meta: expected,
            boot,
            fresh,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn meta(&self) -> &Meta {
        &self.meta
    }
    pub fn boot(&self) -> u64 {
        self.boot
    }
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }
    pub fn wal_dir(&self) -> PathBuf {
        self.path.join("wal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_meta_and_boot_counter() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path(), 7, "c", 1).unwrap();
        assert!(d.is_fresh());
        assert_eq!(d.boot(), 1);
        // A second opener (same process, separate file handle) is refused while held.
        let e = DataDir::open(dir.path(), 7, "c", 1).unwrap_err();
        assert!(matches!(e, StorageError::Locked { .. }), "{e}");
        drop(d);
        let d = DataDir::open(dir.path(), 7, "c", 1).unwrap();
        assert!(!d.is_fresh());
        assert_eq!(d.boot(), 2);
        drop(d);
        let e = DataDir::open(dir.path(), 8, "other", 1).unwrap_err();
        assert!(matches!(e, StorageError::WrongIdentity { .. }), "{e}");
        assert!(e.to_string().contains("other"), "{e}");
        let e = DataDir::open(dir.path(), 7, "c", 2).unwrap_err();
        assert!(matches!(e, StorageError::WrongIdentity { .. }), "{e}");
    }
}
