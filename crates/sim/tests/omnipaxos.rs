//! The OmniPaxos engine under the simulator: many seeds with every fault on 3 and 5 nodes, the
//! paper's partial-connectivity scenarios, and every OmniPaxos planted bug caught within a
//! bounded number of seeds. Seed counts scale with `SYNOD_SIM_SEEDS` (see `synod_sim::sweep`).

use synod_core::PlantedBug;
use synod_sim::engines::OmniPaxosEngine;
use synod_sim::sweep::{assert_all_pass, assert_caught, halves, seed_count};
use synod_sim::{FaultSet, RunConfig, RunResult, Scenario, run_seed};

/// Seeds for the all-faults suites, per node count, unless `SYNOD_SIM_SEEDS` says otherwise.
const SEEDS_DEFAULT: u64 = 500;

fn all_faults(nodes: usize, seeds: std::ops::Range<u64>) {
    assert_all_pass::<OmniPaxosEngine>(&RunConfig::new(0, nodes), seeds);
}

// Split in halves so the test harness runs them on both cores.
#[test]
fn all_faults_3_nodes_first_half() {
    let [first, _] = halves(0, seed_count(SEEDS_DEFAULT));
    all_faults(3, first);
}
#[test]
fn all_faults_3_nodes_second_half() {
    let [_, second] = halves(0, seed_count(SEEDS_DEFAULT));
    all_faults(3, second);
}
#[test]
fn all_faults_5_nodes_first_half() {
    let [first, _] = halves(10_000, seed_count(SEEDS_DEFAULT));
    all_faults(5, first);
}
#[test]
fn all_faults_5_nodes_second_half() {
    let [_, second] = halves(10_000, seed_count(SEEDS_DEFAULT));
    all_faults(5, second);
}

#[test]
fn same_seed_replays_exactly() {
    let a = run_seed::<OmniPaxosEngine>(&RunConfig::new(9, 5));
    let b = run_seed::<OmniPaxosEngine>(&RunConfig::new(9, 5));
    assert_eq!((a.trace_hash, a.events), (b.trace_hash, b.events));
    assert_ne!(
        a.trace_hash,
        run_seed::<OmniPaxosEngine>(&RunConfig::new(10, 5)).trace_hash
    );
    // The replicas converged, and etcd's HashKV — what members compare in the corruption
    // check — was computed on each and found equal.
    assert!(a.failures.is_empty(), "{:?}", a.failures);
    assert!(a.hash_kv_checked);
}

/// Election timeouts of downtime we accept under a partial-connectivity scenario. The paper
/// claims recovery within 4; our measure also counts client timeouts and retries at nodes
/// that cannot serve, so it allows some slack.
const SCENARIO_DOWNTIME_MAX_ETS: f64 = 10.0;

/// A run under `scenario`'s topology alone, with clients that never stop.
fn scenario_config(scenario: Scenario, nodes: usize, bug: Option<PlantedBug>) -> RunConfig {
    let mut cfg = RunConfig::new(0, nodes);
    cfg.faults = FaultSet::NONE;
    cfg.scenario = Some(scenario);
    cfg.clients = 4;
    cfg.ops_per_client = usize::MAX;
    cfg.fault_window_us = 30 * cfg.election_timeout_us();
    cfg.scenario_downtime_max_ets = Some(SCENARIO_DOWNTIME_MAX_ETS);
    cfg.planted_bug = bug;
    cfg
}

#[test]
fn partial_connectivity_scenarios_recover_within_a_few_election_timeouts() {
    for (scenario, nodes) in [
        (Scenario::QuorumLoss, 5),
        (Scenario::ConstrainedElection, 5),
        (Scenario::Chained, 3),
    ] {
        for seed in 1..=5 {
            let cfg = RunConfig {
                seed,
                ..scenario_config(scenario, nodes, None)
            };
            let r = run_seed::<OmniPaxosEngine>(&cfg);
            println!(
                "{} seed {seed}: downtime {:.1} ETs",
                scenario.name(),
                r.downtime_us as f64 / 100_000.0
            );
            assert!(r.passed(), "{}", r.report());
        }
    }
}

/// Seeds a planted bug may take to be caught.
const PLANT_SEEDS_MAX: u64 = 300;

fn caught(bug: PlantedBug, faults: &str, nodes: usize) -> RunResult {
    let mut cfg = RunConfig::new(0, nodes);
    cfg.faults = FaultSet::parse(faults).expect("a valid fault list");
    cfg.planted_bug = Some(bug);
    assert_caught::<OmniPaxosEngine>(&cfg, 0..PLANT_SEEDS_MAX)
}

#[test]
fn planted_ack_before_majority_is_caught() {
    caught(PlantedBug::AckBeforeMajority, "crash,partition", 3);
}

#[test]
fn planted_stale_linearizable_read_is_caught() {
    let r = caught(PlantedBug::StaleLinearizableRead, "partition", 3);
    assert!(
        r.failures.iter().any(|f| f.contains("NOT linearizable")),
        "{}",
        r.report()
    );
}

#[test]
fn planted_forget_accepted_ballot_is_caught() {
    caught(PlantedBug::ForgetAcceptedBallot, "crash,partition,loss", 3);
}

#[test]
fn planted_ignore_quorum_connected_is_caught_under_quorum_loss() {
    // A liveness bug: only visible while the partial partition lasts.
    let cfg = scenario_config(
        Scenario::QuorumLoss,
        5,
        Some(PlantedBug::IgnoreQuorumConnected),
    );
    assert_caught::<OmniPaxosEngine>(&cfg, 1..21);
}

#[test]
fn planted_ack_before_fsync_is_caught() {
    caught(
        PlantedBug::AckBeforeFsync,
        "crash,power-loss,torn-writes",
        3,
    );
}
