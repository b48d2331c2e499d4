//! [`NodeHandle`]: how an API layer submits requests to a node and reads its status.
//!
//! The engine is owned by one task (the runtime); API handlers never touch it. They send a
//! [`Submission`] over a bounded channel and await the reply on a oneshot. Validation that does
//! not need the engine — sizes, empty keys, what the engine supports — happens here, at the
//! edge, so that every API refuses the same things with the same errors.
//!
//! **Fail fast without a leader.** A write or linearizable read submitted while this member
//! knows no leader, or cannot reach the one it knows, would only wait in the engine for its
//! timeout (seconds) — a member cut off from the cluster would hold its clients that long
//! instead of sending them elsewhere. Such a request is refused at once with
//! [`ApiError::NoLeader`] (etcd's "etcdserver: no leader"), never reaching the engine, so it
//! definitely had no effect and is safe to retry anywhere. Requests at a member that does
//! reach its leader are forwarded as before; sequential reads are local and always served.

use crate::alarm::Alarms;
use crate::auth::AuthGate;
use crate::backup::Maintenance;
use crate::metrics::Metrics;
use crate::watch::{HistoryQuery, WatchHub, WatchHubs};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use synod_core::kv::{KvLimits, KvStore, Op, Response, TxnOp};
use synod_core::{Capabilities, Consistency, EngineError, EngineStatus, NodeId};
use tokio::sync::{mpsc, oneshot, watch};

mod ranges;

/// One request on its way to the engine task. The runtime assigns the [`synod_core::RequestId`].
#[derive(Debug)]
pub struct Submission {
    pub op: Op,
    pub consistency: Consistency,
    pub reply: oneshot::Sender<Result<Response, EngineError>>,
}

/// Request limits enforced at the API edge. Units in the names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiLimits {
    /// Largest key accepted.
    pub key_bytes_max: usize,
    /// Largest value accepted.
    pub value_bytes_max: usize,
    /// Largest whole request (etcd's --max-request-bytes, default 1.5 MiB).
    pub request_bytes_max: usize,
    /// Most operations in one etcd Txn (etcd's --max-txn-ops, default 128).
    pub txn_ops_max: usize,
    /// How long an API waits for the engine before answering "unavailable".
    pub request_timeout_ms: u64,
    /// How often a caught-up watcher that asked for progress notifications gets one (etcd's
    /// `--experimental-watch-progress-notify-interval`, default 10 minutes).
    pub watch_progress_notify_ms: u64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            key_bytes_max: 4 * 1024,
            value_bytes_max: 1536 * 1024,
            request_bytes_max: 1536 * 1024 + 4 * 1024,
            txn_ops_max: 128,
            request_timeout_ms: 5_000,
            watch_progress_notify_ms: 600_000,
        }
    }
}

/// A cluster member as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub name: String,
    /// host:port of the peer (node-to-node) listener.
    pub peer_addr: String,
    /// host:port of the HTTP/JSON API.
    pub http_addr: String,
    /// host:port of the etcd v3 gRPC API.
    pub grpc_addr: String,
    /// A learner receives the log but does not vote (etcd's `isLearner`).
    #[serde(default)]
    pub learner: bool,
}

impl MemberInfo {
    pub fn of(m: &synod_core::membership::Member) -> Self {
        MemberInfo {
            id: m.id,
            name: m.name.clone(),
            peer_addr: m.peer_addr.clone(),
            http_addr: m.http_addr.clone(),
            grpc_addr: m.grpc_addr.clone(),
            learner: m.learner,
        }
    }
}

/// Static facts about this node and its cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Derived from the cluster name; reported in etcd response headers.
    pub cluster_id: u64,
    pub cluster_name: String,
    pub member_id: NodeId,
    /// The members this node started with (the cluster file's list). What clients are told is
    /// [`NodeHandle::members`]: the configuration the engine applied, once it has one.
    pub members: Vec<MemberInfo>,
    /// "omnipaxos", "vr", "caspaxos", "epaxos", …
    pub engine: String,
    pub capabilities: Capabilities,
    pub limits: ApiLimits,
    pub version: String,
    /// Clients reach this member over TLS: its client URLs are advertised as `https://`.
    /// Taken as true of every member (members are expected to share one TLS setting).
    #[serde(default)]
    pub client_tls: bool,
    /// Members talk over TLS: peer URLs are advertised as `https://`.
    #[serde(default)]
    pub peer_tls: bool,
}

/// Live state, published by the engine task after every batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeStatus {
    pub engine: EngineStatus,
    /// Bytes of durable state on disk (WAL + snapshots); 0 when unknown.
    pub db_size_bytes: u64,
    /// Peers with a live, handshaken connection.
    pub connected_peers: Vec<NodeId>,
}

