//! Consistency hashes of the KV state machine: what etcd's Maintenance.Hash and
//! Maintenance.HashKV answer, and what members compare to detect a silent divergence (the
//! node's corruption check, and the simulator's agreement check once replicas converge).
//!
//! **What is hashed.** [`KvStore::hash_kv`]`(R)` covers the MVCC key-value history up to
//! revision `R` that the store still holds: the compact revision, `R`, every key as it was at
//! `R`, and every event of the revisions after the compaction up to `R`. Two members that
//! applied the same commands up to `R` and the same compactions get the same value, whatever
//! else they applied since — so members at different revisions can compare at one they all
//! reached. [`KvStore::hash_all`] adds the current revision and the leases (the whole state
//! etcd's Hash covers), so it is only comparable between members at the same revision.
//!
//! **Partitioned** ([`KvStore::hash_kv_part`], [`combine_hash_parts`]): each group hashes its
//! share — its keys at `R` as one CRC stream, and each of its events after the groups' highest
//! compaction with its revision and key — and the member combines the shares: the key streams
//! of adjacent ranges join into the stream of their union (CRC-32C combines), the events sort
//! by (revision, key). So the result does not depend on where the keyspace is cut: members
//! that applied a split at different times, or hold different layouts, agree at any `R` every
//! group reached.
//!
//! **Deterministic and independent of memory layout.** Every field is fed as fixed-width
//! little-endian integers and length-prefixed byte strings, in key order (the store's
//! `BTreeMap`) and revision order; nothing depends on pointer values, hash-map order, the
//! order keys were inserted in, or how the history happens to be chunked in memory. CRC-32C,
//! because etcd's hash fields are 32 bits wide and etcd uses a CRC there too.

use super::KvStore;
use crate::engine::EngineError;
use crate::kv::{EventKind, Key, KeyValue, WatchEvent};

/// A HashKV answer: the hash, the revision it covers and the compaction it starts after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The revision hashed (the request's, or the current one for 0).
    pub revision: u64,
    pub compact_revision: u64,
}

/// One group's share of a partitioned HashKV at a revision ([`KvStore::hash_kv_part`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvHashPart {
    /// CRC-32C of the group's keys at the revision, fed in key order, and the bytes fed: the
    /// parts of adjacent ranges combine into the CRC of their union.
    pub keys_crc: u32,
    pub keys_bytes: u64,
    pub keys: u64,
    /// Each event after the compaction up to the revision: its revision, key and CRC-32C.
    pub events: Vec<(u64, Key, u32)>,
}

/// A CRC-32C fed field by field, counting the bytes fed (what combining two streams needs).
struct Hasher(u32, u64);

impl Hasher {
    fn new(domain: &[u8]) -> Self {
        Hasher(crc32c::crc32c(domain), domain.len() as u64)
    }
    fn append(&mut self, b: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, b);
        self.1 += b.len() as u64;
    }
    fn u64(&mut self, x: u64) {
        self.append(&x.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.append(b);
    }
    fn event(&mut self, e: &WatchEvent) {
        self.u64(match e.kind {
            EventKind::Put => 1,
            EventKind::Delete => 2,
        });
        self.kv(&e.kv);
    }
    fn kv(&mut self, kv: &KeyValue) {
        self.bytes(&kv.key);
        self.bytes(&kv.value);
        self.u64(kv.create_revision);
        self.u64(kv.mod_revision);
        self.u64(kv.version);
        self.u64(kv.lease as u64);
    }
}

