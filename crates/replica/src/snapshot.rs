//! Checkpoints and chunked, resumable snapshot transfer, for any log protocol.
//!
//! **Checkpoints.** When `snapshot_entries > 0` and at least that many entries were applied
//! since the protocol's compacted index, `ready` asks the protocol to drop its log prefix up to
//! the applied index ([`LogProtocol::compact`]) and writes a checkpoint record holding the
//! protocol's state and the applied state (see `records.rs`).
//!
//! **Snapshot transfer.** A replica whose needed entries a peer compacted catches up from the
//! peer's applied state instead. The protocol decides when ([`ProtocolEvent::SendSnapshot`]);
//! this module moves the bytes:
//! * the sender serialises its applied state once per applied index and shares the bytes among
//!   all its transfers ([`SNAPSHOT_CHUNK_BYTES_MAX`] per chunk, at most
//!   [`SNAPSHOT_CHUNKS_IN_FLIGHT_MAX`] chunks beyond the acknowledged offset, at most one
//!   transfer per destination);
//! * the receiver keeps one partial snapshot at a time and acknowledges the contiguous prefix
//!   it holds; after loss (or its own restart, which acknowledges 0) the sender resends from
//!   the acknowledged offset at the next heartbeat, and gives up after
//!   [`SNAPSHOT_STALL_HEARTBEATS_MAX`] heartbeats without progress;
//! * a complete snapshot is installed (the protocol replaces its log by the decided prefix, a
//!   checkpoint record makes it durable) and acknowledged with `offset == total_bytes`, and the
//!   sender's protocol learns it ([`LogProtocol::snapshot_delivered`]).
//!
//! Everything is keyed by the configuration epoch and the protocol's term (OmniPaxos's
//! promised ballot, VR's view-number): within an epoch a transfer from another term is
//! dropped, so a deposed leader cannot install anything. Transfers the membership layer starts
//! (to a learner, to a member being added, to a member still in an older epoch) are taken by a
//! receiver that holds no instance of the sender's epoch, whatever the term (see
//! `membership.rs`).
//!
//! [`ProtocolEvent::SendSnapshot`]: synod_core::ProtocolEvent::SendSnapshot

use crate::Replica;
use crate::messages::Message;
use crate::records::{Checkpoint, Record};
use crate::state::{AppliedState, StateBytes, StateImage};
use std::collections::BTreeMap;
use std::sync::Arc;
use synod_core::{LogProtocol, NodeId, PlantedBug, SnapshotAcceptance, TransferStatus};

/// Largest chunk of snapshot bytes in one message.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Chunks a sender may have sent beyond the receiver's acknowledged offset.
pub const SNAPSHOT_CHUNKS_IN_FLIGHT_MAX: u64 = 4;
/// Largest snapshot a receiver accepts (its buffer is at most this).
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;
/// Heartbeats without acknowledged progress after which a sender abandons a transfer (the
/// receiver is down or busy with another snapshot; the protocol asks again).
pub const SNAPSHOT_STALL_HEARTBEATS_MAX: u32 = 10;

#[derive(Debug)]
struct Outgoing<T> {
    epoch: u64,
    term: T,
    /// The protocol asked for it (and hears when it was delivered); else membership did.
    for_protocol: bool,
    snapshot_idx: u64,
    data: Arc<Vec<u8>>,
    /// The receiver holds `data[..acked]`.
    acked: u64,
    /// Chunks were sent up to here.
    sent: u64,
    /// `acked` at the last heartbeat, to notice a stalled transfer.
    acked_at_heartbeat: u64,
    stalled_heartbeats: u32,
}

/// What came of a complete snapshot.
enum Installed {
    /// Installed, or not needed (this replica holds that much already).
    Yes,
    /// The bytes do not decode to a state at the snapshot's index.
    Undecodable,
    /// Decoded but refused: a state from before this replica's member left the group.
    Refused,
}

#[derive(Debug)]
struct Incoming<T> {
    from: NodeId,
    epoch: u64,
    term: T,
    snapshot_idx: u64,
    total_bytes: u64,
    bytes: Vec<u8>,
}

