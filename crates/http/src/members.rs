//! `/v1/members`: the cluster's configuration as this member applied it, and the changes an
//! operator makes to it (add, remove, promote, update), each decided like a write and answered
//! with the configuration after it. Addresses are checked here, before anything is proposed;
//! the rest (an address already used, the last voter, a learner not in sync, an unknown id)
//! is refused by the replica layer with etcd's texts and mapped to `member_not_found` (404) or
//! `membership_refused` (409).

use crate::error::{ErrorCode, HttpError};
use crate::json::{JsonBody, SegmentPath};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use synod_core::NodeId;
use synod_core::membership::{Configuration, Member, MemberChange};
use synod_node::members::{added_member, check_host_port, peer_addr_of_url};
use synod_node::{MemberInfo, NodeHandle};

/// `GET /v1/members` and every change's reply.
#[derive(Serialize)]
pub struct MembersReply {
    /// The configuration's version; null before this member applied one.
    pub version: Option<u64>,
    pub members: Vec<MemberInfo>,
}

/// `POST /v1/members` reply: the new member (with its id) and everyone.
#[derive(Serialize)]
pub struct AddReply {
    pub member: MemberInfo,
    pub version: Option<u64>,
    pub members: Vec<MemberInfo>,
}

/// `POST /v1/members` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    #[serde(default)]
    pub name: String,
    /// host:port, or etcd's `http://host:port`.
    pub peer_addr: String,
    #[serde(default)]
    pub http_addr: String,
    #[serde(default)]
    pub grpc_addr: String,
    #[serde(default)]
    pub learner: bool,
}

/// `PUT /v1/members/{id}` body: what to change (omitted fields stay).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub peer_addr: String,
    #[serde(default)]
    pub http_addr: String,
    #[serde(default)]
    pub grpc_addr: String,
}

fn reply(c: &Configuration) -> MembersReply {
    MembersReply {
        version: Some(c.version),
        members: c.members.iter().map(MemberInfo::of).collect(),
    }
}

fn member_id(raw: &str) -> Result<NodeId, HttpError> {
    match raw.parse::<NodeId>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(HttpError::invalid(format!(
            "member id {raw:?} is not a positive integer"
        ))),
    }
}

/// A peer address as given (host:port or URL), checked; empty stays empty where allowed.
fn peer_addr(raw: &str, required: bool) -> Result<String, HttpError> {
    if raw.is_empty() && !required {
        return Ok(String::new());
    }
    peer_addr_of_url(raw)
        .map_err(|e| HttpError::invalid(format!("{}: {e}", synod_node::members::ERR_BAD_URLS)))
}

/// A client address (http_addr, grpc_addr): empty (unknown) or host:port.
fn client_addr(field: &str, raw: &str) -> Result<String, HttpError> {
    if raw.is_empty() {
        return Ok(String::new());
    }
    check_host_port(raw)
        .map(|()| raw.to_string())
        .map_err(|why| HttpError::invalid(format!("{field} {raw:?}: {why}")))
}

async fn change(handle: &NodeHandle, c: MemberChange) -> Result<Configuration, HttpError> {
    handle.change_members(c).await.map_err(HttpError::from)
}

pub async fn list(State(handle): State<NodeHandle>) -> Json<MembersReply> {
    let (members, version) = handle.members();
    Json(MembersReply { version, members })
}

pub async fn add(
    State(handle): State<NodeHandle>,
    JsonBody(body): JsonBody<AddBody>,
) -> Result<Json<AddReply>, HttpError> {
    let member = Member {
        id: 0,
        name: body.name,
        peer_addr: peer_addr(&body.peer_addr, true)?,
        http_addr: client_addr("http_addr", &body.http_addr)?,
        grpc_addr: client_addr("grpc_addr", &body.grpc_addr)?,
        learner: body.learner,
    };
    let at = member.peer_addr.clone();
    let after = change(&handle, MemberChange::Add(member)).await?;
    let added = added_member(&after, &at).ok_or_else(|| {
        HttpError::new(
            ErrorCode::Internal,
            "the added member is not in the new configuration",
        )
    })?;
    let MembersReply { version, members } = reply(&after);
    Ok(Json(AddReply {
        member: MemberInfo::of(&added),
        version,
        members,
    }))
}

pub async fn remove(
    State(handle): State<NodeHandle>,
    SegmentPath(id): SegmentPath,
) -> Result<Json<MembersReply>, HttpError> {
    let after = change(&handle, MemberChange::Remove(member_id(&id)?)).await?;
    Ok(Json(reply(&after)))
}

pub async fn promote(
    State(handle): State<NodeHandle>,
    SegmentPath(id): SegmentPath,
) -> Result<Json<MembersReply>, HttpError> {
    let after = change(&handle, MemberChange::Promote(member_id(&id)?)).await?;
    Ok(Json(reply(&after)))
}

pub async fn update(
    State(handle): State<NodeHandle>,
    SegmentPath(id): SegmentPath,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Json<MembersReply>, HttpError> {
    let member = Member {
        id: member_id(&id)?,
        name: body.name,
        peer_addr: peer_addr(&body.peer_addr, false)?,
        http_addr: client_addr("http_addr", &body.http_addr)?,
        grpc_addr: client_addr("grpc_addr", &body.grpc_addr)?,
        learner: false,
    };
    let after = change(&handle, MemberChange::Update(member)).await?;
    Ok(Json(reply(&after)))
}

/// `POST /v1/members/{id}/lead` reply: who leads now.
#[derive(Serialize)]
pub struct LeadReply {
    pub leader: NodeId,
}

/// `POST /v1/members/{id}/lead`: this member, the leader, hands leadership to member `id` and
/// answers once `id` leads (etcd's MoveLeader; see `synod_node::transfer`).
pub async fn lead(
    State(handle): State<NodeHandle>,
    SegmentPath(id): SegmentPath,
) -> Result<Json<LeadReply>, HttpError> {
    use synod_core::LeaderTransferError as Refused;
    use synod_node::MoveLeaderError as E;
    let target = member_id(&id)?;
    handle.auth().require_root()?;
    match handle.move_leader(Some(target)).await {
        Ok(leader) => Ok(Json(LeadReply { leader })),
        Err(e) => {
            let code = match &e {
                E::Refused(Refused::Unsupported { .. }) => ErrorCode::Unsupported,
                E::Refused(Refused::BadTarget { why, .. }) if why.contains("not a member") => {
                    ErrorCode::MemberNotFound
                }
                E::Refused(Refused::BadTarget { .. } | Refused::NotLeader { .. }) => {
                    ErrorCode::MembershipRefused
                }
                E::Refused(Refused::NotReady(_)) | E::TimedOut | E::Unavailable(_) => {
                    ErrorCode::Unavailable
                }
            };
            Err(HttpError::new(code, e.to_string()))
        }
    }
}
