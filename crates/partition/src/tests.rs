//! Tests of the partitioned engine on a tiny lossless in-memory network: routing, merged
//! range reads, spread leaders, and node-wide checkpoints that recover every group. (Faults,
//! crashes and the linearizability checker are the simulator's: `synod sim --engine
//! omnipaxos-groups`.)

use super::*;
use synod_core::kv::{Op, PutRequest, RangeRequest, SortOrder};
use synod_core::{ClientId, Consistency};

type Group = synod_replica::Replica<synod_omnipaxos::OmniPaxos>;
type Node = Partitioned<Group>;

struct Net {
    nodes: Vec<Node>,
    /// A node cut off from the others (its messages, both ways, are lost).
    down: Option<usize>,
    /// Each node's durable records, compacted at the last checkpoint as storage does.
    disks: Vec<Vec<GroupRecord<<Group as Engine>::Record>>>,
    replies: Vec<ClientReply>,
    seq: u64,
    /// What happens to each group's message on its way (`Tap`); none: every one passes.
    tap: Option<TapFn>,
    /// Messages the tap copied or held: (from, to, group, message).
    tapped: Vec<(NodeId, NodeId, GroupId, GroupMsg)>,
    /// Checked on every reply as the member that gives it emits it, before anything else
    /// happens; what it returns is kept in `audit_failures`.
    audit: Option<fn(&Node, &ClientReply) -> Option<String>>,
    audit_failures: Vec<String>,
}

type GroupMsg = <Group as Engine>::Message;
type TapFn = fn(NodeId, NodeId, GroupId, &GroupMsg) -> Tap;

/// What the network does with one group's message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tap {
    Pass,
    /// Delivered, and a copy kept in `Net::tapped`.
    Copy,
    /// Not delivered: kept in `Net::tapped`.
    Hold,
}

fn config(id: NodeId, snapshot_entries: u64) -> EngineConfig {
    let mut c = config_of(id, 3);
    c.snapshot_entries = snapshot_entries;
    c
}

/// Member `id`'s configuration in a cluster of members 1 to `n`.
fn config_of(id: NodeId, n: u64) -> EngineConfig {
    let mut c = EngineConfig::new(id, (1..=n).collect(), 7);
    c.split_keys = vec![b"g".to_vec(), b"p".to_vec()];
    c
}

impl Net {
    fn new(snapshot_entries: u64) -> Net {
        Net::with(|c| c.snapshot_entries = snapshot_entries)
    }

    /// Three members with `tweak` applied to each one's configuration.
    fn with(tweak: impl Fn(&mut EngineConfig)) -> Net {
        Net::sized(3, tweak)
    }

    /// Members 1 to `n` with `tweak` applied to each one's configuration.
    fn sized(n: u64, tweak: impl Fn(&mut EngineConfig)) -> Net {
        let boot = |id: NodeId| {
            let mut c = config_of(id, n);
            tweak(&mut c);
            Node::recover(c, Vec::new()).expect("boot")
        };
        Net {
            nodes: (1..=n).map(boot).collect(),
            down: None,
            disks: vec![Vec::new(); n as usize],
            replies: Vec::new(),
            seq: 0,
            tap: None,
            tapped: Vec::new(),
            audit: None,
            audit_failures: Vec::new(),
        }
    }

    /// One round: every node ticks, then outputs flow until the network is quiet.
    fn round(&mut self) {
        for n in &mut self.nodes {
            n.tick();
        }
        loop {
            let mut inflight = Vec::new();
            for (i, n) in self.nodes.iter_mut().enumerate() {
                let disk = &mut self.disks[i];
                let outbox = n
                    .ready()
                    .persist(|records| {
                        for r in records {
                            if r.is_checkpoint() {
                                disk.clear();
                            }
                            disk.push(r.clone());
                        }
                        Ok::<(), ()>(())
                    })
                    .expect("in-memory disk");
                let lost = self.down == Some(i);
                inflight.extend(
                    outbox
                        .messages
                        .into_iter()
                        .filter(|_| !lost)
                        .map(|(to, m)| (i as u64 + 1, to, m)),
                );
                if let Some(audit) = self.audit {
                    let failed = outbox.replies.iter().filter_map(|r| audit(n, r));
                    self.audit_failures.extend(failed);
                }
                self.replies.extend(outbox.replies);
            }
            if inflight.is_empty() {
                return;
            }
            for (from, to, mut m) in inflight {
                let cut = |n: u64| self.down == Some(n as usize - 1);
                if let Some(tap) = self.tap {
                    m.parts.retain(|(g, part)| match tap(from, to, *g, part) {
                        Tap::Pass => true,
                        Tap::Copy => {
                            self.tapped.push((from, to, *g, part.clone()));
                            true
                        }
                        Tap::Hold => {
                            self.tapped.push((from, to, *g, part.clone()));
                            false
                        }
                    });
                }
                if !cut(from) && !cut(to) {
                    self.nodes[to as usize - 1].receive(from, m);
                }
            }
        }
    }

