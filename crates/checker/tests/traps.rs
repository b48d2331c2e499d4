//! Hand-made histories: the classic linearizability traps must be caught, and the legal but
//! tricky ones (unknown outcomes, only-one-order concurrency, touching intervals) must pass.

use std::time::Duration;
use synod_checker::{CheckOptions, Report, Verdict, check_history};
use synod_core::history::{Expected, History, HistoryOp, OpKind, Output, ReadConsistency};

const KEY: &str = "k1";

fn op(client: u64, kind: OpKind, call: u64, ret: u64) -> HistoryOp {
    HistoryOp {
        client,
        op: kind,
        key: KEY.to_string(),
        value: None,
        expected: None,
        consistency: ReadConsistency::Linearizable,
        output: Some(Output::default()),
        call,
        ret: Some(ret),
    }
}

/// get → `value` at `version`.
fn get(client: u64, value: &str, version: u64, call: u64, ret: u64) -> HistoryOp {
    HistoryOp {
        output: Some(Output {
            value: Some(value.into()),
            version: Some(version),
            ..Output::default()
        }),
        ..op(client, OpKind::Get, call, ret)
    }
}

/// get → key absent.
fn get_absent(client: u64, call: u64, ret: u64) -> HistoryOp {
    HistoryOp {
        output: Some(Output {
            version: Some(0),
            ..Output::default()
        }),
        ..op(client, OpKind::Get, call, ret)
    }
}

/// put `value` with no version in the output.
fn put(client: u64, value: &str, call: u64, ret: u64) -> HistoryOp {
    HistoryOp {
        value: Some(value.into()),
        ..op(client, OpKind::Put, call, ret)
    }
}

/// put `value` → version written.
fn put_v(client: u64, value: &str, version: u64, call: u64, ret: u64) -> HistoryOp {
    HistoryOp {
        output: Some(Output {
            version: Some(version),
            ..Output::default()
        }),
        ..put(client, value, call, ret)
    }
}

fn delete(client: u64, deleted: u64, call: u64, ret: u64) -> HistoryOp {
    HistoryOp {
        output: Some(Output {
            deleted: Some(deleted),
            ..Output::default()
        }),
        ..op(client, OpKind::Delete, call, ret)
    }
}

fn cas(
    client: u64,
    expected: Expected,
    new: Option<&str>,
    succeeded: bool,
    call: u64,
    ret: u64,
) -> HistoryOp {
    HistoryOp {
        value: new.map(Into::into),
        expected: Some(expected),
        output: Some(Output {
            succeeded: Some(succeeded),
            ..Output::default()
        }),
        ..op(client, OpKind::Cas, call, ret)
    }
}

/// The client never learned the outcome and never saw a return.
fn unknown(mut o: HistoryOp) -> HistoryOp {
    o.output = None;
    o.ret = None;
    o
}

fn check(ops: Vec<HistoryOp>) -> Report {
    let history = History {
        meta: serde_json::Value::Null,
        ops,
    };
    check_history(&history, &CheckOptions::default())
}

fn assert_linearizable(ops: Vec<HistoryOp>) -> Report {
    let r = check(ops);
    assert_eq!(r.verdict, Verdict::Linearizable, "{}", r.render());
    r
}

/// Asserts a violation whose witness has at most `witness_max` ops and includes `must`.
fn assert_violation(ops: Vec<HistoryOp>, witness_max: usize, must: &[&HistoryOp]) -> Report {
    let r = check(ops);
    assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.render());
    let v = r
        .violation
        .as_ref()
        .expect("a violation comes with an explanation");
    assert_eq!(v.key, KEY);
    assert!(
        !v.ops.is_empty() && v.ops.len() <= witness_max,
        "witness of {} ops:\n{}",
        v.ops.len(),
        r.render()
    );
    for m in must {
        assert!(v.ops.contains(m), "witness lacks {m:?}:\n{}", r.render());
    }
    r
}

#[test]
fn empty_history_is_linearizable() {
    let r = assert_linearizable(vec![]);
    assert_eq!((r.keys_checked, r.ops_checked, r.ops_skipped), (0, 0, 0));
}

