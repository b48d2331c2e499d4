//! `synod bench`: a closed-loop load generator over the etcd v3 gRPC API, so the same run can
//! drive Synod and a real etcd and the numbers compare like for like.
//!
//! * [`BenchArgs`] — the options, a `clap::Args` for the `synod` binary to flatten.
//! * [`run`] — parse-to-table: connects, preloads, runs each in-flight level, prints the table,
//!   writes `--json` and `--plot`. [`bench`] is the same without printing, for callers that
//!   want the [`Report`].
//!
//! Module map: `keys` (seeded streams, zipfian, key chooser, pre-generated keys and values), `client`
//! (connections of a run, KV client, leader discovery), `conn` (one HTTP/2 connection as a
//! gRPC service), `runner` (preload and one level), `stats` (histogram summary, results,
//! table), `plot` (SVG).

mod args;
mod client;
mod conn;
mod keys;
mod plot;
mod route;
mod runner;
mod stats;
mod watchers;

pub use args::{BenchArgs, KeyDist, StopAfter, Target, Workload, parse_duration};
pub use keys::{Distribution, HOT_KEY_INDEX, KeyChooser, Zipf};
pub use plot::write_plot;
pub use stats::{LatencySummary, LevelResult, Report, format_run, format_table};
pub use watchers::WatchSummary;

use anyhow::Context as _;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Runs the benchmark described by `args` on a runtime of its own, prints the table to stdout
/// and writes the JSON and plot files if asked.
///
/// The runtime has `--client-threads` threads. With one (the default) it is tokio's
/// current-thread runtime: every worker, the connections' I/O and the timers run on the calling
/// thread, with no work stealing and no cross-thread wake-ups. On the 2-core machine shared
/// with three servers that cost about half the client CPU per request of the two-worker
/// multi-thread runtime, and raised throughput accordingly.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.validate()?;
    // The bench logs nothing through `tracing`, but h2 opens spans on every poll. With no
    // dispatcher anywhere in the process, each of them also goes down `tracing`'s fallback to
    // the `log` crate (enabled in the `synod` binary by axum), ~4 % of the client's CPU in a
    // profile. A dispatcher that wants nothing makes every such span a cached no. It is this
    // thread's default for the length of the run only, so an embedding program's own global
    // subscriber is left alone.
    let _no_tracing =
        tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
    let runtime = if args.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    let report = runtime.block_on(bench(&args))?;
    print!("{}", format_run(&report));
    print!("{}", format_table(&report.label, &report.results));
    write_outputs(&args, &report)
}

/// Writes `--json` and `--plot` for a finished run.
pub fn write_outputs(args: &BenchArgs, report: &Report) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(report)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        write_plot(path, &[report])?;
    }
    Ok(())
}

/// Connections to open: `--target all` and `ranges` promise every endpoint, and connections
/// are handed out round-robin, so fewer connections than endpoints would leave the last ones
/// unloaded.
fn connections_for(target: Target, asked: usize, endpoints: usize) -> usize {
    match target {
        Target::All | Target::Ranges => asked.max(endpoints),
        Target::Leader => asked,
    }
}

/// `conns` as [`client::connect_all`] spread them over `endpoints` endpoints, regrouped by
/// endpoint (connection i went to endpoint i mod endpoints).
fn by_endpoint(conns: Vec<conn::Connection>, endpoints: usize) -> Vec<Vec<conn::Connection>> {
    let mut grouped: Vec<Vec<conn::Connection>> = (0..endpoints).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        grouped[i % endpoints].push(c);
    }
    grouped
}

/// Connects, preloads if the workload reads, and runs every in-flight level in order.
/// Must run inside a tokio runtime (current-thread or multi-thread) with time and I/O enabled.
pub async fn bench(args: &BenchArgs) -> anyhow::Result<Report> {
    args.validate()?;
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tls = args.tls_connector()?;
    let uris: Vec<String> = args
        .endpoints
        .iter()
        .map(|e| client::normalize_endpoint_as(e, tls.is_some()))
        .collect();
    let tls = tls.as_ref();
    // With `--target ranges`, one endpoint per range: ranges on one member share its
    // connections.
    let (distinct, endpoint_of) = route::distinct_endpoints(&uris);
    let targets = match args.target {
        Target::All => uris.clone(),
        Target::Ranges => distinct,
        Target::Leader => vec![client::find_leader(&uris, args.request_timeout, tls).await?],
    };
    let connections = connections_for(args.target, args.connections, targets.len());
    let conns = client::connect_all(&targets, connections, args.request_timeout, tls).await?;
    let routes = match args.target {
        Target::Ranges => route::Routes::by_range(
            args.route_splits
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            by_endpoint(conns, targets.len()),
            endpoint_of,
        ),
        Target::All | Target::Leader => route::Routes::single(conns),
    };

    let mut plan = runner::Plan::new(
        args.workload,
        args.read_ratio,
        keys::KeySpace::new(args.keys, args.key_size)?,
        keys::ValuePool::new(args.value_size, args.seed),
        KeyChooser::new(args.keys, args.distribution(), args.hot_key_pct),
        args.seed,
    );
    let watchers = if args.watchers > 0 {
        let w = watchers::Watchers::start(
            &uris,
            args.watchers,
            args.watch_connections,
            std::time::Instant::now(),
        )
        .await?;
        plan = plan.with_stamps(w.epoch());
        Some(Arc::new(w))
    } else {
        None
    };
    let plan = Arc::new(plan);
    let progress = args.progress || std::io::stderr().is_terminal();
    if args.workload.needs_preload() {
        let t0 = std::time::Instant::now();
        runner::preload(&plan, &routes).await?;
        if progress {
            eprintln!(
                "[{}] preloaded {} keys in {:.1} s",
                args.label,
                args.keys,
                t0.elapsed().as_secs_f64()
            );
        }
    }

    let mut results = Vec::new();
    for in_flight in args.levels() {
        let spec = runner::LevelSpec {
            in_flight,
            stop_after: args.stop_after(),
            warmup: args.warmup,
            rate_ops_s: args.rate,
            progress,
            label: args.label.clone(),
            watchers: watchers.clone(),
        };
        results.push(runner::run_level(&plan, &routes, &spec).await);
    }

    Ok(Report {
        label: args.label.clone(),
        workload: args.workload.name().to_string(),
        endpoints: args.endpoints.clone(),
        targets,
        route_splits: args.route_splits.clone(),
        connections: routes.connections(),
        client_threads: args.client_threads,
        keys: args.keys,
        key_dist: match args.key_dist {
            KeyDist::Uniform => "uniform".to_string(),
            KeyDist::Zipfian => format!("zipfian(s={})", args.zipf_s),
        },
        hot_key_pct: args.hot_key_pct,
        key_size: args.key_size,
        value_size: args.value_size,
        read_ratio: (args.workload == Workload::Mixed).then_some(args.read_ratio),
        rate_ops_s: args.rate,
        warmup_s: args.warmup.as_secs_f64(),
        seed: args.seed,
        started_unix_s,
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_all_opens_a_connection_to_every_endpoint() {
        assert_eq!(connections_for(Target::All, 1, 3), 3);
        assert_eq!(connections_for(Target::All, 8, 3), 8);
        assert_eq!(connections_for(Target::Leader, 1, 1), 1);
    }
}
