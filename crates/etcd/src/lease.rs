//! etcd's Lease service (LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
//! LeaseLeases) over [`synod_node::NodeHandle::execute`].
//!
//! Every call is a replicated command or a linearizable read: grants, keep-alives and revokes
//! go through the log like writes, and the leader's lessor (in the replica layer) proposes
//! expiry. A keep-alive stream answers each request as soon as its renewal is applied, up to
//! [`KEEPALIVES_IN_FLIGHT`] at once per stream (one client stream carries the keep-alives of
//! all its leases), in completion order — etcd's replies carry the lease id, so order does
//! not matter to clients.

use crate::error::api_error_to_status;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::service::EtcdService;
use futures::StreamExt;
use std::pin::Pin;
use synod_core::kv::{LeaseGrantRequest, Op, Response, ResponseBody};
use synod_core::{Consistency, EngineError};
use synod_node::ApiError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

/// Keep-alives of one stream being applied at once; the stream reads no further requests
/// until one of them is answered (back-pressure on a client that sends faster).
pub const KEEPALIVES_IN_FLIGHT: usize = 64;

type KeepAliveStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

impl EtcdService {
    async fn lease_op(&self, op: Op, consistency: Consistency) -> Result<Response, ApiError> {
        self.handle.execute(op, consistency).await
    }

    /// One keep-alive: etcd answers a lease that is gone with TTL 0 (not an error), which
    /// clients read as "expired or revoked".
    async fn keep_alive_once(&self, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
        match self
            .lease_op(Op::LeaseKeepAlive { id }, Consistency::Linearizable)
            .await
        {
            Ok(Response {
                revision,
                body: ResponseBody::LeaseKeepAlive(info),
            }) => Ok(pb::LeaseKeepAliveResponse {
                header: Some(self.header_at(revision)),
                id: info.id,
                ttl: info.ttl,
            }),
            Ok(other) => Err(wrong_reply("keep-alive", &other.body)),
            Err(ApiError::Engine(EngineError::LeaseNotFound)) => Ok(pb::LeaseKeepAliveResponse {
                header: Some(self.header_now()),
                id,
                ttl: 0,
            }),
            Err(e) => Err(api_error_to_status(&e)),
        }
    }

    /// Serves one keep-alive stream until the client ends it, an error ends it, or the
    /// server stops.
    async fn serve_keep_alives(
        self,
        requests: Streaming<pb::LeaseKeepAliveRequest>,
        out: mpsc::Sender<Result<pb::LeaseKeepAliveResponse, Status>>,
    ) {
        let mut stopping = self.stopping.clone();
        let svc = &self;
        let mut replies = requests
            .map(|r| async move {
                match r {
                    Ok(req) => {
                        let started = std::time::Instant::now();
                        let reply = svc.keep_alive_once(req.id).await;
                        let outcome = if reply.is_ok() { "ok" } else { "error" };
                        svc.handle.metrics().observe_request(
                            "grpc",
                            "lease_keepalive",
                            outcome,
                            started.elapsed().as_secs_f64(),
                        );
                        reply
                    }
                    Err(status) => Err(status),
                }
            })
            .buffer_unordered(KEEPALIVES_IN_FLIGHT);
        loop {
            if *stopping.borrow() {
                return;
            }
            tokio::select! {
                biased;
                () = out.closed() => return,
                r = stopping.changed() => if r.is_err() || *stopping.borrow() {
                    return;
                },
                next = replies.next() => match next {
                    Some(reply) => {
                        let failed = reply.is_err();
                        if out.send(reply).await.is_err() || failed {
                            return;
                        }
                    }
                    None => return,
                },
            }
        }
    }
}

fn wrong_reply(expected: &str, got: &ResponseBody) -> Status {
    Status::internal(format!("synod: expected a {expected} reply, got {got:?}"))
}

#[tonic::async_trait]
impl Lease for EtcdService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<tonic::Response<pb::LeaseGrantResponse>, Status> {
        self.observe("lease_grant", async {
            let r = request.into_inner();
            if r.id < 0 {
                return Err(Status::invalid_argument(format!(
                    "synod: invalid request: negative lease id {}",
                    r.id
                )));
            }
            let op = Op::LeaseGrant(LeaseGrantRequest {
                id: r.id,
                ttl: r.ttl,
            });
            let reply = self
                .lease_op(op, Consistency::Linearizable)
                .await
                .map_err(|e| api_error_to_status(&e))?;
            match reply.body {
                ResponseBody::LeaseGrant(info) => Ok(pb::LeaseGrantResponse {
                    header: Some(self.header_at(reply.revision)),
                    id: info.id,
                    ttl: info.ttl,
                    error: String::new(),
                }),
                other => Err(wrong_reply("grant", &other)),
            }
        })
        .await
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<tonic::Response<pb::LeaseRevokeResponse>, Status> {
        self.observe("lease_revoke", async {
            let id = request.into_inner().id;
            let reply = self
                .lease_op(Op::LeaseRevoke { id }, Consistency::Linearizable)
                .await
                .map_err(|e| api_error_to_status(&e))?;
            match reply.body {
                ResponseBody::LeaseRevoke => Ok(pb::LeaseRevokeResponse {
                    header: Some(self.header_at(reply.revision)),
                }),
                other => Err(wrong_reply("revoke", &other)),
            }
        })
        .await
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<tonic::Response<Self::LeaseKeepAliveStream>, Status> {
        if !self.handle.info().capabilities.leases {
            return Err(api_error_to_status(&ApiError::Engine(
                EngineError::Unsupported {
                    engine: self.handle.info().engine.clone(),
                    what: "leases".into(),
                },
            )));
        }
        let (tx, rx) = mpsc::channel(KEEPALIVES_IN_FLIGHT);
        // The stream's task runs as the caller that opened it.
        let caller = synod_node::auth::current();
        let serve = self.clone().serve_keep_alives(request.into_inner(), tx);
        tokio::spawn(synod_node::auth::scope(caller, serve));
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<tonic::Response<pb::LeaseTimeToLiveResponse>, Status> {
        self.observe("lease_timetolive", async {
            let r = request.into_inner();
            let op = Op::LeaseTimeToLive {
                id: r.id,
                keys: r.keys,
            };
            let reply = self
                .lease_op(op, Consistency::Linearizable)
                .await
                .map_err(|e| api_error_to_status(&e))?;
            match reply.body {
                ResponseBody::LeaseTimeToLive(t) => Ok(pb::LeaseTimeToLiveResponse {
                    header: Some(self.header_at(reply.revision)),
                    id: t.id,
                    ttl: t.remaining_ttl,
                    granted_ttl: t.granted_ttl,
                    keys: t.keys,
                }),
                other => Err(wrong_reply("time-to-live", &other)),
            }
        })
        .await
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<tonic::Response<pb::LeaseLeasesResponse>, Status> {
        self.observe("lease_leases", async {
            let reply = self
                .lease_op(Op::LeaseLeases, Consistency::Linearizable)
                .await
                .map_err(|e| api_error_to_status(&e))?;
            match reply.body {
                ResponseBody::LeaseLeases(ids) => Ok(pb::LeaseLeasesResponse {
                    header: Some(self.header_at(reply.revision)),
                    leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
                }),
                other => Err(wrong_reply("leases", &other)),
            }
        })
        .await
    }
}
