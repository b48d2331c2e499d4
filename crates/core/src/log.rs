//! The in-memory log of a log protocol: [`Command`]s at absolute positions, with a prefix
//! `[0, compacted_idx)` no longer held (a checkpoint summarises it). Both OmniPaxos and VR keep
//! their log in one; what each protocol may do to it (never truncate below the decided or
//! commit-number, …) is asserted by the protocol's own durable state, which wraps this.

use crate::protocol::Command;
use std::collections::VecDeque;

#[derive(Clone, Debug, Default)]
pub struct CommandLog {
    /// Position `compacted_idx + i` is `entries[i]`.
    entries: VecDeque<Command>,
    compacted_idx: u64,
}

impl CommandLog {
    /// A log compacted up to `compacted_idx` and holding `suffix` after it (from a checkpoint).
    pub fn from_suffix(compacted_idx: u64, suffix: &[Command]) -> Self {
        CommandLog {
            entries: suffix.iter().cloned().collect(),
            compacted_idx,
        }
    }

    /// The absolute length: positions below it exist (held or compacted).
    pub fn len(&self) -> u64 {
        self.compacted_idx + self.entries.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn compacted_idx(&self) -> u64 {
        self.compacted_idx
    }

    /// The entry at `idx`, which must be in `[compacted_idx, len)`.
    pub fn entry(&self, idx: u64) -> &Command {
        assert!(
            idx >= self.compacted_idx && idx < self.len(),
            "entry {idx} outside the in-memory log [{}, {})",
            self.compacted_idx,
            self.len()
        );
        &self.entries[(idx - self.compacted_idx) as usize]
    }

    /// Entries `[from, to)`, clamped to the log. `from` must not be compacted.
    pub fn slice(&self, from: u64, to: u64) -> Vec<Command> {
        let to = to.min(self.len());
        if from >= to {
            return Vec::new();
        }
        assert!(
            from >= self.compacted_idx,
            "slice from {from} reaches into the compacted prefix ({})",
            self.compacted_idx
        );
        let base = self.compacted_idx;
        self.entries
            .range((from - base) as usize..(to - base) as usize)
            .cloned()
            .collect()
    }

    /// Every held entry, `[compacted_idx, len)`: a checkpoint's suffix.
    pub fn suffix(&self) -> Vec<Command> {
        self.entries.iter().cloned().collect()
    }

    /// Drops positions from `len` on (`compacted_idx <= len <= self.len()`).
    pub fn truncate(&mut self, len: u64) {
        assert!(
            len >= self.compacted_idx && len <= self.len(),
            "truncate to {len} outside [{}, {}]",
            self.compacted_idx,
            self.len()
        );
        self.entries.truncate((len - self.compacted_idx) as usize);
    }

    pub fn extend(&mut self, entries: &[Command]) {
        self.entries.extend(entries.iter().cloned());
    }

    /// Writes `entries` at `from..` (`compacted_idx <= from <= len`), overwriting what is there
    /// and extending past the end; entries after them stay.
    pub fn overwrite(&mut self, from: u64, entries: &[Command]) {
        assert!(
            from >= self.compacted_idx && from <= self.len(),
            "overwrite at {from} outside [{}, {}]",
            self.compacted_idx,
            self.len()
        );
        let start = (from - self.compacted_idx) as usize;
        for (i, e) in entries.iter().enumerate() {
            match self.entries.get_mut(start + i) {
                Some(slot) => *slot = e.clone(),
                None => self.entries.push_back(e.clone()),
            }
        }
    }

    /// Drops the held prefix below `idx`; from then on `compacted_idx == idx`. `idx` may lie
    /// beyond the end (a snapshot that covers more than this log holds): the log is then empty
    /// and its length is `idx`.
    pub fn compact(&mut self, idx: u64) {
        if idx <= self.compacted_idx {
            return;
        }
        let drop = ((idx - self.compacted_idx) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.compacted_idx = idx;
    }

    /// Replaces everything by an empty log compacted at `idx`.
    pub fn reset(&mut self, idx: u64) {
        self.entries.clear();
        self.compacted_idx = idx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ClientId, RequestId};
    use crate::kv::{Op, RangeRequest};
    use crate::protocol::Origin;

    fn cmd(seq: u64) -> Command {
        Command {
            id: RequestId {
                client: ClientId(1),
                seq,
            },
            first_unacked: seq,
            op: Op::Range(RangeRequest::key("k")),
            origin: Origin {
                node: 1,
                incarnation: 1,
                seq,
            },
        }
    }

    #[test]
    fn positions_stay_absolute_across_compaction_and_overwrite() {
        let mut log = CommandLog::default();
        log.extend(&[cmd(1), cmd(2), cmd(3), cmd(4)]);
        log.compact(2);
        assert_eq!((log.compacted_idx(), log.len()), (2, 4));
        assert_eq!(log.entry(2), &cmd(3));
        assert_eq!(log.slice(2, 9), vec![cmd(3), cmd(4)]);
        log.overwrite(3, &[cmd(9), cmd(10)]);
        assert_eq!(log.slice(2, 5), vec![cmd(3), cmd(9), cmd(10)]);
        log.truncate(3);
        assert_eq!(log.len(), 3);
        log.compact(7);
        assert_eq!(
            (log.compacted_idx(), log.len(), log.suffix().len()),
            (7, 7, 0)
        );
    }

    #[test]
    #[should_panic(expected = "compacted prefix")]
    fn a_compacted_position_cannot_be_read() {
        let mut log = CommandLog::default();
        log.extend(&[cmd(1), cmd(2)]);
        log.compact(1);
        let _ = log.slice(0, 2);
    }
}
