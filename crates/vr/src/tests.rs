//! A small deterministic harness that drives 3 or 5 [`Vr`] instances through the
//! [`LogProtocol`] trait: a message queue with seeded loss, duplication, delay and reordering;
//! partitions (blocked links); crashes and restarts from exactly the records (and checkpoint)
//! each replica persisted, optionally wiped; a crash between an early Prepare and the write of
//! its batch; compaction and instantaneous snapshot transfer. It checks safety on every
//! apply (every position is applied with the same command everywhere, compacted or not) and on
//! every confirmed read (its read index covers every write applied anywhere before it began).

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use synod_core::kv::{Op, PutRequest};
use synod_core::{ClientId, Origin, PlantedBug, RequestId};

struct NoTransfers;

impl TransferStatus<View> for NoTransfers {
    fn sending_to(&self, _: NodeId, _: View) -> bool {
        false
    }
    fn receiving_from(&self, _: NodeId, _: View) -> bool {
        false
    }
}

fn cmd(seq: u64) -> Command {
    Command {
        id: RequestId {
            client: ClientId(1),
            seq,
        },
        first_unacked: 0,
        op: Op::Put(PutRequest {
            key: b"k".to_vec(),
            value: seq.to_le_bytes().to_vec(),
            prev_kv: false,
            ..Default::default()
        }),
        origin: Origin {
            node: 1,
            incarnation: 0,
            seq,
        },
    }
}

fn seq_of(c: &Command) -> u64 {
    c.id.seq
}

struct Node {
    vr: Option<Vr>,
    config: EngineConfig,
    records: Vec<Record>,
    checkpoint: Option<Checkpoint>,
    /// The replica layer's applied state: the command at every applied position.
    applied: Vec<Command>,
    /// What the KV snapshot stored with the checkpoint holds.
    snap_applied: Vec<Command>,
    boots: u64,
}

#[derive(Default)]
struct Faults {
    loss_permille: u64,
    dup_permille: u64,
    delay_permille: u64,
    /// Crash between sending a batch's early messages and writing its records.
    torn_permille: u64,
}

struct Sim {
    nodes: BTreeMap<NodeId, Node>,
    queue: Vec<(NodeId, NodeId, Message)>,
    rng: SplitMix64,
    faults: Faults,
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// The command applied at each position by whoever applied it first.
    chosen: Vec<Command>,
    snapshot_entries: u64,
    next_seq: u64,
    violations: Vec<String>,
    /// (node, round) → (read index, positions applied anywhere when the round began).
    reads: BTreeMap<(NodeId, u64), (u64, u64)>,
    reads_confirmed: u64,
    next_round: u64,
    /// Every message sent, by (from, kind), for tests that look at what was said.
    sent_log: Vec<(NodeId, NodeId, Message)>,
    log_sends: bool,
    /// With `VR_TRACE` set: what happened, for debugging a failing seed.
    trace: Option<Vec<String>>,
}

impl Sim {
    fn new(n: u64, seed: u64, bug: Option<PlantedBug>) -> Sim {
        let members: Vec<NodeId> = (1..=n).collect();
        let mut sim = Sim {
            nodes: BTreeMap::new(),
            queue: Vec::new(),
            rng: SplitMix64::fork(seed, 99),
            faults: Faults::default(),
            blocked: BTreeSet::new(),
            chosen: Vec::new(),
            snapshot_entries: 0,
            next_seq: 1,
            violations: Vec::new(),
            reads: BTreeMap::new(),
            reads_confirmed: 0,
            next_round: 1,
            sent_log: Vec::new(),
            log_sends: false,
            trace: std::env::var("VR_TRACE").ok().map(|_| Vec::new()),
        };
        for id in members.clone() {
            let mut config = EngineConfig::new(id, members.clone(), seed);
            config.planted_bug = bug;
            config.batch_entries_max = 8;
            sim.nodes.insert(
                id,
                Node {
                    vr: None,
                    config,
                    records: Vec::new(),
                    checkpoint: None,
                    applied: Vec::new(),
                    snap_applied: Vec::new(),
                    boots: 0,
                },
            );
        }
        for id in members {
            sim.boot(id);
        }
        sim
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    fn vr(&self, id: NodeId) -> &Vr {
        self.nodes[&id].vr.as_ref().expect("node is up")
    }

    fn up(&self, id: NodeId) -> bool {
        self.nodes[&id].vr.is_some()
    }

    fn boot(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("member");
        node.boots += 1;
        let mut config = node.config.clone();
        config.boot_nonce = config.seed ^ (id << 32) ^ node.boots;
        config.first_boot = node.boots == 1;
        node.applied = node.snap_applied.clone();
        self.note(|| format!("boot {id}"));
        let node = self.nodes.get_mut(&id).expect("member");
        let mut out = Out::default();
        match Vr::recover(&config, node.checkpoint.as_ref(), &node.records, &mut out) {
            Ok(vr) => node.vr = Some(vr),
            Err(e) => {
                self.violations
                    .push(format!("node {id} failed to recover: {e}"));
                return;
            }
        }
        self.output(id, out);
        self.apply(id);
    }

    fn crash(&mut self, id: NodeId) {
        self.note(|| format!("crash {id}"));
        self.nodes.get_mut(&id).expect("member").vr = None;
    }

    fn wipe(&mut self, id: NodeId) {
        self.note(|| format!("wipe {id}"));
        let node = self.nodes.get_mut(&id).expect("member");
        node.vr = None;
        node.records.clear();
        node.checkpoint = None;
        node.snap_applied.clear();
    }

    fn note(&mut self, s: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(s());
        }
    }