/// Volatile snapshot-transfer state of one replica.
#[derive(Debug)]
pub struct SnapshotTransfers<T> {
    outgoing: BTreeMap<NodeId, Outgoing<T>>,
    /// The last serialisation of this replica's applied state: (applied index, bytes).
    cache: Option<(u64, Arc<Vec<u8>>)>,
    incoming: Option<Incoming<T>>,
}

impl<T> Default for SnapshotTransfers<T> {
    fn default() -> Self {
        SnapshotTransfers {
            outgoing: BTreeMap::new(),
            cache: None,
            incoming: None,
        }
    }
}

impl<T> SnapshotTransfers<T> {
    /// The serialised state at applied index `idx`, if a checkpoint or transfer made it.
    pub(crate) fn cached(&self, idx: u64) -> Option<Arc<Vec<u8>>> {
        match &self.cache {
            Some((i, d)) if *i == idx => Some(Arc::clone(d)),
            _ => None,
        }
    }
}

impl<T: Copy + Eq> TransferStatus<T> for SnapshotTransfers<T> {
    fn sending_to(&self, to: NodeId, term: T) -> bool {
        self.outgoing.get(&to).is_some_and(|o| o.term == term)
    }

    fn receiving_from(&self, from: NodeId, term: T) -> bool {
        self.incoming
            .as_ref()
            .is_some_and(|i| i.from == from && i.term == term)
    }
}

impl<P: LogProtocol> Replica<P> {
    /// Called by `ready` after applying: compact and checkpoint every `snapshot_entries`.
    pub(crate) fn maybe_checkpoint(&mut self) {
        let every = self.config.snapshot_entries;
        let applied = self.state.applied_index();
        let forced = std::mem::take(&mut self.checkpoint_forced);
        let Some(p) = self.protocol.as_mut() else {
            if forced {
                self.push_state_checkpoint();
            }
            return;
        };
        let requested = std::mem::take(&mut self.checkpoint_requested);
        let due = every > 0 && applied >= p.compacted_idx() + every;
        // A forced checkpoint needs the applied state at the compacted index at least (it is
        // not while a snapshot is being installed) and a protocol state a checkpoint may hold
        // (not while repairing or recovering); without one the caller sees none.
        let forced = forced && applied >= p.compacted_idx() && p.can_checkpoint();
        // A requested one likewise needs a protocol state a checkpoint may hold: the
        // partitioned engine asks on its own (its member-wide bound), not only an operator.
        let requested = requested && applied > p.compacted_idx() && p.can_checkpoint();
        if !(due || forced || requested) {
            return;
        }
        // Serialising our own in-memory state cannot fail with postcard; if it ever did, the
        // log is simply not compacted this time.
        let Ok(state) = self.state.encode() else {
            return;
        };
        let protocol = p.compact(applied);
        self.push_checkpoint(protocol, state);
    }

    pub(crate) fn push_checkpoint(&mut self, protocol: P::Checkpoint, state: StateBytes) {
        assert_eq!(
            self.protocol.as_ref().map(|p| p.compacted_idx()),
            Some(self.state.applied_index()),
            "a checkpoint's state must sit exactly at the protocol's compacted index"
        );
        // The same bytes serve a snapshot transfer from this index.
        self.snapshots.cache = Some((self.state.applied_index(), Arc::clone(&state.0)));
        let checkpoint = Box::new(Checkpoint {
            protocol,
            incarnation: self.pending.incarnation(),
            state,
        });
        let repairing = self.protocol.as_ref().is_some_and(P::repairing);
        self.out.records.push(match repairing {
            true => Record::RepairingCheckpoint(checkpoint),
            false => Record::Checkpoint(checkpoint),
        });
    }

