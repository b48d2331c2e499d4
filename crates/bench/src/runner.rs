//! The load itself: the preload of the key space, and one closed-loop level — `in_flight` worker
//! tasks, each sending its next request as soon as the previous reply arrives, over connections
//! shared round-robin (per key range with `--target ranges`, see `route`) — with warm-up,
//! count/duration stop, the optional global rate limit and the progress line.
//!
//! Latency is measured per request from the moment the RPC is issued to the moment its reply
//! (or error) is back. With `--rate`, time spent waiting for a send slot is not latency: this is
//! the closed-loop view, so read the numbers as service time, not as what an open-loop client
//! arriving at that rate would see (coordinated omission).

use crate::args::{StopAfter, Workload};
use crate::client::Kv;
use crate::keys::{KeyChooser, KeySpace, ValuePool, stream_rng};
use crate::route::{Routes, WorkerRoutes};
use crate::stats::{LevelResult, WorkerStats};
use crate::watchers::Watchers;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use synod_core::SplitMix64;
use synod_etcd::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_etcd::pb::etcdserverpb::request_op::Request as OpRequest;
use synod_etcd::pb::etcdserverpb::response_op::Response as OpResponse;
use synod_etcd::pb::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// A worker that got an error waits this long before its next request, so a dead endpoint
/// yields a countable trickle of errors instead of a busy loop of them.
pub const ERROR_BACKOFF_MS: u64 = 10;
/// Concurrent puts while preloading the key space.
pub const PRELOAD_IN_FLIGHT: usize = 64;
/// Tries per key while preloading before the run is abandoned.
pub const PRELOAD_ATTEMPTS_MAX: u32 = 5;
/// Progress line period.
pub const PROGRESS_INTERVAL_MS: u64 = 1_000;

/// Error-code name for replies that are well-formed gRPC but not the shape the workload asked
/// for (e.g. a failed CAS without the read of the key).
pub const MALFORMED_REPLY: &str = "MalformedReply";

/// Everything workers share for a whole run, built once: keys, values, the key chooser and, for
/// txn-cas, the last mod_revision seen per key.
pub struct Plan {
    pub workload: Workload,
    pub read_ratio: f64,
    pub keys: KeySpace,
    pub values: ValuePool,
    pub chooser: KeyChooser,
    /// txn-cas compares against these; updated from every reply, monotonically (revisions
    /// only grow, so a slower reply must not overwrite a newer revision).
    pub mod_revisions: Vec<AtomicI64>,
    pub seed: u64,
    /// With watchers: put values carry their send time from this epoch (see `watchers`).
    pub stamp_epoch: Option<Instant>,
}

impl Plan {
    pub fn new(
        workload: Workload,
        read_ratio: f64,
        keys: KeySpace,
        values: ValuePool,
        chooser: KeyChooser,
        seed: u64,
    ) -> Self {
        let cache_len = if workload == Workload::TxnCas {
            keys.count() as usize
        } else {
            0
        };
        let mod_revisions = (0..cache_len).map(|_| AtomicI64::new(0)).collect();
        Self {
            workload,
            read_ratio,
            keys,
            values,
            chooser,
            mod_revisions,
            seed,
            stamp_epoch: None,
        }
    }

    /// Put values start with their send time, for watchers to measure fan-out latency.
    pub fn with_stamps(mut self, epoch: Instant) -> Self {
        self.stamp_epoch = Some(epoch);
        self
    }

    fn note_revision(&self, key_index: u64, revision: i64) {
        if let Some(slot) = self.mod_revisions.get(key_index as usize) {
            slot.fetch_max(revision, Ordering::Relaxed);
        }
    }
}

/// What a successful request did.
enum Outcome {
    Done,
    CasHeld,
    CasConflict,
}

