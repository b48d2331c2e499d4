//! The leadership confirmation behind the replica layer's read index (see `synod-replica`'s
//! `reads.rs` for the protocol and its linearizability argument).
//!
//! Only a leader in its ballot's Accept phase starts a round: its log then holds every decided
//! entry (the Prepare phase adopted the most up-to-date log of a majority), so its log length
//! is a safe read index. It asks every server `ReadConfirm(n)`; a server answers only if its
//! promised ballot is still exactly `n`. A majority (the leader included) still promising `n`
//! means no higher ballot had completed a Prepare (that needs a majority of promises, which
//! intersects ours), so no other leader could have decided anything this log lacks.

use crate::OmniPaxos;
use crate::ballot::Ballot;
use crate::messages::{Message, PaxosMessage};
use crate::sequence_paxos::Role;
use std::collections::BTreeSet;
use synod_core::{NodeId, ProtocolEvent};

/// The round in flight (volatile; dropped whenever leadership changes).
#[derive(Debug)]
pub struct ReadConfirmRound {
    round: u64,
    n: Ballot,
    acks: BTreeSet<NodeId>,
}

impl OmniPaxos {
    /// Starts confirming leadership for `round`; the read index is the log length now.
    pub(crate) fn start_read_confirm(&mut self, round: u64) -> Option<u64> {
        let n = self.accepting_ballot()?;
        self.read_round = Some(ReadConfirmRound {
            round,
            n,
            acks: BTreeSet::new(),
        });
        let peers: Vec<NodeId> = self.config.peers().collect();
        for p in peers {
            self.out
                .messages
                .push((p, Message::Paxos(PaxosMessage::ReadConfirm { n, round })));
        }
        self.maybe_confirm_reads();
        Some(self.store.log_len())
    }

    /// Heartbeat: re-asks servers that have not acknowledged the round in flight (loss).
    pub(crate) fn resend_read_confirm(&mut self) {
        let Some(r) = &self.read_round else {
            return;
        };
        let (n, round) = (r.n, r.round);
        let missing: Vec<NodeId> = self
            .config
            .peers()
            .filter(|p| !r.acks.contains(p))
            .collect();
        for p in missing {
            self.out
                .messages
                .push((p, Message::Paxos(PaxosMessage::ReadConfirm { n, round })));
        }
    }

    pub(crate) fn handle_read_confirm_ack(&mut self, from: NodeId, n: Ballot, round: u64) {
        if !matches!(self.role, Role::Leader(_)) {
            return;
        }
        let Some(r) = &mut self.read_round else {
            return;
        };
        if r.n != n || r.round != round {
            return;
        }
        r.acks.insert(from);
        self.maybe_confirm_reads();
    }

    fn maybe_confirm_reads(&mut self) {
        let majority = self.config.majority();
        if self
            .read_round
            .as_ref()
            .is_none_or(|r| r.acks.len() + 1 < majority)
        {
            return;
        }
        if let Some(r) = self.read_round.take() {
            self.out
                .events
                .push(ProtocolEvent::ReadConfirmed { round: r.round });
        }
    }
}
