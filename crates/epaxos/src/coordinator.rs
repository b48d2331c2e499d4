//! The coordinator of an instance: its command leader (§4.3: PreAccept, then the fast path
//! or Accept, then Commit) or a replica recovering it (§4.4: Explicit Prepare, then Accept,
//! a fresh PreAccept without fast path, or a no-op).
//!
//! Recovery orders the replies by **vbal**, the ballot in which a reply's attributes were
//! set, never by the promised ballot (Sutra, "On the correctness of Egalitarian Paxos": with
//! one ballot per instance a replica that merely promised a higher ballot would make its
//! stale attributes look newest). The fast path is allowed only in the initial ballot, and a
//! recoverer takes the command leader's attributes on the fast-path rule only from at least
//! F replies other than the leader that say they added nothing to them ("unchanged") in the
//! initial ballot — with the basic 2F fast quorum every fast commit leaves that many in any
//! majority.

use crate::types::{Attrs, Ballot, Batch, Instance, InstanceId, Message, Reported, Status};
use crate::{EPaxos, Out, Voters, others};
use std::collections::BTreeMap;
use synod_core::{Command, NodeId, PlantedBug};

/// Ticks a command leader waits for a full fast quorum once a majority answered identically,
/// before it settles for the slow path.
const FAST_WAIT_TICKS: u64 = 2;

/// Most recoveries started in one tick.
const RECOVERIES_PER_TICK: usize = 64;

/// What a coordinator is doing for one instance.
#[derive(Debug)]
pub struct Coord {
    pub bal: Ballot,
    pub phase: Phase,
    /// When the current phase started and when its messages were last sent.
    pub started: u64,
    pub sent: u64,
}

#[derive(Debug)]
pub enum Phase {
    PreAccept {
        cmds: Batch,
        /// The attributes this coordinator proposed (the fast path needs every reply equal).
        orig: Attrs,
        merged: Attrs,
        replies: Voters,
        all_same: bool,
        fast_allowed: bool,
    },
    Accept {
        cmds: Batch,
        attrs: Attrs,
        acks: Voters,
    },
    Prepare {
        replies: BTreeMap<NodeId, Option<Reported>>,
    },
}

impl EPaxos {
    /// Becomes command leader of a new instance for `cmds` (PreAccept, §4.3 Phase 1).
    pub(crate) fn lead(&mut self, cmds: Vec<Command>, out: &mut Out) {
        let id = InstanceId {
            replica: self.config.id,
            slot: self.next_slot,
        };
        self.next_slot += 1;
        let bal = Ballot::initial(id);
        let f = crate::types::batch_footprint(&cmds);
        let attrs = self
            .conflicts
            .attrs_for(&f, self.config.bug(PlantedBug::EpaxosGetCommutesWithPut));
        self.own.insert(id.slot, cmds.clone());
        self.pre_accept(id, bal, cmds, attrs, true, out);
    }

    /// Starts Phase 1 at `bal`: records this replica's own pre-acceptance and sends PreAccept.
    fn pre_accept(
        &mut self,
        id: InstanceId,
        bal: Ballot,
        cmds: Batch,
        attrs: Attrs,
        fast_allowed: bool,
        out: &mut Out,
    ) {
        let inst = Instance::at(
            Status::PreAccepted,
            bal,
            cmds.clone(),
            attrs.clone(),
            fast_allowed,
        );
        self.record_instance(id, inst, out);
        for p in others(&self.config) {
            let m = Message::PreAccept {
                id,
                bal,
                cmds: cmds.clone(),
                attrs: attrs.clone(),
            };
            out.send(p, m);
        }
        let phase = Phase::PreAccept {
            cmds,
            orig: attrs.clone(),
            merged: attrs,
            replies: Voters::new(),
            all_same: true,
            fast_allowed,
        };
        self.coords.insert(
            id,
            Coord {
                bal,
                phase,
                started: self.now,
                sent: self.now,
            },
        );
        self.try_finish_pre_accept(id, out);
    }

