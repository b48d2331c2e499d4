//! Moving a placed group's replica from one member to another (`synodctl range move KEY --from
//! X --to Y`): step 4 of decision 0005, driven by the group's own membership changes.
//!
//! **The move.** A member hosting the key's group takes the request (one that does not relays
//! it to a host, as any request) and drives it: `Y` added to the group as a *learner*, promoted
//! once in sync (the protocol refuses it before: "learner not in sync", asked again), then `X`
//! removed — each an ordinary change in the group's own log, with its protocol's own
//! reconfiguration, one at a time ([`move_change`]). The group's quorum never shrinks on the
//! way (three voters, four, three). The caller is answered once the group's configuration has
//! `Y` as a voter and not `X` (a retry of a finished move too), or `Timeout` after
//! [`MOVE_TIMEOUTS`] request timeouts. The driver is this member's, in memory, but the move is
//! recorded in the range directory (`targets.rs`): if the driver crashes or loses the lead, the
//! group keeps a valid configuration part-way (`Y` a learner, or four voters) and its next
//! leader goes on with the recorded move — or the same command, asked again anywhere, does —
//! each step computed from the configuration the group has, not from where the driver was.
//!
//! **The newcomer.** `Y` has no replica of the group; the first message of the group to reach
//! it (the leader feeding its new learner) starts one *joining* — no state and no
//! configuration, owning no key, it votes in nothing and takes the group's state from the
//! snapshot its feeder sends ([`Partitioned::join_group`]). A joining replica that gets no state
//! within [`JOIN_GIVE_UP_ETS`] election timeouts (a late message of a group this member left)
//! is dropped again.
//!
//! **The member left.** A replica whose group applied a configuration without this member, or
//! whose range directory records a newer configuration of the group without it while this
//! member still counts itself a voter (it may never hear of its removal: the leader stops
//! sending to it), drops its replica ([`Partitioned::depart`]): its pending requests are
//! answered (`WrongGroup` where not applied, the node then routes them again — now a relay —
//! else `Timeout`), and the group is noted as *moved away* in the log
//! ([`crate::GroupRecord::MovedAway`]), so that a restart does not start it again from its old
//! records. A node-wide checkpoint leaves its records out.
//!
//! **Back again.** A member that rejoins a group it left (a move back) starts it as any
//! newcomer, but takes no state of the configuration version it left at or older
//! (`EngineConfig::rejoin_floor`, from [`crate::GroupRecord::LeftAt`]): a member still in an old
//! configuration would send its stale state, and this member, which forgot the votes it cast
//! there, would make up a quorum of that configuration with it. (Its replica also moves its
//! incarnation past its earlier stay's, in the replica layer.)
//!
//! **Off a removed member** ([`Partitioned::evacuate`]): `member remove` on a placed cluster is
//! decided in the first group; the leader of every placed group that still lists the member
//! moves the group off it as a move would, to the member hosting the fewest groups, and the
//! removal is answered once no group lists it (`lib.rs`).
//!
//! Every step is an [`Op::MembershipAt`], guarded by the configuration version it was computed
//! from: a step asked again after its answer was lost cannot be decided late, after what came
//! next, and undo it. And each step is checked against the group as it is now: no removal that
//! would leave the group fewer voters than placed (two leaders in turn, each moving the group
//! from a view that lagged, could otherwise remove two voters for one added), and no adding or
//! promoting a newcomer the cluster has removed since (its removal does not wait for a learner
//! it has not heard of yet) — the move ends there, refused.
//!
//! **Where a group lives** ([`Partitioned::hosts`]) is then no fixed function of the layout:
//! its voters as this member's replica has them, else as this member's copy of the range
//! directory records them (each group's leader records its configuration after every change),
//! else the placement rule. A relay to a member that does not host the group (any more) is
//! answered [`crate::Relayed::NotHere`] and sent to the next host.

use crate::Partitioned;
use crate::layout::{GroupId, child_id, group_name};
use std::collections::{BTreeMap, BTreeSet};
use synod_core::kv::{KeyRange, MoveRequest, Op, Response, ResponseBody};
use synod_core::membership::{Configuration, Member, MemberChange};
use synod_core::{ClientReply, ClientRequest, Engine, EngineError, NodeId, PlantedBug, RequestId};

/// A move unanswered after this many request timeouts is answered `Timeout` (the newcomer is
/// sent the group's whole state first).
pub const MOVE_TIMEOUTS: u64 = 6;
/// A member the cluster removed that still leads a group asks for a hand-off at most this
/// often, in election timeouts (OmniPaxos gives a hand-off up after 3).
const HAND_OFF_EVERY_ETS: u64 = 4;
/// A replica started on a group's message that has no state after this many election
/// timeouts is dropped.
pub const JOIN_GIVE_UP_ETS: u64 = 60;
/// A replica that applied its own removal goes after this many election timeouts at the
/// latest, recorded or not (`Partitioned::may_leave`).
const LINGER_ETS: u64 = 60;
/// A move's step unanswered after this many election timeouts is not waited for any more.
const STEP_WAIT_ETS: u64 = 4;

/// One move this member drives.
struct Moving {
    request: ClientRequest,
    group: GroupId,
    from: NodeId,
    /// The newcomer, once the group's leader checked the move.
    to: Option<Member>,
    /// The group's configuration version when the move was checked (what its record says).
    version: u64,
    until: u64,
}

