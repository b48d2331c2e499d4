//! etcd's Lock service (`v3lockpb.Lock`): Lock waits until the caller owns the lock `name`
//! through a key attached to its lease, Unlock deletes that key. The recipe, its safety
//! argument and its bounds are in `concurrency.rs`; docs/locks.md says what a lock does and
//! does not guarantee (fence your writes with the key's create revision).

use crate::concurrency::{Coordination, contender_key, contenders_prefix};
use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::v3lockpb as pb;
use crate::pb::v3lockpb::lock_server::Lock;
use synod_core::kv::{DeleteRangeRequest, Op, ResponseBody};
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl Lock for Coordination {
    /// Answers once the caller owns the lock. The header's revision is the ownership key's
    /// create revision — the fencing token, growing with every acquisition of `name` — as in
    /// etcd's answer to an uncontended Lock.
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        self.svc
            .observe("lock", async {
                let r = request.into_inner();
                let hubs = self.hubs("Lock.Lock")?;
                let _permit = self.waiter()?;
                let entry = self
                    .enter(contender_key(&r.name, r.lease), r.lease, Vec::new())
                    .await?;
                let guard = self.guard(&entry);
                self.wait_turn(&hubs, &contenders_prefix(&r.name), &entry)
                    .await?;
                guard.disarm();
                Ok(pb::LockResponse {
                    header: Some(self.header(entry.create_revision)),
                    key: entry.key,
                })
            })
            .await
    }

    /// Deletes the key (whoever's it is, as etcd does); unlocking a lock not held is a no-op.
    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        self.svc
            .observe("unlock", async {
                let r = request.into_inner();
                self.hubs("Lock.Unlock")?;
                let reply = self
                    .execute(Op::DeleteRange(DeleteRangeRequest {
                        key: r.key,
                        ..Default::default()
                    }))
                    .await?;
                match reply.body {
                    ResponseBody::DeleteRange(_) => Ok(pb::UnlockResponse {
                        header: Some(self.header(reply.revision)),
                    }),
                    other => Err(Status::internal(format!(
                        "synod: expected a delete reply, got {other:?}"
                    ))),
                }
            })
            .await
    }
}

impl Coordination {
    /// An etcd response header stamped with `revision`.
    pub(crate) fn header(&self, revision: u64) -> ResponseHeader {
        self.svc.header_at(revision)
    }
}
