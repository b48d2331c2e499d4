//! Egalitarian Paxos (Moraru, Andersen, Kaminsky, "There Is More Consensus in Egalitarian
//! Parliaments", SOSP'13) as a Synod [`LogProtocol`]: leaderless, every replica is the command
//! leader of the commands submitted to it, and commands are ordered only against the
//! commands they *interfere* with (their key footprints overlap and one of them writes).
//!
//! * `types` — instances R.i, ballots (with Sutra's `vbal` apart from `bal`), attributes,
//!   messages and records.
//! * `conflicts` — the per-key index a replica computes `seq` and `deps` from.
//! * `coordinator` — the command leader's PreAccept (fast path) / Accept (slow path) /
//!   Commit (§4.3) and Explicit Prepare recovery (§4.4).
//! * `acceptor` — the other side of those phases.
//! * `execute` — the execution algorithm (§4.3.2): Tarjan's strongly connected components
//!   over committed dependencies, in reverse topological order, by `seq` inside a component.
//!
//! How it fits the replica layer: the "log" the replica layer applies is this replica's own
//! execution order. Replicas execute non-interfering commands in different orders, so their
//! logs differ and the KV store's revisions are local to each replica — which is why
//! [`LogProtocol::CAPABILITIES`] has no store-wide revision (no watch, no history, no leases)
//! and the state is compared by content at quiescence. Linearizable reads are commands that
//! interfere with writes of their keys ([`LogProtocol::READS_AS_COMMANDS`]). There is no
//! leader: [`LogProtocol::leader`] is always this replica, so the replica layer proposes
//! every request where it was submitted.
//!
//! Deliberate simplifications (see docs/engines.md): the fast quorum is the basic protocol's
//! 2F of 2F+1 (2 of 3 — the same as the optimised one — but 4 of 5), so recovery needs no
//! TryPreAccept; no snapshot transfer (a member rejoins from its own disk).

mod acceptor;
mod conflicts;
mod coordinator;
mod execute;
#[cfg(test)]
mod tests;
pub mod types;

pub use types::{Attrs, Ballot, Checkpoint, Instance, InstanceId, Message, Record, Status};

use conflicts::ConflictIndex;
use coordinator::Coord;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use synod_core::{
    Capabilities, Command, EngineConfig, LogProtocol, NodeId, PlantedBug, ProtocolOutput,
    SnapshotAcceptance, SplitMix64, TransferStatus,
};
use types::batch_footprint;

/// Output buffer type for this protocol.
type Out = ProtocolOutput<Message, Record>;

/// Most instances a replica retains (not executed by every member yet). Beyond it new
/// proposals wait: a member that is down holds back garbage collection, and without a
/// snapshot transfer the others must keep what it has not executed.
pub const RETAINED_INSTANCES_MAX: usize = 200_000;

/// Most commands in one instance (a batch of client requests).
const BATCH_MAX: usize = 256;

/// The EPaxos replica.
pub struct EPaxos {
    config: EngineConfig,
    /// This replica's position in `config.members`.
    me: usize,
    now: u64,
    rng: SplitMix64,
    /// Per member position: the instances this replica knows, by slot.
    instances: Vec<BTreeMap<u64, Instance>>,
    next_slot: u64,
    conflicts: ConflictIndex,
    /// Instances this replica coordinates now (its own, or ones it recovers).
    coords: BTreeMap<InstanceId, Coord>,
    /// Own instances still in flight, with the commands this replica proposed in them: if
    /// recovery commits something else there (a no-op), the commands are proposed again.
    own: BTreeMap<u64, Vec<Command>>,
    /// Proposals waiting for the next flush.
    queue: Vec<Command>,
    /// Instances seen but not committed (or needed by execution and unknown), with the tick
    /// at which this replica starts recovering them if they still have not committed.
    waiting: BTreeMap<InstanceId, u64>,
    /// Execution state (see `execute`).
    exec: execute::ExecState,
    /// The execution order: what the replica layer applies. Index `base + i` is entry `i`.
    log: VecDeque<Command>,
    log_base: u64,
    /// Instances executed since the last flush, in order (recorded by `flush`).
    executed_now: Vec<InstanceId>,
    /// Per member position, per member position: what each member reported executed.
    peer_upto: Vec<Vec<u64>>,
    /// Per member position: slots at or below are executed everywhere and dropped.
    gc_floor: Vec<u64>,
    /// Per member position: the tick of the last message from it.
    heard: Vec<u64>,
    /// Per member position: how many members it reported hearing from.
    peer_reach: Vec<usize>,
    /// Statistics: own instances committed on the fast path / the slow path.
    pub fast_commits: u64,
    pub slow_commits: u64,
}

