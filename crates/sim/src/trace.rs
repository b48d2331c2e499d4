//! The run's trace: a rolling hash over every event (same seed ⇒ same hash, the replay proof)
//! and a ring buffer of the last events, formatted only when a run fails.

use std::collections::VecDeque;
use std::fmt::Debug;
use synod_core::NodeId;

/// Events kept for the failure report.
pub const TRACE_RING_EVENTS_MAX: usize = 200_000;

/// One processed event, kept cheaply (messages are cloned, formatted only on failure).
#[derive(Clone, Debug)]
pub enum TraceKind<M> {
    Tick,
    Deliver { from: NodeId, message: M },
    Submit { request: String },
    Reply { to_client: u64, summary: String },
    Fault(String),
    Note(String),
}

#[derive(Clone, Debug)]
pub struct TraceEntry<M> {
    pub time_us: u64,
    pub node: Option<NodeId>,
    pub kind: TraceKind<M>,
    /// (records, messages, replies) the engine produced for this input.
    pub output_counts: (usize, usize, usize),
    /// Applied index of `node` after the event.
    pub applied_index: u64,
}

pub struct Trace<M> {
    ring: VecDeque<TraceEntry<M>>,
    hash: u64,
    pub events: u64,
}

impl<M: Debug> Trace<M> {
    pub fn new() -> Self {
        Trace {
            ring: VecDeque::with_capacity(TRACE_RING_EVENTS_MAX),
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
        }
    }

    /// Folds the deterministic parts of an event into the hash (time, where, what kind, what it
    /// produced, where the state machine ended up) and keeps it in the ring.
    pub fn record(&mut self, entry: TraceEntry<M>, fingerprint: &[u64]) {
        self.events += 1;
        let kind_code = match &entry.kind {
            TraceKind::Tick => 1,
            TraceKind::Deliver { from, .. } => 2 + (from << 8),
            TraceKind::Submit { .. } => 3,
            TraceKind::Reply { to_client, .. } => 4 + (to_client << 8),
            TraceKind::Fault(_) => 5,
            TraceKind::Note(_) => 6,
        };
        let (r, m, p) = entry.output_counts;
        for x in [
            entry.time_us,
            entry.node.unwrap_or(0),
            kind_code,
            r as u64,
            m as u64,
            p as u64,
            entry.applied_index,
        ]
        .into_iter()
        .chain(fingerprint.iter().copied())
        {
            self.hash = mix(self.hash, x);
        }
        if self.ring.len() == TRACE_RING_EVENTS_MAX {
            self.ring.pop_front();
        }
        self.ring.push_back(entry);
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The last events, one readable line each.
    pub fn dump(&self) -> Vec<String> {
        self.ring
            .iter()
            .map(|e| {
                let at = format!(
                    "{:>10.3} ms {:>4}",
                    e.time_us as f64 / 1000.0,
                    e.node.map_or("-".to_string(), |n| format!("n{n}"))
                );
                let what = match &e.kind {
                    TraceKind::Tick => "tick".to_string(),
                    TraceKind::Deliver { from, message } => format!("from n{from}: {message:?}"),
                    TraceKind::Submit { request } => format!("submit {request}"),
                    TraceKind::Reply { to_client, summary } => {
                        format!("reply to c{to_client:x}: {summary}")
                    }
                    TraceKind::Fault(f) => format!("FAULT {f}"),
                    TraceKind::Note(s) => s.clone(),
                };
                let (r, m, p) = e.output_counts;
                format!(
                    "{at} {what}  -> rec {r} msg {m} rep {p}, applied {}",
                    e.applied_index
                )
            })
            .collect()
    }
}

impl<M: Debug> Default for Trace<M> {
    fn default() -> Self {
        Self::new()
    }
}

fn mix(h: u64, x: u64) -> u64 {
    let mut z = h ^ x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
