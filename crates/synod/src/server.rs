//! `synod server`: one cluster member — the node runtime plus the HTTP/JSON and etcd gRPC APIs,
//! configured from the shared cluster file, `SYNOD_*` environment variables and flags (flags win).
//! A member added to a running cluster starts with `--join` instead of a member entry in the
//! file (see `join.rs`); after that its data directory holds what it needs.

use crate::join::{self, Joiner};
use crate::rejoin;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use synod_node::joined::JoinRecord;
use synod_node::tls::{ALPN_H2, ALPN_HTTP1, ServerTls};
use synod_node::{ClusterConfig, NodeConfig};
use tokio::net::TcpListener;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// The cluster file (TOML) shared by all members. It bootstraps a new cluster; with
    /// --join only its settings (timing, limits, storage) are used.
    #[arg(long, env = "SYNOD_CONFIG")]
    config: Option<PathBuf>,
    /// This member's id in the cluster file.
    #[arg(long)]
    id: Option<u64>,
    /// Join a running cluster: comma-separated HTTP endpoints of its members, asked for this
    /// node's id and the members (an operator adds it first with `etcdctl member add` or
    /// `synodctl member add`, as with etcd). Needs an empty --data-dir, --name, --peer-addr,
    /// --http-addr and --grpc-addr; on later restarts the data directory remembers all of it.
    #[arg(long, value_delimiter = ',')]
    join: Option<Vec<String>>,
    /// etcd's flag: `existing` is `--join`'s mode (it needs --join); `new` bootstraps from
    /// the cluster file.
    #[arg(long, value_parser = ["new", "existing"])]
    initial_cluster_state: Option<String>,
    /// With --join: this member's name.
    #[arg(long)]
    name: Option<String>,
    /// With --join: host:port other members dial (the address it was added with).
    #[arg(long)]
    peer_addr: Option<String>,
    /// With --join: host:port of this member's HTTP/JSON API.
    #[arg(long)]
    http_addr: Option<String>,
    /// With --join: host:port of this member's etcd gRPC API.
    #[arg(long)]
    grpc_addr: Option<String>,
    /// Where this member keeps its write-ahead log and metadata.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Replication engine: omnipaxos, vr, caspaxos or epaxos (must match the other members).
    #[arg(long)]
    engine: Option<String>,
    /// Wall-clock length of one engine tick.
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Leader-failure detection, in ticks. Default: the cluster file's, else 100 (1 s at 10 ms
    /// ticks, etcd's default); `synod dev` writes 10 (100 ms on loopback).
    #[arg(long)]
    election_timeout_ticks: Option<u64>,
    /// Write a checkpoint (snapshot file, log compaction) every this many applied entries;
    /// 0 = never.
    #[arg(long)]
    snapshot_entries: Option<u64>,
    /// Threads serving the HTTP and gRPC APIs (the engine has its own thread). Default: one per
    /// CPU. Members sharing one machine (`synod dev`) do better with 1 each: fewer threads
    /// contending for the same cores, fewer cross-thread wake-ups.
    #[arg(long, env = "SYNOD_API_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    api_threads: Option<u16>,
    /// Compare this member's HashKV with its peers' this often and raise the CORRUPT alarm
    /// when it disagrees with a majority (etcd's flag; e.g. 5s, 1m). Default: the cluster
    /// file's `corrupt_check_ms`, else never.
    #[arg(long, value_parser = synod_chaos::parse_duration)]
    experimental_corrupt_check_time: Option<std::time::Duration>,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// UNSAFE: acknowledge writes without fsync. A power loss can lose acknowledged writes.
    #[arg(long)]
    unsafe_no_fsync: bool,
    /// Start even though this member's data directory was wiped while peers remember it: it
    /// rebuilds its state from its peers before it votes (damaged storage is repaired the same
    /// way without this flag). See docs/durability.md.
    #[arg(long)]
    allow_wiped_rejoin: bool,
    /// etcd's flag: raise NOSPACE and refuse writes once this member's database (WAL + newest
    /// snapshot) grows past this many bytes; 0 = no quota (the cluster file's
    /// `storage.quota_backend_bytes` otherwise).
    #[arg(long)]
    quota_backend_bytes: Option<u64>,
    /// Do not rejoin automatically when this member's data directory was wiped (by default it
    /// removes its old id and adds itself back as a new member, then promotes itself once
    /// caught up; see docs/membership.md): refuse to start instead.
    #[arg(long)]
    no_auto_rejoin: bool,
    #[command(flatten)]
    tls: TlsArgs,
    /// Bind the peer listener here instead of the advertised peer address (used behind the
    /// chaos proxy).
    #[arg(long, hide = true)]
    peer_listen_addr: Option<String>,
    /// TESTING ONLY: run a deliberately broken engine variant, to prove the checks catch it.
    #[arg(long, hide = true)]
    plant_bug: Option<String>,
}

