//! `GET /v1/watch`: a member's applied revisions as an NDJSON stream (`application/x-ndjson`,
//! one JSON object per line), with etcd's watch semantics over plain HTTP.
//!
//! **What a client sees.** A `created` line, then one line per revision that has events the
//! watch selects (a revision is never split), in revision order, then — only if the server
//! ends the stream — a `canceled` line. A caught-up stream that asked for progress gets a
//! `progress_revision` line after each quiet interval. The shapes are in [`crate::json`]
//! (`WatchCreated`, `WatchRevision`, `WatchProgress`, `WatchCanceled`) and in `openapi.json`.
//! Problems found before the first line (bad query, CASPaxos, a start revision already
//! compacted, too many streams) are ordinary JSON errors with a status code.
//!
//! **Only applied revisions, bounded memory.** Events come from the member's
//! [`WatchHub`] (see `synod_node::watch`), as for the etcd Watch service. The body is a
//! *pull* stream: a revision page is read from the hub only when hyper asks for the next
//! chunk, i.e. when the client has taken the previous ones. So a stream holds a cursor, at
//! most one page of revisions ([`REVISIONS_PER_READ`], shared with the hub's ring) and one
//! chunk of lines ([`CHUNK_BYTES_SOFT_MAX`], plus at most one revision beyond it); a slow
//! client slows only its own stream, and one that falls behind the ring catches up from the
//! store's history a page at a time. If that history is compacted first, the stream ends with
//! a `canceled` line carrying `compact_revision`, as etcd cancels such a watcher.
//!
//! **No task to leak.** There is no spawned task per stream: the body *is* the stream. When
//! the client disconnects, hyper drops the body and with it the cursor and the stream's
//! permit ([`WatchStreams`] bounds how many are open). At shutdown every stream ends with a
//! `canceled` line, so graceful shutdown does not wait on streams that never end.

use crate::error::{ErrorCode, HttpError};
use crate::handlers::KEYSPACE_END;
use crate::json::{
    ValidQuery, WatchCanceled, WatchCreated, WatchEventJson, WatchProgress, WatchQuery,
    WatchRevision,
};
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use synod_core::EngineError;
use synod_core::kv::{Op, RangeRequest, RevisionEvents, prefix_end};
use synod_node::watch::{Cursor as NodeCursor, CursorError, WatchFilter};
use synod_node::{ApiError, NodeHandle};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

/// Default bound on open watch streams per server. Each holds a connection, so this stays
/// well below [`crate::CONNECTIONS_MAX`]: watchers cannot take every connection from
/// ordinary requests.
pub const WATCH_STREAMS_MAX: usize = 256;
/// Shortest progress interval a client may ask for (`progress_notify_ms`).
pub const PROGRESS_NOTIFY_MS_MIN: u64 = 100;
/// Revisions read from the hub at a time (and so held by one stream at most).
pub const REVISIONS_PER_READ: usize = 64;
/// Lines are gathered into one body chunk up to this many bytes (a revision is never split, so
/// a chunk may exceed it by one revision's line).
pub const CHUNK_BYTES_SOFT_MAX: usize = 64 * 1024;

/// The watch streams of one server: how many may be open, and the signal that ends them.
#[derive(Clone, Debug)]
pub struct WatchStreams {
    permits: Arc<Semaphore>,
    max: usize,
    /// Set once, at shutdown. A `watch` channel so a stream waiting for events wakes at once.
    closing: Arc<watch::Sender<bool>>,
}

impl WatchStreams {
    pub fn new(max: usize) -> Self {
        assert!(max > 0, "watch_streams_max must be positive");
        WatchStreams {
            permits: Arc::new(Semaphore::new(max)),
            max,
            closing: Arc::new(watch::channel(false).0),
        }
    }