    fn state(&self, id: NodeId) -> String {
        match self.nodes[&id].vr.as_ref() {
            None => format!("{id}:down"),
            Some(v) => format!(
                "{id}:{} v{} ln{} len{} c{}",
                v.role(),
                v.term(),
                v.last_normal_view(),
                v.log_len(),
                v.decided_idx()
            ),
        }
    }

    /// One input to `id` followed by its `flush`, as the replica layer's `Engine::ready` does.
    fn input(&mut self, id: NodeId, f: impl FnOnce(&mut Vr, &mut Out)) {
        let Some(vr) = self.nodes.get_mut(&id).and_then(|n| n.vr.as_mut()) else {
            return;
        };
        let mut out = Out::default();
        f(vr, &mut out);
        vr.flush(&mut out);
        if self.trace.is_some() {
            let recs: Vec<String> = out.records.iter().map(brief_record).collect();
            let st = self.state(id);
            self.note(|| format!("    => {st} records {recs:?}"));
        }
        self.output(id, out);
        self.apply(id);
    }

    /// Persist the records, then send (early messages may leave before the write; a torn
    /// crash sends them and loses the rest).
    fn output(&mut self, id: NodeId, out: Out) {
        let torn = !out.early.is_empty()
            && !out.records.is_empty()
            && self.rng.chance_permille(self.faults.torn_permille);
        let mut sends = out.early;
        if torn {
            self.note(|| format!("TORN crash of {id}"));
            self.enqueue(id, sends);
            self.crash(id);
            return;
        }
        self.nodes
            .get_mut(&id)
            .expect("member")
            .records
            .extend(out.records);
        sends.extend(out.messages);
        self.enqueue(id, sends);
        for e in out.events {
            match e {
                ProtocolEvent::ReadConfirmed { round } => self.read_confirmed(id, round),
                ProtocolEvent::SendSnapshot { to } => self.snapshot(id, to),
            }
        }
    }

    fn enqueue(&mut self, from: NodeId, sends: Vec<(NodeId, Message)>) {
        for (to, m) in sends {
            if self.log_sends {
                self.sent_log.push((from, to, m.clone()));
            }
            self.queue.push((from, to, m));
        }
    }

    fn read_confirmed(&mut self, id: NodeId, round: u64) {
        let Some((idx, applied_at_start)) = self.reads.remove(&(id, round)) else {
            self.violations
                .push(format!("node {id}: unknown read round {round}"));
            return;
        };
        self.reads_confirmed += 1;
        if idx < applied_at_start {
            self.violations.push(format!(
                "node {id}: read round {round} confirmed with read index {idx} but {applied_at_start} \
                 positions were applied before it began"
            ));
        }
    }

    fn start_read(&mut self, id: NodeId) -> Option<u64> {
        if !self.up(id) {
            return None;
        }
        let round = self.next_round;
        self.next_round += 1;
        // Registered first: with n = 1 the round is confirmed inside the call.
        let len = self.vr(id).log_len();
        self.reads
            .insert((id, round), (len, self.chosen.len() as u64));
        let mut idx = None;
        self.input(id, |vr, out| idx = vr.start_read_round(round, out));
        match idx {
            Some(i) => assert_eq!(i, len, "the read index is the op-number"),
            None => {
                self.reads.remove(&(id, round));
            }
        }
        idx
    }