    fn rounds(&mut self, n: usize) {
        for _ in 0..n {
            self.round();
        }
    }

    /// Submits `op` at node `at` and runs until it is answered.
    fn call(&mut self, at: usize, op: Op) -> Result<Response, EngineError> {
        let id = self.submit(at, op, Consistency::Linearizable);
        self.wait(id)
    }

    /// Submits `op` at node `at` as the test's client; its id.
    fn submit(&mut self, at: usize, op: Op, consistency: Consistency) -> RequestId {
        self.seq += 1;
        let id = RequestId {
            client: ClientId(99),
            seq: self.seq,
        };
        self.nodes[at].submit(ClientRequest {
            id,
            first_unacked: self.seq,
            op,
            consistency,
        });
        id
    }

    /// Runs until request `id` is answered.
    fn wait(&mut self, id: RequestId) -> Result<Response, EngineError> {
        for _ in 0..500 {
            self.round();
            if let Some(i) = self.replies.iter().position(|r| r.id == id) {
                return self.replies.remove(i).result;
            }
        }
        panic!("no reply to request {id:?}");
    }

    fn put(&mut self, at: usize, key: &str, value: &str) {
        let r = self.call(at, Op::Put(PutRequest::new(key, value)));
        assert!(r.is_ok(), "put {key}: {r:?}");
    }
}

fn keys_of(r: &Response) -> Vec<String> {
    match &r.body {
        ResponseBody::Range(r) => r
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect(),
        other => panic!("not a range answer: {other:?}"),
    }
}

fn all_keys() -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    }
}

#[test]
fn leaders_spread_and_keys_go_to_their_groups() {
    let mut net = Net::new(0);
    net.rounds(600);
    let st = net.nodes[0].status();
    let leaders: Vec<Option<NodeId>> = st.groups.iter().map(|g| g.leader).collect();
    assert_eq!(
        leaders,
        vec![Some(1), Some(2), Some(3)],
        "each group led by its preferred member"
    );
    for (at, key) in [(0, "apple"), (1, "house"), (2, "zebra"), (0, "g")] {
        net.put(at, key, "v");
    }
    net.rounds(5);
    let keys: Vec<u64> = net.nodes[2]
        .status()
        .groups
        .iter()
        .map(|g| g.keys)
        .collect();
    assert_eq!(keys, vec![1, 2, 1], "g belongs to the group from g on");
}

#[test]
fn range_reads_across_groups_merge_in_order_with_limit_and_sort() {
    let mut net = Net::new(0);
    net.rounds(50);
    for (k, v) in [("a", "3"), ("h", "1"), ("q", "4"), ("z", "2"), ("i", "5")] {
        net.put(1, k, v);
    }
    let all = net.call(2, Op::Range(all_keys())).expect("read");
    assert_eq!(keys_of(&all), ["a", "h", "i", "q", "z"]);
    let limited = net
        .call(
            0,
            Op::Range(RangeRequest {
                limit: 2,
                ..all_keys()
            }),
        )
        .expect("read");
    assert_eq!(keys_of(&limited), ["a", "h"]);
    let ResponseBody::Range(body) = &limited.body else {
        panic!("range")
    };
    assert!(body.more && body.count == 5, "{body:?}");
    let by_value = RangeRequest {
        sort_order: SortOrder::Descend,
        sort_target: synod_core::kv::SortTarget::Value,
        keys_only: true,
        limit: 3,
        ..all_keys()
    };
    let sorted = net.call(0, Op::Range(by_value)).expect("read");
    assert_eq!(
        keys_of(&sorted),
        ["i", "q", "a"],
        "by value 5, 4, 3 across groups"
    );
}

