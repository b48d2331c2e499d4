//! `synod dev`: a local cluster in one command. Writes a cluster file, starts one `synod server`
//! process per member (real processes, so killing one is a real crash), waits until a leader is
//! elected, prints how to talk to it, and stops every process on Ctrl-C.

use clap::Args;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};
use synod_node::ClusterConfig;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Members in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Replication engine: omnipaxos, vr, caspaxos or epaxos.
    #[arg(long, default_value = "omnipaxos")]
    engine: String,
    /// Member i listens on base+10(i-1) (peers), +1 (HTTP), +2 (etcd gRPC).
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// Data directory; each member uses a subdirectory. Kept across runs.
    #[arg(long, default_value = "synod-data/dev")]
    data_dir: PathBuf,
    /// Start from empty data directories.
    #[arg(long)]
    fresh: bool,
}

pub fn run(args: DevArgs) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => match rt.block_on(dev(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("synod dev: {e:#}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("synod dev: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=9).contains(&args.nodes),
        "--nodes must be between 1 and 9"
    );
    let mut cluster = ClusterConfig::local(args.nodes, args.base_port);
    cluster.engine = args.engine.clone();
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)?;
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let config_path = data_dir.join("cluster.toml");
    std::fs::write(&config_path, cluster.to_toml_string())?;
    let exe = std::env::current_exe()?;

    let mut children = Vec::new();
    for m in &cluster.members {
        let node_dir = data_dir.join(&m.name);
        std::fs::create_dir_all(&node_dir)?;
        let log = std::fs::File::create(data_dir.join(format!("{}.log", m.name)))?;
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("server")
            .arg("--config")
            .arg(&config_path)
            .arg("--id")
            .arg(m.id.to_string())
            .arg("--data-dir")
            .arg(&node_dir);
        if std::env::var_os("SYNOD_API_THREADS").is_none() {
            // All members share this machine's cores: one API thread each contends less
            // (measured: ≈7 % more puts at 64 in flight on 2 cores; see README "Measured").
            // SYNOD_API_THREADS, inherited by the members, overrides it.
            cmd.arg("--api-threads").arg("1");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        children.push((m.clone(), child));
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        if let Some(ready) = cluster_ready(&cluster) {
            break ready;
        }
        for (m, c) in children.iter_mut() {
            if let Some(status) = c.try_wait()? {
                anyhow::bail!(
                    "member {} exited during start-up ({status}); see {}",
                    m.name,
                    data_dir.join(format!("{}.log", m.name)).display()
                );
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "cluster not ready within 20 s (members answering, connected, leader elected where \
             the engine has one); see the logs in {}",
            data_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    print_banner(&cluster, &data_dir, &config_path, leader);

    // Run until Ctrl-C; report members that die (a developer may be killing them on purpose).
    let mut alive: Vec<bool> = vec![true; children.len()];
    // SIGTERM (e.g. from a supervisor or `kill`) stops the members too, not just Ctrl-C.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (i, (m, c)) in children.iter_mut().enumerate() {
                    if alive[i]
                        && let Some(status) = c.try_wait()?
                    {
                        alive[i] = false;
                        eprintln!("member {} (id {}) exited: {status}", m.name, m.id);
                    }
                }
            }
        }
    }
    eprintln!("\nstopping {} members…", children.len());
    for (_, c) in children.iter_mut() {
        if let Some(pid) = c.id() {
            // SIGTERM first so members shut down cleanly; SIGKILL after a grace period.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
    let grace = Instant::now() + Duration::from_secs(5);
    for (m, c) in children.iter_mut() {
        loop {
            if c.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > grace {
                eprintln!("member {} did not stop in 5 s; killing it", m.name);
                let _ = c.kill().await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("stopped. Data kept in {}", data_dir.display());
    Ok(())
}

fn print_banner(cluster: &ClusterConfig, data_dir: &Path, config: &Path, leader: Option<u64>) {
    let http: Vec<&str> = cluster
        .members
        .iter()
        .map(|m| m.http_addr.as_str())
        .collect();
    let grpc: Vec<&str> = cluster
        .members
        .iter()
        .map(|m| m.grpc_addr.as_str())
        .collect();
    println!(
        "Synod dev cluster: {} members, engine {}, {}",
        cluster.members.len(),
        cluster.engine,
        match leader {
            Some(l) => format!("leader n{l}"),
            None => "leaderless (every member proposes)".to_string(),
        }
    );
    println!("  data dir     {}", data_dir.display());
    println!("  cluster file {}", config.display());
    println!("  logs         {}/n*.log", data_dir.display());
    for m in &cluster.members {
        println!(
            "  {}  peer {}  http {}  grpc (etcd) {}",
            m.name, m.peer_addr, m.http_addr, m.grpc_addr
        );
    }
    println!();
    println!("Talk to it:");
    println!(
        "  curl -X PUT http://{}/v1/kv/greeting -d '{{\"value\":\"hello\"}}'",
        http[0]
    );
    println!("  curl http://{}/v1/kv/greeting", http[http.len() - 1]);
    println!(
        "  cargo run -q --bin synodctl -- --endpoints {} get greeting",
        http.join(",")
    );
    println!(
        "  ETCDCTL_API=3 etcdctl --endpoints={} get greeting",
        grpc.join(",")
    );
    println!();
    println!("Ctrl-C stops every member.");
}

/// Engines with no leader to wait for at start-up. EPaxos reports each member as its own
/// leader (every member leads the commands submitted to it), so members never agree on one.
const LEADERLESS_ENGINES: [&str; 2] = ["caspaxos", "epaxos"];

/// `Some(leader)` once every member answers its status endpoint and is connected to all its
/// peers, and — for engines with a leader (status names one anywhere) — members agree on it.
/// Leaderless engines (CASPaxos, EPaxos) are ready with `Some(None)`.
fn cluster_ready(cluster: &ClusterConfig) -> Option<Option<u64>> {
    let peers = cluster.members.len() - 1;
    let mut leaders = Vec::new();
    for m in &cluster.members {
        let body = http_get(&m.http_addr, "/v1/status")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let connected = v.get("connected_peers")?.as_array()?.len();
        if connected < peers {
            return None;
        }
        leaders.push(v.get("leader").and_then(serde_json::Value::as_u64));
    }
    // Checked before agreement: a one-member EPaxos cluster would otherwise "agree" on
    // itself and be announced as having a leader.
    if LEADERLESS_ENGINES.contains(&cluster.engine.as_str()) {
        return Some(None);
    }
    match leaders.first().copied().flatten() {
        Some(l) if leaders.iter().all(|x| *x == Some(l)) => Some(Some(l)),
        _ => None,
    }
}

/// A minimal HTTP/1.0 GET so the dev launcher needs no HTTP client dependency.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    let ok = head.split_whitespace().nth(1) == Some("200");
    ok.then(|| body.to_string())
}
