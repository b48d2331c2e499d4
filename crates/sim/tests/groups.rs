//! Partitioned mode under the simulator: OmniPaxos and VR split into groups (`SIM_GROUPS` over
//! the run's keys, each split key itself one of the keys), with every fault, storage faults
//! with repairs, and node-wide checkpoints every few entries; the linearizability checker
//! partitions by key, so histories that cross groups are checked as they are. Runs with an
//! operator split and merge ranges while the faults go on. Every planted bug of the mechanisms
//! is caught: a member that routes a boundary key to the wrong group, a node-wide checkpoint
//! that leaves out the groups that did not checkpoint, a split that serves moved keys or
//! drops the client table, a frozen group that keeps applying writes, an absorb that drops
//! the client table, a split's key move published to watchers one revision early (the watch
//! feed check runs in every partitioned run). Seed counts scale with `SYNOD_SIM_SEEDS`.

use synod_core::PlantedBug;
use synod_partition::Partitioned;
use synod_sim::engines::{OmniPaxosEngine, VrEngine};
use synod_sim::sweep::{
    assert_all_pass, assert_caught, assert_caught_by, assert_leases_judged, assert_reconfig_pass,
    seed_count,
};
use synod_sim::{RunConfig, SIM_GROUPS, default_split_keys, run_seed};

/// Seeds per engine in CI, unless `SYNOD_SIM_SEEDS` says otherwise (2 × 150 ≥ 300).
const SEEDS_DEFAULT: u64 = 150;
/// Seeds a planted bug must be caught within.
const PLANT_SEEDS_MAX: u64 = 1_000;

fn partitioned(snapshot_entries: u64) -> RunConfig {
    let mut cfg = RunConfig::new(0, 3);
    cfg.split_keys = default_split_keys(cfg.keys, SIM_GROUPS);
    cfg.snapshot_entries = snapshot_entries;
    cfg
}

/// Fewer groups at the start, and an operator splitting and merging ranges at random keys
/// while the run goes on (`sim/splitter.rs`): with 4 keys, up to 4 groups.
fn splitting(snapshot_entries: u64) -> RunConfig {
    let mut cfg = partitioned(snapshot_entries);
    cfg.split_keys = default_split_keys(cfg.keys, 2);
    cfg.splits = true;
    cfg
}

#[test]
fn the_default_layout_gives_every_key_its_own_group() {
    let cfg = partitioned(0);
    assert_eq!(cfg.keys, 4);
    assert_eq!(
        cfg.split_keys,
        [b"k1".to_vec(), b"k2".to_vec(), b"k3".to_vec()]
    );
}

#[test]
fn omnipaxos_groups_pass_every_fault() {
    let n = seed_count(SEEDS_DEFAULT);
    let sum = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&partitioned(10), 70_000..70_000 + n);
    assert!(sum.ops_ok > 0);
}

#[test]
fn vr_groups_pass_every_fault() {
    let n = seed_count(SEEDS_DEFAULT);
    assert_all_pass::<Partitioned<VrEngine>>(&partitioned(10), 80_000..80_000 + n);
}

/// Lost and damaged storage: a member repairing its groups from its peers while another of
/// its groups checkpoints must not be forced into a checkpoint it cannot take (an amnesic
/// OmniPaxos state, a recovering VR replica) — the bundle then waits for a later batch.
#[test]
fn storage_faults_with_node_wide_checkpoints() {
    let mut cfg = partitioned(10);
    cfg.faults = synod_sim::FaultSet::parse("all,storage").expect("valid fault list");
    let n = seed_count(SEEDS_DEFAULT) / 3;
    assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 0..n);
    assert_all_pass::<Partitioned<VrEngine>>(&cfg, 0..n);
}

#[test]
fn splits_racing_every_fault_lose_nothing() {
    let n = seed_count(SEEDS_DEFAULT);
    let omni = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&splitting(10), 71_000..71_000 + n);
    let vr = assert_all_pass::<Partitioned<VrEngine>>(&splitting(10), 81_000..81_000 + n);
    for sum in [omni, vr] {
        assert!(sum.ops_ok > 0);
        assert!(sum.splits_done >= n, "splits happened: {}", sum.splits_done);
        assert!(
            sum.feed_revisions > 0 && sum.feed_moves >= sum.splits_done,
            "the watch feed was checked: {} revisions, {} moves",
            sum.feed_revisions,
            sum.feed_moves
        );
        assert!(
            sum.merges_done >= n / 2,
            "merges happened: {}",
            sum.merges_done
        );
    }
}

