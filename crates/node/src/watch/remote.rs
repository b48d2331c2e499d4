//! Watches of groups hosted on other members only (placement, `[partition] replicas`).
//!
//! A member serves watches from its hubs, which its engine thread feeds with the revisions its
//! replicas applied. A group it does not host has no replica here, so its hub is fed from a
//! host's instead: a *remote hub*, made when a watch first needs the group, fed by a task that
//! long-polls a host over the peer port ([`EventsQuery`], answered from the host's hub by
//! [`answer`]) and gone a while after its last watcher. To cursors it is a hub like any other
//! — ring, head, compaction, history reads (those go to a host too) — so watches over local
//! and remote groups merge by revision as before (the remote head is the host's applied
//! revision of the group, closes included).
//!
//! **Only applied revisions, in order.** A host answers revisions its replica applied, from
//! where the remote hub's head is: each page starts at head + 1 and says through which
//! revision it is complete, so the head only ever moves over revisions the hub holds. A host
//! that fails, or answers a poll with nothing new (its group is quiet, or it is behind), is
//! left for the group's next host, asked from the same revision: nothing is skipped or
//! repeated. A host whose CORRUPT alarm is raised answers no poll.
//!
//! **Cost.** One long poll per remote group with watchers per member, each page a question on a
//! peer-port connection the asker keeps for the next one (see `transport::ask`). Suited to the
//! coordination uses of watches — locks, elections, configuration — across members; a client
//! that watches a busy group's every write is better served at one of its hosts.
//!
//! Auth is checked where the client asked (the auth state is on every member); the peer port
//! carries no user, as for the corruption check.

use super::{HistoryQuery, WatchHub, WatchHubs};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;
use synod_core::kv::RevisionEvents;
use synod_core::{EngineError, NodeId, WatchMove};
use tokio::sync::mpsc;

/// Revisions in one page (bounded in bytes too: [`PAGE_BYTES_MAX`]).
pub const PAGE_REVISIONS_MAX: u32 = 256;
/// A page stops growing past this many bytes of events (one revision may exceed it alone).
pub const PAGE_BYTES_MAX: usize = 1 << 20;
/// How long a host holds a poll with nothing new before answering empty.
pub const POLL_WAIT_MS: u32 = 2_000;
/// A remote hub without watchers for this long is dropped and its poll stopped.
const IDLE: Duration = Duration::from_secs(30);
/// Pause after a failed poll before asking the next host.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A member's question for a group's applied revisions from `start` on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsQuery {
    pub group: u64,
    pub start: u64,
    /// Most revisions to answer (0: none, only the head).
    pub max: u32,
    /// How long to wait for a revision at or after `start` before answering without one.
    pub wait_ms: u32,
}

/// A host's answer: the group's revisions from `start` (each whole, in order), complete through
/// revision `through` (every revision of the group up to it with an event is in `revisions`
/// or before `start`), and the group's compaction revision; with the changes of the keys
/// the group covers from `start - 1` through `through` (a split: watchers follow the keys to
/// the new group, on its hosts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsPage {
    pub revisions: Vec<RevisionEvents>,
    pub through: u64,
    pub compacted: u64,
    pub moves: Vec<WatchMove>,
}

/// Where remote hubs get their pages: member `host`'s answer to a query (the node asks over
/// the peer port).
pub trait EventsSource: std::fmt::Debug + Send + Sync + 'static {
    fn fetch(
        &self,
        host: NodeId,
        query: EventsQuery,
    ) -> Pin<Box<dyn Future<Output = Result<EventsPage, String>> + Send>>;
}

