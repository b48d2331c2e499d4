//! Leases in partitioned mode: every group keeps a copy of every lease.
//!
//! A lease is one etcd object, but the keys attached to it live in many groups, and a put
//! with a lease must find the lease where the put is applied — in its key's group, atomically
//! with the put. So each group's store holds its own copy of every lease, with the keys of that
//! group attached, and each group's lessor ends its own copy (deleting its keys) when the TTL
//! runs out since that group last renewed it. A lease request is *fanned out* to every group
//! of the layout and answered once every group answered:
//!
//! * **Grant**: first in the first group (which chooses the id when the client did not, and
//!   answers a retried grant from its client table), then with that id in every other group.
//! * **Keep-alive**: renews every copy, and is acknowledged only once every group renewed —
//!   so no group's clock starts before the acknowledged keep-alive was sent, which is what
//!   "no key goes before keep-alive + TTL" needs. If any group has no copy, the lease is
//!   reported gone (`LeaseNotFound`): a lease lives while every copy does.
//! * **Revoke**: ends every copy (each group deletes its keys in one revision of its own).
//! * **TimeToLive / Leases**: the smallest time left and the keys of every group; the leases
//!   every group holds.
//!
//! Compactions are fanned out the same way (their answers combine in `compact.rs`).
//!
//! **Layout changes.** A fan is complete only when every group of the layout *at completion*
//! answered; groups split off meanwhile are sent the request too, and answers of groups merged
//! away meanwhile do not count (their copy joined the group below, whose answer does). Why
//! that suffices: a group's answer reaches this member only after this member's replica of the
//! group applied the request, hence every split the group decided before it — so the layout
//! here already names every group that could hold a copy the request did not reach. A group
//! that refused a part as a wrong group (frozen for a merge, not started here yet) is asked
//! again after a growing pause. Parts carry request ids of their own, so a part asked again is
//! applied again rather than answered from a client table (a revoke must reach the copy a
//! merge brought in).
//!
//! A keep-alive's (or time-to-live's) answer speaks for the copy its group held *when it
//! answered*: a group that absorbed another since holds a copy that answer never saw — if the
//! absorbed group had ended its copy, the absorb ended this one too, and the lease is gone. So
//! such an answer is dropped and the group asked again; and these requests go to every group,
//! the first too, under part ids, never the client's own id, whose client table would answer
//! a retry with the answer of the first attempt. (Seed 73,475 of the simulator's
//! leases-while-ranges-split-and-merge: a keep-alive timed out at one member, its retry at
//! another was acknowledged from the first group's table — an answer given before that group
//! absorbed a group whose lessor had expired the lease meanwhile; the lease's keys were gone
//! 969 ms before the TTL the acknowledged keep-alive proved.)

use crate::layout::{GroupId, Layout};
use std::collections::BTreeMap;
use synod_core::ids::ENGINE_OWN_SEQ_BASE;
use synod_core::kv::{Key, LeaseGrantRequest, LeaseInfo, LeaseTtl, Op, Response, ResponseBody};
use synod_core::{ClientId, ClientReply, ClientRequest, EngineError, RequestId};

/// Sequence numbers of the parts start here: engine-own requests (no session), apart from the
/// partitioned engine's other own requests (compactions, splits, absorbs).
const PART_SEQ_BASE: u64 = ENGINE_OWN_SEQ_BASE + (1 << 61);
/// Longest pause, in ticks, before a group that refused a part is asked again.
const RETRY_TICKS_MAX: u64 = 32;

