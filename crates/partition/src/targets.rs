//! Moves recorded in the range directory, so that `range move` outlives its driver.
//!
//! Decision 4 of decision 0005 (docs/decisions/0005-placement-and-range-directory.md): a move
//! is a target in the directory, carried out by whoever leads the group. The leader that takes
//! an operator's move (`moves.rs`) records it in the meta group — key `t/` and the group's id,
//! value the member moved off, the newcomer and the group's configuration version then — while
//! it makes the first step, and again until its copy of the directory shows it. A leader of a
//! group with a record and no move of it under way (the lead passed on part-way: the driver
//! crashed, or was cut off) goes on with the move from where the group stands, with the same
//! steps. Before, it dropped the learner the move had added, and the move was undone unless the
//! operator asked again.
//!
//! The record goes once the move is done; when it is refused (the newcomer left the cluster,
//! the group changed under it), or when a move resumed from it runs out of time (the operator
//! asks again). An operator's move that runs out of time keeps it — the operator was told
//! `Timeout`, outcome unknown, and the leader goes on with it, for [`crate::moves::MOVE_TIMEOUTS`]
//! request timeouts more. A record from more than three changes before the group's
//! configuration (a move takes three: add, promote, remove) is stale — a write of a leader that
//! had lost the group, landing late — and is dropped unfollowed, as is one whose newcomer the
//! cluster removed or whose member to move off the group no longer has.
//!
//! A record has no time budget of its own: each leader that goes on with it gives it
//! [`crate::moves::MOVE_TIMEOUTS`] request timeouts, so a move to a newcomer that stays down
//! ends when a leader keeps the lead that long. A record is written at the leader's next pass
//! after its first step: a leader change before it lands leaves a learner the next leader drops.
//!
//! Every write is a transaction guarded by the key's mod revision as this member's copy has it:
//! one planned from a copy that another write changed since does nothing, and is planned again
//! from the copy read after. Moves a member makes itself (rebalancing, evacuating a removed
//! member, replacing a voter that cannot vote) are not recorded: each new leader computes them
//! again from the group as it stands.

use crate::Partitioned;
use crate::directory::{META_GROUP, Paced};
use crate::layout::GroupId;
use std::collections::{BTreeMap, BTreeSet};
use synod_core::kv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, Op, PutRequest,
    RangeRequest, ResponseBody, TxnOp, TxnRequest,
};
use synod_core::membership::Configuration;
use synod_core::{Engine, MoveTarget, NodeId, PlantedBug, RequestId};

/// Every target's key: this prefix, then the group's id (8 bytes, big-endian).
const PREFIX: &[u8] = b"t/";
/// The end of the prefix's keys (`t/` + 1).
const PREFIX_END: &[u8] = b"t0";
/// The changes a move makes: the newcomer added, promoted, the member moved off removed.
const MOVE_CHANGES: u64 = 3;
/// The members of a record that does not decode (never a member id).
const NOBODY: NodeId = u64::MAX;

/// This member's side of the recorded moves.
#[derive(Default)]
pub(crate) struct Targets {
    /// This member's copy: each group's target, with its key's mod revision in the meta store.
    copy: BTreeMap<GroupId, (MoveTarget, u64)>,
    /// Per group: this member's write of its target while unanswered, and the tick before
    /// which none is made again.
    pending: Paced,
    /// The moves driven here that go on with a record (engine-own ids).
    pub(crate) resumed: BTreeSet<RequestId>,
    /// Per group: a recorded move this member gave up (refused, or out of time once resumed):
    /// its record is dropped, not followed.
    pub(crate) given_up: BTreeMap<GroupId, (NodeId, NodeId)>,
}

impl Targets {
    /// Our write `id` was answered (either way): none is made again before `retry_at`.
    pub(crate) fn answered(&mut self, id: RequestId, retry_at: u64) {
        self.pending.answered(id, retry_at);
    }

    /// The targets as the copy holds them, in group order.
    pub(crate) fn recorded(&self) -> Vec<MoveTarget> {
        self.copy.values().map(|(t, _)| t.clone()).collect()
    }
}

fn key(g: GroupId) -> Vec<u8> {
    [PREFIX, &g.to_be_bytes()].concat()
}

fn encode(t: &MoveTarget) -> Vec<u8> {
    [t.from, t.to, t.config_version]
        .into_iter()
        .flat_map(u64::to_be_bytes)
        .collect()
}

/// The target a key-value of the store holds; `None` for a key that names no group. A value
/// that does not decode reads as a move between members that do not exist ([`NOBODY`]): never
/// followed, and dropped by the group's leader as moot.
fn decode(kv: &KeyValue) -> Option<MoveTarget> {
    let group = u64::from_be_bytes(kv.key.strip_prefix(PREFIX)?.try_into().ok()?);
    let words: Vec<u64> = (kv.value.chunks_exact(8))
        .filter_map(|w| w.try_into().ok().map(u64::from_be_bytes))
        .collect();
    let (from, to, config_version) = match (&words[..], kv.value.len()) {
        (&[from, to, config_version], 24) => (from, to, config_version),
        _ => (NOBODY, NOBODY, 0),
    };
    Some(MoveTarget {
        group,
        from,
        to,
        config_version,
    })
}

