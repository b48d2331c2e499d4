//! §4.3 recovery, and how a replica starts.
//!
//! A replica that never ran (`first_boot`, no storage) starts normal in view 0. Every other
//! start — a restart with its disk, or a wiped disk — is status recovering: it sends
//! Recovery{nonce} to all (again every heartbeat) and takes no part in anything until it has
//! f + 1 RecoveryResponses carrying its nonce, one of them from the primary of the largest
//! view among them, whose log it then adopts. With its disk the replica's own durable state
//! counts as one of the f + 1, and if every response names a view older than its own it
//! starts a view change instead (see the crate docs for why both are safe).

use crate::messages::{Message, StateChunk, View};
use crate::{Status, Vr};
use std::collections::BTreeMap;
use synod_core::{NodeId, PlantedBug, ProtocolEvent, TransferStatus};

#[derive(Debug)]
pub struct RecoveryState {
    /// This start found durable state (checkpoint or records): it counts as a response.
    durable: bool,
    /// Each responder's view and whether it was normal there.
    responses: BTreeMap<NodeId, (View, bool)>,
    /// The latest log a primary sent: (its view, the primary, the chunk).
    primary_chunk: Option<(View, NodeId, StateChunk)>,
}

impl Vr {
    /// Called once from `recover`, after the durable state is rebuilt.
    pub(crate) fn boot(&mut self, durable: bool) {
        if !durable && self.config.first_boot {
            // §4: a new cluster starts normal in view 0 with empty logs. The record makes a
            // restart before anything else was written a restart *with* a disk (it promised
            // nothing yet, so its empty state is all it needs), not a wiped one.
            self.out.records.push(crate::Record::View(0));
            self.status = Status::Normal;
            self.become_initial_primary();
            return;
        }
        if self.config.bug(PlantedBug::VrRecoveringAnswers) {
            // PLANTED BUG: skip recovery and act normal at once in the persisted view with
            // whatever log survived (a primary that sent Prepares early and lost them leads
            // again; a wiped disk answers with an empty log).
            self.status = Status::Normal;
            self.become_initial_primary();
            return;
        }
        self.status = Status::Recovering;
        if !durable {
            // Written first: until recovery completes, what this replica learns does not make
            // its state cover what it promised before it lost it.
            self.store.set_amnesic(true, &mut self.out.records);
        }
        self.recovery = Some(RecoveryState {
            durable,
            responses: BTreeMap::new(),
            primary_chunk: None,
        });
        self.send_recovery();
        self.try_finish_recovery();
    }

    /// Normal at boot: the primary of the view takes up its role with the log it has.
    fn become_initial_primary(&mut self) {
        let view = self.store.view();
        if self.primary_of(view) != self.me() || !self.synced() {
            return;
        }
        let known = BTreeMap::new();
        self.become_primary(&known);
        // Everyone starts with the same empty log on a first boot.
        if let Some(p) = self.primary.as_mut()
            && self.store.log_len() == 0
        {
            for g in p.progress.values_mut() {
                g.acked = Some(0);
            }
        }
    }

    pub(crate) fn send_recovery(&mut self) {
        let nonce = self.config.boot_nonce;
        let commit = self.store.commit();
        self.send_all(Message::Recovery { nonce, commit });
    }

    /// §4.3: answer with our view and status; the primary adds its log from the requester's
    /// commit-number (or pushes a snapshot if it compacted that far). A recovering replica
    /// without its disk knows nothing and stays silent.
    pub(crate) fn handle_recovery(
        &mut self,
        from: NodeId,
        nonce: u64,
        commit: u64,
        transfers: &dyn TransferStatus<View>,
    ) {
        if self.recovery.as_ref().is_some_and(|r| !r.durable) {
            return;
        }
        if let Some(g) = self
            .primary
            .as_mut()
            .and_then(|p| p.progress.get_mut(&from))
        {
            g.recovering = true;
        }
        let view = self.store.view();
        let normal = self.status == Status::Normal;
        let chunk = if self.primary.is_none() {
            None
        } else if commit < self.store.compacted_idx() {
            if !transfers.sending_to(from, view) {
                self.push_event(ProtocolEvent::SendSnapshot { to: from });
            }
            None
        } else {
            self.recovery_chunk(commit)
        };
        let m = Message::RecoveryResponse {
            view,
            nonce,
            normal,
            chunk,
        };
        self.send(from, m);
    }

