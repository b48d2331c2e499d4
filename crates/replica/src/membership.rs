//! Membership change for every log protocol, written once: epochs, learners, and bringing
//! members that are behind (or brand new) up to date.
//!
//! **Epochs.** The configuration is part of the applied state (`state.rs`); a change is a
//! command decided in the log like a write. A change of the *voter* set ends the epoch at its
//! log position s: the replica that applies it drops the protocol instance and starts a new
//! one for the new voters whose log begins at s + 1 ([`LogProtocol::epoch_checkpoint`]), and
//! writes a checkpoint of the state at s + 1 in the same batch, before anything of the new
//! instance leaves. Entries the old instance decides after s are never applied: every
//! replica stops at the same decided position, so all of them start the new epoch from the
//! same state, and the requests behind those entries are re-forwarded into the new epoch
//! (applying stays once per origin). This is OmniPaxos's StopSign (§6) and VR Revisited's
//! epochs (§7) on the replica layer: each configuration is its own instance with its own
//! ballots / views, so no quorum of one configuration is ever counted in another.
//!
//! Why an old-epoch quorum cannot act after the change is decided: a replica that entered the
//! new epoch never answers old-epoch messages except with a snapshot, a majority of the old
//! voters accepted the StopSign, and one change adds or removes one voter, so any old-epoch
//! majority that still answers contains a replica whose log holds the StopSign — a read index
//! or a decision there lies past s and is void.
//!
//! **Learners** are members outside the voter set: the leader streams them decided entries
//! (`LearnerEntries`), or its snapshot when they need entries it compacted or have no state;
//! they report how far they applied to every voter (`LearnerApplied`), which is what a
//! promotion is checked against (etcd's rule: within 10 % of the leader's log). A learner
//! applies the same log with the same rule, so when its promotion is applied it enters the new
//! epoch at exactly the StopSign, like everyone else.
//!
//! **Behind.** A replica that hears a protocol message from a newer epoch (or that was added
//! and has no state yet) says `Behind`; a replica of the newer epoch answers an older-epoch
//! message, or a `Behind`, with its snapshot. Installing a snapshot from a newer epoch starts
//! that epoch's instance at the snapshot's index — safe because the replica never took part in
//! that epoch: entering one is durable before anything of it leaves.
//!
//! **Lost storage.** A replica whose disk was wiped cannot know in which epochs it voted, so it
//! never starts an epoch's instance from scratch: in the bootstrap epoch the protocol's own
//! repair rebuilds it (OmniPaxos, VR); in a later epoch it stays a non-voting member until an
//! operator removes it and adds it again (`docs/membership.md`).

use crate::Replica;
use crate::messages::Message;
use crate::records::LastCheckpoint;
use crate::state::AppliedState;
use std::collections::BTreeMap;
use synod_core::membership::{Configuration, ERR_LEARNER_NOT_READY, MemberChange};
use synod_core::{
    ClientRequest, Command, EngineConfig, EngineError, LogProtocol, NodeId, PlantedBug,
    ProtocolOutput,
};

/// Entries a leader has sent a learner beyond what it acknowledged.
const LEARNER_IN_FLIGHT_MAX: u64 = 4096;

/// The configuration a new cluster boots with.
pub(crate) fn bootstrap_configuration(config: &EngineConfig) -> Configuration {
    if config.initial_members.is_empty() {
        Configuration::of_ids(&config.members)
    } else {
        Configuration::bootstrap(config.initial_members.clone())
    }
}

/// The protocol's config in epoch `c`: the same timing and bounds, the epoch's voters.
pub(crate) fn epoch_config(base: &EngineConfig, c: &Configuration) -> EngineConfig {
    let mut e = base.clone();
    e.members = c.voters();
    e
}

