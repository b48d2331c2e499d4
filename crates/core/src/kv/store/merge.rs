//! Joining two stores of adjacent ranges (partitioned mode's range merge): the frozen upper
//! group's keys and client table move into the lower group's store, which goes on from there.
//!
//! Why the client table moves too: a write the frozen group applied, whose reply was lost,
//! is retried after the merge and reaches the absorbing group, which must answer it from the
//! saved reply instead of applying it again.
//!
//! The history comes along where it can: the merged store goes on from the larger of the two
//! revisions, and its history is one contiguous run of revisions from the later of the two
//! histories' starts, each revision holding the events either store had at that number (their
//! keys are disjoint, so every key's own events keep their revisions and `prev_kv` chains).
//! What a watcher resumed from before the merge, or a read at a past revision, sees of one
//! key is exactly what it saw in that key's group. The older part of a history that starts
//! below the other's is dropped (compacted), and so is all of it when the merge ends a lease
//! (see below), whose keys go without an event. A merge copy carries at most
//! [`MERGE_HISTORY_BYTES_MAX`] of history, the newest revisions.
//!
//! Leases (a partitioned cluster keeps a copy of each lease in every group): a lease both
//! stores hold goes on as the lower group's, with the keys of both — its TTL counts from the
//! lower group's last renewal, which every acknowledged keep-alive reached (it is acknowledged
//! only once every group renewed it). A lease only the frozen group still holds has ended in
//! the lower group (revoked or expired there; or its grant is still on its way, when no key can
//! be attached to it yet): it ends here, and its keys go, in the absorb's revision. That keeps a
//! revoke that reached the lower group before the merge from being undone by the frozen copy.
//! The other way round — a lease the frozen group *ended* (its lessor expired it, or a revoke
//! reached it first) that the lower group still holds — ends in the lower group too, its keys
//! deleted as the events of the next revision: a lease lives while every copy does, so a
//! keep-alive after the merge must not renew it (stores remember the leases they ended for
//! this, [`crate::kv::Leases`]; a lease the frozen group merely lacks is left alone — its grant
//! may still be on its way there).

use super::{KvStore, kv_bytes, mix};
use crate::kv::{KeyRange, LeaseId, RevisionEvents, WatchEvent};
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::Arc;

/// Digest salt of an absorb.
const ABSORB: u64 = 0x3e79_0001;

/// The most history (by [`RevisionEvents::size_bytes`]) a merge copy carries: the copy travels
/// in one log entry and one peer frame, beside at most 4 MiB of live keys.
pub const MERGE_HISTORY_BYTES_MAX: usize = 4 << 20;

/// Revision `r` of a history whose first revision is `first`, if it holds it.
fn slot(
    history: &VecDeque<Arc<RevisionEvents>>,
    first: u64,
    r: u64,
) -> Option<&Arc<RevisionEvents>> {
    let at = usize::try_from(r.checked_sub(first)?).ok()?;
    history.get(at)
}

impl KvStore {
    /// What the live keys take (keys, values, metadata), without the history: what a merge
    /// moves. O(keys): called once per merge.
    pub fn live_bytes(&self) -> u64 {
        self.data.values().map(kv_bytes).sum()
    }

    /// A copy to hand to a merge: keys, leases, client table and the newest history up to
    /// [`MERGE_HISTORY_BYTES_MAX`] (see the module doc).
    pub fn merge_copy(&self) -> KvStore {
        let mut bytes = 0;
        let keep = self
            .history
            .iter()
            .rev()
            .take_while(|r| {
                bytes += r.size_bytes();
                bytes <= MERGE_HISTORY_BYTES_MAX
            })
            .count();
        let history: VecDeque<_> = self
            .history
            .iter()
            .skip(self.history.len() - keep)
            .cloned()
            .collect();
        let first = self.revision + 1 - keep as u64;
        let compact_revision = if keep == self.history.len() {
            self.compact_revision
        } else {
            self.compact_revision.max(first)
        };
        KvStore {
            data: self.data.clone(),
            revision: self.revision,
            compact_revision,
            history,
            applied_index: self.applied_index,
            digest: self.digest,
            sessions: self.sessions.clone(),
            leases: self.leases.clone(),
            lease_changes: Vec::new(),
            fresh: None,
            planted_compaction_bug: false,
            planted_keep_ended: false,
            closed: 0,
            content: Cell::new(None),
            in_use: Cell::new(None),
        }
    }

