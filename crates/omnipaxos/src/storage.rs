//! The durable state of a Sequence Paxos replica (paper §4: promised ballot, accepted round,
//! log, decided index), log compaction, and the [`Record`]s that carry it to disk.
//!
//! Every mutation goes through a method here that changes the in-memory view *and* pushes the
//! record describing it, so the two cannot drift apart, and [`DurableState::replay`] rebuilds
//! exactly the same view from the records on restart. A log rewrite (AcceptSync) is one record
//! holding both the new accepted round and the new suffix, so a torn write can never leave a
//! log that claims a round it did not accept in.
//!
//! **Compaction.** Log positions are absolute (0-based). Positions below `compacted_idx` are no
//! longer in memory: the replica layer's checkpoint summarises them by the applied state at
//! `compacted_idx`, next to this protocol's [`Checkpoint`] (promise, accepted round, decided
//! index, the log suffix after `compacted_idx`), so storage may drop every record before it.
//! Only decided entries are ever compacted (`compacted_idx <= decided_idx`), so the compacted
//! prefix is the same on every replica and consistent with any accepted round.

use crate::ballot::Ballot;
use serde::{Deserialize, Serialize};
use synod_core::Command as Entry;
use synod_core::CommandLog;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// `true`: this server lost its storage and is repairing from its peers (see `repair.rs`);
    /// `false`: it holds a state it really had (written on a first boot, and when a repair
    /// completes). A restart finding the last one `true` repairs again.
    Amnesic(bool),
}

/// The whole durable state with the log prefix `[0, compacted_idx)` dropped (it lives in the
/// replica layer's checkpoint as applied state).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub promised: Ballot,
    pub accepted_round: Ballot,
    pub compacted_idx: u64,
    pub decided_idx: u64,
    /// The log from `compacted_idx` on.
    pub suffix: Vec<Entry>,
}

/// The in-memory view of what is on disk.
#[derive(Debug, Default)]
pub struct DurableState {
    pub promised: Ballot,
    pub accepted_round: Ballot,
    /// The log; positions below its compacted index live in the replica layer's checkpoint.
    log: CommandLog,
    pub decided_idx: u64,
    /// Lost its storage and not repaired yet: promised ballot, accepted round and log are not
    /// what this server promised and accepted before (see `repair.rs`).
    pub amnesic: bool,
}

impl DurableState {
    /// Rebuilds the state from the last checkpoint and the records after it, in emission order.
    pub fn replay(checkpoint: Option<&Checkpoint>, records: &[Record]) -> Result<Self, String> {
        let mut s = DurableState::default();
        if let Some(c) = checkpoint {
            if c.compacted_idx > c.decided_idx
                || c.decided_idx > c.compacted_idx + c.suffix.len() as u64
            {
                return Err(format!(
                    "checkpoint with compacted {} decided {} and {} log entries",
                    c.compacted_idx,
                    c.decided_idx,
                    c.suffix.len()
                ));
            }
            s.restore(c);
        }
        let mut sink = Vec::new();
        for (i, r) in records.iter().enumerate() {
            s.replay_one(i, r, &mut sink)?;
            sink.clear();
        }
        Ok(s)
    }

    fn replay_one(&mut self, i: usize, r: &Record, sink: &mut Vec<Record>) -> Result<(), String> {
        match r {
            Record::Promised(b) => {
                if *b < self.promised {
                    return Err(format!("record {i}: promised ballot went back"));
                }
                self.promised = *b;
            }
            Record::Sync {
                accepted_round,
                from_idx,
                entries,
            } => {
                if *from_idx > self.log_len() || *from_idx < self.decided_idx {
                    return Err(format!(
                        "record {i}: sync at {from_idx} outside [{}, {}]",
                        self.decided_idx,
                        self.log_len()
                    ));
                }
                self.sync(*accepted_round, *from_idx, entries.clone(), sink);
            }
            Record::Append { from_idx, entries } => {
                if *from_idx != self.log_len() {
                    return Err(format!(
                        "record {i}: append at {from_idx} but log has {}",
                        self.log_len()
                    ));
                }
                self.append(entries.clone(), sink);
            }
            Record::Decided(d) => {
                if *d > self.log_len() {
                    return Err(format!(
                        "record {i}: decided {d} beyond log {}",
                        self.log_len()
                    ));
                }
                self.decided_idx = self.decided_idx.max(*d);
            }
            Record::Amnesic(a) => self.amnesic = *a,
        }
        Ok(())
    }

