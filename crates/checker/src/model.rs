//! The sequential specification the search checks against: one register per key whose state
//! is `Option<(value, version)>` (version 1 on create, +1 per change, absent after delete), and
//! the compact form of history operations the search works on.
//!
//! Values are interned to `u32` ids once per history so that a model state is a small `Copy`
//! value that hashes cheaply — the memo cache hashes one on every search step.

use std::collections::HashMap;
use synod_core::history::{Expected, HistoryOp, OpKind, ReadConsistency};

/// Register state of one key. `value == ABSENT` means the key does not exist (version 0).
///
/// Two abstract forms exist only for the explanation's "forget the past" relaxation, where
/// the search starts from *any* state: `value == WILD` (any value or absent, version
/// unknown) and `version_known == false` (the value is known, the version is
/// `unknown base + version`). Each abstract step over-approximates the concrete ones, so a
/// refutation from an abstract state holds for every concrete state it stands for. The
/// normal check starts from [`State::INITIAL`] and never meets either form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct State {
    pub value: u32,
    pub version: u64,
    pub version_known: bool,
}

pub(crate) const ABSENT: u32 = u32::MAX;
pub(crate) const WILD: u32 = u32::MAX - 1;

impl State {
    pub const INITIAL: State = State {
        value: ABSENT,
        version: 0,
        version_known: true,
    };

    /// Any state at all.
    pub const ANY: State = State {
        value: WILD,
        version: 0,
        version_known: false,
    };

    fn present(&self) -> bool {
        self.value != ABSENT
    }

    fn known(value: u32, version: u64) -> State {
        State {
            value,
            version,
            version_known: true,
        }
    }

    /// The state with the version bound to the observed `n`, if that is possible.
    fn bind_version(self, n: u64) -> Option<State> {
        if self.version_known {
            return (self.version == n).then_some(self);
        }
        match (self.value, n) {
            // Any state observed absent.
            (WILD, 0) => Some(State::INITIAL),
            (WILD, _) => Some(State::known(WILD, n)),
            // Known value, version base + k with base >= 0 and present => >= max(k, 1).
            (_, n) if n >= self.version.max(1) => Some(State::known(self.value, n)),
            _ => None,
        }
    }

    /// The state with the value bound to the observed `v` (so present), if possible.
    fn bind_value(self, v: u32) -> Option<State> {
        match self.value {
            WILD => Some(State { value: v, ..self }),
            ABSENT => None,
            x => (x == v).then_some(self),
        }
    }

    fn after_write(self, v: u32) -> State {
        State {
            value: v,
            version: self.version + 1,
            version_known: self.version_known,
        }
    }
}

/// A CAS expectation with the value interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SExpected {
    Absent,
    Value(u32),
    Version(u64),
}

/// The checked fields of an output; `None` fields are not checked (history.rs: "any field
/// present is checked; an absent field is not").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct SOutput {
    pub value: Option<u32>,
    pub version: Option<u64>,
    pub succeeded: Option<bool>,
    pub deleted: Option<u64>,
}

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SOp {
    /// Index into the history's `ops`, for reporting.
    pub orig: usize,
    pub kind: OpKind,
    /// `put`: the value written; `cas`: the new value, `None` = delete the key.
    pub value: Option<u32>,
    pub expected: Option<SExpected>,
    /// `None` = outcome unknown: the op may take effect at any time after `call`, or never.
    pub output: Option<SOutput>,
    pub call: u64,
    /// `None` exactly when `output` is `None`: an unknown op stays open forever.
    pub ret: Option<u64>,
}

impl SOp {
    pub fn is_unknown(&self) -> bool {
        self.output.is_none()
    }

    /// Linearizing this op can never change the register, whatever order it is placed in,
    /// so dropping it from a history is a relaxation (used by the explanation's minimiser).
    pub fn is_effect_free(&self) -> bool {
        match (self.kind, self.output) {
            (OpKind::Get, _) => true,
            (OpKind::Cas, Some(o)) => o.succeeded == Some(false),
            (OpKind::Delete, Some(o)) => o.deleted == Some(0),
            _ => false,
        }
    }
}

