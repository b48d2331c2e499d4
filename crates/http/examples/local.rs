//! Serves the HTTP API over a single in-process stand-in node (no engine, no disk), for trying
//! the API with curl without a cluster: `cargo run -p synod-http --example local -- 127.0.0.1:8080`.
//! Pass `caspaxos` as a second argument to see what an engine without ranges answers.

use synod_core::Capabilities;
use synod_node::handle::local_test_node;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let engine = args.next().unwrap_or_else(|| "omnipaxos".into());
    let full = engine != "caspaxos";
    let caps = Capabilities {
        ranges: full,
        transactions: full,
        revisions: full,
        watch: full,
        leases: full,
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("HTTP API of a local {engine} stand-in on http://{addr} (Ctrl-C stops)");
    let handle = local_test_node(&engine, caps);
    synod_http::serve(listener, handle, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
