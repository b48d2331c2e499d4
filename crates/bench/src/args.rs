//! The options of `synod bench`, as a `clap::Args` the `synod` binary flattens into its own
//! parser, plus their validation (ranges, limits) so a bad flag is a clear error before any
//! connection is made.

use crate::keys::Distribution;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Largest key space: keys and their revision cache are held in memory (16 bytes per key at the
/// default size), so ten million keys cost about 160 MB.
pub const KEYS_MAX: u64 = 10_000_000;
/// Largest key: etcd itself accepts larger, but nothing a benchmark needs.
pub const KEY_BYTES_MAX: usize = 4096;
/// Largest value: etcd's default request limit is 1.5 MiB; stay under it with room for the key.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Most outstanding requests in one level (one tokio task each).
pub const IN_FLIGHT_MAX: usize = 10_000;
/// Most gRPC channels (TCP connections) one run opens.
pub const CONNECTIONS_MAX: usize = 1024;
/// Most threads `--client-threads` may ask for.
pub const CLIENT_THREADS_MAX: usize = 256;
/// Most levels in one `--sweep`.
pub const SWEEP_LEVELS_MAX: usize = 64;

/// The operation mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Put a value to a key.
    Put,
    /// Linearizable Range of one key.
    Get,
    /// Serializable (member-local, possibly stale) Range of one key.
    GetSerializable,
    /// Compare-and-swap Txn: if mod_revision(key) == last seen, put; else read the key (which
    /// refreshes the revision for the next attempt). Conflicts are counted, not errors.
    TxnCas,
    /// Linearizable gets and puts, `--read-ratio` of them gets.
    Mixed,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::GetSerializable => "get-serializable",
            Workload::TxnCas => "txn-cas",
            Workload::Mixed => "mixed",
        }
    }

    /// Whether the key space is written once before measuring: reads of missing keys are cheaper
    /// than reads of real values, and CAS needs revisions to compare against.
    pub fn needs_preload(self) -> bool {
        !matches!(self, Workload::Put)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDist {
    Uniform,
    Zipfian,
}

/// Which members receive requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Only the member whose Maintenance.Status says it is the leader.
    Leader,
    /// Every endpoint: connections are spread round-robin over them, at least one each (so
    /// `--connections` below the number of endpoints is raised to it). Request slot i uses
    /// connection i mod connections, so `--in-flight` below the number of endpoints leaves some
    /// idle. The way to load every member of a leaderless engine (epaxos, caspaxos).
    All,
    /// Each key to the endpoint of its range: `--route-splits` cuts the key space into one
    /// range per endpoint, in order (a split key is the first key of its range), and
    /// `--connections` are shared out over the distinct endpoints, at least one each (ranges
    /// on one endpoint share its connections). The client of a partitioned cluster that knows
    /// its layout and sends each key to its group's leader.
    Ranges,
}

