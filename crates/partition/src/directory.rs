//! The range directory: which group owns which range, replicated by a group of its own.
//!
//! Step 1 of decision 0005 (docs/decisions/0005-placement-and-range-directory.md). The
//! directory is the *meta group*: one more instance of the engine on every member, under the
//! reserved id [`META_GROUP`], outside the layout (it owns no user key, no client request is
//! routed to it, and closes, watches, leases, backups, hashes and automatic splits leave it
//! out). Its store maps each range's first key (under [`PREFIX`]) to its group id.
//!
//! **Who writes it.** The leader of each group records the group's own range, as the group's
//! applied state says it is, whenever this member's copy of the directory says otherwise: one
//! transaction that puts the range's first key and deletes every entry inside the range (the
//! groups it absorbed, or a stale split). A split is recorded by the new group's leader, its
//! parent's shrinking by the parent's; a merge by the absorbing group's leader. The
//! transaction goes to this member's replica of the meta group, which forwards it to the meta
//! leader like any write. It is made again, an election timeout after an answer, until this
//! member's copy shows it — so the directory converges to the layout the groups applied once
//! the cluster is quiet, which the simulator checks after every run with the directory on.
//!
//! **What it may be meanwhile.** Behind (a split applied and not recorded yet), or briefly
//! wrong: a leader that has not learnt yet that its group was absorbed may record the group
//! again, until the absorbing group's leader deletes it once more. Nothing routes by the
//! directory yet — each member routes by the layout its own replicas applied — and when
//! placement does (step 2), a stale entry costs a hop, never a wrong answer: the group that
//! applies a command checks its own range (`WrongGroup`).

use crate::Partitioned;
use crate::layout::{CHILD_ID_BASE, GroupId};
use std::collections::BTreeMap;
use synod_core::kv::{
    DeleteRangeRequest, Key, Op, PutRequest, RangeRequest, ResponseBody, TxnOp, TxnRequest,
};
use synod_core::{DirectoryEntry, DirectoryStatus, Engine, RequestId};

/// The meta group's id: far above every split-off group's ([`CHILD_ID_BASE`] and its hashes
/// below `2 * CHILD_ID_BASE`), so no layout ever names it.
pub const META_GROUP: GroupId = 1 << 60;
/// Every directory entry's key: this prefix, then the range's first key.
const PREFIX: &[u8] = b"r/";
/// The end of the prefix's keys (`r/` + 1).
const PREFIX_END: &[u8] = b"r0";
/// How often (in ticks) the leaders compare their groups' ranges with the directory.
pub(crate) const RECORD_EVERY_TICKS: u64 = 10;

/// The recording side: per group, this leader's record still unanswered and the tick before
/// which it is not made again.
#[derive(Default)]
pub(crate) struct Recording {
    pending: BTreeMap<GroupId, (Option<RequestId>, u64)>,
    /// This member's copy of the directory, read again only when the meta group's replica
    /// applied something since (`copy_at`, its applied index then): the status that shows it
    /// is taken after every batch.
    copy: Vec<DirectoryEntry>,
    copy_at: Option<u64>,
    /// Planted bug `PartitionSplitNeverRecorded`.
    pub(crate) bug_skip_children: bool,
}

impl Recording {
    /// Our record `id` was answered (either way): made again no sooner than `retry_at` if
    /// this member's copy still differs then.
    pub(crate) fn answered(&mut self, id: RequestId, retry_at: u64) {
        for (pending, not_before) in self.pending.values_mut() {
            if *pending == Some(id) {
                *pending = None;
                *not_before = retry_at;
            }
        }
    }

