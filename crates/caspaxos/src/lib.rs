//! The CASPaxos engine (Rystsov, "CASPaxos: Replicated State Machines without logs", 2018) as a
//! sans-IO [`synod_core::Engine`]: no log and no leader, one register per key, every node both
//! proposer and acceptor.
//!
//! * `ballot.rs` — ballots (counter, proposer id) and the durable counter lease.
//! * `messages.rs` — register values (with the per-key exactly-once table), protocol messages,
//!   durable records.
//! * `acceptor.rs` — promise / accept, the durable per-key state, dropping collected keys.
//! * `proposer.rs` — rounds, the one-round-trip optimisation, backoff, expiry, batching.
//! * `gc.rs` — the tombstone garbage collection and why it is safe.
//! * `repair.rs` — rebuilding the acceptor from peers after lost or damaged storage.
//! * `digest.rs` — the order-independent register digest the simulator's agreement check
//!   compares at quiescence.
//!
//! **Self-delivery.** A node's proposer talks to its own acceptor without the network: such
//! messages go through an in-engine loopback queue drained before the input call returns. The
//! acceptor's records still land in the same [`Ready`] batch ahead of every message and reply
//! that depends on them, so persist-before-send holds for the local acceptor too.
//!
//! **Reads.** A linearizable read is a full round with the identity change function (the
//! paper's read). `Consistency::Sequential` is served the same way: answering from the local
//! acceptor's accepted value would return "some value accepted at some point", which may never
//! have been chosen and may later be superseded by a value that never saw it, so a node could
//! show a write and then un-show it — not even sequentially consistent.
//!
//! **Durability.** Every promise or accept that changes an acceptor register emits a
//! [`Record::Register`]; [`Engine::recover`] replays them (last record per key wins). When
//! `snapshot_entries` is non-zero a [`Record::Checkpoint`] with the full acceptor state follows
//! every `snapshot_entries` records, so storage can drop what precedes it.

pub mod acceptor;
pub mod ballot;
pub mod digest;
pub mod gc;
pub mod messages;
pub mod proposer;
pub mod repair;

#[cfg(test)]
mod tests;

use crate::acceptor::{Acceptor, AcceptorOutput};
use crate::digest::RegisterDigest;
use crate::messages::{Message, Record};
use crate::proposer::{Dest, Effects, Proposer};
use std::collections::VecDeque;
use synod_core::{
    Capabilities, ClientRequest, Engine, EngineConfig, EngineStatus, NodeId, OutputBuffer,
    PlantedBug, Ready,
};

pub use crate::ballot::Ballot;

/// The engine's name, as in `--engine caspaxos` and in `Unsupported` errors.
pub const NAME: &str = "caspaxos";

/// Most loopback messages handled for one input; far above what one input can produce (one
/// round step per queued key), so hitting it means a message loop — a bug.
const LOOPBACK_MESSAGES_MAX: usize = 1 << 20;

/// A CASPaxos replica: this node's acceptor and proposer.
pub struct CasPaxos {
    config: EngineConfig,
    now_tick: u64,
    acceptor: Acceptor,
    proposer: Proposer,
    out: OutputBuffer<Message, Record>,
    /// Messages from this node to itself, handled before the current input returns.
    loopback: VecDeque<Message>,
    /// Records emitted since the last checkpoint.
    records_since_checkpoint: u64,
    /// Repairing after lost storage (`repair.rs`); `None` once the acceptor is whole.
    repair: Option<repair::RepairState>,
    /// The acceptor's registers as `EngineStatus::state_digest` reports them.
    digest: RegisterDigest,
}

impl CasPaxos {
    /// The acceptor (tests, diagnostics).
    pub fn acceptor(&self) -> &Acceptor {
        &self.acceptor
    }

    /// The proposer (tests, diagnostics).
    pub fn proposer(&self) -> &Proposer {
        &self.proposer
    }

    fn push_record(&mut self, record: Record) {
        self.records_since_checkpoint += 1;
        self.digest.apply(&record);
        self.out.records.push(record);
    }

