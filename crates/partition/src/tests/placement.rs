//! Placement on the in-memory network (`placement.rs`): with two replicas per group on three
//! members, a member relays requests for the group it does not host; a host whose CORRUPT
//! alarm is raised (`Engine::quarantine`) sends relays elsewhere, and the relaying member
//! passes it over from then on.

use super::*;

/// Groups at g and p; group 1 (`[g, p)`) on members 2 and 3, group 2 on 1 and 3.
fn placed() -> Net {
    Net::with(placing(2, None))
}

/// A member's configuration tweak: the directory on, groups on `replicas` members, `bug`
/// planted.
fn placing(replicas: usize, bug: Option<PlantedBug>) -> impl Fn(&mut EngineConfig) + Copy {
    move |c: &mut EngineConfig| {
        c.range_directory = true;
        c.partition_replicas = replicas;
        c.planted_bug = bug;
    }
}

fn value_of(r: Result<Response, EngineError>) -> String {
    match r.map(|r| r.body) {
        Ok(ResponseBody::Range(r)) => r
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .unwrap_or_default(),
        other => panic!("not a read's answer: {other:?}"),
    }
}

#[test]
fn a_member_relays_its_missing_group_and_a_quarantined_host_is_passed_over() {
    let mut net = placed();
    net.rounds(100);
    assert!(
        !net.nodes[0].groups.contains_key(&1),
        "member 1 hosts no group 1"
    );
    assert_eq!(net.nodes[0].hosts(1), [2, 3]);
    net.put(0, "h", "v1");
    let read = |net: &mut Net| value_of(net.call(0, Op::Range(RangeRequest::key("h"))));
    assert_eq!(read(&mut net), "v1", "relayed to a host");

    // Member 2 raises its alarm; member 1's next relay goes to it first (its hint), is sent
    // elsewhere, and is served by member 3.
    net.nodes[1].quarantine(true);
    net.nodes[0].relay.hint.insert(1, 2);
    assert_eq!(read(&mut net), "v1", "served by the other host");
    assert_eq!(net.nodes[0].relay.hint.get(&1), Some(&3), "the hint moved");
    assert!(
        net.nodes[0].relay.shunned.contains_key(&2),
        "member 2 shunned"
    );
    // Writes too, and the shunned host is not chosen again though it may be named leader.
    net.put(0, "h", "v2");
    assert_eq!(read(&mut net), "v2");
    assert!(
        net.nodes[1].relay.taken.is_empty(),
        "nothing taken at member 2"
    );

    // Disarmed, it serves relays again.
    net.nodes[1].quarantine(false);
    net.nodes[0].relay.shunned.clear();
    net.nodes[0].relay.hint.insert(1, 2);
    assert_eq!(read(&mut net), "v2");
    assert_eq!(
        net.nodes[0]
            .relay
            .hint
            .get(&1)
            .copied()
            .map(|h| h == 2 || h == 3),
        Some(true)
    );
}

fn move_op(at: &str, from: NodeId, to: NodeId) -> Op {
    Op::Move(synod_core::kv::MoveRequest {
        at: at.into(),
        from,
        to,
    })
}

