//! The partitioned engine's watch feed: every group's revision stream, with the changes of the
//! keys each stream covers, for the node's watch layer (`Engine::take_group_watch_events`).
//!
//! Revisions are per group, so a watch lives on one group's stream at a time. A group's
//! replica reports the moves it applies itself — a split (turned here into the new group's
//! id: the watcher follows its keys there, at the same revision numbers, since the new group
//! goes on from its parent's revision), a freeze for a merge and the absorb that takes the
//! frozen keys in (naming the frozen group, so its watchers follow them) — each at the revision
//! where it happened. What a replica cannot report, because it did not apply it (a snapshot
//! install that shrank its range, a merge this member learned of from the group below only),
//! is found here by comparing the keys each stream covered after the moves already published
//! with the keys its group holds now: keys lost go out as a `Gone` move (their watchers are
//! cancelled, to watch again), never silently; keys gained as an `Arrived` one. A group retired by a merge publishes what
//! it still had before it is dropped.

use crate::layout::{GroupId, child_id};
use std::collections::BTreeMap;
use synod_core::kv::KeyRange;
use synod_core::{Engine, GroupEvents, MoveKind, WatchMove};

/// What the watch feed remembers between two takes.
#[derive(Debug, Default)]
pub(crate) struct WatchFeed {
    /// Switched on by the first take: before it, nothing is collected.
    pub on: bool,
    /// Per group: the keys its stream covers after the moves published so far.
    covered: BTreeMap<GroupId, KeyRange>,
    /// Events and moves of groups retired since the last take, published first.
    retired: Vec<GroupEvents>,
    /// Groups this member left (placement: moved elsewhere), whose keys arrive again in its
    /// stream if it joins the group again.
    departed: std::collections::BTreeSet<GroupId>,
    /// Planted bug `PartitionWatchMoveEarly`.
    pub bug_move_early: bool,
}

/// The keys a group holds now: none while frozen for a merge, or before its state arrived.
fn held<E: Engine>(engine: &E) -> Option<&KeyRange> {
    let state = engine.range_state()?;
    let r = &state.range;
    (state.frozen.is_none() && !holds_nothing(r)).then_some(r)
}

fn holds_nothing(r: &KeyRange) -> bool {
    !r.end.is_empty() && r.end <= r.start
}

/// The keys of `before` that `after` does not hold, as one range. A group's range only ever
/// loses a suffix (a split keeps the lower half) or all of it.
fn lost(before: &KeyRange, after: Option<&KeyRange>) -> Option<KeyRange> {
    if holds_nothing(before) {
        return None;
    }
    let Some(after) = after else {
        return Some(before.clone());
    };
    let shorter = !after.end.is_empty() && (before.end.is_empty() || after.end < before.end);
    debug_assert_eq!(before.start, after.start, "a group's range keeps its start");
    shorter.then(|| KeyRange::new(after.end.clone(), before.end.clone()))
}

/// The keys `covered` after `moves` (a move that hands keys on shrinks it; an absorb grows it;
/// a freeze empties it, which `take` reads as "nothing more to lose").
fn after_moves(mut covered: KeyRange, moves: &[WatchMove]) -> KeyRange {
    for m in moves {
        match m.kind {
            MoveKind::Absorbed { .. } | MoveKind::Arrived => covered.end = m.range.end.clone(),
            _ if m.range.start <= covered.start => return KeyRange::none_at(&covered.start),
            _ => covered.end = m.range.start.clone(),
        }
    }
    covered
}

