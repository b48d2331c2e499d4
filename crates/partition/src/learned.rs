//! Placed splits: how a member that does not host a group learns the groups split off it.
//!
//! A split is applied by the hosts of the group it cuts (`Op::Split` in that group's log), and
//! they start the new group on themselves. A member hosting neither never applies it, so its
//! layout would route the new group's keys to the old group forever, and its lease and
//! compaction fans would never reach the new group's copy. It learns the split two ways:
//!
//! * **From a relay's answer.** A host answering a relay for group `g` names `g`'s splits as
//!   its replica applied them ([`SplitNotice`]: the key, the new group, its hosts). The
//!   relaying member adds them to its layout *before* the answer counts — which keeps the
//!   fans' completeness argument of `leases.rs` true on placed clusters: a group's answer
//!   reaches the fan only after the host applied the request, hence every split the group
//!   decided before it, and now this member's layout names those groups too, so the fan sends
//!   them their parts. A write routed to the old group by a layout from before the split is
//!   refused `WrongGroup` there, and its answer teaches the split, so the node's next try goes
//!   to the new group.
//! * **From its copy of the range directory**, where the new group's leader records it
//!   (`directory.rs`): for members that relay nothing to the old group. A learned group goes
//!   into the layout this member persists, so it is known again after a restart; the hosts
//!   learned with it are not (the directory's record, or the group below's, stand in).
//!
//! Why adding is always safe: placed groups never merge (refused by name), so a boundary, once
//! a split made it, begins the same group forever. Every member's layout is then a subset of
//! the true boundaries, and adding any true boundary, in any order, keeps it one: a key is
//! routed to the group of the nearest known boundary below it, at worst an ancestor of its
//! owner, which refuses it `WrongGroup` (decided where it is applied) — a hop, never a wrong
//! answer.

use crate::Partitioned;
use crate::layout::{CHILD_ID_BASE, GroupId, child_id};
use serde::{Deserialize, Serialize};
use synod_core::kv::{Key, Op};
use synod_core::{DirectoryEntry, Engine, EngineError, NodeId};

/// A split of a relayed group as its host applied it: the new group begins at `at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitNotice {
    pub at: Key,
    pub group: GroupId,
    /// The new group's voters as the host knows them (where to relay its keys).
    pub hosts: Vec<NodeId>,
}

impl<E: Engine> Partitioned<E> {
    /// The splits of group `g` its replica here applied, for a relay's answer (placed
    /// clusters only; empty when the group never split).
    pub(crate) fn split_notices(&self, g: GroupId) -> Vec<SplitNotice> {
        if !self.placed() {
            return Vec::new();
        }
        let Some(marks) = self.groups.get(&g).and_then(|e| e.range_state()) else {
            return Vec::new();
        };
        (marks.splits.iter())
            .map(|m| {
                let group = child_id(g, m);
                SplitNotice {
                    at: m.at.clone(),
                    group,
                    hosts: self.hosts(group),
                }
            })
            .collect()
    }

    /// Adds the groups `notices` name to this member's layout where it does not know them.
    pub(crate) fn learn_splits(&mut self, notices: Vec<SplitNotice>) {
        if !self.placed() {
            return; // unplaced, every member applies every split itself
        }
        for n in notices {
            self.learn_split(n.at, n.group, n.hosts);
        }
    }

    /// Adds the groups this member's copy of the directory records and its layout does not
    /// name (placed clusters only: unplaced, every member applies every split itself, and
    /// merges make a recorded boundary no longer one).
    pub(crate) fn learn_recorded_splits(&mut self) {
        if !self.placed() {
            return;
        }
        let recorded: Vec<(Key, GroupId, Vec<NodeId>)> = (self.recorded_entries())
            .filter(|e| e.group >= CHILD_ID_BASE && self.layout.position(e.group).is_none())
            .map(|e| (e.start.clone(), e.group, e.members.clone()))
            .collect();
        for (at, group, hosts) in recorded {
            self.learn_split(at, group, hosts);
        }
    }

    /// Group `group` begins at `at`: added to the layout unless it is known (here, retired) or
    /// the key already begins a group, which (placed groups never merge) can only be this one.
    fn learn_split(&mut self, at: Key, group: GroupId, hosts: Vec<NodeId>) {
        if self.layout.position(group).is_some() || self.retired.contains(&group) {
            return;
        }
        // Not an entry naming nobody: it ends the range before it (a split recorded by the
        // old group before the new group's leader recorded itself); learned as a group, it
        // would route the keys above it to no one for good (simulator seed 3,090 of `all,storage
        // --replicas 3 --splits`).
        if group == DirectoryEntry::NOBODY {
            return;
        }
        if at.is_empty() || self.layout.entries().iter().any(|(s, _)| *s == at) {
            return;
        }
        if !hosts.is_empty() {
            self.relay.learned.insert(group, hosts);
        }
        self.layout.split(at, group);
        self.layout_changed = true;
    }

    /// Why split `op` is refused for the number of groups, if it is: placed, this member
    /// hosts some of them, and its layout names the others it learned of (a host checks a
    /// relayed split again, `placement.rs`).
    pub(crate) fn groups_full(&self, op: &Op) -> Option<EngineError> {
        if !matches!(op, Op::Split(_)) {
            return None;
        }
        let groups = match self.placed() {
            true => self.layout.groups(),
            false => self.data_groups().count(),
        };
        (groups >= crate::GROUPS_MAX).then(|| {
            EngineError::InvalidRequest(format!(
                "a partitioned cluster runs at most {} groups",
                crate::GROUPS_MAX
            ))
        })
    }

    /// The hosts of group `g`, split off at run time, as far as this member knows without a
    /// replica or a record of it: as learned with the split, else those of the group below it
    /// in the layout (its parent's or a sibling's — where it began, unless moved since), else
    /// every member.
    pub(crate) fn split_hosts(&self, g: GroupId) -> Vec<NodeId> {
        if let Some(h) = self.relay.learned.get(&g) {
            return h.clone();
        }
        match self.layout.below(g) {
            Some(below) => self.hosts(below),
            None => crate::placement::hosts_at(&self.base.members, 0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::layout::Layout;

    /// Boundaries learned in any order give the same layout: a subset of the true boundaries
    /// grows into the whole.
    #[test]
    fn boundaries_learned_in_any_order_give_one_layout() {
        let (c1, c2, c3) = (1 << 52 | 1, 1 << 52 | 2, 1 << 52 | 3);
        let learn = |order: &[(&str, u64)]| {
            let mut l = Layout::new(vec![b"m".to_vec()]).expect("layout");
            for (at, g) in order {
                l.split(at.as_bytes().to_vec(), *g);
            }
            l.entries().to_vec()
        };
        let a = learn(&[("f", c1), ("c", c2), ("t", c3)]);
        let b = learn(&[("t", c3), ("c", c2), ("f", c1)]);
        assert_eq!(a, b);
        let owner = |l: &[(Vec<u8>, u64)], k: &str| {
            let pos = l.partition_point(|(s, _)| s.as_slice() <= k.as_bytes()) - 1;
            l[pos].1
        };
        assert_eq!(owner(&a, "d"), c2);
        assert_eq!(owner(&a, "g"), c1);
        assert_eq!(owner(&a, "b"), 0);
    }
}
