//! The gRPC server loop itself (`server.rs`): many requests multiplexed on one connection are
//! each answered with their own reply, connections that are not HTTP/2 or that vanish cost
//! the server nothing, connections beyond the port's bound wait for one to close, and shutdown
//! still returns while clients stay connected.

use crate::common;

use common::TestServer;
use std::time::Duration;
use synod_etcd::pb::etcdserverpb as pb;
use synod_etcd::pb::etcdserverpb::kv_client::KvClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

const RPC_DEADLINE: Duration = Duration::from_secs(10);

async fn kv(s: &TestServer) -> KvClient<Channel> {
    let ch = Channel::from_shared(s.url())
        .expect("valid url")
        .connect()
        .await
        .expect("connect to test server");
    KvClient::new(ch)
}

async fn get_value(mut c: KvClient<Channel>, key: String) -> Vec<u8> {
    let r = c
        .range(pb::RangeRequest {
            key: key.into_bytes(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.kvs
        .into_iter()
        .next()
        .map(|kv| kv.value)
        .unwrap_or_default()
}

/// Replies of one connection leave together, so a mix-up between streams would show as a
/// value answered to the wrong request.
#[tokio::test]
async fn concurrent_requests_on_one_connection_each_get_their_own_reply() {
    let s = TestServer::start().await;
    let c = kv(&s).await;
    const N: usize = 400;
    let puts = (0..N).map(|i| {
        let mut c = c.clone();
        tokio::spawn(async move {
            c.put(pb::PutRequest {
                key: format!("k{i}").into_bytes(),
                value: format!("value-{i}-{}", "x".repeat(i % 700)).into_bytes(),
                ..Default::default()
            })
            .await
            .expect("put")
        })
    });
    let puts: Vec<_> = puts.collect();
    for p in puts {
        tokio::time::timeout(RPC_DEADLINE, p)
            .await
            .expect("put answered in time")
            .expect("put task");
    }
    let gets: Vec<_> = (0..N)
        .map(|i| tokio::spawn(get_value(c.clone(), format!("k{i}"))))
        .collect();
    for (i, g) in gets.into_iter().enumerate() {
        let v = tokio::time::timeout(RPC_DEADLINE, g)
            .await
            .expect("get answered in time")
            .expect("get task");
        assert_eq!(v, format!("value-{i}-{}", "x".repeat(i % 700)).into_bytes());
    }
    s.stop().await;
}

/// Garbage instead of the HTTP/2 preface, an HTTP/1.1 request, and a client that hangs up
/// halfway through its preface: each connection is dropped, and the server keeps serving.
#[tokio::test]
async fn connections_that_are_not_http2_are_dropped_and_the_server_keeps_serving() {
    let s = TestServer::start().await;
    for bytes in [
        &b"\x00\xffthis is not http/2 at all\r\n\r\n"[..],
        &b"GET /etcdserverpb.KV/Range HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let mut tcp = tokio::net::TcpStream::connect(s.addr)
            .await
            .expect("connect");
        tcp.write_all(bytes).await.expect("write");
        let mut buf = Vec::new();
        // The server closes the connection (maybe after a GOAWAY): read reaches EOF or reset.
        let read = tokio::time::timeout(RPC_DEADLINE, tcp.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "server closed a non-HTTP/2 connection in time"
        );
    }
    let mut half = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    half.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    drop(half);
    let mut c = kv(&s).await;
    c.put(pb::PutRequest {
        key: b"after".to_vec(),
        value: b"ok".to_vec(),
        ..Default::default()
    })
    .await
    .expect("put after bad connections");
    assert_eq!(get_value(c, "after".into()).await, b"ok");
    s.stop().await;
}

/// A client that keeps its connection open does not hold shutdown up: the server sends
/// GOAWAY, the idle connection closes, and `serve` returns.
#[tokio::test]
async fn shutdown_returns_while_a_client_stays_connected() {
    let s = TestServer::start().await;
    let c = kv(&s).await;
    assert_eq!(get_value(c.clone(), "none".into()).await, b"");
    // `stop` asserts that serve returns Ok within its own deadline.
    tokio::time::timeout(Duration::from_secs(2), s.stop())
        .await
        .expect("shutdown well within the 5 s grace period: GOAWAY closed the idle connection");
    drop(c);
}

/// At its bound of connections the port takes in no more: a third client's request waits in
/// the backlog while two connections are open, and is answered once one of them closes.
#[tokio::test]
async fn a_connection_beyond_the_bound_waits_for_one_to_close() {
    let s = TestServer::start_limited(2).await;
    let (first, second) = (kv(&s).await, kv(&s).await);
    for c in [first.clone(), second.clone()] {
        assert!(get_value(c, "k".into()).await.is_empty(), "both served");
    }
    let lazy = Channel::from_shared(s.url())
        .expect("valid url")
        .connect_lazy();
    let mut third = tokio::spawn(get_value(KvClient::new(lazy), "k".into()));
    let early = tokio::time::timeout(Duration::from_millis(500), &mut third).await;
    assert!(
        early.is_err(),
        "a third connection was served beyond the bound"
    );
    drop(first);
    let value = tokio::time::timeout(RPC_DEADLINE, third)
        .await
        .expect("served once a connection closed")
        .expect("no panic");
    assert!(value.is_empty());
    drop(second);
    s.stop().await;
}
