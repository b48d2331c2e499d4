//! The replica layer: everything a log-based engine needs that is not the ordering protocol,
//! written once. [`Replica<P>`] turns any [`LogProtocol`] (OmniPaxos, Viewstamped
//! Replication) into an [`Engine`].
//!
//! * `state` — the applied state: the KV state machine and the origin window that makes
//!   applying idempotent per command origin.
//! * `pending` — client requests: the bounded pending table, forwarding to the leader with
//!   re-forwarding, timeouts, applying the decided prefix in order and answering exactly once
//!   (sessions live in the KV store's client table).
//! * `reads` — linearizable reads by a read index the protocol confirms with a quorum.
//! * `snapshot` — checkpoints (log compaction) and chunked, resumable snapshot transfer.
//! * `membership` — the replicated configuration: a change of the voter set starts a new
//!   protocol instance (an epoch) from the state at the change; learners are fed the decided
//!   log; members that are behind an epoch (or new) get a snapshot.
//! * `transfer` — leader transfer: the shared checks before the protocol's hand-off.
//! * [`records`] — the durable records and their replay.
//! * [`messages`] — the wire messages.
//! * `backup` — backup images, consistency hashes, and the first record of a restored member.
//! * `planted` — deliberately broken watch variants (test only, see [`PlantedBug`]).
//!
//! Sans-IO and deterministic like the protocols under it: no clock, no I/O, no threads, no
//! randomness. Persist-before-send stays structural: the protocol pushes records before the
//! messages depending on them into a [`ProtocolOutput`], which is moved, in order, into the
//! engine's [`Ready`] after every protocol call.

mod backup;
mod lessor;
mod membership;
pub mod messages;
mod pending;
mod planted;
mod reads;
pub mod records;
mod snapshot;
mod split;
mod state;
mod transfer;

pub use backup::{empty_checkpoint, restored_checkpoint, restored_checkpoints};
pub use messages::Message;
pub use records::{Checkpoint, Record};
pub use snapshot::{SNAPSHOT_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MAX};
pub use state::{APPLIED_ORIGINS_MAX, StateBytes, StateImage};

use pending::PendingTable;
use reads::ReadIndexState;
use snapshot::SnapshotTransfers;
use state::AppliedState;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use synod_core::kv::RevisionEvents;
use synod_core::membership::Configuration;
use synod_core::{
    Capabilities, ClientReply, ClientRequest, Command, Engine, EngineConfig, EngineError,
    EngineStatus, GroupEvents, LeaderTransferError, LogProtocol, NodeId, Origin, OutputBuffer,
    PlantedBug, ProtocolEvent, ProtocolOutput, Ready,
};

/// Incarnations after a lost disk start at or above this (bit 62), plus bits of the boot nonce:
/// far above the count a replica reaches by restarting, and distinct per boot.
pub(crate) const AMNESIC_INCARNATION_BASE: u64 = 1 << 62;

/// The engine's output buffer for protocol `P`.
type EngineOutput<P> = OutputBuffer<
    Message<<P as LogProtocol>::Message, <P as LogProtocol>::Term>,
    Record<<P as LogProtocol>::Record, <P as LogProtocol>::Checkpoint>,
>;

