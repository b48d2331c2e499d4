//! The range directory's records (`directory.rs`): what a record does to the meta group's
//! store, the guards that keep a stale one from changing anything, and a model of many
//! leaders recording from stale states and stale copies in any order.

use super::*;
use synod_core::kv::{KvLimits, KvStore};
use synod_core::{ClientId, NodeId, SplitMix64};

#[test]
fn entries_of_a_range_stop_before_the_next_ranges_first_key() {
    assert_eq!(entry_key(b""), b"r/".to_vec());
    assert_eq!(entries_end(b""), b"r0".to_vec());
    assert!(entry_key(b"\xff\xff") < entries_end(b""));
    assert!(entry_key(b"k") < entries_end(b"k1"));
    assert_eq!(entries_end(b"k1"), entry_key(b"k1"));
}

#[test]
fn entries_decode_with_and_without_a_generation() {
    let e = DirectoryEntry {
        start: b"k".to_vec(),
        group: 7,
        generation: 3,
        config_version: 2,
        members: vec![1, 2, 4],
        learners: Vec::new(),
    };
    assert_eq!(decode_entry(b"k", &encode_entry(&e)), e);
    // With learners (a move under way), after the voters.
    let moving = DirectoryEntry {
        learners: vec![5],
        ..e.clone()
    };
    assert_eq!(decode_entry(b"k", &encode_entry(&moving)), moving);
    // Written before generations (8 bytes) or configurations (16): nobody's, to be recorded
    // over by the live groups.
    let before_generations = [0, 0, 0, 0, 0, 0, 0, 3];
    let before_configurations = [[0; 8], 7u64.to_be_bytes()].concat();
    for bad in [
        &b"1234"[..],
        &[1; 12],
        &[],
        &before_generations,
        &before_configurations,
    ] {
        assert_eq!(decode_entry(b"k", bad).group, DirectoryEntry::NOBODY);
    }
}

/// The meta group's store, as a member's copy and records see it.
struct Meta {
    store: KvStore,
    index: u64,
}

impl Meta {
    fn new() -> Self {
        Meta {
            store: KvStore::new(KvLimits::default()),
            index: 0,
        }
    }

    fn copy(&self) -> (Vec<Copied>, u64) {
        let op = Op::Range(RangeRequest {
            key: PREFIX.to_vec(),
            range_end: PREFIX_END.to_vec(),
            ..Default::default()
        });
        let r = self.store.read(&op).expect("read");
        let ResponseBody::Range(range) = r.body else {
            panic!("a range read: {:?}", r.body);
        };
        let copy = range
            .kvs
            .into_iter()
            .map(|kv| Copied {
                entry: decode_entry(&kv.key[PREFIX.len()..], &kv.value),
                mod_revision: kv.mod_revision,
            })
            .collect();
        (copy, r.revision)
    }

    fn entries(&self) -> Vec<(String, u64, u64)> {
        let show = |c: Copied| {
            let start = String::from_utf8_lossy(&c.entry.start).into_owned();
            (start, c.entry.group, c.entry.generation)
        };
        self.copy().0.into_iter().map(show).collect()
    }

    /// Applies `op`; whether its transaction's compares held.
    fn apply(&mut self, op: &Op) -> bool {
        self.index += 1;
        let id = RequestId {
            client: ClientId(1),
            seq: self.index,
        };
        match self
            .store
            .apply(self.index, id, self.index, op)
            .map(|r| r.body)
        {
            Ok(ResponseBody::Txn(t)) => t.succeeded,
            other => panic!("a record is a transaction: {other:?}"),
        }
    }

    /// Records `[start, end)` as `group`'s at `generation` from a fresh copy: whether a
    /// record was made and held.
    fn record(&mut self, start: &str, end: &str, group: GroupId, generation: u64) -> bool {
        let (copy, revision) = self.copy();
        match planned(&copy, revision, start, end, group, generation) {
            Some(op) => self.apply(&op),
            None => false,
        }
    }
}

fn planned(
    copy: &[Copied],
    revision: u64,
    start: &str,
    end: &str,
    group: GroupId,
    generation: u64,
) -> Option<Op> {
    let want = DirectoryEntry {
        start: start.into(),
        group,
        generation,
        ..DirectoryEntry::default()
    };
    record(
        copy,
        revision,
        &KeyRange::new(start, end),
        &want,
        Bugs::default(),
    )
}

fn e(start: &str, group: u64, generation: u64) -> (String, u64, u64) {
    (start.to_string(), group, generation)
}

