//! Client requests at this replica: the bounded pending table, forwarding writes (and
//! read-index requests) to the leader with re-forwarding, timeouts, applying decided entries
//! and answering each request exactly once.
//!
//! A forwarded command is never silently lost: it stays in the pending table of the replica it
//! was submitted to until it is seen applied (or times out with `Timeout`, "outcome unknown"),
//! and is re-forwarded every `2 * heartbeat_ticks` and at once whenever the leader changes.
//! Re-forwarding cannot apply a command twice: application skips an origin already applied
//! (see `state.rs`), and the leader does not propose an origin twice in one leadership.

use crate::Replica;
use crate::messages::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use synod_core::kv::{Op, Response, ResponseBody};
use synod_core::{
    ClientId, ClientReply, ClientRequest, Command, Consistency, EngineError, LogProtocol, NodeId,
    Origin, PlantedBug, RequestId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingKind {
    /// A write: proposed at the leader or forwarded to it.
    Write,
    /// A linearizable read waiting for a confirmed read index.
    ReadAwaitIndex,
    /// A linearizable read to serve once applied up to this index.
    ReadAt(u64),
}

#[derive(Debug)]
pub struct Pending {
    pub request: ClientRequest,
    pub kind: PendingKind,
    /// When it was last proposed/forwarded (None = never: no leader known yet).
    pub last_sent_tick: Option<u64>,
}

#[derive(Debug)]
pub struct PendingTable {
    incarnation: u64,
    next_seq: u64,
    entries: BTreeMap<u64, Pending>,
    /// Session writes by request id, so that an applied entry answers every pending copy of
    /// the same request here (a client may retry at the replica it already used).
    by_id: HashMap<RequestId, BTreeSet<u64>>,
    /// (deadline tick, seq) in submission order; deadlines are submit time + a constant, so
    /// this is sorted and expiry only looks at the front.
    expiry: VecDeque<(u64, u64)>,
    /// (read index, seq) of reads that only wait for the apply index.
    ready_reads: BTreeSet<(u64, u64)>,
}

impl PendingTable {
    pub fn new(incarnation: u64) -> Self {
        PendingTable {
            incarnation,
            next_seq: 1,
            entries: BTreeMap::new(),
            by_id: HashMap::new(),
            expiry: VecDeque::new(),
            ready_reads: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every pending request with its seq, in submission order, and the table emptied.
    pub fn drain(&mut self) -> Vec<(u64, ClientRequest)> {
        self.by_id.clear();
        self.expiry.clear();
        self.ready_reads.clear();
        std::mem::take(&mut self.entries)
            .into_iter()
            .map(|(seq, p)| (seq, p.request))
            .collect()
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Origins made from now on carry `incarnation` (a joiner's first state, `snapshot.rs`).
    pub fn set_incarnation(&mut self, incarnation: u64) {
        self.incarnation = incarnation;
    }

    fn insert(&mut self, request: ClientRequest, kind: PendingKind, deadline: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if kind == PendingKind::Write && request.id.client != ClientId::NONE {
            self.by_id.entry(request.id).or_default().insert(seq);
        }
        self.expiry.push_back((deadline, seq));
        self.entries.insert(
            seq,
            Pending {
                request,
                kind,
                last_sent_tick: None,
            },
        );
        seq
    }

    fn remove(&mut self, seq: u64) -> Option<Pending> {
        let p = self.entries.remove(&seq)?;
        if let Some(set) = self.by_id.get_mut(&p.request.id) {
            set.remove(&seq);
            if set.is_empty() {
                self.by_id.remove(&p.request.id);
            }
        }
        if let PendingKind::ReadAt(idx) = p.kind {
            self.ready_reads.remove(&(idx, seq));
        }
        Some(p)
    }

    /// A sequence number for a command this replica makes itself (a lessor's expiry): an
    /// origin no client request has, and nobody waits for its reply.
    pub fn next_internal_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub fn origin(&self, node: NodeId, seq: u64) -> Origin {
        Origin {
            node,
            incarnation: self.incarnation,
            seq,
        }
    }

    /// A new epoch: reads promised an index past its start were confirmed by the old
    /// instance, whose log there is void; they ask the new epoch's leader again.
    pub fn reset_reads_above(&mut self, applied: u64) {
        let above: Vec<(u64, u64)> = self
            .ready_reads
            .iter()
            .filter(|(idx, _)| *idx > applied)
            .copied()
            .collect();
        for (idx, seq) in above {
            self.ready_reads.remove(&(idx, seq));
            if let Some(p) = self.entries.get_mut(&seq) {
                p.kind = PendingKind::ReadAwaitIndex;
                p.last_sent_tick = None;
            }
        }
    }

    /// A read learned its confirmed read index.
    pub fn set_read_index(&mut self, seq: u64, read_index: u64) {
        if let Some(p) = self.entries.get_mut(&seq)
            && p.kind == PendingKind::ReadAwaitIndex
        {
            p.kind = PendingKind::ReadAt(read_index);
            self.ready_reads.insert((read_index, seq));
        }
    }
}

impl<P: LogProtocol> Replica<P> {
    pub(crate) fn reply(&mut self, id: RequestId, result: Result<Response, EngineError>) {
        self.out.replies.push(ClientReply { id, result });
    }

    /// A read of the local state, with what the lessor adds (a lease's time left).
    fn read_local(&self, op: &Op) -> Result<Response, EngineError> {
        // A split or merge applied since the read was routed: the keys are another
        // group's now.
        let checks = self.range_checks();
        let frozen = checks.frozen && self.state.range.frozen.is_some();
        if (frozen || !self.state.range.range.holds(op))
            && checks.owner
            && !self.config.bug(PlantedBug::PartitionSplitServesMovedKeys)
        {
            return Err(self.state.wrong_group());
        }
        let mut r = self.state.kv.read(op);
        if let Ok(Response {
            body: ResponseBody::LeaseTimeToLive(ttl),
            ..
        }) = &mut r
        {
            self.with_remaining_ttl(ttl);
        }
        r
    }

    pub(crate) fn submit_request(&mut self, mut request: ClientRequest) {
        if let Some(e) = self.check_membership(&request) {
            self.reply(request.id, Err(e));
            return;
        }
        if matches!(request.op, Op::Move(_)) {
            // The partitioned engine drives moves; a group's replica never takes one.
            self.reply(
                request.id,
                Err(EngineError::InvalidRequest(
                    "moving a range's replicas needs placement: `[partition] replicas` below \
                     the members (docs/partitioning.md, \"Placement\")"
                        .to_string(),
                )),
            );
            return;
        }
        if matches!(
            request.op,
            Op::Split(_) | Op::Merge(_) | Op::Absorb(_) | Op::CloseRevisions { .. }
        ) && !self.config.partition_group
        {
            // Cutting the one store of an unpartitioned cluster would lose half of it.
            self.reply(
                request.id,
                Err(EngineError::Unsupported {
                    engine: P::NAME.to_string(),
                    what: "range splits and merges (only a partitioned cluster has ranges: \
                           `synod dev --groups N`)"
                        .to_string(),
                }),
            );
            return;
        }
        if let Op::LeaseGrant(g) = &mut request.op {
            // etcd's rule: a lease shorter than an election would expire before a new leader
            // could have renewed it.
            g.ttl = g.ttl.max(self.min_lease_ttl());
        }
        if self.pending.len() >= self.config.pending_requests_max {
            self.reply(request.id, Err(EngineError::Busy));
            return;
        }
        // A session keeps `client_window_max` saved replies; a write further ahead of the
        // client's acknowledged floor could push out the reply of one of its own earlier
        // writes still being retried, which would then be refused as expired. Refusing it
        // here (definitely not applied) keeps the two bounds in agreement.
        let window = self.config.kv.client_window_max as u64;
        if !request.op.is_read()
            && request.id.client != ClientId::NONE
            && request.id.seq >= request.first_unacked.saturating_add(window)
        {
            self.reply(request.id, Err(EngineError::Busy));
            return;
        }
        let deadline = self.now_ticks + self.config.request_timeout_ticks;
        if request.op.is_read() && (!P::READS_AS_COMMANDS || self.sequential(&request)) {
            if request.consistency == Consistency::Sequential
                || self.config.bug(PlantedBug::StaleLinearizableRead)
                || self.planted_removed_leader_read(&request)
            {
                // Sequential: local state never goes back at one replica. (With the planted
                // bug `StaleLinearizableRead` linearizable reads take this path too.)
                let r = self.read_local(&request.op);
                self.reply(request.id, r);
                return;
            }
            let seq = self
                .pending
                .insert(request, PendingKind::ReadAwaitIndex, deadline);
            self.route(seq);
        } else {
            let seq = self.pending.insert(request, PendingKind::Write, deadline);
            self.route(seq);
        }
    }

    /// A read that may be served from local state (etcd's serializable).
    fn sequential(&self, request: &ClientRequest) -> bool {
        request.consistency == Consistency::Sequential
            || self.config.bug(PlantedBug::StaleLinearizableRead)
    }

    /// Sends a pending write or read-index request towards the leader (or handles it here).
    fn route(&mut self, seq: u64) {
        let me = self.config.id;
        let hint = self.leader_hint();
        let origin = self.pending.origin(me, seq);
        let Some(p) = self.pending.entries.get_mut(&seq) else {
            return;
        };
        let Some(leader) = hint else {
            return;
        };
        p.last_sent_tick = Some(self.now_ticks);
        match p.kind {
            PendingKind::Write => {
                let c = Command {
                    id: p.request.id,
                    first_unacked: p.request.first_unacked,
                    op: p.request.op.clone(),
                    origin,
                };
                if leader == me {
                    self.propose(c);
                } else {
                    self.forward_buf.entry(leader).or_default().push(c);
                }
            }
            PendingKind::ReadAwaitIndex => {
                if leader == me {
                    self.reads.enqueue(origin);
                } else {
                    self.read_req_buf.entry(leader).or_default().push(seq);
                }
            }
            PendingKind::ReadAt(_) => {}
        }
    }

    /// Leader: proposes a command unless it was applied or proposed in this leadership.
    pub(crate) fn propose(&mut self, c: Command) {
        if !self.is_leader() || self.state.was_applied(&c.origin) {
            return;
        }
        // Bounded like the pending tables of all members together; beyond it the origin's
        // re-forwarding retries later.
        let cap = self.config.pending_requests_max * self.state.config.members.len().max(1);
        if self.proposed.len() >= cap || !self.proposed.insert(c.origin) {
            return;
        }
        let origin = c.origin;
        let Some(p) = self.protocol.as_mut() else {
            return;
        };
        if !p.propose(c) {
            // Not taken: let the next re-forward try again in this leadership.
            self.proposed.remove(&origin);
        }
    }

    /// Re-forwards pending requests: all of them when `now` (leader change), else those not
    /// sent for `2 * heartbeat_ticks`.
    pub(crate) fn reforward(&mut self, now: bool) {
        let period = 2 * self.config.heartbeat_ticks;
        let due: Vec<u64> = self
            .pending
            .entries
            .iter()
            .filter(|(_, p)| !matches!(p.kind, PendingKind::ReadAt(_)))
            .filter(|(_, p)| {
                now || p
                    .last_sent_tick
                    .is_none_or(|t| self.now_ticks >= t + period)
            })
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            self.route(seq);
        }
    }

    /// Called by `ready`: one Forward / ReadIndexReq message per destination and batch.
    pub(crate) fn flush_forwards(&mut self) {
        let batch = self.config.batch_entries_max;
        for (to, entries) in std::mem::take(&mut self.forward_buf) {
            let mut entries = entries.into_iter().peekable();
            while entries.peek().is_some() {
                let chunk: Vec<Command> = entries.by_ref().take(batch).collect();
                self.out
                    .messages
                    .push((to, Message::Forward { entries: chunk }));
            }
        }
        let incarnation = self.pending.incarnation();
        for (to, seqs) in std::mem::take(&mut self.read_req_buf) {
            for chunk in seqs.chunks(batch) {
                self.out.messages.push((
                    to,
                    Message::ReadIndexReq {
                        incarnation,
                        seqs: chunk.to_vec(),
                    },
                ));
            }
        }
    }

    /// Forwarded writes: only the leader takes them; anyone else drops them and the origin's
    /// re-forwarding finds the leader.
    pub(crate) fn handle_forward(&mut self, from: NodeId, entries: Vec<Command>) {
        if !self.is_leader() {
            return;
        }
        for c in entries {
            if c.origin.node == from {
                self.propose(c);
            }
        }
    }

    pub(crate) fn handle_read_index_req(&mut self, from: NodeId, incarnation: u64, seqs: Vec<u64>) {
        if !self.is_leader() {
            return;
        }
        for seq in seqs {
            self.reads.enqueue(Origin {
                node: from,
                incarnation,
                seq,
            });
        }
    }

    pub(crate) fn handle_read_index_resp(&mut self, incarnation: u64, seqs: Vec<u64>, idx: u64) {
        if incarnation != self.pending.incarnation() {
            return;
        }
        for seq in seqs {
            self.pending.set_read_index(seq, idx);
        }
    }

    /// Applies newly decided entries in log order and answers the requests waiting here. A
    /// change of the voter set ends the epoch there (see `membership.rs`).
    pub(crate) fn apply_decided(&mut self) {
        self.state.checks = self.range_checks();
        let mut new_epoch = false;
        while let Some(p) = self.protocol.as_ref() {
            let decided = p.decided_idx();
            if self.state.applied_index() >= decided {
                break;
            }
            let idx = self.state.applied_index() + 1;
            let before = self.state.config.epoch;
            let c = p.entry(idx - 1);
            let (origin, id) = (c.origin, c.id);
            self.proposed.remove(&origin);
            let learners = self.learners_before(c);
            let result = if self.config.bug(PlantedBug::DivergentApply) {
                self.state.apply(idx, &crate::planted::diverged(c))
            } else {
                self.state.apply(idx, c)
            };
            if let Some(result) = result {
                self.answer_applied(origin, id, result);
            }
            self.note_added_learners(idx, learners);
            self.note_applied_digest(idx);
            if self.state.config.epoch != before {
                new_epoch = true;
                if self.past_stop_sign_planted() {
                    self.planted_ack_past_stop_sign();
                }
                break;
            }
        }
        if new_epoch {
            self.start_epoch_instance();
        }
        self.track_leases();
        if !P::CAPABILITIES.revisions {
            self.state.kv.forget_history();
        }
    }

    /// Keeps `idx`'s digest in the short trail the simulator compares across replicas (log
    /// engines only: without a total order, digests at one index differ legitimately).
    fn note_applied_digest(&mut self, idx: u64) {
        if !P::CAPABILITIES.revisions || !self.config.keep_applied_trail {
            return;
        }
        if self.applied_trail.len() == synod_core::APPLIED_TRAIL_MAX {
            self.applied_trail.pop_front();
        }
        self.applied_trail.push_back((idx, self.state.kv.digest()));
    }

    /// Answers the requests waiting here for the command of `origin` / `id`.
    pub(crate) fn answer_applied(
        &mut self,
        origin: Origin,
        id: RequestId,
        result: Result<Response, EngineError>,
    ) {
        let me = self.config.id;
        let mut answer: Vec<u64> = Vec::new();
        if origin.node == me && origin.incarnation == self.pending.incarnation() {
            answer.push(origin.seq);
        }
        if id.client != ClientId::NONE
            && let Some(set) = self.pending.by_id.get(&id)
        {
            answer.extend(set.iter().copied());
        }
        for seq in answer {
            if let Some(p) = self.pending.entries.get(&seq)
                && p.kind == PendingKind::Write
                && let Some(p) = self.pending.remove(seq)
            {
                self.reply(p.request.id, result.clone());
            }
        }
    }

    /// Serves linearizable reads whose read index is applied.
    pub(crate) fn serve_ready_reads(&mut self) {
        let applied = self.state.applied_index();
        while let Some(&(idx, seq)) = self.pending.ready_reads.first() {
            if idx > applied {
                break;
            }
            self.pending.ready_reads.remove(&(idx, seq));
            if let Some(p) = self.pending.remove(seq) {
                let r = self.read_local(&p.request.op);
                self.reply(p.request.id, r);
            }
        }
    }

    /// Answers `Timeout` to requests pending for `request_timeout_ticks`.
    pub(crate) fn expire_requests(&mut self) {
        while let Some(&(deadline, seq)) = self.pending.expiry.front() {
            if deadline > self.now_ticks {
                break;
            }
            self.pending.expiry.pop_front();
            if let Some(p) = self.pending.remove(seq) {
                self.reply(p.request.id, Err(EngineError::Timeout));
            }
        }
    }
}
