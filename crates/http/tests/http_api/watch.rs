//! `GET /v1/watch` end to end: the NDJSON line shapes, events in revision order with
//! prev_kv, key / range / prefix selection, filters, starting in the past, a compacted start,
//! progress lines, the bound on streams (a disconnect frees its place) and shutdown.

use crate::common;

use common::*;
use serde_json::{Value, json};
use synod_core::Consistency;
use synod_core::kv::{DeleteRangeRequest, Op, prefix_end};
use synod_http::HttpConfig;

async fn omnipaxos() -> Server {
    Server::start(local_node("omnipaxos", ALL_CAPS)).await
}

fn kv(key: &str, value: &str, version: u64, create: u64, modified: u64) -> Value {
    json!({"key": key, "value": value, "version": version, "create_revision": create,
           "mod_revision": modified})
}

/// A delete event's kv: the key and the deleting revision only (etcd's shape).
fn tombstone(key: &str, revision: u64) -> Value {
    kv(key, "", 0, 0, revision)
}

#[tokio::test]
async fn a_key_watch_reports_puts_and_deletes_in_order_with_prev_kv() {
    let s = omnipaxos().await;
    s.put_ok("a", "1").await; // revision 1, before the watch
    let mut w = WatchLines::open(&s, "key=a&prev_kv=true").await;
    assert_eq!(
        w.line().await,
        json!({"created": true, "revision": 1, "start_revision": 2})
    );
    s.put_ok("b", "other key").await; // 2: not watched
    s.put_ok("a", "2").await; // 3
    s.delete("/v1/kv/a").await; // 4
    s.put_ok("a", "3").await; // 5
    assert_eq!(
        w.line().await,
        json!({"revision": 3, "events": [
            {"type": "put", "kv": kv("a", "2", 2, 1, 3), "prev_kv": kv("a", "1", 1, 1, 1)}]})
    );
    assert_eq!(
        w.line().await,
        json!({"revision": 4, "events": [
            {"type": "delete", "kv": tombstone("a", 4), "prev_kv": kv("a", "2", 2, 1, 3)}]})
    );
    assert_eq!(
        w.line().await,
        json!({"revision": 5, "events": [
            {"type": "put", "kv": kv("a", "3", 1, 5, 5), "prev_kv": null}]})
    );
}

#[tokio::test]
async fn prefix_watch_with_filters_and_without_prev_kv() {
    let s = omnipaxos().await;
    let mut w = WatchLines::open(&s, "prefix=p%2F&filters=nodelete").await;
    assert_eq!(w.line().await["created"], true);
    s.put_ok("p%2F1", "x").await; // 1
    s.put_ok("q", "y").await; // 2: outside the prefix
    s.delete("/v1/kv/p%2F1").await; // 3: filtered out
    s.put_ok("p%2F2", "z").await; // 4
    let first = w.line().await;
    assert_eq!(first["revision"], 1);
    assert_eq!(first["events"][0]["kv"]["key"], "p/1");
    assert_eq!(
        first["events"][0]["prev_kv"],
        Value::Null,
        "prev_kv only when asked for"
    );
    let second = w.line().await;
    assert_eq!(second["revision"], 4, "revisions 2 and 3 select nothing");
    assert_eq!(second["events"][0]["kv"]["key"], "p/2");

    let mut deletes = WatchLines::open(&s, "prefix=&filters=noput&start_revision=1").await;
    assert_eq!(deletes.line().await["start_revision"], 1);
    let line = deletes.line().await;
    assert_eq!(line["revision"], 3, "only the delete: {line}");
    assert_eq!(line["events"][0]["type"], "delete");
}

#[tokio::test]
async fn a_revision_with_many_events_is_one_line() {
    let s = omnipaxos().await;
    for k in ["d/1", "d/2", "d/3"] {
        s.put_ok(&k.replace('/', "%2F"), "v").await; // 1..=3
    }
    let mut w = WatchLines::open(&s, "key=d%2F&end=d0&prev_kv=true").await;
    assert_eq!(w.line().await["revision"], 3);
    // One command deleting the whole prefix makes one revision with three events.
    let op = Op::DeleteRange(DeleteRangeRequest {
        key: b"d/".to_vec(),
        range_end: prefix_end(b"d/"),
        prev_kv: true,
    });
    s.handle
        .execute(op, Consistency::Linearizable)
        .await
        .expect("delete range");
    let line = w.line().await;
    assert_eq!(line["revision"], 4);
    let events = line["events"].as_array().expect("events");
    let deleted: Vec<&Value> = events.iter().map(|e| &e["kv"]["key"]).collect();
    assert_eq!(deleted, [&json!("d/1"), &json!("d/2"), &json!("d/3")]);
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "delete" && e["prev_kv"]["value"] == "v")
    );
}

