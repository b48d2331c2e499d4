//! EPaxos's vocabulary (SOSP'13 §4): instances R.i, ballots, the attributes (seq, deps) a
//! command is committed with, the per-instance state each replica keeps, the wire messages
//! and the durable records.

use serde::{Deserialize, Serialize};
use synod_core::kv::Footprint;
use synod_core::{ClientId, Command, NodeId};

/// Instance `replica.slot` (the paper's R.i): the `slot`-th instance in `replica`'s own
/// instance space. Slots start at 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId {
    pub replica: NodeId,
    pub slot: u64,
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.replica, self.slot)
    }
}

/// A ballot (§4.3: epoch.b.R without reconfiguration epochs): compared by `n`, then by the
/// replica that owns it. Every instance starts at its command leader's initial ballot
/// `(0, leader)`; recovery uses `(n + 1, recoverer)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ballot {
    pub n: u64,
    pub node: NodeId,
}

impl Ballot {
    /// The instance's initial ballot: the only one in which the fast path may commit.
    pub fn initial(id: InstanceId) -> Ballot {
        Ballot {
            n: 0,
            node: id.replica,
        }
    }

    /// Below every real ballot: "never promised anything".
    pub const ZERO: Ballot = Ballot { n: 0, node: 0 };
}

/// How far an instance got at this replica (§4.3). "Executed" is kept apart, in the
/// execution watermarks, because it is local and not replicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    /// Only a promise (Prepare) is known: no command yet.
    None,
    PreAccepted,
    Accepted,
    Committed,
}

/// The attributes a command is ordered by: `seq` breaks ties inside a strongly connected
/// component, `deps[k]` is the highest slot of member `k` (by position in the sorted member
/// list) this instance depends on. A dependency on `R.j` covers every instance `R.i`, `i ≤ j`,
/// that interferes (see `execute`), so one number per replica suffices.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Attrs {
    pub seq: u64,
    pub deps: Vec<u64>,
}

impl Attrs {
    /// The union of two dependency sets and the larger seq (the slow path's merge, §4.3).
    pub fn merge(&mut self, other: &Attrs) {
        self.seq = self.seq.max(other.seq);
        for (d, o) in self.deps.iter_mut().zip(&other.deps) {
            *d = (*d).max(*o);
        }
    }
}

/// What an instance holds: a batch of client commands, or nothing (a no-op chosen by
/// recovery when no replica had seen the command).
pub type Batch = Vec<Command>;

/// One instance as this replica knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub status: Status,
    /// The highest ballot this replica promised for the instance (the paper's `ballot`).
    pub bal: Ballot,
    /// The ballot in which `cmds` / `attrs` / `status` were last set (Sutra's `vbal`):
    /// recovery orders replies by it, never by `bal`.
    pub vbal: Ballot,
    pub cmds: Batch,
    pub attrs: Attrs,
    /// The attributes equal the command leader's own ones in the initial ballot (this
    /// replica added no dependency): what recovery counts as a possible fast-path vote.
    pub unchanged: bool,
    /// The union of the commands' key footprints (not stored: recomputed).
    #[serde(skip)]
    pub footprint: Footprint,
}

impl Instance {
    /// An instance whose command and attributes were set in ballot `bal` (so `vbal = bal`).
    pub fn at(status: Status, bal: Ballot, cmds: Batch, attrs: Attrs, unchanged: bool) -> Instance {
        Instance {
            status,
            bal,
            vbal: bal,
            cmds,
            attrs,
            unchanged,
            footprint: Footprint::default(),
        }
    }

    pub fn promised(bal: Ballot) -> Instance {
        Instance {
            status: Status::None,
            bal,
            vbal: Ballot::ZERO,
            cmds: Vec::new(),
            attrs: Attrs::default(),
            unchanged: false,
            footprint: Footprint::default(),
        }
    }
}

/// The footprint of a batch: the union of its commands' footprints (empty for a no-op).
pub fn batch_footprint(cmds: &[Command]) -> Footprint {
    let mut f = Footprint::default();
    for c in cmds {
        let g = c.op.footprint();
        if c.id.client != ClientId::NONE && !c.op.is_read() {
            f.sessions.push(c.id.client.0);
        }
        f.global |= g.global;
        f.reads.extend(g.reads);
        f.writes.extend(g.writes);
    }
    f.reads.sort();
    f.reads.dedup();
    f.writes.sort();
    f.writes.dedup();
    f.sessions.sort_unstable();
    f.sessions.dedup();
    f
}

