//! Linearizability checker for Synod KV histories (the format in
//! [`synod_core::history`]): is there a total order of the operations, consistent with real
//! time, in which every key behaves as a register with versions, CAS and delete?
//!
//! How:
//! * **Per-key partitioning.** Linearizability is compositional (Herlihy & Wing's locality,
//!   "P-compositionality" in Horn & Kroening): a history is linearizable iff each key's
//!   sub-history is, and every operation here touches one key. So each key is checked alone,
//!   smallest first, and a violation on any key decides the verdict.
//! * **Search per key**: Wing & Gong's backtracking with Lowe's just-in-time linearization and
//!   a memo of (linearized set, register state) — see `search.rs`.
//! * **Unknown outcomes** (no output or no return): may take effect at any point after the
//!   call, or never. Reads with unknown outcome and sequential reads are skipped (counted in
//!   [`Report::ops_skipped`]).
//! * **Budget**: [`CheckOptions::time_budget`] bounds the whole check; a key that runs out
//!   makes the verdict [`Verdict::Unknown`] with the key named — never a silent pass.
//! * **Explanation**: a violation is reduced to a small set of operations that cannot be
//!   ordered, by relaxations that keep it a sound witness — see `explain.rs`.
//!
//! Two more checkers judge what a register model cannot: [`watch`] (watch streams, ranges,
//! past reads, transactions against the applied revisions) and [`leases`] (keys attached to
//! leases never vanish before a keep-alive's invoke time + TTL; abandoned leases end).

mod explain;
pub mod generate;
pub mod leases;
mod model;
mod search;
pub mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};
use synod_core::history::{History, HistoryOp};

pub use explain::describe;

/// How hard to try before answering [`Verdict::Unknown`].
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Wall-clock budget for the whole history; past it the verdict is Unknown, never a pass.
    /// Explaining a violation may take up to a quarter of this again.
    pub time_budget: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            time_budget: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    Unknown,
}

/// A minimal explanation of a violation: the key, and operations that cannot be ordered.
#[derive(Clone, Debug)]
pub struct Violation {
    pub key: String,
    /// The witness, in call order: these operations alone (with the ones marked in the
    /// explanation treated as possibly-not-applied) have no linearization.
    pub ops: Vec<HistoryOp>,
    pub explanation: String,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub verdict: Verdict,
    /// Keys whose check finished (with either answer).
    pub keys_checked: usize,
    /// Operations in the keys whose check finished.
    pub ops_checked: usize,
    /// Sequential reads and other ops not subject to the linearizability check (reads whose
    /// outcome is unknown).
    pub ops_skipped: usize,
    pub violation: Option<Violation>,
    /// Why the verdict is Unknown (budget exhausted on key …), if it is.
    pub unknown_reason: Option<String>,
    /// Wall time the check took, explanation included.
    pub elapsed: Duration,
    /// Search steps over all keys (one step = one event visited), a machine-independent cost.
    pub search_steps: u64,
}

