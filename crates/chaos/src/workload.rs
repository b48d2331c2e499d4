//! The chaos clients: concurrent single-key get / put / delete / cas over a small key set through
//! the real HTTP/JSON API (docs/http-api.md), each client pinned to one member so availability
//! can be reported per member. Every operation is recorded in the history format
//! (`synod_core::history`):
//!
//! * a definite answer (200, 404 `key_not_found`, 409 `cas_conflict`) → the output;
//! * a client timeout, a broken connection after sending, 503 `unavailable` or 500 → outcome
//!   unknown: recorded without output and return, and the client continues under a *new*
//!   client id, because the unknown operation stays open forever and one client id may have only
//!   one open operation;
//! * a definite error (refused connection, 4xx, 503 `busy` or `no_leader`) → left out: it had
//!   no effect.
//!
//! Values are unique (`c<client>s<seq>`), which is what lets the checker tell writes apart.

use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_checker::watch::AckedWrite;
use synod_core::SplitMix64;
use synod_core::history::{Expected, HistoryOp, OpKind, Output};

/// A client gives up on an answer after this; the outcome is then unknown.
pub const CLIENT_TIMEOUT_MS: u64 = 2_000;
/// Connecting to a member gives up after this (a refused or timed-out connect sent nothing).
const CONNECT_TIMEOUT_MS: u64 = 300;
/// Pause after a failed attempt, so a client of a dead member does not spin.
const RETRY_BACKOFF_MS: u64 = 50;

/// The one monotonic clock of a run: every time in the history and the schedule is µs from it.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn now_us(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn instant_at_ms(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

/// One completed attempt with a definite answer: for availability.
#[derive(Clone, Copy, Debug)]
pub struct Success {
    /// Index of the member the client talks to.
    pub node: usize,
    pub call_us: u64,
    pub return_us: u64,
}

/// What all clients share: the history being recorded and the stop flag.
#[derive(Default)]
pub struct Recorder {
    pub ops: Mutex<Vec<HistoryOp>>,
    pub successes: Mutex<Vec<Success>>,
    pub ok: AtomicU64,
    pub unknown: AtomicU64,
    pub failed: AtomicU64,
    /// Successful writes with the revision their answer named (engines with revisions).
    pub writes: Mutex<Vec<AckedWrite>>,
    pub stop: AtomicBool,
    /// Next client id handed to a client after an unknown outcome.
    next_client_id: AtomicU64,
}

impl Recorder {
    pub fn new(clients: usize) -> Recorder {
        Recorder {
            next_client_id: AtomicU64::new(clients as u64 + 1),
            ..Recorder::default()
        }
    }
}

#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub keys: usize,
    /// Share of gets, in percent; the rest is split put 40 / cas 40 / delete 20.
    pub read_percent: u64,
}