    /// Instantaneous snapshot transfer of `from`'s applied state (if the link is up).
    fn snapshot(&mut self, from: NodeId, to: NodeId) {
        if !self.up(from) || !self.up(to) || self.blocked.contains(&(from, to)) {
            return;
        }
        let term = self.vr(from).snapshot_term();
        let applied = self.nodes[&from].applied.clone();
        let idx = applied.len() as u64;
        let acceptance = self.vr(to).accept_snapshot(from, term);
        if acceptance != SnapshotAcceptance::Receive || idx <= self.vr(to).decided_idx() {
            return;
        }
        let node = self.nodes.get_mut(&to).expect("member");
        let vr = node.vr.as_mut().expect("up");
        let cp = vr.install_snapshot(term, idx);
        node.checkpoint = Some(cp);
        node.records.clear();
        node.applied = applied.clone();
        node.snap_applied = applied;
        self.input(to, |vr, out| vr.snapshot_installed(out));
        self.input(from, |vr, out| vr.snapshot_delivered(to, term, idx, out));
    }

    /// The replica layer's apply loop, agreement check and checkpoints.
    fn apply(&mut self, id: NodeId) {
        let snapshot_entries = self.snapshot_entries;
        let node = self.nodes.get_mut(&id).expect("member");
        let Some(vr) = node.vr.as_mut() else {
            return;
        };
        let decided = vr.decided_idx();
        for i in node.applied.len() as u64..decided {
            let c = vr.entry(i).clone();
            match self.chosen.get(i as usize) {
                Some(first) if *first != c => self.violations.push(format!(
                    "node {id} applied seq {} at {i}, another applied seq {}",
                    seq_of(&c),
                    seq_of(first)
                )),
                Some(_) => {}
                None => self.chosen.push(c.clone()),
            }
            node.applied.push(c);
        }
        let applied = node.applied.len() as u64;
        if snapshot_entries > 0 && applied >= vr.compacted_idx() + snapshot_entries {
            let cp = vr.compact(applied);
            node.checkpoint = Some(cp);
            node.records.clear();
            node.snap_applied = node.applied.clone();
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, m: Message) {
        let b = brief(&m);
        self.note(|| format!("{from}->{to} {b}"));
        self.input(to, |vr, out| vr.receive(from, m, &NoTransfers, out));
    }

    /// One round: every message in flight is delivered (shuffled; some lost, duplicated or
    /// held back for a later round), then every live replica ticks.
    fn round(&mut self) {
        let mut batch = std::mem::take(&mut self.queue);
        self.rng.shuffle(&mut batch);
        for (from, to, m) in batch {
            if self.rng.chance_permille(self.faults.delay_permille) {
                self.queue.push((from, to, m));
                continue;
            }
            if self.blocked.contains(&(from, to))
                || self.rng.chance_permille(self.faults.loss_permille)
            {
                continue;
            }
            if self.rng.chance_permille(self.faults.dup_permille) {
                self.queue.push((from, to, m.clone()));
            }
            self.deliver(from, to, m);
        }
        for id in self.ids() {
            self.input(id, |vr, out| vr.tick(&NoTransfers, out));
        }
    }

    fn rounds(&mut self, k: usize) {
        for _ in 0..k {
            self.round();
        }
    }

    /// Proposes `k` new commands at whoever leads (the replica layer's forwarding).
    fn propose(&mut self, k: u64) -> Vec<u64> {
        let leaders: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|id| self.up(*id) && self.vr(*id).is_leader())
            .collect();
        let mut seqs = Vec::new();
        for _ in 0..k {
            let s = self.next_seq;
            self.next_seq += 1;
            seqs.push(s);
            for id in &leaders {
                self.input(*id, |vr, _| {
                    vr.propose(cmd(s));
                });
            }
        }
        seqs
    }

    /// Re-proposes every seq in `seqs` not applied yet (what origins' re-forwarding does).
    fn repropose(&mut self, seqs: &[u64]) {
        let done: BTreeSet<u64> = self.chosen.iter().map(seq_of).collect();
        let leaders: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|id| self.up(*id) && self.vr(*id).is_leader())
            .collect();
        for s in seqs.iter().filter(|s| !done.contains(s)) {
            for id in &leaders {
                self.input(*id, |vr, _| {
                    vr.propose(cmd(*s));
                });
            }
        }
    }

    fn all_applied(&self, seqs: &[u64]) -> bool {
        let done: BTreeSet<u64> = self.chosen.iter().map(seq_of).collect();
        seqs.iter().all(|s| done.contains(s))
    }

    /// Runs rounds (re-proposing) until every seq is applied and every live replica has
    /// applied everything. False after `max_rounds`.
    fn settle(&mut self, seqs: &[u64], max_rounds: usize) -> bool {
        for r in 0..max_rounds {
            if self.all_applied(seqs) && self.converged() {
                return true;
            }
            if r % 20 == 19 {
                self.repropose(seqs);
            }
            self.round();
        }
        false
    }

    fn converged(&self) -> bool {
        let n = self.chosen.len();
        self.nodes
            .values()
            .all(|node| node.vr.is_some() && node.applied.len() == n)
    }

    fn primaries(&self) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|id| self.up(*id) && self.vr(*id).role() == "primary")
            .collect()
    }

    fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.blocked.clear();
    }

    fn assert_safe(&self) {
        assert!(
            self.violations.is_empty(),
            "violations: {:?}",
            self.violations
        );
    }
}

