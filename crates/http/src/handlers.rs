//! One handler per route: translate the request into a [`synod_core::kv::Op`], run it through
//! [`NodeHandle::execute`] (which validates sizes, empty keys and engine capabilities), and
//! translate the reply into the contract's JSON.

use crate::error::{ErrorCode, HttpError};
use crate::json::{
    CasBody, CompactBody, JsonBody, KeyPath, KvJson, ListQuery, PutBody, ReadQuery, SortOrderParam,
    ValidQuery,
};
use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use synod_core::kv::{
    CasAction, CasRequest, CompactRequest, DeleteRangeRequest, Expect, KeyValue, Op, PutRequest,
    RangeRequest, ResponseBody, prefix_end,
};
use synod_core::{Capabilities, Consistency, NodeId};
use synod_node::{MemberInfo, NodeHandle};

/// The OpenAPI document served at `/openapi.json` (kept true by `tests/openapi.rs`).
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// etcd's "from this key to the end of the keyspace" range end (and, as a start key, the
/// smallest non-empty key, since keys are never empty).
pub(crate) const KEYSPACE_END: &[u8] = &[0];

fn unexpected(op: &str, body: &ResponseBody) -> HttpError {
    HttpError::internal(format!("the engine answered a {op} with {body:?}"))
}

#[derive(Serialize)]
pub struct GetReply {
    pub kv: KvJson,
    pub revision: u64,
}

pub async fn get_key(
    State(handle): State<NodeHandle>,
    KeyPath(key): KeyPath,
    ValidQuery(q): ValidQuery<ReadQuery>,
) -> Result<Json<GetReply>, HttpError> {
    let get = RangeRequest {
        revision: q.revision,
        ..RangeRequest::key(key)
    };
    let r = handle.execute(Op::Range(get), q.consistency.into()).await?;
    let ResponseBody::Range(range) = &r.body else {
        return Err(unexpected("get", &r.body));
    };
    match range.kvs.first() {
        Some(kv) => Ok(Json(GetReply {
            kv: kv.into(),
            revision: r.revision,
        })),
        None => Err(HttpError::new(ErrorCode::KeyNotFound, "key not found")),
    }
}

#[derive(Serialize)]
pub struct PutReply {
    pub kv: KvJson,
    pub prev_kv: Option<KvJson>,
    pub revision: u64,
}

