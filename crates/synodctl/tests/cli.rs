//! End-to-end tests of the `synodctl` binary against the real HTTP/JSON API (`synod-http`)
//! served in-process over `local_test_node` on a loopback port chosen by the OS, so these
//! tests run in parallel with each other and with other crates' tests.
//!
//! Failover on 503 and "a definite answer is final" need an endpoint that answers exactly
//! that, so a few tests put a canned-answer HTTP stub in front of the real server.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use synod_core::Capabilities;

/// How long a test waits for the in-process server to come up.
const SERVER_START_TIMEOUT_MS: u64 = 10_000;

/// The HTTP API over a single-node stand-in, on its own runtime thread; stopped on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("test runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind loopback");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let caps = Capabilities {
                    ranges: true,
                    transactions: true,
                    revisions: true,
                    watch: true,
                    leases: true,
                };
                let handle = synod_node::handle::local_test_node("omnipaxos", caps);
                let shutdown = async move {
                    let _ = stop_rx.await;
                };
                synod_http::serve(listener, handle, shutdown)
                    .await
                    .expect("serve");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_millis(SERVER_START_TIMEOUT_MS))
            .expect("server did not start");
        // The listener is bound before its address is sent, so connections made from now on
        // queue in the backlog until `serve` accepts them: no readiness race.
        Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback port with nothing listening (bound, then released).
fn closed_endpoint() -> String {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr.to_string()
}