fn brief(m: &Message) -> String {
    let seqs = |es: &[Command]| -> String {
        match (es.first(), es.last()) {
            (Some(a), Some(b)) => format!("[{}..{}]", seq_of(a), seq_of(b)),
            _ => "[]".into(),
        }
    };
    match m {
        Message::Prepare {
            view,
            start,
            entries,
            commit,
        } => format!("Prepare v{view} @{start} {} c{commit}", seqs(entries)),
        Message::StartView {
            view,
            start,
            entries,
            commit,
        } => format!("StartView v{view} @{start} {} c{commit}", seqs(entries)),
        Message::DoViewChange {
            view,
            last_normal,
            op_number,
            commit,
            entries,
        } => format!(
            "DVC v{view} ln{last_normal} op{op_number} c{commit} {}",
            seqs(entries)
        ),
        Message::NewState { view, chunk } => format!(
            "NewState v{view} @{} {} c{} synced {}",
            chunk.start,
            seqs(&chunk.entries),
            chunk.commit,
            chunk.synced
        ),
        Message::RecoveryResponse {
            view,
            normal,
            chunk,
            ..
        } => format!(
            "RecoveryResponse v{view} normal {normal} chunk {:?}",
            chunk
                .as_ref()
                .map(|c| (c.start, seqs(&c.entries), c.commit, c.synced))
        ),
        other => format!("{other:?}"),
    }
}

fn brief_record(r: &Record) -> String {
    match r {
        Record::Append { from, entries } => format!("Append@{from}+{}", entries.len()),
        Record::Replace {
            view,
            last_normal,
            from,
            entries,
        } => format!("Replace v{view} ln{last_normal} @{from}+{}", entries.len()),
        Record::Committed { from, entries } => format!("Committed@{from}+{}", entries.len()),
        other => format!("{other:?}"),
    }
}

#[test]
fn commits_progress_with_a_primary_on_three_and_five() {
    for n in [1, 3, 5] {
        let mut sim = Sim::new(n, 7, None);
        sim.rounds(2);
        assert_eq!(sim.primaries(), vec![1], "n = {n}: members[0] leads view 0");
        let seqs = sim.propose(50);
        assert!(sim.settle(&seqs, 200), "n = {n}: not everything committed");
        assert_eq!(
            sim.chosen.len(),
            50,
            "n = {n}: nothing re-proposed without faults"
        );
        // In proposal order: one primary, one batch after another.
        let order: Vec<u64> = sim.chosen.iter().map(seq_of).collect();
        assert_eq!(order, seqs);
        for id in sim.ids() {
            assert_eq!(sim.vr(id).term(), 0);
            assert_eq!(sim.vr(id).decided_idx(), 50);
        }
        sim.assert_safe();
    }
}

#[test]
fn view_change_after_the_primary_is_cut_off_keeps_every_committed_op() {
    for n in [3, 5] {
        let mut sim = Sim::new(n, 11, None);
        let before = sim.propose(20);
        assert!(sim.settle(&before, 200));
        sim.isolate(1);
        // Proposals at the old primary now cannot commit.
        let lost = sim.propose(5);
        sim.rounds(60);
        let primaries: Vec<NodeId> = sim.primaries().into_iter().filter(|p| *p != 1).collect();
        assert_eq!(primaries.len(), 1, "n = {n}: one new primary");
        let p = primaries[0];
        let view = sim.vr(p).term();
        assert!(view >= 1);
        assert_eq!(p, (view % n) + 1, "the primary of view v is members[v % n]");
        assert!(
            sim.chosen.iter().all(|c| !lost.contains(&seq_of(c))),
            "n = {n}: an op only the cut-off primary had was committed"
        );
        let after = sim.propose(20);
        sim.rounds(40);
        for id in sim.ids().into_iter().filter(|id| *id != 1) {
            let vr = sim.vr(id);
            assert!(
                vr.decided_idx() >= 40,
                "n = {n}: node {id} decided {}",
                vr.decided_idx()
            );
            for (i, s) in before.iter().enumerate() {
                assert_eq!(seq_of(vr.entry(i as u64)), *s);
            }
        }
        // The old primary learns of the new view and catches up once it can hear again.
        sim.heal();
        let mut all = before.clone();
        all.extend(after);
        assert!(sim.settle(&all, 200), "n = {n}: no convergence after heal");
        assert_eq!(sim.vr(1).role(), "backup");
        sim.assert_safe();
    }
}

