//! Backups and HashKV at a member that does not host every group (placement,
//! `[partition] replicas` below the members): the groups it hosts answer here, the others are
//! asked of their hosts over the peer port, and the parts are put together as a member hosting
//! every group would (`synod_partition::assemble_backup`, `combine_group_hashes`).
//!
//! **A group's image from a host** travels in pages ([`ImageQuery`], [`ImagePage`]): the first
//! question has the host take the image (between two batches, as any backup) and keep it,
//! numbered, for [`IMAGE_HELD_FOR`]; the next ones read it on from an offset, so every page is
//! of the same image however large it is, and no answer comes near the peer port's frame bound.
//! A host keeps at most [`IMAGES_HELD_MAX`] images (the oldest go first); a page of one it no
//! longer holds is refused, and the backup fails with a message saying to retry. A host fails
//! over to the group's next host from the first page (a different host's image is another
//! point of the group).
//!
//! **What point it is of**: each group's image is that group's state on the member that gave
//! it, at one applied index — what a backup of a member hosting every group is too (revisions
//! are per group; there is no shared moment of all groups). A host with its CORRUPT alarm
//! raised gives no image (its state may be the odd one out) and the next host is asked.
//!
//! **HashKV** (etcdctl `endpoint hashkv`): every group's own HashKV — at its current revision
//! (0), or at `R` — in key order, each from this member or a host, combined. Members agree when
//! their groups agree, which is what operators compare.

use crate::handle::{ApiError, NodeHandle};
use crate::transport::{PeerAnswer, PeerQuestion};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_core::backup::BackupImage;
use synod_core::kv::{Key, KvHash};
use synod_core::{DirectoryEntry, EngineError, NodeId};

/// Bytes of a group's image in one page.
pub const IMAGE_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Images a member holds for other members' backups at once.
pub const IMAGES_HELD_MAX: usize = 4;
/// How long a held image waits for its next page to be asked.
pub const IMAGE_HELD_FOR: Duration = Duration::from_secs(60);

/// "Group `group`'s image from `offset`": `taken` 0 takes a new one, else reads the one the
/// host numbered so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageQuery {
    pub group: u64,
    pub taken: u64,
    pub offset: u64,
}

/// A page of a group's image, with the image's figures and its whole length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePage {
    /// The number the host holds the image under (ask on with it).
    pub taken: u64,
    pub applied_index: u64,
    pub revision: u64,
    pub compact_revision: u64,
    pub keys: u64,
    pub total: u64,
    pub chunk: Vec<u8>,
}

/// Images a member took for other members' backups, until read or expired.
#[derive(Default)]
pub(crate) struct ImagesHeld {
    next: u64,
    held: Vec<Held>,
}

struct Held {
    taken: u64,
    group: u64,
    at: Instant,
    image: BackupImage,
}

impl ImagesHeld {
    /// Holds `image` of `group`; its number.
    fn hold(&mut self, group: u64, image: BackupImage, now: Instant) -> u64 {
        self.expire(now);
        if self.held.len() >= IMAGES_HELD_MAX {
            self.held.remove(0);
        }
        self.next += 1;
        let taken = self.next;
        self.held.push(Held {
            taken,
            group,
            at: now,
            image,
        });
        taken
    }

    fn expire(&mut self, now: Instant) {
        self.held
            .retain(|h| now.saturating_duration_since(h.at) < IMAGE_HELD_FOR);
    }

    /// The page of held image `taken` of `group` from `offset`; an image whose last page is
    /// read is dropped.
    fn page(&mut self, q: &ImageQuery, now: Instant) -> Result<ImagePage, String> {
        self.expire(now);
        let i = (self.held.iter())
            .position(|h| h.taken == q.taken && h.group == q.group)
            .ok_or_else(|| {
                format!(
                    "image {} of group {} is no longer held here (expired or replaced): \
                     retry the backup",
                    q.taken, q.group
                )
            })?;
        let h = &mut self.held[i];
        h.at = now;
        let state = &h.image.state;
        let from = usize::try_from(q.offset)
            .ok()
            .filter(|o| *o <= state.len())
            .ok_or_else(|| format!("offset {} is past the image's end", q.offset))?;
        let to = (from + IMAGE_PAGE_BYTES_MAX).min(state.len());
        let page = ImagePage {
            taken: h.taken,
            applied_index: h.image.applied_index,
            revision: h.image.revision,
            compact_revision: h.image.compact_revision,
            keys: h.image.keys,
            total: state.len() as u64,
            chunk: state[from..to].to_vec(),
        };
        if to == state.len() {
            self.held.remove(i);
        }
        Ok(page)
    }
}

