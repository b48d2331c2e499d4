//! Quiescence for engines that report a state digest instead of an applied index (CASPaxos):
//! the final reads that make their replicas comparable, and the comparison.
//!
//! A log engine's replicas are comparable at every applied index. CASPaxos replicas are not:
//! an acceptor that missed an Accept keeps an older value until a later round on that key
//! reaches it (see `synod_caspaxos::digest` for why). So once the network is whole, every
//! node is up and the workload clients are done, the simulator reads every key the history
//! touched through every node in turn — one final-read client per key, so keys proceed in
//! parallel and each key's reads are sequential — and then requires every replica's
//! `state_digest` to be equal. The final reads are ordinary linearizable reads: they go into
//! the history and the checker judges them with everything else, and they must complete
//! within the liveness bound like any operation after healing.

use super::{Engine, Ev, NodeId, OpenOp, Sim, SimClient, client, fail};
use std::collections::{BTreeSet, VecDeque};
use synod_core::EngineStatus;

/// Progress of the final reads and the last comparison.
#[derive(Default)]
pub(super) struct Quiesce {
    /// Some replica reported a state digest: this engine is compared at quiescence.
    engine_has_state_digest: bool,
    /// The final-read clients exist.
    started: bool,
    /// The digests at the last comparison after the final reads, for the failure report.
    last: Vec<(NodeId, Option<u64>)>,
}

impl<E: Engine> Sim<E> {
    /// Called once the cluster is healed, every node is up and the clients are done: starts
    /// the final reads the first time, and once they are done compares the digests.
    pub(super) fn state_digests_agree(&mut self, statuses: &[(NodeId, EngineStatus)]) -> bool {
        self.quiesce.engine_has_state_digest = true;
        if !self.quiesce.started {
            self.start_final_reads();
            return false;
        }
        self.digest_seen = true;
        self.quiesce.last = statuses
            .iter()
            .map(|(id, s)| (*id, s.state_digest))
            .collect();
        let first = statuses.first().and_then(|(_, s)| s.state_digest);
        statuses.iter().all(|(_, s)| s.state_digest == first)
    }

    pub(super) fn state_digest_engine(&self) -> bool {
        self.quiesce.engine_has_state_digest
            || self
                .statuses()
                .iter()
                .any(|(_, s)| s.state_digest.is_some())
    }

    fn start_final_reads(&mut self) {
        self.quiesce.started = true;
        // Keys no operation in the history touched hold nothing anywhere.
        let keys: BTreeSet<String> = self.history.iter().map(|op| op.key.clone()).collect();
        for key in keys {
            let id = self.fresh_client_id();
            let slot = self.clients.len();
            self.slot_by_client.insert(id, slot);
            let mut reader = SimClient::workload(id);
            reader.script = Some(self.members.iter().map(|&n| (key.clone(), n)).collect());
            self.clients.push(reader);
            self.at(self.now_us, Ev::ClientStart(slot));
        }
    }

    /// The next read of a final-read client, at the node its script names.
    pub(super) fn start_final_read(&mut self, slot: usize) {
        let now = self.now_us;
        let c = &mut self.clients[slot];
        if c.open.is_some() {
            return;
        }
        let Some((key, node)) = c.script.as_mut().and_then(VecDeque::pop_front) else {
            return;
        };
        let (request, hist) = client::read_op(&key, c.id, c.seq, now);
        c.ops_started += 1;
        c.open = Some(OpenOp {
            request,
            hist,
            attempt: 0,
            maybe_applied: false,
            node: 0,
            is_read: true,
            first_node: Some(node),
            watch_extra: false,
            lease: None,
            compaction: None,
        });
        self.send_attempt(slot);
    }

    /// The run ended without the replicas agreeing at quiescence.
    pub(super) fn fail_state_digests(&mut self) {
        let now_ms = self.now_us / 1000;
        let msg = if self.quiesce.last.is_empty() {
            format!(
                "agreement: the final reads of every key through every node did not finish by {now_ms} ms (healed at {} ms), so the register digests were never comparable",
                self.heal_at_us / 1000
            )
        } else {
            let digests: Vec<String> = self
                .quiesce
                .last
                .iter()
                .map(|(id, d)| match d {
                    Some(d) => format!("n{id} {d:016x}"),
                    None => format!("n{id} none"),
                })
                .collect();
            format!(
                "agreement: register digests still differ at {now_ms} ms after a final read of every key through every node: {}",
                digests.join(", ")
            )
        };
        fail(&mut self.failures, msg);
    }
}
