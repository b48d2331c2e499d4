//! `synod sim --campaign`: the standing offline campaign. The simulator runs hundreds of
//! thousands of short seeds an hour; a campaign spends that speed on depth instead — long
//! seeds (a minute of faults, thousands of operations, more keys and clients) for every engine
//! on 3 and 5 nodes with every fault kind on, on every core, for a duration or a seed count.
//!
//! Work is handed out seed by seed, round-robin over the cells (engine × nodes), so that every
//! cell advances evenly and the seeds each cell completes form one contiguous range: that
//! range is what the ledger records ([`crate::ledger`]), every `--flush` interval and at the
//! end, so an interrupted campaign loses at most one interval. Failures print the full report
//! with the exact `synod sim` line that replays them, and make the exit status 1.

use crate::ledger::{self, CellSpec, LedgerEntry};
use crate::sweep::fault_names;
use crate::{FaultSet, RunResult, SimOptions, SimSummary, engine_runner};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_core::PlantedBug;

/// The campaign's own flags (the depth flags of `synod sim` override the profile's).
pub const USAGE: &str =
    "usage: synod sim --campaign [--profile long|short] (--for DURATION | --seeds N)
                 [--engines omnipaxos,vr,caspaxos,epaxos] [--nodes 3,5] [--threads N]
                 [--ledger FILE] [--progress DURATION] [--flush DURATION] [--allow-dirty]
                 [--clients N] [--ops N] [--keys N] [--sim-seconds S] [--faults LIST]
                 [--snapshot-entries N] [--planted-bug NAME] [--history-dir DIR]
                 [--stop-on-failure]
  --seeds N runs N more seeds per cell (engine x nodes); --for 90m runs until then (s, m, h).
  Each cell continues after the highest seed the ledger (default docs/sim-ledger.jsonl)
  holds for it; results are appended there every --flush (default 10m) and at the end.
  profile long: 10 clients x 200 ops on 20 keys over 60 s, every fault; short: the defaults.";

/// A named workload.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: &'static str,
    pub clients: usize,
    pub ops_per_client: usize,
    pub keys: u64,
    pub sim_seconds: u64,
}

/// A minute of faults, 2,000 operations by 10 clients over 20 keys.
pub const LONG: Profile = Profile {
    name: "long",
    clients: 10,
    ops_per_client: 200,
    keys: 20,
    sim_seconds: 60,
};

/// The test suites' seeds (`RunConfig::new`'s workload).
pub const SHORT: Profile = Profile {
    name: "short",
    clients: 5,
    ops_per_client: 40,
    keys: 4,
    sim_seconds: 6,
};

/// The engines a campaign runs by default (the toy is the simulator's own test engine).
pub const CAMPAIGN_ENGINES: [&str; 4] = ["omnipaxos", "vr", "caspaxos", "epaxos"];

/// Parsed `--campaign` command line.
#[derive(Clone, Debug)]
pub struct CampaignArgs {
    /// Engine, nodes and seeds are per cell; the rest is the workload every cell runs.
    pub base: SimOptions,
    pub profile: &'static str,
    pub engines: Vec<String>,
    pub nodes: Vec<usize>,
    pub duration: Option<Duration>,
    pub seeds_per_cell: Option<u64>,
    pub threads: usize,
    pub ledger: PathBuf,
    pub progress: Duration,
    pub flush: Duration,
    pub allow_dirty: bool,
}

/// Parses the arguments after `--campaign` was seen (it may appear anywhere).
pub fn parse(args: &[String]) -> Result<CampaignArgs, String> {
    let profile = match flag_value(args, "--profile").as_deref() {
        None | Some("long") => LONG,
        Some("short") => SHORT,
        Some(other) => return Err(format!("unknown profile {other:?}; known: long, short")),
    };
    let mut c = defaults(&profile);
    let mut it = args.iter().filter(|a| *a != "--campaign");
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--profile" => {
                value()?;
            }
            "--for" => c.duration = Some(parse_duration(&value()?)?),
            "--seeds" => c.seeds_per_cell = Some(number(flag, &value()?)?),
            "--engines" | "--engine" => c.engines = list(&value()?),
            "--nodes" => c.nodes = numbers(flag, &value()?)?,
            "--threads" => c.threads = number(flag, &value()?)? as usize,
            "--ledger" => c.ledger = PathBuf::from(value()?),
            "--progress" => c.progress = parse_duration(&value()?)?,
            "--flush" => c.flush = parse_duration(&value()?)?,
            "--allow-dirty" => c.allow_dirty = true,
            "--stop-on-failure" => c.base.stop_on_failure = true,
            _ => depth_flag(&mut c.base, flag, value)?,
        }
    }
    validate(&c)?;
    Ok(c)
}

