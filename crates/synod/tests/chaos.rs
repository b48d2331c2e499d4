//! `synod chaos` end to end: short chaos runs of real `synod server` processes per engine
//! (crashes, pauses, partitions, partial connectivity) must check linearizable and leave their
//! chart and history; a planted stale-read bug must be caught; and no run may leave a process or
//! a port behind. The runs are serialised (one cluster at a time) because the machine is small
//! and timing is part of what they exercise.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use synod_chaos::{ChaosArgs, EXIT_LINEARIZABLE, EXIT_VIOLATION};

/// One chaos cluster at a time.
static SERIAL: Mutex<()> = Mutex::new(());
/// How long a finished run's processes may take to disappear from /proc.
const GONE_DEADLINE_MS: u64 = 5_000;

fn out_dir(name: &str) -> PathBuf {
    let base = std::env::temp_dir().join(format!("synod-chaos-test-{}", std::process::id()));
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn chaos(flags: &[&str], out: &Path) -> i32 {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut all: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    all.push("--out".into());
    all.push(out.display().to_string());
    let args = ChaosArgs::parse_from(&all).expect("valid chaos flags");
    let code = synod_chaos::run(args, Path::new(env!("CARGO_BIN_EXE_synod")));
    assert_nothing_left(out);
    code
}

/// Passed runs clean up after themselves unless `SYNOD_CHAOS_KEEP` is set (to look at a chart).
fn clean(out: &Path) {
    if std::env::var_os("SYNOD_CHAOS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(out);
    }
}

fn summary(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

/// No process whose command line names the run's directory, and every port it used is free.
fn assert_nothing_left(out: &Path) {
    let needle = out.canonicalize().unwrap_or_else(|_| out.to_path_buf());
    let needle = needle.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_millis(GONE_DEADLINE_MS);
    loop {
        let left = processes_mentioning(&needle);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let Ok(text) = std::fs::read_to_string(out.join("summary.json")) else {
        return; // a setup error before any port was taken
    };
    let s: Value = serde_json::from_str(&text).expect("summary.json is JSON");
    let ports = s["ports"].as_array().expect("ports listed");
    assert!(!ports.is_empty());
    for p in ports {
        let p = p.as_u64().expect("a port number") as u16;
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} still in use after the run"
        );
    }
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                v.push(format!("{}: {cmd}", name.to_string_lossy()));
            }
        }
    }
    v
}

/// `SYNOD_CHAOS_SEED` and `SYNOD_CHAOS_DURATION` override the CI defaults (to hunt with other
/// seeds or run longer through the same assertions).
fn assert_passes(engine: &str, seed: &str) {
    let out = out_dir(engine);
    let (report, s) = run_checked(engine, seed, "45s", "all", &[], &out);
    for f in [
        "history.json",
        "availability.svg",
        "availability.json",
        "schedule.json",
        "n1.log",
    ] {
        assert!(out.join(f).is_file(), "{f} missing in {}", out.display());
    }
    // The schedule really injected faults of each family.
    let kinds = s["by_kind"].as_object().expect("by_kind");
    assert!(kinds.len() >= 3, "fault kinds injected: {kinds:?}");
    assert_watchers_held(engine, &s, &report);
    clean(&out);
}

/// One run with `faults` and `extra` flags; asserts its verdict is linearizable and that it
/// did real work, and returns its report and summary. The seed and duration defaults give way
/// to `SYNOD_CHAOS_SEED` and `SYNOD_CHAOS_DURATION`.
fn run_checked(
    engine: &str,
    seed: &str,
    duration: &str,
    faults: &str,
    extra: &[&str],
    out: &Path,
) -> (String, Value) {
    let seed = std::env::var("SYNOD_CHAOS_SEED").unwrap_or_else(|_| seed.to_string());
    let duration = std::env::var("SYNOD_CHAOS_DURATION").unwrap_or_else(|_| duration.into());
    let mut flags = vec![
        "--engine",
        engine,
        "--duration",
        &duration,
        "--seed",
        &seed,
        "--faults",
        faults,
    ];
    flags.extend_from_slice(extra);
    let code = chaos(&flags, out);
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap_or_default();
    assert_eq!(
        code, EXIT_LINEARIZABLE,
        "{engine} {faults} {extra:?} chaos run failed:\n{report}"
    );
    let s = summary(out);
    assert!(
        s["ops_ok"].as_u64().unwrap_or(0) > 100,
        "too few successful ops: {s}"
    );
    (report, s)
}