/// An HTTP stub that answers every request with one canned status and JSON body, and counts
/// the requests it saw. Runs until the test process ends.
fn stub(status_line: &'static str, body: &'static str) -> (String, mpsc::Receiver<String>) {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let (seen_tx, seen_rx) = mpsc::channel();
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut content_length = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body_in = vec![0; content_length];
            let _ = reader.read_exact(&mut body_in);
            let _ = seen_tx.send(request_line.trim().to_string());
            let _ = write!(
                conn,
                "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen_rx)
}

/// Runs the built binary with `args` against `endpoints`, feeding `stdin`.
fn ctl_with(endpoints: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_synodctl"))
        .args(["--endpoints", endpoints, "--timeout", "5s"])
        .args(args)
        .env_remove("SYNODCTL_ENDPOINTS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn synodctl");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait synodctl")
}

fn ctl(server: &Server, args: &[&str]) -> Output {
    ctl_with(&server.endpoint(), args, "")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and returns stdout.
#[track_caller]
fn expect(o: Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

#[test]
fn put_get_del_and_formats() {
    let s = Server::start();
    assert_eq!(expect(ctl(&s, &["put", "a", "hello world"]), 0), "OK\n");
    assert_eq!(expect(ctl(&s, &["get", "a"]), 0), "a\nhello world\n");
    assert_eq!(expect(ctl(&s, &["get", "a", "--keys-only"]), 0), "a\n");

    // Keys with characters that mean something in a URL stay one key.
    let odd = "dir/x y?#%";
    assert_eq!(expect(ctl(&s, &["put", odd, "v"]), 0), "OK\n");
    assert_eq!(expect(ctl(&s, &["get", odd]), 0), format!("{odd}\nv\n"));

    let json: Value =
        serde_json::from_str(&expect(ctl(&s, &["-w", "json", "get", "a"]), 0)).expect("json");
    assert_eq!(json["kv"]["value"], "hello world");
    assert_eq!(json["kv"]["version"], 1);
    assert!(json["revision"].as_u64().is_some(), "{json}");

    let table = expect(ctl(&s, &["-w", "table", "get", "a"]), 0);
    assert!(table.contains("| KEY | VALUE       | VERSION |"), "{table}");
    assert!(table.contains("| a   | hello world | 1       |"), "{table}");

    let missing = ctl(&s, &["get", "nope"]);
    assert!(
        stderr(&missing).contains("key_not_found"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(expect(missing, 1), "");

    assert_eq!(expect(ctl(&s, &["del", "a"]), 0), "1\n");
    let again = ctl(&s, &["del", "a"]);
    assert!(
        stderr(&again).starts_with("Error: key_not_found"),
        "{}",
        stderr(&again)
    );
    expect(again, 1);

    // Usage errors exit 2 and send nothing.
    expect(ctl(&s, &["get", ""]), 2);
    expect(ctl(&s, &["frobnicate"]), 2);
    expect(ctl(&s, &["put", "only-key"]), 2);
}

#[test]
fn prefix_ranges_and_counts() {
    let s = Server::start();
    for (k, v) in [("p/1", "one"), ("p/2", "two"), ("p/3", "three"), ("q", "x")] {
        expect(ctl(&s, &["put", k, v]), 0);
    }
    assert_eq!(
        expect(ctl(&s, &["get", "p/", "--prefix"]), 0),
        "p/1\none\np/2\ntwo\np/3\nthree\n"
    );
    assert_eq!(
        expect(ctl(&s, &["get", "p/", "--prefix", "--keys-only"]), 0),
        "p/1\np/2\np/3\n"
    );
    assert_eq!(
        expect(ctl(&s, &["get", "p/", "--prefix", "--limit", "2"]), 0),
        "p/1\none\np/2\ntwo\n"
    );
    assert_eq!(
        expect(
            ctl(&s, &["get", "p/2", "q", "--consistency", "sequential"]),
            0
        ),
        "p/2\ntwo\np/3\nthree\n",
        "[p/2, q) excludes q"
    );
    assert_eq!(expect(ctl(&s, &["count"]), 0), "4\n");
    assert_eq!(expect(ctl(&s, &["count", "p/"]), 0), "3\n");
    let table = expect(ctl(&s, &["-w", "table", "get", "", "--prefix"]), 0);
    assert_eq!(
        table.lines().count(),
        4 + 4,
        "rule, header, rule, 4 rows, rule:\n{table}"
    );
}

#[test]
fn compare_and_swap() {
    let s = Server::start();
    let cas = |args: &[&str]| ctl(&s, &[&["cas", "k"], args].concat());
    assert_eq!(
        expect(cas(&["--expect-absent", "--value", "v1"]), 0),
        "OK\n"
    );
    assert_eq!(
        expect(cas(&["--expect-version", "1", "--value", "v2"]), 0),
        "OK\n"
    );

    let lost = cas(&["--expect-version", "1", "--value", "v3"]);
    let err = stderr(&lost);
    assert!(err.starts_with("Error: cas_conflict"), "{err}");
    assert!(
        err.contains("current: version=2"),
        "the current kv is shown: {err}"
    );
    assert!(err.contains("value=v2"), "{err}");
    expect(lost, 1);

    let lost = cas(&["--expect-absent", "--value", "v3"]);
    assert!(stderr(&lost).contains("cas_conflict"), "{}", stderr(&lost));
    expect(lost, 1);

    assert_eq!(
        expect(cas(&["--expect-value", "v2", "--delete"]), 0),
        "OK\n"
    );
    expect(ctl(&s, &["get", "k"]), 1);
    let lost = cas(&["--expect-value", "v2", "--value", "v9"]);
    assert!(
        stderr(&lost).contains("current: (absent)"),
        "{}",
        stderr(&lost)
    );
    expect(lost, 1);

    // Exactly one expectation and one outcome, or it is a usage error.
    expect(cas(&["--value", "v"]), 2);
    expect(cas(&["--expect-absent"]), 2);
}

/// `member add|list|promote|update|remove` against a node whose stand-in engine applies
/// membership changes as the replica layer does; refusals exit 1 with the server's code.
#[test]
fn member_changes() {
    let s = Server::start();
    let added = expect(
        ctl(
            &s,
            &[
                "member",
                "add",
                "n2",
                "--peer-addr",
                "http://127.0.0.1:9",
                "--learner",
            ],
        ),
        0,
    );
    assert!(added.starts_with("Member 2 added"), "{added}");
    assert!(
        added.trim_end().ends_with("\n2, n2, 127.0.0.1:9, , , true"),
        "{added}"
    );
    let list = expect(ctl(&s, &["member", "list"]), 0);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("2, n2") && l.ends_with("true")),
        "{list}"
    );
    let promoted = expect(ctl(&s, &["member", "promote", "0x2"]), 0);
    assert!(promoted.starts_with("Member 2 promoted"), "{promoted}");
    expect(
        ctl(
            &s,
            &["member", "update", "2", "--grpc-addr", "127.0.0.1:19"],
        ),
        0,
    );
    let json: Value =
        serde_json::from_str(&expect(ctl(&s, &["-w", "json", "member", "list"]), 0)).expect("json");
    assert_eq!(json["members"][1]["grpc_addr"], "127.0.0.1:19");
    assert_eq!(json["members"][1]["learner"], false);

    let again = ctl(&s, &["member", "promote", "2"]);
    assert!(
        stderr(&again).contains("membership_refused"),
        "{}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("can only promote a learner member"),
        "{}",
        stderr(&again)
    );
    expect(again, 1);
    let unknown = ctl(&s, &["member", "remove", "9"]);
    assert!(
        stderr(&unknown).contains("member_not_found"),
        "{}",
        stderr(&unknown)
    );
    expect(unknown, 1);
    let bad = ctl(&s, &["member", "add", "n3", "--peer-addr", "unix://x:1"]);
    assert!(stderr(&bad).contains("invalid_request"), "{}", stderr(&bad));
    expect(bad, 1);
    expect(ctl(&s, &["member", "remove", "zz"]), 2);

    let removed = expect(ctl(&s, &["member", "remove", "2"]), 0);
    assert!(removed.starts_with("Member 2 removed"), "{removed}");
    let last = ctl(&s, &["member", "remove", "1"]);
    assert!(
        stderr(&last).contains("not enough started members"),
        "{}",
        stderr(&last)
    );
    expect(last, 1);
    assert_eq!(expect(ctl(&s, &["member", "list"]), 0).lines().count(), 1);
}

#[test]
fn status_and_members() {
    let s = Server::start();
    let st = expect(ctl(&s, &["status"]), 0);
    assert!(
        st.contains(&format!("endpoint          {}", s.endpoint())),
        "{st}"
    );
    assert!(st.contains("engine            omnipaxos"), "{st}");
    let json: Value =
        serde_json::from_str(&expect(ctl(&s, &["-w", "json", "status"]), 0)).expect("json");
    assert_eq!(json["engine"], "omnipaxos");
    assert_eq!(json["member_id"], 1);

    let members = expect(ctl(&s, &["members"]), 0);
    assert!(members.starts_with("1, n1, "), "{members}");
    let table = expect(ctl(&s, &["-w", "table", "members"]), 0);
    assert!(table.contains("| ID | NAME |"), "{table}");

    // --all asks each endpoint: the live one gives a row, the dead one makes the exit code 3.
    let endpoints = format!("{},{}", s.endpoint(), closed_endpoint());
    let all = ctl_with(&endpoints, &["-w", "table", "status", "--all"], "");
    assert!(
        stderr(&all).contains("no endpoint reachable"),
        "{}",
        stderr(&all)
    );
    let table = expect(all, 3);
    assert_eq!(
        table.lines().count(),
        5,
        "rule, header, rule, one row, rule:\n{table}"
    );
}

#[test]
fn failover_to_the_next_endpoint() {
    let s = Server::start();
    let closed = closed_endpoint();
    let endpoints = format!("{closed},{}", s.endpoint());
    assert_eq!(
        expect(ctl_with(&endpoints, &["put", "f", "1"], ""), 0),
        "OK\n"
    );
    assert_eq!(expect(ctl_with(&endpoints, &["get", "f"], ""), 0), "f\n1\n");

    let dead = ctl_with(
        &format!("{closed},{}", closed_endpoint()),
        &["get", "f"],
        "",
    );
    let err = stderr(&dead);
    assert!(err.starts_with("Error: no endpoint reachable"), "{err}");
    assert!(err.contains(&closed), "names the endpoint: {err}");
    expect(dead, 3);

    // The endpoint list also comes from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_synodctl"))
        .args(["get", "f"])
        .env("SYNODCTL_ENDPOINTS", &endpoints)
        .output()
        .expect("spawn");
    assert_eq!(expect(out, 0), "f\n1\n");
}

#[test]
fn a_503_fails_over_but_a_definite_answer_is_final() {
    let s = Server::start();
    expect(ctl(&s, &["put", "k", "real"]), 0);

    let (unavailable, seen) = stub(
        "503 Service Unavailable",
        r#"{"error":{"code":"unavailable","message":"no quorum"}}"#,
    );
    let endpoints = format!("{unavailable},{}", s.endpoint());
    assert_eq!(
        expect(ctl_with(&endpoints, &["get", "k"], ""), 0),
        "k\nreal\n"
    );
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(5))
            .expect("stub was asked first"),
        "GET /v1/kv/k?consistency=linearizable HTTP/1.1"
    );

    // Only 503s everywhere: the server's own error, exit 1 (reachable, but cannot serve).
    let (unavailable2, _) = stub(
        "503 Service Unavailable",
        r#"{"error":{"code":"busy","message":"overloaded"}}"#,
    );
    let out = ctl_with(&format!("{unavailable},{unavailable2}"), &["get", "k"], "");
    assert!(
        stderr(&out).starts_with("Error: busy: overloaded"),
        "{}",
        stderr(&out)
    );
    expect(out, 1);

    let (not_found, _) = stub(
        "404 Not Found",
        r#"{"error":{"code":"key_not_found","message":"key not found"}}"#,
    );
    let out = ctl_with(&format!("{not_found},{}", s.endpoint()), &["get", "k"], "");
    assert!(stderr(&out).contains("key_not_found"), "{}", stderr(&out));
    expect(out, 1);
}

#[test]
fn a_split_or_merge_refused_as_done_after_an_unanswered_attempt_is_success() {
    let (cut, _) = stub(
        "400 Bad Request",
        r#"{"error":{"code":"invalid_request","message":"split key f does not cut this group's range [f, m) in two"}}"#,
    );
    let (begins, _) = stub(
        "400 Bad Request",
        r#"{"error":{"code":"invalid_request","message":"merge key f does not begin a range"}}"#,
    );
    // Asked first, the refusal stands: nothing this command sent changed the layout.
    let out = ctl_with(&cut, &["range", "split", "f"], "");
    assert!(stderr(&out).contains("does not cut"), "{}", stderr(&out));
    expect(out, 1);
    // After an endpoint that gave no answer, the layout holds as asked: success, said so.
    let dead = closed_endpoint();
    let said = expect(
        ctl_with(&format!("{dead},{cut}"), &["range", "split", "f"], ""),
        0,
    );
    assert!(said.starts_with("A range begins at f"), "{said}");
    let said = expect(
        ctl_with(&format!("{dead},{begins}"), &["range", "merge", "f"], ""),
        0,
    );
    assert!(said.starts_with("A range no longer begins at f"), "{said}");
    // Any other refusal after a retry is still an error.
    let (other, _) = stub(
        "400 Bad Request",
        r#"{"error":{"code":"invalid_request","message":"split key f falls inside "door/""}}"#,
    );
    expect(
        ctl_with(&format!("{dead},{other}"), &["range", "split", "f"], ""),
        1,
    );
}

#[test]
fn repl_from_stdin() {
    let s = Server::start();
    let script =
        "SET a 1\nGET a\nSIZE\n\n# a comment\nset b \"two words\"\nget b\nhelp\nQUIT\nDEL a\n";
    let out = expect(ctl_with(&s.endpoint(), &[], script), 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..6], ["OK", "a", "1", "1", "OK", "b"], "{out}");
    assert_eq!(lines[6], "two words");
    assert!(lines[7].starts_with("Commands"), "help follows: {out}");
    // QUIT stopped the session: the DEL after it never ran.
    assert_eq!(expect(ctl(&s, &["get", "a"]), 0), "a\n1\n");

    // A scripted session reports its last failure in the exit code and keeps going after it.
    let out = ctl_with(&s.endpoint(), &[], "GET missing\nbogus\nSIZE\n");
    let err = stderr(&out);
    assert!(err.contains("key_not_found"), "{err}");
    assert!(err.contains("type help"), "{err}");
    assert_eq!(expect(out, 2), "2\n", "SIZE still ran");
}