/// A delete over several groups is one delete per group, answered as one: the count added
/// up, the previous values in key order, the largest revision; a transaction over several
/// groups is refused and changes nothing.
#[test]
fn deletes_spanning_groups_split_and_transactions_are_refused() {
    let mut net = Net::new(0);
    net.rounds(50);
    for k in ["a", "b", "h", "q", "z"] {
        net.put(0, k, &format!("v-{k}"));
    }
    let del = |key: &[u8], end: &[u8]| {
        Op::DeleteRange(synod_core::kv::DeleteRangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            prev_kv: true,
        })
    };
    // Groups 0 and 1, from a member that leads neither necessarily.
    let r = net
        .call(1, del(b"b", b"i"))
        .expect("a delete over groups 0 and 1");
    let ResponseBody::DeleteRange(d) = &r.body else {
        panic!("{r:?}")
    };
    let prev: Vec<&[u8]> = d.prev_kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!((d.deleted, prev), (2, vec![&b"b"[..], &b"h"[..]]));
    assert_eq!(d.prev_kvs[1].value, b"v-h");
    let all = net.call(2, Op::Range(all_keys())).expect("read");
    assert_eq!(keys_of(&all), ["a", "q", "z"]);
    assert!(
        all.revision >= r.revision,
        "the answer's revision is one the groups reached"
    );
    // Everything from "a": all three groups.
    let r = net
        .call(2, del(b"a", &[0]))
        .expect("a delete over every group");
    let ResponseBody::DeleteRange(d) = &r.body else {
        panic!("{r:?}")
    };
    assert_eq!(d.deleted, 3);
    let all = net.call(0, Op::Range(all_keys())).expect("read");
    assert!(keys_of(&all).is_empty(), "{:?}", keys_of(&all));
    net.put(0, "a", "1");
    net.put(0, "z", "1");
    let span = Op::Txn(synod_core::kv::TxnRequest {
        compare: vec![],
        success: vec![
            synod_core::kv::TxnOp::Put(synod_core::kv::PutRequest::new(
                b"a".to_vec(),
                b"2".to_vec(),
            )),
            synod_core::kv::TxnOp::Put(synod_core::kv::PutRequest::new(
                b"z".to_vec(),
                b"2".to_vec(),
            )),
        ],
        failure: vec![],
    });
    let err = net.call(1, span).expect_err("spans groups");
    assert!(err.to_string().contains("span groups 0, 1, 2"), "{err}");
    let all = net.call(1, Op::Range(all_keys())).expect("read");
    assert_eq!(keys_of(&all), ["a", "z"]);
}

#[test]
fn a_checkpoint_covers_every_group_and_recovers_them_all() {
    let mut net = Net::new(5);
    net.rounds(50);
    // Group 2 gets enough writes to checkpoint; groups 0 and 1 only a few.
    net.put(0, "a", "kept in group 0");
    net.put(0, "h", "kept in group 1");
    for i in 0..12 {
        net.put(0, &format!("z{i}"), "v");
    }
    net.rounds(5);
    for (i, disk) in net.disks.iter().enumerate() {
        let GroupRecord::CheckpointAt { groups, .. } = &disk[0] else {
            panic!("node {} log starts with {:?}", i + 1, disk.first());
        };
        let ids: Vec<u64> = groups.iter().map(|(g, _)| *g).collect();
        assert_eq!(ids, vec![0, 1, 2], "one checkpoint for every group");
    }
    // Node 1 restarts from its compacted log alone and still has every group's keys.
    let records = net.disks[0].clone();
    net.nodes[0] = Node::recover(config(1, 5), records).expect("recover");
    net.rounds(100);
    let st = net.nodes[0].status();
    let keys: Vec<u64> = st.groups.iter().map(|g| g.keys).collect();
    assert_eq!(keys, vec![1, 1, 12]);
}

