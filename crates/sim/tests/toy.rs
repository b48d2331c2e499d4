//! The simulator tested against its own fixed-sequencer toy engine: determinism (same seed ⇒
//! same trace hash), clean runs under every fault, and planted bugs caught.

use synod_core::PlantedBug;
use synod_sim::toy::Toy;
use synod_sim::{FaultSet, RunConfig, SimOptions, run_many, run_seed};

/// Seeds per test: scales with `SYNOD_SIM_SEEDS` (default keeps the suite fast on 2 cores).
fn seeds(default: u64) -> u64 {
    std::env::var("SYNOD_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(default, |n| n.max(1))
}

#[test]
fn same_seed_same_trace_hash_and_different_seed_differs() {
    let a = run_seed::<Toy>(&RunConfig::new(42, 3));
    let b = run_seed::<Toy>(&RunConfig::new(42, 3));
    let c = run_seed::<Toy>(&RunConfig::new(43, 3));
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    assert_eq!(a.ops_ok, b.ops_ok);
    assert_ne!(a.trace_hash, c.trace_hash);
}

#[test]
fn toy_passes_without_faults() {
    let mut cfg = RunConfig::new(1, 3);
    cfg.faults = FaultSet::NONE;
    let r = run_seed::<Toy>(&cfg);
    assert!(r.passed(), "{}", r.report());
    assert_eq!(r.ops_unknown, 0);
    assert!(r.ops_ok >= 150, "only {} ops completed", r.ops_ok);
}

#[test]
fn toy_passes_all_faults_on_3_and_5_nodes() {
    for nodes in [3, 5] {
        let opts = SimOptions {
            engine: "toy".into(),
            nodes,
            seeds: 0..seeds(40),
            ..Default::default()
        };
        let sum = run_many(&opts).expect("toy engine exists");
        assert!(sum.passed(), "{}\n{}", sum.totals(), sum.reports.join("\n"));
        assert!(sum.ops_ok > 0);
        println!("toy {nodes} nodes: {}", sum.totals());
    }
}

/// Runs seeds `0..limit` with `bug` planted until one fails; returns the failing result.
fn first_failure(
    bug: PlantedBug,
    faults: FaultSet,
    nodes: usize,
    limit: u64,
) -> Option<synod_sim::RunResult> {
    (0..limit).find_map(|seed| {
        let mut cfg = RunConfig::new(seed, nodes);
        cfg.faults = faults;
        cfg.planted_bug = Some(bug);
        let r = run_seed::<Toy>(&cfg);
        (!r.passed()).then_some(r)
    })
}

#[test]
fn stale_linearizable_read_is_caught_by_the_checker() {
    let r = first_failure(
        PlantedBug::StaleLinearizableRead,
        FaultSet::parse("partition,loss").unwrap(),
        3,
        50,
    )
    .expect("stale reads from followers not caught in 50 seeds");
    assert!(
        r.failures.iter().any(|f| f.contains("NOT linearizable")),
        "{}",
        r.report()
    );
    // The report is readable and replayable.
    let text = r.report();
    assert!(text.contains(&format!("seed {}", r.seed)) && text.contains("last "));
    assert!(!r.trace_tail.is_empty());
    println!("caught at seed {}:\n{}", r.seed, text);
}

#[test]
fn ack_before_fsync_is_caught_with_machine_crashes() {
    let r = first_failure(
        PlantedBug::AckBeforeFsync,
        FaultSet::parse("crash,power-loss,torn-writes").unwrap(),
        3,
        100,
    )
    .expect("ack-before-fsync not caught in 100 seeds");
    assert!(
        r.failures
            .iter()
            .any(|f| f.contains("agreement") || f.contains("NOT linearizable")),
        "{}",
        r.report()
    );
}

#[test]
fn ack_before_fsync_is_harmless_without_lost_writes() {
    // Process crashes keep the page cache, so the same plant must pass: the failure above is
    // the disk model's doing, not noise.
    let mut cfg = RunConfig::new(7, 3);
    cfg.faults = FaultSet::parse("crash").unwrap();
    cfg.planted_bug = Some(PlantedBug::AckBeforeFsync);
    for seed in 0..seeds(10) {
        cfg.seed = seed;
        let r = run_seed::<Toy>(&cfg);
        assert!(r.passed(), "{}", r.report());
    }
}

#[test]
fn cli_runs_seeds_and_rejects_bad_arguments() {
    let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        synod_sim::run_cli(&args("--engine toy --nodes 3 --seeds 0..3 --faults all")),
        0
    );
    assert_eq!(
        synod_sim::run_cli(&args(
            "--engine toy --seeds 5 --faults partition --planted-bug stale-linearizable-read --stop-on-failure"
        )),
        1
    );
    assert_eq!(synod_sim::run_cli(&args("--engine nope")), 2);
    assert_eq!(synod_sim::run_cli(&args("--faults meteor")), 2);
    assert_eq!(synod_sim::run_cli(&args("--seeds 5..5")), 2);
    let parsed = synod_sim::parse_args(&args("--seeds 10..20 --nodes 5 --ops 7")).unwrap();
    assert_eq!(parsed.opts.seeds, 10..20);
    assert_eq!((parsed.opts.nodes, parsed.opts.ops_per_client), (5, 7));
}

