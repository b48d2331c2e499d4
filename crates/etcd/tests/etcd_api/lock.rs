//! etcd's Lock and Election services end to end over loopback, with the tonic clients
//! generated from the same protos, backed by the single-node stand-in store: mutual exclusion
//! and FIFO order, the fencing token in the reply, a lease ending while waiting, cleanup of
//! the key of a cancelled call, the waiter bound, leader changes seen by Observe, and
//! UNIMPLEMENTED on an engine without leases.

use crate::common;

use common::TestServer;
use std::time::Duration;
use synod_core::kv::{LeaseGrantRequest, Op, ResponseBody};
use synod_core::{Capabilities, Consistency};
use synod_etcd::pb::etcdserverpb as epb;
use synod_etcd::pb::etcdserverpb::kv_client::KvClient;
use synod_etcd::pb::v3electionpb as pb_e;
use synod_etcd::pb::v3electionpb::election_client::ElectionClient;
use synod_etcd::pb::v3lockpb as pb_l;
use synod_etcd::pb::v3lockpb::lock_client::LockClient;
use synod_node::NodeHandle;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Bound on anything that should happen promptly against a local in-memory node.
const DEADLINE: Duration = Duration::from_secs(10);

async fn channel(url: String) -> Channel {
    Channel::from_shared(url)
        .expect("valid url")
        .connect()
        .await
        .expect("connect to test server")
}

async fn grant(h: &NodeHandle, id: i64) -> i64 {
    let r = h
        .execute(
            Op::LeaseGrant(LeaseGrantRequest { id, ttl: 60 }),
            Consistency::Linearizable,
        )
        .await
        .expect("lease grant");
    match r.body {
        ResponseBody::LeaseGrant(info) => info.id,
        other => panic!("grant answered {other:?}"),
    }
}

async fn revoke(h: &NodeHandle, id: i64) {
    h.execute(Op::LeaseRevoke { id }, Consistency::Linearizable)
        .await
        .expect("lease revoke");
}

fn lock_req(name: &str, lease: i64) -> pb_l::LockRequest {
    pb_l::LockRequest {
        name: name.into(),
        lease,
    }
}

/// A Lock call running in the background.
fn spawn_lock(
    ch: Channel,
    name: &str,
    lease: i64,
) -> JoinHandle<Result<pb_l::LockResponse, Status>> {
    let req = lock_req(name, lease);
    tokio::spawn(async move {
        LockClient::new(ch)
            .lock(req)
            .await
            .map(tonic::Response::into_inner)
    })
}

/// Keys under `prefix` with their create revisions, in key order.
async fn keys_under(kv: &mut KvClient<Channel>, prefix: &str) -> Vec<(String, i64)> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    let r = kv
        .range(epb::RangeRequest {
            key: prefix.into(),
            range_end: end,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.create_revision,
            )
        })
        .collect()
}

/// Polls until `prefix` holds exactly `n` keys.
async fn until_keys(kv: &mut KvClient<Channel>, prefix: &str, n: usize) -> Vec<(String, i64)> {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        let keys = keys_under(kv, prefix).await;
        if keys.len() == n {
            return keys;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "expected {n} keys under {prefix}, have {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {DEADLINE:?}"))
}

#[tokio::test]
async fn an_uncontended_lock_answers_its_key_and_fencing_token_and_unlock_frees_it() {
    let s = TestServer::start().await;
    let ch = channel(s.url()).await;
    let mut kv = KvClient::new(ch.clone());
    let lease = grant(&s.handle, 0x694d).await;
    let r = within(
        "lock",
        LockClient::new(ch.clone()).lock(lock_req("job", lease)),
    )
    .await
    .expect("lock")
    .into_inner();
    assert_eq!(r.key, b"job/694d", "etcd's key layout: name/<lease in hex>");
    let keys = keys_under(&mut kv, "job/").await;
    let header = r.header.expect("header");
    assert_eq!(keys, vec![("job/694d".to_string(), header.revision)]);
    // Locking again with the same lease reuses the key: no deadlock on oneself.
    let again = within(
        "relock",
        LockClient::new(ch.clone()).lock(lock_req("job", lease)),
    )
    .await
    .expect("relock")
    .into_inner();
    assert_eq!(again.key, r.key);
    LockClient::new(ch.clone())
        .unlock(pb_l::UnlockRequest { key: r.key })
        .await
        .expect("unlock");
    assert!(keys_under(&mut kv, "job/").await.is_empty());
    // A lock without a lease would never go away: refused.
    let err = LockClient::new(ch)
        .lock(lock_req("job", 0))
        .await
        .expect_err("no lease");
    assert_eq!(err.code(), Code::InvalidArgument);
    s.stop().await;
}

