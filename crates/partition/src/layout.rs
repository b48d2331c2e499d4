//! The range layout: which group owns which keys, and how a request is routed to groups.
//!
//! Group `g` owns the keys `[split[g-1], split[g])` (the first from the empty key, the last to
//! the end of the keyspace), so a key belongs to exactly one group and a range read touches
//! consecutive groups in key order.

use synod_core::EngineError;
use synod_core::kv::{
    Compare, DeleteRangeRequest, Key, Op, RangeRequest, SortTarget, TxnOp, TxnRequest,
};

/// A group's id: `0..n` for the groups of the configured layout, derived from the parent's
/// id and the split for a group split off at run time ([`child_id`]).
pub type GroupId = u64;

/// Where each group's range begins, ascending; the first begins at the empty key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    starts: Vec<(Key, GroupId)>,
    /// Planted bug `PartitionBoundaryMisroute` on this replica.
    misroute_boundary: bool,
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// To one group, unchanged.
    One(GroupId),
    /// A range read or delete over several groups: one clamped part per group, in key order.
    Split(Vec<(GroupId, Op)>),
    /// Refused before any group saw it.
    Refuse(EngineError),
}

/// The id of the group split off `parent` by `mark`: the same on every member (both are
/// decided in the parent's log), distinct from the configured groups' ids (bit 52 set) and,
/// being a 52-bit hash of a unique (parent, split index) pair, from every other split's but
/// with negligible odds. Below 2^53, so JSON readers keep it exact.
pub fn child_id(parent: GroupId, mark: &synod_core::kv::SplitMark) -> GroupId {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ parent.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in mark.at.iter().copied().chain(mark.index.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 29;
    CHILD_ID_BASE | (h & (CHILD_ID_BASE - 1))
}

/// Ids from here on are groups split off at run time.
pub const CHILD_ID_BASE: GroupId = 1 << 52;

impl Layout {
    /// Fails on split keys that are empty, unsorted or repeated: every member must see the
    /// same, well-formed layout or keys would have two owners. Group `i` begins at split key
    /// `i - 1`.
    pub fn new(splits: Vec<Key>) -> Result<Self, String> {
        if splits.iter().any(|k| k.is_empty()) {
            return Err("a split key must not be empty".into());
        }
        if splits.windows(2).any(|w| w[0] >= w[1]) {
            return Err("split keys must be ascending and distinct".into());
        }
        let starts = std::iter::once(Key::new())
            .chain(splits)
            .enumerate()
            .map(|(i, k)| (k, i as GroupId))
            .collect();
        Ok(Layout {
            starts,
            misroute_boundary: false,
        })
    }

    /// A layout as persisted ([`Layout::entries`]); checked like [`Layout::new`].
    pub fn from_entries(mut starts: Vec<(Key, GroupId)>) -> Result<Self, String> {
        // A boundary naming nobody: a directory entry ending the range before it, learned as
        // a group by a build before 2026-12-08 (`learned.rs`). Its keys go to the group below,
        // an ancestor of their owner, which sends them on; the real group is learned again.
        starts.retain(|(k, g)| *g != synod_core::DirectoryEntry::NOBODY || k.is_empty());
        if starts.first().is_none_or(|(k, _)| !k.is_empty()) {
            return Err("a persisted layout must begin at the empty key".into());
        }
        if starts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err("a persisted layout's starts must be ascending and distinct".into());
        }
        Ok(Layout {
            starts,
            misroute_boundary: false,
        })
    }

    pub fn with_planted_misroute(mut self, on: bool) -> Self {
        self.misroute_boundary = on;
        self
    }

    pub fn groups(&self) -> usize {
        self.starts.len()
    }

    /// Each group's first key and id, in key order.
    pub fn entries(&self) -> &[(Key, GroupId)] {
        &self.starts
    }

    pub fn ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.starts.iter().map(|(_, g)| *g)
    }

    /// The group beginning at `at` now owns the keys from `at` to the next start.
    pub fn split(&mut self, at: Key, child: GroupId) {
        let pos = self.starts.partition_point(|(s, _)| s < &at);
        match self.starts.get_mut(pos) {
            Some(e) if e.0 == at => e.1 = child,
            _ => self.starts.insert(pos, (at, child)),
        }
    }

    /// Group `gone`, which began at `at`, was absorbed by the group before it, whose range
    /// now reaches the next start. Nothing if `at` begins another group's range by now (a
    /// split at the same key, applied with the absorb, made a new group there).
    pub fn merge(&mut self, at: &[u8], gone: GroupId) {
        if let Some(pos) = self
            .starts
            .iter()
            .position(|(s, g)| s.as_slice() == at && *g == gone)
            && pos > 0
        {
            self.starts.remove(pos);
        }
    }

    /// The group whose range ends where group `upper`'s begins.
    pub fn below(&self, upper: GroupId) -> Option<GroupId> {
        let pos = self.position(upper)?;
        pos.checked_sub(1).map(|p| self.starts[p].1)
    }

    /// The position (in key order) of the group owning `key`.
    fn position_of(&self, key: &[u8]) -> usize {
        if self.misroute_boundary {
            // PLANTED BUG: a key equal to a split key goes to the group below it.
            return self
                .starts
                .partition_point(|(s, _)| s.as_slice() < key)
                .saturating_sub(1);
        }
        self.starts
            .partition_point(|(s, _)| s.as_slice() <= key)
            .saturating_sub(1)
    }

    /// The group owning `key`.
    pub fn group_of(&self, key: &[u8]) -> GroupId {
        self.starts[self.position_of(key)].1
    }

    /// The position of group `id` in key order.
    pub fn position(&self, id: GroupId) -> Option<usize> {
        self.starts.iter().position(|(_, g)| *g == id)
    }

    /// The keys of the group at position `pos`: `[start, end)`, `end` empty = to the end.
    pub fn bounds_at(&self, pos: usize) -> (Key, Key) {
        let start = self.starts[pos].0.clone();
        let end = self
            .starts
            .get(pos + 1)
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        (start, end)
    }

    /// Group `id`'s keys (empty bounds for a group not in the layout).
    pub fn bounds(&self, id: GroupId) -> (Key, Key) {
        self.position(id)
            .map_or((Key::new(), Key::new()), |p| self.bounds_at(p))
    }

    /// The positions of the groups an etcd key range touches (`end` empty: the key alone;
    /// `[0]`: every key from `start` on), first and last, inclusive.
    pub fn groups_of_range(&self, start: &[u8], end: &[u8]) -> (usize, usize) {
        let first = self.position_of(start);
        let last = if end.is_empty() {
            first
        } else if end == [0] {
            self.groups() - 1
        } else if end <= start {
            first // an empty range: the store answers it
        } else {
            // The group of the largest key below `end`.
            self.starts
                .partition_point(|(s, _)| s.as_slice() < end)
                .saturating_sub(1)
        };
        (first, last.max(first))
    }

    /// Routes a client request.
    pub fn route(&self, op: &Op) -> Route {
        match op {
            Op::Range(r) => self.route_range(r),
            Op::Put(p) => Route::One(self.group_of(&p.key)),
            Op::Cas(c) => Route::One(self.group_of(&c.key)),
            Op::DeleteRange(d) => self.route_delete(d),
            Op::Txn(t) => self.route_txn(t),
            // The auth state lives in the first group, where every member reads it.
            Op::Auth(_) => Route::One(self.starts[0].1),
            // A split goes to the group that owns its key.
            Op::Split(s) => Route::One(self.group_of(&s.at)),
            // A merge freezes the group that begins at its key (the upper of the two).
            Op::Merge(m) => Route::One(self.group_of(&m.at)),
            // A move is driven by a member hosting the key's group (`moves.rs`).
            Op::Move(m) => Route::One(self.group_of(&m.at)),
            Op::Absorb(_) => Route::Refuse(EngineError::InvalidRequest(
                "absorbs are made by the partitioned engine, never by clients".into(),
            )),
            Op::CloseRevisions { .. } => Route::Refuse(EngineError::InvalidRequest(
                "revision closes are made by each group's leader, never by clients".into(),
            )),
            // Fanned out to every group by the partitioned engine (`compact.rs`) before
            // routing.
            Op::Compact(_) => Route::Refuse(EngineError::InvalidRequest(
                "compactions go to every group, not one".into(),
            )),
            // The first group's configuration is the cluster's; the others follow it
            // (`members.rs`).
            Op::Membership(_) => Route::One(self.starts[0].1),
            // A group's own (moves, following the cluster's members), submitted to it directly.
            Op::MembershipAt { .. } => Route::Refuse(EngineError::InvalidRequest(
                "a guarded membership change is a group leader's own".to_string(),
            )),
            // Fanned out to every group by the partitioned engine (`leases.rs`) before routing.
            Op::LeaseGrant(_)
            | Op::LeaseRevoke { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseTimeToLive { .. }
            | Op::LeaseLeases => Route::Refuse(EngineError::InvalidRequest(
                "lease requests go to every group, not one".into(),
            )),
            Op::LeaseExpire { .. } => Route::Refuse(EngineError::InvalidRequest(
                "expiries are made by each group's lessor, never by clients".into(),
            )),
        }
    }

    fn route_range(&self, r: &RangeRequest) -> Route {
        let (first, last) = self.groups_of_range(&r.key, &r.range_end);
        if first == last {
            return Route::One(self.starts[first].1);
        }
        let by_revision = matches!(r.sort_target, SortTarget::Create | SortTarget::Mod)
            || [
                r.min_mod_revision,
                r.max_mod_revision,
                r.min_create_revision,
                r.max_create_revision,
            ]
            .iter()
            .any(|&x| x != 0);
        if by_revision {
            // Keys of different groups can share a revision, and a later write in one group
            // can get a smaller revision than an earlier one in another: a lock recipe that
            // orders its contenders by create revision over such keys could grant twice.
            return Route::Refuse(EngineError::InvalidRequest(format!(
                "sorting or filtering by create or mod revision must stay within one group \
                 (keys of different groups may share a revision), but this range spans groups {}",
                self.names(first, last)
            )));
        }
        let parts = (first..=last)
            .map(|pos| {
                let mut sub = r.clone();
                (sub.key, sub.range_end) = self.clamp(pos, &r.key, &r.range_end);
                // The merge sorts by value across parts: it needs the values.
                if r.sort_target == SortTarget::Value {
                    sub.keys_only = false;
                }
                (self.starts[pos].1, Op::Range(sub))
            })
            .collect();
        Route::Split(parts)
    }

    /// A delete over several groups: one clamped delete per group (`deletes.rs`).
    fn route_delete(&self, d: &DeleteRangeRequest) -> Route {
        let (first, last) = self.groups_of_range(&d.key, &d.range_end);
        if first == last {
            return Route::One(self.starts[first].1);
        }
        let parts = (first..=last)
            .map(|pos| {
                let mut sub = d.clone();
                (sub.key, sub.range_end) = self.clamp(pos, &d.key, &d.range_end);
                (self.starts[pos].1, Op::DeleteRange(sub))
            })
            .collect();
        Route::Split(parts)
    }

    fn route_txn(&self, t: &TxnRequest) -> Route {
        let mut groups = std::collections::BTreeSet::new();
        let mut note = |start: &[u8], end: &[u8]| {
            let (a, b) = self.groups_of_range(start, end);
            groups.extend(a..=b);
        };
        for Compare { key, range_end, .. } in &t.compare {
            note(key, range_end);
        }
        for op in t.success.iter().chain(&t.failure) {
            match op {
                TxnOp::Range(r) => note(&r.key, &r.range_end),
                TxnOp::Put(p) => note(&p.key, &[]),
                TxnOp::DeleteRange(d) => note(&d.key, &d.range_end),
            }
        }
        match (groups.first(), groups.last()) {
            (Some(&a), Some(&b)) if a == b => Route::One(self.starts[a].1),
            (Some(&a), Some(&b)) => Route::Refuse(spans("a transaction", &self.names(a, b))),
            _ => Route::One(self.starts[0].1),
        }
    }

    /// The groups at positions `first..=last`, as `synodctl range list` names them.
    fn names(&self, first: usize, last: usize) -> String {
        let ids: Vec<String> = self.starts[first..=last]
            .iter()
            .map(|(_, g)| group_name(*g))
            .collect();
        ids.join(", ")
    }

    /// The part of `[start, end)` the group at `pos` owns, as an etcd range.
    fn clamp(&self, pos: usize, start: &[u8], end: &[u8]) -> (Key, Key) {
        let (lo, hi) = self.bounds_at(pos);
        let s = if start < lo.as_slice() {
            lo
        } else {
            start.to_vec()
        };
        let e = if hi.is_empty() {
            end.to_vec() // the last group: the request's own end, `[0]` included
        } else if end == [0] || end > hi.as_slice() {
            hi
        } else {
            end.to_vec()
        };
        (s, e)
    }
}

