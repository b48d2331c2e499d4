//! Turning "key k is not linearizable" into a small set of operations a person can reason
//! about, and a paragraph saying why they cannot be ordered.
//!
//! Every reduction applied here is a *relaxation* — it can only make a history easier to
//! linearize — so a reduced history that is still not linearizable is a sound witness against
//! the original (a subset of a history in general is not: dropping a write can make a read
//! inexplicable). The relaxations:
//!
//! 1. **Time cut** at `T`: drop ops called after `T`, and make ops still open at `T` unknown.
//!    Any linearization of the full history, truncated at `T`, linearizes the cut one; so
//!    cuts are monotone and the shortest non-linearizable cut is found by binary search.
//! 2. **Drop an effect-free op** (a get, a failed cas, a delete of nothing): it never
//!    changes the register, so removing it cannot invalidate an order.
//! 3. **Make a completed write unknown**: an unknown op may still take effect at the same point.
//! 4. **Forget the past** before `T0`: drop ops that returned before `T0`, make ops open at
//!    `T0` unknown (or drop them if effect-free), and start from *any* register state
//!    ([`State::ANY`]): whatever order the full history had, the register was in *some* state
//!    at `T0`. Also monotone in `T0`, so the latest refuted `T0` is found by binary search.
//!
//! Reductions 2 and 3 are then tried greedily, in shrinking chunks (delta debugging), with
//! bounded effort.

use crate::model::{SOp, State};
use crate::search::{Limits, Outcome, check_ops_from};
use std::time::Instant;
use synod_core::history::{Expected, HistoryOp, OpKind};

/// Search steps allowed for one candidate while minimising; a candidate that needs more is
/// treated as "not shown non-linearizable" (kept out of the witness).
const MINIMIZE_STEPS_PER_CANDIDATE_MAX: u64 = 200_000;

/// Candidate witnesses tried by the greedy phase, at most.
const MINIMIZE_CANDIDATES_MAX: usize = 600;

/// A sound witness: these ops, started from `initial`, have no linearization.
pub(crate) struct Witness {
    pub ops: Vec<SOp>,
    /// Ops that returned before the forgotten past ended (relaxation 4).
    pub forgotten: usize,
    /// `T0` of relaxation 4, if applied.
    pub forgotten_before: Option<u64>,
}

