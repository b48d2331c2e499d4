//! [`EtcdService`]: the state every etcd gRPC service shares (the node handle) and the
//! bookkeeping every RPC goes through — latency metrics and response headers.

use crate::convert;
use crate::error::{outcome_label, unsupported};
use crate::pb::etcdserverpb as pb;
use std::future::Future;
use std::time::Instant;
use synod_node::NodeHandle;
use tonic::Status;

/// Implements every etcd v3 service over one [`NodeHandle`]. Cheap to clone: one per
/// service registration, all sharing the handle.
#[derive(Clone)]
pub struct EtcdService {
    pub(crate) handle: NodeHandle,
}

impl EtcdService {
    pub fn new(handle: NodeHandle) -> Self {
        EtcdService { handle }
    }

    /// Runs one RPC body and records its latency and outcome under `op`.
    pub(crate) async fn observe<T>(
        &self,
        op: &'static str,
        body: impl Future<Output = Result<T, Status>>,
    ) -> Result<tonic::Response<T>, Status> {
        let started = Instant::now();
        let result = body.await;
        self.handle.metrics().observe_request(
            "grpc",
            op,
            outcome_label(&result),
            started.elapsed().as_secs_f64(),
        );
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

    /// A header stamped with `revision` (the revision a KV reply was computed at) and the
    /// term this node currently knows.
    pub(crate) fn header_at(&self, revision: u64) -> pb::ResponseHeader {
        let info = self.handle.info();
        convert::header(
            info.cluster_id,
            info.member_id,
            revision,
            self.handle.status().engine.term,
        )
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