impl EPaxos {
    fn n(&self) -> usize {
        self.config.members.len()
    }

    fn f(&self) -> usize {
        (self.n() - 1) / 2
    }

    fn majority(&self) -> usize {
        self.n() / 2 + 1
    }

    /// The basic protocol's fast quorum, 2F (at least a majority), counting the leader.
    fn fast_quorum(&self) -> usize {
        let q = (2 * self.f()).max(self.majority());
        if self.config.bug(PlantedBug::EpaxosFastQuorumTooSmall) {
            q - 1
        } else {
            q
        }
    }

    fn pos(&self, node: NodeId) -> Option<usize> {
        self.config.members.iter().position(|m| *m == node)
    }

    fn instance(&self, id: InstanceId) -> Option<&Instance> {
        let k = self.pos(id.replica)?;
        self.instances[k].get(&id.slot)
    }

    fn instance_mut(&mut self, id: InstanceId) -> Option<&mut Instance> {
        let k = self.pos(id.replica)?;
        self.instances[k].get_mut(&id.slot)
    }

    /// Executed here, or dropped because every member executed it.
    fn is_executed(&self, id: InstanceId) -> bool {
        match self.pos(id.replica) {
            Some(k) => self.exec.is_executed(k, id.slot),
            None => true,
        }
    }

    /// Below the garbage-collection floor: messages about it are stale.
    fn is_collected(&self, id: InstanceId) -> bool {
        match self.pos(id.replica) {
            Some(k) => id.slot <= self.gc_floor[k],
            None => true,
        }
    }

    /// Stores `inst` (with its footprint) and indexes its attributes.
    fn store(&mut self, id: InstanceId, mut inst: Instance) {
        let Some(k) = self.pos(id.replica) else {
            return;
        };
        inst.footprint = batch_footprint(&inst.cmds);
        if !inst.cmds.is_empty() {
            self.conflicts
                .record(k, id.slot, &inst.footprint, inst.attrs.seq);
        }
        self.instances[k].insert(id.slot, inst);
    }

    /// Starts (or keeps) waiting for `id` to commit.
    fn wait_for(&mut self, id: InstanceId) {
        if !self.is_executed(id) && !self.waiting.contains_key(&id) {
            let deadline = self.recovery_deadline();
            self.waiting.insert(id, deadline);
        }
    }

    fn from_checkpoint(config: &EngineConfig, cp: Option<&Checkpoint>) -> Result<EPaxos, String> {
        let n = config.members.len();
        let me = config
            .members
            .iter()
            .position(|m| *m == config.id)
            .ok_or("this replica is not a member")?;
        let mut e = EPaxos {
            config: config.clone(),
            me,
            now: 0,
            rng: SplitMix64::fork(config.seed, 0xe9a0 ^ config.id),
            instances: vec![BTreeMap::new(); n],
            next_slot: 1,
            conflicts: ConflictIndex::new(n),
            coords: BTreeMap::new(),
            own: BTreeMap::new(),
            queue: Vec::new(),
            waiting: BTreeMap::new(),
            exec: execute::ExecState::new(n),
            log: VecDeque::new(),
            log_base: 0,
            executed_now: Vec::new(),
            peer_upto: vec![vec![0; n]; n],
            gc_floor: vec![0; n],
            heard: vec![0; n],
            peer_reach: vec![n; n],
            fast_commits: 0,
            slow_commits: 0,
        };
        if let Some(cp) = cp {
            if cp.exec_upto.len() != n || cp.gc_floor.len() != n || cp.exec_above.len() != n {
                return Err(format!(
                    "epaxos checkpoint is for {} members, the configuration has {n}",
                    cp.exec_upto.len()
                ));
            }
            e.exec = execute::ExecState::restore(&cp.exec_upto, &cp.exec_above);
            e.gc_floor = cp.gc_floor.clone();
            e.next_slot = cp.next_slot.max(1);
            for (id, inst) in &cp.instances {
                e.store(*id, inst.clone());
            }
        }
        Ok(e)
    }

