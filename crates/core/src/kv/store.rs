//! The deterministic KV state machine that log-based engines apply in log order.
//!
//! Every replica that applies the same decided commands in the same order reaches the same
//! data, the same revision and the same [`KvStore::digest`] — the simulator checks exactly that
//! to prove agreement. Nothing here may depend on anything but the command sequence (no clocks,
//! no hash-map iteration order: data lives in a `BTreeMap`).

use super::*;
use crate::engine::EngineError;
use crate::ids::RequestId;
use crate::kv::session::{ClientTable, SessionVerdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

mod hash;
mod leases;
mod merge;
mod split;

pub use hash::{KvHash, KvHashPart, combine_hash_parts};

/// Most revisions one [`Op::CloseRevisions`] closes (each costs an empty history slot).
pub const CLOSE_STEP_MAX: u64 = 1 << 16;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KvStore {
    data: BTreeMap<Key, KeyValue>,
    /// etcd's store revision: +1 per write command that changed something.
    revision: u64,
    /// History below this revision is gone (etcd's compact revision); 0 = never compacted.
    compact_revision: u64,
    /// The events of revisions `history_first()..=revision`, oldest first. Each event keeps
    /// the key before it, so a read at a past revision undoes the newer events and a watcher
    /// gets `prev_kv` without another lookup. Bounded only by compaction (see the module doc).
    #[serde(with = "history_wire")]
    history: VecDeque<Arc<RevisionEvents>>,
    /// Log index (engine-defined position) of the last applied command.
    applied_index: u64,
    /// Rolling hash of every mutation, for cheap cross-replica agreement checks.
    digest: u64,
    sessions: ClientTable,
    /// Live leases by id, and the ids of those this store ended lately (see
    /// [`super::lease::Leases`]).
    leases: Leases,
    /// What happened to leases since the lessor last looked (volatile, like `fresh`).
    #[serde(skip)]
    lease_changes: Vec<LeaseChange>,
    /// Revisions applied since the watch layer last took them, when it asked for them at all
    /// (volatile: a restarted or snapshot-installed store starts without a taker).
    #[serde(skip)]
    fresh: Option<Vec<Arc<RevisionEvents>>>,
    /// Test only: the planted `CompactionDropsWatchedEvent` bug, switched on by the replica
    /// layer (the store has no config). Volatile like `fresh`.
    #[serde(skip)]
    planted_compaction_bug: bool,
    /// Test only: the planted `PartitionMergeKeepsEndedLease` bug (an absorb keeps the leases
    /// the absorbed group ended), switched on by the replica layer. Volatile like `fresh`.
    #[serde(skip)]
    planted_keep_ended: bool,
    /// Revisions closed without events since this store was made or loaded (volatile: for a
    /// write rate read from the revision, which must leave them out).
    #[serde(skip)]
    closed: u64,
    /// [`KvStore::content_digest`], once computed: kept up to date by every change to
    /// `data` from then on (a sum of per-key hashes, so a change swaps one term). Volatile:
    /// recomputed once after a restart or a snapshot install.
    #[serde(skip)]
    content: std::cell::Cell<Option<u64>>,
    /// [`KvStore::bytes_in_use`], once computed: kept in step by every change to `data` and
    /// `history` from then on. Volatile like `content`.
    #[serde(skip)]
    in_use: std::cell::Cell<Option<u64>>,
}

impl KvStore {
    pub fn new(limits: KvLimits) -> Self {
        KvStore {
            data: BTreeMap::new(),
            revision: 0,
            compact_revision: 0,
            history: VecDeque::new(),
            applied_index: 0,
            digest: 0xcbf2_9ce4_8422_2325,
            sessions: ClientTable::new(limits),
            leases: Leases::default(),
            lease_changes: Vec::new(),
            fresh: None,
            planted_compaction_bug: false,
            planted_keep_ended: false,
            closed: 0,
            content: std::cell::Cell::new(None),
            in_use: std::cell::Cell::new(None),
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }
    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }
    pub fn digest(&self) -> u64 {
        self.digest
    }
    /// A digest of every key's value and version, independent of the order in which
    /// non-conflicting writes were applied and of the revisions they got: what replicas of a
    /// leaderless engine (EPaxos), whose revisions are local, must agree on. O(keys).
    pub fn content_digest(&self) -> u64 {
        if let Some(c) = self.content.get() {
            return c;
        }
        let c = self
            .data
            .values()
            .fold(0u64, |acc, kv| acc.wrapping_add(content_term(kv)));
        self.content.set(Some(c));
        c
    }

    /// What the data takes, estimated from its parts: every live key (key, value and
    /// [`KV_OVERHEAD_BYTES`] of metadata) and every event the history still holds (what
    /// compaction would free). etcd's dbSizeInUse — the part of the database a defragment
    /// keeps. O(keys + history) once, then kept in step.
    pub fn bytes_in_use(&self) -> u64 {
        if let Some(n) = self.in_use.get() {
            return n;
        }
        let live: u64 = self.data.values().map(kv_bytes).sum();
        let history: u64 = self.history.iter().map(|r| r.size_bytes() as u64).sum();
        self.in_use.set(Some(live + history));
        live + history
    }

    /// Keeps [`Self::bytes_in_use`] (if computed) in step: `added` bytes came, `removed` went.
    fn in_use_change(&self, added: u64, removed: u64) {
        if let Some(n) = self.in_use.get() {
            self.in_use.set(Some((n + added).saturating_sub(removed)));
        }
    }

    /// Keeps the content digest and the bytes in use (if computed) in step with a change of
    /// one key.
    fn content_change(&self, old: Option<&KeyValue>, new: Option<&KeyValue>) {
        self.in_use_change(new.map_or(0, kv_bytes), old.map_or(0, kv_bytes));
        if let Some(c) = self.content.get() {
            let c = c.wrapping_sub(old.map_or(0, content_term));
            self.content
                .set(Some(c.wrapping_add(new.map_or(0, content_term))));
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.data.get(key)
    }
    pub fn sessions(&self) -> &ClientTable {
        &self.sessions
    }

    /// Forgets every client session (saved replies): for a store restored into a new
    /// cluster, whose members' client ids could collide with the old cluster's and would then
    /// be answered the old cluster's saved replies. Nothing in flight survives a restore.
    pub fn forget_sessions(&mut self) {
        self.sessions = ClientTable::new(*self.sessions.limits());
    }

    /// See the `closed` field.
    pub fn revisions_closed(&self) -> u64 {
        self.closed
    }

    /// The oldest revision whose events the store still holds.
    fn history_first(&self) -> u64 {
        self.revision + 1 - self.history.len() as u64
    }

    /// Revisions of history held (what compaction bounds).
    pub fn history_revisions(&self) -> usize {
        self.history.len()
    }

    /// The events of the revisions applied since the last call, oldest first. The first call
    /// switches collection on; until then nothing is buffered.
    pub fn take_fresh_events(&mut self) -> Vec<Arc<RevisionEvents>> {
        std::mem::take(self.fresh.get_or_insert_with(Vec::new))
    }

    /// Test only: plants `CompactionDropsWatchedEvent` (see [`crate::PlantedBug`]).
    pub fn plant_compaction_bug(&mut self, on: bool) {
        self.planted_compaction_bug = on;
    }

    /// Test only: plants `PartitionMergeKeepsEndedLease` (see [`crate::PlantedBug`]).
    pub fn plant_keep_ended_leases(&mut self, on: bool) {
        self.planted_keep_ended = on;
    }

    /// Whether a watch layer takes fresh events (carried over a snapshot install).
    pub fn collects_events(&self) -> bool {
        self.fresh.is_some()
    }

    /// The events of revisions `start..`, at most `max_revisions` of them, for a watcher that
    /// catches up. `start` below the compaction revision is [`EngineError::Compacted`]; above
    /// `revision + 1` it is [`EngineError::FutureRevision`].
    pub fn history_from(
        &self,
        start: u64,
        max_revisions: usize,
    ) -> Result<Vec<Arc<RevisionEvents>>, EngineError> {
        let start = start.max(1);
        if start < self.compact_revision || start < self.history_first() {
            return Err(EngineError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        if start > self.revision + 1 {
            return Err(EngineError::FutureRevision { revision: start });
        }
        let skip = (start - self.history_first()) as usize;
        Ok(self
            .history
            .iter()
            .skip(skip)
            .take(max_revisions)
            .cloned()
            .collect())
    }

    /// Applies a decided command at log position `index` (must be increasing) and returns the
    /// reply for its request. A retried request that was already applied gets its saved reply
    /// and changes nothing (exactly-once; see [`ClientTable`] for the expiry rule).
    pub fn apply(
        &mut self,
        index: u64,
        id: RequestId,
        first_unacked: u64,
        op: &Op,
    ) -> Result<Response, EngineError> {
        self.skip(index);
        if op.is_read() {
            return self.read(op);
        }
        match self.sessions.check(id, first_unacked) {
            SessionVerdict::Duplicate(reply) => return Ok(reply),
            SessionVerdict::Stale => return Err(EngineError::SessionExpired),
            SessionVerdict::New => {}
        }
        // Refused commands change nothing and are not saved: a retry gets the same answer
        // (or, for a compaction overtaken by another, the same kind of answer).
        let body = self.execute(op)?;
        let reply = Response {
            revision: self.revision,
            body,
        };
        self.sessions.record(id, reply.clone());
        self.sessions.touch(id.client, index);
        Ok(reply)
    }

    /// Advances the applied index past a log position whose command is not executed (a
    /// duplicate of a command already applied; see the replica layer's origin window). Every
    /// applied position goes through here first, executed or not.
    pub fn skip(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "apply index went back: {index} after {}",
            self.applied_index
        );
        self.applied_index = index;
        self.digest = mix(self.digest, index);
    }

    /// Executes a read-only op against the current state without changing anything.
    pub fn read(&self, op: &Op) -> Result<Response, EngineError> {
        let body = match op {
            Op::Range(r) => ResponseBody::Range(self.range(r)?),
            Op::Txn(t) if op.is_read() => {
                self.check_txn_revisions(t)?;
                let succeeded = self.txn_compares_hold(&t.compare);
                let ops = if succeeded { &t.success } else { &t.failure };
                let mut responses = Vec::with_capacity(ops.len());
                for o in ops {
                    match o {
                        TxnOp::Range(r) => responses.push(ResponseBody::Range(self.range(r)?)),
                        _ => unreachable!("is_read checked"),
                    }
                }
                ResponseBody::Txn(TxnResponse {
                    succeeded,
                    responses,
                })
            }
            Op::LeaseTimeToLive { id, keys } => ResponseBody::LeaseTimeToLive(self.ttl(*id, *keys)),
            Op::LeaseLeases => ResponseBody::LeaseLeases(self.leases.keys().copied().collect()),
            _ => {
                return Err(EngineError::InvalidRequest("read() given a write".into()));
            }
        };
        Ok(Response {
            revision: self.revision,
            body,
        })
    }

    fn execute(&mut self, op: &Op) -> Result<ResponseBody, EngineError> {
        let mut events = Vec::new();
        let body = match op {
            Op::Range(_) | Op::LeaseTimeToLive { .. } | Op::LeaseLeases => self.read(op)?.body,
            Op::Put(p) => {
                self.check_put(p, &[])?;
                ResponseBody::Put(self.put(p, self.revision + 1, &mut events))
            }
            Op::DeleteRange(d) => {
                ResponseBody::DeleteRange(self.delete_range(d, self.revision + 1, &mut events))
            }
            Op::Txn(t) => self.txn(t, &mut events)?,
            Op::Cas(c) => self.cas(c, &mut events),
            Op::Compact(c) => {
                self.compact(c.revision)?;
                ResponseBody::Compact
            }
            Op::LeaseGrant(g) => ResponseBody::LeaseGrant(self.grant(g)?),
            Op::LeaseRevoke { id } => {
                self.end_lease(*id, &mut events)?;
                ResponseBody::LeaseRevoke
            }
            Op::LeaseKeepAlive { id } => ResponseBody::LeaseKeepAlive(self.keep_alive(*id)?),
            Op::LeaseExpire { id, stamp } => {
                let due = self.leases.get(id).is_some_and(|l| l.stamp == *stamp);
                if due {
                    self.end_lease(*id, &mut events)?;
                }
                ResponseBody::LeaseExpire { expired: due }
            }
            Op::CloseRevisions { through } => {
                self.close_revisions(*through)?;
                ResponseBody::Closed
            }
            Op::Membership(_)
            | Op::MembershipAt { .. }
            | Op::Auth(_)
            | Op::Split(_)
            | Op::Merge(_)
            | Op::Absorb(_)
            | Op::Move(_) => {
                // The replica layer applies configuration, auth and range changes (a move is
                // the partitioned engine's); one reaching the store is a caller's mistake,
                // refused the same way on every replica.
                return Err(EngineError::InvalidRequest(
                    "membership, auth, split, merge and move changes are applied by the replica \
                     layer"
                        .into(),
                ));
            }
        };
        self.commit_events(events);
        Ok(body)
    }

    /// A command's events, if any, as the next revision: in the history and for the watch
    /// layer.
    fn commit_events(&mut self, events: Vec<WatchEvent>) {
        if events.is_empty() {
            return;
        }
        self.revision += 1;
        let rev = Arc::new(RevisionEvents {
            revision: self.revision,
            events,
        });
        if let Some(fresh) = &mut self.fresh {
            fresh.push(rev.clone());
        }
        self.in_use_change(rev.size_bytes() as u64, 0);
        self.history.push_back(rev);
    }

    fn txn(
        &mut self,
        t: &TxnRequest,
        events: &mut Vec<WatchEvent>,
    ) -> Result<ResponseBody, EngineError> {
        // Checked up front so a refused transaction changes nothing.
        self.check_txn_revisions(t)?;
        let succeeded = self.txn_compares_hold(&t.compare);
        let ops = if succeeded { &t.success } else { &t.failure };
        let puts: Vec<&PutRequest> = ops
            .iter()
            .filter_map(|o| match o {
                TxnOp::Put(p) => Some(p),
                _ => None,
            })
            .collect();
        for (i, p) in puts.iter().enumerate() {
            self.check_put(p, &puts[..i])?;
        }
        let rev = self.revision + 1;
        let mut responses = Vec::with_capacity(ops.len());
        for o in ops {
            responses.push(match o {
                TxnOp::Range(r) => ResponseBody::Range(self.range_with_pending(r, events)?),
                TxnOp::Put(p) => ResponseBody::Put(self.put(p, rev, events)),
                TxnOp::DeleteRange(d) => {
                    ResponseBody::DeleteRange(self.delete_range(d, rev, events))
                }
            });
        }
        Ok(ResponseBody::Txn(TxnResponse {
            succeeded,
            responses,
        }))
    }

    fn cas(&mut self, c: &CasRequest, events: &mut Vec<WatchEvent>) -> ResponseBody {
        let prev = self.data.get(&c.key).cloned();
        if !expect_holds(&c.expect, prev.as_ref()) {
            return ResponseBody::Cas(CasResponse {
                succeeded: false,
                kv: prev.clone(),
                prev_kv: prev,
            });
        }
        let rev = self.revision + 1;
        match &c.then {
            CasAction::Put(v) => {
                let p = PutRequest {
                    key: c.key.clone(),
                    value: v.clone(),
                    prev_kv: false,
                    ..Default::default()
                };
                self.put(&p, rev, events);
            }
            CasAction::Delete => {
                let d = DeleteRangeRequest {
                    key: c.key.clone(),
                    ..Default::default()
                };
                self.delete_range(&d, rev, events);
            }
        }
        ResponseBody::Cas(CasResponse {
            succeeded: true,
            prev_kv: prev,
            kv: self.data.get(&c.key).cloned(),
        })
    }

    /// Drops all history: for an engine without store revisions (EPaxos), where nothing
    /// can read it, the history would only grow (and every checkpoint with it).
    pub fn forget_history(&mut self) {
        if self.revision > self.compact_revision {
            // Cannot fail: the revision is above the last compaction and not in the future.
            let _ = self.compact(self.revision);
        }
    }

    /// [`Op::CloseRevisions`]: the revisions up to `through` are closed here — each gets an
    /// empty history slot (the history stays one contiguous run, as an absorb's jump leaves
    /// it), so the next write gets a revision above `through`. At most
    /// [`CLOSE_STEP_MAX`] revisions at once: the slots are real memory until compacted.
    fn close_revisions(&mut self, through: u64) -> Result<(), EngineError> {
        if through > self.revision + CLOSE_STEP_MAX {
            return Err(EngineError::InvalidRequest(format!(
                "a revision close may move the revision by at most {CLOSE_STEP_MAX}"
            )));
        }
        while self.revision < through {
            self.revision += 1;
            self.closed += 1;
            let rev = Arc::new(RevisionEvents {
                revision: self.revision,
                events: Vec::new(),
            });
            if let Some(fresh) = &mut self.fresh {
                fresh.push(rev.clone());
            }
            self.in_use_change(rev.size_bytes() as u64, 0);
            self.history.push_back(rev);
        }
        self.digest = mix(mix(self.digest, 0x00c1_05ed), self.revision);
        Ok(())
    }

    /// etcd's compaction: `revision` must be above the last compaction and not in the future.
    /// Reads at `revision` itself stay possible; everything older is dropped.
    fn compact(&mut self, revision: u64) -> Result<(), EngineError> {
        if revision <= self.compact_revision {
            return Err(EngineError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        if revision > self.revision {
            return Err(EngineError::FutureRevision { revision });
        }
        while self.history_first() < revision {
            if let Some(gone) = self.history.pop_front() {
                self.in_use_change(0, gone.size_bytes() as u64);
            }
        }
        if self.planted_compaction_bug
            && let Some(fresh) = &mut self.fresh
        {
            // The bug: the untaken buffer is trimmed like the history.
            fresh.retain(|r| r.revision >= revision);
        }
        self.compact_revision = revision;
        self.digest = mix(mix(self.digest, 0xc0_4ac7), revision);
        Ok(())
    }

    /// A put that [`Self::check_put`] accepted.
    fn put(&mut self, p: &PutRequest, rev: u64, events: &mut Vec<WatchEvent>) -> PutResponse {
        // One lookup for a key that exists (the common case), and the previous value moves
        // out instead of being copied: this runs once per write on every replica.
        let (prev, kv) = match self.data.get_mut(&p.key) {
            Some(cur) => {
                let kv = KeyValue {
                    key: p.key.clone(),
                    value: if p.ignore_value {
                        cur.value.clone()
                    } else {
                        p.value.clone()
                    },
                    create_revision: cur.create_revision,
                    mod_revision: rev,
                    version: cur.version + 1,
                    lease: if p.ignore_lease { cur.lease } else { p.lease },
                };
                self.digest = mix_kv(self.digest, &kv);
                let event_kv = kv.clone();
                let old = std::mem::replace(cur, kv);
                self.content_change(Some(&old), Some(&event_kv));
                (Some(old), event_kv)
            }
            None => {
                let kv = KeyValue {
                    key: p.key.clone(),
                    value: p.value.clone(),
                    create_revision: rev,
                    mod_revision: rev,
                    version: 1,
                    lease: p.lease,
                };
                self.digest = mix_kv(self.digest, &kv);
                self.content_change(None, Some(&kv));
                self.data.insert(p.key.clone(), kv.clone());
                (None, kv)
            }
        };
        let old_lease = prev.as_ref().map_or(0, |kv| kv.lease);
        if old_lease != kv.lease {
            self.move_lease(&p.key, old_lease, kv.lease);
        }
        let reply = PutResponse {
            prev_kv: if p.prev_kv { prev.clone() } else { None },
        };
        events.push(WatchEvent {
            kind: EventKind::Put,
            kv,
            prev_kv: prev,
        });
        reply
    }

    fn delete_range(
        &mut self,
        d: &DeleteRangeRequest,
        rev: u64,
        events: &mut Vec<WatchEvent>,
    ) -> DeleteRangeResponse {
        let keys: Vec<Key> = self
            .keys_in(&d.key, &d.range_end)
            .map(|kv| kv.key.clone())
            .collect();
        let mut prev_kvs = Vec::new();
        for k in &keys {
            if let Some(kv) = self.data.remove(k) {
                self.content_change(Some(&kv), None);
                self.digest = mix(mix_bytes(self.digest, k), rev);
                if kv.lease != 0 {
                    self.move_lease(k, kv.lease, 0);
                }
                if d.prev_kv {
                    prev_kvs.push(kv.clone());
                }
                events.push(WatchEvent {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: k.clone(),
                        mod_revision: rev,
                        ..Default::default()
                    },
                    prev_kv: Some(kv),
                });
            }
        }
        DeleteRangeResponse {
            deleted: keys.len() as u64,
            prev_kvs,
        }
    }

    fn keys_in<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
    ) -> Box<dyn Iterator<Item = &'a KeyValue> + 'a> {
        if end.is_empty() {
            return Box::new(self.data.get(start).into_iter());
        }
        let lower = Bound::Included(start.to_vec());
        let upper = if end == [0] {
            Bound::Unbounded
        } else {
            Bound::Excluded(end.to_vec())
        };
        if end != [0] && end <= start {
            return Box::new(std::iter::empty());
        }
        Box::new(self.data.range::<Key, _>((lower, upper)).map(|(_, v)| v))
    }

    /// A read at `r.revision` must be at or above the compaction and not in the future.
    fn check_read_revision(&self, revision: u64) -> Result<(), EngineError> {
        if revision > self.revision {
            return Err(EngineError::FutureRevision { revision });
        }
        if revision > 0 && revision < self.compact_revision {
            return Err(EngineError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        Ok(())
    }

    fn check_txn_revisions(&self, t: &TxnRequest) -> Result<(), EngineError> {
        for o in t.success.iter().chain(&t.failure) {
            if let TxnOp::Range(r) = o {
                self.check_read_revision(r.revision)?;
            }
        }
        Ok(())
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, EngineError> {
        self.check_read_revision(r.revision)?;
        if r.revision == 0 || r.revision == self.revision {
            return Ok(select(self.keys_in(&r.key, &r.range_end), r));
        }
        let past = self.state_at(r.revision, &r.key, &r.range_end);
        Ok(select(past.values(), r))
    }

    /// A range inside a transaction that already wrote (in `events`, not yet a revision):
    /// the current state is what it sees, as in etcd, so a read at a past revision must undo
    /// the transaction's own writes too.
    fn range_with_pending(
        &self,
        r: &RangeRequest,
        pending: &[WatchEvent],
    ) -> Result<RangeResponse, EngineError> {
        if r.revision == 0 || pending.is_empty() {
            return self.range(r);
        }
        let mut past = self.state_at(r.revision, &r.key, &r.range_end);
        undo(&mut past, pending.iter().rev(), &r.key, &r.range_end);
        Ok(select(past.values(), r))
    }

    /// The keys in `[start, end)` as they were at `revision` (≥ the history's first − 1):
    /// the current ones with every newer event undone, newest first.
    fn state_at(&self, revision: u64, start: &[u8], end: &[u8]) -> BTreeMap<Key, KeyValue> {
        let mut state: BTreeMap<Key, KeyValue> = self
            .keys_in(start, end)
            .map(|kv| (kv.key.clone(), kv.clone()))
            .collect();
        let newer = (self.revision - revision) as usize;
        let events = self
            .history
            .iter()
            .rev()
            .take(newer)
            .flat_map(|r| r.events.iter().rev());
        undo(&mut state, events, start, end);
        state
    }

    fn txn_compares_hold(&self, compares: &[Compare]) -> bool {
        compares.iter().all(|c| {
            let kvs: Vec<&KeyValue> = self.keys_in(&c.key, &c.range_end).collect();
            compare_holds(c, &kvs)
        })
    }
}

/// Rolls `state` back over `events` (newest first) inside `[start, end)`.
fn undo<'a>(
    state: &mut BTreeMap<Key, KeyValue>,
    events: impl Iterator<Item = &'a WatchEvent>,
    start: &[u8],
    end: &[u8],
) {
    for e in events {
        if !in_range(start, end, &e.kv.key) {
            continue;
        }
        match &e.prev_kv {
            Some(prev) => {
                state.insert(prev.key.clone(), prev.clone());
            }
            None => {
                state.remove(&e.kv.key);
            }
        }
    }
}

/// Applies a range's filters, sort and limit to the keys it matched (in key order), etcd's
/// way: `count` is every key in the range, `more` says the limit cut the filtered list.
fn select<'a>(kvs: impl Iterator<Item = &'a KeyValue>, r: &RangeRequest) -> RangeResponse {
    let mut resp = RangeResponse::default();
    let (order, simple) = effective_order(r);
    let keeps = |kv: &KeyValue| {
        let within = |x: u64, min: u64, max: u64| (min == 0 || x >= min) && (max == 0 || x <= max);
        within(kv.mod_revision, r.min_mod_revision, r.max_mod_revision)
            && within(
                kv.create_revision,
                r.min_create_revision,
                r.max_create_revision,
            )
    };
    let mut picked: Vec<&KeyValue> = Vec::new();
    for kv in kvs {
        resp.count += 1;
        if r.count_only || !keeps(kv) {
            continue;
        }
        if simple && r.limit > 0 && picked.len() as u64 >= r.limit {
            resp.more = true;
            continue;
        }
        picked.push(kv);
    }
    if !simple {
        sort_kvs(&mut picked, order, r.sort_target);
        if r.limit > 0 && picked.len() as u64 > r.limit {
            picked.truncate(r.limit as usize);
            resp.more = true;
        }
    }
    resp.kvs = picked
        .into_iter()
        .map(|kv| {
            let mut kv = kv.clone();
            if r.keys_only {
                kv.value.clear();
            }
            kv
        })
        .collect();
    resp
}

/// A stable sort: keys with equal targets keep key order, as etcd's results do in practice.
fn sort_kvs<T: std::borrow::Borrow<KeyValue>>(kvs: &mut [T], order: SortOrder, target: SortTarget) {
    use std::cmp::Ordering;
    let cmp = |a: &T, b: &T| -> Ordering {
        let (a, b) = (a.borrow(), b.borrow());
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
        _ => kvs.sort_by(cmp),
    }
}

/// The sort a range asks for: key order stays the store's own order.
fn effective_order(r: &RangeRequest) -> (SortOrder, bool) {
    let order = match (r.sort_order, r.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    let simple = order == SortOrder::None
        || (order == SortOrder::Ascend && r.sort_target == SortTarget::Key);
    (order, simple)
}

/// Merges the answers to one range read that was split into parts over consecutive key
/// ranges, given in key order (partitioned mode): counts add up, keys keep key order, then
/// the request's sort and limit apply to the whole, as [`select`] applies them to one store.
/// Each part must have been read with the same sort and limit, so it holds its own best
/// `limit` keys and the merged best `limit` are among them — and with values when sorting by
/// value (`keys_only` is applied here, after the sort).
pub fn merge_ranges(parts: Vec<RangeResponse>, r: &RangeRequest) -> RangeResponse {
    let (order, simple) = effective_order(r);
    let mut out = RangeResponse::default();
    for p in parts {
        out.count += p.count;
        out.more |= p.more;
        out.kvs.extend(p.kvs);
    }
    if !simple {
        sort_kvs(&mut out.kvs, order, r.sort_target);
    }
    if r.limit > 0 && out.kvs.len() as u64 > r.limit {
        out.kvs.truncate(r.limit as usize);
        out.more = true;
    }
    if r.keys_only {
        for kv in &mut out.kvs {
            kv.value.clear();
        }
    }
    out
}

/// The history as checkpoints and snapshots carry it: each event without its `prev_kv`, plus,
/// in order of first appearance, each key's state before its first event — every other
/// `prev_kv` is the key's previous event. Half the bytes of the plain form, so a checkpoint
/// with history costs the engine thread about half as much to write.
mod history_wire {
    use super::*;
    use serde::ser::{SerializeSeq, SerializeTuple};
    use serde::{Deserializer, Serializer};
    use std::collections::{HashMap, HashSet};

    struct Revisions<'a>(&'a VecDeque<Arc<RevisionEvents>>);
    struct Revision<'a>(&'a RevisionEvents);
    struct Events<'a>(&'a [WatchEvent]);
    struct Event<'a>(&'a WatchEvent);

    impl Serialize for Revisions<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for r in self.0 {
                seq.serialize_element(&Revision(r))?;
            }
            seq.end()
        }
    }
    impl Serialize for Revision<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&self.0.revision)?;
            t.serialize_element(&Events(&self.0.events))?;
            t.end()
        }
    }
    impl Serialize for Events<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for e in self.0 {
                seq.serialize_element(&Event(e))?;
            }
            seq.end()
        }
    }
    impl Serialize for Event<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&self.0.kind)?;
            t.serialize_element(&self.0.kv)?;
            t.end()
        }
    }

    pub fn serialize<S: Serializer>(
        history: &VecDeque<Arc<RevisionEvents>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seen: HashSet<&[u8]> = HashSet::new();
        let firsts: Vec<&Option<KeyValue>> = history
            .iter()
            .flat_map(|r| r.events.iter())
            .filter(|e| seen.insert(&e.kv.key))
            .map(|e| &e.prev_kv)
            .collect();
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&Revisions(history))?;
        t.serialize_element(&firsts)?;
        t.end()
    }

    type Wire = (
        Vec<(u64, Vec<(EventKind, KeyValue)>)>,
        Vec<Option<KeyValue>>,
    );

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<VecDeque<Arc<RevisionEvents>>, D::Error> {
        let (revisions, firsts): Wire = Deserialize::deserialize(d)?;
        let mut firsts = firsts.into_iter();
        let mut last: HashMap<Key, Option<KeyValue>> = HashMap::new();
        let mut out = VecDeque::with_capacity(revisions.len());
        for (revision, events) in revisions {
            let mut rebuilt = Vec::with_capacity(events.len());
            for (kind, kv) in events {
                let prev_kv = match last.get(&kv.key) {
                    Some(p) => p.clone(),
                    None => firsts.next().ok_or_else(|| {
                        serde::de::Error::custom("history: a key's first state is missing")
                    })?,
                };
                let after = (kind == EventKind::Put).then(|| kv.clone());
                last.insert(kv.key.clone(), after);
                rebuilt.push(WatchEvent { kind, kv, prev_kv });
            }
            out.push_back(Arc::new(RevisionEvents {
                revision,
                events: rebuilt,
            }));
        }
        Ok(out)
    }
}

