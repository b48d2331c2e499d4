//! The lease checker: did any lease end early, and did every abandoned lease end?
//!
//! The linearizability checker models keys as registers that change only through client
//! writes; a key attached to a lease also vanishes when the lease ends, at a time the lessor
//! chooses. So keys under leases stay out of its history and are judged here, from a history of
//! lease-workload operations ([`LeaseOp`]) with their invoke and return times (virtual µs).
//!
//! **Safety ("never early").** A successful grant or keep-alive of lease `L` invoked at `t` with
//! granted TTL `ttl` proves `L` alive until `t + ttl` (the server starts the TTL when it applies
//! the command, which is after `t`; a new leader only extends it). The latest such proof is `L`'s
//! *alive-until*. It is a violation when an operation that returned before `L`'s alive-until
//! found `L` gone:
//! * a read (or a scan of the lease prefix) that found missing — or attached to another lease —
//!   a key that a successful put had attached to `L` before the read was invoked;
//! * a keep-alive, a TimeToLive or an attaching put answered "lease not found";
//!
//! unless something a client did could have ended it first: a revoke of `L` (succeeded or of
//! unknown outcome) invoked before the observation returned, or — for a key — a delete of the
//! key or a put of it without `L`, invoked before the observation returned and not finished
//! before the attaching put was invoked. A successful renewal invoked *after* the observation
//! also counts as proof: a lease alive later was alive then, so its keys must have been there.
//!
//! **Liveness.** At the end of a run whose cluster healed, probes ([`LeaseOp::probe`]) look
//! for what should be gone: a LeaseLeases listing, a scan of the lease prefix, a keep-alive
//! per lease. A lease must be gone `ttl + expiry_bound` after the later of its last possible
//! renewal and [`Liveness::settled_us`] — the time by which the healed cluster has decided or
//! dropped every request of unknown outcome and stopped changing leaders (a new leader restarts
//! every TTL, etcd's rule, so until then any lease may legitimately live on). For every probe
//! invoked after that: not listed, no key still attached to it, and its keep-alive answered
//! "lease not found".
//!
//! What the checker needs is plain data, so its tests write histories by hand.

use std::collections::{BTreeMap, BTreeSet};

/// etcd's lease id (as in `synod_core::kv::LeaseId`).
pub type LeaseId = i64;

/// Violations kept in a report (the first are the interesting ones); the rest are counted.
pub const VIOLATIONS_REPORTED_MAX: usize = 20;

/// What a lease-workload operation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOpKind {
    /// LeaseGrant of `lease` asking for `ttl_s` seconds.
    Grant {
        lease: LeaseId,
        ttl_s: i64,
    },
    KeepAlive {
        lease: LeaseId,
    },
    Revoke {
        lease: LeaseId,
    },
    /// LeaseTimeToLive of `lease`.
    TimeToLive {
        lease: LeaseId,
    },
    /// LeaseLeases.
    List,
    /// A put of `key` attached to `lease` (0 = no lease: detaches the key).
    Put {
        key: String,
        lease: LeaseId,
    },
    /// A delete of one key.
    Delete {
        key: String,
    },
    /// A linearizable read of one key.
    Read {
        key: String,
    },
    /// A linearizable read of every key under `prefix`.
    Scan {
        prefix: String,
    },
}

/// What an operation's reply said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// No reply: the operation may have taken effect, at any time after its call.
    Unknown,
    /// Definitely not applied, for a reason other than a missing lease.
    Failed(String),
    /// "lease not found" (a TimeToLive answering -1 too).
    LeaseNotFound,
    /// A grant or keep-alive succeeded with this TTL (seconds).
    Renewed { ttl_s: i64 },
    /// A put, delete, revoke or TimeToLive succeeded.
    Done,
    /// A read found the key, attached to this lease (0 = none).
    Found { lease: LeaseId },
    /// A read found no such key.
    Missing,
    /// A scan's keys, each with the lease it is attached to (0 = none).
    Keys(Vec<(String, LeaseId)>),
    /// LeaseLeases' answer.
    Listed(Vec<LeaseId>),
}