#[test]
fn reads_at_a_revision_sorted_lists_and_compaction() {
    let s = Server::start();
    expect(ctl(&s, &["put", "a", "1"]), 0); // revision 1
    expect(ctl(&s, &["put", "b", "x"]), 0); // 2
    expect(ctl(&s, &["put", "a", "2"]), 0); // 3
    assert_eq!(expect(ctl(&s, &["get", "a", "--rev", "1"]), 0), "a\n1\n");
    assert_eq!(
        expect(ctl(&s, &["get", "", "--prefix", "--rev", "1"]), 0),
        "a\n1\n"
    );
    assert_eq!(
        expect(
            ctl(
                &s,
                &[
                    "get",
                    "",
                    "--prefix",
                    "--keys-only",
                    "--sort-by",
                    "mod",
                    "--order",
                    "desc"
                ]
            ),
            0
        ),
        "a\nb\n"
    );
    assert_eq!(
        expect(
            ctl(
                &s,
                &["get", "", "--prefix", "--keys-only", "--sort-by", "create"]
            ),
            0
        ),
        "a\nb\n"
    );
    assert_eq!(
        expect(
            ctl(
                &s,
                &[
                    "get",
                    "",
                    "--prefix",
                    "--keys-only",
                    "--max-mod-revision",
                    "2"
                ]
            ),
            0
        ),
        "b\n"
    );
    expect(ctl(&s, &["get", "a", "--sort-by", "mod"]), 2);

    assert_eq!(
        expect(ctl(&s, &["compact", "2"]), 0),
        "compacted revision 2\n"
    );
    let gone = ctl(&s, &["get", "a", "--rev", "1"]);
    assert!(
        stderr(&gone).starts_with("Error: compacted"),
        "{}",
        stderr(&gone)
    );
    expect(gone, 1);
    let future = ctl(&s, &["get", "a", "--rev", "9"]);
    assert!(
        stderr(&future).contains("future_revision"),
        "{}",
        stderr(&future)
    );
    expect(future, 1);
    let json: Value =
        serde_json::from_str(&expect(ctl(&s, &["-w", "json", "compact", "3"]), 0)).expect("json");
    assert_eq!(json["compact_revision"], 3);
}