/// The watch streams kept on every member (engines with revisions) passed the watch checker,
/// saw most of the run, and were resumed elsewhere when a crash or pause took their member.
fn assert_watchers_held(engine: &str, s: &Value, report: &str) {
    let w = &s["watch"];
    if engine == "caspaxos" {
        assert!(w.is_null(), "caspaxos has no watch: {w}");
        return;
    }
    assert_eq!(w["passed"], true, "watch verdict failed:\n{report}");
    assert_eq!(w["whole_keyspace"], 3, "{w}");
    let n = |f: &str| w[f].as_u64().unwrap_or(0);
    // Every acknowledged write is a revision each whole-keyspace watcher delivered.
    assert!(n("writes_checked") > 50, "{w}");
    assert!(n("deliveries") > 3 * n("writes_checked"), "{w}");
    let kinds = s["by_kind"].as_object().expect("by_kind");
    if kinds.contains_key("crash") || kinds.contains_key("pause") {
        assert!(
            n("resumes") >= 1,
            "a member went away but no watcher resumed: {w}"
        );
    }
}

#[test]
fn omnipaxos_chaos_run_is_linearizable() {
    assert_passes("omnipaxos", "11");
}

#[test]
fn vr_chaos_run_is_linearizable() {
    assert_passes("vr", "11");
}

#[test]
fn caspaxos_chaos_run_is_linearizable() {
    assert_passes("caspaxos", "11");
}

/// Four consensus groups (`--groups 4`: the split keys are workload keys, so boundaries are
/// exercised) under every fault, two ranges split at run time and one merged back while the
/// faults go on, lock clients writing their fenced register (the lock's keys and the
/// register lie in the first group; their leases span every group), and a watcher of every
/// key on every member (revisions are per group, so each key is its own reference), following
/// its key through the split and the merge, and a watcher of every key at once on every member
/// (keys of several groups: one merged stream, checked against the keys' references merged).
#[test]
fn partitioned_chaos_run_is_linearizable() {
    let out = out_dir("groups");
    let flags = ["--groups", "4", "--locks", "3"];
    let (report, s) = run_checked("omnipaxos", "11", "30s", "all", &flags, &out);
    let w = &s["watch"];
    assert_eq!(w["passed"], true, "watch verdict failed:\n{report}");
    assert_eq!(
        (&w["per_key"], &w["watchers"]),
        (&json!(true), &json!(18)),
        "{w}"
    );
    let n = |f: &str| w[f].as_u64().unwrap_or(0);
    assert!(n("writes_checked") > 50, "{w}");
    assert!(n("deliveries") > 2 * n("writes_checked"), "{w}");
    assert_eq!(s["locks"]["safe"], true, "{report}");
    assert!(
        s["locks"]["acquisitions"].as_u64() >= Some(1),
        "the lock was taken:\n{report}"
    );
    // Two ranges split while the faults ran (k0 and k4: the keys no range began at), then
    // the first merged back.
    let splits = s["splits"].as_array().expect("split records");
    let ops: Vec<&str> = splits.iter().filter_map(|r| r["op"].as_str()).collect();
    assert_eq!(ops, ["split", "split", "merge"], "{report}");
    assert!(
        splits.iter().all(|r| r["done_ms"].is_u64()),
        "every split and merge took effect:\n{report}"
    );
    clean(&out);
}