    /// Ends every open stream with a `canceled` line and refuses new ones.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

pub async fn watch(
    State(handle): State<NodeHandle>,
    Extension(streams): Extension<WatchStreams>,
    ValidQuery(q): ValidQuery<WatchQuery>,
) -> Result<Response, HttpError> {
    let hubs = handle.watch_hubs()?.clone();
    let filter = watch_filter(&q)?;
    // The watched range is checked as a read of it would be (empty key, key size).
    handle.validate(&Op::Range(RangeRequest {
        key: filter.key.clone(),
        range_end: filter.range_end.clone(),
        ..Default::default()
    }))?;
    // With auth on, the whole watched range must be readable, checked once at the start.
    handle.auth().require_read(&filter.key, &filter.range_end)?;
    let progress_every = progress_interval(&q, handle.info().limits.watch_progress_notify_ms)?;
    if *streams.closing.borrow() {
        return Err(HttpError::new(
            ErrorCode::Unavailable,
            "the server is shutting down",
        ));
    }
    let permit = streams.permits.clone().try_acquire_owned().map_err(|_| {
        HttpError::new(
            ErrorCode::Busy,
            format!(
                "at most {} watch streams at this node; retry later or at another member",
                streams.max
            ),
        )
    })?;
    let head = hubs.subscribe();
    let start = (q.start_revision != 0).then_some(q.start_revision);
    // Partitioned, a watch follows one group's revisions: its keys must lie in one group.
    // Groups hosted elsewhere (placement) are read through remote hubs, started here.
    hubs.prepare(&filter.key, &filter.range_end)
        .await
        .map_err(HttpError::invalid)?;
    let mut node_cursor = hubs
        .cursor(&filter.key, &filter.range_end, start)
        .map_err(HttpError::invalid)?;
    let now = node_cursor.head();
    let start = node_cursor.next();
    // Reading the first page here, before any line is sent, turns a start revision that is
    // already compacted into a plain 410 like every other read of compacted history.
    let first = if start <= now {
        node_cursor
            .read(REVISIONS_PER_READ)
            .await
            .map_err(|e| match e {
                CursorError::Engine(e @ EngineError::Compacted { .. }) => {
                    HttpError::from(ApiError::Engine(e))
                }
                CursorError::Engine(other) => HttpError::new(
                    ErrorCode::Unavailable,
                    format!("cannot read the history to watch from: {other}"),
                ),
                CursorError::Moved(reason) => HttpError::new(ErrorCode::Unavailable, reason),
            })?
    } else {
        Vec::new()
    };
    let mut cursor = Cursor {
        node: node_cursor,
        filter,
        pending: VecDeque::new(),
        unsent: Vec::new(),
        head,
        closing: streams.closing.subscribe(),
        progress_every,
        last_sent: Instant::now(),
        ended: false,
        _permit: permit,
    };
    cursor.take_page(first);
    write_line(
        &mut cursor.unsent,
        &WatchCreated {
            created: true,
            revision: now,
            start_revision: start,
        },
    );
    let mut response = Body::from_stream(cursor.into_stream()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Turns `key[&end]` / `prefix` and `filters` into the hub's filter.
fn watch_filter(q: &WatchQuery) -> Result<WatchFilter, HttpError> {
    let (key, range_end) = match (&q.key, &q.prefix, &q.end) {
        (Some(_), Some(_), _) | (None, Some(_), Some(_)) => {
            return Err(HttpError::invalid(
                "give either key= (with optional end=) or prefix=, not both",
            ));
        }
        (None, None, _) => {
            return Err(HttpError::invalid(
                "give key=[&end=] or prefix= (empty for every key)",
            ));
        }
        (Some(k), None, None) => (k.as_bytes().to_vec(), Vec::new()),
        (Some(k), None, Some(e)) => {
            // etcd's `[0]` end means "every key from `key` on"; any other end must lie above
            // the key, or the watch could never see anything.
            if e.as_bytes() != KEYSPACE_END && e.as_str() <= k.as_str() {
                return Err(HttpError::invalid(
                    "end= must be greater than key= (or %00 for every key from key= on)",
                ));
            }
            (k.as_bytes().to_vec(), e.as_bytes().to_vec())
        }
        (None, Some(p), None) if p.is_empty() => (KEYSPACE_END.to_vec(), KEYSPACE_END.to_vec()),
        (None, Some(p), None) => (p.as_bytes().to_vec(), prefix_end(p.as_bytes())),
    };
    let mut filter = WatchFilter {
        key,
        range_end,
        prev_kv: q.prev_kv,
        no_put: false,
        no_delete: false,
    };
    for name in q
        .filters
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        if name.eq_ignore_ascii_case("noput") {
            filter.no_put = true;
        } else if name.eq_ignore_ascii_case("nodelete") {
            filter.no_delete = true;
        } else {
            return Err(HttpError::invalid(format!(
                "unknown filter {name:?}; the filters are noput and nodelete"
            )));
        }
    }
    Ok(filter)
}

/// The progress interval asked for: `progress_notify=true` takes the node's
/// (`watch_progress_notify_ms`), `progress_notify_ms=N` a shorter one.
fn progress_interval(q: &WatchQuery, node_ms: u64) -> Result<Option<Duration>, HttpError> {
    let node_ms = node_ms.max(PROGRESS_NOTIFY_MS_MIN);
    match (q.progress_notify, q.progress_notify_ms) {
        (Some(false), Some(_)) => Err(HttpError::invalid(
            "progress_notify_ms asks for progress lines; leave out progress_notify=false",
        )),
        (None | Some(false), None) => Ok(None),
        (Some(true), None) => Ok(Some(Duration::from_millis(node_ms))),
        (_, Some(ms)) if ms < PROGRESS_NOTIFY_MS_MIN => Err(HttpError::invalid(format!(
            "progress_notify_ms must be at least {PROGRESS_NOTIFY_MS_MIN}"
        ))),
        // Only shorter than the node's interval: that one is the operator's choice of cost.
        (_, Some(ms)) => Ok(Some(Duration::from_millis(ms.min(node_ms)))),
    }
}

/// One stream's state: where it is in the revision sequence and what it has not sent yet.
struct Cursor {
    /// Its place in its keys' revision stream (`node.next`: the next revision to read).
    node: NodeCursor,
    filter: WatchFilter,
    /// Revisions read but not yet turned into lines (at most one page).
    pending: VecDeque<Arc<RevisionEvents>>,
    /// Lines written but not yet handed to hyper (the `created` line before the first poll).
    unsent: Vec<u8>,
    /// Moves with the member's applied revisions; wakes the stream.
    head: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    progress_every: Option<Duration>,
    /// When a line was last handed to hyper (progress is due a whole interval after it).
    last_sent: Instant,
    /// The `canceled` line has been sent: the next poll ends the body.
    ended: bool,
    /// This stream's place under [`WatchStreams`]' bound, given back when the body is dropped.
    _permit: OwnedSemaphorePermit,
}

/// Why a caught-up stream woke.
enum Wake {
    /// New revisions may be there: look again.
    Work,
    Progress,
    Closing,
    NodeStopped,
}

impl Cursor {
    fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
        futures::stream::unfold(self, |mut cursor| async move {
            let chunk = cursor.next_chunk().await?;
            Some((Ok(chunk), cursor))
        })
    }

    /// The next body chunk: one or more whole lines. `None` ends the body.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        let mut out = std::mem::take(&mut self.unsent);
        loop {
            if *self.closing.borrow() {
                return Some(self.end(out, "the server is shutting down".into(), None));
            }
            self.drain_pending(&mut out);
            if !out.is_empty() {
                self.last_sent = Instant::now();
                return Some(out.into());
            }
            self.head.borrow_and_update();
            if self.node.ready() {
                match self.read_page().await {
                    Ok(true) => continue,
                    // Nothing to read although the head is past the cursor; wait for the
                    // head to move rather than spin.
                    Ok(false) => {}
                    Err((reason, compact_revision)) => {
                        return Some(self.end(out, reason, compact_revision));
                    }
                }
            }
            match self.wait().await {
                Wake::Work => {}
                Wake::Progress => {
                    // Every event up to here has been sent (nothing is pending), and never
                    // claim a revision the member has not applied, nor one below a claim
                    // before (the cursor's rule); none to claim: due again an interval on.
                    self.last_sent = Instant::now();
                    if let Some(progress_revision) = self.node.progress() {
                        self.node.claim(progress_revision);
                        write_line(&mut out, &WatchProgress { progress_revision });
                        return Some(out.into());
                    }
                }
                Wake::Closing => {
                    return Some(self.end(out, "the server is shutting down".into(), None));
                }
                Wake::NodeStopped => {
                    return Some(self.end(out, "the node stopped".into(), None));
                }
            }
        }
    }

