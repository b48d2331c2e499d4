//! Synod's deterministic simulator: runs 3 or 5 replicas of any [`synod_core::Engine`] over a
//! virtual clock, a virtual network and virtual disks, all driven by one `u64` seed, with
//! concurrent clients recording a history, random fault schedules, and end-of-run checks
//! (linearizability, agreement, convergence, liveness). Same seed ⇒ same run, bit for bit.
//!
//! Why written here and not madsim/turmoil: engines are sans-IO, so the simulator only needs a
//! priority queue of events; owning it keeps the random stream and event order fixed forever
//! and lets faults reach inside (disk crash semantics, partial connectivity).
//!
//! Modules, one concern each:
//! * [`sim`] — the event loop and the checks ([`run_seed`]).
//! * [`network`] — latency, jitter, loss, duplication, per-directed-link partitions.
//! * [`engines`] — the engines by name (a log protocol on the replica layer, or CASPaxos).
//! * [`disk`] — written vs synced records, crash semantics.
//! * [`client`] — the workload and the history it records.
//! * [`faults`] — fault sets, random schedules, the paper's partial-connectivity scenarios.
//! * [`trace`] — trace hash (replay proof) and the ring buffer of the last events.
//! * [`rng`] — the seeded generator.
//! * [`sweep`] — the seed-sweep harness engine test suites share.
//! * [`campaign`] — `synod sim --campaign`: long seeds on every core, for hours.
//! * [`ledger`] — the campaign's append-only record of which seeds ran, where the README's
//!   "0 failures over N seeds" figures come from.
//! * [`toy`] — a fixed-sequencer engine for testing the simulator itself.
//! * [`lease_ops`] — the lease workload (grants, keep-alives, revokes, lapses, reads of lease
//!   keys) and the lease checker's history; the lease clients live in `sim/leases.rs`.
//! * [`watch_ops`] — the watch workload (compactions, past and range reads, multi-key txns) and
//!   what replies tell the watch checker; the watchers themselves live in `sim/watch.rs`.
//!
//! The library API for `synod sim` is [`SimOptions`], [`run_many`], [`run_cli`] and
//! [`partial_connectivity_report`].

pub mod campaign;
pub mod client;
pub mod disk;
pub mod engines;
pub mod faults;
pub mod lease_ops;
pub mod ledger;
pub mod network;
pub mod rng;
pub mod sim;
pub mod sweep;
pub mod toy;
pub mod trace;
pub mod watch_ops;

pub use faults::{Damage, Fault, FaultSet, Scenario, ScheduledFault};
pub use sim::{RunConfig, RunResult, TICK_US, run_seed};

use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use synod_core::PlantedBug;

/// Runs one seed of a named engine.
pub type Runner = fn(&RunConfig) -> RunResult;

/// Engine names the simulator knows.
pub const ENGINES: [&str; 7] = [
    "omnipaxos",
    "vr",
    "caspaxos",
    "epaxos",
    "omnipaxos-groups",
    "vr-groups",
    "toy",
];

/// Groups of the fixed layouts the partitioned tests use (one key each with the default 4 keys).
pub const SIM_GROUPS: usize = 4;
/// Groups a partitioned run of `synod sim` starts with: the operator splits more off at run
/// time (`sim/splitter.rs`), up to one per key.
pub const SIM_GROUPS_AT_START: usize = 2;

/// Maps an engine name to its runner. "toy" is the simulator's own test engine.
pub fn engine_runner(name: &str) -> Result<Runner, String> {
    match name {
        "toy" => Ok(run_seed::<toy::Toy>),
        "omnipaxos" => Ok(run_seed::<engines::OmniPaxosEngine>),
        "vr" => Ok(run_seed::<engines::VrEngine>),
        "caspaxos" => Ok(run_seed::<engines::CasPaxosEngine>),
        "epaxos" => Ok(run_seed::<engines::EPaxosEngine>),
        "omnipaxos-groups" => Ok(run_groups::<engines::OmniPaxosEngine>),
        "vr-groups" => Ok(run_groups::<engines::VrEngine>),
        other => Err(format!(
            "unknown engine {other:?}; known engines: {}",
            ENGINES.join(", ")
        )),
    }
}

