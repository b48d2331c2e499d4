//! `synod dev`: a local cluster in one command. Writes a cluster file, starts one `synod server`
//! process per member (real processes, so killing one is a real crash), waits until a leader is
//! elected, prints how to talk to it, and stops every process on Ctrl-C.
//!
//! `--tls` first writes a throwaway CA and certificates into `<data dir>/tls` (`certs.rs`) and
//! names them in the cluster file's `[tls]` section: clients and members then need a
//! certificate from that CA (client and peer cert auth are on).

use crate::certs::CertFiles;
use clap::Args;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_node::ClusterConfig;
use synod_node::tls::{ALPN_HTTP1, TlsFiles};

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
    /// TLS on every port, with client and peer certificate auth, from a throwaway CA.
    #[arg(long)]
    tls: bool,
    /// Partition the keyspace into this many consensus groups (omnipaxos, vr). Without
    /// --split-keys the ranges cut the first byte of printable ASCII evenly.
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Where one group's keys end and the next one's begin (comma-separated, ascending);
    /// implies --groups (one more than the keys given).
    #[arg(long, value_delimiter = ',')]
    split_keys: Vec<String>,
    /// Partitioned clusters: a group holding more keys than this splits itself at its middle
    /// key (0: only `synodctl range split` splits).
    #[arg(long, default_value_t = 0)]
    auto_split_keys: u64,
    /// Partitioned clusters: a group applying more writes per second than this for 5 s splits
    /// itself where its recent writes divide in half (0: never).
    #[arg(long, default_value_t = 0)]
    auto_split_writes: u64,
    /// Partitioned clusters: a group whose leader confirms more linearizable reads per second
    /// than this for 5 s splits itself where the reads that leader served divide in half
    /// (0: never).
    #[arg(long, default_value_t = 0)]
    auto_split_reads: u64,
    /// Partitioned clusters: a range split off automatically merges back into the range below
    /// once the two hold fewer keys than this and have been quiet for 30 s (0: never).
    #[arg(long, default_value_t = 0)]
    auto_merge_keys: u64,
    /// Partitioned clusters: threads each member works on its groups with (0: this machine's
    /// cores shared out among the members, at least one each).
    #[arg(long, default_value_t = 0)]
    engine_threads: usize,
    /// Partitioned clusters: keep a range directory (a group of its own recording which
    /// group owns which range; `synodctl range list` shows it).
    #[arg(long)]
    directory: bool,
    /// Partitioned clusters: members each group after the first lives on (0: every member;
    /// at least 3 and below --nodes otherwise, and the range directory is kept; see
    /// docs/partitioning.md, "Placement").
    #[arg(long, default_value_t = 0)]
    replicas: usize,
    /// Placed clusters: never move groups to even out how many each member hosts (they move
    /// only by `synodctl range move` and off removed members).
    #[arg(long)]
    no_rebalance: bool,
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
    let shared_threads = cluster.partition.engine_threads;
    cluster.partition = if args.split_keys.is_empty() {
        synod_node::PartitionConfig::even(args.groups)
    } else {
        synod_node::PartitionConfig {
            split_keys: args.split_keys.clone(),
            ..synod_node::PartitionConfig::default()
        }
    };
    cluster.partition.auto_split_keys = args.auto_split_keys;
    cluster.partition.auto_split_writes = args.auto_split_writes;
    cluster.partition.auto_split_reads = args.auto_split_reads;
    cluster.partition.auto_merge_keys = args.auto_merge_keys;
    // Placement needs the directory (where a member finds the groups it does not host).
    cluster.partition.directory = args.directory || args.replicas > 0;
    cluster.partition.replicas = args.replicas;
    cluster.partition.rebalance = !args.no_rebalance;
    cluster.partition.engine_threads = match args.engine_threads {
        0 => shared_threads,
        n => n,
    };
    cluster.validate()?;
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)?;
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let config_path = data_dir.join("cluster.toml");
    let certs = match args.tls {
        true => Some(with_tls(&mut cluster, &data_dir)?),
        false => None,
    };
    let probe_tls = match &certs {
        Some(c) => Some(client_tls(c)?),
        None => None,
    };
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
        if let Some(ready) = cluster_ready(&cluster, probe_tls.as_ref()) {
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

    print_banner(&cluster, &data_dir, &config_path, leader, certs.as_ref());

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

fn print_banner(
    cluster: &ClusterConfig,
    data_dir: &Path,
    config: &Path,
    leader: Option<u64>,
    certs: Option<&CertFiles>,
) {
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
    if !cluster.partition.split_keys.is_empty() {
        println!(
            "  partitioned  {} groups, split at {:?}{}{} (synodctl range list)",
            cluster.groups(),
            cluster.partition.split_keys,
            match cluster.partition.directory {
                true => ", with a range directory",
                false => "",
            },
            match cluster.partition.replicas {
                0 => String::new(),
                r => format!(", groups after the first on {r} members each"),
            }
        );
    }
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
    if let Some(c) = certs {
        print_tls_banner(cluster, c);
        println!("Ctrl-C stops every member.");
        return;
    }
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

/// Writes the dev certificates and turns client and peer TLS (with cert auth) on in `cluster`.
fn with_tls(cluster: &mut ClusterConfig, data_dir: &Path) -> anyhow::Result<CertFiles> {
    let certs = crate::certs::generate(&data_dir.join("tls"), "synod dev CA")?;
    let t = &mut cluster.tls;
    t.cert_file = Some(certs.server_cert.clone());
    t.key_file = Some(certs.server_key.clone());
    t.trusted_ca_file = Some(certs.ca.clone());
    t.client_cert_auth = true;
    t.peer_cert_file = Some(certs.server_cert.clone());
    t.peer_key_file = Some(certs.server_key.clone());
    t.peer_trusted_ca_file = Some(certs.ca.clone());
    t.peer_client_cert_auth = true;
    Ok(certs)
}

/// The launcher's own TLS client (for the readiness probe), as the printed commands connect.
fn client_tls(certs: &CertFiles) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let files = TlsFiles {
        cert_file: Some(certs.client_cert.clone()),
        key_file: Some(certs.client_key.clone()),
        trusted_ca_file: Some(certs.ca.clone()),
        client_cert_auth: false,
        allowed_cn: None,
    };
    Ok(synod_node::tls::client_config(&files, &[ALPN_HTTP1])?)
}

fn print_tls_banner(cluster: &ClusterConfig, c: &CertFiles) {
    let grpc: Vec<&str> = cluster
        .members
        .iter()
        .map(|m| m.grpc_addr.as_str())
        .collect();
    let https: Vec<String> = grpc.iter().map(|a| format!("https://{a}")).collect();
    let http0 = &cluster.members[0].http_addr;
    let tls = format!(
        "--cacert {} --cert {} --key {}",
        c.ca.display(),
        c.client_cert.display(),
        c.client_key.display()
    );
    println!(
        "Talk to it (TLS, client and peer certificate auth; endpoints as host:port or https://):"
    );
    println!(
        "  ETCDCTL_API=3 etcdctl {tls} --endpoints={} put greeting hello",
        grpc.join(",")
    );
    println!(
        "  ETCDCTL_API=3 etcdctl {tls} --endpoints={} get greeting",
        https.join(",")
    );
    println!("  curl {tls} https://{http0}/v1/kv/greeting");
    let endpoints: Vec<String> = cluster
        .members
        .iter()
        .map(|m| format!("https://{}", m.http_addr))
        .collect();
    println!(
        "  cargo run -q --bin synodctl -- {tls} --endpoints {} get greeting",
        endpoints.join(",")
    );
    println!("  (the client certificate's CN is `root`)");
    println!();
}

/// Engines with no leader to wait for at start-up. EPaxos reports each member as its own
/// leader (every member leads the commands submitted to it), so members never agree on one.
const LEADERLESS_ENGINES: [&str; 2] = ["caspaxos", "epaxos"];

/// `Some(leader)` once every member answers its status endpoint and is connected to all its
/// peers, and — for engines with a leader (status names one anywhere) — members agree on it.
/// Leaderless engines (CASPaxos, EPaxos) are ready with `Some(None)`.
fn cluster_ready(
    cluster: &ClusterConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Option<Option<u64>> {
    let peers = cluster.members.len() - 1;
    let mut leaders = Vec::new();
    for m in &cluster.members {
        let body = match tls {
            None => http_get(&m.http_addr, "/v1/status")?,
            Some(tls) => https_get(&m.http_addr, "/v1/status", tls)?,
        };
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
    let s = connect(addr)?;
    get_over(s, addr, path)
}

/// [`http_get`] over TLS (rustls' blocking stream).
fn https_get(addr: &str, path: &str, tls: &Arc<rustls::ClientConfig>) -> Option<String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
    let name = rustls_pki_types::ServerName::try_from(host).ok()?;
    let conn = rustls::ClientConnection::new(tls.clone(), name).ok()?;
    get_over(rustls::StreamOwned::new(conn, connect(addr)?), addr, path)
}

fn connect(addr: &str) -> Option<TcpStream> {
    let sock = addr.parse().ok()?;
    let s = TcpStream::connect_timeout(&sock, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(s)
}

fn get_over(mut s: impl Read + Write, addr: &str, path: &str) -> Option<String> {
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut resp = String::new();
    // A TLS server may close without close_notify after an HTTP/1.0 answer: keep what came.
    if s.read_to_string(&mut resp).is_err() && resp.is_empty() {
        return None;
    }
    let (head, body) = resp.split_once("\r\n\r\n")?;
    let ok = head.split_whitespace().nth(1) == Some("200");
    ok.then(|| body.to_string())
}
