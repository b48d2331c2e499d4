//! Leader transfer under the simulator (`--faults all,transfer`): an operator asks the leader
//! to hand leadership to a random voter at random moments while clients, crashes, partitions
//! and every other fault run — OmniPaxos and VR, 3 and 5 nodes — and hand-offs must really
//! complete. The planted `transfer-target-keeps-own-log` bug (the target takes over without the
//! entries the old leader accepted) is caught. Seed counts scale with `SYNOD_SIM_SEEDS` (see
//! `synod_sim::sweep`).

use synod_core::{Engine, PlantedBug};
use synod_sim::engines::{OmniPaxosEngine, VrEngine};
use synod_sim::sweep::{assert_caught, assert_transfer_pass, seed_count, transfer_config};

/// Seeds per engine and node count in CI (the issue asks for at least 300).
const SEEDS_DEFAULT: u64 = 300;
/// Seeds the planted bug may take to be caught.
const PLANT_SEEDS_MAX: u64 = 1_000;

fn all_pass<E: Engine>(nodes: usize, first: u64) {
    let seeds = first..first + seed_count(SEEDS_DEFAULT);
    assert_transfer_pass::<E>(&transfer_config(nodes), seeds);
}

#[test]
fn omnipaxos_3_nodes() {
    all_pass::<OmniPaxosEngine>(3, 70_000);
}

#[test]
fn omnipaxos_5_nodes() {
    all_pass::<OmniPaxosEngine>(5, 71_000);
}

#[test]
fn vr_3_nodes() {
    all_pass::<VrEngine>(3, 72_000);
}

#[test]
fn vr_5_nodes() {
    all_pass::<VrEngine>(5, 73_000);
}

#[test]
fn planted_transfer_target_keeps_own_log_is_caught() {
    for nodes in [3, 5] {
        let mut cfg = transfer_config(nodes);
        cfg.planted_bug = Some(PlantedBug::TransferTargetKeepsOwnLog);
        let r = assert_caught::<OmniPaxosEngine>(&cfg, 0..PLANT_SEEDS_MAX);
        println!("{nodes} nodes: caught at seed {}", r.seed);
    }
}
