//! Benchmark (not a test): restart time and snapshot size for a KV store of N keys, through
//! the real WAL + snapshot-file path.
//!
//! Builds a `KvStore` of `--keys` keys (16-byte keys, `--value-bytes` values) by applying puts
//! the way an engine does, then measures two ways back after a restart:
//! 1. **snapshot**: the store is written as a checkpoint record (a snapshot file, streamed),
//!    and a restart is `Wal::open` (read, verify and decode the snapshot) — what recovery of
//!    an engine that checkpoints costs;
//! 2. **replay**: the same puts as individual WAL records (batches of `BATCH_RECORDS`), and a
//!    restart is `Wal::open` plus applying every record to a fresh store — what recovery costs
//!    without snapshots.
//!
//! `cargo run -p synod-node --example restart_bench -- --keys 1000000`

use serde::{Deserialize, Serialize};
use std::time::Instant;
use synod_core::kv::{KvLimits, KvStore, Op, PutRequest};
use synod_core::{ClientId, DurableRecord, RequestId};
use synod_node::storage::{Wal, WalOptions};

/// Puts per WAL batch when writing the replay log (one fsync each).
const BATCH_RECORDS: usize = 10_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Record {
    Put {
        index: u64,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Checkpoint(Box<KvStore>),
}

impl DurableRecord for Record {
    fn is_checkpoint(&self) -> bool {
        matches!(self, Record::Checkpoint(_))
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn put(index: u64, value_bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let key = format!("key-{index:012}").into_bytes();
    let mut value = vec![b'v'; value_bytes];
    value[..8].copy_from_slice(&index.to_le_bytes());
    (key, value)
}

fn apply(store: &mut KvStore, index: u64, key: Vec<u8>, value: Vec<u8>) {
    let id = RequestId {
        client: ClientId(1),
        seq: index,
    };
    let op = Op::Put(PutRequest {
        key,
        value,
        prev_kv: false,
        ..Default::default()
    });
    if let Err(e) = store.apply(index, id, index, &op) {
        panic!("put {index} failed: {e}");
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = arg("--keys", 1_000_000);
    let value_bytes = arg("--value-bytes", 100) as usize;
    let root = std::env::temp_dir().join(format!("synod-restart-bench-{}", std::process::id()));
    let opts = WalOptions::default();
    println!(
        "keys {keys}, key 16 B, value {value_bytes} B, dir {}",
        root.display()
    );

    let t = Instant::now();
    let mut store = KvStore::new(KvLimits::default());
    for i in 1..=keys {
        let (k, v) = put(i, value_bytes);
        apply(&mut store, i, k, v);
    }
    println!("built store in memory: {:.2?}", t.elapsed());

    // 1. Snapshot path.
    let snap_dir = root.join("snapshot");
    let (mut wal, _) = Wal::<Record>::open(&snap_dir, opts.clone())?;
    let t = Instant::now();
    wal.append_and_sync(&[Record::Checkpoint(Box::new(store.clone()))])?;
    let write = t.elapsed();
    let size = wal.size_bytes();
    drop(wal);
    let t = Instant::now();
    let (_wal, records) = Wal::<Record>::open(&snap_dir, opts.clone())?;
    let open = t.elapsed();
    let recovered = match records.first() {
        Some(Record::Checkpoint(s)) => s,
        _ => return Err("no checkpoint recovered".into()),
    };
    assert_eq!(
        recovered.digest(),
        store.digest(),
        "snapshot round trip changed the state"
    );
    assert_eq!(recovered.len() as u64, keys);
    println!(
        "snapshot: {:.1} MB ({} bytes) on disk, written+fsynced in {write:.2?}; restart (open + verify + decode) {open:.2?}",
        size as f64 / 1e6,
        size
    );

    // 2. Replay path.
    let log_dir = root.join("replay");
    let (mut wal, _) = Wal::<Record>::open(&log_dir, opts.clone())?;
    let t = Instant::now();
    let mut batch = Vec::with_capacity(BATCH_RECORDS);
    for i in 1..=keys {
        let (key, value) = put(i, value_bytes);
        batch.push(Record::Put {
            index: i,
            key,
            value,
        });
        if batch.len() == BATCH_RECORDS {
            wal.append_and_sync(&batch)?;
            batch.clear();
        }
    }
    wal.append_and_sync(&batch)?;
    let write = t.elapsed();
    drop(wal);
    let t = Instant::now();
    let (_wal, records) = Wal::<Record>::open(&log_dir, opts)?;
    let open = t.elapsed();
    let mut replayed = KvStore::new(KvLimits::default());
    for r in records {
        if let Record::Put { index, key, value } = r {
            apply(&mut replayed, index, key, value);
        }
    }
    let total = t.elapsed();
    assert_eq!(
        replayed.digest(),
        store.digest(),
        "replay reached another state"
    );
    println!(
        "replay: {:.1} MB of WAL, written in {write:.2?}; restart: open {open:.2?}, open + apply {total:.2?}",
        dir_bytes(&log_dir) as f64 / 1e6
    );
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
