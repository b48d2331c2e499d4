//! The NOSPACE alarm: this member is short of disk space, so the API edge refuses writes that
//! would grow the store (etcd's `NOSPACE`, see `docs/durability.md`, "Full disk").
//!
//! Three independent causes raise it, and it stays raised while any holds:
//! * **the watermark** — a [`SpaceWatcher`] thread polls `statvfs` on the data directory's
//!   filesystem every [`SPACE_POLL_MS`] and raises the alarm when the space available drops
//!   below `storage.reserve_bytes`. It clears only once the space is back above the reserve
//!   plus a quarter ([`RESERVE_HYSTERESIS_DIVISOR`]), so a member hovering at the line does not
//!   flap between refusing and accepting writes every poll;
//! * **a failed WAL write** — the engine thread raises it while it holds a batch it could not
//!   write (ENOSPC, EIO) and clears it once the retried write succeeds;
//! * **the quota** (`storage.quota_backend_bytes`, etcd's `--quota-backend-bytes`) — the engine
//!   thread raises it when the database (WAL + newest snapshot) outgrows the quota after a
//!   batch. Like etcd's, it is sticky: only `disarm` clears it (after the operator compacted
//!   and defragmented), and the next batch raises it again if the database is still too big.
//!
//! Unlike etcd, where the alarm is replicated and a single member short of space stops writes
//! cluster-wide until an operator runs `etcdctl alarm disarm`, Synod's alarm is member-local and
//! clears by itself: the other members keep accepting writes (a majority still has space), and
//! this one resumes when space comes back. `disarm` clears both causes at once; each re-raises
//! it on its next check if the disk is still short.
//!
//! The watcher runs on its own thread, never on the engine thread: `statvfs` on a sick
//! filesystem can block, and the engine thread must not stall on a check of free space.

use crate::metrics::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How often the watcher reads the filesystem's free space.
pub const SPACE_POLL_MS: u64 = 500;
/// The alarm clears at `reserve_bytes + reserve_bytes / RESERVE_HYSTERESIS_DIVISOR` free.
pub const RESERVE_HYSTERESIS_DIVISOR: u64 = 4;

/// This member's alarms, shared by the engine thread, the watcher and the API edge.
pub struct Alarms {
    /// Free space below the reserve (set by the watcher).
    low_space: AtomicBool,
    /// A WAL write failed and its batch is held until a retry succeeds (set by the engine).
    wal_write_failing: AtomicBool,
    /// The database outgrew `quota_backend_bytes` (set by the engine, cleared by disarm).
    over_quota: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Alarms {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Alarms {
            low_space: AtomicBool::new(false),
            wal_write_failing: AtomicBool::new(false),
            over_quota: AtomicBool::new(false),
            metrics,
        }
    }

    /// True while writes that grow the store must be refused.
    pub fn nospace(&self) -> bool {
        self.low_space.load(Ordering::Relaxed)
            || self.wal_write_failing.load(Ordering::Relaxed)
            || self.over_quota.load(Ordering::Relaxed)
    }

    /// `etcdctl alarm disarm`: clears the alarm now. A cause that still holds raises it again on
    /// its next check (the watcher within [`SPACE_POLL_MS`], the WAL on its next retry).
    pub fn disarm_nospace(&self) {
        self.low_space.store(false, Ordering::Relaxed);
        self.wal_write_failing.store(false, Ordering::Relaxed);
        self.over_quota.store(false, Ordering::Relaxed);
        self.publish();
        tracing::warn!("NOSPACE alarm disarmed by an operator");
    }

    /// After each persisted batch: raises NOSPACE once `db_bytes` exceeds a non-zero
    /// `quota_bytes`. Never clears it (see the module doc).
    pub(crate) fn check_quota(&self, db_bytes: u64, quota_bytes: u64) {
        if quota_bytes == 0 || db_bytes <= quota_bytes {
            return;
        }
        if !self.over_quota.swap(true, Ordering::Relaxed) {
            tracing::error!(
                db_size_bytes = db_bytes,
                quota_backend_bytes = quota_bytes,
                "NOSPACE alarm raised: the database outgrew quota_backend_bytes; this member \
                 refuses writes (reads, deletes and compaction still work) until it is \
                 compacted, defragmented and the alarm disarmed"
            );
            self.publish();
        }
    }

    pub(crate) fn set_low_space(&self, low: bool) {
        if self.low_space.swap(low, Ordering::Relaxed) != low {
            self.publish();
        }
    }

    pub(crate) fn set_wal_write_failing(&self, failing: bool) {
        if self.wal_write_failing.swap(failing, Ordering::Relaxed) != failing {
            self.publish();
        }
    }

    fn publish(&self) {
        self.metrics.alarm_nospace.set(i64::from(self.nospace()));
    }
}

/// What the watermark decides from one reading of free space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceVerdict {
    Low,
    Enough,
    /// Between the reserve and the hysteresis line: keep the current state.
    Unchanged,
}

