//! Leader transfer against real 3-process clusters: `etcdctl move-leader` (Debian's etcdctl 3.4)
//! on OmniPaxos and VR moves the leadership where `etcdctl endpoint status` sees it, with a
//! non-zero raft term; a follower, an unknown id and a leaderless engine are refused with
//! clear errors; `synodctl move-leader` and `POST /v1/members/{id}/lead` do the same; SIGTERM
//! of the leader hands leadership away before it stops, and no acknowledged write is lost;
//! `/healthz` fails on a member cut off from its quorum. Every wait polls with a deadline.

mod common;

use common::{Cluster, etcdctl, etcdctl_command, synodctl, wait_until};
use serde_json::Value;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a hand-off may take end to end (the engine's bound is three election timeouts,
/// 300 ms on a test cluster, plus the node's slack; generous for a loaded CI machine).
const TRANSFER_WITHIN: Duration = Duration::from_secs(10);

fn etcdctl_out(endpoints: &str, args: &[&str]) -> Option<Output> {
    let etcdctl = etcdctl()?;
    let out = etcdctl_command(&etcdctl, endpoints)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl");
    Some(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// (leader, raft term) as `etcdctl endpoint status -w json` reports them for each endpoint.
fn endpoint_status(endpoints: &str) -> Vec<(u64, u64)> {
    let Some(out) = etcdctl_out(endpoints, &["endpoint", "status", "-w", "json"]) else {
        return Vec::new();
    };
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    rows.as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    let s = r.get("Status")?;
                    Some((s.get("leader")?.as_u64()?, s.get("raftTerm")?.as_u64()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn other_than(c: &Cluster, id: u64) -> u64 {
    c.live_ids()
        .into_iter()
        .find(|m| *m != id)
        .expect("another member")
}

#[test]
fn etcdctl_move_leader_omnipaxos() {
    etcdctl_move_leader("omnipaxos");
}

#[test]
fn etcdctl_move_leader_vr() {
    etcdctl_move_leader("vr");
}

fn etcdctl_move_leader(engine: &str) {
    if etcdctl().is_none() {
        return;
    }
    let c = Cluster::start(3, engine);
    let all = c.grpc_endpoints();
    let leader = c.wait_all_reach_leader(Duration::from_secs(20));
    let target = other_than(&c, leader);
    assert_eq!(c.put(target, "before", "1").status().as_u16(), 200);

    let out = etcdctl_out(&all, &["move-leader", &format!("{target:x}")]).expect("etcdctl");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "move-leader failed: {stdout}{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "Leadership transferred from {leader:x} to {target:x}"
        )),
        "{stdout}"
    );
    // Every endpoint reports the target as leader, in a raft term above 0.
    wait_until(
        TRANSFER_WITHIN,
        "endpoint status to show the new leader",
        || {
            let rows = endpoint_status(&all);
            (rows.len() == 3 && rows.iter().all(|(l, t)| *l == target && *t > 0)).then_some(())
        },
    );
    // Writes go on through the new leader, and the one before the hand-off is still there.
    assert_eq!(c.put(leader, "after", "2").status().as_u16(), 200);
    assert_eq!(c.get(leader, "before", false).as_deref(), Some("1"));
    assert_eq!(c.get(target, "after", false).as_deref(), Some("2"));

    // A follower refuses (etcd's text), and etcdctl pointed only at a follower finds no leader.
    let follower = c.member(leader).grpc_addr.clone();
    let out = etcdctl_out(&follower, &["move-leader", &format!("{target:x}")]).expect("etcdctl");
    assert!(!out.status.success());
    let r = c
        .http
        .post(c.url(leader, &format!("/v1/members/{target}/lead")))
        .send()
        .expect("POST lead");
    assert_eq!(r.status().as_u16(), 409);
    let body: Value = r.json().expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("etcdserver: not leader")),
        "{body}"
    );
    // An unknown id: etcd's "bad leader transferee", naming the id.
    let out = etcdctl_out(&all, &["move-leader", "63"]).expect("etcdctl");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("etcdserver: bad leader transferee: member 0x63 is not a member"),
        "{stderr}"
    );
    // The leader did not change through the refusals.
    assert_eq!(c.wait_for_leader(TRANSFER_WITHIN), target);
}

