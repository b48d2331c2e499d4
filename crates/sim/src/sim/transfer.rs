//! Leader transfer as a fault kind (`--faults …,transfer`): an operator asks whoever leads to
//! hand leadership to a random other voter (etcd's `move-leader`), at random moments of the
//! fault window, while the clients, crashes and partitions run. A hand-off must never cost an
//! acknowledged write (the linearizability checker and the agreement check judge that); the
//! counts of hand-offs started and completed (the target leads within the bound) say whether
//! they happened at all.
//!
//! Draws come from a stream of their own, so turning transfers on leaves a seed's fault
//! schedule and workload as they were.

use super::{Ev, Sim};
use crate::TICK_US;
use crate::trace::TraceKind;
use synod_core::{Engine, NodeId, SplitMix64, leader_transfer_ticks};

/// Pause between two transfer requests.
const GAP_MIN_US: u64 = 300_000;
const GAP_MAX_US: u64 = 1_200_000;
/// How often a hand-off under way is checked for completion.
const CHECK_EVERY_US: u64 = 2 * TICK_US;

/// Mover events.
#[derive(Debug)]
pub enum MoverEv {
    /// Ask the leader to hand off now.
    Ask,
    /// Has the hand-off from `from` to `to` (asked at `asked_us`) completed?
    Check {
        from: NodeId,
        to: NodeId,
        asked_us: u64,
    },
}

/// The transfer operator's state in one run.
#[derive(Debug)]
pub struct Mover {
    pub enabled: bool,
    rng: SplitMix64,
    /// Hand-offs a leader accepted to start.
    pub started: u64,
    /// Of those, the ones whose target led within the bound.
    pub completed: u64,
    /// Requests the leader refused (not ready, a membership change made the target unknown…).
    pub refused: u64,
}

impl Mover {
    pub fn new(seed: u64, enabled: bool) -> Self {
        Mover {
            enabled,
            rng: SplitMix64::fork(seed, 11),
            started: 0,
            completed: 0,
            refused: 0,
        }
    }
}

impl<E: Engine> Sim<E> {
    pub(super) fn mover_start(&mut self) {
        if !self.mover.enabled {
            return;
        }
        let first = self.mover.rng.range(GAP_MIN_US, GAP_MAX_US);
        self.at(first, Ev::Mover(MoverEv::Ask));
    }

    pub(super) fn mover_event(&mut self, ev: MoverEv) {
        match ev {
            MoverEv::Ask => {
                self.mover_ask();
                let next = self.now_us + self.mover.rng.range(GAP_MIN_US, GAP_MAX_US);
                if next < self.heal_at_us {
                    self.at(next, Ev::Mover(MoverEv::Ask));
                }
            }
            MoverEv::Check { from, to, asked_us } => self.mover_check(from, to, asked_us),
        }
    }

    /// The live, unstalled member that says it leads (the highest term among several).
    fn mover_leader(&self) -> Option<NodeId> {
        self.statuses()
            .into_iter()
            .filter(|(id, s)| s.leader == Some(*id) && self.members.contains(id))
            .filter(|(id, _)| !self.is_stalled(*id))
            .max_by_key(|(id, s)| (s.term, *id))
            .map(|(id, _)| id)
    }

    fn mover_ask(&mut self) {
        let Some(from) = self.mover_leader() else {
            return;
        };
        let targets = self.others(&[from]);
        if targets.is_empty() {
            return;
        }
        let to = targets[self.mover.rng.below(targets.len() as u64) as usize];
        let i = self.idx(from);
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return;
        };
        let r = engine.transfer_leadership(Some(to));
        let note = match &r {
            Ok(_) => format!("operator: transfer leadership n{from} → n{to}"),
            Err(e) => format!("operator: transfer n{from} → n{to} refused: {e}"),
        };
        self.drain(from, TraceKind::Note(note));
        if r.as_ref().is_ok_and(|t| *t != to) {
            panic!("a transfer to n{to} went to another member: {r:?}");
        }
        if r.is_err() {
            self.mover.refused += 1;
            return;
        }
        self.mover.started += 1;
        let asked_us = self.now_us;
        self.at(
            self.now_us + CHECK_EVERY_US,
            Ev::Mover(MoverEv::Check { from, to, asked_us }),
        );
    }

    /// Completed once the target's own status says it leads; given up after the engine's
    /// bound (plus a heartbeat round of slack for the last messages).
    fn mover_check(&mut self, from: NodeId, to: NodeId, asked_us: u64) {
        let i = self.idx(to);
        let leads = self.nodes[i]
            .engine
            .as_ref()
            .is_some_and(|e| e.status().leader == Some(to));
        if leads {
            self.mover.completed += 1;
            return;
        }
        let bound_ticks =
            leader_transfer_ticks(&self.nodes[i].config) + 2 * self.cfg.election_timeout_ticks;
        if self.now_us > asked_us + bound_ticks * TICK_US {
            return;
        }
        self.at(
            self.now_us + CHECK_EVERY_US,
            Ev::Mover(MoverEv::Check { from, to, asked_us }),
        );
    }
}
