//! Placement: groups on some of the members (`[partition] replicas = R`), and relaying a
//! request to a member that hosts its group.
//!
//! Step 2 of decision 0005 (docs/decisions/0005-placement-and-range-directory.md), for a
//! static layout. With `R` below the number of members, configured group `p ≥ 1` lives on
//! `R` members — the sorted members from `p mod n` on, so groups spread evenly — and its
//! engine's configuration names those alone. The first group (the cluster's configuration,
//! auth state and leader, as etcd's API reports them) and the meta group stay on every
//! member, so every member answers for the cluster as before.
//!
//! **Relaying.** A request for a key whose group is not here goes to one of its hosts in the
//! next batch's frame ([`Relayed::Request`]): the group's leader as the host last answered, else
//! its preferred leader. The host submits it to its replica of the group and sends the
//! answer back once its batch is durable ([`Relayed::Answer`]). A request without a session
//! travels under a session of the relaying member (new every boot), so however often it
//! reaches a group — a duplicated frame, or a retry at the group's next host after
//! [`RELAY_RETRY_TICKS`] without an answer — it is applied once (the group's client table).
//! A relay with no answer by its deadline is answered `Timeout`: outcome unknown, as any
//! write whose answer was lost. A relayed read is linearizable, whatever it asked for: a
//! sequential read must never go back in time at one member, and the next relay may reach a
//! host further behind (planted bug `partition-relay-drops-consistency`: relayed reads are
//! sequential, served from whatever the host's replica applied).
//!
//! **Leases and compaction** are fanned out to every group as unplaced (`leases.rs`); a part
//! for a group hosted elsewhere is relayed like any request, and its answer (or its relay's
//! `Timeout`) goes to the fan.
//!
//! **Reads and deletes over several groups** split as unplaced; a part for a group hosted
//! elsewhere is relayed under its own id (the parts share the client's), and `gather.rs`
//! aligns a read's parts, `deletes.rs` adds a delete's up.
//! Watches of groups hosted elsewhere are the node's (`synod_node::watch::remote`).
//!
//! **A quarantined host** (its CORRUPT alarm raised, `Engine::quarantine`) answers relays with
//! [`Relayed::Elsewhere`]: the relaying member sends the request to the group's next host and
//! passes the quarantined one over for [`SHUN_TICKS`].
//!
//! **Where a group lives** changes with moves (`moves.rs`): [`Partitioned::hosts`] reads the
//! group's own configuration, else this member's copy of the range directory. A member asked
//! for a group it does not host (any more, or not with its state yet) answers
//! [`Relayed::NotHere`], and the relaying member asks the next host.
//!
//! **Membership changes** are decided in the first group and followed by the groups on every
//! member (the meta group); placed groups keep their hosts, except that their leaders move
//! them off a member the cluster removed (`moves.rs`). A removal that would leave fewer voters
//! than `R` is refused.
//!
//! **Splits** of placed groups are served (`learned.rs`: members hosting neither half learn
//! them from relays' answers and the directory), except of the first range, which stays whole.
//!
//! **What placement does not do yet** (refused by name, never answered wrong): merges, and
//! etcd's whole-member Hash (backups and HashKV are gathered by
//! the node, `synod_node::backup`). Each is a step of decision 0005.

use crate::layout::GroupId;
use crate::learned::SplitNotice;
use crate::{GroupMessage, Partitioned};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use synod_core::kv::Op;
use synod_core::membership::{Configuration, MemberChange};
use synod_core::{ClientId, ClientReply, ClientRequest, Consistency, Engine, EngineError};
use synod_core::{NodeId, RequestId};

/// A relay unanswered this long (ticks) is sent again, to the group's next host.
const RELAY_RETRY_TICKS: u64 = 50;
/// A relay answered "not here" is sent to the next host after this long (ticks).
const NOT_HERE_RETRY_TICKS: u64 = 5;
/// A host that sent a relay elsewhere (its CORRUPT alarm is raised) is not relayed to for this
/// long (ticks) unless no other host is left, and its word on who leads is not taken.
const SHUN_TICKS: u64 = 1_000;

