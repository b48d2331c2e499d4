//! The register digest: what CASPaxos reports as `EngineStatus::state_digest`, so that the
//! simulator can check agreement for CASPaxos as it does for the log engines.
//!
//! **What it covers.** The XOR of one hash per register that holds a live value: the hash of
//! the key, the value and the version ([`synod_core::kv::store::key_value_hash`]). XOR makes
//! it independent of the order keys were written in, and lets it follow every change in O(1):
//! XOR the register's old hash out and its new one in. Ballots, promises and the per-register
//! exactly-once table are left out on purpose: two acceptors holding the same value at
//! different ballots (one accepted it in a later identity round) agree on the store, and
//! tombstones and absent keys are the same thing to a client, so both count as nothing.
//!
//! **Why it is only comparable at quiescence.** CASPaxos has no log and no anti-entropy: an
//! acceptor that missed an Accept (down, partitioned, message lost) keeps its older value until
//! a later round on that key reaches it, and a minority may hold a value a failed round left
//! behind. So two correct replicas' digests differ for as long as nobody touches the key. They
//! must agree once every key has been read (a full round: prepare, then accept of the highest
//! accepted value by *every* acceptor) through every node after the last write, with every node
//! up and every link whole: the read through the node whose acceptor holds the highest promise
//! of the key uses a ballot above every promise (a proposer observes its own acceptor's
//! promises), so every acceptor accepts that read's value, and later identity rounds only
//! re-accept it. A replica whose digest still differs then holds a value no quorum read would
//! return — lost or corrupted acceptor state that the clients' history may never have shown.
//!
//! **How it is kept.** From the durable records the engine emits (every change of a register
//! emits one, see `acceptor.rs`), and rebuilt from the acceptor's registers after recovery.

use crate::messages::{AcceptedValue, Record, RegisterRecord};
use std::collections::BTreeMap;
use synod_core::kv::Key;
use synod_core::kv::store::key_value_hash;

/// The digest and each live register's share of it.
#[derive(Clone, Debug, Default)]
pub struct RegisterDigest {
    /// Hash of each register that holds a live value.
    live: BTreeMap<Key, u64>,
    xor: u64,
}

impl RegisterDigest {
    /// The digest of a full register set (a checkpoint's, or the acceptor's after recovery).
    pub fn of_registers<'a>(registers: impl IntoIterator<Item = &'a RegisterRecord>) -> Self {
        let mut d = RegisterDigest::default();
        for r in registers {
            d.set(&r.key, r.accepted.as_ref());
        }
        d
    }

    /// The current digest.
    pub fn value(&self) -> u64 {
        self.xor
    }

    /// Follows one durable record about acceptor state.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Register(r) => self.set(&r.key, r.accepted.as_ref()),
            Record::Dropped { key, .. } => self.set(key, None),
            Record::Checkpoint { registers, .. } => *self = Self::of_registers(registers),
            Record::BallotLease { .. }
            | Record::Amnesic(_)
            | Record::Config(_)
            | Record::Joining => {}
        }
    }

    fn set(&mut self, key: &[u8], accepted: Option<&AcceptedValue>) {
        if let Some(old) = self.live.remove(key) {
            self.xor ^= old;
        }
        if let Some(kv) = accepted.and_then(|a| a.value.kv.as_ref()) {
            let h = key_value_hash(kv);
            self.xor ^= h;
            self.live.insert(key.to_vec(), h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ballot::Ballot;
    use crate::messages::RegisterValue;
    use synod_core::kv::KeyValue;

    fn reg(key: &str, value: Option<&str>, counter: u64) -> Record {
        let mut v = RegisterValue::empty();
        v.kv = value.map(|val| KeyValue {
            key: key.into(),
            value: val.into(),
            create_revision: 0,
            mod_revision: 0,
            version: 1,
            ..Default::default()
        });
        Record::Register(RegisterRecord {
            key: key.into(),
            promised: Ballot { counter, node: 1 },
            accepted: Some(AcceptedValue {
                ballot: Ballot { counter, node: 1 },
                value: v,
            }),
        })
    }

    #[test]
    fn order_and_ballots_do_not_matter_values_do() {
        let (mut a, mut b) = (RegisterDigest::default(), RegisterDigest::default());
        for r in [reg("x", Some("1"), 1), reg("y", Some("2"), 2)] {
            a.apply(&r);
        }
        for r in [
            reg("y", Some("2"), 7),
            reg("x", Some("0"), 3),
            reg("x", Some("1"), 9),
        ] {
            b.apply(&r);
        }
        assert_eq!(a.value(), b.value());
        b.apply(&reg("y", Some("3"), 10));
        assert_ne!(a.value(), b.value());
    }

    #[test]
    fn tombstones_dropped_keys_and_absent_keys_are_all_nothing() {
        let mut d = RegisterDigest::default();
        d.apply(&reg("x", Some("1"), 1));
        d.apply(&reg("x", None, 2));
        assert_eq!(d.value(), 0);
        d.apply(&reg("y", Some("1"), 3));
        d.apply(&Record::Dropped {
            key: b"y".to_vec(),
            floor: Ballot::ZERO,
        });
        assert_eq!(d.value(), 0);
    }
}
