//! Messages between replicas: the ordering protocol's own, wrapped, and the replica layer's —
//! forwarding client writes and read-index requests to the leader, snapshot transfer, and
//! feeding learners.
//!
//! Protocol messages and snapshots carry the sender's configuration epoch: each epoch is its
//! own protocol instance, and a message from another epoch is never handed to the protocol
//! (see `membership.rs`).

use serde::{Deserialize, Serialize};
use synod_core::Command;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<M, T> {
    /// The ordering protocol's message, opaque here, of the sender's epoch's instance.
    Protocol { epoch: u64, m: M },
    /// Follower → leader: please propose these writes.
    Forward { entries: Vec<Command> },
    /// Follower → leader: give me a confirmed read index for these pending reads.
    ReadIndexReq { incarnation: u64, seqs: Vec<u64> },
    /// Leader → follower: serve these reads once applied up to `read_index`.
    ReadIndexResp {
        incarnation: u64,
        seqs: Vec<u64>,
        read_index: u64,
    },
    /// Bytes `[offset, offset + data.len())` of the sender's serialised applied state at
    /// `snapshot_idx` (the decided prefix `[0, snapshot_idx)`), sent in the protocol's `term`.
    SnapshotChunk {
        epoch: u64,
        term: T,
        snapshot_idx: u64,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// Receiver → sender: I hold the first `offset` bytes of that snapshot. `offset ==
    /// total_bytes` means installed (or no longer needed): the transfer is over.
    SnapshotAck {
        epoch: u64,
        term: T,
        snapshot_idx: u64,
        offset: u64,
    },
    /// Leader → learner: decided entries, the first at KV index `first`.
    LearnerEntries {
        epoch: u64,
        first: u64,
        entries: Vec<Command>,
    },
    /// Learner → voters: I applied up to `applied`.
    LearnerApplied { applied: u64 },
    /// "Your epoch is newer than mine (or I have no state at all): send me your state."
    Behind { epoch: u64, applied: u64 },
    /// "I am a voter of `epoch` that lost its storage (`membership.rs`): I vote in nothing
    /// there" — so that the group can replace it (a placed group moves off it).
    NonVoting { epoch: u64 },
}