pub async fn put_key(
    State(handle): State<NodeHandle>,
    KeyPath(key): KeyPath,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<Json<PutReply>, HttpError> {
    let value = body.value.into_bytes();
    let op = Op::Put(PutRequest {
        key: key.clone(),
        value: value.clone(),
        prev_kv: true,
        ..Default::default()
    });
    let r = handle.execute(op, Consistency::Linearizable).await?;
    let ResponseBody::Put(put) = &r.body else {
        return Err(unexpected("put", &r.body));
    };
    // The store does not echo the written key; it is fully determined by the previous one and
    // the reply's revision (the revision this put created), exactly as `KvStore::put` builds
    // it. Engines without revisions report 0 for both, matching their registers.
    let prev = put.prev_kv.as_ref();
    let kv = KeyValue {
        key,
        value,
        create_revision: prev.map_or(r.revision, |p| p.create_revision),
        mod_revision: r.revision,
        version: prev.map_or(1, |p| p.version + 1),
        ..Default::default()
    };
    Ok(Json(PutReply {
        kv: (&kv).into(),
        prev_kv: prev.map(KvJson::from),
        revision: r.revision,
    }))
}

#[derive(Serialize)]
pub struct DeleteReply {
    pub deleted: u64,
    pub prev_kv: Option<KvJson>,
    pub revision: u64,
}

pub async fn delete_key(
    State(handle): State<NodeHandle>,
    KeyPath(key): KeyPath,
) -> Result<Json<DeleteReply>, HttpError> {
    let op = Op::DeleteRange(DeleteRangeRequest {
        key,
        range_end: Vec::new(),
        prev_kv: true,
    });
    let r = handle.execute(op, Consistency::Linearizable).await?;
    let ResponseBody::DeleteRange(d) = &r.body else {
        return Err(unexpected("delete", &r.body));
    };
    if d.deleted == 0 {
        return Err(HttpError::new(ErrorCode::KeyNotFound, "key not found"));
    }
    Ok(Json(DeleteReply {
        deleted: d.deleted,
        prev_kv: d.prev_kvs.first().map(KvJson::from),
        revision: r.revision,
    }))
}

#[derive(Serialize)]
pub struct CasReply {
    pub succeeded: bool,
    pub kv: Option<KvJson>,
    pub prev_kv: Option<KvJson>,
    pub revision: u64,
}

pub async fn cas_key(
    State(handle): State<NodeHandle>,
    KeyPath(key): KeyPath,
    JsonBody(body): JsonBody<CasBody>,
) -> Result<Json<CasReply>, HttpError> {
    let expect = body.expectation()?;
    let then = match body.value {
        Some(v) => CasAction::Put(v.into_bytes()),
        None => CasAction::Delete,
    };
    let op = Op::Cas(CasRequest {
        key,
        expect: expect.clone(),
        then,
    });
    let r = handle.execute(op, Consistency::Linearizable).await?;
    let ResponseBody::Cas(cas) = &r.body else {
        return Err(unexpected("cas", &r.body));
    };
    if !cas.succeeded {
        let found = match &cas.kv {
            None => "the key does not exist".to_string(),
            Some(kv) => format!("the key is at version {}", kv.version),
        };
        let wanted = match &expect {
            Expect::Absent => "expected it absent".to_string(),
            Expect::Version(v) => format!("expected version {v}"),
            Expect::Value(_) => "expected a different value".to_string(),
        };
        return Err(HttpError::cas_conflict(
            format!("compare failed: {found}, {wanted}"),
            cas.kv.as_ref().map(KvJson::from),
        ));
    }
    Ok(Json(CasReply {
        succeeded: true,
        kv: cas.kv.as_ref().map(KvJson::from),
        prev_kv: cas.prev_kv.as_ref().map(KvJson::from),
        revision: r.revision,
    }))
}

#[derive(Serialize)]
pub struct ListReply {
    pub kvs: Vec<KvJson>,
    pub count: u64,
    pub more: bool,
    pub revision: u64,
}

/// Turns the list query into etcd's `[key, range_end)`.
fn list_range(q: &ListQuery) -> Result<RangeRequest, HttpError> {
    let (key, range_end) = match (&q.prefix, &q.start, &q.end) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(HttpError::invalid(
                "give either prefix= or start= (with optional end=), not both",
            ));
        }
        (None, None, Some(_)) => return Err(HttpError::invalid("end= needs start=")),
        (None, None, None) => {
            return Err(HttpError::invalid(
                "give prefix= (empty for every key) or start=[&end=]",
            ));
        }
        (Some(p), None, None) if p.is_empty() => (KEYSPACE_END.to_vec(), KEYSPACE_END.to_vec()),
        (Some(p), None, None) => (p.as_bytes().to_vec(), prefix_end(p.as_bytes())),
        (None, Some(s), end) => {
            let key = if s.is_empty() {
                KEYSPACE_END.to_vec()
            } else {
                s.as_bytes().to_vec()
            };
            let range_end = match end {
                None => KEYSPACE_END.to_vec(),
                Some(e) if e.is_empty() => {
                    return Err(HttpError::invalid(
                        "end= is empty; leave it out to scan to the end of the keyspace",
                    ));
                }
                Some(e) => e.as_bytes().to_vec(),
            };
            (key, range_end)
        }
    };
    Ok(RangeRequest {
        key,
        range_end,
        limit: q.limit,
        keys_only: q.keys_only,
        count_only: q.count_only,
        revision: q.revision,
        sort_order: SortOrderParam::order(q.sort_order),
        sort_target: q.sort_target.into(),
        min_mod_revision: q.min_mod_revision,
        max_mod_revision: q.max_mod_revision,
        min_create_revision: q.min_create_revision,
        max_create_revision: q.max_create_revision,
    })
}

