//! The durable state of a Sequence Paxos replica (paper §4: promised ballot, accepted round,
//! log, decided index) and the [`Record`]s that carry it to disk.
//!
//! Every mutation goes through a method here that changes the in-memory view *and* pushes the
//! record describing it, so the two cannot drift apart, and [`DurableState::replay`] rebuilds
//! exactly the same view from the records on restart. A log rewrite (AcceptSync) is one record
//! holding both the new accepted round and the new suffix, so a torn write can never leave a
//! log that claims a round it did not accept in.

use crate::ballot::Ballot;
use crate::messages::{Entry, Origin};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use synod_core::DurableRecord;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The promised ballot went up to this.
    Promised(Ballot),
    /// The log was truncated to `from_idx` entries, `entries` appended, and the accepted round
    /// set to `accepted_round` (AcceptSync, or the leader adopting the best promise).
    Sync {
        accepted_round: Ballot,
        from_idx: u64,
        entries: Vec<Entry>,
    },
    /// `entries` appended at position `from_idx` (= the log length), same accepted round.
    Append { from_idx: u64, entries: Vec<Entry> },
    /// The decided index went up to this (written lazily: it can always be relearned).
    Decided(u64),
    /// This server restarted; origins it creates from now on carry this incarnation.
    Incarnation(u64),
}

impl DurableRecord for Record {}

/// The in-memory view of what is on disk.
#[derive(Debug, Default)]
pub struct DurableState {
    pub promised: Ballot,
    pub accepted_round: Ballot,
    pub log: Vec<Entry>,
    pub decided_idx: u64,
    pub incarnation: u64,
    /// Origins of every entry in `log`: how the leader recognises a re-forwarded command that
    /// is already in the log. Derived, never persisted on its own.
    origins: HashSet<Origin>,
}

impl DurableState {
    /// Rebuilds the state from records in emission order.
    pub fn replay(records: &[Record]) -> Result<Self, String> {
        let mut s = DurableState::default();
        let mut sink = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match r {
                Record::Promised(b) => {
                    if *b < s.promised {
                        return Err(format!("record {i}: promised ballot went back"));
                    }
                    s.promised = *b;
                }
                Record::Sync {
                    accepted_round,
                    from_idx,
                    entries,
                } => {
                    if *from_idx > s.log_len() || *from_idx < s.decided_idx {
                        return Err(format!(
                            "record {i}: sync at {from_idx} outside [{}, {}]",
                            s.decided_idx,
                            s.log_len()
                        ));
                    }
                    s.sync(*accepted_round, *from_idx, entries.clone(), &mut sink);
                }
                Record::Append { from_idx, entries } => {
                    if *from_idx != s.log_len() {
                        return Err(format!(
                            "record {i}: append at {from_idx} but log has {}",
                            s.log_len()
                        ));
                    }
                    s.append(entries.clone(), &mut sink);
                }
                Record::Decided(d) => {
                    if *d > s.log_len() {
                        return Err(format!(
                            "record {i}: decided {d} beyond log {}",
                            s.log_len()
                        ));
                    }
                    s.decided_idx = s.decided_idx.max(*d);
                }
                Record::Incarnation(n) => s.incarnation = s.incarnation.max(*n),
            }
            sink.clear();
        }
        Ok(s)
    }

    pub fn log_len(&self) -> u64 {
        self.log.len() as u64
    }

    pub fn contains_origin(&self, o: &Origin) -> bool {
        self.origins.contains(o)
    }

    /// Entries `[from, to)` (clamped to the log).
    pub fn slice(&self, from: u64, to: u64) -> Vec<Entry> {
        let to = to.min(self.log_len());
        if from >= to {
            return Vec::new();
        }
        self.log[from as usize..to as usize].to_vec()
    }

    pub fn promise(&mut self, b: Ballot, out: &mut Vec<Record>) {
        assert!(
            b >= self.promised,
            "promised ballot must never decrease: {b:?} < {:?}",
            self.promised
        );
        if b > self.promised {
            self.promised = b;
            out.push(Record::Promised(b));
        }
    }

    /// Truncate to `from_idx`, append `entries`, set the accepted round (one record).
    pub fn sync(
        &mut self,
        accepted_round: Ballot,
        from_idx: u64,
        entries: Vec<Entry>,
        out: &mut Vec<Record>,
    ) {
        assert!(
            from_idx >= self.decided_idx && from_idx <= self.log_len(),
            "sync at {from_idx} would drop decided entries (decided {}) or leave a hole (len {})",
            self.decided_idx,
            self.log_len()
        );
        for e in self.log.drain(from_idx as usize..) {
            self.origins.remove(&e.origin);
        }
        for e in &entries {
            self.origins.insert(e.origin);
        }
        self.log.extend(entries.iter().cloned());
        self.accepted_round = accepted_round;
        out.push(Record::Sync {
            accepted_round,
            from_idx,
            entries,
        });
    }

    pub fn append(&mut self, entries: Vec<Entry>, out: &mut Vec<Record>) {
        if entries.is_empty() {
            return;
        }
        let from_idx = self.log_len();
        for e in &entries {
            self.origins.insert(e.origin);
        }
        self.log.extend(entries.iter().cloned());
        out.push(Record::Append { from_idx, entries });
    }

    /// Raises the decided index (never lowers it); the record is written in `ready`.
    pub fn decide(&mut self, idx: u64) {
        assert!(
            idx <= self.log_len(),
            "decided {idx} beyond log length {}",
            self.log_len()
        );
        if idx > self.decided_idx {
            self.decided_idx = idx;
        }
    }
}
