//! The lessor: when leases expire. The KV store holds leases but never reads a clock (see
//! `synod_core::kv::lease`); this replica's lessor measures each lease's TTL in ticks from
//! the moment the replica applied the lease's grant or last keep-alive, and, while the replica
//! leads, proposes [`Op::LeaseExpire`] for the leases whose time ran out, guarded by the
//! lease's renewal stamp so an expiry that races a keep-alive changes nothing.
//!
//! **Never early.** A keep-alive is acknowledged only after it was applied at the replica that
//! received it, which is after the leader applied it; every replica starts the TTL when *it*
//! applies the keep-alive, so no replica's deadline is earlier than "acknowledged keep-alive +
//! TTL". On top of that, etcd's rule: a replica that becomes leader restarts every lease's TTL
//! (it cannot know how long the old leader was silent before it lost its leadership), so a
//! leader change extends leases and never shortens them. Restarts and snapshot installs also
//! restart TTLs (the state comes back without any clock).
//!
//! **Splits (partitioned mode).** A group split off starts with its parent's clocks on the
//! same member ([`Replica::inherit_lease_clocks`]) and its replicas' first leadership restarts
//! nothing: otherwise every split would restart every lease's TTL in the new group, and a lease
//! whose keys' range keeps splitting would outlive its TTL by as long as the splits go on. Safe
//! because every deadline a replica holds was set when *it* applied a grant or keep-alive (or
//! later), so it is never before that request's invoke time + TTL — the parent's too, and the
//! parent applied every keep-alive acknowledged before the split before it applied the split.
//! The restart at promotion is etcd's (its followers keep no clocks); ours is a second margin,
//! and an expiry proposed on a stale clock is harmless anyway: its renewal stamp no longer
//! matches once a later keep-alive was applied.
//!
//! **Bounded.** At most [`EXPIRIES_PER_TICK`] expiries are proposed per tick (etcd limits
//! revocations per second too), and an expiry in flight is re-proposed only after an election
//! timeout, so a mass expiry cannot flood the log.

use crate::Replica;
use std::collections::{BTreeSet, HashMap};
use synod_core::kv::{Lease, LeaseChange, LeaseId, LeaseTtl, Op};
use synod_core::{ClientId, Command, LogProtocol, PlantedBug, RequestId};

/// Most expiries one leader proposes per tick (10,000 per second at the 10 ms tick).
pub const EXPIRIES_PER_TICK: usize = 100;

#[derive(Debug, Default)]
pub struct Lessor {
    /// Deadline tick of every live lease.
    deadlines: HashMap<LeaseId, u64>,
    by_deadline: BTreeSet<(u64, LeaseId)>,
    /// Expiries proposed in this leadership and not applied yet, with the tick proposed.
    in_flight: HashMap<LeaseId, u64>,
    /// The term in which this replica last found itself leading (None: not leading).
    leading_term: Option<u64>,
    /// The clocks are a split parent's and this replica has not led yet: its first
    /// leadership keeps them.
    inherited: bool,
}

impl Lessor {
    fn set(&mut self, id: LeaseId, deadline: u64) {
        if let Some(old) = self.deadlines.insert(id, deadline) {
            self.by_deadline.remove(&(old, id));
        }
        self.by_deadline.insert((deadline, id));
    }

    fn remove(&mut self, id: LeaseId) {
        if let Some(old) = self.deadlines.remove(&id) {
            self.by_deadline.remove(&(old, id));
        }
        self.in_flight.remove(&id);
    }

    /// Every lease's TTL starts now (after recovery, a snapshot install, a promotion).
    fn restart_all<'a>(&mut self, leases: impl Iterator<Item = &'a Lease>, now: u64, tick_ms: u64) {
        self.inherited = false;
        self.deadlines.clear();
        self.by_deadline.clear();
        self.in_flight.clear();
        for l in leases {
            self.set(l.id, deadline(now, l.ttl, tick_ms));
        }
    }

    /// Time left of a live lease, in whole seconds rounded up (etcd reports seconds).
    fn remaining_seconds(&self, id: LeaseId, now: u64, tick_ms: u64) -> Option<i64> {
        let deadline = *self.deadlines.get(&id)?;
        let ms = deadline.saturating_sub(now).saturating_mul(tick_ms);
        Some(ms.div_ceil(1000) as i64)
    }
}

/// A TTL in seconds as ticks of `tick_ms`, rounded up.
fn ttl_ticks(ttl_seconds: i64, tick_ms: u64) -> u64 {
    (ttl_seconds.max(0) as u64)
        .saturating_mul(1000)
        .div_ceil(tick_ms.max(1))
}

/// The deadline tick of a TTL that starts now. `now` counts the ticks *before* this moment,
/// which may be up to a tick ago, so one more tick keeps the deadline from falling before
/// "now + TTL" in real time (without it the simulator saw a key expire 2.5 ms before its
/// grant's invoke time + TTL: the grant was applied late in a tick interval).
fn deadline(now: u64, ttl_seconds: i64, tick_ms: u64) -> u64 {
    now + ttl_ticks(ttl_seconds, tick_ms) + 1
}