/// Answers a peer's [`ImageQuery`] from this member's replica of the group.
pub(crate) async fn answer(handle: &NodeHandle, q: ImageQuery) -> PeerAnswer {
    let Some(m) = handle.maintenance() else {
        return PeerAnswer::Unavailable("this member takes no backups".into());
    };
    if m.corrupt() {
        return PeerAnswer::Unavailable(super::ERR_CORRUPT.into());
    }
    let now = Instant::now();
    let taken = match q.taken {
        0 => {
            // Taking an image copies a group's state: under the member's own backup bound.
            let Ok(_slot) = m.backups.clone().try_acquire_owned() else {
                return PeerAnswer::Unavailable("busy: backups under way here; retry".into());
            };
            match handle.group_backup(q.group).await {
                Ok(image) => m.held().hold(q.group, image, now),
                Err(e) => return PeerAnswer::Unavailable(e.to_string()),
            }
        }
        t => t,
    };
    let q = ImageQuery { taken, ..q };
    match m.held().page(&q, now) {
        Ok(page) => PeerAnswer::Image(page),
        Err(e) => PeerAnswer::Unavailable(e),
    }
}

impl NodeHandle {
    /// Whether some groups live elsewhere: every range with its hosts, if so.
    pub(crate) fn placement(&self) -> Option<Vec<DirectoryEntry>> {
        let status = self.status();
        let d = status.engine.directory?;
        d.placed.then_some(d.placement)
    }

    /// Group `group`'s image on this member.
    pub(crate) async fn group_backup(&self, group: u64) -> Result<BackupImage, ApiError> {
        self.ask("a group's backup", |reply| {
            super::MaintenanceQuery::GroupBackup { group, reply }
        })
        .await
    }

    /// A backup of every group over `placement`, this member's own and the others' from
    /// their hosts.
    pub(crate) async fn gather_backup(
        &self,
        placement: &[DirectoryEntry],
    ) -> Result<BackupImage, ApiError> {
        let mine = self.hosted();
        let mut parts: Vec<(Key, u64, BackupImage)> = Vec::with_capacity(placement.len());
        for e in placement {
            let image = match mine.contains(&e.group) {
                true => self.group_backup(e.group).await?,
                false => self.remote_image(e).await?,
            };
            parts.push((e.start.clone(), e.group, image));
        }
        synod_partition::assemble_backup(parts).map_err(ApiError::Engine)
    }

    /// HashKV at `revision` (0: each group's current) over `placement`, as
    /// [`synod_partition::combine_group_hashes`] puts the groups' together.
    pub(crate) async fn gather_hash_kv(
        &self,
        placement: &[DirectoryEntry],
        revision: u64,
    ) -> Result<KvHash, ApiError> {
        let mine = self.hosted();
        let mut parts = Vec::with_capacity(placement.len());
        let mut compact = 0;
        for e in placement {
            let h = match mine.contains(&e.group) {
                true => self.group_hash_kv(e.group, revision).await?,
                false => self.remote_hash(e, revision).await?,
            };
            compact = compact.max(h.compact_revision);
            parts.push((h.hash, h.revision));
        }
        Ok(KvHash {
            hash: synod_partition::combine_group_hashes(&parts),
            revision: parts.iter().map(|(_, r)| *r).max().unwrap_or(0),
            compact_revision: compact,
        })
    }

    fn hosted(&self) -> Vec<u64> {
        self.status()
            .engine
            .groups
            .iter()
            .map(|g| g.group)
            .collect()
    }

    /// `entry`'s hosts with their peer addresses, in the order to ask them.
    fn hosts_of(&self, entry: &DirectoryEntry) -> Vec<(NodeId, String)> {
        let status = self.status();
        let members = &status.engine.configuration.members;
        (entry.members.iter())
            .filter_map(|h| members.iter().find(|m| m.id == *h))
            .filter(|m| !m.peer_addr.is_empty())
            .map(|m| (m.id, m.peer_addr.clone()))
            .collect()
    }

    /// Group `entry.group`'s image from the first of its hosts that gives all of it.
    async fn remote_image(&self, entry: &DirectoryEntry) -> Result<BackupImage, ApiError> {
        let mut why = Vec::new();
        for (host, addr) in self.hosts_of(entry) {
            match self.image_from(entry.group, host, &addr).await {
                Ok(image) => return Ok(image),
                Err(e) => why.push(format!("member {host}: {e}")),
            }
        }
        Err(unavailable(entry.group, "image", &why))
    }