/// The moving state of one member.
#[derive(Default)]
pub(crate) struct Moves {
    driving: Vec<Moving>,
    /// Per group: the change this member proposed for a move, while unanswered, and the
    /// tick after which it is not waited for any more.
    step: BTreeMap<GroupId, (RequestId, u64)>,
    /// Groups this member left (moved away): not started again from their old records.
    pub(crate) away: BTreeSet<GroupId>,
    pub(crate) away_changed: bool,
    /// Groups started here without state (on a message, or split off before this member
    /// lost its storage, `start_children`), with the tick and the replica's rejoin floor
    /// (`EngineConfig::rejoin_floor`), until their state arrives.
    pub(crate) joining: BTreeMap<GroupId, (u64, u64)>,
    /// `joining` changed since it was last written ([`crate::GroupRecord::Joining`]).
    pub(crate) joining_changed: bool,
    /// Groups whose replica here applied its own removal, with the tick, until it may go
    /// ([`Partitioned::may_leave`]): it serves nothing, but answers the old configuration.
    lingering: BTreeMap<GroupId, u64>,
    /// Per group this member left: the group's configuration version then. A replica joining
    /// it again takes no state of that version or older (see [`Partitioned::join_group`]).
    pub(crate) left_at: BTreeMap<GroupId, u64>,
    pub(crate) left_at_changed: bool,
    /// The cluster's configuration as [`Partitioned::evacuate`] last read it: its next member
    /// id and its members (what [`Moves::removed`] asks, on every relay).
    cluster: Option<(u64, Vec<NodeId>)>,
    /// Per group this member leads after the cluster removed it: the tick of its last
    /// hand-off (`Partitioned::hand_off_departing`).
    handed_off: BTreeMap<GroupId, u64>,
}

impl Moves {
    /// The moving state of a member that left the groups `away`, and groups at the
    /// configuration versions `left_at` (as its log says).
    pub(crate) fn left(away: Vec<GroupId>, left_at: Vec<(GroupId, u64)>) -> Self {
        Moves {
            away: away.into_iter().collect(),
            left_at: left_at.into_iter().collect(),
            ..Moves::default()
        }
    }
}

impl Moves {
    /// A replica of group `g` started here without state, at tick `now`, refusing states of
    /// configuration version `floor` or older.
    pub(crate) fn start_joining(&mut self, g: GroupId, now: u64, floor: u64) {
        self.joining.insert(g, (now, floor));
        self.joining_changed = true;
    }

    /// Group `g`'s replica here is no longer waiting for its first state (it came, or the
    /// replica is gone).
    pub(crate) fn stop_joining(&mut self, g: GroupId) {
        self.joining_changed |= self.joining.remove(&g).is_some();
    }

    /// Whether this member drives any move.
    pub(crate) fn driving_any(&self) -> bool {
        !self.driving.is_empty()
    }

    /// Whether this member drives a move of group `g`.
    pub(crate) fn driving_group(&self, g: GroupId) -> bool {
        self.driving.iter().any(|d| d.group == g)
    }

    /// The target to record for the move of group `g` driven here, if it is one the directory
    /// records (`targets.rs`): an operator's, or one going on from a record (`resumed`), once
    /// checked.
    pub(crate) fn recordable(
        &self,
        g: GroupId,
        resumed: &BTreeSet<RequestId>,
    ) -> Option<synod_core::MoveTarget> {
        let recorded =
            |d: &&Moving| !d.request.id.is_engine_own() || resumed.contains(&d.request.id);
        let d = self
            .driving
            .iter()
            .filter(|d| d.group == g)
            .find(recorded)?;
        let to = d.to.as_ref()?;
        Some(synod_core::MoveTarget {
            group: g,
            from: d.from,
            to: to.id,
            config_version: d.version,
        })
    }

    /// Whether the cluster removed member `id`, as last read (see [`Partitioned::departed`]).
    pub(crate) fn removed(&self, id: NodeId) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|(next, ids)| !ids.is_empty() && id < *next && !ids.contains(&id))
    }
}

/// The next change of a move from `from` to `to` in a group whose configuration is `c`:
/// `to` as a learner, its promotion, `from`'s removal — `None` once done.
pub fn move_change(c: &Configuration, from: NodeId, to: &Member) -> Option<MemberChange> {
    if !c.contains(to.id) {
        return Some(MemberChange::Add(Member {
            learner: true,
            ..to.clone()
        }));
    }
    if c.is_learner(to.id) {
        return Some(MemberChange::Promote(to.id));
    }
    c.contains(from).then_some(MemberChange::Remove(from))
}

fn refused(why: String) -> EngineError {
    EngineError::InvalidRequest(why)
}

impl<E: Engine> Partitioned<E> {
    /// A client's move: driven here if this member hosts the key's group, else relayed to a
    /// host.
    pub(crate) fn submit_move(&mut self, request: ClientRequest) {
        let Op::Move(m) = &request.op else {
            return;
        };
        let g = self.layout.group_of(&m.at);
        let why = match self.placed() {
            false => Some(
                "moving a range's replicas needs placement: `[partition] replicas` below the \
                 members (docs/partitioning.md, \"Placement\")"
                    .to_string(),
            ),
            true if self.layout.position(g) == Some(0) => Some(format!(
                "group {} (the cluster's configuration and auth) lives on every member: it does \
                 not move",
                group_name(g)
            )),
            true => None,
        };
        if let Some(why) = why {
            self.refused.push(ClientReply {
                id: request.id,
                result: Err(refused(why)),
            });
            return;
        }
        match self.serves(g) {
            true => self.take_move(g, request),
            false => self.relay(g, request),
        }
    }

    /// Whether this member has a replica of `g` that serves requests: not one started on a
    /// message and still waiting for the group's state, nor one lingering after its removal,
    /// nor a voter that cannot vote (until the group moves off it, `replace_non_voting`).
    pub(crate) fn serves(&self, g: GroupId) -> bool {
        // Groups on every member (the first, the meta group) are not relayed: a membership
        // change must be held here until every group followed it (`release_members`).
        let takes = |e: &E| {
            !e.non_voting() || self.everywhere(g) || self.base.bug(PlantedBug::NonVotingVoterServes)
        };
        self.groups.get(&g).is_some_and(takes)
            && !self.moves.joining.contains_key(&g)
            && !self.moves.lingering.contains_key(&g)
    }