    fn replay(&mut self, records: &[Record]) -> Result<(), String> {
        for r in records {
            match r {
                Record::Instance { id, inst } => {
                    let mut inst = (**inst).clone();
                    if let Some(old) = self.instance(*id)
                        && old.status == Status::Committed
                    {
                        // A commit is final; a later record can only repeat it.
                        inst.status = Status::Committed;
                    }
                    self.store(*id, inst);
                }
                Record::Promise { id, bal } => match self.instance_mut(*id) {
                    Some(i) => i.bal = i.bal.max(*bal),
                    None => self.store(*id, Instance::promised(*bal)),
                },
                Record::Executed { ids } => {
                    for id in ids {
                        match self.instance(*id) {
                            Some(i) if i.status == Status::Committed => self.execute_one(*id),
                            _ if self.is_executed(*id) => {}
                            _ => {
                                return Err(format!(
                                    "epaxos: execution record names {id}, which is not committed"
                                ));
                            }
                        }
                    }
                }
                Record::Commit { id, attrs } => {
                    let Some(i) = self.instance_mut(*id) else {
                        return Err(format!("epaxos: commit record for unknown instance {id}"));
                    };
                    i.status = Status::Committed;
                    i.attrs = attrs.clone();
                    let inst = i.clone();
                    self.store(*id, inst);
                }
            }
        }
        // Own slots are never reused, and everything recovered waits to commit or execute.
        let own = self.config.id;
        let own_max = self.instances[self.me]
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0);
        self.next_slot = self.next_slot.max(own_max + 1);
        self.next_slot = self.next_slot.max(self.exec.upto(self.me) + 1);
        let known: Vec<(InstanceId, Status)> = self.all_instances();
        for (id, status) in known {
            if self.is_executed(id) {
                continue;
            }
            if status == Status::Committed {
                self.exec.on_commit(id);
            } else {
                self.wait_for(id);
            }
        }
        // Replayed executions are on disk already.
        self.executed_now.clear();
        debug_assert!(self.next_slot > 0 && own > 0);
        Ok(())
    }

    fn all_instances(&self) -> Vec<(InstanceId, Status)> {
        let mut v = Vec::new();
        for (k, space) in self.instances.iter().enumerate() {
            let replica = self.config.members[k];
            for (slot, inst) in space {
                v.push((
                    InstanceId {
                        replica,
                        slot: *slot,
                    },
                    inst.status,
                ));
            }
        }
        v
    }

    /// Garbage collection: drops instances every member executed.
    fn collect(&mut self) {
        let n = self.n();
        self.peer_upto[self.me] = (0..n).map(|k| self.exec.upto(k)).collect();
        for k in 0..n {
            let floor = (0..n).map(|p| self.peer_upto[p][k]).min().unwrap_or(0);
            let floor = floor.min(self.exec.upto(k));
            if floor > self.gc_floor[k] {
                self.gc_floor[k] = floor;
                let keep = self.instances[k].split_off(&(floor + 1));
                self.instances[k] = keep;
            }
        }
        self.conflicts.forget_below(&self.gc_floor);
    }

    /// Counters for reports: (own fast-path commits, own slow-path commits, retained
    /// instances, committed instances waiting to execute, keys in the interference index).
    pub fn stats(&self) -> (u64, u64, usize, usize, usize) {
        (
            self.fast_commits,
            self.slow_commits,
            self.retained(),
            self.exec.backlog(),
            self.conflicts.len(),
        )
    }

    /// Dependency vectors sized for this configuration, slots that exist.
    fn well_formed(&self, m: &Message) -> bool {
        let n = self.n();
        let attrs_ok = |a: &Attrs| a.deps.len() == n;
        let id_ok = |id: &InstanceId| id.slot > 0;
        match m {
            Message::PreAccept { id, attrs, .. }
            | Message::Accept { id, attrs, .. }
            | Message::Commit { id, attrs, .. } => id_ok(id) && attrs_ok(attrs),
            Message::PreAcceptReply { id, ok, attrs, .. } => id_ok(id) && (!ok || attrs_ok(attrs)),
            Message::PrepareReply { id, state, .. } => {
                id_ok(id) && state.as_ref().is_none_or(|r| attrs_ok(&r.attrs))
            }
            Message::AcceptReply { id, .. } | Message::Prepare { id, .. } => id_ok(id),
            Message::Fetch { lo, hi, .. } => lo <= hi,
            Message::Executed { upto, .. } => upto.len() == n,
        }
    }

    fn heard_lately(&self, k: usize) -> bool {
        k == self.me || self.now <= self.heard[k] + 2 * self.config.election_timeout_ticks
    }

    /// Members (this one included) heard from within two election timeouts.
    fn reach(&self) -> usize {
        (0..self.n()).filter(|&k| self.heard_lately(k)).count()
    }

    /// Retained instances, for the simulator's and metrics' reports.
    pub fn retained(&self) -> usize {
        self.instances.iter().map(BTreeMap::len).sum()
    }
}

