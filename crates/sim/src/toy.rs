//! A deliberately simple engine for testing the simulator itself: a fixed sequencer.
//!
//! Node 1 (the lowest member) orders every write and linearizable read into a log, replicates
//! it to the others and decides an index once a majority (itself included) has it on disk;
//! every replica applies decided entries in order to a [`KvStore`]. There are no elections, so
//! the cluster is unavailable while node 1 is down or cut off — but it is linearizable, and it
//! never overwrites a log entry, which makes it a clean baseline: any violation the simulator
//! reports on it is a simulator bug or a planted one.
//!
//! Planted bugs it understands:
//! * `StaleLinearizableRead` — a follower answers linearizable reads from its local state.
//! * `AckBeforeMajority` — the sequencer decides an entry as soon as it appended it.
//!
//! Combined with the simulator-level `AckBeforeFsync` (records lost on a machine crash), a
//! sequencer restart reuses log indexes that followers already hold, which the agreement check
//! and the checker catch.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use synod_core::kv::{KvStore, Op, RevisionEvents};
use synod_core::{
    Capabilities, ClientReply, ClientRequest, Consistency, DurableRecord, Engine, EngineConfig,
    EngineError, EngineStatus, NodeId, OutputBuffer, PlantedBug, Ready, RequestId,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToyEntry {
    pub id: RequestId,
    pub first_unacked: u64,
    pub op: Op,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToyMessage {
    /// Follower → sequencer: please order this request.
    Forward(ToyEntry),
    /// Sequencer → follower: log entries from index `start` on, and the decided index.
    Append {
        start: u64,
        entries: Vec<ToyEntry>,
        decided: u64,
    },
    /// Follower → sequencer: my log has `len` entries (all on disk).
    Ack { len: u64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToyRecord {
    pub index: u64,
    pub entry: ToyEntry,
}

impl DurableRecord for ToyRecord {}

struct Pending {
    id: RequestId,
    entry: ToyEntry,
    deadline_tick: u64,
}

pub struct Toy {
    config: EngineConfig,
    sequencer: NodeId,
    log: Vec<ToyEntry>,
    decided: u64,
    kv: KvStore,
    /// Sequencer only: highest log length each follower acknowledged.
    match_len: BTreeMap<NodeId, u64>,
    pending: Vec<Pending>,
    now_tick: u64,
    out: OutputBuffer<ToyMessage, ToyRecord>,
}

impl Toy {
    fn is_sequencer(&self) -> bool {
        self.config.id == self.sequencer
    }

    fn append(&mut self, entry: ToyEntry) {
        self.log.push(entry.clone());
        let index = self.log.len() as u64;
        self.out.records.push(ToyRecord { index, entry });
        if self.config.bug(PlantedBug::AckBeforeMajority) {
            self.decided = index;
            self.apply();
        }
    }

    fn send_appends(&mut self) {
        let peers: Vec<NodeId> = self.config.peers().collect();
        for p in peers {
            let have = self.match_len.get(&p).copied().unwrap_or(0);
            let from = have.min(self.log.len() as u64);
            let end = (from as usize + self.config.batch_entries_max).min(self.log.len());
            self.out.messages.push((
                p,
                ToyMessage::Append {
                    start: from + 1,
                    entries: self.log[from as usize..end].to_vec(),
                    decided: self.decided,
                },
            ));
        }
    }

    fn advance_decided(&mut self) {
        let mut lens: Vec<u64> = self
            .config
            .peers()
            .map(|p| self.match_len.get(&p).copied().unwrap_or(0))
            .collect();
        lens.push(self.log.len() as u64);
        lens.sort_unstable_by(|a, b| b.cmp(a));
        let majority_len = lens[self.config.majority() - 1];
        if majority_len > self.decided {
            self.decided = majority_len;
            self.apply();
        }
    }

    fn apply(&mut self) {
        let upto = self.decided.min(self.log.len() as u64);
        while self.kv.applied_index() < upto {
            let index = self.kv.applied_index() + 1;
            let e = &self.log[(index - 1) as usize];
            let result = self.kv.apply(index, e.id, e.first_unacked, &e.op);
            let id = e.id;
            self.reply_all(id, result);
        }
    }

    fn reply_all(&mut self, id: RequestId, result: Result<synod_core::kv::Response, EngineError>) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].id == id {
                self.pending.swap_remove(i);
                self.out.replies.push(ClientReply {
                    id,
                    result: result.clone(),
                });
            } else {
                i += 1;
            }
        }
    }
}

impl Engine for Toy {
    type Message = ToyMessage;
    type Record = ToyRecord;
    const NAME: &'static str = "toy";

    fn capabilities() -> Capabilities {
        Capabilities {
            ranges: true,
            transactions: true,
            revisions: true,
            watch: true,
            leases: false,
        }
    }

    fn recover(config: EngineConfig, records: Vec<ToyRecord>) -> Result<Self, String> {
        let mut log = Vec::new();
        for r in records {
            if r.index != log.len() as u64 + 1 {
                return Err(format!(
                    "record for index {} after {} entries",
                    r.index,
                    log.len()
                ));
            }
            log.push(r.entry);
        }
        Ok(Toy {
            sequencer: config.members[0],
            kv: KvStore::new(config.kv),
            config,
            log,
            decided: 0,
            match_len: BTreeMap::new(),
            pending: Vec::new(),
            now_tick: 0,
            out: OutputBuffer::default(),
        })
    }

    fn submit(&mut self, request: ClientRequest) {
        if self.pending.len() >= self.config.pending_requests_max {
            self.out.replies.push(ClientReply {
                id: request.id,
                result: Err(EngineError::Busy),
            });
            return;
        }
        let local_read = request.op.is_read()
            && (request.consistency == Consistency::Sequential
                || (!self.is_sequencer() && self.config.bug(PlantedBug::StaleLinearizableRead)));
        if local_read {
            self.out.replies.push(ClientReply {
                id: request.id,
                result: self.kv.read(&request.op),
            });
            return;
        }
        let entry = ToyEntry {
            id: request.id,
            first_unacked: request.first_unacked,
            op: request.op,
        };
        self.pending.push(Pending {
            id: entry.id,
            entry: entry.clone(),
            deadline_tick: self.now_tick + self.config.request_timeout_ticks,
        });
        if self.is_sequencer() {
            self.append(entry);
            self.send_appends();
        } else {
            self.out
                .messages
                .push((self.sequencer, ToyMessage::Forward(entry)));
        }
    }

    fn receive(&mut self, from: NodeId, message: ToyMessage) {
        match message {
            ToyMessage::Forward(entry) if self.is_sequencer() => {
                // A retried forward of an already-ordered write is deduplicated by the KV
                // client table when applied; ordering it twice is harmless.
                self.append(entry);
                self.send_appends();
            }
            ToyMessage::Append {
                start,
                entries,
                decided,
            } if from == self.sequencer => {
                let len = self.log.len() as u64;
                if start <= len + 1 {
                    for (k, e) in entries.into_iter().enumerate() {
                        let index = start + k as u64;
                        if index > self.log.len() as u64 {
                            self.log.push(e.clone());
                            self.out.records.push(ToyRecord { index, entry: e });
                        }
                    }
                }
                self.decided = self.decided.max(decided.min(self.log.len() as u64));
                self.apply();
                self.out.messages.push((
                    self.sequencer,
                    ToyMessage::Ack {
                        len: self.log.len() as u64,
                    },
                ));
            }
            ToyMessage::Ack { len } if self.is_sequencer() => {
                let m = self.match_len.entry(from).or_insert(0);
                *m = (*m).max(len.min(self.log.len() as u64));
                self.advance_decided();
            }
            _ => {}
        }
    }

    fn tick(&mut self) {
        self.now_tick += 1;
        // Expire requests nobody answered: outcome unknown.
        let now = self.now_tick;
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].deadline_tick <= now {
                let p = self.pending.swap_remove(i);
                self.out.replies.push(ClientReply {
                    id: p.id,
                    result: Err(EngineError::Timeout),
                });
            } else {
                i += 1;
            }
        }
        if self.is_sequencer() {
            if now.is_multiple_of(self.config.heartbeat_ticks) {
                self.send_appends();
            }
        } else if now.is_multiple_of(self.config.election_timeout_ticks) {
            // Re-forward what is still pending: the sequencer may have lost it.
            let resend: Vec<ToyEntry> = self.pending.iter().map(|p| p.entry.clone()).collect();
            for e in resend {
                self.out
                    .messages
                    .push((self.sequencer, ToyMessage::Forward(e)));
            }
        }
    }

    fn ready(&mut self) -> Ready<ToyMessage, ToyRecord> {
        self.out.take()
    }

    fn take_watch_events(&mut self) -> Vec<Arc<RevisionEvents>> {
        self.kv.take_fresh_events()
    }

    fn watch_history(
        &self,
        start: u64,
        max_revisions: usize,
    ) -> Result<Vec<Arc<RevisionEvents>>, EngineError> {
        self.kv.history_from(start, max_revisions)
    }

    fn status(&self) -> EngineStatus {
        EngineStatus {
            leader: Some(self.sequencer),
            term: 1,
            decided_index: self.decided,
            applied_index: self.kv.applied_index(),
            revision: self.kv.revision(),
            compact_revision: self.kv.compact_revision(),
            applied_digest: Some(self.kv.digest()),
            state_digest: None,
            pending_requests: self.pending.len(),
            keys: self.kv.len() as u64,
            bytes_in_use: None,
            leases: 0,
            role: if self.is_sequencer() {
                "sequencer".into()
            } else {
                "follower".into()
            },
            ..Default::default()
        }
    }
}
