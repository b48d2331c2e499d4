//! The range directory: which group owns which range, replicated by a group of its own.
//!
//! Step 1 of decision 0005 (docs/decisions/0005-placement-and-range-directory.md). The
//! directory is the *meta group*: one more instance of the engine on every member, under the
//! reserved id [`META_GROUP`], outside the layout (it owns no user key, no client request is
//! routed to it, and closes, watches, leases, backups, hashes and automatic splits leave it
//! out). Its store maps each range's first key (under [`PREFIX`]) to the range's entry.
//!
//! **Who writes it.** The leader of each group records the group's own range, as the group's
//! applied state says it is, whenever this member's copy of the directory says otherwise. An
//! entry holds the group, its range's *generation* (`RangeState::generation`: for any one
//! key, its owner's generation grows with every split or merge that changes the owner), and
//! its configuration version and voters (where its keys are served). A
//! record is one transaction on the meta group that
//!
//! - puts the range's first key and deletes every entry inside the range (the groups it
//!   absorbed, or a stale split);
//! - keeps the keys after the range as they were: where no entry begins at the range's end, it
//!   puts one there naming whoever held that key before ([`DirectoryEntry::NOBODY`] if none);
//! - is made only if every key of the range is held in the copy by an older generation (or
//!   nobody, or this group at this generation under an older or the same configuration), and
//!   holds only if no entry it read changed and none was added since the copy
//!   was read (compares on the entries' mod revisions).
//!
//! So a record from a leader that has not applied its group's split or freeze yet changes
//! nothing: on every key it would take back, a newer group recorded a higher generation, or
//! recorded since the copy was read (its transaction then fails, and the copy is read again).
//! For every key the directory's generation only grows, which the simulator checks on every
//! member's copy in meta-log order (planted bug: `partition-directory-record-unguarded`).
//!
//! A split is recorded by the new group's leader, its parent's shrinking by the parent's; a
//! merge by the absorbing group's leader. The transaction goes to this member's replica of the
//! meta group, which forwards it to the meta leader like any write. It is made again, an
//! election timeout after an answer, until this member's copy shows it — so the directory
//! converges to the layout the groups applied once the cluster is quiet, which the simulator
//! checks after every run with the directory on.
//!
//! **What it may be meanwhile.** Behind (a split applied and not recorded yet), never going
//! back. Nothing routes by the directory yet — each member routes by the layout its own
//! replicas applied — and when placement does (step 2 of decision 0005), a stale entry costs a
//! hop, never a wrong answer: the group that applies a command checks its own range
//! (`WrongGroup`).

use crate::Partitioned;
use crate::layout::{CHILD_ID_BASE, GroupId};
use std::collections::BTreeMap;
use synod_core::kv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, Key, KeyRange, Op, PutRequest,
    RangeRequest, ResponseBody, TxnOp, TxnRequest,
};
use synod_core::{DirectoryEntry, DirectoryStatus, Engine, NodeId, RequestId};

/// The meta group's id: far above every split-off group's ([`CHILD_ID_BASE`] and its hashes
/// below `2 * CHILD_ID_BASE`), so no layout ever names it.
pub const META_GROUP: GroupId = 1 << 60;
/// Every directory entry's key: this prefix, then the range's first key.
const PREFIX: &[u8] = b"r/";
/// The end of the prefix's keys (`r/` + 1).
const PREFIX_END: &[u8] = b"r0";
/// How often (in ticks) the leaders compare their groups' ranges with the directory.
pub(crate) const RECORD_EVERY_TICKS: u64 = 10;

/// One entry of this member's copy, with the meta store's mod revision of its key (what a
/// record's compares check is unchanged).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Copied {
    entry: DirectoryEntry,
    mod_revision: u64,
}

/// A leader's writes to the meta group, per group: the one still unanswered, and the tick
/// before which none is made again (an election timeout after an answer).
#[derive(Default)]
pub(crate) struct Paced(BTreeMap<GroupId, (Option<RequestId>, u64)>);

