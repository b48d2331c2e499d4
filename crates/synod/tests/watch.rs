//! Issue #15 (MVCC + Watch) proven with real etcd clients nobody here wrote, against a
//! 3-process cluster on each log engine:
//!
//! - etcdctl 3.4: `watch --prefix --rev --prev-kv -w json` on a member that took none of the
//!   writes (history replayed, then live writes and deletes, in revision order with the right
//!   prev_kv), a progress request, `get --rev`, `compaction` and what fails below it (a read,
//!   a watch, on any member), `get --sort-by / --order / --limit`.
//! - python-etcd3 (`tests/py/etcd3_checks.py`): its watch API (iterator, callbacks, cancel),
//!   sorted gets, reads at a revision, Compact, and a Kubernetes-style list-then-watch loop that
//!   re-lists after a compaction and ends with its map equal to a fresh list.
//!
//! etcdctl comes from `.ci/run` (apt), python-etcd3 from `.ci/py-clients` (a pinned
//! virtualenv); a missing client fails its tests loudly unless explicitly allowed.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Cluster, etcdctl, etcdctl_command, python_etcd3, run_with_deadline};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest wait for a watch's next output line, or for a cancelled watch to exit.
const WATCH_WAIT: Duration = Duration::from_secs(20);
/// Longest the Python checks may run in all (its own watchdog stops one check after 90 s).
const PYTHON_RUN_MAX: Duration = Duration::from_secs(300);
/// Progress-notification interval for the Python run's cluster (etcd's default is 10 min;
/// the list-then-watch loop waits for notifications, so they must come quickly).
const PROGRESS_NOTIFY_MS: u64 = 200;
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

/// One watch event as etcdctl prints it, decoded from base64.
#[derive(Debug, PartialEq, Eq)]
struct Ev {
    delete: bool,
    key: String,
    /// `None` for a delete.
    value: Option<String>,
    /// The value before the event, when there was one (watches asked for prev_kv).
    prev: Option<String>,
    mod_revision: u64,
}

fn put_ev(key: &str, value: &str, prev: Option<&str>, mod_revision: u64) -> Ev {
    Ev {
        delete: false,
        key: key.into(),
        value: Some(value.into()),
        prev: prev.map(Into::into),
        mod_revision,
    }
}

fn del_ev(key: &str, prev: &str, mod_revision: u64) -> Ev {
    Ev {
        delete: true,
        key: key.into(),
        value: None,
        prev: Some(prev.into()),
        mod_revision,
    }
}

fn b64(v: &Value) -> String {
    let raw = BASE64
        .decode(v.as_str().unwrap_or_default())
        .expect("base64 in etcdctl json");
    String::from_utf8(raw).expect("utf-8 key or value")
}

fn parse_event(e: &Value) -> Ev {
    // etcdctl's JSON leaves out zero fields: PUT is type 0, so only DELETE (1) shows.
    let delete = e["type"].as_u64() == Some(1);
    let kv = &e["kv"];
    Ev {
        delete,
        key: b64(&kv["key"]),
        value: (!delete).then(|| b64(&kv["value"])),
        prev: e.get("prev_kv").map(|p| b64(&p["value"])),
        mod_revision: kv["mod_revision"].as_u64().expect("mod_revision"),
    }
}

