//! The CASPaxos proposer (Rystsov 2018, §2.2): per-key rounds that read the register from a
//! quorum of promises, apply the requests' change functions
//! ([`synod_core::kv::register::apply_to_register`]) and write the result with a quorum of
//! accepts; the one-round-trip optimisation (§2.2.1); conflict backoff; request expiry; and the
//! proposer's half of the GC (see `gc.rs`).
//!
//! Per key at most one round is in flight; requests arriving meanwhile queue behind it and the
//! next round applies up to `batch_entries_max` of them in order in one change function (a
//! composition of change functions is a change function), so a busy key costs one round per
//! batch, not per request.

use crate::ballot::{Ballot, BallotCounter};
use crate::gc::{GC_INTERVAL_TICKS, GC_ROUNDS_PER_INTERVAL_MAX, GcQueue};
use crate::messages::{AcceptedValue, Message, Record, RegisterValue};
use crate::reconf::Quorums;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use synod_core::kv::register::apply_to_register;
use synod_core::kv::{Key, Response, SessionVerdict};
use synod_core::{
    ClientId, ClientReply, ClientRequest, EngineConfig, EngineError, NodeId, SplitMix64,
};

/// First backoff window after a conflict; it doubles per failed attempt.
pub const BACKOFF_BASE_TICKS: u64 = 2;
/// Largest backoff window.
pub const BACKOFF_MAX_TICKS: u64 = 64;
/// Keys the proposer tracks at once when idle (kept only for their one-round-trip cache);
/// beyond it idle keys lose their cache and fall back to two round trips.
pub const IDLE_KEYS_MAX: usize = 4096;

/// Where a proposer message goes (the sets of the configuration it holds, `reconf.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// The prepare set.
    Prepare,
    /// The accept set.
    Accept,
    /// Every acceptor of either set (tombstone GC).
    Everyone,
    Node(NodeId),
}

/// What the proposer produced while handling one input.
#[derive(Default)]
pub struct Effects {
    pub sends: Vec<(Dest, Message)>,
    pub records: Vec<Record>,
    pub replies: Vec<ClientReply>,
}

/// A backoff in `1..=window_ticks` (uniform-ish). Modulo rather than [`SplitMix64::below`] on
/// purpose: it is the draw this proposer has always made, so the simulator's recorded seeds
/// replay the same jitter.
fn backoff_jitter_ticks(rng: &mut SplitMix64, window_ticks: u64) -> u64 {
    1 + rng.next_u64() % window_ticks.max(1)
}

/// A request waiting for its reply.
#[derive(Clone, Debug)]
struct Pending {
    request: ClientRequest,
    deadline_tick: u64,
    /// The reply computed by the current attempt's change function.
    result: Option<Result<Response, EngineError>>,
}

