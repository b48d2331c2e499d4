//! Every message exchanged between VR replicas (Liskov & Cowling, "Viewstamped Replication
//! Revisited", MIT-CSAIL-TR-2012-021): normal operation (§4.1), view change (§4.2), recovery
//! (§4.3), state transfer (§5.2), and the leadership confirmation behind the replica layer's
//! linearizable reads.
//!
//! Positions versus op-numbers: the paper numbers operations from 1; Synod's log positions are
//! 0-based, so op-number k lives at position k − 1 and "op-number" below always means a log
//! *length* (the number of operations a replica has), which is the same integer. A field named
//! `start` is the position of the first entry a message carries.

use serde::{Deserialize, Serialize};
use synod_core::{Command, NodeId};

/// A view-number (§4): view v is led by `members[v % n]`.
pub type View = u64;

/// The largest view-number a message may carry. No run of view changes gets near it (2^63
/// of them); a message beyond it is damage and is dropped, because a replica that adopted
/// such a view would have no later view to move to (`view + n` overflows).
pub const VIEW_MAX: View = u64::MAX / 2;

/// A piece of a log sent by state transfer (§5.2) or to a recovering replica (§4.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChunk {
    /// Position of `entries[0]`.
    pub start: u64,
    pub entries: Vec<Command>,
    /// The sender's commit-number.
    pub commit: u64,
    /// True: `entries` is a prefix of the primary's log in the message's view *reaching at
    /// least to the log the primary started the view with* (so a receiver whose committed
    /// prefix reaches `start` may adopt it and become normal in that view). False: every entry
    /// is committed (below `commit`), and nothing more may be inferred.
    pub synced: bool,
}

impl StateChunk {
    /// Position after the last entry.
    pub fn end(&self) -> u64 {
        self.start + self.entries.len() as u64
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// §4.1 primary → backups: `entries` belong at positions `start..`; the primary's
    /// commit-number rides along.
    Prepare {
        view: View,
        start: u64,
        entries: Vec<Command>,
        commit: u64,
    },
    /// §4.1 backup → primary: my log has `op_number` entries, all of them the primary's.
    PrepareOk {
        view: View,
        op_number: u64,
    },
    /// §4.1 primary → backups when there is nothing to prepare (the heartbeat).
    Commit {
        view: View,
        commit: u64,
    },
    /// §4.2: the sender moved to view-change status in `view`. Two additions (see the crate
    /// docs, "Liveness under partial connectivity"): `joined` lists every replica the sender
    /// knows moved to `view` (itself included; at most n), so a replica that hears only one
    /// quorum-connected peer still learns of f others; `connected` says whether the sender is
    /// quorum-connected (heard from f others within an election timeout).
    StartViewChange {
        view: View,
        connected: bool,
        joined: Vec<NodeId>,
    },
    /// §4.2 → the primary of `view`. `entries` is the sender's log *after its commit-number*
    /// (positions `commit..op_number`), not the whole history (§5.1 discusses why the whole
    /// log is impractical); the new primary fetches committed entries it lacks.
    DoViewChange {
        view: View,
        last_normal: View,
        op_number: u64,
        commit: u64,
        entries: Vec<Command>,
    },
    /// §4.2 new primary → backups: the log of the new view from `start` (at most the
    /// receiver's commit-number, when the primary knows it) to its end.
    StartView {
        view: View,
        start: u64,
        entries: Vec<Command>,
        commit: u64,
    },
    /// §5.2: send me your log from position `op_number` (my op-number or commit-number).
    GetState {
        view: View,
        op_number: u64,
    },
    /// §5.2: the answer to GetState.
    NewState {
        view: View,
        chunk: StateChunk,
    },
    /// §4.3: a replica restarted and asks who leads which view. `commit` is the commit-number
    /// it durably holds (0 after a wiped disk): the primary's log starts there.
    Recovery {
        nonce: u64,
        commit: u64,
    },
    /// §4.3: the primary includes its log. `normal`: the sender is in normal status (the
    /// paper's only responders); replicas in view-change status, and recovering ones that
    /// kept their disk, answer too with `normal` false, so that replicas that all restarted
    /// at once can tell that nobody is normal and start a view change (see `recovery.rs`).
    RecoveryResponse {
        view: View,
        nonce: u64,
        normal: bool,
        chunk: Option<StateChunk>,
    },
    /// Read index: is the sender still the normal primary of `view`? `seq` numbers the
    /// confirmation rounds of this primary.
    ReadConfirm {
        view: View,
        seq: u64,
    },
    ReadConfirmOk {
        view: View,
        seq: u64,
    },
}

impl Message {
    /// The view-number the message speaks for (`None` for Recovery, which has none).
    pub fn view(&self) -> Option<View> {
        match self {
            Message::Prepare { view, .. }
            | Message::PrepareOk { view, .. }
            | Message::Commit { view, .. }
            | Message::StartViewChange { view, .. }
            | Message::DoViewChange { view, .. }
            | Message::StartView { view, .. }
            | Message::GetState { view, .. }
            | Message::NewState { view, .. }
            | Message::RecoveryResponse { view, .. }
            | Message::ReadConfirm { view, .. }
            | Message::ReadConfirmOk { view, .. } => Some(*view),
            Message::Recovery { .. } => None,
        }
    }
}
