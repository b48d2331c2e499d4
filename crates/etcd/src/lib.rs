//! Synod's etcd v3 gRPC API: the `etcdserverpb` services over a [`NodeHandle`], so that
//! etcd's own tools (`etcdctl`, `clientv3`, etcd client crates) work against a Synod node.
//!
//! * [`pb`] — the protocol, generated at build time from `proto/` (written from the public
//!   etcd v3 API reference: same packages, names and field numbers).
//! * KV Range (with every option: past revisions, sorting, revision filters) / Put (with
//!   leases) / DeleteRange / Txn / Compact, Watch (see `watch.rs`), Lease (see `lease.rs`),
//!   Maintenance.Status, Maintenance.Alarm (GET, and DEACTIVATE of NOSPACE),
//!   Cluster.MemberList are served; etcd options Synod cannot honour (nested txns) answer
//!   UNIMPLEMENTED with a message naming them.
//! * Auth (see `auth.rs`): users, roles, permissions and simple tokens. The token travels as
//!   gRPC metadata `token` (what clientv3 and etcdctl send); `server.rs` resolves it and runs
//!   the call as that user, and every key the call touches is checked (`synod_node::auth`).
//! * v3lockpb.Lock and v3electionpb.Election (see `lock.rs`, `election.rs` and the recipe they
//!   share in `concurrency.rs`) on the log engines; UNIMPLEMENTED on CASPaxos.
//! * [`serve`] runs the whole API on a listener until a shutdown future completes;
//!   [`routes`] gives the services to callers that build their own tonic server.
//! * [`gateway`] serves the same services as etcd's gRPC-gateway JSON API (`POST /v3/...`)
//!   for the HTTP port.

mod auth;
mod authority;
pub mod client;
mod cluster;
mod concurrency;
mod convert;
pub mod corrupt;
mod election;
pub mod error;
pub mod gateway;
pub mod health;
mod kv;
mod lease;
mod lock;
mod maintenance;
pub mod pb;
mod server;
mod service;
mod watch;

pub use concurrency::{COORDINATION_WAITERS_MAX, Coordination};
pub use server::Unvectored;
pub use service::EtcdService;

use pb::etcdserverpb::auth_server::AuthServer;
use pb::etcdserverpb::cluster_server::ClusterServer;
use pb::etcdserverpb::kv_server::KvServer;
use pb::etcdserverpb::lease_server::LeaseServer;
use pb::etcdserverpb::maintenance_server::MaintenanceServer;
use pb::etcdserverpb::watch_server::WatchServer;
use pb::grpc::health::v1::health_server::HealthServer;
use pb::v3electionpb::election_server::ElectionServer;
use pb::v3lockpb::lock_server::LockServer;
use std::future::Future;
use synod_node::NodeHandle;
use tonic::service::Routes;

/// The etcd release whose API Synod serves, as `GET /version` (`etcdserver`) and
/// Maintenance.Status (`version`, what `etcdctl endpoint status` shows) report it. Clients
/// gate features on it: PyPI etcd3gw picks its URL prefix from it (`/v3/` needs 3.4 or
/// later; older answers send it to `/v3beta/` or `/v3alpha/`), and Go clients built with
/// `RejectOldCluster` refuse members below 3.2. Synod implements etcd 3.4's API (its protos,
/// gateway paths and JSON mapping); a claim of a later release would promise APIs (3.5's)
/// Synod does not serve. Synod's own version is in `/v1/status` and `synod --version`.
pub const ETCD_VERSION: &str = "3.4.0";
/// The cluster version `GET /version` reports (`etcdcluster`): etcd gives major.minor.0.
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";

/// Room for gRPC framing and protobuf overhead above the request limit (etcd's
/// `grpcOverheadBytes`). Requests up to `request_bytes_max + this` are decoded, so those just
/// over the limit get etcd's clean "request is too large" from the node's validation; only
/// larger ones are cut off by the decoder (code OUT_OF_RANGE, message from tonic).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Concurrent requests (HTTP/2 streams) one client connection may have open.
pub const GRPC_STREAMS_PER_CONNECTION_MAX: u32 = 1024;

