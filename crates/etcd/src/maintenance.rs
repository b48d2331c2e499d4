//! etcd's Maintenance service: the node's status, read from [`synod_node::NodeHandle`]
//! without going through the engine (as in etcd, a member-local answer; the Cluster service
//! is in `cluster.rs`). Alarm GET lists this member's NOSPACE alarm while it is raised
//! (`etcdctl alarm list`; `endpoint health` asks too), and DEACTIVATE of NOSPACE disarms it
//! (`etcdctl alarm disarm`; it re-raises if the disk is still short, and unlike etcd it also
//! clears by itself once space is back). Unlike etcd's, the alarm is member-local: each member
//! lists only its own; the same holds for CORRUPT (raised by the corruption check, see
//! `synod_node::backup`), which DEACTIVATE disarms too. Snapshot streams a backup of this
//! member's state and Hash / HashKV hash it (`synod_core::kv::KvStore::hash_kv`).
//! MoveLeader hands leadership to another voter (`synod_node::transfer`); Defragment writes a
//! checkpoint now and drops the log before it. Alarm ACTIVATE answers UNIMPLEMENTED (Synod
//! raises its alarms itself).

use crate::error::api_error_to_status;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::service::EtcdService;
use std::pin::Pin;
use synod_node::backup::BACKUP_CHUNK_BYTES_MAX;
use tokio_stream::Stream;
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
        let member_id = self.handle.info().member_id;
        let mut alarms = Vec::new();
        if self.handle.alarms().nospace() {
            alarms.push(pb::AlarmMember {
                member_id,
                alarm: pb::AlarmType::Nospace as i32,
            });
        }
        if self.handle.corrupt() {
            alarms.push(pb::AlarmMember {
                member_id,
                alarm: pb::AlarmType::Corrupt as i32,
            });
        }
        alarms
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
                if alarms
                    .iter()
                    .any(|a| a.alarm == pb::AlarmType::Nospace as i32)
                {
                    self.handle.alarms().disarm_nospace();
                }
                if alarms
                    .iter()
                    .any(|a| a.alarm == pb::AlarmType::Corrupt as i32)
                    && let Some(m) = self.handle.maintenance()
                {
                    m.disarm_corrupt();
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
                    .map(|a| {
                        let name =
                            pb::AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name());
                        format!("memberID:{} alarm:{name} ", a.member_id)
                    })
                    .collect(),
                db_size_in_use: i64_of(status.db_size_in_use_bytes()),
                is_learner: false,
            })
        })
        .await
    }

    /// etcd's Defragment (`etcdctl defrag`): this member takes a checkpoint now and its log
    /// before it is dropped, which is what shrinks Synod's database after a compaction;
    /// answered once the checkpoint is durable. With nothing to reclaim (nothing applied since
    /// the last checkpoint, or an engine without a log) it succeeds at once and says so in the
    /// log.
    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<tonic::Response<pb::DefragmentResponse>, Status> {
        self.observe("defragment", async {
            let d = self
                .handle
                .defragment()
                .await
                .map_err(|e| api_error_to_status(&e))?;
            tracing::info!(
                checkpointed = d.checkpointed,
                db_size_bytes = d.db_size_bytes,
                "defragment: {}",
                if d.checkpointed {
                    "checkpoint written, log before it dropped"
                } else {
                    "nothing to reclaim"
                }
            );
            Ok(pb::DefragmentResponse {
                header: Some(self.header_now()),
            })
        })
        .await
    }

    /// etcd's Hash: this member's whole applied state (`synod_core::kv::KvStore::hash_all`).
    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<tonic::Response<pb::HashResponse>, Status> {
        self.observe("hash", async {
            let hash = self
                .handle
                .hash_all()
                .await
                .map_err(|e| api_error_to_status(&e))?;
            Ok(pb::HashResponse {
                header: Some(self.header_now()),
                hash,
            })
        })
        .await
    }

    /// etcd's HashKV: the key-value history up to `revision` (0: the current one), equal on
    /// every member that applied it (`synod_core::kv::KvStore::hash_kv`).
    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<tonic::Response<pb::HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        self.observe("hash_kv", async {
            let revision = u64::try_from(revision).map_err(|_| {
                Status::invalid_argument(format!("synod: invalid request: revision {revision}"))
            })?;
            let h = self
                .handle
                .hash_kv(revision)
                .await
                .map_err(|e| api_error_to_status(&e))?;
            Ok(pb::HashKvResponse {
                header: Some(self.header_now()),
                hash: h.hash,
                compact_revision: i64_of(h.compact_revision),
            })
        })
        .await
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

    /// A backup of this member's applied state in Synod's backup format (`docs/backup.md`),
    /// streamed in chunks; `etcdctl snapshot save` writes it to its file unchanged.
    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<tonic::Response<Self::SnapshotStream>, Status> {
        let file = self
            .handle
            .backup()
            .await
            .map_err(|e| api_error_to_status(&e))?;
        tracing::info!(
            revision = file.header.revision,
            applied_index = file.header.applied_index,
            bytes = file.bytes.len(),
            "streaming a backup (Maintenance.Snapshot)"
        );
        self.handle
            .metrics()
            .observe_request("grpc", "snapshot", "ok", 0.0);
        let header = self.header_now();
        let total = file.bytes.len();
        let chunks = total.div_ceil(BACKUP_CHUNK_BYTES_MAX).max(1);
        // The file (and its slot among the member's concurrent backups) lives as long as the
        // stream; each chunk is copied out only when the client takes it.
        let stream = tokio_stream::iter((0..chunks).map(move |i| {
            let start = i * BACKUP_CHUNK_BYTES_MAX;
            let end = total.min(start + BACKUP_CHUNK_BYTES_MAX);
            Ok(pb::SnapshotResponse {
                header: Some(header),
                remaining_bytes: (total - end) as u64,
                blob: file.bytes[start..end].to_vec(),
            })
        }));
        Ok(tonic::Response::new(Box::pin(stream)))
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
