//! Leases (issue #16) proven with real etcd clients against 3-process clusters on each log
//! engine: etcdctl 3.4's `lease grant / keep-alive / timetolive / list / revoke` and
//! `put --lease`, python-etcd3's lease API (`tests/py/lease_checks.py`), and the guarantees
//! that matter to a holder — a lease kept alive outlives a leader failover, one nobody renews
//! expires, and leases survive a restart of every member.

mod common;

use common::{Cluster, etcdctl, etcdctl_command, python_etcd3, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest an unrenewed lease may outlive its TTL before a test fails.
const EXPIRY_SLACK: Duration = Duration::from_secs(10);

struct Ctl {
    bin: PathBuf,
    endpoints: String,
}

impl Ctl {
    fn new(bin: PathBuf, c: &Cluster) -> Ctl {
        Ctl {
            bin,
            endpoints: c.grpc_endpoints(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        etcdctl_command(&self.bin, &self.endpoints)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl")
    }

    /// stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// stderr of a command that must fail.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "etcdctl {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// `lease grant TTL`: the new lease's id, in etcdctl's hex.
    fn grant(&self, ttl: u64) -> String {
        let out = self.ok(&["lease", "grant", &ttl.to_string()]);
        // "lease 694d7c9c4e1b7c0a granted with TTL(10s)"
        let id = out
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no lease id in {out:?}"));
        assert!(
            out.contains(&format!("granted with TTL({ttl}s)")),
            "grant said {out:?}"
        );
        id.to_string()
    }

    fn value(&self, key: &str) -> Option<String> {
        let out = self.ok(&["get", key, "--print-value-only"]);
        let v = out.trim_end_matches('\n');
        (!out.is_empty()).then(|| v.to_string())
    }
}

fn lifecycle(engine: &str) {
    let Some(bin) = etcdctl() else { return };
    let c = Cluster::start(3, engine);
    let ctl = Ctl::new(bin, &c);
    let id = ctl.grant(60);
    ctl.ok(&["put", "--lease", &id, "/l/a", "1"]);
    ctl.ok(&["put", "--lease", &id, "/l/b", "2"]);
    ctl.ok(&["put", "/l/plain", "3"]);
    let ttl = ctl.ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([/l/a /l/b])"),
        "timetolive said {ttl:?}"
    );
    let kept = ctl.ok(&["lease", "keep-alive", "--once", &id]);
    assert!(kept.contains("keepalived with TTL(60)"), "{kept:?}");
    let list = ctl.ok(&["lease", "list"]);
    assert!(
        list.contains("found 1 leases") && list.contains(&id),
        "{list:?}"
    );

    // A put without the lease detaches the key (etcd's rule): it survives the revoke.
    ctl.ok(&["put", "/l/b", "2b"]);
    let before = revision(&ctl);
    let revoked = ctl.ok(&["lease", "revoke", &id]);
    assert!(revoked.contains("revoked"), "{revoked:?}");
    assert_eq!(ctl.value("/l/a"), None);
    assert_eq!(ctl.value("/l/b").as_deref(), Some("2b"));
    assert_eq!(ctl.value("/l/plain").as_deref(), Some("3"));
    assert_eq!(revision(&ctl), before + 1, "a revoke is one revision");
    let gone = ctl.ok(&["lease", "timetolive", &id]);
    assert!(gone.contains("already expired"), "{gone:?}");
    // The server answers TTL 0; etcd's client turns that into its lease-not-found error.
    let err = ctl.fails(&["lease", "keep-alive", "--once", &id]);
    assert!(err.contains("requested lease not found"), "{err}");

    // etcd's errors, verbatim.
    let err = ctl.fails(&["put", "--lease", "1234abcd", "/l/x", "v"]);
    assert!(err.contains("requested lease not found"), "{err}");
    let err = ctl.fails(&["lease", "revoke", "1234abcd"]);
    assert!(err.contains("requested lease not found"), "{err}");
    let err = ctl.fails(&["lease", "grant", "9000000001"]);
    assert!(err.contains("too large lease TTL"), "{err}");

    // Nobody renews this one: its key goes, within the TTL and a bound.
    let short = ctl.grant(2);
    ctl.ok(&["put", "--lease", &short, "/l/short", "x"]);
    assert_eq!(ctl.value("/l/short").as_deref(), Some("x"));
    wait_until(
        Duration::from_secs(2) + EXPIRY_SLACK,
        "the 2 s lease to expire",
        || ctl.value("/l/short").is_none().then_some(()),
    );
}

/// The store revision, from `etcdctl get -w json` of a key that need not exist.
fn revision(ctl: &Ctl) -> u64 {
    let out = ctl.ok(&["get", "/no-such-key", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
    v["header"]["revision"].as_u64().expect("header.revision")
}

#[test]
fn etcdctl_lease_lifecycle_omnipaxos() {
    lifecycle("omnipaxos");
}

#[test]
fn etcdctl_lease_lifecycle_vr() {
    lifecycle("vr");
}

/// A holder that keeps its lease alive through the cluster must keep it across the loss of
/// the leader (the new leader restarts every TTL); once it stops, the lease expires.
fn kept_alive_through_failover(engine: &str) {
    let Some(bin) = etcdctl() else { return };
    let mut c = Cluster::start(3, engine);
    let ctl = Ctl::new(bin.clone(), &c);
    const TTL: u64 = 2;
    let id = ctl.grant(TTL);
    ctl.ok(&["put", "--lease", &id, "/ka/k", "held"]);
    let mut keeper = KeepAlive::start(&bin, &c.grpc_endpoints(), &id);
    let leader = c.wait_for_leader(Duration::from_secs(10));
    c.kill(leader);
    // Reads go to the survivors only.
    let survivors: Vec<String> = c
        .live_ids()
        .into_iter()
        .map(|i| c.member(i).grpc_addr.clone())
        .collect();
    let reader = Ctl {
        bin: bin.clone(),
        endpoints: survivors.join(","),
    };
    // Three TTLs after the failover the key must still be there at every look.
    let until = Instant::now() + Duration::from_secs(3 * TTL);
    while Instant::now() < until {
        assert!(keeper.running(), "etcdctl lease keep-alive exited");
        assert_eq!(
            reader.value("/ka/k").as_deref(),
            Some("held"),
            "a lease kept alive expired after the leader was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    keeper.stop();
    wait_until(
        Duration::from_secs(TTL) + EXPIRY_SLACK,
        "the lease to expire once nobody renews it",
        || reader.value("/ka/k").is_none().then_some(()),
    );
}

#[test]
fn lease_kept_alive_survives_leader_failover_omnipaxos() {
    kept_alive_through_failover("omnipaxos");
}

#[test]
fn lease_kept_alive_survives_leader_failover_vr() {
    kept_alive_through_failover("vr");
}

/// `etcdctl lease keep-alive ID`, running until stopped.
struct KeepAlive(Child);

impl KeepAlive {
    fn start(bin: &Path, endpoints: &str, id: &str) -> KeepAlive {
        let child = etcdctl_command(bin, endpoints)
            .args(["lease", "keep-alive", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl lease keep-alive");
        KeepAlive(child)
    }

    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Leases are replicated state: they come back after every member restarts, with their keys.
#[test]
fn leases_survive_a_restart_of_every_member() {
    let Some(bin) = etcdctl() else { return };
    let mut c = Cluster::start(3, "omnipaxos");
    let ctl = Ctl::new(bin, &c);
    let id = ctl.grant(120);
    ctl.ok(&["put", "--lease", &id, "/r/k", "v"]);
    for i in c.live_ids() {
        c.kill(i);
    }
    for i in [1, 2, 3] {
        c.restart(i);
    }
    c.wait_all_reach_leader(Duration::from_secs(20));
    wait_until(
        Duration::from_secs(20),
        "the cluster to serve reads",
        || {
            let out = ctl.run(&["get", "/r/k", "--print-value-only"]);
            out.status.success().then_some(())
        },
    );
    assert_eq!(ctl.value("/r/k").as_deref(), Some("v"));
    let ttl = ctl.ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(120s)") && ttl.contains("attached keys([/r/k])"),
        "{ttl:?}"
    );
}

/// CASPaxos has no lessor: every lease call is refused up front with a clear error.
#[test]
fn caspaxos_refuses_leases_clearly() {
    let Some(bin) = etcdctl() else { return };
    let c = Cluster::start(3, "caspaxos");
    let ctl = Ctl::new(bin, &c);
    let err = ctl.fails(&["lease", "grant", "10"]);
    assert!(
        err.contains("leases not supported by synod's caspaxos engine"),
        "{err}"
    );
    let err = ctl.fails(&["put", "--lease", "1234", "k", "v"]);
    assert!(err.contains("leases not supported"), "{err}");
}

fn python_lease_checks(engine: &str) {
    let Some(python) = python_etcd3() else { return };
    python_lease_checks_on(&python, &Cluster::start(3, engine));
}

fn python_lease_checks_on(python: &Path, c: &Cluster) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/lease_checks.py");
    let out = Command::new(python)
        .arg(&script)
        .arg("--endpoints")
        .arg(c.grpc_endpoints())
        .stdin(Stdio::null())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python-etcd3 lease checks failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let passed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PASS "))
        .collect();
    assert_eq!(
        passed,
        [
            "grant_attach_refresh",
            "revoke_deletes_in_one_revision",
            "unrefreshed_lease_expires",
            "contended_lock"
        ],
        "{stdout}"
    );
}

#[test]
fn python_etcd3_leases_omnipaxos() {
    python_lease_checks("omnipaxos");
}

#[test]
fn python_etcd3_leases_vr() {
    python_lease_checks("vr");
}

/// The same on groups placed on some members (5 members, `replicas = 3`, split at /l, /p and t):
/// the lock's key (`/locks/…`) lives in group 1 on members 2, 3 and 4, the lease keys (`/pl/…`)
/// in group 2 on 3, 4 and 5. The checks talk to members 1 and 5: every lease call and put is
/// relayed from member 1, and the contended lock's waiter at member 5 watches a group it does not
/// host (a remote watch).
#[test]
fn python_etcd3_leases_and_locks_placed() {
    let Some(python) = python_etcd3() else { return };
    let c = Cluster::start_configured(5, "omnipaxos", &|cfg| {
        cfg.partition.split_keys = ["/l", "/p", "t"].map(String::from).to_vec();
        cfg.partition.directory = true;
        cfg.partition.replicas = 3;
        cfg.partition.rebalance = false; // the groups stay where the placement rule put them
    });
    python_lease_checks_on(&python, &c);
}
