//! etcd's Maintenance service: the node's status, read from [`synod_node::NodeHandle`]
//! without going through the engine (as in etcd, a member-local answer; the Cluster service
//! is in `cluster.rs`). Alarm GET lists this member's NOSPACE alarm while it is raised
//! (`etcdctl alarm list`; `endpoint health` asks too), and DEACTIVATE of NOSPACE disarms it
//! (`etcdctl alarm disarm`; it re-raises if the disk is still short, and unlike etcd it also
//! clears by itself once space is back). Unlike etcd's, the alarm is member-local: each member
//! lists only its own. MoveLeader hands leadership to another voter (`synod_node::transfer`).
//! ACTIVATE and everything that would change the store answer UNIMPLEMENTED.

use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::service::EtcdService;
use tokio_stream::Empty;
use tonic::{Request, Status};

/// etcd's codes for its leader-transfer errors (rpctypes): FAILED_PRECONDITION for "not
/// leader" and "bad leader transferee", UNAVAILABLE for "leader transfer took too long".
fn move_leader_status(e: &synod_node::MoveLeaderError) -> Status {
    use synod_core::LeaderTransferError as Refused;
    use synod_node::MoveLeaderError as E;
    match e {
        E::Refused(Refused::Unsupported { .. }) => Status::unimplemented(e.to_string()),
        // Exactly etcd's text: clientv3 turns it into its typed ErrNotLeader.
        E::Refused(Refused::NotLeader { .. }) => {
            Status::failed_precondition(synod_core::ERR_NOT_LEADER)
        }
        E::Refused(Refused::BadTarget { .. }) => Status::failed_precondition(e.to_string()),
        E::Refused(Refused::NotReady(_)) | E::TimedOut | E::Unavailable(_) => {
            Status::unavailable(e.to_string())
        }
    }
}

fn i64_of(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

impl EtcdService {
    /// This member's raised alarms, as etcd lists them.
    fn raised_alarms(&self) -> Vec<pb::AlarmMember> {
        if !self.handle.alarms().nospace() {
            return Vec::new();
        }
        vec![pb::AlarmMember {
            member_id: self.handle.info().member_id,
            alarm: pb::AlarmType::Nospace as i32,
        }]
    }
}

#[tonic::async_trait]
impl Maintenance for EtcdService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<tonic::Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let request = request.into_inner();
        let disarm = match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) => false,
            Ok(AlarmAction::Deactivate) => true,
            _ => {
                return self.refuse(
                    "alarm",
                    "Maintenance.Alarm ACTIVATE (synod raises alarms itself)",
                );
            }
        };
        self.observe("alarm", async {
            let mut alarms = self.raised_alarms();
            if disarm {
                // etcdctl disarms alarm by alarm, naming the member each came from.
                let me = self.handle.info().member_id;
                alarms.retain(|a| {
                    a.alarm == request.alarm && (request.member_id == me || request.member_id == 0)
                });
                if !alarms.is_empty() {
                    self.handle.alarms().disarm_nospace();
                }
            }
            Ok(pb::AlarmResponse {
                header: Some(self.header_now()),
                alarms,
            })
        })
        .await
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::StatusResponse>, Status> {
        self.observe("status", async {
            let status = self.handle.status();
            let engine = &status.engine;
            Ok(pb::StatusResponse {
                header: Some(self.header_now()),
                version: crate::ETCD_VERSION.to_string(),
                db_size: i64_of(status.db_size_bytes),
                leader: engine.leader.unwrap_or(0),
                // etcd's raftIndex is the committed index: Synod's decided index.
                raft_index: engine.decided_index,
                raft_term: engine.term,
                raft_applied_index: engine.applied_index,
                // etcd lists raised alarms here too (`etcdctl endpoint status`'s ERRORS).
                errors: self
                    .raised_alarms()
                    .iter()
                    .map(|a| format!("memberID:{} alarm:NOSPACE ", a.member_id))
                    .collect(),
                db_size_in_use: i64_of(status.db_size_bytes),
                is_learner: false,
            })
        })
        .await
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<tonic::Response<pb::DefragmentResponse>, Status> {
        self.refuse("defragment", "Maintenance.Defragment")
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<tonic::Response<pb::HashResponse>, Status> {
        self.refuse("hash", "Maintenance.Hash")
    }

    async fn hash_kv(
        &self,
        _request: Request<pb::HashKvRequest>,
    ) -> Result<tonic::Response<pb::HashKvResponse>, Status> {
        self.refuse("hash_kv", "Maintenance.HashKV")
    }

    type SnapshotStream = Empty<Result<pb::SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<tonic::Response<Self::SnapshotStream>, Status> {
        self.refuse("snapshot", "Maintenance.Snapshot")
    }

    /// etcd's MoveLeader: only the leader takes it (etcdctl finds the leader by Status first),
    /// and it answers once the target leads. A follower answers "etcdserver: not leader"
    /// (naming the leader) instead of forwarding, as etcd does.
    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<tonic::Response<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        self.observe("move_leader", async {
            self.handle
                .move_leader(Some(target))
                .await
                .map_err(|e| move_leader_status(&e))?;
            Ok(pb::MoveLeaderResponse {
                header: Some(self.header_now()),
            })
        })
        .await
    }
}
