//! The watch workload: what runs with watchers add to the clients' operations, and what every
//! reply tells the watch checker.
//!
//! The linearizability checker models each key as a register, so it cannot judge a range, a
//! read at a past revision, a compaction or a transaction over several keys. Those operations
//! stay out of its history and are judged by the watch checker instead, against the revision
//! sequence the replicas applied: a range read (current or past) must equal the replayed store
//! at its revision, an acknowledged write must be in the revision its reply names, a
//! transaction's compare must have held exactly when the replayed key satisfied it. The
//! transactions write their own keys (`w/…`) so that the registers the linearizability checker
//! follows (`k0`, `k1`, …) never change behind its back; deletes over the `w/` prefix make
//! revisions with several events, which is what "a revision is delivered whole" is about.
//!
//! Compactions aim a little below the highest revision any reply reported, so they happen
//! while watchers are catching up, and on a lagging replica in the same batch as the writes
//! just below them.

use crate::client::key_name;
use synod_checker::watch::{AckedWrite, RangeRead, VersionCompare};
use synod_core::history::HistoryOp;
use synod_core::kv::{
    CompactRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest, Key, Op, PutRequest,
    RangeRequest, Response, ResponseBody, TxnOp, TxnRequest, prefix_end,
};
use synod_core::{ClientId, ClientRequest, Consistency, NodeId, RequestId, SplitMix64};

/// Of the operations a client starts in a run with watchers, this many percent are watch
/// workload (the rest is the ordinary register workload).
pub const EXTRA_PERCENT: u64 = 20;
/// The transactions' keys.
pub const TXN_KEYS: [&str; 4] = ["w/a", "w/b", "w/c", "w/d"];
pub const TXN_PREFIX: &str = "w/";
/// A compaction aims at most this many revisions below the highest one a reply reported.
pub const COMPACT_LAG_MAX: u64 = 4;
/// A read at a past revision reads at most this many revisions back.
pub const PAST_READ_LAG_MAX: u64 = 16;

/// A random etcd key range over the workload's keys: one register key, the register prefix,
/// the transaction prefix, a span of register keys, or everything.
pub fn random_range(rng: &mut SplitMix64, keys: u64) -> (Key, Key) {
    match rng.below(5) {
        0 => (key_name(rng.below(keys)).into_bytes(), Vec::new()),
        1 => (b"k".to_vec(), prefix_end(b"k")),
        2 => (
            TXN_PREFIX.as_bytes().to_vec(),
            prefix_end(TXN_PREFIX.as_bytes()),
        ),
        3 => (b"k1".to_vec(), b"k3".to_vec()),
        _ => (vec![0], vec![0]),
    }
}

/// Draws a watch-workload operation. The history entry is a placeholder: these operations never
/// enter the linearizability history (only its call time is used, for the liveness bound).
pub fn extra_op(
    rng: &mut SplitMix64,
    keys: u64,
    client: ClientId,
    seq: u64,
    known_revision: u64,
    now_us: u64,
) -> (ClientRequest, HistoryOp) {
    let value = format!("c{}s{}", client.0, seq).into_bytes();
    let mut consistency = Consistency::Linearizable;
    let roll = rng.below(100);
    let (what, op) = if roll < 25 {
        let revision = known_revision
            .saturating_sub(rng.below(COMPACT_LAG_MAX))
            .max(1);
        (
            "compact",
            Op::Compact(CompactRequest {
                revision,
                physical: rng.below(2) == 0,
            }),
        )
    } else if roll < 60 {
        let (key, range_end) = random_range(rng, keys);
        if rng.below(3) == 0 {
            consistency = Consistency::Sequential;
        }
        let revision = known_revision.saturating_sub(rng.below(PAST_READ_LAG_MAX));
        let r = RangeRequest {
            key,
            range_end,
            revision,
            ..Default::default()
        };
        ("range at a revision", Op::Range(r))
    } else if roll < 85 {
        ("txn", Op::Txn(txn(rng, value)))
    } else {
        (
            "delete prefix",
            Op::DeleteRange(DeleteRangeRequest {
                key: TXN_PREFIX.as_bytes().to_vec(),
                range_end: prefix_end(TXN_PREFIX.as_bytes()),
                prev_kv: true,
            }),
        )
    };
    let hist = crate::client::read_hist(client.0, format!("(watch workload: {what})"), now_us);
    let request = ClientRequest {
        id: RequestId { client, seq },
        first_unacked: seq,
        op,
        consistency,
    };
    (request, hist)
}