#[test]
fn a_record_keeps_the_keys_after_its_range_as_they_were() {
    let mut meta = Meta::new();
    assert!(meta.record("", "m", 1, 0));
    // Nobody held m yet: the end says so rather than leaving m to group 1.
    assert_eq!(
        meta.entries(),
        [e("", 1, 0), e("m", DirectoryEntry::NOBODY, 0)]
    );
    assert!(meta.record("m", "", 2, 0));
    assert_eq!(meta.entries(), [e("", 1, 0), e("m", 2, 0)]);
    // Group 2 splits at t: it records its shrinking before the new group 3 records.
    assert!(meta.record("m", "t", 2, 1));
    assert_eq!(meta.entries(), [e("", 1, 0), e("m", 2, 1), e("t", 2, 0)]);
    assert!(meta.record("t", "", 3, 1));
    assert_eq!(meta.entries(), [e("", 1, 0), e("m", 2, 1), e("t", 3, 1)]);
    assert!(
        !meta.record("t", "", 3, 1),
        "recorded already: nothing to do"
    );
    // Group 1 absorbs group 2 ([m, t)): the merged range deletes group 2's entry.
    assert!(meta.record("", "t", 1, 2));
    assert_eq!(meta.entries(), [e("", 1, 2), e("t", 3, 1)]);
}

#[test]
fn a_stale_leaders_record_takes_no_key_back() {
    let mut meta = Meta::new();
    assert!(meta.record("", "", 1, 0));
    // Group 1 split at m (generation 1 on both sides); the new group 2 recorded first.
    assert!(meta.record("m", "", 2, 1));
    // A leader of group 1 that has not applied the split yet records [, ) at generation 0:
    // group 2 holds m at a newer generation, so no record is made.
    assert!(!meta.record("", "", 1, 0));
    // Group 2 is absorbed back into group 1 (generation 2); a leader of group 2 that has
    // not applied its freeze records [m, ) again at generation 1: nothing either.
    assert!(meta.record("", "", 1, 2));
    assert!(!meta.record("m", "", 2, 1));
    assert_eq!(meta.entries(), [e("", 1, 2)]);
}

#[test]
fn a_record_made_from_an_old_copy_does_not_hold() {
    let mut meta = Meta::new();
    assert!(meta.record("", "", 1, 0));
    let (copy, revision) = meta.copy();
    let unchanged = planned(&copy, revision, "", "m", 1, 0);
    assert!(unchanged.is_none(), "the copy holds it already");
    // Group 9, at generation 1, plans [a, ) from this copy (group 1 holds it at 0)...
    let stale = planned(&copy, revision, "a", "", 9, 1).expect("newer than the copy");
    // ...then group 2 (split off at m, generation 1) records; then the old plan arrives.
    assert!(meta.record("m", "", 2, 1));
    assert!(!meta.apply(&stale), "the entry at m came after the copy");
    assert_eq!(meta.entries(), [e("", 1, 0), e("m", 2, 1)]);
    // An entry deleted since the copy fails the record too.
    let (copy, revision) = meta.copy();
    let late = planned(&copy, revision, "p", "", 7, 2).expect("newer than the copy");
    assert!(meta.record("", "", 1, 2));
    assert!(
        !meta.apply(&late),
        "the holder of p was deleted after the copy"
    );
    assert_eq!(meta.entries(), [e("", 1, 2)]);
}

#[test]
fn the_planted_any_generation_record_takes_keys_back() {
    let mut meta = Meta::new();
    assert!(meta.record("", "", 1, 0));
    assert!(meta.record("m", "", 2, 1));
    let range = KeyRange::new("", "");
    let want = DirectoryEntry {
        start: Vec::new(),
        group: 1,
        generation: 0,
        ..DirectoryEntry::default()
    };
    let (copy, revision) = meta.copy();
    assert!(record(&copy, revision, &range, &want, Bugs::default()).is_none());
    let bugs = Bugs {
        any_generation: true,
        ..Bugs::default()
    };
    let stale = record(&copy, revision, &range, &want, bugs).expect("made");
    assert!(meta.apply(&stale));
    assert_eq!(meta.entries(), [e("", 1, 0)], "group 2's keys went back");
}

/// One state a group's replica may be in — its range, generation and configuration — as a
/// leader recording from it sees it, however stale.
#[derive(Clone, Debug)]
struct Version {
    group: GroupId,
    range: KeyRange,
    generation: u64,
    config_version: u64,
    members: Vec<NodeId>,
}

/// The layout as splits and merges change it: the live groups in key order, and every version
/// any group ever had (each one a state some lagging leader may still record from).
struct Truth {
    live: Vec<Version>,
    seen: Vec<Version>,
    next_group: GroupId,
}

impl Truth {
    fn new() -> Self {
        let first = Version {
            group: 0,
            range: KeyRange::new("", ""),
            generation: 0,
            config_version: 0,
            members: vec![1, 2, 3],
        };
        Truth {
            live: vec![first.clone()],
            seen: vec![first],
            next_group: 1,
        }
    }

