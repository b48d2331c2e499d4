//! The CASPaxos acceptor (Rystsov 2018, §2.2, the acceptor's half of both phases), one register
//! per key, plus the acceptor's half of the GC (drop a fully replicated tombstone).
//!
//! Every change of a register's promise or accepted pair returns a [`Record`]; the engine puts
//! it in the same `Ready` batch as the reply, ahead of it, so the reply can leave only once the
//! state it reports is durable. A duplicate request that changes nothing returns no record.

use crate::ballot::Ballot;
use crate::messages::{AcceptedValue, Message, Record, RegisterRecord, RegisterValue};
use crate::reconf::CasConfig;
use std::collections::BTreeMap;
use synod_core::kv::Key;

/// One register's acceptor state.
#[derive(Clone, Debug)]
pub struct AcceptorRegister {
    /// No Prepare or Accept below this ballot will be granted.
    pub promised: Ballot,
    /// The highest-ballot value accepted (accepted ballots only grow: accepting needs
    /// `ballot >= promised` and `promised >= every accepted ballot`).
    pub accepted: Option<AcceptedValue>,
}

/// All registers of this node's acceptor.
#[derive(Clone, Debug)]
pub struct Acceptor {
    registers: BTreeMap<Key, AcceptorRegister>,
    /// What an absent key is promised at: the highest promise of any key the GC dropped (see
    /// `gc.rs`). Starts at `Ballot::ZERO`, which is the plain Paxos initial state.
    floor: Ballot,
    /// Planted bug `PromiseWithoutHighestAccepted`: promises report nothing accepted.
    omit_accepted_in_promise: bool,
}

/// What handling one message produced: a reply to the sender and a record to persist first.
pub struct AcceptorOutput {
    pub reply: Option<Message>,
    pub record: Option<Record>,
}

impl Acceptor {
    pub fn new(omit_accepted_in_promise: bool) -> Self {
        Acceptor {
            registers: BTreeMap::new(),
            floor: Ballot::ZERO,
            omit_accepted_in_promise,
        }
    }

    /// Replays one durable record (recovery). An accepted ballot above its own promise cannot
    /// have been written by this code: the records are corrupt.
    pub fn restore(&mut self, record: &Record) -> Result<(), String> {
        match record {
            Record::Register(r) => {
                if let Some(a) = &r.accepted
                    && a.ballot > r.promised
                {
                    return Err(format!(
                        "register {:?}: accepted ballot {} above promise {}",
                        String::from_utf8_lossy(&r.key),
                        a.ballot,
                        r.promised
                    ));
                }
                self.registers.insert(
                    r.key.clone(),
                    AcceptorRegister {
                        promised: r.promised,
                        accepted: r.accepted.clone(),
                    },
                );
            }
            Record::Dropped { key, floor } => {
                self.registers.remove(key);
                self.floor = self.floor.max(*floor);
            }
            Record::Checkpoint {
                floor, registers, ..
            } => {
                self.registers.clear();
                self.floor = *floor;
                for r in registers {
                    self.restore(&Record::Register(r.clone()))?;
                }
            }
            Record::BallotLease { .. }
            | Record::Amnesic(_)
            | Record::Config(_)
            | Record::Joining => {}
        }
        Ok(())
    }