#[test]
fn a_restarted_replica_recovers_before_it_takes_part() {
    let mut sim = Sim::new(3, 5, None);
    let seqs = sim.propose(10);
    assert!(sim.settle(&seqs, 200));
    sim.crash(2);
    sim.isolate(2);
    sim.log_sends = true;
    sim.boot(2);
    assert_eq!(sim.vr(2).role(), "recovering");
    assert_eq!(sim.vr(2).leader(), None);
    sim.rounds(40);
    assert_eq!(
        sim.vr(2).role(),
        "recovering",
        "recovered without any response"
    );
    let said: Vec<&Message> = sim
        .sent_log
        .iter()
        .filter(|(f, _, _)| *f == 2)
        .map(|(_, _, m)| m)
        .collect();
    assert!(!said.is_empty());
    assert!(
        said.iter().all(|m| matches!(m, Message::Recovery { .. })),
        "a recovering replica said something else: {said:?}"
    );
    // A recovering replica ignores a Prepare and a StartViewChange.
    let before = sim.vr(2).log_len();
    sim.deliver(
        1,
        2,
        Message::Prepare {
            view: 0,
            start: before,
            entries: vec![cmd(1000)],
            commit: 0,
        },
    );
    sim.deliver(
        3,
        2,
        Message::StartViewChange {
            view: 5,
            connected: true,
            joined: vec![3],
        },
    );
    assert_eq!(sim.vr(2).log_len(), before);
    assert_eq!(sim.vr(2).term(), 0);
    sim.heal();
    let more = sim.propose(5);
    assert!(sim.settle(&more, 200));
    assert_eq!(sim.vr(2).role(), "backup");
    sim.assert_safe();
}

#[test]
fn a_wiped_replica_recovers_its_log_from_the_primary() {
    let mut sim = Sim::new(3, 8, None);
    let seqs = sim.propose(30);
    assert!(sim.settle(&seqs, 200));
    sim.wipe(3);
    sim.boot(3);
    assert_eq!(sim.vr(3).role(), "recovering");
    assert_eq!(sim.vr(3).log_len(), 0);
    let more = sim.propose(5);
    assert!(sim.settle(&more, 200));
    assert_eq!(sim.vr(3).role(), "backup");
    assert_eq!(sim.vr(3).log_len(), sim.vr(1).log_len());
    assert!(sim.vr(3).decided_idx() >= 35);
    sim.assert_safe();
}

#[test]
fn state_transfer_fills_a_gap() {
    let mut sim = Sim::new(3, 9, None);
    let first = sim.propose(5);
    assert!(sim.settle(&first, 200));
    // Backup 3 misses several batches (batch_entries_max = 8) but still hears heartbeats
    // afterwards: the next Prepare leaves a gap.
    sim.blocked.insert((1, 3));
    let missed = sim.propose(30);
    sim.rounds(3);
    assert!(sim.vr(3).log_len() < 35);
    sim.heal();
    sim.log_sends = true;
    let last = sim.propose(3);
    let mut all = missed;
    all.extend(last);
    assert!(sim.settle(&all, 200));
    assert!(
        sim.sent_log
            .iter()
            .any(|(f, t, m)| *f == 3 && *t == 1 && matches!(m, Message::GetState { .. })),
        "no GetState after the gap"
    );
    assert_eq!(sim.vr(3).log_len(), sim.vr(1).log_len());
    sim.assert_safe();
}

#[test]
fn a_replica_behind_a_compaction_gets_a_snapshot() {
    let mut sim = Sim::new(3, 10, None);
    sim.snapshot_entries = 10;
    sim.crash(3);
    let seqs = sim.propose(60);
    sim.rounds(60);
    assert!(sim.all_applied(&seqs));
    assert!(sim.vr(1).compacted_idx() > 0);
    sim.boot(3);
    assert!(sim.settle(&seqs, 200));
    assert!(sim.vr(3).compacted_idx() >= 10, "no snapshot was installed");
    sim.assert_safe();
}

