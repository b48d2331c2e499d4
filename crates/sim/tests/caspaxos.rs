//! The CASPaxos engine under the simulator: the same all-faults suite as OmniPaxos (crashes,
//! partitions, one-way links, partial connectivity, loss, duplication, power loss, torn
//! writes) on 3 and 5 nodes, and the CASPaxos planted bugs caught within a bounded number of
//! seeds. CASPaxos has no replicated log, so agreement is checked at quiescence instead: after
//! a final read of every key through every node, every replica's register digest must be the
//! same (`synod_caspaxos::digest`); linearizability and liveness are checked in full.
//!
//! Seed counts scale with `SYNOD_SIM_SEEDS` like the OmniPaxos suite (default 500 per node
//! count; the suite is budgeted at about 90 s in the test profile on 2 cores and takes far
//! less).

use synod_checker::Verdict;
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
        sum.agreement_checked_seeds, sum.seeds_run,
        "every passing seed must have compared the register digests at quiescence"
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
fn agreement_is_checked_after_a_final_read_of_every_key_through_every_node() {
    let cfg = RunConfig::new(3, 3);
    let r = run_seed::<CasPaxosEngine>(&cfg);
    assert!(r.passed(), "{}", r.report());
    assert!(r.agreement_checked);
    // The workload's operations plus one read per (key it touched, node).
    let workload = (cfg.clients * cfg.ops_per_client) as u64;
    let finals = r.ops_ok + r.ops_unknown + r.ops_failed - workload;
    assert!(
        finals > 0
            && finals <= cfg.keys * cfg.nodes as u64
            && finals.is_multiple_of(cfg.nodes as u64),
        "{finals} final reads"
    );
}

/// One acceptor that acknowledges Accepts and stores nothing leaves the histories mostly
/// linearizable — quorums that include a correct acceptor mask it — but its registers differ
/// from everyone else's after the final reads. This finds a seed where the agreement check is
/// the *only* check that fails: the digest sees what the clients never observed.
#[test]
fn planted_accepted_without_storing_is_caught_by_agreement_alone() {
    for nodes in [3, 5] {
        let mut cfg = RunConfig::new(0, nodes);
        cfg.faults = FaultSet::NONE;
        cfg.planted_bug = Some(PlantedBug::CasAcceptedWithoutStoring);
        let only_agreement = (0..PLANT_SEEDS_MAX)
            .map(|seed| {
                run_seed::<CasPaxosEngine>(&RunConfig {
                    seed,
                    ..cfg.clone()
                })
            })
            .find(|r| !r.passed() && r.verdict == Verdict::Linearizable);
        let Some(r) = only_agreement else {
            panic!(
                "no seed where only the agreement check caught the lying acceptor ({nodes} nodes)"
            );
        };
        assert!(
            r.failures.iter().all(|f| f.starts_with("agreement:")),
            "{}",
            r.report()
        );
    }
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