/// `range move`: group 1 (`[g, p)`, on members 2 and 3) moves from member 2 to member 1,
/// asked at member 1, which does not host it yet (relayed to a host, which drives it). Member
/// 1 starts the group on its first message and takes its state; member 2 drops its replica
/// and notes the group as moved away, so that it does not start it again from its log after a
/// restart, while member 1 does; every member serves the key throughout. A retry of the
/// finished move (or any move whose outcome holds already) is answered with the group's
/// configuration; moves that cannot be are refused.
#[test]
fn a_group_moves_its_replica_from_one_member_to_another() {
    let mut net = placed();
    net.rounds(100);
    for i in 0..5 {
        net.put(0, &format!("h{i}"), "before");
    }
    let voters = |r: Result<Response, EngineError>| match r.map(|r| r.body) {
        Ok(ResponseBody::Membership(c)) => c.voters(),
        other => panic!("not a move's answer: {other:?}"),
    };
    assert_eq!(voters(net.call(0, move_op("h", 2, 1))), [1, 3]);
    net.rounds(50);
    assert!(net.nodes[0].groups.contains_key(&1), "member 1 hosts it");
    assert!(!net.nodes[1].groups.contains_key(&1), "member 2 left it");
    assert!(net.nodes[1].moves.away.contains(&1));
    for at in 0..3 {
        assert_eq!(
            net.nodes[at].hosts(1),
            [1, 3],
            "hosts as member {} knows them",
            at + 1
        );
        let read = value_of(net.call(at, Op::Range(RangeRequest::key("h3"))));
        assert_eq!(read, "before", "read at member {}", at + 1);
    }
    net.put(1, "h1", "after");
    assert_eq!(voters(net.call(2, move_op("h", 2, 1))), [1, 3], "a retry");
    // What a move asks for holds already: answered as done.
    assert_eq!(voters(net.call(1, move_op("h", 2, 3))), [1, 3]);
    for (op, why) in [
        (move_op("h", 2, 2), "does not host"),
        (move_op("h", 3, 1), "hosts group 1 already"),
        (move_op("a", 1, 2), "lives on every member"),
        (move_op("h", 3, 9), "not a voter of the cluster"),
    ] {
        let r = net.call(1, op);
        assert!(
            matches!(&r, Err(EngineError::InvalidRequest(m)) if m.contains(why)),
            "{why}: {r:?}"
        );
    }
    // Both restart from their logs: member 2 without the group, member 1 with it.
    for i in [0, 1] {
        let records = net.disks[i].clone();
        let mut c = config(i as u64 + 1, 0);
        placing(2, None)(&mut c);
        net.nodes[i] = Node::recover(c, records).expect("recover");
    }
    assert!(net.nodes[0].groups.contains_key(&1));
    assert!(!net.nodes[1].groups.contains_key(&1));
    net.rounds(100);
    for at in 0..3 {
        let read = value_of(net.call(at, Op::Range(RangeRequest::key("h1"))));
        assert_eq!(
            read,
            "after",
            "read at member {} after the restarts",
            at + 1
        );
    }
}

/// A member that leaves a group and comes back (the range moved away and back, in one boot)
/// starts the group without state, as any newcomer; its first state, which remembers the
/// commands it made during its earlier stay, moves its incarnation past theirs — or its new
/// commands would carry the same origins and be skipped as applied: no write taken at it
/// would be applied or answered (planted `rejoin-reuses-origins`, which this catches).
#[test]
fn a_member_that_rejoins_a_group_it_left_writes_through_it() {
    assert_eq!(rejoin_and_write(None), Ok(()));
    let planted = rejoin_and_write(Some(PlantedBug::RejoinReusesOrigins));
    assert!(
        planted.as_ref().is_err_and(|e| e.contains("Timeout")),
        "the planted bug is caught: {planted:?}"
    );
}

/// Group 1 moves from member 2 to 1 and back; then member 2 writes its keys again.
fn rejoin_and_write(bug: Option<PlantedBug>) -> Result<(), String> {
    let mut net = Net::with(placing(2, bug));
    net.rounds(100);
    for i in 0..5 {
        net.put(1, &format!("h{i}"), "first stay");
    }
    let done = |r: Result<Response, EngineError>| {
        assert!(
            matches!(r.as_ref().map(|r| &r.body), Ok(ResponseBody::Membership(_))),
            "a move's answer: {r:?}"
        );
    };
    done(net.call(0, move_op("h", 2, 1)));
    net.rounds(50);
    assert!(!net.nodes[1].groups.contains_key(&1), "member 2 left it");
    done(net.call(0, move_op("h", 1, 2)));
    net.rounds(50);
    assert!(net.nodes[1].groups.contains_key(&1), "member 2 is back");
    for i in 0..5 {
        let r = net.call(1, Op::Put(PutRequest::new(format!("h{i}"), "second stay")));
        r.map_err(|e| format!("put h{i} at member 2: {e:?}"))?;
    }
    for at in 0..3 {
        let read = value_of(net.call(at, Op::Range(RangeRequest::key("h4"))));
        assert_eq!(read, "second stay", "read at member {}", at + 1);
    }
    Ok(())
}

