//! The middleware every request passes: the in-flight bound (overload answers 503 `busy` at
//! once instead of queueing), the request-latency histogram, and one debug span + log line.

use crate::error::{ErrorCode, HttpError};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;
use synod_node::NodeHandle;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Shared by all requests of one router.
#[derive(Clone)]
pub struct EdgeState {
    pub handle: NodeHandle,
    /// Permits for requests that reach the engine; sized by
    /// [`crate::HttpConfig::requests_in_flight_max`]. Status, health and metrics routes do not
    /// take one, so an operator can still see an overloaded node.
    pub engine_requests: Arc<Semaphore>,
    /// The routes of the [`crate::Mount`] served beside [`crate::ROUTES`].
    pub mounted: Arc<[crate::RouteSpec]>,
}

/// Records the request as cancelled if the client hangs up before the handler finishes (hyper
/// then drops this future): the latency histogram still sees every request.
struct Observation<'a> {
    handle: &'a NodeHandle,
    op: &'static str,
    started: Instant,
    done: bool,
}

impl Observation<'_> {
    fn finish(&mut self, outcome: &str) -> f64 {
        self.done = true;
        let secs = self.started.elapsed().as_secs_f64();
        self.handle
            .metrics()
            .observe_request("http", self.op, outcome, secs);
        secs
    }
}

impl Drop for Observation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish("client_disconnected");
            tracing::debug!(op = self.op, "client disconnected before the reply");
        }
    }
}

pub async fn edge(State(edge): State<EdgeState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    // axum answers HEAD with the GET handler; it must count (and be bounded) as that GET.
    let routed_method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let spec = route.as_deref().and_then(|path| {
        crate::route_spec(routed_method, path).or_else(|| {
            edge.mounted
                .iter()
                .find(|r| r.method == routed_method && r.path == path)
        })
    });
    let op = spec.map_or("unknown", |s| s.op);
    // The route pattern, not the raw path: keys can be 4 KiB and are the users' data.
    let span = tracing::debug_span!(
        "http_request",
        %method,
        route = route.as_deref().unwrap_or("(no route)"),
        op
    );
    let mut observation = Observation {
        handle: &edge.handle,
        op,
        started: Instant::now(),
        done: false,
    };
    let response = async {
        let _permit = match spec {
            Some(s) if s.engine => match edge.engine_requests.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return HttpError::new(
                        ErrorCode::Busy,
                        "too many requests in flight at this node; retry later",
                    )
                    .into_response();
                }
            },
            _ => None,
        };
        // Auth off: one atomic load. On: the request runs as the user its `Authorization`
        // header's token names (the /v3 gateway's convention, used by /v1 as well).
        let auth = edge.handle.auth();
        if !auth.enabled() {
            return next.run(request).await;
        }
        let token = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|t| t.to_str().ok());
        let caller = auth.resolve(token, None);
        synod_node::auth::scope(caller, next.run(request)).await
    }
    .instrument(span.clone())
    .await;
    let status = response.status();
    let outcome = match response.extensions().get::<ErrorCode>() {
        Some(code) => code.as_str(),
        None if status.is_success() => "ok",
        // Not produced by our handlers (all errors are HttpError); keep the label set small.
        None => "other",
    };
    let secs = observation.finish(outcome);
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            outcome,
            elapsed_us = (secs * 1e6) as u64,
            "request"
        );
    });
    response
}
