//! etcd's KV.Compact on a partitioned cluster, where revisions are per group.
//!
//! A revision number `R` names a point in one group's history only, but a client compacts
//! "the store" to it. What it asks is etcd's promise — history below `R` is gone, reads and
//! watches from below it answer "compacted", `R` itself stays readable — and that promise is
//! kept in every group that has reached `R`: the compaction is fanned out to every group of
//! the layout as a lease request is (`leases.rs`: through each group's own log, complete only
//! once every group of the layout at completion answered, so a group split off meanwhile is
//! asked too), and each group applies it as etcd would: a group that reached
//! `R` compacts to it, one that has not answers "future revision" and is left alone (its
//! numbers below `R` are all of its history, and compacting it "to now" would cancel its
//! watchers for a number another group handed out; each group's leader bounds its history
//! anyway). Whether a group reached `R` is decided where the compaction is applied, in the
//! group's log order — so it is exact, whichever member answered. Combined once every group
//! answered:
//!
//! * some group compacted: done;
//! * else some group reached `R` but had compacted to `R` or beyond: "compacted", as etcd;
//! * else no group reached `R`: "future revision", as etcd.
//!
//! A group that refused as a wrong group (frozen for a merge) is asked again; one merged away
//! meanwhile does not count (the group below answers for its keys).

use synod_core::EngineError;
use synod_core::kv::{Response, ResponseBody};

/// The reply once every group answered (see the module doc): a real error (a timeout, …)
/// first, in key order.
pub(crate) fn combine(
    answers: Vec<Result<Response, EngineError>>,
) -> Result<Response, EngineError> {
    let mut revision = 0;
    let (mut done, mut compacted, mut future) = (false, None, None);
    for answer in answers {
        match answer {
            Ok(r) => {
                done = true;
                revision = revision.max(r.revision);
            }
            Err(EngineError::Compacted { compact_revision }) => {
                compacted = compacted.max(Some(compact_revision));
            }
            Err(e @ EngineError::FutureRevision { .. }) => future = Some(e),
            Err(e) => return Err(e),
        }
    }
    match (done, compacted, future) {
        (true, _, _) => Ok(Response {
            revision,
            body: ResponseBody::Compact,
        }),
        (false, Some(compact_revision), _) => Err(EngineError::Compacted { compact_revision }),
        (false, None, Some(e)) => Err(e),
        (false, None, None) => Err(EngineError::InvalidRequest(
            "a compaction without answers".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(revision: u64) -> Result<Response, EngineError> {
        Ok(Response {
            revision,
            body: ResponseBody::Compact,
        })
    }

    #[test]
    fn done_where_any_group_compacted_else_etcds_errors() {
        let compacted = |c| {
            Err(EngineError::Compacted {
                compact_revision: c,
            })
        };
        let future = Err(EngineError::FutureRevision { revision: 9 });
        let done = combine(vec![ok(7), compacted(9), future.clone(), ok(12)]);
        assert_eq!(done.map(|r| r.revision), Ok(12));
        assert_eq!(
            combine(vec![compacted(9), future.clone(), compacted(11)]),
            Err(EngineError::Compacted {
                compact_revision: 11
            })
        );
        assert_eq!(
            combine(vec![future.clone(), future.clone()]),
            Err(EngineError::FutureRevision { revision: 9 })
        );
        assert_eq!(
            combine(vec![ok(7), Err(EngineError::Timeout)]),
            Err(EngineError::Timeout)
        );
    }
}
