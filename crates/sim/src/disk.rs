//! The simulated disk of one node: the durable records its engine asked to persist.
//!
//! Records go through two states, as on a real disk: *written* (handed to the OS, in the page
//! cache) and *synced* (fsync returned; survives power loss). `Ready::persist` in the correct
//! path writes and syncs in one step, so everything a message or reply depends on is synced
//! before it leaves — [`SimDisk::assert_all_synced`] checks exactly that before every send.
//! Only the planted `AckBeforeFsync` bug leaves records written-but-unsynced while messages go
//! out; a later `sync` event makes them durable.
//!
//! Crash semantics ([`CrashMode`]): a process crash keeps written records (the OS still
//! flushes its page cache); a power loss / machine crash keeps only synced records plus a
//! random prefix of the unsynced tail, whose last record may be torn — recovery detects a torn
//! record by its checksum and truncates it, so a torn record is simply lost. Damage beyond the
//! tail (bit flips, read errors, misdirected writes, damaged snapshots or metadata) is injected
//! by `Fault::Damage` and found at the node's next start (see `Sim::recover_damaged_disk`).

use synod_core::{DurableRecord, SplitMix64};

/// What a crash does to records that were written but not yet synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Process crash: the OS survives, every written record is kept.
    ProcessOnly,
    /// Machine crash / power loss: unsynced records may be lost and the last surviving one may
    /// be torn (and then dropped by recovery's checksum check).
    LoseUnsynced,
}

#[derive(Clone, Debug)]
pub struct SimDisk<R> {
    /// Records in emission order, after compaction at the last synced checkpoint.
    records: Vec<R>,
    /// `records[..synced_len]` are durable.
    synced_len: usize,
    /// Records ever written (metrics).
    pub records_written: u64,
    /// Syncs performed (metrics).
    pub syncs: u64,
    /// Records lost by crashes (metrics and reports).
    pub records_lost: u64,
}

impl<R: DurableRecord> SimDisk<R> {
    pub fn new() -> Self {
        SimDisk {
            records: Vec::new(),
            synced_len: 0,
            records_written: 0,
            syncs: 0,
            records_lost: 0,
        }
    }

    /// Writes without syncing (the page cache).
    pub fn write(&mut self, records: &[R]) {
        self.records.extend_from_slice(records);
        self.records_written += records.len() as u64;
    }

    /// fsync: everything written so far becomes durable, and storage may now drop what a
    /// synced checkpoint subsumes (log compaction).
    pub fn sync(&mut self) {
        self.syncs += 1;
        self.synced_len = self.records.len();
        if let Some(last_checkpoint) = self.records.iter().rposition(|r| r.is_checkpoint()) {
            self.records.drain(..last_checkpoint);
            self.synced_len -= last_checkpoint;
        }
    }

    /// The correct path's `Ready::persist` callback: write and sync.
    pub fn write_and_sync(&mut self, records: &[R]) -> Result<(), String> {
        self.write(records);
        self.sync();
        Ok(())
    }

    pub fn unsynced(&self) -> usize {
        self.records.len() - self.synced_len
    }

    /// Persist-before-send: nothing may leave a node while it has unsynced records.
    pub fn assert_all_synced(&self, node: u64) {
        assert_eq!(
            self.unsynced(),
            0,
            "node {node} is sending with {} unsynced records (persist-before-send broken)",
            self.unsynced()
        );
    }

    /// Applies a crash to the disk and returns how many records were lost.
    pub fn crash(&mut self, mode: CrashMode, rng: &mut SplitMix64) -> usize {
        let lost = match mode {
            CrashMode::ProcessOnly => 0,
            CrashMode::LoseUnsynced => {
                let unsynced = self.unsynced() as u64;
                if unsynced == 0 {
                    0
                } else {
                    // A random prefix of the unsynced tail reached the platter; the last record
                    // of that prefix may be torn, which recovery truncates.
                    let mut survive = rng.below(unsynced + 1);
                    if survive > 0 && rng.chance_permille(500) {
                        survive -= 1;
                    }
                    (unsynced - survive) as usize
                }
            }
        };
        self.records.truncate(self.records.len() - lost);
        self.synced_len = self.records.len();
        self.records_lost += lost as u64;
        lost
    }

    /// Keeps only the first `len` records (a node truncating its damaged log).
    pub fn truncate(&mut self, len: usize) {
        self.records.truncate(len);
        self.synced_len = self.synced_len.min(len);
    }

    /// Drops every record (a node quarantining damaged storage and starting empty).
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// What recovery reads back, in emission order.
    pub fn records(&self) -> Vec<R> {
        self.records.clone()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl<R: DurableRecord> Default for SimDisk<R> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Rec(u64, bool);
    impl DurableRecord for Rec {
        fn is_checkpoint(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn synced_records_survive_and_unsynced_may_not() {
        let mut rng = SplitMix64::new(3);
        let mut d = SimDisk::new();
        d.write_and_sync(&[Rec(1, false), Rec(2, false)]).unwrap();
        d.write(&[Rec(3, false), Rec(4, false), Rec(5, false)]);
        assert_eq!(d.crash(CrashMode::ProcessOnly, &mut rng), 0);
        assert_eq!(d.len(), 5);
        d.write(&[Rec(6, false)]);
        let mut lost_any = false;
        for seed in 0..20 {
            let mut copy = d.clone();
            let lost = copy.crash(CrashMode::LoseUnsynced, &mut SplitMix64::new(seed));
            lost_any |= lost > 0;
            assert!(lost <= 1, "only the unsynced record may be lost");
            assert_eq!(&copy.records()[..5], &d.records()[..5]);
        }
        assert!(lost_any);
    }

    #[test]
    fn synced_checkpoint_compacts() {
        let mut d = SimDisk::new();
        d.write_and_sync(&[Rec(1, false), Rec(2, true), Rec(3, false)])
            .unwrap();
        assert_eq!(d.records(), vec![Rec(2, true), Rec(3, false)]);
    }
}