impl NodeStatus {
    /// etcd's dbSizeInUse: the part of [`Self::db_size_bytes`] that live data and retained
    /// history take — what a defragment (checkpoint) would leave. The engine's estimate,
    /// never above the size on disk; the size on disk itself when the engine keeps no
    /// estimate (CASPaxos).
    pub fn db_size_in_use_bytes(&self) -> u64 {
        self.engine
            .bytes_in_use
            .map_or(self.db_size_bytes, |b| b.min(self.db_size_bytes))
    }
}

/// Why an API request failed. Each maps to one HTTP status and one gRPC code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// The engine refused or could not finish (see [`EngineError`] for which may have applied).
    Engine(EngineError),
    /// No quorum / no leader / engine stopped, within the request timeout. 503 / UNAVAILABLE.
    /// The request may have been applied if it was a write.
    Unavailable(String),
    /// Key, value or request over a limit. 413 / INVALID_ARGUMENT (etcd says "request is too large").
    TooLarge {
        what: &'static str,
        bytes: usize,
        max: usize,
    },
    /// Malformed request (empty key, bad range…). 400 / INVALID_ARGUMENT.
    Invalid(String),
    /// This member's NOSPACE alarm is raised (its disk is short of space): a write that would
    /// grow the store was refused before reaching the engine, so it was not applied.
    /// 507 / RESOURCE_EXHAUSTED with etcd's "database space exceeded".
    NoSpace,
    /// This member knows no leader or cannot reach it; refused before reaching the engine, so
    /// definitely not applied. 503 `no_leader` / UNAVAILABLE "etcdserver: no leader".
    NoLeader,
    /// This member's CORRUPT alarm is raised (its state disagrees with its peers'): nothing
    /// is served from it. 503 / DATA_LOSS with etcd's "etcdserver: corrupt cluster".
    Corrupt,
}

/// etcd's message for [`ApiError::NoLeader`]; etcd clients match it exactly.
pub const NO_LEADER: &str = "etcdserver: no leader";

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Engine(e) => write!(f, "{e}"),
            ApiError::Unavailable(s) => write!(f, "unavailable: {s}"),
            ApiError::TooLarge { what, bytes, max } => {
                write!(f, "{what} too large: {bytes} bytes, at most {max}")
            }
            ApiError::Invalid(s) => write!(f, "invalid request: {s}"),
            ApiError::NoSpace => f.write_str(
                "no space: this member's disk is short of space (NOSPACE alarm); writes are \
                 refused until space is freed, reads and deletes still work",
            ),
            ApiError::NoLeader => f.write_str(NO_LEADER),
            ApiError::Corrupt => f.write_str(crate::backup::ERR_CORRUPT),
        }
    }
}

impl std::error::Error for ApiError {}

/// Cheap to clone; one per API server.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    submit: mpsc::Sender<Submission>,
    info: NodeInfo,
    status: watch::Receiver<NodeStatus>,
    metrics: Arc<Metrics>,
    alarms: Arc<Alarms>,
    /// Where this member's applied revisions reach watchers; `None` on a node without one.
    watch: Option<Arc<WatchHubs>>,
    /// Backups, hashes and the CORRUPT alarm (`backup.rs`); `None` on a node without them.
    maintenance: Option<Arc<Maintenance>>,
    /// Where leader transfers go (the engine thread); `None` on a node without one.
    transfer: Option<mpsc::Sender<crate::transfer::TransferRequest>>,
    /// Who may do what (`auth.rs`): the applied auth state and this member's tokens.
    auth: Arc<AuthGate>,
    /// Questions to peers over their peer ports; `None` on a node without a transport.
    peers: Option<crate::transport::PeerAsker>,
}

impl NodeHandle {
    pub fn new(
        submit: mpsc::Sender<Submission>,
        info: NodeInfo,
        status: watch::Receiver<NodeStatus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let alarms = Arc::new(Alarms::new(metrics.clone()));
        Self::with_alarms(submit, info, status, metrics, alarms)
    }

    /// Like [`NodeHandle::new`], sharing the alarms the node raises.
    pub fn with_alarms(
        submit: mpsc::Sender<Submission>,
        info: NodeInfo,
        status: watch::Receiver<NodeStatus>,
        metrics: Arc<Metrics>,
        alarms: Arc<Alarms>,
    ) -> Self {
        NodeHandle {
            inner: Arc::new(Inner {
                submit,
                info,
                status,
                metrics,
                alarms,
                watch: None,
                maintenance: None,
                transfer: None,
                auth: Arc::default(),
                peers: None,
            }),
        }
    }

    /// A copy of this handle with one part of it changed (the builders below).
    fn with(&self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = (*self.inner).clone();
        change(&mut inner);
        NodeHandle {
            inner: Arc::new(inner),
        }
    }

