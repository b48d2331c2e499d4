//! Spreading placed groups evenly over the cluster's voters (`[partition] rebalance`): a new
//! member gets ranges without an operator's `range move`, and groups that all left a removed
//! member for the same least-loaded member (each group's leader chose from its own view) spread
//! out again.
//!
//! **What is balanced** is the count of placed groups each cluster voter hosts (a replica
//! count, as CockroachDB's first balancing signal): the first group and the meta group live on
//! every member and are not counted. The cluster is balanced when the busiest voter hosts at
//! most one group more than the idlest; until then [`plan_move`] names one move — a group of the
//! busiest voter (the lowest id among equals) that the idlest does not host, to the idlest —
//! and the leader of that group makes it, as an operator's `range move` would be made
//! (`moves.rs`: a learner, promoted once in sync, the busy member removed, each guarded by the
//! group's configuration version). Every member computes the same plan from the same view, so
//! one leader moves at a time.
//!
//! **Only while quiet**: no plan is made while any placed group is mid-change as this member
//! sees it (a learner, or voters other than `replicas` of them, in its own replica or in its
//! copy of the range directory, which each group's leader updates after every change), while a
//! group lists a member that is no voter of the cluster (the removal's evacuation goes first),
//! or while a move is driven here. Views that lag can still start two moves at once; each is
//! safe on its own, and the next plan corrects an overshoot.
//!
//! **A target that does not take a group** (down, or too slow to catch up within the move's
//! time) is passed over for [`SHUN_MOVE_TIMEOUTS`] move timeouts, so a dead member does not
//! draw a move every round — by this plan, and by the moves off a removed member or a voter
//! that cannot vote (`moves.rs`), which choose the least loaded member outside the group too.
//!
//! **A voter too many** (a move cut short after its promotion, or two moves that each added a
//! member for the one removed) is dropped by the group's leader on every placed cluster —
//! with rebalancing at once, without it once the group has stayed so for a while (an
//! operator's move under way makes its own removal first).
//!
//! Moves by load (requests per second, bytes) are not done; leaders are spread across the
//! members by a plan of their own (`leaders.rs`), over the hosts this plan leaves.

use crate::Partitioned;
use crate::layout::GroupId;
use crate::moves::MOVE_TIMEOUTS;
use std::collections::BTreeMap;
use synod_core::membership::{Configuration, MemberChange};
use synod_core::{ClientReply, Engine, NodeId, PlantedBug, RequestId};

/// How often (in ticks) a group's leader looks for a move to make.
pub(crate) const REBALANCE_EVERY_TICKS: u64 = 50;
/// Without rebalancing, a group left a voter more than placed this many election timeouts
/// (its configuration unchanged) drops one (`shed_extra_voters`).
const SHED_AFTER_ETS: u64 = 20;
/// A target a move failed to reach is not chosen again for this many move timeouts.
pub const SHUN_MOVE_TIMEOUTS: u64 = 2;

/// The balancing state of one member.
#[derive(Default)]
pub(crate) struct Rebalance {
    /// The move this member started to balance, and its target.
    moving: Option<(RequestId, NodeId)>,
    /// Every move this member started itself (to balance, to evacuate, to replace), and its
    /// target: one that fails shuns it.
    pub(crate) targets: BTreeMap<RequestId, NodeId>,
    /// Targets a move failed to reach, and the tick until which they are passed over.
    shunned: BTreeMap<NodeId, u64>,
    /// Groups led here with a voter more than placed: the configuration version, and the
    /// tick since when it has been so.
    over: BTreeMap<GroupId, (u64, u64)>,
}

/// The one move that brings the cluster closer to balance, if it is not balanced: `(group,
/// from, to)`. `hosts` are the placed groups' voters; `voters` the cluster's voters, each a
/// possible host (one in `shunned` is not a target). The busiest voter gives a group the idlest
/// does not host (the lowest group id) to the idlest, if it hosts at least two groups more.
pub fn plan_move(
    hosts: &BTreeMap<GroupId, Vec<NodeId>>,
    voters: &[NodeId],
    shunned: &[NodeId],
) -> Option<(GroupId, NodeId, NodeId)> {
    let mut load: BTreeMap<NodeId, usize> = voters.iter().map(|v| (*v, 0)).collect();
    for h in hosts.values().flatten() {
        if let Some(n) = load.get_mut(h) {
            *n += 1;
        }
    }
    // The busiest with the lowest id, the idlest target with the lowest id.
    let (from, most) = (load.iter()).max_by_key(|(v, n)| (**n, std::cmp::Reverse(**v)))?;
    let (to, least) = (load.iter())
        .filter(|(v, _)| !shunned.contains(v))
        .min_by_key(|(v, n)| (**n, **v))?;
    if *most < least + 2 {
        return None;
    }
    let group = (hosts.iter())
        .find(|(_, h)| h.contains(from) && !h.contains(to))
        .map(|(g, _)| *g)?;
    Some((group, *from, *to))
}

