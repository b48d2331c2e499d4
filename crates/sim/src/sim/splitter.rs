//! Range splits and merges at run time, for partitioned runs: an operator asks a random
//! member to split the range holding a random key at that key (`synodctl range split`), or to
//! merge the range beginning at it into the one below (`synodctl range merge`; refused when
//! the key begins no range), at random moments of the fault window, while the clients,
//! crashes and partitions run. Neither may cost an acknowledged write, answer a key from a
//! group that gave it away, or apply a retried write twice (the linearizability checker
//! judges that), and every group's members must agree (the agreement check). The counts say
//! whether splits and merges happened at all.
//!
//! **Moves** (placement, `RunConfig::moves`): the operator asks a random member to move the
//! group of a random key from a random member to another (`synodctl range move`; refused when
//! the first does not host it or the second does). A move answered with anything but its
//! outcome or a refusal (a timeout, its driver crashed) is asked again at the operator's next
//! turn half the time — a retry of a move its group's leader goes on with from the directory's
//! record (`targets.rs`) — and left to the group otherwise; never after the fault window, so a
//! move cut short then must be finished by whoever leads its group, from the record (every
//! run must end with no move recorded, planted `move-target-not-resumed`). Half the moves
//! after one that was done take it back, so members rejoin groups they left (their earlier
//! stay is in the group's state; planted `rejoin-reuses-origins`).
//!
//! Draws come from a stream of their own, so splits leave a seed's fault schedule and workload
//! as they were.

use super::{Ev, Sim};
use crate::client::key_name;
use synod_core::kv::{MergeRequest, MoveRequest, Op, ResponseBody, SplitRequest};
use synod_core::{
    ClientId, ClientReply, ClientRequest, Consistency, Engine, EngineError, RequestId, SplitMix64,
};

/// The client id of the split operator's requests.
pub const SPLITTER_CLIENT: ClientId = ClientId(u64::MAX - 11);
/// Pause between two split requests.
const GAP_MIN_US: u64 = 200_000;
const GAP_MAX_US: u64 = 900_000;

#[derive(Debug)]
pub enum SplitterEv {
    Ask,
}

/// The split operator's state in one run.
#[derive(Debug)]
pub struct Splitter {
    pub enabled: bool,
    rng: SplitMix64,
    seq: u64,
    pub asked: u64,
    /// Splits that took effect (the split key cut a range in two).
    pub done: u64,
    /// Merges that took effect (the key began a range, which froze for the one below).
    pub merged: u64,
    /// Refused (the key begins a range already) or lost with a crash.
    pub refused: u64,
    /// Asks moves instead of splits and merges (half of each with `splits` too: placed
    /// groups that split, `learned.rs` of the partitioned engine).
    moves: bool,
    splits: bool,
    /// Placed groups do not merge: only splits are asked (half of the asks, with `moves`).
    placed: bool,
    /// Mixed runs: the splits asked and not answered yet (a move's answers are told apart by
    /// `pending_move`).
    split_asks: std::collections::BTreeSet<u64>,
    /// The move asked last while it is neither done nor refused, and the sequence number of
    /// its last ask (only that ask's answer counts: an earlier one may come late).
    pending_move: Option<(MoveRequest, u64)>,
    /// Moves answered as done.
    pub moved: u64,
    /// The last move answered as done: the next fresh move may take it back.
    last_moved: Option<MoveRequest>,
}

impl Splitter {
    pub fn new(seed: u64, splits: bool, moves: bool, placed: bool) -> Self {
        Splitter {
            placed,
            enabled: splits || moves,
            moves,
            splits,
            split_asks: Default::default(),
            pending_move: None,
            moved: 0,
            last_moved: None,
            rng: SplitMix64::fork(seed, 13),
            seq: 0,
            asked: 0,
            done: 0,
            merged: 0,
            refused: 0,
        }
    }
}