    /// Lines for pending revisions, until the chunk is full or nothing is pending.
    fn drain_pending(&mut self, out: &mut Vec<u8>) {
        while out.len() < CHUNK_BYTES_SOFT_MAX {
            let Some(rev) = self.pending.pop_front() else {
                break;
            };
            let events = self.filter.select(&rev);
            if events.is_empty() {
                continue;
            }
            let line = WatchRevision {
                revision: rev.revision,
                events: events.iter().map(WatchEventJson::from).collect(),
            };
            write_line(out, &line);
        }
    }

    /// Reads the next page from the hub. `Ok(false)` if it was empty; `Err` with the reason
    /// (and the compaction revision) if the stream must end.
    async fn read_page(&mut self) -> Result<bool, (String, Option<u64>)> {
        // A stream paging through revisions it filters out sends nothing and may never wait:
        // let the runtime's other tasks run.
        tokio::task::consume_budget().await;
        match self.node.read(REVISIONS_PER_READ).await {
            Ok(page) => Ok(self.take_page(page)),
            Err(CursorError::Engine(EngineError::Compacted { compact_revision })) => Err((
                synod_core::ERR_COMPACTED.to_string(),
                Some(compact_revision),
            )),
            Err(CursorError::Engine(other)) => Err((format!("synod: {other}"), None)),
            Err(CursorError::Moved(reason)) => Err((reason, None)),
        }
    }

