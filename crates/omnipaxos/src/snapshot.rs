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
use synod_core::{NodeId, PlantedBug, ProtocolEvent, SnapshotAcceptance};

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

    /// Takes the decided prefix `[0, idx)` received in ballot `n` in place of our log's.
    ///
    /// Our accepted round does not change and the entries we hold beyond `idx` stay: the
    /// snapshot is *not* the n-leader's log, only the part of it that is chosen. Taking round
    /// n here would claim "my log is the n-leader's up to my length" with only the decided
    /// prefix, and a later Prepare would adopt it over longer logs of round n — dropping
    /// entries n's leader synced (and maybe decided) beyond `idx` (seed 97,116 of the
    /// partitioned simulator lost a decided entry that way after a power loss). Dropping our
    /// own suffix would lose entries chosen with our vote while the leader's AcceptSync is
    /// still on its way. Round n is taken with that AcceptSync, which carries the rest.
    /// Keeping them is safe: they were accepted in our round, which stays; and if our old log
    /// disagreed with the chosen prefix below `idx`, a later round chose there, so every
    /// majority holds a log of a higher round than ours and ours is never adopted.
    pub(crate) fn install_snapshot_log(&mut self, n: Ballot, idx: u64) -> Checkpoint {
        // PLANTED BUG (OmniSnapshotTakesLeaderRound): a follower takes round n with the
        // decided prefix alone and forgets what it held beyond it.
        let planted = self.config.bug(PlantedBug::OmniSnapshotTakesLeaderRound);
        let (accepted_round, keep_suffix) = if planted && !self.role.is_leader() {
            (n, false)
        } else {
            (self.store.accepted_round, true)
        };
        // A repairing follower holds only the decided prefix now, not what it accepted and lost
        // beyond it: it stays repairing until the AcceptSync that follows the install gives it
        // the leader's whole log (repair.rs, rule 3).
        // PLANTED BUG (OmniSnapshotEndsRepair): the install ends the repair, so the member
        // promises again as an ordinary one holding the bottom round — and a candidate with a
        // log of a higher round but shorter than that prefix overwrites decided entries.
        if self.config.bug(PlantedBug::OmniSnapshotEndsRepair) {
            self.finish_repair();
        }
        let c = self
            .store
            .install_snapshot(accepted_round, idx, keep_suffix);
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
