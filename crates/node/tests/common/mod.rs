//! A tiny primary-backup engine for runtime tests, so the node runtime can be tested before
//! (and independently of) the real engines. The lowest member id is the primary: it applies
//! writes to its KV store, persists one record per applied op, and replies (to a follower
//! that forwarded, via a message). Not fault tolerant — a test fixture, not a protocol.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use synod_core::kv::{KvLimits, KvStore, Op};
use synod_core::{
    Capabilities, ClientReply, ClientRequest, DurableRecord, Engine, EngineConfig, EngineStatus,
    NodeId, OutputBuffer, Ready, RequestId,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToyMsg {
    Forward {
        origin: NodeId,
        request: ClientRequest,
    },
    Reply(ClientReply),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToyRecord {
    pub index: u64,
    pub id: RequestId,
    pub first_unacked: u64,
    pub op: Op,
}

impl DurableRecord for ToyRecord {}

pub struct Toy {
    cfg: EngineConfig,
    store: KvStore,
    index: u64,
    out: OutputBuffer<ToyMsg, ToyRecord>,
    /// Requests forwarded by this follower, awaiting the primary's reply.
    forwarded: HashMap<RequestId, ()>,
}

impl Toy {
    fn primary(&self) -> NodeId {
        self.cfg.members[0]
    }

    /// Executes at the primary; returns the reply.
    fn execute(&mut self, r: &ClientRequest) -> ClientReply {
        let result = if r.op.is_read() {
            self.store.read(&r.op)
        } else {
            self.index += 1;
            self.out.records.push(ToyRecord {
                index: self.index,
                id: r.id,
                first_unacked: r.first_unacked,
                op: r.op.clone(),
            });
            self.store.apply(self.index, r.id, r.first_unacked, &r.op)
        };
        ClientReply { id: r.id, result }
    }
}

impl Engine for Toy {
    type Message = ToyMsg;
    type Record = ToyRecord;
    const NAME: &'static str = "toy";

    fn capabilities() -> Capabilities {
        Capabilities {
            ranges: true,
            transactions: true,
            revisions: true,
            watch: true,
            leases: true,
        }
    }

    fn recover(config: EngineConfig, records: Vec<ToyRecord>) -> Result<Self, String> {
        let mut store = KvStore::new(KvLimits::default());
        let mut index = 0;
        for r in records {
            if r.index != index + 1 {
                return Err(format!("record index {} after {index}", r.index));
            }
            index = r.index;
            let _ = store.apply(r.index, r.id, r.first_unacked, &r.op);
        }
        Ok(Toy {
            cfg: config,
            store,
            index,
            out: OutputBuffer::default(),
            forwarded: HashMap::new(),
        })
    }

    fn submit(&mut self, request: ClientRequest) {
        if self.cfg.id == self.primary() {
            let reply = self.execute(&request);
            self.out.replies.push(reply);
        } else {
            self.forwarded.insert(request.id, ());
            let to = self.primary();
            self.out.messages.push((
                to,
                ToyMsg::Forward {
                    origin: self.cfg.id,
                    request,
                },
            ));
        }
    }

    fn receive(&mut self, _from: NodeId, message: ToyMsg) {
        match message {
            ToyMsg::Forward { origin, request } => {
                let reply = self.execute(&request);
                self.out.messages.push((origin, ToyMsg::Reply(reply)));
            }
            ToyMsg::Reply(reply) => {
                if self.forwarded.remove(&reply.id).is_some() {
                    self.out.replies.push(reply);
                }
            }
        }
    }

    fn tick(&mut self) {}

    fn ready(&mut self) -> Ready<ToyMsg, ToyRecord> {
        self.out.take()
    }

    fn status(&self) -> EngineStatus {
        let leader = self.primary();
        EngineStatus {
            leader: Some(leader),
            term: 1,
            decided_index: self.index,
            applied_index: self.index,
            revision: self.store.revision(),
            compact_revision: self.store.compact_revision(),
            applied_digest: Some(self.store.digest()),
            state_digest: None,
            pending_requests: self.forwarded.len(),
            keys: self.store.len() as u64,
            role: if self.cfg.id == leader {
                "leader"
            } else {
                "follower"
            }
            .into(),
            ..Default::default()
        }
    }
}