/// `synod bench`: drive an etcd v3 gRPC endpoint (Synod or etcd) with a closed-loop workload
/// and report throughput and latency percentiles.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// etcd v3 gRPC endpoints, host:port (http:// optional), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Operation mix.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Fraction of reads in the mixed workload.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value_t = KeyDist::Uniform)]
    pub key_dist: KeyDist,
    /// Zipfian exponent (0 = uniform; larger = more skewed).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_s: f64,
    /// Percentage (0-100) of operations that go to one hot key (key 0), to provoke conflicts:
    /// on EPaxos, concurrent writes of one key at different members interfere and take the
    /// slow path. The rest are drawn from --key-dist over the whole key space.
    #[arg(long, default_value_t = 0.0)]
    pub hot_key_pct: f64,
    /// Key size in bytes (keys are zero-padded decimal indexes).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Outstanding requests in total (closed loop: each sends its next request when the
    /// previous reply arrives).
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// gRPC channels (TCP connections); requests are spread over them.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Threads the client runs its workers on. 1 runs them all on one thread, which costs the
    /// least CPU per request and so leaves the most to servers sharing the machine; raise it
    /// only if the client itself is the bottleneck (one core busy with `synod bench`).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Send to the leader only, to every endpoint, or each key to its range's endpoint
    /// (`ranges`). Members of EPaxos each report themselves as leader, so `leader` drives the
    /// first endpoint only; use `all`.
    #[arg(long, value_enum, default_value_t = Target::Leader)]
    pub target: Target,
    /// With `--target ranges`: the split keys, ascending, one fewer than `--endpoints`.
    #[arg(long, value_delimiter = ',')]
    pub route_splits: Vec<String>,
    /// Stop after this many measured operations (errors included).
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Measure for this long (e.g. 10s, 500ms, 2m). Default 10s when --count is not given.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Limit the offered load to this many operations per second in total.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Run the workload this long before measuring, unrecorded.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// Run once per in-flight level, e.g. 1,4,16,64 (overrides --in-flight).
    #[arg(long, value_delimiter = ',')]
    pub sweep: Option<Vec<usize>>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Plot throughput against p99 latency across the levels to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Name tagging the results (e.g. synod, etcd).
    #[arg(long, default_value = "bench")]
    pub label: String,
    /// Seed for keys, values and the operation sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Show the per-second progress line even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Per-request deadline; a request that takes longer is abandoned and counted as an error
    /// (tonic reports it as Cancelled, "Timeout expired"). Checked on a coarse clock: a request
    /// gives up after between 1 and 1.125 times this.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
    /// TLS: trust this PEM CA for the servers (etcdctl's flag); endpoints without a scheme
    /// become https://. Not with --watchers (their streams are plain).
    #[arg(long)]
    pub cacert: Option<std::path::PathBuf>,
    /// TLS: present this PEM client certificate (with --key).
    #[arg(long)]
    pub cert: Option<std::path::PathBuf>,
    /// TLS: the PEM key of --cert.
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
    /// Watchers over the whole keyspace, held open during the run on every endpoint; the
    /// table then adds events delivered per second and fan-out latency (put sent → event).
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// Watch streams (each its own connection) the watchers are spread over.
    #[arg(long, default_value_t = 4)]
    pub watch_connections: usize,
}

/// How long a run measures when neither --count nor --duration is given.
pub const DEFAULT_DURATION_S: u64 = 10;

/// When a level stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAfter {
    Count(u64),
    Duration(Duration),
}

