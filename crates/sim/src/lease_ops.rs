//! The lease workload: what the lease clients of a run with `leases > 0` do, and how their
//! requests and replies translate to the lease checker's history (`synod_checker::leases`).
//!
//! Each lease client behaves like an etcd client holding a session: it grants a lease with a
//! short TTL (1–3 s, so several expire in a 6 s fault window), attaches one to three keys under
//! [`LEASE_PREFIX`] with puts, and keeps the lease alive every TTL/3 (etcd's client rhythm) for a
//! random while — none at all, or up to four TTLs. Then it revokes the lease or lets it lapse,
//! and takes a new one. A lapsing lease often gets an *edge read*: one of its keys read just
//! before its last keep-alive's invoke time + TTL, the moment an early expiry would show. Between
//! keep-alives the client reads its own keys and those of recent leases of every client, scans
//! the prefix, asks TimeToLive and LeaseLeases, and now and then deletes a key, overwrites it
//! without the lease or attaches it again, so that the checker's excuses are exercised too.
//!
//! The clients stop at the heal; once all are idle the simulator waits until every lease must be
//! gone and runs the final probes ([`Workload::start_probes`]): a LeaseLeases, a scan of the
//! prefix and a keep-alive of every lease ever granted.
//!
//! Lease keys (`l/…`) never meet the register keys (`k…`) of the linearizability history, nor
//! the watch workload's `w/…`. Every draw comes from the workload's own generator, so runs without
//! lease clients draw exactly what they drew before leases existed.

use std::collections::VecDeque;
use synod_checker::leases::{LeaseId, LeaseOpKind, LeaseOutcome};
use synod_core::kv::{
    DeleteRangeRequest, LeaseGrantRequest, Op, PutRequest, RangeRequest, Response, ResponseBody,
};
use synod_core::{ClientId, ClientRequest, Consistency, EngineError, RequestId, SplitMix64};

/// Every key attached to a lease starts with this.
pub const LEASE_PREFIX: &str = "l/";
/// TTLs asked for, seconds (the replica raises them to its minimum, 1 s in the simulator).
pub const TTL_MIN_S: i64 = 1;
pub const TTL_MAX_S: i64 = 3;
/// Keys attached to one lease at most.
pub const KEYS_PER_LEASE_MAX: u64 = 3;
/// A lease is kept alive for at most this many TTLs.
pub const RENEW_TTLS_MAX: u64 = 4;
/// Of the leases a client ends, this many percent are revoked; the rest lapse.
pub const REVOKE_PERCENT: u64 = 30;
/// Of the lapsing leases, this many percent get an edge read.
pub const EDGE_READ_PERCENT: u64 = 60;
/// An edge read starts at most this long before the lease's proven alive-until.
pub const EDGE_READ_LEAD_MAX_US: u64 = 30_000;
/// The leases whose keys other clients read: the most recent ones.
pub const RECENT_LEASES_MAX: usize = 16;
/// Operations one lease client starts at most (probes excepted).
pub const OPS_PER_CLIENT_MAX: usize = 5_000;
/// Longest pause of a client without a lease (between a lease's end and the next grant).
pub const IDLE_THINK_MAX_US: u64 = 200_000;
/// Lease clients per run at most.
pub const LEASE_CLIENTS_MAX: usize = 64;

/// The key `j` of lease `lease`.
pub fn lease_key(lease: LeaseId, j: u64) -> String {
    format!("{LEASE_PREFIX}{lease}/{j}")
}

/// The lease a client holds now.
#[derive(Clone, Debug)]
struct Held {
    id: LeaseId,
    /// Granted TTL, µs.
    ttl_us: u64,
    keys: Vec<String>,
    /// Attaching puts issued so far (the first `attached` keys).
    attached: usize,
    /// No keep-alive after this.
    renew_until_us: u64,
    /// Revoke when done, else let it lapse.
    revoke: bool,
    next_keep_alive_us: u64,
    /// Invoke time of the last successful grant or keep-alive.
    last_renewal_call_us: u64,
}

/// One lease client's state.
#[derive(Clone, Debug, Default)]
struct LeaseClient {
    held: Option<Held>,
    /// Leases this client has granted (tried to), in order.
    granted: u64,
    /// A read of `key` to make at the given time.
    edge_read: Option<(String, u64)>,
    ops_started: usize,
    /// The final probes still to make (`None` until they start).
    probes: Option<VecDeque<LeaseOpKind>>,
    /// Returned [`Step::Idle`] once the workload stopped.
    idle: bool,
}

/// What a lease client does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Run(LeaseOpKind),
    /// Nothing before this time.
    Wait(u64),
    /// Stopped (the workload is over, or the probes are done).
    Idle,
}

