//! Backup and restore on the replica layer: the image a backup carries, the consistency
//! hashes, and the first durable record of a member restored from a backup.
//!
//! **Backup.** The payload is the same serialised state image checkpoints and snapshot
//! transfers use (`state.rs`): the KV store with its MVCC history, compaction, leases and
//! sessions, the command-origin window and the configuration. It is taken between two inputs
//! on the engine thread, so it is exactly the state after one applied index; when a
//! checkpoint or a transfer serialised the same index already, those bytes are shared.
//!
//! **Restore.** A restored member starts a *new* cluster from the image (or from the images of
//! a partitioned backup's groups, joined and cut again at the new cluster's split keys:
//! [`restored_checkpoints`]), so each of its groups' first record is a checkpoint of a fresh
//! protocol instance whose log begins at the image's applied index
//! — the same start a new configuration epoch makes ([`LogProtocol::epoch_checkpoint`]) — with
//! two things of the image replaced:
//! * the configuration, by the new cluster's bootstrap one (the old members are not members);
//! * the origin window, emptied: origins are (member, incarnation, seq) of the OLD cluster's
//!   members, and a new member with the same id counting incarnations from 1 again would see its
//!   first writes skipped as "already applied";
//! * the client sessions, emptied for the same reason: a new member's client id (member id and
//!   a hash of its data directory's id) could equal an old member's, and would be answered the
//!   old cluster's saved replies. Nothing in flight survives a restore anyway.
//!
//! A protocol without `epoch_checkpoint` (EPaxos: no instance can start past index 0) cannot
//! start from a backup, and restore says so before writing anything.

use crate::Replica;
use crate::records::{Checkpoint, Record};
use crate::state::{AppliedState, StateImage};
use synod_core::backup::BackupImage;
use synod_core::kv::KvHash;
use synod_core::membership::Configuration;
use synod_core::{EngineError, LogProtocol};

impl<P: LogProtocol> Replica<P> {
    pub(crate) fn take_backup_image(&self) -> Result<BackupImage, EngineError> {
        // Without one order of commands a member's image is not a point of a shared history,
        // and no engine could start from it: refuse rather than hand out a useless file.
        self.refuse_without_revisions("backup (Maintenance.Snapshot)")?;
        let idx = self.state.applied_index();
        let state = match self.snapshots.cached(idx) {
            Some(bytes) => bytes,
            None => {
                self.state
                    .encode()
                    .map_err(|e| {
                        EngineError::InvalidRequest(format!(
                            "the applied state does not serialise: {e}"
                        ))
                    })?
                    .0
            }
        };
        Ok(BackupImage {
            applied_index: idx,
            revision: self.state.kv.revision(),
            compact_revision: self.state.kv.compact_revision(),
            keys: self.state.kv.len() as u64,
            state,
        })
    }

    /// Hashes compare revisions and backups restore them, which only a total order makes
    /// common to all members.
    fn refuse_without_revisions(&self, what: &str) -> Result<(), EngineError> {
        if P::CAPABILITIES.revisions {
            return Ok(());
        }
        Err(EngineError::Unsupported {
            engine: P::NAME.to_string(),
            what: format!("{what} (each member numbers its own revisions)"),
        })
    }

    pub(crate) fn state_hash_kv(&self, revision: u64) -> Result<KvHash, EngineError> {
        self.refuse_without_revisions("HashKV")?;
        self.state.kv.hash_kv(revision)
    }

    pub(crate) fn state_hash_all(&self) -> Result<u32, EngineError> {
        self.refuse_without_revisions("Hash")?;
        Ok(self.state.kv.hash_all())
    }
}

/// A restored group's first record.
type RestoredRecord<P> = Record<<P as LogProtocol>::Record, <P as LogProtocol>::Checkpoint>;

