//! Automatic layout changes: splits by size or by load, and merges of small, quiet ranges that
//! an automatic split made.
//!
//! Policy only. Each change is the command an operator would send (`Op::Split`, `Op::Merge`),
//! proposed by the leader of the group concerned on this member, so everything that makes a
//! split or a merge safe is the commands' own (see the crate docs); this module decides *when*
//! and *where*. It reads only what the local replicas already hold — their status, their
//! layout marks and their recent history — so it needs no messages of its own, and what one
//! member decides from a stale view is at worst a command the group refuses.
//!
//! * **By size** (`auto_split_keys`): a group holding more keys splits at its middle key.
//! * **By load** (`auto_split_writes`): a group that applied more writes per second than the
//!   threshold for [`LOAD_SPLIT_LOOKS`] looks in a row splits where its recent writes divide
//!   in half (read from its own MVCC history), so each side takes about half the load. All
//!   the writes on one key: no split (no cut would spread them).
//! * **By reads** (`auto_split_reads`): the same for linearizable reads, counted by the
//!   group's leader as it confirms their read index (every member's reads pass there). The
//!   keys come from the reads this member served itself (the last [`READ_SAMPLE_KEYS`]): reads
//!   leave no history, and the leader's own share is a sample of where they fall.
//! * **Merges** (`auto_merge_keys`): a range split off *automatically* is merged back into the
//!   range below once both have been quiet (no layout change) for `auto_merge_quiet_looks`
//!   looks (30 s by default),
//!   hold fewer keys than the threshold together and, with load splits on, take less than
//!   half the load threshold together. Ranges an operator made (configured split keys,
//!   `synodctl range split`) are never merged automatically: the operator's layout stands.
//!   The node's configuration keeps `auto_merge_keys` at most half of `auto_split_keys`, so a
//!   merged range is not over the size threshold and does not split again at once.

use crate::Partitioned;
use crate::layout::GroupId;
use std::collections::{BTreeMap, VecDeque};
use synod_core::kv::{Key, KeyRange, MergeRequest, Op, SplitRequest};
use synod_core::{Engine, RequestId};

/// How often (in ticks) the leader looks at its groups' size, load and history.
pub(crate) const LOOK_EVERY_TICKS: u64 = 100;
/// Looks in a row over the write threshold before a group splits by load (5 s at the 10 ms
/// tick): a burst shorter than that is not worth a split.
pub(crate) const LOAD_SPLIT_LOOKS: u32 = 5;
/// Looks after an automatic merge was answered before the next is proposed (one refused,
/// say over the merge size bound, is not asked again at once).
const MERGE_RETRY_LOOKS: u64 = 10;
/// Most recent revisions read to find where a group's writes divide in half.
const LOAD_SAMPLE_REVISIONS: u64 = 4096;
/// Most recent read keys remembered per group, to find where its reads divide in half.
pub(crate) const READ_SAMPLE_KEYS: usize = 1024;
/// Keys sampled evenly from a group's store to find where its keys divide in half.
const SIZE_SAMPLE_KEYS: usize = 1024;
/// A cut moved to a directory's boundary must leave at least this share (1/n) of the sample
/// on each side; otherwise the middle key itself is the cut.
const DIRECTORY_CUT_SHARE_MIN: usize = 8;

/// What this member's automatic changes are doing.
#[derive(Default)]
pub(crate) struct Auto {
    /// Per group: what the last look saw.
    load: BTreeMap<GroupId, Load>,
    /// Per group: the keys of the last reads this member routed to it (read splits on only).
    read_keys: BTreeMap<GroupId, VecDeque<Key>>,
    /// This replica's automatic split still unanswered.
    pub(crate) splitting: Option<RequestId>,
    /// This replica's automatic merge still unanswered.
    pub(crate) merging: Option<RequestId>,
    /// No automatic merge is proposed before this tick (one refused is not asked again at once).
    merge_not_before: u64,
}

#[derive(Clone, Copy, Default, Debug)]
struct Load {
    /// The group's revision at the last look: one more per applied write.
    revision: u64,
    /// Layout changes the group took part in so far (splits, absorbs, a freeze). An absorb
    /// makes the revision jump, so the rate starts over after any change.
    changes: usize,
    /// Writes per second between the last two looks.
    rate: u64,
    /// Looks in a row over the write threshold, and the revision where that run began.
    hot: u32,
    hot_since: u64,
    /// Looks since the group's last layout change.
    quiet: u32,
    /// Reads this member confirmed as the group's leader, at the last look.
    reads: u64,
    /// Reads per second between the last two looks (0 where this member does not lead).
    read_rate: u64,
    /// Looks in a row over the read threshold.
    read_hot: u32,
}