/// TLS flags, etcd's names (see docs/security.md). Each overrides the cluster file's `[tls]`
/// key of the same name.
#[derive(Args, Debug)]
struct TlsArgs {
    /// PEM certificate (chain) the client ports (gRPC and HTTP) present; turns TLS on for
    /// them. Re-read when the file changes (checked at most once a second).
    #[arg(long)]
    cert_file: Option<PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// PEM CA bundle client certificates must chain to (with --client-cert-auth).
    #[arg(long)]
    trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by --trusted-ca-file.
    #[arg(long)]
    client_cert_auth: bool,
    /// PEM certificate this member presents to other members (as server and as client);
    /// turns peer TLS on. Re-read when the file changes.
    #[arg(long)]
    peer_cert_file: Option<PathBuf>,
    /// PEM private key of --peer-cert-file.
    #[arg(long)]
    peer_key_file: Option<PathBuf>,
    /// PEM CA bundle of the cluster: the members this member dials must present a certificate
    /// from it, and with --peer-client-cert-auth so must the members dialing it.
    #[arg(long)]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peer connections without a certificate signed by --peer-trusted-ca-file (a
    /// process without one cannot talk to this member as a peer).
    #[arg(long)]
    peer_client_cert_auth: bool,
    /// With --peer-client-cert-auth: refuse peer certificates whose subject CN is not this.
    #[arg(long)]
    peer_cert_allowed_cn: Option<String>,
    /// Client-port TLS handshake timeout (the cluster file's `tls.handshake_timeout_ms`,
    /// default 10 s).
    #[arg(long, hide = true)]
    tls_handshake_timeout_ms: Option<u64>,
}

impl TlsArgs {
    fn apply(&self, tls: &mut synod_node::config::TlsConfig) {
        let set = |to: &mut Option<PathBuf>, from: &Option<PathBuf>| {
            if from.is_some() {
                to.clone_from(from);
            }
        };
        set(&mut tls.cert_file, &self.cert_file);
        set(&mut tls.key_file, &self.key_file);
        set(&mut tls.trusted_ca_file, &self.trusted_ca_file);
        tls.client_cert_auth |= self.client_cert_auth;
        set(&mut tls.peer_cert_file, &self.peer_cert_file);
        set(&mut tls.peer_key_file, &self.peer_key_file);
        set(&mut tls.peer_trusted_ca_file, &self.peer_trusted_ca_file);
        tls.peer_client_cert_auth |= self.peer_client_cert_auth;
        if self.peer_cert_allowed_cn.is_some() {
            tls.peer_cert_allowed_cn
                .clone_from(&self.peer_cert_allowed_cn);
        }
        if let Some(ms) = self.tls_handshake_timeout_ms {
            tls.handshake_timeout_ms = ms;
        }
    }
}

/// The client ports' TLS (gRPC offers h2, then http/1.1 for its HTTP side; HTTP http/1.1), if
/// configured.
type ClientTls = Option<(Arc<ServerTls>, Arc<ServerTls>)>;

fn client_tls(cfg: &NodeConfig) -> anyhow::Result<ClientTls> {
    let timeout = std::time::Duration::from_millis(cfg.cluster.tls.handshake_timeout_ms);
    let files = cfg.cluster.tls.client();
    if !files.enabled() {
        return Ok(None);
    }
    let side = |alpn: &[&[u8]]| -> anyhow::Result<Arc<ServerTls>> {
        let tls = ServerTls::new(&files, alpn).map_err(|e| anyhow::anyhow!("client TLS: {e}"))?;
        Ok(Arc::new(tls.with_handshake_timeout(timeout)))
    };
    Ok(Some((side(&[ALPN_H2, ALPN_HTTP1])?, side(&[ALPN_HTTP1])?)))
}

