//! Partitioned mode: many consensus groups behind one [`Engine`].
//!
//! The keyspace is split into contiguous ranges ([`layout::Layout`]), each replicated by its
//! own instance of a log engine (a *group*: `Replica<OmniPaxos>`, `Replica<Vr>`, …). Every
//! member hosts every group, and [`Partitioned`] multiplexes them behind the ordinary engine
//! interface, which is what makes a node host many groups *cheaply*:
//!
//! * **One engine thread.** The node runtime drives one engine, as always; a group is a value
//!   inside it, not a thread.
//! * **One connection per peer pair.** A message is a [`GroupMessage`]: everything one batch
//!   sends one peer, each group's messages tagged with the group id, on the node's one
//!   transport.
//! * **One log, one fsync.** A record is a [`GroupRecord`]: the groups' records of a batch
//!   are tagged and persisted together, so one fsync commits every group's batch.
//!   *Persist-before-send* holds for all of them at once: each group's outputs are taken
//!   apart ([`synod_core::Ready::into_parts`]) and put back into one [`Ready`], whose
//!   records must be durable before any group's messages or replies can leave.
//! * **Checkpoints cover every group.** Storage drops every record before a checkpoint, so a
//!   checkpoint here must subsume *all* groups' earlier records: when any group checkpoints,
//!   every other group is made to checkpoint in the same batch
//!   ([`Engine::checkpoint_full`]) and the node-wide checkpoint record bundles them all. If a
//!   group cannot, the batch's checkpoints are written as ordinary tagged records and storage
//!   keeps the log (correct, just not compacted this time).
//! * **Leaders spread.** Group `g` prefers member `g mod n` (sorted ids) as its leader: that
//!   member gets a higher election priority in the group, and a leader of a group `g > 0`
//!   that is not the preferred one hands leadership over ([`Engine::transfer_leadership`]),
//!   retrying with a growing pause while the preferred member cannot take it. Group 0's
//!   leader is the cluster's leader as etcd's API reports it: `move-leader` moves it, and it
//!   stays where it is put.
//!
//! **Routing** ([`layout::Layout::route`]): a single-key request goes to its key's group; a
//! range read over several groups is split into one clamped read per group and the answers
//! merged in key order ([`synod_core::kv::merge_ranges`]); a write or transaction whose keys
//! span groups is refused with an error naming the groups (no cross-group atomicity yet).
//!
//! **Revisions are per group.** Each group is a full KV store with its own revision counter:
//! a key's `mod_revision`, and a response's header revision, are those of the key's group. So
//! compare-by-revision inside a (single-group) transaction means what it means in etcd, but
//! there is no store-wide revision: the engine reports no `revisions` capability, and the
//! APIs refuse watches, reads at past revisions and compaction. Each group's leader bounds
//! the group's history itself ([`HISTORY_REVISIONS`]). Leases are refused too (a
//! lease would have to span groups). What a spanning range read returns is each group's
//! linearizable read, not one snapshot of every group.

pub mod layout;

use layout::{Layout, Route};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use synod_core::kv::{RangeRequest, Response, ResponseBody, merge_ranges};
use synod_core::protocol::LeaderTransferError;
use synod_core::{
    Capabilities, ClientReply, ClientRequest, DurableRecord, Engine, EngineConfig, EngineError,
    EngineStatus, GroupStatus, NodeId, PlantedBug, Ready, RequestId,
};

/// What one batch sends one peer: the messages of every group, each tagged with its group,
/// in the order each group emitted them. One frame per peer per batch instead of one per group
/// and message: with many groups the per-message costs (framing, decoding, one engine input
/// each) would otherwise grow with the number of groups.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupMessage<M> {
    pub parts: Vec<(u32, M)>,
}

/// A durable record of the partitioned engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GroupRecord<R> {
    /// One group's record.
    Group(u32, R),
    /// A checkpoint of every group, taken in one batch: subsumes all earlier records.
    Checkpoint(Vec<(u32, R)>),
}

impl<R: DurableRecord> DurableRecord for GroupRecord<R> {
    fn is_checkpoint(&self) -> bool {
        matches!(self, GroupRecord::Checkpoint(_))
    }
}