/// The targets the meta group's replica `meta` has applied, with their keys' mod revisions:
/// `None` if the read fails (the old copy is kept).
pub(crate) fn read<E: Engine>(meta: &E) -> Option<BTreeMap<GroupId, (MoveTarget, u64)>> {
    let op = Op::Range(RangeRequest {
        key: PREFIX.to_vec(),
        range_end: PREFIX_END.to_vec(),
        ..Default::default()
    });
    let ResponseBody::Range(r) = meta.read_applied(&op).ok()?.body else {
        return None;
    };
    let decoded = r
        .kvs
        .iter()
        .filter_map(|kv| Some((decode(kv)?, kv.mod_revision)));
    Some(decoded.map(|(t, m)| (t.group, (t, m))).collect())
}

/// What the leader of a group does about its recorded move.
enum Step {
    Nothing,
    Record(MoveTarget),
    Drop,
    Resume(MoveTarget),
}

impl<E: Engine> Partitioned<E> {
    /// Takes this member's copy of the targets, read at the same point as its directory copy.
    pub(crate) fn copy_targets(&mut self, copy: BTreeMap<GroupId, (MoveTarget, u64)>) {
        let given_up = &mut self.targets.given_up;
        given_up.retain(|g, (from, to)| {
            copy.get(g)
                .is_some_and(|(t, _)| t.from == *from && t.to == *to)
        });
        self.targets.copy = copy;
    }

    /// On the leader of each placed group: records the operator's move it drives, goes on
    /// with a recorded one no move here drives, drops a record that is done with (module doc).
    pub(crate) fn follow_targets(&mut self) {
        if !self.placed() || !self.groups.contains_key(&META_GROUP) {
            return;
        }
        let Some((first, cluster)) = self.cluster_configuration() else {
            return;
        };
        // A member the cluster removed hands its groups over (`moves.rs`): its records would
        // not land (it is no member of the meta group), and a move it drove would keep the
        // group from its hand-off.
        if self.departed(self.id, &cluster) && !self.base.bug(PlantedBug::DepartedLeaderKeepsGroups)
        {
            return;
        }
        let led: Vec<(GroupId, Configuration)> = (self.data_groups())
            .filter(|(g, _)| *g != first)
            .map(|(g, e)| (g, e.status()))
            .filter(|(_, st)| st.leader == Some(self.id))
            .map(|(g, st)| (g, st.configuration))
            .collect();
        let now = self.ticks;
        let leads = |g: &GroupId| led.iter().any(|(l, _)| l == g);
        self.targets.pending.retain(leads);
        // What this member gave up while it led a group is not its word once it no longer
        // does: a leader since may have gone on with the move.
        self.targets.given_up.retain(|g, _| leads(g));
        for (g, c) in led {
            if !self.targets.pending.due(g, now) {
                continue;
            }
            match self.target_step(g, &c, &cluster) {
                Step::Nothing => {}
                Step::Record(t) => self.write_target(g, Some(&t)),
                Step::Drop => self.write_target(g, None),
                Step::Resume(t) => self.resume_move(g, t),
            }
        }
    }

    /// What group `g` (led here, configuration `c`) needs of its record.
    fn target_step(&self, g: GroupId, c: &Configuration, cluster: &Configuration) -> Step {
        let recorded = self.targets.copy.get(&g).map(|(t, _)| t);
        if let Some(d) = self.moves.recordable(g, &self.targets.resumed) {
            return match recorded {
                Some(t) if t.from == d.from && t.to == d.to => Step::Nothing,
                _ => Step::Record(d),
            };
        }
        let Some(t) = recorded else {
            return Step::Nothing;
        };
        if c.version < t.config_version {
            // This replica is behind the record (a leader still applying): judge it later.
            return Step::Nothing;
        }
        let given_up = self.targets.given_up.get(&g) == Some(&(t.from, t.to));
        let stale = c.version > t.config_version + MOVE_CHANGES;
        let done = c.is_voter(t.to) && !c.contains(t.from);
        let moot = !c.contains(t.from) || !cluster.is_voter(t.to);
        if given_up || stale || done || moot {
            return Step::Drop;
        }
        match self.moves.driving_group(g) || self.base.bug(PlantedBug::MoveTargetNotResumed) {
            // A move this member makes itself goes first; the record waits.
            true => Step::Nothing,
            false => Step::Resume(t.clone()),
        }
    }

    /// Writes group `g`'s target (`None`: drops it), guarded by its key's mod revision as the
    /// copy has it.
    fn write_target(&mut self, g: GroupId, target: Option<&MoveTarget>) {
        let seen = self.targets.copy.get(&g).map_or(0, |(_, m)| *m);
        let change = match target {
            Some(t) => TxnOp::Put(PutRequest::new(key(g), encode(t))),
            None => TxnOp::DeleteRange(DeleteRangeRequest {
                key: key(g),
                range_end: Vec::new(),
                prev_kv: false,
            }),
        };
        let op = Op::Txn(TxnRequest {
            compare: vec![Compare {
                key: key(g),
                range_end: Vec::new(),
                target: CompareTarget::ModRevision(seen),
                result: CompareResult::Equal,
            }],
            success: vec![change],
            failure: Vec::new(),
        });
        let request = self.own.request(op);
        self.targets.pending.made(g, request.id);
        if let Some(meta) = self.groups.get_mut(&META_GROUP) {
            meta.submit(request);
        }
    }
}