fn revision(v: &Value) -> u64 {
    v["header"]["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("no header.revision in {v}"))
}

/// etcdctl, one command at a time.
struct Ctl {
    bin: PathBuf,
}

impl Ctl {
    fn output(&self, endpoint: &str, args: &[&str]) -> Output {
        etcdctl_command(&self.bin, endpoint)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl")
    }

    /// stdout of a command that must succeed.
    fn ok(&self, endpoint: &str, args: &[&str]) -> String {
        let out = self.output(endpoint, args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "etcdctl {args:?} at {endpoint} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// stderr of a command that must fail.
    fn fails(&self, endpoint: &str, args: &[&str]) -> String {
        let out = self.output(endpoint, args);
        assert!(
            !out.status.success(),
            "etcdctl {args:?} at {endpoint} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    fn json(&self, endpoint: &str, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-w", "json"]);
        let out = self.ok(endpoint, &args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}: {out}"))
    }

    /// Puts through `endpoint`; the revision it made.
    fn put(&self, endpoint: &str, key: &str, value: &str) -> u64 {
        revision(&self.json(endpoint, &["put", key, value]))
    }

    /// Deletes one existing key through `endpoint`; the revision it made.
    fn del(&self, endpoint: &str, key: &str) -> u64 {
        let v = self.json(endpoint, &["del", key]);
        assert_eq!(v["deleted"].as_u64(), Some(1), "del {key}: {v}");
        revision(&v)
    }

    /// `get ... --keys-only` as the list of keys, in the order etcdctl printed them.
    fn keys(&self, endpoint: &str, args: &[&str]) -> Vec<String> {
        let v = self.json(endpoint, &[&["get", "--keys-only"], args].concat());
        let kvs = v["kvs"].as_array().cloned().unwrap_or_default();
        kvs.iter().map(|kv| b64(&kv["key"])).collect()
    }

    /// `watch` as a running child; `interactive` keeps its stdin open for commands.
    fn watch(&self, endpoint: &str, args: &[&str], interactive: bool) -> Watch {
        let mut child = etcdctl_command(&self.bin, endpoint)
            .arg("watch")
            .args(args)
            .args(["-w", "json"])
            .stdin(if interactive {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcdctl watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let stderr = Some(std::thread::spawn(move || read_all(stderr)));
        let stdin = child.stdin.take();
        Watch {
            child,
            lines,
            stdin,
            stderr,
        }
    }
}

fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// A running `etcdctl watch -w json`. Its stdout is read on a thread, so every wait here
/// has a deadline; dropping it kills the child.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<String>>,
}

impl Watch {
    /// The next stdout line, or None once etcdctl closed its stdout.
    fn line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(WATCH_WAIT) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("etcdctl watch printed nothing for {WATCH_WAIT:?}")
            }
        }
    }

    /// Reads responses until at least `n` events came; returns every event read.
    fn events(&mut self, n: usize) -> Vec<Ev> {
        let mut events = Vec::new();
        while events.len() < n {
            let line = self
                .line()
                .unwrap_or_else(|| panic!("watch ended after {events:?}: {}", self.stderr()));
            let resp: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(resp["Canceled"], false, "watch cancelled: {line}");
            let batch = resp["Events"].as_array().cloned().unwrap_or_default();
            events.extend(batch.iter().map(parse_event));
        }
        events
    }

    fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("an interactive watch");
        stdin.write_all(text.as_bytes()).expect("write to etcdctl");
        stdin.flush().expect("flush");
    }

    /// Waits for etcdctl to exit by itself; its status and every stdout line left.
    fn exit(&mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + WATCH_WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let printed: Vec<String> = self.lines.try_iter().collect();
                panic!("etcdctl watch still runs after {WATCH_WAIT:?}; it printed {printed:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = Vec::new();
        while let Some(line) = self.line() {
            rest.push(line);
        }
        (status, rest)
    }

    /// Everything etcdctl wrote to stderr (kills it first if it still runs).
    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 5 members split at c, m and t, each group after the first on 3 of them (group 1 on 2, 3, 4;
/// group 2 on 3, 4, 5; group 3 on 1, 4, 5), where the placement rule put them (no rebalancing).
fn placed_cluster() -> Cluster {
    Cluster::start_configured(5, "omnipaxos", &|cfg| {
        cfg.partition.split_keys = ["c", "m", "t"].map(String::from).to_vec();
        cfg.partition.directory = true;
        cfg.partition.replicas = 3;
        cfg.partition.rebalance = false;
    })
}

fn grpc(c: &Cluster, id: u64) -> String {
    c.member(id).grpc_addr.clone()
}

#[test]
fn etcdctl_watch_replays_history_then_follows_live_writes_omnipaxos() {
    etcdctl_watch_replays_history_then_follows_live_writes("omnipaxos");
}

#[test]
fn etcdctl_watch_replays_history_then_follows_live_writes_vr() {
    etcdctl_watch_replays_history_then_follows_live_writes("vr");
}

/// Writes go to members 2 and 3; the watch is on member 1, which serves them from its own
/// applied state.
fn etcdctl_watch_replays_history_then_follows_live_writes(engine: &str) {
    let Some(bin) = etcdctl() else { return };
    let c = Cluster::start(3, engine);
    let ctl = Ctl { bin };
    let (m1, m2, m3) = (grpc(&c, 1), grpc(&c, 2), grpc(&c, 3));
    let r1 = ctl.put(&m2, "/w/a", "1");
    let r2 = ctl.put(&m3, "/w/b", "2");
    ctl.put(&m3, "/wx", "outside the prefix");
    let r3 = ctl.put(&m2, "/w/a", "3");
    let r4 = ctl.del(&m3, "/w/b");
    let from = r1.to_string();
    let mut watch = ctl.watch(
        &m1,
        &["--prefix", "/w/", "--rev", &from, "--prev-kv"],
        false,
    );
    let history = vec![
        put_ev("/w/a", "1", None, r1),
        put_ev("/w/b", "2", None, r2),
        put_ev("/w/a", "3", Some("1"), r3),
        del_ev("/w/b", "2", r4),
    ];
    assert_eq!(watch.events(history.len()), history, "replayed history");
    let r5 = ctl.put(&m3, "/w/c", "5");
    let r6 = ctl.put(&m2, "/w/a", "6");
    ctl.put(&m2, "/wx", "still outside");
    let r7 = ctl.del(&m3, "/w/c");
    let live = vec![
        put_ev("/w/c", "5", None, r5),
        put_ev("/w/a", "6", Some("3"), r6),
        del_ev("/w/c", "5", r7),
    ];
    assert_eq!(watch.events(live.len()), live, "live events");
    drop(watch);

    // A linearizable read on member 1 returns once it applied everything above, so its
    // progress notification must then report the cluster's last revision.
    let last = revision(&ctl.json(&m1, &["get", "/w/a"]));
    assert_eq!(last, r7);
    let mut watch = ctl.watch(&m1, &["-i"], true);
    watch.send("watch --prefix /w/\nprogress\n");
    let notified = loop {
        let line = watch.line().expect("etcdctl watch -i output");
        if let Some(rev) = line.strip_prefix("progress notify: ") {
            break rev.parse::<u64>().expect("progress revision");
        }
    };
    assert_eq!(notified, last, "progress notification revision");
}

/// Partitioned (four groups, split at c, m and t; revisions per group, kept together by the
/// groups' revision closes): etcdctl watches the keys of one group from a past revision, then
/// live; a watch over keys of two groups delivers both groups' events in revision order; and
/// watches keep delivering after `synodctl range split` hands their keys to a new group,
/// whose revisions go on from its parent's — a watch whose keys the split cuts in two reads
/// both halves.
#[test]
fn etcdctl_watch_on_a_partitioned_cluster_follows_its_keys_through_a_split() {
    let Some(bin) = etcdctl() else { return };
    let c = Cluster::start_configured(3, "vr", &|cfg| {
        cfg.partition.split_keys = ["c", "m", "t"].map(String::from).to_vec();
    });
    let ctl = Ctl { bin };
    let (m1, m2, m3) = (grpc(&c, 1), grpc(&c, 2), grpc(&c, 3));
    let ra = ctl.put(&m2, "apple", "elsewhere");
    ctl.put(&m3, "zebra", "elsewhere");
    let r1 = ctl.put(&m2, "d/1", "a");
    let r2 = ctl.put(&m3, "k/1", "b");
    assert!(r2 > r1, "group 1's revisions grow");
    let mut watch = ctl.watch(&m1, &["d/", "l", "--rev", "1", "--prev-kv"], false);
    assert_eq!(
        watch.events(2),
        [put_ev("d/1", "a", None, r1), put_ev("k/1", "b", None, r2)]
    );
    let r3 = ctl.put(&m2, "k/1", "c");
    assert_eq!(watch.events(1), [put_ev("k/1", "c", Some("b"), r3)]);

    // Keys of groups 0 and 1 together: both groups' events, in revision order, from the
    // past and live.
    let mut across = ctl.watch(&m1, &["a", "e", "--rev", "1"], false);
    assert_eq!(
        across.events(2),
        [
            put_ev("apple", "elsewhere", None, ra),
            put_ev("d/1", "a", None, r1)
        ]
    );
    let rb = ctl.put(&m3, "b/2", "below");
    let rd = ctl.put(&m2, "d/2", "above");
    let mut live = across.events(2);
    assert!(
        live[0].mod_revision <= live[1].mod_revision,
        "in revision order: {live:?}"
    );
    live.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        live,
        [
            put_ev("b/2", "below", None, rb),
            put_ev("d/2", "above", None, rd)
        ]
    );

    // Split group 1 at "h": k/1 moves to a new group; the watch of [d/, l) now reads two
    // groups, a watch of k/ alone follows its keys.
    let mut one_group = ctl.watch(&m3, &["--prefix", "k/"], false);
    let out = Command::new(common::synodctl())
        .args(["--endpoints", &c.http_endpoints(), "range", "split", "h"])
        .output()
        .expect("synodctl range split");
    assert!(out.status.success(), "{out:?}");
    let r4 = ctl.put(&m1, "k/1", "after the split");
    assert!(r4 > r3, "the new group goes on from its parent's revision");
    assert_eq!(
        one_group.events(1),
        [put_ev("k/1", "after the split", None, r4)]
    );
    let r5 = ctl.put(&m2, "d/1", "after the split");
    let mut halves = watch.events(3);
    assert!(
        halves
            .windows(2)
            .all(|w| w[0].mod_revision <= w[1].mod_revision),
        "in revision order: {halves:?}"
    );
    halves.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        halves,
        [
            put_ev("d/1", "after the split", Some("a"), r5),
            put_ev("d/2", "above", None, rd),
            put_ev("k/1", "after the split", Some("c"), r4),
        ],
        "both halves of the split keys (d/2 from before the split)"
    );
    // A client that reconnects from a revision before the split (as every etcd client
    // resumes) is sent to the new group, which holds its keys' past: no compaction error.
    let mut resumed = ctl.watch(&m2, &["--prefix", "k/", "--rev", "1", "--prev-kv"], false);
    assert_eq!(
        resumed.events(3),
        [
            put_ev("k/1", "b", None, r2),
            put_ev("k/1", "c", Some("b"), r3),
            put_ev("k/1", "after the split", Some("c"), r4),
        ]
    );
    assert_eq!(
        ctl.ok(&m3, &["get", "k/1", "--rev", &r2.to_string()]),
        "k/1\nb\n",
        "a read at a revision before the split, in the new group"
    );
}

