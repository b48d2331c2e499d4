//! The key-value service's commands and replies, and the state machine that executes them.
//!
//! The command set follows the etcd v3 KV API (Range, Put, DeleteRange, Txn with compares) so
//! that the etcd gRPC surface maps onto it one to one, plus a single-key [`CasRequest`] that
//! every engine — including the log-less CASPaxos — can execute.
//!
//! Versions and revisions have the etcd v3 meaning:
//! * `version` — per key: 1 on create, +1 per change, the key is gone (version 0) after delete.
//! * `revision` — per store: +1 per write command that changed something (one revision for a
//!   whole Txn). `create_revision` / `mod_revision` are the revisions of the key's creation and
//!   last change. Only engines that give a total order (OmniPaxos, VR, EPaxos after
//!   execution ordering) maintain revisions; CASPaxos reports 0.
//!
//! **MVCC.** The store keeps the events of every revision since its compaction revision
//! (see [`store`]): reads at a past revision, watches that start in the past and
//! [`Op::Compact`] follow etcd's semantics and error texts.

pub mod footprint;
pub mod lease;
pub mod owned;
pub mod register;
pub mod session;
pub mod store;

pub use footprint::{Footprint, Span};
pub use lease::{
    ENDED_LEASES_MAX, LEASE_TTL_MAX_SECONDS, Lease, LeaseChange, LeaseGrantRequest, LeaseId,
    LeaseInfo, LeaseTtl, Leases,
};
pub use owned::{AbsorbMark, KeyRange, RangeState, SplitMark};
pub use session::{ClientTable, SessionVerdict};
pub use store::{CLOSE_STEP_MAX, KvHash, KvHashPart, KvStore, combine_hash_parts, merge_ranges};

use serde::{Deserialize, Serialize};

pub type Key = Vec<u8>;
pub type Value = Vec<u8>;

/// Bounds on the state machine's own memory. Request-size limits live at the API edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvLimits {
    /// Sessions kept for exactly-once writes; the least recently active is evicted beyond this.
    pub client_table_max: usize,
    /// Saved replies kept per session (requests a client may have in flight at once).
    pub client_window_max: usize,
    /// Leases held at once (etcd has no such bound; a grant beyond it is refused).
    pub leases_max: usize,
    /// Keys attached to one lease; a put that would attach one more is refused.
    pub lease_keys_max: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            client_table_max: 16_384,
            client_window_max: 1_024,
            leases_max: 100_000,
            lease_keys_max: 100_000,
        }
    }
}

/// A key with its metadata, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
pub struct KeyValue {
    pub key: Key,
    pub value: Value,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// The lease the key is attached to (0 = none): the key is deleted when the lease ends.
    pub lease: LeaseId,
}