#[test]
fn splits_with_storage_faults_lose_nothing() {
    let mut cfg = splitting(10);
    cfg.faults = synod_sim::FaultSet::parse("all,storage").expect("valid fault list");
    let n = seed_count(SEEDS_DEFAULT) / 3;
    assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 0..n);
    assert_all_pass::<Partitioned<VrEngine>>(&cfg, 0..n);
}

/// Deletes of ranges of keys over several groups (`deletes.rs`: one delete per group, answered
/// together), racing every fault and the operator's splits and merges: the checker judges each
/// key's delete in its key's history, by the previous values the answer gave.
#[test]
fn deletes_over_groups_race_splits_and_every_fault() {
    let mut cfg = splitting(10);
    cfg.range_deletes = true;
    let n = seed_count(SEEDS_DEFAULT) / 3;
    let omni = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 90_000..90_000 + n);
    assert!(omni.ops_ok > 0);
    assert_all_pass::<Partitioned<VrEngine>>(&cfg, 91_000..91_000 + n);
}

/// A delete over several groups answered once its first group applied its part: a later read
/// finds a key it deleted still there.
#[test]
fn planted_split_delete_answered_early_is_caught() {
    let mut cfg = partitioned(10);
    cfg.range_deletes = true;
    cfg.planted_bug = Some(PlantedBug::PartitionSplitDeleteAnswersEarly);
    assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
}

#[test]
fn planted_split_that_keeps_serving_moved_keys_is_caught() {
    let mut cfg = splitting(0);
    cfg.planted_bug = Some(PlantedBug::PartitionSplitServesMovedKeys);
    assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
}

#[test]
fn planted_split_that_drops_the_client_table_is_caught() {
    let mut cfg = splitting(0);
    cfg.planted_bug = Some(PlantedBug::PartitionSplitDropsSessions);
    assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
}

/// A split's move of keys published one revision early: a watcher following its keys would
/// skip the parent's last revision of them. The watch feed check sees the parent's event of a
/// moved key after the revision the move names.
#[test]
fn planted_watch_move_published_early_is_caught() {
    let mut cfg = splitting(0);
    cfg.planted_bug = Some(PlantedBug::PartitionWatchMoveEarly);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
    assert_caught_by(&r, "watch feed:");
}

/// An absorb that goes on from the lower group's own revision: the frozen group's keys come
/// back at revisions a watcher following the merge has passed. The watch feed check sees the
/// absorb's revision below the frozen group's last event of those keys.
#[test]
fn planted_absorb_that_goes_back_in_revisions_is_caught() {
    let mut cfg = splitting(0);
    cfg.planted_bug = Some(PlantedBug::PartitionAbsorbRevisionBehind);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
    assert_caught_by(&r, "watch feed:");
}

/// etcd's Compact on a partitioned cluster, racing splits, merges and every fault: once a
/// compaction to R is acknowledged, a key whose group had reached R reads nothing below R —
/// in whichever group it is by then; and a read of every key, over several groups, is each
/// key as it was at the read's revision (`sim/compactions.rs`).
#[test]
fn compactions_hold_in_every_group_through_splits_and_merges() {
    let n = seed_count(60);
    let mut cfg = splitting(0);
    cfg.compactions = true;
    let a = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 95_000..95_000 + n);
    let b = assert_all_pass::<Partitioned<VrEngine>>(&cfg, 96_000..96_000 + n);
    for sum in [a, b] {
        assert!(
            sum.compactions_acknowledged > 0
                && sum.past_reads_refused > 0
                && sum.past_reads_checked > 0
                && sum.scans_checked > 0,
            "{}",
            sum.totals()
        );
        assert!(
            sum.splits_done > 0 && sum.merges_done > 0,
            "{}",
            sum.totals()
        );
    }
}