#[test]
fn partial_connectivity_scenarios_run_on_the_toy() {
    // The toy has no elections: cutting its sequencer off (constrained election) stops it,
    // while quorum-loss with the sequencer as a non-hub also stops it. The point here is that
    // the scenarios run, stay safe, and the downtime measure sees the outage.
    let rows = synod_sim::partial_connectivity("toy", 5).unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert!(r.failed_seeds.is_empty(), "{:?}", r);
    }
    let constrained = &rows[1];
    assert!(
        constrained.max_downtime_ets >= 45.0,
        "sequencer cut off must mean no progress: {constrained:?}"
    );
    println!(
        "{}",
        synod_sim::partial_connectivity_report("toy", 5).unwrap()
    );
}

/// The "rerun:" line of a run names every setting `synod sim` has a flag for, so parsing it
/// back gives the very same run configuration (it once omitted --faults and
/// --snapshot-entries, and replayed a different run; --watchers, --directory and --replicas are there too).
#[test]
fn the_rerun_line_parses_back_to_the_same_run() {
    let mut cfg = RunConfig::new(7, 5);
    cfg.faults = FaultSet::parse("crash,loss").expect("a valid fault list");
    cfg.clients = 3;
    cfg.ops_per_client = 7;
    cfg.keys = 9;
    cfg.fault_window_us = 8_000_000;
    cfg.snapshot_entries = 5;
    cfg.watchers = 2;
    cfg.range_directory = true;
    cfg.partition_replicas = 3;
    cfg.planted_bug = Some(PlantedBug::AckBeforeMajority);
    let r = run_seed::<Toy>(&cfg);
    let line = r.rerun.clone().expect("every setting here has a flag");
    assert!(r.report().contains(&line));
    let args: Vec<String> = line
        .strip_prefix("synod sim ")
        .expect("a synod sim command")
        .split_whitespace()
        .map(String::from)
        .collect();
    let parsed = synod_sim::parse_args(&args).expect("the rerun line parses");
    assert_eq!(parsed.opts.seeds, 7..8);
    assert_eq!(
        format!("{:?}", parsed.opts.run_config(7)),
        format!("{cfg:?}")
    );
}

/// Settings without a flag (a fixed schedule) give no command line rather than a wrong one.
#[test]
fn a_run_without_flags_for_its_settings_has_no_rerun_line() {
    let mut cfg = RunConfig::new(7, 3);
    cfg.fixed_schedule = Some(Vec::new());
    assert_eq!(run_seed::<Toy>(&cfg).rerun, None);
}