    /// Takes a move of group `g` (this member hosts it): driven here while this member leads
    /// the group, handed to its leader otherwise.
    pub(crate) fn take_move(&mut self, g: GroupId, request: ClientRequest) {
        let Op::Move(m) = &request.op else { return };
        let (from, to) = (m.from, m.to);
        // The same move going on from its record: the operator's ask takes it over (it would
        // be refused as busy otherwise), and is answered when it is done.
        let resumed = &mut self.targets.resumed;
        let twin = |d: &Moving| {
            d.group == g
                && d.from == from
                && matches!(&d.request.op, Op::Move(o) if o.to == to)
                && resumed.contains(&d.request.id)
        };
        if let Some(i) = self.moves.driving.iter().position(twin) {
            let d = self.moves.driving.remove(i);
            resumed.remove(&d.request.id);
            self.own.answered(&d.request.id);
        }
        // Asked again after this member gave it up: the record is to be gone on with again.
        if self.targets.given_up.get(&g) == Some(&(from, to)) {
            self.targets.given_up.remove(&g);
        }
        self.push_move(g, from, request);
        self.drive_moves();
    }

    /// Starts driving `request`, a move of group `g` off `from`, for at most
    /// [`MOVE_TIMEOUTS`] request timeouts.
    fn push_move(&mut self, g: GroupId, from: NodeId, request: ClientRequest) {
        let until = self.ticks + MOVE_TIMEOUTS * self.base.request_timeout_ticks;
        self.moves.driving.push(Moving {
            request,
            group: g,
            from,
            to: None,
            version: 0,
            until,
        });
    }

    /// Goes on with the move `t` the range directory records for group `g`, led here and
    /// moving nowhere else (`targets.rs`).
    pub(crate) fn resume_move(&mut self, g: GroupId, t: synod_core::MoveTarget) {
        let id = self.push_own_move(g, t.from, t.to);
        self.targets.resumed.insert(id);
    }

    /// Starts a move of group `g` from `from` to `to` that this member makes itself (no client
    /// waits for it: `evacuate`, `rebalance`); returns its request id.
    pub(crate) fn start_own_move(&mut self, g: GroupId, from: NodeId, to: NodeId) -> RequestId {
        let id = self.push_own_move(g, from, to);
        self.rebalance.targets.insert(id, to);
        id
    }

    /// Drives a move of group `g` from `from` to `to` under a request of this member's own.
    fn push_own_move(&mut self, g: GroupId, from: NodeId, to: NodeId) -> RequestId {
        let at = self.layout.position(g).map(|p| self.layout.bounds_at(p).0);
        let request = self.own.request(Op::Move(MoveRequest {
            at: at.unwrap_or_default(),
            from,
            to,
        }));
        let id = request.id;
        self.push_move(g, from, request);
        id
    }

    /// The newcomer's details if the move is to be made, `None` if it is made already (a
    /// retry), or why it cannot be.
    fn check_move(
        &self,
        g: GroupId,
        request: &ClientRequest,
    ) -> Result<Option<Member>, EngineError> {
        let Op::Move(MoveRequest { from, to, .. }) = &request.op else {
            return Err(refused("not a move".into()));
        };
        let (from, to) = (*from, *to);
        let name = group_name(g);
        let cluster = self
            .cluster_configuration()
            .map(|(_, c)| c)
            .unwrap_or_default();
        let Some(newcomer) = cluster.member(to).filter(|m| !m.learner) else {
            return Err(refused(format!(
                "member {to} is not a voter of the cluster"
            )));
        };
        let c = self
            .groups
            .get(&g)
            .map(|e| e.status().configuration)
            .unwrap_or_default();
        if c.is_voter(to) && !c.contains(from) {
            return Ok(None);
        }
        let other = |d: &Moving| d.group == g && d.to.is_some() && d.request.id != request.id;
        if self.moves.driving.iter().any(other) {
            return Err(EngineError::Busy);
        }
        if !c.contains(from) {
            return Err(refused(format!(
                "member {from} does not host group {name} (its members: {:?})",
                c.voters()
            )));
        }
        // Both voters: a move cut short after the promotion (one voter more than placed) goes
        // on; otherwise removing `from` would leave the group short of a replica.
        if c.is_voter(to) && c.voters().len() <= self.base.partition_replicas {
            return Err(refused(format!("member {to} hosts group {name} already")));
        }
        Ok(Some(newcomer.clone()))
    }

    /// The answer to a finished move of group `g`: the group's configuration after it.
    fn move_done(&self, id: RequestId, g: GroupId) -> ClientReply {
        let status = self.groups.get(&g).map(|e| e.status());
        let revision = status.as_ref().map_or(0, |s| s.revision);
        let configuration = status.map(|s| s.configuration).unwrap_or_default();
        ClientReply {
            id,
            result: Ok(Response {
                revision,
                body: ResponseBody::Membership(configuration),
            }),
        }
    }

