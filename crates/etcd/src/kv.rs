//! etcd's KV service (Range, Put, DeleteRange, Txn, Compact) over [`NodeHandle::execute`].
//! Compact is a replicated command: every member drops the same history at the same point.
//!
//! [`NodeHandle::execute`]: synod_node::NodeHandle::execute

use crate::convert;
use crate::error::api_error_to_status;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::service::EtcdService;
use synod_core::Consistency;
use synod_core::kv::{CompactRequest, Op, Response, ResponseBody};
use tonic::{Request, Status};

impl EtcdService {
    async fn execute(&self, op: Op, consistency: Consistency) -> Result<Response, Status> {
        self.handle
            .execute(op, consistency)
            .await
            .map_err(|e| api_error_to_status(&e))
    }
}

/// A reply of the wrong kind means the node is broken, not the request: INTERNAL, not a
/// guess at an answer.
fn wrong_reply(expected: &str, got: &ResponseBody) -> Status {
    Status::internal(format!("synod: expected a {expected} reply, got {got:?}"))
}

#[tonic::async_trait]
impl Kv for EtcdService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<tonic::Response<pb::RangeResponse>, Status> {
        self.observe("range", async {
            let r = request.into_inner();
            // etcd's "serializable" is a member-local read that may be stale but never goes
            // back in time at that member: Synod's sequential consistency.
            let consistency = if r.serializable {
                Consistency::Sequential
            } else {
                Consistency::Linearizable
            };
            let op = Op::Range(convert::range_request(r)?);
            let reply = self.execute(op, consistency).await?;
            match reply.body {
                ResponseBody::Range(x) => {
                    Ok(convert::range_response(x, self.header_at(reply.revision)))
                }
                other => Err(wrong_reply("range", &other)),
            }
        })
        .await
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<tonic::Response<pb::PutResponse>, Status> {
        self.observe("put", async {
            let op = Op::Put(convert::put_request(request.into_inner())?);
            let reply = self.execute(op, Consistency::Linearizable).await?;
            match reply.body {
                ResponseBody::Put(x) => {
                    Ok(convert::put_response(x, self.header_at(reply.revision)))
                }
                other => Err(wrong_reply("put", &other)),
            }
        })
        .await
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<tonic::Response<pb::DeleteRangeResponse>, Status> {
        self.observe("delete", async {
            let op = Op::DeleteRange(convert::delete_range_request(request.into_inner())?);
            let reply = self.execute(op, Consistency::Linearizable).await?;
            match reply.body {
                ResponseBody::DeleteRange(x) => Ok(convert::delete_range_response(
                    x,
                    self.header_at(reply.revision),
                )),
                other => Err(wrong_reply("delete range", &other)),
            }
        })
        .await
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<tonic::Response<pb::TxnResponse>, Status> {
        self.observe("txn", async {
            let op = Op::Txn(convert::txn_request(request.into_inner())?);
            let reply = self.execute(op, Consistency::Linearizable).await?;
            match reply.body {
                ResponseBody::Txn(x) => convert::txn_response(x, self.header_at(reply.revision)),
                other => Err(wrong_reply("txn", &other)),
            }
        })
        .await
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<tonic::Response<pb::CompactionResponse>, Status> {
        self.observe("compact", async {
            let r = request.into_inner();
            let revision = u64::try_from(r.revision).unwrap_or(0);
            let op = Op::Compact(CompactRequest {
                revision,
                physical: r.physical,
            });
            let reply = self.execute(op, Consistency::Linearizable).await?;
            match reply.body {
                ResponseBody::Compact => Ok(pb::CompactionResponse {
                    header: Some(self.header_at(reply.revision)),
                }),
                other => Err(wrong_reply("compact", &other)),
            }
        })
        .await
    }
}
