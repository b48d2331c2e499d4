//! The cluster's configuration as replicated state: who the members are, where they listen,
//! which of them vote — and the changes an operator can make to it.
//!
//! A change is an ordinary command ([`crate::kv::Op::Membership`]) decided in the log like a
//! write, so every replica applies the same changes at the same log positions. Applying one is
//! a pure function of the configuration before it ([`Configuration::apply`]), and a change that
//! is not valid there (removing the last voter, adding an address twice, …) fails the same way
//! everywhere and changes nothing.
//!
//! Two counters: `version` goes up with every change (what the APIs report), `epoch` only when
//! the set of *voters* changes. A log protocol's quorums are sets of voters, so a new epoch is a
//! new protocol instance, started from the state at the change (the StopSign of OmniPaxos
//! §6, the epochs of VR Revisited §7); adding, removing or updating a learner keeps the
//! instance running.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    /// host:port other members dial for the peer protocol.
    pub peer_addr: String,
    /// host:port of the HTTP/JSON API ("" when unknown, e.g. in the simulator).
    pub http_addr: String,
    /// host:port of the etcd v3 gRPC API.
    pub grpc_addr: String,
    /// A learner receives the decided log but does not vote and is in no quorum.
    pub learner: bool,
}

/// The member set at one point of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Configuration {
    /// Bumped by every change.
    pub version: u64,
    /// Bumped by every change of the voter set: a new protocol instance.
    pub epoch: u64,
    /// Sorted by id, ids unique.
    pub members: Vec<Member>,
    /// The id an `Add` without one gets: above every id ever used, so a removed member's id
    /// never comes back (peers may still hold state keyed by it, such as its data id).
    pub next_id: u64,
}

/// A change an operator asks for (etcd's Cluster API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// etcd MemberAdd: `member.learner` says whether it joins as a learner. `member.id` 0
    /// means "pick the next free id".
    Add(Member),
    /// etcd MemberRemove.
    Remove(NodeId),
    /// etcd MemberPromote: a learner becomes a voter.
    Promote(NodeId),
    /// etcd MemberUpdate: new peer address (and name / client addresses when not empty).
    Update(Member),
}

/// etcd's messages, where it has one.
pub const ERR_MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
pub const ERR_PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
pub const ERR_MEMBER_ID_EXISTS: &str = "etcdserver: member ID already exist";
pub const ERR_MEMBER_NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
pub const ERR_LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
pub const ERR_LAST_VOTER: &str =
    "etcdserver: re-configuration failed due to not enough started members";

impl Member {
    /// Member `id` named `n<id>` with peer address `127.0.0.1:<7000 + id>`: for tests.
    pub fn example(id: NodeId, learner: bool) -> Member {
        Member {
            id,
            name: format!("n{id}"),
            peer_addr: format!("127.0.0.1:{}", 7000 + id),
            learner,
            ..Member::default()
        }
    }
}

impl Configuration {
    /// The configuration a new cluster boots with: every member a voter, version and epoch 0.
    pub fn bootstrap(mut members: Vec<Member>) -> Self {
        members.sort_by_key(|m| m.id);
        members.dedup_by_key(|m| m.id);
        for m in &mut members {
            m.learner = false;
        }
        let next_id = members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        Configuration {
            version: 0,
            epoch: 0,
            members,
            next_id,
        }
    }

    /// Member ids are sorted and unique, as every change keeps them. Quorum arithmetic
    /// counts members, so a configuration from outside (a snapshot, a checkpoint) that
    /// repeats an id is refused before anything counts on it.
    pub fn is_well_formed(&self) -> bool {
        self.members.windows(2).all(|w| w[0].id < w[1].id)
    }

