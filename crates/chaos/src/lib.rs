//! `synod chaos`: real `synod server` processes under random crashes (SIGKILL + restart),
//! pauses (SIGSTOP / SIGCONT), partitions and partial connectivity, with concurrent clients over
//! the HTTP API; afterwards the whole history is checked for linearizability and availability
//! is reported per member and per fault. See docs/chaos.md.
//!
//! * [`proxy`] — the fault-injecting TCP proxy all peer traffic goes through.
//! * [`cluster`] — the server processes (start, kill, pause; nothing left behind).
//! * [`schedule`] — the fault schedule drawn from the seed.
//! * [`workload`] — the clients and the history they record.
//! * [`watchers`] — watch streams on every member, checked by the watch checker.
//! * [`locks`] — lock clients writing a fenced register, checked for token order.
//! * [`availability`] — ops per 100 ms per member, downtime per fault, the SVG chart.
//! * [`reconfig`] — membership changes as faults (`--faults …,reconfig`).
//! * [`directory`] — the range directory checked against the layout at the end (`--directory`).
//!
//! Exit codes of [`run`]: 0 linearizable, 1 not linearizable, 2 unknown / inconclusive
//! (checker budget, no successful operation, interrupted), 3 setup error.

pub mod availability;
pub mod cluster;
pub mod directory;
pub mod locks;
pub mod moves;
pub mod proxy;
pub mod reconfig;
pub mod schedule;
pub mod splits;
pub mod watchers;
pub mod workload;

use availability::FaultRecord;
use clap::{Args, Parser};
use cluster::Cluster;
use proxy::{Proxy, ProxyConfig, Route};
use schedule::{Fault, FaultKinds, ScheduledFault, Target};
use serde_json::json;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_core::history::History;
use synod_core::{NodeId, SplitMix64};
use synod_node::ClusterConfig;
use workload::{Clock, Recorder, WorkloadConfig};

pub const EXIT_LINEARIZABLE: i32 = 0;
pub const EXIT_VIOLATION: i32 = 1;
pub const EXIT_INCONCLUSIVE: i32 = 2;
pub const EXIT_SETUP: i32 = 3;

/// No fault starts before the cluster has run this long (leader elected, clients warmed up).
const WARMUP_MS: u64 = 2_000;
/// Everything is healed this long before the end, so clients see the recovered cluster.
const SETTLE_MS_MAX: u64 = 5_000;
/// The cluster must serve a write within this after start, or the run is a setup error.
const READY_TIMEOUT_MS: u64 = 30_000;
/// `/v1/status` queries (role resolution) give up after this.
const STATUS_TIMEOUT_MS: u64 = 300;
/// Progress line period on a terminal and in a log.
const PROGRESS_TTY_MS: u64 = 250;
const PROGRESS_LOG_MS: u64 = 5_000;
/// After the clients stop, the watchers get this long to deliver the last acknowledged write.
const WATCH_CATCH_UP_MS: u64 = 10_000;
/// Engines without a store-wide revision (their capabilities say `revisions: false`): no
/// watch to check, no leases for lock clients. EPaxos has per-member revisions only, which a
/// watch checker comparing members would misread as disagreement.
const NO_REVISION_ENGINES: [&str; 2] = ["caspaxos", "epaxos"];

/// Most members and clients a run may ask for.
const NODES_MAX: usize = 9;
const CLIENTS_MAX: usize = 256;

#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long to run, e.g. 60s, 2m, 500ms (a bare number is seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Members in the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Partition the keyspace into this many consensus groups (omnipaxos, vr): the split keys
    /// cut the workload's keys (`k0`, `k1`, …) evenly, each split key itself one of them.
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Partitioned runs: range splits during the fault window, each at one of the workload's
    /// keys that no range begins at yet (at most as many as there are such keys).
    #[arg(long, default_value_t = 2)]
    pub splits: usize,
    /// Partitioned runs: of those splits, this many are merged back later in the run (the
    /// range the split made joins the one below again).
    #[arg(long, default_value_t = 1)]
    pub merges: usize,
    /// Partitioned runs: the engines also split ranges by load themselves, past this many
    /// writes a second for 5 s (`[partition] auto_split_writes`; 0: never). The report names
    /// the ranges at the end.
    #[arg(long, default_value_t = 0)]
    pub auto_split_writes: u64,
    /// Partitioned runs: the same past this many linearizable reads a second for 5 s
    /// (`[partition] auto_split_reads`; 0: never).
    #[arg(long, default_value_t = 0)]
    pub auto_split_reads: u64,
    /// Partitioned runs: keep the replicated range directory (`[partition] directory = true`)
    /// and check at the end that every member's copy records the layout its groups applied.
    #[arg(long)]
    pub directory: bool,
    /// Partitioned runs: each group after the first on this many members (`[partition]
    /// replicas`; 0: every member). Keeps the directory; placed groups split (`--splits`,
    /// of ranges past the first; none with `--moves`) but do not merge (`--merges` is
    /// ignored), and `reconfig` faults are refused. Watchers (and lock waiters) at members
    /// that do not host a group read it from a host (remote watches).
    #[arg(long, default_value_t = 0)]
    pub replicas: usize,
    /// Placed runs (`--replicas`): this many range moves during the fault window, each of a
    /// random key's group from one of its hosts to a member outside it (`POST
    /// /v1/ranges/move`). The end-of-run check requires every placed group whole and no move
    /// left recorded in the directory.
    #[arg(long, default_value_t = 0)]
    pub moves: usize,
    /// Replication engine: omnipaxos, vr, caspaxos or epaxos.
    #[arg(long, default_value = "omnipaxos")]
    pub engine: String,
    /// Concurrent clients; client i talks to member (i mod nodes).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Seed of the fault schedule and the workload (printed; random if not given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Faults to inject: crash, pause, partition, partial, reconfig (comma-separated), all or
    /// none. `all` leaves the member set fixed; `all,reconfig` also replaces members and
    /// resizes the cluster (not on epaxos).
    #[arg(long, default_value = "all", value_parser = FaultKinds::parse)]
    pub faults: FaultKinds,
    /// Where to keep the history, schedule, logs and chart (default
    /// synod-data/chaos/<timestamp>-<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// TESTING ONLY: passed to every server, to prove a chaos run catches it.
    #[arg(long)]
    pub plant_bug: Option<String>,
    /// Keys the clients share (few keys = much contention = a sharper check).
    #[arg(long, default_value_t = 5)]
    pub keys: usize,
    /// Share of operations that are (linearizable) gets, in percent.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub read_percent: u64,
    /// The checker gives up with verdict unknown after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub check_budget_secs: u64,
    /// Port of the proxy's control API on 127.0.0.1 (default: a free port, printed).
    #[arg(long)]
    pub control_port: Option<u16>,
    /// Lock clients (0 = none): each repeatedly takes one lock with the etcd Lock service and
    /// writes a fenced register while holding it; the run also checks the writes' token order
    /// (docs/locks.md). Log engines only.
    #[arg(long, default_value_t = 0)]
    pub locks: usize,
    /// Lease TTL of the lock clients, seconds (the cluster raises it to its minimum).
    #[arg(long, default_value_t = 2)]
    pub lock_ttl: i64,
    /// TESTING ONLY: lock clients write without fencing (a plain put), to prove the check
    /// catches a stale holder.
    #[arg(long)]
    pub lock_unfenced: bool,
    /// Lock client 0 pauses its first hold (no keep-alives, no write) until another holder has
    /// written, then writes: a stale holder by construction.
    #[arg(long)]
    pub lock_pause_holder: bool,
}

