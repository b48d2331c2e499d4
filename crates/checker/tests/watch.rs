//! The watch checker on hand-made histories: a correct one passes, and each kind of broken
//! watch stream (a gap, a duplicate, a wrong prev_kv, a split revision, a resume in the wrong
//! place, an unjustified cancellation) and each broken reply (a read at a past revision, an
//! acknowledged write at the wrong revision, replicas that disagree) is named.

use std::sync::Arc;
use synod_checker::watch::{
    AckedWrite, RangeRead, Reference, WatchInput, WatchSpec, WatchStep, WatcherLog, check,
};
use synod_core::kv::{EventKind, KeyValue, RevisionEvents, WatchEvent};

fn kv(key: &str, value: &str, version: u64, create: u64, modr: u64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modr,
        version,
        ..Default::default()
    }
}

fn put(kv_after: KeyValue, prev: Option<KeyValue>) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Put,
        kv: kv_after,
        prev_kv: prev,
    }
}

fn delete(key: &str, revision: u64, prev: KeyValue) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: key.into(),
            mod_revision: revision,
            ..Default::default()
        },
        prev_kv: Some(prev),
    }
}

/// 1: put a=1 · 2: put b=1 · 3: txn {put a=2, delete b} · 4: put c=1
fn history() -> Vec<Arc<RevisionEvents>> {
    let a1 = kv("a", "1", 1, 1, 1);
    let b1 = kv("b", "1", 1, 2, 2);
    let revs = vec![
        vec![put(a1.clone(), None)],
        vec![put(b1.clone(), None)],
        vec![put(kv("a", "2", 2, 1, 3), Some(a1)), delete("b", 3, b1)],
        vec![put(kv("c", "1", 1, 4, 4), None)],
    ];
    revs.into_iter()
        .enumerate()
        .map(|(i, events)| {
            Arc::new(RevisionEvents {
                revision: i as u64 + 1,
                events,
            })
        })
        .collect()
}

fn reference(revs: &[Arc<RevisionEvents>]) -> Reference {
    let mut r = Reference::default();
    for rev in revs {
        r.observe(1, rev).expect("one replica agrees with itself");
    }
    r
}

fn everything() -> WatchSpec {
    WatchSpec {
        key: vec![0],
        range_end: vec![0],
        no_put: false,
        no_delete: false,
        prev_kv: true,
    }
}

fn deliver(revs: &[Arc<RevisionEvents>], spec: &WatchSpec, revision: u64) -> WatchStep {
    WatchStep::Deliver {
        node: 1,
        revision,
        events: spec.select(&revs[revision as usize - 1]),
    }
}

/// A watcher of everything from revision 1 that was delivered `revisions` and passed 4.
fn watcher(revs: &[Arc<RevisionEvents>], revisions: &[u64]) -> WatcherLog {
    let spec = everything();
    let mut steps = vec![WatchStep::Attach {
        node: 1,
        from: 1,
        resume: false,
    }];
    steps.extend(revisions.iter().map(|&r| deliver(revs, &spec, r)));
    WatcherLog {
        id: 1,
        spec,
        start: 1,
        steps,
        passed: 4,
    }
}

fn violations(input: &WatchInput) -> Vec<String> {
    let report = check(input);
    assert_eq!(report.violations.len(), report.violations_total);
    report.violations
}

fn single_violation(input: &WatchInput, needle: &str) {
    let v = violations(input);
    assert_eq!(
        v.len(),
        1,
        "expected one violation naming {needle:?}, got {v:#?}"
    );
    assert!(v[0].contains(needle), "{needle:?} not in {:?}", v[0]);
}

#[test]
fn a_correct_history_passes() {
    let revs = history();
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![watcher(&revs, &[1, 2, 3, 4])],
        ..Default::default()
    };
    assert_eq!(violations(&input), Vec::<String>::new());
    let r = check(&input);
    assert_eq!((r.revisions, r.deliveries), (4, 4));
}

#[test]
fn a_gap_is_detected() {
    let revs = history();
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![watcher(&revs, &[1, 2, 4])],
        ..Default::default()
    };
    single_violation(&input, "gap: revision 3");
}

#[test]
fn a_gap_at_the_end_is_detected_up_to_what_the_watcher_passed() {
    let revs = history();
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![watcher(&revs, &[1, 2, 3])],
        ..Default::default()
    };
    single_violation(&input, "gap: revision 4");
}

#[test]
fn a_duplicate_is_detected() {
    let revs = history();
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![watcher(&revs, &[1, 2, 2, 3, 4])],
        ..Default::default()
    };
    single_violation(&input, "delivered revision 2 twice");
}