/// Whether `op` is a request a partitioned engine fans out to every group: a lease request,
/// or a compaction (`compact.rs`), which needs the same completeness through splits and merges.
pub(crate) fn is_fanned(op: &Op) -> bool {
    matches!(
        op,
        Op::LeaseGrant(_)
            | Op::LeaseRevoke { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseTimeToLive { .. }
            | Op::LeaseLeases
            | Op::Compact(_)
    )
}

/// The lease requests being fanned out, and their parts in flight.
#[derive(Default)]
pub(crate) struct LeaseFans {
    fans: BTreeMap<RequestId, Fan>,
    /// Each part in flight: the client request it belongs to, and its group.
    parts: BTreeMap<RequestId, (RequestId, GroupId)>,
    next_seq: u64,
    /// Planted bug `PartitionLeaseRenewsOneGroup`.
    pub(crate) bug_renew_one_group: bool,
    /// Planted bug `PartitionCompactOneGroup`.
    pub(crate) bug_compact_one_group: bool,
    /// Planted bug `PartitionKeepAliveOutgrownAnswer`.
    pub(crate) bug_keep_outgrown_answers: bool,
}

/// One client's lease request on its way through the groups.
struct Fan {
    request: ClientRequest,
    /// A grant: the first group's answer, which every other group grants.
    granted: Option<LeaseInfo>,
    /// Every group's answer (a wrong-group refusal is no answer: the group is asked again).
    answers: BTreeMap<GroupId, Result<Response, EngineError>>,
    /// The keys each answering group held when it answered.
    answered_bounds: BTreeMap<GroupId, (Key, Key)>,
    pending: BTreeMap<GroupId, RequestId>,
    /// Per group that refused a part: the tick before which it is not asked again, and the
    /// pause after the next refusal.
    retry: BTreeMap<GroupId, (u64, u64)>,
    deadline: u64,
}

impl LeaseFans {
    /// Takes a client's lease request. A retry of one still on its way is left to it.
    pub(crate) fn start(&mut self, request: ClientRequest, now: u64, timeout: u64) {
        if self.fans.contains_key(&request.id) {
            return;
        }
        let fan = Fan {
            request,
            granted: None,
            answers: BTreeMap::new(),
            answered_bounds: BTreeMap::new(),
            pending: BTreeMap::new(),
            retry: BTreeMap::new(),
            deadline: now + timeout.max(1),
        };
        self.fans.insert(fan.request.id, fan);
    }

    /// Records a group's answer to a part; gives `reply` back if it is not a part's.
    pub(crate) fn answer(
        &mut self,
        g: GroupId,
        reply: ClientReply,
        layout: &Layout,
        now: u64,
    ) -> Option<ClientReply> {
        let Some(&(fan_id, pg)) = self.parts.get(&reply.id) else {
            return Some(reply);
        };
        if pg != g {
            return Some(reply); // another group's request with the same (client's) id
        }
        self.parts.remove(&reply.id);
        let Some(fan) = self.fans.get_mut(&fan_id) else {
            return None; // the fan timed out meanwhile
        };
        fan.pending.remove(&g);
        // Merged away meanwhile: the group below answers for its copy.
        layout.position(g)?;
        if !matches!(reply.result, Err(EngineError::WrongGroup { .. })) {
            fan.answered_bounds.insert(g, layout.bounds(g));
        }
        match reply.result {
            Err(EngineError::WrongGroup { .. }) => fan.back_off(g, now),
            Ok(Response {
                body: ResponseBody::LeaseGrant(info),
                ..
            }) if fan.granted.is_none() => {
                fan.granted = Some(info);
                fan.answers.insert(g, reply.result);
            }
            result => {
                fan.answers.insert(g, result);
            }
        }
        None
    }

    /// Sends the parts every fan still needs (to `started` groups of `layout`, which
    /// `submit` hands them to) and returns the replies of the fans now complete or timed out.
    pub(crate) fn pump(
        &mut self,
        layout: &Layout,
        now: u64,
        started: impl Fn(GroupId) -> bool,
        mut submit: impl FnMut(GroupId, ClientRequest),
    ) -> Vec<ClientReply> {
        let mut done = Vec::new();
        if self.fans.is_empty() {
            return done;
        }
        let ids: Vec<GroupId> = layout.ids().collect();
        let Some(&first) = ids.first() else {
            return done;
        };
        for (id, fan) in self.fans.iter_mut() {
            let one_group = fan.one_group(self.bug_renew_one_group, self.bug_compact_one_group);
            let renewal = fan.is_renewal() && !self.bug_keep_outgrown_answers;
            if renewal {
                fan.forget_outgrown_answers(layout);
            }
            if let Some(result) = fan.outcome(&ids, one_group) {
                done.push(ClientReply { id: *id, result });
                continue;
            }
            if now >= fan.deadline {
                done.push(ClientReply {
                    id: *id,
                    result: Err(EngineError::Timeout),
                });
                continue;
            }
            for &g in &ids {
                let Some(op) = fan.part_op(g, first, one_group) else {
                    continue;
                };
                if fan.answers.contains_key(&g)
                    || fan.pending.contains_key(&g)
                    || fan.retry.get(&g).is_some_and(|(at, _)| now < *at)
                {
                    continue;
                }
                if !started(g) {
                    fan.back_off(g, now);
                    continue;
                }
                let part = if g == first && !renewal {
                    // The client's own id: the first group's client table answers a retry
                    // (a grant with id 0 must not make a second lease).
                    ClientRequest {
                        op,
                        ..fan.request.clone()
                    }
                } else {
                    self.next_seq += 1;
                    ClientRequest {
                        id: RequestId {
                            client: ClientId::NONE,
                            seq: PART_SEQ_BASE + self.next_seq,
                        },
                        first_unacked: 0,
                        op,
                        consistency: fan.request.consistency,
                    }
                };
                fan.pending.insert(g, part.id);
                self.parts.insert(part.id, (*id, g));
                submit(g, part);
            }
        }
        for reply in &done {
            self.fans.remove(&reply.id);
        }
        done
    }
}

impl Fan {
    /// Whether a planted bug asks only the first group: a keep-alive
    /// (`PartitionLeaseRenewsOneGroup`) or a compaction (`PartitionCompactOneGroup`).
    fn one_group(&self, renew_bug: bool, compact_bug: bool) -> bool {
        match self.request.op {
            Op::LeaseKeepAlive { .. } => renew_bug,
            Op::Compact(_) => compact_bug,
            _ => false,
        }
    }

    /// A keep-alive or a time-to-live: what it answers is the state of every copy *now*, so
    /// neither an old answer nor a client table's may stand for it (see the module doc).
    fn is_renewal(&self) -> bool {
        matches!(
            self.request.op,
            Op::LeaseKeepAlive { .. } | Op::LeaseTimeToLive { .. }
        )
    }

    /// Drops the answers of groups whose range grew since they answered (an absorb: see the
    /// module doc); they are asked again.
    fn forget_outgrown_answers(&mut self, layout: &Layout) {
        let outgrown: Vec<GroupId> = self
            .answered_bounds
            .iter()
            .filter(|(g, then)| {
                layout.position(**g).is_some() && !within(&layout.bounds(**g), then)
            })
            .map(|(g, _)| *g)
            .collect();
        for g in outgrown {
            self.answers.remove(&g);
            self.answered_bounds.remove(&g);
        }
    }

    fn back_off(&mut self, g: GroupId, now: u64) {
        let pause = self.retry.get(&g).map_or(1, |(_, p)| *p);
        self.retry
            .insert(g, (now + pause, (pause * 2).min(RETRY_TICKS_MAX)));
    }

    /// What group `g` is asked (`first` is the layout's first group); `None`: nothing yet.
    fn part_op(&self, g: GroupId, first: GroupId, one_group: bool) -> Option<Op> {
        match (&self.request.op, self.granted) {
            (Op::LeaseGrant(_), None) if g != first => None,
            (Op::LeaseGrant(asked), Some(info)) => Some(Op::LeaseGrant(LeaseGrantRequest {
                id: info.id,
                ttl: asked.ttl,
            })),
            _ if one_group && g != first => None,
            (op, _) => Some(op.clone()),
        }
    }

    /// The reply, once every group of the layout (`ids`) answered.
    fn outcome(&self, ids: &[GroupId], one_group: bool) -> Option<Result<Response, EngineError>> {
        if let (Op::LeaseGrant(_), None) = (&self.request.op, self.granted) {
            // The first group refused the grant (or has not answered): no other was asked.
            return match self.answers.get(ids.first()?)? {
                Err(e) => Some(Err(e.clone())),
                Ok(other) => Some(Err(EngineError::InvalidRequest(format!(
                    "a grant was answered with {other:?}"
                )))),
            };
        }
        let asked = if one_group { &ids[..1] } else { ids };
        let answers: Vec<&Result<Response, EngineError>> = asked
            .iter()
            .map(|g| self.answers.get(g))
            .collect::<Option<_>>()?;
        let revision = answers
            .iter()
            .filter_map(|a| a.as_ref().ok())
            .map(|r| r.revision)
            .max()
            .unwrap_or(0);
        let body = match &self.request.op {
            Op::LeaseGrant(_) => combine_grants(&answers, self.granted),
            Op::LeaseKeepAlive { id } => combine_keep_alives(&answers, *id),
            Op::LeaseRevoke { .. } => combine_revokes(&answers),
            Op::LeaseTimeToLive { id, .. } => combine_ttls(&answers, *id),
            Op::LeaseLeases => combine_lists(&answers),
            Op::Compact(_) => {
                return Some(crate::compact::combine(
                    answers.into_iter().cloned().collect(),
                ));
            }
            other => Err(EngineError::InvalidRequest(format!(
                "not a fanned request: {other:?}"
            ))),
        };
        Some(body.map(|body| Response { revision, body }))
    }
}

/// Whether the keys `[now.0, now.1)` lie within `[then.0, then.1)` (an empty end: to the end
/// of the keyspace).
fn within(now: &(Key, Key), then: &(Key, Key)) -> bool {
    let end_within = then.1.is_empty() || (!now.1.is_empty() && now.1 <= then.1);
    now.0 >= then.0 && end_within
}

type Answers<'a> = [&'a Result<Response, EngineError>];

