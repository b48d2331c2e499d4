//! The watch checker: did every watcher see exactly the store's history, and did every reply
//! that names a revision agree with it?
//!
//! The **reference** is the sequence of revisions the replicas applied, built while a run goes
//! by [`Reference::observe`]: every revision any replica hands its watch layer or serves from
//! its history is recorded, and the same revision number must carry identical events on every
//! replica that has it (agreement: the check that sees a replica emitting events of log
//! entries that were never decided). From it, [`check`] replays the store — revision 1 onwards,
//! every event applied to a map of keys — and validates:
//!
//! * **the reference itself**: revisions contiguous from 1; every event stamped with its
//!   revision; every `prev_kv` equal to the key before the event; a put's version, create and
//!   mod revision following from the key before it;
//! * **every watcher**: deliveries in strictly increasing revision order (no duplicate, nothing
//!   out of order), none before its start; each delivery exactly the revision's events inside
//!   its range and filters, in order and whole (a revision never split); no gap — every
//!   revision between its start and the last one it passed that changed a key it watches was
//!   delivered; a resume asks for exactly the revision after the last one delivered; a
//!   cancellation for compaction only when the revision it asked for was below the compaction;
//!   nothing after a cancellation;
//! * **every range read** (current or at a past revision): the keys equal the replayed state at
//!   the revision it was served at;
//! * **every acknowledged write**: the revision its reply names holds that write (key, kind and
//!   value) — agreement between the client-visible history and the watch stream;
//! * **every transaction compare**: it held iff the replayed key's version satisfied it.
//!
//! A store whose revisions are per group (partitioned) has no one sequence to replay:
//! [`check_key`] judges one key's history alone, from its first observed revision.
//!
//! What the checker needs from a run is plain data ([`WatchInput`]), so its tests write
//! histories by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use synod_core::NodeId;
use synod_core::kv::{EventKind, Key, KeyValue, RevisionEvents, Value, WatchEvent, in_range};

/// Violations kept in a report (the first are the interesting ones); the rest are counted.
pub const VIOLATIONS_REPORTED_MAX: usize = 20;

/// The revisions replicas applied, by number, with the first replica that reported each.
#[derive(Clone, Debug, Default)]
pub struct Reference {
    revisions: BTreeMap<u64, (Arc<RevisionEvents>, NodeId)>,
}

impl Reference {
    /// Records that `node` applied `rev`. Returns a description when another replica applied
    /// the same revision number with other events.
    pub fn observe(&mut self, node: NodeId, rev: &Arc<RevisionEvents>) -> Result<(), String> {
        match self.revisions.get(&rev.revision) {
            None => {
                self.revisions.insert(rev.revision, (rev.clone(), node));
                Ok(())
            }
            Some((seen, _)) if Arc::ptr_eq(seen, rev) || **seen == **rev => Ok(()),
            Some((seen, first)) => Err(format!(
                "revision {} differs between replicas: n{first} applied {} but n{node} applied {}",
                rev.revision,
                describe_events(&seen.events),
                describe_events(&rev.events)
            )),
        }
    }

    pub fn get(&self, revision: u64) -> Option<&Arc<RevisionEvents>> {
        self.revisions.get(&revision).map(|(r, _)| r)
    }

    /// The highest revision any replica applied (0 = none).
    pub fn last(&self) -> u64 {
        self.revisions.keys().next_back().copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.revisions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }

    /// Per-key references (a partitioned run's) as one: each revision holds the events every
    /// key's reference has at it, in key order — what a watch over those keys must deliver at
    /// that revision (in key order: see [`check_span_watcher`]).
    pub fn merged<'a>(refs: impl IntoIterator<Item = &'a Reference>) -> Reference {
        let mut at: BTreeMap<u64, (Vec<WatchEvent>, NodeId)> = BTreeMap::new();
        for r in refs {
            for (revision, (rev, node)) in &r.revisions {
                let slot = at.entry(*revision).or_insert((Vec::new(), *node));
                slot.0.extend(rev.events.iter().cloned());
            }
        }
        let revisions = at
            .into_iter()
            .map(|(revision, (mut events, node))| {
                events.sort_by(|a, b| a.kv.key.cmp(&b.kv.key));
                (
                    revision,
                    (Arc::new(RevisionEvents { revision, events }), node),
                )
            })
            .collect();
        Reference { revisions }
    }
}

