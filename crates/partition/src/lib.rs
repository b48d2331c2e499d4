//! Partitioned mode: many consensus groups behind one [`Engine`].
//!
//! The keyspace is split into contiguous ranges ([`layout::Layout`]), each replicated by its
//! own instance of a log engine (a *group*: `Replica<OmniPaxos>`, `Replica<Vr>`, …). Every
//! member hosts every group, and [`Partitioned`] multiplexes them behind the ordinary engine
//! interface, which is what makes a node host many groups *cheaply*:
//!
//! * **A small pool of engine threads, not a thread per group.** The node runtime drives one
//!   engine, as always; a group is a value inside it. A batch's groups are worked on at once
//!   by `engine_threads` threads (`pool.rs`: each group moved to a thread and back, results in
//!   group order), so what the engine emits does not depend on the threads.
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
//! * **Leaders spread** (`leaders.rs`). Every member plans, from the groups' hosts as it knows
//!   them (unplaced: every voter), which member should lead each group after the first —
//!   group `g` at member `g mod n` of its hosts (sorted ids) to start with — so that no member
//!   leads two groups more than another host of one of its groups (the first group's leader
//!   counts). A preferred member gets a higher election priority in the group
//!   at its start, and a leader that is not the preferred one hands leadership over
//!   ([`Engine::transfer_leadership`]), retrying with a growing pause while the preferred
//!   member cannot take it. The first group's leader is the cluster's leader as etcd's API
//!   reports it: `move-leader` moves it, and it stays where it is put.
//!
//! **Routing** ([`layout::Layout::route`]): a single-key request goes to its key's group; a
//! range read over several groups is split into one clamped read per group and the answers
//! merged in key order ([`synod_core::kv::merge_ranges`]); a delete over several groups is one
//! clamped delete per group, answered together (`deletes.rs`, not atomic across groups); a
//! transaction whose keys span groups is refused with an error naming the groups.
//!
//! **Splits at run time.** A split is a command (`Op::Split`) decided in the log of the group
//! that owns the split key. Applying it cuts the group's state in two (the replica layer):
//! the group keeps the keys below, and every member that applies it starts the new group from
//! the upper half — a fresh protocol instance whose log begins at the split's index, with the
//! same members, the client table and the origin window copied, under an id derived from the
//! parent's and the split's ([`layout::child_id`]). A member that skipped the split (it
//! installed a later snapshot of the parent) sees the split in the parent's state and starts
//! the new group without state, to be sent a snapshot. The layout is this engine's routing
//! cache, persisted with the groups' records. A request routed by a layout from before a
//! split is refused by the old group where it is applied (or served, for a read) with the
//! retryable `WrongGroup` — definitely not applied — so it is answered exactly once or
//! retried by the caller; the node runtime retries it on the new layout.
//!
//! **Automatic changes** (`auto.rs`): splits by size or load, and merges of small quiet ranges
//! an automatic split made — the same commands, proposed by the group's leader here.
//!
//! **Revisions are per group, kept together.** Each group is a full KV store with its own
//! revision counter: a key's `mod_revision` is its group's. So compare-by-revision inside a
//! (single-group) transaction means what it means in etcd. The groups close each other's
//! revisions (`close.rs`), so revision R is one point in every group's history: a range read
//! over several groups is every group at one revision, the reply's (`gather.rs`), a
//! compaction reaches every group (`compact.rs`), and the node's watches over several groups
//! merge the groups' streams (`watch.rs` feeds them), following keys through splits and
//! merges. Each group's leader bounds the group's history itself ([`HISTORY_REVISIONS`]).
//!
//! **Backups and hashes** (`backup.rs`): a backup holds every group's image, in key order;
//! Hash and HashKV combine the groups' own.
//!
//! **Leases** (`leases.rs`): every group keeps a copy of every lease, with its own keys
//! attached; lease requests are fanned out to every group and answered once all answered.
//!
//! **Membership** (`members.rs`): an operator's change is decided in the first group, whose
//! configuration is the cluster's; every other group's leader brings its group to it through
//! the group's own log, and the answer waits until every group here has followed.
//!
//! **The range directory** (`directory.rs`, opt-in): one more group on every member, outside
//! the layout, whose store maps each range to its group, recorded by the groups' leaders.

mod auto;
mod backup;
mod close;
mod compact;
mod deletes;
mod directory;
mod gather;
pub mod layout;
mod leaders;
mod learned;
mod leases;
mod members;
mod moves;
mod placement;
mod pool;
mod rebalance;
mod targets;
mod watch;

pub use backup::{GroupsImage, assemble as assemble_backup, combine_group_hashes};
pub use directory::META_GROUP;
use layout::{CHILD_ID_BASE, GroupId, Layout, Route, child_id};
pub use leaders::{leaders_uneven, plan_leaders};
pub use learned::SplitNotice;
pub use placement::{Relayed, hosts_at};
pub use rebalance::plan_move;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use synod_core::kv::{AbsorbMark, KeyRange, Response, ResponseBody, RevisionEvents, SplitMark};
use synod_core::membership::MemberChange;
use synod_core::protocol::LeaderTransferError;
use synod_core::{
    Capabilities, ClientReply, ClientRequest, DurableRecord, Engine, EngineConfig, EngineError,
    EngineStatus, GroupEvents, GroupFailure, GroupStatus, NodeId, PlantedBug, Ready, RequestId,
};

/// What one batch sends one peer: the messages of every group, each tagged with its group,
/// in the order each group emitted them. One frame per peer per batch instead of one per group
/// and message: with many groups the per-message costs (framing, decoding, one engine input
/// each) would otherwise grow with the number of groups.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupMessage<M> {
    pub parts: Vec<(GroupId, M)>,
    /// Requests relayed to a member hosting their group, and their answers (`placement.rs`).
    pub relayed: Vec<Relayed>,
    /// The highest revision of the sender's groups (closes, when groups are placed).
    pub top: u64,
}

/// A durable record of the partitioned engine. (Group ids were `u32` before runtime splits;
/// postcard writes both as the same varint, so older logs decode.)
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GroupRecord<R> {
    /// One group's record.
    Group(GroupId, R),
    /// A checkpoint of every group, taken in one batch, in the configured layout: subsumes
    /// all earlier records.
    Checkpoint(Vec<(GroupId, R)>),
    /// The layout changed (a split): each group's first key and id, in key order.
    Layout(Vec<(synod_core::kv::Key, GroupId)>),
    /// A checkpoint of every group with the layout they form: subsumes all earlier records.
    CheckpointAt {
        layout: Vec<(synod_core::kv::Key, GroupId)>,
        groups: Vec<(GroupId, R)>,
    },
    /// Every group absorbed by another so far (a merge): never started again, whatever
    /// records or split marks name it. Written whenever the set grows, and after every
    /// node-wide checkpoint (which drops the earlier ones).
    Retired(Vec<GroupId>),
    /// Placement: the groups this member left (a move took their replica elsewhere), not to
    /// be started again from their records here; the whole set, written whenever it changes
    /// and after every node-wide checkpoint (`moves.rs`).
    MovedAway(Vec<GroupId>),
    /// Placement: per group this member left, the configuration version it left at — a
    /// replica that joins the group again takes no state of that version or older (`moves.rs`:
    /// a stale member's snapshot from its earlier stay would make it an amnesic voter of an old
    /// configuration). The whole set, written like [`GroupRecord::MovedAway`].
    LeftAt(Vec<(GroupId, u64)>),
    /// Placement: the groups whose replica here joined without state (a move's newcomer, or a
    /// group split off before this member lost its storage) and has not had its first state
    /// yet, each with the configuration version at or below which it refuses a state: after a
    /// restart it is still a newcomer — a first state listing it as a voter is of a stay it
    /// forgot (`moves.rs`) — and still given up if none comes. The whole set, written like
    /// [`GroupRecord::MovedAway`]. (A binary from before it cannot read a log holding one.)
    Joining(Vec<(GroupId, u64)>),
}

