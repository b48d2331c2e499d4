//! The engine interface: how a replication protocol plugs into Synod.
//!
//! An engine is a **sans-IO, deterministic state machine**. It owns no socket, thread, clock,
//! file or random source; the caller (the node runtime, or the simulator) feeds it inputs and
//! drains its outputs. Same config, same seed, same input sequence ⇒ same outputs, bit for bit.
//!
//! ## Inputs
//! * [`Engine::recover`] — construction, from the config and the durable records read back from
//!   disk (empty on first boot). This is the *only* way state survives a crash.
//! * [`Engine::submit`] — a client request arriving at this node.
//! * [`Engine::receive`] — a message from a peer (already decoded and authenticated as coming
//!   from a member by the transport).
//! * [`Engine::tick`] — one unit of logical time. Every timeout inside an engine is a number of
//!   ticks (`election_timeout_ticks`, …); the node maps ticks to wall time, the simulator to
//!   virtual time.
//!
//! ## Outputs: the [`Ready`] batch and persist-before-send
//! [`Engine::ready`] drains everything the engine produced since the last call: durable records,
//! messages to peers and replies to clients. Messages and replies may depend on the records
//! (a Promise depends on the promised ballot being on disk; an ack depends on the accepted
//! entries being on disk), so the only way to reach them is [`Ready::persist`], which hands the
//! records to a caller-supplied write-and-sync function first and releases the [`Outbox`] only
//! if it succeeded. The order is therefore structural, not a convention. A caller that cannot
//! persist (disk error) gets the error back and must not send anything from that batch; the
//! node stops rather than acknowledge unpersisted state.
//!
//! One exception is explicit: **early messages** ([`Ready::take_early`]) depend on no record
//! of their batch and may leave *before* the records are durable, so that a leader's disk
//! write overlaps its followers' (Raft's "leader appends in parallel"). An engine puts a
//! message there only when the receiver's handling of it cannot depend on the sender's new
//! records — e.g. OmniPaxos's AcceptDecide: a follower accepts on the strength of the leader's
//! promise quorum, which is already durable; the leader counts its *own* acceptance only when
//! it processes a later input, and the caller handles inputs strictly after the previous
//! batch's persist returned. Callers that ignore early messages get them, in order, at the head
//! of the outbox, which is always safe.
//!
//! ## Client requests and replies
//! A request submitted at node X is answered by node X (never by a peer): engines forward
//! internally as their protocol requires, retry forwarding on ticks until the request is
//! applied, and expire it after `request_timeout_ticks` with [`EngineError::Timeout`] (outcome
//! unknown). Every request gets exactly one [`ClientReply`]. Retries of a write reuse its
//! [`RequestId`]; a client table (the KV state machine's, or per register for CASPaxos) makes
//! them exactly-once.
//!
//! ## How the four protocols map onto this
//! * **Log protocols on the replica layer.** OmniPaxos (Sequence Paxos + Ballot Leader
//!   Election, Ng et al. EuroSys'23) and Viewstamped Replication Revisited (Liskov & Cowling
//!   2012) implement [`crate::protocol::LogProtocol`]; `synod_replica::Replica<P>` makes either
//!   an `Engine`. The replica layer forwards `submit`s to the protocol's leader, applies the
//!   decided prefix to [`crate::kv::KvStore`] in log order on every replica, answers at the
//!   replica where the request was submitted, serves linearizable reads by a read index the
//!   protocol confirms with a quorum, and checkpoints and transfers snapshots. Records: the
//!   protocol's (promised ballot / view-number, log changes, decided index / commit-number),
//!   incarnations and checkpoints.
//! * **CASPaxos** (Rystsov 2018). No log and no leader: every node is a proposer and an acceptor.
//!   `submit` starts (or joins) a round on the op's key with a ballot (counter, node id):
//!   Prepare/Promise returns the highest accepted value; the proposer applies the change function
//!   ([`crate::kv::register::apply_to_register`]) itself and Accept/Accepted carries the *new
//!   value* (plus a pre-prepared next ballot for the one-round-trip path); Nack reports a higher
//!   promise; a cleanup message removes tombstones once every acceptor has them. There is no
//!   shared KV state machine: each register carries its own bounded client table for
//!   exactly-once retries. Records: per-key acceptor state, a ballot-counter lease, tombstone
//!   drops and checkpoints. Backoff after a conflict is drawn from the seeded generator. Ops that
//!   are not single-key fail with [`EngineError::Unsupported`] ([`Capabilities`] says so up
//!   front). `election_timeout_ticks` is its phase timeout; `heartbeat_ticks` and `priority` are
//!   unused.
//! * **EPaxos** (Moraru et al. SOSP'13). Leaderless: `submit` makes this replica the command
//!   leader of a new instance in its own instance space; PreAccept/Accept/Commit carry deps and
//!   seq; ticks drive explicit-prepare recovery of stalled instances; execution orders committed
//!   instances by strongly connected components of the dependency graph and applies them to
//!   the same KV store (the position in execution order plays the role of the log index).
//!   Records: instance state (status, ballot, command, deps, seq).
//!
//! Anything an engine needs across a crash goes out as a record; anything it forgets is
//! volatile by design (leader hints, pending forwards — which is why clients retry).

use crate::ids::{NodeId, RequestId};
use crate::kv::{KvLimits, Op, Response, RevisionEvents};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::sync::Arc;

