//! The one seed-sweep harness of the simulator's test suites. Every engine's test file says
//! *what* to sweep — an engine type, a [`RunConfig`] template, a seed range — and this module
//! does the rest once: the seed count and its `SYNOD_SIM_SEEDS` override, the totals line, the
//! failure message with the first report and a command that replays the failing seed, and the
//! "a planted bug is caught within K seeds" search.
//!
//! Replaying a seed: when the template holds only what `synod sim` has flags for, the message
//! gives that command. Otherwise (snapshots, scenarios, fixed schedules…) it gives the test
//! command; for a failed all-pass sweep with `SYNOD_SIM_SEED=<seed>`, which makes every such
//! sweep in the test run that one seed alone (sweeps whose range does not hold it are skipped).
//! A planted-bug search replays as it is: it is deterministic and stops at the same seed.

use crate::{FaultSet, RunConfig, RunResult, SUMMARY_REPORTS_MAX, Scenario, SimSummary, run_seed};
use std::ops::Range;
use std::time::Instant;
use synod_core::Engine;

/// Replaces a suite's default seed count (CI's long runs raise it, a quick local run lowers it).
pub const SEEDS_ENV: &str = "SYNOD_SIM_SEEDS";

/// Restricts every sweep to this one seed, to replay a failure through its test.
pub const SEED_ENV: &str = "SYNOD_SIM_SEED";

