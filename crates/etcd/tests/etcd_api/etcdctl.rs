//! Debian's `etcdctl` 3.4 — a client nobody here wrote — against Synod's etcd gRPC API:
//! put, get, get --prefix, del, txn (from stdin), endpoint status, endpoint health,
//! member list. If `etcdctl` is missing the test fails loudly, unless
//! `SYNOD_ALLOW_MISSING_ETCDCTL=1` says a skip is acceptable on this machine (CI installs the
//! `etcd-client` package, so it never skips there).

use crate::common;

use common::TestServer;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// etcdctl's own per-command timeout is 5 s; allow process start-up on a loaded machine.
const ETCDCTL_DEADLINE: Duration = Duration::from_secs(20);

/// What one etcdctl run printed.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn etcdctl(s: &TestServer, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", s.addr))
        .arg("--command-timeout=5s")
        .arg("--dial-timeout=5s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn etcdctl");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(ETCDCTL_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("etcdctl {args:?} did not finish in {ETCDCTL_DEADLINE:?}"))
        .expect("etcdctl ran");
    let o = Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "$ etcdctl {}\n{}{}(exit ok: {})",
        args.join(" "),
        o.stdout,
        o.stderr,
        o.ok
    );
    o
}

async fn ok(s: &TestServer, args: &[&str], stdin: Option<&str>) -> String {
    let o = etcdctl(s, args, stdin).await;
    assert!(o.ok, "etcdctl {args:?} failed: {}{}", o.stdout, o.stderr);
    o.stdout
}

/// The distinct `op` labels of gRPC requests recorded in the node's metrics.
fn grpc_ops(s: &TestServer) -> Vec<String> {
    let text = s.handle.metrics().encode();
    let mut ops: Vec<String> = text
        .lines()
        .filter(|l| l.contains(r#"api="grpc""#))
        .filter_map(|l| l.split(r#"op=""#).nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    ops.sort();
    ops.dedup();
    ops
}

/// Is etcdctl on PATH? If not, say so loudly; fail unless a skip was explicitly allowed.
fn etcdctl_available() -> bool {
    let found = std::process::Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return true;
    }
    let allowed = std::env::var("SYNOD_ALLOW_MISSING_ETCDCTL").as_deref() == Ok("1");
    eprintln!();
    eprintln!("################################################################");
    eprintln!("##  etcdctl NOT FOUND on PATH: the etcdctl interop test        ##");
    eprintln!("##  did NOT run. Install it: apt-get install -y etcd-client    ##");
    eprintln!("##  (set SYNOD_ALLOW_MISSING_ETCDCTL=1 to allow this skip)     ##");
    eprintln!("################################################################");
    eprintln!();
    assert!(
        allowed,
        "etcdctl is not installed and SYNOD_ALLOW_MISSING_ETCDCTL=1 is not set"
    );
    false
}

#[tokio::test]
async fn etcdctl_3_4_works_against_synod() {
    if !etcdctl_available() {
        return;
    }
    let s = TestServer::start().await;

    assert_eq!(ok(&s, &["put", "greeting", "hello"], None).await, "OK\n");
    // etcdctl 3.4 connects without any preliminary RPC (no Authenticate, no Status): a put
    // is exactly one KV.Put.
    let ops = grpc_ops(&s);
    assert_eq!(ops, ["put"], "RPCs seen after one put");
    assert_eq!(
        ok(&s, &["put", "greeting/fr", "bonjour"], None).await,
        "OK\n"
    );
    assert_eq!(ok(&s, &["put", "other", "x"], None).await, "OK\n");
    assert_eq!(
        ok(&s, &["get", "greeting"], None).await,
        "greeting\nhello\n"
    );
    assert_eq!(
        ok(&s, &["get", "--prefix", "greeting"], None).await,
        "greeting\nhello\ngreeting/fr\nbonjour\n"
    );
    assert_eq!(
        ok(&s, &["get", "--prefix", "--keys-only", "greeting"], None).await,
        "greeting\n\ngreeting/fr\n\n"
    );
    assert_eq!(ok(&s, &["get", "missing"], None).await, "");

    // txn reads compares, then success ops, then failure ops, separated by blank lines.
    let txn = "value(\"greeting\") = \"hello\"\n\nput greeting hi\n\nput greeting lost\n\n";
    let out = ok(&s, &["txn"], Some(txn)).await;
    assert!(out.starts_with("SUCCESS"), "{out}");
    assert_eq!(ok(&s, &["get", "greeting"], None).await, "greeting\nhi\n");
    let txn =
        "value(\"greeting\") = \"hello\"\n\nput greeting wrong\n\nput greeting failed-branch\n\n";
    let out = ok(&s, &["txn"], Some(txn)).await;
    assert!(out.starts_with("FAILURE"), "{out}");
    assert_eq!(
        ok(&s, &["get", "greeting"], None).await,
        "greeting\nfailed-branch\n"
    );
    let txn = "version(\"other\") = \"1\"\nmod(\"other\") > \"0\"\ncreate(\"other\") = \"3\"\n\nget other\n\n\n";
    let out = ok(&s, &["txn"], Some(txn)).await;
    assert!(out.starts_with("SUCCESS"), "{out}");
    assert!(out.contains("other\nx\n"), "{out}");

    assert_eq!(ok(&s, &["del", "greeting/fr"], None).await, "1\n");
    assert_eq!(ok(&s, &["del", "--prefix", "greeting"], None).await, "1\n");
    assert_eq!(ok(&s, &["get", "--prefix", "greeting"], None).await, "");

    let out = ok(&s, &["endpoint", "status"], None).await;
    let endpoint = s.addr.to_string();
    assert!(out.starts_with(&format!("{endpoint}, 1, ")), "{out}");
    let out = ok(&s, &["endpoint", "status", "-w", "json"], None).await;
    assert!(out.contains("\"leader\":1"), "{out}");
    assert!(out.contains("\"cluster_id\":24301"), "{out}");

    // etcdctl 3.4 prints health on stderr; its probe is one linearizable Get of "health".
    let o = etcdctl(&s, &["endpoint", "health"], None).await;
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("is healthy"), "{}", o.stderr);

    assert_eq!(ok(&s, &["alarm", "list"], None).await, "");

    let out = ok(&s, &["member", "list"], None).await;
    assert_eq!(
        out,
        "1, started, n1, http://127.0.0.1:0, http://127.0.0.1:0, false\n"
    );

    // Defragment is served (nothing to reclaim on this node without a log).
    let o = etcdctl(&s, &["defrag"], None).await;
    assert!(
        o.ok && o.stdout.contains("Finished defragmenting"),
        "{}{}",
        o.stdout,
        o.stderr
    );

    // Auth is served: no users yet, and enabling without root says etcd's words.
    let o = etcdctl(&s, &["user", "list"], None).await;
    assert!(o.ok && o.stdout.is_empty(), "{}{}", o.stdout, o.stderr);
    let o = etcdctl(&s, &["auth", "enable"], None).await;
    assert!(!o.ok);
    assert!(
        o.stderr.contains("etcdserver: root user does not exist"),
        "{}",
        o.stderr
    );

    s.stop().await;
}
