//! Every message exchanged between OmniPaxos servers: Ballot Leader Election heartbeats
//! (paper §5), Sequence Paxos (§4: Prepare/Promise with log synchronisation, AcceptSync,
//! AcceptDecide/Accepted, PrepareReq) and the leadership confirmation for read indices (see
//! `reads.rs`). Client forwarding and snapshot bytes are the replica layer's messages.

use crate::ballot::Ballot;
use serde::{Deserialize, Serialize};
use synod_core::Command as Entry;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Ble(BleMessage),
    Paxos(PaxosMessage),
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
    /// Follower → leader. `suffix` is the follower's log from `suffix_start`. `amnesic`: the
    /// follower lost its storage and is repairing; its (empty) state must not count toward the
    /// Prepare quorum, it only asks to be synchronised (see `repair.rs`).
    Promise {
        n: Ballot,
        amnesic: bool,
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
    /// Leader → all: am I still your leader? (read-index round `round`).
    ReadConfirm { n: Ballot, round: u64 },
    /// Follower → leader: yes, my promised ballot is still `n`.
    ReadConfirmAck { n: Ballot, round: u64 },
    /// Leader of `n` → the target of a leader hand-off (`transfer.rs`): you accepted my whole
    /// log (`log_len` entries) and I take no more proposals; start your Prepare phase now.
    TakeOver { n: Ballot, log_len: u64 },
    /// Repairing server → all: what is the highest ballot you promised? (`nonce`: this boot.)
    RepairQuery { nonce: u64 },
    /// Answer to `RepairQuery`, only from servers that are not repairing themselves.
    RepairInfo { nonce: u64, promised: Ballot },
}

/// Ballot numbers above this are refused on receipt: a server bumps a ballot it saw by one
/// (BLE's outbid), so an accepted `u64::MAX` would overflow — a panic in debug builds, a ballot
/// that goes back in release. No real cluster comes near it (one bump per election).
pub const BALLOT_N_MAX: u64 = u64::MAX / 2;

impl Message {
    /// The highest ballot number this message carries.
    pub fn ballot_n_max(&self) -> u64 {
        match self {
            Message::Ble(BleMessage::HeartbeatRequest { .. }) => 0,
            Message::Ble(BleMessage::HeartbeatReply { ballot, .. }) => ballot.n,
            Message::Paxos(m) => match m {
                PaxosMessage::Prepare {
                    n, accepted_round, ..
                }
                | PaxosMessage::Promise {
                    n, accepted_round, ..
                } => n.n.max(accepted_round.n),
                PaxosMessage::AcceptSync { n, .. }
                | PaxosMessage::AcceptDecide { n, .. }
                | PaxosMessage::Accepted { n, .. }
                | PaxosMessage::PrepareReq { n }
                | PaxosMessage::ReadConfirm { n, .. }
                | PaxosMessage::ReadConfirmAck { n, .. }
                | PaxosMessage::TakeOver { n, .. } => n.n,
                PaxosMessage::RepairQuery { .. } => 0,
                PaxosMessage::RepairInfo { promised, .. } => promised.n,
            },
        }
    }
}
