//! Placement under the simulator (`synod-partition`'s `placement.rs`): 5 members, every key its
//! own group, each group after the first on 3 of the members; clients ask any member, so most
//! requests are relayed to a member hosting the key's group. The range directory (on every
//! member) must record every group with its hosts once a run is quiet. Every fault, and storage
//! faults with repairs (with moves too: a replica that cannot tell whether it voted in its
//! group's configuration is moved off); the linearizability checker partitions by key, so
//! relayed and local requests are checked together. Lease clients too: their requests are fanned out to every
//! group, through relays where a group is elsewhere, under the lease checker. Scans over groups
//! on different members, their parts relayed and read at one revision, under the compaction
//! workload's scan check. The planted bugs — relayed reads lose their consistency and are served
//! from the host's own replica; a read over groups not aligned on one revision — are caught.
//! Every run ends only once the groups' leaders are spread over the members (`leaders.rs`;
//! planted: leaders at their rotations, nothing counted). Seed counts scale with
//! `SYNOD_SIM_SEEDS`.

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
/// are split over two groups too, so the checker's scans of them all are reads over groups
/// placed on different members, their parts relayed.
#[test]
fn leases_across_placed_groups_hold_through_every_fault() {
    let mut cfg = placed();
    cfg.leases = 4;
    cfg.split_keys.push(b"l/5".to_vec());
    let n = seed_count(SEEDS_DEFAULT / 2);
    let omni = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 134_000..134_000 + n);
    let vr = assert_all_pass::<Partitioned<VrEngine>>(&cfg, 135_000..135_000 + n);
    assert_leases_judged(&omni);
    assert_leases_judged(&vr);
}

/// The compaction workload (`sim/compactions.rs`): compactions fanned to every group, reads at
/// past revisions, and scans of every key at once — over groups on different members, every
/// part read at one revision through relays — each key of a scan as it was at the scan's
/// revision, judged against every acknowledged put.
#[test]
fn scans_and_compactions_over_placed_groups_hold_through_every_fault() {
    let mut cfg = placed();
    cfg.compactions = true;
    let n = seed_count(SEEDS_DEFAULT / 2);
    let omni = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 136_000..136_000 + n);
    let vr = assert_all_pass::<Partitioned<VrEngine>>(&cfg, 137_000..137_000 + n);
    for sum in [omni, vr] {
        assert!(
            sum.compactions_acknowledged > 0 && sum.past_reads_checked > 0 && sum.scans_checked > 0,
            "{}",
            sum.totals()
        );
    }
}

/// A read over groups answered with each part's latest state and the largest revision, its
/// relayed parts included: the scans' check sees a key older than a put the read's revision
/// covers.
#[test]
fn planted_unaligned_read_over_placed_groups_is_caught() {
    let mut cfg = placed();
    cfg.compactions = true;
    cfg.planted_bug = Some(PlantedBug::PartitionSpanReadUnaligned);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 136_000..136_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "scan:");
}

#[test]
fn planted_relay_dropping_consistency_is_caught() {
    let mut cfg = placed();
    cfg.planted_bug = Some(PlantedBug::PartitionRelayDropsConsistency);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 130_000..130_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "linearizab");
}

/// Moves (`moves.rs`): an operator moves a random key's group from a random member to another
/// while every fault runs — the newcomer added to the group as a learner, promoted once in
/// sync, the old member removed, each through the group's own log, the newcomer starting the
/// group on its first message and the old member dropping it — and asks a move cut short again
/// half the time; the group's leader finishes it otherwise, from the range directory's record
/// (`targets.rs`), and no move may be left recorded at the end. Every key is judged by the linearizability checker (requests at every
/// member, relayed to wherever the group lives now); every group must end on 3 members with
/// no learner, its hosts agreeing, and every member's directory recording where it lives.
#[test]
fn groups_move_between_members_through_every_fault() {
    let mut cfg = placed();
    cfg.moves = true;
    let n = seed_count(SEEDS_DEFAULT / 2);
    let omni = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 138_000..138_000 + n);
    let vr = assert_all_pass::<Partitioned<VrEngine>>(&cfg, 139_000..139_000 + n);
    for sum in [omni, vr] {
        assert!(sum.moves_done > 0, "moves made: {}", sum.totals());
    }
}

