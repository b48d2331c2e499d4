//! `synod bench` against a REAL etcd: starts a single-member etcd from PATH on free loopback
//! ports with a temporary data dir, runs tiny put / get / txn-cas / mixed runs and a sweep, and
//! checks the counts, the absence of errors, the preload, and the JSON and SVG outputs; and two
//! of them behind `--target ranges`, to see each key land at its range's endpoint.
//!
//! etcd is not installed by the test. On Debian: `apt-get install -y etcd-server etcd-client`.
//! Without it the test fails loudly, unless SYNOD_ALLOW_MISSING_ETCD=1 says that is expected.

use clap::Parser;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use synod_bench::{BenchArgs, Report};
use synod_etcd::pb::etcdserverpb::kv_client::KvClient;
use synod_etcd::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_etcd::pb::etcdserverpb::{RangeRequest, StatusRequest};

/// How long etcd may take to elect itself and serve.
const ETCD_READY_TIMEOUT_MS: u64 = 30_000;
/// etcd starts before giving up on ports nobody else takes between our pick and its bind.
const ETCD_START_ATTEMPTS_MAX: usize = 5;
/// Operations per tiny run.
const COUNT: u64 = 200;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn bench_args(args: &[&str]) -> BenchArgs {
    match Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())) {
        Ok(cli) => cli.bench,
        Err(e) => panic!("test passes valid flags, clap said: {e}"),
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports: every probe socket is held until all are picked, so two
/// picks cannot return the same port.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("loopback bind"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("bound socket has an address").port())
        .collect()
}

