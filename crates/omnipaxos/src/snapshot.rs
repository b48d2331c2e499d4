//! Log compaction and snapshot transfer.
//!
//! **Checkpoints.** When `snapshot_entries > 0` and at least that many entries were applied
//! since the last checkpoint, `ready` compacts the log up to the applied index and emits a
//! [`Record::Checkpoint`](crate::storage::Record::Checkpoint) (see `storage.rs`).
//!
//! **Snapshot transfer.** A replica whose needed entries were compacted by its peer catches up
//! from the peer's KV store instead. Two cases need it:
//! 1. the leader must AcceptSync a follower from a position below its own compacted index
//!    (the follower was partitioned or crashed while the leader compacted — the op-etcd case,
//!    including a leader that compacted its *whole* decided log);
//! 2. a candidate's Prepare shows that a promising follower compacted entries the candidate's
//!    log lacks (the follower decided further than the candidate): the follower pushes its
//!    snapshot with its Promise, and the candidate finishes its Prepare phase once installed.
//!
//! The transfer is chunked, resumable and bounded in memory:
//! * the sender serialises its KV store once per applied index and shares the bytes among all
//!   its transfers ([`SNAPSHOT_CHUNK_BYTES_MAX`] per chunk, at most
//!   [`SNAPSHOT_CHUNKS_IN_FLIGHT_MAX`] chunks beyond the acknowledged offset, at most one
//!   transfer per destination);
//! * the receiver keeps one partial snapshot at a time and acknowledges the contiguous prefix
//!   it holds; after loss (or its own restart, which acknowledges 0) the sender resends from
//!   the acknowledged offset at the next heartbeat, and gives up after
//!   [`SNAPSHOT_STALL_HEARTBEATS_MAX`] heartbeats without progress;
//! * a complete snapshot is installed as a checkpoint record (log replaced by the decided
//!   prefix), acknowledged with `offset == total_bytes`, and the leader continues with
//!   AcceptSync from the snapshot index.
//!
//! Everything is keyed by the ballot `n` both sides promised: a transfer from an older ballot
//! is dropped, so a deposed leader cannot install anything.

use crate::OmniPaxos;
use crate::ballot::Ballot;
use crate::messages::{Message, Origin, PaxosMessage};
use crate::sequence_paxos::{Phase, Role};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use synod_core::NodeId;
use synod_core::kv::KvStore;

/// Largest chunk of snapshot bytes in one message.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Chunks a sender may have sent beyond the receiver's acknowledged offset.
pub const SNAPSHOT_CHUNKS_IN_FLIGHT_MAX: u64 = 4;
/// Largest snapshot a receiver accepts (its buffer is at most this).
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;
/// Heartbeats without acknowledged progress after which a sender abandons a transfer (the
/// receiver is down or busy with another snapshot; the normal protocol restarts it).
pub const SNAPSHOT_STALL_HEARTBEATS_MAX: u32 = 10;

/// What a snapshot carries: the KV store at the snapshot index and the origins of recently
/// compacted entries (so the receiver keeps deduplicating re-forwarded commands).
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    kv: KvStore,
    origins: Vec<Origin>,
}

#[derive(Debug)]
struct Outgoing {
    n: Ballot,
    snapshot_idx: u64,
    data: Arc<Vec<u8>>,
    /// The receiver holds `data[..acked]`.
    acked: u64,
    /// Chunks were sent up to here.
    sent: u64,
    /// `acked` at the last heartbeat, to notice a stalled transfer.
    acked_at_heartbeat: u64,
    stalled_heartbeats: u32,
}

#[derive(Debug)]
struct Incoming {
    from: NodeId,
    n: Ballot,
    snapshot_idx: u64,
    total_bytes: u64,
    bytes: Vec<u8>,
}

/// Volatile snapshot-transfer state of one server.
#[derive(Debug, Default)]
pub struct SnapshotTransfers {
    outgoing: BTreeMap<NodeId, Outgoing>,
    /// The last serialisation of this server's KV store: (applied index, bytes).
    cache: Option<(u64, Arc<Vec<u8>>)>,
    incoming: Option<Incoming>,
}

impl SnapshotTransfers {
    /// A transfer to `to` is under way in ballot `n`.
    pub fn sending_to(&self, to: NodeId, n: Ballot) -> bool {
        self.outgoing.get(&to).is_some_and(|o| o.n == n)
    }

    /// A snapshot from `from` in ballot `n` is being received.
    pub fn receiving_from(&self, from: NodeId, n: Ballot) -> bool {
        self.incoming
            .as_ref()
            .is_some_and(|i| i.from == from && i.n == n)
    }
}

impl OmniPaxos {
    fn send_snapshot_msg(&mut self, to: NodeId, m: PaxosMessage) {
        self.out.messages.push((to, Message::Paxos(m)));
    }