#[test]
fn sequential_history_with_every_op_kind_is_linearizable() {
    let r = assert_linearizable(vec![
        get_absent(1, 0, 1),
        put_v(1, "a", 1, 2, 3),
        get(2, "a", 1, 4, 5),
        cas(1, Expected::Version(1), Some("b"), true, 6, 7),
        cas(2, Expected::Value("a".into()), Some("c"), false, 8, 9),
        get(2, "b", 2, 10, 11),
        cas(1, Expected::Value("b".into()), None, true, 12, 13),
        get_absent(1, 14, 15),
        delete(2, 0, 16, 17),
        cas(1, Expected::Absent, Some("d"), true, 18, 19),
        get(2, "d", 1, 20, 21),
        delete(1, 1, 22, 23),
        cas(2, Expected::Version(1), Some("e"), false, 24, 25),
    ]);
    assert_eq!((r.keys_checked, r.ops_checked), (1, 13));
}

#[test]
fn stale_read_after_a_newer_read_completed_is_caught() {
    let stale = get(3, "a", 1, 50, 60);
    let fresh = get(2, "b", 2, 30, 40);
    let r = assert_violation(
        vec![
            put(1, "a", 0, 10),
            put(1, "b", 20, 100),
            fresh.clone(),
            stale.clone(),
        ],
        4,
        &[&stale, &fresh],
    );
    let text = r.render();
    assert!(
        text.contains("NOT LINEARIZABLE") && text.contains("key \"k1\""),
        "{text}"
    );
    assert!(text.contains("get k1 -> \"a\" v1 at [50, 60]"), "{text}");
}

#[test]
fn two_concurrent_cas_from_the_same_expected_value_cannot_both_succeed() {
    let c1 = cas(2, Expected::Value("a".into()), Some("b"), true, 20, 50);
    let c2 = cas(3, Expected::Value("a".into()), Some("c"), true, 25, 55);
    assert_violation(
        vec![put(1, "a", 0, 10), c1.clone(), c2.clone()],
        3,
        &[&c1, &c2],
    );
    // One of them failing is fine, in either order.
    assert_linearizable(vec![
        put(1, "a", 0, 10),
        cas(2, Expected::Value("a".into()), Some("b"), false, 20, 50),
        cas(3, Expected::Value("a".into()), Some("c"), true, 25, 55),
        get(1, "c", 2, 60, 70),
    ]);
}

#[test]
fn a_read_of_a_value_never_written_is_caught() {
    let bogus = get(2, "z", 1, 20, 30);
    let r = assert_violation(vec![put(1, "a", 0, 10), bogus.clone()], 2, &[&bogus]);
    assert!(r.render().contains("\"z\""));
}

#[test]
fn a_lost_update_is_caught() {
    // The second write's version says it never saw the first, acknowledged one.
    let first = put_v(1, "a", 1, 0, 10);
    let second = put_v(2, "b", 1, 20, 30);
    assert_violation(vec![first.clone(), second.clone()], 2, &[&first, &second]);
    // Read-modify-write on the version: two increments from v1 both applied is a lost update.
    let inc1 = cas(2, Expected::Version(1), Some("x"), true, 20, 40);
    let inc2 = cas(3, Expected::Version(1), Some("y"), true, 50, 60);
    assert_violation(
        vec![put(1, "a", 0, 10), inc1.clone(), inc2.clone()],
        3,
        &[&inc1, &inc2],
    );
}

#[test]
fn a_delete_seen_and_then_unseen_is_caught() {
    let seen = get_absent(2, 30, 40);
    let unseen = get(3, "a", 1, 50, 60);
    assert_violation(
        vec![
            put(1, "a", 0, 10),
            delete(1, 1, 20, 100),
            seen.clone(),
            unseen.clone(),
        ],
        4,
        &[&seen, &unseen],
    );
    // The same reads in the other order are fine.
    assert_linearizable(vec![
        put(1, "a", 0, 10),
        delete(1, 1, 20, 100),
        get(3, "a", 1, 30, 40),
        get_absent(2, 50, 60),
    ]);
}

#[test]
fn version_mismatch_is_caught() {
    let wrong = get(2, "a", 2, 20, 30);
    assert_violation(vec![put_v(1, "a", 1, 0, 10), wrong.clone()], 2, &[&wrong]);
    // delete reporting a deletion of a key that does not exist
    let phantom = delete(1, 1, 0, 10);
    assert_violation(vec![phantom.clone()], 1, &[&phantom]);
}

#[test]
fn unknown_outcome_may_take_effect_late() {
    // The put was called at 20 and never answered; it may land between the two reads.
    assert_linearizable(vec![
        put_v(1, "a", 1, 0, 10),
        unknown(put(2, "b", 20, 0)),
        get(3, "a", 1, 30, 40),
        get(3, "b", 2, 100, 110),
    ]);
    // A timed-out cas (return known, outcome not) that did take effect.
    let mut timed_out = cas(2, Expected::Version(1), Some("c"), true, 20, 25);
    timed_out.output = None;
    assert_linearizable(vec![
        put(1, "a", 0, 10),
        timed_out,
        get(3, "c", 2, 100, 110),
    ]);
}