impl Report {
    /// The verdict, the counts and, if any, the explanation or the reason for Unknown.
    pub fn render(&self) -> String {
        let verdict = match self.verdict {
            Verdict::Linearizable => "LINEARIZABLE",
            Verdict::NotLinearizable => "NOT LINEARIZABLE",
            Verdict::Unknown => "UNKNOWN",
        };
        let mut s = format!(
            "verdict: {verdict}\nkeys checked: {}, ops checked: {}, ops skipped: {} \
             (sequential or unknown-outcome reads), {} search steps, {:.3} s\n",
            self.keys_checked,
            self.ops_checked,
            self.ops_skipped,
            self.search_steps,
            self.elapsed.as_secs_f64()
        );
        if let Some(v) = &self.violation {
            s.push_str(&v.explanation);
        }
        if let Some(r) = &self.unknown_reason {
            s.push_str(&format!("unknown because: {r}\n"));
        }
        s
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Upper bound on the keys named in an Unknown reason, to keep it one readable line.
const UNKNOWN_KEYS_NAMED_MAX: usize = 5;

/// Checks a whole history (per-key partitioned).
pub fn check_history(history: &History, opts: &CheckOptions) -> Report {
    let start = Instant::now();
    let deadline = start + opts.time_budget;
    let mut report = Report {
        verdict: Verdict::Unknown,
        keys_checked: 0,
        ops_checked: 0,
        ops_skipped: 0,
        violation: None,
        unknown_reason: None,
        elapsed: Duration::ZERO,
        search_steps: 0,
    };

    let mut interner = model::Interner::default();
    let mut per_key: BTreeMap<&str, Vec<model::SOp>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        match model::convert(i, op, &mut interner) {
            Err(reason) => {
                report.unknown_reason = Some(format!("invalid history: {reason}"));
                report.elapsed = start.elapsed();
                return report;
            }
            Ok(Err(model::Skip::NotChecked)) => report.ops_skipped += 1,
            Ok(Ok(sop)) => per_key.entry(op.key.as_str()).or_default().push(sop),
        }
    }
    // Small keys first: they finish quickly and leave their unused share to the big ones.
    let mut keys: Vec<(&str, Vec<model::SOp>)> = per_key.into_iter().collect();
    keys.sort_by_key(|(k, ops)| (ops.len(), *k));

    // Pass 1 gives each key a fair share of what is left; pass 2 retries the keys that ran out
    // with whatever time the others did not use.
    let mut pending: Vec<usize> = (0..keys.len()).collect();
    let mut gave_up: Vec<(usize, search::GaveUp)> = Vec::new();
    for _pass in 0..2 {
        gave_up.clear();
        let count = pending.len();
        for (n, &k) in pending.iter().enumerate() {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            let share = left / u32::try_from(count - n).unwrap_or(u32::MAX);
            let limits = search::Limits {
                deadline: now + share,
                steps_max: u64::MAX,
            };
            let (key, ops) = &keys[k];
            let (outcome, stats) = search::check_ops(ops, limits);
            report.search_steps += stats.steps;
            match outcome {
                search::Outcome::Linearizable => {
                    report.keys_checked += 1;
                    report.ops_checked += ops.len();
                }
                search::Outcome::NotLinearizable => {
                    report.keys_checked += 1;
                    report.ops_checked += ops.len();
                    let explain_deadline = Instant::now() + opts.time_budget / 4;
                    let witness = explain::minimize(ops, explain_deadline);
                    report.violation = Some(Violation {
                        key: key.to_string(),
                        ops: witness
                            .ops
                            .iter()
                            .map(|o| history.ops[o.orig].clone())
                            .collect(),
                        explanation: explain::explain(key, &witness, &history.ops),
                    });
                    report.verdict = Verdict::NotLinearizable;
                    report.elapsed = start.elapsed();
                    return report;
                }
                search::Outcome::GaveUp(why) => gave_up.push((k, why)),
            }
        }
        pending = gave_up.iter().map(|&(k, _)| k).collect();
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
    }

    if gave_up.is_empty() {
        report.verdict = Verdict::Linearizable;
    } else {
        let named: Vec<String> = gave_up
            .iter()
            .take(UNKNOWN_KEYS_NAMED_MAX)
            .map(|&(k, why)| {
                let (key, ops) = &keys[k];
                let why = match why {
                    search::GaveUp::Deadline => "time budget exhausted",
                    search::GaveUp::Memory => "memo cache memory bound reached",
                    search::GaveUp::Steps => "step bound reached",
                };
                format!("key {key:?} ({} ops): {why}", ops.len())
            })
            .collect();
        let more = gave_up.len().saturating_sub(UNKNOWN_KEYS_NAMED_MAX);
        let mut reason = format!(
            "{} of {} keys not decided within the {:?} budget; {}",
            gave_up.len(),
            keys.len(),
            opts.time_budget,
            named.join("; ")
        );
        if more > 0 {
            reason.push_str(&format!("; and {more} more"));
        }
        report.unknown_reason = Some(reason);
    }
    report.elapsed = start.elapsed();
    report
}

/// Exit code of [`check_file`]: the history is linearizable.
pub const EXIT_LINEARIZABLE: i32 = 0;
/// Exit code of [`check_file`]: the history is not linearizable (explanation printed).
pub const EXIT_NOT_LINEARIZABLE: i32 = 1;
/// Exit code of [`check_file`]: undecided within the time budget (or a memory bound).
pub const EXIT_UNKNOWN: i32 = 2;
/// Exit code of [`check_file`]: the file could not be read or is not a valid history.
pub const EXIT_INVALID_INPUT: i32 = 3;

/// Checks the history in the JSON file at `path` (format: [`synod_core::history`]) and
/// returns the process exit code and the text to print — what `synod check HISTORY.json`
/// does. Exit codes:
///
/// | code | meaning |
/// |------|---------|
/// | 0 | linearizable |
/// | 1 | not linearizable (the text explains the violation: key and operations) |
/// | 2 | unknown: the time budget (or the memo memory bound) ran out before a verdict |
/// | 3 | unreadable file or invalid history (the text says where: line and column) |
pub fn check_file(path: &Path, opts: &CheckOptions) -> (i32, String) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return (
                EXIT_INVALID_INPUT,
                format!("cannot read {}: {e}\n", path.display()),
            );
        }
    };
    let history = match parse_history(&text) {
        Ok(h) => h,
        Err(e) => {
            return (
                EXIT_INVALID_INPUT,
                format!("invalid history {}: {e}\n", path.display()),
            );
        }
    };
    let report = check_history(&history, opts);
    if report.verdict == Verdict::Unknown
        && let Some(reason) = &report.unknown_reason
        && reason.starts_with("invalid history")
    {
        return (
            EXIT_INVALID_INPUT,
            format!("{}: {reason}\n", path.display()),
        );
    }
    let code = match report.verdict {
        Verdict::Linearizable => EXIT_LINEARIZABLE,
        Verdict::NotLinearizable => EXIT_NOT_LINEARIZABLE,
        Verdict::Unknown => EXIT_UNKNOWN,
    };
    (code, report.render())
}

/// Parses a history like [`History::from_json`], but reports *where* it is wrong: that
/// function tries both forms as an untagged enum, whose error has no location.
pub fn parse_history(text: &str) -> Result<History, String> {
    if let Ok(h) = History::from_json(text) {
        return Ok(h);
    }
    let located = |e: serde_json::Error| format!("{e}");
    let value: serde_json::Value = serde_json::from_str(text).map_err(located)?;
    match value {
        serde_json::Value::Array(_) => serde_json::from_str::<Vec<HistoryOp>>(text)
            .map(|ops| History {
                meta: serde_json::Value::Null,
                ops,
            })
            .map_err(located),
        serde_json::Value::Object(_) => serde_json::from_str::<History>(text).map_err(located),
        _ => Err("expected a JSON array of operations or an object with \"ops\"".to_string()),
    }
}
