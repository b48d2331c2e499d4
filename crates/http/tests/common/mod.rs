//! Test harness shared by the integration tests: start `serve_with` on an ephemeral loopback
//! port over a stand-in node, and build the nodes the tests need (a normal one, one whose
//! engine never answers).

#![allow(dead_code)] // each test binary uses a different subset

use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_core::Capabilities;
use synod_http::HttpConfig;
use synod_node::handle::local_test_node;
use synod_node::{ApiLimits, MemberInfo, Metrics, NodeHandle, NodeInfo, NodeStatus, Submission};
use tokio::sync::{mpsc, oneshot, watch};

/// Deadline for any "wait until" loop in these tests.
pub const WAIT_DEADLINE_MS: u64 = 10_000;

pub const ALL_CAPS: Capabilities = Capabilities {
    ranges: true,
    transactions: true,
    revisions: true,
    watch: true,
    leases: true,
};

pub const CASPAXOS_CAPS: Capabilities = Capabilities {
    ranges: false,
    transactions: false,
    revisions: false,
    watch: false,
    leases: false,
};

pub struct Server {
    pub base: String,
    pub handle: NodeHandle,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(handle: NodeHandle) -> Server {
        Self::start_with(handle, HttpConfig::default()).await
    }

    pub async fn start_with(handle: NodeHandle, config: HttpConfig) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(synod_http::serve_with(
            listener,
            handle.clone(),
            config,
            async move {
                let _ = rx.await;
            },
        ));
        Server {
            base: format!("http://{addr}"),
            handle,
            client: client(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("stopped twice");
        tokio::time::timeout(Duration::from_millis(WAIT_DEADLINE_MS), task)
            .await
            .expect("serve did not return after shutdown")
            .expect("serve task panicked")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        send(self.client.get(self.url(path))).await
    }

    pub async fn put(&self, path: &str, body: &str) -> (u16, Value) {
        send(self.client.put(self.url(path)).body(body.to_string())).await
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        send(self.client.post(self.url(path)).body(body.to_string())).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        send(self.client.delete(self.url(path))).await
    }

    /// A put that must succeed; returns the reply.
    /// A peer port no member of this test node uses yet (addresses must be unique).
    pub fn fresh_port(&self) -> u16 {
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(20_000);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds a learner at a fresh peer address and returns its id.
    pub async fn add_learner(&self) -> u64 {
        let body = format!(
            r#"{{"peer_addr": "127.0.0.1:{}", "learner": true}}"#,
            self.fresh_port()
        );
        let (status, reply) = self.post("/v1/members", &body).await;
        assert_eq!(status, 200, "{reply}");
        reply["member"]["id"].as_u64().expect("the new member's id")
    }

    pub async fn put_ok(&self, key: &str, value: &str) -> Value {
        let body = serde_json::json!({ "value": value }).to_string();
        let (status, reply) = self.put(&format!("/v1/kv/{key}"), &body).await;
        assert_eq!(status, 200, "put {key}: {reply}");
        reply
    }

    /// The node still answers a normal read and write after whatever the test did.
    pub async fn assert_still_serving(&self) {
        let reply = self.put_ok("still-serving", "yes").await;
        assert_eq!(reply["kv"]["value"], "yes");
        let (status, reply) = self.get("/v1/kv/still-serving").await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["kv"]["value"], "yes");
    }
}

/// A client that ignores any HTTP proxy in the environment (these are loopback tests).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(WAIT_DEADLINE_MS))
        .build()
        .expect("reqwest client")
}

/// Sends a request and parses the body as JSON (a non-JSON body is a test failure: every
/// answer of this API but /healthz and /metrics is JSON).
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request failed");
    let status = response.status().as_u16();
    let text = response.text().await.expect("read body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, value)
}

/// Asserts the contract's error shape and returns the code.
pub fn error_code(body: &Value) -> &str {
    let code = body["error"]["code"].as_str();
    let message = body["error"]["message"].as_str();
    assert!(
        code.is_some() && message.is_some_and(|m| !m.is_empty()),
        "not an error body: {body}"
    );
    code.unwrap_or_default()
}

pub fn local_node(engine: &str, caps: Capabilities) -> NodeHandle {
    local_test_node(engine, caps)
}

/// A node whose engine takes submissions and never answers them: the receiver is handed to
/// the test, which may hold it (requests pile up until the handle's timeout) or reply.
pub fn never_answering_node(request_timeout_ms: u64) -> (NodeHandle, mpsc::Receiver<Submission>) {
    let (tx, rx) = mpsc::channel::<Submission>(64);
    let info = NodeInfo {
        cluster_id: 7,
        cluster_name: "stuck".into(),
        member_id: 1,
        members: vec![MemberInfo {
            id: 1,
            name: "n1".into(),
            peer_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            grpc_addr: "127.0.0.1:0".into(),
            learner: false,
        }],
        engine: "omnipaxos".into(),
        capabilities: ALL_CAPS,
        limits: ApiLimits {
            request_timeout_ms,
            ..ApiLimits::default()
        },
        version: "test".into(),
        client_tls: false,
        peer_tls: false,
    };
    // It leads (a one-member cluster): requests must reach the engine, not be refused at the
    // edge for want of a leader.
    let mut status = NodeStatus::default();
    status.engine.leader = Some(1);
    let (_status_tx, status_rx) = watch::channel(status);
    (
        NodeHandle::new(tx, info, status_rx, Arc::new(Metrics::new())),
        rx,
    )
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT_DEADLINE_MS`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_millis(WAIT_DEADLINE_MS);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An open `GET /v1/watch` stream, read line by line.
pub struct WatchLines {
    response: reqwest::Response,
    buf: Vec<u8>,
}

impl WatchLines {
    /// Opens `/v1/watch?{query}`; the answer must be a 200 NDJSON stream.
    pub async fn open(s: &Server, query: &str) -> WatchLines {
        let response = s
            .client
            .get(s.url(&format!("/v1/watch?{query}")))
            .send()
            .await
            .expect("watch request");
        assert_eq!(response.status(), 200, "watch {query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/x-ndjson",
            "watch {query}"
        );
        WatchLines {
            response,
            buf: Vec::new(),
        }
    }

    /// The next line as JSON; `None` when the server ended the body. Fails the test after
    /// [`WAIT_DEADLINE_MS`].
    pub async fn next(&mut self) -> Option<Value> {
        let deadline = Duration::from_millis(WAIT_DEADLINE_MS);
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..end]).into_owned();
                let value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {text:?}"));
                return Some(value);
            }
            let chunk = tokio::time::timeout(deadline, self.response.chunk())
                .await
                .expect("timed out waiting for a watch line")
                .expect("reading the watch stream");
            match chunk {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => {
                    assert!(self.buf.is_empty(), "stream ended mid-line: {:?}", self.buf);
                    return None;
                }
            }
        }
    }

    /// The next line, which must be there.
    pub async fn line(&mut self) -> Value {
        self.next().await.expect("the watch stream ended")
    }
}
