//! Linearizable reads without log entries: the read-index protocol.
//!
//! 1. A linearizable read submitted at any server goes to the leader (a follower sends a
//!    `ReadIndexReq` and re-sends it like a forwarded write until it gets an answer).
//! 2. The leader, only once its ballot's Prepare phase is complete, batches every read waiting
//!    into one round: `read_index` = its log length at the start of the round, and it asks
//!    every server `ReadConfirm(n)`. A server answers only if its promised ballot is still
//!    exactly `n`.
//! 3. With acknowledgements from a majority (the leader included) the round is confirmed: each
//!    read gets `read_index` (sent back to the follower that asked), and is served from the
//!    local KV store of the server it was submitted to once that server has applied at least
//!    `read_index` entries.
//!
//! Why this is linearizable. Let W be any write that completed before the read R was
//! submitted. W completed, so it was decided: it sits in the log of a majority at some
//! position p, in every log accepted in any later ballot, and — because the leader finished
//! its Prepare phase (which adopts the most up-to-date log of a majority) — in this leader's
//! log. The round started after R arrived, and a majority still had promised exactly `n`
//! when they answered, so no higher ballot had yet completed a Prepare (that needs a majority
//! of promises, which intersects ours): no other leader could have decided anything this
//! leader's log does not contain at that moment. Hence p < read_index. Decided positions never
//! change, so any server that has applied ≥ read_index entries has applied W, and serves R
//! from a state that contains every write completed before R began and only writes decided
//! before R is answered. Linearize R at the moment it is served: the state it reads is a
//! decided prefix of the single log, which is exactly the state at that point of the
//! linearization of the writes (writes are linearized at their decision, in log order).
//! If the leader is deposed after confirming, the index stays valid: entries below it that
//! were not yet decided can only be replaced by a newer leader's entries, which are then
//! decided before being applied; the read still reflects every write that completed before it.

use crate::OmniPaxos;
use crate::ballot::Ballot;
use crate::messages::{ClientMessage, Message, Origin, PaxosMessage};
use crate::sequence_paxos::Role;
use std::collections::{BTreeMap, BTreeSet};
use synod_core::NodeId;

/// The leader's read-index state (volatile; cleared whenever leadership changes).
#[derive(Debug, Default)]
pub struct ReadIndexState {
    /// Reads waiting for the next round: (server, incarnation, seq) of each pending read.
    waiting: BTreeSet<Origin>,
    in_flight: Option<ReadRound>,
    next_round: u64,
}

#[derive(Debug)]
struct ReadRound {
    round: u64,
    n: Ballot,
    read_index: u64,
    acks: BTreeSet<NodeId>,
    reads: BTreeSet<Origin>,
}

impl ReadIndexState {
    pub fn clear(&mut self) {
        self.waiting.clear();
        self.in_flight = None;
    }

    pub fn enqueue(&mut self, o: Origin) {
        let in_flight = self
            .in_flight
            .as_ref()
            .is_some_and(|r| r.reads.contains(&o));
        if !in_flight {
            self.waiting.insert(o);
        }
    }
}

impl OmniPaxos {
    /// Called by `ready`: starts a confirmation round for every waiting read if none is in
    /// flight and this server leads an Accept phase.
    pub(crate) fn start_read_round(&mut self) {
        let Some(n) = self.accepting_ballot() else {
            return;
        };
        if self.reads.in_flight.is_some() || self.reads.waiting.is_empty() {
            return;
        }
        self.reads.next_round += 1;
        let round = self.reads.next_round;
        let reads = std::mem::take(&mut self.reads.waiting);
        self.reads.in_flight = Some(ReadRound {
            round,
            n,
            read_index: self.store.log_len(),
            acks: BTreeSet::new(),
            reads,
        });
        let peers: Vec<NodeId> = self.config.peers().collect();
        for p in peers {
            self.out
                .messages
                .push((p, Message::Paxos(PaxosMessage::ReadConfirm { n, round })));
        }
        self.maybe_confirm_reads();
    }

    /// Heartbeat: re-asks servers that have not acknowledged the round in flight (loss).
    pub(crate) fn resend_read_confirm(&mut self) {
        let Some(r) = &self.reads.in_flight else {
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
        let Some(r) = &mut self.reads.in_flight else {
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
        let Some(r) = &self.reads.in_flight else {
            return;
        };
        if r.acks.len() + 1 < majority {
            return;
        }
        let Some(r) = self.reads.in_flight.take() else {
            return;
        };
        let me = self.config.id;
        let mut remote: BTreeMap<(NodeId, u64), Vec<u64>> = BTreeMap::new();
        for o in r.reads {
            if o.node == me {
                if o.incarnation == self.store.incarnation {
                    self.pending.set_read_index(o.seq, r.read_index);
                }
            } else {
                remote
                    .entry((o.node, o.incarnation))
                    .or_default()
                    .push(o.seq);
            }
        }
        for ((node, incarnation), seqs) in remote {
            self.out.messages.push((
                node,
                Message::Client(ClientMessage::ReadIndexResp {
                    incarnation,
                    seqs,
                    read_index: r.read_index,
                }),
            ));
        }
    }
}
