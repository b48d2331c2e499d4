//! §4.1 normal operation: the primary batches proposals into Prepares, counts PrepareOks and
//! raises the commit-number; backups append Prepares that leave no gap and answer PrepareOk;
//! Commit is the heartbeat. Also how a replica joins a view it learns is already normal.

use crate::messages::{Message, View};
use crate::{Status, UNCOMMITTED_BATCHES_MAX, Vr};
use std::collections::BTreeMap;
use synod_core::{Command, NodeId, PlantedBug, ProtocolEvent, TransferStatus};

/// The primary's view of one backup in the current view.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Where the StartView to this backup starts: its commit-number as its DoViewChange
    /// reported it (or ours, when it sent none). Never above its commit-number, so it can
    /// adopt the StartView without a state transfer.
    pub sv_start: u64,
    /// Entries below this were sent to it in this view.
    pub sent: u64,
    /// The largest op-number it acknowledged in this view; `None` until its first PrepareOk
    /// (it may have missed the StartView).
    pub acked: Option<u64>,
    /// The commit-number last sent to it.
    pub commit_sent: u64,
    /// It sent Recovery since its last PrepareOk: no hand-off to it (`transfer.rs`).
    pub recovering: bool,
}

/// What only the normal primary of a view keeps.
#[derive(Debug)]
pub struct PrimaryState {
    /// The op-number the primary started the view with: every log whose last-normal view is
    /// this view must reach at least this far (it holds everything committed before the view).
    pub view_base: u64,
    pub progress: BTreeMap<NodeId, Progress>,
}

impl Vr {
    /// Becomes the normal primary of the current view with the log just installed, and sends
    /// StartView to every backup. `known_commits` are the backups' commit-numbers from their
    /// DoViewChange messages.
    pub(crate) fn become_primary(&mut self, known_commits: &BTreeMap<NodeId, u64>) {
        assert_eq!(self.primary_of(self.store.view()), self.me());
        assert_eq!(self.store.last_normal(), self.store.view());
        self.status = crate::Status::Normal;
        self.vc = Default::default();
        self.reads.clear();
        let len = self.store.log_len();
        let commit = self.store.commit();
        let progress = self
            .config
            .peers()
            .map(|p| {
                let sv_start = known_commits.get(&p).copied().unwrap_or(commit);
                let g = Progress {
                    sv_start,
                    sent: len,
                    acked: None,
                    commit_sent: commit,
                    recovering: false,
                };
                (p, g)
            })
            .collect();
        self.primary = Some(PrimaryState {
            view_base: len,
            progress,
        });
        let peers: Vec<NodeId> = self.config.peers().collect();
        for p in peers {
            self.send_start_view(p);
        }
        self.try_commit();
    }

    /// StartView (§4.2) to `peer`: the log from its known commit-number — but never more than
    /// one batch before the view's base, so the message stays bounded; a backup further
    /// behind catches up by state transfer — to the end.
    pub(crate) fn send_start_view(&mut self, peer: NodeId) {
        let batch = self.batch_max();
        let len = self.store.log_len();
        let compacted = self.store.compacted_idx();
        let commit = self.store.commit();
        let view = self.store.view();
        let Some(p) = self.primary.as_mut() else {
            return;
        };
        let Some(g) = p.progress.get_mut(&peer) else {
            return;
        };
        let start = g
            .sv_start
            .max(p.view_base.saturating_sub(batch))
            .max(compacted)
            .min(len);
        g.sent = len;
        g.commit_sent = commit;
        let entries = self.store.slice(start, len);
        self.send(
            peer,
            Message::StartView {
                view,
                start,
                entries,
                commit,
            },
        );
    }

    /// Stops being the primary (a newer view). Buffered proposals are dropped unless this
    /// replica leads `next_view` too: their origins re-forward.
    pub(crate) fn leave_primary_for(&mut self, next_view: View) {
        self.primary = None;
        self.reads.clear();
        self.heartbeat_due = false;
        if self.primary_of(next_view) != self.me() {
            self.proposals.clear();
        }
    }

    /// §4.1 at the primary, once per `Engine::ready`: append buffered proposals (one batch)
    /// and send every backup what it lacks.
    ///
    /// Adaptive batching as OmniPaxos does it: while every backup still has a Prepare
    /// unacknowledged, new proposals wait for the first PrepareOk (or a full batch, or a
    /// heartbeat), so under load each round trip carries everything that arrived during the
    /// previous one.
    pub(crate) fn primary_flush(&mut self) {
        let batch = self.batch_max();
        let Some(p) = &self.primary else {
            return;
        };
        let all_busy = !p.progress.is_empty()
            && p.progress
                .values()
                .all(|g| g.acked.is_none_or(|a| a < g.sent));
        if all_busy && !self.heartbeat_due && (self.proposals.len() as u64) < batch {
            return;
        }
        self.append_proposals();
        self.try_commit();
        let heartbeat = std::mem::take(&mut self.heartbeat_due);
        let peers: Vec<NodeId> = self.config.peers().collect();
        for peer in peers {
            self.send_to_backup(peer, heartbeat);
        }
    }

