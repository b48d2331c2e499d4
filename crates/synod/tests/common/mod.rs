//! A real multi-process cluster for integration tests: `synod server` processes on free
//! loopback ports (relaunched on new ones if another process takes one first), started only
//! once every member serves, a temporary data directory, SIGKILL and restart, and polling helpers
//! that wait for a condition with a deadline (never a bare sleep).

#![allow(dead_code)]

use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use synod_core::SplitMix64;
use synod_node::{ClusterConfig, MemberConfig};

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// Distinct per launch, so a status answer proves which cluster a member belongs to.
    pub cluster_name: String,
    pub members: Vec<MemberConfig>,
    children: Vec<Option<Child>>,
    pub http: reqwest::blocking::Client,
    /// "http", or "https" for a cluster started with [`Cluster::start_tls`].
    pub scheme: &'static str,
}

/// How the harness itself reaches the client ports of a TLS cluster.
#[derive(Clone)]
pub struct ClientSide {
    pub http: reqwest::blocking::Client,
    pub scheme: &'static str,
}

/// Engines without a leader (EPaxos names each member its own): a cluster of them is ready
/// when its members are connected, not when they agree on a leader.
pub const LEADERLESS_ENGINES: [&str; 2] = ["caspaxos", "epaxos"];

/// Launches of a cluster before giving up on finding ports nobody else takes.
const LAUNCH_ATTEMPTS_MAX: usize = 5;
/// How long a spawned member may take to serve its client ports.
const SERVING_TIMEOUT: Duration = Duration::from_secs(20);
/// Random probes for free ports per port wanted, before giving up.
const PORT_PROBES_PER_PORT_MAX: usize = 50;
/// Fewest ports below the kernel's ephemeral range worth drawing from.
const PORT_RANGE_MIN: u16 = 1000;

/// `n` distinct loopback ports that are free right now. They are drawn at random below the
/// kernel's ephemeral port range when it leaves room: ports there are never handed out to
/// outgoing connections or to `bind(0)`, so between this pick and the member's bind no client
/// socket (a flood test opens 1500) can take one. Another test may still draw the same port;
/// [`Cluster::start`] relaunches on new ports when a member cannot bind.
pub fn free_ports(n: usize) -> Vec<u16> {
    let Some(range) = ports_below_ephemeral() else {
        return os_chosen_ports(n);
    };
    let mut rng = port_rng();
    let mut held: Vec<TcpListener> = Vec::new();
    for _ in 0..n * PORT_PROBES_PER_PORT_MAX {
        if held.len() == n {
            break;
        }
        let port = range.start + rng.below(u64::from(range.end - range.start)) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(
        held.len(),
        n,
        "found only {} free ports in {range:?}",
        held.len()
    );
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Ports the OS picks (`bind(0)`), all held until every one is picked so that they differ.
fn os_chosen_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// The unprivileged ports below the kernel's ephemeral range, if there are enough of them.
fn ports_below_ephemeral() -> Option<std::ops::Range<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = text.split_whitespace().next()?.parse().ok()?;
    let range = 1024..low;
    (range.end.saturating_sub(range.start) >= PORT_RANGE_MIN).then_some(range)
}

/// A generator that differs between test processes and between calls in one process.
fn port_rng() -> SplitMix64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    SplitMix64::new(nanos ^ u64::from(std::process::id()).rotate_left(32) ^ call)
}

/// Why a freshly launched member is not serving.
enum NotServing {
    /// It could not bind one of its ports: someone took it after [`free_ports`] picked it.
    PortTaken { id: u64, line: String },
}

impl Cluster {
    /// Starts `n` members, waits until every one serves its client ports, then until a leader
    /// is elected.
    pub fn start(n: usize, engine: &str) -> Cluster {
        Cluster::start_configured(n, engine, &|_| {})
    }

    /// [`Cluster::start`] with the cluster file changed by `tweak` first (timeouts, …).
    pub fn start_with(n: usize, engine: &str, tweak: fn(&mut ClusterConfig)) -> Cluster {
        Cluster::start_configured(n, engine, &tweak)
    }