/// What one member relays to another in a batch's frame.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Relayed {
    /// A request for group `.0`, to a member that hosts it.
    Request(GroupId, ClientRequest),
    /// Its answer, with the group's leader as the host knows it (where to relay next).
    Answer {
        reply: ClientReply,
        group: GroupId,
        leader: Option<NodeId>,
        /// The group's splits as the host applied them (`learned.rs`).
        splits: Vec<SplitNotice>,
    },
    /// The host will not serve relay `.0` of group `.1` (its CORRUPT alarm is raised: its state
    /// may differ from the other hosts'): ask another host.
    Elsewhere(RequestId, GroupId),
    /// The member asked does not host group `.1` (any more: a move took its replica
    /// elsewhere, `moves.rs`), or not yet with its state: ask the next host.
    NotHere(RequestId, GroupId),
}

/// A request this member relayed and waits for.
struct Sent {
    /// Its id as the node gave it (the answer goes back under it).
    id: RequestId,
    group: GroupId,
    request: ClientRequest,
    host: NodeId,
    /// When it is sent again, to the next host.
    retry: u64,
    /// When it is answered `Timeout` instead.
    until: u64,
}

/// The relaying state of one member.
#[derive(Default)]
pub(crate) struct Relay {
    /// Requests this member relayed, by the id they travel under.
    sent: BTreeMap<RequestId, Sent>,
    /// Requests relayed here and not answered yet: who sent them, and their group.
    pub(crate) taken: HashMap<RequestId, (NodeId, GroupId)>,
    /// This member's session for requests that came without one (changes every boot).
    client: ClientId,
    next_seq: u64,
    /// Per group: the host to relay to next.
    pub(crate) hint: BTreeMap<GroupId, NodeId>,
    /// Frames' relayed parts, per destination, sent with the next batch.
    pub(crate) outbox: Vec<(NodeId, Relayed)>,
    /// Hosts that sent relays elsewhere, until when they are passed over.
    pub(crate) shunned: BTreeMap<NodeId, u64>,
    /// This member's CORRUPT alarm is raised: relays here are sent elsewhere
    /// (`Engine::quarantine`).
    pub(crate) quarantined: bool,
    /// Hosts of groups split off groups hosted elsewhere, as learned with the split
    /// (`learned.rs`).
    pub(crate) learned: BTreeMap<GroupId, Vec<NodeId>>,
    pub(crate) bug_drop_consistency: bool,
    /// Planted bug `PlacedSplitNotLearned`: relay answers teach no split.
    pub(crate) bug_ignore_notices: bool,
}

impl Relay {
    /// `boot_nonce` differs on every boot of every member: so does the session. Node
    /// sessions are `id << 32 | …` with small ids: the top bit keeps the two apart.
    pub(crate) fn new(boot_nonce: u64) -> Self {
        Relay {
            client: ClientId((1 << 63) | (boot_nonce >> 1)),
            next_seq: 1,
            ..Relay::default()
        }
    }
}

/// The hosts of configured group at `position` (of the layout) among `members`: every member
/// for the first group or with `replicas` 0 or at least the members, else `replicas` of them
/// from `position mod n` on in sorted order.
pub fn hosts_at(members: &[NodeId], position: usize, replicas: usize) -> Vec<NodeId> {
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let n = sorted.len();
    if position == 0 || replicas == 0 || replicas >= n {
        return sorted;
    }
    let mut hosts: Vec<NodeId> = (0..replicas).map(|i| sorted[(position + i) % n]).collect();
    hosts.sort_unstable();
    hosts
}

impl<E: Engine> Partitioned<E> {
    /// Whether some groups live on some members only.
    pub(crate) fn placed(&self) -> bool {
        let r = self.base.partition_replicas;
        r > 0 && r < self.base.members.len()
    }

    /// The members group `g` was placed on at the cluster's start (every member for the meta
    /// group); for a group split off at run time, where it began (`learned.rs`).
    pub(crate) fn static_hosts(&self, g: GroupId) -> Vec<NodeId> {
        match self.configured.position(g) {
            Some(position) => hosts_at(&self.base.members, position, self.base.partition_replicas),
            None => self.split_hosts(g),
        }
    }

