//! [`EtcdService`]: the state every etcd gRPC service shares (the node handle) and the
//! bookkeeping every RPC goes through — latency metrics and response headers.

use crate::convert;
use crate::error::{outcome_label, unsupported};
use crate::pb::etcdserverpb as pb;
use prometheus_client::metrics::histogram::Histogram;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use synod_node::NodeHandle;
use tokio::sync::watch;
use tonic::Status;

/// Implements every etcd v3 service over one [`NodeHandle`]. Cheap to clone: one per
/// service registration, all sharing the handle.
#[derive(Clone)]
pub struct EtcdService {
    pub(crate) handle: NodeHandle,
    /// The latency histograms of successful KV calls, each looked up on its first use (so
    /// `/metrics` lists only operations that happened): the labelled lookup (three label
    /// strings, a hash and a lock per request) showed in the API thread's profile.
    ok_histograms: Arc<[(&'static str, OnceLock<Histogram>)]>,
    /// Turns true when the server shuts down: long-lived streams (Watch) end then, instead of
    /// holding the shutdown for its whole grace period.
    pub(crate) stopping: watch::Receiver<bool>,
    /// Keeps `stopping` open for services built without a shutdown signal.
    _never: Arc<watch::Sender<bool>>,
}

/// KV operations whose successful calls use a cached histogram.
const HOT_OPS: [&str; 4] = ["range", "put", "delete", "txn"];

impl EtcdService {
    pub fn new(handle: NodeHandle) -> Self {
        let ok_histograms = HOT_OPS.iter().map(|op| (*op, OnceLock::new())).collect();
        let (never, stopping) = watch::channel(false);
        EtcdService {
            handle,
            ok_histograms,
            stopping,
            _never: Arc::new(never),
        }
    }

    /// This service, ending its streams when `stopping` turns true.
    pub fn with_stopping(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = stopping;
        self
    }

    /// Runs one RPC body and records its latency and outcome under `op`.
    pub(crate) async fn observe<T>(
        &self,
        op: &'static str,
        body: impl Future<Output = Result<T, Status>>,
    ) -> Result<tonic::Response<T>, Status> {
        let started = Instant::now();
        let result = body.await;
        let secs = started.elapsed().as_secs_f64();
        let outcome = outcome_label(&result);
        match self.ok_histograms.iter().find(|(o, _)| *o == op) {
            Some((_, h)) if outcome == "ok" => h
                .get_or_init(|| self.handle.metrics().request_histogram("grpc", op, "ok"))
                .observe(secs),
            _ => self
                .handle
                .metrics()
                .observe_request("grpc", op, outcome, secs),
        }
        if let Err(s) = &result {
            tracing::debug!(op, code = ?s.code(), message = s.message(), "grpc request failed");
        }
        result.map(tonic::Response::new)
    }

    /// The answer for an RPC Synod does not implement, counted like any other request.
    pub(crate) fn refuse<T>(&self, op: &'static str, method: &str) -> Result<T, Status> {
        let status = unsupported(method);
        self.handle
            .metrics()
            .observe_request("grpc", op, "unimplemented", 0.0);
        Err(status)
    }

    /// Root only (maintenance, auth administration), when auth is on.
    pub(crate) fn require_root(&self) -> Result<(), Status> {
        self.handle
            .auth()
            .require_root()
            .map_err(|e| crate::error::api_error_to_status(&e))
    }

    /// A header stamped with `revision` (the revision a KV reply was computed at) and the
    /// term this node currently knows.
    pub(crate) fn header_at(&self, revision: u64) -> pb::ResponseHeader {
        let info = self.handle.info();
        let (term, _) = self.handle.term_and_revision();
        convert::header(info.cluster_id, info.member_id, revision, term)
    }

    /// A header for replies not tied to a KV operation: the node's current revision.
    pub(crate) fn header_now(&self) -> pb::ResponseHeader {
        let info = self.handle.info();
        let status = self.handle.status();
        convert::header(
            info.cluster_id,
            info.member_id,
            status.engine.revision,
            status.engine.term,
        )
    }
}
