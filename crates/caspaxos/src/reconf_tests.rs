//! Scripted message-level tests of membership change (`reconf.rs`, `coordinator.rs`) on the
//! in-memory network of `tests.rs`: growing and shrinking with crashes, what the rescan
//! guarantees (and the planted bug that skips it), races, timeouts, restarts and refusals.

use super::*;
use crate::coordinator::{ERR_CHANGE_IN_PROGRESS, ERR_MEMBER_REMOVED, ERR_NO_LEARNERS};
use crate::reconf::Step;
use crate::tests::{Net, StressPlan, get, put, read, rid, stress_with_plan};
use synod_core::kv::{Op, Response, ResponseBody};
use synod_core::membership::{ERR_MEMBER_NOT_FOUND, Member, MemberChange};
use synod_core::{DurableRecord, EngineError};

impl Net {
    fn held_or_none(&mut self, id: NodeId) -> Option<reconf::CasConfig> {
        self.node(id).cas_config().cloned()
    }

    fn held(&mut self, id: NodeId) -> reconf::CasConfig {
        self.node(id)
            .cas_config()
            .cloned()
            .expect("holds a configuration")
    }
}

fn change(c: MemberChange) -> Op {
    Op::Membership(c)
}

fn add(id: NodeId) -> Op {
    change(MemberChange::Add(Member {
        id,
        ..Member::default()
    }))
}

fn remove(id: NodeId) -> Op {
    change(MemberChange::Remove(id))
}

/// The voters of a completed change.
fn voters(r: Result<Response, EngineError>) -> Vec<NodeId> {
    match r.expect("change completes").body {
        ResponseBody::Membership(c) => c.voters(),
        other => panic!("not a membership response: {other:?}"),
    }
}

fn write_keys(net: &mut Net, at: NodeId, client: u64, tag: &str, n: u64) {
    for i in 0..n {
        let key = format!("{tag}{i}");
        assert!(net.call(at, rid(client, i + 1), put(&key, &key)).is_ok());
    }
}

fn assert_keys(net: &mut Net, at: NodeId, client: u64, tag: &str, n: u64) {
    for i in 0..n {
        let key = format!("{tag}{i}");
        let got = read(net.call(at, rid(client, i + 1), get(&key)));
        assert_eq!(got.map(|(v, _)| v), Some(key.clone()), "{key} at node {at}");
    }
}

/// Every listed node holds the stable configuration with these voters and reports it.
fn assert_stable(net: &mut Net, nodes: &[NodeId], expected: &[NodeId]) {
    for &id in nodes {
        let held = net.held(id);
        assert!(held.change.is_none(), "node {id}: {held:?}");
        assert_eq!(held.stable.voters(), expected, "node {id}");
        assert_eq!(net.node(id).status().configuration.voters(), expected);
    }
}

#[test]
fn values_survive_growing_3_to_5_and_shrinking_back_with_minority_crashes() {
    let mut net = Net::new(3, |_| {});
    write_keys(&mut net, 1, 100, "a", 12);
    net.join(4);
    assert_eq!(net.node(4).status().role, "joining");
    assert_eq!(voters(net.call(1, rid(1, 1), add(4))), vec![1, 2, 3, 4]);
    assert_stable(&mut net, &[1, 2, 3, 4], &[1, 2, 3, 4]);
    // A minority crash between changes: writes go on, and the node catches up on restart.
    net.crash(2);
    write_keys(&mut net, 3, 101, "b", 6);
    net.restart(2);
    net.join(5);
    // The newest member coordinates the next growth.
    assert_eq!(voters(net.call(4, rid(1, 2), add(5))), vec![1, 2, 3, 4, 5]);
    assert_stable(&mut net, &[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5]);
    // Shrinking with a member crashed in the middle of each change: the coordinator keeps
    // re-sending the step until the member is back.
    for (coordinator, victim, gone) in [(1, 3, 5), (3, 2, 4)] {
        net.crash(victim);
        net.submit(coordinator, rid(1, 10 + gone), remove(gone));
        for _ in 0..20 {
            net.tick();
        }
        net.restart(victim);
        let id = rid(1, 10 + gone);
        net.run_until(1_000, |n| n.replies.contains_key(&id));
        let reply = net.replies[&id][0].1.result.clone();
        assert!(voters(reply).iter().all(|v| *v != gone));
    }
    assert_stable(&mut net, &[1, 2, 3], &[1, 2, 3]);
    for (id, role) in [(4, "removed"), (5, "removed"), (1, "proposer")] {
        assert_eq!(net.node(id).status().role, role);
    }
    for at in 1..=3 {
        assert_keys(&mut net, at, 200 + at, "a", 12);
        assert_keys(&mut net, at, 300 + at, "b", 6);
    }
}

