//! Ballots (CASPaxos §2.1: "ballot numbers … (counter, proposer id)") and the proposer's ballot
//! counter, whose high-water mark is leased through durable records so that a restarted
//! proposer never reuses a ballot.
//!
//! One counter serves every key of a proposer. A per-key counter would work for Paxos alone,
//! but a single counter makes every ballot a proposer ever issues globally unique, which the
//! garbage collector relies on (see `gc.rs`: a dropped key falls back to the acceptor-wide
//! floor ballot, and a ballot used on one key can then never show up on another).

use serde::{Deserialize, Serialize};
use synod_core::NodeId;

/// A Paxos ballot. Ordered by counter, then by proposer id, so two proposers never issue
/// equal ballots. `Ballot::ZERO` is below every ballot a proposer issues (counters start at 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub counter: u64,
    pub node: NodeId,
}

impl Ballot {
    pub const ZERO: Ballot = Ballot {
        counter: 0,
        node: 0,
    };
}

impl std::fmt::Display for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.counter, self.node)
    }
}

/// How far ahead of the highest counter used a lease reaches: one durable record per this many
/// ballots. After a crash up to this many counter values are skipped, which costs nothing.
pub const BALLOT_LEASE_COUNTERS: u64 = 1024;

/// Issues this proposer's ballots. Every counter handed out is at most `leased_max`, and
/// `leased_max` is durable before any message carrying such a ballot leaves (the lease record
/// goes into the same `Ready` batch, ahead of the messages), so after a restart
/// `counter = leased_max` is above every ballot this proposer ever used.
#[derive(Clone, Debug)]
pub struct BallotCounter {
    node: NodeId,
    /// Highest counter issued or seen in anyone's ballot (Paxos: a new ballot must beat every
    /// ballot we know of, or it is rejected anyway).
    counter: u64,
    /// Highest counter covered by a durable lease record.
    leased_max: u64,
}

impl BallotCounter {
    /// A counter recovered with durable lease `leased_max` (0 on first boot).
    pub fn recover(node: NodeId, leased_max: u64) -> Self {
        BallotCounter {
            node,
            counter: leased_max,
            leased_max,
        }
    }

    /// Remembers a ballot seen from anyone, so the next ballot issued is above it.
    pub fn observe(&mut self, seen: Ballot) {
        self.counter = self.counter.max(seen.counter);
    }

    /// Highest counter issued or seen: the engine's `term`.
    pub fn highest(&self) -> u64 {
        self.counter
    }

    pub fn leased_max(&self) -> u64 {
        self.leased_max
    }

    /// A fresh ballot above every ballot issued or observed. Returns the new lease to persist
    /// when the lease had to be extended; the caller must emit it before sending the ballot.
    pub fn issue(&mut self) -> (Ballot, Option<u64>) {
        self.counter += 1;
        let mut new_lease = None;
        if self.counter > self.leased_max {
            self.leased_max = self.counter + BALLOT_LEASE_COUNTERS;
            new_lease = Some(self.leased_max);
        }
        assert!(self.counter <= self.leased_max, "ballot outside its lease");
        (
            Ballot {
                counter: self.counter,
                node: self.node,
            },
            new_lease,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballots_order_by_counter_then_node() {
        let a = Ballot {
            counter: 1,
            node: 3,
        };
        let b = Ballot {
            counter: 2,
            node: 1,
        };
        assert!(Ballot::ZERO < a && a < b);
        assert!(
            Ballot {
                counter: 2,
                node: 2
            } > b
        );
    }

    #[test]
    fn counter_never_reuses_a_ballot_after_recovery() {
        let mut c = BallotCounter::recover(1, 0);
        let (b1, lease) = c.issue();
        let lease = lease.expect("first ballot extends the lease");
        c.observe(Ballot {
            counter: 50,
            node: 2,
        });
        let (b2, none) = c.issue();
        assert!(none.is_none());
        assert!(b2.counter > 50 && b2 > b1);
        // Crash: only the lease survived.
        let mut r = BallotCounter::recover(1, lease);
        let (b3, _) = r.issue();
        assert!(b3 > b2, "{b3} must beat {b2}");
    }
}
