//! Leases as the replicated state machine sees them (etcd's Lease API): a lease has an id, a
//! TTL in seconds and the keys attached to it; when it ends — revoked by a client or expired by
//! the lessor — its keys are deleted in one revision.
//!
//! The state machine never reads a clock. *When* a lease expires is decided outside it, by the
//! lessor of the replica layer, which measures TTLs in ticks from the moment this replica
//! applied the lease's grant or last keep-alive, and proposes [`crate::kv::Op::LeaseExpire`]
//! carrying the lease's renewal `stamp` as it saw it. A keep-alive applied in between changes
//! the stamp, so a racing expiry is a no-op: what the store applies is decided by the log
//! alone, and every replica agrees.

use super::Key;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// etcd's lease id: a positive int64 (0 means "no lease" in a put).
pub type LeaseId = i64;

/// etcd's `MaxLeaseTTL` (9,000,000,000 s); a longer TTL is refused with etcd's
/// "etcdserver: too large lease TTL".
pub const LEASE_TTL_MAX_SECONDS: i64 = 9_000_000_000;

/// One lease in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    /// The granted TTL, seconds.
    pub ttl: i64,
    /// The applied index of the grant or the last keep-alive: changes with every renewal.
    pub stamp: u64,
    /// Keys attached, in key order.
    pub keys: BTreeSet<Key>,
}

/// etcd's LeaseGrantRequest: `id` 0 lets the store choose one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LeaseGrantRequest {
    pub id: LeaseId,
    /// Seconds. The replica layer raises it to the cluster's minimum TTL before it is
    /// proposed (etcd's rule: a lease must outlive a leader election).
    pub ttl: i64,
}

/// A lease id with its granted TTL (seconds): the reply to a grant or a keep-alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub id: LeaseId,
    pub ttl: i64,
}

/// The reply to LeaseTimeToLive. `remaining_ttl` is -1 for a lease that does not exist
/// (etcd's answer); otherwise the store reports the granted TTL and the replica layer replaces
/// it with what its lessor knows of the time left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTtl {
    pub id: LeaseId,
    pub granted_ttl: i64,
    pub remaining_ttl: i64,
    pub keys: Vec<Key>,
}

/// What happened to a lease in an applied command, for the lessor (taken with
/// [`crate::kv::KvStore::take_lease_changes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseChange {
    /// Granted or kept alive: its TTL (seconds) counts from now.
    Renewed { id: LeaseId, ttl: i64 },
    /// Revoked or expired.
    Ended { id: LeaseId },
}

/// The most ended leases a store remembers (see [`Leases::ended`]); beyond it the oldest
/// ends are forgotten.
pub const ENDED_LEASES_MAX: usize = 4096;

/// A store's leases: the live ones (what every lease operation sees, through `Deref`), and
/// the ids of the ones this store ended lately.
///
/// Why remember ended leases: in partitioned mode each group keeps its own copy of a lease
/// and ends it by its own lessor's clock; a lease lives while every copy does. When a merge
/// brings a group whose copy ended into one whose copy still lives (its lessor was slower, or
/// its new leader extended every lease, as a new leader must), the surviving copy must end
/// too — otherwise a keep-alive acknowledged after the merge would renew a lease whose keys in
/// the merged range are already gone. A copy that is simply missing cannot tell an ended lease
/// from a grant still on its way; the ended ids can.
///
/// On the wire this is one map, as it always was: an ended lease is an entry at the negated
/// id (lease ids are positive) with no keys and its end's applied index as `stamp`, so stores
/// written before this existed load with no ended leases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    live: std::collections::BTreeMap<LeaseId, Lease>,
    /// Ended lease ids, with the applied index of their end.
    ended: std::collections::BTreeMap<LeaseId, u64>,
    /// The same, ordered by end: the oldest is found without a scan (ends are applied on
    /// the apply path, one per expiry).
    by_end: BTreeSet<(u64, LeaseId)>,
}

impl Leases {
    /// Whether this store ended lease `id` (and has not granted it again since).
    pub fn has_ended(&self, id: LeaseId) -> bool {
        self.ended.contains_key(&id)
    }

    /// Remembers that lease `id` ended at applied index `at`, forgetting the oldest end
    /// beyond [`ENDED_LEASES_MAX`].
    pub fn note_ended(&mut self, id: LeaseId, at: u64) {
        self.note_granted(id);
        self.ended.insert(id, at);
        self.by_end.insert((at, id));
        if self.ended.len() > ENDED_LEASES_MAX
            && let Some((_, old)) = self.by_end.pop_first()
        {
            self.ended.remove(&old);
        }
        debug_assert_eq!(self.ended.len(), self.by_end.len());
    }

