//! Joining two stores of adjacent ranges (partitioned mode's range merge): the frozen upper
//! group's keys and client table move into the lower group's store, which goes on from there.
//!
//! Why the client table moves too: a write the frozen group applied, whose reply was lost,
//! is retried after the merge and reaches the absorbing group, which must answer it from the
//! saved reply instead of applying it again. Why the history does not: the two groups count
//! revisions apart, so one store can only go on from the larger revision with no history
//! below it (partitioned mode serves no reads at past revisions).

use super::{KvStore, kv_bytes, mix};
use std::cell::Cell;
use std::collections::VecDeque;

/// Digest salt of an absorb.
const ABSORB: u64 = 0x3e79_0001;

impl KvStore {
    /// What the live keys take (keys, values, metadata), without the history: what a merge
    /// moves. O(keys): called once per merge.
    pub fn live_bytes(&self) -> u64 {
        self.data.values().map(kv_bytes).sum()
    }

    /// A copy to hand to a merge: keys and client table, no history (see the module doc).
    pub fn merge_copy(&self) -> KvStore {
        KvStore {
            data: self.data.clone(),
            revision: self.revision,
            compact_revision: self.revision,
            history: VecDeque::new(),
            applied_index: self.applied_index,
            digest: self.digest,
            sessions: self.sessions.clone(),
            leases: Default::default(),
            lease_changes: Vec::new(),
            fresh: None,
            planted_compaction_bug: false,
            content: Cell::new(None),
            in_use: Cell::new(None),
        }
    }

    /// Every key of this store lies in `range` (a merge image must hold only the range it
    /// names: one from a faulty peer is refused, not merged over the keys of this group).
    pub fn holds_only(&self, range: &crate::kv::KeyRange) -> bool {
        let inside = |k: Option<(&Vec<u8>, _)>| k.is_none_or(|(k, _)| range.contains(k));
        inside(self.data.first_key_value()) && inside(self.data.last_key_value())
    }

    /// Takes in `other`'s keys (a range disjoint from this store's) and, unless
    /// `with_sessions` is off (the planted `PartitionMergeDropsSessions`), its client table,
    /// at this store's KV index `index` (already skipped). Goes on from the larger revision,
    /// with no history below it.
    pub fn absorb(&mut self, mut other: KvStore, index: u64, with_sessions: bool) {
        assert!(
            self.leases.is_empty() && other.leases.is_empty(),
            "stores with leases cannot be merged (partitioned mode has no leases)"
        );
        debug_assert!(
            other.data.keys().all(|k| !self.data.contains_key(k)),
            "merged stores must hold disjoint ranges"
        );
        self.data.append(&mut other.data);
        self.revision = self.revision.max(other.revision);
        self.history.clear();
        self.compact_revision = self.revision;
        if with_sessions {
            self.sessions.absorb(other.sessions, index);
        }
        self.digest = mix(mix(self.digest, other.digest), ABSORB);
        self.content.set(None);
        self.in_use.set(None);
    }
}

#[cfg(test)]
mod tests {
    use crate::ids::{ClientId, RequestId};
    use crate::kv::{KvLimits, KvStore, Op, PutRequest, ResponseBody};

    fn put(s: &mut KvStore, index: u64, client: u64, k: &str) {
        let id = RequestId {
            client: ClientId(client),
            seq: index,
        };
        let op = Op::Put(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        s.apply(index, id, 0, &op).expect("put");
    }

    #[test]
    fn a_split_store_merges_back_with_its_keys_and_sessions() {
        let mut lower = KvStore::new(KvLimits::default());
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            put(&mut lower, i as u64 + 1, 7, k);
        }
        let mut upper = lower.split_off(b"c");
        // The upper group goes on alone: more revisions than the lower one.
        put(&mut upper, 5, 8, "e");
        put(&mut upper, 6, 8, "f");
        let upper_rev = upper.revision();
        let copy = upper.merge_copy();
        assert_eq!(copy.live_bytes(), upper.live_bytes());
        lower.skip(5);
        lower.absorb(copy, 5, true);
        assert_eq!(lower.len(), 6);
        assert!(lower.get(b"f").is_some() && lower.get(b"a").is_some());
        assert_eq!(lower.revision(), upper_rev, "the larger revision goes on");
        assert_eq!(lower.compact_revision(), lower.revision());
        // A write the upper group applied, retried after the merge: answered, not applied.
        let id = RequestId {
            client: ClientId(8),
            seq: 6,
        };
        let op = Op::Put(PutRequest {
            key: "f".into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        let again = lower.apply(6, id, 0, &op).expect("duplicate");
        assert!(matches!(again.body, ResponseBody::Put(_)));
        assert_eq!(lower.revision(), upper_rev, "nothing applied twice");
        // A new write goes on from the merged revision.
        put(&mut lower, 7, 9, "g");
        assert_eq!(lower.revision(), upper_rev + 1);
    }

    #[test]
    fn without_sessions_a_retry_is_applied_again() {
        let mut lower = KvStore::new(KvLimits::default());
        put(&mut lower, 1, 7, "a");
        let mut upper = lower.split_off(b"m");
        put(&mut upper, 2, 8, "x");
        lower.skip(2);
        lower.absorb(upper.merge_copy(), 2, false);
        let rev = lower.revision();
        let id = RequestId {
            client: ClientId(8),
            seq: 2,
        };
        let op = Op::Put(PutRequest {
            key: "x".into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        lower.apply(3, id, 0, &op).expect("put");
        assert_eq!(
            lower.revision(),
            rev + 1,
            "the planted bug applies it twice"
        );
    }
}