/// What a watcher asked for (the same filter the server applies).
pub type WatchSpec = synod_core::kv::WatchFilter;

/// A watcher's spec in a violation message.
pub fn describe(spec: &WatchSpec) -> String {
    let mut s = if spec.range_end.is_empty() {
        format!("key {}", show(&spec.key))
    } else {
        format!("[{}, {})", show(&spec.key), show(&spec.range_end))
    };
    if spec.no_put {
        s += " no-put";
    }
    if spec.no_delete {
        s += " no-delete";
    }
    if spec.prev_kv {
        s += " prev-kv";
    }
    s
}

/// One thing that happened to a watcher, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchStep {
    /// Opened (`resume == false`) or resumed after its node went away, at `node`, asking for
    /// revisions from `from`.
    Attach {
        node: NodeId,
        from: u64,
        resume: bool,
    },
    /// `node` sent the watcher these events of `revision`.
    Deliver {
        node: NodeId,
        revision: u64,
        events: Vec<WatchEvent>,
    },
    /// `node` cancelled the watcher: revision `from` is below its compaction revision.
    Cancel {
        node: NodeId,
        from: u64,
        compact_revision: u64,
    },
}

/// Everything one watcher saw.
#[derive(Clone, Debug)]
pub struct WatcherLog {
    pub id: u64,
    pub spec: WatchSpec,
    /// The first revision it must see: its start revision, or for a watch "from now" the one
    /// after its node's revision when it opened.
    pub start: u64,
    pub steps: Vec<WatchStep>,
    /// The highest revision that has passed it (delivered, or outside what it watches): every
    /// revision of `start..=passed` that it watches must have been delivered.
    pub passed: u64,
}

/// A range read's reply: the keys of `[key, range_end)` at `revision` (the one it asked for,
/// or for a read of the current state the one its reply was stamped with).
#[derive(Clone, Debug)]
pub struct RangeRead {
    pub node: NodeId,
    pub key: Key,
    pub range_end: Key,
    pub revision: u64,
    pub kvs: Vec<KeyValue>,
}

/// An acknowledged write: its reply named `revision`, which must hold each change (a put of
/// the value, or `None`: a delete).
#[derive(Clone, Debug)]
pub struct AckedWrite {
    pub what: String,
    pub revision: u64,
    pub changes: Vec<(Key, Option<Value>)>,
}

/// A transaction compare "version of `key` == `version`" that `held` (or not) against the
/// state at `revision`.
#[derive(Clone, Debug)]
pub struct VersionCompare {
    pub key: Key,
    pub version: u64,
    pub revision: u64,
    pub held: bool,
}

/// Everything [`check`] judges.
#[derive(Clone, Debug, Default)]
pub struct WatchInput {
    pub reference: Reference,
    pub watchers: Vec<WatcherLog>,
    pub reads: Vec<RangeRead>,
    pub writes: Vec<AckedWrite>,
    pub compares: Vec<VersionCompare>,
}

/// The verdict and what it covered.
#[derive(Clone, Debug, Default)]
pub struct WatchReport {
    /// The first [`VIOLATIONS_REPORTED_MAX`] violations; empty = all checks passed.
    pub violations: Vec<String>,
    pub violations_total: usize,
    pub revisions: u64,
    pub watchers: usize,
    pub deliveries: u64,
    pub resumes: u64,
    pub cancels: u64,
    pub reads: usize,
    pub writes: usize,
    pub compares: usize,
}

impl WatchReport {
    pub fn passed(&self) -> bool {
        self.violations_total == 0
    }

    fn violation(&mut self, msg: String) {
        self.violations_total += 1;
        if self.violations.len() < VIOLATIONS_REPORTED_MAX {
            self.violations.push(msg);
        }
    }
}

/// Checks a run's watchers, reads, writes and compares against its reference (module docs).
pub fn check(input: &WatchInput) -> WatchReport {
    let mut report = WatchReport {
        revisions: input.reference.last(),
        watchers: input.watchers.len(),
        reads: input.reads.len(),
        writes: input.writes.len(),
        compares: input.compares.len(),
        ..WatchReport::default()
    };
    replay(input, &mut report);
    for w in &input.writes {
        check_write(&input.reference, w, &mut report);
    }
    for w in &input.watchers {
        check_watcher(&input.reference, w, &mut report);
    }
    report
}