    /// A lease granted (again): no longer ended.
    pub fn note_granted(&mut self, id: LeaseId) {
        if let Some(at) = self.ended.remove(&id) {
            self.by_end.remove(&(at, id));
        }
    }

    /// The ended ids and their ends, taken out (a merge hands them to the absorbing store).
    pub fn take_ended(&mut self) -> std::collections::BTreeMap<LeaseId, u64> {
        self.by_end.clear();
        std::mem::take(&mut self.ended)
    }

    /// The live leases, taken out.
    pub fn take_live(&mut self) -> std::collections::BTreeMap<LeaseId, Lease> {
        std::mem::take(&mut self.live)
    }

    /// A copy with the live leases mapped by `f` (a split's upper half) and the same ends.
    pub fn split_with(&mut self, mut f: impl FnMut(&mut Lease) -> Lease) -> Leases {
        Leases {
            live: self.live.iter_mut().map(|(id, l)| (*id, f(l))).collect(),
            ended: self.ended.clone(),
            by_end: self.by_end.clone(),
        }
    }
}

impl std::ops::Deref for Leases {
    type Target = std::collections::BTreeMap<LeaseId, Lease>;
    fn deref(&self) -> &Self::Target {
        &self.live
    }
}

impl std::ops::DerefMut for Leases {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.live
    }
}

impl Serialize for Leases {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use std::borrow::Cow;
        // Key order, as the plain map had it: the negated ended ids first.
        let ended = self.ended.iter().rev().map(|(&id, &at)| {
            let tomb = Lease {
                id: -id,
                ttl: 0,
                stamp: at,
                keys: BTreeSet::new(),
            };
            (-id, Cow::Owned(tomb))
        });
        let live = self.live.iter().map(|(&id, l)| (id, Cow::Borrowed(l)));
        s.collect_map(ended.chain(live))
    }
}

impl<'de> Deserialize<'de> for Leases {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let all = std::collections::BTreeMap::<LeaseId, Lease>::deserialize(d)?;
        let mut leases = Leases::default();
        for (id, lease) in all {
            if id < 0 {
                // An ended lease is stored under its negated id; i64::MIN negates to nothing
                // (only a damaged or forged image holds it: found by the snapshot_chunk fuzzer).
                let ended = id.checked_neg().ok_or_else(|| {
                    <D::Error as serde::de::Error>::custom("an ended lease's id is out of range")
                })?;
                leases.note_ended(ended, lease.stamp);
            } else {
                leases.live.insert(id, lease);
            }
        }
        Ok(leases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state image naming an ended lease i64::MIN is refused, not a panic (fuzzer find).
    #[test]
    fn an_image_with_an_ended_lease_of_id_min_is_refused() {
        let mut all = std::collections::BTreeMap::new();
        all.insert(i64::MIN, lease(7));
        let bytes = postcard::to_allocvec(&all).expect("encode");
        assert!(postcard::from_bytes::<Leases>(&bytes).is_err());
    }

    fn lease(id: LeaseId) -> Lease {
        Lease {
            id,
            ttl: 5,
            stamp: 7,
            keys: [b"k".to_vec()].into_iter().collect(),
        }
    }

    #[test]
    fn ended_leases_travel_in_the_plain_maps_wire_form() {
        let mut leases = Leases::default();
        leases.insert(3, lease(3));
        leases.note_ended(9, 40);
        let bytes = postcard::to_allocvec(&leases).expect("encode");
        let back: Leases = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, leases);
        assert!(back.has_ended(9) && !back.has_ended(3));
        assert_eq!(back.len(), 1, "only live leases are seen as leases");
        // A store written before ended leases existed: a plain map, no ended lease.
        let plain: std::collections::BTreeMap<LeaseId, Lease> = [(3, lease(3))].into();
        let old: Leases =
            postcard::from_bytes(&postcard::to_allocvec(&plain).expect("encode")).expect("decode");
        assert_eq!(old.len(), 1);
        assert!(!old.has_ended(9));
    }

    #[test]
    fn the_oldest_end_is_forgotten_past_the_bound() {
        let mut leases = Leases::default();
        for id in 1..=(ENDED_LEASES_MAX as i64 + 1) {
            leases.note_ended(id, id as u64);
        }
        assert!(!leases.has_ended(1), "the oldest end went");
        assert!(leases.has_ended(2) && leases.has_ended(ENDED_LEASES_MAX as i64 + 1));
        leases.note_granted(5);
        assert!(!leases.has_ended(5), "granted again");
    }
}
