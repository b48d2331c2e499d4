//! What CASPaxos nodes say to each other and what an acceptor writes to disk: the register
//! value (the key's content plus the exactly-once table), the protocol messages of CASPaxos
//! §2.2 (prepare/promise, accept/accepted, and the conflict reply), the GC's drop request, and
//! the durable records.

use crate::ballot::Ballot;
use crate::reconf::CasConfig;
use serde::{Deserialize, Serialize};
use synod_core::DurableRecord;
use synod_core::kv::{ClientTable, Key, KeyValue, KvLimits};

/// Sessions one register remembers for exactly-once writes; beyond it the client that wrote
/// the key longest ago is forgotten (its retries would then be applied again).
pub const SESSIONS_PER_REGISTER_MAX: usize = 64;
/// Saved replies per session per register (writes one client has in flight on one key).
pub const REPLIES_PER_SESSION_MAX: usize = 8;

/// The content of one CASPaxos register.
///
/// **Exactly-once.** There is no log and no shared state machine in CASPaxos, so the client
/// table lives *inside* each register: the value that the change function transforms carries
/// the saved replies of the last writes applied to this key (a [`ClientTable`] bounded to
/// [`SESSIONS_PER_REGISTER_MAX`] clients × [`REPLIES_PER_SESSION_MAX`] replies). Every value
/// that CASPaxos ever chooses for a key is derived from the previously chosen one, so the table
/// travels down that chain: a retried write (same `RequestId`, at any proposer) finds its saved
/// reply in whatever value its round starts from and is answered from it instead of being
/// applied a second time. Bounds: a retry is recognised as long as fewer than
/// `SESSIONS_PER_REGISTER_MAX` other clients wrote the same key in between, and — for deletes —
/// as long as the tombstone has not been garbage-collected (see `gc.rs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterValue {
    /// The key as clients see it; `None` = absent (never written, or a tombstone).
    pub kv: Option<KeyValue>,
    /// Saved replies of the last writes to this key, per client.
    pub sessions: ClientTable,
    /// Writes with a session applied to this register (the ones that save a reply): the
    /// activity clock of `sessions`' eviction order, and the identity the GC uses to tell one
    /// tombstone from a later one (see `gc.rs`).
    pub writes: u64,
}

impl RegisterValue {
    /// The value of a register nobody wrote: what the paper calls ∅.
    pub fn empty() -> Self {
        RegisterValue {
            kv: None,
            sessions: ClientTable::new(KvLimits {
                client_table_max: SESSIONS_PER_REGISTER_MAX,
                client_window_max: REPLIES_PER_SESSION_MAX,
                ..Default::default()
            }),
            writes: 0,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.kv.is_none()
    }
}

/// An acceptor's accepted pair: a ballot and the value accepted with it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AcceptedValue {
    pub ballot: Ballot,
    pub value: RegisterValue,
}

/// Peer-to-peer CASPaxos messages. Every message names its key: each key is an independent
/// register (CASPaxos §2.3.1 "one register per key").
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a: promise not to accept ballots below `ballot`, and tell me what you accepted.
    /// `version` (here, in Accept and in Drop) is the sender's configuration version: an
    /// acceptor holding a newer one refuses (see `reconf.rs`).
    Prepare {
        key: Key,
        ballot: Ballot,
        version: u64,
    },
    /// Phase 1b: the promise, with the acceptor's accepted pair (`None` = never accepted).
    Promise {
        key: Key,
        ballot: Ballot,
        accepted: Option<AcceptedValue>,
    },
    /// Phase 2a: accept `value` at `ballot`. `next` is the one-round-trip optimisation
    /// (CASPaxos §2.2.1): the same acceptor, on accepting, also promises `next`, so the proposer
    /// can skip phase 1 for its next change of this key.
    Accept {
        key: Key,
        ballot: Ballot,
        value: RegisterValue,
        next: Option<Ballot>,
        version: u64,
    },
    /// Phase 2b: `ballot` accepted (and `next` promised if the Accept carried one).
    Accepted { key: Key, ballot: Ballot },
    /// The conflict reply to a Prepare or Accept at `ballot`: the acceptor already promised
    /// `promised`, which is higher.
    Nack {
        key: Key,
        ballot: Ballot,
        promised: Ballot,
    },
    /// GC step 3 (see `gc.rs`): every acceptor accepted the tombstone at `ballot`; forget the
    /// key if that is still what you hold.
    Drop {
        key: Key,
        ballot: Ballot,
        version: u64,
    },
    /// A node repairing lost storage (`repair.rs`) asks for the acceptor registers after
    /// `after` (`None`: from the first); `nonce` identifies its boot.
    RepairQuery { nonce: u64, after: Option<Key> },
    /// One page of the answer, only from a node that is not repairing itself: registers in key
    /// order after the query's `after`, the acceptor's floor, and where the next page starts
    /// (`None`: this was the last); with the configuration the answering node holds, since the
    /// repairing node lost its own and must count answers against the current one.
    RepairPage {
        nonce: u64,
        after: Option<Key>,
        floor: Ballot,
        registers: Vec<RegisterRecord>,
        next: Option<Key>,
        config: CasConfig,
    },
    /// Membership change (`coordinator.rs`): adopt `config` durably if it supersedes yours,
    /// then acknowledge with the version you hold.
    Install { config: CasConfig },
    /// The answer to an Install, sent once the version named is durable.
    InstallAck { version: u64 },
    /// "Your configuration is outdated": an acceptor refusing a message of an older version, a
    /// node answering an Install it holds something newer than, or a `ConfigPull`.
    NewerConfig { config: CasConfig },
    /// A node saw a version above its own (or holds none yet): send me your configuration.
    ConfigPull { version: u64 },
    /// The rescan asks for the keys of the acceptor after `after` (`None`: from the first).
    KeysQuery { version: u64, after: Option<Key> },
    /// One page of keys in order after `after`; `next` is where the following page starts
    /// (`None`: this was the last).
    KeysPage {
        version: u64,
        after: Option<Key>,
        keys: Vec<Key>,
        next: Option<Key>,
    },
}