/// A compaction answered once the first group compacted, the others never asked: a key of
/// another group that had reached the revision still reads below it.
#[test]
fn planted_compaction_of_one_group_is_caught() {
    let mut cfg = splitting(0);
    cfg.compactions = true;
    cfg.planted_bug = Some(PlantedBug::PartitionCompactOneGroup);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
    assert_caught_by(&r, "compaction:");
}

/// A read over several groups answered with each group's latest state and the largest
/// revision: a group that was behind takes its next writes at revisions at or below the
/// read's, and the scans' check (every key as it was at the read's revision, judged against
/// every acknowledged put) sees a key older than a put the read's revision covers.
#[test]
fn planted_unaligned_read_over_groups_is_caught() {
    let mut cfg = splitting(0);
    cfg.compactions = true;
    cfg.planted_bug = Some(PlantedBug::PartitionSpanReadUnaligned);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
    assert_caught_by(&r, "scan:");
}

/// A merge that joins the absorbed group's history one revision late: a watch resumed from
/// before the merge would see the absorbed keys' events at revisions that are not theirs. The
/// history check sees an event whose revision is not its slot's.
#[test]
fn planted_merge_history_shifted_is_caught() {
    let mut cfg = splitting(0);
    cfg.planted_bug = Some(PlantedBug::PartitionMergeHistoryShifted);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
    assert_caught_by(&r, "history:");
}

/// A revision close that moves the revision without the empty history slots: every event the
/// group's history held before it seems to sit at a later revision. The history check (every
/// group, once the run converged — it converges only once every group closed the others'
/// revisions) sees an event whose revision is not its slot's.
#[test]
fn planted_close_without_history_slots_is_caught() {
    let mut cfg = partitioned(0);
    cfg.planted_bug = Some(PlantedBug::PartitionCloseWithoutSlots);
    let r = assert_caught::<Partitioned<VrEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
    assert_caught_by(&r, "history:");
}

#[test]
fn planted_frozen_group_that_keeps_applying_is_caught() {
    let mut cfg = splitting(0);
    cfg.planted_bug = Some(PlantedBug::PartitionMergeFrozenServes);
    assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
}

#[test]
fn planted_absorb_that_drops_the_client_table_is_caught() {
    let mut cfg = splitting(0);
    cfg.planted_bug = Some(PlantedBug::PartitionMergeDropsSessions);
    assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
}

#[test]
fn converged_groups_agree_and_hash_alike() {
    let r = run_seed::<Partitioned<OmniPaxosEngine>>(&RunConfig {
        seed: 3,
        ..partitioned(0)
    });
    assert!(r.passed(), "{:?}", r.failures);
    assert!(r.agreement_checked, "per-group digests were compared");
    assert!(
        r.hash_kv_checked,
        "the groups' combined HashKV was compared"
    );
}

#[test]
fn planted_boundary_misroute_is_caught() {
    let mut cfg = partitioned(0);
    cfg.planted_bug = Some(PlantedBug::PartitionBoundaryMisroute);
    assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
}

#[test]
fn planted_checkpoint_that_skips_groups_is_caught() {
    let mut cfg = partitioned(10);
    cfg.planted_bug = Some(PlantedBug::PartitionCheckpointSkipsGroups);
    assert_caught::<Partitioned<VrEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
}

/// Regression (found at VR seed 81,343 of 1,000): a member that missed a write's answer (it
/// installed a snapshot that covered it) still had the write pending when its group froze and
/// was absorbed; it answered "wrong group" — definitely not applied — for a write that was
/// applied before the freeze. The saved reply is the answer now. Since leaders are planned on
/// unplaced clusters too (2026-12-07) the two seeds that found it (81,343 and 81,398) no
/// longer merge — the timing of hand-offs changed — and no seed is known to reach the same
/// interleaving again: what is left is a sweep of the hundred seeds from the first, each
/// passing, with merges under way (freezes racing pending writes).
#[test]
fn a_write_applied_before_a_freeze_is_never_answered_as_refused() {
    let sum = assert_all_pass::<Partitioned<VrEngine>>(&splitting(10), 81_343..81_443);
    assert!(sum.merges_done > 20, "{} merges", sum.merges_done);
}