#[tokio::test]
async fn contenders_are_served_one_at_a_time_in_arrival_order() {
    let s = TestServer::start().await;
    let ch = channel(s.url()).await;
    let mut kv = KvClient::new(ch.clone());
    let (la, lb, lc) = (
        grant(&s.handle, 1).await,
        grant(&s.handle, 2).await,
        grant(&s.handle, 3).await,
    );
    let a = within(
        "lock a",
        LockClient::new(ch.clone()).lock(lock_req("m", la)),
    )
    .await
    .expect("a")
    .into_inner();
    let b = spawn_lock(ch.clone(), "m", lb);
    until_keys(&mut kv, "m/", 2).await;
    let c = spawn_lock(ch.clone(), "m", lc);
    until_keys(&mut kv, "m/", 3).await;
    // Both queued behind a: neither may finish while a's key exists. The KV round trips
    // above and below give a wrongly granted lock every chance to show.
    keys_under(&mut kv, "m/").await;
    assert!(
        !b.is_finished() && !c.is_finished(),
        "a still holds the lock"
    );
    LockClient::new(ch.clone())
        .unlock(pb_l::UnlockRequest { key: a.key })
        .await
        .expect("unlock a");
    let b = within("b", b).await.expect("join").expect("b locks");
    assert!(!c.is_finished(), "c is behind b");
    let (ta, tb) = (
        a.header.expect("h").revision,
        b.header.as_ref().expect("h").revision,
    );
    assert!(tb > ta, "fencing tokens grow: {ta} then {tb}");
    LockClient::new(ch.clone())
        .unlock(pb_l::UnlockRequest { key: b.key })
        .await
        .expect("unlock b");
    let c = within("c", c).await.expect("join").expect("c locks");
    assert!(c.header.expect("h").revision > tb);
    s.stop().await;
}

#[tokio::test]
async fn a_waiter_whose_lease_ends_fails_with_etcds_error_and_leaves_no_key() {
    let s = TestServer::start().await;
    let ch = channel(s.url()).await;
    let mut kv = KvClient::new(ch.clone());
    let (la, lb) = (grant(&s.handle, 10).await, grant(&s.handle, 11).await);
    within(
        "lock a",
        LockClient::new(ch.clone()).lock(lock_req("x", la)),
    )
    .await
    .expect("a");
    let b = spawn_lock(ch.clone(), "x", lb);
    until_keys(&mut kv, "x/", 2).await;
    revoke(&s.handle, lb).await;
    let err = within("b", b)
        .await
        .expect("join")
        .expect_err("b's lease ended");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "mutex: session is expired");
    assert_eq!(until_keys(&mut kv, "x/", 1).await[0].0, "x/a");
    // The holder's lease ending releases the lock too.
    let c = spawn_lock(ch.clone(), "x", grant(&s.handle, 12).await);
    until_keys(&mut kv, "x/", 2).await;
    revoke(&s.handle, la).await;
    let c = within("c", c).await.expect("join").expect("c locks");
    assert_eq!(c.key, b"x/c");
    s.stop().await;
}

