//! Membership change on a partitioned cluster: the first group's configuration is the
//! cluster's, and every other group follows it.
//!
//! An operator's change (etcd's MemberAdd, MemberRemove, MemberPromote, MemberUpdate) is
//! decided in the first group alone — the group that also holds auth and answers for the
//! cluster — and answered once every group on the answering member followed it ([`followed`];
//! `Timeout` if they do not in time), so a removed member can be stopped as soon as the
//! operator has the answer. The leader of every other group
//! brings its group's configuration to the first group's, one ordinary change at a time,
//! proposed through the group's own log ([`next_change`]), so each group changes its members
//! with its own protocol's safe reconfiguration (epochs, learners catching up from
//! snapshots). Until a group has caught up, members differ between groups: the node keeps
//! reaching every member of any group ([`synod_core::EngineStatus::other_members`]).
//!
//! A group first drops the members the cluster removed (an operator stops a removed member
//! at once), and adds a member it lacks always as a *learner*, promoted once it is in sync,
//! whatever the first group did: a voter without state added to a group whose old member is
//! down could leave that group without a quorum until the newcomer caught up.

use synod_core::membership::{Configuration, Member, MemberChange};

/// The next change that brings `current` (a group's configuration) towards `target` (the
/// first group's), or `None` when they have the same members. Order: removals, then updates,
/// then additions (as learners), then promotions. Removals go first because an operator
/// stops a member as soon as the cluster removed it: a group that still counted it as a
/// voter — with a newcomer promoted meanwhile that has not caught up with the new epoch —
/// could be left without a quorum for good (the simulator found exactly that with VR).
pub fn next_change(target: &Configuration, current: &Configuration) -> Option<MemberChange> {
    if target.members.is_empty() || current.members.is_empty() {
        // A replica with no state yet (joining) has nothing to follow or to change.
        return None;
    }
    let removed = current
        .members
        .iter()
        .filter(|c| !target.contains(c.id))
        // The last voter stays (the change would be refused); the cluster's voters come
        // first then.
        .find(|c| c.learner || current.voters().len() > 1);
    if let Some(c) = removed {
        return Some(MemberChange::Remove(c.id));
    }
    for t in &target.members {
        if let Some(c) = current.member(t.id)
            && !same_addresses(t, c)
        {
            return Some(MemberChange::Update(t.clone()));
        }
    }
    for t in &target.members {
        if !current.contains(t.id) {
            return Some(MemberChange::Add(Member {
                learner: true,
                ..t.clone()
            }));
        }
    }
    target
        .members
        .iter()
        .find(|t| !t.learner && current.is_learner(t.id))
        .map(|t| MemberChange::Promote(t.id))
}

/// Whether a group whose configuration is `current` has followed `change`, which made the
/// first group's configuration `after`: the member it removed is gone, the one it added is
/// there (a learner will do: other groups promote a new voter only once it is in sync, after
/// it started), the one it promoted votes, the one it updated has the new addresses.
pub fn followed(change: &MemberChange, after: &Configuration, current: &Configuration) -> bool {
    match change {
        MemberChange::Remove(id) => !current.contains(*id),
        MemberChange::Add(m) => {
            let added = after.members.iter().find(|a| {
                if m.id != 0 {
                    a.id == m.id
                } else {
                    a.peer_addr == m.peer_addr
                }
            });
            added.is_none_or(|a| current.contains(a.id))
        }
        MemberChange::Promote(id) => !after.is_voter(*id) || current.is_voter(*id),
        MemberChange::Update(m) => match (after.member(m.id), current.member(m.id)) {
            (Some(a), Some(c)) => same_addresses(a, c),
            (Some(_), None) => false,
            (None, _) => true,
        },
    }
}

/// Planted bug `PartitionGroupsKeepRemovedMembers`: `target` with the members of `current`
/// it lacks kept, so following it adds, promotes and updates but never removes.
pub fn keeping(target: &Configuration, current: &Configuration) -> Configuration {
    let mut t = target.clone();
    t.members.extend(
        current
            .members
            .iter()
            .filter(|c| !target.contains(c.id))
            .cloned(),
    );
    t.members.sort_by_key(|m| m.id);
    t
}

fn same_addresses(a: &Member, b: &Member) -> bool {
    a.name == b.name
        && a.peer_addr == b.peer_addr
        && a.http_addr == b.http_addr
        && a.grpc_addr == b.grpc_addr
}