pub async fn list_keys(
    State(handle): State<NodeHandle>,
    ValidQuery(q): ValidQuery<ListQuery>,
) -> Result<Json<ListReply>, HttpError> {
    let range = list_range(&q)?;
    let r = handle
        .execute(Op::Range(range), q.consistency.into())
        .await?;
    let ResponseBody::Range(range) = &r.body else {
        return Err(unexpected("list", &r.body));
    };
    Ok(Json(ListReply {
        kvs: range.kvs.iter().map(KvJson::from).collect(),
        count: range.count,
        more: range.more,
        revision: r.revision,
    }))
}

#[derive(Serialize)]
pub struct CompactReply {
    /// The revision the history now starts at (the one asked for).
    pub compact_revision: u64,
    pub revision: u64,
}

pub async fn compact(
    State(handle): State<NodeHandle>,
    JsonBody(body): JsonBody<CompactBody>,
) -> Result<Json<CompactReply>, HttpError> {
    // etcd answers 0 with "compacted" (0 is never above the last compaction); that reads as if
    // something were gone, so say what is wrong instead.
    if body.revision == 0 {
        return Err(HttpError::invalid("revision must be at least 1"));
    }
    let op = Op::Compact(CompactRequest {
        revision: body.revision,
        physical: body.physical,
    });
    let r = handle.execute(op, Consistency::Linearizable).await?;
    let ResponseBody::Compact = &r.body else {
        return Err(unexpected("compact", &r.body));
    };
    Ok(Json(CompactReply {
        compact_revision: body.revision,
        revision: r.revision,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitBody {
    pub key: String,
    /// Split even inside a `/`-directory whose keys hold leases (a lock's contenders), which
    /// is refused otherwise.
    #[serde(default)]
    pub force: bool,
}

#[derive(Serialize)]
pub struct SplitReply {
    /// The range the split group keeps: `[start, end)`.
    pub start: String,
    pub end: String,
    /// The new group's range begins here (the split key).
    pub new_start: String,
    /// The split's index in the old group's log: the new group's log begins there.
    pub index: u64,
}

/// Splits the range holding `key` at `key` (partitioned clusters): the keys from `key` on
/// move to a new group. `synodctl range split`.
pub async fn range_split(
    State(handle): State<NodeHandle>,
    JsonBody(body): JsonBody<SplitBody>,
) -> Result<Json<SplitReply>, HttpError> {
    if body.key.is_empty() {
        return Err(HttpError::invalid("key must not be empty"));
    }
    let (start, end, index) = handle
        .split_range(body.key.clone().into_bytes(), body.force)
        .await?;
    Ok(Json(SplitReply {
        start: String::from_utf8_lossy(&start).into_owned(),
        end: String::from_utf8_lossy(&end).into_owned(),
        new_start: body.key,
        index,
    }))
}

#[derive(Serialize)]
pub struct MergeReply {
    /// The range merged away: `[start, end)` (the group below owns it from now on).
    pub start: String,
    pub end: String,
    /// The merge's index in the frozen group's log.
    pub index: u64,
}

/// Merges the range beginning at `key` into the range below it (partitioned clusters).
/// `synodctl range merge`.
pub async fn range_merge(
    State(handle): State<NodeHandle>,
    JsonBody(body): JsonBody<SplitBody>,
) -> Result<Json<MergeReply>, HttpError> {
    if body.key.is_empty() {
        return Err(HttpError::invalid("key must not be empty"));
    }
    let (start, end, index) = handle.merge_range(body.key.into_bytes()).await?;
    Ok(Json(MergeReply {
        start: String::from_utf8_lossy(&start).into_owned(),
        end: String::from_utf8_lossy(&end).into_owned(),
        index,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    pub key: String,
    pub from: NodeId,
    pub to: NodeId,
}

#[derive(Serialize)]
pub struct MoveReply {
    /// The members the range's group lives on after the move.
    pub members: Vec<NodeId>,
}

/// Moves the replica of the group holding `key` from member `from` to member `to` (partitioned
/// clusters with placement). `synodctl range move`.
pub async fn range_move(
    State(handle): State<NodeHandle>,
    JsonBody(body): JsonBody<MoveBody>,
) -> Result<Json<MoveReply>, HttpError> {
    if body.key.is_empty() {
        return Err(HttpError::invalid("key must not be empty"));
    }
    let members = handle
        .move_range(body.key.into_bytes(), body.from, body.to)
        .await?;
    Ok(Json(MoveReply { members }))
}

#[derive(Serialize)]
pub struct StatusReply {
    pub member_id: NodeId,
    pub cluster_id: u64,
    pub cluster_name: String,
    pub engine: String,
    pub version: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub role: String,
    pub revision: u64,
    pub decided_index: u64,
    pub applied_index: u64,
    pub keys: u64,
    pub pending_requests: usize,
    pub connected_peers: Vec<NodeId>,
    pub db_size_bytes: u64,
    /// Bytes of live data and retained history (etcd's dbSizeInUse).
    pub db_size_in_use_bytes: u64,
    /// Raised alarms, as etcd names them: `["NOSPACE"]` or empty.
    pub alarms: Vec<&'static str>,
    pub members: Vec<MemberInfo>,
    pub capabilities: Capabilities,
    /// Partitioned mode: the groups in key order (empty: one group).
    pub groups: Vec<RangeInfo>,
    /// Partitioned mode with a range directory: the directory as this member holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryInfo>,
    /// Partitioned mode: groups this member should host and could not start (a bug; health
    /// fails while there is one). Absent when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_groups: Vec<FailedGroupInfo>,
}

#[derive(Debug, Serialize)]
pub struct FailedGroupInfo {
    pub group: u64,
    pub name: String,
    pub error: String,
}

/// The range directory as one member's replica of its group holds it (`/v1/status`).
#[derive(Debug, Serialize)]
pub struct DirectoryInfo {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub applied_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub ranges: Vec<DirectoryRange>,
    /// The directory group's applied index `ranges` were read at (at most `applied_index`).
    pub copied_at: u64,
    /// The recorded ranges are those of the layout this member's groups applied: each
    /// range's first key, group and voters (placement: this member's groups are among the
    /// recorded ranges, each as recorded).
    pub matches_layout: bool,
    /// Groups live on some members only: the member hosts some of the ranges.
    pub placed: bool,
    /// Moves (`range move`) the directory records and no leader has finished yet: each
    /// group's leader goes on with its own.
    pub moves: Vec<DirectoryMove>,
}

/// A move the range directory records (placement).
#[derive(Debug, Serialize)]
pub struct DirectoryMove {
    pub group: u64,
    pub name: String,
    pub from: NodeId,
    pub to: NodeId,
    /// The group's configuration version when it was recorded.
    pub config_version: u64,
}

#[derive(Debug, Serialize)]
pub struct DirectoryRange {
    pub start: String,
    /// `None` where the directory knows no owner yet (an entry that only ends the range
    /// before it).
    pub group: Option<u64>,
    pub name: String,
    /// The owner's range generation when it recorded this.
    pub generation: u64,
    /// The owner's configuration version and voters then (0 and none for nobody, or an
    /// entry recorded before members were).
    pub config_version: u64,
    pub members: Vec<NodeId>,
    /// Its learners then (a member a move is adding; placement).
    pub learners: Vec<NodeId>,
}

impl DirectoryInfo {
    fn of(st: &synod_core::EngineStatus) -> Option<Self> {
        let d = st.directory.as_ref()?;
        let mut recorded = d.entries.iter().map(|e| (&e.start, e.group, &e.members));
        let mut layout = st.groups.iter().map(|g| (&g.start, g.group, &g.voters));
        // Placement: this member's groups are some of the ranges, each recorded as it is.
        let matches_layout = match d.placed {
            false => recorded.eq(layout),
            true => layout.all(|g| recorded.any(|r| r == g)),
        };
        Some(DirectoryInfo {
            leader: d.meta.leader,
            term: d.meta.term,
            applied_index: d.meta.applied_index,
            voters: d.meta.voters.clone(),
            learners: d.meta.learners.clone(),
            ranges: d
                .entries
                .iter()
                .map(|e| {
                    let nobody = e.group == synod_core::DirectoryEntry::NOBODY;
                    DirectoryRange {
                        start: String::from_utf8_lossy(&e.start).into_owned(),
                        group: (!nobody).then_some(e.group),
                        name: match nobody {
                            true => "(nobody)".to_string(),
                            false => synod_partition::layout::group_name(e.group),
                        },
                        generation: e.generation,
                        config_version: e.config_version,
                        members: e.members.clone(),
                        learners: e.learners.clone(),
                    }
                })
                .collect(),
            copied_at: d.copied_at,
            matches_layout,
            placed: d.placed,
            moves: (d.moves.iter())
                .map(|m| DirectoryMove {
                    group: m.group,
                    name: synod_partition::layout::group_name(m.group),
                    from: m.from,
                    to: m.to,
                    config_version: m.config_version,
                })
                .collect(),
        })
    }
}

/// One consensus group of a partitioned cluster, for `/v1/status` and `synodctl range list`.
#[derive(Debug, Serialize)]
pub struct RangeInfo {
    /// `0..n` for the configured groups; below 2^53 with bit 52 set for a group split off at
    /// run time.
    pub group: u64,
    /// How `synodctl` and the metrics' `group` label name it (`3`, `s0f3a…`).
    pub name: String,
    pub start: String,
    pub end: String,
    pub leader: Option<NodeId>,
    pub preferred_leader: Option<NodeId>,
    pub term: u64,
    pub applied_index: u64,
    pub revision: u64,
    pub keys: u64,
    pub role: String,
    /// The group's own members: the cluster's, except while a membership change spreads.
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl RangeInfo {
    fn of(g: &synod_core::GroupStatus) -> Self {
        RangeInfo {
            group: g.group,
            name: synod_partition::layout::group_name(g.group),
            start: String::from_utf8_lossy(&g.start).into_owned(),
            end: String::from_utf8_lossy(&g.end).into_owned(),
            leader: g.leader,
            preferred_leader: g.preferred_leader,
            term: g.term,
            applied_index: g.applied_index,
            revision: g.revision,
            keys: g.keys,
            role: g.role.clone(),
            voters: g.voters.clone(),
            learners: g.learners.clone(),
        }
    }
}

pub async fn status(State(handle): State<NodeHandle>) -> Json<StatusReply> {
    let info = handle.info();
    let st = handle.status();
    let db_size_in_use_bytes = st.db_size_in_use_bytes();
    let directory = DirectoryInfo::of(&st.engine);
    Json(StatusReply {
        member_id: info.member_id,
        cluster_id: info.cluster_id,
        cluster_name: info.cluster_name.clone(),
        engine: info.engine.clone(),
        version: info.version.clone(),
        leader: st.engine.leader,
        term: st.engine.term,
        role: st.engine.role,
        revision: st.engine.revision,
        decided_index: st.engine.decided_index,
        applied_index: st.engine.applied_index,
        keys: st.engine.keys,
        pending_requests: st.engine.pending_requests,
        connected_peers: st.connected_peers,
        db_size_bytes: st.db_size_bytes,
        db_size_in_use_bytes,
        alarms: if handle.alarms().nospace() {
            vec!["NOSPACE"]
        } else {
            Vec::new()
        },
        members: handle.members().0,
        capabilities: info.capabilities,
        groups: st.engine.groups.iter().map(RangeInfo::of).collect(),
        directory,
        failed_groups: st
            .engine
            .failed_groups
            .iter()
            .map(|f| FailedGroupInfo {
                group: f.group,
                name: synod_partition::layout::group_name(f.group),
                error: f.error.clone(),
            })
            .collect(),
    })
}

/// 200 "ok" while this member can serve (a quorum of voters reachable and, on engines with a
/// leader, a reachable leader); 503 with the reason otherwise, so a load balancer or an
/// orchestrator's probe takes a cut-off member out of rotation.
pub async fn healthz(State(handle): State<NodeHandle>) -> Response {
    match handle.health() {
        Ok(()) => "ok".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        )
            .into_response(),
    }
}

pub async fn metrics(State(handle): State<NodeHandle>) -> Response {
    // prometheus-client writes the OpenMetrics text format (it ends with "# EOF").
    let mut response = handle.metrics().encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

pub async fn openapi() -> Response {
    let mut response = OPENAPI_JSON.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Unknown paths. Two cases get a better answer than a bare 404: an empty key (`/v1/kv/`),
/// which the route pattern cannot match, and a key with an unencoded `/`.
pub async fn fallback(method: Method, uri: Uri) -> HttpError {
    let path = uri.path();
    if path == "/v1/kv/" || path.starts_with("/v1/kv//") {
        return HttpError::invalid("key is empty");
    }
    let hint = if path.starts_with("/v1/kv/") {
        "; a key containing '/' must be percent-encoded as %2F"
    } else {
        ""
    };
    HttpError::new(
        ErrorCode::NotFound,
        format!("no route for {method} {path}{hint}"),
    )
}

/// A known path with a method it does not serve. The contract has no 405 code: this is an
/// unknown route (`not_found`), with the served methods in the message.
pub async fn method_not_allowed(request: Request) -> HttpError {
    let matched = request.extensions().get::<MatchedPath>();
    let served: Vec<&str> = crate::ROUTES
        .iter()
        .filter(|r| matched.is_some_and(|m| m.as_str() == r.path))
        .map(|r| r.method)
        .collect();
    HttpError::new(
        ErrorCode::NotFound,
        format!(
            "no route for {} {}; this path serves {}",
            request.method(),
            request.uri().path(),
            served.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(prefix: Option<&str>, start: Option<&str>, end: Option<&str>) -> ListQuery {
        ListQuery {
            prefix: prefix.map(str::to_string),
            start: start.map(str::to_string),
            end: end.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn list_queries_become_etcd_ranges() {
        let r = list_range(&q(Some(""), None, None)).ok();
        assert_eq!(r.map(|r| (r.key, r.range_end)), Some((vec![0], vec![0])));
        let r = list_range(&q(Some("ab"), None, None)).ok();
        assert_eq!(
            r.map(|r| (r.key, r.range_end)),
            Some((b"ab".to_vec(), b"ac".to_vec()))
        );
        let r = list_range(&q(None, Some("a"), Some("c"))).ok();
        assert_eq!(
            r.map(|r| (r.key, r.range_end)),
            Some((b"a".to_vec(), b"c".to_vec()))
        );
        let r = list_range(&q(None, Some("a"), None)).ok();
        assert_eq!(
            r.map(|r| (r.key, r.range_end)),
            Some((b"a".to_vec(), vec![0]))
        );
        for bad in [
            q(None, None, None),
            q(Some("a"), Some("b"), None),
            q(Some("a"), None, Some("b")),
            q(None, None, Some("b")),
            q(None, Some("a"), Some("")),
        ] {
            assert!(list_range(&bad).is_err());
        }
    }
}
