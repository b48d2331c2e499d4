//! The range directory on real processes: a partitioned cluster with `[partition] directory
//! = true` records its ranges in the directory's own group — the configured ones at first
//! boot, a range split off by `synodctl range split` and its merge back by `synodctl range
//! merge` — on every member, shown by `/v1/status` and `synodctl range list`; etcdctl reads
//! and writes on both sides while it changes; every member's copy is back after a restart of
//! every member; and a cluster restored from a backup (`synod restore`, into other split keys
//! and another engine) records its own ranges.

mod common;

use common::{Cluster, etcdctl, synodctl_ok, wait_until};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn with_directory() -> Cluster {
    Cluster::start_configured(3, "omnipaxos", &|cfg| {
        cfg.partition.split_keys = vec!["c".into(), "m".into(), "t".into()];
        cfg.partition.directory = true;
    })
}

/// A new 3-member VR cluster split at `g` and `p`, with a directory, built by `synod restore`
/// from `file`.
fn restored_with_directory(file: &std::path::Path) -> Cluster {
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 temp path").to_string();
    Cluster::start_prepared(
        3,
        "vr",
        &|cfg| {
            cfg.partition.split_keys = vec!["g".into(), "p".into()];
            cfg.partition.directory = true;
        },
        &|config, dir| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_synod"));
            cmd.args(["restore", &path(file), "--config", &path(config)]);
            cmd.args(["--data-dir", &path(dir)]);
            let (status, out, err) = common::run_with_deadline(cmd, Duration::from_secs(30));
            assert!(status.success(), "synod restore: {out}\n{err}");
        },
    )
}

/// The ranges member `id`'s directory records once they are its layout's: (start, group,
/// generation).
fn recorded(c: &Cluster, id: u64) -> Option<Vec<(String, u64, u64)>> {
    let s: Value = c.status(id)?;
    let d = &s["directory"];
    if d["matches_layout"] != true || d["leader"].as_u64().is_none() {
        return None;
    }
    d["ranges"]
        .as_array()?
        .iter()
        .map(|r| {
            let start = r["start"].as_str()?.to_string();
            Some((start, r["group"].as_u64()?, r["generation"].as_u64()?))
        })
        .collect()
}

/// Waits until every member's directory records exactly the ranges starting at `starts`.
fn wait_recorded(c: &Cluster, starts: &[&str]) -> Vec<(String, u64, u64)> {
    wait_recorded_until(c, starts, |_| true)
}

/// [`wait_recorded`], until `settled` holds of the records too: the halves of a split are
/// recorded by their two groups one after the other, so the starts can be there before the
/// parent's entry has its new generation.
fn wait_recorded_until(
    c: &Cluster,
    starts: &[&str],
    settled: impl Fn(&[(String, u64, u64)]) -> bool,
) -> Vec<(String, u64, u64)> {
    // The members keep the same copy: the last one seen stands for all.
    let mut seen = Vec::new();
    for id in 1..=3 {
        seen = wait_until(Duration::from_secs(20), "the directory to record", || {
            let r = recorded(c, id)?;
            let same_starts = r
                .iter()
                .map(|(s, _, _)| s.as_str())
                .eq(starts.iter().copied());
            (same_starts && settled(&r)).then_some(r)
        });
    }
    seen
}

fn etcdctl_ok(c: &Cluster, args: &[&str]) -> String {
    let etcdctl = etcdctl().expect("etcdctl");
    let (ok, out, err) = common::etcdctl_run(&etcdctl, &c.grpc_endpoints(), args, None);
    assert!(ok, "etcdctl {args:?}: {out}{err}");
    out
}