/// The engines' own layout changes: a group over 1 key or 4 writes a second splits itself, two
/// quiet ranges of at most 1 key together merge back — racing every fault, with no operator.
fn auto_layout() -> RunConfig {
    let mut cfg = partitioned(10);
    cfg.split_keys = default_split_keys(cfg.keys, 2);
    cfg.auto_layout = true;
    cfg
}

#[test]
fn automatic_splits_and_merges_lose_nothing() {
    let n = seed_count(SEEDS_DEFAULT / 3);
    let a = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&auto_layout(), 97_000..97_000 + n);
    let b = assert_all_pass::<Partitioned<VrEngine>>(&auto_layout(), 98_000..98_000 + n);
    assert_eq!(
        a.splits_done + b.splits_done,
        0,
        "no operator in these runs"
    );
    assert!(
        a.groups_created > n && b.groups_created > n,
        "the engines split ranges themselves: {} and {} groups created",
        a.groups_created,
        b.groups_created
    );
    assert!(
        a.groups_retired > 0 && b.groups_retired > 0,
        "and merged some back: {} and {} groups retired",
        a.groups_retired,
        b.groups_retired
    );
}

/// The same with no splits by size: the writes and reads alone split ranges (a group over 4
/// writes or 4 reads a second for 5 s, where they divide in half).
#[test]
fn splits_by_load_alone_lose_nothing() {
    let n = seed_count(SEEDS_DEFAULT / 6);
    let by_load = RunConfig {
        auto_by_load: true,
        ..auto_layout()
    };
    let a = assert_all_pass::<Partitioned<OmniPaxosEngine>>(&by_load, 99_000..99_000 + n);
    let b = assert_all_pass::<Partitioned<VrEngine>>(&by_load, 99_500..99_500 + n);
    assert!(
        a.groups_created > 0 && b.groups_created > 0,
        "load split ranges: {} and {} groups created",
        a.groups_created,
        b.groups_created
    );
}

/// Found by the automatic layout runs (1 of 3,000 seeds): two leaders of the group below a
/// frozen range each proposed its absorb; the first took the range in, the group split again
/// at the same boundary, and the second absorb — still valid by range — brought back the keys'
/// values from before the merge beside the new group that owned them (a put lost). A group
/// refuses to absorb a group it absorbed before now.
#[test]
fn a_range_is_never_absorbed_twice() {
    // The seed that found it; since revision closes its schedule merges nothing, so the seeds
    // after it stand in (each must pass, and some must merge).
    let mut merged = 0;
    for seed in 97_925..97_945 {
        let r = run_seed::<Partitioned<OmniPaxosEngine>>(&RunConfig {
            seed,
            ..auto_layout()
        });
        assert!(r.passed(), "seed {seed}: {:?}", r.failures);
        merged += usize::from(r.groups_seen > r.groups_at_end);
    }
    assert!(merged > 0, "no seed merged a range");
}

/// Lease clients on a partitioned cluster whose lease keys (`l/<id>/…`, ids `c·1,000,000 + n`
/// for lease client `c` of 1–4) fall into three groups of their own, beside the register keys'
/// groups: every lease is granted, renewed and revoked
/// in every group, and the lease checker finds no key gone before an acknowledged keep-alive's
/// TTL and every abandoned lease gone at the end.
fn with_leases(mut cfg: RunConfig) -> RunConfig {
    cfg.split_keys.extend([b"l/2".to_vec(), b"l/4".to_vec()]);
    cfg.leases = 4;
    cfg
}

#[test]
fn leases_across_groups_hold_through_every_fault() {
    let n = seed_count(SEEDS_DEFAULT / 3);
    let omni = assert_all_pass::<Partitioned<OmniPaxosEngine>>(
        &with_leases(partitioned(10)),
        72_000..72_000 + n,
    );
    let vr =
        assert_all_pass::<Partitioned<VrEngine>>(&with_leases(partitioned(10)), 82_000..82_000 + n);
    assert_leases_judged(&omni);
    assert_leases_judged(&vr);
}