    /// Merges two adjacent ranges (the lower absorbs the upper), changes one group's members,
    /// or splits a range at a key inside it, with the generations and configuration versions
    /// the applied state gives them (a split-off group starts with its parent's configuration).
    fn change(&mut self, rng: &mut SplitMix64) {
        if rng.chance_permille(250) {
            let i = rng.below(self.live.len() as u64) as usize;
            let v = &mut self.live[i];
            v.config_version += 1;
            v.members = vec![1, 2, 3 + v.config_version % 3];
            self.seen.push(v.clone());
            return;
        }
        if self.live.len() > 1 && rng.chance_permille(400) {
            let i = rng.below(self.live.len() as u64 - 1) as usize;
            let upper = self.live.remove(i + 1);
            let lower = &mut self.live[i];
            lower.range.end = upper.range.end;
            lower.generation = lower.generation.max(upper.generation) + 1;
            self.seen.push(lower.clone());
            return;
        }
        let i = rng.below(self.live.len() as u64) as usize;
        let at = vec![b'a' + rng.below(26) as u8];
        if !self.live[i].range.splits_at(&at) {
            return;
        }
        let parent = &mut self.live[i];
        parent.generation += 1;
        let child = Version {
            group: self.next_group,
            range: KeyRange::new(at.clone(), parent.range.end.clone()),
            ..parent.clone()
        };
        parent.range.end = at;
        self.next_group += 1;
        self.seen.push(parent.clone());
        self.seen.push(child.clone());
        self.live.insert(i + 1, child);
    }
}

fn want_of(v: &Version) -> DirectoryEntry {
    DirectoryEntry {
        start: v.range.start.clone(),
        group: v.group,
        generation: v.generation,
        config_version: v.config_version,
        members: v.members.clone(),
        learners: Vec::new(),
    }
}

fn entries_of(meta: &Meta) -> Vec<DirectoryEntry> {
    meta.copy().0.into_iter().map(|c| c.entry).collect()
}

/// Applies `op` to the meta store: a failure if some key's owner went back.
fn apply_checked(meta: &mut Meta, op: &Op) -> Result<(), String> {
    let before = entries_of(meta);
    meta.apply(op);
    match synod_core::directory_order::owner_went_back(&before, &entries_of(meta)) {
        Some(m) => Err(format!("at meta index {}: {m}", meta.index)),
        None => Ok(()),
    }
}

/// One run of the model: the layout and the groups' members change while leaders of any
/// version, current or long gone, plan records from copies of any age, and the records are applied in any order; no
/// key's owner may go back. Then, once quiet, the live groups' records make the directory the
/// layout exactly.
fn run_model(seed: u64, bugs: Bugs) -> Result<(), String> {
    let mut rng = SplitMix64::new(seed);
    let mut truth = Truth::new();
    let mut meta = Meta::new();
    let mut copies = vec![meta.copy()];
    let mut planned: Vec<Op> = Vec::new();
    for _ in 0..300 {
        match rng.below(4) {
            0 => truth.change(&mut rng),
            1 => copies.push(meta.copy()),
            2 => {
                let v = rng.pick(&truth.seen).clone();
                let (copy, revision) = rng.pick(&copies);
                planned.extend(record(copy, *revision, &v.range, &want_of(&v), bugs));
            }
            _ if !planned.is_empty() => {
                let op = planned.swap_remove(rng.below(planned.len() as u64) as usize);
                apply_checked(&mut meta, &op)?;
            }
            _ => {}
        }
    }
    for _ in 0..=truth.live.len() {
        let mut made = false;
        for v in &truth.live {
            let (copy, revision) = meta.copy();
            if let Some(op) = record(&copy, revision, &v.range, &want_of(v), bugs) {
                apply_checked(&mut meta, &op)?;
                made = true;
            }
        }
        if !made {
            break;
        }
    }
    let layout: Vec<DirectoryEntry> = truth.live.iter().map(want_of).collect();
    match entries_of(&meta) == layout {
        true => Ok(()),
        false => Err(format!(
            "quiet, the directory is {:?}, the layout {layout:?}",
            entries_of(&meta)
        )),
    }
}

#[test]
fn stale_leaders_and_stale_copies_in_any_order_never_take_a_key_back() {
    for seed in 0..500 {
        if let Err(m) = run_model(seed, Bugs::default()) {
            panic!("seed {seed}: {m}");
        }
    }
}

#[test]
fn the_model_catches_each_planted_guard_missing() {
    let unguarded = Bugs {
        unguarded: true,
        ..Bugs::default()
    };
    let any_generation = Bugs {
        any_generation: true,
        ..Bugs::default()
    };
    for bugs in [unguarded, any_generation] {
        let caught = (0..100).find(|&seed| run_model(seed, bugs).is_err());
        assert!(caught.is_some(), "not caught in 100 seeds");
    }
}
