//! Membership change as a fault kind (`--faults …,reconfig`): an operator changes the member
//! set while the clients and the other faults run, the way one would with `etcdctl member`.
//!
//! Each run draws one plan — replace a member (add a learner, promote it, remove an original
//! member), replace the leader (the leader removes itself), grow by two (3 → 5, 5 → 7), grow
//! and shrink back, or add a voter directly (no learner step) and remove one — and runs its
//! steps one after another from a random moment in the fault window. New members are spare
//! node slots that start empty (`EngineConfig::join`) when their step begins; a removed member
//! is decommissioned (stopped for good) a little after its removal was acknowledged.
//!
//! The operator is a client with its own session: a step is retried with the same request id
//! at another member after a timeout or `Timeout`/`Busy` (exactly-once makes that safe), and
//! "learner not in sync" is retried until the learner caught up. Its requests are not in the
//! linearizability history; what it changes is judged through the clients' history (every
//! acknowledged write must survive), the agreement check and convergence of every member that
//! is left.

use super::{Ev, Sim, fail};
use crate::trace::TraceKind;
use std::collections::VecDeque;
use synod_caspaxos::coordinator::{ERR_MEMBER_REMOVED, ERR_NOT_READY};
use synod_core::kv::{Op, ResponseBody};
use synod_core::membership::{
    Configuration, ERR_LEARNER_NOT_READY, ERR_MEMBER_ID_EXISTS, ERR_MEMBER_NOT_FOUND,
    ERR_MEMBER_NOT_LEARNER, Member, MemberChange,
};
use synod_core::{
    ClientId, ClientReply, ClientRequest, Consistency, Engine, EngineError, NodeId, RequestId,
    SplitMix64,
};

/// Spare node slots a reconfiguration run has for new members.
pub const SPARES: usize = 2;
/// The operator's client id (far from the workload's).
pub const OPERATOR_CLIENT: ClientId = ClientId(0x0b5e_0000_0000);
/// How long the operator waits for an answer before trying another member.
const ATTEMPT_TIMEOUT_US: u64 = 1_500_000;
/// Pause between steps, and before retrying a learner that is not in sync yet.
const STEP_GAP_MAX_US: u64 = 500_000;
const NOT_READY_RETRY_US: u64 = 200_000;
/// A removed member is stopped this long after its removal was acknowledged.
const DECOMMISSION_MIN_US: u64 = 200_000;
const DECOMMISSION_MAX_US: u64 = 2_000_000;

/// One thing the operator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    AddLearner(NodeId),
    AddVoter(NodeId),
    Promote(NodeId),
    /// Remove an original member chosen when the step starts (never a spare).
    RemoveOriginal,
    /// Remove whoever leads when the step starts.
    RemoveLeader,
}

/// Operator events.
#[derive(Debug)]
pub enum OperatorEv {
    /// Start (or retry) the current step.
    Next,
    Timeout {
        attempt: u32,
    },
    Reply {
        node: NodeId,
        reply: ClientReply,
    },
    Decommission(NodeId),
}

#[derive(Debug)]
struct Attempt {
    step: Step,
    request: ClientRequest,
    /// Which member the step removes (resolved when it started).
    target: NodeId,
    attempt: u32,
}

/// The operator's state in one run.
#[derive(Debug, Default)]
pub struct Operator {
    pub enabled: bool,
    plan: VecDeque<Step>,
    current: Option<Attempt>,
    next_seq: u64,
    /// Steps whose change was acknowledged.
    pub steps_done: usize,
    /// The latest configuration an answer carried.
    pub config: Option<Configuration>,
    /// Members that answered they were removed (CASPaxos says so, where a log engine's
    /// removed member stays silent): never asked again, even before `config` shows it.
    said_removed: Vec<NodeId>,
    pub plan_name: &'static str,
}

/// Draws the plan for a run over `nodes` original members and spares `s1`, `s2`. Without
/// learners (CASPaxos: members join as acceptors directly) a learner and its promotion are one
/// voter addition.
pub fn draw_plan(rng: &mut SplitMix64, nodes: usize, learners: bool) -> (&'static str, Vec<Step>) {
    let (name, plan) = draw_learner_plan(rng, nodes);
    if learners {
        return (name, plan);
    }
    let plan = plan
        .into_iter()
        .filter_map(|s| match s {
            Step::AddLearner(id) => Some(Step::AddVoter(id)),
            Step::Promote(_) => None,
            s => Some(s),
        })
        .collect();
    (name, plan)
}

