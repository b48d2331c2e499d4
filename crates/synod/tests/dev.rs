//! The README's first command: `synod dev` starts a working 3-node cluster, prints how to reach
//! it, and stops every member cleanly on Ctrl-C (SIGINT), leaving no process behind.

mod common;

use common::{etcdctl, free_base, wait_until};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn synod_dev_starts_a_working_cluster_and_stops_it_on_ctrl_c() {
    run_dev(
        "omnipaxos",
        "Synod dev cluster: 3 members, engine omnipaxos, leader n",
    );
}

#[test]
fn synod_dev_starts_a_vr_cluster() {
    run_dev("vr", "Synod dev cluster: 3 members, engine vr, leader n");
}

#[test]
fn synod_dev_starts_a_leaderless_caspaxos_cluster() {
    run_dev(
        "caspaxos",
        "Synod dev cluster: 3 members, engine caspaxos, leaderless",
    );
}

#[test]
fn synod_dev_starts_a_leaderless_epaxos_cluster() {
    run_dev(
        "epaxos",
        "Synod dev cluster: 3 members, engine epaxos, leaderless",
    );
}

fn run_dev(engine: &str, expect_banner: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_base(3);
    let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args([
            "dev",
            "--fresh",
            "--engine",
            engine,
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(dir.path().join("dev"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn synod dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C stops every member") {
            break;
        }
    }
    assert!(banner.contains(expect_banner), "{banner}");
    assert!(banner.contains("etcdctl --endpoints="), "{banner}");

    let http = reqwest::blocking::Client::new();
    for i in 0..3u16 {
        let url = format!("http://127.0.0.1:{}/v1/kv/from-{i}", base + 10 * i + 1);
        let r = http
            .put(&url)
            .json(&serde_json::json!({"value": "x"}))
            .send()
            .expect("put");
        assert_eq!(r.status().as_u16(), 200);
    }
    // Each write is read back (linearizably) at a different member than the one that took it.
    for i in 0..3u16 {
        let reader = (i + 1) % 3;
        let url = format!("http://127.0.0.1:{}/v1/kv/from-{i}", base + 10 * reader + 1);
        let r: serde_json::Value = http.get(&url).send().expect("get").json().expect("json");
        assert_eq!(
            r["kv"]["value"],
            "x",
            "from-{i} read at member {}",
            reader + 1
        );
    }

    // Engines without a store-wide revision have no history or watch.
    if !["caspaxos", "epaxos"].contains(&engine) {
        etcdctl_history_and_watch(base);
    }

    // Ctrl-C: the launcher stops every member and exits 0.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = wait_until(Duration::from_secs(15), "synod dev to exit", || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "synod dev exited with {status}");
    // Every member's ports are free again: no process left behind.
    wait_until(
        Duration::from_secs(5),
        "member ports to be released",
        || {
            (0..3u16)
                .all(|i| {
                    (0..3).all(|k| TcpListener::bind(("127.0.0.1", base + 10 * i + k)).is_ok())
                })
                .then_some(())
        },
    );
}

/// The "done when", literally against `synod dev`: etcdctl's `get --rev`,
/// `get --sort-by=CREATE`, `watch --rev` and `compaction` on the three writes made above
/// (revisions 1, 2, 3: from-0, from-1, from-2).
fn etcdctl_history_and_watch(base: u16) {
    let Some(bin) = etcdctl() else { return };
    let endpoint = format!("127.0.0.1:{}", base + 2);
    let run = |args: &[&str]| {
        let out = Command::new(&bin)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(&["get", "from-0", "--rev=1"]), "from-0\nx\n");
    assert_eq!(
        run(&[
            "get",
            "--prefix",
            "from-",
            "--sort-by=CREATE",
            "--order=DESCEND",
            "--keys-only"
        ]),
        "from-2\n\nfrom-1\n\nfrom-0\n\n"
    );
    // A watch from revision 2 replays from-1 and from-2, in order, then keeps running.
    let mut watch = Command::new(&bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["watch", "--prefix", "from-", "--rev=2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcdctl watch");
    let out = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    while got.len() < 6 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => got.push(line),
            Err(_) => break,
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        got,
        ["PUT", "from-1", "x", "PUT", "from-2", "x"],
        "watch --rev=2"
    );
    assert_eq!(run(&["compaction", "2"]), "compacted revision 2\n");
}
