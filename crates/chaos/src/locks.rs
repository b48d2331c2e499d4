//! The lock-safety workload of `synod chaos --locks N` (Jepsen's etcd lock test, with fencing):
//! N clients over the etcd gRPC API repeatedly take one lock with the Lock service, each under
//! its own lease kept alive while it holds the lock, and while holding it write to a protected
//! register. The write is **fenced**: a Txn that succeeds only if the register's stored token
//! is at most the writer's, the token being the lock key's create revision (what the Lock
//! reply's header carries). Every hold and every write attempt is recorded, and [`check`] tells
//! afterwards whether any two accepted writes took effect out of token order.
//!
//! Why fencing: a lock is only a lease. A holder that stops for longer than its TTL (a paused
//! process, a partitioned member) loses the lock without knowing, the next client takes it,
//! and the first one's write — already on its way — lands after the second's. The report
//! counts such overlaps (holds that intersect in time) and the stale writes fencing refused.
//!
//! The register's value is `<token as 20 digits>/<writer>`, so "stored token ≤ mine" is one
//! value compare: `value < <token+1 as 20 digits>` (byte order = numeric order at equal width).
//!
//! Two testing switches: `--lock-unfenced` writes with a plain Put (the planted bug: a lock
//! without fencing), and `--lock-pause-holder` makes client 0's first hold pause — stop its
//! keep-alives and write nothing — until another holder's write has landed (its lease must
//! have ended for that), then write: a stale holder by construction, not by luck.

use serde::Serialize;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synod_core::SplitMix64;
use synod_etcd::pb::etcdserverpb as epb;
use synod_etcd::pb::etcdserverpb::kv_client::KvClient;
use synod_etcd::pb::etcdserverpb::lease_client::LeaseClient;
use synod_etcd::pb::v3lockpb as lpb;
use synod_etcd::pb::v3lockpb::lock_client::LockClient;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::workload::Clock;

/// The lock every client contends for.
pub const LOCK_NAME: &str = "chaos-lock";
/// The protected register.
pub const REGISTER_KEY: &str = "chaos-lock-register";
/// One RPC other than Lock gives up after this (outcome of a write: unknown).
const RPC_TIMEOUT_MS: u64 = 2_000;
/// A Lock call gives up after this (long enough to outwait a stale holder's lease).
const LOCK_TIMEOUT_MS: u64 = 15_000;
/// Connecting gives up after this.
const CONNECT_TIMEOUT_MS: u64 = 300;
/// Pause after a failed round, so a client of a dead member does not spin.
const RETRY_BACKOFF_MS: u64 = 100;
/// Longest a client holds the lock before writing (drawn uniformly from 0 to this).
const HOLD_MS_MAX: u64 = 200;
/// The paused holder gives up waiting to be overtaken after this (the run then reports it).
const PAUSE_MS_MAX: u64 = 30_000;

/// What the lock clients do.
#[derive(Clone, Debug)]
pub struct LockConfig {
    pub clients: usize,
    /// Lease TTL, seconds (the cluster raises it to its minimum).
    pub ttl_secs: i64,
    /// Write with the fencing Txn (true) or a plain Put (the planted bug).
    pub fenced: bool,
    /// Client 0's first hold pauses past its TTL (see the module doc).
    pub pause_holder: bool,
}

/// One acquisition, as the client saw it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Hold {
    pub client: usize,
    pub token: u64,
    pub acquired_us: u64,
    /// When the client stopped believing it held the lock (it began to release); `None` if
    /// the run ended first.
    pub released_us: Option<u64>,
}

/// How a write to the register ended.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Took effect at this revision.
    Accepted { revision: u64 },
    /// The fence refused it (the register held a larger token).
    Refused,
    /// No answer: it may or may not have taken effect.
    Unknown,
}

/// One write attempt under the lock.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Write {
    pub client: usize,
    pub token: u64,
    pub call_us: u64,
    pub return_us: u64,
    pub outcome: Outcome,
}

/// Shared by the lock clients: what they recorded, and the stop flag.
#[derive(Default)]
pub struct LockRecorder {
    holds: Mutex<Vec<Hold>>,
    writes: Mutex<Vec<Write>>,
    /// Rounds that failed before writing (lease, lock or connection errors).
    failed_rounds: AtomicU64,
    /// The paused holder was never overtaken (the scenario did not happen).
    pause_unfulfilled: AtomicBool,
    stop: AtomicBool,
}

impl LockRecorder {
    fn hold(&self, h: Hold) -> usize {
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.push(h);
        holds.len() - 1
    }

    fn release(&self, i: usize, at_us: u64) {
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = holds.get_mut(i) {
            h.released_us = Some(at_us);
        }
    }

    fn write(&self, w: Write) {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w);
    }
}

