//! The deterministic KV state machine that log-based engines apply in log order.
//!
//! Every replica that applies the same decided commands in the same order reaches the same
//! data, the same revision and the same [`KvStore::digest`] — the simulator checks exactly that
//! to prove agreement. Nothing here may depend on anything but the command sequence (no clocks,
//! no hash-map iteration order: data lives in a `BTreeMap`).

use super::*;
use crate::engine::EngineError;
use crate::ids::RequestId;
use crate::kv::session::{ClientTable, SessionVerdict};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KvStore {
    data: BTreeMap<Key, KeyValue>,
    /// etcd's store revision: +1 per write command that changed something.
    revision: u64,
    /// Log index (engine-defined position) of the last applied command.
    applied_index: u64,
    /// Rolling hash of every mutation, for cheap cross-replica agreement checks.
    digest: u64,
    sessions: ClientTable,
}

impl KvStore {
    pub fn new(limits: KvLimits) -> Self {
        KvStore {
            data: BTreeMap::new(),
            revision: 0,
            applied_index: 0,
            digest: 0xcbf2_9ce4_8422_2325,
            sessions: ClientTable::new(limits),
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }
    pub fn digest(&self) -> u64 {
        self.digest
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.data.get(key)
    }
    pub fn sessions(&self) -> &ClientTable {
        &self.sessions
    }

    /// Applies a decided command at log position `index` (must be increasing) and returns the
    /// reply for its request. A retried request that was already applied gets its saved reply
    /// and changes nothing (exactly-once; see [`ClientTable`] for the expiry rule).
    pub fn apply(
        &mut self,
        index: u64,
        id: RequestId,
        first_unacked: u64,
        op: &Op,
    ) -> Result<Response, EngineError> {
        self.skip(index);
        if op.is_read() {
            return self.read(op);
        }
        match self.sessions.check(id, first_unacked) {
            SessionVerdict::Duplicate(reply) => return Ok(reply),
            SessionVerdict::Stale => return Err(EngineError::SessionExpired),
            SessionVerdict::New => {}
        }
        let body = self.execute(op);
        let reply = Response {
            revision: self.revision,
            body,
        };
        self.sessions.record(id, reply.clone());
        self.sessions.touch(id.client, index);
        Ok(reply)
    }

    /// Advances the applied index past a log position whose command is not executed (a
    /// duplicate of a command already applied; see the replica layer's origin window). Every
    /// applied position goes through here first, executed or not.
    pub fn skip(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "apply index went back: {index} after {}",
            self.applied_index
        );
        self.applied_index = index;
        self.digest = mix(self.digest, index);
    }

    /// Executes a read-only op against the current state without changing anything.
    pub fn read(&self, op: &Op) -> Result<Response, EngineError> {
        let body = match op {
            Op::Range(r) => ResponseBody::Range(self.range(r)),
            Op::Txn(t) if op.is_read() => {
                let succeeded = self.txn_compares_hold(&t.compare);
                let ops = if succeeded { &t.success } else { &t.failure };
                let responses = ops
                    .iter()
                    .map(|o| match o {
                        TxnOp::Range(r) => ResponseBody::Range(self.range(r)),
                        _ => unreachable!("is_read checked"),
                    })
                    .collect();
                ResponseBody::Txn(TxnResponse {
                    succeeded,
                    responses,
                })
            }
            _ => {
                return Err(EngineError::InvalidRequest("read() given a write".into()));
            }
        };
        Ok(Response {
            revision: self.revision,
            body,
        })
    }