/// `member remove` on a placed cluster: decided in the first group and followed by the meta
/// group, while the placed groups keep their hosts — except that the leader of the group the
/// removed member hosted moves it off that member, to the member left (group 1, on 2 and 3,
/// ends on 1 and 3) with every key still served. Removing another member is refused: fewer
/// voters than a group's replicas would be left. (The removed member runs on meanwhile: a group
/// of two replicas, as here, cannot decide without it; placed groups have three or more.)
#[test]
fn a_removed_member_s_groups_move_to_the_members_left() {
    let mut net = placed();
    net.rounds(100);
    for i in 0..5 {
        net.put(1, &format!("h{i}"), "before");
    }
    let r = net.call(0, Op::Membership(MemberChange::Remove(2)));
    assert!(
        matches!(r.as_ref().map(|r| &r.body), Ok(ResponseBody::Membership(c)) if !c.contains(2)),
        "removed: {r:?}"
    );
    // Groups of 2 replicas cannot lose one: member 2 runs on until its group moved off it.
    net.rounds(300);
    net.down = Some(1);
    for at in [0, 2] {
        assert_eq!(net.nodes[at].hosts(1), [1, 3], "at member {}", at + 1);
        assert_eq!(net.nodes[at].hosts(2), [1, 3], "group 2 stays");
        let read = value_of(net.call(at, Op::Range(RangeRequest::key("h3"))));
        assert_eq!(read, "before", "read at member {}", at + 1);
        let meta = net.nodes[at].groups[&META_GROUP].status().configuration;
        assert_eq!(meta.voters(), [1, 3], "the meta group followed");
    }
    assert!(
        net.nodes[0].groups.contains_key(&1),
        "member 1 hosts group 1"
    );
    net.put(0, "h1", "after");
    let r = net.call(2, Op::Membership(MemberChange::Remove(3)));
    assert!(
        matches!(&r, Err(EngineError::InvalidRequest(m)) if m.contains("would leave 1 voters")),
        "{r:?}"
    );
}

/// A member that lost its disk after a group was moved to it has no record of that group: its
/// boot starts only the groups its placement gives it, and the group's next message starts a
/// replica as a move's newcomer would. But its first state already lists it as a voter, so it
/// was one before the loss and may have voted: it takes the state as a replica that lost its
/// storage, non-voting, also after a restart (planted `move-joiner-votes-afresh`: it votes
/// afresh, as if it had never promised anything there).
#[test]
fn a_member_that_lost_its_disk_after_a_move_to_it_does_not_vote_afresh() {
    let amnesic = "non-voting (lost storage)".to_string();
    assert_eq!(
        roles_after_losing_the_disk(None),
        (amnesic.clone(), vec![1], amnesic.clone()),
        "member 1's role, the non-voting voters member 3 heard of, member 1's role restarted"
    );
    let (planted, _, _) = roles_after_losing_the_disk(Some(PlantedBug::MoveJoinerVotesAfresh));
    assert!(
        planted == "leader" || planted == "follower",
        "the planted bug is caught: {planted}"
    );
}

/// Three members, groups on two each; group 1 moved from member 2 to member 1 (voters 1, 3).
fn moved_to_member_1(tweak: impl Fn(&mut EngineConfig) + Copy) -> Net {
    let mut net = Net::with(tweak);
    net.rounds(100);
    net.put(1, "h1", "before");
    let r = net.call(0, move_op("h", 2, 1));
    assert!(
        matches!(r.as_ref().map(|r| &r.body), Ok(ResponseBody::Membership(c)) if c.voters() == [1, 3]),
        "moved: {r:?}"
    );
    net.rounds(50);
    net
}

