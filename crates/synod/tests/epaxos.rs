//! A real 3-member EPaxos cluster of `synod server` processes, driven through every client:
//! etcdctl (put/get/del at different members, a prefix get, txns comparing values), the
//! HTTP/JSON API and synodctl. EPaxos is leaderless and has no store-wide revision, so watch,
//! compaction, leases, reads at a revision and txn compares on a revision are refused with
//! the clear "not supported by … epaxos engine" error. A member SIGKILLed while the others
//! keep taking writes serves those writes once restarted. python-etcd3 (`tests/py/
//! epaxos_checks.py`) writes at every member, races writers on one key from all of them, runs
//! value transactions and prefix reads, and sees watch and leases refused.

mod common;

use common::{
    Cluster, etcdctl, etcdctl_command, python_checks, python_etcd3, run_with_deadline, synodctl,
    wait_until,
};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What every refusal names, through the HTTP API ("… not supported by the epaxos engine")
/// and through etcd gRPC ("… not supported by synod's epaxos engine").
const HTTP_UNSUPPORTED: &str = "not supported by the epaxos engine";
const GRPC_UNSUPPORTED: &str = "not supported by synod's epaxos engine";
/// Longest any one client command may take: a refusal must come back, never hang.
const COMMAND_MAX: Duration = Duration::from_secs(30);

fn start() -> Cluster {
    // Waits for every member to be connected to the others, not for a leader (there is none
    // to agree on: each member reports itself).
    Cluster::start(3, "epaxos")
}

/// Status code and JSON body of one HTTP request.
fn send(req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = req.send().expect("HTTP request");
    let status = r.status().as_u16();
    let body: Value = r.json().expect("JSON body");
    (status, body)
}

/// (value, version) of a KV object in a response body, None when it is null.
fn kv(body: &Value, field: &str) -> Option<(String, u64)> {
    let kv = body.get(field)?;
    Some((kv["value"].as_str()?.to_string(), kv["version"].as_u64()?))
}

fn kv_of(s: &str, v: u64) -> Option<(String, u64)> {
    Some((s.to_string(), v))
}

/// etcdctl against member `id`; (success, stdout, stderr).
fn etcd(etcdctl: &Path, c: &Cluster, id: u64, args: &[&str]) -> (bool, String, String) {
    let mut cmd = etcdctl_command(etcdctl, &c.member(id).grpc_addr);
    cmd.args(args);
    let (status, stdout, stderr) = run_with_deadline(cmd, COMMAND_MAX);
    (status.success(), stdout, stderr)
}

/// etcdctl's stdout, asserting it succeeded.
fn etcd_ok(etcdctl: &Path, c: &Cluster, id: u64, args: &[&str]) -> String {
    let (ok, stdout, stderr) = etcd(etcdctl, c, id, args);
    assert!(ok, "etcdctl {args:?} at n{id}: {stdout}{stderr}");
    stdout
}

