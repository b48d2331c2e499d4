//! Deleting keys for real: the garbage collection of tombstones (CASPaxos §2.3.3 "Deletion"),
//! adapted so that no proposer has to be contacted.
//!
//! A delete (or a CAS whose action is delete, or a read of a key nobody wrote) leaves a
//! *tombstone*: a register whose accepted value is "absent". The tombstone must stay until
//! forgetting it is indistinguishable from keeping it; otherwise a stale accepted value on a
//! minority could win a later prepare and resurrect the key. The paper's procedure and ours:
//!
//! 1. **Replicate the tombstone everywhere.** A GC round runs the identity change function on
//!    the key with a fresh ballot `g`, and requires an Accepted from *every* acceptor, not a
//!    quorum. If the prepare phase finds a live value, someone wrote the key again: the
//!    candidate is dropped and nothing is accepted. After step 1 every acceptor's accepted
//!    ballot is `>= g` (accepted ballots only grow), and those at exactly `g` hold ∅.
//! 2. **Invalidate proposers' caches and advance their counters past the tombstone.** The
//!    paper contacts each proposer to flush its one-round-trip cache and raise its counter
//!    (and bumps an "age" so acceptors refuse older proposers). We get the same effect without
//!    contacting anyone: every acceptor has promised `>= g`, so any cached "prepared" ballot
//!    below `g` is already refused, and step 3 keeps that refusal after the key is forgotten.
//!    A proposer whose ballot is refused learns the promise from the Nack and raises its
//!    counter past it.
//! 3. **Acceptors forget the key.** The GC sends `Drop{key, g}`; an acceptor removes the key
//!    only if it still holds exactly the tombstone accepted at `g` (a newer write keeps it),
//!    and raises its acceptor-wide *floor* to the key's promise. An absent key is read as
//!    "promised at the floor, nothing accepted". Forgetting the accepted pair (g, ∅) is safe
//!    because every other acceptor's accepted ballot is `>= g`: the proposer's "highest
//!    accepted" choice never needed to compare against anything below `g`, and ∅ is what a
//!    promise reporting nothing means anyway. Keeping the promise as the floor is what stops a
//!    delayed Accept from before the delete (ballot `< g`) from being accepted on the now-empty
//!    register — the job the paper's proposer ages do. Ballots are unique across keys (one
//!    counter per proposer, see `ballot.rs`), so a floor raised by one key cannot admit a
//!    stale message on another.
//!
//! Drops are fire-and-forget: an acceptor that misses one keeps a harmless tombstone (a later
//! GC round on the key re-sends it). A GC round that cannot reach every acceptor (one is down)
//! fails and is retried after [`GC_RETRY_TICKS`].
//!
//! **Who collects.** The proposer that completed a round leaving a tombstone queues the key;
//! after a restart the node re-queues the tombstones whose accepted ballot it issued. GC
//! candidates are volatile and bounded ([`GC_CANDIDATES_MAX`]); a tombstone that misses the
//! queue is only garbage, never a safety problem.
//!
//! **Exactly-once and GC.** A tombstone carries the saved replies of the writes that produced
//! it; once dropped, a retried delete would run again (answering `deleted: 0`). A tombstone is
//! therefore collected only after [`GcQueue::delay_ticks`] (a few request timeouts), the window
//! within which retried deletes are guaranteed exactly-once.
//!
//! The window must be measured from the *last* write the tombstone carries a reply for, not
//! from whenever this proposer happened to queue the key. A candidate therefore remembers the
//! register's write count ([`crate::messages::RegisterValue::writes`], bumped by every write
//! that saves a reply) at the moment it was queued. If the GC round's prepare finds a tombstone
//! with another count, some proposer wrote (and deleted) the key since: the candidate is re-armed
//! with a fresh window instead of being collected. (Found by the simulator: a proposer that had
//! queued a key for an old tombstone collected a new one 0.8 s after a client's delete was
//! applied, and the client's retry then ran the delete a second time.)

use std::collections::BTreeMap;
use synod_core::kv::Key;

