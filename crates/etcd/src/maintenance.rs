//! etcd's Maintenance and Cluster services: the node's status and the member list, read
//! from [`synod_node::NodeHandle`] without going through the engine (as in etcd, these are
//! member-local answers). Alarm GET answers "no alarms" (Synod raises none, and etcdctl's
//! `endpoint health` asks); everything that would change the cluster or the store answers
//! UNIMPLEMENTED.

use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::service::EtcdService;
use synod_node::MemberInfo;
use tokio_stream::Empty;
use tonic::{Request, Status};

fn member(m: &MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: vec![format!("http://{}", m.peer_addr)],
        client_ur_ls: vec![format!("http://{}", m.grpc_addr)],
        is_learner: false,
    }
}

fn i64_of(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl Maintenance for EtcdService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<tonic::Response<pb::AlarmResponse>, Status> {
        let action = request.into_inner().action;
        if action != pb::alarm_request::AlarmAction::Get as i32 {
            return self.refuse(
                "alarm",
                "Maintenance.Alarm ACTIVATE/DEACTIVATE (synod has no alarms)",
            );
        }
        self.observe("alarm", async {
            Ok(pb::AlarmResponse {
                header: Some(self.header_now()),
                alarms: Vec::new(),
            })
        })
        .await
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::StatusResponse>, Status> {
        self.observe("status", async {
            let info = self.handle.info();
            let status = self.handle.status();
            let engine = &status.engine;
            Ok(pb::StatusResponse {
                header: Some(self.header_now()),
                version: info.version.clone(),
                db_size: i64_of(status.db_size_bytes),
                leader: engine.leader.unwrap_or(0),
                // etcd's raftIndex is the committed index: Synod's decided index.
                raft_index: engine.decided_index,
                raft_term: engine.term,
                raft_applied_index: engine.applied_index,
                errors: Vec::new(),
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

    async fn move_leader(
        &self,
        _request: Request<pb::MoveLeaderRequest>,
    ) -> Result<tonic::Response<pb::MoveLeaderResponse>, Status> {
        self.refuse("move_leader", "Maintenance.MoveLeader")
    }
}

#[tonic::async_trait]
impl Cluster for EtcdService {
    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<tonic::Response<pb::MemberListResponse>, Status> {
        self.observe("member_list", async {
            Ok(pb::MemberListResponse {
                header: Some(self.header_now()),
                members: self.handle.info().members.iter().map(member).collect(),
            })
        })
        .await
    }

    async fn member_add(
        &self,
        _request: Request<pb::MemberAddRequest>,
    ) -> Result<tonic::Response<pb::MemberAddResponse>, Status> {
        self.refuse("member_add", "Cluster.MemberAdd (membership is static)")
    }

    async fn member_remove(
        &self,
        _request: Request<pb::MemberRemoveRequest>,
    ) -> Result<tonic::Response<pb::MemberRemoveResponse>, Status> {
        self.refuse(
            "member_remove",
            "Cluster.MemberRemove (membership is static)",
        )
    }

    async fn member_update(
        &self,
        _request: Request<pb::MemberUpdateRequest>,
    ) -> Result<tonic::Response<pb::MemberUpdateResponse>, Status> {
        self.refuse(
            "member_update",
            "Cluster.MemberUpdate (membership is static)",
        )
    }

    async fn member_promote(
        &self,
        _request: Request<pb::MemberPromoteRequest>,
    ) -> Result<tonic::Response<pb::MemberPromoteResponse>, Status> {
        self.refuse(
            "member_promote",
            "Cluster.MemberPromote (synod has no learners)",
        )
    }
}