/// The same while the layout changes under the leases: the operator's splits and merges, and
/// the engines' own (which cut the lease keys' ranges too), so grants, keep-alives and revokes
/// race groups being split off and absorbed.
#[test]
fn leases_hold_while_ranges_split_and_merge() {
    let n = seed_count(SEEDS_DEFAULT / 6);
    let splits = assert_all_pass::<Partitioned<OmniPaxosEngine>>(
        &with_leases(splitting(10)),
        73_000..73_000 + n,
    );
    let auto =
        assert_all_pass::<Partitioned<VrEngine>>(&with_leases(auto_layout()), 83_000..83_000 + n);
    assert_leases_judged(&splits);
    assert_leases_judged(&auto);
    assert!(splits.seeds_run == 0 || splits.splits_done > 0);
    assert!(auto.seeds_run == 0 || auto.groups_created > 0);
}

/// A merge that keeps a lease the absorbed group had ended: the absorbing group's copy lives
/// on (its new leader had extended it), so a keep-alive after the merge succeeds although the
/// lease's keys in the absorbed range are gone — what the lease checker calls an early expiry.
/// Seed 73,374 is where the 1,000-seed sweep of the test above first met it (2026-12-04, the
/// bug real then). Random schedules reach it rarely, so the search starts at a seed known to
/// catch it — 73,147 since the closes come every tick (2026-12-05), 74,586 since checkpoints
/// count the entries of all of a member's groups (2026-12-07: the first seed from 73,000 that
/// catches it; a change to the simulator or the engines may move it: search again from there)
/// — and a directed partition test (`partition/src/tests/leases.rs`) catches it on every run.
#[test]
fn planted_merge_keeping_an_ended_lease_is_caught() {
    early_expiry_in_lease_runs_from(PlantedBug::PartitionMergeKeepsEndedLease, 74_586);
}

/// A planted bug of leases through splits and merges (OmniPaxos, the operator's splits) is
/// caught as an early expiry within 1,000 seeds of the lease runs from seed `first`.
fn early_expiry_in_lease_runs_from(bug: PlantedBug, first: u64) {
    let mut cfg = with_leases(splitting(10));
    cfg.planted_bug = Some(bug);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, first..first + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "lease: early expiry");
}

/// A split that hands its parent's lease clocks to the new group without rebasing them on
/// the new replica's own tick count: the new group's leases run on for about as long as the
/// parent had lived, and the lease checker's liveness bound (gone by TTL + a margin after the
/// cluster settled) catches an abandoned lease whose keys went to a split-off group.
#[test]
fn planted_split_lease_clocks_unrebased_is_caught() {
    let mut cfg = with_leases(auto_layout());
    cfg.planted_bug = Some(PlantedBug::PartitionSplitLeaseClocksUnrebased);
    let r = assert_caught::<Partitioned<VrEngine>>(&cfg, 83_000..83_000 + PLANT_SEEDS_MAX);
    assert_caught_by(&r, "lease: liveness");
}

/// A keep-alive that counts answers no longer speaking for the lease: the first group's
/// client table answering a retry with the first attempt's "renewed", or a group's answer from
/// before it absorbed a group whose copy had ended. Found by seed 73,475 of the lease runs
/// (2026-12-05, a retry at another member after a merge); searched from there — from 75,264
/// since checkpoints count the entries of all of a member's groups (2026-12-07: the first seed
/// from 73,000 that catches it).
#[test]
fn planted_keep_alive_counting_an_outgrown_answer_is_caught() {
    early_expiry_in_lease_runs_from(PlantedBug::PartitionKeepAliveOutgrownAnswer, 75_264);
}

#[test]
fn planted_keep_alive_of_one_group_is_caught() {
    let mut cfg = with_leases(partitioned(10));
    cfg.planted_bug = Some(PlantedBug::PartitionLeaseRenewsOneGroup);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
    assert_caught_by(&r, "lease: early expiry");
}