/// One operation of the lease workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOp {
    pub client: u64,
    pub kind: LeaseOpKind,
    pub call_us: u64,
    /// `None` when the client never got a reply (then the outcome is [`LeaseOutcome::Unknown`]).
    pub ret_us: Option<u64>,
    pub outcome: LeaseOutcome,
    /// A final liveness probe (made after the workload stopped, on a healed cluster).
    pub probe: bool,
}

impl LeaseOp {
    /// The lease the operation names, if it names one.
    fn lease(&self) -> Option<LeaseId> {
        match &self.kind {
            LeaseOpKind::Grant { lease, .. }
            | LeaseOpKind::KeepAlive { lease }
            | LeaseOpKind::Revoke { lease }
            | LeaseOpKind::TimeToLive { lease } => Some(*lease),
            LeaseOpKind::Put { lease, .. } if *lease != 0 => Some(*lease),
            _ => None,
        }
    }

    /// Whether the operation may have taken effect (it succeeded, or nobody knows).
    fn maybe_applied(&self) -> bool {
        !matches!(
            self.outcome,
            LeaseOutcome::Failed(_) | LeaseOutcome::LeaseNotFound
        )
    }

    fn describe(&self) -> String {
        let what = match &self.kind {
            LeaseOpKind::Grant { lease, ttl_s } => {
                format!("grant of lease {lease} (ttl {ttl_s} s)")
            }
            LeaseOpKind::KeepAlive { lease } => format!("keep-alive of lease {lease}"),
            LeaseOpKind::Revoke { lease } => format!("revoke of lease {lease}"),
            LeaseOpKind::TimeToLive { lease } => format!("time-to-live of lease {lease}"),
            LeaseOpKind::List => "lease list".into(),
            LeaseOpKind::Put { key, lease: 0 } => format!("put of {key} without a lease"),
            LeaseOpKind::Put { key, lease } => format!("put of {key} attached to lease {lease}"),
            LeaseOpKind::Delete { key } => format!("delete of {key}"),
            LeaseOpKind::Read { key } => format!("read of {key}"),
            LeaseOpKind::Scan { prefix } => format!("scan of {prefix}*"),
        };
        let ret = self
            .ret_us
            .map_or("no reply".to_string(), |r| format!("{} ms", ms(r)));
        let outcome = match &self.outcome {
            LeaseOutcome::Unknown => "outcome unknown".to_string(),
            LeaseOutcome::Failed(why) => format!("failed: {why}"),
            LeaseOutcome::LeaseNotFound => "lease not found".into(),
            LeaseOutcome::Renewed { ttl_s } => format!("ok, ttl {ttl_s} s"),
            LeaseOutcome::Done => "ok".into(),
            LeaseOutcome::Found { lease } => format!("found, lease {lease}"),
            LeaseOutcome::Missing => "missing".into(),
            LeaseOutcome::Keys(keys) => format!("{} keys", keys.len()),
            LeaseOutcome::Listed(ids) => format!("{} leases", ids.len()),
        };
        format!(
            "c{:x} {what} [{} ms, {ret}] {outcome}",
            self.client,
            ms(self.call_us)
        )
    }
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// The end-of-run liveness judgement's parameters; `None` in [`LeaseInput`] = not judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// By this time the healed cluster has settled: every operation with no reply took effect
    /// or never will, and no leader changes any more (a new leader restarts every TTL, so until
    /// then any lease may legitimately live on).
    pub settled_us: u64,
    /// How long after its TTL has run out (from the later of its last possible renewal and
    /// `settled_us`) a lease must be gone.
    pub expiry_bound_us: u64,
}

/// What the checker judges.
#[derive(Clone, Debug, Default)]
pub struct LeaseInput {
    pub ops: Vec<LeaseOp>,
    pub liveness: Option<Liveness>,
}

/// The verdict, with what was covered.
#[derive(Clone, Debug, Default)]
pub struct LeaseReport {
    /// The first [`VIOLATIONS_REPORTED_MAX`] violations; empty = all checks passed.
    pub violations: Vec<String>,
    pub violations_total: usize,
    /// Leases granted (successfully or with unknown outcome).
    pub leases: usize,
    /// Successful grants and keep-alives (proofs of life).
    pub renewals: usize,
    /// Observations that found a lease or a key of a lease gone, judged against its proofs.
    pub absences: usize,
    /// Of those, made before the lease's alive-until (each needed a client's excuse).
    pub absences_before_deadline: usize,
    /// The smallest margin by which an absence came after its lease's alive-until, µs: how
    /// close the history came to an early expiry (a sharp check sees small margins).
    pub closest_after_deadline_us: Option<u64>,
    /// Leases whose end the liveness probes judged.
    pub liveness_judged: usize,
    /// Leases granted that no probe came late enough to judge.
    pub liveness_unjudged: usize,
}