/// Runs one seed of log engine `E` partitioned into groups: [`SIM_GROUPS_AT_START`] of them
/// over the run's keys, unless the config names its own split keys, and more split off while
/// it runs.
pub fn run_groups<E: synod_core::Engine>(cfg: &RunConfig) -> RunResult {
    let mut cfg = cfg.clone();
    if cfg.partition_replicas > 0 {
        // A group per key; with splits (`--splits`), two to begin with, split at run time.
        if cfg.split_keys.is_empty() {
            let groups = if cfg.splits {
                SIM_GROUPS_AT_START
            } else {
                SIM_GROUPS
            };
            cfg.split_keys = default_split_keys(cfg.keys, groups);
        }
        return run_seed::<synod_partition::Partitioned<E>>(&cfg);
    }
    if cfg.split_keys.is_empty() {
        cfg.split_keys = default_split_keys(cfg.keys, SIM_GROUPS_AT_START);
    }
    // Partitioned runs split ranges while they run.
    cfg.splits = true;
    run_seed::<synod_partition::Partitioned<E>>(&cfg)
}

/// Split keys that share the run's keys (`k0`, `k1`, …) out evenly among `groups` groups.
/// Each split key is itself one of the keys, so routing at a boundary is exercised.
pub fn default_split_keys(keys: u64, groups: usize) -> Vec<Vec<u8>> {
    let mut names: Vec<String> = (0..keys).map(client::key_name).collect();
    names.sort_unstable();
    let g = groups.clamp(1, names.len().max(1));
    let mut splits: Vec<Vec<u8>> = (1..g)
        .map(|i| names[i * names.len() / g].clone().into_bytes())
        .collect();
    splits.dedup();
    splits
}

/// Whether the named engine has leases (what lease clients need).
fn engine_has_leases(name: &str) -> bool {
    use synod_core::Engine;
    match name {
        "toy" => toy::Toy::capabilities().leases,
        "omnipaxos" => engines::OmniPaxosEngine::capabilities().leases,
        "vr" => engines::VrEngine::capabilities().leases,
        "caspaxos" => engines::CasPaxosEngine::capabilities().leases,
        "epaxos" => engines::EPaxosEngine::capabilities().leases,
        // Leases fanned out to every group (the CI tests run them; the command line refused).
        "omnipaxos-groups" => {
            synod_partition::Partitioned::<engines::OmniPaxosEngine>::capabilities().leases
        }
        "vr-groups" => synod_partition::Partitioned::<engines::VrEngine>::capabilities().leases,
        _ => false,
    }
}

/// Whether the named engine keeps store revisions (what watchers need).
fn engine_keeps_revisions(name: &str) -> bool {
    use synod_core::Engine;
    match name {
        "toy" => toy::Toy::capabilities().revisions,
        "omnipaxos" => engines::OmniPaxosEngine::capabilities().revisions,
        "vr" => engines::VrEngine::capabilities().revisions,
        "caspaxos" => engines::CasPaxosEngine::capabilities().revisions,
        "epaxos" => engines::EPaxosEngine::capabilities().revisions,
        _ => false,
    }
}

/// What `synod sim` runs.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub engine: String,
    pub nodes: usize,
    pub seeds: Range<u64>,
    pub faults: FaultSet,
    pub clients: usize,
    pub ops_per_client: usize,
    /// Size of the key set (operations pick a key uniformly).
    pub keys: u64,
    /// The fault window in simulated seconds: faults happen in it and the clients spread their
    /// operations over it; a run lasts this plus the time to heal and converge (≈ 3 s).
    pub sim_seconds: u64,
    pub planted_bug: Option<PlantedBug>,
    /// Print every seed, not only failures.
    pub verbose: bool,
    /// Write the history of every failing seed here as `<engine>-seed<N>.json`.
    pub history_dir: Option<PathBuf>,
    /// Stop at the first failing seed.
    pub stop_on_failure: bool,
    /// Checkpoint (compact the log) every this many applied entries; 0 = never.
    pub snapshot_entries: u64,
    /// Watchers per node, with the watch workload and checker ([`RunConfig::watchers`]).
    pub watchers: usize,
    /// Lease clients, with the lease checker ([`RunConfig::leases`]).
    pub leases: usize,
    /// Partitioned engines: keep the range directory ([`RunConfig::range_directory`]).
    pub directory: bool,
    /// Partitioned engines: each group after the first on this many members
    /// ([`RunConfig::partition_replicas`]; 0: every member).
    pub replicas: usize,
    /// Placement: an operator moves groups between members ([`RunConfig::moves`]).
    pub moves: bool,
    /// Placement: groups' leaders even out the groups per member ([`RunConfig::rebalance`]).
    pub rebalance: bool,
    /// Deletes of ranges of keys in the workload ([`RunConfig::range_deletes`]).
    pub range_deletes: bool,
    /// Placement: an operator splits ranges too ([`RunConfig::splits`]).
    pub splits: bool,
}