/// The first (and only) record of a member of a new cluster restored from a backup whose
/// payload is `image`; `config` is the new cluster's bootstrap configuration.
pub fn restored_checkpoint<P: LogProtocol>(
    image: &[u8],
    config: Configuration,
) -> Result<RestoredRecord<P>, String> {
    let mut records = restored_checkpoints::<P>(&[image], &[], config)?;
    records
        .pop()
        .ok_or_else(|| "a restore without split keys makes one group".to_string())
}

/// The first record of each group of a member of a new cluster restored from a backup: the
/// state `images` hold (one, or one per group of a partitioned backup, in key order) laid
/// out anew by the new cluster's `split_keys` — one record per group, lowest range first;
/// one record without split keys.
///
/// Any layout restores into any other: the images' stores are joined into one
/// ([`KvStore::join_for_restore`](synod_core::kv::KvStore::join_for_restore)), which is then
/// cut at the split keys. The MVCC history comes along as a merge and a split carry it: joined
/// from the later of the histories' starts (groups count revisions apart), each part of the
/// cut with its keys' history. Every key's latest value, every lease and the auth state always
/// come along, in every group. Each group starts from the highest revision of the images it
/// was made from.
pub fn restored_checkpoints<P: LogProtocol>(
    images: &[&[u8]],
    split_keys: &[Vec<u8>],
    config: Configuration,
) -> Result<Vec<RestoredRecord<P>>, String> {
    let mut decoded = images.iter().enumerate().map(|(i, bytes)| {
        StateImage::decode(bytes).map_err(|e| format!("group image {}: {e}", i + 1))
    });
    let mut image = decoded
        .next()
        .ok_or_else(|| "the backup holds no state image".to_string())??;
    for next in decoded {
        let next = next?;
        let range = next.range.as_ref().map(|r| &r.range);
        image.kv.join_for_restore(next.kv, range).map_err(|key| {
            format!(
                "two of the backup's groups hold key {:?}: not images of one layout",
                String::from_utf8_lossy(&key)
            )
        })?;
    }
    image.origins.clear();
    image.kv.forget_sessions();
    image.config = Some(config.clone());
    // The new layout is the new cluster's configured one: no range, split or absorb mark of
    // the old cluster's groups may come along (a mark would start groups the layout lacks).
    image.range = None;
    let mut parts = Vec::with_capacity(split_keys.len() + 1);
    for key in split_keys.iter().rev() {
        parts.push(image.kv.split_off(key));
    }
    parts.push(image.kv);
    parts.reverse();
    parts
        .into_iter()
        .map(|kv| {
            let part = StateImage {
                kv,
                origins: Vec::new(),
                config: Some(config.clone()),
                auth: image.auth.clone(),
                range: None,
            };
            first_record::<P>(part, &config)
        })
        .collect()
}

/// The first record of a group a restored cluster starts empty: the partitioned engine's range
/// directory, which a backup does not hold (the groups' leaders record their ranges again).
/// Without it every member's replica would start as one that lost its disk, to be repaired by
/// peers that have nothing either.
pub fn empty_checkpoint<P: LogProtocol>(
    config: Configuration,
) -> Result<RestoredRecord<P>, String> {
    let image = StateImage {
        kv: synod_core::kv::KvStore::new(synod_core::kv::KvLimits::default()),
        origins: Vec::new(),
        config: Some(config.clone()),
        auth: None,
        range: None,
    };
    first_record::<P>(image, &config)
}

/// A group's first record: a fresh protocol instance whose log begins at the image's index.
fn first_record<P: LogProtocol>(
    image: StateImage,
    config: &Configuration,
) -> Result<RestoredRecord<P>, String> {
    let idx = image.kv.applied_index();
    let Some(protocol) = P::epoch_checkpoint(idx) else {
        return Err(format!(
            "the {} engine cannot start a cluster from a backup: its instances cannot begin \
             past the first log index (restore into omnipaxos or vr)",
            P::NAME
        ));
    };
    let state = AppliedState::from_image(image, config)
        .encode()
        .map_err(|e| format!("the restored state does not serialise: {e}"))?;
    Ok(Record::Checkpoint(Box::new(Checkpoint {
        protocol,
        incarnation: 0,
        state,
    })))
}