/// Writes `k` on nodes 1 and 2 only, grows to 4, then removes node 1 while node 2 is slow on
/// its data path, and reads `k` without node 2: only the rescan of the growth put `k` on the
/// nodes that are left. Returns what the read found.
fn read_after_old_holders_removed(bug: Option<PlantedBug>) -> Option<(String, u64)> {
    let mut net = Net::new(3, |c| c.planted_bug = bug);
    net.isolated.insert(3);
    assert!(net.call(1, rid(1, 1), put("k", "v")).is_ok());
    net.isolated.clear();
    assert!(net.node(3).acceptor().get(b"k").is_none(), "3 missed k");
    net.join(4);
    assert_eq!(voters(net.call(1, rid(2, 1), add(4))), vec![1, 2, 3, 4]);
    // The rescan is what put k on the nodes that did not hold it.
    let rescanned = [3, 4].map(|id| net.node(id).acceptor().get(b"k").is_some());
    assert_eq!(rescanned, [bug.is_none(); 2]);
    net.muted.insert(2);
    assert_eq!(voters(net.call(3, rid(2, 2), remove(1))), vec![2, 3, 4]);
    net.muted.clear();
    net.isolated.insert(2);
    read(net.call(3, rid(3, 1), get("k")))
}

#[test]
fn a_value_written_before_growing_is_read_after_its_old_holders_are_removed() {
    assert_eq!(read_after_old_holders_removed(None), Some(("v".into(), 1)));
}

#[test]
fn skipping_the_rescan_on_growth_is_caught() {
    let found = read_after_old_holders_removed(Some(PlantedBug::CasSkipRescanOnGrow));
    assert_eq!(found, None, "the planted bug must lose the value");
}

#[test]
fn a_change_racing_another_is_refused() {
    let mut net = Net::new(3, |_| {});
    net.join(4);
    // Both claim version 1 at once: the lower coordinator id wins.
    net.submit(1, rid(1, 1), add(4));
    net.submit(2, rid(2, 1), remove(3));
    net.run_until(1_000, |n| {
        n.replies.contains_key(&rid(1, 1)) && n.replies.contains_key(&rid(2, 1))
    });
    assert_eq!(
        voters(net.replies[&rid(1, 1)][0].1.result.clone()),
        vec![1, 2, 3, 4]
    );
    let claimed_by_2 = net.sent_log.iter().any(|(from, _, m)| {
        *from == 2
            && matches!(m, Message::Install { config }
                if config.change.as_ref().is_some_and(|c| c.coordinator == 2))
    });
    assert!(claimed_by_2, "both really raced for the version");
    let refused = net.replies[&rid(2, 1)][0].1.result.clone();
    assert_eq!(
        refused,
        Err(EngineError::Membership(ERR_CHANGE_IN_PROGRESS.into()))
    );
    assert_stable(&mut net, &[1, 2, 3, 4], &[1, 2, 3, 4]);
    // A second change at a node already coordinating one is refused at once.
    net.submit(1, rid(1, 2), remove(4));
    net.submit(1, rid(1, 3), remove(2));
    net.pump();
    assert_eq!(
        net.replies[&rid(1, 3)][0].1.result,
        Err(EngineError::Membership(ERR_CHANGE_IN_PROGRESS.into()))
    );
    net.run_until(1_000, |n| n.replies.contains_key(&rid(1, 2)));
    assert_stable(&mut net, &[1, 2, 3], &[1, 2, 3]);
}

#[test]
fn an_unreachable_member_times_out_and_the_change_goes_no_further_than_its_step() {
    let mut net = Net::new(3, |c| c.request_timeout_ticks = 100);
    net.join(4);
    net.isolated.insert(4);
    assert_eq!(net.call(1, rid(1, 1), add(4)), Err(EngineError::Timeout));
    for id in 1..=3 {
        let held = net.held(id);
        assert_eq!(held.version, 1, "node {id}");
        assert_eq!(held.change.as_ref().map(|c| c.step), Some(Step::Reserved));
        assert_eq!(held.quorums(), reconf::Quorums::stable(vec![1, 2, 3]));
    }
    assert_eq!(net.node(4).status().role, "joining");
    // Unfinished, it blocks any other change, but not the data path.
    assert_eq!(
        net.call(2, rid(2, 1), remove(3)),
        Err(EngineError::Membership(ERR_CHANGE_IN_PROGRESS.into()))
    );
    assert!(net.call(2, rid(2, 2), put("x", "1")).is_ok());
    // The step reached survives restarts; a retry of the same change at another node resumes.
    net.crash(1);
    net.restart(1);
    assert_eq!(net.held(1).version, 1);
    net.isolated.clear();
    assert_eq!(voters(net.call(3, rid(1, 1), add(4))), vec![1, 2, 3, 4]);
    assert_stable(&mut net, &[1, 2, 3, 4], &[1, 2, 3, 4]);
    assert_eq!(
        read(net.call(4, rid(3, 1), get("x"))),
        Some(("1".into(), 1))
    );
}