/// The lock clients of a run, started by [`LockRun::start`].
pub struct LockRun {
    rec: Arc<LockRecorder>,
    tasks: Vec<JoinHandle<()>>,
    cfg: LockConfig,
}

impl LockRun {
    /// Initialises the register (token 0) through the first member that answers, then starts
    /// the clients; client i talks to member i mod members.
    pub async fn start(
        grpc_addrs: &[String],
        cfg: LockConfig,
        seed: u64,
        clock: Clock,
    ) -> Result<LockRun, String> {
        let channels: Vec<Channel> = grpc_addrs.iter().map(|a| channel(a)).collect();
        init_register(&channels).await?;
        let rec = Arc::new(LockRecorder::default());
        let tasks = (0..cfg.clients)
            .map(|c| {
                let ch = channels[c % channels.len()].clone();
                let client = Contender {
                    id: c,
                    ch,
                    cfg: cfg.clone(),
                    rng: SplitMix64::fork(seed ^ 0x10C4, c as u64),
                    clock,
                    rec: rec.clone(),
                };
                tokio::spawn(client.run())
            })
            .collect();
        Ok(LockRun { rec, tasks, cfg })
    }

    /// Stops the clients (each finishes its round, bounded by the RPC timeouts) and checks.
    pub async fn finish(self) -> LockReport {
        self.rec.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let holds = std::mem::take(&mut *self.rec.holds.lock().unwrap_or_else(|e| e.into_inner()));
        let writes =
            std::mem::take(&mut *self.rec.writes.lock().unwrap_or_else(|e| e.into_inner()));
        let mut report = check(holds, writes);
        report.fenced = self.cfg.fenced;
        report.failed_rounds = self.rec.failed_rounds.load(Ordering::Relaxed);
        report.pause_unfulfilled = self.rec.pause_unfulfilled.load(Ordering::Relaxed);
        report
    }
}

fn channel(addr: &str) -> Channel {
    // A valid address was checked by the cluster config; a bad one fails every RPC instead.
    match Channel::from_shared(format!("http://{addr}")) {
        Ok(e) => e
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .connect_lazy(),
        Err(_) => Channel::from_static("http://0.0.0.0:1").connect_lazy(),
    }
}

/// `<token as 20 digits>/<writer>`.
fn register_value(token: u64, writer: &str) -> Vec<u8> {
    format!("{token:020}/{writer}").into_bytes()
}

async fn init_register(channels: &[Channel]) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        for ch in channels {
            let mut put_client = KvClient::new(ch.clone());
            let put = put_client.put(epb::PutRequest {
                key: REGISTER_KEY.into(),
                value: register_value(0, "init"),
                ..Default::default()
            });
            match tokio::time::timeout(Duration::from_millis(RPC_TIMEOUT_MS), put).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(s)) => last = s.to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
    }
    Err(format!("could not initialise the lock register: {last}"))
}

/// Aborts a task when dropped (the keep-alive of a round).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Contender {
    id: usize,
    ch: Channel,
    cfg: LockConfig,
    rng: SplitMix64,
    clock: Clock,
    rec: Arc<LockRecorder>,
}

async fn timed<T>(
    ms: u64,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_millis(ms), f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err(format!("no answer within {ms} ms")),
    }
}

impl Contender {
    async fn run(mut self) {
        let mut round = 0u64;
        while !self.rec.stop.load(Ordering::Relaxed) {
            if let Err(e) = self.round(round).await {
                // Expected under faults: counted, not logged one by one.
                let _ = e;
                self.rec.failed_rounds.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
            }
            round += 1;
        }
    }

