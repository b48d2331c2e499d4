//! Backups and consistency hashes of a partitioned member: a backup (`etcdctl snapshot save`,
//! `GET /v1/snapshot`) holds every group's state image as this member applied it, in key
//! order, in one file; Hash and HashKV combine the groups' own (HashKV at a revision so that
//! the layout does not matter).
//!
//! The payload of such a file is a [`GroupsImage`] (postcard), the header's engine is
//! `<engine>-partitioned`, and its figures are the groups' together: the highest applied
//! index, revision and compact revision of any group, and the keys of all. `synod restore`
//! joins the groups' stores and lays them out by the new cluster's split keys, so a backup
//! restores into any layout, partitioned or not (`synod_replica::restored_checkpoints`).
//!
//! **What point it is of.** Each group's image is that group's state after one applied index
//! on this member (taken between two batches, as any backup); the groups are not cut at one
//! moment of a shared history — there is none: revisions are per group, and what a backup
//! holds of two groups is what a range read over both returns, each group's own point. A
//! write acknowledged a moment ago may be missing from a follower's groups, as unpartitioned.
//!
//! **Refused** (with a message saying to retry or ask another member) while a group of the layout has no state on this
//! member yet (it waits for a snapshot after a split it skipped): its keys would be missing
//! from the file. Another member, or this one a moment later, answers.

use crate::Partitioned;
use crate::layout::{GroupId, group_name};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use synod_core::backup::BackupImage;
use synod_core::kv::{Key, KeyRange, KvHash, combine_hash_parts};
use synod_core::{Engine, EngineError};

/// The payload of a partitioned member's backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupsImage {
    /// Each group of the member's layout, in key order: its first key, its id and its state
    /// image (the replica layer's, as an unpartitioned backup carries one).
    pub groups: Vec<(Key, GroupId, Vec<u8>)>,
}

impl GroupsImage {
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let image: GroupsImage = postcard::from_bytes(bytes)
            .map_err(|e| format!("the partitioned backup's group list does not decode: {e}"))?;
        if image.groups.is_empty() {
            return Err("the partitioned backup holds no group".into());
        }
        if !image.groups[0].0.is_empty() || image.groups.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err("the partitioned backup's groups are not ranges in key order".into());
        }
        Ok(image)
    }

    /// The groups' state images, in key order.
    pub fn images(&self) -> Vec<&[u8]> {
        self.groups.iter().map(|(_, _, s)| s.as_slice()).collect()
    }
}

impl<E: Engine> Partitioned<E> {
    /// etcd's HashKV. At the current revision (0): the groups' own, combined in group order
    /// with the revision reported the highest group's — comparable between members with the
    /// same layout at the same revisions. At a revision `R`: every group's keys at `R` and
    /// events after the groups' highest compaction, combined so that the layout does not
    /// matter ([`synod_core::kv::combine_hash_parts`]) — what members compare at a revision
    /// they all reached (etcdctl `endpoint hashkv --rev R`, the corruption check). A group
    /// that has not reached `R` here (not closed it yet): "future revision", retry.
    pub(crate) fn groups_hash_kv(&self, revision: u64) -> Result<KvHash, EngineError> {
        if revision != 0 {
            return self.groups_hash_kv_at(revision);
        }
        let mut parts = Vec::with_capacity(self.groups.len());
        for (_, g) in self.groups() {
            let h = g.hash_kv(0)?;
            parts.push((h.hash, h.revision));
        }
        Ok(KvHash {
            hash: combine(&parts),
            revision: parts.iter().map(|(_, r)| *r).max().unwrap_or(0),
            compact_revision: 0,
        })
    }

    fn groups_hash_kv_at(&self, revision: u64) -> Result<KvHash, EngineError> {
        let engines = self
            .layout
            .ids()
            .map(|g| {
                self.groups
                    .get(&g)
                    .filter(|e| has_state(*e))
                    .ok_or_else(|| missing(g))
            })
            .collect::<Result<Vec<&E>, _>>()?;
        let compact = engines.iter().map(|e| e.status().compact_revision).max();
        let compact = compact.unwrap_or(0);
        if revision < compact {
            return Err(EngineError::Compacted {
                compact_revision: compact,
            });
        }
        let mut parts = Vec::with_capacity(engines.len());
        for (pos, engine) in engines.into_iter().enumerate() {
            let (start, end) = self.layout.bounds_at(pos);
            parts.push(engine.hash_kv_part(revision, compact, &KeyRange { start, end })?);
        }
        Ok(KvHash {
            hash: combine_hash_parts(compact, revision, parts),
            revision,
            compact_revision: compact,
        })
    }

