//! The event loop: one simulated cluster run, driven by a seed over virtual time.
//!
//! Everything happens in a single thread in the order of a priority queue keyed by
//! (virtual time in µs, sequence number), so two events at the same time are processed in the
//! order they were scheduled and the run is a pure function of ([`RunConfig`], engine). After
//! every input to an engine the loop drains `ready()` through `Ready::persist` into the
//! simulated disk, then hands the messages to the simulated network and the replies to the
//! simulated clients — the same order the node runtime uses.
//!
//! Checks made while running: agreement (every (applied index, digest) pair any replica reports
//! is compared with every other replica's at the same index, for engines that report an
//! `applied_digest`; once they converge, their etcd HashKV too — the hash the node's
//! corruption check compares between members), persist-before-send (no unsynced record on a node that sends), no output
//! from a crashed node (its engine does not exist), and liveness after healing. At the end:
//! convergence of applied indexes and the linearizability of the history. A log-less engine
//! (CASPaxos) reports a `state_digest` instead, comparable only at quiescence: once healed and
//! done, the simulator reads every key through every node and then requires equal digests
//! (the `quiesce` module).
//!
//! With `watchers > 0` (the `watch` module) every node also feeds watchers from what it applied:
//! a feed that skips or repeats revisions outside a snapshot install fails at once, and at the
//! end the watch checker (`synod_checker::watch`) judges every watcher, range read, acknowledged
//! write and transaction compare against the revisions the replicas applied.

use crate::client::{self, CLIENT_ATTEMPTS_MAX, Knowledge, OpenOp, SimClient};
use crate::disk::{CrashMode, SimDisk};
use crate::faults::{
    Damage, Fault, FaultSet, SCHEDULE_WINDOW_US, Scenario, ScheduledFault, random_schedule_prone,
};
use crate::network::Network;
use crate::trace::{Trace, TraceEntry, TraceKind};

pub(crate) mod compactions;
mod directory_order;
mod group_feed;
mod leases;
mod quiesce;
pub mod reconfig;
mod splitter;
mod transfer;
mod watch;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};
use synod_checker::leases::LeaseReport;
use synod_checker::watch::WatchReport;
use synod_checker::{CheckOptions, Verdict, check_history};
use synod_core::history::{History, HistoryOp};
use synod_core::{
    ClientId, ClientReply, ClientRequest, Engine, EngineConfig, EngineError, EngineStatus, NodeId,
    PlantedBug, SplitMix64,
};

/// Virtual time between two ticks of one node (the node runtime's tick is 10 ms too).
pub const TICK_US: u64 = 10_000;
/// One-way latency between a client and a node: lowest and highest.
pub const CLIENT_LATENCY_MIN_US: u64 = 200;
pub const CLIENT_LATENCY_MAX_US: u64 = 1_000;
/// Delay before retrying after `Busy`.
pub const CLIENT_BUSY_BACKOFF_US: u64 = 20_000;
/// Time an fsync takes when the planted `AckBeforeFsync` bug defers it.
pub const FSYNC_LATENCY_MIN_US: u64 = 1_000;
pub const FSYNC_LATENCY_MAX_US: u64 = 8_000;
/// Failure messages kept per run (the first ones are the interesting ones).
pub const FAILURES_REPORTED_MAX: usize = 20;
/// With crash faults on, the chance (per mille) that a batch with early messages and records
/// ends in a machine crash between the two: the window `Ready::take_early` opens.
pub const EARLY_WINDOW_CRASH_PERMILLE: u64 = 5;
/// Inputs a write-stalled node holds at most (beyond: dropped, like a full socket buffer).
pub const HELD_INPUTS_MAX: usize = 100_000;
/// How long a node crashed in the early window stays down.
pub const EARLY_RESTART_MIN_US: u64 = 50_000;
pub const EARLY_RESTART_MAX_US: u64 = 2_000_000;

/// Everything that determines one run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    pub nodes: usize,
    pub faults: FaultSet,
    /// Concurrent clients, each with one operation open at a time.
    pub clients: usize,
    /// Operations each client starts (retries of reads do not count).
    pub ops_per_client: usize,
    /// Size of the key set; small so that operations collide.
    pub keys: u64,
    pub planted_bug: Option<PlantedBug>,
    /// Faults happen in `[0, fault_window_us)`; at its end everything heals.
    pub fault_window_us: u64,
    /// Run one of the paper's scenarios instead of a random schedule.
    pub scenario: Option<Scenario>,
    /// Wall-clock budget for the linearizability check.
    pub check_budget: Duration,
    pub election_timeout_ticks: u64,
    /// Engine-side request timeout (the engine answers `Timeout` after it).
    pub request_timeout_ticks: u64,
    /// Client-side timeout of one attempt (a crashed node never answers).
    pub client_timeout_us: u64,
    /// After healing, every pending operation must complete within this (and all replicas
    /// must converge within it once clients are done).
    pub liveness_bound_us: u64,
    /// Keep a copy of the whole history in the result (for `--history-dir`).
    pub keep_history: bool,
    /// Scenario runs: fail if the downtime under the scenario's topology exceeds this many
    /// election timeouts (the paper's liveness claim); `None` = only measure it.
    pub scenario_downtime_max_ets: Option<f64>,
    /// `EngineConfig::snapshot_entries` of every replica: checkpoint (and compact the log)
    /// every this many applied entries; 0 = never.
    pub snapshot_entries: u64,
    /// A fixed fault schedule to run instead of a random one (targeted scenarios, e.g. a
    /// follower isolated while the leader compacts). Faults should end by `fault_window_us`.
    pub fixed_schedule: Option<Vec<ScheduledFault>>,
    /// Watchers kept open per node, with the watch workload (compactions, reads at past
    /// revisions, ranges, multi-key transactions) and the watch checker; 0 = none (the run is
    /// exactly what it was before watchers existed). Engines without revisions ignore it.
    pub watchers: usize,
    /// Lease clients (see [`crate::lease_ops`]): each grants short leases, attaches keys,
    /// keeps some alive, revokes or abandons them, and reads lease keys; the lease checker
    /// judges the run. 0 = none (the run is exactly what it was before leases existed).
    /// Engines without leases ignore it.
    pub leases: usize,
    /// `EngineConfig::split_keys` of every replica (the partitioned engines); empty = one
    /// group.
    pub split_keys: Vec<Vec<u8>>,
    /// Partitioned runs: an operator splits and merges ranges at random keys during the
    /// fault window (`sim/splitter.rs`).
    pub splits: bool,
    /// Placement: an operator moves a random key's group from a random member to another
    /// during the fault window, and asks an unfinished move again until it is done
    /// (`sim/splitter.rs`).
    pub moves: bool,
    /// Placement: `EngineConfig::partition_rebalance` — the groups' leaders move groups until
    /// no member hosts two more than another, which the end of the run checks.
    pub rebalance: bool,
    /// Partitioned runs: the engines split and merge ranges themselves, by size and by load
    /// (`auto_split_keys`, `auto_split_writes`, `auto_split_reads`, `auto_merge_keys`), with
    /// thresholds low enough for the run's few keys and seconds.
    pub auto_layout: bool,
    /// With `auto_layout`: no splits by size, so the writes and reads alone decide the layout
    /// (size splits, at one key, would otherwise leave load nothing to cut); reads count
    /// only here, so `auto_layout` runs alone replay as they did before reads counted.
    pub auto_by_load: bool,
    /// Partitioned runs: the compaction workload (`sim/compactions.rs`) — compactions and
    /// reads at past revisions among the register clients' operations, and the check that an
    /// acknowledged compaction holds in every group that had reached its revision.
    pub compactions: bool,
    /// Partitioned runs: one workload delete in two is a delete of a range of keys (over
    /// several groups where split keys lie inside it), with previous values; the history has
    /// it as a delete of each key of the range, the previous values saying which it deleted
    /// (`client::history_entries`). Off, the run is what it was before (no draw is made).
    pub range_deletes: bool,
    /// `EngineConfig::engine_threads` of every replica: the partitioned engine's pool. What
    /// a replica emits must not depend on it (checked by running seeds both ways).
    pub engine_threads: usize,
    /// Partitioned runs: `EngineConfig::range_directory` — the meta group, checked for
    /// agreement like every group, and its directory against the applied layout at the end.
    pub range_directory: bool,
    /// Partitioned runs: `EngineConfig::partition_replicas` — each group after the first on
    /// this many members (0: on every member), requests for the others relayed.
    pub partition_replicas: usize,
}

impl RunConfig {
    pub fn new(seed: u64, nodes: usize) -> Self {
        let election_timeout_ticks = 10;
        RunConfig {
            seed,
            nodes,
            faults: FaultSet::ALL,
            clients: 5,
            ops_per_client: 40,
            keys: 4,
            planted_bug: None,
            fault_window_us: 6_000_000,
            scenario: None,
            check_budget: Duration::from_secs(20),
            election_timeout_ticks,
            request_timeout_ticks: 5 * election_timeout_ticks,
            client_timeout_us: 8 * election_timeout_ticks * TICK_US,
            liveness_bound_us: 50 * election_timeout_ticks * TICK_US,
            keep_history: false,
            scenario_downtime_max_ets: None,
            snapshot_entries: 0,
            fixed_schedule: None,
            watchers: 0,
            leases: 0,
            split_keys: Vec::new(),
            splits: false,
            moves: false,
            rebalance: false,
            auto_layout: false,
            engine_threads: 1,
            auto_by_load: false,
            compactions: false,
            range_deletes: false,
            range_directory: false,
            partition_replicas: 0,
        }
    }

