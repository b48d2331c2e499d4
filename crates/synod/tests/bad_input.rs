//! Bad input never hurts a real cluster: garbage and impostors on the peer port, oversized and
//! malformed client requests, clients that vanish mid-request, and a flood of connections. After
//! each, the cluster still serves reads and writes at every member.

mod common;

use common::{Cluster, wait_until};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn still_serving(c: &Cluster, tag: &str) {
    for id in c.live_ids() {
        let key = format!("alive-{tag}-{id}");
        let r = c.put(id, &key, tag);
        assert_eq!(r.status().as_u16(), 200, "n{id} serves writes after {tag}");
        assert_eq!(
            c.get(id, &key, false).as_deref(),
            Some(tag),
            "n{id} serves reads after {tag}"
        );
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

#[test]
fn garbage_on_the_peer_port_is_refused_and_logged() {
    let c = Cluster::start(3, "omnipaxos");
    let peer = c.member(1).peer_addr.clone();
    // Random bytes, a huge length prefix, and a well-framed but undecodable payload.
    for payload in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        vec![0, 0, 0, 4, 2, 9, 9, 9],
    ] {
        let mut s = connect(&peer);
        let _ = s.write_all(&payload);
        // The node closes the connection on us (read returns 0 or an error), never hangs.
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
    }
    still_serving(&c, "peer-garbage");
    wait_until(Duration::from_secs(5), "a logged refusal", || {
        let log = c.log(1);
        (log.contains("handshake") || log.contains("refused")).then_some(())
    });
}

#[test]
fn oversized_malformed_and_empty_requests_get_clear_errors() {
    let c = Cluster::start(3, "omnipaxos");
    let big = "x".repeat(2 * 1024 * 1024);
    let r = c.put(2, "big", &big);
    assert_eq!(r.status().as_u16(), 413);
    let body: serde_json::Value = r.json().expect("json error");
    assert_eq!(body["error"]["code"], "too_large");

    let r = c
        .http
        .put(c.url(2, "/v1/kv/k"))
        .body("{not json")
        .send()
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().expect("json error");
    assert_eq!(body["error"]["code"], "invalid_request");

    let r = c
        .http
        .put(c.url(2, "/v1/kv/"))
        .body(r#"{"value":"v"}"#)
        .send()
        .expect("send");
    assert!(
        matches!(r.status().as_u16(), 400 | 404),
        "empty key: {}",
        r.status()
    );
    still_serving(&c, "bad-requests");
}

#[test]
fn clients_vanishing_mid_request_and_connection_floods_are_harmless() {
    let c = Cluster::start(3, "omnipaxos");
    let http = c.member(1).http_addr.clone();
    // Half a request line, a body promised but never sent, then gone.
    for partial in [
        "PUT /v1/kv/half HTTP/1.1\r\nHost: x\r\n".to_string(),
        format!(
            "PUT /v1/kv/half HTTP/1.1\r\nHost: {http}\r\nContent-Length: 1000\r\n\r\n{{\"value\""
        ),
    ] {
        let mut s = connect(&http);
        s.write_all(partial.as_bytes()).expect("write");
        drop(s);
    }
    assert_eq!(
        c.get(1, "half", false),
        None,
        "a half-sent write is not applied"
    );

    // A flood: far more idle connections than the node admits. Excess ones get a quick 503 or are
    // closed; none of it stops the node serving once the flood ends.
    let flood: Vec<TcpStream> = (0..1500)
        .filter_map(|_| TcpStream::connect(&http).ok())
        .collect();
    assert!(flood.len() > 1000, "opened {} connections", flood.len());
    // Other members are unaffected while the flood is on.
    let r = c.put(2, "during-flood", "1");
    assert_eq!(r.status().as_u16(), 200);
    drop(flood);
    wait_until(
        Duration::from_secs(10),
        "n1 to serve again after the flood",
        || (c.put(1, "after-flood", "1").status().as_u16() == 200).then_some(()),
    );
    still_serving(&c, "flood");
}

#[test]
fn a_peer_claiming_an_unknown_member_id_or_another_cluster_is_refused() {
    use synod_node::transport::{Hello, HelloReply, MAGIC, decode_payload, encode_frame};
    let c = Cluster::start(3, "omnipaxos");
    let cluster_id = synod_node::ClusterConfig::from_file(&c.config_path)
        .expect("config")
        .cluster_id();
    let cases = [
        (
            "unknown member",
            Hello {
                magic: MAGIC,
                cluster_id,
                from: 99,
                to: 1,
                data_id: 7,
                probe: false,
                replace_data_id: false,
                question: None,
            },
        ),
        (
            "another cluster",
            Hello {
                magic: MAGIC,
                cluster_id: cluster_id ^ 1,
                from: 2,
                to: 1,
                data_id: 7,
                probe: false,
                replace_data_id: false,
                question: None,
            },
        ),
    ];
    for (what, hello) in cases {
        let mut s = connect(&c.member(1).peer_addr);
        let frame = encode_frame(&hello, 1 << 20).expect("encode");
        s.write_all(&frame).expect("write hello");
        let mut len = [0u8; 4];
        s.read_exact(&mut len)
            .expect("a reply before the node hangs up");
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut payload).expect("reply payload");
        match decode_payload::<HelloReply>(&payload).expect("decode reply") {
            HelloReply::Refused(reason) => eprintln!("{what}: refused: {reason}"),
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }
    still_serving(&c, "impostor-peers");
    let log = c.log(1);
    assert!(
        log.contains("unknown member 99"),
        "refusal reason logged:\n{log}"
    );
}