/// One request of the plan's workload on `key_index`; returns its latency and outcome.
async fn execute(
    plan: &Plan,
    kv: &mut Kv,
    key_index: u64,
    value_seq: u64,
    rng: &mut SplitMix64,
) -> (Duration, Result<Outcome, tonic::Status>) {
    let key = plan.keys.key(key_index);
    let put = || {
        let mut value = plan.values.value(value_seq).to_vec();
        if let Some(epoch) = plan.stamp_epoch {
            crate::watchers::stamp(&mut value, epoch);
        }
        PutRequest {
            key: key.to_vec(),
            value,
            ..Default::default()
        }
    };
    let range = |serializable| RangeRequest {
        key: key.to_vec(),
        serializable,
        ..Default::default()
    };
    let read = match plan.workload {
        Workload::Put => Some(false),
        Workload::Get | Workload::GetSerializable => Some(true),
        Workload::Mixed => Some(rng.next_f64() < plan.read_ratio),
        Workload::TxnCas => None,
    };
    match read {
        Some(true) => {
            let req = range(plan.workload == Workload::GetSerializable);
            let t0 = Instant::now();
            let r = kv.range(req).await;
            (t0.elapsed(), r.map(|_| Outcome::Done))
        }
        Some(false) => {
            let req = put();
            let t0 = Instant::now();
            let r = kv.put(req).await;
            (t0.elapsed(), r.map(|_| Outcome::Done))
        }
        None => {
            let rev = plan
                .mod_revisions
                .get(key_index as usize)
                .map_or(0, |r| r.load(Ordering::Relaxed));
            let req = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: key.to_vec(),
                    target_union: Some(TargetUnion::ModRevision(rev)),
                    range_end: Vec::new(),
                }],
                success: vec![RequestOp {
                    request: Some(OpRequest::RequestPut(put())),
                }],
                failure: vec![RequestOp {
                    request: Some(OpRequest::RequestRange(range(false))),
                }],
            };
            let t0 = Instant::now();
            let r = kv.txn(req).await;
            let elapsed = t0.elapsed();
            let outcome = r.and_then(|resp| {
                let resp = resp.into_inner();
                if resp.succeeded {
                    // The txn's revision is the put's, so the key's new mod_revision.
                    let rev = resp.header.map(|h| h.revision).unwrap_or_default();
                    plan.note_revision(key_index, rev);
                    return Ok(Outcome::CasHeld);
                }
                match resp.responses.into_iter().next().and_then(|op| op.response) {
                    Some(OpResponse::ResponseRange(range)) => {
                        // A missing key compares as mod_revision 0, which is what we store.
                        let rev = range.kvs.first().map_or(0, |kv| kv.mod_revision);
                        plan.note_revision(key_index, rev);
                        Ok(Outcome::CasConflict)
                    }
                    _ => Err(tonic::Status::unknown(MALFORMED_REPLY)),
                }
            });
            (elapsed, outcome)
        }
    }
}

fn code_name(status: &tonic::Status) -> String {
    if status.code() == tonic::Code::Unknown && status.message() == MALFORMED_REPLY {
        return MALFORMED_REPLY.to_string();
    }
    format!("{:?}", status.code())
}

/// Spaces request starts `interval` apart across all workers: slot k starts at start + k·interval.
struct RateLimit {
    start: Instant,
    interval: Duration,
    next_slot: AtomicU64,
}

impl RateLimit {
    fn next_start(&self) -> Instant {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        self.start + self.interval.mul_f64(slot as f64)
    }
}

/// The shared clock and counters of one level.
struct Level {
    measure_start: Instant,
    end: Option<Instant>,
    count: Option<u64>,
    claimed: AtomicU64,
    rate: Option<RateLimit>,
    /// Measured replies so far (successes and errors), for the progress line.
    completed: AtomicU64,
    failed: AtomicU64,
}

