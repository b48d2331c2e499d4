//! Sequence Paxos (paper §4): the leader's Prepare phase with log synchronisation, AcceptSync,
//! AcceptDecide/Accepted with batching, the decided index, and PrepareReq so that a follower
//! that missed a Prepare or lost an AcceptDecide is prepared (and resynchronised) again.
//!
//! Invariants asserted here: the promised ballot never decreases (`DurableState::promise`), the
//! decided index never goes back (`update_decided`), a log is never truncated below the
//! decided index (`DurableState::sync`). Every Promise and Accepted is pushed to the output
//! buffer after the record it depends on, so `Ready::persist` writes that record first.

use crate::OmniPaxos;
use crate::ballot::Ballot;
use crate::messages::{Message, PaxosMessage};
use std::collections::{BTreeMap, BTreeSet};
use synod_core::Command as Entry;
use synod_core::{NodeId, PlantedBug, TransferStatus};

#[derive(Debug)]
pub enum Role {
    Follower,
    Leader(Box<LeaderState>),
}

impl Role {
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Leader(l) if l.phase == Phase::Prepare => "candidate",
            Role::Leader(_) => "leader",
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Phase {
    Prepare,
    Accept,
}

/// What a follower told the leader in its Promise.
#[derive(Debug, Clone)]
pub struct PromiseInfo {
    pub accepted_round: Ballot,
    pub log_len: u64,
    pub decided_idx: u64,
    pub suffix_start: u64,
    pub suffix: Vec<Entry>,
}

/// The leader's view of one synchronised follower in the Accept phase.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Entries below this were sent to the follower in this ballot.
    pub sent_idx: u64,
    /// The follower acknowledged accepting this many entries in this ballot.
    pub accepted_idx: u64,
    /// The decided index last sent to it.
    pub decided_sent: u64,
}

#[derive(Debug)]
pub struct LeaderState {
    pub n: Ballot,
    pub phase: Phase,
    /// Prepare phase: promises received in ballot `n`, this server's own included.
    pub promises: BTreeMap<NodeId, PromiseInfo>,
    /// Accept phase: followers that were sent AcceptSync in ballot `n`.
    pub followers: BTreeMap<NodeId, Progress>,
    /// Prepare phase: servers repairing lost storage that promised `n` (`repair.rs`): not
    /// counted toward the quorum, synchronised from position 0 once the phase completes.
    pub repairing: BTreeSet<NodeId>,
    /// Writes waiting for the next `flush` to be appended (batching).
    pub proposals: Vec<Entry>,
    /// A heartbeat tick passed: send every follower an AcceptDecide even if nothing is new.
    pub heartbeat_due: bool,
    /// Prepare phase: the log to adopt starts beyond ours (its owner compacted entries we
    /// lack); waiting for that server's snapshot, for this many heartbeats so far.
    pub awaiting_snapshot: Option<(NodeId, u32)>,
    /// Accept phase: handing leadership to another voter (`transfer.rs`).
    pub transfer: Option<crate::transfer::Transfer>,
    /// Planted `TransferTargetKeepsOwnLog` only: a target that took over by hand-off keeps
    /// its own log at the end of its Prepare phase. Always false in a correct server.
    pub keep_own_log: bool,
}

impl OmniPaxos {
    fn send(&mut self, to: NodeId, m: PaxosMessage) {
        self.out.messages.push((to, Message::Paxos(m)));
    }

    fn majority(&self) -> usize {
        self.config.majority()
    }

    pub(crate) fn leader_state(&self) -> Option<&LeaderState> {
        match &self.role {
            Role::Leader(l) => Some(l),
            Role::Follower => None,
        }
    }

    /// Leader in its ballot's Accept phase (may append and serve reads).
    pub(crate) fn accepting_ballot(&self) -> Option<Ballot> {
        self.leader_state()
            .filter(|l| l.phase == Phase::Accept)
            .map(|l| l.n)
    }

