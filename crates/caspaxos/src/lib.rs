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
//! * `reconf.rs` — versioned configurations and the prepare/accept quorums of each step of a
//!   membership change (§2.3); `coordinator.rs` — driving a change from the node where it was
//!   submitted (installs acknowledged by every proposer, the rescan), and every node's side
//!   of it (adopting, acknowledging, refusing older versions, listing keys).
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
pub mod coordinator;
pub mod digest;
pub mod gc;
pub mod messages;
pub mod proposer;
pub mod reconf;
pub mod repair;

#[cfg(test)]
mod reconf_tests;
#[cfg(test)]
mod tests;

use crate::acceptor::{Acceptor, AcceptorOutput};
use crate::digest::RegisterDigest;
use crate::messages::{Message, Record};
use crate::proposer::{Dest, Effects, Proposer};
use crate::reconf::{CasConfig, Quorums};
use std::collections::VecDeque;
use synod_core::membership::Configuration;
use synod_core::{
    Capabilities, ClientReply, ClientRequest, Engine, EngineConfig, EngineError, EngineStatus,
    NodeId, OutputBuffer, PlantedBug, Ready,
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
    /// The membership configuration this node holds durably (`reconf.rs`); `None` while a
    /// joining node waits for a coordinator to install one.
    cas_config: Option<CasConfig>,
    /// The membership change this node coordinates, if any (`coordinator.rs`).
    coordination: Option<coordinator::Coordination>,
    /// When this node last adopted a configuration: a change that adds this node and has
    /// not moved for a request timeout is resumed by this node (`coordinator.rs`).
    adopted_tick: u64,
    /// Replies to the rescan's own reads, for the coordination to consume.
    rescan_replies: Vec<ClientReply>,
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

    /// The configuration held (tests, diagnostics).
    pub fn cas_config(&self) -> Option<&CasConfig> {
        self.cas_config.as_ref()
    }

    /// Routes what the proposer produced: records first (they are ordered before every
    /// message of the batch anyway), messages to peers or to the loopback, replies (the
    /// rescan's own go to the coordination).
    fn route(&mut self, fx: Effects) {
        for r in fx.records {
            self.push_record(r);
        }
        for (dest, msg) in fx.sends {
            let q = self.proposer.quorums();
            let to: Vec<NodeId> = match dest {
                Dest::Prepare => q.prepare.clone(),
                Dest::Accept => q.accept.clone(),
                Dest::Everyone => q.everyone(),
                Dest::Node(to) => vec![to],
            };
            for to in to {
                self.send(to, msg.clone());
            }
        }
        for reply in fx.replies {
            if reply.id.client == coordinator::RESCAN_CLIENT {
                self.rescan_replies.push(reply);
            } else {
                self.out.replies.push(reply);
            }
        }
    }

    /// This node holds a configuration that no longer includes it.
    fn is_removed(&self) -> bool {
        self.cas_config
            .as_ref()
            .is_some_and(|c| !c.members().contains(&self.config.id))
    }

    /// The configuration version this node holds (0 while joining: below every real one).
    fn version(&self) -> u64 {
        self.cas_config.as_ref().map_or(0, |c| c.version)
    }

    /// The acceptor's configuration check of a Prepare/Accept/Drop sent under `version`
    /// (`reconf.rs`): true when it may be answered. An older version is refused with our
    /// configuration (so its proposer resyncs); a newer one makes us ask for it, and is
    /// answered meanwhile only if it is the next version (adjacent versions may be in use
    /// together; anything further means we missed a step and our view is not to be trusted).
    fn admits(&mut self, from: NodeId, version: u64) -> bool {
        let Some(own) = &self.cas_config else {
            self.send(from, Message::ConfigPull { version: 0 });
            return false;
        };
        if self.is_removed() {
            return false;
        }
        let held = own.version;
        if version < held {
            let config = own.clone();
            self.send(from, Message::NewerConfig { config });
            return false;
        }
        if version > held {
            self.send(from, Message::ConfigPull { version: held });
        }
        version <= held + 1
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
            Message::Install { .. }
            | Message::InstallAck { .. }
            | Message::NewerConfig { .. }
            | Message::ConfigPull { .. }
            | Message::KeysQuery { .. }
            | Message::KeysPage { .. } => return self.handle_membership(from, message),
            Message::RepairQuery { nonce, after } => {
                return self.handle_repair_query(from, nonce, after);
            }
            Message::RepairPage {
                nonce,
                after,
                floor,
                registers,
                next,
                config,
            } => {
                // The newest configuration first: it says whose answers count.
                self.adopt(config);
                return self.handle_repair_page(from, nonce, after, floor, registers, next);
            }
            // Repairing: the acceptor is not whole, so it answers nothing, and the proposer
            // runs no rounds.
            _ if self.repair.is_some() => return,
            m => m,
        };
        let acceptor_out = match message {
            Message::Prepare { version, .. }
            | Message::Accept { version, .. }
            | Message::Drop { version, .. }
                if !self.admits(from, version) =>
            {
                None
            }
            Message::Prepare { key, ballot, .. } => {
                self.proposer.observe(ballot);
                Some(self.acceptor.on_prepare(key, ballot))
            }
            Message::Accept {
                key,
                ballot,
                value,
                next,
                ..
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
            Message::Drop { key, ballot, .. } => {
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
            _ => None,
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
            watch: false,
            leases: false,
        }
    }

    fn recover(config: EngineConfig, records: Vec<Record>) -> Result<Self, String> {
        if !config.join && !config.members.contains(&config.id) {
            return Err(format!(
                "node {} is not among members {:?}",
                config.id, config.members
            ));
        }
        let mut acceptor = Acceptor::new(config.bug(PlantedBug::PromiseWithoutHighestAccepted));
        let mut counter_max = 0u64;
        // Nothing on disk: a new node (which says so durably at once, so that a restart before
        // its first record is not mistaken for a lost disk), a node joining a running cluster
        // (empty on purpose), or a lost disk (`repair.rs`).
        let mut amnesic = records.is_empty() && !config.first_boot && !config.join;
        let mut held: Option<CasConfig> = None;
        let mut joining = records.is_empty() && config.join;
        for r in &records {
            match r {
                Record::BallotLease { counter_max: c } => counter_max = counter_max.max(*c),
                Record::Checkpoint {
                    counter_max: c,
                    config: cfg,
                    ..
                } => {
                    counter_max = counter_max.max(*c);
                    held = cfg.clone().or(held);
                }
                Record::Amnesic(a) => amnesic = *a,
                Record::Config(c) => held = Some(c.clone()),
                Record::Joining => joining = true,
                Record::Register(_) | Record::Dropped { .. } => {}
            }
            acceptor.restore(r)?;
        }
        let mut out = OutputBuffer::default();
        if records.is_empty() {
            out.records.push(Record::Amnesic(amnesic));
        }
        // A node that never held a configuration starts from the bootstrap one — unless it was
        // started to join, which must learn the real one from a coordinator.
        if held.is_none() && !joining {
            let bootstrap = CasConfig::bootstrap(bootstrap_configuration(&config));
            out.records.push(Record::Config(bootstrap.clone()));
            held = Some(bootstrap);
        }
        if records.is_empty() && joining {
            out.records.push(Record::Joining);
        }
        let (quorums, version) = held.as_ref().map_or((Quorums::stable(Vec::new()), 0), |c| {
            (c.quorums(), c.version)
        });
        let mut proposer = Proposer::new(&config, counter_max, quorums, version);
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
        let digest = match acceptor.checkpoint(0, None) {
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
            cas_config: held,
            coordination: None,
            adopted_tick: 0,
            rescan_replies: Vec::new(),
        };
        node.repair_tick();
        Ok(node)
    }

    fn submit(&mut self, request: ClientRequest) {
        if let synod_core::kv::Op::Membership(change) = &request.op {
            let change = change.clone();
            self.submit_membership(request.id, change);
            self.after_input();
            return;
        }
        let refusal = if self.is_removed() {
            Some(EngineError::Membership(
                coordinator::ERR_MEMBER_REMOVED.into(),
            ))
        } else if self.repair.is_some() || self.cas_config.is_none() {
            // Repairing or still joining. Definitely not applied: the client retries at
            // another node.
            Some(EngineError::Busy)
        } else {
            None
        };
        if let Some(e) = refusal {
            self.out.replies.push(ClientReply {
                id: request.id,
                result: Err(e),
            });
            return;
        }
        let mut fx = Effects::default();
        self.proposer.submit(request, self.now_tick, &mut fx);
        self.route(fx);
        self.after_input();
    }

    fn receive(&mut self, from: NodeId, message: Message) {
        // A node never sends itself anything over the network.
        if from == self.config.id || message.ballot_counter_max() > messages::BALLOT_COUNTER_MAX {
            return;
        }
        // Repairing, the configuration held may be long gone (lost with the disk, so the
        // bootstrap one): whoever talks to us is asked for its registers, and its pages (which
        // carry its configuration) are taken even from outside the one held (`repair.rs`).
        if self.repair.is_some() {
            self.repair_hear_from(from);
        }
        let repair_page = self.repair.is_some() && matches!(message, Message::RepairPage { .. });
        // The transport authenticates members of the configuration we hold; a joining node
        // holds none yet and hears from whoever its node layer connected it to. A non-member
        // running an older configuration (a removed node that missed its removal) is told.
        if let Some(own) = &self.cas_config
            && !own.members().contains(&from)
            && !repair_page
        {
            let stale = match &message {
                Message::Prepare { version, .. }
                | Message::Accept { version, .. }
                | Message::Drop { version, .. } => *version < own.version,
                Message::ConfigPull { .. } => true,
                _ => false,
            };
            if stale {
                let config = own.clone();
                self.send(from, Message::NewerConfig { config });
            }
            if !matches!(message, Message::NewerConfig { .. }) {
                return;
            }
        }
        self.handle(from, message);
        self.after_input();
    }

    fn tick(&mut self) {
        self.now_tick += 1;
        if self.repair.is_some() {
            self.repair_tick();
            return;
        }
        if self.cas_config.is_some() && !self.is_removed() {
            let mut fx = Effects::default();
            self.proposer.tick(self.now_tick, &mut fx);
            self.route(fx);
        }
        self.join_tick();
        self.coordination_tick();
        self.after_input();
    }

    fn ready(&mut self) -> Ready<Message, Record> {
        let every = self.config.snapshot_entries;
        // Never while repairing (a checkpoint would subsume the `Amnesic(true)` record) nor
        // while joining (it would subsume the `Joining` one).
        let quiet = self.repair.is_none() && self.cas_config.is_some();
        if every > 0 && self.records_since_checkpoint >= every && quiet {
            // After every record of this batch, so it subsumes them.
            let cp = self
                .acceptor
                .checkpoint(self.proposer.leased_counter_max(), self.cas_config.clone());
            self.out.records.push(cp);
            self.records_since_checkpoint = 0;
        }
        self.out.take()
    }

    fn status(&self) -> EngineStatus {
        let role = if self.repair.is_some() {
            "repairing"
        } else if self.cas_config.is_none() {
            "joining"
        } else if self.is_removed() {
            "removed"
        } else {
            "proposer"
        };
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
            bytes_in_use: None,
            leases: 0,
            role: role.to_string(),
            // A joining node reports the peers it was told to ask, so the node layer keeps
            // them connected until a coordinator installs the real configuration.
            configuration: self.cas_config.as_ref().map_or_else(
                || Configuration::of_ids(&self.config.members),
                CasConfig::reported,
            ),
            ..Default::default()
        }
    }
}

/// The configuration a new cluster starts with: the operator's member details when given,
/// bare ids otherwise (the simulator).
fn bootstrap_configuration(config: &EngineConfig) -> Configuration {
    if config.initial_members.is_empty() {
        Configuration::of_ids(&config.members)
    } else {
        Configuration::bootstrap(config.initial_members.clone())
    }
}