impl Auto {
    /// A split or merge of ours was answered (done or refused): the next may follow.
    pub(crate) fn answered(&mut self, id: RequestId, now: u64) {
        if self.splitting == Some(id) {
            self.splitting = None;
        }
        if self.merging == Some(id) {
            self.merging = None;
            self.merge_not_before = now + MERGE_RETRY_LOOKS * LOOK_EVERY_TICKS;
        }
    }

    pub(crate) fn forget(&mut self, g: GroupId) {
        self.load.remove(&g);
        self.read_keys.remove(&g);
    }

    /// A read of `key` routed to group `g` here: remembered for where a read split cuts.
    pub(crate) fn note_read(&mut self, g: GroupId, key: &[u8]) {
        let keys = self.read_keys.entry(g).or_default();
        if keys.len() == READ_SAMPLE_KEYS {
            keys.pop_front();
        }
        keys.push_back(key.to_vec());
    }
}

impl<E: Engine> Partitioned<E> {
    /// Every [`LOOK_EVERY_TICKS`]: measures the groups' load, then proposes at most one split
    /// and one merge.
    pub(crate) fn look(&mut self) {
        self.measure_load();
        self.auto_split();
        // Placed groups do not merge (`placement.rs`): the halves may live on other members.
        if !self.placed() {
            self.auto_merge();
        }
    }

    fn measure_load(&mut self) {
        let per_look_ms = LOOK_EVERY_TICKS * self.base.tick_ms.max(1);
        let threshold = self.base.auto_split_writes;
        let read_threshold = self.base.auto_split_reads;
        let auto = &mut self.auto;
        auto.load.retain(|g, _| self.groups.contains_key(g));
        auto.read_keys.retain(|g, _| self.groups.contains_key(g));
        let data = self.groups.iter().filter(|(g, _)| **g != crate::META_GROUP);
        for (g, e) in data {
            // Revisions closed without a write (`close.rs`) are no load.
            let revision = e.status().revision;
            let revision = revision - e.revisions_closed().min(revision);
            let reads = e.reads_led();
            let changes = e.range_state().map_or(0, |r| {
                r.splits.len() + r.absorbed.len() + usize::from(r.frozen.is_some())
            });
            let fresh = Load {
                revision,
                changes,
                reads,
                ..Load::default()
            };
            let seen = auto.load.entry(*g).or_insert(fresh);
            if seen.changes != changes || revision < seen.revision || reads < seen.reads {
                *seen = fresh;
                continue;
            }
            seen.read_rate = (reads - seen.reads) * 1000 / per_look_ms;
            seen.reads = reads;
            if read_threshold > 0 && seen.read_rate > read_threshold {
                seen.read_hot += 1;
            } else {
                seen.read_hot = 0;
            }
            seen.rate = (revision - seen.revision) * 1000 / per_look_ms;
            seen.quiet = seen.quiet.saturating_add(1);
            if threshold > 0 && seen.rate > threshold {
                if seen.hot == 0 {
                    seen.hot_since = seen.revision;
                }
                seen.hot += 1;
            } else {
                seen.hot = 0;
            }
            seen.revision = revision;
        }
    }

    /// Splits one group this replica leads that is over the size or the load threshold: at
    /// its middle key, or where its recent writes divide in half. One split in flight at a
    /// time, none past [`crate::GROUPS_MAX`].
    fn auto_split(&mut self) {
        // Placed, this member hosts some of the groups: its layout names the others it learned
        // of (`learned.rs`).
        let groups = match self.placed() {
            true => self.layout.groups(),
            false => self.data_groups().count(),
        };
        if groups >= crate::GROUPS_MAX || self.auto.splitting.is_some() {
            return;
        }
        let first = self.layout.ids().next();
        let (over_keys, over_load) = (self.base.auto_split_keys, self.base.auto_split_writes);
        let over_reads = self.base.auto_split_reads;
        let mut due = None;
        let data = self.groups.iter().filter(|(g, _)| **g != crate::META_GROUP);
        for (g, e) in data {
            let st = e.status();
            let Some(range) = e.range_state() else {
                continue;
            };
            if st.leader != Some(self.id) || range.frozen.is_some() {
                continue;
            }
            if self.placed() && Some(*g) == first {
                continue; // the first range stays whole when placed (`placement.rs`)
            }
            if over_keys > 0 && st.keys > over_keys {
                let sample = e.key_sample(SIZE_SAMPLE_KEYS);
                due = middle_cut(sample.iter().map(Vec::as_slice).collect(), &range.range)
                    .map(|k| (*g, k));
            } else if over_load > 0
                && let Some(load) = self.auto.load.get_mut(g)
                && load.hot >= LOAD_SPLIT_LOOKS
            {
                due = load_split_key(e, load.hot_since, &range.range).map(|k| (*g, k));
                // Found or not (one hot key), look again only after another run.
                load.hot = 0;
            } else if over_reads > 0
                && let Some(load) = self.auto.load.get_mut(g)
                && load.read_hot >= LOAD_SPLIT_LOOKS
            {
                let sample = self.auto.read_keys.get(g).into_iter().flatten();
                due =
                    middle_cut(sample.map(Vec::as_slice).collect(), &range.range).map(|k| (*g, k));
                load.read_hot = 0;
            }
            if due.is_some() {
                break;
            }
        }
        if let Some((g, at)) = due {
            self.auto.splitting = Some(self.propose(g, Op::Split(SplitRequest { at })));
        }
    }