/// Adds node 4 before it runs, so the coordinator gives up at the reservation; then starts
/// it and lets time pass with nobody asking again. Whether the add completed, and whether a
/// different change is then accepted.
fn add_then_start_late(bug: Option<PlantedBug>) -> (bool, Result<Response, EngineError>) {
    let mut net = Net::new(3, |c| {
        c.request_timeout_ticks = 100;
        c.planted_bug = bug;
    });
    assert!(net.call(1, rid(1, 1), put("x", "1")).is_ok());
    // Node 4 does not exist yet: every Install to it is lost.
    assert_eq!(net.call(1, rid(1, 2), add(4)), Err(EngineError::Timeout));
    assert_eq!(
        net.held(2).change.as_ref().map(|c| c.step),
        Some(Step::Reserved)
    );
    net.join(4);
    for _ in 0..600 {
        net.tick();
    }
    let done = (1..=4).all(|id| {
        let held = net.held_or_none(id);
        held.is_some_and(|h| h.change.is_none() && h.stable.voters() == [1, 2, 3, 4])
    });
    if done {
        assert_stable(&mut net, &[1, 2, 3, 4], &[1, 2, 3, 4]);
        let x = read(net.call(4, rid(4, 1), get("x")));
        assert_eq!(
            x,
            Some(("1".into(), 1)),
            "the new member serves what came before"
        );
    }
    let other = net.call(2, rid(2, 1), remove(3));
    (done, other)
}

#[test]
fn an_add_whose_node_starts_after_the_timeout_is_finished_by_that_node() {
    let (done, other) = add_then_start_late(None);
    assert!(done, "the late node resumed its own add");
    assert_eq!(voters(other), vec![1, 2, 4], "and other changes go on");
}

#[test]
fn a_joiner_that_never_resumes_its_add_is_caught() {
    let (done, other) = add_then_start_late(Some(PlantedBug::CasJoinerNeverResumes));
    assert!(!done, "the planted bug leaves the add at its reservation");
    assert_eq!(
        other,
        Err(EngineError::Membership(ERR_CHANGE_IN_PROGRESS.into()))
    );
}

#[test]
fn a_member_lost_mid_change_leaves_every_node_at_the_step_reached_or_the_one_before() {
    let mut net = Net::new(3, |c| c.request_timeout_ticks = 100);
    net.join(4);
    net.submit(1, rid(1, 1), add(4));
    let transition = |n: &mut Net| n.held(1).change.map(|c| c.step) == Some(Step::Transition);
    while !transition(&mut net) {
        net.pump();
        assert!(
            net.deliver_one(),
            "the change stalled before its transition step"
        );
    }
    // The Install of the transition step to node 3 is lost with the partition.
    net.isolated.insert(3);
    net.run_until(1_000, |n| n.replies.contains_key(&rid(1, 1)));
    assert_eq!(
        net.replies[&rid(1, 1)][0].1.result,
        Err(EngineError::Timeout)
    );
    for (id, step) in [
        (1, Step::Transition),
        (2, Step::Transition),
        (3, Step::Reserved),
    ] {
        assert_eq!(net.held(id).change.map(|c| c.step), Some(step), "node {id}");
    }
    assert_eq!(net.held(4).change.map(|c| c.step), Some(Step::Transition));
    // The transition quorums (prepare 2 of {1,2,3}, accept 3 of {1,2,3,4}) work without 3.
    assert!(net.call(2, rid(2, 1), put("x", "1")).is_ok());
    net.isolated.clear();
    assert_eq!(voters(net.call(2, rid(1, 1), add(4))), vec![1, 2, 3, 4]);
    assert_eq!(
        read(net.call(3, rid(3, 1), get("x"))),
        Some(("1".into(), 1))
    );
}

