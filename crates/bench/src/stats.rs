//! Results: per-worker statistics merged into one level result, latency percentiles from an HDR
//! histogram, the JSON report, and the final table.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Highest latency the histogram resolves: anything slower is recorded as this (and the request
/// deadline is far below it anyway).
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits kept per recorded value: 0.1% error at ~190 KB per histogram.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram in nanoseconds.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants inside hdrhistogram's documented range, so this cannot fail.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// What one worker task measured.
#[derive(Debug)]
pub struct WorkerStats {
    pub latency_ns: Histogram<u64>,
    pub ops: u64,
    /// Failed measured requests by gRPC code name (`Unavailable`, `DeadlineExceeded`, …).
    pub errors: BTreeMap<String, u64>,
    /// Failed requests during warm-up: not part of the result, but reported.
    pub warmup_errors: u64,
    pub cas_succeeded: u64,
    pub cas_failed: u64,
}

impl WorkerStats {
    pub fn new() -> Self {
        Self {
            latency_ns: new_histogram(),
            ops: 0,
            errors: BTreeMap::new(),
            warmup_errors: 0,
            cas_succeeded: 0,
            cas_failed: 0,
        }
    }

    pub fn merge(&mut self, other: &WorkerStats) {
        // Same bounds on both sides, so adding cannot fail.
        self.latency_ns
            .add(&other.latency_ns)
            .expect("histograms share bounds");
        self.ops += other.ops;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        self.warmup_errors += other.warmup_errors;
        self.cas_succeeded += other.cas_succeeded;
        self.cas_failed += other.cas_failed;
    }
}

