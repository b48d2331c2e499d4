//! Watchers for `--watchers N`: N etcd watches over the whole keyspace, spread over their own
//! connections and over every endpoint, measuring what a write load costs when it is also
//! fanned out — events delivered per second and fan-out latency (put sent → event received).
//!
//! Latency needs the send time at the receiver: with watchers on, every put's value starts with
//! the nanoseconds since the run's epoch ([`stamp`]); client and watchers share the process's
//! monotonic clock, so no clock sync is involved. Each stream task keeps its own histogram
//! (no lock contention between streams); a level resets them when its measurement starts and
//! merges them when it ends.

use crate::stats::{LatencySummary, new_histogram};
use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_etcd::pb::etcdserverpb as pb;
use synod_etcd::pb::etcdserverpb::watch_client::WatchClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// How long creating all watchers may take before the run gives up.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes the send time (nanoseconds since `epoch`) into the first 8 bytes of `value`.
pub fn stamp(value: &mut [u8], epoch: Instant) {
    if let Some(head) = value.get_mut(..8) {
        let nanos = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        head.copy_from_slice(&nanos.to_le_bytes());
    }
}

/// What the watchers saw during one level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchSummary {
    pub watchers: usize,
    /// Events received during the measured time, over all watchers.
    pub events: u64,
    pub events_per_s: f64,
    /// Put sent → event received, over every delivery.
    pub fanout: LatencySummary,
}

struct StreamStats {
    events: AtomicU64,
    latency_ns: Mutex<Histogram<u64>>,
}

/// The running watchers of a bench run.
pub struct Watchers {
    count: usize,
    epoch: Instant,
    recording: Arc<AtomicBool>,
    streams: Vec<Arc<StreamStats>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Watchers {
    /// Opens `connections` watch streams round-robin over `uris` and creates `count` watchers
    /// over the whole keyspace on them; returns once every watcher is created.
    pub async fn start(
        uris: &[String],
        count: usize,
        connections: usize,
        epoch: Instant,
    ) -> anyhow::Result<Watchers> {
        let recording = Arc::new(AtomicBool::new(false));
        let mut w = Watchers {
            count,
            epoch,
            recording: recording.clone(),
            streams: Vec::new(),
            tasks: Vec::new(),
        };
        let streams = connections.clamp(1, count.max(1));
        let mut created_rx = Vec::new();
        for s in 0..streams {
            let n = count / streams + usize::from(s < count % streams);
            let uri = &uris[s % uris.len()];
            let channel = Channel::from_shared(uri.clone())
                .context("endpoint")?
                .connect()
                .await
                .with_context(|| format!("cannot connect a watch stream to {uri}"))?;
            let stats = Arc::new(StreamStats {
                events: AtomicU64::new(0),
                latency_ns: Mutex::new(new_histogram()),
            });
            let (created_tx, rx) = tokio::sync::oneshot::channel();
            created_rx.push(rx);
            w.streams.push(stats.clone());
            w.tasks.push(tokio::spawn(run_stream(
                channel,
                n,
                stats,
                recording.clone(),
                epoch,
                created_tx,
            )));
        }
        for rx in created_rx {
            tokio::time::timeout(CREATE_TIMEOUT, rx)
                .await
                .context("watchers not created in time")?
                .context("a watch stream failed while creating watchers")?;
        }
        Ok(w)
    }

    /// Starts measuring: counters and histograms from zero.
    pub fn begin(&self) {
        for s in &self.streams {
            s.events.store(0, Ordering::Relaxed);
            s.latency_ns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reset();
        }
        self.recording.store(true, Ordering::Relaxed);
    }

    /// Stops measuring and summarises the `elapsed` measured time.
    pub fn end(&self, elapsed: Duration) -> WatchSummary {
        self.recording.store(false, Ordering::Relaxed);
        let mut merged = new_histogram();
        let mut events = 0;
        for s in &self.streams {
            events += s.events.load(Ordering::Relaxed);
            let h = s.latency_ns.lock().unwrap_or_else(|p| p.into_inner());
            // Same bounds on both sides, so adding cannot fail.
            merged.add(&*h).expect("histograms share bounds");
        }
        let secs = elapsed.as_secs_f64();
        WatchSummary {
            watchers: self.count,
            events,
            events_per_s: if secs > 0.0 {
                events as f64 / secs
            } else {
                0.0
            },
            fanout: LatencySummary::from_histogram(&merged),
        }
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }
}

async fn run_stream(
    channel: Channel,
    watchers: usize,
    stats: Arc<StreamStats>,
    recording: Arc<AtomicBool>,
    epoch: Instant,
    created: tokio::sync::oneshot::Sender<()>,
) {
    // The create requests are queued before the call: grpc-go servers (etcd) send response
    // headers only with their first message, and the call returns only once headers arrive.
    let (tx, rx) = mpsc::channel(watchers.max(1));
    for _ in 0..watchers {
        let create = pb::WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        let req = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        };
        if tx.try_send(req).is_err() {
            return;
        }
    }
    let Ok(response) = WatchClient::new(channel)
        .watch(ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut responses = response.into_inner();
    let mut pending = watchers;
    let mut created = Some(created);
    if pending == 0 {
        let _ = created.take().map(|c| c.send(()));
    }
    while let Ok(Some(r)) = responses.message().await {
        if r.created {
            pending = pending.saturating_sub(1);
            if pending == 0 {
                let _ = created.take().map(|c| c.send(()));
            }
            continue;
        }
        if !recording.load(Ordering::Relaxed) || r.events.is_empty() {
            continue;
        }
        let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut h = stats.latency_ns.lock().unwrap_or_else(|p| p.into_inner());
        for e in &r.events {
            let sent =
                e.kv.as_ref()
                    .and_then(|kv| kv.value.get(..8))
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes);
            if let Some(sent) = sent {
                let _ = h.record(now.saturating_sub(sent).max(1));
            }
        }
        stats
            .events
            .fetch_add(r.events.len() as u64, Ordering::Relaxed);
    }
    // Keeps the request side open until the stream ends.
    drop(tx);
}