/// Metadata bytes counted per live key by [`KvStore::bytes_in_use`]: three revisions, a
/// version, a lease id and length prefixes.
pub const KV_OVERHEAD_BYTES: u64 = 48;

fn kv_bytes(kv: &KeyValue) -> u64 {
    KV_OVERHEAD_BYTES + kv.key.len() as u64 + kv.value.len() as u64
}

fn mix(h: u64, x: u64) -> u64 {
    // splitmix64 finaliser over the running hash: cheap and well distributed.
    let mut z = h ^ x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn mix_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    // Eight bytes per multiply (FxHash's step), then one full mix with the length so that
    // zero padding and length extension do not collide trivially. Byte-at-a-time FNV here was
    // ≈7 % of a leader's engine thread with 256-byte values.
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    mix(h, bytes.len() as u64)
}

/// A well-mixed hash of one pair's key, value and version, for digests that must not depend
/// on the order keys were visited or written in (XOR or sum them): CASPaxos's register digest.
pub fn key_value_hash(kv: &KeyValue) -> u64 {
    let h = mix_bytes(mix_bytes(0x6b76_6861_7368_0001, &kv.key), &kv.value);
    mix(h, kv.version)
}

/// One key's term in [`KvStore::content_digest`]: its key, value and version.
fn content_term(kv: &KeyValue) -> u64 {
    mix(mix_bytes(mix_bytes(0, &kv.key), &kv.value), kv.version)
}