    /// The primary's log for a recovering replica whose commit-number is `from`: the *whole*
    /// rest of the log (as the paper's RecoveryResponse), never a prefix of it — the replica
    /// may have acknowledged entries up to our op-number before it lost them, and the commit
    /// of those may rest on its acknowledgement. A replica more than a batch behind our
    /// commit-number first gets committed entries one batch at a time, so the message stays
    /// bounded by a batch plus the uncommitted suffix.
    fn recovery_chunk(&self, from: u64) -> Option<StateChunk> {
        let len = self.store.log_len();
        let commit = self.store.commit();
        let batch = self.batch_max();
        if from > len || from < self.store.compacted_idx() {
            return None;
        }
        let (end, synced) = if from + batch >= commit {
            (len, true)
        } else {
            (from + batch, false)
        };
        Some(StateChunk {
            start: from,
            entries: self.store.slice(from, end),
            commit,
            synced,
        })
    }

    pub(crate) fn handle_recovery_response(
        &mut self,
        from: NodeId,
        view: View,
        nonce: u64,
        normal: bool,
        chunk: Option<StateChunk>,
    ) {
        let is_primary = normal && from == self.primary_of(view);
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        if nonce != self.config.boot_nonce {
            return;
        }
        let seen = r.responses.entry(from).or_insert((view, normal));
        if view >= seen.0 {
            *seen = (view, normal);
        }
        if let Some(c) = chunk
            && is_primary
            && r.primary_chunk.as_ref().is_none_or(|(v, _, _)| *v <= view)
        {
            r.primary_chunk = Some((view, from, c));
        }
        self.try_finish_recovery();
    }

    /// With enough responses: adopt the log of the normal primary of the largest view seen;
    /// or, with our disk, when nobody is normal in that view, start (or join) a view change.
    fn try_finish_recovery(&mut self) {
        let own_view = self.store.view();
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        let durable = r.durable;
        let needed = self.f + 1 - usize::from(durable);
        if r.responses.len() < needed {
            return;
        }
        let w = r
            .responses
            .values()
            .map(|(v, _)| *v)
            .max()
            .unwrap_or(own_view)
            .max(own_view);
        let normal_at_w = r.responses.values().any(|(v, normal)| *v == w && *normal);
        let chunk = r
            .primary_chunk
            .take()
            .filter(|(v, _, _)| *v == w)
            .map(|(_, src, c)| (src, c));
        if let Some((src, chunk)) = chunk {
            self.take_recovery_chunk(w, src, &chunk);
        } else if durable && !normal_at_w {
            // Nobody is normal in a view as new as ours (everyone restarted, or we stopped
            // during a view change): join or start a view change rather than wait forever.
            let target = if w > own_view { w } else { own_view + 1 };
            self.start_view_change(target);
        }
    }

    /// The primary of view `w` sent its log: adopt it and become normal, or (more than a
    /// batch behind) take its committed entries and ask again.
    fn take_recovery_chunk(&mut self, w: View, src: NodeId, chunk: &StateChunk) {
        if self.adopt_chunk(w, chunk) {
            self.store.set_amnesic(false, &mut self.out.records);
            self.status = Status::Normal;
            self.recovery = None;
            self.reset_timer();
            self.send_prepare_ok();
        } else if self.learn_committed_chunk(chunk) {
            let nonce = self.config.boot_nonce;
            let commit = self.store.commit();
            self.send(src, Message::Recovery { nonce, commit });
        }
        // Otherwise the chunk starts beyond our commit-number: the primary's snapshot is on
        // its way, and Recovery is sent again once it is installed.
    }
}