/// The engine's pool of threads (`engine_threads`) changes where groups are worked on, never
/// what a replica emits: the same seeds — splits and merges, storage faults, leases — give the
/// same trace (every event's outputs and the replicas' applied state) with 3 threads as with
/// one, and pass.
#[test]
fn a_pool_of_engine_threads_changes_nothing_a_replica_emits() {
    let n = seed_count(SEEDS_DEFAULT / 30).max(2);
    let mut storage = with_leases(splitting(10));
    storage.faults = synod_sim::FaultSet::parse("all,storage").expect("valid fault list");
    for (base, template) in [(74_000, storage), (84_000, auto_layout())] {
        for seed in base..base + n {
            let mut cfg = template.clone();
            cfg.seed = seed;
            let one = run_seed::<Partitioned<OmniPaxosEngine>>(&cfg);
            let vr_one = run_seed::<Partitioned<VrEngine>>(&cfg);
            cfg.engine_threads = 3;
            let pooled = run_seed::<Partitioned<OmniPaxosEngine>>(&cfg);
            let vr_pooled = run_seed::<Partitioned<VrEngine>>(&cfg);
            for (a, b) in [(one, pooled), (vr_one, vr_pooled)] {
                assert!(a.failures.is_empty(), "seed {seed}: {:?}", a.failures);
                assert!(
                    b.failures.is_empty(),
                    "seed {seed} pooled: {:?}",
                    b.failures
                );
                assert!(a.events > 0 && a.ops_ok > 0, "seed {seed} ran nothing");
                assert_eq!(
                    (a.trace_hash, a.events, a.ops_ok, a.messages),
                    (b.trace_hash, b.events, b.ops_ok, b.messages),
                    "seed {seed} ({}): the pooled run differs",
                    a.engine
                );
            }
        }
    }
}

/// Membership change on a partitioned cluster: the operator's plans (replace a member, replace
/// the leader, grow by two, grow and shrink, add a voter directly) run against the first
/// group while every fault goes on, and every other group's leader brings its group to the
/// first group's members (`partition/members.rs`). The runs converge only once every group on
/// every member has the cluster's voters and learners.
fn reconfiguring() -> RunConfig {
    let mut cfg = synod_sim::sweep::reconfig_config(3);
    cfg.split_keys = default_split_keys(cfg.keys, SIM_GROUPS);
    cfg.snapshot_entries = 10;
    cfg
}

#[test]
fn membership_changes_reach_every_group() {
    let n = seed_count(SEEDS_DEFAULT / 2);
    assert_reconfig_pass::<Partitioned<OmniPaxosEngine>>(&reconfiguring(), 75_000..75_000 + n);
    assert_reconfig_pass::<Partitioned<VrEngine>>(&reconfiguring(), 85_000..85_000 + n);
}

/// Membership changes while an operator splits and merges ranges: a member being added is a
/// learner of the groups when they split, and must host the new groups too (it once did not:
/// its first record of a new group was a voter's, which did not recover — 8 % of these seeds
/// never converged, 2026-12-05).
fn reconfiguring_while_splitting() -> RunConfig {
    let mut cfg = reconfiguring();
    cfg.split_keys = default_split_keys(cfg.keys, 2);
    cfg.splits = true;
    cfg
}

#[test]
fn membership_changes_reach_every_group_while_ranges_split_and_merge() {
    let n = seed_count(SEEDS_DEFAULT / 3);
    let cfg = reconfiguring_while_splitting();
    let omni = assert_reconfig_pass::<Partitioned<OmniPaxosEngine>>(&cfg, 128_000..128_000 + n);
    let vr = assert_reconfig_pass::<Partitioned<VrEngine>>(&cfg, 129_000..129_000 + n);
    for sum in [omni, vr] {
        assert!(sum.splits_done >= n, "splits happened: {}", sum.splits_done);
    }
}

#[test]
fn planted_split_learner_starting_as_a_voter_is_caught() {
    let mut cfg = reconfiguring_while_splitting();
    cfg.planted_bug = Some(PlantedBug::PartitionSplitLearnerAsVoter);
    let r = assert_caught::<Partitioned<VrEngine>>(&cfg, 128_000..128_000 + PLANT_SEEDS_MAX);
    // The learner's recovery of the voter's record fails: the member reports the group it
    // could not start, and the run fails on that report at once (not only, much later, by
    // never converging).
    assert_caught_by(&r, "group start");
}

#[test]
fn planted_groups_that_keep_removed_members_are_caught() {
    let mut cfg = reconfiguring();
    cfg.planted_bug = Some(PlantedBug::PartitionGroupsKeepRemovedMembers);
    let r = assert_caught::<Partitioned<OmniPaxosEngine>>(&cfg, 0..PLANT_SEEDS_MAX);
    assert_caught_by(&r, "convergence");
}
