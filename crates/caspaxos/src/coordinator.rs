//! Driving a membership change (CASPaxos §2.3) from the node where it was submitted, and every
//! node's side of it: adopting a configuration durably, acknowledging it, resyncing from peers,
//! and listing keys for the rescan. The steps and their quorums are in `reconf.rs`.
//!
//! **The coordinator** is the node an `Op::Membership` request was submitted to. It computes
//! the target with [`Configuration::apply`] (etcd's refusals), claims the change by installing
//! a `Reserved` step, and then, for each step in turn: adopts it locally (durable in the next
//! `Ready`, ahead of every message), sends `Install` to every member of the old and the new
//! configuration, and waits until every one of them except the node being removed answered
//! `InstallAck` with that version or a later one — re-sending every [`INSTALL_RETRY_TICKS`].
//! After the `Final` step it runs the rescan, then installs the stable target and answers the
//! client with it. It gives up with `Timeout` (outcome unknown) after `request_timeout_ticks`;
//! the cluster then stays at the step reached, no further: a later retry of the *same* change
//! at any node resumes from there, a different change is refused until then.
//!
//! **A change stalled on the node it adds.** A coordinator cannot finish an add before the new
//! node runs: every step waits for its acknowledgement. If the new node starts later than the
//! request timeout, nobody would retry the change, so it would block every other change. So a
//! joining node asks its peers for the configuration every [`JOIN_PULL_TICKS`] (`ConfigPull`;
//! whoever holds the change answers with it), and a node holding a change that adds it, which
//! has not moved for a request timeout while nobody here coordinates it, resumes it itself, as
//! a retry of the same change would — with no client to answer. Two coordinators of the same
//! change are safe: every step is a deterministic function of the one before
//! ([`CasConfig::next`]), so they install identical configurations, and the rescan's rounds are
//! ordinary CASPaxos rounds.
//!
//! **Races.** A node holding a change under way refuses to coordinate a different one
//! ([`ERR_CHANGE_IN_PROGRESS`]). Two nodes that claim different changes at the same version at
//! once both send `Reserved` steps; a node keeps the one from the lower coordinator id
//! ([`CasConfig::supersedes`]) and answers the other with it, so at most one coordinator
//! collects every acknowledgement; the other adopts the winner and refuses its client.
//!
//! **Version mismatches** (the choice, and why): an acceptor *refuses* a Prepare/Accept/Drop
//! carrying an older version and answers with its configuration (`NewerConfig`), which the
//! proposer adopts at once — refusing is what makes "every node acknowledged `v + 1`" imply "no
//! acceptor accepts anything sent under `v`", the premise of the quorum argument. A message with
//! a *newer* version makes the acceptor ask for it (`ConfigPull`); it answers the message only
//! if the version is the next one (which may be in use alongside its own), otherwise it missed a
//! step and stays silent until resynced. A node that is not a member of the configuration it
//! adopts (removed) stops proposing and accepting; a joining node holds no configuration,
//! answers nothing but configuration messages, and refuses clients with `Busy` until installed.
//!
//! **The rescan** (the paper's identity transition): the coordinator asks the prepare set of the
//! final step for their keys in pages of [`RESCAN_PAGE_KEYS_MAX`]; once a prepare quorum answered
//! for the same cursor, the keys up to the smallest page end are complete (every chosen value is
//! on an accept quorum that intersects that prepare quorum), and each is read through this
//! node's proposer — a read is a full round writing the value back unchanged — at most
//! [`RESCAN_ROUNDS_MAX`] at a time. Failed reads are retried; the cursor then moves on.

use crate::CasPaxos;
use crate::messages::{Message, Record};
use crate::proposer::Effects;
use crate::reconf::{CasConfig, Change, Step};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use synod_core::kv::{Key, Op, RangeRequest, Response, ResponseBody};
use synod_core::membership::{Configuration, MemberChange};
use synod_core::{
    ClientId, ClientReply, ClientRequest, EngineError, NodeId, PlantedBug, RequestId,
};

/// The session of the rescan's own reads (their replies never leave the engine). A client
/// using this id would have its replies swallowed; clients draw ids far from it.
pub const RESCAN_CLIENT: ClientId = ClientId(u64::MAX);
/// Ticks between re-sent Installs to members that have not acknowledged.
pub const INSTALL_RETRY_TICKS: u64 = 5;
/// Keys per rescan page.
pub const RESCAN_PAGE_KEYS_MAX: usize = 64;
/// Rescan reads in flight at once.
pub const RESCAN_ROUNDS_MAX: usize = 16;
/// Ticks between re-sent key queries.
pub const RESCAN_RETRY_TICKS: u64 = 10;
/// Ticks between a joining node's requests for the configuration (it holds none yet).
pub const JOIN_PULL_TICKS: u64 = 20;
/// Steps one input may advance a change by (a one-node cluster advances without waiting).
const DRIVE_PASSES_MAX: usize = 64;

