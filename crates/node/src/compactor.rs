//! Auto-compaction: keeps the store's revision history bounded, as etcd's
//! `--auto-compaction-mode` / `--auto-compaction-retention` do.
//!
//! Compaction is an ordinary replicated command ([`Op::Compact`]), so every member drops the
//! same history at the same revision. Only the member that believes it leads proposes one:
//! two members proposing at once is harmless (the later one answers "compacted"), but the
//! leader alone keeps the log free of such duplicates. The rule is a function of the applied
//! revision (revision mode) or of samples of it over wall time (periodic mode); a compaction
//! is proposed only once the target moved by a tenth of the retention, so a busy store
//! compacts in steps, not on every revision.

use crate::config::HistoryConfig;
use crate::handle::NodeHandle;
use std::collections::VecDeque;
use std::time::Duration;
use synod_core::Consistency;
use synod_core::kv::{CompactRequest, Op};
use tokio::time::Instant;

/// How often the compactor looks at the revision.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What to compact to, given the history so far.
#[derive(Debug)]
pub struct Policy {
    mode: Mode,
    /// (when, applied revision) samples, oldest first (periodic mode).
    samples: VecDeque<(Instant, u64)>,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Off,
    Revisions(u64),
    Period(Duration),
}

impl Policy {
    pub fn new(cfg: &HistoryConfig) -> Self {
        let mode = match cfg.auto_compaction_mode.as_str() {
            "revision" => Mode::Revisions(cfg.retention_revisions.max(1)),
            "periodic" => Mode::Period(Duration::from_secs(cfg.retention_seconds.max(1))),
            _ => Mode::Off,
        };
        Policy {
            mode,
            samples: VecDeque::new(),
        }
    }

    /// The revision to compact to now, if any: the history kept must exceed the retention by
    /// a tenth of it first.
    pub fn target(&mut self, now: Instant, revision: u64, compacted: u64) -> Option<u64> {
        let (target, step) = match self.mode {
            Mode::Off => return None,
            Mode::Revisions(keep) => (revision.saturating_sub(keep), (keep / 10).max(1)),
            Mode::Period(keep) => {
                self.samples.push_back((now, revision));
                // The newest sample at least `keep` old is the revision to keep from.
                let mut keep_from = None;
                while let Some(&sample) = self.samples.front() {
                    if now.duration_since(sample.0) < keep {
                        break;
                    }
                    keep_from = Some(sample);
                    self.samples.pop_front();
                }
                // It stays the candidate until a newer sample is old enough.
                if let Some(sample) = keep_from {
                    self.samples.push_front(sample);
                }
                // Bounded: one sample per check over one retention period.
                while self.samples.len() > (keep.as_secs() as usize).max(1) + 2 {
                    self.samples.pop_front();
                }
                (keep_from.map_or(0, |(_, rev)| rev), 1)
            }
        };
        (target > compacted && target - compacted >= step).then_some(target)
    }
}

/// Proposes compactions while this member leads; runs until aborted (the node owns the task).
pub async fn run(handle: NodeHandle, cfg: HistoryConfig) {
    let mut policy = Policy::new(&cfg);
    if matches!(policy.mode, Mode::Off) || !handle.info().capabilities.revisions {
        return;
    }
    let me = handle.info().member_id;
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    loop {
        ticker.tick().await;
        let status = handle.status();
        let engine = &status.engine;
        let Some(target) = policy.target(Instant::now(), engine.revision, engine.compact_revision)
        else {
            continue;
        };
        if engine.leader != Some(me) {
            continue;
        }
        let op = Op::Compact(CompactRequest {
            revision: target,
            physical: true,
        });
        // The member compacts on its own behalf: with auth on, no client's token covers it.
        let compacted = crate::auth::as_member(handle.execute(op, Consistency::Linearizable));
        match compacted.await {
            Ok(_) => tracing::debug!(revision = target, "auto-compacted"),
            Err(e) => tracing::debug!(revision = target, error = %e, "auto-compaction refused"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: &str, revisions: u64, seconds: u64) -> HistoryConfig {
        HistoryConfig {
            auto_compaction_mode: mode.into(),
            retention_revisions: revisions,
            retention_seconds: seconds,
        }
    }

    #[test]
    fn revision_mode_keeps_the_retention_and_compacts_in_tenths() {
        let mut p = Policy::new(&cfg("revision", 1000, 0));
        let now = Instant::now();
        assert_eq!(
            p.target(now, 1000, 0),
            None,
            "nothing beyond the retention yet"
        );
        assert_eq!(p.target(now, 1099, 0), None, "less than a tenth beyond");
        assert_eq!(p.target(now, 1100, 0), Some(100));
        assert_eq!(p.target(now, 1150, 100), None);
        assert_eq!(p.target(now, 1200, 100), Some(200));
    }

    #[test]
    fn periodic_mode_keeps_the_last_period() {
        let mut p = Policy::new(&cfg("periodic", 0, 10));
        let t0 = Instant::now();
        for s in 0..10 {
            assert_eq!(p.target(t0 + Duration::from_secs(s), 100 * s, 0), None);
        }
        // At t = 12 s, the newest sample at least 10 s old is t = 2 s (revision 200).
        assert_eq!(p.target(t0 + Duration::from_secs(10), 1000, 0), None);
        assert_eq!(p.target(t0 + Duration::from_secs(12), 1200, 0), Some(200));
        assert_eq!(p.target(t0 + Duration::from_secs(12), 1200, 200), None);
    }

    #[test]
    fn off_never_compacts() {
        let mut p = Policy::new(&cfg("off", 1, 1));
        assert_eq!(p.target(Instant::now(), 1_000_000, 0), None);
    }
}