#[tokio::test]
async fn a_watch_from_the_past_replays_history_then_goes_live() {
    let s = omnipaxos().await;
    for v in 1..=5 {
        s.put_ok("h", &v.to_string()).await; // revisions 1..=5
    }
    let mut w = WatchLines::open(&s, "key=h&start_revision=2").await;
    assert_eq!(
        w.line().await,
        json!({"created": true, "revision": 5, "start_revision": 2})
    );
    for revision in 2..=5 {
        let line = w.line().await;
        assert_eq!(line["revision"], revision, "{line}");
        assert_eq!(line["events"][0]["kv"]["value"], revision.to_string());
    }
    s.put_ok("h", "live").await;
    assert_eq!(w.line().await["events"][0]["kv"]["value"], "live");

    // A start in the future waits for it.
    let mut future = WatchLines::open(&s, "key=h&start_revision=8").await;
    assert_eq!(future.line().await["start_revision"], 8);
    s.put_ok("h", "7").await;
    s.put_ok("h", "8").await;
    assert_eq!(
        future.line().await["revision"],
        8,
        "revision 7 is before the start"
    );
}

#[tokio::test]
async fn a_compacted_start_is_a_410_before_the_stream() {
    let s = omnipaxos().await;
    for v in ["1", "2", "3", "4"] {
        s.put_ok("c", v).await;
    }
    let (status, r) = s.post("/v1/compact", r#"{"revision": 3}"#).await;
    assert_eq!(status, 200, "{r}");
    let (status, r) = s.get("/v1/watch?key=c&start_revision=2").await;
    assert_eq!((status, error_code(&r)), (410, "compacted"));
    // The compaction revision itself is still readable.
    let mut w = WatchLines::open(&s, "key=c&start_revision=3").await;
    assert_eq!(w.line().await["created"], true);
    assert_eq!(w.line().await["revision"], 3);
    assert_eq!(w.line().await["revision"], 4);
}

#[tokio::test]
async fn a_quiet_stream_reports_progress() {
    let s = omnipaxos().await;
    s.put_ok("x", "1").await;
    let mut w = WatchLines::open(&s, "key=p&progress_notify_ms=100").await;
    assert_eq!(w.line().await["created"], true);
    assert_eq!(w.line().await, json!({"progress_revision": 1}));
    s.put_ok("x", "2").await; // not watched: progress moves past it
    // Progress lines come every 100 ms while nothing else does; they never go back, and one
    // soon reports revision 2 (the bound keeps a broken stream from looping forever).
    let mut last = 1;
    for _ in 0..1_000 {
        let line = w.line().await;
        let revision = line["progress_revision"].as_u64().expect("a progress line");
        assert!(revision >= last, "progress went back: {line}");
        last = revision;
        if revision == 2 {
            break;
        }
    }
    assert_eq!(last, 2);
    // Without progress_notify the node's interval (10 minutes by default) applies: a
    // plain watch gets no progress line, its next line is the event.
    let mut plain = WatchLines::open(&s, "key=p").await;
    plain.line().await;
    s.put_ok("p", "v").await;
    assert_eq!(plain.line().await["revision"], 3);
}

#[tokio::test]
async fn bad_watch_requests_are_json_errors() {
    let s = omnipaxos().await;
    for bad in [
        "",
        "key=a&prefix=a",
        "prefix=a&end=b",
        "end=b",
        "key=",
        "key=b&end=a",
        "key=a&end=",
        "key=a&filters=noput,nothing",
        "key=a&progress_notify_ms=10",
        "key=a&progress_notify=false&progress_notify_ms=500",
        "key=a&start_revision=-3",
        "key=a&since=3",
    ] {
        let (status, r) = s.get(&format!("/v1/watch?{bad}")).await;
        assert_eq!((status, error_code(&r)), (400, "invalid_request"), "{bad}");
    }
    let long = "k".repeat(5000);
    let (status, r) = s.get(&format!("/v1/watch?key={long}")).await;
    assert_eq!((status, error_code(&r)), (413, "too_large"));
    s.assert_still_serving().await;
}

#[tokio::test]
async fn streams_are_bounded_and_a_disconnect_frees_its_place() {
    let config = HttpConfig {
        watch_streams_max: 1,
        ..HttpConfig::default()
    };
    let s = Server::start_with(local_node("omnipaxos", ALL_CAPS), config).await;
    let mut first = WatchLines::open(&s, "prefix=").await;
    assert_eq!(first.line().await["created"], true);
    let (status, r) = s.get("/v1/watch?prefix=").await;
    assert_eq!((status, error_code(&r)), (503, "busy"));
    // The client hangs up; the server drops the stream and its place with it.
    drop(first);
    let mut second = wait_for("the first stream's place to be free", || async {
        let response = s
            .client
            .get(s.url("/v1/watch?prefix="))
            .send()
            .await
            .expect("watch request");
        (response.status() == 200).then_some(response)
    })
    .await;
    let chunk = second.chunk().await.expect("read").expect("a line");
    assert!(chunk.starts_with(br#"{"created":true"#));
    s.assert_still_serving().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_a_canceled_line() {
    let config = HttpConfig {
        // Long enough that only the streams ending lets `stop` return within its deadline.
        shutdown_grace_ms: 600_000,
        ..HttpConfig::default()
    };
    let s = Server::start_with(local_node("omnipaxos", ALL_CAPS), config).await;
    let mut w = WatchLines::open(&s, "prefix=").await;
    assert_eq!(w.line().await["created"], true);
    let stopped = tokio::spawn(s.stop());
    assert_eq!(
        w.line().await,
        json!({"canceled": true, "reason": "the server is shutting down"})
    );
    assert_eq!(
        w.next().await,
        None,
        "the body ends after the canceled line"
    );
    stopped.await.expect("stop task").expect("clean shutdown");
}