impl Default for SimOptions {
    /// The workload of [`RunConfig::new`], so `synod sim` and the test suites run the same
    /// seeds unless told otherwise.
    fn default() -> Self {
        let run = RunConfig::new(0, 3);
        SimOptions {
            engine: "omnipaxos".into(),
            nodes: run.nodes,
            seeds: 0..100,
            faults: run.faults,
            clients: run.clients,
            ops_per_client: run.ops_per_client,
            keys: run.keys,
            sim_seconds: run.fault_window_us / 1_000_000,
            planted_bug: None,
            verbose: false,
            history_dir: None,
            stop_on_failure: false,
            snapshot_entries: 0,
            watchers: run.watchers,
            leases: run.leases,
            directory: run.range_directory,
            replicas: run.partition_replicas,
            moves: run.moves,
            rebalance: run.rebalance,
            range_deletes: run.range_deletes,
            splits: false,
        }
    }
}

/// Most simulated seconds of one run's fault window (an hour: far beyond any useful seed, and
/// small enough that no time computation overflows).
pub const SIM_SECONDS_MAX: u64 = 3_600;
/// Most keys (operations stay cheap to check per key; beyond this a run would hardly collide).
pub const KEYS_MAX: u64 = 1_000_000;
/// Most watchers per node (each costs a filter per applied revision per node).
pub const WATCHERS_MAX: usize = 1_000;

impl SimOptions {
    /// Refuses workloads the simulator cannot run (no clients, no keys, no time).
    pub fn check_workload(&self) -> Result<(), String> {
        if self.replicas > 0 && !(self.directory && self.replicas < self.nodes) {
            return Err("--replicas needs --directory and fewer replicas than --nodes".into());
        }
        if (self.moves || self.rebalance || self.splits) && self.replicas == 0 {
            return Err("--moves, --rebalance and --splits need --replicas".into());
        }
        if self.clients == 0 || self.ops_per_client == 0 {
            return Err("--clients and --ops must be positive".into());
        }
        if !(1..=KEYS_MAX).contains(&self.keys) {
            return Err(format!("--keys must be 1..={KEYS_MAX}, got {}", self.keys));
        }
        if !(1..=SIM_SECONDS_MAX).contains(&self.sim_seconds) {
            return Err(format!(
                "--sim-seconds must be 1..={SIM_SECONDS_MAX}, got {}",
                self.sim_seconds
            ));
        }
        Ok(())
    }

    pub fn run_config(&self, seed: u64) -> RunConfig {
        let mut cfg = RunConfig::new(seed, self.nodes);
        cfg.faults = self.faults;
        cfg.clients = self.clients;
        cfg.ops_per_client = self.ops_per_client;
        cfg.keys = self.keys;
        cfg.fault_window_us = self.sim_seconds.saturating_mul(1_000_000);
        cfg.planted_bug = self.planted_bug;
        cfg.snapshot_entries = self.snapshot_entries;
        cfg.watchers = self.watchers;
        cfg.leases = self.leases;
        cfg.range_directory = self.directory;
        cfg.partition_replicas = self.replicas;
        cfg.moves = self.moves;
        cfg.rebalance = self.rebalance;
        cfg.range_deletes = self.range_deletes;
        cfg.splits = self.splits;
        cfg.keep_history = self.history_dir.is_some();
        cfg
    }
}

