//! Leases on the partitioned engine: a copy in every group, kept in step by fanned-out
//! requests, and carried through splits and merges (see `leases.rs`).

use super::*;
use synod_core::kv::{LeaseGrantRequest, LeaseId, LeaseInfo};

pub(super) fn grant(net: &mut Net, at: usize, ttl: i64) -> LeaseId {
    let r = net
        .call(at, Op::LeaseGrant(LeaseGrantRequest { id: 0, ttl }))
        .expect("grant");
    match r.body {
        ResponseBody::LeaseGrant(info) => info.id,
        other => panic!("a grant answer: {other:?}"),
    }
}

pub(super) fn put_with(net: &mut Net, at: usize, key: &str, lease: LeaseId) {
    let mut p = PutRequest::new(key, "v");
    p.lease = lease;
    let r = net.call(at, Op::Put(p));
    assert!(r.is_ok(), "put {key} with lease {lease}: {r:?}");
}

pub(super) fn time_to_live(net: &mut Net, at: usize, id: LeaseId) -> synod_core::kv::LeaseTtl {
    let r = net
        .call(at, Op::LeaseTimeToLive { id, keys: true })
        .expect("ttl");
    match r.body {
        ResponseBody::LeaseTimeToLive(t) => t,
        other => panic!("a TimeToLive answer: {other:?}"),
    }
}

/// Three fresh members, every one with `bug` planted (if any).
fn net_with(bug: Option<PlantedBug>) -> Net {
    let mut net = Net::new(0);
    for (i, n) in net.nodes.iter_mut().enumerate() {
        let mut c = config(i as u64 + 1, 0);
        c.planted_bug = bug;
        *n = Node::recover(c, Vec::new()).expect("boot");
    }
    net
}

fn keep_alive(net: &mut Net, at: usize, id: LeaseId) -> Result<Response, EngineError> {
    net.call(at, Op::LeaseKeepAlive { id })
}

/// Every member's every group holds a copy of lease `id` (or none does).
fn copies(net: &Net, id: LeaseId) -> Vec<usize> {
    net.nodes
        .iter()
        .map(|n| {
            n.groups()
                .filter(|(_, g)| g.lease_keys(id).is_some())
                .count()
        })
        .collect()
}

fn live_keys(net: &mut Net) -> Vec<String> {
    let all = net.call(0, Op::Range(all_keys())).expect("read");
    keys_of(&all)
}

#[test]
fn a_lease_lives_in_every_group_and_its_keys_in_three_groups_go_when_it_expires() {
    let mut net = Net::new(0);
    net.rounds(50);
    let id = grant(&mut net, 1, 1);
    assert_eq!(
        copies(&net, id),
        [3, 3, 3],
        "a copy in each of the 3 groups"
    );
    // One key in each group ([.., g), [g, p), [p, ..)), put through different members.
    for (at, k) in ["a", "h", "q"].into_iter().enumerate() {
        put_with(&mut net, at, k, id);
    }
    net.put(0, "z", "no lease");
    let t = time_to_live(&mut net, 2, id);
    assert_eq!(t.keys, [b"a".to_vec(), b"h".to_vec(), b"q".to_vec()]);
    assert!(t.remaining_ttl > 0 && t.granted_ttl == 1, "{t:?}");
    let listed = net.call(0, Op::LeaseLeases).expect("leases");
    assert_eq!(listed.body, ResponseBody::LeaseLeases(vec![id]));
    // Nobody keeps it alive: every group's lessor ends its copy, with its keys.
    net.rounds(150);
    assert_eq!(live_keys(&mut net), ["z"]);
    assert_eq!(copies(&net, id), [0, 0, 0]);
    assert_eq!(time_to_live(&mut net, 0, id).remaining_ttl, -1);
    let gone = keep_alive(&mut net, 1, id).expect_err("expired");
    assert_eq!(gone, EngineError::LeaseNotFound);
}

#[test]
fn keep_alives_renew_every_group_and_a_revoke_ends_every_copy() {
    let mut net = Net::new(0);
    net.rounds(50);
    let id = grant(&mut net, 0, 1);
    for k in ["b", "i", "r"] {
        put_with(&mut net, 2, k, id);
    }
    // Three TTLs, renewed every third of one through a different member each time.
    for i in 0..9 {
        let r = keep_alive(&mut net, i % 3, id).expect("renewed");
        assert_eq!(
            r.body,
            ResponseBody::LeaseKeepAlive(LeaseInfo { id, ttl: 1 })
        );
        net.rounds(30);
    }
    assert_eq!(live_keys(&mut net), ["b", "i", "r"], "no copy ran out");
    net.call(1, Op::LeaseRevoke { id }).expect("revoke");
    assert!(live_keys(&mut net).is_empty());
    assert_eq!(copies(&net, id), [0, 0, 0]);
    let again = net.call(1, Op::LeaseRevoke { id }).expect_err("gone");
    assert_eq!(again, EngineError::LeaseNotFound);
}

