//! A member whose disk fills up, on real processes and a real filesystem: n1's data directory
//! lives on a small tmpfs this test mounts and then fills with a junk file. n1 must raise its
//! NOSPACE alarm, refuse writes with etcd's error (gRPC) and `no_space` / 507 (HTTP), keep
//! serving reads and deletes, show the alarm in `etcdctl alarm list`, stay up, and resume
//! writes by itself once the junk is deleted; every acknowledged write stays readable.
//! The other members keep their data on the normal disk and keep accepting writes (the alarm
//! is member-local, see `docs/durability.md`, "Full disk").
//!
//! Needs root (mount) and etcdctl. CI runs as root and installs etcdctl; without root this
//! test FAILS saying so, it never skips unseen.

mod common;

use common::{Cluster, etcdctl, wait_until};
use serde_json::Value;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Size of n1's filesystem: room for its WAL's preallocated segment and the reserve.
const TMPFS_BYTES: u64 = 32 * 1024 * 1024;
/// `storage.reserve_bytes` for the cluster: the watermark under which n1 raises the alarm.
const RESERVE_BYTES: u64 = 8 * 1024 * 1024;
/// How long the alarm may take to rise or clear: a few watermark polls (500 ms each).
const ALARM_WITHIN: Duration = Duration::from_secs(5);
/// How long writes through n1 may take to resume once space is freed.
const RESUME_WITHIN: Duration = Duration::from_secs(10);
/// etcd's gRPC message for NOSPACE.
const ETCD_NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

/// A tmpfs on a temporary directory of its own (outside the cluster's, which n1's data
/// directory then links to), so it is unmounted after the cluster's processes are gone: declare
/// it before the cluster and Rust drops it after, also when the test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs root: it mounts a small tmpfs to fill a real filesystem \
             (mount -t tmpfs failed: {}). Run it as root (CI does).",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem holding `dir` until a write fails for lack of space.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("junk");
    let mut f = std::fs::File::create(&path).expect("create junk");
    let chunk = vec![0x5au8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    path
}

fn etcdctl_output(etcdctl: &Path, endpoint: &str, args: &[&str]) -> Output {
    Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("run etcdctl")
}

