//! Stand-alone `synod bench` for use before (or without) the `synod` binary: the same
//! [`BenchArgs`] behind a top-level parser. `cargo run --release -p synod-bench --example bench
//! -- --endpoints 127.0.0.1:2379 --workload put --in-flight 64`.

use clap::Parser;
use synod_bench::BenchArgs;

#[derive(Parser)]
#[command(name = "bench", about = "etcd v3 gRPC load generator (synod bench)")]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn main() -> std::process::ExitCode {
    match synod_bench::run(Cli::parse().bench) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
