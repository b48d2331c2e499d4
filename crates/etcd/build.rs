//! Compiles the etcd v3 protos with protox (pure Rust, so no `protoc` binary is needed on a
//! developer's machine or in CI) and generates the tonic server and client code from the
//! resulting descriptor set. The client is generated too so tests (and Synod tools) can speak
//! etcd's protocol with exactly the same message definitions the server uses.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO_FILES: [&str; 5] = [
        "proto/mvccpb/kv.proto",
        "proto/authpb/auth.proto",
        "proto/etcdserverpb/rpc.proto",
        "proto/v3lockpb/v3lock.proto",
        "proto/v3electionpb/v3election.proto",
    ];
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(PROTO_FILES, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
