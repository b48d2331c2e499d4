//! Every message exchanged between OmniPaxos servers: Ballot Leader Election heartbeats
//! (paper §5), Sequence Paxos (§4: Prepare/Promise with log synchronisation, AcceptSync,
//! AcceptDecide/Accepted, PrepareReq), snapshot transfer (see `snapshot.rs`), the read-index
//! confirmation round (see `reads.rs`) and the forwarding of client commands from followers to
//! the leader.

use crate::ballot::Ballot;
use serde::{Deserialize, Serialize};
use synod_core::kv::Op;
use synod_core::{NodeId, RequestId};

/// Where a log entry came from: the server whose pending table waits for it, in which
/// incarnation (bumped on every restart, so sequence numbers are never reused), and its
/// sequence number there. The leader deduplicates re-forwarded commands by origin, which is
/// what makes re-forwarding safe even for requests without a client session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    pub node: NodeId,
    pub incarnation: u64,
    pub seq: u64,
}

/// One replicated log entry: a client write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: RequestId,
    pub first_unacked: u64,
    pub op: Op,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Ble(BleMessage),
    Paxos(PaxosMessage),
    Client(ClientMessage),
}

/// Ballot Leader Election (paper §5, Algorithm 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BleMessage {
    HeartbeatRequest {
        round: u64,
    },
    HeartbeatReply {
        round: u64,
        /// The replier's own current ballot (not its leader's).
        ballot: Ballot,
        /// Whether the replier heard from a majority (itself included) in its last round.
        quorum_connected: bool,
    },
}

/// Sequence Paxos (paper §4) plus the read-index quorum round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaxosMessage {
    /// Leader → all: promise not to accept lower ballots; the leader's log summary lets the
    /// follower send only the suffix the leader may be missing.
    Prepare {
        n: Ballot,
        decided_idx: u64,
        accepted_round: Ballot,
        log_len: u64,
    },
    /// Follower → leader. `suffix` is the follower's log from `suffix_start`.
    Promise {
        n: Ballot,
        accepted_round: Ballot,
        log_len: u64,
        decided_idx: u64,
        suffix_start: u64,
        suffix: Vec<Entry>,
    },
    /// Leader → follower after the Prepare phase: truncate the log at `sync_idx` and append
    /// `suffix`; the follower's log is then a prefix of the leader's.
    AcceptSync {
        n: Ballot,
        sync_idx: u64,
        suffix: Vec<Entry>,
        decided_idx: u64,
    },
    /// Leader → follower: `entries` belong at log position `start_idx`; everything below
    /// `decided_idx` is decided. With no entries it is the leader's heartbeat, which also lets
    /// a follower that lost a message notice the gap.
    AcceptDecide {
        n: Ballot,
        start_idx: u64,
        entries: Vec<Entry>,
        decided_idx: u64,
    },
    /// Follower → leader: my log holds `accepted_idx` entries accepted in round `n`.
    Accepted { n: Ballot, accepted_idx: u64 },
    /// Follower → leader: I saw ballot `n` (higher than my promise, or with a gap): prepare me.
    PrepareReq { n: Ballot },
    /// Snapshot transfer (see `snapshot.rs`): bytes `[offset, offset + data.len())` of the
    /// serialised KV store at applied index `snapshot_idx` (the decided prefix
    /// `[0, snapshot_idx)`), sent in ballot `n`. Leader → lagging follower whose entries the
    /// leader compacted, or promising follower → candidate whose log lacks entries the follower
    /// compacted.
    SnapshotChunk {
        n: Ballot,
        snapshot_idx: u64,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// Receiver → sender: I hold the first `offset` bytes of that snapshot. `offset ==
    /// total_bytes` means installed (or no longer needed): the transfer is over.
    SnapshotAck {
        n: Ballot,
        snapshot_idx: u64,
        offset: u64,
    },
    /// Leader → all: am I still your leader? (read-index round `round`).
    ReadConfirm { n: Ballot, round: u64 },
    /// Follower → leader: yes, my promised ballot is still `n`.
    ReadConfirmAck { n: Ballot, round: u64 },
}

/// Client traffic between servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// Follower → leader: please propose these writes.
    Forward { entries: Vec<Entry> },
    /// Follower → leader: give me a confirmed read index for these pending reads.
    ReadIndexReq { incarnation: u64, seqs: Vec<u64> },
    /// Leader → follower: serve these reads once applied up to `read_index`.
    ReadIndexResp {
        incarnation: u64,
        seqs: Vec<u64>,
        read_index: u64,
    },
}