/// One replica: an ordering protocol `P` plus the client path and the state machine.
pub struct Replica<P: LogProtocol> {
    config: EngineConfig,
    now_ticks: u64,
    /// The ordering protocol's instance for the current epoch; `None` while this replica is
    /// not a voter of it (a learner, a new member without state yet, a removed member).
    protocol: Option<P>,
    /// The configuration a new cluster starts with (and that images written before
    /// configurations were replicated stand for).
    bootstrap: Configuration,
    /// Learner progress and cross-epoch help (volatile).
    members: membership::MemberFeeds,
    /// Scratch output of the protocol; drained into `out` after every protocol call.
    pout: ProtocolOutput<P::Message, P::Record>,
    state: AppliedState,
    pending: PendingTable,
    /// Leader side of the read-index protocol.
    reads: ReadIndexState,
    /// Origins this leader proposed and has not applied yet, so a re-forward in the same
    /// leadership is not proposed twice. Cleared whenever leadership changes.
    proposed: HashSet<Origin>,
    /// Writes to forward, per destination, sent in `ready` (batched).
    forward_buf: BTreeMap<NodeId, Vec<Command>>,
    /// Read-index requests to send, per destination, sent in `ready` (batched).
    read_req_buf: BTreeMap<NodeId, Vec<u64>>,
    out: EngineOutput<P>,
    /// The leader hint at the end of the last input: a change triggers immediate re-forwarding.
    last_leader_hint: Option<NodeId>,
    /// Snapshot transfers in both directions (volatile).
    snapshots: SnapshotTransfers<P::Term>,
    /// A checkpoint was asked for now ([`Engine::checkpoint_now`]: an operator's
    /// defragmentation, or the partitioned engine's member-wide log bound).
    checkpoint_requested: bool,
    /// A checkpoint at the next `ready` even with nothing applied since the last
    /// ([`Engine::checkpoint_full`]).
    checkpoint_forced: bool,
    /// When leases expire (volatile: clocks restart on recovery).
    lessor: lessor::Lessor,
    /// Test only (planted `WatchUndecidedEvent`): the highest revision handed to the watch
    /// layer ahead of its decision.
    watch_speculated: u64,
    /// (applied index, KV digest) of the latest applied entries ([`Engine::applied_trail`]).
    applied_trail: std::collections::VecDeque<(u64, u64)>,
    /// A replica of a lost disk: the log's length when its protocol was first seen repaired
    /// in this boot (`None` until then). Every entry decided before the loss lies below it,
    /// so a split beyond it is new to this replica: it cannot have voted in that group
    /// before the loss, and starts it with the split's state like any member (`split.rs`).
    rebuilt_through: Option<u64>,
    /// This replica's storage began as the joiner record a member of a lost disk writes for a
    /// group split off after its repair ([`Replica::joiner_records`]: a state without any
    /// configuration, under the lost disk's incarnation): it cannot have voted in the group
    /// before, and every vote since is in its storage, so it may start an instance from the
    /// snapshot it is sent although its incarnation says "lost disk". Only that record (the
    /// checkpoint's own incarnation, not the highest recorded): a member joining a group it
    /// may have hosted before the loss (a move, `synod-partition`'s `moves.rs`) writes its
    /// empty state under a fresh incarnation and keeps the lost-disk rule once its first state
    /// raises it — also when only the raised incarnation of that batch survived a torn write.
    /// False after a restart from a later checkpoint (conservative).
    joined_after_repair: bool,
}

impl<P: LogProtocol> std::fmt::Debug for Replica<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("engine", &P::NAME)
            .field("id", &self.config.id)
            .field("applied", &self.state.applied_index())
            .finish_non_exhaustive()
    }
}

impl<P: LogProtocol> Engine for Replica<P> {
    type Message = Message<P::Message, P::Term>;
    type Record = Record<P::Record, P::Checkpoint>;
    const NAME: &'static str = P::NAME;
    const NODE_SESSIONS: bool = P::NODE_SESSIONS;

    fn capabilities() -> Capabilities {
        P::CAPABILITIES
    }

    fn recover(config: EngineConfig, records: Vec<Self::Record>) -> Result<Self, String> {
        if config.heartbeat_ticks == 0 || config.election_timeout_ticks == 0 {
            return Err("heartbeat_ticks and election_timeout_ticks must be > 0".into());
        }
        if config.batch_entries_max == 0 {
            return Err("batch_entries_max must be > 0".into());
        }
        let lost_storage = records.is_empty() && !config.first_boot && !config.join;
        if lost_storage && !P::REPAIRS_LOST_STORAGE {
            return Err(format!(
                "{}: this member lost its storage and the protocol cannot rebuild it from its \
                 peers; it must not rejoin with an empty state (docs/engines.md)",
                P::NAME
            ));
        }
        let bootstrap = membership::bootstrap_configuration(&config);
        let replayed = records::replay_resuming_repair::<P>(records)?;
        let mut pout = ProtocolOutput::default();
        let (state, protocol, joining) = membership::recover_state::<P>(
            &config,
            &bootstrap,
            replayed.checkpoint,
            &replayed.protocol,
            &mut pout,
        )?;
        if let Some(p) = &protocol
            && state.applied_index() != p.compacted_idx()
        {
            return Err(format!(
                "checkpoint state at {} but log compacted at {}",
                state.applied_index(),
                p.compacted_idx()
            ));
        }
        let joined_after_repair = !lost_storage
            && protocol.is_none()
            && state.config.members.is_empty()
            && replayed.checkpoint_incarnation >= AMNESIC_INCARNATION_BASE;
        let incarnation = if lost_storage {
            // The incarnations this replica used before are forgotten with its disk; counting
            // from 1 again would reuse origins the applied state already holds, and those
            // writes would be skipped as duplicates. Start far above any count instead.
            AMNESIC_INCARNATION_BASE | (config.boot_nonce >> 2)
        } else {
            replayed.incarnation + 1
        };
        let mut out = OutputBuffer::default();
        out.records.push(Record::Incarnation(incarnation));
        let mut r = Replica {
            config,
            now_ticks: 0,
            protocol,
            bootstrap,
            members: membership::MemberFeeds::default(),
            pout,
            state,
            pending: PendingTable::new(incarnation),
            reads: ReadIndexState::default(),
            proposed: HashSet::new(),
            forward_buf: BTreeMap::new(),
            read_req_buf: BTreeMap::new(),
            out,
            last_leader_hint: None,
            snapshots: SnapshotTransfers::default(),
            checkpoint_requested: false,
            checkpoint_forced: false,
            lessor: lessor::Lessor::default(),
            watch_speculated: 0,
            applied_trail: std::collections::VecDeque::new(),
            rebuilt_through: None,
            joined_after_repair,
        };
        if joining {
            // Durably a member being added: a restart before its state arrives must not be
            // mistaken for a bootstrap member (or a lost disk).
            r.push_state_checkpoint();
        }
        r.forget_learner_additions();
        r.adopt_configured_range();
        r.restart_lease_clocks();
        // Nobody waits for replies of what was decided before the crash.
        r.apply_decided();
        r.out.replies.clear();
        r.drain_protocol();
        r.note_rebuilt();
        Ok(r)
    }

