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

    /// The splits published with `through` from `start - 1` to `end` (what a remote hub
    /// reading `start..=end` must know of). Only splits: the other moves are this member's
    /// own — `Away` (the group left *this* member; a remote hub taking it would send its
    /// readers to itself, round and round), `Gone` and `Arrived` (what a snapshot showed
    /// here) — and merges, the rest, do not happen where groups are placed.
    fn moves_within(&self, start: u64, end: u64) -> Vec<WatchMove> {
        if !self.has_moves.load(Ordering::Acquire) {
            return Vec::new();
        }
        let ring = self.ring();
        (ring.moves.iter())
            .filter(|m| matches!(m.kind, MoveKind::Group(_)))
            .filter(|m| m.through + 1 >= start && m.through <= end)
            .cloned()
            .collect()
    }

    /// Whether move `m` was published here already.
    fn has_move(&self, m: &WatchMove) -> bool {
        self.has_moves.load(Ordering::Acquire) && self.ring().moves.contains(m)
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
    /// Placement: groups live on some members only, so a layout with holes is not a member
    /// behind, and waiting does not help.
    placed: std::sync::atomic::AtomicBool,
    /// Placement: every range as the engine places it, with its group and hosts.
    /// (As the status gives it: compared on every publish without building anything.)
    placement: RwLock<Vec<synod_core::DirectoryEntry>>,
    /// Hubs of groups hosted elsewhere, fed by a host (`remote.rs`).
    remote: RwLock<BTreeMap<u64, Arc<WatchHub>>>,
    /// Hosts of groups split off groups hosted elsewhere, until the engine places them.
    split_hints: RwLock<BTreeMap<u64, Vec<synod_core::NodeId>>>,
    /// Where remote hubs read (unset: watches of groups elsewhere are refused).
    source: std::sync::OnceLock<Arc<dyn remote::EventsSource>>,
    /// Moves whenever any hub's head moves or a move is published: streams wait on it.
    any: watch::Sender<u64>,
    history: mpsc::Sender<HistoryQuery>,
    /// Planted bug `PartitionWatchFollowsOldMoves`.
    bug_old_moves: bool,
    /// Planted bug `PartitionWatchMergedAhead`.
    bug_merged_ahead: bool,
    /// Planted bug `RemoteWatchHistoryIgnoresCompaction`.
    bug_history_compaction: bool,
    /// Planted bug `WatchCancelledWhenGroupMovesAway`.
    bug_away_stops: bool,
    /// Planted bug `RemotePagesDropSplits`.
    bug_pages_drop_splits: bool,
    /// Planted bug `WatchProgressGoesBack`.
    pub(super) bug_progress_goes_back: bool,
}

impl WatchHubs {
    /// Plants `bug` if it is one of the watch layer's (testing only).
    pub fn planted(mut self, bug: Option<synod_core::PlantedBug>) -> Self {
        self.bug_old_moves = bug == Some(synod_core::PlantedBug::PartitionWatchFollowsOldMoves);
        self.bug_merged_ahead = bug == Some(synod_core::PlantedBug::PartitionWatchMergedAhead);
        self.bug_history_compaction =
            bug == Some(synod_core::PlantedBug::RemoteWatchHistoryIgnoresCompaction);
        self.bug_away_stops = bug == Some(synod_core::PlantedBug::WatchCancelledWhenGroupMovesAway);
        self.bug_pages_drop_splits = bug == Some(synod_core::PlantedBug::RemotePagesDropSplits);
        self.bug_progress_goes_back = bug == Some(synod_core::PlantedBug::WatchProgressGoesBack);
        self
    }

    /// The streams of an engine whose status is `status` (history reads go to `history`).
    pub fn new(status: &EngineStatus, history: mpsc::Sender<HistoryQuery>) -> Self {
        let hubs = WatchHubs {
            hubs: RwLock::default(),
            layout: RwLock::default(),
            placed: Default::default(),
            placement: RwLock::default(),
            remote: RwLock::default(),
            split_hints: RwLock::default(),
            source: Default::default(),
            any: watch::channel(0).0,
            history,
            bug_old_moves: false,
            bug_merged_ahead: false,
            bug_history_compaction: false,
            bug_away_stops: false,
            bug_pages_drop_splits: false,
            bug_progress_goes_back: false,
        };
        hubs.publish(Vec::new(), status);
        hubs
    }