/// Totals over many seeds.
#[derive(Clone, Debug, Default)]
pub struct SimSummary {
    pub seeds_run: u64,
    pub failed_seeds: Vec<u64>,
    /// Failure reports of the failing seeds (bounded by [`SUMMARY_REPORTS_MAX`]).
    pub reports: Vec<String>,
    pub ops_ok: u64,
    pub ops_unknown: u64,
    pub ops_failed: u64,
    pub messages: u64,
    pub events: u64,
    pub virtual_time_us: u64,
    pub wall: Duration,
    /// Wall time the linearizability checks took, summed over seeds.
    pub check_wall: Duration,
    /// Seeds in which agreement by applied digest was checked (see
    /// [`RunResult::agreement_checked`]); fewer than `seeds_run` for log-less engines.
    pub agreement_checked_seeds: u64,
    /// Totals of the watch checker over the seeds that had watchers.
    pub watch: WatchTotals,
    /// Totals of the lease checker over the seeds that had lease clients.
    pub leases: LeaseTotals,
    /// Reconfiguration runs, and the membership changes acknowledged in them.
    pub reconfig_seeds: u64,
    pub reconfig_steps: u64,
    /// Leader hand-offs started and completed (runs with the `transfer` fault).
    pub transfers_started: u64,
    pub transfers_completed: u64,
    /// Range splits and merges that took effect (partitioned runs).
    pub splits_done: u64,
    pub merges_done: u64,
    /// Placement: moves answered as done.
    pub moves_done: u64,
    /// Partitioned runs: groups created and retired in all (by the operator or the engines).
    pub groups_created: u64,
    pub groups_retired: u64,
    /// Partitioned runs: revisions and moves of keys the watch feed check saw.
    pub feed_revisions: u64,
    pub feed_moves: u64,
    /// Partitioned runs with the compaction workload: compactions acknowledged, and reads
    /// at past revisions refused.
    pub compactions_acknowledged: u64,
    pub past_reads_refused: u64,
    pub past_reads_checked: u64,
    /// Scans of every key (over several groups) answered, checked at the end of each run.
    pub scans_checked: u64,
}

/// What the lease checker covered over many seeds.
#[derive(Clone, Debug, Default)]
pub struct LeaseTotals {
    pub seeds: u64,
    pub leases: u64,
    pub renewals: u64,
    pub absences: u64,
    pub absences_before_deadline: u64,
    pub liveness_judged: u64,
    /// The smallest margin by which an absence followed its lease's proven end, µs.
    pub closest_after_deadline_us: Option<u64>,
    pub ops_ok: u64,
}

impl LeaseTotals {
    /// Adds one run's lease report.
    pub fn record(&mut self, r: &RunResult) {
        let Some(l) = &r.leases else {
            return;
        };
        self.seeds += 1;
        self.leases += l.leases as u64;
        self.renewals += l.renewals as u64;
        self.absences += l.absences as u64;
        self.absences_before_deadline += l.absences_before_deadline as u64;
        self.liveness_judged += l.liveness_judged as u64;
        if let Some(m) = l.closest_after_deadline_us {
            self.closest_after_deadline_us =
                Some(self.closest_after_deadline_us.map_or(m, |c| c.min(m)));
        }
        self.ops_ok += r.lease_ops_ok;
    }

    /// One line for the totals, empty when no seed had lease clients.
    pub fn line(&self) -> String {
        if self.seeds == 0 {
            return String::new();
        }
        format!(
            " | leases: {} seeds, {} leases, {} grants/keep-alives ok, {} absences judged ({} before the lease's proven end, each excused by a client's revoke/delete/overwrite; the closest after it by {}), {} leases judged gone at the end ({} lease-workload ops ok)",
            self.seeds,
            self.leases,
            self.renewals,
            self.absences,
            self.absences_before_deadline,
            self.closest_after_deadline_us
                .map_or("-".to_string(), |us| format!(
                    "{:.1} ms",
                    us as f64 / 1000.0
                )),
            self.liveness_judged,
            self.ops_ok
        )
    }
}

/// What the watch checker covered over many seeds.
#[derive(Clone, Debug, Default)]
pub struct WatchTotals {
    pub seeds: u64,
    pub watchers: u64,
    pub deliveries: u64,
    pub resumes: u64,
    pub cancels: u64,
    pub revisions: u64,
    pub reads: u64,
    pub writes: u64,
    pub compares: u64,
    pub ops_ok: u64,
}

