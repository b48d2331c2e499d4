//! Leader transfer (etcd's MoveLeader) as a view change the primary starts itself (VR
//! Revisited §4.2): the primary of view v moves to the first view v' > v whose primary
//! (`members[v' mod n]`) is the target and sends StartViewChange for v'. Nothing else is new:
//! the backups join v' as they would any newer view change, the target collects f + 1
//! DoViewChange messages, picks the log with the largest last-normal view and op-number, and
//! sends StartView. Safety is the view change's; the primary being the one that starts it only
//! saves the election timeout the backups would otherwise wait for.
//!
//! The old primary leaves normal status at once, so it takes no more proposals; if the target
//! is down or cut off, the view change stalls and moves on to a later view after a view-change
//! timeout (§4.2), as any stalled view change does.
//!
//! A backup that sent Recovery since its last PrepareOk is refused as the target (NotReady; a
//! balancer tries again later): a replica recovering without its disk takes no part in a view
//! change, so the hand-off would leave the group without a primary until a view-change timeout
//! moved past the target's view (planted `vr-transfer-to-recovering`).

use crate::{Status, Vr};
use synod_core::{LeaderTransferError, NodeId, PlantedBug};

impl Vr {
    /// The primary starts the view change that makes `to` primary.
    pub(crate) fn start_transfer(&mut self, to: NodeId) -> Result<(), LeaderTransferError> {
        if !self.is_member_peer(to) {
            return Err(LeaderTransferError::BadTarget {
                target: to,
                why: "is not another voter of this configuration".into(),
            });
        }
        if self.status != Status::Normal || self.primary.is_none() {
            return Err(LeaderTransferError::NotLeader {
                leader: synod_core::LogProtocol::leader(self),
            });
        }
        if let Some(why) = self.transfer_blocked(to) {
            return Err(LeaderTransferError::NotReady(why));
        }
        let view = self.store.view();
        let next = self.view_led_by(to, view);
        assert!(next > view && self.primary_of(next) == to);
        self.start_view_change(next);
        Ok(())
    }

    /// Why the primary may not hand off to `to` now (module doc), if it may not.
    fn transfer_blocked(&self, to: NodeId) -> Option<String> {
        if self.config.bug(PlantedBug::VrTransferToRecovering) {
            return None;
        }
        let p = self.primary.as_ref()?;
        let recovering = p.progress.get(&to).is_some_and(|g| g.recovering);
        recovering.then(|| format!("member {to} is recovering its state"))
    }

    /// Primary: the backup that acknowledged the most of the log (the lowest id among equals)
    /// and is not recovering, the one a graceful shutdown hands leadership to.
    pub(crate) fn most_up_to_date_backup(&self) -> Option<NodeId> {
        let p = self.primary.as_ref()?;
        // A recovering backup's `acked` is from before it restarted: it cannot take over.
        p.progress
            .iter()
            .filter(|(_, g)| !g.recovering)
            .max_by_key(|(id, g)| (g.acked, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// The first view after `view` whose primary is `to` (at most n views on).
    fn view_led_by(&self, to: NodeId, view: crate::View) -> crate::View {
        let n = self.config.members.len() as u64;
        (view + 1..=view + n)
            .find(|v| self.primary_of(*v) == to)
            .expect("every member is the primary of one view in any n consecutive views")
    }
}
