//! Replays every committed corpus input through its harness without libFuzzer (a quick
//! check that the harnesses and seeds still fit the code), and checks that the seeds reach
//! the deep paths they were written for.

use std::path::Path;
use synod_core::Engine;
use synod_fuzz::VrEngine;

/// A harness entry point, as the fuzz targets call it.
type Harness = fn(&[u8]);

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("a directory entry").path();
            let bytes = std::fs::read(&p).expect("a corpus file");
            (p.display().to_string(), bytes)
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no corpus for {target}");
    v
}

#[test]
fn every_corpus_input_runs() {
    let targets: [(&str, Harness); 5] = [
        ("peer_frame", synod_fuzz::peer_frame::run),
        ("wal_segment", synod_fuzz::wal_segment::run),
        ("snapshot_chunk", synod_fuzz::snapshot_chunk::run),
        ("http_json", synod_fuzz::http_json::run),
        ("grpc_request", synod_fuzz::grpc_request::run),
    ];
    for (target, run) in targets {
        for (name, bytes) in inputs(target) {
            eprintln!("{name}");
            run(&bytes);
        }
    }
}

#[test]
fn snapshot_seeds_install_the_snapshot() {
    // seed-000: a state at applied index 6 from VR's primary in one chunk, then the primary's
    // next write and commit; seed-001 and seed-002: the state alone, in one and three chunks.
    let expected = [7, 6, 6];
    let seeds = inputs("snapshot_chunk")
        .into_iter()
        .filter(|(name, _)| name.contains("/seed-"));
    for ((name, bytes), applied) in seeds.zip(expected) {
        let (flags, rest) = bytes.split_first().expect("flags");
        assert_eq!(flags & 1, 0, "{name} is a VR seed");
        let replica: VrEngine = synod_fuzz::snapshot_chunk::deliver(rest, flags & 2 != 0);
        assert_eq!(replica.status().applied_index, applied, "{name}");
    }
}