/// The first error that is not `allowed`.
fn first_error(answers: &Answers, allowed: fn(&EngineError) -> bool) -> Option<EngineError> {
    answers
        .iter()
        .find_map(|a| a.as_ref().err().filter(|e| !allowed(e)).cloned())
}

/// A grant holds once every group holds the lease (a group that already had this id holds it).
fn combine_grants(
    answers: &Answers,
    granted: Option<LeaseInfo>,
) -> Result<ResponseBody, EngineError> {
    if let Some(e) = first_error(answers, |e| matches!(e, EngineError::LeaseExists)) {
        return Err(e);
    }
    granted
        .map(ResponseBody::LeaseGrant)
        .ok_or_else(|| EngineError::InvalidRequest("a grant without the first group's".into()))
}

/// Renewed only if every copy was; gone if any copy is.
fn combine_keep_alives(
    answers: &Answers,
    id: synod_core::kv::LeaseId,
) -> Result<ResponseBody, EngineError> {
    if answers
        .iter()
        .any(|a| matches!(a, Err(EngineError::LeaseNotFound)))
    {
        return Err(EngineError::LeaseNotFound);
    }
    if let Some(e) = first_error(answers, |_| false) {
        return Err(e);
    }
    let ttl = answers
        .iter()
        .filter_map(|a| match a {
            Ok(Response {
                body: ResponseBody::LeaseKeepAlive(info),
                ..
            }) => Some(info.ttl),
            _ => None,
        })
        .min()
        .unwrap_or(0);
    Ok(ResponseBody::LeaseKeepAlive(LeaseInfo { id, ttl }))
}

