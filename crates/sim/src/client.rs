//! Simulated clients: the random workload and the translation between engine requests/replies
//! and the history format the checker reads.
//!
//! The workload is built to make linearizability bugs visible: few keys (operations collide),
//! every written value distinct (`c<client>s<seq>`, so a read names the write it saw), and CAS
//! in all three forms (by value, by version, expect absent) so lost updates show up as two
//! successful CAS from the same expectation.

use std::collections::{BTreeMap, VecDeque};
use synod_checker::leases::LeaseOpKind;
use synod_core::history::{Expected, HistoryOp, OpKind, Output, ReadConsistency};
use synod_core::kv::{
    CasAction, CasRequest, DeleteRangeRequest, Expect, Op, PutRequest, RangeRequest, Response,
    ResponseBody,
};
use synod_core::{ClientId, ClientRequest, Consistency, NodeId, RequestId, SplitMix64};

/// Most attempts (first try + retries at other nodes) for one operation; past it the client
/// gives up, records the outcome as unknown and continues under a fresh session.
pub const CLIENT_ATTEMPTS_MAX: u32 = 64;

/// One operation a client has open.
#[derive(Clone, Debug)]
pub struct OpenOp {
    pub request: ClientRequest,
    /// The history entry, without output/return until the final reply.
    pub hist: HistoryOp,
    pub attempt: u32,
    /// An earlier attempt may have been applied: it timed out, or was answered `Timeout`.
    /// A definite error on a later attempt then says nothing about the operation as a whole.
    pub maybe_applied: bool,
    /// The node the current attempt went to.
    pub node: NodeId,
    pub is_read: bool,
    /// Where the first attempt goes (scripted reads); `None` = a random node.
    pub first_node: Option<NodeId>,
    /// A watch-workload operation (see [`crate::watch_ops`]): judged by the watch checker,
    /// never entered in the linearizability history.
    pub watch_extra: bool,
    /// A lease-workload operation (see [`crate::lease_ops`]): judged by the lease checker,
    /// never entered in the linearizability history.
    pub lease: Option<LeaseOpKind>,
    /// A compaction-workload operation (`sim/compactions.rs`): judged by its own check,
    /// never entered in the linearizability history.
    pub compaction: Option<crate::sim::compactions::Extra>,
}

impl OpenOp {
    /// Whether the operation goes into the linearizability history (a register operation).
    pub fn in_history(&self) -> bool {
        !self.watch_extra && self.lease.is_none() && self.compaction.is_none()
    }
}

#[derive(Clone, Debug)]
pub struct SimClient {
    /// Current session; replaced when an outcome stays unknown, so a client never has two
    /// operations open in the history under one id.
    pub id: ClientId,
    /// Seq of the current (or next) request; also its `first_unacked`.
    pub seq: u64,
    pub ops_started: usize,
    pub open: Option<OpenOp>,
    /// `None` for a workload client (random operations). `Some` for the simulator's own
    /// final-read client: the (key, node) reads it still has to make, in order.
    pub script: Option<VecDeque<(String, NodeId)>>,
}

impl SimClient {
    pub fn workload(id: ClientId) -> Self {
        SimClient {
            id,
            seq: 1,
            ops_started: 0,
            open: None,
            script: None,
        }
    }
}

/// What the workload has seen of each key, to aim CAS expectations at plausible states.
#[derive(Default)]
pub struct Knowledge {
    last: BTreeMap<String, (Option<String>, u64)>,
}

impl Knowledge {
    pub fn observe(&mut self, key: &str, value: Option<String>, version: u64) {
        self.last.insert(key.to_string(), (value, version));
    }
}

pub fn key_name(i: u64) -> String {
    format!("k{i}")
}

/// Draws the next operation for `client`. Returns the request and its history entry.
pub fn next_op(
    rng: &mut SplitMix64,
    (keys, range_deletes): (u64, bool),
    client: ClientId,
    seq: u64,
    knowledge: &Knowledge,
    now_us: u64,
) -> (ClientRequest, HistoryOp) {
    let key = key_name(rng.below(keys));
    let value = format!("c{}s{}", client.0, seq);
    let mut hist = HistoryOp {
        client: client.0,
        op: OpKind::Get,
        key: key.clone(),
        value: None,
        expected: None,
        consistency: ReadConsistency::Linearizable,
        output: None,
        call: now_us,
        ret: None,
    };
    let mut consistency = Consistency::Linearizable;
    let roll = rng.below(100);
    let op = if roll < 30 {
        if rng.below(3) == 0 {
            consistency = Consistency::Sequential;
            hist.consistency = ReadConsistency::Sequential;
        }
        Op::Range(RangeRequest::key(key.as_bytes().to_vec()))
    } else if roll < 60 {
        hist.op = OpKind::Put;
        hist.value = Some(value.clone());
        Op::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.into_bytes(),
            prev_kv: false,
            ..Default::default()
        })
    } else if roll < 70 {
        hist.op = OpKind::Delete;
        if range_deletes && rng.below(2) == 0 {
            // From this key to another, in key order (`k10` sorts before `k2`).
            let other = key_name(rng.below(keys));
            let (start, mut end) = match key <= other {
                true => (key.clone(), other),
                false => (other, key.clone()),
            };
            if start == end {
                end.push('\0'); // the key alone
            }
            hist.key = start.clone();
            Op::DeleteRange(DeleteRangeRequest {
                key: start.into_bytes(),
                range_end: end.into_bytes(),
                prev_kv: true,
            })
        } else {
            Op::DeleteRange(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                range_end: Vec::new(),
                prev_kv: false,
            })
        }
    } else {
        hist.op = OpKind::Cas;
        let seen = knowledge.last.get(&key).cloned().unwrap_or((None, 0));
        let (expect, expected) = match rng.below(3) {
            0 => (Expect::Absent, Expected::Absent),
            1 => {
                let v = seen.0.unwrap_or_else(|| "never-written".into());
                (Expect::Value(v.clone().into_bytes()), Expected::Value(v))
            }
            _ => {
                let n = if seen.1 > 0 { seen.1 } else { rng.range(1, 3) };
                (Expect::Version(n), Expected::Version(n))
            }
        };
        hist.expected = Some(expected);
        // One CAS in eight deletes on success, so "absent" keeps coming back.
        let then = if rng.below(8) == 0 {
            CasAction::Delete
        } else {
            hist.value = Some(value.clone());
            CasAction::Put(value.into_bytes())
        };
        Op::Cas(CasRequest {
            key: key.as_bytes().to_vec(),
            expect,
            then,
        })
    };
    let request = ClientRequest {
        id: RequestId { client, seq },
        first_unacked: seq,
        op,
        consistency,
    };
    (request, hist)
}