impl BenchArgs {
    /// The TLS connector of --cacert/--cert/--key (ALPN h2), if given.
    pub fn tls_connector(&self) -> anyhow::Result<Option<tokio_rustls::TlsConnector>> {
        let Some(ca) = &self.cacert else {
            anyhow::ensure!(
                self.cert.is_none() && self.key.is_none(),
                "--cert and --key need --cacert"
            );
            return Ok(None);
        };
        anyhow::ensure!(self.watchers == 0, "--watchers do not speak TLS yet");
        let files = synod_node::tls::TlsFiles {
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            trusted_ca_file: Some(ca.clone()),
            client_cert_auth: false,
            allowed_cn: None,
        };
        let config = synod_node::tls::client_config(&files, &[synod_node::tls::ALPN_H2])?;
        Ok(Some(tokio_rustls::TlsConnector::from(config)))
    }
    /// Checks every option's range; the message names the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(
            !self.endpoints.is_empty(),
            "--endpoints needs at least one endpoint"
        );
        ensure!(
            self.watchers == 0 || (self.value_size >= 8 && self.watch_connections >= 1),
            "--watchers needs --value-size of at least 8 (the send time rides in the value) \
             and --watch-connections of at least 1"
        );
        ensure!(
            self.endpoints.iter().all(|e| !e.trim().is_empty()),
            "--endpoints has an empty entry"
        );
        if self.target == Target::Ranges {
            ensure!(
                self.route_splits.len() + 1 == self.endpoints.len(),
                "--target ranges needs one endpoint per range: {} split keys make {} ranges, \
                 got {} endpoints",
                self.route_splits.len(),
                self.route_splits.len() + 1,
                self.endpoints.len()
            );
            ensure!(
                self.route_splits.windows(2).all(|w| w[0] < w[1]),
                "--route-splits must be ascending and distinct"
            );
        } else {
            ensure!(
                self.route_splits.is_empty(),
                "--route-splits goes with --target ranges"
            );
        }
        ensure!(
            (0.0..=1.0).contains(&self.read_ratio),
            "--read-ratio must be between 0 and 1, got {}",
            self.read_ratio
        );
        ensure!(
            (1..=KEYS_MAX).contains(&self.keys),
            "--keys must be between 1 and {KEYS_MAX}"
        );
        ensure!(
            self.zipf_s.is_finite() && self.zipf_s >= 0.0,
            "--zipf-s must be a finite number >= 0, got {}",
            self.zipf_s
        );
        ensure!(
            (0.0..=100.0).contains(&self.hot_key_pct),
            "--hot-key-pct must be between 0 and 100, got {}",
            self.hot_key_pct
        );
        ensure!(
            (1..=KEY_BYTES_MAX).contains(&self.key_size),
            "--key-size must be between 1 and {KEY_BYTES_MAX}"
        );
        ensure!(
            self.value_size <= VALUE_BYTES_MAX,
            "--value-size must be at most {VALUE_BYTES_MAX}"
        );
        for level in self.levels() {
            ensure!(
                (1..=IN_FLIGHT_MAX).contains(&level),
                "in-flight levels must be between 1 and {IN_FLIGHT_MAX}, got {level}"
            );
        }
        if let Some(sweep) = &self.sweep {
            ensure!(!sweep.is_empty(), "--sweep needs at least one level");
            ensure!(
                sweep.len() <= SWEEP_LEVELS_MAX,
                "--sweep takes at most {SWEEP_LEVELS_MAX} levels"
            );
        }
        ensure!(
            (1..=CONNECTIONS_MAX).contains(&self.connections),
            "--connections must be between 1 and {CONNECTIONS_MAX}"
        );
        ensure!(
            (1..=CLIENT_THREADS_MAX).contains(&self.client_threads),
            "--client-threads must be between 1 and {CLIENT_THREADS_MAX}"
        );
        if let Some(count) = self.count {
            ensure!(count >= 1, "--count must be at least 1");
        }
        if let Some(d) = self.duration {
            ensure!(!d.is_zero(), "--duration must be more than zero");
        }
        if let Some(rate) = self.rate {
            ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number, got {rate}"
            );
        }
        ensure!(
            !self.request_timeout.is_zero(),
            "--request-timeout must be more than zero"
        );
        Ok(())
    }

    /// The in-flight levels to run, in order.
    pub fn levels(&self) -> Vec<usize> {
        match &self.sweep {
            Some(levels) => levels.clone(),
            None => vec![self.in_flight],
        }
    }

    pub fn stop_after(&self) -> StopAfter {
        match (self.count, self.duration) {
            (Some(n), _) => StopAfter::Count(n),
            (None, Some(d)) => StopAfter::Duration(d),
            (None, None) => StopAfter::Duration(Duration::from_secs(DEFAULT_DURATION_S)),
        }
    }

    pub fn distribution(&self) -> Distribution {
        match self.key_dist {
            KeyDist::Uniform => Distribution::Uniform,
            KeyDist::Zipfian => Distribution::Zipfian(self.zipf_s),
        }
    }
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `250us` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{s}` (use h, m, s, ms, us)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let a = parse(&[]).expect("no flags parse");
        assert_eq!(a.endpoints, vec!["127.0.0.1:2379"]);
        assert_eq!(a.workload, Workload::Put);
        assert_eq!((a.key_size, a.value_size), (8, 256));
        assert_eq!(a.target, Target::Leader);
        assert_eq!(a.client_threads, 1);
        assert_eq!(a.warmup, Duration::from_secs(2));
        assert_eq!(
            a.stop_after(),
            StopAfter::Duration(Duration::from_secs(DEFAULT_DURATION_S))
        );
        assert_eq!(a.levels(), vec![16]);
        a.validate().expect("defaults are valid");
    }

    #[test]
    fn every_option_parses() {
        let a = parse(&[
            "--endpoints",
            "a:1,http://b:2",
            "--workload",
            "get-serializable",
            "--read-ratio",
            "0.5",
            "--keys",
            "100",
            "--key-dist",
            "zipfian",
            "--zipf-s",
            "1.2",
            "--hot-key-pct",
            "10",
            "--key-size",
            "16",
            "--value-size",
            "1024",
            "--connections",
            "4",
            "--client-threads",
            "2",
            "--target",
            "all",
            "--duration",
            "1500ms",
            "--rate",
            "1000",
            "--warmup",
            "0s",
            "--sweep",
            "1,4,16,64",
            "--json",
            "out.json",
            "--plot",
            "out.svg",
            "--label",
            "etcd",
            "--seed",
            "9",
            "--progress",
            "--request-timeout",
            "3s",
        ])
        .expect("all flags parse");
        assert_eq!(a.endpoints, vec!["a:1", "http://b:2"]);
        assert_eq!(a.workload, Workload::GetSerializable);
        assert_eq!(a.distribution(), Distribution::Zipfian(1.2));
        assert_eq!(a.hot_key_pct, 10.0);
        assert_eq!(a.target, Target::All);
        assert_eq!(a.client_threads, 2);
        assert_eq!(
            a.stop_after(),
            StopAfter::Duration(Duration::from_millis(1500))
        );
        assert_eq!(a.rate, Some(1000.0));
        assert_eq!(a.levels(), vec![1, 4, 16, 64]);
        assert_eq!(a.json.as_deref(), Some(std::path::Path::new("out.json")));
        assert_eq!(a.label, "etcd");
        assert!(a.progress);
        a.validate().expect("valid");

        for w in ["put", "get", "get-serializable", "txn-cas", "mixed"] {
            let a = parse(&["--workload", w]).expect("workload parses");
            assert_eq!(a.workload.name(), w);
        }
        let a = parse(&["--count", "200", "--in-flight", "3"]).expect("count parses");
        assert_eq!(a.stop_after(), StopAfter::Count(200));
        assert_eq!(a.levels(), vec![3]);
    }

    #[test]
    fn bad_options_are_rejected_with_the_flag_named() {
        assert!(parse(&["--workload", "scan"]).is_err());
        assert!(
            parse(&["--count", "5", "--duration", "1s"]).is_err(),
            "count and duration conflict"
        );
        assert!(parse(&["--duration", "ten"]).is_err());
        let invalid = |args: &[&str], flag: &str| {
            let a = parse(args).expect("parses");
            let err = a.validate().expect_err("must be invalid").to_string();
            assert!(err.contains(flag), "error `{err}` should name {flag}");
        };
        invalid(&["--read-ratio", "1.5"], "--read-ratio");
        invalid(&["--keys", "0"], "--keys");
        invalid(&["--hot-key-pct", "101"], "--hot-key-pct");
        invalid(&["--key-size", "0"], "--key-size");
        invalid(&["--connections", "0"], "--connections");
        invalid(&["--client-threads", "0"], "--client-threads");
        invalid(&["--in-flight", "0"], "in-flight");
        invalid(&["--sweep", "1,0"], "in-flight");
        invalid(&["--rate", "0"], "--rate");
        invalid(&["--count", "0"], "--count");
        invalid(&["--duration", "0s"], "--duration");
        invalid(&["--zipf-s=-1"], "--zipf-s");
        invalid(&["--value-size", "2000000"], "--value-size");
        invalid(&["--route-splits", "m"], "--route-splits");
        invalid(
            &[
                "--target",
                "ranges",
                "--endpoints",
                "a:1,b:2",
                "--route-splits",
                "m,t",
            ],
            "--target ranges",
        );
        invalid(
            &[
                "--target",
                "ranges",
                "--endpoints",
                "a:1,b:2,c:3",
                "--route-splits",
                "t,m",
            ],
            "--route-splits",
        );
    }

    #[test]
    fn ranges_take_one_endpoint_each() {
        let a = parse(&[
            "--target",
            "ranges",
            "--endpoints",
            "a:1,b:2,a:1",
            "--route-splits",
            "00003333,00006666",
        ])
        .expect("parses");
        assert_eq!(a.target, Target::Ranges);
        assert_eq!(a.route_splits, vec!["00003333", "00006666"]);
        a.validate().expect("valid");
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