/// Reduces a non-linearizable op set to a small non-linearizable one (best effort, sound).
pub(crate) fn minimize(ops: &[SOp], deadline: Instant) -> Witness {
    let mut ops = ops.to_vec();
    ops.sort_by_key(|o| (o.call, o.orig));
    let refuted = |initial: State, cand: &[SOp]| {
        let limits = Limits {
            deadline,
            steps_max: MINIMIZE_STEPS_PER_CANDIDATE_MAX,
        };
        check_ops_from(cand, initial, limits).0 == Outcome::NotLinearizable
    };

    // Phase 1: the shortest refuted time cut. Cut `i` is at the i-th call time; the last
    // candidate is the whole history, known to be refuted.
    let calls: Vec<u64> = ops.iter().map(|o| o.call).collect();
    let (mut lo, mut hi) = (0usize, calls.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if refuted(State::INITIAL, &cut(&ops, calls[mid])) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut witness = if hi < calls.len() {
        cut(&ops, calls[hi])
    } else {
        ops
    };

    // Phase 2: the latest refuted "forget the past" point, among the call times.
    let mut initial = State::INITIAL;
    let mut forgotten = 0;
    let mut forgotten_before = None;
    let calls: Vec<u64> = witness.iter().map(|o| o.call).collect();
    // Invariant: forgetting before calls[i] for i < lo is refuted (lo = 0: nothing known).
    let (mut lo, mut hi) = (0usize, calls.len());
    let mut best: Option<usize> = None;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if refuted(State::ANY, &forget(&witness, calls[mid])) {
            best = Some(mid);
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if let Some(b) = best {
        let t0 = calls[b];
        forgotten = witness
            .iter()
            .filter(|o| o.ret.is_some_and(|r| r < t0))
            .count();
        witness = forget(&witness, t0);
        initial = State::ANY;
        forgotten_before = Some(t0);
    }

    // Phase 3: greedy relaxation in shrinking chunks.
    let mut tried = 0usize;
    let mut chunk = witness.len().div_ceil(2).max(1);
    loop {
        let mut changed = false;
        let mut i = 0;
        while i < witness.len() && tried < MINIMIZE_CANDIDATES_MAX && Instant::now() < deadline {
            if let Some(cand) = relax_range(&witness, i, chunk) {
                tried += 1;
                if refuted(initial, &cand) {
                    witness = cand;
                    changed = true;
                    continue;
                }
            }
            i += chunk;
        }
        if tried >= MINIMIZE_CANDIDATES_MAX || Instant::now() >= deadline {
            break;
        }
        if chunk == 1 && !changed {
            break;
        }
        chunk = (chunk / 2).max(1);
    }
    Witness {
        ops: witness,
        forgotten,
        forgotten_before,
    }
}

/// Relaxation 4 at `t0` (see the module doc); the result is to be searched from
/// [`State::ANY`].
fn forget(ops: &[SOp], t0: u64) -> Vec<SOp> {
    ops.iter()
        .filter(|o| o.ret.is_none_or(|r| r >= t0))
        .filter_map(|o| {
            if o.call >= t0 {
                Some(*o)
            } else if o.is_effect_free() || o.kind == OpKind::Get {
                None
            } else {
                Some(make_unknown(o))
            }
        })
        .collect()
}

/// Relaxation 1 at time `t` (see the module doc).
fn cut(ops: &[SOp], t: u64) -> Vec<SOp> {
    ops.iter()
        .filter(|o| o.call <= t)
        .filter_map(|o| {
            if o.ret.is_none_or(|r| r <= t) {
                Some(*o)
            } else if o.kind == OpKind::Get {
                // An unknown read constrains nothing.
                None
            } else {
                Some(make_unknown(o))
            }
        })
        .collect()
}

fn make_unknown(o: &SOp) -> SOp {
    SOp {
        output: None,
        ret: None,
        ..*o
    }
}

/// Relaxes ops `i..i+len`; `None` if none of them can be relaxed further.
fn relax_range(ops: &[SOp], i: usize, len: usize) -> Option<Vec<SOp>> {
    let mut changed = false;
    let mut out = Vec::with_capacity(ops.len());
    for (j, o) in ops.iter().enumerate() {
        if j < i || j >= i + len {
            out.push(*o);
        } else if o.is_effect_free() {
            changed = true;
        } else if !o.is_unknown() {
            changed = true;
            out.push(make_unknown(o));
        } else {
            out.push(*o);
        }
    }
    if !changed {
        return None;
    }
    // A cut after the last completed return drops only unknown ops that could be placed
    // after everything else anyway (relaxation 1 with nothing left open).
    let last_return = out.iter().filter_map(|o| o.ret).max();
    // Nothing completed left (`None`) is trivially linearizable, so not a witness.
    last_return.map(|t| cut(&out, t))
}

/// One op as a person reads it: `client 3: get k1 -> "b" v2 at [120, 130]`.
pub fn describe(op: &HistoryOp) -> String {
    let out = op.output.as_ref().filter(|_| !op.is_unknown());
    let q = |s: &str| format!("{s:?}");
    let what = match op.op {
        OpKind::Get => {
            let result = match out {
                None => "?".to_string(),
                Some(o) => match (&o.value, o.version) {
                    (None, Some(0)) => "absent".to_string(),
                    (Some(v), Some(n)) => format!("{} v{n}", q(v)),
                    (Some(v), None) => q(v),
                    (None, Some(n)) => format!("v{n}"),
                    (None, None) => "(unchecked)".to_string(),
                },
            };
            format!("get {} -> {result}", op.key)
        }
        OpKind::Put => {
            let v = op.value.as_deref().map(q).unwrap_or_default();
            match out.and_then(|o| o.version) {
                Some(n) => format!("put {} {v} -> v{n}", op.key),
                None => format!("put {} {v}", op.key),
            }
        }
        OpKind::Delete => match out.and_then(|o| o.deleted) {
            Some(d) => format!("delete {} -> deleted {d}", op.key),
            None => format!("delete {}", op.key),
        },
        OpKind::Cas => {
            let expect = match &op.expected {
                Some(Expected::Absent) => "absent".to_string(),
                Some(Expected::Value(v)) => q(v),
                Some(Expected::Version(n)) => format!("v{n}"),
                None => "?".to_string(),
            };
            let then = op
                .value
                .as_deref()
                .map_or_else(|| "delete".to_string(), |v| format!("put {}", q(v)));
            let result = match out.and_then(|o| o.succeeded) {
                Some(true) => " -> succeeded",
                Some(false) => " -> failed",
                None => "",
            };
            format!("cas {} if {expect} then {then}{result}", op.key)
        }
    };
    let when = match (op.ret, op.is_unknown()) {
        (Some(r), false) => format!("[{}, {r}]", op.call),
        (Some(r), true) => format!("[{}, {r}] outcome unknown", op.call),
        (None, _) => format!("[{}, …) outcome unknown", op.call),
    };
    format!("client {}: {what} at {when}", op.client)
}

/// The paragraph for a violation on `key`, given the witness (as reduced `SOp`s) and the
/// original ops.
pub(crate) fn explain(key: &str, w: &Witness, history: &[HistoryOp]) -> String {
    let witness = &w.ops;
    let completed: Vec<&SOp> = witness.iter().filter(|o| !o.is_unknown()).collect();
    let relaxed: Vec<&SOp> = witness
        .iter()
        .filter(|o| o.is_unknown() && !history[o.orig].is_unknown())
        .collect();
    let culprit = completed.iter().max_by_key(|o| (o.call, o.orig));
    let mut text = format!(
        "key {key:?}: these {} operations cannot be ordered. No sequence of them that respects \
         real time (an operation takes effect between its call and its return) is a legal run \
         of a register whose version is 1 on create, +1 per change and gone after delete.",
        witness.len()
    );
    if let Some(c) = culprit {
        text.push_str(&format!(
            " In particular, {} cannot be placed: at no point of its interval, after any order \
             of the operations before it, does the register hold what it returned.",
            describe(&history[c.orig])
        ));
    }
    if let Some(t0) = w.forgotten_before {
        text.push_str(&format!(
            " This holds whatever state the key was in at time {t0}, so the {} operations \
             that completed before then are not needed.",
            w.forgotten
        ));
    }
    if !relaxed.is_empty() {
        text.push_str(&format!(
            " ({} completed write(s) are listed as possibly-not-applied: the contradiction \
             holds even if they never took effect or took effect later.)",
            relaxed.len()
        ));
    }
    text.push('\n');
    let mut listed: Vec<&SOp> = witness.iter().collect();
    listed.sort_by_key(|o| (o.call, o.orig));
    for o in listed {
        let mark = if o.is_unknown() && !history[o.orig].is_unknown() {
            "  (may not have taken effect)"
        } else {
            ""
        };
        text.push_str(&format!("  - {}{mark}\n", describe(&history[o.orig])));
    }
    text
}