/// A replication protocol as a deterministic state machine. See the module docs.
pub trait Engine: Sized + Send + 'static {
    /// Peer-to-peer protocol message. Encoded by the transport with serde (postcard).
    type Message: Clone + Debug + Serialize + DeserializeOwned + Send + 'static;
    /// A durable record. Appended to the write-ahead log in the order emitted and handed back,
    /// in the same order, to [`Engine::recover`].
    type Record: DurableRecord;

    /// Short lowercase name: "omnipaxos", "vr", "caspaxos", "epaxos".
    const NAME: &'static str;

    /// Whether the node tags the requests it submits with its own client session. A
    /// session orders a client's writes (its table forgets replies below the client's
    /// acknowledged floor), so under EPaxos it would make every write submitted at one member
    /// interfere with the previous one, and the seq of one conflict would ripple through all
    /// of them; there the replica layer's once-per-origin rule already makes the node's own
    /// submissions exactly-once. Clients that send their own request ids keep their session.
    const NODE_SESSIONS: bool = true;

    /// What this engine can execute, so APIs can refuse up front with a clear error.
    fn capabilities() -> Capabilities;

    /// Builds a replica from its config and the durable records it emitted before a crash, in
    /// emission order (records before the last checkpoint may have been dropped). An error means
    /// the records are inconsistent (corruption the storage checksum did not catch).
    fn recover(config: EngineConfig, records: Vec<Self::Record>) -> Result<Self, String>;

    /// A client request arriving at this node.
    fn submit(&mut self, request: ClientRequest);

    /// A message from peer `from`.
    fn receive(&mut self, from: NodeId, message: Self::Message);

    /// One unit of logical time.
    fn tick(&mut self);

    /// Drains the outputs produced since the last call.
    fn ready(&mut self) -> Ready<Self::Message, Self::Record>;

    /// A cheap snapshot of protocol state for APIs, metrics and the simulator.
    fn status(&self) -> EngineStatus;

    /// Asks this replica, the leader, to hand leadership to voter `to` (etcd's MoveLeader), or
    /// with `None` to the voter with the most up-to-date log (a graceful shutdown). `Ok` names
    /// the target: the hand-off started, and completed once [`EngineStatus::leader`] names it;
    /// it is abandoned (the old leader leads on) after
    /// [`crate::protocol::leader_transfer_ticks`]. Engines without a leader refuse.
    fn transfer_leadership(
        &mut self,
        to: Option<NodeId>,
    ) -> Result<NodeId, crate::protocol::LeaderTransferError> {
        let _ = to;
        Err(crate::protocol::LeaderTransferError::Unsupported {
            engine: Self::NAME.to_string(),
        })
    }

    /// The events of the revisions this replica applied since the last call, oldest first:
    /// what its watchers are sent. The first call switches collection on (nothing is buffered
    /// for a caller that never asks). Only applied, hence decided, revisions appear. After a
    /// snapshot install the revisions jump: the caller catches up through
    /// [`Engine::watch_history`]. Engines without revisions return nothing.
    fn take_watch_events(&mut self) -> Vec<Arc<RevisionEvents>> {
        Vec::new()
    }

    /// What [`Engine::take_watch_events`] gives, by revision stream, with the ranges that left
    /// each stream. An unpartitioned engine has one stream, 0, whose range never moves. A
    /// partitioned engine has one per group (revisions are per group), and a split or merge
    /// moves keys from one group's stream to another's: the watch layer follows a watcher's
    /// range across such a [`WatchMove`].
    fn take_group_watch_events(&mut self) -> Vec<GroupEvents> {
        let events = self.take_watch_events();
        if events.is_empty() {
            return Vec::new();
        }
        vec![GroupEvents {
            group: 0,
            events,
            moves: Vec::new(),
        }]
    }

    /// [`Engine::watch_history`] of one stream of [`Engine::take_group_watch_events`].
    fn group_watch_history(
        &self,
        group: u64,
        start: u64,
        max_revisions: usize,
    ) -> Result<Vec<Arc<RevisionEvents>>, EngineError> {
        if group == 0 {
            return self.watch_history(start, max_revisions);
        }
        Err(EngineError::Unsupported {
            engine: Self::NAME.to_string(),
            what: format!("watch history of group {group}"),
        })
    }

    /// Linearizable reads this replica confirmed as leader (read-index rounds), the reads
    /// every member forwarded included: the read load of its group, counted where the group
    /// decides. Reads served without the leader (serializable) are not counted. 0 for engines
    /// without read-index rounds.
    fn reads_led(&self) -> u64 {
        0
    }

    /// Revisions this replica's store closed without events (`Op::CloseRevisions`) since it
    /// started or last installed a snapshot: what a write rate read from the revision must
    /// leave out. 0 for engines without closes.
    fn revisions_closed(&self) -> u64 {
        0
    }

    /// The applied events of revisions `start..`, at most `max_revisions` of them, for a
    /// watcher catching up from the past. [`EngineError::Compacted`] below the compaction
    /// revision, [`EngineError::FutureRevision`] beyond the next revision.
    fn watch_history(
        &self,
        start: u64,
        max_revisions: usize,
    ) -> Result<Vec<Arc<RevisionEvents>>, EngineError> {
        let _ = (start, max_revisions);
        Err(EngineError::Unsupported {
            engine: Self::NAME.to_string(),
            what: "watch".to_string(),
        })
    }

    /// The (applied index, [`EngineStatus::applied_digest`]) of each log entry of group
    /// `group` (0 for an engine of one group) this replica applied after index `after`, oldest
    /// first, from a short trail of the latest ([`APPLIED_TRAIL_MAX`]), kept only with
    /// [`EngineConfig::keep_applied_trail`]. For the simulator's
    /// agreement check: the status shows only the digest after the last entry of a batch, so
    /// an entry applied in the middle of one — after a restart, say — would otherwise never be
    /// compared with the same index elsewhere. Engines without a log report nothing.
    fn applied_trail(&self, group: u64, after: u64, out: &mut Vec<(u64, u64)>) {
        let _ = (group, after, out);
    }

    /// Take a checkpoint at the next [`Engine::ready`] even if fewer than `snapshot_entries`
    /// entries were applied since the last, so storage can drop the log before it: for
    /// defragmentation (`etcdctl defrag`), and for the partitioned engine's member-wide bound.
    /// False when there is nothing to do or it cannot be done now: an engine without a log to
    /// compact, nothing applied since the last checkpoint, or a protocol state a checkpoint may
    /// not hold (repairing, recovering).
    fn checkpoint_now(&mut self) -> bool {
        false
    }

    /// Log entries applied here since the last checkpoint that a checkpoint now would drop
    /// (none while the protocol cannot take one: repairing, recovering). The partitioned
    /// engine adds its groups' up, because they share one WAL and the log bound
    /// (`snapshot_entries`) is the member's. Engines without a log hold none.
    fn held_entries(&self) -> u64 {
        0
    }

    /// Take, at the next [`Engine::ready`], a checkpoint that subsumes every record this
    /// replica emitted so far — even if nothing was applied since the last one. The
    /// partitioned engine needs it: its checkpoint must cover every group at once, because
    /// storage drops all records before a checkpoint. False if this engine cannot.
    fn checkpoint_full(&mut self) -> bool {
        false
    }

    /// A point-in-time image of this replica's applied state for a backup (see
    /// [`crate::backup`]), taken between two inputs. Engines without one state machine to
    /// image refuse with [`EngineError::Unsupported`].
    fn backup_image(&self) -> Result<crate::backup::BackupImage, EngineError> {
        Err(EngineError::Unsupported {
            engine: Self::NAME.to_string(),
            what: "backup (Maintenance.Snapshot)".to_string(),
        })
    }

    /// etcd's HashKV of the applied key-value history up to `revision` (0: the current one);
    /// see [`crate::kv::KvStore::hash_kv`].
    fn hash_kv(&self, revision: u64) -> Result<crate::kv::KvHash, EngineError> {
        let _ = revision;
        Err(EngineError::Unsupported {
            engine: Self::NAME.to_string(),
            what: "HashKV".to_string(),
        })
    }

    /// This member's CORRUPT alarm was raised (`true`) or disarmed: its state may differ from
    /// its peers'. It already refuses its own clients (the node does); an engine that serves
    /// other members' requests from its state (placement's relays) stops doing so too.
    fn quarantine(&mut self, on: bool) {
        let _ = on;
    }

    /// Partitioned mode: HashKV of group `group`'s own history up to `revision` (0: the
    /// group's current one), for the corruption check of groups placed on some members, which
    /// compares each group among its hosts. Refused for a group not on this member.
    fn group_hash_kv(&self, group: u64, revision: u64) -> Result<crate::kv::KvHash, EngineError> {
        let _ = (group, revision);
        Err(EngineError::Unsupported {
            engine: Self::NAME.to_string(),
            what: "a group's HashKV".to_string(),
        })
    }

    /// Partitioned mode: the state image of group `group` as this member applied it, for a
    /// backup taken at a member that does not host every group (placement), which gathers the
    /// others' images from their hosts. Refused for a group not on this member.
    fn group_backup_image(&self, group: u64) -> Result<crate::backup::BackupImage, EngineError> {
        let _ = group;
        Err(EngineError::Unsupported {
            engine: Self::NAME.to_string(),
            what: "a group's backup".to_string(),
        })
    }

    /// Partitioned mode: this group's share of a HashKV at `revision` over the keys of
    /// `range` (see [`crate::kv::KvStore::hash_kv_part`]); `after` is the highest compaction
    /// of the member's groups.
    fn hash_kv_part(
        &self,
        revision: u64,
        after: u64,
        range: &crate::kv::KeyRange,
    ) -> Result<crate::kv::KvHashPart, EngineError> {
        let _ = (revision, after, range);
        Err(EngineError::Unsupported {
            engine: Self::NAME.to_string(),
            what: "a partitioned HashKV".to_string(),
        })
    }

    /// Partitioned mode: the keys this replica's group owns and the splits and merges it
    /// applied, oldest first (see [`crate::kv::owned`]). `None`: an engine without ranges.
    fn range_state(&self) -> Option<&crate::kv::RangeState> {
        None
    }

    /// Partitioned mode: this group's state encoded for the group below to absorb
    /// ([`crate::kv::Op::Absorb`]), once it is frozen for a merge. `None` otherwise.
    fn merge_image(&self) -> Option<Vec<u8>> {
        None
    }

    /// Partitioned mode: this group is gone (absorbed by another); the replies owed to its
    /// pending requests — `WrongGroup` where it is known they were not applied, else a
    /// timeout (the outcome is unknown here).
    fn retire(&mut self) -> Vec<crate::ClientReply> {
        Vec::new()
    }

    /// Partitioned mode: `op` (a read) answered from this replica's applied state as it is,
    /// with no leader's confirmation — for the engine's own look at a small replicated table
    /// (the range directory), never for a client.
    fn read_applied(&self, op: &crate::kv::Op) -> Result<crate::kv::Response, EngineError> {
        let _ = op;
        Err(EngineError::Unsupported {
            engine: Self::NAME.to_string(),
            what: "a read of the applied state".to_string(),
        })
    }

    /// Partitioned mode: up to about `most` keys spread evenly over this replica's store in
    /// key order (where a size split cuts, and how many keys each side gets). Empty: fewer
    /// than two keys, or no store.
    fn key_sample(&self, most: usize) -> Vec<crate::kv::Key> {
        let _ = most;
        Vec::new()
    }

    /// Partitioned mode: the groups split off since the last call, each with the first
    /// durable record of its replica on this member (a checkpoint of the upper half at the
    /// split, starting a fresh protocol instance there).
    fn take_splits(&mut self) -> Vec<(crate::kv::SplitMark, Self::Record)> {
        Vec::new()
    }

    /// Partitioned mode: the ticks left of each live lease's TTL on this replica, handed to
    /// the replicas of the groups split off here ([`Engine::inherit_lease_clocks`]).
    fn lease_clocks(&self) -> Vec<(crate::kv::LeaseId, u64)> {
        Vec::new()
    }

    /// Partitioned mode: a replica of a group just split off, started from its first record,
    /// goes on with its parent's lease clocks (`clocks`, from [`Engine::lease_clocks`] of the
    /// parent's replica on this member) instead of restarting every TTL — a lease whose keys'
    /// range keeps splitting would otherwise never expire on time.
    fn inherit_lease_clocks(&mut self, clocks: &[(crate::kv::LeaseId, u64)]) {
        let _ = clocks;
    }

    /// Partitioned mode: the records a replica of a group this member knows was split off,
    /// but did not apply the split of (it installed a later snapshot of the parent), starts
    /// from: a member without state, which takes its state from a snapshot the group's
    /// members send and votes in nothing before — or, on a member that lost its storage and
    /// may have voted in that group before, nothing at all: no vote afresh (the protocol
    /// repairs it from its peers like any group of a lost disk, or, placed, it joins as a
    /// move's newcomer and votes in nothing there). `split`: the split as this replica's log
    /// placed it, so a member of a lost disk can tell a split decided after its repair (it
    /// cannot have voted in that group: it joins without state like anyone); `None` when the
    /// split's place in this replica's log is unknown. `None` back: an engine that cannot.
    fn split_joiner(&self, split: Option<&crate::kv::SplitMark>) -> Option<Vec<Self::Record>> {
        let _ = split;
        None
    }

    /// Voters of this replica's configuration that said they cannot vote in it (they lost
    /// their storage after it began, so may have voted in it before): the group is that many
    /// failures closer to a stall until they are replaced (placement moves a placed group off
    /// them). Empty where unknown.
    fn non_voting_voters(&self) -> Vec<NodeId> {
        Vec::new()
    }

    /// Whether this replica is one of those: a voter of its configuration without the means
    /// to vote in it. It takes no requests of its own — it cannot tell its group's leader by
    /// the protocol — so a member hosting it sends them to the group's other hosts.
    fn non_voting(&self) -> bool {
        false
    }

    /// A replica still waiting for its first state (it joined a group without one) is told,
    /// at a restart, that it joined as a move's newcomer (`EngineConfig::join` and
    /// `move_newcomer`) refusing states of configuration version `rejoin_floor` or older: the
    /// flags are not in its records, and without them a first state that lists it as a voter —
    /// from a stay on a lost disk it no longer remembers — would let it vote there. A no-op
    /// for any other replica, and for engines without joiners.
    fn resume_as_newcomer(&mut self, rejoin_floor: u64) {
        let _ = rejoin_floor;
    }

    /// etcd's Hash of the whole applied state; see [`crate::kv::KvStore::hash_all`].
    fn hash_all(&self) -> Result<u32, EngineError> {
        Err(EngineError::Unsupported {
            engine: Self::NAME.to_string(),
            what: "Hash".to_string(),
        })
    }
}

/// A durable record type. `is_checkpoint` records subsume every earlier record, so storage may
/// drop what came before them (log compaction).
pub trait DurableRecord: Clone + Debug + Serialize + DeserializeOwned + Send + 'static {
    fn is_checkpoint(&self) -> bool {
        false
    }
}

