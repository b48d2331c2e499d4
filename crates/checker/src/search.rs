//! The per-key linearizability search: Wing & Gong's backtracking search with Lowe's
//! just-in-time linearization and memoisation ("Testing for linearizability", Lowe 2017, §3–4;
//! the same algorithm porcupine implements).
//!
//! Call and return events, sorted by time, form a doubly linked list. Walking it from the
//! front, a call event is a candidate to linearize next: if the model accepts the op's output,
//! the op is "lifted" out of the list (both events) and the walk restarts from the front. A
//! return event reached before its op was linearized means the current prefix cannot be
//! extended, so the search backtracks (un-lifting the last op, dancing-links style). The memo
//! cache of (set of linearized ops, model state) prunes configurations already explored —
//! which is what makes the search practical on long histories.
//!
//! Unknown-outcome ops have no return event: they may be linearized anywhere after their call,
//! or never. The search succeeds as soon as every *completed* op is linearized.

use crate::model::{SOp, State, step};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

/// Search steps between two reads of the clock (reading it every step costs more than a step).
const STEPS_PER_CLOCK_CHECK: u64 = 1024;

/// Memory bound of the memo cache, per search. Past it the answer is "unknown", never a pass.
pub(crate) const MEMO_BYTES_MAX: usize = 1 << 30;

/// Why a search stopped without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GaveUp {
    /// The wall-clock deadline passed.
    Deadline,
    /// The step limit passed (used by the explanation's bounded-effort minimiser).
    Steps,
    /// The memo cache reached [`MEMO_BYTES_MAX`].
    Memory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Linearizable,
    NotLinearizable,
    GaveUp(GaveUp),
}

/// Limits for one search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub deadline: Instant,
    pub steps_max: u64,
}

/// What a search did, for reports and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    pub steps: u64,
    pub memo_entries: usize,
}

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Node {
    prev: u32,
    next: u32,
    /// Index into the ops slice.
    op: u32,
    is_call: bool,
    /// For a call: its return node, or NIL for an unknown op.
    ret: u32,
}

/// The set of linearized ops with cheap canonical snapshots. Ops are numbered in call order,
/// so the set is nearly always "a prefix of all ops, plus a few in a window": snapshots store
/// only the window (`full..hi`), which keeps the memo small even on long histories.
struct Bits {
    words: Vec<u64>,
    /// Every word below `full` is all ones.
    full: usize,
    /// Every word at or above `hi` is zero.
    hi: usize,
    /// Zobrist hash of the set: xor of a per-op random constant over the members.
    hash: u64,
}

impl Bits {
    fn new(n: usize) -> Bits {
        Bits {
            words: vec![0; n.div_ceil(64)],
            full: 0,
            hi: 0,
            hash: 0,
        }
    }

    fn set(&mut self, i: usize) {
        let w = i / 64;
        debug_assert_eq!(self.words[w] & (1 << (i % 64)), 0);
        self.words[w] |= 1 << (i % 64);
        self.hash ^= zobrist(i);
        if w >= self.hi {
            self.hi = w + 1;
        }
        while self.full < self.hi && self.words[self.full] == u64::MAX {
            self.full += 1;
        }
    }

    fn clear(&mut self, i: usize) {
        let w = i / 64;
        debug_assert_ne!(self.words[w] & (1 << (i % 64)), 0);
        self.words[w] &= !(1 << (i % 64));
        self.hash ^= zobrist(i);
        if w < self.full {
            self.full = w;
        }
        while self.hi > self.full && self.words[self.hi - 1] == 0 {
            self.hi -= 1;
        }
    }

    fn window(&self) -> &[u64] {
        &self.words[self.full..self.hi]
    }
}

fn zobrist(i: usize) -> u64 {
    synod_core::SplitMix64::new(i as u64 ^ 0x5bd1_e995_0000_0000).next_u64()
}

/// One memo entry: a set of linearized ops in canonical (`full`, window) form, the window
/// stored in the memo's word arena. Entries with the same (hash, state) are chained.
struct Snapshot {
    full: u32,
    window_at: usize,
    window_len: u32,
    /// Next entry with the same (hash, state), or NIL.
    next: u32,
}

/// The memo cache. Everything lives in three flat allocations, so that building it costs
/// few allocations and dropping it (millions of entries on a hot key) is instant.
#[derive(Default)]
struct Memo {
    heads: HashMap<(u64, State), u32, BuildHasherDefault<MixHasher>>,
    entries: Vec<Snapshot>,
    words: Vec<u64>,
}

impl Memo {
    fn bytes(&self) -> usize {
        self.heads.capacity() * (std::mem::size_of::<((u64, State), u32)>() + 1)
            + self.entries.capacity() * std::mem::size_of::<Snapshot>()
            + self.words.capacity() * 8
    }

    /// Records (bits, state) as explored; `false` if it already was.
    fn insert(&mut self, bits: &Bits, state: State) -> bool {
        let window = bits.window();
        let fresh = self.entries.len() as u32;
        let mut at = *self.heads.entry((bits.hash, state)).or_insert(NIL);
        let head = at;
        while at != NIL {
            let e = &self.entries[at as usize];
            if e.full as usize == bits.full
                && &self.words[e.window_at..e.window_at + e.window_len as usize] == window
            {
                return false;
            }
            at = e.next;
        }
        assert!(fresh < NIL, "memo entries exceed u32");
        self.entries.push(Snapshot {
            full: bits.full as u32,
            window_at: self.words.len(),
            window_len: window.len() as u32,
            next: head,
        });
        self.words.extend_from_slice(window);
        self.heads.insert((bits.hash, state), fresh);
        true
    }
}