    fn submit(&mut self, request: ClientRequest) {
        self.submit_request(request);
        self.after_input();
    }

    fn receive(&mut self, from: NodeId, message: Self::Message) {
        // Whom to hear from is the transport's business (it knows the configuration); a
        // removed or lagging member must still be answered, so that it learns where it stands.
        if from == self.config.id {
            return;
        }
        match message {
            Message::Protocol { epoch, m } => self.handle_protocol(from, epoch, m),
            Message::LearnerEntries {
                epoch,
                first,
                entries,
            } => self.handle_learner_entries(from, epoch, first, entries),
            Message::LearnerApplied { applied } => self.handle_learner_applied(from, applied),
            Message::Behind { epoch, applied } => self.handle_behind(from, epoch, applied),
            Message::NonVoting { epoch } => self.handle_non_voting(from, epoch),
            Message::Forward { entries } => self.handle_forward(from, entries),
            Message::ReadIndexReq { incarnation, seqs } => {
                self.handle_read_index_req(from, incarnation, seqs)
            }
            Message::ReadIndexResp {
                incarnation,
                seqs,
                read_index,
            } => self.handle_read_index_resp(incarnation, seqs, read_index),
            Message::SnapshotChunk {
                epoch,
                term,
                snapshot_idx,
                total_bytes,
                offset,
                data,
            } => self.handle_snapshot_chunk(
                from,
                (epoch, term),
                snapshot_idx,
                total_bytes,
                offset,
                data,
            ),
            Message::SnapshotAck {
                epoch,
                term,
                snapshot_idx,
                offset,
            } => self.handle_snapshot_ack(from, (epoch, term), snapshot_idx, offset),
        }
        self.after_input();
    }

    fn tick(&mut self) {
        self.now_ticks += 1;
        if let Some(p) = self.protocol.as_mut() {
            p.tick(&self.snapshots, &mut self.pout);
        }
        self.drain_protocol();
        if self.now_ticks.is_multiple_of(self.config.heartbeat_ticks) {
            self.snapshot_heartbeat();
            self.membership_heartbeat();
            self.reforward(false);
        }
        self.expire_requests();
        self.lessor_tick();
        self.after_input();
    }

    fn ready(&mut self) -> Ready<Self::Message, Self::Record> {
        if let Some(p) = self.protocol.as_mut() {
            p.flush(&mut self.pout);
        }
        self.drain_protocol();
        self.start_read_round();
        self.flush_forwards();
        self.apply_decided();
        self.feed_learners();
        self.serve_ready_reads();
        self.maybe_checkpoint();
        self.out.take()
    }