/// A member that rejoins a group it left counts its incarnations from 1 again: its commands
/// carry origins the group remembers from its earlier stay and are skipped as applied, so a
/// group it leads stops closing its revisions (and its writes time out).
#[test]
fn planted_rejoin_reusing_origins_is_caught() {
    let mut cfg = placed();
    cfg.moves = true;
    cfg.planted_bug = Some(PlantedBug::RejoinReusesOrigins);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 138_000..138_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "convergence");
}

/// A group's new leader ignores the move the range directory records for it (its driver lost
/// the lead part-way): the learner the move added is dropped as any a move cut short left, the
/// move is undone and its record stays — a run ending with an unfinished move recorded.
#[test]
fn planted_move_target_not_resumed_is_caught() {
    let mut cfg = placed();
    cfg.moves = true;
    cfg.planted_bug = Some(PlantedBug::MoveTargetNotResumed);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 138_000..138_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "convergence");
    let why = r.failures.join("\n");
    assert!(why.contains("records unfinished moves"), "{why}");
}

/// Membership changes on a placed cluster (`reconfig`: members replaced, the leader removing
/// itself, the cluster grown by two and shrunk back, under every other fault): decided in the
/// first group and followed by the meta group, while each placed group's leader moves the
/// group off a member the cluster removed, to the member hosting the fewest groups. Every group
/// must end on 3 voters of the cluster with no learner, its hosts agreeing, and every member's
/// directory recording where it lives.
#[test]
fn placed_groups_leave_removed_members_through_every_fault() {
    let mut cfg = placed();
    cfg.faults = synod_sim::FaultSet::parse("all,reconfig").expect("valid fault list");
    let n = seed_count(SEEDS_DEFAULT / 2);
    assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 140_000..140_000 + n);
    assert_all_pass::<Partitioned<VrEngine>>(&cfg, 141_000..141_000 + n);
}

/// Rebalancing (`rebalance.rs`): each placed group's leader moves its group off the member
/// hosting the most groups to the one hosting the fewest while the cluster is quiet, so the
/// placement rule's uneven start (member 4 hosts every group, members 1 and 2 one each) evens
/// out, members added (the operator grows the cluster by two) are given groups, and groups that
/// all left a removed member for the same member spread out — under every fault and membership
/// change. Besides everything the runs above check, the run must end with no member of the
/// cluster hosting two groups more than another.
#[test]
fn groups_even_out_over_members_through_every_fault() {
    let mut cfg = placed();
    cfg.rebalance = true;
    cfg.faults = synod_sim::FaultSet::parse("all,reconfig").expect("valid fault list");
    let n = seed_count(SEEDS_DEFAULT / 2);
    assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 142_000..142_000 + n);
    assert_all_pass::<Partitioned<VrEngine>>(&cfg, 143_000..143_000 + n);
}

/// Rebalancing sheds a voter of a group that has just its replicas (an off-by-one in finishing
/// a move cut short): groups end on fewer voters than placed.
#[test]
fn planted_rebalance_shedding_a_placed_voter_is_caught() {
    let mut cfg = placed();
    cfg.rebalance = true;
    cfg.planted_bug = Some(PlantedBug::RebalanceShedsPlacedVoter);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 142_000..142_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "convergence");
}

/// Leaders handed to each group's rotation among its hosts, nothing counted: where the
/// rotations of two groups land on one member (or on the first group's leader), that member
/// leads both while another host of theirs leads none. Every partitioned run ends only once
/// leaders are as even as hand-offs can make them (`leaders.rs`).
#[test]
fn planted_leader_plan_by_rotation_only_is_caught() {
    let mut cfg = placed();
    cfg.planted_bug = Some(PlantedBug::LeaderPlanRotationOnly);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 144_000..144_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "convergence");
}