    /// Every page of a new image of `group` from `host`.
    async fn image_from(
        &self,
        group: u64,
        host: NodeId,
        addr: &str,
    ) -> Result<BackupImage, String> {
        let mut q = ImageQuery {
            group,
            taken: 0,
            offset: 0,
        };
        let mut state: Vec<u8> = Vec::new();
        loop {
            let page = match self
                .ask_peer(host, addr, PeerQuestion::Image(q.clone()))
                .await?
            {
                PeerAnswer::Image(p) => p,
                PeerAnswer::Unavailable(why) => return Err(why),
                other => return Err(format!("unexpected answer {other:?}")),
            };
            let consistent = (q.taken == 0 || page.taken == q.taken)
                && page.total >= state.len() as u64 + page.chunk.len() as u64;
            if !consistent || (page.chunk.is_empty() && (state.len() as u64) < page.total) {
                return Err("the host's pages do not add up to its image".into());
            }
            state.extend_from_slice(&page.chunk);
            if state.len() as u64 == page.total {
                return Ok(BackupImage {
                    applied_index: page.applied_index,
                    revision: page.revision,
                    compact_revision: page.compact_revision,
                    keys: page.keys,
                    state: Arc::new(state),
                });
            }
            q.taken = page.taken;
            q.offset = state.len() as u64;
        }
    }

    /// Group `entry.group`'s HashKV at `revision` from the first of its hosts that answers.
    async fn remote_hash(&self, entry: &DirectoryEntry, revision: u64) -> Result<KvHash, ApiError> {
        let mut why = Vec::new();
        let mut future = false;
        for (host, addr) in self.hosts_of(entry) {
            let question = PeerQuestion::GroupHashKv {
                group: entry.group,
                revision,
            };
            match self.ask_peer(host, &addr, question).await {
                Ok(PeerAnswer::HashKv {
                    hash,
                    revision,
                    compact_revision,
                }) => {
                    return Ok(KvHash {
                        hash,
                        revision,
                        compact_revision,
                    });
                }
                // Another host may have reached it.
                Ok(PeerAnswer::FutureRevision) => future = true,
                Ok(other) => why.push(format!("member {host}: {other:?}")),
                Err(e) => why.push(format!("member {host}: {e}")),
            }
        }
        match future {
            true => Err(ApiError::Engine(EngineError::FutureRevision { revision })),
            false => Err(unavailable(entry.group, "HashKV", &why)),
        }
    }
}

fn unavailable(group: u64, what: &str, why: &[String]) -> ApiError {
    ApiError::Unavailable(format!(
        "group {group}'s {what}: no host of it answered ({}); retry",
        match why.is_empty() {
            true => "no host with a peer address".to_string(),
            false => why.join("; "),
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(len: usize) -> BackupImage {
        BackupImage {
            applied_index: 7,
            revision: 9,
            compact_revision: 2,
            keys: 3,
            state: Arc::new((0..len).map(|i| i as u8).collect()),
        }
    }

    #[test]
    fn a_held_image_is_read_in_pages_and_dropped_after_its_last() {
        let mut held = ImagesHeld::default();
        let now = Instant::now();
        let len = IMAGE_PAGE_BYTES_MAX * 2 + 5;
        let taken = held.hold(4, image(len), now);
        let mut q = ImageQuery {
            group: 4,
            taken,
            offset: 0,
        };
        let mut got = Vec::new();
        for _ in 0..3 {
            let p = held.page(&q, now).expect("held");
            assert_eq!((p.total, p.revision), (len as u64, 9));
            got.extend_from_slice(&p.chunk);
            q.offset = got.len() as u64;
        }
        assert_eq!(got, *image(len).state);
        assert!(held.page(&q, now).is_err(), "dropped after the last page");
    }

    #[test]
    fn an_image_of_another_group_expired_or_replaced_is_refused() {
        let mut held = ImagesHeld::default();
        let now = Instant::now();
        let first = held.hold(1, image(10), now);
        let q = |group, taken| ImageQuery {
            group,
            taken,
            offset: 0,
        };
        assert!(
            held.page(&q(2, first), now).is_err(),
            "another group's number"
        );
        let later = now + IMAGE_HELD_FOR;
        assert!(held.page(&q(1, first), later).is_err(), "expired");
        let mut numbers = Vec::new();
        for _ in 0..=IMAGES_HELD_MAX {
            numbers.push(held.hold(1, image(10), now));
        }
        assert!(
            held.page(&q(1, numbers[0]), now).is_err(),
            "the oldest went"
        );
        assert!(held.page(&q(1, numbers[IMAGES_HELD_MAX]), now).is_ok());
        let past = ImageQuery {
            offset: 11,
            ..q(1, numbers[1])
        };
        assert!(held.page(&past, now).is_err(), "past the end");
    }
}