    pub fn election_timeout_us(&self) -> u64 {
        self.election_timeout_ticks * TICK_US
    }
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub seed: u64,
    pub engine: &'static str,
    pub nodes: usize,
    pub planted_bug: Option<PlantedBug>,
    /// Empty = the run passed every check.
    pub failures: Vec<String>,
    pub schedule: Vec<String>,
    /// The last events, readable (filled only when the run failed).
    pub trace_tail: Vec<String>,
    pub trace_hash: u64,
    pub history: Option<History>,
    pub verdict: Verdict,
    pub ops_ok: u64,
    pub ops_unknown: u64,
    pub ops_failed: u64,
    pub messages: u64,
    pub events: u64,
    pub virtual_time_us: u64,
    pub wall: Duration,
    /// Of `wall`, the time the linearizability check took.
    pub check_wall: Duration,
    /// Scenario runs: longest interval with no operation completing while the scenario's
    /// topology was in place, and whether any operation completed after it began.
    pub downtime_us: u64,
    pub recovered: bool,
    /// Agreement was actually checked: some replica reported an `applied_digest`, or (for a
    /// `state_digest` engine, CASPaxos) the digests were compared after the final reads.
    pub agreement_checked: bool,
    /// The converged replicas' HashKV (etcd's consistency hash, the one members compare) was
    /// computed and found equal: log engines with store revisions, once converged.
    pub hash_kv_checked: bool,
    /// The `synod sim` command line that replays this run exactly (faults and workload depth
    /// included); `None` when the run's settings have no flags (fixed schedules, scenarios).
    pub rerun: Option<String>,
    /// The watch checker's report, in runs with watchers.
    pub watch: Option<WatchReport>,
    /// Watch-workload operations that completed (not in the linearizability history).
    pub watch_ops_ok: u64,
    /// Compactions acknowledged, and reads at past revisions refused (compacted), in runs
    /// with the compaction workload.
    pub compactions_acknowledged: u64,
    pub past_reads_refused: u64,
    pub past_reads_checked: u64,
    /// Scans of every key answered (each checked at the end of the run).
    pub scans_checked: u64,
    /// The lease checker's report, in runs with lease clients.
    pub leases: Option<LeaseReport>,
    /// Lease-workload operations answered with success (not in the linearizability history).
    pub lease_ops_ok: u64,
    /// Reconfiguration runs: the operator's plan and how many of its changes were
    /// acknowledged.
    pub reconfig_plan: &'static str,
    pub reconfig_steps: usize,
    /// Runs with the `transfer` fault: leader hand-offs started, and completed (the target
    /// led within the bound).
    pub transfers_started: u64,
    pub transfers_completed: u64,
    /// Partitioned runs: range splits and merges that took effect (answered at some member).
    pub splits_done: u64,
    pub merges_done: u64,
    /// Placement: moves answered as done.
    pub moves_done: u64,
    /// Partitioned runs: groups that ever applied an entry, and groups left at the end (on
    /// the first live member): the layout changes made by anyone, the engines included.
    pub groups_at_start: u64,
    pub groups_seen: u64,
    pub groups_at_end: u64,
    /// Partitioned runs: revisions and moves of keys between groups the watch feed check
    /// saw (see the `group_feed` module).
    pub feed_revisions: u64,
    pub feed_moves: u64,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failure report: seed, engine, nodes, schedule, what failed, the last events.
    pub fn report(&self) -> String {
        let mut s = format!(
            "FAILED seed {} engine {} nodes {}{}\n  rerun: {}\n",
            self.seed,
            self.engine,
            self.nodes,
            self.planted_bug
                .map_or(String::new(), |b| format!(" planted bug {}", b.name())),
            self.rerun.as_deref().unwrap_or(
                "no synod sim flags express this run (fixed schedule or scenario): replay it through the test that ran it"
            ),
        );
        s += "  fault schedule:\n";
        for f in &self.schedule {
            s += &format!("    {f}\n");
        }
        if !self.agreement_checked {
            s += "  agreement/convergence by applied digest: not applicable (the engine reports no applied digest: no replicated log)\n";
        }
        s += "  failures:\n";
        for f in &self.failures {
            s += &format!("    {f}\n");
        }
        s += &format!("  last {} events:\n", self.trace_tail.len());
        for l in &self.trace_tail {
            s += &format!("    {l}\n");
        }
        s
    }
}

enum Ev<M> {
    Tick(NodeId),
    Deliver {
        from: NodeId,
        to: NodeId,
        message: M,
    },
    Submit {
        node: NodeId,
        request: ClientRequest,
    },
    Reply {
        slot: usize,
        node: NodeId,
        reply: ClientReply,
    },
    ClientStart(usize),
    ClientTimeout {
        slot: usize,
        seq: u64,
        attempt: u32,
    },
    ClientRetry {
        slot: usize,
        attempt: u32,
    },
    FaultStart(usize),
    FaultEnd(usize),
    HealAll,
    Operator(reconfig::OperatorEv),
    /// Leader transfers (runs with the `transfer` fault).
    Mover(transfer::MoverEv),
    /// Range splits (partitioned runs).
    Splitter(splitter::SplitterEv),
    DiskSync {
        node: NodeId,
        incarnation: u64,
    },
    /// Restart after a crash in the early-message window.
    EarlyRestart {
        node: NodeId,
        fault_id: u64,
    },
    /// A watcher opens or resumes.
    Watch(watch::WatchTask),
}

struct Scheduled<M> {
    time_us: u64,
    seq: u64,
    ev: Ev<M>,
}

impl<M> PartialEq for Scheduled<M> {
    fn eq(&self, other: &Self) -> bool {
        (self.time_us, self.seq) == (other.time_us, other.seq)
    }
}
impl<M> Eq for Scheduled<M> {}
impl<M> PartialOrd for Scheduled<M> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<M> Ord for Scheduled<M> {
    // Reversed: BinaryHeap is a max-heap and we want the earliest (time, seq) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time_us, other.seq).cmp(&(self.time_us, self.seq))
    }
}

struct NodeSlot<E: Engine> {
    config: EngineConfig,
    /// `None` while crashed: no input reaches it and it can produce no output.
    engine: Option<E>,
    disk: SimDisk<E::Record>,
    /// Bumped by every crash, so a deferred fsync of an earlier life does nothing.
    incarnation: u64,
    /// Faults currently keeping this node down; it restarts when the set empties.
    down_by: BTreeSet<u64>,
    /// Storage damage its next start will find (`Fault::Damage`).
    damage: Option<Damage>,
    /// Write-stall faults in force: while any is, inputs wait in `held` (the node's engine
    /// thread is blocked retrying a write) and its ticks are lost.
    stalled_by: BTreeSet<u64>,
    held: Vec<Ev<E::Message>>,
    /// A spare slot is not a member until the operator adds it (reconfiguration runs).
    provisioned: bool,
    /// Removed from the cluster and stopped for good.
    retired: bool,
}

struct Sim<E: Engine> {
    cfg: RunConfig,
    now_us: u64,
    next_seq: u64,
    queue: BinaryHeap<Scheduled<E::Message>>,
    /// The members that exist now: the original ones, plus those the operator added, less
    /// those it removed (reconfiguration runs).
    members: Vec<NodeId>,
    nodes: Vec<NodeSlot<E>>,
    net: Network,
    rng_net: SplitMix64,
    rng_work: SplitMix64,
    rng_fault: SplitMix64,
    /// Draws for crashes inside the early-message window (a stream of its own so that the fault
    /// schedule of a seed does not depend on how many batches had early messages).
    rng_early: SplitMix64,
    /// Fault ids for early-window crashes (counting down from the top, away from schedule ids).
    next_early_fault: u64,
    clients: Vec<SimClient>,
    slot_by_client: BTreeMap<ClientId, usize>,
    next_client_id: u64,
    knowledge: Knowledge,
    history: Vec<HistoryOp>,
    trace: Trace<E::Message>,
    /// applied index → (digest, first node that reported it).
    /// (group, applied index) → the digest first reported there, and by whom.
    agreement: BTreeMap<(u64, u64), (u64, NodeId)>,
    /// (node, group) → the highest applied index of its trail already compared (reset when
    /// the node boots: what it applies again from its checkpoint is compared again).
    trail_seen: BTreeMap<(NodeId, u64), u64>,
    /// Per member, its last copy of the range directory (runs with one): no key's owner goes
    /// back.
    directory_order: directory_order::DirectoryOrder,
    failures: Vec<String>,
    schedule: Vec<ScheduledFault>,
    heal_at_us: u64,
    healed: bool,
    /// Clients start no new operation after this (scenario runs).
    clients_stop_at_us: Option<u64>,
    think_max_us: u64,
    completions_us: Vec<u64>,
    converged: bool,
    /// See [`RunResult::hash_kv_checked`].
    hash_kv_checked: bool,
    /// Some replica reported an applied digest (see [`RunResult::agreement_checked`]).
    digest_seen: bool,
    /// State-digest engines (CASPaxos): the final reads and the last digests compared.
    quiesce: quiesce::Quiesce,
    /// Watchers, their feeds and the watch checker's evidence (runs with `watchers > 0`).
    watch: watch::WatchHub,
    /// The partitioned engines' per-group watch feed, checked (partitioned runs).
    group_feed: group_feed::GroupFeed,
    /// Lease clients and their history (runs with `leases > 0`).
    leases: leases::LeaseHub,
    /// The compaction workload (partitioned runs with `compactions`).
    compactions: compactions::Compactions,
    ops_ok: u64,
    ops_unknown: u64,
    ops_failed: u64,
    /// Membership changes (runs with the `reconfig` fault).
    operator: reconfig::Operator,
    /// Leader transfers (runs with the `transfer` fault).
    mover: transfer::Mover,
    splitter: splitter::Splitter,
}

/// Where a member's copy of the range directory (partitioned runs with one) differs from the
/// layout its groups applied (each range's first key, group and voters), or its meta group
/// from the cluster's members: `None` if it
/// does not (or there is no directory). Checked once the run is quiet — the directory is
/// recorded after a split or merge, so it may lag meanwhile, never for good.
fn directory_off_by(s: &EngineStatus, placed: Option<&[PlacedRange]>) -> Option<String> {
    let d = s.directory.as_ref()?;
    let layout: Vec<(&[u8], u64, &[NodeId])> = match placed {
        Some(all) => all
            .iter()
            .map(|(start, g, voters)| (start.as_slice(), *g, voters.as_slice()))
            .collect(),
        None => s
            .groups
            .iter()
            .map(|g| (g.start.as_slice(), g.group, g.voters.as_slice()))
            .collect(),
    };
    let recorded: Vec<(&[u8], u64, &[NodeId])> = d
        .entries
        .iter()
        .map(|e| (e.start.as_slice(), e.group, e.members.as_slice()))
        .collect();
    if recorded != layout {
        return Some(format!("directory {recorded:?} but layout {layout:?}"));
    }
    // Placement: every move recorded (`range move`) finished, or was given up, by a leader of
    // its group.
    if !d.moves.is_empty() {
        return Some(format!("directory records unfinished moves {:?}", d.moves));
    }
    let voters = s.configuration.voters();
    (d.meta.voters != voters || d.meta.learners != s.configuration.learners())
        .then(|| format!("directory group voters {:?}", d.meta.voters))
}

