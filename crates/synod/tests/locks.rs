//! Locks and elections against real 3-process clusters: etcdctl 3.4's client-side recipes
//! (`etcdctl lock`, `etcdctl elect`, `etcdctl elect -l`), synodctl's `lock` / `elect` over the
//! Lock and Election services, and `synod chaos --locks` runs — a stale holder arranged by
//! construction must be refused by the fence, and must be caught when the writes are not
//! fenced. Ordering is asserted from what the processes wrote, never from sleeps.

mod common;

use common::{Cluster, etcdctl, etcdctl_command, synodctl, wait_until};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use synod_chaos::{ChaosArgs, EXIT_LINEARIZABLE, EXIT_VIOLATION};

/// Bound on anything a healthy local cluster does promptly.
const PROMPT: Duration = Duration::from_secs(20);

/// Keys under `prefix`, read through member 1's HTTP API.
fn keys_under(c: &Cluster, prefix: &str) -> Vec<String> {
    let url = c.url(1, &format!("/v1/kv?prefix={prefix}&keys_only=true"));
    let Ok(r) = reqwest::blocking::get(url) else {
        return Vec::new();
    };
    let body: Value = r.json().unwrap_or(Value::Null);
    body["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| kv["key"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A child's stdout lines, delivered through a channel as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(PROMPT)
        .unwrap_or_else(|_| panic!("no line from {what} within {PROMPT:?}"))
}

/// Kills the child when dropped, so a failed assertion leaves no etcdctl waiting forever.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Killed {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn interrupt(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) on our own un-reaped child.
    unsafe { libc::kill(pid, libc::SIGINT) };
}

fn wait_ok(child: &mut Child, what: &str) {
    let status = wait_until(PROMPT, what, || child.try_wait().ok().flatten());
    assert!(status.success(), "{what} exited {status}");
}

/// Two `etcdctl lock` holders: the second's command starts only after the first's ended. The
/// first holds until the test creates a file; the order is read from the log they append to.
#[test]
fn etcdctl_lock_serialises_two_holders() {
    etcdctl_lock_serialises(Cluster::start, |_| ());
}

/// The same on a cluster of four groups (split at c, m and t): the lock's keys live in one
/// group, whose revisions order them, and the waiter's watch is that group's.
#[test]
fn etcdctl_lock_serialises_two_holders_partitioned() {
    etcdctl_lock_serialises(partitioned, |_| ());
}

/// The same while the lock's group splits itself by size with the middle of its keys a lock
/// contender (`door/<lease>` between five `b/…` and five `f/…` keys): the cut goes at the
/// lock's directory, `door/`, so the waiter's read over `door/` by create revision — which a
/// partitioned cluster refuses over several groups — stays within one group and the lock
/// passes on. (Cut at the middle key itself, the waiter fails once the holder releases.)
#[test]
fn etcdctl_lock_passes_on_after_its_group_splits_by_size() {
    let start = |n: usize, engine: &str| {
        Cluster::start_configured(n, engine, &|cfg| {
            cfg.partition.split_keys = vec!["m".into()];
            cfg.partition.auto_split_keys = 11;
        })
    };
    etcdctl_lock_serialises(start, |c| {
        for k in (0..5).flat_map(|i| [format!("b/{i}"), format!("f/{i}")]) {
            let r = c.put(1, &k.replace('/', "%2F"), "v");
            assert!(r.status().is_success(), "put {k}: {}", r.status());
        }
        for id in 1..=3 {
            wait_until(PROMPT, "the lock's group split at door/", || {
                let starts = c.range_starts(id)?;
                (starts.len() == 3).then_some(starts)
            });
        }
        assert_eq!(
            c.range_starts(1),
            Some(vec!["".into(), "door/".into(), "m".into()])
        );
    });
}

/// A 3-member cluster of four groups, split at c, m and t.
fn partitioned(n: usize, engine: &str) -> Cluster {
    Cluster::start_configured(n, engine, &|cfg| {
        cfg.partition.split_keys = ["c", "m", "t"].map(String::from).to_vec();
    })
}