/// The watermark with hysteresis; `reserve_bytes == 0` disables it.
pub fn space_verdict(available_bytes: u64, reserve_bytes: u64) -> SpaceVerdict {
    if reserve_bytes == 0 {
        return SpaceVerdict::Enough;
    }
    let clear_at = reserve_bytes.saturating_add(reserve_bytes / RESERVE_HYSTERESIS_DIVISOR);
    if available_bytes < reserve_bytes {
        SpaceVerdict::Low
    } else if available_bytes >= clear_at {
        SpaceVerdict::Enough
    } else {
        SpaceVerdict::Unchanged
    }
}

/// Bytes an unprivileged writer can still allocate on the filesystem holding `path`.
pub fn available_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// The watermark thread. Dropping this stops it (within one poll at most; it does not wait).
pub struct SpaceWatcher {
    _stop: mpsc::Sender<()>,
}

impl SpaceWatcher {
    /// Starts polling the filesystem of `dir`. Returns `None` when `reserve_bytes` is 0.
    pub fn start(
        dir: PathBuf,
        reserve_bytes: u64,
        alarms: Arc<Alarms>,
    ) -> std::io::Result<Option<Self>> {
        if reserve_bytes == 0 {
            return Ok(None);
        }
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("synod-space-watch".into())
            .spawn(move || watch(&dir, reserve_bytes, &alarms, &stop_rx))?;
        Ok(Some(SpaceWatcher { _stop: stop_tx }))
    }
}

fn watch(dir: &std::path::Path, reserve_bytes: u64, alarms: &Alarms, stop: &mpsc::Receiver<()>) {
    let mut warned_unreadable = false;
    loop {
        match available_bytes(dir) {
            Ok(free) => {
                warned_unreadable = false;
                apply_verdict(dir, free, reserve_bytes, alarms);
            }
            // Keep the last verdict: a failed statvfs says nothing about the space left.
            Err(e) if !warned_unreadable => {
                warned_unreadable = true;
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read free disk space");
            }
            Err(_) => {}
        }
        // The sender is dropped (or sends) only when the node stops.
        match stop.recv_timeout(Duration::from_millis(SPACE_POLL_MS)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

fn apply_verdict(dir: &std::path::Path, free: u64, reserve_bytes: u64, alarms: &Alarms) {
    let was = alarms.low_space.load(Ordering::Relaxed);
    match space_verdict(free, reserve_bytes) {
        SpaceVerdict::Low if !was => {
            tracing::error!(
                dir = %dir.display(),
                available_bytes = free,
                reserve_bytes,
                "NOSPACE alarm raised: free disk space is below storage.reserve_bytes; this \
                 member refuses writes (reads and deletes still work) until space is freed"
            );
            alarms.set_low_space(true);
        }
        SpaceVerdict::Enough if was => {
            tracing::warn!(
                dir = %dir.display(),
                available_bytes = free,
                "NOSPACE alarm cleared: free disk space is back above the reserve"
            );
            alarms.set_low_space(false);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_alarm_is_sticky_until_disarmed_and_zero_disables_it() {
        let a = Alarms::new(Arc::new(Metrics::new()));
        a.check_quota(u64::MAX, 0);
        a.check_quota(100, 100);
        assert!(!a.nospace());
        a.check_quota(101, 100);
        assert!(a.nospace());
        // Shrinking below the quota does not clear it by itself: the operator disarms.
        a.check_quota(10, 100);
        assert!(a.nospace());
        a.disarm_nospace();
        assert!(!a.nospace());
        a.check_quota(101, 100);
        assert!(a.nospace(), "still too big after a disarm: raised again");
    }

    #[test]
    fn watermark_has_hysteresis_and_zero_disables_it() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(space_verdict(0, 0), SpaceVerdict::Enough);
        assert_eq!(space_verdict(8 * MIB - 1, 8 * MIB), SpaceVerdict::Low);
        assert_eq!(space_verdict(8 * MIB, 8 * MIB), SpaceVerdict::Unchanged);
        assert_eq!(
            space_verdict(10 * MIB - 1, 8 * MIB),
            SpaceVerdict::Unchanged
        );
        assert_eq!(space_verdict(10 * MIB, 8 * MIB), SpaceVerdict::Enough);
    }

    #[test]
    fn alarm_holds_while_either_cause_does_and_disarm_clears_both() {
        let metrics = Arc::new(Metrics::new());
        let a = Alarms::new(metrics.clone());
        assert!(!a.nospace());
        a.set_low_space(true);
        a.set_wal_write_failing(true);
        a.set_low_space(false);
        assert!(a.nospace(), "a failing WAL write alone keeps the alarm");
        assert_eq!(metrics.alarm_nospace.get(), 1);
        a.disarm_nospace();
        assert!(!a.nospace());
        assert_eq!(metrics.alarm_nospace.get(), 0);
    }

    #[test]
    fn free_space_of_a_real_directory_is_readable() {
        let dir = std::env::temp_dir();
        assert!(available_bytes(&dir).is_ok());
    }
}
