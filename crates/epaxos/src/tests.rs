//! Scripted scenarios against the protocol alone: each test delivers exactly the messages it
//! names, so the rare interleavings that break a planted bug (two recoveries with different
//! accepted values; a fast commit seen by too few acceptors) happen every time.

use super::*;
use crate::types::Ballot;
use synod_core::kv::{Op, PutRequest, RangeRequest};
use synod_core::{ClientId, Origin, RequestId};

/// No snapshot transfers in these tests.
struct NoTransfers;

impl TransferStatus<u64> for NoTransfers {
    fn sending_to(&self, _: NodeId, _: u64) -> bool {
        false
    }
    fn receiving_from(&self, _: NodeId, _: u64) -> bool {
        false
    }
}

/// N replicas and the messages in flight, delivered only when a test says so.
struct Net {
    r: Vec<EPaxos>,
    flight: Vec<(NodeId, NodeId, Message)>,
}

impl Net {
    fn new(n: u64, bug: Option<PlantedBug>) -> Net {
        let members: Vec<NodeId> = (1..=n).collect();
        let r = members
            .iter()
            .map(|&id| {
                let mut c = EngineConfig::new(id, members.clone(), 7);
                c.planted_bug = bug;
                EPaxos::recover(&c, None, &[], &mut Out::default()).expect("recover")
            })
            .collect();
        Net {
            r,
            flight: Vec::new(),
        }
    }

    fn node(&mut self, id: NodeId) -> &mut EPaxos {
        &mut self.r[(id - 1) as usize]
    }

    fn collect(&mut self, from: NodeId, out: Out) {
        for (to, m) in out.early.into_iter().chain(out.messages) {
            self.flight.push((from, to, m));
        }
    }

    fn put(&mut self, at: NodeId, key: &str, seq: u64) {
        let c = Command {
            id: RequestId {
                client: ClientId(100 + at),
                seq,
            },
            first_unacked: seq,
            op: Op::Put(PutRequest::new(key.as_bytes().to_vec(), b"v".to_vec())),
            origin: Origin {
                node: at,
                incarnation: 1,
                seq,
            },
        };
        let mut out = Out::default();
        let node = self.node(at);
        assert!(node.propose(c));
        node.flush(&mut out);
        self.collect(at, out);
    }

    /// Delivers every message in flight for which `pick(from, to, msg)` holds (and drops
    /// those for which `drop` holds); the rest stay in flight. Repeats until nothing moves.
    fn deliver(&mut self, pick: impl Fn(NodeId, NodeId, &Message) -> bool) {
        loop {
            let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flight)
                .into_iter()
                .partition(|(f, t, m)| pick(*f, *t, m));
            self.flight = later;
            if now.is_empty() {
                return;
            }
            for (from, to, m) in now {
                let mut out = Out::default();
                let node = self.node(to);
                node.receive(from, m, &NoTransfers, &mut out);
                node.flush(&mut out);
                self.collect(to, out);
            }
        }
    }

    fn drop_all(&mut self) {
        self.flight.clear();
    }

    fn recover_at(&mut self, at: NodeId, id: InstanceId) {
        let mut out = Out::default();
        let node = self.node(at);
        node.prepare(id, &mut out);
        node.flush(&mut out);
        self.collect(at, out);
    }

    fn committed(&self, at: NodeId, id: InstanceId) -> Option<(Vec<RequestId>, Attrs)> {
        let i = self.r[(at - 1) as usize].instance(id)?;
        (i.status == Status::Committed)
            .then(|| (i.cmds.iter().map(|c| c.id).collect(), i.attrs.clone()))
    }
}

fn inst(replica: NodeId, slot: u64) -> InstanceId {
    InstanceId { replica, slot }
}

fn is_kind(m: &Message, kind: &str) -> bool {
    let name = match m {
        Message::PreAccept { .. } => "PreAccept",
        Message::PreAcceptReply { .. } => "PreAcceptReply",
        Message::Accept { .. } => "Accept",
        Message::AcceptReply { .. } => "AcceptReply",
        Message::Commit { .. } => "Commit",
        Message::Prepare { .. } => "Prepare",
        Message::PrepareReply { .. } => "PrepareReply",
        Message::Fetch { .. } => "Fetch",
        Message::Executed { .. } => "Executed",
    };
    name == kind
}