    /// Every key of this store, and every key its leases hold, lies in `range` (a merge
    /// image must hold only the range it names: one from a faulty peer is refused, not merged
    /// over the keys of this group).
    pub fn holds_only(&self, range: &crate::kv::KeyRange) -> bool {
        let inside = |k: Option<&Vec<u8>>| k.is_none_or(|k| range.contains(k));
        inside(self.data.first_key_value().map(|(k, _)| k))
            && inside(self.data.last_key_value().map(|(k, _)| k))
            && self
                .leases
                .values()
                .all(|l| inside(l.keys.first()) && inside(l.keys.last()))
    }

    /// Takes in `other`'s keys (a range disjoint from this store's), its leases (see the
    /// module doc) and, unless `with_sessions` is off (the planted
    /// `PartitionMergeDropsSessions`), its client table, at this store's KV index `index`
    /// (already skipped). Goes on from the larger revision; one revision more if a lease only
    /// `other` held took keys with it. With `range`, the range `other` held (just above this
    /// store's), the two histories are joined (the module doc); without, none is kept.
    pub fn absorb(
        &mut self,
        mut other: KvStore,
        index: u64,
        with_sessions: bool,
        range: Option<&KeyRange>,
    ) {
        debug_assert!(
            other.data.keys().all(|k| !self.data.contains_key(k)),
            "merged stores must hold disjoint ranges"
        );
        let mut ended_keys = false;
        // Leases the frozen group ended that this store still holds: they end here too.
        let theirs_ended = other.leases.take_ended();
        let to_end: Vec<LeaseId> = theirs_ended
            .keys()
            .copied()
            .filter(|id| self.leases.contains_key(id) && !self.planted_keep_ended)
            .collect();
        for (id, at) in theirs_ended {
            self.leases.note_ended(id, at);
        }
        for (id, lease) in other.leases.take_live() {
            match self.leases.get_mut(&id) {
                Some(ours) => ours.keys.extend(lease.keys),
                None => {
                    for key in &lease.keys {
                        ended_keys |= other.data.remove(key).is_some();
                    }
                    self.digest = mix(mix(self.digest, 0xdead), id as u64);
                }
            }
        }
        self.data.append(&mut other.data);
        let revision = self.revision.max(other.revision) + u64::from(ended_keys);
        match range {
            // The ended lease's keys go in `revision` with no event: no history below it.
            Some(range) if !ended_keys => self.join_history(&other, range, revision),
            _ => {
                // One empty slot for `revision` itself: the compaction revision stays readable
                // (etcd's promise), holding no event of the keys that went.
                self.history.clear();
                self.history.push_back(Arc::new(RevisionEvents {
                    revision,
                    events: Vec::new(),
                }));
                self.compact_revision = revision;
            }
        }
        self.revision = revision;
        if with_sessions {
            self.sessions.absorb(other.sessions, index);
        }
        self.end_leases_after_absorb(&to_end);
        self.digest = mix(mix(self.digest, other.digest), ABSORB);
        self.content.set(None);
        self.in_use.set(None);
    }

    /// Ends the leases the absorbed group had ended (their keys of this group deleted as the
    /// events of one revision after the absorb's, like an expiry): a lease lives while every
    /// copy does, so a keep-alive must not renew the survivor (see [`crate::kv::Leases`]).
    fn end_leases_after_absorb(&mut self, ids: &[LeaseId]) {
        let mut events = Vec::new();
        for &id in ids {
            // Held, checked by the caller: `end_lease` cannot fail here.
            let _ = self.end_lease(id, &mut events);
        }
        self.commit_events(events);
    }

    /// This store's history joined with `other`'s, which held `range`, up to `revision` (see
    /// the module doc): one revision per slot from the later of the two starts, each with the
    /// events either store had at that number of its own keys — a history also holds events
    /// of keys its group split off since (its watchers of them read up to the split), which
    /// are another group's now.
    fn join_history(&mut self, other: &KvStore, range: &KeyRange, revision: u64) {
        let (ours, theirs) = (self.history_first(), other.history_first());
        // At least `revision` itself: the compaction revision below stays readable.
        let first = ours.max(theirs).min(revision.max(1));
        let mut joined =
            VecDeque::with_capacity(usize::try_from(revision + 1 - first).unwrap_or(0));
        let own = |e: &&WatchEvent| e.kv.key.as_slice() < range.start.as_slice();
        let theirs_own = |e: &&WatchEvent| range.contains(&e.kv.key);
        for r in first..=revision {
            let a = slot(&self.history, ours, r).map(|x| x.events.iter().filter(own));
            let b = slot(&other.history, theirs, r).map(|x| x.events.iter().filter(theirs_own));
            let events: Vec<WatchEvent> = a
                .into_iter()
                .flatten()
                .chain(b.into_iter().flatten())
                .cloned()
                .collect();
            joined.push_back(Arc::new(RevisionEvents {
                revision: r,
                events,
            }));
        }
        self.history = joined;
        let compact = self.compact_revision.max(other.compact_revision).max(first);
        self.compact_revision = compact.min(revision);
    }

