//! The CASPaxos engine under the simulator: the same all-faults suite as OmniPaxos (crashes,
//! partitions, one-way links, partial connectivity, loss, duplication, power loss, torn
//! writes) on 3 and 5 nodes, and both CASPaxos planted bugs caught within a bounded number of
//! seeds. CASPaxos has no replicated log, so the simulator's agreement-by-digest check does not
//! apply (the results say so); linearizability and liveness are checked in full.
//!
//! Seed counts scale with `SYNOD_SIM_SEEDS` like the OmniPaxos suite (default 500 per node
//! count; the suite is budgeted at about 90 s in the test profile on 2 cores and takes far
//! less).

use synod_core::PlantedBug;
use synod_sim::engines::CasPaxosEngine;
use synod_sim::sweep::{assert_all_pass, assert_caught, halves, seed_count};
use synod_sim::{FaultSet, RunConfig, run_seed};

/// Seeds for the all-faults suites, per node count (as for OmniPaxos), unless
/// `SYNOD_SIM_SEEDS` says otherwise.
const SEEDS_DEFAULT: u64 = 500;

fn all_faults(nodes: usize, seeds: std::ops::Range<u64>) {
    let sum = assert_all_pass::<CasPaxosEngine>(&RunConfig::new(0, nodes), seeds);
    assert_eq!(
        sum.agreement_checked_seeds, 0,
        "caspaxos reports no applied digest, so agreement must have been skipped"
    );
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

/// Checkpoints: the acceptor's full state as one record every few records, with storage
/// dropping what precedes it, under every fault (crashes and power loss recover from a
/// checkpoint plus the records after it). A fifth of the all-faults count.
#[test]
fn all_faults_3_nodes_with_checkpoints() {
    let mut cfg = RunConfig::new(0, 3);
    cfg.snapshot_entries = 16;
    assert_all_pass::<CasPaxosEngine>(&cfg, 20_000..20_000 + seed_count(SEEDS_DEFAULT) / 5);
}

#[test]
fn same_seed_replays_exactly() {
    let a = run_seed::<CasPaxosEngine>(&RunConfig::new(9, 5));
    let b = run_seed::<CasPaxosEngine>(&RunConfig::new(9, 5));
    assert_eq!((a.trace_hash, a.events), (b.trace_hash, b.events));
    assert_ne!(
        a.trace_hash,
        run_seed::<CasPaxosEngine>(&RunConfig::new(10, 5)).trace_hash
    );
}

#[test]
fn a_failure_report_says_agreement_was_not_applicable() {
    let r = run_seed::<CasPaxosEngine>(&RunConfig::new(3, 3));
    assert!(r.passed(), "{}", r.report());
    assert!(!r.agreement_checked);
    assert!(r.report().contains("not applicable"));
}

/// Seeds a planted bug may take to be caught.
const PLANT_SEEDS_MAX: u64 = 300;

/// `bug` is caught under a partition on 3 nodes and under every fault on 5, and the checker
/// is what catches it.
fn caught_as_not_linearizable(bug: PlantedBug) {
    for (faults, nodes) in [("partition", 3), ("all", 5)] {
        let mut cfg = RunConfig::new(0, nodes);
        cfg.faults = FaultSet::parse(faults).expect("a valid fault list");
        cfg.planted_bug = Some(bug);
        let r = assert_caught::<CasPaxosEngine>(&cfg, 0..PLANT_SEEDS_MAX);
        assert!(
            r.failures.iter().any(|f| f.contains("NOT linearizable")),
            "{}",
            r.report()
        );
    }
}

#[test]
fn planted_accept_without_quorum_is_caught() {
    caught_as_not_linearizable(PlantedBug::AcceptWithoutQuorum);
}

#[test]
fn planted_promise_without_highest_accepted_is_caught() {
    caught_as_not_linearizable(PlantedBug::PromiseWithoutHighestAccepted);
}