/// What an engine can do; the API layer turns a `false` into a clear "not supported by the
/// X engine" error before submitting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Range and prefix scans, and count over ranges.
    pub ranges: bool,
    /// Multi-key transactions (etcd Txn).
    pub transactions: bool,
    /// A store-wide revision in the etcd sense (needs a total order of writes).
    pub revisions: bool,
    /// Watches: of any range at the store-wide revisions, or — partitioned, where revisions
    /// are per group — of a range inside one group, at that group's revisions
    /// ([`Engine::take_group_watch_events`]).
    pub watch: bool,
    /// etcd leases (a lessor that proposes expiry, keys attached to leases).
    pub leases: bool,
}

/// Static configuration of one replica. Every timeout is in ticks, every bound has a unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// This replica.
    pub id: NodeId,
    /// All voting members, including `id`, sorted.
    pub members: Vec<NodeId>,
    /// Seed for any randomness the protocol needs (backoff jitter). Never use another source.
    pub seed: u64,
    /// Leader-failure detection: BLE's heartbeat round, VR's view-change timer, CASPaxos and
    /// EPaxos recovery timers.
    pub election_timeout_ticks: u64,
    /// How often a leader without new commands still tells followers it is alive / what is
    /// decided, and how often a follower re-sends a forward that was not applied yet.
    pub heartbeat_ticks: u64,
    /// A request not answered after this many ticks is answered with `Timeout`.
    pub request_timeout_ticks: u64,
    /// Most commands in one accept round / one log append.
    pub batch_entries_max: usize,
    /// Most requests this node holds awaiting a reply; beyond it `submit` answers `Busy`.
    pub pending_requests_max: usize,
    /// Leader-election priority (OmniPaxos BLE): higher wins among equal ballot numbers.
    pub priority: u64,
    /// Bounds on the KV state machine.
    pub kv: KvLimits,
    /// Wall-clock length of one tick, in milliseconds: what turns lease TTLs (seconds) into
    /// ticks. The node's tick interval; the simulator's virtual tick.
    pub tick_ms: u64,
    /// Take a checkpoint (snapshot record, log compaction) after this many applied entries
    /// (log engines) or durable records (CASPaxos); 0 = never.
    pub snapshot_entries: u64,
    /// Test only: a deliberately broken variant, to prove the simulator and checker catch it.
    /// The production server refuses to start with one set unless explicitly forced.
    pub planted_bug: Option<PlantedBug>,
    /// Differs on every start of this replica (VR's recovery nonce, §4.3): a reply to an
    /// earlier boot's request is recognisably stale. The node draws it from its data directory's
    /// boot counter and cluster identity; the simulator from the seed and restart count.
    pub boot_nonce: u64,
    /// This start found no storage at all because the replica never ran before (a new
    /// cluster), as opposed to a restart or a wiped disk. Only then may a protocol that recovers
    /// from its peers (VR) start as an ordinary member of view 0.
    pub first_boot: bool,
    /// The bootstrap configuration's member details (names, addresses). Empty: bare ids from
    /// `members` (the simulator). Only a new cluster's first boot uses it; afterwards the
    /// configuration is replicated state.
    pub initial_members: Vec<crate::membership::Member>,
    /// This replica was added to a running cluster: it has no state of its own and takes the
    /// configuration and the state from a snapshot its peers send; `members` only says whom
    /// to ask. It votes in nothing before that.
    pub join: bool,
    /// With `join`: a replica that joins a group it left before takes no state whose
    /// configuration version is this or older — that state is from its earlier stay, and it no
    /// longer remembers the votes it cast then (partitioned placement, moves). 0: any.
    pub rejoin_floor: u64,
    /// With `join`: this replica is a placement move's newcomer (synod-partition's
    /// `moves.rs`), added as a learner and promoted only once in sync — so a first state that
    /// already lists it as a voter is from a stay it no longer remembers. (A node added with
    /// `--join` may be added as a voter directly.)
    pub move_newcomer: bool,
    /// Partitioned mode (see the `synod-partition` crate): the keys where one group's range
    /// ends and the next one's begins, ascending. Empty: one group, the whole keyspace. Only
    /// the partitioned engine reads it; every replica of a cluster must be given the same.
    pub split_keys: Vec<crate::kv::Key>,
    /// Partitioned mode, one group's replica: the keys its group owns in the initial layout
    /// (a group split off later has its range in its state). Default: everything.
    pub key_range: crate::kv::KeyRange,
    /// Partitioned mode: a group whose store holds more keys than this is split at its middle
    /// key by its leader (0: never).
    pub auto_split_keys: u64,
    /// Partitioned mode: a group that applies more writes per second than this, sustained
    /// for a few seconds, is split by its leader where its recent writes divide in half
    /// (0: never).
    pub auto_split_writes: u64,
    /// Partitioned mode: a group whose leader confirms more linearizable reads per second
    /// than this, sustained for a few seconds, is split by that leader where the reads it
    /// served itself divide in half (0: never).
    pub auto_split_reads: u64,
    /// Partitioned mode: a range split off automatically is merged back into the range below
    /// by its leader once the two hold fewer keys than this together (and, with load splits
    /// on, take less than half their write threshold) (0: never).
    pub auto_merge_keys: u64,
    /// Partitioned mode: looks (one a second at the 10 ms tick) without a layout change of
    /// either range before an automatic merge: a range just split by load is not merged back
    /// while the load may return.
    pub auto_merge_quiet_looks: u32,
    /// Partitioned mode: threads a batch's groups are worked on with, the engine thread's
    /// included (1: the engine thread alone). What the engine emits is the same either way;
    /// more threads let a member that hosts several busy groups use more than one core.
    pub engine_threads: usize,
    /// This replica is one group of a partitioned engine: the only kind that takes splits.
    pub partition_group: bool,
    /// Partitioned mode: keep the range directory, a group of its own (the meta group) that
    /// maps each range to its group, recorded by the groups' leaders after every split and
    /// merge (`synod-partition`'s `directory.rs`).
    pub range_directory: bool,
    /// Partitioned mode: members each configured group after the first is placed on (0, or
    /// at least the members: every group on every member). The first group and the meta
    /// group stay on every member (`synod-partition`'s `placement.rs`).
    pub partition_replicas: usize,
    /// Partitioned mode with placement: spread the placed groups evenly over the cluster's
    /// voters by moving them (`synod-partition`'s `rebalance.rs`).
    pub partition_rebalance: bool,
    /// Test only (the simulator): keep the trail of applied digests
    /// ([`Engine::applied_trail`]). Off in the node: nothing on its apply path is kept for it.
    pub keep_applied_trail: bool,
}

impl EngineConfig {
    /// Defaults sized for the simulator's and the node's 10 ms tick.
    pub fn new(id: NodeId, members: Vec<NodeId>, seed: u64) -> Self {
        let mut members = members;
        members.sort_unstable();
        members.dedup();
        assert!(
            members.contains(&id),
            "node {id} is not among members {members:?}"
        );
        EngineConfig {
            id,
            members,
            seed,
            election_timeout_ticks: 10,
            heartbeat_ticks: 2,
            request_timeout_ticks: 300,
            batch_entries_max: 1024,
            pending_requests_max: 65_536,
            priority: 0,
            kv: KvLimits::default(),
            tick_ms: 10,
            snapshot_entries: 0,
            planted_bug: None,
            boot_nonce: seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            first_boot: true,
            initial_members: Vec::new(),
            join: false,
            rejoin_floor: 0,
            move_newcomer: false,
            split_keys: Vec::new(),
            key_range: crate::kv::KeyRange::default(),
            auto_split_keys: 0,
            auto_split_writes: 0,
            auto_split_reads: 0,
            auto_merge_keys: 0,
            auto_merge_quiet_looks: 30,
            engine_threads: 1,
            partition_group: false,
            range_directory: false,
            partition_replicas: 0,
            partition_rebalance: false,
            keep_applied_trail: false,
        }
    }

    /// Votes needed for a quorum of the members.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().copied().filter(move |m| *m != self.id)
    }

    pub fn bug(&self, b: PlantedBug) -> bool {
        self.planted_bug == Some(b)
    }
}

/// Entries a replica keeps in its trail of applied digests ([`Engine::applied_trail`]).
pub const APPLIED_TRAIL_MAX: usize = 256;

