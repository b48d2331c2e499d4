//! etcd's Cluster service over Synod's replicated configuration: MemberAdd, MemberRemove,
//! MemberUpdate and MemberPromote are decided like writes (`NodeHandle::change_members`) and
//! answer with the configuration after the change; MemberList is this member's applied
//! configuration (member-local, as in etcd 3.4).
//!
//! etcd's conventions kept: a member that has not published its client addresses yet (added,
//! not started) has an empty name and no client URLs, which etcdctl shows as "unstarted";
//! peer URLs are `http://host:port` (`https://`, and client URLs too, where TLS is on); a
//! malformed one is refused before anything is proposed, with etcd's "given member URLs are
//! invalid".

use crate::error::api_error_to_status;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::service::EtcdService;
use synod_core::membership::{Configuration, Member, MemberChange};
use synod_node::MemberInfo;
use synod_node::members::{ERR_BAD_URLS, added_member, peer_addr_of_urls};
use tonic::{Request, Status};

/// URL schemes of the advertised addresses: `https` where this member serves TLS.
#[derive(Clone, Copy)]
pub(crate) struct Schemes {
    client: &'static str,
    peer: &'static str,
}

impl Schemes {
    pub(crate) fn of(info: &synod_node::NodeInfo) -> Self {
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        Schemes {
            client: scheme(info.client_tls),
            peer: scheme(info.peer_tls),
        }
    }
}

/// etcd's view of one member.
pub(crate) fn member_pb(m: &MemberInfo, schemes: Schemes) -> pb::Member {
    let started = !m.grpc_addr.is_empty();
    pb::Member {
        id: m.id,
        name: if started {
            m.name.clone()
        } else {
            String::new()
        },
        peer_ur_ls: vec![format!("{}://{}", schemes.peer, m.peer_addr)],
        client_ur_ls: if started {
            vec![format!("{}://{}", schemes.client, m.grpc_addr)]
        } else {
            Vec::new()
        },
        is_learner: m.learner,
    }
}

fn members_pb(c: &Configuration, schemes: Schemes) -> Vec<pb::Member> {
    c.members
        .iter()
        .map(|m| member_pb(&MemberInfo::of(m), schemes))
        .collect()
}

/// The peer address named by a request's URLs, or etcd's InvalidArgument.
fn peer_addr(urls: &[String]) -> Result<String, Status> {
    peer_addr_of_urls(urls).map_err(|e| {
        tracing::debug!(reason = %e, "member change refused: bad peer URL");
        Status::invalid_argument(ERR_BAD_URLS)
    })
}

impl EtcdService {
    fn schemes(&self) -> Schemes {
        Schemes::of(self.handle.info())
    }

    /// Proposes `change` and returns the configuration after it.
    async fn change(&self, change: MemberChange) -> Result<Configuration, Status> {
        self.handle
            .change_members(change)
            .await
            .map_err(|e| api_error_to_status(&e))
    }
}

#[tonic::async_trait]
impl Cluster for EtcdService {
    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<tonic::Response<pb::MemberListResponse>, Status> {
        self.observe("member_list", async {
            let (members, _) = self.handle.members();
            Ok(pb::MemberListResponse {
                header: Some(self.header_now()),
                members: members
                    .iter()
                    .map(|m| member_pb(m, self.schemes()))
                    .collect(),
            })
        })
        .await
    }

    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<tonic::Response<pb::MemberAddResponse>, Status> {
        self.observe("member_add", async {
            let r = request.into_inner();
            let peer_addr = peer_addr(&r.peer_ur_ls)?;
            let after = self
                .change(MemberChange::Add(Member {
                    id: 0,
                    peer_addr: peer_addr.clone(),
                    learner: r.is_learner,
                    ..Member::default()
                }))
                .await?;
            let added = added_member(&after, &peer_addr).ok_or_else(|| {
                Status::internal("synod: the added member is not in the new configuration")
            })?;
            Ok(pb::MemberAddResponse {
                header: Some(self.header_now()),
                member: Some(member_pb(&MemberInfo::of(&added), self.schemes())),
                members: members_pb(&after, self.schemes()),
            })
        })
        .await
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<tonic::Response<pb::MemberRemoveResponse>, Status> {
        self.observe("member_remove", async {
            let after = self
                .change(MemberChange::Remove(request.into_inner().id))
                .await?;
            Ok(pb::MemberRemoveResponse {
                header: Some(self.header_now()),
                members: members_pb(&after, self.schemes()),
            })
        })
        .await
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<tonic::Response<pb::MemberUpdateResponse>, Status> {
        self.observe("member_update", async {
            let r = request.into_inner();
            let peer_addr = peer_addr(&r.peer_ur_ls)?;
            let after = self
                .change(MemberChange::Update(Member {
                    id: r.id,
                    peer_addr,
                    ..Member::default()
                }))
                .await?;
            Ok(pb::MemberUpdateResponse {
                header: Some(self.header_now()),
                members: members_pb(&after, self.schemes()),
            })
        })
        .await
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<tonic::Response<pb::MemberPromoteResponse>, Status> {
        self.observe("member_promote", async {
            let after = self
                .change(MemberChange::Promote(request.into_inner().id))
                .await?;
            Ok(pb::MemberPromoteResponse {
                header: Some(self.header_now()),
                members: members_pb(&after, self.schemes()),
            })
        })
        .await
    }
}
