//! Cutting a store in two at a key (partitioned mode's range split): the keys from the split
//! key on move to a new store that starts where this one is — the same applied index and
//! revision, and a copy of the client table — so the new group goes on from exactly the state
//! the split was decided in, with the moved keys' history.
//!
//! Leases are split too: both halves keep every lease (a partitioned cluster keeps a copy of
//! each lease in every group, see `synod_partition`), each with the keys it holds. The new
//! group's lessor starts every TTL afresh when its replicas start, which extends, never
//! shortens, a lease.
//!
//! Why the client table is copied whole: a write applied here before the split and retried
//! after it reaches the new group, which must answer it from the saved reply instead of
//! applying it again. Entries of clients that only wrote lower keys are harmless there.

use super::{KvStore, mix, mix_bytes};
use crate::kv::RevisionEvents;
use std::cell::Cell;
use std::sync::Arc;

/// Digest salts of the two halves: each half's digest stays a function of the commands applied.
const LOWER: u64 = 0x5b17_0001;
const UPPER: u64 = 0x5b17_0002;

impl KvStore {
    /// Up to about `most` keys spread evenly over the store in key order (every
    /// `len / most`-th, the first included), so the keys below any one of them are known to
    /// within a step; empty under two keys. Walks every key: called rarely (an automatic
    /// split's leader, past the size threshold).
    pub fn key_sample(&self, most: usize) -> Vec<Vec<u8>> {
        if self.data.len() < 2 || most == 0 {
            return Vec::new();
        }
        let step = self.data.len().div_ceil(most).max(1);
        self.data.keys().step_by(step).cloned().collect()
    }

    /// Moves the keys `>= at` into a new store and returns it. The new store takes the moved
    /// keys' share of the history (every revision this one holds, with the events of the
    /// moved keys only, so its revisions stay contiguous and its compaction revision is this
    /// one's) and a copy of every lease, holding the moved keys.
    ///
    /// Why the history: a watcher that reconnects with a start revision from before the split
    /// (every etcd client does, from the last revision it saw) is sent to the group that owns
    /// its keys now, and reads at a past revision go there too. Without the moved keys' past,
    /// both were refused as compacted the moment a range split.
    pub fn split_off(&mut self, at: &[u8]) -> KvStore {
        let data = self.data.split_off(at);
        // Both halves remember the leases this store ended (a later merge of either needs them).
        let leases = self.leases.split_with(|lease| {
            let mut upper = lease.clone();
            upper.keys = lease.keys.split_off(at);
            upper
        });
        let base = mix_bytes(self.digest, at);
        self.digest = mix(base, LOWER);
        // The moved keys' share of the cached figures: recomputed on the next call.
        self.content.set(None);
        self.in_use.set(None);
        let history = self
            .history
            .iter()
            .map(|r| {
                let events = r
                    .events
                    .iter()
                    .filter(|e| e.kv.key.as_slice() >= at)
                    .cloned()
                    .collect();
                Arc::new(RevisionEvents {
                    revision: r.revision,
                    events,
                })
            })
            .collect();
        KvStore {
            data,
            revision: self.revision,
            compact_revision: self.compact_revision,
            history,
            applied_index: self.applied_index,
            digest: mix(base, UPPER),
            sessions: self.sessions.clone(),
            leases,
            lease_changes: Vec::new(),
            fresh: None,
            planted_compaction_bug: self.planted_compaction_bug,
            planted_keep_ended: false,
            closed: 0,
            content: Cell::new(None),
            in_use: Cell::new(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ids::{ClientId, RequestId};
    use crate::kv::{KvLimits, KvStore, Op, PutRequest, ResponseBody};

    fn put(s: &mut KvStore, index: u64, k: &str) {
        let id = RequestId {
            client: ClientId(7),
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
    fn keys_from_the_split_key_move_with_the_index_revision_and_sessions() {
        let mut s = KvStore::new(KvLimits::default());
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            put(&mut s, i as u64 + 1, k);
        }
        let before = s.digest();
        let upper = s.split_off(b"c");
        assert_eq!(s.len(), 2);
        assert_eq!(upper.len(), 2);
        assert!(upper.get(b"c").is_some() && s.get(b"c").is_none());
        assert_eq!(upper.applied_index(), s.applied_index());
        assert_eq!(upper.revision(), s.revision());
        // The moved keys' history came along: revisions 1..=4, events of c and d only.
        assert_eq!(upper.compact_revision(), s.compact_revision());
        let past = upper.history_from(1, 10).expect("history");
        let keys: Vec<Vec<u8>> = past
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.kv.key.clone()))
            .collect();
        assert_eq!(past.len(), 4);
        assert_eq!(keys, [b"c".to_vec(), b"d".to_vec()]);
        assert_eq!(s.history_from(3, 10).map(|h| h.len()), Ok(2), "kept below");
        assert!(s.digest() != before && upper.digest() != before && s.digest() != upper.digest());
        // A retry of a write applied before the split is answered, not applied again.
        let mut upper = upper;
        let op = Op::Put(PutRequest {
            key: "d".into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        let id = RequestId {
            client: ClientId(7),
            seq: 4,
        };
        let rev = upper.revision();
        let again = upper.apply(9, id, 0, &op).expect("duplicate");
        assert!(matches!(again.body, ResponseBody::Put(_)));
        assert_eq!(upper.revision(), rev, "nothing applied twice");
    }
}
