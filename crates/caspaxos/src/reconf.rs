//! Versioned CASPaxos configurations and their quorums: the pure half of cluster membership
//! change (Rystsov 2018, §2.3 "Cluster membership change"). The driving half (installing each
//! step on every proposer, the rescan) is in `coordinator.rs`.
//!
//! **What a configuration is here.** A [`CasConfig`] is the membership
//! [`Configuration`] in force plus, while a change is under way, the change's target and the
//! step it reached. Its `version` goes up by one with every step of every change; every
//! Prepare, Accept and Drop carries the sender's version. Each node persists the configuration
//! it holds ([`crate::messages::Record::Config`], and inside checkpoints) and uses it for both
//! of its roles: the proposer takes its prepare and accept sets and quorum sizes from it
//! ([`CasConfig::quorums`]), the acceptor refuses proposers whose version is older.
//!
//! **The rule.** CASPaxos is safe as long as every prepare quorum a proposer uses intersects
//! every accept quorum of any configuration some proposer might still use (then a prepare sees
//! every chosen value). The prepare and accept sets may differ, and during a change they do.
//! A step starts only after *every* proposer acknowledged the previous one durably, and an
//! acceptor refuses a Prepare/Accept carrying an older version than its own; since every node
//! is both proposer and acceptor, once all nodes hold version `v + 1` no acceptor accepts
//! anything sent under `v`. Hence only two consecutive versions are ever in use together, and
//! it is enough to check the rule for each pair of adjacent steps.
//!
//! **Steps of a change** (`n` = voters before, `maj(k) = ⌊k/2⌋ + 1`):
//!
//! | step | prepare set, quorum | accept set, quorum |
//! |---|---|---|
//! | stable `C` | `C`, `maj(n)` | `C`, `maj(n)` |
//! | `Reserved` (claims the next change; nothing moves) | `C`, `maj(n)` | `C`, `maj(n)` |
//! | `Transition`, grow `C → C+x` | `C`, `maj(n)` | `C+x`, `n − maj(n) + 2` |
//! | `Transition`, shrink `C → C−x` | `C−x`, `maj(n−1)` | `C`, `(n−1) − maj(n−1) + 2` |
//! | `Final` (then the rescan) | `C'`, `maj(|C'|)` | `C'`, `maj(|C'|)` |
//! | stable `C'` (change done) | `C'`, `maj(|C'|)` | `C'`, `maj(|C'|)` |
//!
//! In both directions the transition step uses the *smaller* voter set `S` for prepare (with
//! `maj(|S|)`) and the larger `L = S + x` for accept, with `|S| − maj(|S|) + 2` confirmations:
//! an accept quorum then has at least `|S| − maj(|S|) + 1` members in `S`, one more than the
//! `|S| − maj(|S|)` members of `S` outside any prepare quorum. Growing switches the accept side
//! first, shrinking the prepare side first (the paper's "reverse order"). Concretely:
//!
//! | change | transition: prepare / accept | final |
//! |---|---|---|
//! | 3 → 4 (2F+1 → 2F+2, F=1) | 2 of 3 / 3 of 4 | 3 of 4 / 3 of 4 |
//! | 4 → 5 (2F+2 → 2F+3, F=1) | 3 of 4 / 3 of 5 | 3 of 5 / 3 of 5 |
//! | 5 → 4 | 3 of 4 / 3 of 5 | 3 of 4 / 3 of 4 |
//! | 4 → 3 | 2 of 3 / 3 of 4 | 2 of 3 / 2 of 3 |
//!
//! (Generally 2F+1 → 2F+2: prepare F+1 of 2F+1, accept F+2 of 2F+2, then F+2/F+2 — the paper's
//! steps 2 and 3. 2F+2 → 2F+3: prepare F+2 of 2F+2, accept F+2 of 2F+3, then F+2/F+2.)
//!
//! **Why the rescan.** After the `Final` step every proposer uses the new configuration, and its
//! prepare quorums still intersect the accept quorums of the steps before, so nothing chosen is
//! lost *now*. But a value chosen before the change sits on an accept quorum of the old
//! configuration only, and the *next* change no longer intersects that. The rescan (the paper's
//! "identity transition") reads every key and writes it back unchanged through the final
//! configuration, so at the end of every change every key's value lives on an accept quorum of
//! the configuration in force: the cluster is in the state a freshly started one would be in,
//! which is what the next change's argument starts from. It runs on every voter change (the
//! paper spells it out for growth; shrinking 2F+3 → 2F+2 needs it as much, as a value on F+2 of
//! 2F+3 keeps only F+1 holders).
//!
//! **The removed node.** Its acknowledgements are not waited for (so that a node that is down
//! can be removed): from the transition step on it is in no prepare set, so nothing it still
//! accepts under an old version is ever read, and as a proposer it can assemble no quorum of
//! an old version (every other node holds a newer one and refuses).