#[test]
fn reads_are_confirmed_only_with_a_quorum() {
    for n in [1, 3, 5] {
        let mut sim = Sim::new(n, 12, None);
        let seqs = sim.propose(5);
        assert!(sim.settle(&seqs, 200));
        assert_eq!(sim.start_read(1), Some(5));
        sim.rounds(3);
        assert_eq!(sim.reads_confirmed, 1, "n = {n}");
        if n == 1 {
            continue;
        }
        // A backup cannot start a round.
        assert_eq!(sim.start_read(2), None);
        // With only f - 1 backups reachable nothing is confirmed.
        let reachable = (n - 1) / 2 - 1;
        for b in 2 + reachable..=n {
            sim.blocked.insert((1, b));
            sim.blocked.insert((b, 1));
        }
        assert!(sim.start_read(1).is_some());
        sim.rounds(4);
        assert_eq!(
            sim.reads_confirmed, 1,
            "n = {n}: confirmed without a quorum"
        );
        sim.heal();
        sim.rounds(4);
        assert_eq!(sim.reads_confirmed, 2, "n = {n}: not confirmed after heal");
        sim.assert_safe();
    }
}

#[test]
fn a_deposed_primary_confirms_no_read() {
    let mut sim = Sim::new(3, 13, None);
    let seqs = sim.propose(5);
    assert!(sim.settle(&seqs, 200));
    sim.isolate(1);
    sim.rounds(40);
    let more = sim.propose(5);
    sim.rounds(20);
    assert!(sim.all_applied(&more));
    // Node 1 still believes it leads view 0; its read must not be confirmed, even once it
    // hears from the others again (they are in a newer view).
    assert_eq!(sim.vr(1).role(), "primary");
    assert!(sim.start_read(1).is_some());
    sim.heal();
    sim.rounds(10);
    assert_eq!(sim.reads_confirmed, 0);
    assert_ne!(sim.vr(1).role(), "primary");
    sim.assert_safe();
}

#[test]
fn records_replay_to_the_same_state_and_bad_records_are_errors() {
    let mut sim = Sim::new(3, 14, None);
    let seqs = sim.propose(20);
    assert!(sim.settle(&seqs, 200));
    sim.isolate(1);
    sim.rounds(40);
    sim.heal();
    let more = sim.propose(10);
    assert!(sim.settle(&more, 200));
    for id in sim.ids() {
        let node = &sim.nodes[&id];
        let s = DurableState::replay(node.checkpoint.as_ref(), &node.records).expect("replay");
        let vr = sim.vr(id);
        assert_eq!(s.view(), vr.term());
        assert_eq!(s.last_normal(), vr.last_normal_view());
        assert_eq!(s.log_len(), vr.log_len());
        assert!(s.commit() <= vr.decided_idx());
    }
    let bad = [
        vec![Record::View(3), Record::View(2)],
        vec![Record::Append {
            from: 1,
            entries: vec![cmd(1)],
        }],
        vec![Record::Commit(1)],
        vec![
            Record::Append {
                from: 0,
                entries: vec![cmd(1), cmd(2)],
            },
            Record::Commit(2),
            Record::Replace {
                view: 1,
                last_normal: 1,
                from: 1,
                entries: vec![],
            },
        ],
        vec![Record::Replace {
            view: 1,
            last_normal: 2,
            from: 0,
            entries: vec![],
        }],
    ];
    for records in bad {
        assert!(
            DurableState::replay(None, &records).is_err(),
            "accepted {records:?}"
        );
    }
}

/// The fault mix of one chaos run.
#[derive(Clone, Copy)]
struct Chaos {
    rounds: u64,
    loss_permille: u64,
    /// Crashes between an early Prepare and its batch's write.
    torn: bool,
    /// Disks lost (one replica at a time).
    wipes: bool,
}

impl Chaos {
    const DEFAULT: Chaos = Chaos {
        rounds: 600,
        loss_permille: 150,
        torn: true,
        wipes: true,
    };

    /// `VR_ROUNDS`, `VR_LOSS`, `VR_NOTORN`, `VR_NOWIPE` override the default (sweeps only).
    fn from_env() -> Chaos {
        let num = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(d)
        };
        Chaos {
            rounds: num("VR_ROUNDS", Chaos::DEFAULT.rounds),
            loss_permille: num("VR_LOSS", Chaos::DEFAULT.loss_permille),
            torn: std::env::var("VR_NOTORN").is_err(),
            wipes: std::env::var("VR_NOWIPE").is_err(),
        }
    }
}

