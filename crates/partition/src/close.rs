//! Closing revisions: keeps the groups' revision counters together.
//!
//! Revisions are per group, so a group that takes few writes falls behind a busy one. A watch
//! over keys of several groups (the node's merged cursors) may deliver revision R only once
//! every group it reads has *closed* R — applied R or more, so no write there can get R or
//! less any more — or a later event of a quiet group could come after an earlier one of a busy
//! group. Writes close revisions as they go; a quiet group closes them with
//! `Op::CloseRevisions`: the leader of a group behind the highest revision of this member's
//! groups proposes one up to it (at most one in flight per group, every
//! [`CLOSE_EVERY_TICKS`]), decided in the group's log like a write, so every replica holds the
//! same revisions. Every member runs every group, so the highest revision here is at most a
//! round behind the cluster's — unless groups are placed on some members (`placement.rs`):
//! then every frame to a peer carries the highest revision of the sender's groups, and a
//! leader closes up to the highest it heard of too (a member hosting the first group alone
//! must still close it up to the others). Idle groups stay idle: when no group moves, nothing is proposed.
//!
//! The same keeps a compaction meaningful in every group (each reached the revision) and
//! the history bound (`HISTORY_REVISIONS`, in revisions) the same span of time in each.

use crate::Partitioned;
use crate::layout::GroupId;
use std::collections::BTreeMap;
use synod_core::kv::{CLOSE_STEP_MAX, Op};
use synod_core::{Engine, RequestId};

/// How often (in ticks, 10 ms) a leader looks for groups behind: a merged watch's lag behind
/// the busiest group is about this plus one decision.
pub(crate) const CLOSE_EVERY_TICKS: u64 = 1;
/// A close unanswered this long (ticks) is made again: its answer was lost with a leader.
const CLOSE_RETRY_TICKS: u64 = 300;

/// This replica's closes in flight, per group: the request and the tick it was made.
#[derive(Default)]
pub(crate) struct Closing {
    pending: BTreeMap<GroupId, (RequestId, u64)>,
    /// Tests that pin each group's own revisions switch closes off.
    pub(crate) off: bool,
    /// The highest revision of this member's groups when last looked at: what every frame to
    /// a peer carries (placement).
    pub(crate) local_top: u64,
    /// The highest revision any peer's frame carried (placement: no member sees every group).
    pub(crate) peer_top: u64,
    /// The next batch sends every peer a frame, with or without messages (placement).
    pub(crate) announce: bool,
}

/// How often (ticks) a member with placed groups sends every peer its highest revision, even
/// with nothing else to send: a protocol whose followers are silent while idle (VR) would
/// otherwise never tell the leader of the first group of the revisions of groups it does not
/// host, and that group would never close up to them.
pub(crate) const ANNOUNCE_EVERY_TICKS: u64 = 20;

impl<E: Engine> Partitioned<E> {
    /// Proposes a close to every group this replica leads whose revision is behind the
    /// highest of this member's groups.
    pub(crate) fn close_revisions(&mut self) {
        let alone = self.data_groups().nth(1).is_none() && !self.placed();
        if alone || self.closing.off {
            return;
        }
        // The meta group's revisions are the directory's own: no read spans it.
        let revisions: Vec<(GroupId, u64, bool)> = self
            .data_groups()
            .map(|(g, e)| {
                let st = e.status();
                (g, st.revision, st.leader == Some(self.id))
            })
            .collect();
        let mut top = revisions.iter().map(|(_, r, _)| *r).max().unwrap_or(0);
        self.closing.local_top = top;
        if self.placed() {
            // A member hosts some groups only: the cluster's highest comes in peers' frames.
            top = top.max(self.closing.peer_top);
        }
        let now = self.ticks;
        let own = &mut self.own;
        self.closing.pending.retain(|_, (id, at)| {
            if now >= *at + CLOSE_RETRY_TICKS {
                // Forgotten, so it does not count against the engine's other own requests.
                own.answered(id);
            }
            own.is_pending(id)
        });
        for (g, revision, leads) in revisions {
            if !leads || revision >= top || self.closing.pending.contains_key(&g) {
                continue;
            }
            let through = top.min(revision + CLOSE_STEP_MAX);
            let request = self.own.request(Op::CloseRevisions { through });
            self.closing.pending.insert(g, (request.id, self.ticks));
            if let Some(group) = self.groups.get_mut(&g) {
                group.submit(request);
            }
        }
    }

    /// A frame with no message, carrying this member's highest revision.
    pub(crate) fn empty_frame<M>(&self) -> crate::GroupMessage<M> {
        crate::GroupMessage {
            parts: Vec::new(),
            relayed: Vec::new(),
            top: self.closing.local_top,
        }
    }

    /// The highest revision of this member's groups: one every group closes within a round.
    pub(crate) fn highest_revision(&self) -> u64 {
        let revisions = self.data_groups().map(|(_, e)| e.status().revision);
        revisions.max().unwrap_or(0)
    }

    /// Own requests in flight that are closes (other own work is bounded apart from them).
    pub(crate) fn closes_in_flight(&self) -> usize {
        let own = &self.own;
        self.closing
            .pending
            .values()
            .filter(|(id, _)| own.is_pending(id))
            .count()
    }
}
