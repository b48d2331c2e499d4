//! The range layout: which group owns which keys, and how a request is routed to groups.
//!
//! Group `g` owns the keys `[split[g-1], split[g])` (the first from the empty key, the last to
//! the end of the keyspace), so a key belongs to exactly one group and a range read touches
//! consecutive groups in key order.

use synod_core::EngineError;
use synod_core::kv::{
    Compare, DeleteRangeRequest, Key, Op, RangeRequest, SortTarget, TxnOp, TxnRequest,
};

/// Split keys, ascending and distinct, none empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    splits: Vec<Key>,
    /// Planted bug `PartitionBoundaryMisroute` on this replica.
    misroute_boundary: bool,
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// To one group, unchanged.
    One(usize),
    /// A range read over several groups: one clamped read per group, in key order.
    Split(Vec<(usize, Op)>),
    /// Refused before any group saw it.
    Refuse(EngineError),
}

impl Layout {
    /// Fails on split keys that are empty, unsorted or repeated: every member must see the
    /// same, well-formed layout or keys would have two owners.
    pub fn new(splits: Vec<Key>) -> Result<Self, String> {
        if splits.iter().any(|k| k.is_empty()) {
            return Err("a split key must not be empty".into());
        }
        if splits.windows(2).any(|w| w[0] >= w[1]) {
            return Err("split keys must be ascending and distinct".into());
        }
        Ok(Layout {
            splits,
            misroute_boundary: false,
        })
    }

    pub fn with_planted_misroute(mut self, on: bool) -> Self {
        self.misroute_boundary = on;
        self
    }

    pub fn groups(&self) -> usize {
        self.splits.len() + 1
    }

    /// The group owning `key`.
    pub fn group_of(&self, key: &[u8]) -> usize {
        if self.misroute_boundary {
            // PLANTED BUG: a key equal to a split key goes to the group below it.
            return self.splits.partition_point(|s| s.as_slice() < key);
        }
        self.splits.partition_point(|s| s.as_slice() <= key)
    }

    /// Group `g`'s keys: `[start, end)`, `end` empty = to the end of the keyspace.
    pub fn bounds(&self, g: usize) -> (Key, Key) {
        let start = if g == 0 {
            Key::new()
        } else {
            self.splits[g - 1].clone()
        };
        let end = self.splits.get(g).cloned().unwrap_or_default();
        (start, end)
    }

    /// The groups an etcd key range touches (`end` empty: the key alone; `[0]`: every key
    /// from `start` on), first and last, inclusive.
    pub fn groups_of_range(&self, start: &[u8], end: &[u8]) -> (usize, usize) {
        let first = self.group_of(start);
        let last = if end.is_empty() {
            first
        } else if end == [0] {
            self.groups() - 1
        } else if end <= start {
            first // an empty range: the store answers it
        } else {
            // The group of the largest key below `end`.
            self.splits.partition_point(|s| s.as_slice() < end)
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
            Op::Auth(_) => Route::One(0),
            Op::Compact(_) => Route::Refuse(unsupported("compaction")),
            Op::Membership(_) => Route::Refuse(EngineError::Membership(
                "etcdserver: membership changes are not supported on a partitioned cluster yet"
                    .into(),
            )),
            Op::LeaseGrant(_)
            | Op::LeaseRevoke { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseTimeToLive { .. }
            | Op::LeaseLeases
            | Op::LeaseExpire { .. } => Route::Refuse(unsupported("leases")),
        }
    }

    fn route_range(&self, r: &RangeRequest) -> Route {
        let (first, last) = self.groups_of_range(&r.key, &r.range_end);
        if first == last {
            return Route::One(first);
        }
        if r.revision != 0 {
            return Route::Refuse(EngineError::InvalidRequest(format!(
                "a read at a past revision must stay within one group (revisions are per group), \
                 but this range spans groups {first}..={last}"
            )));
        }
        let parts = (first..=last)
            .map(|g| {
                let mut sub = r.clone();
                (sub.key, sub.range_end) = self.clamp(g, &r.key, &r.range_end);
                // The merge sorts by value across parts: it needs the values.
                if r.sort_target == SortTarget::Value {
                    sub.keys_only = false;
                }
                (g, Op::Range(sub))
            })
            .collect();
        Route::Split(parts)
    }

    fn route_delete(&self, d: &DeleteRangeRequest) -> Route {
        let (first, last) = self.groups_of_range(&d.key, &d.range_end);
        if first == last {
            return Route::One(first);
        }
        Route::Refuse(spans("a delete", first, last))
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
            (None, _) => Route::One(0),
            (Some(&a), Some(&b)) if a == b => Route::One(a),
            (Some(&a), Some(&b)) => Route::Refuse(spans("a transaction", a, b)),
            (Some(_), None) => Route::One(0),
        }
    }

    /// The part of `[start, end)` group `g` owns, as an etcd range.
    fn clamp(&self, g: usize, start: &[u8], end: &[u8]) -> (Key, Key) {
        let (lo, hi) = self.bounds(g);
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

fn unsupported(what: &str) -> EngineError {
    EngineError::Unsupported {
        engine: "partitioned".into(),
        what: format!("{what} (not yet in partitioned mode)"),
    }
}

fn spans(what: &str, first: usize, last: usize) -> EngineError {
    EngineError::InvalidRequest(format!(
        "{what} whose keys span groups {first}..={last} is refused: partitioned mode runs each \
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
        let bounds: Vec<(usize, Key, Key)> = parts
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
    fn writes_across_groups_are_refused_naming_them() {
        let l = layout();
        let del = Op::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"q".to_vec(),
            prev_kv: false,
        });
        let Route::Refuse(e) = l.route(&del) else {
            panic!("refused")
        };
        assert!(e.to_string().contains("groups 0..=2"), "{e}");
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