fn draw_learner_plan(rng: &mut SplitMix64, nodes: usize) -> (&'static str, Vec<Step>) {
    let (s1, s2) = (nodes as NodeId + 1, nodes as NodeId + 2);
    use Step::*;
    match rng.below(5) {
        0 => (
            "replace a member",
            vec![AddLearner(s1), Promote(s1), RemoveOriginal],
        ),
        1 => (
            "replace the leader",
            vec![AddLearner(s1), Promote(s1), RemoveLeader],
        ),
        2 => (
            "grow by two",
            vec![AddLearner(s1), Promote(s1), AddLearner(s2), Promote(s2)],
        ),
        3 => (
            "grow by two and shrink back",
            vec![
                AddLearner(s1),
                Promote(s1),
                AddVoter(s2),
                RemoveOriginal,
                RemoveLeader,
            ],
        ),
        _ => ("add a voter directly", vec![AddVoter(s1), RemoveOriginal]),
    }
}

impl<E: Engine> Sim<E> {
    /// Schedules the plan's first step somewhere in the first half of the fault window.
    pub(super) fn operator_start(&mut self) {
        if !self.cfg.faults.reconfig {
            return;
        }
        let learners = E::NAME != "caspaxos";
        let (name, plan) = draw_plan(&mut self.rng_fault, self.cfg.nodes, learners);
        self.operator.enabled = true;
        self.operator.plan = plan.into();
        self.operator.plan_name = name;
        let start = self
            .rng_fault
            .range(self.cfg.fault_window_us / 10, self.cfg.fault_window_us / 2);
        self.at(start, Ev::Operator(OperatorEv::Next));
    }

    pub(super) fn operator_event(&mut self, ev: OperatorEv) {
        match ev {
            OperatorEv::Next => self.operator_next(),
            OperatorEv::Timeout { attempt } => {
                if self.operator.current.as_ref().map(|a| a.attempt) == Some(attempt) {
                    self.operator_send();
                }
            }
            OperatorEv::Reply { node, reply } => self.operator_reply(node, reply),
            OperatorEv::Decommission(node) => self.decommission(node),
        }
    }

    /// Starts the next step of the plan (or re-sends the current one).
    fn operator_next(&mut self) {
        if self.operator.current.is_some() {
            self.operator_send();
            return;
        }
        let Some(step) = self.operator.plan.pop_front() else {
            return;
        };
        let (change, target) = match step {
            Step::AddLearner(id) | Step::AddVoter(id) => {
                self.provision(id);
                let member = Member {
                    id,
                    name: format!("n{id}"),
                    learner: matches!(step, Step::AddLearner(_)),
                    ..Member::default()
                };
                (MemberChange::Add(member), id)
            }
            Step::Promote(id) => (MemberChange::Promote(id), id),
            Step::RemoveOriginal => {
                let voters: Vec<NodeId> = self
                    .operator_voters()
                    .into_iter()
                    .filter(|id| *id <= self.cfg.nodes as NodeId)
                    .collect();
                let Some(&id) =
                    voters.get(self.rng_fault.below(voters.len().max(1) as u64) as usize)
                else {
                    return;
                };
                (MemberChange::Remove(id), id)
            }
            Step::RemoveLeader => {
                let id = self.current_leader();
                (MemberChange::Remove(id), id)
            }
        };
        self.operator.next_seq += 1;
        let seq = self.operator.next_seq;
        let request = ClientRequest {
            id: RequestId {
                client: OPERATOR_CLIENT,
                seq,
            },
            first_unacked: seq,
            op: Op::Membership(change),
            consistency: Consistency::Linearizable,
        };
        self.note(
            None,
            TraceKind::Fault(format!("operator: {step:?} (target n{target})")),
        );
        self.operator.current = Some(Attempt {
            step,
            request,
            target,
            attempt: 0,
        });
        self.operator_send();
    }

    /// Voters as the operator last saw them (the original members before any answer).
    fn operator_voters(&self) -> Vec<NodeId> {
        match &self.operator.config {
            Some(c) => c.voters(),
            None => (1..=self.cfg.nodes as NodeId).collect(),
        }
    }

