//! Revision history on a real cluster: auto-compaction keeps it bounded, as configured, and
//! every member refuses reads below the compaction with etcd's error while serving the rest.

mod common;

use common::{Cluster, etcdctl, wait_until};
use std::process::Command;
use std::time::Duration;

/// Runs etcdctl; `Ok(stdout)` or `Err(stderr)`.
fn etcdctl_at(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let bin = etcdctl().ok_or("etcdctl missing")?;
    let out = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn auto_compaction_keeps_the_configured_number_of_revisions() {
    if etcdctl().is_none() {
        return;
    }
    let c = Cluster::start_configured(3, "omnipaxos", &|cfg| {
        cfg.history.auto_compaction_mode = "revision".into();
        cfg.history.retention_revisions = 20;
    });
    let leader = c.wait_for_leader(Duration::from_secs(10));
    for i in 1..=60 {
        let r = c.put(leader, "k", &i.to_string());
        assert!(r.status().is_success(), "put {i}: {}", r.status());
    }
    // The leader proposes a compaction within a second or two of the history passing
    // retention + a tenth; every member applies it.
    for id in [1, 2, 3] {
        let endpoint = c.member(id).grpc_addr.clone();
        let err = wait_until(Duration::from_secs(15), "member compacts", || {
            etcdctl_at(&endpoint, &["get", "k", "--rev=5"]).err()
        });
        assert!(
            err.contains("etcdserver: mvcc: required revision has been compacted"),
            "member {id}: {err}"
        );
        // Within the retention, history is still there.
        let old = etcdctl_at(&endpoint, &["get", "k", "--rev=50", "--print-value-only"])
            .unwrap_or_else(|e| panic!("member {id}: read at 50 refused: {e}"));
        assert_eq!(old, "50\n", "member {id}");
    }
}

#[test]
fn auto_compaction_off_keeps_everything_until_a_client_compacts() {
    if etcdctl().is_none() {
        return;
    }
    let c = Cluster::start_configured(3, "vr", &|cfg| {
        cfg.history.auto_compaction_mode = "off".into();
    });
    let leader = c.wait_for_leader(Duration::from_secs(10));
    for i in 1..=30 {
        assert!(c.put(leader, "k", &i.to_string()).status().is_success());
    }
    let endpoint = c.member(leader).grpc_addr.clone();
    let first = etcdctl_at(&endpoint, &["get", "k", "--rev=1", "--print-value-only"]);
    assert_eq!(first.as_deref(), Ok("1\n"));
    assert_eq!(
        etcdctl_at(&endpoint, &["compaction", "10"]).as_deref(),
        Ok("compacted revision 10\n")
    );
    let below = etcdctl_at(&endpoint, &["get", "k", "--rev=9"]).unwrap_err();
    assert!(
        below.contains("required revision has been compacted"),
        "{below}"
    );
    let future = etcdctl_at(&endpoint, &["get", "k", "--rev=31"]).unwrap_err();
    assert!(
        future.contains("required revision is a future revision"),
        "{future}"
    );
    let at = etcdctl_at(&endpoint, &["get", "k", "--rev=10", "--print-value-only"]);
    assert_eq!(
        at.as_deref(),
        Ok("10\n"),
        "the compaction revision itself stays readable"
    );
}
