//! §4.2 view change: StartViewChange votes, DoViewChange to the new primary, the new
//! primary's choice of log (largest last-normal view, then largest op-number) and StartView;
//! a view change that stalls moves on to the next view after another timeout.
//!
//! DoViewChange carries only the log after the sender's commit-number. The new primary keeps
//! its own log up to its commit-number `c` and takes the chosen log after it; when the chosen
//! suffix starts above `c` (the sender committed more), it first fetches the committed entries
//! `[c, …)` by GetState from the sender with the largest commit-number (§5.2), or receives that
//! sender's snapshot if it compacted them, and only then sends StartView.

use crate::messages::{Message, View};
use crate::{Status, Vr};
use std::collections::{BTreeMap, BTreeSet};
use synod_core::{Command, NodeId, PlantedBug};

/// One DoViewChange as the new primary keeps it.
#[derive(Clone, Debug)]
pub struct Dvc {
    pub last_normal: View,
    pub op_number: u64,
    pub commit: u64,
    /// Positions `commit..op_number`.
    pub entries: Vec<Command>,
}

#[derive(Debug, Default)]
pub struct ViewChangeState {
    /// Others that moved to view-change status in this view (StartViewChange or
    /// DoViewChange received).
    svc: BTreeSet<NodeId>,
    /// This replica sent its DoViewChange for this view.
    dvc_sent: bool,
    /// At the new primary: DoViewChange messages of this view, its own included.
    dvcs: BTreeMap<NodeId, Dvc>,
    /// At the new primary: whom it asked for committed entries it lacks.
    pub fetch_from: Option<NodeId>,
}

impl Vr {
    /// §4.2: moves to view-change status in `view` (a timeout, or a message of a newer view).
    /// The view-number record precedes the StartViewChange in the output, so this replica
    /// never returns to an older view after a restart.
    pub(crate) fn start_view_change(&mut self, view: View) {
        assert!(
            view > self.store.view(),
            "view change to {view} from view {}",
            self.store.view()
        );
        self.leave_primary_for(view);
        self.store.raise_view(view, &mut self.out.records);
        self.status = Status::ViewChange;
        self.recovery = None;
        self.vc = ViewChangeState::default();
        self.reset_timer();
        self.send_start_view_change();
        self.maybe_send_do_view_change();
    }

    /// StartViewChange for the current view, with whom we know joined it and whether we are
    /// quorum-connected.
    fn send_start_view_change(&mut self) {
        let view = self.store.view();
        let mut joined: BTreeSet<NodeId> = self.vc.svc.clone();
        joined.insert(self.me());
        let m = Message::StartViewChange {
            view,
            connected: self.quorum_connected(),
            joined: joined.into_iter().collect(),
        };
        self.send_all(m);
    }

    /// A StartViewChange or DoViewChange for `view` arrived: join a newer view change, and say
    /// whether this replica is now changing to exactly `view` (false for an older view, or one
    /// it is already normal in).
    fn join_view_change(&mut self, view: View) -> bool {
        if view < self.store.view() {
            return false;
        }
        if view > self.store.view() {
            self.start_view_change(view);
        }
        self.status == Status::ViewChange
    }

    /// `joined` relays whom the sender knows moved to `view` (deviation, see the crate docs).
    pub(crate) fn handle_start_view_change(&mut self, from: NodeId, view: View, joined: &[NodeId]) {
        if !self.join_view_change(view) {
            // Older view, or already normal in it: the sender learns it from our primary.
            return;
        }
        self.vc.svc.insert(from);
        for &r in joined {
            if self.is_member_peer(r) {
                self.vc.svc.insert(r);
            }
        }
        self.maybe_send_do_view_change();
    }

    /// §4.2: when f others are known to be in view-change status in this view (directly, or
    /// relayed by a StartViewChange), send DoViewChange to the new primary.
    fn maybe_send_do_view_change(&mut self) {
        if self.status != Status::ViewChange || self.vc.dvc_sent || self.vc.svc.len() < self.f {
            return;
        }
        self.vc.dvc_sent = true;
        self.send_do_view_change();
    }

    fn own_dvc(&self) -> Dvc {
        let commit = self.store.commit();
        let op_number = self.store.log_len();
        Dvc {
            last_normal: self.store.last_normal(),
            op_number,
            commit,
            entries: self.store.slice(commit, op_number),
        }
    }

    fn send_do_view_change(&mut self) {
        let view = self.store.view();
        let dvc = self.own_dvc();
        let p = self.primary_of(view);
        if p == self.me() {
            self.vc.dvcs.insert(p, dvc);
            self.try_start_view();
        } else {
            let m = Message::DoViewChange {
                view,
                last_normal: dvc.last_normal,
                op_number: dvc.op_number,
                commit: dvc.commit,
                entries: dvc.entries,
            };
            self.send(p, m);
        }
    }

