//! The data directory: an exclusive lock so two processes never share one log, a `meta` file
//! naming the cluster and member the data belongs to, and a boot counter the runtime mixes into
//! its client id so that request ids never repeat across restarts.
//!
//! Layout: `LOCK` (held with an OS file lock while the node runs), `meta.json`, `boot`,
//! `peers.json` (the data ids of the other members, see [`PeerDataIds`]), and the WAL's
//! `wal-*.log` segments and `snap-*.snap` snapshots under `wal/`.
//!
//! **Checksums.** `meta.json` and `peers.json` are written atomically (temporary file, fsync,
//! rename, directory fsync) as `{"crc32c": "<8 hex digits>", "data": <the content>}`, the
//! checksum taken over the compact JSON of `data` (keys sorted). A file that does not parse,
//! lacks either field or fails its checksum is [`StorageError::Corrupt`] naming it, which
//! [`StorageError::is_damage`] reports as damaged state. Files written before checksums (the
//! bare content) are still read, and rewritten with a checksum on the spot.
//!
//! **Data id.** `meta.json` holds a random `data_id` drawn when the directory is created. It
//! names this *copy* of the member's state: a member whose directory was wiped comes back with
//! a new one, which is how its peers tell "member 3, as it was" from "member 3, amnesiac" (see
//! the storage module doc).

use super::{StorageError, sync_dir, write_atomically};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use synod_core::NodeId;

const META_FILE: &str = "meta.json";
const BOOT_FILE: &str = "boot";
const LOCK_FILE: &str = "LOCK";
/// Where the peers' data ids are remembered.
pub const PEERS_FILE: &str = "peers.json";
/// Every metadata file of a data directory (quarantined together when its identity is damaged).
pub const IDENTITY_FILES: [&str; 3] = [META_FILE, BOOT_FILE, PEERS_FILE];
const META_FORMAT: u32 = 1;

/// `value` framed with a checksum (module doc).
fn encode_checked<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let data = serde_json::to_value(value)?;
    let crc = crc32c::crc32c(&serde_json::to_vec(&data)?);
    let mut framed = serde_json::Map::new();
    framed.insert("crc32c".into(), format!("{crc:08x}").into());
    framed.insert("data".into(), data);
    serde_json::to_vec_pretty(&serde_json::Value::Object(framed))
}

/// Reads a file written by [`encode_checked`], or an older one without a checksum (then the
/// flag is true). Every failure is damage naming `path`.
fn decode_checked<T: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> Result<(T, bool), StorageError> {
    let corrupt = |reason: String| StorageError::corrupt(path, 0, reason);
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("does not parse: {e}")))?;
    let framed = value
        .as_object()
        .filter(|o| o.contains_key("crc32c") || o.contains_key("data"));
    let Some(framed) = framed else {
        // Written before checksums: its content is all we can check.
        let v = serde_json::from_value(value)
            .map_err(|e| corrupt(format!("unchecksummed file does not decode: {e}")))?;
        return Ok((v, true));
    };
    let stored = framed
        .get("crc32c")
        .and_then(|c| c.as_str())
        .and_then(|c| u32::from_str_radix(c, 16).ok())
        .ok_or_else(|| corrupt("checksum field missing or malformed".into()))?;
    let data = framed
        .get("data")
        .ok_or_else(|| corrupt("data field missing".into()))?;
    let canonical = serde_json::to_vec(data).map_err(|e| corrupt(e.to_string()))?;
    let actual = crc32c::crc32c(&canonical);
    if actual != stored {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, content {actual:08x})"
        )));
    }
    let v = serde_json::from_value(data.clone())
        .map_err(|e| corrupt(format!("checksum holds but content does not decode: {e}")))?;
    Ok((v, false))
}