/// Runs one client against `http_addr` until the recorder's stop flag is set.
pub async fn run_client(
    index: usize,
    node: usize,
    http_addr: String,
    seed: u64,
    cfg: WorkloadConfig,
    clock: Clock,
    rec: Arc<Recorder>,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_millis(CLIENT_TIMEOUT_MS))
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .pool_max_idle_per_host(1)
        .build()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    let base = format!("http://{http_addr}/v1/kv");
    let mut rng = SplitMix64::new(seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut client_id = index as u64 + 1;
    let mut seq = 0u64;
    // What this client last saw per key, to make CAS expectations that sometimes hold.
    let mut seen: Vec<Option<(String, u64)>> = vec![None; cfg.keys.max(1)];
    while !rec.stop.load(Ordering::Relaxed) {
        let k = rng.below(cfg.keys.max(1) as u64) as usize;
        let key = format!("k{k}");
        seq += 1;
        let value = format!("c{}s{seq}", index + 1);
        let roll = rng.below(100);
        let write_roll = rng.below(100);
        let (kind, expected, new_value) = if roll < cfg.read_percent {
            (OpKind::Get, None, None)
        } else if write_roll < 40 {
            (OpKind::Put, None, Some(value))
        } else if write_roll < 80 {
            let e = match (&seen[k], rng.below(3)) {
                (Some((v, _)), 0) => Expected::Value(v.clone()),
                (Some((_, ver)), 1) => Expected::Version(*ver),
                _ => Expected::Absent,
            };
            // One CAS in ten deletes the key when its expectation holds.
            let nv = if rng.chance_permille(100) {
                None
            } else {
                Some(value)
            };
            (OpKind::Cas, Some(e), nv)
        } else {
            (OpKind::Delete, None, None)
        };
        let url = format!("{base}/{key}");
        let req = match kind {
            OpKind::Get => http.get(&url),
            OpKind::Put => http
                .put(&url)
                .json(&serde_json::json!({ "value": new_value })),
            OpKind::Delete => http.delete(&url),
            OpKind::Cas => {
                let expect = match &expected {
                    Some(Expected::Value(v)) => serde_json::json!({ "value": v }),
                    Some(Expected::Version(n)) => serde_json::json!({ "version": n }),
                    _ => serde_json::json!("absent"),
                };
                http.post(format!("{url}/cas"))
                    .json(&serde_json::json!({ "expect": expect, "value": new_value }))
            }
        };
        let call = clock.now_us();
        let (outcome, body) = classify(kind, req.send().await).await;
        let ret = clock.now_us();
        let mut op = HistoryOp {
            client: client_id,
            op: kind,
            key,
            value: new_value,
            expected,
            consistency: Default::default(),
            output: None,
            call,
            ret: None,
        };
        match outcome {
            Outcome::Ok(output, kv) => {
                if let Some(kv) = kv {
                    seen[k] = kv;
                }
                if let Some(w) = acked_write(kind, &op.key, op.value.as_deref(), &body) {
                    rec.writes.lock().unwrap_or_else(|e| e.into_inner()).push(w);
                }
                op.output = Some(output);
                op.ret = Some(ret);
                rec.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
                rec.successes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Success {
                        node,
                        call_us: call,
                        return_us: ret,
                    });
                rec.ok.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Unknown => {
                rec.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
                rec.unknown.fetch_add(1, Ordering::Relaxed);
                client_id = rec.next_client_id.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
            }
            Outcome::Failed => {
                rec.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
            }
        }
    }
}

/// What became of one request. `Ok` carries the output and, when the answer showed the key,
/// what the client now knows of it (`Some(None)` = absent).
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok(Output, Option<Option<(String, u64)>>),
    Unknown,
    Failed,
}

/// The outcome, and the answer's body (null if there was none).
async fn classify(kind: OpKind, r: Result<reqwest::Response, reqwest::Error>) -> (Outcome, Value) {
    let resp = match r {
        Ok(r) => r,
        // Nothing was sent: a refused or timed-out connect.
        Err(e) if e.is_connect() => return (Outcome::Failed, Value::Null),
        Err(_) => return (Outcome::Unknown, Value::Null),
    };
    let status = resp.status().as_u16();
    let body: Value = match resp.json().await {
        Ok(v) => v,
        // The answer was lost mid-body: we cannot tell what happened.
        Err(_) => return (Outcome::Unknown, Value::Null),
    };
    (classify_answer(kind, status, &body), body)
}

/// The change a successful write's answer acknowledges at the revision it names, for the
/// watch checker: a put (or CAS) of the value, a delete (or deleting CAS) of an existing key.
/// `None` for reads, for answers without a revision (caspaxos) and for writes that changed
/// nothing (a delete of a missing key, a failed CAS).
fn acked_write(kind: OpKind, key: &str, value: Option<&str>, body: &Value) -> Option<AckedWrite> {
    let revision = body.get("revision").and_then(Value::as_u64)?;
    let change = match (kind, value) {
        (OpKind::Put, Some(v)) => Some(v.as_bytes().to_vec()),
        (OpKind::Delete, _) if body.get("deleted").and_then(Value::as_u64)? > 0 => None,
        (OpKind::Cas, Some(v)) if body.get("succeeded")?.as_bool()? => Some(v.as_bytes().to_vec()),
        (OpKind::Cas, None)
            if body.get("succeeded")?.as_bool()? && !body.get("prev_kv")?.is_null() =>
        {
            None
        }
        _ => return None,
    };
    Some(AckedWrite {
        what: format!("{kind:?} {key}={}", value.unwrap_or("(delete)")),
        revision,
        changes: vec![(key.as_bytes().to_vec(), change)],
    })
}

fn kv_of(v: &Value) -> Option<(String, u64)> {
    let kv = v.as_object()?;
    Some((
        kv.get("value")?.as_str()?.to_string(),
        kv.get("version")?.as_u64()?,
    ))
}

