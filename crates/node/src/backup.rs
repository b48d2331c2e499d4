//! Backups, consistency hashes and the CORRUPT alarm: the node side of etcd's
//! Maintenance.Snapshot, Hash and HashKV.
//!
//! **On the engine thread, briefly.** A backup or a hash must see one point of the applied
//! sequence, so the engine thread answers it between two batches ([`MaintenanceQuery`], over a
//! bounded channel like watch history reads). What it does there is the least that gives a
//! consistent answer: serialise the applied state (or reuse the bytes a checkpoint made at the
//! same index), or hash it. Framing the file, its checksums and streaming it to the client
//! happen on the API side, so the cluster keeps serving while a backup is downloaded.
//!
//! **Bounded.** At most [`BACKUPS_CONCURRENT_MAX`] backups per member are held in memory at
//! once (each is one copy of the state); more are refused with `Busy` rather than queued, and
//! APIs stream a backup in chunks of at most [`BACKUP_CHUNK_BYTES_MAX`].
//!
//! **CORRUPT.** The corruption check (in the etcd crate, which can talk to peers) raises
//! [`Maintenance::raise_corrupt`] when this member's history hash disagrees with a majority of
//! the voters at a revision all of them applied. While it is raised the API edge refuses reads
//! and writes with etcd's "etcdserver: corrupt cluster" (see `docs/backup.md` for why reads
//! too); `etcdctl alarm disarm` clears it, and the next check raises it again if the
//! divergence is still there. Member-local, like NOSPACE.

mod gather;

pub(crate) use gather::answer as answer_image;
pub use gather::{IMAGE_PAGE_BYTES_MAX, ImagePage, ImageQuery};

use crate::handle::{ApiError, NodeHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use synod_core::backup::{BackupHeader, BackupImage, encode_backup};
use synod_core::kv::KvHash;
use synod_core::{Engine, EngineError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Backups one member holds in memory at once.
pub const BACKUPS_CONCURRENT_MAX: usize = 2;
/// Largest piece of a backup in one streamed message (gRPC's default message bound is 4 MiB).
pub const BACKUP_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// Queued maintenance queries to the engine thread; more wait (they are rare).
pub const MAINTENANCE_QUEUE_MAX: usize = 16;
/// etcd's message for a member with the CORRUPT alarm raised (`ErrCorrupt`).
pub const ERR_CORRUPT: &str = "etcdserver: corrupt cluster";

/// A question only the engine thread can answer.
#[derive(Debug)]
pub enum MaintenanceQuery {
    Backup(oneshot::Sender<Result<BackupImage, EngineError>>),
    HashKv {
        revision: u64,
        reply: oneshot::Sender<Result<KvHash, EngineError>>,
    },
    /// One group's HashKV (partitioned members; the corruption check of placed groups).
    GroupHashKv {
        group: u64,
        revision: u64,
        reply: oneshot::Sender<Result<KvHash, EngineError>>,
    },
    /// One group's state image (partitioned members; a placed member's backup gathers the
    /// groups it does not host from their hosts).
    GroupBackup {
        group: u64,
        reply: oneshot::Sender<Result<BackupImage, EngineError>>,
    },
    Hash(oneshot::Sender<Result<u32, EngineError>>),
    /// etcd's Defragment: a checkpoint now, answered once it is on disk (by the runtime, which
    /// can drive the engine; see [`Defragmented`]).
    Defragment(oneshot::Sender<Result<Defragmented, EngineError>>),
}

/// What a defragmentation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defragmented {
    /// A checkpoint was written and the log before it dropped; false: nothing to reclaim
    /// (nothing applied since the last checkpoint, or an engine without a log to compact).
    pub checkpointed: bool,
    /// The database (WAL + newest snapshot) afterwards.
    pub db_size_bytes: u64,
}

impl MaintenanceQuery {
    /// Answers on the engine thread (a receiver that went away is fine).
    pub(crate) fn answer<E: Engine>(self, engine: &E) {
        match self {
            MaintenanceQuery::Backup(reply) => {
                let _ = reply.send(engine.backup_image());
            }
            MaintenanceQuery::HashKv { revision, reply } => {
                let _ = reply.send(engine.hash_kv(revision));
            }
            MaintenanceQuery::GroupHashKv {
                group,
                revision,
                reply,
            } => {
                let _ = reply.send(engine.group_hash_kv(group, revision));
            }
            MaintenanceQuery::GroupBackup { group, reply } => {
                let _ = reply.send(engine.group_backup_image(group));
            }
            MaintenanceQuery::Hash(reply) => {
                let _ = reply.send(engine.hash_all());
            }
            // The runtime intercepts it; an engine seen only by reference cannot checkpoint.
            MaintenanceQuery::Defragment(reply) => {
                let _ = reply.send(Ok(Defragmented {
                    checkpointed: false,
                    db_size_bytes: 0,
                }));
            }
        }
    }
}

impl MaintenanceQuery {
    /// Answers from a bare KV store ([`crate::handle::local_test_node`], which has no replica
    /// layer): hashes as an engine would; a backup with an empty state image, since only the
    /// framing is what API tests of such a node can check.
    pub(crate) fn answer_from_store(self, store: &synod_core::kv::KvStore) {
        match self {
            MaintenanceQuery::Backup(reply) => {
                let _ = reply.send(Ok(BackupImage {
                    applied_index: store.applied_index(),
                    revision: store.revision(),
                    compact_revision: store.compact_revision(),
                    keys: store.len() as u64,
                    state: Arc::new(Vec::new()),
                }));
            }
            MaintenanceQuery::HashKv { revision, reply } => {
                let _ = reply.send(store.hash_kv(revision));
            }
            // A bare store is one revision stream: its only group is 0.
            MaintenanceQuery::GroupHashKv {
                group,
                revision,
                reply,
            } => {
                let _ = reply.send(match group {
                    0 => store.hash_kv(revision),
                    g => Err(EngineError::InvalidRequest(format!("no group {g} here"))),
                });
            }
            MaintenanceQuery::GroupBackup { reply, .. } => {
                let _ = reply.send(Err(EngineError::InvalidRequest(
                    "a bare store has no groups".into(),
                )));
            }
            MaintenanceQuery::Hash(reply) => {
                let _ = reply.send(Ok(store.hash_all()));
            }
            MaintenanceQuery::Defragment(reply) => {
                let _ = reply.send(Ok(Defragmented {
                    checkpointed: false,
                    db_size_bytes: 0,
                }));
            }
        }
    }
}

/// The API side: where queries go, the backup bound and the CORRUPT alarm.
pub struct Maintenance {
    queries: mpsc::Sender<MaintenanceQuery>,
    backups: Arc<Semaphore>,
    corrupt: AtomicBool,
    /// Images of groups taken for other members' backups (placement), read in pages.
    held: Mutex<gather::ImagesHeld>,
}

impl Maintenance {
    pub fn new(queries: mpsc::Sender<MaintenanceQuery>) -> Self {
        Maintenance {
            queries,
            backups: Arc::new(Semaphore::new(BACKUPS_CONCURRENT_MAX)),
            corrupt: AtomicBool::new(false),
            held: Mutex::default(),
        }
    }

    fn held(&self) -> MutexGuard<'_, gather::ImagesHeld> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn corrupt(&self) -> bool {
        self.corrupt.load(Ordering::Relaxed)
    }

    /// Raised by the corruption check; returns whether it was newly raised.
    pub fn raise_corrupt(&self) -> bool {
        !self.corrupt.swap(true, Ordering::Relaxed)
    }

    /// `etcdctl alarm disarm`.
    pub fn disarm_corrupt(&self) {
        if self.corrupt.swap(false, Ordering::Relaxed) {
            tracing::warn!("CORRUPT alarm disarmed by an operator");
        }
    }
}

