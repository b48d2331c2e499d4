//! The engine's durable records: the protocol's, wrapped, plus the replica layer's own —
//! incarnations and checkpoints — and how they are replayed on recovery.
//!
//! A checkpoint holds everything recovery needs: the protocol's state with its log prefix
//! `[0, compacted_idx)` dropped, and the applied state at exactly `compacted_idx` (the KV store
//! and the origin window). Storage may drop every record before it.

use crate::state::StateBytes;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use synod_core::DurableRecord;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Record<R, C> {
    Protocol(R),
    /// This replica restarted; origins it creates from now on carry this incarnation, so
    /// sequence numbers of pending requests are never reused across restarts.
    Incarnation(u64),
    Checkpoint(Box<Checkpoint<C>>),
    /// A checkpoint of a replica that holds no protocol instance — a learner, a member being
    /// added that has no state yet (its configuration is then empty), or a removed member:
    /// only the applied state. (Appended after the others so older logs still decode.)
    StateCheckpoint {
        incarnation: u64,
        state: StateBytes,
    },
    /// A checkpoint written by a snapshot install that left the protocol repairing lost
    /// storage ([`synod_core::LogProtocol::repairing`]): recovery resumes the repair. (Appended
    /// after the others so older logs still decode.)
    RepairingCheckpoint(Box<Checkpoint<C>>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint<C> {
    pub protocol: C,
    pub incarnation: u64,
    /// A serialised `StateImage` whose `kv.applied_index()` is the protocol's compacted index.
    pub state: StateBytes,
}

impl<R, C> Record<R, C> {
    /// A checkpoint of any kind: storage may drop every record before it.
    fn subsumes_earlier(&self) -> bool {
        matches!(
            self,
            Record::Checkpoint(_) | Record::StateCheckpoint { .. } | Record::RepairingCheckpoint(_)
        )
    }
}

impl<R, C> DurableRecord for Record<R, C>
where
    R: Clone + Debug + Serialize + serde::de::DeserializeOwned + Send + 'static,
    C: Clone + Debug + Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    fn is_checkpoint(&self) -> bool {
        self.subsumes_earlier()
    }
}

impl<R: PartialEq, C: PartialEq> PartialEq for Record<R, C> {
    /// A checkpoint's state compares by its serialised bytes.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Record::Protocol(a), Record::Protocol(b)) => a == b,
            (Record::Incarnation(a), Record::Incarnation(b)) => a == b,
            (Record::Checkpoint(a), Record::Checkpoint(b))
            | (Record::RepairingCheckpoint(a), Record::RepairingCheckpoint(b)) => {
                a.protocol == b.protocol && a.incarnation == b.incarnation && a.state == b.state
            }
            (
                Record::StateCheckpoint {
                    incarnation: a,
                    state: sa,
                },
                Record::StateCheckpoint {
                    incarnation: b,
                    state: sb,
                },
            ) => a == b && sa == sb,
            _ => false,
        }
    }
}

/// The last checkpoint of any kind (a repairing one is `Full`, and `Replayed::repairing`).
pub enum LastCheckpoint<C> {
    None,
    Full(Checkpoint<C>),
    State(StateBytes),
}

/// Records split at the last checkpoint: what recovery starts from.
pub struct Replayed<R, C> {
    pub checkpoint: LastCheckpoint<C>,
    /// Protocol records after the checkpoint, in order.
    pub protocol: Vec<R>,
    /// Highest incarnation recorded.
    pub incarnation: u64,
    /// The incarnation the last checkpoint (of any kind) was written under.
    pub checkpoint_incarnation: u64,
    /// The last checkpoint is a [`Record::RepairingCheckpoint`].
    pub repairing: bool,
}

/// [`replay`], with the protocol's repairing mark first when the last checkpoint is a
/// repairing one: the records after the checkpoint may end the repair, so the mark precedes
/// them.
pub fn replay_resuming_repair<P: synod_core::LogProtocol>(
    records: Vec<Record<P::Record, P::Checkpoint>>,
) -> Result<Replayed<P::Record, P::Checkpoint>, String> {
    let mut replayed = replay(records);
    if replayed.repairing {
        let mark = P::repairing_record()
            .ok_or_else(|| format!("{}: a repairing checkpoint it cannot resume", P::NAME))?;
        replayed.protocol.insert(0, mark);
    }
    Ok(replayed)
}

pub fn replay<R, C>(records: Vec<Record<R, C>>) -> Replayed<R, C> {
    let last_cp = records.iter().rposition(Record::subsumes_earlier);
    let mut out = Replayed {
        checkpoint: LastCheckpoint::None,
        protocol: Vec::new(),
        incarnation: 0,
        checkpoint_incarnation: 0,
        repairing: last_cp.is_some_and(|c| matches!(records[c], Record::RepairingCheckpoint(_))),
    };
    for (i, r) in records.into_iter().enumerate() {
        match r {
            Record::Incarnation(n) => out.incarnation = out.incarnation.max(n),
            Record::Checkpoint(c) | Record::RepairingCheckpoint(c) => {
                out.incarnation = out.incarnation.max(c.incarnation);
                if Some(i) == last_cp {
                    out.checkpoint_incarnation = c.incarnation;
                    out.checkpoint = LastCheckpoint::Full(*c);
                }
            }
            Record::StateCheckpoint { incarnation, state } => {
                out.incarnation = out.incarnation.max(incarnation);
                if Some(i) == last_cp {
                    out.checkpoint_incarnation = incarnation;
                    out.checkpoint = LastCheckpoint::State(state);
                }
            }
            Record::Protocol(p) => {
                if last_cp.is_none_or(|c| i > c) {
                    out.protocol.push(p);
                }
            }
        }
    }
    out
}