    /// Appends at most one batch of proposals, and only while fewer than
    /// [`UNCOMMITTED_BATCHES_MAX`] batches are uncommitted.
    fn append_proposals(&mut self) {
        let batch = self.batch_max();
        let uncommitted = self.store.log_len() - self.store.commit();
        let room = (UNCOMMITTED_BATCHES_MAX * batch).saturating_sub(uncommitted);
        let take = (room.min(batch) as usize).min(self.proposals.len());
        if take == 0 {
            return;
        }
        let entries: Vec<Command> = self.proposals.drain(..take).collect();
        self.store.append(entries, &mut self.out.records);
    }

    /// New entries, or on a heartbeat whatever the backup has not acknowledged (a lost
    /// Prepare, a lost StartView), or else a Commit.
    fn send_to_backup(&mut self, peer: NodeId, heartbeat: bool) {
        let len = self.store.log_len();
        let commit = self.store.commit();
        let Some(g) = self
            .primary
            .as_ref()
            .and_then(|p| p.progress.get(&peer))
            .copied()
        else {
            return;
        };
        if heartbeat && g.acked.is_none() {
            self.send_start_view(peer);
            return;
        }
        let from = match g.acked {
            Some(a) if heartbeat && a < g.sent => a,
            _ => g.sent,
        };
        if from < len && from >= self.store.compacted_idx() {
            self.send_prepare(peer, from);
        } else if heartbeat && g.recovering {
            // An empty Prepare rather than a Commit: a backup that recovered answers it with a
            // PrepareOk, which clears the flag even in an idle group whose first PrepareOk
            // from it was lost (a Commit gets no answer; a recovering backup ignores both).
            self.send_prepare(peer, len);
        } else if heartbeat || g.commit_sent < commit {
            self.send_commit(peer);
        }
    }

    /// Prepare with up to one batch from position `from`. It leaves *early* (before this
    /// batch's records are durable): see the crate docs, "early Prepares".
    pub(crate) fn send_prepare(&mut self, peer: NodeId, from: u64) {
        let batch = self.batch_max();
        let len = self.store.log_len();
        let commit = self.store.commit();
        let view = self.store.view();
        let end = len.min(from + batch);
        let entries = self.store.slice(from, end);
        if let Some(g) = self
            .primary
            .as_mut()
            .and_then(|p| p.progress.get_mut(&peer))
        {
            g.sent = g.sent.max(end);
            g.commit_sent = commit;
        }
        let m = Message::Prepare {
            view,
            start: from,
            entries,
            commit,
        };
        self.out.early.push((peer, m));
    }

    fn send_commit(&mut self, peer: NodeId) {
        let commit = self.store.commit();
        let view = self.store.view();
        if let Some(g) = self
            .primary
            .as_mut()
            .and_then(|p| p.progress.get_mut(&peer))
        {
            g.commit_sent = commit;
        }
        self.send(peer, Message::Commit { view, commit });
    }

    /// §4.1: the commit-number is the largest op-number that f + 1 replicas (the primary
    /// included) hold in this view. The primary's own op-number counts: its appends are
    /// durable before it handles any PrepareOk (see the crate docs), and with f ≥ 1 the
    /// (f + 1)-th largest value is never the primary's alone.
    pub(crate) fn try_commit(&mut self) {
        let len = self.store.log_len();
        let Some(p) = &self.primary else {
            return;
        };
        let mut held: Vec<u64> = p
            .progress
            .values()
            .map(|g| g.acked.unwrap_or(0).min(len))
            .collect();
        held.push(len);
        held.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = if self.config.bug(PlantedBug::VrCommitTooEarly) {
            // PLANTED BUG: commit with f replicas (f − 1 PrepareOks) instead of f + 1.
            self.f.max(1)
        } else {
            self.f + 1
        };
        let k = held[quorum - 1];
        let before = self.store.commit();
        self.store.raise_commit(k);
        assert!(self.store.commit() >= before, "commit-number went back");
    }