/// A move's removal made although it leaves the group short of its replicas: with rebalancing,
/// two leaders in turn each move a group from a view that lagged, and together remove two
/// voters for one added.
#[test]
fn planted_move_removing_below_replicas_is_caught() {
    let mut cfg = placed();
    cfg.rebalance = true;
    cfg.faults = synod_sim::FaultSet::parse("all,reconfig").expect("valid fault list");
    cfg.planted_bug = Some(PlantedBug::MoveRemovesBelowReplicas);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 142_000..142_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "convergence");
}

/// Moves under storage faults: a member whose storage was damaged repairs from its peers, but a
/// group moved to it in a configuration it cannot tell whether it voted in (every group whose
/// configuration changed since it began: any group a move touched) it takes as a member that
/// lost its storage — non-voting — and says so; the group's leader moves the group off it
/// (`moves.rs`, `replace_non_voting`). Every replica of every group must still reach the same
/// applied index. Until 2026-12-07 one run in five ended with a group on a member that would
/// never vote in it again (and a newcomer that had lost its disk voted afresh instead).
#[test]
fn groups_move_between_members_through_storage_faults() {
    let mut cfg = placed();
    cfg.moves = true;
    cfg.faults = synod_sim::FaultSet::parse("all,storage").expect("valid fault list");
    let n = seed_count(SEEDS_DEFAULT / 2);
    assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 150_000..150_000 + n);
    assert_all_pass::<Partitioned<VrEngine>>(&cfg, 151_000..151_000 + n);
}

/// A placed group's leader keeps a voter that says it cannot vote: the group never moves off
/// it, and its replica there never catches up.
#[test]
fn planted_non_voting_voter_kept_is_caught() {
    let mut cfg = placed();
    cfg.moves = true;
    cfg.faults = synod_sim::FaultSet::parse("all,storage").expect("valid fault list");
    cfg.planted_bug = Some(PlantedBug::NonVotingVoterKept);
    let r = assert_caught::<Partitioned<VrEngine>>(&cfg, 151_000..151_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "convergence");
}

/// A member the cluster removed that still leads a placed group moves the group off itself
/// instead of handing the lead to a voter the cluster keeps: its records of the move never
/// reach the range directory it left, the newcomer never learns it was added, and the group
/// never leaves it (VR seed 143,119, the seed that found it).
#[test]
fn planted_departed_leader_keeping_groups_is_caught() {
    let mut cfg = placed();
    cfg.rebalance = true;
    cfg.faults = synod_sim::FaultSet::parse("all,reconfig").expect("valid fault list");
    cfg.planted_bug = Some(PlantedBug::DepartedLeaderKeepsGroups);
    let r = assert_caught::<Partitioned<VrEngine>>(&cfg, 143_119..143_119 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "convergence");
}

/// A replica that applied its own removal drops at once and a replica without a protocol
/// instance sends no snapshot: where the member removed was the only one that applied the
/// removal (the leader that decided it) and another of the old configuration cannot vote, the
/// others never learn of it and the group stalls for good.
#[test]
fn planted_removed_replica_leaving_at_once_is_caught() {
    let mut cfg = placed();
    cfg.moves = true;
    cfg.faults = synod_sim::FaultSet::parse("all,storage").expect("valid fault list");
    cfg.planted_bug = Some(PlantedBug::RemovedReplicaLeavesAtOnce);
    let r = assert_caught::<Partitioned<VrEngine>>(&cfg, 151_000..151_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "convergence");
}

/// Placed groups that split (`learned.rs`): two groups to begin with, an operator splitting
/// ranges at random keys (the new group on its parent's hosts) and moving groups, under every
/// fault, with lease clients whose keys the splits cut. Members that host neither half learn
/// the split from their relays' answers and their copy of the directory; a lease request's fan
/// must reach every group split off before its parts were applied — the lease checker judges
/// that no key goes before its TTL — and every routed request is judged by the linearizability
/// checker. Splits of the first range are refused (it stays on every member).
fn placed_splits() -> RunConfig {
    let mut cfg = placed();
    cfg.split_keys = default_split_keys(cfg.keys, synod_sim::SIM_GROUPS_AT_START);
    cfg.splits = true;
    cfg.moves = true;
    cfg.leases = 4;
    cfg
}

