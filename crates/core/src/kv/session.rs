//! The client table that makes retried writes exactly-once (VR Revisited §4's client table,
//! widened to a window of saved replies per client so a client may have many requests in
//! flight, as RIFL does).
//!
//! Rules, all deterministic so every replica keeps the same table:
//! * A request names `(client, seq)` and the client's `first_unacked` seq: every seq below it
//!   has been answered and will never be retried, so its saved reply is dropped.
//! * A request whose seq is already saved gets the saved reply; nothing is applied again.
//! * A request whose seq is below the client's floor (acknowledged, or pushed out of the
//!   window) is refused with `SessionExpired` — it is never applied twice.
//! * **Expiry:** at most `client_window_max` replies per client (the oldest is dropped and the
//!   floor raised past it), and at most `client_table_max` clients; beyond that the client whose
//!   last write was applied longest ago (smallest log index) is evicted. A request from an
//!   evicted client is treated as new, so exactly-once holds only for retries that arrive before
//!   `client_table_max` other clients have written since — with the default 16,384 that is far
//!   longer than any retry loop in Synod (request timeouts are seconds).

use crate::ids::{ClientId, RequestId};
use crate::kv::{KvLimits, Response};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientTable {
    limits: KvLimits,
    sessions: BTreeMap<ClientId, Session>,
    /// (last active log index, client): the eviction order. A BTreeSet, not a HashMap, so that
    /// every replica evicts the same client.
    by_activity: BTreeSet<(u64, ClientId)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
struct Session {
    /// Seqs below this were acknowledged or dropped: never applied again.
    floor: u64,
    replies: BTreeMap<u64, Response>,
    last_active: u64,
}

#[derive(Debug, PartialEq)]
pub enum SessionVerdict {
    /// Not seen before: apply it.
    New,
    /// Already applied: return this reply, apply nothing.
    Duplicate(Response),
    /// Already acknowledged by the client or expired out of the window: refuse.
    Stale,
}

impl ClientTable {
    /// The bounds this table (and the store it belongs to) keeps.
    pub fn limits(&self) -> &KvLimits {
        &self.limits
    }

    pub fn new(limits: KvLimits) -> Self {
        assert!(limits.client_table_max > 0 && limits.client_window_max > 0);
        ClientTable {
            limits,
            sessions: BTreeMap::new(),
            by_activity: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Classifies a write about to be applied at log position `index`.
    pub fn check(&mut self, id: RequestId, first_unacked: u64) -> SessionVerdict {
        if id.client == ClientId::NONE {
            return SessionVerdict::New;
        }
        let Some(s) = self.sessions.get_mut(&id.client) else {
            return SessionVerdict::New;
        };
        if first_unacked > s.floor {
            s.floor = first_unacked;
            s.replies = s.replies.split_off(&first_unacked);
        }
        if id.seq < s.floor {
            return SessionVerdict::Stale;
        }
        match s.replies.get(&id.seq) {
            Some(r) => SessionVerdict::Duplicate(r.clone()),
            None => SessionVerdict::New,
        }
    }

    /// The saved reply of `id`, if it was applied and is still in the window. Read-only: for a
    /// command refused for another reason (its group gave the key away), whose earlier copy
    /// may have been applied before — the client must get that answer, not a refusal.
    pub fn saved(&self, id: RequestId) -> Option<&Response> {
        if id.client == ClientId::NONE {
            return None;
        }
        let s = self.sessions.get(&id.client)?;
        (id.seq >= s.floor)
            .then(|| s.replies.get(&id.seq))
            .flatten()
    }

    /// Saves the reply of a newly applied write.
    pub fn record(&mut self, id: RequestId, reply: Response) {
        if id.client == ClientId::NONE {
            return;
        }
        let s = self.sessions.entry(id.client).or_default();
        s.replies.insert(id.seq, reply);
        trim_window(s, self.limits.client_window_max);
    }

    /// Takes in the table of a group being merged into this one, at log position `index`.
    /// Per client: the higher floor (a seq below either was acknowledged or dropped, so it
    /// must never be applied), and every saved reply at or above it (a seq both tables saved
    /// was applied once, before a split copied the table: the replies are the same). Clients
    /// new here count as active at `index`; then the usual bounds apply.
    pub fn absorb(&mut self, other: ClientTable, index: u64) {
        for (client, theirs) in other.sessions {
            let known = self.sessions.contains_key(&client);
            let s = self.sessions.entry(client).or_default();
            s.floor = s.floor.max(theirs.floor);
            for (seq, reply) in theirs.replies {
                s.replies.entry(seq).or_insert(reply);
            }
            s.replies = s.replies.split_off(&s.floor);
            trim_window(s, self.limits.client_window_max);
            if !known {
                s.last_active = index;
                self.by_activity.insert((index, client));
            }
        }
        self.evict();
    }

    /// Marks `client` active at log position `index` and evicts beyond the table bound.
    pub fn touch(&mut self, client: ClientId, index: u64) {
        if client == ClientId::NONE {
            return;
        }
        if let Some(s) = self.sessions.get_mut(&client) {
            self.by_activity.remove(&(s.last_active, client));
            s.last_active = index;
            self.by_activity.insert((index, client));
        }
        self.evict();
    }

    /// Drops the least recently active clients beyond the table bound.
    fn evict(&mut self) {
        while self.sessions.len() > self.limits.client_table_max {
            let Some((_, victim)) = self.by_activity.pop_first() else {
                break;
            };
            self.sessions.remove(&victim);
        }
    }
}

/// Keeps a client's newest `max` saved replies; the floor rises past the dropped ones (their
/// seqs must never be applied again, and their replies are gone).
fn trim_window(s: &mut Session, max: usize) {
    while s.replies.len() > max {
        if let Some((seq, _)) = s.replies.pop_first() {
            s.floor = s.floor.max(seq + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{PutResponse, ResponseBody};

    fn reply(rev: u64) -> Response {
        Response {
            revision: rev,
            body: ResponseBody::Put(PutResponse::default()),
        }
    }
    fn rid(c: u64, s: u64) -> RequestId {
        RequestId {
            client: ClientId(c),
            seq: s,
        }
    }

    #[test]
    fn window_and_table_bounds_hold() {
        let limits = KvLimits {
            client_table_max: 2,
            client_window_max: 3,
            ..Default::default()
        };
        let mut t = ClientTable::new(limits);
        for seq in 1..=5 {
            assert_eq!(t.check(rid(1, seq), 1), SessionVerdict::New);
            t.record(rid(1, seq), reply(seq));
            t.touch(ClientId(1), seq);
        }
        // Seqs 1 and 2 fell out of the window: refused, never re-applied.
        assert_eq!(t.check(rid(1, 1), 1), SessionVerdict::Stale);
        assert_eq!(t.check(rid(1, 5), 1), SessionVerdict::Duplicate(reply(5)));
        for c in 2..=3 {
            t.check(rid(c, 1), 1);
            t.record(rid(c, 1), reply(c));
            t.touch(ClientId(c), 10 + c);
        }
        assert_eq!(t.len(), 2, "least recently active client evicted");
        assert_eq!(t.check(rid(1, 5), 1), SessionVerdict::New);
    }
}