/// Seeds per suite: `SYNOD_SIM_SEEDS` if it is a number (at least 1), else `default`.
pub fn seed_count(default: u64) -> u64 {
    std::env::var(SEEDS_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(default, |n| n.max(1))
}

/// `count` seeds from `first`, split in two halves so that a suite written as two tests keeps
/// both cores busy.
pub fn halves(first: u64, count: u64) -> [Range<u64>; 2] {
    let middle = first + count / 2;
    [first..middle, middle..first + count]
}

/// The seeds of `seeds` this process runs: all of them, or only `SYNOD_SIM_SEED` when set.
fn selected(seeds: Range<u64>) -> Range<u64> {
    let only = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    match only {
        Some(s) if seeds.contains(&s) => s..s + 1,
        Some(_) => 0..0,
        None => seeds,
    }
}

impl SimSummary {
    /// Adds one run's counts (and, if it failed, its seed and report) to the totals.
    pub fn record(&mut self, r: &RunResult) {
        self.seeds_run += 1;
        self.ops_ok += r.ops_ok;
        self.ops_unknown += r.ops_unknown;
        self.ops_failed += r.ops_failed;
        self.messages += r.messages;
        self.events += r.events;
        self.virtual_time_us += r.virtual_time_us;
        self.check_wall += r.check_wall;
        self.agreement_checked_seeds += u64::from(r.agreement_checked);
        self.watch.record(r);
        self.leases.record(r);
        self.transfers_started += r.transfers_started;
        self.transfers_completed += r.transfers_completed;
        self.splits_done += r.splits_done;
        self.merges_done += r.merges_done;
        self.moves_done += r.moves_done;
        self.feed_revisions += r.feed_revisions;
        self.feed_moves += r.feed_moves;
        self.compactions_acknowledged += r.compactions_acknowledged;
        self.past_reads_refused += r.past_reads_refused;
        self.past_reads_checked += r.past_reads_checked;
        self.scans_checked += r.scans_checked;
        if r.groups_seen > 0 {
            let at_start = r.groups_at_start;
            self.groups_created += r.groups_seen.saturating_sub(at_start);
            self.groups_retired += r.groups_seen.saturating_sub(r.groups_at_end);
        }
        if !r.reconfig_plan.is_empty() {
            self.reconfig_seeds += 1;
            self.reconfig_steps += r.reconfig_steps as u64;
        }
        if !r.passed() {
            self.failed_seeds.push(r.seed);
            if self.reports.len() < SUMMARY_REPORTS_MAX {
                self.reports.push(r.report());
            }
        }
    }
}

/// Runs engine `E` on every seed of `seeds` with `template` (its `seed` replaced) and returns
/// the totals, failures included.
pub fn run_seeds<E: Engine>(template: &RunConfig, seeds: Range<u64>) -> SimSummary {
    let start = Instant::now();
    let mut sum = SimSummary::default();
    for seed in seeds {
        sum.record(&run_seed::<E>(&with_seed(template, seed)));
    }
    sum.wall = start.elapsed();
    sum
}

/// Runs the sweep and panics unless every seed passed and some operation completed; prints
/// the totals. Returns them for suite-specific checks.
pub fn assert_all_pass<E: Engine>(template: &RunConfig, seeds: Range<u64>) -> SimSummary {
    let run = selected(seeds.clone());
    if run.is_empty() {
        println!(
            "{} {}, seeds {seeds:?}: skipped ({SEED_ENV} is outside)",
            E::NAME,
            describe(template)
        );
        return SimSummary::default();
    }
    let sum = run_seeds::<E>(template, run);
    println!(
        "{} {}, seeds {seeds:?}: {}",
        E::NAME,
        describe(template),
        sum.totals()
    );
    if let Some(&seed) = sum.failed_seeds.first() {
        panic!(
            "{}\nfailed seeds {:?}\nreplay the first: {}\n{}",
            sum.totals(),
            sum.failed_seeds,
            replay_command(E::NAME, template, seed, true),
            sum.reports.first().map_or("", |s| s.as_str())
        );
    }
    assert!(sum.ops_ok > 0, "no operation completed in seeds {seeds:?}");
    sum
}

/// The lease checker judged every seed of `sum` (none skipped): renewals beyond grants, absences
/// before a lease's proven end (each excused) and every lease by the final probes — so a sweep
/// with lease clients cannot pass by having nothing to judge.
pub fn assert_leases_judged(sum: &SimSummary) {
    if sum.seeds_run == 0 {
        return; // Skipped (SYNOD_SIM_SEED is outside).
    }
    let l = &sum.leases;
    assert_eq!(l.seeds, sum.seeds_run, "every seed ran the lease checker");
    assert!(
        l.renewals > l.leases && l.absences > 0 && l.absences_before_deadline > 0,
        "{l:?}"
    );
    assert_eq!(
        l.liveness_judged, l.leases,
        "every lease judged by the final probes: {l:?}"
    );
}

/// Panics unless a failure of `r` (a run that caught a planted bug) starts with `verdict`: the
/// bug must be caught by the check it was planted for, not by chance by another.
pub fn assert_caught_by(r: &RunResult, verdict: &str) {
    assert!(
        r.failures.iter().any(|f| f.starts_with(verdict)),
        "caught, but not by \"{verdict}\":\n{}",
        r.report()
    );
}

/// The first run in `seeds` that fails with `template`, which plants a bug; panics naming the
/// bug if every seed passes (a planted bug the checks cannot see is a hole in the checks).
pub fn assert_caught<E: Engine>(template: &RunConfig, seeds: Range<u64>) -> RunResult {
    let bug = template
        .planted_bug
        .expect("assert_caught needs a template with a planted bug");
    let found = seeds.clone().find_map(|seed| {
        let r = run_seed::<E>(&with_seed(template, seed));
        (!r.passed()).then_some(r)
    });
    let Some(r) = found else {
        panic!(
            "planted bug {} not caught in seeds {seeds:?} ({})",
            bug.name(),
            describe(template)
        );
    };
    println!(
        "{} caught at seed {} ({}): {}\n  replay: {}",
        bug.name(),
        r.seed,
        describe(template),
        r.failures.first().map_or("", |f| f.as_str()),
        replay_command(E::NAME, template, r.seed, false)
    );
    r
}

/// `all` for every fault (what `--faults` accepts), else the list.
pub fn fault_names(faults: FaultSet) -> String {
    if faults == FaultSet::ALL {
        "all".into()
    } else {
        faults.names()
    }
}

fn with_seed(template: &RunConfig, seed: u64) -> RunConfig {
    RunConfig {
        seed,
        ..template.clone()
    }
}

/// The settings of a sweep that differ from a default run, for its totals line.
fn describe(cfg: &RunConfig) -> String {
    let mut s = format!("{} nodes, faults {}", cfg.nodes, fault_names(cfg.faults));
    if cfg.snapshot_entries > 0 {
        s += &format!(", snapshot every {} entries", cfg.snapshot_entries);
    }
    if let Some(scenario) = cfg.scenario {
        s += &format!(", scenario {}", scenario.name());
    }
    if cfg.watchers > 0 {
        s += &format!(", {} watchers per node", cfg.watchers);
    }
    if cfg.leases > 0 {
        s += &format!(", {} lease clients", cfg.leases);
    }
    if let Some(bug) = cfg.planted_bug {
        s += &format!(", planted bug {}", bug.name());
    }
    s
}

/// A command that reruns `seed` of the sweep: `synod sim` when its flags can say everything
/// the template sets, else this test (restricted to the seed when `only_seed`).
pub fn replay_command(engine: &str, template: &RunConfig, seed: u64, only_seed: bool) -> String {
    let cfg = with_seed(template, seed);
    match cli_command(engine, &cfg) {
        Some(cli) => cli,
        None => test_command(only_seed.then_some(seed)),
    }
}

/// `synod sim` flags that rerun exactly `cfg`, or None when it sets something the CLI cannot.
/// Every workload and fault flag is spelled out, defaults included, so the line stays exact
/// even if a default changes later.
pub fn cli_command(engine: &str, cfg: &RunConfig) -> Option<String> {
    let mut expressible = RunConfig::new(cfg.seed, cfg.nodes);
    expressible.faults = cfg.faults;
    expressible.clients = cfg.clients;
    expressible.ops_per_client = cfg.ops_per_client;
    expressible.keys = cfg.keys;
    expressible.fault_window_us = cfg.fault_window_us;
    expressible.planted_bug = cfg.planted_bug;
    expressible.snapshot_entries = cfg.snapshot_entries;
    expressible.watchers = cfg.watchers;
    expressible.leases = cfg.leases;
    expressible.range_directory = cfg.range_directory;
    expressible.partition_replicas = cfg.partition_replicas;
    expressible.moves = cfg.moves;
    expressible.rebalance = cfg.rebalance;
    expressible.range_deletes = cfg.range_deletes;
    expressible.keep_history = cfg.keep_history;
    // Every other field must be at its default. Comparing the Debug forms covers fields added
    // later without a PartialEq on RunConfig (it holds an f64).
    let whole_seconds = cfg.fault_window_us.is_multiple_of(1_000_000);
    if format!("{expressible:?}") != format!("{cfg:?}") || !whole_seconds {
        return None;
    }
    let mut s = format!(
        "synod sim --engine {engine} --nodes {} --seeds {}..{} --faults {} --clients {} --ops {} --keys {} --sim-seconds {}",
        cfg.nodes,
        cfg.seed,
        cfg.seed + 1,
        fault_names(cfg.faults),
        cfg.clients,
        cfg.ops_per_client,
        cfg.keys,
        cfg.fault_window_us / 1_000_000
    );
    if cfg.snapshot_entries > 0 {
        s += &format!(" --snapshot-entries {}", cfg.snapshot_entries);
    }
    if cfg.watchers > 0 {
        s += &format!(" --watchers {}", cfg.watchers);
    }
    if cfg.leases > 0 {
        s += &format!(" --leases {}", cfg.leases);
    }
    if cfg.range_directory {
        s += " --directory";
    }
    if cfg.partition_replicas > 0 {
        s += &format!(" --replicas {}", cfg.partition_replicas);
    }
    if cfg.moves {
        s += " --moves";
    }
    if cfg.rebalance {
        s += " --rebalance";
    }
    if cfg.range_deletes {
        s += " --range-deletes";
    }
    if let Some(bug) = cfg.planted_bug {
        s += &format!(" --planted-bug {}", bug.name());
    }
    Some(s)
}

/// This test (by the test binary's and thread's names, as libtest sets them), on `seed` alone
/// if given.
fn test_command(seed: Option<u64>) -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, _hash)) => name.to_string(),
            None => stem,
        })
        .unwrap_or_else(|| "<test file>".into());
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("<test>")
        .to_string();
    let env = seed.map_or(String::new(), |s| format!("{SEED_ENV}={s} "));
    format!("{env}cargo test -p synod-sim --test {binary} {test} -- --exact")
}