#[derive(Parser)]
struct Standalone {
    #[command(flatten)]
    args: ChaosArgs,
}

impl ChaosArgs {
    /// Parses flags as `synod chaos` would (without the program name), for tests and embedders.
    pub fn parse_from<I, T>(flags: I) -> Result<ChaosArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let all = std::iter::once(std::ffi::OsString::from("synod-chaos"))
            .chain(flags.into_iter().map(Into::into));
        Standalone::try_parse_from(all).map(|s| s.args)
    }
}

/// `60s`, `2m`, `500ms`, `45` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1_000)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 60s, 2m or 500ms"))?;
    Ok(Duration::from_millis(n.saturating_mul(mul_ms)))
}

/// Runs one chaos run; returns the exit code (see the module doc). `synod_exe` is the `synod`
/// binary whose `server` subcommand runs the members.
pub fn run(args: ChaosArgs, synod_exe: &Path) -> i32 {
    let seed = args.seed.unwrap_or_else(random_seed);
    let out = match prepare_out_dir(&args, seed) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("synod chaos: setup error: {e}");
            return EXIT_SETUP;
        }
    };
    eprintln!(
        "synod chaos: engine {}, {} nodes, {} clients, {:?}, faults {}, seed {seed}\n  output in {}\n  reproduce: synod chaos --engine {} --nodes {} --clients {} --duration {}ms --faults {} --keys {} --seed {seed}{}{}{}",
        args.engine,
        args.nodes,
        args.clients,
        args.duration,
        args.faults.names(),
        out.display(),
        args.engine,
        args.nodes,
        args.clients,
        args.duration.as_millis(),
        args.faults.names(),
        args.keys,
        args.plant_bug
            .as_ref()
            .map(|b| format!(" --plant-bug {b}"))
            .unwrap_or_default(),
        lock_flags(&args),
        if args.groups > 1 {
            format!(
                " --groups {} --splits {} --merges {} --auto-split-writes {} --auto-split-reads {}{}{}",
                args.groups,
                args.splits,
                args.merges,
                args.auto_split_writes,
                args.auto_split_reads,
                if args.directory { " --directory" } else { "" },
                match (args.replicas, args.moves) {
                    (0, _) => String::new(),
                    (r, 0) => format!(" --replicas {r}"),
                    (r, m) => format!(" --replicas {r} --moves {m}"),
                }
            )
        } else {
            String::new()
        },
    );
    if args.groups > 1 {
        eprintln!(
            "  partitioned: {} groups split at {:?} (add --groups {} to reproduce)",
            args.groups,
            split_keys(args.keys, args.groups),
            args.groups
        );
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("synod chaos: setup error: cannot start the async runtime: {e}");
            return EXIT_SETUP;
        }
    };
    // Current-thread runtime: every child is spawned from this thread, which lives for the
    // whole run, so PR_SET_PDEATHSIG (tied to the spawning thread) only fires if we die.
    let code = rt.block_on(run_async(args, synod_exe, seed, &out));
    drop(rt);
    code
}

/// The lock flags of a run, for its reproduce line.
fn lock_flags(args: &ChaosArgs) -> String {
    if args.locks == 0 {
        return String::new();
    }
    let mut f = format!(" --locks {} --lock-ttl {}", args.locks, args.lock_ttl);
    if args.lock_unfenced {
        f.push_str(" --lock-unfenced");
    }
    if args.lock_pause_holder {
        f.push_str(" --lock-pause-holder");
    }
    f
}

/// Placed runs with `--moves`: the range moves, spread evenly over the fault window.
fn spawn_moves(
    args: &ChaosArgs,
    s: &Setup,
    heal_at_ms: u64,
    base: Instant,
    seed: u64,
) -> Option<tokio::task::JoinHandle<Vec<splits::SplitRecord>>> {
    if args.replicas == 0 || args.moves == 0 {
        return None;
    }
    let n = args.moves as u64;
    let times = (1..=n)
        .map(|i| WARMUP_MS + heal_at_ms.saturating_sub(WARMUP_MS) * i / (n + 1))
        .collect();
    let members = s.cluster.members.iter().take(args.nodes);
    let addrs = members.map(|m| m.http_addr.clone()).collect();
    let ids = s.ids.iter().take(args.nodes).copied().collect();
    // The first range's group lives on every member: keys of the placed groups only.
    let first = split_keys(args.keys, args.groups).into_iter().next();
    let keys = (0..args.keys).map(|k| format!("k{k}"));
    let keys = keys
        .filter(|k| first.as_ref().is_some_and(|f| k >= f))
        .collect();
    Some(tokio::spawn(moves::run(
        addrs, ids, keys, times, base, seed,
    )))
}

/// The checks that join the linearizability verdict.
struct Checks {
    watch: Option<watchers::WatchRun>,
    locks: Option<locks::LockReport>,
    splits: Vec<splits::SplitRecord>,
    /// Partitioned runs: the first key of each range at the end, as a member reported it.
    ranges_at_end: Vec<String>,
    directory: Option<directory::DirectoryCheck>,
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    SplitMix64::new(t ^ u64::from(std::process::id()).rotate_left(32)).next_u64() % 1_000_000_000
}

/// Split keys that share the workload's keys `k0..k{keys}` out evenly among `groups` groups
/// (the simulator's rule): each split key is one of the keys, so boundaries are exercised.
pub fn split_keys(keys: usize, groups: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..keys).map(|k| format!("k{k}")).collect();
    names.sort_unstable();
    let g = groups.clamp(1, names.len().max(1));
    let mut splits: Vec<String> = (1..g).map(|i| names[i * names.len() / g].clone()).collect();
    splits.dedup();
    splits
}