fn defaults(profile: &Profile) -> CampaignArgs {
    let base = SimOptions {
        clients: profile.clients,
        ops_per_client: profile.ops_per_client,
        keys: profile.keys,
        sim_seconds: profile.sim_seconds,
        faults: FaultSet::ALL,
        ..SimOptions::default()
    };
    CampaignArgs {
        base,
        profile: profile.name,
        engines: CAMPAIGN_ENGINES.map(String::from).to_vec(),
        nodes: vec![3, 5],
        duration: None,
        seeds_per_cell: None,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ledger: PathBuf::from(ledger::LEDGER_DEFAULT),
        progress: Duration::from_secs(60),
        flush: Duration::from_secs(600),
        allow_dirty: false,
    }
}

/// The workload flags `synod sim` has, applied over the profile.
fn depth_flag(
    base: &mut SimOptions,
    flag: &str,
    value: impl FnOnce() -> Result<String, String>,
) -> Result<(), String> {
    match flag {
        "--clients" => base.clients = number(flag, &value()?)? as usize,
        "--ops" => base.ops_per_client = number(flag, &value()?)? as usize,
        "--keys" => base.keys = number(flag, &value()?)?,
        "--sim-seconds" => base.sim_seconds = number(flag, &value()?)?,
        "--faults" => base.faults = FaultSet::parse(&value()?)?,
        "--snapshot-entries" => base.snapshot_entries = number(flag, &value()?)?,
        "--history-dir" => base.history_dir = Some(PathBuf::from(value()?)),
        "--planted-bug" => {
            let v = value()?;
            let bug = PlantedBug::parse(&v).ok_or(format!("unknown planted bug {v:?}"))?;
            base.planted_bug = Some(bug);
        }
        other => return Err(format!("unknown campaign argument {other:?}")),
    }
    Ok(())
}

fn validate(c: &CampaignArgs) -> Result<(), String> {
    if c.duration.is_none() == c.seeds_per_cell.is_none() {
        return Err("a campaign needs exactly one of --for DURATION and --seeds N".into());
    }
    if c.threads == 0 || c.engines.is_empty() || c.nodes.is_empty() {
        return Err("--threads, --engines and --nodes must not be empty or zero".into());
    }
    for e in &c.engines {
        engine_runner(e)?;
    }
    if let Some(n) = c.nodes.iter().find(|n| !(1..=9).contains(*n)) {
        return Err(format!("--nodes must be 1..=9, got {n}"));
    }
    c.base.check_workload()
}

fn flag_value(args: &[String], name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

fn number(flag: &str, v: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a number"))
}

fn numbers(flag: &str, v: &str) -> Result<Vec<usize>, String> {
    list(v)
        .iter()
        .map(|n| number(flag, n).map(|n| n as usize))
        .collect()
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `90s`, `10m`, `2h` (a bare number is seconds).
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{v:?} is not a duration like 90s, 10m or 2h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{v:?}: unit must be s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

/// One engine × node count of the campaign, and its progress.
struct Cell {
    spec: CellSpec,
    opts: SimOptions,
    /// Seeds `[first_seed, next_seed)` were handed out.
    first_seed: u64,
    next_seed: u64,
    /// No seed at or past this is handed out (`--seeds`).
    limit: u64,
    /// Everything below this completed and is in `unflushed` or the ledger.
    done_below: u64,
    /// Completed above `done_below`, waiting for the seeds before them.
    done_early: BTreeMap<u64, RunResult>,
    /// Totals of `[flushed_below, done_below)`, not yet in the ledger.
    unflushed: SimSummary,
    flushed_below: u64,
    /// Totals of this campaign, for progress lines.
    this_run: SimSummary,
}

impl Cell {
    /// Takes a completed seed; folds it and every seed it unblocks into the totals.
    fn complete(&mut self, r: RunResult) {
        self.this_run.record(&r);
        self.this_run.wall += r.wall;
        self.done_early.insert(r.seed, r);
        while let Some(r) = self.done_early.remove(&self.done_below) {
            self.unflushed.record(&r);
            self.unflushed.wall += r.wall;
            self.done_below += 1;
        }
    }
}

/// What a worker asks for and gets.
struct Dispatch {
    cells: Vec<(u64, u64)>,
    turn: usize,
    deadline: Option<Instant>,
    stopped: bool,
}

impl Dispatch {
    /// The next (cell, seed), round-robin over cells that still have seeds, or None.
    fn next(&mut self) -> Option<(usize, u64)> {
        if self.stopped || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        for _ in 0..self.cells.len() {
            let i = self.turn % self.cells.len();
            self.turn += 1;
            let (next, limit) = &mut self.cells[i];
            if *next < *limit {
                *next += 1;
                return Some((i, *next - 1));
            }
        }
        None
    }
}

/// `synod sim --campaign ...`: returns the exit status.
pub fn run_cli(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return 0;
    }
    let c = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("synod sim --campaign: {e}\n{USAGE}");
            return 2;
        }
    };
    match run(&c) {
        Ok(failed) => i32::from(failed),
        Err(e) => {
            eprintln!("synod sim --campaign: {e}");
            2
        }
    }
}

