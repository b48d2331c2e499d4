//! How a member's applied revisions reach its watchers, for every API (etcd Watch, HTTP).
//!
//! **Only applied revisions.** The engine thread publishes, after each persisted batch, the
//! events of the revisions this member applied ([`synod_core::Engine::take_watch_events`]):
//! applied means decided, so no watcher ever sees a write that could still be lost. Every
//! member serves watches from its own applied state; a lagging member's watchers lag with it.
//!
//! **Bounded memory, no stalls.** The [`WatchHub`] keeps the most recent revisions in one ring
//! shared by every watcher (at most [`HUB_REVISIONS_MAX`] revisions and [`HUB_BYTES_MAX`]
//! bytes). A watcher is only a cursor (the next revision it needs): nothing is queued per
//! watcher, so a slow watcher costs no memory and holds up nobody. A watcher that fell behind
//! the ring — slow client, or a start revision in the past — is moved to catch up from the
//! store's history on the engine thread, a bounded page ([`HISTORY_PAGE_REVISIONS`]) at a
//! time; if the history it needs was compacted meanwhile, it is cancelled with the compaction
//! revision (etcd's behaviour), and the client re-lists.
//!
//! **Gaps.** A snapshot install (or a restart) makes the applied revision jump: the ring
//! restarts at the new revisions, and watchers behind it catch up from history like any
//! other late watcher — the history travels with the snapshot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use synod_core::EngineError;
use synod_core::kv::RevisionEvents;
pub use synod_core::kv::WatchFilter;
use tokio::sync::{mpsc, oneshot, watch};

/// Most revisions the shared ring keeps.
pub const HUB_REVISIONS_MAX: usize = 4096;
/// Most bytes (approximate, [`RevisionEvents::size_bytes`]) the shared ring keeps.
pub const HUB_BYTES_MAX: usize = 64 << 20;
/// Most revisions one history read returns: the engine thread's work per request is bounded.
pub const HISTORY_PAGE_REVISIONS: usize = 256;

/// A request to the engine thread for applied history (see [`synod_core::Engine::watch_history`]).
#[derive(Debug)]
pub struct HistoryQuery {
    pub start: u64,
    pub max_revisions: usize,
    pub reply: oneshot::Sender<Result<Vec<Arc<RevisionEvents>>, EngineError>>,
}

/// The recent revisions this member applied, shared by all its watchers.
#[derive(Debug)]
pub struct WatchHub {
    ring: Mutex<Ring>,
    /// The highest revision published: watchers wait on it.
    head: watch::Sender<u64>,
    /// The store's compaction revision as last published: the ring may still hold older
    /// revisions, but a watcher must not be served them (etcd cancels it instead).
    compacted: AtomicU64,
    /// Where history older than the ring is read (the engine thread).
    history: mpsc::Sender<HistoryQuery>,
}

#[derive(Debug, Default)]
struct Ring {
    revisions: VecDeque<Arc<RevisionEvents>>,
    bytes: usize,
}

impl Ring {
    fn push(&mut self, r: Arc<RevisionEvents>) {
        if let Some(last) = self.revisions.back()
            && r.revision != last.revision + 1
        {
            // A jump (snapshot install): the ring holds one contiguous run only.
            self.revisions.clear();
            self.bytes = 0;
        }
        self.bytes += r.size_bytes();
        self.revisions.push_back(r);
        while self.revisions.len() > HUB_REVISIONS_MAX
            || (self.bytes > HUB_BYTES_MAX && self.revisions.len() > 1)
        {
            if let Some(old) = self.revisions.pop_front() {
                self.bytes -= old.size_bytes();
            }
        }
    }

    /// Revisions `start..` if the ring holds `start` (or `start` is just past its end).
    fn read(&self, start: u64, max: usize) -> Option<Vec<Arc<RevisionEvents>>> {
        let first = self.revisions.front()?.revision;
        let last = self.revisions.back()?.revision;
        if start < first || start > last + 1 {
            return None;
        }
        let skip = (start - first) as usize;
        Some(
            self.revisions
                .iter()
                .skip(skip)
                .take(max)
                .cloned()
                .collect(),
        )
    }
}

impl WatchHub {
    /// A hub whose history reads go to `history`, starting at applied revision `revision`.
    pub fn new(revision: u64, history: mpsc::Sender<HistoryQuery>) -> Self {
        let (head, _) = watch::channel(revision);
        WatchHub {
            ring: Mutex::new(Ring::default()),
            head,
            compacted: AtomicU64::new(0),
            history,
        }
    }