/// Answers `query` from this member's hub of the group (a host's side), waiting up to the
/// query's `wait_ms` (at most [`POLL_WAIT_MS`]) for a revision at or after `start`.
pub async fn answer(hubs: &WatchHubs, query: EventsQuery) -> Result<EventsPage, EngineError> {
    let Some(hub) = hubs.hub(query.group) else {
        return Err(EngineError::InvalidRequest(format!(
            "group {} is not on this member",
            query.group
        )));
    };
    let wait = Duration::from_millis(u64::from(query.wait_ms.min(POLL_WAIT_MS)));
    let mut heads = hub.subscribe();
    let _ = tokio::time::timeout(wait, heads.wait_for(|h| *h >= query.start)).await;
    let head = hub.head();
    let compacted = hub.compacted.load(std::sync::atomic::Ordering::Relaxed);
    let max = query.max.min(PAGE_REVISIONS_MAX) as usize;
    if max == 0 || query.start > head || query.start < compacted {
        return Ok(EventsPage {
            revisions: Vec::new(),
            through: head,
            // A head query (`max` 0: a remote hub starting) gets every split the hub still
            // holds: a watch made there later must know of those before its first revision.
            moves: match (hubs.bug_pages_drop_splits, max) {
                (true, _) => Vec::new(),
                (false, 0) => hub.moves_within(0, head),
                (false, _) => hub.moves_within(query.start, head),
            },
            compacted,
        });
    }
    let read = hub.read(query.start, max).await?;
    let full = read.len() >= max;
    let mut revisions = Vec::with_capacity(read.len());
    let mut bytes = 0;
    for r in read {
        if !revisions.is_empty() && bytes >= PAGE_BYTES_MAX {
            break;
        }
        bytes += r.size_bytes();
        revisions.push(RevisionEvents::clone(&r));
    }
    let last = revisions.last().map_or(0, |r| r.revision);
    let cut = full || revisions.len() < max && bytes >= PAGE_BYTES_MAX;
    // Cut short: complete through its last revision only. Else through the head (the read
    // answered every revision up to its own head, at least this one).
    let through = if cut { last } else { head.max(last) };
    let moves = match hubs.bug_pages_drop_splits {
        false => hub.moves_within(query.start, through),
        true => Vec::new(),
    };
    Ok(EventsPage {
        revisions,
        through,
        moves,
        compacted,
    })
}

impl WatchHubs {
    /// Sets where remote hubs read groups hosted elsewhere (the node, once its peer asker
    /// exists). Without it, a watch of such a group is refused by name.
    pub fn set_remote(&self, source: Arc<dyn EventsSource>) {
        let _ = self.source.set(source);
    }

    /// Makes sure every group of `[key, range_end)` this member does not host has a remote
    /// hub with a known head (its first page asked), so that [`WatchHubs::cursor`] finds them.
    pub async fn prepare(self: &Arc<Self>, key: &[u8], range_end: &[u8]) -> Result<(), String> {
        let Some(parts) = self.remote_parts(key, range_end) else {
            return Ok(());
        };
        for g in parts {
            if self.hub(g).is_none() && self.remote_hub(g).is_none() {
                self.start_remote(g).await?;
            }
        }
        Ok(())
    }

    /// The remote hub of group `g`, if one runs.
    pub(super) fn remote_hub(&self, g: u64) -> Option<Arc<WatchHub>> {
        let remote = self.remote.read().unwrap_or_else(|p| p.into_inner());
        remote.get(&g).cloned()
    }

    /// Asks a host of `g` for its head and starts the remote hub and its poll there.
    pub(super) async fn start_remote(self: &Arc<Self>, g: u64) -> Result<(), String> {
        let source = self.source.get().cloned().ok_or("no peer transport")?;
        let hosts = self.hosts_of(g);
        let mut why = format!("group {g} has no hosts in the placement");
        for host in &hosts {
            let query = EventsQuery {
                group: g,
                start: u64::MAX,
                max: 0,
                wait_ms: 0,
            };
            match source.fetch(*host, query).await {
                Ok(page) => {
                    let (tx, rx) = mpsc::channel(16);
                    let hub = Arc::new(WatchHub::of_group(g, page.through, tx, self.any.clone()));
                    hub.set_compacted(page.compacted);
                    // The group's splits so far, before any reader can see the hub.
                    let moves = page.moves.into_iter().filter(|m| m.through <= page.through);
                    hub.publish_with_moves(Vec::new(), moves.collect(), page.through);
                    let mut remote = self.remote.write().unwrap_or_else(|p| p.into_inner());
                    if remote.contains_key(&g) {
                        return Ok(()); // another watch started it meanwhile
                    }
                    remote.insert(g, hub.clone());
                    let feed = Feed {
                        bug_ignore_compaction: self.bug_history_compaction,
                        hubs: Arc::downgrade(self),
                        hub,
                        source,
                        hosts,
                        at: 0,
                    };
                    tokio::spawn(feed.run(rx));
                    return Ok(());
                }
                Err(e) => why = format!("member {host}: {e}"),
            }
        }
        Err(format!(
            "synod: group {g} lives on other members only and none answered ({why}); retry"
        ))
    }
}

