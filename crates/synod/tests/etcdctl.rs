//! Real etcd clients nobody here wrote: Debian's etcdctl 3.4 against a 3-node Synod cluster.
//! CI installs etcdctl (.ci/run); without it this test fails loudly unless explicitly allowed.

mod common;

use common::{Cluster, etcdctl, etcdctl_run};

fn run(etcdctl: &std::path::Path, endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (success, stdout, stderr) = etcdctl_run(etcdctl, endpoints, args, stdin);
    assert!(
        success,
        "etcdctl {args:?} failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

#[test]
fn etcdctl_put_get_prefix_del_txn_status_members_omnipaxos() {
    etcdctl_put_get_prefix_del_txn_status_members("omnipaxos");
}

#[test]
fn etcdctl_put_get_prefix_del_txn_status_members_vr() {
    etcdctl_put_get_prefix_del_txn_status_members("vr");
}

fn etcdctl_put_get_prefix_del_txn_status_members(engine: &str) {
    let Some(etcdctl) = etcdctl() else { return };
    let c = Cluster::start(3, engine);
    // Talk to a follower-or-leader member chosen without knowing which is which.
    let one = c.member(2).grpc_addr.clone();
    let all = c.grpc_endpoints();

    assert_eq!(run(&etcdctl, &one, &["put", "foo", "bar"], None), "OK\n");
    assert_eq!(run(&etcdctl, &one, &["put", "foo2", "baz"], None), "OK\n");
    assert_eq!(
        run(&etcdctl, &c.member(3).grpc_addr, &["get", "foo"], None),
        "foo\nbar\n"
    );
    assert_eq!(
        run(&etcdctl, &one, &["get", "--prefix", "foo"], None),
        "foo\nbar\nfoo2\nbaz\n"
    );
    assert_eq!(
        run(
            &etcdctl,
            &one,
            &["get", "--prefix", "--keys-only", "foo"],
            None
        ),
        "foo\n\nfoo2\n\n"
    );
    // etcdctl 3.4 has no --count-only; --limit with JSON output shows count and more.
    let limited = run(
        &etcdctl,
        &one,
        &["get", "--prefix", "--limit", "1", "-w", "json", "foo"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&limited).expect("get json");
    assert_eq!(
        (v["count"].as_u64(), v["more"].as_bool()),
        (Some(2), Some(true)),
        "{limited}"
    );
    assert_eq!(v["kvs"].as_array().map(Vec::len), Some(1), "{limited}");

    // Txn: compares, then success ops, then failure ops, separated by blank lines.
    let txn = "value(\"foo\") = \"bar\"\n\nput foo qux\n\nput foo nope\n\n";
    let out = run(&etcdctl, &one, &["txn"], Some(txn));
    assert!(out.starts_with("SUCCESS"), "txn output: {out}");
    assert_eq!(
        run(&etcdctl, &one, &["get", "foo", "--print-value-only"], None),
        "qux\n"
    );
    let out = run(&etcdctl, &one, &["txn"], Some(txn));
    assert!(out.starts_with("FAILURE"), "txn output: {out}");
    assert_eq!(
        run(&etcdctl, &one, &["get", "foo", "--print-value-only"], None),
        "nope\n"
    );

    assert_eq!(run(&etcdctl, &one, &["del", "foo"], None), "1\n");
    assert_eq!(run(&etcdctl, &one, &["get", "foo"], None), "");
    assert_eq!(
        run(&etcdctl, &one, &["del", "--prefix", "foo"], None),
        "1\n"
    );

    let status = run(&etcdctl, &all, &["endpoint", "status", "-w", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&status).expect("endpoint status json");
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 3, "one status per endpoint: {status}");
    let leaders: Vec<u64> = arr
        .iter()
        .filter_map(|s| s["Status"]["leader"].as_u64())
        .collect();
    assert_eq!(leaders.len(), 3);
    assert!(
        leaders.windows(2).all(|w| w[0] == w[1]),
        "members agree on the leader: {leaders:?}"
    );

    let members = run(&etcdctl, &one, &["member", "list"], None);
    assert_eq!(members.lines().count(), 3, "{members}");
    for name in ["n1", "n2", "n3"] {
        assert!(
            members.contains(name),
            "member list names {name}: {members}"
        );
    }

    // Endpoints written as URLs, etcd's documented form, and `--cluster`, which dials the
    // client URLs MemberList gives: etcdctl 3.4 then sends `http://host:port` as HTTP/2
    // :authority.
    let urls = all
        .split(',')
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(run(&etcdctl, &urls, &["put", "url", "form"], None), "OK\n");
    assert_eq!(
        run(&etcdctl, &urls, &["get", "url", "--print-value-only"], None),
        "form\n"
    );
    let status = run(
        &etcdctl,
        &format!("http://{one}"),
        &["endpoint", "status", "--cluster", "-w", "json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&status).expect("endpoint status json");
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{status}");
    let health = run(
        &etcdctl,
        &one,
        &["endpoint", "health", "--cluster", "-w", "json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&health).expect("endpoint health json");
    let healthy = v.as_array().map(|a| {
        a.iter()
            .filter(|e| e["health"].as_bool() == Some(true))
            .count()
    });
    assert_eq!(healthy, Some(3), "{health}");
}