impl LeaseReport {
    pub fn passed(&self) -> bool {
        self.violations_total == 0
    }

    fn violation(&mut self, msg: String) {
        self.violations_total += 1;
        if self.violations.len() < VIOLATIONS_REPORTED_MAX {
            self.violations.push(msg);
        }
    }
}

/// The history indexed by lease and by key.
struct Index<'a> {
    ops: &'a [LeaseOp],
    /// Latest proof of life per lease: (alive until µs, op index).
    alive_until: BTreeMap<LeaseId, (u64, usize)>,
    /// Revokes per lease that may have taken effect.
    revokes: BTreeMap<LeaseId, Vec<usize>>,
    /// Successful puts attaching a key to a lease, per key.
    attaches: BTreeMap<&'a str, Vec<usize>>,
    /// Deletes and puts per key that may have taken effect (each detaches the key from every
    /// lease but its own).
    writes: BTreeMap<&'a str, Vec<usize>>,
}

impl<'a> Index<'a> {
    fn new(ops: &'a [LeaseOp]) -> Self {
        let mut ix = Index {
            ops,
            alive_until: BTreeMap::new(),
            revokes: BTreeMap::new(),
            attaches: BTreeMap::new(),
            writes: BTreeMap::new(),
        };
        for (i, op) in ops.iter().enumerate() {
            match (&op.kind, &op.outcome) {
                (
                    LeaseOpKind::Grant { lease, .. } | LeaseOpKind::KeepAlive { lease },
                    LeaseOutcome::Renewed { ttl_s },
                ) => {
                    let until = op
                        .call_us
                        .saturating_add((*ttl_s).max(0) as u64 * 1_000_000);
                    let best = ix.alive_until.entry(*lease).or_insert((until, i));
                    if until > best.0 {
                        *best = (until, i);
                    }
                }
                (LeaseOpKind::Revoke { lease }, _) if op.maybe_applied() => {
                    ix.revokes.entry(*lease).or_default().push(i);
                }
                (LeaseOpKind::Put { key, lease }, _) => {
                    if *lease != 0 && op.outcome == LeaseOutcome::Done {
                        ix.attaches.entry(key).or_default().push(i);
                    }
                    if op.maybe_applied() {
                        ix.writes.entry(key).or_default().push(i);
                    }
                }
                (LeaseOpKind::Delete { key }, _) if op.maybe_applied() => {
                    ix.writes.entry(key).or_default().push(i);
                }
                _ => {}
            }
        }
        ix
    }

    fn attached_lease(&self, put: usize) -> LeaseId {
        match &self.ops[put].kind {
            LeaseOpKind::Put { lease, .. } => *lease,
            _ => 0,
        }
    }

    /// A revoke of `lease` that could have taken effect before `before_us`.
    fn revoke_before(&self, lease: LeaseId, before_us: u64) -> Option<usize> {
        self.revokes
            .get(&lease)?
            .iter()
            .copied()
            .find(|&r| self.ops[r].call_us < before_us)
    }

    /// A client write of `key` that could have detached it from `put`'s lease after `put` and
    /// before `before_us`.
    fn detach_between(&self, key: &str, put: usize, before_us: u64) -> Option<usize> {
        let p = &self.ops[put];
        let lease = self.attached_lease(put);
        self.writes.get(key)?.iter().copied().find(|&w| {
            let op = &self.ops[w];
            let other_lease = !matches!(op.kind, LeaseOpKind::Put { lease: l, .. } if l == lease);
            w != put
                && other_lease
                && op.call_us < before_us
                && op.ret_us.is_none_or(|r| r >= p.call_us)
        })
    }
}