    /// Starts sending this replica's snapshot to `to` in the protocol's current term, unless
    /// a transfer to `to` in that term is already under way. `for_protocol`: the protocol
    /// asked for it; otherwise membership did (a learner, a new member, an older epoch).
    pub(crate) fn start_snapshot_send(&mut self, to: NodeId, for_protocol: bool) {
        let Some(term) = self.sending_term() else {
            return;
        };
        let epoch = self.epoch();
        if self
            .snapshots
            .outgoing
            .get(&to)
            .is_some_and(|o| o.term == term && o.epoch == epoch)
        {
            return;
        }
        let idx = self.state.applied_index();
        let data = match &self.snapshots.cache {
            Some((i, d)) if *i == idx => Arc::clone(d),
            _ => {
                let Ok(bytes) = self.state.encode() else {
                    // Serialising our own in-memory state cannot fail with postcard; if it
                    // ever does, the protocol asks again.
                    return;
                };
                let d = bytes.0;
                self.snapshots.cache = Some((idx, Arc::clone(&d)));
                d
            }
        };
        self.snapshots.outgoing.insert(
            to,
            Outgoing {
                epoch,
                term,
                for_protocol,
                snapshot_idx: idx,
                data,
                acked: 0,
                sent: 0,
                acked_at_heartbeat: 0,
                stalled_heartbeats: 0,
            },
        );
        self.send_snapshot_chunks(to);
    }

    /// Sends chunks to `to` up to the in-flight window beyond the acknowledged offset.
    fn send_snapshot_chunks(&mut self, to: NodeId) {
        let Some(o) = self.snapshots.outgoing.get_mut(&to) else {
            return;
        };
        let total = o.data.len() as u64;
        let window_end =
            total.min(o.acked + SNAPSHOT_CHUNKS_IN_FLIGHT_MAX * SNAPSHOT_CHUNK_BYTES_MAX as u64);
        let mut msgs = Vec::new();
        // An empty snapshot still needs one (empty) chunk to be delivered.
        while o.sent < window_end || (total == 0 && o.sent == 0 && msgs.is_empty()) {
            let end = window_end.min(o.sent + SNAPSHOT_CHUNK_BYTES_MAX as u64);
            msgs.push(Message::SnapshotChunk {
                epoch: o.epoch,
                term: o.term,
                snapshot_idx: o.snapshot_idx,
                total_bytes: total,
                offset: o.sent,
                data: o.data[o.sent as usize..end as usize].to_vec(),
            });
            o.sent = end;
            if total == 0 {
                break;
            }
        }
        for m in msgs {
            self.out.messages.push((to, m));
        }
    }

    /// Whether an incoming transfer of `(epoch, term)` may go on: within our epoch only in
    /// our term (if we hold an instance); from a newer epoch, or to a replica without an
    /// instance, whatever the term.
    fn incoming_allowed(&self, epoch: u64, term: P::Term) -> bool {
        let mine = self.epoch();
        match &self.protocol {
            _ if epoch > mine => true,
            _ if epoch < mine => false,
            Some(p) => p.snapshot_term() == term,
            None => true,
        }
    }

    /// The term this replica's transfers go out in: its instance's; without one, the default
    /// term, as long as it holds a configuration's state — a member that applied its own
    /// removal still brings the members left in the old epoch over to the new one (it may be
    /// the only one that applied the change: `membership.rs`, `handle_behind`).
    fn sending_term(&self) -> Option<P::Term> {
        match &self.protocol {
            Some(p) => Some(p.snapshot_term()),
            None if self.state.config.members.is_empty() => None,
            None if self.config.bug(PlantedBug::RemovedReplicaLeavesAtOnce) => None,
            None => Some(P::Term::default()),
        }
    }

    /// Every heartbeat: drop transfers of a term we no longer hold, resend from the
    /// acknowledged offset where nothing progressed, abandon transfers stalled too long.
    pub(crate) fn snapshot_heartbeat(&mut self) {
        let term = self.sending_term();
        let epoch = self.epoch();
        self.snapshots
            .outgoing
            .retain(|_, o| Some(o.term) == term && o.epoch == epoch);
        if let Some(i) = &self.snapshots.incoming
            && !self.incoming_allowed(i.epoch, i.term)
        {
            self.snapshots.incoming = None;
        }
        let mut resend = Vec::new();
        let mut abandon = Vec::new();
        for (to, o) in self.snapshots.outgoing.iter_mut() {
            if o.acked > o.acked_at_heartbeat {
                o.acked_at_heartbeat = o.acked;
                o.stalled_heartbeats = 0;
                continue;
            }
            o.stalled_heartbeats += 1;
            if o.stalled_heartbeats > SNAPSHOT_STALL_HEARTBEATS_MAX {
                abandon.push(*to);
            } else {
                o.sent = o.acked;
                resend.push(*to);
            }
        }
        for to in abandon {
            self.snapshots.outgoing.remove(&to);
        }
        for to in resend {
            self.send_snapshot_chunks(to);
        }
        if self.snapshots.outgoing.is_empty() {
            // No transfer needs the bytes any more: do not hold a copy of the state.
            self.snapshots.cache = None;
        }
    }

