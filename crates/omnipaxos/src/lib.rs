//! The OmniPaxos replication engine (Ng, Haridi, Carbone, "OmniPaxos: Breaking the Barriers
//! of Partial Connectivity", EuroSys'23) as a sans-IO, deterministic [`Engine`].
//!
//! * [`ballot`] — ballots (n, priority, pid).
//! * `ble` — Ballot Leader Election with the quorum-connected flag (§5).
//! * `sequence_paxos` — Prepare/Promise with log synchronisation, AcceptSync,
//!   AcceptDecide/Accepted, decided index, PrepareReq resync (§4).
//! * `pending` — client requests: forwarding to the leader with re-forwarding, the bounded
//!   pending table, timeouts, applying decided entries and replying.
//! * `reads` — linearizable reads by a read index confirmed with a quorum round.
//! * `snapshot` — log compaction (checkpoints) and chunked, resumable snapshot transfer.
//! * [`storage`] — the durable state and its [`Record`]s.
//!
//! Nothing here reads a clock, does I/O, spawns a thread or draws randomness; time is ticks.
//! The protocol needs no randomness, so `config.seed` is unused.

pub mod ballot;
mod ble;
pub mod messages;
mod pending;
mod reads;
mod sequence_paxos;
mod snapshot;
pub mod storage;
#[cfg(test)]
mod tests;

pub use ballot::Ballot;
pub use messages::{BleMessage, ClientMessage, Entry, Message, Origin, PaxosMessage};
pub use storage::Record;

use ble::Ble;
use pending::PendingTable;
use reads::ReadIndexState;
use sequence_paxos::Role;
use snapshot::SnapshotTransfers;
use std::collections::BTreeMap;
use synod_core::kv::KvStore;
use synod_core::{
    Capabilities, ClientRequest, Engine, EngineConfig, EngineStatus, NodeId, OutputBuffer, Ready,
};

/// One OmniPaxos server.
#[derive(Debug)]
pub struct OmniPaxos {
    config: EngineConfig,
    now_ticks: u64,
    ble: Ble,
    /// Promised ballot, accepted round, log, decided index: what survives a crash.
    store: storage::DurableState,
    /// The decided index last written as a record (the record is written lazily, once per
    /// `ready`, since a decided index can always be relearned from the leader).
    decided_persisted: u64,
    /// A heartbeat passed: write the decided index even if nothing else is being written.
    decided_flush_due: bool,
    kv: KvStore,
    role: Role,
    pending: PendingTable,
    /// Leader side of the read-index protocol.
    reads: ReadIndexState,
    /// Writes to forward, per destination, sent in `ready` (batched).
    forward_buf: BTreeMap<NodeId, Vec<Entry>>,
    /// Read-index requests to send, per destination, sent in `ready` (batched).
    read_req_buf: BTreeMap<NodeId, Vec<u64>>,
    out: OutputBuffer<Message, Record>,
    /// The leader hint at the end of the last input: a change triggers immediate re-forwarding.
    last_leader_hint: Option<NodeId>,
    /// Rate limit for PrepareReq (at most one per `heartbeat_ticks`).
    last_prepare_req_tick: Option<u64>,
    /// Snapshot transfers in both directions (volatile).
    snapshots: SnapshotTransfers,
}

impl Engine for OmniPaxos {
    type Message = Message;
    type Record = Record;
    const NAME: &'static str = "omnipaxos";

    fn capabilities() -> Capabilities {
        Capabilities {
            ranges: true,
            transactions: true,
            revisions: true,
        }
    }