pub const ERR_CHANGE_IN_PROGRESS: &str = "etcdserver: another membership change is in progress";
pub const ERR_NO_LEARNERS: &str = "caspaxos: CASPaxos has no learners; a member joins as an \
     acceptor directly (add it with learner = false)";
pub const ERR_NO_PROMOTE: &str =
    "caspaxos: CASPaxos has no learners to promote; members join as acceptors directly";
pub const ERR_MEMBER_REMOVED: &str =
    "etcdserver: the member has been permanently removed from the cluster";
pub const ERR_NOT_READY: &str =
    "caspaxos: this node cannot coordinate yet (joining, or repairing lost storage)";

/// Volatile progress of the change this node coordinates.
pub struct Coordination {
    /// The client's request; `None` for a change this node resumed by itself.
    request: Option<RequestId>,
    deadline_tick: u64,
    target: Configuration,
    /// Whose acknowledgement each step waits for: every member of the old and new
    /// configuration except this node and the one being removed.
    required: BTreeSet<NodeId>,
    /// Where Installs go: `required` and the removed node (told on a best-effort basis).
    notify: BTreeSet<NodeId>,
    /// Highest version each node acknowledged.
    acked: BTreeMap<NodeId, u64>,
    /// The version last sent in Installs, and when.
    sent_version: u64,
    last_sent_tick: u64,
    /// The reservation was acknowledged by all: from then on the change is finished by
    /// whoever retries it, so losing track of it is "outcome unknown", not "refused".
    reserved: bool,
    rescan: Option<Rescan>,
}

/// The rescan's cursor and the keys being rewritten.
struct Rescan {
    /// Keys up to here were rewritten (`None`: from the first).
    cursor: Option<Key>,
    /// Pages answered for the current cursor: acceptor → (keys, where its next page starts).
    pages: BTreeMap<NodeId, (Vec<Key>, Option<Key>)>,
    /// Where the merged batch being rewritten ends (`None`: at the end of every key).
    batch_end: Option<Option<Key>>,
    todo: VecDeque<Key>,
    in_flight: BTreeMap<RequestId, Key>,
    next_seq: u64,
    last_query_tick: Option<u64>,
    done: bool,
}

impl CasPaxos {
    /// An `Op::Membership` request submitted here.
    pub(crate) fn submit_membership(&mut self, id: RequestId, change: MemberChange) {
        match self.start_change(&change) {
            Ok(co) => self.coordination = Some(co.with(Some(id), self.deadline())),
            Err(e) => self.out.replies.push(ClientReply { id, result: Err(e) }),
        }
    }

    fn deadline(&self) -> u64 {
        self.now_tick
            .saturating_add(self.config.request_timeout_ticks.max(1))
    }

    /// Validates the change and claims it (or resumes it, if it is the change under way).
    fn start_change(&mut self, change: &MemberChange) -> Result<Coordination, EngineError> {
        let refuse = |m: &str| Err(EngineError::Membership(m.to_string()));
        match change {
            MemberChange::Add(m) if m.learner => return refuse(ERR_NO_LEARNERS),
            MemberChange::Promote(_) => return refuse(ERR_NO_PROMOTE),
            _ => {}
        }
        if self.is_removed() {
            return refuse(ERR_MEMBER_REMOVED);
        }
        let Some(held) = self.cas_config.clone().filter(|_| self.repair.is_none()) else {
            return refuse(ERR_NOT_READY);
        };
        if self.coordination.is_some() {
            return refuse(ERR_CHANGE_IN_PROGRESS);
        }
        let target = held.stable.apply(change).map_err(EngineError::Membership)?;
        match &held.change {
            // A retry of the change under way: resume it from the step it reached.
            Some(c) if c.target == target => {}
            Some(_) => return refuse(ERR_CHANGE_IN_PROGRESS),
            None => {
                let reserved = CasConfig {
                    version: held.version + 1,
                    stable: held.stable.clone(),
                    change: Some(Change {
                        target: target.clone(),
                        step: Step::Reserved,
                        coordinator: self.config.id,
                    }),
                };
                self.adopt(reserved);
            }
        }
        Ok(Coordination::new(self.config.id, &held, target))
    }

