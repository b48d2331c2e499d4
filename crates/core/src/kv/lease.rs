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