#[test]
fn the_log_bound_is_the_member_s_not_each_group_s() {
    // At most 30 entries between checkpoints, for the member: with the bound per group the
    // three groups together would hold up to 90 (what a restart replays).
    let mut net = Net::new(30);
    net.rounds(50);
    let mut most = 0;
    for i in 0..60 {
        let prefix = ["a", "h", "z"][i % 3];
        net.put(0, &format!("{prefix}{i}"), "v");
        most = most.max(
            net.nodes
                .iter()
                .map(Engine::held_entries)
                .max()
                .unwrap_or(0),
        );
    }
    // The bound (30) and one batch's entries past it at most (a put and the closes it
    // draws): the checkpoint comes at the batch after the one that passed the bound.
    assert!(most < 30 + 6, "a member held {most} entries");
    net.rounds(5);
    for (i, disk) in net.disks.iter().enumerate() {
        let GroupRecord::CheckpointAt { groups, .. } = &disk[0] else {
            panic!("node {} log starts with {:?}", i + 1, disk.first());
        };
        assert_eq!(groups.len(), 3, "one checkpoint for every group");
    }
    assert_eq!(keys_per_group(&net.nodes[0]), vec![20, 20, 20]);
}

#[test]
fn recovery_refuses_a_log_of_other_groups() {
    let rec: GroupRecord<<Group as Engine>::Record> =
        GroupRecord::Group(7, synod_replica::records::Record::Incarnation(1));
    let err = Node::recover(config(1, 0), vec![rec])
        .err()
        .expect("refused");
    assert!(err.contains("split keys changed"), "{err}");
}

fn split(at: &str) -> Op {
    Op::Split(synod_core::kv::SplitRequest { at: at.into() })
}

fn keys_per_group(n: &Node) -> Vec<u64> {
    n.status().groups.iter().map(|g| g.keys).collect()
}

#[test]
fn a_split_moves_the_upper_keys_to_a_new_group_on_every_member() {
    let mut net = Net::new(0);
    net.rounds(50);
    for k in ["h", "k", "m", "a", "z"] {
        net.put(0, k, "before");
    }
    let r = net.call(1, split("k")).expect("split");
    let ResponseBody::Split { start, end, .. } = r.body else {
        panic!("a split answer: {r:?}");
    };
    assert_eq!(
        (start, end),
        (b"g".to_vec(), b"k".to_vec()),
        "group 1 keeps [g, k)"
    );
    net.rounds(20);
    for n in &net.nodes {
        assert_eq!(keys_per_group(n), vec![1, 1, 2, 1], "k and m moved");
        let child = n.layout().group_of(b"k");
        assert!(child >= CHILD_ID_BASE && n.layout().group_of(b"j") == 1);
    }
    // The new group serves its keys, old and new, from every member.
    net.put(2, "l", "after");
    for at in 0..3 {
        let all = net.call(at, Op::Range(all_keys())).expect("read");
        assert_eq!(keys_of(&all), ["a", "h", "k", "l", "m", "z"]);
    }
    // The old group refuses to split outside its range; the new one splits again.
    let again = net
        .call(0, split("g"))
        .expect_err("g starts group 1: nothing to cut");
    assert!(again.to_string().contains("does not cut"), "{again}");
    net.call(0, split("l")).expect("split the new group");
    net.rounds(20);
    assert_eq!(keys_per_group(&net.nodes[2]), vec![1, 1, 1, 2, 1]);
}

