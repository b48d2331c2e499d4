//! Synod's core: the vocabulary every layer shares, and nothing that does I/O.
//!
//! * [`ids`] — node, client and request identifiers.
//! * [`kv`] — the key-value commands, replies and the deterministic state machine that
//!   log-based engines apply in order (revisions, versions, CAS, exactly-once sessions).
//! * [`engine`] — the [`Engine`](engine::Engine) trait every replication protocol implements
//!   as a sans-IO state machine, and the [`Ready`](engine::Ready) batch that makes
//!   persist-before-send structural.
//! * [`log`] — [`CommandLog`], the in-memory log with a compacted prefix both log protocols use.
//! * [`protocol`] — the [`LogProtocol`](protocol::LogProtocol) contract an ordering protocol
//!   fulfils so that the replica layer can make it an engine.
//! * [`membership`] — the replicated configuration (members, voters, learners) and its
//!   changes.
//! * [`history`] — the JSON history format written by the simulator and chaos runs and read by
//!   the linearizability checker.
//!
//! * [`auth`] — etcd's users, roles and permissions: the replicated auth state and the
//!   permission check.
//! * [`backup`] — the backup file format (header, state image, checksums).
//! * [`rng`] — the one seeded generator (splitmix64) everything deterministic draws from.
//!
//! This crate has no dependency on tokio, std::time, threads or OS randomness; keep it so.

pub mod auth;
pub mod backup;
pub mod directory_order;
pub mod engine;
pub mod history;
pub mod ids;
pub mod kv;
pub mod log;
pub mod membership;
pub mod protocol;
pub mod rng;

pub use engine::{
    APPLIED_TRAIL_MAX, Capabilities, ClientReply, ClientRequest, Consistency, DirectoryEntry,
    DirectoryStatus, DurableRecord, ERR_COMPACTED, ERR_FUTURE_REV, ERR_KEY_NOT_FOUND,
    ERR_LEASE_EXISTS, ERR_LEASE_NOT_FOUND, ERR_LEASE_TTL_TOO_LARGE, ERR_WRONG_GROUP, Engine,
    EngineConfig, EngineError, EngineStatus, GroupEvents, GroupFailure, GroupStatus, MoveKind,
    MoveTarget, Outbox, OutputBuffer, PlantedBug, Ready, WatchMove,
};
pub use ids::{ClientId, NodeId, RequestId};
pub use log::CommandLog;
pub use protocol::{
    Command, ERR_BAD_LEADER_TRANSFEREE, ERR_LEADER_TRANSFER_TIMEOUT, ERR_NOT_LEADER,
    LEADER_TRANSFER_ELECTION_TIMEOUTS, LeaderTransferError, LogProtocol, Origin, ProtocolEvent,
    ProtocolOutput, SnapshotAcceptance, TransferStatus, leader_transfer_ticks,
};
pub use rng::SplitMix64;
