//! etcd's KV.Compact on a partitioned cluster, where revisions are per group.
//!
//! A revision number `R` names a point in one group's history only, but a client compacts
//! "the store" to it. What it asks is etcd's promise — history below `R` is gone, reads and
//! watches from below it answer "compacted", `R` itself stays readable — and that promise is
//! kept in every group that has reached `R`: each compacts its own history to `R`. A group
//! whose revisions have not reached `R` is left alone (its numbers below `R` are all of its
//! history, and compacting it "to now" would cancel its watchers for a number another group
//! handed out; each group's leader bounds its history anyway). So:
//!
//! * no group here has reached `R`: refused as etcd refuses a future revision;
//! * every group that reached `R` compacted to `R` or beyond already: "compacted", as etcd;
//! * otherwise the compaction goes to those groups (each through its own log, the client's
//!   request id in each, so a retried request is answered from each group's client table)
//!   and is answered once every one of them answered. A group that was merged away or froze
//!   meanwhile (a wrong-group answer) or compacted further meanwhile counts as done.
//!
//! Which groups reached `R` is what this member has applied: a group it lags behind may be
//! left alone though its leader is past `R` (history kept, never lost).

use crate::layout::GroupId;
use synod_core::EngineError;
use synod_core::kv::{Response, ResponseBody};

/// The groups to compact to `revision`, given each group's (id, revision, compact revision)
/// in key order; or why none.
pub(crate) fn targets(
    groups: impl IntoIterator<Item = (GroupId, u64, u64)>,
    revision: u64,
) -> Result<Vec<GroupId>, EngineError> {
    let reached: Vec<(GroupId, u64)> = groups
        .into_iter()
        .filter(|(_, r, _)| *r >= revision)
        .map(|(g, _, c)| (g, c))
        .collect();
    if reached.is_empty() {
        return Err(EngineError::FutureRevision { revision });
    }
    let to_do: Vec<GroupId> = reached
        .iter()
        .filter(|(_, c)| *c < revision)
        .map(|(g, _)| *g)
        .collect();
    if to_do.is_empty() {
        let compact_revision = reached.iter().map(|(_, c)| *c).max().unwrap_or(0);
        return Err(EngineError::Compacted { compact_revision });
    }
    Ok(to_do)
}

/// The reply once every group asked answered: the first real error in key order, else done.
pub(crate) fn combine(
    answers: Vec<Result<Response, EngineError>>,
) -> Result<Response, EngineError> {
    let mut revision = 0;
    for answer in answers {
        match answer {
            Ok(r) => revision = revision.max(r.revision),
            // Compacted further, or merged away or frozen (its keys' group has them and
            // compacts on its own): nothing left to do there.
            Err(EngineError::Compacted { .. } | EngineError::WrongGroup { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Response {
        revision,
        body: ResponseBody::Compact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_that_reached_the_revision_compact_to_it() {
        // (group, revision, compact revision)
        let groups = [(0, 40, 0), (1, 9, 0), (2, 25, 30), (3, 12, 2)];
        assert_eq!(targets(groups, 12), Ok(vec![0, 3]));
        assert_eq!(
            targets(groups, 41),
            Err(EngineError::FutureRevision { revision: 41 })
        );
        assert_eq!(
            targets([(0, 40, 35), (1, 9, 0)], 30),
            Err(EngineError::Compacted {
                compact_revision: 35
            })
        );
    }

    #[test]
    fn answers_combine_to_the_first_real_error_or_done() {
        let ok = |revision| {
            Ok(Response {
                revision,
                body: ResponseBody::Compact,
            })
        };
        let done = combine(vec![
            ok(7),
            Err(EngineError::Compacted {
                compact_revision: 9,
            }),
            ok(12),
        ]);
        assert_eq!(done.map(|r| r.revision), Ok(12));
        assert_eq!(
            combine(vec![ok(7), Err(EngineError::Timeout)]),
            Err(EngineError::Timeout)
        );
    }
}