/// The lease clients of a run.
pub struct Workload {
    pub rng: SplitMix64,
    clients: Vec<LeaseClient>,
    /// Keys of the most recent leases, for reads by any client.
    recent: VecDeque<Vec<String>>,
    /// The clients start nothing new from here on (the heal).
    stop_at_us: u64,
}

impl Workload {
    pub fn new(seed: u64, clients: usize, stop_at_us: u64) -> Self {
        Workload {
            rng: SplitMix64::fork(seed, 9),
            clients: vec![LeaseClient::default(); clients.min(LEASE_CLIENTS_MAX)],
            recent: VecDeque::new(),
            stop_at_us,
        }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The lease id of client `k`'s `n`th lease: positive, and never used twice in a run.
    fn lease_id(k: usize, n: u64) -> LeaseId {
        (k as i64 + 1) * 1_000_000 + n as i64
    }

    /// Every lease id client `k` asked for.
    fn granted_ids(&self, k: usize) -> impl Iterator<Item = LeaseId> {
        (0..self.clients[k].granted).map(move |n| Self::lease_id(k, n))
    }

    /// Every client returned [`Step::Idle`] after the workload stopped.
    pub fn all_idle(&self) -> bool {
        self.clients.iter().all(|c| c.idle)
    }

    pub fn probing(&self) -> bool {
        self.clients.iter().any(|c| c.probes.is_some())
    }

    /// Every probe was made.
    pub fn probes_done(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.probes.as_ref().is_some_and(VecDeque::is_empty))
    }

    /// The final probes: client 0 lists the leases and scans the prefix, and every client
    /// keeps alive each lease it ever asked for (each must answer "lease not found").
    pub fn start_probes(&mut self) {
        for k in 0..self.clients.len() {
            let mut script: VecDeque<LeaseOpKind> = VecDeque::new();
            if k == 0 {
                script.push_back(LeaseOpKind::List);
                script.push_back(LeaseOpKind::Scan {
                    prefix: LEASE_PREFIX.into(),
                });
            }
            let ids: Vec<LeaseId> = self.granted_ids(k).collect();
            script.extend(
                ids.into_iter()
                    .map(|lease| LeaseOpKind::KeepAlive { lease }),
            );
            self.clients[k].probes = Some(script);
            self.clients[k].idle = false;
        }
    }

    /// Client `k`'s next step at `now_us`.
    pub fn next(&mut self, k: usize, now_us: u64) -> Step {
        if let Some(script) = self.clients[k].probes.as_mut() {
            return script.pop_front().map_or(Step::Idle, Step::Run);
        }
        if now_us >= self.stop_at_us || self.clients[k].ops_started >= OPS_PER_CLIENT_MAX {
            self.clients[k].idle = true;
            return Step::Idle;
        }
        let step = self.next_running(k, now_us);
        if let Step::Run(_) = step {
            self.clients[k].ops_started += 1;
        }
        step
    }

    fn next_running(&mut self, k: usize, now_us: u64) -> Step {
        if let Some((key, at)) = self.clients[k].edge_read.clone() {
            if now_us < at {
                return Step::Wait(at);
            }
            self.clients[k].edge_read = None;
            return Step::Run(LeaseOpKind::Read { key });
        }
        let Some(h) = self.clients[k].held.as_mut() else {
            return self.grant(k);
        };
        if h.attached < h.keys.len() {
            h.attached += 1;
            return Step::Run(LeaseOpKind::Put {
                key: h.keys[h.attached - 1].clone(),
                lease: h.id,
            });
        }
        if now_us >= h.renew_until_us {
            if h.revoke {
                return Step::Run(LeaseOpKind::Revoke { lease: h.id });
            }
            self.lapse(k, now_us);
            return Step::Wait(now_us);
        }
        if now_us >= h.next_keep_alive_us {
            return Step::Run(LeaseOpKind::KeepAlive { lease: h.id });
        }
        Step::Run(self.filler(k))
    }

    fn grant(&mut self, k: usize) -> Step {
        let c = &mut self.clients[k];
        let lease = Self::lease_id(k, c.granted);
        c.granted += 1;
        let ttl_s = self.rng.range(TTL_MIN_S as u64, TTL_MAX_S as u64) as i64;
        Step::Run(LeaseOpKind::Grant { lease, ttl_s })
    }

    /// Client `k` stops keeping its lease alive; maybe reads one of its keys at the edge.
    fn lapse(&mut self, k: usize, now_us: u64) {
        let Some(h) = self.clients[k].held.take() else {
            return;
        };
        if h.attached == 0 || self.rng.below(100) >= EDGE_READ_PERCENT {
            return;
        }
        let until = h.last_renewal_call_us + h.ttl_us;
        let at = until.saturating_sub(self.rng.below(EDGE_READ_LEAD_MAX_US + 1));
        if at > now_us {
            let key = self.rng.pick(&h.keys[..h.attached]).clone();
            self.clients[k].edge_read = Some((key, at));
        }
    }