fn prepare_out_dir(args: &ChaosArgs, seed: u64) -> Result<PathBuf, String> {
    if !(1..=NODES_MAX).contains(&args.nodes) {
        return Err(format!("--nodes must be 1..={NODES_MAX}"));
    }
    if !(1..=CLIENTS_MAX).contains(&args.clients) {
        return Err(format!("--clients must be 1..={CLIENTS_MAX}"));
    }
    if args.locks > CLIENTS_MAX {
        return Err(format!("--locks must be 0..={CLIENTS_MAX}"));
    }
    if args.locks > 0 && NO_REVISION_ENGINES.contains(&args.engine.as_str()) {
        return Err("--locks needs leases and transactions: use --engine omnipaxos or vr".into());
    }
    if args.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if args.groups > 1 {
        if !synod_node::config::PARTITIONED_ENGINES.contains(&args.engine.as_str()) {
            return Err("--groups: only omnipaxos and vr run partitioned".into());
        }
        if args.groups > args.keys {
            return Err("--groups cannot exceed --keys (every group gets a key)".into());
        }
    } else if args.directory {
        return Err("--directory needs --groups 2 or more (the directory maps ranges)".into());
    }
    if args.moves > 0 && args.replicas == 0 {
        return Err("--moves needs --replicas (only placed groups move)".into());
    }
    if args.replicas > 0 {
        let r = args.replicas;
        if args.groups < 2 || r < 3 || r >= args.nodes {
            return Err("--replicas needs --groups 2 or more and 3 to --nodes - 1".into());
        }
        if args.faults.reconfig {
            return Err(
                "--replicas: this tool's membership changes (reconfig) are not run against \
                 placed groups yet"
                    .into(),
            );
        }
    }
    if args.faults.reconfig && args.engine == "epaxos" {
        return Err("--faults reconfig: the epaxos engine has no membership change".into());
    }
    if !synod_node::config::ENGINE_NAMES.contains(&args.engine.as_str()) {
        return Err(format!(
            "unknown engine {:?}; known: {:?}",
            args.engine,
            synod_node::config::ENGINE_NAMES
        ));
    }
    if let Some(b) = &args.plant_bug
        && synod_core::PlantedBug::parse(b).is_none()
    {
        let names: Vec<&str> = synod_core::PlantedBug::ALL
            .iter()
            .map(|b| b.name())
            .collect();
        return Err(format!(
            "unknown planted bug {b:?}; one of {}",
            names.join(", ")
        ));
    }
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => PathBuf::from("synod-data/chaos").join(format!("{}-{seed}", timestamp())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// UTC `YYYYmmdd-HHMMSS`, without a date crate (civil-from-days, H. Hinnant's algorithm).
fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Ports for one member: the proxy's listener (the advertised peer address) and the real ones.
struct Ports {
    proxy: std::net::TcpListener,
    peer_real: SocketAddr,
    http: SocketAddr,
    grpc: SocketAddr,
}

fn pick_ports(n: usize) -> std::io::Result<Vec<Ports>> {
    // Hold every probe listener until all are picked, so no two members get the same port.
    let mut held = Vec::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let proxy = std::net::TcpListener::bind("127.0.0.1:0")?;
        let mut real = Vec::new();
        for _ in 0..3 {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            real.push(l.local_addr()?);
            held.push(l);
        }
        out.push(Ports {
            proxy,
            peer_real: real[0],
            http: real[1],
            grpc: real[2],
        });
    }
    drop(held);
    Ok(out)
}

struct Setup {
    cluster: Cluster,
    proxy: Proxy,
    control_addr: SocketAddr,
    ports: Vec<u16>,
    ids: Vec<NodeId>,
    /// Each member's etcd gRPC address (the lock clients use it).
    grpc_addrs: Vec<String>,
}

/// Marks a start-up that failed because a member's port was taken.
const PORT_TAKEN: &str = "port taken: ";

/// Start-ups tried when members find their ports taken.
const SETUP_ATTEMPTS_MAX: usize = 3;

/// [`setup`], again with other ports when a member found one taken: the ports are picked free
/// and released before the members bind them, and anything else on the machine (another
/// test's cluster, an outgoing connection) may take one meanwhile.
async fn setup_with_free_ports(
    args: &ChaosArgs,
    exe: &Path,
    seed: u64,
    out: &Path,
    clock: &Clock,
) -> Result<Setup, String> {
    let mut attempt = 1;
    loop {
        match setup(args, exe, seed, out, clock).await {
            Err(e) if e.starts_with(PORT_TAKEN) && attempt < SETUP_ATTEMPTS_MAX => {
                eprintln!("synod chaos: {e}; starting again on other ports");
                // The failed start's members are stopped (dropped); their data goes too.
                let _ = std::fs::remove_dir_all(out.join("data"));
                attempt += 1;
            }
            r => return r,
        }
    }
}

async fn setup(
    args: &ChaosArgs,
    exe: &Path,
    seed: u64,
    out: &Path,
    clock: &Clock,
) -> Result<Setup, String> {
    let spares = if args.faults.reconfig {
        reconfig::SPARES
    } else {
        0
    };
    let mut ports =
        pick_ports(args.nodes + spares).map_err(|e| format!("cannot pick free ports: {e}"))?;
    let spare_ports = ports.split_off(args.nodes);
    let mut cfg = ClusterConfig::local(args.nodes, 0);
    cfg.cluster_name = format!("chaos-{seed}");
    cfg.engine = args.engine.clone();
    cfg.partition.split_keys = split_keys(args.keys, args.groups);
    cfg.partition.auto_split_writes = args.auto_split_writes;
    cfg.partition.auto_split_reads = args.auto_split_reads;
    cfg.partition.directory = args.directory || args.replicas > 0;
    cfg.partition.replicas = args.replicas;
    let mut routes = Vec::new();
    let mut members = Vec::new();
    let mut all_ports = Vec::new();
    let mut grpc_addrs = Vec::new();
    for (m, p) in cfg.members.iter_mut().zip(ports) {
        let proxy_addr = p.proxy.local_addr().map_err(|e| e.to_string())?;
        m.peer_addr = proxy_addr.to_string();
        m.http_addr = p.http.to_string();
        m.grpc_addr = p.grpc.to_string();
        grpc_addrs.push(m.grpc_addr.clone());
        all_ports.extend([
            proxy_addr.port(),
            p.peer_real.port(),
            p.http.port(),
            p.grpc.port(),
        ]);
        p.proxy.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::from_std(p.proxy).map_err(|e| e.to_string())?;
        routes.push(Route {
            member: m.id,
            listener,
            target: p.peer_real,
        });
        members.push((
            m.id,
            m.name.clone(),
            m.http_addr.clone(),
            p.peer_real.to_string(),
        ));
    }
    cfg.validate().map_err(|e| e.to_string())?;
    // Spare slots (reconfig runs): routed and addressed like members, started only once a
    // membership change adds a member there.
    for (k, p) in spare_ports.into_iter().enumerate() {
        let proxy_addr = p.proxy.local_addr().map_err(|e| e.to_string())?;
        all_ports.extend([
            proxy_addr.port(),
            p.peer_real.port(),
            p.http.port(),
            p.grpc.port(),
        ]);
        grpc_addrs.push(p.grpc.to_string());
        p.proxy.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::from_std(p.proxy).map_err(|e| e.to_string())?;
        let id = reconfig::spare_id(k);
        routes.push(Route {
            member: id,
            listener,
            target: p.peer_real,
        });
        members.push((
            id,
            format!("s{}", k + 1),
            p.http.to_string(),
            p.peer_real.to_string(),
        ));
    }
    let config_path = out.join("cluster.toml");
    std::fs::write(&config_path, cfg.to_toml_string())
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let mut proxy = Proxy::start(
        routes,
        ProxyConfig {
            frame_bytes_max: cfg.transport.frame_bytes_max,
            seed,
        },
    )
    .map_err(|e| format!("cannot start the proxy: {e}"))?;
    let control = tokio::net::TcpListener::bind(("127.0.0.1", args.control_port.unwrap_or(0)))
        .await
        .map_err(|e| format!("cannot bind the proxy control port: {e}"))?;
    let control_addr = control.local_addr().map_err(|e| e.to_string())?;
    all_ports.push(control_addr.port());
    proxy.serve_control(control);
    let ids = cfg.member_ids();
    let mut cluster = Cluster::new(exe, &config_path, args.plant_bug.clone(), members, out);
    for i in 0..cluster.members.len() {
        if i >= args.nodes {
            cluster.members[i].retired = true;
            continue;
        }
        cluster
            .start(i, clock.now_us())
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    }
    // Ready = a write through member 1 succeeds (works for leader-based and leaderless engines)
    // and every member serves its HTTP port, so no fault lands on a member still starting.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(1_000))
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
    let url = format!("http://{}/v1/kv/chaos-ready", cluster.members[0].http_addr);
    let mut written = false;
    loop {
        let exited = cluster.exited();
        if let Some((name, status)) = exited.first() {
            let log = std::fs::read_to_string(out.join(format!("{name}.log"))).unwrap_or_default();
            let taken = if log.contains("Address already in use") {
                PORT_TAKEN
            } else {
                ""
            };
            return Err(format!(
                "{taken}member {name} exited during start-up ({status}); see {}/{name}.log",
                out.display()
            ));
        }
        if !written && let Ok(r) = http.put(&url).json(&json!({"value": "ready"})).send().await {
            written = r.status().is_success();
        }
        if written && every_member_serves(&http, &cluster).await {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the cluster did not serve a write and every member its status within {} s; see the logs in {}",
                READY_TIMEOUT_MS / 1000,
                out.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Setup {
        cluster,
        proxy,
        control_addr,
        ports: all_ports,
        ids,
        grpc_addrs,
    })
}

/// Whether every member answers `/v1/status` (it answers only once all its listeners are bound
/// and its node is running).
async fn every_member_serves(http: &reqwest::Client, cluster: &Cluster) -> bool {
    for m in cluster.members.iter().filter(|m| !m.retired) {
        let url = format!("http://{}/v1/status", m.http_addr);
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => {}
            _ => return false,
        }
    }
    true
}

/// The first key of each range, from the first member whose `/v1/status` answers (empty if
/// none does): its groups', or with groups placed on some members, its directory's (a
/// member's own groups are then some of the ranges).
async fn ranges_now(http: &reqwest::Client, cluster: &Cluster) -> Vec<String> {
    for m in cluster.members.iter().filter(|m| !m.retired) {
        let url = format!("http://{}/v1/status", m.http_addr);
        let Ok(r) = http.get(&url).send().await else {
            continue;
        };
        let Ok(status) = r.json::<serde_json::Value>().await else {
            continue;
        };
        let ranges = match status["directory"]["placed"] == true {
            true => &status["directory"]["ranges"],
            false => &status["groups"],
        };
        let starts: Option<Vec<String>> = ranges.as_array().map(|gs| {
            gs.iter()
                .filter_map(|g| g["start"].as_str().map(str::to_string))
                .collect()
        });
        if let Some(starts) = starts.filter(|s| !s.is_empty()) {
            return starts;
        }
    }
    Vec::new()
}

/// What the nemesis did and noticed.
#[derive(Default)]
struct NemesisLog {
    records: Vec<FaultRecord>,
    /// Members that exited without being killed (a crash of the program: always reported).
    unexpected_exits: Vec<String>,
    /// Restarts that failed and similar trouble.
    warnings: Vec<String>,
    /// The member ids when the run ended (a reconfig run replaces and adds members).
    members_at_end: Vec<NodeId>,
}

struct Nemesis<'a> {
    cluster: &'a mut Cluster,
    proxy: &'a Proxy,
    /// The members now (membership changes replace and add ids).
    ids: Vec<NodeId>,
    engine: String,
    /// Each slot's etcd gRPC address, spares included.
    grpc_addrs: Vec<String>,
    rng: SplitMix64,
    http: reqwest::Client,
    clock: Clock,
    log: NemesisLog,
    current: Arc<Mutex<String>>,
}