/// An acceptor's state for an instance, as reported to a recoverer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    pub status: Status,
    pub bal: Ballot,
    pub vbal: Ballot,
    pub cmds: Batch,
    pub attrs: Attrs,
    pub unchanged: bool,
}

/// The wire messages (§4.3, Figures 2 and 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1: the coordinator's command and attributes; the acceptor merges its own.
    PreAccept {
        id: InstanceId,
        bal: Ballot,
        cmds: Batch,
        attrs: Attrs,
    },
    /// `ok = false`: the acceptor promised a higher ballot, `bal`.
    PreAcceptReply {
        id: InstanceId,
        bal: Ballot,
        ok: bool,
        attrs: Attrs,
    },
    /// Phase 2 (Paxos-Accept) of the slow path and of recovery.
    Accept {
        id: InstanceId,
        bal: Ballot,
        cmds: Batch,
        attrs: Attrs,
    },
    AcceptReply {
        id: InstanceId,
        bal: Ballot,
        ok: bool,
    },
    /// The instance is committed. `cmds` is `None` when the receiver already holds them at
    /// the committing ballot (it answered this coordinator's PreAccept or Accept).
    Commit {
        id: InstanceId,
        /// The ballot the commands were chosen in: a receiver without `cmds` uses its own
        /// only if it holds them at exactly this ballot.
        bal: Ballot,
        cmds: Option<Batch>,
        attrs: Attrs,
    },
    /// Explicit Prepare (recovery, §4.4) in ballot `bal`.
    Prepare { id: InstanceId, bal: Ballot },
    /// `state` is `None` when the acceptor knows nothing of the instance.
    PrepareReply {
        id: InstanceId,
        bal: Ballot,
        ok: bool,
        state: Option<Reported>,
    },
    /// Catch-up: send me the commits you hold of `replica`'s slots `lo..=hi`. No ballot is
    /// involved, so it is safe at any time; a member that missed commits (a partition, lost
    /// messages) fetches them in bulk instead of recovering instances one by one.
    Fetch { replica: NodeId, lo: u64, hi: u64 },
    /// Garbage collection: the sender has executed every instance `R.1..=upto[k]` of member
    /// `k`. Instances every member executed are dropped everywhere.
    Executed {
        upto: Vec<u64>,
        /// How many members (itself included) the sender heard from lately: a member that
        /// cannot reach a majority hands new requests to one that can.
        reach: u32,
    },
}

/// Durable records. Replayed in order on recovery; a checkpoint (the replica layer's)
/// subsumes everything before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// The whole state of an instance (after a PreAccept, an Accept, or a commit that brought
    /// new commands).
    Instance { id: InstanceId, inst: Box<Instance> },
    /// A promise (Prepare) for an instance.
    Promise { id: InstanceId, bal: Ballot },
    /// The instance is committed with `attrs` and the commands already recorded for it.
    Commit { id: InstanceId, attrs: Attrs },
    /// These instances executed here, in this order. Replay repeats exactly this order:
    /// once every member executed an instance, later commands no longer depend on it
    /// (garbage collection), so re-running the dependency search after a restart could
    /// order them differently.
    Executed { ids: Vec<InstanceId> },
}

/// The protocol's durable state at a checkpoint: every instance not yet executed by every
/// member, and what this replica had executed when its KV state was captured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Checkpoint {
    /// The execution-order position the replica layer's state sits at.
    pub log_idx: u64,
    /// Per member position: every slot up to this is executed here.
    pub exec_upto: Vec<u64>,
    /// Per member position: executed slots above `exec_upto`.
    pub exec_above: Vec<Vec<u64>>,
    /// Per member position: slots at or below this are executed by every member and dropped.
    pub gc_floor: Vec<u64>,
    /// This replica's next own slot.
    pub next_slot: u64,
    /// The retained instances.
    pub instances: Vec<(InstanceId, Instance)>,
}
