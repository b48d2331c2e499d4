//! The history format: what clients called, what came back and when. Written by the simulator
//! and by chaos runs, read by the linearizability checker (`synod check HISTORY.json`), and
//! plain JSON so external checkers can verify the same histories.
//!
//! A history file is either a JSON array of operations or an object `{"meta": {...}, "ops":
//! [...]}`. One operation:
//!
//! ```json
//! {"client": 3, "op": "cas", "key": "k1", "expected": {"version": 2}, "value": "v9",
//!  "output": {"succeeded": true}, "call": 1200, "return": 1530}
//! ```
//!
//! | field      | meaning |
//! |------------|---------|
//! | `client`   | the calling client; one client has at most one operation open at a time |
//! | `op`       | `get`, `put`, `delete` or `cas` |
//! | `key`      | the key (UTF-8) |
//! | `value`    | `put`: the value written; `cas`: the new value, absent/null = delete the key |
//! | `expected` | `cas` only: `"absent"`, `{"value": "…"}` or `{"version": N}` |
//! | `consistency` | `get` only: `linearizable` (default) or `sequential`; sequential reads are not checked for linearizability |
//! | `output`   | the result; **absent or null = outcome unknown** (timeout, crash): the op may or may not have taken effect |
//! | `call`, `return` | times in microseconds of one monotonic clock; `return` absent = unknown |
//!
//! Outputs: `get` → `{"value": "…", "version": N}` (a missing key is `{"version": 0}` with no
//! value); `put` → `{}` or `{"version": N}` (the version written); `delete` → `{"deleted": 0|1}`;
//! `cas` → `{"succeeded": bool}`. Any field present is checked; an absent field is not.
//! An operation that definitely failed without effect is simply left out of the history.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Get,
    Put,
    Delete,
    Cas,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expected {
    Absent,
    Value(String),
    Version(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    #[default]
    Linearizable,
    Sequential,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Output {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HistoryOp {
    pub client: u64,
    pub op: OpKind,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expected>,
    #[serde(default, skip_serializing_if = "is_linearizable")]
    pub consistency: ReadConsistency,
    #[serde(default)]
    pub output: Option<Output>,
    pub call: u64,
    #[serde(rename = "return", default)]
    pub ret: Option<u64>,
}

fn is_linearizable(c: &ReadConsistency) -> bool {
    *c == ReadConsistency::Linearizable
}

impl HistoryOp {
    /// The outcome is unknown: the op may or may not have taken effect, at any time after
    /// `call`.
    pub fn is_unknown(&self) -> bool {
        self.output.is_none() || self.ret.is_none()
    }
}

/// A whole history with optional free-form metadata (engine, seed, faults…).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct History {
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub meta: serde_json::Value,
    pub ops: Vec<HistoryOp>,
}

impl History {
    /// Parses either form (array, or object with `ops`). The form is chosen by the first
    /// non-blank character so that a parse error keeps serde's line and column.
    pub fn from_json(text: &str) -> Result<History, serde_json::Error> {
        if text.trim_start().starts_with('[') {
            let ops: Vec<HistoryOp> = serde_json::from_str(text)?;
            Ok(History {
                meta: serde_json::Value::Null,
                ops,
            })
        } else {
            serde_json::from_str(text)
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_round_trips() {
        let text = r#"[{"client": 3, "op": "cas", "key": "k1", "expected": {"version": 2},
            "value": "v9", "output": {"succeeded": true}, "call": 1200, "return": 1530},
            {"client": 4, "op": "get", "key": "k1", "consistency": "sequential", "call": 1}]"#;
        let h = History::from_json(text).unwrap();
        assert_eq!(h.ops[0].expected, Some(Expected::Version(2)));
        assert!(h.ops[1].is_unknown());
        assert_eq!(h.ops[1].consistency, ReadConsistency::Sequential);
        let again = History::from_json(&h.to_json()).unwrap();
        assert_eq!(again.ops, h.ops);
        let absent = History::from_json(
            r#"{"ops":[{"client":1,"op":"cas","key":"a","expected":"absent","call":0}]}"#,
        )
        .unwrap();
        assert_eq!(absent.ops[0].expected, Some(Expected::Absent));
    }
}
