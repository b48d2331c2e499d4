//! TLS end to end: one 3-member cluster with client and peer TLS, certificate auth on both
//! (what `synod dev --tls` runs), driven by etcdctl 3.4, curl and synodctl. Strangers are
//! refused — a client without the CA, one without a client certificate, a fourth process
//! holding a member certificate from another CA — while the cluster keeps serving; garbage
//! and half-open connections on the TLS ports close without harm; replacing the client
//! ports' certificate files takes effect without a restart. Every wait polls a condition
//! with a deadline.

mod common;

use common::{ClientSide, Cluster, etcdctl_command, free_ports, run_with_deadline, wait_until};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use synod_node::ClusterConfig;

const DEADLINE: Duration = Duration::from_secs(30);
/// The client ports' handshake timeout in this cluster (the default is 10 s).
const HANDSHAKE_TIMEOUT_MS: u64 = 1_000;

/// The files `synod certs` writes into a directory.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn generate(dir: PathBuf, ca_name: &str) -> Certs {
        let status = Command::new(env!("CARGO_BIN_EXE_synod"))
            .args(["certs", "--ca-name", ca_name, "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("run synod certs");
        assert!(status.success(), "synod certs failed");
        Certs { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn server(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("server.pem"), self.dir.join("server-key.pem"))
    }
    fn client(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("client.pem"), self.dir.join("client-key.pem"))
    }

    /// etcdctl's, curl's and synodctl's flags for this CA and its client certificate
    /// (`--cacert PATH --cert PATH --key PATH`: curl takes no `--flag=value`).
    fn flags(&self) -> Vec<String> {
        let (cert, key) = self.client();
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--cacert".into(),
            path(self.ca()),
            "--cert".into(),
            path(cert),
            "--key".into(),
            path(key),
        ]
    }
}

/// An HTTPS client trusting only `ca`, presenting `client` (certificate, key).
fn https_client(ca: &Path, client: &(PathBuf, PathBuf)) -> reqwest::blocking::Client {
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut identity = read(&client.0);
    identity.push(b'\n');
    identity.extend(read(&client.1));
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(&read(ca)).expect("CA"))
        .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
        .build()
        .expect("https client")
}

/// A scratch directory and a CA made in it for the test's certificates.
fn test_ca() -> (tempfile::TempDir, Certs) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Certs::generate(tmp.path().join("ca"), "synod test CA");
    (tmp, ca)
}

/// Copies `from` over `to` atomically (a temporary file and a rename).
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

#[test]
fn a_tls_cluster_serves_certified_clients_and_refuses_strangers() {
    let Some(etcdctl) = common::etcdctl() else {
        return;
    };
    let (tmp, ca) = test_ca();
    // The client ports get their own copy of the server pair, so replacing it (the reload
    // check) leaves the peer links' certificate alone.
    let port_cert = tmp.path().join("client-port.pem");
    let port_key = tmp.path().join("client-port-key.pem");
    replace(&ca.server().0, &port_cert);
    replace(&ca.server().1, &port_key);
    let c = certified_cluster(&ca, &|cfg| {
        cfg.tls.cert_file = Some(port_cert.clone());
        cfg.tls.key_file = Some(port_key.clone());
        cfg.tls.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS;
    });

    etcdctl_with_and_without_certificates(&c, &etcdctl, &ca);
    curl_and_synodctl(&c, &ca);
    the_client_certificate_names_the_user_once_auth_is_on(&c, &etcdctl, &ca);
    garbage_and_half_open_connections(&c);
    let foreign = Certs::generate(tmp.path().join("foreign"), "not the cluster CA");
    let intruder = |name: &str, pair: (PathBuf, PathBuf), expect: &str| {
        an_intruder_is_refused(&c, &tmp.path().join(name), &ca, pair, expect)
    };
    // A member certificate from another CA.
    intruder("foreign", foreign.server(), "invalid peer certificate");
    // The cluster CA's certificate, but not a member's (the client certificate, CN root).
    intruder("wrong-cn", ca.client(), "is not the allowed CN");
    the_client_certificate_reloads_without_a_restart(&c, tmp.path(), &ca, &port_cert, &port_key);
}

fn etcdctl_ok(
    c: &Cluster,
    etcdctl: &Path,
    endpoints: &str,
    tls: &[String],
    args: &[&str],
) -> String {
    let mut cmd = etcdctl_command(etcdctl, endpoints);
    cmd.args(tls).args(args);
    let (status, out, err) = run_with_deadline(cmd, DEADLINE);
    assert!(
        status.success(),
        "etcdctl {args:?} failed: {out}{err}\nn1 log:\n{}",
        c.log(1)
    );
    out
}

