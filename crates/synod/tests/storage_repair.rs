//! Storage damage on real processes: bytes flipped in the middle of a member's WAL (a committed
//! record, not the tail) or in its newest snapshot, or its `meta.json` damaged; the member is
//! restarted with no operator flag and must quarantine what it cannot trust, repair from its
//! peers and serve every acknowledged key within 30 s — a follower and the leader, on every
//! engine. (The same damage without repair is what the simulator's planted
//! `truncate-at-corruption` bug shows to lose acknowledged writes.)

mod common;

use common::{Cluster, damage_wal, files, flip_middle, wait_until};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Keys written (one put each, so one WAL batch each on every member) before the damage.
const KEYS: usize = 60;
/// The bound: every acknowledged key served by the restarted member within this.
const REPAIRED_WITHIN: Duration = Duration::from_secs(30);

/// Puts `KEYS` keys through `via` and returns them; every one must be acknowledged. A 503
/// (`no_leader` right after the leader was killed: definitely not applied) is retried until a
/// new leader serves, within 10 s.
fn write_keys(c: &Cluster, via: u64, prefix: &str) -> Vec<(String, String)> {
    (0..KEYS)
        .map(|i| {
            let (k, v) = (format!("{prefix}-{i:03}"), format!("value-{i}"));
            wait_until(
                Duration::from_secs(10),
                &format!("put {k} through n{via}"),
                || {
                    let status = c.put(via, &k, &v).status();
                    assert!(
                        status.is_success() || status.as_u16() == 503,
                        "put {k} through n{via}: {status}"
                    );
                    status.is_success().then_some(())
                },
            );
            (k, v)
        })
        .collect()
}

/// The value member `id` answers for `key` from its own state (sequential read), or None for
/// anything else (absent, an error while it repairs, no answer).
fn local_value(c: &Cluster, id: u64, key: &str) -> Option<String> {
    let r = c
        .http
        .get(c.url(id, &format!("/v1/kv/{key}?consistency=sequential")))
        .send()
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().ok()?;
    v["kv"]["value"].as_str().map(str::to_string)
}

/// Waits until member `id` answers every key with its acknowledged value; returns how long.
fn wait_serves_all(c: &Cluster, id: u64, keys: &[(String, String)]) -> Duration {
    let start = Instant::now();
    wait_until(
        REPAIRED_WITHIN,
        &format!("n{id} to serve every acknowledged key"),
        || {
            keys.iter()
                .all(|(k, v)| local_value(c, id, k).as_deref() == Some(v))
                .then_some(())
        },
    );
    start.elapsed()
}

fn damage_newest_snapshot(c: &Cluster, id: u64) {
    let wal = c.data_dir(id).join("wal");
    let snap = files(&wal, "snap-", ".snap")
        .pop()
        .expect("a snapshot file (SYNOD_SNAPSHOT_ENTRIES is small)");
    let at = flip_middle(&snap);
    eprintln!("flipped 8 bytes at offset {at} of {}", snap.display());
}

fn assert_repaired(c: &Cluster, id: u64, took: Duration, what: &str) {
    let log = c.log(id);
    assert!(
        log.contains("quarantin"),
        "n{id} should say it quarantined its damaged storage:\n{log}"
    );
    let quarantined = files(&c.data_dir(id).join("wal"), "quarantine-", "").len()
        + files(&c.data_dir(id), "quarantine-", "").len();
    assert!(quarantined > 0, "n{id}: no quarantine directory");
    eprintln!("{what}: n{id} served every acknowledged key {took:?} after its restart");
}

/// A member of `engine` (the leader or a follower) restarted after `damage`: repaired.
fn repairs(engine: &str, leader: bool, snapshot_entries: Option<u64>, damage: fn(&Cluster, u64)) {
    repairs_split(engine, leader, snapshot_entries, damage, &[]);
}

/// [`repairs`] on a partitioned cluster cut at `split_keys` (none: one group).
fn repairs_split(
    engine: &str,
    leader: bool,
    snapshot_entries: Option<u64>,
    damage: fn(&Cluster, u64),
    split_keys: &[&str],
) {
    let mut c = Cluster::start_configured(3, engine, &|cfg| {
        if let Some(n) = snapshot_entries {
            cfg.storage.snapshot_entries = n;
        }
        cfg.partition.split_keys = split_keys.iter().map(|k| k.to_string()).collect();
    });
    let lead = if engine == "caspaxos" {
        1
    } else {
        c.wait_for_leader(Duration::from_secs(20))
    };
    let victim = if leader {
        lead
    } else {
        c.members
            .iter()
            .map(|m| m.id)
            .find(|id| *id != lead)
            .expect("a follower")
    };
    let writer = c
        .members
        .iter()
        .map(|m| m.id)
        .find(|id| *id != victim)
        .expect("another member");
    let mut keys = write_keys(&c, writer, "before");
    // Every member holds every key before the damage (so the victim's log has them).
    wait_serves_all(&c, victim, &keys);
    c.kill(victim);
    damage(&c, victim);
    // Writes go on while the victim is down.
    keys.extend(write_keys(&c, writer, "while-down"));
    c.restart(victim);
    let took = wait_serves_all(&c, victim, &keys);
    let role = if leader { "leader" } else { "follower" };
    assert_repaired(&c, victim, took, &format!("{engine} {role}"));
    // And the cluster goes on with the repaired member in it.
    keys.extend(write_keys(&c, victim, "after"));
    wait_serves_all(&c, writer, &keys);
}

#[test]
fn omnipaxos_follower_with_a_damaged_committed_record_repairs() {
    repairs("omnipaxos", false, None, damage_wal);
}

#[test]
fn omnipaxos_leader_with_a_damaged_committed_record_repairs() {
    repairs("omnipaxos", true, None, damage_wal);
}

#[test]
fn omnipaxos_follower_with_a_damaged_snapshot_repairs() {
    repairs("omnipaxos", false, Some(16), damage_newest_snapshot);
}

#[test]
fn omnipaxos_leader_with_a_damaged_snapshot_repairs() {
    repairs("omnipaxos", true, Some(16), damage_newest_snapshot);
}

#[test]
fn vr_follower_with_a_damaged_committed_record_repairs() {
    repairs("vr", false, None, damage_wal);
}

#[test]
fn vr_leader_with_a_damaged_snapshot_repairs() {
    repairs("vr", true, Some(16), damage_newest_snapshot);
}

#[test]
fn caspaxos_member_with_a_damaged_committed_record_repairs() {
    repairs("caspaxos", false, None, damage_wal);
}

#[test]
fn a_member_with_damaged_metadata_repairs() {
    repairs("omnipaxos", false, None, |c, id| {
        flip_middle(&c.data_dir(id).join("meta.json"));
    });
}

/// Four groups cut so that the keys written before the damage ("before-…"), while the member
/// is down ("while-down-…") and after ("after-…") fall into three of them: the member's one
/// WAL holds every group's records, and what is quarantined is every group's.
const SPLITS: [&str; 3] = ["b", "c", "w"];

#[test]
fn omnipaxos_partitioned_follower_with_a_damaged_committed_record_repairs() {
    repairs_split("omnipaxos", false, None, damage_wal, &SPLITS);
}

#[test]
fn vr_partitioned_leader_with_a_damaged_snapshot_repairs() {
    repairs_split("vr", true, Some(16), damage_newest_snapshot, &SPLITS);
}