/// One fault step of a chaos run: crashes, wipes, restarts, partitions.
fn chaos_faults(
    sim: &mut Sim,
    rng: &mut SplitMix64,
    c: Chaos,
    down: &mut BTreeMap<NodeId, u64>,
    round: u64,
) {
    let n = sim.nodes.len();
    if rng.chance_permille(25) {
        let id = *rng.pick(&sim.ids());
        // Wipe only when every other replica is up with its state (at most one replica
        // without its disk at a time, f >= 1).
        let wipe = n > 1
            && c.wipes
            && down.is_empty()
            && sim
                .ids()
                .iter()
                .all(|i| sim.up(*i) && sim.vr(*i).role() != "recovering")
            && rng.chance_permille(200);
        if wipe {
            sim.wipe(id);
        } else {
            sim.crash(id);
        }
        down.insert(id, round + rng.range(2, 30));
    }
    // Torn crashes happen inside `output`: notice them.
    for id in sim.ids() {
        if !sim.up(id) && !down.contains_key(&id) {
            down.insert(id, round + rng.range(2, 30));
        }
    }
    let due: Vec<NodeId> = down
        .iter()
        .filter(|(_, r)| **r <= round)
        .map(|(i, _)| *i)
        .collect();
    for id in due {
        down.remove(&id);
        sim.boot(id);
    }
    if rng.chance_permille(30) {
        let a = *rng.pick(&sim.ids());
        let b = *rng.pick(&sim.ids());
        if a != b {
            sim.blocked.insert((a, b));
        }
    }
    if rng.chance_permille(40) {
        let id = *rng.pick(&sim.ids());
        sim.isolate(id);
    }
    if rng.chance_permille(60) {
        sim.heal();
    }
}

/// One seeded run with every fault; `Err` describes the first safety or liveness failure.
fn chaos_run(seed: u64, n: u64, bug: Option<PlantedBug>, c: Chaos) -> Result<(), String> {
    let mut sim = Sim::new(n, seed, bug);
    let mut rng = SplitMix64::fork(seed, 7);
    sim.faults = Faults {
        loss_permille: c.loss_permille,
        dup_permille: 30,
        delay_permille: 100,
        torn_permille: if c.torn { 100 } else { 0 },
    };
    sim.snapshot_entries = if seed.is_multiple_of(2) { 16 } else { 0 };
    let mut down: BTreeMap<NodeId, u64> = BTreeMap::new();
    for round in 0..c.rounds {
        if rng.chance_permille(300) {
            sim.propose(rng.range(1, 4));
        }
        if rng.chance_permille(60) {
            let id = *rng.pick(&sim.ids());
            sim.start_read(id);
        }
        chaos_faults(&mut sim, &mut rng, c, &mut down, round);
        sim.round();
        if !sim.violations.is_empty() {
            if let Some(t) = &sim.trace {
                let from = t.len().saturating_sub(400);
                for line in &t[from..] {
                    eprintln!("{line}");
                }
            }
            return Err(format!("seed {seed}: {:?}", sim.violations));
        }
    }
    // Heal everything: the cluster must converge and commit new work.
    sim.faults = Faults::default();
    sim.heal();
    for id in sim.ids() {
        if !sim.up(id) {
            sim.boot(id);
        }
    }
    let last = sim.propose(5);
    let live = sim.settle(&last, 400);
    if !sim.violations.is_empty() {
        return Err(format!("seed {seed}: {:?}", sim.violations));
    }
    if !live {
        let roles: Vec<(NodeId, &str, u64, u64)> = sim
            .ids()
            .into_iter()
            .filter(|id| sim.up(*id))
            .map(|id| {
                (
                    id,
                    sim.vr(id).role(),
                    sim.vr(id).term(),
                    sim.vr(id).decided_idx(),
                )
            })
            .collect();
        return Err(format!("seed {seed}: no progress after heal: {roles:?}"));
    }
    Ok(())
}

