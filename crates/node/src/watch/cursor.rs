//! A watcher's place in a member's revision streams ([`Cursor`]), shared by every watch API.
//!
//! **One group.** A watch of keys that one group holds reads that group's stream: the
//! events of its revisions in order, following the keys when a split hands them to another
//! group or a merge to the group below (the moves a hub publishes; see the parent module).
//!
//! **Several groups.** Revisions are per group, and a watch over keys of several groups reads
//! one *part* per group (the watched span cut at the groups' bounds). Merged, its stream is by
//! revision number: revision R holds every part's events at R. A part's group may still write
//! at R while another part is past it, so the cursor delivers R only once every part's group
//! has *closed* R — applied it or a later one (writes close revisions; a quiet group's leader
//! closes them with `Op::CloseRevisions`, `synod_partition::close`). Every event then comes in
//! revision order, each revision whole, and a client resuming from R+1 misses nothing. A
//! split that cuts a part in two forks it: the part keeps the keys below the split, a new part
//! reads the rest in the new group.
//!
//! **A group that moves away** (placement: `range move`, or a move off this member) leaves
//! its keys in the group, whose stream goes on at its new hosts: a part reading it switches
//! to a remote hub of the same group (`remote.rs`), started if none runs, and reads on from
//! its next revision — the watch is not cancelled.

use super::*;
use synod_core::kv::WatchEvent;
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
    /// A split cut the keys in two at `at`: keep those below, a new part reads the rest in
    /// group `to`.
    Fork {
        to: u64,
        at: Key,
    },
    /// The group left this member: read on in its remote hub (`MoveKind::Away`).
    Remote(u64),
    Stop(CursorError),
}

/// Why a part could not settle.
enum Unsettled {
    Stop(CursorError),
    /// It needs the remote hub of this group, which does not run yet.
    Remote(u64),
}

impl From<CursorError> for Unsettled {
    fn from(e: CursorError) -> Self {
        Unsettled::Stop(e)
    }
}

/// One group's part of a watch: its place in that group's stream, following its keys when a
/// split hands them to another group or a merge to the group below.
#[derive(Debug)]
pub(super) struct Part {
    pub(super) hubs: Arc<WatchHubs>,
    pub(super) hub: Arc<WatchHub>,
    /// The next revision to read, in the current group's numbering (a split's new group
    /// goes on from its parent's revision, so it keeps its meaning across a move).
    pub(super) next: u64,
    pub(super) key: Key,
    pub(super) range_end: Key,
}

impl Part {
    /// The revision through which a caught-up part has seen every event: its group's head,
    /// but never past a move of its keys it has not acted on (its next group's revisions
    /// after that belong to the next group).
    fn head(&self) -> u64 {
        let head = self.hub.head();
        match self.resolved(head) {
            Due::Read { cap } => cap.min(head),
            _ => self.next.saturating_sub(1).min(head),
        }
    }

    /// Whether a move of its keys waits to be acted on.
    fn moves_due(&self) -> bool {
        !matches!(self.resolved(self.hub.head()), Due::Read { .. } | Due::Wait)
    }

    /// Whether `key` is one of this part's.
    fn covers(&self, key: &[u8]) -> bool {
        span_range(&self.key, &self.range_end).contains(key)
    }