#[test]
fn fast_path_commits_in_one_round_trip_without_conflicts() {
    let mut net = Net::new(3, None);
    net.put(1, "a", 1);
    net.deliver(|_, _, _| true);
    let (cmds, attrs) = net
        .committed(1, inst(1, 1))
        .expect("committed at the leader");
    assert_eq!(cmds.len(), 1);
    assert_eq!(attrs.deps, vec![0, 0, 0]);
    assert_eq!(net.r[0].fast_commits, 1);
    for n in 2..=3 {
        assert_eq!(
            net.committed(n, inst(1, 1)).map(|c| c.1),
            Some(attrs.clone())
        );
    }
    // Executed everywhere: the replica layer sees one entry in each execution order.
    for r in &net.r {
        assert_eq!(r.log_len(), 1);
    }
}

#[test]
fn conflicting_commands_take_the_slow_path_and_execute_in_the_same_order() {
    let mut net = Net::new(3, None);
    // Two concurrent writes of one key, each leader seeing the other's PreAccept first at
    // one acceptor: the attributes differ, so both go through Accept.
    net.put(1, "k", 1);
    net.put(2, "k", 1);
    net.deliver(|_, _, _| true);
    assert!(net.committed(1, inst(1, 1)).is_some() && net.committed(1, inst(2, 1)).is_some());
    let order = |r: &EPaxos| -> Vec<RequestId> { r.log.iter().map(|c| c.id).collect() };
    let first = order(&net.r[0]);
    assert_eq!(first.len(), 2);
    for r in &net.r[1..] {
        assert_eq!(
            order(r),
            first,
            "interfering commands execute in one order everywhere"
        );
    }
}

#[test]
fn reads_wait_for_the_writes_they_depend_on() {
    let mut net = Net::new(3, None);
    net.put(1, "k", 1);
    // The write is pre-accepted by 2 only, and node 1's commit never reaches 3.
    net.deliver(|_, t, m| t != 3 && !is_kind(m, "Commit"));
    net.drop_all();
    let read = Command {
        id: RequestId {
            client: ClientId(9),
            seq: 1,
        },
        first_unacked: 1,
        op: Op::Range(RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        }),
        origin: Origin {
            node: 3,
            incarnation: 1,
            seq: 1,
        },
    };
    let mut out = Out::default();
    assert!(net.node(3).propose(read));
    net.node(3).flush(&mut out);
    net.collect(3, out);
    net.deliver(|_, _, m| !is_kind(m, "Fetch"));
    // Node 3's read depends on 1.1 (node 2 told it), which it has not seen committed: it
    // must not execute the read yet.
    assert!(net.committed(3, inst(3, 1)).is_some());
    assert_eq!(
        net.r[2].log_len(),
        0,
        "the read waits for the write it depends on"
    );
    // Catch-up brings the commit; then both execute, the write first.
    let mut out = Out::default();
    net.node(3).fetch_missing(&mut out);
    net.collect(3, out);
    net.deliver(|_, _, _| true);
    let order: Vec<u64> = net.r[2].log.iter().map(|c| c.id.client.0).collect();
    assert_eq!(order, vec![101, 9]);
}

/// Sutra's scenario, made deterministic (5 replicas): the original leader's slow-path Accept
/// (value X) reaches one acceptor only; a first recovery chooses and commits another value Y
/// in a higher ballot; a second recovery then sees X (older vbal) and Y (newer vbal), every
/// reply carrying the same promised ballot. Ordered by vbal it must finish with Y.
fn two_recoveries(bug: Option<PlantedBug>) -> (Option<Attrs>, Option<Attrs>) {
    let mut net = Net::new(5, bug);
    // Node 2 knows an interfering instance 2.1 nobody else has seen.
    net.put(2, "k", 1);
    net.drop_all();
    // 1.1: pre-accepted by everyone; 2 adds 2.1 to the deps, so the leader goes slow.
    net.put(1, "k", 1);
    net.deliver(|f, _, m| f == 1 && is_kind(m, "PreAccept"));
    net.deliver(|_, t, m| t == 1 && is_kind(m, "PreAcceptReply"));
    // The leader's Accept (X: deps with 2.1) reaches node 5 only; the leader then fails.
    net.deliver(|f, t, m| f == 1 && t == 5 && is_kind(m, "Accept"));
    net.drop_all();
    // Recovery 1 by node 4 with {4, 3, 2}: no accepted reply; 3 and 4 pre-accepted the
    // leader's attributes unchanged (F = 2 votes): Accept them (Y: no deps) and commit.
    net.recover_at(4, inst(1, 1));
    net.deliver(|f, t, m| {
        (f == 4 && (t == 2 || t == 3) && !is_kind(m, "Commit"))
            || (t == 4 && (is_kind(m, "PrepareReply") || is_kind(m, "AcceptReply")))
    });
    let y = net.committed(4, inst(1, 1)).map(|c| c.1);
    assert!(y.is_some(), "recovery 1 commits");
    net.drop_all();
    // Recovery 2 by node 3 with {3, 2, 5}: 2 and 3 accepted Y in (1, 4), 5 accepted X in the
    // leader's ballot; all of them now promised (2, 3).
    net.recover_at(3, inst(1, 1));
    net.deliver(|f, t, m| {
        (f == 3 && (t == 2 || t == 5))
            || (t == 3 && (is_kind(m, "PrepareReply") || is_kind(m, "AcceptReply")))
    });
    let second = net.committed(3, inst(1, 1)).map(|c| c.1);
    assert!(second.is_some(), "recovery 2 commits");
    assert_eq!(net.r[2].instance(inst(1, 1)).map(|i| i.bal.n), Some(2));
    assert!(Ballot::initial(inst(1, 1)) < Ballot { n: 1, node: 4 });
    (y, second)
}

