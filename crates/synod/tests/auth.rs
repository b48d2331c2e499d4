//! etcd's authentication and RBAC on a real 3-process cluster.
//!
//! * **The table** (`every_rpc_and_route_refuses_the_unauthorised_and_serves_the_authorised`):
//!   one row per gRPC method, /v3 gateway route and /v1 HTTP route, each saying who may call
//!   it — anyone, any authenticated user, a user with permission on the keys it touches, or
//!   root only — and checked both ways: the next-weaker caller is refused with an auth error,
//!   the allowed one is not. The rows must cover every `rpc` of the protos in
//!   `crates/etcd/proto`, every route of `Gateway::routes()` and every entry of
//!   `synod_http::ROUTES`, so a new RPC or route without a row fails the test.
//! * **The planted bug** `txn-else-branch-unchecked` (the Txn check skips the failure branch)
//!   must make the table fail, on exactly the rows that need it.
//! * **etcdctl 3.4**, unchanged: `user add`, `role add`, `role grant-permission --prefix /
//!   --from-key`, `user grant-role`, `auth enable/disable`, `--user`, with the effects checked
//!   and etcd's messages; the auth state survives a restart of every member and a snapshot
//!   restored into a new cluster.
//! * **python-etcd3** with a user and password (`tests/py/auth_checks.py`).

mod common;

use common::{Cluster, etcdctl, etcdctl_command, run_with_deadline, wait_until};
use futures::future::BoxFuture;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use synod_etcd::pb::authpb;
use synod_etcd::pb::etcdserverpb as pb;
use synod_etcd::pb::grpc::health::v1 as hpb;
use synod_etcd::pb::v3electionpb as epb;
use synod_etcd::pb::v3lockpb as lpb;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(30);
/// How often a condition waited for with [`DEADLINE`] is polled.
const POLL: Duration = Duration::from_millis(50);
const ROOT_PW: &str = "rootpw";
const ALICE_PW: &str = "alicepw";
const NOBODY_PW: &str = "nobodypw";
/// Alice's role: readwrite on this prefix only.
const ALICE_PREFIX: &[u8] = b"t/";

/// Who may call a row's method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Anyone, even without a token.
    Open,
    /// Any authenticated user (checked: anonymous refused, `nobody` served).
    User,
    /// A user with permission on the keys it touches (`nobody` refused, `alice` served).
    Key,
    /// Only root — or, for key rows on keys alice may not touch, root but not alice.
    Root,
}

/// Whether an error text is one of etcd's auth refusals.
fn is_auth_refusal(text: &str) -> bool {
    [
        "etcdserver: permission denied",
        "etcdserver: user name is empty",
        "etcdserver: invalid auth token",
    ]
    .iter()
    .any(|t| text.contains(t))
}

// ---------------------------------------------------------------------------------------
// gRPC

#[derive(Clone)]
struct Token(Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(t) = &self.0 {
            r.metadata_mut().insert("token", t.clone());
        }
        Ok(r)
    }
}

type Svc = InterceptedService<Channel, Token>;

/// Clients of every service on one member, carrying one caller's token.
#[derive(Clone)]
struct Api {
    ch: Channel,
    token: Token,
    /// A long lease root granted, for rows that need one.
    lease: i64,
    /// Root's clients, for rows that prepare state as root first.
    root: Option<Box<Api>>,
    /// Another member's peer address (a MemberAdd that must be refused by the configuration).
    taken_peer_url: String,
}

impl Api {
    fn kv(&self) -> pb::kv_client::KvClient<Svc> {
        pb::kv_client::KvClient::with_interceptor(self.ch.clone(), self.token.clone())
    }
    fn watch(&self) -> pb::watch_client::WatchClient<Svc> {
        pb::watch_client::WatchClient::with_interceptor(self.ch.clone(), self.token.clone())
    }
    fn lease(&self) -> pb::lease_client::LeaseClient<Svc> {
        pb::lease_client::LeaseClient::with_interceptor(self.ch.clone(), self.token.clone())
    }
    fn cluster(&self) -> pb::cluster_client::ClusterClient<Svc> {
        pb::cluster_client::ClusterClient::with_interceptor(self.ch.clone(), self.token.clone())
    }
    fn maint(&self) -> pb::maintenance_client::MaintenanceClient<Svc> {
        pb::maintenance_client::MaintenanceClient::with_interceptor(
            self.ch.clone(),
            self.token.clone(),
        )
    }
    fn auth(&self) -> pb::auth_client::AuthClient<Svc> {
        pb::auth_client::AuthClient::with_interceptor(self.ch.clone(), self.token.clone())
    }
    fn lock(&self) -> lpb::lock_client::LockClient<Svc> {
        lpb::lock_client::LockClient::with_interceptor(self.ch.clone(), self.token.clone())
    }
    fn election(&self) -> epb::election_client::ElectionClient<Svc> {
        epb::election_client::ElectionClient::with_interceptor(self.ch.clone(), self.token.clone())
    }
    fn health(&self) -> hpb::health_client::HealthClient<Svc> {
        hpb::health_client::HealthClient::with_interceptor(self.ch.clone(), self.token.clone())
    }
    fn as_root(&self) -> Api {
        self.root
            .as_deref()
            .cloned()
            .unwrap_or_else(|| self.clone())
    }
}

type Call = fn(Api) -> BoxFuture<'static, Result<(), Status>>;

struct GrpcRow {
    /// `Service.Method` as in the proto.
    method: &'static str,
    need: Need,
    call: Call,
}

fn ok<T>(r: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
    r.map(|_| ())
}

fn range(key: &[u8], end: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        range_end: end.to_vec(),
        ..Default::default()
    }
}

fn put(key: &[u8]) -> pb::PutRequest {
    pb::PutRequest {
        key: key.to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }
}

fn txn_put(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put(key))),
    }
}

fn compare_version(key: &[u8]) -> pb::Compare {
    pb::Compare {
        key: key.to_vec(),
        target: pb::compare::CompareTarget::Version as i32,
        result: pb::compare::CompareResult::Equal as i32,
        target_union: Some(pb::compare::TargetUnion::Version(0)),
        ..Default::default()
    }
}

/// Opens a watch on `[key, end)` and answers its first response: an auth refusal as an error.
async fn watch_first(a: Api, key: &[u8], end: &[u8]) -> Result<(), Status> {
    use futures::StreamExt;
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.to_vec(),
                range_end: end.to_vec(),
                ..Default::default()
            },
        )),
    };
    let requests = futures::stream::iter(vec![create]).chain(futures::stream::pending());
    let mut replies = a.watch().watch(requests).await?.into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), replies.next())
        .await
        .map_err(|_| Status::deadline_exceeded("no watch response"))?;
    match first {
        Some(Ok(r)) if r.canceled => Err(Status::permission_denied(r.cancel_reason)),
        Some(Ok(_)) => Ok(()),
        Some(Err(s)) => Err(s),
        None => Err(Status::unknown("watch stream ended")),
    }
}

/// A lease of root's with a key alice may not touch attached.
async fn lease_on_forbidden_key(a: &Api) -> Result<i64, Status> {
    let root = a.as_root();
    let id = root
        .lease()
        .lease_grant(pb::LeaseGrantRequest { ttl: 600, id: 0 })
        .await?
        .into_inner()
        .id;
    let mut p = put(b"z/leased");
    p.lease = id;
    root.kv().put(p).await?;
    Ok(id)
}

