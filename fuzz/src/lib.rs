//! The harnesses behind Synod's fuzz targets, one module per target.
//!
//! Each `fuzz_targets/<name>.rs` is a one-line `fuzz_target!` calling `<name>::run`. Keeping the
//! logic here lets the corpus generator (`examples/gen_corpus.rs`) and `cargo test` in this
//! directory drive exactly the code libFuzzer drives, without libFuzzer.
//!
//! A harness treats as a finding only what a peer, a disk or a client could make happen and
//! the node must survive: a panic, an unbounded allocation or loop, or a broken invariant that
//! is asserted here (a decoded value that does not re-encode to itself, an HTTP error that is
//! not the JSON the contract promises, a gRPC request answered INTERNAL).

pub mod grpc_request;
pub mod http_json;
pub mod peer_frame;
pub mod snapshot_chunk;
pub mod wal_segment;

/// The engines a node can run, as the node instantiates them.
pub type OmniPaxosEngine = synod_replica::Replica<synod_omnipaxos::OmniPaxos>;
pub type VrEngine = synod_replica::Replica<synod_vr::Vr>;
pub type CasPaxosEngine = synod_caspaxos::CasPaxos;
/// Partitioned members of either log engine: their frames carry every group's messages, and
/// relayed requests and answers (placement).
pub type PartitionedOmniPaxos = synod_partition::Partitioned<OmniPaxosEngine>;
pub type PartitionedVr = synod_partition::Partitioned<VrEngine>;

/// A current-thread runtime shared by every run of a target: building one per input would
/// dominate the time of each execution.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime builds")
    })
}