    /// [`Part::due`], with a freeze resolved to the group that absorbed the frozen one —
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
            if m.kind == MoveKind::Gone {
                return self.gone(m.through);
            }
            if m.kind == MoveKind::Away && !self.hubs.bug_away_stops {
                // At once, also for revisions up to the move: they may have left this hub's
                // ring, and the engine no longer has the group's history to read them from.
                // The group's hosts serve them under the same numbers.
                return Due::Remote(self.hub.group());
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
                // The split's upper half holds the keys from its start on: fork there.
                MoveKind::Group(to)
                    if m.range.start > span.start
                        && range_holds(
                            &m.range,
                            &KeyRange::new(m.range.start.clone(), span.end),
                        ) =>
                {
                    Due::Fork {
                        to,
                        at: m.range.start.clone(),
                    }
                }
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

    /// Its keys left at some revision up to `through` that this member did not see (a
    /// snapshot showed it): its stream may already lack their events before `through`, so
    /// nothing more is read here — the watch starts again from its next revision, which the
    /// group that holds the keys now serves.
    fn gone(&self, through: u64) -> Due {
        Due::Stop(CursorError::Moved(format!(
            "synod: the watched keys moved to another group by revision {through} (this member \
             learned of it from a snapshot or the group below); watch again from revision {}",
            self.next
        )))
    }

    /// Acts on every move of its keys it has read up to: skips, follows, forks (the new part
    /// goes to `forks`), until it has revisions to read or must wait.
    fn settle(&mut self, forks: &mut Vec<Part>) -> Result<(), Unsettled> {
        loop {
            match self.resolved(self.hub.head()) {
                Due::Remote(g) => match self.hubs.remote_hub(g) {
                    // Its own hub told it the group went away: reading on there would loop.
                    // (Remote hubs take no `Away` from their hosts, `moves_within`: a guard.)
                    Some(hub) if Arc::ptr_eq(&hub, &self.hub) => {
                        return Err(Unsettled::Stop(CursorError::Moved(format!(
                            "synod: group {g} moved away and its stream here says so again; \
                             watch again from revision {}",
                            self.next
                        ))));
                    }
                    Some(hub) => self.hub = hub,
                    None => return Err(Unsettled::Remote(g)),
                },
                Due::Read { .. } | Due::Wait => return Ok(()),
                Due::Skip(next) => self.next = next,
                Due::Follow { to, next } => {
                    self.hub = self.hub_of(to)?;
                    self.next = self.next.max(next);
                }
                Due::Fork { to, at } => {
                    let hub = self.hub_of(to)?;
                    forks.push(Part {
                        hubs: self.hubs.clone(),
                        hub,
                        next: self.next,
                        key: at.clone(),
                        range_end: std::mem::replace(&mut self.range_end, at),
                    });
                }
                Due::Stop(e) => return Err(e.into()),
                Due::Frozen => unreachable!("resolved"),
            }
        }
    }

    /// The hub of group `to`, which a split gave the keys: here, else its remote hub, else
    /// (placement) one to start on the hosts of the group split (`Unsettled::Remote`).
    fn hub_of(&self, to: u64) -> Result<Arc<WatchHub>, Unsettled> {
        if let Some(hub) = self.hubs.hub(to).or_else(|| self.hubs.remote_hub(to)) {
            return Ok(hub);
        }
        if self.hubs.is_placed() {
            self.hubs.hint_hosts(to, self.hub.group());
            return Err(Unsettled::Remote(to));
        }
        Err(Unsettled::Stop(CursorError::Moved(format!(
            "synod: the watched keys moved to group {to}, which is not on this member; \
             watch again from revision {}",
            self.next
        ))))
    }

    /// The next revisions of its group (at most `max`; none if caught up or waiting), once
    /// settled. Contiguous from `next`.
    async fn fetch(&self, max: usize) -> Result<Vec<Arc<RevisionEvents>>, CursorError> {
        let Due::Read { cap } = self.resolved(self.hub.head()) else {
            return Ok(Vec::new());
        };
        let ring = !(self.hub.has_moves.load(Ordering::Acquire)
            && self
                .hub
                .ring()
                .lacks_absorbed(self.next, &self.key, &self.range_end));
        let mut revs = self.hub.read_from(self.next, max, ring).await?;
        revs.retain(|r| r.revision <= cap);
        Ok(revs)
    }
}

/// A watcher's place in the revision streams: one part per group its keys lie in (see the
/// module doc). Shared by every watch API.
#[derive(Debug)]
pub struct Cursor {
    hubs: Arc<WatchHubs>,
    parts: Vec<Part>,
    /// The highest revision a progress notification claimed ([`Cursor::claim`]): a part that
    /// switched to a remote hub at a host behind this member (a group that moved away) has a
    /// lower head for a while, and a client must never see its progress go back.
    claimed: AtomicU64,
}

impl Cursor {
    pub(super) fn new(hubs: Arc<WatchHubs>, parts: Vec<Part>) -> Self {
        assert!(!parts.is_empty(), "a cursor reads at least one group");
        Cursor {
            hubs,
            parts,
            claimed: AtomicU64::new(0),
        }
    }

    /// The revision a progress notification may claim now: its head, once caught up to it
    /// (every event through it delivered) — `None` while it is not, or while the head is below
    /// a revision claimed before (until the host it reads from passes it). The caller notes
    /// what it sent with [`Cursor::claim`].
    pub fn progress(&self) -> Option<u64> {
        let head = self.head();
        let claimed = self.claimed.load(Ordering::Relaxed);
        // PLANTED BUG (`WatchProgressGoesBack`): any head, however low.
        let back = self.hubs.bug_progress_goes_back;
        (self.next() > head && (head >= claimed || back)).then_some(head)
    }

    /// A progress notification claimed `revision` to this cursor's client.
    pub fn claim(&self, revision: u64) {
        self.claimed.fetch_max(revision, Ordering::Relaxed);
    }

    /// The next revision it delivers: every revision below it has been read (or skipped).
    pub fn next(&self) -> u64 {
        self.parts.iter().map(|p| p.next).min().unwrap_or(1)
    }

    /// The caller used every revision below `next`: no part reads them again.
    pub fn advance(&mut self, next: u64) {
        for p in &mut self.parts {
            p.next = p.next.max(next);
        }
    }

    /// Reads again from revision `next` on.
    pub fn rewind(&mut self, next: u64) {
        for p in &mut self.parts {
            p.next = next;
        }
    }

    /// The group of its one part (tests).
    #[cfg(test)]
    pub(super) fn group(&self) -> u64 {
        assert_eq!(self.parts.len(), 1, "one part");
        self.parts[0].hub.group()
    }