#[test]
fn the_persisted_configuration_survives_restarts_from_records_and_checkpoints() {
    let mut net = Net::new(3, |c| c.snapshot_entries = 8);
    write_keys(&mut net, 2, 100, "a", 10);
    net.join(4);
    assert_eq!(voters(net.call(1, rid(1, 1), add(4))), vec![1, 2, 3, 4]);
    let version = net.held(1).version;
    for id in 1..=4 {
        net.crash(id);
    }
    for id in 1..=4 {
        net.restart(id);
        assert!(
            net.disks[&id].iter().any(|r| r.is_checkpoint()),
            "node {id}"
        );
        assert_eq!(net.held(id).version, version);
    }
    assert_stable(&mut net, &[1, 2, 3, 4], &[1, 2, 3, 4]);
    assert_keys(&mut net, 4, 200, "a", 10);
    // A joining node that restarts before it is installed is still joining, not bootstrapped.
    net.join(5);
    net.crash(5);
    net.restart(5);
    assert!(net.node(5).cas_config().is_none());
    let refused = net.call(5, rid(5, 1), put("y", "1"));
    assert_eq!(refused, Err(EngineError::Busy));
    assert_eq!(voters(net.call(2, rid(1, 2), add(5))), vec![1, 2, 3, 4, 5]);
    net.crash(5);
    net.restart(5);
    assert_stable(&mut net, &[5], &[1, 2, 3, 4, 5]);
}

#[test]
fn learners_and_promotion_are_refused_and_an_update_changes_addresses_only() {
    let mut net = Net::new(3, |_| {});
    let learner = change(MemberChange::Add(Member {
        id: 4,
        learner: true,
        ..Member::default()
    }));
    assert_eq!(
        net.call(1, rid(1, 1), learner),
        Err(EngineError::Membership(ERR_NO_LEARNERS.into()))
    );
    let promote = net.call(1, rid(1, 2), change(MemberChange::Promote(2)));
    assert!(matches!(promote, Err(EngineError::Membership(m)) if m.contains("no learners")));
    assert_eq!(
        net.call(1, rid(1, 3), remove(9)),
        Err(EngineError::Membership(ERR_MEMBER_NOT_FOUND.into()))
    );
    assert_eq!(net.held(2).version, 0, "refusals change nothing");
    let update = change(MemberChange::Update(Member {
        id: 2,
        peer_addr: "10.0.0.2:7000".into(),
        ..Member::default()
    }));
    assert_eq!(voters(net.call(3, rid(1, 4), update)), vec![1, 2, 3]);
    for id in 1..=3 {
        let reported = net.node(id).status().configuration;
        assert_eq!(reported.version, 1);
        let addr = reported.member(2).map(|m| m.peer_addr.clone());
        assert_eq!(addr.as_deref(), Some("10.0.0.2:7000"));
        assert_eq!(net.held(id).version, 2, "reserved, then done");
    }
}

#[test]
fn removing_the_coordinator_itself_and_a_node_that_is_down_both_work() {
    let mut net = Net::new(4, |_| {});
    write_keys(&mut net, 1, 100, "a", 8);
    assert_eq!(voters(net.call(1, rid(1, 1), remove(1))), vec![2, 3, 4]);
    assert_eq!(net.node(1).status().role, "removed");
    assert_eq!(
        net.call(1, rid(1, 2), put("z", "1")),
        Err(EngineError::Membership(ERR_MEMBER_REMOVED.into()))
    );
    net.crash(4);
    assert_eq!(voters(net.call(2, rid(2, 1), remove(4))), vec![2, 3]);
    assert_stable(&mut net, &[2, 3], &[2, 3]);
    assert_keys(&mut net, 3, 200, "a", 8);
    // The removed node comes back with its old configuration and learns it is out.
    net.restart(4);
    net.submit(4, rid(4, 1), put("w", "1"));
    net.run_until(1_000, |n| n.replies.contains_key(&rid(4, 1)));
    assert_eq!(net.node(4).status().role, "removed");
}