#[test]
fn a_lease_goes_with_its_keys_through_a_split_and_a_merge() {
    let mut net = Net::new(0);
    net.rounds(50);
    let id = grant(&mut net, 0, 1);
    for k in ["h", "i", "m", "n"] {
        put_with(&mut net, 1, k, id);
    }
    net.call(0, split("l")).expect("split [g, p) at l");
    net.rounds(20);
    assert_eq!(copies(&net, id), [4, 4, 4], "the new group has a copy");
    for n in &net.nodes {
        let upper = n.layout().group_of(b"m");
        let keys = n.groups.get(&upper).and_then(|g| g.lease_keys(id));
        assert_eq!(keys, Some(vec![b"m".to_vec(), b"n".to_vec()]));
    }
    // Renewed in all four groups: the split-off copy does not run out on its own.
    for _ in 0..6 {
        keep_alive(&mut net, 2, id).expect("renewed");
        net.rounds(30);
    }
    assert_eq!(live_keys(&mut net), ["h", "i", "m", "n"]);
    net.call(1, merge("l")).expect("merge back");
    net.rounds(20);
    assert_eq!(copies(&net, id), [3, 3, 3]);
    let t = time_to_live(&mut net, 0, id);
    assert_eq!(
        t.keys.len(),
        4,
        "the merged copy holds both halves' keys: {t:?}"
    );
    net.call(2, Op::LeaseRevoke { id }).expect("revoke");
    assert!(live_keys(&mut net).is_empty());
}

/// Ticks left of lease `id` in the group of `key` on every member.
fn clocks_at(net: &Net, key: &[u8], id: LeaseId) -> Vec<u64> {
    let left = |n: &Node| {
        let g = n.groups.get(&n.layout().group_of(key))?;
        g.lease_clocks().into_iter().find(|(l, _)| *l == id)
    };
    net.nodes
        .iter()
        .map(|n| left(n).expect("a clock for the lease").1)
        .collect()
}

#[test]
fn a_split_off_group_goes_on_with_its_parents_lease_clocks() {
    let mut net = Net::new(0);
    net.rounds(50);
    let id = grant(&mut net, 0, 3);
    for k in ["h", "m"] {
        put_with(&mut net, 1, k, id);
    }
    // Half the TTL goes by unrenewed, then [g, p) splits at l: "m" goes to a new group.
    net.rounds(150);
    net.call(0, split("l")).expect("split [g, p) at l");
    net.rounds(5);
    let (parent, child) = (clocks_at(&net, b"h", id), clocks_at(&net, b"m", id));
    for (p, c) in parent.iter().zip(&child) {
        assert!(
            p.abs_diff(*c) <= 2,
            "the parent's clock goes on: {parent:?} {child:?}"
        );
        assert!(*c < 200, "not restarted (300 ticks): {child:?}");
    }
    // So both keys go when the TTL runs out, not "m" a split's worth of TTL later.
    let mut rounds = 0;
    while live_keys(&mut net).contains(&"h".to_string()) {
        assert!(rounds < 400, "h outlived its lease");
        net.rounds(1);
        rounds += 1;
    }
    net.rounds(10);
    assert!(live_keys(&mut net).is_empty(), "m went with h");
}

#[test]
fn a_grant_with_a_taken_id_is_refused_and_expiries_stay_internal() {
    let mut net = Net::new(0);
    net.rounds(50);
    let id = grant(&mut net, 0, 5);
    let taken = net
        .call(1, Op::LeaseGrant(LeaseGrantRequest { id, ttl: 5 }))
        .expect_err("taken");
    assert_eq!(taken, EngineError::LeaseExists);
    let mine = net
        .call(2, Op::LeaseGrant(LeaseGrantRequest { id: 77, ttl: 5 }))
        .expect("an id of the client's");
    assert_eq!(
        mine.body,
        ResponseBody::LeaseGrant(LeaseInfo { id: 77, ttl: 5 })
    );
    assert_eq!(copies(&net, 77), [3, 3, 3]);
    let forged = net
        .call(0, Op::LeaseExpire { id: 77, stamp: 0 })
        .expect_err("not a client's");
    assert!(matches!(forged, EngineError::InvalidRequest(_)), "{forged}");
}

#[test]
fn planted_keep_alive_of_one_group_lets_the_other_copies_run_out() {
    let mut net = net_with(Some(PlantedBug::PartitionLeaseRenewsOneGroup));
    net.rounds(50);
    let id = grant(&mut net, 0, 1);
    for k in ["b", "i", "r"] {
        put_with(&mut net, 0, k, id);
    }
    for _ in 0..6 {
        keep_alive(&mut net, 1, id).expect("acknowledged, wrongly");
        net.rounds(30);
    }
    assert_eq!(
        live_keys(&mut net),
        ["b"],
        "only the first group's copy was renewed"
    );
}