    /// Up to `keys_max` registers after `after`, in key order, and the key the next page
    /// starts after (`None`: no more). For a repairing peer (`repair.rs`).
    pub fn page(&self, after: Option<&Key>, keys_max: usize) -> (Vec<RegisterRecord>, Option<Key>) {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k.clone()));
        let mut page = Vec::new();
        let mut range = self.registers.range((start, Bound::Unbounded));
        for (k, r) in range.by_ref().take(keys_max) {
            page.push(RegisterRecord {
                key: k.clone(),
                promised: r.promised,
                accepted: r.accepted.clone(),
            });
        }
        let next = match range.next() {
            Some(_) => page.last().map(|r| r.key.clone()),
            None => None,
        };
        (page, next)
    }

    /// Replaces the whole state by the one a repair merged from its peers (`repair.rs`).
    pub fn install_repaired(&mut self, floor: Ballot, registers: Vec<RegisterRecord>) {
        self.registers.clear();
        self.floor = floor;
        for r in registers {
            self.registers.insert(
                r.key,
                AcceptorRegister {
                    promised: r.promised,
                    accepted: r.accepted,
                },
            );
        }
    }

    /// Up to `keys_max` keys after `after`, in order, and the key the next page starts after
    /// (`None`: no more). For the membership rescan (`coordinator.rs`); tombstones included,
    /// since a tombstone is a value that must reach the new quorums too.
    pub fn key_page(&self, after: Option<&Key>, keys_max: usize) -> (Vec<Key>, Option<Key>) {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |k| Bound::Excluded(k.clone()));
        let mut range = self
            .registers
            .range((start, Bound::Unbounded))
            .map(|(k, _)| k);
        let keys: Vec<Key> = range.by_ref().take(keys_max).cloned().collect();
        let next = match range.next() {
            Some(_) => keys.last().cloned(),
            None => None,
        };
        (keys, next)
    }

    pub fn floor(&self) -> Ballot {
        self.floor
    }

    pub fn len(&self) -> usize {
        self.registers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.registers.is_empty()
    }

    pub fn get(&self, key: &[u8]) -> Option<&AcceptorRegister> {
        self.registers.get(key)
    }

    /// The highest ballot this acceptor has promised on any key (for the proposer's counter).
    pub fn highest_promised(&self) -> Ballot {
        self.registers
            .values()
            .map(|r| r.promised)
            .max()
            .unwrap_or(Ballot::ZERO)
            .max(self.floor)
    }

    /// Tombstones whose accepted ballot this node issued, with their write counts (GC
    /// candidates after a restart).
    pub fn own_tombstones(&self, node: u64) -> impl Iterator<Item = (&Key, u64)> + '_ {
        self.registers
            .iter()
            .filter_map(move |(k, r)| match &r.accepted {
                Some(a) if a.ballot.node == node && a.value.is_tombstone() => {
                    Some((k, a.value.writes))
                }
                _ => None,
            })
    }

    /// Every register, for a checkpoint record (which also carries the node's configuration).
    pub fn checkpoint(&self, counter_max: u64, config: Option<CasConfig>) -> Record {
        Record::Checkpoint {
            floor: self.floor,
            counter_max,
            config,
            registers: self
                .registers
                .iter()
                .map(|(k, r)| RegisterRecord {
                    key: k.clone(),
                    promised: r.promised,
                    accepted: r.accepted.clone(),
                })
                .collect(),
        }
    }

    fn record(&self, key: &[u8]) -> Record {
        let r = &self.registers[key];
        Record::Register(RegisterRecord {
            key: key.to_vec(),
            promised: r.promised,
            accepted: r.accepted.clone(),
        })
    }

    /// The register's state, with an absent key read as "promised at the floor, nothing
    /// accepted" — equivalent to the dropped tombstone (see `gc.rs`).
    fn state(&self, key: &[u8]) -> (Ballot, Option<&AcceptedValue>) {
        match self.registers.get(key) {
            Some(r) => (r.promised, r.accepted.as_ref()),
            None => (self.floor, None),
        }
    }

    /// Phase 1b. Grants a prepare at or above the promise (equal only for a duplicate: a ballot
    /// belongs to one proposer and one round).
    pub fn on_prepare(&mut self, key: Key, ballot: Ballot) -> AcceptorOutput {
        let (promised, _) = self.state(&key);
        if ballot < promised {
            return nack(key, ballot, promised);
        }
        let floor = self.floor;
        let reg = self
            .registers
            .entry(key.clone())
            .or_insert(AcceptorRegister {
                promised: floor,
                accepted: None,
            });
        let changed = ballot > reg.promised;
        reg.promised = ballot;
        let accepted = if self.omit_accepted_in_promise {
            None
        } else {
            reg.accepted.clone()
        };
        let record = changed.then(|| self.record(&key));
        AcceptorOutput {
            reply: Some(Message::Promise {
                key,
                ballot,
                accepted,
            }),
            record,
        }
    }

    /// Phase 2b, with the one-round-trip optimisation: accepting `ballot` also promises `next`
    /// in the same durable step.
    pub fn on_accept(
        &mut self,
        key: Key,
        ballot: Ballot,
        value: RegisterValue,
        next: Option<Ballot>,
    ) -> AcceptorOutput {
        let (promised, accepted) = self.state(&key);
        if ballot < promised {
            return nack(key, ballot, promised);
        }
        // A ballot carries one value, so re-accepting the same ballot is a duplicate.
        let new_promise = next.map_or(ballot, |n| n.max(ballot));
        let unchanged = accepted.is_some_and(|a| a.ballot == ballot) && promised >= new_promise;
        if !unchanged {
            let reg = AcceptorRegister {
                promised: new_promise.max(promised),
                accepted: Some(AcceptedValue { ballot, value }),
            };
            self.registers.insert(key.clone(), reg);
        }
        let record = (!unchanged).then(|| self.record(&key));
        AcceptorOutput {
            reply: Some(Message::Accepted { key, ballot }),
            record,
        }
    }

    /// GC step 3: forget `key` if it still holds the tombstone every acceptor accepted at
    /// `ballot`. Its promise survives as the floor, so no ballot it refused becomes acceptable.
    pub fn on_drop(&mut self, key: Key, ballot: Ballot) -> AcceptorOutput {
        let holds_that_tombstone = self.registers.get(&key).is_some_and(|r| {
            r.accepted
                .as_ref()
                .is_some_and(|a| a.ballot == ballot && a.value.is_tombstone())
        });
        if !holds_that_tombstone {
            return AcceptorOutput {
                reply: None,
                record: None,
            };
        }
        if let Some(r) = self.registers.remove(&key) {
            self.floor = self.floor.max(r.promised);
        }
        AcceptorOutput {
            reply: None,
            record: Some(Record::Dropped {
                key,
                floor: self.floor,
            }),
        }
    }
}