    /// Queues a page read from the hub and moves the cursor past it.
    fn take_page(&mut self, page: Vec<Arc<RevisionEvents>>) -> bool {
        let Some(last) = page.last() else {
            return false;
        };
        debug_assert!(
            page.first().is_some_and(|r| r.revision >= self.node.next()),
            "the hub answered a page starting before the cursor"
        );
        self.node.advance(last.revision + 1);
        self.pending.extend(page);
        true
    }

    /// Waits until the head moves, a progress line is due, or the server closes.
    async fn wait(&mut self) -> Wake {
        // Without progress, a deadline that never comes (the branch is disabled anyway).
        let progress_at = self.progress_every.map_or_else(
            || Instant::now() + Duration::from_secs(3600),
            |every| self.last_sent + every,
        );
        tokio::select! {
            biased;
            r = self.closing.changed() => match r {
                Ok(()) => Wake::Work,
                Err(_) => Wake::Closing,
            },
            r = self.head.changed() => match r {
                Ok(()) => Wake::Work,
                Err(_) => Wake::NodeStopped,
            },
            () = tokio::time::sleep_until(progress_at), if self.progress_every.is_some() => {
                Wake::Progress
            }
        }
    }

    /// Appends the `canceled` line; the next poll ends the body.
    fn end(&mut self, mut out: Vec<u8>, reason: String, compact_revision: Option<u64>) -> Bytes {
        self.ended = true;
        let line = WatchCanceled {
            canceled: true,
            reason,
            compact_revision,
        };
        write_line(&mut out, &line);
        out.into()
    }
}

