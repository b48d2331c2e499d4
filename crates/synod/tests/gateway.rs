//! etcd's /v3 JSON gateway on the real binary: a 3-process `synod server` cluster driven over
//! its HTTP ports by `curl` (put on one member, range on another, `GET /version`) and by PyPI
//! etcd3gw (`tests/py/etcd3gw_checks.py`: KV, prefixes, txn helpers, watch iterators across
//! members, status and members, and leases).
//!
//! The gRPC port answers HTTP as well, as etcd's client URL does: the same checks by curl and
//! `etcdctl check datascale` at the gRPC addresses.
//!
//! etcd3gw comes from the virtualenv `.ci/py-clients` makes (or `SYNOD_PY`); without it the test
//! fails loudly unless SYNOD_ALLOW_MISSING_PY_CLIENTS=1 is set, as the python-etcd3 tests do.

mod common;

use common::{CURL_SECONDS_MAX, Cluster, curl, python_with, run_with_deadline, wait_until};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Longest the etcd3gw script may run (it has its own watchdog, shorter).
const PYTHON_RUN_MAX: Duration = Duration::from_secs(180);

#[test]
fn curl_put_then_range_on_another_member_and_version() {
    let c = Cluster::start(3, "omnipaxos");
    let put = curl(
        &c.url(1, "/v3/kv/put"),
        Some(r#"{"key":"Zm9v","value":"YmFy"}"#),
    );
    let revision = put["header"]["revision"]
        .as_str()
        .unwrap_or_else(|| panic!("revision is an int64 string: {put}"))
        .to_string();
    let got = curl(&c.url(3, "/v3/kv/range"), Some(r#"{"key":"Zm9v"}"#));
    assert_eq!(got["count"], json!("1"), "{got}");
    let kv = &got["kvs"][0];
    assert_eq!(
        (&kv["key"], &kv["value"]),
        (&json!("Zm9v"), &json!("YmFy")),
        "{got}"
    );
    assert_eq!(kv["mod_revision"], json!(revision), "{got}");
    // The same store through /v1 on the third member.
    let v1 = curl(&c.url(2, "/v1/kv/foo"), None);
    assert_eq!(v1["kv"]["value"], json!("bar"), "{v1}");
    let version = curl(&c.url(2, "/version"), None);
    assert_eq!(
        version,
        json!({"etcdserver": "3.4.0", "etcdcluster": "3.4.0"})
    );
    // Refusals come back as grpc-gateway's error objects.
    let err = curl(&c.url(1, "/v3/kv/put"), Some(r#"{"value":"YmFy"}"#));
    let text = "etcdserver: key is not provided";
    assert_eq!(err, json!({"error": text, "code": 3, "message": text}));
}

/// curl's stdout and HTTP status for `args`, asserting curl itself ran and got an answer.
fn curl_raw(args: &[&str]) -> (String, u16) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            CURL_SECONDS_MAX,
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_string(), code.trim().parse().unwrap_or(0))
}

#[test]
fn the_grpc_port_answers_http_as_etcds_client_url_does() {
    let Some(ctl) = common::etcdctl() else { return };
    let c = Cluster::start(3, "omnipaxos");
    let grpc = |id: u64| format!("http://{}", c.member(id).grpc_addr);
    // The gateway over HTTP/1.1 at one member's gRPC address, gRPC at another's.
    let put = curl(
        &format!("{}/v3/kv/put", grpc(1)),
        Some(r#"{"key":"Zm9v","value":"YmFy"}"#),
    );
    assert!(put["header"]["revision"].is_string(), "{put}");
    let mut get = common::etcdctl_command(&ctl, &c.member(2).grpc_addr);
    get.args(["get", "foo", "--print-value-only"]);
    let (status, stdout, stderr) = run_with_deadline(get, Duration::from_secs(20));
    assert!(status.success() && stdout == "bar\n", "{stdout}{stderr}");
    // HTTP/2 without gRPC's content type (prior knowledge, as over TLS with h2) is HTTP too.
    let (body, code) = curl_raw(&[
        "--http2-prior-knowledge",
        "-X",
        "POST",
        "-d",
        r#"{"key":"Zm9v"}"#,
        &format!("{}/v3/kv/range", grpc(3)),
    ]);
    assert_eq!(code, 200, "{body}");
    let range: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(range["kvs"][0]["value"], json!("YmFy"), "{range}");
    // etcd's /health and /version, the node's /metrics with the process metrics, /v1.
    let health = curl(&format!("{}/health", grpc(2)), None);
    assert_eq!(health["health"], json!("true"), "{health}");
    let version = curl(&format!("{}/version", grpc(2)), None);
    assert_eq!(version["etcdserver"], json!("3.4.0"), "{version}");
    let (metrics, code) = curl_raw(&[&format!("{}/metrics", grpc(3))]);
    assert_eq!(code, 200);
    for family in ["process_resident_memory_bytes ", "synod_is_leader "] {
        assert!(
            metrics.lines().any(|l| l.starts_with(family)),
            "{family}missing: {metrics}"
        );
    }
    let v1 = curl(&format!("{}/v1/kv/foo", grpc(1)), None);
    assert_eq!(v1["kv"]["value"], json!("bar"), "{v1}");
    // Garbage that is neither HTTP/2 nor HTTP/1.1 gets a 400 and the port goes on serving.
    let (_, code) = curl_raw(&["-X", "NOT A METHOD", &format!("{}/v3/kv/range", grpc(1))]);
    assert_eq!(code, 400);
    // etcdctl's own HTTP use of the client URL: check datascale reads /metrics there.
    let mut scale = common::etcdctl_command(&ctl, &c.member(1).grpc_addr);
    scale.args(["check", "datascale", "--load=s"]);
    let (status, stdout, stderr) = run_with_deadline(scale, Duration::from_secs(120));
    assert!(
        status.success() && stdout.contains("PASS"),
        "{stdout}{stderr}"
    );
}

/// gRPC's health service asked by grpcio (python-etcd3's transport, bytes in and out as the
/// protocol encodes them): the status for the whole server and for `nothing`, a service
/// nobody serves. `0801` is SERVING, `0802` NOT_SERVING.
const GRPC_HEALTH_SCRIPT: &str = r#"
import sys, grpc
check = grpc.insecure_channel(sys.argv[1]).unary_unary("/grpc.health.v1.Health/Check")
print(check(b"", timeout=5).hex())
try:
    check(b"\n\x07nothing", timeout=5)
    print("answered")
except grpc.RpcError as e:
    print(e.code().name)
"#;

fn grpc_health(python: &Path, addr: &str) -> String {
    let mut cmd = Command::new(python);
    cmd.args(["-c", GRPC_HEALTH_SCRIPT, addr]);
    let (status, stdout, stderr) = run_with_deadline(cmd, Duration::from_secs(30));
    assert!(status.success(), "grpcio health check: {stdout}{stderr}");
    stdout
}

#[test]
fn health_probes_report_a_member_cut_off_from_its_quorum() {
    let Some(python) = python_with("grpc") else {
        return;
    };
    let mut c = Cluster::start(3, "omnipaxos");
    let addr = c.member(1).grpc_addr.clone();
    assert_eq!(grpc_health(&python, &addr), "0801\nNOT_FOUND\n");
    let (body, code) = curl_raw(&[&format!("http://{addr}/health")]);
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    c.kill(2);
    c.kill(3);
    // Both probes turn once member 1 sees its peers gone.
    wait_until(
        Duration::from_secs(20),
        "the probes to say unhealthy",
        || {
            let (body, code) = curl_raw(&[&format!("http://{addr}/health")]);
            (code == 503).then_some(body)
        },
    );
    let (body, _) = curl_raw(&[&format!("http://{addr}/health")]);
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["health"], json!("false"), "{v}");
    assert!(
        v["reason"].as_str().is_some_and(|r| r.contains("quorum")),
        "{v}"
    );
    assert_eq!(grpc_health(&python, &addr), "0802\nNOT_FOUND\n");
}

/// Every check the script passes, in its order.
const ETCD3GW_CHECKS: [&str; 4] = [
    "kv_basics",
    "watch_prefix_iterator",
    "watch_key_and_once",
    "lease",
];

#[test]
fn etcd3gw_kv_watch_and_lease_against_a_real_cluster() {
    let Some(python) = python_with("etcd3gw") else {
        return;
    };
    let c = Cluster::start(3, "omnipaxos");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/etcd3gw_checks.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script).arg("--endpoints").arg(c.http_endpoints());
    let (status, stdout, stderr) = run_with_deadline(cmd, PYTHON_RUN_MAX);
    assert!(
        status.success(),
        "etcd3gw checks failed ({status}):\n{stdout}\n{stderr}"
    );
    let passed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PASS "))
        .collect();
    assert_eq!(passed, ETCD3GW_CHECKS, "{stdout}");
}

/// `curl -sS -X POST -d body url` for a streaming route: every `{"result": …}` line.
fn curl_lines(url: &str, body: &str) -> Vec<Value> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            CURL_SECONDS_MAX,
            "-X",
            "POST",
            "-d",
            body,
            url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (apt-get install curl): {e}"));
    assert!(out.status.success(), "curl {url}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{url}: {e}: {l}")))
        .collect()
}

