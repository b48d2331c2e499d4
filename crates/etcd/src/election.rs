//! etcd's Election service (`v3electionpb.Election`): Campaign waits until the caller leads
//! the election `name` (the same queue of lease-bound keys as a lock, see `concurrency.rs`),
//! Proclaim and Resign act only while the caller's key is still the one it created (compare
//! create revision), Leader reads the first key in create order, and Observe streams the
//! leader's key each time it changes hands or value.

use crate::concurrency::{
    Coordination, Follow, MISSING_LEADER_KEY, NO_LEADER, NOT_LEADER, contender_key,
    contenders_prefix, create_revision_is,
};
use crate::convert::key_value;
use crate::pb::v3electionpb as pb;
use crate::pb::v3electionpb::election_server::Election;
use std::sync::Arc;
use synod_core::kv::{
    EventKind, KeyValue, PutRequest, RangeRequest, SortOrder, SortTarget, TxnOp, TxnRequest,
};
use synod_node::watch::WatchHubs;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Leader changes queued to one Observe stream; a client reading slower than this holds up
/// only its own stream.
const OBSERVE_RESPONSES_MAX: usize = 16;

#[tonic::async_trait]
impl Election for Coordination {
    /// Answers once the caller leads. The header's revision is the leader key's create
    /// revision (as `LeaderKey.rev`).
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        self.svc
            .observe("campaign", async {
                let r = request.into_inner();
                let hubs = self.hubs("Election.Campaign")?;
                let _permit = self.waiter()?;
                let entry = self
                    .enter(contender_key(&r.name, r.lease), r.lease, r.value.clone())
                    .await?;
                let guard = self.guard(&entry);
                let leader = pb::LeaderKey {
                    name: r.name.clone(),
                    key: entry.key.clone(),
                    rev: rev_i64(entry.create_revision),
                    lease: r.lease,
                };
                // A reused key with another value: announce the new one first, as etcd does.
                if !entry.created && entry.value != r.value {
                    self.proclaim_as(&leader, r.value).await?;
                }
                self.wait_turn(&hubs, &contenders_prefix(&r.name), &entry)
                    .await?;
                guard.disarm();
                Ok(pb::CampaignResponse {
                    header: Some(self.header(entry.create_revision)),
                    leader: Some(leader),
                })
            })
            .await
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        self.svc
            .observe("proclaim", async {
                let r = request.into_inner();
                self.hubs("Election.Proclaim")?;
                let leader = r
                    .leader
                    .ok_or_else(|| Status::invalid_argument(MISSING_LEADER_KEY))?;
                let revision = self.proclaim_as(&leader, r.value).await?;
                Ok(pb::ProclaimResponse {
                    header: Some(self.header(revision)),
                })
            })
            .await
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        self.svc
            .observe("leader", async {
                let r = request.into_inner();
                self.hubs("Election.Leader")?;
                let (kv, revision) = self.current_leader(&r.name).await?;
                let kv = kv.ok_or_else(|| Status::not_found(NO_LEADER))?;
                Ok(pb::LeaderResponse {
                    header: Some(self.header(revision)),
                    kv: Some(key_value(kv)),
                })
            })
            .await
    }

    type ObserveStream = ReceiverStream<Result<pb::LeaderResponse, Status>>;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        self.svc
            .observe("observe", async {
                let r = request.into_inner();
                let hubs = self.hubs("Election.Observe")?;
                let permit = self.waiter()?;
                let (tx, rx) = mpsc::channel(OBSERVE_RESPONSES_MAX);
                let coord = self.clone();
                // Observing reads every candidate's key: the election's whole prefix.
                let mut prefix = r.name.clone();
                prefix.push(b'/');
                let end = synod_core::kv::prefix_end(&prefix);
                self.svc
                    .handle
                    .auth()
                    .require_read(&prefix, &end)
                    .map_err(|e| crate::error::api_error_to_status(&e))?;
                let caller = synod_node::auth::current();
                tokio::spawn(synod_node::auth::scope(caller, async move {
                    let _permit = permit;
                    let out = tx.clone();
                    tokio::select! {
                        () = tx.closed() => {}
                        r = coord.observe_leaders(&hubs, &r.name, &out) => {
                            if let Err(status) = r {
                                let _ = out.send(Err(status)).await;
                            }
                        }
                    }
                }));
                Ok(ReceiverStream::new(rx))
            })
            .await
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        self.svc
            .observe("resign", async {
                let r = request.into_inner();
                self.hubs("Election.Resign")?;
                let leader = r
                    .leader
                    .ok_or_else(|| Status::invalid_argument(MISSING_LEADER_KEY))?;
                // Resigning a leadership already lost is not an error (etcd's behaviour).
                let revision = self.delete_own(&leader.key, rev_u64(leader.rev)).await?;
                Ok(pb::ResignResponse {
                    header: Some(self.header(revision)),
                })
            })
            .await
    }
}