use serde::{Deserialize, Serialize};
use synod_core::NodeId;
use synod_core::membership::Configuration;

/// How far a change has got. See the module docs for the quorums of each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// The change is claimed at this version; quorums are still those of the old
    /// configuration. Two coordinators racing for the same version meet here, where their
    /// configurations use identical quorums (see [`CasConfig::supersedes`]).
    Reserved,
    /// The smaller voter set prepares, the larger one accepts.
    Transition,
    /// The new configuration's quorums; the rescan runs at this step.
    Final,
}

/// A change under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The configuration once the change is done.
    pub target: Configuration,
    pub step: Step,
    /// The node where the change was submitted (the tie-break between racing reservations).
    pub coordinator: NodeId,
}

/// What a node holds durably about the cluster's membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasConfig {
    /// Bumped by every step of every change; carried by Prepare, Accept and Drop.
    pub version: u64,
    /// The configuration in force (the old one until the change is done).
    pub stable: Configuration,
    pub change: Option<Change>,
}

/// The acceptor sets and quorum sizes a proposer uses at one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorums {
    pub prepare: Vec<NodeId>,
    pub prepare_quorum: usize,
    pub accept: Vec<NodeId>,
    pub accept_quorum: usize,
}

/// Votes in a majority of `n`.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl Quorums {
    /// One voter set, majorities on both sides.
    pub fn stable(voters: Vec<NodeId>) -> Self {
        let q = majority(voters.len());
        Quorums {
            prepare: voters.clone(),
            prepare_quorum: q,
            accept: voters,
            accept_quorum: q,
        }
    }

    /// The transition step between `small` and `large = small + one node` (module docs).
    pub fn transition(small: Vec<NodeId>, large: Vec<NodeId>) -> Self {
        assert_eq!(small.len() + 1, large.len(), "one voter at a time");
        let q = majority(small.len());
        Quorums {
            accept_quorum: small.len() - q + 2,
            prepare: small,
            prepare_quorum: q,
            accept: large,
        }
    }

    /// Every acceptor of either set, sorted (what a tombstone must reach before it is dropped).
    pub fn everyone(&self) -> Vec<NodeId> {
        let mut all = self.prepare.clone();
        all.extend(&self.accept);
        all.sort_unstable();
        all.dedup();
        all
    }
}

impl CasConfig {
    /// Version 0 of a new cluster.
    pub fn bootstrap(stable: Configuration) -> Self {
        CasConfig {
            version: 0,
            stable,
            change: None,
        }
    }

    /// The sets and quorum sizes a proposer holding this configuration uses.
    pub fn quorums(&self) -> Quorums {
        let old = self.stable.voters();
        let Some(change) = &self.change else {
            return Quorums::stable(old);
        };
        let new = change.target.voters();
        match change.step {
            Step::Reserved => Quorums::stable(old),
            Step::Final => Quorums::stable(new),
            Step::Transition if old.len() < new.len() => Quorums::transition(old, new),
            Step::Transition => Quorums::transition(new, old),
        }
    }

    /// The next step of the change under way (`None` when there is none). A change that keeps
    /// the voters (an address update) goes from `Reserved` straight to done.
    pub fn next(&self) -> Option<CasConfig> {
        let change = self.change.as_ref()?;
        let same_voters = change.target.voters() == self.stable.voters();
        let step = match change.step {
            Step::Reserved if same_voters => None,
            Step::Reserved => Some(Step::Transition),
            Step::Transition => Some(Step::Final),
            Step::Final => None,
        };
        Some(match step {
            Some(step) => CasConfig {
                version: self.version + 1,
                stable: self.stable.clone(),
                change: Some(Change {
                    step,
                    ..change.clone()
                }),
            },
            None => CasConfig {
                version: self.version + 1,
                stable: change.target.clone(),
                change: None,
            },
        })
    }

    /// True when a node holding `other` must replace it by `self`: a higher version, or the
    /// same version claimed by two racing coordinators, where the lower coordinator id wins
    /// (both reservations use the old quorums, so switching between them is harmless).
    pub fn supersedes(&self, other: &CasConfig) -> bool {
        if self.version != other.version {
            return self.version > other.version;
        }
        match (&self.change, &other.change) {
            (Some(a), Some(b)) if a.step == Step::Reserved && b.step == Step::Reserved => {
                a.coordinator < b.coordinator
            }
            _ => false,
        }
    }