    pub(crate) fn on_pre_accept_reply(
        &mut self,
        from: NodeId,
        id: InstanceId,
        bal: Ballot,
        ok: bool,
        attrs: Attrs,
        out: &mut Out,
    ) {
        if !self.reply_counts(id, bal, ok) {
            return;
        }
        let Some(c) = self.coords.get_mut(&id) else {
            return;
        };
        let Phase::PreAccept {
            orig,
            merged,
            replies,
            all_same,
            ..
        } = &mut c.phase
        else {
            return;
        };
        if attrs.deps.len() != orig.deps.len() || !replies.insert(from) {
            return;
        }
        if attrs != *orig {
            *all_same = false;
        }
        merged.merge(&attrs);
        self.try_finish_pre_accept(id, out);
    }

    /// The fast path (a fast quorum, all identical, initial ballot) or, once a majority
    /// answered and the fast path is out of reach or waited for long enough, the slow path.
    fn try_finish_pre_accept(&mut self, id: InstanceId, out: &mut Out) {
        let (fast_q, majority, n, now) = (self.fast_quorum(), self.majority(), self.n(), self.now);
        let Some(c) = self.coords.get(&id) else {
            return;
        };
        let Phase::PreAccept {
            cmds,
            orig,
            merged,
            replies,
            all_same,
            fast_allowed,
        } = &c.phase
        else {
            return;
        };
        let count = replies.len() + 1;
        let fast = *fast_allowed && *all_same && c.bal == Ballot::initial(id);
        if fast && count >= fast_q {
            let (bal, cmds, attrs) = (c.bal, cmds.clone(), orig.clone());
            self.fast_commits += 1;
            self.commit_as_coordinator(id, bal, cmds, attrs, out);
            return;
        }
        let waited = now >= c.started + FAST_WAIT_TICKS;
        if count >= majority && (!fast || count == n || waited) {
            let (bal, cmds, attrs) = (c.bal, cmds.clone(), merged.clone());
            self.accept(id, bal, cmds, attrs, out);
        }
    }

    /// Phase 2 (Paxos-Accept) at `bal`.
    fn accept(&mut self, id: InstanceId, bal: Ballot, cmds: Batch, attrs: Attrs, out: &mut Out) {
        let inst = Instance::at(Status::Accepted, bal, cmds.clone(), attrs.clone(), false);
        self.record_instance(id, inst, out);
        for p in others(&self.config) {
            let m = Message::Accept {
                id,
                bal,
                cmds: cmds.clone(),
                attrs: attrs.clone(),
            };
            out.send(p, m);
        }
        self.coords.insert(
            id,
            Coord {
                bal,
                phase: Phase::Accept {
                    cmds,
                    attrs,
                    acks: Voters::new(),
                },
                started: self.now,
                sent: self.now,
            },
        );
        self.try_finish_accept(id, out);
    }

    pub(crate) fn on_accept_reply(
        &mut self,
        from: NodeId,
        id: InstanceId,
        bal: Ballot,
        ok: bool,
        out: &mut Out,
    ) {
        if !self.reply_counts(id, bal, ok) {
            return;
        }
        if let Some(Coord {
            phase: Phase::Accept { acks, .. },
            ..
        }) = self.coords.get_mut(&id)
        {
            acks.insert(from);
        }
        self.try_finish_accept(id, out);
    }

    fn try_finish_accept(&mut self, id: InstanceId, out: &mut Out) {
        let majority = self.majority();
        let Some(c) = self.coords.get(&id) else {
            return;
        };
        if let Phase::Accept { cmds, attrs, acks } = &c.phase
            && acks.len() + 1 >= majority
        {
            let (bal, cmds, attrs) = (c.bal, cmds.clone(), attrs.clone());
            if id.replica == self.config.id {
                self.slow_commits += 1;
            }
            self.commit_as_coordinator(id, bal, cmds, attrs, out);
        }
    }