fn leader_key(a: &Api, name: &[u8]) -> epb::LeaderKey {
    epb::LeaderKey {
        name: name.to_vec(),
        key: [name, format!("/{:x}", a.lease).as_bytes()].concat(),
        rev: 1,
        lease: a.lease,
    }
}

static FRESH: AtomicU64 = AtomicU64::new(0);
fn fresh(what: &str) -> String {
    format!("{what}-{}", FRESH.fetch_add(1, Ordering::Relaxed))
}

/// Every gRPC row. AuthDisable is last: its allowed call turns auth off (and on again).
fn grpc_rows() -> Vec<GrpcRow> {
    let row = |method, need, call| GrpcRow { method, need, call };
    vec![
        row("KV.Range", Need::Key, |a| {
            Box::pin(async move { ok(a.kv().range(range(b"t/x", b"")).await) })
        }),
        row("KV.Range", Need::Root, |a| {
            Box::pin(async move { ok(a.kv().range(range(b"z/", b"z0")).await) })
        }),
        row("KV.Range", Need::Root, |a| {
            Box::pin(async move { ok(a.kv().range(range(b"t/", &[0])).await) })
        }),
        row("KV.Put", Need::Key, |a| {
            Box::pin(async move { ok(a.kv().put(put(b"t/x")).await) })
        }),
        row("KV.Put", Need::Root, |a| {
            Box::pin(async move { ok(a.kv().put(put(b"z/x")).await) })
        }),
        row("KV.DeleteRange", Need::Key, |a| {
            Box::pin(async move {
                ok(a.kv()
                    .delete_range(pb::DeleteRangeRequest {
                        key: b"t/d".to_vec(),
                        ..Default::default()
                    })
                    .await)
            })
        }),
        row("KV.DeleteRange", Need::Root, |a| {
            Box::pin(async move {
                ok(a.kv()
                    .delete_range(pb::DeleteRangeRequest {
                        key: b"z/d".to_vec(),
                        ..Default::default()
                    })
                    .await)
            })
        }),
        row("KV.Txn", Need::Key, |a| {
            Box::pin(async move {
                let t = pb::TxnRequest {
                    compare: vec![compare_version(b"t/c")],
                    success: vec![txn_put(b"t/s")],
                    failure: vec![txn_put(b"t/f")],
                };
                ok(a.kv().txn(t).await)
            })
        }),
        // The else branch writes a key alice may not: refused whatever the compare says.
        row("KV.Txn", Need::Root, |a| {
            Box::pin(async move {
                let t = pb::TxnRequest {
                    compare: vec![compare_version(b"t/never")],
                    success: vec![txn_put(b"t/s")],
                    failure: vec![txn_put(b"z/else")],
                };
                ok(a.kv().txn(t).await)
            })
        }),
        row("KV.Txn", Need::Root, |a| {
            Box::pin(async move {
                let t = pb::TxnRequest {
                    compare: vec![compare_version(b"z/c")],
                    success: vec![txn_put(b"t/s")],
                    failure: vec![],
                };
                ok(a.kv().txn(t).await)
            })
        }),
        row("KV.Compact", Need::Root, |a| {
            Box::pin(async move {
                ok(a.kv()
                    .compact(pb::CompactionRequest {
                        revision: 1,
                        physical: false,
                    })
                    .await)
            })
        }),
        row("Watch.Watch", Need::Key, |a| {
            Box::pin(watch_first(a, b"t/", b"t0"))
        }),
        row("Watch.Watch", Need::Root, |a| {
            Box::pin(watch_first(a, b"z/", b"z0"))
        }),
        row("Watch.Watch", Need::Root, |a| {
            Box::pin(watch_first(a, b"t/", &[0]))
        }),
        row("Lease.LeaseGrant", Need::User, |a| {
            Box::pin(async move {
                ok(a.lease()
                    .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
                    .await)
            })
        }),
        row("Lease.LeaseRevoke", Need::User, |a| {
            Box::pin(async move {
                ok(a.lease()
                    .lease_revoke(pb::LeaseRevokeRequest { id: 0x5eed_0001 })
                    .await)
            })
        }),
        row("Lease.LeaseRevoke", Need::Root, |a| {
            Box::pin(async move {
                let id = lease_on_forbidden_key(&a).await?;
                ok(a.lease().lease_revoke(pb::LeaseRevokeRequest { id }).await)
            })
        }),
        row("Lease.LeaseKeepAlive", Need::User, |a| {
            Box::pin(async move {
                use futures::StreamExt;
                let reqs = futures::stream::iter(vec![pb::LeaseKeepAliveRequest { id: a.lease }]);
                let mut replies = a.lease().lease_keep_alive(reqs).await?.into_inner();
                match replies.next().await {
                    Some(r) => r.map(|_| ()),
                    None => Err(Status::unknown("keep-alive stream ended")),
                }
            })
        }),
        row("Lease.LeaseTimeToLive", Need::User, |a| {
            Box::pin(async move {
                ok(a.lease()
                    .lease_time_to_live(pb::LeaseTimeToLiveRequest {
                        id: a.lease,
                        keys: false,
                    })
                    .await)
            })
        }),
        row("Lease.LeaseTimeToLive", Need::Root, |a| {
            Box::pin(async move {
                let id = lease_on_forbidden_key(&a).await?;
                ok(a.lease()
                    .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
                    .await)
            })
        }),
        row("Lease.LeaseLeases", Need::User, |a| {
            Box::pin(async move { ok(a.lease().lease_leases(pb::LeaseLeasesRequest {}).await) })
        }),
        // etcd serves gRPC's health service to anyone, as a probe must reach it.
        row("Health.Check", Need::Open, |a| {
            Box::pin(async move { ok(a.health().check(hpb::HealthCheckRequest::default()).await) })
        }),
        row("Health.Watch", Need::Open, |a| {
            Box::pin(async move {
                use futures::StreamExt;
                let mut s = a
                    .health()
                    .watch(hpb::HealthCheckRequest::default())
                    .await?
                    .into_inner();
                match s.next().await {
                    Some(r) => r.map(|_| ()),
                    None => Err(Status::unknown("health watch ended")),
                }
            })
        }),
        row("Cluster.MemberList", Need::Open, |a| {
            Box::pin(async move {
                ok(a.cluster()
                    .member_list(pb::MemberListRequest::default())
                    .await)
            })
        }),
        row("Cluster.MemberAdd", Need::Root, |a| {
            Box::pin(async move {
                let r = pb::MemberAddRequest {
                    peer_ur_ls: vec![a.taken_peer_url.clone()],
                    is_learner: true,
                };
                ok(a.cluster().member_add(r).await)
            })
        }),
        row("Cluster.MemberRemove", Need::Root, |a| {
            Box::pin(async move {
                ok(a.cluster()
                    .member_remove(pb::MemberRemoveRequest { id: 999 })
                    .await)
            })
        }),
        row("Cluster.MemberUpdate", Need::Root, |a| {
            Box::pin(async move {
                ok(a.cluster()
                    .member_update(pb::MemberUpdateRequest {
                        id: 999,
                        peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                    })
                    .await)
            })
        }),
        row("Cluster.MemberPromote", Need::Root, |a| {
            Box::pin(async move {
                ok(a.cluster()
                    .member_promote(pb::MemberPromoteRequest { id: 999 })
                    .await)
            })
        }),
        row("Maintenance.Alarm", Need::Open, |a| {
            Box::pin(async move { ok(a.maint().alarm(pb::AlarmRequest::default()).await) })
        }),
        row("Maintenance.Alarm", Need::Root, |a| {
            Box::pin(async move {
                let r = pb::AlarmRequest {
                    action: pb::alarm_request::AlarmAction::Deactivate as i32,
                    member_id: 0,
                    alarm: pb::AlarmType::Nospace as i32,
                };
                ok(a.maint().alarm(r).await)
            })
        }),
        row("Maintenance.Status", Need::Open, |a| {
            Box::pin(async move { ok(a.maint().status(pb::StatusRequest {}).await) })
        }),
        row("Maintenance.Defragment", Need::Root, |a| {
            Box::pin(async move { ok(a.maint().defragment(pb::DefragmentRequest {}).await) })
        }),
        row("Maintenance.Hash", Need::Root, |a| {
            Box::pin(async move { ok(a.maint().hash(pb::HashRequest {}).await) })
        }),
        row("Maintenance.HashKV", Need::Root, |a| {
            Box::pin(async move { ok(a.maint().hash_kv(pb::HashKvRequest { revision: 0 }).await) })
        }),
        row("Maintenance.Snapshot", Need::Root, |a| {
            Box::pin(async move {
                use futures::StreamExt;
                let mut s = a
                    .maint()
                    .snapshot(pb::SnapshotRequest {})
                    .await?
                    .into_inner();
                match s.next().await {
                    Some(r) => r.map(|_| ()),
                    None => Ok(()),
                }
            })
        }),
        row("Maintenance.MoveLeader", Need::Root, |a| {
            Box::pin(async move {
                ok(a.maint()
                    .move_leader(pb::MoveLeaderRequest { target_id: 999 })
                    .await)
            })
        }),
        row("Auth.AuthEnable", Need::Open, |a| {
            Box::pin(async move { ok(a.auth().auth_enable(pb::AuthEnableRequest {}).await) })
        }),
        row("Auth.Authenticate", Need::Open, |a| {
            Box::pin(async move {
                let r = pb::AuthenticateRequest {
                    name: "alice".into(),
                    password: ALICE_PW.into(),
                };
                ok(a.auth().authenticate(r).await)
            })
        }),
        row("Auth.UserAdd", Need::Root, |a| {
            Box::pin(async move {
                let r = pb::AuthUserAddRequest {
                    name: fresh("user"),
                    password: "pw".into(),
                    options: None,
                };
                ok(a.auth().user_add(r).await)
            })
        }),
        row("Auth.UserGet", Need::Root, |a| {
            Box::pin(async move {
                ok(a.auth()
                    .user_get(pb::AuthUserGetRequest {
                        name: "root".into(),
                    })
                    .await)
            })
        }),
        row("Auth.UserList", Need::Root, |a| {
            Box::pin(async move { ok(a.auth().user_list(pb::AuthUserListRequest {}).await) })
        }),
        row("Auth.UserDelete", Need::Root, |a| {
            Box::pin(async move {
                ok(a.auth()
                    .user_delete(pb::AuthUserDeleteRequest {
                        name: "ghost".into(),
                    })
                    .await)
            })
        }),
        row("Auth.UserChangePassword", Need::Root, |a| {
            Box::pin(async move {
                let r = pb::AuthUserChangePasswordRequest {
                    name: "ghost".into(),
                    password: "x".into(),
                };
                ok(a.auth().user_change_password(r).await)
            })
        }),
        row("Auth.UserGrantRole", Need::Root, |a| {
            Box::pin(async move {
                let r = pb::AuthUserGrantRoleRequest {
                    user: "ghost".into(),
                    role: "rw-t".into(),
                };
                ok(a.auth().user_grant_role(r).await)
            })
        }),
        row("Auth.UserRevokeRole", Need::Root, |a| {
            Box::pin(async move {
                let r = pb::AuthUserRevokeRoleRequest {
                    name: "ghost".into(),
                    role: "rw-t".into(),
                };
                ok(a.auth().user_revoke_role(r).await)
            })
        }),
        row("Auth.RoleAdd", Need::Root, |a| {
            Box::pin(async move {
                ok(a.auth()
                    .role_add(pb::AuthRoleAddRequest {
                        name: fresh("role"),
                    })
                    .await)
            })
        }),
        row("Auth.RoleGet", Need::Root, |a| {
            Box::pin(async move {
                ok(a.auth()
                    .role_get(pb::AuthRoleGetRequest {
                        role: "root".into(),
                    })
                    .await)
            })
        }),
        row("Auth.RoleList", Need::Root, |a| {
            Box::pin(async move { ok(a.auth().role_list(pb::AuthRoleListRequest {}).await) })
        }),
        row("Auth.RoleDelete", Need::Root, |a| {
            Box::pin(async move {
                ok(a.auth()
                    .role_delete(pb::AuthRoleDeleteRequest {
                        role: "ghost".into(),
                    })
                    .await)
            })
        }),
        row("Auth.RoleGrantPermission", Need::Root, |a| {
            Box::pin(async move {
                let perm = authpb::Permission {
                    perm_type: 0,
                    key: b"a".to_vec(),
                    range_end: vec![],
                };
                let r = pb::AuthRoleGrantPermissionRequest {
                    name: "ghost".into(),
                    perm: Some(perm),
                };
                ok(a.auth().role_grant_permission(r).await)
            })
        }),
        row("Auth.RoleRevokePermission", Need::Root, |a| {
            Box::pin(async move {
                let r = pb::AuthRoleRevokePermissionRequest {
                    role: "ghost".into(),
                    key: b"a".to_vec(),
                    range_end: vec![],
                };
                ok(a.auth().role_revoke_permission(r).await)
            })
        }),
        row("Lock.Lock", Need::Key, |a| {
            Box::pin(async move {
                ok(a.lock()
                    .lock(lpb::LockRequest {
                        name: b"t/l".to_vec(),
                        lease: a.lease,
                    })
                    .await)
            })
        }),
        row("Lock.Unlock", Need::Key, |a| {
            Box::pin(async move {
                ok(a.lock()
                    .unlock(lpb::UnlockRequest {
                        key: b"t/l/none".to_vec(),
                    })
                    .await)
            })
        }),
        row("Election.Campaign", Need::Key, |a| {
            Box::pin(async move {
                let r = epb::CampaignRequest {
                    name: b"t/e".to_vec(),
                    lease: a.lease,
                    value: b"me".to_vec(),
                };
                ok(a.election().campaign(r).await)
            })
        }),
        row("Election.Proclaim", Need::Key, |a| {
            Box::pin(async move {
                let r = epb::ProclaimRequest {
                    leader: Some(leader_key(&a, b"t/e9")),
                    value: b"v".to_vec(),
                };
                ok(a.election().proclaim(r).await)
            })
        }),
        row("Election.Leader", Need::Key, |a| {
            Box::pin(async move {
                ok(a.election()
                    .leader(epb::LeaderRequest {
                        name: b"t/e".to_vec(),
                    })
                    .await)
            })
        }),
        row("Election.Observe", Need::Key, |a| {
            Box::pin(async move {
                ok(a.election()
                    .observe(epb::LeaderRequest {
                        name: b"t/e".to_vec(),
                    })
                    .await)
            })
        }),
        row("Election.Resign", Need::Key, |a| {
            Box::pin(async move {
                let r = epb::ResignRequest {
                    leader: Some(leader_key(&a, b"t/e9")),
                };
                ok(a.election().resign(r).await)
            })
        }),
        row("Auth.AuthDisable", Need::Root, |a| {
            Box::pin(async move {
                a.auth().auth_disable(pb::AuthDisableRequest {}).await?;
                ok(a.auth().auth_enable(pb::AuthEnableRequest {}).await)
            })
        }),
    ]
}

