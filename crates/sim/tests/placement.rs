//! Placement under the simulator (`synod-partition`'s `placement.rs`): 5 members, every key its
//! own group, each group after the first on 3 of the members; clients ask any member, so most
//! requests are relayed to a member hosting the key's group. The range directory (on every
//! member) must record every group with its hosts once a run is quiet. Every fault, and storage
//! faults with repairs; the linearizability checker partitions by key, so relayed and local
//! requests are checked together. Lease clients too: their requests are fanned out to every
//! group, through relays where a group is elsewhere, under the lease checker. The planted bug —
//! relayed reads lose their consistency and are served from the host's own replica — is caught.
//! Seed counts scale with `SYNOD_SIM_SEEDS`.

use synod_core::PlantedBug;
use synod_partition::Partitioned;
use synod_sim::engines::{OmniPaxosEngine, VrEngine};
use synod_sim::sweep::{
    assert_all_pass, assert_caught, assert_caught_by, assert_leases_judged, seed_count,
};
use synod_sim::{RunConfig, SIM_GROUPS, default_split_keys};

/// Seeds per engine and test in CI, unless `SYNOD_SIM_SEEDS` says otherwise.
const SEEDS_DEFAULT: u64 = 60;
/// Seeds a planted bug must be caught within.
const PLANT_SEEDS_MAX: u64 = 1_000;

fn placed() -> RunConfig {
    let mut cfg = RunConfig::new(0, 5);
    cfg.split_keys = default_split_keys(cfg.keys, SIM_GROUPS);
    cfg.partition_replicas = 3;
    cfg.range_directory = true;
    cfg.snapshot_entries = 10;
    cfg
}

#[test]
fn groups_on_three_of_five_members_pass_every_fault() {
    let n = seed_count(SEEDS_DEFAULT);
    let omni = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&placed(), 130_000..130_000 + n);
    let vr = assert_all_pass::<Partitioned<VrEngine>>(&placed(), 131_000..131_000 + n);
    for sum in [omni, vr] {
        assert!(sum.ops_ok > 0, "operations succeeded: {}", sum.ops_ok);
    }
}

#[test]
fn groups_on_three_of_five_members_survive_storage_faults() {
    let mut cfg = placed();
    cfg.faults = synod_sim::FaultSet::parse("all,storage").expect("valid fault list");
    let n = seed_count(SEEDS_DEFAULT / 2);
    assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 132_000..132_000 + n);
    assert_all_pass::<Partitioned<VrEngine>>(&cfg, 133_000..133_000 + n);
}

/// Lease clients on top: every lease request is fanned out to every group, the parts for groups
/// not on the member asked relayed to their hosts; the lease checker judges that no key goes
/// before its lease's TTL and that every ended lease's keys are gone. The lease keys (`l/…`)
/// stay in the last group: the checker scans them all at once from any member, and a scan
/// over groups not all on one member is refused under placement.
#[test]
fn leases_across_placed_groups_hold_through_every_fault() {
    let mut cfg = placed();
    cfg.leases = 4;
    let n = seed_count(SEEDS_DEFAULT / 2);
    let omni = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 134_000..134_000 + n);
    let vr = assert_all_pass::<Partitioned<VrEngine>>(&cfg, 135_000..135_000 + n);
    assert_leases_judged(&omni);
    assert_leases_judged(&vr);
}

#[test]
fn planted_relay_dropping_consistency_is_caught() {
    let mut cfg = placed();
    cfg.planted_bug = Some(PlantedBug::PartitionRelayDropsConsistency);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 130_000..130_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "linearizab");
}