/// Recovery: the applied state and the protocol instance from the last checkpoint and the
/// records after it. The third value says a member being added starts with nothing.
#[allow(clippy::type_complexity)]
pub(crate) fn recover_state<P: LogProtocol>(
    config: &EngineConfig,
    bootstrap: &Configuration,
    checkpoint: LastCheckpoint<P::Checkpoint>,
    records: &[P::Record],
    pout: &mut ProtocolOutput<P::Message, P::Record>,
) -> Result<(AppliedState, Option<P>, bool), String> {
    match checkpoint {
        LastCheckpoint::Full(c) => {
            let state = AppliedState::from_image(c.state.decode()?, bootstrap);
            if !state.config.is_voter(config.id) {
                return Err(format!(
                    "a protocol checkpoint of epoch {} but member {} is no voter of it",
                    state.config.epoch, config.id
                ));
            }
            let pc = epoch_config(config, &state.config);
            let p = P::recover(&pc, Some(&c.protocol), records, pout)?;
            Ok((state, Some(p), false))
        }
        LastCheckpoint::State(bytes) => {
            if !records.is_empty() {
                return Err("protocol records after a checkpoint without a protocol".into());
            }
            let state = AppliedState::from_image(bytes.decode()?, bootstrap);
            Ok((state, None, false))
        }
        LastCheckpoint::None if config.join && records.is_empty() => Ok((
            AppliedState::new(config.kv, Configuration::default()),
            None,
            true,
        )),
        LastCheckpoint::None => {
            let state = AppliedState::new(config.kv, bootstrap.clone());
            if !bootstrap.is_voter(config.id) {
                return Ok((state, None, false));
            }
            let pc = epoch_config(config, bootstrap);
            let p = P::recover(&pc, None, records, pout)?;
            Ok((state, Some(p), false))
        }
    }
}

/// Whether a message to `to` may go at tick `now`, given when one last went (`sent`, updated):
/// at most one a heartbeat.
fn once_a_heartbeat(
    sent: &mut BTreeMap<NodeId, u64>,
    to: NodeId,
    now: u64,
    heartbeat: u64,
) -> bool {
    if sent.get(&to).is_some_and(|t| now < t + heartbeat) {
        return false;
    }
    sent.insert(to, now);
    true
}

/// What a voter knows of one learner.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// The learner's applied index, as it last said.
    applied: u64,
    /// Entries were sent up to this log length.
    sent: u64,
    /// `applied` at the last heartbeat, to resend after loss.
    applied_at_heartbeat: u64,
}

/// Volatile membership bookkeeping of one replica.
#[derive(Debug, Default)]
pub(crate) struct MemberFeeds {
    /// Voter side: learners' progress.
    progress: BTreeMap<NodeId, Progress>,
    /// Voter side: the log index at which each learner was last added, as applied here. A
    /// learner is promoted only once it reported at least that much: a report of less may
    /// come from a stay before that addition (the member was removed and added again, its
    /// replica of the group dropped in between), and promoting on it would make a voter of a
    /// member with no state yet, which then takes its first state as a forgotten stay and
    /// cannot vote (a placed group left with two such voters stalled: simulator seed
    /// 550,134). Such reports still feed the learner: one that is merely behind catches up.
    learner_since: BTreeMap<NodeId, u64>,
    /// The applied index this replica's state started from (a recovery, a snapshot, an
    /// epoch's start): learners added before it have no `learner_since` here, and a promotion
    /// of one waits until it reports at least this much.
    known_from: u64,
    /// Learner side: the voter that fed it last (where its requests go).
    feeder: Option<NodeId>,
    /// When this replica last said `Behind` to each peer (one per heartbeat at most).
    behind_sent: BTreeMap<NodeId, u64>,
    /// When this replica last said `NonVoting` to each peer (one per heartbeat at most).
    non_voting_sent: BTreeMap<NodeId, u64>,
    /// Voters of this epoch that said they cannot vote in it.
    non_voting: std::collections::BTreeSet<NodeId>,
    /// Applied index of the last state-only checkpoint (learners).
    state_checkpoint_idx: u64,
    /// Planted `RemovedLeaderServes`: this replica led when its removal was applied.
    removed_leader: bool,
}

impl MemberFeeds {
    pub(crate) fn leader_hint(&self) -> Option<NodeId> {
        self.feeder
    }

