//! Storage faults under the simulator (`--faults all,storage`): damaged records, snapshots and
//! metadata, read errors and misdirected writes found at a node's next start, write stalls and
//! fsync failures — on at most f members' storage per run (the fault atlas). The rule checked
//! is the usual one (linearizable history, replicas agree, live after healing): no
//! acknowledged write lost, cluster live after faults heal. Each engine on 3 and 5 nodes, and
//! the planted bugs of the repair path caught. Seed counts scale with `SYNOD_SIM_SEEDS`.

use synod_core::PlantedBug;
use synod_sim::engines::{CasPaxosEngine, OmniPaxosEngine, VrEngine};
use synod_sim::sweep::{assert_all_pass, assert_caught, seed_count};
use synod_sim::{FaultSet, RunConfig};

/// Seeds per engine and node count in a CI run (the issue asks ≥ 300).
const SEEDS_DEFAULT: u64 = 300;

fn storage_faults(nodes: usize) -> RunConfig {
    let mut cfg = RunConfig::new(0, nodes);
    cfg.faults = FaultSet::parse("all,storage").expect("valid fault list");
    cfg
}

#[test]
fn omnipaxos_3_nodes() {
    assert_all_pass::<OmniPaxosEngine>(
        &storage_faults(3),
        70_000..70_000 + seed_count(SEEDS_DEFAULT),
    );
}

#[test]
fn omnipaxos_5_nodes() {
    assert_all_pass::<OmniPaxosEngine>(
        &storage_faults(5),
        71_000..71_000 + seed_count(SEEDS_DEFAULT),
    );
}

#[test]
fn omnipaxos_with_snapshots() {
    // Repair through snapshot transfer: the leader compacts, the repairing member installs.
    let mut cfg = storage_faults(3);
    cfg.snapshot_entries = 7;
    assert_all_pass::<OmniPaxosEngine>(&cfg, 72_000..72_000 + seed_count(SEEDS_DEFAULT) / 3);
}

#[test]
fn vr_3_nodes() {
    assert_all_pass::<VrEngine>(
        &storage_faults(3),
        73_000..73_000 + seed_count(SEEDS_DEFAULT),
    );
}

#[test]
fn vr_5_nodes() {
    assert_all_pass::<VrEngine>(
        &storage_faults(5),
        74_000..74_000 + seed_count(SEEDS_DEFAULT),
    );
}

#[test]
fn caspaxos_3_nodes() {
    assert_all_pass::<CasPaxosEngine>(
        &storage_faults(3),
        75_000..75_000 + seed_count(SEEDS_DEFAULT),
    );
}

#[test]
fn caspaxos_5_nodes() {
    assert_all_pass::<CasPaxosEngine>(
        &storage_faults(5),
        76_000..76_000 + seed_count(SEEDS_DEFAULT),
    );
}

#[test]
fn truncating_at_a_mid_log_checksum_failure_and_voting_is_caught() {
    let mut cfg = storage_faults(3);
    cfg.planted_bug = Some(PlantedBug::TruncateAtCorruption);
    assert_caught::<OmniPaxosEngine>(&cfg, 0..1_000);
}

#[test]
fn an_amnesic_promise_counted_in_a_quorum_is_caught() {
    let mut cfg = storage_faults(3);
    cfg.planted_bug = Some(PlantedBug::OmniAmnesicVotes);
    assert_caught::<OmniPaxosEngine>(&cfg, 0..1_000);
}

/// A repairing OmniPaxos member that ends its repair at a snapshot install (before the
/// leader's AcceptSync) promises as an ordinary member in the bottom round, and a candidate
/// with a shorter log of a higher round overwrites decided entries. Found by seed 1,210 of
/// checkpoints every 3 entries (2026-12-07, the real bug: 1 seed in 3,000 from 0; partitioned
/// runs with the member-wide checkpoint bound met it at seeds 520,251 and 530,010). Random
/// schedules reach it rarely, so the search starts at 1,000; a unit test of the engine
/// (`a_snapshot_install_does_not_end_a_repair`) catches it on every run.
#[test]
fn a_snapshot_install_ending_a_repair_is_caught() {
    let mut cfg = storage_faults(3);
    cfg.snapshot_entries = 3;
    cfg.planted_bug = Some(PlantedBug::OmniSnapshotEndsRepair);
    assert_caught::<OmniPaxosEngine>(&cfg, 1_000..2_000);
}

#[test]
fn a_caspaxos_repair_from_one_peer_is_caught() {
    let mut cfg = storage_faults(3);
    cfg.planted_bug = Some(PlantedBug::CasRepairFromOnePeer);
    assert_caught::<CasPaxosEngine>(&cfg, 0..1_000);
}

/// Damage on a majority at once (beyond the atlas): nobody can answer the repairs, so the
/// cluster halts — and must lose nothing acknowledged, which the checker verifies on the
/// history of the writes acknowledged before the damage.
fn majority_damaged<E: synod_core::Engine>() {
    use synod_sim::{Damage, Fault, ScheduledFault, run_seed};
    for seed in 0..20 {
        let mut cfg = storage_faults(3);
        cfg.fixed_schedule = Some(
            [1, 2]
                .into_iter()
                .map(|node| ScheduledFault {
                    id: node,
                    start_us: 2_000_000,
                    end_us: 2_500_000,
                    fault: Fault::Damage {
                        node,
                        damage: Damage::BitFlip,
                    },
                })
                .collect(),
        );
        cfg.seed = seed;
        let r = run_seed::<E>(&cfg);
        assert_eq!(
            r.verdict,
            synod_checker::Verdict::Linearizable,
            "seed {seed}: {}",
            r.report()
        );
        assert!(
            !r.passed(),
            "seed {seed}: a majority without storage cannot serve"
        );
        for f in &r.failures {
            // (CASPaxos's agreement check needs final reads, which a halted cluster cannot do.)
            let halted = f.starts_with("liveness")
                || f.starts_with("convergence")
                || f.starts_with("agreement: the final reads");
            assert!(halted, "seed {seed}: only liveness may fail, not: {f}");
        }
    }
}

#[test]
fn a_majority_losing_its_storage_halts_and_loses_nothing_omnipaxos() {
    majority_damaged::<OmniPaxosEngine>();
}

#[test]
fn a_majority_losing_its_storage_halts_and_loses_nothing_vr() {
    majority_damaged::<VrEngine>();
}

#[test]
fn a_majority_losing_its_storage_halts_and_loses_nothing_caspaxos() {
    majority_damaged::<CasPaxosEngine>();
}
