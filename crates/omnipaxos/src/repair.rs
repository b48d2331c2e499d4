//! Repair after lost storage: a server whose disk was wiped, or whose log or snapshot was found
//! damaged (the node quarantines it and restarts with nothing), rejoins without ever voting with
//! state it does not have. The rule follows Protocol-Aware Recovery (Alagappan et al., FAST'18)
//! applied to Sequence Paxos (§4):
//!
//! 1. **The promise floor.** The server forgot the ballots it promised. It asks every peer
//!    (`RepairQuery`, again every heartbeat) and waits for answers from `n − majority + 1`
//!    peers that are not repairing themselves (f + 1 of 2f + 1). Any ballot it promised was
//!    promised by a majority that included it, so by at least `majority − 1` other servers;
//!    `n − majority + 1` answers from the others always include one of them, and their maximum
//!    is at least that ballot. It promises that maximum (durably) before anything else.
//! 2. **Amnesic promises.** It then answers Prepare of ballots at or above the floor, but its
//!    Promise is flagged `amnesic`: the leader neither counts it toward the Prepare quorum nor
//!    adopts its (empty) log — an empty promise counted in a quorum could hide a decided entry
//!    this server had accepted and lost. The leader synchronises it once its own log is final.
//! 3. **Rejoining.** The AcceptSync of a ballot at or above the floor gives it a log it really
//!    accepted — the leader's whole log; only then is it an ordinary server again
//!    (`Amnesic(false)` follows the sync record), voting, promising and leading. A snapshot
//!    install from that leader (when the leader compacted what the sync needs) gives it only
//!    the decided prefix, not what it accepted and lost beyond it, so it stays repairing until
//!    the AcceptSync that follows; its checkpoint is written as a repairing one
//!    (`LogProtocol::repairing`), so a restart in between repairs again. Ending the repair at
//!    the install let it promise as an ordinary server holding the bottom round, and a
//!    candidate with a log of a higher round but shorter than that prefix overwrote decided
//!    entries (planted as `OmniSnapshotEndsRepair`).
//!
//! Until then it never becomes leader (BLE does not nominate it and reports it not
//! quorum-connected), never acknowledges a read-index round, and answers no repair query. If
//! a majority loses its storage at once, nobody can answer, and the repairing servers wait —
//! halted, with nothing acknowledged lost — until enough of them are restored.

use crate::OmniPaxos;
use crate::ballot::Ballot;
use crate::messages::PaxosMessage;
use std::collections::BTreeMap;
use synod_core::NodeId;

/// Volatile progress of a repair (the durable part is `DurableState::amnesic`).
#[derive(Debug, Default)]
pub struct RepairState {
    /// Promised ballots answered to this boot's query, by peer.
    answers: BTreeMap<NodeId, Ballot>,
    /// The floor is known and durably promised: waiting to be synchronised by a leader.
    floor_known: bool,
}

impl OmniPaxos {
    /// Starts a repair at boot (the state is amnesic).
    pub(crate) fn start_repair(&mut self) {
        self.repair = Some(RepairState::default());
        self.ble.set_repairing(true);
        self.send_repair_query();
    }

    /// Servers that may be synchronised by a leader: repairing, with the floor promised.
    pub(crate) fn repair_floor_known(&self) -> bool {
        self.repair.as_ref().is_some_and(|r| r.floor_known)
    }

    /// Every heartbeat until the floor is known: ask the peers that have not answered.
    pub(crate) fn send_repair_query(&mut self) {
        let Some(r) = &self.repair else { return };
        if r.floor_known {
            return;
        }
        let nonce = self.config.boot_nonce;
        let ask: Vec<NodeId> = self
            .config
            .peers()
            .filter(|p| !r.answers.contains_key(p))
            .collect();
        for p in ask {
            self.out.messages.push((
                p,
                crate::Message::Paxos(PaxosMessage::RepairQuery { nonce }),
            ));
        }
    }

    pub(crate) fn handle_repair_query(&mut self, from: NodeId, nonce: u64) {
        if self.store.amnesic {
            // Our promise says nothing about what we promised before: no answer.
            return;
        }
        let promised = self.store.promised;
        self.out.messages.push((
            from,
            crate::Message::Paxos(PaxosMessage::RepairInfo { nonce, promised }),
        ));
    }

    pub(crate) fn handle_repair_info(&mut self, from: NodeId, nonce: u64, promised: Ballot) {
        if nonce != self.config.boot_nonce {
            return;
        }
        let needed = self.config.members.len() - self.config.majority() + 1;
        let Some(r) = &mut self.repair else { return };
        if r.floor_known {
            return;
        }
        r.answers.insert(from, promised);
        if r.answers.len() < needed {
            return;
        }
        let floor = r.answers.values().copied().max().unwrap_or(Ballot::BOTTOM);
        r.floor_known = true;
        if floor > self.store.promised {
            self.store.promise(floor, &mut self.out.records);
        }
    }

    /// A log this server really accepted replaced the lost one: it is ordinary again.
    pub(crate) fn finish_repair(&mut self) {
        if !self.store.amnesic {
            return;
        }
        assert!(
            self.repair_floor_known(),
            "repair finished before its promise floor was known"
        );
        self.store.set_amnesic(false, &mut self.out.records);
        self.repair = None;
        self.ble.set_repairing(false);
    }
}