/// The engines' own layout changes under every fault: no operator, but a load threshold low
/// enough (5 writes a second) that the groups split themselves by load while the faults go on.
#[test]
fn partitioned_chaos_with_load_splits_is_linearizable() {
    let out = out_dir("groups-load");
    let args = [
        "--groups",
        "4",
        "--keys",
        "8",
        "--splits",
        "0",
        "--merges",
        "0",
        "--auto-split-writes",
        "5",
        "--directory",
    ];
    let (report, s) = run_checked("vr", "12", "30s", "all", &args, &out);
    let ranges = s["ranges_at_end"].as_array().expect("ranges at the end");
    assert!(
        ranges.len() > 4,
        "the groups split themselves by load:\n{report}"
    );
    // The range directory recorded every split the engines made, on every member.
    let d = &s["directory"];
    assert_eq!(d["converged"], true, "{report}");
    assert_eq!(d["members"], 3, "{report}");
    let recorded: Vec<&Value> = d["ranges"]
        .as_array()
        .expect("recorded ranges")
        .iter()
        .map(|r| &r[0])
        .collect();
    assert_eq!(recorded, ranges.iter().collect::<Vec<_>>(), "{report}");
    // And during the run, no key's owner went back in any member's copy.
    let order = &d["order"];
    assert!(order["compared"].as_u64() > Some(0), "{report}");
    assert_eq!(order["violations"], serde_json::json!([]), "{report}");
    assert_eq!(s["splits"], serde_json::json!([]), "no operator: {report}");
    clean(&out);
}

/// Placement under real faults: 5 members, 4 groups, each after the first on 3 of them; most
/// requests are relayed to a member hosting their group while members crash, pause and are
/// cut off. Linearizable, every member's directory records the 4 ranges with their hosts, the
/// watchers of every key on every member (most of them reading groups hosted elsewhere through
/// remote hubs) pass the watch verdict, and the lock clients' fenced register stays safe.
/// Three range moves run among the faults; at the end every placed group is whole (3 voters,
/// no learner) and no move is left recorded unfinished in the directory.
#[test]
fn placed_chaos_run_is_linearizable() {
    let out = out_dir("placed");
    let args = [
        "--nodes",
        "5",
        "--groups",
        "4",
        "--keys",
        "5",
        "--replicas",
        "3",
        "--directory",
        "--locks",
        "3",
        "--moves",
        "3",
    ];
    let (report, s) = run_checked("omnipaxos", "2027", "30s", "all", &args, &out);
    let moves = s["splits"].as_array().expect("the moves' records");
    assert_eq!(moves.len(), 3, "{report}");
    assert!(
        moves.iter().all(|m| m["op"] == "move") && moves.iter().any(|m| !m["done_ms"].is_null()),
        "a move took effect: {report}"
    );
    let d = &s["directory"];
    assert_eq!(d["converged"], true, "{report}");
    assert_eq!(d["members"], 5, "{report}");
    let ranges = s["ranges_at_end"].as_array().expect("ranges at the end");
    assert_eq!(ranges.len(), 4, "{report}");
    // Every member watches every key, most of them in groups it does not host (remote hubs).
    let w = &s["watch"];
    assert_eq!(w["passed"], true, "watch verdict failed:\n{report}");
    assert_eq!(w["watchers"], json!(30), "{w}");
    assert!(w["writes_checked"].as_u64().unwrap_or(0) > 50, "{w}");
    assert_eq!(s["locks"]["safe"], true, "{report}");
    clean(&out);
}

