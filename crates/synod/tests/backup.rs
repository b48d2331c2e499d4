//! Backup, restore and consistency checks against real clusters, driven by Debian's etcdctl 3.4
//! and `synod restore`: the effects are checked, not just the exit codes — a restored cluster
//! holds exactly the backed-up state (and its history), not what was written after; damaged,
//! truncated, foreign and same-cluster restores are refused with nothing written; members'
//! HashKV agree after writes, deletes and a compaction; a member whose applied state silently
//! diverges (a planted bug) raises CORRUPT, lists it, refuses service, and the others do not.

mod common;

use common::{Cluster, etcdctl, etcdctl_command, run_with_deadline, wait_until};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use synod_node::ClusterConfig;

const DEADLINE: Duration = Duration::from_secs(30);

/// Runs etcdctl to its end and returns stdout; panics with its output on failure.
/// [`ctl`] under another name, for where a closure shadows it.
fn super_ctl(etcdctl: &Path, endpoints: &str, args: &[&str]) -> String {
    ctl(etcdctl, endpoints, args)
}

fn ctl(etcdctl: &Path, endpoints: &str, args: &[&str]) -> String {
    let mut cmd = etcdctl_command(etcdctl, endpoints);
    cmd.args(args);
    let (status, out, err) = run_with_deadline(cmd, DEADLINE);
    assert!(status.success(), "etcdctl {args:?}: {status}\n{out}\n{err}");
    out
}

fn synod_restore(args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_synod"));
    cmd.arg("restore").args(args);
    let (status, out, err) = run_with_deadline(cmd, DEADLINE);
    (status.success(), out, err)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A new 3-member cluster of `engine`, split at `splits`, built by `synod restore` from `file`.
fn restored_cluster(file: &Path, engine: &str, splits: &[&str]) -> Cluster {
    let splits: Vec<String> = splits.iter().map(|s| s.to_string()).collect();
    Cluster::start_prepared(
        3,
        engine,
        &|c| c.partition.split_keys = splits.clone(),
        &|config, dir| {
            let (ok, out, err) = synod_restore(&[
                path_str(file),
                "--config",
                path_str(config),
                "--data-dir",
                path_str(dir),
            ]);
            assert!(ok, "synod restore: {out}\n{err}");
        },
    )
}

#[test]
fn backup_then_restore_into_a_new_cluster_holds_exactly_the_backed_up_state_omnipaxos() {
    backup_then_restore("omnipaxos");
}

#[test]
fn backup_then_restore_into_a_new_cluster_holds_exactly_the_backed_up_state_vr() {
    backup_then_restore("vr");
}

fn backup_then_restore(engine: &str) {
    let Some(etcdctl) = etcdctl() else { return };
    let old = Cluster::start(3, engine);
    let all = old.grpc_endpoints();
    ctl(&etcdctl, &all, &["put", "k1", "v1"]); // revision 1
    ctl(&etcdctl, &all, &["put", "k2", "v2"]); // 2
    ctl(&etcdctl, &all, &["del", "k1"]); // 3
    ctl(&etcdctl, &all, &["put", "k3", "v3"]); // 4
    // From a member that may be a follower: the backup is of the member it is sent to, so
    // wait until that one applied everything above.
    let member = old.member(2).grpc_addr.clone();
    wait_until(DEADLINE, "n2 at revision 4", || {
        let out = ctl(
            &etcdctl,
            &member,
            &["get", "k3", "-w", "json", "--consistency=s"],
        );
        out.contains("\"revision\":4").then_some(())
    });
    let file = old.dir.path().join("backup.db");
    let saved = ctl(&etcdctl, &member, &["snapshot", "save", path_str(&file)]);
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    // Later writes must not be in the restored cluster.
    ctl(&etcdctl, &all, &["put", "k4", "after"]);
    ctl(&etcdctl, &all, &["put", "k2", "changed"]);

    let (ok, summary, err) = synod_restore(&[path_str(&file), "--verify"]);
    assert!(ok, "verify: {err}");
    assert!(summary.contains("revision         4"), "{summary}");
    assert!(
        summary.contains(&format!("engine           {engine}")),
        "{summary}"
    );

    refusals(&file, &old);

    let restored = restored_cluster(&file, engine, &[]);
    let new = restored.grpc_endpoints();
    assert_eq!(
        ctl(&etcdctl, &new, &["get", "--prefix", ""]),
        "k2\nv2\nk3\nv3\n",
        "the restored cluster holds the backed-up state, not the later writes"
    );
    // The history came along: k1 as it was at revision 1, and the revision goes on from 4.
    assert_eq!(ctl(&etcdctl, &new, &["get", "k1", "--rev=1"]), "k1\nv1\n");
    ctl(&etcdctl, &new, &["put", "k5", "new"]);
    let out = ctl(&etcdctl, &new, &["get", "k5", "-w", "json"]);
    assert!(out.contains("\"mod_revision\":5"), "{out}");
    // The restored members are the new file's, and every member serves the same data.
    for m in &restored.members {
        assert_eq!(
            ctl(&etcdctl, &m.grpc_addr, &["get", "k2", "--print-value-only"]),
            "v2\n"
        );
    }
    drop(restored);
    // The same file into a partitioned cluster: the keys are laid out by its split keys.
    let split = restored_cluster(&file, engine, &["k3"]);
    for m in &split.members {
        let got = ctl(&etcdctl, &m.grpc_addr, &["get", "--prefix", ""]);
        assert_eq!(got, "k2\nv2\nk3\nv3\n", "member {} of two groups", m.id);
    }
    let groups = split.status(1).expect("status")["groups"].clone();
    let keys: Vec<u64> = groups
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["keys"].as_u64())
        .collect();
    assert_eq!(
        keys,
        vec![1, 1],
        "k2 below the split key, k3 from it: {groups}"
    );
}