    fn execute(&mut self, op: &Op) -> ResponseBody {
        match op {
            Op::Range(r) => ResponseBody::Range(self.range(r)),
            Op::Put(p) => {
                self.revision += 1;
                ResponseBody::Put(self.put(p, self.revision))
            }
            Op::DeleteRange(d) => {
                let resp = self.delete_range(d, self.revision + 1);
                if resp.deleted > 0 {
                    self.revision += 1;
                }
                ResponseBody::DeleteRange(resp)
            }
            Op::Txn(t) => {
                let succeeded = self.txn_compares_hold(&t.compare);
                let ops = if succeeded { &t.success } else { &t.failure };
                let rev = self.revision + 1;
                let mut changed = false;
                let mut responses = Vec::with_capacity(ops.len());
                for o in ops {
                    responses.push(match o {
                        TxnOp::Range(r) => ResponseBody::Range(self.range(r)),
                        TxnOp::Put(p) => {
                            changed = true;
                            ResponseBody::Put(self.put(p, rev))
                        }
                        TxnOp::DeleteRange(d) => {
                            let resp = self.delete_range(d, rev);
                            changed |= resp.deleted > 0;
                            ResponseBody::DeleteRange(resp)
                        }
                    });
                }
                if changed {
                    self.revision = rev;
                }
                ResponseBody::Txn(TxnResponse {
                    succeeded,
                    responses,
                })
            }
            Op::Cas(c) => {
                let prev = self.data.get(&c.key).cloned();
                if !expect_holds(&c.expect, prev.as_ref()) {
                    return ResponseBody::Cas(CasResponse {
                        succeeded: false,
                        kv: prev.clone(),
                        prev_kv: prev,
                    });
                }
                match &c.then {
                    CasAction::Put(v) => {
                        self.revision += 1;
                        let p = PutRequest {
                            key: c.key.clone(),
                            value: v.clone(),
                            prev_kv: false,
                        };
                        self.put(&p, self.revision);
                    }
                    CasAction::Delete => {
                        if prev.is_some() {
                            self.revision += 1;
                            let d = DeleteRangeRequest {
                                key: c.key.clone(),
                                ..Default::default()
                            };
                            self.delete_range(&d, self.revision);
                        }
                    }
                }
                ResponseBody::Cas(CasResponse {
                    succeeded: true,
                    prev_kv: prev,
                    kv: self.data.get(&c.key).cloned(),
                })
            }
        }
    }

    fn put(&mut self, p: &PutRequest, rev: u64) -> PutResponse {
        // One lookup for a key that exists (the common case), and the previous value moves
        // out instead of being copied: this runs once per write on every replica.
        let new_kv = |create_revision, version| KeyValue {
            key: p.key.clone(),
            value: p.value.clone(),
            create_revision,
            mod_revision: rev,
            version,
        };
        let prev = match self.data.get_mut(&p.key) {
            Some(cur) => {
                let kv = new_kv(cur.create_revision, cur.version + 1);
                self.digest = mix_kv(self.digest, &kv);
                Some(std::mem::replace(cur, kv))
            }
            None => {
                let kv = new_kv(rev, 1);
                self.digest = mix_kv(self.digest, &kv);
                self.data.insert(p.key.clone(), kv);
                None
            }
        };
        PutResponse {
            prev_kv: if p.prev_kv { prev } else { None },
        }
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest, rev: u64) -> DeleteRangeResponse {
        let keys: Vec<Key> = self
            .keys_in(&d.key, &d.range_end)
            .map(|kv| kv.key.clone())
            .collect();
        let mut prev_kvs = Vec::new();
        for k in &keys {
            if let Some(kv) = self.data.remove(k) {
                self.digest = mix(mix_bytes(self.digest, k), rev);
                if d.prev_kv {
                    prev_kvs.push(kv);
                }
            }
        }
        DeleteRangeResponse {
            deleted: keys.len() as u64,
            prev_kvs,
        }
    }

    fn keys_in<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
    ) -> Box<dyn Iterator<Item = &'a KeyValue> + 'a> {
        if end.is_empty() {
            return Box::new(self.data.get(start).into_iter());
        }
        let lower = Bound::Included(start.to_vec());
        let upper = if end == [0] {
            Bound::Unbounded
        } else {
            Bound::Excluded(end.to_vec())
        };
        if end != [0] && end <= start {
            return Box::new(std::iter::empty());
        }
        Box::new(self.data.range::<Key, _>((lower, upper)).map(|(_, v)| v))
    }

    fn range(&self, r: &RangeRequest) -> RangeResponse {
        let mut resp = RangeResponse::default();
        for kv in self.keys_in(&r.key, &r.range_end) {
            resp.count += 1;
            if r.count_only {
                continue;
            }
            if r.limit > 0 && resp.kvs.len() as u64 >= r.limit {
                resp.more = true;
                continue;
            }
            let mut kv = kv.clone();
            if r.keys_only {
                kv.value.clear();
            }
            resp.kvs.push(kv);
        }
        resp
    }

    fn txn_compares_hold(&self, compares: &[Compare]) -> bool {
        compares.iter().all(|c| {
            let kvs: Vec<&KeyValue> = self.keys_in(&c.key, &c.range_end).collect();
            compare_holds(c, &kvs)
        })
    }
}