    /// Like [`Cluster::start`], with `tweak` applied to the cluster file first (a closure).
    pub fn start_configured(n: usize, engine: &str, tweak: &dyn Fn(&mut ClusterConfig)) -> Cluster {
        Cluster::start_prepared(n, engine, tweak, &|_, _| {})
    }

    /// Like [`Cluster::start_configured`], with `prepare(cluster file, directory)` run after
    /// the cluster file is written and before any member starts (members' data directories
    /// are `directory/n<ID>`): e.g. `synod restore` building them from a backup.
    pub fn start_prepared(
        n: usize,
        engine: &str,
        tweak: &dyn Fn(&mut ClusterConfig),
        prepare: &dyn Fn(&std::path::Path, &std::path::Path),
    ) -> Cluster {
        Cluster::start_side(n, engine, tweak, prepare, None)
    }

    /// [`Cluster::start_configured`] for a cluster whose client ports speak TLS (`tweak` sets
    /// the cluster file's `[tls]`): the harness polls them with `side`.
    pub fn start_tls(
        n: usize,
        engine: &str,
        tweak: &dyn Fn(&mut ClusterConfig),
        side: ClientSide,
    ) -> Cluster {
        Cluster::start_side(n, engine, tweak, &|_, _| {}, Some(&side))
    }

    fn start_side(
        n: usize,
        engine: &str,
        tweak: &dyn Fn(&mut ClusterConfig),
        prepare: &dyn Fn(&std::path::Path, &std::path::Path),
        side: Option<&ClientSide>,
    ) -> Cluster {
        let c = Cluster::launch_serving(n, engine, tweak, prepare, side);
        if LEADERLESS_ENGINES.contains(&engine) {
            c.wait_all_connected(Duration::from_secs(20));
        } else {
            c.wait_all_reach_leader(Duration::from_secs(20));
        }
        c
    }

    /// Launches until every member serves its client ports. A member that could not bind a
    /// port relaunches the whole cluster on new ports: peers learn each other's addresses
    /// from the cluster file, so one member cannot move alone.
    fn launch_serving(
        n: usize,
        engine: &str,
        tweak: &dyn Fn(&mut ClusterConfig),
        prepare: &dyn Fn(&std::path::Path, &std::path::Path),
        side: Option<&ClientSide>,
    ) -> Cluster {
        for attempt in 1..=LAUNCH_ATTEMPTS_MAX {
            let mut c = Cluster::launch(n, engine, tweak, prepare, side);
            match c.wait_launched_members_serving(SERVING_TIMEOUT) {
                Ok(()) => return c,
                Err(NotServing::PortTaken { id, line }) => {
                    eprintln!(
                        "launch attempt {attempt}: n{id} could not bind ({line}); relaunching on new ports"
                    );
                    c.kill_all();
                }
            }
        }
        panic!(
            "no launch of {n} members in {LAUNCH_ATTEMPTS_MAX} attempts got ports nobody else took"
        );
    }

    /// Writes a cluster file on free loopback ports and spawns every member.
    fn launch(
        n: usize,
        engine: &str,
        tweak: &dyn Fn(&mut ClusterConfig),
        prepare: &dyn Fn(&std::path::Path, &std::path::Path),
        side: Option<&ClientSide>,
    ) -> Cluster {
        let ports = free_ports(3 * n);
        let mut cfg = ClusterConfig::local(n, 1);
        cfg.engine = engine.to_string();
        tweak(&mut cfg);
        static LAUNCHES: AtomicU64 = AtomicU64::new(0);
        let launch = LAUNCHES.fetch_add(1, Ordering::Relaxed);
        cfg.cluster_name = format!("test-{}-{launch}", std::process::id());
        for (i, m) in cfg.members.iter_mut().enumerate() {
            m.peer_addr = format!("127.0.0.1:{}", ports[3 * i]);
            m.http_addr = format!("127.0.0.1:{}", ports[3 * i + 1]);
            m.grpc_addr = format!("127.0.0.1:{}", ports[3 * i + 2]);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("cluster.toml");
        std::fs::write(&config_path, cfg.to_toml_string()).expect("write cluster file");
        prepare(&config_path, dir.path());
        let mut c = Cluster {
            dir,
            config_path,
            cluster_name: cfg.cluster_name.clone(),
            members: cfg.members.clone(),
            children: Vec::new(),
            http: match side {
                Some(side) => side.http.clone(),
                None => reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("http client"),
            },
            scheme: side.map_or("http", |s| s.scheme),
        };
        for m in &cfg.members {
            let child = c.spawn(m.id);
            c.children.push(Some(child));
        }
        c
    }

    /// Starts member `id`: a bootstrap member from the cluster file; a member that joined
    /// later from its data directory alone (it remembers the cluster, no `--join` again).
    fn spawn(&self, id: u64) -> Child {
        self.run_member(id, self.command(id))
    }

    /// The `synod server` command of member `id` (see [`Cluster::spawn`]).
    fn command(&self, id: u64) -> Command {
        let data_dir = self.dir.path().join(format!("n{id}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_synod"));
        cmd.arg("server");
        if !data_dir.join("joined.toml").is_file() {
            cmd.arg("--config")
                .arg(&self.config_path)
                .arg("--id")
                .arg(id.to_string());
        }
        cmd.arg("--data-dir").arg(data_dir);
        cmd
    }

    /// Runs `cmd` as member `id`, its output appended to the member's log.
    fn run_member(&self, id: u64, mut cmd: Command) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("log file");
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn synod server")
    }