    /// Routes what the proposer produced: records first (they are ordered before every
    /// message of the batch anyway), messages to peers or to the loopback, replies.
    fn route(&mut self, fx: Effects) {
        for r in fx.records {
            self.push_record(r);
        }
        for (dest, msg) in fx.sends {
            match dest {
                Dest::All => {
                    for i in 0..self.config.members.len() {
                        let to = self.config.members[i];
                        self.send(to, msg.clone());
                    }
                }
                Dest::Node(to) => self.send(to, msg),
            }
        }
        self.out.replies.extend(fx.replies);
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        if to == self.config.id {
            self.loopback.push_back(msg);
        } else {
            self.out.messages.push((to, msg));
        }
    }

    fn handle(&mut self, from: NodeId, message: Message) {
        let mut fx = Effects::default();
        let now = self.now_tick;
        let message = match message {
            Message::RepairQuery { nonce, after } => {
                return self.handle_repair_query(from, nonce, after);
            }
            Message::RepairPage {
                nonce,
                after,
                floor,
                registers,
                next,
            } => return self.handle_repair_page(from, nonce, after, floor, registers, next),
            // Repairing: the acceptor is not whole, so it answers nothing, and the proposer
            // runs no rounds.
            _ if self.repair.is_some() => return,
            m => m,
        };
        let acceptor_out = match message {
            Message::Prepare { key, ballot } => {
                self.proposer.observe(ballot);
                Some(self.acceptor.on_prepare(key, ballot))
            }
            Message::Accept {
                key,
                ballot,
                value,
                next,
            } => {
                // The acceptor may promise `next` too: start our own ballots above it rather
                // than learn it from a Nack.
                self.proposer
                    .observe(next.map_or(ballot, |n| n.max(ballot)));
                if self.lies_about_accepts() {
                    Some(AcceptorOutput {
                        reply: Some(Message::Accepted { key, ballot }),
                        record: None,
                    })
                } else {
                    Some(self.acceptor.on_accept(key, ballot, value, next))
                }
            }
            Message::Drop { key, ballot } => {
                let out = self.acceptor.on_drop(key, ballot);
                // Absent keys are now promised at the floor: start new keys above it rather
                // than learn it from a Nack.
                self.proposer.observe(self.acceptor.floor());
                Some(out)
            }
            Message::Promise {
                key,
                ballot,
                accepted,
            } => {
                self.proposer
                    .on_promise(from, key, ballot, accepted, now, &mut fx);
                None
            }
            Message::Accepted { key, ballot } => {
                self.proposer.on_accepted(from, key, ballot, now, &mut fx);
                None
            }
            Message::Nack {
                key,
                ballot,
                promised,
            } => {
                self.proposer.on_nack(key, ballot, promised, now, &mut fx);
                None
            }
            Message::RepairQuery { .. } | Message::RepairPage { .. } => None,
        };
        if let Some(out) = acceptor_out {
            if let Some(r) = out.record {
                self.push_record(r);
            }
            if let Some(reply) = out.reply {
                self.send(from, reply);
            }
        }
        self.route(fx);
    }

    /// Planted bug `CasAcceptedWithoutStoring`: the highest-numbered node's acceptor answers
    /// Accepted and keeps nothing (a disk that acknowledges writes it loses). One node only, so
    /// that the others still hold the truth the digests are compared against.
    fn lies_about_accepts(&self) -> bool {
        self.config.bug(PlantedBug::CasAcceptedWithoutStoring)
            && self.config.members.last() == Some(&self.config.id)
    }

    fn drain_loopback(&mut self) {
        let mut handled = 0usize;
        while let Some(msg) = self.loopback.pop_front() {
            handled += 1;
            assert!(handled <= LOOPBACK_MESSAGES_MAX, "loopback message loop");
            self.handle(self.config.id, msg);
        }
    }
}

impl Engine for CasPaxos {
    type Message = Message;
    type Record = Record;

    const NAME: &'static str = NAME;

    fn capabilities() -> Capabilities {
        Capabilities {
            ranges: false,
            transactions: false,
            revisions: false,
            leases: false,
        }
    }