/// Client connections the gRPC port serves at once (gRPC, and HTTP/1.1 on the same port). At
/// the bound the port stops accepting until one closes: more clients wait in the kernel's
/// backlog instead of taking the file descriptors the member's own files and peers need (a
/// flood of connections must not make a WAL segment fail to open). etcd clients multiplex
/// every request over a connection or a few.
pub const GRPC_CONNECTIONS_MAX: usize = 4096;

/// How often an idle client connection is pinged: a vanished client must not pin server
/// resources.
pub const GRPC_KEEPALIVE_INTERVAL_MS: u64 = 10_000;
/// How long a ping may go unanswered before the connection is dropped.
pub const GRPC_KEEPALIVE_TIMEOUT_MS: u64 = 20_000;

/// The largest gRPC message the server decodes for this node's limits.
pub fn decoding_message_bytes_max(handle: &NodeHandle) -> usize {
    handle
        .info()
        .limits
        .request_bytes_max
        .saturating_add(GRPC_OVERHEAD_BYTES)
}

/// Every etcd service over `handle`, ready to add to a tonic server. Watch streams stay open
/// until their clients leave; [`serve`] also ends them at shutdown.
pub fn routes(handle: NodeHandle) -> Routes {
    routes_of(EtcdService::new(handle))
}

fn routes_of(svc: EtcdService) -> Routes {
    let coordination = Coordination::new(svc.clone());
    routes_with(svc, coordination)
}

/// Every etcd service, with Lock and Election served by `coordination` (tests pass one with a
/// small waiter bound).
pub fn routes_with(svc: EtcdService, coordination: Coordination) -> Routes {
    let decode_max = decoding_message_bytes_max(&svc.handle);
    Routes::new(KvServer::new(svc.clone()).max_decoding_message_size(decode_max))
        .add_service(WatchServer::new(svc.clone()).max_decoding_message_size(decode_max))
        .add_service(LeaseServer::new(svc.clone()).max_decoding_message_size(decode_max))
        .add_service(ClusterServer::new(svc.clone()).max_decoding_message_size(decode_max))
        .add_service(MaintenanceServer::new(svc.clone()).max_decoding_message_size(decode_max))
        .add_service(LockServer::new(coordination.clone()).max_decoding_message_size(decode_max))
        .add_service(ElectionServer::new(coordination).max_decoding_message_size(decode_max))
        .add_service(AuthServer::new(svc.clone()).max_decoding_message_size(decode_max))
        .add_service(HealthServer::new(svc))
}

/// Serves the etcd v3 API on `listener` until `shutdown` completes, then finishes the
/// requests in flight (at most [`server::SHUTDOWN_GRACE`]) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls(listener, handle, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is set (see the `server` module doc).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    tls: Option<std::sync::Arc<synod_node::tls::ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_client_port(listener, handle, tls, None, shutdown).await
}

/// [`serve_tls`], answering what is not gRPC with `http` — the node's HTTP API — as etcd's
/// client URL does (see the `server` module doc). A TLS config given here should offer
/// `http/1.1` after `h2` so HTTP/1.1 clients can negotiate it.
pub async fn serve_client_port(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    tls: Option<std::sync::Arc<synod_node::tls::ServerTls>>,
    http: Option<axum::Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_client_port_limited(listener, handle, tls, http, GRPC_CONNECTIONS_MAX, shutdown).await
}

/// [`serve_client_port`] with at most `connections_max` client connections at once (tests
/// use a small bound; the node [`GRPC_CONNECTIONS_MAX`]).
pub async fn serve_client_port_limited(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    tls: Option<std::sync::Arc<synod_node::tls::ServerTls>>,
    http: Option<axum::Router>,
    connections_max: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    assert!(connections_max > 0, "connections_max must be positive");
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, "etcd gRPC API listening");
    let decode_max = decoding_message_bytes_max(&handle);
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let auth = handle.auth().clone();
    let svc = EtcdService::new(handle).with_stopping(stopping);
    let kv = KvServer::new(svc.clone()).max_decoding_message_size(decode_max);
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };
    let limits = server::Limits { connections_max };
    server::serve(
        listener,
        kv,
        routes_of(svc),
        auth,
        tls,
        http,
        limits,
        shutdown,
    )
    .await
}
