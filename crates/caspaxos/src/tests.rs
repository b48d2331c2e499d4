//! Engine tests through a tiny deterministic in-memory network: three (or more) replicas, a
//! FIFO or seeded-shuffled message pool, per-node "disks" holding the persisted records, and
//! crash/restart through [`Engine::recover`].

use super::*;
use crate::messages::RegisterValue;
use std::collections::{BTreeMap, BTreeSet};
use synod_core::kv::{
    CasAction, CasRequest, DeleteRangeRequest, Expect, Op, PutRequest, RangeRequest, Response,
    ResponseBody, TxnRequest,
};
use synod_core::{ClientId, ClientReply, DurableRecord, EngineError, RequestId, SplitMix64};

pub(crate) struct Net {
    pub(crate) nodes: BTreeMap<NodeId, Option<CasPaxos>>,
    pub(crate) configs: BTreeMap<NodeId, EngineConfig>,
    pub(crate) disks: BTreeMap<NodeId, Vec<Record>>,
    pub(crate) pool: Vec<(NodeId, NodeId, Message)>,
    pub(crate) replies: BTreeMap<RequestId, Vec<(NodeId, ClientReply)>>,
    /// Messages from or to these nodes are dropped.
    pub(crate) isolated: BTreeSet<NodeId>,
    /// When set, the pool is delivered in a seeded random order, with duplicates.
    pub(crate) chaos: Option<SplitMix64>,
    /// Every message sent, for counting.
    pub(crate) sent_log: Vec<(NodeId, NodeId, Message)>,
    /// These nodes' answers on the data path (promises, accepts, nacks, key pages) are lost;
    /// their configuration messages still flow (a node slow or lossy on its data path).
    pub(crate) muted: BTreeSet<NodeId>,
}

impl Net {
    pub(crate) fn new(n: u64, tweak: impl Fn(&mut EngineConfig)) -> Net {
        let members: Vec<NodeId> = (1..=n).collect();
        let mut net = Net {
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            disks: BTreeMap::new(),
            pool: Vec::new(),
            replies: BTreeMap::new(),
            isolated: BTreeSet::new(),
            chaos: None,
            sent_log: Vec::new(),
            muted: BTreeSet::new(),
        };
        for &id in &members {
            let mut cfg = EngineConfig::new(id, members.clone(), 7);
            tweak(&mut cfg);
            let engine = CasPaxos::recover(cfg.clone(), Vec::new()).expect("fresh replica");
            net.nodes.insert(id, Some(engine));
            net.configs.insert(id, cfg);
            net.disks.insert(id, Vec::new());
        }
        net
    }

    pub(crate) fn node(&mut self, id: NodeId) -> &mut CasPaxos {
        self.nodes
            .get_mut(&id)
            .and_then(Option::as_mut)
            .expect("node is up")
    }

    /// Drains every node's Ready: records to its disk, then messages to the pool.
    pub(crate) fn pump(&mut self) {
        for (&id, slot) in self.nodes.iter_mut() {
            let Some(engine) = slot.as_mut() else {
                continue;
            };
            let disk = self.disks.get_mut(&id).expect("disk");
            let outbox = engine
                .ready()
                .persist(|r| {
                    disk.extend_from_slice(r);
                    // Log compaction: a checkpoint subsumes everything before it.
                    if let Some(cp) = disk.iter().rposition(DurableRecord::is_checkpoint) {
                        disk.drain(..cp);
                    }
                    Ok::<(), ()>(())
                })
                .expect("in-memory disk never fails");
            for (to, m) in outbox.messages {
                assert_ne!(to, id, "self-messages stay inside the engine");
                self.sent_log.push((id, to, m.clone()));
                self.pool.push((id, to, m));
            }
            for r in outbox.replies {
                self.replies.entry(r.id).or_default().push((id, r));
            }
        }
    }