/// Revoked if some copy was and no group failed; not found if no group had one.
fn combine_revokes(answers: &Answers) -> Result<ResponseBody, EngineError> {
    if let Some(e) = first_error(answers, |e| matches!(e, EngineError::LeaseNotFound)) {
        return Err(e);
    }
    if answers.iter().all(|a| a.is_err()) {
        return Err(EngineError::LeaseNotFound);
    }
    Ok(ResponseBody::LeaseRevoke)
}

/// The smallest time left and every group's keys, in key order (the groups are); a lease
/// some group has no copy of is gone.
fn combine_ttls(
    answers: &Answers,
    id: synod_core::kv::LeaseId,
) -> Result<ResponseBody, EngineError> {
    if let Some(e) = first_error(answers, |_| false) {
        return Err(e);
    }
    let mut out: Option<LeaseTtl> = None;
    for a in answers {
        let Ok(Response {
            body: ResponseBody::LeaseTimeToLive(t),
            ..
        }) = a
        else {
            return Err(EngineError::InvalidRequest(format!(
                "a TimeToLive part was answered with {a:?}"
            )));
        };
        if t.remaining_ttl < 0 {
            return Ok(ResponseBody::LeaseTimeToLive(LeaseTtl {
                id,
                granted_ttl: 0,
                remaining_ttl: -1,
                keys: Vec::new(),
            }));
        }
        match &mut out {
            None => out = Some(t.clone()),
            Some(o) => {
                o.remaining_ttl = o.remaining_ttl.min(t.remaining_ttl);
                o.keys.extend(t.keys.iter().cloned());
            }
        }
    }
    out.map(ResponseBody::LeaseTimeToLive)
        .ok_or_else(|| EngineError::InvalidRequest("a TimeToLive without parts".into()))
}

