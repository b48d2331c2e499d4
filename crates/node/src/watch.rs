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

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
pub use synod_core::kv::WatchFilter;
use synod_core::kv::{Key, KeyRange, RevisionEvents};
use synod_core::{EngineError, EngineStatus, GroupEvents, MoveKind, WatchMove};
use tokio::sync::{mpsc, oneshot, watch};

/// Most revisions the shared ring keeps.
pub const HUB_REVISIONS_MAX: usize = 4096;
/// Most bytes (approximate, [`RevisionEvents::size_bytes`]) the shared ring keeps.
pub const HUB_BYTES_MAX: usize = 64 << 20;
/// Most revisions one history read returns: the engine thread's work per request is bounded.
pub const HISTORY_PAGE_REVISIONS: usize = 256;
/// Moves of keys one hub remembers; a cursor still behind a forgotten one is cancelled.
pub const HUB_MOVES_MAX: usize = 1024;

/// A request to the engine thread for applied history (see
/// [`synod_core::Engine::group_watch_history`]).
#[derive(Debug)]
pub struct HistoryQuery {
    /// The revision stream (group; 0 unpartitioned).
    pub group: u64,
    pub start: u64,
    pub max_revisions: usize,
    pub reply: oneshot::Sender<Result<Vec<Arc<RevisionEvents>>, EngineError>>,
}