#[test]
fn cas_stays_linearizable_while_the_cluster_grows_to_5_and_sheds_its_first_members() {
    let mut completed = 0;
    for seed in 0..8 {
        let plan = StressPlan {
            joins: vec![4, 5],
            changes: vec![(2, add(4)), (4, add(5)), (3, remove(1)), (5, remove(2))],
        };
        match stress_with_plan(seed, None, plan) {
            Ok(outcome) => {
                assert!(outcome.wins > 0, "seed {seed}: no progress");
                completed += outcome.changes;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Under loss, duplication, reordering and crashes every plan still finishes (a change that
    // timed out is retried and resumes where it stopped).
    assert_eq!(completed, 8 * 4, "changes completed");
}

impl Net {
    /// `id` restarts with its storage gone (the node layer quarantined it): everything it
    /// promised and accepted is lost, and it knows only what its `EngineConfig` says.
    fn lose_disk(&mut self, id: NodeId) {
        self.crash(id);
        self.disks.insert(id, Vec::new());
        if let Some(cfg) = self.configs.get_mut(&id) {
            cfg.first_boot = false;
        }
        self.restart(id);
    }
}

/// Grows 3 → 5, chooses `k` on {1, 4, 5} only, and has node `lost` lose its disk; once it is
/// whole again, reads `k` without 4 and 5 (the read's prepare quorum is {1, 2, 3}).
fn read_after_losing_a_disk_in_the_grown_cluster(lost: NodeId) -> Option<(String, u64)> {
    let mut net = Net::new(3, |_| {});
    net.join(4);
    assert_eq!(voters(net.call(1, rid(1, 1), add(4))), vec![1, 2, 3, 4]);
    net.join(5);
    assert_eq!(voters(net.call(1, rid(1, 2), add(5))), vec![1, 2, 3, 4, 5]);
    net.isolated.extend([2, 3]);
    assert!(net.call(1, rid(2, 1), put("k", "v")).is_ok());
    net.isolated.clear();
    net.lose_disk(lost);
    net.run_until(1_000, |n| {
        let role = n.node(lost).status().role;
        role != "repairing" && role != "joining"
    });
    net.isolated.extend([4, 5]);
    read(net.call(2, rid(3, 1), get("k")))
}

#[test]
fn an_original_member_that_lost_its_disk_repairs_from_the_configuration_it_grew_into() {
    // Node 1's EngineConfig still names the 3 original members: repairing from 2 of them
    // (the bootstrap majority rule) misses k, which only 4 and 5 hold besides node 1.
    assert_eq!(
        read_after_losing_a_disk_in_the_grown_cluster(1),
        Some(("v".into(), 1))
    );
}

#[test]
fn a_joined_member_that_lost_its_disk_repairs_instead_of_joining_again() {
    // Node 5 was started with `join`: with its disk gone it looks like a new joiner, but the
    // configuration it is offered already counts it as a voter, so it must repair first.
    let mut net = Net::new(3, |_| {});
    net.join(4);
    assert_eq!(voters(net.call(1, rid(1, 1), add(4))), vec![1, 2, 3, 4]);
    assert_eq!(voters(net.call(1, rid(1, 2), remove(1))), vec![2, 3, 4]);
    // k chosen on {3, 4} only.
    net.isolated.insert(2);
    assert!(net.call(3, rid(2, 1), put("k", "v")).is_ok());
    net.isolated.clear();
    net.lose_disk(4);
    // Any round reaching 4 makes it ask for the configuration.
    assert!(net.call(2, rid(2, 2), get("x")).is_ok());
    net.run_until(1_000, |n| {
        n.node(4).cas_config().is_some() && n.node(4).status().role != "repairing"
    });
    net.isolated.insert(3);
    assert_eq!(
        read(net.call(2, rid(3, 1), get("k"))),
        Some(("v".into(), 1))
    );
}

#[test]
fn a_member_whose_original_peers_are_all_gone_still_repairs() {
    // 3 → 5 → {3, 4, 5}: node 3 was started knowing 1 and 2 only, and both are stopped.
    let mut net = Net::new(3, |_| {});
    for (id, seq) in [(4, 1), (5, 2)] {
        net.join(id);
        assert!(net.call(1, rid(1, seq), add(id)).is_ok());
    }
    assert_eq!(voters(net.call(3, rid(1, 3), remove(1))), vec![2, 3, 4, 5]);
    assert_eq!(voters(net.call(3, rid(1, 4), remove(2))), vec![3, 4, 5]);
    net.crash(1);
    net.crash(2);
    // k chosen on {3, 4} only.
    net.isolated.insert(5);
    assert!(net.call(4, rid(2, 1), put("k", "v")).is_ok());
    net.isolated.clear();
    net.lose_disk(3);
    // Any round reaching 3 tells it whom to ask.
    assert!(net.call(4, rid(2, 2), get("x")).is_ok());
    net.run_until(1_000, |n| n.node(3).status().role != "repairing");
    net.isolated.insert(4);
    assert_eq!(
        read(net.call(5, rid(3, 1), get("k"))),
        Some(("v".into(), 1))
    );
}