/// Runs the campaign; true if some seed failed.
pub fn run(c: &CampaignArgs) -> Result<bool, String> {
    let commit = ledger_commit(c, synod_buildinfo::COMMIT)?;
    let entries = ledger::read(&c.ledger)?;
    let mut cells = make_cells(c, &entries);
    announce(c, &commit, &cells);
    let start = Instant::now();
    let dispatch = Arc::new(Mutex::new(Dispatch {
        cells: cells.iter().map(|x| (x.next_seed, x.limit)).collect(),
        turn: 0,
        deadline: c.duration.map(|d| start + d),
        stopped: false,
    }));
    let (tx, rx) = mpsc::channel();
    let runners: Vec<_> = cells.iter().map(|x| x.opts.clone()).collect();
    let workers: Vec<_> = (0..c.threads)
        .map(|_| spawn_worker(dispatch.clone(), runners.clone(), tx.clone()))
        .collect();
    drop(tx);
    let failed = collect(c, &commit, &mut cells, &rx, &dispatch, start)?;
    for w in workers {
        w.join()
            .map_err(|_| "a campaign worker panicked".to_string())?;
    }
    flush(c, &commit, &mut cells)?;
    print_totals(c, &cells, start.elapsed())?;
    Ok(failed)
}

fn make_cells(c: &CampaignArgs, entries: &[LedgerEntry]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for engine in &c.engines {
        for &nodes in &c.nodes {
            let opts = SimOptions {
                engine: engine.clone(),
                nodes,
                ..c.base.clone()
            };
            let spec = cell_spec(c.profile, &opts);
            let first = ledger::next_seed(entries, &spec);
            let limit = c
                .seeds_per_cell
                .map_or(u64::MAX, |n| first.saturating_add(n));
            cells.push(Cell {
                spec,
                opts,
                first_seed: first,
                next_seed: first,
                limit,
                done_below: first,
                done_early: BTreeMap::new(),
                unflushed: SimSummary::default(),
                flushed_below: first,
                this_run: SimSummary::default(),
            });
        }
    }
    cells
}

fn cell_spec(profile: &str, o: &SimOptions) -> CellSpec {
    CellSpec {
        profile: profile.to_string(),
        engine: o.engine.clone(),
        nodes: o.nodes,
        faults: fault_names(o.faults),
        clients: o.clients,
        ops_per_client: o.ops_per_client,
        keys: o.keys,
        sim_seconds: o.sim_seconds,
        snapshot_entries: o.snapshot_entries,
        planted_bug: o.planted_bug.map(|b| b.name().to_string()),
    }
}

/// The commit the ledger names: the one this binary was built from (the code that runs), with
/// `+dirty` when the tree has uncommitted changes. A binary built from another commit than the
/// tree's (an old build, a switched branch) or a dirty tree is refused unless `--allow-dirty`.
fn ledger_commit(c: &CampaignArgs, built: &str) -> Result<String, String> {
    let (head, dirty) = ledger::git_commit(&c.ledger)?;
    let stale = built != "unknown" && built != head;
    if !c.allow_dirty {
        if stale {
            return Err(format!(
                "this binary was built from {built} but the tree is at {head}: build it again so the ledger names the code that ran, or pass --allow-dirty"
            ));
        }
        if dirty {
            return Err(format!(
                "the tree at {head} has uncommitted changes: commit them so the ledger names the code that ran, or pass --allow-dirty"
            ));
        }
    }
    let commit = if built == "unknown" {
        head
    } else {
        built.to_string()
    };
    Ok(if dirty || stale {
        commit + "+dirty"
    } else {
        commit
    })
}