pub fn run(args: ServerArgs) -> ExitCode {
    init_logging(&args.log_format);
    raise_open_files_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.api_threads {
        builder.worker_threads(usize::from(n));
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("synod server: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cfg = match rt.block_on(resolve_config(&args)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("synod server: {e:#}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(serve_or_rejoin(cfg, &args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("synod server: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Raises this process's soft limit of open files to its hard limit, as Go's runtime does for
/// etcd: the soft default (1,024 on many systems) is below what the client ports' bounds
/// (`synod_etcd::GRPC_CONNECTIONS_MAX`, `synod_http::CONNECTIONS_MAX`) and the peers' can take
/// together, and a member out of descriptors cannot open its next WAL segment.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        return; // unlimited already
    };
    let target = hard.unwrap_or(u64::MAX);
    if soft >= target {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: hard,
        maximum: hard,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(from = soft, to = ?hard, "raised the open files limit"),
        Err(e) => tracing::warn!(
            soft,
            error = %e,
            "could not raise the open files limit; many client connections may exhaust it"
        ),
    }
}

/// The node's configuration: from the join record in its data directory (a member that
/// joined earlier), by asking the cluster (`--join`, first start), or from the cluster file.
async fn resolve_config(args: &ServerArgs) -> anyhow::Result<NodeConfig> {
    if args.initial_cluster_state.as_deref() == Some("existing") && args.join.is_none() {
        anyhow::bail!(
            "--initial-cluster-state existing needs --join ENDPOINTS (whom to ask to join)"
        );
    }
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| std::env::var_os("SYNOD_DATA_DIR").map(PathBuf::from));
    if let Some(dir) = &data_dir
        && let Some(record) = JoinRecord::load(dir)?
    {
        if args.join.is_some() {
            tracing::info!(
                member = record.member_id,
                "this member joined before; --join ignored"
            );
        }
        let mut cfg = record.node_config(dir);
        cfg.apply_env()?;
        cfg.node_id = record.member_id;
        return finish_config(cfg, args);
    }
    match (&args.join, data_dir) {
        (Some(endpoints), Some(dir)) => join_config(args, endpoints, dir).await,
        (Some(_), None) => anyhow::bail!("--join needs --data-dir (an empty directory)"),
        (None, _) => build_config(args),
    }
}

/// First start of a member added to a running cluster (see `join.rs`).
async fn join_config(
    args: &ServerArgs,
    endpoints: &[String],
    dir: PathBuf,
) -> anyhow::Result<NodeConfig> {
    let in_use = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    if in_use {
        anyhow::bail!(
            "--join needs an EMPTY data directory, and {} holds data without a join record:              a bootstrap member restarts with --config and --id, not --join",
            dir.display()
        );
    }
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .ok_or_else(|| anyhow::anyhow!("--join needs {flag}"))
    };
    let me = Joiner {
        name: need(&args.name, "--name")?,
        peer_addr: need(&args.peer_addr, "--peer-addr")?,
        http_addr: need(&args.http_addr, "--http-addr")?,
        grpc_addr: need(&args.grpc_addr, "--grpc-addr")?,
        id: None,
    };
    let mut settings = match &args.config {
        Some(path) => ClusterConfig::from_file(path)?,
        None => ClusterConfig::default(),
    };
    // The TLS flags too: with client TLS on, the members are asked over HTTPS.
    args.tls.apply(&mut settings.tls);
    let record = join::discover(endpoints, &me, settings).await?;
    record.save(&dir)?;
    tracing::info!(
        member = record.member_id,
        cluster = %record.cluster.cluster_name,
        engine = %record.cluster.engine,
        "joining: found this node in the cluster's member list"
    );
    let mut cfg = record.node_config(&dir);
    cfg.apply_env()?;
    cfg.node_id = record.member_id;
    finish_config(cfg, args)
}