    /// Called by the engine thread after each batch: the newly applied revisions, oldest
    /// first, and the store's revision after them.
    pub fn publish(&self, fresh: Vec<Arc<RevisionEvents>>, revision: u64) {
        if !fresh.is_empty() {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            for r in fresh {
                ring.push(r);
            }
        }
        self.head.send_if_modified(|h| {
            let moved = *h != revision;
            *h = revision;
            moved
        });
    }

    /// Records the store's compaction revision (called with every status update).
    pub fn set_compacted(&self, compact_revision: u64) {
        self.compacted
            .fetch_max(compact_revision, Ordering::Relaxed);
    }

    /// The highest applied revision published.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Watch streams waiting on the head (each holds one subscription).
    pub fn streams(&self) -> usize {
        self.head.receiver_count()
    }

    /// Wakes when the head moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Applied revisions `start..` (at most `max`), from the ring or else from the store's
    /// history. Empty when `start` is beyond the head.
    pub async fn read(
        &self,
        start: u64,
        max: usize,
    ) -> Result<Vec<Arc<RevisionEvents>>, EngineError> {
        let compact_revision = self.compacted.load(Ordering::Relaxed);
        if start < compact_revision {
            return Err(EngineError::Compacted { compact_revision });
        }
        if start > self.head() {
            return Ok(Vec::new());
        }
        let cached = {
            let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            ring.read(start, max)
        };
        if let Some(revs) = cached {
            return Ok(revs);
        }
        let (tx, rx) = oneshot::channel();
        let query = HistoryQuery {
            start,
            max_revisions: max.min(HISTORY_PAGE_REVISIONS),
            reply: tx,
        };
        let stopped = || EngineError::InvalidRequest("node is shutting down".into());
        self.history.send(query).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::kv::{EventKind, KeyValue, WatchEvent};

    fn rev(r: u64, key: &str) -> Arc<RevisionEvents> {
        Arc::new(RevisionEvents {
            revision: r,
            events: vec![WatchEvent {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.into(),
                    mod_revision: r,
                    ..Default::default()
                },
                prev_kv: None,
            }],
        })
    }

    #[tokio::test]
    async fn the_ring_serves_recent_revisions_and_history_the_rest() {
        let (tx, mut rx) = mpsc::channel(4);
        let hub = Arc::new(WatchHub::new(0, tx));
        hub.publish((1..=3).map(|r| rev(r, "a")).collect(), 3);
        let got: Vec<u64> = hub
            .read(2, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.revision)
            .collect();
        assert_eq!(got, vec![2, 3]);
        assert!(hub.read(4, 10).await.unwrap().is_empty(), "beyond the head");
        // A jump (snapshot install) restarts the ring; older revisions come from history.
        hub.publish(vec![rev(10, "b")], 10);
        let h = hub.clone();
        let reader = tokio::spawn(async move { h.read(3, 10).await });
        let q = rx.recv().await.unwrap();
        assert_eq!(q.start, 3);
        q.reply
            .send(Err(EngineError::Compacted {
                compact_revision: 5,
            }))
            .unwrap();
        assert_eq!(
            reader.await.unwrap(),
            Err(EngineError::Compacted {
                compact_revision: 5
            })
        );
    }

    #[test]
    fn the_ring_is_bounded() {
        let mut ring = Ring::default();
        for r in 1..=(HUB_REVISIONS_MAX as u64 + 10) {
            ring.push(rev(r, "k"));
        }
        assert_eq!(ring.revisions.len(), HUB_REVISIONS_MAX);
        assert_eq!(ring.revisions.front().unwrap().revision, 11);
    }

    #[test]
    fn filters_pick_range_and_kind() {
        let r = RevisionEvents {
            revision: 1,
            events: vec![
                rev(1, "a/1").events[0].clone(),
                WatchEvent {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: "a/2".into(),
                        ..Default::default()
                    },
                    prev_kv: Some(KeyValue::default()),
                },
                rev(1, "b").events[0].clone(),
            ],
        };
        let f = WatchFilter {
            key: "a/".into(),
            range_end: "a0".into(),
            ..Default::default()
        };
        assert_eq!(f.select(&r).len(), 2);
        assert!(f.select(&r)[1].prev_kv.is_none(), "prev_kv only when asked");
        let no_del = WatchFilter {
            no_delete: true,
            ..f.clone()
        };
        assert_eq!(no_del.select(&r).len(), 1);
    }
}
