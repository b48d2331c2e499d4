//! The durable state of a VR replica — view-number, last-normal view, log, commit-number —
//! its [`Record`]s, and the [`Checkpoint`] that replaces them after compaction.
//!
//! Every mutation goes through a method here that changes the in-memory state *and* pushes the
//! record describing it, so the two cannot drift apart; [`DurableState::replay`] rebuilds the
//! same state from the records. A log replacement (StartView, NewState, recovery) is one
//! [`Record::Replace`] carrying the new view-number, the new last-normal view and the new
//! suffix, so a torn write never leaves a log that claims a view it does not hold.
//!
//! Invariants asserted here: the view-number never decreases, the last-normal view never
//! decreases and never exceeds the view-number, the commit-number never goes back, and
//! nothing below the commit-number is ever truncated.

use crate::messages::View;
use serde::{Deserialize, Serialize};
use synod_core::{Command, CommandLog};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// The view-number went up to this (a view change started, or the replica learned of a
    /// newer view); the log is unchanged. Written before any message of the new view.
    View(View),
    /// `entries` appended at position `from` (= the log length), same last-normal view.
    Append { from: u64, entries: Vec<Command> },
    /// The log from position `from` on (never below the commit-number) replaced by
    /// `entries`, the view-number set to `view` and the last-normal view to `last_normal`.
    Replace {
        view: View,
        last_normal: View,
        from: u64,
        entries: Vec<Command>,
    },
    /// Committed entries learned by state transfer: positions `from..from + len` hold
    /// `entries` (overwriting or extending the log) and the commit-number is at least the end.
    /// Entries after them are kept (see `DurableState::learn_committed`).
    Committed { from: u64, entries: Vec<Command> },
    /// The commit-number went up to this. Written lazily (with other records, or once per
    /// heartbeat): a commit-number can always be relearned from the primary.
    Commit(u64),
    /// `true`: this replica started without its state (a wiped disk) and has not finished
    /// recovery, so what it holds does not cover what it promised before; a restart before
    /// recovery completes is still a start without state. `false`: recovery completed.
    Amnesic(bool),
}

/// The whole durable state with the log prefix below `compacted_idx` dropped (it is
/// summarised by the replica layer's KV snapshot stored alongside).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub view: View,
    pub last_normal: View,
    pub compacted_idx: u64,
    pub commit: u64,
    /// The log from `compacted_idx` on.
    pub suffix: Vec<Command>,
    /// See [`Record::Amnesic`].
    pub amnesic: bool,
}

/// The in-memory view of what is on disk.
#[derive(Debug, Default)]
pub struct DurableState {
    view: View,
    last_normal: View,
    /// The log; positions below its compacted index live in the replica layer's checkpoint.
    log: CommandLog,
    commit: u64,
    /// The commit-number as last written in a record (lazily; see [`Record::Commit`]).
    commit_durable: u64,
    /// See [`Record::Amnesic`].
    amnesic: bool,
}

impl DurableState {
    /// Rebuilds the state from the last checkpoint (if any) and the records written after it,
    /// in order. Inconsistent records are an `Err`, never a panic.
    pub fn replay(checkpoint: Option<&Checkpoint>, records: &[Record]) -> Result<Self, String> {
        let mut s = DurableState::default();
        if let Some(c) = checkpoint {
            if c.last_normal > c.view
                || c.compacted_idx > c.commit
                || c.commit > c.compacted_idx + c.suffix.len() as u64
            {
                return Err(format!(
                    "checkpoint inconsistent: view {} last-normal {} compacted {} commit {} \
                     suffix {}",
                    c.view,
                    c.last_normal,
                    c.compacted_idx,
                    c.commit,
                    c.suffix.len()
                ));
            }
            s.view = c.view;
            s.last_normal = c.last_normal;
            s.commit = c.commit;
            s.commit_durable = c.commit;
            s.amnesic = c.amnesic;
            s.log = CommandLog::from_suffix(c.compacted_idx, &c.suffix);
        }
        let mut sink = Vec::new();
        for (i, r) in records.iter().enumerate() {
            s.replay_one(r, &mut sink)
                .map_err(|e| format!("record {i}: {e}"))?;
            sink.clear();
        }
        Ok(s)
    }

    fn replay_one(&mut self, r: &Record, sink: &mut Vec<Record>) -> Result<(), String> {
        match r {
            Record::View(v) => {
                if *v < self.view {
                    return Err(format!("view-number went back from {} to {v}", self.view));
                }
                self.raise_view(*v, sink);
            }
            Record::Append { from, entries } => {
                if *from != self.log_len() {
                    return Err(format!("append at {from} but log has {}", self.log_len()));
                }
                self.append(entries.clone(), sink);
            }
            Record::Replace {
                view,
                last_normal,
                from,
                entries,
            } => {
                if *view < self.view || *last_normal > *view || *last_normal < self.last_normal {
                    return Err(format!(
                        "replace to view {view} last-normal {last_normal} from view {} \
                         last-normal {}",
                        self.view, self.last_normal
                    ));
                }
                if *from > self.log_len() || *from < self.commit {
                    return Err(format!(
                        "replace at {from} outside [{}, {}]",
                        self.commit,
                        self.log_len()
                    ));
                }
                self.replace(*view, *last_normal, *from, entries.clone(), sink);
            }
            Record::Committed { from, entries } => {
                if *from > self.log_len() || *from < self.compacted_idx() {
                    return Err(format!(
                        "committed entries at {from} outside [{}, {}]",
                        self.compacted_idx(),
                        self.log_len()
                    ));
                }
                self.learn_committed(*from, entries.clone(), sink);
            }
            Record::Commit(c) => {
                if *c > self.log_len() {
                    return Err(format!("commit {c} beyond log {}", self.log_len()));
                }
                self.raise_commit(*c);
                self.commit_durable = self.commit_durable.max(*c);
            }
            Record::Amnesic(a) => self.amnesic = *a,
        }
        Ok(())
    }