impl WatchTotals {
    /// Adds one run's watch report.
    pub fn record(&mut self, r: &RunResult) {
        let Some(w) = &r.watch else {
            return;
        };
        self.seeds += 1;
        self.watchers += w.watchers as u64;
        self.deliveries += w.deliveries;
        self.resumes += w.resumes;
        self.cancels += w.cancels;
        self.revisions += w.revisions;
        self.reads += w.reads as u64;
        self.writes += w.writes as u64;
        self.compares += w.compares as u64;
        self.ops_ok += r.watch_ops_ok;
    }

    /// One line for the totals, empty when no seed had watchers.
    pub fn line(&self) -> String {
        if self.seeds == 0 {
            return String::new();
        }
        format!(
            " | watch: {} seeds, {} watchers, {} deliveries over {} revisions, {} resumes, {} cancelled as compacted, checked {} range reads, {} acked writes, {} txn compares ({} watch-workload ops ok)",
            self.seeds,
            self.watchers,
            self.deliveries,
            self.revisions,
            self.resumes,
            self.cancels,
            self.reads,
            self.writes,
            self.compares,
            self.ops_ok
        )
    }
}

/// Failure reports kept in a summary.
pub const SUMMARY_REPORTS_MAX: usize = 10;

impl SimSummary {
    pub fn passed(&self) -> bool {
        self.failed_seeds.is_empty()
    }

    pub fn totals(&self) -> String {
        let wall_s = self.wall.as_secs_f64().max(1e-9);
        let agreement = if self.agreement_checked_seeds == self.seeds_run {
            String::new()
        } else {
            format!(
                " | agreement checked in {}/{} seeds (a seed that ends before its replicas are comparable is not checked)",
                self.agreement_checked_seeds, self.seeds_run
            )
        };
        format!(
            "seeds {} ({} failed) | ops {} ok, {} unknown, {} failed | messages {} | simulated {:.1} s | wall {:.2} s ({:.2} s checking) | {:.0} simulated events/s{agreement}{}{}{}{}",
            self.seeds_run,
            self.failed_seeds.len(),
            self.ops_ok,
            self.ops_unknown,
            self.ops_failed,
            self.messages,
            self.virtual_time_us as f64 / 1e6,
            wall_s,
            self.check_wall.as_secs_f64(),
            self.events as f64 / wall_s,
            self.watch.line(),
            self.leases.line(),
            self.reconfig_line(),
            self.transfer_line(),
        )
    }

    /// One line for leader transfers, empty when no seed had them.
    fn transfer_line(&self) -> String {
        let splits = if self.splits_done == 0 && self.groups_created == 0 {
            String::new()
        } else {
            format!(
                " | range splits {}, merges {} (groups created {}, retired {}){}",
                self.splits_done,
                self.merges_done,
                self.groups_created,
                self.groups_retired,
                if self.compactions_acknowledged > 0 {
                    format!(
                        ", compactions {}, past reads {} answered and checked, {} refused, \
                         scans {} checked",
                        self.compactions_acknowledged,
                        self.past_reads_checked,
                        self.past_reads_refused,
                        self.scans_checked
                    )
                } else {
                    String::new()
                }
            )
        };
        if self.transfers_started == 0 {
            return splits;
        }
        format!(
            " | leader transfers {} started, {} completed{splits}",
            self.transfers_started, self.transfers_completed
        )
    }

    /// One line for membership changes, empty when no seed had them.
    fn reconfig_line(&self) -> String {
        if self.reconfig_seeds == 0 {
            return String::new();
        }
        format!(
            " | reconfig: {} membership changes acknowledged in {} seeds",
            self.reconfig_steps, self.reconfig_seeds
        )
    }
}

