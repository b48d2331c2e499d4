//! The HTTP/JSON contract end to end: `serve` on loopback over `local_test_node`, driven with
//! reqwest. Every endpoint's success path, CAS in all its forms, listing options, and every
//! error code — each followed by a check that the node keeps serving.

use crate::common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn omnipaxos() -> Server {
    Server::start(local_node("omnipaxos", ALL_CAPS)).await
}

#[tokio::test]
async fn put_get_delete_follow_versions_and_revisions() {
    let s = omnipaxos().await;
    let r = s.put_ok("a", "1").await;
    assert_eq!(
        r,
        json!({"kv": {"key": "a", "value": "1", "version": 1, "create_revision": 1, "mod_revision": 1},
               "prev_kv": null, "revision": 1})
    );
    let r = s.put_ok("a", "2").await;
    assert_eq!(r["kv"]["version"], 2);
    assert_eq!(r["kv"]["create_revision"], 1);
    assert_eq!(r["kv"]["mod_revision"], 2);
    assert_eq!(r["prev_kv"]["value"], "1");
    assert_eq!(r["revision"], 2);

    let (status, r) = s.get("/v1/kv/a").await;
    assert_eq!(status, 200);
    assert_eq!(
        r,
        json!({"kv": {"key": "a", "value": "2", "version": 2, "create_revision": 1, "mod_revision": 2},
               "revision": 2})
    );
    let (status, r) = s.get("/v1/kv/a?consistency=sequential").await;
    assert_eq!((status, &r["kv"]["value"]), (200, &json!("2")));

    let (status, r) = s.delete("/v1/kv/a").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["deleted"], 1);
    assert_eq!(r["prev_kv"]["value"], "2");
    assert_eq!(r["revision"], 3);

    let (status, r) = s.get("/v1/kv/a").await;
    assert_eq!((status, error_code(&r)), (404, "key_not_found"));
    let (status, r) = s.delete("/v1/kv/a").await;
    assert_eq!((status, error_code(&r)), (404, "key_not_found"));
    s.assert_still_serving().await;
    s.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn keys_and_values_are_percent_decoded_utf8() {
    let s = omnipaxos().await;
    // A key with '/', a space and non-ASCII travels percent-encoded in one path segment.
    let r = s.put_ok("%2Fdir%2Fk%C3%A9y%20x", "välue \"quoted\"").await;
    assert_eq!(r["kv"]["key"], "/dir/kéy x");
    let (status, r) = s.get("/v1/kv/%2Fdir%2Fk%C3%A9y%20x").await;
    assert_eq!(status, 200);
    assert_eq!(r["kv"]["value"], "välue \"quoted\"");
    // An unencoded '/' is another route: a 404 whose message says how to encode.
    let (status, r) = s.get("/v1/kv/dir/key").await;
    assert_eq!((status, error_code(&r)), (404, "not_found"));
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("%2F"))
    );
}