fn mix(h: u64, x: u64) -> u64 {
    // splitmix64 finaliser over the running hash: cheap and well distributed.
    let mut z = h ^ x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn mix_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    // Eight bytes per multiply (FxHash's step), then one full mix with the length so that
    // zero padding and length extension do not collide trivially. Byte-at-a-time FNV here was
    // ≈7 % of a leader's engine thread with 256-byte values.
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    mix(h, bytes.len() as u64)
}

/// A well-mixed hash of one pair's key, value and version, for digests that must not depend
/// on the order keys were visited or written in (XOR or sum them): CASPaxos's register digest.
pub fn key_value_hash(kv: &KeyValue) -> u64 {
    let h = mix_bytes(mix_bytes(0x6b76_6861_7368_0001, &kv.key), &kv.value);
    mix(h, kv.version)
}

fn mix_kv(h: u64, kv: &KeyValue) -> u64 {
    let h = mix_bytes(mix_bytes(h, &kv.key), &kv.value);
    mix(mix(h, kv.version), kv.mod_revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ClientId;

    fn put(k: &str, v: &str) -> Op {
        Op::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            prev_kv: true,
        })
    }
    fn rid(c: u64, s: u64) -> RequestId {
        RequestId {
            client: ClientId(c),
            seq: s,
        }
    }

    #[test]
    fn versions_and_revisions_follow_etcd() {
        let mut s = KvStore::new(KvLimits::default());
        s.apply(1, rid(0, 0), 0, &put("a", "1")).unwrap();
        s.apply(2, rid(0, 0), 0, &put("a", "2")).unwrap();
        s.apply(3, rid(0, 0), 0, &put("b", "1")).unwrap();
        let a = s.get(b"a").unwrap();
        assert_eq!((a.version, a.create_revision, a.mod_revision), (2, 1, 2));
        assert_eq!(s.revision(), 3);
        let del = Op::DeleteRange(DeleteRangeRequest {
            key: "a".into(),
            range_end: vec![],
            prev_kv: true,
        });
        let r = s.apply(4, rid(0, 0), 0, &del).unwrap();
        assert_eq!(r.revision, 4);
        // Deleting a missing key changes nothing, not even the revision.
        let r = s.apply(5, rid(0, 0), 0, &del).unwrap();
        assert_eq!(r.revision, 4);
        s.apply(6, rid(0, 0), 0, &put("a", "3")).unwrap();
        let a = s.get(b"a").unwrap();
        assert_eq!((a.version, a.create_revision), (1, 5));
    }

    #[test]
    fn cas_on_value_version_and_absent() {
        let mut s = KvStore::new(KvLimits::default());
        let cas = |expect, then| {
            Op::Cas(CasRequest {
                key: "k".into(),
                expect,
                then,
            })
        };
        let ok = |r: Response| match r.body {
            ResponseBody::Cas(c) => c.succeeded,
            _ => panic!(),
        };
        assert!(ok(s
            .apply(
                1,
                rid(0, 0),
                0,
                &cas(Expect::Absent, CasAction::Put("x".into()))
            )
            .unwrap()));
        assert!(!ok(s
            .apply(
                2,
                rid(0, 0),
                0,
                &cas(Expect::Absent, CasAction::Put("y".into()))
            )
            .unwrap()));
        assert!(ok(s
            .apply(
                3,
                rid(0, 0),
                0,
                &cas(Expect::Version(1), CasAction::Put("y".into()))
            )
            .unwrap()));
        assert!(!ok(s
            .apply(
                4,
                rid(0, 0),
                0,
                &cas(Expect::Value("x".into()), CasAction::Delete)
            )
            .unwrap()));
        assert!(ok(s
            .apply(
                5,
                rid(0, 0),
                0,
                &cas(Expect::Value("y".into()), CasAction::Delete)
            )
            .unwrap()));
        assert!(s.get(b"k").is_none());
        assert_eq!(s.revision(), 3);
    }

    #[test]
    fn retried_write_is_applied_once() {
        let mut s = KvStore::new(KvLimits::default());
        let first = s.apply(1, rid(7, 1), 1, &put("a", "1")).unwrap();
        let again = s.apply(2, rid(7, 1), 1, &put("a", "1")).unwrap();
        assert_eq!(first, again);
        assert_eq!(s.get(b"a").unwrap().version, 1);
        // Once the client acknowledged seq 1 (first_unacked = 2), a late duplicate is refused.
        s.apply(3, rid(7, 2), 2, &put("b", "1")).unwrap();
        assert_eq!(
            s.apply(4, rid(7, 1), 1, &put("a", "1")),
            Err(EngineError::SessionExpired)
        );
        assert_eq!(s.get(b"a").unwrap().version, 1);
    }

    #[test]
    fn ranges_prefixes_limits_and_txn() {
        let mut s = KvStore::new(KvLimits::default());
        for (i, k) in ["a/1", "a/2", "a/3", "b"].iter().enumerate() {
            s.apply(i as u64 + 1, rid(0, 0), 0, &put(k, "v")).unwrap();
        }
        let mut r = RangeRequest::prefix("a/");
        r.limit = 2;
        let resp = s.read(&Op::Range(r)).unwrap();
        let ResponseBody::Range(rr) = resp.body else {
            panic!()
        };
        assert_eq!((rr.kvs.len(), rr.count, rr.more), (2, 3, true));
        let all = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        let ResponseBody::Range(rr) = s.read(&Op::Range(all)).unwrap().body else {
            panic!()
        };
        assert_eq!(rr.count, 4);

        let txn = Op::Txn(TxnRequest {
            compare: vec![Compare {
                key: "b".into(),
                range_end: vec![],
                target: CompareTarget::Version(1),
                result: CompareResult::Equal,
            }],
            success: vec![
                TxnOp::Put(PutRequest {
                    key: "c".into(),
                    value: "1".into(),
                    prev_kv: false,
                }),
                TxnOp::Put(PutRequest {
                    key: "d".into(),
                    value: "1".into(),
                    prev_kv: false,
                }),
            ],
            failure: vec![],
        });
        let r = s.apply(5, rid(0, 0), 0, &txn).unwrap();
        assert_eq!(r.revision, 5, "one revision per txn");
        assert_eq!(s.get(b"d").unwrap().mod_revision, 5);
        // VALUE compare on a missing key is false (etcd semantics).
        let c = Compare {
            key: "zz".into(),
            range_end: vec![],
            target: CompareTarget::Value(vec![]),
            result: CompareResult::Equal,
        };
        assert!(!compare_holds(&c, &[]));
    }

    #[test]
    fn digests_agree_for_same_sequence_and_differ_otherwise() {
        let mut a = KvStore::new(KvLimits::default());
        let mut b = KvStore::new(KvLimits::default());
        a.apply(1, rid(0, 0), 0, &put("k", "1")).unwrap();
        b.apply(1, rid(0, 0), 0, &put("k", "1")).unwrap();
        assert_eq!(a.digest(), b.digest());
        a.apply(2, rid(0, 0), 0, &put("k", "2")).unwrap();
        b.apply(2, rid(0, 0), 0, &put("k", "3")).unwrap();
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn byte_hash_sees_every_byte_and_the_length() {
        let base: Vec<u8> = (0..21).collect();
        let h = mix_bytes(1, &base);
        for i in 0..base.len() {
            let mut v = base.clone();
            v[i] ^= 1;
            assert_ne!(mix_bytes(1, &v), h, "byte {i} ignored");
        }
        // Zero padding inside the last word is not the same value.
        assert_ne!(mix_bytes(1, b"a"), mix_bytes(1, b"a\0"));
        assert_ne!(mix_bytes(1, b""), mix_bytes(1, &[0u8; 8]));
    }
}