fn announce(c: &CampaignArgs, commit: &str, cells: &[Cell]) {
    let o = &c.base;
    println!(
        "campaign profile {} at {commit}: {} clients x {} ops on {} keys over {} s, faults {}, {} threads, ledger {}",
        c.profile,
        o.clients,
        o.ops_per_client,
        o.keys,
        o.sim_seconds,
        fault_names(o.faults),
        c.threads,
        c.ledger.display()
    );
    for x in cells {
        println!(
            "  {} {} nodes: from seed {}",
            x.spec.engine, x.spec.nodes, x.first_seed
        );
    }
}

fn spawn_worker(
    dispatch: Arc<Mutex<Dispatch>>,
    cells: Vec<SimOptions>,
    tx: mpsc::Sender<(usize, RunResult)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        loop {
            let task = match dispatch.lock() {
                Ok(mut d) => d.next(),
                Err(_) => None,
            };
            let Some((i, seed)) = task else { return };
            let opts = &cells[i];
            let Ok(runner) = engine_runner(&opts.engine) else {
                return;
            };
            if tx.send((i, runner(&opts.run_config(seed)))).is_err() {
                return;
            }
        }
    })
}

/// Receives results until every worker is done: failures at once, progress and ledger
/// flushes on their intervals. True if some seed failed.
fn collect(
    c: &CampaignArgs,
    commit: &str,
    cells: &mut [Cell],
    rx: &mpsc::Receiver<(usize, RunResult)>,
    dispatch: &Mutex<Dispatch>,
    start: Instant,
) -> Result<bool, String> {
    let mut failed = false;
    let (mut last_progress, mut last_flush) = (Instant::now(), Instant::now());
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok((i, r)) => {
                if !r.passed() {
                    failed = true;
                    on_failure(c, &r, dispatch)?;
                }
                cells[i].complete(r);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(failed),
        }
        if last_progress.elapsed() >= c.progress {
            last_progress = Instant::now();
            print_progress(cells, start.elapsed());
        }
        if last_flush.elapsed() >= c.flush {
            last_flush = Instant::now();
            flush(c, commit, cells)?;
        }
    }
}