    pub(crate) fn handle_snapshot_ack(
        &mut self,
        from: NodeId,
        (epoch, term): (u64, P::Term),
        idx: u64,
        off: u64,
    ) {
        let current = self.sending_term();
        let Some(o) = self.snapshots.outgoing.get_mut(&from) else {
            return;
        };
        if o.term != term || o.epoch != epoch || o.snapshot_idx != idx || current != Some(term) {
            return;
        }
        let total = o.data.len() as u64;
        if off >= total {
            let for_protocol = o.for_protocol;
            self.snapshots.outgoing.remove(&from);
            if for_protocol && let Some(p) = self.protocol.as_mut() {
                p.snapshot_delivered(from, term, idx, &mut self.pout);
                self.drain_protocol();
            } else {
                self.handle_learner_applied(from, idx);
            }
            return;
        }
        if off < o.acked {
            // The receiver lost what it had (restart): start over from there at the next
            // heartbeat, not now, so repeated stale acks cannot multiply traffic.
            o.acked = off;
            o.acked_at_heartbeat = off;
            o.sent = off;
            return;
        }
        if off > o.acked {
            o.acked = off;
            self.send_snapshot_chunks(from);
        }
    }

    fn ack_snapshot(&mut self, to: NodeId, (epoch, term): (u64, P::Term), idx: u64, offset: u64) {
        self.out.messages.push((
            to,
            Message::SnapshotAck {
                epoch,
                term,
                snapshot_idx: idx,
                offset,
            },
        ));
    }

    /// What to do with a chunk of `(epoch, term)` from `from`.
    fn snapshot_acceptance(&self, from: NodeId, epoch: u64, term: P::Term) -> SnapshotAcceptance {
        let mine = self.epoch();
        match &self.protocol {
            _ if epoch < mine => SnapshotAcceptance::Ignore,
            Some(p) if epoch == mine => p.accept_snapshot(from, term),
            _ => SnapshotAcceptance::Receive,
        }
    }

