//! The store's side of leases (see [`crate::kv::lease`]): grant, keep-alive, end (revoke or
//! expiry) with the deletion of the lease's keys, TimeToLive, and keeping each lease's key set
//! in step with puts and deletes. Every change goes into the digest, so replicas that applied
//! the same commands agree on leases too.

use super::{KvStore, mix, mix_bytes};
use crate::engine::EngineError;
use crate::kv::lease::{LEASE_TTL_MAX_SECONDS, Lease, LeaseChange, LeaseGrantRequest};
use crate::kv::{DeleteRangeRequest, LeaseId, LeaseInfo, LeaseTtl, PutRequest, WatchEvent};
use std::collections::BTreeSet;

impl KvStore {
    /// A live lease.
    pub fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Every live lease, by id.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// What happened to leases since the last call, in apply order (for the lessor).
    pub fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.lease_changes)
    }

    pub(super) fn grant(&mut self, g: &LeaseGrantRequest) -> Result<LeaseInfo, EngineError> {
        if g.ttl > LEASE_TTL_MAX_SECONDS {
            return Err(EngineError::LeaseTtlTooLarge);
        }
        if g.id < 0 {
            return Err(EngineError::InvalidRequest(format!(
                "lease id {} is negative",
                g.id
            )));
        }
        if self.leases.contains_key(&g.id) {
            return Err(EngineError::LeaseExists);
        }
        if self.leases.len() >= self.sessions.limits().leases_max {
            return Err(EngineError::InvalidRequest(format!(
                "too many leases: {} held, the limit is {} (kv.leases_max)",
                self.leases.len(),
                self.sessions.limits().leases_max
            )));
        }
        let id = if g.id != 0 {
            g.id
        } else {
            self.fresh_lease_id()
        };
        let ttl = g.ttl.max(1);
        self.leases.insert(
            id,
            Lease {
                id,
                ttl,
                stamp: self.applied_index,
                keys: BTreeSet::new(),
            },
        );
        self.digest = mix(mix(mix(self.digest, 0x1ea5e), id as u64), ttl as u64);
        self.lease_changes.push(LeaseChange::Renewed { id, ttl });
        Ok(LeaseInfo { id, ttl })
    }

    /// A positive id no live lease has, drawn from the digest: a function of the applied
    /// commands alone, so every replica picks the same one.
    fn fresh_lease_id(&self) -> LeaseId {
        let mut h = mix(self.digest, self.applied_index);
        loop {
            let id = (h & i64::MAX as u64) as i64;
            if id != 0 && !self.leases.contains_key(&id) {
                return id;
            }
            h = mix(h, 1);
        }
    }

    pub(super) fn keep_alive(&mut self, id: LeaseId) -> Result<LeaseInfo, EngineError> {
        let stamp = self.applied_index;
        let lease = self.leases.get_mut(&id).ok_or(EngineError::LeaseNotFound)?;
        lease.stamp = stamp;
        let ttl = lease.ttl;
        self.digest = mix(mix(self.digest, 0x4ee9), id as u64);
        self.lease_changes.push(LeaseChange::Renewed { id, ttl });
        Ok(LeaseInfo { id, ttl })
    }

    /// Ends a lease (revoke or expiry): its keys are deleted, as events of the command's one
    /// revision.
    pub(super) fn end_lease(
        &mut self,
        id: LeaseId,
        events: &mut Vec<WatchEvent>,
    ) -> Result<(), EngineError> {
        let lease = self.leases.remove(&id).ok_or(EngineError::LeaseNotFound)?;
        let rev = self.revision + 1;
        for key in &lease.keys {
            let d = DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            };
            self.delete_range(&d, rev, events);
        }
        self.digest = mix(mix(self.digest, 0xdead), id as u64);
        self.lease_changes.push(LeaseChange::Ended { id });
        Ok(())
    }

    pub(super) fn ttl(&self, id: LeaseId, keys: bool) -> LeaseTtl {
        match self.leases.get(&id) {
            Some(l) => LeaseTtl {
                id,
                granted_ttl: l.ttl,
                remaining_ttl: l.ttl,
                keys: if keys {
                    l.keys.iter().cloned().collect()
                } else {
                    Vec::new()
                },
            },
            None => LeaseTtl {
                id,
                granted_ttl: 0,
                remaining_ttl: -1,
                keys: Vec::new(),
            },
        }
    }

    /// Refuses a put (before anything of its command changed) whose lease does not exist or
    /// is full, or whose `ignore_value` / `ignore_lease` names a missing key. `earlier` are
    /// the puts before it in the same transaction (they count against the lease's key bound).
    pub(super) fn check_put(
        &self,
        p: &PutRequest,
        earlier: &[&PutRequest],
    ) -> Result<(), EngineError> {
        if p.ignore_lease && p.lease != 0 {
            return Err(EngineError::InvalidRequest(
                "lease is provided together with ignore_lease".into(),
            ));
        }
        if (p.ignore_value || p.ignore_lease) && !self.data.contains_key(&p.key) {
            return Err(EngineError::KeyNotFound);
        }
        if p.lease == 0 {
            return Ok(());
        }
        let lease = self
            .leases
            .get(&p.lease)
            .ok_or(EngineError::LeaseNotFound)?;
        if lease.keys.contains(&p.key) {
            return Ok(());
        }
        let max = self.sessions.limits().lease_keys_max;
        let adding = 1 + earlier.iter().filter(|e| e.lease == p.lease).count();
        if lease.keys.len() + adding > max {
            return Err(EngineError::InvalidRequest(format!(
                "lease {} already has {} keys, the limit is {max} (kv.lease_keys_max)",
                p.lease,
                lease.keys.len()
            )));
        }
        Ok(())
    }

    /// Moves `key` from lease `from` to lease `to` (either may be 0 = none).
    pub(super) fn move_lease(&mut self, key: &[u8], from: LeaseId, to: LeaseId) {
        if let Some(l) = self.leases.get_mut(&from) {
            l.keys.remove(key);
        }
        if let Some(l) = self.leases.get_mut(&to) {
            l.keys.insert(key.to_vec());
        }
        self.digest = mix(mix_bytes(self.digest, key), (to as u64) ^ 0x1ea5e);
    }
}
