//! Synod's HTTP/JSON API: a curl-friendly surface over a [`NodeHandle`], with `/metrics`,
//! `/healthz` and an OpenAPI document. `docs/http-api.md` is the user's reference.
//!
//! * [`ROUTES`] is the single list of what is served: the router is built from it and the
//!   OpenAPI consistency test compares it with `openapi.json`.
//! * [`error`] holds the one mapping from node/engine errors to status codes and stable codes.
//! * [`json`] has the wire shapes and the extractors that make every rejection JSON.
//! * `edge` (middleware) bounds requests in flight and records latency and a log line;
//!   `listener` bounds open connections. Both answer overload with a fast 503 `busy`.
//! * `watch` serves `GET /v1/watch`, the NDJSON event stream, with its own bound on open
//!   streams; `serve` ends the streams at shutdown.
//! * A [`Mount`] adds another crate's routes to the same port, behind the same edge (the
//!   etcd `/v3` JSON gateway, which lives in `synod-etcd` with the services it calls).

pub mod error;
pub mod json;

mod backup;
mod edge;
mod handlers;
mod listener;
mod members;
mod watch;

pub use error::{ErrorCode, HttpError};
pub use handlers::OPENAPI_JSON;
pub use listener::{
    ACCEPT_ERROR_BACKOFF_MS, REFUSED_CONNECTION_TIMEOUT_MS, REFUSED_CONNECTIONS_ANSWERING_MAX,
    REFUSED_REQUEST_READ_BYTES_MAX,
};
pub use watch::{
    CHUNK_BYTES_SOFT_MAX, PROGRESS_NOTIFY_MS_MIN, REVISIONS_PER_READ, WATCH_STREAMS_MAX,
    WatchStreams,
};

use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Extension, Router};
use std::sync::Arc;
use std::time::Duration;
use synod_node::NodeHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Default bound on open HTTP connections (each is a task, buffers and a file descriptor).
pub const CONNECTIONS_MAX: usize = 1024;
/// Default bound on KV requests in flight at once. The node's submit queue is bounded too,
/// but waiting on it costs the client the whole request timeout; past this bound the client
/// hears `busy` at once.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 512;
/// After the shutdown signal, how long in-flight requests get to finish before `serve`
/// returns anyway (a slow or stuck client must not hold the process up).
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// One served route: method, axum path pattern, the op name used in metrics and logs, and
/// whether it reaches the engine (and so takes an in-flight permit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub op: &'static str,
    pub engine: bool,
}

const fn route(
    method: &'static str,
    path: &'static str,
    op: &'static str,
    engine: bool,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        op,
        engine,
    }
}

/// Everything the API serves. Add a route here, in `endpoint` and in `openapi.json`.
pub const ROUTES: &[RouteSpec] = &[
    route("GET", "/v1/kv/{key}", "get", true),
    route("PUT", "/v1/kv/{key}", "put", true),
    route("DELETE", "/v1/kv/{key}", "delete", true),
    route("POST", "/v1/kv/{key}/cas", "cas", true),
    route("GET", "/v1/kv", "list", true),
    route("POST", "/v1/compact", "compact", true),
    route("POST", "/v1/ranges/split", "range_split", true),
    route("POST", "/v1/ranges/merge", "range_merge", true),
    route("POST", "/v1/ranges/move", "range_move", true),
    // Engine-bound while it opens (it may read history); the stream itself holds no
    // in-flight permit (it is bounded by `watch_streams_max` instead).
    route("GET", "/v1/watch", "watch", true),
    route("GET", "/v1/status", "status", false),
    route("GET", "/v1/snapshot", "snapshot", true),
    route("GET", "/v1/members", "members", false),
    route("POST", "/v1/members", "member_add", true),
    route("DELETE", "/v1/members/{id}", "member_remove", true),
    route("PUT", "/v1/members/{id}", "member_update", true),
    route("POST", "/v1/members/{id}/promote", "member_promote", true),
    route("POST", "/v1/members/{id}/lead", "move_leader", false),
    route("GET", "/healthz", "healthz", false),
    route("GET", "/metrics", "metrics", false),
    route("GET", "/openapi.json", "openapi", false),
];

/// The route served for `method` on the route pattern `path`.
pub fn route_spec(method: &str, path: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

fn endpoint(spec: &RouteSpec) -> MethodRouter<NodeHandle> {
    let filter = match spec.method {
        "GET" => MethodFilter::GET,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        "POST" => MethodFilter::POST,
        other => unreachable!("ROUTES names method {other} that endpoint() does not know"),
    };
    match spec.op {
        "get" => on(filter, handlers::get_key),
        "put" => on(filter, handlers::put_key),
        "delete" => on(filter, handlers::delete_key),
        "cas" => on(filter, handlers::cas_key),
        "list" => on(filter, handlers::list_keys),
        "compact" => on(filter, handlers::compact),
        "range_split" => on(filter, handlers::range_split),
        "range_merge" => on(filter, handlers::range_merge),
        "range_move" => on(filter, handlers::range_move),
        "watch" => on(filter, watch::watch),
        "status" => on(filter, handlers::status),
        "snapshot" => on(filter, backup::snapshot),
        "members" => on(filter, members::list),
        "member_add" => on(filter, members::add),
        "member_remove" => on(filter, members::remove),
        "member_update" => on(filter, members::update),
        "member_promote" => on(filter, members::promote),
        "move_leader" => on(filter, members::lead),
        "healthz" => on(filter, handlers::healthz),
        "metrics" => on(filter, handlers::metrics),
        "openapi" => on(filter, handlers::openapi),
        other => unreachable!("ROUTES names op {other} that endpoint() has no handler for"),
    }
}

/// Bounds of one HTTP server. Units in the names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    pub connections_max: usize,
    pub requests_in_flight_max: usize,
    pub shutdown_grace_ms: u64,
    pub watch_streams_max: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connections_max: CONNECTIONS_MAX,
            requests_in_flight_max: REQUESTS_IN_FLIGHT_MAX,
            shutdown_grace_ms: SHUTDOWN_GRACE_MS,
            watch_streams_max: WATCH_STREAMS_MAX,
        }
    }
}