impl WatchFeed {
    /// Group `g`'s events and moves since the last take, with a `Gone` move for any keys it
    /// lost without reporting a move.
    pub fn take<E: Engine>(&mut self, g: GroupId, engine: &mut E) -> Option<GroupEvents> {
        let mut out = GroupEvents {
            group: g,
            ..GroupEvents::default()
        };
        for part in engine.take_group_watch_events() {
            out.events.extend(part.events);
            out.moves.extend(part.moves);
        }
        for m in &mut out.moves {
            if let MoveKind::Split(mark) = &m.kind {
                m.kind = MoveKind::Group(child_id(g, mark));
                if self.bug_move_early {
                    m.through = m.through.saturating_sub(1);
                }
            }
        }
        let now = held(engine);
        let covered = self.covered.get(&g);
        if covered.map(Some) == Some(now) && out.moves.is_empty() {
            // The common case: no change of keys.
            return (!out.events.is_empty()).then_some(out);
        }
        if let Some(before) = covered.map(|c| after_moves(c.clone(), &out.moves)) {
            if let Some(range) = lost(&before, now) {
                out.moves.push(WatchMove {
                    through: engine.status().revision,
                    range,
                    kind: MoveKind::Gone,
                });
            }
            if let Some(range) = now.and_then(|now| lost(now, Some(&before))) {
                out.moves.push(WatchMove {
                    through: engine.status().revision,
                    range,
                    kind: MoveKind::Arrived,
                });
            }
        }
        if let Some(range) = now.filter(|_| covered.is_none() && self.departed.contains(&g)) {
            // Joined again (`moves.rs`): its keys come back from the state it was sent.
            out.moves.push(WatchMove {
                through: engine.status().revision,
                range: range.clone(),
                kind: MoveKind::Arrived,
            });
            self.departed.remove(&g);
        }
        match now.cloned() {
            Some(r) => self.covered.insert(g, r),
            None => self.covered.remove(&g),
        };
        (!out.events.is_empty() || !out.moves.is_empty()).then_some(out)
    }

    /// Group `g` is about to be dropped (merged away): what it still has to publish, and a
    /// `Gone` move for whatever keys its stream still covered.
    pub fn retire<E: Engine>(&mut self, g: GroupId, engine: &mut E) {
        self.drop_group(g, engine, MoveKind::Gone);
    }

    /// What group `g` still has to publish, and a `kind` move for whatever keys its stream
    /// still covered.
    fn drop_group<E: Engine>(&mut self, g: GroupId, engine: &mut E, kind: MoveKind) {
        let revision = engine.status().revision;
        let mut out = self.take(g, engine).unwrap_or(GroupEvents {
            group: g,
            ..GroupEvents::default()
        });
        if let Some(range) = self.covered.remove(&g).filter(|r| !holds_nothing(r)) {
            out.moves.push(WatchMove {
                through: revision,
                range,
                kind,
            });
        }
        if !out.events.is_empty() || !out.moves.is_empty() {
            self.retired.push(out);
        }
    }

    /// Group `g` left this member (placement: its replica moved elsewhere): as
    /// [`WatchFeed::retire`], but `Away` — its watchers read on at its hosts — and its keys
    /// arrive again if it joins the group again.
    pub fn depart<E: Engine>(&mut self, g: GroupId, engine: &mut E) {
        self.drop_group(g, engine, MoveKind::Away);
        self.departed.insert(g);
    }

    /// What retired groups left, published before the live groups' batch.
    pub fn take_retired(&mut self) -> Vec<GroupEvents> {
        std::mem::take(&mut self.retired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: &str, end: &str) -> KeyRange {
        KeyRange::new(start, end)
    }

    #[test]
    fn a_range_loses_a_suffix_or_everything() {
        assert_eq!(lost(&r("a", ""), Some(&r("a", "m"))), Some(r("m", "")));
        assert_eq!(lost(&r("a", "z"), Some(&r("a", "m"))), Some(r("m", "z")));
        assert_eq!(lost(&r("a", "m"), Some(&r("a", "z"))), None, "grew");
        assert_eq!(lost(&r("a", "m"), None), Some(r("a", "m")));
        assert_eq!(
            lost(&KeyRange::none_at(b"a"), None),
            None,
            "nothing to lose"
        );
    }

    #[test]
    fn moves_shrink_and_grow_what_a_stream_covers() {
        let mv = |through, range, kind| WatchMove {
            through,
            range,
            kind,
        };
        let split = mv(5, r("m", ""), MoveKind::Group(9));
        assert_eq!(
            after_moves(r("a", ""), std::slice::from_ref(&split)),
            r("a", "m")
        );
        let absorb = mv(8, r("m", "t"), MoveKind::Absorbed { before: 6, from: 4 });
        assert_eq!(after_moves(r("a", ""), &[split, absorb]), r("a", "t"));
        let freeze = mv(3, r("a", "m"), MoveKind::Frozen);
        assert_eq!(after_moves(r("a", "m"), &[freeze]), KeyRange::none_at(b"a"));
    }
}