/// How often (in election timeouts) a leader checks whether its group's preferred member
/// should lead instead.
const BALANCE_EVERY_ETS: u64 = 1;
/// First pause (in election timeouts) after handing a group to its preferred member;
/// doubles while the hand-off does not stick, up to [`BALANCE_PAUSE_MAX_ETS`].
const BALANCE_PAUSE_MIN_ETS: u64 = 20;
const BALANCE_PAUSE_MAX_ETS: u64 = 640;

/// Revisions of history the groups keep between them (each its share, at least
/// [`HISTORY_REVISIONS_MIN`]): a group's leader compacts below its revision minus its share
/// once it is a tenth further on. The same total as an unpartitioned cluster's default
/// retention, which compacts through the node's policy — that policy speaks store-wide
/// revisions, which a partitioned cluster has not. Without it every put would keep its old
/// value forever and memory would only grow.
pub const HISTORY_REVISIONS: u64 = 10_000;
pub const HISTORY_REVISIONS_MIN: u64 = 1_000;
/// How often (in ticks) a leader looks at its groups' history.
const COMPACT_EVERY_TICKS: u64 = 100;
/// Sequence numbers of the engine's own compaction requests (client `ClientId::NONE`, no
/// session) start here, far above any a client would use with that id.
const OWN_SEQ_BASE: u64 = 1 << 62;

/// Many groups of engine `E` as one engine. See the module docs.
pub struct Partitioned<E: Engine> {
    id: NodeId,
    layout: Layout,
    groups: Vec<E>,
    /// Where each group's leader should be.
    preferred: Vec<NodeId>,
    /// Range reads split over several groups, waiting for their parts.
    gathers: BTreeMap<RequestId, Gather>,
    /// Replies decided before any group saw the request (refusals).
    refused: Vec<ClientReply>,
    ticks: u64,
    election_timeout_ticks: u64,
    /// Per group: the tick before which no hand-off is tried, and the next pause.
    balance: Vec<(u64, u64)>,
    /// Planted bug `PartitionCheckpointSkipsGroups`.
    bug_skip_groups: bool,
    /// This engine's own compaction requests still unanswered; their replies are swallowed.
    own: std::collections::BTreeSet<RequestId>,
    next_own_seq: u64,
}

/// One split range read: its parts' groups and answers, in key order.
struct Gather {
    request: RangeRequest,
    groups: Vec<usize>,
    answers: Vec<Option<Result<Response, EngineError>>>,
}