fn mix_kv(h: u64, kv: &KeyValue) -> u64 {
    let h = mix_bytes(mix_bytes(h, &kv.key), &kv.value);
    let h = mix(mix(h, kv.version), kv.mod_revision);
    if kv.lease == 0 {
        h
    } else {
        mix(h, kv.lease as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ClientId;

    fn put(k: &str, v: &str) -> Op {
        Op::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            prev_kv: true,
            ..Default::default()
        })
    }
    fn rid(c: u64, s: u64) -> RequestId {
        RequestId {
            client: ClientId(c),
            seq: s,
        }
    }

    #[test]
    fn content_digest_is_kept_in_step_and_ignores_order_and_revisions() {
        let del = |k: &str| {
            Op::DeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: vec![],
                prev_kv: false,
            })
        };
        let mut a = KvStore::new(KvLimits::default());
        let empty = a.content_digest();
        let ops_a = [
            put("x", "1"),
            put("y", "1"),
            put("x", "2"),
            del("y"),
            put("z", "1"),
        ];
        for (i, op) in ops_a.iter().enumerate() {
            a.apply(i as u64 + 1, rid(0, 0), 0, op).unwrap();
        }
        // The same writes with the commuting ones in another order (and one revision more,
        // from a delete of a missing key): the same content.
        let mut b = KvStore::new(KvLimits::default());
        let ops_b = [
            put("z", "1"),
            del("q"),
            put("x", "1"),
            put("y", "1"),
            del("y"),
            put("x", "2"),
        ];
        for (i, op) in ops_b.iter().enumerate() {
            b.apply(i as u64 + 1, rid(0, 0), 0, op).unwrap();
        }
        assert_ne!(a.content_digest(), empty);
        assert_eq!(a.content_digest(), b.content_digest());
        // Kept incrementally, it equals a fresh computation (after a snapshot round trip).
        let bytes = postcard::to_allocvec(&a).unwrap();
        let fresh: KvStore = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(fresh.content_digest(), a.content_digest());
        a.apply(9, rid(0, 0), 0, &put("x", "3")).unwrap();
        assert_ne!(fresh.content_digest(), a.content_digest());
    }

    #[test]
    fn bytes_in_use_is_kept_in_step_and_shrinks_with_compaction() {
        let mut s = KvStore::new(KvLimits::default());
        let empty = s.bytes_in_use();
        assert_eq!(empty, 0);
        for i in 0..20u64 {
            s.apply(
                i + 1,
                rid(0, 0),
                0,
                &put(&format!("k{}", i % 4), "0123456789"),
            )
            .unwrap();
        }
        s.apply(21, rid(0, 0), 0, &del("k3")).unwrap();
        let grown = s.bytes_in_use();
        // Incrementally kept = computed afresh (as after a restart).
        let fresh: KvStore = postcard::from_bytes(&postcard::to_allocvec(&s).unwrap()).unwrap();
        assert_eq!(fresh.bytes_in_use(), grown);
        // Three live keys at least, plus 21 revisions of history.
        assert!(grown > 3 * (KV_OVERHEAD_BYTES + 12), "{grown}");
        s.apply(
            22,
            rid(0, 0),
            0,
            &Op::Compact(CompactRequest {
                revision: 21,
                physical: false,
            }),
        )
        .unwrap();
        let compacted = s.bytes_in_use();
        assert!(compacted < grown, "{compacted} < {grown}");
        let fresh: KvStore = postcard::from_bytes(&postcard::to_allocvec(&s).unwrap()).unwrap();
        assert_eq!(fresh.bytes_in_use(), compacted);
    }

    #[test]
    fn versions_and_revisions_follow_etcd() {
        let mut s = KvStore::new(KvLimits::default());
        s.apply(1, rid(0, 0), 0, &put("a", "1")).unwrap();
        s.apply(2, rid(0, 0), 0, &put("a", "2")).unwrap();
        s.apply(3, rid(0, 0), 0, &put("b", "1")).unwrap();
        let a = s.get(b"a").unwrap();
        assert_eq!((a.version, a.create_revision, a.mod_revision), (2, 1, 2));
        assert_eq!(s.revision(), 3);
        let del = Op::DeleteRange(DeleteRangeRequest {
            key: "a".into(),
            range_end: vec![],
            prev_kv: true,
        });
        let r = s.apply(4, rid(0, 0), 0, &del).unwrap();
        assert_eq!(r.revision, 4);
        // Deleting a missing key changes nothing, not even the revision.
        let r = s.apply(5, rid(0, 0), 0, &del).unwrap();
        assert_eq!(r.revision, 4);
        s.apply(6, rid(0, 0), 0, &put("a", "3")).unwrap();
        let a = s.get(b"a").unwrap();
        assert_eq!((a.version, a.create_revision), (1, 5));
    }

    #[test]
    fn cas_on_value_version_and_absent() {
        let mut s = KvStore::new(KvLimits::default());
        let cas = |expect, then| {
            Op::Cas(CasRequest {
                key: "k".into(),
                expect,
                then,
            })
        };
        let ok = |r: Response| match r.body {
            ResponseBody::Cas(c) => c.succeeded,
            _ => panic!(),
        };
        assert!(ok(s
            .apply(
                1,
                rid(0, 0),
                0,
                &cas(Expect::Absent, CasAction::Put("x".into()))
            )
            .unwrap()));
        assert!(!ok(s
            .apply(
                2,
                rid(0, 0),
                0,
                &cas(Expect::Absent, CasAction::Put("y".into()))
            )
            .unwrap()));
        assert!(ok(s
            .apply(
                3,
                rid(0, 0),
                0,
                &cas(Expect::Version(1), CasAction::Put("y".into()))
            )
            .unwrap()));
        assert!(!ok(s
            .apply(
                4,
                rid(0, 0),
                0,
                &cas(Expect::Value("x".into()), CasAction::Delete)
            )
            .unwrap()));
        assert!(ok(s
            .apply(
                5,
                rid(0, 0),
                0,
                &cas(Expect::Value("y".into()), CasAction::Delete)
            )
            .unwrap()));
        assert!(s.get(b"k").is_none());
        assert_eq!(s.revision(), 3);
    }

    #[test]
    fn retried_write_is_applied_once() {
        let mut s = KvStore::new(KvLimits::default());
        let first = s.apply(1, rid(7, 1), 1, &put("a", "1")).unwrap();
        let again = s.apply(2, rid(7, 1), 1, &put("a", "1")).unwrap();
        assert_eq!(first, again);
        assert_eq!(s.get(b"a").unwrap().version, 1);
        // Once the client acknowledged seq 1 (first_unacked = 2), a late duplicate is refused.
        s.apply(3, rid(7, 2), 2, &put("b", "1")).unwrap();
        assert_eq!(
            s.apply(4, rid(7, 1), 1, &put("a", "1")),
            Err(EngineError::SessionExpired)
        );
        assert_eq!(s.get(b"a").unwrap().version, 1);
    }

    #[test]
    fn ranges_prefixes_limits_and_txn() {
        let mut s = KvStore::new(KvLimits::default());
        for (i, k) in ["a/1", "a/2", "a/3", "b"].iter().enumerate() {
            s.apply(i as u64 + 1, rid(0, 0), 0, &put(k, "v")).unwrap();
        }
        let mut r = RangeRequest::prefix("a/");
        r.limit = 2;
        let resp = s.read(&Op::Range(r)).unwrap();
        let ResponseBody::Range(rr) = resp.body else {
            panic!()
        };
        assert_eq!((rr.kvs.len(), rr.count, rr.more), (2, 3, true));
        let all = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        let ResponseBody::Range(rr) = s.read(&Op::Range(all)).unwrap().body else {
            panic!()
        };
        assert_eq!(rr.count, 4);

        let txn = Op::Txn(TxnRequest {
            compare: vec![Compare {
                key: "b".into(),
                range_end: vec![],
                target: CompareTarget::Version(1),
                result: CompareResult::Equal,
            }],
            success: vec![
                TxnOp::Put(PutRequest {
                    key: "c".into(),
                    value: "1".into(),
                    prev_kv: false,
                    ..Default::default()
                }),
                TxnOp::Put(PutRequest {
                    key: "d".into(),
                    value: "1".into(),
                    prev_kv: false,
                    ..Default::default()
                }),
            ],
            failure: vec![],
        });
        let r = s.apply(5, rid(0, 0), 0, &txn).unwrap();
        assert_eq!(r.revision, 5, "one revision per txn");
        assert_eq!(s.get(b"d").unwrap().mod_revision, 5);
        // VALUE compare on a missing key is false (etcd semantics).
        let c = Compare {
            key: "zz".into(),
            range_end: vec![],
            target: CompareTarget::Value(vec![]),
            result: CompareResult::Equal,
        };
        assert!(!compare_holds(&c, &[]));
    }

    #[test]
    fn digests_agree_for_same_sequence_and_differ_otherwise() {
        let mut a = KvStore::new(KvLimits::default());
        let mut b = KvStore::new(KvLimits::default());
        a.apply(1, rid(0, 0), 0, &put("k", "1")).unwrap();
        b.apply(1, rid(0, 0), 0, &put("k", "1")).unwrap();
        assert_eq!(a.digest(), b.digest());
        a.apply(2, rid(0, 0), 0, &put("k", "2")).unwrap();
        b.apply(2, rid(0, 0), 0, &put("k", "3")).unwrap();
        assert_ne!(a.digest(), b.digest());
    }

    fn del(k: &str) -> Op {
        Op::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: vec![],
            prev_kv: false,
        })
    }

    fn range_at(s: &KvStore, r: RangeRequest) -> Result<RangeResponse, EngineError> {
        match s.read(&Op::Range(r))?.body {
            ResponseBody::Range(rr) => Ok(rr),
            other => panic!("{other:?}"),
        }
    }

    fn at(prefix: &str, revision: u64) -> RangeRequest {
        RangeRequest {
            revision,
            ..RangeRequest::prefix(prefix)
        }
    }

    fn values(rr: &RangeResponse) -> Vec<(String, String)> {
        rr.kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into(),
                    String::from_utf8_lossy(&kv.value).into(),
                )
            })
            .collect()
    }

    fn kvs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_at_past_revisions_see_the_store_as_it_was() {
        let mut s = KvStore::new(KvLimits::default());
        s.apply(1, rid(0, 0), 0, &put("k/a", "1")).unwrap(); // rev 1
        s.apply(2, rid(0, 0), 0, &put("k/b", "1")).unwrap(); // rev 2
        s.apply(3, rid(0, 0), 0, &put("k/a", "2")).unwrap(); // rev 3
        s.apply(4, rid(0, 0), 0, &del("k/b")).unwrap(); // rev 4
        s.apply(5, rid(0, 0), 0, &del("k/zz")).unwrap(); // no change, no revision
        assert_eq!(s.revision(), 4);
        assert_eq!(
            values(&range_at(&s, at("k/", 1)).unwrap()),
            kvs(&[("k/a", "1")])
        );
        assert_eq!(
            values(&range_at(&s, at("k/", 2)).unwrap()),
            kvs(&[("k/a", "1"), ("k/b", "1")])
        );
        assert_eq!(
            values(&range_at(&s, at("k/", 3)).unwrap()),
            kvs(&[("k/a", "2"), ("k/b", "1")])
        );
        assert_eq!(
            values(&range_at(&s, at("k/", 4)).unwrap()),
            kvs(&[("k/a", "2")])
        );
        let b = &range_at(&s, at("k/b", 3)).unwrap().kvs[0];
        assert_eq!((b.create_revision, b.mod_revision, b.version), (2, 2, 1));
        assert_eq!(
            range_at(&s, at("k/", 5)),
            Err(EngineError::FutureRevision { revision: 5 })
        );
    }

    #[test]
    fn compaction_follows_etcd_and_keeps_the_compacted_revision_readable() {
        let mut s = KvStore::new(KvLimits::default());
        for i in 1..=5 {
            s.apply(i, rid(0, 0), 0, &put("k", &i.to_string())).unwrap();
        }
        let compact = |rev| {
            Op::Compact(CompactRequest {
                revision: rev,
                physical: true,
            })
        };
        assert_eq!(
            s.apply(6, rid(0, 0), 0, &compact(9)),
            Err(EngineError::FutureRevision { revision: 9 })
        );
        let before = s.digest();
        s.apply(7, rid(0, 0), 0, &compact(3)).unwrap();
        assert_ne!(s.digest(), before, "replicas must agree on compactions too");
        assert_eq!(s.revision(), 5, "a compaction is not a revision");
        assert_eq!(
            values(&range_at(&s, at("k", 3)).unwrap()),
            kvs(&[("k", "3")])
        );
        assert_eq!(
            range_at(&s, at("k", 2)),
            Err(EngineError::Compacted {
                compact_revision: 3
            })
        );
        assert_eq!(
            s.apply(8, rid(0, 0), 0, &compact(3)),
            Err(EngineError::Compacted {
                compact_revision: 3
            })
        );
        assert_eq!(s.history_from(3, 10).unwrap().len(), 3);
        assert_eq!(
            s.history_from(2, 10),
            Err(EngineError::Compacted {
                compact_revision: 3
            })
        );
        assert_eq!(s.history_revisions(), 3);
        // History survives a checkpoint round trip.
        let back: KvStore = postcard::from_bytes(&postcard::to_stdvec(&s).unwrap()).unwrap();
        assert_eq!(
            back.history_from(3, 10),
            s.history_from(3, 10),
            "prev_kvs rebuilt"
        );
        assert_eq!(
            values(&range_at(&back, at("k", 4)).unwrap()),
            kvs(&[("k", "4")])
        );
    }

    #[test]
    fn events_carry_every_change_of_a_revision_with_prev_kv() {
        let mut s = KvStore::new(KvLimits::default());
        assert!(s.take_fresh_events().is_empty());
        s.apply(1, rid(0, 0), 0, &put("a", "1")).unwrap();
        s.apply(2, rid(0, 0), 0, &put("b", "1")).unwrap();
        let txn = Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                TxnOp::Put(PutRequest {
                    key: "a".into(),
                    value: "2".into(),
                    prev_kv: false,
                    ..Default::default()
                }),
                TxnOp::DeleteRange(DeleteRangeRequest {
                    key: "b".into(),
                    range_end: vec![],
                    prev_kv: false,
                }),
            ],
            failure: vec![],
        });
        s.apply(3, rid(0, 0), 0, &txn).unwrap();
        let fresh = s.take_fresh_events();
        assert_eq!(
            fresh.iter().map(|r| r.revision).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let r3 = &fresh[2];
        assert_eq!(r3.events.len(), 2, "one revision, both changes");
        assert_eq!(r3.events[0].kind, EventKind::Put);
        assert_eq!(r3.events[0].prev_kv.as_ref().unwrap().value, b"1");
        assert_eq!(r3.events[1].kind, EventKind::Delete);
        assert_eq!(
            (r3.events[1].kv.mod_revision, r3.events[1].kv.version),
            (3, 0)
        );
        assert!(s.take_fresh_events().is_empty());
        s.apply(4, rid(0, 0), 0, &put("b", "2")).unwrap();
        s.apply(5, rid(0, 0), 0, &del("a")).unwrap();
        // The checkpoint form drops prev_kvs and rebuilds them exactly.
        let back: KvStore = postcard::from_bytes(&postcard::to_stdvec(&s).unwrap()).unwrap();
        assert_eq!(back.history_from(1, 10), s.history_from(1, 10));
        assert_eq!(back.digest(), s.digest());
        // A past read undoes both changes of the transaction.
        assert_eq!(
            values(&range_at(&s, at("", 2)).unwrap()),
            kvs(&[("a", "1"), ("b", "1")])
        );
    }

    #[test]
    fn sorting_filters_and_limits_follow_etcd() {
        let mut s = KvStore::new(KvLimits::default());
        for (i, (k, v)) in [("p/c", "x"), ("p/a", "z"), ("p/b", "y"), ("p/a", "w")]
            .iter()
            .enumerate()
        {
            s.apply(i as u64 + 1, rid(0, 0), 0, &put(k, v)).unwrap();
        }
        let mut r = RangeRequest::prefix("p/");
        r.sort_target = SortTarget::Create;
        r.sort_order = SortOrder::Descend;
        r.limit = 2;
        let rr = range_at(&s, r.clone()).unwrap();
        assert_eq!(values(&rr), kvs(&[("p/b", "y"), ("p/a", "w")]));
        assert_eq!((rr.count, rr.more), (3, true));
        // A target with no order sorts ascending (etcd's rule).
        r.sort_order = SortOrder::None;
        r.limit = 0;
        r.sort_target = SortTarget::Value;
        assert_eq!(
            values(&range_at(&s, r.clone()).unwrap()),
            kvs(&[("p/a", "w"), ("p/c", "x"), ("p/b", "y")])
        );
        let mut f = RangeRequest::prefix("p/");
        f.max_create_revision = 2;
        f.min_mod_revision = 2;
        assert_eq!(values(&range_at(&s, f).unwrap()), kvs(&[("p/a", "w")]));
        let mut c = RangeRequest::prefix("p/");
        c.count_only = true;
        let rr = range_at(&s, c).unwrap();
        assert_eq!((rr.kvs.len(), rr.count), (0, 3));
    }

    #[test]
    fn byte_hash_sees_every_byte_and_the_length() {
        let base: Vec<u8> = (0..21).collect();
        let h = mix_bytes(1, &base);
        for i in 0..base.len() {
            let mut v = base.clone();
            v[i] ^= 1;
            assert_ne!(mix_bytes(1, &v), h, "byte {i} ignored");
        }
        // Zero padding inside the last word is not the same value.
        assert_ne!(mix_bytes(1, b"a"), mix_bytes(1, b"a\0"));
        assert_ne!(mix_bytes(1, b""), mix_bytes(1, &[0u8; 8]));
    }
}
