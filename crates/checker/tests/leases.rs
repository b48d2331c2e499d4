//! The lease checker on hand-made histories: leases that end on time, or early with a client's
//! excuse (a revoke, a delete or an overwrite of the key), pass; a key or a lease found gone
//! before a keep-alive's invoke time + TTL is named with the keep-alive that proved it alive,
//! and so is a lease the final probes still find after it must have run out.

use synod_checker::leases::{
    LeaseInput, LeaseOp, LeaseOpKind, LeaseOutcome, LeaseReport, Liveness, check, gone_by,
};

const L: i64 = 7;
const KEY: &str = "l/7/0";

fn op(kind: LeaseOpKind, call_ms: u64, ret_ms: u64, outcome: LeaseOutcome) -> LeaseOp {
    LeaseOp {
        client: 1,
        kind,
        call_us: call_ms * 1000,
        ret_us: Some(ret_ms * 1000),
        outcome,
        probe: false,
    }
}

fn unknown(kind: LeaseOpKind, call_ms: u64) -> LeaseOp {
    LeaseOp {
        client: 2,
        kind,
        call_us: call_ms * 1000,
        ret_us: None,
        outcome: LeaseOutcome::Unknown,
        probe: false,
    }
}

fn probe(kind: LeaseOpKind, call_ms: u64, outcome: LeaseOutcome) -> LeaseOp {
    LeaseOp {
        probe: true,
        ..op(kind, call_ms, call_ms + 5, outcome)
    }
}

fn grant(call_ms: u64, ttl_s: i64) -> LeaseOp {
    op(
        LeaseOpKind::Grant { lease: L, ttl_s },
        call_ms,
        call_ms + 5,
        LeaseOutcome::Renewed { ttl_s },
    )
}

fn keep_alive(call_ms: u64, ret_ms: u64, outcome: LeaseOutcome) -> LeaseOp {
    op(
        LeaseOpKind::KeepAlive { lease: L },
        call_ms,
        ret_ms,
        outcome,
    )
}

fn attach(call_ms: u64) -> LeaseOp {
    op(
        LeaseOpKind::Put {
            key: KEY.into(),
            lease: L,
        },
        call_ms,
        call_ms + 5,
        LeaseOutcome::Done,
    )
}

fn read(call_ms: u64, ret_ms: u64, outcome: LeaseOutcome) -> LeaseOp {
    op(
        LeaseOpKind::Read { key: KEY.into() },
        call_ms,
        ret_ms,
        outcome,
    )
}

fn run(ops: Vec<LeaseOp>) -> LeaseReport {
    check(&LeaseInput {
        ops,
        liveness: None,
    })
}

fn assert_passes(ops: Vec<LeaseOp>) -> LeaseReport {
    let r = run(ops);
    assert!(r.passed(), "expected a pass, got {:#?}", r.violations);
    r
}

/// Fails with exactly one violation containing every `needle`.
fn assert_fails(ops: Vec<LeaseOp>, needles: &[&str]) -> String {
    let r = run(ops);
    assert_eq!(r.violations_total, 1, "{:#?}", r.violations);
    let v = r.violations[0].clone();
    for n in needles {
        assert!(v.contains(n), "violation lacks {n:?}: {v}");
    }
    v
}

// ---- passes -------------------------------------------------------------------------------

#[test]
fn a_key_missing_after_the_last_keep_alive_plus_ttl_is_fine() {
    let r = assert_passes(vec![
        grant(0, 1),
        attach(10),
        keep_alive(300, 310, LeaseOutcome::Renewed { ttl_s: 1 }),
        read(600, 605, LeaseOutcome::Found { lease: L }),
        read(1_300, 1_305, LeaseOutcome::Missing),
        keep_alive(1_400, 1_410, LeaseOutcome::LeaseNotFound),
    ]);
    assert_eq!(r.renewals, 2);
    assert_eq!((r.absences, r.absences_before_deadline), (2, 0));
}

#[test]
fn a_revoke_explains_an_early_absence_even_with_unknown_outcome() {
    assert_passes(vec![
        grant(0, 3),
        attach(10),
        unknown(LeaseOpKind::Revoke { lease: L }, 500),
        read(600, 605, LeaseOutcome::Missing),
        keep_alive(700, 705, LeaseOutcome::LeaseNotFound),
    ]);
}

#[test]
fn a_delete_or_an_overwrite_without_the_lease_explains_a_missing_key() {
    let delete = op(
        LeaseOpKind::Delete { key: KEY.into() },
        100,
        105,
        LeaseOutcome::Done,
    );
    assert_passes(vec![
        grant(0, 3),
        attach(10),
        delete,
        read(200, 205, LeaseOutcome::Missing),
    ]);
    let overwrite = unknown(
        LeaseOpKind::Put {
            key: KEY.into(),
            lease: 0,
        },
        100,
    );
    assert_passes(vec![
        grant(0, 3),
        attach(10),
        overwrite,
        read(200, 205, LeaseOutcome::Found { lease: 0 }),
    ]);
}

