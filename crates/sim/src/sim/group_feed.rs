//! The partitioned engines' watch feed (`Engine::take_group_watch_events`), checked in every
//! partitioned run — what a node's watch cursors rely on when they follow keys from group to
//! group:
//!
//! * **Agreement.** A group's revision holds the same events on every node that publishes it
//!   (compared by digest, so memory stays one word per revision).
//! * **A move is where the keys left.** Once a node published that keys moved out of a group
//!   after revision `through`, that group publishes no event of those keys above `through`
//!   on that node (until an absorb brings them back); and the group they moved to publishes
//!   none of them at or below `through`. A cursor reads a group up to a move, then the next
//!   group from the revision after it: either slip would lose or repeat a revision's events.
//!
//! * **A history holds each event at its own revision.** A group that took keys in (a split's
//!   new group, a merge's absorbing group) holds their past in its history, where a watch
//!   resumed from before the move and a read at a past revision find it: right after the
//!   move, every event of that history sits at the revision its key names, and each key's
//!   events chain (`prev_kv` is the key as its previous event left it).
//!
//! Both are per node incarnation: a crash ends its watchers, and the restarted node may apply
//! again what it had applied but not made durable. Taking the feed changes nothing the engines
//! decide, so seeds replay as before.

use super::{Engine, NodeId, fail};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use synod_core::kv::{EventKind, KeyRange, KeyValue, RevisionEvents};
use synod_core::{MoveKind, WatchMove};

/// Keys `range` moved out of a group after `through` (or into one, for `arrived`).
type Moved = Vec<(u64, KeyRange)>;

#[derive(Debug, Default)]
pub(super) struct GroupFeed {
    pub on: bool,
    /// (group, revision) → digest of its events and the first node that published it.
    digests: BTreeMap<(u64, u64), (u64, NodeId)>,
    /// Per (node, group): keys that left it, after which revision.
    moved: BTreeMap<(NodeId, u64), Moved>,
    /// Per (node, group): keys a split handed it, after which revision of the parent.
    arrived: BTreeMap<(NodeId, u64), Moved>,
    /// Per (node, group): the last revision it published of each key (a move published
    /// after such a revision must not say the key left before it).
    last: BTreeMap<(NodeId, u64), BTreeMap<Vec<u8>, u64>>,
    /// Revisions checked, for the run's summary.
    pub revisions: u64,
    pub moves: u64,
}

fn digest(r: &RevisionEvents) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for e in &r.events {
        (
            e.kind as u8,
            &e.kv.key,
            &e.kv.value,
            e.kv.mod_revision,
            e.kv.version,
        )
            .hash(&mut h);
    }
    h.finish()
}

fn intersects(a: &KeyRange, b: &KeyRange) -> bool {
    let below_end = |x: &KeyRange, y: &KeyRange| y.end.is_empty() || x.start < y.end;
    below_end(a, b) && below_end(b, a)
}

impl GroupFeed {
    /// Checks the feed if `on` (a partitioned run).
    pub fn new(on: bool) -> Self {
        GroupFeed {
            on,
            ..GroupFeed::default()
        }
    }

    /// Node `node` crashed: its watchers went with it, and what it publishes after its restart
    /// starts a new story (it may publish again what it applied but had not made durable).
    pub fn forget(&mut self, node: NodeId) {
        for map in [&mut self.moved, &mut self.arrived] {
            map.retain(|(n, _), _| *n != node);
        }
        self.last.retain(|(n, _), _| *n != node);
    }