    fn status(&self) -> EngineStatus {
        let p = self.protocol.as_ref();
        EngineStatus {
            leader: self.leader_hint(),
            // etcd's raft term is 1 from the first election on; ballots and view-numbers
            // count from 0, so the first leadership would read as term 0.
            term: p.map_or(0, |p| p.term() + 1),
            decided_index: p.map_or(self.state.applied_index(), |p| p.decided_idx()),
            applied_index: self.state.applied_index(),
            revision: self.state.kv.revision(),
            compact_revision: self.state.kv.compact_revision(),
            // Without a total order (EPaxos) replicas at the same applied index may hold
            // different states mid-run; only their contents at quiescence are comparable.
            applied_digest: P::CAPABILITIES.revisions.then(|| self.state.kv.digest()),
            state_digest: (!P::CAPABILITIES.revisions).then(|| self.state.kv.content_digest()),
            pending_requests: self.pending.len(),
            keys: self.state.kv.len() as u64,
            bytes_in_use: Some(self.state.kv.bytes_in_use()),
            leases: self.state.kv.lease_count() as u64,
            role: self.role().to_string(),
            fast_path_commits: p.map_or(0, |p| p.path_commits().0),
            slow_path_commits: p.map_or(0, |p| p.path_commits().1),
            configuration: self.state.config.clone(),
            auth: self.state.auth.clone(),
            learner_applied: self.members.learner_applied(),
            groups: Vec::new(),
            other_members: Vec::new(),
            directory: None,
            failed_groups: Vec::new(),
        }
    }

    fn transfer_leadership(&mut self, to: Option<NodeId>) -> Result<NodeId, LeaderTransferError> {
        let r = self.start_leader_transfer(to);
        self.after_input();
        r
    }

    fn take_watch_events(&mut self) -> Vec<Arc<RevisionEvents>> {
        let compaction_bug = self.config.bug(PlantedBug::CompactionDropsWatchedEvent);
        self.state.kv.plant_compaction_bug(compaction_bug);
        let fresh = self.state.kv.take_fresh_events();
        if self.config.bug(PlantedBug::WatchUndecidedEvent) {
            return self.planted_undecided_events(fresh);
        }
        fresh
    }

    fn take_group_watch_events(&mut self) -> Vec<GroupEvents> {
        let events = self.take_watch_events();
        let moves = std::mem::take(&mut self.state.watch_moves);
        if events.is_empty() && moves.is_empty() {
            return Vec::new();
        }
        vec![GroupEvents {
            group: 0,
            events,
            moves,
        }]
    }

    fn watch_history(
        &self,
        start: u64,
        max_revisions: usize,
    ) -> Result<Vec<Arc<RevisionEvents>>, EngineError> {
        let late = self.config.bug(PlantedBug::WatchResumeSkipsRevision)
            && start < self.state.kv.revision();
        let start = if late { start + 1 } else { start };
        self.state.kv.history_from(start, max_revisions)
    }

    fn checkpoint_full(&mut self) -> bool {
        self.checkpoint_forced = true;
        true
    }

    fn held_entries(&self) -> u64 {
        let applied = self.state.applied_index();
        // None while the protocol cannot checkpoint (a VR replica recovering still applies
        // what was committed): counted, they would keep the partitioned bound crossed, and
        // every batch would checkpoint the other groups without ever cutting the WAL.
        (self.protocol.as_ref())
            .filter(|p| p.can_checkpoint())
            .map_or(0, |p| applied.saturating_sub(p.compacted_idx()))
    }

    fn checkpoint_now(&mut self) -> bool {
        let applied = self.state.applied_index();
        let due = (self.protocol.as_ref())
            .is_some_and(|p| applied > p.compacted_idx() && p.can_checkpoint());
        self.checkpoint_requested |= due;
        due
    }

    fn backup_image(&self) -> Result<synod_core::backup::BackupImage, EngineError> {
        self.take_backup_image()
    }

    fn hash_kv(&self, revision: u64) -> Result<synod_core::kv::KvHash, EngineError> {
        self.state_hash_kv(revision)
    }

    fn hash_all(&self) -> Result<u32, EngineError> {
        self.state_hash_all()
    }

    fn hash_kv_part(
        &self,
        revision: u64,
        after: u64,
        range: &synod_core::kv::KeyRange,
    ) -> Result<synod_core::kv::KvHashPart, EngineError> {
        (self.state.kv).hash_kv_part(revision, after, &range.start, &range.end)
    }

    fn range_state(&self) -> Option<&synod_core::kv::RangeState> {
        Some(&self.state.range)
    }

    fn applied_trail(&self, _group: u64, after: u64, out: &mut Vec<(u64, u64)>) {
        let start = out.len();
        out.extend(
            self.applied_trail
                .iter()
                .rev()
                .take_while(|(i, _)| *i > after),
        );
        out[start..].reverse();
    }