/// The etcd child; killed (and reaped) however the test ends.
struct Etcd {
    child: Child,
    client_addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd(etcd: &Path) -> Etcd {
    let data = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(2);
    let (client, peer) = (ports[0], ports[1]);
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(data.path().join("etcd.log")).expect("log file");
    let child = Command::new(etcd)
        .args(["--name", "bench-test", "--data-dir"])
        .arg(data.path().join("member"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("bench-test={peer_url}")])
        .args(["--initial-cluster-state", "new", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("etcd starts");
    Etcd {
        child,
        client_addr: format!("127.0.0.1:{client}"),
        _data: data,
    }
}

/// Starts etcd and waits until it serves, on new ports while the ones picked are taken by
/// someone else before etcd binds them (the pick releases them first).
fn start_ready_etcd(rt: &tokio::runtime::Runtime, etcd_bin: &Path) -> Etcd {
    for attempt in 1..=ETCD_START_ATTEMPTS_MAX {
        let mut etcd = start_etcd(etcd_bin);
        match wait_ready(rt, &mut etcd) {
            Ok(()) => return etcd,
            Err(log) if log.contains("address already in use") => {
                eprintln!("etcd start attempt {attempt}: a port was taken; retrying on new ports");
            }
            Err(log) => panic!("etcd exited during start-up:\n{log}"),
        }
    }
    panic!("etcd found no free ports in {ETCD_START_ATTEMPTS_MAX} attempts");
}

/// Waits until etcd answers Maintenance.Status with itself as leader; if it exits instead,
/// returns its exit status and log.
fn wait_ready(rt: &tokio::runtime::Runtime, etcd: &mut Etcd) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_millis(ETCD_READY_TIMEOUT_MS);
    let uri = format!("http://{}", etcd.client_addr);
    loop {
        let ready = rt.block_on(async {
            let mut c = MaintenanceClient::connect(uri.clone()).await.ok()?;
            let s = c.status(StatusRequest {}).await.ok()?.into_inner();
            Some(s.leader != 0 && s.header.map(|h| h.member_id) == Some(s.leader))
        });
        if ready == Some(true) {
            return Ok(());
        }
        if let Ok(Some(status)) = etcd.child.try_wait() {
            let log =
                std::fs::read_to_string(etcd._data.path().join("etcd.log")).unwrap_or_default();
            return Err(format!("({status})\n{log}"));
        }
        assert!(
            Instant::now() < deadline,
            "etcd not ready within {ETCD_READY_TIMEOUT_MS} ms"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_report(path: &Path) -> Report {
    let text = std::fs::read_to_string(path).expect("--json file written");
    // Parsable as plain JSON (what other tools see) and as our own Report type.
    let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(value["results"].is_array(), "results array in {text}");
    serde_json::from_value(value).expect("JSON matches Report")
}

#[test]
fn bench_drives_a_real_etcd() {
    let Some(etcd_bin) = etcd_or_skip() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = start_ready_etcd(&rt, &etcd_bin);
    let out = tempfile::tempdir().expect("temp dir");
    let count = COUNT.to_string();

    for (workload, extra) in [
        ("put", &[][..]),
        ("get", &[][..]),
        ("get-serializable", &["--target", "all"][..]),
        ("txn-cas", &["--hot-key-pct", "50"][..]),
        (
            "mixed",
            &["--read-ratio", "0.7", "--key-dist", "zipfian"][..],
        ),
    ] {
        let json = out.path().join(format!("{workload}.json"));
        let json_arg = json.to_string_lossy().into_owned();
        let mut flags = vec![
            "--endpoints",
            &etcd.client_addr,
            "--workload",
            workload,
            "--count",
            &count,
            "--in-flight",
            "8",
            "--connections",
            "2",
            "--keys",
            "100",
            "--warmup",
            "0s",
            "--json",
            &json_arg,
            "--label",
            "etcd-test",
        ];
        flags.extend_from_slice(extra);
        synod_bench::run(bench_args(&flags)).unwrap_or_else(|e| panic!("{workload}: {e:#}"));

        let report = read_report(&json);
        assert_eq!(report.label, "etcd-test");
        assert_eq!(report.workload, workload);
        assert_eq!(report.results.len(), 1);
        let r = &report.results[0];
        assert_eq!(r.errors, 0, "{workload}: errors {:?}", r.errors_by_code);
        assert_eq!(r.ops, COUNT, "{workload}: every counted op succeeded");
        assert_eq!(r.latency.samples, COUNT);
        assert!(r.throughput_ops_s > 0.0);
        assert!(r.latency.p50_ms > 0.0 && r.latency.p50_ms <= r.latency.p99_ms);
        assert!(r.latency.p99_ms <= r.latency.max_ms);
        if workload == "txn-cas" {
            let (held, conflicts) = (
                r.cas_succeeded.expect("cas counts"),
                r.cas_failed.expect("cas counts"),
            );
            assert_eq!(held + conflicts, COUNT);
            assert!(
                held > 0,
                "with revisions from the preload most compares hold"
            );
        } else {
            assert_eq!(r.cas_succeeded, None);
        }
    }

    // The get runs preloaded every key with a value of --value-size bytes.
    let value = rt.block_on(async {
        let mut kv = KvClient::connect(format!("http://{}", etcd.client_addr))
            .await
            .expect("connect");
        let resp = kv
            .range(RangeRequest {
                key: b"00000099".to_vec(),
                ..Default::default()
            })
            .await;
        resp.expect("range")
            .into_inner()
            .kvs
            .into_iter()
            .next()
            .map(|kv| kv.value)
    });
    assert_eq!(value.map(|v| v.len()), Some(256), "key 99 was preloaded");

    // A sweep writes one result per level and a plot.
    let json = out.path().join("sweep.json");
    let svg = out.path().join("sweep.svg");
    let (json_arg, svg_arg) = (
        json.to_string_lossy().into_owned(),
        svg.to_string_lossy().into_owned(),
    );
    synod_bench::run(bench_args(&[
        "--endpoints",
        &etcd.client_addr,
        "--workload",
        "put",
        "--count",
        "100",
        "--sweep",
        "1,4",
        "--warmup",
        "0s",
        "--json",
        &json_arg,
        "--plot",
        &svg_arg,
    ]))
    .expect("sweep runs");
    let report = read_report(&json);
    let levels: Vec<usize> = report.results.iter().map(|r| r.in_flight).collect();
    assert_eq!(levels, vec![1, 4]);
    assert!(report.results.iter().all(|r| r.ops == 100 && r.errors == 0));
    let plot = std::fs::read_to_string(&svg).expect("plot written");
    assert!(
        plot.contains("<svg") && plot.contains("p99 latency"),
        "an SVG with the axis label"
    );
}

/// The etcd on PATH; without it a loud banner, then a failure, or None (skip) when
/// SYNOD_ALLOW_MISSING_ETCD=1 says that is expected.
fn etcd_or_skip() -> Option<PathBuf> {
    let found = find_on_path("etcd");
    if found.is_none() {
        let banner = "#".repeat(78);
        eprintln!(
            "\n{banner}\n# etcd NOT FOUND on PATH: the synod-bench etcd integration tests cannot run.\n\
             # Install it with: apt-get update && apt-get install -y etcd-server etcd-client\n{banner}\n"
        );
        if std::env::var("SYNOD_ALLOW_MISSING_ETCD").as_deref() != Ok("1") {
            panic!("etcd not found on PATH (set SYNOD_ALLOW_MISSING_ETCD=1 to skip deliberately)");
        }
    }
    found
}

/// The keys an etcd holds, in order.
fn keys_of(rt: &tokio::runtime::Runtime, etcd: &Etcd) -> Vec<String> {
    rt.block_on(async {
        let mut kv = KvClient::connect(format!("http://{}", etcd.client_addr))
            .await
            .expect("connect");
        let resp = kv
            .range(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                keys_only: true,
                ..Default::default()
            })
            .await
            .expect("range");
        resp.into_inner()
            .kvs
            .into_iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    })
}

/// `--target ranges` sends each key to its range's endpoint: two separate etcds (not a
/// cluster), the first serving the ranges below 00000030 and from 00000070 on (one endpoint
/// for two ranges, as a member leading two groups), the second the range between, end up
/// holding exactly the keys of their ranges.
#[test]
fn target_ranges_sends_each_key_to_its_ranges_endpoint() {
    let Some(etcd_bin) = etcd_or_skip() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (low, high) = (
        start_ready_etcd(&rt, &etcd_bin),
        start_ready_etcd(&rt, &etcd_bin),
    );
    let endpoints = format!(
        "{},{},{}",
        low.client_addr, high.client_addr, low.client_addr
    );
    // The get workload preloads every key first, through the same routes as the run.
    synod_bench::run(bench_args(&[
        "--endpoints",
        &endpoints,
        "--target",
        "ranges",
        "--route-splits",
        "00000030,00000070",
        "--workload",
        "get",
        "--keys",
        "100",
        "--count",
        "200",
        "--in-flight",
        "8",
        "--connections",
        "3",
        "--warmup",
        "0s",
    ]))
    .expect("routed run");
    let all: Vec<String> = (0..100).map(|i| format!("{i:08}")).collect();
    let outer: Vec<String> = all[..30].iter().chain(&all[70..]).cloned().collect();
    assert_eq!(keys_of(&rt, &low), outer);
    assert_eq!(keys_of(&rt, &high), all[30..70]);
}

#[test]
fn unreachable_endpoints_fail_with_a_clear_error() {
    let port = free_port(); // nothing listens there once the probe socket is dropped
    let endpoint = format!("127.0.0.1:{port}");
    let err = synod_bench::run(bench_args(&["--endpoints", &endpoint, "--count", "1"]))
        .expect_err("no server");
    assert!(
        format!("{err:#}").contains("no endpoint reports itself as the leader"),
        "{err:#}"
    );
    let err = synod_bench::run(bench_args(&[
        "--endpoints",
        &endpoint,
        "--count",
        "1",
        "--target",
        "all",
    ]))
    .expect_err("no server");
    assert!(format!("{err:#}").contains("cannot connect"), "{err:#}");
}
