//! The durable state of a Sequence Paxos replica (paper §4: promised ballot, accepted round,
//! log, decided index), log compaction, and the [`Record`]s that carry it to disk.
//!
//! Every mutation goes through a method here that changes the in-memory view *and* pushes the
//! record describing it, so the two cannot drift apart, and [`DurableState::replay`] rebuilds
//! exactly the same view from the records on restart. A log rewrite (AcceptSync) is one record
//! holding both the new accepted round and the new suffix, so a torn write can never leave a
//! log that claims a round it did not accept in.
//!
//! **Compaction.** Log positions are absolute (0-based; position `i` is applied as KV index
//! `i + 1`). Positions below `compacted_idx` are no longer in memory: they are summarised by
//! the KV store at applied index `compacted_idx`, which lives in a [`Checkpoint`] record. A
//! checkpoint holds everything recovery needs (promise, accepted round, decided index, the log
//! suffix after `compacted_idx`, the KV store), so storage may drop every record before it.
//! Only decided entries are ever compacted (`compacted_idx <= decided_idx`), so the compacted
//! prefix is the same on every replica and consistent with any accepted round.

use crate::ballot::Ballot;
use crate::messages::{Entry, Origin};
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use synod_core::DurableRecord;
use synod_core::kv::KvStore;

/// Origins of compacted entries remembered for deduplicating re-forwarded commands. Session
/// writes are also deduplicated by the KV store's client table; this bound only matters for
/// writes without a session whose forward is retried after this many later entries were
/// compacted (far longer than `request_timeout_ticks` in any sane configuration).
pub const COMPACTED_ORIGINS_MAX: usize = 65_536;

#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Everything recovery needs; subsumes every earlier record (log compaction, or a snapshot
    /// installed from a peer).
    Checkpoint(Box<Checkpoint>),
}

impl DurableRecord for Record {
    fn is_checkpoint(&self) -> bool {
        matches!(self, Record::Checkpoint(_))
    }
}

impl PartialEq for Record {
    /// Records compare by their encoding-relevant content; a checkpoint's KV store compares by
    /// applied index and digest (the store itself has no `PartialEq`).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Record::Promised(a), Record::Promised(b)) => a == b,
            (
                Record::Sync {
                    accepted_round: a1,
                    from_idx: a2,
                    entries: a3,
                },
                Record::Sync {
                    accepted_round: b1,
                    from_idx: b2,
                    entries: b3,
                },
            ) => a1 == b1 && a2 == b2 && a3 == b3,
            (
                Record::Append {
                    from_idx: a1,
                    entries: a2,
                },
                Record::Append {
                    from_idx: b1,
                    entries: b2,
                },
            ) => a1 == b1 && a2 == b2,
            (Record::Decided(a), Record::Decided(b)) => a == b,
            (Record::Incarnation(a), Record::Incarnation(b)) => a == b,
            (Record::Checkpoint(a), Record::Checkpoint(b)) => {
                a.promised == b.promised
                    && a.accepted_round == b.accepted_round
                    && a.compacted_idx == b.compacted_idx
                    && a.decided_idx == b.decided_idx
                    && a.incarnation == b.incarnation
                    && a.suffix == b.suffix
                    && a.compacted_origins == b.compacted_origins
                    && a.kv.applied_index() == b.kv.applied_index()
                    && a.kv.digest() == b.kv.digest()
            }
            _ => false,
        }
    }
}

/// A checkpoint: the whole durable state with the log prefix `[0, compacted_idx)` replaced by
/// the KV store that results from applying it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub promised: Ballot,
    pub accepted_round: Ballot,
    /// Entries below this are compacted; `kv.applied_index() == compacted_idx`.
    pub compacted_idx: u64,
    pub decided_idx: u64,
    pub incarnation: u64,
    /// The log from `compacted_idx` on.
    pub suffix: Vec<Entry>,
    /// The most recent origins of compacted entries (deduplication, see
    /// [`COMPACTED_ORIGINS_MAX`]), oldest first.
    pub compacted_origins: Vec<Origin>,
    pub kv: KvStore,
}