    /// Raises the decided index. It never goes back.
    fn update_decided(&mut self, idx: u64) {
        let before = self.store.decided_idx;
        self.store.decide(idx.min(self.store.log_len()));
        assert!(self.store.decided_idx >= before, "decided index went back");
    }

    /// BLE's leader after a heartbeat round is `b` (paper §5 → §4 "Leader" event). Called every
    /// round, so a server whose own ballot is elected but who does not lead it notices.
    pub(crate) fn on_ble_leader(&mut self, b: Ballot) {
        if b.pid == self.config.id {
            if self.store.amnesic {
                // Repairing: never lead with state we do not have (BLE does not nominate us;
                // this guards a ballot elected before the storage was lost).
                return;
            }
            if self.leader_state().is_some_and(|l| l.n == b) {
                return;
            }
            if b > self.store.promised {
                self.become_leader(b);
            } else {
                // Our own ballot is elected but we already promised it (or more) before a
                // restart: leading it again could contradict accepts we sent and forgot.
                // Take a strictly higher ballot; BLE elects it next round.
                self.ble.outbid(self.store.promised);
            }
        } else if self.role.is_leader() {
            self.step_down();
        }
    }

    fn step_down(&mut self) {
        // Proposals still buffered are dropped: local ones are re-forwarded from the pending
        // table, remote ones by their origin.
        self.role = Role::Follower;
        self.read_round = None;
    }

    fn own_promise(&self) -> PromiseInfo {
        PromiseInfo {
            accepted_round: self.store.accepted_round,
            log_len: self.store.log_len(),
            decided_idx: self.store.decided_idx,
            suffix_start: self.store.log_len(),
            suffix: Vec::new(),
        }
    }

    pub(crate) fn become_leader(&mut self, n: Ballot) {
        self.store.promise(n, &mut self.out.records);
        self.read_round = None;
        let mut promises = BTreeMap::new();
        promises.insert(self.config.id, self.own_promise());
        self.role = Role::Leader(Box::new(LeaderState {
            n,
            phase: Phase::Prepare,
            promises,
            followers: BTreeMap::new(),
            repairing: BTreeSet::new(),
            proposals: Vec::new(),
            heartbeat_due: false,
            awaiting_snapshot: None,
            transfer: None,
            keep_own_log: false,
        }));
        let peers: Vec<NodeId> = self.config.peers().collect();
        for p in peers {
            self.send_prepare(p);
        }
        if self.majority() <= 1 {
            self.complete_prepare();
        }
    }

    fn send_prepare(&mut self, to: NodeId) {
        let Some(n) = self.leader_state().map(|l| l.n) else {
            return;
        };
        let m = PaxosMessage::Prepare {
            n,
            decided_idx: self.store.decided_idx,
            accepted_round: self.store.accepted_round,
            log_len: self.store.log_len(),
        };
        self.send(to, m);
    }