    pub(crate) fn handle_do_view_change(&mut self, from: NodeId, view: View, dvc: Dvc) {
        let well_formed = dvc.last_normal < view
            && dvc.commit <= dvc.op_number
            && dvc.entries.len() as u64 == dvc.op_number - dvc.commit;
        if !well_formed || !self.join_view_change(view) {
            return;
        }
        // A DoViewChange also says its sender moved to this view change.
        self.vc.svc.insert(from);
        if self.primary_of(view) == self.me() {
            self.vc.dvcs.insert(from, dvc);
        }
        self.maybe_send_do_view_change();
        self.try_start_view();
    }

    /// Every heartbeat of a view change: resend what may have been lost.
    pub(crate) fn view_change_heartbeat(&mut self) {
        let view = self.store.view();
        self.send_start_view_change();
        if self.vc.dvc_sent {
            if self.primary_of(view) == self.me() {
                self.try_start_view();
            } else {
                self.send_do_view_change();
            }
        }
    }

    /// §4.2 at the new primary: with f + 1 DoViewChange messages (its own included), take the
    /// log with the largest last-normal view (ties: largest op-number), commit-number = the
    /// largest reported, become normal and send StartView.
    pub(crate) fn try_start_view(&mut self) {
        let view = self.store.view();
        if self.status != Status::ViewChange
            || self.primary_of(view) != self.me()
            || !self.vc.dvcs.contains_key(&self.me())
            || self.vc.dvcs.len() < self.f + 1
        {
            return;
        }
        let by_op_only = self.config.bug(PlantedBug::VrLogByOpNumberOnly);
        let Some((_, best)) = self.vc.dvcs.iter().max_by_key(|(_, d)| {
            if by_op_only {
                // PLANTED BUG: ignore the last-normal view when choosing the log.
                (0, d.op_number)
            } else {
                (d.last_normal, d.op_number)
            }
        }) else {
            return;
        };
        let best = best.clone();
        let max_commit = self.vc.dvcs.values().map(|d| d.commit).max().unwrap_or(0);
        let c = self.store.commit();
        if best.commit > c {
            self.fetch_committed(c);
            return;
        }
        // Our log up to c is committed, hence equal to the chosen log there; take the rest
        // from the chosen log. (If the chosen log were shorter than c — impossible unless an
        // invariant broke — keep just our committed prefix.)
        let skip = (c - best.commit) as usize;
        let suffix: Vec<Command> = best.entries.iter().skip(skip).cloned().collect();
        self.store
            .replace(view, view, c, suffix, &mut self.out.records);
        let len = self.store.log_len();
        self.store.raise_commit(max_commit.min(len));
        let known: BTreeMap<NodeId, u64> =
            self.vc.dvcs.iter().map(|(p, d)| (*p, d.commit)).collect();
        self.become_primary(&known);
    }

    /// The new primary lacks committed entries from position `c`: ask the DoViewChange sender
    /// with the largest commit-number (at most once per heartbeat).
    fn fetch_committed(&mut self, c: u64) {
        let Some((src, _)) = self
            .vc
            .dvcs
            .iter()
            .filter(|(p, _)| **p != self.config.id)
            .max_by_key(|(_, d)| d.commit)
        else {
            return;
        };
        let src = *src;
        self.vc.fetch_from = Some(src);
        self.send_get_state(src, c, false);
    }
}

impl Vr {
    /// §4.2 at a backup: replace the log by the new view's (from our commit-number, below
    /// which every log agrees), become normal, and PrepareOk the uncommitted suffix. A
    /// StartView starting above our commit-number (we lag by more than a batch) makes us
    /// normal but unsynced, and state transfer fills the rest (§5.2).
    pub(crate) fn handle_start_view(
        &mut self,
        from: NodeId,
        view: View,
        start: u64,
        entries: Vec<Command>,
        commit: u64,
    ) {
        if view < self.store.view() || from != self.primary_of(view) {
            return;
        }
        if view == self.store.view() && self.synced() {
            // A duplicate, or a resend because our PrepareOk was lost.
            if self.primary.is_none() {
                self.reset_timer();
                self.backup_commit(commit);
                self.send_prepare_ok();
            }
            return;
        }
        self.leave_primary_for(view);
        let chunk = crate::messages::StateChunk {
            start,
            entries,
            commit,
            synced: true,
        };
        if self.adopt_chunk(view, &chunk) {
            self.status = Status::Normal;
            self.vc = ViewChangeState::default();
            self.recovery = None;
            self.reset_timer();
            self.send_prepare_ok();
        } else {
            self.join_normal_view(view);
            self.reset_timer();
            self.request_state();
        }
    }
}
