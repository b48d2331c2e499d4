//! Range splits on the replica layer (partitioned mode): handing the new group's first record
//! to the partitioned engine, and the record of a member of a new group that has no state.
//!
//! A split is a command decided in the group's log (`Op::Split`); applying it cuts the store
//! (`state.rs`) and leaves the upper half's state in `split_out`. Every replica that applies
//! the split turns that state into the same start: a fresh protocol instance whose log begins
//! at the split's index ([`LogProtocol::epoch_checkpoint`], as a new configuration epoch or a
//! restore does), with the members of the group at the split; a learner of the group starts it
//! as a learner, from the same state without a protocol instance. A member that skips the split
//! (it installs a later snapshot of the old group) starts the new group without state and is
//! sent a snapshot, like a member being added.

use crate::Replica;
use crate::records::{Checkpoint, Record};
use crate::state::{AppliedState, RangeChecks};
use synod_core::kv::SplitMark;
use synod_core::membership::Configuration;
use synod_core::{ClientReply, EngineError};
use synod_core::{LogProtocol, PlantedBug};

type ReplicaRecord<P> = Record<<P as LogProtocol>::Record, <P as LogProtocol>::Checkpoint>;

impl<P: LogProtocol> Replica<P> {
    /// The groups split off since the last call, each with its first record here. The
    /// incarnation is this replica's: the new group's origins (member, incarnation + 1, seq)
    /// then never repeat one of the old group's that its origin window holds.
    ///
    /// None, on a replica that lost its storage, for a split it may have applied before the
    /// loss (at or below [`Replica::rebuilt_through`]; any split while it is still being
    /// repaired): it may have voted in the new group then, so it must not start that group
    /// as a fresh voter; the partitioned engine then starts it as lost storage too
    /// ([`Replica::joiner_records`]), and the protocol repairs it. A split beyond that point
    /// is new to it and gets its record: until 2026-12-05 a member that had once lost its
    /// disk started *every* later split-off group without state, and a group whose other
    /// members had skipped the split (they installed a later snapshot of the parent) had its
    /// state nowhere (VR seed 146,516 with storage faults; planted
    /// `partition-amnesic-split-stateless`).
    pub(crate) fn split_records(&mut self) -> Vec<(SplitMark, ReplicaRecord<P>)> {
        let outs = std::mem::take(&mut self.state.split_out);
        let mut records = Vec::with_capacity(outs.len());
        for (mark, mut upper) in outs {
            if !self.split_is_new(&mark) {
                continue;
            }
            if self.config.bug(PlantedBug::PartitionSplitDropsSessions) {
                upper.planted_forget_applied();
            }
            let Some(protocol) = P::epoch_checkpoint(mark.index) else {
                // Refused earlier: the partitioned engine runs only on protocols that can.
                continue;
            };
            let Ok(state) = upper.encode() else {
                continue; // postcard does not fail on our own in-memory state
            };
            let incarnation = self.pending.incarnation();
            // A learner of the group (a member being added) votes in no instance of the new
            // group either: it starts it as a learner with the split's state, and the new
            // group's leader goes on sending it entries. (A protocol checkpoint would not
            // recover — it names a voter — and the member would never host the new group.)
            let voter = upper.config.is_voter(self.config.id)
                || self.config.bug(PlantedBug::PartitionSplitLearnerAsVoter);
            let record = match voter {
                true => Record::Checkpoint(Box::new(Checkpoint {
                    protocol,
                    incarnation,
                    state,
                })),
                false => Record::StateCheckpoint { incarnation, state },
            };
            records.push((mark, record));
        }
        records
    }

    /// The range checks of apply. The owner check is off only on the member with the
    /// planted `PartitionBoundaryMisroute` (the partitioned engine's first member): its
    /// off-by-one boundary is its groups' too, else they would refuse what it misroutes.
    pub(crate) fn range_checks(&self) -> RangeChecks {
        RangeChecks {
            owner: !(self.config.bug(PlantedBug::PartitionBoundaryMisroute)
                && self.config.members.iter().min() == Some(&self.config.id)),
            frozen: !self.config.bug(PlantedBug::PartitionMergeFrozenServes),
            merge_sessions: !self.config.bug(PlantedBug::PartitionMergeDropsSessions),
            merge_revision: !self.config.bug(PlantedBug::PartitionAbsorbRevisionBehind),
            merge_history: !self.config.bug(PlantedBug::PartitionMergeHistoryShifted),
            close_slots: !self.config.bug(PlantedBug::PartitionCloseWithoutSlots),
            merge_lease_ends: !self.config.bug(PlantedBug::PartitionMergeKeepsEndedLease),
        }
    }