#[test]
fn the_directory_records_splits_and_merges_on_every_member() {
    if etcdctl().is_none() {
        return;
    }
    let mut c = with_directory();
    let first = wait_recorded(&c, &["", "c", "m", "t"]);
    assert_eq!(
        first.iter().map(|(_, g, n)| (*g, *n)).collect::<Vec<_>>(),
        [(0, 0), (1, 0), (2, 0), (3, 0)],
        "the configured groups, at generation 0"
    );
    let list = synodctl_ok(&c, &["range", "list"]);
    assert!(list.contains("records these 4 ranges"), "{list}");
    // Each entry names where its keys are served: the group's voters.
    let s: Value = c.status(2).expect("status of member 2");
    let members: Vec<&Value> = s["directory"]["ranges"]
        .as_array()
        .expect("recorded ranges")
        .iter()
        .map(|r| &r["members"])
        .collect();
    assert_eq!(members, [&serde_json::json!([1, 2, 3]); 4], "{s}");
    for k in ["d1", "h1", "k1"] {
        etcdctl_ok(&c, &["put", k, "v"]);
    }
    let said = synodctl_ok(&c, &["range", "split", "f"]);
    assert!(said.starts_with("Range [c, f) kept"), "{said}");
    // Both halves recorded past generation 0 (each group records its own half).
    let split = wait_recorded_until(&c, &["", "c", "f", "m", "t"], |r| r[1].2 > 0 && r[2].2 > 0);
    let new = split[2].1;
    assert!(new >= 1 << 52, "a split-off group's id: {new}");
    assert_eq!(
        (split[1].1, split[1].2, split[2].2),
        (1, 1, 1),
        "both halves of the split are one generation on: {split:?}"
    );
    // The layout as the groups applied it, read back by a client on both sides.
    assert_eq!(
        etcdctl_ok(&c, &["get", "d1", "--print-value-only"]).trim(),
        "v"
    );
    assert_eq!(
        etcdctl_ok(&c, &["get", "h1", "--print-value-only"]).trim(),
        "v"
    );
    let list = synodctl_ok(&c, &["range", "list"]);
    assert!(list.contains("records these 5 ranges"), "{list}");
    synodctl_ok(&c, &["range", "merge", "f"]);
    let merged = wait_recorded(&c, &["", "c", "m", "t"]);
    assert_eq!(
        (merged[1].1, merged[1].2),
        (1, 2),
        "group 1 took [f, m) back, one generation on"
    );
    etcdctl_ok(&c, &["put", "h2", "after"]);
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_all_reach_leader(Duration::from_secs(30));
    let back = wait_recorded(&c, &["", "c", "m", "t"]);
    assert_eq!(
        back, merged,
        "the same directory after a restart of every member"
    );
    assert_eq!(
        etcdctl_ok(&c, &["get", "h2", "--print-value-only"]).trim(),
        "after"
    );
}

#[test]
fn a_restored_cluster_records_its_own_ranges() {
    if etcdctl().is_none() {
        return;
    }
    let old = with_directory();
    wait_recorded(&old, &["", "c", "m", "t"]);
    for k in ["a", "h", "q", "z"] {
        etcdctl_ok(&old, &["put", k, &format!("{k}-value")]);
    }
    let file = old.dir.path().join("backup.db");
    let file_arg = file.to_str().expect("utf-8 temp path");
    // From member 1, once its groups applied every write above: a linearizable read through
    // it returns only then.
    let etcdctl = etcdctl().expect("etcdctl");
    let one = &old.member(1).grpc_addr;
    let (ok, out, err) = common::etcdctl_run(&etcdctl, one, &["get", "--prefix", ""], None);
    assert!(ok && out.lines().count() == 8, "{out}{err}");
    let (ok, out, err) = common::etcdctl_run(&etcdctl, one, &["snapshot", "save", file_arg], None);
    assert!(ok && out.contains("Snapshot saved at"), "{out}{err}");
    let new = restored_with_directory(&file);
    let recorded = wait_recorded(&new, &["", "g", "p"]);
    assert_eq!(
        recorded.iter().map(|(_, g, _)| *g).collect::<Vec<_>>(),
        [0, 1, 2],
        "the new cluster's own groups, not the backup's"
    );
    assert_eq!(
        etcdctl_ok(&new, &["get", "--prefix", "", "--print-value-only"]),
        "a-value\nh-value\nq-value\nz-value\n"
    );
}
