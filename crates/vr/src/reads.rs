//! Leadership confirmation for the replica layer's read index (see the crate docs for why it
//! is linearizable).
//!
//! The primary numbers its confirmation rounds with its own sequence `seq` (the replica
//! layer's round ids need not be ordered). A backup's ReadConfirmOk for `seq` shows it was
//! still normal in the view after every round up to `seq` began, so it confirms all of them:
//! the primary keeps only each backup's highest confirmed `seq`.

use crate::Vr;
use crate::messages::{Message, View};
use std::collections::BTreeMap;
use synod_core::{NodeId, ProtocolEvent};

/// Most read rounds awaiting confirmation; beyond it the oldest is forgotten (the replica
/// layer times it out).
pub const READ_ROUNDS_MAX: usize = 4096;

#[derive(Debug, Default)]
pub struct ReadRounds {
    next_seq: u64,
    /// seq → the replica layer's round.
    pending: BTreeMap<u64, u64>,
    /// Highest seq each backup confirmed in this view.
    confirmed: BTreeMap<NodeId, u64>,
}

impl ReadRounds {
    pub fn clear(&mut self) {
        self.pending.clear();
        self.confirmed.clear();
    }
}

impl Vr {
    pub(crate) fn start_read(&mut self, round: u64) -> Option<u64> {
        self.primary.as_ref()?;
        self.reads.next_seq += 1;
        let seq = self.reads.next_seq;
        self.reads.pending.insert(seq, round);
        while self.reads.pending.len() > READ_ROUNDS_MAX {
            self.reads.pending.pop_first();
        }
        let view = self.store.view();
        self.send_all(Message::ReadConfirm { view, seq });
        self.check_reads();
        Some(self.store.log_len())
    }

    /// A backup confirms only while normal in the same view, to that view's primary.
    pub(crate) fn handle_read_confirm(&mut self, from: NodeId, view: View, seq: u64) {
        if self.status != crate::Status::Normal
            || view != self.store.view()
            || from != self.primary_of(view)
        {
            return;
        }
        self.reset_timer();
        self.send(from, Message::ReadConfirmOk { view, seq });
    }

    pub(crate) fn handle_read_confirm_ok(&mut self, from: NodeId, view: View, seq: u64) {
        if self.primary.is_none() || view != self.store.view() {
            return;
        }
        let c = self.reads.confirmed.entry(from).or_insert(0);
        *c = (*c).max(seq);
        self.check_reads();
    }

    /// Rounds confirmed by f backups (f + 1 with the primary) are done.
    fn check_reads(&mut self) {
        let upto = if self.f == 0 {
            u64::MAX
        } else {
            let mut c: Vec<u64> = self.reads.confirmed.values().copied().collect();
            c.sort_unstable_by(|a, b| b.cmp(a));
            match c.get(self.f - 1) {
                Some(s) => *s,
                None => return,
            }
        };
        while let Some((&seq, &round)) = self.reads.pending.first_key_value() {
            if seq > upto {
                break;
            }
            self.reads.pending.pop_first();
            self.push_event(ProtocolEvent::ReadConfirmed { round });
        }
    }

    /// Every heartbeat: ask backups that have not confirmed the latest round again.
    pub(crate) fn resend_read_confirms(&mut self) {
        let Some(&seq) = self.reads.pending.keys().next_back() else {
            return;
        };
        let view = self.store.view();
        let peers: Vec<NodeId> = self
            .config
            .peers()
            .filter(|p| self.reads.confirmed.get(p).is_none_or(|c| *c < seq))
            .collect();
        for p in peers {
            self.send(p, Message::ReadConfirm { view, seq });
        }
    }
}