    fn recover(config: EngineConfig, records: Vec<Record>) -> Result<Self, String> {
        if config.heartbeat_ticks == 0 || config.election_timeout_ticks == 0 {
            return Err("heartbeat_ticks and election_timeout_ticks must be > 0".into());
        }
        if config.batch_entries_max == 0 {
            return Err("batch_entries_max must be > 0".into());
        }
        let (mut store, checkpoint_kv) = storage::DurableState::replay(&records)?;
        let mut kv = checkpoint_kv.unwrap_or_else(|| KvStore::new(config.kv));
        if kv.applied_index() != store.compacted_idx {
            return Err(format!(
                "checkpoint store at {} but log compacted at {}",
                kv.applied_index(),
                store.compacted_idx
            ));
        }
        for idx in store.compacted_idx..store.decided_idx {
            let e = store.entry(idx);
            // Replies are dropped: nobody waits for them after a restart.
            let _ = kv.apply(idx + 1, e.id, e.first_unacked, &e.op);
        }
        let mut out = OutputBuffer::default();
        store.incarnation += 1;
        out.records.push(Record::Incarnation(store.incarnation));
        // BLE starts from scratch (its state is volatile); it adopts `store.promised` as the
        // known leader before its first election, and `on_ble_leader` makes a server that
        // finds its own recovered promise elected take a higher ballot (see ble.rs).
        let mut ble = Ble::new(&config);
        ble.start_round(&mut out.messages);
        let decided_persisted = store.decided_idx;
        let pending = PendingTable::new(store.incarnation);
        Ok(OmniPaxos {
            config,
            now_ticks: 0,
            ble,
            store,
            decided_persisted,
            decided_flush_due: false,
            kv,
            role: Role::Follower,
            pending,
            reads: ReadIndexState::default(),
            forward_buf: BTreeMap::new(),
            read_req_buf: BTreeMap::new(),
            out,
            last_leader_hint: None,
            last_prepare_req_tick: None,
            snapshots: SnapshotTransfers::default(),
        })
    }

    fn submit(&mut self, request: ClientRequest) {
        self.submit_request(request);
        self.after_input();
    }

    fn receive(&mut self, from: NodeId, message: Message) {
        if from == self.config.id || !self.config.members.contains(&from) {
            return;
        }
        match message {
            Message::Ble(m) => self.ble.handle(from, m, &mut self.out.messages),
            Message::Paxos(m) => self.handle_paxos(from, m),
            Message::Client(m) => self.handle_client(from, m),
        }
        self.after_input();
    }

    fn tick(&mut self) {
        self.now_ticks += 1;
        if let Some(leader) = self.ble.tick(self.store.promised, &mut self.out.messages) {
            self.on_ble_leader(leader);
        }
        if self.now_ticks.is_multiple_of(self.config.heartbeat_ticks) {
            self.decided_flush_due = true;
            self.leader_heartbeat();
            self.snapshot_heartbeat();
            self.reforward(false);
        }
        self.expire_requests();
        self.after_input();
    }

    fn ready(&mut self) -> Ready<Message, Record> {
        self.leader_flush();
        self.start_read_round();
        self.flush_forwards();
        self.apply_decided();
        self.serve_ready_reads();
        // The decided index is a recovery hint, not a promise: a decision is safe once a
        // majority durably accepted, and a restarted node re-learns it from the leader. So it
        // rides along with records that are being synced anyway, or goes out once per
        // heartbeat — never costing an fsync of its own on the path to a client's reply.
        if self.store.decided_idx > self.decided_persisted
            && (!self.out.records.is_empty() || self.decided_flush_due)
        {
            self.decided_flush_due = false;
            self.decided_persisted = self.store.decided_idx;
            self.out
                .records
                .push(Record::Decided(self.store.decided_idx));
        }
        self.maybe_checkpoint();
        self.out.take()
    }

    fn status(&self) -> EngineStatus {
        EngineStatus {
            leader: self.leader_hint(),
            term: self.store.promised.n,
            decided_index: self.store.decided_idx,
            applied_index: self.kv.applied_index(),
            revision: self.kv.revision(),
            applied_digest: Some(self.kv.digest()),
            pending_requests: self.pending.len(),
            keys: self.kv.len() as u64,
            role: self.role.name().to_string(),
        }
    }
}

impl OmniPaxos {
    /// The quorum-connected flag of BLE's last round (for the simulator's reports).
    pub fn quorum_connected(&self) -> bool {
        self.ble.quorum_connected()
    }

    /// The leader this server would send client traffic to: itself while leading, else the
    /// owner of the highest ballot it knows (its promise, or the BLE leader if higher).
    pub fn leader_hint(&self) -> Option<NodeId> {
        if self.role.is_leader() {
            return Some(self.config.id);
        }
        let b = self.store.promised.max(self.ble.leader);
        (!b.is_bottom() && b.pid != self.config.id).then_some(b.pid)
    }

    /// Runs after every input: on a leader change, re-forward everything at once.
    fn after_input(&mut self) {
        let hint = self.leader_hint();
        if hint != self.last_leader_hint {
            self.last_leader_hint = hint;
            self.reforward(true);
        }
    }
}