    /// This handle with watches served from `hub`.
    pub fn with_watch_hub(self, hub: Arc<WatchHub>) -> Self {
        self.with_watch_hubs(Arc::new(WatchHubs::single(hub)))
    }

    /// The member's revision streams (one per group when partitioned).
    pub fn with_watch_hubs(self, hubs: Arc<WatchHubs>) -> Self {
        self.with(|i| i.watch = Some(hubs))
    }

    /// This handle with backups and hashes answered through `m`.
    pub fn with_maintenance(self, m: Arc<Maintenance>) -> Self {
        self.with(|i| i.maintenance = Some(m))
    }

    /// This handle with leader transfers sent to the engine thread over `tx`.
    pub fn with_leader_transfer(self, tx: mpsc::Sender<crate::transfer::TransferRequest>) -> Self {
        self.with(|i| i.transfer = Some(tx))
    }

    /// This handle asking peers questions with `asker` (the corruption check).
    pub fn with_peer_asker(self, asker: crate::transport::PeerAsker) -> Self {
        self.with(|i| i.peers = Some(asker))
    }

    /// Asks member `peer` (at its peer address `addr`) a question over the peer port.
    pub async fn ask_peer(
        &self,
        peer: NodeId,
        addr: &str,
        question: crate::transport::PeerQuestion,
    ) -> Result<crate::transport::PeerAnswer, String> {
        match &self.inner.peers {
            Some(asker) => asker.ask(peer, addr, question).await,
            None => Err("this node has no peer transport".into()),
        }
    }

    /// This handle with auth decided by `gate` (the one the engine thread keeps up to date).
    pub fn with_auth(self, gate: Arc<AuthGate>) -> Self {
        self.with(|i| i.auth = gate)
    }

    /// Authentication and permission checks (see [`crate::auth`]).
    pub fn auth(&self) -> &Arc<AuthGate> {
        &self.inner.auth
    }

    /// Backups, hashes and the CORRUPT alarm, if this node has them.
    pub fn maintenance(&self) -> Option<&Arc<Maintenance>> {
        self.inner.maintenance.as_ref()
    }

    /// Asks this member, the leader, to hand leadership to voter `to` (`None`: the most
    /// up-to-date other voter), and waits until it leads (etcd's MoveLeader); returns who
    /// leads. See [`crate::transfer`].
    pub async fn move_leader(&self, to: Option<NodeId>) -> Result<NodeId, crate::MoveLeaderError> {
        use crate::MoveLeaderError::Unavailable;
        let Some(tx) = &self.inner.transfer else {
            return Err(Unavailable("this node cannot transfer leadership".into()));
        };
        let (reply, rx) = oneshot::channel();
        let req = crate::transfer::TransferRequest { to, reply };
        tx.try_send(req).map_err(|_| {
            Unavailable("too many leader transfers waiting, or node stopped".into())
        })?;
        rx.await
            .unwrap_or_else(|_| Err(Unavailable("node stopped before replying".into())))
    }

    /// The revision streams watches are served from, or why this node cannot serve them
    /// (an engine with no revisions, CASPaxos or EPaxos, has no history to watch).
    pub fn watch_hubs(&self) -> Result<&Arc<WatchHubs>, ApiError> {
        match &self.inner.watch {
            Some(hubs) if self.inner.info.capabilities.watch => Ok(hubs),
            _ => Err(ApiError::Engine(EngineError::Unsupported {
                engine: self.inner.info.engine.clone(),
                what: "watch".into(),
            })),
        }
    }

    /// This member's alarms (NOSPACE).
    pub fn alarms(&self) -> &Arc<Alarms> {
        &self.inner.alarms
    }

    pub fn info(&self) -> &NodeInfo {
        &self.inner.info
    }

    pub fn status(&self) -> NodeStatus {
        self.inner.status.borrow().clone()
    }