    /// Grant, keep alive, lock, hold, write, release.
    async fn round(&mut self, round: u64) -> Result<(), String> {
        let mut grant_client = LeaseClient::new(self.ch.clone());
        let grant = grant_client.lease_grant(epb::LeaseGrantRequest {
            ttl: self.cfg.ttl_secs,
            id: 0,
        });
        let lease = timed(RPC_TIMEOUT_MS, grant).await?;
        let lease_id = lease.id;
        let keepalive = AbortOnDrop(tokio::spawn(synod_etcd::client::keep_alive(
            self.ch.clone(),
            lease_id,
            lease.ttl,
            Duration::from_millis(RPC_TIMEOUT_MS),
        )));
        let mut lock_client = LockClient::new(self.ch.clone());
        let lock = lock_client.lock(lpb::LockRequest {
            name: LOCK_NAME.into(),
            lease: lease_id,
        });
        let lock = timed(LOCK_TIMEOUT_MS, lock).await;
        let lock = match lock {
            Ok(l) => l,
            Err(e) => {
                self.revoke(lease_id).await;
                return Err(e);
            }
        };
        let token = lock
            .header
            .as_ref()
            .and_then(|h| u64::try_from(h.revision).ok())
            .ok_or("a Lock reply without a header revision")?;
        let hold = self.rec.hold(Hold {
            client: self.id,
            token,
            acquired_us: self.clock.now_us(),
            released_us: None,
        });
        if self.cfg.pause_holder && self.id == 0 && round == 0 {
            drop(keepalive);
            self.pause_until_overtaken(token).await;
        } else {
            let ms = self.rng.below(HOLD_MS_MAX + 1);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.write(token, round).await;
        self.rec.release(hold, self.clock.now_us());
        let mut unlock_client = LockClient::new(self.ch.clone());
        let unlock = unlock_client.unlock(lpb::UnlockRequest { key: lock.key });
        let _ = timed(RPC_TIMEOUT_MS, unlock).await;
        self.revoke(lease_id).await;
        Ok(())
    }

    async fn revoke(&self, id: i64) {
        let mut revoke_client = LeaseClient::new(self.ch.clone());
        let revoke = revoke_client.lease_revoke(epb::LeaseRevokeRequest { id });
        let _ = timed(RPC_TIMEOUT_MS, revoke).await;
    }

    /// The stale holder: no keep-alives, no writes, until the register holds a larger token
    /// (another client took the lock after this one's lease ended, and wrote).
    async fn pause_until_overtaken(&self, token: u64) {
        let give_up = tokio::time::Instant::now() + Duration::from_millis(PAUSE_MS_MAX);
        while tokio::time::Instant::now() < give_up && !self.rec.stop.load(Ordering::Relaxed) {
            let mut read_client = KvClient::new(self.ch.clone());
            let read = read_client.range(epb::RangeRequest {
                key: REGISTER_KEY.into(),
                ..Default::default()
            });
            if let Ok(r) = timed(RPC_TIMEOUT_MS, read).await
                && let Some(kv) = r.kvs.first()
                && stored_token(&kv.value).is_some_and(|t| t > token)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
        }
        self.rec.pause_unfulfilled.store(true, Ordering::Relaxed);
    }

    async fn write(&self, token: u64, round: u64) {
        let value = register_value(token, &format!("c{}r{round}", self.id));
        let put = epb::RequestOp {
            request: Some(epb::request_op::Request::RequestPut(epb::PutRequest {
                key: REGISTER_KEY.into(),
                value,
                ..Default::default()
            })),
        };
        let compare = if self.cfg.fenced {
            vec![epb::Compare {
                result: epb::compare::CompareResult::Less as i32,
                target: epb::compare::CompareTarget::Value as i32,
                key: REGISTER_KEY.into(),
                range_end: Vec::new(),
                target_union: Some(epb::compare::TargetUnion::Value(
                    register_value(token + 1, "")[..20].to_vec(),
                )),
            }]
        } else {
            Vec::new()
        };
        let mut txn_client = KvClient::new(self.ch.clone());
        let txn = txn_client.txn(epb::TxnRequest {
            compare,
            success: vec![put],
            failure: Vec::new(),
        });
        let call_us = self.clock.now_us();
        let outcome = match timed(RPC_TIMEOUT_MS, txn).await {
            Ok(r) if r.succeeded => Outcome::Accepted {
                revision: r
                    .header
                    .and_then(|h| u64::try_from(h.revision).ok())
                    .unwrap_or(0),
            },
            Ok(_) => Outcome::Refused,
            Err(_) => Outcome::Unknown,
        };
        self.rec.write(Write {
            client: self.id,
            token,
            call_us,
            return_us: self.clock.now_us(),
            outcome,
        });
    }
}

/// The token at the front of a register value.
fn stored_token(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v.get(..20)?).ok()?.parse().ok()
}

/// The verdict over a run's holds and writes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockReport {
    pub fenced: bool,
    pub acquisitions: usize,
    pub writes_accepted: usize,
    pub writes_unknown: usize,
    /// Stale writes the fence refused.
    pub stale_refused: usize,
    /// Pairs of holds by different clients that intersect in time (a holder that lost its
    /// lease without knowing).
    pub overlaps: usize,
    /// Accepted writes that took effect after an accepted write with a larger token:
    /// (earlier-in-effect write, later write with the smaller token).
    pub out_of_order: Vec<(Write, Write)>,
    pub failed_rounds: u64,
    pub pause_unfulfilled: bool,
    #[serde(skip)]
    pub holds: Vec<Hold>,
    #[serde(skip)]
    pub writes: Vec<Write>,
}