    /// The members group `g` lives on now: its voters as this member's replica has them, else
    /// as this member's copy of the range directory records them, else where it was placed
    /// (`moves.rs`: moves change them).
    pub(crate) fn hosts(&self, g: GroupId) -> Vec<NodeId> {
        if let Some(e) = self.groups.get(&g) {
            let c = e.status().configuration;
            if c.contains(self.id) {
                return c.voters();
            }
        }
        match self.recorded_hosts(g) {
            Some((_, members)) if !members.is_empty() => members,
            _ => self.static_hosts(g),
        }
    }

    /// How many placed groups (every group after the first) each member hosts, as this member
    /// knows where they live ([`Self::hosts`]).
    pub(crate) fn groups_hosted(&self) -> std::collections::BTreeMap<NodeId, usize> {
        let first = self.layout.ids().next();
        let mut load = std::collections::BTreeMap::new();
        for g in self.layout.ids().filter(|g| Some(*g) != first) {
            for h in self.hosts(g) {
                *load.entry(h).or_default() += 1;
            }
        }
        load
    }

    /// Why `request` cannot be served with groups placed, if it cannot.
    pub(crate) fn placement_refusal(&self, op: &Op) -> Option<EngineError> {
        if !self.placed() {
            return None;
        }
        let what = match op {
            // Splits are (`learned.rs`); a merge would join groups on different members.
            Op::Merge(_) => "merging ranges",
            Op::Split(s) if self.layout.position(self.layout.group_of(&s.at)) == Some(0) => {
                return Some(EngineError::InvalidRequest(format!(
                    "split at {}: the first range stays whole when groups live on some members \
                     only (its group holds the cluster's configuration and lives on every \
                     member; docs/partitioning.md, \"Placement\")",
                    String::from_utf8_lossy(&s.at)
                )));
            }
            Op::Membership(MemberChange::Remove(id)) => return self.removal_refusal(*id),
            // Range reads over several groups gather their parts through relays (`gather.rs`).
            _ => return None,
        };
        Some(EngineError::InvalidRequest(format!(
            "{what}: not served yet when groups live on some members only \
             (partition.replicas below the members; docs/partitioning.md, \"Placement\")"
        )))
    }

    /// Why removing member `id` is refused, if it is: the voters left must still be enough
    /// for every placed group's replicas (its groups move to them, `moves.rs`).
    fn removal_refusal(&self, id: NodeId) -> Option<EngineError> {
        let (_, cluster) = self.cluster_configuration()?;
        let left = cluster.voters().into_iter().filter(|v| *v != id).count();
        let replicas = self.base.partition_replicas;
        (cluster.is_voter(id) && left < replicas).then(|| {
            EngineError::InvalidRequest(format!(
                "removing member {id} would leave {left} voters for groups of {replicas} \
                 replicas (partition.replicas): add a member first"
            ))
        })
    }

    /// Whether member `id` was a member of the cluster and is no more: its id is below the
    /// next one the cluster gives and the cluster's configuration does not list it (ids never
    /// come back). A member this member's copy of the configuration does not know yet is not
    /// departed — it may have been added after.
    pub(crate) fn departed(&self, id: NodeId, cluster: &Configuration) -> bool {
        !cluster.members.is_empty() && id < cluster.next_id && !cluster.contains(id)
    }

    /// Refuses `what` (a backup, a hash) of a member that holds only some of the groups.
    pub(crate) fn not_placed(&self, what: &str) -> Result<(), EngineError> {
        match self.placed() {
            false => Ok(()),
            true => Err(EngineError::InvalidRequest(format!(
                "{what} of one member is not served yet when groups live on some members only \
                 (partition.replicas below the members): this member holds only its own groups"
            ))),
        }
    }

