//! Keeps `openapi.json` true: every served route is documented, every documented route is
//! served (by the running server, not just the list), operation ids are the metric op names,
//! every `$ref` resolves, and the documented error codes and statuses are the code's mapping.

use crate::common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use synod_http::{ErrorCode, OPENAPI_JSON, ROUTES};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn doc() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is valid JSON")
}

fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths object") {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn documented_routes_are_exactly_the_served_routes() {
    let doc = doc();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.0."))
    );
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(served.len(), ROUTES.len(), "a route is listed twice");
    assert_eq!(documented_operations(&doc), served);
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method.to_lowercase()];
        assert_eq!(op["operationId"], r.op, "{} {}", r.method, r.path);
        assert!(
            op["responses"]["200"].is_object(),
            "{} {} has no 200",
            r.method,
            r.path
        );
    }
}

#[test]
fn documented_error_codes_and_statuses_match_the_mapping() {
    let doc = doc();
    let schema = &doc["components"]["schemas"]["ErrorCode"];
    let documented: Vec<&str> = schema["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let coded: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(documented, coded);
    let statuses = schema["x-synod-status"]
        .as_object()
        .expect("x-synod-status");
    assert_eq!(statuses.len(), ErrorCode::ALL.len());
    for code in ErrorCode::ALL {
        assert_eq!(
            statuses.get(code.as_str()).and_then(Value::as_u64),
            Some(u64::from(code.status().as_u16())),
            "{code}"
        );
    }
    // Every error status an operation documents is one some code maps to.
    let mapped: BTreeSet<String> = ErrorCode::ALL
        .iter()
        .map(|c| c.status().as_u16().to_string())
        .collect();
    for (method, path) in documented_operations(&doc) {
        let responses = doc["paths"][&path][method.to_lowercase()]["responses"]
            .as_object()
            .expect("responses");
        for status in responses.keys().filter(|s| !s.starts_with('2')) {
            assert!(
                mapped.contains(status),
                "{method} {path} documents {status}"
            );
        }
    }
}

#[test]
fn every_ref_resolves() {
    fn walk(v: &Value, doc: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    let pointer = r.strip_prefix('#').expect("local $ref");
                    assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
                }
                m.values().for_each(|x| walk(x, doc));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, doc)),
            _ => {}
        }
    }
    let doc = doc();
    walk(&doc, &doc);
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let s = Server::start(local_node("omnipaxos", ALL_CAPS)).await;
    for (method, path) in documented_operations(&doc()) {
        // Fresh at version 1 each time, whatever the previous operation did to it.
        s.delete("/v1/kv/k").await;
        s.put_ok("k", "v").await;
        let query = match path.as_str() {
            "/v1/kv" => "?prefix=",
            "/v1/watch" => "?key=k",
            _ => "",
        };
        let member = if path.contains("{id}") {
            s.add_learner().await.to_string()
        } else {
            String::new()
        };
        let concrete = path.replace("{key}", "k").replace("{id}", &member) + query;
        let add = format!(
            r#"{{"peer_addr": "127.0.0.1:{}", "learner": true}}"#,
            s.fresh_port()
        );
        let body = if path.ends_with("/cas") {
            r#"{"expect": {"version": 1}, "value": "w"}"#
        } else if path == "/v1/compact" {
            r#"{"revision": 1}"#
        } else if path == "/v1/members" {
            &add
        } else if path == "/v1/members/{id}" {
            r#"{"name": "renamed"}"#
        } else if path == "/v1/ranges/move" {
            r#"{"key": "m", "from": 1, "to": 2}"#
        } else if path.starts_with("/v1/ranges/") {
            r#"{"key": "m"}"#
        } else {
            r#"{"value": "v"}"#
        };
        let response = s
            .client
            .request(method.parse().expect("method"), s.url(&concrete))
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        if path.ends_with("/lead") {
            // The test node has no engine thread to hand leadership over (real clusters:
            // crates/synod/tests/leader_transfer.rs); served means its documented 503.
            assert_eq!(response.status(), 503, "{method} {concrete}");
            continue;
        }
        if path.starts_with("/v1/ranges/") {
            // The test node runs one group, which has no ranges to cut (partitioned
            // clusters: crates/synod/tests/partition.rs); served means its documented 501.
            let status = response.status();
            assert_eq!(
                status,
                501,
                "{method} {concrete}: {:?}",
                response.text().await
            );
            continue;
        }
        assert_eq!(
            response.status(),
            200,
            "{method} {concrete}: {:?}",
            response.text().await
        );
    }
    // And the served document is this one.
    let (_, served) = s.get("/openapi.json").await;
    assert_eq!(served, doc());
}

#[test]
fn documented_watch_lines_are_the_served_shapes() {
    use synod_http::json::{
        KvJson, WatchCanceled, WatchCreated, WatchEventJson, WatchEventType, WatchProgress,
        WatchRevision,
    };
    let kv = KvJson {
        key: "k".into(),
        value: "v".into(),
        version: 1,
        create_revision: 1,
        mod_revision: 1,
    };
    let event = WatchEventJson {
        kind: WatchEventType::Put,
        kv: kv.clone(),
        prev_kv: Some(kv),
    };
    let lines = [
        (
            "WatchCreated",
            serde_json::to_value(WatchCreated {
                created: true,
                revision: 1,
                start_revision: 2,
            }),
        ),
        (
            "WatchRevision",
            serde_json::to_value(WatchRevision {
                revision: 2,
                events: vec![event.clone()],
            }),
        ),
        ("WatchEvent", serde_json::to_value(event)),
        (
            "WatchProgress",
            serde_json::to_value(WatchProgress {
                progress_revision: 2,
            }),
        ),
        (
            "WatchCanceled",
            serde_json::to_value(WatchCanceled {
                canceled: true,
                reason: "compacted".into(),
                compact_revision: Some(2),
            }),
        ),
    ];
    let doc = doc();
    let line_refs = doc["components"]["schemas"]["WatchLine"]["oneOf"].to_string();
    for (name, value) in lines {
        let value = value.expect("serialise");
        let schema = &doc["components"]["schemas"][name];
        let documented: BTreeSet<&str> = schema["properties"]
            .as_object()
            .expect(name)
            .keys()
            .map(String::as_str)
            .collect();
        let sent: BTreeSet<&str> = value
            .as_object()
            .expect(name)
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(documented, sent, "{name}");
        for required in schema["required"].as_array().expect(name) {
            assert!(
                sent.contains(required.as_str().unwrap_or_default()),
                "{name}"
            );
        }
        assert!(
            name == "WatchEvent" || line_refs.contains(&format!("/{name}\"")),
            "WatchLine lists {name}"
        );
    }
}
