//! The simulated lease clients (runs with `leases > 0` on an engine with leases): their slots
//! among the clients, their operations through the ordinary client machinery (random node,
//! retries, timeouts, sessions), the history the lease checker judges, and the final probes.
//!
//! Lease clients are client slots after the register clients, driven by
//! [`crate::lease_ops::Workload`] instead of the register workload. Their operations never enter
//! the linearizability history; each one, once finished (or given up, or still open at the end:
//! outcome unknown), becomes a [`LeaseOp`]. When every lease client is idle after the heal, the
//! probes are scheduled for the moment every lease must be gone
//! ([`synod_checker::leases::gone_by`]); the run converges only after they are done.

use super::{Engine, Ev, OpenOp, Sim, SimClient, fail};
use crate::lease_ops::{self, Step, Workload};
use synod_checker::leases::{self, LeaseInput, LeaseOp, LeaseOpKind, LeaseOutcome, LeaseReport};
use synod_core::history::HistoryOp;
use synod_core::kv::Response;
use synod_core::{EngineError, NodeId};

/// A healed lease must be gone this long after its last possible renewal + TTL (the leader's
/// lessor checks every tick; the expiry then needs one commit).
pub const EXPIRY_BOUND_US: u64 = 1_000_000;

/// The lease clients of a run and what they recorded.
pub(super) struct LeaseHub {
    pub(super) enabled: bool,
    workload: Workload,
    /// The first lease client's slot; lease client `k` is slot `first_slot + k`.
    first_slot: usize,
    ops: Vec<LeaseOp>,
    /// Lease operations answered with success.
    pub(super) ops_ok: u64,
}

impl LeaseHub {
    pub(super) fn new(seed: u64, clients: usize, stop_at_us: u64) -> Self {
        LeaseHub {
            enabled: clients > 0,
            workload: Workload::new(seed, clients, stop_at_us),
            first_slot: usize::MAX,
            ops: Vec::new(),
            ops_ok: 0,
        }
    }

    /// The lease client of `slot`, if it is one.
    fn client_of(&self, slot: usize) -> Option<usize> {
        slot.checked_sub(self.first_slot)
            .filter(|k| *k < self.workload.len())
    }

    pub(super) fn is_lease_slot(&self, slot: usize) -> bool {
        self.client_of(slot).is_some()
    }

    /// The lease clients are finished: probes done (trivially without lease clients).
    pub(super) fn done(&self) -> bool {
        !self.enabled || self.workload.probes_done()
    }

    fn record(
        &mut self,
        client: u64,
        kind: LeaseOpKind,
        hist: &HistoryOp,
        ret: Option<u64>,
        outcome: LeaseOutcome,
    ) {
        let probe = self.workload.probing();
        self.ops.push(LeaseOp {
            client,
            kind,
            call_us: hist.call,
            ret_us: ret,
            outcome,
            probe,
        });
    }
}

/// The placeholder history entry of a lease operation (only its call time is used, for the
/// liveness bound and the lease history).
fn placeholder(client: u64, kind: &LeaseOpKind, now_us: u64) -> HistoryOp {
    let what = format!("(lease workload: {})", lease_ops::describe(kind));
    crate::client::read_hist(client, what, now_us)
}

impl<E: Engine> Sim<E> {
    /// Adds the lease clients after the register clients and starts them.
    pub(super) fn lease_start(&mut self) {
        if !self.leases.enabled {
            return;
        }
        self.leases.first_slot = self.clients.len();
        for _ in 0..self.leases.workload.len() {
            let id = self.fresh_client_id();
            let slot = self.clients.len();
            self.slot_by_client.insert(id, slot);
            self.clients.push(SimClient::workload(id));
            let start = self.leases.workload.rng.below(lease_ops::IDLE_THINK_MAX_US);
            self.at(start, Ev::ClientStart(slot));
        }
    }

    pub(super) fn is_lease_slot(&self, slot: usize) -> bool {
        self.leases.is_lease_slot(slot)
    }

    /// A lease client's turn: its next operation, a later turn, or (idle) maybe the probes.
    pub(super) fn start_lease_op(&mut self, slot: usize) {
        let Some(k) = self.leases.client_of(slot) else {
            return;
        };
        if self.clients[slot].open.is_some() {
            return;
        }
        match self.leases.workload.next(k, self.now_us) {
            Step::Run(kind) => {
                let c = &mut self.clients[slot];
                let request = lease_ops::request(&kind, c.id, c.seq);
                let hist = placeholder(c.id.0, &kind, self.now_us);
                c.ops_started += 1;
                c.open = Some(OpenOp {
                    is_read: request.op.is_read(),
                    request,
                    hist,
                    attempt: 0,
                    maybe_applied: false,
                    node: 0,
                    first_node: None,
                    watch_extra: false,
                    lease: Some(kind),
                    compaction: None,
                });
                self.send_attempt(slot);
            }
            Step::Wait(at) => self.at(at.max(self.now_us), Ev::ClientStart(slot)),
            Step::Idle => self.maybe_schedule_probes(),
        }
    }