/// The first of comma-separated endpoints.
fn one_https(endpoints: &str) -> &str {
    endpoints.split(',').next().unwrap_or(endpoints)
}

fn etcdctl_fails(etcdctl: &Path, endpoint: &str, tls: &[String]) -> String {
    let mut cmd = etcdctl_command(etcdctl, endpoint);
    cmd.args(tls)
        .args(["--dial-timeout=2s", "--command-timeout=3s", "get", "k1"]);
    let (status, out, err) = run_with_deadline(cmd, DEADLINE);
    assert!(!status.success(), "etcdctl {tls:?} should fail: {out}");
    err
}

fn etcdctl_with_and_without_certificates(c: &Cluster, etcdctl: &Path, ca: &Certs) {
    let tls = ca.flags();
    // Endpoints written both ways: host:port (TLS from the flags) and https://host:port.
    let plain = c.grpc_endpoints();
    let https: Vec<String> = plain.split(',').map(|e| format!("https://{e}")).collect();
    let https = https.join(",");
    assert_eq!(
        etcdctl_ok(c, etcdctl, &plain, &tls, &["put", "k1", "v1"]),
        "OK\n"
    );
    assert_eq!(
        etcdctl_ok(c, etcdctl, &https, &tls, &["get", "k1"]),
        "k1\nv1\n"
    );
    let status = etcdctl_ok(c, etcdctl, &https, &tls, &["endpoint", "status"]);
    assert_eq!(status.lines().count(), 3, "{status}");
    // --cluster dials the advertised https:// client URLs, which etcdctl 3.4 also sends as
    // :authority: TLS and the authority fix together.
    let cluster = etcdctl_ok(
        c,
        etcdctl,
        one_https(&https),
        &tls,
        &["endpoint", "status", "--cluster"],
    );
    assert_eq!(cluster.matches("https://").count(), 3, "{cluster}");
    let members = etcdctl_ok(c, etcdctl, &https, &tls, &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    for line in members.lines() {
        // Peer and client URLs are advertised as https://.
        assert_eq!(line.matches("https://").count(), 2, "{members}");
    }

    let one = &c.member(1).grpc_addr;
    // No --cacert: the server's certificate is not trusted.
    let no_ca: Vec<String> = tls[2..].to_vec();
    etcdctl_fails(etcdctl, one, &no_ca);
    // No client certificate: --client-cert-auth refuses it, and says so in its log.
    let no_cert: Vec<String> = tls[..2].to_vec();
    etcdctl_fails(etcdctl, one, &no_cert);
    wait_until(DEADLINE, "n1 logging the refused client", || {
        c.log(1)
            .lines()
            .any(|l| l.contains("refused TLS connection") && l.contains("no certificates"))
            .then_some(())
    });
}

/// etcd's rule: with auth on, a gRPC request without a token runs as the user its verified
/// client certificate's CN names (`synod certs` makes CN `root`), and a token wins over it.
fn the_client_certificate_names_the_user_once_auth_is_on(c: &Cluster, etcdctl: &Path, ca: &Certs) {
    let tls = ca.flags();
    let one = c.member(1).grpc_addr.clone();
    let ctl = |args: &[&str]| etcdctl_ok(c, etcdctl, &one, &tls, args);
    ctl(&["user", "add", "root", "--new-user-password=rootpw"]);
    ctl(&["user", "grant-role", "root", "root"]);
    ctl(&["user", "add", "reader", "--new-user-password=readerpw"]);
    ctl(&["role", "add", "reads"]);
    ctl(&["role", "grant-permission", "reads", "read", "k1"]);
    ctl(&["user", "grant-role", "reader", "reads"]);
    ctl(&["auth", "enable"]);
    // No --user: the certificate's CN, root, may write.
    assert_eq!(ctl(&["put", "by-cn", "root"]), "OK\n");
    // A token wins over the certificate: the reader may read k1 but not write.
    assert_eq!(
        ctl(&[
            "--user",
            "reader:readerpw",
            "get",
            "k1",
            "--print-value-only"
        ]),
        "v1\n"
    );
    let mut cmd = etcdctl_command(etcdctl, &one);
    cmd.args(&tls)
        .args(["--user", "reader:readerpw", "put", "k1", "no"]);
    let (status, out, err) = run_with_deadline(cmd, DEADLINE);
    assert!(
        !status.success() && err.contains("permission denied"),
        "{out}{err}"
    );
    ctl(&["auth", "disable"]);
}

fn curl_and_synodctl(c: &Cluster, ca: &Certs) {
    let tls = ca.flags();
    let url = format!("https://{}/v1/kv/k1", c.member(2).http_addr);
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--fail"]).args(&tls).arg(&url);
    let (status, out, err) = run_with_deadline(curl, DEADLINE);
    assert!(status.success(), "curl {url}: {err}");
    assert!(out.contains(r#""value":"v1""#), "{out}");
    // The gRPC port's HTTP side: HTTP/1.1 by ALPN, or by its first bytes without ALPN, and
    // HTTP/2 requests that are not gRPC.
    for (flags, path, want) in [
        (&["--http1.1"][..], "/health", r#""health":"true""#),
        (
            &["--http1.1", "--no-alpn"][..],
            "/health",
            r#""health":"true""#,
        ),
        (&["--http2"][..], "/version", r#""etcdserver":"3.4.0""#),
    ] {
        let url = format!("https://{}{path}", c.member(3).grpc_addr);
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--fail"])
            .args(flags)
            .args(&tls)
            .arg(&url);
        let (status, out, err) = run_with_deadline(curl, DEADLINE);
        assert!(
            status.success() && out.contains(want),
            "curl {flags:?} {url}: {out}{err}"
        );
    }

    let endpoints = c
        .members
        .iter()
        .map(|m| m.http_addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let ctl = |args: &[&str]| {
        let mut cmd = Command::new(common::synodctl());
        cmd.args(&tls).args(["--endpoints", &endpoints]).args(args);
        let (status, out, err) = run_with_deadline(cmd, DEADLINE);
        assert!(status.success(), "synodctl {args:?}: {out}{err}");
        out
    };
    assert_eq!(ctl(&["put", "k2", "v2"]), "OK\n");
    assert_eq!(ctl(&["get", "k2"]), "k2\nv2\n");
}

/// Whether the server closes `s` within `within` (EOF or an error other than a timeout).
fn closed_within(mut s: TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // a TLS alert: keep reading until the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn put_ok(c: &Cluster, id: u64, key: &str) {
    let r = c.put(id, key, "x");
    assert!(
        r.status().is_success(),
        "PUT {key} at n{id}: {}",
        r.status()
    );
}

fn garbage_and_half_open_connections(c: &Cluster) {
    let m = c.member(1).clone();
    for addr in [&m.grpc_addr, &m.http_addr, &m.peer_addr] {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\n\r\nthis is not a ClientHello\x00\xff\xfe")
            .expect("write garbage");
        assert!(
            closed_within(s, Duration::from_secs(5)),
            "{addr} kept a garbage connection open"
        );
        put_ok(c, 1, "after-garbage");
    }
    // Half-open: connected, nothing sent. The member serves meanwhile, then closes them.
    let idle: Vec<TcpStream> = [&m.grpc_addr, &m.http_addr]
        .into_iter()
        .map(|a| TcpStream::connect(a).expect("connect"))
        .collect();
    put_ok(c, 1, "while-half-open");
    assert_eq!(c.get(1, "while-half-open", false).as_deref(), Some("x"));
    for s in idle {
        let within = Duration::from_millis(HANDSHAKE_TIMEOUT_MS * 5);
        assert!(
            closed_within(s, within),
            "a half-open connection outlived the timeout"
        );
    }
}

/// A fourth `synod server` claiming member 1's id, presenting `pair` as its peer certificate,
/// dialing the real members: they refuse it at the TLS handshake (logging `expect`) and keep
/// serving.
fn an_intruder_is_refused(
    c: &Cluster,
    tmp: &Path,
    ca: &Certs,
    pair: (PathBuf, PathBuf),
    expect: &str,
) {
    std::fs::create_dir_all(tmp).expect("intruder dir");
    let mut cfg = ClusterConfig::from_file(&c.config_path).expect("cluster file");
    let ports = free_ports(3);
    let me = &mut cfg.members[0];
    me.peer_addr = format!("127.0.0.1:{}", ports[0]);
    me.http_addr = format!("127.0.0.1:{}", ports[1]);
    me.grpc_addr = format!("127.0.0.1:{}", ports[2]);
    let t = &mut cfg.tls;
    t.cert_file = Some(pair.0.clone());
    t.key_file = Some(pair.1.clone());
    t.peer_cert_file = Some(pair.0);
    t.peer_key_file = Some(pair.1);
    // The cluster CA's certificate is public: the intruder trusts the members, and only its
    // own certificate gives it away.
    t.peer_trusted_ca_file = Some(ca.ca());
    let file = tmp.join("intruder.toml");
    std::fs::write(&file, cfg.to_toml_string()).expect("write");
    let log_path = tmp.join("intruder.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let intruder: Child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["server", "--id", "1", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(tmp.join("intruder-data"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn intruder");
    let _kill = KillOnDrop(intruder);
    eprintln!("intruder log: {}", log_path.display());
    let refused = wait_until(
        DEADLINE,
        "n2 or n3 refusing the intruder's certificate",
        || {
            put_ok(c, 2, "during-intrusion");
            [2, 3].into_iter().find_map(|id| {
                c.log(id)
                    .lines()
                    .find(|l| l.contains("refused peer TLS") && l.contains(expect))
                    .map(str::to_string)
            })
        },
    );
    assert!(refused.contains("addr=127.0.0.1:"), "{refused}");
    for id in 1..=3 {
        put_ok(c, id, "after-intrusion");
    }
    c.wait_all_reach_leader(DEADLINE);
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The client ports' certificate files are replaced by ones from a new CA: a client trusting
/// only the new CA gets in without any member restarting.
fn the_client_certificate_reloads_without_a_restart(
    c: &Cluster,
    tmp: &Path,
    ca: &Certs,
    port_cert: &Path,
    port_key: &Path,
) {
    let next = Certs::generate(tmp.join("next"), "the next CA");
    // The client certificate still comes from the first CA: client cert auth trusts it.
    let client = https_client(&next.ca(), &ca.client());
    let url = format!("https://{}/v1/kv/k1", c.member(1).http_addr);
    assert!(
        client.get(&url).send().is_err(),
        "trusted the new CA too early"
    );
    replace(&next.server().1, port_key);
    replace(&next.server().0, port_cert);
    wait_until(DEADLINE, "the reloaded certificate served", || {
        client
            .get(&url)
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    assert!(c.log(1).contains("TLS certificate reloaded"));
}

/// `synod dev --tls`: the printed etcdctl, curl and synodctl lines work as printed, and
/// Ctrl-C stops the cluster.
#[test]
fn synod_dev_tls_prints_commands_that_work() {
    let Some(etcdctl) = common::etcdctl() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let base = common::free_base(3);
    let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["dev", "--tls", "--fresh", "--base-port", &base.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("dev"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn synod dev --tls");
    let stdout = child.stdout.take().expect("stdout");
    let mut banner = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.expect("line");
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C stops every member") {
            break;
        }
    }
    // Each printed line, run as printed (the program replaced by the one found or built).
    let printed = |prefix: &str| -> Vec<String> {
        let line = banner
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{banner}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    let run = |program: &Path, args: &[String]| {
        let mut cmd = Command::new(program);
        cmd.env("ETCDCTL_API", "3").args(args);
        let (status, out, err) = run_with_deadline(cmd, DEADLINE);
        assert!(
            status.success(),
            "{program:?} {args:?}: {out}{err}\n{banner}"
        );
        out
    };
    let puts = printed("ETCDCTL_API=3 etcdctl");
    assert!(
        puts.iter().any(|a| a.starts_with("--endpoints=127.0.0.1:")),
        "{banner}"
    );
    assert_eq!(run(&etcdctl, &puts[2..]), "OK\n");
    let gets: Vec<String> = banner
        .lines()
        .filter(|l| l.contains("etcdctl") && l.contains("https://"))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .skip(2)
        .collect();
    assert_eq!(run(&etcdctl, &gets), "greeting\nhello\n");
    let curl = printed("curl");
    assert!(run(Path::new("curl"), &curl[1..]).contains(r#""value":"hello""#));
    let ctl = printed("cargo run -q --bin synodctl --");
    assert_eq!(run(&common::synodctl(), &ctl[6..]), "greeting\nhello\n");

    let pid = child.id().to_string();
    let sigint = Command::new("kill").args(["-INT", &pid]).status();
    assert!(sigint.expect("kill").success());
    let status = wait_until(DEADLINE, "synod dev to exit", || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "synod dev exited with {status}");
}

/// A 3-member OmniPaxos cluster with client and peer TLS from `ca`'s files, certificate auth
/// on both ports (members' certificates: CN "synod"); `more` adjusts the cluster file further.
fn certified_cluster(ca: &Certs, more: &dyn Fn(&mut ClusterConfig)) -> Cluster {
    let tweak = |cfg: &mut ClusterConfig| {
        let t = &mut cfg.tls;
        t.cert_file = Some(ca.server().0);
        t.key_file = Some(ca.server().1);
        t.trusted_ca_file = Some(ca.ca());
        t.client_cert_auth = true;
        t.peer_cert_file = Some(ca.server().0);
        t.peer_key_file = Some(ca.server().1);
        t.peer_trusted_ca_file = Some(ca.ca());
        t.peer_client_cert_auth = true;
        // `synod certs` names every server certificate "synod"; its client certificate "root".
        t.peer_cert_allowed_cn = Some("synod".into());
        more(cfg);
    };
    let side = ClientSide {
        http: https_client(&ca.ca(), &ca.client()),
        scheme: "https",
    };
    Cluster::start_tls(3, "omnipaxos", &tweak, side)
}

/// The periodic corruption check on a cluster whose client ports demand a certificate: a
/// member asks its peers over the peer port (peer TLS), so the member whose state diverged
/// raises CORRUPT (until 2026-12-05 it dialled its peers' client ports in plain text, and with
/// client TLS on it compared nothing).
#[test]
fn the_corruption_check_works_behind_client_and_peer_tls() {
    let Some(etcdctl) = common::etcdctl() else {
        return;
    };
    let (_tmp, ca) = test_ca();
    let mut c = certified_cluster(&ca, &|cfg| cfg.corrupt_check_ms = 300);
    // n3 comes back applying every put with its value altered.
    c.kill(3);
    c.restart_with(3, &["--plant-bug", "divergent-apply"]);
    c.wait_all_reach_leader(DEADLINE);
    let tls = ca.flags();
    let (n1, n3) = (c.member(1).grpc_addr.clone(), c.member(3).grpc_addr.clone());
    for i in 0..5 {
        etcdctl_ok(&c, &etcdctl, &n1, &tls, &["put", &format!("k{i}"), "value"]);
    }
    wait_until(DEADLINE, "alarm:CORRUPT on n3", || {
        let out = etcdctl_ok(&c, &etcdctl, &n3, &tls, &["alarm", "list"]);
        out.contains("alarm:CORRUPT").then_some(())
    });
    assert!(c.log(3).contains("CORRUPT alarm raised"), "{}", c.log(3));
    let healthy = etcdctl_ok(&c, &etcdctl, &n1, &tls, &["alarm", "list"]);
    assert_eq!(healthy, "", "the healthy majority raises nothing");
}

/// A member added to a cluster whose client ports demand a certificate joins it: `--join`
/// asks the members over HTTPS with the cluster's CA and its own certificate, the learner
/// publishes its client addresses through the voters the same way, and it serves (until
/// 2026-12-05 it asked over plain HTTP and never got in).
#[test]
fn a_member_joins_a_cluster_whose_client_ports_demand_certificates() {
    let Some(etcdctl) = common::etcdctl() else {
        return;
    };
    let (_tmp, ca) = test_ca();
    let mut c = certified_cluster(&ca, &|_| {});
    let (tls, all) = (ca.flags(), c.grpc_endpoints());
    etcdctl_ok(&c, &etcdctl, &all, &tls, &["put", "before", "1"]);
    let ports = free_ports(3);
    let peer_url = format!("--peer-urls=https://127.0.0.1:{}", ports[0]);
    let added = etcdctl_ok(
        &c,
        &etcdctl,
        &all,
        &tls,
        &["member", "add", "n4", &peer_url, "--learner"],
    );
    let hex = added.split_whitespace().nth(1).expect("an id");
    let id = u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{added}: {e}"));
    c.spawn_joiner(id, "n4", [ports[0], ports[1], ports[2]]);
    let n4 = c.member(id).grpc_addr.clone();
    let client_url = format!("https://{n4}");
    wait_until(DEADLINE, "n4 listed with its client URL", || {
        let listed = etcdctl_ok(&c, &etcdctl, &all, &tls, &["member", "list"]);
        listed
            .lines()
            .any(|l| l.contains(", started, n4, ") && l.contains(&client_url))
            .then_some(())
    });
    wait_until(DEADLINE, "n4 serving the earlier write", || {
        let args = ["get", "before", "--print-value-only", "--consistency=s"];
        (etcdctl_ok(&c, &etcdctl, &n4, &tls, &args) == "1\n").then_some(())
    });
}
