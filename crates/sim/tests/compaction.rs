//! Log compaction and snapshot transfer under the simulator (issue 5, item 2).
//!
//! * The op-etcd case as its own scenario: a follower is isolated while the leader keeps
//!   deciding and compacts its log — with `snapshot_entries = 1` its *whole* decided log — and
//!   after healing the follower can only catch up by snapshot transfer. Convergence (every
//!   replica at the same applied index and digest) and linearizability prove it did.
//! * The all-faults suites with checkpoints every few entries, on 3 and 5 nodes.
//! * Planted bugs are still caught with compaction on.
//!
//! Seed counts scale with `SYNOD_SIM_SEEDS` (default 300 per suite and node count; see
//! `synod_sim::sweep`).

use synod_core::PlantedBug;
use synod_sim::engines::OmniPaxosEngine;
use synod_sim::faults::ScheduledFault;
use synod_sim::sweep::{assert_all_pass, assert_caught, seed_count};
use synod_sim::{Fault, FaultSet, RunConfig, RunResult, run_seed};

/// Seeds per suite and node count, unless `SYNOD_SIM_SEEDS` says otherwise.
const SEEDS_DEFAULT: u64 = 300;

fn seeds() -> u64 {
    seed_count(SEEDS_DEFAULT)
}

/// A follower cut off from everyone during `[1 s, 4 s)` while clients keep writing; then heal.
fn isolated_follower_run(seed: u64, nodes: usize, snapshot_entries: u64) -> RunResult {
    let mut cfg = RunConfig::new(seed, nodes);
    cfg.faults = FaultSet::NONE;
    cfg.snapshot_entries = snapshot_entries;
    cfg.fault_window_us = 5_000_000;
    cfg.clients = 4;
    cfg.ops_per_client = 50;
    cfg.fixed_schedule = Some(vec![ScheduledFault {
        id: 1,
        start_us: 1_000_000,
        end_us: 4_000_000,
        fault: Fault::Isolate { node: None },
    }]);
    run_seed::<OmniPaxosEngine>(&cfg)
}

#[test]
fn a_follower_behind_a_leader_that_compacted_its_whole_log_catches_up_by_snapshot() {
    for nodes in [3, 5] {
        for seed in 1..=10 {
            // 1: every applied entry is compacted at once — the leader keeps no decided entry.
            for snapshot_entries in [1, 7] {
                let r = isolated_follower_run(seed, nodes, snapshot_entries);
                assert!(
                    r.passed(),
                    "snapshot_entries {snapshot_entries}: {}",
                    r.report()
                );
                assert!(r.ops_ok > 100, "too few operations: {}", r.ops_ok);
            }
        }
    }
}

/// Without compaction the same scenario is repaired by the log; the point of the test above
/// is that with compaction the log cannot be used. Prove the scenario does leave the follower
/// behind the leader's compacted index: with a crash of the isolated follower instead, it
/// must also come back (from its own checkpoint plus the leader's snapshot).
#[test]
fn a_crashed_follower_recovers_from_its_checkpoint_and_a_snapshot() {
    for seed in 1..=10 {
        let mut cfg = RunConfig::new(seed, 3);
        cfg.faults = FaultSet::parse("crash,torn-writes").unwrap();
        cfg.snapshot_entries = 5;
        cfg.fault_window_us = 5_000_000;
        cfg.clients = 4;
        cfg.ops_per_client = 50;
        cfg.fixed_schedule = Some(vec![ScheduledFault {
            id: 1,
            start_us: 1_000_000 + seed * 50_000,
            end_us: 4_000_000,
            fault: Fault::Crash { node: 1 + seed % 3 },
        }]);
        let r = run_seed::<OmniPaxosEngine>(&cfg);
        assert!(r.passed(), "{}", r.report());
    }
}

#[test]
fn whole_cluster_power_loss_with_checkpoints() {
    for seed in 1..=10 {
        let mut cfg = RunConfig::new(seed, 5);
        cfg.faults = FaultSet::parse("power-loss").unwrap();
        cfg.snapshot_entries = 3;
        cfg.fault_window_us = 5_000_000;
        cfg.fixed_schedule = Some(vec![ScheduledFault {
            id: 1,
            start_us: 2_000_000,
            end_us: 2_500_000,
            fault: Fault::PowerLoss,
        }]);
        let r = run_seed::<OmniPaxosEngine>(&cfg);
        assert!(r.passed(), "{}", r.report());
    }
}

fn all_faults_with_snapshots(nodes: usize, seeds: std::ops::Range<u64>, snapshot_entries: u64) {
    let mut cfg = RunConfig::new(0, nodes);
    cfg.snapshot_entries = snapshot_entries;
    assert_all_pass::<OmniPaxosEngine>(&cfg, seeds);
}

#[test]
fn all_faults_3_nodes_snapshot_every_50_entries() {
    all_faults_with_snapshots(3, 20_000..20_000 + seeds(), 50);
}

#[test]
fn all_faults_3_nodes_snapshot_every_7_entries() {
    all_faults_with_snapshots(3, 30_000..30_000 + seeds(), 7);
}

/// The extreme: every applied entry is compacted at once, so every leader keeps no decided
/// entry and every catch-up below the decided index is by snapshot.
#[test]
fn all_faults_3_nodes_snapshot_every_entry() {
    all_faults_with_snapshots(3, 60_000..60_000 + seeds(), 1);
}

#[test]
fn all_faults_5_nodes_snapshot_every_50_entries() {
    all_faults_with_snapshots(5, 40_000..40_000 + seeds(), 50);
}

#[test]
fn all_faults_5_nodes_snapshot_every_7_entries() {
    all_faults_with_snapshots(5, 50_000..50_000 + seeds(), 7);
}

/// Seeds a planted bug may take to be caught.
const PLANT_SEEDS_MAX: u64 = 300;

fn caught_with_snapshots(bug: PlantedBug, faults: &str) {
    let mut cfg = RunConfig::new(0, 3);
    cfg.faults = FaultSet::parse(faults).expect("a valid fault list");
    cfg.planted_bug = Some(bug);
    cfg.snapshot_entries = 7;
    assert_caught::<OmniPaxosEngine>(&cfg, 0..PLANT_SEEDS_MAX);
}

#[test]
fn planted_bugs_are_still_caught_with_compaction() {
    for (bug, faults) in [
        (PlantedBug::AckBeforeMajority, "crash,partition"),
        (PlantedBug::ForgetAcceptedBallot, "crash,partition,loss"),
        (PlantedBug::StaleLinearizableRead, "partition"),
        (PlantedBug::AckBeforeFsync, "crash,power-loss,torn-writes"),
    ] {
        caught_with_snapshots(bug, faults);
    }
}

/// Seeds that once failed, with what they caught.
const REGRESSION_SEEDS: &[(usize, u64, u64, &str)] = &[(
    3,
    30_135,
    7,
    "a candidate adopted a suffix cut by the promiser's compaction above its own decided index",
)];

#[test]
fn regression_seeds() {
    for &(nodes, seed, snapshot_entries, what) in REGRESSION_SEEDS {
        let mut cfg = RunConfig::new(seed, nodes);
        cfg.snapshot_entries = snapshot_entries;
        let r = run_seed::<OmniPaxosEngine>(&cfg);
        assert!(r.passed(), "{what}\n{}", r.report());
    }
}
