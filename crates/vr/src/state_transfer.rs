//! §5.2 state transfer (GetState / NewState), and snapshots for what a responder compacted.
//!
//! Who answers what:
//! * the normal primary answers with its log from the requested position: a *synced* chunk
//!   (see [`StateChunk::synced`]) reaching at least its view's base, at most one batch beyond
//!   it — or, for a requester more than a batch behind the base, committed entries only, so
//!   every answer is bounded and the requester converges in steps;
//! * any other replica in the same view answers with committed entries only (a new primary
//!   collecting what it lacks during a view change asks a DoViewChange sender).
//!
//! A requester whose position is compacted at the responder gets the responder's snapshot
//! ([`ProtocolEvent::SendSnapshot`]) instead; it then asks again from its new commit-number.

use crate::messages::{Message, StateChunk, View};
use crate::{Status, Vr};
use synod_core::{NodeId, ProtocolEvent, SnapshotAcceptance, TransferStatus};

impl Vr {
    /// A normal backup that is unsynced (asks from its commit-number) or has a gap (asks from
    /// its op-number) asks the primary, at most once per heartbeat.
    pub(crate) fn request_state(&mut self) {
        if self.status != Status::Normal || self.primary.is_some() {
            return;
        }
        let from = if self.synced() {
            self.store.log_len()
        } else {
            self.store.commit()
        };
        let p = self.primary_of(self.store.view());
        if p == self.me() {
            // Only reachable with the planted amnesia bug (a primary of its own view that did
            // not take up the role); there is nobody to ask.
            return;
        }
        self.send_get_state(p, from, false);
    }

    pub(crate) fn send_get_state(&mut self, to: NodeId, op_number: u64, force: bool) {
        let hb = self.config.heartbeat_ticks.max(1);
        if !force
            && self
                .last_get_state_tick
                .is_some_and(|t| self.now_ticks < t + hb)
        {
            return;
        }
        self.last_get_state_tick = Some(self.now_ticks);
        let view = self.store.view();
        self.send(to, Message::GetState { view, op_number });
    }

    pub(crate) fn handle_get_state(
        &mut self,
        from: NodeId,
        view: View,
        op_number: u64,
        transfers: &dyn TransferStatus<View>,
    ) {
        if view != self.store.view() {
            return;
        }
        if op_number < self.store.compacted_idx() {
            if !transfers.sending_to(from, view) {
                self.push_event(ProtocolEvent::SendSnapshot { to: from });
            }
            return;
        }
        if let Some(chunk) = self.state_chunk(op_number) {
            self.send(from, Message::NewState { view, chunk });
        }
    }

    /// What this replica can tell a requester at position `from` (not compacted here).
    pub(crate) fn state_chunk(&self, from: u64) -> Option<StateChunk> {
        let len = self.store.log_len();
        let commit = self.store.commit();
        let batch = self.batch_max();
        if from > len || from < self.store.compacted_idx() {
            return None;
        }
        let (end, synced) = match &self.primary {
            Some(p) if from + batch >= p.view_base => {
                (len.min((from + batch).max(p.view_base)), true)
            }
            Some(_) if from < commit => (commit.min(from + batch), false),
            // The view began with more than a batch uncommitted: send up to the base at once.
            Some(p) => (p.view_base, true),
            None if from < commit => (commit.min(from + batch), false),
            None => return None,
        };
        Some(StateChunk {
            start: from,
            entries: self.store.slice(from, end),
            commit,
            synced,
        })
    }

    pub(crate) fn handle_new_state(&mut self, from: NodeId, view: View, chunk: StateChunk) {
        if view != self.store.view() {
            return;
        }
        match self.status {
            Status::Normal if self.primary.is_some() => {}
            Status::Normal if chunk.synced && from == self.primary_of(view) => {
                self.reset_timer();
                self.take_primary_chunk(view, &chunk);
            }
            Status::Normal => {
                if self.learn_committed_chunk(&chunk) {
                    self.last_get_state_tick = None;
                    self.request_state();
                }
            }
            Status::ViewChange => {
                if self.learn_committed_chunk(&chunk) {
                    self.last_get_state_tick = None;
                    self.try_start_view();
                }
            }
            Status::Recovering => {}
        }
    }

    /// A synced chunk from the primary of our view: extends a synced log like a Prepare, or
    /// makes an unsynced replica synced (one Replace record: the new view's log and the
    /// last-normal view together).
    fn take_primary_chunk(&mut self, view: View, chunk: &StateChunk) {
        if self.synced() {
            let len = self.store.log_len();
            if chunk.start > len {
                return;
            }
            let skip = (len - chunk.start) as usize;
            if chunk.entries.len() > skip {
                let new = chunk.entries[skip..].to_vec();
                self.store.append(new, &mut self.out.records);
            }
        } else if !self.adopt_chunk(view, chunk) {
            // It starts above our commit-number: learn committed entries first.
            if self.learn_committed_chunk(chunk) {
                self.last_get_state_tick = None;
            }
            self.request_state();
            return;
        }
        self.backup_commit(chunk.commit);
        self.send_prepare_ok();
    }

    /// Makes the log `[0, commit) ++ chunk[commit..]` in `view` with last-normal view `view`,
    /// if the chunk starts at or below our commit-number (our log agrees with every log there)
    /// and reaches it.
    pub(crate) fn adopt_chunk(&mut self, view: View, chunk: &StateChunk) -> bool {
        let c = self.store.commit();
        if !chunk.synced || chunk.start > c || chunk.end() < c {
            return false;
        }
        let entries = chunk.entries[(c - chunk.start) as usize..].to_vec();
        self.store
            .replace(view, view, c, entries, &mut self.out.records);
        let len = self.store.log_len();
        self.store.raise_commit(chunk.commit.min(len));
        true
    }

    /// Takes the committed entries of `chunk` beyond our commit-number. True if any.
    pub(crate) fn learn_committed_chunk(&mut self, chunk: &StateChunk) -> bool {
        let c = self.store.commit();
        let end = chunk.end().min(chunk.commit);
        if chunk.start > c || end <= c {
            return false;
        }
        let entries =
            chunk.entries[(c - chunk.start) as usize..(end - chunk.start) as usize].to_vec();
        self.store
            .learn_committed(c, entries, &mut self.out.records);
        true
    }

    /// Snapshot chunks: from the primary of our view (or, recovering, of the view it names);
    /// during a view change from whom the new primary asked; never to a normal primary.
    pub(crate) fn snapshot_acceptance(&self, from: NodeId, term: View) -> SnapshotAcceptance {
        let view = self.store.view();
        match self.status {
            Status::Recovering if term >= view && from == self.primary_of(term) => {
                SnapshotAcceptance::Receive
            }
            _ if term != view => SnapshotAcceptance::Ignore,
            Status::Normal if self.primary.is_some() => SnapshotAcceptance::NotNeeded,
            Status::Normal if from == self.primary_of(view) => SnapshotAcceptance::Receive,
            Status::ViewChange if self.vc.fetch_from == Some(from) => SnapshotAcceptance::Receive,
            _ => SnapshotAcceptance::Ignore,
        }
    }

    /// A snapshot was installed (and checkpointed): carry on from the new commit-number.
    pub(crate) fn after_snapshot_installed(&mut self) {
        match self.status {
            Status::Recovering => self.send_recovery(),
            Status::Normal if self.primary.is_some() => {}
            Status::Normal if self.synced() => self.send_prepare_ok(),
            Status::Normal => {
                self.last_get_state_tick = None;
                self.request_state();
            }
            Status::ViewChange => {
                self.last_get_state_tick = None;
                self.try_start_view();
            }
        }
    }
}