impl<E: Engine> Partitioned<E> {
    /// Starts the plan's move if it is for a group this member leads and the cluster is quiet
    /// (module doc).
    pub(crate) fn rebalance(&mut self) {
        if !self.placed() {
            return;
        }
        let busy = |(id, _): &(RequestId, NodeId)| self.own.is_pending(id);
        if self.rebalance.moving.as_ref().is_some_and(busy) || self.moves.driving_any() {
            return;
        }
        let Some((first, cluster)) = self.cluster_configuration() else {
            return;
        };
        if self.departed(self.id, &cluster) && !self.base.bug(PlantedBug::DepartedLeaderKeepsGroups)
        {
            // Removed: it hands its groups over (`moves.rs`), and changes none of them —
            // shedding a voter too many, it would keep itself and drop the newcomer.
            return;
        }
        self.shed_extra_voters(first, &cluster);
        if !self.base.partition_rebalance {
            return;
        }
        let Some(hosts) = self.quiet_hosts(first, &cluster) else {
            return;
        };
        let now = self.ticks;
        self.rebalance.shunned.retain(|_, until| *until > now);
        let shunned: Vec<NodeId> = self.rebalance.shunned.keys().copied().collect();
        let Some((g, from, to)) = plan_move(&hosts, &cluster.voters(), &shunned) else {
            return;
        };
        let leads = (self.groups.get(&g)).is_some_and(|e| e.status().leader == Some(self.id));
        if !leads {
            return;
        }
        let id = self.start_own_move(g, from, to);
        self.rebalance.moving = Some((id, to));
    }

    /// Finishes a move cut short after its promotion (its driver lost the lead or ran out of
    /// time), or two moves that each added a member for the same one removed (an operator's
    /// and a replacement of a member that cannot vote, `moves.rs`): a group led here with a
    /// voter more than placed, and no learner, drops one — a member the cluster lost first,
    /// then one that cannot vote, else the one that hosts the most groups (not this member).
    /// Nothing else would: an operator asks a move of theirs again, but nobody asks a
    /// balancing move or a replacement again, and the group would keep the cluster from ever
    /// being quiet. Without rebalancing, only a group left so for [`SHED_AFTER_ETS`] (an
    /// operator's move still under way would make its own removal by then).
    fn shed_extra_voters(&mut self, first: GroupId, cluster: &Configuration) {
        // PLANTED BUG (`RebalanceShedsPlacedVoter`): a group at its replicas has one too many.
        let off_by_one = self.base.bug(PlantedBug::RebalanceShedsPlacedVoter);
        let replicas = self.base.partition_replicas - usize::from(off_by_one);
        let led: Vec<(GroupId, Configuration, Vec<NodeId>)> = (self.data_groups())
            .filter(|(g, _)| *g != first)
            .map(|(g, e)| (g, e.status(), e.non_voting_voters()))
            .filter(|(_, st, _)| st.leader == Some(self.id))
            .map(|(g, st, nv)| (g, st.configuration, nv))
            .filter(|(_, c, _)| c.voters().len() > replicas && c.learners().is_empty())
            .collect();
        let now = self.ticks;
        let wait = match self.base.partition_rebalance {
            true => 0,
            false => SHED_AFTER_ETS * self.election_timeout_ticks,
        };
        let over = std::mem::take(&mut self.rebalance.over);
        let load = self.groups_hosted();
        for (g, c, non_voting) in led {
            let since = over
                .get(&g)
                .filter(|(v, _)| *v == c.version)
                .map_or(now, |s| s.1);
            self.rebalance.over.insert(g, (c.version, since));
            if now - since < wait {
                continue;
            }
            let shed = (c.voters().into_iter())
                .filter(|v| *v != self.id)
                .max_by_key(|v| {
                    let lost = !cluster.is_voter(*v);
                    (
                        lost,
                        non_voting.contains(v),
                        load.get(v).copied().unwrap_or(0),
                        *v,
                    )
                });
            if let Some(v) = shed {
                self.step_change(g, c.version, MemberChange::Remove(v));
            }
        }
    }

    /// The voters of every placed group as this member knows them, or `None` while one is
    /// mid-change or lists a member that is not a voter of the cluster.
    fn quiet_hosts(
        &self,
        first: GroupId,
        cluster: &Configuration,
    ) -> Option<BTreeMap<GroupId, Vec<NodeId>>> {
        let replicas = self.base.partition_replicas;
        let mut hosts = BTreeMap::new();
        for g in self.layout.ids().filter(|g| *g != first) {
            let own = (self.groups.get(&g))
                .map(|e| e.status().configuration)
                .filter(|c| c.contains(self.id));
            let (voters, learners) = match own {
                Some(c) => (c.voters(), c.learners().len()),
                None => match self.recorded_members(g) {
                    Some((voters, learners)) => (voters, learners.len()),
                    // Split off at run time, where this member only guesses its hosts: not
                    // settled until the directory records it (`learned.rs`).
                    None if g >= crate::layout::CHILD_ID_BASE => return None,
                    None => (self.static_hosts(g), 0),
                },
            };
            let settled = voters.len() == replicas && learners == 0;
            if !settled || !voters.iter().all(|v| cluster.is_voter(*v)) {
                return None;
            }
            hosts.insert(g, voters);
        }
        Some(hosts)
    }