    /// Commit (§4.3): to every member, with the commands only to those that may lack them.
    fn commit_as_coordinator(
        &mut self,
        id: InstanceId,
        bal: Ballot,
        cmds: Batch,
        attrs: Attrs,
        out: &mut Out,
    ) {
        let holders: Voters = match self.coords.get(&id).map(|c| &c.phase) {
            Some(Phase::PreAccept { replies, .. }) => replies.clone(),
            Some(Phase::Accept { acks, .. }) => acks.clone(),
            _ => Voters::new(),
        };
        for p in others(&self.config) {
            let m = Message::Commit {
                id,
                bal,
                cmds: (!holders.contains(&p)).then(|| cmds.clone()),
                attrs: attrs.clone(),
            };
            out.send(p, m);
        }
        self.commit_local(id, bal, cmds, attrs, out);
    }

    /// Whether a reply in ballot `bal` counts for the coordination of `id`: one is under way
    /// in that ballot and the reply is positive. A refusal naming a higher ballot ends it.
    fn reply_counts(&mut self, id: InstanceId, bal: Ballot, ok: bool) -> bool {
        let Some(c) = self.coords.get(&id) else {
            return false;
        };
        if !ok {
            if bal > c.bal {
                self.abandon(id);
            }
            return false;
        }
        bal == c.bal
    }

    /// A higher ballot took over: stop, and wait (recovery may follow if nothing commits).
    fn abandon(&mut self, id: InstanceId) {
        self.coords.remove(&id);
        self.waiting.remove(&id);
        self.wait_for(id);
    }

    /// Re-sends the current phase's message to members that have not answered.
    pub(crate) fn retransmit(&mut self, out: &mut Out) {
        let every = (2 * self.config.heartbeat_ticks).max(4);
        let due: Vec<InstanceId> = self
            .coords
            .iter()
            .filter(|(_, c)| self.now >= c.sent + every)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.try_finish_pre_accept(id, out);
            let Some(c) = self.coords.get_mut(&id) else {
                continue;
            };
            c.sent = self.now;
            let bal = c.bal;
            for p in self.config.peers() {
                let m = match &c.phase {
                    Phase::PreAccept {
                        cmds,
                        orig,
                        replies,
                        ..
                    } if !replies.contains(&p) => Message::PreAccept {
                        id,
                        bal,
                        cmds: cmds.clone(),
                        attrs: orig.clone(),
                    },
                    Phase::Accept {
                        cmds, attrs, acks, ..
                    } if !acks.contains(&p) => Message::Accept {
                        id,
                        bal,
                        cmds: cmds.clone(),
                        attrs: attrs.clone(),
                    },
                    Phase::Prepare { replies } if !replies.contains_key(&p) => {
                        Message::Prepare { id, bal }
                    }
                    _ => continue,
                };
                out.send(p, m);
            }
        }
        // The fast-path wait may have run out without a new reply.
        let waiting_fast: Vec<InstanceId> = self
            .coords
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::PreAccept { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in waiting_fast {
            self.try_finish_pre_accept(id, out);
        }
    }

    /// The tick at which a wait that starts now turns into a recovery: a couple of election
    /// timeouts, jittered so that two replicas rarely recover the same instance at once.
    pub(crate) fn recovery_deadline(&mut self) -> u64 {
        let base = 2 * self.config.election_timeout_ticks.max(1);
        self.now + base + self.rng.below(base)
    }

    /// Explicit Prepare for every awaited instance whose wait ran out (§4.4).
    pub(crate) fn start_recoveries(&mut self, out: &mut Out) {
        // A replica that cannot reach a majority cannot finish a recovery; starting one would
        // only raise the ballot under the feet of a replica that can (duelling recoverers).
        if self.reach() < self.majority() {
            return;
        }
        let due: Vec<InstanceId> = self
            .waiting
            .iter()
            .filter(|(id, deadline)| **deadline <= self.now && !self.coords.contains_key(id))
            .map(|(id, _)| *id)
            .take(RECOVERIES_PER_TICK)
            .collect();
        for id in due {
            let done = self.is_executed(id)
                || self.is_collected(id)
                || self
                    .instance(id)
                    .is_some_and(|i| i.status == Status::Committed);
            if done {
                self.waiting.remove(&id);
                continue;
            }
            let deadline = self.recovery_deadline();
            self.waiting.insert(id, deadline);
            self.prepare(id, out);
        }
    }