/// Member 1 starts again from `records` (none: a lost disk), not as a first boot.
fn restart_member_1(
    net: &mut Net,
    tweak: impl Fn(&mut EngineConfig),
    records: Vec<GroupRecord<<Group as Engine>::Record>>,
) {
    let mut c = config(1, 0);
    tweak(&mut c);
    c.first_boot = false;
    net.nodes[0] = Node::recover(c, records).expect("recover");
}

/// Group 1 moves from member 2 to member 1, member 1 loses its disk; the role of member 1's
/// replica of group 1 once it has been sent the group's state, the voters member 3's replica
/// heard cannot vote, and member 1's role after a restart from the records it wrote since.
fn roles_after_losing_the_disk(bug: Option<PlantedBug>) -> (String, Vec<NodeId>, String) {
    let tweak = placing(2, bug);
    let mut net = moved_to_member_1(tweak);
    let lost = |net: &mut Net, records| restart_member_1(net, tweak, records);
    net.disks[0].clear();
    lost(&mut net, Vec::new());
    assert!(
        !net.nodes[0].groups.contains_key(&1),
        "no record of group 1"
    );
    net.rounds(100);
    let role = |net: &Net| net.nodes[0].groups.get(&1).map(|g| g.status().role);
    let first = role(&net).expect("member 1 started group 1 again on its messages");
    let heard = (net.nodes[2].groups.get(&1)).map_or(Vec::new(), |g| g.non_voting_voters());
    let records = net.disks[0].clone();
    lost(&mut net, records);
    let after = role(&net).expect("member 1 restarts group 1 from its records");
    (first, heard, after)
}

/// Member 1 loses its disk after a move of group 1 to it, starts the group again on its
/// messages without state, and restarts once more before the state came: it is still a
/// newcomer (`GroupRecord::Joining`), so the state, which lists it as a voter of a stay it
/// forgot, makes it a voter that cannot vote — not one that votes afresh, as it did when the
/// restart lost the flags the replica was started with.
#[test]
fn a_newcomer_restarted_before_its_state_came_is_still_one() {
    let tweak = placing(2, None);
    let mut net = moved_to_member_1(tweak);
    let restart = |net: &mut Net, records| restart_member_1(net, tweak, records);
    net.disks[0].clear();
    restart(&mut net, Vec::new());
    // Group 1's state does not reach member 1 for now; its other messages do.
    net.tap = Some(|_, to, g, m| match (to, g, m) {
        (1, 1, synod_replica::Message::SnapshotChunk { .. }) => Tap::Hold,
        _ => Tap::Pass,
    });
    net.rounds(30);
    let role = |net: &Net| net.nodes[0].groups.get(&1).map(|g| g.status().role);
    assert_eq!(
        role(&net).as_deref(),
        Some("joining"),
        "started on its messages"
    );
    let records = net.disks[0].clone();
    restart(&mut net, records);
    assert_eq!(
        role(&net).as_deref(),
        Some("joining"),
        "restarted from its records"
    );
    net.tap = None;
    net.tapped.clear();
    net.rounds(100);
    assert_eq!(
        role(&net).as_deref(),
        Some("non-voting (lost storage)"),
        "its first state lists it as a voter of a stay it forgot"
    );
    // Its state came: no longer joining, in the records too.
    assert!(!net.nodes[0].moves.joining.contains_key(&1));
    let records = net.disks[0].clone();
    restart(&mut net, records);
    assert!(!net.nodes[0].moves.joining.contains_key(&1), "not resumed");
    assert_eq!(
        role(&net).as_deref(),
        Some("non-voting (lost storage)"),
        "restarted with its state"
    );
}