/// The history entry of a linearizable read of `key` called at `now_us`; also the placeholder
/// of an operation kept out of the history (`key` names its workload; only the call time is
/// used, for the liveness bound).
pub fn read_hist(client: u64, key: String, now_us: u64) -> HistoryOp {
    HistoryOp {
        client,
        op: OpKind::Get,
        key,
        value: None,
        expected: None,
        consistency: ReadConsistency::Linearizable,
        output: None,
        call: now_us,
        ret: None,
    }
}

/// A linearizable read of `key` (the simulator's final reads).
pub fn read_op(key: &str, client: ClientId, seq: u64, now_us: u64) -> (ClientRequest, HistoryOp) {
    let key = key.to_string();
    let hist = read_hist(client.0, key.clone(), now_us);
    let request = ClientRequest {
        id: RequestId { client, seq },
        first_unacked: seq,
        op: Op::Range(RangeRequest::key(key.into_bytes())),
        consistency: Consistency::Linearizable,
    };
    (request, hist)
}

/// The history output for a successful reply, or `None` when the reply does not match the
/// request (which the simulator reports as a failure in its own right).
pub fn output_of(kind: OpKind, response: &Response) -> Option<Output> {
    match (kind, &response.body) {
        (OpKind::Get, ResponseBody::Range(r)) => Some(match r.kvs.first() {
            Some(kv) => Output {
                value: Some(String::from_utf8_lossy(&kv.value).into_owned()),
                version: Some(kv.version),
                ..Default::default()
            },
            None => Output {
                version: Some(0),
                ..Default::default()
            },
        }),
        (OpKind::Put, ResponseBody::Put(_)) => Some(Output::default()),
        (OpKind::Delete, ResponseBody::DeleteRange(d)) => Some(Output {
            deleted: Some(d.deleted),
            ..Default::default()
        }),
        (OpKind::Cas, ResponseBody::Cas(c)) => Some(Output {
            succeeded: Some(c.succeeded),
            ..Default::default()
        }),
        _ => None,
    }
}

/// The history entries of an operation: itself, or for a delete of a range of keys one delete
/// of each key of the workload's in the range — deleted (1) if the answer's previous values
/// hold it, else 0 — all with the request's call and return (unknown: `response` is none).
/// The checker partitions by key, so each is judged in its key's history.
pub fn history_entries(
    hist: HistoryOp,
    request: &ClientRequest,
    keys: u64,
    response: Option<&Response>,
) -> Vec<HistoryOp> {
    let Op::DeleteRange(d) = &request.op else {
        return vec![hist];
    };
    if d.range_end.is_empty() {
        return vec![hist];
    }
    let within = |k: &String| k.as_bytes() >= d.key.as_slice() && k.as_bytes() < &d.range_end[..];
    let prev = match response.map(|r| &r.body) {
        Some(ResponseBody::DeleteRange(dr)) => Some(&dr.prev_kvs),
        _ => None,
    };
    (0..keys)
        .map(key_name)
        .filter(within)
        .map(|key| {
            let output = prev.map(|kvs| Output {
                deleted: Some(u64::from(kvs.iter().any(|kv| kv.key == key.as_bytes()))),
                ..Default::default()
            });
            HistoryOp {
                key,
                output,
                ..hist.clone()
            }
        })
        .collect()
}

/// What a completed op tells the workload about its key.
pub fn learn(knowledge: &mut Knowledge, hist: &HistoryOp, response: &Response) {
    match &response.body {
        ResponseBody::Range(r) => match r.kvs.first() {
            Some(kv) => knowledge.observe(
                &hist.key,
                Some(String::from_utf8_lossy(&kv.value).into_owned()),
                kv.version,
            ),
            None => knowledge.observe(&hist.key, None, 0),
        },
        ResponseBody::Cas(c) => match &c.kv {
            Some(kv) => knowledge.observe(
                &hist.key,
                Some(String::from_utf8_lossy(&kv.value).into_owned()),
                kv.version,
            ),
            None => knowledge.observe(&hist.key, None, 0),
        },
        _ => {}
    }
}