    /// etcd's Hash of the whole applied state: the groups' own, combined in group order (with
    /// each group's revision, so members that applied the same commands agree).
    pub(crate) fn groups_hash_all(&self) -> Result<u32, EngineError> {
        let mut parts = Vec::with_capacity(self.groups.len());
        for (_, g) in self.groups() {
            parts.push((g.hash_all()?, g.status().revision));
        }
        Ok(combine(&parts))
    }

    pub(crate) fn take_backup_image(&self) -> Result<BackupImage, EngineError> {
        let mut parts = Vec::with_capacity(self.layout.groups());
        for (pos, g) in self.layout.ids().enumerate() {
            let (start, _) = self.layout.bounds_at(pos);
            parts.push((start, g, self.group_image(g)?));
        }
        assemble(parts)
    }

    /// Group `g`'s state image here (placement: one part of a backup another member takes).
    pub(crate) fn group_image(&self, g: GroupId) -> Result<BackupImage, EngineError> {
        let Some(engine) = self.groups.get(&g) else {
            return Err(EngineError::InvalidRequest(format!(
                "group {} is not on member {}",
                group_name(g),
                self.id
            )));
        };
        match has_state(engine) {
            true => engine.backup_image(),
            false => Err(missing(g)),
        }
    }
}

/// One backup of a partitioned cluster from its groups' images, each with the range's first
/// key, in key order — taken here, or (placement) gathered from the groups' hosts. The
/// figures are the groups' together: the highest applied index, revision and compact
/// revision, and the keys of all.
pub fn assemble(parts: Vec<(Key, GroupId, BackupImage)>) -> Result<BackupImage, EngineError> {
    let mut total = BackupImage {
        applied_index: 0,
        revision: 0,
        compact_revision: 0,
        keys: 0,
        state: Arc::default(),
    };
    let mut groups = Vec::with_capacity(parts.len());
    for (start, g, image) in parts {
        total.applied_index = total.applied_index.max(image.applied_index);
        total.revision = total.revision.max(image.revision);
        total.compact_revision = total.compact_revision.max(image.compact_revision);
        total.keys += image.keys;
        groups.push((start, g, image.state.to_vec()));
    }
    let image = GroupsImage { groups };
    // What `synod restore` will demand of it, asserted where it is made.
    if image.groups.is_empty()
        || !image.groups[0].0.is_empty()
        || image.groups.windows(2).any(|w| w[0].0 >= w[1].0)
    {
        return Err(EngineError::InvalidRequest(
            "a backup's groups must be ranges in key order from the first key".into(),
        ));
    }
    let bytes = postcard::to_allocvec(&image).map_err(|e| {
        EngineError::InvalidRequest(format!("the groups' images do not serialise: {e}"))
    })?;
    total.state = Arc::new(bytes);
    Ok(total)
}

/// HashKV of a placed cluster as every member computes it: each group's own hash and the
/// revision it was taken at, in key order (`parts`), combined as a member hosting every group
/// combines its groups' at their current revisions.
pub fn combine_group_hashes(parts: &[(u32, u64)]) -> u32 {
    combine(parts)
}

/// FNV-1a over each group's hash and revision, in order.
fn combine(parts: &[(u32, u64)]) -> u32 {
    let mut hash = 0x811c_9dc5_u32;
    for (h, revision) in parts {
        for b in h.to_le_bytes().into_iter().chain(revision.to_le_bytes()) {
            hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    hash
}

/// Whether this member's replica of a group holds its state (not a split-off group still
/// waiting for its snapshot, whose range is empty until it arrives).
fn has_state<E: Engine>(engine: &E) -> bool {
    !engine
        .range_state()
        .is_some_and(|r| !r.range.start.is_empty() && r.range.start == r.range.end)
}

fn missing(g: GroupId) -> EngineError {
    EngineError::InvalidRequest(format!(
        "group {} has no state on this member yet (it waits for a snapshot): ask another \
         member, or this one in a moment",
        group_name(g)
    ))
}