/// A watcher over keys of several groups of a partitioned store, against the [`merged`]
/// per-key references of those keys: every delivery exactly one revision's events of its keys
/// (whole, compared in key order: across groups the order within a revision is the cursor's),
/// in increasing revision order, no gap up to the revision it passed, resumes from the one
/// after the last delivered — the watcher checks of [`check`].
///
/// [`merged`]: Reference::merged
pub fn check_span_watcher(reference: &Reference, w: &WatcherLog) -> WatchReport {
    let mut report = WatchReport {
        watchers: 1,
        ..WatchReport::default()
    };
    let mut sorted = w.clone();
    for step in &mut sorted.steps {
        if let WatchStep::Deliver { events, .. } = step {
            events.sort_by(|a, b| a.kv.key.cmp(&b.kv.key));
        }
    }
    check_watcher(reference, &sorted, &mut report);
    report
}

/// [`check`] for one key of a store whose revisions are per group (a partitioned cluster: a
/// key's revisions grow through splits and merges, but revision numbers of different keys
/// mean nothing to each other): `input.reference` holds only that key's revisions, from
/// wherever its first watcher started, so it has holes (other keys' revisions) and no state
/// before its first revision. The reference is checked from its first revision on — every
/// event of the key, stamped with its revision, each one's `prev_kv` equal to the event before
/// it, versions following — and the watchers and acknowledged writes exactly as [`check`]
/// does (a watcher's gap check skips revisions the reference does not hold: other keys').
/// Reads and compares are not judged here.
pub fn check_key(key: &[u8], input: &WatchInput) -> WatchReport {
    let mut report = WatchReport {
        revisions: input.reference.len() as u64,
        watchers: input.watchers.len(),
        writes: input.writes.len(),
        ..WatchReport::default()
    };
    let mut before: Option<Option<KeyValue>> = None;
    for (r, (rev, _)) in &input.reference.revisions {
        let [e] = rev.events.as_slice() else {
            report.violation(format!(
                "reference of {}: revision {r} holds {} events, not one",
                show(key),
                rev.events.len()
            ));
            continue;
        };
        if e.kv.key != key {
            report.violation(format!(
                "reference of {}: revision {r} changes {}",
                show(key),
                show(&e.kv.key)
            ));
            continue;
        }
        // The first revision's prior state is unknown here: taken from its prev_kv.
        let prior = before.take().unwrap_or_else(|| e.prev_kv.clone());
        let mut state: BTreeMap<Key, KeyValue> =
            prior.map(|kv| (key.to_vec(), kv)).into_iter().collect();
        apply_checked(&mut state, rev, &mut report);
        before = Some(state.remove(key));
    }
    for w in &input.writes {
        check_write(&input.reference, w, &mut report);
    }
    for w in &input.watchers {
        check_watcher(&input.reference, w, &mut report);
    }
    report
}

impl WatchReport {
    /// Adds `other`'s counts and violations (the reports of several keys as one).
    pub fn absorb(&mut self, other: WatchReport) {
        for v in other.violations {
            if self.violations.len() < VIOLATIONS_REPORTED_MAX {
                self.violations.push(v);
            }
        }
        self.violations_total += other.violations_total;
        self.revisions += other.revisions;
        self.watchers += other.watchers;
        self.deliveries += other.deliveries;
        self.resumes += other.resumes;
        self.cancels += other.cancels;
        self.reads += other.reads;
        self.writes += other.writes;
        self.compares += other.compares;
    }
}

