//! Leader transfer at the replica layer (etcd's MoveLeader): the checks every log engine
//! shares — the engine has a leader, this replica is it, the target is a voter of the
//! configuration in force (not a learner, not unknown) — before the protocol's own hand-off
//! (OmniPaxos: a ballot hand-off; VR: a view change to the target's view). Completion is the
//! protocol's leader hint naming the target; the protocol abandons a hand-off that takes
//! longer than `leader_transfer_ticks` by itself.

use crate::Replica;
use synod_core::{LeaderTransferError, LogProtocol, NodeId};

impl<P: LogProtocol> Replica<P> {
    /// Starts a hand-off to `to`, or to the most up-to-date other voter; returns the target.
    pub(crate) fn start_leader_transfer(
        &mut self,
        to: Option<NodeId>,
    ) -> Result<NodeId, LeaderTransferError> {
        if P::LEADERLESS {
            return Err(LeaderTransferError::Unsupported {
                engine: P::NAME.to_string(),
            });
        }
        let to = match to {
            Some(to) => to,
            None => self.best_transfer_target()?,
        };
        let config = &self.state.config;
        if !config.members.is_empty() && !config.contains(to) {
            return Err(LeaderTransferError::BadTarget {
                target: to,
                why: "is not a member".into(),
            });
        }
        if config.is_learner(to) {
            return Err(LeaderTransferError::BadTarget {
                target: to,
                why: "is a learner (only voters can lead)".into(),
            });
        }
        if !self.is_leader() {
            return Err(LeaderTransferError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        if to == self.config.id {
            // Already leading: etcd answers a move to the current leader with success too.
            return Ok(to);
        }
        let Some(p) = self.protocol.as_mut() else {
            return Err(LeaderTransferError::NotLeader { leader: None });
        };
        let r = p.transfer_leadership(to, &mut self.pout);
        self.drain_protocol();
        r.map(|()| to)
    }

    /// The protocol's most up-to-date follower, else the first other voter.
    fn best_transfer_target(&self) -> Result<NodeId, LeaderTransferError> {
        if !self.is_leader() {
            return Err(LeaderTransferError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        let me = self.config.id;
        let candidate = self.protocol.as_ref().and_then(|p| p.transfer_candidate());
        let voters = self.state.config.voters();
        candidate
            .or_else(|| voters.into_iter().find(|v| *v != me))
            .ok_or_else(|| LeaderTransferError::NotReady("no other voter to lead".into()))
    }

    /// The voter a hand-off under way goes to (for the simulator's reports).
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.protocol.as_ref().and_then(|p| p.transfer_target())
    }
}