impl Paced {
    /// Write `id` for group `g` was made.
    pub(crate) fn made(&mut self, g: GroupId, id: RequestId) {
        self.0.insert(g, (Some(id), 0));
    }

    /// Write `id` was answered (either way): none is made again before `retry_at`.
    pub(crate) fn answered(&mut self, id: RequestId, retry_at: u64) {
        for (pending, not_before) in self.0.values_mut() {
            if *pending == Some(id) {
                *pending = None;
                *not_before = retry_at;
            }
        }
    }

    /// Whether a write for group `g` may be made at tick `now`.
    pub(crate) fn due(&self, g: GroupId, now: u64) -> bool {
        self.0
            .get(&g)
            .is_none_or(|(pending, not_before)| pending.is_none() && now >= *not_before)
    }

    /// Keeps the groups `keep` says.
    pub(crate) fn retain(&mut self, keep: impl Fn(&GroupId) -> bool) {
        self.0.retain(|g, _| keep(g));
    }
}

/// The recording side: per group, this leader's record still unanswered and the tick before
/// which it is not made again.
#[derive(Default)]
pub(crate) struct Recording {
    pending: Paced,
    /// This member's copy of the directory, read again only when the meta group's replica
    /// applied something since (`copy_at`, its applied index then; `copy_revision`, the meta
    /// store's revision then): the status that shows it is taken after every batch.
    copy: Vec<Copied>,
    copy_at: Option<u64>,
    copy_revision: u64,
    /// Planted bug `PartitionSplitNeverRecorded`.
    pub(crate) bug_skip_children: bool,
    pub(crate) bugs: Bugs,
}

/// Planted bugs of the record (see [`synod_core::PlantedBug`]).
#[derive(Clone, Copy, Default)]
pub(crate) struct Bugs {
    /// `PartitionDirectoryRecordUnguarded`: no compares, so a record planned from a copy that
    /// a newer record has changed since still holds.
    pub(crate) unguarded: bool,
    /// `PartitionDirectoryAnyGeneration`: recorded over owners of any generation, so a leader
    /// that has not applied its group's split or freeze yet takes keys back.
    pub(crate) any_generation: bool,
}

impl Recording {
    /// Group `g` left this member (`moves.rs`): no record of it is made here any more.
    pub(crate) fn forget(&mut self, g: GroupId) {
        self.pending.retain(|x| *x != g);
    }

    /// Our record `id` was answered (either way): made again no sooner than `retry_at` if
    /// this member's copy still differs then.
    pub(crate) fn answered(&mut self, id: RequestId, retry_at: u64) {
        self.pending.answered(id, retry_at);
    }

    fn due(&self, g: GroupId, now: u64) -> bool {
        self.pending.due(g, now)
    }
}

fn entry_key(start: &[u8]) -> Key {
    [PREFIX, start].concat()
}

/// The directory key where the entries of a range ending at `end` stop.
fn entries_end(end: &[u8]) -> Key {
    match end.is_empty() {
        true => PREFIX_END.to_vec(),
        false => entry_key(end),
    }
}

/// Between an entry's voters and its learners (never a member id).
const LEARNERS_FOLLOW: u64 = u64::MAX;

/// An entry's value: group, generation and configuration version (8 bytes each, big-endian),
/// then each voter's id (8 bytes each), then — if it has learners — [`LEARNERS_FOLLOW`] and
/// each learner's id.
fn encode_entry(e: &DirectoryEntry) -> Vec<u8> {
    let words = [e.group, e.generation, e.config_version].into_iter();
    let learners = match e.learners.is_empty() {
        true => Vec::new(),
        false => [LEARNERS_FOLLOW]
            .into_iter()
            .chain(e.learners.iter().copied())
            .collect(),
    };
    words
        .chain(e.members.iter().copied())
        .chain(learners)
        .flat_map(u64::to_be_bytes)
        .collect()
}