    fn due(&self, g: GroupId, now: u64) -> bool {
        self.pending
            .get(&g)
            .is_none_or(|(pending, not_before)| pending.is_none() && now >= *not_before)
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

fn decode_group(value: &[u8]) -> Option<GroupId> {
    Some(GroupId::from_be_bytes(value.try_into().ok()?))
}

/// The transaction that makes the directory say `[start, end)` is `g`'s: every entry strictly
/// inside the range deleted, the range's own put (never the same key twice in one Txn).
fn record_op(start: &[u8], end: &[u8], g: GroupId) -> Op {
    let first = entry_key(start);
    let mut after_first = first.clone();
    after_first.push(0);
    Op::Txn(TxnRequest {
        compare: Vec::new(),
        success: vec![
            TxnOp::DeleteRange(DeleteRangeRequest {
                key: after_first,
                range_end: entries_end(end),
                prev_kv: false,
            }),
            TxnOp::Put(PutRequest::new(first, g.to_be_bytes().to_vec())),
        ],
        failure: Vec::new(),
    })
}

impl<E: Engine> Partitioned<E> {
    /// Reads this member's copy of the directory again if its meta replica applied something
    /// since the last read. An undecodable entry reads as group `u64::MAX`, which no group
    /// is, so that it is recorded over.
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
        let kvs = match meta.read_applied(&op).map(|r| r.body) {
            Ok(ResponseBody::Range(r)) => r.kvs,
            _ => Vec::new(),
        };
        self.directory.copy = kvs
            .into_iter()
            .map(|kv| DirectoryEntry {
                start: kv.key[PREFIX.len()..].to_vec(),
                group: decode_group(&kv.value).unwrap_or(u64::MAX),
            })
            .collect();
        self.directory.copy_at = Some(at);
    }

    /// The entries of this member's copy of the directory in `[start, end)` (user keys), in
    /// key order.
    fn recorded(&self, start: &[u8], end: &[u8]) -> Vec<&DirectoryEntry> {
        let within = |e: &&DirectoryEntry| {
            e.start.as_slice() >= start && (end.is_empty() || e.start.as_slice() < end)
        };
        self.directory.copy.iter().filter(within).collect()
    }

    /// On the leader of each group: records the group's range where this member's copy of
    /// the directory says otherwise (see the module docs).
    pub(crate) fn record_ranges(&mut self) {
        if !self.groups.contains_key(&META_GROUP) {
            return;
        }
        let ids: Vec<GroupId> = self.data_groups().map(|(g, _)| g).collect();
        self.directory.pending.retain(|g, _| ids.contains(g));
        for g in ids {
            if !self.directory.due(g, self.ticks)
                || (self.directory.bug_skip_children && g >= CHILD_ID_BASE)
            {
                continue;
            }
            let Some(range) = self.range_to_record(g) else {
                continue;
            };
            let want = DirectoryEntry {
                start: range.start.clone(),
                group: g,
            };
            if self.recorded(&range.start, &range.end) == [&want] {
                continue;
            }
            let request = self.own.request(record_op(&range.start, &range.end, g));
            self.directory.pending.insert(g, (Some(request.id), 0));
            if let Some(meta) = self.groups.get_mut(&META_GROUP) {
                meta.submit(request);
            }
        }
    }

    /// Group `g`'s range as its applied state has it, if this member leads `g` and the group
    /// is one to record: not frozen for a merge (the group below records the merged range),
    /// and not a replica still waiting for its first state (it owns no key yet).
    fn range_to_record(&self, g: GroupId) -> Option<synod_core::kv::KeyRange> {
        let e = self.groups.get(&g)?;
        let state = e.range_state()?;
        let range = &state.range;
        let empty = !range.end.is_empty() && range.start >= range.end;
        if state.frozen.is_some() || empty || e.status().leader != Some(self.id) {
            return None;
        }
        Some(range.clone())
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
        let entries = self.directory.copy.clone();
        Some(DirectoryStatus {
            meta: crate::group_status(META_GROUP, &meta),
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_a_range_stop_before_the_next_ranges_first_key() {
        assert_eq!(entry_key(b""), b"r/".to_vec());
        assert_eq!(entries_end(b""), b"r0".to_vec());
        assert!(entry_key(b"\xff\xff") < entries_end(b""));
        assert!(entry_key(b"k") < entries_end(b"k1"));
        assert_eq!(entries_end(b"k1"), entry_key(b"k1"));
    }

    #[test]
    fn a_record_deletes_what_lies_inside_its_range_and_puts_its_start() {
        let Op::Txn(t) = record_op(b"b", b"m", 7) else {
            panic!("a record is a transaction");
        };
        let [TxnOp::DeleteRange(d), TxnOp::Put(p)] = &t.success[..] else {
            panic!("delete then put: {:?}", t.success);
        };
        assert_eq!(d.key, b"r/b\0".to_vec());
        assert_eq!(d.range_end, b"r/m".to_vec());
        assert_eq!(p.key, b"r/b".to_vec());
        assert_eq!(decode_group(&p.value), Some(7));
        assert!(t.compare.is_empty() && t.failure.is_empty());
    }

    #[test]
    fn an_entry_of_the_wrong_size_is_no_group() {
        assert_eq!(decode_group(b"1234"), None);
        assert_eq!(decode_group(&[0, 0, 0, 0, 0, 0, 0, 3]), Some(3));
    }
}