/// A range's first key, group and voters.
type PlacedRange = (Vec<u8>, u64, Vec<NodeId>);

/// Placement: the layout of every member's groups together (no member hosts them all), each
/// group's first key, id and voters in key order — what the directory must record.
fn placed_layout(st: &[(NodeId, EngineStatus)]) -> Vec<PlacedRange> {
    let mut all: BTreeMap<Vec<u8>, (u64, Vec<NodeId>)> = BTreeMap::new();
    for (_, s) in st {
        for g in &s.groups {
            all.entry(g.start.clone())
                .or_insert_with(|| (g.group, g.voters.clone()));
        }
    }
    all.into_iter().map(|(k, (g, v))| (k, g, v)).collect()
}

/// Placement with rebalancing: how many groups each of the cluster's `voters` hosts, if the
/// busiest hosts two more than the idlest — what the groups' leaders must even out once the run
/// is quiet. The first range's group lives on every member and is not counted.
fn unbalanced(placed: &[PlacedRange], voters: &[NodeId]) -> Option<String> {
    let hosts: BTreeMap<u64, Vec<NodeId>> = (placed.iter().skip(1))
        .map(|(_, g, v)| (*g, v.clone()))
        .collect();
    synod_partition::plan_move(&hosts, voters, &[])?;
    let mut load: BTreeMap<NodeId, usize> = voters.iter().map(|v| (*v, 0)).collect();
    for v in hosts.values().flatten() {
        if let Some(n) = load.get_mut(v) {
            *n += 1;
        }
    }
    Some(format!("groups per member {load:?} are not even"))
}

/// Partitioned runs: a group whose leader leads two groups more than another of its voters
/// (`synod_partition::leaders_uneven`), from the leaders the groups' own leaders claim (the
/// first range's group counted, not handed off) — what the hand-offs must even out once the
/// run is quiet (`leaders.rs`).
fn leaders_uneven(st: &[(NodeId, EngineStatus)]) -> Option<String> {
    let mut hosts: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
    let mut leaders: BTreeMap<u64, NodeId> = BTreeMap::new();
    let mut first: Option<(&[u8], u64)> = None;
    for (id, s) in st {
        for g in &s.groups {
            hosts.entry(g.group).or_insert_with(|| g.voters.clone());
            if g.leader == Some(*id) {
                leaders.insert(g.group, *id);
            }
            if first.is_none_or(|(start, _)| g.start.as_slice() < start) {
                first = Some((g.start.as_slice(), g.group));
            }
        }
    }
    let (_, first) = first?;
    hosts.remove(&first);
    let fixed: Vec<NodeId> = leaders.remove(&first).into_iter().collect();
    let (g, from, to) = synod_partition::leaders_uneven(&hosts, &leaders, &fixed)?;
    Some(format!(
        "group {g} led by n{from}, which leads two groups more than its voter n{to} \
         (leaders {leaders:?}, the first group's {fixed:?})"
    ))
}

/// What every member's copy of the directory must agree on once converged.
fn directory_view(s: &EngineStatus) -> Option<(&[synod_core::DirectoryEntry], u64, Option<u64>)> {
    let d = s.directory.as_ref()?;
    Some((&d.entries, d.meta.applied_index, d.meta.applied_digest))
}

fn fail(failures: &mut Vec<String>, msg: String) {
    if failures.len() < FAILURES_REPORTED_MAX {
        failures.push(msg);
    }
}

/// Watchers per node for engine `E`: none where the engine keeps no revisions (CASPaxos).
fn watchers_per_node<E: Engine>(cfg: &RunConfig) -> usize {
    // Watchers and lease clients follow a fixed member set; reconfiguration runs judge
    // through the clients' history only.
    if E::capabilities().revisions && !cfg.faults.reconfig {
        cfg.watchers
    } else {
        0
    }
}

/// Lease clients for engine `E`: none where the engine has no leases (CASPaxos).
fn lease_clients<E: Engine>(cfg: &RunConfig) -> usize {
    if E::capabilities().leases && !cfg.faults.reconfig {
        cfg.leases
    } else {
        0
    }
}

/// Runs one seed of engine `E` and checks it.
pub fn run_seed<E: Engine>(cfg: &RunConfig) -> RunResult {
    let wall_start = Instant::now();
    let mut sim = Sim::<E>::new(cfg.clone());
    // An engine that detects a broken invariant (say, one instance committed twice with
    // different contents) panics; the run then fails with the message instead of taking the
    // whole sweep down.
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.run()));
    if let Err(panic) = run {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(no message)".to_string());
        sim.failures.insert(0, format!("engine panic: {msg}"));
        sim.healed = false;
    }
    sim.finish(wall_start)
}

impl<E: Engine> Sim<E> {
    fn new(cfg: RunConfig) -> Self {
        assert!(cfg.nodes >= 1 && cfg.clients >= 1 && cfg.keys >= 1);
        let members: Vec<NodeId> = (1..=cfg.nodes as u64).collect();
        let spares = if cfg.faults.reconfig {
            reconfig::SPARES
        } else {
            0
        };
        let slots: Vec<NodeId> = (1..=(cfg.nodes + spares) as u64).collect();
        let mut rng_net = SplitMix64::fork(cfg.seed, 1);
        let rng_work = SplitMix64::fork(cfg.seed, 2);
        let mut rng_fault = SplitMix64::fork(cfg.seed, 3);
        let net = Network::new(&slots, &mut rng_net);
        let nodes = slots
            .iter()
            .map(|&id| {
                let spare = !members.contains(&id);
                // A spare knows the original members as whom to ask for its state.
                let mut known = members.clone();
                if spare {
                    known.push(id);
                }
                let mut config = EngineConfig::new(id, known, cfg.seed ^ (id << 48));
                config.election_timeout_ticks = cfg.election_timeout_ticks;
                config.request_timeout_ticks = cfg.request_timeout_ticks;
                config.planted_bug = cfg.planted_bug;
                config.keep_applied_trail = true;
                config.snapshot_entries = cfg.snapshot_entries;
                config.join = spare;
                config.split_keys = cfg.split_keys.clone();
                config.engine_threads = cfg.engine_threads;
                config.range_directory = cfg.range_directory;
                config.partition_replicas = cfg.partition_replicas;
                config.partition_rebalance = cfg.rebalance;
                if cfg.auto_layout {
                    // A group of 2 keys or more splits; writes at 4/s for 5 s split too; two
                    // ranges of at most 1 key together merge after 2 s without a change. By
                    // load only: no size splits, and reads at 4/s split as well.
                    config.auto_split_keys = u64::from(!cfg.auto_by_load);
                    config.auto_split_writes = 4;
                    config.auto_split_reads = if cfg.auto_by_load { 4 } else { 0 };
                    config.auto_merge_keys = 2;
                    config.auto_merge_quiet_looks = 2;
                }
                NodeSlot {
                    config,
                    engine: None,
                    disk: SimDisk::new(),
                    incarnation: 0,
                    down_by: BTreeSet::new(),
                    damage: None,
                    stalled_by: BTreeSet::new(),
                    held: Vec::new(),
                    provisioned: !spare,
                    retired: false,
                }
            })
            .collect();
        let (schedule, heal_at_us, clients_stop_at_us, think_max_us) = match cfg.scenario {
            None => {
                let schedule = match &cfg.fixed_schedule {
                    Some(fixed) => fixed.clone(),
                    None => {
                        // Placement: a group lives on `partition_replicas` members, and loses
                        // its state if more than its f of them lose theirs.
                        let prone = match cfg.partition_replicas {
                            0 => (members.len() - 1) / 2,
                            r => (r - 1) / 2,
                        };
                        let (set, window) = (cfg.faults, cfg.fault_window_us);
                        random_schedule_prone(&mut rng_fault, &members, set, window, prone)
                    }
                };
                // Spread each client's operations over the fault window.
                let think = 2 * cfg.fault_window_us / cfg.ops_per_client.max(1) as u64;
                (schedule, cfg.fault_window_us, None, think)
            }
            Some(s) => {
                let start = 2_000_000;
                let heal = start + cfg.fault_window_us;
                (
                    s.schedule(start, heal, 1_000_000),
                    heal,
                    Some(heal + 500_000),
                    20_000,
                )
            }
        };
        Sim {
            now_us: 0,
            next_seq: 0,
            queue: BinaryHeap::new(),
            members,
            nodes,
            net,
            rng_net,
            rng_work,
            rng_fault,
            rng_early: SplitMix64::fork(cfg.seed, 7),
            next_early_fault: u64::MAX,
            clients: Vec::new(),
            slot_by_client: BTreeMap::new(),
            next_client_id: 1,
            knowledge: Knowledge::default(),
            history: Vec::new(),
            trace: Trace::new(),
            agreement: BTreeMap::new(),
            trail_seen: BTreeMap::new(),
            directory_order: directory_order::DirectoryOrder::default(),
            failures: Vec::new(),
            schedule,
            heal_at_us,
            healed: false,
            clients_stop_at_us,
            think_max_us,
            completions_us: Vec::new(),
            converged: false,
            hash_kv_checked: false,
            digest_seen: false,
            quiesce: quiesce::Quiesce::default(),
            watch: watch::WatchHub::new(cfg.seed, cfg.nodes, watchers_per_node::<E>(&cfg)),
            group_feed: group_feed::GroupFeed::new(!cfg.split_keys.is_empty()),
            leases: leases::LeaseHub::new(cfg.seed, lease_clients::<E>(&cfg), heal_at_us),
            compactions: compactions::Compactions::new(
                cfg.seed,
                cfg.compactions && !cfg.split_keys.is_empty(),
            ),
            ops_ok: 0,
            ops_unknown: 0,
            ops_failed: 0,
            operator: reconfig::Operator::default(),
            mover: transfer::Mover::new(cfg.seed, cfg.faults.transfer),
            splitter: splitter::Splitter::new(
                cfg.seed,
                cfg.splits,
                cfg.moves,
                cfg.partition_replicas > 0,
            ),
            cfg,
        }
    }