/// Placed groups that split (VR): 5 members, 3 groups each after the first on 3 of them, 3
/// splits of ranges past the first during the faults — the split asked at a member that may
/// host neither half (relayed), members that do not host the parent learning the new group from
/// their relays' answers and the directory, watchers on every member following their keys
/// through remote hubs. Linearizable, the watch verdict and the locks hold, every member's
/// directory records the 6 ranges.
#[test]
fn placed_chaos_with_splits_is_linearizable() {
    let out = out_dir("placed-splits");
    let args = [
        "--nodes",
        "5",
        "--groups",
        "3",
        "--keys",
        "8",
        "--replicas",
        "3",
        "--directory",
        "--locks",
        "3",
        "--splits",
        "3",
    ];
    let (report, s) = run_checked("vr", "2026", "30s", "all", &args, &out);
    let splits = s["splits"].as_array().expect("the splits' records");
    assert_eq!(splits.len(), 3, "{report}");
    assert!(
        splits
            .iter()
            .all(|r| r["op"] == "split" && !r["done_ms"].is_null()),
        "every split took effect: {report}"
    );
    let d = &s["directory"];
    assert_eq!(d["converged"], true, "{report}");
    let ranges = s["ranges_at_end"].as_array().expect("ranges at the end");
    assert_eq!(ranges.len(), 6, "{report}");
    assert_eq!(
        s["watch"]["passed"], true,
        "watch verdict failed:\n{report}"
    );
    assert_eq!(s["locks"]["safe"], true, "{report}");
    clean(&out);
}

/// The planted `partition-split-never-recorded` (a split-off group's leader never records its
/// range in the directory) fails the run on the directory check: no fault is needed, and the
/// history itself stays linearizable.
#[test]
fn planted_split_never_recorded_fails_the_directory_check() {
    let out = out_dir("directory-bug");
    let flags = [
        "--engine",
        "omnipaxos",
        "--duration",
        "8s",
        "--seed",
        "3",
        "--faults",
        "none",
        "--groups",
        "2",
        "--keys",
        "4",
        "--splits",
        "1",
        "--merges",
        "0",
        "--directory",
        "--plant-bug",
        "partition-split-never-recorded",
    ];
    let code = chaos(&flags, &out);
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap_or_default();
    assert_eq!(code, EXIT_VIOLATION, "{report}");
    assert!(report.contains("LINEARIZABLE") && !report.contains("NOT LINEARIZABLE"));
    assert!(report.contains("directory: FAILED"), "{report}");
    let s = summary(&out);
    assert_eq!(s["directory"]["converged"], false, "{s}");
    assert!(
        s["splits"][0]["done_ms"].is_u64(),
        "the split took effect:\n{report}"
    );
    clean(&out);
}

/// The cluster is back to three members at the end, at least one of them added during the run.
fn assert_three_with_a_newcomer(s: &Value, report: &str) {
    let end: Vec<u64> = s["members_at_end"]
        .as_array()
        .expect("members_at_end")
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert_eq!(end.len(), 3, "{report}");
    assert!(
        end.iter().any(|&id| id > 3),
        "members at the end {end:?}:\n{report}"
    );
}

/// Membership changes as faults (`--faults reconfig`): members replaced (the leader too, on
/// some seeds), a member's data directory wiped (it must rejoin by itself under a new id), and
/// the cluster grown by two and shrunk back while clients and watchers run.
/// The history and the watchers must pass, and the changes must really have happened.
fn assert_reconfig_passes(engine: &str, faults: &str, seed: &str) {
    let out = out_dir(&format!("reconfig-{engine}"));
    let (report, s) = run_checked(engine, seed, "40s", faults, &[], &out);
    assert!(
        s["by_kind"].get("reconfig").is_some(),
        "no reconfig fault ran: {s}"
    );
    assert_eq!(s["warnings"], serde_json::json!([]), "{report}");
    // Every replacement and resize completed: a replaced member's id is gone for good, the
    // cluster is back to three members, and at least one of them joined during the run.
    assert!(
        report.contains(" by n"),
        "no member was replaced:\n{report}"
    );
    assert!(
        report.contains("resize: grow by n"),
        "no resize ran:\n{report}"
    );
    assert_three_with_a_newcomer(&s, &report);
    assert_watchers_held(engine, &s, &report);
    clean(&out);
}