    /// Sends `request` for group `g` (not here) to one of its hosts.
    pub(crate) fn relay(&mut self, g: GroupId, mut request: ClientRequest) {
        let id = request.id;
        // A read's or a delete's parts over several groups share the client's id: each
        // travels under its own (a read is never deduplicated, so the client's session has
        // nothing to keep; a delete's part is applied once under this member's session, and
        // its answer goes back to the delete by the original id and the group).
        let delete_part =
            matches!(request.op, Op::DeleteRange(_)) && self.deletes.contains(&request.id);
        if request.id.client == ClientId::NONE || matches!(request.op, Op::Range(_)) || delete_part
        {
            // Under this member's session, so that a host applies it once however often it
            // arrives (a duplicated frame, a retry at the next host).
            let seq = self.relay.next_seq;
            // The oldest of this session's relays still unanswered: the map is in id order,
            // so it is the first from the session's seq 0 on (not a scan past the node's own).
            let session = self.relay.client;
            let floor = self
                .relay
                .sent
                .range(
                    RequestId {
                        client: session,
                        seq: 0,
                    }..,
                )
                .next()
                .filter(|(k, _)| k.client == session)
                .map_or(seq, |(k, _)| k.seq);
            if seq >= floor + self.base.kv.client_window_max as u64 {
                // A part of a delete over several groups fails that delete (which waits for
                // its other parts); anything else is answered.
                let busy = match delete_part {
                    true => self.deletes.fail(&id, g, EngineError::Busy),
                    false => Some(ClientReply {
                        id,
                        result: Err(EngineError::Busy),
                    }),
                };
                self.refused.extend(busy);
                return;
            }
            self.relay.next_seq += 1;
            request.id = RequestId {
                client: self.relay.client,
                seq,
            };
            request.first_unacked = floor;
        }
        // A sequential read never goes back in time at one member; relayed, it could, when
        // the next one goes to another host further behind. Linearizable cannot.
        request.consistency = match self.relay.bug_drop_consistency {
            false => Consistency::Linearizable,
            true => Consistency::Sequential,
        };
        let host = self.host_for(g);
        // A host answers `Timeout` after its own request timeout: this is a backstop for hosts
        // that crashed or frames lost, a little later. A move takes longer (its driver's own
        // bound), and is not sent again meanwhile: a second driver would be refused `Busy`.
        let timeout = match request.op {
            Op::Move(_) => crate::moves::MOVE_TIMEOUTS * self.base.request_timeout_ticks,
            _ => self.base.request_timeout_ticks,
        };
        let until = self.ticks + timeout + 2 * self.election_timeout_ticks;
        let retry = match request.op {
            Op::Move(_) => until,
            _ => self.ticks + RELAY_RETRY_TICKS,
        };
        let sent = Sent {
            id,
            group: g,
            request: request.clone(),
            host,
            retry,
            until,
        };
        self.relay.sent.insert(request.id, sent);
        self.relay.outbox.push((host, Relayed::Request(g, request)));
    }

    /// The members to relay a request for group `g` to: its hosts but this member (which may
    /// be one that has not its state yet, `moves.rs`), else where it was placed.
    fn relay_hosts(&self, g: GroupId) -> Vec<NodeId> {
        let me = self.id;
        let mut hosts = self.hosts(g);
        hosts.retain(|h| *h != me);
        // A member the cluster removed may still be listed while its groups move off it (as
        // the cluster's configuration was when its groups were last looked at, not read again
        // for every relay).
        let live: Vec<NodeId> = (hosts.iter().copied())
            .filter(|h| !self.moves.removed(*h))
            .collect();
        if !live.is_empty() {
            hosts = live;
        }
        if hosts.is_empty() {
            hosts = self.static_hosts(g);
            hosts.retain(|h| *h != me);
        }
        hosts
    }

    /// The host of group `g` to relay to: the hint (the leader as last answered), else the
    /// preferred leader, else — when that one is shunned — the first host that is not.
    fn host_for(&self, g: GroupId) -> NodeId {
        let hosts = self.relay_hosts(g);
        match self.relay.hint.get(&g) {
            Some(h) if hosts.contains(h) && !self.shunned(*h) => *h,
            _ => {
                let preferred = self.preferred_among(hosts.clone(), g);
                match self.shunned(preferred) {
                    false => preferred,
                    true => (hosts.into_iter())
                        .find(|h| !self.shunned(*h))
                        .unwrap_or(preferred),
                }
            }
        }
    }

    /// Whether host `h` sent a relay elsewhere lately (`Relayed::Elsewhere`).
    fn shunned(&self, h: NodeId) -> bool {
        self.relay.shunned.get(&h).is_some_and(|t| self.ticks < *t)
    }