    pub(crate) fn learner_applied(&self) -> Vec<(NodeId, u64)> {
        self.progress
            .iter()
            .map(|(id, p)| (*id, p.applied))
            .collect()
    }
}

impl<P: LogProtocol> Replica<P> {
    /// Whether this replica started from a lost disk (its incarnations say so durably).
    pub(crate) fn amnesic(&self) -> bool {
        self.pending.incarnation() >= crate::AMNESIC_INCARNATION_BASE
    }

    /// "leader", "follower", … from the protocol; otherwise where this member stands.
    pub(crate) fn role(&self) -> &'static str {
        let me = self.config.id;
        match &self.protocol {
            Some(p) => p.role(),
            None if self.state.config.members.is_empty() => "joining",
            None if self.state.config.is_learner(me) => "learner",
            None if !self.state.config.contains(me) => "removed",
            None => "non-voting (lost storage)",
        }
    }

    /// Refuses up front what this replica can tell is wrong with a membership change; `None`
    /// lets it go through the log.
    pub(crate) fn check_membership(&self, request: &ClientRequest) -> Option<EngineError> {
        let change = request.op.member_change()?;
        if P::epoch_checkpoint(0).is_none() {
            return Some(EngineError::Unsupported {
                engine: P::NAME.to_string(),
                what: "membership change".to_string(),
            });
        }
        if let (MemberChange::Promote(id), Some(p)) = (change, &self.protocol)
            && self.state.config.is_learner(*id)
        {
            // etcd's rule: a learner is ready once it holds 90 % of the leader's log — and its
            // state includes its own addition (`MemberFeeds::learner_since`).
            let applied = self.members.progress.get(id).map_or(0, |pr| pr.applied);
            let floor =
                (self.members.learner_since.get(id).copied()).unwrap_or(self.members.known_from);
            let floor = match self.config.bug(PlantedBug::PromoteOnStaleProgress) {
                true => 0,
                false => floor,
            };
            if applied.saturating_mul(10) < p.decided_idx().saturating_mul(9)
                || applied == 0
                || applied < floor
            {
                return Some(EngineError::Membership(ERR_LEARNER_NOT_READY.into()));
            }
        }
        None
    }

    /// A protocol message: to the instance of its epoch, if that is ours.
    pub(crate) fn handle_protocol(&mut self, from: NodeId, epoch: u64, m: P::Message) {
        let mine = self.epoch();
        if epoch == mine && !self.state.config.members.is_empty() {
            if let Some(p) = self.protocol.as_mut() {
                p.receive(from, m, &self.snapshots, &mut self.pout);
                self.drain_protocol();
            } else if self.state.config.is_voter(self.config.id) {
                self.say_non_voting(from);
            }
        } else if epoch > mine || self.state.config.members.is_empty() {
            self.say_behind(from);
        } else {
            self.start_snapshot_send(from, false);
        }
    }

    /// A voter without an instance (it lost its storage after this epoch began, so it may
    /// have voted in it) tells the peers that count on its vote, once a heartbeat at most.
    fn say_non_voting(&mut self, to: NodeId) {
        let (now, heartbeat) = (self.now_ticks, self.config.heartbeat_ticks);
        if !once_a_heartbeat(&mut self.members.non_voting_sent, to, now, heartbeat) {
            return;
        }
        let epoch = self.epoch();
        self.out.messages.push((to, Message::NonVoting { epoch }));
    }

    /// Notes a voter of this epoch that cannot vote in it (`say_non_voting`); forgotten with
    /// the epoch (a later one is entered without it, or with it added afresh).
    pub(crate) fn handle_non_voting(&mut self, from: NodeId, epoch: u64) {
        if epoch == self.epoch() && self.state.config.is_voter(from) {
            self.members.non_voting.insert(from);
        }
    }

    /// The voters of this epoch that said they cannot vote in it.
    pub(crate) fn non_voting_voters(&self) -> Vec<NodeId> {
        self.members.non_voting.iter().copied().collect()
    }

    fn say_behind(&mut self, to: NodeId) {
        let (now, heartbeat) = (self.now_ticks, self.config.heartbeat_ticks);
        if !once_a_heartbeat(&mut self.members.behind_sent, to, now, heartbeat) {
            return;
        }
        let (epoch, applied) = (self.epoch(), self.state.applied_index());
        self.out
            .messages
            .push((to, Message::Behind { epoch, applied }));
    }

    /// A member behind us, or without state: our snapshot, from the leader (or from anyone
    /// of a newer epoch when the asker is in an older one).
    pub(crate) fn handle_behind(&mut self, from: NodeId, epoch: u64, applied: u64) {
        if self.protocol.is_none() {
            // A replica without an instance (removed, a learner, one that lost its storage)
            // brings over only members of an older epoch: for the new epoch's members its
            // state is no newer, and its learners are the voters' to feed.
            let older = epoch < self.epoch() && !self.state.config.members.is_empty();
            if older && applied > 0 {
                self.start_snapshot_send(from, false);
            }
            return;
        }
        if applied == 0 && self.state.applied_index() > 0 {
            // A new member knows only whom it was told to ask, which may not include the
            // leader: any voter it asked starts it (with a state that may not list it yet —
            // it asks again until one does; the leader feeds it from then on).
            self.start_snapshot_send(from, false);
        } else if self.state.config.is_learner(from) {
            self.handle_learner_applied(from, applied);
        } else if epoch < self.epoch() {
            // Anyone of the newer epoch can bring a member of an older one over.
            self.start_snapshot_send(from, false);
        }
    }

    pub(crate) fn handle_learner_applied(&mut self, from: NodeId, applied: u64) {
        if self.protocol.is_none() || !self.state.config.is_learner(from) {
            return;
        }
        let pr = self.members.progress.entry(from).or_default();
        if applied < pr.applied {
            // It restarted and lost what it had not checkpointed: resend from there.
            pr.sent = applied;
        }
        pr.applied = applied;
    }

    /// Learner side: decided entries from a voter of our epoch, applied like our own log.
    pub(crate) fn handle_learner_entries(
        &mut self,
        from: NodeId,
        epoch: u64,
        first: u64,
        entries: Vec<Command>,
    ) {
        if self.protocol.is_some() {
            return;
        }
        if epoch != self.epoch() || self.state.config.members.is_empty() {
            if epoch > self.epoch() || self.state.config.members.is_empty() {
                self.say_behind(from);
            }
            return;
        }
        self.members.feeder = Some(from);
        for (idx, c) in (first..).zip(entries) {
            if idx != self.state.applied_index() + 1 {
                continue;
            }
            let before = self.epoch();
            self.apply_entry(idx, &c);
            if self.epoch() != before {
                self.start_epoch_instance();
                break;
            }
        }
        let applied = self.state.applied_index();
        self.out
            .messages
            .push((from, Message::LearnerApplied { applied }));
        self.maybe_state_checkpoint();
    }

    /// Leader side, after applying: stream decided entries (or a snapshot) to learners.
    pub(crate) fn feed_learners(&mut self) {
        let Some(p) = &self.protocol else {
            return;
        };
        if !p.is_leader() {
            return;
        }
        // Runs after every batch: nothing to allocate or scan without learners.
        if !self.state.config.members.iter().any(|m| m.learner) {
            self.members.progress.clear();
            return;
        }
        let (decided, compacted) = (p.decided_idx(), p.compacted_idx());
        let epoch = self.epoch();
        let batch = self.config.batch_entries_max as u64;
        let mut snapshots = Vec::new();
        let learners = self.state.config.learners();
        self.members.progress.retain(|id, _| learners.contains(id));
        (self.members.learner_since).retain(|id, _| learners.contains(id));
        for id in learners {
            let Some(pr) = self.members.progress.get_mut(&id) else {
                continue;
            };
            if pr.applied < compacted || pr.applied == 0 {
                snapshots.push(id);
                continue;
            }
            let from = pr.sent.max(pr.applied);
            if from >= decided || from - pr.applied >= LEARNER_IN_FLIGHT_MAX {
                continue;
            }
            let end = decided.min(from + batch);
            let entries: Vec<Command> = (from..end).map(|i| p.entry(i).clone()).collect();
            pr.sent = end;
            self.out.messages.push((
                id,
                Message::LearnerEntries {
                    epoch,
                    first: from + 1,
                    entries,
                },
            ));
        }
        for id in snapshots {
            self.start_snapshot_send(id, false);
        }
    }

    /// Every heartbeat: learners and new members report; leaders resend what was lost.
    pub(crate) fn membership_heartbeat(&mut self) {
        let me = self.config.id;
        let applied = self.state.applied_index();
        if let Some(p) = &self.protocol {
            for pr in self.members.progress.values_mut() {
                if pr.applied == pr.applied_at_heartbeat {
                    pr.sent = pr.applied;
                }
                pr.applied_at_heartbeat = pr.applied;
            }
            if p.is_leader() {
                // An empty batch: learners learn who leads (where their requests go) even
                // when nothing is being decided.
                let epoch = self.epoch();
                for id in self.state.config.learners() {
                    let first = self.state.applied_index() + 1;
                    let entries = Vec::new();
                    let m = Message::LearnerEntries {
                        epoch,
                        first,
                        entries,
                    };
                    self.out.messages.push((id, m));
                }
            }
            return;
        }
        if self.state.config.members.is_empty() {
            let contacts: Vec<NodeId> = self.config.peers().collect();
            for to in contacts {
                self.say_behind(to);
            }
        } else if !self.state.config.contains(me) {
            // Not (yet, or no longer) a member as far as this state knows: a new member whose
            // first state predates its addition keeps asking; a removed one is ignored.
            for to in self.state.config.voters() {
                self.say_behind(to);
            }
        } else if self.state.config.is_learner(me) {
            for to in self.state.config.voters() {
                self.out
                    .messages
                    .push((to, Message::LearnerApplied { applied }));
            }
        }
    }

    /// Applies one decided entry at KV index `idx` and answers whoever waits for it here.
    pub(crate) fn apply_entry(&mut self, idx: u64, c: &Command) {
        self.proposed.remove(&c.origin);
        self.state.checks = self.range_checks();
        let before = self.learners_before(c);
        if let Some(result) = self.state.apply(idx, c) {
            self.answer_applied(c.origin, c.id, result);
        }
        self.note_added_learners(idx, before);
    }

    /// The learners before `c` is applied, if it adds one (else `None`: nothing to compare).
    pub(crate) fn learners_before(&self, c: &Command) -> Option<Vec<NodeId>> {
        let adds_learner = matches!(c.op.member_change(), Some(MemberChange::Add(m)) if m.learner);
        adds_learner.then(|| self.state.config.learners())
    }

    /// After applying entry `idx`: a learner that was not one `before` was added (again) here;
    /// what it reported before may be from an earlier stay.
    pub(crate) fn note_added_learners(&mut self, idx: u64, before: Option<Vec<NodeId>>) {
        let Some(before) = before else {
            return;
        };
        if self.config.bug(PlantedBug::PromoteOnStaleProgress) {
            // PLANTED BUG: the progress of an earlier stay counts.
            return;
        }
        for id in self.state.config.learners() {
            if !before.contains(&id) {
                self.members.learner_since.insert(id, idx);
            }
        }
    }

    /// The state was replaced (recovered, or a snapshot installed): learners' additions
    /// before it are not known here.
    pub(crate) fn forget_learner_additions(&mut self) {
        self.members.learner_since.clear();
        self.members.known_from = self.state.applied_index();
    }

    /// The configuration in the applied state changed epoch (a StopSign was applied, or a
    /// snapshot of a newer epoch installed): start this epoch's protocol instance from the
    /// state here, or none if this replica is no voter of it, and checkpoint — in the batch
    /// that also carries the new instance's first records and messages.
    pub(crate) fn start_epoch_instance(&mut self) {
        debug_assert!(self.pout.records.is_empty() && self.pout.messages.is_empty());
        let was_leader = self.is_leader();
        self.protocol = None;
        self.snapshots = Default::default();
        self.reads.restart();
        self.proposed.clear();
        let me = self.config.id;
        self.members = MemberFeeds {
            state_checkpoint_idx: self.state.applied_index(),
            known_from: self.state.applied_index(),
            removed_leader: was_leader && !self.state.config.contains(me),
            ..MemberFeeds::default()
        };
        let idx = self.state.applied_index();
        // A lost disk may have voted in this epoch before (module doc) — unless this replica
        // joined a group split off after its repair (`split.rs`).
        let voter = self.state.config.is_voter(me) && (!self.amnesic() || self.joined_after_repair);
        let fresh = if voter {
            P::epoch_checkpoint(idx)
        } else {
            None
        };
        let Some(cp) = fresh else {
            self.push_state_checkpoint();
            self.pending.reset_reads_above(idx);
            self.reforward(true);
            return;
        };
        let mut pc = epoch_config(&self.config, &self.state.config);
        // This instance's first boot (VR starts normal in view 0 on it).
        pc.first_boot = true;
        match P::recover(&pc, Some(&cp), &[], &mut self.pout) {
            Ok(p) => {
                self.protocol = Some(p);
                match self.state.encode() {
                    Ok(state) => self.push_checkpoint(cp, state),
                    Err(e) => panic!("the applied state does not serialise: {e}"),
                }
            }
            // A fresh checkpoint the protocol made itself: refusing it is a bug in it.
            Err(e) => panic!("{}: a new epoch's instance did not start: {e}", P::NAME),
        }
        self.pending.reset_reads_above(idx);
        self.drain_protocol();
        self.reforward(true);
    }

    /// Learners checkpoint their applied state every `snapshot_entries` (they write no
    /// other records), so a restart does not refetch everything.
    fn maybe_state_checkpoint(&mut self) {
        let every = self.config.snapshot_entries;
        if self.protocol.is_some()
            || every == 0
            || self.state.applied_index() < self.members.state_checkpoint_idx + every
        {
            return;
        }
        self.push_state_checkpoint();
    }

    /// A checkpoint of the applied state alone (no protocol instance).
    pub(crate) fn push_state_checkpoint(&mut self) {
        // Serialising our own in-memory state cannot fail with postcard.
        let Ok(state) = self.state.encode() else {
            return;
        };
        self.members.state_checkpoint_idx = self.state.applied_index();
        self.out
            .records
            .push(crate::records::Record::StateCheckpoint {
                incarnation: self.pending.incarnation(),
                state,
            });
    }

    /// PLANTED BUG (`RemovedLeaderServes`): a leader that applied its own removal keeps
    /// answering linearizable reads from its state, which no longer changes (VR's old primary
    /// going on after the reconfiguration request).
    pub(crate) fn planted_removed_leader_read(&self, request: &ClientRequest) -> bool {
        self.config.bug(PlantedBug::RemovedLeaderServes)
            && self.members.removed_leader
            && request.op.is_read()
    }

    /// Planted `ApplyPastStopSign`: the old instance's decisions after a StopSign count.
    pub(crate) fn past_stop_sign_planted(&self) -> bool {
        self.config.bug(PlantedBug::ApplyPastStopSign)
    }

    /// PLANTED BUG (`ApplyPastStopSign`): what the old instance decided after the StopSign is
    /// acknowledged to its clients (executed on a copy of the state, as if the old
    /// configuration still decided things) — while the new epoch starts at the StopSign
    /// without it, so those acknowledged writes are lost.
    pub(crate) fn planted_ack_past_stop_sign(&mut self) {
        let Some(p) = self.protocol.as_ref() else {
            return;
        };
        let mut copy = self.state.clone();
        let mut acks = Vec::new();
        for i in self.state.applied_index()..p.decided_idx() {
            let c = p.entry(i);
            if let Some(r) = copy.apply(i + 1, c) {
                acks.push((c.origin, c.id, r));
            }
        }
        for (origin, id, r) in acks {
            self.answer_applied(origin, id, r);
        }
    }
}