    /// PLANTED BUG (`PartitionCloseWithoutSlots`): the revision goes up to `through` with no
    /// history slots for the revisions it passes.
    pub fn planted_raise_revision(&mut self, through: u64) {
        self.revision = self.revision.max(through);
    }

    /// PLANTED BUG (`PartitionAbsorbRevisionBehind`): back to revision `r` (the lower
    /// group's own) after an absorb took the store past it.
    pub fn planted_rewind_revision(&mut self, r: u64) {
        self.revision = r;
        self.compact_revision = r;
        self.history.clear();
        self.history.push_back(Arc::new(RevisionEvents {
            revision: r,
            events: Vec::new(),
        }));
    }

    /// PLANTED BUG (`PartitionMergeHistoryShifted`): the events of `range`'s keys in the
    /// history one revision later than they were (the last revision's dropped).
    pub fn planted_shift_history(&mut self, range: &KeyRange) {
        let mut carried: Vec<WatchEvent> = Vec::new();
        for slot in self.history.iter_mut() {
            let r = Arc::make_mut(slot);
            let (moved, kept): (Vec<_>, Vec<_>) =
                r.events.drain(..).partition(|e| range.contains(&e.kv.key));
            r.events = kept;
            r.events.append(&mut carried);
            carried = moved;
        }
    }