    /// Each move taken here: handed to its group's leader unless this member leads it; there,
    /// checked against the group's configuration, then its next change proposed once the
    /// previous one is answered; answered when done or out of time.
    ///
    /// Only the leader drives: its configuration has every change the group decided applied
    /// before it proposes the next (one change at a time), so a step is never computed from a
    /// configuration that lags — a member behind could, say, add a newcomer for a member
    /// another move already removed, leaving the group a voter too many.
    pub(crate) fn drive_moves(&mut self) {
        let mut i = 0;
        while i < self.moves.driving.len() {
            let (id, g, from, until) = {
                let d = &self.moves.driving[i];
                (d.request.id, d.group, d.from, d.until)
            };
            if self.ticks >= until {
                // An operator's move keeps its record: the leader goes on with it. One gone on
                // with from its record gives it up.
                let give_up = self.targets.resumed.contains(&id);
                self.end_move(i, Err(EngineError::Timeout), give_up);
                continue;
            }
            let status = self.groups.get(&g).map(|e| e.status());
            let leader = status.as_ref().and_then(|s| s.leader);
            if leader != Some(self.id) {
                match leader {
                    // This member's own move (`evacuate`, or one going on from its record) is
                    // not handed over: the new leader makes its own from where the group
                    // stands, or from the record — two drivers would each add a newcomer.
                    Some(_) if id.is_engine_own() => {
                        self.moves.driving.remove(i);
                        self.own.answered(&id);
                        self.rebalance.targets.remove(&id);
                        self.targets.resumed.remove(&id);
                    }
                    Some(l) => {
                        // To the leader, which drives it from where the group stands.
                        let d = self.moves.driving.remove(i);
                        self.relay.hint.insert(g, l);
                        self.relay(g, d.request);
                    }
                    None => i += 1, // no leader yet: asked again next round
                }
                continue;
            }
            if self.moves.driving[i].to.is_none() {
                let request = self.moves.driving[i].request.clone();
                match self.check_move(g, &request) {
                    Ok(Some(to)) => {
                        // The version the move started at, however far it got (a retry of one
                        // cut short): its record goes stale three changes after that.
                        let c = status.as_ref().map(|s| &s.configuration);
                        let made = c.map_or(0, |c| {
                            u64::from(c.contains(to.id)) + u64::from(c.is_voter(to.id))
                        });
                        let version = c.map_or(0, |c| c.version);
                        let d = &mut self.moves.driving[i];
                        d.to = Some(to);
                        d.version = version.saturating_sub(made);
                    }
                    Ok(None) => {
                        let reply = self.move_done(id, g);
                        self.end_move(i, reply.result, false);
                        continue;
                    }
                    Err(e) => {
                        let busy = matches!(e, EngineError::Busy);
                        self.end_move(i, Err(e), !busy);
                        continue;
                    }
                }
            }
            // A step unanswered for long (its answer lost with a leader change) is not waited
            // for: the next is computed from the group's configuration again, and a step made
            // twice is refused harmlessly ("already a member", "not a learner").
            let pending = self.step_pending(g);
            let Some(to) = self.moves.driving[i]
                .to
                .as_ref()
                .filter(|_| self.groups.contains_key(&g))
            else {
                i += 1;
                continue;
            };
            if pending {
                i += 1;
                continue;
            }
            // The status read above: nothing here changed the group since.
            let c = status.map(|s| s.configuration).unwrap_or_default();
            let next = match id.is_engine_own() && !self.targets.resumed.contains(&id) {
                true => self.own_move_change(&c, from, to),
                false => move_change(&c, from, to),
            };
            let Some(change) = next else {
                let reply = self.move_done(id, g);
                self.end_move(i, reply.result, false);
                continue;
            };
            if let Some(why) = self.step_refusal(&c, g, from, &change) {
                self.end_move(i, Err(refused(why)), true);
                continue;
            }
            self.step_change(g, c.version, change);
            i += 1;
        }
    }

    /// Ends the move driven at `i` with `result`, given up if `give_up` (its record, if the
    /// directory has one, is then dropped rather than gone on with: `targets.rs`).
    fn end_move(&mut self, i: usize, result: Result<Response, EngineError>, give_up: bool) {
        let d = self.moves.driving.remove(i);
        let id = d.request.id;
        if let (true, Op::Move(m)) = (give_up, &d.request.op) {
            self.targets.given_up.insert(d.group, (d.from, m.to));
        }
        self.targets.resumed.remove(&id);
        self.answer_move(ClientReply { id, result });
    }

    /// Proposes `change` to group `g` (led here), computed from its configuration of
    /// `version` and applied only to that one, unless a change proposed for a move of it is
    /// still waited for.
    pub(crate) fn step_change(&mut self, g: GroupId, version: u64, change: MemberChange) {
        let pending = self.step_pending(g);
        let Some(group) = self.groups.get_mut(&g).filter(|_| !pending) else {
            return;
        };
        let request = self.own.request(Op::MembershipAt { version, change });
        let wait = self.ticks + STEP_WAIT_ETS * self.election_timeout_ticks;
        self.moves.step.insert(g, (request.id, wait));
        group.submit(request);
    }

    /// Why the next step of a move of group `g` (configuration `c`) off `from` must not be
    /// made, ending the move, if it must not: the cluster removed the newcomer since the move
    /// was checked (its removal does not wait for a learner it never heard of; the learner
    /// left is dropped by `evacuate`), or another change came between the move's steps (a
    /// leader that started its own move from a view that lagged) and removing `from` now
    /// would leave the group short of its replicas.
    fn step_refusal(
        &self,
        c: &Configuration,
        g: GroupId,
        from: NodeId,
        change: &MemberChange,
    ) -> Option<String> {
        if let Some(id) = self.newcomer_gone(change) {
            return Some(format!(
                "member {id} is not a voter of the cluster any more"
            ));
        }
        self.leaves_short(c, change).then(|| {
            format!(
                "removing member {from} would leave group {} with {} voters: the group changed \
                 during the move (ask again)",
                group_name(g),
                c.voters().len().saturating_sub(1)
            )
        })
    }