    fn at(&mut self, time_us: u64, ev: Ev<E::Message>) {
        debug_assert!(time_us >= self.now_us, "scheduling into the past");
        self.next_seq += 1;
        self.queue.push(Scheduled {
            time_us,
            seq: self.next_seq,
            ev,
        });
    }

    fn idx(&self, node: NodeId) -> usize {
        (node - 1) as usize
    }

    /// With lease clients, the run also waits for every lease to run out and the probes.
    fn hard_stop_us(&self) -> u64 {
        let leases = if self.leases.enabled {
            crate::lease_ops::TTL_MAX_S as u64 * 1_000_000 + leases::EXPIRY_BOUND_US
        } else {
            0
        };
        self.heal_at_us + 2 * self.cfg.liveness_bound_us + leases
    }

    fn run(&mut self) {
        for id in self.members.clone() {
            self.boot(id);
            let phase = self.rng_fault.below(TICK_US);
            self.at(phase, Ev::Tick(id));
        }
        for i in 0..self.schedule.len() {
            let (s, e) = (self.schedule[i].start_us, self.schedule[i].end_us);
            self.at(s, Ev::FaultStart(i));
            self.at(e, Ev::FaultEnd(i));
        }
        self.at(self.heal_at_us, Ev::HealAll);
        for slot in 0..self.cfg.clients {
            let id = self.fresh_client_id();
            self.slot_by_client.insert(id, slot);
            self.clients.push(SimClient::workload(id));
            let start = self.rng_work.below(self.think_max_us.max(1));
            self.at(start, Ev::ClientStart(slot));
        }
        self.lease_start();
        self.watch_start();
        self.operator_start();
        self.mover_start();
        self.splitter_start();
        while let Some(Scheduled { time_us, ev, .. }) = self.queue.pop() {
            self.now_us = time_us;
            if self.now_us > self.hard_stop_us() || self.converged {
                break;
            }
            self.step(ev);
        }
    }

    fn fresh_client_id(&mut self) -> ClientId {
        let id = ClientId(self.next_client_id);
        self.next_client_id += 1;
        id
    }

    fn step(&mut self, ev: Ev<E::Message>) {
        match ev {
            Ev::Tick(node) => {
                self.at(self.now_us + TICK_US, Ev::Tick(node));
                let i = self.idx(node);
                let stalled = !self.nodes[i].stalled_by.is_empty();
                if let Some(engine) = self.nodes[i].engine.as_mut().filter(|_| !stalled) {
                    engine.tick();
                    self.drain(node, TraceKind::Tick);
                }
                if node == self.members[0] {
                    self.check_converged();
                }
            }
            Ev::Deliver { to, .. } | Ev::Submit { node: to, .. } if self.is_stalled(to) => {
                self.hold(to, ev);
            }
            Ev::Deliver { from, to, message } => {
                let i = self.idx(to);
                // A partition that started while the message was in flight also eats it.
                if !self.net.is_up(from, to) || self.nodes[i].engine.is_none() {
                    self.net.messages_dropped += 1;
                    return;
                }
                let kind = TraceKind::Deliver {
                    from,
                    message: message.clone(),
                };
                if let Some(engine) = self.nodes[i].engine.as_mut() {
                    engine.receive(from, message);
                }
                self.drain(to, kind);
            }
            Ev::Submit { node, request } => {
                let i = self.idx(node);
                let summary = format!("{} {:?}", request.id, request.op);
                if let Some(engine) = self.nodes[i].engine.as_mut() {
                    engine.submit(request);
                    self.drain(node, TraceKind::Submit { request: summary });
                }
            }
            Ev::Reply { slot, node, reply } => self.on_reply(slot, node, reply),
            Ev::ClientStart(slot) => self.start_op(slot),
            Ev::ClientTimeout { slot, seq, attempt } => {
                let current = self.clients[slot]
                    .open
                    .as_ref()
                    .is_some_and(|o| o.request.id.seq == seq && o.attempt == attempt);
                if current {
                    if let Some(open) = self.clients[slot].open.as_mut() {
                        open.maybe_applied = true;
                    }
                    self.retry_or_give_up(slot);
                }
            }
            Ev::ClientRetry { slot, attempt } => {
                let current = self.clients[slot]
                    .open
                    .as_ref()
                    .is_some_and(|o| o.attempt == attempt);
                if current {
                    self.retry(slot);
                }
            }
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::HealAll => self.heal_all(),
            Ev::Operator(e) => self.operator_event(e),
            Ev::Mover(e) => self.mover_event(e),
            Ev::Splitter(e) => self.splitter_event(e),
            Ev::EarlyRestart { node, fault_id } => self.restart(node, fault_id),
            Ev::Watch(task) => self.watch_task(task),
            Ev::DiskSync { node, incarnation } => {
                let i = self.idx(node);
                if self.nodes[i].incarnation == incarnation {
                    self.nodes[i].disk.sync();
                }
            }
        }
    }

    /// Persist → send → reply, after every input to `node`'s engine.
    fn drain(&mut self, node: NodeId, kind: TraceKind<E::Message>) {
        let i = self.idx(node);
        let ack_before_fsync = self.cfg.planted_bug == Some(PlantedBug::AckBeforeFsync);
        let watch_on = self.watch.enabled;
        let slot = &mut self.nodes[i];
        // No output from a crashed node: its engine does not exist, so this is an invariant of
        // the loop, asserted here rather than assumed.
        let engine = slot
            .engine
            .as_mut()
            .unwrap_or_else(|| panic!("drain of crashed node {node}"));
        let mut ready = engine.ready();
        let (fresh, checkpointed) = watch::take_applied(engine, &ready, watch_on);
        self.group_feed.take(node, engine, &mut self.failures);
        let counts = ready.counts();
        // Early messages leave before the batch's records are durable (Ready::take_early).
        let early = ready.take_early();
        let crash_in_window = !early.is_empty()
            && !ready.records().is_empty()
            && self.cfg.faults.crash
            && !self.healed
            && self.rng_early.chance_permille(EARLY_WINDOW_CRASH_PERMILLE);
        self.send_all(node, early);
        if crash_in_window {
            // The machine dies after the early messages left and before the fsync: the
            // batch's records never reach the disk, and nothing else of the batch leaves.
            drop(ready);
            self.watch_observe_only(node, &fresh);
            let fault_id = self.next_early_fault;
            self.next_early_fault -= 1;
            self.crash(node, fault_id, CrashMode::LoseUnsynced);
            let delay = self
                .rng_early
                .range(EARLY_RESTART_MIN_US, EARLY_RESTART_MAX_US);
            self.at(self.now_us + delay, Ev::EarlyRestart { node, fault_id });
            return;
        }
        let slot = &mut self.nodes[i];
        let outbox = if ack_before_fsync {
            let (records, outbox) = ready.split_unsafely_for_planted_bug();
            if !records.is_empty() {
                slot.disk.write(&records);
                let incarnation = slot.incarnation;
                let delay = self
                    .rng_net
                    .range(FSYNC_LATENCY_MIN_US, FSYNC_LATENCY_MAX_US);
                self.at(self.now_us + delay, Ev::DiskSync { node, incarnation });
            }
            outbox
        } else {
            let disk = &mut slot.disk;
            match ready.persist(|records| disk.write_and_sync(records)) {
                Ok(outbox) => {
                    disk.assert_all_synced(node);
                    outbox
                }
                Err(e) => {
                    fail(&mut self.failures, format!("n{node}: persist failed: {e}"));
                    self.watch_observe_only(node, &fresh);
                    return;
                }
            }
        };
        self.send_all(node, outbox.messages);
        for reply in outbox.replies {
            if reply.id.client == splitter::SPLITTER_CLIENT {
                self.splitter_reply(&reply);
                continue;
            }
            if reply.id.client == reconfig::OPERATOR_CLIENT {
                let delay = self
                    .rng_net
                    .range(CLIENT_LATENCY_MIN_US, CLIENT_LATENCY_MAX_US);
                let ev = reconfig::OperatorEv::Reply { node, reply };
                self.at(self.now_us + delay, Ev::Operator(ev));
                continue;
            }
            match self.slot_by_client.get(&reply.id.client) {
                Some(&slot) => {
                    let delay = self
                        .rng_net
                        .range(CLIENT_LATENCY_MIN_US, CLIENT_LATENCY_MAX_US);
                    self.at(self.now_us + delay, Ev::Reply { slot, node, reply });
                }
                None => fail(
                    &mut self.failures,
                    format!("n{node} replied to unknown client {}", reply.id),
                ),
            }
        }
        if watch_on {
            self.watch_batch(node, fresh, checkpointed);
        }
        let status = self.nodes[i]
            .engine
            .as_ref()
            .map(Engine::status)
            .unwrap_or_default();
        self.check_agreement(node, &status);
        self.check_trail(i, node, &status);
        self.trace.record(
            TraceEntry {
                time_us: self.now_us,
                node: Some(node),
                kind,
                output_counts: counts,
                applied_index: status.applied_index,
            },
            &[
                status.decided_index,
                status.term,
                status.applied_digest.unwrap_or(0),
                status.leader.unwrap_or(0),
            ],
        );
    }

    fn check_agreement(&mut self, node: NodeId, status: &EngineStatus) {
        if status.groups.is_empty() {
            self.check_group_agreement(node, 0, status.applied_index, status.applied_digest);
        }
        // A partitioned engine: every group is a log of its own.
        for g in &status.groups {
            self.check_group_agreement(node, g.group, g.applied_index, g.applied_digest);
        }
        if let Some(d) = status.directory.as_ref() {
            self.check_group_agreement(
                node,
                d.meta.group,
                d.meta.applied_index,
                d.meta.applied_digest,
            );
            if let Some(msg) = self.directory_order.observe(node, d) {
                fail(&mut self.failures, msg);
            }
        }
        for f in &status.failed_groups {
            let msg = format!(
                "group start: node {node}: group {:#x} did not start: {}",
                f.group, f.error
            );
            if !self.failures.contains(&msg) {
                fail(&mut self.failures, msg);
            }
        }
    }