    /// Every member of the old and the new configuration: whom this node talks to.
    pub fn members(&self) -> Vec<NodeId> {
        let mut ids = self.stable.ids();
        if let Some(c) = &self.change {
            ids.extend(c.target.ids());
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The node the change under way removes, if it removes one.
    pub fn removed(&self) -> Option<NodeId> {
        let change = self.change.as_ref()?;
        self.stable
            .ids()
            .into_iter()
            .find(|id| !change.target.contains(*id))
    }

    /// What `EngineStatus::configuration` reports: the configuration in force, with the
    /// members of the target added while a change is under way (the node layer must connect
    /// to all of them; the target's details win, so an address update takes effect at once).
    pub fn reported(&self) -> Configuration {
        let mut reported = self.stable.clone();
        if let Some(c) = &self.change {
            let mut members = c.target.members.clone();
            for m in &self.stable.members {
                if !c.target.contains(m.id) {
                    members.push(m.clone());
                }
            }
            members.sort_by_key(|m| m.id);
            reported.members = members;
        }
        reported
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::membership::{Member, MemberChange};

    fn change(from: &[NodeId], c: MemberChange) -> CasConfig {
        let stable = Configuration::of_ids(from);
        let target = stable.apply(&c).expect("valid change");
        CasConfig {
            version: 1,
            stable,
            change: Some(Change {
                target,
                step: Step::Reserved,
                coordinator: 1,
            }),
        }
    }

    fn add(id: NodeId) -> MemberChange {
        MemberChange::Add(Member {
            id,
            ..Member::default()
        })
    }

    /// Every (prepare quorum, accept quorum) pair drawn from `p` and `a` intersects.
    fn intersects(p: &Quorums, a: &Quorums) -> bool {
        // The largest accept quorum avoiding a given prepare quorum takes every accept member
        // outside the prepare set plus those of the prepare set the prepare quorum left out.
        let free_in_prepare = p.prepare.len() - p.prepare_quorum;
        let accept_in_prepare = a.accept.iter().filter(|id| p.prepare.contains(id)).count();
        let outside_prepare = a.accept.len() - accept_in_prepare;
        let avoid = outside_prepare + free_in_prepare.min(accept_in_prepare);
        avoid < a.accept_quorum
    }

    /// Each step, the ones before and after it: all pairs intersect both ways.
    fn check_chain(mut cfg: CasConfig) -> Vec<(usize, usize, usize, usize)> {
        let mut chain = vec![CasConfig::bootstrap(cfg.stable.clone()).quorums()];
        let mut sizes = Vec::new();
        loop {
            let q = cfg.quorums();
            chain.push(q.clone());
            sizes.push((
                q.prepare_quorum,
                q.prepare.len(),
                q.accept_quorum,
                q.accept.len(),
            ));
            match cfg.next() {
                Some(n) => cfg = n,
                None => break,
            }
        }
        for w in chain.windows(2) {
            for x in w {
                for y in w {
                    assert!(intersects(x, y), "{x:?} vs {y:?}");
                }
            }
        }
        sizes
    }

    #[test]
    fn quorum_sizes_per_step_and_every_adjacent_pair_intersects() {
        // (prepare quorum, prepare set, accept quorum, accept set) per step.
        let grow3 = check_chain(change(&[1, 2, 3], add(4)));
        assert_eq!(
            grow3,
            vec![(2, 3, 2, 3), (2, 3, 3, 4), (3, 4, 3, 4), (3, 4, 3, 4)]
        );
        let grow4 = check_chain(change(&[1, 2, 3, 4], add(5)));
        assert_eq!(
            grow4,
            vec![(3, 4, 3, 4), (3, 4, 3, 5), (3, 5, 3, 5), (3, 5, 3, 5)]
        );
        let shrink5 = check_chain(change(&[1, 2, 3, 4, 5], MemberChange::Remove(5)));
        assert_eq!(
            shrink5,
            vec![(3, 5, 3, 5), (3, 4, 3, 5), (3, 4, 3, 4), (3, 4, 3, 4)]
        );
        let shrink4 = check_chain(change(&[1, 2, 3, 4], MemberChange::Remove(1)));
        assert_eq!(
            shrink4,
            vec![(3, 4, 3, 4), (2, 3, 3, 4), (2, 3, 2, 3), (2, 3, 2, 3)]
        );
        for n in 1..=8u64 {
            let ids: Vec<NodeId> = (1..=n).collect();
            check_chain(change(&ids, add(n + 1)));
            if n > 1 {
                check_chain(change(&ids, MemberChange::Remove(n)));
            }
        }
    }

    #[test]
    fn an_address_update_is_one_step_and_racing_reservations_resolve_to_the_lower_id() {
        let mut upd = change(
            &[1, 2, 3],
            MemberChange::Update(Member {
                id: 2,
                peer_addr: "h:1".into(),
                ..Member::default()
            }),
        );
        let done = upd.next().expect("one step");
        assert!(done.change.is_none() && done.version == 2);
        assert_eq!(
            done.stable.member(2).map(|m| m.peer_addr.as_str()),
            Some("h:1")
        );
        let mut other = upd.clone();
        if let Some(c) = other.change.as_mut() {
            c.coordinator = 2;
        }
        assert!(upd.supersedes(&other) && !other.supersedes(&upd));
        upd.change = None;
        assert!(
            !upd.supersedes(&other),
            "same version, not both reservations"
        );
        assert!(done.supersedes(&other));
    }
}