    /// Whether `change` removes a voter of a group whose configuration `c` has no more voters
    /// than placed: no step of a move may leave a group short of its replicas.
    pub(crate) fn leaves_short(&self, c: &Configuration, change: &MemberChange) -> bool {
        // PLANTED BUG (`MoveRemovesBelowReplicas`): any removal goes.
        let replicas = self.base.partition_replicas;
        !self.base.bug(PlantedBug::MoveRemovesBelowReplicas)
            && matches!(change, MemberChange::Remove(v) if c.is_voter(*v) && c.voters().len() <= replicas)
    }

    /// The next change of a move this member makes itself (`evacuate`, `rebalance`): its
    /// point is the group whole without `from`, so once the group has its replicas among the
    /// cluster's voters without `from` — another move made up for it, say one a leader before
    /// drove — `from` is only removed (or the move is done), rather than `to` added to a group
    /// with its replicas already and left a voter too many.
    fn own_move_change(
        &self,
        c: &Configuration,
        from: NodeId,
        to: &Member,
    ) -> Option<MemberChange> {
        let change = move_change(c, from, to)?;
        if !matches!(change, MemberChange::Add(_)) {
            return change.into();
        }
        let cluster = self.cluster_configuration().map(|(_, k)| k);
        let others = (c.voters().into_iter())
            .filter(|v| *v != from && cluster.as_ref().is_none_or(|k| k.is_voter(*v)))
            .count();
        match others >= self.base.partition_replicas {
            true => c.contains(from).then_some(MemberChange::Remove(from)),
            false => Some(change),
        }
    }

    /// The member `change` adds or promotes, if it is not a voter of the cluster (as this
    /// member's first group has it).
    fn newcomer_gone(&self, change: &MemberChange) -> Option<NodeId> {
        let id = match change {
            MemberChange::Add(m) => m.id,
            MemberChange::Promote(id) => *id,
            _ => return None,
        };
        let (_, cluster) = self.cluster_configuration()?;
        (!cluster.is_voter(id)).then_some(id)
    }

    /// Whether a change proposed for a move of group `g` is still waited for.
    fn step_pending(&self, g: GroupId) -> bool {
        (self.moves.step.get(&g))
            .is_some_and(|(s, until)| self.own.is_pending(s) && self.ticks < *until)
    }

    /// Answers a move: the client's, or nobody for one this member made itself (`evacuate`).
    fn answer_move(&mut self, reply: ClientReply) {
        self.rebalance_answered(&reply);
        // An own move given up earlier (not pending any more) is nobody's either.
        if !self.own.answered(&reply.id) && !reply.id.is_engine_own() {
            self.refused.push(reply);
        }
    }

    /// Moves each placed group this member leads off a member the cluster removed (`member
    /// remove` on a placed cluster): to the cluster's voter hosting the fewest groups, as a
    /// move an operator would ask — a learner, promoted, the departed member removed — driven
    /// here like one. A group with a voter more than placed (a move cut short) just drops it.
    /// One such move per group at a time; an operator's move of the group goes first. A
    /// learner that no move driven here is for is dropped too, once the group has its replicas,
    /// and a voter that cannot vote is replaced ([`Self::replace_non_voting`]).
    pub(crate) fn evacuate(&mut self) {
        if !self.placed() {
            return;
        }
        let Some((first, cluster)) = self.cluster_configuration() else {
            return;
        };
        self.moves.cluster = Some((cluster.next_id, cluster.ids()));
        let led: Vec<(GroupId, Configuration, Vec<NodeId>)> = (self.data_groups())
            .filter(|(g, _)| *g != first && !self.moves.driving.iter().any(|d| d.group == *g))
            .map(|(g, e)| (g, e.status(), e.non_voting_voters()))
            .filter(|(_, st, _)| st.leader == Some(self.id))
            .map(|(g, st, nv)| (g, st.configuration, nv))
            .collect();
        let me_gone = self.departed(self.id, &cluster)
            && !self.base.bug(PlantedBug::DepartedLeaderKeepsGroups);
        if !me_gone {
            self.moves.handed_off.clear();
        }
        for (g, c, non_voting) in led {
            // This member was removed and still leads the group: a voter the cluster keeps
            // is to lead and move it (the leader plan names one, `leaders.rs`, and the hand-off
            // is `balance_leaders`', paced as any). Its own records of the group's changes
            // would not reach the range directory — it is no member of the meta group any
            // more — so a newcomer it added would never learn that it joined, and the move
            // would stall (VR seed 143,119 of the rebalancing simulation). It hands the lead
            // over itself too, sooner than the plan's paced hand-offs retry. Only a group with
            // no such voter is moved from here.
            let kept = |v: &NodeId| *v != self.id && cluster.is_voter(*v);
            if me_gone && c.voters().iter().any(kept) {
                self.hand_off_departing(g, &c, &cluster, &non_voting);
                continue;
            }
            let Some(gone) = c.ids().into_iter().find(|m| self.departed(*m, &cluster)) else {
                // A learner left by a move cut short (its driver lost the lead, and the new
                // leader drives no move of it) once the group has its replicas: dropped.
                let placed = c.voters().len() >= self.base.partition_replicas;
                if let Some(l) = c.learners().first().filter(|_| placed) {
                    self.step_change(g, c.version, MemberChange::Remove(*l));
                } else {
                    self.replace_non_voting(g, &c, &non_voting, &cluster);
                }
                continue;
            };
            if c.is_learner(gone) {
                // A move to it cut short: nothing to replace, only to drop.
                self.step_change(g, c.version, MemberChange::Remove(gone));
                continue;
            }
            // A learner a move of this member's failed to bring in sync (down, or too slow):
            // dropped, so that the next move goes to another member rather than to it again.
            let shunned = |l: &NodeId| {
                self.shunned_target(*l) && !self.base.bug(PlantedBug::MoveRetriesFailedTarget)
            };
            let learner = c.learners().into_iter().find(shunned);
            if let Some(l) = learner.filter(|_| self.unshunned_outside(&c, &cluster).is_some()) {
                self.step_change(g, c.version, MemberChange::Remove(l));
                continue;
            }
            let Some(to) = self.evacuation_target(&c, &cluster) else {
                continue;
            };
            self.start_own_move(g, gone, to);
        }
    }