/// `etcdctl txn` at member `id` with `script` on stdin (compares, blank line, success ops,
/// blank line, failure ops, blank line); (success, stdout, stderr).
fn etcd_txn(etcdctl: &Path, c: &Cluster, id: u64, script: &str) -> (bool, String, String) {
    let mut child = etcdctl_command(etcdctl, &c.member(id).grpc_addr)
        .args(["txn", "--interactive=false"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl txn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write txn script");
    // stdin is closed here (dropped above), so etcdctl reads the whole script and runs it.
    let deadline = Instant::now() + COMMAND_MAX;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("etcdctl txn at n{id} still running after {COMMAND_MAX:?}: {script}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("etcdctl txn output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn etcdctl_kv_prefix_and_value_txns_work_at_every_member_and_revision_features_are_refused() {
    let Some(etcdctl) = etcdctl() else { return };
    let c = start();
    let e = |id, args: &[&str]| etcd_ok(&etcdctl, &c, id, args);

    // Every write at a different member, every read at yet another one.
    assert_eq!(e(1, &["put", "foo", "bar"]), "OK\n");
    assert_eq!(e(2, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(e(3, &["put", "foo2", "baz"]), "OK\n");
    assert_eq!(e(2, &["put", "other", "x"]), "OK\n");
    for id in 1..=3 {
        assert_eq!(
            e(id, &["get", "--prefix", "foo"]),
            "foo\nbar\nfoo2\nbaz\n",
            "prefix get at n{id}"
        );
    }

    // A txn whose value compare holds takes the success branch, at every member alike.
    let (ok, out, err) = etcd_txn(
        &etcdctl,
        &c,
        2,
        "value(\"foo\") = \"bar\"\n\nput foo bar2\n\nput foo nope\n\n",
    );
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("SUCCESS\n"), "{out}");
    for id in 1..=3 {
        assert_eq!(e(id, &["get", "foo"]), "foo\nbar2\n", "n{id}");
    }
    // A stale compare takes the failure branch, whose get shows the current value.
    let (ok, out, err) = etcd_txn(
        &etcdctl,
        &c,
        3,
        "value(\"foo\") = \"bar\"\n\nput foo stale\n\nget foo\n\n",
    );
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("FAILURE\n"), "{out}");
    assert!(out.contains("foo\nbar2\n"), "{out}");
    assert_eq!(e(1, &["get", "foo"]), "foo\nbar2\n");
    // Multi-key: compare one key, write two.
    let (ok, out, err) = etcd_txn(
        &etcdctl,
        &c,
        1,
        "value(\"other\") = \"x\"\n\nput t1 a\nput t2 b\n\n\n",
    );
    assert!(ok && out.starts_with("SUCCESS\n"), "{out}{err}");
    assert_eq!(e(3, &["get", "t1", "t3"]), "t1\na\nt2\nb\n");
    // "The key is absent" as etcd clients write it (create revision 0) means the same at
    // every member, so it is allowed…
    let (ok, out, err) = etcd_txn(
        &etcdctl,
        &c,
        2,
        "create(\"fresh\") = \"0\"\n\nput fresh new\n\n\n",
    );
    assert!(ok && out.starts_with("SUCCESS\n"), "{out}{err}");
    assert_eq!(e(3, &["get", "fresh"]), "fresh\nnew\n");
    // …but a compare on a particular revision is refused: each member numbers its own writes.
    let (ok, out, err) = etcd_txn(
        &etcdctl,
        &c,
        1,
        "mod(\"foo\") = \"3\"\n\nput foo byrev\n\n\n",
    );
    assert!(!ok, "a mod-revision compare must be refused: {out}");
    assert!(
        err.contains("Unimplemented") && err.contains(GRPC_UNSUPPORTED),
        "{err}"
    );
    assert_eq!(e(2, &["get", "foo"]), "foo\nbar2\n", "nothing written");

    // Delete at n3: counted, gone everywhere, the prefix shrinks.
    assert_eq!(e(3, &["del", "foo"]), "1\n");
    assert_eq!(e(1, &["get", "foo"]), "");
    assert_eq!(e(2, &["get", "--prefix", "foo"]), "foo2\nbaz\n");
    assert_eq!(e(1, &["del", "foo"]), "0\n");

    // No store-wide revision: no history, no compaction, no watch, no leases. Each is refused
    // at once (the command returns) with the engine named.
    for (args, what) in [
        (&["get", "foo2", "--rev=1"][..], "revision history"),
        (&["compaction", "1"][..], "revision history"),
        (&["watch", "foo2"][..], "watch"),
        (&["lease", "grant", "10"][..], "leases"),
    ] {
        let (ok, out, err) = etcd(&etcdctl, &c, 2, args);
        assert!(!ok, "{args:?} must fail: {out}{err}");
        assert!(
            err.contains(what) && err.contains(GRPC_UNSUPPORTED),
            "{args:?}: {err}"
        );
    }
    // The refusals changed nothing.
    assert_eq!(e(3, &["get", "foo2"]), "foo2\nbaz\n");
}

#[test]
fn http_api_reads_and_writes_at_every_member_and_refuses_revision_features() {
    let c = start();
    for id in 1..=3 {
        let (code, st) = send(c.http.get(c.url(id, "/v1/status")));
        assert_eq!(code, 200);
        assert_eq!(st["engine"], "epaxos", "{st}");
        // Leaderless: every member leads the commands submitted to it.
        assert_eq!(st["leader"], id, "{st}");
        assert_eq!(st["role"], "replica", "{st}");
        assert_eq!(
            st["capabilities"],
            json!({"ranges": true, "transactions": true, "revisions": false, "watch": false, "leases": false}),
            "{st}"
        );
    }

    let put = |id: u64, key: &str, value: &str| {
        send(
            c.http
                .put(c.url(id, &format!("/v1/kv/{key}")))
                .json(&json!({ "value": value })),
        )
    };
    let get = |id: u64, key: &str, consistency: &str| {
        send(
            c.http
                .get(c.url(id, &format!("/v1/kv/{key}?consistency={consistency}"))),
        )
    };

    let (code, b) = put(1, "greeting", "hello");
    assert_eq!(code, 200, "{b}");
    assert_eq!(kv(&b, "kv"), kv_of("hello", 1), "{b}");
    let (code, b) = put(2, "greeting", "hello again");
    assert_eq!(code, 200, "{b}");
    assert_eq!(kv(&b, "kv"), kv_of("hello again", 2), "{b}");
    assert_eq!(kv(&b, "prev_kv"), kv_of("hello", 1), "{b}");
    for id in 1..=3 {
        let (code, b) = get(id, "greeting", "linearizable");
        assert_eq!(code, 200, "n{id}: {b}");
        assert_eq!(kv(&b, "kv"), kv_of("hello again", 2), "n{id}");
        // The linearizable read executed here after the write, so the member's own state
        // (what a sequential read answers from) has it too.
        let (code, b) = get(id, "greeting", "sequential");
        assert_eq!(code, 200, "n{id}: {b}");
        assert_eq!(kv(&b, "kv"), kv_of("hello again", 2), "n{id} sequential");
    }

    // CAS by value at n3, then the same expectation conflicts at n1.
    let cas =
        |id: u64, body: Value| send(c.http.post(c.url(id, "/v1/kv/greeting/cas")).json(&body));
    let (code, b) = cas(
        3,
        json!({"expect": {"value": "hello again"}, "value": "v3"}),
    );
    assert_eq!((code, b["succeeded"].as_bool()), (200, Some(true)), "{b}");
    let (code, b) = cas(
        1,
        json!({"expect": {"value": "hello again"}, "value": "no"}),
    );
    assert_eq!(
        (code, b["error"]["code"].as_str()),
        (409, Some("cas_conflict")),
        "{b}"
    );
    assert_eq!(kv(&b, "kv"), kv_of("v3", 3), "{b}");

    // Prefix listing works (EPaxos has ranges).
    let (code, b) = put(3, "gr2", "second");
    assert_eq!(code, 200, "{b}");
    let (code, b) = send(c.http.get(c.url(2, "/v1/kv?prefix=gr")));
    assert_eq!(code, 200, "{b}");
    let listed: Vec<(&str, &str)> = b["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| Some((kv["key"].as_str()?, kv["value"].as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(listed, [("gr2", "second"), ("greeting", "v3")], "{b}");

    // Delete at n1, gone at n2.
    let (code, b) = send(c.http.delete(c.url(1, "/v1/kv/greeting")));
    assert_eq!((code, b["deleted"].as_u64()), (200, Some(1)), "{b}");
    let (code, b) = get(2, "greeting", "linearizable");
    assert_eq!(
        (code, b["error"]["code"].as_str()),
        (404, Some("key_not_found"))
    );

    // Watch, compaction and reads at a revision: 501 naming the engine.
    for (req, what) in [
        (c.http.get(c.url(1, "/v1/watch?key=gr2")), "watch"),
        (
            c.http
                .post(c.url(2, "/v1/compact"))
                .json(&json!({"revision": 1})),
            "revision history",
        ),
        (
            c.http.get(c.url(3, "/v1/kv?prefix=&revision=1")),
            "revision history",
        ),
    ] {
        let (code, b) = send(req);
        assert_eq!(
            (code, b["error"]["code"].as_str()),
            (501, Some("unsupported")),
            "{b}"
        );
        let msg = b["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(what) && msg.contains(HTTP_UNSUPPORTED),
            "{msg}"
        );
    }
}

/// synodctl at member `id` (one endpoint, so the member is the one asked); its output.
fn ctl(bin: &Path, c: &Cluster, id: u64, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .arg("--endpoints")
        .arg(&c.member(id).http_addr)
        .arg("--timeout")
        .arg("10s")
        .args(args)
        .env_remove("SYNODCTL_ENDPOINTS")
        .stdin(Stdio::null())
        .output()
        .expect("run synodctl")
}

/// synodctl's stdout, asserting its exit code.
fn ctl_ok(bin: &Path, c: &Cluster, id: u64, args: &[&str]) -> String {
    let out = ctl(bin, c, id, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "synodctl {args:?} at n{id}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn synodctl_put_get_prefix_and_delete_at_different_members() {
    let bin = synodctl();
    let c = start();
    assert_eq!(ctl_ok(&bin, &c, 1, &["put", "color", "red"]), "OK\n");
    assert_eq!(ctl_ok(&bin, &c, 2, &["get", "color"]), "color\nred\n");
    assert_eq!(ctl_ok(&bin, &c, 3, &["put", "colour", "blue"]), "OK\n");
    assert_eq!(
        ctl_ok(&bin, &c, 1, &["get", "col", "--prefix"]),
        "color\nred\ncolour\nblue\n"
    );
    assert_eq!(ctl_ok(&bin, &c, 2, &["count", "col"]), "2\n");
    assert_eq!(ctl_ok(&bin, &c, 3, &["del", "color"]), "1\n");
    let out = ctl(&bin, &c, 1, &["get", "color"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("key_not_found"));
    // Reading at a revision is refused with the engine named.
    let out = ctl(&bin, &c, 2, &["get", "colour", "--rev", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(HTTP_UNSUPPORTED), "{stderr}");
    let st = ctl_ok(&bin, &c, 1, &["status"]);
    assert!(st.contains("epaxos"), "{st}");
}

/// The value of `key` read linearizably at member `id`; None if absent. Retries while the
/// member cannot answer yet (connection refused, 503 while it reconnects), but asserts on
/// the first answer it gives: a wrong value is a failure, not something to wait out.
fn read_when_serving(c: &Cluster, id: u64, key: &str, within: Duration) -> Option<String> {
    wait_until(within, &format!("n{id} to answer a read of {key}"), || {
        let r = c
            .http
            .get(c.url(id, &format!("/v1/kv/{key}")))
            .send()
            .ok()?;
        match r.status().as_u16() {
            200 => {
                let v: Value = r.json().ok()?;
                Some(v["kv"]["value"].as_str().map(str::to_string))
            }
            404 => Some(None),
            code if code >= 500 => None,
            code => panic!(
                "GET {key} at n{id}: {code} {}",
                r.text().unwrap_or_default()
            ),
        }
    })
}

#[test]
fn a_killed_member_misses_nothing_the_others_took_while_it_was_down() {
    let mut c = start();
    for id in 1..=3u64 {
        let r = c.put(id, &format!("before-{id}"), "v");
        assert_eq!(r.status().as_u16(), 200, "put at n{id}");
    }

    c.kill(3);
    // Two of three are a quorum (fast and slow): n1 and n2 keep taking writes, each its own.
    for i in 0..10u64 {
        let id = 1 + i % 2;
        let r = c.put(id, &format!("during-{i}"), &format!("d{i}"));
        assert_eq!(
            r.status().as_u16(),
            200,
            "put during-{i} at n{id} with n3 down"
        );
    }
    // Overwrite a key n3 had, so a stale copy would show.
    assert_eq!(c.put(1, "before-3", "changed").status().as_u16(), 200);
    for i in 0..10u64 {
        let reader = 2 - i % 2;
        assert_eq!(
            c.get(reader, &format!("during-{i}"), false),
            Some(format!("d{i}")),
            "during-{i} at n{reader}"
        );
    }

    c.restart(3);
    c.wait_all_serving(Duration::from_secs(20));
    c.wait_all_connected(Duration::from_secs(20));
    for i in 0..10u64 {
        assert_eq!(
            read_when_serving(&c, 3, &format!("during-{i}"), Duration::from_secs(30)),
            Some(format!("d{i}")),
            "n3 after restart: during-{i}"
        );
    }
    assert_eq!(
        read_when_serving(&c, 3, "before-3", Duration::from_secs(30)),
        Some("changed".to_string()),
        "n3 after restart: its own old key, overwritten while it was down"
    );
    assert_eq!(
        read_when_serving(&c, 3, "before-1", Duration::from_secs(30)),
        Some("v".to_string())
    );
    // And it takes part again: a write at n3 is read at n1.
    assert_eq!(c.put(3, "after", "back").status().as_u16(), 200);
    assert_eq!(c.get(1, "after", false), Some("back".to_string()));
}

#[test]
fn python_etcd3_writes_everywhere_and_concurrent_writers_agree() {
    let Some(python) = python_etcd3() else { return };
    let c = start();
    let passed = python_checks(
        &python,
        "epaxos_checks.py",
        &c.grpc_endpoints(),
        Duration::from_secs(120),
    );
    assert_eq!(
        passed,
        [
            "write_anywhere_read_everywhere",
            "concurrent_writers_agree",
            "value_transactions",
            "prefix_reads",
            "unsupported_is_refused"
        ],
        "{passed:?}"
    );
}