    /// Takes what `engine` (node `node`) published since the last call and checks it.
    pub fn take<E: Engine>(&mut self, node: NodeId, engine: &mut E, failures: &mut Vec<String>) {
        if !self.on {
            return;
        }
        let mut took_keys = Vec::new();
        for batch in engine.take_group_watch_events() {
            for m in &batch.moves {
                match m.kind {
                    MoveKind::Absorbed { .. } => took_keys.push(batch.group),
                    MoveKind::Group(to) => took_keys.push(to),
                    _ => {}
                }
            }
            // In revision order: a move follows the revisions up to its own.
            let mut events = batch.events.iter().peekable();
            for m in &batch.moves {
                while let Some(r) = events.next_if(|r| r.revision <= m.through) {
                    self.check_revision(node, batch.group, r, failures);
                }
                self.record_move(node, batch.group, m, failures);
            }
            for r in events {
                self.check_revision(node, batch.group, r, failures);
            }
        }
        for group in took_keys {
            check_history(node, group, engine, failures);
        }
    }

    /// Once a run converged: the history of every group on `node` (revision closes, splits
    /// and merges all reshape it).
    pub fn check_all<E: Engine>(&self, node: NodeId, engine: &E, failures: &mut Vec<String>) {
        if !self.on {
            return;
        }
        for g in engine.status().groups {
            check_history(node, g.group, engine, failures);
        }
    }

    fn record_move(&mut self, node: NodeId, group: u64, m: &WatchMove, failures: &mut Vec<String>) {
        {
            self.moves += 1;
            let published = self.last.get(&(node, group)).into_iter().flatten();
            let late = published
                .filter(|(k, _)| m.range.contains(k))
                .find(|(_, at)| **at > m.through);
            if let (
                Some((key, at)),
                MoveKind::Group(_) | MoveKind::Gone | MoveKind::Frozen | MoveKind::Away,
            ) = (late, &m.kind)
            {
                fail(
                    failures,
                    format!(
                        "watch feed: n{node} group {} says its keys from {} left after revision                          {}, but it published key {} at revision {at}",
                        group,
                        String::from_utf8_lossy(&m.range.start),
                        m.through,
                        String::from_utf8_lossy(key),
                    ),
                );
            }
            if let MoveKind::Absorbed { from, .. } = m.kind {
                self.check_absorb(node, group, from, m, failures);
            }
            match m.kind {
                MoveKind::Absorbed { .. } => {
                    // The keys are this group's again.
                    if let Some(gone) = self.moved.get_mut(&(node, group)) {
                        gone.retain(|(_, r)| !intersects(r, &m.range));
                    }
                }
                MoveKind::Arrived => {
                    // The keys are this group's again, from a state this member was sent: a
                    // new story for them, as after a crash (placement: a member that left a
                    // group and joined it again may be sent a state behind what it published
                    // before it left; its watchers went on to a remote hub when it left).
                    if let Some(gone) = self.moved.get_mut(&(node, group)) {
                        gone.retain(|(_, r)| !intersects(r, &m.range));
                    }
                    if let Some(last) = self.last.get_mut(&(node, group)) {
                        last.retain(|k, _| !m.range.contains(k));
                    }
                }
                MoveKind::Group(to) => {
                    let entry = (m.through, m.range.clone());
                    self.moved
                        .entry((node, group))
                        .or_default()
                        .push(entry.clone());
                    self.arrived.entry((node, to)).or_default().push(entry);
                }
                MoveKind::Gone | MoveKind::Frozen | MoveKind::Split(_) | MoveKind::Away => self
                    .moved
                    .entry((node, group))
                    .or_default()
                    .push((m.through, m.range.clone())),
            }
        }
    }

    /// Group `group` took in frozen group `from`'s keys at `m.through`: every revision `from`
    /// published of them must be at or below it (a watcher that read `from` to its end goes
    /// on in `group` after the absorb), and `group` publishes none of them at or below it.
    fn check_absorb(
        &mut self,
        node: NodeId,
        group: u64,
        from: u64,
        m: &WatchMove,
        failures: &mut Vec<String>,
    ) {
        let published = self.last.get(&(node, from)).into_iter().flatten();
        let ahead = published
            .filter(|(k, _)| m.range.contains(k))
            .find(|(_, at)| **at > m.through);
        if let Some((key, at)) = ahead {
            fail(
                failures,
                format!(
                    "watch feed: n{node} group {group} took in group {from}'s keys at revision \
                     {}, but group {from} had published key {} at revision {at}: a watcher \
                     following the merge would go back",
                    m.through,
                    String::from_utf8_lossy(key),
                ),
            );
        }
        self.arrived
            .entry((node, group))
            .or_default()
            .push((m.through, m.range.clone()));
    }