/// The in-memory view of what is on disk (minus the KV store, which the engine owns).
#[derive(Debug, Default)]
pub struct DurableState {
    pub promised: Ballot,
    pub accepted_round: Ballot,
    /// The log from `compacted_idx` on.
    log: VecDeque<Entry>,
    /// Log positions below this are compacted into the KV store.
    pub compacted_idx: u64,
    pub decided_idx: u64,
    pub incarnation: u64,
    /// Origins of every entry in `log`: how the leader recognises a re-forwarded command that
    /// is already in the log. Derived, never persisted on its own.
    origins: HashSet<Origin>,
    /// Origins of recently compacted entries, oldest first, and the same as a set.
    compacted_origins: VecDeque<Origin>,
    compacted_origin_set: HashSet<Origin>,
}

impl DurableState {
    /// Rebuilds the state from records in emission order. Returns the KV store of the last
    /// checkpoint, if there was one (its applied index is `compacted_idx`).
    pub fn replay(records: &[Record]) -> Result<(Self, Option<KvStore>), String> {
        let mut s = DurableState::default();
        let mut kv = None;
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
                Record::Checkpoint(c) => {
                    if c.kv.applied_index() != c.compacted_idx || c.compacted_idx > c.decided_idx {
                        return Err(format!(
                            "record {i}: checkpoint with compacted {} applied {} decided {}",
                            c.compacted_idx,
                            c.kv.applied_index(),
                            c.decided_idx
                        ));
                    }
                    if c.decided_idx > c.compacted_idx + c.suffix.len() as u64 {
                        return Err(format!(
                            "record {i}: checkpoint decided {} beyond its log",
                            c.decided_idx
                        ));
                    }
                    if c.promised < s.promised {
                        return Err(format!("record {i}: checkpoint promise went back"));
                    }
                    s.restore(c);
                    kv = Some(c.kv.clone());
                }
            }
            sink.clear();
        }
        Ok((s, kv))
    }

    /// Replaces the whole state by a checkpoint's (KV store excepted).
    fn restore(&mut self, c: &Checkpoint) {
        self.promised = c.promised;
        self.accepted_round = c.accepted_round;
        self.compacted_idx = c.compacted_idx;
        self.decided_idx = c.decided_idx;
        self.incarnation = self.incarnation.max(c.incarnation);
        self.log = c.suffix.iter().cloned().collect();
        self.origins = c.suffix.iter().map(|e| e.origin).collect();
        self.compacted_origins = c.compacted_origins.iter().copied().collect();
        self.compacted_origin_set = c.compacted_origins.iter().copied().collect();
    }

    pub fn log_len(&self) -> u64 {
        self.compacted_idx + self.log.len() as u64
    }

    /// The entry at absolute position `idx` (must be in `[compacted_idx, log_len)`).
    pub fn entry(&self, idx: u64) -> &Entry {
        assert!(
            idx >= self.compacted_idx && idx < self.log_len(),
            "entry {idx} outside the in-memory log [{}, {})",
            self.compacted_idx,
            self.log_len()
        );
        &self.log[(idx - self.compacted_idx) as usize]
    }

    pub fn contains_origin(&self, o: &Origin) -> bool {
        self.origins.contains(o) || self.compacted_origin_set.contains(o)
    }

    /// Entries `[from, to)` (clamped to the log). `from` must not be compacted.
    pub fn slice(&self, from: u64, to: u64) -> Vec<Entry> {
        let to = to.min(self.log_len());
        if from >= to {
            return Vec::new();
        }
        assert!(
            from >= self.compacted_idx,
            "slice from {from} reaches into the compacted prefix ({})",
            self.compacted_idx
        );
        let base = self.compacted_idx;
        self.log
            .range((from - base) as usize..(to - base) as usize)
            .cloned()
            .collect()
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
        for e in self.log.drain((from_idx - self.compacted_idx) as usize..) {
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

    fn remember_compacted_origin(&mut self, o: Origin) {
        remember_compacted(
            &mut self.compacted_origins,
            &mut self.compacted_origin_set,
            o,
        );
    }

    /// Drops the log prefix below `idx` (decided and applied into `kv`, whose applied index is
    /// `idx`) and pushes the checkpoint record that makes the drop durable.
    pub fn compact(&mut self, idx: u64, kv: &KvStore, out: &mut Vec<Record>) {
        assert!(
            idx >= self.compacted_idx && idx <= self.decided_idx,
            "compaction to {idx} outside [{}, {}]",
            self.compacted_idx,
            self.decided_idx
        );
        assert_eq!(kv.applied_index(), idx, "checkpoint KV store not at {idx}");
        let drop = (idx - self.compacted_idx) as usize;
        // Straight from the log, not via a collected copy: a compaction moves up to
        // `snapshot_entries` entries, and the copy (fresh pages for ~100 bytes per entry) was
        // most of a compaction's stall in profiles.
        if self.compacted_origins.capacity() == 0 {
            self.compacted_origins.reserve(COMPACTED_ORIGINS_MAX + 1);
            self.compacted_origin_set.reserve(COMPACTED_ORIGINS_MAX + 1);
        }
        for e in self.log.drain(..drop) {
            self.origins.remove(&e.origin);
            remember_compacted(
                &mut self.compacted_origins,
                &mut self.compacted_origin_set,
                e.origin,
            );
        }
        self.compacted_idx = idx;
        out.push(self.checkpoint(kv));
    }

    /// Installs a snapshot of the decided prefix `[0, idx)` received from a peer: the whole
    /// log is replaced by it (entries after it may disagree with the decided ones, so none is
    /// kept), and the accepted round becomes `accepted_round`.
    pub fn install_snapshot(
        &mut self,
        accepted_round: Ballot,
        kv: &KvStore,
        origins: &[Origin],
        out: &mut Vec<Record>,
    ) {
        let idx = kv.applied_index();
        assert!(
            idx > self.decided_idx,
            "snapshot at {idx} not beyond decided {}",
            self.decided_idx
        );
        self.log.clear();
        self.origins.clear();
        for o in origins {
            self.remember_compacted_origin(*o);
        }
        self.compacted_idx = idx;
        self.decided_idx = idx;
        self.accepted_round = accepted_round;
        out.push(self.checkpoint(kv));
    }

    /// The recently compacted origins, oldest first.
    pub fn compacted_origins(&self) -> Vec<Origin> {
        self.compacted_origins.iter().copied().collect()
    }

    /// What a snapshot of the decided prefix `[0, idx)` must carry for deduplication: the
    /// recently compacted origins plus those of the entries in `[compacted_idx, idx)` still in
    /// this log, oldest first. The snapshot usually reaches beyond the last compaction; a
    /// receiver that learned only the compacted origins could append a re-forwarded command
    /// a second time (the simulator found it once leaders began holding proposals).
    pub fn origins_through(&self, idx: u64) -> Vec<Origin> {
        let mut v = self.compacted_origins();
        let in_log = idx
            .saturating_sub(self.compacted_idx)
            .min(self.log.len() as u64) as usize;
        v.extend(self.log.iter().take(in_log).map(|e| e.origin));
        v
    }

    fn checkpoint(&self, kv: &KvStore) -> Record {
        Record::Checkpoint(Box::new(Checkpoint {
            promised: self.promised,
            accepted_round: self.accepted_round,
            compacted_idx: self.compacted_idx,
            decided_idx: self.decided_idx,
            incarnation: self.incarnation,
            suffix: self.log.iter().cloned().collect(),
            compacted_origins: self.compacted_origins(),
            kv: kv.clone(),
        }))
    }
}

/// Remembers one compacted origin, forgetting the oldest beyond [`COMPACTED_ORIGINS_MAX`].
/// A free function so that compaction can call it while draining the log.
fn remember_compacted(order: &mut VecDeque<Origin>, set: &mut HashSet<Origin>, o: Origin) {
    if set.insert(o) {
        order.push_back(o);
    }
    while order.len() > COMPACTED_ORIGINS_MAX {
        if let Some(old) = order.pop_front() {
            set.remove(&old);
        }
    }
}
