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
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

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
        self.leases.note_granted(id);
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
        self.leases.note_ended(id, self.applied_index);
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

#[cfg(test)]
mod tests {
    use crate::engine::EngineError;
    use crate::ids::{ClientId, RequestId};
    use crate::kv::*;

    struct S {
        kv: KvStore,
        index: u64,
    }

    impl S {
        fn new() -> S {
            S {
                kv: KvStore::new(KvLimits {
                    lease_keys_max: 2,
                    leases_max: 3,
                    ..KvLimits::default()
                }),
                index: 0,
            }
        }
        fn apply(&mut self, op: Op) -> Result<Response, EngineError> {
            self.index += 1;
            let id = RequestId {
                client: ClientId::NONE,
                seq: self.index,
            };
            self.kv.apply(self.index, id, 0, &op)
        }
        fn grant(&mut self, id: LeaseId, ttl: i64) -> LeaseId {
            match self.apply(Op::LeaseGrant(LeaseGrantRequest { id, ttl })) {
                Ok(Response {
                    body: ResponseBody::LeaseGrant(info),
                    ..
                }) => info.id,
                other => panic!("grant: {other:?}"),
            }
        }
        fn put(&mut self, key: &str, lease: LeaseId) -> Result<Response, EngineError> {
            self.apply(Op::Put(PutRequest {
                lease,
                ..PutRequest::new(key, "v")
            }))
        }
    }

    #[test]
    fn revoke_deletes_the_attached_keys_in_one_revision() {
        let mut s = S::new();
        let id = s.grant(0, 10);
        assert!(id > 0);
        s.put("a", id).unwrap();
        s.put("b", id).unwrap();
        s.put("c", 0).unwrap();
        assert_eq!(s.kv.get(b"a").unwrap().lease, id);
        let _ = s.kv.take_fresh_events();
        let before = s.kv.revision();
        s.apply(Op::LeaseRevoke { id }).unwrap();
        assert_eq!(s.kv.revision(), before + 1);
        let revs = s.kv.take_fresh_events();
        assert_eq!(revs.len(), 1);
        let keys: Vec<_> = revs[0].events.iter().map(|e| e.kv.key.clone()).collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
        assert!(revs[0].events.iter().all(|e| e.kind == EventKind::Delete));
        assert!(s.kv.get(b"c").is_some());
        assert_eq!(
            s.apply(Op::LeaseRevoke { id }),
            Err(EngineError::LeaseNotFound)
        );
    }

    #[test]
    fn expiry_is_a_no_op_after_a_renewal() {
        let mut s = S::new();
        let id = s.grant(7, 5);
        s.put("k", id).unwrap();
        let stamp = s.kv.lease(id).unwrap().stamp;
        s.apply(Op::LeaseKeepAlive { id }).unwrap();
        let r = s.apply(Op::LeaseExpire { id, stamp }).unwrap();
        assert_eq!(r.body, ResponseBody::LeaseExpire { expired: false });
        assert!(s.kv.get(b"k").is_some());
        let stamp = s.kv.lease(id).unwrap().stamp;
        let r = s.apply(Op::LeaseExpire { id, stamp }).unwrap();
        assert_eq!(r.body, ResponseBody::LeaseExpire { expired: true });
        assert!(s.kv.get(b"k").is_none());
        assert!(s.kv.lease(id).is_none());
    }

    #[test]
    fn puts_move_keys_between_leases_like_etcd() {
        let mut s = S::new();
        let (a, b) = (s.grant(1, 5), s.grant(2, 5));
        s.put("k", a).unwrap();
        s.put("k", b).unwrap();
        assert!(s.kv.lease(a).unwrap().keys.is_empty());
        assert!(s.kv.lease(b).unwrap().keys.contains(b"k".as_slice()));
        // ignore_lease keeps it; a plain put detaches it; a delete detaches it.
        s.apply(Op::Put(PutRequest {
            ignore_lease: true,
            ..PutRequest::new("k", "v2")
        }))
        .unwrap();
        assert_eq!(s.kv.get(b"k").unwrap().lease, b);
        s.put("k", 0).unwrap();
        assert!(s.kv.lease(b).unwrap().keys.is_empty());
        s.put("k", b).unwrap();
        s.apply(Op::DeleteRange(DeleteRangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        }))
        .unwrap();
        assert!(s.kv.lease(b).unwrap().keys.is_empty());
    }

    #[test]
    fn refusals_change_nothing() {
        let mut s = S::new();
        let id = s.grant(1, 5);
        let digest = s.kv.digest();
        assert_eq!(s.put("k", 99), Err(EngineError::LeaseNotFound));
        let txn = Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                TxnOp::Put(PutRequest::new("x", "1")),
                TxnOp::Put(PutRequest {
                    lease: 99,
                    ..PutRequest::new("y", "1")
                }),
            ],
            failure: vec![],
        });
        assert_eq!(s.apply(txn), Err(EngineError::LeaseNotFound));
        assert!(s.kv.get(b"x").is_none());
        let ignore = Op::Put(PutRequest {
            ignore_value: true,
            ..PutRequest::new("missing", "")
        });
        assert_eq!(s.apply(ignore), Err(EngineError::KeyNotFound));
        // Bounds: two keys per lease, three leases.
        s.put("a", id).unwrap();
        s.put("b", id).unwrap();
        assert!(matches!(
            s.put("c", id),
            Err(EngineError::InvalidRequest(_))
        ));
        s.grant(2, 5);
        s.grant(3, 5);
        let over = s.apply(Op::LeaseGrant(LeaseGrantRequest { id: 4, ttl: 5 }));
        assert!(matches!(over, Err(EngineError::InvalidRequest(_))));
        let big = LeaseGrantRequest {
            id: 5,
            ttl: LEASE_TTL_MAX_SECONDS + 1,
        };
        assert_eq!(
            s.apply(Op::LeaseGrant(big)),
            Err(EngineError::LeaseTtlTooLarge)
        );
        assert_eq!(
            s.apply(Op::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 5 })),
            Err(EngineError::LeaseExists)
        );
        assert_ne!(
            s.kv.digest(),
            digest,
            "the accepted puts and grants changed it"
        );
    }

    #[test]
    fn leases_survive_a_checkpoint_round_trip_and_ids_are_deterministic() {
        let mut a = S::new();
        let mut b = S::new();
        let (ia, ib) = (a.grant(0, 9), b.grant(0, 9));
        assert_eq!(ia, ib, "a chosen id is a function of the applied commands");
        a.put("k", ia).unwrap();
        let bytes = postcard::to_allocvec(&a.kv).unwrap();
        let back: KvStore = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.lease(ia), a.kv.lease(ia));
        assert_eq!(back.get(b"k").unwrap().lease, ia);
        assert_eq!(back.digest(), a.kv.digest());
        let ttl = back
            .read(&Op::LeaseTimeToLive { id: ia, keys: true })
            .unwrap();
        assert_eq!(
            ttl.body,
            ResponseBody::LeaseTimeToLive(LeaseTtl {
                id: ia,
                granted_ttl: 9,
                remaining_ttl: 9,
                keys: vec![b"k".to_vec()],
            })
        );
        let missing = back
            .read(&Op::LeaseTimeToLive { id: 1, keys: false })
            .unwrap();
        assert!(matches!(
            missing.body,
            ResponseBody::LeaseTimeToLive(LeaseTtl {
                remaining_ttl: -1,
                ..
            })
        ));
    }
}
