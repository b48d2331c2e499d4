//! The etcd v3 gRPC API end to end: a tonic client generated from the same protos talks to
//! `synod_etcd::serve` over loopback, backed by a single-node stand-in store.

use crate::common;

use bytes::{Buf, BufMut};
use common::TestServer;
use std::time::{Duration, Instant};
use synod_etcd::pb::etcdserverpb as pb;
use synod_etcd::pb::etcdserverpb::auth_client::AuthClient;
use synod_etcd::pb::etcdserverpb::cluster_client::ClusterClient;
use synod_etcd::pb::etcdserverpb::kv_client::KvClient;
use synod_etcd::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Generous bound on one RPC against a local in-memory node; exceeding it is a hang.
const RPC_DEADLINE: Duration = Duration::from_secs(5);

async fn channel(s: &TestServer) -> Channel {
    Channel::from_shared(s.url())
        .expect("valid url")
        .connect()
        .await
        .expect("connect to test server")
}

async fn kv(s: &TestServer) -> KvClient<Channel> {
    KvClient::new(channel(s).await).max_encoding_message_size(64 * 1024 * 1024)
}

async fn put(c: &mut KvClient<Channel>, k: &str, v: &str) -> pb::PutResponse {
    c.put(pb::PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
}

fn range(key: &str, range_end: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.into(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

fn keys(r: &pb::RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

#[tokio::test]
async fn put_get_prefix_limit_count_and_keys_only() {
    let s = TestServer::start().await;
    let mut c = kv(&s).await;
    let p = put(&mut c, "fruit/apple", "red").await;
    let h = p.header.expect("put has a header");
    assert_eq!((h.cluster_id, h.member_id, h.revision), (0x5eed, 1, 1));
    put(&mut c, "fruit/banana", "yellow").await;
    put(&mut c, "fruit/cherry", "dark red").await;
    put(&mut c, "veg/leek", "green").await;
    // Overwrite: version 2, create_revision kept, prev_kv returned.
    let p = c
        .put(pb::PutRequest {
            key: "fruit/apple".into(),
            value: "green".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let prev = p.prev_kv.expect("prev_kv asked for");
    assert_eq!((prev.value.as_slice(), prev.version), (&b"red"[..], 1));
    assert_eq!(p.header.unwrap().revision, 5);

    let r = c
        .range(range("fruit/apple", b""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.kvs.len(), 1);
    let kv = &r.kvs[0];
    assert_eq!(kv.value, b"green");
    assert_eq!((kv.version, kv.create_revision, kv.mod_revision), (2, 1, 5));
    assert_eq!((r.count, r.more, r.header.unwrap().revision), (1, false, 5));

    // Prefix "fruit/" = [fruit/, fruit0).
    let r = c
        .range(range("fruit/", b"fruit0"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&r), ["fruit/apple", "fruit/banana", "fruit/cherry"]);

    // "\0" range end: every key >= key.
    let r = c.range(range("fruit/b", &[0])).await.unwrap().into_inner();
    assert_eq!(keys(&r), ["fruit/banana", "fruit/cherry", "veg/leek"]);

    let mut req = range("fruit/", b"fruit0");
    req.limit = 2;
    let r = c.range(req).await.unwrap().into_inner();
    assert_eq!(keys(&r), ["fruit/apple", "fruit/banana"]);
    assert_eq!((r.count, r.more), (3, true));

    let mut req = range("a", &[0]);
    req.count_only = true;
    let r = c.range(req).await.unwrap().into_inner();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 4);

    let mut req = range("fruit/", b"fruit0");
    req.keys_only = true;
    let r = c.range(req).await.unwrap().into_inner();
    assert_eq!(r.kvs.len(), 3);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));

    // Serializable reads are served too (sequential consistency).
    let mut req = range("veg/leek", b"");
    req.serializable = true;
    let r = c.range(req).await.unwrap().into_inner();
    assert_eq!(r.kvs[0].value, b"green");

    // A missing key: no kvs, count 0.
    let r = c.range(range("nope", b"")).await.unwrap().into_inner();
    assert_eq!((r.kvs.len(), r.count), (0, 0));

    let m = s.handle.metrics().encode();
    assert!(
        m.contains(r#"api="grpc",op="range",outcome="ok""#),
        "latency recorded: {m}"
    );
    // Every successful put was counted in the registered series (the service keeps a cached
    // handle to it): four puts plus the overwrite above.
    assert!(
        m.contains(r#"synod_request_seconds_count{api="grpc",op="put",outcome="ok"} 5"#),
        "put latencies counted: {m}"
    );
    s.stop().await;
}

#[tokio::test]
async fn delete_range_returns_prev_kvs() {
    let s = TestServer::start().await;
    let mut c = kv(&s).await;
    for k in ["a/1", "a/2", "a/3", "b/1"] {
        put(&mut c, k, &format!("v{k}")).await;
    }
    let d = c
        .delete_range(pb::DeleteRangeRequest {
            key: "a/1".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.deleted, 1);
    assert_eq!(d.prev_kvs.len(), 1);
    assert_eq!(d.prev_kvs[0].value, b"va/1");
    let d = c
        .delete_range(pb::DeleteRangeRequest {
            key: "a/".into(),
            range_end: "a0".into(),
            prev_kv: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.deleted, 2);
    let prev: Vec<_> = d.prev_kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(prev, [b"a/2".to_vec(), b"a/3".to_vec()]);
    // Without prev_kv the count is still reported, the old values are not.
    let d = c
        .delete_range(pb::DeleteRangeRequest {
            key: "b/1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((d.deleted, d.prev_kvs.len()), (1, 0));
    let r = c.range(range("a", &[0])).await.unwrap().into_inner();
    assert_eq!(r.count, 0);
    s.stop().await;
}

fn cmp(
    key: &str,
    target: pb::compare::CompareTarget,
    result: pb::compare::CompareResult,
    union: pb::compare::TargetUnion,
) -> pb::Compare {
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(union),
        range_end: Vec::new(),
    }
}

fn op_put(k: &str, v: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

fn op_get(k: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(range(k, b""))),
    }
}

fn op_del(k: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: k.into(),
                ..Default::default()
            },
        )),
    }
}

#[tokio::test]
async fn txn_takes_the_branch_its_compares_choose() {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let s = TestServer::start().await;
    let mut c = kv(&s).await;
    put(&mut c, "k", "v1").await; // rev 1, version 1
    put(&mut c, "other", "x").await; // rev 2
    put(&mut c, "k", "v2").await; // rev 3, version 2, create 1, mod 3

    // (compare, expected outcome) over every target and every result.
    let cases = [
        (cmp("k", T::Value, R::Equal, U::Value("v2".into())), true),
        (cmp("k", T::Value, R::Equal, U::Value("v1".into())), false),
        (cmp("k", T::Value, R::NotEqual, U::Value("v1".into())), true),
        (cmp("k", T::Value, R::Greater, U::Value("v1".into())), true),
        (cmp("k", T::Value, R::Less, U::Value("v1".into())), false),
        (cmp("k", T::Version, R::Equal, U::Version(2)), true),
        (cmp("k", T::Version, R::Greater, U::Version(2)), false),
        (cmp("k", T::Version, R::Less, U::Version(3)), true),
        (cmp("k", T::Create, R::Equal, U::CreateRevision(1)), true),
        (
            cmp("k", T::Create, R::NotEqual, U::CreateRevision(1)),
            false,
        ),
        (cmp("k", T::Mod, R::Equal, U::ModRevision(3)), true),
        (cmp("k", T::Mod, R::Less, U::ModRevision(3)), false),
        (cmp("k", T::Mod, R::Greater, U::ModRevision(2)), true),
        // A missing key compares as version / revisions 0; a VALUE compare on it is false.
        (cmp("missing", T::Version, R::Equal, U::Version(0)), true),
        (
            cmp("missing", T::Create, R::Equal, U::CreateRevision(0)),
            true,
        ),
        (
            cmp("missing", T::Value, R::NotEqual, U::Value("z".into())),
            false,
        ),
    ];
    for (i, (compare, expect)) in cases.into_iter().enumerate() {
        let t = c
            .txn(pb::TxnRequest {
                compare: vec![compare.clone()],
                success: vec![op_get("k")],
                failure: vec![op_get("other")],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(t.succeeded, expect, "case {i}: {compare:?}");
        let Some(pb::response_op::Response::ResponseRange(r)) = &t.responses[0].response else {
            panic!("case {i}: expected a range response, got {:?}", t.responses);
        };
        let want: &[u8] = if expect { b"k" } else { b"other" };
        assert_eq!(r.kvs[0].key, want, "case {i}");
    }

    // A write txn: success branch puts and deletes atomically under one revision.
    let t = c
        .txn(pb::TxnRequest {
            compare: vec![cmp("k", T::Version, R::Equal, U::Version(2))],
            success: vec![op_put("k", "v3"), op_del("other"), op_get("k")],
            failure: vec![op_put("k", "lost")],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(t.succeeded);
    assert_eq!(t.header.unwrap().revision, 4);
    assert_eq!(t.responses.len(), 3);
    assert!(matches!(
        &t.responses[1].response,
        Some(pb::response_op::Response::ResponseDeleteRange(d)) if d.deleted == 1
    ));
    // Failure branch: the compare is now false, so "k" becomes "second".
    let t = c
        .txn(pb::TxnRequest {
            compare: vec![cmp("k", T::Value, R::Equal, U::Value("v2".into()))],
            success: vec![op_put("k", "wrong")],
            failure: vec![op_put("k", "second")],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!t.succeeded);
    assert!(matches!(
        &t.responses[0].response,
        Some(pb::response_op::Response::ResponsePut(_))
    ));
    let r = c.range(range("k", b"")).await.unwrap().into_inner();
    assert_eq!(r.kvs[0].value, b"second");

    // A nested txn is refused, not half-executed.
    let err = c
        .txn(pb::TxnRequest {
            compare: vec![],
            success: vec![
                op_put("k", "nested"),
                pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestTxn(Default::default())),
                },
            ],
            failure: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let r = c.range(range("k", b"")).await.unwrap().into_inner();
    assert_eq!(r.kvs[0].value, b"second");
    s.stop().await;
}

#[tokio::test]
async fn status_and_member_list_describe_the_node() {
    let s = TestServer::start().await;
    let mut c = kv(&s).await;
    put(&mut c, "a", "1").await;
    put(&mut c, "b", "2").await;
    let mut m = MaintenanceClient::new(channel(&s).await);
    let st = m.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.version, synod_etcd::ETCD_VERSION);
    assert_eq!(st.leader, 1);
    assert_eq!(st.raft_applied_index, 2);
    let h = st.header.unwrap();
    assert_eq!((h.cluster_id, h.member_id, h.revision), (0x5eed, 1, 2));
    let status = s.handle.status();
    assert_eq!(st.raft_index, status.engine.decided_index);
    assert_eq!(st.raft_term, status.engine.term);

    let alarms = m
        .alarm(pb::AlarmRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(alarms.alarms.is_empty());

    let mut cl = ClusterClient::new(channel(&s).await);
    let ml = cl
        .member_list(pb::MemberListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ml.members.len(), 1);
    let member = &ml.members[0];
    assert_eq!((member.id, member.name.as_str()), (1, "n1"));
    assert_eq!(member.peer_ur_ls, ["http://127.0.0.1:0"]);
    assert_eq!(member.client_ur_ls, ["http://127.0.0.1:0"]);
    assert_eq!(ml.header.unwrap().member_id, 1);
    s.stop().await;
}

/// Awaits one RPC and asserts it fails fast with UNIMPLEMENTED naming synod.
async fn assert_unimplemented<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, Status>>,
) {
    let started = Instant::now();
    let res = tokio::time::timeout(RPC_DEADLINE, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {RPC_DEADLINE:?}"));
    let err = res.expect_err(what);
    assert_eq!(err.code(), Code::Unimplemented, "{what}: {err:?}");
    assert!(
        err.message().contains("not supported by synod"),
        "{what}: {}",
        err.message()
    );
    assert!(started.elapsed() < RPC_DEADLINE, "{what} was slow");
}

#[tokio::test]
async fn unsupported_methods_and_options_answer_unimplemented_at_once() {
    let s = TestServer::start().await;
    let ch = channel(&s).await;
    let mut c = KvClient::new(ch.clone());
    put(&mut c, "k", "v").await;

    // Auth is served; with it off, Authenticate says so in etcd's words.
    let mut a = AuthClient::new(ch.clone());
    let err = a
        .authenticate(pb::AuthenticateRequest {
            name: "root".into(),
            password: "pw".into(),
        })
        .await
        .expect_err("authenticate with auth off");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(err.message(), "etcdserver: authentication is not enabled");
    let mut m = MaintenanceClient::new(ch.clone());
    assert_unimplemented(
        "Alarm ACTIVATE",
        m.alarm(pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id: 0,
            alarm: pb::AlarmType::Nospace as i32,
        }),
    )
    .await;

    // The store was not touched by any of the refused requests.
    let r = c.range(range("k", b"")).await.unwrap().into_inner();
    assert_eq!(
        (r.kvs[0].value.as_slice(), r.kvs[0].version),
        (&b"v"[..], 1)
    );
    s.stop().await;
}

/// The Cluster service over a node whose stand-in engine applies membership changes as the
/// replica layer does: each change answers with the members after it; refusals carry etcd's
/// codes and texts, and a malformed peer URL never reaches the engine.
#[tokio::test]
async fn cluster_service_adds_promotes_updates_and_removes_members() {
    let s = TestServer::start().await;
    let mut cl = ClusterClient::new(channel(&s).await);
    let add = |url: &str, learner: bool| pb::MemberAddRequest {
        peer_ur_ls: vec![url.to_string()],
        is_learner: learner,
    };
    let r = cl
        .member_add(add("http://127.0.0.1:9", true))
        .await
        .expect("add")
        .into_inner();
    let new = r.member.expect("the new member");
    assert_eq!((new.id, new.is_learner, new.name.as_str()), (2, true, ""));
    assert_eq!(new.peer_ur_ls, vec!["http://127.0.0.1:9"]);
    assert!(new.client_ur_ls.is_empty(), "unstarted: {new:?}");
    assert_eq!(r.members.len(), 2);
    let header = r.header.expect("header");
    assert_eq!(
        (header.cluster_id, header.member_id),
        (s.handle.info().cluster_id, 1)
    );

    let e = cl
        .member_add(add("http://127.0.0.1:9", false))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists"
        )
    );
    for bad in ["http://127.0.0.1", "ftp://127.0.0.1:1", "http://h:1/x"] {
        let e = cl.member_add(add(bad, false)).await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid"
            ),
            "{bad}"
        );
    }
    let e = cl
        .member_promote(pb::MemberPromoteRequest { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member"
        )
    );
    let e = cl
        .member_remove(pb::MemberRemoveRequest { id: 7 })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "etcdserver: member not found")
    );

    let r = cl
        .member_promote(pb::MemberPromoteRequest { id: 2 })
        .await
        .expect("promote")
        .into_inner();
    assert!(r.members.iter().all(|m| !m.is_learner), "{r:?}");
    let r = cl
        .member_update(pb::MemberUpdateRequest {
            id: 2,
            peer_ur_ls: vec!["http://127.0.0.1:10".into()],
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(r.members[1].peer_ur_ls, vec!["http://127.0.0.1:10"]);
    let r = cl
        .member_remove(pb::MemberRemoveRequest { id: 2 })
        .await
        .expect("remove")
        .into_inner();
    assert_eq!(r.members.len(), 1);
    let e = cl
        .member_remove(pb::MemberRemoveRequest { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let l = cl
        .member_list(pb::MemberListRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(l.members.len(), 1);
    assert_eq!(l.members[0].client_ur_ls, vec!["http://127.0.0.1:0"]);
    s.stop().await;
}

#[tokio::test]
async fn oversized_and_empty_requests_are_refused_and_the_server_keeps_serving() {
    let s = TestServer::start().await;
    let mut c = kv(&s).await;
    let limits = s.handle.info().limits.clone();

    // Just over the value limit: decoded, then refused by validation with etcd's message.
    let err = c
        .put(pb::PutRequest {
            key: "big".into(),
            value: vec![b'x'; limits.value_bytes_max + 1],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: request is too large");

    // A key over the key limit, the same.
    let err = c
        .put(pb::PutRequest {
            key: vec![b'k'; limits.key_bytes_max + 1],
            value: "v".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Far beyond the decode limit: cut off by the gRPC layer before allocation of a message.
    let err = c
        .put(pb::PutRequest {
            key: "huge".into(),
            value: vec![b'x'; synod_etcd::decoding_message_bytes_max(&s.handle) + 1],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // Empty keys get etcd's message.
    let err = c.range(range("", b"")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "etcdserver: key is not provided")
    );
    let err = c.put(pb::PutRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Too many txn operations.
    let err = c
        .txn(pb::TxnRequest {
            compare: vec![],
            success: (0..limits.txn_ops_max + 1)
                .map(|i| op_put(&format!("t{i}"), "v"))
                .collect(),
            failure: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request"
        )
    );

    // Nothing was written, and the same connection still works.
    put(&mut c, "after", "ok").await;
    let r = c.range(range("a", &[0])).await.unwrap().into_inner();
    assert_eq!(keys(&r), ["after"]);
    let m = s.handle.metrics().encode();
    assert!(m.contains(r#"op="put",outcome="invalid_argument""#), "{m}");
    s.stop().await;
}

/// Sends whatever bytes it is given as the gRPC message body and returns the raw reply.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

async fn raw_call(ch: Channel, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(Request::new(body), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn malformed_protobuf_gets_an_error_not_a_crash() {
    let s = TestServer::start().await;
    let ch = channel(&s).await;
    let bodies: [(&str, Vec<u8>); 4] = [
        (
            "random garbage",
            vec![0xff, 0xfe, 0x00, 0x13, 0x37, 0xde, 0xad, 0xbe, 0xef],
        ),
        // Field 1 (key, bytes) sent as a varint: the wrong wire type.
        ("key with the wrong wire type", vec![0x08, 0x05]),
        // A length prefix promising far more bytes than follow.
        (
            "truncated length-delimited field",
            vec![0x0a, 0xff, 0xff, 0x03, b'a'],
        ),
        // A varint that never ends.
        (
            "unterminated varint",
            vec![
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ),
    ];
    for (what, body) in bodies {
        for path in [
            "/etcdserverpb.KV/Put",
            "/etcdserverpb.KV/Range",
            "/etcdserverpb.KV/Txn",
        ] {
            let res = tokio::time::timeout(RPC_DEADLINE, raw_call(ch.clone(), path, body.clone()))
                .await
                .unwrap_or_else(|_| panic!("{what} to {path} hung"));
            let err = res.expect_err(what);
            // tonic reports a body that does not decode as INTERNAL ("failed to decode").
            assert_eq!(err.code(), Code::Internal, "{what} to {path}: {err:?}");
        }
    }
    // An unknown method of a known service and an unknown service.
    let err = raw_call(ch.clone(), "/etcdserverpb.KV/Frobnicate", vec![])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let err = raw_call(ch.clone(), "/nope.Nope/Nope", vec![])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // A well-formed request over the raw path still works: the server survived.
    let mut c = KvClient::new(ch);
    put(&mut c, "still", "alive").await;
    let r = c.range(range("still", b"")).await.unwrap().into_inner();
    assert_eq!(r.kvs[0].value, b"alive");
    s.stop().await;
}