/// Deliberately broken protocol variants (test only). Each names the invariant it breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlantedBug {
    /// OmniPaxos: the leader decides (and acknowledges) before a majority accepted.
    AckBeforeMajority,
    /// OmniPaxos: a "linearizable" read is answered from the local state of whichever node
    /// received it, with no quorum confirmation.
    StaleLinearizableRead,
    /// OmniPaxos: BLE elects the highest ballot even if that server is not quorum-connected.
    IgnoreQuorumConnected,
    /// OmniPaxos: a Promise reports no accepted round/log, as if it forgot what it accepted.
    ForgetAcceptedBallot,
    /// CASPaxos: a proposer sends Accept without waiting for a quorum of promises.
    AcceptWithoutQuorum,
    /// CASPaxos: a Promise omits the acceptor's highest accepted value.
    PromiseWithoutHighestAccepted,
    /// CASPaxos: one acceptor (the highest-numbered node) answers Accepted without storing
    /// anything — a disk that acknowledges writes it then loses.
    CasAcceptedWithoutStoring,
    /// Durability: a reply leaves before its records are fsynced (storage / simulator level).
    AckBeforeFsync,
    /// VR §4.2: the new primary picks the DoViewChange log by op-number only, ignoring the
    /// last normal view-number.
    VrLogByOpNumberOnly,
    /// VR §4.1: a backup accepts a Prepare whose op-number leaves a gap in its log.
    VrPrepareWithGap,
    /// VR §4.3: a restarted replica answers as if normal, without recovering (amnesia).
    VrRecoveringAnswers,
    /// VR §4.1: the primary commits after f − 1 PrepareOks instead of f.
    VrCommitTooEarly,
    /// VR §5.2: a replica that learns of a newer view keeps its uncommitted suffix instead of
    /// truncating to its commit-number before state transfer.
    VrSkipTruncateOnStateTransfer,
    /// OmniPaxos repair: a server that lost its storage promises like an ordinary one (an
    /// empty log the leader counts toward its Prepare quorum) instead of flagging the promise
    /// as amnesic, so it votes with state it does not have.
    OmniAmnesicVotes,
    /// Storage (simulator only): a member that finds a checksum failure in the middle of its
    /// log truncates the log there and keeps voting, instead of repairing from peers.
    TruncateAtCorruption,
    /// CASPaxos repair: a node that lost its storage rebuilds its acceptor from the first peer
    /// that answers in full instead of from n − majority + 1 of them.
    CasRepairFromOnePeer,
    /// Watch (replica layer): a member also hands its watchers the events of log entries it
    /// has accepted but that are not decided yet, and then suppresses the decided revisions it
    /// already "sent" — a leader change that discards the accepted suffix leaves its watchers
    /// with events that never happened.
    WatchUndecidedEvent,
    /// Watch (replica layer): history replay for a watcher that catches up or resumes starts
    /// one revision late (`watch_history(start)` answers from `start + 1`).
    WatchResumeSkipsRevision,
    /// Watch (KV store): a compaction also drops, from the buffer of revisions the watch layer
    /// has not taken yet, the ones below the compaction revision, so watchers miss revisions
    /// applied in the same batch as the `Compact`.
    CompactionDropsWatchedEvent,
    /// Leases (replica layer): a follower's lessor does not restart a lease's TTL when it
    /// applies a keep-alive, and a new leader does not extend the TTLs it inherits (etcd's
    /// rule) — so a lease its holder kept alive expires early after a leader change.
    LeaseExpiresWithoutExtension,
    /// EPaxos recovery (Sutra's bug): Explicit Prepare picks the reply with the highest
    /// *promised* ballot instead of the highest ballot the attributes were accepted in (vbal).
    EpaxosRecoveryByBallot,
    /// EPaxos: the fast quorum is one replica smaller than F + ⌊(F+1)/2⌋.
    EpaxosFastQuorumTooSmall,
    /// EPaxos: an acceptor answers PreAccept with the command leader's deps and seq without
    /// merging the interfering instances it knows.
    EpaxosEchoDeps,
    /// EPaxos: an instance executes once it is committed, without waiting for its
    /// dependencies to be committed and executed.
    EpaxosExecuteBeforeDeps,
    /// EPaxos: a read is treated as commuting with writes of the same key (no dependency).
    EpaxosGetCommutesWithPut,
    /// Membership change (replica layer): what the old configuration's instance decided after
    /// the StopSign is acknowledged, while the new epoch starts at the StopSign without it.
    ApplyPastStopSign,
    /// Membership change: a new member goes on (votes, applies, serves) with the configuration
    /// it was sent but not the state.
    JoinWithoutState,
    /// Membership change: a leader that applied its own removal keeps answering reads.
    RemovedLeaderServes,
    /// CASPaxos membership change (§2.3): growing to an even number of acceptors skips the
    /// identity-transition rescan, so values chosen before the change stay on an accept quorum
    /// of the old configuration only, and removing old members later can lose them.
    CasSkipRescanOnGrow,
    /// CASPaxos membership change: a node whose add stalled (its coordinator gave up before
    /// it ran) never resumes the change itself, so the add blocks every other change until an
    /// operator asks for the same change again.
    CasJoinerNeverResumes,
    /// Corruption check (replica layer): this member applies every put with its value's bytes
    /// altered — what silent corruption of one member's memory or disk does to its state. Its
    /// HashKV disagrees with its peers' and the node's corruption check must raise CORRUPT.
    DivergentApply,
    /// OmniPaxos leader transfer: the leader tells the target to take over without waiting
    /// until the target accepted the leader's whole log, and the target, trusting the
    /// hand-off, leads with its own log instead of adopting the most up-to-date log its
    /// Prepare phase collects — entries the old leader decided can be lost.
    TransferTargetKeepsOwnLog,
    /// Auth (API edge): a Txn's permission check skips its failure branch, so a user may put
    /// or read keys it has no permission on through the else-branch of a compare it fails.
    TxnElseBranchUnchecked,
    /// Partitioned mode: one member routes a key equal to a split key to the group below the
    /// split, where the others route it to the group above — the same key has two owners.
    PartitionBoundaryMisroute,
    /// Partitioned mode: the node-wide checkpoint covers only the groups that checkpointed in
    /// that batch, so storage drops the other groups' records before it (their promises and
    /// accepted entries) and a restart forgets them.
    PartitionCheckpointSkipsGroups,
    /// Partitioned mode: a group that split its range off keeps answering reads of the keys
    /// it gave away (from a store that no longer has them) instead of refusing them as a
    /// wrong group.
    PartitionSplitServesMovedKeys,
    /// Partitioned mode: the new group of a split starts with an empty client table and
    /// origin window, so a write the old group applied before the split and retried after it
    /// is applied again by the new group.
    PartitionSplitDropsSessions,
    /// Partitioned mode: a group frozen for a merge keeps applying writes, after its state
    /// was handed to the group below — those writes are acknowledged and then lost.
    PartitionMergeFrozenServes,
    /// Partitioned mode: an absorb takes the frozen group's keys but not its client table, so
    /// a write the frozen group applied and a client retried after the merge is applied again.
    PartitionMergeDropsSessions,
    /// Partitioned mode: a lease keep-alive renews only the first group's copy of the lease
    /// and is acknowledged, so the copies in the other groups run out on their old clock and
    /// their keys go before the acknowledged keep-alive's TTL has passed.
    PartitionLeaseRenewsOneGroup,
    /// Partitioned watch feed: a split's move of keys to the new group is published as if it
    /// happened one revision earlier, so a watcher following its keys moves on before the
    /// parent's last revision and never sees that revision's events of them.
    PartitionWatchMoveEarly,
    /// Partitioned membership change: the groups other than the first follow the cluster's
    /// additions, promotions and updates but never its removals, so a member removed from
    /// the cluster keeps its vote in every other group.
    PartitionGroupsKeepRemovedMembers,
    /// Partitioned watch feed: an absorb goes on from the lower group's own revision, not the
    /// larger of the two, so the absorbed keys' next events can come at revisions below the
    /// frozen group's last — which a watcher that followed the merge has already passed.
    PartitionAbsorbRevisionBehind,
    /// Partitioned watch (the node's cursors): a cursor in a group that took its keys back
    /// (a merge after a split) acts on that group's moves from before — the old split sends
    /// a watcher that followed the merge, or one made after it, to the retired group.
    PartitionWatchFollowsOldMoves,
    /// Partitioned merge: the absorbed group's history is joined one revision late, so a
    /// watch resumed (or a read made) from before the merge sees the absorbed keys' events at
    /// revisions that are not theirs.
    PartitionMergeHistoryShifted,
    /// Partitioned compaction: answered once the first group compacted, the others never
    /// asked — history below the compaction stays readable in groups that had reached it.
    PartitionCompactOneGroup,
    /// Partitioned revision close: the group's revision jumps without the empty history
    /// slots, so every event the history held before the close seems to sit at a later
    /// revision — what a watch resumed from before it, or a read at a past revision, sees.
    PartitionCloseWithoutSlots,
    /// Partitioned watch over several groups (the node's cursors): revisions are delivered
    /// as soon as *one* group read has passed them, not every one, so a lagging group's
    /// events come after later revisions of another group (a resumed client skips them).
    PartitionWatchMergedAhead,
    /// Partitioned range read over several groups: each part is its group's latest state and
    /// the reply's revision the largest of theirs — a lagging group's next write gets a
    /// revision at or below it, so a watch resumed from the read's revision misses it.
    PartitionSpanReadUnaligned,
    /// Partitioned merge: a lease the absorbed group had ended (its lessor expired it, its
    /// keys went) lives on in the absorbing group, whose copy was still alive — a keep-alive
    /// after the merge succeeds although the lease's keys are already gone.
    PartitionMergeKeepsEndedLease,
    /// Partitioned split: the new group's replica takes its parent's lease deadlines as they
    /// are, in the parent's ticks — but every replica counts ticks from its own start, so the
    /// new group's leases run on for as long as the parent had lived.
    PartitionSplitLeaseClocksUnrebased,
    /// OmniPaxos snapshot install: a follower that installs the leader's snapshot takes the
    /// leader's round with the decided prefix alone (and drops the entries it held beyond
    /// it), so a later Prepare adopts that short log of the newest round over the longer ones
    /// holding what the leader synced — an entry decided beyond the snapshot is lost.
    OmniSnapshotTakesLeaderRound,
    /// Partitioned lease fan: a keep-alive counts answers that speak for a copy the group no
    /// longer holds — one given before the group absorbed another (whose copy had ended,
    /// ending this one), or the first group's client table answering a retry with the first
    /// attempt's answer — so it is acknowledged for a lease whose keys are already gone.
    PartitionKeepAliveOutgrownAnswer,
    /// Partitioned range directory: the leader of a group split off at run time never
    /// records its range in the directory (the meta group), so the directory goes on sending
    /// the new group's keys to its parent.
    PartitionSplitNeverRecorded,
    /// Partitioned membership change: an answer that says a change is so already (a retry
    /// of an add or remove applied before: "member ID already exist", "member not found") is
    /// given at once instead of once every group followed — so the operator stops a removed
    /// member that other groups still count as a voter. (Random schedules no longer reach
    /// it since 2026-12-07, when removed replicas began sending their state to the groups
    /// that still count them; synod-partition's `tests/members.rs` catches it, with two
    /// removals at once while the member is cut off.)
    PartitionMemberRetryNotHeld,
    /// Partitioned split on a learner (a member being added): the new group's first record is
    /// a protocol checkpoint, which names a voter — it does not recover, so the member never
    /// hosts the new group and the group's leader waits for it to catch up forever.
    PartitionSplitLearnerAsVoter,
    /// Partitioned split on a member that once lost its storage: it starts every later
    /// split-off group without state (as lost storage), not only the splits it may have
    /// applied before the loss — so a group whose other members skipped the split has its
    /// state nowhere and never starts.
    PartitionAmnesicSplitStateless,
    /// Partitioned split on a member that once lost its storage and skipped a split decided
    /// after its repair (it installed a later snapshot of the parent): it starts the new
    /// group as lost storage (no records, repaired by the protocol) instead of as a member
    /// without state — so a new group whose other members lost their disks around the split
    /// has too few members to answer VR's recovery, and stalls.
    PartitionAmnesicJoinerStateless,
    /// VR leader transfer to a backup that is recovering (it sent Recovery since its last
    /// PrepareOk): the primary leaves normal status for a view change the target, without its
    /// disk, takes no part in — the group has no primary until a view-change timeout.
    VrTransferToRecovering,
    /// Partitioned range directory: a record carries no compares, so one planned from a copy
    /// of the directory that a newer record changed since (one group's record racing its
    /// neighbour's, or a newer owner's) still holds and takes keys back.
    PartitionDirectoryRecordUnguarded,
    /// Partitioned range directory: a group's leader records its range over owners of any
    /// generation, so a leader that has not applied its group's split or freeze yet takes the
    /// keys of a newer group back.
    PartitionDirectoryAnyGeneration,
    /// Partitioned placement: a member relaying a read to a member that hosts its group
    /// relays it as sequential, so a linearizable read is served from the host's own replica,
    /// however far behind its group it is.
    PartitionRelayDropsConsistency,
    /// Placement, splits (`learned.rs`): a member that relays a request for a group hosted
    /// elsewhere takes no notice of the splits its answer names, so a lease or compaction fan
    /// completes without the groups split off meanwhile (until its copy of the directory
    /// records them): a keep-alive acknowledged while a new group's copy of the lease was not
    /// renewed.
    PlacedSplitNotLearned,
    /// Placement, splits: a member that lost its storage and then learns, from its parent's
    /// state, of a group split off before the loss repairs that group by its protocol from the
    /// hosts it guesses (the parent's now) instead of joining it without state: when the group
    /// or its parent moved since, the repair asks members that do not host it and never gets
    /// its answers, and the group keeps a voter that never votes again.
    PlacedSplitChildRepairsGuessed,
    /// Placement, remote watches (`watch::remote`): a host's pages carry no splits, so a
    /// watcher at a member that does not host its keys' group reads on in the old group after
    /// a split and silently misses every later event of its keys.
    RemotePagesDropSplits,
    /// Placement, remote watches (`watch::remote`): a watcher's read of a remote group's
    /// history below the host's compaction is answered with what the host still has instead
    /// of "compacted", so the watcher silently misses the compacted revisions rather than being
    /// cancelled with the compaction revision (etcd's contract: the client re-lists).
    RemoteWatchHistoryIgnoresCompaction,
    /// Membership change (replica layer): a member that joins a group it belonged to before
    /// (a range moved away from it and back) counts its incarnations from 1 again, so the
    /// origins of its commands are ones the group's state remembers from its earlier stay and
    /// are skipped as applied: no leader proposes them, and nothing it makes — its writes, its
    /// revision closes — takes effect while it leads. Caught by the simulator's convergence
    /// check (a group whose leader cannot close its revisions).
    RejoinReusesOrigins,
    /// Membership change (replica layer): a member that joins a group it left before takes
    /// any state it is sent, also a stale member's from an old configuration in which it voted
    /// during its earlier stay; having forgotten those votes, it makes up a quorum of that old
    /// configuration with the stale member, and they decide again what was decided. Caught by
    /// the agreement check until 2026-12-07; since removed replicas send their state to older
    /// configurations, random schedules no longer reach it; synod-partition's
    /// `tests/placement.rs` catches it by handing a rejoined replica an old state.
    RejoinTakesStaleState,
    /// Placement, rebalancing (`synod-partition`'s `rebalance.rs`): a group's leader sheds a
    /// voter from a group that has just its replicas, as if it had one too many (an off-by-one
    /// in finishing a move cut short after its promotion), so groups lose replicas. Caught by
    /// the simulator's convergence check (every group on `replicas` voters).
    RebalanceShedsPlacedVoter,
    /// Placement, moves (`synod-partition`'s `moves.rs`): a move's removal is made even when
    /// it leaves the group fewer voters than placed — two leaders in turn, each moving the
    /// group from a view that lagged, remove two voters for one added. Caught by the
    /// simulator's convergence check (a group short of its replicas, or without a quorum).
    MoveRemovesBelowReplicas,
    /// Partitioned, leader spreading (`synod-partition`'s `leaders.rs`): each group is handed
    /// to its rotation among its hosts and nothing is counted, so leaders pile up on one
    /// member where the rotations coincide (or where the first group's leader was moved).
    /// Caught by the simulator's convergence check (leaders as even as single hand-offs can
    /// make them).
    LeaderPlanRotationOnly,
    /// Placement, moves (replica layer): a move's newcomer whose first state already lists it
    /// as a voter — a member that lost its disk and so forgot that it had joined the group and
    /// voted in it — starts voting in that epoch afresh, as if it had never promised anything
    /// there. Caught by the partitioned engine's test of a placed member that loses its disk
    /// after a move (`tests/placement.rs`).
    MoveJoinerVotesAfresh,
    /// Placement (`synod-partition`'s `moves.rs`): a placed group's leader keeps a voter that
    /// said it cannot vote (it lost its storage after the configuration began) instead of
    /// moving the group off it, so the group stays a failure closer to a stall for good.
    /// Caught by the simulator's convergence check (every replica of a group reaches the same
    /// applied index).
    NonVotingVoterKept,
    /// Placement (`synod-partition`'s `moves.rs`) and the replica layer: a replica that
    /// applied its own removal drops at once, and a replica without a protocol instance sends
    /// no snapshot, so the group's other members never learn of the removal from it; where
    /// the old configuration's others cannot make a quorum without it (one of them lost its
    /// storage), the group stalls for good. Caught by the simulator's convergence check.
    RemovedReplicaLeavesAtOnce,
    /// Placement (`synod-partition`'s `moves.rs`): a voter that cannot vote (it lost its
    /// storage after its configuration began) still takes its member's requests for the group,
    /// which wait for a leader it cannot reach by the protocol — until they time out or the
    /// group moves off it. Caught by the partitioned engine's test
    /// `a_voter_that_cannot_vote_sends_requests_to_the_other_hosts_until_replaced`.
    NonVotingVoterServes,
    /// Placement (`synod-partition`'s `moves.rs`): a move off a removed member whose target
    /// did not take the group (down) goes on to the learner it left behind, again and again,
    /// instead of dropping it and passing that member over — so the removal never completes
    /// while the least loaded member is down. Caught by the partitioned engine's test
    /// `a_removed_member_s_groups_pass_over_a_target_that_did_not_take_them`.
    MoveRetriesFailedTarget,
    /// Placement, watches (`synod-node`'s `watch::cursor`): a watch at a member a range moved
    /// away from is cancelled ("the watched keys moved … watch again") instead of reading on
    /// through a remote hub from the group's new hosts. Caught by the node's watch test of a
    /// group that moves away (`watch::remote`); etcdctl's test on real processes checks the
    /// same behaviour (it failed, "watch is canceled by the server", with the bug planted
    /// on the member by hand).
    WatchCancelledWhenGroupMovesAway,
    /// Placement, watches (`synod-node`'s `watch::cursor`): a watcher's progress notification
    /// claims whatever its cursor's head is, so after a group moved away and the watch went on
    /// at a host behind this member, its progress goes back (a client that resumes from it is
    /// sent events again). Caught by the node's watch test of a group that moves away
    /// (`watch::remote`).
    WatchProgressGoesBack,
    /// Placement (`synod-partition`'s `targets.rs`): a group's new leader does not go on with
    /// the move the range directory records for it (a move whose driver lost the lead part-way):
    /// the learner it added is dropped as any a move cut short left, and the record stays.
    /// Caught by the simulator's moves (every record finished by the end of the run).
    MoveTargetNotResumed,
    /// Placement (`synod-partition`'s `moves.rs`, `leaders.rs`, `rebalance.rs`): a member the
    /// cluster removed that still leads a placed group drives the group's move off itself
    /// instead of handing the lead to a voter the cluster keeps, the leader plan counts it as
    /// a host (and hands the lead back to it), and it sheds the newcomer as a voter too many;
    /// its records never
    /// reach the range directory it no longer belongs to, so the newcomer never learns it was
    /// added and the move stalls. Caught by the rebalancing simulation's convergence check.
    DepartedLeaderKeepsGroups,
    /// OmniPaxos repair: installing the leader's snapshot ends a member's repair, so it
    /// promises again as an ordinary member holding the bottom round and only the decided
    /// prefix. A candidate whose log is of a higher round but shorter then counts that
    /// promise, keeps its own log and overwrites entries the snapshot held as decided.
    OmniSnapshotEndsRepair,
    /// Membership (replica layer): a leader counts a learner's progress reported before its
    /// last addition — the member was removed and added again, and its replica of the group
    /// dropped in between — so it promotes a member that has no state yet, which then takes
    /// its first state as a forgotten stay and cannot vote; two such voters stall a group.
    /// Caught by the OmniPaxos engine's test `a_learner_added_again_is_promoted_on_new_progress`
    /// (and by the simulator at seed 550,134 of moves under storage faults).
    PromoteOnStaleProgress,
    /// Partitioned (`synod-partition`'s `deletes.rs`): a delete over several groups is
    /// answered as soon as its first group applied its part, before the others did — a read
    /// after the answer still finds keys it deleted. Caught by the simulator's range-delete
    /// workload (`tests/groups.rs`).
    PartitionSplitDeleteAnswersEarly,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 83] = [
        PlantedBug::AckBeforeMajority,
        PlantedBug::StaleLinearizableRead,
        PlantedBug::IgnoreQuorumConnected,
        PlantedBug::ForgetAcceptedBallot,
        PlantedBug::AcceptWithoutQuorum,
        PlantedBug::PromiseWithoutHighestAccepted,
        PlantedBug::CasAcceptedWithoutStoring,
        PlantedBug::AckBeforeFsync,
        PlantedBug::VrLogByOpNumberOnly,
        PlantedBug::VrPrepareWithGap,
        PlantedBug::VrRecoveringAnswers,
        PlantedBug::VrCommitTooEarly,
        PlantedBug::VrSkipTruncateOnStateTransfer,
        PlantedBug::OmniAmnesicVotes,
        PlantedBug::TruncateAtCorruption,
        PlantedBug::CasRepairFromOnePeer,
        PlantedBug::WatchUndecidedEvent,
        PlantedBug::WatchResumeSkipsRevision,
        PlantedBug::CompactionDropsWatchedEvent,
        PlantedBug::LeaseExpiresWithoutExtension,
        PlantedBug::EpaxosRecoveryByBallot,
        PlantedBug::EpaxosFastQuorumTooSmall,
        PlantedBug::EpaxosEchoDeps,
        PlantedBug::EpaxosExecuteBeforeDeps,
        PlantedBug::EpaxosGetCommutesWithPut,
        PlantedBug::ApplyPastStopSign,
        PlantedBug::JoinWithoutState,
        PlantedBug::RemovedLeaderServes,
        PlantedBug::CasSkipRescanOnGrow,
        PlantedBug::CasJoinerNeverResumes,
        PlantedBug::DivergentApply,
        PlantedBug::TransferTargetKeepsOwnLog,
        PlantedBug::TxnElseBranchUnchecked,
        PlantedBug::PartitionBoundaryMisroute,
        PlantedBug::PartitionCheckpointSkipsGroups,
        PlantedBug::PartitionSplitServesMovedKeys,
        PlantedBug::PartitionSplitDropsSessions,
        PlantedBug::PartitionMergeFrozenServes,
        PlantedBug::PartitionMergeDropsSessions,
        PlantedBug::PartitionLeaseRenewsOneGroup,
        PlantedBug::PartitionWatchMoveEarly,
        PlantedBug::PartitionGroupsKeepRemovedMembers,
        PlantedBug::PartitionAbsorbRevisionBehind,
        PlantedBug::PartitionWatchFollowsOldMoves,
        PlantedBug::PartitionMergeHistoryShifted,
        PlantedBug::PartitionCompactOneGroup,
        PlantedBug::PartitionCloseWithoutSlots,
        PlantedBug::PartitionWatchMergedAhead,
        PlantedBug::PartitionSpanReadUnaligned,
        PlantedBug::PartitionMergeKeepsEndedLease,
        PlantedBug::PartitionSplitLeaseClocksUnrebased,
        PlantedBug::OmniSnapshotTakesLeaderRound,
        PlantedBug::PartitionKeepAliveOutgrownAnswer,
        PlantedBug::PartitionSplitNeverRecorded,
        PlantedBug::PartitionMemberRetryNotHeld,
        PlantedBug::PartitionSplitLearnerAsVoter,
        PlantedBug::PartitionAmnesicSplitStateless,
        PlantedBug::PartitionAmnesicJoinerStateless,
        PlantedBug::VrTransferToRecovering,
        PlantedBug::PartitionDirectoryRecordUnguarded,
        PlantedBug::PartitionDirectoryAnyGeneration,
        PlantedBug::PartitionRelayDropsConsistency,
        PlantedBug::PlacedSplitNotLearned,
        PlantedBug::PlacedSplitChildRepairsGuessed,
        PlantedBug::RemotePagesDropSplits,
        PlantedBug::RemoteWatchHistoryIgnoresCompaction,
        PlantedBug::RejoinReusesOrigins,
        PlantedBug::RejoinTakesStaleState,
        PlantedBug::RebalanceShedsPlacedVoter,
        PlantedBug::MoveRemovesBelowReplicas,
        PlantedBug::LeaderPlanRotationOnly,
        PlantedBug::MoveJoinerVotesAfresh,
        PlantedBug::NonVotingVoterKept,
        PlantedBug::RemovedReplicaLeavesAtOnce,
        PlantedBug::NonVotingVoterServes,
        PlantedBug::MoveRetriesFailedTarget,
        PlantedBug::WatchCancelledWhenGroupMovesAway,
        PlantedBug::DepartedLeaderKeepsGroups,
        PlantedBug::WatchProgressGoesBack,
        PlantedBug::MoveTargetNotResumed,
        PlantedBug::OmniSnapshotEndsRepair,
        PlantedBug::PromoteOnStaleProgress,
        PlantedBug::PartitionSplitDeleteAnswersEarly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::AckBeforeMajority => "ack-before-majority",
            PlantedBug::StaleLinearizableRead => "stale-linearizable-read",
            PlantedBug::IgnoreQuorumConnected => "ignore-quorum-connected",
            PlantedBug::ForgetAcceptedBallot => "forget-accepted-ballot",
            PlantedBug::AcceptWithoutQuorum => "accept-without-quorum",
            PlantedBug::PromiseWithoutHighestAccepted => "promise-without-highest-accepted",
            PlantedBug::CasAcceptedWithoutStoring => "cas-accepted-without-storing",
            PlantedBug::AckBeforeFsync => "ack-before-fsync",
            PlantedBug::VrLogByOpNumberOnly => "vr-log-by-op-number-only",
            PlantedBug::VrPrepareWithGap => "vr-prepare-with-gap",
            PlantedBug::VrRecoveringAnswers => "vr-recovering-answers",
            PlantedBug::VrCommitTooEarly => "vr-commit-too-early",
            PlantedBug::VrSkipTruncateOnStateTransfer => "vr-skip-truncate-on-state-transfer",
            PlantedBug::OmniAmnesicVotes => "omni-amnesic-votes",
            PlantedBug::TruncateAtCorruption => "truncate-at-corruption",
            PlantedBug::CasRepairFromOnePeer => "cas-repair-from-one-peer",
            PlantedBug::WatchUndecidedEvent => "watch-undecided-event",
            PlantedBug::WatchResumeSkipsRevision => "watch-resume-skips-revision",
            PlantedBug::CompactionDropsWatchedEvent => "compaction-drops-watched-event",
            PlantedBug::LeaseExpiresWithoutExtension => "lease-expires-without-extension",
            PlantedBug::EpaxosRecoveryByBallot => "epaxos-recovery-by-ballot",
            PlantedBug::EpaxosFastQuorumTooSmall => "epaxos-fast-quorum-too-small",
            PlantedBug::EpaxosEchoDeps => "epaxos-echo-deps",
            PlantedBug::EpaxosExecuteBeforeDeps => "epaxos-execute-before-deps",
            PlantedBug::EpaxosGetCommutesWithPut => "epaxos-get-commutes-with-put",
            PlantedBug::ApplyPastStopSign => "apply-past-stop-sign",
            PlantedBug::JoinWithoutState => "join-without-state",
            PlantedBug::RemovedLeaderServes => "removed-leader-serves",
            PlantedBug::CasSkipRescanOnGrow => "cas-skip-rescan-on-grow",
            PlantedBug::CasJoinerNeverResumes => "cas-joiner-never-resumes",
            PlantedBug::DivergentApply => "divergent-apply",
            PlantedBug::TransferTargetKeepsOwnLog => "transfer-target-keeps-own-log",
            PlantedBug::TxnElseBranchUnchecked => "txn-else-branch-unchecked",
            PlantedBug::PartitionBoundaryMisroute => "partition-boundary-misroute",
            PlantedBug::PartitionCheckpointSkipsGroups => "partition-checkpoint-skips-groups",
            PlantedBug::PartitionSplitServesMovedKeys => "partition-split-serves-moved-keys",
            PlantedBug::PartitionSplitDropsSessions => "partition-split-drops-sessions",
            PlantedBug::PartitionMergeFrozenServes => "partition-merge-frozen-serves",
            PlantedBug::PartitionMergeDropsSessions => "partition-merge-drops-sessions",
            PlantedBug::PartitionLeaseRenewsOneGroup => "partition-lease-renews-one-group",
            PlantedBug::PartitionWatchMoveEarly => "partition-watch-move-early",
            PlantedBug::PartitionGroupsKeepRemovedMembers => {
                "partition-groups-keep-removed-members"
            }
            PlantedBug::PartitionAbsorbRevisionBehind => "partition-absorb-revision-behind",
            PlantedBug::PartitionWatchFollowsOldMoves => "partition-watch-follows-old-moves",
            PlantedBug::PartitionMergeHistoryShifted => "partition-merge-history-shifted",
            PlantedBug::PartitionCompactOneGroup => "partition-compact-one-group",
            PlantedBug::PartitionCloseWithoutSlots => "partition-close-without-slots",
            PlantedBug::PartitionWatchMergedAhead => "partition-watch-merged-ahead",
            PlantedBug::PartitionSpanReadUnaligned => "partition-span-read-unaligned",
            PlantedBug::PartitionMergeKeepsEndedLease => "partition-merge-keeps-ended-lease",
            PlantedBug::PartitionSplitLeaseClocksUnrebased => {
                "partition-split-lease-clocks-unrebased"
            }
            PlantedBug::OmniSnapshotTakesLeaderRound => "omni-snapshot-takes-leader-round",
            PlantedBug::PartitionKeepAliveOutgrownAnswer => "partition-keep-alive-outgrown-answer",
            PlantedBug::PartitionSplitNeverRecorded => "partition-split-never-recorded",
            PlantedBug::PartitionMemberRetryNotHeld => "partition-member-retry-not-held",
            PlantedBug::PartitionSplitLearnerAsVoter => "partition-split-learner-as-voter",
            PlantedBug::PartitionAmnesicSplitStateless => "partition-amnesic-split-stateless",
            PlantedBug::PartitionAmnesicJoinerStateless => "partition-amnesic-joiner-stateless",
            PlantedBug::VrTransferToRecovering => "vr-transfer-to-recovering",
            PlantedBug::PartitionDirectoryRecordUnguarded => "partition-directory-record-unguarded",
            PlantedBug::PartitionDirectoryAnyGeneration => "partition-directory-any-generation",
            PlantedBug::PartitionRelayDropsConsistency => "partition-relay-drops-consistency",
            PlantedBug::PlacedSplitNotLearned => "placed-split-not-learned",
            PlantedBug::PlacedSplitChildRepairsGuessed => "placed-split-child-repairs-guessed",
            PlantedBug::RemotePagesDropSplits => "remote-pages-drop-splits",
            PlantedBug::RemoteWatchHistoryIgnoresCompaction => {
                "remote-watch-history-ignores-compaction"
            }
            PlantedBug::RejoinReusesOrigins => "rejoin-reuses-origins",
            PlantedBug::RejoinTakesStaleState => "rejoin-takes-stale-state",
            PlantedBug::RebalanceShedsPlacedVoter => "rebalance-sheds-placed-voter",
            PlantedBug::MoveRemovesBelowReplicas => "move-removes-below-replicas",
            PlantedBug::LeaderPlanRotationOnly => "leader-plan-rotation-only",
            PlantedBug::MoveJoinerVotesAfresh => "move-joiner-votes-afresh",
            PlantedBug::NonVotingVoterKept => "non-voting-voter-kept",
            PlantedBug::RemovedReplicaLeavesAtOnce => "removed-replica-leaves-at-once",
            PlantedBug::NonVotingVoterServes => "non-voting-voter-serves",
            PlantedBug::MoveRetriesFailedTarget => "move-retries-failed-target",
            PlantedBug::WatchCancelledWhenGroupMovesAway => "watch-cancelled-when-group-moves-away",
            PlantedBug::DepartedLeaderKeepsGroups => "departed-leader-keeps-groups",
            PlantedBug::WatchProgressGoesBack => "watch-progress-goes-back",
            PlantedBug::MoveTargetNotResumed => "move-target-not-resumed",
            PlantedBug::OmniSnapshotEndsRepair => "omni-snapshot-ends-repair",
            PlantedBug::PromoteOnStaleProgress => "promote-on-stale-progress",
            PlantedBug::PartitionSplitDeleteAnswersEarly => "partition-split-delete-answers-early",
        }
    }

    pub fn parse(s: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|b| b.name() == s)
    }
}