    /// A relayed request or answer from member `from`.
    pub(crate) fn take_relayed(&mut self, from: NodeId, r: Relayed) {
        match r {
            Relayed::Request(g, request) => self.take_request(from, g, request),
            Relayed::Answer {
                mut reply,
                group,
                leader,
                splits,
            } => {
                // Before the answer counts: a fan completes only once every group split off
                // before its part was applied is in the layout (`learned.rs`).
                if !self.relay.bug_ignore_notices {
                    self.learn_splits(splits);
                }
                let Some(sent) = self.relay.sent.remove(&reply.id) else {
                    return; // answered already (a duplicate, or a retry's second answer)
                };
                let trusted = |l: &NodeId| self.hosts(group).contains(l) && !self.shunned(*l);
                if let Some(l) = leader.filter(trusted) {
                    self.relay.hint.insert(group, l);
                }
                reply.id = sent.id;
                // A part of a lease request or a compaction is the fan's to collect.
                let answer = self.gather(group, reply);
                self.refused.extend(answer);
            }
            Relayed::NotHere(id, group) => {
                if self.relay.hint.get(&group) == Some(&from) {
                    self.relay.hint.remove(&group);
                }
                // Sent again soon, to the next host (`expire_relayed`); not at once, so that a
                // stale list of hosts costs a few relays, not one every tick.
                if let Some(sent) = self.relay.sent.get_mut(&id).filter(|s| s.host == from) {
                    sent.retry = sent.retry.min(self.ticks + NOT_HERE_RETRY_TICKS);
                }
            }
            Relayed::Elsewhere(id, group) => {
                self.relay.shunned.insert(from, self.ticks + SHUN_TICKS);
                if self.relay.hint.get(&group) == Some(&from) {
                    self.relay.hint.remove(&group);
                }
                // Sent again at the next tick, to the next host (`expire_relayed`).
                if let Some(sent) = self.relay.sent.get_mut(&id).filter(|s| s.host == from) {
                    sent.retry = self.ticks;
                }
            }
        }
    }

    fn take_request(&mut self, from: NodeId, g: GroupId, request: ClientRequest) {
        if self.relay.taken.contains_key(&request.id) {
            return; // a duplicate of one in flight here: its answer goes back once
        }
        if self.relay.quarantined {
            self.relay
                .outbox
                .push((from, Relayed::Elsewhere(request.id, g)));
            return;
        }
        if !self.serves(g) {
            self.relay
                .outbox
                .push((from, Relayed::NotHere(request.id, g)));
            return;
        }
        if let Some(full) = self.groups_full(&request.op) {
            let reply = ClientReply {
                id: request.id,
                result: Err(full),
            };
            let answer = Relayed::Answer {
                reply,
                group: g,
                leader: None,
                splits: Vec::new(),
            };
            self.relay.outbox.push((from, answer));
            return;
        }
        // Sampled where the read is served, for where a read split cuts (`auto.rs`).
        if let Op::Range(r) = &request.op
            && self.base.auto_split_reads > 0
        {
            self.auto.note_read(g, &r.key);
        }
        self.relay.taken.insert(request.id, (from, g));
        if matches!(request.op, Op::Move(_)) {
            self.take_move(g, request);
            return;
        }
        if let Some(group) = self.groups.get_mut(&g) {
            group.submit(request);
            *self.inputs.entry(g).or_default() += 1;
        }
    }

    /// Takes the answers to relayed requests out of a batch's replies, to be sent back.
    pub(crate) fn answer_relayed(&mut self, replies: Vec<ClientReply>) -> Vec<ClientReply> {
        if self.relay.taken.is_empty() {
            return replies;
        }
        let mut mine = Vec::with_capacity(replies.len());
        // A group's status is built, not read: once per group per batch, not per answer.
        let mut leaders: BTreeMap<GroupId, Option<NodeId>> = BTreeMap::new();
        let mut splits: BTreeMap<GroupId, Vec<SplitNotice>> = BTreeMap::new();
        for reply in replies {
            match self.relay.taken.remove(&reply.id) {
                Some((to, group)) => {
                    let groups = &self.groups;
                    let leader = *leaders
                        .entry(group)
                        .or_insert_with(|| groups.get(&group).and_then(|e| e.status().leader));
                    let splits = (splits.entry(group))
                        .or_insert_with(|| self.split_notices(group))
                        .clone();
                    let answer = Relayed::Answer {
                        reply,
                        group,
                        leader,
                        splits,
                    };
                    self.relay.outbox.push((to, answer));
                }
                None => mine.push(reply),
            }
        }
        mine
    }