/// The recent revisions of one revision stream (the member's store, or one group of a
/// partitioned member), shared by all its watchers.
#[derive(Debug)]
pub struct WatchHub {
    group: u64,
    ring: Mutex<Ring>,
    /// The highest revision published: watchers wait on it.
    head: watch::Sender<u64>,
    /// The store's compaction revision as last published: the ring may still hold older
    /// revisions, but a watcher must not be served them (etcd cancels it instead).
    compacted: AtomicU64,
    /// Where history older than the ring is read (the engine thread).
    history: mpsc::Sender<HistoryQuery>,
    /// Shared by every hub of a member ([`WatchHubs::subscribe`]): moves with any head.
    any: watch::Sender<u64>,
    /// Whether `ring.moves` ever held a move (set before the head passes it).
    has_moves: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Ring {
    revisions: VecDeque<Arc<RevisionEvents>>,
    bytes: usize,
    /// Changes of the keys this stream covers, oldest first (partitioned only).
    moves: VecDeque<WatchMove>,
    /// The highest `through` of a move dropped from `moves`.
    moves_forgotten_through: u64,
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

    /// Whether revision `next` of the keys `[key, range_end)` must come from the store's
    /// history rather than this ring: an absorb at or after it joined another group's events
    /// of those keys into the history, which the revisions the ring cached lack. (Every other
    /// key's revisions the ring holds are still right, so its readers keep it.)
    fn lacks_absorbed(&self, next: u64, key: &[u8], range_end: &[u8]) -> bool {
        self.moves.iter().any(|m| {
            matches!(m.kind, MoveKind::Absorbed { .. })
                && m.through >= next
                && span_meets(key, range_end, &m.range)
        })
    }

    fn note_move(&mut self, m: WatchMove) {
        self.moves.push_back(m);
        while self.moves.len() > HUB_MOVES_MAX {
            if let Some(old) = self.moves.pop_front() {
                self.moves_forgotten_through = self.moves_forgotten_through.max(old.through);
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
        Self::of_group(0, revision, history, watch::channel(0).0)
    }

    fn of_group(
        group: u64,
        revision: u64,
        history: mpsc::Sender<HistoryQuery>,
        any: watch::Sender<u64>,
    ) -> Self {
        let (head, _) = watch::channel(revision);
        WatchHub {
            group,
            ring: Mutex::new(Ring::default()),
            head,
            compacted: AtomicU64::new(0),
            history,
            any,
            has_moves: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the engine thread after each batch: the newly applied revisions, oldest
    /// first, and the store's revision after them.
    pub fn publish(&self, fresh: Vec<Arc<RevisionEvents>>, revision: u64) {
        self.publish_with_moves(fresh, Vec::new(), revision);
    }

    /// [`WatchHub::publish`] with the changes of the keys this stream covers: recorded before
    /// the head moves, so a reader that sees a revision after a move's `through` sees the move.
    fn publish_with_moves(
        &self,
        fresh: Vec<Arc<RevisionEvents>>,
        moves: Vec<WatchMove>,
        revision: u64,
    ) {
        let fresh_or_moves_empty = fresh.is_empty() && moves.is_empty();
        if !fresh_or_moves_empty {
            let mut ring = self.ring();
            if !moves.is_empty() {
                self.has_moves.store(true, Ordering::Release);
            }
            for m in moves {
                ring.note_move(m);
            }
            for r in fresh {
                ring.push(r);
            }
        }
        let moved = self.head.send_if_modified(|h| {
            let moved = *h != revision;
            *h = revision;
            moved
        });
        if moved || !fresh_or_moves_empty {
            self.any.send_modify(|n| *n = n.wrapping_add(1));
        }
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

    /// The revision stream this hub serves (0 unpartitioned).
    pub fn group(&self) -> u64 {
        self.group
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
        self.read_from(start, max, true).await
    }

    /// [`WatchHub::read`], from the store's history alone unless `ring` allows the ring.
    async fn read_from(
        &self,
        start: u64,
        max: usize,
        ring: bool,
    ) -> Result<Vec<Arc<RevisionEvents>>, EngineError> {
        let compact_revision = self.compacted.load(Ordering::Relaxed);
        if start < compact_revision {
            return Err(EngineError::Compacted { compact_revision });
        }
        let head = self.head();
        if start > head {
            return Ok(Vec::new());
        }
        let cached = ring.then(|| self.ring().read(start, max)).flatten();
        if let Some(revs) = cached {
            return Ok(revs);
        }
        let (tx, rx) = oneshot::channel();
        let query = HistoryQuery {
            group: self.group,
            start,
            max_revisions: max.min(HISTORY_PAGE_REVISIONS),
            reply: tx,
        };
        let stopped = || EngineError::InvalidRequest("node is shutting down".into());
        self.history.send(query).await.map_err(|_| stopped())?;
        let mut revs = rx.await.map_err(|_| stopped())??;
        // History may already hold revisions not published yet (applied in the current
        // batch): a move they depend on may not be recorded yet either.
        revs.retain(|r| r.revision <= head);
        Ok(revs)
    }
}

/// Every revision stream of a member, and which keys each covers. An unpartitioned member has
/// one stream (group 0) covering every key; a partitioned one has one per group.
#[derive(Debug)]
pub struct WatchHubs {
    hubs: RwLock<BTreeMap<u64, Arc<WatchHub>>>,
    /// Partitioned: each group's keys, as of the last publish. Empty: one stream, every key.
    layout: RwLock<Vec<(KeyRange, u64)>>,
    /// Moves whenever any hub's head moves or a move is published: streams wait on it.
    any: watch::Sender<u64>,
    history: mpsc::Sender<HistoryQuery>,
    /// Planted bug `PartitionWatchFollowsOldMoves`.
    bug_old_moves: bool,
}

impl WatchHubs {
    /// Plants `bug` if it is one of the watch layer's (testing only).
    pub fn planted(mut self, bug: Option<synod_core::PlantedBug>) -> Self {
        self.bug_old_moves = bug == Some(synod_core::PlantedBug::PartitionWatchFollowsOldMoves);
        self
    }

    /// The streams of an engine whose status is `status` (history reads go to `history`).
    pub fn new(status: &EngineStatus, history: mpsc::Sender<HistoryQuery>) -> Self {
        let hubs = WatchHubs {
            hubs: RwLock::default(),
            layout: RwLock::default(),
            any: watch::channel(0).0,
            history,
            bug_old_moves: false,
        };
        hubs.publish(Vec::new(), status);
        hubs
    }

    /// One unpartitioned stream over `hub` (tests and in-process nodes publish through it).
    pub fn single(hub: Arc<WatchHub>) -> Self {
        WatchHubs {
            hubs: RwLock::new(BTreeMap::from([(0, hub.clone())])),
            layout: RwLock::default(),
            any: hub.any.clone(),
            history: hub.history.clone(),
            bug_old_moves: false,
        }
    }

    /// Called by the engine thread after each batch, with the status after it: the layout
    /// first (a watcher created from here on finds its keys' group), then each stream's moves
    /// and revisions, then the heads.
    pub fn publish(&self, batch: Vec<GroupEvents>, status: &EngineStatus) {
        let partitioned = !status.groups.is_empty();
        let mut layout_changed = false;
        let heads: Vec<(u64, u64, u64)> = if partitioned {
            let now: Vec<(KeyRange, u64)> = status
                .groups
                .iter()
                .map(|g| (KeyRange::new(g.start.clone(), g.end.clone()), g.group))
                .collect();
            let mut layout = self.layout.write().unwrap_or_else(|p| p.into_inner());
            if *layout != now {
                *layout = now;
                layout_changed = true;
            }
            status
                .groups
                .iter()
                .map(|g| (g.group, g.revision, g.compact_revision))
                .collect()
        } else {
            vec![(0, status.revision, status.compact_revision)]
        };
        let mut batch: BTreeMap<u64, GroupEvents> =
            batch.into_iter().map(|b| (b.group, b)).collect();
        {
            let mut hubs = self.hubs.write().unwrap_or_else(|p| p.into_inner());
            for (g, revision, compacted) in &heads {
                let hub = hubs.entry(*g).or_insert_with(|| {
                    let (history, any) = (self.history.clone(), self.any.clone());
                    Arc::new(WatchHub::of_group(*g, *revision, history, any))
                });
                hub.set_compacted(*compacted);
                let b = batch.remove(g).unwrap_or_default();
                hub.publish_with_moves(b.events, b.moves, *revision);
            }
            // Groups gone from this member (merged away): their last moves, then the hub goes
            // (its watchers keep their own reference until they move on).
            for (g, b) in batch {
                if let Some(hub) = hubs.get(&g) {
                    let last = b.events.last().map_or(hub.head(), |r| r.revision);
                    hub.publish_with_moves(b.events, b.moves, last.max(hub.head()));
                }
            }
            hubs.retain(|g, _| heads.iter().any(|(h, _, _)| h == g));
        }
        if layout_changed {
            // A new layout alone (no head moved) may be what a cursor waits for.
            self.any.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The hub of group `g`, if this member runs it.
    pub fn hub(&self, g: u64) -> Option<Arc<WatchHub>> {
        self.hubs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&g)
            .cloned()
    }

    /// The group whose keys hold all of the etcd span `[key, range_end)`, or why none does.
    fn owner(&self, key: &[u8], range_end: &[u8]) -> Result<u64, String> {
        let layout = self.layout.read().unwrap_or_else(|p| p.into_inner());
        if layout.is_empty() {
            return Ok(0);
        }
        if let Some((_, g)) = layout.iter().find(|(r, _)| r.holds_span(key, range_end)) {
            return Ok(*g);
        }
        let mut groups: Vec<String> = layout
            .iter()
            .filter(|(r, _)| span_meets(key, range_end, r))
            .map(|(_, g)| g.to_string())
            .collect();
        groups.sort();
        Err(format!(
            "synod: a watch whose keys span groups {} is refused: revisions are per group in a \
             partitioned cluster, so a watch covers keys of one group (watch each group's part)",
            groups.join(", ")
        ))
    }

    /// A cursor over the keys `[key, range_end)` from revision `next` (`None`: from the next
    /// revision of their group), or why their keys cannot be watched together.
    pub fn cursor(
        self: &Arc<Self>,
        key: &[u8],
        range_end: &[u8],
        next: Option<u64>,
    ) -> Result<Cursor, String> {
        let g = self.owner(key, range_end)?;
        let hub = self
            .hub(g)
            .ok_or_else(|| format!("synod: group {g} is not on this member; retry"))?;
        let next = next.unwrap_or_else(|| hub.head() + 1);
        Ok(Cursor {
            hubs: self.clone(),
            hub,
            next,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        })
    }

    /// The group whose stream took in frozen group `frozen` by an absorb, and the revision it
    /// reached with it (at least the frozen group's last: see `MoveKind::Absorbed`).
    fn absorber(&self, frozen: u64) -> Option<(u64, u64)> {
        let hubs: Vec<Arc<WatchHub>> = self
            .hubs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        hubs.iter().find_map(|h| {
            let ring = h.ring();
            ring.moves.iter().find_map(|m| match m.kind {
                MoveKind::Absorbed { from, .. } if from == frozen => Some((h.group(), m.through)),
                _ => None,
            })
        })
    }

    /// The highest head of any stream: the revision to stamp on a response no stream owns.
    pub fn head(&self) -> u64 {
        let hubs = self.hubs.read().unwrap_or_else(|p| p.into_inner());
        hubs.values().map(|h| h.head()).max().unwrap_or(0)
    }

    /// Wakes when any stream's head moves or keys move.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.any.subscribe()
    }

    /// Watch streams waiting for revisions.
    pub fn streams(&self) -> usize {
        self.any.receiver_count()
    }
}

/// Whether the etcd span `[key, range_end)` touches a key of `r`.
fn span_meets(key: &[u8], range_end: &[u8], r: &KeyRange) -> bool {
    let span = span_range(key, range_end);
    let below_end = r.end.is_empty() || span.start.as_slice() < r.end.as_slice();
    let above_start = span.end.is_empty() || span.end.as_slice() > r.start.as_slice();
    below_end && above_start
}

/// The etcd span `[key, range_end)` as a key range (`[0]`: every key from `key` on).
fn span_range(key: &[u8], range_end: &[u8]) -> KeyRange {
    let end = match range_end {
        [] => {
            let mut e = key.to_vec();
            e.push(0);
            e
        }
        [0] => Vec::new(),
        e => e.to_vec(),
    };
    KeyRange::new(key, end)
}

/// Whether range `outer` holds every key of `inner`.
fn range_holds(outer: &KeyRange, inner: &KeyRange) -> bool {
    inner.start >= outer.start
        && (outer.end.is_empty() || (!inner.end.is_empty() && inner.end <= outer.end))
}

/// Why a cursor stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorError {
    /// Reading the history failed (compacted, shutting down).
    Engine(EngineError),
    /// The watched keys left this cursor's group with no stream to follow them on: watch
    /// again (the text says from which revision).
    Moved(String),
}

impl From<EngineError> for CursorError {
    fn from(e: EngineError) -> Self {
        CursorError::Engine(e)
    }
}

/// What a pending move asks of a cursor.
enum Due {
    /// Nothing: read on (up to `cap`).
    Read {
        cap: u64,
    },
    /// Go on reading in another group, from revision `next` at the earliest.
    Follow {
        to: u64,
        next: u64,
    },
    /// The keys' group froze for a merge and no group here has absorbed it yet: nothing to
    /// do until another stream publishes.
    Wait,
    /// (Inside `due` only.) The group froze for a merge: find the group that absorbs it.
    Frozen,
    /// Skip a revision jump that holds none of the watched keys' events.
    Skip(u64),
    Stop(CursorError),
}

/// A watcher's place in the revision streams: one group's stream at a time, following the
/// watched keys when a split hands them to another group. Shared by every watch API.
#[derive(Debug)]
pub struct Cursor {
    hubs: Arc<WatchHubs>,
    hub: Arc<WatchHub>,
    /// The next revision to read, in the current group's numbering (a split's new group
    /// goes on from its parent's revision, so it keeps its meaning across a move).
    pub next: u64,
    key: Key,
    range_end: Key,
}

impl Cursor {
    /// The group whose stream it reads.
    pub fn group(&self) -> u64 {
        self.hub.group()
    }

    /// The revision through which a caught-up cursor has seen every event: its group's head,
    /// but never past a move of its keys it has not acted on (its next group's revisions
    /// after that belong to the next group).
    pub fn head(&self) -> u64 {
        let head = self.hub.head();
        match self.resolved(head) {
            Due::Read { cap } => cap.min(head),
            _ => self.next.saturating_sub(1).min(head),
        }
    }

    /// Whether a read would do something now: revisions to read, or a move to act on.
    pub fn ready(&self) -> bool {
        let head = self.hub.head();
        match self.resolved(head) {
            Due::Read { cap } => self.next <= cap.min(head),
            Due::Wait => false,
            _ => true,
        }
    }

    /// [`Cursor::due`], with a freeze resolved to the group that absorbed the frozen one —
    /// looked up after `due` let go of its hub's lock (the engine thread takes the hubs' lock
    /// before a hub's, so this must not hold them the other way round).
    fn resolved(&self, head: u64) -> Due {
        match self.due(head) {
            Due::Frozen => match self.hubs.absorber(self.hub.group()) {
                Some((to, through)) => Due::Follow {
                    to,
                    next: through + 1,
                },
                None => Due::Wait,
            },
            due => due,
        }
    }

    /// What the moves this cursor's hub published ask of it.
    fn due(&self, head: u64) -> Due {
        // Every round of every watcher asks: without moves (always, unpartitioned) it costs
        // one atomic load, not the ring's lock.
        if !self.hub.has_moves.load(Ordering::Acquire) {
            return Due::Read { cap: head };
        }
        let ring = self.hub.ring();
        if ring.moves.is_empty() {
            return Due::Read { cap: head };
        }
        if self.next <= ring.moves_forgotten_through {
            return Due::Stop(CursorError::Moved(format!(
                "synod: the watched keys' group changed too often since revision {}; watch again",
                self.next
            )));
        }
        let span = span_range(&self.key, &self.range_end);
        // The keys came (back) into this group before `next` — an absorb or a snapshot: what
        // the stream did with them earlier (a split that took them away, before a merge
        // brought them back) is not this cursor's. It reads on from the last such return.
        let returned = ring.moves.iter().rposition(|m| {
            matches!(m.kind, MoveKind::Absorbed { .. } | MoveKind::Arrived)
                && m.through < self.next
                && range_holds(&m.range, &span)
        });
        let skip = match returned {
            Some(i) if !self.hubs.bug_old_moves => i + 1,
            _ => 0,
        };
        for m in ring.moves.iter().skip(skip) {
            if m.kind == MoveKind::Arrived {
                // Keys came in by a snapshot: this cursor's keys were not among them.
                continue;
            }
            if let MoveKind::Absorbed { before, .. } = m.kind {
                // Of this group's own keys, B+1..M hold no events: skipped, not read (the
                // history may not reach back that far). Of the absorbed keys, the merged
                // history holds their events at their own revisions — a watch made or resumed
                // after the merge from before it reads them there (or is told "compacted" by
                // the history read, if the merge could not keep them).
                if before < self.next
                    && self.next <= m.through
                    && !span_meets(&self.key, &self.range_end, &m.range)
                {
                    return Due::Skip(m.through + 1);
                }
                continue;
            }
            if !span_meets(&self.key, &self.range_end, &m.range) {
                continue;
            }
            if self.next <= m.through {
                return Due::Read { cap: m.through };
            }
            return match m.kind {
                MoveKind::Group(to) if range_holds(&m.range, &span) => Due::Follow {
                    to,
                    next: self.next,
                },
                MoveKind::Frozen if range_holds(&m.range, &span) => Due::Frozen,
                MoveKind::Group(to) => Due::Stop(CursorError::Moved(format!(
                    "synod: the watched keys were split between groups after revision {}: \
                     part went to group {to}; watch each group's part from revision {}",
                    m.through,
                    m.through + 1
                ))),
                _ => Due::Stop(CursorError::Moved(format!(
                    "synod: the watched keys moved to another group after revision {} (this \
                     member learned of it from a snapshot or the group below); watch again \
                     from revision {}",
                    m.through,
                    m.through + 1
                ))),
            };
        }
        Due::Read { cap: head }
    }

    /// The next revisions of its group (at most `max`; none if caught up), after following
    /// any move of its keys it has read up to. The caller advances `next` past what it used.
    pub async fn read(&mut self, max: usize) -> Result<Vec<Arc<RevisionEvents>>, CursorError> {
        loop {
            let head = self.hub.head();
            match self.resolved(head) {
                Due::Read { cap } => {
                    let ring = !(self.hub.has_moves.load(Ordering::Acquire)
                        && self
                            .hub
                            .ring()
                            .lacks_absorbed(self.next, &self.key, &self.range_end));
                    let mut revs = self.hub.read_from(self.next, max, ring).await?;
                    revs.retain(|r| r.revision <= cap);
                    return Ok(revs);
                }
                Due::Skip(next) => self.next = next,
                Due::Wait => return Ok(Vec::new()),
                Due::Follow { to, next } => match self.hubs.hub(to) {
                    Some(hub) => {
                        self.hub = hub;
                        self.next = self.next.max(next);
                    }
                    None => {
                        return Err(CursorError::Moved(format!(
                            "synod: the watched keys moved to group {to}, which is not on this \
                             member; watch again from revision {}",
                            self.next
                        )));
                    }
                },
                Due::Stop(e) => return Err(e),
                Due::Frozen => unreachable!("resolved above"),
            }
        }
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

    /// A partitioned member's streams: groups 1 = [a, m) and 2 = [m, end), at `revisions`.
    fn partitioned(revisions: (u64, u64), extra: &[(u64, &str, &str, u64)]) -> EngineStatus {
        let group = |g, start: &str, end: &str, revision| synod_core::GroupStatus {
            group: g,
            start: start.into(),
            end: end.into(),
            revision,
            ..Default::default()
        };
        let mut groups = vec![
            group(1, "a", "m", revisions.0),
            group(2, "m", "", revisions.1),
        ];
        groups.extend(extra.iter().map(|(g, s, e, r)| group(*g, s, e, *r)));
        EngineStatus {
            groups,
            ..Default::default()
        }
    }

    fn batch(group: u64, revs: &[(u64, &str)], moves: Vec<WatchMove>) -> GroupEvents {
        GroupEvents {
            group,
            events: revs.iter().map(|(r, k)| rev(*r, k)).collect(),
            moves,
        }
    }

    async fn read_keys(c: &mut Cursor) -> Result<Vec<(u64, String)>, CursorError> {
        let revs = c.read(100).await?;
        if let Some(last) = revs.last() {
            c.next = last.revision + 1;
        }
        Ok(revs
            .iter()
            .map(|r| {
                (
                    r.revision,
                    String::from_utf8_lossy(&r.events[0].kv.key).into(),
                )
            })
            .collect())
    }

    #[tokio::test]
    async fn a_cursor_follows_its_keys_into_the_group_a_split_hands_them_to() {
        let (tx, _rx) = mpsc::channel(4);
        let hubs = Arc::new(WatchHubs::new(&partitioned((0, 0), &[]), tx));
        let mut c = hubs.cursor(b"x", b"", None).unwrap();
        assert_eq!((c.group(), c.next), (2, 1));
        assert!(
            hubs.cursor(b"b", b"z", None)
                .unwrap_err()
                .contains("span groups 1, 2"),
            "a watch over two groups is refused"
        );
        // Group 2 splits at t after its revision 2 (group 9 goes on from there); its revision
        // 3 holds only keys it kept.
        let split = WatchMove {
            through: 2,
            range: KeyRange::new("t", ""),
            kind: MoveKind::Group(9),
        };
        let status = partitioned((0, 3), &[(9, "t", "", 3)]);
        let mut status_9 = status.clone();
        status_9.groups[1].end = b"t".to_vec();
        hubs.publish(
            vec![
                batch(2, &[(1, "x"), (2, "n"), (3, "n")], vec![split]),
                batch(9, &[(3, "x")], Vec::new()),
            ],
            &status_9,
        );
        assert_eq!(c.head(), 2, "never past the move it has not acted on");
        assert!(c.ready());
        assert_eq!(
            read_keys(&mut c).await.unwrap(),
            [(1, "x".into()), (2, "n".into())]
        );
        // Past the move: on to group 9, at the same revision numbers.
        assert_eq!(read_keys(&mut c).await.unwrap(), [(3, "x".into())]);
        assert_eq!((c.group(), c.head()), (9, 3));
        assert!(!c.ready(), "caught up");
        // A cursor on the keys that stayed is not moved.
        let mut stays = hubs.cursor(b"n", b"", Some(2)).unwrap();
        assert_eq!(
            read_keys(&mut stays).await.unwrap(),
            [(2, "n".into()), (3, "n".into())]
        );
        assert_eq!(stays.group(), 2);
    }

    #[tokio::test]
    async fn keys_split_apart_or_merged_away_cancel_their_cursor_after_their_last_revision() {
        let (tx, _rx) = mpsc::channel(4);
        let hubs = Arc::new(WatchHubs::new(&partitioned((0, 0), &[]), tx));
        let mut across = hubs.cursor(b"m", &[0], Some(1)).unwrap();
        let mut frozen = hubs.cursor(b"q", b"", Some(1)).unwrap();
        let split = WatchMove {
            through: 1,
            range: KeyRange::new("t", ""),
            kind: MoveKind::Group(9),
        };
        let freeze = WatchMove {
            through: 2,
            range: KeyRange::new("m", "t"),
            kind: MoveKind::Gone,
        };
        hubs.publish(
            vec![batch(2, &[(1, "q"), (2, "q")], vec![split, freeze])],
            &partitioned((0, 2), &[(9, "t", "", 1)]),
        );
        assert_eq!(read_keys(&mut across).await.unwrap(), [(1, "q".into())]);
        let e = read_keys(&mut across).await.unwrap_err();
        assert!(
            matches!(&e, CursorError::Moved(m) if m.contains("split between groups")),
            "{e:?}"
        );
        assert_eq!(
            read_keys(&mut frozen).await.unwrap(),
            [(1, "q".into()), (2, "q".into())]
        );
        let e = read_keys(&mut frozen).await.unwrap_err();
        assert!(
            matches!(&e, CursorError::Moved(m) if m.contains("from revision 3")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_group_that_absorbed_another_skips_the_revisions_it_jumped_over() {
        let (tx, _rx) = mpsc::channel(4);
        let hubs = Arc::new(WatchHubs::new(&partitioned((1, 0), &[]), tx));
        let mut c = hubs.cursor(b"b", b"", None).unwrap();
        assert_eq!(c.next, 2);
        let absorbed = WatchMove {
            through: 7,
            range: KeyRange::new("m", ""),
            kind: MoveKind::Absorbed { before: 1, from: 7 },
        };
        hubs.publish(
            vec![batch(1, &[(8, "b")], vec![absorbed])],
            &partitioned((8, 7), &[]),
        );
        assert!(c.ready());
        assert_eq!(read_keys(&mut c).await.unwrap(), [(8, "b".into())]);
    }

    #[tokio::test]
    async fn a_cursor_follows_its_keys_through_a_merge_into_the_group_that_absorbs_them() {
        let (tx, _rx) = mpsc::channel(4);
        // Group 2 = [m, end) was split off group 1 (at group 1's revision 0): a move of group
        // 1's stream from before the merge, which a follower must not act on.
        let hubs = Arc::new(WatchHubs::new(&partitioned((0, 0), &[]), tx));
        let split = WatchMove {
            through: 0,
            range: KeyRange::new("m", ""),
            kind: MoveKind::Group(2),
        };
        hubs.publish(vec![batch(1, &[], vec![split])], &partitioned((0, 0), &[]));
        let mut c = hubs.cursor(b"q", b"", Some(1)).unwrap();
        assert_eq!(c.group(), 2);
        // Group 2 freezes after its revision 2; group 1 is at 5.
        let freeze = WatchMove {
            through: 2,
            range: KeyRange::new("m", ""),
            kind: MoveKind::Frozen,
        };
        hubs.publish(
            vec![
                batch(1, &[(5, "b")], Vec::new()),
                batch(2, &[(1, "q"), (2, "q")], vec![freeze]),
            ],
            &partitioned((5, 2), &[]),
        );
        assert_eq!(
            read_keys(&mut c).await.unwrap(),
            [(1, "q".into()), (2, "q".into())]
        );
        assert!(
            !c.ready(),
            "nothing to do until a group absorbs the frozen one"
        );
        assert_eq!(c.head(), 2, "never past the freeze before the absorb");
        assert_eq!(read_keys(&mut c).await.unwrap(), []);
        // Group 1 absorbs group 2: its revision stays 5 (the larger), then q is written at 6.
        let absorb = WatchMove {
            through: 5,
            range: KeyRange::new("m", ""),
            kind: MoveKind::Absorbed { before: 5, from: 2 },
        };
        let mut merged = partitioned((6, 0), &[]);
        merged.groups.truncate(1);
        merged.groups[0].end.clear();
        hubs.publish(vec![batch(1, &[(6, "q")], vec![absorb])], &merged);
        assert!(c.ready(), "the absorb is what the cursor waited for");
        assert_eq!(read_keys(&mut c).await.unwrap(), [(6, "q".into())]);
        assert_eq!((c.group(), c.head()), (1, 6));
        // A later split of the group below, elsewhere, leaves the follower where it is; one
        // that takes its keys is followed as usual.
        let split_again = WatchMove {
            through: 6,
            range: KeyRange::new("p", ""),
            kind: MoveKind::Group(9),
        };
        let mut after = merged.clone();
        after.groups[0].end = b"p".to_vec();
        after.groups.push(synod_core::GroupStatus {
            group: 9,
            start: b"p".to_vec(),
            revision: 7,
            ..Default::default()
        });
        hubs.publish(
            vec![
                batch(1, &[], vec![split_again]),
                batch(9, &[(7, "q")], Vec::new()),
            ],
            &after,
        );
        assert_eq!(read_keys(&mut c).await.unwrap(), [(7, "q".into())]);
        assert_eq!(c.group(), 9);
    }

    /// A watch of the absorbed keys made after a merge, from a revision the absorb jumped
    /// over, reads the merged group's history (which holds the absorbed group's events), not
    /// "compacted".
    #[tokio::test]
    async fn a_watch_made_after_a_merge_from_before_it_reads_the_merged_history() {
        let (tx, mut rx) = mpsc::channel(4);
        let hubs = Arc::new(WatchHubs::new(&partitioned((1, 0), &[]), tx));
        let absorb = WatchMove {
            through: 7,
            range: KeyRange::new("m", ""),
            kind: MoveKind::Absorbed { before: 1, from: 2 },
        };
        let mut merged = partitioned((7, 0), &[]);
        merged.groups.truncate(1);
        merged.groups[0].end.clear();
        // Group 1's own revision 1 was published (and held in its ring) before the absorb.
        hubs.publish(vec![batch(1, &[(1, "b")], vec![absorb])], &merged);
        // A watch of group 1's own keys still reads what the ring holds.
        let mut own = hubs.cursor(b"b", b"", Some(1)).unwrap();
        let mut reader = tokio::spawn(async move { read_keys(&mut own).await });
        let got = tokio::select! {
            q = rx.recv() => panic!("an own key's read went to the history: {:?}", q.map(|q| q.start)),
            r = &mut reader => r.unwrap().unwrap(),
        };
        assert_eq!(got, [(1, "b".into())]);
        for start in [5, 1] {
            let mut c = hubs.cursor(b"q", b"", Some(start)).unwrap();
            assert_eq!(c.group(), 1);
            assert!(
                matches!(c.resolved(c.hub.head()), Due::Read { cap: 7 }),
                "a read of the history, not a stop"
            );
            let mut reader = tokio::spawn(async move { read_keys(&mut c).await });
            let q = tokio::select! {
                q = rx.recv() => q.unwrap(),
                r = &mut reader => panic!("answered without the store's history: {r:?}"),
            };
            assert_eq!(
                q.start, start,
                "from the store's history, which the absorb changed (not the ring)"
            );
            q.reply.send(Ok(vec![rev(5, "q"), rev(7, "q")])).unwrap();
            assert_eq!(
                reader.await.unwrap().unwrap(),
                [(5, "q".into()), (7, "q".into())]
            );
        }
    }

    /// After a split and a merge back, the group below's stream still holds the split's move
    /// of the keys it has again: a watch made afterwards, from now or from a revision after
    /// the merge, must not act on it.
    #[tokio::test]
    async fn a_watch_made_after_a_merge_back_reads_the_group_that_holds_its_keys() {
        let (tx, _rx) = mpsc::channel(4);
        let hubs = Arc::new(WatchHubs::new(&partitioned((0, 0), &[]), tx));
        let split = WatchMove {
            through: 2,
            range: KeyRange::new("m", ""),
            kind: MoveKind::Group(2),
        };
        let absorb = WatchMove {
            through: 5,
            range: KeyRange::new("m", ""),
            kind: MoveKind::Absorbed { before: 4, from: 2 },
        };
        let mut merged = partitioned((5, 0), &[]);
        merged.groups.truncate(1);
        merged.groups[0].end.clear();
        hubs.publish(vec![batch(1, &[(2, "b")], vec![split, absorb])], &merged);
        let mut now = hubs.cursor(b"q", b"", None).unwrap();
        let mut since = hubs.cursor(b"q", b"", Some(6)).unwrap();
        assert_eq!((now.group(), now.next, since.next), (1, 6, 6));
        let mut after = merged.clone();
        after.groups[0].revision = 6;
        hubs.publish(vec![batch(1, &[(6, "q")], Vec::new())], &after);
        assert_eq!(read_keys(&mut now).await.unwrap(), [(6, "q".into())]);
        assert_eq!(read_keys(&mut since).await.unwrap(), [(6, "q".into())]);
    }
}
