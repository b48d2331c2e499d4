//! Chaos watchers on a partitioned cluster: revisions are per group, so there is no
//! whole-keyspace stream to be the reference. Each key is its own: every member hosts one
//! watcher per workload key (`prev_kv`, from now), and a key's deliveries, from every member,
//! are its reference — a key's revisions keep growing as it moves between groups (a split's new
//! group goes on from its parent's revision, a merge from the larger of the two), so one key's
//! history is one increasing sequence, checked by [`synod_checker::watch::check_key`]: members
//! agree on each of the key's revisions, each event's `prev_kv` is the event before it, every
//! watcher saw every revision of the key from its start to the last it passed (through the
//! splits and merges its cursor followed), and every acknowledged write of the key sits in
//! the revision its reply names.
//!
//! Every member also hosts one watcher of the prefix `k` — every workload key, so keys of
//! several groups: a merged stream (each revision once every group it reads closed it). Its
//! deliveries feed the keys' references too (one event each), and it is checked against them
//! merged ([`synod_checker::watch::check_span_watcher`]): every revision whole (all its keys'
//! events at that revision, in one delivery), in increasing order, no gap, resumed from the
//! revision after its last.
//!
//! A watcher that breaks is resumed from its last revision + 1 on the next member, as in an
//! unpartitioned run; where the key's group has no history that far back (a split's new group
//! starts without history), the member cancels it as compacted and it ends there.

use super::{Planned, State, WatchRun, outcome, spec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use synod_checker::watch::{
    AckedWrite, Reference, WatchInput, WatchReport, WatchSpec, WatchStep, check_key,
    check_span_watcher,
};
use synod_core::NodeId;
use synod_core::kv::{Key, RevisionEvents, WatchEvent};

/// Whether a partitioned run's watcher watches several keys (the prefix watcher).
pub fn is_span(spec: &WatchSpec) -> bool {
    !spec.range_end.is_empty()
}

/// A prefix watcher's delivery of `revision`, as each key's reference sees it: one event each
/// (members must agree with the keys' own watchers on it).
pub(super) fn observe_span(st: &mut State, node: NodeId, revision: u64, events: Vec<WatchEvent>) {
    let mut problems = Vec::new();
    if let Some(refs) = st.keyed.as_mut() {
        for e in events {
            let key = e.kv.key.clone();
            let one = Arc::new(RevisionEvents {
                revision,
                events: vec![e],
            });
            if let Err(p) = refs.entry(key).or_default().observe(node, &one) {
                problems.push(p);
            }
        }
    }
    for p in problems {
        st.problem(p);
    }
}

/// Per member, one watcher of each workload key (`k0` … `k{keys-1}`) and one of them all.
pub fn plan(members: usize, keys: usize) -> Vec<Planned> {
    let mut out = Vec::with_capacity(members * (keys + 1));
    for home in 0..members {
        out.push(Planned {
            spec: spec(b"k".to_vec(), b"l".to_vec(), "", true),
            query: "prefix=k&prev_kv=true".into(),
            whole: false,
            from_start: false,
            home,
        });
        for i in 0..keys.max(1) {
            let k = format!("k{i}");
            out.push(Planned {
                spec: spec(k.clone().into_bytes(), Vec::new(), "", true),
                query: format!("key={k}&prev_kv=true"),
                whole: true,
                from_start: false,
                home,
            });
        }
    }
    out
}

/// The per-key verdict. A key's acknowledged writes beyond its reference are not checked
/// only when every watcher of that key had ended (cancelled as compacted) — otherwise they
/// had `wait_for_keys` to arrive, and one missing is a violation.
pub fn verdict(run: WatchRun, writes: Vec<AckedWrite>) -> (bool, String, Value) {
    let refs = run.keyed.clone().unwrap_or_default();
    let mut per_key: BTreeMap<Key, Vec<AckedWrite>> = BTreeMap::new();
    for w in writes {
        for (k, change) in &w.changes {
            per_key.entry(k.clone()).or_default().push(AckedWrite {
                what: w.what.clone(),
                revision: w.revision,
                changes: vec![(k.clone(), change.clone())],
            });
        }
    }
    let mut keys: Vec<Key> = refs.keys().cloned().collect();
    keys.extend(per_key.keys().filter(|k| !refs.contains_key(*k)).cloned());
    let (mut report, mut unchecked) = (WatchReport::default(), 0);
    for key in keys {
        let reference = refs.get(&key).cloned().unwrap_or_default();
        let watchers: Vec<_> = run
            .logs
            .iter()
            .filter(|l| l.spec.key == key)
            .cloned()
            .collect();
        let all_ended = !watchers.is_empty()
            && watchers
                .iter()
                .all(|l| matches!(l.steps.last(), Some(WatchStep::Cancel { .. })));
        let mut writes = per_key.remove(&key).unwrap_or_default();
        if all_ended {
            let before = writes.len();
            writes.retain(|w| w.revision <= reference.last());
            unchecked += before - writes.len();
        }
        let input = WatchInput {
            reference,
            watchers,
            writes,
            ..WatchInput::default()
        };
        report.absorb(check_key(&key, &input));
    }
    let merged = Reference::merged(refs.values());
    for span in run.logs.iter().filter(|l| is_span(&l.spec)) {
        report.absorb(check_span_watcher(&merged, span));
    }
    outcome(&run, &report, unchecked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_watches_every_key() {
        let p = plan(3, 4);
        assert_eq!(p.len(), 15);
        assert!(p.iter().all(|w| !w.from_start && w.spec.prev_kv));
        assert_eq!(p.iter().filter(|w| is_span(&w.spec)).count(), 3);
        assert!(p.iter().all(|w| w.whole != is_span(&w.spec)));
        let on_second: Vec<&str> = p
            .iter()
            .filter(|w| w.home == 1)
            .map(|w| w.query.as_str())
            .collect();
        assert_eq!(
            on_second,
            [
                "prefix=k&prev_kv=true",
                "key=k0&prev_kv=true",
                "key=k1&prev_kv=true",
                "key=k2&prev_kv=true",
                "key=k3&prev_kv=true"
            ]
        );
    }
}