/// A LeaderKey's `rev` (int64 on the wire); revisions are far below `i64::MAX`.
fn rev_i64(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// A client-supplied `rev`: a negative one matches no key.
fn rev_u64(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(u64::MAX)
}

impl Coordination {
    /// Puts `value` on the leader's key if it is still the one created at `leader.rev`;
    /// answers the revision, or etcd's "election: not leader".
    async fn proclaim_as(&self, leader: &pb::LeaderKey, value: Vec<u8>) -> Result<u64, Status> {
        let t = TxnRequest {
            compare: vec![create_revision_is(&leader.key, rev_u64(leader.rev))],
            success: vec![TxnOp::Put(PutRequest {
                key: leader.key.clone(),
                value,
                lease: leader.lease,
                ..Default::default()
            })],
            failure: vec![],
        };
        match self.txn(t).await? {
            (true, revision, _) => Ok(revision),
            (false, _, _) => Err(Status::failed_precondition(NOT_LEADER)),
        }
    }

    /// The first key of `name/` in create order (the leader), and the revision read at.
    async fn current_leader(&self, name: &[u8]) -> Result<(Option<KeyValue>, u64), Status> {
        let (kvs, revision) = self
            .range(RangeRequest {
                limit: 1,
                sort_order: SortOrder::Ascend,
                sort_target: SortTarget::Create,
                ..RangeRequest::prefix(contenders_prefix(name))
            })
            .await?;
        Ok((kvs.into_iter().next(), revision))
    }

    /// etcd's `Election.Observe`: the current leader (or, with none, the first key put under
    /// the prefix), then every put on its key until it is deleted; then again.
    async fn observe_leaders(
        &self,
        hubs: &Arc<WatchHubs>,
        name: &[u8],
        out: &mpsc::Sender<Result<pb::LeaderResponse, Status>>,
    ) -> Result<(), Status> {
        let prefix = contenders_prefix(name);
        loop {
            let (leader, revision) = self.current_leader(name).await?;
            let mut follow =
                Follow::new(hubs, &prefix, revision + 1, self.svc.stopping.clone()).await?;
            let mut leader = match leader {
                Some(kv) => (kv, revision),
                None => match first_put(&mut follow, &prefix).await? {
                    Some(found) => found,
                    None => continue, // History compacted: look again.
                },
            };
            loop {
                let (kv, at) = leader;
                let key = kv.key.clone();
                let response = pb::LeaderResponse {
                    header: Some(self.header(at)),
                    kv: Some(key_value(kv)),
                };
                if out.send(Ok(response)).await.is_err() {
                    return Ok(());
                }
                match next_change(&mut follow, &key).await? {
                    Some(Some(next)) => leader = next,
                    // Deleted, or history compacted: find the leader again.
                    Some(None) | None => break,
                }
            }
        }
    }
}

/// The first put of a key under `prefix`, with its revision (`None`: history compacted).
async fn first_put(follow: &mut Follow, prefix: &[u8]) -> Result<Option<(KeyValue, u64)>, Status> {
    loop {
        let Some(revs) = follow.step().await? else {
            return Ok(None);
        };
        for rev in &revs {
            for e in &rev.events {
                if e.kind == EventKind::Put && e.kv.key.starts_with(prefix) {
                    return Ok(Some((e.kv.clone(), rev.revision)));
                }
            }
        }
    }
}

/// The next change of the leader's `key`: `Some(Some(kv))` a new value, `Some(None)` it was
/// deleted, `None` history compacted.
async fn next_change(
    follow: &mut Follow,
    key: &[u8],
) -> Result<Option<Option<(KeyValue, u64)>>, Status> {
    loop {
        let Some(revs) = follow.step().await? else {
            return Ok(None);
        };
        for (i, rev) in revs.iter().enumerate() {
            if let Some(e) = rev.events.iter().find(|e| e.kv.key == key) {
                // Revisions after this one are read again on the next step.
                if let Some(next) = revs.get(i + 1) {
                    follow.rewind(next.revision);
                }
                return Ok(Some(match e.kind {
                    EventKind::Put => Some((e.kv.clone(), rev.revision)),
                    EventKind::Delete => None,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revs_convert_without_panicking() {
        assert_eq!(rev_u64(-1), u64::MAX);
        assert_eq!(rev_i64(u64::MAX), i64::MAX);
        assert_eq!(rev_u64(7), 7);
    }

    #[test]
    fn keys_follow_etcds_layout() {
        assert_eq!(contender_key(b"job", 0x694d), b"job/694d".to_vec());
    }
}