    fn recover(config: EngineConfig, records: Vec<Record>) -> Result<Self, String> {
        if !config.members.contains(&config.id) {
            return Err(format!(
                "node {} is not among members {:?}",
                config.id, config.members
            ));
        }
        let mut acceptor = Acceptor::new(config.bug(PlantedBug::PromiseWithoutHighestAccepted));
        let mut counter_max = 0u64;
        // Nothing on disk: a new node (which says so durably at once, so that a restart before
        // its first record is not mistaken for a lost disk), or a lost disk (`repair.rs`).
        let mut amnesic = records.is_empty() && !config.first_boot;
        for r in &records {
            match r {
                Record::BallotLease { counter_max: c } => counter_max = counter_max.max(*c),
                Record::Checkpoint { counter_max: c, .. } => counter_max = counter_max.max(*c),
                Record::Amnesic(a) => amnesic = *a,
                Record::Register(_) | Record::Dropped { .. } => {}
            }
            acceptor.restore(r)?;
        }
        let mut out = OutputBuffer::default();
        if records.is_empty() {
            out.records.push(Record::Amnesic(amnesic));
        }
        let mut proposer = Proposer::new(&config, counter_max);
        proposer.observe(acceptor.highest_promised());
        let tombstones: Vec<(Vec<u8>, u64)> = acceptor
            .own_tombstones(config.id)
            .map(|(k, writes)| (k.clone(), writes))
            .collect();
        for (key, writes) in tombstones {
            proposer.note_tombstone(&key, writes, 0);
        }
        // From the acceptor's registers as restored, not from the records: whatever recovery
        // kept is what this node holds.
        let digest = match acceptor.checkpoint(0) {
            Record::Checkpoint { registers, .. } => RegisterDigest::of_registers(&registers),
            _ => RegisterDigest::default(),
        };
        let mut node = CasPaxos {
            config,
            now_tick: 0,
            acceptor,
            proposer,
            out,
            loopback: VecDeque::new(),
            records_since_checkpoint: 0,
            digest,
            repair: amnesic.then(repair::RepairState::default),
        };
        node.repair_tick();
        Ok(node)
    }

    fn submit(&mut self, request: ClientRequest) {
        if self.repair.is_some() {
            // Definitely not applied: the client retries at another node.
            self.out.replies.push(synod_core::ClientReply {
                id: request.id,
                result: Err(synod_core::EngineError::Busy),
            });
            return;
        }
        let mut fx = Effects::default();
        self.proposer.submit(request, self.now_tick, &mut fx);
        self.route(fx);
        self.drain_loopback();
    }

    fn receive(&mut self, from: NodeId, message: Message) {
        // The transport authenticates members; a message from anyone else is ignored, and a
        // node never sends itself anything over the network.
        if from == self.config.id || !self.config.members.contains(&from) {
            return;
        }
        if message.ballot_counter_max() > messages::BALLOT_COUNTER_MAX {
            return;
        }
        self.handle(from, message);
        self.drain_loopback();
    }

    fn tick(&mut self) {
        self.now_tick += 1;
        if self.repair.is_some() {
            self.repair_tick();
            return;
        }
        let mut fx = Effects::default();
        self.proposer.tick(self.now_tick, &mut fx);
        self.route(fx);
        self.drain_loopback();
    }

    fn ready(&mut self) -> Ready<Message, Record> {
        let every = self.config.snapshot_entries;
        // (Never while repairing: a checkpoint would subsume the `Amnesic(true)` record.)
        if every > 0 && self.records_since_checkpoint >= every && self.repair.is_none() {
            // After every record of this batch, so it subsumes them.
            let cp = self.acceptor.checkpoint(self.proposer.leased_counter_max());
            self.out.records.push(cp);
            self.records_since_checkpoint = 0;
        }
        self.out.take()
    }

    fn status(&self) -> EngineStatus {
        EngineStatus {
            leader: None,
            term: self.proposer.highest_counter(),
            decided_index: 0,
            applied_index: 0,
            revision: 0,
            compact_revision: 0,
            applied_digest: None,
            state_digest: Some(self.digest.value()),
            pending_requests: self.proposer.pending_requests(),
            keys: self.acceptor.len() as u64,
            role: if self.repair.is_some() {
                "repairing"
            } else {
                "proposer"
            }
            .to_string(),
            ..Default::default()
        }
    }
}
