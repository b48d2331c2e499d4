//! The key range a replica's group owns (partitioned mode): `[start, end)`, an empty `end`
//! meaning to the end of the keyspace. An unpartitioned store owns everything.
//!
//! Why the state machine checks it, not only the router: a split is decided in the group's
//! log, so a request routed by a layout from before the split can be decided after it. The
//! group refuses it at apply (and a read when it is served) with `WrongGroup`, the same way
//! on every replica, so no key is ever answered by a group that no longer holds it.

use super::{Key, Op, TxnOp};
use serde::{Deserialize, Serialize};

/// One split a group applied: its range ended at `at` from KV index `index` on (the index
/// the new group's log starts at). Identifies the new group together with the old one's id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMark {
    pub at: Key,
    pub index: u64,
}

/// One merge a group applied: it absorbed group `group`, whose range began at `at`, at KV
/// index `index`. Tells every member (also one that installs a later snapshot of this group)
/// that `group` is gone for good — and, since the absorbed group's own marks come along,
/// which groups it had absorbed and split off before: a member that lagged behind all of it
/// learns from the live groups alone which groups exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbsorbMark {
    pub group: u64,
    pub at: Key,
    pub index: u64,
    pub splits: Vec<SplitMark>,
    pub absorbed: Vec<AbsorbMark>,
}

/// A group's range and the splits and merges it made, as the applied state holds them.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RangeState {
    pub range: KeyRange,
    pub splits: Vec<SplitMark>,
    /// Set when the group froze for a merge (the KV index of `Op::Merge`): it refuses every
    /// command and read from then on, and its state waits to be absorbed by the group below.
    pub frozen: Option<u64>,
    pub absorbed: Vec<AbsorbMark>,
    /// Split off by a partitioned engine's own automatic split (by size or load), so an
    /// automatic merge may undo it; a range an operator split off stays until an operator
    /// merges it.
    pub auto: bool,
    /// How many layout changes stand behind this range: a split makes both halves the
    /// parent's generation + 1, an absorb makes the merged range one more than the larger of
    /// the two. So for any one key, its owner's generation grows with every change of owner —
    /// which is what lets the range directory tell a stale record from a new one. Not part of
    /// this type's postcard form, so images from before it still decode: the state and merge
    /// images carry it after it ([`RangeState::generation`] 0 when absent).
    #[serde(skip)]
    pub generation: u64,
}

impl RangeState {
    /// Whether this group serves `op`: inside its range, and not frozen.
    pub fn serves(&self, op: &Op) -> bool {
        self.frozen.is_none() && self.range.holds(op)
    }

    /// Whether group `g` was absorbed into this group, directly or by a group this one
    /// absorbed later: its state is here already, and must never be taken in again.
    pub fn has_absorbed(&self, g: u64) -> bool {
        fn within(marks: &[AbsorbMark], g: u64) -> bool {
            marks.iter().any(|m| m.group == g || within(&m.absorbed, g))
        }
        within(&self.absorbed, g)
    }

    /// Whether this state ever took part in a layout change: then its range is its own, not
    /// the configured one (a group merged down to the whole keyspace owns "everything").
    pub fn changed(&self) -> bool {
        !self.splits.is_empty() || !self.absorbed.is_empty() || self.frozen.is_some()
    }
}

/// `[start, end)`. `start == end` (not empty) holds no key: the range of a group whose state
/// has not arrived at this replica yet, which refuses everything until it does.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Key,
    /// Exclusive; empty = unbounded.
    pub end: Key,
}

impl KeyRange {
    /// `[start, end)` (an empty `end`: to the end of the keyspace).
    pub fn new(start: impl Into<Key>, end: impl Into<Key>) -> Self {
        KeyRange {
            start: start.into(),
            end: end.into(),
        }
    }

    /// No key at all, at `at` (see the type's doc).
    pub fn none_at(at: &[u8]) -> Self {
        KeyRange {
            start: at.to_vec(),
            end: at.to_vec(),
        }
    }

    pub fn everything(&self) -> bool {
        self.start.is_empty() && self.end.is_empty()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// Whether `at` cuts this range into two non-empty ranges.
    pub fn splits_at(&self, at: &[u8]) -> bool {
        !at.is_empty() && at > self.start.as_slice() && self.contains(at)
    }

    /// Whether the etcd span `[key, range_end)` (empty end: the key alone; `[0]`: every key
    /// from `key` on) lies inside this range. An empty span (`range_end <= key`) touches no
    /// key and is inside wherever its start is.
    pub fn holds_span(&self, key: &[u8], range_end: &[u8]) -> bool {
        if self.everything() {
            return true;
        }
        if !self.contains(key) {
            return false;
        }
        if range_end.is_empty() || (range_end != [0] && range_end <= key) {
            return true;
        }
        if range_end == [0] {
            return self.end.is_empty();
        }
        self.end.is_empty() || range_end <= self.end.as_slice()
    }

    /// Whether every key `op` reads or writes lies inside this range. Ops not about keys
    /// (compaction, auth, membership, leases) belong to every group.
    pub fn holds(&self, op: &Op) -> bool {
        if self.everything() {
            return true;
        }
        let txn_op = |o: &TxnOp| match o {
            TxnOp::Range(r) => self.holds_span(&r.key, &r.range_end),
            TxnOp::Put(p) => self.contains(&p.key),
            TxnOp::DeleteRange(d) => self.holds_span(&d.key, &d.range_end),
        };
        match op {
            Op::Range(r) => self.holds_span(&r.key, &r.range_end),
            Op::Put(p) => self.contains(&p.key),
            Op::DeleteRange(d) => self.holds_span(&d.key, &d.range_end),
            Op::Cas(c) => self.contains(&c.key),
            Op::Txn(t) => {
                t.compare
                    .iter()
                    .all(|c| self.holds_span(&c.key, &c.range_end))
                    && t.success.iter().chain(&t.failure).all(txn_op)
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{PutRequest, in_range};

    fn r(start: &str, end: &str) -> KeyRange {
        KeyRange::new(start, end)
    }

    #[test]
    fn spans_inside_and_across_the_bounds() {
        let g = r("b", "d");
        assert!(g.holds_span(b"b", b""));
        assert!(g.holds_span(b"c", b"d"));
        assert!(!g.holds_span(b"c", b"e"));
        assert!(!g.holds_span(b"a", b"c"));
        assert!(!g.holds_span(b"d", b""));
        assert!(!g.holds_span(b"b", &[0]));
        assert!(r("b", "").holds_span(b"b", &[0]));
        assert!(g.holds_span(b"c", b"a"), "an empty span touches nothing");
        assert!(in_range(b"b", b"d", b"c"));
    }

    #[test]
    fn ops_outside_are_not_held() {
        let g = r("b", "d");
        let put = |k: &str| {
            Op::Put(PutRequest {
                key: k.into(),
                ..PutRequest::default()
            })
        };
        assert!(g.holds(&put("c")));
        assert!(!g.holds(&put("d")));
        assert!(!g.holds(&put("a")));
        assert!(KeyRange::default().holds(&put("zzz")));
        assert!(g.splits_at(b"c") && !g.splits_at(b"b") && !g.splits_at(b"d"));
        let none = KeyRange::none_at(b"c");
        assert!(!none.everything() && !none.contains(b"c") && !none.holds(&put("c")));
        assert!(!none.holds_span(b"c", b"") && !none.splits_at(b"c"));
    }
}