    /// Replaces the whole state by a checkpoint's.
    fn restore(&mut self, c: &Checkpoint) {
        self.promised = c.promised;
        self.accepted_round = c.accepted_round;
        self.decided_idx = c.decided_idx;
        self.log = CommandLog::from_suffix(c.compacted_idx, &c.suffix);
    }

    pub fn log_len(&self) -> u64 {
        self.log.len()
    }

    /// Marks the state amnesic (lost) or real, with its record.
    pub fn set_amnesic(&mut self, amnesic: bool, out: &mut Vec<Record>) {
        self.amnesic = amnesic;
        out.push(Record::Amnesic(amnesic));
    }

    /// Log positions below this are compacted into the replica layer's checkpoint.
    pub fn compacted_idx(&self) -> u64 {
        self.log.compacted_idx()
    }

    /// The entry at absolute position `idx` (must be in `[compacted_idx, log_len)`).
    pub fn entry(&self, idx: u64) -> &Entry {
        self.log.entry(idx)
    }

    /// Entries `[from, to)` (clamped to the log). `from` must not be compacted.
    pub fn slice(&self, from: u64, to: u64) -> Vec<Entry> {
        self.log.slice(from, to)
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
        self.log.truncate(from_idx);
        self.log.extend(&entries);
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
        self.log.extend(&entries);
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

    /// Drops the log prefix below `idx` (decided and applied into the checkpoint the replica
    /// layer writes) and returns this protocol's part of that checkpoint.
    pub fn compact(&mut self, idx: u64) -> Checkpoint {
        assert!(
            idx >= self.compacted_idx() && idx <= self.decided_idx,
            "compaction to {idx} outside [{}, {}]",
            self.compacted_idx(),
            self.decided_idx
        );
        self.log.compact(idx);
        self.checkpoint()
    }

    /// Installs a snapshot of the decided prefix `[0, idx)` received from a peer: the entries
    /// below `idx` give way to it; those beyond it stay if `keep_suffix` (they were accepted
    /// in `accepted_round`, which the caller keeps), else go too. Also while repairing: the
    /// checkpoint returned has no amnesic mark, so the replica layer writes it as a repairing
    /// one (`LogProtocol::repairing`), whose recovery puts the mark back.
    pub fn install_snapshot(
        &mut self,
        accepted_round: Ballot,
        idx: u64,
        keep_suffix: bool,
    ) -> Checkpoint {
        assert!(
            idx > self.decided_idx,
            "snapshot at {idx} not beyond decided {}",
            self.decided_idx
        );
        if keep_suffix {
            self.log.compact(idx);
        } else {
            self.log.reset(idx);
        }
        self.decided_idx = idx;
        self.accepted_round = accepted_round;
        self.checkpoint_unmarked()
    }

    fn checkpoint(&self) -> Checkpoint {
        // A checkpoint subsumes the `Amnesic(true)` record: an ordinary one must not outlive
        // the repair (only an install writes one while repairing, as a repairing checkpoint).
        assert!(!self.amnesic, "checkpoint of an amnesic state");
        self.checkpoint_unmarked()
    }

    /// The checkpoint of this state, without the amnesic mark.
    fn checkpoint_unmarked(&self) -> Checkpoint {
        Checkpoint {
            promised: self.promised,
            accepted_round: self.accepted_round,
            compacted_idx: self.compacted_idx(),
            decided_idx: self.decided_idx,
            suffix: self.log.suffix(),
        }
    }
}