/// A member that lost its disk repairs its groups (in their first configuration, by the
/// protocol) under an incarnation drawn above the amnesic base, and its commands carry it.
/// Moved off a group and back, it joins as a newcomer, and its first state remembers those
/// origins: counting past them would make the newcomer amnesic too, and non-voting once
/// promoted. It passes over them instead: back in the group, it votes, and its writes apply.
#[test]
fn a_member_that_lost_its_disk_votes_again_in_a_group_moved_away_and_back() {
    let tweak = placing(2, None);
    let mut net = Net::with(tweak);
    net.rounds(100);
    // Member 2 (group 1 is on 2 and 3) loses its disk and repairs.
    let mut c = config(2, 0);
    tweak(&mut c);
    c.first_boot = false;
    net.disks[1].clear();
    net.nodes[1] = Node::recover(c, Vec::new()).expect("recover");
    net.rounds(200);
    for i in 0..3 {
        net.put(1, &format!("h{i}"), "after the repair");
    }
    let moved = |r: Result<Response, EngineError>| {
        assert!(
            matches!(r.as_ref().map(|r| &r.body), Ok(ResponseBody::Membership(_))),
            "a move's answer: {r:?}"
        );
    };
    moved(net.call(0, move_op("h", 2, 1)));
    net.rounds(50);
    assert!(!net.nodes[1].groups.contains_key(&1), "member 2 left it");
    moved(net.call(0, move_op("h", 1, 2)));
    net.rounds(50);
    let role = net.nodes[1].groups.get(&1).map(|g| g.status().role);
    assert!(
        matches!(role.as_deref(), Some("leader" | "follower")),
        "member 2 votes in group 1 again: {role:?}"
    );
    net.put(1, "h0", "back");
    let read = value_of(net.call(2, Op::Range(RangeRequest::key("h0"))));
    assert_eq!(read, "back");
}

/// A member that rejoins a group it left takes no state from before it left: such a state
/// lists it as a voter of a configuration it may have voted in during its earlier stay, and
/// having forgotten those votes it could make up a quorum of that old configuration with a
/// stale member and decide again what was decided. Here group 1 moves from member 2 to 1 (the
/// state member 1 is sent then, listing member 2 as a voter, is kept) and back; before member
/// 2's rejoined replica hears from its group, that old state reaches it — as a member still in
/// the old configuration would send it. It is refused; the rejoin then completes (planted
/// `rejoin-takes-stale-state`: taken — since 2026-12-07 random schedules no longer reach it,
/// so this test is its catch).
#[test]
fn a_member_that_rejoins_a_group_refuses_a_state_from_before_it_left() {
    assert_eq!(stale_state_taken(None), Vec::<NodeId>::new());
    let planted = stale_state_taken(Some(PlantedBug::RejoinTakesStaleState));
    assert!(
        planted.contains(&2),
        "the planted bug is caught: {planted:?}"
    );
}