/// Read consistency, per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read was submitted.
    #[default]
    Linearizable,
    /// May be stale, but never goes back in time at one node (etcd's "serializable").
    Sequential,
}

/// A client request as the engine sees it (already validated by the API layer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub id: RequestId,
    /// Every seq of this client below this one has been answered (see [`crate::kv::ClientTable`]).
    pub first_unacked: u64,
    pub op: Op,
    /// Only meaningful for reads.
    pub consistency: Consistency,
}

/// The one reply to one [`ClientRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReply {
    pub id: RequestId,
    pub result: Result<Response, EngineError>,
}

/// Why a request was not executed. Whether it *may* have taken effect matters to clients and
/// to the history: only [`EngineError::Timeout`] is "outcome unknown".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineError {
    /// This engine cannot execute this kind of request (e.g. a range scan on CASPaxos).
    /// Definitely not applied.
    Unsupported { engine: String, what: String },
    /// Too many requests pending at this node. Definitely not applied; retry later.
    Busy,
    /// No reply within `request_timeout_ticks`: the write may or may not have been applied.
    Timeout,
    /// The request's seq is below its client's acknowledged floor or out of its window.
    /// Definitely not applied (again).
    SessionExpired,
    /// Malformed beyond what the API layer validates. Definitely not applied.
    InvalidRequest(String),
    /// A read, watch or compaction named a revision below the store's compaction revision
    /// (etcd's ErrCompacted). Definitely not applied.
    Compacted { compact_revision: u64 },
    /// A read, watch or compaction named a revision above the store's current one (etcd's
    /// ErrFutureRev). Definitely not applied.
    FutureRevision { revision: u64 },
    /// The lease named does not exist (never granted, revoked or expired). Definitely not
    /// applied.
    LeaseNotFound,
    /// A grant named a lease id already in use. Definitely not applied.
    LeaseExists,
    /// A grant asked for a TTL above [`crate::kv::LEASE_TTL_MAX_SECONDS`]. Definitely not
    /// applied.
    LeaseTtlTooLarge,
    /// A put with `ignore_value` or `ignore_lease` named a key that does not exist.
    /// Definitely not applied.
    KeyNotFound,
    /// A membership change refused where it was applied (etcd's message, e.g. "etcdserver:
    /// member not found"); nothing changed.
    Membership(String),
    /// An auth change refused where it was applied, or a request refused by the permission
    /// check (etcd's auth errors); nothing changed.
    Auth(crate::auth::AuthError),
    /// Partitioned mode: the request names keys outside the range of the group it reached —
    /// the range was split (or the request was routed by a stale layout). Definitely not
    /// applied there; the partitioned engine routes it again, and a client that sees it may
    /// retry.
    WrongGroup {
        start: crate::kv::Key,
        end: crate::kv::Key,
    },
}