impl<E: Engine> Partitioned<E> {
    /// The groups' engines, in key order (for the simulator's per-group reports).
    pub fn groups(&self) -> &[E] {
        &self.groups
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn group_config(base: &EngineConfig, g: usize, preferred: NodeId) -> EngineConfig {
        let mut c = base.clone();
        c.split_keys.clear();
        let mix = (g as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        c.seed = base.seed ^ mix;
        // Still differs on every boot (VR's recovery nonce), now also per group.
        c.boot_nonce = base.boot_nonce ^ mix.rotate_left(29);
        if preferred == base.id {
            c.priority = base.priority + 1;
        }
        c
    }

    fn preferred_leaders(config: &EngineConfig, groups: usize) -> Vec<NodeId> {
        let mut members = config.members.clone();
        members.sort_unstable();
        (0..groups)
            .map(|g| {
                members
                    .get(g % members.len().max(1))
                    .copied()
                    .unwrap_or(config.id)
            })
            .collect()
    }

    /// Hands a group this replica leads to its preferred member, now and then. Group 0 is
    /// left alone: its leader is the one etcd's API reports and `move-leader` moves, and an
    /// operator's choice must stick.
    fn balance_leaders(&mut self) {
        for g in 1..self.groups.len() {
            let want = self.preferred[g];
            let (not_before, pause) = self.balance[g];
            let st = self.groups[g].status();
            if st.leader == Some(want) {
                self.balance[g].1 = BALANCE_PAUSE_MIN_ETS * self.election_timeout_ticks;
                continue;
            }
            let eligible =
                st.configuration.voters().contains(&want) || st.configuration.voters().is_empty();
            if st.leader != Some(self.id) || want == self.id || !eligible {
                continue;
            }
            if self.ticks < not_before {
                continue;
            }
            if self.groups[g].transfer_leadership(Some(want)).is_ok() {
                let max = BALANCE_PAUSE_MAX_ETS * self.election_timeout_ticks;
                self.balance[g] = (self.ticks + pause, (pause * 2).min(max));
            }
        }
    }

    /// Bounds each group's history: a leader proposes a compaction of a group it leads once
    /// the group holds a tenth more than its share of [`HISTORY_REVISIONS`].
    fn compact_histories(&mut self) {
        for g in 0..self.groups.len() {
            let keep = (HISTORY_REVISIONS / self.groups.len() as u64).max(HISTORY_REVISIONS_MIN);
            let st = self.groups[g].status();
            if st.leader != Some(self.id)
                || st.revision < st.compact_revision + keep + keep / 10
                || self.own.len() >= self.groups.len()
            {
                continue;
            }
            let id = RequestId {
                client: synod_core::ClientId::NONE,
                seq: self.next_own_seq,
            };
            self.next_own_seq += 1;
            self.own.insert(id);
            self.groups[g].submit(ClientRequest {
                id,
                first_unacked: 0,
                op: synod_core::kv::Op::Compact(synod_core::kv::CompactRequest {
                    revision: st.revision - keep,
                    physical: false,
                }),
                consistency: synod_core::Consistency::Linearizable,
            });
        }
    }

    /// Collects the answer of one group to a split read; the merged reply once all are in.
    fn gather(&mut self, g: usize, reply: ClientReply) -> Option<ClientReply> {
        // The answer to our own compaction: nobody waits for it, and a failed one is simply
        // proposed again later.
        if self.own.remove(&reply.id) {
            return None;
        }
        let Some(gather) = self.gathers.get_mut(&reply.id) else {
            return Some(reply);
        };
        let Some(slot) = gather.groups.iter().position(|&x| x == g) else {
            // Not one of this read's parts: someone else's request with the same id.
            return Some(reply);
        };
        gather.answers[slot] = Some(reply.result);
        if gather.answers.iter().any(Option::is_none) {
            return None;
        }
        let gather = self.gathers.remove(&reply.id)?;
        Some(ClientReply {
            id: reply.id,
            result: merge_answers(gather),
        })
    }

    /// The records of one batch: one node-wide checkpoint if every group has one in it (or
    /// was made to), else every record tagged with its group.
    fn batch_records(&mut self, parts: &mut [Parts<E>]) -> Vec<GroupRecord<E::Record>> {
        let has_cp = |recs: &[E::Record]| recs.iter().any(DurableRecord::is_checkpoint);
        if parts.iter().any(|p| has_cp(&p.1)) && !self.bug_skip_groups {
            for (g, p) in parts.iter_mut().enumerate() {
                if !has_cp(&p.1) && self.groups[g].checkpoint_full() {
                    let (early, records, messages, replies) = self.groups[g].ready().into_parts();
                    // After this batch's earlier messages, as the group emitted them; sent
                    // only once the records are durable, which is always safe.
                    p.2.extend(early);
                    p.1.extend(records);
                    p.2.extend(messages);
                    p.3.extend(replies);
                }
            }
        }
        let bundle = parts.iter().all(|p| has_cp(&p.1))
            || (self.bug_skip_groups && parts.iter().any(|p| has_cp(&p.1)));
        let mut out = Vec::new();
        let mut checkpoints = Vec::new();
        for (g, p) in parts.iter_mut().enumerate() {
            let records = std::mem::take(&mut p.1);
            let last_cp = records.iter().rposition(DurableRecord::is_checkpoint);
            for (i, r) in records.into_iter().enumerate() {
                match last_cp {
                    // Subsumed by the group's checkpoint in the same batch.
                    Some(c) if bundle && i < c => {}
                    Some(c) if bundle && i == c => checkpoints.push((g as u32, r)),
                    _ => out.push(GroupRecord::Group(g as u32, r)),
                }
            }
        }
        if !checkpoints.is_empty() {
            out.insert(0, GroupRecord::Checkpoint(checkpoints));
        }
        out
    }
}

type Parts<E> = (
    Vec<(NodeId, <E as Engine>::Message)>,
    Vec<<E as Engine>::Record>,
    Vec<(NodeId, <E as Engine>::Message)>,
    Vec<ClientReply>,
);

/// The reply to a split read: the first error in key order, or the parts merged.
fn merge_answers(gather: Gather) -> Result<Response, EngineError> {
    let mut revision = 0;
    let mut parts = Vec::with_capacity(gather.answers.len());
    for answer in gather.answers.into_iter().flatten() {
        let response = answer?;
        revision = revision.max(response.revision);
        match response.body {
            ResponseBody::Range(r) => parts.push(r),
            other => {
                return Err(EngineError::InvalidRequest(format!(
                    "a range part was answered with {other:?}"
                )));
            }
        }
    }
    Ok(Response {
        revision,
        body: ResponseBody::Range(merge_ranges(parts, &gather.request)),
    })
}

/// Gathers the groups' messages into one [`GroupMessage`] per destination.
fn by_peer<M>(per_group: Vec<Vec<(NodeId, M)>>) -> Vec<(NodeId, GroupMessage<M>)> {
    let mut out: BTreeMap<NodeId, Vec<(u32, M)>> = BTreeMap::new();
    for (g, msgs) in per_group.into_iter().enumerate() {
        for (to, m) in msgs {
            out.entry(to).or_default().push((g as u32, m));
        }
    }
    out.into_iter()
        .map(|(to, parts)| (to, GroupMessage { parts }))
        .collect()
}

impl<E: Engine> Engine for Partitioned<E> {
    type Message = GroupMessage<E::Message>;
    type Record = GroupRecord<E::Record>;
    const NAME: &'static str = E::NAME;
    const NODE_SESSIONS: bool = E::NODE_SESSIONS;

    fn capabilities() -> Capabilities {
        let c = E::capabilities();
        Capabilities {
            ranges: c.ranges,
            transactions: c.transactions,
            revisions: false,
            leases: false,
        }
    }

    fn recover(config: EngineConfig, records: Vec<Self::Record>) -> Result<Self, String> {
        // The planted misroute is one member's: were all wrong the same way, keys would
        // still have one owner each.
        let first_member = config.members.iter().min() == Some(&config.id);
        let layout = Layout::new(config.split_keys.clone())?.with_planted_misroute(
            first_member && config.bug(PlantedBug::PartitionBoundaryMisroute),
        );
        let n = layout.groups();
        let mut per_group: Vec<Vec<E::Record>> = (0..n).map(|_| Vec::new()).collect();
        let mut place = |g: u32, r: E::Record| -> Result<(), String> {
            per_group
                .get_mut(g as usize)
                .ok_or_else(|| {
                    format!(
                        "the log holds records of group {g} but the layout has {n} groups: \
                         the split keys changed"
                    )
                })
                .map(|v| v.push(r))
        };
        for r in records {
            match r {
                GroupRecord::Group(g, r) => place(g, r)?,
                GroupRecord::Checkpoint(list) => {
                    for (g, r) in list {
                        place(g, r)?;
                    }
                }
            }
        }
        let preferred = Self::preferred_leaders(&config, n);
        let groups = per_group
            .into_iter()
            .enumerate()
            .map(|(g, recs)| {
                E::recover(Self::group_config(&config, g, preferred[g]), recs)
                    .map_err(|e| format!("group {g}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let et = config.election_timeout_ticks.max(1);
        Ok(Partitioned {
            id: config.id,
            layout,
            groups,
            preferred,
            gathers: BTreeMap::new(),
            refused: Vec::new(),
            ticks: 0,
            election_timeout_ticks: et,
            balance: vec![(0, BALANCE_PAUSE_MIN_ETS * et); n],
            bug_skip_groups: config.bug(PlantedBug::PartitionCheckpointSkipsGroups),
            own: std::collections::BTreeSet::new(),
            next_own_seq: OWN_SEQ_BASE,
        })
    }

    fn submit(&mut self, request: ClientRequest) {
        match self.layout.route(&request.op) {
            Route::One(g) => self.groups[g].submit(request),
            Route::Refuse(e) => self.refused.push(ClientReply {
                id: request.id,
                result: Err(e),
            }),
            Route::Split(parts) => {
                // A retry of a read still being gathered: the pending one answers it.
                if self.gathers.contains_key(&request.id) {
                    return;
                }
                let synod_core::kv::Op::Range(range) = &request.op else {
                    unreachable!("only range reads are split");
                };
                let gather = Gather {
                    request: range.clone(),
                    groups: parts.iter().map(|(g, _)| *g).collect(),
                    answers: parts.iter().map(|_| None).collect(),
                };
                self.gathers.insert(request.id, gather);
                for (g, op) in parts {
                    self.groups[g].submit(ClientRequest {
                        op,
                        ..request.clone()
                    });
                }
            }
        }
    }

    fn receive(&mut self, from: NodeId, message: Self::Message) {
        for (g, m) in message.parts {
            // A group this layout does not have: a peer with other split keys, which the
            // cluster identity should already have kept out. Dropped like a garbled message.
            if let Some(group) = self.groups.get_mut(g as usize) {
                group.receive(from, m);
            }
        }
    }

    fn tick(&mut self) {
        for g in &mut self.groups {
            g.tick();
        }
        self.ticks += 1;
        if self.groups.len() > 1
            && self
                .ticks
                .is_multiple_of(BALANCE_EVERY_ETS * self.election_timeout_ticks)
        {
            self.balance_leaders();
        }
        if self.ticks.is_multiple_of(COMPACT_EVERY_TICKS) {
            self.compact_histories();
        }
    }

    fn ready(&mut self) -> Ready<Self::Message, Self::Record> {
        let mut parts: Vec<Parts<E>> = self
            .groups
            .iter_mut()
            .map(|g| g.ready().into_parts())
            .collect();
        let records = self.batch_records(&mut parts);
        let mut early = Vec::with_capacity(parts.len());
        let mut messages = Vec::with_capacity(parts.len());
        let mut replies = std::mem::take(&mut self.refused);
        for (g, (e, _, m, r)) in parts.into_iter().enumerate() {
            early.push(e);
            messages.push(m);
            for reply in r {
                replies.extend(self.gather(g, reply));
            }
        }
        Ready::new(records, by_peer(messages), replies).with_early(by_peer(early))
    }

    fn status(&self) -> EngineStatus {
        let all: Vec<EngineStatus> = self.groups.iter().map(Engine::status).collect();
        let first = all.first().cloned().unwrap_or_default();
        let groups = all
            .iter()
            .enumerate()
            .map(|(g, s)| {
                let (start, end) = self.layout.bounds(g);
                GroupStatus {
                    group: g as u32,
                    start,
                    end,
                    leader: s.leader,
                    preferred_leader: self.preferred.get(g).copied(),
                    term: s.term,
                    applied_index: s.applied_index,
                    applied_digest: s.applied_digest,
                    revision: s.revision,
                    keys: s.keys,
                    role: s.role.clone(),
                }
            })
            .collect();
        let sum = |f: fn(&EngineStatus) -> u64| all.iter().map(f).sum::<u64>();
        EngineStatus {
            decided_index: sum(|s| s.decided_index),
            applied_index: sum(|s| s.applied_index),
            revision: all.iter().map(|s| s.revision).max().unwrap_or(0),
            compact_revision: 0,
            // Per group (in `groups`): a sum of indexes has no common state to digest.
            applied_digest: None,
            state_digest: None,
            pending_requests: all.iter().map(|s| s.pending_requests).sum(),
            keys: sum(|s| s.keys),
            bytes_in_use: all.iter().map(|s| s.bytes_in_use).sum(),
            leases: 0,
            fast_path_commits: sum(|s| s.fast_path_commits),
            slow_path_commits: sum(|s| s.slow_path_commits),
            groups,
            // A repair anywhere is the member's: the runtime logs it and health reports it.
            role: if all.iter().any(|s| s.role == "repairing") {
                "repairing".into()
            } else {
                first.role.clone()
            },
            // Leader, term, members and auth: the first group's, which holds the auth state
            // and answers for the cluster as a whole.
            ..first
        }
    }

    fn transfer_leadership(&mut self, to: Option<NodeId>) -> Result<NodeId, LeaderTransferError> {
        self.groups
            .first_mut()
            .map_or(Err(LeaderTransferError::NotLeader { leader: None }), |g| {
                g.transfer_leadership(to)
            })
    }

    fn checkpoint_now(&mut self) -> bool {
        let mut any = false;
        for g in &mut self.groups {
            any |= g.checkpoint_now();
        }
        any
    }

    fn hash_kv(&self, revision: u64) -> Result<synod_core::kv::KvHash, EngineError> {
        if revision != 0 {
            return Err(EngineError::Unsupported {
                engine: "partitioned".into(),
                what: "HashKV at a revision (revisions are per group)".into(),
            });
        }
        let mut hash = 0x811c_9dc5_u32;
        let mut top = 0;
        for g in &self.groups {
            let h = g.hash_kv(0)?;
            top = top.max(h.revision);
            for b in h
                .hash
                .to_le_bytes()
                .into_iter()
                .chain(h.revision.to_le_bytes())
            {
                hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
        }
        Ok(synod_core::kv::KvHash {
            hash,
            revision: top,
            compact_revision: 0,
        })
    }
}

#[cfg(test)]
mod tests;
