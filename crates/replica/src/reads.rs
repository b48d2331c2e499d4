//! Linearizable reads without log entries: the read-index protocol, for any log protocol.
//!
//! 1. A linearizable read submitted at any replica goes to the leader (a follower sends a
//!    `ReadIndexReq` and re-sends it like a forwarded write until it gets an answer).
//! 2. The leader batches every read waiting into one round at a time: the protocol's
//!    [`LogProtocol::start_read_round`] returns the read index (its log length now, which holds
//!    every decided entry once its leadership is established) and asks a quorum whether it
//!    still leads; [`ProtocolEvent::ReadConfirmed`](synod_core::ProtocolEvent) says they did.
//! 3. Each read of the round gets the read index (sent back to the follower that asked) and is
//!    served from the local KV store of the replica it was submitted to once that replica has
//!    applied at least `read_index` entries.
//!
//! Why this is linearizable: every write W that completed before the read R was submitted is
//! decided, hence in the log of the leader that starts the round after R arrived (each
//! protocol argues this for its leader: OmniPaxos's Prepare adopts the most up-to-date log of
//! a majority, VR's new primary takes the best of f+1 DoViewChange logs); the quorum's
//! confirmation shows no newer leader could have decided anything this leader's log lacks at
//! that moment. So W sits below the read index, and a replica that applied that far serves a
//! state containing W, and only decided writes. Linearize R when it is served.
//!
//! Leadership changes drop the round in flight and the waiting reads: their origins re-send
//! their requests to the new leader (see `pending.rs`).

use crate::Replica;
use crate::messages::Message;
use std::collections::{BTreeMap, BTreeSet};
use synod_core::{LogProtocol, NodeId, Origin};

/// The leader's read-index state (volatile).
#[derive(Debug, Default)]
pub struct ReadIndexState {
    /// Reads waiting for the next round: (replica, incarnation, seq) of each pending read.
    waiting: BTreeSet<Origin>,
    in_flight: Option<ReadRound>,
    next_round: u64,
    /// (configuration epoch, term, leading) when the round in flight started: a change
    /// voids it.
    epoch: (u64, u64, bool),
    /// Reads whose round this replica confirmed as leader, ever ([`synod_core::Engine::reads_led`]).
    pub confirmed: u64,
}

#[derive(Debug)]
struct ReadRound {
    round: u64,
    read_index: u64,
    reads: BTreeSet<Origin>,
}

impl ReadIndexState {
    pub fn enqueue(&mut self, o: Origin) {
        let in_flight = self
            .in_flight
            .as_ref()
            .is_some_and(|r| r.reads.contains(&o));
        if !in_flight {
            self.waiting.insert(o);
        }
    }

    /// A new protocol instance (epoch): no round of the old one stands, and the count of
    /// reads led goes on.
    pub fn restart(&mut self) {
        *self = ReadIndexState {
            confirmed: self.confirmed,
            ..ReadIndexState::default()
        };
    }

    /// Drops everything when this replica's leadership changed since the last call, and says
    /// whether it did.
    pub fn on_epoch(&mut self, epoch: (u64, u64, bool)) -> bool {
        if epoch == self.epoch {
            return false;
        }
        self.epoch = epoch;
        self.waiting.clear();
        self.in_flight = None;
        true
    }
}

impl<P: LogProtocol> Replica<P> {
    /// Called by `ready`: starts a confirmation round for every waiting read if none is in
    /// flight and the protocol can confirm its leadership now.
    pub(crate) fn start_read_round(&mut self) {
        if self.reads.in_flight.is_some() || self.reads.waiting.is_empty() {
            return;
        }
        let round = self.reads.next_round + 1;
        let Some(p) = self.protocol.as_mut() else {
            return;
        };
        let Some(read_index) = p.start_read_round(round, &mut self.pout) else {
            return;
        };
        self.reads.next_round = round;
        let reads = std::mem::take(&mut self.reads.waiting);
        self.reads.in_flight = Some(ReadRound {
            round,
            read_index,
            reads,
        });
        self.drain_protocol();
    }

    /// The protocol confirmed round `round`: hand out its read index.
    pub(crate) fn on_read_confirmed(&mut self, round: u64) {
        if self
            .reads
            .in_flight
            .as_ref()
            .is_none_or(|r| r.round != round)
        {
            return;
        }
        let Some(r) = self.reads.in_flight.take() else {
            return;
        };
        self.reads.confirmed += r.reads.len() as u64;
        let me = self.config.id;
        let incarnation = self.pending.incarnation();
        let mut remote: BTreeMap<(NodeId, u64), Vec<u64>> = BTreeMap::new();
        for o in r.reads {
            if o.node == me {
                if o.incarnation == incarnation {
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
                Message::ReadIndexResp {
                    incarnation,
                    seqs,
                    read_index: r.read_index,
                },
            ));
        }
    }
}