/// Membership changes on a partitioned cluster (4 groups, ranges splitting and merging too):
/// a resize, a wipe and replacements, each reaching every group (no watchers: chaos's watch the
/// whole keyspace, which a partitioned cluster refuses).
#[test]
fn partitioned_reconfig_chaos_run_is_linearizable() {
    let out = out_dir("reconfig-groups");
    let (report, s) = run_checked(
        "omnipaxos",
        "11",
        "40s",
        "reconfig",
        &["--groups", "4"],
        &out,
    );
    assert!(s["by_kind"].get("reconfig").is_some(), "{report}");
    assert_eq!(s["warnings"], serde_json::json!([]), "{report}");
    for what in [" by n", "resize: grow by n", "rejoined by itself as n"] {
        assert!(report.contains(what), "no {what:?}:\n{report}");
    }
    assert_three_with_a_newcomer(&s, &report);
    let splits = s["splits"].as_array().expect("split records");
    assert!(
        !splits.is_empty() && splits.iter().all(|r| r["done_ms"].is_u64()),
        "every split and merge took effect:\n{report}"
    );
    clean(&out);
}

#[test]
fn omnipaxos_reconfig_chaos_run_is_linearizable() {
    assert_reconfig_passes("omnipaxos", "reconfig", "11");
}

#[test]
fn caspaxos_reconfig_chaos_run_is_linearizable() {
    assert_reconfig_passes("caspaxos", "reconfig", "11");
}

/// Linearizable reads served from local state: an isolated (or cut-off old leader) member keeps
/// answering reads with what it had while the majority moves on. Read-heavy, few keys, and only
/// partitions, so every fault leaves a stale member with clients reading from it.
#[test]
fn planted_stale_read_is_caught() {
    // Bounded retries: a partition may (rarely) hit a moment where no write lands meanwhile.
    const SEEDS: [&str; 3] = ["5", "6", "7"];
    let mut reports = Vec::new();
    for seed in SEEDS {
        let out = out_dir(&format!("stale-{seed}"));
        let code = chaos(
            &[
                "--engine",
                "omnipaxos",
                "--duration",
                "15s",
                "--seed",
                seed,
                "--faults",
                "partition",
                "--plant-bug",
                "stale-linearizable-read",
                "--read-percent",
                "80",
                "--keys",
                "2",
            ],
            &out,
        );
        let report = std::fs::read_to_string(out.join("report.txt")).unwrap_or_default();
        if code == EXIT_VIOLATION {
            assert!(report.contains("NOT LINEARIZABLE"), "{report}");
            assert!(out.join("history.json").is_file() && out.join("availability.svg").is_file());
            clean(&out);
            return;
        }
        reports.push(format!("seed {seed}: exit {code}\n{report}"));
    }
    panic!(
        "the planted stale read was not caught:\n{}",
        reports.join("\n")
    );
}

/// Watch events for log entries that are accepted but not decided: a member that loses its
/// leader's uncommitted suffix has already shown watchers revisions that never happened, and
/// the watch checker (members disagreeing on a revision, a watcher delivered a revision that is
/// not the agreed one) catches it in a real cluster.
#[test]
fn planted_undecided_watch_event_is_caught() {
    // Bounded retries: a crash must land while a follower holds an undecided suffix.
    const SEEDS: [&str; 4] = ["5", "7", "8", "9"];
    let mut reports = Vec::new();
    for seed in SEEDS {
        let out = out_dir(&format!("watch-undecided-{seed}"));
        let code = chaos(
            &[
                "--engine",
                "omnipaxos",
                "--duration",
                "20s",
                "--seed",
                seed,
                "--faults",
                "crash,partition",
                "--plant-bug",
                "watch-undecided-event",
            ],
            &out,
        );
        let report = std::fs::read_to_string(out.join("report.txt")).unwrap_or_default();
        if code == EXIT_VIOLATION {
            assert!(report.contains("watch verdict: FAILED"), "{report}");
            clean(&out);
            return;
        }
        reports.push(format!("seed {seed}: exit {code}\n{report}"));
    }
    panic!(
        "the planted undecided watch event was not caught:\n{}",
        reports.join("\n")
    );
}