#[test]
fn a_key_moved_to_another_lease_is_not_missing_from_it() {
    let other = op(
        LeaseOpKind::Put {
            key: KEY.into(),
            lease: 9,
        },
        100,
        105,
        LeaseOutcome::Done,
    );
    assert_passes(vec![
        grant(0, 3),
        attach(10),
        other,
        read(200, 205, LeaseOutcome::Found { lease: 9 }),
    ]);
}

#[test]
fn a_read_invoked_before_the_attaching_put_returned_proves_nothing() {
    assert_passes(vec![
        grant(0, 3),
        attach(100),
        read(102, 103, LeaseOutcome::Missing),
    ]);
}

#[test]
fn keep_alives_of_unknown_outcome_prove_nothing() {
    assert_passes(vec![
        grant(0, 1),
        attach(10),
        unknown(LeaseOpKind::KeepAlive { lease: L }, 900),
        read(1_100, 1_105, LeaseOutcome::Missing),
    ]);
}

#[test]
fn a_scan_judges_every_attached_key_under_its_prefix() {
    let scan = |call, keys: Vec<(String, i64)>| {
        op(
            LeaseOpKind::Scan {
                prefix: "l/".into(),
            },
            call,
            call + 5,
            LeaseOutcome::Keys(keys),
        )
    };
    let r = assert_passes(vec![
        grant(0, 1),
        attach(10),
        scan(500, vec![(KEY.into(), L)]),
        scan(1_100, vec![]),
    ]);
    assert_eq!(r.absences, 1);
}

// ---- violations ---------------------------------------------------------------------------

#[test]
fn a_key_missing_before_the_keep_alive_deadline_is_early_expiry() {
    let v = assert_fails(
        vec![
            grant(0, 1),
            attach(10),
            keep_alive(900, 910, LeaseOutcome::Renewed { ttl_s: 1 }),
            read(1_200, 1_205, LeaseOutcome::Missing),
        ],
        &[
            "early expiry",
            "key l/7/0",
            "read of l/7/0 [1200.0 ms, 1205.0 ms]",
            "keep-alive of lease 7 [900.0 ms, 910.0 ms] ok, ttl 1 s",
            "alive until 1900.0 ms",
            "695.0 ms early",
        ],
    );
    assert!(v.contains("put of l/7/0 attached to lease 7"), "{v}");
}

#[test]
fn a_keep_alive_answered_not_found_before_the_deadline_is_early_expiry() {
    assert_fails(
        vec![
            grant(0, 2),
            keep_alive(600, 610, LeaseOutcome::Renewed { ttl_s: 2 }),
            keep_alive(1_300, 1_320, LeaseOutcome::LeaseNotFound),
        ],
        &["early expiry: lease 7 gone", "alive until 2600.0 ms"],
    );
}

#[test]
fn time_to_live_and_attaching_puts_that_find_no_lease_count_too() {
    let ttl = op(
        LeaseOpKind::TimeToLive { lease: L },
        500,
        505,
        LeaseOutcome::LeaseNotFound,
    );
    assert_fails(vec![grant(0, 2), ttl], &["time-to-live of lease 7"]);
    let put = op(
        LeaseOpKind::Put {
            key: KEY.into(),
            lease: L,
        },
        500,
        505,
        LeaseOutcome::LeaseNotFound,
    );
    assert_fails(vec![grant(0, 2), put], &["lease 7 gone"]);
}

#[test]
fn a_delete_that_finished_before_the_attaching_put_excuses_nothing() {
    let delete = op(
        LeaseOpKind::Delete { key: KEY.into() },
        5,
        8,
        LeaseOutcome::Done,
    );
    assert_fails(
        vec![
            grant(0, 3),
            delete,
            attach(10),
            read(200, 205, LeaseOutcome::Missing),
        ],
        &["key l/7/0"],
    );
}

#[test]
fn a_revoke_invoked_after_the_read_or_refused_excuses_nothing() {
    let late = op(
        LeaseOpKind::Revoke { lease: L },
        300,
        305,
        LeaseOutcome::Done,
    );
    assert_fails(
        vec![
            grant(0, 3),
            attach(10),
            read(200, 205, LeaseOutcome::Missing),
            late,
        ],
        &["key l/7/0"],
    );
    let refused = op(
        LeaseOpKind::Revoke { lease: L },
        100,
        105,
        LeaseOutcome::LeaseNotFound,
    );
    // The refused revoke is itself an observation of the lease gone early: two violations.
    let r = run(vec![
        grant(0, 3),
        attach(10),
        refused,
        read(200, 205, LeaseOutcome::Missing),
    ]);
    assert_eq!(r.violations_total, 2, "{:#?}", r.violations);
}

