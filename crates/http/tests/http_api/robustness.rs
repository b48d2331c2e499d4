//! Hostile clients: hang-ups mid-request, floods of connections, more requests in flight than
//! the node takes. Each gets a bounded, quick answer and the node keeps serving.

use crate::common;

use common::*;
use std::time::{Duration, Instant};
use synod_http::HttpConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one HTTP/1.1 response head + body of known length from a raw socket.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Duration::from_millis(WAIT_DEADLINE_MS);
    loop {
        let n = tokio::time::timeout(deadline, stream.read(&mut chunk))
            .await
            .expect("response within the deadline")
            .expect("read");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + length {
                return text;
            }
        }
        if n == 0 {
            return text;
        }
    }
}

#[tokio::test]
async fn a_client_that_disconnects_mid_request_is_harmless() {
    let s = Server::start(local_node("omnipaxos", ALL_CAPS)).await;
    // Half a request head.
    let mut c = TcpStream::connect(s.addr()).await.expect("connect");
    c.write_all(b"PUT /v1/kv/half HTTP/1.1\r\nhost: x\r\ncont")
        .await
        .expect("write");
    drop(c);
    // A full head promising a body that never comes.
    let mut c = TcpStream::connect(s.addr()).await.expect("connect");
    c.write_all(b"PUT /v1/kv/half HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"value\":")
        .await
        .expect("write");
    drop(c);
    // Garbage instead of HTTP.
    let mut c = TcpStream::connect(s.addr()).await.expect("connect");
    c.write_all(&[
        0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, b'\r', b'\n', b'\r', b'\n',
    ])
    .await
    .expect("write");
    let answer = read_response(&mut c).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
    drop(c);

    s.assert_still_serving().await;
    let (status, r) = s.get("/v1/kv/half").await;
    assert_eq!(
        (status, error_code(&r)),
        (404, "key_not_found"),
        "a half request was applied"
    );
}

#[tokio::test]
async fn a_flood_of_connections_beyond_the_bound_gets_a_quick_503_busy() {
    let config = HttpConfig {
        connections_max: 4,
        ..HttpConfig::default()
    };
    let s = Server::start_with(local_node("omnipaxos", ALL_CAPS), config).await;
    // Hold every connection slot with a keep-alive connection that has been served once
    // (so it is certainly accepted and counted).
    let mut held = Vec::new();
    for _ in 0..config.connections_max {
        let mut c = TcpStream::connect(s.addr()).await.expect("connect");
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let answer = read_response(&mut c).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        held.push(c);
    }
    // The next connections are answered at once with the JSON busy error.
    for _ in 0..3 {
        let started = Instant::now();
        let fresh = client(); // a new pool: a new connection
        let (status, r) = send(fresh.get(s.url("/v1/status"))).await;
        assert_eq!((status, error_code(&r)), (503, "busy"));
        assert!(
            started.elapsed()
                < Duration::from_millis(synod_http::REFUSED_CONNECTION_TIMEOUT_MS * 4),
            "refusal took {:?}",
            started.elapsed()
        );
    }
    // Releasing the slots lets new clients in again.
    drop(held);
    wait_for("a connection slot to free up", || async {
        let (status, _) = send(client().get(s.url("/v1/status"))).await;
        (status == 200).then_some(())
    })
    .await;
    s.assert_still_serving().await;
}

#[tokio::test]
async fn requests_beyond_the_in_flight_bound_get_busy_and_hang_ups_release_their_slot() {
    let config = HttpConfig {
        requests_in_flight_max: 2,
        ..HttpConfig::default()
    };
    let (handle, mut submissions) = never_answering_node(WAIT_DEADLINE_MS);
    let s = Server::start_with(handle, config).await;

    // Two requests park in the engine.
    let mut parked = Vec::new();
    for i in 0..2 {
        let req = s.client.get(s.url(&format!("/v1/kv/parked{i}")));
        parked.push(tokio::spawn(req.send()));
    }
    let mut held = Vec::new();
    for _ in 0..2 {
        let sub = tokio::time::timeout(Duration::from_millis(WAIT_DEADLINE_MS), submissions.recv())
            .await
            .expect("submission within the deadline")
            .expect("channel open");
        held.push(sub);
    }
    // The third is refused at once, without reaching the engine.
    let (status, r) = s.get("/v1/kv/third").await;
    assert_eq!((status, error_code(&r)), (503, "busy"));
    assert!(
        submissions.try_recv().is_err(),
        "a refused request reached the engine"
    );
    // Status still answers under overload.
    let (status, _) = s.get("/v1/status").await;
    assert_eq!(status, 200);

    // The clients hang up; their slots come back.
    for p in parked {
        p.abort();
    }
    let deadline = Instant::now() + Duration::from_millis(WAIT_DEADLINE_MS);
    let sub = loop {
        assert!(Instant::now() < deadline, "no slot freed by the hang-ups");
        // Admitted requests reach the engine; refused ones answer busy at once.
        let (status, r) = tokio::select! {
            sub = submissions.recv() => break sub.expect("channel open"),
            reply = s.get("/v1/kv/after") => reply,
        };
        assert_eq!((status, error_code(&r)), (503, "busy"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(matches!(&sub.op, synod_core::kv::Op::Range(r) if r.key == b"after"));
    drop(held);
}

#[tokio::test]
async fn graceful_shutdown_waits_for_a_request_in_flight() {
    let (handle, mut submissions) = never_answering_node(WAIT_DEADLINE_MS);
    let s = Server::start(handle).await;
    let req = s.client.put(s.url("/v1/kv/k")).body(r#"{"value":"v"}"#);
    let in_flight = tokio::spawn(req.send());
    let sub = tokio::time::timeout(Duration::from_millis(WAIT_DEADLINE_MS), submissions.recv())
        .await
        .expect("submission within the deadline")
        .expect("channel open");
    let stopping = tokio::spawn(s.stop());
    // The server has not returned: it is waiting for the request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !stopping.is_finished(),
        "serve returned with a request in flight"
    );
    // The engine answers; the client gets it and serve returns.
    let err = synod_core::EngineError::Busy;
    let _ = sub.reply.send(Err(err));
    let response = in_flight
        .await
        .expect("join")
        .expect("reply delivered during shutdown");
    assert_eq!(response.status(), 503);
    stopping.await.expect("join").expect("clean shutdown");
}