    /// Sends the current step to a live member other than the last one tried.
    fn operator_send(&mut self) {
        let voters = self.operator_voters();
        let candidates: Vec<NodeId> = self
            .members
            .iter()
            .copied()
            .filter(|m| voters.contains(m) && !self.operator.said_removed.contains(m))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let node = *self.rng_fault.pick(&candidates);
        let Some(a) = self.operator.current.as_mut() else {
            return;
        };
        a.attempt += 1;
        let (attempt, request) = (a.attempt, a.request.clone());
        self.at(self.now_us + 500, Ev::Submit { node, request });
        self.at(
            self.now_us + ATTEMPT_TIMEOUT_US,
            Ev::Operator(OperatorEv::Timeout { attempt }),
        );
    }

    fn operator_reply(&mut self, node: NodeId, reply: ClientReply) {
        let Some(a) = self.operator.current.as_ref() else {
            return;
        };
        if reply.id != a.request.id {
            return;
        }
        let (step, target) = (a.step, a.target);
        let done = match &reply.result {
            Ok(r) => {
                if let ResponseBody::Membership(c) = &r.body {
                    self.operator.config = Some(c.clone());
                }
                true
            }
            // An earlier attempt was applied and its saved reply is gone (it cannot be, with
            // the session; but a step whose effect is there is done either way).
            Err(EngineError::Membership(m))
                if m == ERR_MEMBER_ID_EXISTS
                    || m == ERR_MEMBER_NOT_FOUND
                    || m == ERR_MEMBER_NOT_LEARNER =>
            {
                true
            }
            // Not yet: a learner still catching up, or (CASPaxos) an earlier change whose
            // coordinator stopped answering and that another member has not resumed yet, or
            // a member still repairing lost storage that cannot coordinate until it is whole.
            Err(EngineError::Membership(m))
                if m == ERR_LEARNER_NOT_READY
                    || m.contains("in progress")
                    || m == ERR_NOT_READY =>
            {
                if let Some(a) = self.operator.current.as_mut() {
                    a.attempt += 1;
                }
                self.at(
                    self.now_us + NOT_READY_RETRY_US,
                    Ev::Operator(OperatorEv::Next),
                );
                return;
            }
            // The member asked was removed meanwhile — by this very step when it is the one
            // being removed, the first attempt having been applied elsewhere. It cannot tell
            // whether the step is done; another member can (it answers "member not found").
            Err(EngineError::Membership(m)) if m == ERR_MEMBER_REMOVED => {
                self.operator.said_removed.push(node);
                self.operator_send();
                return;
            }
            Err(EngineError::Membership(m)) => {
                fail(
                    &mut self.failures,
                    format!("operator: {step:?} refused by n{node}: {m}"),
                );
                true
            }
            Err(_) => {
                self.operator_send();
                return;
            }
        };
        if !done {
            return;
        }
        self.note(
            Some(node),
            TraceKind::Fault(format!("operator: {step:?} done")),
        );
        self.operator.current = None;
        self.operator.steps_done += 1;
        if matches!(step, Step::RemoveOriginal | Step::RemoveLeader) {
            let delay = self
                .rng_fault
                .range(DECOMMISSION_MIN_US, DECOMMISSION_MAX_US);
            self.at(
                self.now_us + delay,
                Ev::Operator(OperatorEv::Decommission(target)),
            );
        }
        let gap = self.rng_fault.below(STEP_GAP_MAX_US);
        self.at(self.now_us + gap, Ev::Operator(OperatorEv::Next));
    }

    /// A spare slot becomes a new, empty member (started with `join`).
    fn provision(&mut self, id: NodeId) {
        let i = self.idx(id);
        if self.nodes[i].provisioned {
            return;
        }
        self.nodes[i].provisioned = true;
        self.members.push(id);
        self.members.sort_unstable();
        self.note(
            Some(id),
            TraceKind::Fault("operator: new member starts empty".into()),
        );
        self.boot(id);
        let phase = self.rng_fault.below(super::TICK_US);
        self.at(self.now_us + phase, Ev::Tick(id));
    }

    /// A removed member is stopped for good.
    fn decommission(&mut self, id: NodeId) {
        let i = self.idx(id);
        self.nodes[i].retired = true;
        self.nodes[i].engine = None;
        self.members.retain(|m| *m != id);
        self.note(
            Some(id),
            TraceKind::Fault("operator: removed member stopped".into()),
        );
    }
}