#[tokio::test]
async fn a_cancelled_waiter_deletes_the_key_it_created_but_not_one_it_reused() {
    let s = TestServer::start().await;
    let ch = channel(s.url()).await;
    let mut kv = KvClient::new(ch.clone());
    let (la, lb) = (grant(&s.handle, 20).await, grant(&s.handle, 21).await);
    within(
        "lock a",
        LockClient::new(ch.clone()).lock(lock_req("c", la)),
    )
    .await
    .expect("a");
    // b waits, then the client gives up (a deadline drops the call).
    let mut req = tonic::Request::new(lock_req("c", lb));
    req.set_timeout(Duration::from_millis(300));
    let err = within("b", LockClient::new(ch.clone()).lock(req))
        .await
        .expect_err("b times out");
    assert!(
        matches!(err.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{err:?}"
    );
    let keys = until_keys(&mut kv, "c/", 1).await;
    assert_eq!(keys[0].0, "c/14", "b's key is gone, a's stays");
    // a locking again (reusing its key) and cancelling must not release a's lock.
    let mut req = tonic::Request::new(lock_req("c", la));
    req.set_timeout(Duration::from_secs(5));
    within("relock", LockClient::new(ch.clone()).lock(req))
        .await
        .expect("a relocks at once");
    assert_eq!(keys_under(&mut kv, "c/").await, keys);
    s.stop().await;
}

#[tokio::test]
async fn the_waiter_bound_refuses_with_resource_exhausted() {
    let s = TestServer::start().await;
    // A server of its own over the same node, with room for two waiters.
    let svc = synod_etcd::EtcdService::new(s.handle.clone());
    let coordination = synod_etcd::Coordination::with_waiters_max(svc.clone(), 2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(synod_etcd::routes_with(svc, coordination))
            .serve_with_incoming(futures::stream::unfold(listener, |l| async move {
                let conn = l.accept().await.map(|(stream, _)| stream);
                Some((conn, l))
            })),
    );
    let ch = channel(format!("http://{addr}")).await;
    let mut kv = KvClient::new(ch.clone());
    let holder = grant(&s.handle, 30).await;
    within(
        "hold",
        LockClient::new(ch.clone()).lock(lock_req("w", holder)),
    )
    .await
    .expect("holder");
    let w1 = spawn_lock(ch.clone(), "w", grant(&s.handle, 31).await);
    let w2 = spawn_lock(ch.clone(), "w", grant(&s.handle, 32).await);
    until_keys(&mut kv, "w/", 3).await;
    let err = LockClient::new(ch.clone())
        .lock(lock_req("w", grant(&s.handle, 33).await))
        .await
        .expect_err("third waiter refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("at most 2"), "{}", err.message());
    assert_eq!(
        keys_under(&mut kv, "w/").await.len(),
        3,
        "refused before any key"
    );
    w1.abort();
    w2.abort();
    server.abort();
    s.stop().await;
}

fn campaign(name: &str, lease: i64, value: &str) -> pb_e::CampaignRequest {
    pb_e::CampaignRequest {
        name: name.into(),
        lease,
        value: value.into(),
    }
}

async fn next_leader(obs: &mut tonic::Streaming<pb_e::LeaderResponse>) -> (String, String) {
    let r = within("observe", obs.message())
        .await
        .expect("observe ok")
        .expect("observe open");
    let kv = r.kv.expect("kv");
    (
        String::from_utf8_lossy(&kv.key).into_owned(),
        String::from_utf8_lossy(&kv.value).into_owned(),
    )
}

#[tokio::test]
async fn an_election_hands_over_on_resign_and_lease_end_and_observe_sees_each_leader() {
    let s = TestServer::start().await;
    let ch = channel(s.url()).await;
    let mut el = ElectionClient::new(ch.clone());
    let err = el
        .leader(pb_e::LeaderRequest { name: "e".into() })
        .await
        .expect_err("no leader yet");
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "election: no leader")
    );
    let mut obs = el
        .observe(pb_e::LeaderRequest { name: "e".into() })
        .await
        .expect("observe")
        .into_inner();
    let (la, lb, lc) = (
        grant(&s.handle, 0xa).await,
        grant(&s.handle, 0xb).await,
        grant(&s.handle, 0xc).await,
    );
    let a = within("campaign a", el.campaign(campaign("e", la, "alpha")))
        .await
        .expect("a leads")
        .into_inner();
    let a_key = a.leader.expect("leader key");
    assert_eq!(next_leader(&mut obs).await, ("e/a".into(), "alpha".into()));
    let mut b_client = ElectionClient::new(ch.clone());
    let b = tokio::spawn(async move { b_client.campaign(campaign("e", lb, "beta")).await });
    let mut c_client = ElectionClient::new(ch.clone());
    let c = tokio::spawn(async move { c_client.campaign(campaign("e", lc, "gamma")).await });
    el.proclaim(pb_e::ProclaimRequest {
        leader: Some(a_key.clone()),
        value: "alpha2".into(),
    })
    .await
    .expect("proclaim");
    assert_eq!(next_leader(&mut obs).await, ("e/a".into(), "alpha2".into()));
    let leader = el
        .leader(pb_e::LeaderRequest { name: "e".into() })
        .await
        .expect("leader")
        .into_inner();
    assert_eq!(leader.kv.expect("kv").value, b"alpha2");
    assert!(!b.is_finished() && !c.is_finished(), "a still leads");
    el.resign(pb_e::ResignRequest {
        leader: Some(a_key.clone()),
    })
    .await
    .expect("resign");
    // The next in create order leads; which of b and c campaigned first is up to the race,
    // so follow whoever Observe names.
    let (first, _) = next_leader(&mut obs).await;
    let (first_lease, second) = if first == "e/b" { (lb, c) } else { (lc, b) };
    // A former leader can no longer proclaim.
    let err = el
        .proclaim(pb_e::ProclaimRequest {
            leader: Some(a_key),
            value: "stale".into(),
        })
        .await
        .expect_err("a resigned");
    assert_eq!(err.message(), "election: not leader");
    revoke(&s.handle, first_lease).await;
    let (then, _) = next_leader(&mut obs).await;
    assert_ne!(then, first, "the lease ended; the other candidate leads");
    within("second", second)
        .await
        .expect("join")
        .expect("second leads");
    s.stop().await;
}

#[tokio::test]
async fn without_leases_the_services_answer_unimplemented() {
    let caps = Capabilities {
        ranges: false,
        transactions: false,
        revisions: false,
        watch: false,
        leases: false,
    };
    let handle = synod_node::handle::local_test_node("caspaxos", caps);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(synod_etcd::serve(listener, handle, async move {
        let _ = rx.await;
    }));
    let ch = channel(format!("http://{addr}")).await;
    let err = LockClient::new(ch.clone())
        .lock(lock_req("l", 1))
        .await
        .expect_err("no locks on caspaxos");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("caspaxos"), "{}", err.message());
    let err = ElectionClient::new(ch)
        .campaign(campaign("e", 1, "v"))
        .await
        .expect_err("no elections on caspaxos");
    assert_eq!(err.code(), Code::Unimplemented);
    let _ = tx.send(());
    let _ = within("server stops", server).await;
}