/// What to undo when a fault ends.
enum Undo {
    Restart(usize),
    Resume(usize),
    Links,
    /// A replaced member's newcomer, promoted from learner.
    Promote(NodeId),
    /// Members a resize added, removed again.
    Shrink(Vec<NodeId>),
    Nothing,
}

impl Nemesis<'_> {
    /// The leader most reachable members name, if any.
    async fn leader(&self) -> Option<NodeId> {
        let mut votes: std::collections::BTreeMap<NodeId, usize> = Default::default();
        for m in &self.cluster.members {
            if !m.is_running() || m.is_paused() {
                continue;
            }
            let url = format!("http://{}/v1/status", m.http_addr);
            let Ok(Ok(r)) = tokio::time::timeout(
                Duration::from_millis(STATUS_TIMEOUT_MS),
                self.http.get(&url).send(),
            )
            .await
            else {
                continue;
            };
            let Ok(Ok(v)) = tokio::time::timeout(
                Duration::from_millis(STATUS_TIMEOUT_MS),
                r.json::<serde_json::Value>(),
            )
            .await
            else {
                continue;
            };
            if let Some(l) = v.get("leader").and_then(|l| l.as_u64())
                && self.ids.contains(&l)
            {
                *votes.entry(l).or_default() += 1;
            }
        }
        votes.into_iter().max_by_key(|(_, n)| *n).map(|(l, _)| l)
    }

    /// (target, description of its role).
    async fn resolve(&mut self, t: Target) -> (NodeId, String) {
        let leader = self.leader().await;
        // Target::Node names a slot (see its doc); a retired slot falls back to member 1's.
        let t = match t {
            Target::Node(n) => {
                let slot = usize::try_from(n.saturating_sub(1)).unwrap_or(0);
                match self.cluster.members.get(slot).filter(|m| !m.retired) {
                    Some(m) => Target::Node(m.id),
                    None => Target::Node(self.ids[0]),
                }
            }
            other => other,
        };
        match (t, leader) {
            (Target::Node(n), Some(l)) if n == l => (n, " (leader)".into()),
            (Target::Node(n), _) => (n, String::new()),
            (Target::Leader, Some(l)) => (l, " (leader)".into()),
            (Target::Leader, None) => (
                *self.rng.pick(&self.ids),
                " (no leader: random member)".into(),
            ),
            (Target::Follower, l) => {
                let others: Vec<NodeId> =
                    self.ids.iter().copied().filter(|&n| Some(n) != l).collect();
                if others.is_empty() {
                    (self.ids[0], String::new())
                } else {
                    (*self.rng.pick(&others), " (follower)".into())
                }
            }
        }
    }

    /// The leader, or a random member on a leaderless engine; with a label for descriptions.
    async fn leader_or_any(&mut self) -> (NodeId, String) {
        match self.leader().await {
            Some(l) => (l, format!("leader n{l}")),
            None => {
                let n = *self.rng.pick(&self.ids);
                (n, format!("n{n} (no leader: random member)"))
            }
        }
    }

    fn others(&self, not: &[NodeId]) -> Vec<NodeId> {
        self.ids
            .iter()
            .copied()
            .filter(|n| !not.contains(n))
            .collect()
    }

    fn index(&self, n: NodeId) -> usize {
        self.cluster.index_of(n).unwrap_or(0)
    }

    /// Starts `f`; returns its description and what to undo. Constrained election has a second
    /// phase, applied by [`Nemesis::constrained_phase2`].
    async fn start(&mut self, f: &ScheduledFault) -> (String, Undo, Option<(NodeId, NodeId)>) {
        match &f.fault {
            Fault::Crash { target } => {
                let (n, role) = self.resolve(*target).await;
                let i = self.index(n);
                self.cluster.kill(i);
                (format!("crash n{n}{role}"), Undo::Restart(i), None)
            }
            Fault::Pause { target } => {
                let (n, role) = self.resolve(*target).await;
                let i = self.index(n);
                self.cluster.pause(i);
                (format!("pause n{n}{role}"), Undo::Resume(i), None)
            }
            Fault::Isolate { target } => {
                let (n, role) = self.resolve(*target).await;
                self.proxy.cut(&schedule::links_of(n, &self.ids));
                (format!("isolate n{n}{role}"), Undo::Links, None)
            }
            Fault::OneWay { from, to } => {
                let (a, ra) = self.resolve(*from).await;
                let mut b = self.resolve(*to).await;
                if b.0 == a {
                    let others = self.others(&[a]);
                    b = (*self.rng.pick(&others), String::new());
                }
                self.proxy.cut(&[(a, b.0)]);
                (
                    format!("one-way: n{a}{ra} -> n{}{} down", b.0, b.1),
                    Undo::Links,
                    None,
                )
            }
            Fault::QuorumLoss => {
                let (l, how) = self.leader_or_any().await;
                let others = self.others(&[l]);
                let hub = *self.rng.pick(&others);
                self.proxy.cut(&schedule::links_among(&self.others(&[hub])));
                (
                    format!("quorum-loss: only hub n{hub} reaches everyone; {how} does not"),
                    Undo::Links,
                    None,
                )
            }
            Fault::ConstrainedElection => {
                let (l, how) = self.leader_or_any().await;
                let others = self.others(&[l]);
                let hub = *self.rng.pick(&others);
                // Lag phase: the future hub falls behind while the others keep deciding.
                self.proxy.cut(&schedule::links_of(hub, &self.ids));
                (
                    format!("constrained election: hub n{hub} isolated (lag), then {how} cut off"),
                    Undo::Links,
                    Some((l, hub)),
                )
            }
            Fault::Chained => {
                let (l, how) = self.leader_or_any().await;
                let others = self.others(&[l]);
                let f2 = *self.rng.pick(&others);
                self.proxy.cut(&[(l, f2), (f2, l)]);
                (
                    format!("chained: link {how} <-> n{f2} down"),
                    Undo::Links,
                    None,
                )
            }
            Fault::Replace { target } => {
                let (n, role) = self.resolve(*target).await;
                let (description, learner) = self.replace(n, &role).await;
                let undo = learner.map_or(Undo::Nothing, Undo::Promote);
                (description, undo, None)
            }
            Fault::Resize => {
                let (description, added) = self.grow().await;
                (description, Undo::Shrink(added), None)
            }
            Fault::Wipe { target } => {
                let (n, role) = self.resolve(*target).await;
                (self.wipe(n, &role).await, Undo::Nothing, None)
            }
        }
    }

    fn constrained_phase2(&mut self, leader: NodeId, hub: NodeId) {
        self.proxy.restore_all();
        let mut cuts = schedule::links_of(leader, &self.ids);
        cuts.extend(schedule::links_among(&self.others(&[leader, hub])));
        self.proxy.cut(&cuts);
    }

    async fn undo(&mut self, u: Undo) {
        match u {
            Undo::Promote(id) => {
                self.promote_member(id).await;
            }
            Undo::Shrink(added) => self.shrink(&added).await,
            Undo::Nothing => {}
            Undo::Restart(i) => self.restart(i),
            Undo::Resume(i) => self.cluster.resume(i),
            Undo::Links => self.proxy.restore_all(),
        }
    }

    fn restart(&mut self, i: usize) {
        if let Err(e) = self.cluster.start(i, self.clock.now_us()) {
            self.log.warnings.push(format!(
                "restart of {} failed: {e}",
                self.cluster.members[i].name
            ));
        }
    }

    /// Members that died on their own are reported and restarted.
    fn reap(&mut self) {
        for (name, status) in self.cluster.exited() {
            let t = self.clock.now_us() as f64 / 1e6;
            self.log
                .unexpected_exits
                .push(format!("{name} exited on its own at t={t:.3}s ({status})"));
            if let Some(i) = self.cluster.members.iter().position(|m| m.name == name)
                && let Err(e) = self.cluster.start(i, self.clock.now_us())
            {
                self.log
                    .warnings
                    .push(format!("restart of {name} failed: {e}"));
            }
        }
    }

    /// Heals everything: links restored, paused members resumed, dead members restarted.
    fn heal_all(&mut self) {
        self.proxy.restore_all();
        for i in 0..self.cluster.members.len() {
            self.cluster.resume(i);
            if !self.cluster.members[i].is_running() && !self.cluster.members[i].retired {
                self.restart(i);
            }
        }
    }
}