    /// Phase "Explicit Prepare" at a ballot above any this replica has seen for `id`.
    pub(crate) fn prepare(&mut self, id: InstanceId, out: &mut Out) {
        let seen = self
            .instance(id)
            .map(|i| i.bal.max(i.vbal))
            .unwrap_or(Ballot::ZERO);
        let bal = Ballot {
            n: seen.n + 1,
            node: self.config.id,
        };
        let own = self.promise(id, bal, out);
        for p in others(&self.config) {
            out.send(p, Message::Prepare { id, bal });
        }
        let mut replies = BTreeMap::new();
        replies.insert(self.config.id, own);
        self.coords.insert(
            id,
            Coord {
                bal,
                phase: Phase::Prepare { replies },
                started: self.now,
                sent: self.now,
            },
        );
        self.try_finish_prepare(id, out);
    }

    pub(crate) fn on_prepare_reply(
        &mut self,
        from: NodeId,
        id: InstanceId,
        bal: Ballot,
        ok: bool,
        state: Option<Reported>,
        out: &mut Out,
    ) {
        if !self.reply_counts(id, bal, ok) {
            return;
        }
        if let Some(Coord {
            phase: Phase::Prepare { replies },
            ..
        }) = self.coords.get_mut(&id)
        {
            replies.entry(from).or_insert(state);
        }
        self.try_finish_prepare(id, out);
    }

    /// With a majority of replies, chooses what to finish the instance with (§4.4, with vbal).
    fn try_finish_prepare(&mut self, id: InstanceId, out: &mut Out) {
        let majority = self.majority();
        let Some(c) = self.coords.get(&id) else {
            return;
        };
        let Phase::Prepare { replies } = &c.phase else {
            return;
        };
        if replies.len() < majority {
            return;
        }
        let bal = c.bal;
        let by_ballot = self.config.bug(PlantedBug::EpaxosRecoveryByBallot);
        let order = |r: &Reported| if by_ballot { r.bal } else { r.vbal };
        let known: Vec<(NodeId, Reported)> = replies
            .iter()
            .filter_map(|(from, r)| r.clone().map(|r| (*from, r)))
            .collect();
        if let Some((_, r)) = known.iter().find(|(_, r)| r.status == Status::Committed) {
            let (cmds, attrs, vbal) = (r.cmds.clone(), r.attrs.clone(), r.vbal);
            self.commit_as_coordinator(id, vbal, cmds, attrs, out);
            return;
        }
        let accepted = known
            .iter()
            .filter(|(_, r)| r.status == Status::Accepted)
            .max_by_key(|(_, r)| order(r));
        if let Some((_, r)) = accepted {
            let (cmds, attrs) = (r.cmds.clone(), r.attrs.clone());
            self.accept(id, bal, cmds, attrs, out);
            return;
        }
        let initial = Ballot::initial(id);
        let fast_votes: Vec<&Reported> = known
            .iter()
            .filter(|(from, r)| {
                *from != id.replica
                    && r.status == Status::PreAccepted
                    && r.vbal == initial
                    && r.unchanged
            })
            .map(|(_, r)| r)
            .collect();
        if !fast_votes.is_empty() && fast_votes.len() >= self.f() {
            let (cmds, attrs) = (fast_votes[0].cmds.clone(), fast_votes[0].attrs.clone());
            self.accept(id, bal, cmds, attrs, out);
            return;
        }
        let pre = known
            .iter()
            .filter(|(_, r)| r.status == Status::PreAccepted)
            .max_by_key(|(_, r)| order(r));
        if let Some((_, r)) = pre {
            // Phase 1 again, in this ballot, without the fast path.
            let cmds = r.cmds.clone();
            let f = crate::types::batch_footprint(&cmds);
            let mut attrs = self
                .conflicts
                .attrs_for(&f, self.config.bug(PlantedBug::EpaxosGetCommutesWithPut));
            attrs.merge(&r.attrs);
            self.pre_accept(id, bal, cmds, attrs, false, out);
            return;
        }
        // Nobody in a majority saw the command: a no-op (it interferes with nothing).
        let noop = Attrs {
            seq: 0,
            deps: vec![0; self.n()],
        };
        self.accept(id, bal, Vec::new(), noop, out);
    }
}
