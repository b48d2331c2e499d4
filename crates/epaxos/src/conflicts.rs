//! The interference index a replica computes a command's attributes from (§4.3, PreAccept):
//! `deps` = the highest slot, per replica, of an instance this replica knows that interferes
//! with the command, and `seq` = 1 + the largest seq among them.
//!
//! Per key it keeps, per member, the highest slot that wrote the key and the highest that
//! touched it at all (with their seqs): a read depends on writes, a write on every access.
//! Ranges and "global" commands are tracked coarsely, per member, over all keys; that can
//! only add dependencies, never miss one (execution orders by real interference, see
//! `execute`). A dependency on slot `j` covers every lower interfering slot of that member,
//! so one number per member and key is enough.

use std::collections::HashMap;
use synod_core::kv::Footprint;

use crate::types::Attrs;

/// Highest slot per member and the highest seq among them.
#[derive(Clone, Debug, Default)]
struct Marks {
    slots: Vec<u64>,
    seq: u64,
}

impl Marks {
    fn new(n: usize) -> Marks {
        Marks {
            slots: vec![0; n],
            seq: 0,
        }
    }

    fn note(&mut self, k: usize, slot: u64, seq: u64) {
        self.slots[k] = self.slots[k].max(slot);
        self.seq = self.seq.max(seq);
    }

    fn add_to(&self, a: &mut Attrs) {
        for (d, s) in a.deps.iter_mut().zip(&self.slots) {
            *d = (*d).max(*s);
        }
        a.seq = a.seq.max(self.seq + 1);
    }

    fn all_below(&self, floor: &[u64]) -> bool {
        self.slots.iter().zip(floor).all(|(s, f)| s <= f)
    }
}

/// What one key has seen.
#[derive(Clone, Debug)]
struct KeyMarks {
    writes: Marks,
    any: Marks,
}

/// A data key in the index (tag 0), apart from the session pseudo-keys (tag 1).
fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(0);
    k.extend_from_slice(key);
    k
}

/// A client session's pseudo-key: the client's writes interfere with each other.
fn session_key(client: u64) -> Vec<u8> {
    let mut k = vec![1];
    k.extend_from_slice(&client.to_be_bytes());
    k
}

/// See the module docs.
#[derive(Debug)]
pub struct ConflictIndex {
    n: usize,
    keys: HashMap<Vec<u8>, KeyMarks>,
    /// Every write to any key (what a range read or a global command depends on).
    all_writes: Marks,
    /// Every access to any key (what a range write or a global command depends on).
    all_any: Marks,
    /// Range and global commands that write (what a single-key read depends on).
    wide_writes: Marks,
    /// Range and global commands at all (what a single-key write depends on).
    wide_any: Marks,
}

impl ConflictIndex {
    pub fn new(n: usize) -> ConflictIndex {
        ConflictIndex {
            n,
            keys: HashMap::new(),
            all_writes: Marks::new(n),
            all_any: Marks::new(n),
            wide_writes: Marks::new(n),
            wide_any: Marks::new(n),
        }
    }

    /// The attributes of a command with footprint `f` from what this replica knows. With
    /// `reads_commute` (planted bug) reads and writes of a key do not depend on each other.
    pub fn attrs_for(&self, f: &Footprint, reads_commute: bool) -> Attrs {
        let mut a = Attrs {
            seq: 1,
            deps: vec![0; self.n],
        };
        if f.global {
            self.all_any.add_to(&mut a);
            return a;
        }
        for span in &f.reads {
            if reads_commute {
                continue;
            }
            match span.single() {
                Some(key) => {
                    if let Some(m) = self.keys.get(&data_key(key)) {
                        m.writes.add_to(&mut a);
                    }
                    self.wide_writes.add_to(&mut a);
                }
                None => self.all_writes.add_to(&mut a),
            }
        }
        for c in &f.sessions {
            if let Some(m) = self.keys.get(&session_key(*c)) {
                m.any.add_to(&mut a);
            }
        }
        for span in &f.writes {
            match span.single() {
                Some(key) => {
                    if let Some(m) = self.keys.get(&data_key(key)) {
                        let marks = if reads_commute { &m.writes } else { &m.any };
                        marks.add_to(&mut a);
                    }
                    let wide = if reads_commute {
                        &self.wide_writes
                    } else {
                        &self.wide_any
                    };
                    wide.add_to(&mut a);
                }
                None => self.all_any.add_to(&mut a),
            }
        }
        a
    }

    /// Member `k`'s instance `slot` with footprint `f` and `seq` is known here.
    pub fn record(&mut self, k: usize, slot: u64, f: &Footprint, seq: u64) {
        let n = self.n;
        let global = f.global;
        for span in &f.reads {
            match span.single() {
                Some(key) => self
                    .keys
                    .entry(data_key(key))
                    .or_insert_with(|| KeyMarks {
                        writes: Marks::new(n),
                        any: Marks::new(n),
                    })
                    .any
                    .note(k, slot, seq),
                None => self.wide_any.note(k, slot, seq),
            }
        }
        for span in &f.writes {
            match span.single() {
                Some(key) => self.note_write(data_key(key), k, slot, seq),
                None => {
                    self.wide_writes.note(k, slot, seq);
                    self.wide_any.note(k, slot, seq);
                }
            }
            self.all_writes.note(k, slot, seq);
        }
        for c in &f.sessions {
            self.note_write(session_key(*c), k, slot, seq);
        }
        if global {
            self.wide_writes.note(k, slot, seq);
            self.wide_any.note(k, slot, seq);
            self.all_writes.note(k, slot, seq);
        }
        if global || !f.reads.is_empty() || !f.writes.is_empty() {
            self.all_any.note(k, slot, seq);
        }
    }

    fn note_write(&mut self, key: Vec<u8>, k: usize, slot: u64, seq: u64) {
        let n = self.n;
        let m = self.keys.entry(key).or_insert_with(|| KeyMarks {
            writes: Marks::new(n),
            any: Marks::new(n),
        });
        m.writes.note(k, slot, seq);
        m.any.note(k, slot, seq);
    }

    /// Forgets keys whose every mark is at or below the garbage-collection floor: those
    /// instances are executed by every member, so nothing new needs to depend on them.
    pub fn forget_below(&mut self, floor: &[u64]) {
        self.keys.retain(|_, m| !m.any.all_below(floor));
    }

    /// Keys indexed (memory bound reporting).
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}
