//! `synod-sim`: the same command line as `synod sim`, in a binary that builds with the
//! simulator's dependencies only (no tokio, gRPC or HTTP), so a long campaign on a busy machine
//! starts after compiling the engines and nothing else.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(synod_sim::run_cli(&args));
}
