//! A real multi-process cluster for integration tests: `synod server` processes on loopback
//! ports picked by the OS, a temporary data directory, SIGKILL and restart, and polling helpers
//! that wait for a condition with a deadline (never a bare sleep).

#![allow(dead_code)]

use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use synod_node::{ClusterConfig, MemberConfig};

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub members: Vec<MemberConfig>,
    children: Vec<Option<Child>>,
    pub http: reqwest::blocking::Client,
}

/// Ports the OS says are free right now. Held listeners are dropped just before the servers
/// start; a clash is possible but rare, and shows up as a start-up failure, not a wrong result.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

impl Cluster {
    /// Starts `n` members and waits until a leader is elected.
    pub fn start(n: usize, engine: &str) -> Cluster {
        let c = Cluster::launch(n, engine);
        c.wait_for_leader(Duration::from_secs(20));
        c
    }

    /// Writes a cluster file on OS-chosen loopback ports and spawns every member.
    fn launch(n: usize, engine: &str) -> Cluster {
        let ports = free_ports(3 * n);
        let mut cfg = ClusterConfig::local(n, 1);
        cfg.engine = engine.to_string();
        cfg.cluster_name = format!("test-{}", ports[0]);
        for (i, m) in cfg.members.iter_mut().enumerate() {
            m.peer_addr = format!("127.0.0.1:{}", ports[3 * i]);
            m.http_addr = format!("127.0.0.1:{}", ports[3 * i + 1]);
            m.grpc_addr = format!("127.0.0.1:{}", ports[3 * i + 2]);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("cluster.toml");
        std::fs::write(&config_path, cfg.to_toml_string()).expect("write cluster file");
        let mut c = Cluster {
            dir,
            config_path,
            members: cfg.members.clone(),
            children: Vec::new(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        };
        for m in &cfg.members {
            let child = c.spawn(m.id);
            c.children.push(Some(child));
        }
        c
    }

    fn spawn(&self, id: u64) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("n{id}.log")))
            .expect("log file");
        Command::new(env!("CARGO_BIN_EXE_synod"))
            .arg("server")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("n{id}")))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn synod server")
    }

    pub fn member(&self, id: u64) -> &MemberConfig {
        self.members.iter().find(|m| m.id == id).expect("member")
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("http://{}{}", self.member(id).http_addr, path)
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
        let i = self.index(id);
        assert!(self.children[i].is_none(), "member {id} is still running");
        self.children[i] = Some(self.spawn(id));
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
        std::fs::read_to_string(self.dir.path().join(format!("n{id}.log"))).unwrap_or_default()
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

// ---- Added for the durability tests (crates/synod/tests/durability.rs). ----

impl Cluster {
    /// Like [`Cluster::start`] but waits only until every member answers its status endpoint,
    /// not for a leader: leaderless engines (CASPaxos) never report one.
    pub fn start_leaderless(n: usize, engine: &str) -> Cluster {
        let c = Cluster::launch(n, engine);
        c.wait_all_serving(Duration::from_secs(20));
        c
    }

    /// Waits until every live member answers `/v1/status`.
    pub fn wait_all_serving(&self, within: Duration) {
        for id in self.live_ids() {
            wait_until(within, &format!("n{id} serving"), || self.status(id));
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