    fn merge_image(&self) -> Option<Vec<u8>> {
        self.state.merge_image()
    }

    fn retire(&mut self) -> Vec<ClientReply> {
        self.retire_pending()
    }

    fn reads_led(&self) -> u64 {
        self.reads.confirmed
    }

    fn revisions_closed(&self) -> u64 {
        self.state.kv.revisions_closed()
    }

    fn key_sample(&self, most: usize) -> Vec<synod_core::kv::Key> {
        self.state.kv.key_sample(most)
    }

    fn read_applied(
        &self,
        op: &synod_core::kv::Op,
    ) -> Result<synod_core::kv::Response, EngineError> {
        self.state.kv.read(op)
    }

    fn take_splits(&mut self) -> Vec<(synod_core::kv::SplitMark, Self::Record)> {
        self.split_records()
    }

    fn lease_clocks(&self) -> Vec<(synod_core::kv::LeaseId, u64)> {
        Replica::lease_clocks(self)
    }

    fn inherit_lease_clocks(&mut self, clocks: &[(synod_core::kv::LeaseId, u64)]) {
        Replica::inherit_lease_clocks(self, clocks);
    }

    fn split_joiner(&self, split: Option<&synod_core::kv::SplitMark>) -> Option<Vec<Self::Record>> {
        self.joiner_records(split)
    }

    fn non_voting_voters(&self) -> Vec<NodeId> {
        Replica::non_voting_voters(self)
    }

    fn non_voting(&self) -> bool {
        self.protocol.is_none() && self.state.config.is_voter(self.config.id)
    }

    fn resume_as_newcomer(&mut self, rejoin_floor: u64) {
        if self.protocol.is_none() && self.state.config.members.is_empty() {
            self.config.join = true;
            self.config.move_newcomer = true;
            self.config.rejoin_floor = self.config.rejoin_floor.max(rejoin_floor);
        }
    }
}

impl<P: LogProtocol> Replica<P> {
    /// The ordering protocol's current instance, for protocol-specific reports (the
    /// simulator's); `None` while this replica votes in no epoch.
    pub fn protocol(&self) -> Option<&P> {
        self.protocol.as_ref()
    }

    /// The keys lease `id` holds in this replica's store, in key order; `None` without the
    /// lease (for the partitioned engine's tests: each group keeps its own copy).
    pub fn lease_keys(&self, id: synod_core::kv::LeaseId) -> Option<Vec<synod_core::kv::Key>> {
        let lease = self.state.kv.lease(id)?;
        Some(lease.keys.iter().cloned().collect())
    }

    /// This replica's current epoch (its applied configuration's).
    pub(crate) fn epoch(&self) -> u64 {
        self.state.config.epoch
    }

    /// Who leads the current epoch, as far as this replica knows.
    pub(crate) fn leader_hint(&self) -> Option<NodeId> {
        match &self.protocol {
            Some(p) => p.leader(),
            None => self.members.leader_hint(),
        }
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.protocol.as_ref().is_some_and(|p| p.is_leader())
    }

    /// Moves the protocol's outputs into the engine's, in order, and acts on its events.
    fn drain_protocol(&mut self) {
        let pout = &mut self.pout;
        let epoch = self.state.config.epoch;
        self.out.early.extend(
            pout.early
                .drain(..)
                .map(|(to, m)| (to, Message::Protocol { epoch, m })),
        );
        self.out
            .records
            .extend(pout.records.drain(..).map(Record::Protocol));
        self.out.messages.extend(
            pout.messages
                .drain(..)
                .map(|(to, m)| (to, Message::Protocol { epoch, m })),
        );
        let events = std::mem::take(&mut pout.events);
        for e in events {
            match e {
                ProtocolEvent::ReadConfirmed { round } => self.on_read_confirmed(round),
                ProtocolEvent::SendSnapshot { to } => self.start_snapshot_send(to, true),
            }
        }
    }

    /// Runs after every input: a leadership change voids read rounds and this leader's
    /// proposal set, and a new leader hint re-forwards everything at once.
    fn after_input(&mut self) {
        self.note_rebuilt();
        let term = self.protocol.as_ref().map_or(0, |p| p.term());
        let epoch = (self.epoch(), term, self.is_leader());
        if self.reads.on_epoch(epoch) || !epoch.2 {
            self.proposed.clear();
        }
        let hint = self.leader_hint();
        if hint != self.last_leader_hint {
            self.last_leader_hint = hint;
            self.proposed.clear();
            self.reforward(true);
        }
    }
}