    /// The agreement check for every entry the node applied since the last look, not only the
    /// last of each batch (see [`Engine::applied_trail`]): an entry applied in the middle of a
    /// batch on one replica and alone on another is compared too.
    fn check_trail(&mut self, i: usize, node: NodeId, status: &EngineStatus) {
        let Some(engine) = self.nodes[i].engine.as_ref() else {
            return;
        };
        let mut groups: Vec<u64> = if status.groups.is_empty() {
            vec![0]
        } else {
            status.groups.iter().map(|g| g.group).collect()
        };
        groups.extend(status.directory.as_ref().map(|d| d.meta.group));
        let mut found: Vec<(u64, u64, u64)> = Vec::new();
        let mut trail = Vec::new();
        for g in groups {
            let after = self.trail_seen.get(&(node, g)).copied().unwrap_or(0);
            trail.clear();
            engine.applied_trail(g, after, &mut trail);
            found.extend(trail.iter().map(|&(index, digest)| (g, index, digest)));
        }
        for (g, index, digest) in found {
            self.trail_seen.insert((node, g), index);
            self.check_group_agreement(node, g, index, Some(digest));
        }
    }

    fn check_group_agreement(
        &mut self,
        node: NodeId,
        group: u64,
        applied_index: u64,
        digest: Option<u64>,
    ) {
        // Log-less engines have no common applied state: nothing to compare.
        let Some(digest) = digest else {
            return;
        };
        self.digest_seen = true;
        if applied_index == 0 {
            return;
        }
        match self.agreement.get(&(group, applied_index)) {
            None => {
                self.agreement
                    .insert((group, applied_index), (digest, node));
            }
            Some(&(d, other)) if d != digest => fail(
                &mut self.failures,
                format!(
                    "agreement: in group {group} at applied index {applied_index} n{node} has digest {digest:016x} but n{other} had {d:016x} (t={} ms)",
                    self.now_us / 1000
                ),
            ),
            Some(_) => {}
        }
    }

    fn note(&mut self, node: Option<NodeId>, kind: TraceKind<E::Message>) {
        self.trace.record(
            TraceEntry {
                time_us: self.now_us,
                node,
                kind,
                output_counts: (0, 0, 0),
                applied_index: 0,
            },
            &[],
        );
    }

    fn send_all(&mut self, node: NodeId, messages: Vec<(NodeId, E::Message)>) {
        for (to, message) in messages {
            // A node may still address a member that was removed (it learns of the removal
            // later) or one being added: those slots exist and drop what reaches them.
            assert!(
                to != node && (to as usize) <= self.nodes.len() && to > 0,
                "n{node} sent to non-peer {to}: {message:?}"
            );
            for delay in self.net.send(node, to, &mut self.rng_net) {
                self.at(
                    self.now_us + delay,
                    Ev::Deliver {
                        from: node,
                        to,
                        message: message.clone(),
                    },
                );
            }
        }
    }

    // ---- nodes: boot, crash, restart -------------------------------------------------------

    fn boot(&mut self, node: NodeId) {
        let i = self.idx(node);
        if !self.nodes[i].provisioned || self.nodes[i].retired {
            return;
        }
        let mut config = self.nodes[i].config.clone();
        // A new nonce per boot (VR's recovery, §4.3); only the very first boot is a first boot
        // (a restart with a lost disk is not: it must recover from its peers).
        let incarnation = self.nodes[i].incarnation;
        config.boot_nonce = config.seed ^ incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        config.first_boot = incarnation == 0;
        if let Some(damage) = self.nodes[i].damage.take() {
            config.first_boot = self.recover_damaged_disk(node, damage);
        }
        let records = self.nodes[i].disk.records();
        self.trail_seen.retain(|(n, _), _| *n != node);
        match E::recover(config, records) {
            Ok(engine) => {
                self.nodes[i].engine = Some(engine);
                self.drain(node, TraceKind::Note("recovered".into()));
            }
            Err(e) => fail(
                &mut self.failures,
                format!(
                    "n{node}: recover failed at t={} ms: {e}",
                    self.now_us / 1000
                ),
            ),
        }
    }

    /// What the node does at start with damaged storage; returns whether it then believes it
    /// is a brand-new member. The correct node layer quarantines everything and starts with
    /// nothing, as a member that lost its disk (never a first boot): its protocol repairs from
    /// its peers. The planted `TruncateAtCorruption` bug keeps the records before the damage
    /// and carries on as if they were all it ever had (an empty log looks brand new).
    fn recover_damaged_disk(&mut self, node: NodeId, damage: Damage) -> bool {
        let i = self.idx(node);
        let len = self.nodes[i].disk.len();
        if self.cfg.planted_bug != Some(PlantedBug::TruncateAtCorruption) {
            self.nodes[i].disk.clear();
            self.note(
                Some(node),
                TraceKind::Fault(format!(
                    "start finds {}: {len} records quarantined, repairing from peers",
                    damage.name()
                )),
            );
            return false;
        }
        let keep = match damage {
            Damage::Snapshot | Damage::Metadata => 0,
            _ => self.rng_fault.below(len as u64 + 1) as usize,
        };
        self.nodes[i].disk.truncate(keep);
        self.note(
            Some(node),
            TraceKind::Fault(format!(
                "PLANTED BUG: start finds {}, truncates at record {keep} of {len} and votes",
                damage.name()
            )),
        );
        keep == 0
    }

    fn is_stalled(&self, node: NodeId) -> bool {
        !self.nodes[self.idx(node)].stalled_by.is_empty()
    }

    /// Keeps an input for a stalled node (bounded like a socket buffer: beyond it, dropped).
    fn hold(&mut self, node: NodeId, ev: Ev<E::Message>) {
        let i = self.idx(node);
        if self.nodes[i].held.len() < HELD_INPUTS_MAX {
            self.nodes[i].held.push(ev);
        } else {
            self.net.messages_dropped += 1;
        }
    }

    /// A write stall ends (when no other is in force): the held inputs arrive, in order.
    fn unstall(&mut self, node: NodeId, fault_id: u64) {
        let i = self.idx(node);
        self.nodes[i].stalled_by.remove(&fault_id);
        if self.nodes[i].stalled_by.is_empty() {
            for ev in std::mem::take(&mut self.nodes[i].held) {
                self.at(self.now_us, ev);
            }
        }
    }

    fn crash(&mut self, node: NodeId, fault_id: u64, mode: CrashMode) {
        let i = self.idx(node);
        self.nodes[i].down_by.insert(fault_id);
        // Inputs held by a write stall die with the process.
        self.nodes[i].held.clear();
        if self.nodes[i].engine.take().is_some() {
            self.watch.disconnect(node);
            self.watch_flush();
            self.group_feed.forget(node);
            self.nodes[i].incarnation += 1;
            let lost = self.nodes[i].disk.crash(mode, &mut self.rng_fault);
            self.note(
                Some(node),
                TraceKind::Fault(format!("crash ({mode:?}), {lost} unsynced records lost")),
            );
        }
    }

    fn restart(&mut self, node: NodeId, fault_id: u64) {
        let i = self.idx(node);
        self.nodes[i].down_by.remove(&fault_id);
        if self.nodes[i].down_by.is_empty() && self.nodes[i].engine.is_none() {
            self.note(Some(node), TraceKind::Fault("restart".into()));
            self.boot(node);
        }
    }

    // ---- faults ------------------------------------------------------------------------------

    /// Distinct groups the agreement check saw apply something.
    fn groups_seen(&self) -> u64 {
        // The range directory's group is no range's: not counted as created or retired.
        let groups: BTreeSet<u64> = (self.agreement.keys())
            .map(|(g, _)| *g)
            .filter(|g| *g != synod_partition::META_GROUP)
            .collect();
        groups.len() as u64
    }

    /// Groups at the end: the first member's; placed, every member's together (none hosts
    /// them all).
    fn groups_at_end(&self) -> u64 {
        let st = self.statuses();
        if self.cfg.partition_replicas == 0 {
            return st.first().map_or(0, |(_, s)| s.groups.len() as u64);
        }
        (st.iter()
            .flat_map(|(_, s)| s.groups.iter().map(|g| g.group)))
        .collect::<BTreeSet<u64>>()
        .len() as u64
    }

    fn statuses(&self) -> Vec<(NodeId, EngineStatus)> {
        self.nodes
            .iter()
            .filter_map(|s| s.engine.as_ref().map(|e| (s.config.id, e.status())))
            .collect()
    }

    /// The node most likely leading now: a live node that says it leads with the highest term,
    /// else the leader named by the live node with the highest term, else the first member.
    fn current_leader(&self) -> NodeId {
        let st = self.statuses();
        st.iter()
            .filter(|(id, s)| s.leader == Some(*id))
            .max_by_key(|(id, s)| (s.term, *id))
            .map(|(id, _)| *id)
            .or_else(|| {
                st.iter()
                    .filter(|(_, s)| s.leader.is_some())
                    .max_by_key(|(_, s)| s.term)
                    .and_then(|(_, s)| s.leader)
            })
            .unwrap_or(self.members[0])
    }

    fn others(&self, except: &[NodeId]) -> Vec<NodeId> {
        self.members
            .iter()
            .copied()
            .filter(|m| !except.contains(m))
            .collect()
    }

    fn links_of(&self, node: NodeId) -> Vec<(NodeId, NodeId)> {
        self.others(&[node])
            .into_iter()
            .flat_map(|m| [(node, m), (m, node)])
            .collect()
    }

    /// Every link between two distinct nodes of `set`.
    fn links_among(set: &[NodeId]) -> Vec<(NodeId, NodeId)> {
        let mut out = Vec::new();
        for &a in set {
            for &b in set {
                if a != b {
                    out.push((a, b));
                }
            }
        }
        out
    }

