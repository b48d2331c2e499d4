//! Placement on real processes (`[partition] replicas = 3` on 5 members): each group after the
//! first lives on 3 members, every member serves every key — through etcdctl, at every
//! member's endpoint, relaying to a host where it hosts no replica — a member that hosts every
//! group can be killed and the others still serve its keys, `synodctl range list` shows where
//! each range lives, reads over every group are served at every member (their parts relayed,
//! read at one revision), leases and compaction reach every group through relays, `endpoint
//! hashkv` agrees at every member and a backup at a member gathers the groups it does not host
//! (restored into a new cluster), a range moves between members on command, a member
//! replaced through etcdctl (one added, one removed) has its groups moved off it, and so has a
//! member that lost a moved range's records (it may have voted there, so it votes no more); a
//! move recorded in the range directory is finished by the group's next leader.

mod common;

use common::{Cluster, etcdctl, etcdctl_run, run_with_deadline, synodctl_ok, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// 5 members, split at c, m and t, each group after the first on 3 of them.
fn placed() -> Cluster {
    placed_with(&|_| {})
}

fn placed_with(tweak: &dyn Fn(&mut synod_node::ClusterConfig)) -> Cluster {
    Cluster::start_configured(5, "omnipaxos", &|cfg| {
        cfg.partition.split_keys = vec!["c".into(), "m".into(), "t".into()];
        cfg.partition.directory = true;
        cfg.partition.replicas = 3;
        // These tests read the groups where the placement rule put them (member 4 hosts every
        // one); rebalancing would move one at once (`a_new_member_is_given_ranges_...`).
        cfg.partition.rebalance = false;
        tweak(cfg);
    })
}

/// One key of each group, in key order.
const KEYS: [&str; 4] = ["a", "d", "n", "u"];

/// Until members 1 and 2 report the groups they host.
fn wait_placed(c: &Cluster) {
    for id in [1, 2] {
        wait_until(Duration::from_secs(30), "the placement", || {
            hosted(c, id).filter(|h| !h.is_empty())
        });
    }
}

/// The groups member `id` hosts, each with its voters.
fn hosted(c: &Cluster, id: u64) -> Option<Vec<(u64, Vec<u64>)>> {
    let s: Value = c.status(id)?;
    s["groups"]
        .as_array()?
        .iter()
        .map(|g| {
            let voters: Option<Vec<u64>> =
                g["voters"].as_array()?.iter().map(Value::as_u64).collect();
            Some((g["group"].as_u64()?, voters?))
        })
        .collect()
}

/// Each group's leader, as the leader itself reports it (a member reports the leaders of the
/// groups it hosts only), asked of members 1 to 5.
fn leaders_claimed(c: &Cluster) -> std::collections::BTreeMap<u64, u64> {
    let mut leaders = std::collections::BTreeMap::new();
    for id in 1..=5 {
        let Some(s) = c.status(id) else {
            continue;
        };
        for g in s["groups"].as_array().into_iter().flatten() {
            if let Some(group) = g["group"].as_u64()
                && g["leader"].as_u64() == Some(id)
            {
                leaders.insert(group, id);
            }
        }
    }
    leaders
}

fn at(c: &Cluster, etcdctl: &std::path::Path, id: u64, args: &[&str]) -> (bool, String) {
    let (ok, out, err) = etcdctl_run(etcdctl, &c.member(id).grpc_addr, args, None);
    (ok, format!("{out}{err}"))
}

fn ok_at(c: &Cluster, etcdctl: &std::path::Path, id: u64, args: &[&str]) -> String {
    let (ok, said) = at(c, etcdctl, id, args);
    assert!(ok, "etcdctl {args:?} at member {id}: {said}");
    said
}

/// Every member reads every key's latest value, linearizable and serializable.
fn every_member_reads(c: &Cluster, etcdctl: &std::path::Path, members: &[u64], value: &str) {
    for &id in members {
        for key in KEYS {
            let got = ok_at(c, etcdctl, id, &["get", key, "--print-value-only"]);
            assert_eq!(got.trim(), value, "{key} at member {id}");
            // A relayed serializable read is served linearizable: the latest value too.
            let args = ["get", key, "--print-value-only", "--consistency=s"];
            let got = ok_at(c, etcdctl, id, &args);
            assert_eq!(got.trim(), value, "{key} at member {id}, serializable");
        }
    }
}

/// A lease granted at one member, keys of two groups attached at another that hosts one of
/// them, seen, renewed and revoked at others: its requests reach every group, through relays
/// where a group is not on the member asked. Then a compaction, fanned out the same way.
fn leases_reach_every_group(c: &Cluster, etcdctl: &std::path::Path) {
    let granted = ok_at(c, etcdctl, 2, &["lease", "grant", "60"]);
    // "lease 694d77b1c7f8d20b granted with TTL(60s)"
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("a lease id")
        .to_string();
    // Member 1 hosts group 3 (x1) but not group 1 (e1).
    for key in ["e1", "x1"] {
        ok_at(
            c,
            etcdctl,
            1,
            &["put", key, "leased", &format!("--lease={id}")],
        );
    }
    let ttl = ok_at(c, etcdctl, 5, &["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("attached keys([e1 x1])"), "{ttl}");
    ok_at(c, etcdctl, 3, &["lease", "keep-alive", "--once", &id]);
    let listed = ok_at(c, etcdctl, 4, &["lease", "list"]);
    assert!(listed.contains(&id), "{listed}");
    ok_at(c, etcdctl, 4, &["lease", "revoke", &id]);
    for member in [1, 2] {
        let got = ok_at(c, etcdctl, member, &["get", "e1"]);
        assert!(
            got.trim().is_empty(),
            "e1 outlived its lease at {member}: {got}"
        );
        let got = ok_at(c, etcdctl, member, &["get", "x1"]);
        assert!(
            got.trim().is_empty(),
            "x1 outlived its lease at {member}: {got}"
        );
    }
    let (ok, said) = at(c, etcdctl, 2, &["lease", "timetolive", &id]);
    assert!(ok && said.contains("already expired"), "{said}");
    let compacted = ok_at(c, etcdctl, 2, &["compaction", "2"]);
    assert!(compacted.contains("compacted revision 2"), "{compacted}");
}

/// Every member reads all the keys at once (over every group), linearizable and serializable,
/// each at `value`; and again at the first read's revision, the same keys and values.
fn every_member_reads_all(c: &Cluster, etcdctl: &std::path::Path, members: &[u64], value: &str) {
    let pairs = |out: &str| -> Vec<(String, String)> {
        let kvs: Value = serde_json::from_str(out).expect("etcdctl's JSON");
        let kvs = kvs["kvs"].as_array().cloned().unwrap_or_default();
        let text = |v: &Value| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD;
            let bytes = b64
                .decode(v.as_str().unwrap_or_default())
                .unwrap_or_default();
            String::from_utf8(bytes).unwrap_or_default()
        };
        kvs.iter()
            .map(|kv| (text(&kv["key"]), text(&kv["value"])))
            .collect()
    };
    let want: Vec<(String, String)> = KEYS.iter().map(|k| (k.to_string(), value.into())).collect();
    for &id in members {
        for consistency in ["l", "s"] {
            let flag = format!("--consistency={consistency}");
            let out = ok_at(
                c,
                etcdctl,
                id,
                &["get", "", "--prefix", "-w", "json", &flag],
            );
            assert_eq!(pairs(&out), want, "all keys at member {id} ({flag})");
            let header: Value = serde_json::from_str(&out).expect("etcdctl's JSON");
            let revision = header["header"]["revision"].as_u64().unwrap_or_default();
            assert!(revision > 0, "{out}");
            let rev = format!("--rev={revision}");
            let again = ok_at(c, etcdctl, id, &["get", "", "--prefix", "-w", "json", &rev]);
            assert_eq!(pairs(&again), want, "all keys at member {id}, {rev}");
        }
    }
}

#[test]
fn groups_on_three_of_five_members_serve_every_key_from_every_member() {
    let Some(etcdctl) = etcdctl() else {
        return;
    };
    let mut c = placed();
    // Members sorted 1..5: group p on p, p+1, p+2 (mod 5); the first group everywhere.
    let everyone = vec![1, 2, 3, 4, 5];
    let want: [Vec<(u64, Vec<u64>)>; 5] = [
        vec![(0, everyone.clone()), (3, vec![1, 4, 5])],
        vec![(0, everyone.clone()), (1, vec![2, 3, 4])],
        vec![
            (0, everyone.clone()),
            (1, vec![2, 3, 4]),
            (2, vec![3, 4, 5]),
        ],
        vec![
            (0, everyone.clone()),
            (1, vec![2, 3, 4]),
            (2, vec![3, 4, 5]),
            (3, vec![1, 4, 5]),
        ],
        vec![
            (0, everyone.clone()),
            (2, vec![3, 4, 5]),
            (3, vec![1, 4, 5]),
        ],
    ];
    for id in 1..=5u64 {
        let got = wait_until(Duration::from_secs(30), "member's groups", || {
            hosted(&c, id).filter(|h| h.len() == want[id as usize - 1].len())
        });
        assert_eq!(got, want[id as usize - 1], "groups of member {id}");
    }
    // Every member writes every group's key, and the next member reads them; then every
    // member reads them all.
    for id in 1..=5u64 {
        let value = format!("from-{id}");
        for key in KEYS {
            ok_at(&c, &etcdctl, id, &["put", key, &value]);
        }
        every_member_reads(&c, &etcdctl, &[id % 5 + 1], &value);
    }
    every_member_reads(&c, &etcdctl, &[1, 2, 3, 4, 5], "from-5");
    // `range list` at member 1 (groups 0 and 3) shows all four ranges and where they live.
    let list = wait_until(Duration::from_secs(20), "the directory", || {
        let l = synodctl_ok(&c, &["range", "list"]);
        l.contains("records these 4 ranges").then_some(l)
    });
    assert!(list.contains("| 2,3,4 "), "{list}");
    assert!(list.contains("| 3,4,5 "), "{list}");
    assert!(list.contains("| 1,4,5 "), "{list}");
    assert!(list.contains("groups live on some members each"), "{list}");
    // Leaders spread (`leaders.rs`): by rotation alone group 3 would be led by member 1, which
    // most often leads the first group too; each of the four groups ends led by a member of
    // its own.
    let leaders = wait_until(Duration::from_secs(30), "leaders spread", || {
        let l = leaders_claimed(&c);
        let mut by = l.values().copied().collect::<Vec<u64>>();
        by.sort_unstable();
        by.dedup();
        (l.len() == 4 && by.len() == 4).then_some(l)
    });
    for (g, hosts) in [(1, [2, 3, 4]), (2, [3, 4, 5]), (3, [1, 4, 5])] {
        assert!(hosts.contains(&leaders[&g]), "group {g}: {leaders:?}");
    }

    // A read over every group, at every member: the parts of groups hosted elsewhere are
    // relayed, and all are read at one revision — the reply's, which a read at that revision
    // reproduces.
    every_member_reads_all(&c, &etcdctl, &[1, 2, 3, 4, 5], "from-5");
    leases_reach_every_group(&c, &etcdctl);
    let backup = backups_and_hashes(&c, &etcdctl);
    // (Watches of groups a member does not host: crates/synod/tests/watch.rs; membership
    // changes: `a_member_is_replaced_and_its_groups_move_off_it`.)

    // Member 4 hosts every group: without it, each group still has 2 of its 3 hosts, and
    // every other member still reads and writes every key (relays move to the next host).
    c.kill(4);
    let rest = [1, 2, 3, 5];
    for key in KEYS {
        wait_until(Duration::from_secs(30), "a write without member 4", || {
            at(&c, &etcdctl, 1, &["put", key, "without-4"])
                .0
                .then_some(())
        });
    }
    every_member_reads(&c, &etcdctl, &rest, "without-4");
    every_member_reads_all(&c, &etcdctl, &rest, "without-4");
    // A backup at member 2 gathers groups 2 and 3 from their hosts left (3 and 5, 1 and 5).
    ok_at(&c, &etcdctl, 2, &["snapshot", "save", path_str(&backup)]);
    let (ok, summary, err) = synod_restore(&[path_str(&backup), "--verify"]);
    assert!(ok, "verify: {summary}{err}");
    assert!(summary.contains("keys             4"), "{summary}");
    let _ = std::fs::remove_file(&backup);
    c.restart(4);
    wait_until(Duration::from_secs(30), "member 4 back", || {
        let got = at(
            &c,
            &etcdctl,
            4,
            &["get", "u", "--print-value-only", "--consistency=s"],
        );
        (got.0 && got.1.trim() == "without-4").then_some(())
    });
    every_member_reads(&c, &etcdctl, &[1, 2, 3, 4, 5], "without-4");
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn synod_restore(args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_synod"));
    cmd.arg("restore").args(args);
    let (status, out, err) = run_with_deadline(cmd, Duration::from_secs(120));
    (status.success(), out, err)
}

/// `endpoint hashkv` and `snapshot save` at members that host some of the groups: the
/// members' hashes agree, and a backup at member 2 (groups 0 and 1) holds every group's keys —
/// a new, unplaced 3-member cluster restored from it serves them, without the writes made
/// after it. Returns a path for another backup.
fn backups_and_hashes(c: &Cluster, etcdctl: &Path) -> PathBuf {
    for key in KEYS {
        ok_at(c, etcdctl, 2, &["put", key, &format!("saved-{key}")]);
    }
    // Quiet now: every member's hash, over every group, is the same.
    let all = c.grpc_endpoints();
    let hashes = wait_until(Duration::from_secs(30), "hashes to agree", || {
        let (ok, out, _) = etcdctl_run(etcdctl, &all, &["endpoint", "hashkv", "-w", "json"], None);
        let v: Value = serde_json::from_str(out.trim()).ok().filter(|_| ok)?;
        let hashes: Vec<u64> = (v.as_array()?.iter())
            .map(|e| e["HashKV"]["hash"].as_u64())
            .collect::<Option<_>>()?;
        (hashes.len() == 5 && hashes.iter().all(|h| *h == hashes[0])).then_some(hashes)
    });
    assert_ne!(hashes[0], 0, "a hash of every group");
    let dir = std::env::temp_dir();
    let file = dir.join(format!("synod-placed-{}.db", std::process::id()));
    ok_at(c, etcdctl, 2, &["snapshot", "save", path_str(&file)]);
    for key in KEYS {
        ok_at(c, etcdctl, 1, &["put", key, "after-the-backup"]);
    }
    let restored = Cluster::start_prepared(
        3,
        "omnipaxos",
        &|cfg| cfg.partition.split_keys = vec!["m".into()],
        &|config, data| {
            let (ok, out, err) = synod_restore(&[
                path_str(&file),
                "--config",
                path_str(config),
                "--data-dir",
                path_str(data),
            ]);
            assert!(ok, "synod restore: {out}\n{err}");
        },
    );
    let (ok, out, err) = etcdctl_run(
        etcdctl,
        &restored.grpc_endpoints(),
        &["get", "", "--prefix"],
        None,
    );
    assert!(ok, "{err}");
    let want: String = KEYS.iter().map(|k| format!("{k}\nsaved-{k}\n")).collect();
    assert_eq!(out, want, "every group's keys, as backed up");
    drop(restored);
    let _ = std::fs::remove_file(&file);
    dir.join(format!("synod-placed-{}-again.db", std::process::id()))
}

/// The corruption check on placed groups: member 4 (a host of every group) comes back applying
/// every put with its value altered. No two members host the same groups, so the check compares
/// each group among its hosts: member 4 is the odd one out in each, raises CORRUPT and refuses
/// service; the others list no alarm, log the mismatch by group, and serve every key.
#[test]
fn a_member_whose_placed_groups_diverge_raises_corrupt() {
    let Some(etcdctl) = etcdctl() else {
        return;
    };
    let mut c = placed_with(&|cfg| cfg.corrupt_check_ms = 300);
    c.kill(4);
    c.restart_with(4, &["--plant-bug", "divergent-apply"]);
    for key in KEYS {
        wait_until(Duration::from_secs(30), "a put", || {
            at(&c, &etcdctl, 1, &["put", key, "value"]).0.then_some(())
        });
    }
    wait_until(Duration::from_secs(30), "alarm:CORRUPT on member 4", || {
        let (_, said) = at(&c, &etcdctl, 4, &["alarm", "list"]);
        said.contains("alarm:CORRUPT").then_some(())
    });
    let log = c.log(4);
    assert!(log.contains("CORRUPT alarm raised: group"), "{log}");
    wait_until(
        Duration::from_secs(30),
        "a host logging the mismatch",
        || {
            [1, 2, 3, 5]
                .iter()
                .any(|id| c.log(*id).contains("HashKV mismatch: group"))
                .then_some(())
        },
    );
    for id in [1, 2, 3, 5] {
        assert_eq!(
            ok_at(&c, &etcdctl, id, &["alarm", "list"]),
            "",
            "member {id}"
        );
        for key in KEYS {
            let got = ok_at(&c, &etcdctl, id, &["get", key, "--print-value-only"]);
            assert_eq!(got.trim(), "value", "{key} at member {id}");
        }
    }
    let (ok, said) = at(&c, &etcdctl, 4, &["get", "a"]);
    assert!(!ok && said.contains("corrupt cluster"), "{said}");
}

/// `synodctl range move` on real processes: group 1 (`[c, m)`, on members 2, 3 and 4) moves
/// from member 2 to member 1 — asked at member 5, which hosts neither — while etcdctl writes
/// its key. Member 1 then hosts it and member 2 does not (nor after a restart: its log says it
/// left), `range list` shows its new hosts, every member reads what was written before and
/// during the move, and with member 3 (one of its old hosts) killed, members 1 and 4 serve it.
/// A move that cannot be is refused by name, and asked again, a finished one is answered as
/// done.
#[test]
fn a_range_moves_from_one_member_to_another() {
    let Some(etcdctl) = etcdctl() else {
        return;
    };
    let mut c = placed();
    wait_placed(&c);
    ok_at(&c, &etcdctl, 5, &["put", "d", "before"]);
    let writer = {
        let (etcdctl, endpoint) = (etcdctl.clone(), c.member(3).grpc_addr.clone());
        std::thread::spawn(move || {
            for i in 0..30 {
                let value = format!("during-{i}");
                let (ok, _, err) = etcdctl_run(&etcdctl, &endpoint, &["put", "d", &value], None);
                assert!(ok, "put during the move: {err}");
            }
        })
    };
    let said = synodctl_at(&c, 5, &["range", "move", "d", "--from", "2", "--to", "1"]);
    assert!(said.contains("now on members 1,3,4"), "{said}");
    writer.join().expect("the writer");
    let groups = |c: &Cluster, id| hosted(c, id).unwrap_or_default();
    wait_until(Duration::from_secs(20), "member 2 to leave group 1", || {
        (!groups(&c, 2).iter().any(|(g, _)| *g == 1)).then_some(())
    });
    assert!(
        groups(&c, 1).contains(&(1, vec![1, 3, 4])),
        "member 1 hosts group 1: {:?}",
        groups(&c, 1)
    );
    reads_d(&c, &etcdctl, &[1, 2, 3, 4, 5], "during-29");
    let list = wait_until(Duration::from_secs(20), "the directory", || {
        let l = synodctl_ok(&c, &["range", "list"]);
        l.contains("| 1,3,4 ").then_some(l)
    });
    assert!(list.contains("| 3,4,5 "), "{list}");
    // Asked again: done already. Refused: a member that does not host it, one that does.
    let again = synodctl_at(&c, 4, &["range", "move", "d", "--from", "2", "--to", "1"]);
    assert!(again.contains("now on members 1,3,4"), "{again}");
    for (args, why) in [
        (
            ["range", "move", "d", "--from", "5", "--to", "2"],
            "does not host",
        ),
        (
            ["range", "move", "d", "--from", "3", "--to", "4"],
            "hosts group 1 already",
        ),
        (
            ["range", "move", "a", "--from", "1", "--to", "2"],
            "lives on every member",
        ),
    ] {
        let (ok, said) = synodctl_run(&c, 2, &args);
        assert!(!ok && said.contains(why), "{args:?}: {said}");
    }
    c.kill(2);
    c.restart(2);
    wait_until(Duration::from_secs(30), "member 2 back", || {
        let got = at(&c, &etcdctl, 2, &["get", "d", "--print-value-only"]);
        (got.0 && got.1.trim() == "during-29").then_some(())
    });
    assert!(
        !groups(&c, 2).iter().any(|(g, _)| *g == 1),
        "{:?}",
        groups(&c, 2)
    );
    c.kill(3);
    for id in [1, 2, 4, 5] {
        let value = format!("after-{id}");
        wait_until(Duration::from_secs(30), "a write without member 3", || {
            at(&c, &etcdctl, id, &["put", "d", &value]).0.then_some(())
        });
    }
    reads_d(&c, &etcdctl, &[1, 2, 4, 5], "after-5");
}

/// A move outlives its driver (`targets.rs`): group 1 (key d, on members 2, 3 and 4) is asked
/// to move from member 2 to member 1 while member 1 is down, so the move cannot finish and the
/// operator is told it timed out; the range directory records it (`range list` shows it). Then
/// the group's leader is killed and member 1 comes back: the new leader goes on with the
/// recorded move — member 1 joins, member 2 leaves — and the record goes. (Before records, the
/// new leader dropped the learner the move had added, and the group stayed where it was.)
#[test]
fn a_recorded_move_outlives_its_driver() {
    let Some(etcdctl) = etcdctl() else {
        return;
    };
    // A move times out after 6 request timeouts (18 s); each leader that goes on with its
    // record gives it as long again.
    let mut c = placed();
    wait_placed(&c);
    ok_at(&c, &etcdctl, 5, &["put", "d", "before"]);
    c.kill(1);
    let (ok, said) = synodctl_run(&c, 5, &["range", "move", "d", "--from", "2", "--to", "1"]);
    assert!(!ok, "a move to a member that is down cannot finish: {said}");
    let list = wait_until(Duration::from_secs(30), "the move recorded", || {
        let l = synodctl_at(&c, 5, &["range", "list"]);
        l.contains("moving: group 1 from member 2 to member 1")
            .then_some(l)
    });
    let leader = wait_until(Duration::from_secs(30), "group 1's leader", || {
        leaders_claimed(&c).get(&1).copied()
    });
    assert!([2, 3, 4].contains(&leader), "{leader}: {list}");
    c.kill(leader);
    c.restart(1);
    let witness = [3, 4].into_iter().find(|m| *m != leader).unwrap_or(3);
    let group_1 =
        |c: &Cluster| (hosted(c, witness).unwrap_or_default().into_iter()).find(|(g, _)| *g == 1);
    wait_until(Duration::from_secs(90), "the move finished", || {
        group_1(&c).filter(|(_, v)| *v == [1, 3, 4])
    });
    wait_until(Duration::from_secs(30), "the record gone", || {
        let l = synodctl_at(&c, 5, &["range", "list"]);
        (!l.contains("moving:")).then_some(())
    });
    c.restart(leader);
    ok_at(&c, &etcdctl, 2, &["put", "d", "after"]);
    reads_d(&c, &etcdctl, &[1, 2, 3, 4, 5], "after");
}

/// Every member in `members` reads `value` at key d (linearizable, and serializable once its
/// replica, if it has one, caught up).
fn reads_d(c: &Cluster, etcdctl: &Path, members: &[u64], value: &str) {
    for &id in members {
        let got = ok_at(c, etcdctl, id, &["get", "d", "--print-value-only"]);
        assert_eq!(got.trim(), value, "d at member {id}");
        wait_until(Duration::from_secs(10), "a serializable read", || {
            let args = ["get", "d", "--print-value-only", "--consistency=s"];
            let (ok, got) = at(c, etcdctl, id, &args);
            (ok && got.trim() == value).then_some(())
        });
    }
}

/// synodctl against member `id`'s HTTP address only.
fn synodctl_run(c: &Cluster, id: u64, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(common::synodctl());
    cmd.args(["--endpoints", &c.member(id).http_addr])
        .args(args);
    let (status, out, err) = run_with_deadline(cmd, Duration::from_secs(120));
    (status.success(), format!("{out}{err}"))
}

fn synodctl_at(c: &Cluster, id: u64, args: &[&str]) -> String {
    let (ok, said) = synodctl_run(c, id, args);
    assert!(ok, "synodctl {args:?} at member {id}: {said}");
    said
}

/// The MEMBERS column of `range list` at member 1, for the ranges after the first.
fn hosts_listed(c: &Cluster) -> Vec<Vec<u64>> {
    let l = synodctl_at(c, 1, &["range", "list"]);
    let rows = l.lines().filter(|r| r.starts_with("| ")).skip(2);
    rows.map(|r| {
        let members = r.split('|').nth(4).unwrap_or_default().trim();
        members.split(',').filter_map(|m| m.parse().ok()).collect()
    })
    .collect()
}

/// Whether the three placed ranges (`rows`: their hosts) each have 3 hosts among `members`,
/// none of which hosts two ranges more than another.
fn even_over(rows: &[Vec<u64>], members: &[u64]) -> bool {
    let placed = rows.len() == 3
        && (rows.iter()).all(|r| r.len() == 3 && r.iter().all(|m| members.contains(m)));
    let load = |m: &u64| rows.iter().filter(|r| r.contains(m)).count();
    let most = members.iter().map(load).max().unwrap_or(0);
    let least = members.iter().map(load).min().unwrap_or(0);
    placed && most <= least + 1
}

/// Adds member n6 through etcdctl (at member 2) and starts it with `--join`; returns its id.
fn add_n6(c: &mut Cluster, etcdctl: &Path) -> u64 {
    let ports = common::free_ports(3);
    let peer = format!("--peer-urls=http://127.0.0.1:{}", ports[0]);
    let added = ok_at(c, etcdctl, 2, &["member", "add", "n6", &peer]);
    let hex = added
        .split_whitespace()
        .nth(1)
        .expect("the new member's id");
    let id = u64::from_str_radix(hex, 16).expect("a hex member id");
    c.spawn_joiner(id, "n6", [ports[0], ports[1], ports[2]]);
    id
}

/// Rebalancing (`[partition] rebalance`, on by default): the placement rule puts all three
/// groups on member 4 and one on each of members 1 and 2, so one moves at once; then a member
/// added through etcdctl (started with `--join`) is given ranges without any `range move`,
/// until no member hosts two more than another — and every member, the new one included, reads
/// what was written before and writes through the groups it now hosts.
#[test]
fn a_new_member_is_given_ranges_by_rebalancing() {
    let Some(etcdctl) = etcdctl() else {
        return;
    };
    let mut c = placed_with(&|cfg| cfg.partition.rebalance = true);
    wait_until(
        Duration::from_secs(60),
        "groups even over 5 members",
        || even_over(&hosts_listed(&c), &[1, 2, 3, 4, 5]).then_some(()),
    );
    for key in KEYS {
        ok_at(&c, &etcdctl, 1, &["put", key, "before"]);
    }
    let id = add_n6(&mut c, &etcdctl);
    let all = [1, 2, 3, 4, 5, id];
    let rows = wait_until(Duration::from_secs(120), "ranges given to n6", || {
        let rows = hosts_listed(&c);
        (even_over(&rows, &all) && rows.iter().any(|r| r.contains(&id))).then_some(rows)
    });
    wait_until(Duration::from_secs(30), "n6 to host a range", || {
        let own = hosted(&c, id).unwrap_or_default();
        own.iter()
            .any(|(g, v)| *g != 0 && v.contains(&id))
            .then_some(())
    });
    every_member_reads(&c, &etcdctl, &all, "before");
    for key in KEYS {
        wait_until(Duration::from_secs(30), "a write at n6", || {
            at(&c, &etcdctl, id, &["put", key, "after"]).0.then_some(())
        });
    }
    every_member_reads(&c, &etcdctl, &all, "after");
    let listed = hosts_listed(&c);
    assert!(
        even_over(&listed, &all),
        "still even: {rows:?} then {listed:?}"
    );
}

/// etcdctl `member add` and `member remove` on a placed cluster: the new member (started with
/// `--join`) joins the first group and the directory's and hosts no range until one moves to
/// it, yet serves every key at once (relayed); removing member 4, which hosts every range,
/// moves each of them off it — each group's leader adds the member hosting the fewest groups
/// as a learner, promotes it and removes member 4 — and the removal is answered once none is
/// left on it, so member 4 can be stopped then. Every member left reads and writes every key.
#[test]
fn a_member_is_replaced_and_its_groups_move_off_it() {
    let Some(etcdctl) = etcdctl() else {
        return;
    };
    let mut c = placed();
    for key in KEYS {
        ok_at(&c, &etcdctl, 1, &["put", key, "before"]);
    }
    let id = add_n6(&mut c, &etcdctl);
    let groups = |c: &Cluster, m| hosted(c, m).unwrap_or_default();
    wait_until(Duration::from_secs(60), "n6 to serve every key", || {
        KEYS.iter()
            .all(|k| {
                let got = at(&c, &etcdctl, id, &["get", k, "--print-value-only"]);
                got.0 && got.1.trim() == "before"
            })
            .then_some(())
    });
    let first: Vec<u64> = groups(&c, id).iter().map(|(g, _)| *g).collect();
    assert_eq!(first, [0], "n6 hosts the first group only");

    // Answered once no group is on member 4 any more (a timeout says the change stands; a
    // retry is answered "member not found" on the same condition).
    wait_until(Duration::from_secs(120), "member 4 removed", || {
        let (ok, said) = at(&c, &etcdctl, 3, &["member", "remove", "4"]);
        (ok || said.contains("member not found")).then_some(())
    });
    let live = [1, 2, 3, 5, id];
    for m in live {
        let on_four: Vec<(u64, Vec<u64>)> = (groups(&c, m).into_iter())
            .filter(|(_, v)| v.contains(&4))
            .collect();
        assert!(
            on_four.is_empty(),
            "groups on member 4, at {m}: {on_four:?}"
        );
    }
    c.kill(4);
    let listed = wait_until(
        Duration::from_secs(30),
        "the directory without member 4",
        || {
            let rows = hosts_listed(&c);
            (rows.len() == 3 && rows.iter().all(|r| r.len() == 3 && !r.contains(&4)))
                .then_some(rows)
        },
    );
    assert!(
        listed.iter().any(|r| r.contains(&id)),
        "n6 hosts a range now: {listed:?}"
    );
    for m in live {
        let value = format!("after-{m}");
        for key in KEYS {
            wait_until(Duration::from_secs(30), "a write without member 4", || {
                at(&c, &etcdctl, m, &["put", key, &value]).0.then_some(())
            });
        }
    }
    let value = format!("after-{id}");
    for m in live {
        for key in KEYS {
            let got = ok_at(&c, &etcdctl, m, &["get", key, "--print-value-only"]);
            assert_eq!(got.trim(), value, "{key} at member {m}");
            wait_until(Duration::from_secs(10), "a serializable read", || {
                let args = ["get", key, "--print-value-only", "--consistency=s"];
                let (ok, got) = at(&c, &etcdctl, m, &args);
                (ok && got.trim() == value).then_some(())
            });
        }
    }
    let listed = ok_at(&c, &etcdctl, 1, &["member", "list"]);
    assert!(!listed.lines().any(|l| l.starts_with("4,")), "{listed}");
}

/// A member whose storage is damaged after a range moved to it: restarted, it quarantines its
/// log and repairs from its peers, but a group moved to it at run time is not in its
/// placement, so its replica starts on the group's next message as a newcomer would — and its
/// first state lists it as a voter already: it may have voted there before the damage, so it
/// votes in nothing (`non-voting (lost storage)`). It says so to the group's leader, which
/// moves the group off it to a member that votes; then the group survives losing another of
/// its members, and every member still reads and writes its key.
#[test]
fn a_member_that_lost_a_moved_range_s_records_is_replaced_in_its_group() {
    let Some(etcdctl) = etcdctl() else {
        return;
    };
    let mut c = placed();
    wait_placed(&c);
    ok_at(&c, &etcdctl, 5, &["put", "d", "before"]);
    let said = synodctl_at(&c, 5, &["range", "move", "d", "--from", "2", "--to", "1"]);
    assert!(said.contains("now on members 1,3,4"), "{said}");
    ok_at(&c, &etcdctl, 5, &["put", "d", "moved"]);
    reads_d(&c, &etcdctl, &[1, 3, 4], "moved");

    c.kill(1);
    common::damage_wal(&c, 1);
    c.restart(1);
    let voters_of_1 = |c: &Cluster, m| {
        (hosted(c, m).unwrap_or_default().into_iter())
            .find(|(g, _)| *g == 1)
            .map(|(_, v)| v)
    };
    let now = wait_until(
        Duration::from_secs(90),
        "group 1 moved off member 1",
        || voters_of_1(&c, 3).filter(|v| v.len() == 3 && !v.contains(&1)),
    );
    assert!(c.log(1).contains("quarantin"), "member 1 repaired");
    // Member 3 goes: the group's two other voters decide without it.
    c.kill(3);
    assert!(now.contains(&3) && now.contains(&4), "{now:?}");
    for id in [1, 2, 4, 5] {
        let value = format!("after-{id}");
        wait_until(Duration::from_secs(30), "a write without member 3", || {
            at(&c, &etcdctl, id, &["put", "d", &value]).0.then_some(())
        });
    }
    reads_d(&c, &etcdctl, &[1, 2, 4, 5], "after-5");
}