/// Every `Service.Method` the protos declare.
fn proto_methods() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etcd/proto");
    let mut methods = BTreeSet::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read proto dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read proto");
            let mut service = None;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next().map(str::to_string);
                } else if let (Some(s), Some(rest)) = (&service, line.strip_prefix("rpc ")) {
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
                    methods.insert(format!("{s}.{name}"));
                }
            }
        }
    }
    methods
}

// ---------------------------------------------------------------------------------------
// The cluster and its users.

/// Tokens (issued by member 1, so valid there only) and the shared lease.
struct Creds {
    root: String,
    alice: String,
    nobody: String,
    lease: i64,
}

fn channel(rt: &tokio::runtime::Runtime, c: &Cluster) -> Channel {
    let url = format!("http://{}", c.member(1).grpc_addr);
    rt.block_on(async {
        Channel::from_shared(url)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    })
}

fn api(ch: &Channel, token: Option<&str>, creds: &Creds, c: &Cluster) -> Api {
    let token = Token(token.map(|t| t.parse().expect("ascii token")));
    Api {
        ch: ch.clone(),
        token,
        lease: creds.lease,
        root: None,
        taken_peer_url: format!("http://{}", c.member(2).peer_addr),
    }
}

/// Root, a role `rw-t` with readwrite on `t/`, alice holding it, nobody holding nothing;
/// auth on.
fn set_up_users(rt: &tokio::runtime::Runtime, ch: &Channel) {
    rt.block_on(async {
        let a = pb::auth_client::AuthClient::new(ch.clone());
        let mut a = a;
        for (name, pw) in [
            ("root", ROOT_PW),
            ("alice", ALICE_PW),
            ("nobody", NOBODY_PW),
        ] {
            let r = pb::AuthUserAddRequest {
                name: name.into(),
                password: pw.into(),
                options: None,
            };
            a.user_add(r).await.expect("user add");
        }
        a.role_add(pb::AuthRoleAddRequest {
            name: "rw-t".into(),
        })
        .await
        .expect("role add");
        let perm = authpb::Permission {
            perm_type: authpb::permission::Type::Readwrite as i32,
            key: ALICE_PREFIX.to_vec(),
            range_end: b"t0".to_vec(),
        };
        let grant = pb::AuthRoleGrantPermissionRequest {
            name: "rw-t".into(),
            perm: Some(perm),
        };
        a.role_grant_permission(grant).await.expect("grant");
        for (user, role) in [("root", "root"), ("alice", "rw-t")] {
            let r = pb::AuthUserGrantRoleRequest {
                user: user.into(),
                role: role.into(),
            };
            a.user_grant_role(r).await.expect("grant role");
        }
        a.auth_enable(pb::AuthEnableRequest {})
            .await
            .expect("auth enable");
    });
}