#[test]
fn placed_groups_split_and_move_through_every_fault() {
    let n = seed_count(SEEDS_DEFAULT / 2);
    let cfg = placed_splits();
    let omni = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 150_000..150_000 + n);
    let vr = assert_all_pass::<Partitioned<VrEngine>>(&cfg, 151_000..151_000 + n);
    for sum in [omni, vr] {
        assert_leases_judged(&sum);
        if sum.seeds_run > 0 {
            assert!(sum.splits_done > 0, "splits made: {}", sum.totals());
        }
    }
}

/// [`placed_splits`] with storage faults too.
fn placed_splits_on_storage() -> RunConfig {
    let mut cfg = placed_splits();
    cfg.faults = synod_sim::FaultSet::parse("all,storage").expect("valid fault list");
    cfg
}

/// Placed splits under storage faults, with moves: a member whose storage is damaged after a
/// split learns of the group split off from its parent's state and joins it without state as
/// a newcomer (its group's leader sends it the state; listed there as a voter, it votes in
/// nothing and the group moves off it) — where it repaired the group from the hosts it guessed,
/// one run in seventy ended with a group that never caught up. And members read the range
/// directory's entries naming nobody as no group of their own.
#[test]
fn placed_splits_survive_storage_faults() {
    let cfg = placed_splits_on_storage();
    let n = seed_count(SEEDS_DEFAULT / 2);
    let omni = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 152_000..152_000 + n);
    let vr = assert_all_pass::<Partitioned<VrEngine>>(&cfg, 153_000..153_000 + n);
    for sum in [omni, vr] {
        if sum.seeds_run > 0 {
            assert!(sum.splits_done > 0, "splits made: {}", sum.totals());
        }
    }
}

/// The runs that found the three causes above (`synod sim --directory --nodes 5 --replicas 3
/// --splits --faults all,storage --snapshot-entries 10`, with `--moves` for 1,926): a repair
/// from guessed hosts (1,926), a directory entry naming nobody learned as a group (3,090,
/// 3,256), a host joining the group its snapshot split off (VR 3,382).
#[test]
fn placed_split_storage_regressions() {
    let mut cfg = placed_splits_on_storage();
    cfg.leases = 0;
    cfg.moves = false;
    for seed in [3_090, 3_256] {
        assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, seed..seed + 1);
    }
    assert_all_pass::<Partitioned<VrEngine>>(&cfg, 3_382..3_383);
    cfg.moves = true;
    assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 1_926..1_927);
    // The replayed run still reaches the scenario: with the old repair it fails.
    cfg.planted_bug = Some(PlantedBug::PlacedSplitChildRepairsGuessed);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 1_926..1_927);
    assert_caught_by(&r, "convergence");
}

/// The member of a lost disk repairs a group split off before the loss from the hosts it
/// guesses (its parent's now): after a move, the repair asks members that do not host the
/// group, never gets its answers, and the run ends unconverged.
#[test]
fn planted_placed_split_child_repairs_guessed_is_caught() {
    let mut cfg = placed_splits_on_storage();
    cfg.planted_bug = Some(PlantedBug::PlacedSplitChildRepairsGuessed);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 152_000..152_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "convergence");
}

/// A relaying member takes no notice of the splits a host's answer names: a keep-alive's fan
/// completes without a group split off meanwhile, whose copy of the lease then runs out early.
#[test]
fn planted_placed_split_not_learned_is_caught() {
    let mut cfg = placed_splits();
    cfg.planted_bug = Some(PlantedBug::PlacedSplitNotLearned);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 150_000..150_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "lease");
}