/// `between` runs while the first holds the lock and the second waits.
fn etcdctl_lock_serialises(start: fn(usize, &str) -> Cluster, between: fn(&Cluster)) {
    let Some(etcdctl) = etcdctl() else { return };
    let c = start(3, "omnipaxos");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let release = dir.path().join("release");
    let script = |who: &str, wait: bool| {
        let hold = if wait {
            format!("while [ ! -e {} ]; do sleep 0.02; done;", release.display())
        } else {
            String::new()
        };
        format!(
            "echo {who}-in $ETCD_LOCK_KEY >> {log}; {hold} echo {who}-out >> {log}",
            log = log.display()
        )
    };
    let spawn = |who: &str, wait: bool| {
        etcdctl_command(&etcdctl, &c.grpc_endpoints())
            .args(["lock", "door", "--", "sh", "-c", &script(who, wait)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Killed)
            .expect("spawn etcdctl lock")
    };
    let mut a = spawn("a", true);
    wait_until(PROMPT, "a holds the lock", || {
        read_lines(&log)
            .first()
            .filter(|l| l.starts_with("a-in"))
            .cloned()
    });
    let mut b = spawn("b", false);
    wait_until(PROMPT, "b queued behind a", || {
        (keys_under(&c, "door/").len() == 2).then_some(())
    });
    between(&c);
    assert_eq!(
        read_lines(&log).len(),
        1,
        "b must not run while a holds the lock"
    );
    std::fs::write(&release, b"").expect("release a");
    wait_ok(&mut a, "etcdctl lock a");
    wait_ok(&mut b, "etcdctl lock b");
    let order: Vec<String> = read_lines(&log)
        .iter()
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(order, ["a-in", "a-out", "b-in", "b-out"]);
    assert!(keys_under(&c, "door/").is_empty(), "both released");
}

/// `etcdctl elect`: the leader changes when its lease is revoked and when its process is
/// interrupted (it closes its session); `etcdctl elect -l` sees every leader.
#[test]
fn etcdctl_elect_hands_over_on_lease_revoke_and_on_exit() {
    etcdctl_elect_hands_over(Cluster::start);
}

/// The same on four groups: the election's keys (`boss/…`) and its observer's watch live in
/// group 0.
#[test]
fn etcdctl_elect_hands_over_on_lease_revoke_and_on_exit_partitioned() {
    etcdctl_elect_hands_over(partitioned);
}

fn etcdctl_elect_hands_over(start: fn(usize, &str) -> Cluster) {
    let Some(etcdctl) = etcdctl() else { return };
    let c = start(3, "omnipaxos");
    // etcd's store never gives revision 1 to a write (it starts at 1; the first write is 2),
    // and its recipe's waitDeletes reads "max create revision = mine − 1 = 0" as no bound:
    // a candidate whose key got revision 1 would wait for itself. Synod's first write gets
    // revision 1 (of its group, partitioned: "b…" is group 0's), so take it here (see
    // docs/locks.md).
    assert!(c.put(1, "b-warm-up", "x").status().is_success());
    let eps = c.grpc_endpoints();
    let start = |args: &[&str]| {
        etcdctl_command(&etcdctl, &eps)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map(Killed)
            .expect("spawn etcdctl elect")
    };
    let mut listener = start(&["elect", "-l", "boss"]);
    let seen = lines_of(&mut listener);
    let mut alpha = start(&["elect", "boss", "alpha"]);
    let alpha_out = lines_of(&mut alpha);
    let alpha_key = next_line(&alpha_out, "alpha's key");
    assert_eq!(next_line(&alpha_out, "alpha's value"), "alpha");
    assert_eq!(next_line(&seen, "observer"), alpha_key);
    assert_eq!(next_line(&seen, "observer"), "alpha");
    let mut beta = start(&["elect", "boss", "beta"]);
    let beta_out = lines_of(&mut beta);
    wait_until(PROMPT, "beta campaigns", || {
        (keys_under(&c, "boss/").len() == 2).then_some(())
    });
    assert!(
        beta_out.try_recv().is_err(),
        "beta must wait while alpha leads"
    );
    // Revoke alpha's lease (its key is boss/<lease in hex>): beta leads.
    let lease = alpha_key.trim_start_matches("boss/");
    let out = etcdctl_command(&etcdctl, &eps)
        .args(["lease", "revoke", lease])
        .output()
        .expect("lease revoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let beta_key = next_line(&beta_out, "beta's key");
    assert_eq!(next_line(&beta_out, "beta's value"), "beta");
    assert_eq!(
        (next_line(&seen, "observer"), next_line(&seen, "observer")),
        (beta_key, "beta".to_string())
    );
    // gamma waits behind beta; beta's process ends (Ctrl-C closes its session): gamma leads.
    let mut gamma = start(&["elect", "boss", "gamma"]);
    let gamma_out = lines_of(&mut gamma);
    wait_until(PROMPT, "gamma campaigns", || {
        (keys_under(&c, "boss/").len() == 2).then_some(())
    });
    interrupt(&beta);
    let _ = next_line(&gamma_out, "gamma's key");
    assert_eq!(next_line(&gamma_out, "gamma's value"), "gamma");
    let _ = next_line(&seen, "observer");
    assert_eq!(next_line(&seen, "observer"), "gamma");
    drop((alpha, beta, gamma, listener));
}

/// `synodctl lock NAME -- COMMAND`: the command sees the key and token, its exit status is
/// synodctl's, and the lock is released after. `synodctl elect` with a 1 s TTL, SIGKILLed:
/// its lease expires and the waiting candidate leads, as `elect --listen` reports.
#[test]
fn synodctl_lock_runs_a_command_and_elect_survives_a_killed_leader() {
    synodctl_lock_and_elect(Cluster::start);
}

/// The same on four groups: the Lock and Election services wait on one group's stream.
#[test]
fn synodctl_lock_runs_a_command_and_elect_survives_a_killed_leader_partitioned() {
    synodctl_lock_and_elect(partitioned);
}

fn synodctl_lock_and_elect(start: fn(usize, &str) -> Cluster) {
    let ctl = synodctl();
    let c = start(3, "omnipaxos");
    let eps = c.http_endpoints();
    let out = Command::new(&ctl)
        .args(["--endpoints", &eps, "lock", "job", "--ttl", "5", "--"])
        .args([
            "sh",
            "-c",
            "echo $SYNOD_LOCK_KEY $SYNOD_LOCK_REVISION; exit 3",
        ])
        .output()
        .expect("synodctl lock");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (key, token) = stdout.trim().split_once(' ').expect("key and token");
    assert!(key.starts_with("job/"), "{stdout}");
    assert!(token.parse::<u64>().expect("numeric token") > 0);
    assert!(
        keys_under(&c, "job/").is_empty(),
        "released after the command"
    );

    let start = |args: &[&str]| {
        Command::new(&ctl)
            .args(["--endpoints", &eps, "elect"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map(Killed)
            .expect("spawn synodctl elect")
    };
    let mut listener = start(&["--listen", "chief"]);
    let seen = lines_of(&mut listener);
    let mut one = start(&["chief", "one", "--ttl", "1"]);
    let one_out = lines_of(&mut one);
    let _ = next_line(&one_out, "one's key");
    assert_eq!(next_line(&one_out, "one's value"), "one");
    let _ = next_line(&seen, "observer");
    assert_eq!(next_line(&seen, "observer"), "one");
    let mut two = start(&["chief", "two"]);
    let two_out = lines_of(&mut two);
    wait_until(PROMPT, "two campaigns", || {
        (keys_under(&c, "chief/").len() == 2).then_some(())
    });
    drop(one); // SIGKILL: no resign, no revoke; the lease must expire.
    let _ = next_line(&two_out, "two's key");
    assert_eq!(next_line(&two_out, "two's value"), "two");
    let _ = next_line(&seen, "observer");
    assert_eq!(next_line(&seen, "observer"), "two");
    interrupt(&two);
    wait_ok(&mut two, "synodctl elect two after Ctrl-C");
    wait_until(PROMPT, "two resigned", || {
        keys_under(&c, "chief/").is_empty().then_some(())
    });
    drop(listener);
}

fn chaos(name: &str, flags: &[&str]) -> (i32, Value, String) {
    let out = std::env::temp_dir().join(format!("synod-locks-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut all: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    all.extend(["--out".to_string(), out.display().to_string()]);
    let args = ChaosArgs::parse_from(&all).expect("valid chaos flags");
    let code = synod_chaos::run(args, Path::new(env!("CARGO_BIN_EXE_synod")));
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap_or_default();
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap_or_default();
    let summary: Value = serde_json::from_str(&summary).unwrap_or(Value::Null);
    if code == EXIT_LINEARIZABLE && std::env::var_os("SYNOD_CHAOS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&out);
    }
    (code, summary["locks"].clone(), report)
}

/// The stale holder by construction (`--lock-pause-holder`): fenced, its write is refused and
/// the run is safe; unfenced, its write lands after a newer holder's and the run fails.
#[test]
fn a_paused_holder_is_refused_by_the_fence_and_caught_without_it() {
    let base = [
        "--duration",
        "15s",
        "--faults",
        "none",
        "--clients",
        "1",
        "--locks",
        "3",
        "--lock-ttl",
        "1",
        "--lock-pause-holder",
        "--seed",
        "11",
    ];
    let (code, locks, report) = chaos("fenced", &base);
    assert_eq!(code, EXIT_LINEARIZABLE, "{report}");
    assert_eq!(locks["safe"], true, "{report}");
    assert_eq!(locks["pause_unfulfilled"], false, "{report}");
    assert!(locks["stale_refused"].as_u64() >= Some(1), "{report}");
    assert!(locks["overlaps"].as_u64() >= Some(1), "{report}");

    let mut unfenced = base.to_vec();
    unfenced.push("--lock-unfenced");
    let (code, locks, report) = chaos("unfenced", &unfenced);
    assert_eq!(code, EXIT_VIOLATION, "{report}");
    assert_eq!(locks["safe"], false, "{report}");
    assert!(locks["out_of_order"].as_u64() >= Some(1), "{report}");
    assert!(report.contains("locks verdict: UNSAFE"), "{report}");
}

/// Lock clients under every fault: fenced writes stay in token order.
#[test]
fn fenced_lock_clients_stay_safe_under_chaos() {
    let duration = std::env::var("SYNOD_CHAOS_DURATION").unwrap_or_else(|_| "30s".into());
    let (code, locks, report) = chaos(
        "faults",
        &[
            "--duration",
            &duration,
            "--faults",
            "all",
            "--clients",
            "2",
            "--locks",
            "4",
            "--seed",
            "5",
        ],
    );
    assert_eq!(code, EXIT_LINEARIZABLE, "{report}");
    assert_eq!(locks["safe"], true, "{report}");
    assert!(locks["acquisitions"].as_u64() >= Some(1), "{report}");
}