    /// The current term and revision, without copying the whole status (every etcd reply
    /// header needs them).
    pub fn term_and_revision(&self) -> (u64, u64) {
        let s = self.inner.status.borrow();
        (s.engine.term, s.engine.revision)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The members as of the configuration this node applied last, and that configuration's
    /// version; the start-up list (version `None`) until the engine has one (engines without
    /// replicated membership, a joining member that has not received its state yet).
    pub fn members(&self) -> (Vec<MemberInfo>, Option<u64>) {
        let s = self.inner.status.borrow();
        let c = &s.engine.configuration;
        if c.members.is_empty() {
            return (self.inner.info.members.clone(), None);
        }
        (
            c.members.iter().map(MemberInfo::of).collect(),
            Some(c.version),
        )
    }

    /// Submits a membership change like a write and returns the configuration after it.
    pub async fn change_members(
        &self,
        change: synod_core::membership::MemberChange,
    ) -> Result<synod_core::membership::Configuration, ApiError> {
        let r = self
            .execute(Op::Membership(change), Consistency::Linearizable)
            .await?;
        match r.body {
            synod_core::kv::ResponseBody::Membership(c) => Ok(c),
            other => Err(ApiError::Unavailable(format!(
                "the engine answered a membership change with {other:?}"
            ))),
        }
    }

    /// Validates, checks the caller's permission for (see [`crate::auth`]), submits and awaits
    /// one request.
    pub async fn execute(&self, op: Op, consistency: Consistency) -> Result<Response, ApiError> {
        if !self.inner.auth.enabled() {
            return self.submit(op, consistency).await;
        }
        self.validate(&op)?;
        self.inner.auth.check_op(&op)?;
        if let Op::LeaseRevoke { id } = op {
            // Revoking deletes the lease's keys: etcd wants write on each of them.
            let keys = self.lease_keys(id).await?;
            for k in &keys {
                let need = synod_core::auth::Need::Write(synod_core::kv::Span::key(k));
                self.inner.auth.check_needs(&[need])?;
            }
        }
        let keys_listed = matches!(op, Op::LeaseTimeToLive { keys: true, .. });
        let reply = self.submit(op, consistency).await?;
        if keys_listed && let synod_core::kv::ResponseBody::LeaseTimeToLive(ttl) = &reply.body {
            for k in &ttl.keys {
                self.inner.auth.require_read(k, &[])?;
            }
        }
        Ok(reply)
    }

    /// The keys attached to lease `id`, as this member has applied them (unknown lease: none).
    async fn lease_keys(&self, id: synod_core::kv::LeaseId) -> Result<Vec<Vec<u8>>, ApiError> {
        let op = Op::LeaseTimeToLive { id, keys: true };
        let reply = self.submit(op, Consistency::Sequential).await?;
        Ok(match reply.body {
            synod_core::kv::ResponseBody::LeaseTimeToLive(ttl) => ttl.keys,
            _ => Vec::new(),
        })
    }

    fn partitioned(&self) -> bool {
        self.inner.info.engine.ends_with("-partitioned")
    }

    /// Validates, submits and awaits one request, with no permission check. In partitioned
    /// mode a request that reached a group after a split moved its keys away was definitely
    /// not applied there (`WrongGroup`): it is routed again, by then by the new layout — for
    /// as long as the request timeout, since the group that takes the keys over may need an
    /// election first (a merge whose absorb waits for the lower group's new leader).
    async fn submit(&self, op: Op, consistency: Consistency) -> Result<Response, ApiError> {
        if !self.partitioned() {
            return self.submit_once(op, consistency).await;
        }
        let timeout = Duration::from_millis(self.inner.info.limits.request_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempt = 0u32;
        loop {
            match self.submit_once(op.clone(), consistency).await {
                Err(ApiError::Engine(EngineError::WrongGroup { .. }))
                    if tokio::time::Instant::now() < deadline =>
                {
                    attempt += 1;
                    // The new group starts within a few batches on this member; 4 ms, then
                    // doubling to at most 128 ms between tries.
                    let pause = Duration::from_millis(2 << attempt.min(6));
                    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + pause))
                        .await;
                }
                r => return r,
            }
        }
    }

