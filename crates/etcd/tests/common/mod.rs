//! Shared by the integration tests: an etcd gRPC server over a single-node stand-in
//! (`local_test_node`) on a free loopback port, stopped when the guard is dropped.

#![allow(dead_code)]

use std::net::SocketAddr;
use synod_core::Capabilities;
use synod_node::NodeHandle;
use synod_node::handle::local_test_node;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: NodeHandle,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), std::io::Error>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_limited(synod_etcd::GRPC_CONNECTIONS_MAX).await
    }

    /// A server that takes at most `connections_max` client connections at once.
    pub async fn start_limited(connections_max: usize) -> TestServer {
        let caps = Capabilities {
            ranges: true,
            transactions: true,
            revisions: true,
            watch: true,
            leases: true,
        };
        let handle = local_test_node("local", caps);
        // Port 0: the OS picks a free port, so tests can run in parallel.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(synod_etcd::serve_client_port_limited(
            listener,
            handle.clone(),
            None,
            None,
            connections_max,
            async move {
                let _ = rx.await;
            },
        ));
        TestServer {
            addr,
            handle,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and checks it exited cleanly.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let res = tokio::time::timeout(std::time::Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
                .expect("server task did not panic");
            assert!(res.is_ok(), "server returned {res:?}");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