/// The OmniPaxos paper's partial-connectivity scenarios: each `(scenario, nodes)` for every seed
/// in `seeds`, 4 clients running throughout, the topology held for 30 election timeouts; each
/// run must have no interval longer than `downtime_max_ets` election timeouts without an
/// operation completing (and pass every other check). Prints each run's downtime.
pub fn assert_scenarios_recover<E: Engine>(
    cases: &[(Scenario, usize)],
    seeds: std::ops::RangeInclusive<u64>,
    downtime_max_ets: f64,
) {
    for &(scenario, nodes) in cases {
        for seed in seeds.clone() {
            let mut cfg = RunConfig::new(seed, nodes);
            cfg.faults = FaultSet::NONE;
            cfg.scenario = Some(scenario);
            cfg.clients = 4;
            cfg.ops_per_client = usize::MAX;
            cfg.fault_window_us = 30 * cfg.election_timeout_us();
            cfg.scenario_downtime_max_ets = Some(downtime_max_ets);
            let r = run_seed::<E>(&cfg);
            println!(
                "{} {nodes} nodes seed {seed}: downtime {:.1} ETs",
                scenario.name(),
                r.downtime_us as f64 / cfg.election_timeout_us() as f64
            );
            assert!(r.passed(), "{}", r.report());
        }
    }
}