/// Replays the reference from revision 1, checking it and answering the reads and compares
/// at their revisions on the way.
fn replay(input: &WatchInput, report: &mut WatchReport) {
    let mut reads: Vec<&RangeRead> = input.reads.iter().collect();
    reads.sort_by_key(|r| r.revision);
    let mut compares: Vec<&VersionCompare> = input.compares.iter().collect();
    compares.sort_by_key(|c| c.revision);
    let (mut next_read, mut next_compare) = (0, 0);
    let mut state: BTreeMap<Key, KeyValue> = BTreeMap::new();
    let last = input.reference.last();
    for revision in 0..=last {
        if revision > 0 {
            let Some(rev) = input.reference.get(revision) else {
                report.violation(format!(
                    "reference: revision {revision} was never applied by any replica, yet {last} was; \
                     reads and compares from here on are not checked"
                ));
                return;
            };
            apply_checked(&mut state, rev, report);
        }
        while let Some(r) = reads.get(next_read).filter(|r| r.revision == revision) {
            check_read(&state, r, report);
            next_read += 1;
        }
        while let Some(c) = compares
            .get(next_compare)
            .filter(|c| c.revision == revision)
        {
            let version = state.get(&c.key).map_or(0, |kv| kv.version);
            if (version == c.version) != c.held {
                report.violation(format!(
                    "txn compare: version({}) == {} {} at revision {revision}, but the key's version there is {version}",
                    show(&c.key),
                    c.version,
                    if c.held { "held" } else { "failed" },
                ));
            }
            next_compare += 1;
        }
    }
    for r in &reads[next_read..] {
        report.violation(format!(
            "read: n{} served [{}, {}) at revision {}, beyond every applied revision ({last})",
            r.node,
            show(&r.key),
            show(&r.range_end),
            r.revision
        ));
    }
}

/// Applies one reference revision to the replayed state, checking each event against it.
fn apply_checked(
    state: &mut BTreeMap<Key, KeyValue>,
    rev: &RevisionEvents,
    report: &mut WatchReport,
) {
    let r = rev.revision;
    if rev.events.is_empty() {
        report.violation(format!("reference: revision {r} has no events"));
    }
    for e in &rev.events {
        let key = &e.kv.key;
        let before = state.get(key);
        if e.kv.mod_revision != r {
            report.violation(format!(
                "reference: revision {r} holds an event for {} stamped mod_revision {}",
                show(key),
                e.kv.mod_revision
            ));
        }
        if e.prev_kv.as_ref() != before {
            report.violation(format!(
                "prev_kv: revision {r} says {} was {} before it, but it was {}",
                show(key),
                describe_kv(e.prev_kv.as_ref()),
                describe_kv(before)
            ));
        }
        match e.kind {
            EventKind::Put => {
                let (version, create) =
                    before.map_or((1, r), |b| (b.version + 1, b.create_revision));
                if (e.kv.version, e.kv.create_revision) != (version, create) {
                    report.violation(format!(
                        "reference: revision {r} puts {} at version {} created {}, expected version {version} created {create}",
                        show(key),
                        e.kv.version,
                        e.kv.create_revision
                    ));
                }
                state.insert(key.clone(), e.kv.clone());
            }
            EventKind::Delete => {
                if before.is_none() {
                    report.violation(format!(
                        "reference: revision {r} deletes {}, which did not exist",
                        show(key)
                    ));
                }
                state.remove(key);
            }
        }
    }
}

fn check_read(state: &BTreeMap<Key, KeyValue>, r: &RangeRead, report: &mut WatchReport) {
    let expected: Vec<&KeyValue> = state
        .values()
        .filter(|kv| in_range(&r.key, &r.range_end, &kv.key))
        .collect();
    let got: Vec<&KeyValue> = r.kvs.iter().collect();
    if got != expected {
        report.violation(format!(
            "read: n{} served [{}, {}) at revision {} as {} but the store then held {}",
            r.node,
            show(&r.key),
            show(&r.range_end),
            r.revision,
            describe_kvs(&got),
            describe_kvs(&expected)
        ));
    }
}

fn check_write(reference: &Reference, w: &AckedWrite, report: &mut WatchReport) {
    let Some(rev) = reference.get(w.revision) else {
        report.violation(format!(
            "write: {} was acknowledged at revision {}, which no replica applied",
            w.what, w.revision
        ));
        return;
    };
    for (key, value) in &w.changes {
        let found = rev.events.iter().any(|e| {
            &e.kv.key == key
                && match value {
                    Some(v) => e.kind == EventKind::Put && &e.kv.value == v,
                    None => e.kind == EventKind::Delete,
                }
        });
        if !found {
            report.violation(format!(
                "write: {} was acknowledged at revision {}, but that revision is {}",
                w.what,
                w.revision,
                describe_events(&rev.events)
            ));
            return;
        }
    }
}

