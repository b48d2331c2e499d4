//! Single-key execution for engines without a log (CASPaxos): each key is a register whose
//! value is replaced by applying a change function. Same semantics as [`super::KvStore`] for
//! one key, except that there is no store-wide revision (reported as 0).

use super::*;
use crate::engine::EngineError;

/// Applies `op` to a register holding `current`; returns the register's new content and the
/// reply body. Errors for ops that are not single-key.
pub fn apply_to_register(
    current: Option<&KeyValue>,
    op: &Op,
) -> Result<(Option<KeyValue>, ResponseBody), EngineError> {
    let unsupported = |what: &str| EngineError::Unsupported {
        engine: "register".to_string(),
        what: what.to_string(),
    };
    let put = |key: &[u8], value: &[u8]| KeyValue {
        key: key.to_vec(),
        value: value.to_vec(),
        create_revision: 0,
        mod_revision: 0,
        version: current.map_or(1, |kv| kv.version + 1),
        ..Default::default()
    };
    match op {
        Op::Range(r) if r.range_end.is_empty() && !op.needs_revisions() => {
            let mut kvs: Vec<KeyValue> = current.cloned().into_iter().collect();
            let count = kvs.len() as u64;
            if r.count_only {
                kvs.clear();
            }
            if r.keys_only {
                kvs.iter_mut().for_each(|kv| kv.value.clear());
            }
            Ok((
                current.cloned(),
                ResponseBody::Range(RangeResponse {
                    kvs,
                    more: false,
                    count,
                }),
            ))
        }
        Op::Put(p) if p.lease != 0 || p.ignore_lease => Err(unsupported("leases")),
        Op::Put(p) if p.ignore_value && current.is_none() => Err(EngineError::KeyNotFound),
        Op::Put(p) => Ok((
            Some(match (p.ignore_value, current) {
                (true, Some(kv)) => put(&p.key, &kv.value),
                _ => put(&p.key, &p.value),
            }),
            ResponseBody::Put(PutResponse {
                prev_kv: if p.prev_kv { current.cloned() } else { None },
            }),
        )),
        Op::DeleteRange(d) if d.range_end.is_empty() => Ok((
            None,
            ResponseBody::DeleteRange(DeleteRangeResponse {
                deleted: u64::from(current.is_some()),
                prev_kvs: if d.prev_kv {
                    current.cloned().into_iter().collect()
                } else {
                    vec![]
                },
            }),
        )),
        Op::Cas(c) => {
            if !expect_holds(&c.expect, current) {
                let resp = CasResponse {
                    succeeded: false,
                    prev_kv: current.cloned(),
                    kv: current.cloned(),
                };
                return Ok((current.cloned(), ResponseBody::Cas(resp)));
            }
            let next = match &c.then {
                CasAction::Put(v) => Some(put(&c.key, v)),
                CasAction::Delete => None,
            };
            let resp = CasResponse {
                succeeded: true,
                prev_kv: current.cloned(),
                kv: next.clone(),
            };
            Ok((next, ResponseBody::Cas(resp)))
        }
        Op::Range(r) if r.range_end.is_empty() => {
            Err(unsupported("reads at a revision and revision filters"))
        }
        Op::Range(_) | Op::DeleteRange(_) => Err(unsupported("range requests")),
        Op::Txn(_) => Err(unsupported("multi-key transactions")),
        Op::Compact(_) => Err(unsupported("revision history (compaction)")),
        Op::LeaseGrant(_)
        | Op::LeaseRevoke { .. }
        | Op::LeaseKeepAlive { .. }
        | Op::LeaseTimeToLive { .. }
        | Op::LeaseLeases
        | Op::LeaseExpire { .. } => Err(unsupported("leases")),
        Op::Membership(_) | Op::MembershipAt { .. } => {
            Err(unsupported("membership change through a register"))
        }
        Op::Auth(_) => Err(unsupported(
            "authentication (auth changes need a log engine)",
        )),
        Op::Split(_) | Op::Merge(_) | Op::Absorb(_) | Op::Move(_) | Op::CloseRevisions { .. } => {
            Err(unsupported(
                "range splits, merges and moves (partitioned mode only)",
            ))
        }
    }
}
