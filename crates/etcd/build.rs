//! Compiles the etcd v3 protos with protox (pure Rust, so no `protoc` binary is needed on a
//! developer's machine or in CI) and generates, from the one resulting descriptor set:
//!
//! * the prost messages and the tonic server and client code (the client too, so tests and
//!   Synod tools speak etcd's protocol with exactly the server's message definitions);
//! * with pbjson-build, serde `Serialize`/`Deserialize` impls implementing the protobuf JSON
//!   mapping for every message of every package compiled here, used by the /v3 JSON gateway
//!   (`src/gateway`). A proto added to `PROTO_FILES` gets both; its package's
//!   `<package>.serde.rs` must then be included next to its prost code in `src/pb.rs`.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO_FILES: [&str; 6] = [
        "proto/grpc/health/v1/health.proto",
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
    let descriptor_bytes = fds.encode_to_vec();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    // etcd 3.4's gateway marshals with `JSONPb{OrigName: true}` (proto field names, default
    // values left out) and, like grpc-gateway v1's decoder, ignores fields it does not know.
    // Decoding accepts the lowerCamelCase names too, int64 as string or number, enums as name
    // or number and base64 in either alphabet. The prefix "." covers every package compiled
    // above, so new protos are mapped without a change here.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&["."])?;
    Ok(())
}