fn etcdctl_ok(etcdctl: &Path, endpoint: &str, args: &[&str]) -> String {
    let out = etcdctl_output(etcdctl, endpoint, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn alarms(c: &Cluster, id: u64) -> Option<Vec<String>> {
    let status = c.status(id)?;
    let list = status.get("alarms")?.as_array()?;
    Some(
        list.iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
    )
}

/// Moves member `id`'s data directory onto `fs` (stopped, copied, linked, restarted).
fn move_data_dir(c: &mut Cluster, id: u64, fs: &Tmpfs) {
    c.kill(id);
    let dir = c.data_dir(id);
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(fs.path())
        .status()
        .expect("run cp");
    assert!(copied.success(), "copying n{id}'s data directory");
    std::fs::remove_dir_all(&dir).expect("remove old data dir");
    std::os::unix::fs::symlink(fs.path(), &dir).expect("link data dir");
    c.restart(id);
    c.wait_all_serving(Duration::from_secs(20));
}

#[test]
fn full_disk_refuses_writes_keeps_reads_and_resumes_by_itself() {
    let Some(etcdctl) = etcdctl() else { return };
    let fs = Tmpfs::mount(TMPFS_BYTES);
    let mut c = Cluster::start_configured(3, "omnipaxos", &|cfg| {
        cfg.storage.reserve_bytes = RESERVE_BYTES;
    });
    move_data_dir(&mut c, 1, &fs);
    c.wait_for_leader(Duration::from_secs(20));
    let n1_grpc = c.member(1).grpc_addr.clone();
    let mut acked: Vec<(String, String)> = Vec::new();
    for i in 0..5 {
        let (k, v) = (format!("before-{i}"), format!("v{i}"));
        let r = c.put(1, &k, &v);
        assert!(
            r.status().is_success(),
            "put before filling: {}",
            r.status()
        );
        acked.push((k, v));
    }
    assert_eq!(alarms(&c, 1), Some(Vec::new()), "no alarm before filling");

    let filled = Instant::now();
    let junk = fill(fs.path());
    wait_until(ALARM_WITHIN, "n1 to raise NOSPACE", || {
        (alarms(&c, 1)? == ["NOSPACE"]).then_some(())
    });
    eprintln!(
        "measured: NOSPACE raised {:?} after the disk filled",
        filled.elapsed()
    );

    // Writes through n1 are refused, on both APIs, with nothing applied.
    let r = c.put(1, "refused", "x");
    assert_eq!(r.status().as_u16(), 507);
    let body: Value = r.json().expect("json");
    assert_eq!(body["error"]["code"], "no_space", "{body}");
    let out = etcdctl_output(&etcdctl, &n1_grpc, &["put", "refused", "x"]);
    assert!(!out.status.success(), "etcdctl put through a full member");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(ETCD_NO_SPACE), "etcdctl put: {stderr}");
    assert_eq!(
        etcdctl_ok(&etcdctl, &n1_grpc, &["alarm", "list"]),
        "memberID:1 alarm:NOSPACE \n"
    );
    assert_eq!(c.metric(1, "synod_alarm_nospace"), Some(1.0));

    // Reads (linearizable and local) and deletes still work through n1.
    assert_eq!(c.get(1, "before-0", false).as_deref(), Some("v0"));
    assert_eq!(c.get(1, "before-1", true).as_deref(), Some("v1"));
    assert_eq!(
        etcdctl_ok(
            &etcdctl,
            &n1_grpc,
            &["get", "before-2", "--print-value-only"]
        ),
        "v2\n"
    );
    assert_eq!(etcdctl_ok(&etcdctl, &n1_grpc, &["del", "before-4"]), "1\n");
    acked.retain(|(k, _)| k != "before-4");
    // The other members have space and keep taking writes.
    for id in [2, 3] {
        let (k, v) = (format!("during-{id}"), format!("w{id}"));
        let r = c.put(id, &k, &v);
        assert!(r.status().is_success(), "put through n{id}: {}", r.status());
        acked.push((k, v));
    }

    // Disarming while still full: cleared, then raised again by the watermark.
    let disarmed = etcdctl_ok(&etcdctl, &n1_grpc, &["alarm", "disarm"]);
    assert_eq!(disarmed, "memberID:1 alarm:NOSPACE \n");
    wait_until(ALARM_WITHIN, "NOSPACE to re-arm while still full", || {
        (alarms(&c, 1)? == ["NOSPACE"]).then_some(())
    });
    assert!(c.is_running(1), "n1 exited on a full disk:\n{}", c.log(1));

    // Space back: writes through n1 resume by themselves.
    std::fs::remove_file(&junk).expect("remove junk");
    let freed = Instant::now();
    wait_until(
        RESUME_WITHIN,
        "a write through n1 after freeing space",
        || {
            c.put(1, "after", "resumed")
                .status()
                .is_success()
                .then_some(())
        },
    );
    eprintln!(
        "measured: writes through n1 resumed {:?} after space was freed",
        freed.elapsed()
    );
    acked.push(("after".into(), "resumed".into()));
    assert_eq!(alarms(&c, 1), Some(Vec::new()));
    assert_eq!(etcdctl_ok(&etcdctl, &n1_grpc, &["alarm", "list"]), "");
    assert_eq!(c.metric(1, "synod_alarm_nospace"), Some(0.0));
    assert!(c.is_running(1), "n1 exited:\n{}", c.log(1));

    // Every acknowledged write is readable through every member, and nothing refused exists.
    for id in [1, 2, 3] {
        for (k, v) in &acked {
            assert_eq!(
                c.get(id, k, false).as_deref(),
                Some(v.as_str()),
                "{k} at n{id}"
            );
        }
        assert_eq!(
            c.get(id, "refused", false),
            None,
            "a refused write was applied"
        );
        assert_eq!(c.get(id, "before-4", false), None, "the delete was lost");
    }
}

/// Without a watermark the WAL itself runs out of space: the full member (a follower here, so
/// the other two keep a working majority) holds the batch it could not write, raises NOSPACE,
/// stays up, and catches up by itself once space is freed.
#[test]
fn wal_out_of_space_holds_the_batch_and_catches_up_after_space_is_freed() {
    let fs = Tmpfs::mount(TMPFS_BYTES);
    let mut c = Cluster::start_configured(3, "omnipaxos", &|cfg| {
        cfg.storage.reserve_bytes = 0;
        // Every append then needs new blocks, so the first write after filling fails.
        cfg.storage.preallocate_bytes = 0;
    });
    let leader = c.wait_for_leader(Duration::from_secs(20));
    let full = if leader == 1 { 2 } else { 1 };
    move_data_dir(&mut c, full, &fs);
    let leader = c.wait_for_leader(Duration::from_secs(20));
    assert_ne!(
        leader, full,
        "leadership moved to the member just restarted"
    );
    let mut acked: Vec<(String, String)> = Vec::new();
    let junk = fill(fs.path());

    // Writes through the leader go on (it and the third member are a majority) and reach the
    // full member, whose WAL append fails.
    let value = "x".repeat(8 * 1024);
    let mut i = 0;
    wait_until(ALARM_WITHIN, "the full member's WAL write to fail", || {
        i += 1;
        let k = format!("k{i}");
        let r = c.put(leader, &k, &value);
        assert!(
            r.status().is_success(),
            "put through the leader: {}",
            r.status()
        );
        acked.push((k, value.clone()));
        (alarms(&c, full)? == ["NOSPACE"]).then_some(())
    });
    assert!(
        c.log(full).contains("write-ahead log write failed"),
        "the alarm did not come from a held WAL write:\n{}",
        c.log(full)
    );
    let r = c.put(full, "refused", "x");
    assert_eq!(r.status().as_u16(), 507, "put through the full member");
    assert!(c.is_running(full), "n{full} exited:\n{}", c.log(full));

    std::fs::remove_file(&junk).expect("remove junk");
    let freed = Instant::now();
    wait_until(
        RESUME_WITHIN,
        "a write through the full member after freeing",
        || {
            c.put(full, "after", "resumed")
                .status()
                .is_success()
                .then_some(())
        },
    );
    eprintln!(
        "measured: held WAL write resumed, writes through n{full} {:?} after freeing",
        freed.elapsed()
    );
    acked.push(("after".into(), "resumed".into()));
    assert_eq!(alarms(&c, full), Some(Vec::new()));
    assert!(c.is_running(full), "n{full} exited:\n{}", c.log(full));
    for id in [1, 2, 3] {
        for (k, v) in &acked {
            assert_eq!(
                c.get(id, k, false).as_deref(),
                Some(v.as_str()),
                "{k} at n{id}"
            );
        }
        assert_eq!(
            c.get(id, "refused", false),
            None,
            "a refused write was applied"
        );
    }
}
