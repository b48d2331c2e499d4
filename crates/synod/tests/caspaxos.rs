//! A real 3-node CASPaxos cluster of `synod server` processes: every single-key operation
//! through the HTTP/JSON API (put, get linearizable and sequential, delete, CAS by value, by
//! version and on absence, the 409 conflict) and through the `synodctl` binary, each request at
//! a different member (CASPaxos has no leader: every member proposes), and range/prefix
//! requests refused with the clear "not supported by the caspaxos engine" error — HTTP 501
//! `unsupported`, synodctl exit 1, and etcd gRPC `UNIMPLEMENTED` through etcdctl.

mod common;

use common::{Cluster, etcdctl, synodctl};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// What every refusal of a range request says, whichever API carried it.
const UNSUPPORTED: &str = "not supported by the caspaxos engine";

fn start() -> Cluster {
    // `Cluster::start` waits for a leader, which a leaderless engine never reports.
    Cluster::start_leaderless(3, "caspaxos")
}

/// Status code and JSON body of one HTTP request.
fn send(req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = req.send().expect("HTTP request");
    let status = r.status().as_u16();
    let body: Value = r.json().expect("JSON body");
    (status, body)
}

fn put(c: &Cluster, id: u64, key: &str, value: &str) -> (u16, Value) {
    send(
        c.http
            .put(c.url(id, &format!("/v1/kv/{key}")))
            .json(&json!({ "value": value })),
    )
}

fn get(c: &Cluster, id: u64, key: &str, consistency: &str) -> (u16, Value) {
    send(
        c.http
            .get(c.url(id, &format!("/v1/kv/{key}?consistency={consistency}"))),
    )
}

fn delete(c: &Cluster, id: u64, key: &str) -> (u16, Value) {
    send(c.http.delete(c.url(id, &format!("/v1/kv/{key}"))))
}

fn cas(c: &Cluster, id: u64, key: &str, body: Value) -> (u16, Value) {
    send(
        c.http
            .post(c.url(id, &format!("/v1/kv/{key}/cas")))
            .json(&body),
    )
}

/// (value, version) of a KV object in a response body, None when it is null.
fn kv(body: &Value, field: &str) -> Option<(String, u64)> {
    let kv = body.get(field)?;
    Some((kv["value"].as_str()?.to_string(), kv["version"].as_u64()?))
}

fn kv_of(s: &str, v: u64) -> Option<(String, u64)> {
    Some((s.to_string(), v))
}

