//! Availability after a fault ends (issue #17, item 6): a member that comes back answers its
//! own clients within 3 election timeouts, and a member that cannot reach a leader refuses
//! writes at once with `no_leader` instead of holding its clients for the request timeout.

mod common;

use common::{Cluster, wait_until};
use serde_json::Value;
use std::time::{Duration, Instant};
use synod_node::ClusterConfig;

/// 500 ms: long enough that the bound below is not at the mercy of a loaded CI machine's
/// scheduling, short enough that the old 2 s reconnect backoff would break it.
const ELECTION_TIMEOUT_TICKS: u64 = 50;
/// How long a member stays down: long enough for its peers' reconnect backoff to grow to its
/// cap (20 ms doubling reaches 2 s after ≈ 4 s of failures).
const DOWN_FOR: Duration = Duration::from_secs(5);

fn half_second_elections(c: &mut ClusterConfig) {
    c.election_timeout_ticks = ELECTION_TIMEOUT_TICKS;
}

fn election_timeout(c: &Cluster) -> Duration {
    let cfg = ClusterConfig::from_file(&c.config_path).expect("cluster file");
    cfg.election_timeout()
}

/// PUTs at member `id` until one succeeds; returns how long after `since` that was.
fn first_success_at(c: &Cluster, id: u64, since: Instant) -> Duration {
    wait_until(
        Duration::from_secs(20),
        &format!("a PUT at n{id} to succeed"),
        || {
            let r = c.put(id, "heal", "v");
            r.status().is_success().then(|| since.elapsed())
        },
    )
}

/// Kills `victim`, keeps it down while the others serve, restarts it and returns how long it
/// took, from the moment it answered its status endpoint again, to serve a write of its own
/// client.
fn restart_to_serving(c: &mut Cluster, victim: u64) -> Duration {
    c.kill(victim);
    let others: Vec<u64> = c.live_ids();
    let down = Instant::now();
    while down.elapsed() < DOWN_FOR {
        // The rest of the cluster keeps serving (after a failover if the victim led).
        first_success_at(c, others[0], Instant::now());
        std::thread::sleep(Duration::from_millis(50)); // Pacing, not waiting for anything.
    }
    c.restart(victim);
    let spawned = Instant::now();
    let back = wait_until(
        Duration::from_secs(20),
        "the member to answer again",
        || c.status(victim).map(|_| Instant::now()),
    );
    let serving = first_success_at(c, victim, back);
    eprintln!(
        "n{victim}: process up {:?} after spawn, then serving its clients {serving:?} later",
        back - spawned
    );
    serving
}

#[test]
fn a_restarted_member_answers_its_own_clients_within_three_election_timeouts() {
    let mut c = Cluster::start_with(3, "omnipaxos", half_second_elections);
    let bound = 3 * election_timeout(&c);
    let leader = c.wait_all_reach_leader(Duration::from_secs(20));
    let follower = c
        .live_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let took = restart_to_serving(&mut c, follower);
    assert!(
        took <= bound,
        "restarted follower n{follower} served after {took:?} > {bound:?}"
    );
    let leader = c.wait_all_reach_leader(Duration::from_secs(20));
    let took = restart_to_serving(&mut c, leader);
    assert!(
        took <= bound,
        "restarted leader n{leader} served after {took:?} > {bound:?}"
    );
}

#[test]
fn a_member_without_a_reachable_leader_fails_fast_with_no_leader() {
    let mut c = Cluster::start(3, "omnipaxos");
    let leader = c.wait_all_reach_leader(Duration::from_secs(20));
    let ids = c.live_ids();
    let survivor = ids
        .iter()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    for id in ids.into_iter().filter(|id| *id != survivor) {
        c.kill(id);
    }
    wait_until(
        Duration::from_secs(10),
        "the survivor to see its peers gone",
        || {
            let s = c.status(survivor)?;
            s.get("connected_peers")?
                .as_array()?
                .is_empty()
                .then_some(())
        },
    );
    let start = Instant::now();
    let r = c.put(survivor, "k", "v");
    let took = start.elapsed();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().expect("json error body");
    assert_eq!(body["error"]["code"], "no_leader", "{body}");
    // The request timeout is 5 s; "fast" is an order of magnitude below it.
    assert!(took < Duration::from_millis(500), "answered after {took:?}");
}