fn on_failure(c: &CampaignArgs, r: &RunResult, dispatch: &Mutex<Dispatch>) -> Result<(), String> {
    println!("{}", r.report());
    if let (Some(dir), Some(h)) = (&c.base.history_dir, &r.history) {
        let path = dir.join(format!("{}-{}n-seed{}.json", r.engine, r.nodes, r.seed));
        std::fs::write(&path, h.to_json())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if c.base.stop_on_failure
        && let Ok(mut d) = dispatch.lock()
    {
        d.stopped = true;
    }
    Ok(())
}

fn print_progress(cells: &[Cell], elapsed: Duration) {
    let hours = elapsed.as_secs_f64().max(1e-9) / 3600.0;
    let mut line = format!("[{:.0} min]", elapsed.as_secs_f64() / 60.0);
    for x in cells {
        let s = &x.this_run;
        line += &format!(
            " | {} {}n {} seeds{} {:.0}/h",
            x.spec.engine,
            x.spec.nodes,
            s.seeds_run,
            if s.failed_seeds.is_empty() {
                String::new()
            } else {
                format!(" ({} FAILED)", s.failed_seeds.len())
            },
            s.seeds_run as f64 / hours
        );
    }
    println!("{line}");
}

/// Appends one entry per cell for the contiguous seeds completed since the last flush.
fn flush(c: &CampaignArgs, commit: &str, cells: &mut [Cell]) -> Result<(), String> {
    let mut entries = ledger::read(&c.ledger)?;
    let mut new = Vec::new();
    for x in cells.iter_mut().filter(|x| x.done_below > x.flushed_below) {
        let e = entry(c, commit, x, &entries);
        entries.push(e.clone());
        new.push(e);
        x.flushed_below = x.done_below;
        x.unflushed = SimSummary::default();
    }
    if new.is_empty() {
        return Ok(());
    }
    ledger::append(&c.ledger, &new)
}

fn entry(c: &CampaignArgs, commit: &str, x: &Cell, entries: &[LedgerEntry]) -> LedgerEntry {
    let s = &x.unflushed;
    let (seeds_before, failures_before) = ledger::totals(entries, &x.spec);
    LedgerEntry {
        date: ledger::now_utc(),
        commit: commit.to_string(),
        cell: x.spec.clone(),
        first_seed: x.flushed_below,
        end_seed: x.done_below,
        seeds: s.seeds_run,
        failures: s.failed_seeds.len() as u64,
        failed_seeds: s.failed_seeds.clone(),
        agreement_checked: s.agreement_checked_seeds,
        ops_ok: s.ops_ok,
        simulated_s: s.virtual_time_us as f64 / 1e6,
        seed_wall_s: s.wall.as_secs_f64(),
        threads: c.threads,
        load_avg_1m: ledger::load_avg_1m(),
        cumulative_seeds: seeds_before + s.seeds_run,
        cumulative_failures: failures_before + s.failed_seeds.len() as u64,
    }
}

/// This campaign per cell and per engine, and each cell's totals over the whole ledger.
fn print_totals(c: &CampaignArgs, cells: &[Cell], elapsed: Duration) -> Result<(), String> {
    let hours = elapsed.as_secs_f64().max(1e-9) / 3600.0;
    let entries = ledger::read(&c.ledger)?;
    println!(
        "campaign done after {:.1} min (load average now {:?})",
        elapsed.as_secs_f64() / 60.0,
        ledger::load_avg_1m()
    );
    for x in cells {
        let s = &x.this_run;
        let (total, total_failed) = ledger::totals(&entries, &x.spec);
        println!(
            "  {} {} nodes: seeds {}..{} | {} | {:.0} seeds/h, {:.0} ms per seed on one thread | ledger total {} seeds, {} failed",
            x.spec.engine,
            x.spec.nodes,
            x.first_seed,
            x.done_below,
            s.totals(),
            s.seeds_run as f64 / hours,
            s.wall.as_secs_f64() * 1e3 / s.seeds_run.max(1) as f64,
            total,
            total_failed
        );
    }
    for engine in &c.engines {
        let run: u64 = cells
            .iter()
            .filter(|x| &x.spec.engine == engine)
            .map(|x| x.this_run.seeds_run)
            .sum();
        println!(
            "  {engine}: {run} seeds in this campaign, {:.0} seeds/h",
            run as f64 / hours
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn durations_and_profiles_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10 minutes").is_err());
        let c = parse(&args("--campaign --for 10m --nodes 3 --keys 40")).expect("valid");
        assert_eq!((c.profile, c.base.keys, c.base.clients), ("long", 40, 10));
        assert_eq!(c.nodes, vec![3]);
        assert_eq!(c.engines, CAMPAIGN_ENGINES.map(String::from).to_vec());
        let c = parse(&args("--campaign --profile short --seeds 5")).expect("valid");
        assert_eq!((c.base.ops_per_client, c.seeds_per_cell), (40, Some(5)));
        assert!(
            parse(&args("--campaign")).is_err(),
            "needs --for or --seeds"
        );
        assert!(parse(&args("--campaign --seeds 5 --engines raft")).is_err());
    }

    #[test]
    fn the_ledger_names_the_binarys_commit_and_refuses_another_trees() {
        let strict = parse(&args("--campaign --seeds 1")).expect("valid");
        let lax = parse(&args("--campaign --seeds 1 --allow-dirty")).expect("valid");
        let Ok((head, dirty)) = ledger::git_commit(&strict.ledger) else {
            return; // not run from a git checkout: nothing to compare with
        };
        let other = "0".repeat(40);
        let refused = ledger_commit(&strict, &other).expect_err("another commit's binary");
        assert!(refused.contains("built from"), "{refused}");
        assert_eq!(
            ledger_commit(&lax, &other),
            Ok(format!("{other}+dirty")),
            "named by the binary's commit, marked"
        );
        let suffix = if dirty { "+dirty" } else { "" };
        assert_eq!(ledger_commit(&lax, &head), Ok(format!("{head}{suffix}")));
        assert_eq!(
            ledger_commit(&lax, "unknown"),
            Ok(format!("{head}{suffix}"))
        );
    }

    #[test]
    fn dispatch_is_round_robin_and_stops_at_the_limit() {
        let mut d = Dispatch {
            cells: vec![(10, 12), (0, 1)],
            turn: 0,
            deadline: None,
            stopped: false,
        };
        let got: Vec<_> = std::iter::from_fn(|| d.next()).collect();
        assert_eq!(got, vec![(0, 10), (1, 0), (0, 11)]);
    }
}
