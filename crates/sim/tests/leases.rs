//! Leases under the simulator: lease clients on OmniPaxos and VR runs with every fault grant
//! short leases, attach keys, keep some alive through crashes, partitions and leader changes,
//! revoke or abandon them, and read their keys; the lease checker (`synod_checker::leases`)
//! finds no key gone before a keep-alive's invoke time + TTL, and every abandoned lease gone
//! at the end. The planted `lease-expires-without-extension` bug is caught within a bounded
//! number of seeds, by the lease check.
//!
//! Seed counts scale with `SYNOD_SIM_SEEDS` (see `synod_sim::sweep`); the defaults give each log
//! engine 300 seeds on 3 nodes and 300 on 5. The offline runs (docs/leases.md) take thousands.

use synod_core::{Engine, PlantedBug};
use synod_sim::engines::{CasPaxosEngine, OmniPaxosEngine, VrEngine};
use synod_sim::sweep::{
    assert_all_pass, assert_caught, assert_caught_by, assert_leases_judged, halves, seed_count,
};
use synod_sim::{FaultSet, RunConfig, RunResult};

/// Seeds per engine and node count.
const SEEDS_DEFAULT: u64 = 300;
/// Lease clients per run.
const LEASE_CLIENTS: usize = 4;
/// The planted lease bug must be caught within this many seeds.
const PLANT_SEEDS_MAX: u64 = 1_000;

fn template(nodes: usize) -> RunConfig {
    let mut cfg = RunConfig::new(0, nodes);
    cfg.leases = LEASE_CLIENTS;
    cfg
}

/// Every seed passes, and the lease checker had something to judge in every one.
fn all_pass<E: Engine>(cfg: &RunConfig, seeds: std::ops::Range<u64>) {
    assert_leases_judged(&assert_all_pass::<E>(cfg, seeds));
}

// Five sweeps of about equal cost, so the test harness keeps both cores busy.
#[test]
fn omnipaxos_3_nodes() {
    all_pass::<OmniPaxosEngine>(&template(3), 0..seed_count(SEEDS_DEFAULT));
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
fn vr_5_nodes_first_half() {
    let [first, _] = halves(10_000, seed_count(SEEDS_DEFAULT));
    all_pass::<VrEngine>(&template(5), first);
}
#[test]
fn vr_5_nodes_second_half() {
    let [_, second] = halves(10_000, seed_count(SEEDS_DEFAULT));
    all_pass::<VrEngine>(&template(5), second);
}

/// Leases and watchers together: lease expiries are revisions the watchers must see whole,
/// and checkpoints every few entries make followers install snapshots (which restart TTLs).
#[test]
fn with_watchers_and_snapshots() {
    let mut cfg = template(3);
    cfg.watchers = 2;
    cfg.snapshot_entries = 7;
    let seeds = 20_000..20_000 + seed_count(SEEDS_DEFAULT) / 6;
    all_pass::<OmniPaxosEngine>(&cfg, seeds.clone());
    cfg.nodes = 5;
    all_pass::<VrEngine>(&cfg, seeds);
}

/// The first seed that catches the planted bug, which must be an early-expiry verdict of the
/// lease checker, within [`PLANT_SEEDS_MAX`] seeds (the search stops at the first failure).
fn caught<E: Engine>() -> RunResult {
    let mut cfg = template(3);
    cfg.faults = FaultSet::ALL;
    cfg.planted_bug = Some(PlantedBug::LeaseExpiresWithoutExtension);
    let r = assert_caught::<E>(&cfg, 0..PLANT_SEEDS_MAX);
    assert_caught_by(&r, "lease: early expiry");
    r
}

#[test]
fn planted_lease_expires_without_extension_is_caught() {
    caught::<OmniPaxosEngine>();
    caught::<VrEngine>();
}

/// The two seeds that found the lessor's deadline one tick early (it counted from the last tick
/// before the apply, so a grant applied late in a tick interval expired up to a tick before its
/// invoke time + TTL): fault-free runs with 8 lease clients, where every expiry comes from a
/// stable leader's own clock.
#[test]
fn deadline_a_tick_early_regression_seeds() {
    let mut cfg = template(3);
    cfg.leases = 8;
    cfg.faults = FaultSet::NONE;
    assert_all_pass::<VrEngine>(&cfg, 1053..1054);
    assert_all_pass::<OmniPaxosEngine>(&cfg, 1678..1679);
}

/// Lease clients keep a seed a pure function of its configuration.
#[test]
fn same_seed_replays_exactly_with_leases() {
    let run = |seed| {
        synod_sim::run_seed::<OmniPaxosEngine>(&RunConfig {
            seed,
            ..template(5)
        })
    };
    let (a, b) = (run(9), run(9));
    assert_eq!((a.trace_hash, a.events), (b.trace_hash, b.events));
    let (la, lb) = (a.leases.expect("leases"), b.leases.expect("leases"));
    assert_eq!((la.leases, la.renewals), (lb.leases, lb.renewals));
    assert_ne!(a.trace_hash, run(10).trace_hash);
}

/// Without lease clients the lease checker stays off, and an engine without leases (CASPaxos)
/// ignores them.
#[test]
fn runs_without_lease_clients_do_not_check_leases() {
    let r = synod_sim::run_seed::<OmniPaxosEngine>(&RunConfig::new(3, 3));
    assert!(r.passed(), "{}", r.report());
    assert!(r.leases.is_none());
    let r = synod_sim::run_seed::<CasPaxosEngine>(&template(3));
    assert!(r.passed(), "{}", r.report());
    assert!(r.leases.is_none());
}

#[test]
fn the_cli_runs_lease_clients_and_refuses_them_without_leases() {
    let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
    assert_eq!(
        synod_sim::run_cli(&args("--engine vr --nodes 3 --seeds 0..3 --leases 2")),
        0
    );
    assert_eq!(
        synod_sim::run_cli(&args(
            "--engine omnipaxos --seeds 0..50 --leases 4 --planted-bug lease-expires-without-extension --stop-on-failure"
        )),
        1
    );
    assert_eq!(
        synod_sim::run_cli(&args("--engine caspaxos --seeds 0..1 --leases 1")),
        2
    );
    assert_eq!(
        synod_sim::run_cli(&args("--engine vr --seeds 0..1 --leases 1000")),
        2
    );
}