#[test]
fn a_successful_keep_alive_after_a_missing_key_proves_the_key_vanished_early() {
    assert_fails(
        vec![
            grant(0, 1),
            attach(10),
            read(1_500, 1_505, LeaseOutcome::Missing),
            keep_alive(1_600, 1_605, LeaseOutcome::Renewed { ttl_s: 1 }),
        ],
        &["alive until 2600.0 ms"],
    );
}

#[test]
fn a_key_in_a_scan_missing_early_is_named() {
    let scan = op(
        LeaseOpKind::Scan {
            prefix: "l/".into(),
        },
        500,
        505,
        LeaseOutcome::Keys(vec![("l/8/0".into(), 8)]),
    );
    assert_fails(
        vec![grant(0, 1), attach(10), scan],
        &["key l/7/0", "scan of l/*"],
    );
}

// ---- liveness -----------------------------------------------------------------------------

const LIVENESS: Liveness = Liveness {
    settled_us: 5_000_000,
    expiry_bound_us: 1_000_000,
};

fn with_probes(probes: Vec<LeaseOp>) -> LeaseReport {
    let mut ops = vec![
        grant(0, 2),
        attach(10),
        keep_alive(6_000, 6_010, LeaseOutcome::Renewed { ttl_s: 2 }),
    ];
    ops.extend(probes);
    check(&LeaseInput {
        ops,
        liveness: Some(LIVENESS),
    })
}

#[test]
fn gone_by_counts_from_the_later_of_the_last_renewal_and_the_settling() {
    let ops = vec![
        grant(0, 2),
        keep_alive(6_000, 6_010, LeaseOutcome::Renewed { ttl_s: 2 }),
        op(
            LeaseOpKind::Grant { lease: 8, ttl_s: 1 },
            0,
            5,
            LeaseOutcome::Renewed { ttl_s: 1 },
        ),
        unknown(LeaseOpKind::Grant { lease: 9, ttl_s: 3 }, 100),
        op(
            LeaseOpKind::Grant {
                lease: 10,
                ttl_s: 3,
            },
            0,
            5,
            LeaseOutcome::Failed("lease already exists".into()),
        ),
    ];
    let by = gone_by(&ops, &LIVENESS);
    assert_eq!(by.get(&L), Some(&(6_010_000 + 2_000_000 + 1_000_000)));
    assert_eq!(by.get(&8), Some(&(5_000_000 + 1_000_000 + 1_000_000)));
    assert_eq!(by.get(&9), Some(&(5_000_000 + 3_000_000 + 1_000_000)));
    assert_eq!(by.get(&10), None, "a refused grant made no lease");
}

#[test]
fn probes_after_the_deadline_that_find_nothing_pass() {
    let r = with_probes(vec![
        probe(LeaseOpKind::List, 9_100, LeaseOutcome::Listed(vec![])),
        probe(
            LeaseOpKind::Scan {
                prefix: "l/".into(),
            },
            9_110,
            LeaseOutcome::Keys(vec![(KEY.into(), 0)]),
        ),
        probe(
            LeaseOpKind::KeepAlive { lease: L },
            9_120,
            LeaseOutcome::LeaseNotFound,
        ),
    ]);
    assert!(r.passed(), "{:#?}", r.violations);
    assert_eq!((r.liveness_judged, r.liveness_unjudged), (1, 0));
}

#[test]
fn a_probe_before_the_deadline_judges_nothing() {
    let r = with_probes(vec![probe(
        LeaseOpKind::KeepAlive { lease: L },
        8_000,
        LeaseOutcome::Renewed { ttl_s: 2 },
    )]);
    assert!(r.passed(), "{:#?}", r.violations);
    assert_eq!((r.liveness_judged, r.liveness_unjudged), (0, 1));
}

#[test]
fn a_lease_still_alive_after_its_deadline_is_a_liveness_violation() {
    for (kind, outcome) in [
        (LeaseOpKind::List, LeaseOutcome::Listed(vec![L])),
        (
            LeaseOpKind::Scan {
                prefix: "l/".into(),
            },
            LeaseOutcome::Keys(vec![(KEY.into(), L)]),
        ),
        (
            LeaseOpKind::KeepAlive { lease: L },
            LeaseOutcome::Renewed { ttl_s: 2 },
        ),
    ] {
        let r = with_probes(vec![probe(kind, 9_100, outcome)]);
        assert_eq!(r.violations_total, 1, "{:#?}", r.violations);
        assert!(
            r.violations[0].contains("liveness: lease 7 should have been gone by 9010.0 ms"),
            "{}",
            r.violations[0]
        );
    }
}

#[test]
fn a_probe_that_never_answered_is_a_liveness_violation() {
    let mut p = probe(LeaseOpKind::List, 9_100, LeaseOutcome::Unknown);
    p.ret_us = None;
    let r = with_probes(vec![p]);
    assert_eq!(r.violations_total, 1, "{:#?}", r.violations);
    assert!(r.violations[0].contains("did not complete"));
}
