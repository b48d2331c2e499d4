//! The key footprint of a KV operation: which keys it reads and which it writes.
//!
//! A leaderless protocol (EPaxos) orders only commands that *interfere*; two commands
//! interfere when one writes a key the other reads or writes. Reads of the same key commute.
//! A footprint is a list of etcd-style spans (`[key, range_end)`, an empty end = one key,
//! `"\0"` = every key from `key` on) read and written, or `global` for an operation whose
//! effect is not confined to keys (compaction, leases): it interferes with everything.

use super::{Op, TxnOp, in_range};
use serde::{Deserialize, Serialize};

/// One etcd-style key span.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    pub key: Vec<u8>,
    /// Empty = just `key`; `[0]` = every key ≥ `key`; else exclusive end.
    pub range_end: Vec<u8>,
}

impl Span {
    pub fn key(key: &[u8]) -> Span {
        Span {
            key: key.to_vec(),
            range_end: Vec::new(),
        }
    }

    pub fn range(key: &[u8], range_end: &[u8]) -> Span {
        Span {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        }
    }

    /// A single key (not a range): the common case, indexed by key.
    pub fn single(&self) -> Option<&[u8]> {
        self.range_end.is_empty().then_some(self.key.as_slice())
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        in_range(&self.key, &self.range_end, key)
    }

    /// Do the two spans share a key?
    pub fn overlaps(&self, other: &Span) -> bool {
        match (self.single(), other.single()) {
            (Some(a), _) => other.contains(a),
            (_, Some(b)) => self.contains(b),
            (None, None) => {
                // Two half-open ranges [a, ea) and [b, eb) overlap iff a < eb and b < ea,
                // with "\0" as an end meaning unbounded.
                let below = |start: &[u8], end: &[u8]| end == [0] || start < end;
                below(&self.key, &other.range_end) && below(&other.key, &self.range_end)
            }
        }
    }
}

/// What an operation touches.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Footprint {
    pub reads: Vec<Span>,
    pub writes: Vec<Span>,
    /// Interferes with every other command (its effect is not confined to keys).
    pub global: bool,
    /// Client sessions whose exactly-once table the command updates (a write with a client
    /// id): a client's writes are ordered among themselves, because the session table
    /// forgets replies below the client's acknowledged floor and so must see them in the
    /// order the client issued them. Filled in by the engine (the op does not know its client).
    pub sessions: Vec<u64>,
}

impl Footprint {
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty() && self.sessions.is_empty() && !self.global
    }

    /// Everything: interferes with every other command.
    pub fn global() -> Footprint {
        Footprint {
            global: true,
            ..Footprint::default()
        }
    }

    /// Must the two commands be ordered? One writes what the other reads or writes. With
    /// `reads_commute_with_writes` (a planted bug) reads never conflict.
    pub fn interferes(&self, other: &Footprint) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        if self.global || other.global {
            return true;
        }
        let any = |a: &[Span], b: &[Span]| a.iter().any(|x| b.iter().any(|y| x.overlaps(y)));
        self.same_session(other)
            || any(&self.writes, &other.writes)
            || any(&self.writes, &other.reads)
            || any(&self.reads, &other.writes)
    }

    /// Like [`Footprint::interferes`] but treating reads as commuting with writes: the planted
    /// bug `EpaxosGetCommutesWithPut`.
    pub fn interferes_writes_only(&self, other: &Footprint) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        if self.global || other.global {
            return true;
        }
        self.same_session(other)
            || self
                .writes
                .iter()
                .any(|x| other.writes.iter().any(|y| x.overlaps(y)))
    }

    fn same_session(&self, other: &Footprint) -> bool {
        self.sessions.iter().any(|c| other.sessions.contains(c))
    }
}

