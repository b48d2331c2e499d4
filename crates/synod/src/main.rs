//! `synod`: the one binary. Thin by design — each subcommand parses flags and calls a library:
//! `server` (synod-node + synod-http + synod-etcd), `dev` (spawns `synod server` processes),
//! `restore` (a new cluster from a backup), `sim` (synod-sim), `check` (synod-checker), `bench` (synod-bench), `chaos` (synod-chaos).

mod certs;
mod dev;
mod join;
mod member_http;
mod rejoin;
mod restore;
mod server;

// The API and transport paths allocate per request (gRPC frames, protobuf messages, replies);
// glibc malloc showed up at ~10 % of the profile under load, mimalloc's thread-local free
// lists are markedly cheaper for that pattern. See README "Measured".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "synod",
    version = synod_buildinfo::VERSION,
    about = "A linearizable replicated key-value store on Paxos-family protocols"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one cluster member.
    Server(Box<server::ServerArgs>),
    /// Start a local cluster on loopback (3 nodes by default) and stop it on Ctrl-C.
    Dev(dev::DevArgs),
    /// Build a NEW cluster's data directories from a backup (`etcdctl snapshot save`), or
    /// check one with --verify. Exit codes: 0 done, 2 refused (nothing written).
    Restore(restore::RestoreArgs),
    /// Run the deterministic simulator over many seeds (see `synod sim --help`).
    #[command(disable_help_flag = true)]
    Sim {
        /// Options for the simulator, e.g. `--engine omnipaxos --nodes 5 --seeds 1..2000 --faults all`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Real processes under random crashes, pauses and partitions; history checked, availability
    /// charted. Exit codes: 0 linearizable, 1 violation, 2 inconclusive, 3 setup error.
    Chaos(Box<synod_chaos::ChaosArgs>),
    /// Load generator over the etcd v3 gRPC API (works against Synod and against etcd).
    Bench(Box<synod_bench::BenchArgs>),
    /// Write a throwaway CA and loopback certificates (what `synod dev --tls` uses).
    #[command(hide = true)]
    Certs(certs::CertsArgs),
    /// Check a history file for linearizability.
    /// Exit codes: 0 linearizable, 1 not linearizable, 2 unknown (time budget), 3 unreadable input.
    Check {
        /// History in the JSON format documented in crates/core/src/history.rs (README: \"Correctness\").
        history: PathBuf,
        /// Give up with verdict "unknown" after this many seconds.
        #[arg(long, default_value_t = 60)]
        budget_secs: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server::run(*args),
        Command::Dev(args) => dev::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Chaos(args) => match std::env::current_exe() {
            Ok(exe) => exit(synod_chaos::run(*args, &exe)),
            Err(e) => {
                eprintln!("synod chaos: cannot find the synod executable: {e}");
                exit(3)
            }
        },
        Command::Bench(args) => match synod_bench::run(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("synod bench: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Sim { args } => exit(synod_sim::run_cli(&args)),
        Command::Check {
            history,
            budget_secs,
        } => {
            let opts = synod_checker::CheckOptions {
                time_budget: std::time::Duration::from_secs(budget_secs),
            };
            let (code, text) = synod_checker::check_file(&history, &opts);
            if code == 3 {
                eprintln!("{text}");
            } else {
                println!("{text}");
            }
            exit(code)
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