    /// Delivers one message from the pool; false when the pool is empty.
    pub(crate) fn deliver_one(&mut self) -> bool {
        if self.pool.is_empty() {
            return false;
        }
        let (from, to, m) = match self.chaos.as_mut() {
            None => self.pool.remove(0),
            Some(rng) => {
                let i = (rng.next_u64() % self.pool.len() as u64) as usize;
                let dup = rng.next_u64().is_multiple_of(10);
                if dup {
                    self.pool[i].clone()
                } else {
                    self.pool.swap_remove(i)
                }
            }
        };
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            return true;
        }
        let data_answer = matches!(
            m,
            Message::Promise { .. }
                | Message::Accepted { .. }
                | Message::Nack { .. }
                | Message::KeysPage { .. }
        );
        if data_answer && self.muted.contains(&from) {
            return true;
        }
        if let Some(Some(engine)) = self.nodes.get_mut(&to) {
            engine.receive(from, m);
        }
        true
    }

    /// Pumps and delivers until nothing moves (bounded).
    pub(crate) fn settle(&mut self) {
        for _ in 0..100_000 {
            self.pump();
            if !self.deliver_one() {
                return;
            }
        }
        panic!("network did not settle");
    }

    pub(crate) fn tick(&mut self) {
        for engine in self.nodes.values_mut().flatten() {
            engine.tick();
        }
        self.settle();
    }

    pub(crate) fn submit(&mut self, at: NodeId, id: RequestId, op: Op) {
        self.node(at).submit(ClientRequest {
            id,
            first_unacked: 0,
            op,
            consistency: Default::default(),
        });
    }

    /// Ticks until `cond` holds; panics after `max_ticks`.
    pub(crate) fn run_until(&mut self, max_ticks: u64, mut cond: impl FnMut(&mut Net) -> bool) {
        self.settle();
        for _ in 0..max_ticks {
            if cond(self) {
                return;
            }
            self.tick();
        }
        assert!(cond(self), "condition not reached within {max_ticks} ticks");
    }

    /// Submits at `at` and waits for the reply.
    pub(crate) fn call(
        &mut self,
        at: NodeId,
        id: RequestId,
        op: Op,
    ) -> Result<Response, EngineError> {
        let before = self.replies.get(&id).map_or(0, Vec::len);
        self.submit(at, id, op);
        self.run_until(1_000, |n| n.replies.get(&id).map_or(0, Vec::len) > before);
        let (from, reply) = self.replies[&id][before].clone();
        assert_eq!(
            from, at,
            "a request is answered by the node it was submitted to"
        );
        reply.result
    }

    /// Starts `id` as a new, empty acceptor joining the running cluster, configured like
    /// node 1 otherwise.
    pub(crate) fn join(&mut self, id: NodeId) {
        let mut cfg = self.configs[&1].clone();
        cfg.id = id;
        cfg.members = (1..=id).collect();
        cfg.join = true;
        let engine = CasPaxos::recover(cfg.clone(), Vec::new()).expect("joining replica");
        self.nodes.insert(id, Some(engine));
        self.configs.insert(id, cfg);
        self.disks.insert(id, Vec::new());
    }

    pub(crate) fn crash(&mut self, id: NodeId) {
        self.nodes.insert(id, None);
        self.pool.retain(|(_, to, _)| *to != id);
    }

    pub(crate) fn restart(&mut self, id: NodeId) {
        let engine = CasPaxos::recover(self.configs[&id].clone(), self.disks[&id].clone())
            .expect("records recover");
        self.nodes.insert(id, Some(engine));
    }
}

pub(crate) fn rid(client: u64, seq: u64) -> RequestId {
    RequestId {
        client: ClientId(client),
        seq,
    }
}

pub(crate) fn put(key: &str, value: &str) -> Op {
    Op::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        prev_kv: false,
        ..Default::default()
    })
}

pub(crate) fn get(key: &str) -> Op {
    Op::Range(RangeRequest::key(key))
}

fn delete(key: &str) -> Op {
    Op::DeleteRange(DeleteRangeRequest {
        key: key.into(),
        range_end: vec![],
        prev_kv: false,
    })
}

fn cas(key: &str, expect: Expect, then: CasAction) -> Op {
    Op::Cas(CasRequest {
        key: key.into(),
        expect,
        then,
    })
}

/// (value, version) of a get, or None when absent.
pub(crate) fn read(r: Result<Response, EngineError>) -> Option<(String, u64)> {
    match r.expect("read succeeds").body {
        ResponseBody::Range(rr) => rr.kvs.first().map(|kv| {
            (
                String::from_utf8(kv.value.clone()).expect("utf8 test value"),
                kv.version,
            )
        }),
        other => panic!("not a range response: {other:?}"),
    }
}