    /// Relays unanswered for a while go to the group's next host (the same request: its
    /// session keeps it from being applied twice); past their time they are answered
    /// `Timeout`.
    pub(crate) fn expire_relayed(&mut self) {
        let now = self.ticks;
        let late: Vec<RequestId> = self
            .relay
            .sent
            .iter()
            .filter(|(_, s)| now >= s.retry)
            .map(|(id, _)| *id)
            .collect();
        for key in late {
            let Some(sent) = self.relay.sent.get(&key) else {
                continue;
            };
            let (g, host) = (sent.group, sent.host);
            let next = self.next_host(g, host);
            self.relay.hint.insert(g, next);
            let Some(sent) = self.relay.sent.get_mut(&key) else {
                continue;
            };
            if now >= sent.until {
                let id = sent.id;
                self.relay.sent.remove(&key);
                let timeout = ClientReply {
                    id,
                    result: Err(EngineError::Timeout),
                };
                let answer = self.gather(g, timeout);
                self.refused.extend(answer);
                continue;
            }
            sent.host = next;
            sent.retry = now + RELAY_RETRY_TICKS;
            let again = Relayed::Request(g, sent.request.clone());
            self.relay.outbox.push((next, again));
        }
    }

    /// The host of group `g` after `host` in id order, passing over shunned ones unless every
    /// other host is.
    fn next_host(&self, g: GroupId, host: NodeId) -> NodeId {
        let hosts = self.relay_hosts(g);
        let Some(i) = hosts.iter().position(|h| *h == host) else {
            return self.host_for(g);
        };
        let after = (1..hosts.len()).map(|k| hosts[(i + k) % hosts.len()]);
        let mut candidates = after.clone().filter(|h| !self.shunned(*h));
        candidates
            .next()
            .or_else(|| after.clone().next())
            .unwrap_or(host)
    }

    /// Adds this batch's relayed requests and answers to its frames (after persist, like
    /// replies: an answer says its write is durable here), and, when it is time, a frame with
    /// this member's highest revision to every member of the cluster the batch sends nothing
    /// else (`close::ANNOUNCE_EVERY_TICKS`).
    pub(crate) fn add_relays_and_tops(
        &mut self,
        frames: &mut Vec<(NodeId, GroupMessage<E::Message>)>,
    ) {
        if std::mem::take(&mut self.closing.announce) {
            // The cluster's members now, not the first boot's: a member added later may lead
            // the first group, and nothing else tells it of the groups it does not host.
            let members = match self.cluster_configuration() {
                Some((_, c)) if !c.members.is_empty() => c.ids(),
                _ => self.base.members.clone(),
            };
            for to in members {
                if to != self.id && !frames.iter().any(|(p, _)| *p == to) {
                    frames.push((to, self.empty_frame()));
                }
            }
        }
        for (to, r) in std::mem::take(&mut self.relay.outbox) {
            match frames.iter_mut().find(|(p, _)| *p == to) {
                Some((_, m)) => m.relayed.push(r),
                None => {
                    let mut frame = self.empty_frame();
                    frame.relayed.push(r);
                    frames.push((to, frame));
                }
            }
        }
    }

    /// Requests relayed here and not answered yet, and relays this member waits for.
    pub(crate) fn relays_pending(&self) -> usize {
        self.relay.taken.len() + self.relay.sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::hosts_at;

    #[test]
    fn groups_spread_over_the_members_and_the_first_is_everywhere() {
        let members = [5, 1, 3, 2, 4];
        assert_eq!(hosts_at(&members, 0, 3), [1, 2, 3, 4, 5]);
        assert_eq!(hosts_at(&members, 1, 3), [2, 3, 4]);
        assert_eq!(hosts_at(&members, 3, 3), [1, 4, 5]);
        assert_eq!(hosts_at(&members, 6, 3), [2, 3, 4], "wraps around");
        assert_eq!(hosts_at(&members, 2, 0), [1, 2, 3, 4, 5], "0: everywhere");
        assert_eq!(hosts_at(&members, 2, 5), [1, 2, 3, 4, 5]);
        let mut load = [0; 5];
        for p in 1..=5 {
            for h in hosts_at(&members, p, 3) {
                load[(h - 1) as usize] += 1;
            }
        }
        assert_eq!(load, [3; 5], "every member hosts as many groups");
    }
}