#[test]
fn http_single_key_operations_work_at_every_member_and_ranges_are_refused() {
    let c = start();
    let (code, st) = send(c.http.get(c.url(1, "/v1/status")));
    assert_eq!(code, 200);
    assert_eq!(st["engine"], "caspaxos", "{st}");
    assert!(st["leader"].is_null(), "leaderless: {st}");
    assert_eq!(st["capabilities"]["ranges"], false, "{st}");

    // Put at n1, overwrite at n2: versions as in etcd, prev_kv is the old value, and the
    // revision is 0 (there is no store-wide order of writes).
    let (code, b) = put(&c, 1, "greeting", "hello");
    assert_eq!(code, 200, "{b}");
    assert_eq!(kv(&b, "kv"), kv_of("hello", 1), "{b}");
    assert!(b["prev_kv"].is_null(), "{b}");
    assert_eq!(b["revision"], 0, "{b}");
    let (code, b) = put(&c, 2, "greeting", "hello again");
    assert_eq!(code, 200, "{b}");
    assert_eq!(kv(&b, "kv"), kv_of("hello again", 2), "{b}");
    assert_eq!(kv(&b, "prev_kv"), kv_of("hello", 1), "{b}");

    // Reads at every member, both consistencies, see the last acknowledged write.
    for id in 1..=3 {
        for consistency in ["linearizable", "sequential"] {
            let (code, b) = get(&c, id, "greeting", consistency);
            assert_eq!(code, 200, "n{id} {consistency}: {b}");
            assert_eq!(kv(&b, "kv"), kv_of("hello again", 2), "n{id} {consistency}");
        }
    }
    let (code, b) = get(&c, 3, "never-written", "linearizable");
    assert_eq!(
        (code, b["error"]["code"].as_str()),
        (404, Some("key_not_found"))
    );

    // CAS by version: success, then the same expectation again conflicts with the current kv.
    let (code, b) = cas(
        &c,
        3,
        "greeting",
        json!({"expect": {"version": 2}, "value": "v3"}),
    );
    assert_eq!((code, b["succeeded"].as_bool()), (200, Some(true)), "{b}");
    assert_eq!(kv(&b, "kv"), kv_of("v3", 3), "{b}");
    assert_eq!(kv(&b, "prev_kv"), kv_of("hello again", 2), "{b}");
    let (code, b) = cas(
        &c,
        1,
        "greeting",
        json!({"expect": {"version": 2}, "value": "no"}),
    );
    assert_eq!(code, 409, "{b}");
    assert_eq!(b["error"]["code"], "cas_conflict", "{b}");
    assert_eq!(
        kv(&b, "kv"),
        kv_of("v3", 3),
        "the conflict shows the key: {b}"
    );

    // CAS by value: success, then a stale expected value conflicts.
    let (code, b) = cas(
        &c,
        2,
        "greeting",
        json!({"expect": {"value": "v3"}, "value": "v4"}),
    );
    assert_eq!(code, 200, "{b}");
    assert_eq!(kv(&b, "kv"), kv_of("v4", 4), "{b}");
    let (code, b) = cas(
        &c,
        3,
        "greeting",
        json!({"expect": {"value": "v3"}, "value": "no"}),
    );
    assert_eq!(
        (code, b["error"]["code"].as_str()),
        (409, Some("cas_conflict")),
        "{b}"
    );

    // CAS on absence: conflicts on a live key, creates a missing one.
    let (code, b) = cas(
        &c,
        1,
        "greeting",
        json!({"expect": "absent", "value": "no"}),
    );
    assert_eq!(
        (code, b["error"]["code"].as_str()),
        (409, Some("cas_conflict")),
        "{b}"
    );
    let (code, b) = cas(
        &c,
        1,
        "lock",
        json!({"expect": "absent", "value": "owner-1"}),
    );
    assert_eq!(code, 200, "{b}");
    assert_eq!(kv(&b, "kv"), kv_of("owner-1", 1), "{b}");
    assert!(b["prev_kv"].is_null(), "{b}");
    // CAS whose action is delete (no value).
    let (code, b) = cas(&c, 2, "lock", json!({"expect": {"value": "owner-1"}}));
    assert_eq!((code, b["succeeded"].as_bool()), (200, Some(true)), "{b}");
    assert!(b["kv"].is_null(), "deleted: {b}");
    let (code, _) = get(&c, 3, "lock", "linearizable");
    assert_eq!(code, 404);
    let (code, b) = cas(
        &c,
        3,
        "lock",
        json!({"expect": {"version": 1}, "value": "x"}),
    );
    assert_eq!(code, 409, "{b}");
    assert!(b["kv"].is_null(), "the conflict shows the key absent: {b}");

    // Delete at n2: deleted 1 with prev_kv, then absent everywhere, then 404 again.
    let (code, b) = delete(&c, 2, "greeting");
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["deleted"], 1, "{b}");
    for id in 1..=3 {
        assert_eq!(get(&c, id, "greeting", "linearizable").0, 404, "n{id}");
    }
    let (code, b) = delete(&c, 3, "greeting");
    assert_eq!(
        (code, b["error"]["code"].as_str()),
        (404, Some("key_not_found")),
        "{b}"
    );
    // A deleted key starts over at version 1.
    let (code, b) = put(&c, 3, "greeting", "reborn");
    assert_eq!(code, 200, "{b}");
    assert_eq!(kv(&b, "kv"), kv_of("reborn", 1), "{b}");

    // Range and prefix requests: 501 with the clear message, at every member.
    for (id, query) in [
        (1, "prefix="),
        (2, "prefix=gr"),
        (3, "start=a&end=z"),
        (1, "prefix=&count_only=true"),
    ] {
        let (code, b) = send(c.http.get(c.url(id, &format!("/v1/kv?{query}"))));
        assert_eq!(code, 501, "n{id} {query}: {b}");
        assert_eq!(b["error"]["code"], "unsupported", "{b}");
        let msg = b["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(UNSUPPORTED), "n{id} {query}: {msg}");
    }
}

fn ctl(bin: &Path, endpoints: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--endpoints")
        .arg(endpoints)
        .arg("--timeout")
        .arg("10s")
        .args(args)
        .env_remove("SYNODCTL_ENDPOINTS")
        .stdin(Stdio::null())
        .output()
        .expect("run synodctl")
}