    /// One unpartitioned stream over `hub` (tests and in-process nodes publish through it).
    pub fn single(hub: Arc<WatchHub>) -> Self {
        WatchHubs {
            hubs: RwLock::new(BTreeMap::from([(0, hub.clone())])),
            layout: RwLock::default(),
            placed: Default::default(),
            placement: RwLock::default(),
            remote: RwLock::default(),
            split_hints: RwLock::default(),
            source: Default::default(),
            any: hub.any.clone(),
            history: hub.history.clone(),
            bug_old_moves: false,
            bug_merged_ahead: false,
            bug_history_compaction: false,
            bug_away_stops: false,
            bug_pages_drop_splits: false,
            bug_progress_goes_back: false,
        }
    }

    /// Called by the engine thread after each batch, with the status after it: the layout
    /// first (a watcher created from here on finds its keys' group), then each stream's moves
    /// and revisions, then the heads.
    pub fn publish(&self, batch: Vec<GroupEvents>, status: &EngineStatus) {
        let partitioned = !status.groups.is_empty();
        let placed = status.directory.as_ref().is_some_and(|d| d.placed);
        self.placed
            .store(placed, std::sync::atomic::Ordering::Relaxed);
        if let Some(d) = status.directory.as_ref().filter(|d| d.placed) {
            let same = *self.placement.read().unwrap_or_else(|p| p.into_inner()) == d.placement;
            if !same {
                let mut placement = self.placement.write().unwrap_or_else(|p| p.into_inner());
                placement.clone_from(&d.placement);
            }
        }
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

    /// The etcd span `[key, range_end)` cut at the groups' bounds: each group's part (the
    /// span itself when one group holds it, or unpartitioned), or why the layout this member
    /// knows does not cover it (a group it has not started yet).
    fn parts_of(&self, key: &[u8], range_end: &[u8]) -> Result<Vec<(u64, Key, Key)>, String> {
        let layout = self.layout.read().unwrap_or_else(|p| p.into_inner());
        if layout.is_empty() {
            return Ok(vec![(0, key.to_vec(), range_end.to_vec())]);
        }
        if let Some(parts) = cut(&layout, key, range_end) {
            return Ok(parts);
        }
        let placed = self.placed.load(std::sync::atomic::Ordering::Relaxed);
        if placed && self.source.get().is_some() {
            // Groups hosted elsewhere: read through remote hubs (`remote.rs`).
            let placement = self.placement.read().unwrap_or_else(|p| p.into_inner());
            let ranges = placement_ranges(&placement);
            if let Some(parts) = cut(&ranges, key, range_end) {
                return Ok(parts);
            }
            return Err("synod: the placement does not cover the watched keys yet; retry".into());
        }
        if placed {
            return Err(
                "synod: some groups of the watched keys live on other members only \
                 (partition.replicas): watch them at a member that hosts them all \
                 (synodctl range list shows where each range lives)"
                    .into(),
            );
        }
        Err(
            "synod: this member does not run every group of the watched keys yet; \
                        retry"
                .into(),
        )
    }

    /// The groups of `[key, range_end)` this member does not host (placement), if any.
    fn remote_parts(&self, key: &[u8], range_end: &[u8]) -> Option<Vec<u64>> {
        let placed = self.placed.load(std::sync::atomic::Ordering::Relaxed);
        if !placed || self.source.get().is_none() {
            return None;
        }
        let parts = self.parts_of(key, range_end).ok()?;
        let away: Vec<u64> = parts
            .into_iter()
            .map(|(g, _, _)| g)
            .filter(|g| self.hub(*g).is_none())
            .collect();
        (!away.is_empty()).then_some(away)
    }

    /// The hosts of group `g` as the engine places it, else as its parent's remote hub left
    /// them when a watch followed a split there ([`WatchHubs::hint_hosts`]).
    fn hosts_of(&self, g: u64) -> Vec<synod_core::NodeId> {
        let placement = self.placement.read().unwrap_or_else(|p| p.into_inner());
        match placement.iter().find(|e| e.group == g) {
            Some(e) => e.members.clone(),
            None => {
                let hints = self.split_hints.read().unwrap_or_else(|p| p.into_inner());
                hints.get(&g).cloned().unwrap_or_default()
            }
        }
    }

    /// A watch follows a split from group `from`, hosted elsewhere, to group `to`, which the
    /// engine may not place yet (it learns splits of groups hosted elsewhere a little later,
    /// `synod_partition`'s `learned.rs`): `to` began on `from`'s hosts.
    fn hint_hosts(&self, to: u64, from: u64) {
        let hosts = self.hosts_of(from);
        if !hosts.is_empty() {
            let mut hints = self.split_hints.write().unwrap_or_else(|p| p.into_inner());
            hints.insert(to, hosts);
        }
    }

    /// Whether groups live on some members only (watches of others go to remote hubs).
    fn is_placed(&self) -> bool {
        self.placed.load(std::sync::atomic::Ordering::Relaxed) && self.source.get().is_some()
    }

    /// A cursor over the keys `[key, range_end)` from revision `next` (`None`: from the
    /// next revision of their groups — over several groups, the lowest group's: every part
    /// starts at one revision, so none is delivered without another part's events at it), or
    /// why it cannot be made.
    pub fn cursor(
        self: &Arc<Self>,
        key: &[u8],
        range_end: &[u8],
        next: Option<u64>,
    ) -> Result<Cursor, String> {
        let mut hubs = Vec::new();
        for (g, key, range_end) in self.parts_of(key, range_end)? {
            let hub = self
                .hub(g)
                .or_else(|| self.remote_hub(g))
                .ok_or_else(|| format!("synod: group {g} is not on this member; retry"))?;
            hubs.push((hub, key, range_end));
        }
        let lowest = hubs.iter().map(|(h, _, _)| h.head()).min().unwrap_or(0);
        let next = next.unwrap_or(lowest + 1);
        let parts = hubs
            .into_iter()
            .map(|(hub, key, range_end)| cursor::Part {
                hubs: self.clone(),
                hub,
                next,
                key,
                range_end,
            })
            .collect();
        Ok(Cursor::new(self.clone(), parts))
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

/// The etcd span `[key, range_end)` cut at the bounds of `layout`'s ranges: each group's part
/// (the span itself when one range holds it), or `None` when the ranges do not cover it.
fn cut(layout: &[(KeyRange, u64)], key: &[u8], range_end: &[u8]) -> Option<Vec<(u64, Key, Key)>> {
    if let Some((_, g)) = layout.iter().find(|(r, _)| r.holds_span(key, range_end)) {
        return Some(vec![(*g, key.to_vec(), range_end.to_vec())]);
    }
    let mut meeting: Vec<&(KeyRange, u64)> = layout
        .iter()
        .filter(|(r, _)| span_meets(key, range_end, r))
        .collect();
    meeting.sort_by(|a, b| a.0.start.cmp(&b.0.start));
    let span = span_range(key, range_end);
    let covered = meeting.first().is_some_and(|(r, _)| r.start <= span.start)
        && meeting.windows(2).all(|w| w[0].0.end == w[1].0.start)
        && meeting
            .last()
            .is_some_and(|(r, _)| r.end.is_empty() || (!span.end.is_empty() && span.end <= r.end));
    if !covered {
        return None;
    }
    Some(
        meeting
            .into_iter()
            .map(|(r, g)| {
                let start = key.max(r.start.as_slice()).to_vec();
                // The span's end (etcd's form: `[0]` is the end of the keyspace), or the
                // group's if that comes first.
                let to_end = range_end == [0];
                let end = if r.end.is_empty() || (!to_end && range_end <= r.end.as_slice()) {
                    range_end.to_vec()
                } else {
                    r.end.clone()
                };
                (*g, start, end)
            })
            .collect(),
    )
}

/// The ranges of placement entries (`DirectoryStatus::placement`; each to the next entry's
/// start) with their groups; entries that name no owner are left out.
fn placement_ranges(entries: &[synod_core::DirectoryEntry]) -> Vec<(KeyRange, u64)> {
    let mut ranges = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        if e.group == synod_core::DirectoryEntry::NOBODY {
            continue;
        }
        let end = entries
            .get(i + 1)
            .map(|n| n.start.clone())
            .unwrap_or_default();
        ranges.push((KeyRange::new(e.start.clone(), end), e.group));
    }
    ranges
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

pub use cursor::{Cursor, CursorError};

mod cursor;
pub mod remote;

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

    /// Every revision a cursor delivers, with the key of its first event.
    async fn read_keys(c: &mut Cursor) -> Result<Vec<(u64, String)>, CursorError> {
        let all = read_all(c).await?;
        Ok(all
            .into_iter()
            .map(|(r, keys)| (r, keys.into_iter().next().unwrap_or_default()))
            .collect())
    }

    #[tokio::test]
    async fn a_cursor_follows_its_keys_into_the_group_a_split_hands_them_to() {
        let (tx, _rx) = mpsc::channel(4);
        let hubs = Arc::new(WatchHubs::new(&partitioned((0, 0), &[]), tx));
        let mut c = hubs.cursor(b"x", b"", None).unwrap();
        assert_eq!((c.group(), c.next()), (2, 1));
        let both = hubs.cursor(b"b", b"z", None).unwrap();
        assert_eq!(both.groups(), [1, 2], "a watch over two groups reads both");
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

    /// Every revision a cursor delivers, with the keys of its events in order.
    async fn read_all(c: &mut Cursor) -> Result<Vec<(u64, Vec<String>)>, CursorError> {
        let revs = c.read(100).await?;
        if let Some(last) = revs.last() {
            c.advance(last.revision + 1);
        }
        Ok(revs
            .iter()
            .map(|r| {
                let keys = r.events.iter();
                let keys = keys.map(|e| String::from_utf8_lossy(&e.kv.key).into_owned());
                (r.revision, keys.collect())
            })
            .collect())
    }

    /// A watch over groups 1 and 2 while group 1 runs ahead and group 2 writes, then only
    /// closes revisions (empty ones): what it delivered, checked — every event once, in
    /// revision order, none delivered at a revision below one delivered before.
    async fn merged_deliveries(bug: Option<synod_core::PlantedBug>) -> Result<(), String> {
        let (tx, _rx) = mpsc::channel(4);
        let hubs = WatchHubs::new(&partitioned((0, 0), &[]), tx).planted(bug);
        let hubs = Arc::new(hubs);
        let mut c = hubs.cursor(b"a", &[0], None).unwrap();
        let closed = |r: u64| {
            Arc::new(RevisionEvents {
                revision: r,
                events: Vec::new(),
            })
        };
        let mut got = Vec::new();
        let steps: Vec<(Vec<GroupEvents>, (u64, u64))> = vec![
            (
                vec![batch(1, &[(1, "b"), (2, "c"), (3, "d")], vec![])],
                (3, 0),
            ),
            (vec![batch(2, &[(1, "n")], vec![])], (3, 1)),
            (vec![batch(2, &[(2, "o")], vec![])], (3, 2)),
            (
                vec![GroupEvents {
                    group: 2,
                    events: vec![closed(3), closed(4)],
                    moves: Vec::new(),
                }],
                (3, 4),
            ),
        ];
        for (batches, revisions) in steps {
            hubs.publish(batches, &partitioned(revisions, &[]));
            while c.ready() {
                got.extend(read_all(&mut c).await.map_err(|e| format!("{e:?}"))?);
            }
        }
        let mut last = 0;
        let mut events = Vec::new();
        for (r, keys) in got {
            if r < last || (r == last && !keys.is_empty()) {
                return Err(format!("revision {r} delivered after {last}"));
            }
            last = r;
            events.extend(keys.into_iter().map(|k| (r, k)));
        }
        let want: Vec<(u64, String)> = [(1, "b"), (1, "n"), (2, "c"), (2, "o"), (3, "d")]
            .iter()
            .map(|(r, k)| (*r, k.to_string()))
            .collect();
        if events != want {
            return Err(format!("delivered {events:?}, want {want:?}"));
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_watch_over_groups_delivers_a_revision_once_every_group_closed_it() {
        merged_deliveries(None).await.unwrap();
        let planted = merged_deliveries(Some(synod_core::PlantedBug::PartitionWatchMergedAhead));
        let e = planted.await.unwrap_err();
        assert!(e.contains("delivered"), "the planted bug is caught: {e}");
    }

    #[tokio::test]
    async fn a_split_forks_a_cursor_over_both_halves_and_a_merge_away_stops_one() {
        let (tx, _rx) = mpsc::channel(4);
        let hubs = Arc::new(WatchHubs::new(&partitioned((0, 0), &[]), tx));
        let mut across = hubs.cursor(b"m", &[0], Some(1)).unwrap();
        let mut frozen = hubs.cursor(b"q", b"", Some(1)).unwrap();
        let split = WatchMove {
            through: 1,
            range: KeyRange::new("t", ""),
            kind: MoveKind::Group(9),
        };
        hubs.publish(
            vec![batch(2, &[(1, "q"), (2, "q")], vec![split])],
            &partitioned((0, 2), &[(9, "t", "", 1)]),
        );
        assert_eq!(
            read_all(&mut across).await.unwrap(),
            [(1, vec!["q".into()])]
        );
        assert_eq!(
            read_all(&mut frozen).await.unwrap(),
            [(1, vec!["q".into()]), (2, vec!["q".into()])]
        );
        // Forked at t; group 9 has not closed revision 2, so group 2's 2 waits for it.
        assert_eq!(read_all(&mut across).await.unwrap(), []);
        assert_eq!((across.groups(), across.head()), (vec![2, 9], 1));
        hubs.publish(
            vec![batch(9, &[(2, "u")], Vec::new())],
            &partitioned((0, 2), &[(9, "t", "", 2)]),
        );
        assert_eq!(
            read_all(&mut across).await.unwrap(),
            [(2, vec!["q".into(), "u".into()])],
            "one revision, both groups' events at it"
        );
        let freeze = WatchMove {
            through: 2,
            range: KeyRange::new("m", "t"),
            kind: MoveKind::Gone,
        };
        hubs.publish(
            vec![batch(2, &[], vec![freeze])],
            &partitioned((0, 2), &[(9, "t", "", 2)]),
        );
        // Gone at a revision this member did not see: nothing more is read here (its stream
        // may lack the keys' events already); the watch starts again from its next revision.
        let e = read_all(&mut frozen).await.unwrap_err();
        assert!(
            matches!(&e, CursorError::Moved(m) if m.contains("from revision 3")),
            "{e:?}"
        );
        let mut late = hubs.cursor(b"q", b"", Some(2)).unwrap();
        let e = read_all(&mut late).await.unwrap_err();
        assert!(
            matches!(&e, CursorError::Moved(m) if m.contains("from revision 2")),
            "not read through the move's revision: {e:?}"
        );
    }

    #[tokio::test]
    async fn a_group_that_absorbed_another_skips_the_revisions_it_jumped_over() {
        let (tx, _rx) = mpsc::channel(4);
        let hubs = Arc::new(WatchHubs::new(&partitioned((1, 0), &[]), tx));
        let mut c = hubs.cursor(b"b", b"", None).unwrap();
        assert_eq!(c.next(), 2);
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
            assert!(c.reads_up_to(7), "a read of the history, not a stop");
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
        assert_eq!((now.group(), now.next(), since.next()), (1, 6, 6));
        let mut after = merged.clone();
        after.groups[0].revision = 6;
        hubs.publish(vec![batch(1, &[(6, "q")], Vec::new())], &after);
        assert_eq!(read_keys(&mut now).await.unwrap(), [(6, "q".into())]);
        assert_eq!(read_keys(&mut since).await.unwrap(), [(6, "q".into())]);
    }
}
