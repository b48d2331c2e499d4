//! `http_json`: arbitrary HTTP requests to the HTTP/JSON API.
//!
//! The input is a method, a request target (path and query string) and a body; the request
//! goes through the real router (`synod_http::router`: edge middleware, route matching, path,
//! query and JSON-body extractors, CAS expectation parsing, the node's validation) with
//! `tower::ServiceExt::oneshot`, no socket, against `local_test_node`: a single-node stand-in
//! that applies every request to an in-memory store. The store holds one key (`a`) first, so
//! reads and CAS have something to find.
//!
//! The contract asserted besides "no panic": a client's mistake is never a 500, and every
//! error response is the JSON error object (`{"error": {"code", "message"}}`).
//!
//! Input layout: `selector | target bytes | '\n' | body…`; selector bits 0..2 pick the
//! method, bit 3 a node without ranges or transactions (the CASPaxos capabilities).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use synod_core::Capabilities;
use synod_core::Consistency;
use synod_core::kv::{Op, PutRequest};
use tower::ServiceExt;

const METHODS: [&str; 8] = [
    "GET", "PUT", "DELETE", "POST", "HEAD", "PATCH", "OPTIONS", "GET",
];

/// Largest response body read back: far above any answer to a one-key store.
const RESPONSE_BYTES_MAX: usize = 1 << 20;

/// Builds an input (used by the corpus generator).
pub fn input(method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let m = METHODS.iter().position(|x| *x == method).unwrap_or(0) as u8;
    let mut v = vec![m];
    v.extend_from_slice(target.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(body);
    v
}

pub fn run(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (target, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let method = METHODS[usize::from(selector & 7)];
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    // What a client can send at all: the HTTP parser would refuse anything else before axum.
    let Ok(request) = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a known method"))
        .uri(target)
        .body(Body::from(body.to_vec()))
    else {
        return;
    };
    let limited = selector & 8 != 0;
    crate::runtime().block_on(async move {
        let capabilities = Capabilities {
            ranges: !limited,
            transactions: !limited,
            revisions: !limited,
            watch: !limited,
            leases: !limited,
        };
        let engine = if limited { "caspaxos" } else { "omnipaxos" };
        let handle = synod_node::handle::local_test_node(engine, capabilities);
        let put = Op::Put(PutRequest {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            prev_kv: false,
            ..Default::default()
        });
        handle
            .execute(put, Consistency::Linearizable)
            .await
            .expect("the stand-in node takes a put");
        let response = synod_http::router(handle)
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), RESPONSE_BYTES_MAX)
            .await
            .expect("a bounded response body");
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "a request was answered 500: {}",
            String::from_utf8_lossy(&bytes)
        );
        if (status.is_client_error() || status.is_server_error()) && method != "HEAD" {
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "error {status} is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert!(
                json["error"]["code"].is_string() && json["error"]["message"].is_string(),
                "error {status} is not the contract's error object: {json}"
            );
        }
    });
}