/// The members of `others` (the other groups' configurations) that `first` does not list:
/// peers the node must still reach for those groups. The newest address wins (the highest
/// configuration version that lists the member).
pub fn other_members<'a>(
    first: &Configuration,
    others: impl Iterator<Item = &'a Configuration>,
) -> Vec<Member> {
    let mut out: std::collections::BTreeMap<u64, (u64, Member)> = Default::default();
    for c in others {
        for m in c.members.iter().filter(|m| !first.contains(m.id)) {
            let newer = out.get(&m.id).is_none_or(|(v, _)| c.version > *v);
            if newer {
                out.insert(m.id, (c.version, m.clone()));
            }
        }
    }
    out.into_values().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, learner: bool) -> Member {
        Member::example(id, learner)
    }

    fn config(members: Vec<Member>) -> Configuration {
        Configuration::bootstrap(members.clone()).with_members(members)
    }

    trait WithMembers {
        fn with_members(self, members: Vec<Member>) -> Self;
    }
    impl WithMembers for Configuration {
        fn with_members(mut self, members: Vec<Member>) -> Self {
            self.members = members;
            self.members.sort_by_key(|m| m.id);
            self
        }
    }

    /// Applies `next_change` until none is left: the changes made, and the end state.
    fn follow(
        target: &Configuration,
        mut current: Configuration,
    ) -> (Vec<MemberChange>, Configuration) {
        let mut made = Vec::new();
        while let Some(change) = next_change(target, &current) {
            current = current.apply(&change).expect("every change applies");
            made.push(change);
            assert!(made.len() < 20, "no end: {made:?}");
        }
        (made, current)
    }

    #[test]
    fn a_replacement_removes_then_adds_a_learner_and_promotes_it() {
        let target = config(vec![member(2, false), member(3, false), member(4, false)]);
        let current = config(vec![member(1, false), member(2, false), member(3, false)]);
        let (made, end) = follow(&target, current);
        assert_eq!(
            made,
            vec![
                MemberChange::Remove(1),
                MemberChange::Add(member(4, true)),
                MemberChange::Promote(4),
            ]
        );
        assert_eq!(end.members, target.members);
    }

    #[test]
    fn learners_stay_learners_and_addresses_follow() {
        let mut moved = member(2, false);
        moved.peer_addr = "10.0.0.2:7000".into();
        moved.grpc_addr = "10.0.0.2:7002".into();
        let target = config(vec![member(1, false), moved.clone(), member(5, true)]);
        let current = config(vec![member(1, false), member(2, false)]);
        let (made, end) = follow(&target, current);
        assert_eq!(
            made,
            vec![
                MemberChange::Update(moved),
                MemberChange::Add(member(5, true))
            ]
        );
        assert_eq!(end.members, target.members);
    }

    #[test]
    fn an_address_held_by_a_departed_member_is_freed_first() {
        // Member 1 was wiped and re-added as member 4 at the same address.
        let mut back = member(4, false);
        back.peer_addr = member(1, false).peer_addr;
        let target = config(vec![member(2, false), member(3, false), back.clone()]);
        let current = config(vec![member(1, false), member(2, false), member(3, false)]);
        let (made, end) = follow(&target, current);
        assert_eq!(made[0], MemberChange::Remove(1));
        assert_eq!(end.members, target.members);
    }

    #[test]
    fn the_last_voter_waits_for_the_clusters_voters() {
        // The cluster replaced every member: the group's last old voter goes only once a new
        // one is a voter.
        let target = config(vec![member(5, false)]);
        let current = config(vec![member(1, false)]);
        let (made, end) = follow(&target, current);
        assert_eq!(
            made,
            vec![
                MemberChange::Add(member(5, true)),
                MemberChange::Promote(5),
                MemberChange::Remove(1),
            ]
        );
        assert_eq!(end.members, target.members);
    }

    #[test]
    fn followed_means_the_change_reached_the_group() {
        let before = config(vec![member(1, false), member(2, false), member(3, false)]);
        let add = MemberChange::Add(Member {
            id: 0,
            ..member(4, false)
        });
        let after = before.apply(&add).expect("add");
        assert!(!followed(&add, &after, &before));
        let learner = before
            .apply(&MemberChange::Add(member(4, true)))
            .expect("add");
        assert!(followed(&add, &after, &learner), "a learner will do");
        let promote = MemberChange::Promote(4);
        let voted = learner.apply(&promote).expect("promote");
        assert!(!followed(&promote, &voted, &learner));
        assert!(followed(&promote, &voted, &voted));
        let remove = MemberChange::Remove(1);
        let without = voted.apply(&remove).expect("remove");
        assert!(!followed(&remove, &without, &voted));
        assert!(followed(&remove, &without, &without));
    }

    #[test]
    fn nothing_to_do_when_equal_or_without_state() {
        let c = config(vec![member(1, false), member(2, false)]);
        assert_eq!(next_change(&c, &c), None);
        assert_eq!(next_change(&Configuration::default(), &c), None);
        assert_eq!(next_change(&c, &Configuration::default()), None);
    }

    #[test]
    fn other_members_are_those_the_first_group_lacks_at_their_newest_address() {
        let first = config(vec![member(2, false), member(3, false)]);
        let mut old = config(vec![member(1, false), member(2, false), member(3, false)]);
        old.version = 3;
        let mut newer = old.clone();
        newer.version = 5;
        newer.members[0].peer_addr = "10.0.0.1:7000".into();
        let others = other_members(&first, [&old, &newer].into_iter());
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].peer_addr, "10.0.0.1:7000");
        assert!(other_members(&first, [&first].into_iter()).is_empty());
    }
}