    /// Merges one range this replica leads, split off automatically, into the range below
    /// once both are quiet, small and (with load splits on) cool. One merge in flight.
    fn auto_merge(&mut self) {
        let most_keys = self.base.auto_merge_keys;
        if most_keys == 0 || self.auto.merging.is_some() || self.ticks < self.auto.merge_not_before
        {
            return;
        }
        let load_threshold = self.base.auto_split_writes;
        let read_threshold = self.base.auto_split_reads;
        let quiet_looks = self.base.auto_merge_quiet_looks;
        let quiet = |g: &GroupId| {
            self.auto
                .load
                .get(g)
                .filter(|l| l.quiet >= quiet_looks)
                .copied()
        };
        let mut due = None;
        for (up, e) in self.groups.iter().filter(|(g, _)| **g != crate::META_GROUP) {
            let Some(range) = e.range_state() else {
                continue;
            };
            let st = e.status();
            if !range.auto || range.frozen.is_some() || st.leader != Some(self.id) {
                continue;
            }
            let Some(lower) = self.layout.below(*up) else {
                continue;
            };
            let Some(below) = self.groups.get(&lower) else {
                continue;
            };
            if below.range_state().is_none_or(|r| r.frozen.is_some()) {
                continue;
            }
            let (Some(a), Some(b)) = (quiet(up), quiet(&lower)) else {
                continue;
            };
            let small = st.keys + below.status().keys < most_keys;
            // The range below's reads count only where this member leads it too: they are
            // counted by each group's leader.
            let cool = (load_threshold == 0 || (a.rate + b.rate) * 2 < load_threshold)
                && (read_threshold == 0 || (a.read_rate + b.read_rate) * 2 < read_threshold);
            if small && cool {
                due = Some((*up, range.range.start.clone()));
                break;
            }
        }
        if let Some((up, at)) = due {
            self.auto.merging = Some(self.propose(up, Op::Merge(MergeRequest { at })));
        }
    }

    /// Submits `op` to group `g` here as this engine's own request; its id.
    fn propose(&mut self, g: GroupId, op: Op) -> RequestId {
        let request = self.own.request(op);
        let id = request.id;
        if let Some(group) = self.groups.get_mut(&g) {
            group.submit(request);
        }
        id
    }
}

/// Where `group`'s writes since revision `since` (at most the last
/// [`LOAD_SAMPLE_REVISIONS`]) divide in half ([`middle_cut`]); `None` as well when the
/// history is gone.
fn load_split_key<E: Engine>(group: &E, since: u64, range: &KeyRange) -> Option<Key> {
    let st = group.status();
    let from = since
        .max(st.revision.saturating_sub(LOAD_SAMPLE_REVISIONS))
        .max(st.compact_revision)
        + 1;
    let history = group
        .watch_history(from, LOAD_SAMPLE_REVISIONS as usize)
        .ok()?;
    let keys = history
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.kv.key.as_slice()))
        .collect();
    middle_cut(keys, range)
}