/// One watcher's deliveries against the reference.
fn check_watcher(reference: &Reference, w: &WatcherLog, report: &mut WatchReport) {
    let name = format!("watcher {} ({}, from {})", w.id, describe(&w.spec), w.start);
    let mut last: Option<u64> = None;
    let mut delivered = BTreeSet::new();
    let mut cancelled = false;
    for step in &w.steps {
        match step {
            WatchStep::Attach { node, from, resume } => {
                let expected = last.map_or(w.start, |l| l + 1);
                if *resume {
                    report.resumes += 1;
                    if *from != expected {
                        report.violation(format!(
                            "{name}: resumed at n{node} from revision {from}, not {expected} (after the last delivered)"
                        ));
                    }
                }
            }
            WatchStep::Deliver {
                node,
                revision,
                events,
            } => {
                report.deliveries += 1;
                let at = format!("{name}: n{node} delivered revision {revision}");
                if cancelled {
                    report.violation(format!("{at} after the watcher was cancelled"));
                }
                match last {
                    Some(l) if *revision == l => report.violation(format!("{at} twice")),
                    Some(l) if *revision < l => {
                        report.violation(format!("{at} after revision {l} (out of order)"))
                    }
                    _ => {}
                }
                if *revision < w.start {
                    report.violation(format!("{at}, before its start"));
                }
                check_delivery(reference, &w.spec, *revision, events, &at, report);
                delivered.insert(*revision);
                last = Some(last.map_or(*revision, |l| l.max(*revision)));
            }
            WatchStep::Cancel {
                node,
                from,
                compact_revision,
            } => {
                report.cancels += 1;
                cancelled = true;
                if from >= compact_revision {
                    report.violation(format!(
                        "{name}: n{node} cancelled it as compacted at {compact_revision}, but it asked from {from}"
                    ));
                }
            }
        }
    }
    for revision in w.start.max(1)..=w.passed {
        let Some(rev) = reference.get(revision) else {
            continue; // A hole in the reference is reported by the replay.
        };
        if !delivered.contains(&revision) && !w.spec.select(rev).is_empty() {
            report.violation(format!(
                "{name}: gap: revision {revision} ({}) was never delivered, though the watcher passed revision {}",
                describe_events(&rev.events),
                w.passed
            ));
            return;
        }
    }
}

/// One delivery must be exactly, and all of, the revision's events the watcher selects.
fn check_delivery(
    reference: &Reference,
    spec: &WatchSpec,
    revision: u64,
    events: &[WatchEvent],
    at: &str,
    report: &mut WatchReport,
) {
    let Some(rev) = reference.get(revision) else {
        report.violation(format!("{at}, which no replica applied"));
        return;
    };
    let expected = spec.select(rev);
    if events == expected.as_slice() {
        return;
    }
    if !events.is_empty()
        && events.len() < expected.len()
        && events.iter().all(|e| expected.contains(e))
    {
        report.violation(format!(
            "{at} split: {} of its {} watched events ({} of {})",
            events.len(),
            expected.len(),
            describe_events(events),
            describe_events(&expected)
        ));
    } else {
        report.violation(format!(
            "{at} as {} but it is {}",
            describe_events(events),
            describe_events(&expected)
        ));
    }
}

fn show(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "\"\"".into();
    }
    if bytes == [0] {
        return "\\0".into();
    }
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe_kv(kv: Option<&KeyValue>) -> String {
    match kv {
        None => "absent".into(),
        Some(kv) => format!(
            "{}={} (v{} c{} m{})",
            show(&kv.key),
            show(&kv.value),
            kv.version,
            kv.create_revision,
            kv.mod_revision
        ),
    }
}

fn describe_kvs(kvs: &[&KeyValue]) -> String {
    let parts: Vec<String> = kvs.iter().map(|kv| describe_kv(Some(kv))).collect();
    format!("[{}]", parts.join(", "))
}

/// Events, short: `put k1=v (prev …)`, `delete k2`.
pub fn describe_events(events: &[WatchEvent]) -> String {
    let parts: Vec<String> = events
        .iter()
        .map(|e| match e.kind {
            EventKind::Put => format!(
                "put {}={} v{} (prev {})",
                show(&e.kv.key),
                show(&e.kv.value),
                e.kv.version,
                describe_kv(e.prev_kv.as_ref())
            ),
            EventKind::Delete => format!(
                "delete {} (prev {})",
                show(&e.kv.key),
                describe_kv(e.prev_kv.as_ref())
            ),
        })
        .collect();
    format!("[{}]", parts.join("; "))
}