    /// Adopts `config` durably if it supersedes the one held; true if it did.
    pub(crate) fn adopt(&mut self, config: CasConfig) -> bool {
        match &self.cas_config {
            Some(own) if !config.supersedes(own) => return false,
            // A joining node takes only a configuration that includes it (one from before
            // its Add would make it look removed).
            None if !config.members().contains(&self.config.id) => return false,
            // A joining node offered a configuration past the step that adds it lost its
            // storage after joining: it may have promised and accepted as a voter, so it
            // repairs from its peers before its acceptor answers again (`repair.rs`).
            None if !is_fresh_join(&config, self.config.id) && self.repair.is_none() => {
                self.push_record(Record::Amnesic(true));
                self.repair = Some(crate::repair::RepairState::default());
            }
            _ => {}
        }
        self.push_record(Record::Config(config.clone()));
        self.adopted_tick = self.now_tick;
        let mut fx = Effects::default();
        self.proposer
            .reconfigure(config.quorums(), config.version, self.now_tick, &mut fx);
        let member = config.members().contains(&self.config.id);
        self.cas_config = Some(config);
        if !member {
            self.proposer.abandon_all(&mut fx);
        }
        self.route(fx);
        true
    }

    pub(crate) fn handle_membership(&mut self, from: NodeId, message: Message) {
        match message {
            Message::Install { config } => self.on_install(from, config),
            Message::InstallAck { version } => {
                if let Some(co) = self.coordination.as_mut() {
                    let v = co.acked.entry(from).or_default();
                    *v = (*v).max(version);
                }
            }
            Message::NewerConfig { config } => {
                self.adopt(config);
            }
            Message::ConfigPull { .. } => {
                if let Some(config) = self.cas_config.clone() {
                    self.send(from, Message::NewerConfig { config });
                }
            }
            Message::KeysQuery { version, after } => self.on_keys_query(from, version, after),
            Message::KeysPage {
                version,
                after,
                keys,
                next,
            } => self.on_keys_page(from, version, after, keys, next),
            _ => {}
        }
    }

    /// Adopts and acknowledges, or answers with the configuration that wins over it.
    fn on_install(&mut self, from: NodeId, config: CasConfig) {
        let version = config.version;
        self.adopt(config.clone());
        let Some(own) = &self.cas_config else { return };
        if own.version == version && *own == config {
            // The Config record is in this batch, ahead of the ack: persist-before-send.
            self.send(from, Message::InstallAck { version });
        } else {
            let config = own.clone();
            self.send(from, Message::NewerConfig { config });
        }
    }

    fn on_keys_query(&mut self, from: NodeId, version: u64, after: Option<Key>) {
        if self.repair.is_some() || self.cas_config.is_none() {
            return;
        }
        let (keys, next) = self.acceptor.key_page(after.as_ref(), RESCAN_PAGE_KEYS_MAX);
        let page = Message::KeysPage {
            version,
            after,
            keys,
            next,
        };
        self.send(from, page);
    }

    fn on_keys_page(
        &mut self,
        from: NodeId,
        version: u64,
        after: Option<Key>,
        keys: Vec<Key>,
        next: Option<Key>,
    ) {
        let Some(co) = self.coordination.as_mut() else {
            return;
        };
        let Some(rescan) = co.rescan.as_mut() else {
            return;
        };
        let current = self.cas_config.as_ref().map(|c| c.version);
        let asked = self.proposer.quorums().prepare.contains(&from);
        if current != Some(version) || !asked || rescan.cursor != after {
            return; // stale or not from the prepare set
        }
        if rescan.batch_end.is_none() {
            rescan.pages.insert(from, (keys, next));
        }
    }

    /// A joining node's side of a stalled add (module doc): ask for the configuration while
    /// holding none; resume the change that adds this node once it has not moved for a request
    /// timeout and nobody here coordinates it.
    pub(crate) fn join_tick(&mut self) {
        if self.repair.is_some() || self.coordination.is_some() {
            return;
        }
        let me = self.config.id;
        let Some(held) = self.cas_config.clone() else {
            if self.now_tick.is_multiple_of(JOIN_PULL_TICKS) {
                let peers: Vec<NodeId> = self.config.members.clone();
                for p in peers.into_iter().filter(|&p| p != me) {
                    self.send(p, Message::ConfigPull { version: 0 });
                }
            }
            return;
        };
        let Some(change) = &held.change else { return };
        let adds_me = change.target.contains(me) && !held.stable.contains(me);
        let stalled = self.now_tick.saturating_sub(self.adopted_tick)
            >= self.config.request_timeout_ticks.max(1);
        if adds_me && stalled && !self.config.bug(PlantedBug::CasJoinerNeverResumes) {
            let target = change.target.clone();
            let co = Coordination::new(me, &held, target).with(None, self.deadline());
            self.coordination = Some(co);
            // Counts as movement: the next resumption waits for this one to time out first.
            self.adopted_tick = self.now_tick;
        }
    }