fn build_config(args: &ServerArgs) -> anyhow::Result<NodeConfig> {
    let Some(path) = &args.config else {
        anyhow::bail!("pass --config FILE (a new cluster's file), or --join ENDPOINTS");
    };
    let cluster = ClusterConfig::from_file(path)?;
    let mut cfg = NodeConfig::new(cluster, 0, PathBuf::new());
    cfg.apply_env()?;
    if let Some(id) = args.id {
        cfg.node_id = id;
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if cfg.data_dir.as_os_str().is_empty() {
        cfg.data_dir = PathBuf::from(format!("synod-data/n{}", cfg.node_id));
    }
    finish_config(cfg, args)
}

/// The flags every way of starting shares, then validation.
fn finish_config(mut cfg: NodeConfig, args: &ServerArgs) -> anyhow::Result<NodeConfig> {
    if let Some(e) = &args.engine {
        cfg.cluster.engine = e.clone();
    }
    if let Some(t) = args.tick_ms {
        cfg.cluster.tick_ms = t;
    }
    if let Some(t) = args.election_timeout_ticks {
        cfg.cluster.election_timeout_ticks = t;
    }
    if let Some(n) = args.snapshot_entries {
        cfg.cluster.storage.snapshot_entries = n;
    }
    if args.unsafe_no_fsync {
        cfg.cluster.storage.fsync = false;
    }
    if let Some(q) = args.quota_backend_bytes {
        cfg.cluster.storage.quota_backend_bytes = q;
    }
    if let Some(d) = args.experimental_corrupt_check_time {
        cfg.cluster.corrupt_check_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    }
    cfg.allow_wiped_rejoin = args.allow_wiped_rejoin;
    args.tls.apply(&mut cfg.cluster.tls);
    if let Some(a) = &args.peer_listen_addr {
        cfg.peer_listen_addr = Some(a.clone());
    }
    if let Some(name) = &args.plant_bug {
        let bug = synod_core::PlantedBug::parse(name).ok_or_else(|| {
            let names: Vec<&str> = synod_core::PlantedBug::ALL
                .iter()
                .map(|b| b.name())
                .collect();
            anyhow::anyhow!("unknown planted bug {name:?}; one of {}", names.join(", "))
        })?;
        cfg.planted_bug = Some(bug);
    }
    if cfg.node_id == 0 {
        anyhow::bail!("which member is this? pass --id N or set SYNOD_NODE_ID");
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Serves; a member whose data directory was wiped rejoins as a new member first (`rejoin.rs`).
async fn serve_or_rejoin(cfg: NodeConfig, args: &ServerArgs) -> anyhow::Result<()> {
    match serve(cfg.clone()).await {
        Err(e) if rejoin::is_wiped(&e) && !args.no_auto_rejoin => {
            tracing::warn!("{e:#}");
            let record = rejoin::rejoin(&cfg).await?;
            let mut joined = record.node_config(&cfg.data_dir);
            joined.apply_env()?;
            joined.node_id = record.member_id;
            serve(finish_config(joined, args)?).await
        }
        r => r,
    }
}

async fn serve(cfg: NodeConfig) -> anyhow::Result<()> {
    let me = cfg
        .me()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("node id not in cluster"))?;
    // Before anything listens, so unreadable certificate files fail the start.
    let tls = client_tls(&cfg)?;
    let (grpc_tls, http_tls) = tls.map_or((None, None), |(g, h)| (Some(g), Some(h)));
    // Bind the client listeners before starting the engine, so a port clash fails fast.
    let http = TcpListener::bind(&me.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {}: {e}", me.http_addr))?;
    let grpc = TcpListener::bind(&me.grpc_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for gRPC on {}: {e}", me.grpc_addr))?;
    let mut node = synod_node::start(cfg.clone()).await?;
    // etcd's "publish": the configuration learns this member's name and client addresses.
    let publisher = tokio::spawn(join::publish(node.handle.clone(), me.clone(), cfg.join));
    let corrupt_check = tokio::spawn(synod_etcd::corrupt::run(
        node.handle.clone(),
        std::time::Duration::from_millis(cfg.cluster.corrupt_check_ms),
    ));
    // A member that re-added itself after a wipe promotes itself once caught up.
    let promoter = match JoinRecord::load(&cfg.data_dir) {
        Ok(Some(r)) if r.auto_promote => Some(tokio::spawn(rejoin::promote_self(
            node.handle.clone(),
            me.id,
        ))),
        _ => None,
    };
    tracing::info!(
        member = me.id,
        engine = %cfg.cluster.engine,
        peer = %me.peer_addr,
        http = %me.http_addr,
        grpc = %me.grpc_addr,
        client_tls = grpc_tls.is_some(),
        peer_tls = cfg.cluster.tls.peer().enabled(),
        data_dir = %cfg.data_dir.display(),
        "synod server started"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // One HTTP API (its bounds shared), served on the HTTP port and, as etcd's client URL
    // serves HTTP too, on the gRPC port; the HTTP server ends its watch streams at shutdown.
    let http_config = synod_http::HttpConfig::default();
    let (api, api_streams) = synod_http::router_with_mount_closable(
        node.handle.clone(),
        &http_config,
        gateway_mount(&node.handle, &stop_rx),
    );
    let http_task = tokio::spawn(synod_http::serve_router_tls(
        http,
        api.clone(),
        api_streams,
        http_config,
        http_tls,
        wait(stop_rx.clone()),
    ));
    let grpc_task = tokio::spawn(synod_etcd::serve_client_port(
        grpc,
        node.handle.clone(),
        grpc_tls,
        Some(api),
        wait(stop_rx.clone()),
    ));
    let result = tokio::select! {
        r = node.stopped() => r.map_err(anyhow::Error::from),
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            hand_off_leadership(&node.handle, me.id).await;
            Ok(())
        }
    };
    publisher.abort();
    corrupt_check.abort();
    if let Some(p) = promoter {
        p.abort();
    }
    let _ = stop_tx.send(true);
    let _ = http_task.await;
    let _ = grpc_task.await;
    node.shutdown().await?;
    result
}

/// etcd's /v3 JSON gateway, mounted beside the HTTP API; its watch streams end at shutdown.
fn gateway_mount(
    handle: &synod_node::NodeHandle,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> synod_http::Mount {
    let gateway = synod_etcd::gateway::Gateway::new(handle.clone()).with_stopping(stop.clone());
    synod_http::Mount {
        router: gateway.router(),
        routes: synod_etcd::gateway::Gateway::routes()
            .into_iter()
            .map(|r| synod_http::RouteSpec {
                method: r.method,
                path: r.path,
                op: r.op,
                engine: r.engine,
            })
            .collect(),
    }
}

/// A leader that stops hands leadership to the most up-to-date voter first (a graceful
/// shutdown), so the cluster goes on without waiting out an election timeout. Bounded: the
/// engine abandons a hand-off after a few election timeouts, and the node answers then; the
/// client APIs keep serving (and forwarding) meanwhile. A second signal stops at once.
async fn hand_off_leadership(handle: &synod_node::NodeHandle, me: u64) {
    if handle.status().engine.leader != Some(me) {
        return;
    }
    tracing::info!(
        member = me,
        "leading: handing leadership away before stopping"
    );
    let started = std::time::Instant::now();
    tokio::select! {
        r = handle.move_leader(None) => match r {
            Ok(to) => tracing::info!(
                member = me,
                new_leader = to,
                took_ms = started.elapsed().as_millis() as u64,
                "leadership handed off; stopping"
            ),
            Err(e) => tracing::warn!(
                member = me,
                error = %e,
                "leadership not handed off; stopping anyway (the others elect a leader after an election timeout)"
            ),
        },
        _ = shutdown_signal() => tracing::warn!("second signal: stopping without a hand-off"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // No colour codes when logs go to a file (synod dev, chaos and tests redirect them).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        // `None`: unlimited.
        let hard = getrlimit(Resource::Nofile).maximum;
        assert!(
            hard.is_none_or(|h| h > 256),
            "hard limit {hard:?} too low to test"
        );
        let lowered = Rlimit {
            current: Some(256),
            maximum: hard,
        };
        setrlimit(Resource::Nofile, lowered).expect("lowering the soft limit is allowed");
        super::raise_open_files_limit();
        assert_eq!(getrlimit(Resource::Nofile).current, hard);
    }
}