/// How a group is named to people: its number for a configured group, `s` and its id's 52
/// hash bits in hex for one split off at run time.
pub fn group_name(id: GroupId) -> String {
    if id < CHILD_ID_BASE {
        id.to_string()
    } else {
        format!("s{:013x}", id - CHILD_ID_BASE)
    }
}

fn spans(what: &str, groups: &str) -> EngineError {
    EngineError::InvalidRequest(format!(
        "{what} whose keys span groups {groups} is refused: partitioned mode runs each \
         write within one group (see `synodctl range list` for the split keys)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::kv::PutRequest;

    fn layout() -> Layout {
        Layout::new(vec![b"g".to_vec(), b"p".to_vec()]).expect("valid")
    }

    /// A persisted layout that learned a directory entry naming nobody as a group (builds
    /// before 2026-12-08) loads without it: its keys go to the group below.
    #[test]
    fn a_persisted_boundary_naming_nobody_is_dropped() {
        let nobody = synod_core::DirectoryEntry::NOBODY;
        let entries = vec![
            (Vec::new(), 0),
            (b"g".to_vec(), 1),
            (b"k".to_vec(), nobody),
            (b"p".to_vec(), 2),
        ];
        let l = Layout::from_entries(entries).expect("valid");
        assert_eq!(l.group_of(b"k"), 1);
        assert_eq!(l.group_of(b"q"), 2);
        assert!(l.ids().all(|g| g != nobody));
    }

    #[test]
    fn keys_have_one_owner_and_boundaries_belong_above() {
        let l = layout();
        assert_eq!(l.group_of(b""), 0);
        assert_eq!(l.group_of(b"f"), 0);
        assert_eq!(l.group_of(b"g"), 1);
        assert_eq!(l.group_of(b"o\xff"), 1);
        assert_eq!(l.group_of(b"p"), 2);
        assert_eq!(l.group_of(b"zzz"), 2);
        assert_eq!(l.with_planted_misroute(true).group_of(b"g"), 0);
    }

    #[test]
    fn a_split_inserts_the_new_group_in_key_order() {
        let mut l = layout();
        let mark = synod_core::kv::SplitMark {
            at: b"k".to_vec(),
            index: 7,
        };
        let child = child_id(1, &mark);
        assert!(child >= CHILD_ID_BASE && child != child_id(2, &mark));
        l.split(mark.at.clone(), child);
        assert_eq!(l.group_of(b"j"), 1);
        assert_eq!(l.group_of(b"k"), child);
        assert_eq!(l.group_of(b"p"), 2);
        assert_eq!(l.bounds(child), (b"k".to_vec(), b"p".to_vec()));
        assert_eq!(l.bounds(1), (b"g".to_vec(), b"k".to_vec()));
        let back = Layout::from_entries(l.entries().to_vec()).expect("valid");
        assert_eq!(back, l);
        assert!(Layout::from_entries(vec![(b"a".to_vec(), 0)]).is_err());
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(Layout::new(vec![b"b".to_vec(), b"a".to_vec()]).is_err());
        assert!(Layout::new(vec![b"a".to_vec(), b"a".to_vec()]).is_err());
        assert!(Layout::new(vec![Vec::new()]).is_err());
    }

    #[test]
    fn ranges_split_in_key_order_and_clamp() {
        let l = layout();
        assert_eq!(l.groups_of_range(b"a", b"g"), (0, 0));
        assert_eq!(l.groups_of_range(b"a", b"g\0"), (0, 1));
        assert_eq!(l.groups_of_range(b"h", &[0]), (1, 2));
        assert_eq!(l.groups_of_range(b"x", b"b"), (2, 2));
        let Route::Split(parts) = l.route(&Op::Range(RangeRequest {
            key: Vec::new(),
            range_end: vec![0],
            ..RangeRequest::default()
        })) else {
            panic!("a whole-keyspace read is split");
        };
        let bounds: Vec<(GroupId, Key, Key)> = parts
            .into_iter()
            .map(|(g, op)| match op {
                Op::Range(r) => (g, r.key, r.range_end),
                _ => panic!("a range part"),
            })
            .collect();
        assert_eq!(
            bounds,
            vec![
                (0, b"".to_vec(), b"g".to_vec()),
                (1, b"g".to_vec(), b"p".to_vec()),
                (2, b"p".to_vec(), vec![0]),
            ]
        );
    }

    #[test]
    fn deletes_across_groups_split_and_transactions_are_refused() {
        let l = layout();
        let del = |key: &[u8], end: &[u8]| {
            Op::DeleteRange(DeleteRangeRequest {
                key: key.to_vec(),
                range_end: end.to_vec(),
                prev_kv: false,
            })
        };
        let Route::Split(parts) = l.route(&del(b"a", b"q")) else {
            panic!("split")
        };
        let clamped: Vec<(GroupId, Op)> = vec![
            (0, del(b"a", b"g")),
            (1, del(b"g", b"p")),
            (2, del(b"p", b"q")),
        ];
        assert_eq!(parts, clamped);
        let Route::Split(parts) = l.route(&del(b"h", &[0])) else {
            panic!("split")
        };
        assert_eq!(parts, vec![(1, del(b"h", b"p")), (2, del(b"p", &[0]))]);
        assert_eq!(l.route(&del(b"h", b"i")), Route::One(1));
        let put = |k: &[u8]| TxnOp::Put(PutRequest::new(k.to_vec(), b"v".to_vec()));
        let txn = |ops| {
            Op::Txn(TxnRequest {
                compare: vec![],
                success: ops,
                failure: vec![],
            })
        };
        assert_eq!(l.route(&txn(vec![put(b"h"), put(b"i")])), Route::One(1));
        assert!(matches!(
            l.route(&txn(vec![put(b"a"), put(b"z")])),
            Route::Refuse(_)
        ));
    }
}
