//! The contract between an **ordering protocol** (OmniPaxos, Viewstamped Replication, …) and the
//! replica layer (`synod-replica`) that turns it into an [`Engine`](crate::Engine).
//!
//! A protocol answers one question — in what order are commands decided — and knows nothing
//! about keys: it stores [`Command`]s as opaque payloads in its log. Everything else every log
//! engine needs is the replica layer's, written once: the KV state machine and applying the
//! decided prefix in order, client sessions, the pending table with forwarding and expiry,
//! linearizable reads by read index, checkpoints and chunked snapshot transfer.
//!
//! ## What a protocol provides
//! * a replicated log of [`Command`]s with absolute positions (0-based; position `i` is applied
//!   as KV index `i + 1`), of which a prefix `[0, decided_idx)` is decided and never changes,
//!   and a prefix `[0, compacted_idx)` is no longer held (summarised by a checkpoint);
//! * [`LogProtocol::propose`] at the leader (buffered; appended in [`LogProtocol::flush`]);
//! * who leads ([`LogProtocol::leader`], [`LogProtocol::is_leader`]);
//! * a leadership confirmation for reads ([`LogProtocol::start_read_round`], answered by a
//!   [`ProtocolEvent::ReadConfirmed`] once a quorum confirmed this leader);
//! * leader transfer ([`LogProtocol::transfer_leadership`]): the leader hands leadership to a
//!   chosen voter (OmniPaxos: a ballot hand-off; VR: a view change to the target's view);
//!   leaderless protocols keep the default, which refuses;
//! * compaction ([`LogProtocol::compact`]) and snapshot install
//!   ([`LogProtocol::install_snapshot`]); it asks for a snapshot to be pushed to a peer with
//!   [`ProtocolEvent::SendSnapshot`] and learns that it arrived with
//!   [`LogProtocol::snapshot_delivered`].
//!
//! ## Persist before send
//! A protocol pushes every record *before* the messages that depend on it into one
//! [`ProtocolOutput`]; the replica layer moves them, in order, into the engine's
//! [`Ready`](crate::Ready), whose `persist` writes records before releasing messages. `early`
//! messages follow the rule in [`crate::engine`]'s docs.

use crate::engine::{Capabilities, EngineConfig};
use crate::ids::{NodeId, RequestId};
use crate::kv::Op;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// Where a command came from: the replica whose pending table waits for it, in which
/// incarnation (bumped on every restart, so sequence numbers are never reused), and its
/// sequence number there. The replica layer applies a command at most once per origin, which
/// is what makes re-forwarding safe even for requests without a client session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    pub node: NodeId,
    pub incarnation: u64,
    pub seq: u64,
}

/// One log entry: a client write, opaque to the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: RequestId,
    pub first_unacked: u64,
    pub op: Op,
    pub origin: Origin,
}

/// Something the protocol tells the replica layer, in order with its messages and records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolEvent {
    /// Read round `round` (from [`LogProtocol::start_read_round`]) is confirmed: a quorum still
    /// follows this leader, so its read index is safe.
    ReadConfirmed { round: u64 },
    /// Push this replica's snapshot (its applied state) to `to`, guarded by the protocol's
    /// current [`LogProtocol::snapshot_term`]; `to` needs entries this replica compacted.
    SendSnapshot { to: NodeId },
}

/// Why a leader transfer was not started. Nothing changed in any of these cases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderTransferError {
    /// The protocol has no leader to move (CASPaxos, EPaxos).
    Unsupported { engine: String },
    /// This replica does not lead (it believes `leader` does).
    NotLeader { leader: Option<NodeId> },
    /// The target is not a voter of the current configuration (unknown, or a learner).
    BadTarget { target: NodeId, why: String },
    /// This leader cannot hand off now (still establishing its leadership, repairing, a
    /// membership change under way); retry later.
    NotReady(String),
}

/// etcd's text for a transfer that did not complete in time (`ErrTimeoutLeaderTransfer`).
pub const ERR_LEADER_TRANSFER_TIMEOUT: &str =
    "etcdserver: request timed out, leader transfer took too long";