/// Most tombstones queued for collection at one node; more are left in place.
pub const GC_CANDIDATES_MAX: usize = 4096;
/// How often the collector looks for due candidates.
pub const GC_INTERVAL_TICKS: u64 = 16;
/// Most GC rounds started per interval, so collection never crowds out client rounds.
pub const GC_ROUNDS_PER_INTERVAL_MAX: usize = 8;
/// After a failed GC round (an acceptor unreachable, a conflict), wait this long.
pub const GC_RETRY_TICKS: u64 = 200;
/// Request timeouts a tombstone is kept at least (the exactly-once window for deletes).
pub const GC_DELAY_REQUEST_TIMEOUTS: u64 = 8;

/// One tombstone waiting to be collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Candidate {
    due_tick: u64,
    /// The register's write count when the tombstone was queued: identifies which tombstone
    /// the window was started for.
    writes: u64,
}

/// Tombstones waiting to be collected, with the tick each becomes due.
#[derive(Clone, Debug)]
pub struct GcQueue {
    candidates: BTreeMap<Key, Candidate>,
    delay_ticks: u64,
}

impl GcQueue {
    pub fn new(request_timeout_ticks: u64) -> Self {
        GcQueue {
            candidates: BTreeMap::new(),
            delay_ticks: request_timeout_ticks
                .saturating_mul(GC_DELAY_REQUEST_TIMEOUTS)
                .max(1),
        }
    }

    pub fn delay_ticks(&self) -> u64 {
        self.delay_ticks
    }

    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.candidates.contains_key(key)
    }

    /// A round left a tombstone with write count `writes` on `key`: collect it after the
    /// exactly-once window. A newer tombstone restarts the window.
    pub fn note_tombstone(&mut self, key: &[u8], writes: u64, now_tick: u64) {
        let c = Candidate {
            due_tick: now_tick.saturating_add(self.delay_ticks),
            writes,
        };
        if let Some(d) = self.candidates.get_mut(key) {
            *d = c;
        } else if self.candidates.len() < GC_CANDIDATES_MAX {
            self.candidates.insert(key.to_vec(), c);
        }
    }

    /// True when the GC round found the very tombstone whose window this candidate timed, so
    /// it may be collected. False means the key was written since (or is not a candidate).
    pub fn is_same_tombstone(&self, key: &[u8], writes: u64) -> bool {
        self.candidates.get(key).is_some_and(|c| c.writes == writes)
    }

    /// The key holds a live value again (or was collected): nothing to do.
    pub fn forget(&mut self, key: &[u8]) {
        self.candidates.remove(key);
    }

    /// A GC round failed; try again later.
    pub fn retry_later(&mut self, key: &[u8], now_tick: u64) {
        if let Some(c) = self.candidates.get_mut(key) {
            c.due_tick = now_tick.saturating_add(GC_RETRY_TICKS);
        }
    }

    /// Candidates due at `now_tick`, in key order, at most `limit`, for which `idle` holds.
    pub fn due(&self, now_tick: u64, limit: usize, idle: impl Fn(&[u8]) -> bool) -> Vec<Key> {
        self.candidates
            .iter()
            .filter(|(k, c)| c.due_tick <= now_tick && idle(k))
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_wait_for_the_exactly_once_window() {
        let mut q = GcQueue::new(10);
        let window = 10 * GC_DELAY_REQUEST_TIMEOUTS;
        q.note_tombstone(b"a", 3, 0);
        assert!(q.due(window - 1, 8, |_| true).is_empty());
        assert_eq!(q.due(window, 8, |_| true), vec![b"a".to_vec()]);
        assert!(q.due(window, 8, |_| false).is_empty(), "busy keys wait");
        assert!(q.is_same_tombstone(b"a", 3));
        assert!(!q.is_same_tombstone(b"a", 4), "written since it was queued");
        q.retry_later(b"a", window);
        assert!(q.due(window + 1, 8, |_| true).is_empty());
        q.forget(b"a");
        assert!(q.is_empty());
    }
}