    /// Called by `ready` after applying: compact and checkpoint every `snapshot_entries`.
    pub(crate) fn maybe_checkpoint(&mut self) {
        let every = self.config.snapshot_entries;
        let applied = self.kv.applied_index();
        if every == 0 || applied < self.store.compacted_idx + every {
            return;
        }
        self.store.compact(applied, &self.kv, &mut self.out.records);
        // The checkpoint carries the decided index too.
        self.decided_persisted = self.decided_persisted.max(self.store.decided_idx);
    }

    /// Starts sending this server's snapshot to `to` in its promised ballot, unless a transfer
    /// to `to` in that ballot is already under way.
    pub(crate) fn start_snapshot_send(&mut self, to: NodeId) {
        let n = self.store.promised;
        if self.snapshots.sending_to(to, n) {
            return;
        }
        let idx = self.kv.applied_index();
        let data = match &self.snapshots.cache {
            Some((i, d)) if *i == idx => Arc::clone(d),
            _ => {
                let snap = SnapshotData {
                    kv: self.kv.clone(),
                    origins: self.store.origins_through(idx),
                };
                let Ok(bytes) = postcard::to_allocvec(&snap) else {
                    // Serialising our own in-memory state cannot fail with postcard; if it
                    // ever does, the normal protocol retries at the next heartbeat.
                    return;
                };
                let d = Arc::new(bytes);
                self.snapshots.cache = Some((idx, Arc::clone(&d)));
                d
            }
        };
        self.snapshots.outgoing.insert(
            to,
            Outgoing {
                n,
                snapshot_idx: idx,
                data,
                acked: 0,
                sent: 0,
                acked_at_heartbeat: 0,
                stalled_heartbeats: 0,
            },
        );
        self.send_snapshot_chunks(to);
    }

    /// Sends chunks to `to` up to the in-flight window beyond the acknowledged offset.
    fn send_snapshot_chunks(&mut self, to: NodeId) {
        let Some(o) = self.snapshots.outgoing.get_mut(&to) else {
            return;
        };
        let total = o.data.len() as u64;
        let window_end =
            total.min(o.acked + SNAPSHOT_CHUNKS_IN_FLIGHT_MAX * SNAPSHOT_CHUNK_BYTES_MAX as u64);
        let mut msgs = Vec::new();
        // An empty snapshot still needs one (empty) chunk to be delivered.
        while o.sent < window_end || (total == 0 && o.sent == 0 && msgs.is_empty()) {
            let end = window_end.min(o.sent + SNAPSHOT_CHUNK_BYTES_MAX as u64);
            msgs.push(PaxosMessage::SnapshotChunk {
                n: o.n,
                snapshot_idx: o.snapshot_idx,
                total_bytes: total,
                offset: o.sent,
                data: o.data[o.sent as usize..end as usize].to_vec(),
            });
            o.sent = end;
            if total == 0 {
                break;
            }
        }
        for m in msgs {
            self.send_snapshot_msg(to, m);
        }
    }

    /// Every heartbeat: drop transfers of a ballot we no longer hold, resend from the
    /// acknowledged offset where nothing progressed, abandon transfers stalled too long.
    pub(crate) fn snapshot_heartbeat(&mut self) {
        let promised = self.store.promised;
        self.snapshots.outgoing.retain(|_, o| o.n == promised);
        if self
            .snapshots
            .incoming
            .as_ref()
            .is_some_and(|i| i.n != promised)
        {
            self.snapshots.incoming = None;
        }
        let mut resend = Vec::new();
        let mut abandon = Vec::new();
        for (to, o) in self.snapshots.outgoing.iter_mut() {
            if o.acked > o.acked_at_heartbeat {
                o.acked_at_heartbeat = o.acked;
                o.stalled_heartbeats = 0;
                continue;
            }
            o.stalled_heartbeats += 1;
            if o.stalled_heartbeats > SNAPSHOT_STALL_HEARTBEATS_MAX {
                abandon.push(*to);
            } else {
                o.sent = o.acked;
                resend.push(*to);
            }
        }
        for to in abandon {
            self.snapshots.outgoing.remove(&to);
        }
        for to in resend {
            self.send_snapshot_chunks(to);
        }
        if self.snapshots.outgoing.is_empty() {
            // No transfer needs the bytes any more: do not hold a copy of the store.
            self.snapshots.cache = None;
        }
    }