    /// Hands the lead of group `g` (configuration `c`), which this member leads though the
    /// cluster removed it, to a voter the cluster keeps: the leader plan's (which counts no
    /// removed member), else the one hosting the fewest groups that can vote — at once, and
    /// again [`HAND_OFF_EVERY_ETS`] election timeouts later while it still leads (the plan's own
    /// hand-offs pause far longer after one fails). Not more often: a hand-off under way holds
    /// the group's proposals, and asking again restarts it.
    fn hand_off_departing(
        &mut self,
        g: GroupId,
        c: &Configuration,
        cluster: &Configuration,
        non_voting: &[NodeId],
    ) {
        let now = self.ticks;
        let every = HAND_OFF_EVERY_ETS * self.election_timeout_ticks;
        if (self.moves.handed_off.get(&g)).is_some_and(|t| now < t + every) {
            return;
        }
        let me = self.id;
        let can = |v: &NodeId| *v != me && cluster.is_voter(*v) && !non_voting.contains(v);
        let planned = Some(self.preferred(g)).filter(|p| c.is_voter(*p) && can(p));
        let load = self.groups_hosted();
        let to = planned.or_else(|| {
            (c.voters().into_iter())
                .filter(can)
                .min_by_key(|v| (load.get(v).copied().unwrap_or(0), *v))
        });
        if let (Some(to), Some(group)) = (to, self.groups.get_mut(&g)) {
            let _ = group.transfer_leadership(Some(to));
            self.moves.handed_off.insert(g, now);
        }
    }

    /// Moves group `g` (configuration `c`, led here, no learner) off a voter that lost its
    /// storage after the configuration began (`Engine::non_voting_voters`): it votes in
    /// nothing there, so the group is a failure closer to a stall until it has a voter that
    /// does — the member outside it that hosts the fewest groups. A group with a voter more
    /// than placed (that move, or another, cut short after its promotion) only drops it. The
    /// member moved off drops its replica; one moved to it again later joins as any newcomer,
    /// and votes.
    fn replace_non_voting(
        &mut self,
        g: GroupId,
        c: &Configuration,
        non_voting: &[NodeId],
        cluster: &Configuration,
    ) {
        let me = self.id;
        let Some(&off) = (non_voting.iter()).find(|v| **v != me && c.is_voter(**v)) else {
            return;
        };
        if !c.learners().is_empty() || self.base.bug(PlantedBug::NonVotingVoterKept) {
            return;
        }
        let replicas = self.base.partition_replicas;
        match c.voters().len() {
            n if n > replicas => self.step_change(g, c.version, MemberChange::Remove(off)),
            n if n == replicas => {
                if let Some(to) = self.least_loaded_outside(c, cluster) {
                    self.start_own_move(g, off, to);
                }
            }
            _ => {}
        }
    }

    /// The cluster's voter outside configuration `c` that hosts the fewest groups (the lowest
    /// id among equals), as this member knows where groups live — passing over a target a
    /// move of this member's failed to reach lately, unless every one did.
    fn least_loaded_outside(&self, c: &Configuration, cluster: &Configuration) -> Option<NodeId> {
        self.least_outside(c, cluster, true)
            .or_else(|| self.least_outside(c, cluster, false))
    }

    /// [`Self::least_loaded_outside`] among the members no move of this member's failed to
    /// reach lately only (none: every one did).
    fn unshunned_outside(&self, c: &Configuration, cluster: &Configuration) -> Option<NodeId> {
        self.least_outside(c, cluster, true)
    }

    fn least_outside(
        &self,
        c: &Configuration,
        cluster: &Configuration,
        shun: bool,
    ) -> Option<NodeId> {
        let load = self.groups_hosted();
        (cluster.voters().into_iter())
            .filter(|v| !c.contains(*v))
            .filter(|v| !shun || !self.shunned_target(*v))
            .min_by_key(|v| (load.get(v).copied().unwrap_or(0), *v))
    }

    /// Where a group whose configuration is `c` goes off a departed member: one of its own
    /// voters the cluster keeps when it has enough of them (the departed one is then only
    /// removed), else a learner of it the cluster has as a voter, else the cluster's voter
    /// outside it that hosts the fewest groups (the lowest id among equals), as this member
    /// knows where groups live.
    fn evacuation_target(&self, c: &Configuration, cluster: &Configuration) -> Option<NodeId> {
        let kept: Vec<NodeId> = (c.voters().into_iter())
            .filter(|v| cluster.is_voter(*v))
            .collect();
        if kept.len() >= self.base.partition_replicas {
            return kept.first().copied();
        }
        // A newcomer a move cut short left as a learner (a leader change mid-move): it goes on.
        let learner = c.learners().into_iter().find(|l| cluster.is_voter(*l));
        if learner.is_some() {
            return learner;
        }
        self.least_loaded_outside(c, cluster)
    }