    /// Notes the answer to a move this member started itself: a target it did not reach is
    /// passed over for a while.
    pub(crate) fn rebalance_answered(&mut self, reply: &ClientReply) {
        if self.rebalance.moving.is_some_and(|(id, _)| id == reply.id) {
            self.rebalance.moving = None;
        }
        let Some(to) = self.rebalance.targets.remove(&reply.id) else {
            return;
        };
        // Only a move that ran out of time says the target did not take the group (a refusal
        // — busy, a leader change, a step that would leave too few voters — says nothing of it).
        if matches!(reply.result, Err(synod_core::EngineError::Timeout)) {
            let until =
                self.ticks + SHUN_MOVE_TIMEOUTS * MOVE_TIMEOUTS * self.base.request_timeout_ticks;
            self.rebalance.shunned.insert(to, until);
        }
    }

    /// Whether a move should pass member `to` over: a move of this member's own failed to
    /// reach it lately.
    pub(crate) fn shunned_target(&self, to: NodeId) -> bool {
        self.rebalance
            .shunned
            .get(&to)
            .is_some_and(|t| self.ticks < *t)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::plan_move;
    use std::collections::BTreeMap;

    /// Groups 1, 2, … on the hosts given, in order.
    pub(crate) fn hosts(groups: &[&[u64]]) -> BTreeMap<u64, Vec<u64>> {
        (groups.iter().enumerate())
            .map(|(g, h)| (g as u64 + 1, h.to_vec()))
            .collect()
    }

    #[test]
    fn a_new_member_is_given_groups_until_no_voter_hosts_two_more_than_another() {
        // Three groups on members 1, 2, 3; member 4 just joined.
        let mut h = hosts(&[&[1, 2, 3], &[1, 2, 3], &[1, 2, 3]]);
        let voters = [1, 2, 3, 4];
        let mut moves = 0;
        while let Some((g, from, to)) = plan_move(&h, &voters, &[]) {
            let group = h.get_mut(&g).expect("planned group exists");
            assert!(group.contains(&from) && !group.contains(&to));
            group.retain(|m| *m != from);
            group.push(to);
            moves += 1;
            assert!(moves <= 9, "the plan converges: {h:?}");
        }
        let mut load = BTreeMap::new();
        for m in h.values().flatten() {
            *load.entry(*m).or_insert(0) += 1;
        }
        // 9 replicas over 4 voters: 3, 2, 2, 2.
        assert_eq!(load.values().max(), Some(&3));
        assert_eq!(load.values().min(), Some(&2));
        assert_eq!(load.get(&4), Some(&2));
        assert_eq!(moves, 2);
    }

    #[test]
    fn a_balanced_cluster_plans_nothing() {
        let h = hosts(&[&[1, 2, 3], &[2, 3, 4], &[3, 4, 1], &[4, 1, 2]]);
        assert_eq!(plan_move(&h, &[1, 2, 3, 4], &[]), None);
    }

    #[test]
    fn a_shunned_member_is_not_a_target() {
        let h = hosts(&[&[1, 2, 3], &[1, 2, 3]]);
        assert_eq!(plan_move(&h, &[1, 2, 3, 4], &[]), Some((1, 1, 4)));
        assert_eq!(plan_move(&h, &[1, 2, 3, 4], &[4]), None);
        // Another idle member is chosen instead.
        assert_eq!(plan_move(&h, &[1, 2, 3, 4, 5], &[4]), Some((1, 1, 5)));
    }

    #[test]
    fn groups_piled_on_one_member_spread_out() {
        // Every group left a removed member for member 5 (each leader chose alone).
        // Member 5 hosts 4 groups, the others 2 each: one goes to member 1, then balanced.
        let mut h = hosts(&[&[1, 2, 5], &[2, 3, 5], &[3, 4, 5], &[1, 4, 5]]);
        assert_eq!(plan_move(&h, &[1, 2, 3, 4, 5], &[]), Some((2, 5, 1)));
        h.insert(2, vec![1, 2, 3]);
        assert_eq!(plan_move(&h, &[1, 2, 3, 4, 5], &[]), None);
        // Member 5 hosts 4, member 4 none.
        let h = hosts(&[&[1, 2, 5], &[2, 3, 5], &[3, 1, 5], &[1, 2, 5]]);
        assert_eq!(plan_move(&h, &[1, 2, 3, 4, 5], &[]), Some((1, 5, 4)));
    }
}
