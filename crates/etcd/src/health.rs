//! Whether this member can serve, as two etcd-compatible probes report it: gRPC's standard
//! health service (`grpc.health.v1.Health`, which etcd registers on its client port; Kubernetes'
//! gRPC probes and grpc-health-probe call it) and the gateway's `GET /health`. Both give the
//! same verdict: the node's own health (a quorum of voters reachable and, with a leader, the
//! leader) and no alarm raised, as etcd counts any alarm as unhealthy.

use crate::EtcdService;
use crate::pb::grpc::health::v1::health_check_response::ServingStatus;
use crate::pb::grpc::health::v1::health_server::Health;
use crate::pb::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use futures::Stream;
use std::pin::Pin;
use std::time::Duration;
use synod_node::NodeHandle;
use tonic::{Request, Response, Status};

/// How often a Watch looks at the verdict again (it sends only changes).
pub const HEALTH_WATCH_POLL: Duration = Duration::from_secs(1);

/// The verdict: `Err` names why this member cannot serve.
pub fn verdict(handle: &NodeHandle) -> Result<(), String> {
    handle.health()?;
    if handle.corrupt() {
        return Err("alarm CORRUPT".to_string());
    }
    if handle.alarms().nospace() {
        return Err("alarm NOSPACE".to_string());
    }
    Ok(())
}

/// Services a health request may name: the server as a whole (""), or one it serves.
const KNOWN_SERVICES: [&str; 9] = [
    "",
    "etcdserverpb.KV",
    "etcdserverpb.Watch",
    "etcdserverpb.Lease",
    "etcdserverpb.Cluster",
    "etcdserverpb.Maintenance",
    "etcdserverpb.Auth",
    "v3lockpb.Lock",
    "v3electionpb.Election",
];

/// The status for a request naming `service`: `None` when no such service is served.
fn status_of(handle: &NodeHandle, service: &str) -> Option<ServingStatus> {
    KNOWN_SERVICES
        .contains(&service)
        .then(|| match verdict(handle) {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        })
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for EtcdService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match status_of(&self.handle, &service) {
            Some(s) => Ok(Response::new(response(s))),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let handle = self.handle.clone();
        let mut stopping = self.stopping.clone();
        let stream = async_stream(move |tx| async move {
            let mut last = None;
            loop {
                let now = status_of(&handle, &service).unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(now) {
                    if tx.send(Ok(response(now))).await.is_err() {
                        return; // the client left
                    }
                    last = Some(now);
                }
                tokio::select! {
                    () = tokio::time::sleep(HEALTH_WATCH_POLL) => {}
                    () = tx.closed() => return, // the client left while nothing changed
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by `body` through a small channel; `body` runs as its own task and ends when
/// the receiver is dropped (its next send fails).
fn async_stream<F, Fut>(body: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<HealthCheckResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
