//! Range splits on the replica layer (partitioned mode): handing the new group's first record
//! to the partitioned engine, and the record of a member of a new group that has no state.
//!
//! A split is a command decided in the group's log (`Op::Split`); applying it cuts the store
//! (`state.rs`) and leaves the upper half's state in `split_out`. Every replica that applies
//! the split turns that state into the same start: a fresh protocol instance whose log begins
//! at the split's index ([`LogProtocol::epoch_checkpoint`], as a new configuration epoch or a
//! restore does), with the members of the group at the split. A member that skips the split
//! (it installs a later snapshot of the old group) starts the new group without state and is
//! sent a snapshot, like a member being added.

use crate::Replica;
use crate::records::{Checkpoint, Record};
use crate::state::AppliedState;
use synod_core::kv::SplitMark;
use synod_core::membership::Configuration;
use synod_core::{LogProtocol, PlantedBug};

type ReplicaRecord<P> = Record<<P as LogProtocol>::Record, <P as LogProtocol>::Checkpoint>;

impl<P: LogProtocol> Replica<P> {
    /// The groups split off since the last call, each with its first record here. The
    /// incarnation is this replica's: the new group's origins (member, incarnation + 1, seq)
    /// then never repeat one of the old group's that its origin window holds.
    ///
    /// None on a replica that lost its storage: it may have voted in the new group before
    /// the loss (it applies the split again only because its log was rebuilt), so it must
    /// not start that group as a fresh voter; the partitioned engine then starts it as lost
    /// storage too ([`Replica::joiner_records`]), and the protocol repairs it.
    pub(crate) fn split_records(&mut self) -> Vec<(SplitMark, ReplicaRecord<P>)> {
        let outs = std::mem::take(&mut self.state.split_out);
        if self.pending.incarnation() >= crate::AMNESIC_INCARNATION_BASE {
            return Vec::new();
        }
        let mut records = Vec::with_capacity(outs.len());
        for (mark, mut upper) in outs {
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
            records.push((
                mark,
                Record::Checkpoint(Box::new(Checkpoint {
                    protocol,
                    incarnation: self.pending.incarnation(),
                    state,
                })),
            ));
        }
        records
    }

    /// Whether this replica refuses keys outside its group's range. Not on the member with
    /// the planted `PartitionBoundaryMisroute` (the partitioned engine's first member): its
    /// off-by-one boundary is its groups' too, else they would refuse what it misroutes.
    pub(crate) fn owner_checks(&self) -> bool {
        !(self.config.bug(PlantedBug::PartitionBoundaryMisroute)
            && self.config.members.iter().min() == Some(&self.config.id))
    }

    /// The group's range as configured at bootstrap, for a state that has none of its own
    /// (a group of the initial layout: only splits write a range into the state).
    pub(crate) fn adopt_configured_range(&mut self) {
        if self.state.range.range.everything() {
            self.state.range.range = self.config.key_range.clone();
        }
    }

    /// The first records of a member of a split-off group that has no state yet: a state
    /// checkpoint without configuration (a member being added), or none at all when this
    /// replica lost its storage — then it may have voted in the new group before the loss,
    /// and must be repaired by the protocol like every group of a lost disk, never start
    /// voting afresh from a snapshot.
    pub(crate) fn joiner_records(&self) -> Option<Vec<ReplicaRecord<P>>> {
        P::epoch_checkpoint(0)?;
        if self.pending.incarnation() >= crate::AMNESIC_INCARNATION_BASE {
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