/// Checks a run's lease history (module docs).
pub fn check(input: &LeaseInput) -> LeaseReport {
    let ix = Index::new(&input.ops);
    let mut report = LeaseReport {
        leases: granted(&input.ops).len(),
        renewals: input
            .ops
            .iter()
            .filter(|o| matches!(o.outcome, LeaseOutcome::Renewed { .. }))
            .count(),
        ..Default::default()
    };
    for (i, op) in input.ops.iter().enumerate() {
        if op.ret_us.is_none() {
            continue; // No answer: not an observation.
        }
        match (&op.kind, &op.outcome) {
            (_, LeaseOutcome::LeaseNotFound) => {
                if let Some(lease) = op.lease() {
                    judge_absence(&ix, &mut report, lease, None, i);
                }
            }
            (LeaseOpKind::Read { key }, outcome) => {
                let now = match outcome {
                    LeaseOutcome::Missing => Some(0),
                    LeaseOutcome::Found { lease } => Some(*lease),
                    _ => None,
                };
                if let Some(now) = now {
                    judge_key(&ix, &mut report, key, now, i);
                }
            }
            (LeaseOpKind::Scan { prefix }, LeaseOutcome::Keys(keys)) => {
                let found: BTreeMap<&str, LeaseId> =
                    keys.iter().map(|(k, l)| (k.as_str(), *l)).collect();
                for key in ix
                    .attaches
                    .keys()
                    .filter(|k| k.starts_with(prefix.as_str()))
                {
                    let now = found.get(key).copied().unwrap_or(0);
                    judge_key(&ix, &mut report, key, now, i);
                }
            }
            _ => {}
        }
    }
    if let Some(l) = &input.liveness {
        check_liveness(&input.ops, l, &mut report);
    }
    report
}

/// Observation `obs` saw `key` attached to `now` (0 = missing or detached): judges every
/// earlier attaching put of the key to another lease.
fn judge_key(ix: &Index, report: &mut LeaseReport, key: &str, now: LeaseId, obs: usize) {
    let call = ix.ops[obs].call_us;
    let Some(puts) = ix.attaches.get(key) else {
        return;
    };
    // The latest-returning attaching put per lease that finished before the observation.
    let mut latest: BTreeMap<LeaseId, usize> = BTreeMap::new();
    for &p in puts {
        let (lease, ret) = (ix.attached_lease(p), ix.ops[p].ret_us.unwrap_or(u64::MAX));
        if lease == now || ret >= call {
            continue;
        }
        let e = latest.entry(lease).or_insert(p);
        if ix.ops[*e].ret_us < Some(ret) {
            *e = p;
        }
    }
    for (lease, put) in latest {
        judge_absence(ix, report, lease, Some((key, put)), obs);
    }
}

/// Observation `obs` found `lease` gone (or, with `key`, found the key `put` attached to it
/// gone): a violation unless it returned after the lease's alive-until or a client's revoke,
/// delete or overwrite explains it.
fn judge_absence(
    ix: &Index,
    report: &mut LeaseReport,
    lease: LeaseId,
    key: Option<(&str, usize)>,
    obs: usize,
) {
    report.absences += 1;
    let o = &ix.ops[obs];
    let ret = o.ret_us.unwrap_or(u64::MAX);
    let Some(&(until, proof)) = ix.alive_until.get(&lease) else {
        return;
    };
    if ret >= until {
        let margin = ret - until;
        report.closest_after_deadline_us = Some(
            report
                .closest_after_deadline_us
                .map_or(margin, |m| m.min(margin)),
        );
        return;
    }
    report.absences_before_deadline += 1;
    if ix.revoke_before(lease, ret).is_some() {
        return;
    }
    if let Some((k, put)) = key
        && ix.detach_between(k, put, ret).is_some()
    {
        return;
    }
    let what = match key {
        Some((k, put)) => format!(
            "key {k} (attached by {}) missing from lease {lease}",
            ix.ops[put].describe()
        ),
        None => format!("lease {lease} gone"),
    };
    report.violation(format!(
        "early expiry: {what}: {} returned at {} ms, but {} proves lease {lease} alive until {} ms ({} ms early); no revoke{} could have taken effect before",
        o.describe(),
        ms(ret),
        ix.ops[proof].describe(),
        ms(until),
        ms(until - ret),
        if key.is_some() {
            ", delete or overwrite of the key"
        } else {
            ""
        }
    ));
}