    /// Whether its one part reads its group's revisions up to `cap` (tests).
    #[cfg(test)]
    pub(super) fn reads_up_to(&self, cap: u64) -> bool {
        let p = &self.parts[0];
        matches!(p.resolved(p.hub.head()), Due::Read { cap: c } if c == cap)
    }

    /// The groups it reads, in key order of their parts.
    pub fn groups(&self) -> Vec<u64> {
        self.parts.iter().map(|p| p.hub.group()).collect()
    }

    /// The revision through which a caught-up cursor has seen every event: the lowest of its
    /// parts' (a revision is delivered once every part's group closed it).
    pub fn head(&self) -> u64 {
        self.parts.iter().map(Part::head).min().unwrap_or(0)
    }

    /// Whether a read would do something now: revisions to deliver, or a move to act on.
    pub fn ready(&self) -> bool {
        self.parts.iter().any(Part::moves_due) || self.next() <= self.head()
    }

    /// The next revisions (at most about `max`; none if caught up), after acting on any move
    /// of its keys it has read up to. The caller advances past what it used
    /// ([`Cursor::advance`]). With several parts, each revision holds every part's events
    /// at it (only the part's own keys: after a merge a group's history holds the other's
    /// too), and a last revision with no event may mark how far it got.
    pub async fn read(&mut self, max: usize) -> Result<Vec<Arc<RevisionEvents>>, CursorError> {
        self.settle_with_remote().await?;
        if self.parts.len() == 1 {
            return self.parts[0].fetch(max).await;
        }
        let heads: Vec<u64> = self.parts.iter().map(Part::head).collect();
        let target = heads.iter().copied().min().unwrap_or(0);
        if target < self.next() {
            return Ok(Vec::new());
        }
        let mut pages = Vec::with_capacity(self.parts.len());
        // How far every part has been read: a part's page may end before the target.
        let mut upto = target;
        for p in &self.parts {
            if p.next > target {
                pages.push(Vec::new());
                continue;
            }
            let page = p.fetch(max).await?;
            upto = upto.min(page.last().map_or(p.next - 1, |r| r.revision));
            pages.push(page);
        }
        if self.hubs.bug_merged_ahead {
            // PLANTED BUG (`PartitionWatchMergedAhead`): as far as the furthest part.
            upto = heads.iter().copied().max().unwrap_or(0);
        }
        if upto < self.next() {
            // A part met a move published since it settled: nothing to deliver yet.
            return Ok(Vec::new());
        }
        Ok(self.merge(pages, upto))
    }

    /// [`Cursor::settle`], starting the remote hubs of groups that moved away from this member
    /// as parts need them; a group whose new hosts cannot be reached stops the watch, to be
    /// made again.
    async fn settle_with_remote(&mut self) -> Result<(), CursorError> {
        let mut started = Vec::new();
        loop {
            match self.settle() {
                Ok(()) => return Ok(()),
                Err(Unsettled::Stop(e)) => return Err(e),
                Err(Unsettled::Remote(g)) if !started.contains(&g) => {
                    self.hubs.start_remote(g).await.map_err(|why| {
                        CursorError::Moved(format!(
                            "synod: the watched keys' group {g} moved to other members, and {why}; \
                             watch again from revision {}",
                            self.next()
                        ))
                    })?;
                    started.push(g);
                }
                Err(Unsettled::Remote(g)) => {
                    return Err(CursorError::Moved(format!(
                        "synod: the watched keys' group {g} moved to other members, whose stream \
                         could not be read here; watch again from revision {}",
                        self.next()
                    )));
                }
            }
        }
    }

    /// Every part acts on its due moves; forked parts join (and settle in turn).
    fn settle(&mut self) -> Result<(), Unsettled> {
        let mut i = 0;
        while i < self.parts.len() {
            let mut forks = Vec::new();
            let settled = self.parts[i].settle(&mut forks);
            // Forks made before a part stopped to start a remote hub are kept.
            self.parts.extend(forks);
            settled?;
            i += 1;
        }
        self.parts.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(())
    }

    /// The parts' pages through revision `upto`, each revision's events of every part
    /// together (each part's own keys only), and `upto` itself if it holds none.
    fn merge(&self, pages: Vec<Vec<Arc<RevisionEvents>>>, upto: u64) -> Vec<Arc<RevisionEvents>> {
        let mut by_revision: BTreeMap<u64, Vec<WatchEvent>> = BTreeMap::new();
        for (p, page) in self.parts.iter().zip(pages) {
            for r in page.iter().take_while(|r| r.revision <= upto) {
                let mine = r.events.iter().filter(|e| p.covers(&e.kv.key)).cloned();
                let mut mine = mine.peekable();
                if mine.peek().is_some() {
                    by_revision.entry(r.revision).or_default().extend(mine);
                }
            }
        }
        let mut out: Vec<Arc<RevisionEvents>> = by_revision
            .into_iter()
            .map(|(revision, events)| Arc::new(RevisionEvents { revision, events }))
            .collect();
        if out.last().is_none_or(|r| r.revision < upto) {
            out.push(Arc::new(RevisionEvents {
                revision: upto,
                events: Vec::new(),
            }));
        }
        out
    }
}