    async fn submit_once(&self, op: Op, consistency: Consistency) -> Result<Response, ApiError> {
        self.validate(&op)?;
        // A member whose state diverged serves nothing from it; membership changes stay
        // possible, since removing it is the way out.
        if self.corrupt() && !matches!(op, Op::Membership(_)) {
            return Err(ApiError::Corrupt);
        }
        if grows_store(&op) && self.inner.alarms.nospace() {
            return Err(ApiError::NoSpace);
        }
        if self.needs_leader(&op, consistency) && !self.leader_reachable() {
            return Err(ApiError::NoLeader);
        }
        let (tx, rx) = oneshot::channel();
        let timeout = Duration::from_millis(self.inner.info.limits.request_timeout_ms);
        let submission = Submission {
            op,
            consistency,
            reply: tx,
        };
        // Room in the queue (the usual case): no timer needed for the hand-off.
        let submission = match self.inner.submit.try_send(submission) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(s)) => Some(s),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(ApiError::Unavailable("node is shutting down".into()));
            }
        };
        // A full queue means the engine task is overloaded: wait, but not beyond the timeout.
        let queued = match submission {
            None => Ok(Ok(())),
            Some(s) => tokio::time::timeout(timeout, self.inner.submit.send(s)).await,
        };
        match queued {
            Err(_) => {
                return Err(ApiError::Unavailable(
                    "node overloaded: submit queue full".into(),
                ));
            }
            Ok(Err(_)) => return Err(ApiError::Unavailable("node is shutting down".into())),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(ApiError::Unavailable(format!(
                "no reply within {} ms (no quorum or no leader?); a write may still be applied",
                timeout.as_millis()
            ))),
            Ok(Err(_)) => Err(ApiError::Unavailable("node stopped before replying".into())),
            Ok(Ok(Err(EngineError::Timeout))) => Err(ApiError::Unavailable(
                "the cluster did not decide in time (no quorum?); a write may still be applied"
                    .into(),
            )),
            Ok(Ok(r)) => r.map_err(ApiError::Engine),
        }
    }

    /// Whether serving `op` needs a leader. Engines with a store-wide revision (OmniPaxos, VR)
    /// order every write through one; CASPaxos has no leader. Sequential reads are local.
    fn needs_leader(&self, op: &Op, consistency: Consistency) -> bool {
        self.inner.info.capabilities.revisions
            && !(op.is_read() && consistency == Consistency::Sequential)
    }

    /// Whether this member can serve writes and linearizable reads now (`/healthz`): it has
    /// live connections to a majority of the voters (itself included, if it votes) and, on
    /// engines with a leader, knows one and reaches it. `Err` says what is missing.
    pub fn health(&self) -> Result<(), String> {
        let status = self.inner.status.borrow();
        let me = self.inner.info.member_id;
        let config = &status.engine.configuration;
        let voters: Vec<NodeId> = if config.members.is_empty() {
            self.inner.info.members.iter().map(|m| m.id).collect()
        } else {
            config.voters()
        };
        let reached = voters
            .iter()
            .filter(|v| **v == me || status.connected_peers.contains(v))
            .count();
        let majority = voters.len() / 2 + 1;
        if reached < majority {
            return Err(format!(
                "cannot reach a quorum: {reached} of {} voters reachable, {majority} needed",
                voters.len()
            ));
        }
        if let Some(f) = status.engine.failed_groups.first() {
            return Err(format!(
                "group {} did not start on this member: {}",
                synod_partition::layout::group_name(f.group),
                f.error
            ));
        }
        drop(status);
        if self.inner.info.capabilities.revisions && !self.leader_reachable() {
            return Err(NO_LEADER.to_string());
        }
        Ok(())
    }

    /// This member is the leader, or knows the leader and has a live connection to it.
    fn leader_reachable(&self) -> bool {
        let status = self.inner.status.borrow();
        match status.engine.leader {
            None => false,
            Some(l) if l == self.inner.info.member_id => true,
            Some(l) => status.connected_peers.contains(&l),
        }
    }

    /// The edge checks every API shares: sizes, empty keys, engine capabilities.
    pub fn validate(&self, op: &Op) -> Result<(), ApiError> {
        validate_op(
            op,
            &self.inner.info.limits,
            &self.inner.info.capabilities,
            &self.inner.info.engine,
        )
    }
}

/// etcd's text (after its "etcdserver: " prefix) for a put with both a lease and
/// `ignore_lease`.
pub const LEASE_PROVIDED: &str = "lease is provided";

/// Whether `op` may store new data, which a member short of disk space refuses (etcd's
/// NOSPACE rule: puts, and transactions containing one; reads and deletes stay allowed, since
/// deleting is how an operator makes room).
pub fn grows_store(op: &Op) -> bool {
    match op {
        Op::Range(_)
        | Op::DeleteRange(_)
        | Op::Compact(_)
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
        // etcd's capped applier refuses grants too: a lease is state that only grows.
        Op::Put(_) | Op::LeaseGrant(_) => true,
        Op::Cas(c) => matches!(c.then, synod_core::kv::CasAction::Put(_)),
        Op::Txn(t) => t
            .success
            .iter()
            .chain(&t.failure)
            .any(|o| matches!(o, TxnOp::Put(_))),
    }
}