/// Runs every seed of `opts`, calling `on_result` after each.
pub fn run_many_with(
    opts: &SimOptions,
    on_result: &mut dyn FnMut(&RunResult),
) -> Result<SimSummary, String> {
    let runner = engine_runner(&opts.engine)?;
    if !(1..=9).contains(&opts.nodes) {
        return Err(format!("--nodes must be 1..=9, got {}", opts.nodes));
    }
    opts.check_workload()?;
    if opts.watchers > 0 && !engine_keeps_revisions(&opts.engine) {
        return Err(format!(
            "--watchers needs an engine with revisions; {} has none",
            opts.engine
        ));
    }
    if opts.leases > 0 && !engine_has_leases(&opts.engine) {
        return Err(format!(
            "--leases needs an engine with leases; {} has none",
            opts.engine
        ));
    }
    if opts.leases > lease_ops::LEASE_CLIENTS_MAX {
        return Err(format!(
            "--leases must be 0..={}, got {}",
            lease_ops::LEASE_CLIENTS_MAX,
            opts.leases
        ));
    }
    if opts.watchers > WATCHERS_MAX {
        return Err(format!(
            "--watchers must be 0..={WATCHERS_MAX}, got {}",
            opts.watchers
        ));
    }
    let start = Instant::now();
    let mut sum = SimSummary::default();
    for seed in opts.seeds.clone() {
        let r = runner(&opts.run_config(seed));
        sum.record(&r);
        on_result(&r);
        if !r.passed() {
            if let (Some(dir), Some(h)) = (&opts.history_dir, &r.history) {
                let path = dir.join(format!("{}-seed{}.json", r.engine, seed));
                if let Err(e) = std::fs::write(&path, h.to_json()) {
                    return Err(format!("cannot write {}: {e}", path.display()));
                }
            }
            if opts.stop_on_failure {
                break;
            }
        }
    }
    sum.wall = start.elapsed();
    Ok(sum)
}

/// Runs every seed of `opts` silently.
pub fn run_many(opts: &SimOptions) -> Result<SimSummary, String> {
    run_many_with(opts, &mut |_| {})
}

/// Seeds each scenario of the partial-connectivity report runs.
pub const REPORT_SEEDS: u64 = 3;
/// How long each scenario's topology stays in place, in election timeouts.
pub const REPORT_SCENARIO_ETS: u64 = 50;

/// One row of the partial-connectivity report.
#[derive(Clone, Debug)]
pub struct ScenarioOutcome {
    pub scenario: Scenario,
    /// Longest downtime over the seeds, in election timeouts.
    pub max_downtime_ets: f64,
    /// Some operation completed under the topology in every seed.
    pub recovered: bool,
    /// Seeds whose safety/liveness checks failed.
    pub failed_seeds: Vec<u64>,
}

/// Runs the three scenarios for `engine` on `nodes` replicas.
pub fn partial_connectivity(engine: &str, nodes: usize) -> Result<Vec<ScenarioOutcome>, String> {
    let runner = engine_runner(engine)?;
    if nodes < 3 {
        return Err("partial-connectivity scenarios need at least 3 nodes".into());
    }
    let mut out = Vec::new();
    for scenario in Scenario::ALL {
        let mut row = ScenarioOutcome {
            scenario,
            max_downtime_ets: 0.0,
            recovered: true,
            failed_seeds: Vec::new(),
        };
        for seed in 1..=REPORT_SEEDS {
            let mut cfg = RunConfig::new(seed, nodes);
            cfg.faults = FaultSet::NONE;
            cfg.scenario = Some(scenario);
            cfg.clients = 4;
            cfg.ops_per_client = usize::MAX;
            cfg.fault_window_us = REPORT_SCENARIO_ETS * cfg.election_timeout_us();
            let r = runner(&cfg);
            let ets = r.downtime_us as f64 / cfg.election_timeout_us() as f64;
            row.max_downtime_ets = row.max_downtime_ets.max(ets);
            row.recovered &= r.recovered;
            if !r.passed() {
                row.failed_seeds.push(seed);
            }
        }
        out.push(row);
    }
    Ok(out)
}

/// The partial-connectivity report as a table: measured downtime (longest virtual interval
/// with no client operation completing while the scenario's topology is in place, in election
/// timeouts) next to what the OmniPaxos paper reports.
pub fn partial_connectivity_report(engine: &str, nodes: usize) -> Result<String, String> {
    let rows = partial_connectivity(engine, nodes)?;
    let mut s = format!(
        "partial connectivity, engine {engine}, {nodes} nodes, {REPORT_SEEDS} seeds per scenario, topology held {REPORT_SCENARIO_ETS} election timeouts (ET = 100 ms virtual)\n"
    );
    s += "| scenario             | max downtime (ETs) | outcome    | checks | paper: OmniPaxos    | paper: Raft |\n";
    s += "|----------------------|--------------------|------------|--------|---------------------|-------------|\n";
    for r in &rows {
        // No completion at all, or none for (nearly) the whole hold: no recovery.
        let outcome = if !r.recovered || r.max_downtime_ets >= REPORT_SCENARIO_ETS as f64 * 0.9 {
            "deadlocks"
        } else {
            "recovers"
        };
        let checks = if r.failed_seeds.is_empty() {
            "pass".to_string()
        } else {
            format!("FAIL {:?}", r.failed_seeds)
        };
        s += &format!(
            "| {:<20} | {:>18.1} | {:<10} | {:<6} | {:<19} | {:<11} |\n",
            r.scenario.name(),
            r.max_downtime_ets,
            outcome,
            checks,
            r.scenario.paper_omnipaxos(),
            r.scenario.paper_raft()
        );
    }
    s += "paper: Ng, Haridi, Carbone, \"OmniPaxos: Breaking the Barriers of Partial Connectivity\", EuroSys'23 (\"guaranteed recovery in at most four election timeouts\").\n";
    Ok(s)
}