#[test]
fn synodctl_and_http_move_leader() {
    let c = Cluster::start(3, "omnipaxos");
    let leader = c.wait_all_reach_leader(Duration::from_secs(20));
    let target = other_than(&c, leader);
    let out = std::process::Command::new(synodctl())
        .args(["--endpoints", &c.http_endpoints(), "move-leader"])
        .arg(target.to_string())
        .output()
        .expect("run synodctl");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        stdout.trim(),
        format!("Leadership transferred from {leader:x} to {target:x}")
    );
    wait_until(TRANSFER_WITHIN, "every member to follow the target", || {
        c.live_ids()
            .iter()
            .all(|id| c.status(*id).and_then(|s| s["leader"].as_u64()) == Some(target))
            .then_some(())
    });
    // And back, over HTTP, to the first leader.
    let r = c
        .http
        .post(c.url(target, &format!("/v1/members/{leader}/lead")))
        .timeout(TRANSFER_WITHIN)
        .send()
        .expect("POST lead");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().expect("json");
    assert_eq!(body["leader"].as_u64(), Some(leader));
    // An unknown member: 404.
    let r = c
        .http
        .post(c.url(leader, "/v1/members/99/lead"))
        .send()
        .expect("POST lead");
    assert_eq!(r.status().as_u16(), 404);
}

#[test]
fn leaderless_engine_refuses_move_leader() {
    let c = Cluster::start(3, "caspaxos");
    let r = c
        .http
        .post(c.url(1, "/v1/members/2/lead"))
        .send()
        .expect("POST lead");
    assert_eq!(r.status().as_u16(), 501);
    let body: Value = r.json().expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not supported by the caspaxos engine")),
        "{body}"
    );
}

#[test]
fn sigterm_of_the_leader_hands_off_and_loses_no_acknowledged_write() {
    sigterm_hand_off("omnipaxos");
}

#[test]
fn sigterm_of_the_vr_primary_hands_off() {
    sigterm_hand_off("vr");
}

fn sigterm_hand_off(engine: &str) {
    let mut c = Cluster::start(3, engine);
    let leader = c.wait_all_reach_leader(Duration::from_secs(20));
    let writer_at = other_than(&c, leader);
    // A writer through a member that stays, recording what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let url = c.url(writer_at, "/v1/kv/");
    let writer = {
        let stop = stop.clone();
        let http = c.http.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{i}");
                let ok = http
                    .put(format!("{url}{key}"))
                    .json(&serde_json::json!({ "value": i.to_string() }))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    acked.push(key);
                }
                i += 1;
            }
            acked
        })
    };
    wait_until(Duration::from_secs(10), "some writes acknowledged", || {
        c.status(writer_at)
            .and_then(|s| s["revision"].as_u64())
            .filter(|r| *r >= 20)
    });
    c.terminate(leader);
    let exit = c.wait_exit(leader, TRANSFER_WITHIN);
    assert!(exit.success(), "n{leader} exited with {exit}");
    let log = c.log(leader);
    assert!(
        log.contains("leadership handed off; stopping"),
        "n{leader} did not hand off:\n{log}"
    );
    let new_leader = c.wait_all_reach_leader(TRANSFER_WITHIN);
    assert_ne!(new_leader, leader);
    // Writes continue after the hand-off.
    let revision = c.status(writer_at).and_then(|s| s["revision"].as_u64());
    wait_until(Duration::from_secs(10), "writes after the hand-off", || {
        let now = c.status(writer_at).and_then(|s| s["revision"].as_u64());
        (now > revision).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().expect("writer");
    assert!(
        acked.len() >= 20,
        "only {} writes acknowledged",
        acked.len()
    );
    for key in &acked {
        assert!(
            c.get(new_leader, key, false).is_some(),
            "acknowledged write {key} lost"
        );
    }
}

#[test]
fn healthz_fails_without_a_quorum() {
    let mut c = Cluster::start(3, "omnipaxos");
    c.wait_all_reach_leader(Duration::from_secs(20));
    let healthz = |c: &Cluster, id: u64| c.healthz(id).0;
    assert_eq!(healthz(&c, 1), 200);
    c.kill(2);
    c.kill(3);
    wait_until(Duration::from_secs(10), "/healthz to fail at n1", || {
        (healthz(&c, 1) == 503).then_some(())
    });
    let (_, body) = c.healthz(1);
    assert!(body.contains("cannot reach a quorum"), "{body}");
    // etcd's health check (a linearizable get) fails too.
    if let Some(out) = etcdctl_out(&c.member(1).grpc_addr, &["endpoint", "health"]) {
        assert!(!out.status.success(), "{}", text(&out.stdout));
    }
    c.restart(2);
    wait_until(Duration::from_secs(20), "/healthz to pass again", || {
        (healthz(&c, 1) == 200).then_some(())
    });
}