    /// Expiry and retries of the coordination.
    pub(crate) fn coordination_tick(&mut self) {
        let expired = self
            .coordination
            .as_ref()
            .is_some_and(|co| co.deadline_tick <= self.now_tick);
        if expired {
            // The cluster stays at the step reached; a retry of the same change resumes it.
            self.finish_coordination(Err(EngineError::Timeout));
        }
    }

    /// After every input: drain the loopback and advance the change as far as it can go.
    pub(crate) fn after_input(&mut self) {
        for _ in 0..DRIVE_PASSES_MAX {
            self.drain_loopback();
            if !self.drive_change() {
                break;
            }
        }
        self.drain_loopback();
    }

    /// One step of the coordination; true if it moved (so another pass may move again).
    fn drive_change(&mut self) -> bool {
        let Some(mut co) = self.coordination.take() else {
            self.rescan_replies.clear();
            return false;
        };
        let held = self.cas_config.clone();
        let Some(held) = held.filter(|h| co.concerns(h)) else {
            // Another change won the reservation, or ours was finished and superseded.
            let e = if co.reserved {
                EngineError::Timeout
            } else {
                EngineError::Membership(ERR_CHANGE_IN_PROGRESS.into())
            };
            self.coordination = Some(co);
            self.finish_coordination(Err(e));
            return false;
        };
        if !co.all_acked(held.version) {
            self.send_installs(&mut co, &held);
            self.coordination = Some(co);
            return false;
        }
        let step = held.change.as_ref().map(|c| c.step);
        if step == Some(Step::Reserved) {
            co.reserved = true;
        }
        if step == Some(Step::Final) && !self.skips_rescan(&held) && !self.rescan(&mut co) {
            self.coordination = Some(co);
            return false;
        }
        let target = co.target.clone();
        self.coordination = Some(co);
        match held.next() {
            Some(next) => {
                self.adopt(next);
                true
            }
            None => {
                let body = ResponseBody::Membership(target);
                self.finish_coordination(Ok(Response { revision: 0, body }));
                false
            }
        }
    }

    /// Planted bug `CasSkipRescanOnGrow`: growing to an even number of voters skips step 4.
    fn skips_rescan(&self, held: &CasConfig) -> bool {
        let Some(c) = &held.change else { return false };
        let n = c.target.voters().len();
        self.config.bug(PlantedBug::CasSkipRescanOnGrow)
            && n > held.stable.voters().len()
            && n.is_multiple_of(2)
    }

    fn send_installs(&mut self, co: &mut Coordination, held: &CasConfig) {
        // A new step goes out at once; an unacknowledged one again every retry interval.
        let fresh = co.sent_version < held.version;
        let due = co.last_sent_tick + INSTALL_RETRY_TICKS <= self.now_tick;
        if !(fresh || due) {
            return;
        }
        co.last_sent_tick = self.now_tick;
        co.sent_version = held.version;
        let unacked: Vec<NodeId> = co
            .notify
            .iter()
            .copied()
            .filter(|n| co.acked.get(n).is_none_or(|v| *v < held.version))
            .collect();
        for to in unacked {
            let config = held.clone();
            self.send(to, Message::Install { config });
        }
    }

    /// Advances the rescan; true once every key was rewritten.
    fn rescan(&mut self, co: &mut Coordination) -> bool {
        let rescan = co.rescan.get_or_insert_with(Rescan::new);
        for reply in std::mem::take(&mut self.rescan_replies) {
            if let Some(key) = rescan.in_flight.remove(&reply.id)
                && reply.result.is_err()
            {
                rescan.todo.push_back(key); // retried: the key must be rewritten
            }
        }
        if rescan.done {
            return true;
        }
        if rescan.batch_end.is_none() {
            let q = self.proposer.quorums().clone();
            rescan.merge_if_quorum(q.prepare_quorum);
            if rescan.batch_end.is_none() {
                let due = rescan
                    .last_query_tick
                    .is_none_or(|t| t + RESCAN_RETRY_TICKS <= self.now_tick);
                if due {
                    rescan.last_query_tick = Some(self.now_tick);
                    let version = self.version();
                    for to in q.prepare {
                        if !rescan.pages.contains_key(&to) {
                            let after = rescan.cursor.clone();
                            self.send(to, Message::KeysQuery { version, after });
                        }
                    }
                }
                return false;
            }
        }
        let mut reads = Vec::new();
        while rescan.in_flight.len() < RESCAN_ROUNDS_MAX
            && let Some(key) = rescan.todo.pop_front()
        {
            rescan.next_seq += 1;
            let id = RequestId {
                client: RESCAN_CLIENT,
                seq: rescan.next_seq,
            };
            rescan.in_flight.insert(id, key.clone());
            reads.push((id, key));
        }
        rescan.advance_if_batch_done();
        let done = rescan.done;
        for (id, key) in reads {
            self.rescan_read(id, key);
        }
        done
    }