/// A partitioned member's backup holds every group (a range split at run time included) and
/// restores into any layout: one group on another engine, or other split keys — every key,
/// the lease with the keys of every group, and writes go on above the backup's revision.
#[test]
fn a_partitioned_backup_restores_into_one_group_and_into_other_split_keys() {
    let Some(etcdctl) = etcdctl() else { return };
    let old = Cluster::start_configured(3, "omnipaxos", &|c| {
        c.partition.split_keys = vec!["g".into(), "p".into()];
    });
    let all = old.grpc_endpoints();
    for k in ["a", "h", "q", "z"] {
        ctl(&etcdctl, &all, &["put", k, &format!("{k}-value")]);
    }
    let granted = ctl(&etcdctl, &all, &["lease", "grant", "600"]);
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    ctl(&etcdctl, &all, &["put", "--lease", &lease, "b", "leased"]);
    ctl(&etcdctl, &all, &["put", "--lease", &lease, "r", "leased"]);
    let split = common::curl(&old.url(1, "/v1/ranges/split"), Some(r#"{"key":"t"}"#));
    assert!(split.get("error").is_none(), "{split}");
    ctl(&etcdctl, &all, &["put", "u", "u-value"]); // in the group split off
    let expected =
        "a\na-value\nb\nleased\nh\nh-value\nq\nq-value\nr\nleased\nu\nu-value\nz\nz-value\n";
    // A linearizable read through member 2 returns once its groups applied every write.
    let member = old.member(2).grpc_addr.clone();
    assert_eq!(ctl(&etcdctl, &member, &["get", "--prefix", ""]), expected);
    let file = old.dir.path().join("partitioned.db");
    let saved = ctl(&etcdctl, &member, &["snapshot", "save", path_str(&file)]);
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    ctl(&etcdctl, &all, &["put", "a", "after the backup"]);
    let (ok, summary, err) = synod_restore(&[path_str(&file), "--verify"]);
    assert!(ok, "verify: {err}");
    assert!(
        summary.contains("engine           omnipaxos-partitioned"),
        "{summary}"
    );
    assert!(summary.contains("keys             7"), "{summary}");
    assert!(
        summary.contains(r#"groups           4 (ranges from "", "g", "p", "t")"#),
        "{summary}"
    );

    let backed_up: u64 = summary
        .lines()
        .find_map(|l| l.strip_prefix("revision "))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no revision in {summary}"));
    for (engine, splits) in [("vr", &[][..]), ("omnipaxos", &["m"][..])] {
        let new = restored_cluster(&file, engine, splits);
        let eps = new.grpc_endpoints();
        let what = format!("{engine} split at {splits:?}");
        for m in &new.members {
            let got = ctl(&etcdctl, &m.grpc_addr, &["get", "--prefix", ""]);
            assert_eq!(
                got, expected,
                "{what}: member {} holds the backed-up state",
                m.id
            );
        }
        let ttl = ctl(&etcdctl, &eps, &["lease", "timetolive", &lease, "--keys"]);
        assert!(ttl.contains("attached keys([b r])"), "{what}: {ttl}");
        // An unpartitioned member lists no groups.
        let groups = new.status(1).expect("status")["groups"]
            .as_array()
            .map_or(0, Vec::len)
            .max(1);
        assert_eq!(groups, splits.len() + 1, "{what}: the new cluster's layout");
        ctl(&etcdctl, &eps, &["put", "c", "new"]);
        let out = ctl(&etcdctl, &eps, &["get", "c", "-w", "json"]);
        let rev: u64 = out
            .split("\"mod_revision\":")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no mod_revision in {out}"));
        assert_eq!(
            rev,
            backed_up + 1,
            "{what}: the revision goes on from the backup's"
        );
    }
}

/// Damaged, truncated, foreign and same-cluster restores are refused, naming what is wrong,
/// and leave no directory behind.
fn refusals(file: &Path, old: &Cluster) {
    let good = std::fs::read(file).expect("read backup");
    let dir = old.dir.path().join("refused");
    let config = old.dir.path().join("new-cluster.toml");
    let text = std::fs::read_to_string(&old.config_path).expect("cluster file");
    std::fs::write(
        &config,
        text.replace(&old.cluster_name, &format!("{}-restored", old.cluster_name)),
    )
    .expect("write new cluster file");
    let bad_copy = |name: &str, bytes: &[u8]| -> PathBuf {
        let p = old.dir.path().join(name);
        std::fs::write(&p, bytes).expect("write damaged copy");
        p
    };
    let mut flipped = good.clone();
    let mid = good.len() / 2;
    flipped[mid] ^= 0x01;
    let mut foreign = good.clone();
    foreign[..8].copy_from_slice(b"\0\0\0\0\0\0\0\0");
    let mut newer = good.clone();
    newer[8] = 9;
    let cases = [
        (
            bad_copy("truncated.db", &good[..good.len() - 100]),
            "truncated",
        ),
        (bad_copy("flipped.db", &flipped), "corrupt"),
        (bad_copy("foreign.db", &foreign), "not a Synod backup"),
        (
            bad_copy("newer.db", &newer),
            "unsupported backup format version 9",
        ),
    ];
    for (path, why) in &cases {
        let (ok, _, err) = synod_restore(&[
            path_str(path),
            "--config",
            path_str(&config),
            "--data-dir",
            path_str(&dir),
        ]);
        assert!(!ok, "{} was restored", path.display());
        assert!(err.contains(why), "{}: {err}", path.display());
        assert!(
            !dir.exists(),
            "{} left {} behind",
            path.display(),
            dir.display()
        );
    }
    // The old cluster's own file: same cluster id, so it is refused too.
    let (ok, _, err) = synod_restore(&[
        path_str(file),
        "--config",
        path_str(&old.config_path),
        "--data-dir",
        path_str(&dir),
    ]);
    assert!(!ok && err.contains("NEW cluster"), "{err}");
    assert!(!dir.exists());
}

#[test]
fn hashkv_is_equal_on_every_member_after_writes_deletes_and_compaction() {
    let Some(etcdctl) = etcdctl() else { return };
    let c = Cluster::start(3, "omnipaxos");
    let all = c.grpc_endpoints();
    for i in 0..20 {
        ctl(
            &etcdctl,
            &all,
            &["put", &format!("key{}", i % 7), &format!("value{i}")],
        );
    }
    ctl(&etcdctl, &all, &["del", "--prefix", "key3"]);
    ctl(&etcdctl, &all, &["del", "key5"]);
    ctl(&etcdctl, &all, &["compaction", "10"]);
    ctl(&etcdctl, &all, &["put", "last", "one"]);
    // Members apply asynchronously: poll until all three report the same hash at the latest
    // revision (23), and at a past one. `--cluster` finds the members from MemberList's client
    // URLs, which carry a scheme — etcdctl 3.4 then sends `http://host:port` as HTTP/2
    // :authority, which the gRPC port must accept.
    let one = format!("http://{}", c.member(1).grpc_addr);
    for rev in ["--rev=23", "--rev=15"] {
        let hashes = wait_until(DEADLINE, "equal HashKV on every member", || {
            let mut cmd = etcdctl_command(&etcdctl, &one);
            cmd.args(["endpoint", "hashkv", "--cluster", rev, "-w", "json"]);
            let (status, out, _) = run_with_deadline(cmd, DEADLINE);
            if !status.success() {
                return None;
            }
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            let hashes: Vec<(u64, u64)> = v
                .as_array()?
                .iter()
                .filter_map(|e| {
                    Some((
                        e["HashKV"]["hash"].as_u64()?,
                        e["HashKV"]["compact_revision"].as_u64()?,
                    ))
                })
                .collect();
            (hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0])).then_some(hashes)
        });
        assert_eq!(hashes[0].1, 10, "compact revision reported");
    }
    // The other two ways to take a backup give the same format, with the state it was at.
    let via_ctl = c.dir.path().join("ctl.db");
    let mut cmd = Command::new(common::synodctl());
    cmd.args(["--endpoints", &c.member(2).http_addr, "snapshot", "save"])
        .arg(&via_ctl);
    let (status, out, err) = run_with_deadline(cmd, DEADLINE);
    assert!(status.success(), "synodctl snapshot save: {out}{err}");
    let via_http = c.dir.path().join("http.db");
    let resp = c
        .http
        .get(c.url(3, "/v1/snapshot"))
        .send()
        .expect("GET /v1/snapshot");
    assert!(resp.status().is_success(), "{}", resp.status());
    std::fs::write(&via_http, resp.bytes().expect("body")).expect("write");
    for file in [&via_ctl, &via_http] {
        let (ok, summary, err) = synod_restore(&[path_str(file), "--verify"]);
        assert!(ok, "{}: {err}", file.display());
        assert!(summary.contains("revision         23"), "{summary}");
        assert!(summary.contains("compact revision 10"), "{summary}");
    }
    // A compacted revision is refused with etcd's error.
    let mut cmd = etcdctl_command(&etcdctl, &c.member(1).grpc_addr);
    cmd.args(["endpoint", "hashkv", "--rev=5"]);
    let (_, out, err) = run_with_deadline(cmd, DEADLINE);
    assert!(
        format!("{out}{err}").contains("required revision has been compacted"),
        "{out}{err}"
    );
}

#[test]
fn a_member_whose_state_diverges_raises_corrupt_and_refuses_service() {
    diverging_member_raises_corrupt(&|cfg| cfg.corrupt_check_ms = 300, false);
}

/// The same with auth on: the check asks its peers over the peer port, not their client APIs
/// (which want a root user the member does not have; there it compared nothing).
#[test]
fn a_member_whose_state_diverges_raises_corrupt_with_auth_on() {
    diverging_member_raises_corrupt(&|cfg| cfg.corrupt_check_ms = 300, true);
}

/// The same on four groups: the check compares HashKV at a revision every member reached,
/// which a partitioned member answers once each of its groups reached it, whatever its layout.
#[test]
fn a_member_whose_state_diverges_raises_corrupt_and_refuses_service_partitioned() {
    diverging_member_raises_corrupt(
        &|cfg| {
            cfg.corrupt_check_ms = 300;
            cfg.partition.split_keys = ["c", "m", "t"].map(String::from).to_vec();
        },
        false,
    );
}

fn diverging_member_raises_corrupt(tweak: &dyn Fn(&mut ClusterConfig), auth: bool) {
    let Some(etcdctl) = etcdctl() else { return };
    let mut c = Cluster::start_configured(3, "omnipaxos", tweak);
    let user: &[&str] = if auth {
        &["--user", "root:rootpw"]
    } else {
        &[]
    };
    let ctl =
        |etcdctl: &Path, addr: &str, args: &[&str]| ctl(etcdctl, addr, &[args, user].concat());
    if auth {
        let all = c.grpc_endpoints();
        super_ctl(&etcdctl, &all, &["user", "add", "root:rootpw"]);
        super_ctl(&etcdctl, &all, &["auth", "enable"]);
    }
    // n3 comes back applying every put with its value altered: its memory or disk "rots".
    c.kill(3);
    c.restart_with(3, &["--plant-bug", "divergent-apply"]);
    c.wait_all_reach_leader(DEADLINE);
    let n1 = c.member(1).grpc_addr.clone();
    let n3 = c.member(3).grpc_addr.clone();
    for i in 0..5 {
        ctl(&etcdctl, &n1, &["put", &format!("k{i}"), "value"]);
    }
    wait_until(DEADLINE, "alarm:CORRUPT on n3", || {
        let out = ctl(&etcdctl, &n3, &["alarm", "list"]);
        out.contains("alarm:CORRUPT").then_some(())
    });
    assert!(c.log(3).contains("CORRUPT alarm raised"), "{}", c.log(3));
    // The healthy majority keeps serving and lists no alarm; it logged the odd one out.
    for id in [1, 2] {
        let addr = c.member(id).grpc_addr.clone();
        assert_eq!(ctl(&etcdctl, &addr, &["alarm", "list"]), "");
        assert_eq!(
            ctl(&etcdctl, &addr, &["get", "k0", "--print-value-only"]),
            "value\n"
        );
    }
    wait_until(DEADLINE, "a healthy member logging the mismatch", || {
        c.log(1).contains("HashKV mismatch").then_some(())
    });
    // n3 refuses reads and writes with etcd's error.
    for args in [&["get", "k0"][..], &["put", "k9", "x"][..]] {
        let mut cmd = etcdctl_command(&etcdctl, &n3);
        cmd.args(args).args(user);
        let (status, out, err) = run_with_deadline(cmd, DEADLINE);
        assert!(!status.success(), "n3 served {args:?}: {out}");
        assert!(err.contains("corrupt cluster"), "{args:?}: {err}");
    }
}

/// A real client library, unchanged: python-etcd3 reads status (leader, term, db size), hashes
/// every member (equal), streams a backup that `synod restore --verify` accepts, defragments
/// every member and lists no alarm (tests/py/maintenance_checks.py).
#[test]
fn python_etcd3_status_hash_snapshot_defragment() {
    let Some(python) = common::python_etcd3() else {
        return;
    };
    let c = Cluster::start(3, "omnipaxos");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("py.backup");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/maintenance_checks.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--endpoints")
        .arg(c.grpc_endpoints())
        .arg("--backup")
        .arg(&file);
    let (status, stdout, stderr) = run_with_deadline(cmd, Duration::from_secs(120));
    assert!(
        status.success(),
        "python-etcd3 maintenance checks failed ({status}):\n{stdout}\n{stderr}"
    );
    for check in ["status", "hash", "snapshot", "defragment", "alarms"] {
        assert!(
            stdout.contains(&format!("PASS {check}")),
            "{check} not run:\n{stdout}"
        );
    }
    let (ok, summary, err) = synod_restore(&[path_str(&file), "--verify"]);
    assert!(ok, "verify: {err}");
    assert!(summary.contains("keys"), "{summary}");
}