/// Placement: a watch at a member its keys' group moves away from (`synodctl range move`)
/// goes on — the member reads the group on at its new hosts through a remote hub — every
/// revision once and in order, before and after the member dropped its replica, never
/// cancelled (before 2026-12-07 it was: "the watched keys moved … watch again").
#[test]
fn etcdctl_watch_goes_on_at_a_member_its_group_moves_away_from() {
    let Some(bin) = etcdctl() else { return };
    let c = placed_cluster();
    let ctl = Ctl { bin };
    let (m2, m5) = (grpc(&c, 2), grpc(&c, 5));
    // Group 1 ([c, m)) lives on 2, 3, 4: member 2 reads it from its own replica.
    let r1 = ctl.put(&m5, "d/1", "v1");
    let mut watch = ctl.watch(&m2, &["--prefix", "d/", "--rev", &r1.to_string()], false);
    assert_eq!(watch.events(1), [put_ev("d/1", "v1", None, r1)]);
    let mut move_cmd = Command::new(common::synodctl());
    move_cmd.args(["--endpoints", &c.member(5).http_addr]);
    move_cmd.args(["range", "move", "d", "--from", "2", "--to", "1"]);
    let (status, out, err) = run_with_deadline(move_cmd, Duration::from_secs(120));
    assert!(
        status.success() && out.contains("now on members 1,3,4"),
        "{out}{err}"
    );
    let mut want = Vec::new();
    for i in 2..=3 {
        let value = format!("v{i}");
        want.push(put_ev("d/1", &value, None, ctl.put(&m5, "d/1", &value)));
    }
    common::wait_until(WATCH_WAIT, "member 2 to drop group 1", || {
        let s: Value = c.status(2)?;
        let groups = s["groups"].as_array()?;
        (!groups.iter().any(|g| g["group"].as_u64() == Some(1))).then_some(())
    });
    for i in 4..=6 {
        let value = format!("v{i}");
        want.push(put_ev("d/1", &value, None, ctl.put(&m5, "d/1", &value)));
    }
    assert_eq!(
        watch.events(want.len()),
        want,
        "every revision once, in order"
    );
}

