//! Lock acquire/release latency over etcd's v3lock gRPC service, for Synod and etcd alike
//! (etcd serves `v3lockpb.Lock` too). Prints one JSON line.
//!
//! * Uncontended: one client takes and releases lock `bench-u` `--rounds` times; acquire and
//!   release latency p50/p99.
//! * Contended: `--contenders` clients, each with its own lease, loop on lock `bench-c` for
//!   `--duration` seconds: acquire latency (from the Lock call to the grant, waiting for the
//!   holders before it included) p50/p99, and locks granted per second.
//!
//! The endpoint is the leader among `--endpoints` (Maintenance.Status).
//! `cargo run --release -p synod-bench --example locks -- --endpoints http://127.0.0.1:7002,...`

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};
use synod_etcd::pb::etcdserverpb::lease_client::LeaseClient;
use synod_etcd::pb::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use synod_etcd::pb::v3lockpb::lock_client::LockClient;
use synod_etcd::pb::v3lockpb::{LockRequest, UnlockRequest};
use tonic::transport::Channel;

#[path = "shared/leader.rs"]
mod shared;
use shared::leader;

struct Args {
    endpoints: Vec<String>,
    rounds: usize,
    contenders: usize,
    duration: Duration,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        endpoints: vec!["http://127.0.0.1:7002".into()],
        rounds: 500,
        contenders: 16,
        duration: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoints" => a.endpoints = value.split(',').map(String::from).collect(),
            "--rounds" => a.rounds = value.parse()?,
            "--contenders" => a.contenders = value.parse()?,
            "--duration" => a.duration = Duration::from_secs_f64(value.parse()?),
            _ => bail!("unknown flag {flag}"),
        }
    }
    if a.rounds == 0 || a.contenders == 0 {
        bail!("--rounds and --contenders must be > 0");
    }
    Ok(a)
}

/// One client: its own connection and lease (TTL 60 s, long enough for the run).
struct Client {
    lock: LockClient<Channel>,
    lease_client: LeaseClient<Channel>,
    lease: i64,
}

impl Client {
    async fn new(endpoint: &str) -> anyhow::Result<Client> {
        let ch = Channel::from_shared(endpoint.to_string())?
            .connect()
            .await?;
        let mut lease_client = LeaseClient::new(ch.clone());
        let lease = lease_client
            .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
            .await?
            .into_inner()
            .id;
        Ok(Client {
            lock: LockClient::new(ch),
            lease_client,
            lease,
        })
    }

    /// Takes `name`; the key and how long it took.
    async fn acquire(&mut self, name: &str) -> anyhow::Result<(Vec<u8>, Duration)> {
        let t0 = Instant::now();
        let key = self
            .lock
            .lock(LockRequest {
                name: name.as_bytes().to_vec(),
                lease: self.lease,
            })
            .await?
            .into_inner()
            .key;
        Ok((key, t0.elapsed()))
    }

    async fn release(&mut self, key: Vec<u8>) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        self.lock.unlock(UnlockRequest { key }).await?;
        Ok(t0.elapsed())
    }

    async fn close(mut self) {
        let _ = self
            .lease_client
            .lease_revoke(LeaseRevokeRequest { id: self.lease })
            .await;
    }
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_micros() as u64);
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// `contenders` clients looping on one lock until `end`: their acquire latencies.
async fn contended(
    endpoint: &str,
    contenders: usize,
    run: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let mut clients = Vec::new();
    for _ in 0..contenders {
        clients.push(Client::new(endpoint).await?);
    }
    let end = Instant::now() + run;
    let mut tasks = Vec::new();
    for mut c in clients {
        tasks.push(tokio::spawn(async move {
            let mut h = shared::histogram()?;
            while Instant::now() < end {
                let (key, took) = c.acquire("bench-c").await?;
                record(&mut h, took);
                c.release(key).await?;
            }
            c.close().await;
            anyhow::Ok(h)
        }));
    }
    let mut all = shared::histogram()?;
    for t in tasks {
        all.add(t.await??)?;
    }
    Ok(all)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = parse()?;
    let endpoint = leader(&a.endpoints).await?;
    let mut c = Client::new(&endpoint).await?;
    let (mut acq, mut rel) = (shared::histogram()?, shared::histogram()?);
    for _ in 0..a.rounds {
        let (key, took) = c.acquire("bench-u").await?;
        record(&mut acq, took);
        record(&mut rel, c.release(key).await?);
    }
    c.close().await;
    let con = contended(&endpoint, a.contenders, a.duration).await?;
    println!(
        "{{\"endpoint\":\"{endpoint}\",\"rounds\":{},\"contenders\":{},\"uncontended_acquire_p50_ms\":{:.3},\"uncontended_acquire_p99_ms\":{:.3},\"uncontended_release_p50_ms\":{:.3},\"uncontended_release_p99_ms\":{:.3},\"contended_acquire_p50_ms\":{:.3},\"contended_acquire_p99_ms\":{:.3},\"contended_locks_per_s\":{:.0}}}",
        a.rounds,
        a.contenders,
        ms(&acq, 0.5),
        ms(&acq, 0.99),
        ms(&rel, 0.5),
        ms(&rel, 0.99),
        ms(&con, 0.5),
        ms(&con, 0.99),
        con.len() as f64 / a.duration.as_secs_f64()
    );
    Ok(())
}
