//! Real multi-process clusters on loopback, for each leader-based engine (OmniPaxos and VR):
//! every member serves reads and writes (followers forward), the leader's death leaves the
//! others serving within a few election timeouts, and a killed member comes back from its data
//! directory and catches up.

mod common;

use common::{Cluster, wait_until};
use std::time::{Duration, Instant};

#[test]
fn every_member_serves_writes_and_linearizable_reads_omnipaxos() {
    every_member_serves_writes_and_linearizable_reads("omnipaxos");
}

#[test]
fn every_member_serves_writes_and_linearizable_reads_vr() {
    every_member_serves_writes_and_linearizable_reads("vr");
}

#[test]
fn killing_the_leader_leaves_the_others_serving_omnipaxos() {
    killing_the_leader_leaves_the_others_serving("omnipaxos");
}

#[test]
fn killing_the_primary_leaves_the_others_serving_vr() {
    killing_the_leader_leaves_the_others_serving("vr");
}

fn every_member_serves_writes_and_linearizable_reads(engine: &str) {
    let c = Cluster::start(3, engine);
    for id in 1..=3u64 {
        let r = c.put(id, &format!("k{id}"), &format!("v{id}"));
        assert_eq!(r.status().as_u16(), 200, "PUT at n{id}");
    }
    // A linearizable read at any member sees every write acknowledged before it started.
    for reader in 1..=3u64 {
        for k in 1..=3u64 {
            assert_eq!(
                c.get(reader, &format!("k{k}"), false),
                Some(format!("v{k}")),
                "n{reader} k{k}"
            );
        }
    }
    assert_eq!(c.get(2, "missing", false), None);
    // The gauges operators watch: every member applied the three writes and has them on disk.
    for id in 1..=3u64 {
        wait_until(Duration::from_secs(10), "the size gauges", || {
            let keys = c.metric(id, "synod_keys")?;
            let lag = c.metric(id, "synod_apply_lag_entries")?;
            let db = c.metric(id, "synod_db_size_bytes")?;
            (keys == 3.0 && lag == 0.0 && db > 0.0).then_some(())
        });
        assert!(c.metric(id, "synod_snapshot_bytes").is_some());
        assert!(c.metric(id, "synod_watch_streams").is_some());
    }
    // A lease granted through one member is counted on every member once applied.
    let granted = c
        .http
        .post(c.url(1, "/v3/lease/grant"))
        .body(r#"{"TTL":"60"}"#)
        .send()
        .expect("lease grant");
    assert!(granted.status().is_success(), "{}", granted.status());
    for id in 1..=3u64 {
        wait_until(Duration::from_secs(10), "the lease gauge", || {
            (c.metric(id, "synod_leases")? == 1.0).then_some(())
        });
    }
}

fn killing_the_leader_leaves_the_others_serving(engine: &str) {
    let mut c = Cluster::start(3, engine);
    let leader = c.wait_for_leader(Duration::from_secs(10));
    assert_eq!(c.put(leader, "before", "1").status().as_u16(), 200);

    c.kill(leader);
    let killed_at = Instant::now();
    let survivor = c.live_ids()[0];
    // The first write a survivor acknowledges after the kill marks the end of the outage.
    wait_until(
        Duration::from_secs(10),
        "a write acknowledged by a survivor",
        || {
            let r = c
                .http
                .put(c.url(survivor, "/v1/kv/after"))
                .json(&serde_json::json!({"value": "2"}))
                .timeout(Duration::from_millis(1500))
                .send()
                .ok()?;
            r.status().is_success().then_some(())
        },
    );
    let outage = killed_at.elapsed();
    // Election timeout is 10 ticks of 10 ms; "a few election timeouts" with CI slack.
    eprintln!("{engine}: write availability restored {outage:?} after SIGKILL of leader n{leader}");
    assert!(
        outage < Duration::from_secs(3),
        "outage {outage:?} is too long"
    );
    let new_leader = c.wait_for_leader(Duration::from_secs(5));
    assert_ne!(new_leader, leader);
    assert_eq!(
        c.get(survivor, "before", false).as_deref(),
        Some("1"),
        "no acknowledged write lost"
    );

    // The killed member restarts from its data directory and catches up.
    c.restart(leader);
    wait_until(
        Duration::from_secs(15),
        "restarted member to catch up",
        || {
            let r = c
                .http
                .get(c.url(leader, "/v1/kv/after?consistency=sequential"))
                .timeout(Duration::from_millis(500))
                .send()
                .ok()?;
            let v: serde_json::Value = r.json().ok()?;
            (v["kv"]["value"] == "2").then_some(())
        },
    );
    assert_eq!(c.get(leader, "before", false).as_deref(), Some("1"));
}