/// An int64/uint64 field as the gateway writes it (a JSON string) or a uint32 (a number).
fn int(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

#[test]
fn curl_maintenance_hash_alarm_defragment_snapshot_and_transfer_leadership() {
    use base64::Engine as _;
    let c = Cluster::start(3, "omnipaxos");
    for i in 0..5 {
        let body = json!({"key": base64::engine::general_purpose::STANDARD.encode(format!("k{i}")),
                          "value": "dg=="});
        curl(&c.url(1 + i % 3, "/v3/kv/put"), Some(&body.to_string()));
    }
    // Hash and HashKV at revision 5: equal on every member once each has applied it.
    for (path, body) in [
        ("/v3/maintenance/hash", "{}"),
        ("/v3/maintenance/hashkv", r#"{"revision":"5"}"#),
    ] {
        common::wait_until(Duration::from_secs(20), path, || {
            let hashes: Vec<Option<u64>> = (1..=3)
                .map(|m| int(&curl(&c.url(m, path), Some(body))["hash"]))
                .collect();
            (hashes[0].is_some() && hashes.iter().all(|h| *h == hashes[0])).then_some(())
        });
    }
    let alarms = curl(
        &c.url(2, "/v3/maintenance/alarm"),
        Some(r#"{"action":"GET"}"#),
    );
    assert!(alarms["header"].is_object(), "{alarms}");
    assert!(alarms.get("alarms").is_none(), "no alarm raised: {alarms}");
    let defrag = curl(&c.url(2, "/v3/maintenance/defragment"), Some("{}"));
    assert!(defrag["header"].is_object(), "{defrag}");
    // Snapshot: `{"result": {"blob": …, "remaining_bytes": …}}` lines that add up to a backup
    // `synod restore --verify` accepts.
    let lines = curl_lines(&c.url(3, "/v3/maintenance/snapshot"), "{}");
    let mut backup = Vec::new();
    for line in &lines {
        let blob = line["result"]["blob"].as_str().unwrap_or_default();
        backup.extend(
            base64::engine::general_purpose::STANDARD
                .decode(blob)
                .expect("blob is base64"),
        );
    }
    assert!(
        !lines.is_empty() && backup.starts_with(b"SYNODBAK"),
        "{lines:?}"
    );
    let file = c.dir.path().join("gateway.db");
    std::fs::write(&file, &backup).expect("write backup");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_synod"));
    cmd.arg("restore").arg(&file).arg("--verify");
    let (status, out, err) = run_with_deadline(cmd, Duration::from_secs(30));
    assert!(
        status.success() && out.contains("revision         5"),
        "{out}{err}"
    );
    // transfer-leadership: asked of the leader, to another member; refused for a stranger.
    let leader = common::wait_until(Duration::from_secs(20), "a leader", || {
        int(&curl(&c.url(1, "/v3/maintenance/status"), Some("{}"))["leader"]).filter(|l| *l > 0)
    });
    let target = if leader == 1 { 2 } else { 1 };
    let bad = curl(
        &c.url(leader, "/v3/maintenance/transfer-leadership"),
        Some(r#"{"targetID":"12345"}"#),
    );
    assert!(
        bad["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad leader transferee")),
        "{bad}"
    );
    let moved = curl(
        &c.url(leader, "/v3/maintenance/transfer-leadership"),
        Some(&json!({"targetID": target.to_string()}).to_string()),
    );
    assert!(moved["header"].is_object(), "{moved}");
    common::wait_until(Duration::from_secs(20), "the new leader everywhere", || {
        (1..=3)
            .all(|m| {
                int(&curl(&c.url(m, "/v3/maintenance/status"), Some("{}"))["leader"])
                    == Some(target)
            })
            .then_some(())
    });
}