/// If `version(w/x) == n` then put two `w/` keys, else read the `w/` prefix.
fn txn(rng: &mut SplitMix64, value: Vec<u8>) -> TxnRequest {
    let mut keys = TXN_KEYS.to_vec();
    rng.shuffle(&mut keys);
    let put = |k: &str| {
        TxnOp::Put(PutRequest {
            key: k.as_bytes().to_vec(),
            value: value.clone(),
            prev_kv: false,
            ..Default::default()
        })
    };
    TxnRequest {
        compare: vec![Compare {
            key: keys[2].as_bytes().to_vec(),
            range_end: Vec::new(),
            target: CompareTarget::Version(rng.below(3)),
            result: CompareResult::Equal,
        }],
        success: vec![put(keys[0]), put(keys[1])],
        failure: vec![TxnOp::Range(RangeRequest::prefix(TXN_PREFIX))],
    }
}

/// What replies told the watch checker so far.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub reads: Vec<RangeRead>,
    pub writes: Vec<AckedWrite>,
    pub compares: Vec<VersionCompare>,
}

impl Observed {
    /// Records what the successful reply `response` from `node` to `op` claims.
    pub fn note(&mut self, node: NodeId, op: &Op, response: &Response) {
        let revision = response.revision;
        match (op, &response.body) {
            (Op::Range(r), ResponseBody::Range(rr)) => self.read(node, r, revision, &rr.kvs),
            (Op::Put(p), ResponseBody::Put(_)) => self.write(
                format!("put {}", show_kv(&p.key, &p.value)),
                revision,
                vec![(p.key.clone(), Some(p.value.clone()))],
            ),
            (Op::DeleteRange(d), ResponseBody::DeleteRange(dr)) if dr.deleted > 0 => {
                let keys: Vec<Key> = if d.range_end.is_empty() {
                    vec![d.key.clone()]
                } else {
                    dr.prev_kvs.iter().map(|kv| kv.key.clone()).collect()
                };
                let what = format!("delete of {} key(s)", keys.len());
                self.write(
                    what,
                    revision,
                    keys.into_iter().map(|k| (k, None)).collect(),
                );
            }
            (Op::Cas(c), ResponseBody::Cas(cr)) if cr.succeeded => match &c.then {
                synod_core::kv::CasAction::Put(v) => self.write(
                    format!("cas {}", show_kv(&c.key, v)),
                    revision,
                    vec![(c.key.clone(), Some(v.clone()))],
                ),
                // A delete of an absent key changes nothing: no revision to look in.
                synod_core::kv::CasAction::Delete if cr.prev_kv.is_some() => self.write(
                    format!("cas delete {}", String::from_utf8_lossy(&c.key)),
                    revision,
                    vec![(c.key.clone(), None)],
                ),
                synod_core::kv::CasAction::Delete => {}
            },
            (Op::Txn(t), ResponseBody::Txn(tr)) => self.txn(node, t, tr, revision),
            _ => {}
        }
    }

    fn read(
        &mut self,
        node: NodeId,
        r: &RangeRequest,
        revision: u64,
        kvs: &[synod_core::kv::KeyValue],
    ) {
        let plain = r.limit == 0
            && !r.keys_only
            && !r.count_only
            && r.sort_order == Default::default()
            && r.sort_target == Default::default()
            && !r.filters_by_revision();
        if !plain {
            return;
        }
        self.reads.push(RangeRead {
            node,
            key: r.key.clone(),
            range_end: r.range_end.clone(),
            revision: if r.revision > 0 { r.revision } else { revision },
            kvs: kvs.to_vec(),
        });
    }

    fn write(&mut self, what: String, revision: u64, changes: Vec<(Key, Option<Vec<u8>>)>) {
        self.writes.push(AckedWrite {
            what,
            revision,
            changes,
        });
    }

    /// A transaction of [`txn`]'s shape: a succeeded one wrote revision `revision` and its
    /// compare held just before it; a failed one read at `revision` and its compare failed there.
    fn txn(
        &mut self,
        node: NodeId,
        t: &TxnRequest,
        tr: &synod_core::kv::TxnResponse,
        revision: u64,
    ) {
        let writes = t.success.iter().any(|o| !o.is_read());
        let at = if tr.succeeded && writes {
            revision.saturating_sub(1)
        } else {
            revision
        };
        for c in &t.compare {
            if let (CompareTarget::Version(v), CompareResult::Equal, true) =
                (&c.target, c.result, c.range_end.is_empty())
            {
                self.compares.push(VersionCompare {
                    key: c.key.clone(),
                    version: *v,
                    revision: at,
                    held: tr.succeeded,
                });
            }
        }
        let ops = if tr.succeeded { &t.success } else { &t.failure };
        let mut changes = Vec::new();
        for (o, body) in ops.iter().zip(&tr.responses) {
            match (o, body) {
                (TxnOp::Put(p), _) => changes.push((p.key.clone(), Some(p.value.clone()))),
                (TxnOp::Range(r), ResponseBody::Range(rr)) => self.read(node, r, revision, &rr.kvs),
                _ => {}
            }
        }
        if !changes.is_empty() {
            self.write(
                format!("txn putting {} keys", changes.len()),
                revision,
                changes,
            );
        }
    }
}

fn show_kv(key: &[u8], value: &[u8]) -> String {
    format!(
        "{}={}",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(value)
    )
}