    /// Drops the replicas of groups this member left, and those started on a message that got
    /// no state in time.
    pub(crate) fn leave_groups(&mut self) {
        if !self.placed() {
            return;
        }
        let first = self.layout.ids().next();
        let (mut leaving, mut arrived) = (Vec::new(), Vec::new());
        let configurations: Vec<(GroupId, Configuration)> = (self.data_groups())
            .filter(|(g, _)| Some(*g) != first)
            .map(|(g, e)| (g, e.status().configuration))
            .collect();
        for (g, c) in configurations {
            let stale = c.members.is_empty()
                && self.moves.joining.get(&g).is_some_and(|(t, _)| {
                    self.ticks.saturating_sub(*t) > JOIN_GIVE_UP_ETS * self.election_timeout_ticks
                });
            let not_back = c.members.is_empty() && self.not_back(g);
            let removed = !c.members.is_empty() && !c.contains(self.id);
            let recorded_without = self.directory_without_me(g, &c);
            let removed = removed && self.may_leave(g, &c);
            if stale || not_back || removed || recorded_without {
                leaving.push(g);
            } else if c.contains(self.id) {
                arrived.push(g);
            }
        }
        for g in arrived {
            // Added again while it lingered: it serves again.
            self.moves.lingering.remove(&g);
            self.moves.stop_joining(g);
            if self.moves.left_at.remove(&g).is_some() {
                self.moves.left_at_changed = true;
            }
        }
        for g in leaving {
            self.depart(g);
        }
    }

    /// Whether the replica of group `g` here, which applied its own removal (configuration
    /// `c`), may go: once this member's directory records that configuration or a later one
    /// (the group's leader in it recorded it: the group went on without this member), or
    /// after [`LINGER_ETS`] election timeouts. Until then it serves nothing and answers the
    /// old configuration's messages with its state. A member that applied its removal first
    /// (the leader that decided it) and left at once could leave the old configuration's other
    /// members without a quorum to learn the decision from — with one of them unable to vote
    /// (it lost its storage) the simulator found groups stalled for good (VR seed 151,075 of
    /// moves under storage faults).
    fn may_leave(&mut self, g: GroupId, c: &Configuration) -> bool {
        // A newcomer sent a state from before its addition was never a member here: nothing
        // to linger for (and leaving notes the version, so that such states are refused).
        let never_member = self.moves.joining.contains_key(&g);
        if never_member
            || self.recorded_without_me(g, c.version)
            || self.base.bug(PlantedBug::RemovedReplicaLeavesAtOnce)
        {
            return true;
        }
        let since = *self.moves.lingering.entry(g).or_insert(self.ticks);
        self.ticks.saturating_sub(since) > LINGER_ETS * self.election_timeout_ticks
    }

    /// Whether a replica of `g` started here on a message, without state, is for a group this
    /// member left and has not been added to again: the range directory records the
    /// configuration it left at, or a newer one, without it as a voter or a learner. (Its stale
    /// state it refuses, `join_group`; this drops it before [`JOIN_GIVE_UP_ETS`], and keeps
    /// messages from starting another, [`Self::may_join`]. A directory that lags behind its
    /// addition as a learner delays it at worst: the group's first message after the directory
    /// caught up starts it.)
    fn not_back(&self, g: GroupId) -> bool {
        let Some(&floor) = self.moves.left_at.get(&g) else {
            return false;
        };
        self.recorded_without_me(g, floor)
    }

    /// Whether this member's copy of the range directory records a newer configuration of `g`
    /// than its replica's `c`, without this member, while the replica counts it a member (a
    /// voter, or a learner a move cut short left and the group dropped).
    fn directory_without_me(&self, g: GroupId, c: &Configuration) -> bool {
        c.contains(self.id) && self.recorded_without_me(g, c.version + 1)
    }

    /// This member left group `g`: its replica goes, its pending requests are answered, and
    /// the group is noted as moved away. A move of it driven here from this member is done.
    pub(crate) fn depart(&mut self, g: GroupId) {
        self.moves.lingering.remove(&g);
        let Some(mut engine) = self.groups.remove(&g) else {
            return;
        };
        let after = engine.status();
        // The newest configuration of it without this member that it knows: one from after its
        // removal, so a state of that version or older is from before it is back (its return
        // is a later change), and a newer one lists it only if it is back.
        let me = self.id;
        let without =
            |members: &Configuration| !members.members.is_empty() && !members.contains(me);
        let applied = Some(&after.configuration).filter(|c| without(c));
        let recorded = self.recorded_version_without_me(g);
        let left = applied.map_or(0, |c| c.version).max(recorded.unwrap_or(0));
        let floor = self.moves.left_at.entry(g).or_default();
        if left > *floor {
            *floor = left;
            self.moves.left_at_changed = true;
        }
        if self.watch.on {
            // What it still has to publish, and its keys leaving this member's stream.
            self.watch.depart(g, &mut engine);
        }
        // Through the same door as the group's other answers: this engine's own requests'
        // are swallowed, parts of reads and fans collected.
        for reply in engine.retire() {
            let answer = self.gather(g, reply);
            self.refused.extend(answer);
        }
        if self.moves.away.insert(g) {
            self.moves.away_changed = true;
        }
        self.moves.stop_joining(g);
        self.moves.step.remove(&g);
        self.balance.remove(&g);
        self.inputs.remove(&g);
        self.following.remove(&g);
        self.directory.forget(g);
        let (done, rest): (Vec<Moving>, Vec<Moving>) = std::mem::take(&mut self.moves.driving)
            .into_iter()
            .partition(|d| d.group == g);
        self.moves.driving = rest;
        for d in done {
            self.targets.resumed.remove(&d.request.id);
            let finished = !after.configuration.contains(me)
                && d.to
                    .as_ref()
                    .is_some_and(|t| after.configuration.is_voter(t.id))
                && d.from == me;
            self.answer_move(ClientReply {
                id: d.request.id,
                result: match finished {
                    true => Ok(Response {
                        revision: after.revision,
                        body: ResponseBody::Membership(after.configuration.clone()),
                    }),
                    false => Err(EngineError::Timeout),
                },
            });
        }
    }

