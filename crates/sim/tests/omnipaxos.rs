//! The OmniPaxos engine under the simulator: many seeds with every fault on 3 and 5 nodes, the
//! paper's partial-connectivity scenarios, and every OmniPaxos planted bug caught within a
//! bounded number of seeds. Seed counts scale with `SYNOD_SIM_SEEDS`.

use synod_core::PlantedBug;
use synod_omnipaxos::OmniPaxos;
use synod_sim::{FaultSet, RunConfig, RunResult, Scenario, SimOptions, run_many, run_seed};

/// Seeds for the all-faults suites, per node count (default 500).
fn seeds() -> u64 {
    std::env::var("SYNOD_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(500, |n| n.max(1))
}

fn all_faults(nodes: usize, range: std::ops::Range<u64>) {
    let opts = SimOptions {
        engine: "omnipaxos".into(),
        nodes,
        seeds: range,
        ..Default::default()
    };
    let sum = run_many(&opts).expect("omnipaxos engine is wired");
    println!("omnipaxos {nodes} nodes: {}", sum.totals());
    assert!(
        sum.passed(),
        "{}\nfailed seeds {:?}\n{}",
        sum.totals(),
        sum.failed_seeds,
        sum.reports.first().map_or("", |s| s.as_str())
    );
    assert!(sum.ops_ok > 0);
}

// Split in halves so the test harness runs them on both cores.
#[test]
fn all_faults_3_nodes_first_half() {
    all_faults(3, 0..seeds() / 2);
}
#[test]
fn all_faults_3_nodes_second_half() {
    all_faults(3, seeds() / 2..seeds());
}
#[test]
fn all_faults_5_nodes_first_half() {
    all_faults(5, 10_000..10_000 + seeds() / 2);
}
#[test]
fn all_faults_5_nodes_second_half() {
    all_faults(5, 10_000 + seeds() / 2..10_000 + seeds());
}

#[test]
fn same_seed_replays_exactly() {
    let a = run_seed::<OmniPaxos>(&RunConfig::new(9, 5));
    let b = run_seed::<OmniPaxos>(&RunConfig::new(9, 5));
    assert_eq!((a.trace_hash, a.events), (b.trace_hash, b.events));
    assert_ne!(
        a.trace_hash,
        run_seed::<OmniPaxos>(&RunConfig::new(10, 5)).trace_hash
    );
}

/// Election timeouts of downtime we accept under a partial-connectivity scenario. The paper
/// claims recovery within 4; our measure also counts client timeouts and retries at nodes
/// that cannot serve, so it allows some slack.
const SCENARIO_DOWNTIME_MAX_ETS: f64 = 10.0;

fn scenario_run(scenario: Scenario, nodes: usize, seed: u64, bug: Option<PlantedBug>) -> RunResult {
    let mut cfg = RunConfig::new(seed, nodes);
    cfg.faults = FaultSet::NONE;
    cfg.scenario = Some(scenario);
    cfg.clients = 4;
    cfg.ops_per_client = usize::MAX;
    cfg.fault_window_us = 30 * cfg.election_timeout_us();
    cfg.scenario_downtime_max_ets = Some(SCENARIO_DOWNTIME_MAX_ETS);
    cfg.planted_bug = bug;
    run_seed::<OmniPaxos>(&cfg)
}

#[test]
fn partial_connectivity_scenarios_recover_within_a_few_election_timeouts() {
    for (scenario, nodes) in [
        (Scenario::QuorumLoss, 5),
        (Scenario::ConstrainedElection, 5),
        (Scenario::Chained, 3),
    ] {
        for seed in 1..=5 {
            let r = scenario_run(scenario, nodes, seed, None);
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
    let faults = FaultSet::parse(faults).unwrap();
    (0..PLANT_SEEDS_MAX)
        .find_map(|seed| {
            let mut cfg = RunConfig::new(seed, nodes);
            cfg.faults = faults;
            cfg.planted_bug = Some(bug);
            let r = run_seed::<OmniPaxos>(&cfg);
            (!r.passed()).then_some(r)
        })
        .unwrap_or_else(|| panic!("{} not caught in {PLANT_SEEDS_MAX} seeds", bug.name()))
}

#[test]
fn planted_ack_before_majority_is_caught() {
    let r = caught(PlantedBug::AckBeforeMajority, "crash,partition", 3);
    println!(
        "ack-before-majority caught at seed {}: {:?}",
        r.seed, r.failures
    );
}

#[test]
fn planted_stale_linearizable_read_is_caught() {
    let r = caught(PlantedBug::StaleLinearizableRead, "partition", 3);
    println!(
        "stale-linearizable-read caught at seed {}: {:?}",
        r.seed, r.failures
    );
    assert!(
        r.failures.iter().any(|f| f.contains("NOT linearizable")),
        "{}",
        r.report()
    );
}

#[test]
fn planted_forget_accepted_ballot_is_caught() {
    let r = caught(PlantedBug::ForgetAcceptedBallot, "crash,partition,loss", 3);
    println!(
        "forget-accepted-ballot caught at seed {}: {:?}",
        r.seed, r.failures
    );
}

#[test]
fn planted_ignore_quorum_connected_is_caught_under_quorum_loss() {
    // A liveness bug: only visible while the partial partition lasts.
    let r = (1..=20)
        .map(|seed| {
            scenario_run(
                Scenario::QuorumLoss,
                5,
                seed,
                Some(PlantedBug::IgnoreQuorumConnected),
            )
        })
        .find(|r| !r.passed())
        .expect("ignore-quorum-connected not caught in 20 quorum-loss seeds");
    println!(
        "ignore-quorum-connected caught at seed {}: {:?}",
        r.seed, r.failures
    );
}

#[test]
fn planted_ack_before_fsync_is_caught() {
    let r = caught(
        PlantedBug::AckBeforeFsync,
        "crash,power-loss,torn-writes",
        3,
    );
    println!(
        "ack-before-fsync caught at seed {}: {:?}",
        r.seed, r.failures
    );
}