/// Routes served on this port by another crate (the etcd `/v3` JSON gateway), behind the same
/// edge as [`ROUTES`]: the in-flight bound for `engine` routes, metrics under each `op`, the
/// request log. Their paths must not overlap [`ROUTES`]'. The router reads its own bodies (the
/// body limit here applies to axum's body extractors only) and answers its own errors.
#[derive(Clone, Default)]
pub struct Mount {
    pub router: Router,
    pub routes: Vec<RouteSpec>,
}

/// The API with the default bounds.
pub fn router(handle: NodeHandle) -> Router {
    router_with(handle, &HttpConfig::default())
}

/// The API with explicit bounds. Its watch streams end only when their clients leave; use
/// [`serve_with`] to have them end at shutdown.
pub fn router_with(handle: NodeHandle, config: &HttpConfig) -> Router {
    router_with_mount(handle, config, Mount::default())
}

/// [`router_with`] plus `mount`'s routes.
pub fn router_with_mount(handle: NodeHandle, config: &HttpConfig, mount: Mount) -> Router {
    router_with_mount_closable(handle, config, mount).0
}

/// [`router_with_mount`], and the handle that ends its watch streams (`WatchStreams::close`),
/// so that one API (one set of bounds) can be served on more than one listener and still stop
/// cleanly ([`serve_router_tls`]).
pub fn router_with_mount_closable(
    handle: NodeHandle,
    config: &HttpConfig,
    mount: Mount,
) -> (Router, WatchStreams) {
    let streams = watch::WatchStreams::new(config.watch_streams_max);
    (app(handle, config, streams.clone(), mount), streams)
}

fn app(
    handle: NodeHandle,
    config: &HttpConfig,
    streams: watch::WatchStreams,
    mount: Mount,
) -> Router {
    assert!(
        config.requests_in_flight_max > 0,
        "requests_in_flight_max must be positive"
    );
    let edge_state = edge::EdgeState {
        handle: handle.clone(),
        engine_requests: Arc::new(Semaphore::new(config.requests_in_flight_max)),
        mounted: mount.routes.into(),
    };
    let body_bytes_max = handle.info().limits.request_bytes_max;
    let mut router = Router::new();
    for spec in ROUTES {
        router = router.route(spec.path, endpoint(spec));
    }
    router
        .with_state(handle)
        .merge(mount.router)
        .fallback(handlers::fallback)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(Extension(streams))
        .layer(axum::middleware::from_fn_with_state(edge_state, edge::edge))
}

/// Serves the API on `listener` with the default bounds until `shutdown` completes, then
/// lets in-flight requests finish (at most [`SHUTDOWN_GRACE_MS`]).
pub async fn serve(
    listener: TcpListener,
    handle: NodeHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, handle, HttpConfig::default(), shutdown).await
}

/// [`serve`] with explicit bounds.
pub async fn serve_with(
    listener: TcpListener,
    handle: NodeHandle,
    config: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_mount(listener, handle, config, Mount::default(), shutdown).await
}

/// [`serve_with`] plus `mount`'s routes. Streams the mount serves must end by themselves at
/// shutdown (the gateway's watch `stopping` signal), or they hold the grace period.
pub async fn serve_with_mount(
    listener: TcpListener,
    handle: NodeHandle,
    config: HttpConfig,
    mount: Mount,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_mount_tls(listener, handle, config, mount, None, shutdown).await
}

/// [`serve_with_mount`], over TLS when `tls` is set (see the `listener` module doc).
pub async fn serve_with_mount_tls(
    listener: TcpListener,
    handle: NodeHandle,
    config: HttpConfig,
    mount: Mount,
    tls: Option<std::sync::Arc<synod_node::tls::ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (app, streams) = router_with_mount_closable(handle, &config, mount);
    serve_router_tls(listener, app, streams, config, tls, shutdown).await
}

/// Serves `app` — a router from [`router_with_mount_closable`], which another listener may
/// serve as well (the gRPC port's HTTP side) — until `shutdown`; then ends `streams` and lets
/// requests in flight finish (at most the config's grace period).
pub async fn serve_router_tls(
    listener: TcpListener,
    app: Router,
    streams: WatchStreams,
    config: HttpConfig,
    tls: Option<std::sync::Arc<synod_node::tls::ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let mut listener = listener::LimitedListener::new(listener, config.connections_max);
    if let Some(tls) = tls {
        listener = listener.with_tls(tls);
    }
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let server =
        axum::serve(listener, app.into_make_service()).with_graceful_shutdown(async move {
            shutdown.await;
            // Watch streams never finish by themselves: end them, or the grace period
            // would always run out.
            streams.close();
            let _ = signalled_tx.send(());
        });
    tracing::info!(%addr, "HTTP API listening");
    let grace = async move {
        match signalled_rx.await {
            Ok(()) => tokio::time::sleep(Duration::from_millis(config.shutdown_grace_ms)).await,
            // The server finished without a signal; `server` wins the select below.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        result = server => result,
        () = grace => {
            tracing::warn!(%addr, "HTTP API: requests still open after the shutdown grace period; closing");
            Ok(())
        }
    }
}
