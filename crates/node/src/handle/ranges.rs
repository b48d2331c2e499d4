//! Splitting, merging and moving ranges on command (partitioned mode), and the check that keeps an
//! operator's split from cutting a lock's or an election's contenders in two.
//!
//! etcd's lock and election recipes (etcdctl `lock` / `elect`, clientv3 `concurrency`, the
//! Lock and Election services) keep their contenders under one prefix, each key attached to
//! its holder's lease, and find who is next with a transaction reading that prefix by create
//! revision. Over two groups that read is refused (two groups can hand out one revision), so
//! a cut among the contenders makes every waiter fail. Automatic splits keep `/`-directories
//! whole for that reason (`synod_partition::auto`); an operator's split cuts exactly where it
//! is told, so it is refused when the key falls inside a directory whose keys on both sides
//! of it hold leases — unless forced.

use super::{ApiError, NodeHandle};
use synod_core::Consistency;
use synod_core::kv::{KeyValue, Op, RangeRequest, ResponseBody, SortOrder, prefix_end};

/// Where a split would cut a leased directory in two: the directory and a leased key on each
/// side of the cut.
struct LeasedCut {
    directory: Vec<u8>,
    below: Vec<u8>,
    above: Vec<u8>,
}

/// The `/`-directories holding `at` without beginning at it, deepest first: for `a/b/c`,
/// `a/b/` then `a/`.
fn directories_around(at: &[u8]) -> Vec<&[u8]> {
    (0..at.len())
        .rev()
        .filter(|&i| at[i] == b'/' && i + 1 < at.len())
        .map(|i| &at[..=i])
        .collect()
}

fn quoted(key: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(key))
}

impl NodeHandle {
    /// Splits the range that holds `at` there (partitioned mode): the keys from `at` on go to
    /// a new group. Returns the range the old group keeps and the split's log index there.
    /// A key inside a directory whose keys hold leases on both sides is refused unless
    /// `force` (see the module's comment).
    pub async fn split_range(
        &self,
        at: Vec<u8>,
        force: bool,
    ) -> Result<(Vec<u8>, Vec<u8>, u64), ApiError> {
        if !force && let Some(cut) = self.leased_cut(&at).await? {
            let end = prefix_end(&cut.directory);
            return Err(ApiError::Invalid(format!(
                "split key {} falls inside {}, whose keys {} and {} hold leases (a lock's or an \
                 election's contenders?): etcd's lock and election recipes read their prefix by \
                 create revision, which is refused over two groups, so their waiters would fail; \
                 split at {} or {} instead, or force the split",
                quoted(&at),
                quoted(&cut.directory),
                quoted(&cut.below),
                quoted(&cut.above),
                quoted(&cut.directory),
                quoted(&end),
            )));
        }
        let op = Op::Split(synod_core::kv::SplitRequest { at });
        let r = self.execute(op, Consistency::Linearizable).await?;
        match r.body {
            ResponseBody::Split { start, end, index } => Ok((start, end, index)),
            other => Err(ApiError::Unavailable(format!(
                "the engine answered a split with {other:?}"
            ))),
        }
    }

    /// Merges the range that begins at `at` into the range below it (partitioned mode).
    /// Returns the range that froze for it and the freeze's log index there; the group below
    /// takes it over within a round trip, and requests for its keys meanwhile are refused as
    /// a wrong group and routed again.
    pub async fn merge_range(&self, at: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>, u64), ApiError> {
        let op = Op::Merge(synod_core::kv::MergeRequest { at });
        let r = self.execute(op, Consistency::Linearizable).await?;
        match r.body {
            ResponseBody::Merge { start, end, index } => Ok((start, end, index)),
            other => Err(ApiError::Unavailable(format!(
                "the engine answered a merge with {other:?}"
            ))),
        }
    }

    /// Moves the replica of the group holding `at` on member `from` to member `to` (placement):
    /// `to` added as a learner, promoted once in sync, `from` removed. Returns the group's
    /// voters after it.
    pub async fn move_range(&self, at: Vec<u8>, from: u64, to: u64) -> Result<Vec<u64>, ApiError> {
        let op = Op::Move(synod_core::kv::MoveRequest { at, from, to });
        let r = self.execute(op, Consistency::Linearizable).await?;
        match r.body {
            ResponseBody::Membership(c) => Ok(c.voters()),
            other => Err(ApiError::Unavailable(format!(
                "the engine answered a move with {other:?}"
            ))),
        }
    }

    /// The first directory around `at` (deepest first) whose nearest keys below and from `at`
    /// both exist and one of them holds a lease. Two reads of one key each per directory,
    /// served by this member (a split is rare; what it read a moment ago is good enough).
    async fn leased_cut(&self, at: &[u8]) -> Result<Option<LeasedCut>, ApiError> {
        if !self.partitioned() {
            return Ok(None);
        }
        for dir in directories_around(at) {
            let below = self.nearest(dir, at, SortOrder::Descend).await?;
            let above = self
                .nearest(at, &prefix_end(dir), SortOrder::Ascend)
                .await?;
            if let (Some(b), Some(a)) = (below, above)
                && (b.lease != 0 || a.lease != 0)
            {
                return Ok(Some(LeasedCut {
                    directory: dir.to_vec(),
                    below: b.key,
                    above: a.key,
                }));
            }
        }
        Ok(None)
    }

    /// The first key of `[start, end)` in `order` (by key), as this member holds it.
    async fn nearest(
        &self,
        start: &[u8],
        end: &[u8],
        order: SortOrder,
    ) -> Result<Option<KeyValue>, ApiError> {
        let op = Op::Range(RangeRequest {
            key: start.to_vec(),
            range_end: end.to_vec(),
            limit: 1,
            sort_order: order,
            ..Default::default()
        });
        let r = self.execute(op, Consistency::Sequential).await?;
        Ok(match r.body {
            ResponseBody::Range(mut found) => found.kvs.pop(),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::directories_around;

    #[test]
    fn the_directories_around_a_key_are_its_slash_prefixes_that_do_not_begin_at_it() {
        assert_eq!(
            directories_around(b"a/b/c"),
            [b"a/b/".as_slice(), b"a/".as_slice()]
        );
        assert!(
            directories_around(b"door/").is_empty(),
            "a cut at a directory's start"
        );
        assert_eq!(
            directories_around(b"door//x"),
            [b"door//".as_slice(), b"door/"]
        );
        assert!(directories_around(b"plain").is_empty());
    }
}