/// Placement: group 1 (`[c, m)`, on members 2, 3 and 4) splits at "h", asked at member 1,
/// which hosts neither half (the split is relayed to a host). Member 1's watch of `k/` —
/// through a remote hub — follows its keys to the new group on the same hosts, and member 5
/// (no host either) writes and reads them from its first request after the split: its relay
/// to the old group is refused as a wrong group, and the answer names the split.
#[test]
fn etcdctl_watch_at_a_member_hosting_neither_half_follows_a_placed_split() {
    let Some(bin) = etcdctl() else { return };
    let c = placed_cluster();
    let ctl = Ctl { bin };
    let (m1, m5) = (grpc(&c, 1), grpc(&c, 5));
    let r1 = ctl.put(&m5, "k/1", "before");
    let mut watch = ctl.watch(&m1, &["--prefix", "k/", "--rev", &r1.to_string()], false);
    assert_eq!(watch.events(1), [put_ev("k/1", "before", None, r1)]);
    let mut split = Command::new(common::synodctl());
    split.args(["--endpoints", &c.member(1).http_addr, "range", "split", "h"]);
    let (status, out, err) = run_with_deadline(split, Duration::from_secs(60));
    assert!(status.success(), "{out}{err}");
    let mut want = Vec::new();
    for i in 1..=3 {
        let value = format!("after-{i}");
        let r = ctl.put(&m5, "k/1", &value);
        assert!(r > r1, "the new group goes on from its parent's revision");
        assert_eq!(
            ctl.ok(&m5, &["get", "k/1", "--print-value-only"]),
            format!("{value}\n")
        );
        want.push(put_ev("k/1", &value, None, r));
    }
    assert_eq!(
        watch.events(want.len()),
        want,
        "every revision once, in order"
    );
    // Every member now names the new group with the parent's hosts.
    common::wait_until(
        WATCH_WAIT,
        "member 1's range list to show the split",
        || {
            let list = common::synodctl_ok(&c, &["range", "list"]);
            (list.contains("| h ") && list.matches("| 2,3,4 ").count() == 2).then_some(())
        },
    );
}

