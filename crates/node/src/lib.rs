//! Synod's node layer: everything between the pure engines and the client APIs.
//!
//! * [`alarm`] — the NOSPACE alarm and the free-space watermark behind it.
//! * [`auth`] — who is calling and whether they may: tokens, password hashes, permission
//!   checks against the applied auth state.
//! * [`backup`] — backups, consistency hashes and the CORRUPT alarm (Maintenance.Snapshot,
//!   Hash, HashKV).
//! * [`compactor`] — auto-compaction of the revision history.
//! * [`handle`] — [`NodeHandle`], the only thing API layers (HTTP, etcd gRPC) see of a node.
//! * [`metrics`] — the Prometheus registry every layer records into.
//! * [`config`] — the cluster file shared by all members, plus per-node settings.
//! * [`transport`] — framed, handshaken TCP between members with bounded per-peer queues.
//! * [`tls`] — rustls configs, reloading certificates and bounded handshakes for every port.
//! * [`storage`] — the write-ahead log and the data directory (lock, identity, boot counter).
//! * [`runtime`] — [`start`]: the engine thread that drains persist → send → reply.
//! * [`transfer`] — leader transfer (MoveLeader) between the API and the engine thread.
//! * [`watch`] — the hub that hands applied revisions to every API's watchers.
//!
//! API crates depend only on `handle` and `metrics`, so they can be tested against
//! [`handle::local_test_node`] without a cluster.

pub mod alarm;
pub mod auth;
pub mod backup;
pub mod compactor;
pub mod config;
pub mod handle;
pub mod joined;
pub mod members;
pub mod metrics;
mod process_metrics;
pub mod runtime;
pub mod self_change;
pub mod storage;
pub mod tls;
pub mod transfer;
pub mod transport;
pub mod watch;

pub use alarm::Alarms;
pub use config::{
    ClusterConfig, ConfigError, HistoryConfig, MemberConfig, NodeConfig, PartitionConfig,
};
pub use handle::{ApiError, ApiLimits, MemberInfo, NodeHandle, NodeInfo, NodeStatus, Submission};
pub use metrics::Metrics;
pub use runtime::{NodeError, RunningNode, start, start_engine, start_with_listener};
pub use transfer::MoveLeaderError;