/// The voters of member 2's replica of group 1 right after the old state reached it (none:
/// refused, and then the move back completed and member 2 serves the group's keys).
fn stale_state_taken(bug: Option<PlantedBug>) -> Vec<NodeId> {
    let mut net = Net::with(placing(2, bug));
    net.rounds(100);
    for i in 0..5 {
        net.put(1, &format!("h{i}"), "first stay");
    }
    let moved = |r: Result<Response, EngineError>| {
        assert!(
            matches!(r.as_ref().map(|r| &r.body), Ok(ResponseBody::Membership(_))),
            "a move's answer: {r:?}"
        );
    };
    net.tap = Some(|_, to, g, m| {
        let chunk = matches!(m, synod_replica::Message::SnapshotChunk { .. });
        match to == 1 && g == 1 && chunk {
            true => Tap::Copy,
            false => Tap::Pass,
        }
    });
    moved(net.call(0, move_op("h", 2, 1)));
    net.rounds(50);
    // The first state member 1 was sent: from before its promotion, member 2 a voter.
    let transfer = |m: &GroupMsg| match m {
        synod_replica::Message::SnapshotChunk {
            epoch,
            snapshot_idx,
            ..
        } => Some((*epoch, *snapshot_idx)),
        _ => None,
    };
    let mut old = std::mem::take(&mut net.tapped);
    let first = old.first().and_then(|(_, _, _, m)| transfer(m));
    assert!(first.is_some(), "member 1 was sent group 1's state");
    old.retain(|(_, _, _, m)| transfer(m) == first);
    assert!(!net.nodes[1].groups.contains_key(&1), "member 2 left it");
    // Back to member 2, whose replica hears nothing from group 1 for now.
    net.tap = Some(|_, to, g, _| match to == 2 && g == 1 {
        true => Tap::Hold,
        false => Tap::Pass,
    });
    let back = net.submit(0, move_op("h", 1, 2), Consistency::Linearizable);
    net.rounds(20);
    assert!(
        net.nodes[1].may_join(1),
        "member 2 learned it is added again"
    );
    for (_, _, g, m) in old {
        let message = GroupMessage {
            parts: vec![(g, m)],
            relayed: Vec::new(),
            top: 0,
        };
        net.nodes[1].receive(3, message);
    }
    net.rounds(1);
    let taken = net.nodes[1]
        .groups
        .get(&1)
        .map(|e| e.status().configuration);
    let voters = taken.map(|c| c.voters()).unwrap_or_default();
    if !voters.is_empty() {
        // Taken: the rejoined member counts as a voter of the old configuration (and, as it
        // left no record of its earlier votes, as one that lost its storage).
        return voters;
    }
    net.tap = None;
    net.tapped.clear();
    moved(net.wait(back));
    net.put(1, "h1", "second stay");
    for at in 0..3 {
        let read = value_of(net.call(at, Op::Range(RangeRequest::key("h1"))));
        assert_eq!(read, "second stay", "read at member {}", at + 1);
    }
    voters
}

/// A member that lost its disk after its group's first configuration cannot vote in the
/// group (it may have voted there before): its replica is a voter without the means to vote.
/// It takes no requests of its own for that group — they go to the group's other hosts and
/// are answered at once — and the group's leader moves the group off it (planted
/// `non-voting-voter-serves`: it takes them, and they wait).
#[test]
fn a_voter_that_cannot_vote_sends_requests_to_the_other_hosts_until_replaced() {
    assert_eq!(non_voting_host(None), Ok(()));
    let planted = non_voting_host(Some(PlantedBug::NonVotingVoterServes));
    assert!(planted.is_err(), "the planted bug is caught: {planted:?}");
}

