//! The node runtime end to end on loopback: three nodes running the toy primary-backup engine
//! (tests/common), writes at a follower, restart from the data directory, the data-dir lock,
//! and a failed persist stopping the node without acknowledging.

mod common;

use common::Toy;
use std::path::Path;
use std::time::{Duration, Instant};
use synod_core::Consistency;
use synod_core::kv::{Op, PutRequest, RangeRequest, ResponseBody};
use synod_node::runtime::{NodeError, RunningNode, start_engine};
use synod_node::storage::StorageError;
use synod_node::{ApiError, ClusterConfig, MemberConfig, NodeConfig, NodeHandle};
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(15);

fn cluster(addrs: &[String]) -> ClusterConfig {
    let mut c = ClusterConfig::local(addrs.len(), 1);
    c.cluster_name = "runtime-test".into();
    c.tick_ms = 5;
    c.transport.reconnect_backoff_ms_min = 5;
    c.transport.reconnect_backoff_ms_max = 100;
    c.members = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| MemberConfig {
            id: i as u64 + 1,
            name: format!("n{}", i + 1),
            peer_addr: a.clone(),
            http_addr: "127.0.0.1:0".into(),
            grpc_addr: "127.0.0.1:0".into(),
        })
        .collect();
    c
}

/// Binds `addr` again after a restart; the old listener may take a moment to close.
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

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
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
    let r = h
        .execute(
            Op::Range(RangeRequest::key(k.as_bytes().to_vec())),
            Consistency::Linearizable,
        )
        .await
        .unwrap();
    match r.body {
        ResponseBody::Range(r) => r.kvs.first().map(|kv| kv.value.clone()),
        other => panic!("range answered {other:?}"),
    }
}

async fn start_node(c: &ClusterConfig, id: u64, dir: &Path, l: TcpListener) -> RunningNode {
    start_engine::<Toy>(NodeConfig::new(c.clone(), id, dir), l)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_answer_writes_at_a_follower_and_recover_after_restart() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let c = cluster(&addrs);
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        nodes.push(Some(start_node(&c, i as u64 + 1, dirs[i].path(), l).await));
    }
    let h = |nodes: &Vec<Option<RunningNode>>, i: usize| nodes[i].as_ref().unwrap().handle.clone();
    for i in 0..3 {
        let hi = h(&nodes, i);
        wait_for("full mesh", || hi.status().connected_peers.len() == 2).await;
    }

    // Node 3 is a follower: its writes are forwarded to the primary and answered here.
    let follower = h(&nodes, 2);
    assert_eq!(follower.status().engine.role, "follower");
    for i in 0..20 {
        let r = follower
            .execute(
                put(&format!("k{i}"), &format!("v{i}")),
                Consistency::Linearizable,
            )
            .await
            .unwrap();
        assert_eq!(r.revision, i + 1);
    }
    assert_eq!(get(&h(&nodes, 1), "k7").await, Some(b"v7".to_vec()));
    let primary = h(&nodes, 0);
    assert!(primary.metrics().wal_fsyncs.get() >= 1);
    assert_eq!(primary.metrics().wal_records.get(), 20);
    assert_eq!(primary.metrics().is_leader.get(), 1);
    assert!(primary.metrics().proposals.get() == 0); // All came in through node 3.
    assert_eq!(follower.metrics().proposals.get(), 20);
    assert_eq!(primary.status().engine.revision, 20);

    // Restart the primary from its data directory on the same port.
    nodes[0].take().unwrap().shutdown().await.unwrap();
    let l = rebind(&addrs[0]).await;
    nodes[0] = Some(start_node(&c, 1, dirs[0].path(), l).await);
    let primary = h(&nodes, 0);
    assert_eq!(
        primary.status().engine.revision,
        20,
        "state rebuilt from the WAL"
    );
    wait_for("follower reconnects", || {
        follower.status().connected_peers.contains(&1)
    })
    .await;
    // Reads through the follower see what was written before the restart (the first sends
    // after reconnecting may be lost with the old connection, so retry on unavailability).
    let start = Instant::now();
    let value = loop {
        match follower
            .execute(
                Op::Range(RangeRequest::key(b"k19".to_vec())),
                Consistency::Linearizable,
            )
            .await
        {
            Ok(r) => break r,
            Err(ApiError::Unavailable(_) | ApiError::NoLeader) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => panic!("{e}"),
        }
    };
    match value.body {
        ResponseBody::Range(r) => assert_eq!(r.kvs[0].value, b"v19".to_vec()),
        other => panic!("{other:?}"),
    }
    let r = primary
        .execute(put("after", "restart"), Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(r.revision, 21);
    for n in nodes.into_iter().flatten() {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_second_node_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = cluster(&[l1.local_addr().unwrap().to_string()]);
    let n1 = start_node(&c, 1, dir.path(), l1).await;
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    match start_engine::<Toy>(NodeConfig::new(c.clone(), 1, dir.path()), l2).await {
        Err(NodeError::Storage(StorageError::Locked { .. })) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("two nodes on one data dir"),
    }
    // Another cluster's data is refused too.
    n1.shutdown().await.unwrap();
    let mut other = c.clone();
    other.cluster_name = "someone-else".into();
    let l3 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    match start_engine::<Toy>(NodeConfig::new(other, 1, dir.path()), l3).await {
        Err(NodeError::Storage(StorageError::WrongIdentity { .. })) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started on another cluster's data"),
    }
}

#[tokio::test]
async fn a_failed_persist_stops_the_node_without_acknowledging() {
    let dir = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut c = cluster(&[l.local_addr().unwrap().to_string()]);
    // A record bigger than the WAL accepts makes the append fail, like a disk error would.
    c.storage.record_bytes_max = 128;
    let mut node = start_node(&c, 1, dir.path(), l).await;
    let h = node.handle.clone();
    h.execute(put("small", "ok"), Consistency::Linearizable)
        .await
        .unwrap();
    let big = "x".repeat(1000);
    match h.execute(put("big", &big), Consistency::Linearizable).await {
        Err(ApiError::Unavailable(_)) => {}
        other => panic!("an unpersisted write was answered: {other:?}"),
    }
    match tokio::time::timeout(DEADLINE, node.stopped()).await {
        // A record the log refuses cannot succeed on retry: fatal, not held.
        Ok(Err(NodeError::WalFatal(_))) => {}
        other => panic!("node did not stop on a persist error: {other:?}"),
    }
    // The node refuses further work instead of hanging.
    assert!(matches!(
        h.execute(put("later", "x"), Consistency::Linearizable)
            .await,
        Err(ApiError::Unavailable(_))
    ));
    // And restarts with what was persisted.
    c.storage.record_bytes_max = 1 << 20;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut c2 = c.clone();
    c2.members[0].peer_addr = l.local_addr().unwrap().to_string();
    let node = start_node(&c2, 1, dir.path(), l).await;
    assert_eq!(get(&node.handle, "small").await, Some(b"ok".to_vec()));
    assert_eq!(get(&node.handle, "big").await, None);
    node.shutdown().await.unwrap();
}