/// Usage of [`run_cli`].
pub const USAGE: &str = "usage: synod sim [--engine omnipaxos|vr|caspaxos|epaxos|omnipaxos-groups|vr-groups|toy] [--nodes N] [--seeds A..B | N]
                 [--faults all|none|crash,partition,one-way,partial,loss,duplicate,power-loss,torn-writes,storage,reconfig,transfer]
                 [--clients N] [--ops N] [--keys N] [--sim-seconds S]
                 [--snapshot-entries N] [--watchers N] [--leases N] [--directory] [--replicas R [--moves] [--rebalance] [--splits]] [--planted-bug NAME]
                 [--range-deletes] [--history-dir DIR]
                 [--stop-on-failure] [--verbose] [--report]
       synod sim --campaign (--for DURATION | --seeds N) ...   (see synod sim --campaign --help)
  --seeds N means 0..N. --report prints the partial-connectivity table instead of running seeds.
  --ops is per client; --sim-seconds is the fault window the operations spread over
  (defaults: 5 clients x 40 ops on 4 keys over 6 s).
  --watchers N keeps N watchers per node (log engines), adds compactions, past-revision and
  range reads and multi-key txns to the workload, and runs the watch checker (docs/simulation.md).
  --leases N adds N lease clients (log engines: grant, attach keys, keep alive, revoke, lapse,
  read lease keys) and runs the lease checker: never early, and gone at the end (docs/leases.md).
  --faults all,reconfig adds membership changes: an operator adds learners and voters, promotes,
  and removes members (the leader too) while clients run (docs/membership.md).
  --faults all,transfer adds leader transfers: an operator asks the leader to hand leadership to
  a random other voter at random moments; the totals count hand-offs started and completed
  (docs/leader-transfer.md).
  --engine omnipaxos-groups|vr-groups runs the engine partitioned into 2 groups whose split key
  is one of the run's keys, and an operator splits more ranges off at random keys while the
  faults run (up to one group per key); agreement is checked per group (docs/partitioning.md).
  --directory (partitioned engines) keeps the range directory and checks that every member's
  copy of it matches the layout its groups applied, once the run is quiet.
  --replicas R (partitioned engines, with --directory, R below --nodes) places each group after
  the first on R members, a group per key; requests for a group a member does not
  host are relayed to one that does (docs/partitioning.md, \"Placement\"). --splits starts
  placed runs with two groups and adds an operator splitting ranges (half of its asks, with
  --moves; merges of placed groups are refused). --moves adds an
  operator moving a random key's group from one member to another (`synodctl range move`);
  --rebalance lets the groups' leaders move groups to even out how many each member hosts,
  and checks that they are even once the run is quiet.
  --range-deletes makes one delete in two a delete of a range of keys (over several groups where
  split keys lie inside it), judged as a delete of each of its keys by their previous values.
  exit status: 0 every seed passed, 1 some seed failed, 2 bad arguments.";

/// Parsed command line of `synod sim`.
#[derive(Clone, Debug)]
pub struct CliArgs {
    pub opts: SimOptions,
    pub report: bool,
}

/// Parses `synod sim` arguments (without the program and subcommand names).
pub fn parse_args(args: &[String]) -> Result<CliArgs, String> {
    let mut opts = SimOptions::default();
    let mut report = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |name: &str, v: String| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--engine" => opts.engine = value(flag)?,
            "--nodes" => opts.nodes = num(flag, value(flag)?)? as usize,
            "--seeds" => {
                let v = value(flag)?;
                opts.seeds = match v.split_once("..") {
                    Some((a, b)) => num(flag, a.to_string())?..num(flag, b.to_string())?,
                    None => 0..num(flag, v)?,
                };
                if opts.seeds.is_empty() {
                    return Err(format!("--seeds {:?} is empty", opts.seeds));
                }
            }
            "--faults" => opts.faults = FaultSet::parse(&value(flag)?)?,
            "--clients" => opts.clients = num(flag, value(flag)?)? as usize,
            "--ops" => opts.ops_per_client = num(flag, value(flag)?)? as usize,
            "--keys" => opts.keys = num(flag, value(flag)?)?,
            "--sim-seconds" => opts.sim_seconds = num(flag, value(flag)?)?,
            "--snapshot-entries" => opts.snapshot_entries = num(flag, value(flag)?)?,
            "--watchers" => opts.watchers = num(flag, value(flag)?)? as usize,
            "--leases" => opts.leases = num(flag, value(flag)?)? as usize,
            "--planted-bug" => {
                let v = value(flag)?;
                opts.planted_bug = Some(PlantedBug::parse(&v).ok_or_else(|| {
                    format!(
                        "unknown planted bug {v:?}; known: {}",
                        PlantedBug::ALL.map(|b| b.name()).join(", ")
                    )
                })?);
            }
            "--history-dir" => opts.history_dir = Some(PathBuf::from(value(flag)?)),
            "--stop-on-failure" => opts.stop_on_failure = true,
            "--directory" => opts.directory = true,
            "--replicas" => opts.replicas = num(flag, value(flag)?)? as usize,
            "--moves" => opts.moves = true,
            "--splits" => opts.splits = true,
            "--rebalance" => opts.rebalance = true,
            "--range-deletes" => opts.range_deletes = true,
            "--verbose" | "-v" => opts.verbose = true,
            "--report" => report = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(CliArgs { opts, report })
}

/// `synod sim`: parses `args`, runs, prints failures and totals; returns the exit status.
pub fn run_cli(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "--campaign") {
        return campaign::run_cli(args);
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return 0;
    }
    let cli = match parse_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("synod sim: {e}\n{USAGE}");
            return 2;
        }
    };
    if cli.report {
        return match partial_connectivity_report(&cli.opts.engine, cli.opts.nodes) {
            Ok(table) => {
                print!("{table}");
                if table.contains("FAIL") { 1 } else { 0 }
            }
            Err(e) => {
                eprintln!("synod sim: {e}");
                2
            }
        };
    }
    let verbose = cli.opts.verbose;
    let result = run_many_with(&cli.opts, &mut |r| {
        if !r.passed() {
            println!("{}", r.report());
        } else if verbose {
            println!(
                "seed {} ok: {} ops ({} unknown), {} messages, {:.1} s simulated, {:.1} ms wall ({:.1} ms checking), trace {:016x}",
                r.seed,
                r.ops_ok,
                r.ops_unknown,
                r.messages,
                r.virtual_time_us as f64 / 1e6,
                r.wall.as_secs_f64() * 1e3,
                r.check_wall.as_secs_f64() * 1e3,
                r.trace_hash
            );
        }
    });
    match result {
        Ok(sum) => {
            println!(
                "engine {} nodes {} faults {} | {} clients x {} ops on {} keys over {} s{}{}{}",
                cli.opts.engine,
                cli.opts.nodes,
                cli.opts.faults.names(),
                cli.opts.clients,
                cli.opts.ops_per_client,
                cli.opts.keys,
                cli.opts.sim_seconds,
                if cli.opts.watchers > 0 {
                    format!(" | {} watchers per node", cli.opts.watchers)
                } else {
                    String::new()
                },
                if cli.opts.leases > 0 {
                    format!(" | {} lease clients", cli.opts.leases)
                } else {
                    String::new()
                },
                cli.opts
                    .planted_bug
                    .map_or(String::new(), |b| format!(" planted bug {}", b.name()))
            );
            println!("{}", sum.totals());
            if !sum.failed_seeds.is_empty() {
                println!("failed seeds: {:?}", sum.failed_seeds);
            }
            if sum.passed() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("synod sim: {e}");
            2
        }
    }
}
