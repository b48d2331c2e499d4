//! Leader transfer as a **ballot hand-off** (etcd's MoveLeader; Raft's TimeoutNow, §3.10 of
//! Ongaro's thesis, carried over to Sequence Paxos and BLE).
//!
//! 1. The leader of ballot `n`, in its Accept phase, stops taking proposals
//!    ([`OmniPaxos::propose_entry`] refuses them; origins re-forward them to whoever leads next).
//! 2. Once the target has accepted the leader's whole log in `n` (its `Accepted` reached the
//!    leader's log end and no proposal is buffered), the leader sends it [`PaxosMessage::TakeOver`]
//!    — again every heartbeat until the hand-off completes, in case it was lost.
//! 3. The target, if it still promises `n` and accepted that whole log, raises its BLE ballot
//!    above every ballot it knows ([`Ble::take_over`]) and starts its Prepare phase in that
//!    ballot at once, without waiting for a BLE round. The Prepare phase is the ordinary one
//!    (§4): safety never rests on the hand-off, only liveness does. The promises depose the old
//!    leader.
//! 4. BLE then elects the target's ballot everywhere: it is higher than the old leader's, and BLE
//!    does not outbid a ballot it adopted from a promise until it heard a full round of
//!    heartbeats after it (see `ble.rs`), so neither the old leader nor a third server takes the
//!    leadership straight back.
//!
//! If the hand-off has not completed after [`synod_core::leader_transfer_ticks`], the leader
//! forgets it and takes proposals again: a target that crashed or is cut off costs a few
//! election timeouts of write unavailability, never more.

use crate::OmniPaxos;
use crate::ballot::Ballot;
use crate::messages::{Message, PaxosMessage};
use crate::sequence_paxos::{Phase, Role};
use synod_core::{LeaderTransferError, NodeId, PlantedBug, leader_transfer_ticks};

/// A hand-off under way, at the leader.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// The voter that is to lead next.
    pub to: NodeId,
    /// When it started (this server's ticks): it is abandoned `leader_transfer_ticks` later.
    pub started_tick: u64,
    /// When TakeOver was last sent (resent once per heartbeat while the hand-off lasts).
    pub take_over_sent_tick: Option<u64>,
}

impl OmniPaxos {
    /// Step 1: the leader starts handing leadership to `to`.
    pub(crate) fn start_transfer(&mut self, to: NodeId) -> Result<(), LeaderTransferError> {
        let me = self.config.id;
        if !self.config.members.contains(&to) || to == me {
            return Err(LeaderTransferError::BadTarget {
                target: to,
                why: "is not another voter of this configuration".into(),
            });
        }
        let now = self.now_ticks;
        let Role::Leader(l) = &mut self.role else {
            return Err(LeaderTransferError::NotLeader {
                leader: self.leader_hint(),
            });
        };
        if l.phase != Phase::Accept {
            return Err(LeaderTransferError::NotReady(
                "the leader is still in its Prepare phase".into(),
            ));
        }
        l.transfer = Some(Transfer {
            to,
            started_tick: now,
            take_over_sent_tick: None,
        });
        self.transfer_progress();
        Ok(())
    }

    /// Leader: the synchronised follower that accepted the most of the log in this ballot
    /// (the lowest id among equals), the one a graceful shutdown hands leadership to.
    pub(crate) fn most_up_to_date_follower(&self) -> Option<NodeId> {
        let l = self.leader_state()?;
        l.followers
            .iter()
            .max_by_key(|(id, p)| (p.accepted_idx, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// The target of the hand-off under way, if any.
    pub(crate) fn transfer_target(&self) -> Option<NodeId> {
        self.leader_state().and_then(|l| l.transfer).map(|t| t.to)
    }

    /// Step 2, after every input that can move it on (an Accepted, a flush, a heartbeat):
    /// gives up when the bound passed, else sends TakeOver once the target accepted the whole
    /// log (resent once per heartbeat).
    pub(crate) fn transfer_progress(&mut self) {
        let now = self.now_ticks;
        let bound = leader_transfer_ticks(&self.config);
        let heartbeat = self.config.heartbeat_ticks;
        let len = self.store.log_len();
        let skip_catch_up = self.config.bug(PlantedBug::TransferTargetKeepsOwnLog);
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let Some(t) = l.transfer.as_mut() else {
            return;
        };
        if now >= t.started_tick + bound {
            // The target did not take over in time (down, cut off, or lagging): lead on.
            l.transfer = None;
            return;
        }
        let caught_up = l.proposals.is_empty()
            && l.followers
                .get(&t.to)
                .is_some_and(|p| p.accepted_idx >= len);
        // PLANTED BUG (TransferTargetKeepsOwnLog): no waiting for the target's log.
        if !(caught_up || skip_catch_up) {
            return;
        }
        if t.take_over_sent_tick.is_some_and(|s| now < s + heartbeat) {
            return;
        }
        t.take_over_sent_tick = Some(now);
        let (to, n) = (t.to, l.n);
        self.out.messages.push((
            to,
            Message::Paxos(PaxosMessage::TakeOver { n, log_len: len }),
        ));
    }

    /// Step 3, at the target: TakeOver from the leader of ballot `n`, whose log is `log_len`
    /// long. Taken only while this server follows `n` with that whole log accepted in `n`, so a
    /// late or duplicated TakeOver does nothing.
    pub(crate) fn handle_take_over(&mut self, from: NodeId, n: Ballot, log_len: u64) {
        let trust_hand_off = self.config.bug(PlantedBug::TransferTargetKeepsOwnLog);
        let up_to_date = self.store.accepted_round == n && self.store.log_len() >= log_len;
        if n.pid != from
            || n != self.store.promised
            || self.role.is_leader()
            || self.store.amnesic
            || !(up_to_date || trust_hand_off)
        {
            return;
        }
        let known = self.store.promised.max(self.ble.leader);
        let b = self.ble.take_over(known);
        assert!(b > self.store.promised, "a hand-off ballot must be new");
        self.become_leader(b);
        if trust_hand_off && let Role::Leader(l) = &mut self.role {
            l.keep_own_log = true;
        }
    }
}