/// A running `synodctl watch`, its stdout lines delivered through a channel.
struct Watching {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watching {
    fn start(endpoints: &str, args: &[&str]) -> Watching {
        let mut child = Command::new(env!("CARGO_BIN_EXE_synodctl"))
            .args(["--endpoints", endpoints, "watch"])
            .args(args)
            .env_remove("SYNODCTL_ENDPOINTS")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn synodctl watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watching { child, lines }
    }

    /// The next `n` lines printed, failing the test if they do not come in time.
    fn take(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.lines
                    .recv_timeout(Duration::from_millis(SERVER_START_TIMEOUT_MS))
                    .unwrap_or_else(|e| panic!("watch line {i} of {n}: {e}"))
            })
            .collect()
    }

    /// Waits for the command to exit by itself; returns its exit code and stderr.
    fn exit(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().expect("wait");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.code(), err)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        // Ctrl-C's job, for a command that runs until interrupted.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_prints_events_as_they_happen() {
    let s = Server::start();
    expect(ctl(&s, &["put", "a", "1"]), 0); // revision 1
    // From revision 2: whenever the stream opens, it reports the writes below.
    let w = Watching::start(&s.endpoint(), &["a", "--rev", "2", "--prev-kv"]);
    expect(ctl(&s, &["put", "a", "2"]), 0); // 2
    expect(ctl(&s, &["put", "other", "x"]), 0); // 3: not watched
    expect(ctl(&s, &["del", "a"]), 0); // 4
    assert_eq!(
        w.take(10),
        ["PUT", "a", "1", "a", "2", "DELETE", "a", "2", "a", ""],
        "type, previous key and value, key and value (a deleted key's value is empty)"
    );

    let json = Watching::start(&s.endpoint(), &["", "--prefix", "--rev", "1", "-w", "json"]);
    let lines = json.take(4);
    let revisions: Vec<u64> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            v["revision"].as_u64().expect("an event line")
        })
        .collect();
    assert_eq!(revisions, [1, 2, 3, 4]);

    // A start that was compacted away cannot be watched: exit 1, the code on stderr.
    expect(ctl(&s, &["compact", "3"]), 0);
    let (code, err) = Watching::start(&s.endpoint(), &["a", "--rev", "2"]).exit();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.starts_with("Error: compacted"), "{err}");
    let (code, _) = Watching::start(&s.endpoint(), &[""]).exit();
    assert_eq!(
        code,
        Some(2),
        "an empty key without --prefix is a usage error"
    );
}

#[test]
fn watch_resumes_at_the_next_endpoint_without_gaps_or_repeats() {
    // Two stand-ins playing two members of one cluster: the same writes, the second a
    // little ahead.
    let first = Server::start();
    let second = Server::start();
    for (server, values) in [(&first, &["1", "2"][..]), (&second, &["1", "2", "3"][..])] {
        for v in values {
            expect(ctl(server, &["put", "k", v]), 0);
        }
    }
    let endpoints = format!("{},{}", first.endpoint(), second.endpoint());
    let w = Watching::start(&endpoints, &["k", "--rev", "2"]);
    assert_eq!(w.take(3), ["PUT", "k", "2"]);
    // The first member shuts down: its stream ends, the watch resumes at revision 3 on the
    // second, so revision 2 is not printed again.
    drop(first);
    assert_eq!(w.take(3), ["PUT", "k", "3"]);
    expect(ctl(&second, &["put", "k", "4"]), 0);
    assert_eq!(w.take(3), ["PUT", "k", "4"]);
}