    /// Something to do between keep-alives of a held lease.
    fn filler(&mut self, k: usize) -> LeaseOpKind {
        let Some(h) = self.clients[k].held.clone() else {
            return LeaseOpKind::List;
        };
        let own = self.rng.pick(&h.keys[..h.attached.max(1)]).clone();
        match self.rng.below(100) {
            0..25 => LeaseOpKind::Read { key: own },
            25..50 => {
                let lease = self.rng.below(self.recent.len().max(1) as u64) as usize;
                match self.recent.get(lease) {
                    Some(keys) => LeaseOpKind::Read {
                        key: self.rng.pick(keys).clone(),
                    },
                    None => LeaseOpKind::Read { key: own },
                }
            }
            50..60 => LeaseOpKind::Scan {
                prefix: LEASE_PREFIX.into(),
            },
            60..75 => LeaseOpKind::TimeToLive { lease: h.id },
            75..82 => LeaseOpKind::List,
            82..88 => LeaseOpKind::Delete { key: own },
            88..92 => LeaseOpKind::Put { key: own, lease: 0 },
            _ => LeaseOpKind::Put {
                key: own,
                lease: h.id,
            },
        }
    }

    /// When client `k` should look for its next step after an operation finished at `now_us`.
    pub fn wake_at(&mut self, k: usize, now_us: u64) -> u64 {
        let c = &self.clients[k];
        if c.probes.is_some() {
            return now_us;
        }
        if let Some((_, at)) = &c.edge_read {
            return (*at).max(now_us);
        }
        match &c.held {
            Some(h) if h.attached < h.keys.len() => now_us,
            Some(h) => {
                let (keep, until) = (h.next_keep_alive_us, h.renew_until_us);
                let think = now_us + self.rng.below(h.ttl_us / 3 + 1);
                think.min(keep).min(until).max(now_us)
            }
            None => now_us + self.rng.below(IDLE_THINK_MAX_US + 1),
        }
    }

    /// Client `k`'s operation `kind`, invoked at `call_us`, finished at `now_us` with
    /// `outcome`: what it learns.
    pub fn on_outcome(
        &mut self,
        k: usize,
        kind: &LeaseOpKind,
        call_us: u64,
        now_us: u64,
        outcome: &LeaseOutcome,
    ) {
        let held_id = self.clients[k].held.as_ref().map(|h| h.id);
        match (kind, outcome) {
            (LeaseOpKind::Grant { lease, .. }, LeaseOutcome::Renewed { ttl_s }) => {
                self.granted(k, *lease, *ttl_s, call_us, now_us);
            }
            (LeaseOpKind::Grant { .. }, _) => {}
            (_, LeaseOutcome::LeaseNotFound) if kind_lease(kind) == held_id => {
                self.clients[k].held = None;
            }
            (LeaseOpKind::Revoke { .. }, _) => self.clients[k].held = None,
            (LeaseOpKind::KeepAlive { lease }, outcome) if Some(*lease) == held_id => {
                let Some(h) = self.clients[k].held.as_mut() else {
                    return;
                };
                if let LeaseOutcome::Renewed { .. } = outcome {
                    h.last_renewal_call_us = call_us;
                    h.next_keep_alive_us = now_us + h.ttl_us / 3;
                } else {
                    h.next_keep_alive_us = now_us;
                }
            }
            _ => {}
        }
    }

    fn granted(&mut self, k: usize, lease: LeaseId, ttl_s: i64, call_us: u64, now_us: u64) {
        let ttl_us = ttl_s.max(1) as u64 * 1_000_000;
        let keys: Vec<String> = (0..self.rng.range(1, KEYS_PER_LEASE_MAX))
            .map(|j| lease_key(lease, j))
            .collect();
        let renew_for = self.rng.below(RENEW_TTLS_MAX * ttl_us + 1);
        let renew_for = if self.rng.below(4) == 0 { 0 } else { renew_for };
        self.recent.push_back(keys.clone());
        if self.recent.len() > RECENT_LEASES_MAX {
            self.recent.pop_front();
        }
        self.clients[k].held = Some(Held {
            id: lease,
            ttl_us,
            keys,
            attached: 0,
            renew_until_us: call_us + renew_for,
            revoke: self.rng.below(100) < REVOKE_PERCENT,
            next_keep_alive_us: now_us + ttl_us / 3,
            last_renewal_call_us: call_us,
        });
    }
}