impl KvStore {
    /// etcd's HashKV: the hash of the key-value history up to `revision` (0: the current
    /// one). [`EngineError::FutureRevision`] beyond the store's revision,
    /// [`EngineError::Compacted`] below its compaction. O(keys + held history events).
    pub fn hash_kv(&self, revision: u64) -> Result<KvHash, EngineError> {
        let rev = if revision == 0 {
            self.revision
        } else {
            revision
        };
        if rev > self.revision {
            return Err(EngineError::FutureRevision { revision: rev });
        }
        if rev < self.compact_revision || rev + 1 < self.history_first() {
            return Err(EngineError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let mut h = Hasher::new(b"synod-hashkv-v1");
        self.feed_history(&mut h, rev);
        Ok(KvHash {
            hash: h.0,
            revision: rev,
            compact_revision: self.compact_revision,
        })
    }

    /// etcd's Hash: the whole state — the history as [`KvStore::hash_kv`] covers it at the
    /// current revision, and the leases with their TTLs and keys.
    pub fn hash_all(&self) -> u32 {
        let mut h = Hasher::new(b"synod-hash-v1");
        self.feed_history(&mut h, self.revision);
        h.u64(self.leases.len() as u64);
        for lease in self.leases.values() {
            h.u64(lease.id as u64);
            h.u64(lease.ttl as u64);
            h.u64(lease.keys.len() as u64);
            for k in &lease.keys {
                h.bytes(k);
            }
        }
        h.0
    }

    /// Feeds the compaction, `rev`, the keys at `rev` and the events in (compaction, rev].
    fn feed_history(&self, h: &mut Hasher, rev: u64) {
        h.u64(self.compact_revision);
        h.u64(rev);
        if rev == self.revision {
            h.u64(self.data.len() as u64);
            self.data.values().for_each(|kv| h.kv(kv));
        } else {
            // `[0]` as the end: every key (etcd's "from key" form).
            let past = self.state_at(rev, b"", &[0]);
            h.u64(past.len() as u64);
            past.values().for_each(|kv| h.kv(kv));
        }
        let events = self
            .history
            .iter()
            .filter(|r| r.revision > self.compact_revision && r.revision <= rev);
        for r in events {
            h.u64(r.revision);
            h.u64(r.events.len() as u64);
            for e in &r.events {
                h.event(e);
            }
        }
    }

    /// One group's share of a partitioned HashKV at `revision` (not 0): its keys in
    /// `[start, end)` (`end` empty: unbounded) at `revision`, and their events in
    /// `(after, revision]` — `after` is the highest compaction of the member's groups, at or
    /// above this store's. Errors as [`KvStore::hash_kv`], and `Compacted` when the events
    /// after `after` are no longer all held. O(keys in range + held history events).
    pub fn hash_kv_part(
        &self,
        revision: u64,
        after: u64,
        start: &[u8],
        end: &[u8],
    ) -> Result<KvHashPart, EngineError> {
        if revision == 0 || revision > self.revision {
            return Err(EngineError::FutureRevision { revision });
        }
        let first_needed = revision.min(after) + 1;
        if revision < self.compact_revision || first_needed < self.history_first() {
            return Err(EngineError::Compacted {
                compact_revision: self.compact_revision.max(after),
            });
        }
        let inside = |k: &[u8]| k >= start && (end.is_empty() || k < end);
        let mut keys = Hasher(0, 0);
        // `[0]` as the end: every key from `start` on (etcd's "from key" form).
        let state = self.state_at(revision, start, if end.is_empty() { &[0] } else { end });
        state.values().for_each(|kv| keys.kv(kv));
        let mut events = Vec::new();
        let held = self.history.iter();
        for r in held.filter(|r| r.revision > after && r.revision <= revision) {
            for e in r.events.iter().filter(|e| inside(&e.kv.key)) {
                let mut h = Hasher(0, 0);
                h.event(e);
                events.push((r.revision, e.kv.key.clone(), h.0));
            }
        }
        Ok(KvHashPart {
            keys_crc: keys.0,
            keys_bytes: keys.1,
            keys: state.len() as u64,
            events,
        })
    }
}

/// A partitioned member's HashKV at `revision`: its groups' shares ([`KvStore::hash_kv_part`],
/// all taken after `compact`, the highest compaction among them) in the key order of their
/// ranges. Equal for every cut of the same keys and history into ranges.
pub fn combine_hash_parts(compact: u64, revision: u64, parts: Vec<KvHashPart>) -> u32 {
    let (mut crc, mut bytes, mut keys) = (0u32, 0u64, 0u64);
    let mut events = Vec::new();
    for p in parts {
        let len = usize::try_from(p.keys_bytes).unwrap_or(usize::MAX);
        crc = crc32c::crc32c_combine(crc, p.keys_crc, len);
        bytes += p.keys_bytes;
        keys += p.keys;
        events.extend(p.events);
    }
    events.sort_unstable();
    let mut h = Hasher::new(b"synod-hashkv-partitioned-v1");
    h.u64(compact);
    h.u64(revision);
    h.u64(keys);
    h.u64(bytes);
    h.u64(u64::from(crc));
    h.u64(events.len() as u64);
    for (revision, key, event) in events {
        h.u64(revision);
        h.bytes(&key);
        h.u64(u64::from(event));
    }
    h.0
}

#[cfg(test)]
mod tests {
    use crate::EngineError;
    use crate::ids::{ClientId, RequestId};
    use crate::kv::*;

    fn put(k: &str, v: &str) -> Op {
        Op::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
    }
    fn del(k: &str) -> Op {
        Op::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            ..Default::default()
        })
    }