    pub(crate) fn handle_snapshot_ack(&mut self, from: NodeId, n: Ballot, idx: u64, offset: u64) {
        let Some(o) = self.snapshots.outgoing.get_mut(&from) else {
            return;
        };
        if o.n != n || o.snapshot_idx != idx || n != self.store.promised {
            return;
        }
        let total = o.data.len() as u64;
        if offset >= total {
            self.snapshots.outgoing.remove(&from);
            // Leader: the follower holds the decided prefix [0, idx) in ballot n; continue
            // with AcceptSync from there (a newer snapshot if we compacted past it meanwhile).
            if self
                .leader_state()
                .is_some_and(|l| l.n == n && l.phase == Phase::Accept)
            {
                self.send_accept_sync(from, idx);
            }
            return;
        }
        if offset < o.acked {
            // The receiver lost what it had (restart): start over from there at the next
            // heartbeat, not now, so repeated stale acks cannot multiply traffic.
            o.acked = offset;
            o.acked_at_heartbeat = offset;
            o.sent = offset;
            return;
        }
        if offset > o.acked {
            o.acked = offset;
            self.send_snapshot_chunks(from);
        }
    }

    fn ack_snapshot(&mut self, to: NodeId, n: Ballot, snapshot_idx: u64, offset: u64) {
        self.send_snapshot_msg(
            to,
            PaxosMessage::SnapshotAck {
                n,
                snapshot_idx,
                offset,
            },
        );
    }

    pub(crate) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        n: Ballot,
        snapshot_idx: u64,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
    ) {
        if n != self.store.promised {
            return;
        }
        let (follower, candidate) = match &self.role {
            Role::Follower => (from == n.pid, false),
            Role::Leader(l) => (false, l.n == n && l.phase == Phase::Prepare),
        };
        let leading_n = self.leader_state().is_some_and(|l| l.n == n);
        if !follower && !candidate {
            if leading_n {
                // An Accept-phase leader's log is final: it needs no snapshot. Stop the sender.
                self.ack_snapshot(from, n, snapshot_idx, total_bytes);
            }
            return;
        }
        if snapshot_idx <= self.store.decided_idx {
            // Already have that prefix.
            if self
                .snapshots
                .incoming
                .as_ref()
                .is_some_and(|i| i.from == from && i.snapshot_idx == snapshot_idx)
            {
                self.snapshots.incoming = None;
            }
            self.ack_snapshot(from, n, snapshot_idx, total_bytes);
            return;
        }
        if total_bytes > SNAPSHOT_BYTES_MAX {
            return;
        }
        let same = self.snapshots.incoming.as_ref().is_some_and(|i| {
            i.from == from
                && i.n == n
                && i.snapshot_idx == snapshot_idx
                && i.total_bytes == total_bytes
        });
        if !same {
            let replace = offset == 0
                && self
                    .snapshots
                    .incoming
                    .as_ref()
                    .is_none_or(|i| i.n != n || snapshot_idx > i.snapshot_idx);
            if replace {
                self.snapshots.incoming = Some(Incoming {
                    from,
                    n,
                    snapshot_idx,
                    total_bytes,
                    bytes: Vec::new(),
                });
            } else {
                if offset > 0 && self.snapshots.incoming.is_none() {
                    // We hold nothing of it (restarted, or dropped it): resume from 0.
                    self.ack_snapshot(from, n, snapshot_idx, 0);
                }
                // Busy with another snapshot at least as new: let this sender stall out.
                return;
            }
        }
        let Some(inc) = self.snapshots.incoming.as_mut() else {
            return;
        };
        let held = inc.bytes.len() as u64;
        if offset == held && held + data.len() as u64 <= total_bytes {
            inc.bytes.extend_from_slice(&data);
        }
        let held = inc.bytes.len() as u64;
        if held < total_bytes {
            self.ack_snapshot(from, n, snapshot_idx, held);
            return;
        }
        let Some(inc) = self.snapshots.incoming.take() else {
            return;
        };
        if self.install_snapshot(n, snapshot_idx, &inc.bytes) {
            self.ack_snapshot(from, n, snapshot_idx, total_bytes);
        } else {
            // Undecodable: ask for it again from the start.
            self.ack_snapshot(from, n, snapshot_idx, 0);
        }
    }

    /// Installs a complete snapshot. Returns false if the bytes do not decode to a store at
    /// `snapshot_idx` (corruption the transport did not catch).
    fn install_snapshot(&mut self, n: Ballot, snapshot_idx: u64, bytes: &[u8]) -> bool {
        let Ok(snap) = postcard::from_bytes::<SnapshotData>(bytes) else {
            return false;
        };
        if snap.kv.applied_index() != snapshot_idx {
            return false;
        }
        if snapshot_idx <= self.store.decided_idx {
            return true;
        }
        // A follower of n holds, after this, a prefix of the n-leader's final log (the decided
        // prefix is in every later round's log): its accepted round becomes n. A candidate
        // keeps its accepted round; its Prepare phase sets it when it completes.
        let accepted_round = if self.role.is_leader() {
            self.store.accepted_round
        } else {
            n
        };
        self.store.install_snapshot(
            accepted_round,
            &snap.kv,
            &snap.origins,
            &mut self.out.records,
        );
        self.kv = snap.kv;
        self.decided_persisted = self.decided_persisted.max(self.store.decided_idx);
        self.on_snapshot_installed();
        true
    }
}