impl LogProtocol for EPaxos {
    type Message = Message;
    type Record = Record;
    type Checkpoint = Checkpoint;
    /// No snapshot transfer: a constant term.
    type Term = u64;

    const NAME: &'static str = "epaxos";
    const LEADERLESS: bool = true;

    const CAPABILITIES: Capabilities = Capabilities {
        ranges: true,
        transactions: true,
        revisions: false,
        watch: false,
        leases: false,
    };

    const READS_AS_COMMANDS: bool = true;

    const NODE_SESSIONS: bool = false;

    /// A member that lost its storage forgot its promises and what it accepted; answering
    /// as an acceptor could undo a decision, and this EPaxos has no repair from peers.
    const REPAIRS_LOST_STORAGE: bool = false;

    fn recover(
        config: &EngineConfig,
        checkpoint: Option<&Self::Checkpoint>,
        records: &[Self::Record],
        _out: &mut Out,
    ) -> Result<Self, String> {
        if config.members.len() < 3 || config.members.len().is_multiple_of(2) {
            // 2F+1 replicas; one replica alone works too (everything commits locally).
            if config.members.len() != 1 {
                return Err(format!(
                    "epaxos needs an odd number of members (2F+1), got {}",
                    config.members.len()
                ));
            }
        }
        let mut e = EPaxos::from_checkpoint(config, checkpoint)?;
        e.log_base = checkpoint.map(|c| c.log_idx).unwrap_or(0);
        e.replay(records)?;
        Ok(e)
    }

    fn receive(
        &mut self,
        from: NodeId,
        message: Self::Message,
        _transfers: &dyn TransferStatus<Self::Term>,
        out: &mut Out,
    ) {
        let Some(p) = self.pos(from) else {
            return;
        };
        if !self.well_formed(&message) {
            // A frame from a member that decoded but cannot be ours (another configuration,
            // a bug): dropping it is what a lost message would do, and losses are survived.
            return;
        }
        self.heard[p] = self.now;
        match message {
            Message::PreAccept {
                id,
                bal,
                cmds,
                attrs,
            } => self.on_pre_accept(from, id, bal, cmds, attrs, out),
            Message::PreAcceptReply { id, bal, ok, attrs } => {
                self.on_pre_accept_reply(from, id, bal, ok, attrs, out)
            }
            Message::Accept {
                id,
                bal,
                cmds,
                attrs,
            } => self.on_accept(from, id, bal, cmds, attrs, out),
            Message::AcceptReply { id, bal, ok } => self.on_accept_reply(from, id, bal, ok, out),
            Message::Commit {
                id,
                bal,
                cmds,
                attrs,
            } => self.on_commit(id, bal, cmds, attrs, out),
            Message::Prepare { id, bal } => self.on_prepare(from, id, bal, out),
            Message::PrepareReply { id, bal, ok, state } => {
                self.on_prepare_reply(from, id, bal, ok, state, out)
            }
            Message::Fetch { replica, lo, hi } => self.on_fetch(from, replica, lo, hi, out),
            Message::Executed { upto, reach } => {
                if let Some(p) = self.pos(from)
                    && upto.len() == self.n()
                {
                    for (have, got) in self.peer_upto[p].iter_mut().zip(upto) {
                        *have = (*have).max(got);
                    }
                    self.peer_reach[p] = reach as usize;
                }
            }
        }
    }

    fn tick(&mut self, _transfers: &dyn TransferStatus<Self::Term>, out: &mut Out) {
        self.now += 1;
        self.retransmit(out);
        if self.now.is_multiple_of(self.config.heartbeat_ticks) {
            self.fetch_missing(out);
        }
        self.start_recoveries(out);
        if self.now.is_multiple_of(2 * self.config.heartbeat_ticks) {
            let upto: Vec<u64> = (0..self.n()).map(|k| self.exec.upto(k)).collect();
            let reach = self.reach() as u32;
            for p in self.config.peers() {
                let m = Message::Executed {
                    upto: upto.clone(),
                    reach,
                };
                out.send(p, m);
            }
            self.collect();
        }
    }

