//! Measures what a checkpoint costs the engine thread: cloning the store and serialising it,
//! with and without revision history. `cargo run --release -p synod-core --example checkpoint_cost`.

use std::time::Instant;
use synod_core::RequestId;
use synod_core::kv::{CompactRequest, KvLimits, KvStore, Op, PutRequest};

fn store(keys: u64, writes: u64, keep: u64) -> KvStore {
    let mut s = KvStore::new(KvLimits::default());
    let mut index = 0;
    for i in 0..writes {
        index += 1;
        let op = Op::Put(PutRequest {
            key: format!("{:08}", i % keys).into_bytes(),
            value: vec![7u8; 256],
            prev_kv: false,
        });
        s.apply(index, RequestId::default(), 0, &op).expect("put");
    }
    if s.revision() > keep {
        index += 1;
        let op = Op::Compact(CompactRequest {
            revision: s.revision() - keep,
            physical: true,
        });
        s.apply(index, RequestId::default(), 0, &op)
            .expect("compact");
    }
    s
}

fn main() {
    for (keep, label) in [(0, "no history"), (10_000, "10,000 revisions of history")] {
        let s = store(10_000, 30_000, keep);
        let t = Instant::now();
        let copy = s.clone();
        let cloned = t.elapsed();
        let t = Instant::now();
        let bytes = postcard::to_stdvec(&copy).expect("serialise");
        let encoded = t.elapsed();
        println!(
            "10,000 keys, {label}: clone {:.1} ms, serialise {:.1} ms, {:.1} MB",
            cloned.as_secs_f64() * 1e3,
            encoded.as_secs_f64() * 1e3,
            bytes.len() as f64 / 1e6
        );
    }
}