#[test]
fn chaos_keeps_decided_prefixes_in_agreement_and_recovers() {
    let mut failures = Vec::new();
    for seed in 0..400 {
        for n in [3, 5] {
            if let Err(e) = chaos_run(seed, n, None, Chaos::DEFAULT) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
}

/// The harness catches planted bugs (a run that fails a check or trips an assertion).
#[test]
fn chaos_catches_planted_bugs() {
    let bugs = [
        PlantedBug::VrCommitTooEarly,
        PlantedBug::VrLogByOpNumberOnly,
        PlantedBug::VrPrepareWithGap,
        PlantedBug::VrRecoveringAnswers,
        PlantedBug::VrSkipTruncateOnStateTransfer,
    ];
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut missed = Vec::new();
    for bug in bugs {
        let caught = (0..40).any(|seed| {
            [3, 5].into_iter().any(|n| {
                // A broken safety check or a tripped assertion; not a liveness timeout.
                std::panic::catch_unwind(|| chaos_run(seed, n, Some(bug), Chaos::DEFAULT))
                    .map_or(true, |r| r.is_err_and(|e| !e.contains("no progress")))
            })
        });
        if !caught {
            missed.push(bug);
        }
    }
    std::panic::set_hook(hook);
    assert!(missed.is_empty(), "planted bugs not caught: {missed:?}");
}

/// A long sweep: `VR_SEEDS=5000 cargo test -p synod-vr chaos_sweep -- --ignored`.
#[test]
#[ignore]
fn chaos_sweep() {
    let seeds: u64 = std::env::var("VR_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let first: u64 = std::env::var("VR_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut failures = Vec::new();
    for seed in first..seeds {
        for n in [3, 5] {
            match std::panic::catch_unwind(|| chaos_run(seed, n, None, Chaos::from_env())) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("n {n} {e}")),
                Err(p) => failures.push(format!(
                    "n {n} seed {seed}: panic {:?}",
                    p.downcast_ref::<String>()
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
}

// ---- Leader transfer (transfer.rs) ----

#[test]
fn a_transfer_is_a_view_change_to_the_targets_view_that_keeps_every_op() {
    for n in [3, 5] {
        let mut sim = Sim::new(n, 13, None);
        let before = sim.propose(20);
        assert!(sim.settle(&before, 200));
        assert_eq!(sim.primaries(), vec![1]);
        let to = n;
        sim.input(1, |vr, out| {
            vr.transfer_leadership(to, out)
                .expect("the primary starts it");
        });
        sim.rounds(40);
        assert_eq!(sim.primaries(), vec![to], "n = {n}: the target leads");
        // The first view after 0 whose primary (members[v mod n]) is the target.
        assert_eq!(sim.vr(to).term(), to - 1);
        let after = sim.propose(10);
        assert!(sim.settle(&after, 200), "n = {n}: commits go on");
        assert_eq!(sim.vr(1).decided_idx(), 30);
        sim.assert_safe();
        // A backup cannot start one, and the target must be another member.
        let r = synod_core::LogProtocol::transfer_leadership(
            sim.nodes
                .get_mut(&1)
                .and_then(|s| s.vr.as_mut())
                .expect("n1"),
            2,
            &mut Out::default(),
        );
        assert!(r.is_err(), "{r:?}");
    }
}

/// A backup loses its disk and restarts cut off, so it stays recovering (the primary heard its
/// Recovery); the primary is asked to hand off to it, then writes go on while it is still cut
/// off. Returns whether the hand-off was accepted and in how many of the next 40 rounds the
/// group had no normal primary.
fn hand_off_to_a_recovering_backup(bug: Option<PlantedBug>) -> (bool, usize) {
    let mut sim = Sim::new(3, 21, bug);
    let seqs = sim.propose(10);
    assert!(sim.settle(&seqs, 200));
    sim.log_sends = true;
    sim.wipe(3);
    sim.isolate(3);
    sim.boot(3);
    assert_eq!(sim.vr(3).role(), "recovering");
    let ask = (sim.sent_log.iter())
        .find(|(f, t, m)| *f == 3 && *t == 1 && matches!(m, Message::Recovery { .. }))
        .map(|(_, _, m)| m.clone())
        .expect("the recovering backup asked the primary");
    sim.deliver(3, 1, ask);
    let mut accepted = false;
    sim.input(1, |vr, out| {
        accepted = vr.transfer_leadership(3, out).is_ok()
    });
    let mut leaderless = 0;
    for _ in 0..40 {
        sim.round();
        leaderless += usize::from(sim.primaries().is_empty());
    }
    sim.propose(5);
    sim.rounds(100);
    assert_eq!(sim.vr(1).decided_idx(), 15, "writes go on with n1 and n2");
    sim.heal();
    let last = sim.propose(5);
    assert!(sim.settle(&last, 400));
    assert_eq!(
        sim.vr(3).role(),
        "backup",
        "n3 recovered once the cut healed"
    );
    sim.assert_safe();
    (accepted, leaderless)
}

#[test]
fn no_hand_off_to_a_recovering_backup() {
    let (accepted, leaderless) = hand_off_to_a_recovering_backup(None);
    assert!(!accepted, "the primary handed off to a recovering backup");
    assert_eq!(leaderless, 0, "the primary stays");
    let (accepted, leaderless) =
        hand_off_to_a_recovering_backup(Some(PlantedBug::VrTransferToRecovering));
    assert!(accepted);
    assert!(
        leaderless >= 5,
        "planted vr-transfer-to-recovering: leaderless for {leaderless} rounds only"
    );
}
