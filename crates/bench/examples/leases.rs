//! Lease keep-alive throughput over etcd's gRPC API, for Synod and etcd alike: how many
//! keep-alives per second one member sustains. etcd clients send one keep-alive per lease per
//! TTL/3 on one stream per client, so a member that renews K per second holds 3·K/TTL leases'
//! worth of clients (K = 10,000/s and TTL = 60 s: 200,000 leases).
//!
//! Finds the leader among `--endpoints` (by Maintenance.Status, etcd and Synod alike), grants
//! `--streams` × `--window` leases (TTL 600 s) there, opens `--streams` LeaseKeepAlive streams
//! to it, keeps `--window` keep-alives outstanding on each (each for its own lease, matched
//! by id), and counts the answers for `--duration` after `--warmup`. Prints one JSON line:
//! keep-alives per second, latency p50/p99 in ms, and failures (TTL 0 or errors).
//!
//! `cargo run --release -p synod-bench --example leases -- --endpoints http://127.0.0.1:7002,http://127.0.0.1:7012,http://127.0.0.1:7022`

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use synod_etcd::pb::etcdserverpb::lease_client::LeaseClient;
use synod_etcd::pb::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

#[path = "shared/leader.rs"]
mod shared;
use shared::leader;

struct Args {
    endpoints: Vec<String>,
    streams: usize,
    window: usize,
    duration: Duration,
    warmup: Duration,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        endpoints: vec!["http://127.0.0.1:7002".into()],
        streams: 16,
        window: 16,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoints" => a.endpoints = value.split(',').map(String::from).collect(),
            "--streams" => a.streams = value.parse()?,
            "--window" => a.window = value.parse()?,
            "--duration" => a.duration = Duration::from_secs_f64(value.parse()?),
            "--warmup" => a.warmup = Duration::from_secs_f64(value.parse()?),
            _ => bail!("unknown flag {flag}"),
        }
    }
    if a.streams == 0 || a.window == 0 {
        bail!("--streams and --window must be > 0");
    }
    Ok(a)
}

/// What one stream measured.
#[derive(Default)]
struct StreamResult {
    ok: u64,
    failed: u64,
    latency_us: Option<Histogram<u64>>,
}

/// One keep-alive stream with `ids.len()` renewals outstanding, until `end`.
async fn drive(
    mut client: LeaseClient<Channel>,
    ids: Vec<i64>,
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<StreamResult> {
    let (tx, rx) = mpsc::channel(ids.len());
    // The first requests go out before the call is awaited: a grpc-go server (etcd) sends the
    // response headers only with its first answer, so awaiting them first would deadlock.
    let mut sent: HashMap<i64, Instant> = HashMap::new();
    for &id in &ids {
        sent.insert(id, Instant::now());
        tx.send(LeaseKeepAliveRequest { id }).await?;
    }
    let mut replies = client
        .lease_keep_alive(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut r = StreamResult {
        latency_us: Some(shared::histogram()?),
        ..Default::default()
    };
    while let Some(reply) = replies.next().await {
        let reply = reply?;
        let now = Instant::now();
        let Some(t0) = sent.remove(&reply.id) else {
            bail!(
                "a keep-alive answer for lease {} nobody asked for",
                reply.id
            );
        };
        if t0 >= measure_from {
            if reply.ttl > 0 {
                r.ok += 1;
                let us = now.duration_since(t0).as_micros() as u64;
                if let Some(h) = r.latency_us.as_mut() {
                    h.saturating_record(us);
                }
            } else {
                r.failed += 1;
            }
        }
        if now >= end {
            break;
        }
        sent.insert(reply.id, Instant::now());
        tx.send(LeaseKeepAliveRequest { id: reply.id }).await?;
    }
    Ok(r)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = parse()?;
    let endpoint = leader(&a.endpoints).await?;
    let channel = Channel::from_shared(endpoint.clone())?.connect().await?;
    let mut lease = LeaseClient::new(channel.clone());
    let mut ids = Vec::new();
    for _ in 0..a.streams * a.window {
        let r = lease
            .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
            .await?
            .into_inner();
        ids.push(r.id);
    }
    let measure_from = Instant::now() + a.warmup;
    let end = measure_from + a.duration;
    let mut tasks = Vec::new();
    for chunk in ids.chunks(a.window) {
        // One connection per stream, as separate etcd clients would have.
        let ch = Channel::from_shared(endpoint.clone())?.connect().await?;
        tasks.push(tokio::spawn(drive(
            LeaseClient::new(ch),
            chunk.to_vec(),
            measure_from,
            end,
        )));
    }
    let mut total = StreamResult {
        latency_us: Some(shared::histogram()?),
        ..Default::default()
    };
    for t in tasks {
        let r = t.await??;
        total.ok += r.ok;
        total.failed += r.failed;
        if let (Some(all), Some(h)) = (total.latency_us.as_mut(), r.latency_us.as_ref()) {
            all.add(h)?;
        }
    }
    for id in ids {
        let _ = lease.lease_revoke(LeaseRevokeRequest { id }).await;
    }
    let h = total.latency_us.context("histogram")?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{{\"endpoint\":\"{}\",\"streams\":{},\"window\":{},\"keepalives_per_s\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"failed\":{}}}",
        endpoint,
        a.streams,
        a.window,
        total.ok as f64 / a.duration.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        total.failed
    );
    Ok(())
}