#[test]
fn unknown_outcome_may_never_take_effect_but_cannot_be_undone() {
    assert_linearizable(vec![
        put(1, "a", 0, 10),
        unknown(put(2, "b", 20, 0)),
        get(3, "a", 1, 100, 110),
    ]);
    // Once seen, the unknown write cannot be un-seen.
    let after = get(3, "a", 1, 200, 210);
    assert_violation(
        vec![
            put(1, "a", 0, 10),
            unknown(put(2, "b", 20, 0)),
            get(3, "b", 2, 100, 110),
            after.clone(),
        ],
        4,
        &[&after],
    );
    // An unknown write never takes effect before its call.
    let early = get(3, "b", 2, 5, 15);
    assert_violation(
        vec![
            put(1, "a", 0, 10),
            early.clone(),
            unknown(put(2, "b", 20, 0)),
        ],
        3,
        &[&early],
    );
}

#[test]
fn concurrent_ops_linearizable_in_only_one_non_obvious_order() {
    // Both puts span everything. The reads force: put b, get b v1, put a, get a v2 — the
    // reverse of the call order of the puts.
    assert_linearizable(vec![
        put(1, "a", 0, 100),
        put(2, "b", 1, 100),
        get(3, "b", 1, 10, 20),
        get(3, "a", 2, 30, 40),
    ]);
    // Three concurrent CAS chained by versions, called in the reverse of their only order.
    assert_linearizable(vec![
        put(4, "v", 0, 5),
        cas(1, Expected::Version(3), Some("z"), true, 10, 100),
        cas(2, Expected::Version(2), Some("y"), true, 11, 100),
        cas(3, Expected::Version(1), Some("x"), true, 12, 100),
        get(4, "z", 4, 110, 120),
    ]);
}

#[test]
fn touching_intervals_count_as_concurrent() {
    assert_linearizable(vec![put(1, "a", 0, 10), get_absent(2, 10, 20)]);
}

#[test]
fn sequential_and_unknown_reads_are_skipped() {
    let mut seq = get(2, "old", 7, 20, 30);
    seq.consistency = ReadConsistency::Sequential;
    let r = assert_linearizable(vec![put(1, "a", 0, 10), seq, unknown(get(3, "x", 1, 5, 0))]);
    assert_eq!((r.ops_checked, r.ops_skipped), (1, 2));
}

#[test]
fn a_violation_on_one_key_among_many_decides_the_verdict() {
    let mut ops = Vec::new();
    for k in 0..20u64 {
        let key = format!("key{k}");
        let mut p = put_v(k, "a", 1, 10 * k, 10 * k + 5);
        p.key = key.clone();
        let mut g = get(k + 100, "a", 1, 10 * k + 6, 10 * k + 9);
        g.key = key;
        ops.push(p);
        ops.push(g);
    }
    let mut bad = get(999, "a", 1, 0, 1);
    bad.key = "key7".into();
    ops.push(bad.clone());
    let r = check_history(
        &History {
            meta: serde_json::Value::Null,
            ops,
        },
        &CheckOptions::default(),
    );
    assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.render());
    let v = r.violation.expect("explained");
    assert_eq!(v.key, "key7");
    assert!(v.ops.contains(&bad));
}

#[test]
fn an_exhausted_budget_is_unknown_never_a_pass() {
    let history =
        synod_checker::generate::linearizable_history(&synod_checker::generate::GenOptions {
            ops: 3000,
            keys: 1,
            ..Default::default()
        });
    let r = check_history(
        &history,
        &CheckOptions {
            time_budget: Duration::ZERO,
        },
    );
    assert_eq!(r.verdict, Verdict::Unknown, "{}", r.render());
    let reason = r.unknown_reason.expect("a reason");
    assert!(
        reason.contains("key \"k0\"") && reason.contains("budget"),
        "{reason}"
    );
    // With time it passes.
    assert_eq!(
        check_history(&history, &CheckOptions::default()).verdict,
        Verdict::Linearizable
    );
}

#[test]
fn invalid_ops_make_the_verdict_unknown_with_a_reason() {
    let mut backwards = put(1, "a", 10, 0);
    backwards.ret = Some(5);
    let r = check(vec![backwards]);
    assert_eq!(r.verdict, Verdict::Unknown);
    assert!(r.unknown_reason.unwrap_or_default().contains("before call"));
}