    /// A bootstrap configuration of bare ids (the simulator's).
    pub fn of_ids(ids: &[NodeId]) -> Self {
        Configuration::bootstrap(
            ids.iter()
                .map(|&id| Member {
                    id,
                    name: format!("n{id}"),
                    ..Member::default()
                })
                .collect(),
        )
    }

    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.member(id).is_some()
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.member(id).is_some_and(|m| !m.learner)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.member(id).is_some_and(|m| m.learner)
    }

    /// Voter ids, sorted.
    pub fn voters(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| !m.learner)
            .map(|m| m.id)
            .collect()
    }

    /// Learner ids, sorted.
    pub fn learners(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| m.learner)
            .map(|m| m.id)
            .collect()
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// The configuration after `change`, or why the change is refused. Pure, so every replica
    /// decides the same.
    pub fn apply(&self, change: &MemberChange) -> Result<Configuration, String> {
        let mut next = self.clone();
        match change {
            MemberChange::Add(m) => {
                let mut m = m.clone();
                if m.id == 0 {
                    m.id = self.next_id.max(1);
                }
                if self.contains(m.id) {
                    return Err(ERR_MEMBER_ID_EXISTS.into());
                }
                if m.peer_addr.is_empty() && !self.members.iter().all(|x| x.peer_addr.is_empty()) {
                    return Err("etcdserver: member peer address is empty".into());
                }
                if !m.peer_addr.is_empty()
                    && self.members.iter().any(|x| x.peer_addr == m.peer_addr)
                {
                    return Err(ERR_PEER_URL_EXISTS.into());
                }
                if m.name.is_empty() {
                    m.name = format!("n{}", m.id);
                }
                next.next_id = next.next_id.max(m.id + 1);
                next.members.push(m);
                next.members.sort_by_key(|m| m.id);
            }
            MemberChange::Remove(id) => {
                let Some(m) = self.member(*id) else {
                    return Err(ERR_MEMBER_NOT_FOUND.into());
                };
                if !m.learner && self.voters().len() == 1 {
                    return Err(ERR_LAST_VOTER.into());
                }
                next.members.retain(|m| m.id != *id);
            }
            MemberChange::Promote(id) => {
                match self.member(*id) {
                    None => return Err(ERR_MEMBER_NOT_FOUND.into()),
                    Some(m) if !m.learner => return Err(ERR_MEMBER_NOT_LEARNER.into()),
                    Some(_) => {}
                }
                for m in &mut next.members {
                    if m.id == *id {
                        m.learner = false;
                    }
                }
            }
            MemberChange::Update(u) => {
                if !self.contains(u.id) {
                    return Err(ERR_MEMBER_NOT_FOUND.into());
                }
                if self
                    .members
                    .iter()
                    .any(|x| x.id != u.id && !u.peer_addr.is_empty() && x.peer_addr == u.peer_addr)
                {
                    return Err(ERR_PEER_URL_EXISTS.into());
                }
                for m in &mut next.members {
                    if m.id == u.id {
                        let keep = |new: &String, old: &mut String| {
                            if !new.is_empty() {
                                *old = new.clone();
                            }
                        };
                        keep(&u.peer_addr, &mut m.peer_addr);
                        keep(&u.name, &mut m.name);
                        keep(&u.http_addr, &mut m.http_addr);
                        keep(&u.grpc_addr, &mut m.grpc_addr);
                    }
                }
            }
        }
        next.version = self.version + 1;
        if next.voters() != self.voters() {
            next.epoch = self.epoch + 1;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId, learner: bool) -> Member {
        Member::example(id, learner)
    }

    fn three() -> Configuration {
        Configuration::bootstrap(vec![member(1, false), member(2, false), member(3, false)])
    }

    #[test]
    fn adding_a_learner_keeps_the_epoch_and_promoting_it_starts_one() {
        let c = three();
        let c1 = c.apply(&MemberChange::Add(member(4, true))).unwrap();
        assert_eq!((c1.version, c1.epoch), (1, 0));
        assert_eq!(c1.learners(), vec![4]);
        let c2 = c1.apply(&MemberChange::Promote(4)).unwrap();
        assert_eq!((c2.version, c2.epoch), (2, 1));
        assert_eq!(c2.voters(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn bad_changes_are_refused_with_etcds_messages() {
        let c = three();
        let dup = Member {
            id: 9,
            ..member(2, false)
        };
        assert_eq!(
            c.apply(&MemberChange::Add(dup)),
            Err(ERR_PEER_URL_EXISTS.into())
        );
        assert_eq!(
            c.apply(&MemberChange::Add(member(2, true))),
            Err(ERR_MEMBER_ID_EXISTS.into())
        );
        assert_eq!(
            c.apply(&MemberChange::Remove(7)),
            Err(ERR_MEMBER_NOT_FOUND.into())
        );
        assert_eq!(
            c.apply(&MemberChange::Promote(1)),
            Err(ERR_MEMBER_NOT_LEARNER.into())
        );
        let one = Configuration::bootstrap(vec![member(1, false)]);
        assert_eq!(
            one.apply(&MemberChange::Remove(1)),
            Err(ERR_LAST_VOTER.into())
        );
    }

    #[test]
    fn id_zero_picks_the_next_free_id_and_removal_bumps_the_epoch() {
        let c = three();
        let c1 = c
            .apply(&MemberChange::Add(Member {
                id: 0,
                ..member(9, false)
            }))
            .unwrap();
        assert_eq!(c1.voters(), vec![1, 2, 3, 4]);
        assert_eq!(c1.epoch, 1);
        let c2 = c1.apply(&MemberChange::Remove(4)).unwrap();
        assert_eq!(c2.voters(), vec![1, 2, 3]);
        assert_eq!(c2.epoch, 2);
        // The removed member's id is not given out again.
        let c3 = c2
            .apply(&MemberChange::Add(Member {
                id: 0,
                ..member(8, true)
            }))
            .unwrap();
        assert_eq!(c3.learners(), vec![5]);
    }
}