    /// Once every lease client is idle after the heal: the probes, when every lease must be
    /// gone.
    fn maybe_schedule_probes(&mut self) {
        // An idle client has nothing open and starts nothing more until the probes.
        let w = &self.leases.workload;
        if w.probing() || !w.all_idle() {
            return;
        }
        let Some(liveness) = self.lease_liveness() else {
            return;
        };
        let at = leases::gone_by(&self.leases.ops, &liveness)
            .values()
            .copied()
            .max()
            .unwrap_or(0)
            .max(self.now_us);
        self.leases.workload.start_probes();
        self.note(
            None,
            crate::trace::TraceKind::Note(format!("lease probes at {} ms", at / 1000)),
        );
        for k in 0..self.leases.workload.len() {
            self.at(at, Ev::ClientStart(self.leases.first_slot + k));
        }
    }

    /// The liveness parameters: unknown outcomes and leadership settle within the liveness
    /// bound after the heal (a new leader restarts every TTL, so a lease may live until its
    /// TTL after the last leader change).
    fn lease_liveness(&self) -> Option<leases::Liveness> {
        (self.now_us >= self.heal_at_us).then_some(leases::Liveness {
            settled_us: self.heal_at_us + self.cfg.liveness_bound_us,
            expiry_bound_us: EXPIRY_BOUND_US,
        })
    }

    /// When lease client `slot` looks for its next step.
    pub(super) fn lease_schedule_next(&mut self, slot: usize) {
        let Some(k) = self.leases.client_of(slot) else {
            return;
        };
        let at = self.leases.workload.wake_at(k, self.now_us);
        self.at(at, Ev::ClientStart(slot));
    }

    /// A definite reply (success or error) from `node` to the lease operation `open`.
    pub(super) fn lease_reply(
        &mut self,
        slot: usize,
        node: NodeId,
        open: OpenOp,
        reply: Result<&Response, &EngineError>,
    ) {
        let (Some(k), Some(kind)) = (self.leases.client_of(slot), open.lease.clone()) else {
            return;
        };
        let now = self.now_us;
        self.check_op_liveness(&open.hist, now);
        self.clients[slot].seq += 1;
        let Some(outcome) = lease_ops::outcome(&kind, reply) else {
            fail(
                &mut self.failures,
                format!(
                    "n{node}: reply {reply:?} does not match lease request {}",
                    open.request.id
                ),
            );
            self.lease_unknown(slot, open);
            return;
        };
        self.leases.ops_ok += u64::from(reply.is_ok());
        self.leases
            .workload
            .on_outcome(k, &kind, open.hist.call, now, &outcome);
        self.leases.record(
            open.request.id.client.0,
            kind,
            &open.hist,
            Some(now),
            outcome,
        );
        self.lease_schedule_next(slot);
    }

    /// The lease operation `open` ends without an answer: outcome unknown (a read's too — it is
    /// simply not an observation), and the client continues under a fresh session.
    pub(super) fn lease_unknown(&mut self, slot: usize, open: OpenOp) {
        let (Some(k), Some(kind)) = (self.leases.client_of(slot), open.lease.clone()) else {
            return;
        };
        let now = self.now_us;
        self.leases
            .workload
            .on_outcome(k, &kind, open.hist.call, now, &LeaseOutcome::Unknown);
        let client = open.request.id.client.0;
        self.leases
            .record(client, kind, &open.hist, None, LeaseOutcome::Unknown);
        self.new_session(slot);
        self.lease_schedule_next(slot);
    }

    /// An operation still open when the run ends: outcome unknown.
    pub(super) fn lease_open_at_end(&mut self, open: OpenOp) {
        if let Some(kind) = open.lease {
            let client = open.request.id.client.0;
            self.leases
                .record(client, kind, &open.hist, None, LeaseOutcome::Unknown);
        }
    }

    /// End of run: the lease checker's verdict, its violations added to the failures.
    pub(super) fn lease_finish(&mut self) -> Option<LeaseReport> {
        if !self.leases.enabled {
            return None;
        }
        let liveness = self.lease_liveness();
        if liveness.is_some() && !self.leases.workload.probes_done() {
            fail(
                &mut self.failures,
                format!(
                    "lease liveness: the final probes did not finish by {} ms (healed at {} ms)",
                    self.now_us / 1000,
                    self.heal_at_us / 1000
                ),
            );
        }
        let input = LeaseInput {
            ops: std::mem::take(&mut self.leases.ops),
            liveness: liveness.filter(|_| self.leases.workload.probes_done()),
        };
        let report = leases::check(&input);
        for v in &report.violations {
            fail(&mut self.failures, format!("lease: {v}"));
        }
        if report.violations_total > report.violations.len() {
            fail(
                &mut self.failures,
                format!(
                    "lease: and {} more violations",
                    report.violations_total - report.violations.len()
                ),
            );
        }
        Some(report)
    }
}