    fn check_revision(
        &mut self,
        node: NodeId,
        group: u64,
        r: &RevisionEvents,
        failures: &mut Vec<String>,
    ) {
        self.revisions += 1;
        let d = digest(r);
        match self.digests.get(&(group, r.revision)) {
            Some((seen, first)) if *seen != d => fail(
                failures,
                format!(
                    "watch feed: group {group} revision {} differs between n{first} and n{node}",
                    r.revision
                ),
            ),
            Some(_) => {}
            None => {
                self.digests.insert((group, r.revision), (d, node));
            }
        }
        let gone = self.moved.get(&(node, group));
        let came = self.arrived.get(&(node, group));
        let last = self.last.entry((node, group)).or_default();
        for e in &r.events {
            let key = &e.kv.key;
            last.insert(key.clone(), r.revision);
            if let Some((through, _)) = gone
                .into_iter()
                .flatten()
                .find(|(t, range)| range.contains(key) && r.revision > *t)
            {
                fail(
                    failures,
                    format!(
                        "watch feed: n{node} group {group} published key {} at revision {} \
                         after the key moved out of it at revision {through}",
                        String::from_utf8_lossy(key),
                        r.revision
                    ),
                );
            }
            if let Some((through, _)) = came
                .into_iter()
                .flatten()
                .find(|(t, range)| range.contains(key) && r.revision <= *t)
            {
                fail(
                    failures,
                    format!(
                        "watch feed: n{node} group {group} published key {} at revision {}, \
                         not after revision {through} where it was handed over",
                        String::from_utf8_lossy(key),
                        r.revision
                    ),
                );
            }
        }
    }
}

/// The history of `group` on `node` (a group that just took keys in): every event at the
/// revision its key names, each key's events chained by `prev_kv`.
fn check_history<E: Engine>(node: NodeId, group: u64, engine: &E, failures: &mut Vec<String>) {
    let status = engine.status();
    let Some(g) = status.groups.iter().find(|g| g.group == group) else {
        return; // not started here yet (a split this node has not applied)
    };
    let start = g.compact_revision.max(1);
    let history = match engine.group_watch_history(group, start, usize::MAX) {
        Ok(history) => history,
        // Compaction keeps its own revision: a history that does not reach back to it lost
        // revisions (or holds them at other numbers), and "compacted" would be a wrong answer.
        Err(synod_core::EngineError::Compacted { .. }) => {
            fail(
                failures,
                format!(
                    "history: n{node} group {group} cannot be read from its compaction revision                      {start} (revision {})",
                    g.revision
                ),
            );
            return;
        }
        Err(_) => return,
    };
    let mut state: BTreeMap<&[u8], Option<&KeyValue>> = BTreeMap::new();
    for r in &history {
        for e in &r.events {
            let key = e.kv.key.as_slice();
            let broken = if e.kv.mod_revision != r.revision {
                Some(format!("says revision {}", e.kv.mod_revision))
            } else {
                match state.get(key) {
                    Some(prev) if e.prev_kv.as_ref() != *prev => {
                        Some("does not follow the key's previous event".to_string())
                    }
                    _ => None,
                }
            };
            if let Some(why) = broken {
                fail(
                    failures,
                    format!(
                        "history: n{node} group {group} holds an event of key {} at revision {} \
                         that {why}",
                        String::from_utf8_lossy(key),
                        r.revision,
                    ),
                );
                return;
            }
            state.insert(key, (e.kind == EventKind::Put).then_some(&e.kv));
        }
    }
}