    fn fault_start(&mut self, i: usize) {
        let f = self.schedule[i].clone();
        let torn = if self.cfg.faults.torn_writes {
            CrashMode::LoseUnsynced
        } else {
            CrashMode::ProcessOnly
        };
        let description = match &f.fault {
            Fault::Crash { node } => {
                self.crash(*node, f.id, torn);
                f.fault.to_string()
            }
            Fault::PowerLoss => {
                for node in self.members.clone() {
                    self.crash(node, f.id, CrashMode::LoseUnsynced);
                }
                f.fault.to_string()
            }
            Fault::Split { side } => {
                let rest = self.others(side);
                let mut cuts = Vec::new();
                for &a in side {
                    for &b in &rest {
                        cuts.push((a, b));
                        cuts.push((b, a));
                    }
                }
                self.net.cut(f.id, cuts);
                f.fault.to_string()
            }
            Fault::Isolate { node } => {
                let n = match node {
                    Some(n) => *n,
                    None => {
                        let leader = self.current_leader();
                        let followers = self.others(&[leader]);
                        *self.rng_fault.pick(&followers)
                    }
                };
                self.schedule[i].fault = Fault::Isolate { node: Some(n) };
                let cuts = self.links_of(n);
                self.net.cut(f.id, cuts);
                format!("isolate n{n}")
            }
            Fault::OneWay { from, to } => {
                self.net.cut(f.id, vec![(*from, *to)]);
                f.fault.to_string()
            }
            Fault::QuorumLoss => {
                let leader = self.current_leader();
                let candidates = self.others(&[leader]);
                let hub = *self.rng_fault.pick(&candidates);
                let cuts = Self::links_among(&self.others(&[hub]));
                self.net.cut(f.id, cuts);
                format!("quorum-loss: hub n{hub} (only quorum-connected), old leader n{leader}")
            }
            Fault::ConstrainedElection => {
                let leader = self.current_leader();
                let st = self.statuses();
                let decided = |n: NodeId| {
                    st.iter()
                        .find(|(id, _)| *id == n)
                        .map_or(0, |(_, s)| s.decided_index)
                };
                // The hub is the least up-to-date follower: the only quorum-connected server
                // is then one whose log is behind.
                let hub = self
                    .others(&[leader])
                    .into_iter()
                    .min_by_key(|n| (decided(*n), *n))
                    .unwrap_or(leader);
                let mut cuts = self.links_of(leader);
                cuts.extend(Self::links_among(&self.others(&[leader, hub])));
                self.net.cut(f.id, cuts);
                format!(
                    "constrained election: leader n{leader} cut off, hub n{hub} (decided {}) only quorum-connected",
                    decided(hub)
                )
            }
            Fault::Chained => {
                let leader = self.current_leader();
                let followers = self.others(&[leader]);
                let f2 = *self.rng_fault.pick(&followers);
                self.net.cut(f.id, vec![(leader, f2), (f2, leader)]);
                format!("chained: link n{leader} <-> n{f2} down")
            }
            Fault::Loss { permille } => {
                self.net.loss_burst(f.id, *permille);
                f.fault.to_string()
            }
            Fault::Duplicate { permille } => {
                self.net.dup_burst(f.id, *permille);
                f.fault.to_string()
            }
            Fault::Damage { node, damage } => {
                self.crash(*node, f.id, torn);
                let i = self.idx(*node);
                if !self.nodes[i].disk.is_empty() {
                    self.nodes[i].damage = Some(*damage);
                }
                f.fault.to_string()
            }
            Fault::WriteStall { node } => {
                let i = self.idx(*node);
                self.nodes[i].stalled_by.insert(f.id);
                f.fault.to_string()
            }
            Fault::FsyncFailure { node } => {
                self.crash(*node, f.id, CrashMode::LoseUnsynced);
                f.fault.to_string()
            }
        };
        self.note(
            None,
            TraceKind::Fault(format!("#{} start: {description}", f.id)),
        );
    }

    fn fault_end(&mut self, i: usize) {
        let f = self.schedule[i].clone();
        match &f.fault {
            Fault::Crash { node } | Fault::Damage { node, .. } | Fault::FsyncFailure { node } => {
                self.restart(*node, f.id)
            }
            Fault::WriteStall { node } => self.unstall(*node, f.id),
            Fault::PowerLoss => {
                for node in self.members.clone() {
                    self.restart(node, f.id);
                }
            }
            _ => self.net.heal(f.id),
        }
        self.note(None, TraceKind::Fault(format!("#{} end", f.id)));
    }

    fn heal_all(&mut self) {
        self.healed = true;
        self.net.heal_all();
        for node in self.members.clone() {
            let i = self.idx(node);
            let stalls: Vec<u64> = self.nodes[i].stalled_by.iter().copied().collect();
            for id in stalls {
                self.unstall(node, id);
            }
            let ids: Vec<u64> = self.nodes[i].down_by.iter().copied().collect();
            for id in ids {
                self.restart(node, id);
            }
        }
        self.note(None, TraceKind::Fault("heal all".into()));
    }

    // ---- clients -----------------------------------------------------------------------------

    fn start_op(&mut self, slot: usize) {
        if self.is_lease_slot(slot) {
            self.start_lease_op(slot);
            return;
        }
        if self.clients[slot].script.is_some() {
            self.start_final_read(slot);
            return;
        }
        let stop = self.clients_stop_at_us.is_some_and(|t| self.now_us >= t);
        let c = &self.clients[slot];
        if c.open.is_some() || c.ops_started >= self.cfg.ops_per_client || stop {
            return;
        }
        let watch_extra =
            self.watch.enabled && self.watch.rng.below(100) < crate::watch_ops::EXTRA_PERCENT;
        let compaction = if !watch_extra && self.compactions.draws() {
            self.compactions
                .next(self.cfg.keys, c.id, c.seq, self.now_us)
        } else {
            None
        };
        let (request, hist, compaction) = if let Some((request, hist, extra)) = compaction {
            (request, hist, Some(extra))
        } else if watch_extra {
            let (request, hist) = crate::watch_ops::extra_op(
                &mut self.watch.rng,
                self.cfg.keys,
                c.id,
                c.seq,
                self.watch.known_revision,
                self.now_us,
            );
            (request, hist, None)
        } else {
            let (request, hist) = client::next_op(
                &mut self.rng_work,
                (self.cfg.keys, self.cfg.range_deletes),
                c.id,
                c.seq,
                &self.knowledge,
                self.now_us,
            );
            (request, hist, None)
        };
        let is_read = request.op.is_read();
        let c = &mut self.clients[slot];
        c.ops_started += 1;
        c.open = Some(OpenOp {
            request,
            hist,
            attempt: 0,
            maybe_applied: false,
            node: 0,
            is_read,
            first_node: None,
            watch_extra,
            lease: None,
            compaction,
        });
        self.send_attempt(slot);
    }

    /// Sends the open operation to a node: a random one first, then always a different one.
    fn send_attempt(&mut self, slot: usize) {
        let previous = self.clients[slot].open.as_ref().map_or(0, |o| o.node);
        let first = self.clients[slot]
            .open
            .as_ref()
            .filter(|o| o.attempt == 0)
            .and_then(|o| o.first_node);
        let node = match first {
            Some(n) => n,
            None => {
                let candidates = self.others(&[previous]);
                *self.rng_work.pick(&candidates)
            }
        };
        let Some(open) = self.clients[slot].open.as_mut() else {
            return;
        };
        open.attempt += 1;
        if open.attempt > CLIENT_ATTEMPTS_MAX {
            self.give_up(slot);
            return;
        }
        open.node = node;
        let (seq, attempt, request) = (open.request.id.seq, open.attempt, open.request.clone());
        let delay = self
            .rng_work
            .range(CLIENT_LATENCY_MIN_US, CLIENT_LATENCY_MAX_US);
        self.at(self.now_us + delay, Ev::Submit { node, request });
        self.at(
            self.now_us + self.cfg.client_timeout_us,
            Ev::ClientTimeout { slot, seq, attempt },
        );
    }

    /// Writes retry with the same request id at another node (exactly-once makes that safe);
    /// a read that failed had no effect, so it is dropped and re-issued as a new operation.
    fn retry(&mut self, slot: usize) {
        let now = self.now_us;
        let c = &mut self.clients[slot];
        let Some(open) = c.open.as_mut() else {
            return;
        };
        if open.is_read {
            c.seq += 1;
            open.request.id.seq = c.seq;
            open.request.first_unacked = c.seq;
            open.hist.call = now;
        }
        self.send_attempt(slot);
    }

    /// After an attempt whose outcome is unknown: tries again under the same id — except a
    /// delete of a range of keys, which the client gives up as unknown. A partitioned engine
    /// deletes such a range with one part per group under the request's id, and a retry after
    /// the layout changed can meet a group's saved answer to a different part
    /// (`synod-partition`'s `deletes.rs`); the node runtime never retries under an id.
    fn retry_or_give_up(&mut self, slot: usize) {
        let open = self.clients[slot].open.as_ref();
        let range_delete = open.is_some_and(|o| {
            matches!(&o.request.op, synod_core::kv::Op::DeleteRange(d) if !d.range_end.is_empty())
        });
        match range_delete {
            true => self.give_up(slot),
            false => self.retry(slot),
        }
    }

    /// The client stops waiting: a write's outcome is unknown (recorded so, never as failed)
    /// and the client continues under a fresh session so that no id has two open operations.
    fn give_up(&mut self, slot: usize) {
        let Some(open) = self.clients[slot].open.take() else {
            return;
        };
        if open.lease.is_some() {
            self.lease_unknown(slot, open);
            return;
        }
        if !open.is_read && open.in_history() {
            self.record(open.hist, &open.request, None);
            self.ops_unknown += 1;
        }
        self.new_session(slot);
        self.schedule_next(slot);
    }

    fn new_session(&mut self, slot: usize) {
        let id = self.fresh_client_id();
        self.slot_by_client.insert(id, slot);
        self.clients[slot].id = id;
        self.clients[slot].seq = 1;
    }

    fn schedule_next(&mut self, slot: usize) {
        if self.is_lease_slot(slot) {
            self.lease_schedule_next(slot);
            return;
        }
        let think = self.rng_work.below(self.think_max(slot).max(1));
        self.at(self.now_us + think, Ev::ClientStart(slot));
    }

    /// Longest think time before `slot`'s next operation. A window longer than the default
    /// paces instead: the client's remaining operations spread over what is left of the window,
    /// because the fixed think time assumes operations take no time, and under a minute of
    /// faults their latencies add up to tens of seconds past the heal (seen: 60 s seeds still
    /// running at the hard stop). Default-length and shorter windows keep the fixed think time,
    /// so every existing seed runs exactly as before.
    fn think_max(&self, slot: usize) -> u64 {
        if self.cfg.scenario.is_some() || self.cfg.fault_window_us <= SCHEDULE_WINDOW_US {
            return self.think_max_us;
        }
        let left = self
            .cfg
            .ops_per_client
            .saturating_sub(self.clients[slot].ops_started);
        let remaining_us = self.heal_at_us.saturating_sub(self.now_us);
        (2 * remaining_us / left.max(1) as u64).min(self.think_max_us)
    }