/// Appends `value` as one JSON line.
fn write_line<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let mark = out.len();
    match serde_json::to_writer(&mut *out, value) {
        Ok(()) => out.push(b'\n'),
        // Strings, integers and booleans into a Vec: this cannot fail. If it ever did, a
        // missing line is better than half of one.
        Err(e) => {
            out.truncate(mark);
            tracing::error!(error = %e, "watch: encoding a line failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use synod_core::kv::{EventKind, KeyValue, WatchEvent};
    use synod_node::watch::{WatchHub, WatchHubs};
    use tokio::sync::mpsc;

    fn put(revision: u64, value_bytes: usize) -> Arc<RevisionEvents> {
        Arc::new(RevisionEvents {
            revision,
            events: vec![WatchEvent {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: b"k".to_vec(),
                    value: vec![b'v'; value_bytes],
                    create_revision: 1,
                    mod_revision: revision,
                    version: revision,
                    ..Default::default()
                },
                prev_kv: None,
            }],
        })
    }

    /// A hub holding revisions `1..=head` in its ring (no engine behind it: a history read
    /// would never be answered, and these tests need none), and a cursor from `start`.
    fn setup(head: u64, value_bytes: usize, start: u64) -> (Arc<WatchHub>, WatchStreams, Cursor) {
        let (history, _) = mpsc::channel(1);
        let hub = Arc::new(WatchHub::new(0, history));
        hub.publish((1..=head).map(|r| put(r, value_bytes)).collect(), head);
        let hubs = Arc::new(WatchHubs::single(hub.clone()));
        let streams = WatchStreams::new(1);
        let permit = streams.permits.clone().try_acquire_owned().unwrap();
        let cursor = Cursor {
            node: hubs.cursor(b"k", b"", Some(start)).unwrap(),
            filter: WatchFilter {
                key: b"k".to_vec(),
                ..Default::default()
            },
            pending: VecDeque::new(),
            unsent: Vec::new(),
            head: hubs.subscribe(),
            closing: streams.closing.subscribe(),
            progress_every: Some(Duration::from_millis(PROGRESS_NOTIFY_MS_MIN)),
            last_sent: Instant::now(),
            ended: false,
            _permit: permit,
        };
        (hub, streams, cursor)
    }

    fn lines(chunk: &[u8]) -> Vec<Value> {
        assert_eq!(chunk.last(), Some(&b'\n'), "a chunk is whole lines");
        chunk
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_compaction_that_overtakes_the_stream_cancels_it() {
        let (hub, _streams, mut cursor) = setup(130, 1, 1);
        let first = lines(&cursor.next_chunk().await.unwrap());
        let revisions: Vec<u64> = first
            .iter()
            .map(|l| l["revision"].as_u64().unwrap())
            .collect();
        assert_eq!(
            revisions,
            (1..=REVISIONS_PER_READ as u64).collect::<Vec<_>>()
        );
        // The client is slow; meanwhile the history it still needs is compacted.
        hub.set_compacted(100);
        let last = lines(&cursor.next_chunk().await.unwrap());
        assert_eq!(
            last,
            vec![
                json!({"canceled": true, "reason": synod_core::ERR_COMPACTED,
                        "compact_revision": 100})
            ]
        );
        assert!(cursor.next_chunk().await.is_none(), "the body ends");
    }

    #[tokio::test]
    async fn chunks_are_bounded_and_revisions_whole() {
        let value_bytes = 10_000;
        let (_hub, _streams, mut cursor) = setup(20, value_bytes, 1);
        let mut next = 1;
        while next <= 20 {
            let chunk = cursor.next_chunk().await.unwrap();
            assert!(
                chunk.len() < CHUNK_BYTES_SOFT_MAX + value_bytes + 200,
                "{} bytes",
                chunk.len()
            );
            for line in lines(&chunk) {
                assert_eq!(line["revision"], next);
                assert_eq!(
                    line["events"][0]["kv"]["value"].as_str().unwrap().len(),
                    value_bytes
                );
                next += 1;
            }
        }
    }

    #[tokio::test]
    async fn progress_never_claims_an_unapplied_revision() {
        // Watching from revision 10 while the member is at 3.
        let (hub, _streams, mut cursor) = setup(3, 1, 10);
        let progress = lines(&cursor.next_chunk().await.unwrap());
        assert_eq!(progress, vec![json!({"progress_revision": 3})]);
        hub.publish((4..=12).map(|r| put(r, 1)).collect(), 12);
        let events = lines(&cursor.next_chunk().await.unwrap());
        assert_eq!(events.first().unwrap()["revision"], 10);
        assert_eq!(events.len(), 3, "10, 11, 12");
        let progress = lines(&cursor.next_chunk().await.unwrap());
        assert_eq!(progress, vec![json!({"progress_revision": 12})]);
    }

    #[tokio::test]
    async fn closing_ends_a_waiting_stream_and_frees_its_place() {
        let (_hub, streams, mut cursor) = setup(0, 1, 1);
        cursor.progress_every = None;
        let waiting = tokio::spawn(async move {
            let chunk = cursor.next_chunk().await;
            (chunk, cursor)
        });
        streams.close();
        let (chunk, mut cursor) = waiting.await.unwrap();
        assert_eq!(
            lines(&chunk.unwrap()),
            vec![json!({"canceled": true, "reason": "the server is shutting down"})]
        );
        assert!(cursor.next_chunk().await.is_none());
        assert_eq!(streams.permits.available_permits(), 0, "held until dropped");
        drop(cursor);
        assert_eq!(streams.permits.available_permits(), 1);
    }

    #[test]
    fn progress_intervals_are_the_nodes_or_shorter() {
        let q = |progress_notify, progress_notify_ms| WatchQuery {
            progress_notify,
            progress_notify_ms,
            ..Default::default()
        };
        let node_ms = 60_000;
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        let interval = |q| progress_interval(&q, node_ms).map(ms).ok();
        assert_eq!(interval(q(None, None)), Some(None));
        assert_eq!(interval(q(Some(false), None)), Some(None));
        assert_eq!(interval(q(Some(true), None)), Some(Some(60_000)));
        assert_eq!(interval(q(None, Some(250))), Some(Some(250)));
        assert_eq!(interval(q(Some(true), Some(90_000))), Some(Some(60_000)));
        assert_eq!(interval(q(None, Some(PROGRESS_NOTIFY_MS_MIN - 1))), None);
        assert_eq!(interval(q(Some(false), Some(250))), None);
    }

    #[test]
    fn watch_queries_become_hub_filters() {
        let q = |key: Option<&str>, prefix: Option<&str>, end: Option<&str>, filters: &str| {
            WatchQuery {
                key: key.map(str::to_string),
                prefix: prefix.map(str::to_string),
                end: end.map(str::to_string),
                filters: filters.to_string(),
                ..Default::default()
            }
        };
        let range = |q| watch_filter(&q).ok().map(|f| (f.key, f.range_end));
        assert_eq!(
            range(q(Some("a"), None, None, "")),
            Some((b"a".to_vec(), vec![]))
        );
        assert_eq!(
            range(q(Some("a"), None, Some("c"), "")),
            Some((b"a".to_vec(), b"c".to_vec()))
        );
        assert_eq!(
            range(q(Some("a"), None, Some("\0"), "")),
            Some((b"a".to_vec(), vec![0]))
        );
        assert_eq!(range(q(None, Some(""), None, "")), Some((vec![0], vec![0])));
        assert_eq!(
            range(q(None, Some("ab"), None, "")),
            Some((b"ab".to_vec(), b"ac".to_vec()))
        );
        let f = watch_filter(&q(Some("a"), None, None, "NOPUT, nodelete")).unwrap();
        assert!(f.no_put && f.no_delete);
        for bad in [
            q(None, None, None, ""),
            q(None, None, Some("b"), ""),
            q(Some("a"), Some("a"), None, ""),
            q(None, Some("a"), Some("b"), ""),
            q(Some("b"), None, Some("a"), ""),
            q(Some("a"), None, None, "noput,nope"),
        ] {
            assert!(watch_filter(&bad).is_err(), "{bad:?}");
        }
    }
}
