//! The record type the WAL tests append (`wal.rs`, `wal_faults.rs`, `wal_full_disk.rs`): opaque
//! data records and checkpoints, which the WAL stores as snapshot files.

use serde::{Deserialize, Serialize};
use synod_core::DurableRecord;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Rec {
    Data(u64, Vec<u8>),
    Checkpoint(u64),
}

impl DurableRecord for Rec {
    fn is_checkpoint(&self) -> bool {
        matches!(self, Rec::Checkpoint(_))
    }
}