    fn on_reply(&mut self, slot: usize, node: NodeId, reply: ClientReply) {
        let now = self.now_us;
        let matches = self.clients[slot]
            .open
            .as_ref()
            .is_some_and(|o| o.request.id == reply.id);
        self.note(
            Some(node),
            TraceKind::Reply {
                to_client: reply.id.client.0,
                summary: format!(
                    "{} {}",
                    reply.id,
                    match &reply.result {
                        Ok(r) => format!("ok {:?}", r.body),
                        Err(e) => format!("err {e}"),
                    }
                ),
            },
        );
        if !matches {
            return; // A late reply to an attempt the client already moved past.
        }
        let Some(open) = self.clients[slot].open.as_ref() else {
            return;
        };
        let current_node = open.node == node;
        match reply.result {
            Ok(response) => self.on_reply_ok(slot, node, reply.id, response),
            Err(EngineError::Timeout) if current_node => {
                if let Some(open) = self.clients[slot].open.as_mut() {
                    open.maybe_applied = true;
                }
                self.retry_or_give_up(slot);
            }
            Err(EngineError::Busy) if current_node => {
                let attempt = open.attempt;
                self.at(
                    now + CLIENT_BUSY_BACKOFF_US,
                    Ev::ClientRetry { slot, attempt },
                );
            }
            // A lease client retries a request a layout change refused (definitely not
            // applied), as the node runtime does for every request of a partitioned cluster.
            // (The register clients record it as failed, as they always have: their seeds
            // replay the runs that found earlier bugs.)
            Err(EngineError::WrongGroup { .. }) if current_node && open.lease.is_some() => {
                let attempt = open.attempt;
                self.at(
                    now + CLIENT_BUSY_BACKOFF_US,
                    Ev::ClientRetry { slot, attempt },
                );
            }
            Err(EngineError::Timeout) | Err(EngineError::Busy) => {}
            Err(EngineError::SessionExpired) => {
                // Documented as "not applied (again)": it may have been applied once, so the
                // safe record is "unknown".
                self.give_up(slot);
            }
            // A definite error (say, from a member removed meanwhile) covers this attempt
            // only: a write whose earlier attempt timed out may still have been applied.
            Err(_) if open.maybe_applied && !open.is_read && open.lease.is_none() => {
                self.give_up(slot);
            }
            Err(e) if open.lease.is_some() => {
                if let Some(open) = self.clients[slot].open.take() {
                    self.lease_reply(slot, node, open, Err(&e));
                }
            }
            Err(_) => {
                // Definitely not applied: left out of the history. (The watch workload's
                // compactions and past reads are refused as compacted or future by design.)
                let extra = open.watch_extra || open.compaction.is_some();
                if let Some(x) = open.compaction.clone() {
                    self.compaction_refused(&x);
                }
                self.clients[slot].open = None;
                self.clients[slot].seq += 1;
                self.ops_failed += u64::from(!extra);
                self.schedule_next(slot);
            }
        }
    }

    /// A success for the open operation of `slot` (already matched to it).
    fn on_reply_ok(
        &mut self,
        slot: usize,
        node: NodeId,
        id: synod_core::RequestId,
        response: synod_core::kv::Response,
    ) {
        let now = self.now_us;
        let Some(mut open) = self.clients[slot].open.take() else {
            return;
        };
        if self.watch.enabled {
            self.watch_reply(node, &open, &response);
        }
        if open.lease.is_some() {
            self.lease_reply(slot, node, open, Ok(&response));
            return;
        }
        if open.watch_extra {
            self.check_op_liveness(&open.hist, now);
            self.clients[slot].seq += 1;
            self.schedule_next(slot);
            return;
        }
        if let Some(extra) = open.compaction.take() {
            self.compaction_reply(extra, &response, now);
            self.clients[slot].seq += 1;
            self.schedule_next(slot);
            return;
        }
        match client::output_of(open.hist.op, &response) {
            Some(output) => {
                client::learn(&mut self.knowledge, &open.hist, &response);
                let put = (open.hist.op == synod_core::history::OpKind::Put)
                    .then_some(open.hist.value.as_deref())
                    .flatten();
                self.compactions.saw(&open.hist.key, response.revision, put);
                open.hist.output = Some(output);
                open.hist.ret = Some(now);
                self.check_op_liveness(&open.hist, now);
                self.record(open.hist, &open.request, Some(&response));
                self.completions_us.push(now);
                self.ops_ok += 1;
                self.clients[slot].seq += 1;
            }
            None => {
                fail(
                    &mut self.failures,
                    format!(
                        "n{node}: reply body {:?} does not match request {}",
                        response.body, id
                    ),
                );
                if !open.is_read {
                    self.record(open.hist, &open.request, None);
                    self.ops_unknown += 1;
                }
                self.new_session(slot);
            }
        }
        self.schedule_next(slot);
    }

    /// Enters an operation in the history: a delete of a range of keys as a delete of each
    /// of them (`response`: its answer, or none if its outcome is unknown).
    fn record(
        &mut self,
        hist: HistoryOp,
        request: &ClientRequest,
        response: Option<&synod_core::kv::Response>,
    ) {
        let keys = self.cfg.keys;
        self.history
            .extend(client::history_entries(hist, request, keys, response));
    }

    fn check_op_liveness(&mut self, hist: &HistoryOp, now: u64) {
        if !self.healed {
            return;
        }
        let since = hist.call.max(self.heal_at_us);
        if now - since > self.cfg.liveness_bound_us {
            fail(
                &mut self.failures,
                format!(
                    "liveness: client c{:x} {:?} on {} took {} ms after healing (bound {} ms)",
                    hist.client,
                    hist.op,
                    hist.key,
                    (now - since) / 1000,
                    self.cfg.liveness_bound_us / 1000
                ),
            );
        }
    }

    fn clients_done(&self) -> bool {
        let stop = self.clients_stop_at_us.is_some_and(|t| self.now_us >= t);
        self.leases.done()
            && self.clients.iter().enumerate().all(|(slot, c)| {
                c.open.is_none()
                    && (self.is_lease_slot(slot)
                        || match &c.script {
                            Some(reads) => reads.is_empty(),
                            None => stop || c.ops_started >= self.cfg.ops_per_client,
                        })
            })
    }

    /// After healing and once clients are done: all replicas at the same applied index.
    fn check_converged(&mut self) {
        if !self.healed || !self.clients_done() {
            return;
        }
        let st = self.statuses();
        if st.len() < self.members.len() {
            return;
        }
        if st.iter().any(|(_, s)| s.state_digest.is_some()) {
            self.converged = self.state_digests_agree(&st);
            return;
        }
        let first = &st[0].1;
        let per_group = |s: &EngineStatus| -> Vec<(u64, Option<u64>)> {
            s.groups
                .iter()
                .map(|g| (g.applied_index, g.applied_digest))
                .collect()
        };
        // Partitioned: every group has the cluster's members (the first group's), once a
        // membership change spread through them all.
        let groups_follow = |s: &EngineStatus| {
            s.groups.iter().all(|g| {
                g.voters == s.configuration.voters() && g.learners == s.configuration.learners()
            })
        };
        // Partitioned: every group closed the revisions of the others (`Op::CloseRevisions`),
        // once the groups are quiet: what a watch over several groups waits for.
        let groups_closed = |s: &EngineStatus| {
            let top = s.groups.iter().map(|g| g.revision).max().unwrap_or(0);
            s.groups.iter().all(|g| g.revision == top)
        };
        // Placement: each group's hosts agree on it, and its voters are its hosts.
        let replicas = self.cfg.partition_replicas;
        let members: Vec<NodeId> = self.members.to_vec();
        let mut by_group: BTreeMap<u64, (u64, Option<u64>)> = BTreeMap::new();
        let mut groups_agree = true;
        for (_, s) in &st {
            for g in &s.groups {
                let seen = *by_group
                    .entry(g.group)
                    .or_insert((g.applied_index, g.applied_digest));
                groups_agree &= seen == (g.applied_index, g.applied_digest);
            }
        }
        // With moves, or membership changes (groups move off removed members), a group's hosts
        // are any `replicas` of the cluster's voters once its moves finished.
        let moved = self.cfg.moves || self.cfg.faults.reconfig;
        let groups_placed = |s: &EngineStatus| {
            let cluster = s.configuration.voters();
            s.groups.iter().all(|g| {
                g.learners.is_empty()
                    && match moved {
                        // Configured: where the placement rule put it (split off at run time:
                        // any `replicas` voters, below).
                        false if g.group < synod_partition::layout::CHILD_ID_BASE => {
                            g.voters
                                == synod_partition::hosts_at(&members, g.group as usize, replicas)
                        }
                        _ if g.group == 0 => g.voters == cluster,
                        _ => {
                            g.voters.len() == replicas
                                && g.voters.iter().all(|v| cluster.contains(v))
                        }
                    }
            })
        };
        let placed = (replicas > 0).then(|| placed_layout(&st));
        let even = |p: &[PlacedRange]| unbalanced(p, &first.configuration.voters()).is_none();
        let balanced = !self.cfg.rebalance || placed.as_deref().is_none_or(even);
        let converged = balanced
            && leaders_uneven(&st).is_none()
            && st.iter().all(|(_, s)| {
                let same = match replicas {
                    0 => {
                        s.applied_index == first.applied_index
                            && s.applied_digest == first.applied_digest
                            && per_group(s) == per_group(first)
                            && groups_follow(s)
                    }
                    _ => groups_agree && groups_placed(s),
                };
                same && groups_closed(s)
                    && directory_off_by(s, placed.as_deref()).is_none()
                    && directory_view(s) == directory_view(first)
            });
        if converged && !self.converged {
            self.check_hash_kv_agreement();
            for node in &self.nodes {
                if let Some(engine) = node.engine.as_ref() {
                    self.group_feed
                        .check_all(node.config.id, engine, &mut self.failures);
                }
            }
        }
        self.converged = converged;
    }