    /// Waits until every live member serves both client ports (HTTP status as itself, gRPC
    /// accepting), one deadline for all. A member that exits because a port was taken is an
    /// error for the caller to handle; any other exit, or no service in time, panics with the
    /// member's log.
    fn wait_launched_members_serving(&mut self, within: Duration) -> Result<(), NotServing> {
        let deadline = Instant::now() + within;
        for id in self.live_ids() {
            loop {
                if let Some(status) = self.exit_status(id) {
                    return Err(self.start_failure(id, status));
                }
                if self.serves(id) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "n{id} did not serve its client ports within {within:?}; log {}:\n{}",
                    self.log_path(id).display(),
                    self.log(id)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Whether member `id` answers `/v1/status` as itself of this cluster (not some other
    /// test's member on a reused port) and accepts connections on its gRPC port.
    fn serves(&self, id: u64) -> bool {
        let Some(status) = self.status(id) else {
            return false;
        };
        let me = status.get("member_id").and_then(Value::as_u64) == Some(id)
            && status.get("cluster_name").and_then(Value::as_str) == Some(&self.cluster_name);
        let grpc =
            self.member(id).grpc_addr.parse().is_ok_and(|addr| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            });
        me && grpc
    }

    /// The exit status of member `id` if its process has ended (it then counts as dead).
    fn exit_status(&mut self, id: u64) -> Option<ExitStatus> {
        let i = self.index(id);
        let status = self.children[i].as_mut()?.try_wait().ok().flatten()?;
        self.children[i] = None;
        Some(status)
    }

    /// Classifies a member's exit during start-up: a taken port is returned, anything else
    /// panics with the log.
    fn start_failure(&self, id: u64, status: ExitStatus) -> NotServing {
        let log = self.log(id);
        match log.lines().find(|l| l.contains("Address already in use")) {
            Some(line) => NotServing::PortTaken {
                id,
                line: line.trim().to_string(),
            },
            None => panic!(
                "n{id} exited during start-up ({status}); log {}:\n{log}",
                self.log_path(id).display()
            ),
        }
    }

    fn kill_all(&mut self) {
        for id in self.live_ids() {
            self.kill(id);
        }
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}.log"))
    }

    /// `/healthz` at member `id`: its status code (0 when it does not answer) and its body.
    pub fn healthz(&self, id: u64) -> (u16, String) {
        match self.http.get(self.url(id, "/healthz")).send() {
            Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    pub fn member(&self, id: u64) -> &MemberConfig {
        self.members.iter().find(|m| m.id == id).expect("member")
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.member(id).http_addr, path)
    }

    pub fn grpc_endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.grpc_addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn http_endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.http_addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn live_ids(&self) -> Vec<u64> {
        self.members
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(m, _)| m.id)
            .collect()
    }

    /// SIGKILL: the process gets no chance to flush or say goodbye.
    pub fn kill(&mut self, id: u64) {
        let i = self.index(id);
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, id: u64) {
        self.restart_with(id, &[]);
    }

    /// [`Cluster::restart`] with extra `synod server` flags.
    pub fn restart_with(&mut self, id: u64, flags: &[&str]) {
        let i = self.index(id);
        assert!(self.children[i].is_none(), "member {id} is still running");
        let mut cmd = self.command(id);
        cmd.args(flags);
        self.children[i] = Some(self.run_member(id, cmd));
    }

    fn index(&self, id: u64) -> usize {
        self.members
            .iter()
            .position(|m| m.id == id)
            .expect("member id")
    }

    pub fn status(&self, id: u64) -> Option<Value> {
        let r = self
            .http
            .get(self.url(id, "/v1/status"))
            .timeout(Duration::from_secs(1))
            .send()
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().ok()
    }

    /// Partitioned: the first key of each range as member `id` reports them (`None` while it
    /// does not answer).
    pub fn range_starts(&self, id: u64) -> Option<Vec<String>> {
        self.status(id)?["groups"]
            .as_array()?
            .iter()
            .map(|g| g["start"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until some live member reports a leader that is itself live, and returns it.
    pub fn wait_for_leader(&self, within: Duration) -> u64 {
        let live = self.live_ids();
        wait_until(within, "a live leader", || {
            live.iter().find_map(|id| {
                let l = self.status(*id)?.get("leader")?.as_u64()?;
                live.contains(&l).then_some(l)
            })
        })
    }

    /// Waits until every live member names the same live leader and is connected to it (a
    /// member that cannot reach its leader refuses writes at once with `no_leader`), and
    /// returns it.
    pub fn wait_all_reach_leader(&self, within: Duration) -> u64 {
        let live = self.live_ids();
        wait_until(within, "every member connected to one live leader", || {
            let mut leader = None;
            for id in &live {
                let s = self.status(*id)?;
                let l = s.get("leader")?.as_u64()?;
                let connected = s.get("connected_peers")?.as_array()?;
                let reaches = l == *id || connected.iter().any(|p| p.as_u64() == Some(l));
                if !live.contains(&l) || !reaches || leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
            }
            leader
        })
    }

    /// Waits until every live member is connected to every other live member: what a
    /// leaderless engine needs before a write can reach a quorum without waiting on a
    /// reconnect.
    pub fn wait_all_connected(&self, within: Duration) {
        let live = self.live_ids();
        wait_until(within, "every live member connected to the others", || {
            live.iter()
                .all(|id| {
                    self.status(*id).is_some_and(|s| {
                        let connected: Vec<u64> = s
                            .get("connected_peers")
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(Value::as_u64).collect())
                            .unwrap_or_default();
                        live.iter().all(|p| p == id || connected.contains(p))
                    })
                })
                .then_some(())
        })
    }

    pub fn put(&self, id: u64, key: &str, value: &str) -> reqwest::blocking::Response {
        self.http
            .put(self.url(id, &format!("/v1/kv/{key}")))
            .json(&serde_json::json!({ "value": value }))
            .send()
            .expect("PUT")
    }

    /// The value of `key` read at member `id` (linearizable unless `sequential`), None if absent.
    pub fn get(&self, id: u64, key: &str, sequential: bool) -> Option<String> {
        let q = if sequential {
            "?consistency=sequential"
        } else {
            ""
        };
        let r = self
            .http
            .get(self.url(id, &format!("/v1/kv/{key}{q}")))
            .send()
            .expect("GET");
        if r.status().as_u16() == 404 {
            return None;
        }
        assert!(
            r.status().is_success(),
            "GET {key} at n{id}: {}",
            r.status()
        );
        let v: Value = r.json().expect("json");
        v["kv"]["value"].as_str().map(str::to_string)
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` every 50 ms until it yields a value or `within` passes (then panics naming `what`).
pub fn wait_until<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The synodctl binary built beside synod. `cargo test -p synod` alone does not build it (it
/// is another package), so it is built here with the same cargo if missing or older than a
/// synodctl source file (else a test run after a synodctl change would test the old binary),
/// in the profile synod was built in (its directory's name: `debug` is the dev profile), so a
/// `cargo test --release` run builds the release synodctl it then runs.
pub fn synodctl() -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_synod")).with_file_name("synodctl");
    let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../synodctl/src");
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    if built.is_none_or(|b| newest_change(&sources).is_some_and(|s| s > b)) {
        let profile = match path
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
        {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let out = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "synodctl", "--profile", profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .output()
            .expect("run cargo build -p synodctl");
        assert!(
            out.status.success(),
            "cargo build -p synodctl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(path.is_file(), "synodctl not found at {}", path.display());
    path
}

/// synodctl with `args` against every member of `c` over HTTP; its output, asserting it
/// succeeded.
pub fn synodctl_ok(c: &Cluster, args: &[&str]) -> String {
    let out = Command::new(synodctl())
        .args(["--endpoints", &c.http_endpoints()])
        .args(args)
        .output()
        .expect("synodctl");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "synodctl {args:?}: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

/// When a file under `dir` last changed (none readable: `None`).
fn newest_change(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let changed = match meta.is_dir() {
            true => newest_change(&entry.path()),
            false => meta.modified().ok(),
        };
        newest = newest.max(changed);
    }
    newest
}

/// etcdctl, or a loud message. CI installs it (.ci/run); a missing etcdctl fails the test unless
/// SYNOD_ALLOW_MISSING_ETCDCTL=1 is set.
pub fn etcdctl() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("etcdctl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("\n********************************************************************");
        eprintln!("*** etcdctl NOT FOUND: etcd compatibility test NOT RUN.           ***");
        eprintln!("*** Install it: apt-get install -y etcd-client (CI does).         ***");
        eprintln!("********************************************************************\n");
        assert!(
            std::env::var("SYNOD_ALLOW_MISSING_ETCDCTL").as_deref() == Ok("1"),
            "etcdctl is required (set SYNOD_ALLOW_MISSING_ETCDCTL=1 to skip loudly)"
        );
    }
    found
}

/// An etcdctl 3.4 command line against `endpoints` (v3 API, a 10 s command timeout), for the
/// caller to add its arguments to.
pub fn etcdctl_command(etcdctl: &std::path::Path, endpoints: &str) -> Command {
    let mut cmd = Command::new(etcdctl);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s");
    cmd
}

/// Longest one [`etcdctl_run`] command may take (its own command timeout is 10 s).
const ETCDCTL_RUN_MAX: Duration = Duration::from_secs(120);

/// Runs etcdctl `args` against `endpoints`, feeding it `stdin` if given: whether it succeeded,
/// its stdout and its stderr.
#[allow(dead_code)]
pub fn etcdctl_run(
    etcdctl: &std::path::Path,
    endpoints: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use std::io::Write;
    let Some(text) = stdin else {
        // A command that should end but hangs (a watch where a refusal was expected) fails
        // its test instead of holding up the whole run.
        let mut cmd = etcdctl_command(etcdctl, endpoints);
        cmd.args(args);
        let (status, out, err) = run_with_deadline(cmd, ETCDCTL_RUN_MAX);
        return (status.success(), out, err);
    };
    let mut child = etcdctl_command(etcdctl, endpoints)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("etcdctl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- Added for the membership tests (crates/synod/tests/membership.rs). ----

impl Cluster {
    /// Starts `synod server --join` for the member an operator added as `id` at peer address
    /// 127.0.0.1:`ports[0]` (HTTP on `ports[1]`, gRPC on `ports[2]`), asking the current
    /// members; the cluster file gives only the settings. It is one of this cluster's members
    /// from here on (status, kill, restart — a restart without `--join`).
    pub fn spawn_joiner(&mut self, id: u64, name: &str, ports: [u16; 3]) {
        self.spawn_joiner_with(id, name, ports, &[]);
    }

    /// [`Cluster::spawn_joiner`] with more flags for `synod server`.
    pub fn spawn_joiner_with(&mut self, id: u64, name: &str, ports: [u16; 3], flags: &[&str]) {
        let member = MemberConfig {
            id,
            name: name.to_string(),
            peer_addr: format!("127.0.0.1:{}", ports[0]),
            http_addr: format!("127.0.0.1:{}", ports[1]),
            grpc_addr: format!("127.0.0.1:{}", ports[2]),
        };
        let mut cmd = self.joiner_command(id, &member);
        cmd.args(flags);
        let child = self.run_member(id, cmd);
        self.members.push(member);
        self.children.push(Some(child));
    }

    /// Starts joined member `id` (stopped) again with the `--join` flags it first started
    /// with — what a supervisor does after its data directory was wiped.
    pub fn respawn_joiner(&mut self, id: u64) {
        let i = self.index(id);
        assert!(self.children[i].is_none(), "member {id} is still running");
        let member = self.members[i].clone();
        self.children[i] = Some(self.run_member(id, self.joiner_command(id, &member)));
    }

    fn joiner_command(&self, id: u64, member: &MemberConfig) -> Command {
        let name = member.name.as_str();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_synod"));
        cmd.arg("server")
            .arg("--join")
            .arg(self.http_endpoints())
            .arg("--config")
            .arg(&self.config_path)
            .arg("--name")
            .arg(name)
            .arg("--peer-addr")
            .arg(&member.peer_addr)
            .arg("--http-addr")
            .arg(&member.http_addr)
            .arg("--grpc-addr")
            .arg(&member.grpc_addr)
            .arg("--data-dir")
            .arg(self.data_dir(id));
        cmd
    }
}

// ---- Added for the durability tests (crates/synod/tests/durability.rs). ----

impl Cluster {
    /// Like [`Cluster::start`] but waits only until every member answers its status endpoint,
    /// not for a leader nor for peer connections (a test may be about to kill one).
    pub fn start_leaderless(n: usize, engine: &str) -> Cluster {
        Cluster::launch_serving(n, engine, &|_| {}, &|_, _| {}, None)
    }

    /// Whether member `id`'s process is still running (an exit is reaped and makes it dead).
    pub fn is_running(&mut self, id: u64) -> bool {
        self.exit_status(id).is_none() && self.live_ids().contains(&id)
    }

    /// Waits until every live member serves its client ports; panics naming a member that
    /// exits instead, or does not serve within `within`, with its log.
    pub fn wait_all_serving(&mut self, within: Duration) {
        if let Err(NotServing::PortTaken { id, line }) = self.wait_launched_members_serving(within)
        {
            panic!(
                "n{id} could not bind its port ({line}); log {}",
                self.log_path(id).display()
            );
        }
    }

    /// The data directory of member `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    /// Waits until member `id`'s process exits on its own and returns its exit status (the
    /// member counts as dead afterwards).
    pub fn wait_exit(&mut self, id: u64, within: Duration) -> std::process::ExitStatus {
        let i = self.index(id);
        let status = wait_until(within, &format!("n{id} to exit"), || {
            self.children[i]
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
        });
        self.children[i] = None;
        status
    }

    /// Reads `/metrics` of member `id` and returns the value of the unlabelled `name`.
    pub fn metric(&self, id: u64, name: &str) -> Option<f64> {
        let text = self
            .http
            .get(self.url(id, "/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// The Python that has python-etcd3 (see [`python_with`]).
pub fn python_etcd3() -> Option<PathBuf> {
    python_with("etcd3")
}

/// The Python that can import `module` (python-etcd3's `etcd3`, `etcd3gw`): `SYNOD_PY`, else
/// the virtualenv `.ci/py-clients` makes by default (target/py-clients). Missing, or unable to
/// import it, it fails the test loudly unless SYNOD_ALLOW_MISSING_PY_CLIENTS=1 is set —
/// etcdctl's rule.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let python = std::env::var_os("SYNOD_PY").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/py-clients/bin/python")
        },
        PathBuf::from,
    );
    let imports = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if imports {
        return Some(python);
    }
    eprintln!("\n********************************************************************");
    eprintln!(
        "*** Python module {module} NOT FOUND at {}",
        python.display()
    );
    eprintln!("*** The tests of that Python client are NOT RUN.");
    eprintln!("*** Install it: bash .ci/py-clients (CI does), or set SYNOD_PY.");
    eprintln!("********************************************************************\n");
    assert!(
        std::env::var("SYNOD_ALLOW_MISSING_PY_CLIENTS").as_deref() == Ok("1"),
        "{module} is required (set SYNOD_ALLOW_MISSING_PY_CLIENTS=1 to skip loudly)"
    );
    None
}

/// Runs `tests/py/<script> --endpoints <endpoints>` with `python` to its end (at most `max`),
/// asserts it succeeded, and returns the names of the checks it printed as `PASS <name>`.
#[allow(dead_code)]
pub fn python_checks(python: &Path, script: &str, endpoints: &str, max: Duration) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let mut cmd = Command::new(python);
    cmd.arg(&path).arg("--endpoints").arg(endpoints);
    let (status, stdout, stderr) = run_with_deadline(cmd, max);
    assert!(
        status.success(),
        "{script} failed ({status}):\n{stdout}\n{stderr}"
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PASS "))
        .map(str::to_string)
        .collect()
}

/// Runs `cmd` to its end, killing it past `max`; its status, stdout and stderr.
pub fn run_with_deadline(mut cmd: Command, max: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let read_all = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + max;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {max:?}:\n{}\n{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap_or_default();
    (status, stdout, stderr.join().unwrap_or_default())
}

// ---- Added for the leader-transfer tests (crates/synod/tests/leader_transfer.rs). ----

impl Cluster {
    /// The running member's process id.
    pub fn pid(&self, id: u64) -> u32 {
        self.children[self.index(id)]
            .as_ref()
            .expect("member is running")
            .id()
    }

    /// SIGTERM: the member shuts down gracefully (a leader hands leadership away first). Wait
    /// for it with [`Cluster::wait_exit`].
    pub fn terminate(&mut self, id: u64) {
        let i = self.index(id);
        let pid = self.children[i].as_ref().expect("member is running").id();
        let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
        // SAFETY: kill(2) on a child process this cluster spawned and has not reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to n{id}");
    }
}

// ---- Shared by `synod dev` tests (crates/synod/tests/dev.rs, tls.rs). ----

/// A base port such that every port `synod dev` derives from it (base + 10i + {0,1,2}) is free.
pub fn free_base(nodes: u16) -> u16 {
    // Tests in one binary run in parallel: each call starts from its own offset so two calls
    // cannot both pick a range that is free only because neither has started its cluster yet.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let salt = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 500;
    for attempt in 0..200u16 {
        let base = 20_000 + (std::process::id() as u16 % 2000) * 10 + salt + attempt * 37;
        let ports: Vec<u16> = (0..nodes)
            .flat_map(|i| (0..3).map(move |k| base + 10 * i + k))
            .collect();
        let held: Vec<TcpListener> = ports
            .iter()
            .filter_map(|p| TcpListener::bind(("127.0.0.1", *p)).ok())
            .collect();
        if held.len() == ports.len() {
            return base;
        }
    }
    panic!("no free port range for synod dev");
}

/// Longest one curl call may take.
pub const CURL_SECONDS_MAX: &str = "10";

/// `curl -sS [-X POST -d body] url`, as a user types it: the reply parsed as JSON.
pub fn curl(url: &str, body: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", CURL_SECONDS_MAX]);
    if let Some(body) = body {
        cmd.args(["-X", "POST", "-d", body]);
    }
    let out = cmd
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (apt-get install curl): {e}"));
    assert!(out.status.success(), "curl {url}: {out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("curl {url}: not JSON ({e}): {out:?}"))
}

/// The files in `dir` whose names start with `prefix` and end with `suffix`, sorted.
pub fn files(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Flips 8 bytes in the middle of the written part of `path` (before its trailing zeros, so
/// later batches still follow the damaged one); returns the offset.
pub fn flip_middle(path: &Path) -> usize {
    let mut bytes = std::fs::read(path).expect("read file to damage");
    let end = bytes
        .iter()
        .rposition(|b| *b != 0)
        .expect("a non-empty file")
        + 1;
    let at = end / 2;
    for b in &mut bytes[at..at + 8] {
        *b ^= 0xA5;
    }
    std::fs::write(path, bytes).expect("write damaged file");
    at
}

/// Damages the first (oldest, hence fully committed) WAL segment of member `id`.
pub fn damage_wal(c: &Cluster, id: u64) {
    let wal = c.data_dir(id).join("wal");
    let segment = files(&wal, "wal-", ".log")
        .into_iter()
        .next()
        .expect("a WAL segment");
    let at = flip_middle(&segment);
    eprintln!("flipped 8 bytes at offset {at} of {}", segment.display());
}