#[test]
fn out_of_order_is_detected() {
    let revs = history();
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![watcher(&revs, &[1, 3, 2, 4])],
        ..Default::default()
    };
    single_violation(&input, "out of order");
}

#[test]
fn a_wrong_prev_kv_in_the_applied_history_is_detected() {
    let mut revs = history();
    // Revision 3 claims a was "0" before it.
    let mut r3 = (*revs[2]).clone();
    r3.events[0].prev_kv = Some(kv("a", "0", 1, 1, 1));
    revs[2] = Arc::new(r3);
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![watcher(&revs, &[1, 2, 3, 4])],
        ..Default::default()
    };
    single_violation(&input, "prev_kv: revision 3 says a was a=0");
}

#[test]
fn a_wrong_prev_kv_in_a_delivery_is_detected() {
    let revs = history();
    let mut w = watcher(&revs, &[1, 2, 3, 4]);
    if let WatchStep::Deliver { events, .. } = &mut w.steps[3] {
        events[0].prev_kv = None;
    }
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![w],
        ..Default::default()
    };
    single_violation(&input, "delivered revision 3 as");
}

#[test]
fn a_split_revision_is_detected() {
    let revs = history();
    let mut w = watcher(&revs, &[1, 2, 3, 4]);
    if let WatchStep::Deliver { events, .. } = &mut w.steps[3] {
        events.truncate(1);
    }
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![w],
        ..Default::default()
    };
    single_violation(&input, "split: 1 of its 2 watched events");
}

#[test]
fn ranges_and_filters_select_what_is_watched() {
    let revs = history();
    // Key "b" without puts: only revision 3's delete concerns it.
    let spec = WatchSpec {
        key: "b".into(),
        range_end: Vec::new(),
        no_put: true,
        no_delete: false,
        prev_kv: false,
    };
    let w = WatcherLog {
        id: 2,
        spec: spec.clone(),
        start: 1,
        steps: vec![deliver(&revs, &spec, 3)],
        passed: 4,
    };
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![w.clone()],
        ..Default::default()
    };
    assert_eq!(violations(&input), Vec::<String>::new());
    // Without it: a gap.
    let mut missing = w;
    missing.steps.clear();
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![missing],
        ..Default::default()
    };
    single_violation(&input, "gap: revision 3");
}

#[test]
fn a_resume_must_continue_right_after_the_last_delivery() {
    let revs = history();
    let mut w = watcher(&revs, &[1, 2]);
    w.steps.push(WatchStep::Attach {
        node: 2,
        from: 4,
        resume: true,
    });
    w.steps.push(deliver(&revs, &w.spec.clone(), 4));
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![w],
        ..Default::default()
    };
    let v = violations(&input);
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(
        v[0].contains("resumed at n2 from revision 4, not 3"),
        "{v:#?}"
    );
    assert!(v[1].contains("gap: revision 3"), "{v:#?}");
}

#[test]
fn a_cancellation_needs_a_compacted_start() {
    let revs = history();
    let mut w = watcher(&revs, &[1, 2]);
    w.passed = 2;
    w.steps.push(WatchStep::Cancel {
        node: 1,
        from: 3,
        compact_revision: 3,
    });
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![w.clone()],
        ..Default::default()
    };
    single_violation(
        &input,
        "cancelled it as compacted at 3, but it asked from 3",
    );
    if let Some(WatchStep::Cancel {
        compact_revision, ..
    }) = w.steps.last_mut()
    {
        *compact_revision = 4;
    }
    let input = WatchInput {
        reference: reference(&revs),
        watchers: vec![w],
        ..Default::default()
    };
    assert_eq!(violations(&input), Vec::<String>::new());
}

#[test]
fn replicas_that_disagree_on_a_revision_are_named() {
    let revs = history();
    let mut r = reference(&revs);
    let other = Arc::new(RevisionEvents {
        revision: 4,
        events: vec![put(kv("c", "other", 1, 4, 4), None)],
    });
    let err = r.observe(2, &other).unwrap_err();
    assert!(
        err.contains("revision 4 differs between replicas: n1"),
        "{err}"
    );
    // The same events from another replica (another allocation) agree.
    r.observe(3, &Arc::new((*revs[3]).clone())).unwrap();
}

#[test]
fn reads_at_past_revisions_are_checked_against_the_replayed_store() {
    let revs = history();
    let read = |revision, kvs| RangeRead {
        node: 2,
        key: vec![0],
        range_end: vec![0],
        revision,
        kvs,
    };
    let good = vec![
        read(0, vec![]),
        read(2, vec![kv("a", "1", 1, 1, 1), kv("b", "1", 1, 2, 2)]),
        read(3, vec![kv("a", "2", 2, 1, 3)]),
    ];
    let input = WatchInput {
        reference: reference(&revs),
        reads: good,
        ..Default::default()
    };
    assert_eq!(violations(&input), Vec::<String>::new());
    // Revision 3's state served as of revision 2 (the delete of b missed).
    let input = WatchInput {
        reference: reference(&revs),
        reads: vec![read(3, vec![kv("a", "2", 2, 1, 3), kv("b", "1", 1, 2, 2)])],
        ..Default::default()
    };
    single_violation(&input, "read: n2 served");
}