#[tokio::test]
async fn cas_by_version_by_value_absent_delete_and_conflict() {
    let s = omnipaxos().await;
    // Expect absent: creates.
    let (status, r) = s
        .post(
            "/v1/kv/lock/cas",
            r#"{"expect": "absent", "value": "owner-1"}"#,
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["succeeded"], true);
    assert_eq!(r["prev_kv"], Value::Null);
    assert_eq!(r["kv"]["value"], "owner-1");
    assert_eq!(r["kv"]["version"], 1);
    assert_eq!(r["revision"], 1);

    // Expect absent again: conflict, with the current kv.
    let (status, r) = s
        .post(
            "/v1/kv/lock/cas",
            r#"{"expect": "absent", "value": "owner-2"}"#,
        )
        .await;
    assert_eq!((status, error_code(&r)), (409, "cas_conflict"));
    assert_eq!(r["kv"]["value"], "owner-1");
    assert_eq!(r["kv"]["version"], 1);

    // By version.
    let (status, r) = s
        .post(
            "/v1/kv/lock/cas",
            r#"{"expect": {"version": 1}, "value": "owner-2"}"#,
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["prev_kv"]["value"], "owner-1");
    assert_eq!(r["kv"]["version"], 2);
    let (status, r) = s
        .post(
            "/v1/kv/lock/cas",
            r#"{"expect": {"version": 1}, "value": "owner-3"}"#,
        )
        .await;
    assert_eq!((status, error_code(&r)), (409, "cas_conflict"));
    assert_eq!(r["kv"]["version"], 2);

    // By value.
    let (status, r) = s
        .post(
            "/v1/kv/lock/cas",
            r#"{"expect": {"value": "nope"}, "value": "x"}"#,
        )
        .await;
    assert_eq!((status, error_code(&r)), (409, "cas_conflict"));
    assert_eq!(r["kv"]["value"], "owner-2");
    let (status, r) = s
        .post(
            "/v1/kv/lock/cas",
            r#"{"expect": {"value": "owner-2"}, "value": "owner-3"}"#,
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["kv"]["value"], "owner-3");

    // Value null = delete if the expectation holds; missing value likewise.
    let (status, r) = s
        .post(
            "/v1/kv/lock/cas",
            r#"{"expect": {"version": 3}, "value": null}"#,
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["kv"], Value::Null);
    assert_eq!(r["prev_kv"]["value"], "owner-3");
    let (status, r) = s.get("/v1/kv/lock").await;
    assert_eq!((status, error_code(&r)), (404, "key_not_found"));
    let (status, r) = s
        .post("/v1/kv/lock/cas", r#"{"expect": {"version": 1}}"#)
        .await;
    assert_eq!((status, error_code(&r)), (409, "cas_conflict"));
    assert_eq!(r["kv"], Value::Null);

    // A typo must not turn into a delete.
    let (status, r) = s
        .post("/v1/kv/lock/cas", r#"{"expect": "absent", "vaule": "x"}"#)
        .await;
    assert_eq!((status, error_code(&r)), (400, "invalid_request"));
    let (status, r) = s.post("/v1/kv/lock/cas", r#"{"expect": "present"}"#).await;
    assert_eq!((status, error_code(&r)), (400, "invalid_request"));
    s.assert_still_serving().await;
}

#[tokio::test]
async fn list_by_prefix_and_range_with_limit_keys_only_count_only() {
    let s = omnipaxos().await;
    for (k, v) in [
        ("app/a", "1"),
        ("app/b", "2"),
        ("app/c", "3"),
        ("other", "4"),
    ] {
        s.put_ok(&k.replace('/', "%2F"), v).await;
    }
    let (status, r) = s.get("/v1/kv?prefix=app%2F").await;
    assert_eq!(status, 200, "{r}");
    let keys: Vec<&str> = r["kvs"]
        .as_array()
        .map(|a| a.iter().filter_map(|kv| kv["key"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["app/a", "app/b", "app/c"]);
    assert_eq!(
        (r["count"].clone(), r["more"].clone()),
        (json!(3), json!(false))
    );
    assert_eq!(r["revision"], 4);
    assert_eq!(r["kvs"][1]["value"], "2");

    let (_, r) = s.get("/v1/kv?prefix=app/&limit=2").await;
    assert_eq!(r["kvs"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        (r["count"].clone(), r["more"].clone()),
        (json!(3), json!(true))
    );

    let (_, r) = s.get("/v1/kv?prefix=app/&keys_only=true").await;
    assert_eq!(r["kvs"][0]["key"], "app/a");
    assert_eq!(r["kvs"][0]["value"], "");

    let (_, r) = s.get("/v1/kv?prefix=app/&count_only=true").await;
    assert_eq!(r["kvs"], json!([]));
    assert_eq!(r["count"], 3);

    // Empty prefix = every key.
    let (_, r) = s.get("/v1/kv?prefix=&consistency=sequential").await;
    assert_eq!(r["count"], 4);

    // [start, end) and start-to-the-end.
    let (_, r) = s.get("/v1/kv?start=app/b&end=other").await;
    assert_eq!(r["count"], 2);
    assert_eq!(r["kvs"][0]["key"], "app/b");
    let (_, r) = s.get("/v1/kv?start=app/c").await;
    assert_eq!(r["count"], 2);

    for bad in [
        "/v1/kv",
        "/v1/kv?prefix=a&start=b",
        "/v1/kv?end=b",
        "/v1/kv?prefix=&limit=-1",
        "/v1/kv?prefix=&keys_only=maybe",
        "/v1/kv?prefix=&consistency=eventual",
        "/v1/kv?prefix=&bogus=1",
    ] {
        let (status, r) = s.get(bad).await;
        assert_eq!((status, error_code(&r)), (400, "invalid_request"), "{bad}");
    }
    s.assert_still_serving().await;
}

#[tokio::test]
async fn status_members_health_metrics_openapi() {
    let s = omnipaxos().await;
    s.put_ok("k", "v").await;
    let (status, r) = s.get("/v1/status").await;
    assert_eq!(status, 200);
    for field in [
        "member_id",
        "cluster_id",
        "cluster_name",
        "engine",
        "version",
        "leader",
        "term",
        "role",
        "revision",
        "decided_index",
        "applied_index",
        "keys",
        "pending_requests",
        "connected_peers",
        "db_size_bytes",
        "members",
        "capabilities",
    ] {
        assert!(r.get(field).is_some(), "status lacks {field}: {r}");
    }
    assert_eq!(r["engine"], "omnipaxos");
    assert_eq!(r["member_id"], 1);
    assert_eq!(r["leader"], 1);
    assert_eq!(r["revision"], 1);
    assert_eq!(r["keys"], 1);
    assert_eq!(
        r["capabilities"],
        json!({"ranges": true, "transactions": true, "revisions": true, "watch": true, "leases": true})
    );

    let (status, r) = s.get("/v1/members").await;
    assert_eq!(status, 200);
    assert_eq!(
        r,
        json!({"version": 0, "members": [{"id": 1, "name": "n1", "peer_addr": "127.0.0.1:0",
                            "http_addr": "127.0.0.1:0", "grpc_addr": "127.0.0.1:0",
                            "learner": false}]})
    );

    let health = s
        .client
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("body"), "ok");

    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.0"))
    );

    let metrics = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("body");
    // Every request so far was recorded with its op and outcome.
    assert!(
        text.contains(r#"synod_request_seconds_count{api="http",op="put",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"op="status",outcome="ok""#), "{text}");
    let (_, _) = s.get("/v1/kv/missing").await;
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        text.contains(r#"op="get",outcome="key_not_found""#),
        "{text}"
    );
}

#[tokio::test]
async fn bad_input_gets_json_errors_and_the_node_keeps_serving() {
    let s = omnipaxos().await;
    let limits = s.handle.info().limits.clone();

    // Malformed JSON, wrong shape, missing body, unknown field.
    for body in [
        "{",
        "not json",
        "",
        r#"{"value": 3}"#,
        r#"{"value": "v", "ttl": 5}"#,
    ] {
        let (status, r) = s.put("/v1/kv/k", body).await;
        assert_eq!(
            (status, error_code(&r)),
            (400, "invalid_request"),
            "{body:?}"
        );
        s.assert_still_serving().await;
    }
    // Empty keys, in every method and on the CAS route.
    for (method, path) in [
        ("GET", "/v1/kv/"),
        ("PUT", "/v1/kv/"),
        ("DELETE", "/v1/kv/"),
        ("POST", "/v1/kv//cas"),
    ] {
        let req = s
            .client
            .request(method.parse().expect("method"), s.url(path))
            .body(r#"{"value":"v","expect":"absent"}"#);
        let (status, r) = send(req).await;
        assert_eq!(
            (status, error_code(&r)),
            (400, "invalid_request"),
            "{method} {path}"
        );
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("empty"))
        );
    }
    // Invalid UTF-8 in the key.
    let (status, r) = s.get("/v1/kv/%FF").await;
    assert_eq!((status, error_code(&r)), (400, "invalid_request"));
    // Invalid UTF-8 in a member id (found by the `http_json` fuzzer), in every member route.
    for (method, path) in [
        ("DELETE", "/v1/members/%FF"),
        ("POST", "/v1/members/%FF/promote"),
        ("PUT", "/v1/members/%FF"),
        ("POST", "/v1/members/%FF/lead"),
    ] {
        let req = s
            .client
            .request(method.parse().expect("method"), s.url(path))
            .body("{}");
        let (status, r) = send(req).await;
        assert_eq!(
            (status, error_code(&r)),
            (400, "invalid_request"),
            "{method} {path}"
        );
    }

    // Unknown route and unknown method on a known route.
    let (status, r) = s.get("/v2/nothing").await;
    assert_eq!((status, error_code(&r)), (404, "not_found"));
    let (status, r) = send(s.client.patch(s.url("/v1/kv/k"))).await;
    assert_eq!((status, error_code(&r)), (404, "not_found"));
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("serves GET, PUT, DELETE"), "{message}");

    // Oversized value (under the body limit, so the node's own check answers).
    let value = "x".repeat(limits.value_bytes_max + 1);
    let (status, r) = s
        .put("/v1/kv/big", &json!({ "value": value }).to_string())
        .await;
    assert_eq!((status, error_code(&r)), (413, "too_large"));
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("value"))
    );
    s.assert_still_serving().await;

    // Oversized key.
    let key = "k".repeat(limits.key_bytes_max + 1);
    let (status, r) = s.put(&format!("/v1/kv/{key}"), r#"{"value":"v"}"#).await;
    assert_eq!((status, error_code(&r)), (413, "too_large"));
    let (status, r) = s.get(&format!("/v1/kv/{key}")).await;
    assert_eq!((status, error_code(&r)), (413, "too_large"));

    // A body over the request limit is refused by the body limit, still as JSON.
    let body = "y".repeat(limits.request_bytes_max + 1);
    let (status, r) = s.put("/v1/kv/huge", &body).await;
    assert_eq!((status, error_code(&r)), (413, "too_large"));
    s.assert_still_serving().await;

    let (status, r) = s.get("/v1/kv/big").await;
    assert_eq!(
        (status, error_code(&r)),
        (404, "key_not_found"),
        "nothing oversized was stored"
    );
}

#[tokio::test]
async fn ranges_on_an_engine_without_them_are_501_and_single_keys_still_work() {
    let s = Server::start(local_node("caspaxos", CASPAXOS_CAPS)).await;
    let (status, r) = s.get("/v1/kv?prefix=a").await;
    assert_eq!((status, error_code(&r)), (501, "unsupported"));
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not supported by the caspaxos engine"),
        "{message}"
    );
    let (status, r) = s.get("/v1/kv?prefix=").await;
    assert_eq!((status, error_code(&r)), (501, "unsupported"));
    let (status, r) = s.get("/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(r["capabilities"]["ranges"], false);
    s.assert_still_serving().await;
}

#[tokio::test]
async fn an_engine_that_never_answers_gives_503_unavailable_within_the_timeout() {
    let timeout_ms = 300;
    let (handle, mut submissions) = never_answering_node(timeout_ms);
    let s = Server::start(handle).await;
    let started = Instant::now();
    let (status, r) = s.get("/v1/kv/k").await;
    assert_eq!((status, error_code(&r)), (503, "unavailable"));
    let (status, r) = s.put("/v1/kv/k", r#"{"value":"v"}"#).await;
    assert_eq!((status, error_code(&r)), (503, "unavailable"));
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("may still be applied")),
        "{r}"
    );
    assert!(started.elapsed() < Duration::from_millis(WAIT_DEADLINE_MS));
    // Both reached the engine (and were simply never answered).
    assert!(submissions.try_recv().is_ok() && submissions.try_recv().is_ok());
    // Routes that do not need the engine still answer.
    let (status, _) = s.get("/v1/status").await;
    assert_eq!(status, 200);
    s.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_returns_and_stops_accepting() {
    let s = omnipaxos().await;
    s.put_ok("k", "v").await;
    let url = s.url("/healthz");
    s.stop().await.expect("clean shutdown");
    let after = client().get(url).send().await;
    assert!(after.is_err(), "still serving after shutdown");
}