/// The text of [`EngineError::WrongGroup`] (retryable).
pub const ERR_WRONG_GROUP: &str = "synod: the key range moved to another group (a split); retry";

/// etcd's text for [`EngineError::Compacted`]; clients match it exactly.
pub const ERR_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// etcd's text for [`EngineError::FutureRevision`]; clients match it exactly.
pub const ERR_FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
/// etcd's text for [`EngineError::LeaseNotFound`].
pub const ERR_LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
/// etcd's text for [`EngineError::LeaseExists`].
pub const ERR_LEASE_EXISTS: &str = "etcdserver: lease already exists";
/// etcd's text for [`EngineError::LeaseTtlTooLarge`].
pub const ERR_LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
/// etcd's text for [`EngineError::KeyNotFound`].
pub const ERR_KEY_NOT_FOUND: &str = "etcdserver: key not found";

impl EngineError {
    /// True when the request definitely had no effect.
    pub fn definitely_not_applied(&self) -> bool {
        !matches!(self, EngineError::Timeout)
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Unsupported { engine, what } => {
                write!(f, "{what} not supported by the {engine} engine")
            }
            EngineError::Busy => write!(f, "too many pending requests at this node; retry"),
            EngineError::Timeout => {
                write!(f, "timed out; the request may or may not have been applied")
            }
            EngineError::SessionExpired => {
                write!(f, "request already acknowledged or session expired")
            }
            EngineError::InvalidRequest(s) => write!(f, "invalid request: {s}"),
            EngineError::Compacted { .. } => f.write_str(ERR_COMPACTED),
            EngineError::FutureRevision { .. } => f.write_str(ERR_FUTURE_REV),
            EngineError::LeaseNotFound => f.write_str(ERR_LEASE_NOT_FOUND),
            EngineError::LeaseExists => f.write_str(ERR_LEASE_EXISTS),
            EngineError::LeaseTtlTooLarge => f.write_str(ERR_LEASE_TTL_TOO_LARGE),
            EngineError::KeyNotFound => f.write_str(ERR_KEY_NOT_FOUND),
            EngineError::Membership(m) => f.write_str(m),
            EngineError::Auth(e) => f.write_str(e.message()),
            EngineError::WrongGroup { .. } => f.write_str(ERR_WRONG_GROUP),
        }
    }
}