/// Placement (`[partition] replicas = 3` on 5 members): member 1 hosts groups 0 and 3 only,
/// yet watches keys of groups 1 and 2 — through remote hubs fed by their hosts — from the past
/// and live, one group's keys and a span over every group merged in revision order, and it
/// goes on when a host of the watched group is killed. Contended locks at members that host
/// not the lock's group wait for the holder through the same watches.
#[test]
fn etcdctl_watch_on_a_placed_cluster_reads_groups_hosted_elsewhere() {
    let Some(bin) = etcdctl() else { return };
    let mut c = placed_cluster();
    let ctl = Ctl { bin };
    let (m1, m5) = (grpc(&c, 1), grpc(&c, 5));
    // Group 1 ([c, m)) lives on 2, 3, 4; group 2 ([m, t)) on 3, 4, 5.
    let r1 = ctl.put(&m5, "d/1", "a");
    let mut one = ctl.watch(&m1, &["--prefix", "d/", "--rev", &r1.to_string()], false);
    assert_eq!(
        one.events(1),
        [put_ev("d/1", "a", None, r1)],
        "from the past"
    );
    let r2 = ctl.put(&m5, "d/1", "b");
    assert_eq!(one.events(1), [put_ev("d/1", "b", None, r2)], "live");
    // The HTTP watch stream at member 1, from the past: its "created" line, then both
    // revisions, one line each.
    let url = c.url(1, &format!("/v1/watch?key=d/1&start_revision={r1}"));
    let stream = reqwest::blocking::Client::new()
        .get(url)
        .timeout(WATCH_WAIT)
        .send()
        .expect("the HTTP watch");
    assert_eq!(stream.status(), 200);
    let lines: Vec<Value> = BufReader::new(stream)
        .lines()
        .take(3)
        .map(|l| serde_json::from_str(&l.expect("a line")).expect("a JSON line"))
        .collect();
    assert_eq!(lines[0]["created"], true, "{lines:?}");
    let revisions: Vec<u64> = lines[1..]
        .iter()
        .filter_map(|l| l["revision"].as_u64())
        .collect();
    assert_eq!(revisions, [r1, r2], "{lines:?}");

    // A watch of every key at member 1 from the start: groups 0 and 3 here, 1 and 2
    // elsewhere, merged in revision order. (Revisions are per group: two groups may write at
    // the same number, so the comparison is by key.)
    let mut all = ctl.watch(&m1, &["--prefix", "", "--rev", "1"], false);
    let ra = ctl.put(&m5, "a/1", "x");
    let rn = ctl.put(&m5, "n/1", "y");
    let rd = ctl.put(&m5, "d/2", "z");
    let ru = ctl.put(&m5, "u/1", "w");
    let mut got = all.events(6);
    assert!(
        got.windows(2)
            .all(|w| w[0].mod_revision <= w[1].mod_revision),
        "in revision order: {got:?}"
    );
    got.sort_by(|a, b| (&a.key, a.mod_revision).cmp(&(&b.key, b.mod_revision)));
    assert_eq!(
        got,
        [
            put_ev("a/1", "x", None, ra),
            put_ev("d/1", "a", None, r1),
            put_ev("d/1", "b", None, r2),
            put_ev("d/2", "z", None, rd),
            put_ev("n/1", "y", None, rn),
            put_ev("u/1", "w", None, ru),
        ]
    );
    assert_eq!(one.events(1), [put_ev("d/2", "z", None, rd)]);

    // Member 4 hosts groups 1 and 2: without it, the remote hubs go on at the next host.
    c.kill(4);
    let r3 = common::wait_until(WATCH_WAIT, "a put without member 4", || {
        let out = ctl.output(&m5, &["put", "d/1", "c", "-w", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        out.status.success().then(|| revision(&v))
    });
    assert_eq!(
        one.events(1),
        [put_ev("d/1", "c", None, r3)],
        "after the kill"
    );
    c.restart(4);

    // `etcdctl lock` (clientv3's recipe: a waiter watches the key ahead of it) at members 1
    // and 5, neither of which hosts the lock's group (1: keys "lk/…" are in [c, m)). The holder
    // holds until told to release: a line written to a FIFO its command reads.
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("release");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let fifo_arg = fifo.to_str().expect("a UTF-8 temp path");
    let script = "echo held; read go < \"$0\"; echo released";
    let mut holder = etcdctl_command(&ctl.bin, &m1)
        .args(["lock", "lk", "--", "sh", "-c", script, fifo_arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcdctl lock");
    let stdout = holder.stdout.take().expect("stdout");
    let mut holder_out = BufReader::new(stdout).lines();
    let first = holder_out.next().and_then(Result::ok);
    assert_eq!(first.as_deref(), Some("held"));
    let mut second = etcdctl_command(&ctl.bin, &m5)
        .args(["lock", "lk", "--", "echo", "second"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the second etcdctl lock");
    // The second has queued its key behind the holder's, and must be waiting, not holding.
    common::wait_until(WATCH_WAIT, "the second contender queued", || {
        (ctl.keys(&m1, &["lk/", "--prefix"]).len() == 2).then_some(())
    });
    assert!(
        second.try_wait().expect("try_wait").is_none(),
        "the second got the lock while the first held it"
    );
    std::fs::write(&fifo, "go\n").expect("release the holder");
    let rest: Vec<String> = holder_out.map_while(Result::ok).collect();
    assert_eq!(rest, ["released"]);
    assert!(holder.wait().expect("the first lock exits").success());
    let out = second.wait_with_output().expect("the second lock exits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "second");
}

/// A merge hands a watch's keys to the group below: the watch reads the frozen group to its
/// last revision and goes on in the group below after the absorb, whose revision is at least
/// the frozen group's — so the revisions a client sees keep growing. A watch made afterwards
/// from before the merge replays the absorbed keys' history at their own revisions.
#[test]
fn etcdctl_watch_on_a_partitioned_cluster_follows_its_keys_through_a_merge() {
    let Some(bin) = etcdctl() else { return };
    let c = Cluster::start_configured(3, "omnipaxos", &|cfg| {
        cfg.partition.split_keys = vec!["m".into()];
    });
    let ctl = Ctl { bin };
    let (m1, m2, m3) = (grpc(&c, 1), grpc(&c, 2), grpc(&c, 3));
    let q1 = ctl.put(&m1, "q/1", "a");
    let q2 = ctl.put(&m3, "q/2", "b");
    let mut below_last = 0;
    for m in [&m1, &m2, &m3, &m1] {
        let r = ctl.put(m, "b", "below");
        assert!(r > below_last, "group 0's revisions grow");
        below_last = r;
    }
    let mut watch = ctl.watch(&m2, &["--prefix", "q/", "--rev", &q2.to_string()], false);
    assert_eq!(watch.events(1), [put_ev("q/2", "b", None, q2)]);
    // A watch of the group below's own keys goes on too, unmoved by the revision jump.
    let mut below = ctl.watch(&m3, &["b"], false);
    let out = Command::new(common::synodctl())
        .args(["--endpoints", &c.http_endpoints(), "range", "merge", "m"])
        .output()
        .expect("synodctl range merge");
    assert!(out.status.success(), "{out:?}");
    let r = ctl.put(&m1, "q/1", "after the merge");
    assert!(
        r > q2.max(below_last),
        "the merged group goes on from the larger revision"
    );
    assert_eq!(watch.events(1), [put_ev("q/1", "after the merge", None, r)]);
    let rb = ctl.put(&m2, "b", "after the merge");
    assert_eq!(below.events(1), [put_ev("b", "after the merge", None, rb)]);
    let r2 = ctl.put(&m3, "q/2", "later");
    assert_eq!(watch.events(1), [put_ev("q/2", "later", None, r2)]);
    // The merged group holds the absorbed keys' past at their own revisions: a client that
    // reconnects from before the merge is served, not told "compacted".
    let mut resumed = ctl.watch(&m3, &["--prefix", "q/", "--rev", "1", "--prev-kv"], false);
    assert_eq!(
        resumed.events(4),
        [
            put_ev("q/1", "a", None, q1),
            put_ev("q/2", "b", None, q2),
            put_ev("q/1", "after the merge", Some("a"), r),
            put_ev("q/2", "later", Some("b"), r2),
        ]
    );
    assert_eq!(
        ctl.ok(&m2, &["get", "q/2", "--rev", &q2.to_string()]),
        "q/2\nb\n"
    );
    assert_eq!(
        ctl.ok(&m2, &["get", "b", "--rev", &below_last.to_string()]),
        "b\nbelow\n"
    );
}

#[test]
fn etcdctl_history_compaction_and_sorted_gets_omnipaxos() {
    etcdctl_history_compaction_and_sorted_gets("omnipaxos");
}

#[test]
fn etcdctl_history_compaction_and_sorted_gets_vr() {
    etcdctl_history_compaction_and_sorted_gets("vr");
}

fn etcdctl_history_compaction_and_sorted_gets(engine: &str) {
    let Some(bin) = etcdctl() else { return };
    let c = Cluster::start(3, engine);
    let ctl = Ctl { bin };
    let (m1, m2, m3) = (grpc(&c, 1), grpc(&c, 2), grpc(&c, 3));
    // Created c, a, b; then c modified: create order c a b, modify order a b c.
    let r1 = ctl.put(&m2, "/s/c", "1");
    let r2 = ctl.put(&m3, "/s/a", "2");
    let r3 = ctl.put(&m2, "/s/b", "3");
    let r4 = ctl.put(&m3, "/s/c", "4");
    sorted_gets(&ctl, &m1);

    let at = |rev: u64| ctl.ok(&m1, &["get", "--prefix", "/s/", "--rev", &rev.to_string()]);
    assert_eq!(at(r1), "/s/c\n1\n");
    assert_eq!(at(r2), "/s/a\n2\n/s/c\n1\n");
    assert_eq!(at(r4), "/s/a\n2\n/s/b\n3\n/s/c\n4\n");
    let future = (r4 + 100).to_string();
    assert!(
        ctl.fails(&m1, &["get", "/s/c", "--rev", &future])
            .contains(FUTURE)
    );

    let r3s = r3.to_string();
    assert_eq!(
        ctl.ok(&m1, &["compaction", &r3s]),
        format!("compacted revision {r3}\n")
    );
    // Below the compaction revision reads fail on every member; at it they still work.
    for m in [&m1, &m2, &m3] {
        let err = ctl.fails(m, &["get", "/s/c", "--rev", &r2.to_string()]);
        assert!(
            err.contains(COMPACTED),
            "get below the compaction at {m}: {err}"
        );
        assert_eq!(ctl.ok(m, &["get", "/s/c", "--rev", &r3s]), "/s/c\n1\n");
    }
    assert!(
        ctl.fails(&m2, &["compaction", &r2.to_string()])
            .contains(COMPACTED)
    );
    assert!(ctl.fails(&m2, &["compaction", &future]).contains(FUTURE));

    // A watch from below the compaction: created, then cancelled with the compact revision.
    let mut watch = ctl.watch(&m2, &["--prefix", "/s/", "--rev", &r1.to_string()], false);
    let (status, lines) = watch.exit();
    let stderr = watch.stderr();
    assert!(!status.success(), "a compacted watch exits non-zero");
    assert!(
        stderr.contains(&format!("watch was canceled ({COMPACTED})")),
        "{stderr}"
    );
    let resp: Value = serde_json::from_str(&lines.concat()).expect("one cancel response");
    assert_eq!(resp["Canceled"], true, "{resp}");
    assert_eq!(resp["CompactRevision"].as_u64(), Some(r3), "{resp}");
    // From the compaction revision itself: everything from there on.
    let mut watch = ctl.watch(&m3, &["--prefix", "/s/", "--rev", &r3s, "--prev-kv"], false);
    let want = vec![
        put_ev("/s/b", "3", None, r3),
        put_ev("/s/c", "4", Some("1"), r4),
    ];
    assert_eq!(watch.events(want.len()), want);
}

/// etcdctl's sort and limit flags over /s/{a,b,c}, created c, a, b and modified a, b, c.
fn sorted_gets(ctl: &Ctl, m: &str) {
    let keys = |args: &[&str]| ctl.keys(m, &[&["--prefix", "/s/"], args].concat());
    assert_eq!(
        keys(&["--sort-by=CREATE", "--order=DESCEND"]),
        ["/s/b", "/s/a", "/s/c"]
    );
    assert_eq!(keys(&["--sort-by=CREATE"]), ["/s/c", "/s/a", "/s/b"]);
    assert_eq!(keys(&["--sort-by=MODIFY"]), ["/s/a", "/s/b", "/s/c"]);
    assert_eq!(keys(&["--order=DESCEND"]), ["/s/c", "/s/b", "/s/a"]);
    assert_eq!(keys(&["--sort-by=CREATE", "--limit", "1"]), ["/s/c"]);
    let limited = ctl.json(
        m,
        &[
            "get",
            "--prefix",
            "/s/",
            "--sort-by=MODIFY",
            "--order=DESCEND",
            "--limit",
            "2",
        ],
    );
    let got: Vec<String> = limited["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(|kv| b64(&kv["key"]))
        .collect();
    assert_eq!(got, ["/s/c", "/s/b"], "{limited}");
    assert_eq!(
        (limited["count"].as_u64(), limited["more"].as_bool()),
        (Some(3), Some(true)),
        "{limited}"
    );
}

#[test]
fn python_etcd3_watch_compact_and_list_watch_loop_omnipaxos() {
    python_etcd3_watch_compact_and_list_watch_loop("omnipaxos");
}

#[test]
fn python_etcd3_watch_compact_and_list_watch_loop_vr() {
    python_etcd3_watch_compact_and_list_watch_loop("vr");
}

/// Every check the script makes, in its order.
const PYTHON_CHECKS: [&str; 6] = [
    "sorted_gets",
    "history_and_compact",
    "watch_iterator",
    "watch_callbacks",
    "watch_compacted",
    "list_watch_loop",
];

fn python_etcd3_watch_compact_and_list_watch_loop(engine: &str) {
    let Some(python) = python_etcd3() else { return };
    let c = Cluster::start_configured(3, engine, &|cfg| {
        cfg.limits.watch_progress_notify_ms = PROGRESS_NOTIFY_MS;
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/etcd3_checks.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script).arg("--endpoints").arg(c.grpc_endpoints());
    let (status, stdout, stderr) = run_with_deadline(cmd, PYTHON_RUN_MAX);
    assert!(
        status.success(),
        "python-etcd3 checks failed ({status}):\n{stdout}\n{stderr}"
    );
    let passed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PASS "))
        .collect();
    assert_eq!(passed, PYTHON_CHECKS, "{stdout}");
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).expect("RESULT json"))
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}"));
    // One compaction error, answered by exactly one re-list; events and progress seen.
    assert_eq!(result["compacted"], 1, "{result}");
    assert_eq!(result["lists"], 2, "{result}");
    assert!(result["events"].as_u64() >= Some(40), "{result}");
    assert!(result["progress"].as_u64() >= Some(2), "{result}");
    // The reflector's map is the cluster's state, read back through another API and member.
    assert_eq!(result["items"], http_prefix(&c, 2, "/ref/"), "{result}");
}

/// `prefix` listed through member `id`'s HTTP API, as {key: value}.
fn http_prefix(c: &Cluster, id: u64, prefix: &str) -> Value {
    let url = c.url(id, &format!("/v1/kv?prefix={}", prefix.replace('/', "%2F")));
    let v: Value = c
        .http
        .get(url)
        .send()
        .expect("GET prefix")
        .json()
        .expect("json");
    let kvs = v["kvs"].as_array().expect("kvs");
    Value::Object(
        kvs.iter()
            .map(|kv| (kv["key"].as_str().expect("key").into(), kv["value"].clone()))
            .collect(),
    )
}