    /// Whether a message of group `g`, not started here, should start a replica of it: this
    /// member may just have been added to it (placement) — unless its directory records that
    /// it left the group and has not been added since ([`Self::not_back`]): a late message of
    /// a group it left (a snapshot its earlier replica asked for, resent until the sender
    /// gives up: a state a returning member refuses is not acknowledged) would start one
    /// again and again, each asking for state again. Its addition reaches the directory too.
    pub(crate) fn may_join(&self, g: GroupId) -> bool {
        self.placed()
            && !self.retired.contains(&g)
            && self.layout.position(g).is_some_and(|p| p > 0)
            && !self.not_back(g)
            && !self.splits_here(g)
    }

    /// Whether group `g` is one a replica here will start by applying its split: one of this
    /// member's groups still owns the key `g` begins at (the split is ahead in its log). Such a
    /// member learned of `g` before it applied the split (`learned.rs`); joining as a
    /// newcomer, it would take `g`'s first state as a forgotten stay and vote in nothing there
    /// (simulator seed 840 of `--faults all,reconfig --replicas 3 --splits`).
    fn splits_here(&self, g: GroupId) -> bool {
        let Some(pos) = self.layout.position(g) else {
            return false;
        };
        let at = self.layout.bounds_at(pos).0;
        // Or one applied the split (a snapshot brought it) and the replica is not started
        // yet: that happens after the batch, and a message of the new group in the same
        // batch would come first (VR seed 3,382 of `all,storage --replicas 3 --splits`).
        let split_off_here = |h: GroupId, r: &synod_core::kv::RangeState| {
            let adopted = self.known_splits.get(&h).copied().unwrap_or(0);
            r.range.contains(&at) || (r.splits.iter().skip(adopted)).any(|m| child_id(h, m) == g)
        };
        (self.data_groups())
            .any(|(h, e)| h != g && e.range_state().is_some_and(|r| split_off_here(h, r)))
    }

    /// Makes `config` (group `g`'s) a move's newcomer's: no state, its first taken from a
    /// snapshot, and a first state that lists it as a voter is of a stay it forgot. The
    /// directory lists this member as a voter already: it joined before and forgot (a lost
    /// disk), so a state older than that record — one that lists it as a learner, or not at
    /// all, whose promotion it would then apply and vote afresh — is refused, and the first it
    /// takes lists it as a voter, so it votes in nothing there (replica layer,
    /// `forget_a_stay_as_voter`). A directory that lags behind the promotion cannot tell.
    pub(crate) fn as_newcomer(&self, g: GroupId, config: &mut synod_core::EngineConfig) {
        config.join = true;
        config.move_newcomer = true;
        config.first_boot = false;
        if let Some((version, voters)) = self.recorded_hosts(g)
            && voters.contains(&self.id)
        {
            config.rejoin_floor = config.rejoin_floor.max(version.saturating_sub(1));
        }
        // Whom to ask: where the group lives as far as this member knows.
        config.members = self.hosts(g);
    }

    /// Starts a replica of group `g` without state, to be sent the group's state by the member
    /// feeding it (see the module doc).
    pub(crate) fn join_group(&mut self, g: GroupId) {
        let Some(pos) = self.layout.position(g) else {
            return;
        };
        let mut config = self.group_config(g);
        self.as_newcomer(g, &mut config);
        // Until its state arrives it owns no key: it must not answer a read from its empty
        // store.
        config.key_range = KeyRange::none_at(&self.layout.bounds_at(pos).0);
        let floor = config.rejoin_floor;
        match E::recover(config, Vec::new()) {
            Ok(mut engine) => {
                if self.watch.on {
                    let _ = engine.take_group_watch_events();
                }
                self.groups.insert(g, engine);
                self.moves.start_joining(g, self.ticks, floor);
                if self.moves.away.remove(&g) {
                    self.moves.away_changed = true;
                }
            }
            Err(e) => {
                self.failed.insert(g, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId) -> Member {
        Member::example(id, false)
    }

    fn config(voters: &[NodeId], learners: &[NodeId]) -> Configuration {
        let mut members: Vec<Member> = voters.iter().map(|&v| member(v)).collect();
        members.extend(learners.iter().map(|&l| Member::example(l, true)));
        let mut c = Configuration::bootstrap(members.clone());
        c.members = members;
        c.members.sort_by_key(|m| m.id);
        c
    }

    #[test]
    fn a_move_adds_a_learner_promotes_it_then_removes_the_old_member() {
        let to = member(5);
        let mut c = config(&[2, 3, 4], &[]);
        let mut made = Vec::new();
        while let Some(change) = move_change(&c, 2, &to) {
            c = c.apply(&change).expect("applies");
            made.push(change);
            assert!(c.voters().len() >= 3, "the quorum never shrinks: {c:?}");
            assert!(made.len() < 5);
        }
        assert_eq!(
            made,
            vec![
                MemberChange::Add(Member::example(5, true)),
                MemberChange::Promote(5),
                MemberChange::Remove(2),
            ]
        );
        assert_eq!(c.voters(), [3, 4, 5]);
        assert_eq!(move_change(&c, 2, &to), None, "a retry of a finished move");
    }

    #[test]
    fn a_move_interrupted_part_way_goes_on_from_the_group_configuration() {
        let to = member(5);
        let learner = config(&[2, 3, 4], &[5]);
        assert_eq!(
            move_change(&learner, 2, &to),
            Some(MemberChange::Promote(5))
        );
        let four = config(&[2, 3, 4, 5], &[]);
        assert_eq!(move_change(&four, 2, &to), Some(MemberChange::Remove(2)));
    }
}