    fn flush(&mut self, out: &mut Out) {
        while !self.queue.is_empty() && self.retained() < RETAINED_INSTANCES_MAX {
            let take = self
                .queue
                .len()
                .min(BATCH_MAX.min(self.config.batch_entries_max));
            let cmds: Vec<Command> = self.queue.drain(..take).collect();
            self.lead(cmds, out);
        }
        self.execute();
        if !self.executed_now.is_empty() {
            let ids = std::mem::take(&mut self.executed_now);
            out.records.push(Record::Executed { ids });
        }
    }

    fn propose(&mut self, command: Command) -> bool {
        if self.queue.len() >= self.config.pending_requests_max {
            return false;
        }
        self.queue.push(command);
        true
    }

    /// EPaxos has no leader: every replica leads the commands submitted to it. The one
    /// exception is a replica that cannot reach a majority (a partial partition): it hands
    /// requests to the best-connected peer it still hears from, through the replica layer's
    /// forwarding, instead of letting them wait for the request timeout.
    fn leader(&self) -> Option<NodeId> {
        let majority = self.majority();
        if self.reach() >= majority {
            return Some(self.config.id);
        }
        let best = (0..self.n())
            .filter(|&k| k != self.me && self.heard_lately(k) && self.peer_reach[k] >= majority)
            .max_by_key(|&k| (self.peer_reach[k], std::cmp::Reverse(k)));
        Some(best.map_or(self.config.id, |k| self.config.members[k]))
    }

    fn is_leader(&self) -> bool {
        true
    }

    fn start_read_round(&mut self, _round: u64, _out: &mut Out) -> Option<u64> {
        None
    }

    fn log_len(&self) -> u64 {
        self.log_base + self.log.len() as u64
    }

    fn decided_idx(&self) -> u64 {
        self.log_len()
    }

    fn compacted_idx(&self) -> u64 {
        self.log_base
    }

    fn entry(&self, idx: u64) -> &Command {
        &self.log[(idx - self.log_base) as usize]
    }

    fn compact(&mut self, idx: u64) -> Self::Checkpoint {
        assert_eq!(
            idx,
            self.log_len(),
            "epaxos checkpoints only the whole execution order (its executed set is current)"
        );
        self.log.clear();
        self.log_base = idx;
        let (exec_upto, exec_above) = self.exec.save();
        let mut instances = Vec::new();
        for (k, space) in self.instances.iter().enumerate() {
            let replica = self.config.members[k];
            for (slot, inst) in space {
                instances.push((
                    InstanceId {
                        replica,
                        slot: *slot,
                    },
                    inst.clone(),
                ));
            }
        }
        Checkpoint {
            log_idx: idx,
            exec_upto,
            exec_above,
            gc_floor: self.gc_floor.clone(),
            next_slot: self.next_slot,
            instances,
        }
    }

    fn snapshot_term(&self) -> Self::Term {
        0
    }

    fn accept_snapshot(&self, _from: NodeId, _term: Self::Term) -> SnapshotAcceptance {
        SnapshotAcceptance::Ignore
    }

    fn install_snapshot(&mut self, _term: Self::Term, idx: u64) -> Self::Checkpoint {
        // Never reached: `accept_snapshot` refuses every transfer.
        self.compact(idx.min(self.log_len()).max(self.log_len()))
    }

    fn snapshot_installed(&mut self, _out: &mut Out) {}

    fn snapshot_delivered(&mut self, _to: NodeId, _term: u64, _idx: u64, _out: &mut Out) {}

    fn path_commits(&self) -> (u64, u64) {
        (self.fast_commits, self.slow_commits)
    }

    fn term(&self) -> u64 {
        0
    }

    fn role(&self) -> &'static str {
        "replica"
    }
}

/// Members that are not this replica, for broadcasts.
fn others(config: &EngineConfig) -> Vec<NodeId> {
    config.peers().collect()
}

/// Sorted, deduplicated set helper for reply bookkeeping.
type Voters = BTreeSet<NodeId>;