/// Leases granted, successfully or with unknown outcome, with their TTL (seconds: the granted
/// one if a reply said, else the one asked for).
fn granted(ops: &[LeaseOp]) -> BTreeMap<LeaseId, i64> {
    let mut out = BTreeMap::new();
    for op in ops.iter().filter(|o| !o.probe) {
        if let (LeaseOpKind::Grant { lease, ttl_s }, true) = (&op.kind, op.maybe_applied()) {
            out.entry(*lease).or_insert(*ttl_s);
        }
    }
    for op in ops.iter().filter(|o| !o.probe) {
        if let (Some(lease), LeaseOutcome::Renewed { ttl_s }) = (op.lease(), &op.outcome)
            && let Some(t) = out.get_mut(&lease)
        {
            *t = (*t).max(*ttl_s);
        }
    }
    out
}

/// When each lease granted must be gone: the later of its last possible renewal (a successful
/// one's return) and [`Liveness::settled_us`] (by which unknown renewals and leader changes are
/// over), plus its TTL, plus the expiry bound. Probes do not count as renewals. The simulator
/// schedules its probes after the latest of these.
pub fn gone_by(ops: &[LeaseOp], liveness: &Liveness) -> BTreeMap<LeaseId, u64> {
    let ttls = granted(ops);
    let mut last: BTreeMap<LeaseId, u64> = BTreeMap::new();
    for op in ops.iter().filter(|o| !o.probe) {
        let renews = matches!(
            op.kind,
            LeaseOpKind::Grant { .. } | LeaseOpKind::KeepAlive { .. }
        );
        let (Some(lease), true, true) = (op.lease(), renews, op.maybe_applied()) else {
            continue;
        };
        let at = match op.ret_us {
            Some(r) if op.outcome != LeaseOutcome::Unknown => r,
            _ => op.call_us.max(liveness.settled_us),
        };
        let e = last.entry(lease).or_insert(at);
        *e = (*e).max(at);
    }
    ttls.iter()
        .map(|(&lease, &ttl_s)| {
            let r = last
                .get(&lease)
                .copied()
                .unwrap_or(0)
                .max(liveness.settled_us);
            let by = r
                .saturating_add(ttl_s.max(0) as u64 * 1_000_000)
                .saturating_add(liveness.expiry_bound_us);
            (lease, by)
        })
        .collect()
}

/// The probes against [`gone_by`]: a lease past its time must be absent from every probe.
fn check_liveness(ops: &[LeaseOp], liveness: &Liveness, report: &mut LeaseReport) {
    let due = gone_by(ops, liveness);
    let probes: Vec<&LeaseOp> = ops.iter().filter(|o| o.probe).collect();
    for p in &probes {
        if p.outcome == LeaseOutcome::Unknown || matches!(p.outcome, LeaseOutcome::Failed(_)) {
            report.violation(format!(
                "liveness: the final probe {} did not complete on the healed cluster",
                p.describe()
            ));
        }
    }
    let mut judged = BTreeSet::new();
    for (&lease, &by) in &due {
        for p in probes.iter().filter(|p| p.call_us >= by) {
            let alive = match (&p.kind, &p.outcome) {
                (LeaseOpKind::KeepAlive { lease: l }, outcome) if *l == lease => {
                    judged.insert(lease);
                    matches!(outcome, LeaseOutcome::Renewed { .. })
                }
                (LeaseOpKind::List, LeaseOutcome::Listed(ids)) => ids.contains(&lease),
                (LeaseOpKind::Scan { .. }, LeaseOutcome::Keys(keys)) => {
                    keys.iter().any(|(_, l)| *l == lease)
                }
                _ => false,
            };
            if alive {
                report.violation(format!(
                    "liveness: lease {lease} should have been gone by {} ms (TTL + {} ms after the later of its last possible renewal and the cluster settling), but {} still found it",
                    ms(by),
                    liveness.expiry_bound_us / 1000,
                    p.describe()
                ));
                break;
            }
        }
    }
    report.liveness_judged = judged.len();
    report.liveness_unjudged = due.len() - judged.len();
}