/// Sleeps until `at`, reaping unexpected exits every 200 ms. False if interrupted by Ctrl-C.
async fn wait_until(at: Instant, nemesis: &mut Nemesis<'_>, interrupt: &mut Interrupt) -> bool {
    loop {
        nemesis.reap();
        let now = Instant::now();
        if now >= at {
            return true;
        }
        let step = (at - now).min(Duration::from_millis(200));
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = interrupt.wait() => return false,
        }
    }
}

/// SIGINT (Ctrl-C), listened for from the very start of a run so that no Ctrl-C falls back to
/// the default action (dying without cleaning up).
struct Interrupt(Option<tokio::signal::unix::Signal>);

impl Interrupt {
    fn new() -> Interrupt {
        Interrupt(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok())
    }

    /// Resolves on the next SIGINT; never if the handler could not be installed.
    async fn wait(&mut self) {
        match &mut self.0 {
            Some(s) => {
                if s.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}

async fn run_async(args: ChaosArgs, exe: &Path, seed: u64, out: &Path) -> i32 {
    let mut ctrl_c = Interrupt::new();
    let clock = Clock::start();
    // Interrupting the start-up drops the half-built cluster, whose Drop kills what started.
    let setup_result = tokio::select! {
        r = setup_with_free_ports(&args, exe, seed, out, &clock) => r,
        _ = ctrl_c.wait() => Err("interrupted during start-up".to_string()),
    };
    let mut s = match setup_result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("synod chaos: setup error: {e}");
            return EXIT_SETUP;
        }
    };
    eprintln!(
        "  proxy control: `nc 127.0.0.1 {}` then `help` (links, cuts, counters)",
        s.control_addr.port()
    );
    let total_ms = u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX);
    let settle_ms = (total_ms / 5).min(SETTLE_MS_MAX);
    let heal_at_ms = total_ms.saturating_sub(settle_ms);
    // Times are relative to the moment the workload starts (after setup), so the chart starts
    // at 0 with a ready cluster.
    let t0_us = clock.now_us();
    let sched = schedule::random_schedule(seed, args.faults, args.nodes, WARMUP_MS, heal_at_ms);
    let _ = std::fs::write(
        out.join("schedule.json"),
        serde_json::to_string_pretty(&json!({"seed": seed, "planned": &sched})).unwrap_or_default(),
    );