    /// Joins the store of another group of the same backup into this one, for a restore
    /// that lays keys out anew (`synod restore` of a partitioned backup): unlike a merge, no
    /// lease ends — a lease that one group's image lacks (its grant or revoke had not reached
    /// that group on the member backed up) is kept with the keys of every group that has it.
    /// Refused, naming a key, if the two stores share one (images of one layout never do).
    /// With `range`, the range `other`'s group held (just above this store's keys), the
    /// histories are joined as a merge joins them; without, none is kept.
    pub fn join_for_restore(
        &mut self,
        mut other: KvStore,
        range: Option<&KeyRange>,
    ) -> Result<(), Vec<u8>> {
        if let Some(k) = other.data.keys().find(|k| self.data.contains_key(*k)) {
            return Err(k.clone());
        }
        for (id, lease) in other.leases.iter() {
            self.leases.entry(*id).or_insert_with(|| crate::kv::Lease {
                keys: Default::default(),
                ..lease.clone()
            });
        }
        // No lease ends in a restore: what one group's image ended, another's may hold.
        other.leases.take_ended();
        let index = self.applied_index.max(other.applied_index);
        self.absorb(other, index, false, range);
        self.applied_index = index;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::ids::{ClientId, RequestId};
    use crate::kv::{KeyRange, KvLimits, KvStore, Op, PutRequest, ResponseBody};

    fn put(s: &mut KvStore, index: u64, client: u64, k: &str) {
        let id = RequestId {
            client: ClientId(client),
            seq: index,
        };
        let op = Op::Put(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        s.apply(index, id, 0, &op).expect("put");
    }

    #[test]
    fn a_split_store_merges_back_with_its_keys_and_sessions() {
        let mut lower = KvStore::new(KvLimits::default());
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            put(&mut lower, i as u64 + 1, 7, k);
        }
        let mut upper = lower.split_off(b"c");
        // The upper group goes on alone: more revisions than the lower one.
        put(&mut upper, 5, 8, "e");
        put(&mut upper, 6, 8, "f");
        let upper_rev = upper.revision();
        let copy = upper.merge_copy();
        assert_eq!(copy.live_bytes(), upper.live_bytes());
        lower.skip(5);
        lower.absorb(copy, 5, true, Some(&KeyRange::new("c", "")));
        assert_eq!(lower.len(), 6);
        assert!(lower.get(b"f").is_some() && lower.get(b"a").is_some());
        assert_eq!(lower.revision(), upper_rev, "the larger revision goes on");
        // One history: every key's events once, at their own revisions (c and d were in
        // both halves' histories, from before the split).
        let events: Vec<(u64, Vec<u8>)> = lower
            .history_from(1, 100)
            .expect("joined history")
            .iter()
            .flat_map(|r| r.events.iter().map(|e| (r.revision, e.kv.key.clone())))
            .collect();
        let want: Vec<(u64, Vec<u8>)> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .enumerate()
            .map(|(i, k)| (i as u64 + 1, k.as_bytes().to_vec()))
            .collect();
        assert_eq!(events, want);
        // A write the upper group applied, retried after the merge: answered, not applied.
        let id = RequestId {
            client: ClientId(8),
            seq: 6,
        };
        let op = Op::Put(PutRequest {
            key: "f".into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        let again = lower.apply(6, id, 0, &op).expect("duplicate");
        assert!(matches!(again.body, ResponseBody::Put(_)));
        assert_eq!(lower.revision(), upper_rev, "nothing applied twice");
        // A new write goes on from the merged revision.
        put(&mut lower, 7, 9, "g");
        assert_eq!(lower.revision(), upper_rev + 1);
    }

    fn value_at(s: &KvStore, key: &str, revision: u64) -> Option<Vec<u8>> {
        let op = Op::Range(crate::kv::RangeRequest {
            key: key.into(),
            revision,
            ..Default::default()
        });
        match s.read(&op).expect("read").body {
            ResponseBody::Range(r) => r.kvs.first().map(|kv| kv.value.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn histories_join_from_the_later_start_and_past_reads_see_each_key_as_its_group_did() {
        let mut lower = KvStore::new(KvLimits::default());
        put(&mut lower, 1, 7, "a"); // 1
        put(&mut lower, 2, 7, "m"); // 2
        let mut upper = lower.split_off(b"m");
        let put_v = |s: &mut KvStore, index: u64, k: &str, v: &str| {
            let id = RequestId {
                client: ClientId(9),
                seq: index,
            };
            s.apply(index, id, 0, &Op::Put(PutRequest::new(k, v)))
                .expect("put");
        };
        put_v(&mut upper, 3, "m", "x"); // upper 3
        put_v(&mut upper, 4, "n", "1"); // upper 4
        put_v(&mut upper, 5, "n", "2"); // upper 5
        put_v(&mut lower, 3, "a", "y"); // lower 3
        put_v(&mut lower, 4, "b", "1"); // lower 4
        lower.skip(6);
        lower.absorb(upper.merge_copy(), 6, true, Some(&KeyRange::new("m", "")));
        assert_eq!(lower.revision(), 5);
        let at = |r| {
            let h = lower.history_from(r, 1).expect("history");
            h[0].events
                .iter()
                .map(|e| String::from_utf8_lossy(&e.kv.key).into_owned())
                .collect::<Vec<_>>()
        };
        // Revision 3 was a put of a in one group and of m in the other: both, once each;
        // revision 2's m only once, though both halves held it.
        assert_eq!(
            (at(2), at(3), at(4), at(5)),
            (
                vec!["m".to_string()],
                vec!["a".into(), "m".into()],
                vec!["b".into(), "n".into()],
                vec!["n".into()]
            )
        );
        assert_eq!(value_at(&lower, "m", 2).as_deref(), Some(&b"v"[..]));
        assert_eq!(value_at(&lower, "m", 3).as_deref(), Some(&b"x"[..]));
        assert_eq!(value_at(&lower, "n", 4).as_deref(), Some(&b"1"[..]));
        assert_eq!(value_at(&lower, "a", 2).as_deref(), Some(&b"v"[..]));
        assert_eq!(value_at(&lower, "b", 3), None);

        // A history that starts later (compacted at 4) cuts the joined one there.
        let mut lower = KvStore::new(KvLimits::default());
        put(&mut lower, 1, 7, "a");
        let mut upper = lower.split_off(b"m");
        for i in 2..=5 {
            put_v(&mut upper, i, "n", "v");
        }
        let id = RequestId {
            client: ClientId::NONE,
            seq: 99,
        };
        let compact = Op::Compact(crate::kv::CompactRequest {
            revision: 4,
            physical: false,
        });
        upper.apply(6, id, 0, &compact).expect("compact");
        lower.skip(7);
        lower.absorb(upper.merge_copy(), 7, true, Some(&KeyRange::new("m", "")));
        assert_eq!(lower.compact_revision(), 4);
        assert!(lower.history_from(3, 10).is_err());
        assert_eq!(lower.history_from(4, 10).map(|h| h.len()), Ok(2));
    }

    #[test]
    fn without_sessions_a_retry_is_applied_again() {
        let mut lower = KvStore::new(KvLimits::default());
        put(&mut lower, 1, 7, "a");
        let mut upper = lower.split_off(b"m");
        put(&mut upper, 2, 8, "x");
        lower.skip(2);
        lower.absorb(upper.merge_copy(), 2, false, Some(&KeyRange::new("m", "")));
        let rev = lower.revision();
        let id = RequestId {
            client: ClientId(8),
            seq: 2,
        };
        let op = Op::Put(PutRequest {
            key: "x".into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        lower.apply(3, id, 0, &op).expect("put");
        assert_eq!(
            lower.revision(),
            rev + 1,
            "the planted bug applies it twice"
        );
    }

    #[test]
    fn a_revision_close_leaves_empty_revisions_and_every_event_at_its_own() {
        let mut s = KvStore::new(KvLimits::default());
        s.take_fresh_events();
        put(&mut s, 1, 7, "a"); // 1
        apply(&mut s, 2, Op::CloseRevisions { through: 5 });
        assert_eq!(s.revision(), 5);
        let fresh: Vec<(u64, usize)> = s
            .take_fresh_events()
            .iter()
            .map(|r| (r.revision, r.events.len()))
            .collect();
        assert_eq!(fresh, [(1, 1), (2, 0), (3, 0), (4, 0), (5, 0)]);
        put(&mut s, 3, 7, "a"); // 6: the next write goes above the close
        assert_eq!(s.get(b"a").map(|kv| kv.mod_revision), Some(6));
        let history = s.history_from(1, 100).expect("history");
        let at: Vec<(u64, Vec<u64>)> = history
            .iter()
            .map(|r| {
                (
                    r.revision,
                    r.events.iter().map(|e| e.kv.mod_revision).collect(),
                )
            })
            .collect();
        assert_eq!(at[0], (1, vec![1]));
        assert_eq!(at[5], (6, vec![6]));
        assert_eq!(
            value_at(&s, "a", 4),
            Some(b"v".to_vec()),
            "as of a closed revision"
        );
        // A close at or below the revision changes nothing; one too far is refused.
        apply(&mut s, 4, Op::CloseRevisions { through: 3 });
        assert_eq!(s.revision(), 6);
        let far = Op::CloseRevisions {
            through: 6 + crate::kv::CLOSE_STEP_MAX + 1,
        };
        let id = RequestId {
            client: ClientId(5),
            seq: 5,
        };
        assert!(s.apply(5, id, 0, &far).is_err());
        assert_eq!(s.revision(), 6);
    }

    fn apply(s: &mut KvStore, index: u64, op: Op) {
        let id = RequestId {
            client: ClientId(5),
            seq: index,
        };
        s.apply(index, id, 0, &op).expect("applied");
    }

    fn with_lease(k: &str, lease: i64) -> Op {
        let mut p = PutRequest::new(k, "v");
        p.lease = lease;
        Op::Put(p)
    }

    #[test]
    fn leases_of_both_halves_merge_and_one_the_lower_half_ended_goes_with_its_keys() {
        use crate::kv::LeaseGrantRequest;
        let mut lower = KvStore::new(KvLimits::default());
        for (i, id) in [1, 2].into_iter().enumerate() {
            apply(
                &mut lower,
                i as u64 + 1,
                Op::LeaseGrant(LeaseGrantRequest { id, ttl: 10 }),
            );
        }
        apply(&mut lower, 3, with_lease("a", 1));
        apply(&mut lower, 4, with_lease("b", 2));
        let mut upper = lower.split_off(b"m");
        apply(&mut upper, 5, with_lease("x", 1));
        apply(&mut upper, 6, with_lease("y", 2));
        apply(&mut upper, 7, with_lease("z", 2));
        // Lease 2 ends in the lower half only (a revoke that reached it before the merge).
        lower.skip(5);
        apply(&mut lower, 8, Op::LeaseRevoke { id: 2 });
        assert!(lower.get(b"b").is_none());
        let rev = lower.revision().max(upper.revision());
        lower.skip(9);
        lower.absorb(upper.merge_copy(), 9, true, Some(&KeyRange::new("m", "")));
        let keys = |id| {
            lower
                .lease(id)
                .map(|l| l.keys.iter().cloned().collect::<Vec<_>>())
        };
        assert_eq!(keys(1), Some(vec![b"a".to_vec(), b"x".to_vec()]));
        assert_eq!(keys(2), None, "not brought back by the frozen copy");
        assert!(lower.get(b"y").is_none() && lower.get(b"z").is_none());
        assert!(lower.get(b"x").is_some());
        assert_eq!(
            lower.revision(),
            rev + 1,
            "the keys went in a revision of their own"
        );
    }

    /// Lease 1 expires in the upper half only (its lessor was quicker); lease 2 the upper half
    /// never had (a grant on its way there). After the merge lease 1 is gone with the lower
    /// half's keys, deleted as events of one revision; lease 2 stays.
    fn merge_after_upper_expiry(keep_ended: bool) -> (KvStore, u64) {
        use crate::kv::LeaseGrantRequest;
        let mut lower = KvStore::new(KvLimits::default());
        let grant = |id| Op::LeaseGrant(LeaseGrantRequest { id, ttl: 10 });
        apply(&mut lower, 1, grant(1));
        apply(&mut lower, 2, with_lease("a", 1));
        let mut upper = lower.split_off(b"m");
        apply(&mut upper, 3, with_lease("x", 1));
        let stamp = upper.lease(1).expect("copied").stamp;
        apply(&mut upper, 4, Op::LeaseExpire { id: 1, stamp });
        assert!(upper.get(b"x").is_none());
        lower.skip(4);
        apply(&mut lower, 5, grant(2));
        apply(&mut lower, 6, with_lease("b", 2));
        let before = lower.revision().max(upper.revision());
        lower.plant_keep_ended_leases(keep_ended);
        lower.absorb(upper.merge_copy(), 7, true, Some(&KeyRange::new("m", "")));
        (lower, before)
    }

    #[test]
    fn a_lease_the_absorbed_group_ended_ends_in_the_absorbing_one_with_its_keys() {
        let (lower, before) = merge_after_upper_expiry(false);
        assert!(lower.lease(1).is_none(), "ended in one copy: ended");
        assert!(lower.get(b"a").is_none(), "its key in the lower half went");
        assert!(lower.lease(2).is_some() && lower.get(b"b").is_some());
        assert_eq!(lower.revision(), before + 1);
        let last = lower.history.back().expect("a revision");
        let deleted: Vec<&[u8]> = last.events.iter().map(|e| e.kv.key.as_slice()).collect();
        assert_eq!(
            deleted,
            [b"a".as_slice()],
            "a delete event at {}",
            last.revision
        );
        assert!(lower.leases.has_ended(1), "remembered for the next merge");
    }

    #[test]
    fn planted_merge_keeping_an_ended_lease_keeps_it() {
        let (lower, _) = merge_after_upper_expiry(true);
        assert!(lower.lease(1).is_some() && lower.get(b"a").is_some());
    }

    #[test]
    fn a_restore_join_keeps_every_lease_and_refuses_shared_keys() {
        let mut lower = KvStore::new(KvLimits::default());
        put(&mut lower, 1, 7, "a");
        let mut upper = lower.split_off(b"m");
        // Lease 5 reached only the upper group on the member backed up.
        upper
            .apply(
                2,
                RequestId {
                    client: ClientId(7),
                    seq: 2,
                },
                0,
                &Op::LeaseGrant(crate::kv::LeaseGrantRequest { id: 5, ttl: 10 }),
            )
            .expect("grant");
        let op = Op::Put(PutRequest {
            key: b"x".to_vec(),
            value: b"v".to_vec(),
            lease: 5,
            ..PutRequest::default()
        });
        let id = RequestId {
            client: ClientId(7),
            seq: 3,
        };
        upper.apply(3, id, 0, &op).expect("put with lease");
        let clash = upper.merge_copy();
        lower
            .join_for_restore(upper, Some(&KeyRange::new("m", "")))
            .expect("disjoint stores join");
        assert!(lower.get(b"a").is_some() && lower.get(b"x").is_some());
        let lease = lower
            .lease(5)
            .expect("the lease only one group had is kept");
        assert!(lease.keys.contains(b"x".as_slice()), "{lease:?}");
        assert_eq!(lower.applied_index(), 3);
        assert_eq!(lower.join_for_restore(clash, None), Err(b"x".to_vec()));
    }
}