/// The poll feeding one remote hub.
struct Feed {
    hubs: Weak<WatchHubs>,
    hub: Arc<WatchHub>,
    source: Arc<dyn EventsSource>,
    hosts: Vec<NodeId>,
    /// Index in `hosts` of the host asked now.
    at: usize,
    /// Planted bug `RemoteWatchHistoryIgnoresCompaction`.
    bug_ignore_compaction: bool,
}

impl Feed {
    async fn run(mut self, mut history: mpsc::Receiver<HistoryQuery>) {
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            let query = EventsQuery {
                group: self.hub.group,
                start: self.hub.head() + 1,
                max: PAGE_REVISIONS_MAX,
                wait_ms: POLL_WAIT_MS,
            };
            debug_assert!(!self.hosts.is_empty(), "a feed starts only with a host");
            let host = self.hosts[self.at % self.hosts.len().max(1)];
            let poll = self.source.fetch(host, query.clone());
            tokio::pin!(poll);
            let page = loop {
                tokio::select! {
                    page = &mut poll => break page,
                    Some(q) = history.recv() => self.answer_history(q),
                }
            };
            match page {
                Ok(page) => {
                    // Nothing new: the group is quiet, or this host is behind (cut off from
                    // its group). The next poll goes to the next host, so a host that fell
                    // behind holds the watchers up for one poll's wait at most.
                    if page.through < query.start {
                        self.at += 1;
                    }
                    self.publish(query.start, page);
                }
                Err(e) => {
                    tracing::debug!(group = self.hub.group, host, error = %e, "remote watch poll");
                    self.at += 1;
                    // The group may have moved (`range move`): ask where it lives now.
                    if let Some(hubs) = self.hubs.upgrade() {
                        let now = hubs.hosts_of(self.hub.group);
                        if !now.is_empty() && now != self.hosts {
                            self.hosts = now;
                            self.at = 0;
                        }
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            // The map and this task hold the hub; any more is a watcher's cursor.
            if Arc::strong_count(&self.hub) > 2 {
                idle_since = None;
            } else if idle_since
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed()
                >= IDLE
            {
                break;
            }
        }
        if let Some(hubs) = self.hubs.upgrade() {
            let mut remote = hubs.remote.write().unwrap_or_else(|p| p.into_inner());
            remote.remove(&self.hub.group);
        }
    }

    /// Takes a page asked from `start`: its revisions into the ring, then the head.
    fn publish(&self, start: u64, page: EventsPage) {
        self.hub.set_compacted(page.compacted);
        let moves: Vec<WatchMove> = (page.moves.into_iter())
            .filter(|m| m.through <= page.through && !self.hub.has_move(m))
            .collect();
        if start < page.compacted {
            // What the hub would read next is compacted on the host: watchers behind it are
            // cancelled by their own reads (`Compacted`); the hub goes on from the host's head,
            // with the splits it passed.
            let head = page.through.max(self.hub.head());
            self.hub.publish_with_moves(Vec::new(), moves, head);
            return;
        }
        let fresh: Vec<Arc<RevisionEvents>> = page
            .revisions
            .into_iter()
            .filter(|r| r.revision >= start && r.revision <= page.through)
            .map(Arc::new)
            .collect();
        debug_assert!(fresh.windows(2).all(|w| w[0].revision < w[1].revision));
        let head = page.through.max(self.hub.head());
        // Before the head passes them, as a local hub's are (`publish_with_moves`). A move
        // asked again (its `through` is the last page's end) is noted once.
        self.hub.publish_with_moves(fresh, moves, head);
    }

    /// A watcher behind the ring reads older revisions from a host, on a task of its own (the
    /// poll goes on meanwhile).
    fn answer_history(&self, q: HistoryQuery) {
        let source = self.source.clone();
        let hosts = self.hosts.clone();
        let first = self.at;
        let bug = self.bug_ignore_compaction;
        tokio::spawn(async move {
            let query = EventsQuery {
                group: q.group,
                start: q.start,
                max: (q.max_revisions as u32).min(PAGE_REVISIONS_MAX),
                wait_ms: 0,
            };
            let mut last = String::new();
            for k in 0..hosts.len() {
                let host = hosts[(first + k) % hosts.len()];
                match source.fetch(host, query.clone()).await {
                    // PLANTED BUG (`RemoteWatchHistoryIgnoresCompaction`): not this arm.
                    Ok(page) if q.start < page.compacted && !bug => {
                        let compact_revision = page.compacted;
                        let _ = q
                            .reply
                            .send(Err(EngineError::Compacted { compact_revision }));
                        return;
                    }
                    Ok(page) => {
                        let revs = page.revisions.into_iter().map(Arc::new).collect();
                        let _ = q.reply.send(Ok(revs));
                        return;
                    }
                    Err(e) => last = e,
                }
            }
            tracing::debug!(group = q.group, error = %last, "remote watch: no history read");
            let _ = q.reply.send(Err(EngineError::Timeout));
        });
    }
}

/// Remote watch hubs' pages (`watch::remote`), asked of a group's host over the peer port.
pub(crate) struct PeerEvents(pub(crate) crate::NodeHandle);

impl std::fmt::Debug for PeerEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerEvents")
    }
}