/// Ballot counters above this are refused on receipt: a proposer issues `counter + 1` above
/// every ballot it saw, so an accepted `u64::MAX` would overflow. No real cluster comes near it.
pub const BALLOT_COUNTER_MAX: u64 = u64::MAX / 2;

fn register_counter(r: &RegisterRecord) -> u64 {
    r.promised
        .counter
        .max(r.accepted.as_ref().map_or(0, |a| a.ballot.counter))
}

impl Message {
    /// The highest ballot counter this message carries.
    pub fn ballot_counter_max(&self) -> u64 {
        match self {
            Message::Prepare { ballot, .. }
            | Message::Accepted { ballot, .. }
            | Message::Drop { ballot, .. } => ballot.counter,
            Message::Promise {
                ballot, accepted, ..
            } => ballot
                .counter
                .max(accepted.as_ref().map_or(0, |a| a.ballot.counter)),
            Message::Accept { ballot, next, .. } => {
                ballot.counter.max(next.map_or(0, |n| n.counter))
            }
            Message::Nack {
                ballot, promised, ..
            } => ballot.counter.max(promised.counter),
            Message::RepairQuery { .. }
            | Message::Install { .. }
            | Message::InstallAck { .. }
            | Message::NewerConfig { .. }
            | Message::ConfigPull { .. }
            | Message::KeysQuery { .. }
            | Message::KeysPage { .. } => 0,
            Message::RepairPage {
                floor, registers, ..
            } => registers
                .iter()
                .map(register_counter)
                .fold(floor.counter, u64::max),
        }
    }

    pub fn key(&self) -> &[u8] {
        match self {
            Message::Prepare { key, .. }
            | Message::Promise { key, .. }
            | Message::Accept { key, .. }
            | Message::Accepted { key, .. }
            | Message::Nack { key, .. }
            | Message::Drop { key, .. } => key,
            _ => &[],
        }
    }
}

/// One acceptor register as persisted: its promise and its accepted pair.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRecord {
    pub key: Key,
    pub promised: Ballot,
    pub accepted: Option<AcceptedValue>,
}

/// Durable state of a CASPaxos node. Replayed in order by `recover`; the last record about a
/// key wins.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Record {
    /// An acceptor's state for one key after a promise or an accept changed it.
    Register(RegisterRecord),
    /// The GC dropped `key`; absent keys are treated as promised at `floor` (see `gc.rs`).
    Dropped { key: Key, floor: Ballot },
    /// The proposer may issue ballot counters up to `counter_max` (see `ballot.rs`).
    BallotLease { counter_max: u64 },
    /// Full state: subsumes every earlier record.
    Checkpoint {
        floor: Ballot,
        counter_max: u64,
        registers: Vec<RegisterRecord>,
        /// The configuration held (`None` only in checkpoints of a node that never persisted
        /// one: it recovers to the bootstrap configuration).
        config: Option<CasConfig>,
    },
    /// The configuration this node holds from now on (`reconf.rs`); the last one wins.
    Config(CasConfig),
    /// This node was started to join a running cluster: it is empty on purpose and holds no
    /// configuration until a coordinator installs one (never the bootstrap one).
    Joining,
    /// `true`: the storage was lost and the node is repairing from its peers (`repair.rs`);
    /// `false`: a state it really has (written on a first boot and when a repair completes).
    Amnesic(bool),
}

impl DurableRecord for Record {
    fn is_checkpoint(&self) -> bool {
        matches!(self, Record::Checkpoint { .. })
    }
}
