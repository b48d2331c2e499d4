//! Which replicas this one hears, and which of them are quorum-connected: the view change's
//! choice of the next view under partial connectivity (a deviation from §4.2, see the crate
//! docs, "Liveness under partial connectivity").
//!
//! The idea is OmniPaxos's Ballot Leader Election (Ng, Haridi, Carbone, EuroSys'23): only a
//! server that hears from a majority can lead. VR fixes the primary of view v as
//! `members[v % n]`, so instead of electing a replica we *skip views*: a view change that
//! stalls moves on to the next view whose primary is quorum-connected as far as this replica
//! knows. The view-number still names its primary, so every replica agrees who leads it.

use crate::Vr;
use crate::messages::View;
use synod_core::NodeId;

/// What this replica knows of its peers' links, all in ticks of its own clock.
#[derive(Debug, Default)]
pub struct Connectivity {
    /// The tick of the last message received from each peer (proves that link works).
    heard_tick: std::collections::BTreeMap<NodeId, u64>,
    /// The tick of the last StartViewChange in which each peer said it was quorum-connected;
    /// removed when it says it is not.
    connected_tick: std::collections::BTreeMap<NodeId, u64>,
}

impl Vr {
    /// How long a message counts as "recent": one election timeout. Replicas in view-change
    /// status resend StartViewChange every heartbeat, so a live link shows up well within it.
    fn recent_ticks(&self) -> u64 {
        self.config.election_timeout_ticks.max(1)
    }

    fn is_recent(&self, tick: u64) -> bool {
        self.now_ticks.saturating_sub(tick) <= self.recent_ticks()
    }

    /// Any message from `from` (a member peer) proves its link to us.
    pub(crate) fn note_heard(&mut self, from: NodeId) {
        self.links.heard_tick.insert(from, self.now_ticks);
    }

    /// A peer's StartViewChange said whether it is quorum-connected.
    pub(crate) fn note_peer_connected(&mut self, from: NodeId, connected: bool) {
        if connected {
            self.links.connected_tick.insert(from, self.now_ticks);
        } else {
            self.links.connected_tick.remove(&from);
        }
    }

    /// Quorum-connected (OmniPaxos's flag): heard from f others within an election timeout,
    /// so with itself a majority reaches it.
    pub(crate) fn quorum_connected(&self) -> bool {
        let heard = self
            .links
            .heard_tick
            .values()
            .filter(|t| self.is_recent(**t))
            .count();
        heard >= self.f
    }

    /// Replicas that may lead a view this replica can help complete: itself if it is
    /// quorum-connected, and the peers that recently said they are (which it also hears).
    fn candidates(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .links
            .connected_tick
            .iter()
            .filter(|(_, t)| self.is_recent(**t))
            .map(|(p, _)| *p)
            .collect();
        if self.quorum_connected() {
            out.push(self.me());
        }
        out
    }

    /// The view a view change moves to after `view`: the smallest later view whose primary is
    /// a candidate, or `view + 1` (the paper's choice) when this replica knows of none — as
    /// after a timeout in normal status, when backups have not heard each other. Within n
    /// views every replica is the primary of one, so the search is bounded.
    pub(crate) fn next_view(&self, view: View) -> View {
        let candidates = self.candidates();
        let n = self.n() as u64;
        (view + 1..=view + n)
            .find(|v| candidates.contains(&self.primary_of(*v)))
            .unwrap_or(view + 1)
    }
}
