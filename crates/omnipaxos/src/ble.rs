//! Ballot Leader Election (paper §5, Algorithm 1): heartbeat rounds every
//! `election_timeout_ticks`, the quorum-connected flag, and the rule that elects the highest
//! ballot among quorum-connected candidates.
//!
//! Why this gives progress under partial connectivity: a server only takes part in deciding
//! the leader when it heard a majority (itself included) in the last round, and only servers
//! that report being quorum-connected can be elected. When the current leader drops out of
//! the quorum-connected candidates seen by a quorum-connected server, that server bumps its own
//! ballot above the leader's and so becomes the top candidate one round later — the quorum-loss
//! and constrained-election scenarios recover through exactly this. A server that still sees
//! its leader among the candidates does not bump, so in the chained scenario the servers on
//! either side of the broken link do not keep stealing leadership from each other.
//!
//! Recovery: a restarted server's BLE state is volatile, but Sequence Paxos's promise is not.
//! The promise is adopted as the known leader before every election, so BLE never elects a
//! ballot below what this server promised. A server that finds its *own* recovered promise
//! elected (it led before the crash, e.g. after a whole-cluster power loss where every promise
//! still names it) cannot lead with that ballot again — it may have sent accepts in it that it
//! no longer remembers sending — so it outbids its own promise ([`Ble::outbid`]) and is elected
//! one round later with a fresh, strictly higher ballot.

use crate::ballot::Ballot;
use crate::messages::{BleMessage, Message};
use std::collections::BTreeMap;
use synod_core::{EngineConfig, NodeId, PlantedBug};

#[derive(Debug)]
pub struct Ble {
    peers: Vec<NodeId>,
    majority: usize,
    round_ticks: u64,
    ticks_in_round: u64,
    round: u64,
    /// This server's own ballot: what it would lead with.
    pub current_ballot: Ballot,
    /// The ballot this server currently believes leads (BOTTOM = none yet).
    pub leader: Ballot,
    /// Heard a majority (itself included) in the last completed round. Starts true so the
    /// first round elects one server instead of every server electing itself.
    quorum_connected: bool,
    /// Replies in the current round: the peer's own ballot and quorum-connected flag.
    replies: BTreeMap<NodeId, (Ballot, bool)>,
    /// Planted bug `IgnoreQuorumConnected`.
    ignore_quorum_connected: bool,
    /// Repairing lost storage (`repair.rs`): this server is no candidate, neither in its own
    /// rounds nor in its replies (it reports itself not quorum-connected).
    repairing: bool,
}

impl Ble {
    pub fn new(config: &EngineConfig) -> Self {
        assert!(config.election_timeout_ticks > 0);
        Ble {
            peers: config.peers().collect(),
            majority: config.majority(),
            round_ticks: config.election_timeout_ticks,
            ticks_in_round: 0,
            round: 0,
            current_ballot: Ballot {
                n: 0,
                priority: config.priority,
                pid: config.id,
            },
            leader: Ballot::BOTTOM,
            quorum_connected: true,
            replies: BTreeMap::new(),
            ignore_quorum_connected: config.bug(PlantedBug::IgnoreQuorumConnected),
            repairing: false,
        }
    }

    pub fn set_repairing(&mut self, repairing: bool) {
        self.repairing = repairing;
    }

    pub fn quorum_connected(&self) -> bool {
        self.quorum_connected
    }

    /// Starts a new heartbeat round.
    pub fn start_round(&mut self, out: &mut Vec<(NodeId, Message)>) {
        self.round += 1;
        self.ticks_in_round = 0;
        self.replies.clear();
        for p in &self.peers {
            out.push((
                *p,
                Message::Ble(BleMessage::HeartbeatRequest { round: self.round }),
            ));
        }
    }

    /// One tick; at the end of a round in which this server was quorum-connected, returns the
    /// leader (every round, not only on change: the caller must be able to notice that the
    /// elected ballot is its own but Sequence Paxos is not leading it — after a restart).
    /// `sequence_paxos_promise` is the highest ballot Sequence Paxos promised: a leader this
    /// server already follows there is adopted so the bump rule applies to it too.
    pub fn tick(
        &mut self,
        sequence_paxos_promise: Ballot,
        out: &mut Vec<(NodeId, Message)>,
    ) -> Option<Ballot> {
        self.ticks_in_round += 1;
        if self.ticks_in_round < self.round_ticks {
            return None;
        }
        let elected = self.hb_timeout(sequence_paxos_promise);
        self.start_round(out);
        elected
    }

    fn hb_timeout(&mut self, sequence_paxos_promise: Ballot) -> Option<Ballot> {
        self.quorum_connected = self.replies.len() + 1 >= self.majority;
        // A ballot learned from a promise during this round may be newer than the replies:
        // its owner can have raised it mid-round (a leader hand-off, or an outbid at the end
        // of its own round), after answering our heartbeat with its old ballot. Judge whether
        // it is still a candidate on the next round's replies, or we would outbid a live
        // leader at once and take the leadership straight back.
        let adopted = sequence_paxos_promise > self.leader;
        if adopted {
            self.leader = sequence_paxos_promise;
        }
        if !self.quorum_connected && !self.ignore_quorum_connected {
            // Not quorum-connected: this server has no say in who leads.
            return None;
        }
        let own = (!self.repairing).then_some(self.current_ballot);
        let top = self
            .replies
            .values()
            .filter(|(_, qc)| *qc || self.ignore_quorum_connected)
            .map(|(b, _)| *b)
            .chain(own)
            .max()?;
        if self.repairing {
            // No candidate ourselves: just follow the top one if it is at least the known leader.
            if top >= self.leader {
                self.leader = top;
            }
            return None;
        }
        if top < self.leader {
            // The leader is no longer among the quorum-connected candidates: outbid it, so this
            // server is the top candidate next round (if it still is quorum-connected).
            if !adopted {
                self.outbid(self.leader);
            }
            return None;
        }
        self.leader = top;
        Some(top)
    }

    /// Raises this server's own ballot number above `b`, so that it becomes the top candidate
    /// next round. Never lowers it.
    pub fn outbid(&mut self, b: Ballot) {
        self.current_ballot.n = self.current_ballot.n.max(b.n + 1);
    }

    /// A leader hand-off made this server the next leader: its ballot goes above `known` (the
    /// highest ballot it knows of) and above every candidate it heard this round, and it is
    /// the leader as far as its own BLE is concerned from now on. Returns the new ballot.
    pub fn take_over(&mut self, known: Ballot) -> Ballot {
        let heard = self.replies.values().map(|(b, _)| *b).max();
        let top = heard.map_or(known, |h| h.max(known)).max(self.leader);
        self.outbid(top);
        self.leader = self.current_ballot;
        self.current_ballot
    }

    pub fn handle(&mut self, from: NodeId, msg: BleMessage, out: &mut Vec<(NodeId, Message)>) {
        match msg {
            BleMessage::HeartbeatRequest { round } => out.push((
                from,
                Message::Ble(BleMessage::HeartbeatReply {
                    round,
                    ballot: self.current_ballot,
                    quorum_connected: self.quorum_connected && !self.repairing,
                }),
            )),
            BleMessage::HeartbeatReply {
                round,
                ballot,
                quorum_connected,
            } => {
                // Late replies from an earlier round say nothing about connectivity now.
                if round == self.round && ballot.pid == from {
                    self.replies.insert(from, (ballot, quorum_connected));
                }
            }
        }
    }
}
