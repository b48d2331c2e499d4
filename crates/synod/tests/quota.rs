//! etcd's space quota (`--quota-backend-bytes`, here `storage.quota_backend_bytes`) on a real
//! cluster, through etcdctl: writes fill the database past the quota; the member raises NOSPACE
//! (`etcdctl alarm list`), refuses puts with etcd's error but keeps serving reads and deletes;
//! the alarm is sticky (a disarm while the database is still too big is undone by the next
//! batch); once the keys are deleted, the history compacted and the member defragmented
//! (`etcdctl defrag`: a checkpoint now, the log before it dropped), a disarm sticks and writes
//! resume. Every acknowledged write stays readable until deleted.

mod common;

use common::{Cluster, etcdctl, etcdctl_command, wait_until};
use std::path::Path;
use std::time::Duration;

/// The quota: a few dozen 8 KiB values.
const QUOTA_BYTES: u64 = 256 * 1024;
/// Checkpoints rarely, so that only `etcdctl defrag` shrinks the log in time.
const SNAPSHOT_ENTRIES: u64 = 100_000;
const VALUE_BYTES: usize = 8 * 1024;
/// etcd's gRPC message for NOSPACE.
const ETCD_NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

fn etcd(ctl: &Path, endpoint: &str, args: &[&str]) -> (bool, String) {
    let out = etcdctl_command(ctl, endpoint)
        .args(args)
        .output()
        .expect("run etcdctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_quota_raises_nospace_and_a_compacted_database_takes_writes_again() {
    let Some(ctl) = etcdctl() else { return };
    let c = Cluster::start_configured(3, "omnipaxos", &|cfg| {
        cfg.storage.quota_backend_bytes = QUOTA_BYTES;
        cfg.storage.snapshot_entries = SNAPSHOT_ENTRIES;
    });
    let n1 = c.member(1).grpc_addr.clone();
    let value = "x".repeat(VALUE_BYTES);
    let mut acked = Vec::new();
    let bound = 4 * QUOTA_BYTES as usize / VALUE_BYTES;
    for i in 0..bound {
        let key = format!("q{i:04}");
        let (ok, text) = etcd(&ctl, &n1, &["put", &key, &value]);
        if !ok {
            assert!(text.contains(ETCD_NO_SPACE), "{text}");
            break;
        }
        acked.push(key);
    }
    assert!(
        !acked.is_empty() && acked.len() < bound,
        "the quota never refused a write ({} acknowledged)",
        acked.len()
    );
    let (_, list) = etcd(&ctl, &n1, &["alarm", "list"]);
    assert!(list.contains("alarm:NOSPACE"), "{list}");
    // Reads still work, and see every acknowledged write.
    for key in &acked {
        let (ok, text) = etcd(&ctl, &n1, &["get", key, "--print-value-only"]);
        assert!(ok && text.trim() == value, "{key}: {text}");
    }
    // Sticky: disarmed while still too big, the next batch raises it again.
    etcd(&ctl, &n1, &["alarm", "disarm"]);
    wait_until(Duration::from_secs(10), "NOSPACE raised again", || {
        let (ok, text) = etcd(&ctl, &n1, &["put", "probe", "v"]);
        (!ok && text.contains(ETCD_NO_SPACE)).then_some(())
    });
    // Free the space: delete (allowed under NOSPACE) one key at a time, so that compacting
    // at the last delete's revision keeps only that revision's events, then defragment.
    let mut revision = 0;
    for key in &acked {
        let (ok, text) = etcd(&ctl, &n1, &["del", key, "-w", "json"]);
        assert!(ok, "{text}");
        revision = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["header"]["revision"].as_u64())
            .expect("revision of the delete");
    }
    let (ok, text) = etcd(&ctl, &n1, &["compact", &revision.to_string()]);
    assert!(ok, "{text}");
    // Compacted, not yet defragmented: the deleted values no longer count as in use, but
    // their space is still taken (etcd's dbSizeInUse against dbSize).
    let (db, in_use) = wait_until(
        Duration::from_secs(10),
        "in use well below the size",
        || {
            let (ok, text) = etcd(&ctl, &n1, &["endpoint", "status", "-w", "json"]);
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let s = &v[0]["Status"];
            let (db, in_use) = (s["dbSize"].as_u64()?, s["dbSizeInUse"].as_u64()?);
            (ok && in_use > 0 && in_use < db / 4).then_some((db, in_use))
        },
    );
    // etcdctl defrag: a checkpoint now drops the log that held the deleted values.
    let db_before = c.metric(1, "synod_db_size_bytes").expect("db size");
    let (ok, text) = etcd(&ctl, &n1, &["defrag"]);
    assert!(ok && text.contains("Finished defragmenting"), "{text}");
    // The gauge follows with the next status publish.
    wait_until(Duration::from_secs(10), "a smaller database", || {
        let db_after = c.metric(1, "synod_db_size_bytes")?;
        (db_after < db_before / 4.0).then_some(())
    });
    // What was in use is about what is left (the checkpoint encodes the same data).
    let db_after = c.metric(1, "synod_db_size_bytes").expect("db size") as u64;
    assert!(
        db_after < db / 4 && db_after <= 4 * in_use.max(4096),
        "size {db} → {db_after}, in use {in_use}"
    );
    wait_until(Duration::from_secs(20), "writes after a disarm", || {
        etcd(&ctl, &n1, &["alarm", "disarm"]);
        let (ok, _) = etcd(&ctl, &n1, &["put", "after", "v"]);
        ok.then_some(())
    });
    let (ok, text) = etcd(&ctl, &n1, &["get", "after", "--print-value-only"]);
    assert!(ok && text.trim() == "v", "{text}");
    assert_eq!(c.metric(1, "synod_alarm_nospace"), Some(0.0));
}