    /// Every `heartbeat_ticks`: the leader re-sends Prepare to servers that have not promised
    /// (lost messages, restarts) and schedules a heartbeat AcceptDecide to the rest.
    pub(crate) fn leader_heartbeat(&mut self, snapshots: &dyn TransferStatus<Ballot>) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        l.heartbeat_due = true;
        let n = l.n;
        let majority = self.config.majority();
        // Waiting too long for a snapshot from a server that may be down: forget its promise
        // if a majority remains (any majority's promises make the Prepare phase safe).
        let mut give_up = None;
        if let Some((from, waited)) = &mut l.awaiting_snapshot {
            *waited += 1;
            if *waited > crate::snapshot::SNAPSHOT_STALL_HEARTBEATS_MAX
                && l.promises.len() > majority
            {
                give_up = Some(*from);
            }
        }
        if let Some(from) = give_up {
            l.promises.remove(&from);
            l.awaiting_snapshot = None;
        }
        let awaiting = l.awaiting_snapshot.map(|(p, _)| p);
        let unsynced: Vec<NodeId> = self
            .config
            .peers()
            .filter(|p| match l.phase {
                // Re-prepare a server we wait a snapshot from whose transfer is not running:
                // its new Promise restarts the push.
                Phase::Prepare => {
                    !l.promises.contains_key(p)
                        || (awaiting == Some(*p) && !snapshots.receiving_from(*p, n))
                }
                Phase::Accept => !l.followers.contains_key(p) && !snapshots.sending_to(*p, n),
            })
            .collect();
        for p in unsynced {
            self.send_prepare(p);
        }
        if give_up.is_some() {
            self.complete_prepare();
        }
        self.resend_read_confirm();
        self.transfer_progress();
    }

    /// A snapshot was installed: a candidate re-evaluates its Prepare phase with its new log.
    pub(crate) fn on_snapshot_installed(&mut self) {
        let own = self.own_promise();
        let me = self.config.id;
        if let Role::Leader(l) = &mut self.role
            && l.phase == Phase::Prepare
        {
            l.promises.insert(me, own);
            self.complete_prepare();
        }
    }

    pub(crate) fn handle_paxos(
        &mut self,
        from: NodeId,
        m: PaxosMessage,
        snapshots: &dyn TransferStatus<Ballot>,
    ) {
        match m {
            PaxosMessage::Prepare {
                n,
                decided_idx,
                accepted_round,
                log_len,
            } => self.handle_prepare(from, n, decided_idx, accepted_round, log_len),
            PaxosMessage::Promise {
                n,
                amnesic,
                accepted_round,
                log_len,
                decided_idx,
                suffix_start,
                suffix,
            } => self.handle_promise(
                snapshots,
                from,
                n,
                amnesic,
                PromiseInfo {
                    accepted_round,
                    log_len,
                    decided_idx,
                    suffix_start,
                    suffix,
                },
            ),
            PaxosMessage::AcceptSync {
                n,
                sync_idx,
                suffix,
                decided_idx,
            } => self.handle_accept_sync(from, n, sync_idx, suffix, decided_idx),
            PaxosMessage::AcceptDecide {
                n,
                start_idx,
                entries,
                decided_idx,
            } => self.handle_accept_decide(from, n, start_idx, entries, decided_idx),
            PaxosMessage::Accepted { n, accepted_idx } => {
                self.handle_accepted(from, n, accepted_idx)
            }
            PaxosMessage::PrepareReq { n } => {
                let Some(l) = self.leader_state() else {
                    return;
                };
                if l.n != n || snapshots.sending_to(from, n) {
                    // (During a snapshot transfer the follower is out of sync by design.)
                    return;
                }
                if let Role::Leader(l) = &mut self.role {
                    // Not synchronised any more until it promises again.
                    l.followers.remove(&from);
                }
                self.send_prepare(from);
            }
            PaxosMessage::ReadConfirm { n, round } => {
                if n == self.store.promised && !self.role.is_leader() && !self.store.amnesic {
                    self.send(from, PaxosMessage::ReadConfirmAck { n, round });
                }
            }
            PaxosMessage::ReadConfirmAck { n, round } => {
                self.handle_read_confirm_ack(from, n, round)
            }
            PaxosMessage::TakeOver { n, log_len } => self.handle_take_over(from, n, log_len),
            PaxosMessage::RepairQuery { nonce } => self.handle_repair_query(from, nonce),
            PaxosMessage::RepairInfo { nonce, promised } => {
                self.handle_repair_info(from, nonce, promised)
            }
        }
    }

    /// §4 Prepare: promise if `n` is at least the promised ballot, and send the part of the log
    /// the leader may lack (by comparing accepted rounds and lengths).
    fn handle_prepare(
        &mut self,
        from: NodeId,
        n: Ballot,
        leader_decided: u64,
        leader_round: Ballot,
        leader_len: u64,
    ) {
        if n < self.store.promised || n.pid != from {
            return;
        }
        if self.store.amnesic {
            self.amnesic_promise(from, n);
            return;
        }
        if n > self.store.promised {
            self.store.promise(n, &mut self.out.records);
            if self.role.is_leader() {
                self.step_down();
            }
        }
        let len = self.store.log_len();
        let start = if self.store.accepted_round > leader_round {
            leader_decided.min(len)
        } else if self.store.accepted_round == leader_round && len > leader_len {
            leader_len
        } else {
            len
        };
        // Entries below our compacted index are decided; if the leader may lack some of them,
        // it gets them as our snapshot (pushed now) and the suffix starts after them.
        let suffix_start = start.max(self.store.compacted_idx());
        if start < self.store.compacted_idx() {
            self.start_snapshot_send(from);
        }
        let suffix = self.store.slice(suffix_start, len);
        let m = if self.config.bug(PlantedBug::ForgetAcceptedBallot) {
            // PLANTED BUG: the promise forgets what this server accepted.
            PaxosMessage::Promise {
                n,
                amnesic: false,
                accepted_round: Ballot::BOTTOM,
                log_len: self.store.decided_idx,
                decided_idx: self.store.decided_idx,
                suffix_start: self.store.decided_idx,
                suffix: Vec::new(),
            }
        } else {
            PaxosMessage::Promise {
                n,
                amnesic: false,
                accepted_round: self.store.accepted_round,
                log_len: len,
                decided_idx: self.store.decided_idx,
                suffix_start,
                suffix,
            }
        };
        self.send(from, m);
    }

    /// Repairing (`repair.rs`): once the promise floor is known, promise `n` but flag the
    /// promise amnesic, so the leader only synchronises us.
    fn amnesic_promise(&mut self, from: NodeId, n: Ballot) {
        if !self.repair_floor_known() {
            return;
        }
        self.store.promise(n, &mut self.out.records);
        // PLANTED BUG (OmniAmnesicVotes): the empty promise looks like an ordinary one.
        let amnesic = !self.config.bug(PlantedBug::OmniAmnesicVotes);
        self.send(
            from,
            PaxosMessage::Promise {
                n,
                amnesic,
                accepted_round: Ballot::BOTTOM,
                log_len: 0,
                decided_idx: 0,
                suffix_start: 0,
                suffix: Vec::new(),
            },
        );
    }

    fn handle_promise(
        &mut self,
        snapshots: &dyn TransferStatus<Ballot>,
        from: NodeId,
        n: Ballot,
        amnesic: bool,
        p: PromiseInfo,
    ) {
        let Some(l) = self.leader_state() else {
            return;
        };
        if l.n != n {
            return;
        }
        match l.phase {
            Phase::Prepare if amnesic => {
                if let Role::Leader(l) = &mut self.role {
                    l.repairing.insert(from);
                }
            }
            Phase::Prepare => {
                let majority = self.majority();
                let Role::Leader(l) = &mut self.role else {
                    return;
                };
                l.repairing.remove(&from);
                l.promises.insert(from, p);
                if l.promises.len() >= majority {
                    self.complete_prepare();
                }
            }
            Phase::Accept if snapshots.sending_to(from, n) => {
                // Being brought in line by snapshot already; AcceptSync follows its install.
            }
            Phase::Accept => {
                // A late (or re-requested) promise: the leader's log is final for this ballot,
                // so just bring the follower in line with it.
                let sync_idx = if p.accepted_round == n {
                    p.log_len
                } else {
                    p.decided_idx
                };
                self.send_accept_sync(from, sync_idx);
            }
        }
    }

    /// §4: a majority promised. Adopt the log with the highest accepted round (longest among
    /// equals), then AcceptSync every promised follower.
    fn complete_prepare(&mut self) {
        let me = self.config.id;
        let majority = self.majority();
        let my_len = self.store.log_len();
        let my_round = self.store.accepted_round;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if l.phase != Phase::Prepare || l.promises.len() < majority {
            return;
        }
        let n = l.n;
        let (max_pid, max) = l
            .promises
            .iter()
            .max_by_key(|(pid, p)| (p.accepted_round, p.log_len, **pid == me))
            .map(|(pid, p)| (*pid, p.clone()))
            .expect("own promise is always present");
        // (Planted TransferTargetKeepsOwnLog: a hand-off target skips the adoption.)
        let adopt = max_pid != me
            && (max.accepted_round, max.log_len) > (my_round, my_len)
            && !l.keep_own_log;
        // Adopting means keeping our log below `suffix_start` and taking the suffix after it,
        // so our log must equal the adopted one there: guaranteed up to our length in the same
        // accepted round (logs of one round are prefixes of each other), else only up to our
        // decided index. A suffix starting beyond that was cut by the owner's compaction (it
        // decided entries we did not): its owner is pushing its snapshot (handle_prepare), and
        // we finish once it is installed.
        let consistent_prefix = if max.accepted_round == my_round {
            my_len
        } else {
            self.store.decided_idx
        };
        if adopt && max.suffix_start > consistent_prefix {
            if l.awaiting_snapshot.is_none_or(|(p, _)| p != max_pid) {
                l.awaiting_snapshot = Some((max_pid, 0));
            }
            return;
        }
        l.awaiting_snapshot = None;
        let promises = std::mem::take(&mut l.promises);
        let repairing = std::mem::take(&mut l.repairing);
        let decided = self.store.decided_idx;
        let (from_idx, suffix) = if adopt {
            // The suffix starts at our decided index or our length (see handle_prepare);
            // never let it reach below our decided prefix, which is already chosen.
            let skip = decided.saturating_sub(max.suffix_start) as usize;
            let from = max.suffix_start.max(decided);
            (from, max.suffix.iter().skip(skip).cloned().collect())
        } else {
            (my_len, Vec::new())
        };
        self.store.sync(n, from_idx, suffix, &mut self.out.records);
        let max_decided = promises.values().map(|p| p.decided_idx).max().unwrap_or(0);
        self.update_decided(max_decided);
        let reference_round = max.accepted_round;
        if let Role::Leader(l) = &mut self.role {
            l.phase = Phase::Accept;
        }
        for (pid, p) in promises {
            if pid == me {
                continue;
            }
            let sync_idx = if p.accepted_round == reference_round {
                p.log_len
            } else {
                p.decided_idx
            };
            self.send_accept_sync(pid, sync_idx);
        }
        for pid in repairing {
            // Lost everything: the whole log (or a snapshot first).
            self.send_accept_sync(pid, 0);
        }
    }

    /// AcceptSync carries the leader's WHOLE log from `sync_idx`, never a batch of it: a log
    /// accepted in round n must contain every entry chosen before n (that is what lets the
    /// next Prepare trust "highest accepted round wins"), so the follower may only take the
    /// round n together with the complete synchronised log.
    pub(crate) fn send_accept_sync(&mut self, to: NodeId, sync_idx: u64) {
        let len = self.store.log_len();
        let decided = self.store.decided_idx;
        let compacted = self.store.compacted_idx();
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let n = l.n;
        let sync_idx = sync_idx.min(len);
        if sync_idx < compacted {
            // The follower needs entries we compacted: snapshot first, AcceptSync after its
            // install (handle_snapshot_ack).
            l.followers.remove(&to);
            self.start_snapshot_send(to);
            return;
        }
        l.followers.insert(
            to,
            Progress {
                sent_idx: len,
                accepted_idx: 0,
                decided_sent: decided,
            },
        );
        let suffix = self.store.slice(sync_idx, len);
        self.send(
            to,
            PaxosMessage::AcceptSync {
                n,
                sync_idx,
                suffix,
                decided_idx: decided,
            },
        );
    }

    /// Asks the owner of ballot `n` to prepare this server again, at most once per heartbeat.
    fn request_prepare(&mut self, n: Ballot) {
        if let Some(last) = self.last_prepare_req_tick
            && self.now_ticks < last + self.config.heartbeat_ticks
        {
            return;
        }
        self.last_prepare_req_tick = Some(self.now_ticks);
        self.send(n.pid, PaxosMessage::PrepareReq { n });
    }

    fn handle_accept_sync(
        &mut self,
        from: NodeId,
        n: Ballot,
        sync_idx: u64,
        suffix: Vec<Entry>,
        decided_idx: u64,
    ) {
        if n.pid != from || n < self.store.promised {
            return;
        }
        if self.store.amnesic && !self.repair_floor_known() {
            return;
        }
        if n > self.store.promised {
            // We never promised n (a leader only syncs promised followers): get prepared.
            self.request_prepare(n);
            return;
        }
        if self.store.accepted_round == n {
            // Already synchronised in n: an old or duplicate sync must never shorten a log
            // whose length we may already have acknowledged; only extend it.
            self.accept_entries(n, sync_idx, suffix, decided_idx);
            return;
        }
        let (sync_idx, suffix) = if sync_idx < self.store.decided_idx
            && sync_idx + suffix.len() as u64 >= self.store.decided_idx
        {
            // The start overlaps our decided prefix (decided entries are the same in every
            // log): sync from our decided index instead.
            let skip = (self.store.decided_idx - sync_idx) as usize;
            (
                self.store.decided_idx,
                suffix.into_iter().skip(skip).collect(),
            )
        } else {
            (sync_idx, suffix)
        };
        if sync_idx > self.store.log_len() || sync_idx < self.store.decided_idx {
            self.request_prepare(n);
            return;
        }
        self.store.sync(n, sync_idx, suffix, &mut self.out.records);
        // The leader's log, accepted in n (at or above any ballot we ever promised): a state
        // we really have. Its record follows the sync record, so it is never durable alone.
        self.finish_repair();
        self.update_decided(decided_idx);
        let accepted_idx = self.store.log_len();
        self.send(from, PaxosMessage::Accepted { n, accepted_idx });
    }

    fn handle_accept_decide(
        &mut self,
        from: NodeId,
        n: Ballot,
        start_idx: u64,
        entries: Vec<Entry>,
        decided_idx: u64,
    ) {
        if n.pid != from || n < self.store.promised {
            return;
        }
        if self.store.amnesic && !self.repair_floor_known() {
            return;
        }
        // (n == promised with n.pid != me: we cannot be leading n ourselves.)
        if n > self.store.promised || self.store.accepted_round != n {
            // Missed the Prepare or the AcceptSync of ballot n.
            self.request_prepare(n);
            return;
        }
        self.accept_entries(n, start_idx, entries, decided_idx);
    }

    /// Appends the part of `entries` (which belong at `start_idx`) beyond our log. Our log is a
    /// prefix of the leader's in round `n`, so overlapping entries are identical.
    fn accept_entries(&mut self, n: Ballot, start_idx: u64, entries: Vec<Entry>, decided: u64) {
        let len = self.store.log_len();
        if start_idx > len {
            // A gap: an earlier AcceptDecide was lost.
            self.request_prepare(n);
            return;
        }
        let skip = (len - start_idx) as usize;
        if entries.len() > skip {
            let new: Vec<Entry> = entries.into_iter().skip(skip).collect();
            self.store.append(new, &mut self.out.records);
        }
        self.update_decided(decided);
        let accepted_idx = self.store.log_len();
        self.send(n.pid, PaxosMessage::Accepted { n, accepted_idx });
    }

    fn handle_accepted(&mut self, from: NodeId, n: Ballot, accepted_idx: u64) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if l.n != n || l.phase != Phase::Accept {
            return;
        }
        if let Some(p) = l.followers.get_mut(&from) {
            p.accepted_idx = p.accepted_idx.max(accepted_idx);
        }
        self.try_decide();
        self.transfer_progress();
    }

    /// Decided = the highest index accepted in this ballot by a majority (the leader's own log
    /// counts: it is written in the same or an earlier `ready` than any message deciding it).
    fn try_decide(&mut self) {
        let majority = self.majority();
        let Some(l) = self.leader_state() else {
            return;
        };
        let mut acc: Vec<u64> = l.followers.values().map(|p| p.accepted_idx).collect();
        acc.push(self.store.log_len());
        if acc.len() < majority {
            return;
        }
        acc.sort_unstable_by(|a, b| b.cmp(a));
        let d = acc[majority - 1];
        if d > self.store.decided_idx {
            self.update_decided(d);
        }
    }

    /// Called by `ready`: append the batched proposals and send ONE AcceptDecide per follower
    /// (at most `batch_entries_max` entries) carrying the new entries and decided index.
    pub(crate) fn leader_flush(&mut self) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if l.phase != Phase::Accept {
            return;
        }
        // Adaptive batching: while every follower still has a batch in flight, new proposals
        // wait for the first acknowledgement (or a full batch, or a heartbeat). Under load each
        // round trip then carries everything that arrived during the previous one — fewer
        // fsyncs and messages per write on every member, and fsync CPU (a VM exit per request
        // here) was ≈25 % of a leader's engine thread — while an idle cluster sends at once.
        // Decided-index updates ride along with the next batch, at most one round trip later.
        let all_busy =
            !l.followers.is_empty() && l.followers.values().all(|p| p.accepted_idx < p.sent_idx);
        if all_busy && !l.heartbeat_due && l.proposals.len() < self.config.batch_entries_max {
            return;
        }
        // (A proposal buffered during the Prepare phase may already be in the log adopted at
        // its end; the replica layer applies an origin once, so a duplicate is harmless.)
        let proposals = std::mem::take(&mut l.proposals);
        self.store.append(proposals, &mut self.out.records);
        if self.config.bug(PlantedBug::AckBeforeMajority) {
            // PLANTED BUG: decide everything the leader has, before any follower accepted it.
            let len = self.store.log_len();
            self.update_decided(len);
        }
        self.try_decide();
        let len = self.store.log_len();
        let decided = self.store.decided_idx;
        let batch = self.config.batch_entries_max as u64;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let n = l.n;
        let heartbeat = std::mem::take(&mut l.heartbeat_due);
        // A follower so far behind that its next entry is compacted catches up by snapshot.
        let compacted = self.store.compacted_idx();
        let behind: Vec<NodeId> = l
            .followers
            .iter()
            .filter(|(_, p)| p.sent_idx < compacted)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in &behind {
            l.followers.remove(pid);
        }
        let mut sends = Vec::new();
        for (pid, p) in l.followers.iter_mut() {
            if p.sent_idx < len || p.decided_sent < decided || heartbeat {
                let end = len.min(p.sent_idx + batch);
                sends.push((*pid, p.sent_idx, end));
                p.sent_idx = end;
                p.decided_sent = decided;
            }
        }
        for pid in behind {
            self.start_snapshot_send(pid);
        }
        for (pid, start, end) in sends {
            let entries = self.store.slice(start, end);
            // Early: a follower accepts these on the strength of the promise quorum of ballot
            // n (durable since Prepare) and the decided index counts only acceptances already
            // durable; the leader's own append in this batch is counted only when it handles
            // the followers' Accepted, which the caller delivers after this batch's fsync.
            // So the leader's fsync overlaps the followers' instead of preceding it.
            self.out.early.push((
                pid,
                Message::Paxos(PaxosMessage::AcceptDecide {
                    n,
                    start_idx: start,
                    entries,
                    decided_idx: decided,
                }),
            ));
        }
    }

    /// Leader: queue a write for the next batch (the replica layer deduplicates origins).
    pub(crate) fn propose_entry(&mut self, e: Entry) -> bool {
        let cap = self.config.pending_requests_max * self.config.members.len();
        let Role::Leader(l) = &mut self.role else {
            return false;
        };
        if l.transfer.is_some() {
            // Handing leadership away (transfer.rs): the origin re-forwards to the next leader.
            return false;
        }
        if l.proposals.len() >= cap {
            // Over the bound the origin's re-forwarding retries later.
            return false;
        }
        l.proposals.push(e);
        true
    }
}
