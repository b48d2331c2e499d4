//! When OmniPaxos needs a snapshot, and what installing one means for its log. The bytes move
//! through the replica layer (`synod-replica`'s `snapshot.rs`: chunked, resumable, bounded).
//!
//! Two cases need a snapshot:
//! 1. the leader must AcceptSync a follower from a position below its own compacted index
//!    (the follower was partitioned or crashed while the leader compacted — including a leader
//!    that compacted its *whole* decided log);
//! 2. a candidate's Prepare shows that a promising follower compacted entries the candidate's
//!    log lacks (the follower decided further than the candidate): the follower pushes its
//!    snapshot with its Promise, and the candidate finishes its Prepare phase once installed.
//!
//! Transfers are keyed by the ballot `n` both sides promised ([`LogProtocol::snapshot_term`]
//! is the promised ballot): a transfer from an older ballot is dropped, so a deposed leader
//! cannot install anything.
//!
//! [`LogProtocol::snapshot_term`]: synod_core::LogProtocol::snapshot_term

use crate::OmniPaxos;
use crate::ballot::Ballot;
use crate::sequence_paxos::{Phase, Role};
use crate::storage::Checkpoint;
use synod_core::{NodeId, ProtocolEvent, SnapshotAcceptance};

/// Heartbeats a candidate waits for a snapshot from a promising server before it forgets that
/// promise (if a majority remains without it).
pub const SNAPSHOT_STALL_HEARTBEATS_MAX: u32 = 10;

impl OmniPaxos {
    /// Asks the replica layer to push our snapshot to `to` in our promised ballot.
    pub(crate) fn start_snapshot_send(&mut self, to: NodeId) {
        self.out.events.push(ProtocolEvent::SendSnapshot { to });
    }

    /// Followers take a snapshot from the leader of the ballot they promised, candidates from
    /// any server promising their ballot; an Accept-phase leader's log is final.
    pub(crate) fn snapshot_acceptance(&self, from: NodeId, n: Ballot) -> SnapshotAcceptance {
        if n != self.store.promised || (self.store.amnesic && !self.repair_floor_known()) {
            return SnapshotAcceptance::Ignore;
        }
        match &self.role {
            Role::Follower if from == n.pid => SnapshotAcceptance::Receive,
            Role::Follower => SnapshotAcceptance::Ignore,
            Role::Leader(l) if l.n == n && l.phase == Phase::Prepare => SnapshotAcceptance::Receive,
            Role::Leader(l) if l.n == n => SnapshotAcceptance::NotNeeded,
            Role::Leader(_) => SnapshotAcceptance::Ignore,
        }
    }

    /// Replaces the log by the decided prefix `[0, idx)` received in ballot `n`.
    pub(crate) fn install_snapshot_log(&mut self, n: Ballot, idx: u64) -> Checkpoint {
        // A follower of n holds, after this, a prefix of the n-leader's final log (the decided
        // prefix is in every later round's log): its accepted round becomes n. A candidate
        // keeps its accepted round; its Prepare phase sets it when it completes.
        let accepted_round = if self.role.is_leader() {
            self.store.accepted_round
        } else {
            n
        };
        // A repairing follower now holds the decided prefix of the ballot it promised (at or
        // above its floor): a state it really has.
        self.finish_repair();
        let c = self.store.install_snapshot(accepted_round, idx);
        self.decided_persisted = self.decided_persisted.max(self.store.decided_idx);
        c
    }

    /// `to` installed our snapshot at `idx`: a leader continues with AcceptSync from there (a
    /// newer snapshot if we compacted past it meanwhile).
    pub(crate) fn on_snapshot_delivered(&mut self, to: NodeId, n: Ballot, idx: u64) {
        if self
            .leader_state()
            .is_some_and(|l| l.n == n && l.phase == Phase::Accept)
        {
            self.send_accept_sync(to, idx);
        }
    }
}
