//! Checker benchmark: `cargo run --release -p synod-checker --example checker_bench`.
//!
//! 1. The target: 100,000 operations over 100 keys from 16 concurrent clients
//!    (goal: under 2 s).
//! 2. A hot single key with more and more concurrent clients, to show where the search's
//!    state space blows up and the budget turns the verdict into Unknown.

use std::time::{Duration, Instant};
use synod_checker::generate::{GenOptions, linearizable_history};
use synod_checker::{CheckOptions, check_history};

fn run(label: &str, gen_opts: &GenOptions, budget: Duration) {
    let history = linearizable_history(gen_opts);
    let started = Instant::now();
    let report = check_history(
        &history,
        &CheckOptions {
            time_budget: budget,
        },
    );
    let wall = started.elapsed();
    println!(
        "{label}: {} ops, {} keys, {} clients -> {:?} in {:.3} s ({} search steps, {} ops checked, {} skipped){}",
        gen_opts.ops,
        gen_opts.keys,
        gen_opts.clients,
        report.verdict,
        wall.as_secs_f64(),
        report.search_steps,
        report.ops_checked,
        report.ops_skipped,
        report
            .unknown_reason
            .map(|r| format!("\n    unknown because: {r}"))
            .unwrap_or_default()
    );
}

fn main() {
    run(
        "target",
        &GenOptions {
            seed: 42,
            ops: 100_000,
            keys: 100,
            clients: 16,
            latency_us_max: 500,
            think_us_max: 200,
            unknown_percent: 1,
            sequential_read_percent: 5,
        },
        Duration::from_secs(30),
    );
    for clients in [4, 8, 16, 32, 64] {
        run(
            "hot key",
            &GenOptions {
                seed: 7,
                ops: 10_000,
                keys: 1,
                clients,
                latency_us_max: 500,
                think_us_max: 200,
                unknown_percent: 1,
                sequential_read_percent: 0,
            },
            Duration::from_secs(10),
        );
    }
}
