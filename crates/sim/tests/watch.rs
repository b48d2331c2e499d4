//! Watches under the simulator (issue 15, part 6): watchers open on every node of OmniPaxos
//! and VR runs with every fault, fed only from each node's own applied events, resumed on
//! another node when theirs crashes, cancelled when their start is compacted — and the watch
//! checker (`synod_checker::watch`) finds nothing wrong. The workload adds compactions, reads at
//! past revisions, ranges and multi-key transactions (`synod_sim::watch_ops`). Each planted
//! watch bug is caught within a bounded number of seeds, by the watch checks.
//!
//! Seed counts scale with `SYNOD_SIM_SEEDS` (see `synod_sim::sweep`); the defaults give each log
//! engine 1,000 seeds with watchers (500 on 3 nodes, 500 on 5), plus 100 with checkpoints every
//! few entries so that watchers also catch up across snapshot installs.

use synod_core::{Engine, PlantedBug};
use synod_sim::engines::{OmniPaxosEngine, VrEngine};
use synod_sim::sweep::{assert_all_pass, assert_caught, halves, seed_count};
use synod_sim::toy::Toy;
use synod_sim::{FaultSet, RunConfig, RunResult};

/// Seeds per engine and node count for the all-faults suites.
const SEEDS_DEFAULT: u64 = 500;
/// Seeds per engine for the suite with snapshots.
const SNAPSHOT_SEEDS_DEFAULT: u64 = 100;
/// Watchers per node.
const WATCHERS: usize = 3;
/// A planted watch bug must be caught within this many seeds.
const PLANT_SEEDS_MAX: u64 = 1_000;

fn template(nodes: usize) -> RunConfig {
    let mut cfg = RunConfig::new(0, nodes);
    cfg.watchers = WATCHERS;
    cfg
}

/// Every seed passes, and the watch checker had something to check.
fn all_pass<E: Engine>(cfg: &RunConfig, seeds: std::ops::Range<u64>) {
    let sum = assert_all_pass::<E>(cfg, seeds);
    if sum.seeds_run == 0 {
        return; // Skipped (SYNOD_SIM_SEED is outside).
    }
    let w = &sum.watch;
    assert_eq!(w.seeds, sum.seeds_run, "every seed ran the watch checker");
    assert!(w.deliveries > 0 && w.reads > 0 && w.writes > 0, "{w:?}");
}

// Halves, so the test harness keeps both cores busy.
#[test]
fn omnipaxos_3_nodes_first_half() {
    let [first, _] = halves(0, seed_count(SEEDS_DEFAULT));
    all_pass::<OmniPaxosEngine>(&template(3), first);
}
#[test]
fn omnipaxos_3_nodes_second_half() {
    let [_, second] = halves(0, seed_count(SEEDS_DEFAULT));
    all_pass::<OmniPaxosEngine>(&template(3), second);
}
#[test]
fn omnipaxos_5_nodes() {
    all_pass::<OmniPaxosEngine>(&template(5), 10_000..10_000 + seed_count(SEEDS_DEFAULT));
}
#[test]
fn vr_3_nodes() {
    all_pass::<VrEngine>(&template(3), 0..seed_count(SEEDS_DEFAULT));
}
#[test]
fn vr_5_nodes() {
    all_pass::<VrEngine>(&template(5), 10_000..10_000 + seed_count(SEEDS_DEFAULT));
}

/// Checkpoints every 7 entries: lagging followers get snapshots, so watchers catch up across
/// a revision jump through the new history (or are cancelled when it is compacted).
#[test]
fn with_snapshots_both_engines() {
    let mut cfg = template(3);
    cfg.snapshot_entries = 7;
    let seeds = 20_000..20_000 + seed_count(SNAPSHOT_SEEDS_DEFAULT);
    all_pass::<OmniPaxosEngine>(&cfg, seeds.clone());
    cfg.nodes = 5;
    all_pass::<VrEngine>(&cfg, seeds);
}

/// The simulator's own sequencer engine keeps revisions too.
#[test]
fn toy_engine() {
    all_pass::<Toy>(&template(3), 0..seed_count(SEEDS_DEFAULT) / 5);
}

/// The first seed that catches `bug` with watchers on 3 nodes and every fault, which must be
/// a watch check, within [`PLANT_SEEDS_MAX`] seeds.
fn caught<E: Engine>(bug: PlantedBug) -> RunResult {
    let mut cfg = template(3);
    cfg.faults = FaultSet::ALL;
    cfg.planted_bug = Some(bug);
    let r = assert_caught::<E>(&cfg, 0..PLANT_SEEDS_MAX);
    assert!(
        r.failures.iter().any(|f| f.starts_with("watch")),
        "{} caught, but not by a watch check:\n{}",
        bug.name(),
        r.report()
    );
    r
}

#[test]
fn planted_watch_undecided_event_is_caught() {
    caught::<OmniPaxosEngine>(PlantedBug::WatchUndecidedEvent);
    caught::<VrEngine>(PlantedBug::WatchUndecidedEvent);
}

#[test]
fn planted_watch_resume_skips_revision_is_caught() {
    caught::<OmniPaxosEngine>(PlantedBug::WatchResumeSkipsRevision);
    caught::<VrEngine>(PlantedBug::WatchResumeSkipsRevision);
}

#[test]
fn planted_compaction_drops_watched_event_is_caught() {
    caught::<OmniPaxosEngine>(PlantedBug::CompactionDropsWatchedEvent);
    caught::<VrEngine>(PlantedBug::CompactionDropsWatchedEvent);
}

/// Watchers keep a seed a pure function of its configuration.
#[test]
fn same_seed_replays_exactly_with_watchers() {
    let run = |seed| {
        synod_sim::run_seed::<VrEngine>(&RunConfig {
            seed,
            ..template(5)
        })
    };
    let (a, b) = (run(9), run(9));
    assert_eq!((a.trace_hash, a.events), (b.trace_hash, b.events));
    let (wa, wb) = (a.watch.expect("watched"), b.watch.expect("watched"));
    assert_eq!((wa.deliveries, wa.resumes), (wb.deliveries, wb.resumes));
    assert_ne!(a.trace_hash, run(10).trace_hash);
}

/// Without watchers a run is what it was before they existed: the watch checker stays off.
#[test]
fn runs_without_watchers_do_not_check_watches() {
    let r = synod_sim::run_seed::<OmniPaxosEngine>(&RunConfig::new(3, 3));
    assert!(r.passed(), "{}", r.report());
    assert!(r.watch.is_none());
}

#[test]
fn the_cli_runs_watchers_and_refuses_them_without_revisions() {
    let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
    assert_eq!(
        synod_sim::run_cli(&args("--engine vr --nodes 3 --seeds 0..3 --watchers 2")),
        0
    );
    assert_eq!(
        synod_sim::run_cli(&args(
            "--engine omnipaxos --seeds 0..50 --watchers 2 --planted-bug watch-resume-skips-revision --stop-on-failure"
        )),
        1
    );
    assert_eq!(
        synod_sim::run_cli(&args("--engine caspaxos --seeds 0..1 --watchers 1")),
        2
    );
}