impl<E: Engine> Sim<E> {
    pub(super) fn splitter_start(&mut self) {
        if !self.splitter.enabled {
            return;
        }
        let first = self.splitter.rng.range(GAP_MIN_US, GAP_MAX_US);
        self.at(first, Ev::Splitter(SplitterEv::Ask));
    }

    pub(super) fn splitter_event(&mut self, ev: SplitterEv) {
        match ev {
            SplitterEv::Ask => {
                self.splitter_ask();
                let next = self.now_us + self.splitter.rng.range(GAP_MIN_US, GAP_MAX_US);
                if next < self.heal_at_us {
                    self.at(next, Ev::Splitter(SplitterEv::Ask));
                }
            }
        }
    }

    fn splitter_ask(&mut self) {
        let members = self.members.to_vec();
        if members.is_empty() {
            return;
        }
        let node = members[self.splitter.rng.below(members.len() as u64) as usize];
        let at = key_name(self.splitter.rng.below(self.cfg.keys.max(1))).into_bytes();
        // Runs with moves and splits draw which one; others draw nothing (their seeds stay).
        let moving =
            self.splitter.moves && (!self.splitter.splits || self.splitter.rng.below(2) == 0);
        let op = if moving {
            let again = self.splitter.rng.below(2) == 0;
            let back = self
                .splitter
                .last_moved
                .take()
                .filter(|_| self.splitter.rng.below(2) == 0);
            let fresh = || {
                if let Some(m) = back {
                    return MoveRequest {
                        at: m.at,
                        from: m.to,
                        to: m.from,
                    };
                }
                let from_at = self.splitter.rng.below(members.len() as u64) as usize;
                let step = 1 + self.splitter.rng.below(members.len().max(2) as u64 - 1) as usize;
                MoveRequest {
                    at,
                    from: members[from_at],
                    to: members[(from_at + step) % members.len()],
                }
            };
            let m = match self.splitter.pending_move.take() {
                Some((m, _)) if again => m,
                _ if self.now_us < self.heal_at_us => fresh(),
                _ => return,
            };
            self.splitter.pending_move = Some((m.clone(), self.splitter.seq + 1));
            Op::Move(m)
        } else if self.splitter.moves || self.splitter.placed {
            // Placed groups do not merge: a split each time.
            self.splitter.split_asks.insert(self.splitter.seq + 1);
            Op::Split(SplitRequest { at })
        } else if self.splitter.rng.below(2) == 0 {
            Op::Split(SplitRequest { at })
        } else {
            Op::Merge(MergeRequest { at })
        };
        self.splitter.seq += 1;
        self.splitter.asked += 1;
        let seq = self.splitter.seq;
        let request = ClientRequest {
            id: RequestId {
                client: SPLITTER_CLIENT,
                seq,
            },
            first_unacked: seq,
            op,
            consistency: Consistency::Linearizable,
        };
        self.at(self.now_us + 500, Ev::Submit { node, request });
    }

    pub(super) fn splitter_reply(&mut self, reply: &ClientReply) {
        let split_ask = self.splitter.split_asks.remove(&reply.id.seq);
        if self.splitter.moves && !split_ask {
            if self.splitter.pending_move.as_ref().map(|(_, seq)| *seq) != Some(reply.id.seq) {
                return; // an earlier ask's late answer
            }
            match &reply.result {
                Ok(_) => {
                    self.splitter.moved += 1;
                    self.splitter.last_moved = self.splitter.pending_move.take().map(|(m, _)| m);
                }
                Err(EngineError::InvalidRequest(_)) => self.splitter.refused += 1,
                // Not known to be done: asked again.
                Err(_) => return,
            }
            self.splitter.pending_move = None;
            return;
        }
        match &reply.result {
            Ok(r) if matches!(r.body, ResponseBody::Merge { .. }) => self.splitter.merged += 1,
            Ok(_) => self.splitter.done += 1,
            Err(_) => self.splitter.refused += 1,
        }
    }
}
