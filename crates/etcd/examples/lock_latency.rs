//! Lock acquire and release latency through the Lock service of a running cluster:
//! `cargo run --release -p synod-etcd --example lock_latency -- 127.0.0.1:7002 [contenders] [rounds]`.
//! Each contender has its own lease and repeatedly Locks and Unlocks the same lock; acquire is
//! measured from the Lock call to its reply (waiting for the others included), release is the
//! Unlock call. Prints p50 / p99 of both.

use std::time::{Duration, Instant};
use synod_etcd::pb::etcdserverpb::LeaseGrantRequest;
use synod_etcd::pb::etcdserverpb::lease_client::LeaseClient;
use synod_etcd::pb::v3lockpb::lock_client::LockClient;
use synod_etcd::pb::v3lockpb::{LockRequest, UnlockRequest};
use tonic::transport::Channel;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn contender(ch: Channel, rounds: usize) -> Result<(Vec<Duration>, Vec<Duration>), Error> {
    let lease = LeaseClient::new(ch.clone())
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await?
        .into_inner()
        .id;
    let mut locks = LockClient::new(ch);
    let (mut acquire, mut release) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let key = locks
            .lock(LockRequest {
                name: b"latency".to_vec(),
                lease,
            })
            .await?
            .into_inner()
            .key;
        acquire.push(t.elapsed());
        let t = Instant::now();
        locks.unlock(UnlockRequest { key }).await?;
        release.push(t.elapsed());
    }
    Ok((acquire, release))
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7002".into());
    let contenders: usize = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let rounds: usize = args.get(3).map_or(Ok(200), |s| s.parse())?;
    let ch = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let tasks: Vec<_> = (0..contenders)
        .map(|_| tokio::spawn(contender(ch.clone(), rounds)))
        .collect();
    let (mut acquire, mut release) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, r) = t.await??;
        acquire.extend(a);
        release.extend(r);
    }
    println!(
        "{contenders} contenders x {rounds} rounds: acquire p50 {:.2} ms p99 {:.2} ms, \
         release p50 {:.2} ms p99 {:.2} ms",
        pct(&mut acquire, 0.5),
        pct(&mut acquire, 0.99),
        pct(&mut release, 0.5),
        pct(&mut release, 0.99),
    );
    Ok(())
}