/// Applies `op` to `state`: the next state, or `None` if the op's recorded output cannot be
/// what the register returns in `state`.
pub(crate) fn step(state: State, op: &SOp) -> Option<State> {
    let out = op.output.unwrap_or_default();
    match op.kind {
        OpKind::Get => {
            let mut s = state;
            if let Some(n) = out.version {
                s = s.bind_version(n)?;
            }
            if let Some(v) = out.value {
                s = s.bind_value(v)?;
            }
            Some(s)
        }
        OpKind::Put => {
            let mut next = state.after_write(op.value.unwrap_or(ABSENT));
            debug_assert!(next.present(), "validated: put carries a value");
            if let Some(n) = out.version {
                next = next.bind_version(n)?;
            }
            Some(next)
        }
        OpKind::Delete => {
            if let Some(d) = out.deleted
                && state.value != WILD
                && d != u64::from(state.present())
            {
                return None;
            }
            Some(State::INITIAL)
        }
        OpKind::Cas => {
            // `Some(holds)` when the state decides the comparison; `None` when an abstract
            // state could go either way.
            let decided = match (op.expected, state.value) {
                (Some(SExpected::Absent), WILD) => None,
                (Some(SExpected::Absent), v) => Some(v == ABSENT),
                (Some(SExpected::Value(_)), WILD) => None,
                (Some(SExpected::Value(e)), v) => Some(v != ABSENT && v == e),
                (Some(SExpected::Version(_)), ABSENT) => Some(false),
                (Some(SExpected::Version(n)), _) if state.version_known => Some(state.version == n),
                (Some(SExpected::Version(_)), _) => None,
                (None, _) => Some(false),
            };
            let holds = match (decided, out.succeeded) {
                (Some(h), Some(s)) if h != s => return None,
                (Some(h), _) => h,
                (None, Some(s)) => s,
                // Undecided and unobserved: either branch; ANY covers both.
                (None, None) => return Some(State::ANY),
            };
            if !holds {
                // An undecided failed compare would add a disequality; forgetting it only
                // over-approximates.
                return Some(state);
            }
            // Bind what a success reveals, then apply the write.
            let bound = match op.expected {
                Some(SExpected::Absent) => State::INITIAL,
                Some(SExpected::Value(e)) => state.bind_value(e)?,
                Some(SExpected::Version(n)) => state.bind_version(n)?,
                None => return None,
            };
            Some(match op.value {
                Some(v) => bound.after_write(v),
                None => State::INITIAL,
            })
        }
    }
}

/// Value strings ↔ ids, shared by all keys of one history.
#[derive(Default)]
pub(crate) struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(WILD);
        assert!(id < WILD, "more than 4 billion distinct values");
        self.ids.insert(s.to_string(), id);
        self.names.push(s.to_string());
        id
    }
}

/// Why an op is not checked at all.
pub(crate) enum Skip {
    /// Sequential read or a read whose outcome is unknown: no effect, nothing to check.
    NotChecked,
}

/// Validates one op and converts it; `Err` is a human-readable reason the history is invalid.
pub(crate) fn convert(
    index: usize,
    op: &HistoryOp,
    interner: &mut Interner,
) -> Result<Result<SOp, Skip>, String> {
    let at = || {
        format!(
            "op #{index} (client {}, {:?} {:?})",
            op.client, op.op, op.key
        )
    };
    if let Some(ret) = op.ret
        && ret < op.call
    {
        return Err(format!("{}: return {ret} is before call {}", at(), op.call));
    }
    match op.op {
        OpKind::Put if op.value.is_none() => return Err(format!("{}: put without a value", at())),
        OpKind::Cas if op.expected.is_none() => {
            return Err(format!("{}: cas without `expected`", at()));
        }
        _ => {}
    }
    if op.op == OpKind::Get && (op.consistency == ReadConsistency::Sequential || op.is_unknown()) {
        return Ok(Err(Skip::NotChecked));
    }
    let unknown = op.is_unknown();
    let output = if unknown {
        None
    } else {
        op.output.as_ref().map(|o| SOutput {
            value: o.value.as_deref().map(|v| interner.intern(v)),
            version: o.version,
            succeeded: o.succeeded,
            deleted: o.deleted,
        })
    };
    let value = match op.op {
        OpKind::Put | OpKind::Cas => op.value.as_deref().map(|v| interner.intern(v)),
        OpKind::Get | OpKind::Delete => None,
    };
    let expected = match (op.op, &op.expected) {
        (OpKind::Cas, Some(Expected::Absent)) => Some(SExpected::Absent),
        (OpKind::Cas, Some(Expected::Value(v))) => Some(SExpected::Value(interner.intern(v))),
        (OpKind::Cas, Some(Expected::Version(n))) => Some(SExpected::Version(*n)),
        _ => None,
    };
    Ok(Ok(SOp {
        orig: index,
        kind: op.op,
        value,
        expected,
        output,
        call: op.call,
        ret: if unknown { None } else { op.ret },
    }))
}