async fn worker(
    plan: Arc<Plan>,
    level: Arc<Level>,
    mut routes: WorkerRoutes,
    stream: u64,
) -> WorkerStats {
    let mut rng = stream_rng(plan.seed, stream);
    let mut stats = WorkerStats::new();
    // Workers start at different places in the value pool so concurrent writes differ.
    let mut value_seq = rng.next_u64();
    loop {
        let now = Instant::now();
        if level.end.is_some_and(|end| now >= end) {
            break;
        }
        let measuring = now >= level.measure_start;
        if measuring
            && let Some(count) = level.count
            && level.claimed.fetch_add(1, Ordering::Relaxed) >= count
        {
            break;
        }
        if let Some(rate) = &level.rate {
            let start = rate.next_start();
            if start > now {
                tokio::time::sleep_until(start.into()).await;
            }
        }
        let key_index = plan.chooser.choose(&mut rng);
        value_seq = value_seq.wrapping_add(1);
        let kv = routes.kv_for(plan.keys.key(key_index));
        let (latency, result) = execute(&plan, kv, key_index, value_seq, &mut rng).await;
        match result {
            Ok(outcome) => {
                if measuring {
                    stats.ops += 1;
                    stats
                        .latency_ns
                        .saturating_record(latency.as_nanos() as u64);
                    match outcome {
                        Outcome::Done => {}
                        Outcome::CasHeld => stats.cas_succeeded += 1,
                        Outcome::CasConflict => stats.cas_failed += 1,
                    }
                    level.completed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(status) => {
                if measuring {
                    *stats.errors.entry(code_name(&status)).or_default() += 1;
                    level.completed.fetch_add(1, Ordering::Relaxed);
                    level.failed.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.warmup_errors += 1;
                }
                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
            }
        }
    }
    stats
}

/// How one level runs.
pub struct LevelSpec {
    pub in_flight: usize,
    pub stop_after: StopAfter,
    pub warmup: Duration,
    pub rate_ops_s: Option<f64>,
    pub progress: bool,
    pub label: String,
    /// Watchers to measure over this level (`--watchers`).
    pub watchers: Option<Arc<Watchers>>,
}

/// Runs one closed-loop level and merges what the workers measured.
pub async fn run_level(plan: &Arc<Plan>, routes: &Routes, spec: &LevelSpec) -> LevelResult {
    assert!(spec.in_flight > 0, "validated by the caller");
    let start = Instant::now();
    let measure_start = start + spec.warmup;
    let (end, count) = match spec.stop_after {
        StopAfter::Count(n) => (None, Some(n)),
        StopAfter::Duration(d) => (Some(measure_start + d), None),
    };
    let level = Arc::new(Level {
        measure_start,
        end,
        count,
        claimed: AtomicU64::new(0),
        rate: spec.rate_ops_s.map(|r| RateLimit {
            start,
            interval: Duration::from_secs_f64(1.0 / r),
            next_slot: AtomicU64::new(0),
        }),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });

    let done = Arc::new(AtomicBool::new(false));
    let progress = spec.progress.then(|| {
        let (level, done) = (level.clone(), done.clone());
        let prefix = format!(
            "[{}] {} in-flight {}",
            spec.label,
            plan.workload.name(),
            spec.in_flight
        );
        tokio::spawn(progress_line(prefix, level, done))
    });

    // The watchers measure the same window as the workers.
    let watch_begin = spec.watchers.clone().map(|w| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_start.into()).await;
            w.begin();
        })
    });
    let workers: Vec<_> = (0..spec.in_flight)
        .map(|i| {
            let routes = routes.worker(i);
            tokio::spawn(worker(plan.clone(), level.clone(), routes, i as u64))
        })
        .collect();
    let mut merged = WorkerStats::new();
    for w in workers {
        match w.await {
            Ok(stats) => merged.merge(&stats),
            // A worker only panics on a bug in this crate; losing its numbers silently would
            // make the result wrong, so the panic goes on.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    let elapsed = Instant::now().saturating_duration_since(measure_start);
    if let Some(b) = watch_begin {
        let _ = b.await;
    }
    let watch = spec.watchers.as_ref().map(|w| w.end(elapsed));
    done.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.await;
    }
    let mut result = LevelResult::new(
        plan.workload.name(),
        spec.in_flight,
        &merged,
        elapsed,
        plan.workload == Workload::TxnCas,
    );
    result.watch = watch;
    result
}

async fn progress_line(prefix: String, level: Arc<Level>, done: Arc<AtomicBool>) {
    let mut last = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(PROGRESS_INTERVAL_MS));
    tick.tick().await;
    loop {
        tick.tick().await;
        if done.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let completed = level.completed.load(Ordering::Relaxed);
        let failed = level.failed.load(Ordering::Relaxed);
        let line = if now < level.measure_start {
            format!("{prefix}: warming up")
        } else {
            let secs = now
                .duration_since(level.measure_start)
                .as_secs_f64()
                .max(1e-9);
            format!(
                "{prefix}: {completed} ops, {:.0} ops/s last second, {:.0} ops/s so far, {failed} errors",
                (completed - last) as f64 * 1000.0 / PROGRESS_INTERVAL_MS as f64,
                completed as f64 / secs
            )
        };
        last = completed;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err);
}

/// Writes every key once so reads find real values and txn-cas knows each key's revision.
pub async fn preload(plan: &Arc<Plan>, routes: &Routes) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..PRELOAD_IN_FLIGHT.min(plan.keys.count() as usize))
        .map(|i| {
            let mut routes = routes.worker(i);
            let (plan, next) = (plan.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= plan.keys.count() {
                        return Ok(());
                    }
                    let mut attempt = 1;
                    loop {
                        let req = PutRequest {
                            key: plan.keys.key(k).to_vec(),
                            value: plan.values.value(k).to_vec(),
                            ..Default::default()
                        };
                        match routes.kv_for(&req.key).put(req).await {
                            Ok(resp) => {
                                let rev = resp.into_inner().header.map(|h| h.revision).unwrap_or_default();
                                plan.note_revision(k, rev);
                                break;
                            }
                            Err(status) if attempt < PRELOAD_ATTEMPTS_MAX => {
                                attempt += 1;
                                note_preload_retry(&status);
                                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
                            }
                            Err(status) => {
                                anyhow::bail!(
                                    "preloading key {k} failed {PRELOAD_ATTEMPTS_MAX} times, last: {:?}: {}",
                                    status.code(),
                                    status.message()
                                )
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        match t.await {
            Ok(r) => r?,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    Ok(())
}

/// Preload retries are worth a line on stderr: they usually mean an election is under way.
fn note_preload_retry(status: &tonic::Status) {
    eprintln!(
        "preload: retrying after {:?}: {}",
        status.code(),
        status.message()
    );
}