    fn store_of(ops: &[Op]) -> KvStore {
        let mut s = KvStore::new(KvLimits::default());
        for (i, op) in ops.iter().enumerate() {
            let id = RequestId {
                client: ClientId::NONE,
                seq: i as u64 + 1,
            };
            s.apply(i as u64 + 1, id, 0, op).unwrap();
        }
        s
    }

    #[test]
    fn equal_histories_hash_equal_and_any_difference_shows() {
        let ops = [put("a", "1"), put("b", "2"), del("a"), put("c", "3")];
        let a = store_of(&ops);
        let b = store_of(&ops);
        assert_eq!(a.hash_kv(0), b.hash_kv(0));
        assert_eq!(a.hash_all(), b.hash_all());
        let mut other = ops.clone();
        other[1] = put("b", "X");
        let c = store_of(&other);
        assert_ne!(a.hash_kv(0).unwrap().hash, c.hash_kv(0).unwrap().hash);
        // ... and at every revision from the one that differs on.
        for rev in 2..=4 {
            assert_ne!(a.hash_kv(rev).unwrap().hash, c.hash_kv(rev).unwrap().hash);
        }
        assert_eq!(a.hash_kv(1), c.hash_kv(1));
    }

    /// The partitioned HashKV of `parts` (stores with their ranges, in key order) at `rev`.
    fn partitioned(parts: &[(&KvStore, &str, &str)], rev: u64) -> Result<u32, EngineError> {
        let compact = parts
            .iter()
            .map(|p| p.0.compact_revision)
            .max()
            .unwrap_or(0);
        let shares = parts
            .iter()
            .map(|(s, start, end)| s.hash_kv_part(rev, compact, start.as_bytes(), end.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::combine_hash_parts(compact, rev, shares))
    }

    #[test]
    fn a_partitioned_hash_does_not_depend_on_where_the_keys_are_cut() {
        let ops = [
            put("a", "1"),
            put("m", "2"),
            put("q", "3"),
            del("a"),
            put("z", "4"),
            put("m", "5"),
        ];
        let whole = store_of(&ops);
        for rev in 1..=6 {
            let one = partitioned(&[(&whole, "", "")], rev).unwrap();
            let mut lower = store_of(&ops);
            let upper = lower.split_off(b"m");
            let two = partitioned(&[(&lower, "", "m"), (&upper, "m", "")], rev).unwrap();
            assert_eq!(one, two, "cut at m, revision {rev}");
            let mut low = store_of(&ops);
            let mut mid = low.split_off(b"b");
            let high = mid.split_off(b"r");
            let three = [(&low, "", "b"), (&mid, "b", "r"), (&high, "r", "")];
            assert_eq!(
                one,
                partitioned(&three, rev).unwrap(),
                "cut at b and r, revision {rev}"
            );
        }
        // A different value anywhere shows, and a later revision differs from an earlier one.
        let mut other = ops.clone();
        other[2] = put("q", "X");
        let changed = store_of(&other);
        assert_ne!(
            partitioned(&[(&whole, "", "")], 6).unwrap(),
            partitioned(&[(&changed, "", "")], 6).unwrap()
        );
        assert_ne!(
            partitioned(&[(&whole, "", "")], 5).unwrap(),
            partitioned(&[(&whole, "", "")], 6).unwrap()
        );
        assert!(matches!(
            partitioned(&[(&whole, "", "")], 7),
            Err(EngineError::FutureRevision { .. })
        ));
        assert!(matches!(
            partitioned(&[(&whole, "", "")], 0),
            Err(EngineError::FutureRevision { .. })
        ));
    }

    #[test]
    fn a_partitioned_hash_starts_after_the_highest_compaction() {
        let ops = [put("a", "1"), put("m", "2"), put("a", "3"), put("m", "4")];
        let mut lower = store_of(&ops);
        let mut upper = lower.split_off(b"m");
        compact(&mut upper, 5, 2);
        let cut = [(&lower, "", "m"), (&upper, "m", "")];
        // Below the upper group's compaction: refused, not hashed from what is left.
        assert!(matches!(
            partitioned(&cut, 1),
            Err(EngineError::Compacted {
                compact_revision: 2
            })
        ));
        // At or above it, the same as one store compacted there.
        let mut whole = store_of(&ops);
        compact(&mut whole, 5, 2);
        for rev in 2..=4 {
            assert_eq!(
                partitioned(&cut, rev).unwrap(),
                partitioned(&[(&whole, "", "")], rev).unwrap(),
                "revision {rev}"
            );
        }
    }

    #[test]
    fn a_past_revision_hashes_as_the_store_did_then() {
        let ops = [put("a", "1"), put("b", "2"), del("a"), put("c", "3")];
        let whole = store_of(&ops);
        for n in 1..=ops.len() {
            let prefix = store_of(&ops[..n]);
            assert_eq!(whole.hash_kv(n as u64), prefix.hash_kv(0), "revision {n}");
        }
        assert!(matches!(
            whole.hash_kv(5),
            Err(crate::EngineError::FutureRevision { .. })
        ));
    }

    #[test]
    fn the_order_keys_were_first_written_in_does_not_matter_when_the_state_does_not() {
        // Two stores reach the same keys through different insertion orders but then both
        // compact everything away: only the state at the compaction remains, and it is equal
        // as a map whatever the order it was built in — unlike the rolling digest.
        let a = {
            let mut s = store_of(&[put("x", "1"), put("y", "2"), put("z", "3")]);
            compact(&mut s, 4, 3);
            s
        };
        let b = {
            let mut s = store_of(&[put("z", "3"), put("x", "1"), put("y", "2")]);
            compact(&mut s, 4, 3);
            s
        };
        assert_ne!(a.digest(), b.digest());
        // The keys' create/mod revisions differ with the order, so the hashes must too…
        assert_ne!(a.hash_kv(0), b.hash_kv(0));
        // …but with equal revisions per key the insertion order into the map is irrelevant.
        let mut c = KvStore::new(KvLimits::default());
        let mut d = KvStore::new(KvLimits::default());
        let txn = |keys: &[&str]| {
            Op::Txn(TxnRequest {
                compare: vec![],
                success: keys
                    .iter()
                    .map(|k| {
                        TxnOp::Put(PutRequest {
                            key: (*k).into(),
                            value: b"v".to_vec(),
                            ..Default::default()
                        })
                    })
                    .collect(),
                failure: vec![],
            })
        };
        let id = RequestId {
            client: ClientId::NONE,
            seq: 1,
        };
        c.apply(1, id, 0, &txn(&["x", "y", "z"])).unwrap();
        d.apply(1, id, 0, &txn(&["z", "y", "x"])).unwrap();
        assert_eq!(c.data, d.data);
        compact(&mut c, 2, 1);
        compact(&mut d, 2, 1);
        assert_eq!(c.hash_kv(0), d.hash_kv(0));
    }

    fn compact(s: &mut KvStore, index: u64, revision: u64) {
        let id = RequestId {
            client: ClientId::NONE,
            seq: 1000 + index,
        };
        s.apply(
            index,
            id,
            0,
            &Op::Compact(CompactRequest {
                revision,
                physical: false,
            }),
        )
        .unwrap();
    }

    #[test]
    fn compaction_bounds_what_can_be_hashed_and_is_part_of_the_hash() {
        let mut s = store_of(&[put("a", "1"), put("a", "2"), put("a", "3")]);
        let before = s.hash_kv(0).unwrap();
        compact(&mut s, 4, 2);
        let after = s.hash_kv(0).unwrap();
        assert_eq!(after.compact_revision, 2);
        assert_ne!(before.hash, after.hash);
        assert!(matches!(
            s.hash_kv(1),
            Err(crate::EngineError::Compacted { .. })
        ));
        assert!(s.hash_kv(2).is_ok());
    }
}