/// Tokens from member 1 once it applied `auth enable`, and a lease root holds.
fn authenticate_all(rt: &tokio::runtime::Runtime, ch: &Channel) -> Creds {
    rt.block_on(async {
        let mut a = pb::auth_client::AuthClient::new(ch.clone());
        let root = token_of(&mut a, "root", ROOT_PW).await;
        let alice = token_of(&mut a, "alice", ALICE_PW).await;
        let nobody = token_of(&mut a, "nobody", NOBODY_PW).await;
        let t: MetadataValue<Ascii> = root.parse().expect("token");
        let mut lease = pb::lease_client::LeaseClient::with_interceptor(ch.clone(), Token(Some(t)));
        let id = lease
            .lease_grant(pb::LeaseGrantRequest { ttl: 3000, id: 0 })
            .await
            .expect("root lease")
            .into_inner()
            .id;
        Creds {
            root,
            alice,
            nobody,
            lease: id,
        }
    })
}

/// A token for `name`, polled (until [`DEADLINE`]) while member 1 has not applied
/// `auth enable` yet.
async fn token_of(a: &mut pb::auth_client::AuthClient<Channel>, name: &str, pw: &str) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let r = pb::AuthenticateRequest {
            name: name.into(),
            password: pw.into(),
        };
        match a.authenticate(r).await {
            Ok(t) => return t.into_inner().token,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("{name} could not authenticate at member 1 within {DEADLINE:?}: {last:?}");
}

/// The (refused, allowed) callers of a row.
fn callers(need: Need, creds: &Creds) -> (Option<Option<String>>, Option<String>) {
    match need {
        Need::Open => (None, None),
        Need::User => (Some(None), Some(creds.nobody.clone())),
        Need::Key => (Some(Some(creds.nobody.clone())), Some(creds.alice.clone())),
        Need::Root => (Some(Some(creds.alice.clone())), Some(creds.root.clone())),
    }
}

fn run_grpc_rows(
    rt: &tokio::runtime::Runtime,
    c: &Cluster,
    ch: &Channel,
    creds: &Creds,
) -> Vec<String> {
    let mut failures = Vec::new();
    let root_api = api(ch, Some(&creds.root), creds, c);
    for (i, row) in grpc_rows().into_iter().enumerate() {
        let (refused, allowed) = callers(row.need, creds);
        let with = |t: Option<&str>| {
            let mut a = api(ch, t, creds, c);
            a.root = Some(Box::new(root_api.clone()));
            a
        };
        if let Some(t) = refused {
            match rt.block_on((row.call)(with(t.as_deref()))) {
                Err(s) if is_auth_refusal(s.message()) => {}
                other => failures.push(format!(
                    "grpc row {i} {} ({:?}): not refused: {other:?}",
                    row.method, row.need
                )),
            }
        }
        if let Err(s) = rt.block_on((row.call)(with(allowed.as_deref())))
            && is_auth_refusal(s.message())
        {
            failures.push(format!(
                "grpc row {i} {} ({:?}): allowed caller refused: {s:?}",
                row.method, row.need
            ));
        }
    }
    failures
}

// ---------------------------------------------------------------------------------------
// The /v3 JSON gateway and the /v1 HTTP API.

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

struct HttpRow {
    method: &'static str,
    /// The route as the router names it.
    route: &'static str,
    /// The request path (and query) sent.
    path: String,
    need: Need,
    body: Option<String>,
}