/// etcd's text for a transfer asked of a member that does not lead (`ErrNotLeader`).
pub const ERR_NOT_LEADER: &str = "etcdserver: not leader";
/// etcd's text for a target that is no voting member (`ErrBadLeaderTransferee`).
pub const ERR_BAD_LEADER_TRANSFEREE: &str = "etcdserver: bad leader transferee";

impl std::fmt::Display for LeaderTransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaderTransferError::Unsupported { engine } => write!(
                f,
                "leader transfer not supported by the {engine} engine: it is leaderless \
                 (every member coordinates its own commands)"
            ),
            LeaderTransferError::NotLeader { leader: Some(l) } => {
                write!(f, "{ERR_NOT_LEADER} (the leader is member {l:#x})")
            }
            LeaderTransferError::NotLeader { leader: None } => f.write_str(ERR_NOT_LEADER),
            LeaderTransferError::BadTarget { target, why } => {
                write!(f, "{ERR_BAD_LEADER_TRANSFEREE}: member {target:#x} {why}")
            }
            LeaderTransferError::NotReady(why) => {
                write!(f, "leader transfer not possible now: {why}")
            }
        }
    }
}

impl std::error::Error for LeaderTransferError {}

/// Outputs of one protocol call. The replica layer drains it after every call.
#[derive(Debug)]
pub struct ProtocolOutput<M, R> {
    /// Messages that may leave before `records` are durable (see [`crate::engine`]).
    pub early: Vec<(NodeId, M)>,
    pub records: Vec<R>,
    pub messages: Vec<(NodeId, M)>,
    pub events: Vec<ProtocolEvent>,
}

