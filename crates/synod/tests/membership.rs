//! Membership change on real clusters of `synod server` processes, through unchanged clients.
//!
//! For OmniPaxos and VR: a 3-member cluster takes writes; `etcdctl member add --learner` adds
//! a fourth member, which starts with `synod server --join`, publishes its client addresses
//! (etcdctl then lists it as started) and serves serializable reads of the earlier writes;
//! `etcdctl member promote` makes it a voter; more writes; `etcdctl member remove` takes an
//! original member out. Then every acknowledged write is readable at every remaining member
//! and all of them list the same members; the joined member restarts without `--join`.
//!
//! Bad requests (unknown id, an address already a member, promoting a voter or a learner not
//! in sync, removing the last voter, malformed peer URLs) get etcd's errors through etcdctl,
//! the HTTP API's codes, and change nothing. synodctl and python-etcd3 list, add and remove.

mod common;

use common::{
    Cluster, etcdctl, etcdctl_command, free_ports, python_etcd3, run_with_deadline, synodctl,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Longest one client command may take.
const COMMAND_MAX: Duration = Duration::from_secs(30);
/// Longest a membership step (join, catch-up, epoch change) may take on a loaded machine.
const STEP_MAX: Duration = Duration::from_secs(60);

/// Polls `f` until it gives a value, for at most [`STEP_MAX`]; on timeout panics with the
/// logs of the members `logs` names (what a failed membership step needs to be understood).
fn poll<T>(c: &Cluster, logs: &[u64], what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + STEP_MAX;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() >= deadline {
            let text: Vec<String> = logs
                .iter()
                .map(|id| format!("---- n{id} ----\n{}", c.log(*id)))
                .collect();
            panic!(
                "timed out after {STEP_MAX:?} waiting for {what}\n{}",
                text.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// etcdctl against `endpoints`: (success, stdout, stderr).
fn etcd(ctl: &Path, endpoints: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = etcdctl_command(ctl, endpoints);
    cmd.args(args);
    let (status, stdout, stderr) = run_with_deadline(cmd, COMMAND_MAX);
    (status.success(), stdout, stderr)
}

/// etcdctl's stdout, asserting it succeeded.
fn ok(ctl: &Path, endpoints: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = etcd(ctl, endpoints, args);
    assert!(success, "etcdctl {args:?} at {endpoints} failed: {stderr}");
    stdout
}

/// A membership change through etcdctl, retried while its outcome is unknown: a timeout across
/// the epoch change ("did not decide in time", "no leader") may or may not have applied it, so
/// a retry that finds it done (`done_if`: etcd's answer for "already so") counts as success.
/// Any other refusal fails the test.
fn change(c: &Cluster, ctl: &Path, endpoints: &str, args: &[&str], done_if: &str, logs: &[u64]) {
    let what = format!("etcdctl {args:?}");
    poll(c, logs, &what, || {
        let (success, _, stderr) = etcd(ctl, endpoints, args);
        let unknown = stderr.contains("did not decide in time") || stderr.contains("no leader");
        assert!(
            success || unknown || stderr.contains(done_if),
            "{what} refused: {stderr}"
        );
        (success || stderr.contains(done_if)).then_some(())
    });
}

/// etcdctl's stderr, asserting it failed.
fn refused(ctl: &Path, endpoints: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = etcd(ctl, endpoints, args);
    assert!(!success, "etcdctl {args:?} succeeded: {stdout}");
    stderr
}

/// One row of `etcdctl member list -w json`.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Listed {
    id: u64,
    name: String,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
    learner: bool,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The member list as etcdctl shows it at `endpoint`, sorted by id.
fn member_list(ctl: &Path, endpoint: &str) -> Option<Vec<Listed>> {
    let (success, stdout, _) = etcd(ctl, endpoint, &["member", "list", "-w", "json"]);
    if !success {
        return None;
    }
    let v: Value = serde_json::from_str(&stdout).ok()?;
    let mut members: Vec<Listed> = v["members"]
        .as_array()?
        .iter()
        .map(|m| Listed {
            id: m["ID"].as_u64().unwrap_or(0),
            name: m["name"].as_str().unwrap_or("").to_string(),
            peer_urls: strings(&m["peerURLs"]),
            client_urls: strings(&m["clientURLs"]),
            learner: m["isLearner"].as_bool().unwrap_or(false),
        })
        .collect();
    members.sort_by_key(|m| m.id);
    Some(members)
}

/// The id in etcdctl's "Member 4 added to cluster …" (hex).
fn added_id(stdout: &str) -> u64 {
    let hex = stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no member id in {stdout:?}"));
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{hex:?} in {stdout:?}: {e}"))
}

/// Every key under `k/` as member `endpoint` serves it (serializable: its own state, or
/// linearizable).
fn keys_at(ctl: &Path, endpoint: &str, serializable: bool) -> Option<BTreeMap<String, String>> {
    let mut args = vec!["get", "--prefix", "k/"];
    if serializable {
        args.push("--consistency=s");
    }
    let (success, stdout, _) = etcd(ctl, endpoint, &args);
    if !success {
        return None;
    }
    let lines: Vec<&str> = stdout.lines().collect();
    Some(
        lines
            .chunks(2)
            .filter(|kv| kv.len() == 2)
            .map(|kv| (kv[0].to_string(), kv[1].to_string()))
            .collect(),
    )
}

/// Puts `k/<i>` for `range` through `endpoints` and records each acknowledged one. A put
/// refused while the members change epochs ("no leader" for a moment) is retried with the
/// same value, so an unknown outcome before it changes nothing the check relies on.
fn write(
    ctl: &Path,
    endpoints: &str,
    range: std::ops::Range<u32>,
    acked: &mut BTreeMap<String, String>,
) {
    for i in range {
        let (k, v) = (format!("k/{i:03}"), format!("v{i}"));
        let deadline = std::time::Instant::now() + STEP_MAX;
        loop {
            let (success, _, stderr) = etcd(ctl, endpoints, &["put", &k, &v]);
            if success {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "put {k} not acknowledged within {STEP_MAX:?}: {stderr}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        acked.insert(k, v);
    }
}

/// Starts `synod server --join` for the member added as `id` (named "n4", on `ports`) and
/// waits until etcdctl lists it as started with its client URL; returns its gRPC address.
fn join_n4(c: &mut Cluster, ctl: &Path, id: u64, ports: &[u16]) -> String {
    c.spawn_joiner(id, "n4", [ports[0], ports[1], ports[2]]);
    let n4 = c.member(id).grpc_addr.clone();
    let client_url = format!("http://{n4}");
    poll(c, &[1, id], "etcdctl to list n4 as started", || {
        let l = member_list(ctl, &c.member(1).grpc_addr)?;
        l.iter()
            .any(|m| m.id == id && m.name == "n4" && m.client_urls == [client_url.clone()])
            .then_some(())
    });
    n4
}

/// Add a learner, join it, promote it, remove an original member: see the module doc.
fn grow_promote_shrink(engine: &str) {
    let Some(ctl) = etcdctl() else { return };
    let mut c = Cluster::start(3, engine);
    let voters = c.grpc_endpoints();
    let mut acked = BTreeMap::new();
    write(&ctl, &voters, 0..20, &mut acked);

    let ports = free_ports(3);
    let peer_url = format!("http://127.0.0.1:{}", ports[0]);
    let added = ok(
        &ctl,
        &voters,
        &[
            "member",
            "add",
            "n4",
            &format!("--peer-urls={peer_url}"),
            "--learner",
        ],
    );
    let id = added_id(&added);
    let listed = member_list(&ctl, &c.member(2).grpc_addr).expect("member list");
    let new = listed
        .iter()
        .find(|m| m.id == id)
        .expect("the added member is listed");
    assert!(
        new.learner && new.name.is_empty() && new.client_urls.is_empty(),
        "{new:?}"
    );
    assert_eq!(new.peer_urls, vec![peer_url.clone()]);

    let n4 = join_n4(&mut c, &ctl, id, &ports);
    poll(&c, &[id], "the learner to serve the earlier writes", || {
        (keys_at(&ctl, &n4, true)? == acked).then_some(())
    });

    let hex = format!("{id:x}");
    poll(
        &c,
        &[1, id],
        "the promotion of the caught-up learner",
        || {
            let (success, _, stderr) = etcd(&ctl, &voters, &["member", "promote", &hex]);
            // A timed-out attempt may have promoted it: then it is no learner any more.
            let unknown = stderr.contains("did not decide in time") || stderr.contains("no leader");
            let done = stderr.contains("can only promote a learner member\n")
                || stderr
                    .trim_end()
                    .ends_with("can only promote a learner member");
            assert!(
                success || done || unknown || stderr.contains("in sync with leader"),
                "promote refused for another reason: {stderr}"
            );
            (success || done).then_some(())
        },
    );
    let all = format!("{voters},{n4}");
    write(&ctl, &all, 20..40, &mut acked);

    let at = c.member(2).grpc_addr.clone();
    change(
        &c,
        &ctl,
        &at,
        &["member", "remove", "1"],
        "member not found",
        &[1, 2],
    );
    c.kill(1);
    let remaining = [2, 3, id];
    for m in remaining {
        let at = c.member(m).grpc_addr.clone();
        poll(
            &c,
            &[m],
            &format!("n{m} to serve every acknowledged write"),
            || (keys_at(&ctl, &at, false)? == acked).then_some(()),
        );
    }
    let expected: Vec<u64> = remaining.to_vec();
    let lists: Vec<Vec<Listed>> = remaining
        .iter()
        .map(|m| {
            let at = c.member(*m).grpc_addr.clone();
            poll(
                &c,
                &[*m],
                &format!("n{m} to list the final members"),
                || {
                    let l = member_list(&ctl, &at)?;
                    (l.iter().map(|x| x.id).collect::<Vec<_>>() == expected
                        && l.iter().all(|x| !x.learner && !x.client_urls.is_empty()))
                    .then_some(l)
                },
            )
        })
        .collect();
    assert!(lists.windows(2).all(|w| w[0] == w[1]), "{lists:#?}");

    // The joined member restarts from its data directory alone.
    c.kill(id);
    c.restart(id);
    poll(
        &c,
        &[id],
        "the joined member to serve again after a restart",
        || (keys_at(&ctl, &n4, false)? == acked).then_some(()),
    );
    let log = c.log(id);
    assert!(log.contains("following configuration"), "{log}");
}

/// With auth on, a learner that joins finds its place (the member list needs no user),
/// publishes its name and client addresses on its own behalf (no client's token covers it),
/// and serves.
#[test]
fn a_learner_joining_a_cluster_with_auth_on_publishes_its_addresses() {
    fn root<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [args, &["--user", "root:rootpw"]].concat()
    }
    let Some(ctl) = etcdctl() else { return };
    let mut c = Cluster::start(3, "vr");
    let voters = c.grpc_endpoints();
    ok(&ctl, &voters, &["user", "add", "root:rootpw"]);
    ok(&ctl, &voters, &["auth", "enable"]);
    ok(&ctl, &voters, &root(&["put", "before", "1"]));
    let ports = free_ports(3);
    let peer_url = format!("--peer-urls=http://127.0.0.1:{}", ports[0]);
    let add = root(&["member", "add", "n4", &peer_url, "--learner"]);
    let id = added_id(&ok(&ctl, &voters, &add));
    let n4 = join_n4(&mut c, &ctl, id, &ports);
    poll(&c, &[id], "n4 serving the earlier write", || {
        let get = root(&["get", "before", "--print-value-only", "--consistency=s"]);
        let (success, out, _) = etcd(&ctl, &n4, &get);
        (success && out == "1\n").then_some(())
    });
}

#[test]
fn omnipaxos_grows_promotes_and_shrinks_through_etcdctl() {
    grow_promote_shrink("omnipaxos");
}

#[test]
fn vr_grows_promotes_and_shrinks_through_etcdctl() {
    grow_promote_shrink("vr");
}

/// Status code and JSON body of one HTTP request.
fn send(req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = req.send().expect("HTTP request");
    let status = r.status().as_u16();
    (status, r.json().expect("JSON body"))
}

/// The configuration version member `id` reports.
fn version(c: &Cluster, id: u64) -> u64 {
    let (status, body) = send(c.http.get(c.url(id, "/v1/members")));
    assert_eq!(status, 200, "{body}");
    body["version"].as_u64().expect("a configuration version")
}

#[test]
fn bad_membership_requests_are_refused_and_change_nothing() {
    let Some(ctl) = etcdctl() else { return };
    let c = Cluster::start(3, "omnipaxos");
    let eps = c.grpc_endpoints();
    let mut acked = BTreeMap::new();
    // Enough log that a learner which never started is far behind.
    write(&ctl, &eps, 0..20, &mut acked);
    let before = version(&c, 1);

    let e = refused(&ctl, &eps, &["member", "remove", "99"]);
    assert!(e.contains("etcdserver: member not found"), "{e}");
    let taken = format!("--peer-urls=http://{}", c.member(2).peer_addr);
    let e = refused(&ctl, &eps, &["member", "add", "again", &taken]);
    assert!(e.contains("etcdserver: Peer URLs already exists"), "{e}");
    let e = refused(&ctl, &eps, &["member", "promote", "2"]);
    assert!(e.contains("can only promote a learner member"), "{e}");
    let e = refused(
        &ctl,
        &eps,
        &["member", "update", "99", "--peer-urls=http://127.0.0.1:1"],
    );
    assert!(e.contains("etcdserver: member not found"), "{e}");
    // The server refuses what etcdctl lets through: port 0, two peer URLs for one member.
    for urls in [
        "--peer-urls=http://127.0.0.1:0",
        "--peer-urls=http://127.0.0.1:1,http://127.0.0.1:2",
    ] {
        let e = refused(&ctl, &eps, &["member", "add", "x", urls]);
        assert!(
            e.contains("etcdserver: given member URLs are invalid"),
            "{e}"
        );
    }
    assert_eq!(
        version(&c, 1),
        before,
        "a refused change changed the configuration"
    );

    // HTTP: the same refusals with the API's codes; malformed input never reaches the engine.
    let cases: Vec<(reqwest::blocking::RequestBuilder, u16, &str)> = vec![
        (
            c.http.delete(c.url(1, "/v1/members/99")),
            404,
            "member_not_found",
        ),
        (
            c.http.delete(c.url(1, "/v1/members/x")),
            400,
            "invalid_request",
        ),
        (
            c.http.post(c.url(1, "/v1/members/3/promote")),
            409,
            "membership_refused",
        ),
        (
            c.http.post(c.url(1, "/v1/members")).body(format!(
                r#"{{"peer_addr": "{}", "learner": true}}"#,
                c.member(3).peer_addr
            )),
            409,
            "membership_refused",
        ),
        (
            c.http
                .post(c.url(1, "/v1/members"))
                .body(r#"{"peer_addr": "ftp://h:1"}"#),
            400,
            "invalid_request",
        ),
        (
            c.http
                .post(c.url(1, "/v1/members"))
                .body(r#"{"peer_addr": "h:1", "colour": 1}"#),
            400,
            "invalid_request",
        ),
        (
            c.http
                .put(c.url(1, "/v1/members/2"))
                .body(r#"{"grpc_addr": "no-port"}"#),
            400,
            "invalid_request",
        ),
    ];
    for (req, code, what) in cases {
        let (status, body) = send(req);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (code, Some(what)),
            "{body}"
        );
    }
    assert_eq!(version(&c, 1), before);

    // A learner that never started is not in sync: its promotion is refused, then it goes.
    let ports = free_ports(1);
    let added = ok(
        &ctl,
        &eps,
        &[
            "member",
            "add",
            "ghost",
            &format!("--peer-urls=http://127.0.0.1:{}", ports[0]),
            "--learner",
        ],
    );
    let ghost = format!("{:x}", added_id(&added));
    let e = refused(&ctl, &eps, &["member", "promote", &ghost]);
    assert!(
        e.contains("can only promote a learner member which is in sync with leader"),
        "{e}"
    );
    ok(&ctl, &eps, &["member", "remove", &ghost]);
    assert_eq!(version(&c, 1), before + 2);
    assert_eq!(keys_at(&ctl, &eps, false), Some(acked), "the store changed");
}

#[test]
fn the_last_voter_cannot_be_removed() {
    let Some(ctl) = etcdctl() else { return };
    let c = Cluster::start(1, "omnipaxos");
    let ep = c.member(1).grpc_addr.clone();
    let e = refused(&ctl, &ep, &["member", "remove", "1"]);
    assert!(e.contains("not enough started members"), "{e}");
    let (status, body) = send(c.http.delete(c.url(1, "/v1/members/1")));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("membership_refused"))
    );
    let l = member_list(&ctl, &ep).expect("member list");
    assert_eq!(l.len(), 1, "{l:?}");
}

#[test]
fn synodctl_lists_adds_and_removes_members() {
    let c = Cluster::start(3, "vr");
    let run = |args: &[&str]| {
        let mut cmd = Command::new(synodctl());
        cmd.arg("--endpoints").arg(c.http_endpoints()).args(args);
        run_with_deadline(cmd, COMMAND_MAX)
    };
    let (status, out, err) = run(&["member", "list"]);
    assert!(status.success(), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|l| l.ends_with(", false")), "{out}");
    let peer = format!("127.0.0.1:{}", free_ports(1)[0]);
    let (status, out, err) = run(&["member", "add", "n4", "--peer-addr", &peer, "--learner"]);
    assert!(status.success(), "{err}");
    assert!(out.starts_with("Member 4 added"), "{out}");
    let (_, out, _) = run(&["-w", "table", "member", "list"]);
    assert!(out.contains(&peer) && out.contains("| true "), "{out}");
    let (status, out, err) = run(&["member", "remove", "4"]);
    assert!(status.success(), "{err}");
    assert!(out.starts_with("Member 4 removed"), "{out}");
    let (status, _, err) = run(&["member", "remove", "4"]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("member_not_found"), "{err}");
}

#[test]
fn python_etcd3_lists_adds_and_removes_members() {
    let Some(python) = python_etcd3() else { return };
    let c = Cluster::start(3, "omnipaxos");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/membership_checks.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--endpoint")
        .arg(&c.member(1).grpc_addr)
        .arg("--peer-url")
        .arg(format!("http://127.0.0.1:{}", free_ports(1)[0]));
    let (status, stdout, stderr) = run_with_deadline(cmd, Duration::from_secs(120));
    assert!(
        status.success(),
        "python-etcd3 membership checks failed ({status}):\n{stdout}\n{stderr}"
    );
    for check in ["members", "add_member", "remove_member"] {
        assert!(
            stdout.contains(&format!("PASS {check}")),
            "{check} not run:\n{stdout}"
        );
    }
}

/// Whether `endpoint` reads every key of `acked` with its value, one key at a time (CASPaxos
/// has no ranges).
fn serves_each(ctl: &Path, endpoint: &str, acked: &BTreeMap<String, String>) -> bool {
    acked.iter().all(|(k, v)| {
        let (success, stdout, _) = etcd(ctl, endpoint, &["get", k, "--print-value-only"]);
        success && stdout.trim_end() == v
    })
}

/// CASPaxos has no learners: a member joins as an acceptor directly, and the change completes
/// only once the new member answers (the paper's §2.3 steps), so `member add` runs while the
/// new member starts. Then an original member is removed and every write is readable at the
/// remaining ones.
#[test]
fn caspaxos_grows_and_shrinks_through_etcdctl() {
    let Some(ctl) = etcdctl() else { return };
    let mut c = Cluster::start(3, "caspaxos");
    let voters = c.grpc_endpoints();
    let mut acked = BTreeMap::new();
    write(&ctl, &voters, 0..10, &mut acked);
    let e = refused(
        &ctl,
        &voters,
        &[
            "member",
            "add",
            "x",
            "--peer-urls=http://127.0.0.1:1",
            "--learner",
        ],
    );
    assert!(e.contains("CASPaxos has no learners"), "{e}");

    let ports = free_ports(3);
    let peer_url = format!("--peer-urls=http://127.0.0.1:{}", ports[0]);
    let adding = {
        let (ctl, voters) = (ctl.clone(), voters.clone());
        std::thread::spawn(move || etcd(&ctl, &voters, &["member", "add", "n4", &peer_url]))
    };
    let id = poll(&c, &[1], "the added member to be listed", || {
        let l = member_list(&ctl, &c.member(1).grpc_addr)?;
        l.iter()
            .find(|m| m.peer_urls == [format!("http://127.0.0.1:{}", ports[0])])
            .map(|m| m.id)
    });
    c.spawn_joiner(id, "n4", [ports[0], ports[1], ports[2]]);
    let (added, stdout, stderr) = adding.join().expect("member add thread");
    // The add answers once decided; on a slow start it times out and completes anyway.
    assert!(
        added || stderr.contains("did not decide in time"),
        "{stdout}{stderr}"
    );
    let n4 = c.member(id).grpc_addr.clone();
    poll(
        &c,
        &[1, id],
        "n4 to be started and serve the writes",
        || {
            let l = member_list(&ctl, &c.member(1).grpc_addr)?;
            let started = l.iter().any(|m| m.id == id && m.name == "n4");
            (started && serves_each(&ctl, &n4, &acked)).then_some(())
        },
    );
    write(&ctl, &format!("{voters},{n4}"), 10..20, &mut acked);

    let at = c.member(2).grpc_addr.clone();
    change(
        &c,
        &ctl,
        &at,
        &["member", "remove", "1"],
        "member not found",
        &[1, 2],
    );
    c.kill(1);
    for m in [2, 3, id] {
        let at = c.member(m).grpc_addr.clone();
        poll(&c, &[m], &format!("n{m} to serve every write"), || {
            serves_each(&ctl, &at, &acked).then_some(())
        });
        let l = member_list(&ctl, &at).expect("member list");
        assert_eq!(l.iter().map(|x| x.id).collect::<Vec<_>>(), vec![2, 3, id]);
    }
}

#[test]
fn a_caspaxos_member_started_after_its_add_timed_out_finishes_the_add_itself() {
    let Some(ctl) = etcdctl() else { return };
    let mut c = Cluster::start(3, "caspaxos");
    let voters = c.grpc_endpoints();
    let mut acked = BTreeMap::new();
    write(&ctl, &voters, 0..5, &mut acked);
    let ports = free_ports(3);
    let peer_url = format!("--peer-urls=http://127.0.0.1:{}", ports[0]);
    // Nothing runs at the new address: every step waits for it, so the add times out.
    let (added, stdout, stderr) = etcd(&ctl, &voters, &["member", "add", "n4", &peer_url]);
    assert!(
        !added && stderr.contains("did not decide in time"),
        "{stdout}{stderr}"
    );
    let id = member_list(&ctl, &c.member(1).grpc_addr)
        .and_then(|l| {
            l.iter()
                .find(|m| m.peer_urls == [format!("http://127.0.0.1:{}", ports[0])])
                .map(|m| m.id)
        })
        .expect("the add is listed, half-way");
    // Half-way, it holds off every other change.
    let e = refused(&ctl, &voters, &["member", "remove", "3"]);
    assert!(
        e.contains("another membership change is in progress"),
        "{e}"
    );
    // Started late, with nobody asking for the add again, the new member finishes it.
    c.spawn_joiner(id, "n4", [ports[0], ports[1], ports[2]]);
    let n4 = c.member(id).grpc_addr.clone();
    poll(&c, &[1, id], "n4 to finish its add and serve", || {
        let l = member_list(&ctl, &c.member(1).grpc_addr)?;
        let started = l.iter().any(|m| m.id == id && m.name == "n4");
        (started && serves_each(&ctl, &n4, &acked)).then_some(())
    });
    let at = c.member(2).grpc_addr.clone();
    change(
        &c,
        &ctl,
        &at,
        &["member", "remove", "3"],
        "member not found",
        &[2, id],
    );
    let l = member_list(&ctl, &at).expect("member list");
    assert_eq!(l.iter().map(|x| x.id).collect::<Vec<_>>(), vec![1, 2, id]);
}

/// The members `/v1/members` at member `at` lists: (id, peer address, learner).
fn listed_over_http(c: &Cluster, at: u64) -> Option<Vec<(u64, String, bool)>> {
    let r = reqwest::blocking::Client::new()
        .get(c.url(at, "/v1/members"))
        .timeout(Duration::from_secs(2))
        .send()
        .ok()?;
    let v: Value = r.json().ok()?;
    Some(
        v["members"]
            .as_array()?
            .iter()
            .filter_map(|m| {
                Some((
                    m["id"].as_u64()?,
                    m["peer_addr"].as_str()?.to_string(),
                    m["learner"].as_bool().unwrap_or(false),
                ))
            })
            .collect(),
    )
}

/// A member whose data directory is wiped comes back by itself and safely: restarted with the
/// same flags, it removes its old id and adds itself back as a new member (rejoin.rs), catches
/// up from a snapshot, promotes itself, and then serves every acknowledged write — and votes:
/// with an original member killed, the cluster still decides writes with it.
fn wiped_member_rejoins_as_a_new_member(engine: &str) {
    let mut c = Cluster::start(3, engine);
    let mut acked = BTreeMap::new();
    for i in 0..10 {
        let (k, v) = (format!("wipe-{i}"), format!("v{i}"));
        let put = |c: &Cluster| (c.put(1, &k, &v).status().as_u16() == 200).then_some(());
        poll(&c, &[1], &format!("the write of {k}"), || put(&c));
        acked.insert(k, v);
    }
    let peer_addr = c.member(3).peer_addr.clone();
    c.kill(3);
    std::fs::remove_dir_all(c.data_dir(3)).expect("wipe the data directory");
    c.restart(3);
    let new_id = poll(&c, &[1, 3], "the wiped member back as a new voter", || {
        let l = listed_over_http(&c, 1)?;
        let back = l.iter().find(|m| m.1 == peer_addr)?;
        (!l.iter().any(|m| m.0 == 3) && back.0 > 3 && !back.2).then_some(back.0)
    });
    poll(&c, &[3], "the rejoin logged", || {
        c.log(3).contains("re-added as a new member").then_some(())
    });
    // The harness still calls the process "3": it serves at member 3's addresses.
    for (k, v) in &acked {
        let got = poll(&c, &[3], &format!("{k} at the rejoined member"), || {
            c.get(3, k, true)
        });
        assert_eq!(&got, v, "n{new_id} serves {k}");
    }
    // It votes: without member 1, members 2 and n{new_id} are a majority of three.
    c.kill(1);
    poll(&c, &[2, 3], "a write decided without member 1", || {
        (c.put(2, "after-wipe", "x").status().as_u16() == 200).then_some(())
    });
    let got = poll(&c, &[3], "the write at the rejoined member", || {
        c.get(3, "after-wipe", false)
    });
    assert_eq!(got, "x");
}

/// etcdctl as root against `endpoints`: its stdout, or `None` if it failed.
fn ctl_as_root(ctl: &Path, endpoints: &str, args: &[&str]) -> Option<String> {
    let (success, out, _) = etcd(ctl, endpoints, &[args, &["--user=root:rootpw"]].concat());
    success.then(|| out.trim().to_string())
}

/// With auth on, a wiped member still comes back by itself. Its removal, its add and its
/// promotion are asked of the other members over their peer ports (rejoin.rs, `SelfChange`),
/// since their client APIs refuse a membership change without the root role — until
/// 2026-12-05 they went there and the member never came back. etcdctl enables auth, writes and
/// reads as root; the member API refuses the anonymous, so auth was on throughout.
#[test]
fn a_wiped_member_rejoins_with_auth_on() {
    let Some(ctl) = etcdctl() else { return };
    let mut c = Cluster::start(3, "omnipaxos");
    let all = c.grpc_endpoints();
    ok(&ctl, &all, &["user", "add", "root:rootpw"]);
    ok(&ctl, &all, &["auth", "enable"]);
    for i in 0..5 {
        let (k, v) = (format!("auth-wipe-{i}"), format!("v{i}"));
        poll(&c, &[1], &format!("the write of {k}"), || {
            ctl_as_root(&ctl, &all, &["put", &k, &v])
        });
    }
    let anonymous = reqwest::blocking::Client::new()
        .delete(c.url(1, "/v1/members/2"))
        .send()
        .expect("DELETE /v1/members/2");
    assert!(
        matches!(anonymous.status().as_u16(), 401 | 403),
        "an anonymous member removal must be refused with auth on: {}",
        anonymous.status()
    );
    let peer_addr = c.member(3).peer_addr.clone();
    c.kill(3);
    std::fs::remove_dir_all(c.data_dir(3)).expect("wipe the data directory");
    c.restart(3);
    poll(&c, &[1, 3], "the wiped member back as a new voter", || {
        let l = listed_over_http(&c, 1)?;
        let back = l.iter().find(|m| m.1 == peer_addr)?;
        (!l.iter().any(|m| m.0 == 3) && back.0 > 3 && !back.2).then_some(())
    });
    let at3 = c.member(3).grpc_addr.clone();
    for i in 0..5 {
        let k = format!("auth-wipe-{i}");
        let got = poll(&c, &[3], &format!("{k} at the rejoined member"), || {
            let args = ["get", k.as_str(), "--consistency=s", "--print-value-only"];
            ctl_as_root(&ctl, &at3, &args).filter(|v| !v.is_empty())
        });
        assert_eq!(got, format!("v{i}"));
    }
}

#[test]
fn omnipaxos_wiped_member_rejoins_as_a_new_member() {
    wiped_member_rejoins_as_a_new_member("omnipaxos");
}

#[test]
fn caspaxos_wiped_member_rejoins_as_a_new_member() {
    wiped_member_rejoins_as_a_new_member("caspaxos");
}