impl std::error::Error for EngineError {}

/// Protocol state for APIs, metrics and the simulator's reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EngineStatus {
    /// The leader this node believes in, if the protocol has one.
    pub leader: Option<NodeId>,
    /// Ballot number / view-number / highest ballot seen: goes up with each election.
    pub term: u64,
    /// Highest log position known decided (0 for log-less engines).
    pub decided_index: u64,
    /// Highest log position applied to the KV store.
    pub applied_index: u64,
    /// The KV store's revision (0 where there is none).
    pub revision: u64,
    /// The KV store's compaction revision: history below it is gone (0 = never compacted).
    pub compact_revision: u64,
    /// [`crate::kv::KvStore::digest`] at `applied_index`: replicas with the same applied index
    /// must report the same digest. `None` where replicas have no common applied state.
    pub applied_digest: Option<u64>,
    /// For engines with no applied index (CASPaxos): an order-independent digest of the whole
    /// replicated state this replica holds (every key's value and version). Replicas differ
    /// legitimately while writes are in flight or a replica missed an accept; once every key has
    /// been read through every replica after the last write, with all replicas up and the network
    /// whole, they must all report the same value — the simulator checks exactly that.
    /// `None` for engines that report `applied_digest` instead.
    pub state_digest: Option<u64>,
    /// Requests submitted here and not yet answered.
    pub pending_requests: usize,
    /// Keys in the local state machine.
    pub keys: u64,
    /// Bytes the state machine's data takes, estimated (live keys and retained history — see
    /// `KvStore::bytes_in_use`): etcd's dbSizeInUse. `None` when the engine keeps no such
    /// count (CASPaxos, whose registers are not a `KvStore`).
    pub bytes_in_use: Option<u64>,
    /// Live leases in the local state machine (0 for engines without leases).
    pub leases: u64,
    /// Free-form role: "leader", "follower", "candidate", "proposer", ….
    pub role: String,
    /// Protocols with a fast path (EPaxos): commands this replica led that committed in one
    /// round trip, and those that needed the slow path. 0 elsewhere.
    pub fast_path_commits: u64,
    pub slow_path_commits: u64,
    /// The configuration this replica applied last (empty for engines without one).
    pub configuration: crate::membership::Configuration,
    /// The auth state this replica applied last (default for engines without one). Shared,
    /// not copied: it changes rarely and the status is published after every batch.
    #[serde(skip)]
    pub auth: std::sync::Arc<crate::auth::AuthState>,
    /// Learners' applied indexes as this replica last heard them (voters only).
    pub learner_applied: Vec<(NodeId, u64)>,
    /// Partitioned mode: one entry per consensus group hosted here, in key order. Empty for
    /// a single-group engine.
    pub groups: Vec<GroupStatus>,
    /// Partitioned mode: members some group still (or already) has that `configuration`
    /// (the first group's, the cluster's) does not list — while a membership change spreads
    /// through the groups. The node keeps reaching them.
    #[serde(default)]
    pub other_members: Vec<crate::membership::Member>,
    /// Partitioned mode with a range directory: the directory as this member's replica of
    /// the meta group holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryStatus>,
    /// Partitioned mode: groups this member should host and could not start (a split-off
    /// group whose first record did not recover). Always a bug; the member keeps serving its
    /// other groups, the failed group's peers keep its quorum, and health reports it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_groups: Vec<GroupFailure>,
}

/// A group a partitioned member could not start, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GroupFailure {
    pub group: u64,
    pub error: String,
}