fn nack(key: Key, ballot: Ballot, promised: Ballot) -> AcceptorOutput {
    AcceptorOutput {
        reply: Some(Message::Nack {
            key,
            ballot,
            promised,
        }),
        record: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(counter: u64, node: u64) -> Ballot {
        Ballot { counter, node }
    }

    #[test]
    fn refuses_below_promise_and_reports_accepted() {
        let mut a = Acceptor::new(false);
        let out = a.on_prepare(b"k".to_vec(), b(2, 1));
        assert!(matches!(out.reply, Some(Message::Promise { .. })));
        assert!(out.record.is_some());
        let out = a.on_accept(b"k".to_vec(), b(1, 2), RegisterValue::empty(), None);
        assert!(matches!(out.reply, Some(Message::Nack { promised, .. }) if promised == b(2, 1)));
        assert!(out.record.is_none(), "a refusal changes nothing");
        let out = a.on_accept(
            b"k".to_vec(),
            b(2, 1),
            RegisterValue::empty(),
            Some(b(3, 1)),
        );
        assert!(matches!(out.reply, Some(Message::Accepted { .. })));
        assert_eq!(a.get(b"k").map(|r| r.promised), Some(b(3, 1)));
        let out = a.on_prepare(b"k".to_vec(), b(4, 2));
        let Some(Message::Promise { accepted, .. }) = out.reply else {
            panic!("expected a promise");
        };
        assert_eq!(accepted.map(|a| a.ballot), Some(b(2, 1)));
    }

    #[test]
    fn drop_keeps_the_promise_as_floor() {
        let mut a = Acceptor::new(false);
        let _ = a.on_accept(b"k".to_vec(), b(5, 1), RegisterValue::empty(), None);
        let _ = a.on_prepare(b"k".to_vec(), b(6, 2));
        let out = a.on_drop(b"k".to_vec(), b(4, 1));
        assert!(out.record.is_none(), "wrong ballot: keep");
        let out = a.on_drop(b"k".to_vec(), b(5, 1));
        assert!(out.record.is_some());
        assert!(a.is_empty());
        assert_eq!(a.floor(), b(6, 2));
        let out = a.on_prepare(b"k".to_vec(), b(6, 1));
        assert!(matches!(out.reply, Some(Message::Nack { .. })));
    }
}
