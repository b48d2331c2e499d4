//! Joining two stores of adjacent ranges (partitioned mode's range merge): the frozen upper
//! group's keys and client table move into the lower group's store, which goes on from there.
//!
//! Why the client table moves too: a write the frozen group applied, whose reply was lost,
//! is retried after the merge and reaches the absorbing group, which must answer it from the
//! saved reply instead of applying it again. Why the history does not: the two groups count
//! revisions apart, so one store can only go on from the larger revision with no history
//! below it (partitioned mode serves no reads at past revisions).
//!
//! Leases (a partitioned cluster keeps a copy of each lease in every group): a lease both
//! stores hold goes on as the lower group's, with the keys of both — its TTL counts from the
//! lower group's last renewal, which every acknowledged keep-alive reached (it is acknowledged
//! only once every group renewed it). A lease only the frozen group still holds has ended in
//! the lower group (revoked or expired there; or its grant is still on its way, when no key can
//! be attached to it yet): it ends here, and its keys go, in the absorb's revision. That keeps a
//! revoke that reached the lower group before the merge from being undone by the frozen copy.

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

    /// A copy to hand to a merge: keys, leases and client table, no history (see the module
    /// doc).
    pub fn merge_copy(&self) -> KvStore {
        KvStore {
            data: self.data.clone(),
            revision: self.revision,
            compact_revision: self.revision,
            history: VecDeque::new(),
            applied_index: self.applied_index,
            digest: self.digest,
            sessions: self.sessions.clone(),
            leases: self.leases.clone(),
            lease_changes: Vec::new(),
            fresh: None,
            planted_compaction_bug: false,
            content: Cell::new(None),
            in_use: Cell::new(None),
        }
    }

    /// Every key of this store, and every key its leases hold, lies in `range` (a merge
    /// image must hold only the range it names: one from a faulty peer is refused, not merged
    /// over the keys of this group).
    pub fn holds_only(&self, range: &crate::kv::KeyRange) -> bool {
        let inside = |k: Option<&Vec<u8>>| k.is_none_or(|k| range.contains(k));
        inside(self.data.first_key_value().map(|(k, _)| k))
            && inside(self.data.last_key_value().map(|(k, _)| k))
            && self
                .leases
                .values()
                .all(|l| inside(l.keys.first()) && inside(l.keys.last()))
    }

    /// Takes in `other`'s keys (a range disjoint from this store's), its leases (see the
    /// module doc) and, unless `with_sessions` is off (the planted
    /// `PartitionMergeDropsSessions`), its client table, at this store's KV index `index`
    /// (already skipped). Goes on from the larger revision, with no history below it; one
    /// revision more if a lease only `other` held took keys with it.
    pub fn absorb(&mut self, mut other: KvStore, index: u64, with_sessions: bool) {
        debug_assert!(
            other.data.keys().all(|k| !self.data.contains_key(k)),
            "merged stores must hold disjoint ranges"
        );
        let mut ended_keys = false;
        for (id, lease) in std::mem::take(&mut other.leases) {
            match self.leases.get_mut(&id) {
                Some(ours) => ours.keys.extend(lease.keys),
                None => {
                    for key in &lease.keys {
                        ended_keys |= other.data.remove(key).is_some();
                    }
                    self.digest = mix(mix(self.digest, 0xdead), id as u64);
                }
            }
        }
        self.data.append(&mut other.data);
        self.revision = self.revision.max(other.revision) + u64::from(ended_keys);
        self.history.clear();
        self.compact_revision = self.revision;
        if with_sessions {
            self.sessions.absorb(other.sessions, index);
        }
        self.digest = mix(mix(self.digest, other.digest), ABSORB);
        self.content.set(None);
        self.in_use.set(None);
    }

    /// PLANTED BUG (`PartitionAbsorbRevisionBehind`): back to revision `r` (the lower
    /// group's own) after an absorb took the store past it.
    pub fn planted_rewind_revision(&mut self, r: u64) {
        self.revision = r;
        self.compact_revision = r;
    }

    /// Joins the store of another group of the same backup into this one, for a restore
    /// that lays keys out anew (`synod restore` of a partitioned backup): unlike a merge, no
    /// lease ends — a lease that one group's image lacks (its grant or revoke had not reached
    /// that group on the member backed up) is kept with the keys of every group that has it.
    /// Refused, naming a key, if the two stores share one (images of one layout never do).
    pub fn join_for_restore(&mut self, other: KvStore) -> Result<(), Vec<u8>> {
        if let Some(k) = other.data.keys().find(|k| self.data.contains_key(*k)) {
            return Err(k.clone());
        }
        for (id, lease) in &other.leases {
            self.leases.entry(*id).or_insert_with(|| crate::kv::Lease {
                keys: Default::default(),
                ..lease.clone()
            });
        }
        let index = self.applied_index.max(other.applied_index);
        self.absorb(other, index, false);
        self.applied_index = index;
        Ok(())
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

    fn apply(s: &mut KvStore, index: u64, op: Op) {
        let id = RequestId {
            client: ClientId(5),
            seq: index,
        };
        s.apply(index, id, 0, &op).expect("applied");
    }

    fn with_lease(k: &str, lease: i64) -> Op {
        let mut p = PutRequest::new(k, "v");
        p.lease = lease;
        Op::Put(p)
    }

    #[test]
    fn leases_of_both_halves_merge_and_one_the_lower_half_ended_goes_with_its_keys() {
        use crate::kv::LeaseGrantRequest;
        let mut lower = KvStore::new(KvLimits::default());
        for (i, id) in [1, 2].into_iter().enumerate() {
            apply(
                &mut lower,
                i as u64 + 1,
                Op::LeaseGrant(LeaseGrantRequest { id, ttl: 10 }),
            );
        }
        apply(&mut lower, 3, with_lease("a", 1));
        apply(&mut lower, 4, with_lease("b", 2));
        let mut upper = lower.split_off(b"m");
        apply(&mut upper, 5, with_lease("x", 1));
        apply(&mut upper, 6, with_lease("y", 2));
        apply(&mut upper, 7, with_lease("z", 2));
        // Lease 2 ends in the lower half only (a revoke that reached it before the merge).
        lower.skip(5);
        apply(&mut lower, 8, Op::LeaseRevoke { id: 2 });
        assert!(lower.get(b"b").is_none());
        let rev = lower.revision().max(upper.revision());
        lower.skip(9);
        lower.absorb(upper.merge_copy(), 9, true);
        let keys = |id| {
            lower
                .lease(id)
                .map(|l| l.keys.iter().cloned().collect::<Vec<_>>())
        };
        assert_eq!(keys(1), Some(vec![b"a".to_vec(), b"x".to_vec()]));
        assert_eq!(keys(2), None, "not brought back by the frozen copy");
        assert!(lower.get(b"y").is_none() && lower.get(b"z").is_none());
        assert!(lower.get(b"x").is_some());
        assert_eq!(
            lower.revision(),
            rev + 1,
            "the keys went in a revision of their own"
        );
    }
    #[test]
    fn a_restore_join_keeps_every_lease_and_refuses_shared_keys() {
        let mut lower = KvStore::new(KvLimits::default());
        put(&mut lower, 1, 7, "a");
        let mut upper = lower.split_off(b"m");
        // Lease 5 reached only the upper group on the member backed up.
        upper
            .apply(
                2,
                RequestId {
                    client: ClientId(7),
                    seq: 2,
                },
                0,
                &Op::LeaseGrant(crate::kv::LeaseGrantRequest { id: 5, ttl: 10 }),
            )
            .expect("grant");
        let op = Op::Put(PutRequest {
            key: b"x".to_vec(),
            value: b"v".to_vec(),
            lease: 5,
            ..PutRequest::default()
        });
        let id = RequestId {
            client: ClientId(7),
            seq: 3,
        };
        upper.apply(3, id, 0, &op).expect("put with lease");
        let clash = upper.merge_copy();
        lower.join_for_restore(upper).expect("disjoint stores join");
        assert!(lower.get(b"a").is_some() && lower.get(b"x").is_some());
        let lease = lower
            .lease(5)
            .expect("the lease only one group had is kept");
        assert!(lease.keys.contains(b"x".as_slice()), "{lease:?}");
        assert_eq!(lower.applied_index(), 3);
        assert_eq!(lower.join_for_restore(clash), Err(b"x".to_vec()));
    }
}