/// The range directory as one member's replica of the meta group holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DirectoryStatus {
    /// The meta group's own status (its `start` and `end` are empty: it owns no user key).
    pub meta: GroupStatus,
    /// Each range's entry (first key, group, generation, configuration and voters), in key
    /// order, as recorded; an entry naming [`DirectoryEntry::NOBODY`] ends the range before it
    /// where the next range's owner has not recorded yet.
    pub entries: Vec<DirectoryEntry>,
    /// The meta group's applied index `entries` were read at (they are read again after a
    /// batch that applied something, so may trail `meta.applied_index` within a batch).
    #[serde(default)]
    pub copied_at: u64,
    /// Groups live on some members only (placement): this member's groups are some of the
    /// entries, not all.
    #[serde(default)]
    pub placed: bool,
    /// Placement: every range as this member's engine places it (first key, group and hosts
    /// in `members`; no generation), whether or not the directory recorded it yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<DirectoryEntry>,
    /// Placement: the moves (`range move`) the directory records and no leader has finished
    /// or given up yet, as this member's copy holds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<MoveTarget>,
}

/// A move of a placed group's replica recorded in the range directory: the group's leader
/// (whoever it is by then) moves it from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MoveTarget {
    pub group: u64,
    pub from: NodeId,
    pub to: NodeId,
    /// The group's configuration version when the move was recorded: a move takes three
    /// changes, so a record from before more than that is stale.
    pub config_version: u64,
}

/// One range of the directory: the range from `start` to the next entry's is `group`'s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DirectoryEntry {
    pub start: crate::kv::Key,
    /// [`DirectoryEntry::NOBODY`] where the directory knows no owner yet.
    pub group: u64,
    /// The owner's range generation when it recorded this (`RangeState::generation`): for
    /// any one key it only grows, which is how a stale record is told from a new one.
    #[serde(default)]
    pub generation: u64,
    /// The owner's configuration version when it recorded this (`Configuration::version`):
    /// of two records of one group at one generation, the later configuration's stands.
    #[serde(default)]
    pub config_version: u64,
    /// The owner's voters then: where its keys are served.
    #[serde(default)]
    pub members: Vec<NodeId>,
    /// The owner's learners then (placement: a member a move is adding), so that a member
    /// knows it was added to a group before it is a voter of it.
    #[serde(default)]
    pub learners: Vec<NodeId>,
}

impl DirectoryEntry {
    /// The group of an entry that only says where the range before it ends (recorded by
    /// that range's group, not knowing the next range's owner yet), or that does not decode.
    pub const NOBODY: u64 = u64::MAX;

    /// The entry for the range from `start`: `group`'s at `generation` (configuration 0, no
    /// members named).
    pub fn at(start: &str, group: u64, generation: u64) -> Self {
        DirectoryEntry {
            start: start.as_bytes().to_vec(),
            group,
            generation,
            ..DirectoryEntry::default()
        }
    }
}

/// One revision stream's newly applied revisions ([`Engine::take_group_watch_events`]).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GroupEvents {
    /// The group (0 for an unpartitioned engine).
    pub group: u64,
    /// Oldest first, as [`Engine::take_watch_events`] gives them.
    pub events: Vec<Arc<RevisionEvents>>,
    /// Changes of the keys it covers, in the order they happened.
    pub moves: Vec<WatchMove>,
}

/// A change of the keys a group's revision stream covers, published no later than the first
/// revision after `through`, so a watcher that has read past `through` is sure to know of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchMove {
    /// The group's revision where the change took effect.
    pub through: u64,
    pub range: crate::kv::KeyRange,
    pub kind: MoveKind,
}

/// What happened to a [`WatchMove`]'s keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveKind {
    /// They left in a split, as the group's replica applied it (the partitioned engine turns
    /// it into [`MoveKind::Group`]).
    Split(crate::kv::SplitMark),
    /// They left for this group, whose revisions go on from `through` (a split's new group
    /// starts at its parent's revision).
    Group(u64),
    /// They left, with no stream to follow them on: the group lost them by a snapshot install
    /// or a merge this member did not apply itself, at a revision up to `through` it did not
    /// see. Watchers of them are cancelled at once (their stream may already lack the keys'
    /// events), to watch again from their next revision.
    Gone,
    /// The group froze for a merge after `through`: the group below takes its keys in with an
    /// absorb (`Absorbed { from }` naming this group, in that group's stream), and its
    /// watchers go on there after the absorb.
    Frozen,
    /// They arrived from merged group `from`: this group's revision jumped from `before` to
    /// `through` (at least the frozen group's last revision) with no event of its other keys
    /// in between.
    Absorbed { before: u64, from: u64 },
    /// They arrived with a snapshot that showed this group larger than before (it absorbed
    /// them where this member did not see it): nothing to skip, nothing to follow.
    Arrived,
    /// The group itself left this member after `through` (placement: it moved to other
    /// members): the keys are still its, and its stream goes on at its hosts — a watcher
    /// here reads on through a remote hub (`synod_node::watch::remote`) from where it was.
    Away,
}

/// One consensus group of a partitioned engine, as this replica sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GroupStatus {
    /// `0..n` for the configured groups; a hash with the top bit set for a group split off at
    /// run time (see the `synod-partition` crate).
    pub group: u64,
    /// The group's keys are `[start, end)`; an empty `end` means "to the end of the keyspace".
    pub start: crate::kv::Key,
    pub end: crate::kv::Key,
    pub leader: Option<NodeId>,
    /// Where the partitioned engine tries to keep this group's leader, so leaders spread.
    pub preferred_leader: Option<NodeId>,
    pub term: u64,
    pub applied_index: u64,
    /// The group's [`EngineStatus::applied_digest`] at `applied_index`.
    pub applied_digest: Option<u64>,
    /// The group's own revision: revisions are per group in partitioned mode.
    pub revision: u64,
    /// The group's compaction revision (its watch history starts there).
    pub compact_revision: u64,
    pub keys: u64,
    pub role: String,
    /// The group's own configuration: its voters and learners. They follow the first
    /// group's (the cluster's) and differ from it only while a membership change spreads.
    #[serde(default)]
    pub voters: Vec<NodeId>,
    #[serde(default)]
    pub learners: Vec<NodeId>,
}

/// Everything an engine produced since the last [`Engine::ready`]. See the module docs for why
/// messages and replies are reachable only through [`Ready::persist`].
#[derive(Debug)]
#[must_use = "a Ready must be persisted and its outbox sent"]
pub struct Ready<M, R> {
    /// May leave before `records` are durable (see the module docs).
    early: Vec<(NodeId, M)>,
    records: Vec<R>,
    messages: Vec<(NodeId, M)>,
    replies: Vec<ClientReply>,
}

impl<M, R> Default for Ready<M, R> {
    fn default() -> Self {
        Ready::new(Vec::new(), Vec::new(), Vec::new())
    }
}

/// What may leave once a [`Ready`]'s records are durable.
#[derive(Debug)]
pub struct Outbox<M> {
    pub messages: Vec<(NodeId, M)>,
    pub replies: Vec<ClientReply>,
}

impl<M, R> Ready<M, R> {
    pub fn new(records: Vec<R>, messages: Vec<(NodeId, M)>, replies: Vec<ClientReply>) -> Self {
        Ready {
            early: Vec::new(),
            records,
            messages,
            replies,
        }
    }

    /// A batch with early messages (see the module docs).
    pub fn with_early(mut self, early: Vec<(NodeId, M)>) -> Self {
        self.early = early;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.early.is_empty()
            && self.records.is_empty()
            && self.messages.is_empty()
            && self.replies.is_empty()
    }

    /// The messages that may be sent before the records are durable. Taking them is optional:
    /// whatever is not taken leaves with the outbox, ahead of the other messages.
    pub fn take_early(&mut self) -> Vec<(NodeId, M)> {
        std::mem::take(&mut self.early)
    }

    pub fn records(&self) -> &[R] {
        &self.records
    }

    /// Counts for metrics and traces: (records, messages incl. early, replies).
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.records.len(),
            self.early.len() + self.messages.len(),
            self.replies.len(),
        )
    }

    /// Writes and syncs the records with `write_and_sync`, then releases the outbox. If the
    /// write fails nothing may be sent: the error comes back and the outbox is dropped.
    /// `write_and_sync` is called even for an empty record list, so a caller that pipelines
    /// syncs can still order this batch after the previous one.
    pub fn persist<E>(
        self,
        write_and_sync: impl FnOnce(&[R]) -> Result<(), E>,
    ) -> Result<Outbox<M>, E> {
        write_and_sync(&self.records)?;
        Ok(self.into_outbox().1)
    }

    /// Takes the batch apart: (early messages, records, messages, replies). Only for an
    /// engine that wraps other engines (the partitioned engine): it puts the parts into a
    /// [`Ready`] of its own, whose [`Ready::persist`] then keeps the order for all of them.
    #[allow(clippy::type_complexity)]
    pub fn into_parts(self) -> (Vec<(NodeId, M)>, Vec<R>, Vec<(NodeId, M)>, Vec<ClientReply>) {
        (self.early, self.records, self.messages, self.replies)
    }

    /// Test-only escape hatch used by the planted `AckBeforeFsync` bug: the outbox *before*
    /// the records are durable, and the records to persist afterwards.
    pub fn split_unsafely_for_planted_bug(self) -> (Vec<R>, Outbox<M>) {
        self.into_outbox()
    }

    fn into_outbox(self) -> (Vec<R>, Outbox<M>) {
        let mut messages = self.early;
        messages.extend(self.messages);
        (
            self.records,
            Outbox {
                messages,
                replies: self.replies,
            },
        )
    }
}

/// Accumulates outputs inside an engine between calls to [`Engine::ready`]. Engines push
/// here; `take` builds the [`Ready`].
#[derive(Debug)]
pub struct OutputBuffer<M, R> {
    /// Messages that may leave before this batch's records are durable (see the module docs).
    pub early: Vec<(NodeId, M)>,
    pub records: Vec<R>,
    pub messages: Vec<(NodeId, M)>,
    pub replies: Vec<ClientReply>,
}

impl<M, R> Default for OutputBuffer<M, R> {
    fn default() -> Self {
        OutputBuffer {
            early: Vec::new(),
            records: Vec::new(),
            messages: Vec::new(),
            replies: Vec::new(),
        }
    }
}

impl<M, R> OutputBuffer<M, R> {
    pub fn take(&mut self) -> Ready<M, R> {
        Ready::new(
            std::mem::take(&mut self.records),
            std::mem::take(&mut self.messages),
            std::mem::take(&mut self.replies),
        )
        .with_early(std::mem::take(&mut self.early))
    }
}