fn classify_answer(kind: OpKind, status: u16, body: &Value) -> Outcome {
    let code = body
        .get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match (status, kind, code) {
        (200, OpKind::Get, _) => {
            let Some((value, version)) = body.get("kv").and_then(kv_of) else {
                return Outcome::Unknown;
            };
            Outcome::Ok(
                Output {
                    value: Some(value.clone()),
                    version: Some(version),
                    ..Output::default()
                },
                Some(Some((value, version))),
            )
        }
        (404, OpKind::Get, "key_not_found") => Outcome::Ok(
            Output {
                version: Some(0),
                ..Output::default()
            },
            Some(None),
        ),
        (200, OpKind::Put, _) => {
            let kv = body.get("kv").and_then(kv_of);
            Outcome::Ok(
                Output {
                    version: kv.as_ref().map(|k| k.1),
                    ..Output::default()
                },
                kv.map(Some),
            )
        }
        (200, OpKind::Delete, _) => Outcome::Ok(
            Output {
                deleted: Some(body.get("deleted").and_then(Value::as_u64).unwrap_or(1)),
                ..Output::default()
            },
            Some(None),
        ),
        (404, OpKind::Delete, "key_not_found") => Outcome::Ok(
            Output {
                deleted: Some(0),
                ..Output::default()
            },
            Some(None),
        ),
        (200, OpKind::Cas, _) => Outcome::Ok(
            Output {
                succeeded: Some(true),
                ..Output::default()
            },
            Some(body.get("kv").and_then(kv_of)),
        ),
        (409, OpKind::Cas, "cas_conflict") => Outcome::Ok(
            Output {
                succeeded: Some(false),
                ..Output::default()
            },
            Some(body.get("kv").and_then(kv_of)),
        ),
        // Overloaded: refused before reaching the engine.
        // Refused at the edge before reaching the engine: no effect.
        (503, _, "busy" | "no_leader") => Outcome::Failed,
        // No quorum / no answer in time: a write may have been applied.
        (503, _, _) | (500..=599, _, _) => Outcome::Unknown,
        // Any other 4xx was refused at the edge and changed nothing.
        (400..=499, _, _) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_map_to_outputs_unknowns_and_failures() {
        let kv = json!({"kv": {"key": "k", "value": "v", "version": 3}});
        assert_eq!(
            classify_answer(OpKind::Get, 200, &kv),
            Outcome::Ok(
                Output {
                    value: Some("v".into()),
                    version: Some(3),
                    ..Output::default()
                },
                Some(Some(("v".into(), 3)))
            )
        );
        let nf = json!({"error": {"code": "key_not_found"}});
        assert!(
            matches!(classify_answer(OpKind::Get, 404, &nf), Outcome::Ok(o, _) if o.version == Some(0) && o.value.is_none())
        );
        assert!(
            matches!(classify_answer(OpKind::Delete, 404, &nf), Outcome::Ok(o, _) if o.deleted == Some(0))
        );
        let conflict = json!({"error": {"code": "cas_conflict"}, "kv": null});
        assert!(
            matches!(classify_answer(OpKind::Cas, 409, &conflict), Outcome::Ok(o, Some(None)) if o.succeeded == Some(false))
        );
        let unavailable = json!({"error": {"code": "unavailable"}});
        assert_eq!(
            classify_answer(OpKind::Put, 503, &unavailable),
            Outcome::Unknown
        );
        let busy = json!({"error": {"code": "busy"}});
        assert_eq!(classify_answer(OpKind::Put, 503, &busy), Outcome::Failed);
        let no_leader = json!({"error": {"code": "no_leader"}});
        assert_eq!(
            classify_answer(OpKind::Put, 503, &no_leader),
            Outcome::Failed
        );
        let bad = json!({"error": {"code": "invalid_request"}});
        assert_eq!(classify_answer(OpKind::Cas, 400, &bad), Outcome::Failed);
        assert_eq!(
            classify_answer(OpKind::Put, 500, &json!({})),
            Outcome::Unknown
        );
        // A 200 get without a readable kv is not believed.
        assert_eq!(
            classify_answer(OpKind::Get, 200, &json!({"kv": 5})),
            Outcome::Unknown
        );
    }
}