    let rec = Arc::new(Recorder::new(args.clients));
    let wcfg = WorkloadConfig {
        keys: args.keys,
        read_percent: args.read_percent,
    };
    // Engines without a store-wide revision have no watch; a partitioned cluster's watches are
    // per group, so its watchers watch one key each and each key is its own reference.
    let keyed = args.groups > 1;
    // Placed groups: a member watches the groups it does not host through a host's hub.
    let watching = !NO_REVISION_ENGINES.contains(&args.engine.as_str());
    let watch_streams = watching.then(|| {
        let targets = s
            .cluster
            .members
            .iter()
            .take(args.nodes)
            .map(|m| watchers::Target {
                id: m.id,
                http_addr: m.http_addr.clone(),
            })
            .collect();
        let plan = match keyed {
            true => watchers::keyed::plan(args.nodes, args.keys),
            false => watchers::plan(args.nodes, args.keys, seed),
        };
        watchers::Watchers::start(targets, plan, keyed)
    });
    let mut clients = Vec::new();
    for c in 0..args.clients {
        let node = c % args.nodes;
        clients.push(tokio::spawn(workload::run_client(
            c,
            node,
            s.cluster.members[node].http_addr.clone(),
            seed,
            wcfg.clone(),
            clock,
            rec.clone(),
        )));
    }
    let lock_run = if args.locks > 0 {
        let cfg = locks::LockConfig {
            clients: args.locks,
            ttl_secs: args.lock_ttl,
            fenced: !args.lock_unfenced,
            pause_holder: args.lock_pause_holder,
        };
        match locks::LockRun::start(&s.grpc_addrs[..args.nodes], cfg, seed, clock).await {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("synod chaos: setup error: {e}");
                return EXIT_SETUP;
            }
        }
    } else {
        None
    };
    let current = Arc::new(Mutex::new(String::from("none")));
    let progress = tokio::spawn(progress_loop(
        rec.clone(),
        current.clone(),
        Instant::now(),
        args.duration,
    ));

    let base = Instant::now();
    let at = |ms: u64| base + Duration::from_millis(ms);
    let splitter = (args.groups > 1 && args.splits > 0 && args.moves == 0).then(|| {
        let initial = split_keys(args.keys, args.groups);
        // Every free key in a random order, the first `--splits` taken — placed, of keys past
        // the first range, which stays whole (its group lives on every member).
        let mut keys = splits::plan(args.keys, &initial, args.keys, seed);
        if args.replicas > 0 {
            keys.retain(|k| initial.first().is_some_and(|f| k > f));
        }
        keys.truncate(args.splits);
        // Placed groups do not merge.
        let merges = if args.replicas > 0 { 0 } else { args.merges };
        let keys = splits::changes(keys, merges);
        let n = keys.len() as u64;
        let times = (1..=n)
            .map(|i| WARMUP_MS + heal_at_ms.saturating_sub(WARMUP_MS) * i / (n + 1))
            .collect();
        let addrs = s
            .cluster
            .members
            .iter()
            .take(args.nodes)
            .map(|m| m.http_addr.clone())
            .collect();
        tokio::spawn(splits::run(addrs, keys, times, base))
    });
    let splitter = splitter.or_else(|| spawn_moves(&args, &s, heal_at_ms, base, seed));
    let order_watch = ((args.directory || args.replicas > 0) && args.groups > 1).then(|| {
        let members = s.cluster.members.iter();
        let members = members.map(|m| (m.name.clone(), m.http_addr.clone()));
        // A paused member answers nothing: its read gives up, the others are read on.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap_or_default();
        directory::watch_order(http, members.collect())
    });
    let mut nemesis = Nemesis {
        cluster: &mut s.cluster,
        proxy: &s.proxy,
        ids: s.ids.clone(),
        engine: args.engine.clone(),
        grpc_addrs: s.grpc_addrs.clone(),
        rng: SplitMix64::new(seed ^ 0xFA17),
        http: reqwest::Client::new(),
        clock,
        log: NemesisLog::default(),
        current: current.clone(),
    };
    let mut interrupted = false;
    for f in &sched {
        if !wait_until(at(f.start_ms), &mut nemesis, &mut ctrl_c).await {
            interrupted = true;
            break;
        }
        let start_us = clock.now_us() - t0_us;
        let (description, undo, phase2) = nemesis.start(f).await;
        let mut effective_us = start_us;
        *nemesis.current.lock().unwrap_or_else(|e| e.into_inner()) =
            format!("#{} {description}", f.id);
        if let Some((leader, hub)) = phase2 {
            let lag_end = f.start_ms + (f.end_ms - f.start_ms) / 3;
            if !wait_until(at(lag_end), &mut nemesis, &mut ctrl_c).await {
                interrupted = true;
            } else {
                nemesis.constrained_phase2(leader, hub);
                effective_us = clock.now_us() - t0_us;
            }
        }
        if !interrupted && !wait_until(at(f.end_ms), &mut nemesis, &mut ctrl_c).await {
            interrupted = true;
        }
        nemesis.undo(undo).await;
        let end_us = clock.now_us() - t0_us;
        nemesis.log.records.push(FaultRecord {
            id: f.id,
            kind: f.fault.kind(),
            shape: f.fault.shape(),
            description,
            start_us,
            effective_us,
            end_us,
        });
        *nemesis.current.lock().unwrap_or_else(|e| e.into_inner()) = "none".into();
        if interrupted {
            break;
        }
    }
    if !interrupted && !wait_until(at(heal_at_ms), &mut nemesis, &mut ctrl_c).await {
        interrupted = true;
    }
    nemesis.heal_all();
    *nemesis.current.lock().unwrap_or_else(|e| e.into_inner()) = "healed".into();
    if !interrupted && !wait_until(at(total_ms), &mut nemesis, &mut ctrl_c).await {
        interrupted = true;
    }
    nemesis.reap();
    nemesis.log.members_at_end = nemesis.ids.clone();
    let log = std::mem::take(&mut nemesis.log);
    drop(nemesis);
    // Let clients finish their open operation (bounded by the client timeout).
    rec.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let lock_report = match lock_run {
        Some(r) => Some(r.finish().await),
        None => None,
    };
    let split_records = match splitter {
        Some(t) => t.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let run_us = clock.now_us() - t0_us;
    let watch_run = match watch_streams {
        Some(w) => {
            let writes = rec.writes.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let last_acked = writes.iter().map(|w| w.revision).max().unwrap_or(0);
            // Not a wait for luck: it returns as soon as the reference holds that revision
            // (each key's, keyed), and a reference that never does is the checker's to report.
            let within = Duration::from_millis(WATCH_CATCH_UP_MS);
            if !interrupted && keyed {
                w.wait_for_keys(&writes, within).await;
            } else if !interrupted {
                w.wait_for(last_acked, within).await;
            }
            Some(w.finish().await)
        }
        None => None,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    // After the watchers: the directory's records are writes of their own, to the meta group.
    let order = match order_watch {
        Some(w) => w.finish().await,
        None => directory::OrderReport::default(),
    };
    let keeps_directory = args.directory || args.replicas > 0;
    let directory_check = match keeps_directory && args.groups > 1 && !interrupted {
        true => Some(directory::check(&http, &s.cluster, args.replicas, order).await),
        false => None,
    };
    let ranges_at_end = if args.groups > 1 {
        ranges_now(&http, &s.cluster).await
    } else {
        Vec::new()
    };
    progress.abort();
    finish_progress_line();
    s.cluster.kill_all();
    s.proxy.shutdown();

    report(
        &args,
        seed,
        out,
        &s,
        rec,
        log,
        t0_us,
        run_us,
        interrupted,
        Checks {
            watch: watch_run,
            locks: lock_report,
            splits: split_records,
            ranges_at_end,
            directory: directory_check,
        },
        &mut ctrl_c,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn report(
    args: &ChaosArgs,
    seed: u64,
    out: &Path,
    s: &Setup,
    rec: Arc<Recorder>,
    log: NemesisLog,
    t0_us: u64,
    run_us: u64,
    interrupted: bool,
    checks: Checks,
    ctrl_c: &mut Interrupt,
) -> i32 {
    let mut ops = std::mem::take(&mut *rec.ops.lock().unwrap_or_else(|e| e.into_inner()));
    let mut successes =
        std::mem::take(&mut *rec.successes.lock().unwrap_or_else(|e| e.into_inner()));
    // Times relative to the workload start, like the fault records.
    for op in &mut ops {
        op.call = op.call.saturating_sub(t0_us);
        op.ret = op.ret.map(|r| r.saturating_sub(t0_us));
    }
    for x in &mut successes {
        x.call_us = x.call_us.saturating_sub(t0_us);
        x.return_us = x.return_us.saturating_sub(t0_us);
    }
    ops.sort_by_key(|o| o.call);
    let (ok, unknown, failed) = (
        rec.ok.load(Ordering::Relaxed),
        rec.unknown.load(Ordering::Relaxed),
        rec.failed.load(Ordering::Relaxed),
    );
    let meta = json!({
        "engine": args.engine, "seed": seed, "nodes": args.nodes, "clients": args.clients,
        "duration_ms": args.duration.as_millis() as u64, "faults": &log.records,
        "plant_bug": args.plant_bug, "time_unit": "us since the workload started",
    });
    let history = History { meta, ops };
    let mut problems = Vec::new();
    let mut write = |name: &str, text: String| {
        if let Err(e) = std::fs::write(out.join(name), text) {
            problems.push(format!("cannot write {name}: {e}"));
        }
    };
    write("history.json", history.to_json());
    write(
        "schedule.json",
        serde_json::to_string_pretty(&json!({"seed": seed, "faults": &log.records,
            "unexpected_exits": &log.unexpected_exits, "warnings": &log.warnings}))
        .unwrap_or_default(),
    );
    // One lane per slot with clients (spare slots have none).
    let names: Vec<String> = s
        .cluster
        .members
        .iter()
        .take(args.nodes)
        .map(|m| m.name.clone())
        .collect();
    let avail = availability::compute(&names, &successes, &log.records, run_us);
    write(
        "availability.json",
        serde_json::to_string_pretty(&avail).unwrap_or_default(),
    );
    let title = format!(
        "synod chaos: {} x{}, seed {seed}{} — successful ops per {} ms per member",
        args.engine,
        args.nodes,
        args.plant_bug
            .as_ref()
            .map(|b| format!(", planted bug {b}"))
            .unwrap_or_default(),
        availability::BUCKET_MS
    );
    if let Err(e) = availability::draw_svg(&avail, &title, &out.join("availability.svg")) {
        problems.push(e);
    }

    let (code, verdict_text) = if interrupted {
        (
            EXIT_INCONCLUSIVE,
            format!(
                "verdict: INTERRUPTED (not checked); check it with `synod check {}`\n",
                out.join("history.json").display()
            ),
        )
    } else {
        let opts = synod_checker::CheckOptions {
            time_budget: Duration::from_secs(args.check_budget_secs),
        };
        eprintln!("checking {} operations…", history.ops.len());
        let h = history.clone();
        // A plain thread, not spawn_blocking: on Ctrl-C we return at once and leave it behind
        // (the runtime would wait for a blocking task on drop).
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(synod_checker::check_history(&h, &opts));
        });
        let report = tokio::select! {
            r = rx => match r {
                Ok(r) => r,
                Err(_) => {
                    eprintln!("synod chaos: the checker panicked; check {} by hand", out.join("history.json").display());
                    return EXIT_INCONCLUSIVE;
                }
            },
            _ = ctrl_c.wait() => {
                eprintln!("synod chaos: interrupted while checking; run `synod check {}`", out.join("history.json").display());
                return EXIT_INCONCLUSIVE;
            }
        };
        let code = match report.verdict {
            synod_checker::Verdict::Linearizable if ok == 0 => EXIT_INCONCLUSIVE,
            synod_checker::Verdict::Linearizable => EXIT_LINEARIZABLE,
            synod_checker::Verdict::NotLinearizable => EXIT_VIOLATION,
            synod_checker::Verdict::Unknown => EXIT_INCONCLUSIVE,
        };
        let mut text = report.render();
        if ok == 0 {
            text.push_str("no operation succeeded: the run is inconclusive\n");
        }
        (code, text)
    };
    // The watch verdict joins the linearizability one: a violation fails the run.
    let writes = std::mem::take(&mut *rec.writes.lock().unwrap_or_else(|e| e.into_inner()));
    let (code, verdict_text, watch_numbers) = match checks.watch {
        Some(w) if !interrupted => {
            eprintln!("checking {} watchers…", w.logs.len());
            let (passed, text, numbers) = watchers::verdict(w, writes);
            let code = if passed { code } else { EXIT_VIOLATION };
            (code, format!("{verdict_text}{text}"), numbers)
        }
        _ => (code, verdict_text, serde_json::Value::Null),
    };
    // So does the lock verdict: an accepted write out of token order fails the run.
    let (code, verdict_text, lock_numbers) = match &checks.locks {
        Some(l) if !interrupted => {
            if let Err(e) = std::fs::write(out.join("locks.json"), l.to_json()) {
                eprintln!("synod chaos: cannot write locks.json: {e}");
            }
            let code = if l.safe() { code } else { EXIT_VIOLATION };
            (code, format!("{verdict_text}{}", l.render()), l.numbers())
        }
        _ => (code, verdict_text, serde_json::Value::Null),
    };
    // And so does the directory's: a copy that never records the layout, or a key whose
    // owner went back during the run, fails the run.
    let (code, verdict_text) = match &checks.directory {
        Some(d) => (
            if d.passed() { code } else { EXIT_VIOLATION },
            format!("{verdict_text}{}", d.render()),
        ),
        None => (code, verdict_text),
    };

    let mut r = String::new();
    r.push_str(&format!(
        "synod chaos report — engine {}, {} nodes, {} clients, seed {seed}{}\n",
        args.engine,
        args.nodes,
        args.clients,
        args.plant_bug
            .as_ref()
            .map(|b| format!(", planted bug {b}"))
            .unwrap_or_default()
    ));
    r.push_str(&format!(
        "ran {:.1} s: {ok} ops ok, {unknown} unknown outcome, {failed} failed without effect\n",
        run_us as f64 / 1e6
    ));
    r.push_str("faults:\n");
    for (f, d) in log.records.iter().zip(&avail.faults) {
        let ms = |d: Option<f64>| d.map_or("never".to_string(), |d| format!("{d:.0} ms"));
        // The member whose clients waited longest for a success after the fault started.
        let worst = d
            .node_downtime_ms
            .iter()
            .enumerate()
            .max_by(|a, b| {
                a.1.unwrap_or(f64::INFINITY)
                    .total_cmp(&b.1.unwrap_or(f64::INFINITY))
            })
            .map(|(i, t)| format!("{} {}", names[i], ms(*t)))
            .unwrap_or_default();
        r.push_str(&format!(
            "  #{:<3} {:>6.1}-{:>6.1} s  {:<58} downtime {} (worst member: {worst}), healed in {}\n",
            f.id,
            f.start_us as f64 / 1e6,
            f.end_us as f64 / 1e6,
            f.description,
            ms(d.downtime_ms),
            ms(d.max_heal_ms()),
        ));
    }
    r.push_str(
        "downtime per fault kind (start of fault to first success cluster-wide; heal = end of \
         fault to the slowest member's next success):\n",
    );
    r.push_str(&avail.summary());
    for e in &log.unexpected_exits {
        r.push_str(&format!("UNEXPECTED EXIT: {e}\n"));
    }
    for w in log.warnings.iter().chain(&problems) {
        r.push_str(&format!("warning: {w}\n"));
    }
    if !checks.splits.is_empty() {
        r.push_str(&splits::report(&checks.splits));
    }
    if !checks.ranges_at_end.is_empty() {
        r.push_str(&format!(
            "ranges at the end: {} (first keys {:?})\n",
            checks.ranges_at_end.len(),
            checks.ranges_at_end
        ));
    }
    r.push_str(&verdict_text);
    r.push_str(&format!(
        "files: {dir}/history.json, schedule.json, availability.json, availability.svg, n*.log, report.txt\n",
        dir = out.display()
    ));
    if code != EXIT_LINEARIZABLE {
        let what = match code {
            EXIT_VIOLATION => {
                "FAILED: not linearizable, a watch violation, an unsafe lock or a range directory that never recorded the layout"
            }
            _ if interrupted => "INTERRUPTED",
            _ => "INCONCLUSIVE",
        };
        r.push_str(&format!(
            "{what} (exit {code}); everything is kept in {}\n",
            out.display()
        ));
    }
    let _ = std::fs::write(out.join("report.txt"), &r);
    let summary = json!({
        "seed": seed, "engine": args.engine, "exit_code": code, "ops_ok": ok, "ops_unknown": unknown,
        "ops_failed": failed, "ports": &s.ports, "out_dir": out, "unexpected_exits": &log.unexpected_exits,
        "by_kind": &avail.by_kind, "watch": watch_numbers, "locks": lock_numbers,
        "members_at_end": &log.members_at_end, "warnings": &log.warnings,
        "splits": &checks.splits, "ranges_at_end": &checks.ranges_at_end,
        "directory": &checks.directory,
    });
    let _ = std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    );
    if code == EXIT_LINEARIZABLE {
        print!("{r}");
    } else {
        eprint!("{r}");
    }
    code
}

