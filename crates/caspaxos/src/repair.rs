//! Repair after lost storage: a node whose disk was wiped, or whose records or snapshot were
//! found damaged (the node layer quarantines them and starts with nothing), rebuilds its
//! acceptor from its peers before it answers any Prepare or Accept again.
//!
//! **Why merging is safe.** The node asks every peer for its registers (paged, in key order):
//! the members it was started with, those of the newest configuration any page carried, and
//! any node that talks to it meanwhile (after membership changes the first may all be gone)
//! and waits for complete answers from `n − majority + 1` peers that are not repairing (f + 1 of
//! 2f + 1) — counted in the configuration the cluster holds, which every page carries (the
//! node's own was lost with its disk, and the members it was started with may be long gone; see
//! [`answers_needed`] for the count during a membership change). Per key it keeps the highest promise (raised to the highest floor, which is what an
//! absent key is promised at) and the accepted pair with the highest ballot.
//! * A ballot this node promised before the loss was promised by a quorum of `majority` nodes,
//!   so by `majority − 1` others; `n − majority + 1` answering peers always include one of them,
//!   so the merged promise is at least as high: no ballot it refused becomes acceptable.
//! * A value chosen with this node in its quorum is held (or superseded by a higher ballot) by
//!   one of the other quorum members among the answers, so the merged pair is at least as high.
//! * The merged pair was really accepted by a peer at that ballot, i.e. its proposer really
//!   sent that Accept: holding it is a state the acceptor could have reached.
//!
//! The proposer's ballot counter restarts above the merged promises (every ballot it used in an
//! Accept was promised by a quorum, so one answer shows it). Until the repair completes the
//! node's acceptor stays silent, its proposer answers clients `Busy` (definitely not applied,
//! retry elsewhere), and it answers no repair query. If a majority loses its storage at once
//! nobody can answer and the repairing nodes wait, halted, with nothing acknowledged lost.

use crate::CasPaxos;
use crate::ballot::Ballot;
use crate::messages::{Message, Record, RegisterRecord};
use std::collections::BTreeMap;
use synod_core::NodeId;
use synod_core::kv::Key;

/// Registers per repair page (a register carries its value and session table, so the page
/// stays far below the transport's frame limit at the largest values).
pub const REPAIR_PAGE_KEYS_MAX: usize = 16;
/// Ticks between re-sent repair queries (a lost query or page is asked for again).
pub const REPAIR_RETRY_TICKS: u64 = 10;

/// Progress of one peer's answer.
#[derive(Debug)]
struct PeerPages {
    /// The next page starts after this key (`None`: from the first).
    after: Option<Key>,
    done: bool,
    /// Floor this peer reported.
    floor: Ballot,
}

impl Default for PeerPages {
    fn default() -> Self {
        PeerPages {
            after: None,
            done: false,
            floor: Ballot::ZERO,
        }
    }
}

/// Volatile progress of a repair (the durable part is the `Amnesic(true)` record).
#[derive(Debug, Default)]
pub struct RepairState {
    peers: BTreeMap<NodeId, PeerPages>,
    merged: BTreeMap<Key, RegisterRecord>,
}

impl CasPaxos {
    /// Every `REPAIR_RETRY_TICKS`: ask each peer that has not finished for its next page.
    pub(crate) fn repair_tick(&mut self) {
        if self.repair.is_none() || !self.now_tick.is_multiple_of(REPAIR_RETRY_TICKS) {
            return;
        }
        // The members it was started with, and those of the newest configuration it learned
        // (the cluster may have changed since it was started).
        let mut peers: Vec<NodeId> = self.config.members.clone();
        peers.extend(self.cas_config.iter().flat_map(|c| c.members()));
        peers.extend(self.repair.iter().flat_map(|r| r.peers.keys().copied()));
        peers.sort_unstable();
        peers.dedup();
        peers.retain(|m| *m != self.config.id);
        for p in peers {
            self.ask_page(p);
        }
    }

    /// A node we had not asked talks to us while we repair (the members we know of may all
    /// be gone): ask it too. Bounded by the cluster's size, since each peer is asked once here
    /// and afterwards only by `repair_tick`.
    pub(crate) fn repair_hear_from(&mut self, peer: NodeId) {
        let known = self
            .repair
            .as_ref()
            .is_none_or(|r| r.peers.contains_key(&peer));
        if !known {
            self.ask_page(peer);
        }
    }

    fn ask_page(&mut self, peer: NodeId) {
        let nonce = self.config.boot_nonce;
        let Some(r) = &mut self.repair else { return };
        let pages = r.peers.entry(peer).or_default();
        if pages.done {
            return;
        }
        let after = pages.after.clone();
        self.out
            .messages
            .push((peer, Message::RepairQuery { nonce, after }));
    }

