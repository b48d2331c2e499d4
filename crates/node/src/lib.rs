//! Synod's node layer: everything between the pure engines and the client APIs.
//!
//! * [`handle`] — [`NodeHandle`], the only thing API layers (HTTP, etcd gRPC) see of a node.
//! * [`metrics`] — the Prometheus registry every layer records into.
//!
//! The runtime (engine task, transport, storage, config) is added beside these; API crates
//! depend only on `handle` and `metrics`, so they can be tested against
//! [`handle::local_test_node`] without a cluster.

pub mod handle;
pub mod metrics;

pub use handle::{ApiError, ApiLimits, MemberInfo, NodeHandle, NodeInfo, NodeStatus, Submission};
pub use metrics::Metrics;
