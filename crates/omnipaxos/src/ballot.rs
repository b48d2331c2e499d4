//! Ballots (paper §4.1 / §5): the round identifier shared by Ballot Leader Election and
//! Sequence Paxos. Ordered lexicographically by (n, priority, pid), so a higher-priority server
//! wins among equal ballot numbers and the server id breaks any remaining tie — two servers can
//! never hold the same ballot.

use serde::{Deserialize, Serialize};
use synod_core::NodeId;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    /// The ballot number; bumped by BLE when the leader is no longer a quorum-connected candidate.
    pub n: u64,
    /// `EngineConfig::priority`: the tiebreak among equal `n`.
    pub priority: u64,
    /// The server that owns this ballot (and leads Sequence Paxos in it). Never 0 for a real
    /// ballot, which makes every real ballot greater than [`Ballot::BOTTOM`].
    pub pid: NodeId,
}

impl Ballot {
    /// "No ballot" (the paper's ⊥): below every real ballot.
    pub const BOTTOM: Ballot = Ballot {
        n: 0,
        priority: 0,
        pid: 0,
    };

    pub fn is_bottom(&self) -> bool {
        *self == Ballot::BOTTOM
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_is_n_then_priority_then_pid() {
        let b = |n, priority, pid| Ballot { n, priority, pid };
        assert!(b(2, 0, 1) > b(1, 9, 9));
        assert!(b(1, 2, 1) > b(1, 1, 9));
        assert!(b(1, 1, 2) > b(1, 1, 1));
        assert!(b(0, 0, 1) > Ballot::BOTTOM);
    }
}