fn cas_succeeded(r: Result<Response, EngineError>) -> bool {
    match r.expect("cas executes").body {
        ResponseBody::Cas(c) => c.succeeded,
        other => panic!("not a cas response: {other:?}"),
    }
}

#[test]
fn put_get_cas_delete_from_different_proposers() {
    let mut net = Net::new(3, |_| {});
    assert!(net.call(1, rid(1, 1), put("k", "a")).is_ok());
    assert_eq!(
        read(net.call(2, rid(2, 1), get("k"))),
        Some(("a".into(), 1))
    );
    let ok = net.call(
        3,
        rid(3, 1),
        cas("k", Expect::Version(1), CasAction::Put("b".into())),
    );
    assert!(cas_succeeded(ok));
    let stale = net.call(
        1,
        rid(1, 2),
        cas("k", Expect::Value("a".into()), CasAction::Put("c".into())),
    );
    assert!(
        !cas_succeeded(stale),
        "expectation on an overwritten value fails"
    );
    assert_eq!(
        read(net.call(1, rid(1, 3), get("k"))),
        Some(("b".into(), 2))
    );
    match net.call(2, rid(2, 2), delete("k")).expect("delete").body {
        ResponseBody::DeleteRange(d) => assert_eq!(d.deleted, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(read(net.call(3, rid(3, 2), get("k"))), None);
    let create = net.call(
        1,
        rid(1, 4),
        cas("k", Expect::Absent, CasAction::Put("d".into())),
    );
    assert!(cas_succeeded(create));
    assert_eq!(
        read(net.call(2, rid(2, 3), get("k"))),
        Some(("d".into(), 1))
    );
    let status = net.node(1).status();
    assert_eq!(status.role, "proposer");
    assert_eq!(status.leader, None);
    assert_eq!(status.pending_requests, 0);
    assert!(status.term > 0);
}

#[test]
fn a_proposer_with_a_stream_of_ops_needs_one_round_trip_each() {
    let mut net = Net::new(3, |_| {});
    assert!(net.call(1, rid(1, 1), put("k", "v1")).is_ok());
    assert!(net.node(1).proposer().prepared_ballot(b"k").is_some());
    let prepares_before = count(&net, |m| matches!(m, Message::Prepare { .. }));
    for seq in 2..=5 {
        assert!(net.call(1, rid(1, seq), put("k", "v")).is_ok());
    }
    let prepares_after = count(&net, |m| matches!(m, Message::Prepare { .. }));
    assert_eq!(
        prepares_before, prepares_after,
        "no phase 1 while the cache holds"
    );
    // Another proposer writes: node 1's cached ballot is now refused, it falls back to phase 1.
    assert!(net.call(2, rid(2, 1), put("k", "x")).is_ok());
    assert!(net.call(1, rid(1, 6), put("k", "y")).is_ok());
    assert!(count(&net, |m| matches!(m, Message::Prepare { .. })) > prepares_after);
    assert_eq!(
        read(net.call(3, rid(3, 1), get("k"))),
        Some(("y".into(), 7))
    );
}

fn count(net: &Net, f: impl Fn(&Message) -> bool) -> usize {
    net.sent_log.iter().filter(|(_, _, m)| f(m)).count()
}

#[test]
fn concurrent_conflicting_proposers_converge_with_each_write_applied_once() {
    for seed in 0..20u64 {
        let mut net = Net::new(3, |_| {});
        net.chaos = Some(SplitMix64::new(seed));
        let writes_per_node = 8u64;
        for seq in 1..=writes_per_node {
            for node in 1..=3u64 {
                // Different clients, the same key, all at once.
                net.submit(node, rid(node, seq), put("hot", &format!("{node}-{seq}")));
            }
        }
        net.run_until(5_000, |n| {
            (1..=3u64).all(|c| (1..=writes_per_node).all(|s| n.replies.contains_key(&rid(c, s))))
        });
        for c in 1..=3u64 {
            for s in 1..=writes_per_node {
                let replies = &net.replies[&rid(c, s)];
                assert_eq!(replies.len(), 1, "exactly one reply per request");
                assert!(replies[0].1.result.is_ok(), "seed {seed}: {:?}", replies[0]);
            }
        }
        net.chaos = None;
        let (_, version) = read(net.call(2, rid(9, 1), get("hot"))).expect("written");
        assert_eq!(
            version,
            3 * writes_per_node,
            "seed {seed}: every put applied once"
        );
    }
}

#[test]
fn a_retried_write_at_another_node_applies_once() {
    let mut net = Net::new(3, |_| {});
    let id = rid(5, 1);
    let create = cas("k", Expect::Absent, CasAction::Put("v".into()));
    assert!(cas_succeeded(net.call(1, id, create.clone())));
    // The client never saw the reply and retries elsewhere: the saved reply comes back,
    // rather than a failed expectation or a second application.
    assert!(cas_succeeded(net.call(3, id, create)));
    assert!(net.call(2, rid(5, 2), put("k", "w")).is_ok());
    assert!(net.call(2, rid(5, 2), put("k", "w")).is_ok());
    assert_eq!(
        read(net.call(2, rid(6, 1), get("k"))),
        Some(("w".into(), 2))
    );
}

#[test]
fn a_retry_of_a_write_accepted_only_by_a_minority_applies_once() {
    let mut net = Net::new(3, |_| {});
    assert!(net.call(1, rid(1, 1), put("k", "a")).is_ok());
    // Node 1's next accept reaches only its own acceptor: the write is in doubt.
    net.isolated.insert(1);
    net.submit(1, rid(7, 1), put("k", "b"));
    net.run_until(400, |n| n.replies.contains_key(&rid(7, 1)));
    assert_eq!(
        net.replies[&rid(7, 1)][0].1.result,
        Err(EngineError::Timeout)
    );
    net.isolated.clear();
    // The client retries at node 2; whichever value wins, "b" is applied at most once.
    assert!(net.call(2, rid(7, 1), put("k", "b")).is_ok());
    assert_eq!(
        read(net.call(3, rid(8, 1), get("k"))),
        Some(("b".into(), 2))
    );
}

#[test]
fn a_restarted_acceptor_still_refuses_lower_ballots() {
    let mut net = Net::new(3, |_| {});
    assert!(net.call(1, rid(1, 1), put("k", "a")).is_ok());
    let promised = net.node(3).acceptor().get(b"k").map(|r| r.promised);
    let promised = promised.expect("node 3 took part");
    net.crash(3);
    net.restart(3);
    assert_eq!(
        net.node(3).acceptor().get(b"k").map(|r| r.promised),
        Some(promised)
    );
    let lower = Ballot {
        counter: promised.counter - 1,
        node: 2,
    };
    net.node(3).receive(
        2,
        Message::Prepare {
            key: b"k".to_vec(),
            ballot: lower,
            version: 0,
        },
    );
    let outbox = net
        .node(3)
        .ready()
        .persist(|_| Ok::<(), ()>(()))
        .expect("persist");
    assert!(
        matches!(
            outbox.messages.as_slice(),
            [(2, Message::Nack { promised: p, .. })] if *p == promised
        ),
        "{:?}",
        outbox.messages
    );
    // The restarted node's proposer never reuses a ballot and the data survived.
    assert!(net.node(3).status().term >= promised.counter);
    assert_eq!(
        read(net.call(3, rid(3, 1), get("k"))),
        Some(("a".into(), 1))
    );
}

#[test]
fn a_whole_cluster_restart_keeps_every_acknowledged_write() {
    let mut net = Net::new(3, |c| c.snapshot_entries = 4);
    for seq in 1..=10 {
        assert!(
            net.call(1 + seq % 3, rid(1, seq), put(&format!("k{}", seq % 4), "v"))
                .is_ok()
        );
    }
    // Storage may drop everything before the last checkpoint.
    for disk in net.disks.values_mut() {
        let last_cp = disk.iter().rposition(|r| r.is_checkpoint());
        let last_cp = last_cp.expect("a checkpoint was taken");
        disk.drain(..last_cp);
    }
    for id in 1..=3 {
        net.crash(id);
    }
    for id in 1..=3 {
        net.restart(id);
    }
    assert_eq!(
        read(net.call(2, rid(2, 1), get("k1"))),
        Some(("v".into(), 3))
    );
    assert_eq!(
        read(net.call(3, rid(2, 2), get("k2"))),
        Some(("v".into(), 3))
    );
}

#[test]
fn unsupported_ops_fail_at_once() {
    let mut net = Net::new(3, |_| {});
    let range = Op::Range(RangeRequest::prefix("a"));
    let txn = Op::Txn(TxnRequest::default());
    let del_range = Op::DeleteRange(DeleteRangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        prev_kv: false,
    });
    for (seq, op) in [range, txn, del_range].into_iter().enumerate() {
        net.submit(1, rid(1, seq as u64 + 1), op);
        let outbox = net
            .node(1)
            .ready()
            .persist(|_| Ok::<(), ()>(()))
            .expect("persist");
        assert!(outbox.messages.is_empty());
        let [reply] = outbox.replies.as_slice() else {
            panic!("one immediate reply");
        };
        match &reply.result {
            Err(EngineError::Unsupported { engine, .. }) => assert_eq!(engine, "caspaxos"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        CasPaxos::capabilities(),
        Capabilities {
            ranges: false,
            transactions: false,
            revisions: false,
            watch: false,
            leases: false,
        }
    );
}

#[test]
fn an_isolated_proposer_times_out() {
    let mut net = Net::new(3, |c| c.request_timeout_ticks = 50);
    net.isolated.insert(2);
    net.submit(2, rid(1, 1), get("k"));
    net.run_until(60, |n| n.replies.contains_key(&rid(1, 1)));
    assert_eq!(
        net.replies[&rid(1, 1)][0].1.result,
        Err(EngineError::Timeout)
    );
    assert_eq!(net.node(2).status().pending_requests, 0);
}

#[test]
fn gc_removes_a_tombstone_only_after_every_acceptor_has_it() {
    let mut net = Net::new(3, |c| c.request_timeout_ticks = 20);
    assert!(net.call(1, rid(1, 1), put("k", "v")).is_ok());
    net.isolated.insert(3);
    assert!(net.call(1, rid(1, 2), delete("k")).is_ok());
    assert!(net.node(1).proposer().gc_queue().contains(b"k"));
    // Way past the exactly-once window, but node 3 cannot accept the tombstone.
    for _ in 0..400 {
        net.tick();
    }
    for id in 1..=2 {
        assert!(
            net.node(id).acceptor().get(b"k").is_some(),
            "node {id} keeps it"
        );
    }
    net.isolated.clear();
    net.run_until(1_000, |n| {
        (1..=3).all(|id| n.node(id).acceptor().get(b"k").is_none())
    });
    assert!(net.node(1).acceptor().floor() > Ballot::ZERO);
    // The key starts over as if never written, and old ballots stay refused.
    assert_eq!(read(net.call(2, rid(2, 1), get("k"))), None);
    assert!(net.call(3, rid(3, 1), put("k", "new")).is_ok());
    assert_eq!(
        read(net.call(1, rid(1, 3), get("k"))),
        Some(("new".into(), 1))
    );
}

/// Regression (simulator seed 2867, 3 nodes): node 1 queued `k` for collection after an old
/// tombstone; node 2 later wrote and deleted `k`, and node 1's GC round collected that new
/// tombstone — with the delete's saved reply — long before the delete's exactly-once window
/// was over, so the client's retry ran the delete again and answered `deleted: 0`.
#[test]
fn gc_waits_out_the_window_of_the_newest_tombstone_not_the_one_it_queued() {
    let mut net = Net::new(3, |c| c.request_timeout_ticks = 20);
    let window = net.node(1).proposer().gc_queue().delay_ticks();
    // A read of a key nobody wrote leaves a tombstone; node 1 queues it.
    assert_eq!(read(net.call(1, rid(1, 1), get("k"))), None);
    assert!(net.node(1).proposer().gc_queue().contains(b"k"));
    for _ in 0..window - 10 {
        net.tick();
    }
    // Node 2 writes and deletes the key just before node 1's candidate falls due.
    assert!(net.call(2, rid(2, 1), put("k", "v")).is_ok());
    let deleted = |r: Result<Response, EngineError>| match r.expect("delete executes").body {
        ResponseBody::DeleteRange(d) => d.deleted,
        other => panic!("not a delete response: {other:?}"),
    };
    assert_eq!(deleted(net.call(2, rid(2, 2), delete("k"))), 1);
    // Past node 1's old due time (plus a collector interval), well inside the new window.
    for _ in 0..window / 2 {
        net.tick();
    }
    for id in 1..=3 {
        assert!(
            net.node(id).acceptor().get(b"k").is_some(),
            "node {id} must keep the fresh tombstone and its saved reply"
        );
    }
    // The client's retry of the delete, at another node, gets the saved reply.
    assert_eq!(deleted(net.call(3, rid(2, 2), delete("k"))), 1);
    // Once the newest window is over, the tombstone does go.
    net.run_until(4 * window, |n| {
        (1..=3).all(|id| n.node(id).acceptor().get(b"k").is_none())
    });
}

#[test]
fn a_stale_accept_after_gc_is_refused() {
    let mut net = Net::new(3, |c| c.request_timeout_ticks = 20);
    assert!(net.call(1, rid(1, 1), put("k", "old")).is_ok());
    // Capture node 1's next Accept to node 3 (the one-round-trip path) and hold it back.
    net.isolated.insert(3);
    assert!(net.call(1, rid(1, 2), delete("k")).is_ok());
    let stale = net
        .sent_log
        .iter()
        .rev()
        .find_map(|(_, to, m)| match m {
            Message::Accept { ballot, .. } if *to == 3 => Some(*ballot),
            _ => None,
        })
        .expect("an accept to node 3");
    net.isolated.clear();
    net.run_until(1_000, |n| {
        (1..=3).all(|id| n.node(id).acceptor().get(b"k").is_none())
    });
    // Replay an old accept carrying a live value onto the emptied register.
    let mut value = RegisterValue::empty();
    value.kv = Some(synod_core::kv::KeyValue {
        key: b"k".to_vec(),
        value: b"old".to_vec(),
        version: 1,
        ..Default::default()
    });
    net.node(3).receive(
        1,
        Message::Accept {
            key: b"k".to_vec(),
            ballot: stale,
            value,
            next: None,
            version: 0,
        },
    );
    let outbox = net
        .node(3)
        .ready()
        .persist(|_| Ok::<(), ()>(()))
        .expect("persist");
    assert!(
        matches!(outbox.messages.as_slice(), [(1, Message::Nack { .. })]),
        "{:?}",
        outbox.messages
    );
    assert_eq!(read(net.call(2, rid(2, 1), get("k"))), None);
}

#[test]
fn same_seed_same_outputs() {
    let run = || {
        let mut net = Net::new(3, |_| {});
        net.chaos = Some(SplitMix64::new(42));
        for node in 1..=3u64 {
            net.submit(node, rid(node, 1), put("k", "v"));
        }
        net.run_until(2_000, |n| {
            (1..=3u64).all(|c| n.replies.contains_key(&rid(c, 1)))
        });
        format!("{:?}", net.sent_log)
    };
    assert_eq!(run(), run());
}

/// One client of the stress workload: read the version, then CAS on it, forever.
struct StressClient {
    id: u64,
    node: NodeId,
    seq: u64,
    /// The request in flight and, for a CAS, the version it expects.
    in_flight: Option<(RequestId, Option<u64>)>,
    /// Highest version this client has observed; with no deletes a later op never sees less.
    seen_version: u64,
}

impl StressClient {
    /// Checks one reply against what this client saw before, and sends the next request.
    fn on_reply(
        &mut self,
        net: &mut Net,
        body: ResponseBody,
        expected: Option<u64>,
        wins: &mut BTreeSet<u64>,
        seed: u64,
    ) -> Result<(), String> {
        let c = self;
        match (body, expected) {
            (ResponseBody::Range(r), None) => {
                let v = r.kvs.first().map_or(0, |kv| kv.version);
                if v < c.seen_version {
                    return Err(format!(
                        "seed {seed}: client {} read version {v} after {}",
                        c.id, c.seen_version
                    ));
                }
                c.seen_version = v;
                c.seq += 1;
                let id = rid(c.id, c.seq);
                let expect = if v == 0 {
                    Expect::Absent
                } else {
                    Expect::Version(v)
                };
                let value = format!("{}-{}", c.id, c.seq);
                net.submit(c.node, id, cas("x", expect, CasAction::Put(value.into())));
                c.in_flight = Some((id, Some(v)));
            }
            (ResponseBody::Cas(r), Some(v)) => {
                if r.succeeded {
                    if !wins.insert(v) {
                        return Err(format!(
                            "seed {seed}: two CAS succeeded on version {v} (lost update)"
                        ));
                    }
                    c.seen_version = v + 1;
                } else {
                    let now = r.kv.map_or(0, |kv| kv.version);
                    if now < c.seen_version {
                        return Err(format!(
                            "seed {seed}: client {} saw version {now} after {}",
                            c.id, c.seen_version
                        ));
                    }
                    c.seen_version = now;
                }
            }
            (body, _) => return Err(format!("unexpected reply {body:?}")),
        }
        Ok(())
    }
}

/// Read-then-CAS clients on one key under message reordering, duplication, loss and crash /
/// restart of replicas. Checks what linearizability implies for this workload: no two
/// acknowledged CAS succeed on the same expected version (a lost update), and a client never
/// observes the version going back. Returns the first violation.
fn stress(seed: u64, bug: Option<PlantedBug>) -> Result<u64, String> {
    let outcome = stress_with_plan(seed, bug, StressPlan::default())?;
    assert!(
        outcome.crashes > 0,
        "seed {seed}: the fault schedule crashed nothing"
    );
    Ok(outcome.wins)
}

/// What a stress run achieved.
pub(crate) struct StressOutcome {
    /// Successful CAS operations.
    pub(crate) wins: u64,
    /// Changes of the plan that completed.
    pub(crate) changes: usize,
    pub(crate) crashes: u64,
}

/// Membership changes made during a stress run (`reconf_tests.rs`): nodes started as joiners
/// at tick 0 and changes submitted one after the other, each retried until it succeeds.
#[derive(Default)]
pub(crate) struct StressPlan {
    pub(crate) joins: Vec<NodeId>,
    pub(crate) changes: Vec<(NodeId, Op)>,
}

/// Drives a [`StressPlan`]'s changes: one in flight at a time, retried after a failure.
struct ChangeDriver {
    changes: Vec<(NodeId, Op)>,
    next: usize,
    in_flight: Option<(NodeId, RequestId)>,
    not_before_tick: u64,
    seq: u64,
}

impl ChangeDriver {
    const CLIENT: u64 = 999;
    const RETRY_TICKS: u64 = 20;

    fn step(&mut self, net: &mut Net, tick: u64, down: &BTreeMap<NodeId, u64>) {
        if let Some((_, id)) = self.in_flight
            && let Some(replies) = net.replies.remove(&id)
        {
            self.in_flight = None;
            // A change that timed out may have completed meanwhile: its retry is then refused
            // as already applied, which is success for the plan.
            let done_already = |m: &str| {
                m == synod_core::membership::ERR_MEMBER_ID_EXISTS
                    || m == synod_core::membership::ERR_MEMBER_NOT_FOUND
                    || m == crate::coordinator::ERR_MEMBER_REMOVED
            };
            let ok = match &replies[0].1.result {
                Ok(_) => true,
                Err(EngineError::Membership(m)) => done_already(m),
                Err(_) => false,
            };
            if ok {
                self.next += 1;
            } else {
                self.not_before_tick = tick + Self::RETRY_TICKS;
            }
        }
        let Some((at, op)) = self.changes.get(self.next) else {
            return;
        };
        if self.in_flight.is_none() && tick >= self.not_before_tick && !down.contains_key(at) {
            self.seq += 1;
            let id = rid(Self::CLIENT, self.seq);
            net.submit(*at, id, op.clone());
            self.in_flight = Some((*at, id));
        }
    }

    /// The coordinator crashed: its request is gone with it.
    fn on_crash(&mut self, victim: NodeId) {
        if self.in_flight.is_some_and(|(at, _)| at == victim) {
            self.in_flight = None;
        }
    }
}

/// [`stress`] with membership changes.
pub(crate) fn stress_with_plan(
    seed: u64,
    bug: Option<PlantedBug>,
    plan: StressPlan,
) -> Result<StressOutcome, String> {
    let mut net = Net::new(3, |c| {
        c.planted_bug = bug;
        c.request_timeout_ticks = 100;
        c.snapshot_entries = 64;
    });
    for &id in &plan.joins {
        net.join(id);
    }
    let nodes = 3 + plan.joins.len() as u64;
    let mut driver = ChangeDriver {
        changes: plan.changes,
        next: 0,
        in_flight: None,
        not_before_tick: 0,
        seq: 0,
    };
    let mut rng = SplitMix64::new(seed);
    net.chaos = Some(SplitMix64::new(seed ^ 0xDEAD_BEEF));
    let mut clients: Vec<StressClient> = (1..=6u64)
        .map(|id| StressClient {
            id,
            node: 1 + id % nodes,
            seq: 0,
            in_flight: None,
            seen_version: 0,
        })
        .collect();
    let mut wins: BTreeSet<u64> = BTreeSet::new();
    let mut down: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut crashes = 0u64;
    for tick in 0..2_000u64 {
        // Faults: crash a replica now and then (never two at once), restart it later.
        if down.is_empty() && rng.next_u64().is_multiple_of(300) {
            let victim = 1 + rng.next_u64() % nodes;
            net.crash(victim);
            driver.on_crash(victim);
            crashes += 1;
            down.insert(victim, tick + 40);
            for c in clients.iter_mut().filter(|c| c.node == victim) {
                c.in_flight = None; // outcome unknown
            }
        }
        let due: Vec<NodeId> = down
            .iter()
            .filter(|(_, t)| **t <= tick)
            .map(|(n, _)| *n)
            .collect();
        for n in due {
            down.remove(&n);
            net.restart(n);
        }
        driver.step(&mut net, tick, &down);
        for c in clients.iter_mut() {
            if c.in_flight.is_none() && !down.contains_key(&c.node) {
                c.seq += 1;
                let id = rid(c.id, c.seq);
                net.submit(c.node, id, get("x"));
                c.in_flight = Some((id, None));
            }
        }
        net.pump();
        let budget = rng.next_u64() % 40;
        for _ in 0..budget {
            if net.pool.is_empty() {
                break;
            }
            if rng.next_u64().is_multiple_of(20) {
                // Loss.
                let i = (rng.next_u64() % net.pool.len() as u64) as usize;
                net.pool.swap_remove(i);
                continue;
            }
            net.deliver_one();
            net.pump();
        }
        for engine in net.nodes.values_mut().flatten() {
            engine.tick();
        }
        net.pump();
        for c in clients.iter_mut() {
            let Some((id, expected)) = c.in_flight else {
                continue;
            };
            let Some(replies) = net.replies.remove(&id) else {
                continue;
            };
            c.in_flight = None;
            let result = replies[0].1.result.clone();
            let Ok(resp) = result else {
                continue; // timeout: unknown, move on
            };
            c.on_reply(&mut net, resp.body, expected, &mut wins, seed)?;
        }
    }
    Ok(StressOutcome {
        wins: wins.len() as u64,
        changes: driver.next,
        crashes,
    })
}

#[test]
fn stress_with_faults_keeps_cas_linearizable() {
    let mut total_wins = 0;
    for seed in 0..12 {
        match stress(seed, None) {
            Ok(w) => total_wins += w,
            Err(e) => panic!("{e}"),
        }
    }
    // Progress, not just safety: the workload did succeed many times despite the faults.
    assert!(total_wins > 100, "only {total_wins} successful CAS");
}

#[test]
fn planted_bugs_are_caught_by_the_stress_workload() {
    for bug in [
        PlantedBug::AcceptWithoutQuorum,
        PlantedBug::PromiseWithoutHighestAccepted,
    ] {
        let caught = (0..12).find_map(|seed| stress(seed, Some(bug)).err());
        assert!(caught.is_some(), "{bug:?} went unnoticed");
    }
}

#[test]
fn recover_rejects_an_accepted_ballot_above_its_promise() {
    let cfg = EngineConfig::new(1, vec![1, 2, 3], 7);
    let bad = Record::Register(crate::messages::RegisterRecord {
        key: b"k".to_vec(),
        promised: Ballot {
            counter: 1,
            node: 1,
        },
        accepted: Some(crate::messages::AcceptedValue {
            ballot: Ballot {
                counter: 2,
                node: 1,
            },
            value: RegisterValue::empty(),
        }),
    });
    assert!(CasPaxos::recover(cfg, vec![bad]).is_err());
}

#[test]
fn ballot_counters_beyond_the_max_are_dropped_so_issuing_never_overflows() {
    let cfg = EngineConfig::new(1, vec![1, 2, 3], 7);
    let mut node = CasPaxos::recover(cfg, Vec::new()).expect("recover");
    let huge = Ballot {
        counter: u64::MAX,
        node: 2,
    };
    node.receive(
        2,
        Message::Prepare {
            key: b"k".to_vec(),
            ballot: huge,
            version: 0,
        },
    );
    assert!(node.out.messages.is_empty(), "no promise for a huge ballot");
    assert!(node.status().term <= messages::BALLOT_COUNTER_MAX);
}