    pub(crate) fn handle_prepare_ok(&mut self, from: NodeId, view: View, op_number: u64) {
        let len = self.store.log_len();
        if view != self.store.view() {
            return;
        }
        let Some(g) = self
            .primary
            .as_mut()
            .and_then(|p| p.progress.get_mut(&from))
        else {
            return;
        };
        let op = op_number.min(len);
        g.acked = Some(g.acked.map_or(op, |a| a.max(op)));
        g.sent = g.sent.max(op);
        g.recovering = false;
        self.try_commit();
    }

    /// §4.1 at a backup. A Prepare of a view this replica is not normal in yet proves that
    /// view normal: it joins it and asks for state (§5.2).
    pub(crate) fn handle_prepare(
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
        self.join_normal_view(view);
        self.reset_timer();
        if !self.synced() {
            self.request_state();
            return;
        }
        let len = self.store.log_len();
        if start > len {
            if self.config.bug(PlantedBug::VrPrepareWithGap) {
                // PLANTED BUG: take the entries at our own end anyway, leaving a hole.
                self.store.append(entries, &mut self.out.records);
            } else {
                // A gap: an earlier Prepare was lost.
                self.request_state();
                return;
            }
        } else {
            // The overlap is identical: our log is a prefix of the primary's in this view.
            let skip = (len - start) as usize;
            if entries.len() > skip {
                let new = entries.into_iter().skip(skip).collect();
                self.store.append(new, &mut self.out.records);
            }
        }
        self.backup_commit(commit);
        self.send_prepare_ok();
    }

    /// A synced backup's commit-number follows the primary's, up to its own op-number (its log
    /// is a prefix of the primary's).
    pub(crate) fn backup_commit(&mut self, commit: u64) {
        if self.synced() {
            let c = commit.min(self.store.log_len());
            self.store.raise_commit(c);
        }
    }

    pub(crate) fn send_prepare_ok(&mut self) {
        let view = self.store.view();
        let op_number = self.store.log_len();
        let p = self.primary_of(view);
        if p != self.me() && self.synced() {
            self.send(p, Message::PrepareOk { view, op_number });
        }
    }

    pub(crate) fn handle_commit(&mut self, from: NodeId, view: View, commit: u64) {
        if view < self.store.view() || from != self.primary_of(view) {
            return;
        }
        self.join_normal_view(view);
        self.reset_timer();
        if self.synced() {
            self.backup_commit(commit);
        } else {
            self.request_state();
        }
    }

    /// A message from the primary of `view` (≥ ours) shows that view is normal. If this
    /// replica is not normal in it yet (a newer view, or the view change it took part in
    /// completed without its StartView arriving), it becomes normal there *unsynced*: its log
    /// after the commit-number is not trusted in `view` until state transfer replaces it
    /// (§5.2; see the crate docs for why the truncation is deferred).
    pub(crate) fn join_normal_view(&mut self, view: View) {
        assert!(view >= self.store.view(), "joining an older view {view}");
        if view == self.store.view() && self.status == Status::Normal {
            return;
        }
        self.leave_primary_for(view);
        if self.config.bug(PlantedBug::VrSkipTruncateOnStateTransfer) {
            // PLANTED BUG: keep the uncommitted suffix and take it as the new view's log.
            let len = self.store.log_len();
            self.store
                .replace(view, view, len, Vec::new(), &mut self.out.records);
        } else {
            self.store.raise_view(view, &mut self.out.records);
        }
        self.status = Status::Normal;
        self.vc = Default::default();
        self.recovery = None;
        self.reset_timer();
    }

    /// Primary, every heartbeat: a backup whose next needed entry is compacted gets the
    /// snapshot instead (unless one is already on its way).
    pub(crate) fn snapshot_lagging_backups(&mut self, transfers: &dyn TransferStatus<View>) {
        let compacted = self.store.compacted_idx();
        let view = self.store.view();
        let Some(p) = &self.primary else {
            return;
        };
        let lagging: Vec<NodeId> = p
            .progress
            .iter()
            .filter(|(_, g)| g.acked.is_some_and(|a| a < compacted))
            .map(|(peer, _)| *peer)
            .filter(|peer| !transfers.sending_to(*peer, view))
            .collect();
        for to in lagging {
            self.push_event(ProtocolEvent::SendSnapshot { to });
        }
    }

    /// The replica layer delivered our snapshot at `idx` to `to`: continue from there.
    pub(crate) fn on_snapshot_delivered(&mut self, to: NodeId, term: View, idx: u64) {
        if self.primary.is_none() || term != self.store.view() {
            return;
        }
        if idx < self.store.log_len() && idx >= self.store.compacted_idx() {
            self.send_prepare(to, idx);
        } else {
            self.send_commit(to);
        }
    }
}