/// Multiplicative hasher for the memo's `(u64, State)` keys, which are already well mixed;
/// SipHash would cost more than the rest of a search step.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
}

/// Checks one key's ops (any order; they are sorted here), starting from an absent key.
pub(crate) fn check_ops(ops: &[SOp], limits: Limits) -> (Outcome, Stats) {
    check_ops_from(ops, State::INITIAL, limits)
}

/// [`check_ops`] from a given initial state (the explanation's relaxations start from
/// [`State::ANY`]).
pub(crate) fn check_ops_from(ops: &[SOp], initial: State, limits: Limits) -> (Outcome, Stats) {
    assert!(ops.len() < NIL as usize / 2, "too many ops on one key");
    // Number ops by call time so that the linearized set is prefix-like (see `Bits`).
    let mut order: Vec<u32> = (0..ops.len() as u32).collect();
    order.sort_by_key(|&i| (ops[i as usize].call, i));
    let ops: Vec<SOp> = order.iter().map(|&i| ops[i as usize]).collect();

    // Events: (time, return-after-call at equal times, op). Calls sort before returns at the
    // same instant, so ops that merely touch are treated as concurrent — the lenient reading
    // of clocks with coarse resolution.
    let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i as u32));
        if let Some(r) = op.ret {
            events.push((r, true, i as u32));
        }
    }
    events.sort_unstable();

    // Node 0 is the head sentinel.
    let mut nodes: Vec<Node> = Vec::with_capacity(events.len() + 1);
    nodes.push(Node {
        prev: NIL,
        next: NIL,
        op: NIL,
        is_call: false,
        ret: NIL,
    });
    let mut call_node = vec![NIL; ops.len()];
    for (k, &(_, is_ret, op)) in events.iter().enumerate() {
        let id = nodes.len() as u32;
        nodes.push(Node {
            prev: k as u32,
            next: if k + 1 < events.len() { id + 1 } else { NIL },
            op,
            is_call: !is_ret,
            ret: NIL,
        });
        if is_ret {
            let c = call_node[op as usize];
            debug_assert_ne!(c, NIL, "a return sorts after its call");
            nodes[c as usize].ret = id;
        } else {
            call_node[op as usize] = id;
        }
    }
    if nodes.len() > 1 {
        nodes[0].next = 1;
    }

    let mut completed_left = ops.iter().filter(|o| !o.is_unknown()).count();
    let mut bits = Bits::new(ops.len());
    let mut memo = Memo::default();
    let mut stats = Stats::default();
    let mut state = initial;
    // (call node lifted, state before it)
    let mut stack: Vec<(u32, State)> = Vec::new();
    let mut cur = nodes[0].next;

    let outcome = loop {
        if completed_left == 0 {
            break Outcome::Linearizable;
        }
        stats.steps += 1;
        if stats.steps >= limits.steps_max {
            break Outcome::GaveUp(GaveUp::Steps);
        }
        if stats.steps % STEPS_PER_CLOCK_CHECK == 0 && Instant::now() >= limits.deadline {
            break Outcome::GaveUp(GaveUp::Deadline);
        }
        // A completed op that is not linearized still has its return event in the list, and
        // the walk meets it before running off the end.
        assert_ne!(cur, NIL, "walked past every return with completed ops left");
        let node = nodes[cur as usize];
        let op = &ops[node.op as usize];
        if node.is_call {
            if let Some(next_state) = step(state, op) {
                bits.set(node.op as usize);
                if memo.insert(&bits, next_state) {
                    stats.memo_entries += 1;
                    if stats.memo_entries % 4096 == 0 && memo.bytes() > MEMO_BYTES_MAX {
                        break Outcome::GaveUp(GaveUp::Memory);
                    }
                    stack.push((cur, state));
                    state = next_state;
                    lift(&mut nodes, cur);
                    if !op.is_unknown() {
                        completed_left -= 1;
                    }
                    cur = nodes[0].next;
                    continue;
                }
                bits.clear(node.op as usize);
            }
            cur = node.next;
        } else {
            // The op this return belongs to was not linearized before it: backtrack.
            let Some((lifted, before)) = stack.pop() else {
                break Outcome::NotLinearizable;
            };
            state = before;
            let l = nodes[lifted as usize];
            bits.clear(l.op as usize);
            unlift(&mut nodes, lifted);
            if !ops[l.op as usize].is_unknown() {
                completed_left += 1;
            }
            cur = l.next;
        }
    };
    (outcome, stats)
}

fn unlink(nodes: &mut [Node], i: u32) {
    let Node { prev, next, .. } = nodes[i as usize];
    nodes[prev as usize].next = next;
    if next != NIL {
        nodes[next as usize].prev = prev;
    }
}

fn relink(nodes: &mut [Node], i: u32) {
    let Node { prev, next, .. } = nodes[i as usize];
    nodes[prev as usize].next = i;
    if next != NIL {
        nodes[next as usize].prev = i;
    }
}

/// Removes a call event and its return event (if any) from the list.
fn lift(nodes: &mut [Node], call: u32) {
    unlink(nodes, call);
    let ret = nodes[call as usize].ret;
    if ret != NIL {
        unlink(nodes, ret);
    }
}

/// Undoes [`lift`]; valid because lifts are undone in LIFO order.
fn unlift(nodes: &mut [Node], call: u32) {
    let ret = nodes[call as usize].ret;
    if ret != NIL {
        relink(nodes, ret);
    }
    relink(nodes, call);
}