    /// The identity round on `key`: a read, which writes the value back at a new ballot.
    fn rescan_read(&mut self, id: RequestId, key: Key) {
        let request = ClientRequest {
            id,
            first_unacked: 0,
            op: Op::Range(RangeRequest::key(key)),
            consistency: Default::default(),
        };
        let mut fx = Effects::default();
        self.proposer.submit(request, self.now_tick, &mut fx);
        self.route(fx);
    }

    fn finish_coordination(&mut self, result: Result<Response, EngineError>) {
        if let Some(co) = self.coordination.take()
            && let Some(id) = co.request
        {
            self.out.replies.push(ClientReply { id, result });
        }
        self.rescan_replies.clear();
    }
}

/// `config` is the reservation of the change that adds `me`: the first configuration a new
/// member ever holds (the coordinator waits for its acknowledgement before the next step, and
/// until then the new member is in no quorum).
fn is_fresh_join(config: &CasConfig, me: NodeId) -> bool {
    config.change.as_ref().is_some_and(|c| {
        c.step == Step::Reserved && c.target.contains(me) && !config.stable.contains(me)
    })
}

impl Coordination {
    fn new(me: NodeId, held: &CasConfig, target: Configuration) -> Self {
        let removed: BTreeSet<NodeId> = held
            .stable
            .ids()
            .into_iter()
            .filter(|id| !target.contains(*id))
            .collect();
        let mut notify: BTreeSet<NodeId> = held.stable.ids().into_iter().collect();
        notify.extend(target.ids());
        notify.remove(&me);
        let required = notify.difference(&removed).copied().collect();
        Coordination {
            request: None,
            deadline_tick: 0,
            target,
            required,
            notify,
            acked: BTreeMap::new(),
            sent_version: 0,
            last_sent_tick: 0,
            reserved: false,
            rescan: None,
        }
    }

    fn with(mut self, request: Option<RequestId>, deadline_tick: u64) -> Self {
        self.request = request;
        self.deadline_tick = deadline_tick;
        self
    }

    /// The configuration held is (a step of) this coordination's change.
    fn concerns(&self, held: &CasConfig) -> bool {
        match &held.change {
            Some(c) => c.target == self.target,
            None => held.stable == self.target,
        }
    }

    fn all_acked(&self, version: u64) -> bool {
        self.required
            .iter()
            .all(|n| self.acked.get(n).is_some_and(|v| *v >= version))
    }
}

impl Rescan {
    fn new() -> Self {
        Rescan {
            cursor: None,
            pages: BTreeMap::new(),
            batch_end: None,
            todo: VecDeque::new(),
            in_flight: BTreeMap::new(),
            next_seq: 0,
            last_query_tick: None,
            done: false,
        }
    }

    /// Once a prepare quorum answered for the cursor: the keys up to the smallest page end
    /// (every chosen value of them is on one of these acceptors) become the next batch.
    fn merge_if_quorum(&mut self, quorum: usize) {
        if self.pages.len() < quorum {
            return;
        }
        let end: Option<Key> = self
            .pages
            .values()
            .filter_map(|(_, next)| next.clone())
            .min();
        let mut keys: Vec<Key> = self
            .pages
            .values()
            .flat_map(|(keys, _)| keys.iter())
            .filter(|k| end.as_ref().is_none_or(|e| *k <= e))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        self.todo.extend(keys);
        self.pages.clear();
        self.batch_end = Some(end);
    }

    /// When the batch is rewritten: move the cursor past it, or finish after the last one.
    fn advance_if_batch_done(&mut self) {
        if !self.todo.is_empty() || !self.in_flight.is_empty() {
            return;
        }
        match self.batch_end.take() {
            Some(None) => self.done = true,
            Some(Some(end)) => {
                self.cursor = Some(end);
                self.last_query_tick = None;
            }
            None => {}
        }
    }
}