impl Pending {
    /// A write without a session cannot be recognised when re-applied, so once an Accept
    /// carrying it has left, a failed attempt makes its outcome unknown.
    fn is_sessionless_write(&self) -> bool {
        self.request.id.client == ClientId::NONE && !self.request.op.is_read()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RoundKind {
    /// Applies client requests.
    Client,
    /// GC step 1: identity on a tombstone, accepted by every acceptor.
    Gc,
}

#[derive(Debug)]
enum Phase {
    Preparing {
        promises: BTreeMap<NodeId, Option<AcceptedValue>>,
    },
    Accepting {
        accepted: BTreeSet<NodeId>,
        value: RegisterValue,
        next: Option<Ballot>,
    },
    Backoff {
        until_tick: u64,
    },
}

#[derive(Debug)]
struct Round {
    kind: RoundKind,
    ballot: Ballot,
    ops: Vec<Pending>,
    phase: Phase,
    /// A phase not completed by then failed (messages lost, acceptors down).
    phase_deadline_tick: u64,
    /// Failed attempts so far (drives the backoff window).
    attempts: u32,
}

/// The one-round-trip cache: a quorum promised `ballot` while accepting `value`, so the next
/// change of the key may go straight to phase 2 at `ballot` starting from `value`.
#[derive(Clone, Debug)]
struct Prepared {
    ballot: Ballot,
    value: RegisterValue,
}

#[derive(Debug, Default)]
struct KeyProposer {
    queue: VecDeque<Pending>,
    round: Option<Round>,
    prepared: Option<Prepared>,
}

impl KeyProposer {
    fn is_idle(&self) -> bool {
        self.round.is_none() && self.queue.is_empty()
    }
}

/// This node's proposer for every key.
pub struct Proposer {
    id: NodeId,
    /// Acceptor sets and quorum sizes of the configuration this node holds.
    quorums: Quorums,
    /// That configuration's version, carried by every Prepare, Accept and Drop.
    version: u64,
    batch_entries_max: usize,
    pending_requests_max: usize,
    request_timeout_ticks: u64,
    /// How long a phase may wait for its quorum (the config's recovery timer).
    round_timeout_ticks: u64,
    /// Planted bug `AcceptWithoutQuorum`: phase 2 after the first promise.
    accept_without_quorum: bool,
    ballots: BallotCounter,
    rng: SplitMix64,
    keys: BTreeMap<Key, KeyProposer>,
    pending_requests: usize,
    gc: GcQueue,
}

impl Proposer {
    pub fn new(
        config: &EngineConfig,
        leased_counter_max: u64,
        quorums: Quorums,
        version: u64,
    ) -> Self {
        Proposer {
            id: config.id,
            quorums,
            version,
            batch_entries_max: config.batch_entries_max.max(1),
            pending_requests_max: config.pending_requests_max,
            request_timeout_ticks: config.request_timeout_ticks.max(1),
            round_timeout_ticks: config.election_timeout_ticks.max(1),
            accept_without_quorum: config.bug(synod_core::PlantedBug::AcceptWithoutQuorum),
            ballots: BallotCounter::recover(config.id, leased_counter_max),
            // Mix the node id in so that nodes sharing a cluster seed still back off differently.
            rng: SplitMix64::new(config.seed ^ config.id.wrapping_mul(0xA24B_AED4_963E_E407)),
            keys: BTreeMap::new(),
            pending_requests: 0,
            gc: GcQueue::new(config.request_timeout_ticks),
        }
    }

    pub fn pending_requests(&self) -> usize {
        self.pending_requests
    }

    pub fn highest_counter(&self) -> u64 {
        self.ballots.highest()
    }

    pub fn leased_counter_max(&self) -> u64 {
        self.ballots.leased_max()
    }

    pub fn gc_queue(&self) -> &GcQueue {
        &self.gc
    }

    /// A ballot seen anywhere (our acceptor's promises, Nacks): ours must go above it.
    pub fn observe(&mut self, ballot: Ballot) {
        self.ballots.observe(ballot);
    }

    /// A tombstone with write count `writes` found at recovery that this node wrote.
    pub fn note_tombstone(&mut self, key: &[u8], writes: u64, now_tick: u64) {
        self.gc.note_tombstone(key, writes, now_tick);
    }

    pub fn submit(&mut self, request: ClientRequest, now_tick: u64, fx: &mut Effects) {
        let Some(key) = request.op.single_key().map(<[u8]>::to_vec) else {
            let what = if matches!(request.op, synod_core::kv::Op::Txn(_)) {
                "multi-key transactions"
            } else {
                "range requests"
            };
            fx.replies.push(ClientReply {
                id: request.id,
                result: Err(EngineError::Unsupported {
                    engine: crate::NAME.to_string(),
                    what: what.to_string(),
                }),
            });
            return;
        };
        if self.pending_requests >= self.pending_requests_max {
            fx.replies.push(ClientReply {
                id: request.id,
                result: Err(EngineError::Busy),
            });
            return;
        }
        self.pending_requests += 1;
        let ks = self.keys.entry(key.clone()).or_default();
        ks.queue.push_back(Pending {
            request,
            deadline_tick: now_tick.saturating_add(self.request_timeout_ticks),
            result: None,
        });
        self.start_next(&key, now_tick, fx);
    }

    /// Starts a client round on `key` if none is running and requests are queued.
    fn start_next(&mut self, key: &[u8], now_tick: u64, fx: &mut Effects) {
        let batch = self.batch_entries_max;
        let Some(ks) = self.keys.get_mut(key) else {
            return;
        };
        if ks.round.is_some() || ks.queue.is_empty() {
            return;
        }
        let take = ks.queue.len().min(batch);
        let ops: Vec<Pending> = ks.queue.drain(..take).collect();
        ks.round = Some(Round {
            kind: RoundKind::Client,
            ballot: Ballot::ZERO,
            ops,
            phase: Phase::Backoff { until_tick: 0 },
            phase_deadline_tick: 0,
            attempts: 0,
        });
        self.begin_attempt(key, now_tick, fx);
    }

    /// Phase 1 with a fresh ballot — or straight to phase 2 when the one-round-trip cache
    /// holds a prepared ballot for this key.
    fn begin_attempt(&mut self, key: &[u8], now_tick: u64, fx: &mut Effects) {
        let round_timeout = self.round_timeout_ticks;
        let Some(ks) = self.keys.get_mut(key) else {
            return;
        };
        let Some(round) = ks.round.as_mut() else {
            return;
        };
        for op in &mut round.ops {
            op.result = None;
        }
        if round.kind == RoundKind::Client
            && let Some(p) = ks.prepared.take()
        {
            round.ballot = p.ballot;
            self.enter_accept(key, p.value, now_tick, fx);
            return;
        }
        ks.prepared = None;
        let (ballot, lease) = self.ballots.issue();
        if let Some(counter_max) = lease {
            fx.records.push(Record::BallotLease { counter_max });
        }
        round.ballot = ballot;
        round.phase = Phase::Preparing {
            promises: BTreeMap::new(),
        };
        round.phase_deadline_tick = now_tick.saturating_add(round_timeout);
        fx.sends.push((
            Dest::Prepare,
            Message::Prepare {
                key: key.to_vec(),
                ballot,
                version: self.version,
            },
        ));
    }

    /// Phase 2a: apply the change functions to `base` (the highest accepted value of the
    /// promise quorum, or the cached one) and ask every acceptor to accept the result.
    fn enter_accept(&mut self, key: &[u8], base: RegisterValue, now_tick: u64, fx: &mut Effects) {
        let round_timeout = self.round_timeout_ticks;
        let Some(round) = self.keys.get_mut(key).and_then(|ks| ks.round.as_mut()) else {
            return;
        };
        let (value, next) = match round.kind {
            RoundKind::Gc => {
                let same = base.is_tombstone() && self.gc.is_same_tombstone(key, base.writes);
                if !same {
                    if base.is_tombstone() {
                        // Written and deleted again since it was queued: the exactly-once
                        // window of that newer delete starts now (see gc.rs).
                        self.gc.note_tombstone(key, base.writes, now_tick);
                    } else {
                        // Written again since the delete: nothing to collect.
                        self.gc.forget(key);
                    }
                    if let Some(ks) = self.keys.get_mut(key) {
                        ks.round = None;
                    }
                    self.finish_round(key, now_tick, fx);
                    return;
                }
                (base, None)
            }
            RoundKind::Client => {
                let value = apply_ops(base, &mut round.ops);
                let (next, lease) = self.ballots.issue();
                if let Some(counter_max) = lease {
                    fx.records.push(Record::BallotLease { counter_max });
                }
                (value, Some(next))
            }
        };
        let ballot = round.ballot;
        // GC step 1 needs every acceptor that any prepare quorum might include.
        let dest = match round.kind {
            RoundKind::Client => Dest::Accept,
            RoundKind::Gc => Dest::Everyone,
        };
        fx.sends.push((
            dest,
            Message::Accept {
                key: key.to_vec(),
                ballot,
                value: value.clone(),
                next,
                version: self.version,
            },
        ));
        round.phase = Phase::Accepting {
            accepted: BTreeSet::new(),
            value,
            next,
        };
        round.phase_deadline_tick = now_tick.saturating_add(round_timeout);
    }

    pub fn on_promise(
        &mut self,
        from: NodeId,
        key: Key,
        ballot: Ballot,
        accepted: Option<AcceptedValue>,
        now_tick: u64,
        fx: &mut Effects,
    ) {
        // Promises count only from the prepare set: during a transition its quorum size is
        // computed for that set alone (`reconf.rs`).
        if !self.quorums.prepare.contains(&from) {
            return;
        }
        let needed = if self.accept_without_quorum {
            1
        } else {
            self.quorums.prepare_quorum
        };
        let Some(round) = self.keys.get_mut(&key).and_then(|ks| ks.round.as_mut()) else {
            return;
        };
        let Phase::Preparing { promises } = &mut round.phase else {
            return;
        };
        if round.ballot != ballot {
            return;
        }
        if let Some(a) = &accepted {
            self.ballots.observe(a.ballot);
        }
        promises.insert(from, accepted);
        if promises.len() < needed {
            return;
        }
        // Paxos phase 2a rule: continue from the value of the highest accepted ballot.
        let base = promises
            .values_mut()
            .filter_map(Option::take)
            .max_by_key(|a| a.ballot)
            .map_or_else(RegisterValue::empty, |a| a.value);
        self.enter_accept(&key, base, now_tick, fx);
    }

    pub fn on_accepted(
        &mut self,
        from: NodeId,
        key: Key,
        ballot: Ballot,
        now_tick: u64,
        fx: &mut Effects,
    ) {
        let Some(round) = self.keys.get_mut(&key).and_then(|ks| ks.round.as_mut()) else {
            return;
        };
        let Phase::Accepting { accepted, .. } = &mut round.phase else {
            return;
        };
        if round.ballot != ballot {
            return;
        }
        // GC step 1 needs every acceptor; client rounds a quorum of the accept set.
        let (set, needed) = match round.kind {
            RoundKind::Client => (self.quorums.accept.clone(), self.quorums.accept_quorum),
            RoundKind::Gc => {
                let all = self.quorums.everyone();
                let n = all.len();
                (all, n)
            }
        };
        if !set.contains(&from) {
            return;
        }
        accepted.insert(from);
        if accepted.len() < needed {
            return;
        }
        let Some(ks) = self.keys.get_mut(&key) else {
            return;
        };
        let Some(round) = ks.round.take() else {
            return;
        };
        let Phase::Accepting { value, next, .. } = round.phase else {
            unreachable!("checked above");
        };
        match round.kind {
            RoundKind::Client => {
                for op in round.ops {
                    let result = op.result.unwrap_or(Err(EngineError::Timeout));
                    fx.replies.push(ClientReply {
                        id: op.request.id,
                        result,
                    });
                    self.pending_requests -= 1;
                }
                if value.is_tombstone() {
                    self.gc.note_tombstone(&key, value.writes, now_tick);
                } else {
                    self.gc.forget(&key);
                }
                ks.prepared = next.map(|ballot| Prepared { ballot, value });
            }
            RoundKind::Gc => {
                // GC step 3 (step 2 is implied by the promises of step 1; see gc.rs).
                self.gc.forget(&key);
                ks.prepared = None;
                fx.sends.push((
                    Dest::Everyone,
                    Message::Drop {
                        key: key.clone(),
                        ballot,
                        version: self.version,
                    },
                ));
            }
        }
        self.finish_round(&key, now_tick, fx);
    }

    pub fn on_nack(
        &mut self,
        key: Key,
        ballot: Ballot,
        promised: Ballot,
        now_tick: u64,
        fx: &mut Effects,
    ) {
        self.ballots.observe(promised);
        let Some(round) = self.keys.get_mut(&key).and_then(|ks| ks.round.as_ref()) else {
            return;
        };
        if round.ballot != ballot || matches!(round.phase, Phase::Backoff { .. }) {
            return;
        }
        self.fail_attempt(&key, now_tick, fx);
    }

    /// A phase was refused or timed out.
    fn fail_attempt(&mut self, key: &[u8], now_tick: u64, fx: &mut Effects) {
        let Some(ks) = self.keys.get_mut(key) else {
            return;
        };
        ks.prepared = None;
        let Some(round) = ks.round.as_mut() else {
            return;
        };
        if round.kind == RoundKind::Gc {
            ks.round = None;
            self.gc.retry_later(key, now_tick);
            self.finish_round(key, now_tick, fx);
            return;
        }
        if matches!(round.phase, Phase::Accepting { .. }) {
            // Our value may have been accepted somewhere and chosen later: a sessionless write
            // cannot be retried without risking a second application.
            let mut kept = Vec::with_capacity(round.ops.len());
            for op in round.ops.drain(..) {
                if op.is_sessionless_write() {
                    fx.replies.push(ClientReply {
                        id: op.request.id,
                        result: Err(EngineError::Timeout),
                    });
                    self.pending_requests -= 1;
                } else {
                    kept.push(op);
                }
            }
            round.ops = kept;
        }
        if round.ops.is_empty() {
            ks.round = None;
            self.finish_round(key, now_tick, fx);
            return;
        }
        round.attempts = round.attempts.saturating_add(1);
        let window = BACKOFF_BASE_TICKS
            .saturating_mul(1 << round.attempts.min(16))
            .min(BACKOFF_MAX_TICKS);
        round.phase = Phase::Backoff {
            until_tick: now_tick.saturating_add(backoff_jitter_ticks(&mut self.rng, window)),
        };
    }

    /// After a round ended (and was taken out of its key): start the next one, or forget the
    /// key if nothing is left of it.
    fn finish_round(&mut self, key: &[u8], now_tick: u64, fx: &mut Effects) {
        debug_assert!(self.keys.get(key).is_none_or(|ks| ks.round.is_none()));
        self.start_next(key, now_tick, fx);
        if self
            .keys
            .get(key)
            .is_some_and(|ks| ks.is_idle() && ks.prepared.is_none())
        {
            self.keys.remove(key);
        }
    }

    /// Expiry, backoff wake-ups, phase timeouts and the collector.
    pub fn tick(&mut self, now_tick: u64, fx: &mut Effects) {
        let keys: Vec<Key> = self.keys.keys().cloned().collect();
        for key in &keys {
            self.expire(key, now_tick, fx);
            let Some(round) = self.keys.get(key).and_then(|ks| ks.round.as_ref()) else {
                continue;
            };
            match round.phase {
                Phase::Backoff { until_tick } if until_tick <= now_tick => {
                    self.begin_attempt(key, now_tick, fx);
                }
                Phase::Preparing { .. } | Phase::Accepting { .. }
                    if round.phase_deadline_tick <= now_tick =>
                {
                    self.fail_attempt(key, now_tick, fx);
                }
                _ => {}
            }
        }
        if now_tick.is_multiple_of(GC_INTERVAL_TICKS) {
            self.start_gc_rounds(now_tick, fx);
        }
        self.trim_idle_keys();
    }

    /// Answers `Timeout` to every request of `key` past its deadline.
    fn expire(&mut self, key: &[u8], now_tick: u64, fx: &mut Effects) {
        let Some(ks) = self.keys.get_mut(key) else {
            return;
        };
        let mut expired = 0;
        ks.queue.retain(|p| {
            let keep = p.deadline_tick > now_tick;
            if !keep {
                fx.replies.push(ClientReply {
                    id: p.request.id,
                    result: Err(EngineError::Timeout),
                });
                expired += 1;
            }
            keep
        });
        let mut round_emptied = false;
        if let Some(round) = ks.round.as_mut()
            && round.kind == RoundKind::Client
        {
            round.ops.retain(|p| {
                let keep = p.deadline_tick > now_tick;
                if !keep {
                    fx.replies.push(ClientReply {
                        id: p.request.id,
                        result: Err(EngineError::Timeout),
                    });
                    expired += 1;
                }
                keep
            });
            // An accept in flight may still complete and refresh the one-round-trip cache;
            // anything earlier has nothing left to do.
            round_emptied = round.ops.is_empty() && !matches!(round.phase, Phase::Accepting { .. });
        }
        self.pending_requests -= expired;
        if round_emptied {
            ks.round = None;
            self.finish_round(key, now_tick, fx);
        }
    }

    fn start_gc_rounds(&mut self, now_tick: u64, fx: &mut Effects) {
        let keys = &self.keys;
        let due = self.gc.due(now_tick, GC_ROUNDS_PER_INTERVAL_MAX, |k| {
            keys.get(k).is_none_or(KeyProposer::is_idle)
        });
        for key in due {
            let ks = self.keys.entry(key.clone()).or_default();
            ks.prepared = None;
            ks.round = Some(Round {
                kind: RoundKind::Gc,
                ballot: Ballot::ZERO,
                ops: Vec::new(),
                phase: Phase::Backoff { until_tick: 0 },
                phase_deadline_tick: 0,
                attempts: 0,
            });
            self.begin_attempt(&key, now_tick, fx);
        }
    }

    /// Bounds the keys kept only for their one-round-trip cache.
    fn trim_idle_keys(&mut self) {
        if self.keys.len() <= IDLE_KEYS_MAX {
            return;
        }
        let excess = self.keys.len() - IDLE_KEYS_MAX;
        let victims: Vec<Key> = self
            .keys
            .iter()
            .filter(|(_, ks)| ks.is_idle())
            .take(excess)
            .map(|(k, _)| k.clone())
            .collect();
        for k in victims {
            self.keys.remove(&k);
        }
    }

    /// True when no round, queue or cache is held for `key` (tests and status).
    pub fn is_key_idle(&self, key: &[u8]) -> bool {
        self.keys.get(key).is_none_or(KeyProposer::is_idle)
    }

    /// The ballot this proposer holds prepared for `key`, if any (tests).
    pub fn prepared_ballot(&self, key: &[u8]) -> Option<Ballot> {
        self.keys.get(key)?.prepared.as_ref().map(|p| p.ballot)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn quorums(&self) -> &Quorums {
        &self.quorums
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// A new configuration version is durable at this node (`reconf.rs`). Every round in a
    /// phase restarts (after the usual backoff) under the new quorums and every one-round-trip
    /// cache is dropped: a round must run entirely within one version, because only adjacent
    /// versions are guaranteed to have intersecting quorums, and a cached ballot was prepared
    /// by a quorum of the old version.
    pub fn reconfigure(&mut self, quorums: Quorums, version: u64, now_tick: u64, fx: &mut Effects) {
        assert!(version >= self.version, "configuration versions only grow");
        self.quorums = quorums;
        self.version = version;
        let keys: Vec<Key> = self.keys.keys().cloned().collect();
        for key in keys {
            let Some(ks) = self.keys.get_mut(&key) else {
                continue;
            };
            ks.prepared = None;
            let in_phase = ks.round.as_ref().is_some_and(|r| {
                matches!(r.phase, Phase::Preparing { .. } | Phase::Accepting { .. })
            });
            if in_phase {
                self.fail_attempt(&key, now_tick, fx);
            }
        }
    }

    /// This node left the cluster: every request it holds is answered `Timeout` (a round may
    /// have reached some acceptors, so the outcome is unknown) and it forgets every key.
    pub fn abandon_all(&mut self, fx: &mut Effects) {
        for (_, ks) in std::mem::take(&mut self.keys) {
            let ops = ks.round.into_iter().flat_map(|r| r.ops).chain(ks.queue);
            for op in ops {
                fx.replies.push(ClientReply {
                    id: op.request.id,
                    result: Err(EngineError::Timeout),
                });
            }
        }
        self.pending_requests = 0;
        self.gc = GcQueue::new(self.request_timeout_ticks);
    }
}

/// The change function of a batch: each request in order, exactly-once through the register's
/// session table (see `messages.rs`). Fills in each request's reply.
fn apply_ops(base: RegisterValue, ops: &mut [Pending]) -> RegisterValue {
    let mut value = base;
    for p in ops.iter_mut() {
        let req = &p.request;
        let run = |value: &mut RegisterValue| -> Result<Response, EngineError> {
            let (next, body) =
                apply_to_register(value.kv.as_ref(), &req.op).map_err(|e| match e {
                    EngineError::Unsupported { what, .. } => EngineError::Unsupported {
                        engine: crate::NAME.to_string(),
                        what,
                    },
                    other => other,
                })?;
            value.kv = next;
            Ok(Response { revision: 0, body })
        };
        let result = if req.op.is_read() || req.id.client == ClientId::NONE {
            run(&mut value)
        } else {
            match value.sessions.check(req.id, req.first_unacked) {
                SessionVerdict::New => {
                    let r = run(&mut value);
                    if let Ok(resp) = &r {
                        value.writes += 1;
                        value.sessions.record(req.id, resp.clone());
                        value.sessions.touch(req.id.client, value.writes);
                    }
                    r
                }
                SessionVerdict::Duplicate(resp) => Ok(resp),
                SessionVerdict::Stale => Err(EngineError::SessionExpired),
            }
        };
        p.result = Some(result);
    }
    value
}