#[test]
fn recovery_orders_replies_by_vbal() {
    let (first, second) = two_recoveries(None);
    assert_eq!(
        first, second,
        "both recoveries finish with the value chosen first"
    );
}

#[test]
fn planted_recovery_by_ballot_is_caught() {
    let (first, second) = two_recoveries(Some(PlantedBug::EpaxosRecoveryByBallot));
    assert_ne!(
        first, second,
        "ordering by the promised ballot revives the stale value"
    );
}

/// 5 replicas: the leader hears identical PreAccept replies from two acceptors only, then
/// fails; a recovery whose majority holds one of them (and a replica that adds a dependency)
/// must not contradict what the leader did.
fn fast_quorum_scenario(bug: Option<PlantedBug>) -> (Option<Attrs>, Option<Attrs>) {
    let mut net = Net::new(5, bug);
    net.put(4, "k", 1);
    net.drop_all();
    net.put(1, "k", 1);
    // PreAccept reaches 2, 3 and 4; only 2's and 3's replies (identical, no deps) arrive.
    net.deliver(|f, t, m| f == 1 && t != 5 && is_kind(m, "PreAccept"));
    net.deliver(|f, t, m| t == 1 && (f == 2 || f == 3) && is_kind(m, "PreAcceptReply"));
    let at_leader = net.committed(1, inst(1, 1)).map(|c| c.1);
    net.drop_all();
    // Recovery by 4 with {4, 5, 2}: one unchanged vote (2), 4 added its own 4.1.
    net.recover_at(4, inst(1, 1));
    net.deliver(|f, t, _| (f == 4 && (t == 2 || t == 5)) || (t == 4 && f != 1 && f != 3));
    let recovered = net.committed(4, inst(1, 1)).map(|c| c.1);
    assert!(recovered.is_some(), "the recovery commits");
    (at_leader, recovered)
}

#[test]
fn a_fast_commit_needs_the_whole_fast_quorum() {
    let (at_leader, _) = fast_quorum_scenario(None);
    assert_eq!(
        at_leader, None,
        "3 of 5 is not the basic protocol's fast quorum (2F = 4)"
    );
}

#[test]
fn planted_fast_quorum_too_small_is_caught() {
    let (at_leader, recovered) = fast_quorum_scenario(Some(PlantedBug::EpaxosFastQuorumTooSmall));
    assert!(at_leader.is_some(), "the buggy leader commits on 3 of 5");
    assert_ne!(at_leader, recovered, "and recovery commits something else");
}

#[test]
fn malformed_frames_from_a_member_are_dropped_not_fatal() {
    let mut net = Net::new(3, None);
    let bad = Message::Accept {
        id: inst(2, 1),
        bal: Ballot::initial(inst(2, 1)),
        cmds: Vec::new(),
        attrs: Attrs {
            seq: 1,
            deps: vec![7; 9],
        },
    };
    let mut out = Out::default();
    net.node(1).receive(2, bad, &NoTransfers, &mut out);
    net.node(1).receive(
        2,
        Message::Executed {
            upto: vec![1],
            reach: 3,
        },
        &NoTransfers,
        &mut out,
    );
    net.node(1).flush(&mut out);
    assert!(out.messages.is_empty() && out.records.is_empty());
    assert!(net.r[0].instance(inst(2, 1)).is_none());
    // And the member still works.
    net.put(1, "a", 1);
    net.deliver(|_, _, _| true);
    assert!(net.committed(2, inst(1, 1)).is_some());
}