impl<R: DurableRecord> DurableRecord for GroupRecord<R> {
    fn is_checkpoint(&self) -> bool {
        matches!(
            self,
            GroupRecord::Checkpoint(_) | GroupRecord::CheckpointAt { .. }
        )
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
/// Most groups one partitioned engine runs (each costs memory and heartbeats even idle; see
/// docs/partitioning.md): splits beyond are refused.
pub const GROUPS_MAX: usize = 64;

/// Sequence numbers of the engine's own compaction requests (client `ClientId::NONE`, no
/// session) start here, far above any a client would use with that id.
const OWN_SEQ_BASE: u64 = synod_core::ids::ENGINE_OWN_SEQ_BASE;

/// Many groups of engine `E` as one engine. See the module docs.
pub struct Partitioned<E: Engine> {
    id: NodeId,
    /// The node's engine config, which every group's is derived from.
    base: EngineConfig,
    /// The configured layout: the ranges the configured groups' states start from.
    configured: Layout,
    layout: Layout,
    groups: BTreeMap<GroupId, E>,
    /// Range reads split over several groups, waiting for their parts (`gather.rs`).
    gathers: gather::Gathers,
    /// Deletes over several groups, waiting for their parts (`deletes.rs`).
    deletes: deletes::SplitDeletes,
    /// Replies decided before any group saw the request (refusals).
    refused: Vec<ClientReply>,
    ticks: u64,
    election_timeout_ticks: u64,
    /// Per group: the tick before which no hand-off is tried, the next pause, and the member
    /// they are for (`leaders.rs`).
    balance: BTreeMap<GroupId, (u64, u64, NodeId)>,
    /// Planted bug `PartitionCheckpointSkipsGroups`.
    bug_skip_groups: bool,
    /// This engine's own requests (compactions, automatic splits) still unanswered.
    own: OwnRequests,
    /// Per group: how many of its splits have a group here.
    known_splits: BTreeMap<GroupId, usize>,
    /// First records of groups created since the last `ready`, to persist with its batch.
    created: Vec<(GroupId, E::Record)>,
    /// Split-off groups that did not start here, with the error (a bug: see `start_children`).
    failed: BTreeMap<GroupId, String>,
    layout_changed: bool,
    /// Automatic splits and merges (by size, by load).
    auto: auto::Auto,
    /// Groups absorbed by another (merged away): gone for good.
    retired: std::collections::BTreeSet<GroupId>,
    retired_changed: bool,
    /// Per group: how many of its absorbs this engine has acted on.
    known_absorbs: BTreeMap<GroupId, usize>,
    /// Per frozen group: this replica's absorb of it still unanswered, and the tick before
    /// which it is not made again.
    absorbing: BTreeMap<GroupId, (Option<RequestId>, u64)>,
    /// Lease requests on their way through every group (`leases.rs`).
    leases: leases::LeaseFans,
    /// Every group's revision stream for the watch layer (`watch.rs`).
    watch: watch::WatchFeed,
    /// The threads a batch's groups are worked on with (`pool.rs`).
    pool: pool::Pool<GroupJob<E>, GroupDone<E>>,
    /// Per group: requests and messages it was given since the last batch (how busy it is).
    inputs: BTreeMap<GroupId, u32>,
    /// Per group: the membership change this replica proposed to bring it to the first
    /// group's configuration (`members.rs`), while unanswered.
    following: BTreeMap<GroupId, RequestId>,
    /// Operators' membership changes routed to the first group, until it answers.
    member_requests: BTreeMap<RequestId, MemberChange>,
    /// Their answers, held until every group here followed the change (or the request's
    /// time ran out): acknowledged means every group has it, so the operator may stop a
    /// member it removed.
    held_members: Vec<HeldMember>,
    /// Planted bug `PartitionGroupsKeepRemovedMembers`.
    bug_keep_removed: bool,
    /// Planted bug `PartitionMemberRetryNotHeld`.
    bug_release_already_so: bool,
    /// Revision closes in flight (`close.rs`).
    closing: close::Closing,
    /// This member's records of its groups' ranges in the range directory (`directory.rs`).
    directory: directory::Recording,
    /// Moves recorded in the range directory, followed by each group's leader (`targets.rs`).
    targets: targets::Targets,
    /// Requests relayed to and from members hosting their groups (`placement.rs`).
    relay: placement::Relay,
    /// Moves of placed groups' replicas driven here, and groups joined and left (`moves.rs`).
    moves: moves::Moves,
    /// Placed groups spread evenly over the cluster's voters (`rebalance.rs`).
    rebalance: rebalance::Rebalance,
}

/// An operator's membership change the first group applied, waiting for the other groups.
struct HeldMember {
    reply: ClientReply,
    change: MemberChange,
    /// The first group's configuration after the change.
    after: synod_core::membership::Configuration,
    /// The tick at which it is answered `Timeout` instead (outcome unknown to the caller;
    /// the change itself stands and the groups go on following it).
    until: u64,
}

/// How often (in ticks) a leader brings its groups' members to the first group's.
const FOLLOW_MEMBERS_EVERY_TICKS: u64 = 10;

/// Inputs since the last batch that make a group worth handing to another thread: a group
/// with a heartbeat or two is done before a worker would have woken up.
const POOL_INPUTS_MIN: u32 = 4;

/// What a group is moved to a pool thread for.
#[derive(Clone, Copy)]
enum Work {
    /// Its batch: `ready`, and the splits it applied.
    Ready,
    /// A checkpoint forced by another group's (see `batch_records`).
    Checkpoint,
}

type GroupJob<E> = (GroupId, E, Work);
type GroupDone<E> = (GroupId, E, Option<Parts<E>>, Splits<E>);
/// A group's work's outcome, the group moved back: its batch (if any) and its splits.
type Worked<E> = (GroupId, Option<Parts<E>>, Splits<E>);
type Splits<E> = Vec<(SplitMark, <E as Engine>::Record)>;

/// One group's work, on whichever thread of the pool: touches that group alone.
fn work<E: Engine>((g, mut engine, w): GroupJob<E>) -> GroupDone<E> {
    match w {
        Work::Ready => {
            let parts = engine.ready().into_parts();
            let splits = engine.take_splits();
            (g, engine, Some(parts), splits)
        }
        Work::Checkpoint => {
            let parts = engine
                .checkpoint_full()
                .then(|| engine.ready().into_parts());
            (g, engine, parts, Vec::new())
        }
    }
}

/// What group `g`'s replica here reports of itself (`s`), as a [`GroupStatus`] without the
/// range and the preferred leader, which only the partitioned engine knows.
fn group_status(g: GroupId, s: &EngineStatus) -> GroupStatus {
    GroupStatus {
        group: g,
        leader: s.leader,
        term: s.term,
        applied_index: s.applied_index,
        applied_digest: s.applied_digest,
        revision: s.revision,
        compact_revision: s.compact_revision,
        keys: s.keys,
        role: s.role.clone(),
        voters: s.configuration.voters(),
        learners: s.configuration.learners(),
        ..GroupStatus::default()
    }
}

/// Requests this engine makes itself (client `ClientId::NONE`, no session): nobody waits for
/// their replies, which are swallowed; a failed one is simply made again later.
#[derive(Default)]
struct OwnRequests {
    pending: std::collections::BTreeSet<RequestId>,
    next_seq: u64,
}

impl OwnRequests {
    fn request(&mut self, op: synod_core::kv::Op) -> ClientRequest {
        let id = RequestId {
            client: synod_core::ClientId::NONE,
            seq: OWN_SEQ_BASE + self.next_seq,
        };
        self.next_seq += 1;
        self.pending.insert(id);
        ClientRequest {
            id,
            first_unacked: 0,
            op,
            consistency: synod_core::Consistency::Linearizable,
        }
    }

    fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether `id` was one of ours (and is answered now).
    fn answered(&mut self, id: &RequestId) -> bool {
        self.pending.remove(id)
    }

    fn is_pending(&self, id: &RequestId) -> bool {
        self.pending.contains(id)
    }
}

impl<E: Engine> Partitioned<E> {
    /// The groups' engines, in key order (for the simulator's per-group reports).
    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &E)> + '_ {
        self.layout
            .ids()
            .filter_map(|g| self.groups.get(&g).map(|e| (g, e)))
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn group_config(&self, g: GroupId) -> EngineConfig {
        let base = &self.base;
        let mut c = base.clone();
        c.split_keys.clear();
        c.partition_group = true;
        let mix = g.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        c.seed = base.seed ^ mix;
        // Still differs on every boot (VR's recovery nonce), now also per group.
        c.boot_nonce = base.boot_nonce ^ mix.rotate_left(29);
        if self.placed() {
            // Where the group began: its bootstrap configuration (a replica joining later is
            // told whom to ask instead, `moves.rs`).
            let hosts = self.static_hosts(g);
            c.initial_members.retain(|m| hosts.contains(&m.id));
            c.members = hosts;
        }
        if self.preferred(g) == base.id {
            c.priority = base.priority + 1;
        }
        // Back in a group it left (`moves.rs`): its first state must be from after it left —
        // also when it restarts before that state came. A member still in an old configuration
        // would otherwise send its stale state, and this member, which forgot every vote it
        // cast there, would make up a quorum of that configuration with it.
        c.rejoin_floor = self.moves.left_at.get(&g).copied().unwrap_or(0);
        // A configured group's range as configured (its state's own once it splits).
        c.key_range = match (self.configured.position(g), self.layout.position(g)) {
            (Some(pos), _) => {
                let (start, end) = self.configured.bounds_at(pos);
                KeyRange { start, end }
            }
            // A group split off later: its state holds its range; one restarting without
            // state owns nothing until the state arrives.
            (None, Some(pos)) => KeyRange::none_at(&self.layout.bounds_at(pos).0),
            (None, None) => KeyRange::default(),
        };
        c
    }

    /// The first group and its configuration: the cluster's (`members.rs`).
    pub(crate) fn cluster_configuration(
        &self,
    ) -> Option<(GroupId, synod_core::membership::Configuration)> {
        let first = self.layout.ids().next()?;
        let e = self.groups.get(&first)?;
        Some((first, e.status().configuration))
    }

    /// Group `g`'s rotation among `voters` (`leaders::rotation`), the boot's members if none.
    fn preferred_among(&self, voters: Vec<NodeId>, g: GroupId) -> NodeId {
        let members = match voters.is_empty() {
            true => &self.base.members,
            false => &voters,
        };
        leaders::rotation(members, g).unwrap_or(self.base.id)
    }

    /// Bounds each group's history: a leader proposes a compaction of a group it leads once
    /// the group holds a tenth more than its share of [`HISTORY_REVISIONS`].
    fn compact_histories(&mut self) {
        let n = self.groups.len() as u64;
        let keep = (HISTORY_REVISIONS / n.max(1)).max(HISTORY_REVISIONS_MIN);
        let closes = self.closes_in_flight();
        for (_, group) in self.groups.iter_mut() {
            let st = group.status();
            if st.leader != Some(self.id)
                || st.revision < st.compact_revision + keep + keep / 10
                || (self.own.len() - closes) as u64 >= n
            {
                continue;
            }
            group.submit(self.own.request(synod_core::kv::Op::Compact(
                synod_core::kv::CompactRequest {
                    revision: st.revision - keep,
                    physical: false,
                },
            )));
        }
    }

    /// Brings every group this replica leads to the first group's configuration — the
    /// cluster's, where operators' membership changes are decided — one change at a time,
    /// each through the group's own log (`members.rs`).
    ///
    /// Placed groups (`placement.rs`) keep their own hosts: only the groups on every member
    /// follow — the meta group; their leaders move them off removed members (`moves.rs`).
    fn follow_members(&mut self) {
        let Some((first, target)) = self.cluster_configuration() else {
            return;
        };
        let ids: Vec<GroupId> = self
            .groups
            .keys()
            .copied()
            .filter(|&g| g != first && self.everywhere(g))
            .collect();
        for g in ids {
            if self
                .following
                .get(&g)
                .is_some_and(|id| self.own.is_pending(id))
            {
                continue;
            }
            let Some(group) = self.groups.get_mut(&g) else {
                continue;
            };
            let st = group.status();
            if st.leader != Some(self.id) {
                continue;
            }
            let change = if self.bug_keep_removed {
                members::next_change(
                    &members::keeping(&target, &st.configuration),
                    &st.configuration,
                )
            } else {
                members::next_change(&target, &st.configuration)
            };
            let Some(change) = change else {
                continue;
            };
            // Applied only to the configuration it was computed from: a copy decided late (a
            // change asked again by a later leader) cannot undo what came after it.
            let request = self.own.request(synod_core::kv::Op::MembershipAt {
                version: st.configuration.version,
                change,
            });
            self.following.insert(g, request.id);
            group.submit(request);
        }
    }

    /// The first group's configuration an operator's membership change answered `reply` is
    /// held against until every group here has followed it: the one it made, or — for an
    /// answer that says it is so already ("member ID already exist", "member not found", "can
    /// only promote a learner member": a retry of a change applied before, which the operator
    /// takes as done) — the one now. `None`: answered at once (a refusal, a timeout).
    fn held_against(&self, reply: &ClientReply) -> Option<synod_core::membership::Configuration> {
        use synod_core::membership::{
            ERR_MEMBER_ID_EXISTS, ERR_MEMBER_NOT_FOUND, ERR_MEMBER_NOT_LEARNER,
        };
        match &reply.result {
            Ok(Response {
                body: ResponseBody::Membership(after),
                ..
            }) => Some(after.clone()),
            Err(EngineError::Membership(m))
                if !self.bug_release_already_so
                    && [
                        ERR_MEMBER_ID_EXISTS,
                        ERR_MEMBER_NOT_FOUND,
                        ERR_MEMBER_NOT_LEARNER,
                    ]
                    .contains(&m.as_str()) =>
            {
                self.cluster_configuration().map(|(_, c)| c)
            }
            _ => None,
        }
    }

    /// Every member a placed group lives on, as this member knows: its own groups' members
    /// (learners too), the directory's record of the others. Empty when unplaced.
    fn placed_hosts(&self) -> std::collections::BTreeSet<NodeId> {
        let mut out = std::collections::BTreeSet::new();
        if !self.placed() {
            return out;
        }
        for g in self.layout.ids().filter(|g| !self.everywhere(*g)) {
            match self.groups.get(&g).map(|e| e.status().configuration) {
                Some(c) if !c.members.is_empty() => out.extend(c.ids()),
                _ => {
                    out.extend(self.hosts(g));
                    // A learner a move is adding is about to host it: the removal waits too.
                    out.extend(self.recorded_members(g).map(|(_, l)| l).unwrap_or_default());
                }
            }
        }
        out
    }

    /// Whether group `g` follows the cluster's members: every group unplaced; placed, the
    /// first group and the meta group only (the others live on some members).
    pub(crate) fn everywhere(&self, g: GroupId) -> bool {
        !self.placed() || g == directory::META_GROUP || self.layout.position(g) == Some(0)
    }

    /// The answers to membership changes every group here has followed now, and `Timeout` for
    /// those whose time ran out. A replica without a configuration yet (joining) does not
    /// count.
    fn release_members(&mut self) -> Vec<ClientReply> {
        if self.held_members.is_empty() {
            return Vec::new();
        }
        let configs: Vec<_> = self
            .groups
            .iter()
            .filter(|(g, _)| self.everywhere(**g))
            .map(|(_, e)| e.status().configuration)
            .filter(|c| !c.members.is_empty())
            .collect();
        // Read only for a removal (a look at every placed group).
        let removal = |h: &HeldMember| matches!(h.change, MemberChange::Remove(_));
        let hosting = match self.held_members.iter().any(removal) {
            true => self.placed_hosts(),
            false => Default::default(),
        };
        let ticks = self.ticks;
        let mut out = Vec::new();
        self.held_members.retain(|h| {
            // Placed: a removed member hosts no group any more (moved off it, `moves.rs`), so
            // an operator may stop it once answered — a group that still counted it could be
            // left without a quorum when the next member of it goes.
            let evacuated = match &h.change {
                MemberChange::Remove(id) => !hosting.contains(id),
                _ => true,
            };
            if evacuated
                && configs
                    .iter()
                    .all(|c| members::followed(&h.change, &h.after, c))
            {
                out.push(h.reply.clone());
            } else if ticks >= h.until {
                out.push(ClientReply {
                    id: h.reply.id,
                    result: Err(EngineError::Timeout),
                });
            } else {
                return true;
            }
            false
        });
        out
    }

    /// Sends the parts the lease requests still need; the replies of those now complete.
    fn pump_leases(&mut self) -> Vec<ClientReply> {
        let mut parts = Vec::new();
        let (groups, placed) = (&self.groups, self.placed());
        let replies = self.leases.pump(
            &self.layout,
            self.ticks,
            // Placement: a group hosted elsewhere is asked through a relay.
            |g| placed || groups.contains_key(&g),
            |g, request| parts.push((g, request)),
        );
        for (g, request) in parts {
            if placed && !self.serves(g) {
                self.relay(g, request);
            } else if let Some(group) = self.groups.get_mut(&g) {
                group.submit(request);
            }
        }
        replies
    }

    /// Collects the answer of one group to a split read (or a fanned request's part); the
    /// merged reply once all are in.
    fn gather(&mut self, g: GroupId, reply: ClientReply) -> Option<ClientReply> {
        // The answer to our own compaction: nobody waits for it, and a failed one is simply
        // proposed again later.
        if self.own.answered(&reply.id) {
            self.auto.answered(reply.id, self.ticks);
            let retry_at = self.ticks + self.election_timeout_ticks;
            self.directory.answered(reply.id, retry_at);
            self.targets.answered(reply.id, retry_at);
            for (id, not_before) in self.absorbing.values_mut() {
                if *id == Some(reply.id) {
                    *id = None;
                    *not_before = retry_at;
                }
            }
            return None;
        }
        if let Some(change) = self.member_requests.remove(&reply.id) {
            let Some(after) = self.held_against(&reply) else {
                return Some(reply);
            };
            self.held_members.push(HeldMember {
                after,
                reply,
                change,
                until: self.ticks + self.base.request_timeout_ticks,
            });
            return None;
        }
        let reply = self.leases.answer(g, reply, &self.layout, self.ticks)?;
        // A delete over several groups takes its parts' answers; another group's answer under
        // its id (a group split off one of its parts' groups answering a request it inherited)
        // is not the client's: dropped.
        if self.deletes.contains(&reply.id) {
            return self.deletes.answer(g, reply);
        }
        if !self.gathers.is_part(&reply.id, g) {
            // A request of ours nobody waits for any more (a close forgotten, `close.rs`; a
            // lease fan's part after its fan ended, or answered by a group it was not sent to,
            // `leases.rs`) is nobody's: the node would log it as a reply to a request it never
            // made. (A relay never carries one: `relay` sends it under the member's session.)
            return (!reply.id.is_engine_own()).then_some(reply);
        }
        let highest = match &reply.result {
            // Placement: a member hosts some groups; peers' frames tell of the others.
            Err(EngineError::FutureRevision { .. }) if self.placed() => {
                self.highest_revision().max(self.closing.peer_top)
            }
            Err(EngineError::FutureRevision { .. }) => self.highest_revision(),
            _ => 0,
        };
        let next = self.gathers.answer(g, reply, self.ticks, highest);
        self.submit_parts(next.submit);
        self.refused.extend(next.replies);
        None
    }

    /// Hands the parts of reads and deletes over several groups to their groups.
    fn submit_parts(&mut self, parts: Vec<(GroupId, ClientRequest)>) {
        let placed = self.placed();
        for (g, request) in parts {
            if placed && !self.serves(g) {
                self.relay(g, request);
                continue;
            }
            match self.groups.get_mut(&g) {
                Some(group) => group.submit(request),
                // Merged away since: the read is answered with the retryable `WrongGroup`,
                // and routed again by the new layout.
                None => {
                    let gone = EngineError::WrongGroup {
                        start: Vec::new(),
                        end: format!("group {} is gone", layout::group_name(g)).into(),
                    };
                    let failed = match self.deletes.contains(&request.id) {
                        true => self.deletes.fail(&request.id, g, gone),
                        false => self.gathers.fail(&request.id, g, gone),
                    };
                    self.refused.extend(failed);
                }
            }
        }
    }

    /// Starts the groups split off group `parent` that have none here yet: from the first
    /// record the split left (`records`), or without state when this member did not apply
    /// the split itself. Returns the new groups' ids.
    fn adopt_splits(
        &mut self,
        parent: GroupId,
        records: Vec<(SplitMark, E::Record)>,
    ) -> Vec<GroupId> {
        let Some(group) = self.groups.get(&parent) else {
            return Vec::new();
        };
        let Some(marks) = group.range_state().map(|r| &r.splits) else {
            return Vec::new();
        };
        let known = self.known_splits.get(&parent).copied().unwrap_or(0);
        if marks.len() <= known && records.is_empty() {
            return Vec::new();
        }
        let count = marks.len();
        // The start of each child not here yet and not left by a split applied here: the
        // parent's replica places the split in its own log, which a member of a lost disk
        // needs to tell whether it may have voted in the child before (`split_joiner`).
        let marks: Vec<(SplitMark, Option<Vec<E::Record>>)> = (marks.iter())
            .map(|m| {
                let child = child_id(parent, m);
                let started = self.groups.contains_key(&child) || self.retired.contains(&child);
                let recorded = records.iter().any(|(r, _)| r == m);
                let joiner = (!started && !recorded).then(|| group.split_joiner(Some(m)));
                (m.clone(), joiner.flatten())
            })
            .collect();
        let clocks = match records.is_empty() {
            true => Vec::new(),
            false => group.lease_clocks(),
        };
        self.known_splits.insert(parent, count);
        let made = self.start_children(parent, marks, records);
        for (child, from_records) in &made {
            if let (true, Some(engine)) = (from_records, self.groups.get_mut(child)) {
                engine.inherit_lease_clocks(&clocks);
            }
        }
        made.into_iter().map(|(child, _)| child).collect()
    }

    /// Starts the groups `marks` split off `parent` that are neither here nor retired: from
    /// their first record in `records` if this member applied the split, else from the
    /// mark's joiner records (without state, to be sent a snapshot; `None`: not started).
    /// Returns the new groups' ids, each with whether it started from its first record (with
    /// the split's state, so its parent's clocks).
    fn start_children(
        &mut self,
        parent: GroupId,
        marks: Vec<(SplitMark, Option<Vec<E::Record>>)>,
        mut records: Vec<(SplitMark, E::Record)>,
    ) -> Vec<(GroupId, bool)> {
        let mut made = Vec::new();
        for (mark, joiner) in marks {
            let child = child_id(parent, &mark);
            // Nor one this member moved away from (a move back joins it as any newcomer).
            if self.groups.contains_key(&child)
                || self.retired.contains(&child)
                || self.moves.away.contains(&child)
            {
                continue;
            }
            let (first, from_records) = match records.iter().position(|(m, _)| *m == mark) {
                Some(i) => (vec![records.swap_remove(i).1], true),
                None => match joiner {
                    Some(r) => (r, false),
                    None => continue,
                },
            };
            if self.placed() {
                // On its parent's hosts (`learned.rs`): where the child's configuration begins.
                let hosts = self.hosts(parent);
                self.relay.learned.insert(child, hosts);
            }
            let mut config = self.group_config(child);
            // VR starts a new instance normal in view 0 only on its first boot; a group of a
            // lost disk (no first records) is no first boot: unplaced, its protocol repairs it.
            config.first_boot = !first.is_empty();
            let repairs_guessed = self.base.bug(PlantedBug::PlacedSplitChildRepairsGuessed);
            let joins = first.is_empty() && self.placed() && !repairs_guessed;
            if joins {
                // Placed, that repair would ask the hosts guessed above — the parent's now,
                // not the group's, which either may have left since: a repair asking members
                // that do not host the group never ends (simulator seed 1,926 of `all,storage
                // --replicas 3 --splits --moves`). It joins as a move's newcomer instead: while
                // this member is in the group, the group's leader sends it the state, a first
                // state listing it as a voter makes it a voter that cannot vote (it may have
                // voted there before its loss), and the leader moves the group off it
                // (`moves.rs`); no longer in the group, it gets no state and is given up.
                self.as_newcomer(child, &mut config);
            }
            let floor = config.rejoin_floor;
            // Until its state arrives, a replica started without it owns no key: it must not
            // answer a (serializable) read from its empty store.
            config.key_range = KeyRange::none_at(&mark.at);
            match E::recover(config, first.clone()) {
                Ok(mut engine) => {
                    if self.watch.on {
                        // Its events are collected from its first applied revision on.
                        let _ = engine.take_group_watch_events();
                    }
                    self.groups.insert(child, engine);
                    if joins {
                        self.moves.start_joining(child, self.ticks, floor);
                    }
                    self.failed.remove(&child);
                    self.created.extend(first.into_iter().map(|r| (child, r)));
                    self.layout.split(mark.at.clone(), child);
                    self.layout_changed = true;
                    made.push((child, from_records));
                }
                // Our own record of our own state: a failure is a bug, and a group missing
                // here only costs this member its copy (its peers still hold the quorum). It
                // is not swallowed: the status carries it, so the node logs it and health
                // fails, and the simulator fails the run.
                Err(e) => {
                    self.failed.insert(child, e.to_string());
                }
            }
        }
        made
    }

    /// `w` for each of the groups `ids` that runs here, on the pool's threads: each group is
    /// moved out for its work and back, and the results come in the order of `ids`.
    fn run_groups(&mut self, ids: Vec<GroupId>, w: Work) -> Vec<Worked<E>> {
        // Only groups with work worth a hand-off go to the pool, the busiest first so that
        // dealing them round-robin spreads the work; a forced checkpoint always is.
        let load = |g: &GroupId| match w {
            Work::Ready => self.inputs.get(g).copied().unwrap_or(0),
            Work::Checkpoint => u32::MAX,
        };
        let (mut busy, idle): (Vec<GroupId>, Vec<GroupId>) = ids
            .iter()
            .copied()
            .partition(|g| load(g) >= POOL_INPUTS_MIN);
        busy.sort_by_key(|g| (std::cmp::Reverse(load(g)), *g));
        let (pooled, here) = match busy.len() {
            0 | 1 => (Vec::new(), ids.clone()),
            _ => (busy, idle),
        };
        let take =
            |groups: &mut BTreeMap<GroupId, E>, g: GroupId| groups.remove(&g).map(|e| (g, e, w));
        let jobs: Vec<GroupJob<E>> = pooled
            .into_iter()
            .filter_map(|g| take(&mut self.groups, g))
            .collect();
        let mut done = self.pool.map(jobs);
        done.extend(
            here.into_iter()
                .filter_map(|g| take(&mut self.groups, g))
                .map(work::<E>),
        );
        // In the order of `ids`, whichever way the work was shared out: what the engine does
        // with the results must not depend on the threads.
        let at: BTreeMap<GroupId, usize> = ids.iter().enumerate().map(|(i, g)| (*g, i)).collect();
        done.sort_by_key(|(g, ..)| at.get(g).copied());
        let mut out = Vec::with_capacity(done.len());
        for (g, engine, parts, splits) in done {
            self.groups.insert(g, engine);
            out.push((g, parts, splits));
        }
        out
    }

    /// Asks for a checkpoint at the next batch once the groups together hold
    /// `snapshot_entries` entries applied since their checkpoints (closes and other entries of
    /// the engine's own count too). They share one WAL, so the bound is the member's: a
    /// per-group bound alone would let a member of G groups hold G times the log (in memory
    /// and on disk, replayed at every restart) of a one-group member at the same load. The
    /// group holding the most that can checkpoint now takes it (ties: the highest id);
    /// `batch_records` makes every other group join it, which empties the WAL when all can.
    /// No loop: a group asked checkpoints (and then holds nothing), and a group that cannot
    /// (repairing, recovering) holds nothing by `held_entries`, so it never keeps the bound
    /// crossed; one that says no for another reason is passed over.
    fn plan_checkpoint(&mut self) {
        let every = self.base.snapshot_entries;
        if every == 0 || self.groups.values().map(Engine::held_entries).sum::<u64>() < every {
            return;
        }
        let mut by_held: Vec<(u64, GroupId)> = (self.groups.iter())
            .map(|(g, e)| (e.held_entries(), *g))
            .collect();
        by_held.sort_unstable_by(|a, b| b.cmp(a));
        for (_, g) in by_held {
            if self.groups.get_mut(&g).is_some_and(|e| e.checkpoint_now()) {
                return;
            }
        }
    }

    /// The records of one batch: one node-wide checkpoint if every group has one in it (or
    /// was made to), else every record tagged with its group.
    fn batch_records(&mut self, parts: &mut [(GroupId, Parts<E>)]) -> Vec<GroupRecord<E::Record>> {
        let has_cp = |recs: &[E::Record]| recs.iter().any(DurableRecord::is_checkpoint);
        if parts.iter().any(|p| has_cp(&p.1.1)) && !self.bug_skip_groups {
            let lacking: Vec<GroupId> = parts
                .iter()
                .filter(|(_, p)| !has_cp(&p.1))
                .map(|(g, _)| *g)
                .collect();
            for (g, extra, _) in self.run_groups(lacking, Work::Checkpoint) {
                let (Some((early, records, messages, replies)), Some((_, p))) =
                    (extra, parts.iter_mut().find(|(x, _)| *x == g))
                else {
                    continue;
                };
                // After this batch's earlier messages, as the group emitted them; sent
                // only once the records are durable, which is always safe.
                p.0.extend(early);
                p.1.extend(records);
                p.2.extend(messages);
                p.3.extend(replies);
            }
        }
        let bundle = parts.iter().all(|p| has_cp(&p.1.1))
            || (self.bug_skip_groups && parts.iter().any(|p| has_cp(&p.1.1)));
        let mut out = Vec::new();
        let mut checkpoints = Vec::new();
        for (g, p) in parts.iter_mut() {
            let records = std::mem::take(&mut p.1);
            let last_cp = records.iter().rposition(DurableRecord::is_checkpoint);
            for (i, r) in records.into_iter().enumerate() {
                match last_cp {
                    // Subsumed by the group's checkpoint in the same batch.
                    Some(c) if bundle && i < c => {}
                    Some(c) if bundle && i == c => checkpoints.push((*g, r)),
                    _ => out.push(GroupRecord::Group(*g, r)),
                }
            }
        }
        let layout = self.layout.entries().to_vec();
        let checkpointed = !checkpoints.is_empty();
        if checkpointed {
            out.insert(
                0,
                GroupRecord::CheckpointAt {
                    layout,
                    groups: checkpoints,
                },
            );
        } else if self.layout_changed {
            // After the new groups' first records: a layout naming a group whose records
            // did not make it to disk is never read back.
            out.push(GroupRecord::Layout(layout));
        }
        if (checkpointed || self.retired_changed) && !self.retired.is_empty() {
            // After the checkpoint, which drops every record before it.
            out.push(GroupRecord::Retired(self.retired.iter().copied().collect()));
        }
        // The whole set whenever it changed (it also shrinks: a group joined again).
        if (checkpointed && !self.moves.away.is_empty()) || self.moves.away_changed {
            out.push(GroupRecord::MovedAway(
                self.moves.away.iter().copied().collect(),
            ));
        }
        if (checkpointed && !self.moves.left_at.is_empty()) || self.moves.left_at_changed {
            let list = self.moves.left_at.iter().map(|(g, v)| (*g, *v)).collect();
            out.push(GroupRecord::LeftAt(list));
        }
        if (checkpointed && !self.moves.joining.is_empty()) || self.moves.joining_changed {
            let list = (self.moves.joining.iter()).map(|(g, (_, floor))| (*g, *floor));
            out.push(GroupRecord::Joining(list.collect()));
        }
        self.moves.away_changed = false;
        self.moves.left_at_changed = false;
        self.moves.joining_changed = false;
        self.layout_changed = false;
        self.retired_changed = false;
        out
    }

    /// Acts on the absorbs group `g` applied since the last call (or shows in a snapshot):
    /// each absorbed group is retired here — its pending requests answered, its replica
    /// dropped, its range given to the group below. Returns the replies owed.
    fn adopt_merges(&mut self, g: GroupId) -> Vec<(GroupId, ClientReply)> {
        let Some(marks) = self.groups.get(&g).and_then(|e| e.range_state()) else {
            return Vec::new();
        };
        let known = self.known_absorbs.get(&g).copied().unwrap_or(0);
        if marks.absorbed.len() <= known {
            return Vec::new();
        }
        let marks = marks.absorbed[known..].to_vec();
        self.known_absorbs.insert(g, known + marks.len());
        // The absorbed groups' splits are placed in their logs, not in this group's: the
        // joiner is the one for a split this replica cannot place.
        let joiner = self.groups.get(&g).and_then(|e| e.split_joiner(None));
        let mut replies = Vec::new();
        for mark in &marks {
            self.retire_mark(mark, &mut replies);
        }
        // Groups the absorbed ones had split off, which this member never started (it
        // lagged behind the split and the merge): they live on.
        for mark in &marks {
            self.start_orphans(mark, joiner.as_ref());
        }
        replies
    }

    /// Retires the group `mark` names and, first, every group it had absorbed itself.
    fn retire_mark(&mut self, mark: &AbsorbMark, replies: &mut Vec<(GroupId, ClientReply)>) {
        for inner in &mark.absorbed {
            self.retire_mark(inner, replies);
        }
        replies.extend(self.retire(mark.group).into_iter().map(|r| (mark.group, r)));
        self.layout.merge(&mark.at, mark.group);
        self.layout_changed = true;
    }

    /// Starts the children of the groups `mark` retired that are neither here nor retired.
    fn start_orphans(&mut self, mark: &AbsorbMark, joiner: Option<&Vec<E::Record>>) {
        for inner in &mark.absorbed {
            self.start_orphans(inner, joiner);
        }
        // Their own splits, if any by the time their state arrives, are adopted then.
        let marks = (mark.splits.iter())
            .map(|m| (m.clone(), joiner.cloned()))
            .collect();
        self.start_children(mark.group, marks, Vec::new());
    }

    /// Group `gone` was absorbed: never to run here again.
    fn retire(&mut self, gone: GroupId) -> Vec<ClientReply> {
        if self.retired.insert(gone) {
            self.retired_changed = true;
        }
        self.known_splits.remove(&gone);
        self.known_absorbs.remove(&gone);
        self.failed.remove(&gone);
        self.balance.remove(&gone);
        self.absorbing.remove(&gone);
        self.auto.forget(gone);
        let mut engine = self.groups.remove(&gone);
        if let Some(e) = engine.as_mut().filter(|_| self.watch.on) {
            self.watch.retire(gone, e);
        }
        engine.map(|mut e| e.retire()).unwrap_or_default()
    }

    /// On the leader of the group below each frozen group: proposes the absorb of the frozen
    /// group's state, once at a time, again an election timeout after a failed one.
    fn absorb_frozen(&mut self) {
        let frozen: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, e)| e.range_state().is_some_and(|r| r.frozen.is_some()))
            .map(|(g, _)| *g)
            .collect();
        self.absorbing.retain(|g, _| frozen.contains(g));
        for upper in frozen {
            let (pending, not_before) = self.absorbing.get(&upper).copied().unwrap_or((None, 0));
            if pending.is_some() || self.ticks < not_before {
                continue;
            }
            let Some(lower) = self.layout.below(upper) else {
                continue;
            };
            let leads = self
                .groups
                .get(&lower)
                .is_some_and(|e| e.status().leader == Some(self.id));
            if !leads {
                continue;
            }
            let Some(frozen) = self.groups.get(&upper) else {
                continue;
            };
            let (Some(range), Some(image)) = (frozen.range_state(), frozen.merge_image()) else {
                continue;
            };
            let op = synod_core::kv::Op::Absorb(synod_core::kv::AbsorbRequest {
                group: upper,
                start: range.range.start.clone(),
                end: range.range.end.clone(),
                image,
            });
            let request = self.own.request(op);
            self.absorbing.insert(upper, (Some(request.id), 0));
            if let Some(group) = self.groups.get_mut(&lower) {
                group.submit(request);
            }
        }
    }

    /// Starts, at recovery, each group this member has records of (or is placed on), from
    /// them: the layout's groups, and any split-off group whose records made it to disk without
    /// the layout naming it yet. `joining`: the groups that joined without state, with their
    /// rejoin floors ([`GroupRecord::Joining`]).
    fn recover_groups(
        &mut self,
        mut per_group: BTreeMap<GroupId, Vec<E::Record>>,
        joining: &[(GroupId, u64)],
    ) -> Result<(), String> {
        let mut ids: Vec<GroupId> = self
            .layout
            .ids()
            .filter(|g| !self.retired.contains(g))
            .collect();
        ids.extend(
            per_group
                .keys()
                .filter(|g| self.layout.position(**g).is_none()),
        );
        for g in ids {
            let recs = per_group.remove(&g).unwrap_or_default();
            if g >= CHILD_ID_BASE && recs.is_empty() {
                continue; // started again from its parent's split below
            }
            // A member that joined a running cluster hosts no placed group until one moves
            // to it: the placement rule is the cluster's first members'.
            let placed_here = self.static_hosts(g).contains(&self.id)
                && !(self.base.join && self.placed() && self.layout.position(g) != Some(0));
            if self.moves.away.contains(&g) || (recs.is_empty() && !placed_here) {
                continue; // placed on other members (`placement.rs`), or moved there
            }
            let mut engine = E::recover(self.group_config(g), recs)
                .map_err(|e| format!("group {}: {e}", layout::group_name(g)))?;
            let joining = (joining.iter())
                .find(|(j, _)| *j == g)
                .map(|(_, floor)| *floor);
            let resumed = match joining {
                Some(floor) if engine.status().configuration.members.is_empty() => {
                    // Joined without state and restarted before it came: still a newcomer.
                    engine.resume_as_newcomer(floor);
                    Some(floor)
                }
                _ => None,
            };
            let c = engine.status().configuration;
            if self.placed()
                && self.layout.position(g) != Some(0)
                && !c.members.is_empty()
                && !c.contains(self.id)
            {
                // Removed from the group before its departure made it to the log.
                self.moves.away.insert(g);
                self.moves.away_changed = true;
                continue;
            }
            if self.layout.position(g).is_none() {
                match engine.range_state() {
                    Some(r) if !r.range.start.is_empty() => {
                        self.layout.split(r.range.start.clone(), g)
                    }
                    _ => continue,
                }
            }
            self.groups.insert(g, engine);
            if let Some(floor) = resumed {
                self.moves.start_joining(g, 0, floor);
            }
        }
        Ok(())
    }

    /// The groups' records from a log, by group, and the layout last persisted in it.
    #[allow(clippy::type_complexity)]
    fn sort_records(
        records: Vec<GroupRecord<E::Record>>,
        mut layout: Layout,
    ) -> Result<Sorted<E>, String> {
        let mut per_group: BTreeMap<GroupId, Vec<E::Record>> = BTreeMap::new();
        let mut retired = Vec::new();
        let mut away = Vec::new();
        let mut left_at = Vec::new();
        let mut joining = Vec::new();
        for r in records {
            match r {
                GroupRecord::Joining(list) => joining = list,
                GroupRecord::Retired(list) => retired = list,
                GroupRecord::MovedAway(list) => away = list,
                GroupRecord::LeftAt(list) => left_at = list,
                GroupRecord::Group(g, r) => per_group.entry(g).or_default().push(r),
                GroupRecord::Checkpoint(list) => {
                    for (g, r) in list {
                        per_group.entry(g).or_default().push(r);
                    }
                }
                GroupRecord::Layout(entries) => layout = Layout::from_entries(entries)?,
                GroupRecord::CheckpointAt {
                    layout: entries,
                    groups,
                } => {
                    layout = Layout::from_entries(entries)?;
                    for (g, r) in groups {
                        per_group.entry(g).or_default().push(r);
                    }
                }
            }
        }
        for g in retired.iter().chain(&away) {
            per_group.remove(g);
        }
        Ok((per_group, layout, retired, (away, left_at, joining)))
    }
}