fn kind_lease(kind: &LeaseOpKind) -> Option<LeaseId> {
    match kind {
        LeaseOpKind::Grant { lease, .. }
        | LeaseOpKind::KeepAlive { lease }
        | LeaseOpKind::Revoke { lease }
        | LeaseOpKind::TimeToLive { lease } => Some(*lease),
        LeaseOpKind::Put { lease, .. } if *lease != 0 => Some(*lease),
        _ => None,
    }
}

/// The engine request for `kind` (every read linearizable: a stale read could miss a key that
/// was attached before it was invoked).
pub fn request(kind: &LeaseOpKind, client: ClientId, seq: u64) -> ClientRequest {
    let op = match kind {
        LeaseOpKind::Grant { lease, ttl_s } => Op::LeaseGrant(LeaseGrantRequest {
            id: *lease,
            ttl: *ttl_s,
        }),
        LeaseOpKind::KeepAlive { lease } => Op::LeaseKeepAlive { id: *lease },
        LeaseOpKind::Revoke { lease } => Op::LeaseRevoke { id: *lease },
        LeaseOpKind::TimeToLive { lease } => Op::LeaseTimeToLive {
            id: *lease,
            keys: false,
        },
        LeaseOpKind::List => Op::LeaseLeases,
        LeaseOpKind::Put { key, lease } => Op::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: format!("c{}s{seq}", client.0).into_bytes(),
            lease: *lease,
            ..Default::default()
        }),
        LeaseOpKind::Delete { key } => Op::DeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
        LeaseOpKind::Read { key } => Op::Range(RangeRequest::key(key.as_bytes().to_vec())),
        LeaseOpKind::Scan { prefix } => Op::Range(RangeRequest::prefix(prefix.as_str())),
    };
    ClientRequest {
        id: RequestId { client, seq },
        first_unacked: seq,
        op,
        consistency: Consistency::Linearizable,
    }
}

/// What a definite reply to `kind` says, or `None` when its body does not match the request
/// (the simulator reports that as a failure in its own right).
pub fn outcome(kind: &LeaseOpKind, reply: Result<&Response, &EngineError>) -> Option<LeaseOutcome> {
    let body = match reply {
        Err(EngineError::LeaseNotFound) => return Some(LeaseOutcome::LeaseNotFound),
        Err(e) => return Some(LeaseOutcome::Failed(e.to_string())),
        Ok(r) => &r.body,
    };
    let utf8 = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    Some(match (kind, body) {
        (LeaseOpKind::Grant { .. }, ResponseBody::LeaseGrant(info))
        | (LeaseOpKind::KeepAlive { .. }, ResponseBody::LeaseKeepAlive(info)) => {
            LeaseOutcome::Renewed { ttl_s: info.ttl }
        }
        (LeaseOpKind::Revoke { .. }, ResponseBody::LeaseRevoke)
        | (LeaseOpKind::Put { .. }, ResponseBody::Put(_))
        | (LeaseOpKind::Delete { .. }, ResponseBody::DeleteRange(_)) => LeaseOutcome::Done,
        (LeaseOpKind::TimeToLive { .. }, ResponseBody::LeaseTimeToLive(t)) => {
            if t.remaining_ttl < 0 {
                LeaseOutcome::LeaseNotFound
            } else {
                LeaseOutcome::Done
            }
        }
        (LeaseOpKind::List, ResponseBody::LeaseLeases(ids)) => LeaseOutcome::Listed(ids.clone()),
        (LeaseOpKind::Read { .. }, ResponseBody::Range(r)) => match r.kvs.first() {
            Some(kv) => LeaseOutcome::Found { lease: kv.lease },
            None => LeaseOutcome::Missing,
        },
        (LeaseOpKind::Scan { .. }, ResponseBody::Range(r)) => {
            LeaseOutcome::Keys(r.kvs.iter().map(|kv| (utf8(&kv.key), kv.lease)).collect())
        }
        _ => return None,
    })
}

/// A short description of `kind` for traces and liveness messages.
pub fn describe(kind: &LeaseOpKind) -> String {
    match kind {
        LeaseOpKind::Grant { lease, ttl_s } => format!("lease grant {lease} ttl {ttl_s}s"),
        LeaseOpKind::KeepAlive { lease } => format!("lease keep-alive {lease}"),
        LeaseOpKind::Revoke { lease } => format!("lease revoke {lease}"),
        LeaseOpKind::TimeToLive { lease } => format!("lease time-to-live {lease}"),
        LeaseOpKind::List => "lease list".into(),
        LeaseOpKind::Put { key, lease } => format!("put {key} lease {lease}"),
        LeaseOpKind::Delete { key } => format!("delete {key}"),
        LeaseOpKind::Read { key } => format!("read {key}"),
        LeaseOpKind::Scan { prefix } => format!("scan {prefix}"),
    }
}
