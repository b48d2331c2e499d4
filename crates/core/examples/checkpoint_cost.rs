//! Measures what a checkpoint costs the engine thread, with and without revision history: the
//! old way (clone the store, then serialise the copy) and the current one (serialise straight
//! from the live store, as `AppliedState::encode` does).
//! `cargo run --release -p synod-core --example checkpoint_cost`.

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
            ..Default::default()
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
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let t = Instant::now();
        let copy = s.clone();
        let cloned = t.elapsed();
        let t = Instant::now();
        let bytes = postcard::to_stdvec(&copy).expect("serialise");
        let encoded = t.elapsed();
        drop(copy);
        let t = Instant::now();
        let direct = postcard::to_stdvec(&s).expect("serialise");
        let direct_t = t.elapsed();
        assert_eq!(bytes, direct);
        println!(
            "10,000 keys, {label}: clone + serialise {:.1} + {:.1} = {:.1} ms; serialise in \
             place {:.1} ms; {:.1} MB",
            ms(cloned),
            ms(encoded),
            ms(cloned + encoded),
            ms(direct_t),
            bytes.len() as f64 / 1e6
        );
    }
}
