//! The OmniPaxos ordering protocol (Ng, Haridi, Carbone, "OmniPaxos: Breaking the Barriers of
//! Partial Connectivity", EuroSys'23) as a sans-IO, deterministic [`LogProtocol`]. The replica
//! layer (`synod-replica`) makes it an engine; nothing here knows what a key is.
//!
//! * [`ballot`] — ballots (n, priority, pid).
//! * `ble` — Ballot Leader Election with the quorum-connected flag (§5).
//! * `sequence_paxos` — Prepare/Promise with log synchronisation, AcceptSync,
//!   AcceptDecide/Accepted, decided index, PrepareReq resync (§4).
//! * `reads` — the leadership confirmation behind the replica layer's read index.
//! * `snapshot` — when a peer needs a snapshot, and what installing one means for the log.
//! * `repair` — rejoining after lost or damaged storage without voting with lost state.
//! * `transfer` — leader transfer by a ballot hand-off (etcd's MoveLeader).
//! * [`storage`] — the durable state and its [`Record`]s.
//!
//! Nothing here reads a clock, does I/O, spawns a thread or draws randomness; time is ticks.
//! The protocol needs no randomness, so `config.seed` is unused.

pub mod ballot;
mod ble;
pub mod messages;
mod reads;
mod repair;
mod sequence_paxos;
mod snapshot;
pub mod storage;
#[cfg(test)]
mod tests;
mod transfer;

pub use ballot::Ballot;
pub use messages::{BleMessage, Message, PaxosMessage};
pub use storage::{Checkpoint, Record};

use ble::Ble;
use reads::ReadConfirmRound;
use sequence_paxos::Role;
use synod_core::{
    Command, EngineConfig, LeaderTransferError, LogProtocol, NodeId, ProtocolOutput,
    SnapshotAcceptance, TransferStatus,
};

type Out = ProtocolOutput<Message, Record>;

/// One OmniPaxos server.
#[derive(Debug)]
pub struct OmniPaxos {
    config: EngineConfig,
    now_ticks: u64,
    ble: Ble,
    /// Promised ballot, accepted round, log, decided index: what survives a crash.
    store: storage::DurableState,
    /// The decided index last written as a record (the record is written lazily, once per
    /// `flush`, since a decided index can always be relearned from the leader).
    decided_persisted: u64,
    /// A heartbeat passed: write the decided index even if nothing else is being written.
    decided_flush_due: bool,
    role: Role,
    /// Leader side of the read-index confirmation (one round at a time).
    read_round: Option<ReadConfirmRound>,
    /// Outputs of the call in progress; moved to the caller's at the end of each call.
    out: Out,
    /// Rate limit for PrepareReq (at most one per `heartbeat_ticks`).
    last_prepare_req_tick: Option<u64>,
    /// Repairing after lost storage (see `repair.rs`); `None` once ordinary.
    repair: Option<repair::RepairState>,
}

impl LogProtocol for OmniPaxos {
    type Message = Message;
    type Record = Record;
    type Checkpoint = Checkpoint;
    type Term = Ballot;
    const NAME: &'static str = "omnipaxos";

    fn recover(
        config: &EngineConfig,
        checkpoint: Option<&Checkpoint>,
        records: &[Record],
        out: &mut Out,
    ) -> Result<Self, String> {
        let mut store = storage::DurableState::replay(checkpoint, records)?;
        let mut own = Out::default();
        if checkpoint.is_none() && records.is_empty() {
            // Nothing on disk: a new member (which says so durably at once, so that a restart
            // before its first promise is not mistaken for a lost disk), or a lost disk.
            store.set_amnesic(!config.first_boot, &mut own.records);
        }
        // BLE starts from scratch (its state is volatile); it adopts `store.promised` as the
        // known leader before its first election, and `on_ble_leader` makes a server that
        // finds its own recovered promise elected take a higher ballot (see ble.rs).
        let mut ble = Ble::new(config);
        ble.start_round(&mut own.messages);
        let decided_persisted = store.decided_idx;
        let mut op = OmniPaxos {
            config: config.clone(),
            now_ticks: 0,
            ble,
            store,
            decided_persisted,
            decided_flush_due: false,
            role: Role::Follower,
            read_round: None,
            out: own,
            last_prepare_req_tick: None,
            repair: None,
        };
        if op.store.amnesic {
            op.start_repair();
        }
        op.emit(out);
        Ok(op)
    }