/// A log sorted by group: each group's records, the layout, the retired groups, and the groups
/// moved away with the versions this member left groups at, and those still joining.
type Sorted<E> = (
    BTreeMap<GroupId, Vec<<E as Engine>::Record>>,
    Layout,
    Vec<GroupId>,
    (Vec<GroupId>, Vec<(GroupId, u64)>, Vec<(GroupId, u64)>),
);

type Parts<E> = (
    Vec<(NodeId, <E as Engine>::Message)>,
    Vec<<E as Engine>::Record>,
    Vec<(NodeId, <E as Engine>::Message)>,
    Vec<ClientReply>,
);

/// Gathers the groups' messages into one [`GroupMessage`] per destination.
fn by_peer<M>(
    per_group: Vec<(GroupId, Vec<(NodeId, M)>)>,
    top: u64,
) -> Vec<(NodeId, GroupMessage<M>)> {
    let mut out: BTreeMap<NodeId, Vec<(GroupId, M)>> = BTreeMap::new();
    for (g, msgs) in per_group {
        for (to, m) in msgs {
            out.entry(to).or_default().push((g, m));
        }
    }
    out.into_iter()
        .map(|(to, parts)| {
            let relayed = Vec::new();
            (
                to,
                GroupMessage {
                    parts,
                    relayed,
                    top,
                },
            )
        })
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
            // Per group: a watch of a range inside one group (see `take_group_watch_events`).
            watch: c.watch,
            leases: c.leases,
        }
    }

    fn recover(config: EngineConfig, records: Vec<Self::Record>) -> Result<Self, String> {
        // The planted misroute is one member's: were all wrong the same way, keys would
        // still have one owner each.
        let first_member = config.members.iter().min() == Some(&config.id);
        let misroute = first_member && config.bug(PlantedBug::PartitionBoundaryMisroute);
        let configured = Layout::new(config.split_keys.clone())?;
        let (mut per_group, layout, retired, away) =
            Self::sort_records(records, configured.clone())?;
        if let Some(g) = per_group
            .keys()
            .find(|&&g| g < CHILD_ID_BASE && configured.position(g).is_none())
        {
            return Err(format!(
                "the log holds records of group {g} but the layout has {} groups: the split \
                 keys changed",
                configured.groups()
            ));
        }
        let et = config.election_timeout_ticks.max(1);
        let (id, threads, nonce) = (config.id, config.engine_threads, config.boot_nonce);
        let mut p = Partitioned {
            id: config.id,
            bug_skip_groups: config.bug(PlantedBug::PartitionCheckpointSkipsGroups),
            base: config,
            configured,
            layout: layout.with_planted_misroute(misroute),
            groups: BTreeMap::new(),
            gathers: gather::Gathers::default(),
            deletes: deletes::SplitDeletes::default(),
            refused: Vec::new(),
            ticks: 0,
            election_timeout_ticks: et,
            balance: BTreeMap::new(),
            own: OwnRequests::default(),
            known_splits: BTreeMap::new(),
            created: Vec::new(),
            failed: BTreeMap::new(),
            layout_changed: false,
            auto: auto::Auto::default(),
            retired: retired.into_iter().collect(),
            retired_changed: false,
            known_absorbs: BTreeMap::new(),
            absorbing: BTreeMap::new(),
            leases: leases::LeaseFans::default(),
            watch: watch::WatchFeed::default(),
            pool: pool::Pool::new(threads, &format!("synod-groups-{id}"), work::<E>)
                .map_err(|e| format!("cannot start the engine's threads: {e}"))?,
            inputs: BTreeMap::new(),
            following: BTreeMap::new(),
            member_requests: BTreeMap::new(),
            held_members: Vec::new(),
            bug_keep_removed: false,
            bug_release_already_so: false,
            closing: close::Closing::default(),
            directory: directory::Recording::default(),
            targets: targets::Targets::default(),
            relay: placement::Relay::new(nonce),
            moves: moves::Moves::left(away.0, away.1),
            rebalance: rebalance::Rebalance::default(),
        };
        p.bug_keep_removed = p.base.bug(PlantedBug::PartitionGroupsKeepRemovedMembers);
        p.relay.bug_drop_consistency = p.base.bug(PlantedBug::PartitionRelayDropsConsistency);
        p.relay.bug_ignore_notices = p.base.bug(PlantedBug::PlacedSplitNotLearned);
        p.bug_release_already_so = p.base.bug(PlantedBug::PartitionMemberRetryNotHeld);
        p.leases.bug_renew_one_group = p.base.bug(PlantedBug::PartitionLeaseRenewsOneGroup);
        p.leases.bug_compact_one_group = p.base.bug(PlantedBug::PartitionCompactOneGroup);
        p.leases.bug_keep_outgrown_answers =
            p.base.bug(PlantedBug::PartitionKeepAliveOutgrownAnswer);
        p.watch.bug_move_early = p.base.bug(PlantedBug::PartitionWatchMoveEarly);
        p.gathers.bug_unaligned = p.base.bug(PlantedBug::PartitionSpanReadUnaligned);
        p.deletes.bug_early = p.base.bug(PlantedBug::PartitionSplitDeleteAnswersEarly);
        p.directory.bug_skip_children = p.base.bug(PlantedBug::PartitionSplitNeverRecorded);
        p.directory.bugs = directory::Bugs {
            unguarded: p.base.bug(PlantedBug::PartitionDirectoryRecordUnguarded),
            any_generation: p.base.bug(PlantedBug::PartitionDirectoryAnyGeneration),
        };
        // The meta group's records: its replica is started below, outside the layout (and
        // left out, records and all, when the directory is off).
        let meta_records = per_group.remove(&META_GROUP).unwrap_or_default();
        p.recover_groups(per_group, &away.2)?;
        if p.base.range_directory {
            let meta = E::recover(p.group_config(META_GROUP), meta_records)
                .map_err(|e| format!("the range directory's group: {e}"))?;
            p.groups.insert(META_GROUP, meta);
        }
        // Splits replayed above, or known from a parent's state only.
        let mut parents: Vec<GroupId> = p.groups.keys().copied().collect();
        while let Some(g) = parents.pop() {
            let records = p.groups.get_mut(&g).map(E::take_splits).unwrap_or_default();
            parents.extend(p.adopt_splits(g, records));
        }
        // Merges replayed above: nobody waits for the retired groups' replies after a crash.
        let ids: Vec<GroupId> = p.groups.keys().copied().collect();
        for g in ids {
            p.adopt_merges(g);
        }
        Ok(p)
    }

    fn submit(&mut self, request: ClientRequest) {
        let missing = |g: GroupId| ClientReply {
            id: request.id,
            result: Err(EngineError::WrongGroup {
                start: Vec::new(),
                end: format!("group {} not started here yet", layout::group_name(g)).into(),
            }),
        };
        if let Some(full) = self.groups_full(&request.op) {
            self.refused.push(ClientReply {
                id: request.id,
                result: Err(full),
            });
            return;
        }
        if matches!(request.op, synod_core::kv::Op::Move(_)) {
            self.submit_move(request);
            return;
        }
        if self.placed()
            && let Some(e) = self.placement_refusal(&request.op)
        {
            self.refused.push(ClientReply {
                id: request.id,
                result: Err(e),
            });
            return;
        }
        if leases::is_fanned(&request.op) {
            let timeout = self.base.request_timeout_ticks;
            self.leases.start(request, self.ticks, timeout);
            let replies = self.pump_leases();
            self.refused.extend(replies);
            return;
        }
        match self.layout.route(&request.op) {
            Route::One(g) if self.placed() && !self.serves(g) => self.relay(g, request),
            Route::One(g) => match self.groups.get_mut(&g) {
                Some(group) => {
                    if let synod_core::kv::Op::Membership(change) = &request.op {
                        self.member_requests.insert(request.id, change.clone());
                    }
                    if let synod_core::kv::Op::Range(r) = &request.op
                        && self.base.auto_split_reads > 0
                    {
                        self.auto.note_read(g, &r.key);
                    }
                    group.submit(request);
                    *self.inputs.entry(g).or_default() += 1;
                }
                None => self.refused.push(missing(g)),
            },
            Route::Refuse(e) => self.refused.push(ClientReply {
                id: request.id,
                result: Err(e),
            }),
            Route::Split(parts) => {
                // A retry of a read or delete still being gathered: the pending one answers it.
                if self.gathers.contains(&request.id) || self.deletes.contains(&request.id) {
                    return;
                }
                // Placement: parts for groups hosted elsewhere are relayed (`submit_parts`).
                let absent = |g: &GroupId| !self.placed() && !self.groups.contains_key(g);
                if let Some((g, _)) = parts.iter().find(|(g, _)| absent(g)) {
                    self.refused.push(missing(*g));
                    return;
                }
                let until = self.ticks + self.base.request_timeout_ticks;
                if matches!(request.op, synod_core::kv::Op::DeleteRange(_)) {
                    let submit = self.deletes.start(request, parts, until);
                    self.submit_parts(submit);
                    return;
                }
                let next = self.gathers.start(request, parts, until);
                self.submit_parts(next.submit);
            }
        }
    }

    fn receive(&mut self, from: NodeId, message: Self::Message) {
        self.closing.peer_top = self.closing.peer_top.max(message.top);
        for r in message.relayed {
            self.take_relayed(from, r);
        }
        for (g, m) in message.parts {
            // A group not started here: placed, this member may just have been added to it
            // (`moves.rs`). Else split off by a split this member has not applied yet (it will
            // start it then, and the sender repeats itself), or a peer with other split keys,
            // which the cluster identity should already have kept out.
            if !self.groups.contains_key(&g) && self.may_join(g) {
                self.join_group(g);
            }
            if let Some(group) = self.groups.get_mut(&g) {
                group.receive(from, m);
                *self.inputs.entry(g).or_default() += 1;
            }
        }
    }

    fn tick(&mut self) {
        for g in self.groups.values_mut() {
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
        if self.ticks.is_multiple_of(close::CLOSE_EVERY_TICKS) {
            self.close_revisions();
        }
        if self.placed() && self.ticks.is_multiple_of(close::ANNOUNCE_EVERY_TICKS) {
            self.closing.announce = true;
        }
        if self.ticks.is_multiple_of(COMPACT_EVERY_TICKS) {
            self.compact_histories();
        }
        if self.ticks.is_multiple_of(auto::LOOK_EVERY_TICKS) {
            self.look();
        }
        if self.ticks.is_multiple_of(FOLLOW_MEMBERS_EVERY_TICKS) {
            self.follow_members();
            // Recorded moves first: a learner one left is gone on with, not dropped (a record
            // not in this member's copy yet cannot be: its learner may be dropped, and added
            // again once the record arrives).
            self.follow_targets();
            self.evacuate();
            if self.ticks.is_multiple_of(rebalance::REBALANCE_EVERY_TICKS) {
                self.rebalance();
            }
            self.drive_moves();
            self.leave_groups();
        }
        if self.ticks.is_multiple_of(directory::RECORD_EVERY_TICKS) {
            self.record_ranges();
        }
        let replies = self.pump_leases();
        self.refused.extend(replies);
        if self.placed() {
            self.expire_relayed();
        }
        let next = self.gathers.pump(self.ticks);
        self.submit_parts(next.submit);
        self.refused.extend(next.replies);
        let late = self.deletes.pump(self.ticks);
        self.refused.extend(late);
    }

    fn ready(&mut self) -> Ready<Self::Message, Self::Record> {
        // In rounds: every group at once, then the groups the first round's splits created
        // (their first batch holds their first records), and so on. A group another group
        // absorbed in the same round still emits what its own batch held: the same as had
        // its batch come just before the absorb.
        let mut round: Vec<GroupId> = self.groups.keys().copied().collect();
        let mut retired_replies = Vec::new();
        let mut parts: Vec<(GroupId, Parts<E>)> = Vec::with_capacity(round.len());
        while !round.is_empty() {
            let mut next = Vec::new();
            for (g, p, splits) in self.run_groups(std::mem::take(&mut round), Work::Ready) {
                let Some(mut p) = p else {
                    continue;
                };
                if let Some(pos) = self.created.iter().position(|(c, _)| *c == g) {
                    // A group created by an earlier round of this batch: its first record first.
                    let (_, first) = self.created.swap_remove(pos);
                    p.1.insert(0, first);
                }
                parts.push((g, p));
                next.extend(self.adopt_splits(g, splits));
                retired_replies.extend(self.adopt_merges(g));
            }
            round = next;
        }
        self.inputs.clear();
        self.absorb_frozen();
        let copied = self.directory_copied_at();
        self.refresh_directory();
        if self.directory_copied_at() != copied {
            self.learn_recorded_splits();
        }
        // Groups created at recovery: their first records go with the first batch.
        for (g, first) in std::mem::take(&mut self.created) {
            match parts.iter_mut().find(|(x, _)| *x == g) {
                Some((_, p)) => p.1.insert(0, first),
                None => parts.push((g, (Vec::new(), vec![first], Vec::new(), Vec::new()))),
            }
        }
        let records = self.batch_records(&mut parts);
        self.plan_checkpoint();
        let mut early = Vec::with_capacity(parts.len());
        let mut messages = Vec::with_capacity(parts.len());
        let mut replies = std::mem::take(&mut self.refused);
        for (g, (e, _, m, r)) in parts {
            early.push((g, e));
            messages.push((g, m));
            for reply in r {
                replies.extend(self.gather(g, reply));
            }
        }
        for (g, reply) in retired_replies {
            replies.extend(self.gather(g, reply));
        }
        replies.extend(self.pump_leases());
        replies.extend(self.release_members());
        let replies = self.answer_relayed(replies);
        let mut messages = by_peer(messages, self.closing.local_top);
        self.add_relays_and_tops(&mut messages);
        Ready::new(records, messages, replies).with_early(by_peer(early, self.closing.local_top))
    }

    fn status(&self) -> EngineStatus {
        let all: Vec<(GroupId, EngineStatus)> =
            self.groups().map(|(g, e)| (g, e.status())).collect();
        let first = all.first().map(|(_, s)| s.clone()).unwrap_or_default();
        let plan = self.leader_plan();
        let groups = all
            .iter()
            .map(|(g, s)| {
                let (start, end) = self.layout.bounds(*g);
                GroupStatus {
                    start,
                    end,
                    preferred_leader: Some(self.preferred_in(&plan, *g)),
                    ..group_status(*g, s)
                }
            })
            .collect();
        let sum = |f: fn(&EngineStatus) -> u64| all.iter().map(|(_, s)| f(s)).sum::<u64>();
        EngineStatus {
            decided_index: sum(|s| s.decided_index),
            applied_index: sum(|s| s.applied_index),
            revision: all.iter().map(|(_, s)| s.revision).max().unwrap_or(0),
            compact_revision: 0,
            // Per group (in `groups`): a sum of indexes has no common state to digest.
            applied_digest: None,
            state_digest: None,
            pending_requests: all.iter().map(|(_, s)| s.pending_requests).sum::<usize>()
                + self.relays_pending(),
            keys: sum(|s| s.keys),
            bytes_in_use: all.iter().map(|(_, s)| s.bytes_in_use).sum(),
            // Every group holds a copy of every lease: the first group's count.
            fast_path_commits: sum(|s| s.fast_path_commits),
            slow_path_commits: sum(|s| s.slow_path_commits),
            other_members: members::other_members(
                &first.configuration,
                all.iter().skip(1).map(|(_, s)| &s.configuration),
            ),
            groups,
            // A repair anywhere is the member's: the runtime logs it and health reports it.
            role: if all.iter().any(|(_, s)| s.role == "repairing") {
                "repairing".into()
            } else {
                first.role.clone()
            },
            directory: self.directory_status(),
            failed_groups: self
                .failed
                .iter()
                .map(|(&group, error)| GroupFailure {
                    group,
                    error: error.clone(),
                })
                .collect(),
            // Leader, term, members and auth: the first group's, which holds the auth state
            // and answers for the cluster as a whole.
            ..first
        }
    }

    fn transfer_leadership(&mut self, to: Option<NodeId>) -> Result<NodeId, LeaderTransferError> {
        self.groups
            .get_mut(&0)
            .map_or(Err(LeaderTransferError::NotLeader { leader: None }), |g| {
                g.transfer_leadership(to)
            })
    }

    fn take_group_watch_events(&mut self) -> Vec<GroupEvents> {
        self.watch.on = true;
        let mut out = self.watch.take_retired();
        // The meta group's store is the directory, no user's keys: it has no watchers.
        for (g, e) in self.groups.iter_mut().filter(|(g, _)| **g != META_GROUP) {
            out.extend(self.watch.take(*g, e));
        }
        out
    }

    fn group_watch_history(
        &self,
        group: u64,
        start: u64,
        max_revisions: usize,
    ) -> Result<Vec<Arc<RevisionEvents>>, EngineError> {
        match self.groups.get(&group) {
            Some(e) => e.watch_history(start, max_revisions),
            None => Err(EngineError::InvalidRequest(format!(
                "group {group} is not on this member (merged away): watch again"
            ))),
        }
    }

    fn applied_trail(&self, group: u64, after: u64, out: &mut Vec<(u64, u64)>) {
        if let Some(e) = self.groups.get(&group) {
            e.applied_trail(0, after, out);
        }
    }

    fn held_entries(&self) -> u64 {
        self.groups.values().map(Engine::held_entries).sum()
    }

    fn checkpoint_now(&mut self) -> bool {
        let mut any = false;
        for g in self.groups.values_mut() {
            any |= g.checkpoint_now();
        }
        any
    }

    fn backup_image(&self) -> Result<synod_core::backup::BackupImage, EngineError> {
        self.not_placed("a backup")?;
        self.take_backup_image()
    }

    fn hash_kv(&self, revision: u64) -> Result<synod_core::kv::KvHash, EngineError> {
        self.not_placed("a hash")?;
        self.groups_hash_kv(revision)
    }

    fn quarantine(&mut self, on: bool) {
        self.relay.quarantined = on;
    }

    fn group_backup_image(
        &self,
        group: u64,
    ) -> Result<synod_core::backup::BackupImage, EngineError> {
        self.group_image(group)
    }

    fn group_hash_kv(
        &self,
        group: u64,
        revision: u64,
    ) -> Result<synod_core::kv::KvHash, EngineError> {
        match self.groups.get(&group) {
            Some(g) => g.hash_kv(revision),
            None => Err(EngineError::InvalidRequest(format!(
                "group {} is not on member {}",
                layout::group_name(group),
                self.id
            ))),
        }
    }

    fn hash_all(&self) -> Result<u32, EngineError> {
        self.not_placed("a hash")?;
        self.groups_hash_all()
    }
}

#[cfg(test)]
mod tests;