/// Whose data this is. Written once, on first start; checked on every later start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub cluster_id: u64,
    pub cluster_name: String,
    pub member_id: NodeId,
    /// Random, drawn when the directory was created; 0 in directories older than the field
    /// (one is drawn and written on their next start).
    #[serde(default)]
    pub data_id: u64,
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
            data_id: random_data_id(),
        };
        let meta_path = path.join(META_FILE);
        let fresh = !meta_path.exists();
        let mut meta = expected.clone();
        if fresh {
            let bytes = encode_checked(&expected)
                .map_err(|e| StorageError::io(&meta_path, std::io::Error::other(e)))?;
            write_atomically(path, META_FILE, &bytes)
                .map_err(|e| StorageError::io(&meta_path, e))?;
        } else {
            let bytes = std::fs::read(&meta_path).map_err(|e| StorageError::io(&meta_path, e))?;
            let (found, unchecksummed): (Meta, bool) = decode_checked(&meta_path, &bytes)?;
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
            meta = found;
            if meta.data_id == 0 || unchecksummed {
                if meta.data_id == 0 {
                    meta.data_id = expected.data_id;
                }
                tracing::info!(file = %meta_path.display(), "rewriting meta file with a checksum");
                let bytes = encode_checked(&meta)
                    .map_err(|e| StorageError::io(&meta_path, std::io::Error::other(e)))?;
                write_atomically(path, META_FILE, &bytes)
                    .map_err(|e| StorageError::io(&meta_path, e))?;
            }
        }
        let boot_path = path.join(BOOT_FILE);
        let previous = match std::fs::read_to_string(&boot_path) {
            Ok(s) => s.trim().parse::<u64>().map_err(|e| {
                StorageError::corrupt(
                    &boot_path,
                    0,
                    format!("boot counter {s:?} does not parse: {e}"),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StorageError::io(&boot_path, e)),
        };
        let boot = previous + 1;
        write_atomically(path, BOOT_FILE, boot.to_string().as_bytes())
            .map_err(|e| StorageError::io(&boot_path, e))?;
        Ok(DataDir {
            path: path.to_path_buf(),
            meta,
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

    /// Undoes the creation of a fresh directory's identity (used when the start is refused
    /// because peers remember this member with other data): the next start must be refused
    /// again, not find a `meta.json` and believe it is the old member.
    pub fn forget_fresh_identity(&self) -> Result<(), StorageError> {
        assert!(
            self.fresh,
            "only a directory created by this start may be forgotten"
        );
        let meta_path = self.path.join(META_FILE);
        std::fs::remove_file(&meta_path).map_err(|e| StorageError::io(&meta_path, e))?;
        sync_dir(&self.path).map_err(|e| StorageError::io(&self.path, e))
    }

    /// The record of which data id each peer had, kept in this directory.
    pub fn peer_data_ids(&self) -> Result<PeerDataIds, StorageError> {
        PeerDataIds::load(&self.path)
    }
}

/// A random 64-bit id without a dependency: std's `RandomState` is seeded from the OS per
/// process; mixing in the time and pid keeps two ids drawn in one process apart.
fn random_data_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.write_u32(std::process::id());
    match h.finish() {
        0 => 1,
        id => id,
    }
}

/// The data id each peer presented the first time it connected, kept durably in `peers.json`.
///
/// A peer that later presents a *different* id lost its state (wiped directory, new disk):
/// its connections are refused and its start-up probe is told so, unless it explicitly asks to
/// replace the record (the operator's `--allow-wiped-rejoin`). Shared by the transport's
/// accept tasks, hence the mutex; writes happen once per peer per directory lifetime.
#[derive(Debug)]
pub struct PeerDataIds {
    dir: PathBuf,
    ids: Mutex<BTreeMap<NodeId, u64>>,
}

/// What [`PeerDataIds::check`] decided about a peer's presented data id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// Seen before with this id, or first seen now (and recorded).
    Known,
    /// Recorded with another id: the peer's state is not the state it had.
    Replaced { recorded: u64 },
}

impl PeerDataIds {
    fn load(dir: &Path) -> Result<PeerDataIds, StorageError> {
        let path = dir.join(PEERS_FILE);
        let ids = match std::fs::read(&path) {
            Ok(bytes) => {
                let (ids, unchecksummed) = decode_checked(&path, &bytes)?;
                if unchecksummed {
                    tracing::info!(file = %path.display(), "rewriting peer data ids with a checksum");
                    let bytes = encode_checked(&ids)
                        .map_err(|e| StorageError::io(&path, std::io::Error::other(e)))?;
                    write_atomically(dir, PEERS_FILE, &bytes)
                        .map_err(|e| StorageError::io(&path, e))?;
                }
                ids
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(StorageError::io(&path, e)),
        };
        Ok(PeerDataIds {
            dir: dir.to_path_buf(),
            ids: Mutex::new(ids),
        })
    }

    /// The id recorded for `peer`, if any.
    pub fn recorded(&self, peer: NodeId) -> Option<u64> {
        self.lock().get(&peer).copied()
    }

    /// Checks `presented` against the record for `peer`, recording it (durably, before
    /// returning) if there is none, or if `replace` is set.
    pub fn check(
        &self,
        peer: NodeId,
        presented: u64,
        replace: bool,
    ) -> std::io::Result<PeerIdentity> {
        let mut ids = self.lock();
        match ids.get(&peer).copied() {
            Some(r) if r == presented => return Ok(PeerIdentity::Known),
            Some(recorded) if !replace => return Ok(PeerIdentity::Replaced { recorded }),
            _ => {}
        }
        let mut next = ids.clone();
        next.insert(peer, presented);
        let bytes = encode_checked(&next).map_err(std::io::Error::other)?;
        write_atomically(&self.dir, PEERS_FILE, &bytes)?;
        *ids = next;
        Ok(PeerIdentity::Known)
    }

    /// Forgets `peer` (durably): it left the configuration, so an id reused for a new member
    /// later presents a data directory of its own without being taken for a wiped one.
    pub fn forget(&self, peer: NodeId) -> std::io::Result<()> {
        let mut ids = self.lock();
        if !ids.contains_key(&peer) {
            return Ok(());
        }
        let mut next = ids.clone();
        next.remove(&peer);
        let bytes = encode_checked(&next).map_err(std::io::Error::other)?;
        write_atomically(&self.dir, PEERS_FILE, &bytes)?;
        *ids = next;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, u64>> {
        // A panic while holding the lock left the map intact (it is replaced whole).
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
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

    #[test]
    fn data_id_is_kept_and_a_wiped_directory_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path(), 7, "c", 1).unwrap();
        let id = d.meta().data_id;
        assert_ne!(id, 0);
        drop(d);
        let d = DataDir::open(dir.path(), 7, "c", 1).unwrap();
        assert_eq!(d.meta().data_id, id);
        drop(d);
        std::fs::remove_dir_all(dir.path()).unwrap();
        let d = DataDir::open(dir.path(), 7, "c", 1).unwrap();
        assert!(d.is_fresh());
        assert_ne!(d.meta().data_id, id);
        // A refused fresh start leaves the directory fresh for the next attempt.
        d.forget_fresh_identity().unwrap();
        drop(d);
        assert!(DataDir::open(dir.path(), 7, "c", 1).unwrap().is_fresh());
    }

    #[test]
    fn peer_data_ids_record_first_sight_and_flag_a_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path(), 7, "c", 1).unwrap();
        let p = d.peer_data_ids().unwrap();
        assert_eq!(p.recorded(2), None);
        assert_eq!(p.check(2, 111, false).unwrap(), PeerIdentity::Known);
        assert_eq!(p.check(2, 111, false).unwrap(), PeerIdentity::Known);
        assert_eq!(
            p.check(2, 222, false).unwrap(),
            PeerIdentity::Replaced { recorded: 111 }
        );
        // Durable: a reload (a restart) still remembers.
        let p = d.peer_data_ids().unwrap();
        assert_eq!(p.recorded(2), Some(111));
        assert_eq!(p.check(2, 222, true).unwrap(), PeerIdentity::Known);
        assert_eq!(d.peer_data_ids().unwrap().recorded(2), Some(222));
    }
}