/// The leases every group holds.
fn combine_lists(answers: &Answers) -> Result<ResponseBody, EngineError> {
    if let Some(e) = first_error(answers, |_| false) {
        return Err(e);
    }
    let mut common: Option<std::collections::BTreeSet<synod_core::kv::LeaseId>> = None;
    for a in answers {
        let Ok(Response {
            body: ResponseBody::LeaseLeases(ids),
            ..
        }) = a
        else {
            return Err(EngineError::InvalidRequest(format!(
                "a Leases part was answered with {a:?}"
            )));
        };
        let ids = ids.iter().copied().collect();
        common = Some(match common {
            None => ids,
            Some(c) => c.intersection(&ids).copied().collect(),
        });
    }
    Ok(ResponseBody::LeaseLeases(
        common.unwrap_or_default().into_iter().collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::kv::LeaseId;

    const LEASE: LeaseId = 7;

    fn keep_alive(seq: u64) -> ClientRequest {
        ClientRequest {
            id: RequestId {
                client: ClientId(5),
                seq,
            },
            first_unacked: seq,
            op: Op::LeaseKeepAlive { id: LEASE },
            consistency: synod_core::Consistency::Linearizable,
        }
    }

    fn renewed(id: RequestId) -> ClientReply {
        ClientReply {
            id,
            result: Ok(Response {
                revision: 1,
                body: ResponseBody::LeaseKeepAlive(LeaseInfo { id: LEASE, ttl: 5 }),
            }),
        }
    }

    fn gone(id: RequestId) -> ClientReply {
        ClientReply {
            id,
            result: Err(EngineError::LeaseNotFound),
        }
    }

    /// Pumps the fans; the parts sent, by group, and the replies.
    fn pump(
        fans: &mut LeaseFans,
        layout: &Layout,
    ) -> (Vec<(GroupId, RequestId)>, Vec<ClientReply>) {
        let mut sent = Vec::new();
        let done = fans.pump(layout, 0, |_| true, |g, r| sent.push((g, r.id)));
        (sent, done)
    }

    /// Groups 0 and 1 (split at "m"): group 0 renews its copy; group 1, whose copy had ended,
    /// is merged into group 0 before it answers — which ends group 0's copy too. Group 0's
    /// answer from before the absorb no longer speaks for the lease; `planted` counts it.
    fn keep_alive_across_an_absorb(planted: bool) -> Option<ClientReply> {
        let mut fans = LeaseFans {
            bug_keep_outgrown_answers: planted,
            ..LeaseFans::default()
        };
        let mut layout = Layout::new(vec![b"m".to_vec()]).expect("a layout");
        let request = keep_alive(1);
        fans.start(request.clone(), 0, 100);
        let (sent, _) = pump(&mut fans, &layout);
        let parts: BTreeMap<GroupId, RequestId> = sent.into_iter().collect();
        assert_eq!(parts.len(), 2, "both groups asked");
        // Under part ids only: the first group's client table would answer a retry.
        assert_eq!(parts[&0] == request.id, planted);
        assert!(fans.answer(0, renewed(parts[&0]), &layout, 0).is_none());
        layout.merge(b"m", 1);
        // The absorbed group's part is answered by no one now; group 0 must be asked again.
        let (sent, done) = pump(&mut fans, &layout);
        if planted {
            return done.into_iter().next();
        }
        assert!(done.is_empty(), "no answer yet: {done:?}");
        let again: Vec<&(GroupId, RequestId)> = sent.iter().filter(|(g, _)| *g == 0).collect();
        assert_eq!(again.len(), 1, "group 0 asked again: {sent:?}");
        assert!(fans.answer(0, gone(again[0].1), &layout, 0).is_none());
        let (_, done) = pump(&mut fans, &layout);
        done.into_iter().next()
    }

    #[test]
    fn an_answer_from_before_the_group_absorbed_another_is_asked_again() {
        let reply = keep_alive_across_an_absorb(false).expect("answered");
        assert_eq!(reply.result, Err(EngineError::LeaseNotFound));
    }

    #[test]
    fn planted_outgrown_answer_acknowledges_the_keep_alive() {
        let reply = keep_alive_across_an_absorb(true).expect("answered");
        assert!(reply.result.is_ok(), "acknowledged, wrongly: {reply:?}");
    }

    /// A split leaves the answering group's range smaller: its answer still stands, and only
    /// the new group is asked.
    #[test]
    fn an_answer_stands_when_the_group_split_meanwhile() {
        let mut fans = LeaseFans::default();
        let mut layout = Layout::new(vec![]).expect("a layout");
        fans.start(keep_alive(1), 0, 100);
        let (sent, _) = pump(&mut fans, &layout);
        assert_eq!(sent.len(), 1);
        assert!(fans.answer(0, renewed(sent[0].1), &layout, 0).is_none());
        layout.split(b"m".to_vec(), 9);
        let (sent, done) = pump(&mut fans, &layout);
        assert!(done.is_empty());
        assert_eq!(sent.iter().map(|(g, _)| *g).collect::<Vec<_>>(), [9]);
        assert!(fans.answer(9, renewed(sent[0].1), &layout, 0).is_none());
        let (_, done) = pump(&mut fans, &layout);
        assert!(done[0].result.is_ok(), "{done:?}");
    }
}