/// The entry for `start` from its value. An entry that does not decode reads as nobody's, so
/// that it is recorded over — and so does one of 8 or 16 bytes, written before generations or
/// configurations: its generation means nothing next to today's (every range read its state
/// back as generation 0), so a live group could never record over it otherwise.
fn decode_entry(start: &[u8], value: &[u8]) -> DirectoryEntry {
    let words: Vec<u64> = value
        .chunks_exact(8)
        .filter_map(|w| w.try_into().ok().map(u64::from_be_bytes))
        .collect();
    let whole = value.len().is_multiple_of(8) && words.len() >= 3;
    let word = |i: usize| words.get(i).copied().unwrap_or(0);
    DirectoryEntry {
        start: start.to_vec(),
        group: if whole {
            word(0)
        } else {
            DirectoryEntry::NOBODY
        },
        generation: if whole { word(1) } else { 0 },
        config_version: if whole { word(2) } else { 0 },
        members: if whole {
            (words.iter().skip(3))
                .take_while(|w| **w != LEARNERS_FOLLOW)
                .copied()
                .collect()
        } else {
            Vec::new()
        },
        learners: if whole {
            (words.iter().skip(3))
                .skip_while(|w| **w != LEARNERS_FOLLOW)
                .skip(1)
                .copied()
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn put(e: &DirectoryEntry) -> TxnOp {
    TxnOp::Put(PutRequest::new(entry_key(&e.start), encode_entry(e)))
}

/// Deletes every entry strictly inside `range` (its first key's own is put over instead:
/// never the same key twice in one Txn).
fn delete_inside(range: &KeyRange) -> TxnOp {
    let mut after_first = entry_key(&range.start);
    after_first.push(0);
    TxnOp::DeleteRange(DeleteRangeRequest {
        key: after_first,
        range_end: entries_end(&range.end),
        prev_kv: false,
    })
}

/// The transaction that makes the directory say `range` is `want`'s, from a copy read at
/// meta revision `revision` (see the module docs) — `None` if the copy says so already, or
/// holds one of the range's keys for a generation not older than `want`'s (this leader is
/// behind its group: recording would take keys back from a newer owner).
fn record(
    copy: &[Copied],
    revision: u64,
    range: &KeyRange,
    want: &DirectoryEntry,
    bugs: Bugs,
) -> Option<Op> {
    let guarded = !bugs.unguarded;
    let inside = |c: &&Copied| {
        c.entry.start > range.start && (range.end.is_empty() || c.entry.start < range.end)
    };
    // The entry that holds the range's first key, and those beginning inside it: every
    // entry that holds one of its keys now.
    let holder = copy.iter().rfind(|c| c.entry.start <= range.start);
    let holders: Vec<&Copied> = holder
        .into_iter()
        .chain(copy.iter().filter(inside))
        .collect();
    if let [only] = holders[..]
        && only.entry == *want
    {
        return None;
    }
    let older = |e: &DirectoryEntry| {
        e.group == DirectoryEntry::NOBODY
            || e.generation < want.generation
            || (e.group == want.group
                && e.generation == want.generation
                && e.config_version <= want.config_version)
    };
    if !bugs.any_generation && !holders.iter().all(|c| older(&c.entry)) {
        return None;
    }
    let mut success = vec![delete_inside(range), put(want)];
    let ends_at_entry = copy.iter().any(|c| c.entry.start == range.end);
    if !range.end.is_empty() && !ends_at_entry {
        // Whoever held the range's end before holds it still.
        let before = holders.last().map(|c| c.entry.clone());
        let nobody = DirectoryEntry {
            group: DirectoryEntry::NOBODY,
            ..DirectoryEntry::default()
        };
        let end = DirectoryEntry {
            start: range.end.clone(),
            ..before.unwrap_or(nobody)
        };
        success.push(put(&end));
    }
    // The entries read: from the holder of the first key (or the directory's first key) to the
    // range's end, that one included.
    let from = holder.map_or(PREFIX.to_vec(), |c| entry_key(&c.entry.start));
    let to = match range.end.is_empty() {
        true => PREFIX_END.to_vec(),
        false => [entry_key(&range.end), vec![0]].concat(),
    };
    let read = |c: &&Copied| {
        let k = entry_key(&c.entry.start);
        k >= from && k < to
    };
    let mut compare: Vec<Compare> = copy
        .iter()
        .filter(|c| guarded && read(c))
        .map(|c| Compare {
            key: entry_key(&c.entry.start),
            range_end: Vec::new(),
            target: CompareTarget::ModRevision(c.mod_revision),
            result: CompareResult::Equal,
        })
        .collect();
    compare.extend(guarded.then_some(Compare {
        key: from,
        range_end: to,
        target: CompareTarget::ModRevision(revision + 1),
        result: CompareResult::Less,
    }));
    Some(Op::Txn(TxnRequest {
        compare,
        success,
        failure: Vec::new(),
    }))
}

impl<E: Engine> Partitioned<E> {
    /// Where this member's copy of the directory says group `g` lives: the configuration
    /// version and voters of its newest record, if any.
    pub(crate) fn recorded_hosts(&self, g: GroupId) -> Option<(u64, Vec<synod_core::NodeId>)> {
        self.newest_record(g)
            .map(|e| (e.config_version, e.members.clone()))
    }

    /// Where this member's copy of the directory says group `g` lives: the voters and the
    /// learners of its newest record, if any.
    pub(crate) fn recorded_members(&self, g: GroupId) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
        self.newest_record(g)
            .map(|e| (e.members.clone(), e.learners.clone()))
    }

    /// Whether this member's copy of the directory records group `g` at configuration version
    /// `version` or later without this member, as a voter or a learner.
    pub(crate) fn recorded_without_me(&self, g: GroupId, version: u64) -> bool {
        self.recorded_version_without_me(g)
            .is_some_and(|v| v >= version)
    }

    /// The configuration version of this member's copy's newest record of group `g`, if that
    /// record lists this member neither as a voter nor as a learner.
    pub(crate) fn recorded_version_without_me(&self, g: GroupId) -> Option<u64> {
        let me = self.id;
        self.newest_record(g)
            .filter(|e| !e.members.contains(&me) && !e.learners.contains(&me))
            .map(|e| e.config_version)
    }

    /// The meta group's applied index this member's copy of the directory was read at.
    pub(crate) fn directory_copied_at(&self) -> Option<u64> {
        self.directory.copy_at
    }

    /// Every entry of this member's copy of the directory.
    pub(crate) fn recorded_entries(&self) -> impl Iterator<Item = &DirectoryEntry> + '_ {
        self.directory.copy.iter().map(|c| &c.entry)
    }

    fn newest_record(&self, g: GroupId) -> Option<&DirectoryEntry> {
        (self.directory.copy.iter())
            .filter(|c| c.entry.group == g)
            .max_by_key(|c| (c.entry.generation, c.entry.config_version))
            .map(|c| &c.entry)
    }

    /// Reads this member's copy of the directory again if its meta replica applied something
    /// since the last read.
    pub(crate) fn refresh_directory(&mut self) {
        let Some(meta) = self.groups.get(&META_GROUP) else {
            return;
        };
        let at = meta.status().applied_index;
        if self.directory.copy_at == Some(at) {
            return;
        }
        let op = Op::Range(RangeRequest {
            key: PREFIX.to_vec(),
            range_end: PREFIX_END.to_vec(),
            ..Default::default()
        });
        // A read that fails keeps the old copy, to be read again after the next batch: an
        // empty one would say every key went to nobody.
        let Ok(r) = meta.read_applied(&op) else {
            return;
        };
        let revision = r.revision;
        let ResponseBody::Range(range) = r.body else {
            return;
        };
        let targets = crate::targets::read(meta);
        let kvs = range.kvs;
        if let Some(targets) = targets {
            self.copy_targets(targets);
        }
        self.directory.copy = kvs
            .into_iter()
            .map(|kv| Copied {
                entry: decode_entry(&kv.key[PREFIX.len()..], &kv.value),
                mod_revision: kv.mod_revision,
            })
            .collect();
        self.directory.copy_at = Some(at);
        self.directory.copy_revision = revision;
    }

    /// On the leader of each group: records the group's range where this member's copy of
    /// the directory says otherwise (see the module docs).
    pub(crate) fn record_ranges(&mut self) {
        if !self.groups.contains_key(&META_GROUP) {
            return;
        }
        let ids: Vec<GroupId> = self.data_groups().map(|(g, _)| g).collect();
        self.directory.pending.retain(|g| ids.contains(g));
        for g in ids {
            if !self.directory.due(g, self.ticks)
                || (self.directory.bug_skip_children && g >= CHILD_ID_BASE)
            {
                continue;
            }
            let Some((range, want)) = self.range_to_record(g) else {
                continue;
            };
            let d = &self.directory;
            let Some(op) = record(&d.copy, d.copy_revision, &range, &want, d.bugs) else {
                continue;
            };
            let request = self.own.request(op);
            self.directory.pending.made(g, request.id);
            if let Some(meta) = self.groups.get_mut(&META_GROUP) {
                meta.submit(request);
            }
        }
    }

    /// Group `g`'s range and the entry to record for it (its generation, configuration and
    /// voters) as its applied state has them, if this member leads `g` and the group is one to
    /// record: not frozen for a merge (the group below records the merged range), and not a
    /// replica still waiting for its first state (it owns no key yet).
    fn range_to_record(&self, g: GroupId) -> Option<(KeyRange, DirectoryEntry)> {
        let e = self.groups.get(&g)?;
        let state = e.range_state()?;
        let range = &state.range;
        let empty = !range.end.is_empty() && range.start >= range.end;
        if state.frozen.is_some() || empty {
            return None;
        }
        let status = e.status();
        if status.leader != Some(self.id) {
            return None;
        }
        let want = DirectoryEntry {
            start: range.start.clone(),
            group: g,
            generation: state.generation,
            config_version: status.configuration.version,
            members: status.configuration.voters(),
            learners: status.configuration.learners(),
        };
        Some((range.clone(), want))
    }

    /// The groups that own user keys: every one but the meta group.
    pub(crate) fn data_groups(&self) -> impl Iterator<Item = (GroupId, &E)> + '_ {
        self.groups
            .iter()
            .filter(|(g, _)| **g != META_GROUP)
            .map(|(g, e)| (*g, e))
    }

    /// The directory as this member's copy holds it, with the meta group's own status.
    pub(crate) fn directory_status(&self) -> Option<DirectoryStatus> {
        let meta = self.groups.get(&META_GROUP)?.status();
        let entries = self
            .directory
            .copy
            .iter()
            .map(|c| c.entry.clone())
            .collect();
        let placement = match self.placed() {
            false => Vec::new(),
            true => (self.layout.ids().enumerate())
                .map(|(pos, g)| DirectoryEntry {
                    start: self.layout.bounds_at(pos).0,
                    group: g,
                    members: self.hosts(g),
                    ..DirectoryEntry::default()
                })
                .collect(),
        };
        Some(DirectoryStatus {
            meta: crate::group_status(META_GROUP, &meta),
            entries,
            copied_at: self.directory.copy_at.unwrap_or(0),
            placed: self.placed(),
            placement,
            moves: self.targets.recorded(),
        })
    }
}

#[cfg(test)]
#[path = "tests/directory.rs"]
mod tests;