/// Revokes lease `id` in the group of `key` alone, through member 1's replica of it (not
/// fanned out: as a leader's expiry, or a revoke, can reach one group before another).
fn revoke_in_the_group_of(net: &mut Net, key: &str, id: LeaseId) {
    let upper = net.nodes[0].layout().group_of(key.as_bytes());
    let revoke = RequestId {
        client: ClientId(77),
        seq: 1,
    };
    let group = net.nodes[0]
        .groups
        .get_mut(&upper)
        .expect("the key's group");
    group.submit(ClientRequest {
        id: revoke,
        first_unacked: 1,
        op: Op::LeaseRevoke { id },
        consistency: Consistency::Linearizable,
    });
    net.wait(revoke).expect("revoked in that group");
}

/// Three members (with `bug`), a lease of 60 s on `keys`, and the range they share split at
/// `at`, between them.
fn leased_keys_split(bug: Option<PlantedBug>, keys: [&str; 2], at: &str) -> (Net, LeaseId) {
    let mut net = net_with(bug);
    net.rounds(50);
    let id = grant(&mut net, 0, 60);
    for k in keys {
        put_with(&mut net, 1, k, id);
    }
    net.call(0, split(at)).expect("split between the keys");
    net.rounds(20);
    (net, id)
}

/// A lease that ended in the upper group only (revoked there alone, as a leader's expiry or a
/// revoke can reach one group before another) while the lower group's copy lives on: the merge
/// of the two ends it in the merged group too, with its keys of the lower half — `planted`
/// keeps it instead, so a keep-alive after the merge succeeds although the lease's upper keys
/// are gone (what the lease checker calls an early expiry).
fn merge_after_an_upper_only_revoke(planted: bool) -> (Vec<String>, Result<Response, EngineError>) {
    let bug = planted.then_some(PlantedBug::PartitionMergeKeepsEndedLease);
    let (mut net, id) = leased_keys_split(bug, ["h", "n"], "l");
    revoke_in_the_group_of(&mut net, "n", id);
    assert_eq!(live_keys(&mut net), ["h"], "n went with the upper copy");
    net.call(1, merge("l")).expect("merge [l, p) back");
    net.rounds(20);
    (live_keys(&mut net), keep_alive(&mut net, 2, id))
}

#[test]
fn a_lease_the_absorbed_group_ended_ends_in_the_merged_group() {
    let (live, kept) = merge_after_an_upper_only_revoke(false);
    assert!(live.is_empty(), "h went with the ended lease: {live:?}");
    assert_eq!(kept, Err(EngineError::LeaseNotFound));
}

#[test]
fn planted_merge_keeping_an_ended_lease_renews_it_after_its_keys_went() {
    let (live, kept) = merge_after_an_upper_only_revoke(true);
    assert_eq!(live, ["h"], "the lower copy lives on");
    assert!(kept.is_ok(), "renewed though n went: {kept:?}");
}

/// A keep-alive acknowledged, then the lease ended in the first group's upper neighbour alone
/// and the two merged — ending the first group's copy too. The keep-alive retried with the
/// same request id at another member must find the lease gone; `planted` lets the first
/// group's client table answer the retry with the first attempt's "renewed".
fn keep_alive_retried_after_a_merge_ended_the_lease(
    planted: bool,
) -> Result<Response, EngineError> {
    let bug = planted.then_some(PlantedBug::PartitionKeepAliveOutgrownAnswer);
    let (mut net, id) = leased_keys_split(bug, ["a", "d"], "c");
    let first = net.submit(1, Op::LeaseKeepAlive { id }, Consistency::Linearizable);
    net.wait(first).expect("renewed");
    revoke_in_the_group_of(&mut net, "d", id);
    net.call(1, merge("c")).expect("merge [c, g) back");
    net.rounds(20);
    assert!(
        live_keys(&mut net).is_empty(),
        "a went with the ended lease"
    );
    net.nodes[2].submit(ClientRequest {
        id: first,
        first_unacked: first.seq,
        op: Op::LeaseKeepAlive { id },
        consistency: Consistency::Linearizable,
    });
    net.wait(first)
}

#[test]
fn a_keep_alive_retried_after_a_merge_ended_its_lease_finds_it_gone() {
    let retried = keep_alive_retried_after_a_merge_ended_the_lease(false);
    assert_eq!(retried, Err(EngineError::LeaseNotFound));
}

#[test]
fn planted_outgrown_answer_acknowledges_a_retried_keep_alive() {
    let retried = keep_alive_retried_after_a_merge_ended_the_lease(true);
    assert!(
        retried.is_ok(),
        "acknowledged from the client table: {retried:?}"
    );
}