/// A whole backup file in memory, with the header it starts with. Holds one of the member's
/// [`BACKUPS_CONCURRENT_MAX`] slots until dropped.
pub struct BackupFile {
    pub header: BackupHeader,
    pub bytes: Vec<u8>,
    _slot: OwnedSemaphorePermit,
}

impl NodeHandle {
    fn maintenance_or_unsupported(&self, what: &str) -> Result<&Arc<Maintenance>, ApiError> {
        self.maintenance().ok_or_else(|| {
            ApiError::Engine(EngineError::Unsupported {
                engine: self.info().engine.clone(),
                what: what.to_string(),
            })
        })
    }

    /// Whether this member's CORRUPT alarm is raised.
    pub fn corrupt(&self) -> bool {
        self.maintenance().is_some_and(|m| m.corrupt())
    }

    async fn ask<T>(
        &self,
        what: &str,
        query: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> MaintenanceQuery,
    ) -> Result<T, ApiError> {
        let m = self.maintenance_or_unsupported(what)?;
        let (tx, rx) = oneshot::channel();
        let stopped = || ApiError::Unavailable("node is shutting down".into());
        m.queries.send(query(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(ApiError::Engine)
    }

    /// A backup of this member's applied state as a complete file (see
    /// [`synod_core::backup`]). `Busy` when [`BACKUPS_CONCURRENT_MAX`] are under way.
    pub async fn backup(&self) -> Result<BackupFile, ApiError> {
        let m = self.maintenance_or_unsupported("backup (Maintenance.Snapshot)")?;
        let slot = m
            .backups
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Engine(EngineError::Busy))?;
        let image = match self.placement() {
            Some(placement) => self.gather_backup(&placement).await?,
            None => self.ask("backup", MaintenanceQuery::Backup).await?,
        };
        let info = self.info();
        let header = BackupHeader {
            engine: info.engine.clone(),
            cluster_id: info.cluster_id,
            member_id: info.member_id,
            applied_index: image.applied_index,
            revision: image.revision,
            compact_revision: image.compact_revision,
            keys: image.keys,
        };
        let h = header.clone();
        // Copying and checksumming a large state is not for an async worker.
        let bytes = tokio::task::spawn_blocking(move || encode_backup(&h, &image.state))
            .await
            .map_err(|e| ApiError::Unavailable(format!("backup encoder: {e}")))?;
        Ok(BackupFile {
            header,
            bytes,
            _slot: slot,
        })
    }

    /// etcd's HashKV at `revision` (0: this member's current revision).
    pub async fn hash_kv(&self, revision: u64) -> Result<KvHash, ApiError> {
        if let Some(placement) = self.placement() {
            return self.gather_hash_kv(&placement, revision).await;
        }
        self.ask("HashKV", |reply| MaintenanceQuery::HashKv {
            revision,
            reply,
        })
        .await
    }

    /// HashKV of group `group`'s own history at `revision` (partitioned members).
    pub async fn group_hash_kv(&self, group: u64, revision: u64) -> Result<KvHash, ApiError> {
        self.ask("a group's HashKV", |reply| MaintenanceQuery::GroupHashKv {
            group,
            revision,
            reply,
        })
        .await
    }

    /// etcd's Hash of this member's whole applied state.
    pub async fn hash_all(&self) -> Result<u32, ApiError> {
        self.ask("Hash", MaintenanceQuery::Hash).await
    }

    /// etcd's Defragment: a checkpoint now, so storage drops the log before it; answers once
    /// the checkpoint is durable (or at once when there is nothing to reclaim).
    pub async fn defragment(&self) -> Result<Defragmented, ApiError> {
        self.ask("Defragment", MaintenanceQuery::Defragment).await
    }
}