/// Runs synodctl and returns stdout, asserting the exit code.
fn ctl_ok(bin: &Path, endpoints: &str, args: &[&str], code: i32) -> String {
    let out = ctl(bin, endpoints, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "synodctl {args:?}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn synodctl_single_key_operations_work_and_ranges_fail_clearly() {
    let bin = synodctl();
    let c = start();
    let at = |id: u64| c.member(id).http_addr.clone();

    assert_eq!(ctl_ok(&bin, &at(1), &["put", "color", "red"], 0), "OK\n");
    assert_eq!(ctl_ok(&bin, &at(2), &["get", "color"], 0), "color\nred\n");
    assert_eq!(
        ctl_ok(
            &bin,
            &at(3),
            &["get", "color", "--consistency", "sequential"],
            0
        ),
        "color\nred\n"
    );
    let json_out = ctl_ok(&bin, &at(3), &["-w", "json", "get", "color"], 0);
    let v: Value = serde_json::from_str(json_out.trim()).expect("synodctl json output");
    assert_eq!(kv(&v, "kv"), kv_of("red", 1), "{json_out}");

    // CAS: by version, by value, on absence; conflicts exit 1 and show the current value.
    let cas_ok = |id: u64, args: &[&str]| {
        let mut all = vec!["cas", "color"];
        all.extend_from_slice(args);
        assert_eq!(ctl_ok(&bin, &at(id), &all, 0), "OK\n", "cas {args:?}");
    };
    cas_ok(1, &["--expect-version", "1", "--value", "green"]);
    cas_ok(2, &["--expect-value", "green", "--value", "blue"]);
    let out = ctl(
        &bin,
        &at(3),
        &["cas", "color", "--expect-version", "1", "--value", "x"],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("cas_conflict"), "{text}");
    assert!(
        text.contains("blue"),
        "conflict shows the current value: {text}"
    );
    let out = ctl(
        &bin,
        &at(1),
        &["cas", "color", "--expect-absent", "--value", "x"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        ctl_ok(
            &bin,
            &at(1),
            &["cas", "fresh", "--expect-absent", "--value", "new"],
            0
        ),
        "OK\n"
    );
    assert_eq!(
        ctl_ok(
            &bin,
            &at(2),
            &["cas", "fresh", "--expect-value", "new", "--delete"],
            0
        ),
        "OK\n"
    );
    assert_eq!(ctl(&bin, &at(3), &["get", "fresh"]).status.code(), Some(1));

    // Delete: prints the count; a second delete is key_not_found (exit 1).
    assert_eq!(ctl_ok(&bin, &at(3), &["del", "color"], 0), "1\n");
    let out = ctl(&bin, &at(1), &["get", "color"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key_not_found"));
    assert_eq!(ctl(&bin, &at(2), &["del", "color"]).status.code(), Some(1));

    // Prefix, range and count: exit 1 with the engine's clear refusal.
    for args in [
        &["get", "c", "--prefix"][..],
        &["get", "a", "z"][..],
        &["count"][..],
    ] {
        let out = ctl(&bin, &c.http_endpoints(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("unsupported"), "{args:?}: {stderr}");
        assert!(stderr.contains(UNSUPPORTED), "{args:?}: {stderr}");
    }
    let st = ctl_ok(&bin, &at(1), &["status"], 0);
    assert!(st.contains("caspaxos"), "{st}");
}

#[test]
fn etcdctl_single_key_works_and_prefix_get_is_unimplemented() {
    let Some(etcdctl) = etcdctl() else { return };
    let c = start();
    let run = |id: u64, args: &[&str]| {
        Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", c.member(id).grpc_addr))
            .arg("--command-timeout=10s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl")
    };
    let out = run(1, &["put", "foo", "bar"]);
    assert!(out.status.success(), "{out:?}");
    let out = run(2, &["get", "foo"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "foo\nbar\n",
        "{out:?}"
    );
    let out = run(3, &["get", "--prefix", "fo"]);
    assert!(!out.status.success(), "a prefix get must fail: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unimplemented") && stderr.contains("not supported"),
        "{stderr}"
    );
    assert!(stderr.contains("caspaxos"), "{stderr}");
    // No store-wide revision, so no history and no watch: refused up front, never a hang.
    for args in [
        &["get", "foo", "--rev=1"][..],
        &["compaction", "1"][..],
        &["watch", "foo"][..],
    ] {
        let out = run(2, args);
        assert!(!out.status.success(), "{args:?} must fail: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("not supported") && stderr.contains("caspaxos"),
            "{args:?}: {stderr}"
        );
    }
    let out = run(3, &["del", "foo"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n", "{out:?}");
}
