//! `snapshot_chunk`: the replica layer's messages from a peer, snapshot chunks above all,
//! delivered to a live replica.
//!
//! A fresh replica (member 2 of {1, 2, 3}) of the VR or OmniPaxos engine receives a sequence
//! of messages decoded with postcard — as the transport decodes them — from the fuzz input.
//! For VR at first boot, member 1 is the primary of view 0, so `SnapshotChunk`s from it in
//! term 0 are received, reassembled and, once complete, decoded as a `StateImage` and
//! installed: the bytes of a snapshot transfer reach the state machine. Every other message
//! (protocol, forwards, read index, acks) takes its real path too.
//!
//! The replica must not panic, and everything it then asks to persist or send must encode
//! (the node would otherwise fail to write its log or to answer).
//!
//! Input layout: `flags | (from u8, postcard message)…`; flags bit 0 picks the engine
//! (0 = VR, 1 = OmniPaxos), bit 1 ticks the replica after every message.

use crate::{OmniPaxosEngine, VrEngine};
use serde::Serialize;
use synod_core::{Engine, EngineConfig, NodeId};

/// Messages delivered per input: enough for a multi-chunk transfer plus protocol traffic,
/// small enough that one run stays fast.
const MESSAGES_MAX: usize = 64;

/// The replica under test and its peers.
pub const LOCAL: NodeId = 2;
pub const MEMBERS: [NodeId; 3] = [1, 2, 3];

/// The configuration the replica under test runs with.
pub fn config() -> EngineConfig {
    let mut c = EngineConfig::new(LOCAL, MEMBERS.to_vec(), 0x5eed);
    c.first_boot = true;
    // Small, so checkpoints (and the compaction behind them) happen within one input.
    c.snapshot_entries = 4;
    c
}

/// Builds an input for engine `omnipaxos` (else VR) delivering `messages` (used by the corpus
/// generator).
pub fn input<M: Serialize>(omnipaxos: bool, tick: bool, messages: &[(NodeId, M)]) -> Vec<u8> {
    let mut v = vec![u8::from(omnipaxos) | (u8::from(tick) << 1)];
    for (from, m) in messages {
        v.push(u8::try_from(*from).expect("small member ids"));
        v.extend(postcard::to_allocvec(m).expect("a message encodes"));
    }
    v
}

pub fn run(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let tick = flags & 2 != 0;
    if flags & 1 == 0 {
        deliver::<VrEngine>(rest, tick);
    } else {
        deliver::<OmniPaxosEngine>(rest, tick);
    }
}

/// Delivers the messages encoded in `rest` to a fresh replica and returns it (so a test can
/// check that a seed really reaches, say, the snapshot install).
pub fn deliver<E: Engine>(mut rest: &[u8], tick: bool) -> E {
    let mut replica = E::recover(config(), Vec::new()).expect("a fresh replica recovers");
    drain(&mut replica);
    for _ in 0..MESSAGES_MAX {
        let Some((&from, body)) = rest.split_first() else {
            break;
        };
        let Ok((message, tail)) = postcard::take_from_bytes::<E::Message>(body) else {
            break;
        };
        rest = tail;
        // Any byte names a member (a member's id names itself): the transport only hands
        // over messages from members.
        let from = NodeId::from(from);
        let from = if MEMBERS.contains(&from) {
            from
        } else {
            MEMBERS[(from % MEMBERS.len() as u64) as usize]
        };
        replica.receive(from, message);
        if tick {
            replica.tick();
        }
        drain(&mut replica);
    }
    replica
}

/// Takes the replica's output as the runtime does: records are persisted (encoded), then the
/// messages are sent (encoded).
fn drain<E: Engine>(replica: &mut E) {
    let ready = replica.ready();
    let outbox = ready
        .persist(|records| {
            for r in records {
                postcard::to_allocvec(r).expect("a record the replica emits encodes");
            }
            Ok::<(), ()>(())
        })
        .expect("persisting cannot fail here");
    for (_, m) in &outbox.messages {
        postcard::to_allocvec(m).expect("a message the replica sends encodes");
    }
}