/// The template of a reconfiguration run: every fault plus the membership operator.
pub fn reconfig_config(nodes: usize) -> RunConfig {
    let mut cfg = RunConfig::new(0, nodes);
    cfg.faults = FaultSet {
        reconfig: true,
        ..FaultSet::ALL
    };
    cfg
}

/// Reconfiguration seeds pass every check, and the operator's changes really happened — at
/// least two acknowledged per seed on average (a run where no change was acknowledged would
/// prove nothing about membership change). The totals, for further checks.
pub fn assert_reconfig_pass<E: Engine>(template: &RunConfig, seeds: Range<u64>) -> SimSummary {
    let n = seeds.end - seeds.start;
    let sum = assert_all_pass::<E>(template, seeds);
    if sum.seeds_run == n {
        assert_eq!(sum.reconfig_seeds, n, "every seed ran an operator");
        assert!(
            sum.reconfig_steps >= 2 * n,
            "too few membership changes acknowledged: {} in {n} seeds",
            sum.reconfig_steps
        );
    }
    sum
}

/// The template of a leader-transfer run: every fault plus the transfer operator.
pub fn transfer_config(nodes: usize) -> RunConfig {
    let mut cfg = RunConfig::new(0, nodes);
    cfg.faults = FaultSet {
        transfer: true,
        ..FaultSet::ALL
    };
    cfg
}

/// Leader-transfer seeds pass every check, and hand-offs really completed: at least one per
/// seed on average (a sweep whose hand-offs all timed out would prove nothing about them).
pub fn assert_transfer_pass<E: Engine>(template: &RunConfig, seeds: Range<u64>) -> SimSummary {
    let n = seeds.end - seeds.start;
    let sum = assert_all_pass::<E>(template, seeds);
    if sum.seeds_run == n {
        assert!(
            sum.transfers_completed >= n,
            "too few leader transfers completed: {} of {} started in {n} seeds",
            sum.transfers_completed,
            sum.transfers_started
        );
    }
    sum
}