async fn progress_loop(
    rec: Arc<Recorder>,
    current: Arc<Mutex<String>>,
    start: Instant,
    total: Duration,
) {
    let tty = std::io::stderr().is_terminal();
    let period = Duration::from_millis(if tty {
        PROGRESS_TTY_MS
    } else {
        PROGRESS_LOG_MS
    });
    loop {
        tokio::time::sleep(period).await;
        let line = format!(
            "chaos {:>6.1}/{:.0} s  ok {}  unknown {}  fault: {}",
            start.elapsed().as_secs_f64(),
            total.as_secs_f64(),
            rec.ok.load(Ordering::Relaxed),
            rec.unknown.load(Ordering::Relaxed),
            current.lock().unwrap_or_else(|e| e.into_inner())
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
}

fn finish_progress_line() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_args_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("soon").is_err());
        let a = ChaosArgs::parse_from([
            "--engine",
            "caspaxos",
            "--faults",
            "crash,pause",
            "--duration",
            "10s",
        ])
        .unwrap();
        assert_eq!(a.engine, "caspaxos");
        assert!(a.faults.crash && a.faults.pause && !a.faults.partition);
        assert_eq!(a.nodes, 3);
        assert_eq!(a.clients, 8);
        assert!(ChaosArgs::parse_from(["--read-percent", "101"]).is_err());
    }

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert_eq!(&t[8..9], "-");
    }

    #[test]
    fn bad_setup_is_exit_3() {
        let dir = std::env::temp_dir().join(format!("synod-chaos-bad-{}", std::process::id()));
        let a =
            ChaosArgs::parse_from(["--engine", "raft", "--out", dir.to_str().unwrap()]).unwrap();
        assert_eq!(run(a, Path::new("/nonexistent/synod")), EXIT_SETUP);
        let a =
            ChaosArgs::parse_from(["--duration", "1s", "--out", dir.to_str().unwrap()]).unwrap();
        assert_eq!(run(a, Path::new("/nonexistent/synod")), EXIT_SETUP);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