    /// The replies owed to this group's pending requests when it is retired (absorbed by
    /// another). Once the freeze is applied here, nothing pending can be applied any more
    /// (a decision after the freeze is refused), and this state says what was applied before:
    /// a write with a saved reply gets it; one whose origin was applied without a session
    /// (its reply is gone) a timeout; anything else `WrongGroup`, definitely not applied.
    /// Before the freeze is applied here, every answer is a timeout: the request may have
    /// been applied on the members ahead of this one.
    pub(crate) fn retire_pending(&mut self) -> Vec<ClientReply> {
        let frozen = self.state.range.frozen.is_some();
        let mut replies = std::mem::take(&mut self.out.replies);
        for (seq, request) in self.pending.drain() {
            let origin = self.pending.origin(self.config.id, seq);
            let result = match self.state.kv.sessions().saved(request.id) {
                _ if !frozen => Err(EngineError::Timeout),
                Some(saved) => Ok(saved.clone()),
                None if self.state.was_applied(&origin) => Err(EngineError::Timeout),
                None => Err(self.state.wrong_group()),
            };
            replies.push(ClientReply {
                id: request.id,
                result,
            });
        }
        replies
    }

    /// The group's range as configured at bootstrap, for a state that has none of its own
    /// (a group of the initial layout: only splits write a range into the state).
    pub(crate) fn adopt_configured_range(&mut self) {
        if self.state.range.range.everything() && !self.state.range.changed() {
            self.state.range.range = self.config.key_range.clone();
        }
    }

    /// Whether this replica cannot have applied split `mark` before it lost its storage (if it
    /// ever did): see [`Replica::split_records`].
    fn split_is_new(&self, mark: &SplitMark) -> bool {
        if self.pending.incarnation() < crate::AMNESIC_INCARNATION_BASE {
            return true;
        }
        if self.config.bug(PlantedBug::PartitionAmnesicSplitStateless) {
            return false;
        }
        self.rebuilt_through.is_some_and(|r| mark.index > r)
    }

    /// Records, on a replica of a lost disk, the log's length the first time its protocol
    /// is seen repaired in this boot ([`LogProtocol::can_checkpoint`]: not repairing).
    pub(crate) fn note_rebuilt(&mut self) {
        if self.rebuilt_through.is_some()
            || self.pending.incarnation() < crate::AMNESIC_INCARNATION_BASE
        {
            return;
        }
        if let Some(p) = self.protocol.as_ref().filter(|p| p.can_checkpoint()) {
            self.rebuilt_through = Some(p.log_len());
        }
    }

    /// The first records of a member of a split-off group that has no state yet: a state
    /// checkpoint without configuration (a member being added), or none at all when this
    /// replica lost its storage and `split` may predate the loss — then it may have voted in
    /// the new group before, and must never start voting afresh from a snapshot: unplaced, the
    /// protocol repairs it like every group of a lost disk; placed, the partitioned engine
    /// starts it as a move's newcomer, which takes a state listing it as a voter as a stay it
    /// forgot (`synod-partition`'s `start_children`).
    ///
    /// A split this replica's log places after its repair ([`Replica::split_is_new`]) is a
    /// group it cannot have voted in: it joins without state like any member. Until
    /// 2026-12-07 it started without records there too, and a new group two of whose three
    /// members had lost their disks (one during the split, one that skipped it by installing
    /// a later snapshot of the parent) had a single member that could answer VR's recovery,
    /// which needs f + 1: the group stalled for good (VR seed 135 of the lost-disks schedule
    /// with leaders counted on unplaced clusters; planted `partition-amnesic-joiner-stateless`).
    pub(crate) fn joiner_records(
        &self,
        split: Option<&SplitMark>,
    ) -> Option<Vec<ReplicaRecord<P>>> {
        P::epoch_checkpoint(0)?;
        let new = split.is_some_and(|m| self.split_is_new(m))
            && !self.config.bug(PlantedBug::PartitionAmnesicJoinerStateless);
        if self.pending.incarnation() >= crate::AMNESIC_INCARNATION_BASE && !new {
            return Some(Vec::new());
        }
        let state = AppliedState::new(self.config.kv, Configuration::default())
            .encode()
            .ok()?;
        Some(vec![Record::StateCheckpoint {
            incarnation: self.pending.incarnation(),
            state,
        }])
    }
}