/// Every gateway route; `lease` is a lease root holds, `taken_peer_url` a member's peer URL.
/// Auth disable is last.
fn gateway_rows(lease: i64, taken_peer_url: &str) -> Vec<HttpRow> {
    let post = |route: &'static str, need, body: String| HttpRow {
        method: "POST",
        route,
        path: route.to_string(),
        need,
        body: Some(body),
    };
    let t = b64("t/x");
    let z = b64("z/x");
    let txn_else = format!(
        r#"{{"compare":[{{"key":"{}","target":"VERSION","result":"EQUAL","version":"0"}}],"success":[{{"request_put":{{"key":"{t}","value":"dg=="}}}}],"failure":[{{"request_put":{{"key":"{z}","value":"dg=="}}}}]}}"#,
        b64("t/never")
    );
    let leader = format!(
        r#"{{"name":"{}","key":"{}","rev":"1","lease":"{lease}"}}"#,
        b64("t/e9"),
        b64("t/e9/1")
    );
    vec![
        post(
            "/v3/lock/lock",
            Need::Key,
            format!(r#"{{"name":"{}","lease":"{lease}"}}"#, b64("t/l")),
        ),
        post(
            "/v3/lock/unlock",
            Need::Key,
            format!(r#"{{"key":"{}"}}"#, b64("t/l/none")),
        ),
        post(
            "/v3/election/campaign",
            Need::Key,
            format!(
                r#"{{"name":"{}","lease":"{lease}","value":"dg=="}}"#,
                b64("t/e")
            ),
        ),
        post(
            "/v3/election/proclaim",
            Need::Key,
            format!(r#"{{"leader":{leader},"value":"dg=="}}"#),
        ),
        post(
            "/v3/election/leader",
            Need::Key,
            format!(r#"{{"name":"{}"}}"#, b64("t/e")),
        ),
        post(
            "/v3/election/resign",
            Need::Key,
            format!(r#"{{"leader":{leader}}}"#),
        ),
        post(
            "/v3/election/observe",
            Need::Key,
            format!(r#"{{"name":"{}"}}"#, b64("t/e")),
        ),
        post("/v3/kv/range", Need::Key, format!(r#"{{"key":"{t}"}}"#)),
        post("/v3/kv/range", Need::Root, format!(r#"{{"key":"{z}"}}"#)),
        post(
            "/v3/kv/put",
            Need::Key,
            format!(r#"{{"key":"{t}","value":"dg=="}}"#),
        ),
        post(
            "/v3/kv/put",
            Need::Root,
            format!(r#"{{"key":"{z}","value":"dg=="}}"#),
        ),
        post(
            "/v3/kv/deleterange",
            Need::Key,
            format!(r#"{{"key":"{t}"}}"#),
        ),
        post("/v3/kv/txn", Need::Root, txn_else),
        post(
            "/v3/kv/compaction",
            Need::Root,
            r#"{"revision":"1"}"#.into(),
        ),
        post(
            "/v3/watch",
            Need::Key,
            format!(r#"{{"create_request":{{"key":"{t}"}}}}"#),
        ),
        post(
            "/v3/watch",
            Need::Root,
            format!(r#"{{"create_request":{{"key":"{z}"}}}}"#),
        ),
        post("/v3/lease/grant", Need::User, r#"{"TTL":"60"}"#.into()),
        post("/v3/lease/revoke", Need::User, r#"{"ID":"1234567"}"#.into()),
        post(
            "/v3/kv/lease/revoke",
            Need::User,
            r#"{"ID":"1234567"}"#.into(),
        ),
        post(
            "/v3/lease/keepalive",
            Need::User,
            format!(r#"{{"ID":"{lease}"}}"#),
        ),
        post(
            "/v3/lease/timetolive",
            Need::User,
            format!(r#"{{"ID":"{lease}"}}"#),
        ),
        post(
            "/v3/kv/lease/timetolive",
            Need::User,
            format!(r#"{{"ID":"{lease}"}}"#),
        ),
        post("/v3/lease/leases", Need::User, "{}".into()),
        post("/v3/kv/lease/leases", Need::User, "{}".into()),
        post("/v3/cluster/member/list", Need::Open, "{}".into()),
        post(
            "/v3/cluster/member/add",
            Need::Root,
            format!(r#"{{"peerURLs":["{taken_peer_url}"],"isLearner":true}}"#),
        ),
        post(
            "/v3/cluster/member/remove",
            Need::Root,
            r#"{"ID":"999"}"#.into(),
        ),
        post(
            "/v3/cluster/member/update",
            Need::Root,
            r#"{"ID":"999","peerURLs":["http://127.0.0.1:1"]}"#.into(),
        ),
        post(
            "/v3/cluster/member/promote",
            Need::Root,
            r#"{"ID":"999"}"#.into(),
        ),
        post("/v3/maintenance/status", Need::Open, "{}".into()),
        post("/v3/maintenance/alarm", Need::Open, "{}".into()),
        post(
            "/v3/maintenance/alarm",
            Need::Root,
            r#"{"action":"DEACTIVATE","alarm":"NOSPACE"}"#.into(),
        ),
        post("/v3/maintenance/defragment", Need::Root, "{}".into()),
        post("/v3/maintenance/hash", Need::Root, "{}".into()),
        post("/v3/maintenance/hashkv", Need::Root, "{}".into()),
        post("/v3/maintenance/snapshot", Need::Root, "{}".into()),
        post(
            "/v3/maintenance/transfer-leadership",
            Need::Root,
            r#"{"targetID":"999"}"#.into(),
        ),
        post("/v3/auth/enable", Need::Open, "{}".into()),
        post(
            "/v3/auth/authenticate",
            Need::Open,
            format!(r#"{{"name":"alice","password":"{ALICE_PW}"}}"#),
        ),
        post(
            "/v3/auth/user/add",
            Need::Root,
            format!(r#"{{"name":"{}","password":"pw"}}"#, fresh("gw-user")),
        ),
        post("/v3/auth/user/get", Need::Root, r#"{"name":"root"}"#.into()),
        post("/v3/auth/user/list", Need::Root, "{}".into()),
        post(
            "/v3/auth/user/delete",
            Need::Root,
            r#"{"name":"ghost"}"#.into(),
        ),
        post(
            "/v3/auth/user/changepw",
            Need::Root,
            r#"{"name":"ghost","password":"x"}"#.into(),
        ),
        post(
            "/v3/auth/user/grant",
            Need::Root,
            r#"{"user":"ghost","role":"rw-t"}"#.into(),
        ),
        post(
            "/v3/auth/user/revoke",
            Need::Root,
            r#"{"name":"ghost","role":"rw-t"}"#.into(),
        ),
        post(
            "/v3/auth/role/add",
            Need::Root,
            format!(r#"{{"name":"{}"}}"#, fresh("gw-role")),
        ),
        post("/v3/auth/role/get", Need::Root, r#"{"role":"root"}"#.into()),
        post("/v3/auth/role/list", Need::Root, "{}".into()),
        post(
            "/v3/auth/role/delete",
            Need::Root,
            r#"{"role":"ghost"}"#.into(),
        ),
        post(
            "/v3/auth/role/grant",
            Need::Root,
            r#"{"name":"ghost","perm":{"key":"YQ=="}}"#.into(),
        ),
        post(
            "/v3/auth/role/revoke",
            Need::Root,
            r#"{"role":"ghost","key":"YQ=="}"#.into(),
        ),
        HttpRow {
            method: "GET",
            route: "/version",
            path: "/version".into(),
            need: Need::Open,
            body: None,
        },
        HttpRow {
            method: "GET",
            route: "/health",
            path: "/health".into(),
            need: Need::Open,
            body: None,
        },
        post("/v3/auth/disable", Need::Root, "{}".into()),
    ]
}

/// Every /v1 route; `taken_peer` is a member's peer address (an add the configuration
/// refuses).
fn http_rows(taken_peer: &str) -> Vec<HttpRow> {
    let r = |method, route, path: &str, need, body: Option<&str>| HttpRow {
        method,
        route,
        path: path.to_string(),
        need,
        body: body.map(str::to_string),
    };
    let taken = format!(r#"{{"peer_addr":"{taken_peer}"}}"#);
    vec![
        r("GET", "/v1/kv/{key}", "/v1/kv/t%2Fx", Need::Key, None),
        r("GET", "/v1/kv/{key}", "/v1/kv/z%2Fx", Need::Root, None),
        r(
            "PUT",
            "/v1/kv/{key}",
            "/v1/kv/t%2Fx",
            Need::Key,
            Some(r#"{"value":"v"}"#),
        ),
        r(
            "PUT",
            "/v1/kv/{key}",
            "/v1/kv/z%2Fx",
            Need::Root,
            Some(r#"{"value":"v"}"#),
        ),
        r("DELETE", "/v1/kv/{key}", "/v1/kv/t%2Fgone", Need::Key, None),
        r(
            "POST",
            "/v1/kv/{key}/cas",
            "/v1/kv/t%2Fcas/cas",
            Need::Key,
            Some(r#"{"expect":"absent","value":"v"}"#),
        ),
        r("GET", "/v1/kv", "/v1/kv?prefix=t/", Need::Key, None),
        r("GET", "/v1/kv", "/v1/kv?prefix=z/", Need::Root, None),
        r(
            "POST",
            "/v1/compact",
            "/v1/compact",
            Need::Root,
            Some(r#"{"revision":1}"#),
        ),
        r(
            "POST",
            "/v1/ranges/split",
            "/v1/ranges/split",
            Need::Root,
            Some(r#"{"key":"t/x"}"#),
        ),
        r(
            "POST",
            "/v1/ranges/merge",
            "/v1/ranges/merge",
            Need::Root,
            Some(r#"{"key":"t/x"}"#),
        ),
        r(
            "POST",
            "/v1/ranges/move",
            "/v1/ranges/move",
            Need::Root,
            Some(r#"{"key":"t/x","from":1,"to":2}"#),
        ),
        r("GET", "/v1/watch", "/v1/watch?prefix=t/", Need::Key, None),
        r("GET", "/v1/watch", "/v1/watch?prefix=z/", Need::Root, None),
        r("GET", "/v1/status", "/v1/status", Need::Open, None),
        r("GET", "/v1/snapshot", "/v1/snapshot", Need::Root, None),
        r("GET", "/v1/members", "/v1/members", Need::Open, None),
        HttpRow {
            method: "POST",
            route: "/v1/members",
            path: "/v1/members".into(),
            need: Need::Root,
            body: Some(taken),
        },
        r(
            "DELETE",
            "/v1/members/{id}",
            "/v1/members/999",
            Need::Root,
            None,
        ),
        r(
            "PUT",
            "/v1/members/{id}",
            "/v1/members/999",
            Need::Root,
            Some(r#"{"peer_addr":"127.0.0.1:1"}"#),
        ),
        r(
            "POST",
            "/v1/members/{id}/promote",
            "/v1/members/999/promote",
            Need::Root,
            None,
        ),
        r(
            "POST",
            "/v1/members/{id}/lead",
            "/v1/members/999/lead",
            Need::Root,
            None,
        ),
        r("GET", "/healthz", "/healthz", Need::Open, None),
        r("GET", "/metrics", "/metrics", Need::Open, None),
        r("GET", "/openapi.json", "/openapi.json", Need::Open, None),
    ]
}

/// Sends one row's request as `token`: whether it was refused for auth, and what came back.
fn send(c: &Cluster, row: &HttpRow, token: Option<&str>) -> (bool, String) {
    use std::io::BufRead;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = c.url(1, &row.path);
    let mut req = match row.method {
        "GET" => client.get(&url),
        "PUT" => client.put(&url),
        "DELETE" => client.delete(&url),
        _ => client.post(&url),
    };
    if let Some(t) = token {
        req = req.header("Authorization", t);
    }
    if let Some(b) = &row.body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.clone());
    }
    let resp = match req.send() {
        Ok(r) => r,
        Err(e) => return (false, format!("send failed: {e}")),
    };
    let status = resp.status().as_u16();
    // Streams (watch, keep-alive, observe) answer line by line: the first line is enough.
    let mut first = String::new();
    let _ = std::io::BufReader::new(resp).read_line(&mut first);
    let refused = status == 401 || status == 403 || is_auth_refusal(&first);
    (refused, format!("{status} {first}"))
}

fn run_http_rows(c: &Cluster, rows: &[HttpRow], creds: &Creds, what: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for row in rows {
        let (refused, allowed) = callers(row.need, creds);
        if let Some(t) = refused {
            let (was_refused, got) = send(c, row, t.as_deref());
            if !was_refused {
                failures.push(format!(
                    "{what} {} {} ({:?}): not refused: {got}",
                    row.method, row.path, row.need
                ));
            }
        }
        let (was_refused, got) = send(c, row, allowed.as_deref());
        if was_refused {
            failures.push(format!(
                "{what} {} {} ({:?}): allowed caller refused: {got}",
                row.method, row.path, row.need
            ));
        }
    }
    failures
}

/// Runs the whole table against `c` (auth not yet set up); the rows that failed.
fn run_table(c: &Cluster) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ch = channel(&rt, c);
    set_up_users(&rt, &ch);
    let creds = authenticate_all(&rt, &ch);
    let mut failures = run_grpc_rows(&rt, c, &ch, &creds);
    // The AuthDisable row turned auth off and on again, which forgets every token.
    let creds = authenticate_all(&rt, &ch);
    let taken = format!("http://{}", c.member(2).peer_addr);
    failures.extend(run_http_rows(
        c,
        &gateway_rows(creds.lease, &taken),
        &creds,
        "gateway",
    ));
    rt.block_on(async {
        let mut a = pb::auth_client::AuthClient::new(ch.clone());
        a.auth_enable(pb::AuthEnableRequest {})
            .await
            .expect("re-enable");
    });
    let creds = authenticate_all(&rt, &ch);
    failures.extend(run_http_rows(
        c,
        &http_rows(&c.member(2).peer_addr),
        &creds,
        "http",
    ));
    failures
}

#[test]
fn every_rpc_and_route_has_a_row() {
    let covered: BTreeSet<String> = grpc_rows().iter().map(|r| r.method.to_string()).collect();
    let missing: Vec<String> = proto_methods().difference(&covered).cloned().collect();
    assert!(
        missing.is_empty(),
        "gRPC methods without a row in the auth table: {missing:?}"
    );
    let gw: BTreeSet<&str> = gateway_rows(1, "http://127.0.0.1:1")
        .iter()
        .map(|r| r.route)
        .collect();
    for r in synod_etcd::gateway::Gateway::routes() {
        assert!(
            gw.contains(r.path),
            "gateway route {} has no row in the auth table",
            r.path
        );
    }
    let rows: BTreeSet<(&str, &str)> = http_rows("127.0.0.1:1")
        .iter()
        .map(|r| (r.method, r.route))
        .collect();
    for r in synod_http::ROUTES {
        assert!(
            rows.contains(&(r.method, r.path)),
            "HTTP route {} {} has no row in the auth table",
            r.method,
            r.path
        );
    }
}

#[test]
fn every_rpc_and_route_refuses_the_unauthorised_and_serves_the_authorised() {
    let c = Cluster::start(3, "omnipaxos");
    let failures = run_table(&c);
    assert!(
        failures.is_empty(),
        "auth table failures:\n{}",
        failures.join("\n")
    );
}

/// The planted bug `txn-else-branch-unchecked` on every member: the table must catch it, on
/// the rows whose Txn writes a forbidden key in its else branch, and nowhere else.
#[test]
fn the_table_catches_a_txn_check_that_skips_the_else_branch() {
    let mut c = Cluster::start(3, "omnipaxos");
    for id in 1..=3 {
        c.kill(id);
        c.restart_with(id, &["--plant-bug", "txn-else-branch-unchecked"]);
    }
    c.wait_all_reach_leader(DEADLINE);
    let failures = run_table(&c);
    eprintln!("caught:\n{}", failures.join("\n"));
    assert!(
        failures.iter().any(|f| f.starts_with("grpc"))
            && failures.iter().any(|f| f.starts_with("gateway")),
        "the planted bug went unnoticed on a transport: {failures:?}"
    );
    for f in &failures {
        assert!(
            f.contains("txn") || f.contains("Txn"),
            "unexpected failure: {f}"
        );
        assert!(f.contains("not refused"), "unexpected failure: {f}");
    }
}

// ---------------------------------------------------------------------------------------
// etcdctl, restarts, restore, python-etcd3.

/// etcdctl's status, stdout and stderr.
fn ctl_raw(etcdctl: &Path, endpoints: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = etcdctl_command(etcdctl, endpoints);
    cmd.args(args);
    let (status, out, err) = run_with_deadline(cmd, DEADLINE);
    (status.success(), out, err)
}

fn ctl(etcdctl: &Path, endpoints: &str, args: &[&str]) -> String {
    let (ok, out, err) = ctl_raw(etcdctl, endpoints, args);
    assert!(ok, "etcdctl {args:?} failed:\n{out}\n{err}");
    out
}

/// etcdctl must fail with `message` in its output.
fn ctl_refused(etcdctl: &Path, endpoints: &str, args: &[&str], message: &str) {
    let (ok, out, err) = ctl_raw(etcdctl, endpoints, args);
    assert!(!ok, "etcdctl {args:?} succeeded:\n{out}");
    assert!(
        err.contains(message) || out.contains(message),
        "etcdctl {args:?}: expected {message:?}, got:\n{out}\n{err}"
    );
}

const ROOT: &str = "--user=root:rootpw";
const READER: &str = "--user=reader:readerpw";

/// Sets up root, a read-only user on `app/` and `from/`-on, and enables auth with etcdctl.
fn etcdctl_set_up(etcdctl: &Path, all: &str) {
    ctl(etcdctl, all, &["put", "app/a", "1"]);
    ctl(etcdctl, all, &["put", "secret", "s"]);
    ctl_refused(
        etcdctl,
        all,
        &["auth", "enable"],
        "root user does not exist",
    );
    ctl(etcdctl, all, &["user", "add", "root:rootpw"]);
    ctl_refused(
        etcdctl,
        all,
        &["user", "add", "root:again"],
        "user name already exists",
    );
    ctl(etcdctl, all, &["role", "add", "ro"]);
    ctl_refused(
        etcdctl,
        all,
        &["role", "add", "ro"],
        "role name already exists",
    );
    ctl(
        etcdctl,
        all,
        &[
            "role",
            "grant-permission",
            "ro",
            "read",
            "app/",
            "--prefix=true",
        ],
    );
    ctl(
        etcdctl,
        all,
        &[
            "role",
            "grant-permission",
            "ro",
            "readwrite",
            "zz",
            "--from-key",
        ],
    );
    ctl(etcdctl, all, &["user", "add", "reader:readerpw"]);
    ctl(etcdctl, all, &["user", "grant-role", "reader", "ro"]);
    ctl_refused(
        etcdctl,
        all,
        &["user", "grant-role", "ghost", "ro"],
        "user name not found",
    );
    ctl_refused(
        etcdctl,
        all,
        &["user", "grant-role", "reader", "ghost"],
        "role name not found",
    );
    // Root lacks the root role: etcdctl meets "root user does not have root role", adds the
    // role, grants it to root and enables again — all through the Auth API.
    let (ok, out, err) = ctl_raw(etcdctl, all, &["auth", "enable"]);
    assert!(ok && out.contains("Authentication Enabled"), "{out}\n{err}");
    assert!(err.contains("root user does not have root role"), "{err}");
}

/// The read-only user's view, as etcdctl shows it.
fn check_reader(etcdctl: &Path, ep: &str) {
    assert_eq!(
        ctl(etcdctl, ep, &[READER, "get", "app/a", "--print-value-only"]),
        "1\n"
    );
    ctl_refused(
        etcdctl,
        ep,
        &[READER, "put", "app/a", "2"],
        "permission denied",
    );
    ctl_refused(etcdctl, ep, &[READER, "get", "secret"], "permission denied");
    ctl_refused(
        etcdctl,
        ep,
        &[READER, "get", "app", "--prefix"],
        "permission denied",
    );
    ctl(etcdctl, ep, &[READER, "put", "zzz", "from-key grant"]);
    ctl_refused(etcdctl, ep, &["get", "app/a"], "user name is empty");
    ctl_refused(
        etcdctl,
        ep,
        &["--user=reader:wrong", "get", "app/a"],
        "authentication failed, invalid user ID or password",
    );
}

#[test]
fn etcdctl_users_roles_permissions_restart_and_disable() {
    let Some(etcdctl) = etcdctl() else { return };
    let mut c = Cluster::start(3, "omnipaxos");
    let all = c.grpc_endpoints();
    etcdctl_set_up(&etcdctl, &all);
    let one = c.member(3).grpc_addr.clone();
    wait_until(DEADLINE, "n3 enforces auth", || {
        let (ok, _, _) = ctl_raw(&etcdctl, &one, &["get", "app/a", "--consistency=s"]);
        (!ok).then_some(())
    });
    check_reader(&etcdctl, &one);
    synodctl_as_a_user(&c.member(3).http_addr);
    // A txn touching a forbidden key in its else branch is refused even though its compare
    // holds (both branches are checked).
    let txn = "value(\"app/a\") = \"1\"\n\nget app/a\n\nget secret\n\n";
    let mut cmd = etcdctl_command(&etcdctl, &one);
    cmd.args([READER, "txn"])
        .stdin(std::process::Stdio::piped());
    let (ok, out, err) = run_stdin(cmd, txn);
    assert!(
        !ok && err.contains("permission denied"),
        "txn: {out}\n{err}"
    );
    // A watch on a forbidden prefix is refused.
    let mut cmd = etcdctl_command(&etcdctl, &one);
    cmd.args([READER, "watch", "--prefix", "sec"]);
    let (out, err) = run_for(cmd, Duration::from_secs(5));
    assert!(
        format!("{out}{err}").contains("permission denied"),
        "watch: {out}\n{err}"
    );
    // Root does everything, members and maintenance included; the reader does not.
    assert_eq!(
        ctl(
            &etcdctl,
            &one,
            &[ROOT, "get", "secret", "--print-value-only"]
        ),
        "s\n"
    );
    assert_eq!(
        ctl(&etcdctl, &one, &[ROOT, "member", "list"])
            .lines()
            .count(),
        3
    );
    ctl_refused(
        &etcdctl,
        &one,
        &[READER, "compaction", "1"],
        "permission denied",
    );
    ctl_refused(
        &etcdctl,
        &one,
        &[READER, "user", "list"],
        "permission denied",
    );
    ctl_refused(
        &etcdctl,
        &one,
        &[ROOT, "user", "delete", "root"],
        "invalid auth management",
    );
    let users = ctl(&etcdctl, &one, &[ROOT, "user", "list"]);
    assert_eq!(users, "reader\nroot\n");
    let perms = ctl(&etcdctl, &one, &[ROOT, "role", "get", "ro"]);
    assert!(perms.contains("app/") && perms.contains("zz"), "{perms}");

    // Every member restarts: the auth state is in their logs and checkpoints.
    for id in 1..=3 {
        c.kill(id);
        c.restart(id);
    }
    c.wait_all_reach_leader(DEADLINE);
    for m in c.members.clone() {
        check_reader(&etcdctl, &m.grpc_addr);
    }

    // Disabled, everything is open again.
    let out = ctl(&etcdctl, &all, &[ROOT, "auth", "disable"]);
    assert!(out.contains("Authentication Disabled"), "{out}");
    wait_until(DEADLINE, "every member open", || {
        c.members
            .iter()
            .all(|m| {
                ctl_raw(
                    &etcdctl,
                    &m.grpc_addr,
                    &["get", "secret", "--consistency=s"],
                )
                .0
            })
            .then_some(())
    });
    ctl(&etcdctl, &one, &["put", "secret", "open"]);
}

/// synodctl's `--user name:password` over the HTTP API: it authenticates at the endpoint and
/// sends the token as `Authorization`; without it the member refuses.
fn synodctl_as_a_user(http: &str) {
    let run = |args: &[&str]| {
        let mut cmd = Command::new(common::synodctl());
        cmd.args(["--endpoints", http]).args(args);
        run_with_deadline(cmd, DEADLINE)
    };
    let (status, out, err) = run(&["--user", "reader:readerpw", "get", "app/a"]);
    assert!(status.success() && out == "app/a\n1\n", "{out}{err}");
    let (status, out, err) = run(&["--user", "reader:readerpw", "put", "app/a", "2"]);
    assert!(
        !status.success() && format!("{out}{err}").contains("permission denied"),
        "{out}{err}"
    );
    let (status, out, err) = run(&["get", "app/a"]);
    assert!(!status.success(), "no --user: {out}{err}");
    let (status, out, err) = run(&["--user", "reader:wrong", "get", "app/a"]);
    assert!(
        !status.success() && format!("{out}{err}").contains("authentication failed"),
        "{out}{err}"
    );
}

/// Runs `cmd` for at most `max` (a watch does not end by itself), then its output.
fn run_for(mut cmd: Command, max: Duration) -> (String, String) {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + max;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn run_stdin(mut cmd: Command, input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("etcdctl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn auth_state_survives_snapshot_and_restore() {
    let Some(etcdctl) = etcdctl() else { return };
    let old = Cluster::start(3, "omnipaxos");
    let all = old.grpc_endpoints();
    etcdctl_set_up(&etcdctl, &all);
    let leader = old.wait_for_leader(DEADLINE);
    let ep = old.member(leader).grpc_addr.clone();
    let file = old.dir.path().join("auth.db");
    let file_str = file.to_str().expect("utf-8 path");
    ctl_refused(
        &etcdctl,
        &ep,
        &[READER, "snapshot", "save", file_str],
        "permission denied",
    );
    let saved = ctl(&etcdctl, &ep, &[ROOT, "snapshot", "save", file_str]);
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    let bytes = std::fs::read(&file).expect("read backup");
    for secret in [ROOT_PW, "readerpw"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the backup holds the plaintext password {secret}"
        );
    }
    let restored = Cluster::start_prepared(3, "omnipaxos", &|_| {}, &|config, dir| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_synod"));
        cmd.args(["restore", file_str, "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(dir);
        let (status, out, err) = run_with_deadline(cmd, DEADLINE);
        assert!(status.success(), "synod restore: {out}\n{err}");
    });
    let ep = restored.member(2).grpc_addr.clone();
    check_reader(&etcdctl, &ep);
}

#[test]
fn python_etcd3_puts_and_gets_as_a_user() {
    let Some(python) = common::python_etcd3() else {
        return;
    };
    let Some(etcdctl) = etcdctl() else { return };
    let c = Cluster::start(3, "omnipaxos");
    let all = c.grpc_endpoints();
    etcdctl_set_up(&etcdctl, &all);
    ctl(
        &etcdctl,
        &all,
        &[
            ROOT,
            "role",
            "grant-permission",
            "ro",
            "readwrite",
            "py/",
            "--prefix=true",
        ],
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/auth_checks.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--endpoint")
        .arg(&c.member(1).grpc_addr);
    let (status, out, err) = run_with_deadline(cmd, Duration::from_secs(120));
    assert!(
        status.success(),
        "python-etcd3 auth checks failed ({status}):\n{out}\n{err}"
    );
    for check in ["put-get", "refused-elsewhere", "bad-password"] {
        assert!(
            out.contains(&format!("PASS {check}")),
            "{check} not run:\n{out}"
        );
    }
}

/// Auth changes are replicated commands every log engine decides: on VR through its log, on
/// EPaxos ordered against every other command (an auth change's footprint is global).
#[test]
fn auth_on_vr_and_epaxos() {
    let Some(etcdctl) = etcdctl() else { return };
    for engine in ["vr", "epaxos"] {
        let c = Cluster::start(3, engine);
        etcdctl_set_up(&etcdctl, &c.grpc_endpoints());
        for m in &c.members {
            wait_until(DEADLINE, "member enforces auth", || {
                let (ok, _, _) =
                    ctl_raw(&etcdctl, &m.grpc_addr, &["get", "app/a", "--consistency=s"]);
                (!ok).then_some(())
            });
            check_reader(&etcdctl, &m.grpc_addr);
        }
    }
}

/// The member's own work needs no client's token: auto-compaction goes on with auth on.
#[test]
fn auto_compaction_runs_with_auth_on() {
    let Some(etcdctl) = etcdctl() else { return };
    let c = Cluster::start_configured(3, "omnipaxos", &|cfg| {
        cfg.history.auto_compaction_mode = "revision".into();
        cfg.history.retention_revisions = 10;
    });
    let all = c.grpc_endpoints();
    etcdctl_set_up(&etcdctl, &all);
    for i in 0..40 {
        ctl(&etcdctl, &all, &[ROOT, "put", "k", &i.to_string()]);
    }
    let ep = c.member(1).grpc_addr.clone();
    let err = wait_until(
        Duration::from_secs(15),
        "auto-compaction with auth on",
        || {
            let (ok, out, err) = ctl_raw(&etcdctl, &ep, &[ROOT, "get", "k", "--rev=3"]);
            (!ok).then(|| format!("{out}{err}"))
        },
    );
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
}