/// Five members, groups of 3: group 1 (`[g, p)`) on members 2, 3, 4, moved from 4 to 5, then
/// member 2 loses its disk and is asked to write a key of group 1.
fn non_voting_host(bug: Option<PlantedBug>) -> Result<(), String> {
    let tweak = placing(3, bug);
    let mut net = Net::sized(5, tweak);
    net.rounds(100);
    assert_eq!(net.nodes[0].hosts(1), [2, 3, 4]);
    net.put(1, "h1", "before");
    let r = net.call(0, move_op("h", 4, 5));
    assert!(
        matches!(r.as_ref().map(|r| &r.body), Ok(ResponseBody::Membership(c)) if c.voters() == [2, 3, 5]),
        "moved: {r:?}"
    );
    net.rounds(50);
    let mut c = config_of(2, 5);
    tweak(&mut c);
    c.first_boot = false;
    net.disks[1].clear();
    net.nodes[1] = Node::recover(c, Vec::new()).expect("recover");
    let role = |net: &Net| net.nodes[1].groups.get(&1).map(|g| g.status().role);
    for _ in 0..20 {
        net.rounds(1);
        if role(&net).as_deref() == Some("non-voting (lost storage)") {
            break;
        }
    }
    assert_eq!(role(&net).as_deref(), Some("non-voting (lost storage)"));
    // At once, not after its group moved off it: the other hosts answer.
    let put = Op::Put(PutRequest::new("h2", "while non-voting"));
    let id = net.submit(1, put, Consistency::Linearizable);
    let mut answered = None;
    for _ in 0..20 {
        net.round();
        if let Some(i) = net.replies.iter().position(|r| r.id == id) {
            answered = Some(net.replies.remove(i).result);
            break;
        }
    }
    if !matches!(answered, Some(Ok(_))) {
        return Err(format!("not answered within 20 rounds: {answered:?}"));
    }
    net.rounds(300);
    let hosts = net.nodes[0].hosts(1);
    assert!(
        !hosts.contains(&2) && hosts.len() == 3,
        "moved off member 2: {hosts:?}"
    );
    for at in 0..5 {
        let read = value_of(net.call(at, Op::Range(RangeRequest::key("h2"))));
        assert_eq!(read, "while non-voting", "read at member {}", at + 1);
    }
    Ok(())
}

/// The groups of a removed member move to the member hosting the fewest groups; when that
/// one is down, the move times out, the learner it left is dropped and the next move passes
/// that member over for a while — to the next least loaded member — instead of waiting for
/// the dead member again after every timeout (planted `move-retries-failed-target`).
#[test]
fn a_removed_member_s_groups_pass_over_a_target_that_did_not_take_them() {
    assert_eq!(evacuate_past_a_dead_target(None), Ok(()));
    let planted = evacuate_past_a_dead_target(Some(PlantedBug::MoveRetriesFailedTarget));
    assert!(planted.is_err(), "the planted bug is caught: {planted:?}");
}

/// Five members, groups of 3: group 1 on 2, 3, 4 and group 2 on 3, 4, 5; member 1 (hosting
/// neither) is cut off, and member 4 is removed.
fn evacuate_past_a_dead_target(bug: Option<PlantedBug>) -> Result<(), String> {
    let tweak = placing(3, bug);
    let mut net = Net::sized(5, tweak);
    net.rounds(100);
    let hosts = (net.nodes[1].hosts(1), net.nodes[1].hosts(2));
    assert_eq!(hosts, (vec![2, 3, 4], vec![3, 4, 5]));
    net.put(1, "h1", "before");
    net.down = Some(0);
    let remove = || Op::Membership(MemberChange::Remove(4));
    let first = net.submit(1, remove(), Consistency::Linearizable);
    // One move timeout to member 1 per group (6 request timeouts), then the next target.
    net.rounds(2500);
    let first = net
        .replies
        .iter()
        .find(|r| r.id == first)
        .map(|r| &r.result);
    assert!(
        matches!(first, Some(Err(EngineError::Timeout))),
        "{first:?}"
    );
    for (g, at) in [(1, 1), (2, 2)] {
        let c = net.nodes[at].groups[&g].status().configuration;
        if (c.voters(), c.learners()) != (vec![2, 3, 5], vec![]) {
            return Err(format!("group {g}: {:?} {:?}", c.voters(), c.learners()));
        }
    }
    // The operator's retry finds the removal done, and every group off member 4.
    let retry = net.call(1, remove());
    assert!(
        matches!(&retry, Err(EngineError::Membership(m)) if m.contains("member not found")),
        "{retry:?}"
    );
    net.put(2, "h1", "after");
    for at in [1, 2, 4] {
        let read = value_of(net.call(at, Op::Range(RangeRequest::key("h1"))));
        assert_eq!(read, "after", "read at member {}", at + 1);
    }
    Ok(())
}