impl EventsSource for PeerEvents {
    fn fetch(
        &self,
        host: NodeId,
        query: EventsQuery,
    ) -> Pin<Box<dyn Future<Output = Result<EventsPage, String>> + Send>> {
        let handle = self.0.clone();
        Box::pin(async move {
            let status = handle.status();
            let members = &status.engine.configuration.members;
            let addr = members
                .iter()
                .find(|m| m.id == host)
                .map(|m| m.peer_addr.clone())
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("member {host} has no peer address"))?;
            match handle
                .ask_peer(host, &addr, crate::transport::PeerQuestion::Events(query))
                .await?
            {
                crate::transport::PeerAnswer::Events(page) => Ok(page),
                other => Err(format!("member {host} answered {other:?}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;
    use synod_core::kv::{EventKind, KeyValue, WatchEvent};
    use synod_core::{DirectoryEntry, DirectoryStatus, EngineStatus, GroupEvents, GroupStatus};

    /// Group 1 (`[d, e)`)'s hosts, members 2 and 3, each with its own hubs; a host marked
    /// down answers nothing.
    #[derive(Debug)]
    struct Hosts {
        hubs: BTreeMap<NodeId, Arc<WatchHubs>>,
        down: Mutex<BTreeSet<NodeId>>,
    }

    #[derive(Debug)]
    struct Source(Arc<Hosts>);

    impl EventsSource for Source {
        fn fetch(
            &self,
            host: NodeId,
            query: EventsQuery,
        ) -> Pin<Box<dyn Future<Output = Result<EventsPage, String>> + Send>> {
            let hosts = self.0.clone();
            Box::pin(async move {
                if hosts.down.lock().expect("lock").contains(&host) {
                    return Err(format!("member {host} is down"));
                }
                let hubs = hosts.hubs.get(&host).ok_or("no such host")?;
                let page = answer(hubs, query).await.map_err(|e| e.to_string());
                // A poll in flight when its host went down is lost with it.
                match hosts.down.lock().expect("lock").contains(&host) {
                    true => Err(format!("member {host} went down")),
                    false => page,
                }
            })
        }
    }

    fn group(g: u64, start: &str, end: &str, revision: u64) -> GroupStatus {
        GroupStatus {
            group: g,
            start: start.into(),
            end: end.into(),
            revision,
            ..Default::default()
        }
    }

    fn rev(r: u64) -> Arc<RevisionEvents> {
        Arc::new(RevisionEvents {
            revision: r,
            events: vec![WatchEvent {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: format!("d/{r}").into_bytes(),
                    mod_revision: r,
                    ..Default::default()
                },
                prev_kv: None,
            }],
        })
    }

    /// A host's status after applying revisions through `revision` of group 1.
    fn host_status(revision: u64) -> EngineStatus {
        EngineStatus {
            groups: vec![group(1, "d", "e", revision)],
            ..Default::default()
        }
    }

    /// Member 1: groups 0 (`[, d)`) and 2 (`[e, )`) here, group 1 on members 2 and 3.
    fn member_status() -> EngineStatus {
        let entry = |start: &str, g: u64, members: &[NodeId]| DirectoryEntry {
            start: start.into(),
            group: g,
            members: members.to_vec(),
            ..Default::default()
        };
        EngineStatus {
            groups: vec![group(0, "", "d", 0), group(2, "e", "", 0)],
            directory: Some(DirectoryStatus {
                placed: true,
                placement: vec![
                    entry("", 0, &[1, 2, 3]),
                    entry("d", 1, &[2, 3]),
                    entry("e", 2, &[1, 3]),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Both hosts apply revisions `revs` of group 1.
    fn apply(hosts: &Hosts, revs: std::ops::RangeInclusive<u64>) {
        let through = *revs.end();
        for hubs in hosts.hubs.values() {
            let batch = GroupEvents {
                group: 1,
                events: revs.clone().map(rev).collect(),
                moves: Vec::new(),
            };
            hubs.publish(vec![batch], &host_status(through));
        }
    }

    /// Reads `cursor` (of `hubs`) until it delivered revision `last` or a second passed without
    /// any, waking on the hubs' change signal.
    async fn read_through(
        hubs: &Arc<WatchHubs>,
        c: &mut super::super::Cursor,
        last: u64,
    ) -> Vec<u64> {
        let mut any = hubs.subscribe();
        let mut got = Vec::new();
        while got.last().is_none_or(|r| *r < last) {
            let read = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    any.borrow_and_update();
                    match c.read(100).await {
                        Ok(revs) if !revs.is_empty() => return Ok(revs),
                        Ok(_) => {
                            let _ = any.changed().await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            });
            match read.await {
                Ok(Ok(revs)) => {
                    c.advance(revs.last().map_or(0, |r| r.revision) + 1);
                    got.extend(revs.iter().map(|r| r.revision));
                }
                _ => break,
            }
        }
        got
    }

    /// Group 1's hosts, having applied nothing yet.
    fn hosts() -> Arc<Hosts> {
        hosts_planted(None)
    }

    /// [`hosts`], with `bug` planted in both.
    fn hosts_planted(bug: Option<synod_core::PlantedBug>) -> Arc<Hosts> {
        let host = || {
            let (tx, _rx) = mpsc::channel(4);
            Arc::new(WatchHubs::new(&host_status(0), tx).planted(bug))
        };
        Arc::new(Hosts {
            hubs: BTreeMap::from([(2, host()), (3, host())]),
            down: Mutex::default(),
        })
    }

    /// A watch at member 1 of keys of group 1, from revision 1: 300 revisions (the last 295 at
    /// once, more than a page) from the first host, then the first host goes down and 10 more
    /// come from the other. What it delivered, checked: every revision once, in order.
    async fn remote_deliveries() -> Result<(), String> {
        let hosts = hosts();
        apply(&hosts, 1..=5);
        let (tx, _rx) = mpsc::channel(4);
        let member = Arc::new(WatchHubs::new(&member_status(), tx));
        member.set_remote(Arc::new(Source(hosts.clone())));
        member.prepare(b"d/", b"d0").await?;
        let mut c = member.cursor(b"d/", b"d0", Some(1))?;
        assert_eq!(c.groups(), [1]);
        // The first 5 from the host's history (older than the remote hub), then more than
        // a page at once from its poll.
        let mut got = read_through(&member, &mut c, 5).await;
        apply(&hosts, 6..=300);
        got.extend(read_through(&member, &mut c, 300).await);
        hosts.down.lock().expect("lock").insert(2);
        apply(&hosts, 301..=310);
        got.extend(read_through(&member, &mut c, 310).await);
        let want: Vec<u64> = (1..=310).collect();
        if got != want {
            return Err(format!("delivered {} revisions: {got:?}", got.len()));
        }
        // A watch from now starts after the remote group's head.
        let now = member.cursor(b"d/", b"d0", None)?;
        assert_eq!(now.next(), 311);
        Ok(())
    }

    #[tokio::test]
    async fn a_remote_hub_pages_through_a_hosts_revisions_and_fails_over() {
        remote_deliveries()
            .await
            .expect("every revision once, in order");
    }

    /// A watcher at member 1 behind the remote group's compaction (which the host made after
    /// the remote hub last heard from it): its history read must fail as compacted, with the
    /// host's compaction revision, as a local one does.
    async fn behind_compaction(bug: Option<synod_core::PlantedBug>) -> Result<(), String> {
        let hosts = hosts();
        apply(&hosts, 1..=5);
        let (tx, _rx) = mpsc::channel(4);
        let member = Arc::new(WatchHubs::new(&member_status(), tx).planted(bug));
        member.set_remote(Arc::new(Source(hosts.clone())));
        member.prepare(b"d/", b"d0").await?;
        for hubs in hosts.hubs.values() {
            let mut compacted = host_status(5);
            compacted.groups[0].compact_revision = 3;
            hubs.publish(Vec::new(), &compacted);
        }
        let mut c = member.cursor(b"d/", b"d0", Some(1))?;
        let read = tokio::time::timeout(Duration::from_secs(1), c.read(100)).await;
        match read {
            Ok(Err(super::super::CursorError::Engine(EngineError::Compacted {
                compact_revision: 3,
            }))) => Ok(()),
            other => Err(format!("a read below the compaction answered {other:?}")),
        }
    }

    #[tokio::test]
    async fn a_remote_read_below_the_hosts_compaction_fails_as_compacted() {
        behind_compaction(None).await.expect("compacted");
    }

    #[tokio::test]
    async fn planted_history_ignoring_compaction_is_caught() {
        let bug = synod_core::PlantedBug::RemoteWatchHistoryIgnoresCompaction;
        let why = behind_compaction(Some(bug))
            .await
            .expect_err("the planted bug reads on");
        assert!(why.contains("below the compaction"), "{why}");
    }

    /// Member 1 hosting group 1 too (on members 1 and 2), through revision `revision`.
    fn hosting_status(revision: u64) -> EngineStatus {
        let mut status = member_status();
        status.groups.insert(1, group(1, "d", "e", revision));
        if let Some(d) = status.directory.as_mut() {
            d.placement[1].members = vec![1, 2];
        }
        status
    }

    /// Group 1's events, with `moves`.
    fn batch(events: Vec<Arc<RevisionEvents>>, moves: Vec<synod_core::WatchMove>) -> GroupEvents {
        GroupEvents {
            group: 1,
            events,
            moves,
        }
    }

    /// Member 1 hosting group 1 (with `bug` planted), having applied revisions 1 to `through`,
    /// its remote hubs fed by `hosts`; prepared for watches of key d.
    async fn hosting_member(
        hosts: &Arc<Hosts>,
        through: u64,
        bug: Option<synod_core::PlantedBug>,
    ) -> Arc<WatchHubs> {
        let (tx, _rx) = mpsc::channel(4);
        let member = Arc::new(WatchHubs::new(&hosting_status(0), tx).planted(bug));
        member.set_remote(Arc::new(Source(hosts.clone())));
        let events = (1..=through).map(rev).collect();
        member.publish(vec![batch(events, Vec::new())], &hosting_status(through));
        member.prepare(b"d/", b"d0").await.expect("hosted here");
        member
    }

    /// A watch at member 1 of keys of group 1, which member 1 hosts: revisions 1 to 5 from its
    /// own replica; then the group moves off member 1 (to members 2 and 3) after revision 5
    /// and its hosts apply 6 to 10. What the watch delivered, and what a watch from revision
    /// 1 made before the move but first read after it delivered (from the hosts' history).
    async fn watch_through_a_move_away(
        bug: Option<synod_core::PlantedBug>,
    ) -> (Vec<u64>, Vec<u64>) {
        let hosts = hosts();
        apply(&hosts, 1..=5);
        let member = hosting_member(&hosts, 5, bug).await;
        assert!(member.remote_hub(1).is_none(), "read here");
        let mut c = member.cursor(b"d/", b"d0", Some(1)).expect("a cursor");
        let mut got = read_through(&member, &mut c, 5).await;
        let mut late = member.cursor(b"d/", b"d0", Some(1)).expect("a cursor");
        let away = synod_core::WatchMove {
            through: 5,
            range: synod_core::kv::KeyRange::new("d", "e"),
            kind: synod_core::MoveKind::Away,
        };
        member.publish(vec![batch(Vec::new(), vec![away])], &member_status());
        apply(&hosts, 6..=10);
        got.extend(read_through(&member, &mut c, 10).await);
        (got, read_through(&member, &mut late, 10).await)
    }

    #[tokio::test]
    async fn a_watch_at_a_member_its_group_moved_away_from_reads_on_at_the_hosts() {
        let all: Vec<u64> = (1..=10).collect();
        assert_eq!(watch_through_a_move_away(None).await, (all.clone(), all));
        let bug = synod_core::PlantedBug::WatchCancelledWhenGroupMovesAway;
        let (planted, _) = watch_through_a_move_away(Some(bug)).await;
        assert_eq!(
            planted,
            [1, 2, 3, 4, 5],
            "the planted bug stops at the move"
        );
    }

    /// A caught-up watch at member 1 of group 1, which member 1 hosts through revision 8,
    /// claims progress 8; the group moves away while the host the remote hub reads has
    /// applied only through 5. The progress each step claims: none may be below 8 (until the
    /// host passes it, none is claimed), and once the host applied 9 and 10 and the watch
    /// delivered them, 10.
    async fn progress_through_a_move_to_a_host_behind(
        bug: Option<synod_core::PlantedBug>,
    ) -> Vec<Option<u64>> {
        let hosts = hosts();
        apply(&hosts, 1..=5);
        let member = hosting_member(&hosts, 8, bug).await;
        let mut c = member.cursor(b"d/", b"d0", Some(1)).expect("a cursor");
        read_through(&member, &mut c, 8).await;
        // What a stream would send, noting each claim as it does.
        let claim = |c: &super::super::Cursor| {
            let p = c.progress();
            p.inspect(|r| c.claim(*r))
        };
        let mut claims = vec![claim(&c)];
        let away = synod_core::WatchMove {
            through: 8,
            range: synod_core::kv::KeyRange::new("d", "e"),
            kind: synod_core::MoveKind::Away,
        };
        member.publish(vec![batch(Vec::new(), vec![away])], &member_status());
        let read = tokio::time::timeout(Duration::from_secs(1), c.read(100)).await;
        assert!(
            matches!(read, Ok(Ok(ref revs)) if revs.is_empty()),
            "{read:?}"
        );
        assert_eq!(c.groups(), [1]);
        claims.push(claim(&c));
        apply(&hosts, 6..=10);
        assert_eq!(read_through(&member, &mut c, 10).await, [9, 10]);
        claims.push(claim(&c));
        claims
    }

    #[tokio::test]
    async fn a_watch_s_progress_never_goes_back_when_its_group_moves_to_a_host_behind() {
        let claims = progress_through_a_move_to_a_host_behind(None).await;
        assert_eq!(claims, [Some(8), None, Some(10)]);
        let bug = synod_core::PlantedBug::WatchProgressGoesBack;
        let planted = progress_through_a_move_to_a_host_behind(Some(bug)).await;
        assert_eq!(
            planted,
            [Some(8), Some(5), Some(10)],
            "the planted bug goes back"
        );
    }

    /// A watch at member 1 of keys of group 1, hosted on members 2 and 3: revisions 1 to 5,
    /// then the hosts split the keys off to a new group 7 (which member 1's placement does not
    /// name yet) and apply 6 to 10 there. The watch follows the split through the remote
    /// hubs — the hosts' pages carry the move — and reads 6 to 10 from group 7's hosts.
    #[tokio::test]
    async fn a_remote_watch_follows_its_keys_split_off_on_their_hosts() {
        let (got, groups) = remote_watch_through_a_split(None).await;
        assert_eq!(got, (1..=10).collect::<Vec<u64>>());
        assert_eq!(groups, [7], "the watch reads group 7 now");
        let bug = synod_core::PlantedBug::RemotePagesDropSplits;
        let (planted, groups) = remote_watch_through_a_split(Some(bug)).await;
        assert_eq!(planted, [1, 2, 3, 4, 5], "the planted bug misses 6 to 10");
        assert_eq!(groups, [1]);
    }

    /// A watch made after the split at a member whose placement does not name group 7 yet:
    /// group 1's remote hub starts knowing the split (the head query brings every split the
    /// host's hub holds), and the watch reads 6 to 10 in group 7.
    #[tokio::test]
    async fn a_remote_watch_made_after_a_split_reads_the_new_group() {
        let hosts = hosts();
        apply(&hosts, 1..=5);
        split_at_hosts(&hosts);
        let member = member_watching_d(&hosts).await;
        let mut c = member.cursor(b"d/", b"d0", Some(6)).expect("a cursor");
        let got = read_through(&member, &mut c, 10).await;
        assert_eq!(got, (6..=10).collect::<Vec<u64>>());
        assert_eq!(c.groups(), [7]);
    }

    /// Member 1 (hosting groups 0 and 2), its remote hubs fed by `hosts`, prepared for watches
    /// of `d/`.
    async fn member_watching_d(hosts: &Arc<Hosts>) -> Arc<WatchHubs> {
        let (tx, _rx) = mpsc::channel(4);
        let member = Arc::new(WatchHubs::new(&member_status(), tx));
        member.set_remote(Arc::new(Source(hosts.clone())));
        member
            .prepare(b"d/", b"d0")
            .await
            .expect("group 1's hosts answer");
        member
    }

    /// Group 1's hosts split `[d/, e)` off to group 7 after revision 5 and apply 6 to 10 there.
    fn split_at_hosts(hosts: &Hosts) {
        let split = synod_core::WatchMove {
            through: 5,
            range: synod_core::kv::KeyRange::new("d/", "e"),
            kind: synod_core::MoveKind::Group(7),
        };
        let split_status = |revision: u64| EngineStatus {
            groups: vec![group(1, "d", "d/", 5), group(7, "d/", "e", revision)],
            ..Default::default()
        };
        for hubs in hosts.hubs.values() {
            hubs.publish(
                vec![batch(Vec::new(), vec![split.clone()])],
                &split_status(5),
            );
            let child = GroupEvents {
                group: 7,
                events: (6..=10).map(rev).collect(),
                moves: Vec::new(),
            };
            hubs.publish(vec![child], &split_status(10));
        }
    }

    /// What the watch delivered, and the groups it reads at the end.
    async fn remote_watch_through_a_split(
        bug: Option<synod_core::PlantedBug>,
    ) -> (Vec<u64>, Vec<u64>) {
        let hosts = hosts_planted(bug);
        apply(&hosts, 1..=5);
        let member = member_watching_d(&hosts).await;
        let mut c = member.cursor(b"d/", b"d0", Some(1)).expect("a cursor");
        let mut got = read_through(&member, &mut c, 5).await;
        split_at_hosts(&hosts);
        // The parent is quiet: its hosts answer the poll that brings the move after a poll's
        // wait (two seconds).
        for _ in 0..5 {
            got.extend(read_through(&member, &mut c, 10).await);
            if got.last() == Some(&10) {
                break;
            }
        }
        let groups = c.groups();
        assert_eq!(
            member.remote_hub(7).is_some(),
            bug.is_none(),
            "from its hosts"
        );
        (got, groups)
    }

    #[tokio::test]
    async fn a_group_hosted_here_is_not_asked_elsewhere_and_unknown_keys_wait() {
        let (tx, _rx) = mpsc::channel(4);
        let member = Arc::new(WatchHubs::new(&member_status(), tx));
        let hosts = Arc::new(Hosts {
            hubs: BTreeMap::new(),
            down: Mutex::default(),
        });
        member.set_remote(Arc::new(Source(hosts)));
        member.prepare(b"a", b"b").await.expect("group 0 is here");
        assert!(member.remote_hub(0).is_none());
        let e = member
            .prepare(b"d", b"")
            .await
            .expect_err("no host answers");
        assert!(e.contains("none answered"), "{e}");
    }
}