impl<M, R> Default for ProtocolOutput<M, R> {
    fn default() -> Self {
        ProtocolOutput {
            early: Vec::new(),
            records: Vec::new(),
            messages: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl<M, R> ProtocolOutput<M, R> {
    pub fn send(&mut self, to: NodeId, m: M) {
        self.messages.push((to, m));
    }

    /// Moves everything in `other` to the end of `self`, keeping each list's order (a protocol
    /// that buffers one call's outputs hands them over with this).
    pub fn append(&mut self, other: &mut Self) {
        self.early.append(&mut other.early);
        self.records.append(&mut other.records);
        self.messages.append(&mut other.messages);
        self.events.append(&mut other.events);
    }
}

/// What a replica does with snapshot chunks from `from` in a term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotAcceptance {
    /// Receive and install it.
    Receive,
    /// This replica's log is final for that term (a leader): tell the sender it is done.
    NotNeeded,
    /// Drop it (stale term, or not from whom we follow).
    Ignore,
}

/// Snapshot transfers under way, as the replica layer sees them (protocols consult it so they
/// do not, say, re-synchronise a follower that a snapshot is bringing in line).
pub trait TransferStatus<T> {
    fn sending_to(&self, to: NodeId, term: T) -> bool;
    fn receiving_from(&self, from: NodeId, term: T) -> bool;
}

/// How long a leader transfer may take before the old leader gives up and leads on: a few
/// election timeouts (catching the target up, one Prepare or view change, and slack for a lost
/// message and its retry at the next heartbeat).
pub fn leader_transfer_ticks(config: &EngineConfig) -> u64 {
    LEADER_TRANSFER_ELECTION_TIMEOUTS * config.election_timeout_ticks
}

/// See [`leader_transfer_ticks`].
pub const LEADER_TRANSFER_ELECTION_TIMEOUTS: u64 = 3;

/// An ordering protocol as a sans-IO deterministic state machine. See the module docs.
pub trait LogProtocol: Sized + Send + 'static {
    type Message: Clone + Debug + Serialize + DeserializeOwned + Send + 'static;
    /// The protocol's own durable records (promises, log changes, view-numbers, …).
    type Record: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + 'static;
    /// The protocol's whole durable state with its log prefix below `compacted_idx` dropped:
    /// embedded in the replica layer's checkpoint record.
    type Checkpoint: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + 'static;
    /// What guards a snapshot transfer (OmniPaxos's promised ballot, VR's view-number): a
    /// transfer from an older term is dropped, so a deposed leader installs nothing.
    /// `Default` is the term of a transfer from a replica without an instance (a member
    /// removed in the newer epoch it sends, a learner, a voter that lost its storage), which
    /// only replicas of older epochs take.
    type Term: Copy + Eq + Ord + Default + Debug + Serialize + DeserializeOwned + Send + 'static;

    /// Short lowercase name: "omnipaxos", "vr", "epaxos".
    const NAME: &'static str;

    /// What the KV service on this protocol can do. A total order of commands (one log
    /// decided in the same order everywhere) supports everything; a protocol whose replicas
    /// apply non-interfering commands in different orders (EPaxos) has no store-wide revision.
    const CAPABILITIES: Capabilities = Capabilities {
        ranges: true,
        transactions: true,
        revisions: true,
        watch: true,
        leases: true,
    };

    /// Linearizable reads are ordered as commands through the protocol (EPaxos: a read
    /// interferes with writes of its keys) instead of by a leader's confirmed read index.
    /// Such a protocol never answers [`LogProtocol::start_read_round`].
    const READS_AS_COMMANDS: bool = false;

    /// No replica leads (EPaxos: every replica leads its own instances): there is no
    /// leadership to transfer, and [`LogProtocol::transfer_leadership`] keeps its default.
    const LEADERLESS: bool = false;

    /// See [`crate::Engine::NODE_SESSIONS`].
    const NODE_SESSIONS: bool = true;

    /// A replica whose storage was lost (no records at all, and not a new cluster) can
    /// rejoin safely: the protocol rebuilds what it forgot from its peers before it votes
    /// (OmniPaxos's repair, VR's recovery). A protocol without that refuses to start.
    const REPAIRS_LOST_STORAGE: bool = true;

    /// Builds a replica from the last checkpoint's protocol state (if any) and the protocol
    /// records written after it, in order. Initial messages (a first heartbeat round, a
    /// recovery request) go to `out`.
    fn recover(
        config: &EngineConfig,
        checkpoint: Option<&Self::Checkpoint>,
        records: &[Self::Record],
        out: &mut ProtocolOutput<Self::Message, Self::Record>,
    ) -> Result<Self, String>;

    /// A message from peer `from` (a member other than this replica).
    fn receive(
        &mut self,
        from: NodeId,
        message: Self::Message,
        transfers: &dyn TransferStatus<Self::Term>,
        out: &mut ProtocolOutput<Self::Message, Self::Record>,
    );

    /// One unit of logical time.
    fn tick(
        &mut self,
        transfers: &dyn TransferStatus<Self::Term>,
        out: &mut ProtocolOutput<Self::Message, Self::Record>,
    );

    /// Called once per `Engine::ready`, first: append buffered proposals and send batches.
    fn flush(&mut self, out: &mut ProtocolOutput<Self::Message, Self::Record>);

    /// Leader only: propose `command` for the next batch. Returns false when it was not taken
    /// (not the leader, or over the protocol's bound); the origin's re-forwarding retries.
    fn propose(&mut self, command: Command) -> bool;

    /// The replica that client traffic should go to: this one while it leads, else the leader
    /// it believes in.
    fn leader(&self) -> Option<NodeId>;

    /// This replica leads (or is establishing leadership) and takes proposals.
    fn is_leader(&self) -> bool;

    /// Leader with a synchronised log only: start confirming leadership for read round
    /// `round`; returns the read index (the log length now). `None` when not able to.
    fn start_read_round(
        &mut self,
        round: u64,
        out: &mut ProtocolOutput<Self::Message, Self::Record>,
    ) -> Option<u64>;

    fn log_len(&self) -> u64;
    fn decided_idx(&self) -> u64;
    fn compacted_idx(&self) -> u64;
    /// The entry at `idx` in `[compacted_idx, log_len)`.
    fn entry(&self, idx: u64) -> &Command;

    /// Drops the decided log prefix below `idx` (applied into the checkpoint being written) and
    /// returns the protocol state to put in it.
    fn compact(&mut self, idx: u64) -> Self::Checkpoint;

    /// Whether [`LogProtocol::compact`] may be called now. False while the protocol state is
    /// not one a checkpoint may hold — an OmniPaxos replica repairing lost storage, a VR
    /// replica recovering. Checkpoints that follow applies never meet that state (nothing is
    /// applied meanwhile); a forced or requested one ([`crate::Engine::checkpoint_full`],
    /// [`crate::Engine::checkpoint_now`]) asks first.
    fn can_checkpoint(&self) -> bool {
        true
    }

    /// Whether a snapshot just installed ([`LogProtocol::install_snapshot`]) left this replica
    /// still repairing lost storage: an OmniPaxos member holds the decided prefix then, but not
    /// the entries it accepted and lost beyond it, and keeps repairing until the leader's
    /// AcceptSync. The replica layer then writes the checkpoint as a repairing one, and
    /// recovery hands [`LogProtocol::repairing_record`] to [`LogProtocol::recover`] before the
    /// records after it — the checkpoint and the mark are one record, so no crash separates
    /// them.
    fn repairing(&self) -> bool {
        false
    }

    /// The record that marks the recovered state as still repairing (see
    /// [`LogProtocol::repairing`]); `None` for protocols that never are after an install.
    fn repairing_record() -> Option<Self::Record> {
        None
    }

    /// The term snapshot transfers are guarded by now.
    fn snapshot_term(&self) -> Self::Term;

    /// Whether to take snapshot chunks from `from` in `term`.
    fn accept_snapshot(&self, from: NodeId, term: Self::Term) -> SnapshotAcceptance;

    /// A complete snapshot of the decided prefix `[0, idx)` (idx > decided_idx) arrived in
    /// `term`: replace the log by it and return the state to checkpoint (written before
    /// anything [`LogProtocol::snapshot_installed`] outputs).
    fn install_snapshot(&mut self, term: Self::Term, idx: u64) -> Self::Checkpoint;

    /// After an install was checkpointed: continue (e.g. a candidate finishes its Prepare).
    fn snapshot_installed(&mut self, out: &mut ProtocolOutput<Self::Message, Self::Record>);

    /// `to` installed this replica's snapshot at `idx`, sent in `term`.
    fn snapshot_delivered(
        &mut self,
        to: NodeId,
        term: Self::Term,
        idx: u64,
        out: &mut ProtocolOutput<Self::Message, Self::Record>,
    );

    /// The protocol state of a brand-new instance whose log starts at `base_idx` (everything
    /// before it decided and compacted into the replica layer's state), for a new
    /// configuration epoch: the replica layer applies a change of the voter set by starting a
    /// new instance from the state at the change (OmniPaxos §6's StopSign, VR Revisited §7's
    /// epochs). `None`: the protocol cannot change its members, and the replica layer refuses
    /// such changes.
    fn epoch_checkpoint(base_idx: u64) -> Option<Self::Checkpoint> {
        let _ = base_idx;
        None
    }

    /// Commands this replica led that committed on the fast path and on the slow path
    /// (protocols with one: EPaxos).
    fn path_commits(&self) -> (u64, u64) {
        (0, 0)
    }

    /// Leader only: hand leadership to voter `to` (not this replica). The protocol stops taking
    /// proposals, brings `to` up to date and tells it to take over; it gives up on its own
    /// after [`leader_transfer_ticks`] and then leads on as before. Completion is visible as
    /// [`LogProtocol::leader`] naming `to`. The default: a leaderless protocol refuses.
    fn transfer_leadership(
        &mut self,
        to: NodeId,
        out: &mut ProtocolOutput<Self::Message, Self::Record>,
    ) -> Result<(), LeaderTransferError> {
        let _ = (to, out);
        Err(LeaderTransferError::Unsupported {
            engine: Self::NAME.to_string(),
        })
    }

    /// Leader only: the voter a transfer without a chosen target should go to — the one whose
    /// log is the most up to date as far as this leader knows. `None`: no such knowledge.
    fn transfer_candidate(&self) -> Option<NodeId> {
        None
    }

    /// The voter a leader transfer under way hands leadership to (`None`: none under way).
    fn transfer_target(&self) -> Option<NodeId> {
        None
    }

    /// Ballot number / view-number: goes up with each election.
    fn term(&self) -> u64;
    /// "leader", "follower", "candidate", "primary", "backup", "recovering", ….
    fn role(&self) -> &'static str;
}
