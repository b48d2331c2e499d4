//! The runtime with the real engines (dispatch by name): three nodes on loopback, writes at a
//! follower answered, a node restarted from its data directory reads back what was written.
#![cfg(all(feature = "omnipaxos", feature = "caspaxos", feature = "epaxos"))]

use std::time::{Duration, Instant};
use synod_core::Consistency;
use synod_core::kv::{Op, PutRequest, RangeRequest, ResponseBody};
use synod_node::runtime::{RunningNode, start_with_listener};
use synod_node::{ApiError, ClusterConfig, MemberConfig, NodeConfig, NodeHandle};
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(30);

fn cluster(engine: &str, addrs: &[String]) -> ClusterConfig {
    let mut c = ClusterConfig::local(addrs.len(), 1);
    c.cluster_name = format!("engines-{engine}");
    c.engine = engine.into();
    c.tick_ms = 5;
    c.limits.request_timeout_ms = 2_000;
    c.transport.reconnect_backoff_ms_min = 5;
    c.transport.reconnect_backoff_ms_max = 100;
    for (i, a) in addrs.iter().enumerate() {
        c.members[i] = MemberConfig {
            peer_addr: a.clone(),
            http_addr: "127.0.0.1:0".into(),
            grpc_addr: "127.0.0.1:0".into(),
            ..c.members[i].clone()
        };
    }
    c
}

/// Retries while the cluster is still electing / reconnecting (no leader yet, or no reply in
/// time); any other error fails.
async fn execute(h: &NodeHandle, op: Op) -> synod_core::kv::Response {
    let start = Instant::now();
    loop {
        match h.execute(op.clone(), Consistency::Linearizable).await {
            Ok(r) => return r,
            Err(e @ (ApiError::Unavailable(_) | ApiError::NoLeader))
                if start.elapsed() < DEADLINE =>
            {
                tracing::debug!("retrying: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{op:?} failed: {e}"),
        }
    }
}

fn put(k: &str, v: &str) -> Op {
    Op::Put(PutRequest {
        key: k.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
        prev_kv: false,
        ..Default::default()
    })
}

async fn get(h: &NodeHandle, k: &str) -> Option<Vec<u8>> {
    match execute(h, Op::Range(RangeRequest::key(k.as_bytes().to_vec())))
        .await
        .body
    {
        ResponseBody::Range(r) => r.kvs.first().map(|kv| kv.value.clone()),
        other => panic!("range answered {other:?}"),
    }
}

async fn rebind(addr: &str) -> TcpListener {
    let start = Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => assert!(start.elapsed() < DEADLINE, "cannot rebind {addr}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn three_nodes_write_restart_read(engine: &str) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let c = cluster(engine, &addrs);
    let mut nodes: Vec<Option<RunningNode>> = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let cfg = NodeConfig::new(c.clone(), i as u64 + 1, dirs[i].path());
        nodes.push(Some(start_with_listener(cfg, l).await.unwrap()));
    }
    let handle =
        |nodes: &Vec<Option<RunningNode>>, i: usize| nodes[i].as_ref().unwrap().handle.clone();
    assert_eq!(handle(&nodes, 0).info().engine, engine);
    // Write through a node that is not the leader (for leaderless engines: any node).
    let h0 = handle(&nodes, 0);
    execute(&h0, put("warmup", "1")).await;
    let leader = h0.status().engine.leader;
    let at = (0..3).find(|i| Some(*i as u64 + 1) != leader).unwrap_or(0);
    let writer = handle(&nodes, at);
    for i in 0..10 {
        execute(&writer, put(&format!("k{i}"), &format!("v{i}"))).await;
    }
    // Restart another non-writer node from its data directory and read back through it.
    let victim = (0..3).find(|i| *i != at).unwrap();
    nodes[victim].take().unwrap().shutdown().await.unwrap();
    let l = rebind(&addrs[victim]).await;
    let cfg = NodeConfig::new(c.clone(), victim as u64 + 1, dirs[victim].path());
    nodes[victim] = Some(start_with_listener(cfg, l).await.unwrap());
    let restarted = handle(&nodes, victim);
    for i in 0..10 {
        assert_eq!(
            get(&restarted, &format!("k{i}")).await,
            Some(format!("v{i}").into_bytes()),
            "{engine}: k{i} after restart"
        );
    }
    execute(&restarted, put("after", "restart")).await;
    assert_eq!(get(&writer, "after").await, Some(b"restart".to_vec()));
    assert!(writer.metrics().wal_fsyncs.get() > 0);
    for n in nodes.into_iter().flatten() {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omnipaxos_three_nodes_write_restart_read() {
    three_nodes_write_restart_read("omnipaxos").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caspaxos_three_nodes_write_restart_read() {
    three_nodes_write_restart_read("caspaxos").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epaxos_three_nodes_write_restart_read() {
    three_nodes_write_restart_read("epaxos").await;
}