    fn receive(
        &mut self,
        from: NodeId,
        message: Message,
        transfers: &dyn TransferStatus<Ballot>,
        out: &mut Out,
    ) {
        if from == self.config.id || !self.config.members.contains(&from) {
            return;
        }
        if message.ballot_n_max() > messages::BALLOT_N_MAX {
            return;
        }
        match message {
            Message::Ble(m) => self.ble.handle(from, m, &mut self.out.messages),
            Message::Paxos(m) => self.handle_paxos(from, m, transfers),
        }
        self.emit(out);
    }

    fn tick(&mut self, transfers: &dyn TransferStatus<Ballot>, out: &mut Out) {
        self.now_ticks += 1;
        if let Some(leader) = self.ble.tick(self.store.promised, &mut self.out.messages) {
            self.on_ble_leader(leader);
        }
        if self.now_ticks.is_multiple_of(self.config.heartbeat_ticks) {
            self.decided_flush_due = true;
            self.leader_heartbeat(transfers);
            self.send_repair_query();
        }
        self.emit(out);
    }

    fn flush(&mut self, out: &mut Out) {
        self.leader_flush();
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
        self.emit(out);
    }

    fn propose(&mut self, command: Command) -> bool {
        self.propose_entry(command)
    }

    fn leader(&self) -> Option<NodeId> {
        self.leader_hint()
    }

    fn is_leader(&self) -> bool {
        self.role.is_leader()
    }

    fn start_read_round(&mut self, round: u64, out: &mut Out) -> Option<u64> {
        let idx = self.start_read_confirm(round);
        self.emit(out);
        idx
    }

    fn log_len(&self) -> u64 {
        self.store.log_len()
    }

    fn decided_idx(&self) -> u64 {
        self.store.decided_idx
    }

    fn compacted_idx(&self) -> u64 {
        self.store.compacted_idx()
    }

    fn entry(&self, idx: u64) -> &Command {
        self.store.entry(idx)
    }

    fn epoch_checkpoint(base_idx: u64) -> Option<Checkpoint> {
        // A new configuration's Sequence Paxos instance (§6): no promise, no accepted round,
        // its log starting after the StopSign.
        Some(Checkpoint {
            promised: Ballot::default(),
            accepted_round: Ballot::default(),
            compacted_idx: base_idx,
            decided_idx: base_idx,
            suffix: Vec::new(),
        })
    }

    fn compact(&mut self, idx: u64) -> Checkpoint {
        let c = self.store.compact(idx);
        // The checkpoint carries the decided index too.
        self.decided_persisted = self.decided_persisted.max(self.store.decided_idx);
        c
    }

    fn snapshot_term(&self) -> Ballot {
        self.store.promised
    }

    fn accept_snapshot(&self, from: NodeId, n: Ballot) -> SnapshotAcceptance {
        self.snapshot_acceptance(from, n)
    }

    fn install_snapshot(&mut self, n: Ballot, idx: u64) -> Checkpoint {
        self.install_snapshot_log(n, idx)
    }

    fn snapshot_installed(&mut self, out: &mut Out) {
        self.on_snapshot_installed();
        self.emit(out);
    }

    fn snapshot_delivered(&mut self, to: NodeId, n: Ballot, idx: u64, out: &mut Out) {
        self.on_snapshot_delivered(to, n, idx);
        self.emit(out);
    }

    fn transfer_leadership(
        &mut self,
        to: NodeId,
        out: &mut Out,
    ) -> Result<(), LeaderTransferError> {
        if self.store.amnesic {
            return Err(LeaderTransferError::NotReady(
                "this member is repairing lost storage".into(),
            ));
        }
        let r = self.start_transfer(to);
        self.emit(out);
        r
    }

    fn transfer_target(&self) -> Option<NodeId> {
        OmniPaxos::transfer_target(self)
    }

    fn transfer_candidate(&self) -> Option<NodeId> {
        self.most_up_to_date_follower()
    }

    fn term(&self) -> u64 {
        self.store.promised.n
    }

    fn role(&self) -> &'static str {
        if self.store.amnesic {
            return "repairing";
        }
        self.role.name()
    }

    fn can_checkpoint(&self) -> bool {
        // A checkpoint subsumes the amnesic mark; it must not outlive the repair.
        !self.store.amnesic
    }

    fn repairing(&self) -> bool {
        self.store.amnesic
    }

    fn repairing_record() -> Option<Record> {
        Some(Record::Amnesic(true))
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

    /// Moves this call's outputs to the caller's, in order.
    fn emit(&mut self, out: &mut Out) {
        out.append(&mut self.out);
    }
}