/// Checks that accepted writes, in the order they took effect (their revisions), never go back
/// in token order; counts overlapping holds and refused stale writes.
pub fn check(holds: Vec<Hold>, writes: Vec<Write>) -> LockReport {
    let mut accepted: Vec<(u64, &Write)> = writes
        .iter()
        .filter_map(|w| match w.outcome {
            Outcome::Accepted { revision } => Some((revision, w)),
            _ => None,
        })
        .collect();
    accepted.sort_by_key(|(rev, _)| *rev);
    let mut out_of_order = Vec::new();
    let mut highest: Option<&Write> = None;
    for (_, w) in &accepted {
        match highest {
            Some(h) if w.token < h.token => out_of_order.push(((*h).clone(), (*w).clone())),
            Some(h) if w.token <= h.token => {}
            _ => highest = Some(w),
        }
    }
    let end = |h: &Hold| h.released_us.unwrap_or(u64::MAX);
    let mut overlaps = 0;
    for (i, a) in holds.iter().enumerate() {
        for b in &holds[i + 1..] {
            if a.client != b.client && a.acquired_us < end(b) && b.acquired_us < end(a) {
                overlaps += 1;
            }
        }
    }
    let count = |o: fn(&Outcome) -> bool| writes.iter().filter(|w| o(&w.outcome)).count();
    LockReport {
        acquisitions: holds.len(),
        writes_accepted: accepted.len(),
        writes_unknown: count(|o| *o == Outcome::Unknown),
        stale_refused: count(|o| *o == Outcome::Refused),
        overlaps,
        out_of_order,
        holds,
        writes,
        ..Default::default()
    }
}

impl LockReport {
    /// No accepted write went back in token order.
    pub fn safe(&self) -> bool {
        self.out_of_order.is_empty()
    }

    /// The report's lock section.
    pub fn render(&self) -> String {
        let mut r = format!(
            "locks ({}): {} acquisitions, {} writes accepted, {} unknown, {} stale writes \
             refused by the fence, {} overlapping holds, {} failed rounds\n",
            if self.fenced { "fenced" } else { "UNFENCED" },
            self.acquisitions,
            self.writes_accepted,
            self.writes_unknown,
            self.stale_refused,
            self.overlaps,
            self.failed_rounds,
        );
        if self.pause_unfulfilled {
            r.push_str("locks: warning: the paused holder was never overtaken\n");
        }
        if self.safe() {
            r.push_str("locks verdict: SAFE (accepted writes in token order)\n");
        } else {
            r.push_str(&format!(
                "locks verdict: UNSAFE — {} accepted writes out of token order, first: {:?}\n",
                self.out_of_order.len(),
                self.out_of_order.first()
            ));
        }
        r
    }

    /// The numbers for summary.json.
    pub fn numbers(&self) -> serde_json::Value {
        json!({
            "safe": self.safe(), "fenced": self.fenced, "acquisitions": self.acquisitions,
            "writes_accepted": self.writes_accepted, "writes_unknown": self.writes_unknown,
            "stale_refused": self.stale_refused, "overlaps": self.overlaps,
            "out_of_order": self.out_of_order.len(), "failed_rounds": self.failed_rounds,
            "pause_unfulfilled": self.pause_unfulfilled,
        })
    }

    /// Every hold and write, for locks.json.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&json!({"holds": self.holds, "writes": self.writes}))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(client: usize, token: u64, outcome: Outcome) -> Write {
        Write {
            client,
            token,
            call_us: 0,
            return_us: 0,
            outcome,
        }
    }

    fn hold(client: usize, token: u64, from: u64, to: u64) -> Hold {
        Hold {
            client,
            token,
            acquired_us: from,
            released_us: Some(to),
        }
    }

    #[test]
    fn accepted_writes_out_of_token_order_are_caught() {
        let acc = |revision| Outcome::Accepted { revision };
        let good = check(
            vec![hold(0, 5, 0, 10), hold(1, 8, 11, 20)],
            vec![w(0, 5, acc(6)), w(1, 8, acc(9)), w(0, 5, Outcome::Refused)],
        );
        assert!(good.safe());
        assert_eq!((good.overlaps, good.stale_refused), (0, 1));
        // The stale holder (token 5) overlapped token 8's hold, and its write landed after.
        let bad = check(
            vec![hold(0, 5, 0, 30), hold(1, 8, 11, 20)],
            vec![w(1, 8, acc(9)), w(0, 5, acc(12))],
        );
        assert!(!bad.safe());
        assert_eq!(bad.overlaps, 1);
        assert_eq!(bad.out_of_order[0].1.token, 5);
    }

    #[test]
    fn the_fence_compares_tokens_as_fixed_width_digits() {
        assert!(register_value(9, "x") < register_value(10, "")[..20].to_vec());
        assert!(register_value(10, "x").as_slice() > &register_value(10, "")[..20]);
        assert_eq!(stored_token(&register_value(42, "c1r2")), Some(42));
        assert_eq!(stored_token(b"junk"), None);
    }
}