    pub(crate) fn handle_repair_query(&mut self, from: NodeId, nonce: u64, after: Option<Key>) {
        // A joining node is empty on purpose: its pages would count as a complete answer
        // without holding anything chosen.
        let Some(config) = self.cas_config.clone().filter(|_| self.repair.is_none()) else {
            return;
        };
        let (registers, next) = self.acceptor.page(after.as_ref(), REPAIR_PAGE_KEYS_MAX);
        let floor = self.acceptor.floor();
        self.out.messages.push((
            from,
            Message::RepairPage {
                nonce,
                after,
                floor,
                registers,
                next,
                config,
            },
        ));
    }

    pub(crate) fn handle_repair_page(
        &mut self,
        from: NodeId,
        nonce: u64,
        after: Option<Key>,
        floor: Ballot,
        registers: Vec<RegisterRecord>,
        next: Option<Key>,
    ) {
        if nonce != self.config.boot_nonce {
            return;
        }
        let Some(r) = &mut self.repair else { return };
        let pages = r.peers.entry(from).or_default();
        if pages.done || pages.after != after {
            return; // a duplicate or stale page
        }
        pages.floor = pages.floor.max(floor);
        pages.done = next.is_none();
        pages.after = next;
        for reg in registers {
            merge(&mut r.merged, reg);
        }
        let (counted, needed) = answers_needed(&self.config, self.cas_config.as_ref());
        let needed = if self
            .config
            .bug(synod_core::PlantedBug::CasRepairFromOnePeer)
        {
            1 // PLANTED BUG: one peer's registers may miss a value chosen with this node.
        } else {
            needed
        };
        let complete = r
            .peers
            .iter()
            .filter(|(id, p)| p.done && counted.contains(id))
            .count();
        if complete >= needed {
            self.finish_repair();
        } else {
            self.ask_page(from);
        }
    }

    /// Installs the merged state durably (one checkpoint record, then `Amnesic(false)`).
    fn finish_repair(&mut self) {
        let Some(r) = self.repair.take() else { return };
        let floor = r
            .peers
            .values()
            .filter(|p| p.done)
            .map(|p| p.floor)
            .max()
            .unwrap_or(Ballot::ZERO);
        let registers: Vec<RegisterRecord> = r
            .merged
            .into_values()
            .map(|mut reg| {
                // An absent key is promised at its peer's floor: promise at least the highest.
                reg.promised = reg.promised.max(floor);
                reg
            })
            .collect();
        self.acceptor.install_repaired(floor, registers);
        self.proposer.observe(self.acceptor.highest_promised());
        let cp = self
            .acceptor
            .checkpoint(self.proposer.leased_counter_max(), self.cas_config.clone());
        self.digest.apply(&cp);
        self.out.records.push(cp);
        self.out.records.push(Record::Amnesic(false));
        self.records_since_checkpoint = 0;
    }
}

/// Whose complete answers count, and how many are needed: every member of the configuration
/// held (the newest any answer carried) but this node, all but `q − 2` of them, where `q` is the
/// smallest quorum of that configuration's step. A quorum this node was part of has at least
/// `q − 1` other members, so it meets the answers in at least one. For a stable configuration
/// of `n` that is the `n − majority + 1` of the module docs; during a change it counts the
/// members of both configurations and the smaller of the prepare and accept quorums (adjacent
/// steps share their members, and a value chosen two steps back was rescanned onto the newer
/// quorums). Without a configuration (never the case while repairing): the members it was
/// started with.
fn answers_needed(
    engine: &synod_core::EngineConfig,
    held: Option<&crate::reconf::CasConfig>,
) -> (Vec<NodeId>, usize) {
    let (mut members, smallest_quorum) = match held {
        Some(c) => {
            let q = c.quorums();
            (c.members(), q.prepare_quorum.min(q.accept_quorum))
        }
        None => (engine.members.clone(), engine.majority()),
    };
    members.retain(|m| *m != engine.id);
    let needed = (members.len() + 2)
        .saturating_sub(smallest_quorum)
        .clamp(1, members.len().max(1));
    (members, needed)
}

/// Keeps the highest promise and the highest-ballot accepted pair of `key`.
fn merge(merged: &mut BTreeMap<Key, RegisterRecord>, reg: RegisterRecord) {
    let Some(have) = merged.get_mut(&reg.key) else {
        merged.insert(reg.key.clone(), reg);
        return;
    };
    have.promised = have.promised.max(reg.promised);
    let higher = match (&have.accepted, &reg.accepted) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(b)) => b.ballot > a.ballot,
    };
    if higher {
        have.accepted = reg.accepted;
    }
}
