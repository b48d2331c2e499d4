//! Deliberately broken variants of the replica layer's watch feed (test only), so the
//! simulator's watch checker can prove it sees them; and a member whose applied state
//! silently diverges (`DivergentApply`), for the corruption check. Reached only through
//! `EngineConfig::bug`; a correct replica never runs this code.

use crate::Replica;
use std::sync::Arc;
use synod_core::LogProtocol;
use synod_core::kv::RevisionEvents;

impl<P: LogProtocol> Replica<P> {
    /// Planted `WatchUndecidedEvent`: besides the applied revisions, hand the watch layer the
    /// revisions its accepted-but-undecided log suffix would make (applied to a copy of the
    /// state), and later drop the decided revisions it already handed out that way. Harmless
    /// while the suffix gets decided as accepted; wrong once a leader change replaces it.
    pub(crate) fn planted_undecided_events(
        &mut self,
        mut fresh: Vec<Arc<RevisionEvents>>,
    ) -> Vec<Arc<RevisionEvents>> {
        fresh.retain(|r| r.revision > self.watch_speculated);
        let Some(p) = self.protocol.as_ref() else {
            return fresh;
        };
        let mut ahead = self.state.clone();
        // Collection is on in the copy (the caller just took from the original); make sure.
        let _ = ahead.kv.take_fresh_events();
        let first = self.state.applied_index().max(p.compacted_idx());
        for idx in first..p.log_len() {
            let _ = ahead.apply(idx + 1, p.entry(idx));
        }
        let floor = fresh
            .last()
            .map_or(self.watch_speculated, |r| r.revision)
            .max(self.watch_speculated);
        for r in ahead.kv.take_fresh_events() {
            if r.revision > floor {
                self.watch_speculated = self.watch_speculated.max(r.revision);
                fresh.push(r);
            }
        }
        fresh
    }
}

/// PLANTED BUG (`DivergentApply`): the command with every put's value altered (each byte
/// flipped), as this member alone would apply it.
pub(crate) fn diverged(c: &synod_core::Command) -> synod_core::Command {
    use synod_core::kv::{Op, TxnOp};
    let flip = |v: &mut Vec<u8>| v.iter_mut().for_each(|b| *b ^= 0x20);
    let mut c = c.clone();
    match &mut c.op {
        Op::Put(p) => flip(&mut p.value),
        Op::Txn(t) => {
            for o in t.success.iter_mut().chain(t.failure.iter_mut()) {
                if let TxnOp::Put(p) = o {
                    flip(&mut p.value);
                }
            }
        }
        _ => {}
    }
    c
}