    pub fn view(&self) -> View {
        self.view
    }

    pub fn last_normal(&self) -> View {
        self.last_normal
    }

    pub fn commit(&self) -> u64 {
        self.commit
    }

    pub fn amnesic(&self) -> bool {
        self.amnesic
    }

    pub fn set_amnesic(&mut self, a: bool, out: &mut Vec<Record>) {
        if self.amnesic != a {
            self.amnesic = a;
            out.push(Record::Amnesic(a));
        }
    }

    pub fn compacted_idx(&self) -> u64 {
        self.log.compacted_idx()
    }

    /// The op-number: how many operations the log holds (compacted ones included).
    pub fn log_len(&self) -> u64 {
        self.log.len()
    }

    /// The entry at absolute position `idx` (must be in `[compacted_idx, log_len)`).
    pub fn entry(&self, idx: u64) -> &Command {
        self.log.entry(idx)
    }

    /// Entries `[from, to)`, clamped to the log. `from` must not be compacted.
    pub fn slice(&self, from: u64, to: u64) -> Vec<Command> {
        self.log.slice(from, to)
    }

    pub fn raise_view(&mut self, v: View, out: &mut Vec<Record>) {
        assert!(v >= self.view, "view-number went back: {v} < {}", self.view);
        if v > self.view {
            self.view = v;
            out.push(Record::View(v));
        }
    }

    pub fn append(&mut self, entries: Vec<Command>, out: &mut Vec<Record>) {
        if entries.is_empty() {
            return;
        }
        let from = self.log_len();
        self.log.extend(&entries);
        out.push(Record::Append { from, entries });
    }

    /// Replaces the log from `from` by `entries` and sets the view-number and last-normal view
    /// (one record). Nothing below the commit-number may be replaced.
    pub fn replace(
        &mut self,
        view: View,
        last_normal: View,
        from: u64,
        entries: Vec<Command>,
        out: &mut Vec<Record>,
    ) {
        assert!(
            view >= self.view,
            "view-number went back: {view} < {}",
            self.view
        );
        assert!(
            last_normal <= view && last_normal >= self.last_normal,
            "last-normal view {last_normal} outside [{}, {view}]",
            self.last_normal
        );
        assert!(
            from >= self.commit && from <= self.log_len(),
            "replace at {from} would truncate committed entries (commit {}) or leave a gap \
             (op-number {})",
            self.commit,
            self.log_len()
        );
        self.log.truncate(from);
        self.log.extend(&entries);
        self.view = view;
        self.last_normal = last_normal;
        out.push(Record::Replace {
            view,
            last_normal,
            from,
            entries,
        });
    }

    /// Learns committed entries at `from..`: they overwrite what the log holds there (which may
    /// be an uncommitted suffix of an older view) or extend it, and the commit-number rises to
    /// their end. Entries after them are *kept*: dropping them would shorten a log whose
    /// last-normal view is unchanged, and that log may hold the only copy, in a view-change
    /// quorum, of an operation committed in that view (see the crate docs, "deviations").
    pub fn learn_committed(&mut self, from: u64, entries: Vec<Command>, out: &mut Vec<Record>) {
        assert!(
            from >= self.compacted_idx() && from <= self.log_len(),
            "committed entries at {from} outside [{}, {}]",
            self.compacted_idx(),
            self.log_len()
        );
        if entries.is_empty() {
            return;
        }
        let end = from + entries.len() as u64;
        self.log.overwrite(from, &entries);
        self.raise_commit(end);
        self.commit_durable = self.commit_durable.max(end);
        out.push(Record::Committed { from, entries });
    }

    /// Raises the commit-number (never lowers it). Its record is written lazily, see
    /// [`DurableState::commit_record`].
    pub fn raise_commit(&mut self, c: u64) {
        assert!(
            c <= self.log_len(),
            "commit-number {c} beyond op-number {}",
            self.log_len()
        );
        if c > self.commit {
            self.commit = c;
        }
    }

    /// Pushes a [`Record::Commit`] if the commit-number rose since the last one.
    pub fn commit_record(&mut self, out: &mut Vec<Record>) {
        if self.commit > self.commit_durable {
            self.commit_durable = self.commit;
            out.push(Record::Commit(self.commit));
        }
    }

    /// Drops the committed prefix below `idx` and returns the checkpoint that makes the drop
    /// durable.
    pub fn compact(&mut self, idx: u64) -> Checkpoint {
        assert!(
            idx <= self.commit,
            "compaction to {idx} beyond commit-number {}",
            self.commit
        );
        self.log.compact(idx);
        self.checkpoint()
    }

    /// A snapshot of the committed prefix `[0, idx)` was installed. Entries beyond `idx` are
    /// kept for the same reason as in [`DurableState::learn_committed`]; the prefix they
    /// follow is committed, hence the same in every log that matters.
    pub fn install_snapshot(&mut self, idx: u64) -> Checkpoint {
        assert!(
            idx > self.commit,
            "snapshot at {idx} not beyond commit-number {}",
            self.commit
        );
        self.log.compact(idx);
        self.commit = idx;
        self.checkpoint()
    }

    fn checkpoint(&mut self) -> Checkpoint {
        self.commit_durable = self.commit;
        Checkpoint {
            view: self.view,
            last_normal: self.last_normal,
            compacted_idx: self.compacted_idx(),
            commit: self.commit,
            suffix: self.log.suffix(),
            amnesic: self.amnesic,
        }
    }
}