#[test]
fn a_write_routed_before_a_split_and_decided_after_it_is_refused_not_applied() {
    let mut net = Net::new(0);
    net.rounds(50);
    net.put(0, "m", "old");
    // Both routed to group 1 by the layout of now; the split is decided first.
    let req = |seq, op| ClientRequest {
        id: RequestId {
            client: ClientId(5),
            seq,
        },
        first_unacked: 1,
        op,
        consistency: Consistency::Linearizable,
    };
    net.nodes[1].submit(req(1, split("k")));
    net.nodes[1].submit(req(2, Op::Put(PutRequest::new("m", "lost?"))));
    // A second split routed by the same layout: its key is the new group's by then.
    net.nodes[1].submit(req(3, split("l")));
    net.rounds(30);
    let answer = |seq| {
        net.replies
            .iter()
            .find(|r| r.id.client == ClientId(5) && r.id.seq == seq)
            .map(|r| r.result.clone())
            .expect("answered")
    };
    assert!(answer(1).is_ok(), "the split: {:?}", answer(1));
    assert!(
        matches!(answer(2), Err(EngineError::WrongGroup { .. })),
        "the put: {:?}",
        answer(2)
    );
    let got = net
        .call(0, Op::Range(RangeRequest::key("m")))
        .expect("read");
    match got.body {
        ResponseBody::Range(r) => assert_eq!(r.kvs[0].value, b"old"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn split_groups_survive_a_restart_and_a_member_that_missed_the_split_catches_up() {
    let mut net = Net::new(5);
    net.rounds(50);
    net.put(0, "h", "v");
    net.put(0, "m", "v");
    // Member 3 misses the split and enough of group 1's log that it gets a snapshot.
    net.down = Some(2);
    net.call(0, split("k")).expect("split");
    for i in 0..12 {
        net.put(0, &format!("h{i}"), "v");
        net.put(1, &format!("m{i}"), "v");
    }
    net.down = None;
    net.rounds(300);
    assert_eq!(keys_per_group(&net.nodes[2]), keys_per_group(&net.nodes[0]));
    assert_eq!(keys_per_group(&net.nodes[2]), vec![0, 13, 13, 0]);
    // Every member restarts from its compacted log alone.
    for i in 0..3 {
        let records = net.disks[i].clone();
        net.nodes[i] = Node::recover(config(i as u64 + 1, 5), records).expect("recover");
    }
    net.rounds(300);
    for n in &net.nodes {
        assert_eq!(keys_per_group(n), vec![0, 13, 13, 0]);
    }
    net.put(2, "m", "after restart");
}

#[test]
fn a_group_past_the_key_threshold_splits_itself_near_its_middle_key() {
    let mut net = Net::new(0);
    for n in &mut net.nodes {
        n.base.auto_split_keys = 5;
    }
    net.rounds(50);
    for k in ["h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8"] {
        net.put(0, k, "v");
    }
    // The leader looks every COMPACT_EVERY_TICKS ticks; one round is one tick.
    net.rounds(3 * COMPACT_EVERY_TICKS as usize);
    for n in &net.nodes {
        let groups = keys_per_group(n);
        assert!(groups.len() > 3, "group 1 split: {groups:?}");
        assert!(
            groups.iter().all(|&k| k <= 5),
            "none over the threshold: {groups:?}"
        );
        assert_eq!(groups.iter().sum::<u64>(), 8);
    }
}

/// A size split whose middle key is a lock contender cuts at the lock's directory boundary,
/// so the lock recipe's read (its prefix, by create revision) stays within one group.
#[test]
fn a_size_split_keeps_a_lock_prefix_in_one_group() {
    let mut net = Net::new(0);
    for n in &mut net.nodes {
        n.base.auto_split_keys = 6;
    }
    net.rounds(50);
    let keys = [
        "/a/1",
        "/a/2",
        "/a/3",
        "/lock/694d01",
        "/lock/694d02",
        "/lock/694d03",
    ];
    for k in keys.into_iter().chain(["/z/1", "/z/2"]) {
        net.put(0, k, "v");
    }
    net.rounds(3 * COMPACT_EVERY_TICKS as usize);
    for n in &net.nodes {
        assert!(starts(n).contains(&"/lock/".to_string()), "{:?}", starts(n));
    }
    let contenders = RangeRequest {
        key: b"/lock/".to_vec(),
        range_end: b"/lock0".to_vec(),
        sort_order: SortOrder::Ascend,
        sort_target: synod_core::kv::SortTarget::Create,
        ..all_keys()
    };
    let next = net
        .call(1, Op::Range(contenders))
        .expect("one group's read");
    assert_eq!(
        keys_of(&next),
        ["/lock/694d01", "/lock/694d02", "/lock/694d03"]
    );
}

fn merge(at: &str) -> Op {
    Op::Merge(synod_core::kv::MergeRequest { at: at.into() })
}

#[test]
fn a_merge_gives_the_upper_range_to_the_group_below_on_every_member() {
    let mut net = Net::new(0);
    net.rounds(50);
    for k in ["a", "h", "m", "q", "z"] {
        net.put(0, k, "before");
    }
    // Not the first key of a range, and the first range has nothing below: refused.
    let inside = net.call(0, merge("h")).expect_err("h is inside [g, p)");
    assert!(
        inside.to_string().contains("does not begin a range"),
        "{inside}"
    );
    let r = net.call(1, merge("p")).expect("merge");
    let ResponseBody::Merge { start, end, .. } = r.body else {
        panic!("a merge answer: {r:?}");
    };
    assert_eq!((start, end), (b"p".to_vec(), Vec::new()), "[p, end) froze");
    net.rounds(20);
    for n in &net.nodes {
        assert_eq!(
            keys_per_group(n),
            vec![1, 4],
            "group 2 is gone, its keys in group 1"
        );
        assert_eq!(n.layout().group_of(b"z"), 1);
        assert!(!n.groups.contains_key(&2), "the retired replica is dropped");
    }
    // The absorbing group serves the keys, old and new, from every member.
    net.put(2, "r", "after");
    for at in 0..3 {
        let all = net.call(at, Op::Range(all_keys())).expect("read");
        assert_eq!(keys_of(&all), ["a", "h", "m", "q", "r", "z"]);
    }
    // Merged down to one group: it owns everything, and splits again.
    net.call(0, merge("g")).expect("merge into group 0");
    net.rounds(20);
    assert_eq!(keys_per_group(&net.nodes[1]), vec![6]);
    net.call(2, split("n")).expect("split again");
    net.rounds(20);
    assert_eq!(keys_per_group(&net.nodes[0]), vec![3, 3]);
}

#[test]
fn merged_groups_stay_gone_after_a_restart_and_a_member_that_missed_the_merge_catches_up() {
    let mut net = Net::new(5);
    net.rounds(50);
    net.put(0, "h", "v");
    net.put(0, "q", "v");
    // Member 3 misses a split of group 2 and both merges, and enough of group 1's log
    // that it gets a snapshot: it learns of the retired groups from group 1's state alone.
    net.down = Some(2);
    net.call(0, split("t")).expect("split");
    net.rounds(10);
    net.call(0, merge("t")).expect("merge the new group back");
    net.rounds(10);
    net.call(0, merge("p")).expect("merge group 2");
    for i in 0..12 {
        net.put(0, &format!("h{i}"), "v");
        net.put(1, &format!("q{i}"), "v");
    }
    net.down = None;
    net.rounds(300);
    for n in &net.nodes {
        assert_eq!(keys_per_group(n), vec![0, 26], "only groups 0 and 1 remain");
    }
    // Every member restarts from its compacted log alone: the retired groups stay retired.
    for i in 0..3 {
        let records = net.disks[i].clone();
        net.nodes[i] = Node::recover(config(i as u64 + 1, 5), records).expect("recover");
    }
    net.rounds(300);
    for n in &net.nodes {
        assert_eq!(keys_per_group(n), vec![0, 26]);
        assert_eq!(n.groups.len(), 2);
    }
    net.put(2, "q", "after restart");
}

fn starts(n: &Node) -> Vec<String> {
    n.layout()
        .entries()
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

fn delete(key: &str) -> Op {
    Op::DeleteRange(synod_core::kv::DeleteRangeRequest {
        key: key.into(),
        range_end: Vec::new(),
        prev_kv: false,
    })
}

#[test]
fn a_group_past_the_write_threshold_splits_where_its_writes_divide_in_half() {
    let mut net = Net::new(0);
    for n in &mut net.nodes {
        n.base.auto_split_writes = 20;
    }
    net.rounds(50);
    // Writes on six keys of group 1 ([g, p)), about one per 10 ms tick: far over 20/s.
    let hot = ["i1", "j1", "k1", "l1", "m1", "n1"];
    let mut puts = 0;
    while starts(&net.nodes[0]).len() == 3 {
        let put = Op::Put(PutRequest::new(hot[puts % hot.len()], "v"));
        match net.call(puts % 3, put) {
            // Routed by a member that had not applied the split yet: routed again.
            Ok(_) | Err(EngineError::WrongGroup { .. }) => {}
            Err(e) => panic!("put: {e}"),
        }
        puts += 1;
        assert!(puts < 2_000, "no load split after {puts} puts");
    }
    // Not before the load was sustained for LOAD_SPLIT_LOOKS looks.
    assert!(
        puts as u64 >= u64::from(auto::LOAD_SPLIT_LOOKS) * auto::LOOK_EVERY_TICKS / 2,
        "split after only {puts} puts"
    );
    net.rounds(5);
    for n in &net.nodes {
        // The writes were spread evenly over the six keys, a write more on some: the cut
        // is at the third or fourth key.
        let at = starts(n);
        assert_eq!(at.len(), 4, "one split: {at:?}");
        assert!(
            at[2] == "k1" || at[2] == "l1",
            "cut where the writes halve: {at:?}"
        );
        let groups = keys_per_group(n);
        assert!(groups[1] >= 2 && groups[2] >= 3, "{groups:?}");
        assert_eq!(groups.iter().sum::<u64>(), 6);
    }
}

#[test]
fn writes_on_one_key_split_nothing() {
    let mut net = Net::new(0);
    for n in &mut net.nodes {
        n.base.auto_split_writes = 20;
    }
    net.rounds(50);
    net.put(0, "h", "cold");
    for i in 0..1_000 {
        net.put(i % 3, "k", "hot");
    }
    for n in &net.nodes {
        assert_eq!(starts(n), ["", "g", "p"], "no cut spreads one key's writes");
    }
}

/// Linearizable reads of `keys`, each at every member in turn, until node 0 sees a split or
/// `most` reads were made; how many were.
fn read_until_split(net: &mut Net, keys: &[&str], most: usize) -> usize {
    let mut reads = 0;
    while starts(&net.nodes[0]).len() == 3 && reads < most {
        let get = Op::Range(RangeRequest::key(keys[(reads / 3) % keys.len()]));
        match net.call(reads % 3, get) {
            // Routed by a member that had not applied the split yet: routed again.
            Ok(_) | Err(EngineError::WrongGroup { .. }) => {}
            Err(e) => panic!("get: {e}"),
        }
        reads += 1;
    }
    reads
}

#[test]
fn a_group_past_the_read_threshold_splits_where_its_reads_divide_in_half() {
    let mut net = Net::new(0);
    for n in &mut net.nodes {
        n.base.auto_split_reads = 20;
    }
    net.rounds(50);
    let hot = ["i1", "j1", "k1", "l1", "m1", "n1"];
    for k in hot {
        net.put(0, k, "v");
    }
    // About one read per 10 ms tick, far over 20/s, and no writes at all.
    let reads = read_until_split(&mut net, &hot, 2_000);
    assert!(reads < 2_000, "no read split after {reads} reads");
    assert!(
        reads as u64 >= u64::from(auto::LOAD_SPLIT_LOOKS) * auto::LOOK_EVERY_TICKS / 2,
        "split after only {reads} reads"
    );
    net.rounds(5);
    for n in &net.nodes {
        let at = starts(n);
        assert_eq!(at.len(), 4, "one split: {at:?}");
        assert!(
            at[2] == "k1" || at[2] == "l1" || at[2] == "m1",
            "cut where the reads halve: {at:?}"
        );
        assert_eq!(keys_per_group(n).iter().sum::<u64>(), 6);
    }
}

#[test]
fn reads_on_one_key_or_under_the_threshold_split_nothing() {
    let mut net = Net::new(0);
    for n in &mut net.nodes {
        n.base.auto_split_reads = 20;
    }
    net.rounds(50);
    for k in ["h", "k"] {
        net.put(0, k, "v");
    }
    read_until_split(&mut net, &["k"], 1_000);
    assert_eq!(starts(&net.nodes[0]), ["", "g", "p"], "one key's reads");
    // Two keys, but about 10 reads a second: under the threshold.
    for i in 0..100 {
        read_until_split(&mut net, &["h", "k"][i % 2..=i % 2], 1);
        net.rounds(9);
    }
    for n in &net.nodes {
        assert_eq!(starts(n), ["", "g", "p"], "cool reads split nothing");
    }
}

#[test]
fn small_quiet_ranges_split_off_automatically_merge_back_and_an_operators_stay() {
    let mut net = Net::new(0);
    for n in &mut net.nodes {
        n.base.auto_split_keys = 4;
        n.base.auto_merge_keys = 3;
    }
    net.rounds(50);
    let keys = ["h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8"];
    for k in keys {
        net.put(0, k, "v");
    }
    net.call(1, split("t")).expect("an operator's split");
    // Another, without a session (a node sends one so when it has many requests in flight):
    // still an operator's, though its client is `ClientId::NONE` like the engine's own.
    net.nodes[1].submit(ClientRequest {
        id: RequestId {
            client: ClientId::NONE,
            seq: 7,
        },
        first_unacked: 0,
        op: split("w"),
        consistency: Consistency::Linearizable,
    });
    net.rounds(3 * auto::LOOK_EVERY_TICKS as usize);
    let grown = starts(&net.nodes[0]).len();
    assert!(
        grown >= 6,
        "group 1 split by size: {:?}",
        starts(&net.nodes[0])
    );
    // Nothing merges while the ranges hold 3 keys or more together.
    net.rounds((30 + 5) * auto::LOOK_EVERY_TICKS as usize);
    assert_eq!(
        starts(&net.nodes[0]).len(),
        grown,
        "nothing small enough yet"
    );
    for k in keys {
        net.call(2, delete(k)).expect("delete");
    }
    // Quiet again, then merged back one pair per look.
    net.rounds((30 + grown * 3) * 2 * auto::LOOK_EVERY_TICKS as usize);
    for n in &net.nodes {
        assert_eq!(
            starts(n),
            ["", "g", "p", "t", "w"],
            "automatic splits undone, the configured layout and the operator's splits kept"
        );
    }
    net.put(1, "h9", "after");
}

mod backup;
mod gather;
mod leases;
mod members;
mod placement;
mod watch;

/// etcd's Compact(R) compacts every group whose revisions reached R to R (`compact.rs`), and
/// leaves the others alone; R beyond every group is a future revision, R at or below every
/// reached group's compaction is "compacted".
#[test]
fn a_compaction_compacts_every_group_that_reached_its_revision() {
    let mut net = Net::new(0);
    // Each group's own revisions, as a group left behind has them until it closes the others'.
    for n in &mut net.nodes {
        n.closing.off = true;
    }
    net.rounds(50);
    // Groups: [.., g) at revision 4, [g, p) at 2, [p, ..) at 1.
    for v in ["1", "2", "3", "4"] {
        net.put(0, "a", v);
    }
    net.put(1, "h", "1");
    net.put(2, "h", "2");
    net.put(0, "q", "1");
    let compact = |revision| {
        Op::Compact(synod_core::kv::CompactRequest {
            revision,
            physical: false,
        })
    };
    let done = net.call(1, compact(2)).expect("compacted");
    assert_eq!(done.body, ResponseBody::Compact);
    net.rounds(5);
    for at in 0..3 {
        let compacted: Vec<u64> = net.nodes[at]
            .status()
            .groups
            .iter()
            .map(|g| g.compact_revision)
            .collect();
        assert_eq!(
            compacted,
            [2, 2, 0],
            "node {at}: groups at 4 and 2 compacted to 2"
        );
    }
    let at = |key: &str, revision| {
        Op::Range(synod_core::kv::RangeRequest {
            key: key.into(),
            revision,
            ..Default::default()
        })
    };
    assert!(matches!(
        net.call(0, at("a", 1)),
        Err(EngineError::Compacted {
            compact_revision: 2
        })
    ));
    assert!(net.call(0, at("a", 2)).is_ok(), "the revision itself stays");
    assert!(
        net.call(0, at("q", 1)).is_ok(),
        "the group below 2 kept its history"
    );
    assert_eq!(
        net.call(2, compact(5)),
        Err(EngineError::FutureRevision { revision: 5 })
    );
    assert_eq!(
        net.call(2, compact(2)),
        Err(EngineError::Compacted {
            compact_revision: 2
        })
    );
    assert!(net.call(0, compact(3)).is_ok(), "group 0 only");
}
