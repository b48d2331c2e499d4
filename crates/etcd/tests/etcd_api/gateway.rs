//! etcd's /v3 JSON gateway end to end over loopback: the HTTP API (`synod_http`) serving the
//! gateway as a mount over a single-node stand-in, driven with plain HTTP and JSON as curl
//! and etcd3gw drive etcd — KV round trips (base64, int64 as strings, sort/limit, prev_kv,
//! txn, compaction), the watch stream, errors with grpc-gateway's statuses and bodies, and
//! `/v1` still served beside it.

use serde_json::{Value, json};
use std::time::Duration;
use synod_core::Capabilities;
use synod_etcd::gateway::Gateway;
use synod_node::handle::local_test_node;
use tokio::sync::{oneshot, watch};

/// Generous bound on anything a local in-memory node should answer; exceeding it is a hang.
const DEADLINE: Duration = Duration::from_secs(10);

struct Server {
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start() -> Server {
        let caps = Capabilities {
            ranges: true,
            transactions: true,
            revisions: true,
            watch: true,
            leases: true,
        };
        let handle = local_test_node("local", caps);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let (stopping_tx, stopping) = watch::channel(false);
        let mount = synod_http::Mount {
            router: Gateway::new(handle.clone())
                .with_stopping(stopping)
                .router(),
            routes: Gateway::routes()
                .into_iter()
                .map(|r| synod_http::RouteSpec {
                    method: r.method,
                    path: r.path,
                    op: r.op,
                    engine: r.engine,
                })
                .collect(),
        };
        let task = tokio::spawn(synod_http::serve_with_mount(
            listener,
            handle.clone(),
            synod_http::HttpConfig::default(),
            mount,
            async move {
                let _ = stopped.await;
                let _ = stopping_tx.send(true);
            },
        ));
        Server {
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// POSTs `body` (raw bytes) to `path`: the status and the JSON reply.
    async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = tokio::time::timeout(
            DEADLINE,
            self.client
                .post(format!("{}{path}", self.base))
                .body(body)
                .send(),
        )
        .await
        .expect("answered in time")
        .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        (status, value)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    /// POSTs and expects 200.
    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.post(path, body).await;
        assert_eq!(status, 200, "{path}: {reply}");
        reply
    }

    /// Stops the server; it must exit cleanly even with a watch stream open.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let r = tokio::time::timeout(DEADLINE, task)
                .await
                .expect("server stops in time")
                .expect("server task did not panic");
            assert!(r.is_ok(), "{r:?}");
        }
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(v: &Value) -> String {
    use base64::Engine;
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64");
    String::from_utf8(bytes).expect("utf8")
}

/// The header revision, which the gateway sends as a JSON string (int64).
fn revision(reply: &Value) -> i64 {
    let r = &reply["header"]["revision"];
    r.as_str()
        .unwrap_or_else(|| panic!("revision is not a string: {reply}"))
        .parse()
        .expect("int64")
}

#[tokio::test]
async fn put_range_delete_round_trip_in_etcd_json() {
    let s = Server::start().await;
    let put = s
        .ok(
            "/v3/kv/put",
            json!({"key": b64("foo"), "value": b64("bar")}),
        )
        .await;
    let rev1 = revision(&put);
    assert!(rev1 > 0, "{put}");
    assert!(
        put.get("prev_kv").is_none(),
        "no prev_kv unless asked: {put}"
    );
    // Default-valued header fields are left out; ids are uint64 strings.
    assert_eq!(put["header"]["member_id"], json!("1"), "{put}");

    let put2 = s
        .ok(
            "/v3/kv/put",
            json!({"key": b64("foo"), "value": b64("baz"), "prev_kv": true}),
        )
        .await;
    assert_eq!(unb64(&put2["prev_kv"]["value"]), "bar");
    assert_eq!(put2["prev_kv"]["version"], json!("1"));
    let rev2 = revision(&put2);
    assert_eq!(rev2, rev1 + 1);

    let got = s.ok("/v3/kv/range", json!({"key": b64("foo")})).await;
    assert_eq!(got["count"], json!("1"));
    let kv = &got["kvs"][0];
    assert_eq!(
        (unb64(&kv["key"]), unb64(&kv["value"])),
        ("foo".into(), "baz".into())
    );
    assert_eq!(kv["create_revision"], json!(rev1.to_string()));
    assert_eq!(kv["mod_revision"], json!(rev2.to_string()));
    assert_eq!(kv["version"], json!("2"));
    assert!(kv.get("lease").is_none(), "lease 0 is a default: {kv}");
    assert!(got.get("more").is_none(), "more=false is a default: {got}");

    // A past revision, with the int64 sent as a JSON number (accepted like a string).
    let old = s
        .ok("/v3/kv/range", json!({"key": b64("foo"), "revision": rev1}))
        .await;
    assert_eq!(unb64(&old["kvs"][0]["value"]), "bar");

    // A missing key: no kvs, no count (both defaults).
    let none = s.ok("/v3/kv/range", json!({"key": b64("nope")})).await;
    assert!(
        none.get("kvs").is_none() && none.get("count").is_none(),
        "{none}"
    );

    let del = s
        .ok(
            "/v3/kv/deleterange",
            json!({"key": b64("foo"), "prev_kv": true}),
        )
        .await;
    assert_eq!(del["deleted"], json!("1"));
    assert_eq!(unb64(&del["prev_kvs"][0]["value"]), "baz");
    let gone = s.ok("/v3/kv/range", json!({"key": b64("foo")})).await;
    assert!(gone.get("kvs").is_none(), "{gone}");
    s.stop().await;
}

#[tokio::test]
async fn sorting_limits_counts_and_camel_case_input() {
    let s = Server::start().await;
    for k in ["p/a", "p/b", "p/c"] {
        s.ok("/v3/kv/put", json!({"key": b64(k), "value": b64(k)}))
            .await;
    }
    let page = s
        .ok(
            "/v3/kv/range",
            json!({"key": b64("p/"), "range_end": b64("p0"), "limit": "2",
                   "sort_order": "DESCEND", "sort_target": "KEY"}),
        )
        .await;
    let keys: Vec<String> = page["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(|kv| unb64(&kv["key"]))
        .collect();
    assert_eq!(keys, ["p/c", "p/b"]);
    assert_eq!(
        (page["more"].clone(), page["count"].clone()),
        (json!(true), json!("3"))
    );

    // lowerCamelCase names and enum numbers, as some clients send them.
    let camel = s
        .ok(
            "/v3/kv/range",
            json!({"key": b64("p/"), "rangeEnd": b64("p0"), "keysOnly": true,
                   "sortOrder": 1, "sortTarget": 0}),
        )
        .await;
    let kvs = camel["kvs"].as_array().expect("kvs");
    assert_eq!(unb64(&kvs[0]["key"]), "p/a");
    assert!(kvs.iter().all(|kv| kv.get("value").is_none()), "{camel}");

    let count = s
        .ok(
            "/v3/kv/range",
            json!({"key": b64("p/"), "range_end": b64("p0"), "count_only": true}),
        )
        .await;
    assert_eq!(count["count"], json!("3"));
    assert!(count.get("kvs").is_none(), "{count}");
    s.stop().await;
}

#[tokio::test]
async fn txn_compare_and_swap_and_compaction() {
    let s = Server::start().await;
    s.ok("/v3/kv/put", json!({"key": b64("t"), "value": b64("1")}))
        .await;
    // etcd3gw's replace(): compare VALUE then put, else range.
    let txn = |expect: &str, new: &str| {
        json!({
            "compare": [{"key": b64("t"), "result": "EQUAL", "target": "VALUE", "value": b64(expect)}],
            "success": [{"request_put": {"key": b64("t"), "value": b64(new)}}],
            "failure": [{"request_range": {"key": b64("t")}}],
        })
    };
    let won = s.ok("/v3/kv/txn", txn("1", "2")).await;
    assert_eq!(won["succeeded"], json!(true), "{won}");
    assert!(
        won["responses"][0]["response_put"]["header"].is_object(),
        "{won}"
    );
    let lost = s.ok("/v3/kv/txn", txn("1", "3")).await;
    assert!(
        lost.get("succeeded").is_none(),
        "false is a default: {lost}"
    );
    let current = &lost["responses"][0]["response_range"]["kvs"][0];
    assert_eq!(unb64(&current["value"]), "2");
    // etcd3gw's create(): compare CREATE == 0 (a oneof holding a default value).
    let create = json!({
        "compare": [{"key": b64("t"), "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
        "success": [{"request_put": {"key": b64("t"), "value": b64("x")}}],
        "failure": [],
    });
    let exists = s.ok("/v3/kv/txn", create).await;
    assert!(exists.get("succeeded").is_none(), "{exists}");

    let head = revision(&lost);
    let compacted = s
        .ok("/v3/kv/compaction", json!({"revision": head.to_string()}))
        .await;
    assert!(revision(&compacted) >= head, "{compacted}");
    let (status, err) = s
        .post("/v3/kv/range", json!({"key": b64("t"), "revision": 1}))
        .await;
    assert_eq!(status, 400, "{err}");
    let text = "etcdserver: mvcc: required revision has been compacted";
    assert_eq!(err, json!({"error": text, "code": 11, "message": text}));
    s.stop().await;
}

/// Reads NDJSON lines from a streaming reply until `n` are in, within the deadline.
async fn read_lines(resp: &mut reqwest::Response, buf: &mut Vec<u8>, n: usize) -> Vec<Value> {
    let mut lines = Vec::new();
    while lines.len() < n {
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let value = serde_json::from_slice(&line).expect("a JSON line");
            lines.push(value);
        }
        if lines.len() >= n {
            break;
        }
        let chunk = tokio::time::timeout(DEADLINE, resp.chunk())
            .await
            .expect("a stream line in time")
            .expect("read")
            .expect("the stream is still open");
        buf.extend_from_slice(&chunk);
    }
    lines
}

#[tokio::test]
async fn watch_streams_created_then_events_in_order() {
    let s = Server::start().await;
    let create =
        json!({"create_request": {"key": b64("w/"), "range_end": b64("w0"), "prev_kv": true}});
    let mut resp = tokio::time::timeout(
        DEADLINE,
        s.client
            .post(format!("{}/v3/watch", s.base))
            .body(create.to_string())
            .send(),
    )
    .await
    .expect("watch answered in time")
    .expect("watch");
    assert_eq!(resp.status().as_u16(), 200);
    let mut buf = Vec::new();
    let created = read_lines(&mut resp, &mut buf, 1).await.remove(0);
    assert_eq!(created["result"]["created"], json!(true), "{created}");
    assert!(created["result"].get("events").is_none(), "{created}");

    let put = s
        .ok("/v3/kv/put", json!({"key": b64("w/a"), "value": b64("1")}))
        .await;
    s.ok(
        "/v3/kv/put",
        json!({"key": b64("elsewhere"), "value": b64("x")}),
    )
    .await;
    let del = s.ok("/v3/kv/deleterange", json!({"key": b64("w/a")})).await;

    let events: Vec<Value> = read_lines(&mut resp, &mut buf, 2)
        .await
        .into_iter()
        .flat_map(|line| {
            // etcd3gw reads any chunk holding `created` as a creation reply: never on events.
            assert!(line["result"].get("created").is_none(), "{line}");
            line["result"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    // PUT is the enum's default: left out, as etcd's gateway does.
    assert!(events[0].get("type").is_none(), "{events:?}");
    assert_eq!(unb64(&events[0]["kv"]["value"]), "1");
    assert_eq!(
        events[0]["kv"]["mod_revision"],
        json!(revision(&put).to_string())
    );
    assert_eq!(events[1]["type"], json!("DELETE"));
    assert_eq!(unb64(&events[1]["kv"]["key"]), "w/a");
    assert_eq!(
        events[1]["kv"]["mod_revision"],
        json!(revision(&del).to_string())
    );
    assert_eq!(unb64(&events[1]["prev_kv"]["value"]), "1");
    // Shutdown ends the open stream instead of waiting out the grace period.
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_grpc_gateway_errors_and_the_node_keeps_serving() {
    let s = Server::start().await;
    let (status, err) = s.post_raw("/v3/kv/put", "{not json").await;
    assert_eq!((status, &err["code"]), (400, &json!(3)), "{err}");
    let msg = err["message"].as_str().expect("message");
    assert!(msg.contains("PutRequest"), "{msg}");
    assert_eq!(err["error"], err["message"]);

    let (status, err) = s.post("/v3/kv/put", json!({"key": 5})).await;
    assert_eq!((status, &err["code"]), (400, &json!(3)), "{err}");
    let (status, err) = s.post("/v3/kv/range", json!({"key": "%%%"})).await;
    assert_eq!(
        (status, &err["code"]),
        (400, &json!(3)),
        "not base64: {err}"
    );
    let (status, err) = s
        .post(
            "/v3/kv/range",
            json!({"key": b64("a"), "sort_order": "SIDEWAYS"}),
        )
        .await;
    assert_eq!((status, &err["code"]), (400, &json!(3)), "{err}");
    let (status, err) = s.post_raw("/v3/watch", "]").await;
    assert_eq!((status, &err["code"]), (400, &json!(3)), "{err}");

    // The service's own refusals, with etcd's texts.
    let (status, err) = s.post("/v3/kv/put", json!({"value": b64("v")})).await;
    let text = "etcdserver: key is not provided";
    assert_eq!(
        (status, err),
        (400, json!({"error": text, "code": 3, "message": text}))
    );

    // A body over the limit is refused before it is parsed.
    let big = vec![b' '; 4 << 20];
    let (status, err) = s.post_raw("/v3/kv/put", big).await;
    assert_eq!((status, &err["code"]), (400, &json!(3)), "{err}");
    assert!(
        err["message"]
            .as_str()
            .expect("message")
            .starts_with("etcdserver: request is too large"),
        "{err}"
    );

    // Unknown fields are skipped (grpc-gateway v1's decoder does), an empty body is the
    // empty request.
    s.ok(
        "/v3/kv/put",
        json!({"key": b64("k"), "value": b64("v"), "newer_field": 1}),
    )
    .await;
    let (status, _) = s.post_raw("/v3/maintenance/status", "").await;
    assert_eq!(status, 200);

    // Wrong method: 405 in the same error shape.
    let r = s
        .client
        .get(format!("{}/v3/kv/range", s.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 405);
    let err: Value = r.json().await.expect("json");
    assert!(
        err["message"].as_str().expect("message").contains("POST"),
        "{err}"
    );

    // Still serving.
    let got = s.ok("/v3/kv/range", json!({"key": b64("k")})).await;
    assert_eq!(unb64(&got["kvs"][0]["value"]), "v");
    s.stop().await;
}

#[tokio::test]
async fn version_cluster_maintenance_and_v1_beside_the_gateway() {
    let s = Server::start().await;
    let r = s
        .client
        .get(format!("{}/version", s.base))
        .send()
        .await
        .expect("version");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v, json!({"etcdserver": "3.4.0", "etcdcluster": "3.4.0"}));

    let members = s.ok("/v3/cluster/member/list", json!({})).await;
    let m = &members["members"][0];
    assert_eq!(
        (m["ID"].clone(), m["name"].clone()),
        (json!("1"), json!("n1")),
        "{members}"
    );
    assert!(
        m["clientURLs"].is_array() && m["peerURLs"].is_array(),
        "{members}"
    );
    let status = s.ok("/v3/maintenance/status", json!({})).await;
    assert_eq!(
        status["version"],
        json!(synod_etcd::ETCD_VERSION),
        "{status}"
    );
    assert_eq!(status["leader"], json!("1"), "{status}");

    // /v1 answers beside the gateway, over the same store.
    s.ok(
        "/v3/kv/put",
        json!({"key": b64("shared"), "value": b64("both")}),
    )
    .await;
    let v1: Value = s
        .client
        .get(format!("{}/v1/kv/shared", s.base))
        .send()
        .await
        .expect("v1 get")
        .json()
        .await
        .expect("json");
    assert_eq!(v1["kv"]["value"], json!("both"));
    // The edge counts gateway requests under their own op names.
    let metrics = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("op=\"v3_put\""), "no v3_put in /metrics");
    s.stop().await;
}

/// The Lease routes call the Lease service: a grant's ID and TTL come back as int64 strings,
/// a put attaches a key, time-to-live lists it, keepalive answers one `{"result": …}` line,
/// and a revoke deletes the key; a lease that is gone is etcd's NotFound (404).
#[tokio::test]
async fn lease_routes_reach_the_lease_service() {
    let s = Server::start().await;
    let grant = s.ok("/v3/lease/grant", json!({"TTL": 30, "ID": 0})).await;
    let id = grant["ID"].as_str().expect("ID as a string").to_string();
    assert_eq!(grant["TTL"], json!("30"), "{grant}");
    s.ok(
        "/v3/kv/put",
        json!({"key": "bGs=", "value": "dg==", "lease": id}),
    )
    .await;
    let ttl = s
        .ok("/v3/kv/lease/timetolive", json!({"ID": id, "keys": true}))
        .await;
    assert_eq!(ttl["ID"], json!(id), "{ttl}");
    assert_eq!(ttl["grantedTTL"], json!("30"), "{ttl}");
    assert_eq!(ttl["keys"], json!(["bGs="]), "{ttl}");
    let leases = s.ok("/v3/lease/leases", json!({})).await;
    assert_eq!(leases["leases"], json!([{"ID": id}]), "{leases}");
    let (status, alive) = s.post("/v3/lease/keepalive", json!({"ID": id})).await;
    assert_eq!(status, 200, "{alive}");
    assert_eq!(alive["result"]["ID"], json!(id), "{alive}");
    assert_eq!(alive["result"]["TTL"], json!("30"), "{alive}");
    s.ok("/v3/kv/lease/revoke", json!({"ID": id})).await;
    let range = s.ok("/v3/kv/range", json!({"key": "bGs="})).await;
    assert!(
        range.get("kvs").is_none(),
        "the revoke deleted the key: {range}"
    );
    let (status, err) = s.post("/v3/lease/revoke", json!({"ID": id})).await;
    assert_eq!((status, &err["code"]), (404, &json!(5)), "{err}");
    assert_eq!(
        err["message"],
        json!("etcdserver: requested lease not found"),
        "{err}"
    );
    s.stop().await;
}

/// Lock and Election over the gateway (etcd's `/v3/lock/*` and `/v3/election/*`): a lock
/// taken with a lease answers its key, whose create revision is the header's; a campaign
/// makes its value the leader's; resign and unlock end them.
#[tokio::test]
async fn lock_and_election_routes_reach_the_coordination_service() {
    let s = Server::start().await;
    let grant = s.ok("/v3/lease/grant", json!({"TTL": 30})).await;
    let id = grant["ID"].as_str().expect("ID").to_string();
    // name "gw-lock"
    let lock = s
        .ok(
            "/v3/lock/lock",
            json!({"name": "Z3ctbG9jaw==", "lease": id}),
        )
        .await;
    let key = lock["key"].as_str().expect("key").to_string();
    let range = s.ok("/v3/kv/range", json!({"key": key})).await;
    assert_eq!(range["kvs"][0]["lease"], json!(id), "{range}");
    assert_eq!(
        range["kvs"][0]["create_revision"], lock["header"]["revision"],
        "the lock's header revision is its key's create revision (the fencing token)"
    );
    s.ok("/v3/lock/unlock", json!({"key": key})).await;
    let range = s.ok("/v3/kv/range", json!({"key": key})).await;
    assert!(
        range.get("kvs").is_none(),
        "unlock deleted the key: {range}"
    );

    // name "gw-elect", value "v1"
    let won = s
        .ok(
            "/v3/election/campaign",
            json!({"name": "Z3ctZWxlY3Q=", "lease": id, "value": "djE="}),
        )
        .await;
    let leader = won["leader"].clone();
    let now = s
        .ok("/v3/election/leader", json!({"name": "Z3ctZWxlY3Q="}))
        .await;
    assert_eq!(now["kv"]["value"], json!("djE="), "{now}");
    s.ok("/v3/election/resign", json!({"leader": leader})).await;
    let (status, err) = s
        .post("/v3/election/leader", json!({"name": "Z3ctZWxlY3Q="}))
        .await;
    assert_ne!(status, 200, "no leader after the resign: {err}");
    s.stop().await;
}
