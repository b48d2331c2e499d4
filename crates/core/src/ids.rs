//! Identifiers shared by every layer. Plain integers with names so that a `NodeId` is never
//! passed where a `ClientId` is meant.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A cluster member. Ids are chosen by the operator (config file), never 0.
pub type NodeId = u64;

/// A client session for exactly-once writes. `ClientId(0)` means "no session": the request is
/// applied every time it is decided (fine for reads and for callers that never retry).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct ClientId(pub u64);

impl ClientId {
    pub const NONE: ClientId = ClientId(0);
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{:x}", self.0)
    }
}

/// One request of one client. A retry of the same request reuses the same id, which is how the
/// state machine recognises it (VR Revisited §4 "client table"; RIFL-style per-seq replies).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct RequestId {
    pub client: ClientId,
    /// Strictly increasing per client, starting at 1.
    pub seq: u64,
}

/// Sequence numbers from here on, with client [`ClientId::NONE`], are an engine's own requests
/// (a partitioned engine's compactions, automatic splits and merges): far above any a node
/// counts to. A node's request without a session is `ClientId::NONE` too, but below this.
pub const ENGINE_OWN_SEQ_BASE: u64 = 1 << 62;

impl RequestId {
    /// Whether an engine made this request itself (see [`ENGINE_OWN_SEQ_BASE`]).
    pub fn is_engine_own(&self) -> bool {
        self.client == ClientId::NONE && self.seq >= ENGINE_OWN_SEQ_BASE
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.client, self.seq)
    }
}