impl<P: LogProtocol> Replica<P> {
    /// The shortest TTL granted, seconds: a lease must outlive a leader election (etcd's
    /// `minTTL`, 1.5 election timeouts rounded up to a second).
    pub(crate) fn min_lease_ttl(&self) -> i64 {
        let ms = self.config.election_timeout_ticks * self.config.tick_ms * 3 / 2;
        ms.div_ceil(1000).max(1) as i64
    }

    /// Feeds the lessor what the last applied commands did to leases.
    pub(crate) fn track_leases(&mut self) {
        let changes = self.state.kv.take_lease_changes();
        let forgetful = self.config.bug(PlantedBug::LeaseExpiresWithoutExtension)
            && self.lessor.leading_term.is_none();
        for c in changes {
            match c {
                LeaseChange::Renewed { id, ttl } => {
                    if forgetful && self.lessor.deadlines.contains_key(&id) {
                        // The planted bug: a follower ignores keep-alives.
                        continue;
                    }
                    self.lessor.in_flight.remove(&id);
                    let at = deadline(self.now_ticks, ttl, self.config.tick_ms);
                    self.lessor.set(id, at);
                }
                LeaseChange::Ended { id } => self.lessor.remove(id),
            }
        }
    }

    /// The applied state was replaced (recovery, snapshot install): every TTL starts now.
    pub(crate) fn restart_lease_clocks(&mut self) {
        let _ = self.state.kv.take_lease_changes();
        let (now, tick_ms) = (self.now_ticks, self.config.tick_ms);
        self.lessor
            .restart_all(self.state.kv.leases(), now, tick_ms);
    }

    /// On every tick: a new leadership restarts every TTL; a leader proposes due expiries.
    pub(crate) fn lessor_tick(&mut self) {
        let Some(term) = self
            .protocol
            .as_ref()
            .filter(|p| p.is_leader())
            .map(|p| p.term())
        else {
            self.lessor.leading_term = None;
            self.lessor.in_flight.clear();
            return;
        };
        // A new epoch's instance counts terms from 0 again.
        let term = (self.state.config.epoch << 40) | term;
        if self.lessor.leading_term != Some(term) {
            self.lessor.leading_term = Some(term);
            let inherited = std::mem::take(&mut self.lessor.inherited);
            if !inherited && !self.config.bug(PlantedBug::LeaseExpiresWithoutExtension) {
                let (now, tick_ms) = (self.now_ticks, self.config.tick_ms);
                self.lessor
                    .restart_all(self.state.kv.leases(), now, tick_ms);
            }
            self.lessor.in_flight.clear();
        }
        let now = self.now_ticks;
        let retry_after = self.config.election_timeout_ticks;
        let due: Vec<LeaseId> = self
            .lessor
            .by_deadline
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| *id)
            .filter(|id| {
                self.lessor
                    .in_flight
                    .get(id)
                    .is_none_or(|t| now >= t + retry_after)
            })
            .take(EXPIRIES_PER_TICK)
            .collect();
        for id in due {
            let Some(stamp) = self.state.kv.lease(id).map(|l| l.stamp) else {
                self.lessor.remove(id);
                continue;
            };
            self.lessor.in_flight.insert(id, now);
            let seq = self.pending.next_internal_seq();
            let origin = self.pending.origin(self.config.id, seq);
            self.propose(Command {
                id: RequestId {
                    client: ClientId::NONE,
                    seq,
                },
                first_unacked: 0,
                op: Op::LeaseExpire { id, stamp },
                origin,
            });
        }
    }

    /// The ticks left of every live lease's TTL here (none left: 0), for the groups split off.
    pub(crate) fn lease_clocks(&self) -> Vec<(LeaseId, u64)> {
        let now = self.now_ticks;
        let planted = self
            .config
            .bug(PlantedBug::PartitionSplitLeaseClocksUnrebased);
        let left = |deadline: u64| match planted {
            true => deadline,
            false => deadline.saturating_sub(now),
        };
        (self.lessor.deadlines.iter())
            .map(|(id, deadline)| (*id, left(*deadline)))
            .collect()
    }

    /// A group split off here goes on with its parent's clocks (`clocks`, ticks left); a lease
    /// the parent has no clock for (it ended there after the split) keeps the TTL started at
    /// recovery. Only before this replica led: a leader's clocks are its own.
    pub(crate) fn inherit_lease_clocks(&mut self, clocks: &[(LeaseId, u64)]) {
        debug_assert!(
            self.lessor.leading_term.is_none(),
            "a leader's clocks are its own"
        );
        let now = self.now_ticks;
        for (id, left) in clocks {
            if self.state.kv.lease(*id).is_some() {
                self.lessor.set(*id, now + left);
            }
        }
        self.lessor.inherited = true;
    }

    /// Fills in what only the lessor knows: the time left of a lease (LeaseTimeToLive).
    pub(crate) fn with_remaining_ttl(&self, ttl: &mut LeaseTtl) {
        if ttl.remaining_ttl < 0 {
            return;
        }
        if let Some(left) =
            self.lessor
                .remaining_seconds(ttl.id, self.now_ticks, self.config.tick_ms)
        {
            ttl.remaining_ttl = left.min(ttl.granted_ttl);
        }
    }
}