/// See [`NodeHandle::validate`]; separate so it can be unit-tested without a node.
pub fn validate_op(
    op: &Op,
    limits: &ApiLimits,
    caps: &Capabilities,
    engine: &str,
) -> Result<(), ApiError> {
    let size = op.size_bytes();
    if size > limits.request_bytes_max {
        return Err(ApiError::TooLarge {
            what: "request",
            bytes: size,
            max: limits.request_bytes_max,
        });
    }
    let key = |k: &[u8]| -> Result<(), ApiError> {
        if k.is_empty() {
            return Err(ApiError::Invalid("key is empty".into()));
        }
        if k.len() > limits.key_bytes_max {
            return Err(ApiError::TooLarge {
                what: "key",
                bytes: k.len(),
                max: limits.key_bytes_max,
            });
        }
        Ok(())
    };
    let value = |v: &[u8]| -> Result<(), ApiError> {
        if v.len() > limits.value_bytes_max {
            return Err(ApiError::TooLarge {
                what: "value",
                bytes: v.len(),
                max: limits.value_bytes_max,
            });
        }
        Ok(())
    };
    let unsupported = |what: &str| {
        ApiError::Engine(EngineError::Unsupported {
            engine: engine.to_string(),
            what: what.to_string(),
        })
    };
    let range = |k: &[u8], end: &[u8]| -> Result<(), ApiError> {
        key(k)?;
        if !end.is_empty() && !caps.ranges {
            return Err(unsupported("range and prefix requests"));
        }
        Ok(())
    };
    // Partitioned, revisions are per group, kept together by the groups' closes: a read at a
    // revision over several groups reads every group at it, a revision filter or sort means
    // something within one group (the engine refuses it across groups), and a compaction
    // compacts every group that reached its revision.
    let per_group = caps.watch && !caps.revisions;
    let revisions_meant = caps.revisions || per_group;
    if op.needs_revisions() && !revisions_meant {
        return Err(unsupported(
            "revision history (reads at a revision, revision filters, compaction)",
        ));
    }
    if op.uses_leases() && !caps.leases {
        return Err(unsupported("leases"));
    }
    let put = |p: &synod_core::kv::PutRequest| -> Result<(), ApiError> {
        if p.ignore_lease && p.lease != 0 {
            return Err(ApiError::Invalid(LEASE_PROVIDED.into()));
        }
        key(&p.key).and_then(|_| value(&p.value))
    };
    match op {
        Op::Compact(_)
        | Op::LeaseRevoke { .. }
        | Op::LeaseKeepAlive { .. }
        | Op::LeaseTimeToLive { .. }
        | Op::LeaseLeases
        | Op::Membership(_) => Ok(()),
        // The partitioned engine's own, never a client's.
        Op::MembershipAt { .. } => Err(unsupported("guarded membership changes")),
        // The auth state lives in the replica layer's applied state, which every engine with
        // transactions (the log engines) has and CASPaxos's registers do not.
        Op::Auth(_) if !caps.transactions => Err(unsupported("authentication")),
        Op::Auth(_) => Ok(()),
        // Refused by the engine unless partitioned (after the permission check, which wants
        // root whatever the engine).
        Op::Split(sp) => key(&sp.at),
        Op::Merge(m) => key(&m.at),
        Op::Move(m) if m.from == m.to => Err(ApiError::Invalid(format!(
            "a move from member {} to itself",
            m.from
        ))),
        Op::Move(m) => key(&m.at),
        Op::Absorb(_) | Op::CloseRevisions { .. } => Err(ApiError::Invalid(
            "absorbs and revision closes are made by the partitioned engine, never by clients"
                .into(),
        )),
        Op::LeaseGrant(g) if g.ttl > synod_core::kv::LEASE_TTL_MAX_SECONDS => {
            Err(ApiError::Engine(EngineError::LeaseTtlTooLarge))
        }
        Op::LeaseGrant(_) => Ok(()),
        Op::LeaseExpire { .. } => Err(ApiError::Invalid(
            "lease expiry is proposed by the lessor, not by clients".into(),
        )),
        Op::Range(r) => range(&r.key, &r.range_end),
        Op::Put(p) => put(p),
        Op::DeleteRange(d) => range(&d.key, &d.range_end),
        Op::Cas(c) => {
            key(&c.key)?;
            if let synod_core::kv::CasAction::Put(v) = &c.then {
                value(v)?;
            }
            Ok(())
        }
        Op::Txn(t) => {
            if !caps.transactions {
                return Err(unsupported("multi-key transactions"));
            }
            // Without a store-wide revision each member numbers its own writes (EPaxos applies
            // non-interfering commands in different orders), so a compare on a create or mod
            // revision would take different branches at different members and split their
            // state. A compare against 0 only asks whether the key exists: every member agrees.
            if !revisions_meant && t.compare.iter().any(compares_a_local_revision) {
                return Err(unsupported(
                    "compares on create or mod revision (other than against 0)",
                ));
            }
            let n = t.compare.len().max(t.success.len()).max(t.failure.len());
            if n > limits.txn_ops_max {
                return Err(ApiError::Invalid(format!(
                    "too many operations in txn request: {n}, at most {}",
                    limits.txn_ops_max
                )));
            }
            for c in &t.compare {
                range(&c.key, &c.range_end)?;
            }
            for o in t.success.iter().chain(&t.failure) {
                match o {
                    TxnOp::Range(r) => range(&r.key, &r.range_end)?,
                    TxnOp::Put(p) => put(p)?,
                    TxnOp::DeleteRange(d) => range(&d.key, &d.range_end)?,
                }
            }
            Ok(())
        }
    }
}