/// A command submitted to the replicated store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Cas(CasRequest),
    /// etcd's KV.Compact: drop the history below `revision`.
    Compact(CompactRequest),
    /// etcd's Lease.LeaseGrant.
    LeaseGrant(LeaseGrantRequest),
    /// etcd's Lease.LeaseRevoke: the lease ends and its keys are deleted in one revision.
    LeaseRevoke {
        id: LeaseId,
    },
    /// One keep-alive of etcd's Lease.LeaseKeepAlive stream: the lease's TTL starts again.
    /// Replicated like a write, so every replica knows when a lease was last renewed.
    LeaseKeepAlive {
        id: LeaseId,
    },
    /// etcd's Lease.LeaseTimeToLive (a read).
    LeaseTimeToLive {
        id: LeaseId,
        keys: bool,
    },
    /// etcd's Lease.LeaseLeases (a read).
    LeaseLeases,
    /// Proposed by the leader's lessor, never accepted from a client: the lease ends unless
    /// it was renewed after the lessor saw it (`stamp` is the lease's renewal stamp then), so
    /// an expiry that races a keep-alive changes nothing.
    LeaseExpire {
        id: LeaseId,
        stamp: u64,
    },
    /// A change of the cluster's configuration (etcd's Cluster API), decided like a write and
    /// applied by the replica layer, not the KV store (see [`crate::membership`]).
    Membership(crate::membership::MemberChange),
    /// A change of the users, roles and permissions (etcd's Auth API), decided like a write
    /// and applied by the replica layer beside the store (see [`crate::auth`]).
    Auth(crate::auth::AuthChange),
    /// Partitioned mode: the group's key range ends at `at`, and a new group takes the keys
    /// from `at` on ([`owned`]). Decided like a write, applied by the replica layer.
    Split(SplitRequest),
    /// Partitioned mode: the group whose range begins at `at` stops (it is *frozen*: it
    /// refuses everything from here on), to be absorbed by the group whose range ends at `at`
    /// ([`Op::Absorb`]). Decided in the upper group's log, applied by the replica layer.
    Merge(MergeRequest),
    /// Partitioned mode, never accepted from a client: the frozen group `group`'s state (its
    /// range `[start, end)`) joins this group's, whose range ends at `start`. The state travels
    /// in the entry so that every replica of this group applies the same one. Proposed by the
    /// partitioned engine on the lower group's leader.
    Absorb(AbsorbRequest),
    /// Partitioned mode, never accepted from a client: the group's revision goes up to
    /// `through` if it is below (revisions with no event), so that no write of this group gets
    /// a revision at or below it. Revisions are per group; proposed by a group's leader while
    /// other groups are ahead, it keeps the counters together, and a watch over keys of
    /// several groups delivers a revision once every group it reads has *closed* it.
    CloseRevisions {
        through: u64,
    },
    /// Partitioned mode with placement: the group owning key `at` moves its replica on member
    /// `from` to member `to` — `to` added as a learner, promoted once in sync, `from`
    /// removed, each through the group's own log. Handled by the partitioned engine, never
    /// proposed as an entry itself.
    Move(MoveRequest),
    /// Partitioned mode, never accepted from a client: a change of one group's configuration
    /// that a group leader computed from the configuration of `version` (a move's step, a
    /// group following the cluster's members), applied only if the group's configuration is
    /// still that one — a copy decided late (a step proposed again after its answer was lost,
    /// by this leader or a later one) is refused instead of undoing what came after it.
    MembershipAt {
        version: u64,
        change: crate::membership::MemberChange,
    },
}

/// See [`Op::Move`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRequest {
    pub at: Key,
    pub from: crate::NodeId,
    pub to: crate::NodeId,
}

/// See [`Op::Merge`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRequest {
    pub at: Key,
}

/// See [`Op::Absorb`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbsorbRequest {
    pub group: u64,
    pub start: Key,
    pub end: Key,
    /// The frozen group's state, as the replica layer encodes it for a merge.
    pub image: Vec<u8>,
}

impl std::fmt::Debug for AbsorbRequest {
    /// Not the image: it may be megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbsorbRequest")
            .field("group", &self.group)
            .field("start", &String::from_utf8_lossy(&self.start))
            .field("end", &String::from_utf8_lossy(&self.end))
            .field("image_bytes", &self.image.len())
            .finish()
    }
}

/// See [`Op::Split`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRequest {
    pub at: Key,
}

/// etcd's CompactionRequest. `physical` is accepted for compatibility: Synod's compaction is
/// done when the command is applied, so every compaction is physical.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CompactRequest {
    pub revision: u64,
    pub physical: bool,
}