    pub(crate) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        key: (u64, P::Term),
        snapshot_idx: u64,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
    ) {
        match self.snapshot_acceptance(from, key.0, key.1) {
            SnapshotAcceptance::Ignore => return,
            SnapshotAcceptance::NotNeeded => {
                self.ack_snapshot(from, key, snapshot_idx, total_bytes);
                return;
            }
            SnapshotAcceptance::Receive => {}
        }
        let have = match &self.protocol {
            Some(p) if key.0 == self.epoch() => p.decided_idx(),
            // Without an instance of that epoch: only state we have not applied helps.
            _ if self.state.config.members.is_empty() => 0,
            _ => self.state.applied_index(),
        };
        if snapshot_idx <= have {
            // Already have that prefix.
            if self
                .snapshots
                .incoming
                .as_ref()
                .is_some_and(|i| i.from == from && i.snapshot_idx == snapshot_idx)
            {
                self.snapshots.incoming = None;
            }
            self.ack_snapshot(from, key, snapshot_idx, total_bytes);
            return;
        }
        if total_bytes > SNAPSHOT_BYTES_MAX {
            return;
        }
        if !self.take_incoming(from, key, snapshot_idx, total_bytes, offset) {
            return;
        }
        let Some(inc) = self.snapshots.incoming.as_mut() else {
            return;
        };
        let held = inc.bytes.len() as u64;
        if offset == held && held + data.len() as u64 <= total_bytes {
            inc.bytes.extend_from_slice(&data);
        }
        let held = inc.bytes.len() as u64;
        if held < total_bytes {
            self.ack_snapshot(from, key, snapshot_idx, held);
            return;
        }
        let Some(inc) = self.snapshots.incoming.take() else {
            return;
        };
        match self.install_snapshot(key, snapshot_idx, &inc.bytes) {
            Installed::Yes => self.ack_snapshot(from, key, snapshot_idx, total_bytes),
            // Undecodable: ask for it again from the start.
            Installed::Undecodable => self.ack_snapshot(from, key, snapshot_idx, 0),
            // Not acknowledged: an acknowledgement says the state is here, and a leader
            // counts a learner in sync by it (it would promote one that has no state).
            Installed::Refused => {}
        }
    }

    /// Whether this chunk belongs to the one incoming transfer (starting a new one if it may).
    fn take_incoming(
        &mut self,
        from: NodeId,
        (epoch, term): (u64, P::Term),
        snapshot_idx: u64,
        total_bytes: u64,
        offset: u64,
    ) -> bool {
        let same = self.snapshots.incoming.as_ref().is_some_and(|i| {
            i.from == from
                && i.epoch == epoch
                && i.term == term
                && i.snapshot_idx == snapshot_idx
                && i.total_bytes == total_bytes
        });
        if same {
            return true;
        }
        let replace = offset == 0
            && self.snapshots.incoming.as_ref().is_none_or(|i| {
                i.epoch != epoch || i.term != term || snapshot_idx > i.snapshot_idx
            });
        if replace {
            self.snapshots.incoming = Some(Incoming {
                from,
                epoch,
                term,
                snapshot_idx,
                total_bytes,
                bytes: Vec::new(),
            });
            return true;
        }
        if offset > 0 && self.snapshots.incoming.is_none() {
            // We hold nothing of it (restarted, or dropped it): resume from 0.
            self.ack_snapshot(from, (epoch, term), snapshot_idx, 0);
        }
        // Busy with another snapshot at least as new: let this sender stall out.
        false
    }

    /// Installs a complete snapshot: [`Installed::Undecodable`] if the bytes do not decode to
    /// a state at `snapshot_idx` (corruption the transport did not catch).
    fn install_snapshot(
        &mut self,
        (epoch, term): (u64, P::Term),
        idx: u64,
        bytes: &[u8],
    ) -> Installed {
        let Ok(image) = StateImage::decode(bytes) else {
            return Installed::Undecodable;
        };
        if image.kv.applied_index() != idx {
            return Installed::Undecodable;
        }
        let same_epoch = epoch == self.epoch() && !self.state.config.members.is_empty();
        let watched = self.state.kv.collects_events();
        let state = StateBytes(Arc::new(bytes.to_vec()));
        match self.protocol.as_mut() {
            Some(p) if same_epoch => {
                if idx <= p.decided_idx() {
                    return Installed::Yes;
                }
                let protocol = p.install_snapshot(term, idx);
                self.state = AppliedState::from_image(image, &self.bootstrap);
                self.after_state_replaced(watched);
                self.push_checkpoint(protocol, state);
                if let Some(p) = self.protocol.as_mut() {
                    p.snapshot_installed(&mut self.pout);
                }
                self.drain_protocol();
            }
            _ => {
                // A learner catching up, a new member's first state, or a newer epoch: the
                // snapshot's configuration says what this replica is now.
                let old_epoch = self.epoch();
                let joining = self.state.config.members.is_empty();
                let was_member = self.state.config.contains(self.config.id);
                if joining && self.stale_for_rejoin(&image) {
                    // Ignored: this replica keeps asking, and the group's leader sends state.
                    return Installed::Refused;
                }
                self.state = AppliedState::from_image(image, &self.bootstrap);
                if joining && self.config.bug(PlantedBug::JoinWithoutState) {
                    self.state = AppliedState::planted_config_only(&self.state, self.config.kv);
                }
                if joining {
                    self.outlive_own_origins();
                }
                if !was_member {
                    self.forget_a_stay_as_voter();
                }
                self.after_state_replaced(watched);
                // A member without state starts the epoch it was sent even when its number is
                // the one an empty state has (a group split off in epoch 0, `split.rs`).
                if self.protocol.is_some() || self.epoch() != old_epoch || !same_epoch || joining {
                    self.start_epoch_instance();
                } else {
                    self.push_state_checkpoint();
                }
            }
        }
        Installed::Yes
    }

    /// Whether `image` is from before this replica's member left the group it joins again
    /// (`EngineConfig::rejoin_floor`).
    fn stale_for_rejoin(&self, image: &StateImage) -> bool {
        let version = image.config.as_ref().map_or(0, |c| c.version);
        let floor = self.config.rejoin_floor;
        floor > 0 && version <= floor && !self.config.bug(PlantedBug::RejoinTakesStaleState)
    }

    /// A member that joins a group it was a member of before — a range moved away from it and
    /// back, in the same boot or after a restart that dropped the group's records — starts
    /// without state and so counts incarnations from 1 again; its origins would then be ones
    /// the group's applied state remembers from its earlier stay, and every command it makes
    /// would be skipped as applied before (never proposed by a leader, never answered). So its
    /// first state moves its incarnation past every one of its own the state remembers; the
    /// checkpoint that follows in the same batch makes it durable.
    ///
    /// A replica that is not amnesic stays so: incarnations from a stay after a lost disk (at
    /// or above `AMNESIC_INCARNATION_BASE`, drawn from a boot nonce) are passed by, not counted
    /// past — a newcomer cannot have voted in the epochs it enters from here, and no origin it
    /// makes below that base was made before.
    fn outlive_own_origins(&mut self) {
        let me: NodeId = self.config.id;
        let below = match self.amnesic() {
            true => u64::MAX,
            false => crate::AMNESIC_INCARNATION_BASE,
        };
        let Some(seen) = self.state.highest_incarnation_of(me, below) else {
            return;
        };
        if seen < self.pending.incarnation() {
            return;
        }
        if self.config.bug(PlantedBug::RejoinReusesOrigins) {
            return;
        }
        // Requests it forwarded under the old incarnation could be applied again under the new
        // one; a joiner takes none before its state (the partitioned engine relays them to the
        // group's other hosts meanwhile), and one that did keeps counting as before.
        if self.pending.len() != 0 {
            return;
        }
        self.pending.set_incarnation(seen + 1);
        self.out.records.push(Record::Incarnation(seen + 1));
    }

    /// A move's newcomer (`EngineConfig::move_newcomer`: synod-partition's `moves.rs`) is
    /// added as a learner and promoted only once in sync, so the first state that lists it at
    /// all, if it lists it as a voter, is from a stay it no longer remembers — its disk was
    /// lost, or its records of the group — in which it may have voted. It takes that state as a replica
    /// that lost its storage: amnesic, so it starts no instance of an epoch it may have voted
    /// in ([`Replica::start_epoch_instance`]) and stays non-voting there. A node started with
    /// `--join` may be added as a voter directly and is not judged so.
    fn forget_a_stay_as_voter(&mut self) {
        let me = self.config.id;
        let newcomer = self.config.join && self.config.move_newcomer;
        if !newcomer || !self.state.config.is_voter(me) || self.amnesic() {
            return;
        }
        if self.config.bug(PlantedBug::MoveJoinerVotesAfresh) {
            return;
        }
        // A joiner takes no request before its state (the partitioned engine relays them), so
        // no origin of the incarnation it leaves is pending.
        debug_assert_eq!(self.pending.len(), 0);
        // Above every incarnation of its own the state remembers, amnesic ones of an earlier
        // forgotten stay in this boot included (they share the boot nonce).
        let seen = self.state.highest_incarnation_of(me, u64::MAX).unwrap_or(0);
        let amnesic = (crate::AMNESIC_INCARNATION_BASE | (self.config.boot_nonce >> 2))
            .max(self.pending.incarnation() + 1)
            .max(seen + 1);
        self.pending.set_incarnation(amnesic);
        self.out.records.push(Record::Incarnation(amnesic));
    }

    fn after_state_replaced(&mut self, watched: bool) {
        self.forget_learner_additions();
        self.adopt_configured_range();
        self.restart_lease_clocks();
        if watched {
            // The watch layer sees the revision jump and catches up from the new history.
            let _ = self.state.kv.take_fresh_events();
        }
    }
}