impl Op {
    /// The keys this operation reads and writes (see the module docs).
    pub fn footprint(&self) -> Footprint {
        let mut f = Footprint::default();
        match self {
            Op::Range(r) => f.reads.push(Span::range(&r.key, &r.range_end)),
            Op::Put(p) => f.writes.push(Span::key(&p.key)),
            Op::DeleteRange(d) => f.writes.push(Span::range(&d.key, &d.range_end)),
            Op::Cas(c) => f.writes.push(Span::key(&c.key)),
            Op::Txn(t) => {
                for c in &t.compare {
                    f.reads.push(Span::range(&c.key, &c.range_end));
                }
                for op in t.success.iter().chain(&t.failure) {
                    match op {
                        TxnOp::Range(r) => f.reads.push(Span::range(&r.key, &r.range_end)),
                        TxnOp::Put(p) => f.writes.push(Span::key(&p.key)),
                        TxnOp::DeleteRange(d) => f.writes.push(Span::range(&d.key, &d.range_end)),
                    }
                }
                f.reads.sort();
                f.reads.dedup();
                f.writes.sort();
                f.writes.dedup();
            }
            Op::Compact(_)
            | Op::LeaseGrant(_)
            | Op::LeaseRevoke { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseTimeToLive { .. }
            | Op::LeaseLeases
            | Op::LeaseExpire { .. }
            | Op::Membership(_)
            | Op::MembershipAt { .. }
            // An auth change can grant or revoke any key: ordered against everything.
            | Op::Auth(_)
            | Op::Split(_)
            | Op::Merge(_)
            | Op::Absorb(_)
            | Op::Move(_)
            | Op::CloseRevisions { .. } => f.global = true,
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{PutRequest, RangeRequest, TxnRequest};

    fn get(k: &str) -> Op {
        Op::Range(RangeRequest {
            key: k.into(),
            ..Default::default()
        })
    }

    fn scan(k: &str, end: &[u8]) -> Op {
        Op::Range(RangeRequest {
            key: k.into(),
            range_end: end.to_vec(),
            ..Default::default()
        })
    }

    fn put(k: &str) -> Op {
        Op::Put(PutRequest::new(k.as_bytes().to_vec(), b"v".to_vec()))
    }

    #[test]
    fn reads_commute_writes_do_not() {
        let (ga, pa, pb) = (
            get("a").footprint(),
            put("a").footprint(),
            put("b").footprint(),
        );
        assert!(!ga.interferes(&ga));
        assert!(ga.interferes(&pa) && pa.interferes(&ga));
        assert!(pa.interferes(&pa));
        assert!(!pa.interferes(&pb));
        assert!(!ga.interferes_writes_only(&pa));
    }

    #[test]
    fn ranges_and_prefixes_conflict_with_writes_inside() {
        let prefix = scan("a/", b"a0").footprint();
        assert!(prefix.interferes(&put("a/x").footprint()));
        assert!(!prefix.interferes(&put("b").footprint()));
        let from = scan("m", &[0]).footprint();
        assert!(from.interferes(&put("z").footprint()));
        assert!(!from.interferes(&put("a").footprint()));
        let r1 = Span::range(b"a", b"c");
        assert!(r1.overlaps(&Span::range(b"b", b"d")));
        assert!(!r1.overlaps(&Span::range(b"c", b"d")));
        assert!(r1.overlaps(&Span::range(b"0", &[0])));
    }

    #[test]
    fn txn_footprint_covers_compares_and_both_branches() {
        let t = Op::Txn(TxnRequest {
            compare: vec![crate::kv::Compare {
                key: b"c".to_vec(),
                range_end: vec![],
                target: crate::kv::CompareTarget::Version(0),
                result: crate::kv::CompareResult::Equal,
            }],
            success: vec![TxnOp::Put(PutRequest::new(b"s".to_vec(), vec![]))],
            failure: vec![TxnOp::Range(RangeRequest {
                key: b"f".to_vec(),
                ..Default::default()
            })],
        })
        .footprint();
        assert!(t.interferes(&put("c").footprint()));
        assert!(t.interferes(&get("s").footprint()));
        assert!(t.interferes(&put("f").footprint()));
        assert!(!t.interferes(&get("f").footprint()));
        assert!(
            Op::LeaseLeases
                .footprint()
                .interferes(&get("x").footprint())
        );
    }
}