    /// Converged replicas hold the same revision, so etcd's HashKV over it — what members
    /// compare in the node's corruption check (`synod_etcd::corrupt`) — must be equal too: a
    /// second opinion beside the rolling digest, computed from the state itself rather than
    /// from the sequence of changes that built it. And at a past revision (half the current
    /// one), as the corruption check asks, among the replicas at the same compaction (a
    /// partitioned member's answer there must not depend on its layout).
    fn check_hash_kv_agreement(&mut self) {
        let hashes = self.hash_kv_of_all(0);
        if let Some((_, first)) = hashes.first()
            && hashes.iter().any(|(_, h)| h != first)
        {
            fail(
                &mut self.failures,
                format!("agreement: HashKV differs between converged replicas: {hashes:?}"),
            );
        }
        self.hash_kv_checked = !hashes.is_empty();
        let past = hashes.first().map_or(0, |(_, h)| h.revision / 2);
        let at_past = if past > 0 {
            self.hash_kv_of_all(past)
        } else {
            Vec::new()
        };
        let differ = at_past.iter().any(|(_, a)| {
            at_past
                .iter()
                .any(|(_, b)| a.compact_revision == b.compact_revision && a.hash != b.hash)
        });
        if differ {
            fail(
                &mut self.failures,
                format!(
                    "agreement: HashKV at revision {past} differs between converged replicas \
                     at one compaction: {at_past:?}"
                ),
            );
        }
    }

    /// Each live replica's HashKV at `revision` (those that answer).
    fn hash_kv_of_all(&self, revision: u64) -> Vec<(NodeId, synod_core::kv::KvHash)> {
        self.nodes
            .iter()
            .filter_map(|s| Some((s.config.id, s.engine.as_ref()?.hash_kv(revision).ok()?)))
            .collect()
    }

    // ---- end of run --------------------------------------------------------------------------

    /// The run ended without every replica at the same applied index (and, partitioned, every
    /// group with the cluster's members and the others' revisions closed): what each reached.
    fn fail_convergence(&mut self, now: u64) {
        let statuses = self.statuses();
        let placed = (self.cfg.partition_replicas > 0).then(|| placed_layout(&statuses));
        let st: Vec<String> = statuses
            .iter()
            .map(|(id, s)| {
                let top = s.groups.iter().map(|g| g.revision).max().unwrap_or(0);
                let mut off: Vec<String> = s
                    .groups
                    .iter()
                    .filter(|g| placed.is_none() && g.voters != s.configuration.voters())
                    .map(|g| format!("group {} voters {:?}", g.group, g.voters))
                    .collect();
                off.extend(
                    s.groups
                        .iter()
                        .filter(|g| g.revision < top)
                        .map(|g| format!("group {} revision {} < {top}", g.group, g.revision)),
                );
                off.extend(directory_off_by(s, placed.as_deref()));
                if directory_view(s) != statuses.first().and_then(|(_, f)| directory_view(f)) {
                    off.extend(s.directory.as_ref().map(|d| {
                        format!(
                            "directory group at {} (its copy differs from n{}'s)",
                            d.meta.applied_index,
                            statuses.first().map_or(0, |(id, _)| *id)
                        )
                    }));
                }
                if self.cfg.rebalance {
                    let voters = s.configuration.voters();
                    off.extend(placed.as_deref().and_then(|p| unbalanced(p, &voters)));
                }
                if placed.is_some() {
                    // Placement: where each group this member hosts stands.
                    off.extend(s.groups.iter().map(|g| {
                        format!(
                            "group {} at {} (digest {:?}) voters {:?} learners {:?} leader {:?}",
                            g.group,
                            g.applied_index,
                            g.applied_digest,
                            g.voters,
                            g.learners,
                            g.leader
                        )
                    }));
                }
                format!(
                    "n{id}: applied {} decided {}{}",
                    s.applied_index,
                    s.decided_index,
                    if off.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (cluster voters {:?}; {})",
                            s.configuration.voters(),
                            off.join(", ")
                        )
                    }
                )
            })
            .collect();
        let live = st.len();
        let leaders = leaders_uneven(&statuses).map_or(String::new(), |l| format!("; {l}"));
        fail(
            &mut self.failures,
            format!(
                "convergence: replicas did not reach the same applied index by {} ms ({live}/{} live): {}{leaders}",
                now / 1000,
                self.members.len(),
                st.join(", ")
            ),
        );
    }

    fn finish(mut self, wall_start: Instant) -> RunResult {
        let now = self.now_us;
        // Operations still open: liveness failures once healed, and unknown in the history.
        for slot in 0..self.clients.len() {
            if let Some(open) = self.clients[slot].open.take() {
                if self.healed {
                    fail(
                        &mut self.failures,
                        format!(
                            "liveness: client c{:x} {:?} on {} called at {} ms still open at {} ms (healed at {} ms)",
                            open.hist.client,
                            open.hist.op,
                            open.hist.key,
                            open.hist.call / 1000,
                            now / 1000,
                            self.heal_at_us / 1000
                        ),
                    );
                }
                if open.lease.is_some() {
                    self.lease_open_at_end(open);
                } else if !open.is_read && open.in_history() {
                    self.record(open.hist, &open.request, None);
                    self.ops_unknown += 1;
                }
            }
        }
        let lease_report = self.lease_finish();
        self.check_scans();
        if !self.converged && self.state_digest_engine() {
            self.fail_state_digests();
        } else if !self.converged {
            self.fail_convergence(now);
        }
        let meta = serde_json::json!({
            "engine": E::NAME,
            "seed": self.cfg.seed,
            "nodes": self.cfg.nodes,
            "faults": self.cfg.faults.names(),
            "planted_bug": self.cfg.planted_bug.map(|b| b.name()),
        });
        let history = History {
            meta,
            ops: std::mem::take(&mut self.history),
        };
        let check_start = Instant::now();
        let report = check_history(
            &history,
            &CheckOptions {
                time_budget: self.cfg.check_budget,
            },
        );
        let check_wall = check_start.elapsed();
        match report.verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable => {
                let v = report.violation.as_ref();
                let mut msg = format!(
                    "linearizability: NOT linearizable on key {}: {}",
                    v.map_or("?", |v| v.key.as_str()),
                    v.map_or("", |v| v.explanation.as_str())
                );
                for op in v.map(|v| v.ops.as_slice()).unwrap_or_default() {
                    msg += &format!("\n      {}", serde_json::to_string(op).unwrap_or_default());
                }
                fail(&mut self.failures, msg);
            }
            Verdict::Unknown => fail(
                &mut self.failures,
                format!(
                    "linearizability: checker verdict UNKNOWN ({}) — counted as a failure",
                    report
                        .unknown_reason
                        .as_deref()
                        .unwrap_or("no reason given")
                ),
            ),
        }
        let watch = self.watch_finish();
        let (downtime_us, recovered) = self.downtime();
        if let Some(max_ets) = self.cfg.scenario_downtime_max_ets {
            let ets = downtime_us as f64 / self.cfg.election_timeout_us() as f64;
            if ets > max_ets || !recovered {
                fail(
                    &mut self.failures,
                    format!(
                        "liveness: {} scenario: {ets:.1} election timeouts with no operation completing (bound {max_ets})",
                        self.cfg.scenario.map_or("?", Scenario::name)
                    ),
                );
            }
        }
        let failed = !self.failures.is_empty();
        RunResult {
            seed: self.cfg.seed,
            engine: E::NAME,
            nodes: self.cfg.nodes,
            reconfig_plan: self.operator.plan_name,
            reconfig_steps: self.operator.steps_done,
            transfers_started: self.mover.started,
            transfers_completed: self.mover.completed,
            splits_done: self.splitter.done,
            merges_done: self.splitter.merged,
            moves_done: self.splitter.moved,
            groups_at_start: if self.cfg.split_keys.is_empty() {
                0
            } else {
                self.cfg.split_keys.len() as u64 + 1
            },
            groups_seen: self.groups_seen(),
            groups_at_end: self.groups_at_end(),
            feed_revisions: self.group_feed.revisions,
            feed_moves: self.group_feed.moves,
            planted_bug: self.cfg.planted_bug,
            schedule: self.schedule.iter().map(|f| f.to_string()).collect(),
            trace_tail: if failed {
                self.trace.dump()
            } else {
                Vec::new()
            },
            trace_hash: self.trace.hash(),
            history: self.cfg.keep_history.then_some(history),
            verdict: report.verdict,
            ops_ok: self.ops_ok,
            ops_unknown: self.ops_unknown,
            ops_failed: self.ops_failed,
            messages: self.net.messages_sent,
            events: self.trace.events,
            virtual_time_us: now,
            wall: wall_start.elapsed(),
            check_wall,
            downtime_us,
            recovered,
            agreement_checked: self.digest_seen,
            hash_kv_checked: self.hash_kv_checked,
            rerun: crate::sweep::cli_command(E::NAME, &self.cfg),
            watch,
            watch_ops_ok: self.watch.ops_ok,
            compactions_acknowledged: self.compactions.acknowledged,
            past_reads_refused: self.compactions.past_reads_refused,
            past_reads_checked: self.compactions.past_reads_checked,
            scans_checked: self.compactions.scans_checked(),
            leases: lease_report,
            lease_ops_ok: self.leases.ops_ok,
            failures: self.failures,
        }
    }

    /// Scenario runs: the longest interval inside the scenario's topology window with no
    /// operation completing, and whether some operation completed after the window opened.
    fn downtime(&self) -> (u64, bool) {
        let Some(window) = self
            .schedule
            .iter()
            .find(|f| !matches!(f.fault, Fault::Isolate { .. }))
            .map(|f| (f.start_us, f.end_us))
            .filter(|_| self.cfg.scenario.is_some())
        else {
            return (0, true);
        };
        let (start, end) = window;
        let mut last = start;
        let mut longest = 0;
        let mut recovered = false;
        for &t in self
            .completions_us
            .iter()
            .filter(|t| **t > start && **t <= end)
        {
            longest = longest.max(t - last);
            last = t;
            recovered = true;
        }
        longest = longest.max(end - last);
        (longest, recovered)
    }
}