/// A partitioned watcher that acts on moves from before its keys came back (the split a
/// merge undid) is caught by the per-key watch check: the merged keys' watchers, sent to the
/// retired group, never see their key's writes after the merge, which the acknowledged writes
/// name.
#[test]
fn planted_partitioned_watch_on_old_moves_is_caught() {
    planted_partitioned_watch_bug_is_caught("partition-watch-follows-old-moves", ["2", "1", "20s"]);
}

/// A quiet partitioned run (4 groups, 8 keys, no faults) with a planted watch bug and
/// `[splits, merges, duration]`: linearizable, but the watch verdict fails.
fn planted_partitioned_watch_bug_is_caught(bug: &str, [splits, merges, duration]: [&str; 3]) {
    let out = out_dir(bug);
    let flags = [
        "--groups",
        "4",
        "--keys",
        "8",
        "--splits",
        splits,
        "--merges",
        merges,
        "--duration",
        duration,
        "--faults",
        "none",
        "--seed",
        "7",
        "--plant-bug",
        bug,
    ];
    let code = chaos(&flags, &out);
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap_or_default();
    assert_eq!(code, EXIT_VIOLATION, "{report}");
    assert!(report.contains("watch verdict: FAILED"), "{report}");
    assert!(report.contains("verdict: LINEARIZABLE"), "{report}");
    clean(&out);
}

/// A watch over keys of several groups that delivers a revision once *one* of its groups
/// passed it, not every one (`partition-watch-merged-ahead`): the prefix watchers of a
/// partitioned run see a lagging group's events after later revisions of another (out of
/// order), or skip them on a resume — the merged check of the prefix watchers catches it.
#[test]
fn planted_partitioned_watch_merged_ahead_is_caught() {
    planted_partitioned_watch_bug_is_caught("partition-watch-merged-ahead", ["0", "0", "15s"]);
}

/// Ctrl-C (SIGINT) in the middle of a run: every server and the proxy stop, the history and
/// logs are kept, the exit code is 2 (inconclusive), and nothing is left behind.
#[test]
fn ctrl_c_stops_everything_and_keeps_the_history() {
    /// Start-up (cluster serving a write) must finish within this.
    const STARTED_DEADLINE_MS: u64 = 40_000;
    /// After the signal the run must be over within this (clients finish their open request).
    const STOPPED_MS_MAX: u64 = 15_000;
    let out = out_dir("interrupted");
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = out.display().to_string();
    let runner = std::thread::spawn(move || {
        let args = ChaosArgs::parse_from(["--duration", "60s", "--seed", "3", "--out", &dir])
            .expect("valid chaos flags");
        synod_chaos::run(args, Path::new(env!("CARGO_BIN_EXE_synod")))
    });
    // schedule.json appears only once the SIGINT handler is installed and the cluster is up, so
    // the signal cannot hit the default action (which would end this test process).
    let deadline = Instant::now() + Duration::from_millis(STARTED_DEADLINE_MS);
    while !out.join("schedule.json").is_file() {
        assert!(Instant::now() < deadline, "the run did not start");
        assert!(
            !runner.is_finished(),
            "the run ended before it was interrupted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1_500)); // let the clients record something
    let sent = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let code = runner.join().expect("the run did not panic");
    assert!(
        sent.elapsed() < Duration::from_millis(STOPPED_MS_MAX),
        "took {:?} to stop",
        sent.elapsed()
    );
    assert_eq!(code, synod_chaos::EXIT_INCONCLUSIVE);
    let report = std::fs::read_to_string(out.join("report.txt")).expect("report written");
    assert!(report.contains("INTERRUPTED"), "{report}");
    assert!(out.join("history.json").is_file() && out.join("n1.log").is_file());
    assert_nothing_left(&out);
    clean(&out);
}