/// A delete over every group from a member hosting two of them: its part for the third is
/// relayed (under the relaying member's own id) and the answers add up.
#[test]
fn a_delete_over_several_groups_relays_the_part_a_member_does_not_host() {
    let mut net = placed();
    net.rounds(100);
    assert!(
        !net.nodes[0].groups.contains_key(&1),
        "member 1 hosts no group 1"
    );
    for k in ["a", "h", "i", "q"] {
        net.put(0, k, "v");
    }
    let del = Op::DeleteRange(synod_core::kv::DeleteRangeRequest {
        key: b"a".to_vec(),
        range_end: vec![0],
        prev_kv: true,
    });
    let r = net.call(0, del).expect("a delete over three groups");
    let ResponseBody::DeleteRange(d) = r.body else {
        panic!("{:?}", r.body)
    };
    let keys: Vec<&[u8]> = d.prev_kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!((d.deleted, keys), (4, vec![&b"a"[..], b"h", b"i", b"q"]));
    for k in ["a", "h", "i", "q"] {
        let read = net.call(1, Op::Range(RangeRequest::key(k)));
        assert_eq!(value_of(read), "", "{k} deleted");
    }
}

/// Placed splits (`learned.rs`): member 1 hosts neither group 1 (`[g, p)`, on 2 and 3) nor the
/// groups split off it. A split asked at member 1 is relayed to a host and made there, on the
/// same hosts; member 1 learns the new group from the answers to its relays (here, the put the
/// split makes a wrong group) and writes and reads through it. Then group 1's leader splits its
/// range again by itself past `auto_split_keys`, and every member learns that too (from the
/// directory, without relaying anything there). The first range's split and any merge are
/// refused by name.
#[test]
fn a_placed_group_splits_on_command_and_by_itself_and_every_member_learns_it() {
    let tweak = |c: &mut EngineConfig| {
        placing(2, None)(c);
        c.auto_split_keys = 3;
    };
    let mut net = Net::with(tweak);
    net.rounds(100);
    net.put(0, "h", "v1");
    let r = net.call(0, split("k"));
    assert!(r.is_ok(), "the split at a member hosting no half: {r:?}");
    let child = (net.nodes[1].layout().entries().iter())
        .find(|(s, _)| s.as_slice() == b"k")
        .map(|(_, g)| *g)
        .expect("member 2 made the new group");
    assert!(net.nodes[1].groups.contains_key(&child));
    assert!(net.nodes[2].groups.contains_key(&child));
    assert!(!net.nodes[0].groups.contains_key(&child), "not on member 1");
    // The split's own answer (relayed from group 1) named it: member 1 routes "m" there.
    net.put(0, "m", "v2");
    assert_eq!(net.nodes[0].layout().group_of(b"m"), child, "learned");
    assert_eq!(net.nodes[0].hosts(child), [2, 3]);
    let read = |net: &mut Net, k: &str| value_of(net.call(0, Op::Range(RangeRequest::key(k))));
    assert_eq!(read(&mut net, "m"), "v2");
    assert_eq!(read(&mut net, "h"), "v1");

    // Group 1 ([g, k)) grows past 3 keys and splits itself; member 1 learns it from the
    // directory.
    for k in ["g1", "h", "i", "j"] {
        net.put(1, k, "v3");
    }
    let split_again = (0..30).find_map(|_| {
        net.rounds(50);
        let l = net.nodes[0].layout();
        (l.groups() > 4).then(|| l.entries().to_vec())
    });
    let entries = split_again.expect("group 1 split itself, and member 1 knows");
    assert_eq!(entries.len(), 5, "{entries:?}");
    for k in ["g1", "h", "i", "j", "m"] {
        assert!(!read(&mut net, k).is_empty(), "{k} at member 1");
    }

    let first = net.call(0, split("b"));
    let why = format!("{first:?}");
    assert!(why.contains("the first range stays whole"), "{why}");
    let merged = net.call(0, merge("k"));
    assert!(
        format!("{merged:?}").contains("merging ranges"),
        "{merged:?}"
    );
}