impl Default for WorkerStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency percentiles in milliseconds, from send to response, of successful requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        if h.is_empty() {
            return Self {
                samples: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        Self {
            samples: h.len(),
            mean_ms: h.mean() / 1e6,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One in-flight level of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelResult {
    pub workload: String,
    pub in_flight: usize,
    /// Successful measured operations.
    pub ops: u64,
    /// Failed measured operations, total and by gRPC code.
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub warmup_errors: u64,
    pub elapsed_s: f64,
    /// Successful operations per second of measured time.
    pub throughput_ops_s: f64,
    pub latency: LatencySummary,
    /// txn-cas only: compare held (the put happened) / compare failed (a conflict).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cas_succeeded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cas_failed: Option<u64>,
    /// `--watchers`: what the watchers received during the measured time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub watch: Option<crate::watchers::WatchSummary>,
}

impl LevelResult {
    pub fn new(
        workload: &str,
        in_flight: usize,
        stats: &WorkerStats,
        elapsed: Duration,
        cas: bool,
    ) -> Self {
        let elapsed_s = elapsed.as_secs_f64();
        let errors = stats.errors.values().sum();
        Self {
            workload: workload.to_string(),
            in_flight,
            ops: stats.ops,
            errors,
            errors_by_code: stats.errors.clone(),
            warmup_errors: stats.warmup_errors,
            elapsed_s,
            throughput_ops_s: if elapsed_s > 0.0 {
                stats.ops as f64 / elapsed_s
            } else {
                0.0
            },
            latency: LatencySummary::from_histogram(&stats.latency_ns),
            cas_succeeded: cas.then_some(stats.cas_succeeded),
            cas_failed: cas.then_some(stats.cas_failed),
            watch: None,
        }
    }
}

/// Everything a run produced, as written by `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub workload: String,
    pub endpoints: Vec<String>,
    /// The endpoints actually driven (the leader alone with `--target leader`).
    pub targets: Vec<String>,
    /// `--route-splits` of `--target ranges`: target i took the keys from split i - 1 to split i.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_splits: Vec<String>,
    pub connections: usize,
    /// `--client-threads`; 0 in reports written before the option existed.
    #[serde(default)]
    pub client_threads: usize,
    pub keys: u64,
    pub key_dist: String,
    pub hot_key_pct: f64,
    pub key_size: usize,
    pub value_size: usize,
    pub read_ratio: Option<f64>,
    pub rate_ops_s: Option<f64>,
    pub warmup_s: f64,
    pub seed: u64,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    pub results: Vec<LevelResult>,
}

/// The line above the table: what was driven and how keys were chosen, so a pasted table
/// says whether its run had a hot key and loaded every member.
pub fn format_run(r: &Report) -> String {
    format!(
        "{}: {} to {} endpoint{} ({} connection{}), {} keys {}, hot key {}% of operations\n",
        r.label,
        r.workload,
        r.targets.len(),
        if r.targets.len() == 1 { "" } else { "s" },
        r.connections,
        if r.connections == 1 { "" } else { "s" },
        r.keys,
        r.key_dist,
        // f64's Display is the shortest exact form: 20 prints as 20, 0.5 as 0.5.
        r.hot_key_pct,
    )
}

/// The final table: one row per level, then one line per error code.
pub fn format_table(label: &str, results: &[LevelResult]) -> String {
    let mut out = String::new();
    let lw = label.len().max("label".len());
    let _ = writeln!(
        out,
        "{:<lw$} {:<17} {:>9} {:>10} {:>7} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "label",
        "workload",
        "in-flight",
        "ops",
        "errors",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms"
    );
    for r in results {
        let l = &r.latency;
        let _ = writeln!(
            out,
            "{:<lw$} {:<17} {:>9} {:>10} {:>7} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            label,
            r.workload,
            r.in_flight,
            r.ops,
            r.errors,
            r.throughput_ops_s,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms
        );
    }
    for r in results {
        for (code, n) in &r.errors_by_code {
            let _ = writeln!(out, "  errors at in-flight {}: {code} × {n}", r.in_flight);
        }
        if r.warmup_errors > 0 {
            let _ = writeln!(
                out,
                "  errors during warm-up at in-flight {}: {}",
                r.in_flight, r.warmup_errors
            );
        }
        if let (Some(ok), Some(failed)) = (r.cas_succeeded, r.cas_failed) {
            let _ = writeln!(
                out,
                "  txn-cas at in-flight {}: {ok} compares held, {failed} conflicts",
                r.in_flight
            );
        }
        if let Some(w) = &r.watch {
            let _ = writeln!(
                out,
                "  {} watchers at in-flight {}: {} events, {:.0} events/s, fan-out p50 {:.2} ms \
                 p99 {:.2} ms max {:.2} ms",
                w.watchers,
                r.in_flight,
                w.events,
                w.events_per_s,
                w.fanout.p50_ms,
                w.fanout.p99_ms,
                w.fanout.max_ms
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_percentiles_in_milliseconds() {
        let mut h = new_histogram();
        // 1..=1000 µs: p50 ≈ 0.5 ms, p90 ≈ 0.9 ms, p99 ≈ 0.99 ms, max 1 ms.
        for us in 1..=1000u64 {
            h.record(us * 1000).expect("in range");
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.samples, 1000);
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(near(s.p50_ms, 0.5), "p50 {}", s.p50_ms);
        assert!(near(s.p90_ms, 0.9), "p90 {}", s.p90_ms);
        assert!(near(s.p99_ms, 0.99), "p99 {}", s.p99_ms);
        assert!(near(s.p999_ms, 0.999), "p99.9 {}", s.p999_ms);
        assert!(near(s.max_ms, 1.0), "max {}", s.max_ms);
        assert!(near(s.mean_ms, 0.5005), "mean {}", s.mean_ms);
    }

    #[test]
    fn summary_of_nothing_is_zero_and_outliers_are_kept() {
        let s = LatencySummary::from_histogram(&new_histogram());
        assert_eq!((s.samples, s.p99_ms, s.max_ms), (0, 0.0, 0.0));

        let mut h = new_histogram();
        for _ in 0..999 {
            h.record(1_000_000).expect("in range");
        }
        h.record(2_000_000_000).expect("in range");
        let s = LatencySummary::from_histogram(&h);
        assert!(
            (s.p99_ms - 1.0).abs() < 0.01,
            "one outlier in 1000 is not the p99"
        );
        assert!(
            (s.max_ms - 2000.0).abs() < 2.0,
            "but it is the max: {}",
            s.max_ms
        );
    }

    #[test]
    fn merged_workers_add_up_and_table_shows_errors() {
        let mut a = WorkerStats::new();
        let mut b = WorkerStats::new();
        a.latency_ns.record(1_000_000).expect("in range");
        a.ops = 1;
        b.latency_ns.record(3_000_000).expect("in range");
        b.ops = 1;
        b.errors.insert("Unavailable".into(), 2);
        a.errors.insert("Unavailable".into(), 1);
        a.errors.insert("DeadlineExceeded".into(), 4);
        a.merge(&b);
        let r = LevelResult::new("put", 2, &a, Duration::from_secs(2), false);
        assert_eq!(r.ops, 2);
        assert_eq!(r.errors, 7);
        assert_eq!(r.errors_by_code["Unavailable"], 3);
        assert_eq!(r.throughput_ops_s, 1.0);
        assert_eq!(r.latency.samples, 2);
        assert_eq!(r.cas_failed, None);
        let table = format_table("synod", std::slice::from_ref(&r));
        assert!(table.contains("Unavailable × 3"), "{table}");
        assert!(table.contains("DeadlineExceeded × 4"), "{table}");
        assert!(
            table
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("synod") && l.contains("put"))
        );

        let json = serde_json::to_string(&r).expect("serialises");
        let back: LevelResult = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, r);
    }

    #[test]
    fn run_line_names_targets_and_hot_key_share() {
        let mut report = Report {
            label: "synod".into(),
            workload: "put".into(),
            endpoints: vec!["a:1".into(), "b:2".into(), "c:3".into()],
            targets: vec![
                "http://a:1".into(),
                "http://b:2".into(),
                "http://c:3".into(),
            ],
            route_splits: Vec::new(),
            connections: 3,
            client_threads: 1,
            keys: 10_000,
            key_dist: "uniform".into(),
            hot_key_pct: 20.0,
            key_size: 8,
            value_size: 256,
            read_ratio: None,
            rate_ops_s: None,
            warmup_s: 2.0,
            seed: 1,
            started_unix_s: 0,
            results: Vec::new(),
        };
        assert_eq!(
            format_run(&report),
            "synod: put to 3 endpoints (3 connections), 10000 keys uniform, hot key 20% of \
             operations\n"
        );
        report.targets.truncate(1);
        report.connections = 1;
        report.hot_key_pct = 0.5;
        let line = format_run(&report);
        assert!(line.contains("to 1 endpoint (1 connection)"), "{line}");
        assert!(line.contains("hot key 0.5% of operations"), "{line}");
        // The JSON carries the percentage too.
        let json = serde_json::to_value(&report).expect("serialises");
        assert_eq!(json["hot_key_pct"], 0.5);
    }
}