impl Op {
    /// Reads never change state; engines may serve them without a log entry.
    pub fn is_read(&self) -> bool {
        match self {
            Op::Range(_) | Op::LeaseTimeToLive { .. } | Op::LeaseLeases => true,
            Op::Txn(t) => {
                t.success.iter().all(TxnOp::is_read) && t.failure.iter().all(TxnOp::is_read)
            }
            Op::Put(_)
            | Op::DeleteRange(_)
            | Op::Cas(_)
            | Op::Compact(_)
            | Op::LeaseGrant(_)
            | Op::LeaseRevoke { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseExpire { .. }
            | Op::Membership(_)
            | Op::MembershipAt { .. }
            | Op::Auth(_)
            | Op::Split(_)
            | Op::Merge(_)
            | Op::Absorb(_)
            | Op::Move(_)
            | Op::CloseRevisions { .. } => false,
        }
    }

    /// Whether this op creates, renews, ends, reads or attaches to a lease: what an engine
    /// without a leader-driven lessor (CASPaxos) cannot serve.
    pub fn uses_leases(&self) -> bool {
        let put = |p: &PutRequest| p.lease != 0 || p.ignore_lease;
        match self {
            Op::LeaseGrant(_)
            | Op::LeaseRevoke { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseTimeToLive { .. }
            | Op::LeaseLeases
            | Op::LeaseExpire { .. } => true,
            Op::Put(p) => put(p),
            Op::Txn(t) => t
                .success
                .iter()
                .chain(&t.failure)
                .any(|o| matches!(o, TxnOp::Put(p) if put(p))),
            Op::Range(_)
            | Op::DeleteRange(_)
            | Op::Cas(_)
            | Op::Compact(_)
            | Op::Membership(_)
            | Op::MembershipAt { .. }
            | Op::Auth(_)
            | Op::Split(_)
            | Op::Merge(_)
            | Op::Absorb(_)
            | Op::Move(_)
            | Op::CloseRevisions { .. } => false,
        }
    }

    /// Whether this op needs the store's revision history (a read at a past revision, a
    /// compaction): what an engine without a total order of writes cannot serve.
    pub fn needs_revisions(&self) -> bool {
        let range = |r: &RangeRequest| r.revision > 0 || r.filters_by_revision();
        match self {
            Op::Range(r) => range(r),
            Op::Compact(_) => true,
            Op::Txn(t) => t
                .success
                .iter()
                .chain(&t.failure)
                .any(|o| matches!(o, TxnOp::Range(r) if range(r))),
            Op::Put(_) | Op::DeleteRange(_) | Op::Cas(_) => false,
            Op::LeaseGrant(_)
            | Op::LeaseRevoke { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseTimeToLive { .. }
            | Op::LeaseLeases
            | Op::LeaseExpire { .. }
            | Op::Membership(_)
            | Op::MembershipAt { .. }
            | Op::Auth(_)
            | Op::Split(_)
            | Op::Merge(_)
            | Op::Absorb(_)
            | Op::Move(_)
            | Op::CloseRevisions { .. } => false,
        }
    }

    /// The one key this op touches, if it touches exactly one (what a per-key engine such as
    /// CASPaxos can execute). `None` for ranges and multi-key transactions.
    pub fn single_key(&self) -> Option<&[u8]> {
        match self {
            Op::Range(r) if r.range_end.is_empty() => Some(&r.key),
            Op::Put(p) => Some(&p.key),
            Op::DeleteRange(d) if d.range_end.is_empty() => Some(&d.key),
            Op::Cas(c) => Some(&c.key),
            _ => None,
        }
    }

    /// The membership change this op makes, guarded or not.
    pub fn member_change(&self) -> Option<&crate::membership::MemberChange> {
        match self {
            Op::Membership(c) | Op::MembershipAt { change: c, .. } => Some(c),
            _ => None,
        }
    }

    /// Rough encoded size, for batching limits.
    pub fn size_bytes(&self) -> usize {
        fn ops(v: &[TxnOp]) -> usize {
            v.iter()
                .map(|o| match o {
                    TxnOp::Range(r) => r.key.len() + r.range_end.len(),
                    TxnOp::Put(p) => p.key.len() + p.value.len(),
                    TxnOp::DeleteRange(d) => d.key.len() + d.range_end.len(),
                })
                .sum()
        }
        16 + match self {
            Op::Compact(_)
            | Op::LeaseGrant(_)
            | Op::LeaseRevoke { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseTimeToLive { .. }
            | Op::LeaseLeases
            | Op::LeaseExpire { .. }
            | Op::CloseRevisions { .. } => 16,
            Op::Membership(_) | Op::MembershipAt { .. } | Op::Auth(_) => 256,
            Op::Split(s) => s.at.len(),
            Op::Merge(m) => m.at.len(),
            Op::Move(m) => m.at.len() + 16,
            Op::Absorb(a) => a.start.len() + a.end.len() + a.image.len(),
            Op::Range(r) => r.key.len() + r.range_end.len(),
            Op::Put(p) => p.key.len() + p.value.len(),
            Op::DeleteRange(d) => d.key.len() + d.range_end.len(),
            Op::Txn(t) => {
                t.compare
                    .iter()
                    .map(|c| c.key.len() + c.range_end.len() + 16)
                    .sum::<usize>()
                    + ops(&t.success)
                    + ops(&t.failure)
            }
            Op::Cas(c) => {
                c.key.len()
                    + match &c.expect {
                        Expect::Value(v) => v.len(),
                        _ => 8,
                    }
                    + match &c.then {
                        CasAction::Put(v) => v.len(),
                        CasAction::Delete => 0,
                    }
            }
        }
    }
}

/// etcd's RangeRequest: `range_end` empty = the single `key`; `range_end == [0]` = every key
/// `>= key`; otherwise the half-open interval `[key, range_end)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RangeRequest {
    pub key: Key,
    pub range_end: Key,
    /// 0 = no limit.
    pub limit: u64,
    pub keys_only: bool,
    pub count_only: bool,
    /// Read the store as it was at this revision; 0 = the current revision.
    pub revision: u64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Keep only keys whose mod / create revision lies in `[min, max]`; 0 = no bound.
    pub min_mod_revision: u64,
    pub max_mod_revision: u64,
    pub min_create_revision: u64,
    pub max_create_revision: u64,
}

/// etcd's RangeRequest.SortOrder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SortOrder {
    /// Key order, ascending (the store's own order) — unless a target other than the key is
    /// named, which etcd sorts ascending.
    #[default]
    None,
    Ascend,
    Descend,
}

/// etcd's RangeRequest.SortTarget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

impl RangeRequest {
    /// Whether any min/max mod/create revision filter is set.
    pub fn filters_by_revision(&self) -> bool {
        self.min_mod_revision != 0
            || self.max_mod_revision != 0
            || self.min_create_revision != 0
            || self.max_create_revision != 0
    }

    pub fn key(key: impl Into<Key>) -> Self {
        RangeRequest {
            key: key.into(),
            ..Default::default()
        }
    }
    /// Every key starting with `prefix` (etcd's `--prefix`).
    pub fn prefix(prefix: impl Into<Key>) -> Self {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        RangeRequest {
            key,
            range_end,
            ..Default::default()
        }
    }
}

/// The smallest key greater than every key with this prefix (etcd's `GetPrefixRangeEnd`);
/// `[0]` (= "to the end") when the prefix is empty or all 0xff.
pub fn prefix_end(prefix: &[u8]) -> Key {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PutRequest {
    pub key: Key,
    pub value: Value,
    pub prev_kv: bool,
    /// Attach the key to this lease. 0 = none: like etcd, a put without a lease detaches the
    /// key from the one it had (`ignore_lease` keeps it).
    pub lease: LeaseId,
    /// Keep the key's current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the key's current lease (the key must exist; `lease` must be 0).
    pub ignore_lease: bool,
}

impl PutRequest {
    /// A plain put: no lease, no prev_kv.
    pub fn new(key: impl Into<Key>, value: impl Into<Value>) -> Self {
        PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeleteRangeRequest {
    pub key: Key,
    pub range_end: Key,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
}

impl TxnOp {
    pub fn is_read(&self) -> bool {
        matches!(self, TxnOp::Range(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Key,
    /// As in [`RangeRequest`]; empty = just `key`.
    pub range_end: Key,
    pub target: CompareTarget,
    pub result: CompareResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Value(Value),
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
    /// The lease the key is attached to (0 = none; a missing key compares as 0).
    Lease(LeaseId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// Single-key compare-and-swap, the operation every engine supports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasRequest {
    pub key: Key,
    pub expect: Expect,
    pub then: CasAction,
}

/// What the key must look like for a CAS to take effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// The key must not exist.
    Absent,
    /// The key must exist with exactly this value.
    Value(Value),
    /// The key must exist with exactly this version (1 = just created).
    Version(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CasAction {
    Put(Value),
    Delete,
}

/// A reply, stamped with the store revision it was computed at (etcd's header revision).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub revision: u64,
    pub body: ResponseBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Cas(CasResponse),
    /// A compaction took effect (the reply's revision is the store's, not the compacted one).
    Compact,
    LeaseGrant(LeaseInfo),
    LeaseRevoke,
    /// The lease renewed, with its granted TTL.
    LeaseKeepAlive(LeaseInfo),
    LeaseTimeToLive(LeaseTtl),
    LeaseLeases(Vec<LeaseId>),
    /// Whether the lessor's expiry took effect (false: the lease was renewed or already gone).
    LeaseExpire {
        expired: bool,
    },
    /// The configuration after a membership change.
    Membership(crate::membership::Configuration),
    /// An auth change took effect; the auth revision after it.
    Auth {
        auth_revision: u64,
    },
    /// A split took effect: the range this group keeps (`end` empty: to the end of the
    /// keyspace) and the applied index the new group starts from.
    Split {
        start: Key,
        end: Key,
        index: u64,
    },
    /// A merge began (the group owning `[start, end)` froze at `index`, for the group below
    /// to absorb), or an absorb took effect (this group now owns `[start, end)`).
    Merge {
        start: Key,
        end: Key,
        index: u64,
    },
    /// [`Op::CloseRevisions`] applied: the group's revision is the reply's.
    Closed,
}

/// What a watch event reports, as etcd's `mvccpb.Event.EventType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key, as etcd's `mvccpb.Event`: for a put `kv` is the key after it, for a
/// delete `kv` carries only the key and the deleting revision (`mod_revision`); `prev_kv` is
/// the key before the change (absent if it did not exist).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// Every change of one revision, in the order the command made them. A revision is never
/// split: watchers see all of it or none of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionEvents {
    pub revision: u64,
    pub events: Vec<WatchEvent>,
}

impl RevisionEvents {
    /// Rough size in memory and on the wire, for buffer bounds.
    pub fn size_bytes(&self) -> usize {
        let kv = |kv: &KeyValue| 48 + kv.key.len() + kv.value.len();
        16 + self
            .events
            .iter()
            .map(|e| 8 + kv(&e.kv) + e.prev_kv.as_ref().map_or(0, kv))
            .sum::<usize>()
    }
}

/// What one watcher asks for (etcd's WatchCreateRequest without the stream bookkeeping): an
/// etcd key range (`range_end` empty = the key alone, `[0]` = every key from `key` on),
/// NOPUT / NODELETE, and whether it wants `prev_kv`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFilter {
    pub key: Key,
    pub range_end: Key,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchFilter {
    /// The events of one revision this watcher is sent, in the revision's order; `prev_kv`
    /// only when asked for.
    pub fn select(&self, rev: &RevisionEvents) -> Vec<WatchEvent> {
        rev.events
            .iter()
            .filter(|e| in_range(&self.key, &self.range_end, &e.kv.key))
            .filter(|e| match e.kind {
                EventKind::Put => !self.no_put,
                EventKind::Delete => !self.no_delete,
            })
            .map(|e| WatchEvent {
                kind: e.kind,
                kv: e.kv.clone(),
                prev_kv: if self.prev_kv {
                    e.prev_kv.clone()
                } else {
                    None
                },
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    pub more: bool,
    /// Keys matched in total (ignoring `limit`).
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeleteRangeResponse {
    pub deleted: u64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseBody>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CasResponse {
    pub succeeded: bool,
    /// The key before the operation (absent = did not exist).
    pub prev_kv: Option<KeyValue>,
    /// The key after the operation (absent = does not exist now).
    pub kv: Option<KeyValue>,
}

/// Does `key` fall inside the etcd-style range `[start, end)`?
pub fn in_range(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// Evaluates one compare against the keys it names (etcd semantics: a VALUE compare on a
/// missing key is false; other targets compare a missing key as all zeros).
pub fn compare_holds(c: &Compare, kvs: &[&KeyValue]) -> bool {
    if kvs.is_empty() {
        if matches!(c.target, CompareTarget::Value(_)) {
            return false;
        }
        return compare_one(c, &KeyValue::default());
    }
    kvs.iter().all(|kv| compare_one(c, kv))
}

fn compare_one(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match &c.target {
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
        CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// Does the current state of a key satisfy a CAS expectation?
pub fn expect_holds(expect: &Expect, current: Option<&KeyValue>) -> bool {
    match (expect, current) {
        (Expect::Absent, None) => true,
        (Expect::Value(v), Some(kv)) => &kv.value == v,
        (Expect::Version(n), Some(kv)) => kv.version == *n,
        _ => false,
    }
}