/// Whether `c` compares a key's create or mod revision with something other than 0 (0 means
/// "absent", which does not depend on how a member numbered its writes).
fn compares_a_local_revision(c: &synod_core::kv::Compare) -> bool {
    use synod_core::kv::CompareTarget;
    matches!(
        c.target,
        CompareTarget::CreateRevision(r) | CompareTarget::ModRevision(r) if r != 0
    )
}

/// A single-node stand-in for API tests: a task that applies every submission to a local
/// [`KvStore`] in arrival order (trivially linearizable). No engine, no disk, no peers.
pub fn local_test_node(engine: &str, capabilities: Capabilities) -> NodeHandle {
    let (tx, mut rx) = mpsc::channel::<Submission>(1024);
    let me = synod_core::membership::Member {
        id: 1,
        name: "n1".into(),
        peer_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: "127.0.0.1:0".into(),
        learner: false,
    };
    let info = NodeInfo {
        cluster_id: 0x5eed,
        cluster_name: "test".into(),
        member_id: 1,
        members: vec![MemberInfo::of(&me)],
        engine: engine.to_string(),
        capabilities,
        limits: ApiLimits::default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        client_tls: false,
        peer_tls: false,
    };
    // It is its own leader from the start, as a one-member cluster is once elected.
    let mut status = NodeStatus::default();
    status.engine.leader = Some(1);
    status.engine.role = "leader".into();
    let (status_tx, status_rx) = watch::channel(status);
    let (history_tx, mut history_rx) = mpsc::channel::<HistoryQuery>(64);
    let hub = Arc::new(WatchHub::new(0, history_tx));
    let publish_to = hub.clone();
    let mut configuration = synod_core::membership::Configuration::bootstrap(vec![me]);
    let gate = Arc::new(AuthGate::default());
    let gate_for_engine = gate.clone();
    let mut auth = Arc::new(synod_core::auth::AuthState::default());
    let (maintenance_tx, mut maintenance_rx) =
        mpsc::channel::<crate::backup::MaintenanceQuery>(crate::backup::MAINTENANCE_QUEUE_MAX);
    tokio::spawn(async move {
        let mut store = KvStore::new(KvLimits::default());
        let _ = store.take_fresh_events(); // Collect events from the first write on.
        let mut index = 0;
        loop {
            let s = tokio::select! {
                q = history_rx.recv() => {
                    if let Some(q) = q {
                        let _ = q.reply.send(store.history_from(q.start, q.max_revisions));
                    }
                    continue;
                }
                Some(q) = maintenance_rx.recv() => {
                    q.answer_from_store(&store);
                    continue;
                }
                s = rx.recv() => match s {
                    Some(s) => s,
                    None => break,
                },
            };
            index += 1;
            let r = match &s.op {
                // Membership changes as the replica layer applies them (learners count as
                // in sync here).
                Op::Membership(change) => configuration
                    .apply(change)
                    .map(|c| {
                        configuration = c.clone();
                        Response {
                            revision: store.revision(),
                            body: synod_core::kv::ResponseBody::Membership(c),
                        }
                    })
                    .map_err(EngineError::Membership),
                // Auth changes as the replica layer applies them.
                Op::Auth(change) => {
                    let mut next = (*auth).clone();
                    next.apply(change).map_err(EngineError::Auth).map(|()| {
                        let auth_revision = next.revision;
                        auth = Arc::new(next);
                        gate_for_engine.observe(&auth);
                        Response {
                            revision: store.revision(),
                            body: synod_core::kv::ResponseBody::Auth { auth_revision },
                        }
                    })
                }
                // One group, as an unpartitioned replica refuses splits.
                Op::Split(_)
                | Op::Merge(_)
                | Op::Absorb(_)
                | Op::Move(_)
                | Op::CloseRevisions { .. } => Err(EngineError::Unsupported {
                    engine: "local".into(),
                    what: "range splits, merges and moves (only a partitioned cluster has \
                           ranges)"
                        .into(),
                }),
                op => store.apply(index, synod_core::RequestId::default(), 0, op),
            };
            publish_to.set_compacted(store.compact_revision());
            publish_to.publish(store.take_fresh_events(), store.revision());
            let _ = s.reply.send(r);
            status_tx.send_modify(|st| {
                st.engine.leader = Some(1);
                st.engine.applied_index = index;
                st.engine.revision = store.revision();
                st.engine.compact_revision = store.compact_revision();
                st.engine.keys = store.len() as u64;
                st.engine.role = "leader".into();
                st.engine.configuration = configuration.clone();
                st.engine.auth = auth.clone();
            });
        }
    });
    NodeHandle::new(tx, info, status_rx, Arc::new(Metrics::new()))
        .with_watch_hub(hub)
        .with_maintenance(Arc::new(crate::backup::Maintenance::new(maintenance_tx)))
        .with_auth(gate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use synod_core::kv::{PutRequest, RangeRequest};

    /// Far below the 5 s request timeout a queued request would wait.
    const PROMPT: Duration = Duration::from_millis(500);

    /// A handle of member 1 of {1, 2} whose status the test sets, and an engine stand-in that
    /// answers every submission from a local store.
    fn member_with(leader: Option<NodeId>, connected: Vec<NodeId>) -> NodeHandle {
        let node = local_test_node(
            "omnipaxos",
            Capabilities {
                ranges: true,
                transactions: true,
                revisions: true,
                watch: true,
                leases: true,
            },
        );
        let mut status = NodeStatus::default();
        status.engine.leader = leader;
        status.connected_peers = connected;
        let (_tx, rx) = watch::channel(status);
        let inner = &node.inner;
        NodeHandle::new(
            inner.submit.clone(),
            inner.info.clone(),
            rx,
            inner.metrics.clone(),
        )
    }

    fn put() -> Op {
        Op::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            prev_kv: false,
            ..Default::default()
        })
    }

    async fn timed(
        h: &NodeHandle,
        op: Op,
        c: Consistency,
    ) -> (Result<Response, ApiError>, Duration) {
        let start = Instant::now();
        let r = h.execute(op, c).await;
        (r, start.elapsed())
    }

    #[test]
    fn revision_compares_are_refused_without_store_wide_revisions() {
        use synod_core::kv::{Compare, CompareResult, CompareTarget, TxnRequest};
        let txn = |target| {
            Op::Txn(TxnRequest {
                compare: vec![Compare {
                    key: b"k".to_vec(),
                    range_end: Vec::new(),
                    target,
                    result: CompareResult::Equal,
                }],
                success: vec![TxnOp::Put(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })],
                failure: Vec::new(),
            })
        };
        let epaxos = Capabilities {
            ranges: true,
            transactions: true,
            revisions: false,
            watch: false,
            leases: false,
        };
        let log = Capabilities {
            revisions: true,
            watch: true,
            leases: true,
            ..epaxos
        };
        let limits = ApiLimits::default();
        for target in [
            CompareTarget::ModRevision(7),
            CompareTarget::CreateRevision(3),
        ] {
            let op = txn(target);
            match validate_op(&op, &limits, &epaxos, "epaxos") {
                Err(ApiError::Engine(EngineError::Unsupported { engine, what })) => {
                    assert_eq!(engine, "epaxos");
                    assert!(what.contains("revision"), "{what}");
                }
                other => panic!("{op:?} on epaxos: {other:?}"),
            }
            assert_eq!(validate_op(&op, &limits, &log, "omnipaxos"), Ok(()));
        }
        // Absence checks and value/version compares mean the same at every member.
        for target in [
            CompareTarget::CreateRevision(0),
            CompareTarget::ModRevision(0),
            CompareTarget::Value(b"v".to_vec()),
            CompareTarget::Version(2),
        ] {
            assert_eq!(
                validate_op(&txn(target), &limits, &epaxos, "epaxos"),
                Ok(())
            );
        }
    }

    #[tokio::test]
    async fn without_a_known_leader_a_write_fails_fast_with_no_leader() {
        let h = member_with(None, vec![2]);
        let (r, took) = timed(&h, put(), Consistency::Linearizable).await;
        assert_eq!(r, Err(ApiError::NoLeader));
        assert!(took < PROMPT, "took {took:?}");
        let get = Op::Range(RangeRequest::key(b"k".to_vec()));
        let (r, _) = timed(&h, get, Consistency::Linearizable).await;
        assert_eq!(
            r,
            Err(ApiError::NoLeader),
            "a linearizable read needs the leader too"
        );
    }

    #[tokio::test]
    async fn an_unreachable_leader_is_as_good_as_none() {
        let h = member_with(Some(2), vec![]);
        let (r, took) = timed(&h, put(), Consistency::Linearizable).await;
        assert_eq!(r, Err(ApiError::NoLeader));
        assert!(took < PROMPT, "took {took:?}");
    }

    #[tokio::test]
    async fn a_reachable_leader_or_a_local_read_still_reaches_the_engine() {
        let h = member_with(Some(2), vec![2]);
        assert!(h.execute(put(), Consistency::Linearizable).await.is_ok());
        let alone = member_with(None, vec![]);
        let get = Op::Range(RangeRequest::key(b"k".to_vec()));
        assert!(alone.execute(get, Consistency::Sequential).await.is_ok());
    }
}
