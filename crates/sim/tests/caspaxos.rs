//! The CASPaxos engine under the simulator: the same all-faults suite as OmniPaxos (crashes,
//! partitions, one-way links, partial connectivity, loss, duplication, power loss, torn
//! writes) on 3 and 5 nodes, and both CASPaxos planted bugs caught within a bounded number of
//! seeds. CASPaxos has no replicated log, so the simulator's agreement-by-digest check does not
//! apply (the results say so); linearizability and liveness are checked in full.
//!
//! Seed counts scale with `SYNOD_SIM_SEEDS` like the OmniPaxos suite (default 500 per node
//! count; the suite is budgeted at about 90 s in the test profile on 2 cores and takes far
//! less).

use synod_caspaxos::CasPaxos;
use synod_core::PlantedBug;
use synod_sim::{FaultSet, RunConfig, RunResult, SimOptions, run_many, run_seed};

/// Seeds for the all-faults suites, per node count (default 500, as for OmniPaxos).
fn seeds() -> u64 {
    std::env::var("SYNOD_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(500, |n| n.max(1))
}

fn all_faults(nodes: usize, range: std::ops::Range<u64>) {
    let opts = SimOptions {
        engine: "caspaxos".into(),
        nodes,
        seeds: range.clone(),
        ..Default::default()
    };
    let sum = run_many(&opts).expect("caspaxos engine is wired into the simulator");
    println!("caspaxos {nodes} nodes: {}", sum.totals());
    assert!(
        sum.passed(),
        "{}\nfailed seeds {:?}\n{}",
        sum.totals(),
        sum.failed_seeds,
        sum.reports.first().map_or("", |s| s.as_str())
    );
    assert!(sum.ops_ok > 0);
    assert_eq!(
        sum.agreement_checked_seeds, 0,
        "caspaxos reports no applied digest, so agreement must have been skipped"
    );
    assert_eq!(sum.seeds_run, range.end - range.start);
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

/// Checkpoints: the acceptor's full state as one record every few records, with storage
/// dropping what precedes it, under every fault (crashes and power loss recover from a
/// checkpoint plus the records after it).
#[test]
fn all_faults_3_nodes_with_checkpoints() {
    let mut failed = Vec::new();
    let seeds = 20_000..20_000 + seeds() / 5;
    for seed in seeds.clone() {
        let mut cfg = RunConfig::new(seed, 3);
        cfg.snapshot_entries = 16;
        let r = run_seed::<CasPaxos>(&cfg);
        if !r.passed() {
            failed.push(r.report());
        }
    }
    println!(
        "caspaxos 3 nodes, checkpoint every 16 records: {} seeds, {} failed",
        seeds.end - seeds.start,
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed[0]);
}

#[test]
fn same_seed_replays_exactly() {
    let a = run_seed::<CasPaxos>(&RunConfig::new(9, 5));
    let b = run_seed::<CasPaxos>(&RunConfig::new(9, 5));
    assert_eq!((a.trace_hash, a.events), (b.trace_hash, b.events));
    assert_ne!(
        a.trace_hash,
        run_seed::<CasPaxos>(&RunConfig::new(10, 5)).trace_hash
    );
}

#[test]
fn a_failure_report_says_agreement_was_not_applicable() {
    let r = run_seed::<CasPaxos>(&RunConfig::new(3, 3));
    assert!(r.passed(), "{}", r.report());
    assert!(!r.agreement_checked);
    assert!(r.report().contains("not applicable"));
}

/// Seeds a planted bug may take to be caught.
const PLANT_SEEDS_MAX: u64 = 300;

fn caught(bug: PlantedBug, faults: &str, nodes: usize) -> RunResult {
    let faults = FaultSet::parse(faults).expect("a valid fault list");
    (0..PLANT_SEEDS_MAX)
        .find_map(|seed| {
            let mut cfg = RunConfig::new(seed, nodes);
            cfg.faults = faults;
            cfg.planted_bug = Some(bug);
            let r = run_seed::<CasPaxos>(&cfg);
            (!r.passed()).then_some(r)
        })
        .unwrap_or_else(|| panic!("{} not caught in {PLANT_SEEDS_MAX} seeds", bug.name()))
}

#[test]
fn planted_accept_without_quorum_is_caught() {
    for (faults, nodes) in [("partition", 3), ("all", 5)] {
        let r = caught(PlantedBug::AcceptWithoutQuorum, faults, nodes);
        println!(
            "accept-without-quorum ({faults}, {nodes} nodes) caught at seed {}: {:?}",
            r.seed, r.failures
        );
        assert!(
            r.failures.iter().any(|f| f.contains("NOT linearizable")),
            "{}",
            r.report()
        );
    }
}

#[test]
fn planted_promise_without_highest_accepted_is_caught() {
    for (faults, nodes) in [("partition", 3), ("all", 5)] {
        let r = caught(PlantedBug::PromiseWithoutHighestAccepted, faults, nodes);
        println!(
            "promise-without-highest-accepted ({faults}, {nodes} nodes) caught at seed {}: {:?}",
            r.seed, r.failures
        );
        assert!(
            r.failures.iter().any(|f| f.contains("NOT linearizable")),
            "{}",
            r.report()
        );
    }
}
