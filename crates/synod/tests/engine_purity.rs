//! Engines must stay sans-IO and deterministic. This test enforces it from the outside: an engine
//! crate may depend only on `synod-core`, `serde` and `postcard` (pure encoding), and its sources
//! may not name the standard library's clock, threads, network, files, process or environment,
//! nor any randomness source. Ordering protocols (OmniPaxos, VR) also may not name the KV store:
//! everything about keys and clients lives once, in the replica layer.

use std::path::{Path, PathBuf};

/// Engine crates and the replica layer under the log protocols.
const ENGINES: [&str; 5] = ["omnipaxos", "vr", "caspaxos", "epaxos", "replica"];
/// Ordering protocols on the replica layer: they decide an order and know nothing of keys.
/// EPaxos is not one of them: it orders only interfering commands, so it reads their key
/// footprints.
const PROTOCOLS: [&str; 2] = ["omnipaxos", "vr"];
/// What a protocol crate must not name: the KV state machine and its commands' contents.
const KV_NAMES: [&str; 6] = [
    "KvStore",
    "kv::",
    "Op::",
    "ClientTable",
    "ClientRequest",
    "ClientReply",
];
// postcard: pure in-memory encoding, used to cut snapshots into chunks for transfer.
const ALLOWED_DEPS: [&str; 3] = ["synod-core", "serde", "postcard"];
const FORBIDDEN: [&str; 11] = [
    "std::time",
    "Instant::",
    "SystemTime",
    "std::thread",
    "std::net",
    "std::fs",
    "std::process",
    "std::env",
    "tokio",
    "rand::",
    "thread_rng",
];

fn crate_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn engine_crates_depend_only_on_core_and_serde() {
    for engine in ENGINES {
        let manifest =
            std::fs::read_to_string(crate_dir(engine).join("Cargo.toml")).expect("manifest");
        let mut section = String::new();
        for line in manifest.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            if section == "[dependencies]" && !line.is_empty() && !line.starts_with('#') {
                let dep = line.split(['=', '.', ' ']).next().unwrap_or_default();
                assert!(
                    ALLOWED_DEPS.contains(&dep),
                    "{engine} depends on {dep}: engines may use only {ALLOWED_DEPS:?}"
                );
            }
        }
    }
}

#[test]
fn engine_sources_touch_no_clock_threads_io_or_randomness() {
    for engine in ENGINES {
        let mut files = Vec::new();
        rust_files(&crate_dir(engine).join("src"), &mut files);
        // In-crate test harnesses (`tests.rs`, compiled only under cfg(test)) may read an
        // environment variable for their seed counts; the engine itself may not.
        files.retain(|f| !f.ends_with("tests.rs"));
        assert!(!files.is_empty(), "{engine} has sources");
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for word in FORBIDDEN {
                    assert!(
                        !code.contains(word),
                        "{}:{}: engine code uses `{word}`: {line}",
                        f.display(),
                        n + 1
                    );
                }
            }
        }
    }
}

#[test]
fn protocol_crates_know_no_keys() {
    for protocol in PROTOCOLS {
        let mut files = Vec::new();
        rust_files(&crate_dir(protocol).join("src"), &mut files);
        // Their in-crate tests drive the protocol through the replica layer with real requests.
        files.retain(|f| !f.ends_with("tests.rs"));
        assert!(!files.is_empty(), "{protocol} has sources");
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for word in KV_NAMES {
                    assert!(
                        !code.contains(word),
                        "{}:{}: protocol code names `{word}`: {line}",
                        f.display(),
                        n + 1
                    );
                }
            }
        }
    }
}