/// Where the requests on `keys` (one entry per request, or a sample of a store's keys) that
/// fall in `range` divide in half: the middle key, or the next key above it when the middle
/// one begins the range — moved to the nearest boundary of a directory around it
/// ([`directory_cut`]) when one divides them nearly as well. `None` when they all hit one key
/// (no cut spreads those) or none is in the range.
fn middle_cut(keys: Vec<&[u8]>, range: &KeyRange) -> Option<Key> {
    let mut keys: Vec<&[u8]> = keys.into_iter().filter(|k| range.contains(k)).collect();
    keys.sort_unstable();
    if keys.first() == keys.last() {
        return None;
    }
    let middle = keys[keys.len() / 2];
    let cut = match range.splits_at(middle) {
        true => middle,
        false => keys
            .iter()
            .copied()
            .find(|k| *k > middle && range.splits_at(k))?,
    };
    Some(directory_cut(cut, &keys, range).unwrap_or_else(|| cut.to_vec()))
}

/// A cut at the start or the end of a `/`-directory holding `cut`, the deepest first, that
/// leaves at least 1/[`DIRECTORY_CUT_SHARE_MIN`] of the sorted `keys` on each side (the
/// better balanced of the two); `None` if no directory boundary does.
///
/// Why: etcd's lock and election recipes keep their contenders under one prefix (`name/` +
/// lease id) and find who is next with a read over that prefix sorted or filtered by create
/// revision — which a partitioned cluster refuses over several groups (two groups can each
/// have a write at one revision). A split inside such a prefix would make every lock on it
/// fail; a cut at a directory boundary keeps the directory (and every one below it) whole.
fn directory_cut(cut: &[u8], keys: &[&[u8]], range: &KeyRange) -> Option<Key> {
    let n = keys.len();
    let least = n.div_ceil(DIRECTORY_CUT_SHARE_MIN).max(1);
    let below = |at: &[u8]| keys.partition_point(|k| *k < at);
    let fits = |at: &[u8]| range.splits_at(at) && below(at) >= least && n - below(at) >= least;
    let mut end = cut.len();
    while let Some(slash) = cut[..end].iter().rposition(|b| *b == b'/') {
        let dir = &cut[..=slash];
        let best = [dir.to_vec(), synod_core::kv::prefix_end(dir)]
            .into_iter()
            .filter(|at| fits(at))
            .min_by_key(|at| below(at).abs_diff(n / 2));
        if best.is_some() {
            return best;
        }
        end = slash;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut_of(keys: &[&str], range: &KeyRange) -> Option<String> {
        let keys = keys.iter().map(|k| k.as_bytes()).collect();
        middle_cut(keys, range).map(|k| String::from_utf8_lossy(&k).into_owned())
    }

    #[test]
    fn a_cut_keeps_the_directory_of_the_middle_key_whole() {
        let all = KeyRange::default();
        // The middle key is a lock contender: the cut goes before /lock/, the better half.
        let keys = [
            "/a/1", "/a/2", "/a/3", "/lock/61", "/lock/62", "/lock/63", "/z/1", "/z/2",
        ];
        assert_eq!(cut_of(&keys, &all).as_deref(), Some("/lock/"));
        // Closer to the end of the directory: the cut goes after it.
        let keys = [
            "/a/1", "/lock/61", "/lock/62", "/lock/63", "/z/1", "/z/2", "/z/3",
        ];
        assert_eq!(cut_of(&keys, &all).as_deref(), Some("/lock0"));
        // Nested: the deepest directory that divides them well enough.
        let keys = [
            "/s/a/1", "/s/a/2", "/s/b/1", "/s/b/2", "/s/b/3", "/s/c/1", "/s/c/2",
        ];
        assert_eq!(cut_of(&keys, &all).as_deref(), Some("/s/b/"));
    }

    #[test]
    fn without_a_balanced_directory_boundary_the_middle_key_is_the_cut() {
        let all = KeyRange::default();
        // Keys without directories.
        assert_eq!(cut_of(&["a", "b", "c", "d"], &all).as_deref(), Some("c"));
        // One big directory with one key beside it: its boundary leaves too little below.
        let mut keys = vec!["/a"];
        let many: Vec<String> = (0..20).map(|i| format!("/big/{i:02}")).collect();
        keys.extend(many.iter().map(String::as_str));
        assert_eq!(cut_of(&keys, &all).as_deref(), Some("/big/09"));
        // The range is inside one directory: its boundaries do not split it.
        let range = KeyRange {
            start: b"/lock/".to_vec(),
            end: b"/lock0".to_vec(),
        };
        let keys = ["/lock/1", "/lock/2", "/lock/3", "/lock/4"];
        assert_eq!(cut_of(&keys, &range).as_deref(), Some("/lock/3"));
        // Every request on one key: no cut.
        assert_eq!(cut_of(&["/k", "/k"], &all), None);
    }
}