#[test]
fn an_acknowledged_write_must_be_in_the_revision_its_reply_names() {
    let revs = history();
    let write = |revision| AckedWrite {
        what: "put a=2".into(),
        revision,
        changes: vec![("a".into(), Some("2".into()))],
    };
    let input = WatchInput {
        reference: reference(&revs),
        writes: vec![write(3)],
        ..Default::default()
    };
    assert_eq!(violations(&input), Vec::<String>::new());
    let input = WatchInput {
        reference: reference(&revs),
        writes: vec![write(4)],
        ..Default::default()
    };
    single_violation(&input, "put a=2 was acknowledged at revision 4");
}

#[test]
fn a_hole_in_the_reference_is_reported() {
    let revs = history();
    let mut r = Reference::default();
    for rev in [&revs[0], &revs[1], &revs[3]] {
        r.observe(1, rev).unwrap();
    }
    let input = WatchInput {
        reference: r,
        ..Default::default()
    };
    single_violation(&input, "revision 3 was never applied");
}

/// One key of a partitioned store: revisions 4, 9 and 12 (other keys took those between, in
/// its group or others), its first revision's prior state known only from its prev_kv.
fn key_history() -> Vec<Arc<RevisionEvents>> {
    let k3 = kv("k", "3", 3, 2, 4);
    let k4 = kv("k", "4", 4, 2, 9);
    let revs = [
        (4, put(k3.clone(), Some(kv("k", "2", 2, 2, 3)))),
        (9, put(k4.clone(), Some(k3))),
        (12, delete("k", 12, k4)),
    ];
    revs.into_iter()
        .map(|(revision, e)| {
            Arc::new(RevisionEvents {
                revision,
                events: vec![e],
            })
        })
        .collect()
}

fn key_watcher(id: u64, steps: &[(u64, &Arc<RevisionEvents>)], passed: u64) -> WatcherLog {
    WatcherLog {
        id,
        spec: WatchSpec {
            key: b"k".to_vec(),
            range_end: Vec::new(),
            no_put: false,
            no_delete: false,
            prev_kv: true,
        },
        start: 4,
        steps: std::iter::once(WatchStep::Attach {
            node: 1,
            from: 4,
            resume: false,
        })
        .chain(steps.iter().map(|(r, rev)| WatchStep::Deliver {
            node: 1,
            revision: *r,
            events: rev.events.clone(),
        }))
        .collect(),
        passed,
    }
}

#[test]
fn one_keys_history_with_holes_passes_and_a_skipped_revision_is_named() {
    use synod_checker::watch::check_key;
    let revs = key_history();
    let write = AckedWrite {
        what: "put k=4".into(),
        revision: 9,
        changes: vec![(b"k".to_vec(), Some(b"4".to_vec()))],
    };
    let good = WatchInput {
        reference: reference(&revs),
        watchers: vec![key_watcher(
            1,
            &[(4, &revs[0]), (9, &revs[1]), (12, &revs[2])],
            12,
        )],
        writes: vec![write.clone()],
        ..WatchInput::default()
    };
    let r = check_key(b"k", &good);
    assert!(r.passed(), "{:?}", r.violations);
    assert_eq!((r.revisions, r.deliveries, r.writes), (3, 3, 1));

    // A watcher that skipped revision 9 (a follower that moved on too early) is named.
    let skipped = WatchInput {
        watchers: vec![key_watcher(2, &[(4, &revs[0]), (12, &revs[2])], 12)],
        ..good.clone()
    };
    let r = check_key(b"k", &skipped);
    assert!(
        r.violations.iter().any(|v| v.contains("gap: revision 9")),
        "{:?}",
        r.violations
    );

    // A reference whose revision 9 every watcher missed: the next event's prev_kv and the
    // acknowledged write at 9 both say so.
    let holed = WatchInput {
        reference: reference(&[revs[0].clone(), revs[2].clone()]),
        watchers: Vec::new(),
        ..good
    };
    let r = check_key(b"k", &holed);
    assert!(
        r.violations
            .iter()
            .any(|v| v.starts_with("prev_kv: revision 12")),
        "{:?}",
        r.violations
    );
    assert!(r.violations_total >= 2, "{:?}", r.violations);
}
